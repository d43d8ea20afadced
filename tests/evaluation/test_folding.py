"""Folding diagnostic on hand-built cases where the right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data.split import EvalSet, Split
from recsys.evaluation.folding import (
    FoldingReport,
    folding_at_k,
    folding_report,
    folding_report_factors,
    kmeans_labels,
    neighbour_cross_block,
    popularity_topk,
    random_folding_rate,
    score_folding,
    user_block_sets,
)
from recsys.models.factors import FactorModel

# --------------------------------------------------------------------------- a block-disjoint toy set
# 2 blocks; items 0..5 are block 0, items 6..11 block 1; users 0..3 block 0, users 4..7 block 1.
# User j of block b trains on items 6b + {j, j+1} and is tested on item 6b + j + 2.
ITEM_BLOCKS = np.repeat([0, 1], 6)
USER_BLOCKS = np.repeat([0, 1], 4)


def toy_split() -> Split:
    users = np.arange(8)
    block, j = USER_BLOCKS, users % 4
    train_rows = np.repeat(users, 2)
    train_cols = np.stack([6 * block + j, 6 * block + j + 1], axis=1).ravel()
    train = sp.csr_matrix((np.ones(16, np.float32), (train_rows, train_cols)), shape=(8, 12))
    test = sp.csr_matrix((np.ones(8, np.float32), (users, 6 * block + j + 2)), shape=(8, 12))
    return Split(
        protocol="random",
        train=train,
        test=test,
        user_blocks=USER_BLOCKS.copy(),
        item_blocks=ITEM_BLOCKS.copy(),
    )


SEPARATED_USERS = np.eye(2, dtype=np.float32)[USER_BLOCKS]
SEPARATED_ITEMS = np.eye(2, dtype=np.float32)[ITEM_BLOCKS]
MIXED_USERS = np.ones((8, 2), dtype=np.float32)
MIXED_ITEMS = np.ones((12, 2), dtype=np.float32)


def FixedFactors(users: np.ndarray, items: np.ndarray) -> FactorModel:  # noqa: N802 - reads like the class it was
    """Fixed vectors behind the model protocol; fold-in = sum of the history's item vectors."""
    return FactorModel.from_arrays(users, items, name="fixed")


# --------------------------------------------------------------------------- block sets
def test_user_block_sets_union_of_history_blocks_and_own_label():
    history = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]], np.float32))
    item_blocks = np.array([0, -1, 1, 2])
    sets = user_block_sets(history, item_blocks, user_blocks=np.array([-1, 0, 2, -1]))
    assert sets.dtype == bool
    np.testing.assert_array_equal(
        sets.toarray(),
        [[1, 0, 0], [1, 1, 1], [0, 0, 1], [0, 0, 0]],  # user 3 only touched an item of unknown block
    )


# --------------------------------------------------------------------------- ranking view
def test_folding_at_k_counts_foreign_items_ignoring_padding_and_unknown_blocks():
    item_blocks = np.array([0, 0, 1, 1, 2, -1])
    home = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=bool)
    lists = np.array(
        [
            [0, 2, 4, -1],  # home {0}: 2 of 3 foreign; the pad is ignored
            [2, 1, 4, 5],  # home {0,1}: item 4 foreign, item 5 unknown -> 1 of 3
            [4, -1, -1, -1],  # home {2}: 0 of 1
            [0, 1, 2, 3],  # no home block: undefined
        ]
    )
    got = folding_at_k(lists, None, item_blocks, sp.csr_matrix(home), chunk_size=3)
    np.testing.assert_allclose(got[:3], [2 / 3, 1 / 3, 0.0])
    assert math.isnan(got[3])
    # the own block label joins the home set: user 0 also at home in block 1 -> only item 4 foreign
    own = np.array([1, -1, -1, 2])
    got = folding_at_k(lists, own, item_blocks, home)
    np.testing.assert_allclose(got, [1 / 3, 1 / 3, 0.0, 1.0])  # user 3 home {2}: all foreign


