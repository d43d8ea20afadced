"""Split containers: what a splitter produces and what every model and the evaluator consume.

All matrices share one index space (rows = users of the user vocab, columns = items of the item
vocab), are `scipy.sparse.csr_matrix` float32, and are built once per split. An `EvalSet` says
exactly which users are scored, which items are masked, and where the user vectors come from, so
the evaluator never needs to know which protocol produced it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class EvalSet:
    """One evaluation target.

    truth:   relevant items per user; users with an empty row are not evaluated (they are counted).
    exclude: items masked from each user's ranking (what the user was seen to interact with).
    fold_in: for users unseen at training time (strong generalisation) the history from which their
             vectors are computed with `model.fold_in`; None means use `model.user_factors`.
    masked_items: bool per item, True = never ranked for anyone (items with no training data, whose
             vectors mean nothing; see recsys.evaluation.cold); None = every item is ranked.
    times:   event times of the users' interactions (users x items, `Split.times`), so models that
             read order (a sequence user tower) can order the fold-in histories; None = unknown.
    """

    truth: sp.csr_matrix
    exclude: sp.csr_matrix
    fold_in: sp.csr_matrix | None = None
    masked_items: np.ndarray | None = None
    times: sp.csr_matrix | None = None

    @property
    def users(self) -> np.ndarray:
        """Indices of users with at least one relevant item (the evaluated users)."""
        return np.flatnonzero(np.diff(self.truth.indptr) > 0).astype(np.int64)

    @property
    def n_users_without_truth(self) -> int:
        rows_with_exclusions = np.diff(self.exclude.indptr) > 0
        return int(np.sum(rows_with_exclusions & (np.diff(self.truth.indptr) == 0)))


@dataclass
class Split:
    """A train/validation/test split over one vocab.

    For temporal, leave-last-n and random splits every user may appear in all matrices, and
    `fold_in`/`validation_fold_in` are None. For strong generalisation, held-out users have empty
    `train` rows; their histories are split into `fold_in` (given to the model at evaluation time)
    and `test` (scored); validation users likewise into `validation_fold_in` and `validation`.
    """

    protocol: str
    train: sp.csr_matrix
    test: sp.csr_matrix
    validation: sp.csr_matrix | None = None
    fold_in: sp.csr_matrix | None = None
    validation_fold_in: sp.csr_matrix | None = None
    user_ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))  # index -> raw id
    item_ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    user_blocks: np.ndarray | None = None  # int block label per user (folding ground truth), -1 unknown
    item_blocks: np.ndarray | None = None
    meta: dict = field(default_factory=dict)  # seed, cut-off, fractions, fingerprint ...
    times: sp.csr_matrix | None = None  # event time (s since the log's first, + 1) of every pair; None = no timestamps

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def test_set(self) -> EvalSet:
        """Test target: mask everything the model or user has seen (train, validation, fold-in)."""
        if self.fold_in is not None:
            return EvalSet(truth=self.test, exclude=self.fold_in, fold_in=self.fold_in, times=self.times)
        exclude = self.train if self.validation is None else (self.train + self.validation).tocsr()
        return EvalSet(truth=self.test, exclude=exclude, times=self.times)

    def validation_set(self) -> EvalSet | None:
        """Validation target for early stopping and tuning; never touches test."""
        if self.validation is None:
            return None
        if self.validation_fold_in is not None:
            return EvalSet(
                truth=self.validation, exclude=self.validation_fold_in, fold_in=self.validation_fold_in,
                times=self.times,
            )
        return EvalSet(truth=self.validation, exclude=self.train, times=self.times)


def split_digest(split: Split) -> str:
    """Identity of an evaluation: same data fingerprint + protocol + seed + fractions -> same digest.
    Per-user metrics are only comparable between runs with equal digests."""
    meta = {k: v for k, v in split.meta.items() if k != "rows"}
    meta["shape"] = list(split.train.shape)
    meta["rows"] = split.meta.get("rows")
    text = json.dumps(meta, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_record(split: Split) -> dict[str, str | None]:
    """What a saved model records of the split it trained on (`Recommender.trained_on`), so that
    `recsys evaluate` can refuse another split: every path that saves a trained model (`recsys
    train`, the ranks of `recsys train --nproc`) records it with this one function."""
    return {"split_digest": split_digest(split), "fingerprint": split.meta.get("fingerprint")}
