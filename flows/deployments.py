"""Deployments of the training pipeline: a cron schedule served from this process, or
`prefect deploy` with prefect.yaml for a worker pool."""

from __future__ import annotations

from typing import Any

from flows.pipeline import training_pipeline

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
        description="Scheduled training: ingest new data, retrain, evaluate, log to MLflow, promote.",
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


def serve_pipeline(**kwargs: Any) -> None:
    """Serve the deployment (blocks): Prefect triggers runs on the schedule."""
    from prefect import serve

    serve(pipeline_deployment(**kwargs))
