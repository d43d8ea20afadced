"""Folding diagnostic at its edges: chunk boundaries, block labels only users carry, label 0, inputs
in other dtypes or as torch tensors, and the report's fields. Each case is small, built by hand,
and its right answer is worked out in the comments. (Written against mutmut 3 survivors of
`recsys/evaluation/folding.py`; the survivors each test kills are named in the commit messages.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.data.split import EvalSet, Split
from recsys.evaluation.folding import (
    folding_at_k,
    folding_report,
    folding_report_factors,
    kmeans_labels,
    neighbour_cross_block,
    random_folding_rate,
    score_folding,
    user_block_sets,
)
from recsys.models.factors import FactorModel

# --------------------------------------------------------------------------- chunked over users
# 10 users, k = 2, chunk_size = 3: four chunks, the last one short. Items 0-3 are block 0, 4-7 block 1.
# User u is at home in block u % 2; their list is [u % 8, (u + 4) % 8]: one item of each block, so
# every user's folding@2 is 1/2, except user 9's own label puts them at home in both blocks (0).
CHUNK_ITEM_BLOCKS = np.repeat([0, 1], 4)
CHUNK_HOME = np.eye(2, dtype=bool)[np.arange(10) % 2]
CHUNK_LISTS = np.stack([np.arange(10) % 8, (np.arange(10) + 4) % 8], axis=1)


def test_folding_at_k_covers_every_chunk_when_users_outnumber_the_chunk():
    own = np.full(10, -1)
    own[9] = 0  # user 9 (home block 1) is labelled block 0 too
    got = folding_at_k(CHUNK_LISTS, own, CHUNK_ITEM_BLOCKS, sp.csr_matrix(CHUNK_HOME), chunk_size=3)
    np.testing.assert_allclose(got, [0.5] * 9 + [0.0], atol=1e-12)


def test_random_rate_covers_every_chunk_with_exclusions_and_own_labels():
    # users 0-7 each exclude one item of their home block (4 * (u % 2) + u // 2); users 8 and 9
    # exclude nothing (the last chunk's rows have no exclusion). Allowed judgeable items: 7 or 8;
    # foreign: the 4 items of the other block.
    users = np.arange(8)
    exclude = sp.csr_matrix((np.ones(8, np.float32), (users, 4 * (users % 2) + users // 2)), shape=(10, 8))
    own = np.full(10, -1)
    own[4] = 1 - 4 % 2  # user 4 (home 0) also at home in block 1: nothing foreign
    got = random_folding_rate(CHUNK_HOME, own, CHUNK_ITEM_BLOCKS, exclude, chunk_size=3)
    expected = [4 / 7] * 8 + [4 / 8, 4 / 8]
    expected[4] = 0.0
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_score_folding_sums_over_chunks_and_skips_a_chunk_without_home_users():
    """Four users in 2-d (more users than dimensions), chunk_size = 1; user 0 has no home block (its
    chunk is skipped, not the end), users 1-3 are at home in block 0. Items: (1, 0) block 0 and
    (1, 1) block 1. Each scored user's cross pair is (user, item 1): cosines 1/sqrt2, 1, 0 for users
    (1, 0), (1, 1), (1, -1) (the last clamped at 0). F = (1/sqrt2 + 1) / (m n) = (...) / (3 * 2)."""
    users = np.array([[5.0, 5.0], [1.0, 0.0], [1.0, 1.0], [1.0, -1.0]], np.float32)
    items = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)
    home = np.array([[0, 0], [1, 0], [1, 0], [1, 0]], dtype=bool)
    got = score_folding(users, items, home, None, np.array([0, 1]), chunk_size=1)
    assert got == pytest.approx((1 / math.sqrt(2) + 1.0) / 6, rel=1e-6)


# --------------------------------------------------------------------------- block labels
def test_block_label_zero_is_a_known_own_block():
    """Label 0 is a block like any other (only -1 is unknown): a user at home in block 1 by history
    and labelled block 0 is at home in both, so nothing is foreign."""
    item_blocks = np.array([0, 0, 1, 1])
    home = np.array([[False, True]])
    lists = np.array([[0, 2]])
    np.testing.assert_allclose(folding_at_k(lists, np.array([-1]), item_blocks, home), [0.5])
    np.testing.assert_allclose(folding_at_k(lists, np.array([0]), item_blocks, home), [0.0])
    np.testing.assert_allclose(random_folding_rate(home.copy(), np.array([0]), item_blocks), [0.0])


def test_a_block_only_users_carry_counts_everywhere():
    """User 0's own label is block 2, which no item and no column of their block sets has: they are
    at home in block 2 only, so items of blocks 0 and 1 are all foreign (not an error, not NaN)."""
    item_blocks = np.array([0, 0, 1, 1])
    home = np.zeros((1, 2), dtype=bool)  # (users, blocks) made before block 2 existed
    own = np.array([2])
    np.testing.assert_allclose(folding_at_k(np.array([[0, 2]]), own, item_blocks, home), [1.0])
    np.testing.assert_allclose(random_folding_rate(home, own, item_blocks), [1.0])
    # cosine 1 with all four items, all cross-block: F = 4 / (1 * 4)
    assert score_folding(np.ones((1, 2)), np.ones((4, 2)), home, own, item_blocks) == pytest.approx(1.0)
    sets = user_block_sets(sp.csr_matrix(np.array([[1, 0, 0, 0]], np.float32)), item_blocks, own)
    np.testing.assert_array_equal(sets.toarray(), [[True, False, True]])


def test_block_sets_without_any_known_block_have_no_columns():
    history = sp.csr_matrix(np.ones((2, 3), np.float32))
    assert user_block_sets(history, np.full(3, -1)).shape == (2, 0)
    assert user_block_sets(sp.csr_matrix((2, 0), dtype=np.float32), np.empty(0, np.int64)).shape == (2, 0)


def test_random_rate_with_a_single_allowed_judgeable_item():
    """User 0 may be shown only item 1 (item 0 excluded, item 2 of unknown block): 1 of 1 foreign."""
    item_blocks = np.array([0, 1, -1])
    exclude = sp.csr_matrix(np.array([[1, 0, 0]], np.float32))
    np.testing.assert_allclose(random_folding_rate(np.array([[True, False]]), None, item_blocks, exclude), [1.0])


def test_integer_block_sets_read_as_booleans():
    """A dense 0/1 integer (users x blocks) matrix means the same as the boolean one."""
    item_blocks = np.array([0, 0, 0, 1, 1, 2])
    home = np.array([[1, 0, 0], [1, 1, 0]])
    np.testing.assert_allclose(random_folding_rate(home, None, item_blocks), [3 / 6, 1 / 6])
    np.testing.assert_allclose(folding_at_k(np.array([[0, 3], [3, 5]]), None, item_blocks, home), [0.5, 0.5])


def test_own_labels_leave_the_callers_block_sets_as_they_were():
    """The own label joins the home set of this call only: a dense boolean (users x blocks) matrix
    passed in is not written to, so the same matrix without labels still gives the unlabelled
    answer. (It was written to: the second call below returned 0.0, user 0 then at home in block 0.)"""
    item_blocks = np.array([0, 0, 1, 1])
    home = np.array([[False, True]])
    lists = np.array([[0, 2]])
    np.testing.assert_allclose(folding_at_k(lists, np.array([0]), item_blocks, home), [0.0])
    np.testing.assert_allclose(folding_at_k(lists, None, item_blocks, home), [0.5])
    np.testing.assert_allclose(random_folding_rate(home, np.array([0]), item_blocks), [0.0])
    assert score_folding(np.ones((1, 2)), np.ones((4, 2)), home, np.array([0]), item_blocks) == 0.0
    np.testing.assert_array_equal(home, [[False, True]])


# --------------------------------------------------------------------------- vectors as given
def test_score_folding_is_scale_free_dtype_free_and_takes_torch_parameters():
    """Cosines do not depend on vector length (short vectors too: 0.01 long), on float64 vs float32
    inputs, or on the vectors being torch parameters that require grad. The 2x2 case of
    test_folding's hand-computed score view: F = (1 / sqrt2) / 4."""
    users = np.array([[1.0, 0.0], [3.0, 3.0]])
    items = np.array([[2.0, 0.0], [-1.0, 1.0]], np.float32)
    home, blocks, expected = np.eye(2, dtype=bool), np.array([0, 1]), (1 / math.sqrt(2)) / 4
    assert score_folding(users * 0.01, items * 0.01, home, None, blocks) == pytest.approx(expected, rel=1e-6)
    assert score_folding(users, items, home, None, blocks) == pytest.approx(expected, rel=1e-6)  # float64 users
    params = torch.nn.Parameter(torch.from_numpy(users)), torch.nn.Parameter(torch.from_numpy(items))
    assert score_folding(*params, home, None, blocks) == pytest.approx(expected, rel=1e-6)


