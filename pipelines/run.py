"""The whole training pipeline as plain, orchestrator-agnostic steps.

`flows/pipeline.py` wires these same functions into Prefect tasks (retries, caching, concurrency,
artifacts); `run_pipeline` here runs them in-process, which is what tests and notebooks use.
A model's lifecycle (child run -> fit -> evaluate -> log -> end run) is one step, so a model that
fails ends its own MLflow run FAILED and the others carry on.
"""

from __future__ import annotations

import json
import shlex
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.data import (
    DatasetResult,
    k_core_shrink,
    load_dataset,
    log_dataset,
    make_split,
    one_generation,
    prepare_dataset,
    run_data_dir,
)
from pipelines.evaluate import evaluate_model
from pipelines.heartbeat import with_heartbeat
from pipelines.train import (
    find_members,
    find_teacher,
    fit_or_tune,
    per_split_checkpoints,
    pin_thread_budget,
    skip_reason,
    thread_budget,
)
from pipelines.unchanged import Unchanged, unchanged_check
from recsys import interrupt
from recsys.config import RunConfig
from recsys.data.dataset import InteractionData
from recsys.data.split import Split
from recsys.distill import distillation_waves, teacher_names
from recsys.errors import ModelSkipped
from recsys.evaluation.cold import divide_test
from recsys.evaluation.testable import require_test_users
from recsys.faults import fault_point
from recsys.files import scratch_dir, write_text_atomic
from recsys.models.base import ModelConfig
from recsys.sizes import size_warnings


@dataclass
class ModelOutcome:
    """One model's result: what `recsys run --json` reports under "models"."""

    name: str
    kind: str
    loss: str | None
    sampler: str | None
    status: str = "ok"  # "ok" | "failed" | "skipped" (does not apply to this data: `ModelSkipped`)
    metrics: dict[str, float] = field(default_factory=dict)  # warm test users (a training history)
    ci: dict[str, list[float]] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)  # warm validation users: ranks candidates
    cold: dict[str, Any] = field(default_factory=dict)  # cold_test_users, cold_test_items, the fallback group
    folding: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0
    setup_seconds: float = 0.0  # building the model and loading its libraries (torch, implicit) first
    eval_seconds: float = 0.0
    log_seconds: float = 0.0  # MLflow: metrics, artifacts, pyfunc, registry
    tuning: dict[str, Any] = field(default_factory=dict)  # the search's summary when the model was tuned
    mlflow_run_id: str | None = None
    error: str | None = None
    unlogged: str | None = None  # the tracking store failed: where this model's run was kept
    resumed_from: dict[str, Any] | None = None  # training continued a checkpoint: epoch, step, path

    @property
    def compute_seconds(self) -> float:
        """This model's own work in a run: its search (or fit), set-up, evaluation and logging."""
        return self.tuning.get("seconds", self.fit_seconds) + self.setup_seconds + self.eval_seconds + self.log_seconds

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.status == "ok":
            data.pop("error")
        for optional in ("unlogged", "resumed_from"):
            if data[optional] is None:
                data.pop(optional)
        return data


