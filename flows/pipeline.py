"""Prefect flows: ingest, train, evaluate and the whole `training_pipeline`.

Task runner: models train as concurrent tasks on a ThreadPoolTaskRunner with
`orchestration.max_workers` threads; each model gets `cores // max_workers` torch/BLAS threads
(pipelines.train.thread_budget), so two models never fight over the same cores. torch and
implicit release the GIL in their kernels, so threads give real parallelism without copying the
split into other processes. Ingest is cached by the data fingerprint + data settings (an unchanged
input skips re-ingest) and retried with backoff, like every I/O task.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from flows.api_loss import api_lost
from flows.errors import retry_unless_deterministic
from pipelines.data import (
    DatasetResult,
    dataset_dir,
    log_dataset,
    one_generation,
    prepare_dataset,
    run_data_dir,
    source_fingerprint,
)
from pipelines.report import comparison_markdown
from pipelines.run import (
    ModelOutcome,
    PipelineResult,
    dataset_summary,
    end_parent,
    failed_outcome,
    load_run_inputs,
    longest_first,
    make_tracker,
    parent_closed_on_error,
    prepare_run_inputs,
    promote_best,
    skipped_result,
    split_line,
    teachers_workspace,
    train_and_log,
)
from pipelines.train import pin_thread_budget, thread_budget
from pipelines.unchanged import forced, unchanged_check
from recsys import interrupt
from recsys.config import RunConfig, load_config
from recsys.data.storage import read_manifest
from recsys.distill import distillation_waves
from recsys.errors import ConfigError, DataError, TrackingError
from recsys.import_gc import imports_done

RESULTS_DIR = Path("data") / ".prefect-results"


def _ingest_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Data fingerprint + data settings: the same input and settings reuse the ingest result; and
    the result's own shape (its field names), since Prefect keeps the result pickled (in
    ~/.prefect/storage, shared by every checkout): after an upgrade that added a field to
    DatasetResult, a run whose key matched a result pickled by the older release failed with
    "'DatasetResult' object has no attribute 'warnings'" on every retry."""
    import dataclasses

    shape = hashlib.sha256(",".join(f.name for f in dataclasses.fields(DatasetResult)).encode()).hexdigest()[:8]
    return f"ingest-{parameters['fingerprint']}-{shape}"


def _backoff(retries: int, base: float) -> list[float]:
    return [base * (2**i) for i in range(retries)]


@task(name="ingest", task_run_name="ingest {fingerprint}", cache_key_fn=_ingest_cache_key, persist_result=True)
def ingest_task(cfg: RunConfig, fingerprint: str) -> DatasetResult:
    logger = get_run_logger()
    with one_generation(run_data_dir(cfg.data)):  # the lines below describe what was prepared
        result = prepare_dataset(cfg)
        manifest = read_manifest(Path(result.processed_dir))
    logger.info("data ready in %s (fingerprint %s, %s)", result.processed_dir, result.fingerprint,
                "reused" if result.reused else f"ingested {len(result.ingested_files)} file(s)")
    log_dataset(result, manifest, lambda line: logger.info("%s", line), logger.warning)
    return result


@task(name="split", task_run_name="split", cache_policy=NO_CACHE)
def split_task(dataset: DatasetResult, cfg: RunConfig, scheduled: bool = False):
    """(config with the scheduled protocol resolved, data, split); see pipelines.run.scheduled_config."""
    inputs = load_run_inputs(dataset, cfg, scheduled)
    get_run_logger().info("%s", split_line(inputs[2]))  # (cfg, data, split)
    return inputs


