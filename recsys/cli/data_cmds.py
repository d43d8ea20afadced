"""`recsys ingest`: raw interaction logs -> validated, quarantined, indexed processed directory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from recsys.cli.common import (  # noqa: F401
    DataConfigOption,
    JsonOption,
    SetOption,
    app,
    console,
    data_app,
    err_console,
    load_run_config,
    run_on,
    user_errors,
    writable_output,
    write_text_atomic,
)
from recsys.errors import ConfigError, RecsysError

if TYPE_CHECKING:
    from recsys.config import DataConfig

FORMAT_HELP = (
    "Force a reader: csv, tsv, parquet, jsonl, movielens (u.data), movielens-dat (ratings.dat), "
    "movielens-csv (ratings.csv), recbole (.inter). Default: detected from extension and content."
)


INGEST_FLAGS = {
    **{f"data.columns.{role}": f"--{role}-col {{value}}" for role in ("user", "item", "time", "weight", "event")},
    "data.processed_dir": "--out {value}",
    "data.positive_min_weight": "--min-rating {value}",
    "data.aggregate": "--aggregate {value}",
    "data.exact_duplicates": "--exact-duplicates {value}",
    "data.format": "--format {value}",
    "data.encoding": "--encoding {value}",
    "data.header": "--header {value}",
    "data.time_format": "--time-format {value}",
}
"""Settings that `recsys ingest` spells as its own flags (hints name these, not --set)."""


def source_path(text: str) -> Path:
    """SOURCE as given: an empty one (`recsys ingest "$LOG"` with LOG unset) was `Path("")`, the
    working directory, and ingest read every data-like file under it as a landing zone."""
    if not text.strip():
        raise typer.BadParameter("is empty: name an interaction file or directory (an unset shell variable?)")
    return Path(text)


source_path.__name__ = "path"  # the help's type column: `<path>`, as for every other path


@app.command("ingest")
@user_errors(flags=INGEST_FLAGS)
def ingest_command(
    source: Annotated[
        Path,
        typer.Argument(
            parser=source_path,
            help="Interaction file or directory: CSV/TSV (separated by , ; | tab or one space; a header "
            "line unless every field of the first line is a number, or --header names them), Parquet, JSON Lines, MovieLens, "
            "RecBole; UTF-8 text (else --encoding), .gz ok."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o",
            help="Processed data directory to write (replaced atomically; with --append, the directory the batch is added to).",
        ),
    ],
    format: Annotated[str | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
    encoding: Annotated[
        str | None,
        typer.Option(
            "--encoding",
            help="Text encoding of SOURCE when not UTF-8, e.g. latin-1 or cp1252 (Book-Crossing), utf-16 "
            "(data.encoding); a UTF-16 file with a byte-order mark is read as such without it.",
        ),
    ] = None,
    header: Annotated[
        str | None,
        typer.Option(
            "--header",
            metavar="NAMES",
            help="Comma-separated names of the fields of a delimited SOURCE without a header line, in order, "
            "e.g. session_id,timestamp,item_id,category (YOOCHOOSE clicks; data.header): read from its first line "
            "under these names, which --user-col etc. and automatic detection then map from; a directory's files "
            "are each read so (.gz too); a first line equal to NAMES is taken as the header, another header line "
            "or another number of fields is refused.",
        ),
    ] = None,
    user_col: Annotated[
        str | None,
        typer.Option("--user-col", help="Source column with user ids (default: auto, e.g. user_id, userId)."),
    ] = None,
    item_col: Annotated[
        str | None,
        typer.Option(
            "--item-col", help="Source column with item ids (default: auto, e.g. item_id, movieId)."
        ),
    ] = None,
    time_col: Annotated[
        str | None,
        typer.Option("--time-col", help="Timestamp column: Unix s/ms or ISO-8601, else see --time-format (default: auto, e.g. "
            "timestamp, time, date; none found: no times)."),
    ] = None,
    time_format: Annotated[
        str | None,
        typer.Option(
            "--time-format",
            metavar="LAYOUT",
            help="strftime layout of a time column that is neither Unix time nor ISO-8601, e.g. "
            "'%m/%d/%Y %H:%M' (12/1/2010 8:26), '%d.%m.%Y' or '%Y%m%d' (data.time_format); UTC unless %z.",
        ),
    ] = None,
    weight_col: Annotated[
        str | None,
        typer.Option("--weight-col", help="Rating / count / dwell column (default: auto, e.g. rating, weight, plays; none found: "
                     "every row weighs 1.0)."),
    ] = None,
    event_col: Annotated[
        str | None,
        typer.Option(
            "--event-col",
            help="Event-type column (optional; default: auto, e.g. event, event_type, behavior).",
        ),
    ] = None,
    event_weight: Annotated[
        list[str] | None,
        typer.Option(
            "--event-weight",
            help="EVENT=WEIGHT: a row of that event weighs WEIGHT (e.g. --event-weight view=1 --event-weight "
            "transaction=5); rows of events given no weight are dropped (reported) and repeated pairs sum "
            "(data.event_weights). Repeatable.",
        ),
    ] = None,
    min_rating: Annotated[
        float | None,
        typer.Option(
            "--min-rating",
            help="Positive rule: keep rows with weight >= this (e.g. 4); rows below it, negative ratings "
            "included, are not positive (not quarantined). Default: data.positive_min_weight (unset: no "
            "threshold).",
        ),
    ] = None,
    aggregate: Annotated[
        Literal["auto", "count", "sum", "max", "last"] | None,
        typer.Option(
            "--aggregate",
            help="How repeated (user, item) pairs combine: auto (default: sum of the weight column, or count without one), count, sum, max or last (the latest: for ratings; auto warns when it sums a rating column).",
        ),
    ] = None,
    exact_duplicates: Annotated[
        Literal["quarantine", "keep"] | None,
        typer.Option(
            "--exact-duplicates",
            help="A row equal to an earlier one in every column read: quarantine (default: a copied row) or "
            "keep (a repeated event, counted by count and added by sum: for click / view logs without times "
            "or with dates only; an --append then counts a row equal to an earlier batch's too, but an --append of a "
            "file whose content is already in --out adds nothing) (data.exact_duplicates).",
        ),
    ] = None,
    min_user_interactions: Annotated[
        int | None,
        typer.Option("--min-user-interactions", min=1, help="k-core: users need at least N items (default: data.min_user_interactions, 1)."),
    ] = None,
    min_item_interactions: Annotated[
        int | None,
        typer.Option("--min-item-interactions", min=1, help="k-core: items need at least N users (default: data.min_item_interactions, 1)."),
    ] = None,
    append: Annotated[
        bool,
        typer.Option(
            "--append",
            help="Add SOURCE as a new batch to an existing --out (vocab indices stay stable); a SOURCE "
            "without a row (a header only), or with the same content as a batch already in --out (a re-run "
            "after a kill), leaves --out unchanged, with a warning.",
        ),
    ] = False,
    allow_same_content: Annotated[
        bool,
        typer.Option(
            "--allow-same-content",
            help="With --append: add SOURCE even when a batch of --out holds the same content (byte for "
            "byte): only for a log whose rows are repeated events (--exact-duplicates keep) that really "
            "happened again.",
        ),
    ] = False,
    json_out: JsonOption = None,
    config: DataConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Ingest interaction logs: validate every row (bad rows go to a quarantine Parquet with a
    reason), convert to implicit feedback (positive rule, aggregation, k-core) and write an
    indexed, fingerprinted processed directory that `recsys run` and splits load.

    Example: recsys ingest ml-100k.inter --out data/processed/ml-100k --min-rating 4 --json summary.json
    """
    from recsys.data.ingest import ingest, replaced_since
    from recsys.data.storage import is_processed_dir
    from recsys.errors import AlreadyIngested, NoDataRows
    from recsys.faults import fault_point

    if allow_same_content and not append:
        raise ConfigError("--allow-same-content applies to --append only: add --append, or leave it out")
    if time_format is not None:
        from recsys.config import strftime_layout

        try:
            strftime_layout(time_format)
        except ValueError as exc:
            raise ConfigError(f"--time-format: {exc}") from None
    configured = data = load_run_config(config, overrides).data
    writable_output(json_out, "--json")
    column_flags = {
        "user": user_col,
        "item": item_col,
        "time": time_col,
        "weight": weight_col,
        "event": event_col,
    }
    columns = data.columns.model_copy(update={k: v for k, v in column_flags.items() if v is not None})
    updates = {
        "columns": columns,
        "positive_min_weight": min_rating,
        "aggregate": aggregate,
        "exact_duplicates": exact_duplicates,
        "min_user_interactions": min_user_interactions,
        "min_item_interactions": min_item_interactions,
        "encoding": encoding,
        "header": _header(header),
        "time_format": time_format,
    }
    if event_weight:
        updates["event_weights"] = {**(data.event_weights or {}), **_event_weights(event_weight)}
    data = data.model_copy(update={k: v for k, v in updates.items() if v is not None})

    empty = None
    with console.status("ingesting ...") as status:

        def progress(stage: str) -> None:
            status.update(f"ingest: {stage} ...")
            if stage.startswith("waiting for") and not err_console.is_terminal:  # no status line shows
                err_console.print(stage, markup=False, highlight=False)

        try:
            report = ingest(
                source, out, data, format=format, append=append, progress=progress, same_content=allow_same_content
            )
        except AlreadyIngested as exc:
            empty = exc  # an append re-run: nothing to add, and saying so is success
        except NoDataRows as exc:
            if not (append and is_processed_dir(Path(out))):
                raise  # nothing to write a directory from: the one-line error
            empty = exc
    if empty is not None:
        again = "; add --allow-same-content to append it again" if isinstance(empty, AlreadyIngested) else ""
        _nothing_appended(empty, Path(out), json_out, again)
        return
    fault_point("ingest.done")  # the lock is released: another writer may replace the directory now
    _print_report(report, event_weighted=bool(data.event_weights))
    if report.planted:
        console.print("blocks:         the generator's planted clusters (folding@k measured on them)")
    replaced = replaced_since(report)  # checked after the summary, as late as it can be
    earlier = None if append else _earlier_batches(report, source)
    for warning in report.warnings + [w for w in (earlier, replaced) if w]:
        err_console.print(f"warning: {warning}", style="yellow", markup=False)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(report.to_json_dict(), indent=2) + "\n")
    sets, runnable = [*(overrides or []), *shaping_sets(data, configured)], False
    if config is None:  # `recsys run` without --config loads the default config: the line says what differs
        try:
            run_data = load_run_config(None, overrides, default=True).data
        except RecsysError:  # no default config here, or the overrides do not fit it: FILE stands in
            pass
        else:
            sets, runnable = [*(overrides or []), *shaping_sets(data, run_data)], True
    run_on(report.out_dir, config, sets, runnable=runnable)


