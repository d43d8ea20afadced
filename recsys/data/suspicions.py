"""Ingest warnings: values that read without an error but are probably not what the log means.

Validation quarantines what cannot be read; these are rows that read fine and would silently
train the wrong thing, so ingest prints a `warning:` line for each (and stores it in the
manifest's "warnings") instead of refusing the log, which may be right after all. Each check reads
the pairs or the vocabularies, never the rows, so it costs nothing next to the ingest itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import polars as pl

from recsys.data.readers import base_name, column_name
from recsys.data.schema import EVENT, ITEM, TIME, USER, WEIGHT
from recsys.data.vocab import CODE_DTYPES, Vocab

MISSING_MARKERS = ("NA", "N/A", "NULL", "null", "None", "none", "nan", "NaN", "\\N")
"""Ids that are what exporters write for a missing value (R's NA, SQL's NULL, MySQL's \\N, pandas'
nan), not ids."""

EPOCH_YEAR_END = datetime(1971, 1, 1, tzinfo=UTC)
"""Integer times are read as Unix seconds (milliseconds from 1e11): a log whose every time is
before this was not written in 1970; its times are some other integer (yyyymmdd dates such as
20150701 read as seconds land in August 1970, day or sequence numbers in its first hours)."""


def session_column(header: Sequence[str], mapping: Mapping[str, str]) -> str | None:
    """A column of a delimited file's header that names sessions and is not read (Diginetica's
    `sessionId`, YOOCHOOSE's session id once named): what an anonymous session log's rows can be
    grouped by as users."""
    return next((c for c in header if c not in mapping.values() and "session" in c.lower()), None)


def suspicions(
    pairs: pl.DataFrame,
    users: Vocab,
    items: Vocab,
    rows: pl.DataFrame,
    mapping: Mapping[str, str],
    header: Sequence[str] = (),
    raw_times: pl.LazyFrame | None = None,
) -> list[str]:
    """Every warning of an ingest: `pairs` (the whole processed table, one row per pair, raw ids)
    and its vocabularies, `rows` (this call's accepted rows: an appended batch is judged on its
    own), the source column of each canonical one, the file's header (delimited text) and the
    source's time column as read (`epoch_times`)."""
    return (
        missing_markers(pairs, users, items, mapping, header)
        + repeated_header(pairs, users, items, rows, mapping)
        + epoch_times(rows, mapping, raw_times)
        + float_spelled_ids(pairs, users, items, mapping)
        + float_spelled_twins(users, items, mapping)
        + unread_feedback_flags(mapping, header)
    )


# Names of 0/1 feedback columns beside an exposure log's rows (KuaiRand's `is_click`, `is_like`;
# Taobao's ad log `clk` beside `nonclk`; a CTR log's `clicked`, `label`): compared after
# `base_name`, so `Is-Click` is one too.
_FEEDBACK_FLAG = re.compile(
    r"^(?:is_|has_)?(?:click|clicked|clk|like|liked|purchase|purchased|buy|bought|converted|conversion|label)$"
)


def unread_feedback_flags(mapping: Mapping[str, str], header: Sequence[str] = ()) -> list[str]:
    """A warning when no weight or event column is read but the header names a feedback flag
    (KuaiRand's `log_standard_*.csv`: one row per video shown, `is_click` 0 on most): each row
    then counts as an interaction, a video shown and skipped as much as one watched, and nothing
    said so. Names the flags and the option that reads the first as the weight (a pair weighing 0
    is then no interaction). Looks at the header's names only."""
    if WEIGHT in mapping or EVENT in mapping:
        return []
    flags = [c for c in header if c not in mapping.values() and _FEEDBACK_FLAG.match(base_name(c))]
    if not flags:
        return []
    shown = ", ".join(repr(c) for c in flags[:4])
    return [
        f"no weight column is read, so every row counts as an interaction, whatever {shown} "
        f"{'holds' if len(flags) == 1 else 'hold'}: if the log lists what was shown (rows where "
        f"{flags[0]!r} is 0 were not clicked), read {'it' if len(flags) == 1 else 'one'} as the weight, e.g. "
        f"--weight-col {flags[0]} (data.columns.weight), and rows weighing 0 are no interactions"
    ]


