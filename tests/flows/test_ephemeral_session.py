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
