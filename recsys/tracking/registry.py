"""Model registry: a version per trained model, and champion/challenger promotion by a stated rule.

Two kinds of registered model, each with one job:

* `{prefix}-{model name}` (e.g. `recsys-wals`): every training of that model is a new version, the
  model's own history. Written by `Tracker.log_model_result` when `tracking.register_models`.
* `promotion.registered_model` (default `recsys-best`): the serving line of ONE lineage (config name
  + data source, `recsys.lineage`; tagged on the registered model when it is first used). The best
  candidate of a pipeline run is registered here as a new version with alias `challenger`; alias
  `champion` marks what `recsys serve` (`models:/recsys-best@champion`) answers with. Keeping all
  candidates of a lineage in one registered model lets a WALS champion be replaced by a two-tower
  challenger without the serving URI changing; a run of another lineage is never registered here.

`promote` = read champion -> `decision.decide` (the rule, read-only: see recsys.tracking.decision)
-> move the alias, under the line's lock with a compare-and-set on the alias
(recsys.tracking.locks). The decision ("promoted", "kept" or "not comparable") and its reason are
written as tags on the challenger's run and on its model version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from recsys.errors import TrackingError
from recsys.faults import fault_point
from recsys.lineage import TAG_LINEAGE, own_line
from recsys.tracking.decision import (
    KEPT,
    PROMOTED,
    Selection,
    Verdict,
    decide,
    lineage_mismatch,
    not_comparable,
)
from recsys.tracking.locks import registry_lock, set_alias_if_unchanged
from recsys.tracking.runs import PYFUNC_ARTIFACT, TAG_MODEL, with_retries

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from recsys.config import EvaluationConfig, PromotionConfig
    from recsys.data.split import Split

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_DECISION = "recsys.promotion.decision"
TAG_REASON = "recsys.promotion.reason"
TAG_FORCED = "recsys.promotion.forced"
ALREADY_CHAMPION = "already champion: this run's model holds the champion alias"


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of applying the promotion rule; `reason` is one human-readable sentence and
    `decision` one of "promoted", "kept", "not comparable". Means / intervals are the metric over the
    paired warm test users (see recsys.tracking.decision.Verdict).

    Two champions: `champion_version` / `champion_run_id` hold the `champion` alias *after* the
    decision (the challenger when promoted); `compared_version` / `compared_run_id` are the champion
    the challenger was compared with (None on a line without one: the first promotion), whose
    numbers `champion_mean` / `champion_ci` are. `challenger_version` holds the `challenger` alias.
    `own_line`: set when the line serves another lineage (the same config on another data set):
    the registered model to promote this lineage on instead (`recsys.lineage.own_line`)."""

    promoted: bool
    reason: str
    champion_version: str | None
    challenger_version: str | None
    p_value: float | None = None
    delta: float | None = None
    metric: str = ""
    challenger_run_id: str | None = None
    champion_run_id: str | None = None
    compared_version: str | None = None
    compared_run_id: str | None = None
    decision: str = ""
    lineage: str | None = None
    selection: str = "given"  # validation | test | given: how the challenger was chosen
    n_candidates: int = 1
    alpha: float | None = None
    n_users: int = 0
    challenger_mean: float | None = None
    champion_mean: float | None = None
    challenger_ci: tuple[float, float] | None = None
    champion_ci: tuple[float, float] | None = None
    forced: bool = False
    own_line: str | None = None  # "not comparable" as another lineage's line: the line to give this one

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


