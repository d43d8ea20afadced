"""EASE: the shared contract, Steck's closed form checked by hand, the catalogue refusal."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import load_config
from recsys.errors import DataError, SetupError
from recsys.models.base import build_model
from recsys.models.ease import EASE, EASEConfig

from .contract import RecommenderContract


class TestEASEContract(RecommenderContract):
    model_config = EASEConfig(name="e", l2=20.0)
    min_recall_at_10 = 0.45
    min_fold_in_overlap = 1.0  # fold-in of a training row is that row: identical recommendations
    seed_sensitive = False  # a closed form: no randomness at all


def test_weights_solve_the_constrained_least_squares_problem_by_hand():
    """B minimises |X - XB|^2 + l2 |B|^2 with diag(B) = 0: per column j, the ridge regression of
    X[:, j] on the other columns, which is what we solve here directly."""
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 6)) < 0.4).astype(np.float32)
    model = EASE(name="e", l2=3.0).fit(sp.csr_matrix(dense))
    weights = model.item_factors.T  # B: score = x_u @ B
    for j in range(6):
        others = [i for i in range(6) if i != j]
        a = dense[:, others].astype(np.float64)
        expected = np.linalg.solve(a.T @ a + 3.0 * np.eye(5), a.T @ dense[:, j])
        np.testing.assert_allclose(weights[others, j], expected, rtol=1e-5, atol=1e-6)
        assert weights[j, j] == 0.0
    np.testing.assert_array_equal(model.user_factors, dense)  # user vector = the history row


def test_weighting_transforms_the_rows_and_scores_follow_the_dot_product():
    counts = sp.csr_matrix(np.array([[0, 3, 1, 0], [2, 0, 0, 5], [1, 1, 0, 0]], dtype=np.float32))
    log_model = EASE(name="e", l2=1.0, weighting="log").fit(counts)
    np.testing.assert_allclose(log_model.user_factors, np.log1p(counts.toarray()), rtol=1e-6)
    raw = EASE(name="e", l2=1.0, weighting="raw").fit(counts)
    np.testing.assert_array_equal(raw.user_factors, counts.toarray())
    items, scores = raw.recommend([0], k=2)
    full = raw.user_factors[0] @ raw.item_factors.T
    np.testing.assert_allclose(scores[0], np.sort(full)[::-1][:2], rtol=1e-6)


def test_data_aware_l2_is_the_scale_times_the_mean_item_count_with_a_floor():
    train = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0]], dtype=np.float32))
    # items with interactions have counts 3 and 2: mean 2.5
    assert EASE(name="e", l2_scale=100.0).fit(train).config.l2 == pytest.approx(250.0)  # saved as used
    assert EASE(name="e", l2_scale=4.0).fit(train).config.l2 == pytest.approx(100.0)  # the floor
    assert EASE(name="e", l2=7.0).fit(train).config.l2 == 7.0


def test_a_catalogue_above_max_items_is_refused_before_any_allocation_naming_the_alternative():
    train = sp.random(5, 50, density=0.3, format="csr", dtype=np.float32, random_state=0)
    with pytest.raises(SetupError, match=r'max_items = 40.*kind = "wals"') as info:
        EASE(name="big", max_items=40).fit(train)
    assert "models.big.max_items" in str(info.value)


def test_dense_user_vectors_above_the_memory_bound_are_refused_before_fitting():
    """A catalogue under max_items with many users still needs n_users x n_items floats of user
    vectors: 2,000 x 50 (0.40 MB) plus the 0.04 MB fit is above a 0.3 MB bound, 20 users are not.
    A process killed for memory would take every model of the run with it; a refusal takes one."""
    big = sp.random(2000, 50, density=0.1, format="csr", dtype=np.float32, random_state=0)
    with pytest.raises(SetupError, match=r"2,000 users.*models\.e\.max_memory_gb = 0\.0003"):
        EASE(name="e", max_memory_gb=0.0003).fit(big)
    EASE(name="e", max_memory_gb=0.0003).fit(big[:20])


def test_negative_weights_are_refused():
    with pytest.raises(DataError, match="non-negative"):
        EASE(name="e", weighting="raw").fit(sp.csr_matrix(np.array([[1.0, -2.0]], dtype=np.float32)))


def test_ease_is_a_config_kind_like_every_model():
    cfg = load_config(None, ['models=[{name = "e", kind = "ease", l2 = 50.0}]'])
    model = build_model(cfg.model("e"))
    assert isinstance(model, EASE) and model.config.l2 == 50.0
