"""`recsys.files.lock_for_life`, the lock behind the stack claims and the offline bundles' writer
lock: held while its owner runs, free once it is gone however it ended, shared holders side by side,
and never made by a probe. Checked between real processes: flock is per open file, so one process
cannot stand in for two."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.files import lock_for_life

HOLDER = (
    "import sys, time; from recsys.files import lock_for_life; "
    "lock_for_life(sys.argv[1], shared=sys.argv[2] == 'shared', create=True); "
    "print('held', flush=True); time.sleep(300)"
)


def _holder(path: Path, kind: str) -> subprocess.Popen:
    """A process that holds `path`'s lock (`kind`: exclusive or shared) until it is killed."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), kind], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held", child.communicate()
    return child


def _end(child: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    child.send_signal(sig)
    child.wait(timeout=30)


def test_a_lock_is_held_while_its_owner_runs_and_free_once_it_was_killed(tmp_path: Path):
    path = tmp_path / "owner.lock"
    child = _holder(path, "exclusive")
    try:
        for shared in (False, True):
            with pytest.raises(BlockingIOError):
                lock_for_life(path, shared=shared, wait=False)
    finally:
        _end(child)  # a kill -9 runs no clean-up of its own: the kernel releases the lock
    fd = lock_for_life(path, wait=False)
    os.close(fd)
    assert path.is_file()  # the file stays; only its lock tells whether an owner runs


def test_shared_holders_exclude_an_exclusive_one_until_the_last_has_ended(tmp_path: Path):
    path = tmp_path / "writers.lock"
    first, second = _holder(path, "shared"), _holder(path, "shared")  # both hold it at once
    try:
        os.close(lock_for_life(path, shared=True, wait=False))  # and so can a third
        _end(first)
        with pytest.raises(BlockingIOError):
            lock_for_life(path, wait=False)  # the second still holds it
    finally:
        _end(second, signal.SIGTERM)
        if first.poll() is None:
            _end(first)
    os.close(lock_for_life(path, wait=False))


def test_a_probe_never_makes_the_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        lock_for_life(tmp_path / "none.lock", wait=False)
    assert list(tmp_path.iterdir()) == []
    fd = lock_for_life(tmp_path / "made.lock", create=True, mode=0o600)
    os.close(fd)
    assert (tmp_path / "made.lock").stat().st_mode & 0o777 == 0o600 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
