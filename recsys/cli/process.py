"""Child processes that never outlive the command that started them.

`recsys ui` runs MLflow's server, which starts workers of its own. The child gets its own process
group (session); SIGTERM and SIGINT to the command are forwarded to the whole group, and when the
command leaves for any reason the group is terminated (then killed if it lingers), so no server is
left answering after its parent is gone. A kill -9 of the command skips all that: the group is
marked (`RECSYS_PARENT_PID` in its environment), and the next start stops the groups whose parent
is gone (`stop_orphaned_groups`), which otherwise served on, holding the port, for ever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path

GRACE_SECONDS = 10.0
PARENT_ENV = "RECSYS_PARENT_PID"
"""Set in the child's environment: the pid of the command that started it (see stop_orphaned_groups)."""


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def run_in_process_group(command: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run `command` in a new process group, forward SIGTERM / SIGINT to it, wait, return its exit
    code; the whole group is gone when this returns or raises."""
    marked = {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}
    child = subprocess.Popen(list(command), env=marked, start_new_session=True)
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


def stop_orphaned_groups(parents: set[int] | None = None, proc: Path = Path("/proc")) -> list[int]:
    """SIGTERM the process groups `run_in_process_group` started for commands that are gone (killed
    with SIGKILL: no `finally`); returns their leaders' pids. A leader is recognised from /proc: this
    user, a session leader, and `RECSYS_PARENT_PID` in its environment naming a pid that no longer
    runs. `parents` limits it to children of those pids. No /proc (not Linux): nothing."""
    import psutil

    stopped = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            pid = int(entry.name)
            if entry.stat().st_uid != os.getuid() or os.getsid(pid) != pid:
                continue
            marker = f"{PARENT_ENV}=".encode()
            found = [v for v in (entry / "environ").read_bytes().split(b"\0") if v.startswith(marker)]
            if not found:
                continue
            parent = int(found[0][len(marker):])
            if (parents is not None and parent not in parents) or psutil.pid_exists(parent):
                continue
            os.killpg(pid, signal.SIGTERM)
            stopped.append(pid)
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
    deadline = time.monotonic() + GRACE_SECONDS
    while stopped and any(_group_alive(pid) for pid in stopped) and time.monotonic() < deadline:
        time.sleep(0.1)  # until they have let go of their port
    for pid in stopped:
        _signal_group(pid, signal.SIGKILL)  # stragglers, if any
    return stopped


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
