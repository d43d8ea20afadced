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
