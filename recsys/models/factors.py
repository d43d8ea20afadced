"""A model made of precomputed vectors: factors exported by another system (a peer library, an
offline job) served and evaluated through the same protocol as every trained model.

It cannot be trained (`fit` raises); fold-in is the sum of the history's item vectors, the
simplest item-based estimate, which is exact for models whose user vector is that sum (e.g. a
linear item-item model) and a baseline for the rest.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from recsys.models.base import FitCallback, ModelConfig, Recommender, as_user_item_csr


class FactorModelConfig(ModelConfig):
    kind: Literal["factors"] = "factors"


class FactorModel(Recommender):
    """Fixed user and item vectors behind the Recommender protocol."""

    kind = "factors"
    Config = FactorModelConfig

    @classmethod
    def from_arrays(cls, user_factors: np.ndarray, item_factors: np.ndarray, name: str = "factors") -> FactorModel:
        users, items = np.asarray(user_factors, np.float32), np.asarray(item_factors, np.float32)
        if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
            raise ValueError(f"need (users, d) and (items, d) matrices, got {users.shape} and {items.shape}")
        model = cls(FactorModelConfig(name=name))
        model._load_factors({"user_factors": users, "item_factors": items})
        model.n_users, model.n_items = users.shape[0], items.shape[0]
        model.is_fitted = True
        return model

    def _fit(self, train: sp.csr_matrix, *, validation: Any, callback: FitCallback, features: Any) -> None:
        raise TypeError("a FactorModel holds precomputed vectors and cannot be trained; use from_arrays()")

    def _load_factors(self, tensors: dict[str, np.ndarray]) -> None:
        self._users = np.ascontiguousarray(tensors["user_factors"], dtype=np.float32)
        self._items = np.ascontiguousarray(tensors["item_factors"], dtype=np.float32)

    @property
    def user_factors(self) -> np.ndarray:
        return self._users

    @property
    def item_factors(self) -> np.ndarray:
        return self._items

    def fold_in(self, histories: sp.spmatrix) -> np.ndarray:
        return np.asarray(as_user_item_csr(histories, self.n_items) @ self._items, dtype=np.float32)
