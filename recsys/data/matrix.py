"""Sparse user x item matrices: the one shape every model, splitter and the evaluator share.

Built once per split from an indexed interaction table; all matrices of a split have the full vocab
shape (n_users x n_items) so indices mean the same thing everywhere, even for users or items that
happen to have no rows in one part of the split.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data.schema import ITEM_IDX, TIME, USER_IDX, WEIGHT
from recsys.errors import DataError


def to_csr(interactions: pl.DataFrame, n_users: int, n_items: int, weight: str = WEIGHT) -> sp.csr_matrix:
    """users x items float32 CSR from columns user_idx / item_idx and `weight`.

    Duplicated (user, item) pairs are summed (scipy's COO -> CSR semantics), indices are sorted and
    explicit zeros are kept out, which is the contract `recsys.models.base.as_user_item_csr` checks.
    Indices outside [0, n_users) x [0, n_items) are a DataError rather than a silently resized matrix.
    """
    missing = [c for c in (USER_IDX, ITEM_IDX, weight) if c not in interactions.columns]
    if missing:
        raise DataError(
            f"cannot build a user x item matrix: missing column(s) {missing}; have {interactions.columns}"
        )
    rows = interactions.get_column(USER_IDX).to_numpy().astype(np.int64, copy=False)
    cols = interactions.get_column(ITEM_IDX).to_numpy().astype(np.int64, copy=False)
    values = (
        interactions.get_column(weight)
        .cast(pl.Float32)
        .fill_null(0.0)
        .to_numpy()
        .astype(np.float32, copy=False)
    )
    if rows.size:
        _check_range(rows, n_users, USER_IDX)
        _check_range(cols, n_items, ITEM_IDX)
    matrix = sp.csr_matrix((values, (rows, cols)), shape=(n_users, n_items), dtype=np.float32)
    matrix.sum_duplicates()  # also sorts indices
    matrix.eliminate_zeros()
    return matrix


def event_times(interactions: pl.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix | None:
    """users x items float64 CSR of each pair's event time in seconds since the earliest one, plus 1
    (so no stored time is 0: 0 means unknown, and a pair without a timestamp stores nothing). What a
    sequence user tower orders histories by; None when the table has no timestamps at all."""
    if TIME not in interactions.columns or interactions.height == 0:
        return None
    micros = interactions.get_column(TIME).dt.epoch("us")
    if micros.null_count() == interactions.height:
        return None
    seconds = ((micros - micros.min()).cast(pl.Float64) / 1e6 + 1.0).alias("_seconds")
    frame = interactions.select(USER_IDX, ITEM_IDX, seconds).drop_nulls("_seconds")
    matrix = sp.csr_matrix(
        (
            frame.get_column("_seconds").to_numpy(),
            (frame.get_column(USER_IDX).to_numpy().astype(np.int64), frame.get_column(ITEM_IDX).to_numpy().astype(np.int64)),
        ),
        shape=(n_users, n_items),
        dtype=np.float64,
    )
    matrix.sort_indices()
    return matrix


def empty_csr(n_users: int, n_items: int) -> sp.csr_matrix:
    """An all-empty matrix of the vocab shape (e.g. the train rows of held-out users)."""
    return sp.csr_matrix((n_users, n_items), dtype=np.float32)


def item_popularity(csr: sp.csr_matrix) -> np.ndarray:
    """Number of users who interacted with each item (stored entries per column, not summed weight)."""
    csr = sp.csr_matrix(csr)
    return np.bincount(csr.indices, minlength=csr.shape[1]).astype(np.int64)


def user_activity(csr: sp.csr_matrix) -> np.ndarray:
    """Number of items each user interacted with (stored entries per row)."""
    return np.diff(sp.csr_matrix(csr).indptr).astype(np.int64)


def _check_range(values: np.ndarray, size: int, column: str) -> None:
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= size:
        bad = low if low < 0 else high
        raise DataError(f"{column} value {bad} is outside the vocab range [0, {size})")
