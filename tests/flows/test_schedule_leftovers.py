"""What `recsys schedule` leaves behind when it stops or is killed (flows.runner).

* Ctrl-C left Prefect's runner storage, `$TMPDIR/runner_storage/<uuid>/`, once per stop.
* A flow run the schedule had moved to Pending whose process died (a Ctrl-C while that process
  started, the schedule killed with -9) stayed Pending and held the deployment's concurrency slot:
  with `--overlap skip` every later run was cancelled, also after a restart, for ever on Prefect's
  temporary server. A stop closes its own such runs; a start closes those of killed schedules,
  never those of a schedule that still runs.
* A Ctrl-C or SIGTERM while the runner started (or a Ctrl-C more during the stop) left the
  deployment unpaused: the server scheduled runs that nothing ran. A stop at any moment once the
  deployment exists pauses it now, or says how to; a Ctrl-C more is held (`flows.stopping`).

One real runner (Prefect's, in this process, on the session's harness server) is served and stopped
by a Ctrl-C once it runs; the runs it must close are made through the API, as its own would be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from stopped import recsys_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="signals to this process")

YEARLY = "0 3 1 1 *"  # a real schedule, never due while the test runs


def _pending_run(client, deployment_id):
    """A run of the deployment moved to Pending: it holds the deployment's concurrency slot."""
    from prefect.states import Pending

    run = client.create_flow_run_from_deployment(deployment_id)
    assert client.set_flow_run_state(run.id, Pending()).state.type.value == "PENDING"
    return run.id


