"""Compare models across pipeline runs: metric with its bootstrap interval, delta to the champion.

Reads only what the tracker logged (child runs tagged `recsys.kind = model`), so it works for runs
made by any version of the pipeline and against a remote server as well as the local store.

A number is only comparable with another measured on the same users and pairs. Rows are grouped by
lineage (config name + data source, recsys.lineage) and, within it, by split digest (newest split
first), and both are shown. The delta to the champion is computed only inside a group: against the
champion's own run when it was evaluated on that split, or against its re-scoring on that split
(`champion_<metric>`, logged on the challenger it was compared with); never across data sets or
splits.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl

from recsys.errors import TrackingError
from recsys.lineage import TAG_LINEAGE, TAG_LINEAGE_ID, Lineage
from recsys.sections import EvaluationConfig
from recsys.tracking.decision import NOT_COMPARABLE
from recsys.tracking.reevaluate import CHAMPION_METRIC_PREFIX, TAG_CHAMPION_REEVALUATED
from recsys.tracking.registry import CHAMPION, TAG_DECISION, TAG_FORCED, alias_version
from recsys.tracking.runs import (
    FULL_CORPUS,
    TAG_KIND,
    TAG_MODEL,
    TAG_MODEL_KIND,
    TAG_SPLIT_DIGEST,
    evaluation_protocol,
)
from recsys.tracking.store import metric_key, metric_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

Format = Literal["table", "markdown", "csv", "html"]
COLUMNS = [
    "lineage",
    "split",
    "model",
    "kind",
    "mean",
    "ci_low",
    "ci_high",
    "delta_to_champion",
    "champion",
    "run_id",
    "parent_run_id",
    "ci_level",
    "started",
    "evaluation",
]


LOWER_IS_BETTER = ("folding", "neighbour_cross_block", "score_folding")
"""Metrics (name before `@k`) where a smaller value is the better model: the folding diagnostics."""


def lower_is_better(metric: str) -> bool:
    return metric.split("@", 1)[0] in LOWER_IS_BETTER


def missing_experiment(client: MlflowClient, experiment: str) -> TrackingError:
    """The error for a store without `experiment`, naming the fix: the experiments it does hold
    (the config's `tracking.experiment` differs from the runs': another config, or a typo), else
    `recsys run` (nothing was run into this store yet).

    Why: `recsys promote` / `compare` on a fresh store said only "no experiment named
    'recsys-default' in sqlite:///...", leaving a new user to guess whether the store, the config or
    the order of commands was wrong."""
    names = [found.name for found in client.search_experiments(max_results=20) if found.name != "Default"]
    where = f"no experiment named {experiment!r} in {client.tracking_uri}"
    if not names:
        return TrackingError(f"{where}: nothing was run into this store yet; run `recsys run` first")
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return TrackingError(
        f"{where}: pass the config your runs used (--config FILE), or --set tracking.experiment=NAME "
        f"(experiments here: {shown})"
    )


def no_finished_models(client: MlflowClient, experiment: str) -> str:
    """What `recsys compare` says when `experiment` has no finished model run: "run `recsys run`
    first" only where no pipeline ran; after runs whose every model failed or was skipped it said the
    same, to a user who had just run it."""
    found = client.get_experiment_by_name(experiment)
    pipelines = [] if found is None else client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{TAG_KIND}` = 'pipeline'", max_results=50
    )  # fmt: skip
    if not pipelines:
        return f"no finished model runs in experiment {experiment!r} yet: run `recsys run` first"
    n = len(pipelines)
    return (
        f"no finished model runs in experiment {experiment!r}: its {n}{'+' if n == 50 else ''} pipeline run(s) have "
        "none (their models failed or were skipped: the reasons are in `recsys run`'s output and in `recsys ui`)"
    )


def model_runs(client: MlflowClient, experiment: str, max_runs: int = 50) -> list:
    """The newest finished model (child) runs of `experiment`."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise missing_experiment(client, experiment)
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
    """One row per model run with [ci_low, ci_high], grouped by lineage then split digest (newest
    split first), best `metric` first inside a group (smallest first for `lower_is_better` ones:
    folding); `delta_to_champion` is the difference to the
    current champion of `registered_model` measured on the same split (null where there is none)."""
    key = metric_key(metric)
    runs = model_runs(client, experiment, max_runs)
    if runs and not any(key in run.data.metrics for run in runs):
        raise TrackingError(unlogged_metric(metric, key, runs))
    champion_run = None
    if registered_model:
        version = alias_version(client, registered_model, CHAMPION)
        champion_run = version.run_id if version is not None else None
    levels = ci_levels(client, runs)
    rows = []
    for run in runs:
        m, tags = run.data.metrics, run.data.tags
        rows.append(
            {
                "lineage": tags.get(TAG_LINEAGE, ""),
                "split": tags.get(TAG_SPLIT_DIGEST, ""),
                "evaluation": evaluation_protocol(tags),
                "model": tags.get(TAG_MODEL, run.info.run_name),
                "kind": tags.get(TAG_MODEL_KIND, ""),
                "mean": m.get(key),
                "ci_low": m.get(f"{key}_ci_low"),
                "ci_high": m.get(f"{key}_ci_high"),
                "champion": run.info.run_id == champion_run,
                "run_id": run.info.run_id,
                "parent_run_id": tags.get("mlflow.parentRunId", ""),
                "ci_level": levels.get(tags.get("mlflow.parentRunId", "")),
                "started": run.info.start_time,
                "curve": {
                    int(k.rsplit("_", 1)[1]): v for k, v in m.items() if re.fullmatch(r"recall_at_\d+", k)
                },
            }
        )
    schema = {
        "lineage": pl.String, "split": pl.String, "model": pl.String, "kind": pl.String, "mean": pl.Float64,
        "ci_low": pl.Float64, "ci_high": pl.Float64, "champion": pl.Boolean, "run_id": pl.String,
        "parent_run_id": pl.String, "ci_level": pl.Float64, "started": pl.Int64, "evaluation": pl.String,
    }  # fmt: skip
    frame = pl.DataFrame([{k: r[k] for k in schema} for r in rows], schema=schema)
    reference = champion_by_split(client, champion_run, runs, key) if champion_run else {}
    lineage_of_champion = _run_tag(client, champion_run, TAG_LINEAGE) if champion_run else None
    baseline = pl.DataFrame(
        {"split": [s for s, _ in reference], "evaluation": [e for _, e in reference],
         "_champion_mean": list(reference.values())},
        schema={"split": pl.String, "evaluation": pl.String, "_champion_mean": pl.Float64},
    )  # fmt: skip
    frame = (
        frame.join(baseline, on=["split", "evaluation"], how="left")
        .with_columns(
            pl.from_epoch("started", time_unit="ms").dt.replace_time_zone("UTC"),
            pl.when(pl.col("lineage") == (lineage_of_champion or ""))
            .then(pl.col("mean") - pl.col("_champion_mean"))
            .otherwise(None)
            .alias("delta_to_champion"),
        )
        .drop("_champion_mean")
    )
    curves = pl.DataFrame(
        {"run_id": [r["run_id"] for r in rows], "curve": [sorted(r["curve"].items()) for r in rows]},
        schema={"run_id": pl.String, "curve": pl.List(pl.List(pl.Float64))},
    )
    group = ["lineage", "split", "evaluation"]
    newest = frame.group_by(group).agg(pl.col("started").max().alias("_newest"))
    return (
        frame.join(curves, on="run_id", how="left")
        .join(newest, on=group, how="left")
        .sort([*group[:1], "_newest", *group[1:], "mean"],
              descending=[False, True, False, False, not lower_is_better(metric)], nulls_last=True)
        .select([*COLUMNS, "curve"])
    )


