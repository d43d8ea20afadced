"""One Parquet file as polars cannot quite read it alone: its footer (the Arrow schema polars takes
its types from, fixed-width binary columns), its scan (through pyarrow where polars would panic),
the `key=value` folders above it, and what pandas kept in its metadata rather than in a column.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from recsys.config import ColumnMap
from recsys.data.readers.base import DataFile
from recsys.data.readers.naming import map_columns
from recsys.data.schema import TIME
from recsys.errors import DataError

_PARQUET_ROW = "__source_row"
"""The row index of a Parquet scan, renamed to ROW once the file's columns are selected: a table
may hold a `source_row` column of its own (a processed directory's batches, lineage columns),
which polars refuses to add a row index beside."""


def _hive_values(name: str) -> dict[str, str | None]:
    """`key=value` directories of a file's relative path (hive partitioning), as strings."""
    parts = PurePosixPath(name).parts[:-1]
    values: dict[str, str | None] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if sep and key:
            value = unquote(value)
            values[key] = None if value == "__HIVE_DEFAULT_PARTITION__" else value
    return values


def _folder_values(path: Path | None) -> dict[str, str | None]:
    """The `key=value` folders right above a Parquet file ingested on its own, as `_hive_values`
    reads a directory's: a landing zone's files are ingested one at a time
    (`pipelines.data`), so `dt=2024-01-01/part-0.parquet` lost the day its folder gives it (and
    `year=/month=/day=` folders theirs), which a read of the whole folder keeps. Stops at the
    first folder that is no `key=value`, so a source's unrelated parent folders are not read."""
    if path is None:
        return {}
    parts = []
    for folder in path.absolute().parents:
        key, sep, _ = folder.name.partition("=")
        if not (sep and key):
            break
        parts.append(folder.name)
    return _hive_values("/".join([*reversed(parts), path.name])) if parts else {}


def folder_day(name: str) -> str | None:
    """The day (ISO-8601) that the day folders of the relative path `name` name (`dt=2024-01-02/`,
    `year=/month=/day=`), or None: what a landing file's rows are read with when it has no time."""
    return _partition_day(_hive_values(name))[0]


def folder_days(label: Path | str, files: list[DataFile], mapping: dict[str, str], per_file: bool) -> dict[str, str]:
    """For text files (CSV, JSON Lines) without a time of their own (no TIME in `mapping`): each
    file's day from its day folders (`_partition_day`: `dt=2024-01-01/`, `date=20240101/`,
    `year=/month=/day=`), by `DataFile.name`; {} where the files hold a time, or where no file has a
    day folder. Spark's `partitionBy("dt").csv(...)` leaves the day out of the files, as for
    Parquet, whose folders were read already (`_with_partition_keys`); a text file's rows had no
    time. DataError for a day folder that names no day, or for files of which only some are filed
    under a day (their rows would be timed and untimed at once)."""
    if TIME in mapping:
        return {}
    days: dict[str, str] = {}
    for f in files:
        hive = _hive_values(f.name) if per_file else _folder_values(f.path)
        day, _, unread = _partition_day(hive)
        if unread:
            key, value = next(iter(unread.items()))
            raise DataError(
                f"{f.label}: the folder {key}={value} names no day (YYYY-MM-DD or YYYYMMDD), and its files hold no "
                "time column of their own: rename the folder to the day its rows are of, or name a time column "
                "with {option}",
                setting="data.columns.time",
            )
        if day is not None:
            days[f.name] = day
    if days and len(days) < len(files):
        undated = next(f for f in files if f.name not in days)
        raise DataError(
            f"{label}: {len(days)} of its {len(files)} files are filed under a day folder (dt=, date=, "
            f"year=/month=/day=), which gives their rows their day, but {undated.name} is not, and its rows would "
            "have no time: file it under its day too, or ingest it on its own"
        )
    return days


def _scan_one(f: DataFile) -> tuple[pl.LazyFrame, dict[str, bool]]:
    """One Parquet file scanned with its row index (_PARQUET_ROW, from 1), and its fixed-width
    binary columns (`_Footer.fixed`). A file whose Arrow schema
    gives a timestamp column a fixed UTC offset polars does not take as a zone (`+05:30`, as pandas
    writes a column parsed from `2024-01-01T10:00:00+05:30` strings: `datetime64[ns, UTC+05:30]`)
    made polars panic while reading the footer, a Rust backtrace and a Python traceback instead of a
    read. Parquet stores such timestamps as UTC instants (an int96 one too), the offset only names
    how to show them, so those columns are read through pyarrow as UTC: the same instants."""
    footer = _footer(f)
    zoned = [
        field.name
        for field in footer.stored
        if pa.types.is_timestamp(field.type) and field.type.tz is not None and not _polars_zone(field.type.tz)
    ]
    if not zoned:  # the common case: the footer read once more, by pyarrow
        return pl.scan_parquet(f.target(), row_index_name=_PARQUET_ROW, row_index_offset=1), footer.fixed
    read = _arrow_schema(f)  # as pyarrow reads it: an int96 column is naive there
    schema = pa.schema([fd.with_type(pa.timestamp(fd.type.unit, "UTC")) if fd.name in zoned else fd for fd in read])
    if f.path is not None:  # lazily, as polars would scan it
        frame = pl.scan_pyarrow_dataset(pads.dataset(f.path, schema=schema, format="parquet"))
    else:  # a remote file object: read whole (such files are rare)
        with f.target() as fh:  # type: ignore[union-attr]
            frame = pl.from_arrow(pq.read_table(fh).cast(schema)).lazy()  # type: ignore[union-attr]
    return frame.with_row_index(_PARQUET_ROW, offset=1), footer.fixed


@dataclass(frozen=True)
class _Footer:
    """What a Parquet file's footer says that polars' schema does not. `stored`: the Arrow schema
    written into it (`ARROW:schema`), which polars reads its types from; empty where there is none
    (Spark's files). Not `pq.read_schema`: for an int96 column (`use_deprecated_int96_timestamps`)
    that gives a naive timestamp, while the stored schema, and so polars, keeps its zone. `fixed`:
    the top-level fixed-length byte-array columns that are neither decimals nor float16, each with
    whether it is annotated as a UUID (DuckDB, Iceberg, pyarrow's `pa.uuid()`): polars reads them
    as plain binary."""

    stored: pa.Schema
    fixed: dict[str, bool]


def _footer(f: DataFile) -> _Footer:
    """Parquet file `f`'s `_Footer` (one footer read)."""
    if f.path is not None:
        meta = pq.read_metadata(f.path)
    else:
        with f.target() as fh:  # type: ignore[union-attr]
            meta = pq.read_metadata(fh)
    fixed = {}
    for i in range(meta.num_columns):
        column = meta.schema.column(i)
        kind = column.logical_type.type
        if column.physical_type == "FIXED_LEN_BYTE_ARRAY" and "." not in column.path and kind in {"UUID", "NONE"}:
            fixed[column.path] = kind == "UUID"
    raw = (meta.metadata or {}).get(b"ARROW:schema")
    stored = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(raw))) if raw else pa.schema([])
    return _Footer(stored, fixed)


