"""`recsys run` launches Prefect's temporary server's process before it imports Prefect's server
module (flows.server_start.launch_server_early) and hands it to Prefect on a thread
(start_server_in_background), so the server's start-up overlaps those imports and the flows'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

EARLY_START = r"""
import json, os, sys
os.environ.pop("PREFECT_API_URL", None)
from recsys.cli.pipeline_cmds import ephemeral_prefect_defaults
ephemeral_prefect_defaults()
from prefect.server.api.server import SubprocessASGIServer

seen = {}

class Refused(Exception):
    pass

def start(self, timeout=None):  # stands in for the server: records when it was asked to start
    seen["flows_imported"] = "flows.pipeline" in sys.modules
    import threading
    seen["thread"] = threading.current_thread().name
    raise Refused("no server in this test")

SubprocessASGIServer.start = start
from recsys.cli.pipeline_cmds import _execute
from recsys.config import load_config
try:
    _execute(load_config(None), None, [], tracking=False, prefect=True)
except Refused as exc:
    seen["raised"] = str(exc)

# A start that succeeds (a stand-in process), then an error before the run's first API call: the
# run stops the server it started on its way out, not only Prefect's handler at exit (which a
# second Ctrl-C's immediate exit skips).
import subprocess, time, flows.errors

def started(self, timeout=None):
    time.sleep(0.5)  # still starting when the run's set-up fails
    self.port, self.running = 9, True
    self.server_process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    seen["stand_in"] = self.server_process

def broken():
    raise Refused("set-up failed")

SubprocessASGIServer.start = started
flows.errors.quiet_deterministic_errors = broken
try:
    _execute(load_config(None), None, [], tracking=False, prefect=True)
except Refused as exc:
    seen["then"] = str(exc)
import time
deadline = time.monotonic() + 30  # the error came at once, so the stop may follow the start's return
while (seen.get("stand_in") is None or seen["stand_in"].poll() is None) and time.monotonic() < deadline:
    time.sleep(0.05)
stand_in = seen.pop("stand_in")
seen["stand_in_stopped"] = stand_in.poll() is not None
stand_in.kill()
print(json.dumps(seen))
"""


def test_the_temporary_server_starts_before_the_flows_are_imported_and_its_error_reaches_the_run(tmp_path):
    """The start is asked for on its own thread before `flows.pipeline` (torch, MLflow, the models)
    is imported, and a start that fails fails the run with that error, as Prefect's own start did.
    Fails when the early start is removed (Prefect then starts it at the first API call, on the
    main thread, after the imports), when its error is dropped (the run would go on without a
    server), or when an error between the start and the wait leaves the started server running
    (the error is raised by the set-up's quieting of Prefect's logs, which --debug skips)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API") and k != "RECSYS_DEBUG"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", EARLY_START], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "flows_imported": False,
        "thread": "recsys-prefect-server-start",
        "raised": "no server in this test",
        "then": "set-up failed",
        "stand_in_stopped": True,
    }


def test_no_server_is_started_where_prefect_api_url_names_one(monkeypatch):
    """With PREFECT_API_URL set the run talks to that server: nothing is started early (a second,
    unused temporary server would cost ~230 MB and seconds of CPU)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.server_start import start_server_in_background

    before = dict(SubprocessASGIServer._instances)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        start = start_server_in_background()
        start.wait()
        start.abandon()
    assert SubprocessASGIServer._instances == before


def test_a_server_already_running_is_neither_started_again_nor_stopped_by_the_run(monkeypatch):
    """A test harness's (or an embedding program's) temporary server is the one Prefect's client
    gets: the run uses it, and a run that ends early must not stop it."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.server_start import start_server_in_background

    class Theirs:
        running, server_process = True, object()

        def start(self, timeout=None):
            raise AssertionError("started again")

        def stop(self):
            raise AssertionError("stopped by the run")

    monkeypatch.setitem(SubprocessASGIServer._instances, None, Theirs())
    with temporary_settings({PREFECT_API_URL: None}):
        start = start_server_in_background()
        start.wait()
        start.abandon()


# The subprocess scripts' stand-in for Prefect's server: answers /api/health with 200 on the port it
# is given, as the server does once it is up.
STAND_IN = r"""STAND_IN = (
    "import http.server, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200 if self.path == '/api/health' else 404); self.end_headers(); self.wfile.write(b'true')\n"
    "    def log_message(self, *a):\n"
    "        pass\n"
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
)
"""

