"""Wiring of evaluation targets: what `Split.test_set()` / `validation_set()` mask and where the
user vectors come from, checked through `evaluate()` with a model whose ranking is known.

Each user's vector ranks a masked item first (training, validation or fold-in history) and the
held-out item right after it, so recall@1 is 1 only when the mask is passed along; a split that
forgets a mask, or forgets the fold-in histories, scores 0. Also: a user's own block label reaches
the folding diagnostic when their history says nothing about their block.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import EvaluationConfig
from recsys.data.split import Split
from recsys.evaluation.evaluate import evaluate
from recsys.evaluation.folding import folding_report
from recsys.models.factors import FactorModel

N_ITEMS = 6
CFG = EvaluationConfig(ks=[1], metrics=["recall"], bootstrap_samples=0, threads=1)
POPULARITY = np.ones(N_ITEMS)


def rows(lists: list[list[int]]) -> sp.csr_matrix:
    dense = np.zeros((len(lists), N_ITEMS), dtype=np.float32)
    for user, items in enumerate(lists):
        dense[user, items] = 1.0
    return sp.csr_matrix(dense)


def ranking_model(preferences: list[list[float]]) -> FactorModel:
    """One-hot items: a user's vector is their score for every item."""
    return FactorModel.from_arrays(np.asarray(preferences, np.float32), np.eye(N_ITEMS, dtype=np.float32))


def recall_at_1(model: FactorModel, eval_set) -> float:
    return evaluate(model, eval_set, CFG, item_popularity=POPULARITY).summary["recall@1"]


def test_test_time_masks_training_and_validation_items():
    """User 0 prefers its validation item, user 1 its training item, each before its test item."""
    split = Split(
        protocol="random",
        train=rows([[1], [2]]),
        validation=rows([[0], [3]]),
        test=rows([[4], [5]]),
    )
    model = ranking_model([[9, 8, 0, 0, 7, 0], [0, 0, 9, 8, 0, 7]])
    assert recall_at_1(model, split.test_set()) == 1.0


def test_validation_masks_training_items_only():
    """At validation time the test items are unknown, so they are not masked: user 0 prefers its
    training item, then its validation item; user 1 prefers its test item over its validation item."""
    split = Split(
        protocol="random", train=rows([[1], [2]]), validation=rows([[0], [3]]), test=rows([[4], [5]])
    )
    model = ranking_model([[8, 9, 0, 0, 0, 0], [0, 0, 9, 7, 0, 8]])
    result = evaluate(model, split.validation_set(), CFG, item_popularity=POPULARITY)
    np.testing.assert_array_equal(result.per_user["recall@1"].to_numpy(), [1.0, 0.0])


# Strong generalisation: users 0 and 1 are held out (no training row). Items 0-2 form cluster A,
# 3-5 cluster B; item vectors are the one-hot item plus half its cluster, so a fold-in vector (the
# sum of the history's item vectors) scores the history items first, then the rest of their cluster.
CLUSTER = np.repeat(np.eye(2, dtype=np.float32), 3, axis=0)
ITEMS = np.eye(N_ITEMS, dtype=np.float32)
ITEM_VECS = np.hstack([ITEMS, 0.5 * CLUSTER])
TRAINED_WRONG = np.hstack([np.zeros((2, N_ITEMS)), np.array([[0.0, 1.0], [1.0, 0.0]])])  # the other cluster


def strong_split() -> Split:
    empty = sp.csr_matrix((2, N_ITEMS), dtype=np.float32)
    return Split(
        protocol="strong_generalization",
        train=empty,
        test=rows([[2], [5]]),
        fold_in=rows([[0, 1], [3, 4]]),
        validation=rows([[1], [4]]),
        validation_fold_in=rows([[0], [3]]),
    )


@pytest.mark.parametrize("target", ["test", "validation"])
def test_held_out_users_are_scored_from_their_fold_in_history_with_it_masked(target):
    split = strong_split()
    model = FactorModel.from_arrays(TRAINED_WRONG.astype(np.float32), ITEM_VECS)
    eval_set = split.test_set() if target == "test" else split.validation_set()
    assert eval_set.fold_in is not None
    # recall 1: vectors from the fold-in history (the trained ones point at the other cluster) and
    # the history itself masked (it would fill the top of every list)
    assert recall_at_1(model, eval_set) == 1.0


def test_a_users_own_block_label_makes_their_block_home_for_folding():
    """User 1's only history item has no known block; its own label (block 1) still makes block-1
    recommendations at home, so a model that recommends within each user's block folds 0."""
    split = Split(
        protocol="random",
        train=rows([[0], [5]]),
        test=rows([[1], [4]]),
        user_blocks=np.array([0, 1]),
        item_blocks=np.array([0, 0, 0, 1, 1, -1]),
    )
    model = ranking_model([[0, 9, 8, 0, 0, 0], [0, 0, 0, 8, 9, 0]])
    report = folding_report(model, split, k=2)
    assert report.blocks == "known"
    np.testing.assert_array_equal(report.per_user, [0.0, 0.0])


def test_every_target_carries_the_split_event_times():
    """A sequence user tower orders each evaluated user's history by `EvalSet.times`; a target that
    dropped them would rank from index order (see tests/models/test_sequence_tower.py). All four
    targets: test and validation, with and without held-out (fold-in) users."""
    times = rows([[1], [2], [0]])
    plain = Split(protocol="random", train=rows([[1], [2], []]), validation=rows([[0], [3], []]),
                  test=rows([[4], [5], []]), times=times)  # fmt: skip
    strong = Split(protocol="strong_generalization", train=rows([[1], [], []]), test=rows([[], [5], [4]]),
                   validation=rows([[], [], [3]]), fold_in=rows([[], [2], []]),
                   validation_fold_in=rows([[], [], [0]]), times=times)  # fmt: skip
    for split in (plain, strong):
        assert split.test_set().times is times and split.validation_set().times is times
    assert strong.test_set().fold_in is strong.fold_in and strong.validation_set().fold_in is strong.validation_fold_in
    assert Split(protocol="random", train=times, test=times).validation_set() is None
