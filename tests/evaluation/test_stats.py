"""Bootstrap intervals and paired tests: coverage of the mean, shrinkage with n, null and shifted pairs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wilcoxon

from recsys.evaluation.stats import bootstrap_ci, bootstrap_ci_columns, bootstrap_means, paired_test


def test_ci_contains_the_mean_and_matches_the_normal_approximation() -> None:
    values = np.random.default_rng(1).exponential(scale=2.0, size=2000)
    mean, lo, hi = bootstrap_ci(values, n_samples=2000, confidence=0.95, seed=0)
    assert mean == pytest.approx(values.mean())
    assert lo < mean < hi
    # for a mean of n iid values the 95% interval is about +-1.96 * sd / sqrt(n)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert (hi - lo) / 2 == pytest.approx(half_width, rel=0.15)


def test_ci_shrinks_with_n_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    _, lo_small, hi_small = bootstrap_ci(rng.random(100), seed=0)
    _, lo_big, hi_big = bootstrap_ci(rng.random(10_000), seed=0)
    # width scales like 1 / sqrt(n): 100x the users -> about a tenth of the width
    assert (hi_big - lo_big) < 0.2 * (hi_small - lo_small)
    values = rng.random(50)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_degenerate_inputs() -> None:
    assert bootstrap_ci(np.full(20, 0.25)) == (0.25, 0.25, 0.25)
    mean, lo, hi = bootstrap_ci(np.array([]))
    assert np.isnan(mean) and np.isnan(lo) and np.isnan(hi)
    mean, lo, hi = bootstrap_ci(np.array([1.0, 3.0]), n_samples=0)
    assert mean == 2.0 and np.isnan(lo) and np.isnan(hi)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(np.ones(3), confidence=1.5)


def test_columns_share_resamples_and_batches_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    a = rng.random(300)
    matrix = np.stack([a, 2 * a + 1], axis=1)
    boots = bootstrap_means(matrix, n_samples=200, seed=0)
    # the same row draws for both columns: the second column's replicate means are an exact affine map
    np.testing.assert_allclose(boots[:, 1], 2 * boots[:, 0] + 1)
    monkeypatch.setattr("recsys.evaluation.stats._BATCH_ELEMENTS", 300 * 7)  # 7 replicates per batch
    # Same draws, same sums; only the matmul's shape changes, and BLAS picks its blocking (so the order
    # of the 300 additions) by shape and machine: the last bit or two may differ (seen: 4.4e-16 on
    # values near 2). A batching bug would move a mean by ~1e-2, ten orders of magnitude more.
    np.testing.assert_allclose(bootstrap_means(matrix, n_samples=200, seed=0), boots, rtol=1e-12, atol=0)
    means, lo, hi = bootstrap_ci_columns(matrix, n_samples=200, seed=0)
    np.testing.assert_allclose(means, matrix.mean(axis=0))
    assert (lo < means).all() and (means < hi).all()


@pytest.mark.parametrize("method", ["bootstrap", "wilcoxon"])
def test_identical_models_have_p_one(method: str) -> None:
    a = np.random.default_rng(6).random(500)
    result = paired_test(a, a.copy(), method=method)
    assert result.delta_mean == 0.0 and result.p_value == pytest.approx(1.0) and result.n == 500
    assert result.ci_low == 0.0 and result.ci_high == 0.0


@pytest.mark.parametrize("method", ["bootstrap", "wilcoxon"])
def test_clear_shift_is_significant_and_no_shift_is_not(method: str) -> None:
    rng = np.random.default_rng(7)
    b = rng.random(400)
    shifted = b + 0.05 + rng.normal(0, 0.05, size=400)  # true mean difference 0.05
    result = paired_test(shifted, b, method=method)
    assert result.p_value < 0.05
    assert result.delta_mean == pytest.approx(np.mean(shifted - b))
    assert result.ci_low < 0.05 < result.ci_high and result.ci_low > 0
    noise = b + rng.normal(0, 0.05, size=400)  # no true difference
    assert paired_test(noise, b, method=method).p_value > 0.05


def test_wilcoxon_agrees_with_scipy_and_bad_input_is_refused() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.random(60), rng.random(60)
    assert paired_test(a, b, method="wilcoxon").p_value == pytest.approx(wilcoxon(a - b).pvalue)
    with pytest.raises(ValueError, match="equal length"):
        paired_test(a, b[:-1])
    with pytest.raises(ValueError, match="unknown paired test"):
        paired_test(a, b, method="t")  # type: ignore[arg-type]


@pytest.mark.parametrize("alpha", [0.0005, 0.05 / 60])
def test_the_promotion_test_can_reach_any_configured_level(alpha: float) -> None:
    """1000 resamples put the smallest bootstrap p-value at 1/1001 = 0.000999: at promotion.p_value
    = 0.0005, or the Bonferroni alpha of 60 candidates chosen on test, a challenger better for every
    user was 'not significant' for ever. The promotion test takes the resamples its level needs,
    and keeps 1000 (the same p-values as before) at the default 0.05."""
    from recsys.tracking.decision import resamples_for, significance_test

    rng = np.random.default_rng(3)
    champion = rng.uniform(0.0, 0.5, size=400)
    challenger = champion + rng.uniform(0.05, 0.1, size=400)  # better for every user
    test = significance_test(challenger, champion, alpha)
    assert test.p_value < alpha
    assert resamples_for(0.05) == 1000
    default = significance_test(challenger, champion, 0.05)
    assert default.p_value == pytest.approx(1 / 1001, rel=1e-12)