def test_random_rate_closed_form_by_hand():
    item_blocks = np.array([0, 0, 0, 1, 1, 2, -1])
    home = np.array([[1, 0, 0], [1, 1, 0]], dtype=bool)
    exclude = sp.csr_matrix((np.ones(2, np.float32), ([0, 1], [0, 5])), shape=(2, 7))
    got = random_folding_rate(home, None, item_blocks, exclude)
    # user 0: allowed judgeable items 1,2,3,4,5 -> foreign 3,4,5 = 3/5
    # user 1: allowed judgeable items 0..4 -> none foreign (item 5 in block 2 is excluded)
    np.testing.assert_allclose(got, [3 / 5, 0.0])
    np.testing.assert_allclose(random_folding_rate(home, None, item_blocks), [3 / 6, 1 / 6])


def test_random_rate_matches_simulated_random_recommender():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 40, 30, 5
    item_blocks = rng.integers(0, 4, n_items)
    history = sp.random(n_users, n_items, density=0.1, random_state=1, format="csr", dtype=np.float32)
    history.data[:] = 1
    sets = user_block_sets(history, item_blocks, user_blocks=rng.integers(0, 4, n_users))
    expected = random_folding_rate(sets, None, item_blocks, history)
    # random scores with the evaluator's masking, many draws: the mean share converges to the closed form
    draws = []
    for seed in range(300):
        scores = np.random.default_rng(seed).random((n_users, n_items))
        scores[history.toarray() > 0] = -np.inf
        draws.append(folding_at_k(np.argsort(-scores, axis=1)[:, :k], None, item_blocks, sets))
    np.testing.assert_allclose(np.mean(draws, axis=0), expected, atol=0.06)


def test_popularity_reference_uses_popularity_order_and_exclusions():
    item_blocks = np.array([0, 0, 1, 1])
    popularity = np.array([1, 2, 10, 9])
    exclude = sp.csr_matrix((np.ones(1, np.float32), ([1], [2])), shape=(2, 4))
    lists = popularity_topk(popularity, 2, k=2, exclude=exclude)
    np.testing.assert_array_equal(lists, [[2, 3], [3, 1]])
    home = np.array([[1, 0], [0, 1]], dtype=bool)
    np.testing.assert_allclose(folding_at_k(lists, None, item_blocks, home), [1.0, 0.5])


# --------------------------------------------------------------------------- score view
def test_score_folding_on_2x2_toy_vectors_by_hand():
    users = np.array([[1.0, 0.0], [3.0, 3.0]], np.float32)  # blocks 0, 1 (norms differ on purpose)
    items = np.array([[2.0, 0.0], [-1.0, 1.0]], np.float32)  # blocks 0, 1
    home = np.eye(2, dtype=bool)
    # cross pairs: (u0, i1): cos = -1/sqrt2 -> 0; (u1, i0): cos = 1/sqrt2. m = n = 2.
    got = score_folding(users, items, home, None, np.array([0, 1]), chunk_size=1)
    assert got == pytest.approx((1 / math.sqrt(2)) / 4, rel=1e-6)


def test_score_folding_extremes_and_skipped_users():
    home = np.array([[1, 0], [0, 1], [0, 0]], dtype=bool)  # user 2 has no known block: skipped
    item_blocks = np.array([0, 1, 1, -1])
    separated = score_folding(np.eye(2)[[0, 1, 0]], np.eye(2)[[0, 1, 1, 0]], home, None, item_blocks)
    collapsed = score_folding(np.ones((3, 2)), np.ones((4, 2)), home, None, item_blocks)
    assert separated == 0.0
    # all cosines 1: cross pairs u0 x {i1, i2} + u1 x {i0} = 3 of m*n = 2*3 pairs
    assert collapsed == pytest.approx(3 / 6)


