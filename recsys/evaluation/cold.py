"""Cold test users and cold items: kept out of the model metrics, counted, and reported as their own
group scored by the documented fallback.

A user with no training history has no learned vector: WALS scores such a user with a zero vector
(every score 0, so the "top-k" is items 0..k-1) and an id two-tower with an untrained random one.
Averaging those users into recall@k measures the vocabulary order, not the model - on ML-100K under a
temporal split they were 64% of the evaluated users. Likewise an item with no training interaction
has a zero or untrained vector and can only be ranked by accident.

So an evaluation target is divided here:

* warm users: a training row (or, for fold-in protocols, a fold-in history); the model metrics are
  theirs alone. Cold items are masked out of every ranking and their test interactions left out of
  the truth (counted in `cold_item_interactions`).
* cold users: what serving does for them is the fallback - the model's `fold_in` of the history the
  user does have (e.g. validation-window interactions of a rolling split), or, with no history at
  all, the most popular training items. They are scored that way, as their own group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from recsys.data.split import EvalSet, Split

if TYPE_CHECKING:
    from recsys.models.base import Recommender
    from recsys.sections import EvaluationConfig

FALLBACK_FOLD_IN = "fold_in"
FALLBACK_POPULARITY = "popularity"


@dataclass(frozen=True)
class ColdSplit:
    """An evaluation target divided into the warm part (model metrics) and the cold users."""

    warm: EvalSet
    cold: EvalSet  # truth of the cold users only; fold_in = the history each one has (rows may be empty)
    cold_items: np.ndarray  # bool per item: no training interaction
    cold_users: np.ndarray  # indices of evaluated users without a training history
    cold_item_interactions: int  # test interactions on cold items (left out of both truths)
    n_cold_items: int  # cold items holding at least one test interaction

    def counts(self) -> dict[str, int]:
        return {
            "warm_test_users": int(self.warm.users.size),
            "cold_test_users": int(self.cold_users.size),
            "cold_test_items": self.n_cold_items,
            "cold_item_test_interactions": self.cold_item_interactions,
        }


def separate_cold(eval_set: EvalSet, train: sp.csr_matrix) -> ColdSplit:
    """Divide `eval_set` by training history; `train` is the split's training matrix."""
    train = sp.csr_matrix(train)
    truth = sp.csr_matrix(eval_set.truth)
    n_users, n_items = truth.shape
    cold_items = np.diff(train.tocsc().indptr) == 0
    tested_items = np.diff(truth.tocsc().indptr) > 0
    history = eval_set.fold_in if eval_set.fold_in is not None else train
    has_history = np.diff(sp.csr_matrix(history).indptr) > 0
    kept_truth = _without_columns(truth, cold_items)
    evaluated = np.diff(kept_truth.indptr) > 0
    warm_users, cold_users = evaluated & has_history, evaluated & ~has_history
    masked = cold_items if cold_items.any() else None
    # The cold users' masks leave the warm target (it never ranks them): a cold user with a history
    # (validation rows) was counted as a user without test items by its `n_users_without_truth`.
    warm_exclude = _rows(sp.csr_matrix(eval_set.exclude), ~cold_users) if cold_users.any() else eval_set.exclude
    warm = EvalSet(
        truth=_rows(kept_truth, warm_users), exclude=warm_exclude, fold_in=eval_set.fold_in,
        masked_items=masked, times=eval_set.times,
    )  # fmt: skip
    # A cold user's history is whatever the evaluator masks for it (train is empty: validation rows,
    # earlier windows); for fold-in protocols a cold user has no fold-in history at all.
    cold_history = eval_set.exclude if eval_set.fold_in is None else eval_set.fold_in
    cold = EvalSet(
        truth=_rows(kept_truth, cold_users), exclude=eval_set.exclude,
        fold_in=_rows(sp.csr_matrix(cold_history), cold_users), masked_items=masked, times=eval_set.times,
    )  # fmt: skip
    dropped = int(truth.nnz - kept_truth.nnz)
    n_cold_items = int(np.count_nonzero(cold_items & tested_items))
    return ColdSplit(warm, cold, cold_items, np.flatnonzero(cold_users), dropped, n_cold_items)


