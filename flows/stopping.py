"""Ctrl-C and SIGTERM held back while `recsys schedule` does what must not be cut in half.

Why: a schedule's stop pauses its deployment on the Prefect server (else the server goes on
scheduling runs that nothing runs: they show Late) and closes the runs it started. Ctrl-C cut
those calls wherever it landed: a Ctrl-C while the runner was starting skipped the pause
altogether (the runner's stop, which pauses, only runs once the runner has started), and a second
Ctrl-C of an impatient user during the stop aborted the pause midway. Inside `held`, a signal is
noted with one line and acted on when the block ends (or not at all: `deliver=False`, for a stop
already under way); one more during the same block goes through at once, so a call that hangs (a
server that stopped answering) never holds the command, and `forced` says so afterwards.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Held:
    """What reached a `held` block: `signals` noted (at most one), `forced` when one more went through."""

    signals: list[int] = field(default_factory=list)
    forced: bool = False


_forced = threading.Event()


def forced() -> bool:
    """Whether a held stop was forced (a Ctrl-C or SIGTERM more) in this process: what is left to do
    on the way out is then skipped and said instead of waited for."""
    return _forced.is_set()


def clear() -> None:
    """Forget a forced stop (tests run many schedules in one process)."""
    _forced.clear()


@contextmanager
def held(doing: str | None, *, deliver: bool = True) -> Iterator[Held]:
    """Hold Ctrl-C and SIGTERM back inside the block: the first is noted, with a line saying what the
    schedule is `doing` (stderr; None: silently, for a block of one quick call), a second raises KeyboardInterrupt at once (`Held.forced`).
    With `deliver`, a noted signal is delivered once the block ends (to the handler it had before the
    block); without, it is dropped (it asked for a stop that is under way). Main thread only (signals
    reach no other); a signal that was ignored (a background job's SIGINT) stays ignored."""
    state = Held()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous: dict[int, object] = {}

    def hold(signum: int, frame: object) -> None:  # noqa: ARG001 - the signal-handler signature
        if state.signals:  # asked twice: now
            state.forced = True
            _forced.set()
            _restore(previous)
            raise KeyboardInterrupt
        state.signals.append(signum)
        if doing is not None:
            sys.stderr.write(f"stopping: {doing}; press Ctrl-C again to stop at once\n")
            sys.stderr.flush()

    for signum in SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue
        previous[signum] = signal.signal(signum, hold)
    try:
        yield state
    finally:
        _restore(previous)
    if deliver and state.signals and not state.forced:
        signal.raise_signal(state.signals[0])  # its own handler, restored, runs now


def _restore(previous: dict[int, object]) -> None:
    for signum, handler in list(previous.items()):
        if handler is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signum, handler)  # type: ignore[arg-type]
    previous.clear()
