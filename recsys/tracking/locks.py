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
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recsys" / "locks"
    key = hashlib.sha256(f"{uri}|{name}".encode()).hexdigest()[:16]
    return cache / f"{kind}-{slug}-{key}.lock"


@contextlib.contextmanager
def registry_lock(client: MlflowClient, name: str) -> Iterator[None]:
    """Hold the lock of registered model `name` (re-entrant in a thread; others wait)."""
    path = lock_path(store_uri(client), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), is_singleton=True):
        yield


@contextlib.contextmanager
def lineage_lock(client: MlflowClient, lineage_id: str) -> Iterator[None]:
    """Hold the lock of a lineage's pipeline runs in this store (re-entrant in a thread; others
    wait): held from a run's look for an identical run (`recsys.tracking.unchanged`) until its own
    parent run exists, so of two runs started at once on the same inputs the second sees the first."""
    path = lock_path(store_uri(client), lineage_id, kind="lineage")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), is_singleton=True):
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
