"""Cold test users and cold items: out of the model metrics, counted, scored by the fallback.

A hand-built case (4 users, 6 items) whose every ranking is worked out below:
    train       u0: {0, 1, 4}   u1: {2, 3}   u2: -   u3: -    (item 5 never trained on: cold)
    validation  u2: {3}                                   (u2's only history)
    test        u0: {3, 5}   u1: {4}   u2: {0}   u3: {1, 5}
Item vectors are one-hot except item 0 = e0 + 0.9 e3; u0 = e3 + 0.5 e5, u1 = e4, and the cold users
have the zero vectors WALS gives them (which would rank items 0, 1, 2, ... by index).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import EvaluationConfig
from recsys.data.split import Split
from recsys.evaluation.cold import divide_test, evaluate_cold, separate_cold
from recsys.evaluation.evaluate import evaluate
from recsys.models.factors import FactorModel

N_USERS, N_ITEMS = 4, 6


def csr(rows: dict[int, list[int]]) -> sp.csr_matrix:
    cells = [(u, i) for u, items in rows.items() for i in items]
    users, items = zip(*cells, strict=True) if cells else ((), ())
    return sp.csr_matrix((np.ones(len(cells), np.float32), (users, items)), shape=(N_USERS, N_ITEMS))


@pytest.fixture()
def split() -> Split:
    return Split(
        protocol="rolling",
        train=csr({0: [0, 1, 4], 1: [2, 3]}),
        validation=csr({2: [3]}),
        test=csr({0: [3, 5], 1: [4], 2: [0], 3: [1, 5]}),
    )


@pytest.fixture()
def model() -> FactorModel:
    items = np.eye(N_ITEMS, dtype=np.float32)
    items[0, 3] = 0.9
    users = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    users[0, 3], users[0, 5], users[1, 4] = 1.0, 0.5, 1.0
    return FactorModel.from_arrays(users, items)


CFG = EvaluationConfig(ks=[1, 2], metrics=["recall"], bootstrap_samples=0)


def test_cold_users_and_items_are_separated_and_counted(split):
    parts = divide_test(split)
    np.testing.assert_array_equal(parts.warm.users, [0, 1])
    np.testing.assert_array_equal(parts.cold_users, [2, 3])
    assert parts.counts() == {"warm_test_users": 2, "cold_test_users": 2, "cold_test_items": 1, "cold_item_test_interactions": 2}
    assert parts.cold_items.tolist() == [False] * 5 + [True]
    assert parts.warm.truth[0].indices.tolist() == [3]  # item 5 left out of the truth
    assert parts.cold.truth[3].indices.tolist() == [1]
    assert parts.cold.fold_in[2].indices.tolist() == [3]  # its validation row is its history


def test_model_metrics_cover_warm_users_only_and_never_rank_a_cold_item(split, model):
    parts = divide_test(split)
    result = evaluate(model, parts.warm, CFG, item_popularity=np.ones(N_ITEMS))
    assert result.per_user["user_idx"].to_list() == [0, 1]
    # u0: item 0 (0.9) is seen in train, item 5 (0.5) is cold -> [3, 2]; u1: item 4 first
    assert result.summary["recall@1"] == 1.0
    assert result.topk.items.tolist() == [[3, 2], [4, 0]]
    # the old way: all four users, the cold ones ranked by index from zero vectors, item 5 ranked
    everyone = evaluate(model, split.test_set(), CFG, item_popularity=np.ones(N_ITEMS))
    assert everyone.per_user.height == 4
    assert everyone.topk.items.tolist() == [[3, 5], [4, 0], [0, 1], [0, 1]]


def test_a_cold_user_with_a_history_is_not_counted_as_skipped_by_the_warm_metrics(split, model):
    """Every user here has a test item: none is skipped. u2 (cold, validation history) is scored in
    the cold group; the warm evaluation once counted it as a user without test items too (the
    MLflow n_users_skipped of a random split: evaluated + skipped + cold exceeded the users)."""
    parts = divide_test(split)
    result = evaluate(model, parts.warm, CFG, item_popularity=np.ones(N_ITEMS))
    assert (result.n_users_evaluated, result.n_users_skipped, parts.cold_users.size) == (2, 0, 2)
    assert result.topk.items.tolist() == [[3, 2], [4, 0]]  # the warm users' masks are kept


def test_cold_users_are_scored_by_fold_in_of_their_history_or_by_popularity(split, model):
    parts = separate_cold(split.test_set(), split.train)
    popularity = np.asarray(split.train.sum(axis=0)).ravel()  # [1, 1, 1, 1, 1, 0]
    group = evaluate_cold(model, parts, CFG, item_popularity=popularity)
    assert (group.n_users, group.n_fold_in, group.n_popularity) == (2, 1, 1)
    # u2: fold-in of {3} = e3 -> item 0 scores 0.9 (item 3 is masked: seen) -> hit at 1
    # u3: popularity ties broken by index -> [0, 1, ...]: truth {1} is missed at 1, hit at 2
    assert group.summary == {"recall@1": 0.5, "recall@2": 1.0}
    assert group.to_dict()["metrics"] == group.summary


def test_the_popularity_fallback_orders_ties_by_the_raw_item_id(split, model):
    """With the items' raw ids the fallback orders tied items by them, as the popularity model and
    serving do: the index follows the order the log was read in. Item 1 is "a", the first id, so
    u3 (truth {1}) is now hit at 1."""
    parts = separate_cold(split.test_set(), split.train)
    popularity = np.asarray(split.train.sum(axis=0)).ravel()  # [1, 1, 1, 1, 1, 0]
    ids = np.array(["f", "a", "b", "c", "d", "e"], dtype=object)
    group = evaluate_cold(model, parts, CFG, item_popularity=popularity, item_ids=ids)
    assert group.summary == {"recall@1": 1.0, "recall@2": 1.0}