def _header(names: str | None) -> list[str] | None:
    """`--header a,b,c` as data.header's list; a bad one is a one-line error naming the flag."""
    from recsys.config import header_names

    if names is None:
        return None
    try:
        return header_names(names)
    except ValueError as exc:
        raise ConfigError(f"--header {names!r}: {exc}") from None


def _nothing_appended(empty: Exception, out: Path, json_out: Path | None, hint: str = "") -> None:
    """An `--append` of a file with no row (a scheduled export of a quiet day), or of content a
    batch already holds (the step re-run after a kill): nothing to add, so the directory stays as
    it was and the command succeeds with a warning, instead of failing the schedule or counting
    the rows twice; `--json` then describes the unchanged directory, with 0 rows in."""
    from recsys.data.ingest import JSON_KEYS
    from recsys.data.storage import read_manifest

    manifest = read_manifest(out)
    err_console.print(
        f"warning: {empty}: nothing appended, {out} is unchanged ({manifest['interactions']:,} interactions){hint}",
        style="yellow", markup=False,
    )  # fmt: skip
    if json_out is not None:
        summary = {key: 0 if key.startswith("rows_") else manifest[key] for key in JSON_KEYS}
        write_text_atomic(json_out, json.dumps(summary, indent=2) + "\n")


def shaping_sets(used: DataConfig, configured: DataConfig) -> list[str]:
    """`data.KEY=VALUE` for each setting that shapes a processed directory (`pipelines.data.SHAPING`)
    that this ingest's flags changed from the config's: a run on the directory needs them to agree
    with how it was made. Values are spelled as TOML literals, which is how `--set` reads them."""
    from pipelines.data import SHAPING

    return [
        f"data.{key}={_toml_literal(getattr(used, key))}"
        for key in SHAPING
        if getattr(used, key) != getattr(configured, key)
    ]


