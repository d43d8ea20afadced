"""What every peer runner shares: read an exported split, measure a run, write top-k lists.

Runs inside each peer's own virtual environment, so it needs nothing beyond the standard library
and numpy (every peer has numpy): no recsys import, no pandas. The contract with `export.py` (which
writes the files) and `score.py` (which reads the lists back) is:

* `<export>/<dataset>/{train,valid,test}.tsv`: header `user\\titem\\trating\\ttimestamp`, ids are the
  project's dense integer indices (so lists map back without a vocab);
* `<export>/<dataset>/meta.json`: n_users, n_items, protocol and the parts' row counts;
* `<results>/<dataset>/<system>-<model>.json`: what `write_topk` writes.

Every list excludes the user's train *and* validation items: the project's own test evaluation
masks both, so the peers are held to exactly the same rule.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

K = 100
PARTS = ("train", "valid", "test")
TORCH_THREADS = int(os.environ.get("PEERS_THREADS", "1"))
"""Intra-op threads for every torch-based run (RecBole, LensKit, the project's two-tower). One, not
two: on the shared, busy 2-core machine two OpenMP threads spin-wait on each other and RecBole BPR
measured 10 s per ML-100K epoch with 2 threads against 0.9 s with 1 (same run, same minute)."""


@dataclass(frozen=True)
class Part:
    """One part of the split as parallel arrays (one entry per interaction)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray

    def __len__(self) -> int:
        return int(self.users.size)


def read_part(path: Path) -> Part:
    """Read one exported TSV (header line, then int user, int item, float rating, float time)."""
    table = np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2, dtype=np.float64)
    return Part(table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2], table[:, 3])


def read_split(export_dir: Path) -> tuple[dict[str, Part], dict]:
    """All three parts plus meta.json of one exported data set."""
    meta = json.loads((export_dir / "meta.json").read_text())
    return {name: read_part(export_dir / f"{name}.tsv") for name in PARTS}, meta


def seen_keys(parts: dict[str, Part], n_items: int) -> np.ndarray:
    """Sorted `user * n_items + item` keys of every train and validation interaction: what no
    list may contain (the project's test evaluation masks both)."""
    users = np.concatenate([parts["train"].users, parts["valid"].users])
    items = np.concatenate([parts["train"].items, parts["valid"].items])
    return np.unique(users * np.int64(n_items) + items)


def test_users(parts: dict[str, Part]) -> np.ndarray:
    """The users the lists are wanted for: everyone with a test interaction."""
    return np.unique(parts["test"].users)


def pad_lists(lists: list, width: int | None = None) -> np.ndarray:
    """Ragged ranked lists -> (n, width) int64, padded with -1."""
    width = max((len(x) for x in lists), default=0) if width is None else width
    out = np.full((len(lists), width), -1, dtype=np.int64)
    for row, ranked in enumerate(lists):  # one copy per user; only ragged peer output needs it
        ranked = np.asarray(ranked, dtype=np.int64)[:width]
        out[row, : ranked.size] = ranked
    return out


def drop_seen(
    ranked: np.ndarray, users: np.ndarray, seen: np.ndarray, n_items: int, k: int = K
) -> np.ndarray:
    """Remove seen items (and padding < 0) from each row of `ranked` (n, L), keep the order, cut
    to k columns, pad with -1.

    Peers differ in what they mask (train only, or train + validation); running every list
    through this makes the rule identical, and it is a no-op for peers that already mask both.
    Vectorised: membership is one searchsorted over the sorted seen keys."""
    ranked = np.asarray(ranked, dtype=np.int64)
    keys = np.asarray(users, dtype=np.int64)[:, None] * np.int64(n_items) + ranked
    if seen.size:
        pos = np.minimum(np.searchsorted(seen, keys), seen.size - 1)
        is_seen = seen[pos] == keys
    else:
        is_seen = np.zeros(ranked.shape, dtype=bool)
    keep = (ranked >= 0) & ~is_seen
    order = np.argsort(~keep, axis=1, kind="stable")  # kept entries first, in their ranked order
    out = np.take_along_axis(ranked, order, axis=1)[:, :k]
    kept = np.take_along_axis(keep, order, axis=1)[:, :k]
    out[~kept] = -1
    if out.shape[1] < k:
        out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextmanager
def stopwatch(times: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall-clock seconds of the block under `times[name]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        times[name] = time.perf_counter() - start


def write_topk(
    path: Path,
    *,
    system: str,
    model: str,
    dataset: str,
    version: str,
    users: np.ndarray,
    lists: np.ndarray,
    times: dict[str, float],
    params: dict,
    own_metrics: dict[str, float] | None = None,
    own_definitions: dict[str, str] | None = None,
    notes: str = "",
) -> None:
    """Write one run's lists and measurements as JSON (temp file, then rename).

    own_metrics: the peer's own evaluator numbers ({"recall@20": ..., "ndcg@20": ...});
    own_definitions: how the peer defines each, so score.py recomputes the same quantity."""
    record = {
        "system": system,
        "model": model,
        "dataset": dataset,
        "version": version,
        "k": K,
        "fit_seconds": times.get("fit", float("nan")),
        "recommend_seconds": times.get("recommend", float("nan")),
        "own_eval_seconds": times.get("own_eval", float("nan")),
        "load_seconds": times.get("load", float("nan")),
        "peak_rss_mb": peak_rss_mb(),
        "params": params,
        "own_metrics": own_metrics or {},
        "own_definitions": own_definitions or {},
        "notes": notes,
        "users": [int(u) for u in users],
        "items": np.asarray(lists, dtype=np.int64).tolist(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        json.dump(record, out)
    os.replace(tmp, path)


def parse_args(argv: list[str] | None = None) -> tuple[Path, Path, str, str]:
    """Every runner takes: EXPORT_DIR RESULTS_DIR DATASET MODEL."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        raise SystemExit(f"usage: {Path(sys.argv[0]).name} EXPORT_DIR RESULTS_DIR DATASET MODEL")
    export_root, results_root, dataset, model = args
    return Path(export_root) / dataset, Path(results_root) / dataset, dataset, model