def run_version(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """The newest version of `name` already registered from `run_id`, or None: promoting a run a
    second time (`recsys promote` after `recsys run`) decides again on the same version instead of
    adding a duplicate one."""
    found = with_retries(lambda: client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"))
    return max(found, key=lambda v: int(v.version), default=None)


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version carrying `alias`, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


# --------------------------------------------------------------------------------------------------
# Promotion: read champion -> decide -> set alias


def promote(
    client: MlflowClient,
    cfg: PromotionConfig,
    challenger_run_id: str,
    *,
    split: Split | None = None,
    evaluation: EvaluationConfig | None = None,
    selection: Selection | None = None,
    force: bool = False,
) -> PromotionDecision:
    """Register `challenger_run_id`'s model in `cfg.registered_model` as the challenger, compare it
    with the champion by the rule (`decision.decide`), move the `champion` alias when it wins, and
    log the decision and its reason.

    `split` / `evaluation`: the challenger's split and how to score the champion on it (read from
    the challenger's runs when None: the same inputs either way). `selection`: how the challenger
    was chosen (it sets the significance level). `force`: promote even when the rule says "kept" or
    "not comparable" - the deliberate way out after a split change; recorded as forced.

    Concurrency (recsys.tracking.locks): the read-decide-set runs under the registered model's
    lock, and the alias moves only if the champion is still the one the rule was applied to; if
    another promoter moved it meanwhile (another machine, no shared lock), the rule is applied
    again against the new champion."""
    with registry_lock(client, cfg.registered_model):
        return _promote(
            client, cfg, challenger_run_id, split=split, evaluation=evaluation, selection=selection, force=force
        )


MAX_DECISIONS = 5
"""How often `promote` re-applies the rule when the champion keeps moving under it."""


def _promote(
    client: MlflowClient,
    cfg: PromotionConfig,
    challenger_run_id: str,
    *,
    split: Split | None = None,
    evaluation: EvaluationConfig | None = None,
    selection: Selection | None = None,
    force: bool = False,
) -> PromotionDecision:
    name = cfg.registered_model
    selection = selection or Selection()
    run_tags = client.get_run(challenger_run_id).data.tags
    lineage = run_tags.get(TAG_LINEAGE)
    # alpha: the level the rule tests at, from the config and the selection, so known for every
    # decision; it read null in the JSON of a "not comparable" or first promotion (no test ran)
    context = dict(metric=cfg.metric, challenger_run_id=challenger_run_id, lineage=lineage,
                   selection=selection.basis, n_candidates=selection.n_candidates,
                   alpha=selection.alpha(cfg.p_value))  # fmt: skip
    champion = alias_version(client, name, CHAMPION)
    if champion is not None and champion.run_id == challenger_run_id:
        # nothing moves, so the challenger alias stays where it is: this line said the champion's
        # version held it (`recsys promote` printed `challenger v2` where the store kept v5)
        holder = alias_version(client, name, CHALLENGER)
        return PromotionDecision(
            False, ALREADY_CHAMPION, str(champion.version), str(holder.version) if holder else None,
            champion_run_id=champion.run_id,
            compared_version=str(champion.version), compared_run_id=champion.run_id, decision=KEPT, **context,
        )  # fmt: skip
    line_lineage = line_lineage_of(client, name)
    suggested = own_line(name, lineage) if lineage and line_lineage and lineage != line_lineage else None
    mismatch = lineage_mismatch(lineage, line_lineage, f"registry line {name!r}", suggested) if line_lineage else None
    if mismatch and not force:  # never register a model of another lineage on this line
        verdict = not_comparable(mismatch)
        decision = replace(_decision(verdict, champion, None, False, context, None), own_line=suggested)
        _record(client, name, decision)
        return decision
    challenger = run_version(client, name, challenger_run_id) or register_run_model(
        client, name, challenger_run_id, tags={TAG_MODEL: run_tags.get(TAG_MODEL, ""), **_lineage_tag(lineage)}
    )
    if lineage and (line_lineage is None or force):
        with_retries(lambda: client.set_registered_model_tag(name, TAG_LINEAGE, lineage))
    describe_line(client, name, cfg, lineage)
    with_retries(lambda: client.set_registered_model_alias(name, CHALLENGER, challenger.version))
    for _ in range(MAX_DECISIONS):
        if champion is not None and champion.run_id == challenger_run_id:
            verdict, promoted = Verdict(KEPT, ALREADY_CHAMPION), False
        else:
            verdict = Verdict(PROMOTED, "promoted: no champion yet") if champion is None else decide(
                client, cfg, challenger_run_id, champion.run_id, split=split, evaluation=evaluation,
                selection=selection,
            )  # fmt: skip
            promoted = verdict.promoted or force
        fault_point("promote.decided")
        if not promoted:
            break
        done, champion = set_alias_if_unchanged(client, name, CHAMPION, champion, challenger.version)
        if done:
            break
    else:
        raise TrackingError(
            f"{name}: the champion alias moved {MAX_DECISIONS} times while this promotion was deciding; "
            "another promoter is writing it: run `recsys promote` again when it is done"
        )
    decision = _decision(
        verdict, champion, str(challenger.version), promoted and not verdict.promoted, context, challenger.run_id
    )
    _record(client, name, decision)
    return decision


def _decision(
    verdict: Verdict, champion: ModelVersion | None, challenger_version: str | None, forced: bool, context: dict,
    challenger_run_id: str | None,
) -> PromotionDecision:
    """`champion`: the version the challenger was compared with; the champion after the decision is
    the challenger when promoted, else that one."""
    reason = f"promoted by --force over the rule's verdict: {verdict.reason}" if forced else verdict.reason
    skip = ("outcome", "reason", "p_value", "delta", "alpha")  # alpha: in `context`, for every verdict
    numbers = {k: v for k, v in verdict.to_dict().items() if k not in skip}
    promoted = verdict.promoted or forced
    compared_version = str(champion.version) if champion else None
    compared_run_id = champion.run_id if champion else None
    return PromotionDecision(
        promoted, reason, challenger_version if promoted else compared_version, challenger_version,
        verdict.p_value, verdict.delta, champion_run_id=challenger_run_id if promoted else compared_run_id,
        compared_version=compared_version, compared_run_id=compared_run_id,
        decision=PROMOTED if forced else verdict.outcome, forced=forced, **context, **numbers,
    )  # fmt: skip


def line_lineage_of(client: MlflowClient, name: str) -> str | None:
    """The lineage a registry line serves (its registered model's tag), None when unset or new."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name).tags.get(TAG_LINEAGE)
    except MlflowException:
        return None


def _lineage_tag(lineage: str | None) -> dict[str, str]:
    return {TAG_LINEAGE: lineage} if lineage else {}


def describe_line(client: MlflowClient, name: str, cfg: PromotionConfig, lineage: str | None) -> None:
    """Say what a serving line is in its description (the MLflow UI's model page), unless someone
    wrote one already."""
    if with_retries(lambda: client.get_registered_model(name)).description:
        return
    text = (
        f"Serving line of `recsys run`{f' (lineage `{lineage}`)' if lineage else ''}: every run registers its "
        f"challenger here. The `{CHAMPION}` alias is what `recsys serve` and `models:/{name}@{CHAMPION}` load; "
        f"it moves only when a challenger beats it on {cfg.metric} over the same test users (paired test "
        f"p < {cfg.p_value}, coverage falling by at most {cfg.max_coverage_drop:.0%}). Each version's "
        "description is its decision."
    )
    with_retries(lambda: client.update_registered_model(name, description=text))


def _record(client: MlflowClient, name: str, decision: PromotionDecision) -> None:
    """Write the decision where people look: the challenger's run and the model version (its tags,
    and its description, which the MLflow UI's versions table shows whole where it cuts tags)."""
    tags = {TAG_DECISION: decision.decision, TAG_REASON: decision.reason}
    if decision.forced:
        tags[TAG_FORCED] = "true"
    for key, value in tags.items():
        if decision.challenger_run_id:
            with_retries(lambda key=key, value=value: client.set_tag(decision.challenger_run_id, key, value))
        if decision.challenger_version:
            with_retries(
                lambda key=key, value=value: client.set_model_version_tag(
                    name, decision.challenger_version, key, value
                )
            )
    if decision.challenger_version:
        said = "" if decision.reason.startswith(decision.decision) else f"{decision.decision}: "
        with_retries(
            lambda: client.update_model_version(name, decision.challenger_version, description=said + decision.reason)
        )
