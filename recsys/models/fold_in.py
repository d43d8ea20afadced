"""Least-squares fold-in: user vectors for users unseen at training time, from fixed item vectors.

Why: implicit ALS (Hu, Koren and Volinsky 2008) solves, per user, a weighted least squares — observed
items should score 1 with confidence c, every other item 0 with confidence 1 — so popular items the
user skipped push the vector away. One solve serves every model that needs it: `wals_spark` (Spark's
ALS-WR penalty, regularisation times the user's interaction count) and the two-tower's
`fold_in = "least_squares"` (a constant penalty, as implicit uses):

    x_u = (YᵀY + Yᵀ(C_u - I)Y + λ_u I)⁻¹ YᵀC_u p_u

Batched: per chunk of users, the per-interaction outer products are summed per user with one sparse
matmul and all systems are solved by one stacked np.linalg.solve; chunks bound the outer products'
memory (FOLD_IN_CHUNK_BYTES), whatever the catalogue size.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

FOLD_IN_CHUNK_BYTES = 64 * 2**20
"""Memory bound for the per-interaction outer products one chunk of fold-in builds at once."""


def least_squares_users(
    confidence: sp.csr_matrix,
    item_vectors: np.ndarray,
    regularization: float,
    *,
    scale_by_count: bool = False,
) -> np.ndarray:
    """`(n_users, d)` float32 user vectors for the rows of `confidence` (users x items; stored cells
    are observed items with confidence c, unstored cells confidence 1 and preference 0) against
    fixed `item_vectors` `(n_items, d)`. `scale_by_count`: λ_u = regularization * n_u (ALS-WR, Spark)
    instead of a constant. Empty rows give zero vectors."""
    items = np.asarray(item_vectors, dtype=np.float64)
    rank = items.shape[1]
    out = np.zeros((confidence.shape[0], rank), dtype=np.float32)
    if confidence.nnz == 0:
        return out
    gram = items.T @ items
    eye = np.eye(rank)
    for start, stop in chunks(confidence.indptr, rank):
        block = confidence[start:stop]
        counts = np.diff(block.indptr)
        owner = np.repeat(np.arange(stop - start), counts)
        indicator = sp.csr_matrix(
            (np.ones(block.nnz), (owner, np.arange(block.nnz))), shape=(stop - start, block.nnz)
        )
        y = items[block.indices]  # (nnz, rank)
        c = block.data.astype(np.float64)
        outer = ((c - 1.0)[:, None, None] * y[:, :, None] * y[:, None, :]).reshape(block.nnz, rank * rank)
        lhs = gram + (indicator @ outer).reshape(-1, rank, rank)
        penalty = regularization * (counts if scale_by_count else 1.0) + (counts == 0)  # empty: x = 0
        lhs += penalty[:, None, None] * eye
        rhs = indicator @ (c[:, None] * y)
        out[start:stop] = np.linalg.solve(lhs, rhs[:, :, None])[:, :, 0]
    return out


def chunks(indptr: np.ndarray, rank: int) -> list[tuple[int, int]]:
    """Row ranges whose interactions' (rank x rank) float64 outer products fit FOLD_IN_CHUNK_BYTES
    (a row longer than that gets a range of its own); also caps rows so the stacked systems stay small."""
    per_chunk = max(1, FOLD_IN_CHUNK_BYTES // (8 * rank * rank))
    n_rows = len(indptr) - 1
    bounds = [0]
    while bounds[-1] < n_rows:
        start = bounds[-1]
        stop = int(np.searchsorted(indptr, indptr[start] + per_chunk, side="right")) - 1
        bounds.append(min(n_rows, max(stop, start + 1), start + per_chunk))
    return list(zip(bounds[:-1], bounds[1:], strict=True))
