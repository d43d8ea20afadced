"""The training flow as a team schedules it: `recsys schedule` serves the deployment against a
Prefect server on PostgreSQL (not the ephemeral test harness), the server's scheduler creates the
runs, the runner executes them, and they log to the PostgreSQL-backed MLflow server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from .test_pipeline import TINY

WAIT_S = 420  # two flow runs, each a fresh Python process, on a loaded 2-core machine
INTERVAL_S = 5


def _flow_runs(client, deployment_name: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    try:
        deployment = client.read_deployment_by_name(deployment_name)
    except ObjectNotFound:
        return []
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
    )


@pytest.mark.slow
def test_a_scheduled_deployment_on_a_prefect_server_runs_twice_and_logs_both(
    prefect_server, mlflow_server, tmp_path
):
    from prefect.client.orchestration import SyncPrefectClient

    name, experiment = f"every-{INTERVAL_S}s-{tmp_path.name}", f"scheduled-{tmp_path.name}"
    overrides = [
        *TINY, 'models=[{name="pop", kind="popularity"}, {name="wals", kind="wals", factors=8, iterations=3}]',
        f'data.processed_dir="{tmp_path / "processed"}"', f'data.raw_dir="{tmp_path / "raw"}"',
        f'tracking.tracking_uri="{mlflow_server}"', f'tracking.experiment="{experiment}"',
        f'tracking.model_name_prefix="{tmp_path.name}"', f'promotion.registered_model="{tmp_path.name}-best"',
    ]  # fmt: skip
    command = [str(Path(sys.executable).parent / "recsys"), "schedule", "--interval", str(INTERVAL_S), "--name", name]
    for override in overrides:
        command += ["--set", override]
    env = {
        **os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_RUNNER_PROCESS_LIMIT": "1",  # the two runs one after the other, as a nightly job's would
        "OPENBLAS_NUM_THREADS": "1",
    }  # fmt: skip
    log = tmp_path / "schedule.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = SyncPrefectClient(prefect_server)
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            runs = _flow_runs(client, f"training-pipeline/{name}")
            if len(runs) >= 2 and all(run.state.is_final() for run in runs[:2]):
                break
            if server.poll() is not None:
                pytest.fail(f"recsys schedule exited with {server.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                states = [(run.name, run.state_type) for run in runs]
                pytest.fail(f"two runs not finished after {WAIT_S} s: {states}\n{log.read_text()[-3000:]}")
            time.sleep(1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    first, second = runs[:2]
    for run in (first, second):
        assert run.state.is_completed(), (run.name, run.state, log.read_text()[-3000:])
        assert run.auto_scheduled  # created by the server's scheduler, not by the test
    assert first.expected_start_time < second.expected_start_time

    mlflow = MlflowClient(mlflow_server)
    found = mlflow.get_experiment_by_name(experiment)
    parents = mlflow.search_runs([found.experiment_id], filter_string="tags.`recsys.kind` = 'pipeline'")
    by_flow_run = {p.data.tags.get("recsys.prefect_flow_run_id"): p for p in parents}
    for run in (first, second):
        parent = by_flow_run[str(run.id)]  # each flow run left its own MLflow pipeline run
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["mlflow.source.type"] == "JOB"
        assert parent.data.tags["mlflow.source.name"] == f"prefect deployment training-pipeline:{name}"
        children = mlflow.search_runs(
            [found.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
        assert sorted(c.info.run_name for c in children) == ["pop", "wals"]
        assert {c.info.status for c in children} == {"FINISHED"}
