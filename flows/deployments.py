"""Deployments of the training pipeline: a cron schedule served from this process, or
`prefect deploy` with prefect.yaml for a worker pool."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.pipeline import training_pipeline

log = logging.getLogger(__name__)

OVERLAP_POLICIES = ("skip", "queue", "allow")
"""What a scheduled run does when it falls due while the previous one is still going.

Why a limit by default: a run on a growing log can outgrow its interval (an hourly schedule, a
70-minute run), and two overlapping runs train the same models twice on the same cores and twice
the memory, the second mostly on the data the first is still training on. `skip` (the default)
cancels the run that fell due (Prefect marks it Cancelled); nothing is lost, because the next run
ingests every landing file added since the last run that finished. `queue` starts it when the
previous one ends (a backlog can grow when every run outlasts the interval); `allow` runs them side
by side (the processed directory's writer lock and the promotion lock keep that correct, not cheap).
Enforced by the Prefect server (a deployment concurrency limit of 1), so it also holds for runs
started by hand with `prefect deployment run`."""


def pipeline_deployment(
    *, name: str = "nightly", cron: str = "0 3 * * *", timezone: str = "UTC",
    config_path: str | None = None, overrides: list[str] | None = None, interval: float | None = None,
    overlap: str = "skip",
) -> Any:
    """A RunnerDeployment of `training_pipeline` carrying the schedule (cron, or every `interval`
    seconds when given), the config and the overlap policy (`OVERLAP_POLICIES`)."""
    from datetime import timedelta

    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron, Interval

    if overlap not in OVERLAP_POLICIES:
        raise ValueError(f"overlap must be one of {OVERLAP_POLICIES}, not {overlap!r}")
    strategy = {"skip": ConcurrencyLimitStrategy.CANCEL_NEW, "queue": ConcurrencyLimitStrategy.ENQUEUE}.get(overlap)
    limit = None if strategy is None else ConcurrencyLimitConfig(limit=1, collision_strategy=strategy)

    schedule = Interval(timedelta(seconds=interval), timezone=timezone) if interval else Cron(cron, timezone=timezone)
    return training_pipeline.to_deployment(
        name=name,
        schedules=[schedule],
        concurrency_limit=limit,
        parameters={"config_path": config_path, "overrides": overrides or [], "scheduled": True},
        description="Scheduled training: ingest new data, retrain, evaluate, log to MLflow, promote; nothing "
        "when data, config and code are those of the last finished run (parameter force: train anyway).",
        tags=["recsys", "training"],
    )


def check_schedule(cron: str, timezone: str, interval: float | None) -> None:
    """A ConfigError naming the option for a cron expression or time zone Prefect refuses: they
    surfaced after `recsys schedule` had printed "serving deployment ...", as "unexpected
    ValueError: Invalid cron string ...: this is a bug", exit 1."""
    from datetime import timedelta

    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    from recsys.errors import ConfigError

    try:
        if interval:
            IntervalSchedule(interval=timedelta(seconds=interval), timezone=timezone)
        else:
            CronSchedule(cron=cron, timezone=timezone)
    except ValueError as exc:  # pydantic's ValidationError is one
        errors = getattr(exc, "errors", None)
        why = "; ".join(e["msg"].removeprefix("Value error, ") for e in errors()) if callable(errors) else str(exc)
        option = f"--timezone {timezone!r}" if "timezone" in why.lower() else f"--cron {cron!r}"
        hint = ("an IANA time zone name, e.g. --timezone Europe/Berlin" if option.startswith("--timezone")
                else 'five fields: minute hour day-of-month month day-of-week, e.g. --cron "0 3 * * *"')
        raise ConfigError(f"{option}: {why}: give {hint}") from None


def next_cron_run(cron: str, timezone: str) -> str:
    """When a cron schedule first fires from now, as `2026-12-08 03:00 UTC`: once serving, the
    schedule printed nothing until that time (a nightly cron: up to a day of silence), so a user
    could not tell it from a hung one. Prefect's own schedule computes it, so the line and the run agree."""
    import asyncio

    from prefect.server.schemas.schedules import CronSchedule

    (first,) = asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(n=1))
    return f"{first:%Y-%m-%d %H:%M} {timezone}"


