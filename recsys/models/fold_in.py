"""Least-squares fold-in: user vectors for users unseen at training time, from fixed item vectors.

Why: a two-tower model folds a new user in as the mean of the history's item vectors, which ignores
every item the user did *not* touch. WALS instead solves, per user, the weighted least squares of
Hu, Koren and Volinsky (2008) — observed items should score 1 with confidence `1 + alpha * w`,
every other item 0 with confidence 1 — so popular items the user skipped push the vector away.
The same solve works on any model's item vectors; this module is that solve, vectorised:

    A_u = V^T V + reg I + sum_{i in u} alpha w_ui v_i v_i^T        b_u = sum_{i in u} (1 + alpha w_ui) v_i

`V^T V` is shared by all users; the per-user sum is one sparse x dense product against the
row-wise outer products of only the items the chunk's users touched; then one batched solve.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CHUNK_USERS = 512


def least_squares_users(
    histories: sp.csr_matrix, item_vectors: np.ndarray, alpha: float, regularization: float
) -> np.ndarray:
    """`(n_users, d)` float32: the implicit-ALS user solve for each row of `histories` (users x items,
    weights w) against fixed `item_vectors` `(n_items, d)`. Empty rows give zero vectors."""
    items = np.asarray(item_vectors, dtype=np.float64)
    n_users, dim = histories.shape[0], items.shape[1]
    shared = items.T @ items + regularization * np.eye(dim)
    out = np.zeros((n_users, dim), dtype=np.float32)
    for start in range(0, n_users, CHUNK_USERS):  # chunks bound memory; work inside is vectorised
        rows = histories[start : start + CHUNK_USERS].tocsr()
        if rows.nnz == 0:
            continue
        touched = np.unique(rows.indices)
        local = rows[:, touched]  # only the touched items' outer products are needed
        vectors = items[touched]
        outer = (vectors[:, :, None] * vectors[:, None, :]).reshape(len(touched), dim * dim)
        extra = (local * alpha) @ outer  # sum_i alpha w_ui v_i v_i^T, flattened
        lhs = shared[None] + np.asarray(extra).reshape(-1, dim, dim)
        confidence = local.copy()
        confidence.data = 1.0 + alpha * confidence.data
        rhs = np.asarray(confidence @ vectors)
        solved = np.linalg.solve(lhs, rhs[:, :, None])[:, :, 0]
        empty = np.diff(rows.indptr) == 0
        solved[empty] = 0.0
        out[start : start + rows.shape[0]] = solved
    return out
