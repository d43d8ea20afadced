"""When the tracking store fails mid-run: keep everything on disk, log it later.

Why: a pipeline trains for an hour; if the MLflow server dies at minute 59, the trained models, their
metrics and artifacts must not die with it. The `Tracker` keeps a small record of every run it opens
(params, tags, metrics with their steps, status, which registry version to create); the first store
call that fails switches it to offline: it stops calling the store and writes the records of every
run not yet complete on the server, with their artifacts (the saved model among them), into a
bundle directory, `<tracking.offline_dir>/<parent run id>/`:

    <bundle>/parent/run.json                 the pipeline's parent run (when it was not closed)
    <bundle>/<model>/run.json                a model's run: params, tags, metrics, status, registry
    <bundle>/<model>/files/...               its artifacts, as they would be in the store (model/:
                                             the pyfunc with the saved model, evaluation/, plots/)
    <bundle>/<model>/.merge-*                a copy into files/ under way (or cut short by a kill:
                                             finished or removed by the resume, `_kept`)

`recsys run --resume-tracking <bundle>` (`resume_bundle`) logs a bundle once the store is back: new
runs with the recorded content (the parent first, children under it, runs completed on the server
before the failure re-parented to it), registry versions, and the original runs, left RUNNING by
the failure, are closed KILLED with a note naming their replacements. A bundle is marked
`logged.json` when done, so resuming twice logs nothing twice; a resume killed part-way goes on from
`resuming.json` (the records it has logged) on the rerun, and two resumes of a bundle take turns.
A record logged in full but not yet noted there (the kill came in between) is found in the store by
its tags (`recsys.resumed_from`, `recsys.resume_logged`) and reused, not logged twice; so is one
killed after its model version was registered but before that completion tag (the version names
its run), which the rerun finishes instead of registering the model again.

A run goes on training after its store failed, adding each model to its bundle as it finishes, so
a bundle is not whole until its run has ended: its writer holds a shared lock on the bundle's
`.writer.lock` from its first record until the run it is named after ends (or the process dies:
the kernel drops the lock, also on a kill -9), with a `.writer-<pid>.json` naming it. A resume
takes that lock exclusively, and refuses (`BundleInUse`, naming the pid) while a writer holds it:
a resume started mid-run logged the bundle as it stood, marked it logged, and the models the run
kept afterwards were never logged ("already logged" from then on).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.errors import TrackingError, first_line
from recsys.faults import fault_point
from recsys.files import (
    LocksUnsupported,
    announced_lock,
    finish_merges,
    lock_for_life,
    merge_tree,
    scratch_dir,
    stage_tree,
    write_text_atomic,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
FILES_DIR = "files"
LOGGED_FILE = "logged.json"
PROGRESS_FILE = "resuming.json"  # old run id -> new run id of each record a resume has logged so far
LOCK_FILE = ".resume.lock"
WRITER_LOCK = ".writer.lock"  # shared by the processes writing the bundle, exclusive for a resume
WRITER_MARK = ".writer-{pid}.json"  # who holds it: process_tags() of each writer
PARENT_KEY = "parent"
OFFLINE_PREFIX = "offline-"
TAG_REPLACED_BY = "recsys.replaced_by"
TAG_RESUMED_FROM = "recsys.resumed_from"
TAG_RESUME_LOGGED = "recsys.resume_logged"  # set once everything of a record is in its new run


def offline_run_id() -> str:
    """An id for a run the store could not create (it is created on resume)."""
    return f"{OFFLINE_PREFIX}{uuid.uuid4().hex}"


@dataclass
class RunRecord:
    """Everything logged to one run, kept so the run can be logged again in full."""

    key: str  # "parent" or the model's name: its folder in the bundle
    name: str
    run_id: str  # the store's id, or an offline id when the store never created it
    parent_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)  # key, value, step, ms
    datasets: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None  # the terminal status once ended
    register: dict[str, Any] | None = None  # {"name": registered model, "tags": {...}} to create
    complete: bool = False  # ended on the store with everything in it: nothing to resume

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        data = dict(data)
        data["metrics"] = [tuple(m) for m in data.get("metrics", [])]
        return cls(**data)


def bundle_dir(root: str | Path, parent_id: str | None) -> Path:
    return Path(root) / (parent_id or "no-parent")


def record_dir(bundle: Path, record: RunRecord) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", record.key).strip("-.") or "run"
    return bundle / slug


class BundleInUse(TrackingError):
    """The bundle's run is still writing it (`hold_bundle`): resuming now would log part of it."""