@dataclass
class PipelineResult:
    dataset: dict[str, Any]
    models: list[ModelOutcome]
    champion: str | None = None
    promotion: dict[str, Any] = field(default_factory=dict)
    mlflow_parent_run_id: str | None = None
    tracking_uri: str | None = None
    wall_seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)
    tracking_error: str | None = None  # the store failed mid-run (see recsys.tracking.offline)
    unlogged_dir: str | None = None  # where the runs it could not take were kept
    unchanged: dict[str, Any] | None = None  # trained nothing: the run it repeats (pipelines.unchanged)

    @property
    def failed(self) -> list[ModelOutcome]:
        """Models that failed; a run where every model was skipped counts them all as failed (it
        trained nothing)."""
        if self.models and all(m.status == "skipped" for m in self.models):
            return list(self.models)
        return [m for m in self.models if m.status == "failed"]

    @property
    def skipped(self) -> list[ModelOutcome]:
        return [m for m in self.models if m.status == "skipped"]

    @property
    def orchestration_overhead(self) -> float:
        """Share of wall time not spent in step compute (Prefect/MLflow bookkeeping)."""
        compute = sum(self.step_seconds.values())
        return max(0.0, self.wall_seconds - compute) / self.wall_seconds if self.wall_seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "models": [m.to_json() for m in self.models],
            "champion": self.champion,
            "promotion": self.promotion,
            "mlflow_parent_run_id": self.mlflow_parent_run_id,
            "tracking_uri": self.tracking_uri,
            "wall_seconds": round(self.wall_seconds, 3),
            "step_seconds": {k: round(v, 3) for k, v in self.step_seconds.items()},
            "orchestration_overhead": round(self.orchestration_overhead, 4),
            **({"tracking_error": self.tracking_error} if self.tracking_error else {}),
            **({"unlogged_dir": self.unlogged_dir} if self.unlogged_dir else {}),
            **({"unchanged": self.unchanged} if self.unchanged else {}),
        }

    def note_tracking(self, tracker: Any) -> None:
        """Record a tracking-store failure of this run (the flow's tracker, or any model's)."""
        kept = [m.unlogged for m in self.models if m.unlogged]
        error = getattr(tracker, "failure", None) or (
            f"the tracking store failed while logging {len(kept)} model(s)" if kept else None
        )
        if error:
            self.tracking_error = error
            where = getattr(tracker, "kept_in", None)
            self.unlogged_dir = str(where) if where is not None else (kept[0] if kept else None)

    def write_json(self, path: str | Path) -> Path:
        """Atomic write: a reader never sees half a summary."""
        return write_text_atomic(path, json.dumps(self.to_json(), indent=2))


def dataset_summary(split: Split, dataset: DatasetResult, cfg: RunConfig | None = None) -> dict[str, Any]:
    from recsys.lineage import lineage
    from recsys.tracking.runs import split_digest

    return {
        "users": int(split.n_users),
        "items": int(split.n_items),
        "train_interactions": int(split.train.nnz),
        "test_interactions": int(split.test.nnz),
        "validation_interactions": int(split.validation.nnz) if split.validation is not None else 0,
        **divide_test(split).counts(),  # cold_test_users, cold_test_items, cold_item_test_interactions
        "fingerprint": dataset.fingerprint,
        "split": split.protocol,
        "split_digest": split_digest(split),
        **({"lineage": lineage(cfg).name} if cfg is not None else {}),
        "processed_dir": dataset.processed_dir,
    }


def split_line(split: Split) -> str:
    """Who the test scores, in one line for the run's log: on a sparse log (most users with one or
    two interactions: Amazon reviews) most held-out users hold no test interaction - a user with one
    interaction lands in fold-in with probability fold_in_fraction - and the run scored a third of
    the users it held out without a word (their count was only an MLflow metric, n_users_skipped).
    Cold users (no history) are scored by the fallback, apart (see `recsys.evaluation.cold`).
    Test interactions on items no training row holds are left out of the truth (such an item has no
    trained vector), and a user with no other test interaction is not scored: on a long-tail log
    (Tianchi's mobile log, most items seen once) that was most of the test users, and the line
    accounted for them nowhere."""
    from recsys.evaluation.cold import separate_cold

    test = split.test_set()  # built once: it sums train and validation on a random split
    counts = separate_cold(test, split.train).counts()
    scored = counts["warm_test_users"] + counts["cold_test_users"]
    only_cold_items = int(test.users.size) - scored
    line = (f"split: {split.protocol}, {split.train.nnz:,} train / {split.test.nnz:,} test interactions; test scores "
            f"{scored:,} users ({counts['warm_test_users']:,} with a history, {counts['cold_test_users']:,} cold)")  # fmt: skip
    if unscored := test.n_users_without_truth:
        one = unscored == 1
        why = (f"held-out user{'' if one else 's'} whose every interaction fell in fold-in" if split.fold_in is not None
               else f"user{'' if one else 's'} without a test interaction")  # fmt: skip
        line += f"; {unscored:,} {why} {'is' if one else 'are'} not scored"
    if dropped := counts["cold_item_test_interactions"]:
        line += (f"; {dropped:,} test interaction{'' if dropped == 1 else 's'} on {counts['cold_test_items']:,} "
                 "item(s) without training data (never ranked) left out")  # fmt: skip
        if only_cold_items:
            one = only_cold_items == 1
            line += f", and with them {only_cold_items:,} user{'' if one else 's'} who had no other"
    return line


