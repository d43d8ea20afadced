"""Validation with quarantine: parse raw columns into the canonical schema, never dropping silently.

Each row gets the *first* rule it fails as `reason` (null = accepted). Accepted rows continue in the
canonical schema; quarantined rows keep their raw values, their source row number and the reason, so
a person can find and fix them. `rows_in == rows_accepted + rows_quarantined` by construction: the
two outputs are complementary filters of one frame.

Rules, in order: a reason the reader found (malformed_json: a JSON Lines line that is not one
JSON object), missing_user, missing_item, bad_timestamp, bad_weight, non_finite_weight,
negative_weight, future_timestamp, duplicate (an exact copy of an earlier accepted row).

For a directory source both outputs carry SOURCE_FILE, and ROW counts rows within that file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from recsys.data.readers import MALFORMED_JSON, READ_ERROR, ROW, RawSource, first_error_line
from recsys.data.schema import EVENT, ITEM, TIME, TIME_DTYPE, USER, WEIGHT
from recsys.errors import DataError

REASON = "reason"
_HASH = "__row_hash"
REASONS = (
    MALFORMED_JSON,
    "missing_user",
    "missing_item",
    "bad_timestamp",
    "bad_weight",
    "non_finite_weight",
    "negative_weight",
    "future_timestamp",
    "duplicate",
)
# Numbers above these magnitudes cannot be plausible Unix seconds (1e11 s is year 5138), so they are
# read as milliseconds, microseconds or nanoseconds.
_MS_ABOVE, _US_ABOVE, _NS_ABOVE = 1e11, 1e14, 1e17
_ISO_FORMATS_ZONED = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z")
_ISO_FORMATS_NAIVE = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
_SAMPLE_ROWS = 2000


@dataclass
class ValidationResult:
    """accepted: canonical columns + ROW (+ SOURCE_FILE for a directory); quarantine: ROW
    (+ SOURCE_FILE), raw values as strings, reason."""

    accepted: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rows_accepted(self) -> int:
        return self.accepted.height

    @property
    def rows_quarantined(self) -> int:
        return self.quarantine.height


# --------------------------------------------------------------------------- parsers


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


def _iso_to_time(text: pl.Expr) -> pl.Expr:
    """ISO-8601 with or without zone (naive = UTC); 'Z' is read as +00:00."""
    zoned_text = text.str.replace(r"[Zz]$", "+00:00")
    attempts = [
        zoned_text.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC")
        for fmt in _ISO_FORMATS_ZONED
    ]
    attempts += [
        text.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC")
        for fmt in _ISO_FORMATS_NAIVE
    ]
    return pl.coalesce(attempts)


def parse_time(column: str, dtype: pl.DataType, has_text_dates: bool, padded: bool = True) -> pl.Expr:
    """Raw time column -> Datetime(us, UTC); unparseable values become null (then quarantined).
    padded=False skips whitespace stripping (a sample showed none; it is the costliest step)."""
    col = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        as_us = col.cast(pl.Datetime("us", dtype.time_zone))
        if dtype.time_zone is None:
            return as_us.dt.replace_time_zone("UTC")
        return as_us.dt.convert_time_zone("UTC")
    if isinstance(dtype, pl.Date):
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dtype.is_numeric():
        return _numeric_to_time(col.cast(pl.Float64))
    text = col.cast(pl.String)
    if padded:
        text = text.str.strip_chars()
    numeric = _numeric_to_time(text.cast(pl.Float64, strict=False))
    if not has_text_dates:
        return numeric
    return pl.coalesce(numeric, _iso_to_time(text))


@dataclass(frozen=True)
class _Sample:
    """What the first rows say about the time and weight text: whether ISO dates occur (else the
    string-date attempts are skipped) and whether values are whitespace-padded (else stripping is
    skipped). Both only choose the fast path: a later row the fast path cannot parse is quarantined."""

    text_dates: bool = False
    padded: frozenset[str] = frozenset()


def _sample(raw: RawSource) -> _Sample:
    columns = [c for c in (TIME, WEIGHT) if c in raw.mapping]
    if not columns:
        return _Sample()
    sample = raw.frame.select(columns).head(_SAMPLE_ROWS).collect()
    padded, text_dates = set(), False
    for name in columns:
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
    return _Sample(text_dates=text_dates, padded=frozenset(padded))


# --------------------------------------------------------------------------- rules


def _reason_expr(has_time: bool, has_weight: bool, future_limit: datetime, has_read_error: bool) -> pl.Expr:
    user, item = pl.col("_user"), pl.col("_item")
    rules: list[tuple[pl.Expr, str | pl.Expr]] = []
    if has_read_error:  # the reader's verdict comes first: such a row has no values to judge
        rules.append((pl.col(READ_ERROR).is_not_null(), pl.col(READ_ERROR)))
    rules += [
        (user.is_null() | (user == ""), "missing_user"),
        (item.is_null() | (item == ""), "missing_item"),
    ]
    if has_time:
        raw_time_present = pl.col("_time_raw_present")
        rules.append((raw_time_present & pl.col("_time").is_null(), "bad_timestamp"))
    if has_weight:
        w = pl.col("_weight")
        rules += [
            (w.is_null(), "bad_weight"),
            (w.is_nan() | w.is_infinite(), "non_finite_weight"),
            (w < 0, "negative_weight"),
        ]
    if has_time:
        rules.append((pl.col("_time") > pl.lit(future_limit, dtype=TIME_DTYPE), "future_timestamp"))

    def value(reason: str | pl.Expr) -> pl.Expr:
        return pl.lit(reason) if isinstance(reason, str) else reason

    expr = pl.when(rules[0][0]).then(value(rules[0][1]))
    for cond, reason in rules[1:]:
        expr = expr.when(cond).then(value(reason))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def validate(raw: RawSource, max_future_days: float, now: datetime | None = None) -> ValidationResult:
    """Parse and check every row of `raw`; see the module docstring for the rules.

    One pass over the source: each column is cast once (non-strict, so a bad value becomes null and
    the reason rules find it) and a u64 hash of the parsed row is computed alongside, all in the
    streaming engine. Duplicates are then found on that hash column alone (see `_duplicate_mask`).
    Raw text is kept only as long as the quarantine needs it.

    A source whose lazy read fails and that offers an exact (per-line) rebuild, i.e. JSON Lines with
    a line the cheap shape test let through, is validated once more from that rebuild, so the bad
    line is quarantined instead of failing the file."""
    try:
        return _validate(raw, max_future_days, now)
    except (pl.exceptions.PolarsError, OSError) as exc:
        if raw.exact is None:
            raise _read_error(raw, exc) from None
    try:
        return _validate(replace(raw, frame=raw.exact(), exact=None), max_future_days, now)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _read_error(raw, exc) from None


def _read_error(raw: RawSource, exc: BaseException) -> DataError:
    if isinstance(exc, pl.exceptions.PolarsError):
        return DataError(f"{raw.path}: cannot read as {raw.format} ({first_error_line(exc)})")
    return DataError(f"{raw.path}: cannot read ({exc})")


def _validate(raw: RawSource, max_future_days: float, now: datetime | None) -> ValidationResult:
    now = now or datetime.now(UTC)
    future_limit = now + timedelta(days=max_future_days)
    schema = raw.frame.collect_schema()
    has_time, has_weight, has_event = TIME in raw.mapping, WEIGHT in raw.mapping, EVENT in raw.mapping
    sample = _sample(raw)

    parsed = [
        pl.col(USER).cast(pl.String).str.strip_chars().alias("_user"),
        pl.col(ITEM).cast(pl.String).str.strip_chars().alias("_item"),
    ]
    if has_time:
        present = pl.col(TIME).is_not_null()
        if schema[TIME] == pl.String:
            blank = pl.col(TIME).str.strip_chars() == "" if TIME in sample.padded else pl.col(TIME) == ""
            present = present & ~blank
        time_expr = parse_time(TIME, schema[TIME], sample.text_dates, TIME in sample.padded)
        parsed += [time_expr.alias("_time"), present.alias("_time_raw_present")]
    if has_weight:
        wdtype = schema[WEIGHT]
        weight = pl.col(WEIGHT)
        if wdtype.is_numeric():
            weight = weight.cast(pl.Float64)
        else:
            text = weight.cast(pl.String)
            if WEIGHT in sample.padded or wdtype != pl.String:
                text = text.str.strip_chars()
            # A padded value the sample did not foresee fails the fast cast; retry those stripped.
            weight = text.cast(pl.Float64, strict=False)
            if WEIGHT not in sample.padded and wdtype == pl.String:
                weight = (
                    pl.when(weight.is_null() & text.is_not_null())
                    .then(text.str.strip_chars().cast(pl.Float64, strict=False))
                    .otherwise(weight)
                )
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

    staged = (
        raw.frame.with_columns(parsed)
        .with_columns(_reason_expr(has_time, has_weight, future_limit, READ_ERROR in schema).alias(REASON))
        .with_columns(canonical)
        .with_columns(pl.struct(parsed_names).hash(seed=0).alias(_HASH))
    )
    raw_columns = raw.columns  # SOURCE_FILE (directories) + mapped canonical columns
    frame = staged.select(ROW, *raw_columns, REASON, *parsed_names, _HASH).collect(engine="streaming")
    if frame.height == 0:
        raise DataError(f"{raw.path}: no data rows")

    reason = frame.get_column(REASON)
    valid = reason.is_null().to_numpy()
    duplicate = _duplicate_mask(frame, valid, parsed_names)
    if duplicate.any():
        reason = reason.scatter(np.flatnonzero(duplicate), "duplicate")
        valid = valid & ~duplicate
    rows_in = frame.height
    n_bad = rows_in - int(valid.sum())
    # Select before filtering, so each side copies only the columns it keeps.
    raw_view = frame.select(ROW, *raw_columns).with_columns(reason)
    # SOURCE_FILE rides along with accepted rows so a later cross-batch duplicate still names its file.
    origin = [pl.col(c) for c in raw_columns if c not in canonical_names]
    accepted = frame.select(*[pl.col(f"__{c}").alias(c) for c in canonical_names], pl.col(ROW), *origin)
    del frame
    if n_bad:
        keep = pl.Series(valid)
        bad_rows, accepted = raw_view.filter(~keep), accepted.filter(keep)
    else:
        bad_rows = raw_view.clear()
    del raw_view
    quarantine = bad_rows.select(
        pl.col(ROW), *[pl.col(c).cast(pl.String) for c in raw_columns], pl.col(REASON)
    )
    counts = quarantine.get_column(REASON).value_counts(sort=True)
    reasons = dict(zip(counts[REASON].to_list(), counts["count"].to_list(), strict=True))
    return ValidationResult(accepted=accepted, quarantine=quarantine, rows_in=rows_in, reasons=reasons)


def _duplicate_mask(frame: pl.DataFrame, valid: np.ndarray, parsed_names: list[str]) -> np.ndarray:
    """True for valid rows that exactly repeat an earlier valid row.

    Exact matching over all rows is a hash-table pass over wide string rows (slow); instead the row
    hashes (u64, computed during the read) are sorted, and only rows whose hash occurs more than once
    (usually few) are compared exactly, so a hash collision can never quarantine a row that is not a
    copy."""
    hash_column = frame.get_column(_HASH)
    ordered = np.sort(hash_column.to_numpy()[valid])
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    mask = np.zeros(frame.height, dtype=bool)
    if repeated.size == 0:
        return mask
    in_repeated = hash_column.is_in(pl.Series(repeated, dtype=pl.UInt64).implode()).to_numpy()
    candidate = np.flatnonzero(valid & in_repeated)
    first = (
        frame[candidate].select(pl.struct(parsed_names).is_first_distinct()).to_series().to_numpy()
    )  # candidate positions are ascending, so "first" means first in the file
    mask[candidate[~first]] = True
    return mask