_writing: dict[Path, int] = {}  # bundle -> fd of its WRITER_LOCK held by this process
_writing_guard = threading.Lock()


def _key(bundle: Path) -> Path:
    return Path(os.path.abspath(bundle))


def hold_bundle(bundle: Path) -> None:
    """Hold `bundle`'s writer lock (shared) and mark this process as its writer, until
    `release_bundle` or this process's end; once per process (a pipeline's trackers share it).
    Taken before the bundle's first record, so a resume never finds a record without it."""
    from recsys.tracking.liveness import process_tags

    key = _key(bundle)
    with _writing_guard:
        if key in _writing:
            return
        key.mkdir(parents=True, exist_ok=True)
        try:  # waits only for a resume of a bundle whose writer ended
            fd = lock_for_life(key / WRITER_LOCK, shared=True, create=True)
        except LocksUnsupported:  # the bundle is kept and resumed as before, unguarded, not dropped
            return
        try:
            write_text_atomic(key / WRITER_MARK.format(pid=os.getpid()), json.dumps(process_tags()))
        except BaseException:
            os.close(fd)
            raise
        _writing[key] = fd


def release_bundle(bundle: Path) -> None:
    """This process writes `bundle` no more (its run ended): a resume may log it."""
    with _writing_guard:
        fd = _writing.pop(_key(bundle), None)
        if fd is None:
            return
        (_key(bundle) / WRITER_MARK.format(pid=os.getpid())).unlink(missing_ok=True)
        os.close(fd)  # drops the lock


def _writer_pids(bundle: Path) -> list[int]:
    """The pids the bundle's writer marks name: the live ones, else all (a mark of another
    host's process cannot be judged here)."""
    from recsys.tracking.liveness import is_alive

    found = {}
    for mark in bundle.glob(WRITER_MARK.format(pid="*")):
        try:
            tags = json.loads(mark.read_text())
            found[int(tags["recsys.pid"])] = str(tags.get("recsys.pid_started", ""))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(pid for pid, started in found.items() if is_alive(pid, started)) or sorted(found)


@contextmanager
def no_writer(bundle: Path) -> Iterator[None]:
    """Hold `bundle`'s writer lock exclusively inside; `BundleInUse` naming the writer's pid when
    its run still writes it. The marks of writers that died (a kill -9) are removed here."""
    lock = bundle / WRITER_LOCK
    if not lock.is_file():  # kept by a recsys without writer locks, or not a bundle: no writer to wait for
        yield
        return
    fd: int | None = None
    try:
        try:
            fd = lock_for_life(lock, wait=False)
        except LocksUnsupported:  # no locks here: resumed unguarded, as before writer locks
            pass
        except BlockingIOError:
            pids = _writer_pids(bundle)
            who = f"process {pids[0]}" if len(pids) == 1 else (
                f"processes {', '.join(map(str, pids))}" if pids else "another process")  # fmt: skip
            raise BundleInUse(
                f"{bundle} is still being written by {who}: its run goes on training after its tracking "
                "store failed, and keeps each model it finishes here; resume once that run has ended"
            ) from None
        for mark in bundle.glob(WRITER_MARK.format(pid="*")) if fd is not None else ():  # every writer has ended
            mark.unlink(missing_ok=True)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def bundle_in_use(bundle: Path) -> BundleInUse | None:
    """The `BundleInUse` a resume of `bundle` would meet now, or None (checked, not held)."""
    try:
        with no_writer(bundle):
            return None
    except BundleInUse as exc:
        return exc


def save_record(bundle: Path, record: RunRecord) -> Path:
    """Write (or rewrite) a record's run.json atomically; returns its folder."""
    folder = record_dir(bundle, record)
    write_text_atomic(folder / RUN_FILE, json.dumps(record.to_json(), indent=2, default=str))
    return folder


