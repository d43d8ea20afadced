"""A Prefect API that stops answering during a run: the run ends within seconds, in one line.

Why (measured with the server killed mid-run, tests/flows/test_lost_api.py): the models went on
training, but once they were done the flow's last two API calls (its comparison artifact, then its
final state) took ~11 s each to fail - Prefect's client retries (PREFECT_CLIENT_MAX_RETRIES, waits
of 2 and 4 s) around its transport's own three connection retries (0.5 + 1 s) per attempt. Every
event queued meanwhile took ~7 s (eleven websocket attempts) and printed a WARNING and then an ERROR
holding the whole event (~2,000 characters); each failed log batch printed "--- Error logging to
API ---" with no line end, gluing itself to the next line; and after our error line the exit waited
~15 s more for the sends in flight. What Prefect held for that server is lost either way.

* `api_lost`: the flow checks the API before its last calls (one health request, milliseconds) and
  skips its artifact when it does not answer.
* `give_up_on_api`: no more client retries, later events and API logs dropped, the sends in flight
  cancelled and what is queued forgotten, so the remaining calls fail at their first attempt and
  the exit waits for nothing. For a process that runs one flow and exits (`recsys run`, which says
  so with `one_shot`); a process serving a deployment (`recsys schedule`) keeps Prefect's retries
  and its logs for the next run, when the server may be back.
* `quiet_api_noise`: Prefect's first "Unable to connect" warning stays (the early sign that the
  server went away); the repeats, and the per-event ERRORs behind them, are kept off the terminal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HEALTH_TIMEOUT_S = 2.0
_gave_up = threading.Event()
_one_shot = threading.Event()


@contextmanager
def one_shot() -> Iterator[None]:
    """Inside: this process runs one flow and exits, so a lost API is given up on (`api_lost`)."""
    _one_shot.set()
    try:
        yield
    finally:
        _one_shot.clear()


def api_lost() -> bool:
    """Whether the Prefect API stopped answering; if so, inside `one_shot`, give up on it."""
    if api_answers():
        return False
    if _one_shot.is_set():
        give_up_on_api()
    return True


def api_answers(timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """Whether the Prefect API this process talks to answers its health check (True when there
    is none to ask: nothing to give up on)."""
    return api_unanswered(timeout) is None


def api_unanswered(timeout: float = HEALTH_TIMEOUT_S) -> str | None:
    """Why the Prefect API this process talks to does not answer its health check; None when it
    answers or there is none to ask."""
    from flows.ephemeral import _unreachable, current_api_url

    api = current_api_url()
    why = None if api is None else _unreachable(api, timeout)
    return None if why is None else str(why)


def give_up_on_api() -> None:
    """Stop waiting on a Prefect API that went away (see the module docstring); idempotent."""
    import queue

    from prefect.events.clients import NullEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker, set_api_log_sink
    from prefect.settings import get_current_settings

    _gave_up.set()
    get_current_settings().client.max_retries = 0  # read at every attempt: the next call fails at its first
    EventsWorker.set_client_override(NullEventsClient)  # events emitted from now on go nowhere
    set_api_log_sink(lambda _log: None)  # so do the logs Prefect would ship to the API
    logging.raiseExceptions = False  # APILogWorker prints each failed batch only while this is set
    for worker in (EventsWorker, APILogWorker):
        for instance in list(getattr(worker, "_instances", {}).values()):
            if not isinstance(instance, worker):
                continue
            pending = getattr(instance, "_queue", None)
            while pending is not None:  # what is queued: dropped (the stop marker is the worker's own)
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    pending.put_nowait(item)
                    break
                pending.task_done()
            loop, task = getattr(instance, "_loop", None), getattr(instance, "_task", None)
            if loop is not None and task is not None:  # the send in flight: ended now, not after its retries
                loop.call_soon_threadsafe(task.cancel)


class _ApiNoise(logging.Filter):
    """Once Prefect's events client has said it cannot reach the API: its repeats of that warning,
    and the failures of Prefect's background senders (an ERROR per queued event, holding the whole
    event), are dropped from the terminal."""

    def __init__(self) -> None:
        super().__init__()
        self.unreachable = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.name == NOISY_LOGGERS[0] and message.startswith("Unable to connect to"):
            if self.unreachable:
                return False
            self.unreachable = True
            return True
        sender = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if record.name == NOISY_LOGGERS[1] and message.startswith("Service %r failed"):
            return not ((self.unreachable or _gave_up.is_set()) and sender in ("EventsWorker", "APILogWorker"))
        return True


_FILTER = _ApiNoise()


NOISY_LOGGERS = ("prefect.events.clients", "prefect._internal.concurrency")
"""Where those records come from (the second writes through its own handler, not the console's)."""


def quiet_api_noise() -> None:
    """Attach the filter to the loggers that write those records (idempotent), and keep Prefect's
    log shipper from printing "--- Error logging to API ---" per failed batch from the start: it
    prints only while `logging.raiseExceptions` is set, and its first failure can come before the
    events client's warning that turns it off (a flaky extra line in the lost-API test, glued to
    the next one). Python's docs advise it off in production; `--debug` keeps everything."""
    logging.raiseExceptions = False
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
