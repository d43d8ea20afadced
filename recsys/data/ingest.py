"""`ingest`: read -> validate (quarantine) -> store batch -> implicit conversion -> vocab -> manifest.

The public entry point of the data layer; the CLI (`recsys ingest`), the pipeline step and
`data combine` all call `ingest`, and other readers of raw files call `read_canonical`.

Incremental ingest (`append=True`) stores the new validated rows as one more batch and re-derives
the implicit table from *all* batches, so a (user, item) pair seen in several batches is aggregated
once (counts add up, `last` takes the latest) and k-core sees the whole history. Rows that exactly
repeat a row of an earlier batch are quarantined as `duplicate`; under data.exact_duplicates =
"keep" (repeated events of a log without fine times) they are counted, as they would be in one
ingest of all batches. So that an append re-run (after a kill that came once its batch had landed)
adds nothing under either rule, each batch records its source's content digest, and an append of
content a batch already holds raises AlreadyIngested before reading it (`recsys.data.source_stamp`).
The vocab only grows: old indices never move.

The whole call - reading the previous manifest, staging, swapping in - holds the directory's writer
lock (`storage.writer_lock`), so concurrent appends run one after the other and both land, and
whatever a killed writer left is finished or undone first. `sidecar_files` are JSON files written in
the same swap as the batch (the pipeline's record of which raw files are in), so a kill can never
leave a batch in without its record, or the record without its batch.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from recsys.config import ColumnMap, DataConfig
from recsys.data import storage
from recsys.data.batches import aligned_ids, all_rows
from recsys.data.encoding import Transcoded, utf8_source
from recsys.data.implicit import NEGATIVE_WEIGHT_STEP, ORDER, ZERO_WEIGHT_STEP, FilterStep, to_implicit
from recsys.data.readers import (
    BOOLEAN_ID,
    MALFORMED_JSON,
    ROW,
    SOURCE_FILE,
    RawSource,
    base_name,
    column_label,
    column_name,
    first_error_line,
    name_column,
    row_numbers,
    scan_source,
)
from recsys.data.remote import as_url, local_path_of
from recsys.data.schema import EVENT, FIRST_SEEN, ITEM, ITEM_IDX, TIME, USER, USER_IDX, WEIGHT
from recsys.data.sorting import sort_in_parallel
from recsys.data.source_stamp import (
    SourceStamp,
    changed_error,
    changed_files,
    content_digest,
    source_paths,
    stat_files,
)
from recsys.data.suspicions import session_column, suspicions
from recsys.data.validation import REASON, ValidationResult, guess_time_format, validate
from recsys.data.vocab import Vocab
from recsys.errors import AlreadyIngested, DataError
from recsys.faults import fault_point

MANIFEST_VERSION = 1
JSON_KEYS = ("rows_in", "rows_accepted", "rows_quarantined", "users", "items", "interactions", "fingerprint")

Progress = Callable[[str], None]


@dataclass
class IngestReport:
    """What one ingest call did. rows_* count this call's source (rows_in == accepted + quarantined);
    users / items / interactions / fingerprint describe the whole processed set afterwards.
    `replaced_batches`: the manifest's batches that a non-append ingest replaced, read under the
    writer lock, so they are what the directory held when this call swapped its data in (read
    before the lock, an append that ran while this call waited was replaced but not named)."""

    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    users: int
    items: int
    interactions: int
    fingerprint: str
    steps: list[FilterStep]
    out_dir: Path
    quarantine_path: Path | None
    seconds: float
    reasons: dict[str, int] = field(default_factory=dict)
    batch: int = 1
    format: str = ""
    mapping: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one line each, also in the manifest
    planted: bool = False  # the vocab's blocks are a `recsys data synth` folder's planted clusters
    ingest_id: str = ""  # this call's batch's "ingest_id" in the manifest (`replaced_since`)
    replaced_batches: list[dict] = field(default_factory=list)  # a non-append ingest's predecessors
    rows_without_time: int = 0  # accepted rows with an empty time where the log has a time column

    def to_json_dict(self) -> dict[str, int | str]:
        return {key: getattr(self, key) for key in JSON_KEYS}


def read_canonical(
    source: str | Path,
    format: str | None = None,
    columns: ColumnMap | None = None,
    *,
    max_future_days: float = 1.0,
    decimal: str = "auto",
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Read and validate one source without storing anything.

    Returns (accepted rows in the canonical schema + source_row, quarantined raw rows with reason,
    rows_in). Raises DataError when the file cannot be read at all."""
    result = validate(scan_source(source, format, columns), max_future_days, decimal=decimal)
    return result.accepted, result.quarantine, result.rows_in


def _writable_place(out_dir: Path) -> None:
    """Refuse early, in one line, an output that cannot be created: a file where a folder must
    go (`--out file.csv/sub`), a read-only or virtual file system (`/proc/x`)."""
    ancestor = out_dir.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    problem = None
    if not ancestor.is_dir():
        problem = f"{ancestor} is a file, not a directory"
    else:
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryDirectory(prefix=".recsys-probe-", dir=out_dir.parent).cleanup()
        except OSError as exc:
            problem = exc.strerror or str(exc)
    if problem:
        raise DataError(
            f"cannot write the processed data ({out_dir}: {problem}): choose another {{option}}",
            setting="data.processed_dir",
            value="DIR",
        )


