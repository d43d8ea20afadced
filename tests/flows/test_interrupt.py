"""Interrupted runs under Prefect (the default path of `recsys run`), as real processes.

* Ctrl-C: the models training in worker threads stop too. Python raises KeyboardInterrupt in the
  main thread only, and the flow's exit waited for its worker threads, so a two-tower trained to its
  last epoch after Ctrl-C and was logged FINISHED.
* SIGTERM (a scheduler's stop, `timeout`): Prefect's handler ended the flow only after the
  two-tower's last epoch, then re-sent SIGTERM to the default handler, which killed the process
  before it stopped its temporary Prefect server (left running). Now the same clean stop as Ctrl-C.
* kill -9: the temporary Prefect server the killed run started kept serving, reparented to init;
  the next run stops it and says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

EPOCHS = 400  # ~30 s of training on 2 cores: every run here is stopped long before

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc (Linux)"),
]


class Run:
    """`recsys run` in its own process (its own temporary Prefect server and Prefect home), with the
    two-tower `tt` of EPOCHS epochs logging to the session's MLflow store under `experiment`."""

    def __init__(
        self, tmp_path: Path, uri: str, experiment: str, api_url: str | None = None, database: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        if database is not None:  # a Prefect home whose server database is migrated already
            (tmp_path / "prefect").mkdir()
            shutil.copyfile(database, tmp_path / "prefect" / "prefect.db")
        sets = [
            "data.synthetic.n_users=120", "data.synthetic.n_items=60", "data.min_user_interactions=2",
            "folding.enabled=false", "evaluation.bootstrap_samples=20", f'data.processed_dir="{tmp_path / "p"}"',
            f'data.raw_dir="{tmp_path / "raw"}"', f'tracking.tracking_uri="{uri}"', f'tracking.experiment="{experiment}"',
            'tracking.model_name_prefix="interrupted"', f'promotion.registered_model="interrupted-{experiment}"',
            f'models=[{{name="tt", kind="two_tower", dim=8, epochs={EPOCHS}, batch_size=256, num_negatives=8, '
            'quiet=true}]', *extra,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
        env["PREFECT_HOME"] = str(tmp_path / "prefect")  # its own server database
        if api_url:  # the session's Prefect server instead of a temporary one (no server start)
            env["PREFECT_API_URL"] = api_url
        self.client, self.experiment = MlflowClient(uri), experiment
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recsys.cli", "run", *[a for s in sets for a in ("--set", s)]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        self.lines.extend(raw.decode(errors="replace") for raw in self.process.stdout)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def tt_run(self):
        found = self.client.get_experiment_by_name(self.experiment)
        runs = self.client.search_runs([found.experiment_id], "tags.`recsys.model_name` = 'tt'") if found else []
        return runs[0] if runs else None

    def epochs(self) -> int:
        tt = self.tt_run()
        return len(self.client.get_metric_history(tt.info.run_id, "loss")) if tt else 0

    def signal_once_training(self, signum: int) -> int:
        """Send `signum` once the two-tower has logged an epoch; the exit code. `descendants`: the
        run's processes at that moment (its servers, Dask's workers)."""
        import psutil

        deadline = time.monotonic() + 300
        while self.process.poll() is None and time.monotonic() < deadline and not self.epochs():
            time.sleep(0.2)
        self.descendants = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signum)
        try:
            code = self.process.wait(120)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self.reader.join(10)
        return code

    def server_port(self) -> str:
        return re.findall(r"temporary server on http://127\.0\.0\.1:(\d+)", self.output)[0]


def _server_pid(port: str) -> int | None:
    """The pid of a live uvicorn serving Prefect's app on `port` (init here need not reap zombies)."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in command and port.encode() in command and state != "Z":
            return int(entry.name)
    return None


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _assert_stopped_cleanly(run: Run, code: int, expected: int, line: str) -> None:
    assert code == expected, run.output
    assert line in run.output
    tt = run.tt_run()
    assert tt.info.status == "KILLED", run.output  # it trained to the end (FINISHED) before
    assert run.epochs() < EPOCHS
    found = run.client.get_experiment_by_name(run.experiment)
    (parent,) = [r for r in run.client.search_runs([found.experiment_id]) if "recsys.model_name" not in r.data.tags]
    assert parent.info.status == "KILLED"


def test_after_kill_9_the_next_run_stops_the_left_server_and_sigterm_stops_cleanly(
    shared_mlflow_uri, migrated_prefect_database, tmp_path
):
    killed = Run(tmp_path / "a", shared_mlflow_uri, f"killed-{uuid.uuid4().hex[:8]}", database=migrated_prefect_database)
    deadline = time.monotonic() + 300  # killed once its temporary server is up: all it takes to leave one
    while killed.process.poll() is None and time.monotonic() < deadline and not (
        "temporary server on" in killed.output and _server_pid(killed.server_port())
    ):
        time.sleep(0.1)
    killed.process.kill()
    killed.process.wait()  # no reader.join: the orphaned server holds the pipe open, so no EOF comes
    orphan = _server_pid(killed.server_port())
    assert orphan is not None, killed.output
    try:
        deadline = time.monotonic() + 10
        while _parent(orphan) != 1:
            assert time.monotonic() < deadline, "the killed run's server was never reparented"
            time.sleep(0.1)
        after = Run(tmp_path / "b", shared_mlflow_uri, f"sigterm-{uuid.uuid4().hex[:8]}", database=migrated_prefect_database)
        code = after.signal_once_training(signal.SIGTERM)
        stopped = re.search(r"stopped \d+ temporary Prefect server\(s\) left by killed runs \(pids ([\d, ]+)\)", after.output)
        assert stopped and str(orphan) in stopped.group(1).split(", "), after.output
        deadline = time.monotonic() + 15
        while _server_pid(killed.server_port()) == orphan and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _server_pid(killed.server_port()) != orphan
        left = _server_pid(after.server_port())
        if left is not None:
            os.kill(left, signal.SIGKILL)  # the test's own leftover, by its pid
        assert left is None, f"the SIGTERMed run left its Prefect server (pid {left}) running"
        _assert_stopped_cleanly(after, code, 143, "terminated (SIGTERM)")
    finally:
        if _server_pid(killed.server_port()) == orphan:  # the test's own leftover, by its pid
            os.kill(orphan, signal.SIGKILL)


def test_ctrl_c_stops_the_models_training_in_worker_threads(prefect_harness, shared_mlflow_uri, tmp_path):
    from prefect.settings import PREFECT_API_URL

    run = Run(tmp_path, shared_mlflow_uri, f"ctrl-c-{uuid.uuid4().hex[:8]}", api_url=PREFECT_API_URL.value())
    _assert_stopped_cleanly(run, run.signal_once_training(signal.SIGINT), 130, "interrupted")


def test_ctrl_c_stops_the_models_training_in_dask_workers_and_leaves_no_process(
    shared_mlflow_uri, migrated_prefect_database, tmp_path
):
    """orchestration.task_runner = "dask": the models train in a LocalCluster's worker processes,
    which Ctrl-C sent to the command (`kill -INT`, a supervisor) never reached: the cluster's close
    killed the worker mid-epoch, its MLflow run stayed RUNNING, and the temporary Prefect server
    the worker had started for itself (no PREFECT_API_URL) was left serving, orphaned. Now the
    workers use the run's own server, the interrupt is made in them, and the model stops at its
    next step and closes its run KILLED; every process of the run is gone with it. Real processes:
    `recsys run` with its temporary server and a one-worker LocalCluster (~1 min on 2 cores)."""
    pytest.importorskip("prefect_dask")
    import psutil

    dask = ('orchestration.task_runner="dask"', "orchestration.max_workers=1")
    run = Run(tmp_path, shared_mlflow_uri, f"dask-ctrl-c-{uuid.uuid4().hex[:8]}", database=migrated_prefect_database,
              extra=dask)  # fmt: skip
    code = run.signal_once_training(signal.SIGINT)
    try:
        _assert_stopped_cleanly(run, code, 130, "interrupted")
        assert run.output.count("Starting temporary server") == 1, run.output  # the workers started none
        assert "Restarting worker" not in run.output, run.output  # the stop ended no worker process
        deadline = time.monotonic() + 15
        while (left := [p for p in run.descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert not left, [" ".join(p.cmdline())[:120] for p in left]
    finally:
        for process in run.descendants:  # the test's own leftovers, by pid
            with contextlib.suppress(psutil.Error):
                process.kill()