def _toml_literal(value: object) -> str:
    """JSON spells TOML's strings, numbers, booleans and arrays; a table needs `key = value`; a word
    that `--set` reads back as itself goes bare (`data.aggregate=last`)."""
    from recsys.config import _parse_value

    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {json.dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and value.isidentifier() and _parse_value(value) == value:
        return value
    return json.dumps(value)


def _event_weights(pairs: list[str]) -> dict[str, float]:
    """`--event-weight view=1 --event-weight transaction=5` -> {"view": 1.0, "transaction": 5.0}."""
    weights: dict[str, float] = {}
    for pair in pairs:
        event, _, raw = pair.rpartition("=")
        try:
            weight = float(raw)
        except ValueError:
            weight = float("nan")
        if not event.strip() or not math.isfinite(weight) or weight <= 0:
            raise ConfigError(
                f"--event-weight {pair!r}: expected EVENT=WEIGHT with a positive number, e.g. --event-weight "
                "transaction=5 (leave an event out to drop its rows)"
            )
        weights[event.strip()] = weight
    return weights


def _earlier_batches(report, source: Path) -> str | None:
    """A `warning:` line when ingest without --append replaced a processed directory that held more
    than this source's one batch (day two: `recsys ingest today.csv --out DIR` without --append put
    today's rows in place of every earlier batch without a word); None when --out was new,
    unreadable or held only an earlier ingest of this source. The batches are the ones ingest read
    under the directory's writer lock (`IngestReport.replaced_batches`)."""
    batches = report.replaced_batches
    if not batches:
        return None
    out = report.out_dir
    names = [Path(str(b.get("source", "?"))).name for b in batches]  # as given: relative or not
    if names == [Path(source).name]:
        return None  # the same command run again: replacing is what it asks for
    rows = sum(int(b.get("rows_in", 0)) for b in batches)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"{out} held {len(batches)} batch(es) ({rows:,} rows in: {shown}); without --append they were "
        f"replaced by {Path(source).name} alone: add --append to add a batch and keep the earlier ones"
    )