def _check_readable(paths) -> None:
    """Every earlier batch must be whole Parquet before an append builds on it (reads only the
    footers): a damaged one is a one-line error, not a failure half-way through the append."""
    for path in paths:
        try:
            pl.read_parquet_schema(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise DataError(
                f"processed data is damaged ({path}: {first_error_line(exc)}): ingest again into a new --out "
                "(or without --append) to rebuild it"
            ) from None


def _prepare_out_dir(out_dir: Path, append: bool) -> dict | None:
    """The existing manifest when appending to a processed dir; refuse to overwrite foreign dirs."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: output exists and is not a directory")
    if storage.is_processed_dir(out_dir):
        return storage.read_manifest(out_dir) if append else None
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir}: output directory is not empty and is not a processed data directory")
    return None


def _held_batches(out_dir: Path) -> list[dict]:
    """The batches of the processed directory at `out_dir` ([] when there is none, or its manifest
    cannot be read: the ingest replaces it either way, and says what is wrong where it must)."""
    if not storage.is_processed_dir(out_dir):
        return []
    try:
        return list(storage.read_manifest(out_dir).get("batches", []))
    except DataError:
        return []


def _cross_batch_repeats(result: ValidationResult, previous: list[tuple[int, pl.LazyFrame]]) -> np.ndarray:
    """True for each accepted row of `result` that exactly repeats a row of an earlier batch.

    Rows compare on every canonical column; a batch without an event column has null events, so a
    `buy` never repeats a row stored without its event type. Only earlier rows of this batch's
    users are compared, so a small append to a large history does not hash the whole history."""
    *earlier_frames, new = aligned_ids([frame for _, frame in previous] + [result.rows.lazy()])
    schemas = [frame.collect_schema().names() for frame in [*earlier_frames, new]]
    keys = [c for c in (USER, ITEM, TIME, WEIGHT, EVENT) if any(c in names for names in schemas)]

    def comparable(frame: pl.LazyFrame, names: list[str]) -> pl.LazyFrame:
        # EVENT is the one optional canonical column (see schema.OPTIONAL_COLUMNS).
        return frame.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in keys if c not in names)

    new = comparable(new, schemas[-1]).with_row_index("_i")
    earlier = pl.concat(
        [comparable(f, names).select(keys) for f, names in zip(earlier_frames, schemas[:-1], strict=True)],
        how="vertical_relaxed",
    )
    earlier = earlier.join(new.select(pl.col(USER).unique()), on=USER, how="semi")
    repeated = new.join(earlier, on=keys, how="semi", nulls_equal=True).select("_i").collect()
    repeat_mask = np.zeros(result.rows.height, dtype=bool)
    repeat_mask[repeated.get_column("_i").to_numpy()] = True
    return repeat_mask


def _drop_cross_batch_duplicates(
    result: ValidationResult, raw: RawSource, previous: list[tuple[int, pl.LazyFrame]]
) -> ValidationResult:
    """Move accepted rows that exactly repeat a row of an earlier batch into the quarantine
    (`_cross_batch_repeats`), so an append of rows already ingested does not count them twice."""
    if not previous:
        return result
    repeat_mask = _cross_batch_repeats(result, previous)
    if not repeat_mask.any():
        return result
    is_repeat = pl.Series(repeat_mask)
    moved = _source_text(raw, result.rows.filter(is_repeat)).with_columns(pl.lit("duplicate").alias(REASON))
    order = [SOURCE_FILE, ROW] if raw.per_file else [ROW]
    quarantine = pl.concat([result.quarantine, moved], how="vertical_relaxed").sort(order)
    reasons = dict(result.reasons)
    reasons["duplicate"] = reasons.get("duplicate", 0) + moved.height
    return ValidationResult(
        rows=result.rows.filter(~is_repeat),
        quarantine=quarantine,
        rows_in=result.rows_in,
        reasons=reasons,
    )


def _all_repeated_note(result: ValidationResult, previous: list[tuple[int, pl.LazyFrame]]) -> list[str]:
    """Under data.exact_duplicates = "keep" an appended row equal to an earlier batch's row is a
    repeated event and is counted, as it would be in one ingest of both files; so an append of a
    file already ingested counts it twice. Nothing tells the two apart row by row, but a batch
    whose every row repeats earlier rows is most likely such a re-run: say so (one line)."""
    if not previous or result.rows.height == 0 or not _cross_batch_repeats(result, previous).all():
        return []
    return [
        f"every accepted row of this batch ({_rows(result.rows.height)}) equals a row of an earlier batch, and "
        "with data.exact_duplicates = keep they are counted again as repeated events: if this file was "
        "ingested before, ingest the batches afresh without it"
    ]


def _source_text(raw: RawSource, rows: pl.DataFrame) -> pl.DataFrame:
    """The source's own values, as text, of `rows` (found by ROW, and SOURCE_FILE for a
    directory), in the quarantine's columns: what validation shows for any quarantined row.
    Reads the source again, which only an append that repeats earlier rows pays for."""
    on = [SOURCE_FILE, ROW] if raw.per_file else [ROW]
    wanted = rows.lazy().select(on)
    frame = raw.frame.with_columns(row_numbers(raw.per_file)) if raw.positional_rows else raw.frame
    text = [pl.col(c).cast(pl.String) for c in raw.columns]
    try:
        return frame.join(wanted, on=on, how="semi").select(ROW, *text).collect()
    except pl.exceptions.PolarsError:
        if raw.exact is None:  # the source read once, so this is unexpected: keep the parsed values
            return rows.select(ROW, *text)
        # JSON Lines whose lazy decode fails (or a tab-separated file whose quoted read fails):
        # validation read the rebuild, so do the same.
        rebuilt = raw.exact().with_columns(row_numbers(raw.per_file)) if raw.positional_rows else raw.exact()
        return rebuilt.join(wanted, on=on, how="semi").select(ROW, *text).collect()


_REASON_FIX: dict[str, tuple[str, str]] = {
    "missing_user": (USER, "user"),
    "missing_item": (ITEM, "item"),
    "bad_timestamp": (TIME, "time"),
    "future_timestamp": (TIME, "time"),
    "bad_weight": (WEIGHT, "weight"),
    "non_finite_weight": (WEIGHT, "weight"),
    "negative_weight": (WEIGHT, "weight"),
}


def _bad_times(result: ValidationResult, n: int = 1000) -> list[str]:
    """Some of the time values quarantined as bad_timestamp, as written (for `guess_time_format`)."""
    bad = result.quarantine.filter(pl.col(REASON) == "bad_timestamp")
    return [] if TIME not in bad.columns else bad.get_column(TIME).head(n).cast(pl.String).drop_nulls().to_list()


def _nothing_accepted(source: str | Path, raw: RawSource, result: ValidationResult) -> DataError:
    """The error for a first ingest whose every row was quarantined: say why, with the first
    such row's value, and which column setting to look at. Without it the user would read "no
    interactions left after filtering" and look in the wrong place (nothing is written, so the
    quarantine file that says why is not there to open). A timestamp column in a format the
    reader does not parse (US dates `09/13/2005`, `Mon Aug 01 13:41:57 -0700 2016`) is the usual
    cause."""
    counts = ", ".join(f"{reason}: {n}" for reason, n in result.reasons.items())
    top = next(iter(result.reasons))
    canon, attr = _REASON_FIX.get(top, (USER, "user"))
    first = result.quarantine.filter(pl.col(REASON) == top).row(0, named=True)
    where = f"row {first[ROW]}" + (f" of {first[SOURCE_FILE]}" if SOURCE_FILE in first else "")
    column = raw.mapping.get(canon, canon)
    value = f"{column_name(column)} is {first.get(canon)!r}"
    fix = "check that column"
    names = name_column(raw.header, raw.mapping.get(canon)) if top in ("missing_item", "missing_user") else None
    if names is not None:  # Last.fm's often-empty MusicBrainz ids, Steam reviews' user_id on some lines
        return DataError(
            f"{source}: no row passed validation ({counts}; {where}: {value}): {names!r} names the same "
            f"{attr}s: read it as the {attr} with {{option}}",
            setting=f"data.columns.{attr}",
            value=names,
        )
    if top == "bad_timestamp":
        fix = "timestamps must be Unix seconds or milliseconds or ISO-8601 (2005-09-13T12:00:00); convert it"
        guess = guess_time_format(_bad_times(result))
        if guess is not None:  # day and month in some order (UCI Online Retail's `12/1/2010 8:26`)
            layout, said = guess
            return DataError(
                f"{source}: no row passed validation ({counts}; {where}: {value}): timestamps must be Unix seconds "
                f"or milliseconds or ISO-8601, else their layout named: {{option}} reads these ({said}), or name "
                "another time column with {option:data.columns.time=NAME}",
                setting="data.time_format",
                value=f"'{layout}'",
            )
    if top == BOOLEAN_ID:
        canon, attr = (ITEM, "item") if first.get(ITEM) in ("true", "false") else (USER, "user")
        column = raw.mapping.get(canon, canon)
        value = f"{column_name(column)} is {first.get(canon)!r}"
        fix = "an id is a string or a number, not true / false: that key is likely a flag, not the id"
    if top == MALFORMED_JSON:
        value = "not one JSON object with plain values"
        fix = (
            f"each line must be one JSON object whose keys read ({', '.join(raw.mapping.values())}) hold "
            "strings or numbers, not objects or lists (flatten them first, e.g. with jq)"
        )
    return DataError(
        f"{source}: no row passed validation ({counts}; {where}: {value}): {fix}, or name another "
        f"{attr} column with {{option}}",
        setting=f"data.columns.{attr}",
    )


def _write_batch(result: ValidationResult, batch_path: Path, quarantine_path: Path) -> None:
    """Store this call's validated rows (ids as UInt32 or UInt64 codes where all are canonical
    decimals, see `storage.scan_batches`) and its quarantine."""
    batch_path.parent.mkdir(parents=True)
    storage.write_table(result.rows, batch_path)
    quarantine_path.parent.mkdir(parents=True, exist_ok=True)
    result.quarantine.write_parquet(quarantine_path)


def _sorted_by_pair(indexed: pl.LazyFrame) -> pl.DataFrame:
    """The implicit table in its stored order, by (user_idx, item_idx): one row per pair, so the
    order does not depend on the order the joins produced. Sorted on one packed key (cheaper
    than a two-column sort), after the joins are collected: inside the same query polars picks
    its multithreaded sort, which on two cores beside the background writer costs more CPU for
    no shorter wall time (`sort_in_parallel`). The joins' ~30 chunks are joined first: the sort
    gathers every column by the new order, and a gather from one buffer is cheaper than one
    across chunks (2.5M pairs: ~0.40 CPU-s in all against ~0.45)."""
    pair_key = pl.col(USER_IDX).cast(pl.Int64) * (1 << 32) + pl.col(ITEM_IDX).cast(pl.Int64)
    joined = indexed.select(USER_IDX, ITEM_IDX, TIME, WEIGHT, FIRST_SEEN).collect().rechunk()
    return joined.sort(pair_key, multithreaded=sort_in_parallel())


def _carry_over_foreign_files(out_dir: Path, tmp: Path, replaced: set[str]) -> None:
    """On append, keep top-level files this module does not own (e.g. a pipeline's ledger), except
    those this call writes anew (`replaced`): they are hard links, so writing one in place would
    change the live directory's copy before the swap."""
    owned = {
        storage.INTERACTIONS_DIR,
        storage.QUARANTINE_DIR,
        storage.IMPLICIT_FILE,
        storage.USERS_FILE,
        storage.ITEMS_FILE,
        storage.MANIFEST_FILE,
    }
    for entry in out_dir.iterdir():
        if entry.name not in owned and entry.name not in replaced and entry.is_file():
            storage.link_or_copy(entry, tmp / entry.name)


MISSING_USER_SHARE = 0.2
"""Share of rows quarantined as missing_user from which ingest says which column may be meant."""


def negative_weights_read(cfg: DataConfig) -> bool:
    """Whether a negative weight is a valid row under `cfg`: where a positive rule reads the column
    as a rating (`--min-rating 5` on Jester's -10..10: a row below it is simply not positive, as
    RecBole's `threshold` and LensKit read explicit ratings), or where the value is not kept
    (binarize, or aggregate count: each row is one interaction) and `data.negative_weights =
    interaction` says a negative row still marks one (Anime's -1, watched but not rated).

    Why not count such rows by default (it did): the same -1 is a return in UCI Online Retail
    (negative Quantity, invoices 'C...') or a dislike elsewhere, and counting a return as a purchase
    is silent loss of the data's meaning; no value tells the two apart, so the user says which. A
    weight kept as a confidence cannot be negative either way. Elsewhere the rows are quarantined
    (negative_weight) with `negative_weight_warning` naming them."""
    return cfg.positive_min_weight is not None or negative_rows_counted(cfg)


def negative_rows_counted(cfg: DataConfig) -> bool:
    """Whether a row with a negative weight counts as an interaction: each row counts as one
    (binarize or aggregate count) and a positive rule or `data.negative_weights = interaction`
    reads it. Otherwise such a row is dropped before the aggregation (`to_implicit`), also from an
    earlier batch ingested under other settings."""
    return (cfg.binarize or cfg.aggregate == "count") and (
        cfg.positive_min_weight is not None or cfg.negative_weights == "interaction"
    )


def negative_weight_warning(
    raw: RawSource, rows_in: int, reasons: dict[str, int], quarantine: pl.DataFrame | None = None,
    cfg: DataConfig | None = None,
) -> str | None:
    """A warning when rows were quarantined as negative_weight, naming the count and the first
    source rows: a rating column with negative values (Jester's -10..10, Anime's -1) read as a
    confidence, or returns (Online Retail's negative Quantity) where each row counts as one
    interaction, lose them with only a count in the summary unless the line names the options."""
    negative = reasons.get("negative_weight", 0)
    if not negative or not rows_in:
        return None
    weight = raw.mapping.get(WEIGHT)
    where = ""
    if quarantine is not None and ROW in quarantine.columns and "reason" in quarantine.columns:
        rows = quarantine.filter(pl.col("reason") == "negative_weight").head(5)
        files = rows.get_column(SOURCE_FILE).to_list() if SOURCE_FILE in rows.columns else [None] * rows.height
        first = [f"{row}" + (f" of {Path(str(file)).name}" if file else "") for row, file in zip(rows.get_column(ROW).to_list(), files, strict=True)]
        more = ", ..." if negative > len(first) else ""
        where = f" (source rows {', '.join(first)}{more})" if first else ""
    head = (
        f"{negative:,} of {rows_in:,} rows ({negative / rows_in:.0%}) have a negative weight in "
        f"{column_label(weight) if weight else 'the weight column'}{where} and were quarantined (negative_weight): "
    )
    if cfg is not None and (cfg.binarize or cfg.aggregate == "count"):
        return head + (
            "a negative row is taken for no interaction (a return, as Online Retail's negative Quantity; a "
            "dislike); if it still marks one (Anime's -1 = watched, not rated), --set data.negative_weights=interaction "
            "counts each as one interaction, or a positive rule (--min-rating N, data.positive_min_weight) reads the "
            "column as ratings"
        )
    return head + (
        "a kept weight is a confidence, which cannot be negative; if it is a rating, set a positive rule "
        "(--min-rating N, data.positive_min_weight: rows below N are then simply not positive), or "
        "--set data.binarize=true --set data.negative_weights=interaction to count every row, negative ones "
        "included, as one interaction"
    )


QUARANTINE_SHARE = 0.2
"""Share of rows quarantined for one reason from which a `warning:` line names it (`quarantine_share_warnings`)."""

_QUARANTINE_HINTS: dict[str, str] = {
    "missing_item": "name another item column with --item-col (data.columns.item) if the log has one",
    "bad_timestamp": (
        "times must be Unix seconds / milliseconds or ISO-8601: convert the column, or name another with "
        "--time-col (data.columns.time)"
    ),
    "future_timestamp": (
        "they lie more than data.max_future_days = {max_future_days:g} days ahead: check the unit and the clock, "
        "or raise it with --set data.max_future_days=N"
    ),
    "bad_weight": "not numbers: name another weight column with --weight-col (data.columns.weight)",
    "non_finite_weight": "NaN or infinite: name another weight column with --weight-col (data.columns.weight)",
    "extra_fields": "more fields than the header, an unquoted separator inside a value: quote such values",
    "duplicate_key": (
        "a line names a key twice with other values (polars would read the first, Python's json and jq the last): "
        "each quarantined row shows every value its key was given, as a JSON array ([3, 5]); fix the export"
    ),
}


def quarantine_share_warnings(cfg: DataConfig, raw: RawSource, result: ValidationResult, said: list[str]) -> list[str]:
    """A warning for each reason that quarantined a fifth or more of the rows and that no other
    warning (`said`) names yet: a bulk loss is otherwise one line of the summary table, which a
    scheduled run's log shows nobody. Names the reason, the count, the first value and the
    option that changes it. Not duplicates: a copy of a row timed to the second is rightly
    quarantined, and coarser times have `coarse_duplicates_warning`."""
    out = []
    for reason, count in result.reasons.items():
        if reason == "duplicate" or not result.rows_in or count < QUARANTINE_SHARE * result.rows_in or any(reason in w for w in said):
            continue
        canon = _REASON_FIX.get(reason, (None,))[0]
        first = result.quarantine.filter(pl.col(REASON) == reason).row(0, named=True)
        where = f"row {first[ROW]}" + (f" of {first[SOURCE_FILE]}" if SOURCE_FILE in first else "")
        column = raw.mapping.get(canon) if canon else None
        held = first.get(canon) if canon else None
        shown = "empty" if held is None or str(held).strip() == "" else repr(held)
        value = f", {where}: {column_name(column)} is {shown}" if column else f", first at {where}"
        hint = _QUARANTINE_HINTS.get(reason, "its rows are in the quarantine file, with their source rows")
        guess = guess_time_format(_bad_times(result)) if reason == "bad_timestamp" else None
        if guess is not None:
            hint = (
                f"their layout reads with --time-format '{guess[0]}' (data.time_format; {guess[1]}), or name another "
                "time column with --time-col (data.columns.time)"
            )
        out.append(
            f"{count:,} of {result.rows_in:,} rows ({count / result.rows_in:.0%}) were quarantined as {reason}{value}; "
            + hint.format(max_future_days=cfg.max_future_days)
        )
    return out


def missing_users_warning(raw: RawSource, rows_in: int, reasons: dict[str, int]) -> str | None:
    """A warning when many rows have no user id: Diginetica's train-item-views leaves `userId`
    empty for anonymous sessions (most rows), and they were quarantined with nothing but a count
    in the summary. A session log is read per session by naming its session column as the user
    (the usual protocol for these logs), which the warning names when the header has one; a
    column naming the same users (`name_column`) is named whatever the share."""
    missing = reasons.get("missing_user", 0)
    user = raw.mapping.get(USER)
    names = name_column(raw.header, user)  # Steam reviews' `username` beside a `user_id` on some lines
    if not rows_in or not missing or (missing < MISSING_USER_SHARE * rows_in and names is None):
        return None
    sessions = session_column(raw.header, raw.mapping)
    fix = (
        f"if it is a session log, read each session as a user with --user-col {sessions} (data.columns.user)"
        if sessions
        else f"{names!r} names the users too: read it as the user with --user-col {names} (data.columns.user)"
        if names
        else "name another user column with --user-col (data.columns.user) if the log has one"
    )
    return (
        f"{missing:,} of {rows_in:,} rows ({missing / rows_in:.0%}) have no user id in "
        f"{column_label(user) if user else 'the user column'} and were quarantined (missing_user): {fix}"
    )


def missing_items_warning(raw: RawSource, rows_in: int, reasons: dict[str, int]) -> str | None:
    """A warning, whatever their share, when rows without an item id were quarantined and the
    header has a name column for the same items (`name_column`): Last.fm's artist and track
    MusicBrainz ids are empty on 3-15% of rows, below the share `quarantine_share_warnings`
    names, and the name beside them reads every row."""
    missing = reasons.get("missing_item", 0)
    item = raw.mapping.get(ITEM)
    names = name_column(raw.header, item)
    if not rows_in or not missing or names is None:
        return None
    return (
        f"{missing:,} of {rows_in:,} rows ({missing / rows_in:.1%}) have no item id in {column_label(item)} and "
        f"were quarantined (missing_item); {names!r} names the same items: read it as the item with "
        f"--item-col {names} (data.columns.item)"
    )


# A column name that says it holds a time or a date (`TRANSACTION_DT`, `DAY`, `TRANS_TIME`,
# `order_date`), compared after `base_name`.
_TIME_NAME = re.compile(r"time|date|(?:^|_)(?:day|dt|ts|dat)(?:$|_)")


def _time_named_columns(raw: RawSource) -> list[str]:
    """The header's columns not read whose name says time or date (`_TIME_NAME`)."""
    return [c for c in raw.header if c not in raw.mapping.values() and _TIME_NAME.search(base_name(c))]


def unread_time_warning(raw: RawSource, result: ValidationResult) -> str | None:
    """A warning when the log is read without a time column but a column not read is named like
    one (Douban's `RATING_TIME`, Ta-Feng's `TRANSACTION_DT`, dunnhumby's `DAY`): the automatic
    picks do not read such names, and a log without times is refused by every temporal split,
    which the summary's columns line alone does not make plain. Not read automatically: the name
    says nothing about the unit (dunnhumby's `DAY` holds day numbers, which read as 1970
    seconds). Quiet where `coarse_duplicates_warning` fires, which names the same columns."""
    if TIME in raw.mapping or result.reasons.get("duplicate", 0):
        return None
    named = _time_named_columns(raw)
    if not named:
        return None
    shown = ", ".join(repr(c) for c in named[:3])
    one = len(named) == 1
    return (
        f"no time column is read, so temporal splits (temporal, rolling, leave_last_n) refuse this data: "
        f"{shown} {'is' if one else 'are'} named like {'a time' if one else 'times'} but not read; if "
        f"{'it holds' if one else 'one holds'} times, read it with --time-col {named[0] if one else 'NAME'} "
        "(data.columns.time; with --time-format for a layout other than Unix times or ISO-8601)"
    )


def untimed_rows_warning(raw: RawSource, result: ValidationResult, pairs: pl.DataFrame) -> str | None:
    """A warning when accepted rows have an empty time in a log read with a time column (KuaiRec's
    `big_matrix.csv` leaves `time` and `timestamp` empty on some rows). Such a row is valid (its
    user and item are known) and kept with a null time, so it was counted nowhere; the batch's
    manifest entry records it as `rows_without_time`. A pair is timed by those of its rows that
    have a time (its latest, and its first-seen time that temporal splits place it by), so only
    pairs whose every row lacks one stay untimed, and those make temporal splits refuse the data
    (`splits._require_timestamps`): the warning says how many there are."""
    time = raw.mapping.get(TIME)
    untimed = rows_without_time(raw, result)
    if time is None or not untimed:
        return None
    left = pairs.get_column(TIME).null_count() if TIME in pairs.columns else 0
    then = (
        f"{left:,} of {pairs.height:,} interactions (user, item pairs) {'has' if left == 1 else 'have'} no time at "
        "all, so temporal splits (temporal, rolling, leave_last_n) refuse this data: drop those rows from the "
        'source, or use split.protocol = "random" or "strong_generalization"'
        if left
        else "every interaction kept has a time all the same (a pair is timed by those of its rows that have one), "
        "so temporal splits can use this data"
    )
    has, were = ("has", "was") if untimed == 1 else ("have", "were")
    return (
        f"{untimed:,} of {result.rows_in:,} rows ({untimed / result.rows_in:.1%}) {has} an empty time in "
        f"{column_label(time)} and {were} accepted without one (rows_without_time in the manifest); {then}"
    )


def rows_without_time(raw: RawSource, result: ValidationResult) -> int:
    """Accepted rows whose time is empty in a log read with a time column (0 without one)."""
    return result.rows.get_column(TIME).null_count() if TIME in raw.mapping and TIME in result.rows.columns else 0


def coarse_duplicates_warning(raw: RawSource, result: ValidationResult) -> str | None:
    """A warning when rows were quarantined as duplicates in a log whose rows cannot be told apart
    by time: no time column (a bare `user,item` click log), or times that are dates or whole hours
    only (Diginetica's `eventdate`, Tianchi's `2014-12-06 02`). A duplicate is a row equal to an earlier one in every column read
    (user, item, time, weight, event); with no time to the second, a second view of an item the
    same day is such a row, so repeated events are quarantined rather than counted, which the
    summary's `duplicate` count alone does not say. Says which: the fix, if any, is a finer time
    column (`--time-col`), or counting such rows as events (`--exact-duplicates keep`)."""
    duplicates = result.reasons.get("duplicate", 0)
    if not duplicates:
        return None
    time = raw.mapping.get(TIME)
    if time is None:
        why = "the log has no time column"
        named = _time_named_columns(raw)
        if named:  # Ta-Feng's TRANSACTION_DT, dunnhumby's DAY: names no automatic pick reads
            shown = ", ".join(repr(c) for c in named[:3])
            one = len(named) == 1
            why = f"no time column is read ({shown} {'is' if one else 'are'} named like {'one' if one else 'times'} but not read)"
    else:
        times = result.rows.get_column(TIME)
        if times.is_null().all():
            return None
        # Cheap first: the extremes, and the first rows (a log with seconds shows them at once);
        # a year or an hour of every row of a 10M-row log costs ~0.1-0.2 s each.
        first, last = times.min(), times.max()
        head = times.head(1000).drop_nulls()
        if first.year == 1970 and last.year == 1970:  # MMDD or day numbers read as seconds (Tmall's time_stamp 829)
            why = f"{column_label(time)} holds day numbers or dates read as 1970 seconds, not times"
        elif not (head.dt.truncate("1h") == head).all() or not (times.dt.truncate("1h") == times).all():
            return None
        else:
            unit = "dates" if (times.dt.truncate("1d") == times).all() else "whole hours"
            why = f"{column_label(time)} holds {unit} only"
    return (
        f"duplicates quarantined: {_rows(duplicates)} equal to an earlier row in every column read; "
        f"{why}, so a repeated event (a second view of an item) cannot be told from a copied row and is "
        "not counted; name a time column with seconds with --time-col (data.columns.time) if the log has one, "
        "or count each such row as a repeated event with --exact-duplicates keep (data.exact_duplicates)"
    )


def _toml_key(name: str) -> str:
    """`view`, or `"add to cart"` where a TOML bare key cannot spell the name."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _rows(n: int) -> str:
    return f"{n:,} row{'' if n == 1 else 's'}"


def _role_column(role: str, mapping: dict[str, str], batches: list[dict]) -> str | None:
    """The source column read as `role` (weight, event): this batch's, else an earlier batch's."""
    return mapping.get(role) or next((b["columns"][role] for b in batches if role in b.get("columns", {})), None)


def weight_policy(cfg: DataConfig, mapping: dict[str, str], batches: list[dict], rows: pl.DataFrame) -> dict:
    """What happens to the weight column, for the manifest: which column, the aggregation used
    (`auto` resolved: sum when the log has a weight column, else count), whether the weights
    survive, and a one-line warning when a varying weight column is reduced to 1s (count or
    binarize), so play counts or ratings are never dropped silently. A config with a positive rule
    (`positive_min_weight`: ratings >= 4 are positives) reads the column as ratings on purpose:
    thresholding then binarising is the explicit-to-implicit conversion it asked for, not a loss,
    so it gets no warning (the manifest still records the policy)."""
    column = _role_column(WEIGHT, mapping, batches)
    weighted = bool(cfg.event_weights)  # data.event_weights: each row weighs its event's weight
    how = cfg.aggregate if cfg.aggregate != "auto" else ("sum" if column or weighted else "count")
    dropped_by = "data.binarize = true" if cfg.binarize else f"data.aggregate = {how}" if how == "count" else None
    warning = None
    if weighted and dropped_by and len(set(cfg.event_weights.values())) > 1:
        warning = (
            f"event weights discarded: data.event_weights gives events different weights but {dropped_by} "
            "makes every pair weigh the same; set data.aggregate = sum (or max / last) and data.binarize = false to keep them"
        )
    elif column and dropped_by and rows.height and cfg.positive_min_weight is None:
        low, high = rows.select(pl.col(WEIGHT).min().alias("low"), pl.col(WEIGHT).max().alias("high")).row(0)
        if low != high:
            warning = (
                f"weights discarded: {column_label(column)} varies ({low:g} to {high:g}) but {dropped_by} "
                "makes every pair weigh the same; set data.aggregate = sum (or max / last) and "
                "data.binarize = false to keep it"
            )
    policy = {"column": column, "aggregate": how, "binarize": cfg.binarize,
              "kept": bool(column or weighted) and not dropped_by, "warning": warning}  # fmt: skip
    if weighted:
        policy["event_weights"] = dict(cfg.event_weights)
    return policy


def event_rule_check(cfg: DataConfig, source: str | Path, rows: pl.LazyFrame, event_column: str | None) -> str | None:
    """Check the event names of `data.positive_events` / `data.event_weights` against the events the
    log holds: a rule naming none of them (`purchase` where the log says `transaction`, Taobao's
    `buy`) would empty the table, and one naming some but not others would drop those rows with no
    word but a step count. None of them found is an error listing the log's events (with rows);
    some missing, or events of the log that `event_weights` gives no weight (so their rows are
    dropped), is a warning naming them."""
    named = {setting: list(events) for setting, events in (("positive_events", cfg.positive_events),
             ("event_weights", cfg.event_weights)) if events}  # fmt: skip
    if not named or event_column is None:
        return None  # no rule, or no event column: `positive_filter` refuses the latter
    counts = rows.group_by(EVENT).len().sort("len", descending=True).collect()
    present = dict(zip(counts.get_column(EVENT).to_list(), counts.get_column("len").to_list(), strict=True))
    listing = ", ".join(f"{event!r} ({_rows(n)})" for event, n in list(present.items())[:12] if event is not None)
    listing += ", ..." if len(present) > 12 else ""
    where = f"{source}: {column_label(event_column)}"
    for setting, events in named.items():
        if not any(event in present for event in events):
            # Weights: every event the listing shows, at 1 (each row counts, as without the rule), so
            # the hint drops no rows; the three most frequent left out the rarest events, an event
            # log's purchases (Taobao's `buy`), the strongest signal it has.
            top = [str(event) for event in present if event is not None][: 12 if setting == "event_weights" else 3]
            value = (
                "{" + ",".join(f"{_toml_key(event)}=1" for event in top) + "}"
                if setting == "event_weights"
                else "[" + ",".join(f'"{event}"' for event in top) + "]"
            )
            raise DataError(
                f"{where} holds none of the events data.{setting} names ({', '.join(map(repr, events))}); "
                f"its events are {listing}: name those in {{option}}"
                + (" (each weighing 1: raise the stronger ones, e.g. a purchase)" if setting == "event_weights" else ""),
                setting=f"data.{setting}",
                value=f"'{value}'",
            )
    problems = []
    for setting, events in named.items():
        missing = [event for event in events if event not in present]
        if missing:
            problems.append(f"data.{setting} names {', '.join(map(repr, missing))}, which {where} never holds")
    if cfg.event_weights:
        unweighted = [(e, n) for e, n in present.items() if e is not None and e not in cfg.event_weights]
        if cfg.positive_events:
            unweighted = [(e, n) for e, n in unweighted if e in cfg.positive_events]
        if unweighted:
            shown = ", ".join(f"{event!r} ({_rows(n)})" for event, n in unweighted[:12])
            problems.append(f"data.event_weights gives no weight to {shown}, so those rows are dropped")
    if not problems:
        return None
    return "; ".join(problems) + f" (its events: {listing})"


RATING_SCALE_MAX = 5.0
"""The top of the 1-5 star scale a `positive_min_weight` up to this value is read against."""


def rating_scale_warning(cfg: DataConfig, column: str | None, rows: pl.DataFrame) -> str | None:
    """A warning when a positive rule written for 1-5 stars (`positive_min_weight` <= 5, e.g.
    movielens.toml's 4) meets a weight column on a 10-point scale (Book-Crossing's 0-10,
    MovieTweetings' 0-10, 1-10 scales: top value above 5 and at most 10): `>= 4` then keeps most
    dislikes as positives without a word. Conservative on purpose: no rule, or a column topping at 5
    (ML-100K, ml-latest-small's half stars) or above 10 (play counts, 0-100 scores: nothing says
    what the rule meant there) gets none. The hint scales the threshold to the same share of the
    observed top value (4 of 5 -> 8 of 10)."""
    threshold = cfg.positive_min_weight
    if column is None or threshold is None or threshold > RATING_SCALE_MAX or not rows.height:
        return None
    low, high = rows.select(pl.col(WEIGHT).min().alias("low"), pl.col(WEIGHT).max().alias("high")).row(0)
    if high is None or not RATING_SCALE_MAX < float(high) <= 10.0:
        return None
    if float(low) < 0:  # Jester's -10..10 (accepted under a rule): no star scale to scale the rule to
        return None
    scaled = threshold * float(high) / RATING_SCALE_MAX
    return (
        f"data.positive_min_weight = {threshold:g} reads {column_label(column)} as 1-5 stars, but its values "
        f"reach {float(high):g}: on that scale >= {threshold:g} keeps low ratings as positives; set "
        f"--set data.positive_min_weight={scaled:g} (the same share of the scale) if it is a rating out of {float(high):g}"
    )


RATING_NAMES = ("rating", "stars", "overall")
"""Weight column names (parts of them: `Book-Rating`, `star_rating`) that say the values are ratings."""


def summed_ratings_warning(asked: str, weights: dict, steps: list[FilterStep], binarize: bool = False) -> str | None:
    """A warning when `aggregate = auto` summed repeated (user, item) pairs of a column named as
    a rating (`rating`, `stars`, `overall`, ...): five 2-star ratings of one Amazon Beauty pair
    became weight 10. Mature tools never add ratings up (Cornac keeps one and warns, RecBole's
    `rm_dup_inter` keeps the first or last), but `auto` still sums: processed directories and
    fingerprints built under it must keep their meaning, and a name is a hint, not proof (play
    counts sum rightly). So it says so, with the count, and names the setting that keeps one.
    Not under binarize: every pair then weighs 1, whatever its rows summed to."""
    column = weights.get("column")
    if binarize or asked != "auto" or weights.get("aggregate") != "sum" or not column:
        return None
    if not any(part in column.lower() for part in RATING_NAMES):
        return None
    names = [step.name for step in steps]
    at = next((i for i, name in enumerate(names) if name.startswith("aggregate")), None)
    if not at:
        return None
    merged = steps[at - 1].rows - steps[at].rows
    if merged <= 0:
        return None
    return (
        f"{merged:,} repeated (user, item) rows were summed into their pairs' {column_label(column)} "
        "(data.aggregate = auto sums a weight column): for ratings, --set data.aggregate=last "
        "(the latest rating) or max"
    )


K_CORE_KEPT_SHARE = 0.1
"""Share of pairs below which a k-core's cut is named in a warning."""

K_CORE_KEPT_USERS = 0.25
"""Share of users below which a k-core's cut is named in a warning, whatever share of pairs it keeps."""


def k_core_warning(steps: list[FilterStep]) -> str | None:
    """A warning when the k-core keeps under a tenth of the pairs: a session log read per session
    (Diginetica's sessions hold ~4 items) under plays.toml's `min_user_interactions = 5` kept 123
    of ~8,000 pairs and 22 of 2,986 sessions, and the run went on to report recall on 22 users
    with only the step counts saying why. Or under a quarter of the users: a reviews log (Amazon's,
    most users with one or two reviews) under movielens.toml's k-core kept 37% of the pairs but 13%
    of the users (22,455 of 176,985), and the run's recall spoke for the heavy reviewers alone."""
    names = [step.name for step in steps]
    at = next((i for i, name in enumerate(names) if name.startswith("k-core")), None)
    if not at:
        return None
    before, after = steps[at - 1], steps[at]
    if not before.rows or not before.users:
        return None
    few_pairs = after.rows < K_CORE_KEPT_SHARE * before.rows
    if not few_pairs and after.users >= K_CORE_KEPT_USERS * before.users:
        return None
    users = f"{after.users:,} of {before.users:,} users"
    return (
        f"{after.name.split(';')[0]}) kept {after.rows:,} of {before.rows:,} pairs ({after.rows / before.rows:.0%}) "
        + (f"and {users}" if few_pairs else f"but only {users} ({after.users / before.users:.0%})")
        + ": most users (sessions?) or items have fewer interactions "
        "than that; lower the thresholds (--min-user-interactions / data.min_user_interactions, "
        "--min-item-interactions / data.min_item_interactions) if that is what the log holds"
    )


def zero_weight_warning(steps: list[FilterStep], column: str | None) -> str | None:
    """A warning when pairs weighing 0 were dropped (`ZERO_WEIGHT_STEP`): in logs such as
    Book-Crossing (`Book-Rating` 0 = an implicit interaction) or Goodreads (`rating` 0 = shelved,
    not rated) they can be most of the data, which a config that keeps the weights would lose
    without a word; the hint names the two settings that keep or drop them on purpose."""
    names = [step.name for step in steps]
    if ZERO_WEIGHT_STEP not in names:
        return None
    at = names.index(ZERO_WEIGHT_STEP)
    before, after = steps[at - 1].rows, steps[at].rows
    dropped = before - after
    return (
        f"{dropped:,} of {before:,} pairs ({dropped / before:.0%}) weigh 0 in {column_label(column)} and were "
        "dropped: with the weights kept, a weight of 0 is no interaction; --set data.binarize=true "
        "counts each as one interaction, or a positive rule (--min-rating N, data.positive_min_weight) "
        "reads the column as ratings"
    )


def negative_weight_note(steps: list[FilterStep], column: str | None) -> str | None:
    """A warning when rows with a negative weight were dropped before the aggregation
    (`NEGATIVE_WEIGHT_STEP`): a rule at or below 0 (`--min-rating -2`) let them through, or an
    earlier batch was ingested under binarize, and the weights are kept as confidences now."""
    names = [step.name for step in steps]
    if NEGATIVE_WEIGHT_STEP not in names:
        return None
    at = names.index(NEGATIVE_WEIGHT_STEP)
    before, after = steps[at - 1].rows, steps[at].rows
    return (
        f"{before - after:,} of {before:,} rows have a negative weight in {column_label(column)} and were dropped: "
        "a kept weight is a confidence, which cannot be negative, and a negative row is no interaction unless "
        "data.negative_weights says so; set a positive rule above 0 (--min-rating N, data.positive_min_weight) to "
        "read the column as ratings, or --set data.binarize=true --set data.negative_weights=interaction to count "
        "each row as one interaction"
    )


def duplicates_rule_drift(rule: str, batches: list[dict]) -> list[str]:
    """A warning when an appended batch treats rows equal in every column otherwise than the
    earlier batches did (`data.exact_duplicates`, recorded per batch; unrecorded = quarantine):
    the rule is applied when a batch is validated, so the processed data would count repeats in
    some batches and quarantine them in others, which re-deriving the pairs does not undo."""
    earlier = sorted({batch.get("exact_duplicates", "quarantine") for batch in batches})
    if not earlier or earlier == [rule]:
        return []
    return [
        f"this batch's repeated rows follow data.exact_duplicates = {rule}, the earlier batches' "
        f"{' and '.join(earlier)}: repeats are counted in some batches and quarantined in others; pass "
        f"--exact-duplicates {earlier[-1] if len(earlier) == 1 else 'quarantine'} to append as before, or ingest "
        "the logs afresh without --append"
    ]


_DRIFT_OPTION = {TIME: ("time", "--time-col", " (temporal splits then refuse the data)"), EVENT: ("event", "--event-col", "")}


def _role_drift(role: str, mapping: dict[str, str], batches: list[dict]) -> tuple[str | None, str | None] | None:
    """(the earlier batches' column for `role`, this batch's) when exactly one side has one, else None:
    a first batch, batches that agree, or earlier batches already mixed (older than this batch)."""
    earlier = [b["columns"].get(role) for b in batches if "columns" in b]
    named = [c for c in earlier if c is not None]
    if not earlier or named and len(named) < len(earlier):
        return None
    now = mapping.get(role)
    if bool(named) == (now is not None):
        return None
    return (named[-1] if named else None), now


def column_drift(role: str, mapping: dict[str, str], batches: list[dict]) -> str | None:
    """A warning when an appended batch has no time (or event) column and the earlier ones have
    one, or the reverse: a monthly export that dropped its timestamp column gave its rows no
    time beside timed ones, without a word (`weight_drift` says the same of weights)."""
    found = _role_drift(role, mapping, batches)
    if found is None:
        return None
    before, now = found
    word, option, effect = _DRIFT_OPTION[role]
    if now is None:
        return (
            f"this batch has no {word} column, unlike the earlier ones ({before!r}): its rows have no {word}"
            f"{effect}; name the column with {option} (data.columns.{word}) if it is there under another "
            "name, or ingest the log afresh without --append"
        )
    return (
        f"this batch has {'an' if word == 'event' else 'a'} {word} column ({now!r}), unlike the earlier ones: their "
        f"rows have no {word}{effect}; ingest the logs afresh without --append to read them all alike"
    )


def weight_drift(mapping: dict[str, str], batches: list[dict], aggregate: str) -> str | None:
    """A warning when an appended batch has a weight column and the earlier ones have none, or the
    reverse: an export that lost (or gained) its rating column mixes 1-per-row counts with ratings
    or plays in one table without a word (a positive rule would drop the 1s), which the manifest
    alone does not show. None under `aggregate` count (the resolved one), where every row weighs 1
    whatever its columns: nothing mixes, and the warning's own hint is that setting."""
    if aggregate == "count":
        return None
    found = _role_drift(WEIGHT, mapping, batches)
    if found is None:
        return None
    before, now = found
    if now is None:
        return (
            f"this batch has no weight column, unlike the earlier ones ({before!r}): its rows weigh 1 each "
            f"beside their {before} values; name the column with --weight-col (data.columns.weight) if it is "
            "there under another name, or ingest the log afresh without --append"
        )
    return (
        f"this batch has a weight column ({now!r}), unlike the earlier ones: their rows weigh 1 each beside "
        "its values; ingest the logs afresh without --append, or leave the column out by aggregating "
        "with data.aggregate = count"
    )


def _sources(manifest: dict | None) -> list[dict]:
    return list(manifest.get("batches", [])) if manifest else []


def _stamp(
    source: str | Path, given: SourceStamp | None, *, append: bool, now: bool
) -> Callable[[], SourceStamp | None]:
    """The source's stamp (`recsys.data.source_stamp`): `given`, or taken here, before anything
    is read. The files' stat is taken at once. The content digest only for an append (the batch a
    re-run must recognise; a first ingest is idempotent anyway, and hashing 10M rows' CSV costs
    ~0.7 s of CPU): at once when `now` (compared with recorded digests before reading, so a re-run
    stops before the read), else on a background thread while the source is read and validated
    (hashlib releases the GIL). Returns a function giving the stamp (None for a remote source or
    one that is no file or directory)."""
    if given is not None or as_url(source) is not None:
        return lambda: given
    path = Path(source)
    paths = source_paths(path)
    if paths is None:
        return lambda: None
    stats = stat_files(paths)
    if not append:
        unhashed = SourceStamp(None, stats)
        return lambda: unhashed
    if now:
        stamp = SourceStamp(content_digest(path, paths), stats)
        return lambda: stamp
    hashing = ThreadPoolExecutor(1)
    digest = hashing.submit(content_digest, path, paths)
    hashing.shutdown(wait=False)

    def ready() -> SourceStamp:
        try:
            return SourceStamp(digest.result(), stats)
        except OSError:  # a file removed or replaced while it was hashed
            raise changed_error(source, [str(p) for p in paths]) from None

    return ready


def _refuse_same_content(source: str | Path, stamp: SourceStamp | None, recorded: list[dict]) -> None:
    """AlreadyIngested when a batch of the directory holds `stamp`'s content: an `--append`
    re-run after a kill that came once its batch had landed (the digest is in the manifest, which
    is swapped in with the batch, so the two never disagree), or the same file under another
    name. Under data.exact_duplicates = "keep" its rows would otherwise be counted twice; under
    the default they would make a batch of duplicates."""
    if stamp is None or stamp.digest is None:
        return
    same = next((b for b in recorded if b.get("source_digest") == stamp.digest), None)
    if same is None:
        return
    was = f"{same.get('source')}, ingested {same.get('created_at')}"
    raise AlreadyIngested(
        f"{source}: the same content as batch {same.get('batch')} ({was}; {_rows(int(same.get('rows_in', 0)))} in) "
        "was ingested already",
        batch=int(same.get("batch", 0)),
    )


def ingest(
    source: str | Path,
    out_dir: str | Path,
    cfg: DataConfig,
    *,
    format: str | None = None,
    append: bool = False,
    user_labels: pl.DataFrame | None = None,
    item_labels: pl.DataFrame | None = None,
    progress: Progress | None = None,
    sidecar_files: Mapping[str, object] | None = None,
    keep_vocab: bool = False,
    stamp: SourceStamp | None = None,
    same_content: bool = False,
    check_unchanged: bool = True,
) -> IngestReport:
    """Ingest `source` (file or directory) into the processed directory `out_dir`.

    format forces a reader (default: cfg.format, then detection). append adds a batch to an existing
    processed dir (a missing one is created). user_labels / item_labels: optional (id, block) frames
    stored as the vocab's `block` column (planted clusters, combined sources). sidecar_files: file
    name -> JSON-able value, written into the directory in the same atomic swap as the batch.
    keep_vocab: when not appending, replace the batches but keep the directory's vocab (old ids
    keep their indices, new ones are appended), so models trained on it stay comparable: a run's
    single-file source that grew is re-read whole this way (`pipelines.data`).
    stamp: the source's stat and content digest, taken by a caller that hashed it already (a
    landing zone's ledger); else ingest takes it before reading a local source. Its digest is
    recorded in the batch's manifest entry (`source_digest`), and an append of content a batch
    already holds raises AlreadyIngested, adding nothing, unless `same_content` (repeated events
    that really are new). check_unchanged: a local source whose files changed between the stamp
    and the swap raises SourceChanged, writing nothing (a file still being written); off for a
    run's single growing log, whose next run re-reads it whole anyway.
    Holds the directory's writer lock throughout (see the module docstring).
    """
    from recsys.data.synthetic import planted_blocks, reading

    say = progress or (lambda _stage: None)
    source = local_path_of(source)
    local = as_url(source) is None
    if local and not Path(source).exists():  # before the lock: nothing left behind
        raise DataError(f"{source}: no such file or directory")
    # A `recsys data synth` folder is read under its writer's lock, so a rewrite never mixes in.
    with reading(source, say) if local else contextlib.nullcontext():
        planted = None
        if local and user_labels is None and item_labels is None and not append:
            planted = planted_blocks(source)  # `recsys data synth` output: its clusters are the blocks
            if planted is not None:
                source, user_labels, item_labels = planted
        _writable_place(Path(out_dir))  # before the lock, whose file goes beside the output
        with storage.writer_lock(Path(out_dir), say):
            with utf8_source(source, cfg.encoding, Path(out_dir)) as text, text.naming_source():
                report = _ingest(
                    source, Path(out_dir), cfg, format=format, append=append, user_labels=user_labels,
                    item_labels=item_labels, say=say, sidecar_files=dict(sidecar_files or {}), keep_vocab=keep_vocab,
                    stamp=stamp, same_content=same_content, check_unchanged=check_unchanged, text=text,
                )  # fmt: skip
    report.planted = planted is not None
    return report


def _ingest(
    source: str | Path,
    out_dir: Path,
    cfg: DataConfig,
    *,
    format: str | None,
    append: bool,
    user_labels: pl.DataFrame | None,
    item_labels: pl.DataFrame | None,
    say: Progress,
    sidecar_files: dict[str, object],
    keep_vocab: bool = False,
    stamp: SourceStamp | None = None,
    same_content: bool = False,
    check_unchanged: bool = True,
    text: Transcoded | None = None,
) -> IngestReport:
    """`text`: where the source's text is read from (a UTF-8 copy of a file in another encoding,
    see recsys.data.encoding); messages name `source`."""
    started = time.perf_counter()
    text = text or Transcoded(source, source)
    previous_manifest = _prepare_out_dir(out_dir, append)
    replaced = [] if append else _held_batches(out_dir)
    vocab_from = out_dir if previous_manifest or (keep_vocab and replaced) else None  # not a corrupt one's
    previous_batches = storage.list_batches(out_dir) if previous_manifest else []
    _check_readable(storage.batch_file(out_dir, number) for number in previous_batches)
    batch = (previous_batches[-1] + 1) if previous_batches else 1
    recorded = [b for b in _sources(previous_manifest) if b.get("source_digest")] if append else []
    stamped = _stamp(source, stamp, append=append, now=bool(recorded) and not same_content)
    if recorded and not same_content:
        _refuse_same_content(source, stamped(), recorded)

    say("reading and validating")
    raw = scan_source(text.path, format or cfg.format, cfg.columns, cfg.header)
    keep = cfg.exact_duplicates == "keep"
    result = validate(
        raw,
        cfg.max_future_days,
        decimal=cfg.decimal,
        keep_duplicates=keep,
        keep_negative=negative_weights_read(cfg),
        time_format=cfg.time_format,
    )
    notes = result.notes
    previous = storage.scan_batches(out_dir, previous_batches)
    notes = notes + duplicates_rule_drift(cfg.exact_duplicates, _sources(previous_manifest))
    if keep:
        notes = notes + _all_repeated_note(result, previous)
    else:
        validated = result.rows.height
        result = _drop_cross_batch_duplicates(result, raw, previous)
        if validated and result.rows.height == 0:  # e.g. an --append rerun after a kill that had landed
            notes = notes + [
                f"every accepted row of this batch ({_rows(validated)}) equals a row of an earlier batch, so it adds "
                "nothing (those rows are quarantined as duplicate): this file was most likely ingested before"
            ]
    fault_point("ingest.read")
    if (
        result.rows_in != result.rows_accepted + result.rows_quarantined
    ):  # pragma: no cover - a bug, not bad data
        raise AssertionError("rows_in != rows_accepted + rows_quarantined")

    now, ingest_id = datetime.now(UTC).isoformat(timespec="seconds"), uuid.uuid4().hex
    # Two background threads (`writer`) write what nothing later reads back: the batch and
    # quarantine on one (pyarrow, single-threaded, ~0.4-0.8 s on 10M rows), the vocab and the
    # implicit table on the other, while this thread goes on deriving and then fingerprints.
    # polars and pyarrow release the GIL, so each side fills the other's single-threaded
    # stretches (Parquet page encoding, file I/O, numpy). Leaving the `with` waits for the
    # writers, so the staged directory is complete (or, on an error, removed only after the
    # writers stopped) and the first failed write is re-raised.
    with storage.staged_directory(out_dir) as tmp, ThreadPoolExecutor(2) as writer:
        say("writing batch")
        if previous_manifest:
            _carry_over_foreign_files(out_dir, tmp, set(sidecar_files))
        for number in previous_batches:
            storage.link_or_copy(storage.batch_file(out_dir, number), storage.batch_file(tmp, number))
            old_q = storage.quarantine_file(out_dir, number)
            if old_q.is_file():
                storage.link_or_copy(old_q, storage.quarantine_file(tmp, number))
        batch_path = storage.batch_file(tmp, batch)
        quarantine_path = storage.quarantine_file(tmp, batch)
        batch_written = writer.submit(_write_batch, result, batch_path, quarantine_path)
        # Ids that are all canonical decimals travel as their integer value: validation checked
        # every row, and it spares building a Categorical here and writing strings there.
        rows = result.rows

        say("implicit conversion and k-core")
        has_event = EVENT in result.rows.columns or any(
            EVENT in f.collect_schema().names() for _, f in previous
        )
        *earlier, rows = aligned_ids([frame for _, frame in previous] + [rows.lazy()])
        aligned = [(number, frame) for (number, _), frame in zip(previous, earlier, strict=True)]
        weights = weight_policy(cfg, raw.mapping, _sources(previous_manifest), result.rows)
        asked = cfg.aggregate
        cfg = cfg.model_copy(update={"aggregate": weights["aggregate"]})
        if weights["column"] is None and (cfg.positive_min_weight or 0) > 1:
            # Every row of a log without weights weighs 1: the rule would drop them all. The columns
            # not read are named too: the one to give is among them (KuaiRec's `watch_ratio`).
            unread = [c for c in raw.header if c not in raw.mapping.values()]
            raise DataError(
                f"{source}: a positive rule weight >= {cfg.positive_min_weight:g} is set but the log has "
                f"no weight column (columns found: {sorted(raw.mapping.values())}"
                f"{f'; not read: {unread}' if unread else ''}), so every row weighs "
                "1 and none would pass: name the rating / count column with {option}, or drop the rule",
                setting="data.columns.weight",
            )
        event_note = event_rule_check(
            cfg, source, all_rows([*aligned, (batch, rows)]), _role_column(EVENT, raw.mapping, _sources(previous_manifest))
        )
        pairs, steps = to_implicit(all_rows([*aligned, (batch, rows)]), cfg, has_event)
        if pairs.height == 0:
            if result.rows_accepted == 0 and not previous:
                raise _nothing_accepted(source, raw, result)
            emptied = next((step.name for step in steps if step.rows == 0), steps[-1].name)
            relax = (
                "lower data.min_user_interactions / data.min_item_interactions (too few of its users or items "
                "have that many interactions: a sample, or a session log's short sessions?)"
                if emptied.startswith("k-core")
                else "relax the data config"
            )
            raise DataError(f"{source}: no interactions left after filtering ({emptied}); {relax}")

        say("vocab and indexing")
        users = (
            Vocab.load(vocab_from / storage.USERS_FILE, id_name=USER, idx_name=USER_IDX)
            if vocab_from
            else Vocab(id_name=USER, idx_name=USER_IDX)
        )
        items = (
            Vocab.load(vocab_from / storage.ITEMS_FILE, id_name=ITEM, idx_name=ITEM_IDX)
            if vocab_from
            else Vocab(id_name=ITEM, idx_name=ITEM_IDX)
        )
        users = users.extend(pairs.select(USER, ORDER), order=ORDER).with_blocks(user_labels)
        items = items.extend(pairs.select(ITEM, ORDER), order=ORDER).with_blocks(item_labels)
        found = (weights["warning"], event_note, missing_users_warning(raw, result.rows_in, result.reasons),
                 missing_items_warning(raw, result.rows_in, result.reasons),
                 negative_weight_warning(raw, result.rows_in, result.reasons, result.quarantine, cfg), negative_weight_note(steps, weights["column"]),
                 coarse_duplicates_warning(raw, result), unread_time_warning(raw, result),
                 untimed_rows_warning(raw, result, pairs), k_core_warning(steps), rating_scale_warning(cfg, weights["column"], result.rows),
                 summed_ratings_warning(asked, weights, steps, cfg.binarize), zero_weight_warning(steps, weights["column"]), weight_drift(raw.mapping, _sources(previous_manifest), weights["aggregate"]),
                 column_drift(TIME, raw.mapping, _sources(previous_manifest)), column_drift(EVENT, raw.mapping, _sources(previous_manifest)))
        warnings = [w for w in found if w] + notes + suspicions(
            pairs, users, items, result.rows, raw.mapping, raw.header, raw.frame.select(TIME) if TIME in raw.mapping else None
        )
        warnings += quarantine_share_warnings(cfg, raw, result, warnings)
        warnings = [text.rename(w) for w in warnings]
        vocab_saved = [
            writer.submit(users.save, tmp / storage.USERS_FILE),
            writer.submit(items.save, tmp / storage.ITEMS_FILE),
        ]
        indexed = _sorted_by_pair(items.index(users.index(pairs.lazy(), keep_order=False), keep_order=False))
        written = [
            batch_written,
            *vocab_saved,
            writer.submit(storage.write_table, indexed, tmp / storage.IMPLICIT_FILE),
        ]

        say("fingerprint and manifest")
        digest = storage.fingerprint(indexed, users.id_column(), items.id_column())
        for future in written:
            future.result()  # re-raises a failed write inside the staged directory
        batch_entry = {
            "batch": batch,
            "source": str(source),
            "format": raw.format,
            "columns": raw.mapping,
            "rows_in": result.rows_in,
            "rows_accepted": result.rows_accepted,
            "rows_quarantined": result.rows_quarantined,
            "reasons": result.reasons,
            "path": str(batch_path.relative_to(tmp)),
            "quarantine": str(quarantine_path.relative_to(tmp)),
            "created_at": now,
            "ingest_id": ingest_id,
        }
        if keep:  # recorded only when not the default, so default manifests keep their shape
            batch_entry["exact_duplicates"] = cfg.exact_duplicates
        if untimed := rows_without_time(raw, result):  # likewise: only a batch that has such rows
            batch_entry["rows_without_time"] = untimed
        if (source_stamp := stamped()) is not None and source_stamp.digest is not None:
            batch_entry["source_digest"] = source_stamp.digest
        batches = _sources(previous_manifest) + [batch_entry]
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "created_at": previous_manifest.get("created_at", now) if previous_manifest else now,
            "updated_at": now,
            "rows_in": sum(b["rows_in"] for b in batches),
            "rows_accepted": sum(b["rows_accepted"] for b in batches),
            "rows_quarantined": sum(b["rows_quarantined"] for b in batches),
            "interactions": indexed.height,
            "users": len(users),
            "items": len(items),
            "fingerprint": digest,
            "fingerprint_method": storage.FINGERPRINT_METHOD,
            "has_timestamps": bool(indexed.get_column(TIME).is_not_null().any()),
            "schema": {name: str(dtype) for name, dtype in indexed.schema.items()},
            "sources": [b["source"] for b in batches],
            "batches": batches,
            "steps": [s.to_dict() for s in steps],
            "weights": weights,
            "warnings": warnings,
            "config": cfg.model_dump(mode="json", exclude={"synthetic"}),
            "polars_version": pl.__version__,
        }
        for name, content in sidecar_files.items():
            storage.write_json(tmp / name, content)
        storage.write_json(tmp / storage.MANIFEST_FILE, manifest)
        if check_unchanged and source_stamp is not None and (changed := changed_files(source_stamp, Path(source))):
            raise changed_error(source, changed)  # read while being written: the staging is removed
        fault_point("ingest.staged")

    return IngestReport(
        rows_in=result.rows_in,
        rows_accepted=result.rows_accepted,
        rows_quarantined=result.rows_quarantined,
        users=len(users),
        items=len(items),
        interactions=indexed.height,
        fingerprint=digest,
        steps=steps,
        out_dir=out_dir,
        quarantine_path=storage.quarantine_file(out_dir, batch),
        seconds=time.perf_counter() - started,
        reasons=result.reasons,
        batch=batch,
        format=raw.format,
        mapping=raw.mapping,
        warnings=warnings,
        ingest_id=ingest_id,
        replaced_batches=replaced,
        rows_without_time=rows_without_time(raw, result),
    )


def replaced_since(report: IngestReport) -> str | None:
    """None while `report.out_dir` still holds the batch that ingest call wrote (later appends keep
    it); else one line saying another writer replaced the directory since. The writer lock keeps two
    ingests from mixing, but a non-append ingest that ran right after this one swapped in its own
    data, and this call's summary, quarantine path and next step would name a directory that no
    longer holds what the summary describes."""
    try:
        batches = storage.read_manifest(report.out_dir)["batches"]
    except DataError:  # gone, or another writer between its renames
        batches = []
    if any(entry.get("ingest_id") == report.ingest_id for entry in batches):
        return None
    now = f" (it now holds {', '.join(str(b.get('source')) for b in batches)})" if batches else ""
    return (
        f"another writer replaced {report.out_dir} after this ingest{now}: the summary above describes "
        "what this command wrote, which is no longer there; ingest again, or give each writer its own --out"
    )
