"""Bad input under Prefect (the default path of `recsys run`): one `error:` line naming an option
`run` has, exit 2, the ingest task not retried, and no Prefect traceback on the terminal."""

from __future__ import annotations

import gc

import pytest
from typer.testing import CliRunner

from recsys.cli import app


@pytest.mark.slow
def test_a_data_error_under_prefect_is_one_line_not_retried_and_without_tracebacks(
    prefect_harness, prefect_console, tmp_path, monkeypatch
):
    import flows.pipeline

    log = tmp_path / "plays.tsv"
    log.write_text("listener\tartist\tplays\n1\t10\t5\n2\t10\t7\n")  # no column reads as a user id
    calls = []
    real = flows.pipeline.prepare_dataset

    def counting(cfg):
        calls.append(1)
        return real(cfg)

    monkeypatch.setattr(flows.pipeline, "prepare_dataset", counting)
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    with prefect_console() as console:
        result = CliRunner().invoke(app, [
            "run", "--no-tracking", "--set", f"data.source={log}", "--set", f"data.processed_dir={tmp_path / 'p'}",
            "--set", "orchestration.retries=2", "--set", "orchestration.retry_delay_seconds=0",
        ])  # fmt: skip
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and "--set data.columns.user=listener" in errors[0], result.output
    # The imports were in before the flow started: collected once, frozen (`recsys.import_gc`).
    assert gc.get_freeze_count() > frozen and gc.get_threshold() == threshold
    assert "--user-col" not in errors[0]  # `run` has no such option
    assert len(calls) == 1  # a deterministic error is not retried
    printed = console.getvalue()
    assert "Beginning flow run" in printed  # the capture sees Prefect's terminal output
    assert "Traceback" not in printed and "Traceback" not in result.output, printed
    assert "Retry" not in printed


def test_a_run_with_failed_models_keeps_prefects_flow_traceback_off_the_terminal_but_bugs_keep_theirs():
    """Each failed model is logged in one line; the flow's PipelineFailed traceback only pointed at
    its `raise` (seen on an Amazon-shaped log whose catalogue EASE refuses)."""
    import logging
    import sys

    from flows.errors import _FILTER
    from flows.pipeline import PipelineFailed

    def record(error: BaseException) -> logging.LogRecord:
        try:
            raise error
        except BaseException:
            return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())

    assert not _FILTER.filter(record(PipelineFailed("1 of 6 models failed: ease (...)", {})))
    assert _FILTER.filter(record(RuntimeError("a bug")))


def test_a_run_whose_prefect_server_went_away_is_told_so_in_one_line(prefect_harness):
    """kill -9 of the team stack's Prefect server during `recsys run`: after minutes of Prefect's
    retries the run ended with Prefect's traceback and "error: unexpected ConnectError: [Errno 111]
    Connection refused: this is a bug" (exit 1). `lost_api` turns the failure into one line naming
    the server and what to do (exit 2), and only when that server no longer answers: an error of the
    run's own, under a server that is fine, is never blamed on it."""
    import socket

    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.ephemeral import lost_api
    from recsys.errors import RecsysError

    failure = httpx.ConnectError("All connection attempts failed")
    assert lost_api(failure, "--no-prefect") is None  # the harness's server answers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/api"  # closed when the block ends
    with temporary_settings(updates={PREFECT_API_URL: down}):
        lost = lost_api(failure, "--no-prefect")
    assert isinstance(lost, RecsysError), lost
    said = str(lost)
    assert said.startswith(f"the Prefect API {down} (PREFECT_API_URL) stopped answering during the run (All connection")
    assert "`recsys stack up`" in said and said.endswith("or pass --no-prefect")