def float_spelled_twins(users: Vocab, items: Vocab, mapping: Mapping[str, str]) -> list[str]:
    """A warning for each vocabulary holding ids spelled as whole decimals (`463.0`) beside the
    same number spelled as an integer (`463`): pandas writes an integer id column that holds a
    missing value as floats, so one day's export (an appended batch) turns every known user of it
    into a new one, read as another user than yesterday's `463` (Parquet float ids are read as
    integers by the reader; delimited text keeps what it spells). `float_spelled_ids` covers a
    vocabulary whose every id is so spelled; this one the mix an append makes. Looks at the
    vocabularies only."""
    warnings = []
    for canon, role, vocab in ((USER, "user", users), (ITEM, "item", items)):
        if vocab.all_decimal:  # digits only: no `463.0` (a 10M-row log's 1.2M ids: ~0.03 s of regex)
            continue
        ids = vocab.table.get_column(vocab.id_name)
        floats = ids.filter(ids.str.contains(_FLOAT_SPELLED))
        if floats.is_empty():
            continue
        twins = floats.filter(floats.str.replace(r"\.0$", "").is_in(ids))
        if twins.is_empty():
            continue
        example = twins[0]
        warnings.append(
            f"{twins.len():,} {role} id(s) ({column_name(mapping.get(canon, canon))}) are spelled as decimals beside the "
            f"same number as an integer ({example!r} and {example.split('.')[0]!r}), so each is two {role}s: an "
            "export that wrote integer ids as floats (pandas does when the column holds a missing value); write "
            "the ids as integers and ingest the log again"
        )
    return warnings


def repeated_header(
    pairs: pl.DataFrame, users: Vocab, items: Vocab, rows: pl.DataFrame, mapping: Mapping[str, str]
) -> list[str]:
    """A warning when the header's own names are a (user, item) pair: a delimited file that repeats
    its header line (parts joined with `cat`, each with its header) reads it as an interaction of
    user "user_id" with item "item_id" when no weight or time column would fail to parse. Looks
    the names up in the vocabularies; this batch's `rows` only when both are there (the whole
    table would blame every later, clean batch appended after the one that held the line)."""
    user, item = mapping.get(USER), mapping.get(ITEM)
    if user is None or item is None or any(f.schema.get(c) in CODE_DTYPES for f in (pairs, rows) for c in (USER, ITEM)):
        return []  # decimal ids (integer codes) cannot spell a header
    if (
        not (users.table.get_column(users.id_name) == user).any()
        or not (items.table.get_column(items.id_name) == item).any()
    ):
        return []
    if not rows.filter((pl.col(USER) == user) & (pl.col(ITEM) == item)).height:
        return []
    return [
        f"the header's names ({user!r}, {item!r}) are an interaction: the file repeats its header line "
        "(files joined with cat?), read as a user and an item; remove those lines, e.g. "
        "`awk 'NR == 1 {h = $0} NR == 1 || $0 != h' FILE > NEW`, and ingest again"
    ]


def missing_markers(
    pairs: pl.DataFrame, users: Vocab, items: Vocab, mapping: Mapping[str, str], header: Sequence[str] = ()
) -> list[str]:
    """A warning for each id column whose ids include a missing-value marker: those rows are read
    as one user (or item) named "NA", which no check would catch (Diginetica's userId is mostly
    NA; its `sessionId`, named when the header has it, is the user column such logs are read by).
    Looks at the vocabularies (one row per id), not at the rows; ids that travelled as integer
    codes (`vocab.decimal_codes`) are all decimals, so they are not looked at."""
    sessions = session_column(header, mapping)
    warnings = []
    for canon, role, vocab, flag in ((USER, "user", users, "--user-col"), (ITEM, "item", items, "--item-col")):
        if pairs.schema.get(canon) in CODE_DTYPES:
            continue
        ids = vocab.table.get_column(vocab.id_name)  # any order: no sort
        for marker in ids.filter(ids.is_in(MISSING_MARKERS)).to_list():
            rows = pairs.filter(pl.col(canon) == marker).height
            warnings.append(
                f"{role} id {marker!r} ({column_name(mapping.get(canon, canon))}, {rows} interactions) looks like a "
                f"missing-value marker, yet those rows are one {role} now; empty the field to quarantine "
                f"them, or name another {role} column ({flag} / data.columns.{role})"
                + (f"; a session log reads each session as a user: --user-col {sessions}" if sessions and canon == USER else "")
            )
    return warnings


