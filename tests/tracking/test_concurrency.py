"""Two pipeline processes logging to one store at the same time: a new local SQLite file (created
by both at once, then locks and retries) and the PostgreSQL-backed server (concurrent requests in its worker's thread pool, so
concurrent transactions in PostgreSQL)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest
from mlflow import MlflowClient

WORKER = textwrap.dedent(
    """
    import sys
    from recsys.config import RunConfig, TrackingConfig
    from recsys.models.popularity import PopularityConfig
    from recsys.tracking.registry import register_run_model
    from recsys.tracking.runs import Tracker

    uri, name = sys.argv[1], sys.argv[2]
    cfg = RunConfig(name=name, tracking=TrackingConfig(tracking_uri=uri, experiment="concurrent"))
    tracker = Tracker(cfg.tracking, cfg)
    parent = tracker.start_parent(name)
    for m in range(2):
        with tracker.model_run(parent, PopularityConfig(name=f"{name}-m{m}")) as run:
            for step in range(30):
                run.callback(step, {"loss": 1.0 / (step + 1), "recall@20": step / 30})
            tracker.client.log_text(run.run_id, name, "note.txt")
            register_run_model(tracker.client, "concurrent-model", run.run_id)
    tracker.end(parent)
    print("ok", parent)
    """
)


def _two_processes_log(tracking_uri: str) -> None:
    """Two processes each log a parent run with two model runs (30 steps of metrics, a text
    artifact, a registered version) to `tracking_uri` at the same time: every run, step and version
    arrives."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, tracking_uri, f"proc{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert out.splitlines()[-1].startswith("ok")
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    exp = client.get_experiment_by_name("concurrent")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4
    for child in children:
        history = client.get_metric_history(child.info.run_id, "recall_at_20")
        assert [m.step for m in history] == list(range(30))
    versions = client.search_model_versions("name = 'concurrent-model'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite"])
def test_two_processes_create_and_log_to_one_new_store(store, tmp_path):
    """The store is a new SQLite file, so the two processes also open (create) it at once: both
    created its tables and the loser stopped with 'cannot open (... duplicate column name: step)'.
    Opening holds a lock now (recsys.tracking.store.store_open_lock). It needs no session store
    (not `tracking_uri`), so either xdist worker runs it (tests/conftest.py)."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    _two_processes_log(uri)
    with sqlite3.connect(uri.split("sqlite:///", 1)[1]) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("tracking_uri", ["postgres"], indirect=True)
def test_two_processes_log_to_one_store(tracking_uri):
    """The PostgreSQL-backed server: concurrent requests in its worker's thread pool, so concurrent
    transactions in PostgreSQL. (The SQLite case is test_two_processes_create_and_log_to_one_new_store.)"""
    _two_processes_log(tracking_uri)


def test_pipelines_logging_the_same_new_data_at_once_all_log(tracking_uri, planted_data, tmp_path):
    """Pipeline runs in one process (threads: each its own Tracker, as two flows of one worker) log
    the same data, new to the experiment, at the same moment (as a parent run opens, and as each
    model run ends). MLflow logs an experiment's data set as "look, insert when missing": all
    looked, one inserted, and every other insert broke the data set's unique key. That
    IntegrityError was taken for a dead store, so those runs' tracking went offline (kept under
    tracking.offline_dir) while the store was fine. Now it is retried (runs.with_retries) and every
    run logs every data set. Three data sets in turn, so the race is met even on a busy machine.
    On PostgreSQL the loser's error ends with the database's own "DETAIL: Key (...)=(...) already
    exists.", which was taken for MLflow's "already exists" answer to a create and not retried:
    the [postgres] run went offline until runs._raced read past that line."""
    import dataclasses
    import threading

    from recsys.config import RunConfig, TrackingConfig
    from recsys.tracking.runs import Tracker

    n, rounds = 6, 3
    experiment = f"same-data-{tmp_path.name}"
    cfg = RunConfig(name="race", tracking=TrackingConfig(
        tracking_uri=tracking_uri, experiment=experiment, offline_dir=str(tmp_path / "unlogged")))  # fmt: skip
    trackers = [Tracker(cfg.tracking, cfg, check=False) for _ in range(n)]
    parents = [tracker.start_parent("race") for tracker in trackers]
    barrier = threading.Barrier(n)

    def pipeline(tracker: Tracker, parent: str) -> None:
        for r in range(rounds):
            manifest = {**planted_data.manifest, "name": f"planted-{r}", "fingerprint": f"race-{r}"}
            barrier.wait()
            tracker.log_dataset(parent, dataclasses.replace(planted_data, manifest=manifest))
        tracker.end(parent)

    threads = [threading.Thread(target=pipeline, args=pair) for pair in zip(trackers, parents, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [t.failure for t in trackers] == [None] * n
    assert not (tmp_path / "unlogged").exists()
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(parents)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == [f"planted-{r}" for r in range(rounds)]


POSTGRES_RACE = (
    '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"\n'
    "DETAIL:  Key (experiment_id, name, digest)=(1, d0, x0) already exists.\n"
    "[SQL: INSERT INTO datasets (dataset_uuid, experiment_id, name, digest) VALUES (...)]"
)


@pytest.mark.parametrize(
    "message, code, retried",
    [
        ("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name", "BAD_REQUEST", True),
        (POSTGRES_RACE, "BAD_REQUEST", True),  # a direct postgresql:// store
        ("BAD_REQUEST: " + POSTGRES_RACE.replace("psycopg.", "psycopg2."), "BAD_REQUEST", True),  # via a server
        ("(pymysql.err.IntegrityError) (1062, \"Duplicate entry '1-d0-x0' for key 'datasets.PRIMARY'\")", "BAD_REQUEST", True),
        ("Experiment(name=x) already exists. Error: " + POSTGRES_RACE, "RESOURCE_ALREADY_EXISTS", False),
        ("Registered Model (name=x) already exists. " + POSTGRES_RACE, "BAD_REQUEST", False),
        ("Run 'abc' not found", "RESOURCE_DOES_NOT_EXIST", False),
    ],
)  # fmt: skip
def test_unique_key_races_are_retried_on_every_database(message, code, retried):
    """The texts each database gives a lost check-then-insert (as MLflow raises them: the
    [postgres] case above meets PostgreSQL's live; MySQL's is its documented 1062 text) are tried
    again; MLflow's own "already exists" answer to a create is not. PostgreSQL's ends with a
    "DETAIL: ... already exists." line, which was read as MLflow's answer and never retried."""
    from mlflow.exceptions import MlflowException

    from recsys.tracking.runs import with_retries

    calls = []

    def store_call() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException(message, error_code=code)
        return "logged"

    if retried:
        assert with_retries(store_call, first_delay=0) == "logged" and len(calls) == 2
    else:
        with pytest.raises(MlflowException):
            with_retries(store_call, first_delay=0)
        assert len(calls) == 1