@task(name="train-model", task_run_name="train {model_cfg.name}", cache_policy=NO_CACHE)
def model_task(
    model_cfg, split, cfg: RunConfig, tracking: bool, parent_run_id, threads: int, data=None, teachers_dir=None,
    parent_tags: dict[str, str] | None = None,
) -> ModelOutcome:
    """One model's lifecycle. The tracker is rebuilt here (not passed in) so the task also runs in
    another process or on another machine (Dask), where the flow's objects do not exist; the parent
    run's inherited tags come along (`parent_tags`), so a model whose store died before it started
    still records them. Distillation teachers are handed over as saved models in `teachers_dir` (a
    local directory: students and teachers of one run must share a file system)."""
    logger = get_run_logger()
    tracker = task_tracker(cfg, tracking, parent_run_id)
    if parent_tags and getattr(tracker, "enabled", False):
        tracker.adopt_parent(parent_run_id, parent_tags)
    try:
        return train_and_log(
            model_cfg, split, cfg, tracker, parent_run_id, threads, log=logger.info, data=data, teachers_dir=teachers_dir
        )
    except interrupt.Interrupted:
        if _in_dask_worker():  # a KeyboardInterrupt ends a Dask worker process (which the nanny restarts)
            raise WorkerInterrupted(f"{model_cfg.name}: interrupted (the flow was stopped)") from None
        raise


class WorkerInterrupted(RuntimeError):
    """A model stopped in a Dask worker by the flow's interrupt (`_interrupt_dask_workers`): an
    ordinary task failure there, where the KeyboardInterrupt it is in a thread took the worker
    process down with exit status 1, and the nanny started a new one for the closing cluster."""


def _in_dask_worker() -> bool:
    import sys

    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def task_tracker(cfg: RunConfig, tracking: bool, parent_run_id: str | None = None):
    """A tracker for a task: the store was already checked by the flow, so no second probe; a store
    that stopped answering since (or that another tracker of this run found failing) starts it
    offline: the model trains, its run kept on disk."""
    from recsys.tracking.runs import NullTracker, Tracker

    if not (tracking and cfg.tracking.enabled):
        return NullTracker()
    return Tracker(cfg.tracking, cfg, check=False, offline_if_gone=True, parent_id=parent_run_id)


@task(name="promote", task_run_name="promote by {cfg.promotion.metric}", cache_policy=NO_CACHE)
def promote_task(cfg: RunConfig, tracker, outcomes: list[ModelOutcome], split=None) -> dict[str, Any]:
    """The champion is re-evaluated on this run's split when it was trained on older data."""
    return promote_best(cfg, tracker, outcomes, split)


def prefect_run_tags() -> dict[str, str]:
    """Tags linking the MLflow pipeline run to its Prefect flow run; a deployment's run (a
    schedule) shows the deployment as its source in the MLflow UI."""
    from prefect.runtime import deployment, flow_run

    tags: dict[str, str] = {}
    try:
        if root := flow_run.root_flow_run_id:
            tags["recsys.prefect_flow_run_id"] = str(root)
        if deployment.id:
            tags["mlflow.source.type"] = "JOB"
            tags["mlflow.source.name"] = f"prefect deployment {training_pipeline.name}:{deployment.name}"
    except Exception as exc:  # a lookup the API could not answer costs a tag, not the run
        get_run_logger().warning("could not read the Prefect run context for MLflow tags: %s", exc)
    return tags


def _configure(cfg: RunConfig):
    retries, delay = cfg.orchestration.retries, cfg.orchestration.retry_delay_seconds
    ingest = ingest_task.with_options(
        retries=retries, retry_delay_seconds=_backoff(retries, delay) or 0,
        retry_condition_fn=retry_unless_deterministic,  # bad input fails the same way every time
    )
    return ingest


def run_ingest_step(cfg: RunConfig) -> DatasetResult:
    """Ingest through the cached, retried task; refresh when the cached output has gone missing
    or passed landing files over."""
    ingest = _configure(cfg)
    # The cached result names a directory, so where it lives is part of the key too.
    where = hashlib.sha256(str(dataset_dir(cfg.data).resolve()).encode()).hexdigest()[:8]
    fingerprint = f"{source_fingerprint(cfg.data)}-{where}"
    state = ingest(cfg, fingerprint, return_state=True)
    dataset = state.result()  # raises what the task raised
    # A cached result is redone when its directory is gone or was rewritten by another writer, and
    # when it left landing files for later: one rewritten with the same bytes keeps the key.
    cached = state.name == "Cached"
    if (cached and dataset.passed_over) or _current_fingerprint(dataset) != dataset.fingerprint:
        dataset = ingest.with_options(refresh_cache=True)(cfg, fingerprint)
    return dataset


