"""The MLflow tracking server is killed (-9) while `recsys run` works: measured end to end.

A real `mlflow server` (its own SQLite store, a copy of the session's migrated one, and its artifact
proxy, as `make stack` runs it), a real `recsys run` process on Prefect (the session's harness server)
pointed at it with MLFLOW_TRACKING_URI as the README says, and a real SIGKILL of the server's process
group. The run freezes itself at a named point (RECSYS_STOP_AT) so the kill lands where it must, and
goes on at once. What a user must get: the run ends (exit 2) a few seconds after the kill, not after
MLflow's minutes of retries, with one `error:` line naming the server and `--resume-tracking`, no
traceback, everything trained kept whole on disk and nothing half-written; once the server is back,
the next `recsys run` closes the dead run's MLflow runs and never takes it for a finished run, and a
resume logs it so that `recsys promote` finds its models.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from stopped import stopped_at_its_point
from typer.testing import CliRunner

from recsys.cli import app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "killpg"), reason="kills the server's process group (POSIX)"),
]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 in a process group of its own; `kill()` is kill -9 of the
    group (the CLI and its uvicorn worker), `start()` brings it back on the same port and store."""

    def __init__(self, folder: Path, migrated_store: str) -> None:
        folder.mkdir(parents=True)
        self.folder, self.db = folder, folder / "server.db"
        with sqlite3.connect(migrated_store.split("sqlite:///", 1)[1]) as src, sqlite3.connect(self.db) as dst:
            src.backup(dst)  # a migrated store: no migration at each start
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.folder / "server.log", "a") as log:
            self.process = subprocess.Popen(
                [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.db}", "--artifacts-destination",
                 str(self.folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                assert self.process.poll() is None, (self.folder / "server.log").read_text()[-3000:]
                time.sleep(0.2)
        raise AssertionError(f"mlflow server did not answer: {(self.folder / 'server.log').read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class KilledRun:
    """`recsys run` (Prefect, the session's harness) in `work`, outside the repository: the shipped
    default.toml with tiny data and two models, its outputs (data/, mlflow/unlogged/) in `work`.
    `start(point)` starts it frozen at `point`, `finish` waits for its end (see `killed_runs`)."""

    def __init__(self, folder: Path, server: MlflowServer) -> None:
        from prefect.settings import PREFECT_API_URL

        self.server, self.work, self.scratch = server, folder / "work", folder / "tmp"
        self.work.mkdir(parents=True)
        self.scratch.mkdir()
        experiment = f"killed-{uuid.uuid4().hex[:8]}"
        self.experiment = experiment
        self.sets = [
            "data.synthetic.n_users=120", "data.synthetic.n_items=60", "data.min_user_interactions=2",
            "folding.enabled=false", "evaluation.bootstrap_samples=20", "evaluation.ks=[10, 20]",
            f'tracking.experiment="{experiment}"', f'tracking.model_name_prefix="{experiment}"',
            f'promotion.registered_model="{experiment}-best"',
            'models=[{name="pop", kind="popularity"}, {name="tt", kind="two_tower", dim=8, epochs=4, '
            'batch_size=256, num_negatives=8, quiet=true}]',
        ]  # fmt: skip
        self.args = [a for s in self.sets for a in ("--set", s)]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_", "RECSYS_"))}
        self.env.update(PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_HOME=str(folder / "prefect"),
                        MLFLOW_TRACKING_URI=server.uri, TMPDIR=str(self.scratch))  # fmt: skip
        self.client = MlflowClient(server.uri)
        self.point, self.code, self.output, self.seconds = "", -1, "", 0.0  # set by `start` and `finish`

    def start(self, point: str) -> subprocess.Popen:
        """The run, started; it freezes itself at `point` (RECSYS_STOP_AT)."""
        self.point = point
        with open(self.work / "run.log", "w") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "recsys.cli", "run", "--json", str(self.work / "summary.json"), *self.args],
                cwd=self.work, stdout=out, stderr=subprocess.STDOUT, env={**self.env, "RECSYS_STOP_AT": point},
            )  # fmt: skip

    def finish(self, run: subprocess.Popen, killed: float) -> None:
        """Wait for the run's exit: `code`, `output`, `seconds` from the kill (at `killed`) to it."""
        self.code = run.wait(timeout=180)  # a hang guard: MLflow's own retries took minutes per request
        self.seconds = time.monotonic() - killed
        self.output = (self.work / "run.log").read_text()
        print(f"{self.point}: kill -9 of the server -> exit {self.code} in {self.seconds:.1f} s")

    def summary(self) -> dict:
        return json.loads((self.work / "summary.json").read_text())

    def runs(self) -> list:
        experiment = self.client.get_experiment_by_name(self.experiment)
        return self.client.search_runs([experiment.experiment_id])

    def invoke(self, monkeypatch: pytest.MonkeyPatch, *args: str, own_sets: bool = True):
        """A command in this process, as the user would type it next (same folder, same store),
        with the run's own --set unless `own_sets` is False (a command as printed)."""
        monkeypatch.chdir(self.work)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", self.server.uri)
        for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
            monkeypatch.delenv(name, raising=False)  # set by the command: restored after the test
        return CliRunner().invoke(app, [*args, *(self.args if own_sets else [])])


def _assert_one_error_line(run: KilledRun, code: int, output: str) -> str:
    """The run's one error line: the server, what happened to it in a few words (MLflow's urllib3
    chain, cut mid-word, was the reason before), and the resume command with the run's store
    options; no traceback."""
    assert code == 2, output[-4000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-4000:]
    line = errors[0]
    assert line.startswith(f"error: the MLflow tracking server {run.server.uri} stopped answering during the run "
                           "(connection refused"), line  # fmt: skip
    assert "HTTPConnectionPool" not in line
    assert f"`recsys run --set 'tracking.experiment=\"{run.experiment}\"' " in line, line
    assert " --resume-tracking mlflow/unlogged/" in line, line
    assert "Traceback" not in output, output[-4000:]
    return line


def _printed_command(line: str) -> list[str]:
    """The arguments of the `recsys ...` command a line ends with, as a shell would split them."""
    import shlex

    return shlex.split(line.rsplit("`recsys ", 1)[1].split("`", 1)[0])


def _assert_nothing_half_written(run: KilledRun) -> None:
    """The processed data is the finished dataset alone (no staging or moved-aside copy), no scratch
    directory of the run is left, and every model the bundle holds is whole: its record, its saved
    model and the pyfunc that serves it."""
    summary = run.summary()
    processed = run.work / summary["dataset"]["processed_dir"]
    assert (processed / "manifest.json").is_file()
    assert {p.name for p in processed.parent.iterdir()} == {processed.name, f".{processed.name}.lock"}
    assert not list(run.scratch.glob("recsys-*")), list(run.scratch.iterdir())
    for model in summary["models"]:
        if model.get("unlogged"):
            kept = run.work / model["unlogged"] / model["name"]
            record = json.loads((kept / "run.json").read_text())
            assert record["status"] == "FINISHED" and record["metrics"], record
            assert (kept / "files" / "model" / "MLmodel").is_file()
            saved = kept / "files" / "model" / "artifacts" / "serving" / "model"
            assert (saved / "config.json").is_file() and any(saved.glob("*.safetensors"))


KILL_POINTS = {"training": "train.epoch:2", "promotion": "promote.decided"}
"""Where each run is frozen when the server is killed: the two-tower has logged its second epoch;
every model was logged and the promotion decided (it moves the alias next)."""


@pytest.fixture(scope="module")
def killed_runs(prefect_harness, shared_mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory):
    """{"training": KilledRun, "promotion": KilledRun}: both runs of the one server, each frozen at
    its `KILL_POINTS` point, the server killed (-9) once both are, both let go on and ended, then the
    server started again (on the same port and store) for the tests to check the aftermath. One kill
    and one restart for both (a server start is ~15 s on a loaded 2-core machine), the two runs'
    start-up side by side."""
    root = tmp_path_factory.mktemp("killed")
    server = MlflowServer(root / "server", shared_mlflow_uri)
    try:
        runs = {case: KilledRun(root / case, server) for case in KILL_POINTS}
        processes = {case: run.start(KILL_POINTS[case]) for case, run in runs.items()}
        try:
            with stopped_at_its_point(processes["training"]), stopped_at_its_point(processes["promotion"]):
                server.kill()
                killed = time.monotonic()
            for case, run in runs.items():
                run.finish(processes[case], killed)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        server.start()  # back; the dead runs' MLflow runs are still open on it
        yield runs
    finally:
        server.kill()


def test_a_server_killed_while_a_model_trains_ends_the_run_and_the_next_run_trains(
    killed_runs, tmp_path, monkeypatch
):
    run = killed_runs["training"]  # killed once the two-tower had logged its second epoch
    _assert_one_error_line(run, run.code, run.output)
    summary = run.summary()
    assert [m["status"] for m in summary["models"]] == ["ok", "ok"]  # the tracking was lost, not the models
    assert any(m["name"] == "tt" and m["unlogged"] for m in summary["models"])
    _assert_nothing_half_written(run)

    dead_parent = summary["mlflow_parent_run_id"]
    assert run.client.get_run(dead_parent).info.status == "RUNNING"
    # `recsys promote` said "still running: it promotes its own models when it ends" (it never would)
    refused = run.invoke(monkeypatch, "promote")
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.output.split())
    assert f"newest pipeline run {dead_parent}" in said and "did not go whole" in said and "still running" not in said
    # and closes the dead run's runs KILLED, saying so, instead of leaving them RUNNING until the next run
    assert "left RUNNING by a process that died as KILLED" in said and dead_parent in said
    assert run.client.get_run(dead_parent).info.status == "KILLED"
    # As a scheduled run would: it must not take the dead run for the finished run of the same inputs.
    again = run.invoke(monkeypatch, "run", "--no-prefect", "--if-changed", "--json", str(tmp_path / "again.json"))
    assert again.exit_code == 0, again.output
    assert "skipped: unchanged" not in again.output
    second = json.loads((tmp_path / "again.json").read_text())
    assert [m["status"] for m in second["models"]] == ["ok", "ok"] and second["promotion"]["promoted"]
    runs = run.runs()
    assert "RUNNING" not in {r.info.status for r in runs}
    assert run.client.get_run(dead_parent).info.status == "KILLED"
    champion = run.client.get_model_version_by_alias(f"{run.experiment}-best", "champion")
    assert run.client.get_run(champion.run_id).data.tags["mlflow.parentRunId"] == second["mlflow_parent_run_id"]