def serve_pipeline(say: Callable[[str], None] | None = None, **kwargs: Any) -> None:
    """Serve the deployment (blocks): Prefect triggers runs on the schedule (`flows.runner`: what a
    stopped or killed schedule leaves is cleaned up). Without PREFECT_API_URL
    the API is Prefect's temporary server, which runs no scheduler service: a thread asks it to
    schedule the deployment's runs (`keep_runs_scheduled`), as that service does on a real server.
    `say`: where a line about what was cleaned up goes (default: stderr)."""
    from prefect.settings import PREFECT_API_URL

    from flows import stopping
    from flows.runner import (
        SCHEDULE_PREFIX,
        check_served_once,
        crash_runs_of_killed_schedules,
        serve_deployment,
        stop_runs_of_killed_schedules,
    )
    from recsys.faults import fault_point
    from recsys.files import scratch_dir

    stopping.clear()
    deployment = pipeline_deployment(**kwargs)
    stop = threading.Event()
    inherited = os.environ.get("PREFECT_API_URL")
    temporary = not PREFECT_API_URL.value()
    lost: list[str] = []  # set by `stop_when_server_ends`: how the temporary server ended
    key = served_key(deployment.name)
    check_served_once(key)  # before a temporary server starts for nothing
    if stopped := stop_runs_of_killed_schedules():  # before this schedule's server and runs take the cores
        (say or _to_stderr)(f"stopped {len(stopped)} flow-run process(es) that killed schedules left running (pids "
                            f"{', '.join(map(str, stopped))}): their output went to the killed schedule, so each "
                            "would have ended at its next line, its work lost")
    if temporary:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()  # the one serve() gets too (one instance per port)
        server.start()
        # each run executes in a child process: without the URL it started a temporary server of
        # its own, which knew nothing of this one's concurrency lease and cancelled the run
        os.environ["PREFECT_API_URL"] = server.api_url
        name = f"{training_pipeline.name}/{deployment.name}"
        threading.Thread(
            target=keep_runs_scheduled, args=(server.api_url, name, stop), name="recsys-scheduler", daemon=True
        ).start()
        threading.Thread(
            target=stop_when_server_ends, args=(server, stop, lost), name="recsys-server-watch", daemon=True
        ).start()
    try:
        if closed := crash_runs_of_killed_schedules(temporary_server=temporary):
            (say or _to_stderr)(f"marked {len(closed)} flow run(s) of killed schedules Crashed ({', '.join(closed)}): "
                                "their deployment's concurrency slot is free again")
        with scratch_dir(SCHEDULE_PREFIX) as scratch:
            check_served_once(key, Path(scratch))  # one started meanwhile
            fault_point("schedule.serving")
            serve_deployment(deployment, Path(scratch), say or _to_stderr, temporary_server=temporary)
        if lost:
            from recsys.errors import RecsysError

            raise RecsysError(
                f"{lost[0]}: the schedule stopped with it; start it again (it starts a new one), or point "
                "PREFECT_API_URL at a Prefect server of your own (`prefect server start`, `make stack`)"
            )
    finally:
        stop.set()
        if temporary:
            _stop_temporary_server(server)
        if inherited is None:
            os.environ.pop("PREFECT_API_URL", None)


def _stop_temporary_server(server: Any) -> None:
    """Stop the schedule's temporary server now, a Ctrl-C or SIGTERM more held back meanwhile
    (`flows.stopping.held`; one more leaves the server, sent SIGTERM already, to end by itself).

    Why: Prefect stopped it at exit (an atexit callback waiting up to 5 s for it), where a Ctrl-C
    more, an impatient user's after the schedule's stop, printed "Exception ignored in atexit
    callback" and a KeyboardInterrupt traceback."""
    from flows import stopping

    try:
        with stopping.held("stopping Prefect's temporary server first"):
            server.stop()
    except KeyboardInterrupt:  # Prefect's stop sent it SIGTERM already and forgot it: it ends by itself
        log.debug("left the temporary server to end by itself")


SERVER_WATCH_S = 2.0
"""How often `stop_when_server_ends` looks at the schedule's temporary server."""


SERVER_LOST_GRACE_S = 5.0
"""How long a run's process stopped by `stop_when_server_ends` has to end (close its MLflow runs) before SIGKILL."""