def load_split(dataset: DatasetResult, cfg: RunConfig) -> Split:
    return load_data_and_split(dataset, cfg)[1]


def load_data_and_split(dataset: DatasetResult, cfg: RunConfig) -> tuple[InteractionData, Split]:
    """The processed data (the tracker logs it as the run's dataset) and its seeded split."""
    _, data, split = load_run_inputs(dataset, cfg)
    return data, split


TIME_BASED = ("temporal", "rolling", "leave_last_n")


def scheduled_config(cfg: RunConfig, data: InteractionData) -> RunConfig:
    """The config a scheduled run (`recsys schedule`) uses on `data`: unless `split.scheduled` is
    "as_configured", a log whose interactions all have timestamps is split by the rolling protocol
    (the champion never saw the forward window), and a log without them by the configured protocol
    if that is a stable hashed one (random, strong generalisation), else by `random`."""
    from recsys.data.schema import TIME

    if cfg.split.scheduled != "rolling" or cfg.split.protocol == "rolling":
        return cfg
    times = data.interactions.get_column(TIME)
    timed = data.interactions.height > 0 and times.null_count() == 0
    protocol = "rolling" if timed else ("random" if cfg.split.protocol in TIME_BASED else cfg.split.protocol)
    if protocol == cfg.split.protocol:
        return cfg
    out = cfg.model_copy(deep=True)
    out.split.protocol = protocol
    return out


def load_run_inputs(
    dataset: DatasetResult, cfg: RunConfig, scheduled: bool = False
) -> tuple[RunConfig, InteractionData, Split]:
    """(the config this run uses - the scheduled protocol resolved -, the data, its split). The data
    is the generation `dataset` prepared, or a one-line DataError (`load_dataset`)."""
    data = load_dataset(dataset.processed_dir, dataset.fingerprint)
    if scheduled:
        cfg = scheduled_config(cfg, data)
    split = make_split(data, cfg.split)
    split.meta.setdefault("fingerprint", dataset.fingerprint)
    return cfg, data, split


@dataclass
class RunInputs:
    """What `prepare_run_inputs` read: the prepared processed directory, the config the run uses
    (the scheduled protocol resolved), the data and its split."""

    dataset: DatasetResult
    cfg: RunConfig
    data: InteractionData
    split: Split
    warnings: list[str] = field(default_factory=list)  # settings too large for this data (recsys.sizes), once per run


def prepare_run_inputs(
    cfg: RunConfig,
    scheduled: bool = False,
    steps: dict[str, float] | None = None,
    prepare: Callable[[RunConfig], DatasetResult] = prepare_dataset,
    load: Callable[[DatasetResult, RunConfig, bool], tuple[RunConfig, InteractionData, Split]] = load_run_inputs,
) -> RunInputs:
    """Bring the run's processed directory up to date and load it with its split, as ONE generation:
    its writer lock is held from the ingest to the load, so a non-append `recsys ingest --out` into
    it waits instead of swapping the directory in between (`one_generation`). `recsys run`
    (`run_pipeline`), `recsys train` / `evaluate` and the Prefect flow (which passes its cached
    ingest and split tasks as `prepare` / `load`, called in its thread, where the lock is
    re-entrant) read their data through here, so they read the same data the same way, and all
    refuse a split whose test part scores no user (`require_test_users`: every metric would be NaN).
    `steps`: filled with the seconds of "ingest" and "split"."""
    timings = steps if steps is not None else {}
    with one_generation(run_data_dir(cfg.data)):
        t = time.perf_counter()
        dataset = prepare(cfg)
        timings["ingest"] = time.perf_counter() - t
        fault_point("run.prepared")
        t = time.perf_counter()
        cfg, data, split = load(dataset, cfg, scheduled)
        timings["split"] = time.perf_counter() - t
    # before any model trains: a test part of nobody makes every metric NaN
    parts = divide_test(split)  # once, for both checks
    require_test_users(split, filtered=k_core_shrink(data.manifest), parts=parts)
    return RunInputs(dataset, cfg, data, split, size_warnings(cfg, split, parts))


