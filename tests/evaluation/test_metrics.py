"""Metrics against hand computations, edge cases, and implicit's ranking_metrics_at_k on ML-100K."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recsys.config import ConfigError
from recsys.evaluation import metrics as metrics_module
from recsys.evaluation.metrics import (
    arp_at_k,
    compute_metrics,
    coverage_at_k,
    hit_matrix,
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    novelty_at_k,
    precision_at_k,
    recall_at_k,
    recall_raw_at_k,
)
from recsys.evaluation.ranking import topk

N_ITEMS = 10
# Four users, lists of length 5 (best first, -1 = padding):
TOPK = np.array(
    [
        [3, 1, 7, 2, 9],  # truth {1, 2, 5}: hits at ranks 2 and 4
        [4, -1, -1, -1, -1],  # truth {4}: only one rankable item, a hit at rank 1
        [0, 1, 2, 3, 4],  # truth {}: skipped and counted
        [0, 1, 2, 3, 4],  # truth {8}: no hit
    ],
    dtype=np.int64,
)
TRUTH = sp.csr_matrix((np.ones(5, dtype=np.float32), ([0, 0, 0, 1, 3], [1, 2, 5, 4, 8])), shape=(4, N_ITEMS))
POPULARITY = np.array([9, 5, 0, 3, 2, 0, 0, 1, 0, 0], dtype=np.float64)  # sum 20

L3, L5 = math.log2(3), math.log2(5)
# user 0 at k=5: DCG = 1/log2(3) + 1/log2(5) = 1.06161; IDCG over min(5, 3) = 3 ranks = 1 + 1/log2(3) + 1/2 = 2.13093
U0_NDCG5 = (1 / L3 + 1 / L5) / (1 + 1 / L3 + 0.5)  # 0.49819
# user 0 at k=2: DCG = 1/log2(3) = 0.63093; IDCG over 2 ranks = 1 + 0.63093
U0_NDCG2 = (1 / L3) / (1 + 1 / L3)  # 0.38685


def test_hit_matrix_ignores_padding_and_other_rows() -> None:
    hits = hit_matrix(TOPK, TRUTH)
    np.testing.assert_array_equal(
        hits.astype(int),
        [[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    )
    # item 4 is relevant for user 1 only; user 2 and 3 rank it without a hit
    assert not hits[2:, 4].any()


def test_per_user_functions_at_k5_by_hand() -> None:
    rows = [0, 1, 3]
    nan_row = 2
    # user 0: 2 hits, |test| = 3; user 1: 1 hit, |test| = 1; user 3: 0 hits
    expected = {
        recall_at_k: [2 / 3, 1 / 1, 0.0],  # hits / min(5, |test|)
        recall_raw_at_k: [2 / 3, 1 / 1, 0.0],  # hits / |test|
        precision_at_k: [2 / 5, 1 / 5, 0.0],  # hits / k, padding counts as a miss
        ndcg_at_k: [U0_NDCG5, 1.0, 0.0],
        map_at_k: [(1 / 2 + 2 / 4) / 3, 1.0, 0.0],  # precision@2 + precision@4, over min(5, 3)
        mrr_at_k: [1 / 2, 1.0, 0.0],
    }
    for fn, values in expected.items():
        got = fn(TOPK, TRUTH, 5)
        np.testing.assert_allclose(got[rows], values, err_msg=fn.__name__)
        assert np.isnan(got[nan_row]), fn.__name__


def test_two_recall_definitions_differ_when_test_exceeds_k() -> None:
    # user 0 at k=2: one hit; Liang et al. normalise by min(2, 3) = 2, textbook recall by |test| = 3
    assert recall_at_k(TOPK, TRUTH, 2)[0] == pytest.approx(1 / 2)
    assert recall_raw_at_k(TOPK, TRUTH, 2)[0] == pytest.approx(1 / 3)


def test_compute_metrics_per_user_summary_and_aggregates() -> None:
    result = compute_metrics(
        TOPK, TRUTH, [2, 5], ["recall", "precision", "ndcg", "map", "hit_rate"],
        item_popularity=POPULARITY, n_items=N_ITEMS, users=np.array([10, 11, 12, 13]), n_users=12,
    )  # fmt: skip
    assert result.n_users_evaluated == 3 and result.n_users_skipped == 1
    frame = result.per_user
    assert frame["user_idx"].to_list() == [10, 11, 13]
    assert frame.columns == [
        "user_idx", "recall@2", "precision@2", "ndcg@2", "map@2", "hit_rate@2",
        "recall@5", "precision@5", "ndcg@5", "map@5", "hit_rate@5",
    ]  # fmt: skip
    # k = 2: user 0 lists [3, 1] -> 1 hit at rank 2; user 1 [4, -1] -> hit at rank 1; user 3 none
    np.testing.assert_allclose(frame["recall@2"].to_numpy(), [1 / 2, 1.0, 0.0])
    np.testing.assert_allclose(frame["precision@2"].to_numpy(), [1 / 2, 1 / 2, 0.0])
    np.testing.assert_allclose(frame["ndcg@2"].to_numpy(), [U0_NDCG2, 1.0, 0.0])
    np.testing.assert_allclose(frame["map@2"].to_numpy(), [(1 / 2) / 2, 1.0, 0.0])
    np.testing.assert_allclose(frame["hit_rate@2"].to_numpy(), [1.0, 1.0, 0.0])
    summary = result.summary
    assert summary["recall@5"] == pytest.approx((2 / 3 + 1) / 3)
    assert summary["ndcg@5"] == pytest.approx((U0_NDCG5 + 1) / 3)
    # coverage over evaluated users: k=2 -> {3, 1, 4, 0} = 4 of 10; k=5 -> {3, 1, 7, 2, 9, 4, 0} = 7 of 10
    assert summary["coverage@2"] == pytest.approx(0.4)
    assert summary["coverage@5"] == pytest.approx(0.7)
    # novelty (Zhou et al. 2010) = mean over each list of log2(n_users / k_i), k_i = the item's
    # training users, here among 12 users. k=2: user 0 items 3, 1 (k_i 3, 5) -> (2 + 1.26303) / 2;
    # user 1 item 4 (2) -> 2.58496; user 3 items 0, 1 (9, 5) -> (0.41504 + 1.26303) / 2
    novelty2 = np.mean(
        [
            (math.log2(12 / 3) + math.log2(12 / 5)) / 2,
            math.log2(12 / 2),
            (math.log2(12 / 9) + math.log2(12 / 5)) / 2,
        ]
    )
    assert summary["novelty@2"] == pytest.approx(novelty2, rel=1e-12)  # 1.68517
    # k=5 adds items nobody trained on (k_i = 0: counted as one user, log2 12 bits): user 0 [3, 1, 7, 2, 9]
    # (k_i 3, 5, 1, 0, 0); user 1 [4]; user 3 [0, 1, 2, 3, 4] (9, 5, 0, 3, 2)
    novelty5 = np.mean(
        [
            (math.log2(12 / 3) + math.log2(12 / 5) + 3 * math.log2(12)) / 5,
            math.log2(12 / 2),
            (math.log2(12 / 9) + math.log2(12 / 5) + math.log2(12) + math.log2(12 / 3) + math.log2(12 / 2))
            / 5,
        ]
    )
    assert summary["novelty@5"] == pytest.approx(novelty5, rel=1e-12)  # 2.45272
    # ARP@2: user 0 (3 + 5) / 2 = 4; user 1: 2; user 3 (9 + 5) / 2 = 7 -> 13 / 3
    assert summary["arp@2"] == pytest.approx(13 / 3)


def test_k_larger_than_catalogue_and_unknown_metric() -> None:
    items = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    top, _ = topk(np.array([[1.0]], dtype=np.float32), items, 10)  # only 3 columns come back: [2, 1, 0]
    truth = sp.csr_matrix(np.array([[1.0, 0.0, 0.0]], dtype=np.float32))
    result = compute_metrics(
        top, truth, [10], ["recall", "precision", "ndcg"], item_popularity=np.zeros(3), n_items=3
    )
    # the hit is at rank 3: recall = 1 / min(10, 1); precision = 1 / 10 (k as asked); ndcg = (1/log2 4) / 1
    assert result.summary["recall@10"] == pytest.approx(1.0)
    assert result.summary["precision@10"] == pytest.approx(0.1)
    assert result.summary["ndcg@10"] == pytest.approx(0.5)
    assert result.summary["coverage@10"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="unknown metric"):
        compute_metrics(top, truth, [10], ["recal"], item_popularity=np.zeros(3), n_items=3)



def test_a_misspelt_metric_in_the_config_is_refused_with_the_config() -> None:
    """`--set 'evaluation.metrics=["recall", "ndgc"]'` passed the config; every model then failed
    after its training (exit 1). Refused when the config is read, naming the closest metric."""
    from recsys.config import load_config

    with pytest.raises(ConfigError, match=r"evaluation\.metrics: .*unknown metric 'ndgc' \(did you mean 'ndcg'\?\)"):
        load_config(None, ['evaluation.metrics=["recall", "ndgc", "coverage"]'])
    assert load_config(None, ['evaluation.metrics=["recall", "ndcg", "coverage"]']).evaluation.metrics[1] == "ndcg"


def test_beyond_accuracy_metrics_on_a_one_item_catalogue_and_an_empty_one() -> None:
    """One item, recommended once in a list padded with -1: coverage is the whole catalogue, novelty
    and ARP are that item's values (the padding is read nowhere); no catalogue has no coverage."""
    lists = np.array([[0, -1], [-1, -1]])
    assert coverage_at_k(lists, 2, 1) == 1.0
    assert novelty_at_k(lists, 2, np.array([3]), 4) == pytest.approx(math.log2(4 / 3))
    assert arp_at_k(lists, 2, np.array([3])) == 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nan by definition, not by a 0 / 0 that warns the user
        assert math.isnan(coverage_at_k(np.empty((2, 0), dtype=np.int64), 2, 0))