@contextmanager
def interrupted_by(stopper: threading.Thread) -> Iterator[None]:
    """Run the block while `stopper` (a thread or timer that ends in a SIGINT to this process) runs,
    with Python's default SIGINT handler (Ctrl-C raises KeyboardInterrupt, as in a terminal); then
    cancel a timer that has not fired, wait for the thread, and put both signal handlers back (the
    schedule's runner installs its own)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler), signal.getsignal(signal.SIGTERM)
    stopper.start()
    try:
        yield
    finally:
        if isinstance(stopper, threading.Timer):
            stopper.cancel()
        stopper.join(30)
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def _note(directory: Path, run_id) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "flow-runs").write_text(f"{run_id}\n")


def test_a_stopped_schedule_leaves_no_runner_storage_and_frees_the_slots_of_its_runs(
    prefect_harness, tmp_path, monkeypatch
):
    from prefect import get_client

    from flows.deployments import pipeline_deployment, serve_pipeline

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # $TMPDIR of the schedule
    name = f"leftovers-{uuid.uuid4().hex[:6]}"
    deployment_id = pipeline_deployment(name=name, cron=YEARLY).apply()
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])  # a schedule killed with -9: its pid is gone
    dead_pid.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a concurrent schedule
    try:
        with get_client(sync_client=True) as client:
            killed_run = _pending_run(client, deployment_id)  # of a schedule killed with -9
        _note(tmp_path / f"recsys-schedule-{dead_pid.pid}-x1", killed_run)
        _note(tmp_path / f"recsys-schedule-{alive.pid}-x2", uuid.uuid4())  # never read: its owner runs
        lines: list[str] = []
        own_run: list[uuid.UUID] = []

        def ctrl_c_once_serving() -> None:
            """Once the runner made its storage directory (inside its event loop): a run of ours
            that is starting (noted as the runner notes it), then Ctrl-C, whatever happened."""
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not any(
                    p.name == "runner-storage" or p.parent.name == "runner_storage" for p in tmp_path.rglob("*")
                ):
                    time.sleep(0.05)
                with get_client(sync_client=True) as client:  # free once the killed schedule's run is closed
                    own_run.append(_pending_run(client, deployment_id))
                for scratch in tmp_path.glob(f"recsys-schedule-{os.getpid()}-*"):
                    _note(scratch, own_run[0])
            finally:
                os.kill(os.getpid(), signal.SIGINT)

        with interrupted_by(threading.Thread(target=ctrl_c_once_serving, daemon=True)):
            serve_pipeline(say=lines.append, name=name, cron=YEARLY)
        # nothing of this schedule's is left in $TMPDIR; the live schedule's directory is kept
        assert sorted(p.name for p in tmp_path.iterdir()) == [f"recsys-schedule-{alive.pid}-x2"], lines
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(killed_run).state.type.value == "CRASHED"
            assert own_run and client.read_flow_run(own_run[0]).state.type.value == "CRASHED"
            _pending_run(client, deployment_id)  # the slot is free: a new run goes Pending, not Cancelled
        assert any("flow run(s) of killed schedules Crashed" in line and str(killed_run) in line for line in lines)
        assert any("unfinished flow run(s) of this schedule Crashed" in line for line in lines), lines
    finally:
        alive.kill()
        alive.wait()


def test_a_second_schedule_of_a_served_deployment_is_refused(prefect_harness, tmp_path, monkeypatch):
    """Two `recsys schedule` of one deployment on one Prefect served it side by side until one
    stopped: its runner paused the deployment, the other's too, whose scheduled runs were gone and
    which never ran again. The second is refused now, naming the first's pid; another name, another
    Prefect or a first that has ended is no reason. The first is a live process whose scratch
    directory says what it serves, as a running schedule's does."""
    from prefect.settings import PREFECT_API_URL

    from flows.deployments import serve_pipeline
    from flows.runner import SERVES_FILE, deployment_key
    from recsys.errors import RecsysError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    name = f"twin-{uuid.uuid4().hex[:6]}"
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        served = tmp_path / f"recsys-schedule-{first.pid}-x1"
        served.mkdir()
        (served / SERVES_FILE).write_text(deployment_key(f"training-pipeline/{name}", PREFECT_API_URL.value()) + "\n")
        other = tmp_path / f"recsys-schedule-{first.pid}-x2"  # the same deployment on another Prefect
        other.mkdir()
        (other / SERVES_FILE).write_text(deployment_key(f"training-pipeline/{name}", "http://elsewhere:4200/api") + "\n")
        stop = threading.Timer(30, os.kill, (os.getpid(), signal.SIGINT))  # a schedule that serves: stopped
        with interrupted_by(stop), pytest.raises(
            RecsysError,
            match=rf"training-pipeline/{name} is served already by `recsys schedule` \(pid {first.pid}\).*`kill {first.pid}`",
        ):
            serve_pipeline(say=print, name=name, cron=YEARLY)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([served.name, other.name])  # nothing started
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_sigterm_while_a_schedule_starts_unwinds_it(prefect_harness, tmp_path):
    """SIGTERM is a scheduler's stop. `recsys schedule` gave it back to the default handler at its
    start, for Prefect's runner to take over, but the runner starts seconds later (after Prefect's
    temporary server): a SIGTERM in between killed the schedule where it stood, its temporary
    server serving on, orphaned, and its scratch directory left. Now it unwinds as every command
    does (exit 143, one line, nothing left) until the runner takes SIGTERM over. The schedule is
    frozen (RECSYS_STOP_AT) right before its runner starts, SIGTERMed and let go on."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "TMPDIR": str(tmp_path), "PREFECT_API_URL": PREFECT_API_URL.value(),
           "RECSYS_STOP_AT": "schedule.serving", "COLUMNS": "300"}  # fmt: skip
    name = f"sigterm-{uuid.uuid4().hex[:6]}"
    schedule = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "schedule", "--cron", YEARLY, "--name", name],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _state(schedule.pid) != "T":
            assert schedule.poll() is None and time.monotonic() < deadline, schedule.communicate()[0]
            time.sleep(0.05)
        schedule.send_signal(signal.SIGTERM)
        schedule.send_signal(signal.SIGCONT)
        output = schedule.communicate(timeout=60)[0]
    finally:
        if schedule.poll() is None:
            schedule.kill()
            schedule.wait()
    assert schedule.returncode == 143, output
    assert output.strip().splitlines()[-1] == "terminated (SIGTERM)", output
    assert list(tmp_path.iterdir()) == [], output


def _state(pid: int) -> str:
    """A process's state letter from /proc (T: stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""



