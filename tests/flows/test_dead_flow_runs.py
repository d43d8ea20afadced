"""Flow runs a killed `recsys run` left RUNNING are set Crashed at the next start (issue 20, item 3).

The flow runs are made the way `recsys run` makes them - tagged by `flow_run_tags()` - once for a
process that has exited (a real pid, reaped) and once for this live process."""

from __future__ import annotations

import subprocess
import sys

from prefect import flow, get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Running

from flows.pipeline import close_dead_flow_runs, flow_run_tags
from recsys.tracking.liveness import TAG_PID, TAG_PID_STARTED


@flow(name="chaos-probe")
def _probe() -> None:  # only its name is used: runs are created through the API
    return None


def test_running_flow_runs_of_dead_processes_are_crashed(prefect_harness):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = dead.stdout.strip()
    ours = flow_run_tags()
    theirs = [
        f"{TAG_PID}:{dead_pid}"
        if t.startswith(f"{TAG_PID}:")
        else f"{TAG_PID_STARTED}:1.00"
        if t.startswith(f"{TAG_PID_STARTED}:")
        else t
        for t in ours
    ]
    with get_client(sync_client=True) as client:
        orphan = client.create_flow_run(_probe, tags=theirs, state=Running())
        alive = client.create_flow_run(_probe, tags=ours, state=Running())
    closed = close_dead_flow_runs()
    assert str(orphan.id) in closed and str(alive.id) not in closed
    with get_client(sync_client=True) as client:
        crashed = client.read_flow_run(orphan.id).state
        assert crashed.type == StateType.CRASHED and "ended without finishing" in crashed.message
        assert client.read_flow_run(alive.id).state.type == StateType.RUNNING
