"""The training flow as a team schedules it: `recsys schedule` serves the deployment against a
Prefect server on PostgreSQL (not the ephemeral test harness); two runs are scheduled on the server,
the runner executes them, and they log to the PostgreSQL-backed MLflow server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient

from .test_pipeline import TINY

WAIT_S = 420  # two flow runs, each a fresh Python process, on a loaded 2-core machine
YEARLY = "0 3 1 1 *"  # the deployment's own schedule: real, but never due while the test runs


def _deployment(client, name: str, deadline: float, server: subprocess.Popen, log: Path):
    """The deployment once `recsys schedule` has registered it."""
    from prefect.exceptions import ObjectNotFound

    while True:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"recsys schedule did not register {name}:\n{log.read_text()[-3000:]}")
        time.sleep(1)


def _flow_runs(client, deployment_id) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
    )


@pytest.mark.slow
def test_a_deployment_on_a_prefect_server_runs_two_scheduled_runs_and_logs_both(
    prefect_server, mlflow_server, tmp_path
):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.states import Scheduled

    name, experiment = f"team-{tmp_path.name}", f"scheduled-{tmp_path.name}"
    overrides = [
        *TINY, 'models=[{name="pop", kind="popularity"}, {name="wals", kind="wals", factors=8, iterations=3}]',
        f'data.processed_dir="{tmp_path / "processed"}"', f'data.raw_dir="{tmp_path / "raw"}"',
        f'tracking.tracking_uri="{mlflow_server}"', f'tracking.experiment="{experiment}"',
        f'tracking.model_name_prefix="{tmp_path.name}"', f'promotion.registered_model="{tmp_path.name}-best"',
    ]  # fmt: skip
    command = [str(Path(sys.executable).parent / "recsys"), "schedule", "--cron", YEARLY, "--name", name]
    for override in overrides:
        command += ["--set", override]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env.update(PREFECT_API_URL=prefect_server, PREFECT_RUNNER_POLL_FREQUENCY="1", OPENBLAS_NUM_THREADS="1")
    log = tmp_path / "schedule.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = SyncPrefectClient(prefect_server)
    try:
        deadline = time.monotonic() + WAIT_S
        deployment = _deployment(client, f"training-pipeline/{name}", deadline, server, log)
        assert [s.schedule.cron for s in deployment.schedules] == [YEARLY]
        ours: list = []
        for _ in range(2):  # day one, then day two: each run scheduled on the server, due now
            when = Scheduled(scheduled_time=datetime.now(UTC))  # as `prefect deployment run` does
            ours.append(client.create_flow_run_from_deployment(deployment.id, state=when).id)
            while True:
                runs = [run for run in _flow_runs(client, deployment.id) if run.id in ours]
                if len(runs) == len(ours) and all(run.state.is_final() for run in runs):
                    break
                if server.poll() is not None:
                    pytest.fail(f"recsys schedule exited with {server.returncode}:\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    states = [(run.name, run.state_type) for run in runs]
                    pytest.fail(f"runs not finished after {WAIT_S} s: {states}\n{log.read_text()[-3000:]}")
                time.sleep(1)
        # the server's own scheduler has put the deployment's next (yearly) runs on the calendar
        upcoming = [run for run in _flow_runs(client, deployment.id) if run.auto_scheduled]
        assert upcoming and all(run.state.is_scheduled() for run in upcoming)
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
    assert first.expected_start_time < second.expected_start_time

    mlflow = MlflowClient(mlflow_server, registry_uri=mlflow_server)
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


def test_recsys_schedule_interval_makes_an_interval_schedule():
    from flows.deployments import pipeline_deployment

    deployment = pipeline_deployment(interval=21600, config_path="pipelines/configs/default.toml")
    assert [s.schedule.interval for s in deployment.schedules] == [timedelta(hours=6)]