def test_a_run_whose_own_temporary_prefect_server_died_is_told_so_in_one_line(prefect_harness):
    """Without PREFECT_API_URL the run starts a temporary Prefect server; killed mid-run (the OOM
    killer takes the largest process), the run ended "unexpected ConnectError: [Errno 111]
    Connection refused: this is a bug" (exit 1). The server here is one whose port nothing serves."""
    import socket
    import types

    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.ephemeral import lost_api
    from recsys.errors import RecsysError

    failure = httpx.ConnectError("[Errno 111] Connection refused")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = types.SimpleNamespace(api_url=f"http://127.0.0.1:{s.getsockname()[1]}/api")  # closed when the block ends
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert lost_api(failure, "--no-prefect", started=[]) is None  # no temporary server: nothing to blame
        lost = lost_api(failure, "--no-prefect", started=[dead])
    assert isinstance(lost, RecsysError), lost
    said = str(lost)
    assert said.startswith(f"Prefect's temporary server {dead.api_url}, started by this run, stopped during it (")
    assert said.endswith("rerun (it starts a new one), or pass --no-prefect")


def test_prefects_api_noise_after_a_lost_server_is_one_warning():
    """A server gone mid-run made Prefect log, per queued event, its "Unable to connect" WARNING and
    an ERROR holding the whole event (~2,000 characters). Through its real loggers: the first
    warning stays, the repeats and the senders' failures go, and other records are untouched."""
    import logging

    from flows.api_loss import NOISY_LOGGERS, _ApiNoise

    kept: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record.getMessage())

    noise, handler = _ApiNoise(), Keep()
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    raise_exceptions = logging.raiseExceptions
    for logger in loggers:
        logger.addFilter(noise)
        logger.addHandler(handler)
    events, internal = loggers
    try:
        internal.error("Service %r failed to process item %r", "EventsWorker", "event-0")  # trouble not yet known
        for n in range(1, 4):
            events.warning("Unable to connect to %r. Reason: %s.", "ws://127.0.0.1:1/api/events/in", "refused")
            internal.error("Service %r failed to process item %r", "EventsWorker", f"event-{n}")
        internal.error("Service %r failed with %s pending items.", "APILogWorker", 3)
        internal.error("Service %r failed to process item %r", "SomeOtherService", "x")
        events.warning("something else")
    finally:
        for logger in loggers:
            logger.removeFilter(noise)
            logger.removeHandler(handler)
        logging.raiseExceptions = raise_exceptions
    assert kept == [
        "Service 'EventsWorker' failed to process item 'event-0'",
        "Unable to connect to 'ws://127.0.0.1:1/api/events/in'. Reason: refused.",
        "Service 'SomeOtherService' failed to process item 'x'",
        "something else",
    ]


def test_quiet_api_noise_stops_the_log_shippers_unended_lines_from_the_start(capsys) -> None:
    """Prefect's log shipper writes "--- Error logging to API ---" and the error, with no line end,
    per failed batch while `logging.raiseExceptions` is set; its first batch after a server died
    could fail before the events client's warning turned that off (the lost-API test then saw the
    line, glued to the next). `recsys run` (without --debug) turns it off before the flow starts."""
    import asyncio
    import logging

    from prefect.logging.handlers import APILogWorker

    from flows.api_loss import _FILTER, NOISY_LOGGERS, quiet_api_noise

    class DeadClient:
        async def request(self, *args, **kwargs):
            raise ConnectionError("All connection attempts failed")

    worker = APILogWorker.__new__(APILogWorker)  # only _handle_batch is exercised
    worker._client = DeadClient()
    raise_exceptions = logging.raiseExceptions
    try:
        logging.raiseExceptions = True
        asyncio.run(worker._handle_batch([b"{}"]))
        assert "Error logging to API" in capsys.readouterr().err  # what Prefect does by itself
        quiet_api_noise()
        asyncio.run(worker._handle_batch([b"{}"]))
        assert capsys.readouterr().err == ""
    finally:
        logging.raiseExceptions = raise_exceptions
        for name in NOISY_LOGGERS:
            logging.getLogger(name).removeFilter(_FILTER)
