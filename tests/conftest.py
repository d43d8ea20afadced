"""Fixtures shared by every test module. Heavy services (MLflow store, Prefect harness) are
session-scoped in their own conftest files; the team stack (PostgreSQL, an MLflow server and a
Prefect server on it) is started here, in the background, as soon as collection shows a selected
test needs it, so its ~40 s of start-up overlap the tests that run first."""

from __future__ import annotations

import functools
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run and machine (`derandomize`): a CI run is red
# only for a change, never because one run's search reached an old edge case that the last did not
# (a round-trip property failed so on one run of an unchanged tree). `HYPOTHESIS_PROFILE=explore`
# searches afresh each run, as a bug hunt, with failures kept in .hypothesis/ to replay.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# Prefect's server telemetry writes to its SQLite from a background task and logs noisy
# "database is locked" tracebacks under load; it is not part of what the tests check.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# MLflow's telemetry (3.x) writes an installation id into the user's ~/.config/mlflow/telemetry.json
# (tests/flows/test_prefect_home.py checks the home is left alone) and sends events: neither is a test's business.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Captured output is laid out at 120 columns unless COLUMNS says otherwise (`recsys.cli.common`):
# a terminal that exports COLUMNS must not change the tables the in-process CLI tests read.
os.environ.pop("COLUMNS", None)

REPO = Path(__file__).resolve().parents[1]
# The shared data folder beside the repo (never copied into it); RECSYS_SHARED_DIR points elsewhere,
# as for the benchmarks (a clone in another folder still runs the ML-100K tests).
ML100K = Path(os.environ.get("RECSYS_SHARED_DIR", REPO.parent / "shared")) / "data" / "ml-100k"


MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _heap_unfrozen():
    """An in-process `recsys run` freezes the heap its imports left (`recsys.import_gc`), as its own
    process should; in a test worker that would keep every later test's cyclic garbage among the
    frozen objects uncollected, so the heap is unfrozen after each test."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()


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
        pytest.skip("shared/data/ml-100k is not beside the repo (or set RECSYS_SHARED_DIR)")
    return ML100K


@pytest.fixture(scope="session")
def shared_mlflow_uri(request: pytest.FixtureRequest) -> str:
    """This worker's real MLflow SQLite store: a copy of the session's one migrated store (creating
    one runs ~10-20 s of migrations, started in the background at collection: see BackgroundStore)."""
    from recsys.tracking.store import check_tracking

    global _session_ui, _session_store
    if _session_store is None:  # not foreseen at collection (a fixture's fixture): migrate it now
        _session_store = BackgroundStore(_store_template(request.config))
    uri = _session_store.ready()
    check_tracking(uri)  # a migrated copy: this opens it (and raises what went wrong, if anything did)
    if _needs.get("ui") and _session_ui is None:  # start `recsys ui` on it now; the browser test comes late
        _session_ui = BackgroundUI(uri)
    return uri


# --------------------------------------------------------------------------------------------------
# The team stack: PostgreSQL + `mlflow server` on it + `prefect server start` on it (recsys.stack)

# No dashboard for tests; the scheduler looks at a new deployment within 2 s (default 5).
PREFECT_TEST_SERVER_ENV = {
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
}


STACK_PREFIX, UI_PREFIX = "recsys-test-stack-", "recsys-test-ui-"
STORE_PREFIX, HARNESS_PREFIX = "recsys-test-store-", "recsys-test-prefect-"
# The session's services keep the tests' priority. The store's migrations once ran at nice +10 (to
# take only the CPU the tests left idle), but gw0 starts its pinned group at once (WARM_UP_TESTS), and
# that group's first test needs the store: niced, the migrations got little CPU on a busy machine and
# gw0 waited ~80-100 s (load ~10) for them at the head of the session's longest chain of work. Servers
# the tests talk to (the Prefect harness's, Spark's JVM) keep it too: niced, they slowed the flow and
# Spark tests whenever the machine was busy.
STACK_SKIP = "no PostgreSQL-backed MLflow / Prefect server on this machine (`make test` installs them)"
SCENARIO = Path(__file__).parent / "flows" / "scheduled_scenario.py"
PREFECT_STORAGE = "prefect-storage"  # the session's Prefect result storage, in its pytest temp folder
PREFECT_HOME = "prefect-home"  # the session's Prefect home ($PREFECT_HOME), in its pytest temp folder
SCENARIO_TIMEOUT_S = 600


class SessionStack:
    """One stack per test session, started in a background thread (PostgreSQL, then the servers'
    processes); a fixture blocks only when it needs a server that is not ready yet. When the
    scheduled-deployment test is selected, its scenario (tests/flows/scheduled_scenario.py) starts
    in the background as soon as both servers answer, and that test runs last."""

    def __init__(self, mlflow: bool, prefect: bool, scheduled: bool = False) -> None:
        from recsys.stack import Stack, claim, free_port

        self.root = Path(tempfile.mkdtemp(prefix=STACK_PREFIX))
        os.chmod(self.root, 0o755)  # PostgreSQL runs as the postgres user when we are root
        claim(self.root)  # a session killed with -9 leaves it to the next one to stop (reap_orphans)
        # One server worker: with several, uvicorn's supervisor kills a worker that misses its 5 s
        # health ping (a loaded 2-core machine) mid-request. Requests still run concurrently in
        # the worker's thread pool, so concurrent writers still meet in PostgreSQL.
        self.stack = Stack(
            self.root, postgres_port=free_port(), mlflow_port=free_port(), prefect_port=free_port(),
            durable=False, mlflow_workers=1, prefect_env=PREFECT_TEST_SERVER_ENV,
        )  # fmt: skip
        self.error: BaseException | None = None
        self.scenario: subprocess.Popen | None = None
        self.scenario_dir = self.root / "scheduled"
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._start, args=(mlflow, prefect), daemon=True)
        self._thread.start()
        self._scenario_thread = threading.Thread(target=self._start_scenario, daemon=True)
        if scheduled:
            self._scenario_thread.start()

    def _start(self, mlflow: bool, prefect: bool) -> None:
        try:
            self.stack.start_postgres()
            for name, wanted in (("mlflow", mlflow), ("prefect", prefect)):
                if wanted:
                    (self.stack.launch_mlflow if name == "mlflow" else self.stack.launch_prefect)()
                    self.stack.write_state()  # its pid, for `recsys stack status --dir` and reap_orphans
        except BaseException as exc:  # reported by the fixture that needs the stack
            self.error = exc

    def _start_scenario(self) -> None:
        try:
            mlflow, prefect = self.url("mlflow", fail=False), self.url("prefect", fail=False)
        except Exception:
            return  # the fixtures report why the servers did not start
        self.scenario_dir.mkdir()
        temp = self.scenario_dir / "tmp"  # the schedule's scratch ($TMPDIR/recsys-schedule-<pid>-*), which a
        temp.mkdir()  # scenario killed on its timeout leaves: under the session's folder, not the machine's /tmp
        with open(self.scenario_dir / "scenario.log", "w") as out:
            self.scenario = subprocess.Popen(
                [sys.executable, str(SCENARIO), prefect + "/api", mlflow, str(self.scenario_dir)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "TMPDIR": str(temp)},
            )  # fmt: skip

    def url(self, name: str, fail: bool = True) -> str:
        from recsys.errors import RecsysError
        from recsys.stack import StackUnavailable

        self._thread.join()
        if isinstance(self.error, StackUnavailable) and fail:  # the machine lacks it: say so, once per test
            pytest.skip(f"{STACK_SKIP}: {self.error}")
        try:
            if self.error is not None:
                raise RecsysError(f"the PostgreSQL-backed stack did not start: {self.error}")
            with self._lock:
                if name not in self.stack.servers:  # not foreseen at collection (a fixture's fixture)
                    (self.stack.launch_mlflow if name == "mlflow" else self.stack.launch_prefect)()
                    self.stack.write_state()
            return self.stack.wait(name).url
        except RecsysError as exc:
            if not fail:
                raise
            pytest.fail(str(exc), pytrace=False)

    def scheduled(self) -> tuple[dict, str]:
        """The scenario's result.json and the served deployment's log, once the scenario ended."""
        if not self._scenario_thread.is_alive() and self.scenario is None:
            self._start_scenario()  # not foreseen at collection: run it now
        if self._scenario_thread.ident is not None:  # started at collection
            self._scenario_thread.join()
        if self.scenario is None:
            self.url("mlflow"), self.url("prefect")  # fails with the reason the servers did not start
        try:
            self.scenario.wait(timeout=SCENARIO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.scenario.pid, signal.SIGKILL)
            self.scenario.wait()
        result_file, log = self.scenario_dir / "result.json", self.scenario_dir / "schedule.log"
        if result_file.is_file():
            result = json.loads(result_file.read_text())
        else:
            scenario_log = (self.scenario_dir / "scenario.log").read_text()[-3000:]
            result = {"error": f"the scenario ended ({self.scenario.returncode}) without a result:\n{scenario_log}"}
        return result, log.read_text() if log.is_file() else ""

    def stop(self) -> None:
        self._thread.join()
        if self.scenario is not None and self.scenario.poll() is None:
            os.killpg(self.scenario.pid, signal.SIGKILL)
            self.scenario.wait()
        try:
            self.stack.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class BackgroundUI:
    """`recsys ui` on the session's SQLite store, started as soon as the store exists, so the
    browser test (late in the session) finds it up."""

    def __init__(self, uri: str) -> None:
        from recsys.stack import Server, Stack, claim, free_port

        port, self.root = free_port(), Path(tempfile.mkdtemp(prefix=UI_PREFIX))
        claim(self.root)
        command = [str(Path(sys.executable).parent / "recsys"), "ui", "--port", str(port),
                   "--set", f"tracking.tracking_uri={uri}"]  # fmt: skip
        log = self.root / "ui.log"
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                command, cwd=self.root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "COLUMNS": "400"},
            )  # fmt: skip
        self.base = f"http://127.0.0.1:{port}"
        self.server = Server("recsys ui", self.process.pid, self.base, f"{self.base}/health", str(log), "recsys")
        record = Stack(self.root, mlflow_port=port)  # its state file: what reap_orphans stops
        record.servers["recsys ui"] = self.server
        record.write_state()

    def url(self) -> str:
        from recsys.errors import RecsysError

        try:
            self.server.wait_ready(process=self.process)
        except RecsysError as exc:
            pytest.fail(str(exc), pytrace=False)
        return self.base

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class BackgroundStore:
    """The session's MLflow SQLite store, migrated once per session by a process of its own started
    at collection (its ~10-20 s of migrations overlap the tests that run before the first one that
    needs it), into a template folder every worker sees (`_store_template`). Each worker's store is a
    copy of the template (milliseconds), so a test that needs only the store runs on either worker:
    the first worker whose `mkdir` of the folder succeeds migrates, the other waits for its marker."""

    CODE = """if True:
        import sys, traceback
        from pathlib import Path
        from recsys.tracking.store import check_tracking
        try:
            check_tracking(sys.argv[1])
        except BaseException:
            Path(sys.argv[2], "failed").write_text(traceback.format_exc())
            raise
        Path(sys.argv[2], "migrated").touch()
    """

    def __init__(self, template: Path) -> None:
        self.template, self.db = template, template / "mlflow.db"
        self.root: Path | None = None  # this worker's copy, made by `ready`
        self.process: subprocess.Popen | None = None
        try:
            template.mkdir()
        except FileExistsError:  # another worker migrates it
            return
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.CODE, f"sqlite:///{self.db}", str(template)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def ready(self) -> str:
        """The URI of this worker's copy of the template once migrated; where the migration failed,
        of an empty store, which the fixture's own check_tracking migrates in the test process,
        raising what went wrong there with its message."""
        import sqlite3

        from recsys.stack import claim

        if self.root is None:
            if self.process is not None:
                self.process.wait(timeout=600)  # it left its marker, or was killed before it could
            deadline = time.monotonic() + 600
            while self.process is None and time.monotonic() < deadline:
                if any((self.template / marker).exists() for marker in ("migrated", "failed")):
                    break
                time.sleep(0.1)
            self.root = Path(tempfile.mkdtemp(prefix=STORE_PREFIX))
            claim(self.root)  # a session killed with -9 leaves it to the next one to delete (reap_orphans)
            if (self.template / "migrated").exists():
                with sqlite3.connect(self.db) as src, sqlite3.connect(self.root / "mlflow.db") as dst:
                    src.backup(dst)
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
            (self.template / "failed").write_text("its session ended first")  # the other worker migrates its own
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


class BackgroundPrefect:
    """The Prefect test harness's server, started at collection: the same `SubprocessASGIServer`
    process Prefect's `prefect_test_harness` starts (on a fresh SQLite database of its own), so its
    ~10-20 s start overlaps the tests that run first. The harness fixture (tests/flows/conftest.py)
    adopts it once it answers, and stops it as before."""

    def __init__(self) -> None:
        from prefect.server.api.server import SubprocessASGIServer
        from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL, temporary_settings
        from prefect.testing.utilities import _find_available_port

        from recsys.stack import claim

        self.root = Path(tempfile.mkdtemp(prefix=HARNESS_PREFIX))
        claim(self.root)  # the next session deletes it if this one is killed (`recsys run` stops the server)
        self.server = SubprocessASGIServer(port=_find_available_port())
        database = f"sqlite+aiosqlite:///{self.root / 'prefect-test.db'}"
        with temporary_settings(updates={PREFECT_SERVER_DATABASE_CONNECTION_URL: database}):
            self.server.server_process = self.server._run_uvicorn_command()
        self.server.running = True  # what its start() sets: the harness's start() then launches nothing
        self.migrated: Path | None = None

    def port(self, timeout: float) -> int | None:
        """Its port once it answers; None (and it is stopped) if it died or never answered: the
        harness then starts a server as it always did."""
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client() as client:
            while time.monotonic() < deadline and self.server.server_process is not None:
                if self.server.server_process.poll() is not None:
                    break
                try:
                    if client.get(f"{self.server.api_url}/health").status_code == 200:
                        self._keep_migrated_copy()
                        return self.server.port
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        self.stop()
        return None

    def _keep_migrated_copy(self) -> None:
        """A copy of its database as it answers: migrated (the server migrates before it answers),
        with no runs yet; see `migrated_prefect_database`."""
        import sqlite3

        if self.migrated is None:
            copy = self.root / "migrated.db"
            src, dst = sqlite3.connect(self.root / "prefect-test.db"), sqlite3.connect(copy)
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
            self.migrated = copy

    def stop(self) -> None:
        if self.server.server_process is not None:  # not adopted (or not stopped) by the harness
            self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


_session_stack: SessionStack | None = None
_session_ui: BackgroundUI | None = None
_session_store: BackgroundStore | None = None
_session_prefect: BackgroundPrefect | None = None
_needs: dict[str, bool] = {}


def _session_needs(items) -> dict[str, bool]:
    needs = dict.fromkeys(("mlflow", "prefect", "scheduled", "ui", "store", "harness"), False)
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        needs["store"] |= "shared_mlflow_uri" in names or params.get("tracking_uri") == "sqlite"
        needs["harness"] |= "prefect_harness" in names
        needs["mlflow"] |= bool({"mlflow_server", "scheduled_runs"} & names) or params.get("tracking_uri") == "postgres"
        needs["prefect"] |= bool({"prefect_server", "scheduled_runs"} & names)
        needs["scheduled"] |= "scheduled_runs" in names
        needs["ui"] |= _wants_ui(names, params)
    return needs


def _wants_ui(names: set[str], params: dict) -> bool:
    """Whether the test needs `recsys ui` on the SQLite store: tracking_ui (tests/tracking/conftest.py)
    asks for it on that store only."""
    return "recsys_ui_process" in names or ("tracking_ui" in names and params.get("tracking_uri") == "sqlite")


def _get_stack() -> SessionStack:
    global _session_stack
    if _session_stack is None:
        _session_stack = SessionStack(_needs.get("mlflow", False), _needs.get("prefect", False),
                                      _needs.get("scheduled", False))  # fmt: skip
    return _session_stack


# --------------------------------------------------------------------------------------------------
# Two pytest-xdist workers (`-n 2 --dist loadgroup` in pyproject.toml's addopts): each session service
# is started by one worker only. The tests that need the PostgreSQL stack, the DDP ranks or Spark's JVM
# (the last two start in the background as the session starts) form one group, run by gw1; those that
# need the Prefect harness or `recsys ui` on the SQLite store form another, run by gw0; every other
# test goes to whichever worker is free (`PinnedGroups`). A worker starts at collection only what its
# own group needs, and a module's `start_in_background` runs on the worker its pinned tests go to (a
# test pinned by none of the fixtures below is not the module's to start anything for).
# The SQLite store alone pins nothing: the session migrates it once and each worker copies it
# (`BackgroundStore`), so the ~145 tests that need only the store (the SQLite half of tests/tracking,
# ~130 s on a loaded machine) fill in on whichever worker is free. Pinned to gw0 with the flows, they
# made gw0 end ~155 s after gw1 (636 s against 480 s, load ~4). Spark is with the stack because
# gw0's group is the longer one (the flows, ~460 s loaded): with Spark there, gw0 ended last, ~2
# minutes after gw1. The workers tell the scheduler the groups through a file (GROUPS_KEY): xdist's
# own `xdist_group` marks become a node id suffix that pytest 9's node ids no longer take.

PINNED = {"gw0": "services-0", "gw1": "services-1"}
# A worker's first tests need no service: they run while its services start. gw1's stack takes
# ~40-60 s to answer, so it warms up on 100 such tests. gw0 starts its group at once: that group (the
# flows) is the longest piece of work the scheduler cannot split, so every warm-up test there only
# made gw0 end later (with 100: gw1 idle for the last 84 s of a loaded 855 s run, gw0's warm-up having
# drawn tests/data/test_crash_safety's subprocess tests). Its first test waits for the Prefect server
# (and the store), whose start-up takes the CPU meanwhile.
WARM_UP_TESTS = {"gw0": 0, "gw1": 100}
GROUPS_KEY = "recsys_test_groups"  # workerinput key: the file the workers write {nodeid: group} to
STORE_KEY, STORE_TEMPLATE = "recsys_test_store", "mlflow-store"  # workerinput key: the migrated store's folder
# one_spark_session: tests/models/test_wals_spark.py's autouse fixture, i.e. every test there
STACK_FIXTURES = {"mlflow_server", "mlflow_database", "prefect_server", "team_stack", "scheduled_runs", "two_ranks",
                  "one_spark_session"}  # fmt: skip
LOCAL_FIXTURES = {"prefect_harness", "early_prefect_port", "migrated_prefect_database"}
# (tracking_uri's postgres parameter is in the stack group too; its sqlite one, and shared_mlflow_uri,
# pin nothing: each worker has a copy of the session's migrated store; `_wants_ui` is the local group's)


def _service_groups(item) -> set[str]:
    """The pinned groups whose services the test needs: none (any worker can run it) or one; two is
    refused at collection (`_refuse_tests_needing_both_groups`)."""
    names = set(getattr(item, "fixturenames", ()))
    params = getattr(getattr(item, "callspec", None), "params", {})
    groups = set()
    if names & STACK_FIXTURES or params.get("tracking_uri") == "postgres":
        groups.add(PINNED["gw1"])
    if names & LOCAL_FIXTURES or _wants_ui(names, params):
        groups.add(PINNED["gw0"])
    return groups


def _service_group(item) -> str | None:
    """The pinned group of a test that needs a session service (None: any worker can run it)."""
    groups = _service_groups(item)
    return PINNED["gw1"] if PINNED["gw1"] in groups else next(iter(groups), None)


# Modules whose tests share a server that their module (or the session, per store) starts in each
# worker that runs one of them: test_server.py's `served` (`recsys serve`) and test_serve.py's
# `mlflow_models_serve` (`mlflow models serve`), ~4-11 s a start. Their SQLite-store tests pin
# nothing, so they were spread over both workers and each worker started the server: two starts of
# each in the measured runs. They go to one worker together, a scope of their own (`_scope`).
SHARED_SERVER_MODULES = ("tracking/test_server.py", "tracking/test_serve.py")


def _scope(item) -> str | None:
    """The scheduling scope of a test: its pinned group, else its module's for the tests of
    SHARED_SERVER_MODULES, else None (a scope of its own, for whichever worker is free)."""
    group = _service_group(item)
    path = item.nodeid.split("::", 1)[0]
    if group is None and path.endswith(SHARED_SERVER_MODULES):
        return f"module:{path}"
    return group


def _refuse_tests_needing_both_groups(items: list) -> None:
    """A test that needs the services of both groups makes the worker that runs it start the other
    group's too (a second `recsys ui` or Prefect server, ~20-40 s, on the stack's worker, where one
    test needed the stack's MLflow server and `recsys ui` at once): split it, one test per group.
    (The SQLite store alone is no such service: every worker has its copy.)"""
    both = [item.nodeid for item in items if len(_service_groups(item)) > 1]
    if both:
        raise pytest.UsageError(
            f"{len(both)} test(s) need both the PostgreSQL stack's services and the Prefect harness or "
            "`recsys ui` on the SQLite store, which two different xdist workers start (tests/conftest.py, "
            f"STACK_FIXTURES / LOCAL_FIXTURES / _wants_ui): split each into one test per group: {', '.join(both[:10])}"
        )


def _owned_groups(config: pytest.Config) -> set[str] | None:
    """The groups this xdist worker runs (a worker's own, and those of workers not started); None
    when the session is not distributed."""
    worker = getattr(config, "workerinput", None)
    if worker is None or not config.getvalue("loadgroup"):
        return None
    count = int(worker.get("workercount", 1))
    return {group for name, group in PINNED.items() if name == worker["workerid"] or int(name[2:]) >= count}


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """The scheduled-deployment check goes last: its scenario runs in the background meanwhile."""
    items.sort(key=lambda item: "scheduled_runs" in getattr(item, "fixturenames", ()))
    _refuse_tests_needing_both_groups(items)
    _write_groups(config, items)


def _write_groups(config: pytest.Config, items: list) -> None:
    """In an xdist worker: {nodeid: scope} of the collected tests (`_scope`: a pinned group, or a
    module's), for the scheduler (every worker writes the same; each to a temp file it renames)."""
    worker = getattr(config, "workerinput", None)
    if worker is None or GROUPS_KEY not in worker:
        return
    path = Path(worker[GROUPS_KEY])
    groups = {item.nodeid: group for item in items if (group := _scope(item))}
    temp = path.with_name(f"{path.name}.{worker['workerid']}.tmp")
    temp.write_text(json.dumps(groups))
    os.replace(temp, path)


@pytest.hookimpl(optionalhook=True)  # xdist's hooks: unknown where xdist is not installed
def pytest_configure_node(node) -> None:
    """Where the worker writes its tests' groups, and where the session's store is migrated (one
    of each per session, in the session's temp, which every worker's own temp is in)."""
    folder = Path(node.config._tmp_path_factory.getbasetemp())
    node.workerinput[STORE_KEY] = str(folder / STORE_TEMPLATE)
    if node.config.getvalue("dist") == "loadgroup":
        node.workerinput[GROUPS_KEY] = str(folder / "xdist-groups.json")


def _store_template(config: pytest.Config) -> Path:
    """The folder the session's one SQLite store is migrated in (`BackgroundStore`): the session's
    (every worker's), or this process's when it is not distributed."""
    shared = getattr(config, "workerinput", {}).get(STORE_KEY)
    return Path(shared) if shared else Path(config._tmp_path_factory.getbasetemp()) / STORE_TEMPLATE


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown where xdist is not installed
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") == "loadgroup":
        return _pinned_groups_scheduler(config, log)
    return None


def _pinned_groups_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class PinnedGroups(LoadScopeScheduling):
        """loadscope with the workers' groups (and SHARED_SERVER_MODULES' modules) as scopes (every
        other test a scope of its own); a group of PINNED goes to its worker while that worker runs,
        right after its WARM_UP_TESTS."""

        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # every worker wrote it before it sent its collection
                folder = Path(config._tmp_path_factory.getbasetemp())
                self.groups = json.loads((folder / "xdist-groups.json").read_text())
            return self.groups.get(nodeid, nodeid)

        def _assign_work_unit(self, node) -> None:
            if not self.workqueue:  # a small selection: the other worker's warm-up took it all
                return
            live = {n.gateway.id for n in self.nodes}
            mine = PINNED.get(node.gateway.id)
            others = {group for name, group in PINNED.items() if name in live and name != node.gateway.id}
            if mine in self.workqueue:
                if not self.assigned_work.get(node):  # its first work: tests that need no service
                    for scope in [s for s in self.workqueue if s not in PINNED.values()][: WARM_UP_TESTS[node.gateway.id]]:
                        self._send(node, scope)
                self._send(node, mine)
            else:
                self._send(node, next((s for s in self.workqueue if s not in others), next(iter(self.workqueue))))

        def _send(self, node, scope: str) -> None:
            work_unit = self.workqueue.pop(scope)
            self.assigned_work.setdefault(node, {})[scope] = work_unit
            collection = self.registered_collections[node]
            node.send_runtest_some([collection.index(nodeid) for nodeid, done in work_unit.items() if not done])

    return PinnedGroups(config, log)


def pytest_configure(config: pytest.Config) -> None:
    from checkout_guard import register  # tests/ is on sys.path: this conftest's folder

    register(config)


def pytest_sessionstart(session: pytest.Session) -> None:
    # Dask's LocalCluster keeps lock files in <temp>/dask-scratch-space and leaves the folder; the
    # dask-runner tests (in process, and `recsys run` subprocesses, which inherit this) keep it
    # under the session's folder instead of the machine's /tmp.
    basetemp = Path(session.config._tmp_path_factory.getbasetemp())
    os.environ["DASK_TEMPORARY_DIRECTORY"] = str(basetemp / "dask")
    # Prefect persists task results (the ingest result, `flows.pipeline.ingest_task`) in its local
    # storage, $PREFECT_HOME/storage unless PREFECT_LOCAL_STORAGE_PATH says otherwise: the harness's
    # flows and `recsys run` subprocesses left their pickles in the user's ~/.prefect/storage (444
    # files on one machine). They go to the session's folder: Prefect reads it when imported (after
    # this hook: by the test modules), and every subprocess inherits it, PREFECT_HOME or not.
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(basetemp / PREFECT_STORAGE)
    # The rest of Prefect's home (~/.prefect unless PREFECT_HOME says otherwise) too: the harness's
    # server wrote its block-registration memo (server.memo_store_path, $PREFECT_HOME/memo_store.toml)
    # there, and a temporary server of a run its database; tests/flows/test_prefect_home.py checks.
    os.environ["PREFECT_HOME"] = str(basetemp / PREFECT_HOME)
    assert "prefect" not in sys.modules, "Prefect was imported before its result storage was set"
    if "dask" in sys.modules:  # read from the environment when dask.config is imported
        import dask.config

        dask.config.refresh()


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:  # nothing will run: start nothing
        return
    from recsys.stack import reap_orphans

    for prefix in (STACK_PREFIX, UI_PREFIX, STORE_PREFIX, HARNESS_PREFIX):  # left by a session killed with -9
        reap_orphans(Path(tempfile.gettempdir()), prefix)
    owned = _owned_groups(session.config)  # an xdist worker starts only its own groups' services
    items = session.items if owned is None else [item for item in session.items if _service_group(item) in owned]
    # and the store for the unpinned tests too (the only service one may need), which either runs
    unpinned = [] if owned is None else [item for item in session.items if _service_group(item) is None]
    _needs.update(_session_needs(items + unpinned))
    if _needs["mlflow"] or _needs["prefect"]:
        _get_stack()
    _start_background_services(session.config, items)


def _start_background_services(config: pytest.Config, items: list) -> None:
    """The session's SQLite store and Prefect harness server start now, in processes of their own,
    when a selected test needs them (tests/data and tests/evaluation run meanwhile); what a selected
    test module starts in `start_in_background(items)` (its selected tests; e.g. the JVM of its Spark
    session) starts with the first test (pytest_runtest_setup)."""
    global _session_store, _session_prefect
    if _needs["store"] and _session_store is None:
        _session_store = BackgroundStore(_store_template(config))
    if _needs["harness"] and _session_prefect is None:
        try:
            _session_prefect = BackgroundPrefect()
        except Exception:  # it reuses Prefect internals; where they moved, the harness starts its own
            _session_prefect = None
    by_module: dict[int, tuple[object, list]] = {}
    for item in items:
        module = getattr(item, "module", None)
        if module is not None:
            by_module.setdefault(id(module), (module, []))[1].append(item)
    for module, selected in by_module.values():
        start = getattr(module, "start_in_background", None)
        if callable(start):
            _module_starts.append(functools.partial(start, selected))


_module_starts: list[Callable[[], None]] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    """The modules' `start_in_background` run as the first test starts, i.e. under pytest's output
    capture: what they launch inherits it (Spark's JVM logs to stderr for its whole life), so its
    lines land in the tests' captured output instead of between the progress dots."""
    while _module_starts:
        _module_starts.pop(0)()


def pytest_sessionfinish(session: pytest.Session) -> None:
    for part in (_session_ui, _session_stack, _session_prefect, _session_store):
        if part is not None:
            part.stop()


@pytest.fixture(scope="session")
def early_prefect_port() -> int | None:
    """The port of the Prefect server started at collection once it answers (None: not started, or
    it failed; the harness starts its own then)."""
    return _session_prefect.port(timeout=120) if _session_prefect is not None else None


@pytest.fixture(scope="session")
def migrated_prefect_database(early_prefect_port: int | None) -> Path | None:
    """A Prefect server database (SQLite) already migrated and without runs: copied into a Prefect
    home, `recsys run`'s temporary server starts there as on any run after a user's first, without
    ~4 s of CPU in migrations. None where the harness's server was not started at collection."""
    return _session_prefect.migrated if early_prefect_port is not None and _session_prefect else None


@pytest.fixture(scope="session")
def mlflow_server() -> str:
    """URL of an `mlflow server` on PostgreSQL with the artifact proxy (artifacts under the
    stack's directory, reached only through the server)."""
    return _get_stack().url("mlflow")


@pytest.fixture(scope="session")
def mlflow_database(mlflow_server: str) -> str:
    """The database the session's MLflow server stores in, as a tracking URI a client opens
    directly (`postgresql://recsys:PASSWORD@127.0.0.1:PORT/mlflow`: it carries the password)."""
    return _get_stack().stack.postgres.url("mlflow")


@pytest.fixture(scope="session")
def team_stack(mlflow_server: str, prefect_server: str):
    """The session's `recsys.stack.Stack` with both servers ready (its directory, ports, logs)."""
    return _get_stack().stack


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """API URL (.../api) of a `prefect server start` on PostgreSQL, shared by the session."""
    return _get_stack().url("prefect") + "/api"


@pytest.fixture(scope="session")
def scheduled_runs() -> tuple[dict, str]:
    """(result, log) of tests/flows/scheduled_scenario.py run against the session's servers."""
    return _get_stack().scheduled()


@pytest.fixture(scope="session")
def recsys_ui_process(shared_mlflow_uri: str) -> BackgroundUI:
    """`recsys ui` serving the session's SQLite store (its process, log and URL), once it answers."""
    global _session_ui
    if _session_ui is None:
        _session_ui = BackgroundUI(shared_mlflow_uri)
    _session_ui.url()
    return _session_ui


@pytest.fixture(scope="session")
def recsys_ui(recsys_ui_process: BackgroundUI) -> str:
    """Base URL of `recsys ui` serving the session's SQLite store."""
    return recsys_ui_process.base


def _store_of(nodeid: str) -> str | None:
    """`sqlite` / `postgres` when the test's parameters include that tracking store."""
    if not nodeid.endswith("]"):
        return None
    params = nodeid[nodeid.rindex("[") + 1 : -1].split("-")
    return next((store for store in ("sqlite", "postgres") if store in params), None)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """How many tests ran on each tracking store: the PostgreSQL-backed server must not be skipped
    unnoticed (a machine without PostgreSQL skips its tests, with the reason, rather than failing)."""
    outcomes: dict[str, dict[str, str]] = {"sqlite": {}, "postgres": {}}
    for outcome in ("passed", "skipped", "xfailed", "xpassed", "failed", "error"):  # worst last: it wins
        for report in terminalreporter.stats.get(outcome, []):
            store = _store_of(getattr(report, "nodeid", ""))
            if store is not None:
                outcomes[store][report.nodeid] = outcome
    if not any(outcomes.values()):
        return
    terminalreporter.write_sep("-", "tracking tests per store")
    for store, by_test in outcomes.items():
        counts = {o: list(by_test.values()).count(o) for o in dict.fromkeys(by_test.values())}
        summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "none selected"
        terminalreporter.write_line(f"{store:9} {summary}")
