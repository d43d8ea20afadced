"""`recsys run --resume-tracking` killed part-way, then rerun: every kept run is logged once.

A bundle was marked logged only at its end, so a resume killed after some records logged them all
again on the rerun: each model twice, a second registry version each. The bundle here is built
with the offline module's own writers (what a Tracker keeps when the store fails); the kill is a
real SIGKILL of a resuming process, placed before its third record.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from mlflow import MlflowClient

from recsys.faults import ENV
from recsys.tracking.offline import (
    PARENT_KEY,
    TAG_RESUMED_FROM,
    RunRecord,
    keep_text,
    offline_run_id,
    resume_bundle,
    save_record,
)

KILLED_RESUME = """
import os, signal, sys
from pathlib import Path
from mlflow import MlflowClient
import recsys.tracking.offline as offline

real, calls = offline._log_record, []

def log_record(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:  # the parent and one model are logged
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

offline._log_record = log_record
client = MlflowClient(sys.argv[1], registry_uri=sys.argv[1])
offline.resume_bundle(client, sys.argv[2], Path(sys.argv[3]))
"""

RESUME = """
import sys
from pathlib import Path
from mlflow import MlflowClient
from recsys.tracking.offline import resume_bundle

resume_bundle(MlflowClient(sys.argv[1], registry_uri=sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
"""


def _kept_bundle(bundle: Path, registered: str) -> list[RunRecord]:
    """What a Tracker keeps when the store fails: the pipeline run and two models to register."""
    parent = RunRecord(PARENT_KEY, "pipeline", offline_run_id(), status="FINISHED")
    records = [parent] + [
        RunRecord(name, name, offline_run_id(), parent_id=parent.run_id, params={"factors": "8"},
                  metrics=[("recall_at_20", 0.5, 0, 1_000)], status="FINISHED", register={"name": registered})
        for name in ("pop", "wals")
    ]  # fmt: skip
    for record in records:
        save_record(bundle, record)
        if record.register:
            keep_text(bundle, record, "flavors: {}\n", "model/MLmodel")
    return records


def _kill_and_rerun(uri: str, bundle: Path, script: str, env: dict[str, str] | None = None, between=None):
    """A resume of a fresh bundle killed in `script`, then the rerun: (client, experiment, records,
    registered model name, the rerun's report). `between(client, experiment, registered)` runs
    after the kill, before the rerun."""
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment(  # artifacts beside the bundle, not in ./mlruns of the checkout
        f"resume-killed-{uuid.uuid4().hex[:8]}", artifact_location=(bundle.parent / "artifacts").as_uri()
    )
    registered = f"resume-killed-{uuid.uuid4().hex[:8]}"
    records = _kept_bundle(bundle, registered)
    killed = subprocess.run(
        [sys.executable, "-c", script, uri, experiment, str(bundle)],
        capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    if between is not None:
        between(client, experiment, registered)
    report = resume_bundle(client, experiment, bundle)  # the rerun
    assert resume_bundle(client, experiment, bundle).already_logged
    return client, experiment, records, registered, report


def _assert_each_run_logged_once(client, experiment, records, registered, report) -> None:
    runs = client.search_runs([experiment])
    logged = Counter(run.data.tags.get(TAG_RESUMED_FROM) for run in runs)
    assert logged == Counter({record.run_id: 1 for record in records}), logged
    versions = client.search_model_versions(f"name = '{registered}'")
    assert len(versions) == 2 and len(report.registered) == 2
    assert set(report.runs) == {PARENT_KEY, "pop", "wals"}


def test_a_resume_killed_part_way_logs_each_kept_run_once_on_the_rerun(shared_mlflow_uri, tmp_path: Path):
    _assert_each_run_logged_once(*_kill_and_rerun(shared_mlflow_uri, tmp_path / "bundle", KILLED_RESUME))


def test_a_resume_killed_after_logging_a_run_but_before_noting_it_reuses_that_run(
    shared_mlflow_uri, tmp_path: Path
):
    """The kill lands between a model's run logged in full (registered too) and resuming.json: the
    rerun finds the run in the store by its tags and reuses it, instead of logging (and registering)
    the model a second time. The fault point's 2nd visit is the first model, after the parent."""
    killed = {ENV: "resume.logged:2"}
    _assert_each_run_logged_once(*_kill_and_rerun(shared_mlflow_uri, tmp_path / "bundle", RESUME, killed))


def test_a_resume_that_waits_for_another_says_so(tmp_path: Path, capfd):
    """Two resumes of one bundle take turns on its lock; the one that waits says why it stalls (on
    stderr, where `recsys run --resume-tracking` leaves it). The bundle is logged already, so the
    waiter needs no store once it has the lock."""
    import threading
    import time

    from filelock import FileLock

    from recsys.tracking.offline import LOCK_FILE, LOGGED_FILE

    bundle = tmp_path / "bundle"
    save_record(bundle, RunRecord(PARENT_KEY, "pipeline", offline_run_id(), status="FINISHED"))
    (bundle / LOGGED_FILE).write_text('{"runs": {"parent": "abc"}, "registered": []}')
    said, reports = "", []
    with FileLock(str(bundle / LOCK_FILE)):  # another resume at work
        waiter = threading.Thread(target=lambda: reports.append(resume_bundle(None, "0", bundle)))
        waiter.start()
        deadline = time.monotonic() + 30
        while "waiting for" not in said and time.monotonic() < deadline:
            time.sleep(0.05)
            said += capfd.readouterr().err
        assert reports == []  # still waiting
    waiter.join(30)
    assert f"waiting for another resume of {bundle} to finish" in said
    assert reports[0].already_logged and reports[0].runs == {"parent": "abc"}


def test_a_resume_killed_after_registering_a_run_but_before_its_completion_tag_registers_it_once(
    shared_mlflow_uri, tmp_path: Path
):
    """The kill lands after a model's version is registered from its new run, before that run's
    completion tag: the rerun registered the model a second time from another new run (the first,
    closed KILLED, kept version 1). Registering is the last thing logged into a run, so a half-logged
    run that already has its version holds everything: the rerun finishes that run and reuses its
    version. The rerun's `Tracker` first closes the dead process's run KILLED, as the CLI does."""
    from recsys.tracking.liveness import TAG_KILLED_NOTE, mark_dead_runs
    from recsys.tracking.offline import TAG_RESUME_LOGGED

    def kill_came_after_registering(client, experiment: str, registered: str) -> None:
        assert len(client.search_model_versions(f"name = '{registered}'")) == 1
        assert mark_dead_runs(client, [experiment])  # the rerun's Tracker: the half-logged run is closed

    client, experiment, records, registered, report = _kill_and_rerun(
        shared_mlflow_uri, tmp_path / "bundle", RESUME, {ENV: "resume.registered"}, between=kill_came_after_registering
    )
    _assert_each_run_logged_once(client, experiment, records, registered, report)
    for version in client.search_model_versions(f"name = '{registered}'"):  # each on a finished, whole run
        run = client.get_run(version.run_id)
        assert run.info.status == "FINISHED" and run.data.tags[TAG_RESUME_LOGGED] == "true"
        assert TAG_KILLED_NOTE not in run.data.tags
        assert f"{registered}/{version.version}" in report.registered