def _print_report(report, event_weighted: bool = False) -> None:
    rows = Table(
        title=f"ingest of batch {report.batch} ({report.format})", show_header=False, title_justify="left"
    )
    rows.add_column("what")
    rows.add_column("value", justify="right")
    rows.add_row("rows in", f"{report.rows_in:,}")
    rows.add_row("rows accepted", f"{report.rows_accepted:,}")
    if report.rows_without_time:  # kept, but without a time: a temporal split may refuse them
        rows.add_row("  without a time", f"{report.rows_without_time:,}")
    rows.add_row("rows quarantined", f"{report.rows_quarantined:,}")
    for reason, count in sorted(report.reasons.items(), key=lambda kv: -kv[1]):
        rows.add_row(f"  {reason}", f"{count:,}")
    console.print(rows)

    steps = Table(title="filter steps", title_justify="left")
    for name in ("step", "rows", "users", "items"):
        steps.add_column(name, justify="left" if name == "step" else "right")
    for step in report.steps:
        steps.add_row(step.name, f"{step.rows:,}", f"{step.users:,}", f"{step.items:,}")
    console.print(steps)

    console.print(
        f"[bold]{report.users:,}[/] users, [bold]{report.items:,}[/] items, "
        f"[bold]{report.interactions:,}[/] interactions"
    )
    from recsys.data.readers import describe_columns

    console.print(f"columns:        {describe_columns(report.mapping, event_weighted)}", markup=False, highlight=False)
    console.print(f"fingerprint:    [cyan]{report.fingerprint}[/]")
    console.print(f"processed data: {report.out_dir}")
    if report.rows_quarantined:
        console.print(f"quarantine:     {report.quarantine_path}")
    console.print(f"took {report.seconds:.2f} s", style="dim")
