"""The training flow as a team schedules it: `recsys schedule` serves the deployment against a
Prefect server on PostgreSQL (not the ephemeral test harness), two runs are scheduled on the server,
the runner executes them: the first logs a finished pipeline run to the PostgreSQL-backed MLflow
server, the second, on the same data, config and code, trains and logs nothing (pipelines.unchanged). tests/flows/scheduled_scenario.py drives it; the session starts it in the background as soon
as both servers answer (tests/conftest.py), and runs this check last."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta

import pytest
from mlflow import MlflowClient


@pytest.mark.slow
def test_a_deployment_on_a_prefect_server_runs_two_scheduled_runs_and_the_unchanged_one_trains_nothing(
    scheduled_runs, mlflow_server
):
    result, log = scheduled_runs
    assert "error" not in result, f"{result['error']}\n{log[-3000:]}"
    assert result["schedules"] == ["0 3 1 1 *"]  # the deployment carries its cron schedule
    first, second = result["runs"]
    assert (first["state"], second["state"]) == ("COMPLETED", "COMPLETED"), log[-3000:]
    assert datetime.fromisoformat(first["expected_start"]) < datetime.fromisoformat(second["expected_start"])
    # the server's own scheduler put the deployment's next (yearly) runs on the calendar
    assert result["upcoming"] and set(result["upcoming"]) == {"SCHEDULED"}

    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    experiment = client.get_experiment_by_name(result["experiment"])
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`recsys.kind` = 'pipeline'")
    by_flow_run = {p.data.tags.get("recsys.prefect_flow_run_id"): p for p in parents}
    assert list(by_flow_run) == [first["id"]]  # the second run, on unchanged inputs, opened no MLflow run
    parent = by_flow_run[first["id"]]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mlflow.source.type"] == "JOB"
    assert parent.data.tags["mlflow.source.name"] == f"prefect deployment training-pipeline:{result['name']}"
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["pop", "wals"]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert "recsys.unchanged_since" in parent.data.tags  # the second run found it unchanged
    assert f"skipped: unchanged since run {parent.info.run_id}" in " ".join(log.split()), log[-3000:]
    versions = client.search_model_versions("name='scheduled-wals'")
    assert len(versions) == 1  # one registry version, not one per scheduled run


def test_recsys_schedule_interval_makes_an_interval_schedule():
    from flows.deployments import pipeline_deployment

    deployment = pipeline_deployment(interval=21600, config_path="pipelines/configs/default.toml")
    assert [s.schedule.interval for s in deployment.schedules] == [timedelta(hours=6)]


def no_server_start(monkeypatch) -> None:
    """`recsys schedule` starts its temporary server before it serves (`flows.server_start`, as `recsys
    run`): where a test stands in for the serving, nothing is started for it either."""
    import flows.server_start

    monkeypatch.setattr(flows.server_start, "launch_server_early", lambda: None)
    monkeypatch.setattr(flows.server_start, "start_server_in_background",
                        lambda early=None: flows.server_start.ServerStart(None))  # fmt: skip


def test_recsys_schedule_stops_the_prefect_server_a_killed_schedule_left(monkeypatch):
    """kill -9 of `recsys schedule` left its temporary Prefect server serving (reparented to init);
    a `recsys run` stopped such servers at its start, the next `recsys schedule` did not. The stop
    itself is tested on a real orphan in tests/flows/test_interrupt.py; this is its wiring."""
    from typer.testing import CliRunner

    import flows.deployments
    import flows.ephemeral
    from recsys.cli import app

    monkeypatch.setattr(flows.ephemeral, "stop_orphaned_servers", lambda: [4242])
    monkeypatch.setattr(flows.deployments, "serve_pipeline", lambda **kwargs: None)
    no_server_start(monkeypatch)
    result = CliRunner().invoke(app, ["schedule", "--interval", "60"])
    assert result.exit_code == 0, result.output
    assert "stopped 1 temporary Prefect server(s) left by killed runs (pids 4242)" in result.output


def test_recsys_schedule_gives_the_ephemeral_prefect_server_the_settings_recsys_run_gives_it(monkeypatch):
    """`recsys schedule` without PREFECT_API_URL serves on Prefect's ephemeral server, as `recsys
    run` does, but without run's settings for it: its telemetry logged "ERROR | prefect.server.
    services.telemetry - Failed to send telemetry" on an offline machine, and its start had
    Prefect's 20 s limit instead of 180 s on a loaded one. The environment Prefect sees when the
    deployment is served, with the user's own values kept."""
    import os

    from typer.testing import CliRunner

    import flows.deployments
    from recsys.cli import app

    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "77")  # the user's
    seen = {}
    monkeypatch.setattr(flows.deployments, "serve_pipeline", lambda **kwargs: seen.update(os.environ))
    no_server_start(monkeypatch)
    result = CliRunner().invoke(app, ["schedule", "--interval", "60"])
    assert result.exit_code == 0, result.output
    assert seen["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert seen["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "77"


@pytest.mark.parametrize("command", ["schedule", "run"])
def test_a_prefect_api_that_is_down_is_one_error_line(command, tmp_path, monkeypatch):
    """PREFECT_API_URL naming a server that is down (`recsys stack down` with .stack/env still
    sourced): `recsys schedule` ended with "unexpected ConnectError: All connection attempts
    failed: this is a bug" (exit 1), `recsys run` after its set-up with "unexpected RuntimeError:
    Failed to reach API". Now one line saying which API and what to do, exit 2, before any work."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    import flows.deployments
    from recsys.cli import app

    config = tmp_path / "tiny.toml"
    config.write_text(f"""
name = "down"
[data]
source = "synthetic"
processed_dir = "{tmp_path / 'processed'}"
raw_dir = "{tmp_path / 'raw'}"
[data.synthetic]
n_users = 60
n_items = 30
n_clusters = 2
interactions_per_user = 8
[[models]]
name = "popularity"
kind = "popularity"
""")
    monkeypatch.setattr(flows.deployments, "serve_pipeline", lambda **kwargs: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/api"  # closed when the block ends
    args = [command, "--config", str(config), *(["--no-tracking"] if command == "run" else [])]
    with temporary_settings(updates={PREFECT_API_URL: down}):
        result = CliRunner().invoke(app, args)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    said = " ".join(result.output.split())
    assert f"Prefect API {down} (PREFECT_API_URL) is not reachable" in said, result.output
    assert ("or pass --no-prefect" in said) == (command == "run"), result.output
    assert not (tmp_path / "processed").exists()  # before any work
