"""Similar items: the top-k items for an item by cosine between any model's item vectors.

Every model has item vectors, so item-to-item retrieval needs no model of its own: cosine (the dot
product of L2-normalised vectors) between the query item and every other item, the query item itself
never returned. With an ANN index over unit item vectors (`recsys.ann`, normalised towers) the index
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
    unit: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(items (n, k'), cosines (n, k')) for query item indices `queries`, best first, never the query
    item; k' = min(k, n_items - 1), ties to the lower index. `unit`: the normalised vectors, when the
    caller keeps them. `ann` is used only when it indexes the unit vectors themselves (`ann.cosine`)."""
    queries = np.asarray(queries, dtype=np.int64)
    vectors = unit if unit is not None else unit_rows(np.asarray(item_vectors, np.float32))
    n_items = vectors.shape[0]
    kk = max(1, min(int(k), n_items - 1))
    mask = self_mask(queries, n_items)
    if ann is not None and ann.cosine:
        return ann.topk(vectors[queries], kk, mask)
    return topk(vectors[queries], vectors, kk, exclude=mask, device="cpu")
