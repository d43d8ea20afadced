"""Interrupted runs under Prefect (the default path of `recsys run`).

* Ctrl-C: the models training in worker threads stop too. Python raises KeyboardInterrupt in the
  main thread only, and the flow's exit waited for its worker threads, so a two-tower trained to its
  last epoch after Ctrl-C and was logged FINISHED.
* kill -9: the temporary Prefect server the killed run started kept serving, reparented to init;
  the next run stops it and says so.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

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


def _alive(pid: int) -> bool:
    """Running, not a zombie (init here need not reap the processes it inherits)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _server_pid(port: str) -> int:
    """The pid of the uvicorn serving Prefect's app on `port`."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in command and port.encode() in command:
            return int(entry.name)
    raise AssertionError(f"no Prefect server on port {port}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc (Linux)")
def test_the_next_run_stops_the_prefect_server_a_killed_run_left(prefect_harness, tmp_path):
    sets = ["data.synthetic.n_users=120", "data.synthetic.n_items=60", "data.min_user_interactions=2",
            "folding.enabled=false", f'data.processed_dir="{tmp_path / "p"}"', f'data.raw_dir="{tmp_path / "raw"}"']
    args = [a for s in sets for a in ("--set", s)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")  # its own server database
    killed = subprocess.Popen(  # a run with its own temporary server, killed while it trains
        [sys.executable, "-m", "recsys.cli", "run", "--no-tracking", *args, "--set",
         'models=[{name="tt", kind="two_tower", dim=8, epochs=2000, batch_size=256, num_negatives=8, quiet=true}]'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    port = None
    for raw in killed.stdout:
        line = raw.decode(errors="replace")
        port = port or next(iter(re.findall(r"temporary server on http://127\.0\.0\.1:(\d+)", line)), None)
        if "training tt" in line:
            break
    killed.kill()
    killed.wait()
    assert port, "the run started a temporary Prefect server"
    orphan = _server_pid(port)
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{orphan}/stat").read_text().rsplit(")", 1)[1].split()[1] != "1":
            assert time.monotonic() < deadline, "the killed run's server was never reparented"
            time.sleep(0.1)
        result = CliRunner().invoke(app, ["run", "--no-tracking", *args, "--set", 'models=[{name="pop", kind="popularity"}]'])
        assert result.exit_code == 0, result.output
        stopped = re.search(r"stopped \d+ temporary Prefect server\(s\) left by killed runs \(pids ([\d, ]+)\)", result.output)
        assert stopped and str(orphan) in stopped.group(1).split(", "), result.output
        deadline = time.monotonic() + 15
        while _alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(orphan)
    finally:
        if _alive(orphan):  # the test's own leftover, by its pid
            os.kill(orphan, signal.SIGKILL)
