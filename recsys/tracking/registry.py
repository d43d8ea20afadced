"""Model registry: a version per trained model, and champion/challenger promotion by a stated rule.

Two kinds of registered model, each with one job:

* `{prefix}-{model name}` (e.g. `recsys-wals`): every training of that model is a new version, the
  model's own history. Written by `Tracker.log_model_result` when `tracking.register_models`.
* `promotion.registered_model` (default `recsys-best`): the serving line. The best candidate of a
  pipeline run is registered here as a new version with alias `challenger`; alias `champion` marks
  what `recsys serve` (`models:/recsys-best@champion`) answers with. Keeping all candidates in one
  registered model lets a WALS champion be replaced by a two-tower challenger without the serving
  URI changing.

Promotion rule (PromotionConfig): with no champion, the challenger becomes champion. Otherwise the
challenger is promoted only if (1) both were evaluated on the same split (equal split digest, which
covers the data fingerprint, protocol and seed) - else the comparison is refused with that reason;
(2) its mean `metric` (e.g. recall@20) over the users both evaluated is higher, with a paired test on
the per-user values giving p < `p_value`; and (3) its coverage at the metric's k is not lower than
the champion's by more than `max_coverage_drop` (relative). The decision's reason is written as a
tag on the challenger's run and on its model version.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.errors import TrackingError
from recsys.tracking.runs import (
    PER_USER_ARTIFACT,
    PYFUNC_ARTIFACT,
    TAG_FINGERPRINT,
    TAG_MODEL,
    TAG_SPLIT_DIGEST,
    with_retries,
)
from recsys.tracking.store import metric_key

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from mlflow import MlflowClient
    from recsys.config import PromotionConfig

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_DECISION = "recsys.promotion.decision"
TAG_REASON = "recsys.promotion.reason"


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of applying the promotion rule; `reason` is one human-readable sentence."""

    promoted: bool
    reason: str
    champion_version: str | None
    challenger_version: str | None
    p_value: float | None = None
    delta: float | None = None
    metric: str = ""
    challenger_run_id: str | None = None
    champion_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Versions and aliases


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model unless it exists (tolerates a concurrent creator)."""
    from mlflow.exceptions import MlflowException

    try:
        with_retries(lambda: client.create_registered_model(name))
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(exc).lower():
            raise


def register_run_model(
    client: MlflowClient, name: str, run_id: str, tags: dict[str, str] | None = None
) -> ModelVersion:
    """Register the run's pyfunc (artifact `model/`) as a new version of `name`."""
    ensure_registered_model(client, name)
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{PYFUNC_ARTIFACT}"
    return with_retries(lambda: client.create_model_version(name, source, run_id=run_id, tags=tags or {}))


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version carrying `alias`, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


# --------------------------------------------------------------------------------------------------
# The rule


def load_per_user(client: MlflowClient, run_id: str) -> Any:
    """The run's per-user metrics table (polars), or TrackingError naming the run."""
    import polars as pl

    with tempfile.TemporaryDirectory(prefix="recsys-per-user-") as tmp:
        try:
            path = client.download_artifacts(run_id, PER_USER_ARTIFACT, tmp)
        except Exception as exc:
            raise TrackingError(f"run {run_id} has no {PER_USER_ARTIFACT} artifact ({exc})") from None
        return pl.read_parquet(Path(path))


