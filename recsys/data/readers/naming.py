"""Which column holds which role: map_columns (the config's names, a header's recognised names,
or positions for a headerless file), the header a headerless file should be given (suggested
from its first rows, with well-known public logs' layouts named), and how messages name a
column (`column_name`, `column_label`, `describe_columns`).

Silent misreads are the costly failure here (a rating's id taken for the item), so a column is
taken for a role only on positive evidence, and an unreadable layout gets a hint, not a guess.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from recsys.config import ColumnMap
from recsys.data.readers.base import _DATE_LIKE, _MAP_FIELDS, _NOT_AN_ID, AUTO_NAMES, FORMATS
from recsys.data.readers.refusals import (
    _refuse_adjacency_lists,
    _refuse_id_lists,
    _refuse_key_value_records,
    _refuse_sampled_negatives,
    _refuse_whitespace_runs,
)
from recsys.data.readers.sniff import _base_name, _header_lines, _is_number, _looks_like_data
from recsys.data.schema import EVENT, ITEM, TIME, USER, WEIGHT
from recsys.errors import DataError

_UNITS = "s|sec|secs|seconds|ms|millis|milliseconds|us|micros|microseconds|ns|nanos|nanoseconds"
# A column whose name says it holds a moment since the Unix epoch, in a unit: Coveo's SIGIR eCom 2021
# `server_timestamp_epoch_ms`, an export's `event_ts_ms` or `unix_time`. Read as the time when it is
# the only one (its values' magnitude gives the unit, as for any integer time). `time` + unit alone is
# not enough: `watch_time_ms` or `load_time_s` is a duration (no moment at all).
_MOMENT_WITH_UNIT = re.compile(
    rf"(?:^|_)(?:timestamp|ts)(?:_(?:epoch|unix|utc))?_(?:{_UNITS})$"
    rf"|(?:^|_)(?:epoch|unix)_(?:time|timestamp|ts|{_UNITS})$"
    r"|(?:^|_)(?:time|timestamp)_(?:epoch|unix)$"
)


def map_columns(
    path: Path | str, header: list[str], columns: ColumnMap | None, separator: str | None = None
) -> dict[str, str]:
    """canonical name -> source column. Explicit names win; the rest come from AUTO_NAMES.
    Raises DataError naming the file, the missing role and the columns that were found
    (`separator`: the header is a delimited text file's first line, split on it, where one column
    means a wrong split and a data row means a missing header)."""
    columns = columns or ColumnMap()
    by_base: dict[str, str] = {}
    for name in header:
        by_base.setdefault(_base_name(name), name)
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for canon, attr in _MAP_FIELDS.items():
        wanted = getattr(columns, attr)
        if wanted is not None:
            if wanted in header:
                mapping[canon] = wanted
            elif _base_name(wanted) in by_base:
                mapping[canon] = by_base[_base_name(wanted)]
            else:
                # Suggest the spelling meant (`ratng` -> `rating`), not just the first column; by the
                # name alone too, as RecBole's `user_id:token` is too long to be close to `user`.
                close = difflib.get_close_matches(wanted, header, n=1, cutoff=0.6) or [
                    by_base[b] for b in difflib.get_close_matches(_base_name(wanted), list(by_base), n=1, cutoff=0.6)
                ]
                raise DataError(
                    f"no column {wanted!r} for the {attr} ({path}: columns are {header}): name one with {{option}}",
                    setting=f"data.columns.{attr}",
                    value=close[0] if close else "NAME",
                )
            taken.add(mapping[canon])
    for canon in _MAP_FIELDS:
        if canon in mapping:
            continue
        for candidate in AUTO_NAMES[canon]:
            source = by_base.get(candidate)
            if source is not None and source not in taken:
                mapping[canon] = source
                taken.add(source)
                break
    moments = [c for c in header if c not in taken and _MOMENT_WITH_UNIT.search(_base_name(c))]
    if TIME not in mapping and len(moments) == 1:
        mapping[TIME] = moments[0]
        taken.add(moments[0])
    _remaining_id_column(header, mapping, taken)
    for canon, attr in ((USER, "user"), (ITEM, "item")):
        if canon not in mapping:
            if separator is not None and (_looks_like_data(header) or len(header) == 1):
                _refuse_whitespace_runs(path, header, separator)
            if separator is not None and _looks_like_data(header):
                _refuse_id_lists(path, header)
                _refuse_sampled_negatives(path, header)
                rows = _head_rows(path, separator)
                raise DataError(
                    f"{path}: the first line looks like data, not a header (columns would be named "
                    f"{header[:6]}): files without a header line are read by position only when every field "
                    "of the first line is a number (user, item[, rating[, timestamp]], as in u.data); "
                    f"{_headerless_hint(header, separator, path, rows)}{_mbid_note(header)}",
                    setting="data.header",
                    value=",".join(_suggested_names(header, rows)),
                )
            if separator is not None and len(header) == 1 and re.fullmatch(r"\d+:", header[0].strip()):
                raise _netflix_blocks(path, header[0].strip())
            if separator is not None and len(header) == 1:  # a column option cannot help: the line did not split
                _refuse_adjacency_lists(path, header)
                _refuse_key_value_records(path, header)
                raise DataError(
                    f"{path}: one column {header[0]!r}, so no {attr} column (wrong delimiter or format?): "
                    "the separator is none of , ; | tab or one space, or the file is not a flat log "
                    "(Netflix prize `MovieID:` blocks are not read); force a reader with "
                    f"{{option}} ({', '.join(FORMATS)})",
                    setting="data.format",
                    value="FORMAT",
                )
            suggested = _suggested_id_column(attr, [c for c in header if c not in taken], header)
            if "mbid" in suggested.lower():  # Last.fm's often-empty MusicBrainz id: its name column reads every row
                suggested = name_column(header, suggested) or suggested
            unnamed = "; none is named like one" if suggested == "NAME" else ""
            also = ""
            if canon == USER and ITEM not in mapping:  # both missing: name both, not one per try
                item = _suggested_id_column("item", [c for c in header if c not in taken and c != suggested], header)
                also = f", and no item column either: {{option:data.columns.item={item}}}"
            raise DataError(
                f"no {attr} column found ({path}: columns are {header}){unnamed}: name it with {{option}}{also}",
                setting=f"data.columns.{attr}",
                value=suggested,
            )
    return mapping


# What follows the user in a Netflix prize block line, by its number of fields: the training
# set's `combined_data_*.txt` (user,rating,date), `qualifying.txt` (user,date), `probe.txt` (user).
_NETFLIX_FIELDS = {3: ("rating,date", ' "," $2 "," $3'), 2: ("date", ' "," $2'), 1: ("", "")}


def _netflix_blocks(path: Path | str, first: str) -> DataError:
    """The refusal of Netflix prize `MovieID:` blocks, with the `awk` line that flattens this
    file's own lines: the one written for `combined_data_*.txt` turned `probe.txt`'s bare user
    lines into rows with an empty rating, every one of which was then quarantined as bad_weight."""
    rows = [r for r in _head_rows(path, ",") if not re.fullmatch(r"\d+:", ",".join(r).strip())]
    rest, fields = _NETFLIX_FIELDS.get(len(rows[0]) if rows else 3, _NETFLIX_FIELDS[3])
    names = "user_id,item_id" + (f",{rest}" if rest else "")
    return DataError(
        f"{path}: Netflix prize `MovieID:` blocks (first line {first!r}), which are not read: flatten them to one "
        f"{names} line each first, e.g. `awk -F, 'BEGIN {{print \"{names}\"}} /:$/ {{m = substr($0, 1, length($0) - 1); "
        f'next}} {{print $1 "," m{fields}}}\' FILE > NEW`, and ingest NEW'
    )


# Words that name what a user or an item column holds without the word itself: UCI Online Retail's
# `CustomerID` and `StockCode`, a funnel export's `product_category`, Food.com's `recipe_id`.
_ROLE_WORDS = {
    "user": (
        "user", "customer", "visitor", "member", "account", "client", "reviewer", "person", "player", "viewer",
        "listener", "reader", "buyer", "shopper", "subscriber", "rater", "household",
    ),
    "item": (
        "item", "product", "sku", "stock", "article", "asin", "isbn", "movie", "film", "song", "track", "artist",
        "album", "book", "game", "app", "video", "recipe", "business", "anime", "course", "offer", "goods", "content",
        "document",
    ),
}  # fmt: skip


# A column named for a list of ids (Amazon-M2's `prev_items`, a `history`, `item_ids`): offered
# after a column named alike for one id.
_LIST_NAME = re.compile(r"(?:items|ids|_list|_seq|history)$")


def _suggested_id_column(attr: str, free: list[str], header: list[str] | None = None) -> str:
    """The column a missing user or item is best read from, for the error's hint; `NAME` when no
    column says so. A column named for the role comes first (`user_uuid` for the user, not the
    item's `app_id`; `StockCode` for the item), then another id-like one (`book_id`; `title` or
    `traffic_source` is never offered); one whose name says it holds other things (`event_id`, `InvoiceNo`, `Ratings`) is never
    offered: a hint the user copies should not read every event as its own item, and the message
    lists the columns already. A session id is a user (a session log), never an item. Failing
    those, the column where logs put the role (the user first, the item second: `listener,artist,
    plays`) is offered when it is free and not such a column."""
    words = _ROLE_WORDS[attr] + (("session",) if attr == "user" else ())

    def rank(column: str) -> tuple[bool, bool, bool, bool, bool]:
        name = _base_name(column)
        # A name that starts with the role (`session_id`, `USER_MD5`) before one that only holds
        # it (the Spotify skip log's `hist_user_behavior_n_seekfwd`, a feature, was offered as the user).
        leading = name.startswith((attr, *words))
        named = (attr not in name, not any(w in name for w in words), not _ID_SUFFIX.match(column))
        return (not leading, *named, bool(_LIST_NAME.search(name)))  # `next_item` before `prev_items` (Amazon-M2)

    # Never a column named for the other role either: Outbrain's `uuid,document_id,...` was offered
    # `--user-col document_id`, each page a user.
    other = _ROLE_WORDS["item" if attr == "user" else "user"]
    offered = sorted(
        (
            c
            for c in free
            if not _NOT_AN_ID.search(_base_name(c))
            and (attr == "user" or "session" not in c.lower())
            and (rank(c)[2] is False or not any(w in _base_name(c) for w in other))
        ),
        key=rank,
    )
    if offered and not all(rank(offered[0])[1:4]):  # a list-like name alone is no fit
        return offered[0]
    position = 0 if attr == "user" else 1
    usual = header[position] if header is not None and len(header) > position else None
    # Never a column named for the other role: Amazon-M2's `prev_items,next_item,locale` (a
    # session's item list) was offered as the user.
    if usual is not None and any(w in _base_name(usual) for w in other):
        return "NAME"
    return usual if usual is not None and usual in offered else "NAME"


def name_column(header: Iterable[str], column: str | None) -> str | None:
    """A column of `header` that names what id column `column` identifies (`artist_name` beside
    `artist_mbid` or `artist_id`, `track_name` beside `track_id`, `artname` beside `artmbid`):
    Last.fm leaves its MusicBrainz ids empty on many rows, while the name is always written, so an
    empty id there is better read by the name than quarantined."""
    if not column:
        return None
    prefix = re.sub(r"[_ -]?(?:mbid|id|uuid|guid)$", "", column, flags=re.IGNORECASE)
    if not prefix or prefix == column:
        return None
    wanted = {f"{prefix}_name", f"{prefix}name", f"{prefix} name", f"{prefix}-name"}
    return next((c for c in header if c != column and c.lower() in {w.lower() for w in wanted}), None)


def _header_names(row: list[str]) -> list[str]:
    """Column names for a headerless file whose first row is `row`, one per field.
    One field is named `timestamp`: the first date, else the last Unix-time-shaped number; the
    first lower-case word `event` (Taobao's `pv`, an event log's `view`) when two other fields are
    integers (the ids of such logs); the first two others `user_id` and `item_id`; a later number
    `rating` unless the row has an event (an event log's other numbers are no weights: Taobao's
    category id `2520377` named `rating` would be summed as weights by a user who keeps the
    guess) and unless it is 0 (Yoochoose's category `0`, Book-Crossing's implicit `0`: named
    `rating`, every such row would weigh 0 and be dropped), the rest by position; an ASIN before an
    Amazon reviewer id (Amazon's ratings-only CSV starts with the item) is named `item_id`, the
    reviewer `user_id`. A guess the message asks to check (Yoochoose's 9-digit item ids look like
    Unix times, which is why a date wins). A measurement (a negative number or one
    with more than two decimals: Gowalla's and Foursquare's latitude and longitude) is neither an
    id nor a rating: named as an id, a check-in log's latitude became its items and its longitude
    its weights. Twitter's `Tue Apr 03 18:00:09 +0000 2012` (Foursquare) is a date."""
    values = [v.strip() for v in row]
    dates = [i for i, v in enumerate(values) if _DATE_LIKE.match(v) or _TWITTER_DATE.match(v)]
    # 9 digits are 1973-2001 in seconds: a first field spelled so is an id (Steam 200K's user
    # `151603712,"The Elder Scrolls V Skyrim",purchase,1.0,0` was named the time, the game the user).
    unix = [
        i
        for i, v in enumerate(values)
        if v.isdigit() and not v.startswith("0") and (len(v) in (10, 12, 13) or (len(v) == 9 and i > 0))
    ]
    time = dates[0] if dates else unix[-1] if unix else None
    words = [i for i, v in enumerate(values) if i != time and _EVENT_WORD.match(v)]
    integers = [i for i, v in enumerate(values) if i != time and v.isdigit()]
    event = words[0] if words and len(integers) >= 2 else None
    names: list[str] = []
    # Amazon's ratings-only CSVs (`0000013714,A2SUAM1J3GNN3B,5.0,1252800000`) start with the item:
    # an ASIN before a reviewer id is named so, not user_id then item_id (a transposed matrix).
    candidates = [i for i, v in enumerate(values) if i not in (time, event) and not _MEASURE.match(v)][:2]
    amazon = len(candidates) == 2 and bool(
        _ASIN.match(values[candidates[0]]) and _REVIEWER_ID.match(values[candidates[1]])
    )
    ids = iter(("item_id", "user_id") if amazon else ("user_id", "item_id"))
    guessing = event is None  # a weight is guessed for the first number after the ids only
    named_ids = 0
    for position, value in enumerate(values):
        if position in (time, event):
            name = "timestamp" if position == time else "event"
        elif _MEASURE.match(value):
            name = ""
            # A measure after the ids is that first number (a price `94.0930`): what follows it (a
            # quantity) is no rating either.
            guessing = guessing and named_ids < 2
        else:
            name = next(ids, None)
            named_ids += name is not None
            if name is None:
                last = position == len(values) - 1
                name = _weight_name(value, last, time is None) if guessing else ""
                guessing = guessing and not _is_number(value)
        names.append(name if name and name not in names else f"column_{position + 1}")
    return names


def _weight_name(value: str, last: bool, timeless: bool) -> str:
    """The name `_header_names` gives the first number after a headerless row's ids: `rating` for
    one on a rating scale (above 0, at most 10: stars, Book-Crossing's 1-10), `plays` for a larger
    whole number ending a row without a time (Last.fm 360K's `2137` plays per user and artist: an
    aggregate count, summed rather than averaged as a rating would be), else none (YOOCHOOSE buys'
    price `12462` and the quantity after it: a price is no preference strength; Twitch's streamer
    id). A whole number written as a float (`36.0`: LibRec's Foursquare check-in counts) is a whole
    number too: those were named by position, so the suggested header read no weight and each
    row's count was silently 1. The message asks the user to check each name."""
    if not _is_number(value) or not 0 < float(value) <= 10:
        return "plays" if _WHOLE.match(value) and float(value) > 10 and last and timeless else ""
    return "rating"


_WHOLE = re.compile(r"^\d+(?:\.0+)?$")  # 2137 or 36.0, never 94.09 (a price) nor -3


def _suggested_names(row: list[str], rows: Sequence[list[str]] = ()) -> list[str]:
    """`_header_names`, with a name beside an empty or UUID item (`_item_name_beside_mbid`) named
    the item instead: the names a refusal suggests for data.header and for a header line.
    `rows`: the file's first lines, split: a word field with more than `_EVENT_KINDS` values there is
    no event (Twitch's streamer names), and a field the first row shows on a rating scale but that
    goes above 10 further down is no rating (the Million Song Dataset's `train_triplets.txt` starts
    with a user's `1` and `2` plays, its counts reach thousands): named as `_weight_name` names its
    largest value (`plays` for a whole number ending a row without a time), else by position."""
    names = _header_names(row)
    moved = _item_name_beside_mbid([v.strip() for v in row], names)
    if moved is not None:
        mbid, name = moved
        names[mbid], names[name] = ("mbid" if "mbid" not in names else f"column_{mbid + 1}"), "item_id"
    if "event" in names and rows:
        # An event column holds a few kinds (Taobao's pv, cart, fav, buy); a word column with many
        # (Twitch's streamer names: `1,33842865744,mithrain,154,156`) is no event: named by position.
        position = names.index("event")
        if len({r[position].strip() for r in rows if len(r) == len(row)}) > _EVENT_KINDS:
            names[position] = f"column_{position + 1}"
    if "rating" in names and rows:
        position = names.index("rating")
        values = [r[position].strip() for r in rows if len(r) == len(row) and _is_number(r[position].strip())]
        top = max(values, key=float, default="")
        if top and float(top) > 10:
            last, timeless = position == len(row) - 1, "timestamp" not in names
            names[position] = _weight_name(top, last, timeless) or f"column_{position + 1}"
    return names


_EVENT_KINDS = 20  # more kinds of event than this in a file's first lines: names, not events


def _head_rows(path: Path | str, separator: str) -> list[list[str]]:
    """The first lines of a headerless delimited file split on `separator`, for `_suggested_names`
    (none where they cannot be read: the refusal then names what the first row shows)."""
    try:
        return [line.split(separator) for line in _header_lines(Path(path))[:1000] if line.strip()]
    except (DataError, OSError):
        return []


def _header_example(row: list[str], separator: str, rows: Sequence[list[str]] = ()) -> str:
    """`_suggested_names` as `sed -i '1i ...'` text, joined by the file's own separator (a tab as
    `\\t`), so the line it adds splits like the rows (a `user_id,item_id` line on a tab or `;`
    file would be one column)."""
    return ("\\t" if separator == "\t" else separator).join(_suggested_names(row, rows))


def _headerless_hint(row: list[str], separator: str, path: Path | str, rows: Sequence[list[str]] = ()) -> str:
    """The fix a refusal of a headerless file offers: data.header first (`{option}`, filled by the
    command: `--header` for `recsys ingest`, `--set data.header=...` elsewhere), which leaves the
    file as it is (read-only, in a landing directory, gzip'd), then the header line to add."""
    return (
        "name its fields with {option} (one name per field, in order; rename each to what it holds), or add a "
        f"header line naming the columns, separated as the rows are, e.g. "
        f"`sed -i '1i {_header_example(row, separator, rows)}' {path}`"
    )


def _mbid_note(row: list[str]) -> str:
    """Why `_header_example` named a name column the item rather than the id column before it."""
    moved = _item_name_beside_mbid([v.strip() for v in row], _header_names(row))
    if moved is None:
        return ""
    return (
        f"; the item is column {moved[1] + 1} (a name), not the MusicBrainz id in column {moved[0] + 1}, which "
        "Last.fm leaves empty on many rows (each such row would be quarantined as missing_item): to read the "
        "ids instead, name that column item_id"
    )


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def _item_name_beside_mbid(values: list[str], names: list[str]) -> tuple[int, int] | None:
    """(position of the field named `item_id`, position of the name after it) when that field is a
    MusicBrainz id (a UUID) or empty and a later field is a name (text, not a number, date or
    UUID): Last.fm 1K's `artmbid artname` and 360K's `artmbid artname`. Last.fm leaves the mbid
    empty on many rows (3% of 1K's artists, 10-15% of 360K's and of 1K's tracks), and an empty id
    quarantines its row as `missing_item`; the name is always there, so the header names it the
    item."""
    if "item_id" not in names:
        return None
    item = names.index("item_id")
    if values[item] and not _UUID.match(values[item]):
        return None
    for position in range(item + 1, len(values)):
        value = values[position]
        if value and not _is_number(value) and not _UUID.match(value) and not _DATE_LIKE.match(value):
            return item, position
    return None


_EVENT_WORD = re.compile(r"^[a-z][a-z_-]{0,23}$")  # pv, addtocart, view: not a name (`Underworld`)
_MEASURE = re.compile(r"^(?:-\d+(?:\.\d*)?|\d*\.\d{3,})$")  # -97.79, 30.2359091167: no id, no rating
_ASIN = re.compile(r"^(?:B0[0-9A-Z]{8}|\d{9}[\dX])$")  # B00002N62Y, ISBN-10 0000013714 / 000100039X
_REVIEWER_ID = re.compile(r"^A[0-9A-Z]{11,27}$")  # A2SUAM1J3GNN3B (2014/2018), AGKHLEW2SOWHNMFQIJGBECAF7INQ (2023)
_TWITTER_DATE = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} \d{2} \d{2}:\d{2}:\d{2} [+-]\d{4} \d{4}$")