def test_neighbour_view_takes_torch_vectors():
    vecs = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]], requires_grad=True)
    assert neighbour_cross_block(vecs, np.array([0, 0, 1, 1]), 1) == 0.0
    assert neighbour_cross_block(vecs, np.array([0, 1, 0, 1]), 1) == 1.0


def test_neighbour_view_item_mask_does_not_bring_back_unknown_blocks():
    """Item 1 (unknown block) is in the `items` mask but still takes no part: item 0's nearest
    neighbour is then item 2 (same block), not item 1 (whose -1 would count as another block)."""
    vecs = np.array([[1.0, 0.0], [1.0, 0.01], [1.0, 0.05], [0.0, 1.0]], np.float32)
    blocks = np.array([0, -1, 0, 1])
    # centres 0, 2, 3: neighbours 2, 0, 2 -> only item 3's crosses: 1/3
    assert neighbour_cross_block(vecs, blocks, 1, items=np.ones(4, bool)) == pytest.approx(1 / 3)



def test_neighbour_view_samples_distinct_centres():
    """Ten items, one neighbour each: item 0 (block 1) sits apart, its neighbour is a block-0 item
    (share 1); items 1-9 (block 0) are each other's neighbours (share 0). Sampling 9 of the 10
    centres without replacement leaves item 0 in (1/9) or out (0), for every seed; a centre drawn
    twice would give 2/9 or more."""
    angles = np.r_[1.2, np.linspace(0.0, 0.08, 9)]
    vecs = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    blocks = np.r_[1, np.zeros(9, np.int64)]
    assert neighbour_cross_block(vecs, blocks, 1) == pytest.approx(0.1)
    for seed in range(20):
        got = neighbour_cross_block(vecs, blocks, 1, max_centres=9, seed=seed)
        assert got == 0.0 or got == pytest.approx(1 / 9), seed