def train_and_log(
    model_cfg: ModelConfig,
    split: Split,
    cfg: RunConfig,
    tracker: Any,
    parent_run_id: str | None,
    threads: int | None,
    log: Callable[[str], None] = print,
    data: InteractionData | None = None,
    teachers_dir: str | Path | None = None,
) -> ModelOutcome:
    """Child run -> fit -> evaluate -> log metrics/artifacts/model -> end run. Raises on failure
    after marking the child run FAILED with the error, so the orchestrator sees the truth.

    `teachers_dir`: where this run's distillation teachers are kept (see `teachers_workspace`): a
    student loads its teacher from there, and a model that some student distills from saves itself
    there (a file hand-off, so it also works when models train in other processes)."""
    began = time.perf_counter()
    outcome = ModelOutcome(
        name=model_cfg.name, kind=model_cfg.kind,
        loss=getattr(model_cfg, "loss", None), sampler=getattr(model_cfg, "sampler", None),
    )
    try:
        members = find_members(model_cfg, teachers_dir, log=log)  # a blend whose members did not train: skipped
        reason = skip_reason(model_cfg, split, threads)
    except ModelSkipped as exc:
        reason = str(exc).removeprefix(f"model {model_cfg.name!r}: ")
    if reason is not None:  # before any work or MLflow run
        log(f"skipped {model_cfg.name}: {reason}")
        outcome.status, outcome.error = "skipped", reason
        return outcome
    # Interrupted while this model waited for a worker (after Ctrl-C, Prefect's thread pool still starts
    # the queued model tasks): open no MLflow run for a model that will not train (it showed as KILLED).
    interrupt.check()
    run = tracker.start_child(parent_run_id, model_cfg)
    outcome.mlflow_run_id = getattr(run, "run_id", None)
    try:
        log(f"training {model_cfg.name} ({model_cfg.kind})")
        teacher = find_teacher(model_cfg, teachers_dir)
        model_cfg = per_split_checkpoints(model_cfg, split, teacher)
        model, tuned = fit_or_tune(
            model_cfg, split, cfg, tracker=tracker, model_run=run, threads=threads, teacher=teacher, log=log,
            members=members, callback=with_heartbeat(model_cfg.name, log, run.callback),  # per-epoch metrics; a line a minute
        )  # fmt: skip
        if tuned is not None:
            outcome.tuning = tuned.summary()
        # Libraries load on a model's first use (a run starts without torch; `skip_reason` is the
        # first to touch them), and its MLflow run opens: 1-2 s that are this model's work, not
        # orchestration, though not part of its fit either.
        searched = outcome.tuning.get("seconds", model.fit_seconds)
        outcome.setup_seconds = max(0.0, time.perf_counter() - began - searched)
        outcome.fit_seconds = model.fit_seconds
        outcome.resumed_from = model.resumed_from
        evaluation = evaluate_model(model, split, cfg)
        outcome.eval_seconds = evaluation.seconds
        outcome.metrics = {k: float(v) for k, v in evaluation.result.summary.items()}
        outcome.ci = {k: [float(lo), float(hi)] for k, (lo, hi) in evaluation.result.ci.items()}
        outcome.folding = evaluation.folding
        outcome.validation = evaluation.validation
        outcome.cold = evaluation.cold
        started = time.perf_counter()
        tracker.log_model_result(
            run, model, evaluation.result, split, data=data, extra_metrics=evaluation.extra_metrics()
        )
        tracker.end(run, "FINISHED")
        outcome.log_seconds = time.perf_counter() - started
        if teachers_dir is not None and model_cfg.name in teacher_names(list(cfg.models)):
            # handed to its students / blends only once it finished: a model whose evaluation or
            # logging failed is reported failed, and no blend or student may use it regardless
            model.save(Path(teachers_dir) / model_cfg.name)
        if getattr(tracker, "failure", None):  # trained and evaluated; its run waits on disk
            outcome.unlogged = str(tracker.kept_in)
            log(f"tracking failed ({tracker.failure}): {model_cfg.name} kept in {tracker.kept_in}")
        log(f"finished {model_cfg.name}: {cfg.promotion.metric} = {outcome.metrics.get(cfg.promotion.metric, float('nan')):.4f}")
        return outcome
    except Exception as exc:
        tracker.end(run, "FAILED", error="".join(traceback.format_exception_only(type(exc), exc)).strip())
        raise ModelFailed(f"{type(exc).__name__}: {exc}", outcome.mlflow_run_id) from exc
    except BaseException:  # interrupted: still close the run, never leave it RUNNING
        tracker.end(run, "KILLED")
        raise


