"""Step: hyper-parameter search (Optuna TPE, seeded) on the validation split — never on test.

Two entry points over the one search in `recsys.tuning.tune`:

* `tune_in_run`: what `recsys run` does for every model with an enabled `[models.tuning]` section.
  Trials are nested MLflow runs under the model's run (params, per-epoch validation curve, value,
  state); the model's run gets the chosen parameters (`tuned.<name>` params), a trials table and the
  optimisation-history and parameter-importance plots under `tuning/`. The best trial's model is the
  run's model: fitted once with the chosen parameters, then scored once on test by the caller.
  Warm start: the champion of this config's registry line, when it is the same kind of model and
  of the same lineage, has its parameters queued as a trial.
* `tune_model`: `recsys tune`, which writes a config with the best parameters filled in, so
  `recsys run --config best.toml` reproduces the winner.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.heartbeat import with_heartbeat
from recsys.config import RunConfig
from recsys.data.split import Split
from recsys.errors import ConfigError
from recsys.files import scratch_dir
from recsys.lineage import TAG_LINEAGE
from recsys.models.base import ModelConfig, Recommender
from recsys.tuning import TrialRecord, TuningConfig, TuningOutcome, search_space, tune

TAG_TRIAL_STATE = "recsys.trial_state"
TAG_TRIAL_NUMBER = "recsys.trial_number"
TAG_WARM_START = "recsys.tuning.warm_start"
TAG_CROSS_CHECK = "recsys.tuning.cross_check"  # which parameters the out-of-fold check kept: searched | configured


@dataclass
class TuneResult:
    model: str
    metric: str
    best_value: float
    best_params: dict[str, Any]
    trials: list[dict[str, Any]]
    config: RunConfig


def validation_or_refuse(split: Split, model_name: str):
    """The warm validation users (a training history, cold items masked): what tuning scores."""
    from recsys.evaluation.cold import warm_validation

    validation = warm_validation(split)
    if validation is None and split.validation is not None:
        # The fraction is set, but this data left no validation user with a training history to
        # score (a handful of users, each placed by a hash): pointing at the fraction would mislead.
        held = int((split.validation.getnnz(axis=1) > 0).sum())
        raise ConfigError(
            f"models.{model_name}.tuning has no validation user to choose on: of {split.train.shape[0]:,} "
            f"users the split held out {held:,} for validation, none with a training history to score "
            f"(too few users to tune on); set models.{model_name}.tuning.enabled = false, or use more data"
        )
    if validation is None:
        raise ConfigError(
            f"models.{model_name}.tuning needs a validation split: set split.validation_fraction (e.g. 0.1)"
        )
    return validation


def tune_model(
    cfg: RunConfig, split: Split, model_name: str, *, trials: int, metric: str | None = None,
    progress: Callable[[TrialRecord], None] | None = None, log: Callable[[str], None] = print,
) -> TuneResult:  # fmt: skip
    """`recsys tune`: search the model's space (its tuning section's, or the kind's default) with
    `trials` trials; metric defaults to the promotion metric (recall@20). A distilling student's
    teacher (a model of the config) is trained first, as `recsys run` and `recsys train` do."""
    model_cfg = cfg.model(model_name)
    if model_cfg.kind == "blend":  # its trials need the fitted members, which only a run trains first
        raise ConfigError(
            f"recsys tune searches one model alone, but {model_name!r} is a blend of {model_cfg.members}: give it a "
            "[models.tuning] section and `recsys run` (it tunes the weights after training the members)"
        )
    search_space(model_cfg)  # nothing to tune: refused before any work, as configured (no section: none to remove)
    tuning = (model_cfg.tuning or TuningConfig()).model_copy(update={"n_trials": trials, "timeout_s": None})
    model_cfg = model_cfg.model_copy(update={"tuning": tuning})
    validation = validation_or_refuse(split, model_name)
    teacher = fitted_teacher(cfg, split, model_cfg, log)
    outcome = tune(
        model_cfg, split.train, validation, metric=metric or cfg.promotion.metric,
        hooks=_ProgressHooks(progress) if progress is not None else None, item_ids=split.item_ids,
        build=_with_teacher(teacher) if teacher is not None else None,
    )  # fmt: skip
    if outcome.cross_check is not None:
        log(outcome.cross_check.sentence())
    history = [{"trial": r.number, outcome.metric: r.value, **r.params} for r in outcome.trials]
    tuned = cfg.model_copy(deep=True)
    tuned.models = [_pinned(m, outcome.best_params) if m.name == model_name else m for m in tuned.models]
    return TuneResult(
        model_name, outcome.metric, outcome.best_value, outcome.best_params, history,
        RunConfig.model_validate(tuned.resolved()),
    )  # fmt: skip


def fitted_teacher(
    cfg: RunConfig, split: Split, model_cfg: ModelConfig, log: Callable[[str], None]
) -> Recommender | None:
    """The config's model that `model_cfg` distills from, fitted on `split` (its own teacher first),
    or None. Why: `recsys tune` built every trial without it, so each failed ("call
    model.set_teacher(teacher) before fit") and the search ended in "no tuning trial finished"."""
    from pipelines.train import fit_model
    from recsys.distill import teacher_name

    name = teacher_name(model_cfg)
    if name is None:
        return None
    teacher_cfg = cfg.model(name)
    if teacher_cfg.kind == "blend":  # its members would have to train first: what a run does
        raise ConfigError(
            f"{model_cfg.name!r} distills from the blend {name!r}, which only `recsys run` trains (after its members): "
            f"tune {model_cfg.name!r} with a [models.tuning] section in `recsys run`"
        )
    log(f"training {name}, the teacher {model_cfg.name!r} distills from")
    return fit_model(teacher_cfg, split, cfg, teacher=fitted_teacher(cfg, split, teacher_cfg, log), log=log)


def _with_teacher(teacher: Recommender) -> Callable[[ModelConfig], Recommender]:
    from pipelines.train import model_builder

    return model_builder(None, teacher)


def _pinned(model_cfg: ModelConfig, params: dict[str, Any]) -> ModelConfig:
    """The model with the chosen parameters and its per-run search (if any) switched off, so that
    `recsys run --config tuned.toml` trains exactly the winner instead of searching again (a run
    with more trials than `recsys tune --trials` could pick other parameters)."""
    update: dict[str, Any] = dict(params)
    if model_cfg.tuning is not None:
        update["tuning"] = model_cfg.tuning.model_copy(update={"enabled": False})
    # validated, not model_copy: a parameter may not be a field as it stands (a blend's `weights.<member>`)
    return type(model_cfg).model_validate({**model_cfg.model_dump(), **update})


class _ProgressHooks:
    """Every finished trial, complete, pruned or failed, to `progress`."""

    def __init__(self, progress: Callable[[TrialRecord], None]) -> None:
        self.progress = progress

    def start(self, number: int, params: dict[str, Any]) -> None:
        return None

    def finish(self, record: TrialRecord) -> None:
        self.progress(record)


# ============================================================================ inside a pipeline run
def tune_in_run(
    model_cfg: ModelConfig,
    split: Split,
    cfg: RunConfig,
    *,
    tracker: Any,
    model_run: Any,
    build: Callable[[ModelConfig], Recommender] | None = None,
    log: Callable[[str], None] = print,
) -> TuningOutcome:
    """Search `model_cfg`'s tuning section on `split`'s validation users (the test set is never
    handed to the search) and log everything to the model's MLflow run."""
    validation = validation_or_refuse(split, model_cfg.name)
    tuning = model_cfg.tuning or TuningConfig()
    queue = champion_parameters(cfg, tracker, model_cfg, log) if tuning.warm_start else []
    hooks = MlflowTrialHooks(tracker, model_run, model_cfg, log)
    outcome = tune(
        model_cfg, split.train, validation, metric=cfg.promotion.metric, queue=queue, hooks=hooks, build=build,
        item_ids=split.item_ids,
    )
    log(
        f"tuned {model_cfg.name}: {len(outcome.trials)} trials in {outcome.seconds:.0f}s"
        f"{' (timeout)' if outcome.timed_out else ''}, best validation {outcome.metric} "
        f"{outcome.best_value:.4f} with {params_text(outcome.best_params)}"
        + (f"; {outcome.cross_check.sentence()}" if outcome.cross_check is not None else "")
    )
    log_tuning(tracker, model_run.run_id, outcome, warm_started=bool(queue))
    return outcome


def params_text(params: dict[str, Any]) -> str:
    """`lr=0.0439, temperature=0.149`: sampled floats to 4 significant digits, for reading in a log
    line (`l2 1049.7058823529412` said nothing the first 4 digits do not). The exact values go to
    MLflow and into the final model's config; this is only what the terminal shows."""
    return ", ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}" for name, value in params.items())


