"""Prefect's ephemeral API server (started on demand when PREFECT_API_URL is unset) is stopped at
interpreter exit; `recsys run` stops it right after the flow instead, so the wall time it prints
includes the server's start and stop, and nothing runs after the summary. A run killed outright
(kill -9, the OOM killer) cannot stop it: the next run does (`stop_orphaned_servers`)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from recsys.procfs import PROC, ProcessEntry, find_own, process

log = logging.getLogger(__name__)


def running_servers() -> list[object]:
    """The temporary Prefect servers running in this process now."""
    try:
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:  # pragma: no cover - a Prefect without the embedded server
        return []
    instances = getattr(SubprocessASGIServer, "_instances", {}).values()
    return [server for server in instances if getattr(server, "server_process", None)]


def current_api_url() -> str | None:
    """The Prefect API this process talks to: PREFECT_API_URL, else its temporary server's."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return str(url)
    servers = running_servers()
    return str(servers[0].api_url) if servers else None  # type: ignore[attr-defined]


def stop_ephemeral_server(keep: list[object] | None = None) -> None:
    """Stop the temporary Prefect servers this process started, except those in `keep` (servers
    that were already running before, e.g. a test harness's); no-op without one."""
    servers = [server for server in running_servers() if not any(server is kept for kept in keep or [])]
    if not servers:
        return
    _drain_workers()  # queued logs and events still go to the server they belong to
    for server in servers:
        try:
            server.stop()  # type: ignore[attr-defined]
        except Exception as exc:  # never fail a finished run over its teardown
            log.debug("could not stop the temporary Prefect server: %s", exc)
    _pass_on_server_logs()


def _pass_on_server_logs() -> None:
    """Write what this process's stopped servers logged (`server_popen`) to stderr, where it went
    before it had a file, and remove their log directories."""
    import shutil
    import tempfile

    for folder in Path(tempfile.gettempdir()).glob(f"{SERVER_LOG_PREFIX}-{os.getpid()}-*"):
        with contextlib.suppress(OSError):
            if text := (folder / "server.log").read_text(errors="replace"):
                sys.stderr.write(text)
        shutil.rmtree(folder, ignore_errors=True)


def _drain_workers(timeout: float = 5.0) -> None:
    """Send Prefect's queued logs and events now (at exit they would find the server gone)."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker
    except ImportError:  # pragma: no cover
        return
    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout)
        except Exception as exc:
            log.debug("could not drain %s: %s", worker.__name__, exc)


SERVER_APP = "prefect.server.api.server:create_app"
"""The app Prefect's temporary server serves (uvicorn --factory), on its command line."""
_SERVER_APP = SERVER_APP.encode()


def stop_orphaned_servers(proc: Path = PROC) -> list[int]:
    """SIGTERM the temporary Prefect servers that killed runs of this installation left behind;
    returns their pids. The server is a child process (uvicorn) that its run stops on the way out,
    so a run killed with SIGKILL left it serving forever, reparented to init (~230 MB and a share
    of a core each). One is recognised from /proc, all of: parent pid 1, this user, this Python
    executable (the same installation: never another venv's), Prefect's server app on its command
    line and PREFECT__SERVER_EPHEMERAL=1 (what Prefect sets for its temporary server) in its
    environment. "This Python" is its directory (a venv's bin/: `python` and `python3` both). Where this installation's Python is pid 1 itself (a container running `recsys
    run` as its command), its children have parent 1 while it lives: nothing is touched there.
    No /proc (not Linux): nothing."""
    python_dir = os.path.dirname(os.path.abspath(sys.executable))
    if not proc.is_dir() or _python_dir(process(1, proc).command()) == python_dir:
        return []

    def orphaned(entry: ProcessEntry) -> bool:
        if entry.parent() != 1:
            return False
        command = entry.command()
        if _python_dir(command) != python_dir or _SERVER_APP not in command:
            return False
        return entry.env("PREFECT__SERVER_EPHEMERAL") == "1"

    stopped = []
    for pid in find_own(orphaned, proc):
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
    return stopped


def _python_dir(command: list[bytes]) -> str | None:
    """The directory of a command line's program (None for an empty one)."""
    return os.path.dirname(os.path.abspath(os.fsdecode(command[0]))) if command and command[0] else None