class ModelFailed(RuntimeError):
    """A model's training or evaluation failed; carries its MLflow run id (picklable, so it
    crosses process boundaries when tasks run on Dask)."""

    def __init__(self, message: str, run_id: str | None = None) -> None:
        super().__init__(message, run_id)
        self.run_id = run_id

    def __str__(self) -> str:
        return str(self.args[0])


def failed_outcome(model_cfg: ModelConfig, error: BaseException, run_id: str | None = None) -> ModelOutcome:
    run_id = run_id or getattr(error, "run_id", None)
    return ModelOutcome(
        name=model_cfg.name, kind=model_cfg.kind, loss=getattr(model_cfg, "loss", None),
        sampler=getattr(model_cfg, "sampler", None), status="failed", error=str(error), mlflow_run_id=run_id,
    )


EXPECTED_COST = {"two_tower": 3, "wals_spark": 2, "wals": 1, "ease": 1}
"""Rough training cost by model kind, for scheduling only (popularity and precomputed factors: 0)."""


def longest_first(models: list[ModelConfig]) -> list[ModelConfig]:
    """Submission order for concurrent training: longest expected job first (LPT scheduling), so a
    two-tower does not wait behind quick models for a free worker and the wall time stays close to
    the longest job. Stable, so models of one kind keep their config order; results are reported in
    config order regardless."""
    return sorted(models, key=lambda m: -EXPECTED_COST.get(m.kind, 0))


@contextmanager
def teachers_workspace(cfg: RunConfig) -> Iterator[Path | None]:
    """A private directory for this run's distillation teachers and blend members (None when
    nothing needs them), removed when the run ends: they are logged to MLflow like every model;
    this copy only hands them to the models that need them. A run killed with -9 cannot remove it
    (a copy of every member, EASE's n_items^2 included, per kill): the next run's start removes the
    directories of runs that no longer run (`process_temp_dir`)."""
    if not teacher_names(list(cfg.models)):
        yield None
        return
    with scratch_dir(TEACHERS_PREFIX) as workspace:
        yield Path(workspace)


TEACHERS_PREFIX = "recsys-teachers"


def make_tracker(cfg: RunConfig, enabled: bool = True):
    """The MLflow tracker (checked reachable before any training) or a no-op with the same API."""
    from recsys.tracking.runs import make_tracker as _make

    return _make(cfg, enabled=enabled and cfg.tracking.enabled)


