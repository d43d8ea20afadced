"""JSON Lines: each line read as one string and decoded by polars, so a truncated or garbage line
becomes one `malformed_json` row instead of failing the file. Keys are found in the head and,
for keys that first appear later (schema drift), in windows sampled through the file; renamed
and late keys get a note.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import polars as pl

from recsys.config import ColumnMap
from recsys.data.readers.base import (
    _JSON,
    _LINE,
    _MAP_FIELDS,
    _NO_SEPARATOR,
    _OBJECT_LINE,
    _OK,
    AUTO_NAMES,
    BOOLEAN_ID,
    DUPLICATE_KEY,
    LATE_KEY,
    MALFORMED_JSON,
    READ_ERROR,
    ROW,
    SOURCE_FILE,
    DataFile,
    RawSource,
)
from recsys.data.readers.delimited import _scan_delimited
from recsys.data.readers.frames import (
    _concat,
    _local,
    _same_roles,
    _select,
    _unmapped_files,
    _whole_lines,
    open_decompressed,
)
from recsys.data.readers.json_values import (
    _JQ_NAME,
    _NOT_JSON,
    _extended,
    _has_extended,
    _refuse_binary_values,
    _refuse_nested_values,
    _unwrap_extended,
    binary_id_text,
    first_records,
)
from recsys.data.readers.naming import map_columns
from recsys.data.readers.parquet_files import PARTITION_DAY, folder_days
from recsys.data.readers.sniff import _base_name, _json_array_error
from recsys.data.schema import EVENT, ITEM, TIME, USER, WEIGHT
from recsys.errors import DataError

_KEY_SEARCH_BYTES = 64 << 20
"""How far the key sniffing reads, line by line, when the sniff window held no JSON object."""


def _jsonl_keys(label: Path | str, first: Path) -> list[str]:
    """The keys of the first lines' objects. When the sniff window holds none (a truncated record
    of a long review text fills it), lines are read on, up to 1000 or _KEY_SEARCH_BYTES: such a
    record is one malformed_json row, not a reason to refuse the file as holding no JSON."""
    keys: dict[str, None] = {}
    records: list[dict] = []
    lines = _whole_lines(first)
    if lines and lines[0].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        raise _json_array_error(label)
    further = [] if len(lines) >= 1000 else [lambda: _whole_lines(first, budget=_KEY_SEARCH_BYTES)[len(lines) :]]
    for attempt in (lambda: lines, *further):
        for line in attempt():
            try:
                record = json.loads(line)
            except _NOT_JSON:
                continue  # malformed lines are quarantined later
            if not isinstance(record, dict):
                continue
            keys.update(dict.fromkeys(record))
            records.append(record)
        if keys:
            break
    _refuse_nested_only(label, records)
    if not keys and lines and lines[0].strip(b"\xef\xbb\xbf \t\r\n") == b"{":
        raise DataError(
            f"{label}: JSON objects spread over several lines (pretty-printed), not JSON Lines (one "
            "object a line); convert it first, e.g. `jq -c . FILE > NEW.jsonl`"
        )
    if not keys:
        raise DataError(
            f"{label}: no JSON object in the first lines (Python dict literals with single quotes, "
            "as in some Steam and Amazon 2014 dumps, are not JSON: convert each line with "
            "json.dumps(ast.literal_eval(line)) first)"
        )
    return list(keys)


def _refuse_nested_only(label: Path | str, records: list[dict]) -> None:
    """DataError for JSON Lines whose every key holds an object or a list: a document of nested
    records (Spotify's Million Playlist Dataset slice, `{"info": {...}, "playlists": [{"pid": 0,
    "tracks": [...]}]}`, after the `jq -c .` the pretty-printed refusal gives), where no line is an
    interaction and the missing-column hint offered `--user-col info --item-col playlists`. The
    message names the keys and the `jq` line that writes one line per (user, item) where the first
    record shows a list of objects holding a list of objects (each playlist's tracks), else the one
    that writes the first list's elements one a line."""
    if not records or any(not isinstance(v, dict | list) or _extended(v) for record in records for v in record.values()):
        return
    first = records[0]
    shown = ", ".join(repr(k) for k in list(first)[:4])
    outer = next((k for k, v in first.items() if isinstance(v, list) and v and isinstance(v[0], dict)), None)
    example = ""
    if outer is not None and _JQ_NAME.match(outer):
        element = first[outer][0]
        inner = next((k for k, v in element.items() if isinstance(v, list) and v and isinstance(v[0], dict)), None)
        scalars = [k for k, v in element.items() if not isinstance(v, dict | list) and _JQ_NAME.match(k)]
        example = f"`jq -c '.{outer}[]' FILE > NEW.jsonl` writes the elements of {outer!r} one a line"
        if inner is not None and _JQ_NAME.match(inner) and scalars:
            user = next((k for k in scalars if "id" in k.lower()), scalars[0])
            leaves = [k for k, v in element[inner][0].items() if not isinstance(v, dict | list) and _JQ_NAME.match(k)]
            item = next((k for k in leaves if re.search(r"uri|id", k, re.IGNORECASE)), leaves[0] if leaves else None)
            if item is not None:
                example = (
                    f"`jq -c '.{outer}[] | .{user} as $u | .{inner}[] | {{user_id: $u, item_id: .{item}}}' FILE > "
                    f"NEW.jsonl` writes one line per {user} and {item} of its {inner}"
                )
    raise DataError(
        f"{label}: every key of its first lines holds a nested object or list ({shown}), so no line is one "
        "interaction: ingest reads one user and one item per line; write one JSON line per (user, item) first"
        + (f", e.g. {example}, and ingest NEW.jsonl" if example else "")
    )


