"""The promotion rule: one function from (challenger run, champion run, split, configs) to a verdict.

`recsys run` and `recsys promote` both reach a decision through `decide` (via registry.promote), on
the same inputs: the two runs as logged, the split the challenger was evaluated on (handed over by
the pipeline, or read back from the run's `split/` artifact), and the evaluation config the run
logged. The function only reads; registry.promote owns the writes (aliases, tags) around it.

A verdict is one of three:

* "not comparable" - the comparison would not be honest, with the reason: the two models belong to
  different lineages (config name + data source, recsys.lineage), the challenger's split cannot be
  had, the champion cannot be re-scored on it, or some of today's test pairs were in the champion's
  training data (a changed split seed or protocol, leave_last_n on repeats). Nothing moves;
  `recsys promote --force` is the deliberate way out.
* "kept" - comparable, and the challenger is not better by the rule.
* "promoted" - its mean `promotion.metric` over the warm test users both were scored on is higher
  with a paired bootstrap test p < alpha, and its coverage at k is not lower than the champion's by
  more than `max_coverage_drop` (relative).

Selection: the challenger should be chosen on validation users (pipelines/promote.py), so the test
set is touched once, here, and alpha = `promotion.p_value`. When a run has no validation part and
several candidates were ranked on test, the p-value of the best of m is not valid; alpha is then
`p_value / m` (Bonferroni: the chance that any of m equally good candidates clears p_value / m is
at most p_value), and the reason says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from recsys.errors import TrackingError
from recsys.lineage import TAG_LINEAGE
from recsys.tracking.reevaluate import (
    coverage_metric,
    load_per_user,
    log_champion_metrics,
    paired_values,
    reevaluate_champion,
)
from recsys.tracking.runs import TAG_FINGERPRINT, TAG_SPLIT_DIGEST, evaluation_protocol
from recsys.tracking.store import metric_key

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from recsys.config import EvaluationConfig, PromotionConfig
    from recsys.data.split import Split
    from recsys.evaluation.stats import PairedTest

PROMOTED, KEPT, NOT_COMPARABLE = "promoted", "kept", "not comparable"
Outcome = Literal["promoted", "kept", "not comparable"]


@dataclass(frozen=True)
class Selection:
    """How the challenger was chosen among a run's candidates."""

    basis: Literal["validation", "test", "given"] = "given"
    n_candidates: int = 1
    metric: str = ""

    def alpha(self, p_value: float) -> float:
        return p_value / self.n_candidates if self.basis == "test" and self.n_candidates > 1 else p_value

    def note(self) -> str:
        if self.basis == "validation" and self.n_candidates > 1:
            return f"; chosen among {self.n_candidates} candidates on validation {self.metric}"
        if self.basis == "test" and self.n_candidates > 1:
            return (f"; chosen among {self.n_candidates} candidates on test {self.metric} (no validation split): "
                    f"alpha divided by {self.n_candidates}")  # fmt: skip
        return ""


@dataclass(frozen=True)
class Verdict:
    """What the rule found. Means and intervals are over the paired (warm test) users."""

    outcome: Outcome
    reason: str
    p_value: float | None = None
    delta: float | None = None
    alpha: float | None = None
    n_users: int = 0
    challenger_mean: float | None = None
    champion_mean: float | None = None
    challenger_ci: tuple[float, float] | None = None
    champion_ci: tuple[float, float] | None = None

    @property
    def promoted(self) -> bool:
        return self.outcome == PROMOTED

    def to_dict(self) -> dict:
        return asdict(self)


def not_comparable(reason: str) -> Verdict:
    return Verdict(NOT_COMPARABLE, f"not comparable: {reason}")


def lineage_mismatch(
    challenger_lineage: str | None, other_lineage: str | None, other: str, own_line: str | None = None
) -> str | None:
    """Why a challenger of `challenger_lineage` cannot be compared with `other` (None when it can).
    `own_line`: the registry line to suggest for the challenger's lineage (`recsys.lineage.own_line`)."""
    if challenger_lineage and challenger_lineage == other_lineage:
        return None
    if not other_lineage:
        return f"{other} has no lineage tag (logged before lineages were recorded)"
    if not challenger_lineage:
        return "the challenger's run has no lineage tag (logged before lineages were recorded)"
    fix = f"`--set promotion.registered_model={own_line}`" if own_line else "set promotion.registered_model"
    return (
        f"the challenger belongs to lineage {challenger_lineage!r}, {other} to {other_lineage!r}; "
        f"each lineage (config name + data source) needs its own registry line: {fix}"
    )