def paired_values(champion: Any, challenger: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(challenger, champion) per-user values of `metric` for the users both evaluated, aligned by user_id."""
    for name, frame in (("champion", champion), ("challenger", challenger)):
        if metric not in frame.columns:
            raise TrackingError(f"{name} per-user metrics have no column {metric!r}; have {frame.columns}")
    joined = challenger.select("user_id", metric).join(
        champion.select("user_id", metric), on="user_id", how="inner", suffix="_champion"
    )
    return (
        joined.get_column(metric).to_numpy().astype(np.float64),
        joined.get_column(f"{metric}_champion").to_numpy().astype(np.float64),
    )


def coverage_metric(metric: str) -> str:
    """coverage at the promotion metric's k: "recall@20" -> "coverage@20"."""
    _, _, k = metric.partition("@")
    return f"coverage@{k}" if k else "coverage"


def decide(
    client: MlflowClient, cfg: PromotionConfig, challenger_run_id: str, champion_run_id: str
) -> tuple[bool, str, float | None, float | None]:
    """Apply the rule to two runs: (promote?, reason, p_value, delta)."""
    from recsys.evaluation.stats import paired_test

    challenger_run, champion_run = client.get_run(challenger_run_id), client.get_run(champion_run_id)
    a_tags, b_tags = challenger_run.data.tags, champion_run.data.tags
    a_digest, b_digest = a_tags.get(TAG_SPLIT_DIGEST), b_tags.get(TAG_SPLIT_DIGEST)
    if not a_digest or a_digest != b_digest:
        a_fp, b_fp = a_tags.get(TAG_FINGERPRINT, "?"), b_tags.get(TAG_FINGERPRINT, "?")
        what = "data fingerprints" if a_fp != b_fp else "splits"
        return (
            False,
            (
                f"not compared: challenger and champion were evaluated on different {what} "
                f"(fingerprint {a_fp[:12]} vs {b_fp[:12]}, split {a_digest} vs {b_digest}); "
                "re-evaluate the champion on the new data first"
            ),
            None,
            None,
        )
    metric = cfg.metric
    ours, theirs = paired_values(
        load_per_user(client, champion_run_id), load_per_user(client, challenger_run_id), metric
    )
    if ours.size == 0:
        return False, f"not compared: no users in common between the two runs' per-user {metric}", None, None
    test = paired_test(ours, theirs, seed=0)
    delta, p = float(test.delta_mean), float(test.p_value)
    coverage = coverage_metric(metric)
    cov_key = metric_key(coverage)
    cov_a, cov_b = challenger_run.data.metrics.get(cov_key), champion_run.data.metrics.get(cov_key)
    stats = f"delta {metric} = {delta:+.4f} over {test.n} users, p = {p:.3g}"
    if delta <= 0:
        return False, f"kept champion: challenger is not better ({stats})", p, delta
    if not p < cfg.p_value:
        return (
            False,
            f"kept champion: improvement not significant ({stats}, needs p < {cfg.p_value})",
            p,
            delta,
        )
    if cov_a is not None and cov_b is not None and cov_a < cov_b * (1.0 - cfg.max_coverage_drop):
        drop = 1.0 - cov_a / cov_b if cov_b else 0.0
        return (
            False,
            (
                f"kept champion: {coverage} fell {drop:.1%} ({cov_b:.4f} -> {cov_a:.4f}), more than the "
                f"{cfg.max_coverage_drop:.0%} allowed ({stats})"
            ),
            p,
            delta,
        )
    return True, f"promoted: challenger is better ({stats})", p, delta


def promote(client: MlflowClient, cfg: PromotionConfig, challenger_run_id: str) -> PromotionDecision:
    """Register `challenger_run_id`'s model in `cfg.registered_model` as the challenger, compare it
    with the champion by the rule, move the `champion` alias when it wins, and log the reason."""
    name = cfg.registered_model
    champion = alias_version(client, name, CHAMPION)
    if champion is not None and champion.run_id == challenger_run_id:
        return PromotionDecision(
            False, "already champion: this run's model holds the champion alias", str(champion.version),
            str(champion.version), metric=cfg.metric, challenger_run_id=challenger_run_id,
            champion_run_id=champion.run_id,
        )  # fmt: skip
    model_name = client.get_run(challenger_run_id).data.tags.get(TAG_MODEL, "")
    challenger = register_run_model(client, name, challenger_run_id, tags={TAG_MODEL: model_name})
    with_retries(lambda: client.set_registered_model_alias(name, CHALLENGER, challenger.version))
    if champion is None:
        promoted, reason, p, delta = True, "promoted: no champion yet", None, None
    else:
        promoted, reason, p, delta = decide(client, cfg, challenger_run_id, champion.run_id)
    if promoted:
        with_retries(lambda: client.set_registered_model_alias(name, CHAMPION, challenger.version))
    decision = PromotionDecision(
        promoted, reason, str(champion.version) if champion else None, str(challenger.version),
        p, delta, cfg.metric, challenger_run_id, champion.run_id if champion else None,
    )  # fmt: skip
    _record(client, name, decision)
    return decision


def _record(client: MlflowClient, name: str, decision: PromotionDecision) -> None:
    """Write the decision where people look: the challenger's run and the model versions."""
    verdict = "promoted" if decision.promoted else "kept"
    tags = {TAG_DECISION: verdict, TAG_REASON: decision.reason}
    for key, value in tags.items():
        if decision.challenger_run_id:
            with_retries(lambda key=key, value=value: client.set_tag(decision.challenger_run_id, key, value))
        if decision.challenger_version:
            with_retries(
                lambda key=key, value=value: client.set_model_version_tag(
                    name, decision.challenger_version, key, value
                )
            )