# --------------------------------------------------------------------------- k-means
def _same_partition(labels: np.ndarray, planted: np.ndarray) -> bool:
    """True when the found labels split the points exactly as the planted ones (up to renaming)."""
    pairs = set(zip(labels.tolist(), planted.tolist(), strict=True))
    return len(pairs) == len(set(labels.tolist())) == len(set(planted.tolist()))


def test_kmeans_on_tiny_inputs():
    assert kmeans_labels(np.empty((0, 3), np.float32), 4).dtype == np.int64
    assert kmeans_labels(np.empty((0, 3), np.float32), 4).shape == (0,)
    np.testing.assert_array_equal(kmeans_labels(np.array([[1.0, 2.0]], np.float32), 4), [0])
    vecs = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    np.testing.assert_array_equal(kmeans_labels(vecs, 1), np.zeros(30))  # one cluster: everyone in it
    # all points one direction (exactly: every k-means++ weight is 0): no crash, one cluster in use
    same = np.tile(np.array([[0.0, 2.0, 0.0]], np.float32), (10, 1))
    for seed in range(3):
        assert len(set(kmeans_labels(same, 3, seed=seed).tolist())) == 1


def test_kmeanspp_seeds_one_centre_in_each_separated_cluster():
    """With a single Lloyd assignment (max_iter=1) the labels are the nearest seeds, so the planted
    partition comes out only if k-means++ put one seed in each of the 5 tight, orthogonal clusters,
    which it does whatever the seed (same-cluster points have ~0 weight)."""
    planted = np.repeat(np.arange(5), 40)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        vecs = (np.eye(8)[planted] + 0.01 * rng.standard_normal((200, 8))).astype(np.float32)
        labels = kmeans_labels(vecs, 5, seed=seed, n_init=1, max_iter=1)
        assert _same_partition(labels, planted), seed


