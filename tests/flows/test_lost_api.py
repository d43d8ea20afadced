"""A Prefect server that dies during `recsys run` (kill -9 of the team stack's, or of any
PREFECT_API_URL server): the run ends soon after, in one `error:` line naming the server (exit 2),
with every MLflow run of it closed.

It took minutes: each task run asked the API for concurrency slots for the run's process tags, and
every request to the dead server spent Prefect's client retries (2 + 4 + 8 + 16 + 32 s) before it
failed, one request after the other; then the exit drained the queued events, ~7 s each, printing
"--- Error logging to API ---" after the error line, and Prefect's traceback came before it.
Then ~40 s: the flow's last two calls (its artifact, its final state) took ~11 s each, every queued
event printed a WARNING and a ~2,000-character ERROR, and the exit waited ~15 s after the error line
for Prefect's sends in flight (`flows.api_loss`). Now the run ends seconds after its models.

The server here is the session's Prefect harness behind a TCP proxy that the test closes, as a
killed server closes its port: open connections reset, new ones refused. The run is frozen where its
parent MLflow run has just opened (RECSYS_STOP_AT), the proxy closed, and the run resumed, so both
models' tasks start against a dead server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from killable_proxy import KillableProxy
from mlflow import MlflowClient

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="waits on /proc's process state"),
]

GIVE_UP_S = 90  # the bounded retries end the run in ~20 s here; it took over 4 minutes before
AFTER_MODELS_S = 15  # from the promotion's log line to the exit: ~3 s here, ~37 s before `flows.api_loss`


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_a_prefect_server_killed_mid_run_ends_the_run_in_one_line_with_its_runs_closed(
    prefect_harness, shared_mlflow_uri, tmp_path
):
    from urllib.parse import urlsplit

    from prefect.settings import PREFECT_API_URL

    harness = urlsplit(str(PREFECT_API_URL.value()))
    proxy = KillableProxy((harness.hostname or "127.0.0.1", int(harness.port or 80)))
    api = f"http://127.0.0.1:{proxy.port}/api"
    experiment = f"lost-api-{uuid.uuid4().hex[:8]}"
    sets = [
        "data.synthetic.n_users=80", "data.synthetic.n_items=40", "data.min_user_interactions=2",
        "folding.enabled=false", "evaluation.bootstrap_samples=10", "orchestration.max_workers=1",
        f'data.processed_dir="{tmp_path / "p"}"', f'data.raw_dir="{tmp_path / "raw"}"',
        f'tracking.tracking_uri="{shared_mlflow_uri}"', f'tracking.experiment="{experiment}"',
        f'tracking.model_name_prefix="{experiment}"', f'promotion.registered_model="{experiment}-best"',
        'models=[{name="pop", kind="popularity"}, {name="pop2", kind="popularity"}]',
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "prefect"), RECSYS_STOP_AT="tracking.parent_opened")
    process = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "run", *[a for s in sets for a in ("--set", s)]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )  # fmt: skip
    lines: list[str] = []
    promoted_at: list[float] = []  # when the promotion task's line came: the models are done

    def read() -> None:
        for line in process.stdout or ():
            lines.append(line)
            if not promoted_at and "Task run 'promote" in line:
                promoted_at.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and not _stopped(process.pid):
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        assert process.poll() is None, "".join(lines)  # frozen with its parent run open
        proxy.kill()
        process.send_signal(signal.SIGCONT)
        code = process.wait(GIVE_UP_S)
        ended_at = time.monotonic()
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(10)
    output = "".join(lines)
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: the Prefect API {api} (PREFECT_API_URL) stopped answering during the run"
    ), output
    assert "recsys stack up" in errors[0] and "--no-prefect" in errors[0]
    assert "Traceback" not in output, output
    assert output.split(errors[0], 1)[1].strip() == "", output  # nothing after our line
    assert "Error logging to API" not in output and "failed to process item" not in output, output
    assert output.count("Unable to connect") <= 1, output  # Prefect's first sign of it, not one per event
    assert promoted_at and ended_at - promoted_at[0] < AFTER_MODELS_S, output
    client = MlflowClient(shared_mlflow_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    assert runs, output
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == [], output



_ONE_CALL = r"""  # one call to a 503 server before giving up on the API, one after
import asyncio, http.server, json, os, sys, threading

requests = []


class Unavailable(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # there, but answering 503: a status Prefect's client retries
        requests.append(self.path)
        self.send_response(503)
        self.send_header("Retry-After", "0")  # retried at once: the test waits no back-off
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
threading.Thread(target=server.serve_forever, daemon=True).start()
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{server.server_address[1]}/api"

from prefect.client.orchestration import get_client

from flows.api_loss import give_up_on_api


async def call():
    async with get_client() as client:
        try:
            await client.hello()
        except Exception as exc:
            return type(exc).__name__
    return "answered"


kept_on = asyncio.run(call()), len(requests)
give_up_on_api()
requests.clear()
print(json.dumps({"kept on": [*kept_on], "gave up": [asyncio.run(call()), len(requests)]}))
"""


def test_after_giving_up_on_the_api_a_call_fails_at_its_first_attempt(tmp_path: Path) -> None:
    """`give_up_on_api` sets Prefect's client retries to 0: a call to a server answering 503 is one
    request, not one plus its retries (Prefect's default: 5, after 2, 4, 8, 16 and 32 s; here one,
    at once, as the server says Retry-After: 0). Without that line, a run or schedule whose server
    went away spent its client's retries on every later call. In a child process (giving up is
    process-wide); the call before giving up shows that the retry is taken."""
    import json

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_CLIENT_MAX_RETRIES": "1",
           "PREFECT_CLIENT_RETRY_JITTER_FACTOR": "0"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", _ONE_CALL], env=env, capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "kept on": ["PrefectHTTPStatusError", 2],
        "gave up": ["PrefectHTTPStatusError", 1],
    }