def _current_fingerprint(dataset: DatasetResult) -> str | None:
    """The fingerprint the (possibly cached) result's directory holds now; None when it is gone."""
    try:
        return str(read_manifest(Path(dataset.processed_dir)).get("fingerprint", ""))
    except (OSError, ValueError, DataError):
        return None


@flow(name="ingest", flow_run_name="ingest {config_path}", log_prints=True)
def ingest_flow(config_path: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Ingest `data.source` into a processed data directory (skipped when nothing changed)."""
    cfg = load_config(config_path, overrides or [])
    return run_ingest_step(cfg).to_dict()


def _training_pipeline(cfg: RunConfig, tracking: bool, scheduled: bool = False) -> PipelineResult:
    cfg = pin_thread_budget(cfg)
    logger = get_run_logger()
    wall = time.perf_counter()
    steps: dict[str, float] = {}
    t = time.perf_counter()
    tracker = make_tracker(cfg, enabled=tracking)  # fails fast when the server is unreachable
    tracking_seconds = time.perf_counter() - t  # MLflow work is step compute, like models' logging

    # One generation of the processed directory (`pipelines.run.prepare_run_inputs`): its writer
    # lock is held from the (possibly cached) ingest task through the split task, so a non-append
    # `recsys ingest --out` into it waits instead of replacing it in between. The tasks are called
    # in this thread, not submitted; a cached ingest whose directory no longer holds its
    # fingerprint is redone under the lock.
    inputs = prepare_run_inputs(cfg, scheduled, steps, prepare=run_ingest_step, load=split_task)
    dataset, cfg, data, split = inputs.dataset, inputs.cfg, inputs.data, inputs.split
    for warning in inputs.warnings:
        logger.warning("%s", warning)
    t = time.perf_counter()
    if getattr(tracker, "enabled", False):
        tracker.run_config = cfg  # the resolved protocol is what the run logs
    with unchanged_check(cfg, tracker, data, split, scheduled, logger.info) as unchanged:
        if unchanged.skip:  # the same decision as `recsys run --no-prefect` (pipelines.unchanged)
            logger.info("%s", unchanged.line)
            steps["tracking"] = tracking_seconds + time.perf_counter() - t
            create_markdown_artifact(markdown=f"**{cfg.name}**: {unchanged.line}",
                                     description=f"{cfg.name}: inputs unchanged, nothing trained")  # fmt: skip
            return skipped_result(dataset, split, cfg, tracker, unchanged, wall, steps)
        parent = tracker.start_parent(data=data, split=split, tags={**prefect_run_tags(), **unchanged.tags})
    steps["tracking"] = tracking_seconds + time.perf_counter() - t
    interrupt.clear()  # a new flow: an earlier interrupt in this process is over
    with parent_closed_on_error(tracker, parent), _workers_stop_with_the_flow():
        t = time.perf_counter()
        threads = thread_budget(cfg.orchestration)
        by_name: dict[str, ModelOutcome] = {}
        with teachers_workspace(cfg) as teachers:
            for wave in distillation_waves(list(cfg.models)):  # students start once their teachers are done
                wave = longest_first(wave)
                tags = tracker.parent_tags(parent) if getattr(tracker, "enabled", False) else {}
                futures = [model_task.submit(m, split, cfg, tracking, parent, threads, data, teachers, tags)
                           for m in wave]  # fmt: skip
                wait(futures)
                for model_cfg, future in zip(wave, futures, strict=True):
                    try:
                        by_name[model_cfg.name] = future.result()
                    except Exception as exc:
                        logger.error("model %s failed: %s", model_cfg.name, exc)
                        by_name[model_cfg.name] = failed_outcome(model_cfg, exc)
        outcomes = [by_name[m.name] for m in cfg.models]
        steps["models"] = time.perf_counter() - t
        compute = {o.name: o.compute_seconds for o in outcomes}

        t = time.perf_counter()
        decision = promote_task(cfg, tracker, outcomes, split)
        steps["promote"] = time.perf_counter() - t
        result = PipelineResult(
            dataset=dataset_summary(split, dataset, cfg), models=outcomes, champion=decision.get("champion"),
            promotion=decision, mlflow_parent_run_id=parent, tracking_uri=getattr(tracker, "shown_uri", None),
        )
        result.wall_seconds = time.perf_counter() - wall
        # Compute time = the steps' own work; models ran concurrently, so count the slowest lane.
        result.step_seconds = {"tracking": steps["tracking"], "ingest": steps["ingest"], "split": steps["split"],
                               "models": _critical_path(compute, cfg.orchestration.max_workers),
                               "promote": steps["promote"]}
        end_parent(tracker, parent, result, cfg)
    result.note_tracking(tracker)
    if api_lost():  # the server went away mid-run: no artifact (and under `recsys run`, no more retries)
        return result
    create_markdown_artifact(
        key="model-comparison", markdown=comparison_markdown(result, cfg),
        description=f"{cfg.name}: models compared on {split.protocol} split",
    )
    return result


@contextmanager
def _workers_stop_with_the_flow() -> Iterator[None]:
    """An interrupt of the flow (Ctrl-C, or Prefect's TerminationSignal on SIGTERM: its handler
    replaces the command's during the flow) also stops the models training in the task runner's
    threads (`recsys.interrupt`); leaving the flow waits for those threads. Under the Dask runner
    the models train in worker processes, which no signal to this one reaches: the request is
    made in them too (`_interrupt_dask_workers`)."""
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, Exception):
            interrupt.request()
            _interrupt_dask_workers()
        raise


DASK_STOP_SECONDS = 10.0
"""How long an interrupted flow waits for its Dask workers' models to stop and close their runs."""


def _interrupt_dask_workers(grace: float = DASK_STOP_SECONDS) -> None:
    """Make the interrupt request in the worker processes of this flow's own LocalCluster
    (`_local_dask_runner`), then wait up to `grace` seconds for their tasks to end: each model
    stops at its next check and closes its MLflow run KILLED, as in a thread. Before, the cluster's
    close killed the workers mid-epoch (after the nanny's 4 s) and left their runs RUNNING until the
    next start. A shared cluster (orchestration.dask_address) is left alone: its workers run other
    flows' tasks, which a process-wide request would stop too."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = getattr(context, "task_runner", None)
    if runner is None or not hasattr(runner, "interrupt_workers"):  # threads, or a shared cluster
        return
    try:
        runner.interrupt_workers(grace)
    except Exception as exc:  # the cluster is going down anyway: its close kills the workers
        get_run_logger().warning("could not ask the Dask workers to stop: %s", exc)


def _critical_path(compute: dict[str, float], workers: int) -> float:
    """Lower bound on the models' compute wall time when `workers` run at once."""
    return max(max(compute.values(), default=0.0), sum(compute.values()) / max(1, workers))


@flow(name="training-pipeline", flow_run_name="{config_path}", log_prints=True)
def training_pipeline(
    config_path: str | None = None, overrides: list[str] | None = None, tracking: bool = True,
    scheduled: bool = False, force: bool = False,
) -> dict[str, Any]:
    """Ingest -> split -> train every model (concurrently) -> evaluate -> log to MLflow -> promote.
    Returns the `recsys run --json` summary. The flow fails when any model failed.
    `scheduled` (set by the `recsys schedule` deployment): a log with timestamps is split by the
    rolling protocol unless `split.scheduled = "as_configured"` (pipelines.run.scheduled_config),
    and a run whose inputs equal the last finished run's trains nothing (pipelines.unchanged)
    unless `force` (`prefect deployment run training-pipeline/NAME --param force=true`)."""
    # A scheduled flow run's own process (`flows.flow_run_process`) put off full collections while
    # Prefect's engine and this flow's module imported their stack: now they are in, collect once and
    # freeze, as `recsys run` does before its flow (`recsys.import_gc`; a no-op in any other process).
    imports_done()
    cfg = load_config(config_path, overrides or [])
    if force:
        cfg = forced(cfg)
    runner = training_flow_for(cfg)
    summary = runner(cfg, tracking, scheduled)
    if summary.get("tracking_error"):
        from pipelines.report import tracking_failed_line

        raise TrackingLost(tracking_failed_line(summary, store_options(config_path, overrides)), summary)
    return summary


def store_options(config_path: str | None, overrides: list[str] | None) -> str:
    """` --config PATH --set tracking...` : the options of a deployment's run that find its store,
    experiment and registry line (its config and its tracking.* / promotion.* overrides), for the
    commands its messages print."""
    import shlex

    args = ["--config", config_path] if config_path else []
    for item in overrides or []:
        if item.split("=", 1)[0].strip().split(".", 1)[0] in ("tracking", "promotion"):
            args += ["--set", item]
    return "".join(f" {shlex.quote(a)}" for a in args)


def training_flow_for(cfg: RunConfig):
    """The inner flow with the task runner this config asks for."""
    return _pipeline_flow.with_options(task_runner=task_runner_for(cfg))


def task_runner_for(cfg: RunConfig):
    """threads (default): models share the process, each with cores // max_workers threads.
    dask: each model in a Dask worker process — a LocalCluster of max_workers processes, or the
    scheduler at orchestration.dask_address (a cluster: models and sweeps on many machines).
    sequential: one model at a time."""
    orch = cfg.orchestration
    if orch.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError(
                "orchestration.task_runner = 'dask' needs prefect-dask: pip install -e '.[dask]'"
            ) from None
        if orch.dask_address:
            return DaskTaskRunner(address=orch.dask_address)
        return _local_dask_runner()(cluster_kwargs={
            "n_workers": orch.max_workers, "threads_per_worker": 1, "processes": True,
            "dashboard_address": None, "host": "127.0.0.1", "preload": _worker_preloads(),
        })
    workers = 1 if orch.task_runner == "sequential" else orch.max_workers
    return ThreadPoolTaskRunner(max_workers=workers)


def _worker_preloads() -> list[str]:
    """The local cluster's worker preloads: the user's (dask config `distributed.worker.preload`,
    which an explicit list replaces) and `flows.dask_worker`, which freezes each worker's heap as it
    closes so that it exits before the nanny's 4 s are out (`recsys.exit_gc`)."""
    import dask.config

    from flows.dask_worker import PRELOAD

    configured = dask.config.get("distributed.worker.preload", default=[]) or []
    return [*([configured] if isinstance(configured, str) else configured), PRELOAD]


@functools.cache
def _local_dask_runner():
    """`DaskTaskRunner` whose LocalCluster workers report to this process's Prefect API. Without
    PREFECT_API_URL (`recsys run`: a temporary server), each worker process started a temporary
    server of its own (~20 s, a uvicorn child), and an interrupted run left it serving, orphaned,
    when the cluster's close killed its worker. The URL is known once the flow runs: the cluster is
    made on the first task's submit (the `client` property), so it is added there."""
    from prefect_dask import DaskTaskRunner

    class LocalDaskTaskRunner(DaskTaskRunner):
        @property
        def client(self):
            if not self._client and not self.address and (url := _prefect_api_url()):
                env = {**self.cluster_kwargs.get("env", {}), "PREFECT_API_URL": url}
                self.cluster_kwargs = {**self.cluster_kwargs, "env": env}
            return DaskTaskRunner.client.fget(self)  # type: ignore[attr-defined]

        def interrupt_workers(self, grace: float) -> None:
            """`recsys.interrupt.request()` in every worker of this runner's own cluster, then
            wait up to `grace` seconds for the tasks they are processing to end."""
            client = self._client
            if client is None or self.address:
                return
            client.run(interrupt.request)
            deadline = time.monotonic() + grace
            while any(client.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.1)

    return LocalDaskTaskRunner


def _prefect_api_url() -> str | None:
    from flows.ephemeral import current_api_url

    return current_api_url()


@flow(name="train-and-evaluate", flow_run_name="{cfg.name}")
def _pipeline_flow(cfg: RunConfig, tracking: bool = True, scheduled: bool = False) -> dict[str, Any]:
    with tasks_without_process_tags():
        result = _training_pipeline(cfg, tracking, scheduled)
    summary = result.to_json()
    if result.failed:
        names = ", ".join(f"{m.name} ({m.error})" for m in result.failed)
        raise PipelineFailed(f"{len(result.failed)} of {len(result.models)} models failed: {names}", summary)
    return summary


# ===================================================================== runs whose process died
TAG_PREFIX = "recsys."


def flow_run_tags() -> list[str]:
    """Prefect tags naming this process (`recsys.host:...`, `recsys.pid:...`, ...): run the flow
    inside `prefect.tags(*flow_run_tags())`, so a later start can tell the run's process died."""
    from recsys.tracking.liveness import process_tags

    return [f"{key}:{value}" for key, value in process_tags().items()]


@contextmanager
def tasks_without_process_tags() -> Iterator[None]:
    """Inside a flow run tagged by `flow_run_tags`: its task runs do not inherit those tags.

    Why: Prefect asks its API for a concurrency slot per tag before every tagged task starts, so
    the process tags cost each task a round trip for limits that never exist; and when the server
    died mid-run, each task still to start spent the client's retries on it (over a minute by
    default) before failing. Only the flow run needs the tags (`close_dead_flow_runs` reads flow
    runs by them, and their task runs by flow run); other tags are kept."""
    from prefect.context import TagsContext

    current = TagsContext.get().current_tags
    with TagsContext(current_tags={tag for tag in current if not tag.startswith(TAG_PREFIX)}):
        yield


def close_dead_flow_runs() -> list[str]:
    """Set Crashed every RUNNING flow run (and its RUNNING task runs) of this host whose process is
    gone, by the tags of `flow_run_tags`: what Prefect itself does when a worker's infrastructure
    vanishes, which a flow run started from a terminal has no worker to do. Returns their ids."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    from recsys.tracking.liveness import TAG_HOST, dead_pid, process_tags

    mine = process_tags()
    running = [StateType.RUNNING]
    closed = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=running)),
                tags=FlowRunFilterTags(all_=[f"{TAG_HOST}:{mine[TAG_HOST]}"]),
            ),
            limit=200,
        )
        for run in runs:
            tags = dict(tag.split(":", 1) for tag in run.tags if tag.startswith(TAG_PREFIX) and ":" in tag)
            pid = dead_pid(tags)
            if pid is None:
                continue
            note = f"process {pid} on {mine[TAG_HOST]} ended without finishing this run (killed or crashed)"
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=running))
                ),
            )
            for task in tasks:
                client.set_task_run_state(task.id, Crashed(message=note), force=True)
            client.set_flow_run_state(run.id, Crashed(message=note), force=True)
            closed.append(str(run.id))
    return closed


class TrackingLost(TrackingError):
    """A deployment's run whose tracking store failed: every model trained and was kept on disk,
    and nothing was logged or promoted. Carries the summary.

    Why: such a run ended Completed, like a run that had logged everything: a schedule's operator saw
    green in Prefect while the models waited in `tracking.offline_dir` for a `--resume-tracking`
    nobody knew to run (only WARNING lines said so). `recsys run` exits 2 for it; the deployment's
    run now fails with the same one line (the server, how it went, what was kept where, the resume
    command). The models' own flow (`train-and-evaluate`) stays Completed: they did train."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


class PipelineFailed(RuntimeError):
    """Some models failed; the others finished and were logged. Carries the summary.

    Each failed model was logged as one line (`model X failed: ...`), so Prefect's traceback of
    this exception is kept off the terminal (`reported`, read by `flows.errors`)."""

    reported = True

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary
