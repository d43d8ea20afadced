"""Approximate nearest-neighbour top-k over a model's item vectors, for catalogues too large to score
every item per request (faiss HNSW; exact search stays the evaluation path and the fallback).

Why faiss-cpu: measured against usearch and hnswlib on the same HNSW shape at 1M items
(benchmarks/results/ann.md), all three reach the same recall at the same M and ef; hnswlib answers
single queries ~1.6x faster but is published as source only (installing it needs a C++ compiler),
usearch is slower per query than faiss; faiss ships wheels for every platform and saves its index
in its own binary format (no pickle). Defaults (M 16, ef 512): the smallest measured ef reaching
recall@100 >= 0.995 of exact at 1M (README, ANN section).

Inner product is not a metric, and graph indexes navigate best when all vectors have one norm. Unit
item vectors (normalised towers) are indexed as they are. Otherwise each item x is scaled by 1/M (M
the largest norm) and given one extra coordinate sqrt(1 - |x|^2 / M^2), a query q gets 0 there
(Bachrach et al. 2014): every indexed vector has norm 1 and the indexed inner product is q.x / M,
which ranks items exactly as q.x does.

Seen items: a row is searched for k + (its seen items) candidates, the seen ones are dropped and the
k best kept, so a list stays full whenever the index returns that many; rows that still come up
short (or whose over-fetch would exceed `max_overfetch`) are answered exactly. Items masked for
every row (never trained on) are dropped from the candidates without being over-fetched. Returned
scores are the exact dot products of the candidates, re-sorted with ties to the lower item index, so
whenever the ANN finds the exact top-k its list is the exact answer item for item.
"""

from __future__ import annotations

import json
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.ann_config import AnnConfig  # noqa: F401 - re-exported

# recsys.evaluation.ranking (torch) is imported where an index is used (tests/test_startup.py).

INDEX_FILE = "ann.faiss"
META_FILE = "ann.json"
UNIT_NORM_TOLERANCE = 1e-3


def _faiss():
    import faiss

    return faiss


def _set_threads(threads: int | None) -> None:
    import os

    faiss = _faiss()
    faiss.omp_set_num_threads(threads or os.cpu_count() or 1)