def keep_files(bundle: Path, record: RunRecord, source: Path, artifact_path: str | None = None) -> Path:
    """Copy a local artifact tree into the record's files/ (under `artifact_path`), whole or not at
    all (`_kept`); returns where it landed."""
    target = record_dir(bundle, record) / FILES_DIR
    _kept(bundle, record, lambda staging: shutil.copytree(
        source, staging / artifact_path if artifact_path else staging, dirs_exist_ok=True))  # fmt: skip
    return target / artifact_path if artifact_path else target


def keep_text(bundle: Path, record: RunRecord, text: str, artifact_file: str) -> None:
    """Write a text artifact into the record's files/, whole or not at all (`_kept`)."""

    def write(staging: Path) -> None:
        target = staging / artifact_file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    _kept(bundle, record, write)


def _kept(bundle: Path, record: RunRecord, fill: Callable[[Path], None]) -> None:
    """Stage what `fill` writes in a folder of its own in the record's folder, beside (never in)
    files/, commit it by a rename, then move it into files/ (`recsys.files.stage_tree`).

    Why: `files/` is what the resume uploads as the run's artifacts, and a copy straight into it
    (`copytree`, `write_text`) that a kill -9 cut short left part of a model there (a few of its
    files, half an MLmodel), uploaded as if whole. Keeping again over files/ merges, as a second
    `log_artifacts` to one path does in the store: the files it brings replace theirs, the others
    stay. The resume finishes or undoes a keep a kill interrupted before it reads the bundle
    (`finish_kept`)."""
    folder = record_dir(bundle, record)
    ready = stage_tree(folder, fill)
    fault_point("offline.kept")
    merge_tree(ready, folder / FILES_DIR)


def finish_kept(bundle: Path) -> list[str]:
    """Finish the keeps a kill interrupted once committed, and remove those it cut short while
    copying (`_kept`), in every record of `bundle`; returns what was done, one line each."""
    done: list[str] = []
    for folder in sorted(p for p in bundle.iterdir() if p.is_dir()) if bundle.is_dir() else []:
        done += finish_merges(folder, folder / FILES_DIR)
    return done


def load_bundle(bundle: Path) -> list[RunRecord]:
    """The records of a bundle, every run after the run it is nested under (parent, models, trials)."""
    records = [
        kept_json(p, "remove its folder to resume without that run", RunRecord.from_json)
        for p in sorted(bundle.glob(f"*/{RUN_FILE}"))
    ]
    by_id = {r.run_id: r for r in records}

    def depth(record: RunRecord) -> int:
        seen = 0
        while record.parent_id in by_id and seen < len(by_id):
            record, seen = by_id[record.parent_id], seen + 1
        return seen

    return sorted(records, key=lambda r: (depth(r), r.key != PARENT_KEY, r.key))


def kept_json(path: Path, hint: str, read: Callable[[Any], Any] = lambda data: data) -> Any:
    """`read(the JSON in path)`, or a TrackingError naming the file. Why: a record that is not one
    (edited by hand, cut short by a full disk; our own writes are atomic) stopped the resume with
    "unexpected JSONDecodeError ... this is a bug", exit 1, instead of saying which file to mend."""
    try:
        return read(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise TrackingError(f"{path} is not a readable record of a kept run ({type(exc).__name__}: "
                            f"{first_line(exc)}): restore it, or {hint}") from None  # fmt: skip


def find_bundles(path: Path) -> list[Path]:
    """`path` itself when it is a bundle, else the bundles directly under it (not yet logged)."""
    if any(path.glob(f"*/{RUN_FILE}")):
        return [path]
    return (
        sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob(f"*/{RUN_FILE}")))
        if path.is_dir()
        else []
    )


def kept_experiment(bundle: Path) -> str | None:
    """The experiment the run kept in `bundle` logged to (its parent record's `tracking.experiment`
    param); None when the bundle holds no parent record, or one without it."""
    parent = record_dir(bundle, RunRecord(key=PARENT_KEY, name="", run_id="")) / RUN_FILE
    if not parent.is_file():
        return None
    return kept_json(parent, "remove its folder to resume without that run", RunRecord.from_json).params.get(
        "tracking.experiment"
    )


