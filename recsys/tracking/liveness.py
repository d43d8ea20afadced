"""Runs whose process died: found by the host + pid they were tagged with, or by a heartbeat that
stopped, and closed KILLED.

Why: a run is closed by the process that opened it. A kill -9 (OOM killer, an operator, a node
lost) skips every `finally`, so the MLflow run stays RUNNING for ever and the UI shows a training
that is not happening. Every run the `Tracker` opens carries `recsys.host`, `recsys.pid` and
`recsys.pid_started` (the process's start time, so a pid the OS reused is not taken for the dead
process); a new `Tracker` closes the runs of its experiment that are RUNNING, were opened on this
host, and whose process is gone, with status KILLED and a note.

Whether a process on another machine (or in another container: another pid namespace) lives
cannot be looked up from here, so those runs carry a heartbeat: while a run is open its process
stamps `recsys.heartbeat` (Unix seconds) every HEARTBEAT_EVERY_S. A new `Tracker` closes a RUNNING
run opened elsewhere once its heartbeat is older than `tracking.stale_run_minutes` (default 30,
i.e. 30 missed beats; 0 turns this off), so the run of a machine that died is closed within that.
A live run is never closed by a heartbeat that is merely late (a busy store, a clock a few minutes
off); one whose process cannot reach the store, or was suspended, for longer than that may be, and
then its next heartbeat reopens it (RUNNING again, the note removed), so it still ends as its
process ends it. Runs opened elsewhere without a heartbeat (by a recsys before it) are left alone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

TAG_HOST = "recsys.host"
TAG_PID = "recsys.pid"
TAG_PID_STARTED = "recsys.pid_started"
TAG_PID_NAMESPACE = "recsys.pid_namespace"  # containers sharing a host name have their own pids
TAG_KILLED_NOTE = "recsys.killed"
TAG_HEARTBEAT = "recsys.heartbeat"  # Unix seconds of the open run's last sign of life
TAG_REOPENED = "recsys.reopened"
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
HEARTBEAT_EVERY_S = 60.0


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


def opened_tags() -> dict[str, str]:
    """The tags a run gets when it is opened: `process_tags` and its first heartbeat."""
    return {**process_tags(), TAG_HEARTBEAT: str(int(time.time()))}


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


def _judged_here(tags: Mapping[str, str]) -> bool:
    """Whether the run's process can be looked up from here (this host, this pid namespace)."""
    mine = process_tags()
    return tags.get(TAG_HOST) == mine[TAG_HOST] and (
        tags.get(TAG_PID_NAMESPACE, mine[TAG_PID_NAMESPACE]) == mine[TAG_PID_NAMESPACE]
    )


def silent_for(tags: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds since the run's last heartbeat; None when it has none (or an unreadable one)."""
    try:
        beat = float(tags[TAG_HEARTBEAT])
    except (KeyError, ValueError):
        return None
    return (time.time() if now is None else now) - beat


def _why_dead(tags: Mapping[str, str], stale_after_s: float) -> str | None:
    """Why a RUNNING run is taken for dead ("process N on H ended ..."), or None when it is not."""
    if _judged_here(tags):
        pid = dead_pid(tags)
        return None if pid is None else f"process {pid} on {tags[TAG_HOST]} ended without closing this run (killed or crashed)"
    silent = silent_for(tags)
    if stale_after_s <= 0 or silent is None or silent <= stale_after_s:
        return None
    return (
        f"no heartbeat from process {tags.get(TAG_PID, '?')} on {tags.get(TAG_HOST, '?')} for {silent / 60:.0f} min "
        f"(tracking.stale_run_minutes = {stale_after_s / 60:g}): its machine or process is taken for gone"
    )


def taken_for_dead(tags: Mapping[str, str], stale_after_s: float = 0.0) -> bool:
    """Whether a RUNNING run with `tags` would be closed KILLED by `mark_dead_runs` now (its process
    is gone, or run elsewhere its heartbeat stopped); runs not opened by recsys are never."""
    return TAG_HOST in tags and _why_dead(tags, stale_after_s) is not None


def mark_dead_runs(client: MlflowClient, experiment_ids: list[str], stale_after_s: float = 0.0) -> list[str]:
    """Close KILLED, with a note, every RUNNING run of `experiment_ids` opened on this host by a
    process that is gone, and (`stale_after_s` > 0) every one opened elsewhere whose heartbeat is
    older than that. Returns their ids."""
    from mlflow.entities import RunTag

    from recsys.tracking.runs import with_retries

    host = socket.gethostname()
    runs = with_retries(
        lambda: client.search_runs(
            experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=1000
        )
    )
    closed = []
    for run in runs:
        tags = run.data.tags
        if TAG_HOST not in tags:  # not opened by recsys: not ours to judge
            continue
        why = _why_dead(tags, stale_after_s)
        if why is None:
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        note = f"{why}; marked KILLED at {when} by process {os.getpid()} on {host}"
        entries = [RunTag(TAG_KILLED_NOTE, note)]
        if not tags.get(NOTE_TAG):
            entries.append(RunTag(NOTE_TAG, note))
        with_retries(lambda run=run, entries=entries: client.log_batch(run.info.run_id, tags=entries))
        with_retries(lambda run=run: client.set_terminated(run.info.run_id, status="KILLED"))
        closed.append(run.info.run_id)
    return closed


class Heartbeats:
    """One daemon thread per process that stamps TAG_HEARTBEAT on every run it has open, every
    `every_s` seconds, so a start on another machine can tell a live run from a dead one
    (`mark_dead_runs`). A run that a sweep closed while its process lived is reopened here.
    A beat that fails (a store down or busy) is skipped; the next one tries again."""

    def __init__(self, every_s: float = HEARTBEAT_EVERY_S) -> None:
        self.every_s = every_s
        self._runs: dict[str, MlflowClient] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, client: MlflowClient, run_id: str) -> None:
        with self._lock:
            self._runs[run_id] = client
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="recsys-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, run_id: str) -> None:
        """Stop beating for `run_id` (its process is closing it): from now on it is never reopened."""
        with self._lock:
            self._runs.pop(run_id, None)

    def open_runs(self) -> list[str]:
        with self._lock:
            return list(self._runs)

    def _loop(self) -> None:
        while True:
            time.sleep(self.every_s)
            with self._lock:
                runs = list(self._runs.items())
            for run_id, client in runs:
                try:
                    self.beat(client, run_id)
                except Exception as exc:  # the store is down or busy: the next beat tries again
                    log.debug("heartbeat of run %s failed: %s", run_id, exc)

    def beat(self, client: MlflowClient, run_id: str) -> None:
        """Stamp the run's heartbeat; reopen it if a sweep closed it meanwhile."""
        client.set_tag(run_id, TAG_HEARTBEAT, str(int(time.time())))
        run = client.get_run(run_id)
        note = run.data.tags.get(TAG_KILLED_NOTE)
        if run.info.status == "RUNNING" or not note:
            return
        with self._lock:  # `remove` (the run's own close) waits: an ended run is never reopened
            if run_id not in self._runs:
                return
            client.update_run(run_id, status="RUNNING")
            client.delete_tag(run_id, TAG_KILLED_NOTE)
            if run.data.tags.get(NOTE_TAG) == note:
                client.delete_tag(run_id, NOTE_TAG)
            client.set_tag(run_id, TAG_REOPENED, f"reopened by its process {os.getpid()}, which lives, after: {note}")


HEARTBEATS = Heartbeats()
"""This process's heartbeat thread (started by the first run a `Tracker` opens)."""
