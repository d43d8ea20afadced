"""The scenario behind tests/flows/test_scheduled_server.py, as a script: `recsys schedule` serves the
training deployment against a Prefect server on PostgreSQL (not the ephemeral test harness), logging
to the PostgreSQL-backed MLflow server, and two runs are scheduled on the server, day one then day
two. The test session starts it in the background as soon as both servers answer (tests/conftest.py):
two flow runs in fresh processes take ~50 s that would otherwise hold up the session.

    python tests/flows/scheduled_scenario.py PREFECT_API_URL MLFLOW_URL WORKDIR

Writes WORKDIR/result.json (what the test checks) and WORKDIR/schedule.log (the served process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

WAIT_S = 480  # two flow runs, each a fresh Python process, on a loaded 2-core machine
YEARLY = "0 3 1 1 *"  # the deployment's own schedule: real, but never due while the scenario runs
NAME = "team"
EXPERIMENT = "scheduled"
OVERRIDES = [
    "data.synthetic.n_users=150", "data.synthetic.n_items=80", "data.synthetic.n_clusters=4",
    "data.synthetic.interactions_per_user=15", "data.min_user_interactions=2", "data.min_item_interactions=1",
    "split.validation_fraction=0.1", "evaluation.ks=[10, 20]", "evaluation.bootstrap_samples=50",
    'promotion.metric="recall@20"',
    'models=[{name="pop", kind="popularity"}, {name="wals", kind="wals", factors=8, iterations=3}]',
]  # fmt: skip


def main(prefect_api: str, mlflow_url: str, workdir: Path) -> dict:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Scheduled

    workdir.mkdir(parents=True, exist_ok=True)
    overrides = [
        *OVERRIDES, f'data.processed_dir="{workdir / "processed"}"', f'data.raw_dir="{workdir / "raw"}"',
        f'tracking.tracking_uri="{mlflow_url}"', f'tracking.experiment="{EXPERIMENT}"',
        'tracking.model_name_prefix="scheduled"', 'promotion.registered_model="scheduled-best"',
    ]  # fmt: skip
    command = [str(Path(sys.executable).parent / "recsys"), "schedule", "--cron", YEARLY, "--name", NAME]
    for override in overrides:
        command += ["--set", override]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env.update(PREFECT_API_URL=prefect_api, PREFECT_RUNNER_POLL_FREQUENCY="1", OPENBLAS_NUM_THREADS="1")
    log = workdir / "schedule.log"
    with open(log, "w") as out:
        served = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = SyncPrefectClient(prefect_api)
    deadline = time.monotonic() + WAIT_S

    def check() -> None:
        if served.poll() is not None:
            raise RuntimeError(f"recsys schedule exited with {served.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not done after {WAIT_S} s")
        time.sleep(1)

    def runs_of(deployment_id) -> list:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )

    try:
        while True:
            try:
                deployment = client.read_deployment_by_name(f"training-pipeline/{NAME}")
                break
            except ObjectNotFound:
                check()
        ours: list = []
        for _ in range(2):  # day one, then day two: each scheduled on the server, due now
            when = Scheduled(scheduled_time=datetime.now(UTC))  # what `prefect deployment run` does
            ours.append(client.create_flow_run_from_deployment(deployment.id, state=when).id)
            while not all(r.state.is_final() for r in runs_of(deployment.id) if r.id in ours):
                check()
        runs = sorted((r for r in runs_of(deployment.id) if r.id in ours), key=lambda r: ours.index(r.id))
        upcoming = [r for r in runs_of(deployment.id) if r.auto_scheduled]  # the server's scheduler's
        return {
            "name": NAME, "experiment": EXPERIMENT,
            "schedules": [s.schedule.cron for s in deployment.schedules],
            "runs": [{"id": str(r.id), "state": r.state_type.value, "expected_start": r.expected_start_time.isoformat()}
                     for r in runs],
            "upcoming": [r.state_type.value for r in upcoming],
        }  # fmt: skip
    finally:
        os.killpg(served.pid, signal.SIGTERM)
        try:
            served.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(served.pid, signal.SIGKILL)
            served.wait()


if __name__ == "__main__":
    workdir = Path(sys.argv[3])
    try:
        result = main(sys.argv[1], sys.argv[2], workdir)
    except Exception as exc:  # the test reports it with the served process's log
        result = {"error": f"{type(exc).__name__}: {exc}"}
    (workdir / "result.json").write_text(json.dumps(result, indent=2))
