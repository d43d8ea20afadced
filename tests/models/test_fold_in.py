"""Least-squares fold-in (`recsys.models.fold_in`) against hand-solved 2 x 2 normal equations.

x_u = (YᵀY + Yᵀ(C_u - I)Y + λ_u I)⁻¹ YᵀC_u p_u with Y = [[1, 0], [0, 1], [1, 1]], so every expected
vector below is a 2 x 2 solve done on paper (Cramer's rule), not a re-run of the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.models import fold_in
from recsys.models.fold_in import chunks, least_squares_users

ITEMS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
# One interaction (item 0, confidence 3), with λ = 0.5: [[4.5, 1], [1, 2.5]] x = [3, 0].
ONE = [7.5 / 10.25, -3.0 / 10.25]
# Items 0 (confidence 3) and 2 (confidence 2): lhs [[5, 2], [2, 3]] + λ I, rhs [5, 2].
TWO_CONSTANT = [13.5 / 15.25, 1.0 / 15.25]  # λ = 0.5
TWO_BY_COUNT = [0.8, 0.1]  # λ = 0.5 x 2 interactions = 1.0 (ALS-WR, Spark)


def confidences() -> sp.csr_matrix:
    """Users: one interaction, none, two interactions, none (an empty row first, inside and last)."""
    rows = np.array([[3, 0, 0], [0, 0, 0], [3, 0, 2], [0, 0, 0]], dtype=np.float32)
    return sp.csr_matrix(rows)


def test_each_user_solves_its_own_weighted_normal_equations_and_empty_users_get_zero() -> None:
    got = least_squares_users(confidences(), ITEMS, 0.5)
    assert got.dtype == np.float32 and got.shape == (4, 2)
    np.testing.assert_allclose(got, [ONE, [0, 0], TWO_CONSTANT, [0, 0]], rtol=1e-6, atol=1e-7)


def test_scale_by_count_multiplies_the_penalty_by_the_users_interactions() -> None:
    got = least_squares_users(confidences(), ITEMS, 0.5, scale_by_count=True)
    # one interaction: λ_u = 0.5 x 1, the constant-penalty answer; two: λ_u = 1.0
    np.testing.assert_allclose(got, [ONE, [0, 0], TWO_BY_COUNT, [0, 0]], rtol=1e-6, atol=1e-7)


def test_a_single_interaction_is_solved_not_taken_for_an_empty_matrix() -> None:
    single = sp.csr_matrix(np.array([[0, 0, 0], [3, 0, 0]], dtype=np.float32))
    np.testing.assert_allclose(least_squares_users(single, ITEMS, 0.5), [[0, 0], ONE], rtol=1e-6)


def test_rows_split_over_several_chunks_give_the_same_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 x 2 float64 outer products are 32 bytes: 64 bytes hold 2 interactions, so the 9 users
    # below are solved in several chunks, with empty rows at chunk edges
    monkeypatch.setattr(fold_in, "FOLD_IN_CHUNK_BYTES", 64)
    rows = sp.csr_matrix(np.tile(confidences().toarray(), (3, 1))[:9])
    assert len(chunks(rows.indptr, 2)) > 2
    got = least_squares_users(rows, ITEMS, 0.5)
    want = np.array([ONE, [0, 0], TWO_CONSTANT, [0, 0]] * 3)[:9]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_chunks_cover_every_row_once_and_bound_the_interactions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fold_in, "FOLD_IN_CHUNK_BYTES", 3 * 8 * 2 * 2)  # 3 interactions of rank 2
    indptr = np.array([0, 1, 1, 5, 6, 7, 8, 8])  # row 2 alone holds 4 > 3 interactions
    got = chunks(indptr, 2)
    assert got == [(0, 2), (2, 3), (3, 6), (6, 7)]
    # each range is contiguous and a range over the bound is one (long) row
    assert all((indptr[b] - indptr[a]) <= 3 or b - a == 1 for a, b in got)
    # a bound below one outer product still makes progress: one row per range
    monkeypatch.setattr(fold_in, "FOLD_IN_CHUNK_BYTES", 8)
    assert chunks(indptr, 2) == [(i, i + 1) for i in range(7)]


def test_an_empty_user_gets_zero_even_where_the_gram_matrix_is_singular() -> None:
    """A latent dimension no item uses makes YᵀY singular; a user with history is still solvable
    (λ > 0), and an empty user must get x = 0 from a regular system, not a singular one."""
    items = np.array([[1.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    rows = sp.csr_matrix(np.array([[2, 0], [0, 0]], dtype=np.float32))
    # user 0: [[5, 0], [0, 0]] + 1 x [[1, 0], [0, 0]] + 1.0 I = [[7, 0], [0, 1]], rhs [2, 0]
    got = least_squares_users(rows, items, 1.0)
    np.testing.assert_allclose(got, [[2 / 7, 0], [0, 0]], rtol=1e-6, atol=1e-7)


def test_near_collinear_item_vectors_are_solved_in_double_precision() -> None:
    """Two latent dimensions that nearly coincide (a collapsed embedding) leave YᵀY with a smallest
    eigenvalue near λ: a Gram matrix summed in float32 (relative error ~1e-7 on entries of ~200)
    then moves the solution by ~20%. Reference: each user's system solved in float64 here."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal(200)
    items = np.stack([base, base + 1e-3 * rng.standard_normal(200)], axis=1).astype(np.float32)
    conf = sp.csr_matrix(np.where(rng.random((5, 200)) < 0.05, 5.0, 0.0).astype(np.float32))
    y = items.astype(np.float64)
    want = []
    for row in conf.toarray().astype(np.float64):
        c = np.where(row > 0, row, 1.0)
        want.append(np.linalg.solve(y.T @ (c[:, None] * y) + 1e-4 * np.eye(2), y.T @ (c * (row > 0))))
    np.testing.assert_allclose(least_squares_users(conf, items, 1e-4), want, rtol=1e-3, atol=1e-4)
