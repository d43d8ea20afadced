"""JSON values that stand for one plain value: MongoDB Extended JSON's wrappers (read as the value
they wrap) and objects holding an id (refused with the `jq` line that lifts it out).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from recsys.data.readers.base import _LINE
from recsys.data.readers.frames import _whole_lines
from recsys.errors import DataError

_NOT_JSON = (json.JSONDecodeError, UnicodeDecodeError, RecursionError)
"""What `json.loads` raises on a line that is no JSON text it can read: a line nested deeper than
Python's recursion limit (`[[[[...`) is such a line too, quarantined later as malformed_json,
rather than an 'unexpected RecursionError' ending the command."""


_JQ_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a key jq's `.name` spells as it is


_EXTENDED_KEYS = ("$oid", "$date", "$numberLong", "$numberInt", "$numberDouble", "$numberDecimal")
"""MongoDB Extended JSON's wrappers of one plain value (mongoexport writes every ObjectId, date and,
in canonical mode, every number so): `{"$oid": "65a1..."}`, `{"$date": "2024-01-01T10:00:00Z"}`,
`{"$date": {"$numberLong": "1704103200000"}}`, `{"$numberLong": "77"}`."""
_EXTENDED = re.compile(
    r'\{\s*"\$(?:' + "|".join(k[1:] for k in _EXTENDED_KEYS) + r')"\s*:\s*("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*)\s*\}'
)
"""One such wrapper, its value captured (a JSON string or number): a quote inside a JSON string is
escaped (`\\"`), so a wrapper spelled inside a text value is never matched."""


def _extended(value: object) -> bool:
    """Whether a decoded JSON value is one MongoDB Extended JSON wrapper (`_EXTENDED_KEYS`)."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _EXTENDED_KEYS


def _has_extended(path: Path) -> bool:
    """Whether the first lines of `path` (those its keys are chosen from) hold an Extended JSON wrapper."""
    return any(_EXTENDED.search(line.decode("utf-8", "replace")) for line in _whole_lines(path))


def _unwrap_extended(lines: pl.LazyFrame) -> pl.LazyFrame:
    """`lines` with each MongoDB Extended JSON wrapper replaced by the value it wraps, so
    `{"user_id": {"$oid": "65a1..."}, "ts": {"$date": {"$numberLong": "1704103200000"}}}` reads as
    `{"user_id": "65a1...", "ts": "1704103200000"}`: a mongoexport line is one interaction, but its ids
    and times were objects, every line quarantined as malformed_json (relaxed mode) or the file
    refused as nested records (canonical mode, where every value is wrapped). Two passes: a `$date`
    wraps a `$numberLong` (milliseconds, read as such from 1e11 on: 1973 and later). Only for files
    whose first lines hold a wrapper (`_has_extended`): the common path runs no regex over the text."""
    unwrapped = pl.col(_LINE).str.replace_all(_EXTENDED.pattern, "${1}").str.replace_all(_EXTENDED.pattern, "${1}")
    return lines.with_columns(unwrapped)


def _refuse_nested_values(path: Path, mapping: dict[str, str]) -> None:
    """DataError for JSON Lines whose mapped keys hold an object on every one of the first lines
    (`{"user": {"id": 1}, "item": {"id": "a"}, "ts": 1704103200}`, as an API's event export nests
    them): each line is one interaction, but every one was quarantined as malformed_json, the
    error saying only "flatten them first, e.g. with jq". The message names the keys and gives the
    `jq` line that lifts each one's id out under the same key, so the same columns are read."""
    records = []
    for line in _whole_lines(path, limit=20):
        try:
            record = json.loads(line)
        except _NOT_JSON:
            continue
        if isinstance(record, dict):
            records.append(record)
    nested: dict[str, dict] = {}
    for key in dict.fromkeys(mapping.values()):
        values = [r[key] for r in records if key in r]
        if values and all(isinstance(v, dict) and not _extended(v) for v in values):
            nested[key] = values[0]
    if not nested:
        return
    steps, shown = [], []
    for key, value in nested.items():
        path_to = _leaf(value)
        shown.append(f"{key!r} ({json.dumps(value)[:60]})")
        if path_to is not None:
            here = _jq_path([key])
            steps.append(f"{here} = {_jq_path([key, *path_to])}")
    fix = (
        f"lift the value out first, e.g. `jq -c '{' | '.join(steps)}' FILE > NEW.jsonl`, and ingest NEW.jsonl"
        if len(steps) == len(nested)
        else "write the value each key stands for in its place first (e.g. with jq), and ingest that file"
    )
    raise DataError(
        f"{path}: key(s) {', '.join(shown)} hold an object on every line, not one string or number: ingest reads "
        f"one plain value a key; {fix}"
    )


def _leaf(value: object) -> list[str] | None:
    """The keys leading from a nested object to the one value it stands for: its `id`, else its one
    key ending in `id`, else its only key (followed down while the value is an object)."""
    steps: list[str] = []
    while isinstance(value, dict):
        ids = [k for k in value if k.lower().endswith("id")]
        key = "id" if "id" in value else ids[0] if len(ids) == 1 else next(iter(value)) if len(value) == 1 else None
        if key is None:
            return None
        steps.append(key)
        value = value[key]
    return steps if not isinstance(value, list) else None


def _jq_path(keys: list[str]) -> str:
    """jq's path to `keys` (`.user.id`; `.["user id"]` for a key `.name` cannot spell)."""
    return "".join(f".{k}" if _JQ_NAME.match(k) else f"[{json.dumps(k)}]" for k in keys)
