"""The team stack itself (recsys.stack, `recsys stack`): both servers keep their state in PostgreSQL,
MLflow's artifacts go through its proxy, and the CLI finds a running stack by its directory. The
session's stack (tests/conftest.py) is the one under test, so nothing here starts another."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from recsys.cli import app
from recsys.stack import (
    HOST,
    LOCK_FILE,
    Server,
    Stack,
    claim,
    free_port,
    mlflow_server_command,
    mlflow_server_env,
    reap_orphans,
)


def test_server_commands_listen_on_localhost_and_proxy_artifacts(tmp_path):
    command = mlflow_server_command(tmp_path / "a", 5000, None)
    assert command[command.index("--host") + 1] == HOST == "127.0.0.1"
    assert command[command.index("--artifacts-destination") + 1] == str(tmp_path / "a")
    assert "--no-serve-artifacts" not in command and "--default-artifact-root" not in command


def test_mlflow_artifacts_go_through_the_server_proxy(team_stack, tmp_path):
    client = MlflowClient(team_stack.mlflow_url, registry_uri=team_stack.mlflow_url)
    experiment = client.create_experiment(f"proxy-{tmp_path.name}")
    assert client.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:/")
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, f"hello from {tmp_path.name}", "notes/hello.txt")
    client.set_terminated(run.info.run_id)
    # the client only ever saw an mlflow-artifacts: URI; the file sits under the server's destination
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = [p for p in team_stack.artifacts.rglob("hello.txt") if run.info.run_id in str(p)]
    assert len(stored) == 1 and stored[0].read_text() == f"hello from {tmp_path.name}"
    back = client.download_artifacts(run.info.run_id, "notes/hello.txt", str(tmp_path))
    assert open(back).read() == f"hello from {tmp_path.name}"


def test_both_servers_keep_their_state_in_postgresql(team_stack, tmp_path):
    import psycopg  # the `postgres` extra; the stack is skipped (team_stack) without it

    name = f"pg-{tmp_path.name}"
    MlflowClient(team_stack.mlflow_url).create_experiment(name)
    with psycopg.connect(team_stack.postgres.url("mlflow")) as conn:
        assert conn.execute("SELECT count(*) FROM experiments WHERE name = %s", (name,)).fetchone()[0] == 1
    with psycopg.connect(team_stack.postgres.url("prefect")) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"flow", "flow_run", "deployment"} <= tables


def test_stack_cli_finds_the_running_stack_by_its_directory(team_stack):
    status = CliRunner().invoke(app, ["stack", "status", "--dir", str(team_stack.root)])
    assert status.exit_code == 0, status.output
    assert [line.split() for line in status.output.strip().splitlines()] == [
        ["postgres", "up"], ["mlflow", "up"], ["prefect", "up"],
    ]  # fmt: skip
    again = CliRunner().invoke(app, ["stack", "up", "--dir", str(team_stack.root)])
    assert again.exit_code == 0 and "running already" in again.output
    assert f"export MLFLOW_TRACKING_URI={team_stack.mlflow_url}" in again.output
    assert (team_stack.root / "env").read_text().splitlines() == [
        f"export MLFLOW_TRACKING_URI={team_stack.mlflow_url}",
        f"export PREFECT_API_URL={team_stack.prefect_api_url}",
    ]


def test_stack_status_without_a_stack_says_what_is_not_running_and_what_starts_it(tmp_path, monkeypatch):
    """`recsys stack status` with no stack exited 1, this CLI's code for a bug, saying only "no stack
    recorded". Now each part reads "not running", the line after names the `up` that starts them,
    and the exit code is 3 (LSB's "not running"), documented in --help with the others."""
    result = CliRunner().invoke(app, ["stack", "status", "--dir", str(tmp_path / "none")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 3, result.output
    assert [line.split() for line in lines[:3]] == [["postgres", "not", "running"], ["mlflow", "not", "running"],
                                                    ["prefect", "not", "running"]]  # fmt: skip
    assert f"start one with `recsys stack up --dir {tmp_path / 'none'}`" in " ".join(lines[3:]), result.output
    assert not (tmp_path / "none").exists()
    monkeypatch.chdir(tmp_path)  # .stack here, not a stack a person runs in the checkout
    default = CliRunner().invoke(app, ["stack", "status"], catch_exceptions=False)  # .stack: make stack starts it
    assert default.exit_code == 3 and "(or: make stack)" in default.output, default.output
    helped = " ".join(CliRunner().invoke(app, ["stack", "status", "--help"], env={"COLUMNS": "300"}).output.split())
    assert "0 every part is up; 1 a part is down or still starting; 3 no stack runs" in helped, helped


def test_stack_status_of_postgres_left_without_a_record_is_not_no_stack(tmp_path, monkeypatch):
    """An `up` killed before it recorded the stack leaves PostgreSQL running from its data directory:
    status says so (exit 1), not "no stack", whose `up` would fail on PostgreSQL's port."""
    from recsys.stack import Postgres

    monkeypatch.setattr(Postgres, "running", lambda self: True)
    result = CliRunner().invoke(app, ["stack", "status", "--dir", str(tmp_path)])
    said = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "postgres up (not recorded in stack.json) mlflow not running prefect not running" in said, said
    assert f"partly running: start the rest with `recsys stack up --dir {tmp_path}`" in said, said


def test_stack_down_without_a_stack_says_there_is_nothing_to_stop(tmp_path):
    """`recsys stack down --dir` of a typo'd (or already stopped) directory said "stopped the stack in
    ... (data kept)": a person took the typo for the stack they meant, which ran on."""
    result = CliRunner().invoke(app, ["stack", "down", "--dir", str(tmp_path / "none")])
    assert result.exit_code == 0 and "no stack running in" in result.output and "stopped" not in result.output
    assert not (tmp_path / "none").exists()


def process_tree(pid: int) -> list[str]:
    """Command lines of `pid` and all its descendants."""
    root = psutil.Process(pid)
    commands = []
    for process in [root, *root.children(recursive=True)]:
        try:
            commands.append(" ".join(process.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return commands


def assert_serves_without_the_genai_job_runner(pid: int) -> None:
    """MLflow 3's job runner (huey consumers for GenAI jobs: ~8 processes, ~1 GB) is not among the
    MLflow server's processes."""
    commands = process_tree(pid)
    assert any("uvicorn" in command for command in commands), commands  # it serves
    assert not [c for c in commands if "huey" in c or "jobs._job_runner" in c], commands


# Two tests, not one taking both servers: the stack's tests run on one xdist worker and the SQLite
# store's (under `recsys ui`) on the other; one test needing both would start both on one of them.
def test_the_stack_mlflow_server_runs_without_the_genai_job_runner(team_stack):
    """Off in the stack's server; a user who wants it sets the variable."""
    assert_serves_without_the_genai_job_runner(team_stack.servers["mlflow"].pid)
    wanted = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}
    assert mlflow_server_env(wanted) == wanted  # the environment's own setting wins


def test_recsys_ui_runs_without_the_genai_job_runner(recsys_ui_process):
    """Off under `recsys ui` too."""
    assert_serves_without_the_genai_job_runner(recsys_ui_process.process.pid)


def test_the_database_password_is_on_no_command_line(team_stack):
    """`ps` shows every user each process's command line: the servers get the PostgreSQL URL, and
    its password, through their environment."""
    password = team_stack.postgres.password()
    for process in psutil.process_iter(["cmdline"]):
        assert password not in " ".join(process.info["cmdline"] or []), process.info["cmdline"][:3]


def test_a_stack_whose_owner_was_killed_is_stopped_and_removed(tmp_path):
    """A test session killed with -9 leaves its servers running; the next session stops the servers
    of every claimed stack whose owner is gone and deletes its directory, and leaves the rest."""
    from stack_claims import claimed_by_another_process

    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
    server = subprocess.Popen([*sleeper, "mlflow"], start_new_session=True)  # "mlflow": its marker
    orphan, in_use, unclaimed = (tmp_path / f"stack-{n}" for n in ("orphan", "in-use", "unclaimed"))
    for root in (orphan, in_use, unclaimed):
        root.mkdir()
    stack = Stack(orphan)
    stack.servers["mlflow"] = Server("mlflow", server.pid, "http://127.0.0.1:1", "http://127.0.0.1:1/health",
                                     str(orphan / "mlflow.log"), "mlflow")  # fmt: skip
    stack.write_state()
    owner = claimed_by_another_process(orphan)
    claim(in_use)  # this process: alive
    owner.kill()
    owner.wait()
    try:
        assert reap_orphans(tmp_path, "stack-") == [orphan]
        assert server.poll() is not None  # stopped
        assert not orphan.exists() and in_use.is_dir() and unclaimed.is_dir()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_database_tracking_uri_is_opened_before_training_and_named_without_its_password(team_stack):
    """tracking.tracking_uri = postgresql://... of a database that is down reached the user as
    'unexpected OperationalError ... this is a bug' (exit 1) after MLflow's ~100 s of retries;
    postgresql+psycopg:// was refused as an unsupported scheme. The running one opens."""
    from urllib.parse import urlparse

    from recsys.errors import TrackingError
    from recsys.tracking.store import check_tracking

    url = team_stack.postgres.url("mlflow")
    check_tracking(url)
    check_tracking(url.replace("postgresql://", "postgresql+psycopg://", 1))
    parsed = urlparse(url)
    down = parsed._replace(netloc=parsed.netloc.replace(f":{parsed.port}", ":1")).geturl()
    with pytest.raises(TrackingError, match="cannot open") as caught:
        check_tracking(down)
    assert parsed.password not in str(caught.value) and ":***@" in str(caught.value)


def test_a_second_stack_up_waits_for_the_first_and_finds_its_stack(tmp_path):
    """Two `recsys stack up` on one directory: the second waits on the directory's lock, saying so,
    then finds the first's stack running instead of starting another (and clobbering stack.json).
    No PostgreSQL needed: the first `up` is this test holding the lock, and its "servers" are one
    live, answering process whose command line carries both servers' markers."""
    from filelock import FileLock

    root = tmp_path / "stack"
    root.mkdir()
    ports = [free_port() for _ in range(3)]
    server, health = answering(tmp_path)  # the first's servers, answering
    try:
        with FileLock(str(root / LOCK_FILE)):  # the first `stack up`, starting its servers
            flags = [f"--{name}-port={port}" for name, port in zip(("postgres", "mlflow", "prefect"), ports, strict=True)]
            second = subprocess.Popen(
                [sys.executable, "-m", "recsys.cli", "stack", "up", "--dir", str(root), *flags],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            waiting = second.stderr.readline()  # an error line (and exit) if it did not wait
            first = Stack(root, postgres_port=ports[0], mlflow_port=ports[1], prefect_port=ports[2])
            first.servers = {
                name: Server(name, server.pid, f"http://{HOST}:1", health, "log", name) for name in ("mlflow", "prefect")
            }
            first.write_state()
        out, err = second.communicate(timeout=60)
    finally:
        server.kill()
        server.wait()
    assert "waiting for another `recsys stack up` or `down` of" in waiting, waiting + err
    assert second.returncode == 0 and "running already" in out, out + err
    assert Stack.from_state(root).servers["mlflow"].pid == server.pid  # the first's state, not clobbered


def test_stack_up_over_a_stack_with_a_dead_server_starts_it_alone_and_keeps_the_survivor(tmp_path):
    """One server of a running stack killed (kill -9 of MLflow's, the OOM killer): `recsys stack up`
    failed on the survivor's port and removed stack.json, so the survivor ran on unrecorded; then it
    stopped the whole stack and started it afresh, cutting the MLflow server from under every
    `recsys run` logging to it to bring back a dead Prefect server. Now `up` starts the dead server
    alone, the rest serving on. Here the dead server's port has been taken meanwhile (a foreign
    listener), so its start fails at once with one line: the survivor must still run, recorded,
    and `recsys stack down` must stop it."""
    import socket

    root = tmp_path / "stack"
    root.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass", "mlflow"])
    dead.wait()
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "prefect"], start_new_session=True)
    try:
        with socket.socket() as busy:
            busy.bind((HOST, 0))
            busy.listen()
            stack = Stack(root, postgres_port=free_port(), mlflow_port=busy.getsockname()[1], prefect_port=free_port())
            stack.servers = {
                name: Server(name, process.pid, f"http://{HOST}:1", f"http://{HOST}:1/health", str(root / f"{name}.log"), name)
                for name, process in (("mlflow", dead), ("prefect", survivor))
            }
            stack.write_state()
            result = CliRunner().invoke(app, ["stack", "up", "--dir", str(root)])
        said = " ".join(result.output.split())
        assert "mlflow of the stack in" in said and "is not running: starting it again" in said, result.output
        assert result.exit_code == 2 and f"error: port {stack.mlflow_port} on {HOST} is in use" in said, result.output
        assert survivor.poll() is None, result.output  # the survivor serves on ...
        assert Stack.from_state(root).servers["prefect"].pid == survivor.pid  # ... recorded
        down = CliRunner().invoke(app, ["stack", "down", "--dir", str(root)])
        assert down.exit_code == 0 and survivor.wait(timeout=30) is not None, down.output
    finally:
        if survivor.poll() is None:
            survivor.kill()
            survivor.wait()


def test_stack_up_in_another_directory_says_how_to_stop_that_one(tmp_path):
    """`recsys stack up --dir DIR` ended with "Stop it: make stack-stop (or: recsys stack down)",
    both of which stop the stack in .stack, not DIR's. (A running stack is found by its state, so no
    PostgreSQL is needed: its "servers" are one live, answering process carrying both markers.)"""
    root = tmp_path / "team"
    root.mkdir()
    server, health = answering(tmp_path)
    try:
        stack = Stack(root, postgres_port=free_port(), mlflow_port=free_port(), prefect_port=free_port())
        stack.servers = {name: Server(name, server.pid, f"http://{HOST}:1", health, "log", name) for name in ("mlflow", "prefect")}
        stack.write_state()
        result = CliRunner().invoke(app, ["stack", "up", "--dir", str(root)])
    finally:
        server.kill()
        server.wait()
    assert result.exit_code == 0 and "running already" in result.output, result.output
    said = " ".join(result.output.split())
    assert f"Stop it: recsys stack down --dir {root}" in said and "make stack-stop" not in said, result.output


def test_stack_up_with_postgresql_down_restarts_the_stack(tmp_path):
    """PostgreSQL of a running stack killed (kill -9, the OOM killer): both servers ran on,
    answering 500, and `recsys stack up` said "the stack in .stack is running already". Now it
    stops the servers and starts afresh. (A data directory that is not running stands for the dead
    cluster; the fresh start fails at once on a taken PostgreSQL port.)"""
    import socket

    from recsys.stack import StackUnavailable, postgres_bin

    try:
        postgres_bin()
    except StackUnavailable as exc:
        pytest.skip(str(exc))
    root = tmp_path / "stack"
    (root / "postgres" / "data").mkdir(parents=True)
    (root / "postgres" / "data" / "PG_VERSION").write_text("15\n")
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "mlflow", "prefect"],
                              start_new_session=True)  # fmt: skip
    try:
        with socket.socket() as busy:
            busy.bind((HOST, 0))
            busy.listen()
            port = busy.getsockname()[1]
            stack = Stack(root, postgres_port=port, mlflow_port=free_port(), prefect_port=free_port())
            stack.servers = {
                name: Server(name, server.pid, f"http://{HOST}:1", f"http://{HOST}:1/health", "log", name)
                for name in ("mlflow", "prefect")
            }
            stack.write_state()
            result = CliRunner().invoke(app, ["stack", "up", "--dir", str(root), f"--postgres-port={port}"])
        said = " ".join(result.output.split())
        assert "postgres of the stack in" in said and "is not running: restarting the stack" in said, result.output
        assert server.poll() is not None, result.output  # the servers were stopped first
        assert result.exit_code == 2 and "running already" not in said, result.output
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


# A stand-in server for the stack's tests, on 127.0.0.1: it answers 200 to every GET once the file
# argv[2] exists (503 before: "starting"), with argv[3] == "fork" from a forked worker process, as
# `mlflow server`'s uvicorn workers do; its command line carries both servers' markers.
STAND_IN = r"""
import http.server, os, sys, time
port, ready, fork = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "fork"

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if os.path.exists(ready) else 503)
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", port), Health)
if not fork or os.fork() == 0:
    server.serve_forever()
time.sleep(300)
"""


def answering(root) -> tuple[subprocess.Popen, str]:
    """A stand-in server that answers at once (one process, both markers) and its health URL."""
    port, ready = free_port(), root / "answering.ready"
    ready.touch()
    process = subprocess.Popen([sys.executable, "-c", STAND_IN, str(port), str(ready), "-", "mlflow", "prefect"])
    health = f"http://{HOST}:{port}/health"
    Server("stand-in", process.pid, health, health, "-", "mlflow").wait_ready(60, process)
    return process, health


def stand_in(root, name: str = "mlflow"):
    """A stand-in server launched as `recsys stack up` launches its servers, and recorded in
    root/stack.json as the only server of the stack in `root`; returns (stack, its Popen, ready file)."""
    from recsys.stack import launch

    port, ready = free_port(), root / f"{name}.ready"
    command = [sys.executable, "-c", STAND_IN, str(port), str(ready), "fork", "mlflow", "prefect"]
    url = f"http://{HOST}:{port}"
    server, process = launch(name, command, dict(__import__("os").environ), root / f"{name}.log", url,
                             f"{url}/health", name)  # fmt: skip
    # Until the child has exec'd, its command line is this process's, which names no server: its
    # state would read `down` (a loaded machine widened that window enough for a status to land in it).
    deadline = time.monotonic() + 60
    while not server.alive():
        assert process.poll() is None and time.monotonic() < deadline, f"the stand-in {name} did not start"
        time.sleep(0.01)
    stack = Stack(root, postgres_port=free_port(), mlflow_port=port, prefect_port=free_port())
    stack.servers[name] = server
    stack.write_state()
    return stack, process, ready


def test_stack_up_over_a_server_still_starting_waits_until_it_answers(tmp_path):
    """A `recsys stack up` killed while its servers started left them starting (running, not yet
    answering): the next `up` said "the stack ... is running already" and printed the addresses,
    and a `recsys run` pointed at them failed. Now `status` says the server is starting (pid, log)
    and `up` says so, waits until it answers, then says it is ready."""
    root = tmp_path / "stack"
    root.mkdir()
    stack, process, ready = stand_in(root)
    try:
        status = CliRunner().invoke(app, ["stack", "status", "--dir", str(root)])
        assert status.exit_code == 1, status.output
        assert f"mlflow    starting (pid {process.pid}, for" in status.output, status.output
        up = subprocess.Popen([sys.executable, "-m", "recsys.cli", "stack", "up", "--dir", str(root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**__import__("os").environ, "COLUMNS": "300"})  # fmt: skip
        first = up.stdout.readline()  # said before it waits (an unwaited "running already" ends it)
        ready.touch()  # now the server answers
        out, err = up.communicate(timeout=60)
        assert f"mlflow: starting (pid {process.pid}, for" in first and "waiting until it answers" in first, first + out + err
        assert up.returncode == 0 and "mlflow: ready at" in out and "running already" in out, first + out + err
        assert stack.servers["mlflow"].state() == "up"
    finally:
        stack.servers["mlflow"].stop()


def test_a_server_killed_with_sigkill_has_its_workers_stopped_by_stack_down(tmp_path):
    """kill -9 of `mlflow server` leaves its uvicorn workers serving its port: `recsys stack
    status` said "mlflow up" (a dead server's orphans answering), `stack down` stopped nothing (its
    pid was gone) and `stack up` failed on the taken port, leaving the workers recorded nowhere.
    Every process a server starts carries its tag (RECSYS_STACK_SERVER): status names them, and
    down stops them."""
    import psutil

    root = tmp_path / "stack"
    root.mkdir()
    stack, process, ready = stand_in(root)
    ready.touch()
    server = stack.servers["mlflow"]
    server.wait_ready(timeout=60, process=process)
    [worker] = psutil.Process(process.pid).children()
    process.kill()
    process.wait()
    try:
        status = CliRunner().invoke(app, ["stack", "status", "--dir", str(root)])
        assert status.exit_code == 1, status.output
        said = " ".join(status.output.split())
        assert f"mlflow DOWN (pid {process.pid} is gone; processes it started still run: {worker.pid})" in said, said
        assert f"start what is down with `recsys stack up --dir {root}`" in said, said
        down = CliRunner().invoke(app, ["stack", "down", "--dir", str(root)])
        assert down.exit_code == 0, down.output
        assert not psutil.pid_exists(worker.pid) or worker.status() == psutil.STATUS_ZOMBIE
        assert not server.healthy()  # its port is free for the next `up`
    finally:
        if worker.is_running():
            worker.kill()


def test_a_recorded_pid_that_another_process_got_is_never_signalled(tmp_path):
    """stack.json from before a reboot, or a server long gone: its pid now belongs to another
    process, whose command line may well hold the marker word ("mlflow"). The recorded start time
    tells them apart: the stack counts the server down and `stack down` leaves that process alone."""
    root = tmp_path / "stack"
    root.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "mlflow", "prefect"])
    try:
        import psutil

        stack = Stack(root, postgres_port=free_port(), mlflow_port=free_port(), prefect_port=free_port())
        stack.servers["mlflow"] = Server("mlflow", other.pid, f"http://{HOST}:1", f"http://{HOST}:1/health", "log",
                                         "mlflow", psutil.Process(other.pid).create_time() - 3600)  # fmt: skip
        stack.write_state()
        status = CliRunner().invoke(app, ["stack", "status", "--dir", str(root)])
        assert status.exit_code == 1 and "mlflow DOWN" in " ".join(status.output.split()), status.output
        down = CliRunner().invoke(app, ["stack", "down", "--dir", str(root)])
        assert down.exit_code == 0, down.output
        assert other.poll() is None  # not signalled
    finally:
        other.kill()
        other.wait()


