"""Top-k ranking metrics as vectorised free functions over users (Cornac style).

Every per-user metric takes `(topk_items, truth, k)`: `topk_items` is (n, k') int64, best first,
padded with -1; `truth` is a CSR whose row i holds the relevant items of the user in row i of
`topk_items`. It returns one float64 per row. Hits are found for a block of users at once by
gathering `row * n_items + item` cells from a bitmap of `truth`, so there is no loop over users.
`compute_metrics` finds the hits once at the longest list and reads every metric@k, for every k,
off running sums of that one hit matrix (`per_user_metric_columns`).

Two recall definitions are reported because the literature uses both:
- `recall@k`     = hits@k / min(k, |test|)  (Liang et al. 2018, "VAE for CF"; reaches 1.0 for a
  perfect ranking even when a user has more than k test items). implicit's `precision` is the
  pooled form of it: sum_u hits_u / sum_u min(k, |test_u|).
- `recall_raw@k` = hits@k / |test|          (the textbook recall; bounded by k/|test| < 1).

Rows with an empty truth row get NaN from the per-user functions; `compute_metrics` drops them
first and counts them (`n_users_skipped`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data.schema import USER_IDX
from recsys.evaluation.metric_names import AGGREGATE_METRICS, ALL_METRICS, PER_USER_METRICS  # noqa: F401

PerUserMetric = Callable[[np.ndarray, sp.csr_matrix, int], np.ndarray]


# ----------------------------------------------------------------------------- hit detection
_BITMAP_CELLS = 1 << 24
"""Users x items cells of the reusable membership bitmap (16 MB): bounds memory for any catalogue."""


def hit_matrix(topk_items: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """(n, k') bool: topk_items[i, j] is one of row i's relevant items (padding is never a hit).

    Membership is a lookup in a flat users x items bitmap covering a block of users at a time:
    set the block's truth cells, gather the top-k cells, clear the truth cells again. The cost is
    proportional to nnz(truth) + n * k (no sort, no per-user loop), memory to _BITMAP_CELLS."""
    topk_items = np.asarray(topk_items, dtype=np.int64)
    truth = sp.csr_matrix(truth)
    if topk_items.ndim != 2 or topk_items.shape[0] != truth.shape[0]:
        raise ValueError(f"top-k lists {topk_items.shape} and truth {truth.shape} must have one row per user")
    n_users, n_items = truth.shape
    valid = topk_items >= 0
    cells_of_lists = np.where(valid, topk_items, 0)
    hits = np.zeros(topk_items.shape, dtype=bool)
    if n_users == 0 or n_items == 0 or topk_items.shape[1] == 0:
        return hits
    block = max(1, min(n_users, _BITMAP_CELLS // n_items))
    bitmap = np.zeros(block * n_items, dtype=bool)
    indptr = truth.indptr
    for start in range(0, n_users, block):
        stop = min(start + block, n_users)
        local_rows = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(indptr[start : stop + 1]))
        truth_cells = local_rows * n_items + truth.indices[indptr[start] : indptr[stop]]
        bitmap[truth_cells] = True
        row_offsets = np.arange(stop - start, dtype=np.int64)[:, None] * n_items
        hits[start:stop] = bitmap[row_offsets + cells_of_lists[start:stop]]
        bitmap[truth_cells] = False
    return hits & valid


def _counts(truth: sp.csr_matrix) -> np.ndarray:
    """|test| per row as float (NaN where empty, so per-user metrics of such rows are NaN)."""
    n = np.diff(sp.csr_matrix(truth).indptr).astype(np.float64)
    n[n == 0] = np.nan
    return n


def _check_k(k: int) -> int:
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return int(k)


_DISCOUNTS_CACHE: dict[int, np.ndarray] = {}
_IDEAL_DCG_CACHE: dict[int, np.ndarray] = {}


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..k."""
    if k not in _DISCOUNTS_CACHE:
        _DISCOUNTS_CACHE[k] = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    return _DISCOUNTS_CACHE[k]


def _ideal_dcg(k: int) -> np.ndarray:
    """Ideal DCG of 1..k hits (entry j: j + 1 hits at the top): the ndcg normaliser by min(k, |test|)."""
    if k not in _IDEAL_DCG_CACHE:
        _IDEAL_DCG_CACHE[k] = np.cumsum(_discounts(k))
    return _IDEAL_DCG_CACHE[k]


# ----------------------------------------------------------------------------- per-user metrics (from hits)
_NEED_HIT_COUNTS = frozenset({"recall", "recall_raw", "precision", "hit_rate", "map"})


def per_user_metric_columns(
    hits: np.ndarray, n_rel: np.ndarray, ks: Sequence[int], metrics: Sequence[str]
) -> dict[str, np.ndarray]:
    """{"metric@k": per-user float64} for every per-user metric in `metrics` at every k in `ks`.

    One pass over the hit matrix at its full width serves every k: the running hit count, the
    first-hit rank and the average-precision terms are computed once, and each metric@k is read
    off their length-k prefix (a column of the running count, a prefix sum, a comparison), so
    asking for more ks costs (n x k) sums rather than a recomputation per metric and k. Every
    floating-point sum runs over the same elements in the same order as it would on the k-prefix
    alone, so the values equal those of computing each metric@k on its own, bit for bit (tested
    against a per-user reference in tests/evaluation/test_metrics.py).
    `n_rel` is |test| per row as float (NaN rows give NaN or garbage: callers drop or mask them).
    """
    hits = np.asarray(hits, dtype=bool)
    n_users, width = hits.shape
    wanted = [name for name in metrics if name in PER_USER_METRICS]
    ks = [_check_k(k) for k in ks]
    columns: dict[str, np.ndarray] = {}
    if not wanted:
        return columns
    zeros = np.zeros(n_users, dtype=np.int64)
    hit_counts = np.cumsum(hits, axis=1) if _NEED_HIT_COUNTS & set(wanted) else None
    ap_terms = None
    if "map" in wanted:  # precision at each hit rank (0 elsewhere): AP@k sums a prefix of it
        ap_terms = hit_counts / np.arange(1, width + 1) * hits
    first_hit = None
    if "mrr" in wanted:  # rank index of the first hit; `width` (never < k) where there is none
        first_hit = np.where(hits.any(axis=1), np.argmax(hits, axis=1), width) if width else zeros
    for k in ks:
        cut = min(k, width)
        hits_at_k = hit_counts[:, cut - 1] if hit_counts is not None and cut else zeros
        for name in wanted:
            if name == "recall":
                values = hits_at_k / np.minimum(k, n_rel)
            elif name == "recall_raw":
                values = hits_at_k / n_rel
            elif name == "precision":
                values = hits_at_k / k
            elif name == "hit_rate":
                values = (hits_at_k > 0).astype(np.float64)
            elif name == "ndcg":
                dcg = hits[:, :cut] @ _discounts(k)[:cut]
                ideal_len = np.minimum(k, np.nan_to_num(n_rel, nan=1.0)).astype(np.int64)
                values = dcg / _ideal_dcg(k)[ideal_len - 1]
            elif name == "map":
                values = ap_terms[:, :cut].sum(axis=1) / np.minimum(k, n_rel)
            else:  # mrr
                values = np.where(first_hit < cut, 1.0 / (first_hit + 1.0), 0.0)
            columns[f"{name}@{k}"] = values
    return columns


def _public(name: str) -> PerUserMetric:
    def metric(topk_items: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
        n_rel = _counts(truth)
        hits = hit_matrix(topk_items, truth)
        values = per_user_metric_columns(hits, n_rel, [k], [name])[f"{name}@{k}"]
        return np.where(np.isnan(n_rel), np.nan, values)

    return metric


def recall_at_k(topk_items: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """hits@k / min(k, |test|) (Liang et al. 2018): 1.0 means the top k are as good as possible."""
    return _public("recall")(topk_items, truth, k)


def recall_raw_at_k(topk_items: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """hits@k / |test|: textbook recall, which cannot reach 1 when |test| > k."""
    return _public("recall_raw")(topk_items, truth, k)


def precision_at_k(topk_items: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """hits@k / k (k as asked, even if the catalogue is smaller: a short list is not rewarded)."""
    return _public("precision")(topk_items, truth, k)


def ndcg_at_k(topk_items: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """Binary-relevance DCG@k (gain 1 / log2(rank + 1)) over the ideal DCG of min(k, |test|) hits."""
    return _public("ndcg")(topk_items, truth, k)


def map_at_k(topk_items: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """Average precision@k: sum over hit ranks r of precision@r, over min(k, |test|) (as implicit)."""
    return _public("map")(topk_items, truth, k)


def mrr_at_k(topk_items: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """1 / rank of the first hit within the top k, 0 when there is none."""
    return _public("mrr")(topk_items, truth, k)


def hit_rate_at_k(topk_items: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
    """1 when at least one relevant item is in the top k, else 0."""
    return _public("hit_rate")(topk_items, truth, k)


# ----------------------------------------------------------------------------- aggregate metrics
def coverage_at_k(topk_items: np.ndarray, k: int, n_items: int) -> float:
    """Catalogue coverage: share of all items that appear in at least one user's top k."""
    cut = np.asarray(topk_items)[:, :k]
    if n_items <= 0:
        return float("nan")
    return float(np.count_nonzero(np.bincount(cut[cut >= 0], minlength=n_items)) / n_items)


def self_information(item_popularity: np.ndarray, n_users: int) -> np.ndarray:
    """log2(n_users / k_i) per item (Zhou et al. 2010), k_i = the number of users who interacted
    with item i in training: the bits of surprise in meeting item i in a random user's history.

    An item no training user has (k_i = 0) counts as if one had (log2 n_users, the largest finite
    value): it is at least as novel as the rarest seen item, and the mean stays finite."""
    degree = np.maximum(np.asarray(item_popularity, dtype=np.float64), 1.0)
    return np.log2(max(int(n_users), 1) / degree)


def _per_user_mean(values: np.ndarray, valid: np.ndarray) -> float:
    """Mean over users of each user's mean over their (non-padded) list; users weigh equally."""
    counts = valid.sum(axis=1)
    keep = counts > 0
    if not keep.any():
        return float("nan")
    return float(np.mean(np.where(valid, values, 0.0).sum(axis=1)[keep] / counts[keep]))


def novelty_at_k(topk_items: np.ndarray, k: int, item_popularity: np.ndarray, n_users: int) -> float:
    """Novelty (Zhou et al. 2010, PNAS, "Solving the apparent diversity-accuracy dilemma"): the mean
    self-information log2(n_users / k_i) of the recommended items, k_i = item i's training users
    (`item_popularity`) among `n_users`. Higher means the lists reach further into the long tail;
    recommending an item every user has gives 0 bits.

    Zhou et al. average over all u * L recommended items; with padded (shorter) lists this is the
    mean over users of each list's mean, as for ARP, which is the same number when every list is full."""
    cut = np.asarray(topk_items)[:, :k]
    valid = cut >= 0
    info = self_information(item_popularity, n_users)
    return _per_user_mean(info[np.where(valid, cut, 0)], valid)


def arp_at_k(topk_items: np.ndarray, k: int, item_popularity: np.ndarray) -> float:
    """Average recommendation popularity (Abdollahpouri et al. 2019): mean training popularity
    of the items in a list, averaged over users; lower means less popularity bias."""
    cut = np.asarray(topk_items)[:, :k]
    valid = cut >= 0
    pop = np.asarray(item_popularity, dtype=np.float64)
    return _per_user_mean(pop[np.where(valid, cut, 0)], valid)


def _aggregate_summary(
    topk_items: np.ndarray, ks: Sequence[int], n_items: int, item_popularity: np.ndarray, n_users: int
) -> dict[str, float]:
    """coverage@k, novelty@k and arp@k for every k, with the item look-ups done once at full width.

    Same values as `coverage_at_k` / `novelty_at_k` / `arp_at_k` (each k reads a prefix of the
    same gathered arrays and sums it in the same order)."""
    valid_all = topk_items >= 0
    cells = np.where(valid_all, topk_items, 0)
    pop = np.asarray(item_popularity, dtype=np.float64)
    info_all = self_information(pop, n_users)[cells]
    pop_all = pop[cells]
    out: dict[str, float] = {}
    for k in ks:
        cut, valid = topk_items[:, :k], valid_all[:, :k]
        if n_items <= 0:
            out[f"coverage@{k}"] = float("nan")
        else:
            out[f"coverage@{k}"] = float(
                np.count_nonzero(np.bincount(cut[valid], minlength=n_items)) / n_items
            )
        out[f"novelty@{k}"] = _per_user_mean(info_all[:, :k], valid)
        out[f"arp@{k}"] = _per_user_mean(pop_all[:, :k], valid)
    return out


# ----------------------------------------------------------------------------- all at once
@dataclass(frozen=True)
class MetricResult:
    """per_user: user_idx + one Float64 column per "metric@k" (evaluated users only);
    summary: {"recall@20": mean, ..., "coverage@20": ..., "novelty@20": ..., "arp@20": ...}."""

    per_user: pl.DataFrame
    summary: dict[str, float]
    n_users_evaluated: int
    n_users_skipped: int


def check_metric_names(metrics: Sequence[str]) -> None:
    """Unknown names are a config mistake; say which and what exists."""
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        from recsys.errors import ConfigError

        raise ConfigError(f"evaluation.metrics: unknown metric(s) {unknown}; known: {list(ALL_METRICS)}")


def compute_metrics(
    topk_items: np.ndarray,
    truth: sp.csr_matrix,
    ks: Sequence[int],
    metrics: Sequence[str],
    *,
    item_popularity: np.ndarray,
    n_items: int,
    users: np.ndarray | None = None,
    n_users: int | None = None,
) -> MetricResult:
    """Every per-user metric in `metrics` at every k in `ks`, plus coverage, novelty and ARP.

    Rows of `truth` without relevant items are dropped and counted in `n_users_skipped`; the
    aggregates are computed over the remaining (evaluated) users' lists. `users` labels the rows
    in `per_user` (defaults to 0..n-1). `item_popularity` counts each item's training users among
    `n_users` (novelty's u; default: the rows of `truth`, i.e. every user when truth is the
    full-vocab matrix; pass it when `truth` holds only the evaluated users' rows). The evaluator
    passes every user of the split, users without a training row included (strong generalisation's
    held-out users), not only those k_i counts among.
    """
    check_metric_names(metrics)
    topk_items = np.asarray(topk_items, dtype=np.int64)
    truth = sp.csr_matrix(truth)
    if topk_items.shape[0] != truth.shape[0]:
        raise ValueError(f"top-k lists have {topk_items.shape[0]} rows but truth has {truth.shape[0]}")
    if np.asarray(item_popularity).shape != (n_items,):
        raise ValueError(
            f"item_popularity must have one entry per item ({n_items}), got {np.shape(item_popularity)}"
        )
    users = np.arange(truth.shape[0], dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    n_users = truth.shape[0] if n_users is None else int(n_users)
    n_rel_all = np.diff(truth.indptr)
    keep = n_rel_all > 0
    if not keep.all():
        topk_items, truth, users = topk_items[keep], truth[keep], users[keep]
    hits = hit_matrix(topk_items, truth)
    n_rel = n_rel_all[keep].astype(np.float64)

    distinct_ks = sorted(set(int(k) for k in ks))
    per_user_values = per_user_metric_columns(hits, n_rel, distinct_ks, metrics)
    aggregates = _aggregate_summary(topk_items, distinct_ks, n_items, item_popularity, n_users)
    columns: dict[str, np.ndarray] = {USER_IDX: users}
    summary: dict[str, float] = {}
    for k in distinct_ks:  # summary order: each k's per-user metrics (as asked), then its aggregates
        for name in dict.fromkeys(m for m in metrics if m in PER_USER_METRICS):
            values = per_user_values[f"{name}@{k}"]
            columns[f"{name}@{k}"] = values
            summary[f"{name}@{k}"] = float(values.mean()) if values.size else float("nan")
        for name in AGGREGATE_METRICS:
            summary[f"{name}@{k}"] = aggregates[f"{name}@{k}"]
    per_user = pl.DataFrame(columns)  # int64 user_idx and float64 metrics, no casts needed
    return MetricResult(
        per_user=per_user,
        summary=summary,
        n_users_evaluated=int(keep.sum()),
        n_users_skipped=int((~keep).sum()),
    )
