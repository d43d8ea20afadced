"""A two-tower that resumed from a checkpoint says so on its MLflow run (issue 20, item 9)."""

from __future__ import annotations

from mlflow import MlflowClient

from recsys.data.matrix import item_popularity
from recsys.evaluation.evaluate import evaluate
from recsys.models.two_tower import TwoTower, TwoTowerConfig
from recsys.tracking.runs import Tracker
from recsys.training import RESUMED_CHECKPOINT_TAG

from .conftest import run_config


def test_a_resumed_training_is_logged_with_its_epoch_step_and_checkpoint(
    tracking_uri, planted_split, tmp_path
):
    ckpt = tmp_path / "ckpt"
    base = dict(name="tt", dim=8, batch_size=256, num_negatives=8, threads=1, device="cpu", quiet=True,
                eval_every=0, checkpoint_dir=str(ckpt))  # fmt: skip
    TwoTower(TwoTowerConfig(**base, epochs=1)).fit(planted_split.train)
    model = TwoTower(TwoTowerConfig(**base, epochs=2)).fit(planted_split.train)
    cfg = run_config(tracking_uri, "resume-logged")
    cfg.tracking.register_models = False
    tracker = Tracker(cfg.tracking, cfg, check=False)
    parent = tracker.start_parent(split=planted_split)
    with tracker.model_run(parent, model.config) as run:
        result = evaluate(
            model,
            planted_split.test_set(),
            cfg.evaluation,
            item_popularity=item_popularity(planted_split.train),
        )
        tracker.log_model_result(run, model, result, planted_split)
    tracker.end(parent)
    logged = MlflowClient(tracking_uri).get_run(run.run_id).data
    assert logged.tags[RESUMED_CHECKPOINT_TAG] == str(ckpt / "epoch-0001")
    assert logged.metrics["resumed_from_epoch"] == 1
    assert logged.metrics["resumed_from_step"] == model.resumed_from["step"] > 0