def _refuse_event_lists(path: Path, named: set[str] | None) -> None:
    """DataError for JSON Lines holding a session a line, its events in a list of objects (OTTO's
    `{"session": 42, "events": [{"aid": 0, "ts": 1661200010000, "type": "clicks"}, ...]}`): the
    missing-column hint offered `--item-col NAME`, which no option satisfies, and `--item-col aid`
    (found inside the list) quarantined every line as `missing_item`. Checked where no user or
    item was found (`named` None) or where a named one is no top-level key but a key of the list's
    objects (`named`); the message gives the `jq` line that writes one line per event, the line's
    other values beside it."""
    if named is not None and not named:
        return
    for record in first_records(path):
        lists = [k for k, v in record.items() if isinstance(v, list) and v and all(isinstance(e, dict) for e in v)]
        inner = {k: list(record[k][0]) for k in lists}
        outer = next((k for k in lists if named is None or named & set(inner[k])), None)
        if outer is None:
            return
        scalars = [k for k, v in record.items() if not isinstance(v, dict | list) and _JQ_NAME.match(k)]
        keep = f"{{{', '.join(scalars)}}} as $s | " if scalars else ""
        step = f".{outer}[]" if _JQ_NAME.match(outer) else f".[{json.dumps(outer)}][]"
        example = f"`jq -c '{keep}{step}{' | $s + .' if scalars else ''}' FILE > NEW.jsonl`"
        shown = ", ".join(repr(k) for k in inner[outer][:4])
        raise DataError(
            f"{path}: key {outer!r} holds a list of objects ({shown}) on its lines, so a line is a list of "
            "events, not one interaction: ingest reads one user and one item per line; write one JSON line "
            f"per element first, e.g. {example} (each {outer!r} element with "
            f"{', '.join(repr(k) for k in scalars) or 'nothing'} beside it), and ingest NEW.jsonl"
        )


def _named_keys(path: Path, keys: list[str], columns: ColumnMap | None) -> list[str]:
    """`keys` (those of the first lines) plus the keys a column option names that occur later in
    the file: JSON Lines records need not all carry the same keys (a `rating` only on rate
    events), and refusing `--weight-col rating` as "no column" would be wrong. Costs a pass over
    the file only when a named key is not among the first lines' keys."""
    named = [getattr(columns, attr) for attr in _MAP_FIELDS.values()] if columns else []
    missing = [name for name in named if name is not None and name not in keys]
    if not missing:
        return keys
    found = (
        _jsonl_lines(path)
        .select(pl.col(_LINE).str.contains(f'"{re.escape(name)}"\\s*:').any().alias(name) for name in missing)
        .collect()
        .row(0, named=True)
    )
    return keys + [name for name in missing if found[name]]


_KEY_SAMPLE_BYTES = 2 << 20
_KEY_WINDOW = 64 * 1024