def _binary_id_text(name: str, uuid: bool) -> pl.Expr:
    """A fixed-width binary id column as text: a UUID as its canonical spelling
    (`9f1c2d3e-4b5a-4c6d-8e7f-a0b1c2d3e4f5`, as a CSV export of the same table spells it), other
    fixed-width bytes (an MD5 digest) as lowercase hex. Read as text, their raw bytes failed the
    whole source ("cannot read as parquet (invalid utf8)", naming no column), or, where they happened
    to be valid UTF-8, became ids of control characters no other export of the log would match."""
    hexed = pl.col(name).bin.encode("hex")
    if not uuid:
        return hexed.alias(name)
    parts = [hexed.str.slice(start, length) for start, length in ((0, 8), (8, 4), (12, 4), (16, 4), (20, 12))]
    return pl.concat_str(parts, separator="-").alias(name)


def _arrow_schema(f: DataFile) -> pa.Schema:
    """The Arrow schema of Parquet file `f` as pyarrow reads it (its footer alone)."""
    if f.path is not None:
        return pq.read_schema(f.path)
    with f.target() as fh:  # type: ignore[union-attr]
        return pq.read_schema(fh)


@lru_cache(maxsize=64)
def _polars_zone(zone: str) -> bool:
    """Whether polars takes `zone` as a time zone (IANA names, whole-hour offsets such as `-08:00`;
    not `+05:30`, `+05:45`, `-03:30`)."""
    try:
        pl.Series([0], dtype=pl.Datetime("us")).dt.replace_time_zone(zone)
    except pl.exceptions.PolarsError:
        return False
    return True


def _with_partition_keys(frame: pl.LazyFrame, hive: dict[str, str | None]) -> tuple[pl.LazyFrame, dict[str, str]]:
    """`frame` (one Parquet file) with the `key=value` directories of its path as string columns,
    for the keys the file does not hold itself, and the day folders whose value names no day
    (`_partition_day`: key -> value), which `_scan_parquet` refuses where the files hold no time of
    their own. Spark and pyarrow leave a partition column out of
    the files, but polars' `write_parquet(partition_by=...)` keeps it in them, and a folder may be
    coarser than the column it is named after (`timestamp=2024-01-01/` over exact times): the
    path's value replaced the file's, so every time of such a folder read as midnight. A file's own
    column is its data; the path adds only what the file lacks. A day folder's column (`date=`,
    `dt=`, `day=`) holds the day as ISO-8601, however the folder spells it."""
    if not hive:
        return frame, {}
    own = frame.collect_schema()
    day, spelt, unread = _partition_day(hive)
    if day is not None and PARTITION_DAY not in hive:
        hive = {**hive, PARTITION_DAY: day}
        if spelt is not None:
            hive[spelt] = day  # `date=20240101` read as Unix seconds 20,240,101 (1970-08-23)
    columns = (pl.lit(v, dtype=pl.String).alias(k) for k, v in hive.items() if k not in own)
    return frame.with_columns(columns), {k: v for k, v in unread.items() if k not in own}


