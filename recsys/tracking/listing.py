"""What the model registry holds, for `recsys registry`: every registered model, its newest
versions and the ones carrying an alias (champion, challenger), each with its model, promotion
metric, decision, run, data fingerprint and split digest.

The MLflow UI shows the same registry one model at a time and without the recsys tags (model
name, data fingerprint, promotion decision); this puts one line per version in a terminal table,
markdown or JSON. Aliased versions are always listed, however old, so the serving champion is
never cut off by `--versions`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from recsys.errors import TrackingError
from recsys.lineage import TAG_LINEAGE
from recsys.tables import add_name_column, fit_width
from recsys.tracking.registry import TAG_DECISION, TAG_FORCED
from recsys.tracking.runs import TAG_FINGERPRINT, TAG_MODEL, TAG_MODEL_KIND, TAG_SPLIT_DIGEST
from recsys.tracking.store import metric_key

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from rich.table import Table

FINGERPRINT_CHARS = 12
"""Characters of the data fingerprint shown in the table (the JSON has all of it)."""


@dataclass(frozen=True)
class VersionRow:
    """One registered model version; `metric` is the run's test value of the listing's metric."""

    version: str
    aliases: list[str]
    model: str
    kind: str
    metric: float | None
    decision: str
    run_id: str
    fingerprint: str
    created: str  # ISO-8601 UTC
    forced: bool = False  # promoted by `recsys promote --force` over the rule's verdict
    split: str = ""  # the digest of the split its metric was scored on: values on other splits do not compare


@dataclass(frozen=True)
class RegisteredModelRow:
    name: str
    lineage: str
    aliases: dict[str, str]  # alias -> version
    n_versions: int
    versions: list[VersionRow] = field(default_factory=list)


def list_registry(
    client: MlflowClient, metric: str, name: str | None = None, max_versions: int = 10
) -> list[RegisteredModelRow]:
    """Registered models by name (only `name` when given), each with its `max_versions` newest
    versions plus every aliased one, newest first. An unknown `name` is a TrackingError naming the
    models the store does hold."""
    names = sorted(m.name for m in _all_registered_models(client))
    if name is not None:
        if name not in names:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            hint = f"pass --model one of {shown}" if names else "run `recsys run` first (it registers every model)"
            raise TrackingError(f"no registered model {name!r} in {client.tracking_uri}: {hint}")
        names = [name]
    runs: list[Any] = []  # every listed version's run, for the check below
    models = [_registered_model(client, n, metric, max_versions, runs) for n in names]
    if runs and not any(metric_key(metric) in run.data.metrics for run in runs):
        # a mistyped --metric (recal@20) listed every version with an empty metric column, exit 0
        from recsys.tracking.compare import unlogged_metric

        raise TrackingError(unlogged_metric(metric, metric_key(metric), runs, "listed versions' runs"))
    return models


def _all_registered_models(client: MlflowClient) -> list[Any]:
    models, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        models += list(page)
        token = page.token
        if not token:
            return models


def _registered_model(
    client: MlflowClient, name: str, metric: str, max_versions: int, runs: list[Any]
) -> RegisteredModelRow:
    registered = client.get_registered_model(name)
    aliases = {alias: str(version) for alias, version in sorted(registered.aliases.items())}
    quoted = name.replace("'", "\\'")
    versions = sorted(
        client.search_model_versions(f"name = '{quoted}'"), key=lambda v: int(v.version), reverse=True
    )
    aliased = set(aliases.values())
    shown = [v for i, v in enumerate(versions) if i < max_versions or str(v.version) in aliased]
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    rows = [_version_row(client, v, metric, by_version.get(str(v.version), []), runs) for v in shown]
    return RegisteredModelRow(name, registered.tags.get(TAG_LINEAGE, ""), aliases, len(versions), rows)


def _version_row(client: MlflowClient, version: Any, metric: str, aliases: list[str], runs: list[Any]) -> VersionRow:
    """The version's row; its run (when it still exists) is appended to `runs`."""
    run = None
    if version.run_id:
        try:
            run = client.get_run(version.run_id)
        except Exception:  # the run was deleted: the version still serves, list what is known
            run = None
    if run is not None:
        runs.append(run)
    tags = run.data.tags if run is not None else {}
    value = run.data.metrics.get(metric_key(metric)) if run is not None else None
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, tz=UTC).isoformat(timespec="seconds")
    return VersionRow(
        version=str(version.version),
        aliases=sorted(aliases),
        model=version.tags.get(TAG_MODEL) or tags.get(TAG_MODEL, ""),
        kind=tags.get(TAG_MODEL_KIND, ""),
        metric=value,
        decision=version.tags.get(TAG_DECISION, ""),
        run_id=version.run_id or "",
        fingerprint=tags.get(TAG_FINGERPRINT, ""),
        created=created,
        forced=version.tags.get(TAG_FORCED) == "true",
        split=tags.get(TAG_SPLIT_DIGEST, ""),
    )


def to_json(models: list[RegisteredModelRow], metric: str, tracking_uri: str) -> dict[str, Any]:
    return {"tracking_uri": tracking_uri, "metric": metric, "registered_models": [asdict(m) for m in models]}


HEADER = ("registered model", "version", "aliases", "model", "kind", "{metric}", "decision", "run", "data", "split",
          "created")  # fmt: skip
OPTIONAL = ("kind", "created", "data", "run", "decision", "model", "split")
"""Columns left out, first first, when the terminal is too narrow."""


def display_rows(models: list[RegisteredModelRow], metric: str) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the table and markdown; a registered model's name is shown on its
    first row only."""
    header = [h.format(metric=metric) for h in HEADER]
    cells = []
    for model in models:
        if not model.versions:
            cells.append([model.name, *[""] * (len(header) - 1)])
        for i, v in enumerate(model.versions):
            cells.append(
                [
                    model.name if i == 0 else "",
                    v.version,
                    ", ".join(v.aliases),
                    v.model,
                    v.kind,
                    f"{v.metric:.4f}" if v.metric is not None else "",
                    f"{v.decision} (forced)" if v.forced else v.decision,  # not the rule's verdict
                    v.run_id[:8],
                    v.fingerprint[:FINGERPRINT_CHARS],
                    v.split[:FINGERPRINT_CHARS],
                    v.created[:16].replace("T", " "),
                ]
            )
    return header, cells


def render_markdown(models: list[RegisteredModelRow], metric: str) -> str:
    header, cells = display_rows(models, metric)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def rich_table(models: list[RegisteredModelRow], metric: str, width: int | None = None) -> Table:
    """The listing as a rich table fitted to `width` (optional columns dropped, named in the caption);
    the champion's row is bold."""
    from rich.table import Table

    header, cells = display_rows(models, metric)
    champion_rows = [i for i, row in enumerate(cells) if "champion" in row[2].split(", ")]

    def build(hidden: set[str]) -> Table:
        table = Table(title="model registry", title_style="bold")
        keep = [i for i, h in enumerate(header) if h not in hidden]
        for i in keep:
            # every column as wide as its widest cell: rich cut cells to "challeng…" and
            # "recall@…" instead of leaving a column out (fit_width then drops the optional ones)
            width = max([len(header[i]), *(len(row[i]) for row in cells)])
            if i == 0:
                add_name_column(table, header[0], [row[0] for row in cells])
            else:
                justify = "right" if header[i] in (metric, "version") else "left"
                table.add_column(header[i], justify=justify, no_wrap=True, min_width=width)
        for r, row in enumerate(cells):
            table.add_row(*(row[i] for i in keep), style="bold" if r in champion_rows else None)
        return table

    return fit_width(build, OPTIONAL, width)
