"""`evaluate()`: full-corpus top-k for every evaluated user, per-user metrics, bootstrap intervals.

One entry point for every model (all retrieve by dot product) and one for raw factors (the MLflow
pyfunc check and anything that only has embeddings). Full-corpus ranking is the default; sampled
metrics (rank the test items among N random negatives) exist only behind
`EvaluationConfig.sampled_negatives` and warn, because they can reorder models (Krichene & Rendle
2020, "On Sampled Metrics for Item Recommendation").
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from rich.table import Table

from recsys.data.schema import USER_IDX
from recsys.data.split import EvalSet
from recsys.errors import RecsysWarning
from recsys.evaluation.metrics import PER_USER_METRICS, check_metric_names, compute_metrics
from recsys.evaluation.ranking import (
    RankedLists,
    _topk_rows,
    model_user_vectors,
    resolve_device,
    topk,
    torch_threads,
)
from recsys.evaluation.stats import bootstrap_ci_columns
from recsys.models.base import Recommender
from recsys.sections import EvaluationConfig

log = logging.getLogger(__name__)


class SampledMetricsWarning(RecsysWarning):
    """`evaluation.sampled_negatives` is set: the metrics are sampled, not full-corpus."""


SAMPLED_WARNING = (
    "sampled metrics (test items ranked among {n} random negatives) are biased estimates of the "
    "full-corpus metrics and can change which model looks best (Krichene & Rendle 2020); "
    "use them only for comparison with published sampled numbers"
)


@dataclass(frozen=True)
class EvaluationResult:
    """What one evaluation produced.

    summary:  mean of every per-user "metric@k" plus coverage@k, novelty@k and arp@k.
    ci:       (lo, hi) bootstrap interval over users for every per-user metric.
    per_user: user_idx + one column per per-user metric (evaluated users only).
    topk:     the ranked lists at max(ks) (full corpus, or among sampled candidates).
    """

    summary: dict[str, float]
    ci: dict[str, tuple[float, float]]
    per_user: pl.DataFrame
    n_users_evaluated: int
    n_users_skipped: int
    seconds: float
    topk: RankedLists
    sampled_negatives: int | None = None


def evaluate(
    model: Recommender,
    eval_set: EvalSet,
    cfg: EvaluationConfig,
    *,
    item_popularity: np.ndarray,
    device: str | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate a fitted model on `eval_set` (fold-in users through `model.fold_in`).

    `item_popularity` is the per-item training count (novelty and ARP are measured against it).
    `progress=True` shows a rich progress bar over user chunks.
    """
    start = time.perf_counter()
    users, vectors = model_user_vectors(model, eval_set)
    return _evaluate_vectors(
        vectors, model.item_factors, users, eval_set, cfg, item_popularity, device, progress, start
    )


