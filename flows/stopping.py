"""Ctrl-C and SIGTERM held back while `recsys schedule` does what must not be cut in half.

Why: a schedule's stop pauses its deployment on the Prefect server (else the server goes on
scheduling runs that nothing runs: they show Late) and closes the runs it started. Ctrl-C cut
those calls wherever it landed: a Ctrl-C while the runner was starting skipped the pause
altogether (the runner's stop, which pauses, only runs once the runner has started), and a second
Ctrl-C of an impatient user during the stop aborted the pause midway. Inside `held`, a signal is
noted (with one line during a stop, `again`); one more goes through at once, so a call that hangs (a
server that stopped answering) never holds the command, and `forced` says so afterwards.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from recsys.interrupt import handled_by, restore

_noted = threading.Event()
_forced = threading.Event()


def forced() -> bool:
    """Whether a stop was forced (a Ctrl-C or SIGTERM more than `again` holds) in this process: what
    is left to do on the way out is then skipped and said instead of waited for."""
    return _forced.is_set()


def clear() -> None:
    """Forget an earlier stop's signals (tests run many schedules in one process)."""
    _noted.clear()
    _forced.clear()


def again(doing: str) -> None:
    """A Ctrl-C or SIGTERM that reached a stop under way (one that pauses the deployment: `doing`):
    the first is noted, with one line to stderr; one more, in this block or a later one of the same
    stop, raises KeyboardInterrupt (`forced`)."""
    if _noted.is_set():
        _forced.set()
        raise KeyboardInterrupt
    _noted.set()
    sys.stderr.write(f"stopping: {doing}; press Ctrl-C again to stop at once\n")
    sys.stderr.flush()


@contextmanager
def held(doing: str | None) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back inside the block. With `doing` (a stop under way), each is
    `again`: the first noted and dropped (it asked for the stop under way), one more raises
    KeyboardInterrupt at once. Without (a block of one quick call before the stop: creating the
    deployment), the first is noted silently and delivered to the handler it had before the block
    once the block ends; one more raises at once. Main thread only (signals reach no other); a
    signal that was ignored (a background job's SIGINT) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous: dict[int, object] = {}

    def hold(signum: int, frame: object) -> None:  # noqa: ARG001 - the signal-handler signature
        if doing is not None:
            try:
                again(doing)
            except KeyboardInterrupt:
                restore(previous)
                raise
        elif noted:  # asked twice: now
            _forced.set()
            restore(previous)
            raise KeyboardInterrupt
        else:
            noted.append(signum)

    with handled_by(hold, previous):
        yield
    if noted:
        signal.raise_signal(noted[0])  # its own handler, restored, runs now
