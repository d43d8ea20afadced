"""Tracking a pipeline run: one parent MLflow run, one child run per model, everything logged.

All calls go through an explicit `MlflowClient` with explicit run ids, never MLflow's fluent
active-run stack: models train in concurrent threads, and each thread logs to its own child run.
`NullTracker` has the same interface and does nothing, so `--no-tracking` needs no `if` anywhere.

Metric names: MLflow refuses '@', so "recall@20" is logged as "recall_at_20" and its bootstrap
interval as "recall_at_20_ci_low" / "recall_at_20_ci_high" (`store.metric_key` / `metric_name`).

The parent run holds the split every model of the run was evaluated on (`split/`: matrices, meta,
vocab; recsys.tracking.split_artifact) and, like its children, the lineage tags (recsys.lineage).

What a model's child run holds (artifact paths):
    config/run.toml, config/model.json      resolved pipeline config and the model's own config
    data/manifest.json                      data manifest + split meta (fingerprint, protocol, seed)
    evaluation/per_user.parquet             user_id, user_idx + one column per per-user metric
    evaluation/summary.json                 summary and intervals with the original metric names
    plots/*.png                             recall@k, training curves, popularity bias, item PCA
    model/                                  the MLflow pyfunc (models-from-code) answering top-k
    model/artifacts/serving/model/          `model.save` (the recsys format, loadable with
                                            Recommender.load): the one copy of the factors
    error.txt                               only for a FAILED run: the error text

The factors are stored once per model: the pyfunc's serving artifacts read them from the saved
model beside them (runs logged before kept `embeddings/` and `saved_model/` copies as well).
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from recsys.data.split import split_digest  # noqa: F401 - the digest tags and checks use, re-exported
from recsys.errors import TrackingError, first_line
from recsys.faults import fault_point
from recsys.files import scratch_dir
from recsys.tracking import plots, ui
from recsys.tracking.offline import (
    PARENT_KEY,
    RunRecord,
    bundle_dir,
    hold_bundle,
    keep_files,
    keep_text,
    offline_run_id,
    release_bundle,
    save_record,
)
from recsys.tracking.store import (
    check_tracking,
    client,
    ensure_experiment,
    lost_connection,
    metric_key,
    redact,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from recsys.config import RunConfig, TrackingConfig
    from recsys.data.dataset import InteractionData
    from recsys.data.split import Split
    from recsys.models.base import ModelConfig, Recommender

log = logging.getLogger(__name__)

PARAM_VALUE_LIMIT = 500  # the most conservative server limit (MLflow < 2.x); longer values are cut
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
TAG_VALUE_LIMIT = 5000
VERSION_PACKAGES = ("recsys", "torch", "implicit", "polars", "mlflow", "numpy", "scipy")

# Tags: the promotion rule reads these to refuse comparing models evaluated on different data.
TAG_KIND = "recsys.kind"  # "pipeline" | "model"
TAG_MODEL = "recsys.model_name"
TAG_MODEL_KIND = "recsys.model_kind"
TAG_FINGERPRINT = "recsys.data_fingerprint"
TAG_SPLIT_PROTOCOL = "recsys.split_protocol"
TAG_SPLIT_DIGEST = "recsys.split_digest"
TAG_CONFIG_HASH = "recsys.config_hash"
TAG_GIT_COMMIT = "recsys.git_commit"
TAG_ERROR = "recsys.error"
TAG_MODEL_VERSION = "recsys.registered_version"
TAG_SAMPLED_NEGATIVES = "recsys.evaluation.sampled_negatives"  # only on runs scored with sampled metrics
FULL_CORPUS = "full corpus"


def evaluation_protocol(tags: Mapping[str, str]) -> str:
    """How a model run's metrics were computed: "full corpus", or "sampled (N negatives)" for a run
    evaluated with `evaluation.sampled_negatives`. Numbers of two protocols never compare: sampled
    metrics rank each test item among N random negatives and come out far higher (Krichene & Rendle
    2020), so compare and promotion keep them apart."""
    n = tags.get(TAG_SAMPLED_NEGATIVES)
    return f"sampled ({n} negatives)" if n else FULL_CORPUS
PER_USER_ARTIFACT = "evaluation/per_user.parquet"
SUMMARY_ARTIFACT = "evaluation/summary.json"
PYFUNC_ARTIFACT = "model"

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# Small helpers


def git_commit(cwd: str | Path | None = None) -> str:
    """HEAD's commit, or "unknown" outside a git checkout (installed package, no git binary)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions


DESCRIPTION = "mlflow.note.content"
"""MLflow's run description (markdown), shown at the top of the run's page in the UI."""


def model_description(model: Recommender, eval_result: Any, metric: str, name: str, version: str) -> str:
    """A model run's description: its headline metric with the interval and users, and how to
    serve this very version (the UI showed "No description" above 180 metrics)."""
    value, (low, high) = eval_result.summary.get(metric), eval_result.ci.get(metric, (None, None))
    score = f"{metric} = {value:.4f}" if value is not None else f"{metric}: not computed"
    if value is not None and low is not None and high is not None:
        score += f" [{low:.4f}, {high:.4f}]"
    return (
        f"**{model.config.name}** ({model.kind}): {score} over {eval_result.n_users_evaluated} test users. "
        f"Registered as `{name}` version {version}: `recsys serve --model {name} --version {version}`."
    )


