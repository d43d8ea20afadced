"""What a person sees in the MLflow UI, looked at in headless Chromium: the runs page `recsys ui`
links to (or the tracking server's own UI) is a model-training runs table with the run names and
their recall@20, not the GenAI overview; and the tags behind it, on both stores."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from recsys.tracking import ui
from recsys.tracking.store import is_http

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync", "--window-size=1600,1000",
]  # fmt: skip


def chromium() -> str:
    """Debian's `chromium` (make test installs it when apt-get can); without one the browser test
    skips, saying why."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("no headless Chromium on PATH (`make test` installs Debian's chromium where apt-get can)")


def page_text(url: str, profile: Path, budget_ms: int = 20000) -> str:
    """The page's DOM after `budget_ms` of virtual time (the UI's API calls done), as visible text."""
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
               "--dump-dom", url]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", done.stdout, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)))


@pytest.fixture(scope="module")
def runs_page(logged, tracking_ui) -> str:
    """The experiment's runs link: on `recsys ui` (tests/conftest.py starts it on the session's SQLite
    store) or, for the server store, on the tracking server itself; the same link `recsys ui` and
    `recsys run` print (test_recsys_ui_prints_the_runs_link)."""
    return ui.experiment_runs_url(logged.uri, logged.config.tracking.experiment, tracking_ui)