def column_name(source: str) -> str:
    """How a message names a source column: `'rating'`, its header name quoted, or `column 3` for
    a headerless file's column (read under the internal name `field_2`, which the user never
    wrote)."""
    position = source.removeprefix("field_")
    return f"column {int(position) + 1}" if position.isdigit() and source != position else repr(source)


def column_label(source: str) -> str:
    """`column 'rating'` or `column 3`: `column_name` after the word column."""
    name = column_name(source)
    return name if name.startswith("column ") else f"column {name}"


def describe_columns(mapping: dict[str, str], event_weighted: bool = False) -> str:
    """Which source column became which role, one line (`user=visitorid, item=itemid, ...`), so
    an automatic pick (the only `<name>_id` column as the user, `parent_asin` over `asin`) is
    seen, not only in manifest.json. Headerless files name their columns by position.
    `event_weighted`: data.event_weights is set, so a log without a weight column weighs each row
    by its event (it said "each row counts 1" of Retailrocket's events under event weights)."""

    def spelled(source: str) -> str:
        return source if column_name(source) == repr(source) else column_name(source)

    found = [f"{role}={spelled(mapping[canon])}" for canon, role in _MAP_FIELDS.items() if canon in mapping]
    if WEIGHT not in mapping:
        found.append(
            "no weight column (each row weighs its event's data.event_weights)"
            if event_weighted and EVENT in mapping
            else "no weight column (each row counts 1)"
        )
    return ", ".join(found)


