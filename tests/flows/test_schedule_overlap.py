"""`recsys schedule --overlap`: what a scheduled run does when it falls due while the previous run of
the deployment is still going (flows.deployments.OVERLAP_POLICIES), decided by the Prefect server."""

from __future__ import annotations

import uuid

import pytest


@pytest.mark.parametrize(("overlap", "second"), [("skip", "CANCELLED"), ("queue", "SCHEDULED"), ("allow", "PENDING")])
def test_a_run_due_while_the_previous_one_still_runs_is_skipped_queued_or_allowed(prefect_harness, overlap, second):
    """`recsys schedule --overlap`: the Prefect server decides when a run falls due (Scheduled ->
    Pending) while another run of the deployment holds its slot; the default cancels it."""
    from prefect import get_client
    from prefect.states import Pending

    from flows.deployments import pipeline_deployment

    deployment = pipeline_deployment(name=f"overlap-{overlap}-{uuid.uuid4().hex[:6]}", overlap=overlap)
    deployment_id = deployment.apply()
    with get_client(sync_client=True) as client:
        runs = [client.create_flow_run_from_deployment(deployment_id) for _ in range(2)]
        assert client.set_flow_run_state(runs[0].id, Pending()).state.type.value == "PENDING"
        assert client.set_flow_run_state(runs[1].id, Pending()).state.type.value == second


def test_prefect_yaml_deployment_skips_overlapping_runs_as_recsys_schedule_does():
    from pathlib import Path

    import yaml

    from flows.deployments import pipeline_deployment

    root = Path(__file__).resolve().parents[2]
    (nightly,) = yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
    default = pipeline_deployment()
    strategy = default.concurrency_options.collision_strategy.value
    assert nightly["concurrency_limit"] == {"limit": default.concurrency_limit, "collision_strategy": strategy}


def test_recsys_schedule_on_prefects_temporary_server_gets_runs_scheduled(prefect_harness, monkeypatch):
    """Without PREFECT_API_URL, `recsys schedule` serves on Prefect's temporary server, which starts
    no scheduler service: an `--interval 30` deployment served for minutes without a single run.
    serve_pipeline now has the server schedule the runs, and hands its URL to the runs' processes
    (each started a temporary server of its own, which cancelled the run: "concurrency slot lost").
    The harness's server is such a temporary server; the runner's serve (flows.runner) is replaced
    by what it does first (create the deployment) and a wait for the runs the deployment's schedule
    makes."""
    import os
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.deployments

    api = PREFECT_API_URL.value()
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    class HarnessServer:  # Prefect's SubprocessASGIServer(): the harness's, already running
        api_url = api

        def start(self) -> None:
            pass

        def stop(self) -> None:  # the schedule stops its server at its end: this one is the session's
            pass

    monkeypatch.setattr("prefect.server.api.server.SubprocessASGIServer", HarnessServer)
    seen: dict[str, object] = {}

    def serve(deployment, scratch, say, temporary_server=False) -> None:
        seen["temporary_server"] = temporary_server
        seen["child_api"] = os.environ.get("PREFECT_API_URL")
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            deployment_id = deployment.apply()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
                seen["runs"] = [r for r in runs if r.state.type.value == "SCHEDULED"]
                if seen["runs"]:
                    return
                time.sleep(0.5)

    monkeypatch.setattr("flows.runner.serve_deployment", serve)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        flows.deployments.serve_pipeline(name=f"temporary-{uuid.uuid4().hex[:6]}", interval=3600)
    assert seen["child_api"] == api and seen["temporary_server"] is True
    assert seen["runs"], "no scheduled run of the served deployment"
    assert "PREFECT_API_URL" not in os.environ