def _late_roles(mapping: dict[str, str], columns: ColumnMap | None) -> list[str]:
    """The roles (time, weight, event) neither mapped nor named by a column option."""
    named = columns or ColumnMap()
    return [c for c in (TIME, WEIGHT, EVENT) if c not in mapping and getattr(named, _MAP_FIELDS[c]) is None]


def _late_key_note(path: Path, canon: str, key: str, where: str) -> str:
    return (
        f"{path}: key {key!r} occurs only past the first lines, from which the columns were chosen "
        f"(first seen {where}), so it is not read as the {_MAP_FIELDS[canon]}; to read it, pass "
        f"--{_MAP_FIELDS[canon]}-col {key} (data.columns.{_MAP_FIELDS[canon]})"
    )


def _late_keys(
    path: Path, mapping: dict[str, str], columns: ColumnMap | None, budget: int
) -> tuple[list[str], list[str]]:
    """A note for each role (time, weight, event) left unmapped whose key (an AUTO_NAMES one)
    occurs past the first lines, the ones the columns were chosen from (`_whole_lines`): a
    `rating` only on the rate events further down would otherwise be passed over without a word.
    The key is not taken (rows without it would all be quarantined as bad_weight, which the user
    did not ask for); the note names the option that takes it.

    The file past those lines is sampled, not read whole: `budget` bytes in windows spread evenly
    through it (all of it when it is smaller), searched with one regex for the role's names and
    confirmed on the line with `json.loads`, so a key seen only in a stretch no window touches
    is still missed. Costs ~20 ms on a large file; a full pass would cost a quarter of the
    validation. So the sample is only the quick look: the roles it leaves unfound (returned
    beside the notes) are looked for on every line as the file is decoded (LATE_KEY)."""
    roles = _late_roles(mapping, columns)
    if not roles:
        return [], []
    by_name = {name: canon for canon in roles for name in AUTO_NAMES[canon]}
    spelled = b"|".join(re.escape(name.encode()).replace(b"_", b"[_ -]") for name in by_name)
    pattern = re.compile(b'"(?:' + spelled.lower() + rb')"\s*:')  # on lower-cased text: 2.5x faster
    found: dict[str, tuple[str, int]] = {}
    for offset, chunk in _windows(path, sum(map(len, _whole_lines(path))), budget):
        if len(found) == len(roles):
            break  # each role's key found: later windows could only repeat them
        for match in pattern.finditer(chunk.lower()):
            if len(found) == len(roles):
                break  # each role's key found: the other matches could only repeat them
            start = chunk.rfind(b"\n", 0, match.start()) + 1
            end = chunk.find(b"\n", match.end())
            try:
                record = json.loads(chunk[start : end if end >= 0 else len(chunk)])
            except _NOT_JSON:
                continue
            for key in record if isinstance(record, dict) else ():
                canon = by_name.get(_base_name(key))
                if canon is not None and canon not in found:
                    found[canon] = (key, offset + start)
    notes = [_late_key_note(path, canon, key, f"near byte {at}") for canon, (key, at) in found.items()]
    return notes, [canon for canon in roles if canon not in found]


def _key_spellings(path: Path, roles: Iterable[str]) -> list[str]:
    """The quoted spellings of the AUTO_NAMES of `roles` as a line's text may hold them (matched
    ignoring ASCII case; `_base_name` reads '-' and ' ' as '_', so `"play-count"` is one too),
    less those the first lines of `path` already hold: the mapped keys themselves, and a name
    that recurs inside values or nested objects, which would flag every line for nothing."""
    names = {name for canon in roles for name in AUTO_NAMES[canon]}
    spellings = {f'"{name.replace("_", sep)}"' for name in names for sep in ("_", "-", " ")}
    head = b"".join(_whole_lines(path)).decode("utf-8", "replace").lower()
    return sorted(s for s in spellings if s.lower() not in head)


_LATE_CANDIDATES = 1000
"""Flagged lines per file whose keys are confirmed: a spelling can occur inside a value or a
nested object (`"type"`), so the first lines that hold one are parsed, not the flag trusted."""


_WITHOUT = {
    USER: "quarantined as missing_user",
    ITEM: "quarantined as missing_item",
    TIME: "accepted without a time",
    WEIGHT: "quarantined as bad_weight",
    EVENT: "accepted without an event",
}
"""What becomes of a JSON Lines row whose line lacks the key mapped for a role."""