def trial_line(record: TrialRecord) -> str:
    """One trial on one line: number, state, value, parameters and, for a failed trial, its error
    (Optuna's own report of it, a traceback, is silenced in `recsys.tuning`)."""
    value = "—" if record.value is None else f"{record.value:.4f}"
    error = f" ({record.error.strip().splitlines()[0]})" if record.error else ""
    return f"trial {record.number}: {record.state} {value} {params_text(record.params)}{error}"


class MlflowTrialHooks:
    """Each trial a nested run under the model's run (a no-op with tracking off)."""

    def __init__(
        self, tracker: Any, model_run: Any, model_cfg: ModelConfig, log: Callable[[str], None]
    ) -> None:
        self.tracker, self.parent, self.model_cfg, self.log = tracker, model_run, model_cfg, log
        self.runs: dict[int, str] = {}

    def start(self, number: int, params: dict[str, Any]) -> Callable[[int, dict[str, float]], None] | None:
        name = f"{self.model_cfg.name} trial {number}"
        if not getattr(self.tracker, "enabled", False):
            return with_heartbeat(name, self.log)
        run_id = self.tracker.start_trial(self.parent.run_id, self.model_cfg, number, params)
        self.runs[number] = run_id
        return with_heartbeat(name, self.log, lambda step, metrics: self.tracker.log_metrics(run_id, metrics, step=step))

    def finish(self, record: TrialRecord) -> None:
        self.log(f"  {self.model_cfg.name} {trial_line(record)}")
        run_id = self.runs.pop(record.number, None)
        if run_id is None:
            return
        metrics = {"trial_seconds": record.seconds, "epochs": record.epochs}
        if record.value is not None:
            metrics["value"] = record.value
        self.tracker.log_metrics(run_id, metrics)
        self.tracker.set_tags(run_id, {TAG_TRIAL_STATE: record.state})
        status = {"failed": "FAILED", "interrupted": "KILLED"}.get(record.state, "FINISHED")
        self.tracker.end(run_id, status, error=record.error)


