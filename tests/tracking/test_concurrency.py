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


@pytest.mark.slow
def test_two_processes_log_to_one_store(tracking_uri, tmp_path):
    """On SQLite the store is a new file, so the two processes also open (create) it at once: both
    created its tables and the loser stopped with 'cannot open (... duplicate column name: step)'.
    Opening holds a lock now (recsys.tracking.store.store_open_lock)."""
    if tracking_uri.startswith("sqlite:"):
        tracking_uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
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
    if tracking_uri.startswith("sqlite:"):
        db = tracking_uri.split("sqlite:///", 1)[1]
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
