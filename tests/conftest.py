"""Fixtures shared by every test module. Heavy services (MLflow store, Prefect harness) are
session-scoped in their own conftest files; the team stack (PostgreSQL, an MLflow server and a
Prefect server on it) is started here, in the background, as soon as collection shows a selected
test needs it, so its ~40 s of start-up overlap the tests that run first."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import pytest

# Prefect's server telemetry writes to its SQLite from a background task and logs noisy
# "database is locked" tracebacks under load; it is not part of what the tests check.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

REPO = Path(__file__).resolve().parents[1]
ML100K = REPO.parent / "shared" / "data" / "ml-100k"


MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True, scope="module")
def _mlflow_process_uris():
    """One session tests two stores: a module that sets MLflow's process-wide tracking or registry
    URI (`mlflow.set_tracking_uri` / `set_registry_uri`, which also export them as environment
    variables for subprocesses) must not send later modules' clients and subprocesses to its store."""
    saved = {name: os.environ.get(name) for name in MLFLOW_URI_VARIABLES}
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The shared MovieLens 100K (RecBole layout); tests that need it skip when it is absent."""
    if not (ML100K / "ml-100k.inter").is_file():
        pytest.skip("shared/data/ml-100k is not beside the repo")
    return ML100K


@pytest.fixture(scope="session")
def shared_mlflow_uri(tmp_path_factory) -> str:
    """One real MLflow SQLite store per session (creating one runs ~10-20 s of migrations)."""
    from recsys.tracking.store import check_tracking

    root = tmp_path_factory.mktemp("mlflow-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    check_tracking(uri)  # runs the migrations once, here
    return uri


# --------------------------------------------------------------------------------------------------
# The team stack: PostgreSQL + `mlflow server` on it + `prefect server start` on it (recsys.stack)

# No dashboard for tests; the scheduler looks at a new deployment within 2 s (default 5).
PREFECT_TEST_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
}


class SessionStack:
    """One stack per test session, started in a background thread (PostgreSQL, then the servers'
    processes); a fixture blocks only when it needs a server that is not ready yet."""

    def __init__(self, mlflow: bool, prefect: bool) -> None:
        from recsys.stack import Stack, free_port

        self.root = Path(tempfile.mkdtemp(prefix="recsys-test-stack-"))
        os.chmod(self.root, 0o755)  # PostgreSQL runs as the postgres user when we are root
        # One server worker: with several, uvicorn's supervisor kills a worker that misses its 5 s
        # health ping (a loaded 2-core machine) mid-request. Requests still run concurrently in
        # the worker's thread pool, so concurrent writers still meet in PostgreSQL.
        self.stack = Stack(
            self.root, postgres_port=free_port(), mlflow_port=free_port(), prefect_port=free_port(),
            durable=False, mlflow_workers=1, prefect_env=PREFECT_TEST_SERVER_ENV,
        )  # fmt: skip
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._start, args=(mlflow, prefect), daemon=True)
        self._thread.start()

    def _start(self, mlflow: bool, prefect: bool) -> None:
        try:
            self.stack.start_postgres()
            if mlflow:
                self.stack.launch_mlflow()
            if prefect:
                self.stack.launch_prefect()
            self.stack.write_state()  # what `recsys stack status --dir` reads
        except BaseException as exc:  # reported by the fixture that needs the stack
            self.error = exc

    def url(self, name: str) -> str:
        self._thread.join()
        if self.error is not None:
            pytest.fail(f"the PostgreSQL-backed stack did not start: {self.error}", pytrace=False)
        with self._lock:
            if name not in self.stack.servers:  # not foreseen at collection (e.g. a fixture's fixture)
                (self.stack.launch_mlflow if name == "mlflow" else self.stack.launch_prefect)()
                self.stack.write_state()
        from recsys.errors import RecsysError

        try:
            return self.stack.wait(name).url
        except RecsysError as exc:
            pytest.fail(str(exc), pytrace=False)

    def stop(self) -> None:
        self._thread.join()
        try:
            self.stack.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


_session_stack: SessionStack | None = None


def _stack_needs(items) -> tuple[bool, bool]:
    mlflow = prefect = False
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        mlflow |= "mlflow_server" in names or params.get("tracking_uri") == "postgres"
        prefect |= "prefect_server" in names
    return mlflow, prefect


def _get_stack(mlflow: bool = False, prefect: bool = False) -> SessionStack:
    global _session_stack
    if _session_stack is None:
        _session_stack = SessionStack(mlflow, prefect)
    return _session_stack


def pytest_collection_finish(session: pytest.Session) -> None:
    mlflow, prefect = _stack_needs(session.items)
    if mlflow or prefect:
        _get_stack(mlflow, prefect)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _session_stack is not None:
        _session_stack.stop()


@pytest.fixture(scope="session")
def mlflow_server() -> str:
    """URL of an `mlflow server` on PostgreSQL with the artifact proxy (artifacts under the
    stack's directory, reached only through the server)."""
    return _get_stack().url("mlflow")


@pytest.fixture(scope="session")
def team_stack(mlflow_server: str, prefect_server: str):
    """The session's `recsys.stack.Stack` with both servers ready (its directory, ports, logs)."""
    return _get_stack().stack


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """API URL (.../api) of a `prefect server start` on PostgreSQL, shared by the session."""
    return _get_stack().url("prefect") + "/api"
