"""Deterministic errors under Prefect: not retried, and not printed as Prefect tracebacks.

A `RecsysError` (bad input, bad config) fails the same way on every try, so tasks with retries use
`retry_unless_deterministic` as their `retry_condition_fn`. When such an error ends a run, Prefect
logs it twice with a traceback (task, then flow) before `recsys` prints its own one-line `error:`;
`quiet_deterministic_errors` drops those records from the terminal only; the Prefect API (and UI)
still receives them. So does a run whose failed models were each reported in one line. Bugs keep
their tracebacks.
"""

from __future__ import annotations

import logging
from typing import Any

from recsys.errors import is_deterministic


def retry_unless_deterministic(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry I/O hiccups, never bad input or config."""
    error = getattr(state, "data", None)
    return not (isinstance(error, BaseException) and is_deterministic(error))


def lost_connection_to_api(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from or during, is a failed connection to the
    Prefect API (PREFECT_API_URL, or the temporary server's): Prefect's client gave up on a server
    that went away. `recsys run` reports that in one line naming the server
    (`flows.ephemeral.lost_api`), so Prefect's traceback of it is kept off the terminal."""
    import httpx

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, httpx.TransportError) and _to_prefect_api(error):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _to_prefect_api(error: Any) -> bool:
    """The failed request went to the Prefect API (an httpx error without its request: assumed)."""
    request = getattr(error, "_request", None)  # the `request` property raises when it is unset
    if request is None:
        return True
    from flows.ephemeral import current_api_url

    api = current_api_url()
    return api is None or str(request.url).startswith(api.rstrip("/").rsplit("/api", 1)[0])


class _DropDeterministic(logging.Filter):
    """Drops records of deterministic errors, of errors already reported line by line (an
    exception class with `reported = True`: `PipelineFailed`, whose models each logged their own
    one-line failure, so its flow-level traceback only points at the `raise`), and of a lost
    connection to the Prefect API (`lost_connection_to_api`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return True
        return not (is_deterministic(error) or getattr(error, "reported", False) or lost_connection_to_api(error))


_FILTER = _DropDeterministic()


def quiet_deterministic_errors() -> None:
    """Attach the filter to Prefect's console handlers (idempotent; call after Prefect set up
    logging, i.e. after importing prefect)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        if isinstance(handler, PrefectConsoleHandler) and _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