# ----------------------------------------------------------------------------- implicit cross-check
def _ml100k_split(ml100k_dir: Path) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    frame = pl.read_csv(ml100k_dir / "ml-100k.inter", separator="\t")
    frame = frame.rename({c: c.split(":")[0] for c in frame.columns})
    users = frame["user_id"].cast(pl.Int64).rank("dense").to_numpy() - 1
    items = frame["item_id"].cast(pl.Int64).rank("dense").to_numpy() - 1
    shape = (int(users.max()) + 1, int(items.max()) + 1)
    test_mask = np.random.default_rng(0).random(len(users)) < 0.2
    ones = np.ones(len(users), dtype=np.float32)
    train = sp.csr_matrix((ones[~test_mask], (users[~test_mask], items[~test_mask])), shape=shape)
    test = sp.csr_matrix((ones[test_mask], (users[test_mask], items[test_mask])), shape=shape)
    return train, test


def test_matches_implicit_ranking_metrics_on_ml100k(ml100k_dir: Path) -> None:
    """implicit 0.7.3 (evaluation.pyx): per user with test items, hits over its top K (liked items
    filtered); "precision" = sum_u hits_u / sum_u min(K, |test_u|) (pooled, i.e. our recall@K
    weighted by min(K, |test_u|)); "map" = mean_u AP_u / min(K, |test_u|) (= our map@K);
    "ndcg" = mean_u DCG_u / IDCG(min(K, |test_u|)) (= our ndcg@K)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.evaluation import ranking_metrics_at_k
    from threadpoolctl import threadpool_limits

    train, test = _ml100k_split(ml100k_dir)
    with threadpool_limits(1, "blas"):  # implicit warns (and slows down) with a multi-threaded OpenBLAS
        als = AlternatingLeastSquares(
            factors=16, iterations=3, regularization=0.05, random_state=0, num_threads=1
        )
        als.fit(train, show_progress=False)
    k = 10
    theirs = ranking_metrics_at_k(als, train, test, K=k, show_progress=False)

    top, _ = topk(als.user_factors, als.item_factors, k, exclude=train)
    ours = compute_metrics(
        top,
        test,
        [k],
        ["recall", "ndcg", "map"],
        item_popularity=np.ones(train.shape[1]),
        n_items=train.shape[1],
    )
    assert ours.n_users_evaluated == int((np.diff(test.indptr) > 0).sum()) > 900
    assert ours.summary[f"map@{k}"] == pytest.approx(theirs["map"], rel=1e-5)
    assert ours.summary[f"ndcg@{k}"] == pytest.approx(theirs["ndcg"], rel=1e-5)
    n_rel = np.diff(test.indptr)[np.diff(test.indptr) > 0]
    weights = np.minimum(k, n_rel)
    pooled = float(np.sum(ours.per_user[f"recall@{k}"].to_numpy() * weights) / weights.sum())
    assert pooled == pytest.approx(theirs["precision"], rel=1e-5)
    assert theirs["precision"] > 0.05  # a real model, so the comparison is not between zeros


# ----------------------------------------------------------------------------- one-pass engine vs per-user loop
def _reference_per_user(items: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Textbook definitions, one user at a time, in plain Python (no shared prefix sums)."""
    top = items[:k]
    hits = [item >= 0 and item in relevant for item in top]
    n_hits, n_rel = sum(hits), len(relevant)
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(k, n_rel)))
    hit_ranks = [rank for rank, hit in enumerate(hits) if hit]
    return {
        "recall": n_hits / min(k, n_rel),
        "recall_raw": n_hits / n_rel,
        "precision": n_hits / k,
        "ndcg": sum(1 / math.log2(rank + 2) for rank in hit_ranks) / ideal,
        "map": sum(sum(hits[: rank + 1]) / (rank + 1) for rank in hit_ranks) / min(k, n_rel),
        "mrr": 1 / (hit_ranks[0] + 1) if hit_ranks else 0.0,
        "hit_rate": float(bool(hit_ranks)),
    }