def run_pipeline(
    cfg: RunConfig,
    *,
    tracking: bool = True,
    map_models: Callable[[Callable[[ModelConfig], ModelOutcome], Iterable[ModelConfig]], list] | None = None,
    log: Callable[[str], None] = print,
    scheduled: bool = False,
) -> PipelineResult:
    """Run every step in this process (models one after another unless `map_models` says otherwise).
    `scheduled`: split as a scheduled run does (`scheduled_config`), and train nothing when the
    inputs equal the last finished run's (`orchestration.if_unchanged`, pipelines.unchanged)."""
    cfg = pin_thread_budget(cfg)
    wall = time.perf_counter()
    steps: dict[str, float] = {}
    t = time.perf_counter()
    tracker = make_tracker(cfg, enabled=tracking)
    tracking_seconds = time.perf_counter() - t  # MLflow work is step compute, like models' logging

    inputs = prepare_run_inputs(cfg, scheduled, steps)
    dataset, cfg, data, split = inputs.dataset, inputs.cfg, inputs.data, inputs.split
    log_dataset(dataset, data.manifest, log, lambda warning: log(f"warning: {warning}"))
    log(split_line(split))
    for warning in inputs.warnings:
        log(f"warning: {warning}")

    t = time.perf_counter()
    if getattr(tracker, "enabled", False):
        tracker.run_config = cfg  # the resolved protocol is what the run logs
    with unchanged_check(cfg, tracker, data, split, scheduled, log) as unchanged:
        if unchanged.skip:  # the last finished run had these very inputs: nothing to train
            log(str(unchanged.line))
            steps["tracking"] = tracking_seconds + time.perf_counter() - t
            return skipped_result(dataset, split, cfg, tracker, unchanged, wall, steps)
        parent = tracker.start_parent(data=data, split=split, tags=unchanged.tags)
    steps["tracking"] = tracking_seconds + time.perf_counter() - t
    threads = thread_budget(cfg.orchestration)
    with parent_closed_on_error(tracker, parent):
        t = time.perf_counter()
        with teachers_workspace(cfg) as teachers:

            def one(model_cfg: ModelConfig) -> ModelOutcome:
                try:
                    return train_and_log(model_cfg, split, cfg, tracker, parent, threads, log, data, teachers)
                except Exception as exc:  # one model's failure must not sink the others
                    log(f"model {model_cfg.name} failed: {exc}")
                    return failed_outcome(model_cfg, exc)

            by_name: dict[str, ModelOutcome] = {}
            for wave in distillation_waves(list(cfg.models)):  # students after their teachers
                wave = longest_first(wave)
                by_name |= {o.name: o for o in (map_models(one, wave) if map_models else map(one, wave))}
            outcomes = [by_name[m.name] for m in cfg.models]
        steps["models"] = time.perf_counter() - t

        t = time.perf_counter()
        decision = promote_best(cfg, tracker, outcomes, split)
        steps["promote"] = time.perf_counter() - t
        result = PipelineResult(
            dataset=dataset_summary(split, dataset, cfg), models=outcomes,
            champion=decision.get("champion"), promotion=decision,
            mlflow_parent_run_id=parent, tracking_uri=getattr(tracker, "shown_uri", None),
        )
        result.wall_seconds = time.perf_counter() - wall
        result.step_seconds = steps
        end_parent(tracker, parent, result, cfg)
    result.note_tracking(tracker)
    return result


def skipped_result(
    dataset: DatasetResult, split: Split, cfg: RunConfig, tracker: Any, unchanged: Unchanged, wall: float,
    steps: dict[str, float],
) -> PipelineResult:
    """The summary of a run that trained nothing because its inputs were unchanged: no model, no
    MLflow run (`recsys compare`, `promote` and `registry` read the run it repeats), the data it saw
    and the run it repeats under `unchanged`."""
    promotion = {"promoted": False, "decision": "", "reason": "not decided: nothing trained (inputs unchanged)",
                 **standing_champion(tracker, cfg)}  # fmt: skip
    result = PipelineResult(
        dataset=dataset_summary(split, dataset, cfg), models=[], champion=promotion["champion"],
        tracking_uri=getattr(tracker, "shown_uri", None), promotion=promotion, unchanged=unchanged.to_json(),
    )
    result.wall_seconds = time.perf_counter() - wall
    result.step_seconds = dict(steps)
    return result