def test_a_schedule_stops_when_its_temporary_server_ends(tmp_path, monkeypatch):
    """`recsys schedule` without PREFECT_API_URL serves on a temporary Prefect server of its own.
    When that server ended (the OOM killer, a kill) the schedule served on without an API, silently,
    and its stop then spent over a minute on retries to pause the deployment and ended with
    "unexpected ConnectError ...: this is a bug", exit 1. Its watch now stops it as SIGTERM does
    (the runner's graceful stop) and says how the server ended, which serve_pipeline raises as one
    line. The server here is a process killed with -9 (a schedule's end to end: ~25 s, checked by hand)."""
    import flows.api_loss
    from flows.deployments import stop_when_server_ends

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # no runs of this schedule's to stop
    monkeypatch.setattr(flows.api_loss, "give_up_on_api", lambda: None)  # for the process: not this session's

    class Server:  # what the watch reads of Prefect's SubprocessASGIServer
        api_url = "http://127.0.0.1:9/api"
        server_process = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])

    Server.server_process.wait()
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    lost: list[str] = []
    try:
        stop_when_server_ends(Server(), threading.Event(), lost, every=0.01)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]
    assert lost == ["Prefect's temporary server http://127.0.0.1:9/api, started by this schedule, ended (exit code -9) "
                    "while it served"]  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc (Linux)")
def test_a_schedule_whose_temporary_server_ends_stops_the_process_of_its_run(tmp_path, monkeypatch):
    """With a run executing when the schedule's temporary server ended, the runner's stop waited for
    the run's process, which trained on and failed every report to the dead server with client
    retries: measured, the schedule's error line came ~7 min after the server's end, after 743 log
    lines and 19 tracebacks. The watch now stops the processes of the schedule's own runs (SIGTERM,
    SIGKILL after a grace), never another schedule's, and gives up on the API (no more retries)
    before it stops the schedule. The run's process is a real flow-run process frozen where it
    starts (RECSYS_STOP_AT), its run noted in this process's scratch directory as the runner notes
    it; a live schedule's run is another."""
    import flows.api_loss
    from flows.deployments import stop_when_server_ends

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gave_up: list[bool] = []
    monkeypatch.setattr(flows.api_loss, "give_up_on_api", lambda: gave_up.append(True))  # process-wide otherwise
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # another schedule
    own_run, other_run = uuid.uuid4(), uuid.uuid4()
    _note(tmp_path / f"recsys-schedule-{os.getpid()}-x1", own_run)
    _note(tmp_path / f"recsys-schedule-{alive.pid}-x2", other_run)
    env = {**os.environ, "RECSYS_STOP_AT": "flow_run.starting"}
    own, other = (
        subprocess.Popen([sys.executable, "-m", "flows.flow_run_process"], env={**env, "PREFECT__FLOW_RUN_ID": str(run)})
        for run in (own_run, other_run)
    )  # fmt: skip

    class Server:  # what the watch reads of Prefect's SubprocessASGIServer
        api_url = "http://127.0.0.1:9/api"
        server_process = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])

    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        Server.server_process.wait()
        deadline = time.monotonic() + 60
        while not all(_state(p.pid) == "T" for p in (own, other)):
            assert time.monotonic() < deadline and None in (own.poll(), other.poll())
            time.sleep(0.05)
        stop_when_server_ends(Server(), threading.Event(), [], every=0.01)
        assert received == [signal.SIGTERM]
        assert own.wait(10) == -signal.SIGTERM  # ended before the schedule's stop began
        assert other.poll() is None
        assert gave_up == [True]
    finally:
        signal.signal(signal.SIGTERM, previous)
        for process in (own, other, alive):
            process.kill()
            process.wait()


def test_the_runners_failed_calls_to_a_server_that_ended_are_one_line_each(monkeypatch):
    """Stopped once its temporary server ended, the runner failed to read its run and to report it
    Crashed, each an ERROR with two chained tracebacks (~70 lines of httpx frames for "All
    connection attempts failed"). Once the schedule gave up on the API they are one line each,
    the exception's message appended; before, a traceback is kept."""
    import logging

    import flows.api_loss
    from flows.runner import RUNNER_STOP_LOGGERS, _no_websocket_tracebacks

    monkeypatch.delenv("RECSYS_DEBUG", raising=False)
    monkeypatch.setattr(flows.api_loss, "_gave_up", threading.Event())
    _no_websocket_tracebacks()
    logger = logging.getLogger(RUNNER_STOP_LOGGERS[1])
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    try:
        for gave_up in (False, True):
            if gave_up:
                flows.api_loss._gave_up.set()
            try:
                raise ConnectionError("All connection attempts failed")
            except ConnectionError:
                logger.exception("Failed to update state of flow run '%s'", "abc")
    finally:
        logger.removeHandler(handler)
    assert records[0].exc_info is not None
    assert records[1].exc_info is None
    assert records[1].getMessage() == "Failed to update state of flow run 'abc': All connection attempts failed"


