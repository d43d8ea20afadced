"""Prefect's ephemeral API server (started on demand when PREFECT_API_URL is unset) is stopped at
interpreter exit; `recsys run` stops it right after the flow instead, so the wall time it prints
includes the server's start and stop, and nothing runs after the summary."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def stop_ephemeral_server() -> None:
    """Stop every temporary Prefect server this process started (no-op without one)."""
    try:
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:  # pragma: no cover - a Prefect without the embedded server
        return
    for server in list(getattr(SubprocessASGIServer, "_instances", {}).values()):
        try:
            server.stop()
        except Exception as exc:  # never fail a finished run over its teardown
            log.debug("could not stop the temporary Prefect server: %s", exc)
