"""The behavioural contract every Recommender must honour, as a pytest mixin.

Usage (in a test module under tests/models/, where the `planted` fixture lives):

    class TestWALS(RecommenderContract):
        model_config = WALSConfig(name="w", factors=16, iterations=10)
        min_recall_at_10 = 0.45

Override `make_model(**overrides)` when a model needs more than its config to be built, and
`fit_model(model, train)` when it needs more than the matrix to be fitted (e.g. features). The
class attributes below switch off or tune the checks that do not apply to every model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.models.base import ModelConfig, Recommender, build_model, model_kinds

K = 10


class RecommenderContract:
    model_config: ClassVar[ModelConfig]
    min_recall_at_10: ClassVar[float] = 0.4
    """recall@10 (hits / min(10, |test|)) on the planted clusters must exceed this; random is ~0.09."""
    min_fold_in_overlap: ClassVar[float | None] = 0.7
    """Mean share of a training user's trained top-10 that fold-in of their own row reproduces
    (None: the model has no meaningful fold-in of training users)."""
    seed_sensitive: ClassVar[bool] = True
    """False for deterministic models whose factors do not depend on the seed (popularity)."""

    # ------------------------------------------------------------------ hooks
    def make_model(self, **overrides: Any) -> Recommender:
        config = self.model_config.model_copy(update=overrides) if overrides else self.model_config
        return build_model(config)

    def fit_model(self, model: Recommender, train: sp.csr_matrix, **fit_kwargs: Any) -> Recommender:
        return model.fit(train, **fit_kwargs)

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture(scope="class")
    def fitted(self, planted) -> tuple[Recommender, Recommender]:
        """(the model, what fit returned), fitted once per test class."""
        model = self.make_model()
        returned = self.fit_model(model, planted.train)
        return model, returned

    @pytest.fixture(scope="class")
    def model(self, fitted) -> Recommender:
        return fitted[0]

    # ------------------------------------------------------------------ fit bookkeeping
    def test_fit_returns_self_and_records_shapes_time_and_history(self, fitted, planted):
        model, returned = fitted
        assert returned is model
        assert model.is_fitted
        assert (model.n_users, model.n_items) == planted.train.shape
        assert math.isfinite(model.fit_seconds) and model.fit_seconds > 0
        assert model.history, "fit must call the callback at least once"
        assert all("step" in entry for entry in model.history)

    def test_callback_sees_every_recorded_step_and_true_stops_training(self, planted):
        seen: list[tuple[int, dict]] = []
        model = self.fit_model(
            self.make_model(), planted.train, callback=lambda step, m: seen.append((step, m))
        )
        assert [step for step, _ in seen] == [int(entry["step"]) for entry in model.history]
        assert all(isinstance(v, float) for _, metrics in seen for v in metrics.values())
        stopped = self.fit_model(self.make_model(), planted.train, callback=lambda step, m: True)
        assert len(stopped.history) == 1 and stopped.is_fitted

    def test_factors_have_the_right_shapes_dtype_and_are_finite(self, model, planted):
        users, items = model.user_factors, model.item_factors
        assert users.dtype == np.float32 and items.dtype == np.float32
        assert users.shape[0] == planted.n_users and items.shape[0] == planted.n_items
        assert users.ndim == items.ndim == 2 and users.shape[1] == items.shape[1]
        assert np.isfinite(users).all() and np.isfinite(items).all()

    # ------------------------------------------------------------------ retrieval
    def test_recommend_returns_the_true_top_k_best_first_without_excluded_items(self, model, planted):
        users = np.arange(0, planted.n_users, 7)
        items, scores = model.recommend(users, k=K, exclude=planted.train)
        assert items.shape == scores.shape == (users.size, K)
        assert items.dtype == np.int64 and scores.dtype == np.float32
        assert (np.diff(scores, axis=1) <= 0).all(), "scores must be non-increasing"
        seen = planted.train[users].toarray() > 0
        assert not np.take_along_axis(seen, items, axis=1).any(), "an excluded item was recommended"
        full = model.user_factors[users] @ model.item_factors.T
        np.testing.assert_allclose(scores, np.take_along_axis(full, items, axis=1), rtol=1e-4, atol=1e-5)
        best_left_out = np.where(seen, -np.inf, full)
        np.put_along_axis(best_left_out, items, -np.inf, axis=1)
        assert (scores[:, -1] >= best_left_out.max(axis=1) - 1e-5).all(), "a better unseen item was skipped"

    def test_recommend_with_k_beyond_the_catalogue_pads_after_the_unseen_items(self, model, planted):
        users = np.array([0, 1, 2])
        items, scores = model.recommend(users, k=planted.n_items + 5, exclude=planted.train)
        assert items.shape == (3, planted.n_items)
        for row, user in enumerate(users):
            unseen = set(range(planted.n_items)) - set(planted.train[user].indices)
            real = items[row] >= 0
            assert set(items[row, real]) == unseen
            assert real.sum() == len(unseen) and real[: len(unseen)].all()
            assert (items[row, ~real] == -1).all() and np.isneginf(scores[row, ~real]).all()

    def test_recommend_refuses_a_mask_over_a_different_item_count(self, model, planted):
        wrong = sp.csr_matrix((planted.n_users, planted.n_items + 1), dtype=np.float32)
        with pytest.raises(ValueError, match="items"):
            model.recommend([0, 1], k=K, exclude=wrong)

    def test_recall_on_planted_clusters_clearly_beats_random(self, model, planted):
        users = np.flatnonzero(np.diff(planted.test.indptr) > 0)
        items, _ = model.recommend(users, k=K, exclude=planted.train)
        recall = planted_recall(items, planted.test, users)
        unseen = planted.n_items - np.diff(planted.train.indptr)[users]
        random_recall = float(
            np.mean(K / unseen)
        )  # expected hits of a random list, over min(K, |test|) <= |test|
        assert recall > self.min_recall_at_10, f"recall@10 {recall:.3f} (random ~{random_recall:.3f})"
        assert recall > 1.5 * random_recall

    # ------------------------------------------------------------------ fold-in
    def test_fold_in_of_training_rows_reproduces_the_trained_recommendations(self, model, planted):
        users = np.arange(0, planted.n_users, 3)
        vectors = model.fold_in(planted.train[users])
        assert vectors.dtype == np.float32 and vectors.shape == (users.size, model.item_factors.shape[1])
        if self.min_fold_in_overlap is None:
            pytest.skip("fold-in of training users is not comparable for this model")
        from recsys.evaluation.ranking import topk

        mask = planted.train[users]
        trained, _ = model.recommend(users, k=K, exclude=planted.train)
        folded, _ = topk(vectors, model.item_factors, K, exclude=mask)
        overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(trained, folded, strict=True)])
        assert overlap >= self.min_fold_in_overlap, f"fold-in overlap@10 {overlap:.2f}"

    def test_fold_in_refuses_histories_over_a_different_item_count(self, model, planted):
        with pytest.raises(ValueError, match="items"):
            model.fold_in(sp.csr_matrix((2, planted.n_items - 1), dtype=np.float32))

    # ------------------------------------------------------------------ persistence
    def test_save_load_round_trip_without_pickle(self, model, planted, tmp_path: Path):
        target = model.save(tmp_path / "model")
        suffixes = {p.suffix for p in target.rglob("*") if p.is_file()}
        assert suffixes <= {".json", ".safetensors", ".npy"}, f"unexpected files: {suffixes}"
        loaded = Recommender.load(target)
        assert type(loaded) is type(model) and loaded.config == model.config
        assert (loaded.n_users, loaded.n_items) == (model.n_users, model.n_items)
        np.testing.assert_array_equal(loaded.user_factors, model.user_factors)
        np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
        users = np.arange(planted.n_users)
        for got, want in zip(
            loaded.recommend(users, k=K, exclude=planted.train),
            model.recommend(users, k=K, exclude=planted.train),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)
        rows = planted.train[:5]
        np.testing.assert_allclose(loaded.fold_in(rows), model.fold_in(rows), rtol=1e-5, atol=1e-6)
        assert type(model).load(target).config == model.config
        for other in model_kinds().values():
            if other is not type(model):
                with pytest.raises(TypeError):
                    other.load(target)

    # ------------------------------------------------------------------ determinism
    def test_same_seed_gives_identical_factors_and_another_seed_different_ones(self, model, planted):
        again = self.fit_model(self.make_model(), planted.train)
        np.testing.assert_array_equal(again.user_factors, model.user_factors)
        np.testing.assert_array_equal(again.item_factors, model.item_factors)
        other = self.fit_model(self.make_model(seed=model.config.seed + 1), planted.train)
        same = np.array_equal(other.item_factors, model.item_factors)
        assert same != self.seed_sensitive

    # ------------------------------------------------------------------ refusals
    def test_fit_on_an_empty_matrix_raises_value_error(self, planted):
        with pytest.raises(ValueError, match="no interactions"):
            self.make_model().fit(sp.csr_matrix(planted.train.shape, dtype=np.float32))

    def test_using_an_unfitted_model_raises(self):
        model = self.make_model()
        with pytest.raises(RuntimeError, match="not fitted"):
            model.recommend([0], k=K)
        with pytest.raises(RuntimeError, match="not fitted"):
            model.fold_in(sp.csr_matrix((1, 3), dtype=np.float32))


def planted_recall(items: np.ndarray, truth: sp.csr_matrix, users: np.ndarray) -> float:
    """Mean over `users` of hits@k / min(k, |test|), computed by hand (independent of recsys.evaluation)."""
    relevant = truth[users].toarray() > 0
    hits = np.take_along_axis(relevant, np.maximum(items, 0), axis=1) & (items >= 0)
    return float(np.mean(hits.sum(axis=1) / np.minimum(items.shape[1], relevant.sum(axis=1))))
