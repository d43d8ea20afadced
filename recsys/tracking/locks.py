"""One writer at a time per registry line, and a compare-and-set on the champion alias.

Why: promotion reads the champion, decides (seconds: the champion may be re-evaluated on today's
split) and moves the alias. Two promotions at once both read "no champion" (or the same old one),
both decide "promoted", and the last to write wins, so a significantly worse model can end as
champion. Two layers close that:

* `registry_lock(client, name)` - a `filelock` per registered model. For a local store (SQLite file,
  `file:` directory) the lock lives beside the store, so every process using that store sees it.
  For a server (http, a database URL) it lives in the user's cache directory, keyed by URI and name:
  it serialises the promotions of one user account on this machine, not those of other machines.
* `set_alias_if_unchanged` - promotions from other machines do not share a lock file, so right
  before moving the alias the champion is read again; when it moved, the caller decides again
  against the new champion. MLflow has no atomic compare-and-set on aliases, so a window of one
  round trip remains between that read and the write; the lock covers it for one machine.

`lineage_lock(client, lineage_id)`, in the same places, serialises the few store calls in which a
pipeline run looks for an identical earlier run and opens its own (recsys.tracking.unchanged).
With a server it is per machine too: two machines starting a run of one lineage on new inputs at the
same moment can both train (README, "One machine's lock"). MLflow's only atomic writes are unique
names and params (a param cannot change once logged), and none is a lease that frees itself when
its holder dies, so across machines the schedule's one-at-a-time comes from the Prefect server's
deployment concurrency limit instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from recsys.tracking.store import is_sqlite, sqlite_path

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def store_uri(client: MlflowClient) -> str:
    """The registry URI the client writes aliases to (MLflow keeps it private; tracking URI else)."""
    return str(getattr(client, "_registry_uri", None) or client.tracking_uri)


def lock_path(uri: str, name: str, kind: str = "registry") -> Path:
    """Where the lock of registered model `name` (or, with `kind`, of another thing named `name`:
    a lineage) in the store at `uri` lives (see module docstring)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"
    if is_sqlite(uri) and str(sqlite_path(uri)) not in ("", "."):
        return sqlite_path(uri).resolve().parent / ".locks" / f"{kind}-{slug}.lock"
    if uri.startswith("file:") or "://" not in uri:
        root = Path(uri.removeprefix("file://").removeprefix("file:"))
        return root.resolve() / ".locks" / f"{kind}-{slug}.lock"
    cache = cache_lock_dir()
    key = hashlib.sha256(f"{uri}|{name}".encode()).hexdigest()[:16]
    return cache / f"{kind}-{slug}-{key}.lock"


STALE_LOCK_SECONDS = 24 * 3600
"""A lock file in the cache directory unused this long (its mtime, stamped at each acquisition) is pruned."""


def cache_lock_dir() -> Path:
    """The user's lock folder for stores that are servers (see `lock_path`)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recsys" / "locks"


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """Hold the file lock at `path` (re-entrant in a thread; others wait), its mtime stamped with
    the acquisition (what `prune_stale_locks` reads as its last use). A lock in the cache folder
    first prunes the folder's stale ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent == cache_lock_dir():
        prune_stale_locks(path.parent, keep=path)
    with FileLock(str(path), is_singleton=True):
        with contextlib.suppress(OSError):
            os.utime(path)
        yield


def prune_stale_locks(folder: Path, keep: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove the `*.lock` files of `folder` unused for `STALE_LOCK_SECONDS` that no process holds;
    returns them.

    Why: the cache folder gets a lock file per (server URI, registered model or lineage), and none
    was ever removed: every test server's random port, every renamed model left one for good.

    Why it is safe: a file is removed only while this process holds its lock (taken without
    waiting: a held one is skipped), and filelock (>= 3.20.4) checks after each `flock` that the
    file it locked still has a name (`st_nlink`), so a process that opened the file before the
    removal and got the lock after it starts again on the path's new file instead of holding a
    lock nobody else can see. The day's margin keeps a lock in use from being recreated at every run."""
    import time

    from filelock import Timeout

    now = time.time() if now is None else now
    removed = []
    for path in sorted(folder.glob("*.lock")):
        if keep is not None and path == keep:
            continue
        try:
            if now - path.stat().st_mtime < STALE_LOCK_SECONDS:
                continue
        except OSError:
            continue
        probe = FileLock(str(path), timeout=0, is_singleton=False)
        try:
            probe.acquire()
        except (Timeout, OSError):
            continue  # held (or not ours to open): in use
        try:
            path.unlink(missing_ok=True)
            removed.append(path)
        except OSError:
            pass
        finally:
            probe.release()
    return removed


@contextlib.contextmanager
def registry_lock(client: MlflowClient, name: str) -> Iterator[None]:
    """Hold the lock of registered model `name` (re-entrant in a thread; others wait)."""
    with _held(lock_path(store_uri(client), name)):
        yield


@contextlib.contextmanager
def lineage_lock(client: MlflowClient, lineage_id: str) -> Iterator[None]:
    """Hold the lock of a lineage's pipeline runs in this store (re-entrant in a thread; others
    wait): held from a run's look for an identical run (`recsys.tracking.unchanged`) until its own
    parent run exists, so of two runs started at once on the same inputs the second sees the first."""
    with _held(lock_path(store_uri(client), lineage_id, kind="lineage")):
        yield


def same_version(a: ModelVersion | None, b: ModelVersion | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and str(a.version) == str(b.version))


def set_alias_if_unchanged(
    client: MlflowClient, name: str, alias: str, expected: ModelVersion | None, version: str
) -> tuple[bool, ModelVersion | None]:
    """Point `alias` of `name` at `version` if it still names `expected` (None: no version).

    Returns (True, expected) when it was set, else (False, the version the alias names now), so
    the caller can decide again against that one."""
    from recsys.tracking.registry import alias_version
    from recsys.tracking.runs import with_retries

    current = alias_version(client, name, alias)
    if not same_version(current, expected):
        return False, current
    with_retries(lambda: client.set_registered_model_alias(name, alias, version))
    return True, expected