def evaluate_factors(
    user_vecs: np.ndarray,
    item_vecs: np.ndarray,
    eval_set: EvalSet,
    cfg: EvaluationConfig,
    *,
    item_popularity: np.ndarray,
    device: str | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate raw factors: `user_vecs` has one row per user index of `eval_set` (for fold-in
    protocols, vectors already computed from `eval_set.fold_in`)."""
    start = time.perf_counter()
    if user_vecs.shape[0] != eval_set.truth.shape[0]:
        raise ValueError(
            f"user_vecs has {user_vecs.shape[0]} rows but the eval set has {eval_set.truth.shape[0]} users"
        )
    if item_vecs.shape[0] != eval_set.truth.shape[1]:
        raise ValueError(
            f"item_vecs has {item_vecs.shape[0]} rows but the eval set has {eval_set.truth.shape[1]} items"
        )
    users = eval_set.users
    vectors = np.asarray(user_vecs)[users]
    return _evaluate_vectors(
        vectors, item_vecs, users, eval_set, cfg, item_popularity, device, progress, start
    )


def _evaluate_vectors(
    vectors: np.ndarray,
    item_vecs: np.ndarray,
    users: np.ndarray,
    eval_set: EvalSet,
    cfg: EvaluationConfig,
    item_popularity: np.ndarray,
    device: str | None,
    progress: bool,
    start: float,
) -> EvaluationResult:
    check_metric_names(cfg.metrics)
    n_items = eval_set.truth.shape[1]
    if eval_set.exclude.shape != eval_set.truth.shape:
        raise ValueError(
            f"eval set exclude {eval_set.exclude.shape} and truth {eval_set.truth.shape} differ in shape"
        )
    truth = sp.csr_matrix(eval_set.truth)[users]
    exclude = sp.csr_matrix(eval_set.exclude)[users]
    k = max(cfg.ks)
    with _progress_bar(progress, len(users), "ranking") as advance:
        if cfg.sampled_negatives is not None:
            message = SAMPLED_WARNING.format(n=cfg.sampled_negatives)
            warnings.warn(message, SampledMetricsWarning, stacklevel=3)  # not logged too: printed once
            items, scores = sampled_topk(
                vectors, item_vecs, truth, exclude, k, cfg.sampled_negatives,
                seed=0, chunk_size=cfg.chunk_size, device=device, threads=cfg.threads, on_chunk=advance,
            )  # fmt: skip
        else:
            items, scores = _chunked_topk(
                vectors, item_vecs, k, exclude, cfg, device, advance, eval_set.masked_items
            )
    ranked = RankedLists(users=users, items=items, scores=scores)
    result = compute_metrics(
        items, truth, cfg.ks, cfg.metrics, item_popularity=item_popularity, n_items=n_items, users=users,
        n_users=eval_set.truth.shape[0],
    )  # fmt: skip
    metric_columns = [c for c in result.per_user.columns if c != USER_IDX]
    ci: dict[str, tuple[float, float]] = {}
    if metric_columns and cfg.bootstrap_samples == 0:  # no resampling asked: no intervals, no matrix copy
        ci = {name: (float("nan"), float("nan")) for name in metric_columns}
    elif metric_columns:
        _, lo, hi = bootstrap_ci_columns(
            result.per_user.select(metric_columns).to_numpy(),
            n_samples=cfg.bootstrap_samples,
            confidence=cfg.confidence,
            seed=0,
        )
        ci = {name: (float(low), float(high)) for name, low, high in zip(metric_columns, lo, hi, strict=True)}
    return EvaluationResult(
        summary=result.summary,
        ci=ci,
        per_user=result.per_user,
        n_users_evaluated=result.n_users_evaluated,
        n_users_skipped=result.n_users_skipped + eval_set.n_users_without_truth,
        seconds=time.perf_counter() - start,
        topk=ranked,
        sampled_negatives=cfg.sampled_negatives,
    )


def _chunked_topk(
    vectors: np.ndarray,
    item_vecs: np.ndarray,
    k: int,
    exclude: sp.csr_matrix,
    cfg: EvaluationConfig,
    device: str | None,
    advance: Callable[[int], None],
    masked_items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """topk in super-chunks so the progress bar moves; each call still chunks by cfg.chunk_size."""
    n = vectors.shape[0]
    step = cfg.chunk_size * 4
    parts = []
    for begin in range(0, max(n, 1), step):
        end = min(begin + step, n)
        parts.append(
            topk(
                vectors[begin:end],
                item_vecs,
                k,
                exclude=exclude[begin:end],
                chunk_size=cfg.chunk_size,
                device=device,
                threads=cfg.threads,
                masked_items=masked_items,
            )  # fmt: skip
        )
        advance(end - begin)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@contextmanager
def _progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _n: None
        return
    from recsys.bars import shared_bar

    with shared_bar(label, total) as (bar, task):  # one display with the other models' bars
        yield lambda n: bar.advance(task, n)


# ----------------------------------------------------------------------------- sampled (biased)
def sampled_topk(
    vectors: np.ndarray,
    item_vecs: np.ndarray,
    truth: sp.csr_matrix,
    exclude: sp.csr_matrix,
    k: int,
    n_negatives: int,
    *,
    seed: int = 0,
    chunk_size: int = 2048,
    device: str | None = None,
    threads: int | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k among each user's test items plus `n_negatives` uniformly drawn items (with
    replacement; draws that hit a test or excluded item are dropped, not redrawn).

    Returns (items, scores) in the same format as `topk` (real item indices, padded with -1), so
    the usual metrics apply; k' = min(k, max candidates). Biased: see SAMPLED_WARNING."""
    if n_negatives <= 0:
        raise ValueError(f"sampled_negatives must be positive, got {n_negatives}")
    n_users, n_items = truth.shape
    rng = np.random.default_rng(seed)
    lens = np.diff(truth.indptr)
    width = int(lens.max(initial=0))
    positives = np.full((n_users, width), -1, dtype=np.int64)
    rows = np.repeat(np.arange(n_users), lens)
    positives[rows, np.arange(truth.nnz) - np.repeat(truth.indptr[:-1], lens)] = truth.indices
    negatives = rng.integers(0, n_items, size=(n_users, n_negatives), dtype=np.int64)
    seen = (truth + exclude).tocsr()
    seen.data[:] = 1
    from recsys.evaluation.metrics import hit_matrix

    negatives[hit_matrix(negatives, seen)] = -1
    candidates = np.concatenate([positives, negatives], axis=1)
    kk = min(k, candidates.shape[1])
    dev = resolve_device(device)
    items_t = torch.as_tensor(np.asarray(item_vecs), dtype=torch.float32, device=dev)
    out_items = np.empty((n_users, kk), dtype=np.int64)
    out_scores = np.empty((n_users, kk), dtype=np.float32)
    with torch_threads(threads), torch.inference_mode():
        for begin in range(0, n_users, chunk_size):
            end = min(begin + chunk_size, n_users)
            cand = torch.from_numpy(candidates[begin:end]).to(dev)
            user = torch.as_tensor(np.asarray(vectors[begin:end]), dtype=torch.float32, device=dev)
            scores = torch.einsum("bcd,bd->bc", items_t[cand.clamp(min=0)], user)
            scores[cand < 0] = float("-inf")
            pos, vals = _topk_rows(scores, kk)
            chosen = np.take_along_axis(candidates[begin:end], pos, axis=1)
            chosen[np.isneginf(vals)] = -1
            out_items[begin:end] = chosen
            out_scores[begin:end] = vals
            if on_chunk is not None:
                on_chunk(end - begin)
    return out_items, out_scores


# ----------------------------------------------------------------------------- reporting
def format_table(
    results: dict[str, EvaluationResult], metrics: list[str], wide: bool = False, width: int | None = None
) -> Table:
    """One row per model, one column per "metric@k": mean ±half-width of the interval (aggregates:
    the value), or mean [low, high] when `wide`. Fits `width` columns (see recsys.tables): the
    users column, then the later metrics, are left out when it must."""
    from recsys.tables import STACKED, add_name_column, add_value_column, fit_width, interval_cell

    def build(hidden: set[str]) -> Table:
        stacked = STACKED in hidden
        shown = [m for m in metrics if m not in hidden]
        table = Table(title="evaluation", show_lines=False)
        add_name_column(table, "model", list(results), style="bold")
        for name in shown:
            add_value_column(table, name, wide)
        if "users" not in hidden:
            # never narrower than its header: wrappable, rich shrank it to its padding (a blank
            # strip at ~120 columns) instead of it being left out and named
            table.add_column("users", justify="right", min_width=len("users"))
        for model_name, result in results.items():
            cells = []
            for name in shown:
                value = result.summary.get(name)
                if value is None:
                    cells.append("—")
                elif name in result.ci and np.isfinite(result.ci[name][0]):
                    cells.append(interval_cell(value, *result.ci[name], wide=wide, stacked=stacked))
                else:
                    cells.append(interval_cell(value))
            table.add_row(model_name, *cells, *([] if "users" in hidden else [str(result.n_users_evaluated)]))
        return table

    return fit_width(build, ["users", *reversed(metrics[1:])], None if wide else width)


__all__ = [
    "PER_USER_METRICS",
    "EvaluationResult",
    "evaluate",
    "evaluate_factors",
    "format_table",
    "sampled_topk",
]
