"""Prefect's temporary server for `recsys run` and `recsys schedule`, started as early as the command
can start it (`recsys schedule` hands the process to Prefect only once its checks pass, and serves on
that server: `flows.deployments.serve_pipeline` finds it running).

The server is a process of its own (uvicorn) that needs ~3.5 s of CPU before it answers, and Prefect
launches it from its server module, which takes ~2.5-3 s more to import in the run's own process:
one wait after the other, then the run's flows, models and tracking imports. `launch_server_early`
launches Prefect's own command for it as soon as Prefect's settings are read (~0.8 s into the
command), before that import; `start_server_in_background` then hands the process to Prefect's
`SubprocessASGIServer`, the instance Prefect's client uses, so everything after it (the client, its
stop at exit, `flows.ephemeral.stop_ephemeral_server`) is Prefect's own, and waits on a thread until
it answers. Measured on 2 idle cores: the server answered ~1.6 s sooner (4.6 s after the process
start against 6.2 s). Where a launch is not possible (Prefect's server module already imported, so
a server of this process may run, e.g. a test harness's), Prefect's own start runs on that thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from flows.ephemeral import SERVER_APP, server_popen

log = logging.getLogger(__name__)

SERVER_MODULE = SERVER_APP.split(":", 1)[0]
PORTS = range(8000, 9000)
"""Where Prefect's own start picks its temporary server's port; so does the early launch."""
PORT_TAKEN = 3
"""uvicorn's exit status when its port is taken (another process bound it after it was picked):
Prefect's start then picks another port, and so does this one (by handing over to it)."""


def prefect_server_command(port: int) -> tuple[list[str], dict[str, str]]:
    """The command and environment Prefect's `SubprocessASGIServer._run_uvicorn_command` launches
    its temporary server with, built without importing Prefect's server module (the cost this
    module saves). tests/flows/test_server_early_start.py compares both with Prefect's own, so a
    Prefect release that changes them fails there, not in a user's run."""
    import prefect
    from prefect.settings import get_current_settings

    args = [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory", SERVER_APP,
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]  # fmt: skip
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    return args, env


def _free_port(attempts: int = 10) -> int | None:
    """A port of PORTS nothing listens on now (None after `attempts` taken ones: Prefect's start
    looks again)."""
    for _ in range(attempts):
        port = random.choice(PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    return None


class EarlyLaunch:
    """Prefect's temporary server's process, launched before Prefect's server module was imported
    (`launch_server_early`), until `start_server_in_background` hands it to Prefect."""

    def __init__(self, port: int, process) -> None:
        self.port, self.process = port, process

    def stop(self) -> None:
        """Stop the process (the run ended before it was handed over); idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _temporary_server_wanted() -> bool:
    """Whether Prefect's client would start its temporary server (as `get_client` decides): no
    PREFECT_API_URL and the temporary server enabled, by Prefect's settings (environment, profile)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_EPHEMERAL_ENABLED.value())


def launch_server_early() -> EarlyLaunch | None:
    """Launch Prefect's temporary server's process now, when the run will need one: PREFECT_API_URL
    unset and the temporary server enabled (Prefect's settings: its environment variables, its
    profile). None where Prefect's server module is imported already (a server of this process may
    be running, which `start_server_in_background` finds) or no port is free."""
    if SERVER_MODULE in sys.modules or not _temporary_server_wanted():
        return None
    port = _free_port()
    if port is None:
        return None
    args, env = prefect_server_command(port)
    return EarlyLaunch(port, server_popen(args, env=env))


def start_server_in_background(early: EarlyLaunch | None = None) -> ServerStart:
    """Start Prefect's temporary server now, on a thread (`ServerStart`: wait for it, or abandon it):
    the process `early` launched, handed to Prefect, or else Prefect's own start.

    Prefect starts its server only at the run's first API call, after the run has imported its
    flows, models and tracking: one wait after the other. Started here, its start-up overlaps those
    imports. Wait before the first API call: Prefect's own start on another thread returns at once
    while this one is still starting (the server is marked running before it answers). Nothing
    starts where PREFECT_API_URL is set, the temporary server is disabled or one is already running
    (e.g. a test harness's, which is not this run's to stop: `early`, if any, is stopped)."""
    if not _temporary_server_wanted():
        if early is not None:
            early.stop()
        return ServerStart(None)
    import prefect.main  # noqa: F401 - Prefect's logging set up, so the start's "Starting temporary server on" line shows
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's client gets too
    if server.running:
        if early is not None:
            early.stop()
        return ServerStart(None)
    return ServerStart(server, early)


class ServerStart:
    """A temporary server starting on a thread: `wait` for it to answer (its start's error is
    raised there), or `abandon` it when the run ends before using it, which stops it now or, if its
    process is not launched yet, as soon as its start returns (a stop before that found nothing to
    stop, and the server lived on until the interpreter's exit handlers, which a second Ctrl-C's
    immediate exit skips)."""

    def __init__(self, server: object | None, early: EarlyLaunch | None = None) -> None:
        self._server, self._early = server, early
        self._failed: list[BaseException] = []
        self._abandoned = threading.Event()
        self._stop_once = threading.Lock()
        self._thread = None
        if server is not None:
            self._thread = threading.Thread(target=self._start, name="recsys-prefect-server-start", daemon=True)
            self._thread.start()

    def _start(self) -> None:
        try:
            if self._early is None or not _serve_early(self._server, self._early):
                self._server.start()  # type: ignore[union-attr]
        except BaseException as exc:  # handed to the waiting thread
            self._failed.append(exc)
        if self._abandoned.is_set():
            self._stop()

    def _stop(self) -> None:
        with self._stop_once:  # from both threads at once, Prefect's stop would terminate a None process
            if getattr(self._server, "server_process", None) is not None:
                self._server.stop()  # type: ignore[union-attr]
            if self._early is not None:
                self._early.stop()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._failed:
            raise self._failed[0]

    def abandon(self) -> None:
        if self._server is not None:
            self._abandoned.set()
            self._stop()


def _serve_early(server, early: EarlyLaunch) -> bool:
    """Hand `early`'s process to Prefect's `server` (its port, process and running flag, and its stop
    at exit, as Prefect's start sets them) and wait until it answers its health check; False when
    its port was taken after it was picked (PORT_TAKEN), the handed-over state undone, so that
    Prefect's start picks another. Raises as Prefect's start does when it does not answer in time
    (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS), and at once when it exits."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    server.port, server.server_process, server.running = early.port, early.process, True
    atexit.register(server.stop)
    prefect_log = getattr(sys.modules[SERVER_MODULE], "subprocess_server_logger", log)
    prefect_log.info(
        f"Starting temporary server on {server.address}\nSee https://www.prefect.io/docs/v3/concepts/server"
        "#how-to-guides for more information on running a dedicated Prefect server."
    )
    deadline = time.monotonic() + float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    while not _healthy(server.api_url):
        code = early.process.poll()
        if code == PORT_TAKEN:
            server.port, server.server_process, server.running = None, None, False
            return False
        if code is not None:
            server.running = False
            raise RuntimeError(f"Prefect's temporary server exited with code {code} before it answered "
                               "(its output is passed on to stderr as this command ends)")  # fmt: skip
        if time.monotonic() > deadline:
            server.running = False
            raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
        time.sleep(0.1)
    return True


def _healthy(api_url: str) -> bool:
    """Whether the server at `api_url` answers its health check with 200, as Prefect's start waits for."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as answer:  # noqa: S310 - our own server
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False
