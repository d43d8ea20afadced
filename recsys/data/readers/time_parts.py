"""A time stored over several columns, combined into one: HetRec 2011 MovieLens-2k's
`user_ratedmovies.dat` (`date_day date_month date_year date_hour date_minute date_second`) and
exports with a `date` column beside a `time` column of times of day (`2012-04-03`, `18:00:09`).

Read without this, HetRec's ratings had no time at all (temporal splits refused them) and a
date+time export either lost its time of day or was refused. The parts are joined into ISO-8601
text (no zone: UTC, as every zoneless time is read), so validation parses them as any other time
column and quarantines a row whose parts name no moment (day 31 of February) as bad_timestamp;
an empty part is written as `?`, so that row is quarantined too rather than dated midnight.
Only logs whose header names such parts pay for this: a log with one time column is untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import polars as pl

from recsys.data.readers.sniff import _base_name
from recsys.data.schema import TIME

# `date_day`, `rating_month`, `year`: the unit after an optional prefix, compared after `_base_name`.
_PART = re.compile(r"^(?:.*_)?(year|month|day|hour|minute|second)$")
_UNITS = ("year", "month", "day", "hour", "minute", "second")
_WIDTH = {"year": 4}
# The shared prefix says the parts date the interaction (`date_`, `rating_date_`, none), not a
# profile field beside it (`birth_year birth_month birth_day`).
_WHEN_PREFIX = re.compile(r"^$|.*(?:date|time)_$")
_CLOCK = re.compile(r"^\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?$")  # 18:00:09, 9:05, 18:00:09.5
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # 2012-04-03


def combined_name(parts: Sequence[str]) -> str:
    """The name the combined column goes by in messages and the manifest (`date_year+date_month+...`),
    so the summary's columns line says which columns were combined."""
    return "+".join(parts)


def date_parts(header: Sequence[str], mapping: dict[str, str]) -> tuple[str, ...]:
    """The header's year, month, day[, hour[, minute[, second]]] columns in that order, where no
    time column is read and each unit is named exactly once (else ()): a prefix must be shared
    (`date_day`, `date_month`, ...) and say date or time (`_WHEN_PREFIX`), so a profile's
    `birth_year` ... does not become the interaction's time."""
    if TIME in mapping:
        return ()
    taken = set(mapping.values())
    found: dict[str, list[str]] = {}
    for name in header:
        match = _PART.match(_base_name(name))
        if match and name not in taken:
            found.setdefault(match.group(1), []).append(name)
    units = [u for u in _UNITS if u in found]
    if units[:3] != ["year", "month", "day"] or units != list(_UNITS[: len(units)]):
        return ()
    if any(len(found[u]) != 1 for u in units):
        return ()
    prefixes = {_base_name(found[u][0])[: -len(u)] for u in units}
    if len(prefixes) != 1 or not _WHEN_PREFIX.match(next(iter(prefixes))):
        return ()
    return tuple(found[u][0] for u in units)


def date_and_clock(
    header: Sequence[str], mapping: dict[str, str], rows: Callable[[], Sequence[Sequence[str]]]
) -> tuple[str, ...]:
    """(date column, time column) where the header holds a `date` and a `time` column, the time read
    is one of them, and the first rows hold days (`2012-04-03`) and times of day (`18:00:09`) in
    them; else (). `rows`: the first data rows, split like the header (read only for such a header)."""
    by_base = {_base_name(name): n for n, name in enumerate(header)}
    if "date" not in by_base or "time" not in by_base:
        return ()
    d, t = by_base["date"], by_base["time"]
    if mapping.get(TIME) not in {header[d], header[t]}:
        return ()
    seen = [r for r in rows() if len(r) > max(d, t)]
    if not seen or not all(_DAY.match(r[d].strip()) and _CLOCK.match(r[t].strip()) for r in seen):
        return ()
    return (header[d], header[t])


def _present(column: str) -> pl.Expr:
    """The part's text, `?` where it is empty (so the row's time cannot parse and is quarantined)."""
    text = pl.col(column).str.strip_chars()
    return pl.when(text.is_null() | (text == "")).then(pl.lit("?")).otherwise(text)


def combine(parts: Sequence[str]) -> pl.Expr:
    """The ISO-8601 text of the moment `parts` name (see `date_parts`, `date_and_clock`), under
    `combined_name(parts)`: vectorised string work, no per-row Python."""
    if len(parts) == 2 and not _PART.match(_base_name(parts[0])):  # date, time of day
        clock = _present(parts[1])
        clock = pl.when(clock.str.contains(r"^\d:")).then(pl.lit("0") + clock).otherwise(clock)
        return pl.concat_str([_present(parts[0]), pl.lit("T"), clock]).alias(combined_name(parts))
    pieces = [_present(p).str.zfill(_WIDTH.get(u, 2)) for p, u in zip(parts, _UNITS, strict=False)]
    while len(pieces) < 6:
        pieces.append(pl.lit("00"))
    year, month, day, hour, minute, second = pieces
    text = pl.concat_str([year, pl.lit("-"), month, pl.lit("-"), day, pl.lit("T"), hour, pl.lit(":"), minute,
                          pl.lit(":"), second])  # fmt: skip
    return text.alias(combined_name(parts))