class AnnIndex:
    """A faiss HNSW index over item vectors plus what is needed to answer exactly like `topk`."""

    def __init__(self, index: Any, item_vectors: np.ndarray, *, scale: float | None, params: dict[str, Any],
                 report: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.index = index
        self.item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.scale = scale  # None: unit vectors indexed as they are; else the 1/M augmentation
        self.params = params
        self.report = report or {}

    @property
    def n_items(self) -> int:
        return int(self.item_vectors.shape[0])

    @cached_property
    def item_matrix(self) -> Any:
        """The item vectors prepared for exact top-k (`item_major`), made on the first row that
        falls back to exact search: no copy of the catalogue per request."""
        from recsys.evaluation.ranking import item_major

        return item_major(self.item_vectors)

    @property
    def cosine(self) -> bool:
        """True when the indexed vectors are the item vectors themselves (unit norm): the index then
        also answers cosine similarity between items."""
        return self.scale is None

    # ----------------------------------------------------------------- build
    @classmethod
    def build(cls, item_vectors: np.ndarray, cfg: AnnConfig) -> AnnIndex:
        faiss = _faiss()
        items = np.ascontiguousarray(item_vectors, dtype=np.float32)
        norms = np.linalg.norm(items, axis=1)
        unit = bool(items.shape[0]) and bool(np.all(np.abs(norms - 1.0) < UNIT_NORM_TOLERANCE))
        scale = None if unit else float(max(norms.max(initial=0.0), 1e-12))
        indexed = items if scale is None else augment_items(items, scale)
        _set_threads(cfg.threads)
        index = faiss.IndexHNSWFlat(indexed.shape[1], cfg.connectivity, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.expansion_add
        index.hnsw.efSearch = cfg.expansion_search
        start = time.perf_counter()
        index.add(indexed)
        params = {
            "connectivity": cfg.connectivity, "expansion_add": cfg.expansion_add,
            "expansion_search": cfg.expansion_search, "max_overfetch": cfg.max_overfetch, "threads": cfg.threads,
        }  # fmt: skip
        built = cls(index, items, scale=scale, params=params)
        built.report = {"library": "faiss", "index": "IndexHNSWFlat (inner product)",
                        "augmented": scale is not None, "build_seconds": time.perf_counter() - start}  # fmt: skip
        return built

    # ----------------------------------------------------------------- search
    def candidates(self, queries: np.ndarray, count: int) -> np.ndarray:
        """(n, count) item indices the index returns for each query, best first, -1 where it has none."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.scale is not None:
            q = np.hstack([q, np.zeros((q.shape[0], 1), dtype=np.float32)])
        count = min(int(count), self.n_items)
        if q.shape[0] < 16:  # a request of a few users: threads only add overhead
            _set_threads(1)
        else:
            _set_threads(self.params.get("threads"))
        self.index.hnsw.efSearch = max(int(self.params["expansion_search"]), count)
        return self.index.search(q, count)[1].astype(np.int64)

    def topk(
        self, user_vectors: np.ndarray, k: int, exclude: sp.spmatrix | None = None,
        masked_items: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Top-k items by dot product, seen items (`exclude` row i for row i) never returned, nor the
        `masked_items` (bool per item, e.g. items the model never trained on) for any row; the shape
        and conventions of `recsys.evaluation.ranking.topk` (padding -1 / -inf). Only a row's own
        seen items are over-fetched: masked items are few among the candidates (counting all of
        them per row would push every row past `max_overfetch`), and a row they leave short is
        answered exactly."""
        from recsys.evaluation.ranking import PAD_ITEM, topk

        vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
        n, kk = vectors.shape[0], min(int(k), self.n_items)
        mask = sp.csr_matrix((n, self.n_items), dtype=np.float32) if exclude is None else sp.csr_matrix(exclude)
        mask.sort_indices()
        seen = np.diff(mask.indptr)
        need = kk + seen
        searchable = (seen <= int(self.params["max_overfetch"])) & (need <= self.n_items)
        items = np.full((n, kk), PAD_ITEM, dtype=np.int64)
        scores = np.full((n, kk), -np.inf, dtype=np.float32)
        rows = np.flatnonzero(searchable)
        if rows.size:
            found = self.candidates(vectors[rows], int(need[rows].max()))
            if masked_items is not None:
                found = np.where((found >= 0) & masked_items[np.maximum(found, 0)], PAD_ITEM, found)
            picked, picked_scores, full = self._best_unseen(vectors[rows], found, mask[rows], kk)
            items[rows[full]], scores[rows[full]] = picked[full], picked_scores[full]
            searchable[rows[~full]] = False
        exact = np.flatnonzero(~searchable)
        if exact.size:
            items[exact], scores[exact] = topk(vectors[exact], self.item_matrix, kk, exclude=mask[exact], device="cpu",
                                               masked_items=masked_items)  # fmt: skip
        return items, scores

    def _best_unseen(
        self, vectors: np.ndarray, found: np.ndarray, seen: sp.csr_matrix, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """From each row's candidates: drop -1 and seen items, score exactly, keep the k best (ties
        to the lower index). Returns (items, scores, whether the row had k candidates left)."""
        from recsys.evaluation.ranking import PAD_ITEM

        valid = (found >= 0) & ~contains(seen, found)
        safe = np.where(valid, found, 0)
        exact = np.einsum("nd,ncd->nc", vectors, self.item_vectors[safe])
        exact = np.where(valid, exact, -np.inf).astype(np.float32)
        by_index = np.argsort(np.where(valid, safe, np.iinfo(np.int64).max), axis=1, kind="stable")
        safe, exact = np.take_along_axis(safe, by_index, 1), np.take_along_axis(exact, by_index, 1)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        items, scores = np.take_along_axis(safe, order, 1), np.take_along_axis(exact, order, 1)
        full = valid.sum(axis=1) >= k
        return np.where(np.isfinite(scores), items, PAD_ITEM), scores, full

    def measure_recall(self, user_vectors: np.ndarray, ks: tuple[int, ...] = (10, 100)) -> dict[str, float]:
        """recall@k of the index against exact search (no exclusions), mean over `user_vectors`."""
        from recsys.evaluation.ranking import topk

        out: dict[str, float] = {}
        if user_vectors.shape[0] == 0:
            return out
        k_max = min(max(ks), self.n_items)
        # Scores of at most ~256 MB at a time: the default chunk of 2,048 users is 8 GB at 1M items.
        chunk = max(1, 2**26 // max(self.n_items, 1))
        truth, _ = topk(user_vectors, self.item_matrix, k_max, device="cpu", chunk_size=chunk)
        found = self.candidates(user_vectors, k_max)
        for k in ks:
            kk = min(k, k_max)
            hits = (found[:, :kk, None] == truth[:, None, :kk]).any(axis=2).sum(axis=1)
            out[f"recall@{k}"] = float(np.mean(hits / kk))
        return out

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> None:
        """`ann.faiss` (faiss's own binary format) + `ann.json` (params, scale, measured recall)."""
        faiss = _faiss()
        target = Path(directory)
        faiss.write_index(self.index, str(target / INDEX_FILE))
        meta = {"params": self.params, "scale": self.scale, "n_items": self.n_items, **self.report}
        (target / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path, item_vectors: np.ndarray) -> AnnIndex | None:
        """The index saved in `directory` (None when there is none) over `item_vectors`."""
        source = Path(directory)
        if not (source / META_FILE).is_file():
            return None
        meta = json.loads((source / META_FILE).read_text())
        if int(meta["n_items"]) != item_vectors.shape[0]:
            raise ValueError(f"{source / META_FILE}: index of {meta['n_items']} items for {item_vectors.shape[0]} vectors")
        index = _faiss().read_index(str(source / INDEX_FILE))
        report = {k: v for k, v in meta.items() if k not in ("params", "scale", "n_items")}
        return cls(index, item_vectors, scale=meta["scale"], params=meta["params"], report=report)


def augment_items(items: np.ndarray, scale: float) -> np.ndarray:
    """[x / M, sqrt(1 - |x|^2 / M^2)]: unit vectors whose inner product with [q, 0] is q.x / M."""
    scaled = items / np.float32(scale)
    rest = np.sqrt(np.clip(1.0 - np.sum(scaled * scaled, axis=1, keepdims=True), 0.0, None))
    return np.ascontiguousarray(np.hstack([scaled, rest]), dtype=np.float32)


def contains(matrix: sp.csr_matrix, candidates: np.ndarray) -> np.ndarray:
    """(n, c) bool: whether row i of `matrix` (sorted CSR) stores column candidates[i, j]."""
    n, c = candidates.shape
    width = np.int64(matrix.shape[1])
    keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(matrix.indptr)) * width + matrix.indices
    if keys.size == 0:
        return np.zeros((n, c), dtype=bool)
    wanted = np.arange(n, dtype=np.int64)[:, None] * width + np.maximum(candidates, 0)
    at = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
    return (keys[at] == wanted) & (candidates >= 0)


def build_for_serving(
    item_vectors: np.ndarray, user_vectors: np.ndarray, cfg: AnnConfig
) -> AnnIndex | None:
    """The index a served model gets (None when the catalogue is below `min_items` or it is off),
    with recall vs exact measured on a seeded sample of `cfg.recall_users` of `user_vectors`."""
    if not cfg.enabled or item_vectors.shape[0] < cfg.min_items:
        return None
    index = AnnIndex.build(item_vectors, cfg)
    rng = np.random.default_rng(cfg.seed)
    sample = rng.choice(user_vectors.shape[0], size=min(cfg.recall_users, user_vectors.shape[0]), replace=False)
    index.report.update(index.measure_recall(np.asarray(user_vectors, np.float32)[np.sort(sample)]))
    index.report["recall_users"] = int(sample.size)
    return index