def _random_lists_and_truth(seed: int) -> tuple[np.ndarray, sp.csr_matrix]:
    """60 users x 40 items, lists of 25 distinct items (some padded), truth of 0..30 items per user
    drawn to overlap the lists, so hits, |test| > k, padding and empty rows all occur."""
    rng = np.random.default_rng(seed)
    n_users, n_items, width = 60, 40, 25
    lists = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :width].astype(np.int64)
    short = rng.random(n_users) < 0.2
    lists[short, 15:] = -1  # users with fewer rankable items than the list width
    sizes = rng.integers(0, 31, size=n_users)
    sizes[:3] = [0, 30, 1]
    truth = np.zeros((n_users, n_items), dtype=np.float32)
    for user, size in enumerate(sizes):
        truth[user, rng.choice(n_items, size=size, replace=False)] = 1.0
    return lists, sp.csr_matrix(truth)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_pass_metrics_equal_a_per_user_reference_for_every_metric_and_k(seed: int) -> None:
    lists, truth = _random_lists_and_truth(seed)
    ks = [1, 3, 10, 25, 40]  # 40 > list width: the metric still divides by k / min(k, |test|)
    popularity = np.random.default_rng(seed).integers(0, 50, size=truth.shape[1]).astype(np.float64)
    metrics = ["recall", "recall_raw", "precision", "ndcg", "map", "mrr", "hit_rate", "coverage", "novelty"]
    result = compute_metrics(
        lists, truth, ks, metrics + ["arp"], item_popularity=popularity, n_items=truth.shape[1], n_users=50
    )
    evaluated = [u for u in range(truth.shape[0]) if truth[u].nnz > 0]
    assert result.per_user["user_idx"].to_list() == evaluated
    assert result.n_users_skipped == truth.shape[0] - len(evaluated) >= 1
    info = np.log2(50 / np.maximum(popularity, 1))
    for k in ks:
        expected = [
            _reference_per_user(lists[u].tolist(), set(truth[u].indices.tolist()), k) for u in evaluated
        ]
        for name in metrics[:7]:
            want = [row[name] for row in expected]
            got = result.per_user[f"{name}@{k}"].to_numpy()
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=f"{name}@{k}")
            assert result.summary[f"{name}@{k}"] == pytest.approx(np.mean(want), rel=1e-12)
            # the stand-alone function agrees, with NaN for the users without truth
            standalone = {
                "recall": recall_at_k, "recall_raw": recall_raw_at_k, "precision": precision_at_k,
                "ndcg": ndcg_at_k, "map": map_at_k, "mrr": mrr_at_k, "hit_rate": hit_rate_at_k,
            }[name](lists, truth, k)  # fmt: skip
            np.testing.assert_array_equal(standalone[evaluated], got)
            assert np.isnan(np.delete(standalone, evaluated)).all()
        shown = [[i for i in lists[u, :k].tolist() if i >= 0] for u in evaluated]
        assert result.summary[f"coverage@{k}"] == pytest.approx(len(set().union(*shown)) / truth.shape[1])
        assert result.summary[f"novelty@{k}"] == pytest.approx(np.mean([info[s].mean() for s in shown]))
        assert result.summary[f"arp@{k}"] == pytest.approx(np.mean([popularity[s].mean() for s in shown]))
        # the stand-alone aggregate functions give the same numbers on the evaluated users' lists
        kept = lists[evaluated]
        assert coverage_at_k(kept, k, truth.shape[1]) == result.summary[f"coverage@{k}"]
        assert novelty_at_k(kept, k, popularity, 50) == pytest.approx(
            result.summary[f"novelty@{k}"], rel=1e-12
        )
        assert arp_at_k(kept, k, popularity) == pytest.approx(result.summary[f"arp@{k}"], rel=1e-12)


