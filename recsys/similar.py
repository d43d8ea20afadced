"""Similar items: the top-k items for an item by cosine between any model's item vectors.

Every model has item vectors, so item-to-item retrieval needs no model of its own: cosine (the dot
product of L2-normalised vectors) between the query item and every other item, the query item itself
never returned. A model may define its own similarity vectors (`Recommender.similarity_vectors`: a
blend weighs its members' cosines); `similar_items` takes them as `unit`. With an ANN index over unit item vectors (`recsys.ann`, normalised towers) the index
answers it; otherwise the scores are exact (one matmul per chunk of queries). Item vectors of norm 0
(items without training data in some models) have cosine 0 with everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from recsys.evaluation.ranking import topk

if TYPE_CHECKING:
    from recsys.ann import AnnIndex


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0.0), dtype=np.float32)


def self_mask(queries: np.ndarray, n_items: int) -> sp.csr_matrix:
    """(n, n_items) CSR with row i holding only item queries[i]: what `topk` must never return."""
    n = queries.shape[0]
    return sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), queries)), shape=(n, n_items))


def similar_items(
    item_vectors: np.ndarray, queries: np.ndarray, k: int, ann: AnnIndex | None = None,
    unit: np.ndarray | None = None, masked_items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(items (n, k'), cosines (n, k')) for query item indices `queries`, best first, never the query
    item; k' = min(k, n_items - 1), ties to the lower index. `unit`: the normalised vectors, when the
    caller keeps them (a server: as `item_major` of them, so no request copies the catalogue). `ann`
    is used only when it indexes the unit vectors themselves (`ann.cosine`). `masked_items` (bool
    per item): never returned, for any query (serving: items without training data, whose vectors
    are untrained; a list then pads with -1 / -inf where fewer than k' items are left)."""
    queries = np.asarray(queries, dtype=np.int64)
    vectors = unit if unit is not None else unit_rows(np.asarray(item_vectors, np.float32))
    n_items = vectors.shape[0]
    kk = max(1, min(int(k), n_items - 1))
    mask = self_mask(queries, n_items)
    rows = np.asarray(vectors[queries], dtype=np.float32)  # a torch view (item_major) gathers to a tensor
    if ann is not None and ann.cosine:
        return ann.topk(rows, kk, mask, masked_items)
    return topk(rows, vectors, kk, exclude=mask, device="cpu", masked_items=masked_items)


def heldout_cooccurrences(histories: sp.spmatrix, times: sp.spmatrix | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Co-occurrence pairs for item-to-item evaluation from users no model trained on: each
    held-out user's consecutive items in time order (index order without times). Returns (user,
    query item, next item) arrays, one entry per pair."""
    from recsys.models.sequence_tower import order_rows

    ordered = order_rows(histories, times)
    lengths = np.diff(ordered.indptr)
    owner = np.repeat(np.arange(lengths.size), lengths)
    follows = np.flatnonzero(np.diff(owner) == 0)  # position p and p + 1 belong to one user
    return owner[follows], ordered.items[follows], ordered.items[follows + 1]


def cooccurrence_hits(
    item_vectors: np.ndarray, queries: np.ndarray, targets: np.ndarray, k: int, chunk: int = 4096,
    masked_items: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """1.0 where `targets[i]` is among the k items most similar to `queries[i]` (cosine, the query
    excluded), else 0.0: the per-pair hits whose mean is recall@k of held-out co-occurrences.
    `masked_items` (bool per item) are never among the k, as serving never answers with an item
    without training data (`similar_items`)."""
    unit = unit_rows(np.asarray(item_vectors, np.float32))
    hits = np.zeros(queries.shape[0], dtype=np.float64)
    for lo in range(0, queries.shape[0], chunk):
        found, _ = similar_items(unit, queries[lo : lo + chunk], k, unit=unit, masked_items=masked_items)
        hits[lo : lo + chunk] = (found == targets[lo : lo + chunk, None]).any(axis=1)
    return hits
