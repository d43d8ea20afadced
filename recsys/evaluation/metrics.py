"""Top-k ranking metrics as vectorised free functions over users (Cornac style).

Every per-user metric takes `(topk_items, truth, k)`: `topk_items` is (n, k') int64, best first,
padded with -1; `truth` is a CSR whose row i holds the relevant items of the user in row i of
`topk_items`. It returns one float64 per row. Hits are found for a block of users at once by
gathering `row * n_items + item` cells from a bitmap of `truth`, so there is no loop over users.

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


def _cut(hits: np.ndarray, k: int) -> np.ndarray:
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return hits[:, :k]


_DISCOUNTS_CACHE: dict[int, np.ndarray] = {}


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..k."""
    if k not in _DISCOUNTS_CACHE:
        _DISCOUNTS_CACHE[k] = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    return _DISCOUNTS_CACHE[k]


# ----------------------------------------------------------------------------- per-user metrics (from hits)
def _recall(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    return _cut(hits, k).sum(axis=1) / np.minimum(k, n_rel)


def _recall_raw(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    return _cut(hits, k).sum(axis=1) / n_rel


def _precision(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    return _cut(hits, k).sum(axis=1) / k


def _ndcg(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    cut = _cut(hits, k)
    disc = _discounts(k)
    dcg = cut @ disc[: cut.shape[1]]
    ideal_len = np.minimum(k, np.nan_to_num(n_rel, nan=1.0)).astype(np.int64)
    idcg = np.cumsum(disc)[ideal_len - 1]
    return dcg / idcg


def _map(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    cut = _cut(hits, k).astype(np.float64)
    precision_at_rank = np.cumsum(cut, axis=1) / np.arange(1, cut.shape[1] + 1)
    return (precision_at_rank * cut).sum(axis=1) / np.minimum(k, n_rel)


def _mrr(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    cut = _cut(hits, k)
    any_hit = cut.any(axis=1)
    first = np.argmax(cut, axis=1)
    return np.where(any_hit, 1.0 / (first + 1.0), 0.0)


def _hit_rate(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    return _cut(hits, k).any(axis=1).astype(np.float64)


_FROM_HITS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "recall": _recall,
    "recall_raw": _recall_raw,
    "precision": _precision,
    "ndcg": _ndcg,
    "map": _map,
    "mrr": _mrr,
    "hit_rate": _hit_rate,
}
PER_USER_METRICS: tuple[str, ...] = tuple(_FROM_HITS)
AGGREGATE_METRICS: tuple[str, ...] = ("coverage", "novelty", "arp")
ALL_METRICS: tuple[str, ...] = PER_USER_METRICS + AGGREGATE_METRICS


def _public(name: str) -> PerUserMetric:
    def metric(topk_items: np.ndarray, truth: sp.csr_matrix, k: int) -> np.ndarray:
        n_rel = _counts(truth)
        values = _FROM_HITS[name](hit_matrix(topk_items, truth), n_rel, k)
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


def popularity_share(item_popularity: np.ndarray) -> np.ndarray:
    """Laplace-smoothed share of training interactions per item, (pop + 1) / (sum + n_items).

    Smoothing keeps the novelty of never-seen items finite (-log2 of 0 would be infinite)."""
    pop = np.asarray(item_popularity, dtype=np.float64)
    return (pop + 1.0) / (pop.sum() + pop.size)


def _per_user_mean(values: np.ndarray, valid: np.ndarray) -> float:
    """Mean over users of each user's mean over their (non-padded) list; users weigh equally."""
    counts = valid.sum(axis=1)
    keep = counts > 0
    if not keep.any():
        return float("nan")
    return float(np.mean(np.where(valid, values, 0.0).sum(axis=1)[keep] / counts[keep]))


def novelty_at_k(topk_items: np.ndarray, k: int, item_popularity: np.ndarray) -> float:
    """Mean self-information -log2(popularity share) of recommended items (Zhou et al. 2010):
    higher means the lists reach further into the long tail."""
    cut = np.asarray(topk_items)[:, :k]
    valid = cut >= 0
    info = -np.log2(popularity_share(item_popularity))
    return _per_user_mean(info[np.where(valid, cut, 0)], valid)


def arp_at_k(topk_items: np.ndarray, k: int, item_popularity: np.ndarray) -> float:
    """Average recommendation popularity (Abdollahpouri et al. 2019): mean training popularity
    of the items in a list, averaged over users; lower means less popularity bias."""
    cut = np.asarray(topk_items)[:, :k]
    valid = cut >= 0
    pop = np.asarray(item_popularity, dtype=np.float64)
    return _per_user_mean(pop[np.where(valid, cut, 0)], valid)


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
        from recsys.config import ConfigError

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
) -> MetricResult:
    """Every per-user metric in `metrics` at every k in `ks`, plus coverage, novelty and ARP.

    Rows of `truth` without relevant items are dropped and counted in `n_users_skipped`; the
    aggregates are computed over the remaining (evaluated) users' lists. `users` labels the rows
    in `per_user` (defaults to 0..n-1).
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
    n_rel_all = np.diff(truth.indptr)
    keep = n_rel_all > 0
    if not keep.all():
        topk_items, truth, users = topk_items[keep], truth[keep], users[keep]
    hits = hit_matrix(topk_items, truth)
    n_rel = n_rel_all[keep].astype(np.float64)

    columns: dict[str, np.ndarray] = {USER_IDX: users}
    summary: dict[str, float] = {}
    for k in sorted(set(int(k) for k in ks)):
        for name in metrics:
            if name in _FROM_HITS:
                values = _FROM_HITS[name](hits, n_rel, k)
                columns[f"{name}@{k}"] = values
                summary[f"{name}@{k}"] = float(values.mean()) if values.size else float("nan")
        summary[f"coverage@{k}"] = coverage_at_k(topk_items, k, n_items)
        summary[f"novelty@{k}"] = novelty_at_k(topk_items, k, item_popularity)
        summary[f"arp@{k}"] = arp_at_k(topk_items, k, item_popularity)
    per_user = pl.DataFrame(columns)  # int64 user_idx and float64 metrics, no casts needed
    return MetricResult(
        per_user=per_user,
        summary=summary,
        n_users_evaluated=int(keep.sum()),
        n_users_skipped=int((~keep).sum()),
    )
