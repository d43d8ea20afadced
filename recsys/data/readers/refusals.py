"""Layouts no reader turns into rows, refused before reading with one error that says what the
file is and how to get a flat log from it (for SNAP's multi-line records, the `awk` line that
writes one): columns aligned with runs of blanks, one line of item ids per user (adjacency
lists), SNAP-style multi-line key/value records, lists of ids in one field.

They are refused rather than guessed because each would otherwise read as plausible but wrong
rows (a list of items as one item id), which no later check could tell from good data.
"""

from __future__ import annotations

import re
from pathlib import Path

from recsys.data.readers.base import _ID_LIST
from recsys.data.readers.sniff import _header_lines, _is_number
from recsys.errors import DataError


def _refuse_whitespace_runs(path: Path | str, header: list[str], separator: str) -> None:
    """DataError for a headerless file whose lines are numbers separated by runs of blanks
    (`1\t\t5\t\t0.219`: Jester's jester_ratings.dat; `1  6  2`: columns aligned with spaces):
    split on one tab they show empty fields (the second one named `_duplicated_0` by polars), on
    one comma or space a single column, and the header line the other errors suggest would not
    split like the rows. Every line of the head must show the same runs (a first line with one
    missing value, `196\t242\t\t881250949`, is no such file: squeezing would shift its columns)."""
    if len(header) == 1:
        values, runs = header[0].split(), bool(re.search(r"\s\s", header[0].strip()))
    else:
        values = [f for f in header if f.strip() and not _DEDUPLICATED.match(f)]
        runs = len(values) < len(header)
    if not (runs and len(values) >= 2 and all(_is_number(f) for f in values)):
        return
    try:
        lines = _header_lines(Path(path))[:50]
    except (DataError, OSError):
        return
    if len(header) == 1:
        same = all(len(line.split()) == len(values) and all(map(_is_number, line.split())) for line in lines)
    else:
        gaps = [[n for n, f in enumerate(line.split(separator)) if not f.strip()] for line in lines]
        same = all(g == gaps[0] for g in gaps) and all(
            all(map(_is_number, line.split())) and len(line.split()) == len(values) for line in lines
        )
    if same:
        raise DataError(
            f"{path}: its fields are separated by runs of spaces or tabs (first line: {' '.join(values)[:40]!r}), "
            "which are not read; put one tab between fields first, e.g. `awk -v OFS='\\t' '{$1 = $1; print}' "
            "FILE > NEW`, and ingest NEW (columns user, item[, rating[, timestamp]], as in u.data)"
        )


def _refuse_adjacency_lists(path: Path | str, header: list[str]) -> None:
    """DataError for a file of one line per user, the user's item ids separated by single spaces:
    LightGCN's and NGCF's `train.txt` (Gowalla, Yelp2018, Amazon-book: the user id, then its items)
    and CiteULike's `users.dat` (the number of items, then their ids; the user is the line's 0-based
    number). The lines differ in length, so no separator splits them into columns, and the
    one-column error said "the separator is none of ... one space" of a file split by single
    spaces. The message gives the `awk` line that writes one `user_id,item_id` line per pair, with
    the user read as the layout has it: the first number, or the line number when every line
    starts with the count of the ids after it."""
    first = header[0].strip().split(" ")
    if len(first) < 2 or not all(v.isdigit() for v in first):
        return
    try:
        rows = [line.strip().split(" ") for line in _header_lines(Path(path))[:50] if line.strip()]
    except (DataError, OSError):
        return
    if not all(all(v.isdigit() for v in row) for row in rows) or len({len(row) for row in rows}) < 2:
        return
    counted = all(int(row[0]) == len(row) - 1 for row in rows)
    layout = (
        "the number of items first, as CiteULike's users.dat (the user is the line's 0-based number)"
        if counted
        else "the user id first, as LightGCN's and NGCF's train.txt"
    )
    user = "NR - 1" if counted else "$1"
    raise DataError(
        f"{path}: one line per user, ids separated by single spaces, with {layout} (first line "
        f"{header[0].strip()[:40]!r}): such lists are not read; write one user_id,item_id line per pair first, e.g. "
        f"`awk -v OFS=, 'BEGIN {{print \"user_id,item_id\"}} {{for (i = 2; i <= NF; i++) print {user}, $i}}' "
        "FILE > NEW.csv`, and ingest NEW.csv"
    )


# SNAP's review dumps: one `key: value` line per field, a blank line after each record (BeerAdvocate's
# `beer/beerId: 47986`, RateBeer's, Amazon fine foods' `product/productId: B001E4KFG0`).
_KEY_VALUE_LINE = re.compile(r"^[A-Za-z]+/[A-Za-z]+: ")
# Which key holds which role, in order of preference; the first the head shows is used.
_RECORD_KEYS = {
    "user_id": ("review/userId", "review/profileName"),
    "item_id": ("product/productId", "beer/beerId"),
    "rating": ("review/overall", "review/score"),
    "timestamp": ("review/time",),
}


