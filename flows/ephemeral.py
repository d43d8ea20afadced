"""Prefect's ephemeral API server (started on demand when PREFECT_API_URL is unset) is stopped at
interpreter exit; `recsys run` stops it right after the flow instead, so the wall time it prints
includes the server's start and stop, and nothing runs after the summary."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def running_servers() -> list[object]:
    """The temporary Prefect servers running in this process now."""
    try:
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:  # pragma: no cover - a Prefect without the embedded server
        return []
    instances = getattr(SubprocessASGIServer, "_instances", {}).values()
    return [server for server in instances if getattr(server, "server_process", None)]


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