def _renamed_key_note(path: Path, canon: str, mapped: str, key: str, row: int) -> str:
    role = _MAP_FIELDS[canon]
    return (
        f"{path}: line {row} has no key {mapped!r} (read as the {role}) but has {key!r}, another name for "
        f"the {role}: lines like it are {_WITHOUT[canon]}; write one key for "
        f"the {role} throughout, or ingest such lines on their own with --{role}-col {key} "
        f"(data.columns.{role})"
    )


def _confirm_late_keys(
    files: list[tuple[DataFile, Path, dict[str, str], list[str]]], per_file: bool
) -> Callable[[pl.DataFrame], list[str]]:
    """`RawSource.late_keys` for JSON Lines `files` (file, path, mapping, roles the sample left
    unfound): reads the first flagged lines of each file again and names each unfound role's key
    that one of them holds at the top level, and each mapped role whose key a line lacks while
    holding another name for it (a key renamed midway: `timestamp` -> `ts` would leave the rest
    of the file without times, and not a word said)."""

    def confirm(flagged: pl.DataFrame) -> list[str]:
        notes = []
        for f, p, mapping, roles in files:
            rows = flagged.filter(pl.col(SOURCE_FILE) == f.name) if per_file else flagged
            wanted = rows.get_column(ROW).head(_LATE_CANDIDATES)
            if wanted.is_empty():
                continue
            lines = _jsonl_lines(p).filter(pl.col(ROW).is_in(wanted.implode())).collect()
            found, renamed = _role_keys(lines.select(ROW, _LINE).iter_rows(), mapping, roles)
            notes += [_late_key_note(p, canon, key, f"on line {row}") for canon, (key, row) in found.items()]
            notes += [_renamed_key_note(p, c, mapping[c], key, row) for c, (key, row) in renamed.items()]
        return notes

    return confirm


def _role_keys(
    lines: Iterable[tuple[int, str | bytes]], mapping: dict[str, str], roles: Iterable[str]
) -> tuple[dict[str, tuple[str, int]], dict[str, tuple[str, int]]]:
    """For JSON Lines `lines` (line number, text): the first (key, line) of each of `roles` (not
    mapped), and of each mapped role whose key a line lacks while holding another of its names."""
    roles = set(roles)
    by_name = {name: canon for canon in (*roles, *mapping) for name in AUTO_NAMES[canon]}
    found: dict[str, tuple[str, int]] = {}
    renamed: dict[str, tuple[str, int]] = {}
    for row, line in lines:
        try:
            record = json.loads(line)
        except _NOT_JSON:
            continue
        for key in record if isinstance(record, dict) else ():
            canon = by_name.get(_base_name(key))
            if canon in roles and canon not in found:
                found[canon] = (key, row)
            elif canon in mapping and mapping[canon] not in record and canon not in renamed:
                renamed[canon] = (key, row)
    return found, renamed


def _renamed_in_head(path: Path, mapping: dict[str, str]) -> list[str]:
    """A note for each mapped role whose key one of the first lines (those the columns were chosen
    from) lacks while holding another name for it (`user_id` on some, `userId` on others): the
    columns take one name, and the other lines' values would be left out."""
    _, renamed = _role_keys(enumerate(_whole_lines(path), start=1), mapping, ())
    return [_renamed_key_note(path, c, mapping[c], key, row) for c, (key, row) in renamed.items()]


def _windows(path: Path, head: int, budget: int) -> Iterable[tuple[int, bytes]]:
    """(offset, whole lines) of the file past its first `head` bytes: all of it when it is at most
    `budget` bytes, else `budget` bytes in _KEY_WINDOW windows spread evenly (a gzip'd file: its
    first `budget` bytes past the head, as seeking in it means decompressing up to there)."""
    with open_decompressed(path) as fh:
        gzipped = not isinstance(fh, io.BufferedReader)
        size = None if gzipped else os.fstat(fh.fileno()).st_size
        rest = budget if size is None else size - head
        if rest <= budget:
            fh.seek(head)
            yield head, fh.read(budget)
            return
        n = budget // _KEY_WINDOW
        for k in range(n):
            offset = head + k * (rest - _KEY_WINDOW) // max(n - 1, 1)
            fh.seek(offset)
            chunk = fh.read(_KEY_WINDOW)
            first, last = chunk.find(b"\n") + 1, chunk.rfind(b"\n")
            if 0 < first <= last:
                yield offset + first, chunk[first:last]


