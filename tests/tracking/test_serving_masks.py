"""What serving masks (`recsys.tracking.pyfunc.seen_matrix`): everything the evaluator masks for a
user - train, validation, and a held-out user's fold-in histories - checked through the real
`ServingIndex` with a model whose ranking is known (the planted rankings of
tests/evaluation/test_eval_set_wiring.py).

Each served user's vector ranks a seen item first and its test item right after it, so the top-1
is the test item only when that seen item is masked; a `seen_matrix` that leaves out validation or
the fold-in histories serves the seen item (or, for a held-out user, popularity). User 3 (or 2)
is trained on every item, so no item counts as untrained (untrained items are masked for all).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.data.split import Split
from recsys.evaluation.ranking import rank_eval_set
from recsys.models.factors import FactorModel
from recsys.tracking.pyfunc import ServingIndex, write_serving_artifacts

N_ITEMS = 6
EVERY_ITEM = list(range(N_ITEMS))


def rows(lists: list[list[int]]) -> sp.csr_matrix:
    dense = np.zeros((len(lists), N_ITEMS), dtype=np.float32)
    for user, items in enumerate(lists):
        dense[user, items] = 1.0
    return sp.csr_matrix(dense)


def served(split: Split, model: FactorModel, directory: Path, users: list[str]) -> tuple[list[list[str]], list[str]]:
    index = ServingIndex(write_serving_artifacts(model, split, directory))
    answer = index.recommend(users, 1)
    return [list(items) for items in answer["item_ids"]], answer["source"].tolist()


def test_a_known_users_validation_items_are_never_served(tmp_path: Path):
    """User 0 prefers its validation item, user 1 its training item, each before its test item."""
    split = Split(
        protocol="random",
        train=rows([[1], [2], EVERY_ITEM]),
        validation=rows([[0], [3], []]),
        test=rows([[4], [5], []]),
    )
    model = FactorModel.from_arrays(
        np.array([[9, 8, 0, 0, 7, 0], [0, 0, 9, 8, 0, 7], [0] * N_ITEMS], np.float32), np.eye(N_ITEMS, dtype=np.float32)
    )
    assert served(split, model, tmp_path, ["0", "1"]) == ([["4"], ["5"]], ["model", "model"])


def test_a_held_out_users_stored_histories_are_folded_in_and_masked_as_the_evaluator_does(tmp_path: Path):
    """Strong generalisation: users 0 and 1 are held out for test (fold-in history, no training
    row), user 2 for validation (its validation fold-in and validation truth are both history at
    serving time). Items 0-2 form cluster A, 3-5 cluster B; item vectors are the one-hot item plus
    half its cluster, so a folded-in vector scores the history first, then the rest of its cluster
    (user 2 with only item 1 as history would tie items 0 and 2 and serve item 0)."""
    cluster = np.repeat(np.eye(2, dtype=np.float32), 3, axis=0)
    item_vectors = np.hstack([np.eye(N_ITEMS, dtype=np.float32), 0.5 * cluster])
    wrong = np.hstack([np.zeros((4, N_ITEMS)), np.tile([[0.0, 1.0]], (4, 1))]).astype(np.float32)
    model = FactorModel.from_arrays(wrong, item_vectors)  # held-out users' learned vectors: never read
    split = Split(
        protocol="strong_generalization",
        train=rows([[], [], [], EVERY_ITEM]),
        test=rows([[2], [5], [], []]),
        fold_in=rows([[0, 1], [3, 4], [], []]),
        validation=rows([[], [], [1], []]),
        validation_fold_in=rows([[], [], [0], []]),
    )
    items, sources = served(split, model, tmp_path, ["0", "1", "2"])
    assert sources == ["fold_in"] * 3
    assert items == [["2"], ["5"], ["2"]]
    # the evaluator's lists for the test users, item for item
    evaluated = rank_eval_set(model, split.test_set(), 1, device="cpu")
    assert evaluated.users.tolist() == [0, 1] and [[str(i)] for i in evaluated.items[:, 0]] == items[:2]