PARTITION_DAY = "year-month-day"
"""The column a `year=/month=/day=` (or `dt=`, `date=`, `day=`) folder layout gives its files'
rows (`_partition_day`); a time name of AUTO_NAMES, the last, so a time column of the files' own
is preferred."""

DAY_KEYS = ("dt", "date", "day")
"""Folder keys whose value is a whole day (`dt=2024-01-01/`, `date=20240101/`): Hive's and
Airflow's `ds` layouts, Spark's `partitionBy("dt")`."""
_ISO_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2})(?::(\d{2}))?(?::(\d{2}))?)?$")
_COMPACT_DAY = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


def _partition_day(hive: dict[str, str | None]) -> tuple[str | None, str | None, dict[str, str]]:
    """(the day (and hour) of a file's folders as ISO-8601 or None, the day key whose value gave
    it, {day key: value} for a day folder whose value names no day).

    `year=2024/month=1/day=2/[hour=13/]`: Spark's `partitionBy("year", "month", "day")` leaves
    those columns out of the files, so such a dataset had no time column, and the warning offered
    `--time-col day`, which reads the day of the month as Unix seconds (1970).
    `dt=2024-01-02/` or `date=20240102/` (`day=` too, alone), with an `hour=` below or not: the
    same day in one folder. `dt` is no time name, so its rows had no time, and one day's rows
    were quarantined as duplicates of another's; `date=20240102` was read as Unix seconds. A value
    that is neither YYYY-MM-DD nor YYYYMMDD (`dt=latest`, `date=2024-13-01`) is returned in the
    third place, not guessed; but `day=3` alone is a day's number, no date, read as ever (no time)."""
    keys = {k.lower(): v for k, v in hive.items()}
    hour = keys.get("hour")
    at = f"T{int(hour):02d}:00:00" if hour and hour.isdigit() else ""
    parts = [keys.get(k) for k in ("year", "month", "day")]
    if all(p is not None and p.isdigit() for p in parts):
        year, month, day = (int(p) for p in parts)  # type: ignore[arg-type]
        return f"{year:04d}-{month:02d}-{day:02d}" + at, None, {}
    for key in DAY_KEYS:
        spelt = next((k for k in hive if k.lower() == key), None)
        if spelt is None or hive[spelt] is None:
            continue
        value = str(hive[spelt]).strip()
        if key == "day" and value.isdigit() and len(value) != 8:
            continue  # `day=3/` alone: a day's number (of a month the path does not name), as before
        found = _ISO_DAY.match(value) or _COMPACT_DAY.match(value)
        try:
            when = datetime(*(int(g) for g in found.groups() if g is not None)) if found else None
        except ValueError:  # 2024-13-01, 20240230, 2024-01-01T25
            when = None
        if when is None:
            return None, None, {spelt: value}
        if len(found.groups()) > 3 and found.group(4) is not None:  # the folder's own hour (Hive: `dt=2024-01-01 10:00:00`)
            return when.isoformat(), spelt, {}
        return when.date().isoformat() + at, spelt, {}
    return None, None, {}


def _range_index_error(f: DataFile, names: list[str], columns: ColumnMap | None) -> DataError | None:
    """The error for a Parquet file pandas wrote after `set_index("user_id")` where the ids ran
    1, 2, 3 ...: pandas keeps such an index as a RangeIndex, which `to_parquet` stores as three
    numbers in the file's pandas metadata, not as a column, so polars reads no such column and the
    error said only "no user column found (columns are ['item_id', ...])". None where the file has no
    named RangeIndex, or where that name would not fill the missing role. Error paths only."""
    try:
        meta = _arrow_schema(f).pandas_metadata or {}
    except (pa.ArrowException, OSError, ValueError):
        return None
    for index in meta.get("index_columns", []):
        if not isinstance(index, dict) or index.get("kind") != "range" or not index.get("name"):
            continue
        name = str(index["name"])
        try:
            map_columns(f.label, [*names, name], columns)
        except DataError:
            continue
        return DataError(
            f"{f.label}: column {name!r} is pandas' index, which `to_parquet` stored as a RangeIndex (from "
            f"{index.get('start')}, step {index.get('step')}) in the file's metadata, not as a column, so it is "
            "not read: write it as a column, e.g. `pd.read_parquet(FILE).reset_index().to_parquet(NEW)`, and "
            "ingest NEW"
        )
    return None