def _jsonl_lines(path: Path) -> pl.LazyFrame:
    """(ROW = line number, line) for the non-blank lines of a file. Blank lines keep their place in
    the numbering but are no rows (they are not counted in rows_in)."""
    lines = _scan_delimited(path, _NO_SEPARATOR, False, None, [_LINE], numbered=True)
    return lines.filter(pl.col(_LINE).is_not_null() & (pl.col(_LINE).str.strip_chars() != ""))


def _decode_lines(
    lines: pl.LazyFrame,
    ok: pl.Expr,
    dtype: pl.Struct,
    mapping: dict[str, str],
    file: DataFile,
    per_file: bool,
    spellings: list[str],
    flagged: bool,
) -> pl.LazyFrame:
    """Decode the lines where `ok` holds into the mapped fields (as strings); the others get null
    fields and READ_ERROR = malformed_json. With `spellings` (see `_key_spellings`), LATE_KEY says
    which lines' text holds one: a substring search in the same pass as the decode, so a key the
    sample missed is still seen, for a fraction of what reading the file again would cost.
    `flagged`: whether the source has LATE_KEY at all (every file's frame then does, to concatenate)."""
    decoded = (
        lines.with_columns(ok.alias(_OK))
        .with_columns(pl.when(pl.col(_OK)).then(pl.col(_LINE)).str.json_decode(dtype).alias(_JSON))
        .with_columns(pl.col(_JSON).struct.field(src) for src in dtype.to_schema())
    )
    if WEIGHT in mapping:
        decoded = decoded.with_columns(_flag_weight(mapping[WEIGHT]))
    # Lines that may name a key read twice, or hold `true` / `false` / `-0` under an id key, are
    # read again by Python's json (`_line_checks`): one regex search and a comparison or two on
    # every line (about a fifth more CPU for a JSON Lines validation), a parse on those few.
    keys = list(dict.fromkeys(mapping.values()))
    ids = [mapping[c] for c in (USER, ITEM) if c in mapping]
    twice = "|".join(f'"{re.escape(k)}".*"{re.escape(k)}"' for k in keys)
    suspect = pl.any_horizontal(pl.col(_LINE).str.contains(twice), *(pl.col(k).is_in(["true", "false", "-0"]) for k in ids))
    checked = (
        pl.when(pl.col(_OK) & suspect)
        .then(pl.col(_LINE))
        .map_batches(lambda lines: _line_checks(lines, keys, ids), return_dtype=_checks(len(keys)), is_elementwise=True)
    )
    decoded = decoded.with_columns(checked.alias(_CHECK)).with_columns(
        pl.when(pl.col(_CHECK).struct.field(f"zero_{n}")).then(pl.lit("0")).otherwise(pl.col(k)).alias(k)
        for n, k in enumerate(ids)
    )
    decoded = decoded.with_columns(  # a key given twice shows every value it was given (see _line_checks)
        pl.coalesce(pl.col(_CHECK).struct.field(f"values_{n}"), pl.col(k)).alias(k) for n, k in enumerate(keys)
    )
    error = (
        pl.when(pl.col(_OK))
        .then(pl.col(_CHECK).struct.field("reason"))
        .otherwise(pl.lit(MALFORMED_JSON, dtype=pl.String))
    )
    found = pl.col(_LINE).str.contains_any(spellings, ascii_case_insensitive=True) if spellings else pl.lit(False)
    late = (found.alias(LATE_KEY),) if flagged else ()
    return _select(decoded, mapping, file, per_file, (error.alias(READ_ERROR), *late))


def _flag_weight(key: str) -> pl.Expr:
    """A weight key holding JSON's `true` / `false` (a `clicked` flag, as BigQuery exports a BOOL)
    as 1 / 0, as a Parquet boolean weight reads: decoded as text they were "true" and "false", every
    row quarantined as bad_weight, even after the warning that names such a flag said to read it
    with `--weight-col clicked`."""
    value = pl.col(key)
    return pl.when(value == "true").then(pl.lit("1")).when(value == "false").then(pl.lit("0")).otherwise(value).alias(key)


_CHECK = "__check"