# A `recsys stack up` still waiting for its servers, as recorded by Stack.start: it holds the stack's
# lock and stack.json names it as the starter (no PostgreSQL or servers needed for what is checked).
STARTING_UP = r"""
import os, sys, time
import psutil
from filelock import FileLock
from recsys.stack import LOCK_FILE, Stack

root = sys.argv[1]
with FileLock(os.path.join(root, LOCK_FILE)):
    stack = Stack(root, postgres_port=1, mlflow_port=2, prefect_port=3)
    stack.starting = {"pid": os.getpid(), "started": psutil.Process().create_time()}
    stack.write_state()
    print("starting", flush=True)
    time.sleep(60)
"""


def test_stack_down_while_up_is_starting_stops_that_up_instead_of_waiting_for_it(tmp_path):
    """`recsys stack down` while `up` was starting waited on the lock for the whole start (minutes
    on a loaded machine: the servers importing), and only then stopped what had just started. Now
    it stops that `up` (SIGTERM: it unwinds as on Ctrl-C, stopping what it started), then the rest."""
    import signal

    root = tmp_path / "stack"
    root.mkdir()
    up = subprocess.Popen([sys.executable, "-c", STARTING_UP, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert up.stdout.readline() == "starting\n"
        down = CliRunner().invoke(app, ["stack", "down", "--dir", str(root)])
        assert up.wait(timeout=60) == -signal.SIGTERM
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    said = " ".join(down.output.split())
    assert down.exit_code == 0 and f"stopping the `recsys stack up` (pid {up.pid}) that is starting the stack" in said, said
    assert "stopped the stack in" in said and not (root / "stack.json").exists()


def test_stack_up_on_a_port_another_process_holds_names_it_and_starts_nothing(tmp_path):
    """A foreign process on the MLflow port: `stack up` started PostgreSQL (initdb on a first run),
    then failed on the port and stopped it again, saying only "port ... is in use". Now it checks the
    servers' ports first, and names the process holding it and the option to change."""
    import os
    import socket

    root = tmp_path / "stack"
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["stack", "up", "--dir", str(root), f"--mlflow-port={port}",
                                          f"--postgres-port={free_port()}", f"--prefect-port={free_port()}"])  # fmt: skip
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in said, said
    assert f"error: port {port} on {HOST} is in use by pid {os.getpid()} (" in said and "--mlflow-port" in said, said
    assert not (root / "postgres").exists() and not (root / "stack.json").exists()  # nothing started



def test_a_postgres_pid_file_naming_another_process_is_not_taken_for_the_server():
    """After a kill -9 of PostgreSQL (or a reboot), `postmaster.pid` may name a pid another process
    got since; `pg_ctl status` took that process for the server (`stack up` started nothing) and
    `pg_ctl stop` sent it SIGINT. The process here runs as the user pg_ctl runs as, so pg_ctl can
    see it; the data directory stands for a cluster (PG_VERSION) whose server died."""
    import shutil
    import time

    from recsys.stack import Postgres, _as_db_user, _chown_to_db_user, _is_root

    if _is_root() and shutil.which("runuser") is None:
        pytest.skip("root runs PostgreSQL as the postgres user, through runuser")
    import tempfile

    from recsys.stack import StackUnavailable

    root = Path(tempfile.mkdtemp(prefix="recsys-test-pgpid-"))  # pytest's tmp_path is closed to that user
    try:
        _chown_to_db_user(root)
    except StackUnavailable as exc:
        shutil.rmtree(root)
        pytest.skip(str(exc))
    pg = Postgres(root / "postgres", free_port())
    pg.data.mkdir(parents=True)
    (pg.data / "PG_VERSION").write_text("15\n")
    command = subprocess.Popen(_as_db_user(["sleep", "120"]))
    other = psutil.Process(command.pid)
    try:
        deadline = time.monotonic() + 10
        while _is_root() and not other.children():  # runuser starts it as its child
            assert time.monotonic() < deadline and command.poll() is None
            time.sleep(0.05)
        other = (other.children() or [other])[0]
        pg.pid_file.write_text(f"{other.pid}\n{pg.data}\n{int(other.create_time()) - 3600}\n{pg.port}\n\n{HOST}\n")
        for path in (pg.root, pg.data, pg.data / "PG_VERSION", pg.pid_file):
            _chown_to_db_user(path)
        assert not pg.running()
        pg.stop()  # nothing to stop: the other process is not signalled
        assert other.is_running() and other.status() != psutil.STATUS_ZOMBIE
        pg._forget_stale_pid_file()  # what start() does first: PostgreSQL refuses to start over it
        assert not pg.pid_file.exists()
    finally:
        for process in {psutil.Process(command.pid), other}:
            try:
                process.kill()
            except psutil.Error:
                pass
        command.wait()
        shutil.rmtree(root, ignore_errors=True)


def test_a_free_port_lies_below_the_kernels_ephemeral_range_and_a_foreign_answer_is_not_healthy():
    """A server binds its port only after its imports, and a port the kernel chose (bind to 0) can
    meanwhile be handed to anyone asking for one: a session's Spark gateway (py4j) took the Prefect
    server's, and its health check raised BadStatusLine on py4j's error line instead of reading
    'not healthy'. Ports now come from below the ephemeral range; a non-HTTP answer is not healthy."""
    import socket
    import threading

    from recsys.stack import ephemeral_ports

    low, _ = ephemeral_ports()
    ports = {free_port() for _ in range(20)}
    assert all(10_000 <= p < low for p in ports)
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()

        def answer_garbage() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(1024)
                connection.sendall(b"!zspy4j.Py4JException: Unknown command received: GET /health\n")

        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()
        health = f"http://{HOST}:{listener.getsockname()[1]}/health"
        assert not Server("foreign", 0, health, health, "-", "mlflow").healthy(timeout=10)
        thread.join(10)


KILLED_WRITING_ENV = """
import os, pathlib, signal, sys
from pathlib import Path
from recsys.cli.stack_cmds import _print_usage

real_write_text = pathlib.Path.write_text

def write_text(self, data, *args, **kwargs):
    if "env" in self.name:  # the file opened (emptied), nothing written yet: the kill
        open(self, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write_text(self, data, *args, **kwargs)

pathlib.Path.write_text = write_text
_print_usage("http://127.0.0.1:5001", "http://127.0.0.1:4201/api", Path(sys.argv[1]))
"""


def test_a_stack_up_killed_while_writing_its_env_file_leaves_the_earlier_one(tmp_path):
    """`recsys stack up` rewrote `<dir>/env` (what `source .stack/env` reads) in place: a kill -9
    between emptying and writing it left it empty, and sourcing it then set nothing, so the next
    commands logged to the local store instead of the stack. It is replaced whole now."""
    env = tmp_path / "env"
    earlier = "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000\nexport PREFECT_API_URL=http://127.0.0.1:4200/api\n"
    env.write_text(earlier)
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITING_ENV, str(tmp_path)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert env.read_text() == earlier
