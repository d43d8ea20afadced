"""Runs left RUNNING by a machine that died: closed once their heartbeat is older than
`tracking.stale_run_minutes`, never while it is fresh (recsys.tracking.liveness).

The start's sweep closed only runs of this host whose process it could look up; a run opened on
another machine that then died stayed RUNNING for ever."""

from __future__ import annotations

import time
import uuid

from mlflow import MlflowClient

from recsys.config import RunConfig, TrackingConfig
from recsys.tracking.liveness import (
    HEARTBEATS,
    TAG_HEARTBEAT,
    TAG_HOST,
    TAG_KILLED_NOTE,
    TAG_PID,
    TAG_REOPENED,
    Heartbeats,
    mark_dead_runs,
    process_tags,
)


def _elsewhere(beat_age_s: float | None) -> dict[str, str]:
    """The tags of a run opened by a process on another machine, last heard of `beat_age_s` ago."""
    tags = {TAG_HOST: "another-machine", TAG_PID: "4242", "recsys.pid_started": "1.00"}
    if beat_age_s is not None:
        tags[TAG_HEARTBEAT] = str(int(time.time() - beat_age_s))
    return tags


def _wait_for(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)


def test_a_run_from_a_machine_that_went_silent_is_closed_and_a_live_one_is_not(tracking_uri):
    from recsys.tracking.runs import Tracker

    client = MlflowClient(tracking_uri)
    experiment = f"stale-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(experiment)
    silent = client.create_run(experiment_id, tags=_elsewhere(3 * 3600)).info.run_id
    beating = client.create_run(experiment_id, tags=_elsewhere(90)).info.run_id
    unjudged = client.create_run(experiment_id, tags=_elsewhere(None)).info.run_id  # a recsys before heartbeats
    foreign = client.create_run(experiment_id, tags={"note": "not opened by recsys"}).info.run_id
    here = client.create_run(
        experiment_id, tags={**process_tags(), TAG_HEARTBEAT: str(int(time.time() - 3 * 3600))}
    ).info.run_id  # this live process: judged by its pid, never by its heartbeat

    cfg = RunConfig(tracking=TrackingConfig(tracking_uri=tracking_uri, experiment=experiment))
    tracker = Tracker(cfg.tracking, cfg)
    assert tracker.closed_dead_runs == [silent]
    closed = client.get_run(silent)
    assert closed.info.status == "KILLED"
    assert closed.data.tags[TAG_KILLED_NOTE].startswith("no heartbeat from process 4242 on another-machine for 180 min")
    for run_id in (beating, unjudged, foreign, here):
        assert client.get_run(run_id).info.status == "RUNNING"

    parent = tracker.start_parent("beats")  # the runs a Tracker opens carry a heartbeat and keep it
    assert TAG_HEARTBEAT in client.get_run(parent).data.tags and parent in HEARTBEATS.open_runs()
    tracker.end(parent)
    assert parent not in HEARTBEATS.open_runs()
    for run_id in (beating, unjudged, foreign, here):
        client.set_terminated(run_id)


def test_the_heartbeat_reopens_a_live_run_a_sweep_closed_but_never_one_its_process_ended(tracking_uri):
    """A process that could not reach the store for longer than the limit (or was suspended) is
    swept while it lives: its next beat makes the run RUNNING again, without the sweep's note."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(f"reopen-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment_id, tags=_elsewhere(3 * 3600)).info.run_id
    assert mark_dead_runs(client, [experiment_id], stale_after_s=30 * 60) == [run_id]

    beats = Heartbeats(every_s=0.05)
    beats.add(client, run_id)

    def reopened_in_full() -> bool:
        run = client.get_run(run_id)
        return run.info.status == "RUNNING" and TAG_REOPENED in run.data.tags and TAG_KILLED_NOTE not in run.data.tags

    _wait_for(reopened_in_full)  # status first, then the sweep's note comes off
    reopened = client.get_run(run_id).data.tags
    assert "mlflow.note.content" not in reopened
    assert reopened[TAG_REOPENED].startswith("reopened by its process")
    assert time.time() - float(reopened[TAG_HEARTBEAT]) < 600

    beats.remove(run_id)  # what Tracker.end does before it sends the status
    client.set_terminated(run_id, "FINISHED")
    stamped = client.get_run(run_id).data.tags[TAG_HEARTBEAT]
    time.sleep(0.3)  # several beats' time: none touches an ended run
    ended = client.get_run(run_id)
    assert ended.info.status == "FINISHED" and ended.data.tags[TAG_HEARTBEAT] == stamped