def decide(
    client: MlflowClient,
    cfg: PromotionConfig,
    challenger_run_id: str,
    champion_run_id: str,
    *,
    split: Split | None = None,
    evaluation: EvaluationConfig | None = None,
    selection: Selection | None = None,
) -> Verdict:
    """Apply the rule to a challenger and the champion (see the module docstring).

    `split`: the split the challenger was evaluated on (read from its pipeline run when None).
    `evaluation`: how to score the champion on it (the challenger's logged config when None)."""
    from recsys.evaluation.stats import bootstrap_ci

    selection = selection or Selection()
    challenger_run, champion_run = client.get_run(challenger_run_id), client.get_run(champion_run_id)
    a_tags, b_tags = challenger_run.data.tags, champion_run.data.tags
    mismatch = lineage_mismatch(a_tags.get(TAG_LINEAGE), b_tags.get(TAG_LINEAGE), "the champion")
    if mismatch:
        return not_comparable(mismatch)
    a_digest, b_digest = a_tags.get(TAG_SPLIT_DIGEST), b_tags.get(TAG_SPLIT_DIGEST)
    metric = cfg.metric
    coverage = coverage_metric(metric)
    note = ""
    a_protocol, b_protocol = evaluation_protocol(a_tags), evaluation_protocol(b_tags)
    if a_digest and a_digest == b_digest and a_protocol != b_protocol:
        return not_comparable(
            f"the challenger's {metric} is {a_protocol}, the champion's {b_protocol}: sampled metrics rank "
            "each test item among a few random negatives and are not comparable with full-corpus ones "
            "(Krichene & Rendle 2020); score both the same way (evaluation.sampled_negatives)"
        )
    if a_digest and a_digest == b_digest:  # both scored on this very split: the logged values pair up
        try:
            champion_per_user = load_per_user(client, champion_run_id)
        except TrackingError as exc:  # its artifacts are gone: a verdict (--force gets past it), not a stop
            return not_comparable(f"the champion's per-user metrics on this split cannot be read: {exc}")
        cov_b = champion_run.data.metrics.get(metric_key(coverage))
    else:
        a_fp, b_fp = a_tags.get(TAG_FINGERPRINT, "?"), b_tags.get(TAG_FINGERPRINT, "?")
        where = f"(fingerprint {a_fp[:12]} vs {b_fp[:12]}, split {a_digest} vs {b_digest})"
        try:
            if split is None:
                from recsys.tracking.split_artifact import load_run_split

                split = load_run_split(client, challenger_run_id)
            evaluation = evaluation or logged_evaluation(client, challenger_run_id)
            again = reevaluate_champion(client, champion_run_id, split, evaluation, challenger_digest=a_digest)
        except TrackingError as exc:
            return not_comparable(f"the champion could not be re-scored on the challenger's split {where}: {exc}")
        log_champion_metrics(client, challenger_run_id, again)
        leak = again.leak()
        if leak:
            return not_comparable(f"{leak} {where}")
        champion_per_user, cov_b = again.per_user, again.summary.get(coverage)
        note = f"; {again.note()}"
    ours, theirs = paired_values(champion_per_user, load_per_user(client, challenger_run_id), metric)
    if ours.size == 0:
        return not_comparable(f"no users in common between the two runs' per-user {metric}{note}")
    alpha = selection.alpha(cfg.p_value)
    test = significance_test(ours, theirs, alpha)
    delta, p = float(test.delta_mean), float(test.p_value)
    _, a_lo, a_hi = bootstrap_ci(ours, seed=0)
    _, b_lo, b_hi = bootstrap_ci(theirs, seed=0)
    numbers = dict(
        p_value=p, delta=delta, alpha=alpha, n_users=int(test.n),
        challenger_mean=float(np.mean(ours)), champion_mean=float(np.mean(theirs)),
        challenger_ci=(a_lo, a_hi), champion_ci=(b_lo, b_hi),
    )  # fmt: skip
    cov_a = challenger_run.data.metrics.get(metric_key(coverage))
    stats = f"delta {metric} = {delta:+.4f} over {test.n} users, p = {p:.3g}"
    tail = f"{note}{selection.note()}"
    if delta <= 0:
        return Verdict(KEPT, f"kept champion: challenger is not better ({stats}){tail}", **numbers)
    if not p < alpha:
        return Verdict(KEPT, f"kept champion: improvement not significant ({stats}, needs p < {alpha:.3g}){tail}", **numbers)
    if cov_a is not None and cov_b is not None and cov_a < cov_b * (1.0 - cfg.max_coverage_drop):
        drop = 1.0 - cov_a / cov_b if cov_b else 0.0
        reason = (
            f"kept champion: {coverage} fell {drop:.1%} ({cov_b:.4f} -> {cov_a:.4f}), more than the "
            f"{cfg.max_coverage_drop:.0%} allowed ({stats}){tail}"
        )
        return Verdict(KEPT, reason, **numbers)
    return Verdict(PROMOTED, f"promoted: challenger is better ({stats}){tail}", **numbers)


BOOTSTRAP_SAMPLES = 1000
"""Resamples of the promotion test where alpha allows (`resamples_for`)."""


def resamples_for(alpha: float) -> int:
    """Bootstrap resamples for a test at level `alpha`: 1000, or enough that the smallest p-value
    the bootstrap can give (1 / (resamples + 1)) is a tenth of alpha.

    Why: with 1000 the p-value never goes below 0.000999, so a rule at p_value <= 0.001, or the
    Bonferroni alpha of more than 50 candidates chosen on test, could never promote anything, and
    the reason said only "not significant"."""
    import math

    return max(BOOTSTRAP_SAMPLES, math.ceil(10.0 / alpha)) if alpha > 0 else BOOTSTRAP_SAMPLES


def significance_test(challenger: np.ndarray, champion: np.ndarray, alpha: float) -> PairedTest:
    """The promotion rule's paired bootstrap test of the per-user differences, seeded, with the
    resamples its level needs (`resamples_for`)."""
    from recsys.evaluation.stats import paired_test

    return paired_test(challenger, champion, seed=0, n_samples=resamples_for(alpha))


def logged_evaluation(client: MlflowClient, run_id: str) -> EvaluationConfig:
    """The evaluation config a run logged (config/run.toml), so a later `recsys promote` scores the
    champion exactly as the pipeline did; the defaults when the run has none."""
    import tomllib

    from recsys.config import EvaluationConfig
    from recsys.files import scratch_dir

    with scratch_dir("recsys-config") as tmp:
        try:
            path = client.download_artifacts(run_id, "config/run.toml", tmp)
            data = tomllib.loads(open(path).read())
        except Exception:
            return EvaluationConfig()
    return EvaluationConfig.model_validate(data.get("evaluation", {}))