_FLOAT_SPELLED = r"^-?\d+\.0$"


def float_spelled_ids(pairs: pl.DataFrame, users: Vocab, items: Vocab, mapping: Mapping[str, str]) -> list[str]:
    """A warning for each id column whose every id is an integer spelled as a float (`64.0`): pandas
    writes an integer column that holds a missing value so (to_csv after a NaN). The ids are kept as
    written, which is right within the file, but `64` in a serving request or a later batch (or a
    Parquet copy, whose float ids are read as the integers they spell) is then another user. Looks
    at the vocabularies only."""
    warnings = []
    for canon, role, vocab in ((USER, "user", users), (ITEM, "item", items)):
        if pairs.schema.get(canon) in CODE_DTYPES:
            continue
        ids = vocab.table.get_column(vocab.id_name)
        # The first id decides for almost every log, so the whole vocabulary is scanned only when it is one.
        if ids.len() and bool(ids.head(1).str.contains(_FLOAT_SPELLED).all()) and bool(ids.str.contains(_FLOAT_SPELLED).all()):
            warnings.append(
                f"every {role} id ({column_name(mapping.get(canon, canon))}) is an integer spelled as a float "
                f"({ids[0]!r}), as pandas writes an integer column holding a missing value: the ids are kept "
                f"as written, so a request or a later batch must spell them so too ({ids[0][:-2]!r} is another "
                f"{role}); write the column as integers (pandas: .astype('Int64')) and ingest again"
            )
    return warnings


def epoch_times(rows: pl.DataFrame, mapping: Mapping[str, str], raw_times: pl.LazyFrame | None = None) -> list[str]:
    """A warning when every timestamp of `rows` falls in 1970 (`EPOCH_YEAR_END`): the dates are
    wrong, though temporal splits still order by them. `raw_times` (the source's time column as
    read, one column) tells decimal times (JODIE's `0.0`, `36.0`: seconds since the log began)
    from integer ones (yyyymmdd dates, day numbers), which call for other fixes; only its first
    rows are read, and only when the warning is given."""
    if TIME not in rows.columns:
        return []
    latest = rows.get_column(TIME).max()
    if latest is None:
        return []
    if latest >= EPOCH_YEAR_END:
        return _some_epoch_times(rows, mapping, latest)
    column = column_name(mapping.get(TIME, TIME))
    if swapped := _swapped_time_and_rating(rows, mapping, latest):
        return [swapped]
    if raw_times is not None and _decimal_times(raw_times.head(_RAW_TIME_SAMPLE).collect().to_series()):
        return [
            f"every timestamp ({column}) is in 1970 (latest {latest:%Y-%m-%d %H:%M:%S}): decimal times are read as "
            "Unix seconds (milliseconds from 1e11), so seconds counted from the log's start (JODIE's 0.0, 36.0) "
            "end up there; splits still order by them, but every date is wrong: add the log's start (Unix seconds) "
            "to the column or convert it to ISO-8601 (2015-07-01T00:00:36) to date it, or leave it out "
            f"{_leave_out_time(mapping)}"
        ]
    seconds = int(latest.timestamp())
    fix = (
        f"the latest reads as {seconds} (yyyymmdd?): --time-format %Y%m%d (--set data.time_format=%Y%m%d) reads "
        "such dates; or convert"
        if 19000101 <= seconds <= 21001231
        else "convert"
    )
    return [
        f"every timestamp ({column}) is in 1970 (latest {latest:%Y-%m-%d %H:%M:%S}): "
        "integer times are read as Unix seconds (milliseconds from 1e11), so yyyymmdd dates (20150701) "
        f"or day numbers end up there; splits still order by them, but every date is wrong: {fix} the "
        f"column to Unix seconds or ISO-8601 (2015-07-01), or leave it out {_leave_out_time(mapping)}"
    ]


def _leave_out_time(mapping: Mapping[str, str]) -> str:
    """How to read a log without its time column: the column options, or, for a headerless file read
    by position (whose column options are refused, having no names to pick), a header that gives the
    time field a name no role reads."""
    if mapping.get(TIME) == _POSITIONAL_TIME:
        names = ["user_id", "item_id", "rating", "unused"] if mapping.get(WEIGHT) == _POSITIONAL_WEIGHT else None
        example = f", e.g. --header {','.join(names)}" if names else ""
        return (
            "(the file has no header line: name its fields with --header / data.header, the time field under a "
            f"name no role reads{example})"
        )
    return "(--time-col / data.columns.time)"