@contextmanager
def parent_closed_on_error(tracker: Any, parent: str | None) -> Iterator[None]:
    """Between a parent run's start and `end_parent`: an error closes it FAILED (with the error), an
    interrupt (Ctrl-C) KILLED, as each model run already is. It was
    left RUNNING until the next run's dead-process sweep, so the MLflow UI showed an interrupted
    run as running, beside its KILLED model runs."""
    try:
        yield
    except BaseException as exc:
        if parent:
            status = "FAILED" if isinstance(exc, Exception) else "KILLED"
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip() if status == "FAILED" else None
            try:
                tracker.end(parent, status, error=error)
            except Exception:  # noqa: S110 - a store that fails here must not hide the error itself
                pass
        raise


def end_parent(tracker: Any, parent: str | None, result: PipelineResult, cfg: RunConfig) -> None:
    """Close the pipeline's parent run: comparison table, summary JSON and the champion as a tag.
    The parent ends FAILED when any model failed, so the MLflow UI tells the same truth as Prefect."""
    if parent is None or not getattr(tracker, "enabled", False):
        return
    from pipelines.report import SMALL_TEST_TAG, comparison_markdown, run_warning

    comparison = comparison_markdown(result, cfg)
    warning = run_warning(result, cfg)
    tracker.set_tags(parent, {"recsys.champion": result.champion or "", "recsys.failed_models": len(result.failed),
                              "recsys.skipped_models": ", ".join(m.name for m in result.skipped),
                              DESCRIPTION_TAG: run_description(comparison),
                              **({SMALL_TEST_TAG: warning} if warning else {})})  # fmt: skip
    tracker.log_metrics(parent, {"wall_seconds": result.wall_seconds,
                                 "orchestration_overhead": result.orchestration_overhead})
    tracker.log_text(parent, comparison, "comparison.md")
    tracker.log_dict(parent, result.to_json(), "summary.json")
    error = "; ".join(f"{m.name}: {m.error}" for m in result.failed) or None
    tracker.end(parent, "FAILED" if result.failed else "FINISHED", error=error)


DESCRIPTION_TAG = "mlflow.note.content"
"""MLflow's run description: the MLflow UI shows it (markdown) at the top of the run's page."""


def run_description(comparison: str, limit: int | None = None) -> str:
    """The pipeline run's description: the comparison table, so the run's page in the MLflow UI says
    how its models did and which is champion without opening an artifact. A table over the tag
    limit is cut before the table, and says where the whole of it is."""
    from recsys.tracking.runs import TAG_VALUE_LIMIT

    limit = TAG_VALUE_LIMIT if limit is None else limit
    if len(comparison) <= limit:
        return comparison
    head = comparison.split("\n| model |", 1)[0].rstrip()
    note = "\n\nThe comparison table is too long for the description: open the artifact `comparison.md`."
    return head[: limit - len(note)] + note


