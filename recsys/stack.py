"""The tracking and orchestration stack a team runs, on one machine: PostgreSQL, an MLflow tracking
server backed by it (artifacts served through the server's proxy, so clients never need the artifact
path) and a Prefect server backed by it.

`recsys stack up` (`make stack`) starts it for a person and `recsys stack down` stops it; the test
suite starts the same stack once per session, so the tracking tests and the scheduled-flow test run
against what teams run rather than only against SQLite. This module only starts, probes and stops
processes: it imports neither MLflow nor Prefect.

PostgreSQL refuses to run as root. Run as root, `initdb` and `pg_ctl` run as the `postgres` system
user (`runuser`), which then owns the data directory. Server processes start in their own session
(process group) so that stopping one stops its workers too, and their pids are written to
`stack.json` in the stack directory so a later `recsys stack down` finds them, with each one's start
time (a reused pid is never taken for it) and a tag in its environment that every process it starts
inherits (SERVER_TAG_ENV: the workers a killed server leaves on its port are still found and stopped).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from recsys.errors import RecsysError
from recsys.files import announced_lock

HOST = "127.0.0.1"
DB_USER = "postgres"
STATE_FILE = "stack.json"
OWNER_FILE = "owner.json"
READY_TIMEOUT_S = 300.0  # a cold MLflow server import on a loaded 2-core machine takes ~60 s
STOP_TIMEOUT_S = 20.0
# A recorded process start time matches within this: the kernel's boot time, from which start times are
# computed, moves by up to a second under clock adjustments; a pid is not reused within a second.
START_TOLERANCE_S = 1.0
# PostgreSQL records its start in whole seconds (postmaster.pid's third line), taken a moment after
# the process began: a little more slack than for the servers whose start time psutil recorded.
PG_START_TOLERANCE_S = 2.0
# Test stacks trade durability for speed: nothing in them must survive a power cut.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class StackError(RecsysError):
    """A part of the local stack cannot be started, reached or stopped; the message says which."""


class StackUnavailable(StackError):
    """This machine lacks a program or driver the stack needs (PostgreSQL's server programs, the
    psycopg driver, a `postgres` user to run it as root): nothing to do with the stack's own code,
    so the test suite skips what needs the stack, saying why, rather than failing."""


# --------------------------------------------------------------------------------------------------
# Small helpers


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for ports it hands out itself (bind to port 0, outgoing connections)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the kernel's ephemeral range.

    Why not the kernel's own choice (bind to port 0): a server binds its port only after its
    imports (tens of seconds for Prefect), and until then the kernel may hand the same port to any
    process asking for one: a session's Spark gateway (py4j) once took the Prefect server's port,
    whose health check then read py4j's error line. A port outside that range is only ever taken by
    someone naming it."""
    import random

    low, _ = ephemeral_ports()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10_000, max(10_001, low))
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        if not port_in_use(port):
            return port
    with socket.socket() as s:  # a crowded machine: the kernel's choice, as before
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def port_taken(port: int, what: str, option: str) -> StackError:
    """The error for a port something else listens on, naming that process when this user may see
    it (pid and command line), so a person knows what to stop, or which option to change."""
    holder = ""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                command = " ".join(psutil.Process(conn.pid).cmdline())[:120]
                holder = f" by pid {conn.pid} ({command})"
                break
    except (psutil.Error, OSError):
        pass
    return StackError(f"port {port} on {HOST} is in use{holder}; stop that, or choose another {what} port with {option}")


def postgres_bin() -> Path:
    """Directory holding `initdb` and `pg_ctl`: $RECSYS_PG_BIN, Debian's /usr/lib/postgresql/N/bin
    (newest N first), or wherever `pg_ctl` is on PATH."""
    candidates = [Path(p) for p in [os.environ.get("RECSYS_PG_BIN", "")] if p]
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    if found := shutil.which("pg_ctl"):
        candidates.append(Path(found).parent)
    for directory in candidates:
        if (directory / "pg_ctl").is_file() and (directory / "initdb").is_file():
            return directory
    raise StackUnavailable(
        "PostgreSQL server programs (initdb, pg_ctl) not found: install them "
        "(Debian/Ubuntu: apt-get install postgresql) or set RECSYS_PG_BIN to their directory"
    )


