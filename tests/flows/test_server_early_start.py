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
print(json.dumps(seen))
"""


def test_the_temporary_server_starts_before_the_flows_are_imported_and_its_error_reaches_the_run(tmp_path):
    """The start is asked for on its own thread before `flows.pipeline` (torch, MLflow, the models)
    is imported, and a start that fails fails the run with that error, as Prefect's own start did.
    Fails when the early start is removed (Prefect then starts it at the first API call, on the
    main thread, after the imports) or when its error is dropped (the run would go on without a
    server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", EARLY_START], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"flows_imported": False, "thread": "recsys-prefect-server-start", "raised": "no server in this test"}


def test_no_server_is_started_where_prefect_api_url_names_one(monkeypatch):
    """With PREFECT_API_URL set the run talks to that server: nothing is started early (a second,
    unused temporary server would cost ~230 MB and seconds of CPU)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.ephemeral import start_server_in_background

    before = dict(SubprocessASGIServer._instances)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        wait = start_server_in_background()
        wait()
    assert SubprocessASGIServer._instances == before