def logged_config(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as it is logged (the parent run's params, `config/run.toml`), with a
    password in `tracking.tracking_uri` (`postgresql://user:PASSWORD@host/db`) replaced by ***:
    everyone who can read the store reads these, and the password was there in clear."""
    resolved = cfg.resolved()
    tracking = resolved.get("tracking") or {}
    if tracking.get("tracking_uri"):
        tracking["tracking_uri"] = redact(str(tracking["tracking_uri"]))
    return resolved


def param_dict(flat: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow wants them: strings, None dropped, long values cut with a visible marker."""
    out = {}
    for key, value in flat.items():
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        out[key] = text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 3] + "..."
    return out


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric, finite values under MLflow-safe keys (NaN/inf and non-numbers are dropped)."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            continue
        if np.isfinite(value):
            out[metric_key(str(name))] = float(value)
    return out


LOCKED = ("locked", "busy")
"""SQLite's words for a store another writer holds (each try waits MLflow's busy timeout first)."""
RACED = ("unique constraint failed", "duplicate key value violates unique constraint", "duplicate entry")
"""A unique key another writer inserted between this call's look and its insert (SQLite, PostgreSQL, MySQL)."""
RACE_ATTEMPTS = 4


def _raced(exc: BaseException, text: str) -> bool:
    """Whether `exc` is MLflow's check-then-insert losing to a concurrent writer, not a definite answer.

    Why: MLflow's SQLAlchemy store writes some rows shared across runs as "look, insert when
    missing" in one transaction: the experiment's datasets (`log_inputs`: two runs on the same
    data logged it together), the experiment's tags (`set_experiment_tag`). When two processes (or
    threads) do it at once, the loser's insert breaks the unique key and its whole transaction is
    rolled back; tried again, it finds the winner's row and succeeds. It was taken for a failed
    store and sent the run's tracking offline. "Already exists" (RESOURCE_ALREADY_EXISTS) is the
    store's own answer to a create, not a race: the caller decides (`ensure_experiment`,
    `ensure_registered_model`). PostgreSQL's own unique-violation text ends with a line
    "DETAIL:  Key (...)=(...) already exists." (psycopg and psycopg2 alike, directly or through a
    tracking server): that line is the database's, not MLflow's answer, so it is read past; taken
    for "already exists", every lost race on PostgreSQL sent the run's tracking offline."""
    if "RESOURCE_ALREADY_EXISTS" in str(getattr(exc, "error_code", "")):
        return False
    own = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("detail:"))
    if "already exists" in own:
        return False
    return any(word in text for word in RACED)


def with_retries(fn: Callable[[], T], attempts: int = 8, first_delay: float = 0.1) -> T:
    """Retry a store call that failed because another writer was in its way: SQLite locked by
    another writer (two pipeline processes on one local store), or a unique row another writer
    inserted first (`_raced`: a few tries, the winner's row is there at once); any other error is
    raised at once."""
    delay = first_delay
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            text = str(exc).lower()
            locked = any(word in text for word in LOCKED)
            raced = not locked and attempt < RACE_ATTEMPTS - 1 and _raced(exc, text)
            if attempt == attempts - 1 or not (locked or raced):
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------------------
# Runs


@dataclass
class ModelRun:
    """One model's child run. `callback` has the model's fit-callback signature, so
    `model.fit(train, callback=run.callback)` streams per-epoch metrics to MLflow."""

    run_id: str
    name: str
    parent_id: str | None
    tracker: Tracker | NullTracker = field(repr=False)
    steps_logged: int = 0

    def callback(self, step: int, metrics: dict[str, float]) -> None:
        self.steps_logged += 1
        self.tracker.log_metrics(self.run_id, metrics, step=step)
        return None  # never asks the model to stop; early stopping is the model's own decision


@dataclass(frozen=True)
class LoggedModel:
    """What `log_model_result` produced: where the pyfunc lives and its registry version."""

    run_id: str
    model_uri: str
    registered_name: str | None = None
    version: str | None = None


_GONE: dict[tuple[str, str], str] = {}
"""(store URI, pipeline parent run id) -> why the store failed during that run, as the first of
its trackers in this process found it. A frozen server (it accepts connections, never answers)
costs each new tracker MLflow's timeout times its tries (~95 s): every model task of a run built
its own tracker and paid it again, so a run of four models took 413 s instead of 45. The later
trackers of that run start offline at once, and the run's tracking stays all offline, as one
tracker's does. Keyed by run: a long-lived `recsys schedule` process asks the store afresh for its
next run."""