def ci_levels(client: MlflowClient, runs: list) -> dict[str, float]:
    """parent run id -> the confidence level of its runs' intervals (`evaluation.confidence`, a
    param of the pipeline run; the model runs' `_ci_low` / `_ci_high` are at that level). Runs
    made with `--set evaluation.confidence=0.8` were shown under "95% CI" beside 95% ones."""
    parents = sorted({p for run in runs if (p := run.data.tags.get("mlflow.parentRunId"))})
    experiments = sorted({run.info.experiment_id for run in runs})
    out: dict[str, float] = {}
    for start in range(0, len(parents), 100):  # one search per 100 parents, not a call per run
        ids = ", ".join(f"'{p}'" for p in parents[start : start + 100])
        for parent in client.search_runs(experiments, filter_string=f"attributes.run_id IN ({ids})", max_results=100):
            try:
                out[parent.info.run_id] = float(parent.data.params["evaluation.confidence"])
            except (KeyError, ValueError):
                pass
    return out


def ci_header(frame: pl.DataFrame) -> tuple[str, bool]:
    """The interval column's header, and whether each cell must name its own level: "95% CI" when
    every row's interval is at one level (unknown counts as the default, 0.95), else "CI"."""
    column = frame.get_column("ci_level").to_list() if "ci_level" in frame.columns else []
    levels = {DEFAULT_LEVEL if v is None else v for v in column} or {DEFAULT_LEVEL}
    if len(levels) == 1:
        return f"{_level(levels.pop())} CI", False
    return "CI", True


