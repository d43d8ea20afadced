"""Siamese item tower (kind = "item_tower"): the model contract, partners drawn inside a user's
history (and window), and item-to-item retrieval on planted clusters with held-out co-occurrences."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.models.item_tower import ItemTowerConfig, partner_positions
from recsys.similar import cooccurrence_hits, heldout_cooccurrences

from .conftest import Planted
from .contract import RecommenderContract

FAST = ItemTowerConfig(name="it", dim=16, num_negatives=32, batch_size=256, epochs=8, lr=0.02, seed=3, threads=1)


class TestItemTowerContract(RecommenderContract):
    model_config = FAST
    min_recall_at_10 = 0.45  # item-based: mean of the history's vectors; measured ~0.6
    min_fold_in_overlap = 0.99  # a user is the fold-in of their own training row

    def test_similar_items_of_the_tower_stay_in_the_planted_cluster(self, model, planted: Planted):
        users, queries, targets = heldout_cooccurrences(planted.test.tocsr() + planted.train.tocsr())
        assert users.size == queries.size == targets.size > 0
        hits = cooccurrence_hits(model.item_factors, queries, targets, 20)
        chance = 20 / (planted.n_items - 1)
        assert hits.mean() > 3 * chance  # held-out co-occurrences inside a cluster of ~30 items
        unit = model.item_factors
        same = planted.item_cluster[:, None] == planted.item_cluster[None, :]
        cosine = unit @ unit.T
        np.fill_diagonal(cosine, -np.inf)
        top = np.argsort(-cosine, axis=1)[:, :5]
        assert np.take_along_axis(same, top, axis=1).mean() > 0.9


def test_partners_are_other_items_of_the_same_user_within_the_window():
    indptr = np.array([0, 1, 5, 12])
    rng = np.random.default_rng(0)
    for window in (None, 2):
        partner = partner_positions(indptr, rng, window)
        assert partner[0] == -1  # a user with one item has no partner
        position = np.arange(12)
        row = np.repeat(np.arange(3), np.diff(indptr))
        paired = partner >= 0
        assert (partner[paired] != position[paired]).all()
        assert (row[partner[paired]] == row[paired]).all()
        if window is not None:
            assert (np.abs(partner[paired] - position[paired]) <= window).all()
    draws = np.stack([partner_positions(indptr, np.random.default_rng(s), None)[5] for s in range(400)])
    assert set(draws.tolist()) == {6, 7, 8, 9, 10, 11}  # uniform over the user's other items


def test_heldout_pairs_follow_time_order():
    rows = sp.csr_matrix(np.array([[1, 1, 1, 0], [0, 1, 0, 1]], dtype=np.float32))
    times = sp.csr_matrix(np.array([[3.0, 1.0, 2.0, 0], [0, 9.0, 0, 4.0]]))
    users, queries, targets = heldout_cooccurrences(rows, times)
    assert users.tolist() == [0, 0, 1] and queries.tolist() == [1, 2, 3] and targets.tolist() == [2, 0, 1]


def test_cooccurrence_hits_never_count_a_masked_item():
    """`benchmarks/bench_similar.py` scores what serving answers: an item without training data is
    never among the k (its vector is untrained). Item 1 is item 0's nearest neighbour; masked, the
    pair (0 -> 1) cannot be a hit, and the next item takes its place."""
    vectors = np.array([[1.0, 0.0], [0.99, 0.1], [0.9, 0.4], [0.0, 1.0]], dtype=np.float32)
    queries, targets = np.array([0, 0]), np.array([1, 2])
    assert cooccurrence_hits(vectors, queries, targets, 1).tolist() == [1.0, 0.0]
    masked = np.array([False, True, False, False])
    assert cooccurrence_hits(vectors, queries, targets, 1, masked_items=masked).tolist() == [0.0, 1.0]
