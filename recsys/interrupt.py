"""A process-wide "stop now" flag that training loops check, so Ctrl-C stops worker threads too.

Why: Python delivers Ctrl-C (SIGINT) as KeyboardInterrupt to the main thread only. Under Prefect's
thread task runner the models train in worker threads; the main thread's interrupt ends the flow,
but leaving it waits for those threads, so a two-tower kept training to its last epoch (minutes)
after the user pressed Ctrl-C, and was then logged FINISHED and registered. The flow sets this flag
when an interrupt reaches its main thread (KeyboardInterrupt, Prefect's TerminationSignal), as does
the command's SIGTERM handler (`recsys.cli`), and every model's per-epoch callback and the
two-tower's per-step loop call `check()`, which raises `Interrupted` (a KeyboardInterrupt, so no
`except Exception` swallows it and each model run is closed KILLED on the way out).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_requested = threading.Event()


class Interrupted(KeyboardInterrupt):
    """Raised where a worker thread checks the flag after the process was interrupted."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `timeout`, `kill`) turned into an exception by the command's handler,
    so the run unwinds as on Ctrl-C (runs closed KILLED, Prefect's temporary server stopped) and
    exits 143 instead of dying where it stood."""


def request() -> None:
    """Ask every checking loop to stop (called from a signal handler: sets an Event, nothing more)."""
    _requested.set()


def clear() -> None:
    """Forget a request (the command that set it is done; tests run many commands in one process)."""
    _requested.clear()


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    """Raise `Interrupted` if the process was interrupted."""
    if _requested.is_set():
        raise Interrupted("interrupted")


SHIELDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def shielded() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while a run is being closed, then deliver them.

    Why: after the first Ctrl-C the runs are closed (KILLED) on the way out; a second Ctrl-C during
    that close raised in the middle of the store call and left the MLflow run RUNNING (until a later
    start on this host swept it). Inside this block a signal is noted and delivered once the block
    ends, so the close completes first (one store call: milliseconds on SQLite, a round trip to a
    server). A further signal during the same block is delivered at once: a close that hangs (a
    server that stopped answering) never holds the command, and the run it leaves RUNNING is
    closed by the next start's sweep (`recsys.tracking.liveness`). Signals reach only the main
    thread, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, object] = {}

    def hold(signum: int, frame: object) -> None:
        request()  # worker threads stop at their next check, as the signal would make them
        if held:  # asked twice during one close: now
            restore(previous)
            signal.raise_signal(signum)
            return
        held.append(signum)
        sys.stderr.write("closing the run first; press Ctrl-C again to stop without closing it\n")
        sys.stderr.flush()

    with handled_by(hold, previous):
        yield
    if held:
        signal.raise_signal(held[0])  # its own handler, restored, runs now


@contextmanager
def handled_by(handler: Callable[[int, object], None], previous: dict[int, object]) -> Iterator[None]:
    """Inside, `handler` takes Ctrl-C and SIGTERM (SHIELDED_SIGNALS), the handlers before noted in
    `previous` and put back on leaving (`restore`; a handler may put them back sooner). A signal
    the process started ignoring (a background job's SIGINT) stays ignored."""
    for signum in SHIELDED_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        restore(previous)


def restore(previous: dict[int, object]) -> None:
    """Put back the handlers noted in `previous` (by `handled_by`) and forget them."""
    for signum, handler in list(previous.items()):
        if handler is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signum, handler)  # type: ignore[arg-type]
    previous.clear()
