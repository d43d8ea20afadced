"""Uncertainty for per-user metrics: bootstrap confidence intervals and paired model comparisons.

Because the evaluator keeps one value per user, a model's mean metric comes with an interval, and
two models scored on the same users can be compared pairwise (per-user differences), which is far
more sensitive than comparing two independent intervals. Resampling is vectorised: each batch of
bootstrap replicates is a (replicates x users) count matrix multiplied with the value columns, so
many metrics share one set of resamples and no Python loop runs per replicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

_BATCH_ELEMENTS = 4_000_000
"""Replicates x users entries drawn at once: bounds memory (~32 MB of int64) for any n."""


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap_means(values: np.ndarray, *, n_samples: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_samples, n_columns) means of bootstrap resamples of the rows of `values` (n, c) or (n,).

    Every column is resampled with the same row draws, so derived quantities (e.g. differences
    of two columns) stay paired."""
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    n, n_cols = matrix.shape
    if n == 0 or n_samples <= 0:
        return np.empty((0, n_cols))
    rng = np.random.default_rng(seed)
    batch = max(1, _BATCH_ELEMENTS // n)
    out = np.empty((n_samples, n_cols))
    for start in range(0, n_samples, batch):
        stop = min(start + batch, n_samples)
        draws = rng.integers(0, n, size=(stop - start, n))
        offsets = np.arange(stop - start, dtype=np.int64)[:, None] * n
        counts = np.bincount((draws + offsets).ravel(), minlength=(stop - start) * n).reshape(stop - start, n)
        out[start:stop] = counts @ matrix / n
    return out


def bootstrap_ci(
    values: np.ndarray, *, n_samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lo, hi): the sample mean and a percentile bootstrap interval for it.

    NaN bounds when there is nothing to resample (no values or n_samples == 0)."""
    _check_confidence(confidence)
    means, lo, hi = bootstrap_ci_columns(
        np.asarray(values)[:, None], n_samples=n_samples, confidence=confidence, seed=seed
    )
    return float(means[0]), float(lo[0]), float(hi[0])


def bootstrap_ci_columns(
    matrix: np.ndarray, *, n_samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means and percentile-interval bounds for every column of (n, c) `matrix` at once."""
    _check_confidence(confidence)
    matrix = np.asarray(matrix, dtype=np.float64)
    means = matrix.mean(axis=0) if matrix.shape[0] else np.full(matrix.shape[1], np.nan)
    boots = bootstrap_means(matrix, n_samples=n_samples, seed=seed)
    if boots.shape[0] == 0:
        nan = np.full(matrix.shape[1], np.nan)
        return means, nan, nan.copy()
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boots, [alpha, 1.0 - alpha], axis=0)
    return means, lo, hi


@dataclass(frozen=True)
class PairedTest:
    """a - b over the same users: mean difference, two-sided p-value, interval of the mean difference."""

    delta_mean: float
    p_value: float
    ci_low: float
    ci_high: float
    n: int


def paired_test(
    a: np.ndarray,
    b: np.ndarray,
    *,
    method: Literal["bootstrap", "wilcoxon"] = "bootstrap",
    n_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedTest:
    """Is model A's per-user metric different from model B's on the same users?

    bootstrap: resample the per-user differences d; the p-value is the share of replicates of the
    centred mean (mean* - mean(d), i.e. the null of zero mean difference) at least as far from 0
    as mean(d), with the +1 correction so it is never exactly 0 (Efron & Tibshirani 1993, 16.4).
    wilcoxon: scipy's signed-rank test on d (p = 1 when every difference is 0).
    Either way the interval is the percentile bootstrap interval of mean(d).
    """
    _check_confidence(confidence)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-d and of equal length, got {a.shape} and {b.shape}")
    d = a - b
    n = int(d.size)
    if n == 0:
        return PairedTest(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    delta = float(d.mean())
    boots = bootstrap_means(d, n_samples=n_samples, seed=seed)[:, 0]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boots, [alpha, 1.0 - alpha]) if boots.size else (np.nan, np.nan)
    if method == "bootstrap":
        if boots.size == 0:
            p = float("nan")
        else:
            extreme = np.abs(boots - delta) >= abs(delta) - 1e-12 * max(1.0, abs(delta))
            p = float((extreme.sum() + 1) / (boots.size + 1))
    elif method == "wilcoxon":
        if not np.any(d != 0):
            p = 1.0
        else:
            from scipy.stats import wilcoxon

            p = float(wilcoxon(d, zero_method="wilcox").pvalue)
    else:
        raise ValueError(f"unknown paired test method {method!r}; use 'bootstrap' or 'wilcoxon'")
    return PairedTest(delta_mean=delta, p_value=p, ci_low=float(lo), ci_high=float(hi), n=n)