class Tracker:
    """Logs a pipeline run to MLflow. Thread-safe: every call names its run explicitly.

    Store failures (recsys.tracking.offline): every run this tracker opens is also recorded in
    memory. The first store call that fails (after the SQLite-lock retries) sets `failure`; from
    then on no call reaches the store, and every run not complete on it is written, with its
    artifacts and saved model, to the bundle `kept_in`, which `recsys run --resume-tracking` logs
    later. So a dying server costs the run its tracking, never its models.
    """

    enabled = True

    def __init__(
        self,
        cfg: TrackingConfig,
        run_config: RunConfig | None = None,
        *,
        check: bool = True,
        offline_if_gone: bool = False,
        parent_id: str | None = None,
    ) -> None:
        """`offline_if_gone`: for a model task of a pipeline run whose store was checked when the
        run started (the flow's tracker). A store that no longer answers then starts this tracker
        offline (its runs kept on disk, `failure` set) instead of raising: a store that died
        before a queued model's task began cost that model itself ("model failed: cannot use
        experiment"), where the README promises a dead store costs the tracking only. When another
        tracker of this process already found the store failing during the run of `parent_id`, it
        starts offline without asking the store (`_GONE`)."""
        self.cfg = cfg
        self.run_config = run_config
        self.uri = resolve_tracking_uri(cfg)
        self.shown_uri = redact(self.uri)  # what is printed, logged and written: never a password
        self._parent_tags: dict[str, dict[str, str]] = {}
        self._lock = threading.RLock()
        self._records: dict[str, RunRecord] = {}
        self._closed: set[str] = set()  # runs whose close completed (`end`): never closed again
        self.failure: str | None = None
        self.kept_in: Path | None = None
        if check:
            check_tracking(self.uri)
        self.client: MlflowClient = client(self.uri)
        if offline_if_gone and (gone := _GONE.get((self.uri, parent_id or ""))):
            self.experiment_id = ""
            self.mark_failed(gone)
            return
        try:
            self.experiment_id = with_retries(
                lambda: ensure_experiment(self.client, cfg.experiment, self.uri, cfg.artifact_location)
            )
        except Exception as exc:
            if offline_if_gone:
                self.experiment_id = ""
                self.mark_failed(exc)
                return
            if isinstance(exc, TrackingError):
                raise
            raise TrackingError(
                f"tracking store {self.shown_uri}: cannot use experiment {cfg.experiment!r}: {exc}"
            ) from None
        metric = run_config.promotion.metric if run_config is not None else "recall@20"
        try:  # how the MLflow UI shows the experiment; never worth failing a run over
            with_retries(lambda: ui.present_experiment(self.client, self.experiment_id, metric))
        except Exception as exc:
            log.warning("could not tag experiment %s for the MLflow UI: %s", cfg.experiment, exc)
        if check:  # the process that checks the store is the one starting a pipeline run
            self.closed_dead_runs = self._close_dead_runs()

    def parent_tags(self, parent_id: str | None) -> dict[str, str]:
        """The tags the model runs under `parent_id` copy from it (`ui.inherited`), as this tracker
        opened it; for `adopt_parent` in another tracker (a model task's)."""
        with self._lock:
            return dict(self._parent_tags.get(parent_id or "", {}))

    def adopt_parent(self, parent_id: str | None, tags: Mapping[str, str]) -> None:
        """Take the tags of a parent run another tracker opened (the flow's), so this one's model
        runs inherit them without asking the store, which may have died since: a model run opened
        offline without them was logged by `--resume-tracking` without its lineage, split and data
        tags, so `recsys compare` and `recsys promote` never saw it."""
        if parent_id and tags:
            with self._lock:
                self._parent_tags[parent_id] = dict(tags)

    def _close_dead_runs(self) -> list[str]:
        """Close KILLED the runs of this experiment whose process died (recsys.tracking.liveness)."""
        from recsys.tracking.liveness import mark_dead_runs

        try:
            closed = mark_dead_runs(self.client, [self.experiment_id], self.cfg.stale_run_minutes * 60)
        except Exception as exc:  # never a reason not to start: say so and go on
            log.warning("could not check for runs left RUNNING by dead processes: %s", exc)
            return []
        if closed:
            log.warning("closed %d run(s) left RUNNING by a process that died: %s", len(closed), closed)
        return closed

    # ------------------------------------------------------------------ store calls and records
    def _send(self, fn: Callable[[], T]) -> T | None:
        """`fn()` against the store, or None (and offline from now on) when it fails, or when
        another tracker of this run found it failing (`_GONE`)."""
        if self.failure is None and _GONE:
            with self._lock:
                parents = list(self._parent_tags)
            if gone := next((_GONE[self.uri, p] for p in parents if (self.uri, p) in _GONE), None):
                self.mark_failed(gone)
        if self.failure is not None:
            return None
        try:
            return with_retries(fn)
        except Exception as exc:
            self.mark_failed(exc)
            return None

    def mark_failed(self, exc: BaseException | str) -> None:
        """Go offline: record why, and keep every run not complete on the store on disk."""
        with self._lock:
            if self.failure is not None:
                return
            text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
            self.failure = lost_connection(text) or (
                text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
            )
            runs = {r.run_id if r.key == PARENT_KEY else r.parent_id for r in self._records.values()}
            for parent in (runs | set(self._parent_tags)) - {None, ""}:
                _GONE[self.uri, str(parent)] = self.failure
            log.warning(
                "tracking store %s failed (%s): keeping runs under %s",
                self.shown_uri,
                self.failure,
                self.cfg.offline_dir,
            )
            for record in self._records.values():
                self._keep(record)

    def _bundle(self, record: RunRecord) -> Path:
        """The pipeline run's bundle: a trial's record goes where its model's run goes."""
        if record.key == PARENT_KEY:
            return bundle_dir(self.cfg.offline_dir, record.run_id)
        parent = self._records.get(record.parent_id or "")
        if parent is not None:
            return self._bundle(parent)
        return bundle_dir(self.cfg.offline_dir, record.parent_id or record.run_id)

    def _keep(self, record: RunRecord) -> None:
        """Write the record to its bundle (only once the tracker is offline)."""
        if self.failure is None:
            return
        bundle = self._bundle(record)
        hold_bundle(bundle)  # until the run it is named after ends: no resume logs half of it
        save_record(bundle, record)
        if record.key == PARENT_KEY or self.kept_in is None:
            self.kept_in = bundle

    def _add(self, record: RunRecord) -> RunRecord:
        with self._lock:
            self._records[record.run_id] = record
            self._keep(record)
        return record

    def _changed(self, run_id: str, change: Callable[[RunRecord], None]) -> RunRecord | None:
        with self._lock:
            record = self._records.get(run_id)
            if record is not None:
                change(record)
                self._keep(record)
            return record

    # ------------------------------------------------------------------ parent
    def start_parent(
        self,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        data: InteractionData | None = None,
        split: Split | None = None,
    ) -> str:
        """Open the pipeline's parent run: provenance tags, the flattened config as params and,
        when given, the data set as a run input. Returns the run id. `tags` may override the
        run's source (`mlflow.source.*`, e.g. a Prefect deployment), which its model runs inherit."""
        from recsys.config import flatten
        from recsys.tracking.liveness import opened_tags

        commit = git_commit()
        all_tags = {TAG_KIND: "pipeline", TAG_GIT_COMMIT: commit, **ui.source_tags(commit)}
        all_tags.update({f"recsys.version.{k}": v for k, v in package_versions().items()})
        if self.run_config is not None:
            from recsys.lineage import lineage

            all_tags[TAG_CONFIG_HASH] = self.run_config.config_hash()
            all_tags[TAG_SPLIT_PROTOCOL] = self.run_config.split.protocol
            all_tags.update(lineage(self.run_config).tags())  # children inherit it: compared within it
        all_tags.update(self._split_tags(data, split))
        all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
        all_tags.update(opened_tags())
        name = run_name or (self.run_config.name if self.run_config is not None else "pipeline")
        try:
            run = with_retries(lambda: self.client.create_run(self.experiment_id, run_name=name, tags=all_tags))
        except Exception as exc:  # e.g. a read-only SQLite store: it opens, but refuses writes
            raise TrackingError(
                f"cannot write to the tracking store ({self.shown_uri}: {first_line(exc)}): make it writable, "
                "point tracking.tracking_uri elsewhere, or turn tracking off with {option}",
                setting="tracking.enabled", value="false",
            ) from None
        run_id = run.info.run_id
        self._beating(run_id)
        with self._closed_if_not_opened(run_id):
            self._add(RunRecord(PARENT_KEY, name, run_id, tags=dict(all_tags)))
            with self._lock:
                self._parent_tags[run_id] = ui.inherited(all_tags)
            fault_point("tracking.parent_opened")
            if self.run_config is not None:
                self.log_params(run_id, flatten(logged_config(self.run_config)))
            if data is not None:
                self.log_dataset(run_id, data)
            if split is not None:  # what `recsys promote` and audits read back (split_artifact.py)
                from recsys.tracking.split_artifact import log_split

                self._send(lambda: log_split(self.client, run_id, split))
        return run_id

    def _beating(self, run_id: str) -> None:
        """Stamp the open run's heartbeat every minute until `end` (recsys.tracking.liveness)."""
        from recsys.tracking.liveness import HEARTBEATS

        HEARTBEATS.add(self.client, run_id)

    @contextmanager
    def _closed_if_not_opened(self, run_id: str) -> Iterator[None]:
        """Close the run just created when opening it goes no further: KILLED on an interrupt,
        FAILED on an error. Opening a run is several store calls after its creation (params, the
        data set, the split artifact uploaded through a remote server's proxy: seconds against the
        team stack), and a Ctrl-C or SIGTERM among them left the run RUNNING, for the caller's
        handler that closes runs on an interrupt starts only once it has the run's id."""
        try:
            yield
        except BaseException as exc:
            try:
                self.end(run_id, "FAILED" if isinstance(exc, Exception) else "KILLED")
            except Exception:  # noqa: S110 - a store failing here must not hide the interrupt itself
                pass
            raise

    def log_dataset(self, run_id: str, data: InteractionData, context: str = "train") -> None:
        """Record the data set as an MLflow dataset input (source, fingerprint digest, schema, counts)."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.types.schema import ColSpec, Schema

        manifest = dict(data.manifest)
        schema = Schema(
            [ColSpec(_mlflow_type(str(dtype)), name) for name, dtype in data.interactions.schema.items()]
        )
        dataset = MetaDataset(
            source=_dataset_source(ui.dataset_source(manifest)),
            name=ui.dataset_name(manifest),
            digest=(data.fingerprint or "unknown")[:36],
            schema=schema,
        )
        input_tags = {
            "mlflow.data.context": context,
            "n_users": str(data.n_users),
            "n_items": str(data.n_items),
            "n_interactions": str(data.interactions.height),
        }
        entity = dataset._to_mlflow_entity()
        fields = ("name", "digest", "source_type", "source", "schema", "profile")
        kept = {"dataset": {f: getattr(entity, f) for f in fields}, "tags": input_tags}
        self._changed(run_id, lambda r: r.datasets.append(kept))
        entry = DatasetInput(entity, tags=[InputTag(k, v) for k, v in input_tags.items()])
        self._send(lambda: self.client.log_inputs(run_id, datasets=[entry]))

    # ------------------------------------------------------------------ children
    def start_child(
        self, parent_id: str | None, model_config: ModelConfig, tags: Mapping[str, str] | None = None
    ) -> ModelRun:
        """Open a model's run nested under the pipeline run; params = the model's config."""
        from recsys.config import flatten
        from recsys.tracking.liveness import opened_tags

        with self._lock:
            inherited = dict(self._parent_tags.get(parent_id or "", {}))
        if parent_id and not inherited:  # a tracker in another process (Dask task): ask the store
            parent = self._send(lambda: self.client.get_run(parent_id))
            parent_tags = parent.data.tags if parent is not None else {}
            inherited = ui.inherited(parent_tags)
        inherited.pop(TAG_KIND, None)
        all_tags = {
            **inherited,
            TAG_KIND: "model",
            TAG_MODEL: model_config.name,
            TAG_MODEL_KIND: model_config.kind,
            **({"mlflow.parentRunId": parent_id} if parent_id else {}),
            **{str(k): str(v) for k, v in (tags or {}).items()},
            **opened_tags(),
        }
        run = self._send(
            lambda: self.client.create_run(self.experiment_id, run_name=model_config.name, tags=all_tags)
        )
        run_id = run.info.run_id if run is not None else offline_run_id()
        if run is not None:
            self._beating(run_id)
        with self._closed_if_not_opened(run_id):
            self._add(RunRecord(model_config.name, model_config.name, run_id, parent_id, tags=dict(all_tags)))
            self.log_params(run_id, flatten(model_config.model_dump(mode="json")))
        return ModelRun(run_id, model_config.name, parent_id, self)

    def start_trial(
        self, model_run_id: str, model_config: ModelConfig, number: int, params: Mapping[str, Any]
    ) -> str:
        """A tuning trial's run, nested under its model's run (`recsys.kind = trial`, so comparisons
        and promotion, which read model runs, never see it); params = the trial's parameters."""
        from recsys.tracking.liveness import opened_tags

        tags = {
            TAG_KIND: "trial",
            TAG_MODEL: model_config.name,
            TAG_MODEL_KIND: model_config.kind,
            "recsys.trial_number": str(number),
            "mlflow.parentRunId": model_run_id,
            **opened_tags(),
        }
        name = f"{model_config.name}-trial-{number}"
        run = self._send(lambda: self.client.create_run(self.experiment_id, run_name=name, tags=tags))
        run_id = run.info.run_id if run is not None else offline_run_id()
        if run is not None:
            self._beating(run_id)
        with self._closed_if_not_opened(run_id):
            self._add(RunRecord(name, name, run_id, model_run_id, tags=dict(tags)))
            self.log_params(run_id, dict(params))
        return run_id

    @contextmanager
    def model_run(self, parent_id: str | None, model_config: ModelConfig) -> Iterator[ModelRun]:
        """`with tracker.model_run(parent, cfg) as run:` ends FINISHED, or FAILED with the error."""
        run = self.start_child(parent_id, model_config)
        try:
            yield run
        except BaseException as exc:
            self.end(run, "FAILED", error=f"{type(exc).__name__}: {exc}")
            raise
        self.end(run, "FINISHED")

    # ------------------------------------------------------------------ logging
    def log_params(self, run_id: str, flat: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        values = param_dict(flat)
        self._changed(run_id, lambda r: r.params.update(values))
        params = [Param(k, v) for k, v in values.items()]
        for start in range(0, len(params), PARAMS_PER_BATCH):
            chunk = params[start : start + PARAMS_PER_BATCH]
            self._send(lambda chunk=chunk: self.client.log_batch(run_id, params=chunk))

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        entries = [Metric(k, v, stamp, int(step or 0)) for k, v in finite_metrics(metrics).items()]
        self._changed(
            run_id, lambda r: r.metrics.extend((m.key, m.value, m.step, m.timestamp) for m in entries)
        )
        for start in range(0, len(entries), METRICS_PER_BATCH):
            chunk = entries[start : start + METRICS_PER_BATCH]
            self._send(lambda chunk=chunk: self.client.log_batch(run_id, metrics=chunk))

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        entries = [RunTag(str(k), str(v)[:TAG_VALUE_LIMIT]) for k, v in tags.items()]
        self._changed(run_id, lambda r: r.tags.update({e.key: e.value for e in entries}))
        self._send(lambda: self.client.log_batch(run_id, tags=entries))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """A text artifact; kept in the run's bundle folder when the store is (or goes) down."""
        self._send(lambda: self.client.log_text(run_id, text, artifact_file))
        with self._lock:
            record = self._records.get(run_id)
            if self.failure is not None and record is not None:
                keep_text(self._bundle(record), record, text, artifact_file)

    def log_artifacts(self, run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
        """A directory of artifacts; kept in the run's bundle folder when the store is (or goes) down."""
        self._send(lambda: self.client.log_artifacts(run_id, str(local_dir), artifact_path))
        with self._lock:
            record = self._records.get(run_id)
            if self.failure is not None and record is not None:
                keep_files(self._bundle(record), record, Path(local_dir), artifact_path)

    def log_dict(self, run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
        self.log_text(run_id, json.dumps(data, indent=2, default=str), artifact_file)

    def _resolved_params(self, run_id: str, model: Recommender) -> dict[str, Any]:
        """`resolved.<key>` for every setting the fit resolved from the data (None / "auto" ->
        the value used: EASE's l2, a two-tower's batch size and temperature, WALS's confidence).
        The run's params are logged before the fit, so the MLflow UI showed `temperature = auto`
        and no `l2` at all, while config/model.json held the values the model trained with;
        MLflow params cannot be changed once logged, hence the prefix."""
        with self._lock:
            record = self._records.get(run_id)
            logged = dict(record.params) if record is not None else {}
        from recsys.config import flatten

        resolved = param_dict(flatten(model.config.model_dump(mode="json")))
        return {f"resolved.{k}": v for k, v in resolved.items() if logged.get(k) != v}

    def _log_ann(self, run_id: str, staging: Path) -> None:
        """The ANN index's parameters (params `ann.*`) and its recall against exact search on a
        sample of users (metrics `ann_recall@k`, stored as ann_recall_at_k), when the serving artifacts got one."""
        from recsys.ann import META_FILE
        from recsys.tracking.pyfunc import ARTIFACT_KEY

        meta_file = staging / ARTIFACT_KEY / META_FILE
        if not meta_file.is_file():
            return
        meta = json.loads(meta_file.read_text())
        params = {f"ann.{k}": v for k, v in meta["params"].items()}
        params.update({"ann.library": meta.get("library"), "ann.index": meta.get("index"),
                       "ann.augmented": meta.get("augmented"), "ann.recall_users": meta.get("recall_users")})  # fmt: skip
        self.log_params(run_id, params)
        metrics = {f"ann_{k}": v for k, v in meta.items() if k.startswith("recall@")}
        metrics["ann_build_seconds"] = meta.get("build_seconds")
        self.log_metrics(run_id, metrics)

    def log_model_result(
        self,
        model_run: ModelRun,
        model: Recommender,
        eval_result: Any,
        split: Split,
        data: InteractionData | None = None,
        extra_metrics: Mapping[str, Any] | None = None,
    ) -> LoggedModel:
        """Final metrics (every k, with intervals), artifacts, the pyfunc, and a registry version.

        `eval_result` is a `recsys.evaluation.evaluate.EvaluationResult`; `extra_metrics` adds e.g.
        folding diagnostics (non-numeric values are skipped). When the store fails, the artifacts
        (the saved model among them) are kept in the bundle instead."""
        run_id = model_run.run_id
        self.set_tags(run_id, self._split_tags(data, split))
        sampled = getattr(eval_result, "sampled_negatives", None)
        if sampled is not None:
            self.set_tags(run_id, {TAG_SAMPLED_NEGATIVES: str(sampled)})
        if data is not None:  # the runs table shows each model's training data, not only the parent's
            self.log_dataset(run_id, data)
        metrics: dict[str, Any] = dict(eval_result.summary)
        for name, (low, high) in eval_result.ci.items():
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = low, high
        metrics.update(
            n_users_evaluated=eval_result.n_users_evaluated,
            n_users_skipped=eval_result.n_users_skipped,
            eval_seconds=eval_result.seconds,
            fit_seconds=model.fit_seconds,
        )
        metrics.update(dict(extra_metrics or {}))
        resumed = getattr(model, "resumed_from", None)
        if resumed:  # training continued a checkpoint: say from where, beside the metrics it produced
            from recsys.training import RESUMED_CHECKPOINT_TAG

            metrics.update(resumed_from_epoch=resumed["epoch"], resumed_from_step=resumed["step"])
            self.set_tags(run_id, {RESUMED_CHECKPOINT_TAG: resumed["checkpoint"]})
        self.log_metrics(run_id, metrics)
        self.log_params(run_id, self._resolved_params(run_id, model))
        if model_run.steps_logged == 0 and model.history:
            for entry in model.history:  # history not streamed through the callback: log it now
                self.log_metrics(
                    run_id, {k: v for k, v in entry.items() if k != "step"}, step=int(entry["step"])
                )
        fault_point("tracking.artifacts")
        with scratch_dir("recsys-run") as tmp:
            root = Path(tmp) / "artifacts"
            self._write_artifacts(root, model, eval_result, split, data, title=self._plot_title(model, run_id))
            from recsys.tracking.pyfunc import save_pyfunc

            pyfunc_dir = Path(tmp) / PYFUNC_ARTIFACT
            ann = self.run_config.serving.ann if self.run_config is not None else None
            save_pyfunc(model, split, pyfunc_dir, staging=Path(tmp) / "staging", ann=ann)
            self._log_ann(run_id, Path(tmp) / "staging")
            self._send(lambda: self.client.log_artifacts(run_id, str(root)))
            self._send(lambda: self.client.log_artifacts(run_id, str(pyfunc_dir), PYFUNC_ARTIFACT))
            self._send(lambda: ui.record_logged_model(self.client, run_id, pyfunc_dir, PYFUNC_ARTIFACT))
            with self._lock:
                record = self._records.get(run_id)
                if self.failure is not None and record is not None:
                    keep_files(self._bundle(record), record, root)
                    keep_files(self._bundle(record), record, pyfunc_dir, PYFUNC_ARTIFACT)
        model_uri = f"runs:/{run_id}/{PYFUNC_ARTIFACT}"
        if not self.cfg.register_models:
            return LoggedModel(run_id, model_uri)
        from recsys.tracking.registry import register_run_model

        name = f"{self.cfg.model_name_prefix}-{model.config.name}"
        wanted = {"name": name, "tags": {TAG_MODEL_KIND: model.kind}}
        self._changed(run_id, lambda r: setattr(r, "register", wanted))
        version = self._send(lambda: register_run_model(self.client, name, run_id, tags=wanted["tags"]))
        if version is None:
            return LoggedModel(run_id, model_uri, name, None)
        self._changed(run_id, lambda r: setattr(r, "register", None))
        self.set_tags(run_id, {TAG_MODEL_VERSION: f"{name}/{version.version}",
                               DESCRIPTION: model_description(model, eval_result, self._headline(), name,
                                                              str(version.version))})  # fmt: skip
        return LoggedModel(run_id, model_uri, name, str(version.version))

    def _headline(self) -> str:
        return self.run_config.promotion.metric if self.run_config is not None else "recall@20"

    def end(self, run: ModelRun | str, status: str = "FINISHED", error: str | None = None) -> None:
        """Close a run; a FAILED run gets the error as a tag and as `error.txt`.

        The status goes first, and the close is shielded from Ctrl-C (`recsys.interrupt.shielded`):
        a second Ctrl-C while the first one's runs were being closed left them RUNNING.

        A run whose close completed is never closed again: a Ctrl-C held back during a model's
        FINISHED close is delivered as the close returns, and the caller's interrupt handler then
        closed the model that had trained, evaluated and logged in full KILLED (likewise a parent
        run closing FINISHED). Only a close that a second Ctrl-C cut short is redone."""
        from recsys import interrupt
        from recsys.tracking.liveness import HEARTBEATS

        run_id = run.run_id if isinstance(run, ModelRun) else run
        with self._lock:
            if run_id in self._closed:
                return
        HEARTBEATS.remove(run_id)  # before the status: a closed run is never reopened by its heartbeat
        with interrupt.shielded():
            fault_point("tracking.closing")
            self._changed(run_id, lambda r: setattr(r, "status", status))
            self._send(lambda: self.client.set_terminated(run_id, status=status))
            if error:  # a closed run still takes tags and artifacts
                self.set_tags(run_id, {TAG_ERROR: error})
                self.log_text(run_id, error, "error.txt")
            if self.failure is None:
                self._changed(run_id, lambda r: setattr(r, "complete", True))
            with self._lock:
                self._closed.add(run_id)
            release_bundle(bundle_dir(self.cfg.offline_dir, run_id))  # its run ended: a resume may log it

    # ------------------------------------------------------------------ internals
    def _split_tags(self, data: InteractionData | None, split: Split | None) -> dict[str, str]:
        tags = {}
        fingerprint = (data.fingerprint if data is not None else "") or (
            split.meta.get("fingerprint", "") if split else ""
        )
        if fingerprint:
            tags[TAG_FINGERPRINT] = str(fingerprint)
        if split is not None:
            tags[TAG_SPLIT_PROTOCOL] = split.protocol
            tags[TAG_SPLIT_DIGEST] = split_digest(split)
        return tags

    def _plot_title(self, model: Recommender, run_id: str) -> str:
        """"<model> (<kind>), run <first 8 of the run id>": which model and run a plot belongs to."""
        return f"{model.config.name} ({model.kind}), run {run_id[:8]}"

    def _write_artifacts(
        self, root: Path, model: Recommender, eval_result: Any, split: Split, data: InteractionData | None,
        title: str | None = None,
    ) -> None:
        import polars as pl

        from recsys.data.matrix import item_popularity

        (root / "config").mkdir(parents=True)
        if self.run_config is not None:
            from recsys.config import dumps_toml

            (root / "config" / "run.toml").write_text(dumps_toml(logged_config(self.run_config)))
        (root / "config" / "model.json").write_text(
            json.dumps(model.config.model_dump(mode="json"), indent=2)
        )
        (root / "data").mkdir()
        manifest = {"data": dict(data.manifest) if data is not None else {}, "split": split.meta}
        manifest["split_digest"] = split_digest(split)
        (root / "data" / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))

        (root / "evaluation").mkdir()
        per_user = eval_result.per_user
        if len(split.user_ids) == split.n_users and "user_idx" in per_user.columns:
            ids = np.asarray(split.user_ids)[per_user.get_column("user_idx").to_numpy()]
            per_user = per_user.with_columns(pl.Series("user_id", ids.astype(str)))
        else:
            per_user = per_user.with_columns(pl.col("user_idx").cast(pl.String).alias("user_id"))
        per_user.select("user_id", pl.exclude("user_id")).write_parquet(root / PER_USER_ARTIFACT)
        summary = {"summary": eval_result.summary, "ci": {k: list(v) for k, v in eval_result.ci.items()}}
        (root / SUMMARY_ARTIFACT).write_text(json.dumps(summary, indent=2, default=float))

        popularity = item_popularity(split.train)
        plots.plot_metric_at_k({model.config.name: eval_result.summary}, root / "plots" / "recall_at_k.png",
                               title=title)
        unit = "iteration" if model.kind.startswith("wals") else "epoch"
        plots.plot_history(model.history, root / "plots" / "training_curves.png", title=title, unit=unit)
        plots.plot_popularity_bias(eval_result.topk.items, popularity, root / "plots" / "popularity_bias.png",
                                   title=title)
        if split.item_blocks is not None and len(split.item_blocks) == split.n_items:
            labels, label_name = np.asarray(split.item_blocks), "item block"
        else:
            labels, label_name = plots.popularity_deciles(popularity), "popularity decile"
        if np.asarray(model.item_factors).shape[1] >= 2:  # popularity's one number per item is no embedding
            plots.plot_item_embeddings(
                model.item_factors, root / "plots" / "item_embeddings_pca.png", labels, label_name, title=title
            )



class NullTracker:
    """`--no-tracking`: the Tracker interface, doing nothing (run ids are empty strings)."""

    enabled = False
    failure: str | None = None
    kept_in: Path | None = None

    def __init__(self, *_: Any, **__: Any) -> None:
        self.uri = self.shown_uri = ""

    def mark_failed(self, exc: BaseException | str) -> None:
        return None

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        return None

    def log_dict(self, run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
        return None

    def log_artifacts(self, run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
        return None

    def start_parent(
        self, run_name: str | None = None, tags: Mapping[str, str] | None = None, **_: Any
    ) -> str:
        return ""

    def log_dataset(self, run_id: str, data: Any, context: str = "train") -> None:
        return None

    def start_child(self, parent_id: str | None, model_config: ModelConfig, tags: Any = None) -> ModelRun:
        return ModelRun("", model_config.name, parent_id, self)

    def start_trial(self, model_run_id: str, model_config: ModelConfig, number: int, params: Any) -> str:
        return ""

    @contextmanager
    def model_run(self, parent_id: str | None, model_config: ModelConfig) -> Iterator[ModelRun]:
        yield self.start_child(parent_id, model_config)

    def log_params(self, run_id: str, flat: Mapping[str, Any]) -> None:
        return None

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int | None = None) -> None:
        return None

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        return None

    def log_model_result(self, model_run: ModelRun, *_: Any, **__: Any) -> LoggedModel:
        return LoggedModel(model_run.run_id, "")

    def end(self, run: ModelRun | str, status: str = "FINISHED", error: str | None = None) -> None:
        return None


def make_tracker(run_config: RunConfig, *, enabled: bool | None = None) -> Tracker | NullTracker:
    """The tracker a pipeline should use: a real one (store checked now, before any training)
    unless tracking is disabled by config or by `--no-tracking` (enabled=False)."""
    on = run_config.tracking.enabled if enabled is None else enabled
    return Tracker(run_config.tracking, run_config) if on else NullTracker()


def _mlflow_type(polars_dtype: str) -> str:
    lowered = polars_dtype.lower()
    if "int" in lowered:
        return "long"
    if "float" in lowered:
        return "double"
    if "datetime" in lowered:
        return "datetime"
    if "bool" in lowered:
        return "boolean"
    return "string"


def _dataset_source(source: str):
    """An existing local path or a URL as an MLflow dataset source; anything else (e.g. "synthetic")
    as a code source, so MLflow does not guess."""
    import warnings

    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if "://" in source or Path(source).exists():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "can be interpreted in multiple ways"
                return resolve_dataset_source(source)
        except Exception:
            pass
    return CodeDatasetSource({"source": source})