def _read_head_is_gzip(path: Path | str) -> bool:
    """Whether `path` is gzip'd (its first two bytes), for a shell line that must decompress it."""
    try:
        with Path(path).open("rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _refuse_key_value_records(path: Path | str, header: list[str]) -> None:
    """DataError for SNAP's multi-line review records (BeerAdvocate, RateBeer, Amazon fine foods'
    foods.txt): the first line did not split, and the one-column error said to force a reader with
    --format, which none does. The message gives the `awk` line that writes one
    user_id,item_id,rating,timestamp line per record, from the keys the file's first records
    show (a RateBeer `13/20` rating is written as its numerator: a value on a 20-point scale)."""
    if not _KEY_VALUE_LINE.match(header[0]):
        return
    try:
        lines = [line for line in _header_lines(Path(path))[:200] if line.strip()]
    except (DataError, OSError):
        return
    if not all(_KEY_VALUE_LINE.match(line) for line in lines):
        return
    values = {line.split(": ", 1)[0]: line.split(": ", 1)[1].strip() for line in reversed(lines)}
    keys = {role: next((k for k in spellings if k in values), None) for role, spellings in _RECORD_KEYS.items()}
    if keys["user_id"] is None or keys["item_id"] is None:
        return
    roles = [role for role, key in keys.items() if key is not None]
    fraction = keys["rating"] is not None and "/" in values[keys["rating"]]
    reads = " ".join(
        f'k == "{keys[role]}" {{{role[0]} = {"q(v)" if role in ("user_id", "item_id") else "v"}}}' for role in roles
    )
    numerator = ' sub(/\\/.*/, "", r);' if fraction else ""
    printed = ", ".join(role[0] for role in roles)
    gzipped = _read_head_is_gzip(path)
    awk = (
        ("gzip -dc FILE | " if gzipped else "")
        + "awk -v OFS=, 'function q(s) {gsub(/\"/, \"\\\"\\\"\", s); return \"\\\"\" s \"\\\"\"} "
        f'BEGIN {{print "{",".join(roles)}"}} {{p = index($0, ": "); k = substr($0, 1, p - 1); v = substr($0, p + 2)}} '
        f'{reads} /^$/ && i != "" {{{numerator} print {printed}; u = i = r = t = ""}} '
        f'END {{if (i != "") {{{numerator} print {printed}}}}}\'{"" if gzipped else " FILE"} > NEW.csv'
    )
    raise DataError(
        f"{path}: multi-line review records, one `key: value` line per field (first line {header[0].strip()[:40]!r}), "
        "as SNAP's BeerAdvocate, RateBeer and Amazon fine foods dumps are written: such records are not read; "
        f"write one {','.join(roles)} line per record first, e.g. `{awk}`, and ingest NEW.csv"
        + (" (its ratings are the numerators of values such as "
           f"{values[keys['rating']]!r})" if fraction else "")
    )


_DEDUPLICATED = re.compile(r"^_duplicated_\d+$")  # polars' name for a repeated header name ('' here)


def _refuse_id_lists(path: Path | str, row: list[str]) -> None:
    """DataError for a headerless file whose first row holds lists of ids in a field: a log of
    one row per impression or session (MIND's behaviors.tsv: id, user, time, history, impressions)
    is no flat (user, item) log, and the header line `_header_example` would suggest takes its
    impression id for the user and its user for the item."""
    lists = [n for n, value in enumerate(row) if _ID_LIST.match(value.strip())]
    if lists:
        shown = ", ".join(f"column {n + 1} ({row[n].strip()[:30]!r})" for n in lists[:2])
        raise DataError(
            f"{path}: {shown} {'hold lists' if len(lists) > 1 else 'holds a list'} of ids separated "
            "by spaces, as an impression or session log "
            "writes one row per impression (MIND's behaviors.tsv): ingest reads one user and one item "
            "per line; write one line per (user, item) first (e.g. polars' str.split and explode on "
            "that column), with a header line naming the columns"
        )


_PAIR = re.compile(r"^\(\s*\d+\s*,\s*\d+\s*\)$")  # a Python tuple written as text: `(0,25)`


def _refuse_sampled_negatives(path: Path | str, row: list[str]) -> None:
    """DataError for a headerless file whose lines start with a `(user,item)` pair followed by item
    ids: NCF's `ml-1m.test.negative` / `pinterest-20.test.negative` (the 99 negatives sampled for
    each test pair), no interaction log. The header other errors suggest read `(0,25)` as the user
    and the first negative as the item the user chose, silently."""
    if len(row) > 1 and _PAIR.match(row[0].strip()) and _is_number(row[1].strip()):  # (polars renames repeats)
        raise DataError(
            f"{path}: its lines start with a (user, item) pair in parentheses ({row[0].strip()!r}) followed by "
            f"{len(row) - 1} item ids, the layout of NCF's `.test.negative` files (items sampled as "
            "negatives for each test pair), not an interaction log: ingest the interactions instead "
            "(NCF's `.train.rating`, and its `.test.rating` for the held-out pairs: user, item, rating, timestamp)"
        )