def promote_best(
    cfg: RunConfig, tracker: Any, outcomes: list[ModelOutcome], split: Split | None = None
) -> dict[str, Any]:
    """Apply the promotion rule to this run's models (no-op without tracking). When the tracking
    store failed during the run nothing is decided: the champion alias is left as it was; so it is
    when a model failed or too few users were tested (`automatic_promotion_refused`)."""
    candidates = {m.name: m.mlflow_run_id for m in outcomes if m.status == "ok" and m.mlflow_run_id}
    if not candidates or not cfg.promotion.auto or not getattr(tracker, "enabled", False):
        ok = [m for m in outcomes if m.status == "ok"]
        on_validation = bool(ok) and all(cfg.promotion.metric in m.validation for m in ok)
        basis = "validation" if on_validation else "test"
        best = max(ok, key=lambda m: (m.validation if on_validation else m.metrics).get(cfg.promotion.metric, -1),
                   default=None)  # fmt: skip
        if not ok:  # every model failed: say so, not "promotion.auto is off"
            return {"champion": None, "promoted": False, "decision": "",
                    "reason": "not decided: no model of this run finished"}
        why = ("tracking disabled" if not getattr(tracker, "enabled", False)
               else "promotion.auto is off" if not cfg.promotion.auto else "no model run was logged")  # fmt: skip
        return {"champion": best.name if best else None, "promoted": False, "decision": "",
                "reason": f"{why}: best model of this run by {basis} {cfg.promotion.metric}"}
    unlogged = [m.unlogged for m in outcomes if m.unlogged]
    if getattr(tracker, "failure", None) or unlogged:
        where = unlogged[0] if unlogged else tracker.kept_in
        return {"champion": None, "promoted": False, "decision": "",
                "reason": f"not decided: the tracking store failed during the run; log the kept runs with "
                          f"`recsys run --resume-tracking {shlex.quote(str(where))}`, then `recsys promote`"}
    from pipelines.promote import automatic_promotion_refused, run_promotion

    warm = None if split is None else divide_test(split).counts()["warm_test_users"]
    if refused := automatic_promotion_refused(cfg, outcomes, warm):
        # the store answers: name the champion that serves, as a skipped run does (not null)
        return {**standing_champion(tracker, cfg), "promoted": False, "decision": "", "reason": refused}

    try:
        decision = run_promotion(cfg, candidates, split=split).to_dict()
    except Exception as exc:
        from recsys.errors import RecsysError

        if isinstance(exc, RecsysError) and not _store_failure(exc):
            raise
        tracker.mark_failed(exc)  # the store died during promotion: keep the parent run on disk
        return {"champion": None, "promoted": False, "decision": "",
                "reason": f"not decided: the tracking store failed during promotion ({tracker.failure})"}
    decision["champion"] = champion_name(tracker, decision, candidates)
    # this run's own best model, named apart from the champion: after `kept` / `not comparable` the
    # champion is an earlier run's model and the summary must not read as if this run had one
    decision["challenger"] = {v: k for k, v in candidates.items()}.get(decision.get("challenger_run_id") or "")
    decision["registered_model"] = cfg.promotion.registered_model
    return decision


def _store_failure(exc: BaseException) -> bool:
    """A TrackingError raised because the store did not answer (not a refusal of the rule)."""
    text = str(exc).lower()
    return any(s in text for s in ("not reachable", "connection", "timed out", "max retries", "cannot open"))


def standing_champion(tracker: Any, cfg: RunConfig) -> dict[str, Any]:
    """The champion alias of the run's registry line as it stands (champion, champion_version,
    champion_run_id; None each when there is none or the store cannot say): a run that trained
    nothing reports the model that serves, so a scheduler reading `--json` does not see null."""
    from recsys.tracking.registry import alias_version

    decision: dict[str, Any] = {"champion": None, "champion_version": None, "champion_run_id": None}
    try:
        version = alias_version(tracker.client, cfg.promotion.registered_model, "champion")
    except Exception:  # a look-up for the summary; the skip stands without it
        return decision
    if version is not None:
        decision.update(champion_version=version.version, champion_run_id=version.run_id)
        decision["champion"] = champion_name(tracker, decision, {})
    return decision


def champion_name(tracker: Any, decision: dict[str, Any], candidates: dict[str, str]) -> str | None:
    """The model holding the champion alias after promotion (`champion_run_id`): this run's challenger
    when promoted, else the standing champion (possibly from an earlier run, named by its run's model tag)."""
    run_id = decision.get("champion_run_id")
    if not run_id:
        return None
    by_run = {v: k for k, v in candidates.items()}
    if run_id in by_run:
        return by_run[run_id]
    try:
        run = tracker.client.get_run(run_id)
    except Exception:  # the champion's run was deleted: still report something useful
        return None
    return run.data.tags.get("recsys.model_name") or run.info.run_name
