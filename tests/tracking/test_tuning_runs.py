"""A tuned model inside a pipeline run, in the real SQLite store: trials are nested runs under the
model's run, the model's run holds the chosen parameters, the trials table and both plots, and the
next run's search starts from the champion's parameters."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from pipelines.run import promote_best, train_and_log
from pipelines.tune import champion_parameters, lineage
from recsys.config import EvaluationConfig, PromotionConfig, RunConfig, SplitConfig, TrackingConfig
from recsys.data.splits import split_data
from recsys.evaluation.ranking import topk
from recsys.models.ease import EASEConfig
from recsys.models.wals import WALSConfig
from recsys.tracking.reevaluate import load_run_model
from recsys.tracking.runs import TAG_KIND, Tracker
from recsys.tuning import ParamRange, TuningConfig

from .conftest import log_one


def test_trials_are_nested_runs_with_plots_and_the_champion_warm_starts_the_next_search(
    tracking_uri, planted_data, tmp_path
):
    split_cfg = SplitConfig(protocol="random", test_fraction=0.25, validation_fraction=0.15, seed=0)
    space = {"factors": [4, 8], "regularization": ParamRange(low=0.01, high=10.0, log=True)}
    wals = WALSConfig(name="wals", iterations=4, threads=1, tuning=TuningConfig(n_trials=4, space=space))
    cfg = RunConfig(
        name="tuning-test", models=[wals], split=split_cfg,
        evaluation=EvaluationConfig(ks=[10, 20], bootstrap_samples=50),
        tracking=TrackingConfig(tracking_uri=tracking_uri, experiment="tuning", model_name_prefix="tuning"),
        promotion=PromotionConfig(registered_model="tuning-best"),
    )  # fmt: skip
    split = split_data(planted_data, split_cfg)
    tracker = Tracker(cfg.tracking, cfg)
    parent = tracker.start_parent(data=planted_data, split=split)
    lines: list[str] = []
    outcome = train_and_log(wals, split, cfg, tracker, parent, threads=1, log=lines.append, data=planted_data)
    client = MlflowClient(tracking_uri)
    model_run = client.get_run(outcome.mlflow_run_id)

    trials = client.search_runs(
        [model_run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{outcome.mlflow_run_id}'"
    )
    assert len(trials) == 4 and outcome.tuning["trials"] == 4
    assert {t.data.tags[TAG_KIND] for t in trials} == {"trial"}
    assert all(t.info.status == "FINISHED" and "value" in t.data.metrics for t in trials)
    by_number = sorted(trials, key=lambda t: int(t.data.tags["recsys.trial_number"]))
    best = max(by_number, key=lambda t: t.data.metrics["value"])  # ties: the earlier trial
    assert model_run.data.params["tuned.factors"] == best.data.params["factors"]
    assert float(model_run.data.params["tuned.regularization"]) == float(best.data.params["regularization"])
    artifacts = {a.path for a in client.list_artifacts(outcome.mlflow_run_id, "tuning")}
    assert {"tuning/optimization_history.png", "tuning/param_importances.png", "tuning/trials.json"} <= artifacts
    path = client.download_artifacts(outcome.mlflow_run_id, "tuning/trials.json", str(tmp_path))
    table = json.loads(Path(path).read_text())
    assert table["best_value"] == best.data.metrics["value"] and len(table["trials"]) == 4
    # the model is scored on test once, after the search, and that is what the model's run holds
    assert model_run.data.metrics["recall_at_20"] == outcome.metrics["recall@20"]

    decision = promote_best(cfg, tracker, [outcome], split)
    assert decision["champion"] == "wals"
    tracker.end(parent)
    queued = champion_parameters(cfg, tracker, wals, lines.append)
    assert queued and queued[0]["factors"] == int(best.data.params["factors"])
    assert queued[0]["regularization"] == float(best.data.params["regularization"])
    another_lineage = cfg.model_copy(update={"name": "another-config"})  # same registry line, other lineage
    assert lineage(another_lineage) != lineage(cfg)
    assert champion_parameters(another_lineage, tracker, wals, lines.append) == []
    assert champion_parameters(cfg, tracker, wals.model_copy(update={"kind": "ease"}), lines.append) == []


def test_ease_serves_and_folds_in_through_the_logged_pyfunc(logged, planted_split, planted_data, tmp_path):
    """EASE logs through the same tracker and pyfunc as every model: a known user is answered from
    its history row, a new user with a history is folded in (the history is the vector)."""
    run_id = log_one(logged, EASEConfig(name="ease"), planted_split, planted_data)
    mlflow.set_tracking_uri(logged.uri)
    try:
        served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model", dst_path=str(tmp_path))
    finally:
        mlflow.set_tracking_uri(None)
    split = planted_split
    exclude = split.test_set().exclude
    users = split.test_set().users[:20]
    with tempfile.TemporaryDirectory() as tmp:
        model = load_run_model(MlflowClient(logged.uri), run_id, Path(tmp))
    expected, _ = topk(model.user_factors[users], model.item_factors, 10, exclude=exclude[users])
    answer = served.predict(pd.DataFrame({"user_id": [str(split.user_ids[u]) for u in users]}), params={"k": 10})
    assert answer["source"].unique().tolist() == ["model"]
    assert [list(x) for x in answer["item_ids"]] == [[str(split.item_ids[i]) for i in row] for row in expected]
    history = split.train[[5]]
    new = served.predict(pd.DataFrame({"user_id": ["new"], "k": [10], "history": [[f"i{i}" for i in history.indices]]}))
    assert new["source"].tolist() == ["fold_in"]
    folded, _ = topk(model.fold_in(history), model.item_factors, 10, exclude=history)
    assert list(new["item_ids"][0]) == [str(split.item_ids[i]) for i in folded[0]]
    assert np.array_equal(model.fold_in(history)[0] > 0, history.toarray()[0] > 0)
