"""Lock files of server stores (`~/.cache/recsys/locks`, one per server URI and registered model or
lineage) are pruned when unused for a day and not held; none was ever removed before."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from recsys.tracking.locks import lock_path, prune_stale_locks, registry_lock

HOLDER = "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)"


def _aged(path: Path, days: float = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    then = time.time() - days * 24 * 3600
    os.utime(path, (then, then))
    return path


def test_only_locks_unused_for_a_day_and_held_by_nobody_are_removed(tmp_path):
    folder = tmp_path / "locks"
    free, held, fresh, ours = (_aged(folder / f"{name}.lock") for name in ("free", "held", "fresh", "ours"))
    os.utime(fresh)  # used just now
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(held)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # another process holds it, for days already
        assert prune_stale_locks(folder, keep=ours) == [free]
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in folder.iterdir()) == ["fresh.lock", "held.lock", "ours.lock"]


def test_taking_a_server_stores_lock_prunes_the_cache_folder_and_stamps_its_own(tmp_path, monkeypatch):
    """The wiring: a registry lock of a server store (its file in the cache folder) prunes the
    folder's stale locks before it waits, and marks its own file used."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    uri = "http://127.0.0.1:9"
    own = _aged(lock_path(uri, "recsys-best"))
    left = _aged(lock_path("http://127.0.0.1:12345", "a-model-of-a-server-gone"))
    with registry_lock(MlflowClient(tracking_uri=uri, registry_uri=uri), "recsys-best"):
        assert own.is_file() and time.time() - own.stat().st_mtime < 3600
    assert not left.exists() and own.is_file()