def test_a_schedule_stopped_while_its_server_is_down_says_how_to_pause_its_deployment(
    prefect_harness, tmp_path, monkeypatch
):
    """Prefect's runner pauses its deployment when it stops, so that its server schedules no runs
    that nothing runs. With the user's server (PREFECT_API_URL) down at the stop that pause cannot
    be made (it took a minute of retries and raised): it is skipped, and was skipped without a word,
    so the server, once back, kept scheduling runs that went Late. The stop now says so in one line
    with the command that pauses it. The server is the session's harness behind a proxy, killed
    once the runner serves, then Ctrl-C; the printed command is run on the harness (up again)."""
    from urllib.parse import urlsplit

    from killable_proxy import KillableProxy
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.runner
    from flows.deployments import serve_pipeline

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runners: list = []  # the schedule's runner, to see when it serves (its storage comes first)
    make_runner = flows.runner._runner
    monkeypatch.setattr(flows.runner, "_runner", lambda scratch: runners.append(make_runner(scratch)) or runners[0])
    harness = str(PREFECT_API_URL.value())
    proxy = KillableProxy((urlsplit(harness).hostname or "127.0.0.1", int(urlsplit(harness).port or 80)))
    api = f"http://127.0.0.1:{proxy.port}/api"
    name = f"unpaused-{uuid.uuid4().hex[:6]}"
    lines: list[str] = []

    def kill_the_server_once_serving() -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (runners and runners[0].started):  # a Ctrl-C before
                time.sleep(0.05)  # never gets to the runner's stop, nor to its pause
            proxy.kill()
        finally:
            os.kill(os.getpid(), signal.SIGINT)

    with interrupted_by(threading.Thread(target=kill_the_server_once_serving, daemon=True)), \
            temporary_settings(updates={PREFECT_API_URL: api}):
        serve_pipeline(say=lines.append, name=name, cron=YEARLY)
    deployment_name = f"training-pipeline/{name}"
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name)
    assert not deployment.paused and [s.active for s in deployment.schedules] == [True], lines
    command = f"prefect deployment schedule pause {deployment_name} {deployment.schedules[0].id}"
    assert lines == [
        f"deployment {deployment_name} was left unpaused: its Prefect server {api} (PREFECT_API_URL) did not "
        "answer when this schedule stopped, and once back it schedules runs that nothing runs (they show Late): "
        f"pause it then (`{command}`), or serve it again (`recsys schedule`)"
    ]
    env = {**os.environ, "PREFECT_API_URL": harness}
    subprocess.run([sys.executable, "-m", "prefect", *command.split()[1:]], env=env, check=True, capture_output=True)
    with get_client(sync_client=True) as client:
        assert [s.active for s in client.read_deployment_by_name(deployment_name).schedules] == [False]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc (Linux)")
def test_a_start_stops_the_flow_run_processes_that_killed_schedules_left(tmp_path, monkeypatch):
    """A schedule killed with -9 mid-run left the run's process training on, reparented to init,
    until its first line of output (the pipe to the killed runner: EPIPE, then it exits): ~1 min of
    a core measured by hand, a long model's hours, for a run lost anyway, beside the runs of the
    next schedule; SIGTERMed once its temporary server was stopped, it spent minutes on retries to
    report to it. A start now stops the flow-run processes whose runs killed schedules noted, never
    a live schedule's, nor one of no schedule's: SIGTERM, SIGKILL after a grace. The processes are
    real flow-run processes (`flows.flow_run_process`) frozen where they start (RECSYS_STOP_AT),
    but for one that ignores SIGTERM, as one retrying its stopped server does for minutes."""
    from flows.runner import stop_runs_of_killed_schedules

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a schedule killed with -9: its pid is gone
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a schedule that serves
    killed_run, stuck_run, live_run = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    _note(tmp_path / f"recsys-schedule-{dead.pid}-x1", killed_run)
    (tmp_path / f"recsys-schedule-{dead.pid}-x1" / "flow-runs").write_text(f"{killed_run}\n{stuck_run}\n")
    _note(tmp_path / f"recsys-schedule-{alive.pid}-x2", live_run)
    env = {**os.environ, "RECSYS_STOP_AT": "flow_run.starting"}
    left, live, other = (
        subprocess.Popen([sys.executable, "-m", "flows.flow_run_process"], env={**env, "PREFECT__FLOW_RUN_ID": str(run)})
        for run in (killed_run, live_run, uuid.uuid4())
    )  # fmt: skip
    ignore = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(120)"
    stuck = subprocess.Popen([sys.executable, "-c", ignore, "-m", "flows.flow_run_process"], stdout=subprocess.PIPE,
                             env={**os.environ, "PREFECT__FLOW_RUN_ID": str(stuck_run)})  # fmt: skip
    try:
        assert stuck.stdout is not None and stuck.stdout.readline() == b"1\n"  # SIGTERM ignored from here
        deadline = time.monotonic() + 60
        while not all(_state(p.pid) == "T" for p in (left, live, other)):
            assert time.monotonic() < deadline and None in (left.poll(), live.poll(), other.poll())
            time.sleep(0.05)
        assert stop_runs_of_killed_schedules(grace=1.0) == sorted([left.pid, stuck.pid])
        assert left.wait(30) == -signal.SIGTERM
        assert stuck.wait(30) == -signal.SIGKILL
        assert live.poll() is None and other.poll() is None
    finally:
        for process in (left, live, other, stuck, alive):
            process.kill()
            process.wait()


