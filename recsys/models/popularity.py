"""Popularity: the floor every model must beat.

Expressed as a rank-1 factorisation (every user vector is [1], every item vector is [popularity]) so
the same dot-product evaluator, pyfunc and folding diagnostic serve it unchanged: a user's scores are
the item popularities, and masking seen items gives "most popular items you have not seen yet".
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from recsys.data.split import EvalSet
from recsys.models.base import FitCallback, Recommender, as_user_item_csr
from recsys.models.popularity_config import PopularityConfig  # noqa: F401 - re-exported


def popularity_scores(train: sp.csr_matrix, by: Literal["count", "weight"] = "count") -> np.ndarray:
    """(n_items,) float32 popularity of each item in a users x items CSR (explicit zeros are not counted)."""
    csr = as_user_item_csr(train)
    if by == "count":
        counts = np.bincount(csr.indices, minlength=csr.shape[1])
        return counts.astype(np.float32)
    return np.asarray(csr.sum(axis=0), dtype=np.float64).ravel().astype(np.float32)


class Popularity(Recommender):
    """Recommends the most popular unseen items to everyone.

    Ties: items with equal popularity get exactly equal scores and the shared top-k orders equal
    scores by ascending item index, so the lists are deterministic. The scores stay the raw
    popularity so they mean something in logs and in the pyfunc.
    """

    kind = "popularity"
    single_solve = True  # counts, then one callback
    Config = PopularityConfig
    config: PopularityConfig

    def __init__(self, config: PopularityConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._item_scores: np.ndarray | None = None

    def _fit(
        self, train: sp.csr_matrix, *, validation: EvalSet | None, callback: FitCallback, features: Any
    ) -> None:
        self._item_scores = popularity_scores(train, self.config.by)
        callback(0, {"n_items_with_interactions": float(np.count_nonzero(self._item_scores))})

    @property
    def user_factors(self) -> np.ndarray:
        self._check_fitted()
        return np.ones((self.n_users, 1), dtype=np.float32)

    @property
    def item_factors(self) -> np.ndarray:
        self._check_fitted()
        assert self._item_scores is not None
        return self._item_scores[:, None]

    def fold_in(self, histories: sp.spmatrix) -> np.ndarray:
        """Every user, known or not, gets the same vector [1]: popularity ignores the history
        (except that the evaluator masks it)."""
        self._check_fitted()
        rows = as_user_item_csr(histories, self.n_items)
        return np.ones((rows.shape[0], 1), dtype=np.float32)

    def _load_factors(self, tensors: dict[str, np.ndarray]) -> None:
        items = np.asarray(tensors["item_factors"], dtype=np.float32)
        if items.shape != (self.n_items, 1):
            raise ValueError(f"popularity item_factors must be ({self.n_items}, 1), got {items.shape}")
        self._item_scores = items[:, 0].copy()
