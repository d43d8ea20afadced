"""to_csr / item_popularity: shapes, summed duplicates, sorted indices, range checks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recsys.data.matrix import empty_csr, item_popularity, to_csr, user_activity
from recsys.errors import DataError


def frame(rows: list[tuple[int, int, float]]) -> pl.DataFrame:
    users, items, weights = zip(*rows, strict=True) if rows else ((), (), ())
    return pl.DataFrame(
        {"user_idx": list(users), "item_idx": list(items), "weight": list(weights)},
        schema={"user_idx": pl.Int32, "item_idx": pl.Int32, "weight": pl.Float32},
    )


def test_to_csr_builds_full_vocab_shape_with_summed_duplicates_and_sorted_indices():
    df = frame([(2, 3, 1.0), (0, 1, 2.0), (2, 0, 4.0), (0, 1, 0.5), (2, 3, 3.0)])
    m = to_csr(df, n_users=4, n_items=5)
    assert isinstance(m, sp.csr_matrix)
    assert m.shape == (4, 5)
    assert m.dtype == np.float32
    assert m.has_sorted_indices
    expected = np.zeros((4, 5), dtype=np.float32)
    expected[0, 1] = 2.5
    expected[2, 0] = 4.0
    expected[2, 3] = 4.0
    np.testing.assert_array_equal(m.toarray(), expected)
    assert m.nnz == 3  # duplicates merged, not stored twice
    np.testing.assert_array_equal(m.indices[m.indptr[2] : m.indptr[3]], [0, 3])


def test_to_csr_uses_the_named_weight_column_and_drops_zero_weights():
    df = frame([(0, 0, 5.0), (1, 1, 0.0)]).with_columns(pl.lit(1.0, pl.Float32).alias("ones"))
    np.testing.assert_array_equal(to_csr(df, 2, 2, weight="ones").toarray(), np.eye(2, dtype=np.float32))
    m = to_csr(df, 2, 2)
    assert m.nnz == 1 and m[0, 0] == 5.0


def test_to_csr_of_no_rows_is_empty_with_the_vocab_shape():
    m = to_csr(frame([]), 3, 7)
    assert m.shape == (3, 7) and m.nnz == 0
    assert empty_csr(3, 7).shape == (3, 7)


@pytest.mark.parametrize(("rows", "column"), [([(5, 0, 1.0)], "user_idx"), ([(0, -1, 1.0)], "item_idx")])
def test_to_csr_rejects_indices_outside_the_vocab(rows, column):
    with pytest.raises(DataError, match=column):
        to_csr(frame(rows), 3, 3)


def test_to_csr_names_missing_columns():
    with pytest.raises(DataError, match="missing column"):
        to_csr(pl.DataFrame({"user_idx": [0]}), 1, 1)


def test_item_popularity_counts_users_not_weights():
    df = frame([(0, 0, 5.0), (1, 0, 1.0), (1, 2, 9.0), (2, 0, 1.0)])
    m = to_csr(df, 3, 4)
    np.testing.assert_array_equal(item_popularity(m), [3, 0, 1, 0])
    np.testing.assert_array_equal(user_activity(m), [1, 2, 1])
