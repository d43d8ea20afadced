"""What ingest tells the user about the data it accepted, and the rules it reads weights by.

Warnings (one line each, printed and kept in the manifest): shares of missing users or items and
of quarantined rows, negative and zero weights, empty or unread time columns, times too coarse
to tell repeats apart, ratings summed or on an unexpected scale, a k-core that keeps little, event
rules naming events the log lacks (none at all is an error), and columns or weight rules that
drift between the batches of one directory. `weight_policy` decides which column weighs and how
a pair's rows aggregate; `nothing_accepted` is the error of a first ingest that quarantined
every row.

Kept apart from `recsys.data.ingest` (which calls them once per ingest, after validation) so the
ingest module stays the read -> validate -> store sequence, and each warning's rule can be read
and tested on its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from recsys.config import DataConfig
from recsys.data.implicit import NEGATIVE_WEIGHT_STEP, ZERO_WEIGHT_STEP, FilterStep
from recsys.data.readers import (
    BOOLEAN_ID,
    MALFORMED_JSON,
    ROW,
    SOURCE_FILE,
    RawSource,
    base_name,
    column_label,
    column_name,
    name_column,
)
from recsys.data.schema import EVENT, ITEM, TIME, USER, WEIGHT
from recsys.data.suspicions import session_column
from recsys.data.validation import REASON, ValidationResult, guess_time_format
from recsys.errors import DataError

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


def nothing_accepted(source: str | Path, raw: RawSource, result: ValidationResult) -> DataError:
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
    if not raw.header and str(column).startswith("field_"):  # read by position: no column names to give
        fields = len({c for c in raw.mapping.values() if str(c).startswith("field_")})
        return DataError(
            f"{source}: no row passed validation ({counts}; {where}: {value}): {fix}; the file has no header "
            f"line, so its columns are read by position (user, item[, rating[, timestamp]]): if {column_name(column)} "
            f"holds something else, name the fields with {{option}} (one name per field, in order, {fields} here), "
            "which the column options then map from",
            setting="data.header",
            value="NAMES",
        )
    return DataError(
        f"{source}: no row passed validation ({counts}; {where}: {value}): {fix}, or name another "
        f"{attr} column with {{option}}",
        setting=f"data.columns.{attr}",
    )


MISSING_USER_SHARE = 0.2


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
        combined = reason == "bad_timestamp" and column is not None and raw.header and column not in raw.header
        guess = guess_time_format(_bad_times(result)) if reason == "bad_timestamp" and not combined else None
        if combined:  # HetRec's date_day ... date_second, joined by the reader (`time_parts`)
            hint = (
                f"the time is combined from {', '.join(repr(c) for c in str(column).split('+'))} and these rows' parts "
                "name no moment (a day past the month's end, an empty part shown as '?'): fix those rows, or read "
                "one time column with --time-col (data.columns.time)"
            )
        elif guess is not None:
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
# `t` alone: a compact export's `u,i,t,r` (a Kaggle library-loans log), its Unix times not read.
# `created_at` (XING's RecSys Challenge `interactions.csv`, database exports; `createdAt`): a past
# participle before `at`.
_TIME_NAME = re.compile(r"time|date|^t$|(?:^|_)(?:day|dt|ts|dat)(?:$|_)|(?:_at|edat)$")


# `times` counts (Tenrec's `watching_times`: how often a video was watched), it is no time.
_COUNT_OF_TIMES = re.compile(r"times$")


def _time_named_columns(raw: RawSource) -> list[str]:
    """The header's columns not read whose name says time or date (`_TIME_NAME`), not a count of times."""
    return [
        c
        for c in raw.header
        if c not in raw.mapping.values() and _TIME_NAME.search(base_name(c)) and not _COUNT_OF_TIMES.search(base_name(c))
    ]


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
        f"duplicates quarantined: {rows_text(duplicates)} equal to an earlier row in every column read; "
        f"{why}, so a repeated event (a second view of an item) cannot be told from a copied row and is "
        "not counted; name a time column with seconds with --time-col (data.columns.time) if the log has one, "
        "or count each such row as a repeated event with --exact-duplicates keep (data.exact_duplicates)"
    )


def _toml_key(name: str) -> str:
    """`view`, or `"add to cart"` where a TOML bare key cannot spell the name."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def rows_text(n: int) -> str:
    return f"{n:,} row{'' if n == 1 else 's'}"


def role_column(role: str, mapping: dict[str, str], batches: list[dict]) -> str | None:
    """The source column read as `role` (weight, event): this batch's, else an earlier batch's."""
    return mapping.get(role) or next((b["columns"][role] for b in batches if role in b.get("columns", {})), None)


def weight_policy(cfg: DataConfig, mapping: dict[str, str], batches: list[dict], rows: pl.DataFrame) -> dict:
    """What happens to the weight column, for the manifest: which column, the aggregation used
    (`auto` resolved: sum when the log has a weight column, else count), whether the weights
    survive, and a one-line warning when a varying weight column is reduced to 1s (count or
    binarize), so play counts or ratings are never dropped silently, or when one that is 0 in every
    row is counted as interactions (a flag that never fired: a log of impressions). A config with a positive rule
    (`positive_min_weight`: ratings >= 4 are positives) reads the column as ratings on purpose:
    thresholding then binarising is the explicit-to-implicit conversion it asked for, not a loss,
    so it gets no warning (the manifest still records the policy)."""
    column = role_column(WEIGHT, mapping, batches)
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
        elif low == 0:  # constant 0: a flag that never fired (impressions, no clicks), counted as 1s
            warning = (
                f"{column_label(column)} is 0 in every row but {dropped_by} counts each row as an "
                "interaction: if 0 means none (a clicked flag on a log of what was shown), the log holds no "
                "interaction and the models learn what was shown; set data.aggregate = sum to read it "
                "(a weight of 0 is then no interaction)"
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
    # Ties by name: the listing (and the hint's weights) must not change between runs (group_by's order does).
    counts = rows.group_by(EVENT).len().sort(["len", EVENT], descending=[True, False], nulls_last=True).collect()
    present = dict(zip(counts.get_column(EVENT).to_list(), counts.get_column("len").to_list(), strict=True))
    listing = ", ".join(f"{event!r} ({rows_text(n)})" for event, n in list(present.items())[:12] if event is not None)
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
            shown = ", ".join(f"{event!r} ({rows_text(n)})" for event, n in unweighted[:12])
            problems.append(f"data.event_weights gives no weight to {shown}, so those rows are dropped")
    if not problems:
        return None
    return "; ".join(problems) + f" (its events: {listing})"


RATING_SCALE_MAX = 5.0


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
POSITIONAL_RATING = "field_2"
"""The third field of a headerless file read by position (readers.delimited._positional): the rating
of u.data's and ratings.dat's `user item rating timestamp`, named by no header, so a re-rated pair of a
`::` file was summed (4 and 5 stars into 9) without the warning a `rating` column gets."""


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
    if column != POSITIONAL_RATING and not any(part in column.lower() for part in RATING_NAMES):
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

K_CORE_KEPT_USERS = 0.25


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