def _checks(n_keys: int) -> pl.Struct:
    """What `_line_checks` says of a line: READ_ERROR (DUPLICATE_KEY, BOOLEAN_ID) or null; for
    each id key (user, item) whether its value is the number zero written `-0` / `-0.0`; and for
    each mapped key (`values_<n>`) given more than once with other values, every value it was
    given as a JSON array (`[3, 5]`), which the quarantine row shows in place of the first."""
    fields = {"reason": pl.String, "zero_0": pl.Boolean, "zero_1": pl.Boolean}
    return pl.Struct({**fields, **{f"values_{n}": pl.String for n in range(n_keys)}})


def _line_checks(lines: pl.Series, keys: list[str], ids: list[str]) -> pl.Series:
    """`_checks` for JSON Lines `lines` (null: not suspect, nothing to say), read by Python's json
    with every key kept: a top-level key of `keys` given twice with other values is
    DUPLICATE_KEY (polars reads the first, Python's json and jq the last: neither is said to be
    the one meant); an id key (`ids`) holding a boolean is BOOLEAN_ID; an id that is the number
    -0 (polars spells it "-0") is the id 0, as `0` and `0.0` are (a JSON string "-0" stays)."""
    reasons: dict[int, str] = {}
    given: list[dict[int, str]] = [{} for _ in keys]  # per key: row -> every value, as a JSON array
    zeros: tuple[list[int], list[int]] = ([], [])
    for row in lines.is_not_null().arg_true().to_list():
        try:
            pairs = json.loads(lines[row], object_pairs_hook=list)
        except (*_NOT_JSON, ValueError):
            continue  # polars decoded it: a quirk of Python's parser is no reason to refuse it
        if not isinstance(pairs, list):
            continue
        values: dict[str, list[object]] = {}
        for key, value in pairs:
            if key in keys:
                values.setdefault(key, []).append(value)
        twice = {k: vs for k, vs in values.items() if any(not _same_json(v, vs[0]) for v in vs[1:])}
        if twice:
            reasons[row] = DUPLICATE_KEY
            for k, vs in twice.items():
                given[keys.index(k)][row] = json.dumps(vs, ensure_ascii=False)
            continue
        for j, key in enumerate(ids):
            value = values.get(key, [None])[0]
            if isinstance(value, bool):
                reasons[row] = BOOLEAN_ID
            elif isinstance(value, int | float) and value == 0:
                zeros[j].append(row)
    n = lines.len()
    reason = pl.repeat(None, n, dtype=pl.String, eager=True)
    if reasons:
        reason = reason.scatter(list(reasons), list(reasons.values()))
    flags = [pl.repeat(False, n, dtype=pl.Boolean, eager=True) for _ in zeros]
    flags = [f.scatter(rows, True) if rows else f for f, rows in zip(flags, zeros, strict=True)]
    shown = [pl.repeat(None, n, dtype=pl.String, eager=True) for _ in keys]
    shown = [s.scatter(list(rows), list(rows.values())) if rows else s for s, rows in zip(shown, given, strict=True)]
    frame = pl.DataFrame(
        [reason.alias("reason"), flags[0].alias("zero_0"), flags[1].alias("zero_1")]
        + [s.alias(f"values_{n}") for n, s in enumerate(shown)]
    )
    return frame.to_struct(lines.name)


def _same_json(a: object, b: object) -> bool:
    """Whether two decoded JSON values are one value (`5` and `5.0`, or `true` and `1`, are not)."""
    return type(a) is type(b) and a == b


def decodable(lines: pl.Series, dtype: pl.DataType, candidates: np.ndarray) -> np.ndarray:
    """`candidates` narrowed to the lines that decode as `dtype`, found by bisection: a chunk that
    decodes is kept whole, one that fails is halved until the failing lines are isolated. A few bad
    lines among n cost about n * log2(bad lines) decoded lines, all in polars."""
    index = np.flatnonzero(candidates)
    subset = lines.gather(index)
    bad: list[int] = []
    pending = [(0, subset.len())]
    while pending:
        lo, hi = pending.pop()
        try:
            subset.slice(lo, hi - lo).str.json_decode(dtype)
        except pl.exceptions.PolarsError:
            if hi - lo == 1:
                bad.append(lo)
            else:
                mid = (lo + hi) // 2
                pending += [(lo, mid), (mid, hi)]
    result = candidates.copy()
    result[index[bad]] = False
    return result