@dataclass
class ResumeReport:
    bundle: Path
    runs: dict[str, str]  # record key -> new run id
    registered: list[str]  # "name/version"
    already_logged: bool = False


def resume_bundle(
    client: MlflowClient, experiment_id: str, bundle: Path, say: Callable[[str], None] | None = None
) -> ResumeReport:
    """Log a kept bundle into the store (see the module docstring). Idempotent per bundle, also
    when a resume is killed part-way or two run at once: one resume of a bundle at a time (a lock
    file in it), and every record logged is noted in `resuming.json` at once, so a rerun goes on
    from the next record (a killed resume logged the records it had done again: every model twice,
    a second registry version each). A run the kill left half-logged is RUNNING under a dead
    process: the `Tracker` of the rerun closes it KILLED. A resume that finds another one at work
    says so (`say`, default stderr) before it waits: logging a bundle's models can take minutes.
    A bundle whose run still writes it is refused (`BundleInUse`, see the module docstring)."""
    with announced_lock(bundle / LOCK_FILE, f"another resume of {bundle}", say), no_writer(bundle):
        return _resume_locked(client, experiment_id, bundle)


def _resume_locked(client: MlflowClient, experiment_id: str, bundle: Path) -> ResumeReport:
    from mlflow.entities import RunTag

    from recsys.tracking.runs import with_retries

    for line in finish_kept(bundle):  # before anything of the bundle is read
        log.warning("%s (left by a run that was killed)", line)
    done_file = bundle / LOGGED_FILE
    if done_file.is_file():
        logged = kept_json(done_file, "remove it (the runs it names were logged: a resume looks them up by their tags)")
        return ResumeReport(bundle, logged.get("runs", {}), logged.get("registered", []), already_logged=True)
    records = load_bundle(bundle)
    progress_file = bundle / PROGRESS_FILE
    progress = (
        kept_json(progress_file, "remove it (a resume finds the runs it had logged by their tags)")
        if progress_file.is_file() else {"runs": {}, "registered": {}}
    )  # fmt: skip
    new_ids: dict[str, str] = {}  # old run id -> new run id
    report = ResumeReport(bundle, {}, [])
    for record in records:
        if not record.complete:
            if record.run_id in progress["runs"]:  # logged by a resume that was killed later
                run_id, version = progress["runs"][record.run_id], progress["registered"].get(record.run_id)
            else:  # not noted, but maybe logged: a kill can come between the two (`_logged_before`)
                parent = new_ids.get(record.parent_id or "", record.parent_id)
                logged = _logged_before(client, experiment_id, record)
                run_id, version = logged or _log_record(client, experiment_id, bundle, record, parent)
                if record.key == PARENT_KEY:
                    _carry_split(client, record.run_id, run_id, bundle, record)
                fault_point("resume.logged")
                progress["runs"][record.run_id] = run_id
                if version:
                    progress["registered"][record.run_id] = version
                write_text_atomic(progress_file, json.dumps(progress))
            new_ids[record.run_id] = report.runs[record.key] = run_id
            report.registered += [version] if version else []
    for record in records:  # complete children move under the new parent; open originals close
        new_parent = new_ids.get(record.parent_id or "")
        if record.complete and new_parent:
            tag = [RunTag("mlflow.parentRunId", new_parent)]
            with_retries(lambda r=record, tag=tag: client.log_batch(r.run_id, tags=tag))
        elif not record.complete and not record.run_id.startswith(OFFLINE_PREFIX):
            if record.key == PARENT_KEY:
                kept = {r.run_id for r in records}
                _adopt_children(client, experiment_id, record.run_id, new_ids[record.run_id], kept)
            _close_replaced(client, record.run_id, new_ids[record.run_id])
    done = {"runs": report.runs, "registered": report.registered, "at": time.time()}
    write_text_atomic(done_file, json.dumps(done))
    progress_file.unlink(missing_ok=True)
    return report