# --------------------------------------------------------------------------- embedding view
def planted_items(
    n_blocks: int, per_block: int, spread: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Items around orthogonal block centres; spread = noise scale relative to the centre."""
    rng = np.random.default_rng(seed)
    blocks = np.repeat(np.arange(n_blocks), per_block)
    centres = np.eye(16)[:n_blocks] * 5.0
    vecs = centres[blocks] + spread * rng.standard_normal((blocks.size, 16))
    return vecs.astype(np.float32), blocks


def test_neighbour_view_separated_vs_collapsed():
    separated, blocks = planted_items(3, 100, spread=0.3)
    assert neighbour_cross_block(separated, blocks, 10, chunk_size=64) == 0.0
    # collapsed: one shared direction, blocks indistinguishable -> neighbours drawn at random,
    # so the other-block share approaches 200 / 299
    rng = np.random.default_rng(1)
    collapsed = (np.ones(16) * 5 + rng.standard_normal((300, 16))).astype(np.float32)
    assert neighbour_cross_block(collapsed, blocks, 10) == pytest.approx(200 / 299, abs=0.05)


def test_neighbour_view_samples_centres_on_large_catalogues():
    rng = np.random.default_rng(4)
    blocks = np.repeat(np.arange(3), 100)
    collapsed = (np.ones(16) * 5 + rng.standard_normal((300, 16))).astype(np.float32)
    full = neighbour_cross_block(collapsed, blocks, 10)
    sampled = neighbour_cross_block(collapsed, blocks, 10, max_centres=120, seed=1)
    assert sampled != full and sampled == pytest.approx(full, abs=0.08)
    assert sampled == neighbour_cross_block(collapsed, blocks, 10, max_centres=120, seed=1)
    separated, planted = planted_items(3, 100, spread=0.3)
    assert neighbour_cross_block(separated, planted, 10, max_centres=50) == 0.0


def test_neighbour_view_respects_unknown_blocks_and_item_mask():
    vecs = np.array([[1, 0], [1, 0.01], [0, 1], [1, 0.02]], np.float32)
    # item 3 (the nearest neighbour of items 0 and 1) is masked out: 0 <-> 1 are each other's neighbour
    assert neighbour_cross_block(
        vecs, np.array([0, 0, 1, 1]), 1, items=np.array([1, 1, 1, 0])
    ) == pytest.approx(1 / 3)
    assert neighbour_cross_block(vecs, np.array([0, 0, 1, -1]), 1) == pytest.approx(1 / 3)


def test_kmeans_recovers_planted_clusters_deterministically():
    vecs, blocks = planted_items(4, 50, spread=0.5, seed=3)
    labels = kmeans_labels(vecs, 4, seed=7)
    # each planted block maps to exactly one found label, and the labels are distinct
    mapping = {int(b): set(labels[blocks == b].tolist()) for b in range(4)}
    assert all(len(found) == 1 for found in mapping.values())
    assert len({next(iter(found)) for found in mapping.values()}) == 4
    np.testing.assert_array_equal(labels, kmeans_labels(vecs, 4, seed=7))


def _total_cosine(vecs: np.ndarray, labels: np.ndarray) -> float:
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    sums = np.zeros((labels.max() + 1, unit.shape[1]))
    np.add.at(sums, labels, unit)
    centres = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return float(np.sum(unit * centres[labels]))


def test_kmeans_tolerance_stops_early_at_almost_the_settled_objective():
    """Structureless vectors are k-means' slow case; stopping once <= 1% of points move must keep
    the total cosine within 1% of running until no point moves (tolerance 0)."""
    vecs = np.random.default_rng(5).standard_normal((2000, 16)).astype(np.float32)
    early, settled = kmeans_labels(vecs, 8, n_init=1), kmeans_labels(vecs, 8, n_init=1, tolerance=0.0)
    assert not np.array_equal(early, settled)  # the tolerance did stop before settling
    assert _total_cosine(vecs, early) >= 0.99 * _total_cosine(vecs, settled)


# --------------------------------------------------------------------------- the report
def test_report_separated_model_has_no_folding():
    split = toy_split()
    report = folding_report(FixedFactors(SEPARATED_USERS, SEPARATED_ITEMS), split, k=3, neighbours=3)
    assert report.blocks == "known" and report.n_users == 8
    assert report.folding == 0.0
    # every user: 2 seen items excluded from 12 -> 6 foreign of 10 allowed
    assert report.random == pytest.approx(0.6)
    assert report.score_folding == 0.0
    assert report.neighbour_cross == 0.0
    assert list(report.to_dict()) == [
        "folding@3",
        "random@3",
        "popularity@3",
        "score_folding",
        "neighbour_cross_block@3",
    ]


def test_report_mixed_model_folds_at_the_random_rate_when_lists_cover_the_catalogue():
    split = toy_split()
    # with k = n_items every allowed item is listed, so any recommender's share is the random rate
    report = folding_report(FixedFactors(MIXED_USERS, MIXED_ITEMS), split, k=12, neighbours=3)
    assert report.folding == pytest.approx(report.random) == pytest.approx(0.6)
    # all cosines 1: each user has 6 of 12 items in the other block
    assert report.score_folding == pytest.approx(0.5)
    assert report.neighbour_cross > 0.4
    # a top-3 list from tied scores takes the lowest allowed indices: block 0 for everyone,
    # so block-0 users see no folding and block-1 users see only folding
    mixed3 = folding_report(FixedFactors(MIXED_USERS, MIXED_ITEMS), split, k=3)
    np.testing.assert_array_equal(mixed3.per_user, [0, 0, 0, 0, 1, 1, 1, 1])


def test_report_popularity_reference_on_toy_split():
    split = toy_split()
    # block 1 items made far more popular: popularity recommends block 1 to everyone
    popularity = np.r_[np.zeros(6), np.arange(10, 16)]
    report = folding_report(
        FixedFactors(SEPARATED_USERS, SEPARATED_ITEMS),
        split.test_set(),
        ITEM_BLOCKS,
        USER_BLOCKS,
        k=3,
        item_popularity=popularity,
    )
    assert report.popularity == pytest.approx(0.5)  # block 0 users: all foreign; block 1: none
    assert report.to_dict()["popularity@3"] == pytest.approx(0.5)


def test_one_dimensional_item_vectors_have_no_embedding_view():
    """Popularity's (n_items, 1) vectors all point one way under cosine: an item's neighbours are an
    arbitrary tie, so the view is not applicable (nan, the run table's "-"), with known blocks or
    found ones, where it used to print a number (0.000 on ML-100K) after an all-tied search."""
    _, blocks = planted_items(3, 20, spread=0.3, seed=5)
    n_items = blocks.size
    counts = np.arange(n_items, 0, -1, dtype=np.float32)[:, None]
    assert math.isnan(neighbour_cross_block(counts, blocks, 10))
    history = sp.csr_matrix((np.ones(n_items, np.float32), (np.arange(n_items) % 6, np.arange(n_items))), shape=(6, n_items))
    eval_set = EvalSet(truth=history, exclude=history)
    report = folding_report_factors(np.ones((6, 1), np.float32), counts, eval_set, None, n_clusters=3)
    assert report.blocks == "found" and math.isnan(report.neighbour_cross)
    two_dims = np.hstack([counts, counts[::-1]])  # two directions: the view applies again
    assert not math.isnan(neighbour_cross_block(two_dims, blocks, 10))


def test_report_falls_back_to_found_clusters_without_blocks():
    vecs, blocks = planted_items(3, 20, spread=0.3, seed=5)
    n_items = vecs.shape[0]
    users = np.arange(6)
    history = sp.csr_matrix(
        (np.ones(n_items, np.float32), (np.arange(n_items) % 6, np.arange(n_items))), shape=(6, n_items)
    )
    truth = sp.csr_matrix((np.ones(6, np.float32), (users, users)), shape=(6, n_items))
    eval_set = EvalSet(truth=truth, exclude=history)
    report = folding_report_factors(
        np.ones((6, 16), np.float32), vecs, eval_set, np.full(n_items, -1), k=5, neighbours=10, n_clusters=3
    )
    assert isinstance(report, FoldingReport) and report.blocks == "found"
    assert report.to_dict() == {"neighbour_cross_cluster@10": 0.0, "blocks": "found"}
    # collapsed vectors on the same path give clusters that neighbours cross freely
    rng = np.random.default_rng(2)
    collapsed = (np.ones(16) * 5 + rng.standard_normal((n_items, 16))).astype(np.float32)
    folded = folding_report_factors(np.ones((6, 16), np.float32), collapsed, eval_set, None, n_clusters=3)
    assert folded.to_dict()["neighbour_cross_cluster@10"] > 0.1


# --------------------------------------------------------------------------- wiring (mutation survivors)
def test_report_popularity_reference_masks_each_users_history():
    """The popularity reference ranks with the evaluator's exclusions: block-1 items are the most
    popular, so at k = 5 a block-1 user (2 of its block's 6 items seen) gets its 4 unseen block-1
    items and the most popular block-0 item (1/5 foreign); block-0 users get block-1 items only (1).
    Unmasked, block-1 users would be shown their own seen items and score 0: 0.5 instead of 0.6."""
    split = toy_split()
    popularity = np.r_[np.arange(1, 7), np.arange(10, 16)]
    report = folding_report(FixedFactors(SEPARATED_USERS, SEPARATED_ITEMS), split.test_set(), ITEM_BLOCKS,
                            USER_BLOCKS, k=5, item_popularity=popularity)  # fmt: skip
    assert report.popularity == pytest.approx((4 * 1.0 + 4 * 0.2) / 8)


def test_report_embedding_view_leaves_out_items_never_trained():
    """Item 5 (block 0) has no training interaction and a vector pointing at block 1 (an untrained
    vector is noise): counted, it would make block-1 items' nearest neighbour cross-block."""
    items = SEPARATED_ITEMS.copy()
    items[5] = [0.0, 1.0]
    popularity = np.r_[np.ones(5), 0.0, np.ones(6)]
    report = folding_report(FixedFactors(SEPARATED_USERS, items), toy_split().test_set(), ITEM_BLOCKS, USER_BLOCKS,
                            k=3, neighbours=3, item_popularity=popularity)  # fmt: skip
    assert report.neighbour_cross == 0.0


def test_a_row_without_a_home_block_is_undefined_in_any_chunk():
    """NaN, not "all foreign", for a user with no known home block, also when it shares a chunk
    with users that have one (the chunk-wide test of an earlier shape passed on one-row chunks)."""
    item_blocks = np.array([0, 0, 1, 1])
    home = np.array([[1, 0], [0, 0]], dtype=bool)
    lists = np.array([[0, 2], [1, 3]])
    got = folding_at_k(lists, None, item_blocks, sp.csr_matrix(home))
    assert got[0] == pytest.approx(0.5) and math.isnan(got[1])
    random = random_folding_rate(home, None, item_blocks)
    assert random[0] == pytest.approx(0.5) and math.isnan(random[1])


def test_block_sets_narrower_than_the_item_labels_are_padded():
    """A (users x blocks) matrix made before a block that only items carry (label 2 here) still
    judges: block 2 is nobody's home."""
    item_blocks = np.array([0, 0, 1, 1, 2, -1])
    home = sp.csr_matrix(np.array([[1, 0], [0, 1]], dtype=bool))
    lists = np.array([[0, 2, 4], [2, 4, 5]])
    np.testing.assert_allclose(folding_at_k(lists, None, item_blocks, home), [2 / 3, 1 / 2])
    np.testing.assert_allclose(random_folding_rate(home, None, item_blocks), [3 / 5, 3 / 5])


def test_report_on_a_split_ranks_the_popularity_reference_by_training_counts():
    """Given a Split, popularity is the training count (validation interactions are history, not
    popularity): users 4 and 5 both validate on items 10 and 11, which would make item 10 the most
    popular (3) and show it to every block-0 user. By training counts the top items tie at 2
    (items 1-3, 7-9; lowest index first): block-0 users get a home item, block-1 users item 1."""
    split = toy_split()
    validation = sp.csr_matrix((np.ones(4, np.float32), ([4, 4, 5, 5], [10, 11, 10, 11])), shape=(8, 12))
    split = Split(protocol="random", train=split.train, validation=validation, test=split.test,
                  user_blocks=USER_BLOCKS.copy(), item_blocks=ITEM_BLOCKS.copy())  # fmt: skip
    report = folding_report(FixedFactors(SEPARATED_USERS, SEPARATED_ITEMS), split, k=1)
    assert report.popularity == pytest.approx(0.5)


# --------------------------------------------------------------------------- inputs that do not fit
# Each refusal names the argument at fault and both counts that disagree, so a caller sees which of
# their arrays is off and by how much. (Mutation testing found every message unchecked.)
def _sizes(pattern: str):
    """`pytest.raises(ValueError, match=...)` for a message with these words in this order."""
    return pytest.raises(ValueError, match=pattern)


def test_block_bookkeeping_refuses_labels_that_do_not_fit_the_history():
    history = sp.csr_matrix(np.ones((3, 4), np.float32))
    with _sizes(r"history has 4 items but item_blocks has 5 labels"):
        user_block_sets(history, np.zeros(5, np.int64))
    with _sizes(r"user_blocks has 2 labels for 3 history rows"):
        user_block_sets(history, np.zeros(4, np.int64), user_blocks=np.zeros(2, np.int64))


def test_ranking_views_refuse_lists_and_block_sets_that_do_not_fit():
    item_blocks = np.array([0, 0, 1, 1])
    home = np.zeros((2, 6), dtype=bool)  # 2 rows (6 block columns, so a row count is not read as a width)
    with _sizes(r"topk_items must be \(users, k\), got shape \(4,\)"):
        folding_at_k(np.arange(4), None, item_blocks, home)
    with _sizes(r"user_item_blocks has 2 rows for 3 lists"):
        folding_at_k(np.zeros((3, 5), np.int64), None, item_blocks, home)
    with _sizes(r"exclude has shape \(3, 4\); expected \(rows, items\) = \(2, 4\)"):
        random_folding_rate(home, None, item_blocks, sp.csr_matrix((3, 4), dtype=np.float32))
    with _sizes(r"user_vecs has 3 rows but user_item_blocks has 2$"):
        score_folding(np.ones((3, 5), np.float32), np.ones((4, 5), np.float32), home, None, item_blocks)


def test_a_report_refuses_vectors_and_labels_that_do_not_fit_the_eval_set():
    split = toy_split()  # 8 users, 12 items
    eval_set = split.test_set()
    n_users = eval_set.users.size
    users, items = SEPARATED_USERS[eval_set.users], SEPARATED_ITEMS

    def report(**overrides):
        args = dict(user_vecs=users, item_vecs=items, eval_set=eval_set, item_blocks=ITEM_BLOCKS,
                    user_blocks=USER_BLOCKS, k=3, neighbours=3)  # fmt: skip
        return folding_report_factors(**{**args, **overrides})

    with _sizes(r"item_popularity has 13 entries for 12 items"):
        report(item_popularity=np.ones(13))
    with _sizes(rf"user_vecs has {n_users + 1} rows for {n_users} evaluated users"):
        report(user_vecs=np.ones((n_users + 1, 3), np.float32))
    with _sizes(r"item_blocks has 11 labels for 12 items"):
        report(item_blocks=ITEM_BLOCKS[:11])
    with _sizes(r"user_blocks has 7 labels for 8 users"):
        report(user_blocks=USER_BLOCKS[:7])
    with _sizes(r"eval set has 12 items but the model knows 10"):
        folding_report(FixedFactors(SEPARATED_USERS, SEPARATED_ITEMS[:10]), eval_set, ITEM_BLOCKS, USER_BLOCKS)
    # without user labels a user's home blocks are those of their history: the same report here
    plain = report(user_blocks=None)
    assert (plain.folding, plain.random, plain.n_users) == (0.0, pytest.approx(0.6), 8)


def test_score_folding_with_one_judged_item_or_user_and_with_none():
    """One user (home block 0) and one item of known block (1) out of two: the single cross pair's
    cosine, (1, 0) . (1, 1) / sqrt(2), over m * n = 1. No item of known block: undefined (nan)."""
    user, home = np.array([[1.0, 0.0]], np.float32), np.array([[True, False]])
    items = np.array([[1.0, 1.0], [5.0, 5.0]], np.float32)
    assert score_folding(user, items, home, None, np.array([1, -1])) == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    assert math.isnan(score_folding(user, items, home, None, np.array([-1, -1])))


def test_neighbour_view_of_two_items_in_two_blocks():
    """The smallest catalogue with a neighbour: each item's only neighbour is the other, in the other block."""
    assert neighbour_cross_block(np.eye(2, dtype=np.float32), np.array([0, 1]), 10) == 1.0
    assert neighbour_cross_block(np.eye(2, dtype=np.float32), np.array([1, 1]), 10) == 0.0
    assert math.isnan(neighbour_cross_block(np.eye(2, dtype=np.float32), np.array([1, -1]), 10))  # one item: none


def test_a_users_own_block_label_makes_that_block_home_in_the_report():
    """User 0 trained on block 0 only but is labelled block 1 (a user at home in a block they have
    not touched yet): block 1's items are not foreign to them. Their vector points at block 1, so
    their top 3 are block 1 items: all foreign without the label, none with it. A Split's own
    `user_blocks` are the default."""
    users = SEPARATED_USERS.copy()
    users[0] = [0.0, 1.0]
    model = FixedFactors(users, SEPARATED_ITEMS)
    split = toy_split()
    plain = folding_report(model, split, k=3, neighbours=3)
    assert plain.per_user[0] == 1.0 and plain.folding == pytest.approx(1 / 8)
    labels = USER_BLOCKS.copy()
    labels[0] = 1
    labelled = folding_report(model, split, user_blocks=labels, k=3, neighbours=3)
    assert labelled.per_user[0] == 0.0 and labelled.folding == 0.0
    relabelled = toy_split()
    relabelled.user_blocks[:] = labels
    assert folding_report(model, relabelled, k=3, neighbours=3).per_user[0] == 0.0
