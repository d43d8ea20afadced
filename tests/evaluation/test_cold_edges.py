"""Cold group edges: what each of `evaluate_cold`'s masks and inputs changes, on hand-built cases.

Every case has 5 users x 5 items; the model's item vectors are one-hot (item i = e_i) unless a case
says otherwise, so a user vector is that user's score for every item and each ranking is read off
by hand. Item 4 never appears in training (cold) in every case. The user factors are zero: cold
users have no learned vector, and warm users are not scored here.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.config import EvaluationConfig
from recsys.data.split import Split
from recsys.evaluation.cold import (
    ColdGroupResult,
    divide_validation,
    evaluate_cold,
    separate_cold,
    warm_validation,
)
from recsys.evaluation.evaluate import evaluate
from recsys.models.factors import FactorModel

N_USERS, N_ITEMS = 5, 5
CFG = EvaluationConfig(ks=[1], metrics=["recall"], bootstrap_samples=0, threads=1)
TRAIN = {0: [0, 3], 1: [1, 2]}  # item 4: cold


def csr(rows: dict[int, list[int]], values: dict[tuple[int, int], float] | None = None) -> sp.csr_matrix:
    dense = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    for user, items in rows.items():
        dense[user, items] = 1.0
    for (user, item), value in (values or {}).items():
        dense[user, item] = value
    return sp.csr_matrix(dense)


def model_with(items: np.ndarray) -> FactorModel:
    return FactorModel.from_arrays(np.zeros((N_USERS, N_ITEMS), np.float32), items)


def training_popularity(split: Split) -> np.ndarray:
    return np.diff(sp.csr_matrix(split.train).tocsc().indptr).astype(np.int64)


def test_the_fold_in_fallback_never_ranks_a_cold_item_its_history_points_at():
    """u2 is cold (no training row) with a validation history {1}: fold-in gives e1. The cold item 4
    has the vector 2 e1 (an untrained vector can point anywhere), item 0 = e0 + 0.5 e1. Scores:
    item 4: 2 (cold), item 1: 1 (seen), item 0: 0.5, items 2, 3: 0. Masked: [0] -> recall@1 = 1;
    with item 4 ranked: [4] -> 0. One cold user alone is a group of one, not an empty group."""
    split = Split(protocol="rolling", train=csr(TRAIN), validation=csr({2: [1]}), test=csr({2: [0]}))
    items = np.eye(N_ITEMS, dtype=np.float32)
    items[0, 1], items[4] = 0.5, 2 * items[1]
    parts = separate_cold(split.test_set(), split.train)
    assert parts.cold_users.tolist() == [2]
    group = evaluate_cold(model_with(items), parts, CFG, item_popularity=training_popularity(split))
    assert group.to_dict() == {"users": 1, "fold_in": 1, "popularity": 0, "metrics": {"recall@1": 1.0}}


def test_the_popularity_fallback_never_ranks_a_cold_item_whatever_popularity_says():
    """u3 is cold without any history: popularity ranks for it. Given counts in which the cold item
    4 is the most popular (e.g. counted over more than the training window), it is still never
    recommended: [0] (count 2) -> recall@1 = 1; ranked, item 4 (count 5) would take the place."""
    split = Split(protocol="rolling", train=csr(TRAIN), validation=csr({}), test=csr({3: [0]}))
    parts = separate_cold(split.test_set(), split.train)
    group = evaluate_cold(model_with(np.eye(N_ITEMS, dtype=np.float32)), parts, CFG,
                          item_popularity=np.array([2, 1, 1, 1, 5]))  # fmt: skip
    assert group.to_dict() == {"users": 1, "fold_in": 0, "popularity": 1, "metrics": {"recall@1": 1.0}}


class LatestItemModel(FactorModel):
    """A model that reads order: with event times a history's vector is its latest item's vector;
    without them (unknown order) the plain fold-in, the sum of the history's item vectors."""

    def fold_in_ordered(self, histories: sp.spmatrix, times: sp.spmatrix | None = None) -> np.ndarray:
        if times is None:
            return self.fold_in(histories)
        times = sp.csr_matrix(times)
        out = np.zeros((histories.shape[0], self.item_factors.shape[1]), np.float32)
        for row, (items, when) in enumerate(zip(np.split(times.indices, times.indptr[1:-1]),
                                                np.split(times.data, times.indptr[1:-1]), strict=True)):  # fmt: skip
            seen = [(t, i) for t, i in zip(when, items, strict=True) if histories[row, i] != 0]
            out[row] = self.item_factors[max(seen)[1]]
        return out


def test_the_fold_in_fallback_gives_an_order_reading_model_the_event_times():
    """u2 (cold) saw item 2 at t=1 and item 1 at t=5 (validation). Items: item 0 = e0 + 0.5 e1,
    item 3 = e3 + 0.3 e1 + 0.3 e2. With times, u2's vector is its latest item, e1: item 0 scores
    0.5, item 3 0.3 -> [0], recall@1 = 1. Without times it is e1 + e2: item 3 0.6 beats item 0
    -> [3], recall@1 = 0. u3 (cold, history {2} only) has a hit either way (item 3: 0.3 > 0)."""
    times = csr({}, {(0, 0): 1, (0, 3): 1, (1, 1): 1, (1, 2): 1, (2, 2): 1, (2, 1): 5, (2, 0): 9,
                     (3, 2): 2, (3, 3): 9})  # fmt: skip
    split = Split(protocol="rolling", train=csr(TRAIN), validation=csr({2: [1, 2], 3: [2]}),
                  test=csr({2: [0], 3: [3]}), times=times)  # fmt: skip
    items = np.eye(N_ITEMS, dtype=np.float32)
    items[0, 1], items[3, 1], items[3, 2] = 0.5, 0.3, 0.3
    model = LatestItemModel.from_arrays(np.zeros((N_USERS, N_ITEMS), np.float32), items)
    parts = separate_cold(split.test_set(), split.train)
    group = evaluate_cold(model, parts, CFG, item_popularity=training_popularity(split))
    assert (group.n_users, group.n_fold_in) == (2, 2)
    assert group.summary == {"recall@1": 1.0}