def test_kmeanspp_weighs_by_distance_when_the_distances_are_small():
    """Nine points on one direction and one at cosine 0.5 (distance 0.5, the total weight): the odd
    point is the only one k-means++ can pick as the second seed, so one assignment separates it."""
    angle = np.pi / 3
    vecs = np.array([[1.0, 0.0]] * 9 + [[np.cos(angle), np.sin(angle)]], np.float32)
    planted = np.r_[np.zeros(9), 1]
    for seed in range(5):
        assert _same_partition(kmeans_labels(vecs, 2, seed=seed, n_init=1, max_iter=1), planted), seed


def test_kmeans_keeps_a_single_point_cluster():
    """A cluster of one point (its centre's sum has norm exactly 1) is not empty: the outlier on the
    third axis keeps its own label next to two clusters of 20."""
    rng = np.random.default_rng(3)
    planted = np.r_[np.zeros(20), np.ones(20), 2]
    vecs = (np.eye(3)[planted.astype(int)] + 0.05 * rng.standard_normal((41, 3))).astype(np.float32)
    vecs[40] = [0.0, 0.0, 1.0]
    for seed in range(3):
        assert _same_partition(kmeans_labels(vecs, 3, seed=seed), planted), seed



def _total_cosine(vecs: np.ndarray, labels: np.ndarray) -> float:
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    sums = np.zeros((labels.max() + 1, unit.shape[1]))
    np.add.at(sums, labels, unit)
    centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return float(np.sum(unit * centres[labels]))


def test_kmeans_restarts_keep_the_best_total_cosine():
    """The first of n_init restarts is the n_init=1 run (same seeded generator), so keeping the best
    restart never scores below it; on structureless points the restarts differ, and some seed's
    best beats its first."""
    vecs = np.random.default_rng(11).standard_normal((300, 8)).astype(np.float32)
    gains = []
    for seed in range(5):
        one = _total_cosine(vecs, kmeans_labels(vecs, 6, seed=seed, n_init=1))
        best = _total_cosine(vecs, kmeans_labels(vecs, 6, seed=seed, n_init=3))
        assert best >= one - 1e-3, seed
        gains.append(best - one)
    assert max(gains) > 0.1

# --------------------------------------------------------------------------- the report's fields
def _eval_set(n_users: int, n_items: int) -> EvalSet:
    """User u's history: items u and u + n_users (mod n_items); truth: item u + 1. User 0 has no
    truth, so the evaluated users are 1..n_users-1."""
    users = np.arange(n_users)
    history = sp.csr_matrix(
        (np.ones(2 * n_users, np.float32), (np.r_[users, users], np.r_[users, users + n_users] % n_items)),
        shape=(n_users, n_items),
    )
    truth = sp.csr_matrix((np.ones(n_users - 1, np.float32), (users[1:], users[1:] + 1)), shape=(n_users, n_items))
    return EvalSet(truth=truth, exclude=history)


