"""Validation with quarantine: parse raw columns into the canonical schema, never dropping silently.

Each row gets the *first* rule it fails as `reason` (null = accepted). Accepted rows continue in the
canonical schema; quarantined rows keep their raw values, their source row number and the reason, so
a person can find and fix them. `rows_in == rows_accepted + rows_quarantined` by construction: the
two outputs are complementary filters of one frame.

Rules, in order: a reason the reader found (malformed_json: a JSON Lines line that is not one
JSON object; id_out_of_range: a Parquet float id beyond the 64-bit integers), missing_user, missing_item, bad_timestamp, bad_weight, non_finite_weight,
negative_weight (not a rule where the config reads the weight as a rating or ignores its value:
see `validate`'s keep_negative), future_timestamp, duplicate (an exact copy of an earlier accepted
row; not a rule under data.exact_duplicates = "keep", which counts such rows as repeated events).

For a directory source both outputs carry SOURCE_FILE, and ROW counts rows within that file.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.readers import (
    AUTO_NAMES,
    BOOLEAN_ID,
    DUPLICATE_KEY,
    EXTRA_FIELDS,
    ID_OUT_OF_RANGE,
    LATE_KEY,
    MALFORMED_JSON,
    NOT_UTF8_HINT,
    READ_ERROR,
    ROW,
    SOURCE_FILE,
    RawSource,
    base_name,
    column_label,
    column_name,
    first_error_line,
    first_non_utf8,
    number_rows,
    open_decompressed,
)
from recsys.data.readers.base import gzip_fault
from recsys.data.readers.sniff import directory_files
from recsys.data.schema import EVENT, ITEM, TIME, TIME_DTYPE, USER, WEIGHT, as_utc
from recsys.data.sorting import sort_in_parallel
from recsys.data.vocab import CODE_DTYPE, CODE_DTYPES, WIDE_CODE_DTYPE, decimal_codes
from recsys.errors import DataError, NoDataRows

REASON = "reason"
_HASH = "__row_hash"
_CODE = "__{}_code"  # decimal code of an id column on the fast path (see `vocab.decimal_codes`)
_FAST = "__{}_fast"  # per row: that code is exact (or the id is missing, quarantined anyway)
REASONS = (
    MALFORMED_JSON,
    DUPLICATE_KEY,
    BOOLEAN_ID,
    EXTRA_FIELDS,
    ID_OUT_OF_RANGE,
    "missing_user",
    "missing_item",
    "bad_timestamp",
    "bad_weight",
    "non_finite_weight",
    "negative_weight",
    "future_timestamp",
    "duplicate",
)
# While validating, a row's reason is an Enum (a 1-byte code per row, null when accepted) rather
# than text: a String column costs 16 bytes a row even where null (160 MB on 10M rows) to say
# nothing about almost every row. The quarantine file shows the reason as text.
_REASON_DTYPE = pl.Enum(REASONS)
# Numbers above these magnitudes cannot be plausible Unix seconds (1e11 s is year 5138), so they are
# read as milliseconds, microseconds or nanoseconds.
_MS_ABOVE, _US_ABOVE, _NS_ABOVE = 1e11, 1e14, 1e17
# Whole seconds (below _MS_ABOVE) and whole milliseconds below this scale to microseconds exactly in
# float64 too (value * 15625 or value * 125 stays below 2**53), so `_integer_to_time` gives the
# same instants as `_numeric_to_time` bit for bit.
_EXACT_MS_BELOW = 70_000_000_000_000
# `%#z` reads `+02:00`, `+0200` and the hours-only `+02` that PostgreSQL writes for timestamptz
# (`2020-01-02 03:04:05+00`, every `psql \copy` export); `%z` refuses the last.
_ISO_FORMATS_ZONED = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
_ISO_FORMATS_NAIVE = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
# Go's time.String() (`2006-01-02 15:04:05.999999999 -0700 MST`, with ` m=+0.0001` when the time
# carries a monotonic reading), as Go services log times: the zone's name is dropped (the offset
# says it all; names such as CST are ambiguous) and the offset joined to the time.
_GO_TIME = r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?) ([+-]\d{4}) [A-Za-z0-9+-]+(?: m=[+-]\d+(?:\.\d+)?)?$"
_GO_FORMAT = "%Y-%m-%d %H:%M:%S%.f%#z"
# A date and an hour alone, as Tianchi's mobile-commerce log (`2014-12-06 02`) writes its times;
# chrono reads no hour without minutes, so it is spelled in Go's layout at UTC (`:00:00+0000`) and read by its parse.
_HOUR_TIME = r"^(\d{4}-\d{2}-\d{2})[ T](\d{2})$"
# Twitter's created_at layout, as the logs built on its API and Rails apps write times (`Mon Aug 01
# 13:41:57 -0700 2016`: Goodreads' date_added, Foursquare check-ins' utcTimestamp), read by its offset.
_TWITTER_TIME = r"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) (\d{2}) (\d{2}:\d{2}:\d{2}) ([+-]\d{4}) (\d{4})$"
_MONTHS = [f"-{m}-" for m in ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")]
_MONTH_NUMBERS = [f"-{n:02d}-" for n in range(1, 13)]
_SAMPLE_ROWS = 2000
DECIMAL_MODES = ("auto", "comma", "point")
"""`data.decimal`: how a comma in a weight or time value is read. `comma`: as the decimal point
(`4,5` is 4.5), as spreadsheets in decimal-comma locales write numbers; `point`: as a thousands
separator (`1,234` and `1,234.5` are 1234 and 1234.5); `auto`: `comma` in `;`-separated files
(the CSV those locales' spreadsheets export; in a directory whose files' separators differ,
the `;` files alone), else neither (a comma in a number is a bad value).
In `auto`, a `;` column whose comma values all look like thousands groups (`1,234`, `12,500`: one
comma, three digits after it) is ambiguous, and ingest stops and asks rather than guess."""
# Internal readings (`RawSource.decimal`): "plain" reads no comma; the others as above.
_DECIMAL_COMMA = r"^([+-]?\d+),(\d+)$"
_THOUSANDS = r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$"
_GROUP_LIKE = r"^[+-]?\d{1,3},\d{3}$"
# Integers spelled as polars writes them back ("7", "-3"): the sample's time / weight values must
# be, for a typed read to be worth trying (`_typed_read_is_exact` then checks every row).
_PLAIN_INTEGER = r"^-?(?:0|[1-9][0-9]*)$"
TYPED_READ = "typed read"
_BACKGROUND = ThreadPoolExecutor(2, thread_name_prefix="recsys-validate")
"""Runs the typed-read proof and the duplicate check beside the rest of a validation (`_validate`)."""


@dataclass
class ValidationResult:
    """rows: the accepted rows, canonical columns + ROW (+ SOURCE_FILE for a directory), except
    that an id column whose every value is a canonical decimal in [0, 2**32) holds that value as
    CODE_DTYPE (see `vocab.decimal_codes`), and one whose values are canonical decimals of which
    some reach 2**32 (64-bit ids) holds them as WIDE_CODE_DTYPE: ingest groups and stores those
    codes, and never pays for the text. `accepted` gives the canonical (text id) view.
    quarantine: ROW (+ SOURCE_FILE), raw values as strings, reason."""

    rows: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    reasons: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # one line each, for ingest's warnings

    @property
    def accepted(self) -> pl.DataFrame:
        """The accepted rows in the canonical schema (ids as text; a code's text is the id)."""
        return self.rows.with_columns(
            pl.col(c).cast(pl.String) for c in (USER, ITEM) if self.rows.schema[c] in CODE_DTYPES
        )

    @property
    def rows_accepted(self) -> int:
        return self.rows.height

    @property
    def rows_quarantined(self) -> int:
        return self.quarantine.height


# --------------------------------------------------------------------------- parsers


def _number(text: pl.Expr, decimal: str = "plain", where: pl.Expr | None = None) -> pl.Expr:
    """Number text -> Float64, null where unreadable. A comma is read (`decimal`: comma or point,
    see DECIMAL_MODES) only in the values the plain cast did not read: null elsewhere, so the
    other rows cost a null check, not a regex. `where`: the rows a comma is read in (the `;`
    files of a directory whose separators differ, `_comma_rows`); None: every row."""
    value = text.cast(pl.Float64, strict=False)
    if decimal == "plain":
        return value
    unread = value.is_null() if where is None else value.is_null() & where
    rest = pl.when(unread).then(text)
    if decimal in ("comma", "auto-comma"):
        fixed = rest.str.replace(_DECIMAL_COMMA, "${1}.${2}")
    else:
        fixed = pl.when(rest.str.contains(_THOUSANDS)).then(rest.str.replace_all(",", "", literal=True))
    return pl.coalesce(value, fixed.cast(pl.Float64, strict=False))


def _numeric_to_time(seconds_like: pl.Expr) -> pl.Expr:
    """Unix epoch number -> UTC datetime, the unit chosen per value by magnitude."""
    magnitude = seconds_like.abs()
    micros = (
        pl.when(magnitude < _MS_ABOVE)
        .then(seconds_like * 1e6)
        .when(magnitude < _US_ABOVE)
        .then(seconds_like * 1e3)
        .when(magnitude < _NS_ABOVE)
        .then(seconds_like)
        .otherwise(seconds_like * 1e-3)
    )
    return micros.round(0).cast(pl.Int64, strict=False).cast(TIME_DTYPE)


def _integer_to_time(text: pl.Expr) -> pl.Expr:  # text, or an integer column (the cast is then free)
    """Integer Unix seconds / milliseconds text -> UTC datetime, null for anything else (which the
    caller re-checks with `_numeric_to_time`). Same values as that float route for these inputs,
    for about half the cost: an integer parse and one multiply instead of a float parse, a
    magnitude test per unit, a multiply, a round and two casts.

    One `when` chain picks the scale and one multiply applies it: two masked copies joined by a
    `coalesce` (the earlier form) cost about 6x as much (10M rows: ~1.3 s vs ~0.2 s of CPU). The
    cast accepts exactly what `str.to_integer` does (digits with an optional sign)."""
    value = text.cast(pl.Int64, strict=False)
    seconds = (value > -int(_MS_ABOVE)) & (value < int(_MS_ABOVE))
    millis = (value > -_EXACT_MS_BELOW) & (value < _EXACT_MS_BELOW)
    scale = pl.when(seconds).then(pl.lit(1_000_000, pl.Int64)).when(millis).then(pl.lit(1_000, pl.Int64))
    return (value * scale).cast(TIME_DTYPE)


def _iso_to_time(text: pl.Expr) -> pl.Expr:
    """ISO-8601 with or without zone (naive = UTC); 'Z' and a ' UTC' suffix (SQL / BigQuery exports,
    the REES46 e-commerce logs' `2019-10-01 00:00:00 UTC`) are read as +00:00; a date and an hour
    alone (Tianchi's `2014-12-06 02`) as that hour, UTC; Go's time.String() and Twitter's created_at
    (`Mon Aug 01 13:41:57 -0700 2016`) by their offsets."""
    zoned_text = text.str.replace(r"(?:[Zz]| ?UTC)$", "+00:00")
    attempts = [
        zoned_text.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC")
        for fmt in _ISO_FORMATS_ZONED
    ]
    attempts += [
        text.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC")
        for fmt in _ISO_FORMATS_NAIVE
    ]
    iso = pl.coalesce(attempts)
    # Go's layout is tried on the values no ISO format read, and only on those: the others are
    # null in `rest`, which a parse passes over, so ordinary ISO columns keep their speed (one
    # more attempt on every row cost 30-70% of the time parse).
    rest = pl.when(iso.is_null()).then(text)
    # A date and an hour alone is spelled as Go's layout at UTC, so one parse reads both (a
    # parse of its own re-derived `rest` and cost ~50% more on an ISO column).
    # Twitter's layout is spelled as Go's too (`2016-08-01 13:41:57-0700`): a parse of its own
    # would read `rest` a second time, and with it every ISO attempt (doubling an ISO column's cost).
    go = (
        rest.str.replace(_GO_TIME, "${1}${2}")
        .str.replace(_HOUR_TIME, "${1} ${2}:00:00+0000")
        .str.replace(_TWITTER_TIME, "${5}-${1}-${2} ${3}${4}")
        .str.replace_many(_MONTHS, _MONTH_NUMBERS)
        .str.to_datetime(_GO_FORMAT, strict=False, time_unit="us", time_zone="UTC")
    )
    return pl.coalesce(iso, go)


_SLASHED_DATE = re.compile(
    r"^(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<year>\d{4}|\d{2})"
    r"(?:(?P<t>[ T])(?P<hour>\d{1,2}):\d{2}(?P<seconds>:\d{2})?(?P<fraction>\.\d+)?(?: ?(?P<ampm>[AaPp][Mm]))?)?$"
)


# The year first, with slashes or dots (`2017/8/18`, `2017.08.18 14:05`): a spreadsheet's or an
# East Asian locale's export of a date (Food.com's RAW_interactions.csv re-saved so); always year,
# month, day, so nothing to tell apart. Dashes are ISO-8601, which the built-in parse reads.
_YEAR_FIRST_DATE = re.compile(
    r"^(?P<year>\d{4})(?P<sep>[/.])\d{1,2}(?P=sep)\d{1,2}"
    r"(?:(?P<t>[ T])\d{1,2}:\d{2}(?P<seconds>:\d{2})?(?P<fraction>\.\d+)?)?$"
)


def guess_time_format(values: list[str]) -> tuple[str, str] | None:
    """(data.time_format layout, what it assumed) for times written as day and month in either
    order (`12/1/2010 8:26`, UCI Online Retail's; `13.01.2011`; `1/2/2011 08:05:01 PM`), which no
    built-in parse reads, or None; `values`: some of the column's unread values, the first one
    spelling the layout. The day comes first where one of them has a first number above 12, the
    month where one has a second number above 12; where none settles it, the month for `/` (US)
    and the day for `.` and `-` (European), and the message says it could not tell. A date written
    with the year first (`2017/8/18`, `_YEAR_FIRST_DATE`) is read year, month, day."""
    texts = [v.strip() for v in values if isinstance(v, str)]
    year_first = next((m for m in map(_YEAR_FIRST_DATE.match, texts) if m is not None), None)
    matches = [m for m in map(_SLASHED_DATE.match, texts) if m is not None]
    if year_first is not None and not matches:
        sep = year_first["sep"]
        clock = (year_first["t"] + "%H:%M" + (":%S" if year_first["seconds"] else "")) if year_first["t"] else ""
        clock += "%.f" if year_first["fraction"] else ""
        return sep.join(["%Y", "%m", "%d"]) + clock, "the year, the month, then the day"
    if not matches:
        return None
    match = matches[0]
    sep, value = match["sep"], match.string
    firsts = [int(m["a"]) for m in matches if m["sep"] == sep]
    seconds = [int(m["b"]) for m in matches if m["sep"] == sep]
    day_seen, month_seen = max(firsts) > 12, max(seconds) > 12
    if day_seen and month_seen:
        return None
    a, b = (13, 1) if day_seen else (1, 13) if month_seen else (1, 1)
    day_first = a > 12 or (b <= 12 and sep != "/")
    date = sep.join(["%d", "%m"] if day_first else ["%m", "%d"]) + sep + ("%Y" if len(match["year"]) == 4 else "%y")
    clock = ""
    if match["t"]:
        clock = match["t"] + ("%I" if match["ampm"] else "%H") + ":%M" + (":%S" if match["seconds"] else "")
        clock += "%.f" if match["fraction"] else ""
        clock += (" " if " " + match["ampm"] in value else "") + "%p" if match["ampm"] else ""
    if a > 12 or b > 12:
        said = f"the {'day' if day_first else 'month'} first, as a number above 12 there shows"
    else:
        other = sep.join(["%m", "%d"] if day_first else ["%d", "%m"])
        said = f"the {'day' if day_first else 'month'} first, which no value seen settles: {other} if not"
    return date + clock, said


def parse_time(
    column: str,
    dtype: pl.DataType,
    has_text_dates: bool,
    padded: bool = True,
    integers: bool = False,
    decimal: str = "plain",
    where: pl.Expr | None = None,
    time_format: str | None = None,
) -> pl.Expr:
    """Raw time column -> Datetime(us, UTC); unparseable values become null (then quarantined).
    padded=False skips whitespace stripping (a sample showed none; it is the costliest step).
    integers=True parses whole seconds / milliseconds only (`_integer_to_time`), from text or an
    integer column: the caller must re-check the values it leaves null with integers=False.
    `time_format` (data.time_format, a strftime layout: `%m/%d/%Y %H:%M`, `%Y%m%d`) is tried first
    on text and integer columns (a yyyymmdd integer read as seconds lands in 1970); a value it does
    not read is parsed as without it. Without %z the time is UTC."""
    col = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        return as_utc(col, dtype)
    if isinstance(dtype, pl.Date):
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if time_format is not None and (dtype == pl.String or dtype.is_integer()):
        formatted = (
            col.cast(pl.String)
            .str.strip_chars()
            .str.to_datetime(time_format, strict=False, time_unit="us", time_zone="UTC")
        )
        return pl.coalesce(formatted, parse_time(column, dtype, True, True, False, decimal, where))
    if dtype.is_integer() and integers:
        return _integer_to_time(col)
    if dtype.is_numeric():
        return _numeric_to_time(col.cast(pl.Float64))
    text = col.cast(pl.String)
    if padded:
        text = text.str.strip_chars()
    if integers and not has_text_dates:
        return _integer_to_time(text)
    numeric = _numeric_to_time(_number(text, decimal, where))
    if not has_text_dates:
        return numeric
    return pl.coalesce(numeric, _iso_to_time(text))


@dataclass(frozen=True)
class _Sample:
    """What the first rows say about the time and weight text: whether ISO dates occur (else the
    string-date attempts are skipped) and whether values are whitespace-padded (else stripping is
    skipped). Like the fast paths below, both are checked against every row afterwards: a row that
    only the general parse reads sends validation round again with the general parse.

    `fast` names the columns proposed for an exact fast path that the whole column must then
    confirm (else validation runs again without it): id columns whose values are all canonical
    decimals (`vocab.decimal_codes`), a time column of integer seconds / milliseconds, a weight
    column cast without stripping, and TYPED_READ: reading decimal id columns as UInt64 and
    `integral` columns (time / weight written as plain integers) as Int64 with polars' CSV parser
    instead of as text, which spares materialising and parsing their strings. A value that
    parser rejects ("4.5", "u7", a date) fails the read; one it reads but that was not spelled
    as its plain decimal ("007", "+7", " 7", a quoted number) fails `_typed_read_is_exact`.
    Either way validation starts again from the text, so the result, quarantined raw text
    included, is the text route's."""

    text_dates: bool = False
    padded: frozenset[str] = frozenset()
    fast: frozenset[str] = frozenset()
    integral: frozenset[str] = frozenset()


def _sample(raw: RawSource) -> _Sample:
    columns = [c for c in (USER, ITEM, TIME, WEIGHT) if c in raw.mapping]
    sample = raw.frame.select(columns).head(_SAMPLE_ROWS).collect()
    padded, text_dates, fast, integral = set(), False, set(), set()
    for name in (USER, ITEM):
        series = sample.get_column(name)
        if series.dtype == pl.String or series.dtype.is_integer():
            text = series.cast(pl.String).drop_nulls()
            text = text.filter(text != "")
            _, canonical = decimal_codes(pl.col(name), WIDE_CODE_DTYPE)
            if text.len() and bool(text.to_frame(name).select(canonical.all()).item()):
                fast.add(name)
    for name in columns:
        if name in (USER, ITEM):
            continue
        series = sample.get_column(name)
        if series.dtype != pl.String:
            continue
        values = series.drop_nulls()
        if bool((values != values.str.strip_chars()).any()):
            padded.add(name)
        values = values.str.strip_chars()
        values = values.filter(values != "")
        if name == TIME and values.len() and bool(values.cast(pl.Float64, strict=False).is_null().any()):
            text_dates = True
        if name == TIME and values.len() and not text_dates and name not in padded:
            if values.to_frame(name).select(_integer_to_time(pl.col(name)).is_not_null().all()).item():
                fast.add(name)
        if name == WEIGHT and name not in padded:
            fast.add(name)
        if name in fast and values.len() and bool(values.str.contains(_PLAIN_INTEGER).all()):
            integral.add(name)
    if raw.typed is not None and raw.layout is not None and (integral or fast & {USER, ITEM}):
        fast.add(TYPED_READ)
    return _Sample(text_dates, frozenset(padded), frozenset(fast), frozenset(integral))


# --------------------------------------------------------------------------- rules


def _reason_expr(
    has_time: bool,
    has_weight: bool,
    future_limit: datetime,
    has_read_error: bool,
    numeric_ids: frozenset[str] = frozenset(),
    keep_negative: bool = False,
) -> pl.Expr:
    """The first rule each row fails (null: none). numeric_ids: id columns read as numbers, which
    can be null but not empty. keep_negative: a negative weight is no failure (see `validate`)."""

    def missing(name: str, alias: str) -> pl.Expr:
        column = pl.col(alias)
        return column.is_null() if name in numeric_ids else column.is_null() | (column == "")

    rules: list[tuple[pl.Expr, str | pl.Expr]] = []
    if has_read_error:  # the reader's verdict comes first: such a row has no values to judge
        rules.append((pl.col(READ_ERROR).is_not_null(), pl.col(READ_ERROR)))
    rules += [(missing(USER, "_user"), "missing_user"), (missing(ITEM, "_item"), "missing_item")]
    if has_time:
        raw_time_present = pl.col("_time_raw_present")
        rules.append((raw_time_present & pl.col("_time").is_null(), "bad_timestamp"))
    if has_weight:
        w = pl.col("_weight")
        rules += [
            (w.is_null(), "bad_weight"),
            (w.is_nan() | w.is_infinite(), "non_finite_weight"),
        ]
        if not keep_negative:
            rules.append((w < 0, "negative_weight"))
    if has_time:
        rules.append((pl.col("_time") > pl.lit(future_limit, dtype=TIME_DTYPE), "future_timestamp"))

    def value(reason: str | pl.Expr) -> pl.Expr:
        return pl.lit(reason, dtype=_REASON_DTYPE) if isinstance(reason, str) else reason.cast(_REASON_DTYPE)

    expr = pl.when(rules[0][0]).then(value(rules[0][1]))
    for cond, reason in rules[1:]:
        expr = expr.when(cond).then(value(reason))
    return expr.otherwise(pl.lit(None, dtype=_REASON_DTYPE))


def validate(
    raw: RawSource,
    max_future_days: float,
    now: datetime | None = None,
    decimal: str = "auto",
    keep_duplicates: bool = False,
    keep_negative: bool = False,
    time_format: str | None = None,
) -> ValidationResult:
    """Parse and check every row of `raw`; see the module docstring for the rules.

    One pass over the source: each column is cast once (non-strict, so a bad value becomes null and
    the reason rules find it) and a u64 hash of the parsed row is computed alongside, all in the
    streaming engine. Duplicates are then found on that hash column alone (see `_duplicate_mask`).
    Raw text is kept only as long as the quarantine needs it.

    Cheaper parses that the first rows suggest (decimal ids as integer codes, integer timestamps,
    unstripped weights, and for delimited files a typed read of such columns; see `_Sample`) are
    checked against every row afterwards; where a row needs the general parse, the source is
    validated again without that shortcut, so the result never depends on which route ran (a log
    whose later rows break the pattern costs a second pass).

    A source whose lazy read fails and that offers an exact (per-line) rebuild, i.e. JSON Lines with
    a line the cheap shape test let through, is validated once more from that rebuild, so the bad
    line is quarantined instead of failing the file (a tab-separated file whose quoted read fails
    offers an unquoted read the same way).

    `decimal` (DECIMAL_MODES) says how a comma in a weight or time value is read; values read
    through a comma are counted in a note (ValidationResult.notes).

    `keep_duplicates` (data.exact_duplicates = "keep") accepts a row equal to an earlier one in
    every column read instead of quarantining it: in a log whose times cannot tell events apart
    (none, or dates only) such a row is a repeated event that count / sum aggregation should see.

    `keep_negative` accepts a negative weight instead of quarantining it as negative_weight: where
    the config reads the column as a rating (a positive rule) or ignores its value (binarize,
    count), a negative rating (Jester's -10..10, Anime's -1 = watched, not rated) is a valid row,
    not bad data (`recsys.data.ingest_checks.negative_weights_read`).

    `time_format` (data.time_format): the strftime layout of a time column that is neither Unix time
    nor ISO-8601 (`parse_time`)."""
    if decimal not in DECIMAL_MODES:
        raise DataError(f"unknown decimal mode {decimal!r}; choose one of {', '.join(DECIMAL_MODES)}")
    if decimal == "auto":
        reading = "auto-comma" if raw.separator == ";" or raw.comma_files else "plain"
    else:
        reading = decimal
    raw = replace(raw, decimal=reading, time_format=time_format)
    try:
        return _validate(raw, max_future_days, now, keep_duplicates=keep_duplicates, keep_negative=keep_negative)
    except (pl.exceptions.PolarsError, OSError) as exc:
        if raw.exact is None:
            raise _read_error(raw, exc) from None
    try:
        # The rebuild is read as text: no typed read of the source that failed.
        rebuilt = replace(raw, frame=raw.exact(), exact=None, typed=None, layout=None)
        return _validate(rebuilt, max_future_days, now, keep_duplicates=keep_duplicates, keep_negative=keep_negative)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _read_error(raw, exc) from None


def _read_error(raw: RawSource, exc: BaseException) -> DataError:
    # polars said "unexpected end of file", "corrupt deflate stream" or "corrupt gzip stream does not
    # have a matching checksum" and no more: a .gz cut short or damaged, named with what to do.
    if ("end of file" in str(exc) or "corrupt" in str(exc)) and (fault := _gzip_fault(raw.path)) is not None:
        return fault
    if isinstance(exc, pl.exceptions.PolarsError):
        message = first_error_line(exc)
        if "is not properly escaped" in str(exc):
            return _bad_quote_error(raw, str(exc))
        if "utf-8" in message.lower():
            where = first_non_utf8(raw.path) if isinstance(raw.path, Path) else None
            message += f" at {where}" if where else ""
            return DataError(
                f"{raw.path}: cannot read as {raw.format} ({message}): {NOT_UTF8_HINT}",
                setting="data.encoding",
                value="latin-1",
            )
        return DataError(f"{raw.path}: cannot read as {raw.format} ({message})")
    return DataError(f"{raw.path}: cannot read ({exc})")


def _gzip_fault(path: Path | str) -> DataError | None:
    """The error for the gzip'd file of source `path` (itself, or the first of a directory's `.gz`
    files) that ends early or is damaged, read through (error path only); None when none is, or
    the source is not local."""
    if not isinstance(path, Path):
        return None
    files = [path] if path.is_file() else directory_files(path, (".gz",)) if path.is_dir() else []
    return next((fault for f in files if (fault := gzip_fault(f)) is not None), None)


def _bad_quote_error(raw: RawSource, text: str) -> DataError:
    """polars refuses a whole CSV for one field that opens a quote it does not close properly
    (`"Weird Al" Yankovic`, `"unterminated`), naming neither line nor fix: find the line (error
    path only: a plain scan of the file) and say what a quoted field must look like."""
    found = re.search(r"could not parse `(.*?)` as dtype", text, re.DOTALL)
    field = found.group(1).split("\n", 1)[0] if found else ""
    where = ""
    path = Path(str(raw.path))
    if field and path.is_file():
        needle = field.encode()
        with open_decompressed(path) as fh:
            line = next((n for n, line in enumerate(fh, start=1) if needle in line), None)
        where = f" at line {line}" if line else ""
    fix = "fix that line"
    if '\\"' in field:  # Book-Crossing's dump escapes quotes with a backslash, which CSV does not
        fix = (
            'a quote escaped with a backslash (\\") is not CSV: double such quotes first, e.g. '
            "`sed 's/\\\\\"/\"\"/g' FILE > NEW`"
        )
    return DataError(
        f"{raw.path}: a quoted field is not closed properly{where} ({field[:80]!r}): a field that starts "
        f'with " must end with one, with every quote inside doubled (""); {fix}'
    )


def _quoted(text: pl.Expr) -> pl.Expr:
    """`text` (stripped) is enclosed in a pair of literal double quotes: `"034545104X"`."""
    return text.str.starts_with('"') & text.str.ends_with('"') & (text.str.len_bytes() >= 2)


def _unquoted(text: pl.Expr) -> pl.Expr:
    """An id without one pair of enclosing literal quotes (and the spaces inside them).

    Why: a CSV quoted twice, as a spreadsheet's re-export of Book-Crossing's `"276725";"034545104X"`
    writes it (the ISBN between three quotes on each side, so the field's value is `"034545104X"`,
    quotes included), left the quotes inside every item id, with no word: a model's ids, the served
    recommendations and any join with the books table then carried them. Applied to a column most
    of whose ids are so enclosed (`_quoted_twice`); `quoted_id_notes` says how many were cleaned."""
    return pl.when(_quoted(text)).then(text.str.slice(1, text.str.len_chars() - 2).str.strip_chars()).otherwise(text)


QUOTED_TWICE_SHARE = 0.5
"""Share of a text id column's non-empty values enclosed in literal quotes above which the column is
read as quoted twice (`_unquoted`)."""


def _quoted_twice(frame: pl.DataFrame, column: str) -> bool:
    """Most non-empty values of the text id `column` are enclosed in literal quotes: the mark of a
    file quoted twice, which quotes them all (Book-Crossing's re-export: every ISBN; a few malformed
    rows aside). A few quoted names among plain ones (Last.fm 1K's track `"Heroes"`) are ids as
    written, and keep their quotes. A look at the first characters first, so a column without
    any quote costs one cheap pass."""
    if not frame.select(pl.col(column).str.starts_with('"').any()).item():
        return False
    text = pl.col(column).str.strip_chars()
    counts = frame.select(_quoted(text).sum().alias("quoted"), (text.str.len_bytes() > 0).sum().alias("values"))
    return counts.item(0, "quoted") > QUOTED_TWICE_SHARE * counts.item(0, "values")


def quoted_id_notes(frame: pl.DataFrame, raw: RawSource, columns: list[str]) -> list[str]:
    """One line per id column of `frame` (the raw values) in which ids were enclosed in literal
    quotes that `_unquoted` removed: the count, the first value, and what to check."""
    notes = []
    for name in columns:
        if name not in frame.columns or frame.schema[name] != pl.String:
            continue
        text = pl.col(name).str.strip_chars()
        found = frame.lazy().select(
            _quoted(text).sum().alias("n"), text.filter(_quoted(text)).first().alias("first"), text.count().alias("of")
        ).collect()
        count = found.item(0, "n")
        if count:
            column = raw.mapping.get(name, name)
            notes.append(
                f"{count:,} of {found.item(0, 'of'):,} {_ROLE[name]} ids in column {column!r} were enclosed in literal "
                f"quotes (first: {found.item(0, 'first')}), as a file quoted twice has them (a spreadsheet's re-export "
                "of a quoted CSV): they were read without the quotes (an id whose quotes are its own cannot be told "
                "from these)"
            )
    return notes


def _id_exprs(name: str, alias: str, decimal: bool, typed: bool = False, unquote: bool = False) -> list[pl.Expr]:
    """The parsed id (String, stripped) and, on the decimal fast path, its code and the per-row
    check that the code is exact. The fast path skips stripping: a canonical decimal has no
    whitespace, and a column where any row fails the check is validated again on the slow path.
    typed: the column was read as UInt64 (TYPED_READ), so it is the code already. Codes are 64-bit
    here; `_narrow_codes` keeps 32 bits where every value fits. unquote: the column holds ids
    enclosed in literal quotes (`_unquoted`; found after a first pass, which then is redone)."""
    if typed:
        return [pl.col(name).alias(alias), pl.col(name).alias(_CODE.format(name))]
    if not decimal:
        text = pl.col(name).cast(pl.String).str.strip_chars()
        return [(_unquoted(text) if unquote else text).alias(alias)]
    text = pl.col(name).cast(pl.String)
    code, canonical = decimal_codes(text, WIDE_CODE_DTYPE)
    fast = text.is_null() | (text == "") | canonical
    return [text.alias(alias), code.alias(_CODE.format(name)), fast.alias(_FAST.format(name))]


def _validate(
    raw: RawSource,
    max_future_days: float,
    now: datetime | None,
    allowed: frozenset[str] | None = None,
    general: frozenset[str] = frozenset(),
    *,
    keep_duplicates: bool = False,
    keep_negative: bool = False,
) -> ValidationResult:
    """See `validate`. `allowed` limits the fast paths the sample may propose (None: any); a fast
    path that the whole column does not confirm is dropped and the validation redone without it,
    and a time or weight column where a row needs the general parse (stripping; ISO dates) is
    named in `general` for the redo, so results never depend on which path ran (as is a text id
    column holding ids in literal quotes, which the general parse unquotes: `_unquoted`)."""
    now = now or datetime.now(UTC)
    future_limit = now + timedelta(days=max_future_days)
    has_time, has_weight, has_event = TIME in raw.mapping, WEIGHT in raw.mapping, EVENT in raw.mapping
    sample = _sample(raw)
    # The sample proposes fast paths per column; the whole column confirms them below.
    fast = (sample.fast if allowed is None else sample.fast & allowed) - general
    padded, text_dates = sample.padded | general, sample.text_dates or TIME in general
    decimal = fast & {USER, ITEM}
    typed: dict[str, pl.DataType] = {}
    if TYPED_READ in fast and raw.typed is not None:
        typed = {c: WIDE_CODE_DTYPE() for c in decimal}
        typed |= {c: pl.Int64() for c in (TIME, WEIGHT) if c in fast and c in sample.integral}
    source = raw.typed(typed) if typed and raw.typed is not None else raw.frame
    schema = source.collect_schema()
    integer_time = TIME in fast and (schema.get(TIME) == pl.String or TIME in typed)
    plain_weight = WEIGHT in fast and schema.get(WEIGHT) == pl.String

    parsed = [
        *_id_exprs(USER, "_user", USER in decimal, USER in typed, USER in general),
        *_id_exprs(ITEM, "_item", ITEM in decimal, ITEM in typed, ITEM in general),
    ]
    if has_time:
        present = pl.col(TIME).is_not_null()
        if schema[TIME] == pl.String:
            blank = pl.col(TIME).str.strip_chars() == "" if TIME in padded else pl.col(TIME) == ""
            present = present & ~blank
        time_expr = parse_time(
            TIME, schema[TIME], text_dates, TIME in padded, integer_time, raw.decimal, _comma_rows(raw), raw.time_format
        )
        parsed += [time_expr.alias("_time"), present.alias("_time_raw_present")]
    if has_weight:
        wdtype = schema[WEIGHT]
        weight = pl.col(WEIGHT)
        if wdtype.is_numeric() or wdtype == pl.Boolean:  # a Parquet `liked` flag: 1 or 0
            weight = weight.cast(pl.Float64)
        else:
            text = weight.cast(pl.String)
            if not plain_weight:
                text = text.str.strip_chars()
            # Unstripped on the fast path: a padded value the sample did not foresee fails this
            # cast and is re-checked stripped below (a `when` retry here would strip every row).
            # A typed read (TYPED_READ) gives an Int64 column and takes the branch above.
            weight = _number(text, raw.decimal, _comma_rows(raw))
        parsed.append(weight.cast(pl.Float32).alias("_weight"))
    if has_event:
        parsed.append(pl.col(EVENT).cast(pl.String).str.strip_chars().alias("_event"))

    # Parsed values live in `__<name>` columns so the raw `<name>` columns survive for quarantine.
    canonical = [
        pl.col("_user").alias(f"__{USER}"),
        pl.col("_item").alias(f"__{ITEM}"),
        (pl.col("_time") if has_time else pl.lit(None, dtype=TIME_DTYPE)).alias(f"__{TIME}"),
        (pl.col("_weight") if has_weight else pl.lit(1.0, dtype=pl.Float32)).alias(f"__{WEIGHT}"),
    ]
    if has_event:
        canonical.append(pl.col("_event").alias(f"__{EVENT}"))
    canonical_names = [USER, ITEM, TIME, WEIGHT] + ([EVENT] if has_event else [])
    parsed_names = [f"__{c}" for c in canonical_names]
    # Duplicates are found on the codes where ids have them: equal codes <=> equal ids, and
    # hashing 4-byte codes is cheaper than hashing strings.
    code_names = [_CODE.format(c) for c in (USER, ITEM) if c in decimal]
    fast_names = [_FAST.format(c) for c in (USER, ITEM) if c in decimal and c not in typed]
    key_names = [_CODE.format(c) if c in decimal else f"__{c}" for c in canonical_names]

    staged = (
        source.with_columns(parsed)
        .with_columns(
            _reason_expr(
                has_time, has_weight, future_limit, READ_ERROR in schema, frozenset(typed) & {USER, ITEM},
                keep_negative,
            ).alias(REASON)
        )
        .with_columns(canonical)
        .with_columns(_row_hash(key_names).alias(_HASH))
    )
    raw_columns = raw.columns  # SOURCE_FILE (directories) + mapped canonical columns
    numbered = [] if raw.positional_rows else [ROW]
    late = [LATE_KEY] if LATE_KEY in schema else []  # JSON Lines: lines holding a key the sample missed
    outputs = [*numbered, *raw_columns, REASON, *parsed_names, *code_names, *fast_names, _HASH, *late]
    try:
        frame = staged.select(outputs).collect(engine="streaming")
    except pl.exceptions.PolarsError:
        if source is raw.frame:
            raise
        # A value polars' CSV parser does not read as an integer: start again from the text.
        return _validate(raw, max_future_days, now, fast - {TYPED_READ}, general, keep_duplicates=keep_duplicates, keep_negative=keep_negative)
    if frame.height == 0:
        raise NoDataRows(f"{raw.path}: no data rows")
    # The typed read's proof (`_typed_read_is_exact`) runs beside the rest of the checks (polars
    # releases the GIL; the duplicate check's numpy stretch leaves a core free) and is awaited
    # before the result is returned: a failed proof redoes the validation from the text.
    proof = _BACKGROUND.submit(_typed_read_is_exact, frame, raw) if typed else None
    # The duplicate check (a polars sort, then numpy on the few repeats) needs only the hashes and
    # the reasons, so it starts now and runs beside the checks and selections below; a redo
    # (a fast path the whole column did not confirm) drops its result.
    valid = frame.get_column(REASON).is_null().to_numpy()
    duplicates = None if keep_duplicates else _BACKGROUND.submit(_duplicate_mask, frame, valid, key_names)
    if raw.positional_rows:
        frame = number_rows(frame, raw.per_file)
        _moved_header(frame, raw, has_time or has_weight)
    if fast_names:
        exact = frame.select(pl.col(fast_names).all())
        failed = frozenset(
            c for c in (USER, ITEM) if c in decimal and not exact.get_column(_FAST.format(c)).item()
        )
        if failed:  # an id the sample did not foresee ("007", " 7", "u7"): redo those columns as text
            del frame
            return _validate(raw, max_future_days, now, fast - failed, general, keep_duplicates=keep_duplicates, keep_negative=keep_negative)
    # Rows the route taken could not read get bad_timestamp / bad_weight (earlier rules win
    # regardless of the value). If the general parse reads any of them (a fraction, an exponent, a
    # large ms value, an ISO date or padding the first rows did not show) or finds a time that is
    # only whitespace (blank: no timestamp), redo with the general parse for that column, so the
    # result is the general route's whatever the sample suggested.
    checks = []
    if has_time and schema[TIME] == pl.String and (integer_time or TIME not in padded or not text_dates):
        general_time = parse_time(
            TIME, pl.String, has_text_dates=True, padded=True, decimal=raw.decimal, where=_comma_rows(raw),
            time_format=raw.time_format,
        )
        blank = pl.col(TIME).str.strip_chars() == ""
        checks.append((TIME, "bad_timestamp", general_time.is_not_null() | blank))
    elif integer_time:  # integers read typed
        checks.append(
            (TIME, "bad_timestamp", parse_time(TIME, schema[TIME], False, time_format=raw.time_format).is_not_null())
        )
    if plain_weight:
        stripped = _number(pl.col(WEIGHT).str.strip_chars(), raw.decimal, _comma_rows(raw))
        checks.append((WEIGHT, "bad_weight", stripped.is_not_null()))
    # A log without a rejected row (the usual large one) has nothing to re-check: the reason
    # column's null count is known without a pass (10M rows: each check's pass was ~0.1 s).
    rejected = frame.get_column(REASON).null_count() < frame.height
    missed = frozenset(
        name
        for name, rule, readable in checks
        if rejected and frame.lazy().filter(pl.col(REASON) == rule).select(readable.any()).collect().item()
    )
    if missed:
        del frame
        return _validate(raw, max_future_days, now, fast - missed, general | missed, keep_duplicates=keep_duplicates, keep_negative=keep_negative)
    # Ids in literal quotes (`_unquoted`): only a file quoted twice pays for the unquoting, in a
    # second pass (as `missed` above).
    quoted = frozenset(
        c for c in (USER, ITEM)
        if c not in decimal and c not in general and frame.schema.get(c) == pl.String and _quoted_twice(frame, c)
    )  # fmt: skip
    if quoted:
        del frame
        return _validate(raw, max_future_days, now, fast - quoted, general | quoted, keep_duplicates=keep_duplicates, keep_negative=keep_negative)
    notes = [*raw.notes, *_comma_notes(frame, raw), *_late_key_notes(frame, raw)]
    notes += quoted_id_notes(frame, raw, [c for c in (USER, ITEM) if c in general])

    # Select before filtering, so each side copies only the columns it keeps.
    raw_view = frame.select(ROW, *raw_columns, REASON)
    # SOURCE_FILE rides along with accepted rows so a later cross-batch duplicate still names its file.
    origin = [pl.col(c) for c in raw_columns if c not in canonical_names]
    narrow = _narrow_codes(frame, [c for c in (USER, ITEM) if c in decimal])
    accepted = frame.select(
        *[narrow.get(c, pl.col(f"__{c}")).alias(c) for c in canonical_names],
        pl.col(ROW),
        *origin,
    )
    if duplicates is not None:
        valid = valid & ~duplicates.result()
    rows_in = frame.height
    n_bad = rows_in - int(valid.sum())
    del frame
    if n_bad:
        keep = pl.Series(valid)
        bad_rows, accepted = raw_view.filter(~keep), _without_rows(accepted, valid, n_bad)
    else:
        bad_rows = raw_view.clear()
    del raw_view
    # A rejected row without a rule's reason is a duplicate: the label is written on the few
    # quarantined rows rather than scattered into the reason column of every row.
    quarantine = bad_rows.select(
        pl.col(ROW),
        *[pl.col(c).cast(pl.String) for c in raw_columns],
        pl.col(REASON).fill_null("duplicate").cast(pl.String),
    )
    if raw.positional_rows and n_bad:
        quarantine, rows_in = _without_empty_lines(quarantine, raw, rows_in)
        if rows_in == 0:  # a header followed by blank lines only (an export's trailing CRLFs)
            raise NoDataRows(f"{raw.path}: no data rows")
    counts = quarantine.get_column(REASON).value_counts(sort=True)
    reasons = dict(zip(counts[REASON].to_list(), counts["count"].to_list(), strict=True))
    if proof is not None and not proof.result():
        # A number spelled otherwise than plainly ("007", "+7", '"7"'): use the text.
        del accepted, quarantine
        return _validate(raw, max_future_days, now, fast - {TYPED_READ}, general, keep_duplicates=keep_duplicates, keep_negative=keep_negative)
    notes += _comma_hints(quarantine, raw)
    return ValidationResult(rows=accepted, quarantine=quarantine, rows_in=rows_in, reasons=reasons, notes=notes)


_ROLE = {USER: "user", ITEM: "item", TIME: "time", WEIGHT: "weight", EVENT: "event"}


def _spellings(name: str) -> set[str]:
    """How a header may spell the column name `name` (lower case, '_' between words): `user_id`,
    `USER_ID`, `userId`, `UserId`, `userID`, `User ID`, `User-ID`, `userid`."""
    words = name.split("_")
    titled = [w.title() for w in words]
    ids = [*titled[:-1], "ID"] if words[-1] == "id" else titled
    return {
        name, name.upper(), "".join(words), words[0] + "".join(titled[1:]), "".join(titled),
        " ".join(titled), "-".join(titled), "_".join(titled), words[0] + "".join(ids[1:]), "".join(ids),
        " ".join(ids), "-".join(ids),
    }  # fmt: skip


def _moved_header(frame: pl.DataFrame, raw: RawSource, parsed: bool) -> None:
    """DataError when a row of delimited text is a header line whose names sit in other columns
    than the file's first header line puts them (`timestamp,rating,item_id,user_id` inside a file
    headed `user_id,item_id,rating,timestamp`): exports joined with `cat` whose column orders
    differ, where every row after that line would be read under the first header's columns
    (times as user ids, ratings as items) while only the line itself was quarantined. A row is
    such a line when two or more of its mapped values are column names (AUTO_NAMES, or the
    mapped columns' own) and one is a name for another role than its column's. Only quarantined
    rows are looked at when the log has a time or weight column (`parsed`), as a header line's
    names never parse as either; otherwise every row is."""
    names: dict[str, str] = {base_name(n): canon for canon, spelled in AUTO_NAMES.items() for n in spelled}
    names |= {base_name(source): canon for canon, source in raw.mapping.items()}
    text = [c for c in (USER, ITEM, TIME, WEIGHT, EVENT) if c in frame.columns and frame.schema[c] == pl.String]
    if len(text) < 2:
        return  # numbers read typed, or one text column: no header line among them
    if parsed:
        rows = frame.lazy().filter(pl.col(REASON).is_not_null())
    else:  # every row is a candidate: only those whose first text value is spelled as a column name
        spelled_as = {*raw.header, *raw.mapping.values(), *(v for name in names for v in _spellings(name))}
        rows = frame.lazy().filter(pl.col(text[0]).is_in(list(spelled_as)))
    keys, roles = list(names), list(names.values())

    def role(column: str) -> pl.Expr:
        base = pl.col(column).str.strip_chars().str.strip_chars('"#').str.to_lowercase().str.replace_all(r"[- ]", "_")
        return base.replace_strict(keys, roles, default=None, return_dtype=pl.String)

    found = rows.with_columns(role(c).alias(f"__role_{c}") for c in text).filter(
        (pl.sum_horizontal(pl.col(f"__role_{c}").is_not_null() for c in text) >= 2)
        & pl.any_horizontal((pl.col(f"__role_{c}") != c).fill_null(False) for c in text)
    )
    hit = found.select(*([SOURCE_FILE] if raw.per_file else []), ROW, *text).head(1).collect()
    if hit.height:
        row = hit.row(0, named=True)
        where = f"{raw.path} ({row[SOURCE_FILE]})" if raw.per_file else f"{raw.path}"
        spelled = ", ".join(f"{row[c]!r} in the {_ROLE[c]} column" for c in text)
        first = ", ".join(f"{_ROLE[c]}={column_name(raw.mapping[c])}" for c in text)  # `column 2`: headerless
        raise DataError(
            f"{where}: row {row[ROW]} is a header line whose names sit in other columns ({spelled}) than "
            f"{'the first header line' if raw.header else 'a headerless file'}'s ({first}): exports with "
            "other column orders joined into one file (cat?), whose rows after that line would be read under "
            "the first header's columns; split the file at that line, each part with its own header line, "
            "and ingest the parts as one directory"
        )


def _late_key_notes(frame: pl.DataFrame, raw: RawSource) -> list[str]:
    """The notes `raw.late_keys` gives for the lines flagged LATE_KEY (JSON Lines keys of an
    unmapped role that the reader's sample did not reach, or another name for a mapped role's
    key); none when no line is flagged."""
    if raw.late_keys is None or LATE_KEY not in frame.columns:
        return []
    flagged = frame.filter(pl.col(LATE_KEY)).select(*([SOURCE_FILE] if raw.per_file else []), ROW)
    return raw.late_keys(flagged) if flagged.height else []


def _comma_notes(frame: pl.DataFrame, raw: RawSource) -> list[str]:
    """A note per weight / time column with values read through a comma (see DECIMAL_MODES),
    naming the first; DataError when `auto` guessed a decimal comma for a column whose comma
    values all look like thousands groups (`1,234`), where either reading may be the meant one.
    Only for sources read with commas (`;` files, or a decimal mode set): others pay nothing."""
    if raw.decimal == "plain":
        return []
    notes = []
    for name, role in ((WEIGHT, "weight"), (TIME, "time")):
        if name not in raw.mapping or frame.schema.get(name) != pl.String:
            continue
        text = pl.col(name).str.strip_chars()
        read = frame.filter(text.str.contains(",", literal=True) & pl.col(f"__{name}").is_not_null())
        if read.height == 0:
            continue
        first = read.row(0, named=True)
        where = f"{first[SOURCE_FILE]} in {raw.path}" if raw.per_file else str(raw.path)
        value, column, parsed = first[name].strip(), raw.mapping[name], first[f"__{name}"]
        parsed = f"{parsed:g}" if name == WEIGHT else str(parsed)
        if raw.decimal == "auto-comma" and read.select(text.str.contains(_GROUP_LIKE).all()).item():
            raise DataError(
                f"{where}: row {first[ROW]}, {column_label(column)} ({role}): {value!r} may be "
                f"{value.replace(',', '.')} (a decimal comma, as ';'-separated exports write) or "
                f"{value.replace(',', '')} (a thousands separator), and every comma value of the column "
                "is spelled like that; say which with {option} (or data.decimal=point for thousands)",
                setting="data.decimal",
                value="comma",
            )
        how = "a thousands separator" if raw.decimal == "point" else "a decimal comma"
        other = "comma (decimal comma)" if raw.decimal == "point" else "point (thousands separator)"
        notes.append(
            f"{where}: {read.height} {role} value(s) of {column_label(column)} read with {how} (row "
            f"{first[ROW]}: {value!r} as {parsed}); --set data.decimal={other} reads them otherwise"
        )
    return notes


def _comma_hints(quarantine: pl.DataFrame, raw: RawSource) -> list[str]:
    """Where no comma was read (`plain`: a file not `;`-separated, mode auto; or the files besides
    the `;` ones of a directory whose separators differ), a note per weight / time column whose
    quarantined values are numbers with a comma (`"1,234"`, `"4,5"`), naming the setting that
    reads them. Looks at the quarantined rows only."""
    if raw.decimal != "plain" and not (raw.decimal == "auto-comma" and raw.comma_files):
        return []
    if raw.comma_files:
        quarantine = quarantine.filter(~pl.col(SOURCE_FILE).cast(pl.String).is_in(list(raw.comma_files)))
    hints = []
    for name, rule in ((WEIGHT, "bad_weight"), (TIME, "bad_timestamp")):
        if name not in quarantine.columns:
            continue
        text = pl.col(name).str.strip_chars()
        comma = text.str.contains(_DECIMAL_COMMA) | text.str.contains(_THOUSANDS)
        found = quarantine.filter((pl.col(REASON) == rule) & comma)
        if found.height:
            first = found.row(0, named=True)
            where = f"{first[SOURCE_FILE]} in {raw.path}" if raw.per_file else str(raw.path)
            hints.append(
                f"{where}: {found.height} value(s) of {column_label(raw.mapping[name])} quarantined as {rule} "
                f"hold a comma (row {first[ROW]}: {first[name].strip()!r}): --set data.decimal=comma reads "
                "it as the decimal point, data.decimal=point as a thousands separator"
            )
    return hints


def _comma_rows(raw: RawSource) -> pl.Expr | None:
    """The rows whose numbers are read with a comma under `auto` where only some files are
    `;`-separated (`RawSource.comma_files`): a decimal-comma month beside `,` months is read as a
    `;` source would be, the others as before; None: the reading holds for every row."""
    if raw.decimal != "auto-comma" or not raw.comma_files:
        return None
    return pl.col(SOURCE_FILE).cast(pl.String).is_in(list(raw.comma_files))


def _without_empty_lines(quarantine: pl.DataFrame, raw: RawSource, rows_in: int) -> tuple[pl.DataFrame, int]:
    """The quarantine and rows_in without the empty lines of a delimited file: polars reads a blank
    line (a trailing one, or the extra CRLF at the end of an exported file) or one of bare
    separators as a row whose every field is null. Like a blank JSON Lines line it holds no
    value, so it is no row (it keeps its place in the row numbering); a row with any value left,
    even whitespace, is still quarantined. Runs on the quarantined rows only."""
    values = [c for c in raw.columns if c != SOURCE_FILE]
    empty = (pl.col(REASON) == "missing_user") & pl.all_horizontal(pl.col(c).is_null() for c in values)
    n_empty = int(quarantine.select(empty.sum()).item())
    if not n_empty:
        return quarantine, rows_in
    return quarantine.filter(~empty), rows_in - n_empty


def _without_rows(frame: pl.DataFrame, keep: np.ndarray, n_drop: int) -> pl.DataFrame:
    """`frame` without the rows where `keep` is False. A few such rows in a large frame (a log's
    exact duplicates) are cut out by slicing: the kept stretches share the frame's buffers, where a
    filter copies every column of every row (10M-row Zipf log, 1,155 duplicates: ~130 MB less peak
    RSS and ~20k fewer page faults). Above `_MAX_CUTS` the pieces would be too many small chunks
    for the steps after (each polars kernel pays per chunk), so the filter runs."""
    if n_drop > _MAX_CUTS:
        return frame.filter(pl.Series(keep))
    cuts = np.flatnonzero(~keep)
    starts, ends = np.concatenate(([0], cuts + 1)), np.append(cuts, frame.height)
    pieces = [frame.slice(start, end - start) for start, end in zip(starts.tolist(), ends.tolist(), strict=True) if end > start]
    return pl.concat(pieces, rechunk=False) if pieces else frame.clear()


_MAX_CUTS = 4096


def _narrow_codes(frame: pl.DataFrame, columns: list[str]) -> dict[str, pl.Expr]:
    """The code column of each decimal id column in `columns`: CODE_DTYPE when every value fits
    32 bits (two such codes pack into one 64-bit pair key, ingest's fastest group-by), else
    WIDE_CODE_DTYPE. Either way the value is the id."""
    if not columns:
        return {}
    highs = frame.select(pl.col(_CODE.format(c)).max() for c in columns).row(0)
    return {
        c: pl.col(_CODE.format(c)).cast(CODE_DTYPE if high is None or high < 1 << 32 else WIDE_CODE_DTYPE)
        for c, high in zip(columns, highs, strict=True)
    }


def _row_hash(key_names: list[str]) -> pl.Expr:
    """A 32-bit hash of the parsed row, computed in the streaming read: only a filter for
    `_duplicate_mask`, which compares the rows it selects exactly.

    32 bits, not 64: a sort of 10M u32 moves half the bytes of one of u64 (it was measured
    ~0.1 s against ~0.25 s with numpy's SIMD sort, which `_duplicate_mask` used then). The price is
    chance collisions, about n**2 / 2**33 pairs (~12k rows among 10M, ~1.2M among 100M), each
    costing one exactly-compared candidate row.

    Each column is hashed with a seed of its own and the hashes XORed: as good a filter (as many
    distinct values on a 10M-row Zipf log) for about half the CPU of hashing a struct of the
    columns (~0.07 s against ~0.13 s on 10M rows), which row-encodes every row first."""
    combined = pl.col(key_names[0]).hash(seed=0)
    for seed, name in enumerate(key_names[1:], start=1):
        combined = combined ^ pl.col(name).hash(seed=seed)
    return (combined % pl.lit(1 << 32, dtype=pl.UInt64)).cast(pl.UInt32)


def _duplicate_mask(frame: pl.DataFrame, valid: np.ndarray, parsed_names: list[str]) -> np.ndarray:
    """True for valid rows that exactly repeat an earlier valid row.

    Exact matching over all rows is a hash-table pass over wide string rows (slow); instead the row
    hashes (`_row_hash`, computed during the read) are sorted, and only rows whose hash occurs more
    than once (exact copies and chance collisions: few) are compared exactly, so a hash collision
    can never quarantine a row that is not a copy. polars sorts the streaming read's chunks in
    place (numpy needed them copied into one array first: 10M rows, ~0.4 s of CPU), on one
    thread where the pool has no spare one (`sort_in_parallel`: this runs beside the main thread,
    and splitting the sort over both cores of a 2-core machine cost ~0.30 CPU-s against ~0.16);
    the rows holding a repeated hash are then found with one `is_in` against those few hashes."""
    hashes = frame.get_column(_HASH)
    everything = bool(valid.all())
    candidates = hashes if everything else hashes.filter(pl.Series(valid))
    ordered = candidates.sort(multithreaded=sort_in_parallel()).to_numpy()
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    mask = np.zeros(frame.height, dtype=bool)
    if repeated.size == 0:
        return mask
    held = hashes.is_in(pl.Series(repeated, dtype=hashes.dtype).implode()).to_numpy()
    candidate = np.flatnonzero(held if everything else held & valid)
    # Candidate positions are ascending, so "first" means first in the file.
    keys = frame.select(parsed_names)[candidate]
    first = keys.select(pl.struct(parsed_names).is_first_distinct()).to_series().to_numpy()
    mask[candidate[~first]] = True
    return mask


def _typed_read_is_exact(frame: pl.DataFrame, raw: RawSource) -> bool:
    """Whether every field of a typed read (TYPED_READ) was spelled exactly as its value's plain
    text: the decimal digits of a number (a '-' before negatives), a text column's own bytes.

    Proof by counting bytes. A field the CSV parser read as a number has at least as many bytes
    as the number's plain spelling, and more exactly when it was spelled otherwise ("007",
    "+7", " 7", quoted). A row whose last column is present had all its separators, so the
    files hold at least `columns` bytes of separators and line end per row besides the fields
    (ragged long rows, stray CRs and blank lines only add bytes). Hence plain spellings' bytes
    + rows * columns <= layout.data_bytes, with equality exactly when every field is plain. A
    null in the last column may be a short row, and a file written to since it was counted may
    hold other bytes than those read: both fail the proof (the text read runs)."""
    layout = raw.layout
    if layout is None or not layout.unchanged() or frame.get_column(layout.last).null_count():
        return False
    columns = [c for c in raw.mapping if c in frame.columns]
    numbers = [c for c in columns if frame.schema[c].is_integer()]
    texts = [c for c in columns if frame.schema[c] == pl.String]
    if len(numbers) + len(texts) != len(columns):
        return False
    digits = _decimal_bytes(frame, numbers)
    if digits is None:
        return False
    lengths = frame.select(pl.col(c).str.len_bytes().sum() for c in texts).row(0) if texts else ()
    return digits + sum(int(n or 0) for n in lengths) + frame.height * layout.columns == layout.data_bytes


def _decimal_bytes(frame: pl.DataFrame, columns: list[str]) -> int | None:
    """Total length of the integers in `columns` written in decimal ('-' for negatives, nulls
    empty): per column, the non-null count plus, for each power of ten up to its largest
    magnitude, how many values reach it; powers at or below the smallest magnitude count every
    value without a comparison. None where a magnitude does not fit the column's type.

    Each other power is one comparison pass over the column, all in one query. On a 64-bit
    column whose values mostly fit 32 bits (ids with a few hashed or 64-bit ones) the powers
    below 2**32 once compared a 32-bit copy (half the bytes to read), but making the copy cost
    more than it saved (10M-row Zipf log, both id columns: ~0.10 CPU-s against ~0.07)."""
    if not columns:
        return 0
    bounds = frame.select(
        *(pl.col(c).min().alias(f"lo{i}") for i, c in enumerate(columns)),
        *(pl.col(c).max().alias(f"hi{i}") for i, c in enumerate(columns)),
        *(pl.col(c).is_not_null().sum().alias(f"n{i}") for i, c in enumerate(columns)),
    ).row(0, named=True)
    total, counts = 0, []
    for i, column in enumerate(columns):
        low, high, present = bounds[f"lo{i}"], bounds[f"hi{i}"], bounds[f"n{i}"]
        if not present:
            continue
        value = pl.col(column)
        if low < 0:
            if low <= -(2**63 - 1):
                return None
            counts.append((value < 0).sum())
            value, low, high = value.abs(), 0, max(-low, high)
        total += present  # the first digit
        powers = [10**k for k in range(1, 21) if low < 10**k <= high]
        total += present * sum(1 for k in range(1, 21) if 10**k <= low)
        if len(powers) > 2 * _FULL_PASSES:
            # A long-tailed id column (Zipf draws, hashed ids) spans many powers, but few of its
            # values reach the higher ones: those are counted over the values that reach the
            # first power not compared on the whole column, a copy of a few percent of it (10M
            # Zipf rows, both id columns, 19 powers each: ~7 passes' worth instead of 19).
            long = frame.select(value.filter(value >= powers[_FULL_PASSES]).alias("v"))
            total += sum(long.select((pl.col("v") >= p).sum().alias(str(p)) for p in powers[_FULL_PASSES:]).row(0))
            powers = powers[:_FULL_PASSES]
        counts += [(value >= p).sum() for p in powers]
    if counts:
        total += sum(frame.select(c.alias(f"c{i}") for i, c in enumerate(counts)).row(0))
    return int(total)


_FULL_PASSES = 4
"""Powers of ten `_decimal_bytes` compares over a whole column before it narrows to the values
that reach the next one."""