DEFAULT_LEVEL = EvaluationConfig().confidence
"""The level of a run whose pipeline run logged none (deleted, or from before the param)."""


def _level(value: float) -> str:
    return f"{value * 100:.4g}%"


def unlogged_metric(metric: str, key: str, runs: list, what: str = "compared runs") -> str:
    """Why a --metric no compared run logged gives no table (it printed one with every value
    blank), with the test metrics they did log (validation_ / champion_ variants left out).
    `recsys registry` says the same of its listed versions' runs."""
    pairs = [
        metric_name(k).partition("@")
        for run in runs
        for k in run.data.metrics
        if re.fullmatch(r"[a-z_]+_at_\d+", k) and not k.startswith(("validation_", "val_", "champion_", "ann_"))
    ]
    names = ", ".join(sorted({name for name, _, _ in pairs}))
    ks = ", ".join(str(k) for k in sorted({int(k) for _, _, k in pairs}))
    choice = f"NAME@K with NAME one of {names} and K one of {ks}" if pairs else "a metric the runs logged"
    return f"metric {metric!r} ({key}) is not logged on any of the {len(runs)} {what}: choose --metric {choice}"


def champion_by_split(
    client: MlflowClient, champion_run: str, runs: list, key: str
) -> dict[tuple[str, str], float]:
    """(split digest, evaluation protocol) -> the champion's `key` measured on that split that way:
    its own run's value, and each re-scoring on a challenger's split (`champion_<key>` on runs
    tagged with the champion's id; scored with the challenger's evaluation config, so with its
    protocol). A full-corpus number is never the reference of a sampled one, nor the reverse.
    A re-scoring the promotion judged `not comparable` (test pairs the champion trained on, after a
    split change) is no reference: its number is inflated by that leak, and a delta to it said
    what the decision had refused to say. Nor is one with leaked test pairs whose decision tag
    `recsys promote --force` overwrote with `promoted`: after forcing a reseeded run to champion
    and forcing the old champion back, compare showed a delta to the old champion's re-scoring on
    the reseeded split (ML-100K: -0.127, 80% of its test pairs in the champion's training data)."""
    out: dict[str, float] = {}
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        digest = tags.get(TAG_SPLIT_DIGEST, "")
        if not _comparable_rescoring(tags, metrics):
            continue
        if tags.get(TAG_CHAMPION_REEVALUATED) == champion_run and f"{CHAMPION_METRIC_PREFIX}{key}" in metrics:
            out.setdefault((digest, evaluation_protocol(tags)), metrics[f"{CHAMPION_METRIC_PREFIX}{key}"])
    own = _run(client, champion_run)
    if own is not None and key in own.data.metrics:
        out[own.data.tags.get(TAG_SPLIT_DIGEST, ""), evaluation_protocol(own.data.tags)] = own.data.metrics[key]
    return out


def _comparable_rescoring(tags: dict, metrics: dict) -> bool:
    """Whether a run's `champion_*` re-scoring was made on test pairs the champion never saw: not
    judged `not comparable`, no leaked pair counted (`champion_test_seen_fraction`, logged by every
    re-scoring since it was added), and, when forced, a leak ruled out by that count."""
    if tags.get(TAG_DECISION) == NOT_COMPARABLE:
        return False
    seen = metrics.get(f"{CHAMPION_METRIC_PREFIX}test_seen_fraction")
    if seen is None:
        return tags.get(TAG_FORCED) != "true"
    return seen == 0


def _run(client: MlflowClient, run_id: str):
    try:
        return client.get_run(run_id)
    except Exception:  # the champion's run was deleted
        return None


