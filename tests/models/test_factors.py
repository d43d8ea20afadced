"""FactorModel: precomputed vectors served and persisted through the one protocol."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.models.base import Recommender
from recsys.models.factors import FactorModel


def test_precomputed_vectors_recommend_save_and_load(tmp_path):
    users = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    items = np.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    model = FactorModel.from_arrays(users, items, name="exported")
    seen = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0]], dtype=np.float32))
    ranked, scores = model.recommend([0, 1], k=2, exclude=seen)
    assert ranked.tolist() == [[1, 2], [2, 0]]  # user 0's best item (0) is excluded
    np.testing.assert_allclose(scores, [[2.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(model.fold_in(seen), [[3.0, 0.0], [0.0, 0.0]])

    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert isinstance(loaded, FactorModel) and loaded.config.name == "exported"
    np.testing.assert_array_equal(loaded.recommend([0, 1], k=2, exclude=seen)[0], ranked)


def test_factor_model_refuses_training_and_mismatched_shapes():
    model = FactorModel.from_arrays(np.ones((2, 3)), np.ones((4, 3)))
    with pytest.raises(TypeError, match="cannot be trained"):
        model.fit(sp.csr_matrix(np.ones((2, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match="matrices"):
        FactorModel.from_arrays(np.ones((2, 3)), np.ones((4, 2)))


def test_a_subclass_that_inherits_its_kind_does_not_take_over_loading_that_kind(tmp_path, monkeypatch):
    """A subclass that does not name its own kind (a test double, a user's tweak) stays out of the
    registry: registered under its parent's kind it replaced the parent process-wide, and a saved
    factors model then loaded as the subclass (an order-reading test double broke a serving test
    that ran after it on the same worker)."""
    from recsys.models import base
    from recsys.models.base import model_kinds

    model_kinds()  # the built-in kinds registered, then this test's classes go to a copy
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))

    class Tweaked(FactorModel):
        def recommend(self, *args, **kwargs):  # pragma: no cover - never reached
            raise AssertionError("the subclass was loaded")

    class Named(FactorModel):
        kind = "test_named_factors"

    FactorModel.from_arrays(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32)).save(tmp_path / "m")
    assert type(Recommender.load(tmp_path / "m")) is FactorModel
    assert model_kinds()["factors"] is FactorModel and model_kinds()["test_named_factors"] is Named
