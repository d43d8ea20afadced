"""JSON values that stand for one plain value: MongoDB Extended JSON's wrappers (read as the value
they wrap) and objects holding an id (refused with the `jq` line that lifts it out).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl

from recsys.data.readers.base import _LINE, _MAP_FIELDS
from recsys.data.readers.frames import _whole_lines
from recsys.data.schema import ITEM, USER
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


_B64 = r"((?:[A-Za-z0-9+=]|\\?/)*)"  # base64 text; JSON may escape its slashes (`\/`)
_SUBTYPE = r'"([0-9A-Fa-f]{1,2})"'
_BINARY_FORMS = (
    (r'\{\s*"\$binary"\s*:\s*\{\s*"base64"\s*:\s*"' + _B64 + r'"\s*,\s*"subType"\s*:\s*' + _SUBTYPE + r"\s*\}\s*\}", False),
    (r'\{\s*"\$binary"\s*:\s*\{\s*"subType"\s*:\s*' + _SUBTYPE + r'\s*,\s*"base64"\s*:\s*"' + _B64 + r'"\s*\}\s*\}', True),
    (r'\{\s*"\$binary"\s*:\s*"' + _B64 + r'"\s*,\s*"\$type"\s*:\s*' + _SUBTYPE + r"\s*\}", False),
    (r'\{\s*"\$type"\s*:\s*' + _SUBTYPE + r'\s*,\s*"\$binary"\s*:\s*"' + _B64 + r'"\s*\}', True),
)  # fmt: skip
"""MongoDB Extended JSON's binary value, as (pattern, whether the subtype comes first): canonical
`{"$binary": {"base64": "...", "subType": "04"}}` (either key first) and the legacy
`{"$binary": "...", "$type": "00"}`. Each pattern captures the base64 text and the subtype;
`_unwrap_extended` writes the value as one string, BINARY_MARK + subtype + ":" + base64, which
`binary_id_text` spells as text."""
_BINARY = re.compile("|".join(pattern for pattern, _ in _BINARY_FORMS))
BINARY_MARK = "$binary:"


def _binary(value: object) -> bool:
    """Whether a decoded JSON value is one Extended JSON binary value (`_BINARY`)."""
    if not isinstance(value, dict) or "$binary" not in value:
        return False
    inner = value["$binary"]
    if isinstance(inner, dict):
        return len(value) == 1 and set(inner) == {"base64", "subType"}
    return isinstance(inner, str) and set(value) == {"$binary", "$type"}


def _extended(value: object) -> bool:
    """Whether a decoded JSON value is one MongoDB Extended JSON wrapper (`_EXTENDED_KEYS`, `_BINARY`)."""
    return (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _EXTENDED_KEYS) or _binary(value)


def _has_extended(path: Path) -> bool:
    """Whether the first lines of `path` (those its keys are chosen from) hold an Extended JSON wrapper."""
    return any(
        _EXTENDED.search(text) or _BINARY.search(text)
        for text in (line.decode("utf-8", "replace") for line in _whole_lines(path))
    )


def _binary_to_marked(line: pl.Expr) -> pl.Expr:
    """Each `_BINARY_FORMS` value of the text `line` as the JSON string `"$binary:SUBTYPE:BASE64"`."""
    for pattern, subtype_first in _BINARY_FORMS:
        line = line.str.replace_all(pattern, '"$$binary:${1}:${2}"' if subtype_first else '"$$binary:${2}:${1}"')
    return line


def binary_id_text(name: str) -> pl.Expr:
    """Column `name` with each `BINARY_MARK` value (an Extended JSON binary, see `_unwrap_extended`)
    spelt as text: subtype 4 (a UUID) in its canonical spelling (`9f1c2d3e-4b5a-...`, as the
    Parquet reader spells a UUID column), any other subtype as the lowercase hex of its bytes.
    Base64 that does not decode gives no id (the row is quarantined as missing its id, its text
    kept there). Other values are left as they are."""
    column = pl.col(name)
    marked = column.str.starts_with(BINARY_MARK)
    fields = pl.when(marked).then(column).str.split_exact(":", 2)
    subtype, body = fields.struct.field("field_1"), fields.struct.field("field_2")
    hexed = body.str.replace_all(r"\\/", "/").str.decode("base64", strict=False).bin.encode("hex")
    parts = [hexed.str.slice(start, length) for start, length in ((0, 8), (8, 4), (12, 4), (16, 4), (20, 12))]
    uuid = pl.concat_str(parts, separator="-")
    spelt = pl.when(subtype.str.strip_chars_start("0").eq("4") & hexed.str.len_chars().eq(32)).then(uuid).otherwise(hexed)
    return pl.when(marked).then(spelt).otherwise(column).alias(name)


def _unwrap_extended(lines: pl.LazyFrame) -> pl.LazyFrame:
    """`lines` with each MongoDB Extended JSON wrapper replaced by the value it wraps, so
    `{"user_id": {"$oid": "65a1..."}, "ts": {"$date": {"$numberLong": "1704103200000"}}}` reads as
    `{"user_id": "65a1...", "ts": "1704103200000"}`: a mongoexport line is one interaction, but its ids
    and times were objects, every line quarantined as malformed_json (relaxed mode) or the file
    refused as nested records (canonical mode, where every value is wrapped). Two passes: a `$date`
    wraps a `$numberLong` (milliseconds, read as such from 1e11 on: 1973 and later). Only for files
    whose first lines hold a wrapper (`_has_extended`): the common path runs no regex over the text."""
    unwrapped = pl.col(_LINE).str.replace_all(_EXTENDED.pattern, "${1}").str.replace_all(_EXTENDED.pattern, "${1}")
    return lines.with_columns(_binary_to_marked(unwrapped))


def first_records(path: Path, limit: int = 20) -> list[dict]:
    """The JSON objects among the first `limit` whole lines of `path` (lines that are no JSON object
    skipped): what the up-front refusals of a JSON Lines file look at before the vectorised read."""
    records = []
    for line in _whole_lines(path, limit=limit):
        try:
            record = json.loads(line)
        except _NOT_JSON:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _refuse_nested_values(path: Path, mapping: dict[str, str]) -> None:
    """DataError for JSON Lines whose mapped keys hold an object on every one of the first lines
    (`{"user": {"id": 1}, "item": {"id": "a"}, "ts": 1704103200}`, as an API's event export nests
    them): each line is one interaction, but every one was quarantined as malformed_json, the
    error saying only "flatten them first, e.g. with jq". The message names the keys and gives the
    `jq` line that lifts each one's id out under the same key, so the same columns are read."""
    records = first_records(path)
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


def _refuse_binary_values(path: Path, mapping: dict[str, str]) -> None:
    """DataError naming the key when a key read as the time, weight or event holds a MongoDB
    Extended JSON binary value on the first lines: ids are spelt as hex (`binary_id_text`), but
    bytes are no time, number or event name, and the wrapper read as text would be quarantined
    row by row as a bad value."""
    roles = {src: role for role, src in mapping.items() if role not in (USER, ITEM)}
    for record in first_records(path):
        for key, role in roles.items():
            if _binary(record.get(key)):
                raise DataError(
                    f"{path}: key {key!r}, read as the {_MAP_FIELDS[role]}, holds MongoDB binary values "
                    f"({json.dumps(record[key])[:60]}), which are no {_MAP_FIELDS[role]}: export the field as "
                    "its value (a number, a date or text), or name another key with {option}",
                    setting=f"data.columns.{_MAP_FIELDS[role]}",
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
