"""Which throw-away stacks a test session reaps (`recsys.stack.reap_orphans`): only those whose
owner is provably gone. Two suites on one machine (two clones, CI beside a developer) each reap
the temp folder's `recsys-test-*` directories as they start, so a live owner's claim must read
as live from any other process, whatever the clock did since it was made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stack_claims import claimed_by_another_process

from recsys.stack import CLAIM_LOCK, OWNER_FILE, Server, Stack, dead_claim, owner_alive, reap_orphans


def _stack_with_a_server(root: Path) -> subprocess.Popen:
    """`root` holding a stack state whose one "server" (a sleeper with MLflow's marker) runs."""
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "mlflow"], start_new_session=True)
    root.mkdir()
    stack = Stack(root)
    stack.servers["mlflow"] = Server("mlflow", server.pid, "http://127.0.0.1:1", "http://127.0.0.1:1/health",
                                     str(root / "mlflow.log"), "mlflow")  # fmt: skip
    stack.write_state()
    return server


def _end(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="psutil's Linux boot time is what moves")
def test_a_live_claim_of_another_session_is_left_alone_after_the_clock_moved(tmp_path, monkeypatch):
    """The kernel's boot time, from which every process start time is derived, is the wall clock
    less the uptime, in whole seconds: a clock step of a fraction of a second can move it by one.
    A claim that was a pid and its start time then read, in any other session, as a reused pid, and
    that session stopped the live owner's servers and deleted its folder (its SQLite store, its
    PostgreSQL data) mid-session. Here the step is seen by this process only (psutil's boot time
    read one second later), as by a session that starts after the step."""
    import psutil._pslinux

    root = tmp_path / "stack-live"
    server = _stack_with_a_server(root)
    owner = claimed_by_another_process(root)
    try:
        boot_time = psutil._pslinux.boot_time
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: boot_time() + 1.0)
        assert reap_orphans(tmp_path, "stack-") == []
        assert owner_alive(root) is True
        assert (root / "stack.json").is_file() and server.poll() is None
    finally:
        _end(owner, server)


def test_a_dead_claim_is_reaped_by_one_session_only(tmp_path):
    """The owner killed with -9: its claim's lock is free, so its stack is stopped and its folder
    deleted, by one session: a second one starting meanwhile finds the lock held by the first (as
    a live claim) and leaves it to it."""
    root = tmp_path / "stack-dead"
    server = _stack_with_a_server(root)
    owner = claimed_by_another_process(root)
    owner.kill()
    owner.wait()
    try:
        with dead_claim(root) as dead:  # another session, reaping it now
            assert dead is True
            assert reap_orphans(tmp_path, "stack-") == [] and root.is_dir() and server.poll() is None
        assert reap_orphans(tmp_path, "stack-") == [root]
        assert not root.exists() and server.wait(timeout=30) is not None
    finally:
        _end(server)


def test_claims_being_made_or_removed_and_unclaimed_folders_are_left_alone(tmp_path):
    """A folder just made (no owner file yet, whether or not its lock is taken), one whose lock
    file is gone (its owner, or a reaper, is removing it) and one never claimed read as nobody's:
    not provably orphaned."""
    made, removed, unclaimed = (tmp_path / f"stack-{n}" for n in ("made", "removed", "unclaimed"))
    for root in (made, removed, unclaimed):
        root.mkdir()
    (made / CLAIM_LOCK).touch()
    (removed / OWNER_FILE).write_text(json.dumps({"pid": 1 << 30, "started": 0.0, "lock": CLAIM_LOCK}))
    assert [owner_alive(root) for root in (made, removed, unclaimed)] == [None, None, None]
    assert reap_orphans(tmp_path, "stack-") == []
    assert all(root.is_dir() for root in (made, removed, unclaimed))


def test_a_claim_made_before_claims_held_a_lock_is_read_by_its_pid(tmp_path):
    """Folders left by a session of an earlier release (an owner file without `lock`): gone when its
    pid runs no process, or one started away from the recorded start by more than the clock's
    second; this process's, recorded a second off, is alive."""
    import psutil

    gone, ours = tmp_path / "stack-gone", tmp_path / "stack-ours"
    for root, pid, started in ((gone, 1 << 30, 0.0), (ours, os.getpid(), psutil.Process().create_time() - 1.0)):
        root.mkdir()
        (root / OWNER_FILE).write_text(json.dumps({"pid": pid, "started": started}))
    assert reap_orphans(tmp_path, "stack-") == [gone]
    assert ours.is_dir()
