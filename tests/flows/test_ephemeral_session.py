"""Prefect's temporary server out of the terminal's signals (flows.ephemeral.isolate_ephemeral_server)."""

from __future__ import annotations

import os
import socket


def test_the_temporary_prefect_server_runs_in_a_session_of_its_own():
    """Ctrl-C signals the terminal's whole foreground process group. Prefect started its temporary
    server in `recsys run`'s group, so the server shut down at once while the run was still
    stopping its models through it: minutes of "Error logging to API", the flow run left Running,
    and "unexpected ConnectError ... this is a bug" (exit 1) instead of `interrupted` (130). The
    server Prefect starts, started as `recsys run` and `recsys schedule` start it, leads its own
    session, so a signal to the run's process group does not reach it."""
    from prefect.server.api.server import SubprocessASGIServer

    from recsys.cli.pipeline_cmds import ephemeral_prefect_defaults

    ephemeral_prefect_defaults()  # what recsys run and recsys schedule call before Prefect starts it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = SubprocessASGIServer(port=port)
    process = server._run_uvicorn_command()  # how Prefect's start() launches it
    try:
        assert os.getsid(process.pid) == process.pid != os.getsid(0)
        assert os.getpgid(process.pid) != os.getpgid(0)
    finally:
        process.kill()
        process.wait()
        SubprocessASGIServer._instances.pop(port, None)


def test_the_temporary_prefect_server_holds_none_of_the_runs_streams():
    """A run killed with -9 leaves its server serving until the next run stops it. Started on the
    run's stdout and stderr, the server held the run's pipes open all that while, so `recsys run |
    tee run.log` (or a scheduler capturing the output) hung after the kill instead of ending."""
    import shutil
    import tempfile
    from pathlib import Path

    from prefect.server.api.server import SubprocessASGIServer

    from recsys.cli.pipeline_cmds import ephemeral_prefect_defaults

    ephemeral_prefect_defaults()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = SubprocessASGIServer(port=port)
    process = server._run_uvicorn_command()
    try:
        theirs = [os.readlink(f"/proc/{process.pid}/fd/{n}") for n in (0, 1, 2)]
        assert theirs[0] == os.devnull
        assert theirs[1] == theirs[2] and theirs[1].endswith("server.log")
        assert theirs[1] not in {os.readlink(f"/proc/self/fd/{n}") for n in (1, 2)}
    finally:
        process.kill()
        process.wait()
        SubprocessASGIServer._instances.pop(port, None)
        for folder in Path(tempfile.gettempdir()).glob(f"recsys-prefect-server-{os.getpid()}-*"):
            shutil.rmtree(folder, ignore_errors=True)


KILLED_RUN = r"""
import os, signal, sys
from flows.ephemeral import server_popen
child = server_popen([sys.executable, "-c", "import time; time.sleep(60)"])
open(sys.argv[1], "w").write(str(child.pid))
os.kill(os.getpid(), signal.SIGKILL)  # the run dies; its server lives on
"""


def test_the_output_of_a_killed_run_ends_with_it(tmp_path):
    """The kill in a real process, with the server's start (`server_popen`) and a stand-in server:
    reading the killed run's output to its end must not wait for the server it left."""
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    pid_file = tmp_path / "server.pid"
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(pid_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        run.communicate(timeout=30)  # EOF on both pipes: nothing else holds them
    finally:
        run.kill()
        if pid_file.is_file():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        for folder in Path(tempfile.gettempdir()).glob(f"recsys-prefect-server-{run.pid}-*"):
            shutil.rmtree(folder, ignore_errors=True)  # the killed run's server log
    assert run.returncode == -signal.SIGKILL
