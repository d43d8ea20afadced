"""Child processes that never outlive the command that started them.

`recsys ui` runs MLflow's server, which starts workers of its own. The child gets its own process
group (session); SIGTERM and SIGINT to the command are forwarded to the whole group, and when the
command leaves for any reason the group is terminated (then killed if it lingers), so no server is
left answering after its parent is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import suppress

GRACE_SECONDS = 10.0


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def run_in_process_group(command: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run `command` in a new process group, forward SIGTERM / SIGINT to it, wait, return its exit
    code; the whole group is gone when this returns or raises."""
    child = subprocess.Popen(list(command), env=dict(env) if env is not None else None, start_new_session=True)
    pgid = child.pid  # a new session: its leader's pid is the group id

    def forward(signum: int, _frame) -> None:
        _signal_group(pgid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _signal_group(pgid, signal.SIGTERM)
        try:
            child.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(pgid, signal.SIGKILL)  # stragglers of the group (workers), if any
        with suppress(subprocess.TimeoutExpired):
            child.wait(timeout=GRACE_SECONDS)
