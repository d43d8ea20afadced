"""`recsys run` starts Prefect's temporary server before it imports its flows
(flows.ephemeral.start_server_in_background), so the server's start-up overlaps those imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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

    from flows.ephemeral import start_server_in_background

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

    from flows.ephemeral import start_server_in_background

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
