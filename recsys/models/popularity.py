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


def break_ties(scores: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """`scores` (float32, >= 0) with the items of each run of equal positive scores set apart by
    the fewest float32 steps up (ulps), in order of their raw ids' text: the first id scores
    highest, as the lowest index did. Zero (no training interaction) stays exactly 0.

    Why: the shared top-k orders equal scores by item index, and an item's index is the order
    in which ingest first met its id: the same log as one CSV and as a directory of yearly files
    gives other indices, so the popularity floor's lists, and its recall (0.1828 against 0.1831 on
    an ml-latest-small-like log), moved with the file layout under the same fingerprint and split.
    The raw id is what every layout shares; its text (not a hash of it: that is a Python loop per
    item, this one sort) orders it. A step is the smallest change float32 can make: the scores
    still read as the popularity (where 100 items tie at a count of 100, the first scores 100.00076), and
    never reach the next distinct score; a run longer than the steps up to it (more than 2**23 / s
    items tied at score s) keeps its last items tied, ordered by index as before."""
    import polars as pl

    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.size < 2 or len(item_ids) != scores.size:
        return scores
    item_ids = np.asarray(item_ids)
    # A numeric array converts as it is; object arrays (text, or ids of mixed types) go through a list.
    ids = pl.Series(item_ids.tolist() if item_ids.dtype == object else item_ids, strict=False).cast(pl.String)
    # Within a run of equal scores, the last id in text order gets 0 steps, the first the most.
    # The text is ranked once and the order is one numpy lexsort of two numeric keys: a polars
    # sort on (score, text) row-encoded every string (~1.7 s at 1M items against ~0.5 s).
    text_rank = ids.rank("dense").fill_null(0).to_numpy().astype(np.int64)
    items = np.lexsort((-text_rank, scores))
    value = scores[items]
    position = np.arange(value.size, dtype=np.int64)
    starts = np.ones(value.size, dtype=bool)
    starts[1:] = value[1:] != value[:-1]
    steps = position - np.maximum.accumulate(np.where(starts, position, 0))
    bits = value.view(np.int32).astype(np.int64)
    # The next distinct score above each run bounds its steps (none above the highest).
    distinct = np.unique(value)
    above = np.searchsorted(distinct, value, side="right")
    limit = np.full(value.shape, np.iinfo(np.int32).max, dtype=np.int64)
    has_next = above < distinct.size
    limit[has_next] = distinct[above[has_next]].view(np.int32).astype(np.int64) - 1
    moved = np.minimum(bits + steps, limit)
    moved[value <= 0] = bits[value <= 0]  # no interaction: no evidence to rank by
    out = scores.copy()
    out[items] = moved.astype(np.int32).view(np.float32)
    return out


class Popularity(Recommender):
    """Recommends the most popular unseen items to everyone.

    Ties: with the items' raw ids (`fit(item_ids=...)`, as every pipeline path passes them) items
    of equal popularity are ordered by their ids' text (`break_ties`), so the lists do not depend on
    the order the log was read in; without them equal scores stay equal and the shared top-k
    orders them by ascending item index. The item vectors rank (the popularity, ties a few float32
    steps apart); the popularity itself is kept beside them (`exact_item_scores`, saved as
    `item_scores`) and is what `recommend`, the pyfunc and `recsys serve` report: a count of 42 reads
    42, not 42.0000076.
    """

    kind = "popularity"
    single_solve = True  # counts, then one callback
    Config = PopularityConfig
    config: PopularityConfig

    def __init__(self, config: PopularityConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._item_scores: np.ndarray | None = None  # ranked: the popularity, ties nudged apart
        self._exact_scores: np.ndarray | None = None  # reported: the popularity itself

    def _fit(
        self, train: sp.csr_matrix, *, validation: EvalSet | None, callback: FitCallback, features: Any
    ) -> None:
        self._exact_scores = popularity_scores(train, self.config.by)
        self._item_scores = self._exact_scores
        if self.train_item_ids is not None:
            self._item_scores = break_ties(self._exact_scores, self.train_item_ids)
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

    @property
    def exact_item_scores(self) -> np.ndarray:
        """Each item's popularity without the tie-break's float32 steps (see the class docstring)."""
        self._check_fitted()
        assert self._exact_scores is not None
        return self._exact_scores

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
        # Saved before the popularity was kept apart from the ranked scores: report those.
        exact = tensors.get("item_scores")
        if exact is not None and np.shape(exact) != (self.n_items,):
            raise ValueError(f"popularity item_scores must be ({self.n_items},), got {np.shape(exact)}")
        self._exact_scores = self._item_scores if exact is None else np.asarray(exact, dtype=np.float32).copy()

    def _factor_tensors(self) -> dict[str, np.ndarray]:
        return {**super()._factor_tensors(), "item_scores": np.ascontiguousarray(self.exact_item_scores)}