def check_available() -> None:
    """Raise StackUnavailable when this machine cannot run the stack at all: PostgreSQL's server
    programs or MLflow's PostgreSQL driver (psycopg, the `postgres` extra) are missing."""
    postgres_bin()
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is None:
        raise StackUnavailable(
            "the PostgreSQL driver for MLflow (psycopg) is not installed: pip install -e '.[postgres]'"
        )


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _as_db_user(command: list[str]) -> list[str]:
    """PostgreSQL's programs as the `postgres` system user when we are root (it refuses root)."""
    if not _is_root():
        return command
    if shutil.which("runuser") is None:
        raise StackUnavailable("running as root needs `runuser` to start PostgreSQL as the postgres user")
    return ["runuser", "-u", DB_USER, "--", *command]


def _chown_to_db_user(path: Path) -> None:
    if not _is_root():
        return
    try:
        shutil.chown(path, user=DB_USER, group=None)
    except LookupError:
        raise StackUnavailable(
            "PostgreSQL refuses to run as root and there is no `postgres` system user to run it as; "
            "create one (useradd --system postgres) or run as an ordinary user"
        ) from None


def _run(command: list[str], what: str, env: Mapping[str, str] | None = None, timeout: float = 180) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=dict(env) if env else None
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{what}: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise StackError(f"{what} failed: {detail[-1] if detail else f'exit code {done.returncode}'}")
    return done.stdout


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass
class Postgres:
    """One PostgreSQL cluster in `root` (data/, password, postgres.log), listening on 127.0.0.1 only.

    Password authentication (scram-sha-256) with a generated password kept in `root/password`
    (mode 0600): a shared machine's other users cannot reach the databases."""

    root: Path
    port: int
    durable: bool = True

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self, database: str, driver: str = "postgresql") -> str:
        """SQLAlchemy URL; `postgresql` uses psycopg, `postgresql+asyncpg` is what Prefect needs."""
        return f"{driver}://{DB_USER}:{self.password()}@{HOST}:{self.port}/{database}"

    def init(self) -> None:
        """Create the cluster unless `root/data` already holds one (a restarted stack keeps its data)."""
        if (self.data / "PG_VERSION").is_file():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.password_file.write_text(secrets.token_hex(16) + "\n")
        os.chmod(self.password_file, 0o600)
        for path in (self.root, self.password_file):
            _chown_to_db_user(path)
        if _is_root() and subprocess.run(_as_db_user(["test", "-w", str(self.root)])).returncode != 0:
            raise StackError(
                f"{self.root}: the postgres system user cannot write here (a parent directory is "
                "closed to it); choose a stack directory under /tmp or /var/tmp with --dir"
            )
        command = [
            str(postgres_bin() / "initdb"), "-D", str(self.data), "-U", DB_USER,
            f"--pwfile={self.password_file}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
        ]  # fmt: skip
        if not self.durable:
            command.append("--no-sync")
        _run(_as_db_user(command), f"initdb in {self.data}")

    @property
    def pid_file(self) -> Path:
        return self.data / "postmaster.pid"

    def _pid_file_entry(self) -> tuple[int, float] | None:
        """(pid, start time) from `postmaster.pid`; None when there is none or it cannot be read
        (also while a starting server is still writing it)."""
        try:
            lines = self.pid_file.read_text().splitlines()
            return int(lines[0]), float(lines[2])
        except (OSError, ValueError, IndexError):
            return None

    def postmaster(self) -> psutil.Process | None:
        """This cluster's server process, or None when it does not run.

        `pg_ctl status` (and `pg_ctl stop`, which signals it) trusts any live process with the pid
        in `postmaster.pid`: after a kill -9 of PostgreSQL or a reboot, that pid may belong to
        another process, which was then taken for the running server (`stack up` started nothing,
        and `stack down` sent it SIGINT). As for the stack's other servers, the process must be
        the one that file describes: started when the file says (its third line) and, where its
        command line can be read, a `postgres` program serving this data directory."""
        entry = self._pid_file_entry()
        if entry is None or not (self.data / "PG_VERSION").is_file():
            return None
        pid, started = entry
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            if abs(process.create_time() - started) > PG_START_TOLERANCE_S:
                return None
        except psutil.Error:
            return None
        try:
            command = process.cmdline()
        except psutil.AccessDenied:  # another user's, where /proc hides it: the start time matched
            return process
        except psutil.Error:
            return None
        if not command or not os.path.basename(command[0]).startswith("postgres") or "-D" not in command[:-1]:
            return None
        served = command[command.index("-D") + 1]
        return process if os.path.realpath(served) == os.path.realpath(self.data) else None

    def running(self) -> bool:
        return self.postmaster() is not None

    def _forget_stale_pid_file(self) -> None:
        """Remove a `postmaster.pid` whose process is not this cluster's server (gone, or its pid
        reused): PostgreSQL refuses to start over one naming a live process ("lock file
        postmaster.pid already exists"). Only when the file could be read and judged."""
        if self._pid_file_entry() is not None and self.postmaster() is None:
            self.pid_file.unlink(missing_ok=True)

    def start(self) -> None:
        """Start the server (pg_ctl waits until it accepts connections). TCP on 127.0.0.1 only."""
        if self.running():
            return
        self._forget_stale_pid_file()
        if port_in_use(self.port):
            raise port_taken(self.port, "PostgreSQL", "--postgres-port")
        options = [f"-h {HOST}", f"-p {self.port}", "-c unix_socket_directories=''"]
        if not self.durable:
            options += [f"-c {setting}" for setting in FAST_SETTINGS]
        command = [
            str(postgres_bin() / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
            "-w", "-t", "120", "-o", " ".join(options),
        ]  # fmt: skip
        try:
            _run(_as_db_user(command), f"starting PostgreSQL on port {self.port}", timeout=150)
        except StackError as exc:
            raise StackError(f"{exc}\n{tail(self.log)}") from None

    def create_database(self, name: str) -> None:
        """Create database `name` unless it exists."""
        env = {**os.environ, "PGPASSWORD": self.password()}
        psql = [str(postgres_bin() / "psql"), "-h", HOST, "-p", str(self.port), "-U", DB_USER, "-tA"]
        exists = _run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"], "psql", env)
        if exists.strip() != "1":
            _run([*psql, "-c", f'CREATE DATABASE "{name}"'], f"creating database {name}", env)

    def stop(self) -> None:
        """Fast shutdown (open transactions roll back, nothing committed is lost)."""
        if not self.running():
            return
        command = [str(postgres_bin() / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"]
        _run(_as_db_user(command), "stopping PostgreSQL", timeout=90)


# --------------------------------------------------------------------------------------------------
# Server processes


SERVER_TAG_ENV = "RECSYS_STACK_SERVER"
"""Set, to a value unique to one launch, in a server's environment: every process the server starts
(uvicorn's supervisor and workers, multiprocessing helpers) inherits it, so `Server.processes`
finds them all, also those a kill -9 of the server left running (they keep its port), and never a
process that merely got a recorded pid again."""


@dataclass
class Server:
    """A server process started by this module: its own process group, its log, its health URL.

    `started` (the process's start time) and `tag` (see SERVER_TAG_ENV) are recorded for servers
    launched since they were added; a state file without them falls back on `marker`."""

    name: str
    pid: int
    url: str
    health: str
    log: str
    marker: str  # a word its command line must contain, so a reused pid is never signalled
    started: float | None = None
    tag: str | None = None

    def _leader(self) -> psutil.Process | None:
        """The server's own process if it still runs (not a zombie, not a reused pid), else None."""
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            if self.started is not None and abs(process.create_time() - self.started) > START_TOLERANCE_S:
                return None  # the pid was reused (another process, or a machine restarted since)
            if self.marker not in " ".join(process.cmdline()):
                return None
            return process
        except psutil.NoSuchProcess:
            return None
        except psutil.Error:  # runs, but not ours to look at: a reused pid unless its start time was not recorded
            if self.started is not None:
                return None
        try:
            return psutil.Process(self.pid)
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self._leader() is not None

    def processes(self) -> list[psutil.Process]:
        """Every process of this server still running: its own and, when it carries a tag, those it
        started, wherever its death left them (uvicorn workers outlive a killed `mlflow server`)."""
        found = {}
        if (leader := self._leader()) is not None:
            found[leader.pid] = leader
        if self.tag:
            for process in psutil.process_iter():
                try:
                    if process.pid not in found and process.environ().get(SERVER_TAG_ENV) == self.tag:
                        if process.status() != psutil.STATUS_ZOMBIE:
                            found[process.pid] = process
                except psutil.Error:
                    continue
        return list(found.values())

    def age(self) -> float | None:
        """Seconds since the server process started; None when it does not run."""
        leader = self._leader()
        try:
            return time.time() - leader.create_time() if leader is not None else None
        except psutil.Error:
            return None

    def healthy(self, timeout: float = 5.0) -> bool:
        """The health URL answers 200. Anything else is not healthy, a foreign process answering
        on the port with something that is not HTTP included (it raised BadStatusLine)."""
        try:
            with urllib.request.urlopen(self.health, timeout=timeout) as response:  # noqa: S310 - our URL
                return response.status == 200
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            return False

    def state(self) -> str:
        """`up` (runs and answers), `starting` (runs, not answering yet, started less than
        READY_TIMEOUT_S ago), `not answering` (runs, silent for longer than a start may take),
        `orphaned` (gone, but processes it started run on) or `down`. A foreign process answering
        on its port never makes it `up`."""
        age = self.age()
        if age is None:
            return "orphaned" if self.processes() else "down"
        if self.healthy():
            return "up"
        return "starting" if age < READY_TIMEOUT_S else "not answering"

    def describe(self) -> str:
        """Its state with what a person needs to look further: pid, how long, the log."""
        state = self.state()
        if state in ("starting", "not answering"):
            return f"{state} (pid {self.pid}, for {self.age() or 0:.0f} s; log {self.log})"
        if state == "orphaned":
            left = ", ".join(str(p.pid) for p in self.processes())
            return f"DOWN (pid {self.pid} is gone; processes it started still run: {left})"
        return "up" if state == "up" else "DOWN"

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, process: subprocess.Popen | None = None) -> None:
        """Block until the health URL answers 200; a process that exits first is an error with its log."""
        deadline = time.monotonic() + timeout
        while not self.healthy():
            exited = process.poll() is not None if process is not None else not self.alive()
            if exited:
                raise StackError(f"{self.name} exited before it was ready; its log ({self.log}) ends:\n{tail(Path(self.log))}")
            if time.monotonic() > deadline:
                raise StackError(f"{self.name} not ready after {timeout:.0f} s; its log ({self.log}) ends:\n{tail(Path(self.log))}")
            time.sleep(0.5)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to the process group and every process of the server (`processes`), SIGKILL to
        those still running after `timeout` s. A server whose own process died is still stopped:
        the workers it left keep its port, and a restart would fail on it."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            running = self.processes()
            if not running:
                return
            if any(p.pid == self.pid for p in running):
                try:
                    os.killpg(self.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            for process in running:
                try:
                    process.send_signal(sig)
                except psutil.Error:
                    pass
            deadline = time.monotonic() + wait
            while any(_runs(p) for p in running) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not any(_runs(p) for p in running):
                return


def _runs(process: psutil.Process) -> bool:
    """Whether `process` still runs; reaps it when it is this process's child (a zombie has ended)."""
    try:
        os.waitpid(process.pid, os.WNOHANG)
    except ChildProcessError:  # not our child: its parent (or init) reaps it
        pass
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def launch(
    name: str, command: list[str], env: Mapping[str, str], log: Path, url: str, health: str, marker: str
) -> tuple[Server, subprocess.Popen]:
    """Start `command` detached (own session), output to `log`; returns at once."""
    log.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{name}-{secrets.token_hex(8)}"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**env, SERVER_TAG_ENV: tag}, start_new_session=True,
        )  # fmt: skip
    try:
        started = psutil.Process(process.pid).create_time()
    except psutil.Error:
        started = None
    return Server(name, process.pid, url, health, str(log), marker, started, tag), process


def _python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This interpreter's bin directory first on PATH (MLflow execs `uvicorn` by name)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra or {})
    return env


# MLflow 3.x servers start a job runner by default (a huey consumer per GenAI job type: ~8 more
# processes and ~1 GB of memory) for trace scoring and prompt optimisation, which training runs never
# use. Off unless the environment says otherwise (`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true`).
MLFLOW_NO_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` for an `mlflow server` / `mlflow ui` process: the job runner off unless `env` sets it."""
    return {**MLFLOW_NO_JOB_RUNNER, **env}


def mlflow_server_command(artifacts: Path, port: int, workers: int | None) -> list[str]:
    """`mlflow server` with its artifact proxy writing to `artifacts`: clients upload and download
    through the server (mlflow-artifacts:/...), never touching the path. The backend store's URI
    holds the database password, so it goes in the environment (MLFLOW_BACKEND_STORE_URI, see
    Stack.launch_mlflow), not on the command line that `ps` shows every user of the machine."""
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--artifacts-destination", str(artifacts), "--host", HOST, "--port", str(port),
    ]  # fmt: skip
    if workers:
        command += ["--workers", str(workers)]
    if workers != 1:  # several workers: uvicorn kills one that misses a 5 s ping, e.g. on a busy machine
        command += ["--uvicorn-opts", "--timeout-worker-healthcheck 30"]
    return command


def prefect_server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]


# --------------------------------------------------------------------------------------------------
# The whole stack


@dataclass
class StackInfo:
    """What `stack.json` records: where each part listens, and the server pids to stop."""

    root: str
    postgres_port: int
    mlflow_url: str
    prefect_url: str
    servers: dict[str, dict] = field(default_factory=dict)
    starting: dict | None = None  # {"pid", "started"} of the `recsys stack up` still starting it

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"


class Stack:
    """PostgreSQL + MLflow server + Prefect server under one directory.

    `start()` does everything and waits; `launch_*` / `wait_*` let a caller (the test session)
    start the servers in the background and wait only when it needs one."""

    def __init__(
        self,
        root: Path,
        *,
        postgres_port: int = 5433,
        mlflow_port: int = 5000,
        prefect_port: int = 4200,
        durable: bool = True,
        mlflow_workers: int | None = None,
        prefect_env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.postgres = Postgres(self.root / "postgres", postgres_port, durable=durable)
        self.mlflow_port, self.prefect_port = mlflow_port, prefect_port
        self.mlflow_workers = mlflow_workers
        self.prefect_env = dict(prefect_env or {})
        self.artifacts = self.root / "mlflow-artifacts"
        self.servers: dict[str, Server] = {}
        self._processes: dict[str, subprocess.Popen] = {}
        self.starting: dict | None = None  # this process while `start` waits for the servers (StackInfo)

    # -------------------------------------------------------------- urls
    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def prefect_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    def info(self) -> StackInfo:
        return StackInfo(
            str(self.root), self.postgres.port, self.mlflow_url, self.prefect_url,
            {name: asdict(server) for name, server in self.servers.items()}, self.starting,
        )  # fmt: skip

    # -------------------------------------------------------------- start
    def start_postgres(self) -> None:
        check_available()
        self.postgres.init()
        self.postgres.start()
        for database in ("mlflow", "prefect"):
            self.postgres.create_database(database)

    def launch_mlflow(self) -> Server:
        self._check_port(self.mlflow_port, "MLflow")
        self.artifacts.mkdir(parents=True, exist_ok=True)
        command = mlflow_server_command(self.artifacts, self.mlflow_port, self.mlflow_workers)
        env = mlflow_server_env(_python_env({"MLFLOW_BACKEND_STORE_URI": self.postgres.url("mlflow")}))
        return self._launch("mlflow", command, env, self.mlflow_url, f"{self.mlflow_url}/health")

    def launch_prefect(self) -> Server:
        self._check_port(self.prefect_port, "Prefect")
        env = _python_env(
            {
                "PREFECT_API_DATABASE_CONNECTION_URL": self.postgres.url("prefect", "postgresql+asyncpg"),
                "PREFECT_HOME": str(self.root / "prefect-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                **self.prefect_env,
            }
        )
        env.pop("PREFECT_API_URL", None)  # the server is the API; a client setting would confuse it
        return self._launch(
            "prefect", prefect_server_command(self.prefect_port), env, self.prefect_url,
            f"{self.prefect_api_url}/health",
        )  # fmt: skip

    def wait(self, name: str, timeout: float = READY_TIMEOUT_S) -> Server:
        server = self.servers[name]
        server.wait_ready(timeout, self._processes.get(name))
        return server

    def start(self, *, mlflow: bool = True, prefect: bool = True, log: Callable[[str], None] = print) -> StackInfo:
        """Start every part and wait until each answers; stops what it started when one fails."""
        wanted = [name for name, on in (("mlflow", mlflow), ("prefect", prefect)) if on]
        self.starting = {"pid": os.getpid(), "started": psutil.Process().create_time()}  # see `starting_process`
        try:
            for name in wanted:  # before PostgreSQL starts: a taken port stops the start before it began
                self._check_port(*((self.mlflow_port, "MLflow") if name == "mlflow" else (self.prefect_port, "Prefect")))
            log(f"PostgreSQL: starting on {HOST}:{self.postgres.port} (data in {self.postgres.data})")
            self.start_postgres()
            for name in wanted:
                log(f"{name}: starting (log {self.root / (name + '.log')})")
                (self.launch_mlflow if name == "mlflow" else self.launch_prefect)()
                self.write_state()  # at once: a `stack up` killed now leaves its servers recorded
            for name in wanted:  # both servers start at once; wait for each in turn
                self.wait(name)
                log(f"{name}: ready at {self.servers[name].url}")
            self.starting = None
            self.write_state()
        except BaseException:
            self.stop()
            raise
        return self.info()

    def restart(self, names: list[str], *, log: Callable[[str], None] = print) -> StackInfo:
        """Start the servers `names` of this running stack again (what is left of each, its workers or a
        hung process, stopped first) and wait until they answer, leaving PostgreSQL and the other
        server serving: a `recsys run` logging to MLflow goes on while a dead Prefect server comes
        back. A failed restart stops what it started and keeps every server recorded, so the next
        `recsys stack up` tries again and `recsys stack down` still stops the survivors."""
        self.starting = {"pid": os.getpid(), "started": psutil.Process().create_time()}
        try:
            for name in names:
                self.servers[name].stop()
                log(f"{name}: starting (log {self.root / (name + '.log')})")
                (self.launch_mlflow if name == "mlflow" else self.launch_prefect)()
                self.write_state()
            for name in names:
                self.wait(name)
                log(f"{name}: ready at {self.servers[name].url}")
        except BaseException:
            for name in names:
                self.servers[name].stop()
            raise
        finally:
            self.starting = None
            self.write_state()
        return self.info()

    # -------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop the servers, then PostgreSQL; forget the state file."""
        for server in list(self.servers.values()):
            server.stop()
        self.servers.clear()
        self._processes.clear()
        try:
            self.postgres.stop()
        finally:
            (self.root / STATE_FILE).unlink(missing_ok=True)

    # -------------------------------------------------------------- state
    def write_state(self) -> None:
        path = self.root / STATE_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self.info()), indent=2))
        os.replace(tmp, path)

    @classmethod
    def from_state(cls, root: Path) -> Stack | None:
        """The stack recorded in `root/stack.json` (ports and pids of a running `stack up`), if any."""
        path = Path(root) / STATE_FILE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text())
            stack = cls(
                Path(root),
                postgres_port=int(state["postgres_port"]),
                mlflow_port=int(state["mlflow_url"].rsplit(":", 1)[1]),
                prefect_port=int(state["prefect_url"].rsplit(":", 1)[1]),
            )
            stack.servers = {name: Server(**fields) for name, fields in state.get("servers", {}).items()}
            stack.starting = state.get("starting")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StackError(f"{path}: unreadable stack state ({exc}); stop the processes by hand") from None
        return stack

    def starting_process(self) -> psutil.Process | None:
        """The `recsys stack up` that is still starting this stack (recorded in its state, and still
        the same process), or None: `recsys stack down` stops it rather than waiting minutes for
        its start to end, only to undo it."""
        try:
            pid, started = int(self.starting["pid"]), float(self.starting["started"])  # type: ignore[index]
            process = psutil.Process(pid)
            return process if abs(process.create_time() - started) <= START_TOLERANCE_S else None
        except (TypeError, KeyError, ValueError, psutil.Error):
            return None

    # -------------------------------------------------------------- internals
    def _check_port(self, port: int, what: str) -> None:
        if port_in_use(port):
            raise port_taken(port, what, f"--{what.lower()}-port")

    def _launch(self, name: str, command: list[str], env: dict[str, str], url: str, health: str) -> Server:
        marker = "mlflow" if name == "mlflow" else "prefect"
        server, process = launch(name, command, env, self.root / f"{name}.log", url, health, marker)
        self.servers[name], self._processes[name] = server, process
        return server


LOCK_FILE = "stack.lock"


@contextmanager
def stack_lock(root: Path, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the stack directory's lock (`stack.lock` in it) while starting or stopping its stack:
    two `recsys stack up` on one directory would each find no running stack and start a second
    PostgreSQL, MLflow and Prefect on it, the second's `stack.json` clobbering the first's pids (so
    `stack down` could no longer stop them). The one that waits says so, and then finds the first's
    stack running."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with announced_lock(root / LOCK_FILE, f"another `recsys stack up` or `down` of {root}", say):
        yield


# --------------------------------------------------------------------------------------------------
# Stacks whose owner was killed


CLAIM_LOCK = "owner.lock"
"""The file whose lock a claim holds (`claim`): free only once its holder is gone."""

_claims: dict[str, int] = {}
"""This process's claims: the descriptor holding each one's lock, by directory (held until exit)."""


def claim(root: Path) -> None:
    """Mark the throw-away stack in `root` as this process's for as long as it runs: a test session
    killed with -9 cannot stop its servers, and the next session's `reap_orphans` does it instead.

    The claim is an flock on `root/CLAIM_LOCK`, held until this process ends, which the kernel
    releases when it does, however it ends: a free lock proves the owner gone. Its pid and start
    time are written to `OWNER_FILE` after the lock is held, for a person looking, with `lock` set.
    Why not the pid and start time alone: a start time is derived from the kernel's boot time,
    which moves with the wall clock (a step of a fraction of a second can change its whole second),
    and a second session read a live owner's start time as another process's and reaped its
    stack, servers and folder mid-session; nor does a pid say anything across PID namespaces that
    share one /tmp. (`lock_for_life` rather than `filelock`: a probe must never create the file.)"""
    from recsys.files import lock_for_life

    root = Path(root)
    fd = lock_for_life(root / CLAIM_LOCK, wait=False, create=True, mode=0o600)  # a directory just made: nobody else holds it
    _claims[str(root)] = fd
    process = psutil.Process()
    path = root / OWNER_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"pid": process.pid, "started": process.create_time(), "lock": CLAIM_LOCK}))
    os.replace(tmp, path)


@contextmanager
def dead_claim(root: Path) -> Iterator[bool | None]:
    """Whether the process that claimed `root` is provably gone (True), may run (False), or nobody
    claimed it (None); while inside, a gone owner's lock is held here, so no other session reaps
    `root` at the same time.

    A claim is read only once its owner file exists (written after its lock is held), so a claim
    being made reads as none. Its lock file gone means its directory is being removed (by its owner
    or a reaper): none either. A claim from before claims held a lock (no `lock` in its owner file)
    is gone only when its pid runs no process, or one started over START_TOLERANCE_S away from it."""
    from recsys.files import lock_for_life

    root = Path(root)
    try:
        owner = json.loads((root / OWNER_FILE).read_text())
    except (OSError, ValueError):
        yield None
        return
    if not isinstance(owner, dict) or "lock" not in owner:
        yield _legacy_owner_gone(owner)
        return
    try:
        fd = lock_for_life(root / CLAIM_LOCK, wait=False)  # never created here
    except FileNotFoundError:
        yield None
        return
    except OSError:  # held (its owner runs), not ours to open, or no locks here: not provably gone
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)  # releases the lock


def _legacy_owner_gone(owner: Any) -> bool:
    try:
        process = psutil.Process(int(owner["pid"]))
        return abs(process.create_time() - float(owner["started"])) > START_TOLERANCE_S
    except (KeyError, TypeError, ValueError):
        return False  # unreadable: not provably gone
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # it runs, but is not ours to look at
        return False


def owner_alive(root: Path) -> bool | None:
    """Whether the process that claimed `root` still runs; None when nobody claimed it (`dead_claim`)."""
    with dead_claim(root) as dead:
        return None if dead is None else not dead


def reap_orphans(parent: Path, prefix: str) -> list[Path]:
    """Stop the servers and PostgreSQL of every claimed stack under `parent/prefix*` whose owner is
    provably gone (its claim's lock is free: `dead_claim`), and delete its directory, holding that
    lock meanwhile; stacks in use, being claimed, or never claimed are left alone."""
    reaped = []
    for root in sorted(Path(parent).glob(f"{prefix}*")):
        if not root.is_dir():
            continue
        with dead_claim(root) as dead:
            if not dead:
                continue
            try:
                (Stack.from_state(root) or Stack(root)).stop()
            except StackError:
                continue  # cannot stop it safely (unreadable state): leave it for a person
            shutil.rmtree(root, ignore_errors=True)
            reaped.append(root)
    return reaped
