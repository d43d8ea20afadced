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

import threading

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