LAUNCHED_EARLY = r"""
import json, os, subprocess, sys, time
os.environ.pop("PREFECT_API_URL", None)
import flows.server_start as server_start
import recsys.cli.pipeline_cmds as cmds

seen = {}
launched = []

class Refused(Exception):
    pass

""" + STAND_IN + r"""
def popen(args, **kwargs):
    seen.setdefault("server_module_imported", "prefect.server.api.server" in sys.modules)
    seen.setdefault("flows_imported", "flows.pipeline" in sys.modules)
    seen.setdefault("env", {k: kwargs["env"][k] for k in ("PREFECT__SERVER_EPHEMERAL", "PREFECT_UI_ENABLED")})
    port = args[args.index("--port") + 1]
    launched.append(subprocess.Popen([sys.executable, "-c", STAND_IN, port]))
    return launched[-1]

server_start.server_popen = popen

def first_api_step():  # the run's first step after the wait: the server is Prefect's by now
    from prefect.server.api.server import SubprocessASGIServer
    server = SubprocessASGIServer._instances.get(None)
    seen["handed_over"] = server is not None and server.server_process is launched[-1] and server.running
    raise Refused("stopped after the wait")

cmds._stop_servers_of_killed_runs = first_api_step
from recsys.config import load_config
try:
    cmds._execute(load_config(None), None, [], tracking=False, prefect=True)
except Refused as exc:
    seen["raised"] = str(exc)
seen["stopped_after_the_run"] = launched[-1].poll() is not None

# The launch done, then an error before the process is handed to Prefect: it is stopped there.
server_start.SERVER_MODULE = "not.imported"  # Prefect's server module is imported by now: launch again
def broken():
    raise Refused("set-up failed")
cmds.ephemeral_prefect_defaults = broken
try:
    cmds._execute(load_config(None), None, [], tracking=False, prefect=True)
except Refused as exc:
    seen["then"] = str(exc)
seen["launches"] = len(launched)
seen["stopped_before_the_handover"] = launched[-1].poll() is not None
for process in launched:
    process.kill()
print(json.dumps(seen))
"""


def test_the_server_process_is_launched_before_prefects_server_module_is_imported_and_handed_to_prefect(tmp_path):
    """In a real `recsys run` set-up: the server's process is launched before Prefect's server
    module (~3 s) and the flows are imported, with the temporary server's environment; by the
    run's first step after the wait it is Prefect's server (the instance Prefect's client uses);
    the run's end stops it; and an error between the launch and the hand-over stops it too. A
    stand-in answers the health check. Fails without the early launch (Prefect's own start would
    launch a real server after that import), without the hand-over, and without the stop of a
    launch not handed over."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API") and k != "RECSYS_DEBUG"}
    env["PYTHONPATH"] = str(REPO)
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHED_EARLY], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "server_module_imported": False,
        "flows_imported": False,
        "env": {"PREFECT__SERVER_EPHEMERAL": "1", "PREFECT_UI_ENABLED": "0"},
        "handed_over": True,
        "raised": "stopped after the wait",
        "stopped_after_the_run": True,
        "then": "set-up failed",
        "launches": 2,
        "stopped_before_the_handover": True,
    }, done.stderr[-3000:]


def test_the_early_command_is_prefects_own(monkeypatch):
    """The command and environment of the early launch are those Prefect's own start uses
    (`SubprocessASGIServer._run_uvicorn_command`): a Prefect release that changes them fails here."""
    import types

    from prefect.server.api import server as prefect_server

    from flows.server_start import prefect_server_command

    captured = {}

    def popen(args, **kwargs):
        captured.update(args=args, env=kwargs.get("env"))

    monkeypatch.setattr(prefect_server, "subprocess", types.SimpleNamespace(Popen=popen))
    server = object.__new__(prefect_server.SubprocessASGIServer)
    server.port = 8765
    prefect_server.SubprocessASGIServer._run_uvicorn_command(server)
    args, env = prefect_server_command(8765)
    assert captured["args"] == args
    assert captured["env"] == env


class _Server:
    """The attributes of Prefect's SubprocessASGIServer that the hand-over sets and reads."""

    def __init__(self) -> None:
        self.port, self.server_process, self.running = None, None, False

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.address}/api"

    def stop(self) -> None:
        pass


def test_a_launch_whose_port_was_taken_goes_back_to_prefects_start_and_one_that_exits_fails_at_once(monkeypatch):
    """uvicorn exits 3 when its port was taken after it was picked: the hand-over is undone so
    that Prefect's own start picks another port, as Prefect does. Any other exit before the server
    answered fails the start at once with its code (not after the 180 s start-up timeout)."""
    import types

    from flows import server_start

    monkeypatch.setattr(server_start, "atexit", types.SimpleNamespace(register=lambda stop: None))
    for code in (3, 1):
        process = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
        server = _Server()
        early = server_start.EarlyLaunch(9, process)
        if code == 3:
            assert server_start._serve_early(server, early) is False
            assert (server.port, server.server_process, server.running) == (None, None, False)
        else:
            with pytest.raises(RuntimeError, match="exited with code 1 before it answered"):  # not a time-out
                server_start._serve_early(server, early)
            assert server.running is False