def _serve_until_stopped(name: str, lines: list[str], monkeypatch, once_serving: bool = False) -> None:
    """`serve_pipeline` of deployment `name` with Python's own SIGINT handler (`interrupted_by`), its
    lines in `lines`, stopped by the signals its fault points send, and with `once_serving` by a
    Ctrl-C once its runner serves; a signal that escapes fails the test (a KeyboardInterrupt would
    end the test session)."""
    import flows.runner
    from flows.deployments import serve_pipeline

    runners: list = []
    make_runner = flows.runner._runner
    monkeypatch.setattr(flows.runner, "_runner", lambda scratch: runners.append(make_runner(scratch)) or runners[0])

    def ctrl_c_once_serving() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (runners and runners[0].started):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    stopper = threading.Thread(target=ctrl_c_once_serving if once_serving else lambda: None, daemon=True)
    with interrupted_by(stopper):
        try:
            serve_pipeline(say=lines.append, name=name, cron=YEARLY)
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt, SystemExit: what a user saw
            pytest.fail(f"the schedule's stop raised {exc!r}")


def _read(name: str):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(f"training-pipeline/{name}")


def _stopping_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("stopping:")]


@pytest.mark.parametrize(
    ("interrupts", "once_serving"),
    [
        ({"RECSYS_INTERRUPT_AT": "schedule.applied"}, False),  # the deployment just created, no runner yet
        ({"RECSYS_INTERRUPT_AT": "schedule.runner_starting"}, False),  # inside the runner's start (its services)
        ({"RECSYS_TERMINATE_AT": "schedule.runner_starting"}, False),  # SIGTERM there: Prefect's runner exited
        # an impatient user: Ctrl-C again while the stop pauses the deployment: held, the pause made
        ({"RECSYS_INTERRUPT_AT": "schedule.runner_starting,schedule.stopping"}, False),
        ({"RECSYS_INTERRUPT_AT": "schedule.runner_stopping"}, True),  # so in the stop of a runner that served
    ],
    ids=["ctrl-c-once-created", "ctrl-c-while-the-runner-starts", "sigterm-while-the-runner-starts",
         "twice-while-it-starts", "twice-once-serving"],
)  # fmt: skip
def test_a_schedule_stopped_while_it_starts_pauses_its_deployment(
    prefect_harness, tmp_path, monkeypatch, capfd, interrupts, once_serving
):
    """Prefect's runner pauses its deployment when it stops, so that the server schedules no runs
    that nothing runs (Late), but only once the runner had started: a Ctrl-C while it started
    (entering its services) left the deployment unpaused, without a word, and SIGTERM there
    exited at once (sys.exit(0) in Prefect's handler), as unpaused. A Ctrl-C more during the stop
    (an impatient user) cut the pause midway. A stop at any moment once the deployment exists now
    pauses it, as the stop of a schedule that serves does (returns, nothing said, nothing left in
    $TMPDIR); a Ctrl-C more during the stop is held, with one line. The signals land at the
    schedule's own fault points (`recsys.faults`), in this process, on the session's harness server."""
    from recsys import faults

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(faults, "_seen", {})  # counts per process
    for env, points in interrupts.items():
        monkeypatch.setenv(env, points)
    name = f"starting-{uuid.uuid4().hex[:6]}"
    lines: list[str] = []
    _serve_until_stopped(name, lines, monkeypatch, once_serving)
    assert _read(name).paused, lines
    assert lines == []
    assert list(tmp_path.iterdir()) == []
    held = "stopping" in interrupts.get("RECSYS_INTERRUPT_AT", "")
    what = "and stopping its runs" if once_serving else "and closing its runs"
    assert _stopping_lines(capfd.readouterr().err) == held * [
        f"stopping: pausing deployment training-pipeline/{name} {what} first; press Ctrl-C again to stop at once"
    ]


