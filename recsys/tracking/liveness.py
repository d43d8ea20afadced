"""Runs whose process died: found by the host + pid they were tagged with, closed KILLED.

Why: a run is closed by the process that opened it. A kill -9 (OOM killer, an operator, a node
lost) skips every `finally`, so the MLflow run stays RUNNING for ever and the UI shows a training
that is not happening. Every run the `Tracker` opens carries `recsys.host`, `recsys.pid` and
`recsys.pid_started` (the process's start time, so a pid the OS reused is not taken for the dead
process); a new `Tracker` closes the runs of its experiment that are RUNNING, were opened on this
host, and whose process is gone, with status KILLED and a note. Runs opened on other hosts are left
alone: whether their process lives cannot be told from here.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from mlflow import MlflowClient

TAG_HOST = "recsys.host"
TAG_PID = "recsys.pid"
TAG_PID_STARTED = "recsys.pid_started"
TAG_PID_NAMESPACE = "recsys.pid_namespace"  # containers sharing a host name have their own pids
TAG_KILLED_NOTE = "recsys.killed"
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI


def _started(pid: int) -> str:
    """The process's start time (seconds, 2 decimals) as psutil reports it; '' when unknown."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except (psutil.Error, OSError):
        return ""


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def process_tags() -> dict[str, str]:
    """The tags that let a later process tell whether this one still lives."""
    pid = os.getpid()
    return {
        TAG_HOST: socket.gethostname(),
        TAG_PID: str(pid),
        TAG_PID_STARTED: _started(pid),
        TAG_PID_NAMESPACE: _pid_namespace(),
    }


def is_alive(pid: int, started: str = "") -> bool:
    """Whether process `pid` runs and is the one that started at `started` (when given)."""
    if not psutil.pid_exists(pid):
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
    except (psutil.Error, OSError):
        return False
    return not started or _started(pid) == started


def dead_pid(tags: Mapping[str, str]) -> int | None:
    """The pid of the process that `tags` (written by `process_tags`) name when it is gone and ran
    here (this host, this pid namespace); None when it lives, or cannot be judged from here."""
    mine = process_tags()
    if tags.get(TAG_HOST) != mine[TAG_HOST]:
        return None
    if tags.get(TAG_PID_NAMESPACE, mine[TAG_PID_NAMESPACE]) != mine[TAG_PID_NAMESPACE]:
        return None  # another container with this host name: its pids are not ours to look up
    try:
        pid = int(tags.get(TAG_PID, ""))
    except ValueError:
        return None
    return None if is_alive(pid, tags.get(TAG_PID_STARTED, "")) else pid


def mark_dead_runs(client: MlflowClient, experiment_ids: list[str]) -> list[str]:
    """Close KILLED, with a note, every RUNNING run of `experiment_ids` opened on this host by a
    process that is gone. Returns their ids."""
    from mlflow.entities import RunTag

    from recsys.tracking.runs import with_retries

    host = socket.gethostname()
    runs = with_retries(
        lambda: client.search_runs(
            experiment_ids,
            filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{host}'",
            max_results=1000,
        )
    )
    closed = []
    for run in runs:
        tags = run.data.tags
        pid = dead_pid(tags)
        if pid is None:
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        note = (
            f"process {pid} on {host} ended without closing this run (killed or crashed); "
            f"marked KILLED at {when} by process {os.getpid()}"
        )
        entries = [RunTag(TAG_KILLED_NOTE, note)]
        if not tags.get(NOTE_TAG):
            entries.append(RunTag(NOTE_TAG, note))
        with_retries(lambda run=run, entries=entries: client.log_batch(run.info.run_id, tags=entries))
        with_retries(lambda run=run: client.set_terminated(run.info.run_id, status="KILLED"))
        closed.append(run.info.run_id)
    return closed