def test_hit_matrix_in_many_bitmap_blocks_matches_a_dense_lookup(monkeypatch) -> None:
    """The bitmap covers a block of users at a time (2 here, for 7 users): every block's truth cells
    are set, read and cleared again, so no block sees another's items."""
    monkeypatch.setattr(metrics_module, "_BITMAP_CELLS", 12)  # 12 // 5 items = 2 users per block
    rng = np.random.default_rng(3)
    truth = sp.csr_matrix(rng.random((7, 5)) < 0.4)
    lists = rng.integers(-1, 5, size=(7, 4))
    expected = (truth.toarray()[np.arange(7)[:, None], np.maximum(lists, 0)]) & (lists >= 0)
    np.testing.assert_array_equal(hit_matrix(lists, truth), expected)
    assert expected.any() and not expected.all()


def test_metric_inputs_that_do_not_fit_are_refused_with_their_shapes() -> None:
    truth = sp.csr_matrix(np.eye(3, 4))
    rows = re.escape("top-k lists (2, 3) and truth (3, 4) must have one row per user")
    with pytest.raises(ValueError, match=f"^{rows}$"):
        hit_matrix(np.zeros((2, 3), dtype=np.int64), truth)
    pop = np.ones(4)
    with pytest.raises(ValueError, match="^top-k lists have 2 rows but truth has 3$"):
        compute_metrics(np.zeros((2, 3)), truth, [2], ["recall"], item_popularity=pop, n_items=4)
    popularity = re.escape("item_popularity must have one entry per item (4), got (3,)")
    with pytest.raises(ValueError, match=f"^{popularity}$"):
        compute_metrics(np.zeros((3, 3)), truth, [2], ["recall"], item_popularity=np.ones(3), n_items=4)
    with pytest.raises(ValueError, match="^k must be positive, got 0$"):
        compute_metrics(np.zeros((3, 3)), truth, [0], ["recall"], item_popularity=pop, n_items=4)


