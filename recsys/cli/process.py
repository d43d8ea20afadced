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

from recsys.procfs import PROC, ProcessEntry, find_own

GRACE_SECONDS = 10.0
PARENT_ENV = "RECSYS_PARENT_PID"
"""Set in the child's environment: the pid of the command that started it (see stop_orphaned_groups)."""


def _signal_group(pgid: int, signum: int) -> bool:
    """Signal a process group; False when it is gone (or not ours)."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_groups(
    pgids: Sequence[int], leader: subprocess.Popen | None = None, grace: float = GRACE_SECONDS
) -> list[int]:
    """The one stop sequence: SIGTERM each group, wait up to `grace` seconds for all of them to be
    gone (a server lets go of its port), then SIGKILL what is left (workers that ignore SIGTERM).
    `leader`: the leader of a group that is this process's child, reaped while waiting (a zombie
    still counts as a member). Returns the groups that were there to signal."""
    signalled = [pgid for pgid in pgids if _signal_group(pgid, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while signalled and time.monotonic() < deadline:
        if leader is not None:
            leader.poll()
        if not any(_group_alive(pgid) for pgid in signalled):
            break
        time.sleep(0.1)
    for pgid in signalled:
        _signal_group(pgid, signal.SIGKILL)  # stragglers, if any
    if leader is not None:
        with suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=grace)
    return signalled


def run_in_process_group(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    grace: float = GRACE_SECONDS,
    log_prefix: str | None = None,
) -> int:
    """Run `command` in a new process group, forward SIGTERM / SIGINT to it, wait, return its exit
    code; the whole group is gone when this returns or raises.

    A child that has not exited `grace` seconds after a forwarded signal is stopped (`stop_groups`):
    a process started from a background job inherits SIGINT ignored, so a forwarded Ctrl-C alone
    could leave this command waiting for ever.

    `log_prefix`: the child gets none of our standard streams (`recsys.files.popen_off_our_streams`:
    after a kill -9 of this command it serves on until the next start stops it, and on our stdout
    it held `recsys ui | tee ui.log` open all that while); what it writes is passed on to our
    stderr as it comes (each 0.2 s wait) and at the end, and its log removed."""
    from recsys.files import pass_on_log, popen_off_our_streams

    marked = {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}
    group: list[int] = []  # the child's group id, once it exists
    pending: list[int] = []  # signals that came before it did
    forwarded_at: list[float] = []

    def forward(signum: int, _frame) -> None:
        if group:
            _signal_group(group[0], signum)
        else:
            pending.append(signum)
        forwarded_at.append(time.monotonic())

    # The handlers go in before the child starts: a SIGTERM between its start and their
    # installation killed this process by default and left the child's group running (the likely
    # cause of one failure of the SIGTERM test under load: its signal can come while this process
    # is still returning from Popen).
    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        if log_prefix is None:
            child = subprocess.Popen(list(command), env=marked, start_new_session=True)
            log_file, passed = None, 0
        else:
            child = popen_off_our_streams(list(command), log_prefix, env=marked)
            log_file, passed = child.log_file, 0  # type: ignore[attr-defined]
    except BaseException:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        raise
    pgid = child.pid  # a new session: its leader's pid is the group id
    group.append(pgid)
    for signum in pending:
        _signal_group(pgid, signum)
    try:
        while True:
            if log_file is not None:
                passed = pass_on_log(log_file, passed)
            with suppress(subprocess.TimeoutExpired):
                return _exit_code(child.wait(timeout=0.2))  # a timeout, so a forwarded signal is looked at
            if forwarded_at and time.monotonic() - forwarded_at[0] > grace:
                stop_groups([pgid], leader=child, grace=grace)
                return _exit_code(child.wait())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop_groups([pgid], leader=child, grace=grace)
        if log_file is not None:
            import shutil

            pass_on_log(log_file, passed)
            shutil.rmtree(log_file.parent, ignore_errors=True)


def _exit_code(returncode: int) -> int:
    """A child killed by signal N (Popen's -N) exits as a shell reports it, 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def stop_orphaned_groups(parents: set[int] | None = None, proc: Path = PROC) -> list[int]:
    """Stop (`stop_groups`) the process groups `run_in_process_group` started for commands that are
    gone (killed with SIGKILL: no `finally`); returns their leaders' pids. A leader is recognised
    from /proc: this user, a session leader, and `RECSYS_PARENT_PID` in its environment naming a
    pid that no longer runs. `parents` limits it to children of those pids. No /proc: nothing."""
    import psutil

    def orphaned(entry: ProcessEntry) -> bool:
        if not entry.is_session_leader() or (parent := entry.env(PARENT_ENV)) is None:
            return False
        return (parents is None or int(parent) in parents) and not psutil.pid_exists(int(parent))

    return stop_groups(find_own(orphaned, proc))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