def test_nothing_is_launched_early_where_prefect_api_url_names_a_server_or_the_temporary_one_is_off(monkeypatch):
    """The early launch follows Prefect's own choice (its settings: environment and profile): no
    process where PREFECT_API_URL names a server or the temporary server is disabled, one on a port
    of Prefect's range otherwise."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, temporary_settings

    from flows import server_start

    launched: list[list[str]] = []

    class Launched:
        def poll(self):
            return 0

    monkeypatch.setattr(server_start, "SERVER_MODULE", "not.imported")  # as in a fresh `recsys run`
    monkeypatch.setattr(server_start, "server_popen", lambda args, **kwargs: launched.append(args) or Launched())
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert server_start.launch_server_early() is None
    with temporary_settings({PREFECT_API_URL: None, PREFECT_SERVER_EPHEMERAL_ENABLED: False}):
        assert server_start.launch_server_early() is None
    assert launched == []
    with temporary_settings({PREFECT_API_URL: None, PREFECT_SERVER_EPHEMERAL_ENABLED: True}):
        early = server_start.launch_server_early()
    assert early is not None and len(launched) == 1
    assert early.port in server_start.PORTS and launched[0][launched[0].index("--port") + 1] == str(early.port)


SCHEDULE_LAUNCHED_EARLY = r"""
import json, os, subprocess, sys
os.environ.pop("PREFECT_API_URL", None)
from typer.testing import CliRunner
import flows.server_start as server_start
import recsys.cli.pipeline_cmds as cmds
from recsys.cli import app

seen, launched = {}, []

class Refused(Exception):
    pass

""" + STAND_IN + r"""
def popen(args, **kwargs):
    seen.setdefault("server_module_imported", "prefect.server.api.server" in sys.modules)
    seen.setdefault("flows_imported", "flows.pipeline" in sys.modules)
    port = args[args.index("--port") + 1]
    launched.append(subprocess.Popen([sys.executable, "-c", STAND_IN, port]))
    return launched[-1]

server_start.server_popen = popen

def first_step_after_the_wait():  # the schedule's first step once its server answers
    from prefect.server.api.server import SubprocessASGIServer
    server = SubprocessASGIServer._instances.get(None)
    seen["handed_over"] = server is not None and server.server_process is launched[-1] and server.running
    raise Refused("stopped after the wait")

cmds._stop_servers_of_killed_runs = first_step_after_the_wait
ran = CliRunner().invoke(app, ["schedule", "--name", "early"])
seen["first"] = (ran.exit_code, "serving deployment" in ran.output, "stopped after the wait" in ran.output)
seen["stopped_after_the_command"] = launched[-1].poll() is not None

# A schedule refused after the launch (a cron Prefect refuses): the server launched for it is stopped.
server_start.SERVER_MODULE = "not.imported"  # Prefect's server module is imported by now: launch again
refused = CliRunner().invoke(app, ["schedule", "--name", "early", "--cron", "61 3 * * *"])
seen["refused"] = (refused.exit_code, [line[:35] for line in refused.output.splitlines() if line.strip()])
seen["launches"] = len(launched)
seen["stopped_when_refused"] = launched[-1].poll() is not None
for process in launched:
    process.kill()
print(json.dumps(seen))
"""


def test_recsys_schedule_launches_its_server_early_as_recsys_run_does(tmp_path):
    """`recsys schedule` started its temporary server the old way: Prefect's own start, once the
    flows (torch, MLflow) and Prefect's server module were imported. Now as `recsys run`: the
    server's process is launched before those imports and handed to Prefect, whose instance the
    schedule then serves on (`serve_pipeline` finds it running); a schedule that ends, or is
    refused after the launch (before the hand-over: its error the only line), stops it. Fails
    without the early launch (no launch before the imports), and without the stop of a refused
    schedule's server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API") and k != "RECSYS_DEBUG"}
    env["PYTHONPATH"] = str(REPO)
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    done = subprocess.run(
        [sys.executable, "-c", SCHEDULE_LAUNCHED_EARLY], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "server_module_imported": False,
        "flows_imported": False,
        "handed_over": True,
        "first": [1, True, True],
        "stopped_after_the_command": True,
        "refused": [2, ["error: --cron '61 3 * * *': Invalid"]],
        "launches": 2,
        "stopped_when_refused": True,
    }, done.stderr[-3000:]