_ID_SUFFIX = re.compile(r"^(?P<stem>.+?)(?:ID|Id|_id|_ID|-id)$")
_BASKET = re.compile(r"order|invoice|transaction|basket")  # a basket is a user (Instacart's order_id)


def _remaining_id_column(header: list[str], mapping: dict[str, str], taken: set[str]) -> None:
    """When exactly one of user / item is still unmapped and exactly one unmapped column is named
    like an id (`<name>ID`, `<name>Id`, `<name>_id`: `artistID`, `trackId`, `song_id`), take it:
    `userID artistID weight` needs no column map. Never guesses between two candidates, and never
    takes a column whose name says it holds something else (`_NOT_AN_ID`: a rating's, review's or
    event's id) or, for the item, a session or an order: Trivago's `user_id,session_id,...,reference`
    read each session as an item, Douban's `RATING_ID,USER_MD5,MOVIE_ID,...` each rating as a user,
    silently. (The user may be an order or a session: Instacart's baskets, session logs.)"""
    missing = [canon for canon in (USER, ITEM) if canon not in mapping]
    if len(missing) != 1:
        return
    candidates = [c for c in header if c not in taken and _ID_SUFFIX.match(c.split(":", 1)[0].strip())]
    if missing[0] == ITEM and any("session" in c.lower() or _NOT_AN_ID.search(_base_name(c)) for c in candidates):
        return
    if missing[0] == USER and any(_NOT_AN_ID.search(_BASKET.sub("", _base_name(c))) for c in candidates):
        return
    if len(candidates) == 1:
        mapping[missing[0]] = candidates[0]
        taken.add(candidates[0])
