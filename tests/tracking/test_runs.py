"""What a logged pipeline run holds in the real SQLite store: tags, params, dataset, metrics,
artifacts, registry versions, and FAILED runs with their error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from recsys.models.wals import WALSConfig
from recsys.tracking.runs import TAG_ERROR, TAG_FINGERPRINT, TAG_SPLIT_DIGEST, Tracker


@pytest.fixture(scope="module")
def client(logged) -> MlflowClient:
    # explicit registry: a test that loads a model may have set the process-wide registry URI
    return MlflowClient(logged.uri, registry_uri=logged.uri)


def test_parent_run_has_provenance_params_and_dataset(logged, client):
    parent = client.get_run(logged.parent_id)
    tags, params = parent.data.tags, parent.data.params
    assert parent.info.status == "FINISHED"
    assert tags[TAG_FINGERPRINT] == "planted-0"
    assert tags["recsys.split_protocol"] == "random"
    assert tags["recsys.git_commit"]
    assert tags["recsys.version.mlflow"] and tags["recsys.version.polars"]
    assert tags["recsys.config_hash"] == logged.config.config_hash()
    assert params["evaluation.ks"] == "[5, 10, 20]"
    assert params["models.wals.factors"] == "8"
    (dataset_input,) = parent.inputs.dataset_inputs
    assert dataset_input.dataset.digest == "planted-0"
    input_tags = {t.key: t.value for t in dataset_input.tags}
    assert input_tags["n_users"] == "240" and input_tags["n_interactions"] == str(240 * 14)


def test_child_runs_nest_under_the_parent_with_model_params(logged, client):
    for name, run_id in logged.runs.items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == logged.parent_id
        assert run.data.tags["recsys.model_name"] == name
        assert run.data.params["name"] == name
    assert client.get_run(logged.runs["wals"]).data.params["iterations"] == "4"
    # settings the fit resolved from the data are params too, as `resolved.<key>`: the UI showed
    # only the pre-fit values (no confidence at all, `temperature = auto`), unlike config/model.json
    wals = client.get_run(logged.runs["wals"]).data.params
    assert "confidence" not in wals and wals["resolved.confidence"] == str(logged.models["wals"].config.confidence)
    assert "resolved.iterations" not in wals and "resolved.name" not in wals  # configured values: logged once


def test_final_metrics_and_intervals_equal_the_evaluation(logged, client):
    for name, run_id in logged.runs.items():
        metrics = client.get_run(run_id).data.metrics
        result = logged.results[name]
        for metric, value in result.summary.items():
            assert metrics[metric.replace("@", "_at_")] == pytest.approx(value)
        low, high = result.ci["recall@20"]
        assert metrics["recall_at_20_ci_low"] == pytest.approx(low)
        assert metrics["recall_at_20_ci_high"] == pytest.approx(high)
        assert low <= metrics["recall_at_20"] <= high
        assert "note" not in metrics  # non-numeric extras are skipped


def test_per_epoch_history_is_logged_with_steps(logged, client):
    model = logged.models["wals"]
    history = client.get_metric_history(logged.runs["wals"], "loss")
    assert [m.step for m in history] == [int(h["step"]) for h in model.history]
    assert [m.value for m in history] == pytest.approx([h["loss"] for h in model.history])


def test_artifacts_hold_config_manifest_per_user_plots_embeddings_and_models(logged, client, tmp_path):
    run_id = logged.runs["wals"]
    local = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    expected = [
        "config/run.toml", "config/model.json", "data/manifest.json", "evaluation/per_user.parquet",
        "evaluation/summary.json", "plots/recall_at_k.png", "plots/training_curves.png",
        "plots/popularity_bias.png", "plots/item_embeddings_pca.png",
        "model/artifacts/serving/model/config.json", "model/MLmodel",
    ]  # fmt: skip
    missing = [p for p in expected if not (local / p).is_file()]
    assert not missing
    per_user = pl.read_parquet(local / "evaluation/per_user.parquet")
    result = logged.results["wals"]
    assert per_user.height == result.per_user.height
    assert per_user.get_column("user_id").to_list() == [
        f"u{i}" for i in result.per_user.get_column("user_idx")
    ]
    assert per_user.get_column("recall@20").mean() == pytest.approx(result.summary["recall@20"])
    manifest = json.loads((local / "data/manifest.json").read_text())
    assert manifest["split"]["fingerprint"] == "planted-0"
    assert client.get_run(run_id).data.tags[TAG_SPLIT_DIGEST] == manifest["split_digest"]
    assert "[[models]]" in (local / "config/run.toml").read_text()


def test_popularity_gets_no_embedding_plot(logged, client):
    """Its item 'vectors' are one count each: the PCA plot was a line of dots at PC 2 = 0."""
    plots = {f.path for f in client.list_artifacts(logged.runs["popularity"], "plots")}
    assert "plots/recall_at_k.png" in plots and "plots/item_embeddings_pca.png" not in plots


def test_factors_are_stored_once_per_model(logged, client, tmp_path):
    """The pyfunc reads the saved model's factors: no second copy anywhere in the run."""
    from safetensors.numpy import load_file

    model = logged.models["wals"]
    local = Path(client.download_artifacts(logged.runs["wals"], "", str(tmp_path)))
    copies = [
        (path.relative_to(local), name)
        for path in local.rglob("*.safetensors")
        for name, tensor in load_file(str(path)).items()
        if tensor.shape == model.item_factors.shape and np.allclose(tensor, model.item_factors)
    ]
    assert copies == [(Path("model/artifacts/serving/model/factors.safetensors"), "item_factors")]