def test_a_schedule_stopped_while_it_starts_with_its_server_down_says_how_to_pause_its_deployment(
    prefect_harness, tmp_path, monkeypatch
):
    """Ctrl-C while the runner starts, its server (PREFECT_API_URL) gone meanwhile: the deployment
    cannot be paused, and the stop says so with the command that pauses its schedule, as the stop
    of a schedule that served does (before, nothing was said). The server is the session's harness
    behind a proxy, killed at the fault point where the Ctrl-C lands."""
    from urllib.parse import urlsplit

    from killable_proxy import KillableProxy
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.runner
    from recsys import faults

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(faults, "_seen", {})
    monkeypatch.setenv(faults.INTERRUPT_ENV, "schedule.runner_starting")
    harness = str(PREFECT_API_URL.value())
    proxy = KillableProxy((urlsplit(harness).hostname or "127.0.0.1", int(urlsplit(harness).port or 80)))
    point = flows.runner.fault_point

    def server_down_there(name: str) -> None:
        if name == "schedule.runner_starting":
            proxy.kill()
        point(name)

    monkeypatch.setattr(flows.runner, "fault_point", server_down_there)
    api = f"http://127.0.0.1:{proxy.port}/api"
    name = f"starting-down-{uuid.uuid4().hex[:6]}"
    lines: list[str] = []
    with temporary_settings(updates={PREFECT_API_URL: api}):
        _serve_until_stopped(name, lines, monkeypatch)
    deployment = _read(name)
    assert not deployment.paused
    deployment_name = f"training-pipeline/{name}"
    assert lines == [
        f"deployment {deployment_name} was left unpaused: its Prefect server {api} (PREFECT_API_URL) did not "
        "answer when this schedule stopped, and once back it schedules runs that nothing runs (they show Late): "
        f"pause it then (`prefect deployment schedule pause {deployment_name} {deployment.schedules[0].id}`), or "
        "serve it again (`recsys schedule`)"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "interrupt",
    [{"RECSYS_INTERRUPT_AT": "schedule.runner_starting"}, {"RECSYS_TERMINATE_AT": "schedule.applied"}, {}],
    ids=["ctrl-c-while-the-runner-starts", "sigterm-once-created", "ctrl-c-once-serving"],
)
def test_recsys_schedule_stopped_while_it_starts_ends_as_once_serving(prefect_harness, tmp_path, interrupt):
    """What a user sees: `recsys schedule` stopped while its runner starts (Ctrl-C), or right after
    its deployment was created (SIGTERM: the command's own handler until the runner's takes over),
    ends as one stopped once it serves (the last case): exit 0, Prefect's two pause lines, no
    traceback, the deployment paused, nothing left in $TMPDIR. Before, the first exited 0 with the
    deployment unpaused and no word; a SIGTERM between the two handlers killed the schedule."""
    from prefect.settings import PREFECT_API_URL

    name = f"cli-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "TMPDIR": str(tmp_path), "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "300",
           **interrupt}  # fmt: skip
    schedule = subprocess.Popen(
        recsys_cli("schedule", "--cron", YEARLY, "--name", name),  # its Ctrl-C handler set: see recsys_cli
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        if not interrupt:  # Ctrl-C once the runner serves: it made its storage directory as it started
            deadline = time.monotonic() + 120
            while not list(tmp_path.glob("recsys-schedule-*/runner-storage")):
                assert schedule.poll() is None and time.monotonic() < deadline, schedule.communicate()
                time.sleep(0.05)
            time.sleep(0.5)
            schedule.send_signal(signal.SIGINT)
        out, err = schedule.communicate(timeout=120)
    finally:
        if schedule.poll() is None:
            schedule.kill()
            schedule.wait()
    assert schedule.returncode == 0, err
    first, *start = out.splitlines()  # the serving line, then when it runs and where it logs; nothing more
    assert first.startswith(f"serving deployment training-pipeline/{name} "), out
    assert [line.split(":", 1)[0] for line in start] == ["next run", "MLflow store", "browse it"], out
    assert [line.split(" | ", 1)[-1] for line in err.splitlines()][-2:] == [
        "INFO    | prefect.runner - Pausing all deployments...",
        "INFO    | prefect.runner - All deployments have been paused!",
    ], err
    assert "Traceback" not in err
    assert _read(name).paused
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("once_serving", [False, True], ids=["while-it-starts", "once-serving"])
def test_a_schedule_stopped_at_once_says_how_to_pause_its_deployment(
    prefect_harness, tmp_path, monkeypatch, capfd, once_serving
):
    """Ctrl-C while the runner starts (or once it serves), then twice more while the stop pauses the
    deployment (the second is held, the third stops at once): nothing more is asked of the server,
    and the deployment, left unpaused, is said with the command that pauses its schedule."""
    from recsys import faults

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(faults, "_seen", {})
    stop = "schedule.runner_stopping" if once_serving else "schedule.stopping"
    monkeypatch.setenv(faults.INTERRUPT_ENV, stop if once_serving else f"schedule.runner_starting,{stop}")
    monkeypatch.setenv(faults.TERMINATE_ENV, stop)  # right after that Ctrl-C: the third signal
    name = f"forced-{uuid.uuid4().hex[:6]}"
    lines: list[str] = []
    _serve_until_stopped(name, lines, monkeypatch, once_serving)
    deployment = _read(name)
    assert not deployment.paused
    deployment_name = f"training-pipeline/{name}"
    assert lines == [
        f"deployment {deployment_name} was left unpaused: this schedule was stopped at once, before it paused it, "
        "and its server schedules runs that nothing runs (they show Late): pause it "
        f"(`prefect deployment schedule pause {deployment_name} {deployment.schedules[0].id}`), or serve it again "
        "(`recsys schedule`)"
    ]
    assert list(tmp_path.iterdir()) == []
    assert len(_stopping_lines(capfd.readouterr().err)) == 1


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc (Linux)")
def test_ctrl_c_again_while_a_schedule_stops_its_temporary_server_shows_no_traceback(
    tmp_path, migrated_prefect_database
):
    """`recsys schedule` without PREFECT_API_URL serves on a temporary Prefect server, which Prefect
    stopped at exit (an atexit callback waiting up to 5 s): a Ctrl-C more there, an impatient user's
    after the schedule had stopped, printed "Exception ignored in atexit callback" and a
    KeyboardInterrupt traceback. The schedule stops it itself now, that Ctrl-C held with one line.
    Ctrl-C is sent to the schedule's process group, as a terminal does; the second once the server's
    stop begins (Prefect's line says so). ~30 s: the temporary server starts."""
    import shutil

    from recsys.procfs import find_own

    home, tmp = tmp_path / "prefect", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    if migrated_prefect_database is not None:
        shutil.copyfile(migrated_prefect_database, home / "prefect.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), TMPDIR=str(tmp), COLUMNS="300")
    schedule = subprocess.Popen(
        recsys_cli("schedule", "--cron", YEARLY, "--name", f"exit-{uuid.uuid4().hex[:6]}"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while not list(tmp.glob("recsys-schedule-*/runner-storage")):  # the runner serves
            assert schedule.poll() is None and time.monotonic() < deadline, schedule.communicate()[0]
            time.sleep(0.1)
        time.sleep(0.5)
        os.killpg(schedule.pid, signal.SIGINT)
        assert schedule.stdout is not None
        watchdog = threading.Timer(120, schedule.kill)  # a schedule that never stops fails, not hangs
        watchdog.start()
        for line in schedule.stdout:
            lines.append(line)
            if "Stopping temporary server" in line:
                os.killpg(schedule.pid, signal.SIGINT)
        schedule.wait(60)
        watchdog.cancel()
    finally:
        if schedule.poll() is None:
            schedule.kill()
            schedule.wait()
    output = "".join(lines)
    assert schedule.returncode == 0, output
    assert "Traceback" not in output and "Exception ignored" not in output, output
    assert "stopping: stopping Prefect's temporary server first; press Ctrl-C again to stop at once\n" in lines, output

    def our_server(entry) -> bool:
        return any(b"uvicorn" in part for part in entry.command()) and entry.env("PREFECT_HOME") == str(home)

    assert find_own(our_server) == []
    assert list(tmp.iterdir()) == [], output


@pytest.mark.parametrize("services_started", [False, True], ids=["as-the-runner-starts", "before-its-first-poll"])
def test_a_schedule_whose_server_goes_down_as_it_starts_ends_in_one_line(
    prefect_harness, tmp_path, monkeypatch, services_started
):
    """`recsys schedule` with the user's server (PREFECT_API_URL) gone as its runner starts: Prefect's
    runner polled it three times (~30-40 s, each failure printed with its ~40-line traceback) and
    ended with an ExceptionGroup, said as "unexpected ExceptionGroup: unhandled errors in a TaskGroup
    (1 sub-exception): this is a bug", exit 1. Now one error line naming the server and what to do,
    exit 2, after the line that says how to pause the deployment it left unpaused: at once when the
    server is gone before the runner's services start (a health check), at the first failed poll
    once they started. The server is the session's harness behind a proxy, closed at that moment."""
    from urllib.parse import urlsplit

    from killable_proxy import KillableProxy
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    import flows.runner
    from recsys.cli import app

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    harness = str(PREFECT_API_URL.value())
    proxy = KillableProxy((urlsplit(harness).hostname or "127.0.0.1", int(urlsplit(harness).port or 80)))
    if services_started:  # after Prefect's runner entered its services, before its first poll
        watch = flows.runner._end_when_server_lost
        monkeypatch.setattr(flows.runner, "_end_when_server_lost", lambda runner: proxy.kill() or watch(runner))
    else:
        point = flows.runner.fault_point
        monkeypatch.setattr(flows.runner, "fault_point",
                            lambda name: proxy.kill() if name == "schedule.runner_starting" else point(name))  # fmt: skip
    api = f"http://127.0.0.1:{proxy.port}/api"
    name = f"lost-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("PREFECT_API_URL", api)
    monkeypatch.setenv("COLUMNS", "1000")  # the lines unwrapped
    with interrupted_by(threading.Thread(target=lambda: None)), temporary_settings(updates={PREFECT_API_URL: api}):
        result = CliRunner().invoke(app, ["schedule", "--cron", YEARLY, "--name", name])
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output and "ExceptionGroup" not in output, output
    why = "[Errno 111] Connection refused" if not services_started else "All connection attempts failed"
    deployment = _read(name)  # the harness, up all along
    assert not deployment.paused
    deployment_name = f"training-pipeline/{name}"
    pause = f"prefect deployment schedule pause {deployment_name} {deployment.schedules[0].id}"
    assert output.splitlines()[-2:] == [
        f"  deployment {deployment_name} was left unpaused: its Prefect server {api} (PREFECT_API_URL) did not "
        "answer when this schedule stopped, and once back it schedules runs that nothing runs (they show Late): "
        f"pause it then (`{pause}`), or serve it again (`recsys schedule`)",
        f"error: the Prefect server {api} (PREFECT_API_URL) stopped answering as this schedule started ({why}): the "
        "schedule stopped with it; start the server again (`prefect server start`, `recsys stack up`) or point "
        "PREFECT_API_URL at one that runs, then start the schedule again (`recsys schedule`)",
    ], output
    assert list(tmp_path.iterdir()) == []


def test_a_server_lost_after_a_successful_poll_is_said_as_lost_while_serving():
    """`server_lost` says when the server went: before any poll of Prefect's scheduled-run poller
    succeeded ("as this schedule started") or after ("while this schedule served"). It read
    `last_polled` from the runner, which has none (it is the poller's), so every loss read "as this
    schedule started", also one after days of serving."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from flows.runner import ApiLost, server_lost

    lost = ApiLost("[Errno 111] Connection refused")
    served = SimpleNamespace(_scheduled_run_poller=SimpleNamespace(last_polled=datetime.now(UTC)))
    starting = SimpleNamespace(_scheduled_run_poller=SimpleNamespace(last_polled=None))
    assert "stopped answering while this schedule served ([Errno 111] Connection refused)" in str(server_lost(lost, served))
    assert "stopped answering as this schedule started" in str(server_lost(lost, starting))
