"""One Prefect test harness (~20 s to start, from collection on: see `early_prefect_port` in
tests/conftest.py) for every flow test."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness(early_prefect_port: int | None):
    """Prefect's own `prefect_test_harness`, on the server started at collection: the harness asks
    for a free port and gets that server's, whose instance is already running, so it starts none."""
    from unittest import mock

    from prefect.testing import utilities

    harness = utilities.prefect_test_harness(server_startup_timeout=120)
    port = contextlib.nullcontext() if early_prefect_port is None else mock.patch.object(
        utilities, "_find_available_port", lambda: early_prefect_port
    )  # fmt: skip
    with port:
        harness.__enter__()
    try:
        yield
    finally:
        harness.__exit__(None, None, None)


@pytest.fixture(scope="session")
def prefect_console():
    """`with prefect_console() as console:` captures what Prefect prints (`_prefect_console`)."""
    return _prefect_console


@contextlib.contextmanager
def _prefect_console() -> Iterator[io.StringIO]:
    """What Prefect prints to the terminal (its console handlers on the root logger) while inside,
    captured: flow and task logs, and any traceback Prefect would show. The handler prints through
    its own rich Console, made with the stream it started with, so that Console's file is swapped
    (swapping the handler's stream alone captures nothing)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    console = io.StringIO()
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    assert handlers, "Prefect's console handler is where its logs go"
    # The stream is swapped by assignment, not setStream: setStream flushes the old stream, which an
    # in-process CLI test (typer's CliRunner) may have closed with Prefect's handler still on it.
    previous = [(h.console.file, h.stream) for h in handlers]
    for handler in handlers:
        handler.stream = handler.console.file = console
    try:
        yield console
    finally:
        for handler, (file, stream) in zip(handlers, previous, strict=True):
            handler.console.file, handler.stream = file, stream
