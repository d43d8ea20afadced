"""evaluate(): seen-item masking, fold-in, skipped users, intervals, sampled mode, the report table."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import scipy.sparse as sp
from rich.console import Console

from recsys.config import EvaluationConfig
from recsys.data.split import EvalSet
from recsys.evaluation.evaluate import (
    EvaluationResult,
    SampledMetricsWarning,
    evaluate,
    evaluate_factors,
    format_table,
)
from recsys.models.factors import FactorModel


def FixedFactors(users: np.ndarray, items: np.ndarray) -> FactorModel:  # noqa: N802 - reads like the class it was
    """Fixed vectors behind the model protocol; fold-in = sum of the history's item vectors."""
    return FactorModel.from_arrays(users, items, name="fixed")


def csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    dense = np.zeros((len(rows), n_items), dtype=np.float32)
    for u, items in enumerate(rows):
        dense[u, items] = 1.0
    return sp.csr_matrix(dense)


POP4 = np.array([3.0, 2.0, 1.0, 0.0])


@pytest.fixture
def masking_case() -> tuple[FixedFactors, EvalSet]:
    # one-hot items, so user vectors are the scores themselves
    users = np.array([[4, 3, 2, 1], [0, 0, 0, 1], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=np.float32)
    model = FixedFactors(users, np.eye(4, dtype=np.float32))
    exclude = csr([[0], [], [1], []], 4)  # user 0 saw its best item 0; user 2 has history but no test
    truth = csr([[0, 2], [3], [], []], 4)  # item 0 is in user 0's truth AND history: never a hit
    return model, EvalSet(truth=truth, exclude=exclude)


def test_seen_items_are_masked_and_never_hits(masking_case: tuple[FixedFactors, EvalSet]) -> None:
    model, eval_set = masking_case
    cfg = EvaluationConfig(ks=[1, 2], metrics=["recall", "precision", "ndcg", "mrr"], bootstrap_samples=50)
    result = evaluate(model, eval_set, cfg, item_popularity=POP4)
    assert isinstance(result, EvaluationResult)
    # user 0 ranks [1, 2] (item 0 masked): miss at rank 1, hit (item 2) at rank 2
    # user 1 ranks [3, 0]: hit at rank 1 (its truth has one item)
    np.testing.assert_array_equal(result.topk.items, [[1, 2], [3, 0]])
    assert 0 not in result.topk.items[0]
    per_user = result.per_user
    assert per_user["user_idx"].to_list() == [0, 1]
    np.testing.assert_allclose(per_user["recall@1"].to_numpy(), [0.0, 1.0])
    np.testing.assert_allclose(per_user["recall@2"].to_numpy(), [1 / 2, 1.0])  # 1 / min(2, |{0, 2}|)
    np.testing.assert_allclose(per_user["precision@2"].to_numpy(), [1 / 2, 1 / 2])
    np.testing.assert_allclose(
        per_user["ndcg@2"].to_numpy(), [(1 / math.log2(3)) / (1 + 1 / math.log2(3)), 1.0]
    )
    np.testing.assert_allclose(per_user["mrr@2"].to_numpy(), [1 / 2, 1.0])
    assert result.summary["recall@1"] == pytest.approx(0.5)
    assert result.summary["recall@2"] == pytest.approx(0.75)
    assert result.summary["coverage@2"] == pytest.approx(4 / 4)  # items {1, 2, 3, 0}
    assert result.summary["arp@1"] == pytest.approx((2.0 + 0.0) / 2)  # items 1 and 3
    # novelty@1 over the eval set's 4 users: item 1 (2 training users) log2(4 / 2) = 1; item 3
    # (none, counted as one) log2(4) = 2
    assert result.summary["novelty@1"] == pytest.approx(1.5)
    # user 2 has a history but nothing to predict: skipped and counted; user 3 has neither
    assert result.n_users_evaluated == 2 and result.n_users_skipped == 1
    assert result.seconds > 0 and result.sampled_negatives is None


def test_fold_in_vectors_are_used_for_strong_generalisation() -> None:
    items = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    trained = np.array([[0.0, 1.0], [0.0, 1.0]])  # the trained vectors point at the wrong cluster
    model = FixedFactors(trained, items)
    fold_in = csr([[0], [1]], 6)  # both users' histories are in cluster A
    truth = csr([[1], [0]], 6)
    cfg = EvaluationConfig(ks=[1], metrics=["hit_rate"], bootstrap_samples=0)
    with_fold_in = evaluate(
        model, EvalSet(truth=truth, exclude=fold_in, fold_in=fold_in), cfg, item_popularity=np.ones(6)
    )
    # user 0 folds in to (1, 0): item 0 masked -> item 1 (0.9) is a hit; user 1: (0.9, 0.1) -> item 0 (0.9) is a hit
    np.testing.assert_array_equal(with_fold_in.topk.items[:, 0], [1, 0])
    assert with_fold_in.summary["hit_rate@1"] == 1.0
    without = evaluate(model, EvalSet(truth=truth, exclude=fold_in), cfg, item_popularity=np.ones(6))
    assert without.summary["hit_rate@1"] == 0.0  # the trained vectors rank item 3 first
    assert math.isnan(with_fold_in.ci["hit_rate@1"][0])  # bootstrap_samples=0: no interval


def _random_case(seed: int = 0) -> tuple[FixedFactors, EvalSet, np.ndarray]:
    rng = np.random.default_rng(seed)
    users, items = rng.normal(size=(120, 8)), rng.normal(size=(300, 8))
    seen = rng.random((120, 300)) < 0.08
    test = (rng.random((120, 300)) < 0.04) & ~seen
    test[7] = False  # one user with history and nothing to predict
    exclude, truth = sp.csr_matrix(seen.astype(np.float32)), sp.csr_matrix(test.astype(np.float32))
    return (
        FixedFactors(users, items),
        EvalSet(truth=truth, exclude=exclude),
        seen.sum(axis=0).astype(np.float64),
    )


def test_intervals_determinism_and_factor_entry_point_agree() -> None:
    model, eval_set, popularity = _random_case()
    cfg = EvaluationConfig(ks=[5, 20], bootstrap_samples=200, chunk_size=16)
    first = evaluate(model, eval_set, cfg, item_popularity=popularity)
    second = evaluate(model, eval_set, cfg, item_popularity=popularity)
    assert first.summary == second.summary and first.ci == second.ci
    by_factors = evaluate_factors(
        model.user_factors, model.item_factors, eval_set, cfg, item_popularity=popularity
    )
    assert by_factors.summary == first.summary
    assert by_factors.per_user.equals(first.per_user)
    per_user_columns = [c for c in first.per_user.columns if c != "user_idx"]
    assert sorted(first.ci) == sorted(per_user_columns)
    for name in per_user_columns:
        lo, hi = first.ci[name]
        assert lo <= first.summary[name] <= hi, name
    assert {"coverage@20", "novelty@20", "arp@20"} <= set(first.summary)
    assert first.n_users_skipped == 1 and first.n_users_evaluated == len(eval_set.users)
    assert first.topk.k == 20


def test_sampled_metrics_warn_and_are_optimistic(caplog: pytest.LogCaptureFixture) -> None:
    model, eval_set, popularity = _random_case(1)
    full = evaluate(
        model, eval_set, EvaluationConfig(ks=[10], metrics=["recall"]), item_popularity=popularity
    )
    sampled_cfg = EvaluationConfig(ks=[10], metrics=["recall"], sampled_negatives=50)
    with caplog.at_level(logging.WARNING), pytest.warns(SampledMetricsWarning, match="Krichene & Rendle 2020"):
        sampled = evaluate(model, eval_set, sampled_cfg, item_popularity=popularity)
    assert sampled.sampled_negatives == 50
    # the candidates are a subset of the catalogue that holds every test item, so no test item ranks
    # lower than in the full ranking: per-user sampled recall >= full recall, and strictly more on average
    full_recall, sampled_recall = (
        full.per_user["recall@10"].to_numpy(),
        sampled.per_user["recall@10"].to_numpy(),
    )
    assert (sampled_recall >= full_recall - 1e-12).all()
    assert sampled_recall.mean() > full_recall.mean()
    # sampled lists only hold test items or unseen negatives, never a masked item
    items = sampled.topk.items
    seen = eval_set.exclude[sampled.topk.users].toarray().astype(bool)
    assert not seen[np.arange(len(items))[:, None], np.where(items >= 0, items, 0)][items >= 0].any()


def test_format_table_shows_mean_and_interval(masking_case: tuple[FixedFactors, EvalSet]) -> None:
    model, eval_set = masking_case
    cfg = EvaluationConfig(ks=[2], metrics=["recall"], bootstrap_samples=100)
    result = evaluate(model, eval_set, cfg, item_popularity=POP4)
    console = Console(record=True, width=200)
    console.print(format_table({"fixed": result, "again": result}, ["recall@2", "coverage@2", "ndcg@2"]))
    text = console.export_text()
    lo, hi = result.ci["recall@2"]
    assert f"0.7500 ±{(hi - lo) / 2:.3f}" in text  # the terminal shows the half-width...
    wide = Console(record=True, width=200)
    wide.print(format_table({"fixed": result}, ["recall@2"], wide=True))
    assert f"0.7500 [{lo:.4f}, {hi:.4f}]" in wide.export_text()  # ...--wide the interval itself
    assert "1.0000" in text  # coverage has no interval
    assert "—" in text  # ndcg was not computed
    assert text.count("fixed") == 1 and "again" in text


def test_the_sampled_metrics_warning_is_printed_once_as_one_line(capsys, caplog) -> None:
    """It was both warned and logged, so every evaluation printed it twice (Python's
    `path:line: UserWarning: ...` form plus the log line), and a run evaluates each model twice.
    Now one `warning:` line per command from the CLI's warning hook, and no log record."""
    import warnings

    from recsys.cli.common import one_line_warnings

    model, eval_set, popularity = _random_case(1)
    cfg = EvaluationConfig(ks=[10], metrics=["recall"], sampled_negatives=50)
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")  # as when a library resets Python's once-per-place registry
        one_line_warnings()
        evaluate(model, eval_set, cfg, item_popularity=popularity)
        evaluate(model, eval_set, cfg, item_popularity=popularity)  # a run scores validation, then test
    err = capsys.readouterr().err
    assert err.count("Krichene & Rendle 2020") == 1 and err.startswith("warning: sampled metrics"), err
    assert not [r for r in caplog.records if "Krichene" in r.getMessage()]


def test_a_second_command_in_one_process_prints_the_warning_again(capsys) -> None:
    """Once per command, not once per process: the hook is installed by the first command only,
    and its set of shown messages outlived it, so a second command in the same process (CliRunner,
    a notebook) printed nothing for a warning the first had printed."""
    import warnings

    from recsys.cli.common import one_line_warnings
    from recsys.errors import RecsysWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        for _command in range(2):
            one_line_warnings()  # what every command's start does (OneLineErrors.main)
            warnings.warn("planted warning", RecsysWarning, stacklevel=1)
            warnings.warn("planted warning", RecsysWarning, stacklevel=1)
    assert capsys.readouterr().err.count("warning: planted warning") == 2


def test_mismatched_vectors_are_refused_naming_both_counts(masking_case: tuple[FixedFactors, EvalSet]) -> None:
    model, eval_set = masking_case  # 4 users x 4 items
    cfg = EvaluationConfig(ks=[1], metrics=["recall"], bootstrap_samples=0)
    pop = POP4
    with pytest.raises(ValueError, match="user_vecs has 3 rows but the eval set has 4 users"):
        evaluate_factors(model.user_factors[:3], model.item_factors, eval_set, cfg, item_popularity=pop)
    with pytest.raises(ValueError, match="item_vecs has 3 rows but the eval set has 4 items"):
        evaluate_factors(model.user_factors, model.item_factors[:3], eval_set, cfg, item_popularity=pop)
    narrow = EvalSet(truth=eval_set.truth[:, :3].tocsr(), exclude=eval_set.exclude[:, :3].tocsr())
    with pytest.raises(ValueError, match="eval set has 3 items but the model knows 4"):
        evaluate(model, narrow, cfg, item_popularity=pop)


def test_sampled_evaluation_is_reproducible_and_names_its_negatives() -> None:
    """The sampled lists are `sampled_topk` with seed 0: the same numbers on every run (a fresh seed
    per run would make two runs of one model disagree), and the warning names the sample size."""
    from recsys.evaluation.evaluate import sampled_topk

    model, eval_set, popularity = _random_case(2)
    cfg = EvaluationConfig(ks=[5], metrics=["recall"], sampled_negatives=30, bootstrap_samples=0)
    with pytest.warns(SampledMetricsWarning, match="among 30 random negatives"):
        result = evaluate(model, eval_set, cfg, item_popularity=popularity)
    users = eval_set.users
    want, want_scores = sampled_topk(
        model.user_factors[users], model.item_factors, eval_set.truth[users], eval_set.exclude[users], 5, 30, seed=0
    )
    np.testing.assert_array_equal(result.topk.items, want)
    np.testing.assert_array_equal(result.topk.scores, want_scores)
    np.testing.assert_array_equal(result.topk.users, users)


def test_per_user_rows_and_novelty_belong_to_the_evaluated_users_of_a_non_square_eval_set() -> None:
    """3 users x 5 one-hot items; user 1 has no truth, so the evaluated users are 0 and 2 (not 0, 1).
    Both rank item 0 first (user 2: all tied, lowest index). Novelty is over the eval set's 3 users:
    item 0 has 2 training users, log2(3 / 2) for each list (with the 5 items as the count: log2(5 / 2))."""
    users = np.array([[5, 4, 3, 2, 1], [1, 2, 3, 4, 5], [1, 1, 1, 1, 1]], dtype=np.float32)
    model = FixedFactors(users, np.eye(5, dtype=np.float32))
    eval_set = EvalSet(truth=csr([[0], [], [4]], 5), exclude=csr([[], [], []], 5))
    cfg = EvaluationConfig(ks=[1], metrics=["recall"], bootstrap_samples=0)
    result = evaluate(model, eval_set, cfg, item_popularity=np.array([2.0, 0, 0, 0, 1]))
    assert result.per_user["user_idx"].to_list() == [0, 2]
    np.testing.assert_allclose(result.per_user["recall@1"].to_numpy(), [1.0, 0.0])
    np.testing.assert_array_equal(result.topk.users, [0, 2])
    assert result.summary["novelty@1"] == pytest.approx(math.log2(3 / 2))
