"""WALS: the shared contract, plus the things only WALS can get wrong.

Confidence and orientation are checked against the closed-form least-squares solution of Hu et al.
(x_u = (YᵀC_uY + λI)⁻¹ YᵀC_u p_u), which pins down both what implicit receives and how it reads it.
"""

from __future__ import annotations

import warnings

import implicit.cpu.als
import implicit.gpu
import implicit.utils
import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data.split import EvalSet
from recsys.errors import DataError, ModelError
from recsys.evaluation.ranking import topk
from recsys.models.base import Recommender
from recsys.models.wals import WALS, WALSConfig, confidence

from .conftest import Planted
from .contract import RecommenderContract, planted_recall

FAST = WALSConfig(
    name="w", factors=16, iterations=10, seed=3, threads=1
)  # tiny data: threads only add sync cost


class TestWALSContract(RecommenderContract):
    model_config = FAST
    min_recall_at_10 = 0.45  # measured ~0.65; popularity ~0.22, random ~0.09
    min_fold_in_overlap = 0.7  # exact re-solve vs CG factors of the same row


# ----------------------------------------------------------------------------- confidence
def weights() -> sp.csr_matrix:
    return sp.csr_matrix(np.array([[0, 2, 0, 0.5], [3, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))


def test_linear_confidence_is_one_plus_alpha_times_weight():
    c = confidence(weights(), WALSConfig(name="w", alpha=4.0))
    np.testing.assert_allclose(c.toarray(), [[0, 9, 0, 3], [13, 0, 0, 0], [0, 0, 0, 0]])
    assert c.dtype == np.float32 and c.nnz == 3  # unobserved cells stay unstored (implicit: c = 1, p = 0)


def test_log_confidence_is_one_plus_alpha_log_one_plus_weight_over_eps():
    c = confidence(weights(), WALSConfig(name="w", alpha=4.0, confidence="log", eps=0.5))
    expected = 1 + 4.0 * np.log(1 + np.array([2, 0.5, 3]) / 0.5)
    np.testing.assert_allclose(c.data, expected, rtol=1e-6)


def test_binarize_gives_every_interaction_the_same_confidence():
    c = confidence(weights(), WALSConfig(name="w", alpha=4.0, binarize=True))
    np.testing.assert_allclose(c.data, [5, 5, 5])


def test_confidence_leaves_the_input_untouched_and_refuses_negative_weights():
    w = weights()
    before = w.data.copy()
    confidence(w, WALSConfig(name="w"))
    np.testing.assert_array_equal(w.data, before)
    with pytest.raises(DataError, match="negative"):
        confidence(sp.csr_matrix(np.array([[1.0, -2.0]], dtype=np.float32)), WALSConfig(name="w"))


def test_implicit_receives_the_users_by_items_confidence_matrix_with_alpha_one(planted: Planted, monkeypatch):
    received = {}
    original = implicit.cpu.als.AlternatingLeastSquares.fit

    def spy(self, user_items, *args, **kwargs):
        received.update(
            matrix=user_items.copy(), alpha=self.alpha, threads=self.num_threads, use_cg=self.use_cg
        )
        return original(self, user_items, *args, **kwargs)

    monkeypatch.setattr(implicit.cpu.als.AlternatingLeastSquares, "fit", spy)
    cfg = FAST.model_copy(update={"alpha": 7.0, "threads": 1, "solver": "cholesky", "device": "cpu"})
    WALS(cfg).fit(planted.train)
    assert received["matrix"].shape == (planted.n_users, planted.n_items)
    np.testing.assert_allclose(received["matrix"].toarray(), confidence(planted.train, cfg).toarray())
    assert received["alpha"] == 1.0 and received["threads"] == 1 and received["use_cg"] is False


def hu_koren_solution(item_factors: np.ndarray, row: np.ndarray, cfg: WALSConfig) -> np.ndarray:
    """x = (YᵀCY + λI)⁻¹ YᵀCp with c = 1 + alpha*w on observed cells, 1 elsewhere; p = [w > 0]."""
    y = item_factors.astype(np.float64)
    c = np.where(row > 0, 1 + cfg.alpha * row, 1.0)
    p = (row > 0).astype(np.float64)
    a = y.T @ (c[:, None] * y) + cfg.regularization * np.eye(y.shape[1])
    return np.linalg.solve(a, y.T @ (c * p))


def test_cholesky_user_factors_and_fold_in_solve_the_hu_koren_normal_equations(planted: Planted):
    cfg = WALSConfig(
        name="w",
        factors=8,
        iterations=3,
        alpha=5.0,
        regularization=0.3,
        solver="cholesky",
        device="cpu",
        threads=1,
    )
    model = WALS(cfg).fit(planted.train)
    rows = planted.train[:4].toarray()
    expected = np.stack([hu_koren_solution(model.item_factors, r, cfg) for r in rows])
    # after the last iteration's item step the user factors are one step stale, so compare fold-in
    # (exact, same item factors) with the formula, and the trained users with a looser bound
    np.testing.assert_allclose(model.fold_in(planted.train[:4]), expected, rtol=1e-3, atol=1e-4)
    assert np.corrcoef(model.user_factors[:4].ravel(), expected.ravel())[0, 1] > 0.9


# ----------------------------------------------------------------------------- orientation
def test_orientation_users_are_rows_and_recommendations_stay_in_the_users_cluster(planted: Planted):
    model = WALS(FAST).fit(planted.train)
    assert model.user_factors.shape == (planted.n_users, FAST.factors)
    assert model.item_factors.shape == (planted.n_items, FAST.factors)
    items, _ = model.recommend(np.arange(planted.n_users), k=5, exclude=planted.train)
    same_cluster = planted.item_cluster[items] == planted.user_cluster[:, None]
    assert same_cluster.mean() > 0.95  # a transposed fit would put item clusters on user rows: ~0.25


# ----------------------------------------------------------------------------- solvers
@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_both_solvers_fit_the_planted_clusters(planted: Planted, solver: str):
    model = WALS(FAST.model_copy(update={"solver": solver})).fit(planted.train)
    users = np.flatnonzero(np.diff(planted.test.indptr) > 0)
    items, _ = model.recommend(users, k=10, exclude=planted.train)
    assert planted_recall(items, planted.test, users) > 0.45
    assert model.history[-1]["loss"] < model.history[0]["loss"]


def test_blas_is_kept_single_threaded_so_implicit_does_not_warn(planted: Planted, monkeypatch):
    monkeypatch.setattr(implicit.utils, "_checked_blas_config", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        WALS(FAST).fit(planted.train)


@pytest.mark.skipif(bool(implicit.gpu.HAS_CUDA), reason="CUDA backend present")
def test_cuda_without_a_cuda_build_is_a_clear_model_error(planted: Planted):
    with pytest.raises(ModelError, match="cuda"):
        WALS(FAST.model_copy(update={"device": "cuda"})).fit(planted.train)


def test_validation_metric_must_name_a_cutoff():
    with pytest.raises(ValueError, match="recall@20"):
        WALSConfig(name="w", validation_metric="recall")


# ----------------------------------------------------------------------------- early stopping
def validation_set(planted: Planted) -> EvalSet:
    return EvalSet(truth=planted.test, exclude=planted.train)


def test_early_stopping_stops_after_patience_and_restores_the_best_factors(planted: Planted, monkeypatch):
    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.9])  # best at step 2; steps 3 and 4 do not improve
    monkeypatch.setattr(WALS, "_validation_score", lambda self, validation, popularity: next(scripted))
    cfg = FAST.model_copy(update={"iterations": 20, "eval_every": 1, "early_stopping_patience": 2})
    model = WALS(cfg).fit(planted.train, validation=validation_set(planted))
    assert [entry["step"] for entry in model.history] == [1, 2, 3, 4]
    assert [entry["val_recall@20"] for entry in model.history] == [0.1, 0.3, 0.2, 0.25]
    assert model.best_step == 2
    two_iterations = WALS(FAST.model_copy(update={"iterations": 2})).fit(planted.train)
    np.testing.assert_array_equal(model.item_factors, two_iterations.item_factors)
    np.testing.assert_array_equal(model.user_factors, two_iterations.user_factors)
    # implicit's cached YᵀY must follow the restored factors, or fold-in would use stale ones
    np.testing.assert_allclose(
        model.fold_in(planted.train[:3]), two_iterations.fold_in(planted.train[:3]), rtol=1e-5, atol=1e-6
    )


def test_validation_recall_is_measured_with_the_shared_evaluator_every_n_iterations(planted: Planted):
    cfg = FAST.model_copy(update={"iterations": 6, "eval_every": 2, "early_stopping_patience": 5})
    model = WALS(cfg).fit(planted.train, validation=validation_set(planted))
    evaluated = [e for e in model.history if "val_recall@20" in e]
    assert [e["step"] for e in evaluated] == [2, 4, 6]
    assert all(0.3 < e["val_recall@20"] <= 1 for e in evaluated)
    # the last evaluation, recomputed by hand from the final (= best, if it is the best) factors
    users = np.flatnonzero(np.diff(planted.test.indptr) > 0)
    items, _ = model.recommend(users, k=20, exclude=planted.train)
    best = max(e["val_recall@20"] for e in evaluated)
    assert planted_recall(items, planted.test, users) == pytest.approx(best, abs=1e-9)


def test_without_validation_eval_every_is_ignored(planted: Planted):
    model = WALS(FAST.model_copy(update={"eval_every": 1, "early_stopping_patience": 1})).fit(planted.train)
    assert len(model.history) == FAST.iterations and model.best_step is None


# ----------------------------------------------------------------------------- strong generalisation
def test_fold_in_serves_users_unseen_at_training_time(planted: Planted):
    heldout = np.arange(planted.n_users) >= 160
    keep = sp.diags((~heldout).astype(np.float32))
    train = (keep @ planted.train).tocsr()  # held-out users have empty training rows
    model = WALS(FAST).fit(train)
    users = np.flatnonzero(heldout)
    history, truth = planted.train[users], planted.test[users]
    vectors = model.fold_in(history)
    items, _ = topk(vectors, model.item_factors, 10, exclude=history)
    recall = planted_recall(items, truth, np.arange(users.size))
    assert recall > 0.45
    same_cluster = planted.item_cluster[items] == planted.user_cluster[users][:, None]
    assert same_cluster.mean() > 0.95
    # the model itself did not change
    np.testing.assert_array_equal(model.fold_in(history), vectors)


def test_fold_in_works_after_loading_from_disk(planted: Planted, tmp_path):
    model = WALS(FAST).fit(planted.train)
    loaded = Recommender.load(model.save(tmp_path / "wals"))
    assert isinstance(loaded, WALS)
    np.testing.assert_allclose(
        loaded.fold_in(planted.test[:10]), model.fold_in(planted.test[:10]), rtol=1e-5, atol=1e-6
    )
    assert loaded.fold_in(planted.test[:0]).shape == (0, FAST.factors)


def test_least_squares_fold_in_on_wals_item_factors_is_wals_own_fold_in(planted: Planted):
    """`recsys.models.fold_in` (used by the two-tower's least_squares fold-in) solves the same
    problem as implicit's recalculate_user: on WALS's own item factors the two must agree."""
    from recsys.models.fold_in import least_squares_users

    cfg = WALSConfig(name="w", factors=8, iterations=5, alpha=3.0, regularization=0.5, seed=0)
    model = WALS(cfg).fit(planted.train)
    rows = planted.test[:50].tocsr()
    ours = least_squares_users(confidence(rows, cfg), model.item_factors, regularization=0.5)
    assert np.allclose(ours, model.fold_in(rows), atol=1e-3)