_POSITIONAL_WEIGHT, _POSITIONAL_TIME = "field_2", "field_3"  # a headerless file's 3rd and 4th fields
_EPOCH_LOW, _EPOCH_HIGH = 1e9, 1e13  # 2001-09-09 in seconds to 2286 in milliseconds (the reader's _UNIX_TIME)


def _swapped_time_and_rating(rows: pl.DataFrame, mapping: Mapping[str, str], latest: datetime) -> str | None:
    """The 1970 warning for a headerless file whose fields are `user,item,unix_time,rating`: read
    by position (user, item, rating, timestamp, as u.data) its Unix times became the weights and its
    1-5 ratings times in the first seconds of 1970, and the generic warning's advice (yyyymmdd
    dates? --time-col?) did not say the two fields look swapped. Called only once every time is in
    1970, and then reads the weight column's minimum and maximum: no cost on the common path."""
    if mapping.get(WEIGHT) != _POSITIONAL_WEIGHT or mapping.get(TIME) != _POSITIONAL_TIME or WEIGHT not in rows.columns:
        return None
    weights = rows.get_column(WEIGHT)
    low, high = weights.min(), weights.max()
    if not (isinstance(low, float | int) and isinstance(high, float | int) and _EPOCH_LOW <= low and high < _EPOCH_HIGH):
        return None
    unit = "seconds" if high < 1e10 else "milliseconds"
    return (  # float32 weights hold 7 digits: the largest is shown rounded, not as a wrong exact time
        f"every timestamp (column 4) is in 1970 (latest {latest:%Y-%m-%d %H:%M:%S}) while the weights (column 3) are "
        f"Unix times in {unit} (the largest {high:.3g}): the file has no header line, so its fields were read by "
        "position as user, item, rating, timestamp, but they look like user, item, timestamp, rating (the two "
        "swapped: every time a weight, every rating a 1970 time); name them with --header "
        "user_id,item_id,timestamp,rating (data.header; --set data.header=user_id,item_id,timestamp,rating for "
        "other commands) and ingest again"
    )


def _some_epoch_times(rows: pl.DataFrame, mapping: Mapping[str, str], latest: datetime) -> list[str]:
    """A warning when some timestamps fall in 1970 and others later: Outbrain's `page_views`
    times are milliseconds since its first page view (`31905835`), read as Unix seconds they spread
    from 1970 to 2011 and no check said so; a `0` written for a missing time lands there too. No
    interaction log was written in 1970, and temporal splits place such rows first."""
    times = rows.get_column(TIME)
    early = int((times < EPOCH_YEAR_END).sum())
    if not early:
        return []
    earliest = times.min()
    column = column_name(mapping.get(TIME, TIME))
    return [
        f"{early:,} of {times.len() - times.null_count():,} timestamps ({column}) are in 1970 (earliest "
        f"{earliest:%Y-%m-%d %H:%M:%S}, latest {latest:%Y-%m-%d %H:%M:%S}): integer times are read as Unix seconds "
        "(milliseconds from 1e11), so a 0 written for a missing time, or times counted from the log's start "
        "(Outbrain's milliseconds since its first page view) end up there, and temporal splits place those rows "
        "first: drop or fix them, or convert the column to Unix seconds or ISO-8601, or leave it out "
        f"{_leave_out_time(mapping)}"
    ]


_RAW_TIME_SAMPLE = 100
"""Rows of the source's time column `epoch_times` reads to tell decimal times from integers."""


def _decimal_times(values: pl.Series) -> bool:
    """Whether a time column as read holds decimal numbers: a float column (Parquet, a typed
    read), or text numbers some of which are spelled with a point or an exponent (`36.0`)."""
    if values.dtype.is_float():
        return True
    if values.dtype != pl.String:
        return False
    text = values.drop_nulls().str.strip_chars()
    numbers = text.filter(text.cast(pl.Float64, strict=False).is_not_null())
    return bool(numbers.len()) and bool(numbers.str.contains(r"[.eE]").any())
