"""Compare models across pipeline runs: metric with its bootstrap interval, delta to the champion.

Reads only what the tracker logged (child runs tagged `recsys.kind = model`), so it works for runs
made by any version of the pipeline and against a remote server as well as the local store.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl

from recsys.errors import TrackingError
from recsys.tracking.registry import CHAMPION, alias_version
from recsys.tracking.runs import TAG_KIND, TAG_MODEL, TAG_MODEL_KIND, TAG_SPLIT_DIGEST
from recsys.tracking.store import metric_key

if TYPE_CHECKING:
    from mlflow import MlflowClient

Format = Literal["table", "markdown", "csv", "html"]
COLUMNS = [
    "model",
    "kind",
    "mean",
    "ci_low",
    "ci_high",
    "delta_to_champion",
    "champion",
    "run_id",
    "parent_run_id",
    "started",
    "split",
]


def model_runs(client: MlflowClient, experiment: str, max_runs: int = 50) -> list:
    """The newest finished model (child) runs of `experiment`."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise TrackingError(f"no experiment named {experiment!r} in {client.tracking_uri}")
    return client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{TAG_KIND}` = 'model' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=max_runs,
    )


def compare(
    client: MlflowClient,
    experiment: str,
    metric: str = "recall@20",
    max_runs: int = 50,
    registered_model: str | None = "recsys-best",
) -> pl.DataFrame:
    """One row per model run, best `metric` first, with [ci_low, ci_high] and the difference to the
    current champion of `registered_model` (null when there is none or it is not among the runs)."""
    key = metric_key(metric)
    runs = model_runs(client, experiment, max_runs)
    champion_run = None
    if registered_model:
        version = alias_version(client, registered_model, CHAMPION)
        champion_run = version.run_id if version is not None else None
    rows = []
    for run in runs:
        m, tags = run.data.metrics, run.data.tags
        rows.append(
            {
                "model": tags.get(TAG_MODEL, run.info.run_name),
                "kind": tags.get(TAG_MODEL_KIND, ""),
                "mean": m.get(key),
                "ci_low": m.get(f"{key}_ci_low"),
                "ci_high": m.get(f"{key}_ci_high"),
                "champion": run.info.run_id == champion_run,
                "run_id": run.info.run_id,
                "parent_run_id": tags.get("mlflow.parentRunId", ""),
                "started": run.info.start_time,
                "split": tags.get(TAG_SPLIT_DIGEST, ""),
                "curve": {
                    int(k.rsplit("_", 1)[1]): v for k, v in m.items() if re.fullmatch(r"recall_at_\d+", k)
                },
            }
        )
    schema = {
        "model": pl.String, "kind": pl.String, "mean": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
        "champion": pl.Boolean, "run_id": pl.String, "parent_run_id": pl.String, "started": pl.Int64,
        "split": pl.String,
    }  # fmt: skip
    frame = pl.DataFrame([{k: r[k] for k in schema} for r in rows], schema=schema)
    champion_mean = None
    if champion_run is not None:
        hit = frame.filter(pl.col("run_id") == champion_run)
        champion_mean = hit.get_column("mean")[0] if hit.height else _run_metric(client, champion_run, key)
    frame = frame.with_columns(
        pl.from_epoch("started", time_unit="ms").dt.replace_time_zone("UTC"),
        (pl.col("mean") - champion_mean if champion_mean is not None else pl.lit(None, pl.Float64)).alias(
            "delta_to_champion"
        ),
    )
    curves = pl.Series(
        "curve", [sorted(r["curve"].items()) for r in rows], dtype=pl.List(pl.List(pl.Float64))
    )
    return (
        frame.with_columns(curves).sort("mean", descending=True, nulls_last=True).select([*COLUMNS, "curve"])
    )


def _run_metric(client: MlflowClient, run_id: str, key: str) -> float | None:
    try:
        return client.get_run(run_id).data.metrics.get(key)
    except Exception:
        return None


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def display_rows(frame: pl.DataFrame, metric: str) -> tuple[list[str], list[list[str]]]:
    """Header and string cells shared by every output format."""
    header = ["model", "kind", metric, "95% CI", "Δ champion", "champion", "run", "started"]
    cells = []
    for r in frame.iter_rows(named=True):
        ci = (
            f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
            if r["ci_low"] is not None and r["ci_high"] is not None
            else ""
        )
        delta = f"{r['delta_to_champion']:+.4f}" if r["delta_to_champion"] is not None else ""
        started = r["started"].strftime("%Y-%m-%d %H:%M") if r["started"] is not None else ""
        cells.append(
            [
                r["model"],
                r["kind"],
                _fmt(r["mean"]),
                ci,
                delta,
                "★" if r["champion"] else "",
                r["run_id"][:8],
                started,
            ]
        )
    return header, cells


def render(frame: pl.DataFrame, metric: str, fmt: Format = "markdown") -> str:
    """The comparison as markdown, csv or html text ("table" renders like markdown; the CLI prints a
    rich table instead)."""
    if fmt == "csv":
        return frame.drop("curve").write_csv()
    header, cells = display_rows(frame, metric)
    if fmt == "html":
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>\n</table>\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def rich_table(frame: pl.DataFrame, metric: str):
    from rich.table import Table

    from recsys.tables import add_name_column

    header, cells = display_rows(frame, metric)
    table = Table(title=f"models by {metric}")
    for name in header:
        if name == "model":  # the one column rich must never shrink: which row is which model
            add_name_column(table, name, [row[header.index(name)] for row in cells])
        else:
            table.add_column(name, justify="right" if name not in ("kind", "run") else "left", overflow="fold")
    for row in cells:
        table.add_row(*row)
    return table


def plot_curves(frame: pl.DataFrame, path: str | Path) -> Path:
    """recall@k against k for the compared runs (label: model name + short run id)."""
    from recsys.tracking.plots import plot_metric_at_k

    curves = {
        f"{r['model']} ({r['run_id'][:6]})": {f"recall@{int(k)}": v for k, v in r["curve"]}
        for r in frame.iter_rows(named=True)
    }
    return plot_metric_at_k(curves, path)


def latest_pipeline_model_runs(client: MlflowClient, experiment: str) -> list[str]:
    """Finished model runs of the newest pipeline (parent) run: the default promotion candidates."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise TrackingError(f"no experiment named {experiment!r} in {client.tracking_uri}")
    parents = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{TAG_KIND}` = 'pipeline'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise TrackingError(f"experiment {experiment!r} has no pipeline runs; run `recsys run` first")
    parent = parents[0].info.run_id
    children = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'FINISHED'",
    )
    if not children:
        raise TrackingError(f"pipeline run {parent} has no finished model runs")
    return [c.info.run_id for c in children]