def test_found_report_carries_its_settings_and_passes_seed_and_neighbours():
    """No block known: k-means labels on the trained items with the report's seed, neighbours
    counted with the report's `neighbours`; the same number by hand. Structureless vectors, so the
    clusters (and the number) depend on the seed: seeds 1 and 2 disagree."""
    eval_set = _eval_set(6, 40)
    vecs = np.random.default_rng(7).standard_normal((40, 4)).astype(np.float32)
    users = np.ones((eval_set.users.size, 4), np.float32)
    got = {}
    for seed in (1, 2):
        report = folding_report_factors(users, vecs, eval_set, None, k=5, neighbours=3, n_clusters=4, seed=seed)
        trained = np.bincount(sp.csr_matrix(eval_set.exclude).indices, minlength=40) > 0
        found = np.full(40, -1)
        found[trained] = kmeans_labels(vecs[trained], 4, seed=seed)
        assert report.neighbour_cross == pytest.approx(neighbour_cross_block(vecs, found, 3), abs=1e-12)
        assert (report.k, report.neighbours, report.n_clusters, report.blocks) == (5, 3, 4, "found")
        got[seed] = report.neighbour_cross
    assert got[1] != got[2]
    # torch item vectors take the same path to the same number
    as_torch = folding_report_factors(users, torch.from_numpy(vecs), eval_set, None, k=5, neighbours=3,
                                      n_clusters=4, seed=2)  # fmt: skip
    assert as_torch.neighbour_cross == pytest.approx(got[2], abs=1e-12)


def test_one_dimensional_vectors_found_report_keeps_its_settings():
    eval_set = _eval_set(4, 8)
    report = folding_report_factors(np.ones((3, 1), np.float32), np.ones((8, 1), np.float32), eval_set, None,
                                    k=4, neighbours=3, n_clusters=5)  # fmt: skip
    assert (report.k, report.neighbours, report.n_clusters) == (4, 3, 5)
    assert list(report.to_dict()) == ["neighbour_cross_cluster@3", "blocks"]


def test_known_blocks_with_one_dimensional_vectors_still_measure_folding():
    """Popularity-like (items, 1) vectors with known blocks: the ranking views apply (only the
    embedding view is not applicable). 4 users, 8 items: items 0-3 block 0, 4-7 block 1; scores rise
    with the item index, so every top-2 is the two highest unseen items."""
    eval_set = _eval_set(4, 8)  # evaluated users 1, 2, 3; user u saw items u and u + 4
    blocks = np.repeat([0, 1], 4)
    scores = np.arange(1, 9, dtype=np.float32)[:, None]
    report = folding_report_factors(np.ones((3, 1), np.float32), scores, eval_set, blocks, k=2, neighbours=3)
    assert report.blocks == "known" and math.isnan(report.neighbour_cross)
    # every user is at home in both blocks (an item of each in the history): nothing is foreign
    np.testing.assert_array_equal(report.users, [1, 2, 3])
    np.testing.assert_allclose(report.per_user, [0.0, 0.0, 0.0])


def test_a_catalogue_with_block_zero_only_counts_as_known_blocks():
    """Labels 0 and -1 only: block 0 is known (the report measures folding), it is not "no blocks"."""
    eval_set = _eval_set(4, 8)
    blocks = np.r_[np.zeros(4, np.int64), np.full(4, -1)]
    vecs = np.eye(2, dtype=np.float32)[np.r_[np.zeros(4, int), np.ones(4, int)]]
    report = folding_report_factors(np.ones((3, 2), np.float32), vecs, eval_set, blocks, k=2, neighbours=3)
    assert report.blocks == "known"
    # users 1-3 are at home in block 0 and every judged item is block 0: folding 0 over 3 users
    assert (report.folding, report.n_users) == (0.0, 3)


