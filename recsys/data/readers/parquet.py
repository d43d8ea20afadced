"""Parquet files, hive-partitioned directories and remote (fsspec) Parquet sources. Per-file
types that do not combine (float ids written by pandas, date vs number times, dictionary-encoded
columns) are read file by file as that file alone would be, then aligned.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import polars as pl
import pyarrow as pa

from recsys.config import ColumnMap
from recsys.data.readers.base import (
    _MAP_FIELDS,
    _PARQUET_SUFFIXES,
    ID_OUT_OF_RANGE,
    READ_ERROR,
    DataFile,
    RawSource,
)
from recsys.data.readers.delta import DELTA_LOG, replay
from recsys.data.readers.frames import _concat, _select, _unmapped_files, first_error_line
from recsys.data.readers.naming import map_columns
from recsys.data.readers.parquet_files import (
    _PARQUET_ROW,
    _binary_id_text,
    _folder_values,
    _hive_values,
    _range_index_error,
    _scan_one,
    _with_partition_keys,
)
from recsys.data.readers.sniff import DATA_SUFFIXES, _some
from recsys.data.remote import Location
from recsys.data.schema import EVENT, ITEM, TIME, USER, WEIGHT, as_utc
from recsys.errors import DataError

# --------------------------------------------------------------------------- Parquet


def _scan_parquet(
    label: Path | str, files: list[DataFile], columns: ColumnMap | None, per_file: bool
) -> RawSource:
    """One lazy scan per file (so ROW restarts at 1 in each), partition values from the relative
    path added as string columns. Only the files' schemas (footers) are read here: each file's
    own names are mapped to roles (all must fill the first file's roles), and its own types say
    which of its id columns are floats, since
    pandas writes a partition holding a missing id as float64 beside int64 ones (a float id
    column read as text in a concatenation would spell user 3 as "3.0" there and "3" elsewhere)."""
    scans: list[tuple[DataFile, pl.LazyFrame, pl.Schema]] = []
    fixed: dict[str, dict[str, bool]] = {}  # per file: its fixed-width binary columns (see _Footer)
    no_day: dict[str, dict[str, str]] = {}  # per file: its day folders that name no day
    for f in files:
        try:
            frame, fixed[f.name] = _scan_one(f)
            hive = _hive_values(f.name) if per_file else _folder_values(f.path)
            if hive:
                frame, no_day[f.name] = _with_partition_keys(frame, hive)
            scans.append((f, frame, frame.collect_schema()))
        except (pl.exceptions.PolarsError, pa.ArrowInvalid) as exc:
            raise DataError(f"{f.label}: not a readable Parquet file ({first_error_line(exc)})") from None
        except OSError as exc:
            raise DataError(f"{f.label}: cannot read ({exc})") from None
    # Each file's own names are mapped, as each delimited file's header and each JSON Lines
    # file's keys are: a month written as `userId` beside months of `user_id` lines up.
    mapped: list[tuple[DataFile, pl.LazyFrame, pl.Schema, dict[str, str]]] = []
    unmapped: list[tuple[DataFile, DataError]] = []
    for f, frame, own in scans:
        try:
            names = [h for h in own.names() if h != _PARQUET_ROW]
            mapped.append((f, frame, own, map_columns(f.label, names, columns)))
        except DataError as exc:
            unmapped.append((f, _range_index_error(f, names, columns) or exc))
    if unmapped:
        raise _unmapped_files(label, unmapped, [(f, m) for f, _, _, m in mapped])
    first, mapping = mapped[0][0], mapped[0][3]
    for f, _, own, m in mapped:
        _refuse_unread_day(f, m, no_day.get(f.name) or {})
        _same_parquet_roles(f, m, mapping, first)
        flags = [(canon, m[canon]) for canon in (USER, ITEM) if own[m[canon]] == pl.Boolean]
        if flags:  # every id would be "true" or "false": a flag column taken for the ids
            canon, src = flags[0]
            raise DataError(
                f"{f.label}: the {_MAP_FIELDS[canon]} column {src!r} holds booleans (true / false), not ids; "
                "it is likely a flag taken for the id column: name the id column with {option}",
                setting=f"data.columns.{_MAP_FIELDS[canon]}",
            )
        spans = [(canon, src) for canon, src in m.items() if canon != WEIGHT and isinstance(own[src], pl.Duration)]
        if spans:  # a weight may be a duration (dwell time: read as seconds); nothing else may
            canon, src = spans[0]
            raise DataError(
                f"{f.label}: the {_MAP_FIELDS[canon]} column {src!r} holds durations ({own[src]}: time spans, as "
                f"pandas' Timedelta), not {'points in time' if canon == TIME else 'ids or labels'}: name another "
                "column with {option}, or write the column as a number or a time first",
                setting=f"data.columns.{_MAP_FIELDS[canon]}",
            )
        for canon in (USER, ITEM):
            if canon in m and own[m[canon]] == pl.Binary and m[canon] not in fixed[f.name]:
                _refuse_byte_ids(f, frame, canon, m[canon])
        nested = {canon: src for canon, src in m.items() if own[src].is_nested()}
        if nested:
            listing = ", ".join(f"{src!r} ({own[src]})" for src in nested.values())
            raise DataError(
                f"{label if f is first else f.label}: column(s) {listing} hold lists or structs, not one value a row; "
                "ingest reads one (user, item) interaction a row: explode a list of items first (polars / pandas "
                "`explode`), or name a plain column with {option}",
                setting=f"data.columns.{_MAP_FIELDS[next(iter(nested))]}",
            )
    selected = []
    time_types = [own[m[TIME]] for _, _, own, m in mapped] if TIME in mapping else []
    # Partitions whose time is a date / datetime beside ones where it is a number or text: a
    # concatenation would cast the datetimes to their integer microseconds (read back by
    # magnitude, so a time before 1973 went wrong) and a date to its day count (read as
    # seconds: 1970). Each such column is then read as text, as each file alone would be.
    mixed_time = len({isinstance(t, pl.Datetime | pl.Date) for t in time_types}) > 1
    any_float = any(own[m[canon]].is_float() for _, _, own, m in mapped for canon in (USER, ITEM))
    notes: list[str] = []
    spans: list[str] = []  # the files whose weight is a duration
    for f, frame, own, mapping in mapped:
        floats = [canon for canon in (USER, ITEM) if canon in mapping and own[mapping[canon]].is_float()]
        fixes = [_float_id(canon) for canon in floats]
        fixes += [_decimal_id(c) for c in (USER, ITEM) if c in mapping and _scaled_decimal(own[mapping[c]])]
        fixes += [
            _binary_id_text(c, fixed[f.name][mapping[c]])
            for c in (USER, ITEM)
            if c in mapping and own[mapping[c]] == pl.Binary and mapping[c] in fixed[f.name]
        ]
        notes += _rounded_float_ids(f, frame, [mapping[c] for c in floats])
        if WEIGHT in mapping and isinstance(own[mapping[WEIGHT]], pl.Duration):
            fixes.append(_seconds(WEIGHT))
            spans.append(f.name)
        time_type = own[mapping[TIME]] if TIME in mapping else None
        if mixed_time:
            fixes.append(_time_text(pl.col(TIME), time_type).alias(TIME))
        elif isinstance(time_type, pl.Datetime):  # pandas writes tz-aware and naive partitions alike
            fixes.append(as_utc(pl.col(TIME), time_type).alias(TIME))
        verdict = (_float_id_range([mapping[c] for c in floats]),) if any_float else ()  # every file: they concatenate
        one = _select(frame, mapping, f, per_file, extra=verdict, row_index=_PARQUET_ROW)
        selected.append(one.with_columns(fixes) if fixes else one)
    if spans:
        notes.append(f"{label}: the weight column holds durations (in {_some(spans)}): read as their seconds")
    # The first file's column names, as a delimited file's header: the hints that name a session or
    # an item's name column (Diginetica's NA users: `--user-col sessionId`) read them.
    header = tuple(mapped[0][2])
    return RawSource(
        label, "parquet", _concat(_as_text_where_apart(selected)), mapped[0][3], per_file, notes=notes, header=header
    )


def _refuse_unread_day(f: DataFile, mapping: dict[str, str], unread: dict[str, str]) -> None:
    """DataError for a file under a day folder (`dt=`, `date=`, `day=`) whose value names no day,
    where that folder would be the rows' time: the file holds no time column of its own, or the
    folder's column is the one read as the time. Read as it was, `date=latest` quarantined every
    row as bad_time, and `dt=latest` left them untimed."""
    if not unread or (TIME in mapping and mapping[TIME] not in unread):
        return
    key, value = next(iter(unread.items()))
    raise DataError(
        f"{f.label}: the folder {key}={value} names no day (YYYY-MM-DD or YYYYMMDD), and its files hold no time "
        "column of their own: rename the folder to the day its rows are of, or name a time column with {option}",
        setting="data.columns.time",
    )


def _refuse_byte_ids(f: DataFile, frame: pl.LazyFrame, canon: str, src: str) -> None:
    """DataError naming the column, the first row and the way out when a variable-length binary
    (Parquet BINARY without the UTF-8 annotation) id column of `f` holds bytes that are not UTF-8
    text: raw ids (hashes, packed keys) written as bytes. Such a column that is text (Hive and
    Impala write strings so) is read as that text; fixed-width bytes are spelt as hex
    (`_binary_id_text`). Left to the read, it failed the whole source with "cannot read as parquet
    (invalid utf8)", naming neither the column nor the file of a directory. Reads the column once
    more (binary id columns are rare); the row is looked for only once the cast has failed."""
    try:
        frame.select(pl.col(src).cast(pl.String)).collect()
        return
    except pl.exceptions.PolarsError:
        pass
    values = frame.select(_PARQUET_ROW, src).collect()
    row = next((n for n, v in values.iter_rows() if v is not None and not _utf8(v)), None)
    at = f" (row {row:,} is the first)" if row is not None else ""
    raise DataError(
        f"{f.label}: the {_MAP_FIELDS[canon]} column {src!r} holds raw bytes (Parquet BINARY) that are not UTF-8 "
        f"text{at}, so they cannot be read as ids: write the ids as text first, as hex or base64 (polars: "
        f"`pl.col({src!r}).bin.encode('hex')`, Spark: `hex({src})`), or cast the column to a string if its bytes "
        "are text in another encoding"
    )


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _as_text_where_apart(frames: list[pl.LazyFrame]) -> list[pl.LazyFrame]:
    """`frames` (one per Parquet file, canonical columns) with each column whose types have no
    common type across the files read as text in every file, as validation reads text anyway:
    one month's export writes its ids or times dictionary-encoded (Categorical) beside int64
    ones, or binary beside integers, and polars refuses to concatenate those (`failed to
    determine supertype of i64 and cat`), which failed the whole source with no file or column
    named. Columns that combine (int32 and int64, string and large_string) are left alone."""
    if len(frames) < 2:
        return frames
    schemas = [frame.collect_schema() for frame in frames]
    apart = []
    for name in (USER, ITEM, TIME, WEIGHT, EVENT):
        types = [schema[name] for schema in schemas if name in schema]
        if len(set(types)) < 2:
            continue
        try:
            pl.concat([pl.LazyFrame(schema={name: t}) for t in types], how="vertical_relaxed").collect_schema()
        except pl.exceptions.PolarsError:
            apart.append(name)
    if not apart:
        return frames
    return [
        frame.with_columns(_time_text(pl.col(n), schema[n]).alias(n) for n in apart)
        for frame, schema in zip(frames, schemas, strict=True)
    ]


def _same_parquet_roles(f: DataFile, own: dict[str, str], first_roles: dict[str, str], first: DataFile) -> None:
    """DataError when Parquet file `f`'s columns fill other roles than the first file's: a later
    month that gained a `rating` would have its values left out (or every other file's rows
    would have none), one that lost its time column would leave its rows without times. Each
    file's own names are mapped (`_scan_parquet`), so a renamed column is no such case."""
    extra = [(canon, src) for canon, src in own.items() if canon not in first_roles]
    if extra:
        canon, src = extra[0]
        raise DataError(
            f"{f.label}: has a {_MAP_FIELDS[canon]} column {src!r} that {first.name} lacks, so its values "
            "would be left out; the files of a source must fill the same roles: ingest it on its own "
            "(with --append), or add the column to the others"
        )
    lacking = [(canon, src) for canon, src in first_roles.items() if canon not in own]
    if lacking:
        canon, src = lacking[0]
        raise DataError(
            f"{f.label}: no {_MAP_FIELDS[canon]} column, which {first.name} has ({src!r}); the files of a "
            "source must fill the same roles: ingest it on its own (with --append), or move it out"
        )


FLOAT_EXACT_IDS = 2**53
"""Beyond +-2^53 a float64 holds only every second integer (then every fourth, ...)."""


def _rounded_float_ids(f: DataFile, frame: pl.LazyFrame, names: list[str]) -> list[str]:
    """A note for each float id column (`names`, the file's own) holding whole ids at or beyond
    +-2^53 that a 64-bit integer still holds: they are read as the whole number the float is, but
    a float64 cannot tell such neighbours apart, so a writer that put int64 ids through float64
    (pandas, for a column with a missing value) may already have merged distinct ids into one.
    Reads the file's float id columns only (Parquet is columnar); most files have none."""
    if not names:
        return []
    wide = [
        pl.col(n).filter(pl.col(n).is_finite() & (pl.col(n).abs() >= FLOAT_EXACT_IDS)
                         & pl.col(n).cast(pl.Int64, strict=False).is_not_null()).n_unique().alias(n)
        for n in names
    ]  # fmt: skip
    try:
        counts = frame.select(wide).collect().row(0, named=True)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{f.label}: not a readable Parquet file ({first_error_line(exc)})") from None
    return [
        f"{f.label}: column {name!r} holds {count} float id(s) at or beyond 2^53 ({FLOAT_EXACT_IDS}), where a float "
        "cannot hold every integer: distinct ids may already have been merged by the writer's rounding "
        "(pandas puts an integer column with a missing value through float64); write ids as integers or strings"
        for name, count in counts.items()
        if count
    ]


def _time_text(column: pl.Expr, dtype: pl.DataType | None) -> pl.Expr:
    """A time column as the text validation parses: a date or datetime (UTC once `as_utc` ran)
    as ISO-8601, anything else as its own text."""
    if isinstance(dtype, pl.Datetime):
        return as_utc(column, dtype).dt.strftime("%Y-%m-%dT%H:%M:%S%.f")
    if isinstance(dtype, pl.Date):
        return column.dt.strftime("%Y-%m-%d")
    return column.cast(pl.String)


def _float_id_range(names: list[str]) -> pl.Expr:
    """READ_ERROR for a Parquet file's rows: ID_OUT_OF_RANGE where one of its float id columns
    `names` (the file's own names) holds a whole number no Int64 holds (infinite, or beyond +-2^63), else null. Read on the
    raw column (before `_float_id`, which makes such a value null): such an id was quarantined as
    `missing_user`, its value erased from the quarantine file."""
    out = [pl.col(n).is_not_nan() & (pl.col(n) == pl.col(n).floor()) & pl.col(n).cast(pl.Int64, strict=False).is_null()
           for n in names]  # fmt: skip
    flagged = pl.any_horizontal(out) if out else pl.lit(False)
    return pl.when(flagged).then(pl.lit(ID_OUT_OF_RANGE)).otherwise(pl.lit(None, dtype=pl.String)).alias(READ_ERROR)


def _seconds(name: str) -> pl.Expr:
    """A duration weight (a dwell or watch time pandas wrote as Timedelta: Parquet `duration`) as its
    seconds, fractions kept: read as text it failed the whole source, "cannot read as parquet
    (casting from Duration('ms') to String not supported)", naming no column."""
    return (pl.col(name).dt.total_microseconds() / 1_000_000).alias(name)


def _scaled_decimal(dtype: pl.DataType) -> bool:
    """Whether `dtype` is a decimal with digits after the point (`decimal(38,10)`)."""
    return isinstance(dtype, pl.Decimal) and (dtype.scale or 0) > 0


def _decimal_id(name: str) -> pl.Expr:
    """A decimal id column with a scale as the ids it spells: Spark reads an Oracle `NUMBER` column
    declared without a precision as `decimal(38,10)`, so its ids were read as text "123.0000000000"
    (not the "123" of the same log as CSV, or of a `decimal(38,0)` / int64 month beside it). Whole
    values lose the zeros after the point; others keep their text."""
    return pl.col(name).cast(pl.String).str.replace(r"\.0+$", "").alias(name)


def _float_id(name: str) -> pl.Expr:
    """A float id column as the ids it spells: pandas stores an integer id column that holds a
    missing value as float64 (1.0, 2.0, NaN), which read as text would give ids "1.0" (unlike the
    "1" of the same log as CSV) and a user "NaN". Whole values become integer text, NaN missing; a
    whole value no Int64 holds keeps its float text (quarantined: `_float_id_range`)."""
    value = pl.col(name)
    whole = value.cast(pl.Int64, strict=False)
    return (
        pl.when(value.is_nan())
        .then(pl.lit(None, dtype=pl.String))
        .when((value == value.floor()) & whole.is_not_null())
        .then(whole.cast(pl.String))
        .otherwise(value.cast(pl.String))
        .alias(name)
    )


# --------------------------------------------------------------------------- entry points


def _scan_remote(location: Location, format: str | None, columns: ColumnMap | None) -> RawSource:
    """A non-local URL: Parquet files (a file, or a directory that may be hive-partitioned)."""
    found = location.files(DATA_SUFFIXES)
    files = [DataFile(name=r.name, location=location, remote_path=r.path) for r in found]
    fmt = format
    if fmt is None:
        first = files[0]
        if first.name.lower().endswith(_PARQUET_SUFFIXES):
            fmt = "parquet"
        else:
            with location.open(found[0].path) as fh:
                fmt = "parquet" if fh.read(4) == b"PAR1" else "text"
    if fmt != "parquet":
        raise DataError(
            f"{location.url}: {location.protocol}:// sources are read as Parquet only (found {fmt}); "
            "copy text logs to a local directory or convert them to Parquet"
        )
    parquet = [f for f in files if f.name.lower().endswith(_PARQUET_SUFFIXES)] if location.is_dir else files
    if not parquet:
        raise DataError(f"{location.url}: directory holds no Parquet files")
    current = _remote_delta_files(location) if location.is_dir else None
    if current is not None:  # as a local Delta folder (readers._delta_listing), in object storage
        kept = [f for f in parquet if f.name in current]
        missing = sorted(current - {f.name for f in parquet})
        if missing or not kept:
            raise DataError(
                f"{location.url}: the Delta Lake table's log holds {len(missing)} file(s) not in its folder "
                f"({', '.join(missing[:3])}) or none at all: export its rows (`pl.read_delta(URL).write_parquet(NEW)`) "
                "and ingest that"
            )
        scanned = _scan_parquet(location.url, kept, columns, True)
        if len(kept) < len(parquet):
            scanned.notes.append(
                f"{location.url}: a Delta Lake table: {len(parquet) - len(kept)} Parquet file(s) its log removed "
                "(earlier versions, kept until a VACUUM) are not read; the files of its current version are"
            )
        return scanned
    return _scan_parquet(location.url, parquet, columns, location.is_dir)


def _remote_delta_files(location: Location) -> set[str] | None:
    """The files of the Delta table at directory `location` (`delta.replay`), or None without a log."""
    log = f"{location.path.rstrip('/')}/{DELTA_LOG}"
    try:
        if not location.fs.isdir(log):
            return None
        names = [PurePosixPath(p).name for p in location.fs.ls(log, detail=False)]
    except OSError:
        return None
    return replay(location.url, names, lambda name: location.fs.cat_file(f"{log}/{name}"))