def test_a_server_killed_at_promotion_then_resumed_keeps_the_models_with_their_run(killed_runs, monkeypatch):
    """Killed after every model was logged, while the promotion moved the alias: the bundle holds
    the parent run only. The resume's parent run got none of the models (under Prefect, the model
    tasks' own trackers had logged them under the dead parent): `recsys promote` said "pipeline run
    ... has no finished model runs", and `recsys run --if-changed` skipped as unchanged since that
    empty run, so a schedule never trained again until the data changed."""
    run = killed_runs["promotion"]
    line = _assert_one_error_line(run, run.code, run.output)
    assert "the 2 trained model(s) were logged before; the run's own record is kept in" in line  # not "0 ... kept"
    summary = run.summary()
    assert [(m["status"], m.get("unlogged")) for m in summary["models"]] == [("ok", None), ("ok", None)]
    _assert_nothing_half_written(run)

    resumed = run.invoke(monkeypatch, *_printed_command(line), own_sets=False)  # as the error line says
    assert resumed.exit_code == 0, resumed.output
    runs = run.runs()
    assert "RUNNING" not in {r.info.status for r in runs}
    (parent,) = [r for r in runs if r.data.tags.get("recsys.resumed_from") == summary["mlflow_parent_run_id"]]
    children = {r.data.tags.get("recsys.model_name"): r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}  # fmt: skip
    assert sorted(children) == ["pop", "tt"] and {r.info.status for r in children.values()} == {"FINISHED"}

    promoted = run.invoke(monkeypatch, "promote")
    assert promoted.exit_code == 0, promoted.output
    champion = run.client.get_model_version_by_alias(f"{run.experiment}-best", "champion")
    assert champion.run_id in {r.info.run_id for r in children.values()}
    skipped = run.invoke(monkeypatch, "run", "--no-prefect", "--if-changed")  # the resumed run is whole
    assert skipped.exit_code == 0 and f"unchanged since run {parent.info.run_id}" in " ".join(skipped.output.split())