def check_api(way_out: str = "", timeout: float = 5.0) -> None:
    """Raise RecsysError (one line, exit 2) when PREFECT_API_URL names a server that does not
    answer: Prefect's client reached the user as "unexpected ConnectError ... this is a bug" (from
    `recsys schedule`) or "unexpected RuntimeError: Failed to reach API" (from `recsys run`, after
    its set-up), e.g. after `recsys stack down` with .stack/env still sourced. Unset (the
    temporary local server): nothing to check. Any HTTP answer counts as reachable (an auth error
    is Prefect's to report). `way_out`: the command's own option around it, e.g. "--no-prefect"."""
    from prefect.settings import PREFECT_API_URL

    from recsys.errors import RecsysError

    url = PREFECT_API_URL.value()
    if not url:
        return
    if (reason := _unreachable(str(url), timeout)) is not None:
        alternative = f", or pass {way_out}" if way_out else ""
        raise RecsysError(
            f"Prefect API {url} (PREFECT_API_URL) is not reachable ({reason}): start its server "
            f"(`prefect server start`, or `make stack`), or unset PREFECT_API_URL to run on a temporary "
            f"local one{alternative}"
        ) from None


def _unreachable(api_url: str, timeout: float = 5.0) -> object | None:
    """Why the Prefect API at `api_url` does not answer its health check; None when it answers
    (any HTTP answer counts)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout):  # noqa: S310 - user's URL
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as exc:
        return getattr(exc, "reason", exc)


def lost_api(error: BaseException, way_out: str = "", started: list[object] | None = None) -> Exception | None:
    """The one-line error for a run that failed because the Prefect server at PREFECT_API_URL, or
    the temporary one this run started, went away during it (kill -9, the OOM killer, `recsys stack
    down`), or None when it still answers (or there is none): the run reached the user as Prefect's traceback, then "unexpected ConnectError:
    [Errno 111] Connection refused: this is a bug" (exit 1). Checked after the failure, so an error
    of the run's own is never blamed on a server that is fine. `started`: the temporary servers this
    run started (default: every one running in this process)."""
    from prefect.settings import PREFECT_API_URL

    from recsys.errors import RecsysError, first_line

    alternative = f", or pass {way_out}" if way_out else ""
    url = PREFECT_API_URL.value()
    if not url:  # the run's own temporary server: the OOM killer, or a kill of its process
        servers = running_servers() if started is None else started
        api = str(getattr(servers[0], "api_url", "")) if servers else ""
        if not api or _unreachable(api) is None:
            return None
        return RecsysError(
            f"Prefect's temporary server {api}, started by this run, stopped during it ({first_line(error)}): "
            f"models that finished are logged to MLflow; rerun (it starts a new one){alternative}"
        )
    try:
        check_api(way_out)
    except RecsysError:
        return RecsysError(
            f"the Prefect API {url} (PREFECT_API_URL) stopped answering during the run ({first_line(error)}): "
            f"models that finished are logged to MLflow; start its server again (`recsys stack up`, or "
            f"`prefect server start`) and rerun{alternative}"
        )
    return None


def isolate_ephemeral_server() -> None:
    """Start Prefect's temporary server in a session of its own, out of the terminal's signals.

    Ctrl-C signals the terminal's whole foreground process group, and Prefect starts the server
    (`SubprocessASGIServer`, uvicorn) in ours: it shut down at once, while `recsys run` was still
    stopping its models and closing their runs through it, so the run spent minutes on connection
    retries ("Error logging to API"), left its flow run Running and ended with "unexpected
    ConnectError ... this is a bug" (exit 1) instead of `interrupted` (130). In its own session the
    server stays up until `stop_ephemeral_server` stops it after the flow; a `recsys run` killed
    outright leaves it to the next one (`stop_orphaned_servers`), as before. It is started by
    `server_popen`, so it holds none of the run's standard streams (see there)."""
    import types

    from prefect.server.api import server as prefect_server

    if getattr(prefect_server.subprocess, "recsys_isolated", False):
        return
    module = types.SimpleNamespace(**{name: getattr(subprocess, name) for name in dir(subprocess) if not name.startswith("__")})
    module.Popen = server_popen
    module.recsys_isolated = True
    prefect_server.subprocess = module  # only the server module's own uses of subprocess


SERVER_LOG_PREFIX = "recsys-prefect-server"
_logs_at_exit: list[bool] = []  # whether `_pass_on_server_logs` is registered at exit (once)


def server_popen(args: list[str], **kwargs: object) -> subprocess.Popen:
    """Start the temporary server (`args`: Prefect's uvicorn command) in a session of its own, its
    stdin on /dev/null and its output in `$TMPDIR/recsys-prefect-server-<run pid>-*/server.log`
    (`recsys.files.popen_off_our_streams`: a run killed with -9 leaves its server serving until the
    next run stops it, and on the run's stdout it held `recsys run | tee run.log` open all that
    while)."""
    import atexit

    from recsys.files import popen_off_our_streams

    # Registered before Prefect registers the server's stop, so run after it at exit: a server that
    # `stop_ephemeral_server` did not stop (`recsys schedule`'s) has its log passed on too.
    if not _logs_at_exit:
        atexit.register(_pass_on_server_logs)
        _logs_at_exit.append(True)
    return popen_off_our_streams(args, SERVER_LOG_PREFIX, **kwargs)