def _log_record(
    client: MlflowClient, experiment_id: str, bundle: Path, record: RunRecord, parent: str | None
) -> tuple[str, str | None]:
    """Create a run holding everything `record` kept; returns (run id, "name/version" or None)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

    from recsys.tracking.liveness import opened_tags
    from recsys.tracking.registry import register_run_model
    from recsys.tracking.runs import TAG_MODEL_VERSION, with_retries

    tags = {**record.tags, **opened_tags(), TAG_RESUMED_FROM: record.run_id}
    tags.pop("mlflow.parentRunId", None)
    if parent and not parent.startswith(OFFLINE_PREFIX):
        tags["mlflow.parentRunId"] = parent
    run = with_retries(
        lambda: client.create_run(
            experiment_id, run_name=record.name, tags=tags, start_time=_first_time(record)
        )
    )
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in record.params.items()]
    metrics = [Metric(k, float(v), int(ts), int(step)) for k, v, step, ts in record.metrics]
    for start in range(0, len(params), 100):
        with_retries(lambda chunk=params[start : start + 100]: client.log_batch(run_id, params=chunk))
    for start in range(0, len(metrics), 1000):
        with_retries(lambda chunk=metrics[start : start + 1000]: client.log_batch(run_id, metrics=chunk))
    if record.datasets:
        inputs = [
            DatasetInput(Dataset(**d["dataset"]), tags=[InputTag(k, v) for k, v in d["tags"].items()])
            for d in record.datasets
        ]
        with_retries(lambda: client.log_inputs(run_id, datasets=inputs))
    files = record_dir(bundle, record) / FILES_DIR
    if files.is_dir():
        with_retries(lambda: client.log_artifacts(run_id, str(files)))
    registered = None
    if record.register:
        name = record.register["name"]
        version = register_run_model(client, name, run_id, tags=record.register.get("tags"))
        registered = f"{name}/{version.version}"
        fault_point("resume.registered")
    done = [RunTag(TAG_RESUME_LOGGED, "true")] + ([RunTag(TAG_MODEL_VERSION, registered)] if registered else [])
    with_retries(lambda: client.log_batch(run_id, tags=done))
    with_retries(lambda: client.set_terminated(run_id, status=record.status or "KILLED"))
    return run_id, registered


def _logged_before(client: MlflowClient, experiment_id: str, record: RunRecord) -> tuple[str, str | None] | None:
    """(run id, "name/version" or None) of the run an earlier resume logged `record` into in full,
    found by its tags in the store: a resume killed after logging a run but before noting it in
    resuming.json would otherwise log the run (and register its model) a second time. A run that
    kill left half-logged has no TAG_RESUME_LOGGED and is not reused (the rerun's `Tracker` closes
    it KILLED), unless its model version is registered already: registering is the last thing
    `_log_record` does before that tag, so such a run holds everything, and logging the record
    again registered a second version of the same model (`_finish_registered`). The run is closed
    with the record's status here, in case the kill came between its last tag and its end."""
    from recsys.tracking.runs import TAG_MODEL_VERSION, with_retries

    found = with_retries(
        lambda: client.search_runs(
            [experiment_id],
            f"tags.`{TAG_RESUMED_FROM}` = '{record.run_id}'",
            order_by=["attributes.start_time ASC"],
        )
    )
    whole = [run for run in found if run.data.tags.get(TAG_RESUME_LOGGED) == "true"]
    if whole:
        run, status = whole[0], record.status or "KILLED"
        if run.info.status != status:
            with_retries(lambda: client.set_terminated(run.info.run_id, status=status))
        return run.info.run_id, run.data.tags.get(TAG_MODEL_VERSION)
    return _finish_registered(client, record, found)