def _run_tag(client: MlflowClient, run_id: str, tag: str) -> str | None:
    run = _run(client, run_id)
    return run.data.tags.get(tag) if run is not None else None


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def display_rows(frame: pl.DataFrame, metric: str) -> tuple[list[str], list[list[str]]]:
    """Header and string cells shared by every output format. Lineage and split are shown where a
    group starts (blank below it), so the eye sees where comparisons stop."""
    ci_name, per_cell = ci_header(frame)
    header = ["lineage", "split", "model", "kind", metric, ci_name, "Δ champion", "champion", "run", "started"]
    cells = []
    previous: tuple[str, str, str] | None = None
    for r in frame.iter_rows(named=True):
        ci = (
            f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
            if r["ci_low"] is not None and r["ci_high"] is not None
            else ""
        )
        if ci and per_cell:
            ci += f" {_level(r.get('ci_level') or DEFAULT_LEVEL)}"
        delta = f"{r['delta_to_champion']:+.4f}" if r["delta_to_champion"] is not None else ""
        started = r["started"].strftime("%Y-%m-%d %H:%M") if r["started"] is not None else ""
        evaluation = r.get("evaluation") or FULL_CORPUS
        group = (r["lineage"], r["split"], evaluation)
        shown = r["split"] or "?"
        if evaluation != FULL_CORPUS:  # never read as full-corpus numbers
            shown = f"{shown}, {evaluation} metrics"
        lineage, split = ("", "") if group == previous else (r["lineage"] or "?", shown)
        previous = group
        cells.append(
            [
                lineage,
                split,
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
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def rich_table(frame: pl.DataFrame, metric: str, width: int | None = None) -> GroupedTables:
    """The comparison for the terminal: one table per (lineage, split) group, titled with both, so
    a long data-source path wraps in the title instead of squeezing a column to a letter a line,
    and no row of one group sits in another's table. Fitted to `width` columns (recsys.tables):
    the model name stays whole; started, run, kind, CI and delta are left out, in that order, in
    every group's table alike, when it must."""
    from rich.table import Table

    from recsys.tables import add_name_column, fit_width

    header, cells = display_rows(frame, metric)
    groups: list[tuple[str, str, list[list[str]]]] = []
    for row in cells:
        if row[0] or row[1] or not groups:  # display_rows names lineage and split where a group starts
            groups.append((row[0], row[1], []))
        groups[-1][2].append(row[2:])
    header = header[2:]
    names = [row[0] for _, _, rows in groups for row in rows]
    optional = ["started", "run", "kind", header[3], "Δ champion"]

    def build(hidden: set[str]) -> GroupedTables:
        keep = [i for i, name in enumerate(header) if name not in hidden]
        tables = []
        for lineage, split, rows in groups:
            table = Table(title=f"lineage {lineage}, split {split}", title_justify="left")
            for i in keep:
                name = header[i]
                if name == "model":  # the one column rich must never shrink: which row is which model
                    add_name_column(table, name, names)
                else:
                    left = name in ("kind", "run")
                    table.add_column(name, justify="left" if left else "right", no_wrap=True, min_width=len(name))
            for row in rows:
                table.add_row(*(row[i] for i in keep))
            tables.append(table)
        order = f"{metric} (lower is better)" if lower_is_better(metric) else metric
        return GroupedTables(f"models by {order}, grouped by lineage and split (deltas only within a group)", tables)

    return fit_width(build, optional, width)


class GroupedTables:
    """A heading and one rich table per comparison group, printed one under the other; `caption`
    (what `recsys.tables.fit_width` writes its note to) is the last table's."""

    def __init__(self, heading: str, tables: list) -> None:
        self.heading, self.tables = heading, tables

    @property
    def caption(self) -> str | None:
        return self.tables[-1].caption if self.tables else None

    @caption.setter
    def caption(self, value: str | None) -> None:
        if self.tables:
            self.tables[-1].caption = value

    def __rich_console__(self, console, options):
        yield self.heading
        yield from self.tables


def plot_curves(frame: pl.DataFrame, path: str | Path) -> Path:
    """recall@k against k for the compared runs (`curve_labels`); a title says when the lines
    are of several splits, whose numbers do not compare (the table groups them, the plot cannot)."""
    from recsys.tracking.plots import plot_metric_at_k

    labels = curve_labels(frame)
    curves = {
        labels[r["run_id"]]: {f"recall@{int(k)}": v for k, v in r["curve"]} for r in frame.iter_rows(named=True)
    }
    splits = frame.select(["lineage", "split"]).unique().height
    title = f"{splits} splits: compare lines of one split only" if splits > 1 else None
    return plot_metric_at_k(curves, path, title=title)


def curve_labels(frame: pl.DataFrame) -> dict[str, str]:
    """run id -> `model (run, split digest)`, plus the data set (the lineage's config name and
    source file) when the runs are of several lineages: the legend of one config's runs on two data
    sets named only split digests, so curves of different data read as one comparison."""
    several = frame.get_column("lineage").n_unique() > 1
    labels = {}
    for r in frame.iter_rows(named=True):
        data = ""
        if several:
            name, _, source = (r["lineage"] or "?").partition("|")
            data = f", {name} on {source.rstrip('/').rsplit('/', 1)[-1] or '?'}"
        labels[r["run_id"]] = f"{r['model']} ({r['run_id'][:6]}, split {r['split'][:6] or '?'}{data})"
    return labels


def latest_pipeline_model_runs(
    client: MlflowClient, experiment: str, lineage: Lineage | None = None, stale_after_s: float = 0.0
) -> list[str]:
    """Finished model runs of the newest pipeline (parent) run that is no longer running: the
    default promotion candidates. A pipeline still running is skipped: `recsys promote` beside a
    `recsys run` took that run's few models finished so far (or failed: 'no finished model runs'),
    and the run promotes its own candidates when it ends.

    `lineage` (the config's): only a pipeline run of that lineage, or one from before lineages were
    tagged. One experiment holds every data set a config ran on (the experiment is named by the
    config), so the newest pipeline run can be another data set's, and `recsys promote --force`
    with the config of one data set handed that data set's line to the other's model.

    A newest run that did not go whole - KILLED (interrupted, its process or its tracking server
    killed), or RUNNING with its process gone (`liveness.taken_for_dead`, `stale_after_s` as in
    `tracking.stale_run_minutes`) - is refused, naming it: after the MLflow server died mid-run and
    came back, `recsys promote` said such a run "is still running: it promotes its own models when
    it ends" (it never would), and once the next start had closed it KILLED, it chose the champion
    among the models that run had logged before the kill (popularity alone, its two-tower never
    finished)."""
    from recsys.tracking.liveness import taken_for_dead

    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise missing_experiment(client, experiment)
    pipelines = f"tags.`{TAG_KIND}` = 'pipeline'"
    ended = f"{pipelines} and attributes.status != 'RUNNING'"

    def newest(filter_string: str, count: int = 1) -> list:
        return client.search_runs(
            [found.experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"],
            max_results=count,
        )  # fmt: skip

    def first_ended(runs: list) -> list:
        """The first of `runs` no longer running; a RUNNING run whose process is gone has ended too."""
        done = (r for r in runs if r.info.status != "RUNNING" or taken_for_dead(r.data.tags, stale_after_s))
        return [run] if (run := next(done, None)) is not None else []

    mine = pipelines if lineage is None else f"{pipelines} and tags.`{TAG_LINEAGE_ID}` = '{lineage.id}'"
    parents = first_ended(newest(mine, 50))
    if not parents and lineage is not None and (other := newest(ended)):
        theirs = other[0].data.tags.get(TAG_LINEAGE)
        if theirs is not None:
            raise TrackingError(
                f"experiment {experiment!r} has no pipeline run of this config's lineage {lineage.name!r} "
                f"(its newest is of {theirs!r}): give the --config / --set data.source=... that run used, "
                "or pass its model runs to --run-id"
            )
        parents = other  # from before lineages were tagged: as before
    if not parents:
        running = client.search_runs([found.experiment_id], filter_string=pipelines, max_results=1)
        if running:
            raise TrackingError(
                f"pipeline run {running[0].info.run_id} of experiment {experiment!r} is still running: it "
                "promotes its own models when it ends; to promote models now, pass their runs to --run-id"
            )
        raise TrackingError(f"experiment {experiment!r} has no pipeline runs; run `recsys run` first")
    if parents[0].info.status in ("KILLED", "RUNNING"):
        how = "KILLED" if parents[0].info.status == "KILLED" else "RUNNING, but its process is gone"
        raise TrackingError(
            f"the newest pipeline run {parents[0].info.run_id} of experiment {experiment!r} did not go whole "
            f"({how}: interrupted, or its process or tracking server was killed), so its models are not a "
            "run's candidates: run `recsys run` again (or, when its tracking server failed, `recsys run "
            "--resume-tracking DIR` with the directory its error line named), or pass the model runs to "
            "promote to --run-id"
        )
    parent = parents[0].info.run_id
    children = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'FINISHED'",
    )
    if not children:
        # why, and what to do: the bare "has no finished model runs" left a user whose every model had
        # failed (a diverged fit, a skipped EASE) no way forward
        ended = client.search_runs([found.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
        counts: dict[str, int] = {}
        for run in ended:
            counts[run.info.status] = counts.get(run.info.status, 0) + 1
        held = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none logged"
        raise TrackingError(
            f"the newest pipeline run {parent} of experiment {experiment!r} has no finished model runs ({held}): "
            "its models failed or were skipped (the reasons are in `recsys run`'s output and on its runs in "
            "`recsys ui`); fix them and `recsys run` again, or pass earlier model runs to --run-id "
            "(`recsys compare --format csv`, column run_id)"
        )
    return [c.info.run_id for c in children]
