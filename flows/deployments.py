"""Deployments of the training pipeline: a cron schedule served from this process, or
`prefect deploy` with prefect.yaml for a worker pool."""

from __future__ import annotations

from typing import Any

from flows.pipeline import training_pipeline


def pipeline_deployment(
    *, name: str = "nightly", cron: str = "0 3 * * *", timezone: str = "UTC",
    config_path: str | None = None, overrides: list[str] | None = None, interval: float | None = None,
) -> Any:
    """A RunnerDeployment of `training_pipeline` carrying the schedule (cron, or every `interval`
    seconds when given) and the config."""
    from datetime import timedelta

    from prefect.schedules import Cron, Interval

    schedule = Interval(timedelta(seconds=interval), timezone=timezone) if interval else Cron(cron, timezone=timezone)
    return training_pipeline.to_deployment(
        name=name,
        schedules=[schedule],
        parameters={"config_path": config_path, "overrides": overrides or [], "scheduled": True},
        description="Scheduled training: ingest new data, retrain, evaluate, log to MLflow, promote.",
        tags=["recsys", "training"],
    )


def serve_pipeline(**kwargs: Any) -> None:
    """Serve the deployment (blocks): Prefect triggers runs on the schedule."""
    from prefect import serve

    serve(pipeline_deployment(**kwargs))
