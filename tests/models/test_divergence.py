"""A fit that diverged for some users or items: any NaN / infinite vector is refused (naming how
many), a share of trained vectors collapsed to zero is a warning (naming how many), every trained
vector zero is refused. Planted vectors behind the real `fit` and its check."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.errors import ModelError, RecsysWarning
from recsys.models.ease import EASE, EASEConfig
from recsys.models.factors import FactorModel, FactorModelConfig

# 6 users x 5 items; user 5 has no training interaction (its vector keeps its start: not counted)
TRAIN = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0],
                                [1, 0, 0, 1, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))  # fmt: skip


class Planted(FactorModel):
    """Two epochs, then the planted vectors: what a training loop that diverged leaves behind."""

    kind = ""  # not registered: `factors` stays FactorModel

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        super().__init__(FactorModelConfig(name="planted"))
        self.planted = {"user_factors": users.astype(np.float32), "item_factors": items.astype(np.float32)}

    def _fit(self, train, *, validation, callback, features) -> None:
        for epoch in (1, 2):
            callback(epoch, {"loss": 1.0})
        self._load_factors(self.planted)


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3)) + 0.5


def test_partly_diverged_vectors_are_refused_or_warned_about_naming_how_many():
    users, items = vectors(6, 0), vectors(5, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy model: not a word
        assert Planted(users, items).fit(TRAIN).is_fitted

    nan_users = users.copy()
    nan_users[[1, 3]] = np.nan
    nan_users[4, 0] = np.inf
    with pytest.raises(ModelError, match=r"training diverged after 2 epoch\(s\): 3 of 6 user vectors hold NaN or infinite"):
        Planted(nan_users, items).fit(TRAIN)

    zero_users = users.copy()
    zero_users[[0, 2, 5]] = 0.0  # user 5 has no training data: its zero vector is no divergence
    with pytest.warns(RecsysWarning, match=r"'planted': 2 of 5 trained user vectors are zero after 2 epoch\(s\).*\(lr\)"):
        model = Planted(zero_users, items).fit(TRAIN)
    assert model.is_fitted  # the other users are still served

    with pytest.raises(ModelError, match=r"every trained item vector is zero, so every score ties"):
        Planted(users, np.zeros_like(items)).fit(TRAIN)
    zero_items = items.copy()
    zero_items[0] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused: no warning about the items before the error
        with pytest.raises(ModelError, match=r"every trained user vector is zero"):
            Planted(np.zeros_like(users), zero_items).fit(TRAIN)


def test_ease_item_columns_that_are_zero_by_construction_are_no_divergence():
    """Item 4's only user has no other item: B's column 4 is zero by construction, not a failure."""
    train = sp.csr_matrix(np.vstack([TRAIN.toarray()[:5], [0, 0, 0, 0, 1]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = EASE(EASEConfig(name="ease", l2=1.0)).fit(train)
    assert not model.item_factors[4].any() and model.item_factors[:4].any(axis=1).all()