def test_compute_metrics_on_a_one_item_catalogue_and_with_nobody_to_evaluate() -> None:
    lists = np.array([[0, -1]])
    one = {"item_popularity": np.array([1]), "n_items": 1}
    result = compute_metrics(lists, sp.csr_matrix(np.ones((1, 1))), [2], ["recall"], **one)
    assert result.summary["recall@2"] == 1.0 and result.summary["coverage@2"] == 1.0
    np.testing.assert_array_equal(hit_matrix(lists, sp.csr_matrix(np.ones((1, 1)))), [[True, False]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nan because nobody is evaluated, not a mean of nothing that warns
        nobody = compute_metrics(lists, sp.csr_matrix((1, 1)), [2], ["recall"], **one)
    assert nobody.n_users_evaluated == 0 and math.isnan(nobody.summary["recall@2"])
    assert math.isnan(nobody.summary["novelty@2"]) and math.isnan(nobody.summary["arp@2"])


def test_novelty_counts_the_rows_of_truth_as_users_by_default() -> None:
    """Three users (rows), six items (columns): the default user count is 3, not 6."""
    truth = sp.csr_matrix(np.eye(3, 6))
    lists = np.array([[0, 1], [1, 2], [2, 3]])
    pop = np.array([1, 1, 2, 3, 0, 0])
    result = compute_metrics(lists, truth, [2], ["recall"], item_popularity=pop, n_items=6)
    assert result.summary["novelty@2"] == pytest.approx(novelty_at_k(lists, 2, pop, 3))


def test_degenerate_catalogues_and_user_counts() -> None:
    """No items at all (lists of padding only), a single user (an item everyone has is 0 bits), and
    user labels given as int32 still come back as the int64 user_idx column."""
    np.testing.assert_array_equal(hit_matrix(np.full((2, 1), -1), sp.csr_matrix((2, 0))), [[False], [False]])
    assert novelty_at_k(np.array([[0]]), 1, np.array([1]), 1) == 0.0
    assert mrr_at_k(np.zeros((1, 0), dtype=np.int64), sp.csr_matrix(np.ones((1, 3))), 1).tolist() == [0.0]
    truth = sp.csr_matrix(np.eye(2))
    result = compute_metrics(
        np.array([[0], [1]]), truth, [1], ["recall"], item_popularity=np.ones(2), n_items=2,
        users=np.array([7, 9], dtype=np.int32),
    )  # fmt: skip
    assert result.per_user["user_idx"].dtype == pl.Int64 and result.per_user["user_idx"].to_list() == [7, 9]