def stop_when_server_ends(
    server: Any, stop: threading.Event, lost: list[str], every: float = SERVER_WATCH_S,
    grace: float = SERVER_LOST_GRACE_S,
) -> None:  # fmt: skip
    """Until `stop`: when the schedule's temporary Prefect server (`server`) has ended (the OOM
    killer, a kill), say how in `lost`, stop the processes of the schedule's runs (SIGTERM, SIGKILL
    after `grace` s: `flows.runner.stop_runs_of_this_schedule`), give up on the API (no client
    retries: `flows.api_loss.give_up_on_api`) and stop the schedule as SIGTERM does (its runner's
    graceful stop), for `serve_pipeline` to end with one line.

    Why: the schedule served on without an API, silently: no run could start again, Prefect printed
    a websocket traceback, and its stop then spent over a minute on client retries to pause the
    deployment and ended with "unexpected ConnectError ...: this is a bug", exit 1. With a run
    executing, the runner's stop waited for its process, which trained on and failed every report
    to the dead server with retries: measured, the error line came ~7 min after the server's end,
    after 743 log lines and 19 tracebacks. The server holds the runs' state: with it gone they
    cannot be reported, and the next start closes them (Crashed)."""
    import signal

    from flows.api_loss import give_up_on_api
    from flows.runner import stop_runs_of_this_schedule

    while not stop.wait(every):
        process = getattr(server, "server_process", None)
        code = process.poll() if process is not None else None
        if code is not None:
            lost.append(f"Prefect's temporary server {server.api_url}, started by this schedule, ended "
                        f"(exit code {code}) while it served")  # fmt: skip
            give_up_on_api()  # the runner's calls to it fail at once, not after a minute of retries each
            stop_runs_of_this_schedule(grace)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def served_key(name: str) -> str:
    """What `recsys schedule --name NAME` serves, on the Prefect this process talks to
    (`flows.runner.deployment_key`)."""
    from prefect.settings import PREFECT_API_URL

    from flows.runner import deployment_key

    url = PREFECT_API_URL.value()
    return deployment_key(f"{training_pipeline.name}/{name}", str(url) if url else None)


def check_not_served(name: str) -> None:
    """A one-line error when a running `recsys schedule` of this machine serves deployment `name`
    on the same Prefect already (`flows.runner.check_served_once`): said before "serving ..."."""
    from flows.runner import check_served_once

    check_served_once(served_key(name))


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


SCHEDULE_EVERY_S = 30.0
"""How often `keep_runs_scheduled` tops up the scheduled runs (Prefect's scheduler service: 60 s)."""


def keep_runs_scheduled(api_url: str, deployment: str, stop: threading.Event, every: float = SCHEDULE_EVERY_S) -> None:
    """Until `stop`: have the server schedule the runs of `deployment` ("flow/name") that its
    schedule says are due over the next hour or more (`POST /deployments/{id}/schedule`, the call
    Prefect's scheduler service makes; idempotent: a run already scheduled is not added twice).

    Why: Prefect's temporary server (PREFECT__SERVER_EPHEMERAL) starts no scheduler service, so
    `recsys schedule` without PREFECT_API_URL served a deployment that never got a run - an
    `--interval 30` served for minutes without one, and a nightly cron never ran. A paused
    deployment (serve() pauses it when it stops) is left alone."""
    import json
    import urllib.error
    import urllib.request

    base = api_url.rstrip("/")
    while True:
        wait = every
        try:
            with urllib.request.urlopen(f"{base}/deployments/name/{deployment}", timeout=10) as answer:  # noqa: S310
                found = json.load(answer)
            if not found.get("paused"):
                request = urllib.request.Request(
                    f"{base}/deployments/{found['id']}/schedule", data=b"{}", method="POST",
                    headers={"Content-Type": "application/json"},
                )  # fmt: skip
                urllib.request.urlopen(request, timeout=60).close()  # noqa: S310 - the local server
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # serve() has not created the deployment yet
                wait = 1.0
            log.debug("could not schedule runs of %s: %s", deployment, exc)
        except (OSError, ValueError, KeyError) as exc:  # the server starting or stopping
            wait = 1.0
            log.debug("could not schedule runs of %s: %s", deployment, exc)
        if stop.wait(wait):
            return