def test_no_cold_users_is_an_empty_group():
    """Every test user has a training row: the group is empty, counted as zero everywhere."""
    split = Split(protocol="rolling", train=csr(TRAIN), test=csr({0: [1], 1: [0]}))
    parts = separate_cold(split.test_set(), split.train)
    group = evaluate_cold(model_with(np.eye(N_ITEMS, dtype=np.float32)), parts, CFG,
                          item_popularity=training_popularity(split))  # fmt: skip
    assert group == ColdGroupResult({}, 0, 0, 0)
    assert group.to_dict() == {"users": 0, "fold_in": 0, "popularity": 0, "metrics": {}}


def test_validation_is_divided_like_the_test_and_warm_validation_keeps_the_warm_part():
    """Validation u0 {2, 4} (warm; item 4 cold), u2 {1} (cold: no training row). The warm part is
    u0 with truth {2}, cold item 4 masked and its one interaction counted; u2 is the cold user.
    Without a validation part, or with cold validation users only, there is nothing to select on."""
    split = Split(
        protocol="rolling", train=csr(TRAIN), validation=csr({0: [2, 4], 2: [1]}), test=csr({3: [0]})
    )
    parts = divide_validation(split)
    assert parts.warm.users.tolist() == [0]
    assert parts.warm.truth[0].indices.tolist() == [2]
    assert parts.cold_users.tolist() == [2]
    assert parts.counts() == {"warm_test_users": 1, "cold_test_users": 1, "cold_test_items": 1,
                              "cold_item_test_interactions": 1}  # fmt: skip
    warm = warm_validation(split)
    assert warm.users.tolist() == [0]
    assert warm.masked_items.tolist() == [False] * 4 + [True]
    assert (warm.truth != parts.warm.truth).nnz == 0

    no_validation = Split(protocol="rolling", train=csr(TRAIN), test=csr({3: [0]}))
    assert divide_validation(no_validation) is None and warm_validation(no_validation) is None
    cold_only = Split(protocol="rolling", train=csr(TRAIN), validation=csr({2: [1]}), test=csr({3: [0]}))
    assert divide_validation(cold_only).cold_users.tolist() == [2]
    assert warm_validation(cold_only) is None


def test_a_single_training_item_makes_a_user_warm_and_a_cold_item_alone_evaluates_no_one():
    """Train u0 {0} (one item is a history), u1 {1, 2}; items 3 and 4 never trained (cold). Test:
    u0 {1}, u2 {4}. u2's only test item is cold, so u2 has nothing to score: neither warm nor cold,
    its interaction counted. Item 3 is cold but never tested, so it is not a cold *test* item."""
    split = Split(protocol="rolling", train=csr({0: [0], 1: [1, 2]}), test=csr({0: [1], 2: [4]}))
    parts = separate_cold(split.test_set(), split.train)
    assert parts.cold_items.tolist() == [False, False, False, True, True]
    assert parts.warm.users.tolist() == [0] and parts.cold_users.tolist() == []
    assert parts.counts() == {"warm_test_users": 1, "cold_test_users": 0, "cold_test_items": 1,
                              "cold_item_test_interactions": 1}  # fmt: skip


def test_fold_in_users_are_warm_and_scored_from_their_ordered_fold_in_history():
    """Strong generalisation: u2 has no training row but a fold-in history (item 1 at t=1, item 2
    at t=5): it is warm, and the warm target keeps its fold-in rows and their times. u3 has neither:
    cold, with an empty history. Items: item 0 = e0 + 0.5 e1, item 3 = e3 + 0.3 e2. Scored from its
    latest item, e2: item 3 (0.3) first -> recall@1 = 1. From the unordered fold-in e1 + e2, item 0
    (0.5) is first; from the zero training vector every score ties and item 0 is first: 0 both ways."""
    times = csr({}, {(0, 0): 1, (0, 3): 1, (1, 1): 1, (1, 2): 1, (2, 1): 1, (2, 2): 5, (2, 3): 9, (3, 0): 9})
    split = Split(protocol="strong", train=csr(TRAIN), test=csr({2: [3], 3: [0]}), fold_in=csr({2: [1, 2]}),
                  times=times)  # fmt: skip
    parts = separate_cold(split.test_set(), split.train)
    assert parts.warm.users.tolist() == [2] and parts.cold_users.tolist() == [3]
    assert parts.cold.fold_in.nnz == 0
    items = np.eye(N_ITEMS, dtype=np.float32)
    items[0, 1], items[3, 2] = 0.5, 0.3
    model = LatestItemModel.from_arrays(np.zeros((N_USERS, N_ITEMS), np.float32), items)
    result = evaluate(model, parts.warm, CFG, item_popularity=training_popularity(split))
    assert result.topk.items.tolist() == [[3]]
    assert result.summary["recall@1"] == 1.0
