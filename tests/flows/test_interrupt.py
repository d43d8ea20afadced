"""Ctrl-C under Prefect (the default path of `recsys run`): the models training in worker threads
stop too. Python raises KeyboardInterrupt in the main thread only, and the flow's exit waited for
its worker threads, so a two-tower trained to its last epoch after Ctrl-C and was logged FINISHED."""

from __future__ import annotations

import os
import signal
import threading
import uuid

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from recsys import interrupt
from recsys.cli import app

EPOCHS = 400  # ~30 s of training on 2 cores: the run is interrupted long before


def _interrupt_once_training(client: MlflowClient, experiment: str, done: threading.Event) -> None:
    """Send this process SIGINT once the two-tower's run has logged an epoch."""
    while not done.wait(0.2):
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id], "tags.`recsys.model_name` = 'tt'") if found else []
        if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
            os.kill(os.getpid(), signal.SIGINT)
            return


@pytest.mark.slow
def test_ctrl_c_stops_models_training_in_worker_threads(prefect_harness, shared_mlflow_uri, tmp_path):
    experiment = f"ctrl-c-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(shared_mlflow_uri)
    done = threading.Event()
    watcher = threading.Thread(target=_interrupt_once_training, args=(client, experiment, done), daemon=True)
    sets = [
        "data.synthetic.n_users=120", "data.synthetic.n_items=60", "data.synthetic.n_clusters=3",
        "data.synthetic.interactions_per_user=12", "data.min_user_interactions=2", "evaluation.ks=[5, 20]",
        "evaluation.bootstrap_samples=20", "folding.enabled=false", f'data.processed_dir="{tmp_path / "p"}"',
        f'data.raw_dir="{tmp_path / "raw"}"', f'tracking.tracking_uri="{shared_mlflow_uri}"',
        f'tracking.experiment="{experiment}"', 'tracking.model_name_prefix="ctrl-c"',
        f'promotion.registered_model="ctrl-c-{experiment}"',
        f'models=[{{name="pop", kind="popularity"}}, {{name="tt", kind="two_tower", dim=8, epochs={EPOCHS}, '
        'batch_size=256, num_negatives=8, quiet=true}]',
    ]  # fmt: skip
    watcher.start()
    try:
        result = CliRunner().invoke(app, ["run", *[a for s in sets for a in ("--set", s)]])
    finally:
        done.set()
        watcher.join()
    assert result.exit_code == 130, result.output
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    (tt,) = [r for r in runs if r.data.tags.get("recsys.model_name") == "tt"]
    (parent,) = [r for r in runs if "recsys.model_name" not in r.data.tags]
    assert tt.info.status == "KILLED" and parent.info.status == "KILLED"
    assert len(client.get_metric_history(tt.info.run_id, "loss")) < EPOCHS  # stopped, not trained to the end
    assert not interrupt.requested()  # the command cleared its request: the next command in this process runs