def _scan_jsonl(
    label: Path | str, files: list[DataFile], columns: ColumnMap | None, per_file: bool
) -> RawSource:
    paths = [_local(f) for f in files]
    # Each file's keys are mapped, as each delimited file's header is: files of one directory
    # written under other key names (`userId` beside `user_id`) line up, instead of reading as
    # rows without a user whose quarantined values are all null.
    mappings, unmapped, first_keys = [], [], None
    for f, p in zip(files, paths, strict=True):
        try:
            top = _jsonl_keys(p, p)
            keys = _named_keys(p, top, columns)
            first_keys = keys if first_keys is None else first_keys
            try:
                mapping = map_columns(p, keys, columns)
            except DataError:
                _refuse_event_lists(p, None)
                raise
            _refuse_event_lists(p, {mapping[c] for c in (USER, ITEM)} - set(top))
            _refuse_nested_values(p, mapping)
            _refuse_binary_values(p, mapping)
            mappings.append((f, mapping))
        except DataError as exc:
            unmapped.append((f, exc))
    if unmapped:
        raise _unmapped_files(label, unmapped, mappings)
    _same_roles(label, mappings)
    budget = max(_KEY_WINDOW, _KEY_SAMPLE_BYTES // len(files))
    notes: list[str] = []
    unfound: list[tuple[DataFile, Path, dict[str, str], list[str]]] = []
    for (f, m), p in zip(mappings, paths, strict=True):
        found, roles = _late_keys(p, m, columns, budget)
        notes += _renamed_in_head(p, m) + found
        unfound.append((f, p, m, roles))
    # Each file's text is searched for the names of its unfound roles and of its mapped ones.
    spellings = {f.name: _key_spellings(p, [*roles, *m]) for f, p, m, roles in unfound}
    flagged = any(spellings.values())
    shaped = pl.col(_LINE).str.contains(_OBJECT_LINE)
    extended = {p for p in paths if _has_extended(p)}

    def lines(p: Path) -> pl.LazyFrame:
        return _unwrap_extended(_jsonl_lines(p)) if p in extended else _jsonl_lines(p)

    def struct(mapping: dict[str, str]) -> pl.Struct:
        return pl.Struct({src: pl.String() for src in dict.fromkeys(mapping.values())})

    # Files without a time of their own filed under day folders (`dt=2024-01-01/`): that day.
    days = folder_days(label, [f for f, _ in mappings], mappings[0][1], per_file)
    names = {p: f.name for (f, _), p in zip(mappings, paths, strict=True)}

    def ids(frame: pl.LazyFrame, p: Path) -> pl.LazyFrame:
        """Extended JSON binary ids (`binary_id_text`) spelt as text, in files that hold wrappers;
        the day of the file's folders as its time (`days`)."""
        if days:
            frame = frame.with_columns(pl.lit(days[names[p]], dtype=pl.String).alias(TIME))
        return frame.with_columns(binary_id_text(USER), binary_id_text(ITEM)) if p in extended else frame

    frame = _concat(
        [
            ids(_decode_lines(lines(p), shaped, struct(m), m, f, per_file, spellings[f.name], flagged), p)
            for (f, m), p in zip(mappings, paths, strict=True)
        ]
    )

    def exact() -> pl.LazyFrame:
        """Per-line check for the rare line that looks like an object but does not decode
        (`{"a":}`, an object or list where a value should be): bisection, not a Python loop."""
        frames = []
        for (f, m), p in zip(mappings, paths, strict=True):
            read = lines(p).collect()
            text = read.get_column(_LINE)
            ok = decodable(text, struct(m), text.str.contains(_OBJECT_LINE).to_numpy())
            late = spellings[f.name]
            frames.append(ids(_decode_lines(read.lazy(), pl.Series(_OK, ok), struct(m), m, f, per_file, late, flagged), p))
        return _concat(frames)

    late = _confirm_late_keys(unfound, per_file) if flagged else None
    header = tuple(first_keys or ())  # the first lines' keys, as a header names columns (for hints)
    mapping = {**mappings[0][1], TIME: PARTITION_DAY} if days else mappings[0][1]
    return RawSource(label, "jsonl", frame, mapping, per_file, exact, notes=notes, header=header, late_keys=late)