def log_tuning(tracker: Any, run_id: str | None, outcome: TuningOutcome, *, warm_started: bool) -> None:
    """Chosen parameters, a trials table and the two plots on the model's run."""
    if not getattr(tracker, "enabled", False) or not run_id:
        return
    from recsys.tuning import plot_study

    tracker.log_params(run_id, {f"tuned.{k}": v for k, v in outcome.best_params.items()})
    summary = outcome.summary()
    tracker.log_metrics(run_id, {
        "tuning_best_value": summary["best_value"], "tuning_trials": summary["trials"],
        "tuning_pruned": summary["pruned"], "tuning_failed": summary["failed"], "tuning_seconds": summary["seconds"],
    })  # fmt: skip
    tracker.set_tags(
        run_id,
        {
            TAG_WARM_START: str(warm_started).lower(),
            "recsys.tuning.timed_out": str(outcome.timed_out).lower(),
        },
    )
    if outcome.cross_check is not None:
        check = outcome.cross_check
        tracker.log_metrics(run_id, {"tuning_cross_check_delta": check.delta, "tuning_cross_check_p": check.p_value})
        tracker.set_tags(run_id, {TAG_CROSS_CHECK: "searched" if check.kept_searched else "configured"})
    with scratch_dir("recsys-tuning") as tmp:
        root = Path(tmp) / "tuning"
        plot_study(outcome.study, root)
        trials = [
            {"number": r.number, "state": r.state, "value": r.value, "seconds": r.seconds, "epochs": r.epochs,
             "params": r.params, **({"error": r.error} if r.error else {})}
            for r in outcome.trials
        ]  # fmt: skip
        (root / "trials.json").write_text(
            json.dumps({**summary, "queued": outcome.queued, "trials": trials}, indent=2, default=str)
        )
        tracker.log_artifacts(run_id, root, "tuning")


# ============================================================================ warm start
def lineage(cfg: RunConfig) -> str:
    """The registry line a run belongs to (recsys.lineage: config name + normalised data source).
    Runs of different lineages never share a champion, so a champion of another lineage is no warm
    start."""
    from recsys.lineage import lineage as lineage_of

    return lineage_of(cfg).name


def champion_parameters(
    cfg: RunConfig, tracker: Any, model_cfg: ModelConfig, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The trained config of this line's champion (`promotion.registered_model@champion`) when it is
    a model of the same kind and its run is of this run's lineage (a run without a lineage tag, from
    before lineages were recorded, counts as this line's: the registry line is this config's own).
    Empty when there is no champion, tracking is off, or the store cannot say."""
    if not getattr(tracker, "enabled", False):
        return []
    from recsys.tracking.registry import CHAMPION, alias_version
    from recsys.tracking.runs import TAG_MODEL_KIND

    try:
        version = alias_version(tracker.client, cfg.promotion.registered_model, CHAMPION)
        if version is None or not version.run_id:
            return []
        run = tracker.client.get_run(version.run_id)
        tags = run.data.tags
        if tags.get(TAG_MODEL_KIND) != model_cfg.kind:
            return []
        if tags.get(TAG_LINEAGE) not in (None, lineage(cfg)):  # untagged: a run from before lineages
            return []
        with scratch_dir("recsys-champion") as tmp:
            path = tracker.client.download_artifacts(version.run_id, "config/model.json", tmp)
            params = json.loads(Path(path).read_text())
    except Exception as exc:  # the champion's run or artifact is gone: tune without it
        log(f"  {model_cfg.name}: no warm start from the champion ({type(exc).__name__}: {exc})")
        return []
    log(f"  {model_cfg.name}: warm start from the champion (run {version.run_id})")
    return [as_tuning_params(model_cfg, params)]


def as_tuning_params(model_cfg: ModelConfig, saved: dict[str, Any]) -> dict[str, Any]:
    """A saved model config (`config/model.json`) in the keys a search uses: the same as the
    config's fields for most models, `weights.<member>` for a blend's weights (queued as the saved
    `weights` dict, the champion's weights were never tried). A saved config this one cannot read
    (another version's fields) is queued as it is: `warm_starts` keeps only what the space knows."""
    try:
        return type(model_cfg).model_validate({**saved, "name": model_cfg.name}).tuning_params()
    except ValueError:
        return saved