def divide_test(split: Split) -> ColdSplit:
    """The split's test target divided into warm and cold (what every scorer of a split uses)."""
    return separate_cold(split.test_set(), split.train)


def divide_validation(split: Split) -> ColdSplit | None:
    """The validation target divided likewise (None without a validation part)."""
    target = split.validation_set()
    return None if target is None else separate_cold(target, split.train)


def warm_validation(split: Split) -> EvalSet | None:
    """The validation users with a training history (cold items masked): what early stopping,
    tuning and candidate selection score. None without validation or without warm validation users."""
    parts = divide_validation(split)
    return parts.warm if parts is not None and parts.warm.users.size else None


def _rows(matrix: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """`matrix` with the rows not in `keep` emptied (shape unchanged)."""
    out = sp.csr_matrix(sp.diags(keep.astype(np.float32)) @ matrix, dtype=np.float32)
    out.eliminate_zeros()
    return out


def _without_columns(matrix: sp.csr_matrix, drop: np.ndarray) -> sp.csr_matrix:
    if not drop.any():
        return matrix
    out = sp.csr_matrix(matrix @ sp.diags((~drop).astype(np.float32)), dtype=np.float32)
    out.eliminate_zeros()
    return out


@dataclass(frozen=True)
class ColdGroupResult:
    """The cold users scored by the fallback: per-metric means over them, and how each was served."""

    summary: dict[str, float]
    n_users: int
    n_fold_in: int  # scored from their own history with model.fold_in
    n_popularity: int  # no history at all: the most popular training items

    def to_dict(self) -> dict:
        return {"users": self.n_users, "fold_in": self.n_fold_in, "popularity": self.n_popularity,
                "metrics": dict(self.summary)}  # fmt: skip


def evaluate_cold(
    model: Recommender, parts: ColdSplit, cfg: EvaluationConfig, *, item_popularity: np.ndarray,
    item_ids: np.ndarray | None = None,
) -> ColdGroupResult:
    """Score the cold users as serving would: `model.fold_in` of their history when they have one,
    else popularity (ties by the raw `item_ids`' text, as serving's and the popularity model's
    `break_ties`: the item index depends on the order the log was read in; without ids, to the
    lower index). Only per-user metrics are averaged (catalogue aggregates such as coverage
    describe the model's lists, not a fallback's)."""
    from recsys.evaluation.evaluate import evaluate_factors

    cold = parts.cold
    users = cold.users
    if users.size == 0:
        return ColdGroupResult({}, 0, 0, 0)
    history = sp.csr_matrix(cold.fold_in)
    with_history = users[np.diff(history.indptr)[users] > 0]
    without = users[np.diff(history.indptr)[users] == 0]
    quiet = cfg.model_copy(update={"bootstrap_samples": 0})
    frames = []
    if with_history.size:
        user_vecs = np.zeros((cold.truth.shape[0], model.item_factors.shape[1]), dtype=np.float32)
        times = None if cold.times is None else sp.csr_matrix(cold.times)[with_history]
        user_vecs[with_history] = model.fold_in_ordered(history[with_history], times)
        target = EvalSet(_rows(cold.truth, _mask(with_history, cold.truth.shape[0])), cold.exclude,
                         masked_items=cold.masked_items)  # fmt: skip
        frames.append(evaluate_factors(user_vecs, model.item_factors, target, quiet,
                                       item_popularity=item_popularity).per_user)  # fmt: skip
    if without.size:
        popularity = np.asarray(item_popularity, dtype=np.float32)
        if item_ids is not None:
            from recsys.models.popularity import break_ties

            popularity = break_ties(popularity, item_ids)
        popularity = popularity[:, None]
        target = EvalSet(_rows(cold.truth, _mask(without, cold.truth.shape[0])), cold.exclude,
                         masked_items=cold.masked_items)  # fmt: skip
        ones = np.ones((cold.truth.shape[0], 1), dtype=np.float32)
        frames.append(evaluate_factors(ones, popularity, target, quiet, item_popularity=item_popularity).per_user)
    import polars as pl

    per_user = pl.concat(frames)
    summary = {name: float(per_user.get_column(name).mean()) for name in per_user.columns if name != "user_idx"}
    return ColdGroupResult(summary, int(users.size), int(with_history.size), int(without.size))


def _mask(users: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[users] = True
    return mask