def test_every_model_is_registered_as_a_new_version(logged, client):
    for name, version in logged.versions.items():
        mv = client.get_model_version(f"recsys-{name}", version)
        assert mv.run_id == logged.runs[name]
        # the run's page in the MLflow UI says how it scored and how to serve this version
        description = client.get_run(mv.run_id).data.tags["mlflow.note.content"]
        recall = logged.results[name].summary["recall@20"]
        assert f"recall@20 = {recall:.4f} [" in description
        assert f"`recsys serve --model recsys-{name} --version {version}`" in description


def test_a_failed_model_run_ends_failed_with_the_error(logged, client, tmp_path):
    tracker = Tracker(logged.config.tracking, logged.config, check=False)
    parent = tracker.start_parent("failing")
    with pytest.raises(FloatingPointError):
        with tracker.model_run(parent, WALSConfig(name="broken")) as run:
            run.callback(0, {"loss": 1.5})
            raise FloatingPointError("loss became NaN at epoch 3")
    tracker.end(parent)
    failed = client.get_run(run.run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags[TAG_ERROR] == "FloatingPointError: loss became NaN at epoch 3"
    path = client.download_artifacts(run.run_id, "error.txt", str(tmp_path))
    assert "loss became NaN" in Path(path).read_text()
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_killed_processs_scratch_copy_of_a_model_is_removed_when_the_next_run_logs(
    shared_mlflow_uri, planted_data, planted_split, tmp_path: Path, monkeypatch
):
    """Logging a model writes it (and the pyfunc's copy) to a scratch directory, as logging a split
    writes every matrix and a promotion downloads the champion. A run or `recsys promote` killed
    with -9 inside left that directory in $TMPDIR for ever (a model's size per kill, found by QA):
    now it is named by the pid, and the next one of its kind removes those of dead processes."""
    import tempfile

    from recsys.data.matrix import item_popularity
    from recsys.evaluation.evaluate import evaluate
    from recsys.models.base import build_model

    from .conftest import run_config

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed = [tmp_path / f"recsys-{kind}-999999999-abcd" for kind in ("run", "split")]  # above any pid_max
    for left in killed:
        (left / "model").mkdir(parents=True)
    cfg = run_config(shared_mlflow_uri, "scratch-after-kill")
    cfg.tracking.register_models = False
    tracker = Tracker(cfg.tracking, cfg, check=False)
    parent = tracker.start_parent(split=planted_split, data=planted_data)
    model_cfg = cfg.models[0]
    with tracker.model_run(parent, model_cfg) as run:
        model = build_model(model_cfg).fit(planted_split.train)
        result = evaluate(model, planted_split.test_set(), cfg.evaluation, item_popularity=item_popularity(planted_split.train))
        tracker.log_model_result(run, model, result, planted_split, planted_data)
    tracker.end(parent)
    assert sorted(p.name for p in tmp_path.glob("recsys-*")) == []  # the killed ones' and its own