def test_a_report_whose_users_have_no_known_home_block_is_undefined():
    """Every history item of unknown block: no user has a home block, so folding, random and
    popularity are NaN over 0 users (not an error, not 0)."""
    eval_set = _eval_set(4, 10)  # histories cover items 0-7
    blocks = np.r_[np.full(9, -1), 0]  # item 9: block 0, in nobody's history
    report = folding_report_factors(np.ones((3, 2), np.float32), np.ones((10, 2), np.float32), eval_set, blocks,
                                    k=2, neighbours=3)  # fmt: skip
    assert report.n_users == 0
    assert math.isnan(report.folding) and math.isnan(report.random) and math.isnan(report.popularity)
    assert math.isnan(report.score_folding)


def test_report_on_a_split_takes_explicit_labels_and_settings_over_the_splits():
    """A split labelled with blocks [0]*6 + [1]*6 where every user trains in both halves shows no
    folding; explicit labels (items 0-3 block 0, 4-5 block 1, 6-11 unknown) are the ones used: each
    user (history u and u + 6) is at home in block 0 only, and a random list's foreign share is 2 of
    the 5 allowed judgeable items.
    Without any labels the found view runs with the given n_clusters. Defaults: k = 20, 10 neighbours."""
    users = np.arange(4)
    train = sp.csr_matrix((np.ones(8, np.float32), (np.r_[users, users], np.r_[users, users + 6])), shape=(4, 12))
    test = sp.csr_matrix((np.ones(4, np.float32), (users, users + 1)), shape=(4, 12))
    split = Split(protocol="random", train=train, test=test, item_blocks=np.repeat([0, 1], 6))
    vecs = np.random.default_rng(1).standard_normal((12, 3)).astype(np.float32)
    model = FactorModel.from_arrays(np.ones((4, 3), np.float32), vecs, name="fixed")
    assert folding_report(model, split, k=4).random == 0.0
    mine = np.r_[np.zeros(4, np.int64), 1, 1, np.full(6, -1)]
    report = folding_report(model, split, item_blocks=mine, k=4)
    assert report.blocks == "known" and report.n_users == 4
    assert report.random == pytest.approx(2 / 5, abs=1e-12)
    bare = Split(protocol="random", train=train, test=test)
    found = folding_report(model, bare, n_clusters=3, neighbours=2, seed=5)
    assert (found.blocks, found.n_clusters, found.neighbours) == ("found", 3, 2)
    trained = np.bincount(train.indices, minlength=12) > 0
    labels = np.full(12, -1)
    labels[trained] = kmeans_labels(vecs[trained], 3, seed=5)
    assert found.neighbour_cross == pytest.approx(neighbour_cross_block(vecs, labels, 2), abs=1e-12)
    assert list(folding_report(model, split).to_dict())[::4] == ["folding@20", "neighbour_cross_block@10"]



def test_report_passes_its_seed_to_the_clustering():
    """`folding_report` without blocks: the found view's number is the one from k-means with the
    report's seed (computed by hand); structureless vectors, so seeds 1 and 2 give different numbers."""
    n_items = 60
    vecs = np.random.default_rng(3).standard_normal((n_items, 4)).astype(np.float32)
    history = sp.csr_matrix((np.ones(3, np.float32), ([0, 1, 2], [0, 1, 2])), shape=(3, n_items))
    eval_set = EvalSet(truth=history, exclude=history)
    model = FactorModel.from_arrays(np.ones((3, 4), np.float32), vecs, name="fixed")
    got = {}
    for seed in (1, 2):
        report = folding_report(model, eval_set, neighbours=3, n_clusters=4, seed=seed, item_popularity=np.ones(n_items))
        by_hand = neighbour_cross_block(vecs, kmeans_labels(vecs, 4, seed=seed), 3)
        assert report.neighbour_cross == pytest.approx(by_hand, abs=1e-12)
        got[seed] = report.neighbour_cross
    assert got[1] != got[2]