def _finish_registered(client: MlflowClient, record: RunRecord, runs: list[Any]) -> tuple[str, str] | None:
    """The first of `runs` (half-logged runs of `record`) whose model version `record` asks for is
    registered already: give it the tags `_log_record` ends with, take back the KILLED note the
    rerun's `Tracker` gave it when it closed the dead resume's run, and close it with the record's
    status. None when none has a version (the record is logged again; nothing was registered)."""
    from mlflow.entities import RunTag

    from recsys.tracking.liveness import NOTE_TAG, TAG_KILLED_NOTE
    from recsys.tracking.registry import run_version
    from recsys.tracking.runs import TAG_MODEL_VERSION, with_retries

    if not record.register:
        return None
    name = record.register["name"]
    with_version = ((run, run_version(client, name, run.info.run_id)) for run in runs)
    run, version = next(((r, v) for r, v in with_version if v is not None), (None, None))
    if run is None or version is None:
        return None
    run_id, registered = run.info.run_id, f"{name}/{version.version}"
    killed_note = run.data.tags.get(TAG_KILLED_NOTE)
    if killed_note is not None:
        with_retries(lambda: client.delete_tag(run_id, TAG_KILLED_NOTE))
        if run.data.tags.get(NOTE_TAG) == killed_note:
            with_retries(lambda: client.delete_tag(run_id, NOTE_TAG))
    done = [RunTag(TAG_MODEL_VERSION, registered), RunTag(TAG_RESUME_LOGGED, "true")]
    with_retries(lambda: client.log_batch(run_id, tags=done))
    with_retries(lambda: client.set_terminated(run_id, status=record.status or "KILLED"))
    return run_id, registered


def _carry_split(
    client: MlflowClient, old_parent: str, new_parent: str, bundle: Path, record: RunRecord
) -> None:
    """The split the models were evaluated on (`split/`, what `recsys promote` re-scores a champion
    on) belongs with the pipeline run: when the store took it before failing, copy it across to the
    parent that replaces that run (a kept copy in the bundle was uploaded with its files already)."""
    from recsys.tracking.runs import with_retries
    from recsys.tracking.split_artifact import SPLIT_ARTIFACT

    if (record_dir(bundle, record) / FILES_DIR / SPLIT_ARTIFACT).is_dir() or old_parent.startswith(
        OFFLINE_PREFIX
    ):
        return
    with scratch_dir("recsys-split") as tmp:
        try:
            path = client.download_artifacts(old_parent, SPLIT_ARTIFACT, tmp)
        except Exception:  # never logged: promotion will say the split cannot be had
            return
        with_retries(lambda: client.log_artifacts(new_parent, path, SPLIT_ARTIFACT))


def _adopt_children(
    client: MlflowClient, experiment_id: str, old_parent: str, new_parent: str, kept: set[str]
) -> None:
    """Move under the parent that replaces `old_parent` every run the store holds under it that no
    record of the bundle stands for: the model runs that were logged in full before the store died.

    Why: under Prefect each model task logs through a tracker of its own, and the flow's tracker,
    the one that found the store gone (at promotion, say), keeps only the parent's record. Its
    bundle then named no model, so the resumed parent had none: `recsys promote` said "pipeline run
    ... has no finished model runs", and a scheduled run took that empty run for the finished run
    of its unchanged inputs and trained nothing from then on. The runs the bundle does hold stay
    under the old parent: their content is logged again under the new one."""
    from mlflow.entities import RunTag

    from recsys.tracking.runs import with_retries

    children = with_retries(
        lambda: client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{old_parent}'")
    )
    tag = [RunTag("mlflow.parentRunId", new_parent)]
    for run in children:
        if run.info.run_id not in kept and TAG_REPLACED_BY not in run.data.tags:
            with_retries(lambda r=run: client.log_batch(r.info.run_id, tags=tag))


def _first_time(record: RunRecord) -> int | None:
    return min((int(ts) for _, _, _, ts in record.metrics), default=None)


def _close_replaced(client: MlflowClient, run_id: str, replacement: str) -> None:
    """Close the run the failure left open, pointing at the run that now holds its content."""
    from mlflow.entities import RunStatus, RunTag

    from recsys.tracking.runs import with_retries

    try:
        run = client.get_run(run_id)
    except Exception:  # the store lost it (or never committed it): nothing to close
        return
    note = f"tracking failed during this run; its content was logged again as run {replacement}"
    with_retries(
        lambda: client.log_batch(
            run_id, tags=[RunTag(TAG_REPLACED_BY, replacement), RunTag("mlflow.note.content", note)]
        )
    )
    if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
        with_retries(lambda: client.set_terminated(run_id, status="KILLED"))