def test_recsys_ui_prints_the_runs_link(logged, monkeypatch):
    """`recsys ui` prints the runs link before it hands over to the MLflow UI; for a server store
    it refuses, naming the same link on the server. First it stops the MLflow UI servers a killed
    `recsys ui` left (the stop itself: tests/test_process_group.py; this is its wiring)."""
    from typer.testing import CliRunner

    from recsys.cli import app, tracking_cmds

    served = []
    monkeypatch.setattr(
        tracking_cmds, "run_in_process_group",
        lambda command, env, log_prefix=None: served.append((command, log_prefix)) or 0,
    )  # fmt: skip
    monkeypatch.setattr(tracking_cmds, "stop_orphaned_groups", lambda: [4242])
    experiment = MlflowClient(logged.uri).get_experiment_by_name(logged.config.tracking.experiment)
    args = ["ui", "--port", "5123", "--set", f"tracking.tracking_uri={logged.uri}",
            "--set", f"tracking.experiment={logged.config.tracking.experiment}"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    query = "workflowType=machine_learning&viewStateShareKey=recsys-models"
    if is_http(logged.uri):
        assert result.exit_code == 2 and not served
        assert f"open {logged.uri}/#/experiments/{experiment.experiment_id}/runs?{query}" in result.output
        return
    assert result.exit_code == 0, result.output
    assert f"runs: http://127.0.0.1:5123/#/experiments/{experiment.experiment_id}/runs?{query}" in result.output
    assert served and served[0][0][2:4] == ["mlflow", "ui"]
    assert served[0][1] == tracking_cmds.UI_LOG_PREFIX  # off the command's streams (tests/test_process_group.py)
    assert "stopped 1 MLflow UI server(s) left by a killed recsys ui (pids 4242)" in result.output


def test_the_experiment_is_tagged_for_model_training_with_the_recsys_view(logged):
    client = MlflowClient(logged.uri, registry_uri=logged.uri)
    experiment = client.get_experiment_by_name(logged.config.tracking.experiment)
    assert experiment.tags[ui.EXPERIMENT_KIND_TAG] == "custom_model_development"
    view = json.loads(experiment.tags[ui.VIEW_TAG_PREFIX + ui.VIEW_ID])
    state = json.loads(view["state"])
    assert view["name"] == "recsys: models by recall@20"
    assert state["orderByKey"] == "metrics.`recall_at_20`" and state["orderByAsc"] is False
    metrics = ["metrics.`recall_at_20`", "metrics.`ndcg_at_20`", "metrics.`folding_at_20`"]
    assert state["columnOrder"][:3] == metrics and set(metrics) <= set(state["selectedColumns"])
    assert state["searchFilter"] == "tags.`recsys.kind` = 'model'"
    # the filter is one MLflow's search accepts, and finds exactly the model runs
    found = client.search_runs([experiment.experiment_id], filter_string=state["searchFilter"])
    assert set(logged.runs.values()) <= {r.info.run_id for r in found}
    assert logged.parent_id not in {r.info.run_id for r in found}


def test_runs_have_a_source_a_named_dataset_and_a_linked_model(logged):
    client = MlflowClient(logged.uri, registry_uri=logged.uri)
    parent = client.get_run(logged.parent_id)
    assert parent.data.tags["mlflow.source.type"] == "LOCAL" and parent.data.tags["mlflow.source.name"]
    assert parent.data.tags["mlflow.source.git.commit"] == parent.data.tags["recsys.git_commit"]
    for name, run_id in logged.runs.items():
        run = client.get_run(run_id)
        for key in ("mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit"):
            assert run.data.tags[key] == parent.data.tags[key]  # a model run has its pipeline's source
        (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
        assert (dataset.name, dataset.digest) == ("planted", "planted-0")
        (logged_model,) = json.loads(run.data.tags["mlflow.log-model.history"])
        assert logged_model["artifact_path"] == "model" and logged_model["run_id"] == run_id
        assert "python_function" in logged_model["flavors"]
        version = client.get_model_version(f"recsys-{name}", logged.versions[name])
        assert version.run_id == run_id  # the Models column pairs it with the registered version


@pytest.mark.slow
def test_runs_page_in_a_browser_shows_model_runs_with_recall(logged, runs_page, tmp_path):
    client = MlflowClient(logged.uri, registry_uri=logged.uri)
    experiment = client.get_experiment_by_name(logged.config.tracking.experiment)
    assert runs_page.endswith(
        f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=recsys-models"
    )
    text = page_text(runs_page, tmp_path / "profile")
    assert f"Runs - Experiment {experiment.experiment_id} - MLflow" in text  # the page title
    assert "Token Usage" not in text and "recsys: models by recall@20" in text  # not GenAI; our view
    for name, run_id in logged.runs.items():
        recall = client.get_run(run_id).data.metrics["recall_at_20"]
        assert re.search(rf"\b{name}\b", text), name
        assert repr(recall) in text, (name, recall)  # the metric column, as MLflow prints a float
    assert "Sort: recall_at_20" in text and "ndcg_at_20" in text  # (no folding logged by log_pipeline)
    assert "planted (planted-0)" in text  # the Dataset column
    # the Models column links the run to the newest registered model made from it (+N others)
    versions = client.search_model_versions(f"run_id = '{logged.runs['wals']}'")
    assert versions and any(f"{v.name} v{v.version}" in text for v in versions)


def test_dataset_names_come_from_the_source():
    assert ui.dataset_name({"name": "planted", "source": "x"}) == "planted"
    assert ui.dataset_name({"config": {"source": "synthetic"}, "sources": ["data/raw/s/i.parquet"]}) == "synthetic"
    assert ui.dataset_name({"config": {"source": "../shared/ml-100k/ml-100k.inter"}}) == "ml-100k.inter"
    assert ui.dataset_name({"config": {"source": "s3://bucket/events/"}}) == "events"
    assert ui.dataset_name({"sources": ["a/x.csv", "a/y.csv"]}) == "x.csv +1 files"
    assert ui.dataset_name({}) == "interactions"
    assert ui.dataset_source({"config": {"source": "s3://bucket/events/"}}) == "s3://bucket/events/"


def test_source_names_and_links():
    assert ui.default_source_name(["/venv/bin/recsys", "--quiet", "run", "--config", "x.toml"]) == "recsys run"
    assert ui.default_source_name(["/venv/lib/python3.11/site-packages/pytest/__main__.py", "-q"]) == "pytest"
    tags = ui.source_tags("abc123", ("JOB", "prefect deployment training-pipeline:nightly"))
    assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.source.git.commit"] == "abc123"
    assert "mlflow.source.git.commit" not in ui.source_tags("unknown")
    assert ui.key_metrics("ndcg@10") == ["ndcg@10", "recall@10", "folding@10"]
    assert ui.key_metrics("recall@20") == ["recall@20", "ndcg@20", "folding@20"]
    assert ui.runs_page_url("http://h:5000/", None) == "http://h:5000/#/experiments?workflowType=machine_learning"
