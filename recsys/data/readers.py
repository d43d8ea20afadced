"""Readers: turn any supported interaction file into one lazy frame of *raw* canonical columns.

Every text column is read as a string (never inferred), so a single malformed value cannot fail the
whole read: validation parses the strings and quarantines the rows that do not parse. (Delimited
files also offer `RawSource.typed`, a read with chosen number columns typed, which validation keeps
only when `RawSource.layout` proves it lost nothing.) Each row has its 1-based row number *within
its file* (ROW: from the scan, or for delimited files counted by position after the read) and, for
a directory, the file it came from (SOURCE_FILE), so a quarantine row says exactly which line of
which input was bad.

JSON Lines are read as one string column per line and decoded by polars, so a truncated or garbage
line becomes one `malformed_json` row (READ_ERROR) instead of failing the whole file.

Formats are detected from the extension *and* the first bytes of the file (MovieLens `u.data` has
no telling extension; a `.csv` may really be `::`-separated), and can be forced with `format=`.
Numbers are not parsed here either, but a delimited source records its separator
(`RawSource.separator`): a `;` file is the CSV export of a decimal-comma locale, so validation
reads `4,5` in its weight or time column as 4.5. The rule for the ambiguous `1,234` (1.234, or
1234 with a thousands separator?) is validation's (`validation.DECIMAL_MODES`): a comma followed
by digits is the decimal point in a `;` file, but a column whose every comma value looks like a
thousands group stops ingest with an error that names the row and the `data.decimal` setting
that decides; nothing is guessed for other separators (such values are quarantined as bad).

A source may also be an fsspec URL (see `recsys.data.remote`): `file://` takes the local path;
other protocols are read as Parquet through fsspec file objects.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import gzip
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import unquote

import numpy as np
import polars as pl

from recsys.config import ColumnMap
from recsys.data.remote import Location, as_url, resolve
from recsys.data.schema import EVENT, ITEM, TIME, USER, WEIGHT, as_utc
from recsys.errors import DataError, NoDataRows, RecsysWarning

ROW = "source_row"
"""1-based data row (JSON Lines: line number) within the file the row came from."""
SOURCE_FILE = "source_file"
"""For a directory source: the row's file, relative to the directory (Categorical)."""
READ_ERROR = "__read_error"
"""A reason found while reading (e.g. malformed_json), null for rows the reader could split."""
MALFORMED_JSON = "malformed_json"
EXTRA_FIELDS = "extra_fields"
"""A delimited row with more fields than its header (an unquoted separator inside a value): its
values cannot be trusted to sit in their columns, and the extra text would be lost."""
ID_OUT_OF_RANGE = "id_out_of_range"
"""A float id (Parquet) that spells no 64-bit integer: infinite, or a whole number at or beyond
+-2^63. Not missing (it has a value, kept in the quarantine as its float text), and not to be
wrapped or clamped into another id."""
DUPLICATE_KEY = "duplicate_key"
"""A JSON Lines object naming a key it reads twice with other values (`{"rating": 3, "rating": 5}`):
polars keeps the first value, Python's json (and jq) the last; which one was meant is unknowable."""
BOOLEAN_ID = "boolean_id"
"""A JSON Lines user or item key holding `true` / `false`: almost surely a key mapped to the wrong
role (a flag), not an id; read as text it would make users "true" and "false"."""
LATE_KEY = "__late_key"
"""JSON Lines: whether a line's text holds a spelling of a role's key that the first lines' text
does not (`_key_spellings`): a key of a role the columns were not chosen for, or another key for
a role that was (`rating` renamed `stars` midway); `RawSource.late_keys` confirms the first such
lines."""
_EXTRA = "__extra_field"  # the first field past the header's, in a rebuild that looks for one
NOT_UTF8_HINT = (
    "text is read as UTF-8 unless data.encoding names another: name the file's encoding, e.g. "
    "{option} for a Latin-1 / Windows file such as Book-Crossing's (latin-1 reads any byte; cp1252 "
    "for Windows' quotes and euro sign)"
)

FORMATS = ("csv", "tsv", "parquet", "jsonl", "movielens", "movielens-dat", "movielens-csv", "recbole")

# Header names recognised without a column map, in order of preference (compared lower-cased,
# after stripping a RecBole `:type` suffix, with '-' and ' ' read as '_': Book-Crossing's
# `User-ID` is `user_id`). Besides the generic names, those of well-known public logs: Amazon
# reviews 2014/2018 (reviewerID, asin, overall, unixReviewTime) and 2023 (user_id, parent_asin -
# preferred over the variant's asin -, rating, timestamp), Yelp (business_id, stars), Amazon
# customer reviews TSV (customer_id, product_id, star_rating, review_date), Book-Crossing (ISBN,
# Book-Rating), Retailrocket (visitorid, itemid), Taobao / Tianchi (behavior_type: pv, cart, fav,
# buy), Diginetica (eventdate), Goodreads (book_id, date_added: its JSON also has a review_id, so
# book_id is not the one remaining id column there), H&M (article_id beside sales_channel_id, t_dat),
# dunnhumby's Complete Journey (household_key beside BASKET_ID and STORE_ID), KuaiRand (time_ms, in
# milliseconds, over its yyyymmdd `date`, which would read as 1970 seconds and merge a day's repeats).
AUTO_NAMES: dict[str, tuple[str, ...]] = {
    USER: ("user_id", "user", "userid", "uid", "customer_id", "visitorid", "reviewerid", "household_key"),
    ITEM: (
        "item_id",
        "item",
        "itemid",
        "movieid",
        "movie_id",
        "product_id",
        "track_id",
        "artist_id",
        "iid",
        "parent_asin",
        "asin",
        "business_id",
        "isbn",
        "book_id",
        "article_id",
    ),
    TIME: (
        "timestamp",
        "time",
        "ts",
        "time_ms",
        "timestamp_ms",
        "datetime",
        "date",
        "event_time",
        "eventdate",
        "unixreviewtime",
        "review_date",
        "date_added",
        "t_dat",
        "time_stamp",
    ),
    WEIGHT: (
        "rating",
        "weight",
        "count",
        "plays",
        "play_count",
        "score",
        "value",
        "dwell",
        "dwell_time",
        "dwell_ms",
        "dwell_time_ms",
        "overall",
        "stars",
        "star_rating",
        "book_rating",
    ),
    EVENT: (
        "event",
        "event_type",
        "action",
        "action_type",
        "type",
        "behavior",
        "behavior_type",
        "behaviour",
        "behaviour_type",
    ),
}
_MAP_FIELDS = {USER: "user", ITEM: "item", TIME: "time", WEIGHT: "weight", EVENT: "event"}
_POSITIONAL = (USER, ITEM, WEIGHT, TIME)  # u.data / ratings.dat / headerless numeric files
_TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".dat", ".data", ".inter", ".jsonl", ".ndjson", ".json"}
_PARQUET_SUFFIXES = (".parquet", ".pq")
_SNIFF_BYTES = 64 * 1024
_LINE = "__line"
_OK = "__ok"
_JSON = "__json"
# A JSON Lines record must be one object on one line. Lines failing this cheap test (truncated
# records, garbage, arrays, bare numbers) are marked before decoding, so the decoder never sees them.
_OBJECT_LINE = r"^\s*\{.*\}\s*$"
# A byte that cannot occur unescaped in JSON text: splitting on it keeps each line whole.
_NO_SEPARATOR = "\x1f"


@dataclass
class RawSource:
    """A scanned source: `frame` has ROW (unless `positional_rows`), SOURCE_FILE (directories),
    READ_ERROR (JSON Lines) and the canonical column names holding *raw* values (strings for text
    formats; native dtypes for Parquet). `mapping` says which source column became which
    canonical column, for messages and the manifest. `exact`, when set, rebuilds the frame
    eagerly with a per-line check; validation uses it only if the lazy frame fails to decode (a
    line the cheap shape test let through).
    `positional_rows`: the frame has no ROW because a row's number is its position within its
    file (delimited text); whoever collects the frame adds it with `number_rows`. `typed`, when
    set (delimited text), scans again with the canonical columns it is given read as those types
    by polars' CSV parser, which raises on a value it cannot read; `layout` (see ByteLayout) lets
    validation prove afterwards that every value was spelled plainly, so the typed read loses
    nothing the text read would have kept.
    `separator`: the field separator of delimited text (one for all files; else None), which
    says how a comma inside a number was meant (`;` files come from decimal-comma locales).
    `comma_files`: where the files' separators differ, the SOURCE_FILE names of the `;` ones
    (a decimal-comma month beside `,` months), whose numbers validation reads as `;` files'.
    `decimal`: how validation reads a comma in weight / time text, set by `validate` from it
    (see `validation.DECIMAL_MODES`). `notes`: one line each for ingest's warnings (JSON Lines
    keys for a role that were seen only past the lines the columns were chosen from). `header`:
    every column name of a delimited file with a header line (its first file's), mapped or not,
    so a warning can name a column the user may mean (Diginetica's `sessionId`). `late_keys`
    (JSON Lines whose sample left a role's key unfound): given the (SOURCE_FILE, ROW) of the
    lines where the frame's LATE_KEY holds, the notes for the keys those lines confirm."""

    path: Path | str
    format: str
    frame: pl.LazyFrame
    mapping: dict[str, str] = field(default_factory=dict)
    per_file: bool = False
    exact: Callable[[], pl.LazyFrame] | None = None
    positional_rows: bool = False
    typed: Callable[[dict[str, pl.DataType]], pl.LazyFrame] | None = None
    layout: ByteLayout | None = None
    separator: str | None = None
    comma_files: tuple[str, ...] = ()
    decimal: str = "plain"
    time_format: str | None = None  # data.time_format, set by `validate` (see `validation.parse_time`)
    notes: list[str] = field(default_factory=list)  # what the reader saw that ingest should say
    header: tuple[str, ...] = ()  # a delimited file's header names (its first file's), for hints
    late_keys: Callable[[pl.DataFrame], list[str]] | None = None  # JSON Lines: see LATE_KEY

    @property
    def columns(self) -> list[str]:
        """The columns a quarantine row keeps besides ROW and the reason: SOURCE_FILE for a
        directory, then the mapped canonical columns."""
        canonical = [c for c in (USER, ITEM, TIME, WEIGHT, EVENT) if c in self.mapping]
        return [SOURCE_FILE, *canonical] if self.per_file else canonical


@dataclass(frozen=True)
class DataFile:
    """One input file: a local path, or a path inside an fsspec location (opened on demand).
    `name` is what SOURCE_FILE says: relative to the source directory, or the file's own name."""

    name: str
    path: Path | None = None
    location: Location | None = None
    remote_path: str | None = None

    @property
    def label(self) -> str:
        if self.path is not None:
            return str(self.path)
        assert self.location is not None and self.remote_path is not None
        return self.location.url_of(self.remote_path)

    def target(self) -> Path | IO[bytes]:
        """What polars scans: the local path, or an fsspec file object."""
        if self.path is not None:
            return self.path
        assert self.location is not None and self.remote_path is not None
        return self.location.open(self.remote_path)


# --------------------------------------------------------------------------- detection


def _read_head(path: Path) -> bytes:
    """First bytes of a file, decompressed when gzip'd (sniffing must see the text)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as gz:
                head = gz.read(_SNIFF_BYTES)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read file ({exc.__class__.__name__}: {exc})") from None
    return head


_BOM_HINT = (
    "`recsys ingest`, `recsys run` and `recsys.data.ingest.ingest` read it as it is (the mark names its "
    "encoding); the readers called alone read UTF-8 only"
)
_NOT_READ = {
    b"PK\x03\x04": "a zip archive, or an .xlsx workbook: unzip it and name the interaction file "
    "(e.g. ml-100k/u.data; `recsys data fetch NAME --offline FILE.zip` takes a named set's zip), or "
    "export the sheet as CSV",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "an Excel 97-2003 workbook (.xls, as Jester's ratings ship): export "
    "the sheet as CSV",
    b"BZh": "bzip2-compressed: decompress it (only gzip is read directly)",
    b"\xfd7zXZ\x00": "xz-compressed: decompress it (only gzip is read directly)",
    b"\x28\xb5\x2f\xfd": "zstd-compressed: decompress it (only gzip is read directly)",
    b"ARROW1": "an Arrow IPC / Feather file (pandas' to_feather): write it as Parquet instead, e.g. "
    "`pl.read_ipc(FILE).write_parquet(NEW)`",
    b"FEA1": "a Feather v1 file (old pandas' to_feather): write it as Parquet instead, e.g. "
    "`pd.read_feather(FILE).to_parquet(NEW)`",
    b"ORC": "an ORC file (Hive, Spark): write it as Parquet instead",
    b"Obj\x01": "an Avro file: write it as Parquet instead",
}
"""Leading bytes of files users point ingest at that it does not read, and what to do instead."""
_BOM_TEXT = {  # UTF-32-LE's mark starts with UTF-16-LE's: listed first, as the first match names it
    b"\xff\xfe\x00\x00": "UTF-32 text with a byte-order mark",
    b"\x00\x00\xfe\xff": "UTF-32 text with a byte-order mark",
    b"\xff\xfe": "UTF-16 text with a byte-order mark (Excel's 'Unicode Text')",
    b"\xfe\xff": "UTF-16 text with a byte-order mark",
}
"""Text that ingest reads (`recsys.data.encoding` copies it as UTF-8 first) but the readers alone
(`scan_source`, `read_canonical`), which read UTF-8 only, do not."""


def _head_lines(path: Path, head: bytes) -> list[str]:
    if bom := next((what for mark, what in _BOM_TEXT.items() if head.startswith(mark)), None):
        raise DataError(f"{path}: {bom}: {_BOM_HINT}")
    # Known kinds are named only for heads that are not UTF-8 text (a CSV may start with "BZh").
    kind = next((what for magic, what in _NOT_READ.items() if head.startswith(magic)), None)
    if head[257:262] == b"ustar":  # a tar header's magic (also seen through gzip: .tar.gz / .tgz)
        kind = (
            "a tar archive (.tar, .tar.gz), as Last.fm's and Yelp's data sets ship: unpack it (`tar xf FILE`) "
            "and name the interaction file"
        )
    if b"\x00" in head:
        for order, nulls in (("le", head[1:64:2]), ("be", head[0:64:2])):  # ASCII-range UTF-16 without a BOM
            if kind is None and len(nulls) >= 8 and nulls.count(0) == len(nulls):
                raise DataError(
                    f"{path}: UTF-16 text without a byte-order mark (every other byte is 0): read it with {{option}}",
                    setting="data.encoding",
                    value=f"utf-16-{order}",
                )
        raise DataError(f"{path}: not a text or Parquet file ({kind or 'binary content'})")
    if b"\n" not in head and b"\r" in head.rstrip(b"\r"):  # else one "line": a header, no rows
        raise DataError(
            f"{path}: lines end in a carriage return only (classic Mac OS; Excel's 'CSV (Macintosh)'), "
            "which is not read: convert them first, e.g. `tr '\\r' '\\n' < FILE > NEW`"
        )
    # Cut at the last newline so a multi-byte character split by the sniff window does not look
    # corrupt; a first line longer than the window loses the bytes of a character split at its end.
    cut = head.rfind(b"\n")
    text_bytes = head if cut < 0 or len(head) < _SNIFF_BYTES else head[:cut]
    if cut < 0 and len(head) >= _SNIFF_BYTES:
        lead = max((i for i in range(len(head) - 4, len(head)) if head[i] & 0xC0 != 0x80), default=None)
        text_bytes = head[:lead] if lead is not None and head[lead] >= 0xC0 else head
    try:
        text = text_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if kind is not None:
            raise DataError(f"{path}: not a text or Parquet file ({kind})") from None
        raise DataError(
            f"{path}: not a UTF-8 text or Parquet file (byte {exc.object[exc.start]:#x} at offset "
            f"{exc.start}): {NOT_UTF8_HINT}",
            setting="data.encoding",
            value="latin-1",
        ) from None
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _sniff_text(path: Path, lines: list[str]) -> str:
    first = lines[0]
    if first.lstrip().startswith("{"):
        return "jsonl"
    if "::" in first:
        return "movielens-dat"
    if "\t" in first:
        fields = first.split("\t")
        if all(":" in f for f in fields):
            return "recbole"
        if all(_is_number(f) for f in fields):
            return "movielens"
        return "tsv"
    return "csv"


def detect_format(path: str | Path) -> str:
    """The reader for `path`: Parquet by magic bytes, otherwise the extension (.parquet, .jsonl,
    .ndjson, .inter) confirmed or overridden by the first line's shape (`::`, tabs, `name:type`
    headers, all-numeric rows, a leading `{`)."""
    path = Path(path)
    if path.is_dir():
        files = data_files(path)
        return _one_format(path, files, None)
    head = _read_head(path)
    if not head:
        raise NoDataRows(f"{path}: empty file")
    if head[:4] == b"PAR1":
        with path.open("rb") as fh:
            if fh.read(2) == b"\x1f\x8b":  # the head was decompressed
                raise DataError(
                    f"{path}: gzip-compressed Parquet, which is not read: decompress it first "
                    "(`gunzip FILE`; Parquet compresses its own pages)"
                )
        return "parquet"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in {".parquet", ".pq"}:
        raise DataError(f"{path}: has a Parquet extension but is not a Parquet file")
    lines = _head_lines(path, head)
    if not lines:
        raise NoDataRows(f"{path}: empty file")
    if lines[0].startswith("#") and not suffix.startswith((".json", ".ndjson")) and not _hash_header(lines):
        raise DataError(
            f"{path}: starts with comment lines ({lines[0][:40]!r}), which are not read: drop them first, "
            "e.g. `grep -v '^#' FILE > NEW` (SNAP's edge lists are then headerless user, item columns)"
        )
    if lines[0].lstrip().lower().startswith(("<!doctype html", "<html", "<?xml")):
        raise DataError(
            f"{path}: an HTML or XML document, not an interaction log (a download that got an error or "
            "login page, e.g. S3's AccessDenied?): open it to see what it says, and fetch the file again"
        )
    if suffix in {".jsonl", ".ndjson"}:
        # A bad first line is a quarantined row, not a reason to read the file as something else.
        if not any(line.lstrip().startswith("{") for line in lines[:1000]):
            raise DataError(f"{path}: JSON Lines extension but no line is a JSON object")
        return "jsonl"
    if suffix == ".json" and lines[0].lstrip().startswith("["):
        raise _json_array_error(path)
    sniffed = _sniff_text(path, _unhashed(lines))
    if suffix == ".inter" and sniffed == "tsv":
        return "recbole"  # RecBole headers without types still read fine as TSV with auto-mapping
    return sniffed


def _hash_header(lines: list[str]) -> bool:
    """Whether the first line is a header written behind a `#` (`#user,item,rating`, as some
    exporters mark it): it splits into at least two plain names (no number, date or empty name,
    see `_looks_like_data`) and every following line of the head is no comment and splits into
    as many fields. A comment block (SNAP's `# Directed graph ...` lines) fails this and is
    refused as before; reading it as a header would name columns after prose."""
    if len(lines) < 2 or not lines[0].startswith("#"):
        return False
    first, rows = lines[0].lstrip("#").strip(), lines[1:21]
    if any(row.startswith("#") for row in rows):
        return False
    separator = "::" if "::" in first else "\t" if "\t" in first else _csv_separator([first, *rows])

    def width(line: str) -> int:
        return len(_QUOTED.sub('""', line.strip()).split(separator))

    names = [name.strip().strip('"') for name in first.split(separator)]
    return len(names) > 1 and not _looks_like_data(names) and all(width(row) == len(names) for row in rows)


def _unhashed(lines: list[str]) -> list[str]:
    """`lines` with a `#` header (`_hash_header`) spelled as a plain header line."""
    return [lines[0].lstrip("#").strip(), *lines[1:]] if _hash_header(lines) else lines


def _header_lines(path: Path) -> list[str]:
    """The first lines of a delimited file, a `#` header read as its plain header."""
    return _unhashed(_head_lines(path, _read_head(path)))


def _json_array_error(path: Path | str) -> DataError:
    return DataError(
        f"{path}: a JSON array, not JSON Lines (one object a line); convert it first, e.g. "
        "`jq -c '.[]' FILE > NEW.jsonl`"
    )


def directory_files(path: Path, suffixes: Iterable[str]) -> list[Path]:
    """The data files under directory `path` (recursive, sorted) whose names end in `suffixes`;
    hidden (`.x`) and `_x` entries are skipped on purpose (staging files, `_SUCCESS` markers), and
    so is everything below them: Spark's `_temporary/` and `.spark-staging/` hold the part files of
    an unfinished write, Delta Lake's `_delta_log/` its JSON commit log.

    Anything else that is not a regular file - a FIFO, a socket, a device, a broken link - is a
    DataError naming it: reading a FIFO would block, and skipping it would lose whatever a writer
    meant to deliver through it without a word. A symbolic link to a directory is followed (once:
    a link back up is not walked again), as its files are the user's data like any other."""
    wanted = tuple(s.lower() for s in suffixes)
    files: list[Path] = []
    for p in _entries(path):
        if p.is_file():
            if p.name.lower().endswith(wanted):
                files.append(p)
        elif not p.is_dir():
            raise DataError(
                f"{p}: {_special_kind(p)} in the source directory, not a regular file; "
                "move it out (or write the data to a regular file) and ingest again"
            )
    return files


def _entries(path: Path) -> list[Path]:
    """Everything below directory `path`, sorted, without hidden (`.x`) or `_x` entries or anything
    below them; symbolic links to directories followed once each (`Path.rglob` skips them, and
    the files of a linked day's export would go unread without a word)."""
    entries: list[Path] = []
    seen: set[str] = set()
    for root, dirs, names in os.walk(path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs.clear()  # a link cycle, or the same directory linked twice
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        base = Path(root)
        entries += [base / name for name in (*dirs, *names) if not name.startswith((".", "_"))]
    return sorted(entries)


def _special_kind(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return "a broken symbolic link"
    if path.is_fifo():
        return "a FIFO (named pipe)"
    if path.is_socket():
        return "a socket"
    if path.is_block_device() or path.is_char_device():
        return "a device"
    return "not a regular file"


DATA_SUFFIXES = (*_PARQUET_SUFFIXES, *sorted(_TEXT_SUFFIXES), ".gz")
"""File names a directory source reads (compared lower-cased); landing zones list the same."""
_UNREAD_ARCHIVES = (".bz2", ".xz", ".zst", ".zstd", ".lz4", ".zip", ".7z", ".tar", ".tgz")
"""Compressed or archived files a directory read does not open (only .gz is read directly): in a
source directory they are almost always data, so they are named rather than skipped."""


@dataclass(frozen=True)
class SourceListing:
    """One listing of a source directory, for both uses: the data files to read, and the other
    files (not empty) that are not read, for `warn_unread`."""

    files: list[Path]
    unread: list[Path]


def list_source(path: Path) -> SourceListing:
    """The data files of source directory `path` (`DATA_SUFFIXES`) and the files it does not read;
    DataError naming compressed or archived files it would skip, or when it holds no data file.
    Other files are not read (see `warn_unread`), nor are empty (0-byte) ones: they hold no row,
    and Spark writes one for each empty partition (a landing zone then takes such a file up once
    something was written to it)."""
    listed = directory_files(path, ("",))
    every = [p for p in listed if p.stat().st_size]
    unread = [p for p in every if p.name.lower().endswith(_UNREAD_ARCHIVES)]
    if unread:
        names = [p.relative_to(path).as_posix() for p in unread]
        raise DataError(
            f"{path}: holds {len(names)} compressed or archived file(s) ingest does not open "
            f"({_some(names)}), which would be skipped: decompress them (only .gz is read directly) "
            "or move them out, and ingest again"
        )
    files = [p for p in every if p.name.lower().endswith(DATA_SUFFIXES)]
    if not files:
        empty = any(p.name.lower().endswith(DATA_SUFFIXES) for p in listed)
        raise DataError(
            f"{path}: directory holds no {'data file that is not empty' if empty else 'supported data files'} "
            "(.parquet, .csv, .tsv, .jsonl ...)"
        )
    read = set(files)
    return SourceListing(files, [p for p in every if p not in read])


def data_files(path: Path) -> list[Path]:
    """The data files of source directory `path` (`list_source`)."""
    return list_source(path).files


def warn_unread(path: Path, listing: SourceListing) -> None:
    """A warning naming the files of source directory `path` that `listing` does not read: a README
    beside the logs is fine, but Hive and Hadoop write data files without an extension
    (`000000_0`, `part-00000`), whose rows would otherwise be left out without a word. Called once
    the files were read, so a source refused for another reason says only that."""
    skipped = [p.relative_to(path).as_posix() for p in listing.unread]
    if skipped:
        warnings.warn(
            RecsysWarning(
                f"{path}: {len(skipped)} file(s) not read ({_some(skipped)}): only names ending in "
                f"{' '.join(DATA_SUFFIXES)} are; give a file that holds interactions its format's extension"
            ),
            stacklevel=2,  # one place (the caller of this), so Python shows it once per run
        )


def _some(names: list[str], n: int = 3) -> str:
    """The first `n` names, comma-separated, with ' ...' when there are more."""
    return ", ".join(names[:n]) + (" ..." if len(names) > n else "")


def _one_format(path: Path, files: list[Path], format: str | None) -> str:
    """The one format every file of directory `path` is in, or DataError naming the files a
    single-format read would skip (a.csv beside b.parquet: the Parquet rows would be in neither
    the data nor the quarantine). With `format` forced, text files follow it (the user's call), but
    a Parquet file among text ones, or the reverse, is still refused."""

    def kind(p: Path) -> str:
        if format is None:
            try:
                return detect_format(p)
            except DataError as exc:
                # An unzipped data set's folder holds its titles beside its log (ML-1M's Latin-1
                # movies.dat): converting them, as the error says, reads them as interactions next.
                if exc.setting != "data.encoding" or len(files) < 2:
                    raise
                raise DataError(
                    f"{exc.args[0]}; or, if {p.relative_to(path).as_posix()} is no interaction log (an unzipped "
                    "data set's titles, as ML-1M's movies.dat beside ratings.dat), ingest the interaction "
                    "file on its own",
                    setting=exc.setting,
                    value=exc.value,
                ) from None
        parquet = p.suffix.lower() in _PARQUET_SUFFIXES
        return "parquet" if parquet else ("text" if format == "parquet" else format)

    kinds = {p: kind(p) for p in files}
    groups: dict[str, list[str]] = {}
    for p, kind in kinds.items():
        groups.setdefault(kind, []).append(p.relative_to(path).as_posix())
    if len(groups) == 1:
        return next(iter(groups))
    if format is None and groups.keys() == {"csv", "tsv"}:
        return "csv"  # delimited files with headers: each is read with its own separator (_file_separator)
    listing = "; ".join(f"{kind}: {_some(names)} ({len(names)} file(s))" for kind, names in groups.items())
    raise DataError(
        f"{path}: holds files of {len(groups)} formats ({listing}); one ingest reads one format, so "
        "the others would be skipped: ingest each format on its own (a file or sub-directory at a "
        "time, with --append), or convert them to one format"
    )


# --------------------------------------------------------------------------- column mapping


def _base_name(name: str) -> str:
    """RecBole headers are `name:type`; compare the name only, lower-cased, '-' and ' ' as '_'."""
    return re.sub(r"[- ]", "_", name.split(":", 1)[0].strip().lower())


base_name = _base_name  # for validation, which compares values with column names


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
                # Suggest the spelling meant (`ratng` -> `rating`), not just the first column.
                close = difflib.get_close_matches(wanted, header, n=1, cutoff=0.6)
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
    _remaining_id_column(header, mapping, taken)
    for canon, attr in ((USER, "user"), (ITEM, "item")):
        if canon not in mapping:
            if separator is not None and (_looks_like_data(header) or len(header) == 1):
                _refuse_whitespace_runs(path, header, separator)
            if separator is not None and _looks_like_data(header):
                _refuse_id_lists(path, header)
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
                raise DataError(
                    f"{path}: Netflix prize `MovieID:` blocks (first line {header[0].strip()!r}), which are not "
                    "read: flatten them to one user,item,rating,date line each first, e.g. `awk -F, 'BEGIN {print "
                    '"user_id,item_id,rating,date"} /:$/ {m = substr($0, 1, length($0) - 1); next} {print $1 "," m '
                    '"," $2 "," $3}\' FILE > NEW`, and ingest NEW'
                )
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
    ),
}  # fmt: skip
# Columns whose name says they hold something else: a row's, order's or session's id (the item hint
# named a funnel log's `event_id`, Online Retail's `InvoiceNo`), a rating, count, price or time.
_NOT_AN_ID = re.compile(
    r"event|order|invoice|transaction|basket|review|rating|score|count|quantity|qty|price|amount|revenue|time|date"
    r"|categor"
)


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

    def rank(column: str) -> tuple[bool, bool, bool, bool]:
        name = _base_name(column)
        named = (attr not in name, not any(w in name for w in words), not _ID_SUFFIX.match(column))
        return (*named, bool(_LIST_NAME.search(name)))  # `next_item` before `prev_items` (Amazon-M2)

    offered = sorted(
        (c for c in free if not _NOT_AN_ID.search(_base_name(c)) and (attr == "user" or "session" not in c.lower())),
        key=rank,
    )
    if offered and not all(rank(offered[0])[:3]):  # a list-like name alone is no fit
        return offered[0]
    position = 0 if attr == "user" else 1
    usual = header[position] if header is not None and len(header) > position else None
    # Never a column named for the other role: Amazon-M2's `prev_items,next_item,locale` (a
    # session's item list) was offered as the user.
    other = _ROLE_WORDS["item" if attr == "user" else "user"]
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


_DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}")
# A field holding several ids separated by spaces (`N1235 N3234`, `N55689-1 N35729-0`): MIND's
# history and impression columns. Each token has digits and no `:` or `/`, so names (`Deep Dish`,
# `Blink 182`) and times (`2019-11-11 09:05:58`, `9:05:58 AM`) are not lists.
_ID_LIST = re.compile(r"^[A-Za-z_]*\d+(?:[-_]\d+)?(?:\s+[A-Za-z_]*\d+(?:[-_]\d+)?)+$")


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


def _looks_like_data(header: list[str]) -> bool:
    """Whether a "header" is really a data row of a headerless file (Last.fm 1K / 360K, Amazon's
    ratings-only CSV): no column name is a number, empty, or a date."""
    return len(header) > 1 and any(
        _is_number(name) or not name.strip() or _DATE_LIKE.match(name.strip()) for name in header
    )


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
    id). The message asks the user to check each name."""
    if not _is_number(value) or not 0 < float(value) <= 10:
        return "plays" if value.isdigit() and int(value) > 10 and last and timeless else ""
    return "rating"


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


# --------------------------------------------------------------------------- scanning


def first_error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def _csv_header(path: Path, separator: str, quote: str | None) -> list[str]:
    try:
        return (
            pl.scan_csv(
                path, separator=separator, has_header=True, infer_schema=False, quote_char=quote, n_rows=0
            )
            .collect_schema()
            .names()
        )
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: cannot read header ({first_error_line(exc)})") from None


def _scan_delimited(
    path: Path,
    separator: str,
    has_header: bool,
    quote: str | None,
    new_columns: list[str] | None = None,
    numbered: bool = False,
    dtypes: dict[str, pl.DataType] | None = None,
    header: tuple[str, ...] = (),
) -> pl.LazyFrame:
    """Every field as text, except the columns `dtypes` names (by source or given name), which
    polars' CSV parser reads as those types, raising on a value it cannot read. numbered=True adds
    ROW in the scan; delimited files leave it out (see `number_rows`) because a row index costs the
    streaming CSV read ~15% more.

    A row with more fields than the header fails the read (polars raises), so it is never cut
    short without a word; rows with fewer fields are padded with nulls. `header` (the file's
    columns) asks for the rebuild that validation then reads instead (`RawSource.exact`): all
    text, such rows kept whole enough to be quarantined, the first field past the header in
    `_EXTRA` (for `::` files, past the empty field between the two colons)."""
    dtypes = dtypes or {}
    schema = None
    if header:
        gap = ("_gap_extra",) if any(name.startswith("_gap_") for name in header) else ()
        schema = dict.fromkeys((*header, *gap, _EXTRA), pl.String())
        return pl.scan_csv(
            path, separator=separator, has_header=False, skip_rows=1 if has_header else 0, schema=schema,
            quote_char=quote, truncate_ragged_lines=True, missing_columns="insert",
        ).drop(gap)  # fmt: skip
    # Headerless and typed: a schema names and types every field at once. Rows with too few
    # fields read as on the text route (padded with nulls), and the byte proof fails on them (a
    # null last column). A header renamed by `new_columns` (`#user,...`) takes the overrides
    # under its new names instead: a schema would be checked against the header's own.
    if new_columns is not None and dtypes and not has_header:
        schema, new_columns = {name: dtypes.get(name, pl.String()) for name in new_columns}, None
    return pl.scan_csv(
        path,
        separator=separator,
        has_header=has_header,
        infer_schema=False,
        schema=schema,
        schema_overrides=dtypes if has_header and dtypes else None,
        quote_char=quote,
        row_index_name=ROW if numbered else None,
        row_index_offset=1,
        truncate_ragged_lines=False,
        new_columns=new_columns,
    )


def _extra_fields() -> pl.Expr:
    """READ_ERROR of a rebuilt delimited row: EXTRA_FIELDS where a field past the header holds
    text (a trailing separator, or one followed by spaces only, loses nothing)."""
    found = pl.col(_EXTRA).str.strip_chars() != ""
    return pl.when(found).then(pl.lit(EXTRA_FIELDS)).otherwise(pl.lit(None, dtype=pl.String)).alias(READ_ERROR)


def row_numbers(per_file: bool) -> pl.Expr:
    """ROW of rows read from a source whose row number is the position within its file
    (`RawSource.positional_rows`): 1, 2, ... per file, in the order the files were concatenated.
    Counting after the read gives the numbers the scan's row index would have given, because
    every read of a source keeps file and row order (polars' streaming engine preserves it, and
    validation's "first occurrence" relies on it too)."""
    position = pl.int_range(1, pl.len() + 1, dtype=pl.Int64)
    return (position.over(SOURCE_FILE) if per_file else position).alias(ROW)


def number_rows(frame: pl.DataFrame, per_file: bool) -> pl.DataFrame:
    """`frame` with ROW (`row_numbers`) in front."""
    return frame.select(row_numbers(per_file), pl.all())


def _select(
    frame: pl.LazyFrame,
    mapping: dict[str, str],
    file: DataFile,
    per_file: bool,
    extra: tuple[pl.Expr, ...] = (),
    numbered: bool = True,
    row_index: str = ROW,
) -> pl.LazyFrame:
    """ROW (where the scan numbers rows), SOURCE_FILE (directories: a Categorical literal, 4 bytes
    a row), the mapped columns under their canonical names, then `extra`. Called per file, so ROW
    restarts at 1 in each."""
    origin = [pl.lit(file.name, dtype=pl.Categorical).alias(SOURCE_FILE)] if per_file else []
    return frame.select(
        *([pl.col(row_index).cast(pl.Int64).alias(ROW)] if numbered else []),
        *origin,
        *(pl.col(src).alias(canon) for canon, src in mapping.items()),
        *extra,
    )


def _concat(frames: list[pl.LazyFrame]) -> pl.LazyFrame:
    """Files in name order, rows in file order (validation's "first occurrence" relies on it)."""
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")


@dataclass(frozen=True)
class _TextFile:
    """How one delimited file is scanned: enough to scan it again with some columns typed."""

    file: DataFile
    separator: str
    has_header: bool
    quote: str | None
    names: list[str] | None  # headerless files: the names given to the fields
    mapping: dict[str, str]
    columns: tuple[str, ...]  # every column of the file: its header, or `names`

    def scan(self, dtypes: dict[str, pl.DataType], rebuild: bool = False) -> pl.LazyFrame:
        """The file's read (`rebuild`: the all-text rebuild that finds rows with extra fields)."""
        by_source = {self.mapping[canon]: dtype for canon, dtype in dtypes.items()}
        return _scan_delimited(
            _local(self.file), self.separator, self.has_header, self.quote, self.names, dtypes=by_source,
            header=self.columns if rebuild else (),
        )  # fmt: skip


def _positional(file: DataFile, separator: str, first_line: str) -> _TextFile:
    """Headerless files (u.data, ratings.dat, numeric CSV): columns are user, item[, rating[, time]]."""
    if separator == "::":
        # polars needs a one-byte separator: split on ':' and keep every other field (the odd
        # ones are the empty strings between the two colons).
        n_fields = first_line.count("::") + 1
        names = [f"field_{i // 2}" if i % 2 == 0 else f"_gap_{i // 2}" for i in range(2 * n_fields - 1)]
    else:
        n_fields = len(first_line.split(separator))
        names = [f"field_{i}" for i in range(n_fields)]
    if n_fields < 2:
        raise DataError(
            f"{_local(file)}: expected at least user and item columns separated by {separator!r}, found one column"
        )
    mapping = dict(zip(_POSITIONAL, [f"field_{i}" for i in range(n_fields)], strict=False))
    if n_fields == 3 and _UNIX_TIME.match(first_line.split(separator)[2].strip()):
        # `user item time` (Behance's appreciates, a check-in log without places): the third field
        # is a Unix time in seconds or milliseconds, not a rating (it was read as weights of ~1.3e9).
        mapping = {USER: "field_0", ITEM: "field_1", TIME: "field_2"}
    return _TextFile(file, ":" if separator == "::" else separator, False, None, names, mapping, tuple(names))


_UNIX_TIME = re.compile(r"^[1-9](?:\d{9}|\d{12})$")  # 2001-2286 in seconds, or in milliseconds


_CSV_SEPARATORS = (",", ";", "|")
_QUOTED = re.compile(r'"[^"]*"')


def _csv_separator(lines: list[str]) -> str:
    """The field separator of a CSV file, from its first line outside quoted fields: ',' when it
    occurs, else ';' (Book-Crossing's `"User-ID";"ISBN";"Book-Rating"`, spreadsheets in locales
    with a decimal comma), else '|', else one space between every two fields when the first lines
    all split into that many (FilmTrust's and Epinions' `1 1 2.0`; a value holding a space, such as
    `2019-10-01 00:00:00`, would split, so then it is not the separator); ',' for a one-column line
    (map_columns names the problem)."""
    bare = _QUOTED.sub("", lines[0])
    found = next((sep for sep in _CSV_SEPARATORS if sep in bare), None)
    if found is None:
        widths = {len(line.strip().split(" ")) if all(line.strip().split(" ")) else 0 for line in lines[:20]}
        found = " " if len(widths) == 1 and min(widths) > 1 else None
    return found or ","


def _fullest(mapped: list[tuple[DataFile, dict[str, str]]]) -> int:
    """The position of the file that maps the most roles (the first of those): the one to name as
    the interaction log. An unzipped ML-25M maps genome-scores.csv (movieId and tagId, the one
    remaining id column, as the user) and tags.csv beside ratings.csv, and the first by name is
    genome-scores.csv, which the errors below then held up as the log to ingest."""
    return max(range(len(mapped)), key=lambda n: (len(mapped[n][1]), -n))


def _unmapped_files(
    label: Path | str, unmapped: list[tuple[DataFile, DataError]], mapped: list[tuple[DataFile, dict[str, str]]]
) -> DataError:
    """The error for files of a source whose columns could not be mapped: the file's own error
    when none could (a column option fixes them all), else a list of the files that are not
    interaction logs like the others (an unzipped ml-latest-small holds movies.csv and links.csv
    beside ratings.csv), where a column option would be the wrong fix."""
    if not mapped:
        return unmapped[0][1]
    names = _some([f.name for f, _ in unmapped], 5)
    example = mapped[_fullest(mapped)][0].name
    return DataError(
        f"{label}: {names} lack(s) the user or item column that {example} has, so not every "
        f"file is an interaction log; ingest the interaction file on its own (e.g. "
        f"{example}), or move the others out"
    )


def _same_roles(label: Path | str, mapped: list[tuple[DataFile, dict[str, str]]]) -> None:
    """DataError naming the files of a source whose columns fill other roles than the file
    mapping the most (b.csv without the rating column a.csv has): one read gives every row the
    same columns, and guessing a missing weight or time would change what the rows mean."""
    reference = _fullest(mapped)
    first_name, first = mapped[reference][0].name, mapped[reference][1]
    others = [f.name for f, mapping in mapped if mapping.keys() != first.keys()]
    if others:
        roles = ", ".join(_MAP_FIELDS[c] for c in first)
        raise DataError(
            f"{label}: {_some(others, 5)} map(s) other columns than {first_name} ({roles}), so the "
            "files are not one log; ingest each kind on its own (a file at a time, with --append), "
            "or add the missing column to those files"
        )


_KNOWN_NAMES = frozenset(name for names in AUTO_NAMES.values() for name in names)


def _is_header(line: str, separator: str) -> bool:
    """Whether `line`, a file's first line, is a header: no field is a number or a date
    (`_looks_like_data`) and one names a role as AUTO_NAMES spell it (`user_id`, `#userId`), so a
    headerless file's first row of text ids (`u7,i3`) is not taken for one."""
    fields = [f.strip().strip('"').lstrip("#").strip() for f in line.split(separator)]
    named = [f for f in fields if f]  # an empty name is allowed: pandas' index column has one
    return not _looks_like_data(named) and any(_base_name(f) in _KNOWN_NAMES for f in named)


def _refuse_many_fields(file: DataFile, separator: str, first_line: str) -> None:
    """DataError for a headerless file of more than four fields. Read by position, LFM-1b's
    `user artist album track time` took the album for the rating and the track for the time, and
    Epinions' `user product category rating helpfulness time` the category for the rating: by
    position, only u.data's two to four are known."""
    row = [v.strip() for v in first_line.split(separator)]
    n_fields = len(row)
    if n_fields > len(_POSITIONAL):
        rows = _head_rows(_local(file), separator)
        raise DataError(
            f"{_local(file)}: no header line and {n_fields} fields ({first_line.strip()[:60]!r}): a headerless "
            f"file is read by position only with 2 to 4 fields (user, item[, rating[, timestamp]], as in u.data), "
            f"so which of these is the item, the rating and the time is unknown; "
            f"{_headerless_hint(row, separator, _local(file), rows)}",
            setting="data.header",
            value=",".join(_suggested_names(row, rows)),
        )


def _positional_files(
    label: Path | str, files: list[DataFile], separator: str, first: str
) -> list[_TextFile]:
    """Headerless files, each laid out by its own first line; files of one source must have the
    same number of fields, or a directory such as an unzipped MovieLens 1M (ratings.dat beside
    users.dat and movies.dat, all `::`-separated) would fail deep in the read, or worse, mix
    user or movie records into the ratings."""
    texts = [_positional(files[0], separator, first)]
    for f in files[1:]:
        lines = _head_lines(_local(f), _read_head(_local(f)))
        if lines and _is_header(lines[0], separator):
            raise DataError(
                f"{_local(f)}: starts with a header line ({lines[0][:80]!r}) while {files[0].name} of the same "
                f"source has none (its first line is data: {first[:60]!r}), so its columns would be taken by "
                "position and its header read as a row: files of one source must all have a header line, "
                "or none; if the others' columns come in that order, name them with {option} (a file whose "
                "first line is those names reads it as its header), or add that header line to them (e.g. "
                f"`sed -i '1i {lines[0]}' FILE`), or "
                "ingest the file on its own with --append",
                setting="data.header",
                value=_header_value(_split_line(lines[0], separator)),
            )
        texts.append(_positional(f, separator, lines[0] if lines else first))
    shapes: dict[int, list[str]] = {}
    for t in texts:
        shapes.setdefault(len(t.columns), []).append(t.file.name)
    if len(shapes) > 1:
        n_fields = {n if separator != "::" else (n + 1) // 2: names for n, names in shapes.items()}
        listing = "; ".join(f"{n} fields: {_some(names)}" for n, names in n_fields.items())
        raise DataError(
            f"{label}: its headerless files have different numbers of fields ({listing}), so they are "
            "not all interaction logs; ingest the interaction file on its own (e.g. ratings.dat), "
            "or move the others out"
        )
    _refuse_many_fields(files[0], separator, first)
    return texts


def _colon_header_files(label: Path | str, files: list[DataFile], columns: ColumnMap | None) -> list[_TextFile]:
    """`::` files whose first line names the columns (`user_id::item_id::rating::timestamp`, as
    exports of ML-1M-shaped logs often add): each file's header is mapped like a CSV header. The
    file is split on ':' as for headerless ones, so a name may not hold a ':' itself."""
    texts, unmapped = [], []
    for f in files:
        lines = _header_lines(_local(f))
        header = [name.strip() for name in lines[0].split("::")] if lines else []
        if not header or _looks_like_data(header) or any(":" in name for name in header):
            raise DataError(
                f"{_local(f)}: a `::`-separated file whose first line is neither a header of plain "
                f"names nor a data row ({(lines or [''])[0][:60]!r}); files of one source must all have "
                "a header line, or none"
            )
        try:
            mapping = map_columns(_local(f), header, columns, separator="::")
        except DataError as exc:
            unmapped.append((f, exc))
            continue
        names = [header[i // 2] if i % 2 == 0 else f"_gap_{i // 2}" for i in range(2 * len(header) - 1)]
        texts.append(_TextFile(f, ":", True, None, names, mapping, tuple(names)))
    if unmapped:
        raise _unmapped_files(label, unmapped, [(t.file, t.mapping) for t in texts])
    _same_roles(label, [(t.file, t.mapping) for t in texts])
    return texts


def _header_value(names: list[str]) -> str:
    """`names` as data.header's comma-separated value, an empty one (pandas' index column) named
    by its position, so the value the message gives is one the setting takes."""
    return ",".join(name or f"column_{n + 1}" for n, name in enumerate(names))


def _split_line(line: str, separator: str) -> list[str]:
    """A delimited line's fields, quotes read as CSV reads them (Steam's `"The Elder Scrolls V
    Skyrim"`), so a separator inside a quoted field does not count; `::` split as it is."""
    if separator == "::":
        return [f.strip() for f in line.split("::")]
    return [f.strip() for f in next(csv.reader([line], delimiter=separator, quotechar='"'), [])]


def _named_files(
    label: Path | str, files: list[DataFile], separator: str, header: list[str], columns: ColumnMap | None
) -> list[_TextFile]:
    """Files read under the names data.header gives their fields (a headerless YOOCHOOSE, Last.fm
    or Taobao log left as it is: read-only, in a landing directory, gzip'd). Each file of a
    directory is checked on its own: a first line that spells those names (compared as column
    names are) is the file's header and is skipped; one that reads as another header (plain names,
    no number or date, naming a role or one of the given names) is refused rather than read as a
    row; a first line of another number of fields is refused, naming both counts and the line."""
    given = [_base_name(name) for name in header]
    colons = separator == "::"
    names = [header[i // 2] if i % 2 == 0 else f"_gap_{i // 2}" for i in range(2 * len(header) - 1)] if colons else header
    shapes = []
    for f in files:
        lines = _header_lines(_local(f))
        first = lines[0] if lines else ""
        fields = _split_line(first, separator) if first else []
        own = [_base_name(field.lstrip("#")) for field in fields]
        has_header = own == given
        if fields and not has_header and not _looks_like_data(fields):
            if _is_header(first, separator) or set(own) & set(given):
                raise DataError(
                    f"{_local(f)}: starts with a header line ({first[:80]!r}) other than the names data.header "
                    f"gives ({','.join(header)}), which would be read as a row: leave data.header unset to read "
                    "the file's own header, or give its names in its order"
                )
        if fields and len(fields) != len(header):
            raise DataError(
                f"{_local(f)}: data.header gives {len(header)} names ({','.join(header)}) but the file's first line "
                f"has {len(fields)} fields ({first[:80]!r}): give one name per field, in order"
            )
        shapes.append((f, has_header))
    mapping = map_columns(label, header, columns)  # after the counts: a name short is no missing role
    sep, quote = (":", None) if colons else (separator, '"')
    return [_TextFile(f, sep, has_header, quote, list(names), mapping, tuple(names)) for f, has_header in shapes]


def _local(file: DataFile) -> Path:
    if file.path is None:
        raise DataError(f"{file.label}: text formats are read from local files only")
    return file.path


def _scan_text(
    label: Path | str,
    files: list[DataFile],
    fmt: str,
    columns: ColumnMap | None,
    per_file: bool,
    header: list[str] | None = None,
) -> RawSource:
    first_path = _local(files[0])
    lines = _header_lines(first_path)
    if not lines:
        raise NoDataRows(f"{label}: empty file")
    first = lines[0]
    notes: list[str] = []  # for ingest's warnings
    if fmt == "movielens-dat":
        if "::" not in first:
            raise DataError(f"{label}: format movielens-dat expects 'user::item::rating::timestamp' lines")
        if header is not None:
            texts = _named_files(label, files, "::", header, columns)
        elif _looks_like_data(first.split("::")):
            texts = _positional_files(label, files, "::", first)
        else:
            texts = _colon_header_files(label, files, columns)
    else:
        # A directory's files may be `.csv` and `.tsv` months (`_one_format`): a tab is each one's
        # separator there, while a single file forced to csv keeps to `, ; |` or a space.
        separator = "\t" if fmt in {"tsv", "movielens", "recbole"} else (_delimiter if per_file else _csv_separator)(lines)
        _same_separator(label, lines, separator)
        fields = first.split(separator)
        headerless = header is None and (
            fmt == "movielens" or (fmt in {"csv", "tsv"} and len(fields) >= 2 and all(_is_number(f) for f in fields))
        )
        if headerless:
            if len(fields) < 2:
                raise DataError(
                    f"{label}: format {fmt} expects {separator!r}-separated columns, found one column"
                )
            texts = _positional_files(label, files, separator, first)
        elif header is not None:
            texts = _named_files(label, files, separator, header, columns)
        else:
            # Each file's own header is mapped, so files whose columns come in another order (or
            # under another recognised name) still line up; files missing a role are named.
            texts, unmapped = [], []
            for f in files:
                own = separator if f is files[0] or fmt != "csv" else _file_separator(_local(f), label)
                header = _csv_header(_local(f), own, '"')
                # A `#user,item` header: its first name is read without the '#'.
                names = None
                if header[0].startswith("#") and _hash_header(_head_lines(_local(f), _read_head(_local(f)))):
                    names = header = [header[0].lstrip("#").strip(), *header[1:]]
                try:
                    mapping = map_columns(_local(f), header, columns, separator=own)
                except DataError as exc:
                    # A header that does not map and reads as data, as wide as the first file's:
                    # a month exported without its header line (an empty name alone, pandas'
                    # index column, maps and is no sign of one).
                    if texts and _looks_like_data(header) and len(header) == len(texts[0].columns):
                        raise DataError(
                            f"{_local(f)}: has no header line (its first line looks like data: "
                            f"{(_header_lines(_local(f)) or [''])[0][:60]!r}) while {texts[0].file.name} of the "
                            "same source starts with one; files of one source must all have a header line, or "
                            "none: if its columns are the same, name them with {option} (a file whose first line "
                            "is those names reads it as its header), or add that line first (`sed -i "
                            f"'1i {own.join(texts[0].columns)}' FILE`), or ingest the file on its own with --append",
                            setting="data.header",
                            value=_header_value(list(texts[0].columns)),
                        ) from None
                    unmapped.append((f, exc))
                    continue
                texts.append(_TextFile(f, own, True, '"', names, mapping, tuple(header)))
                notes.extend(_repeated_names(_local(f), header, mapping))
                notes.extend(_unread_sequences(_local(f), header, mapping))
            if unmapped:
                raise _unmapped_files(label, unmapped, [(t.file, t.mapping) for t in texts])
            _same_roles(label, [(t.file, t.mapping) for t in texts])

    def scan(dtypes: dict[str, pl.DataType]) -> pl.LazyFrame:
        return _concat([_select(t.scan(dtypes), t.mapping, t.file, per_file, numbered=False) for t in texts])

    def rebuild() -> pl.LazyFrame:
        flagged = (_extra_fields(),)
        return _concat([_select(t.scan({}, True), t.mapping, t.file, per_file, flagged, False) for t in rebuilt])

    # When the read fails, validation reads the rebuild instead (and only then): rows with more
    # fields than the header are quarantined as EXTRA_FIELDS, not cut short. Tab-separated logs
    # rarely quote, but their text fields may start with a quote (Last.fm's `"Weird Al"
    # Yankovic`), which polars' quoted read refuses for the whole file: their rebuild reads
    # quotes as plain text.
    tab_quoted = all(t.separator == "\t" and t.quote is not None for t in texts)
    rebuilt = [replace(t, quote=None) for t in texts] if tab_quoted else texts
    # polars checks a row's field count only when every column is read, and the empty `_gap_`
    # columns of a `::` file never are: `1::10::5::978300760::x` would lose its fifth field
    # without a word. Such files are read through the rebuild from the start; its one column past
    # the last finds the rows (about the cost of the plain read on a 3M-row ratings.dat).
    colons = fmt == "movielens-dat"
    separators = {t.separator for t in texts}
    return RawSource(
        label,
        fmt,
        rebuild() if colons else scan({}),
        texts[0].mapping,
        per_file,
        exact=None if colons else rebuild,
        positional_rows=True,
        typed=scan,
        layout=_byte_layout(texts),
        separator=next(iter(separators)) if len(separators) == 1 else None,
        comma_files=tuple(t.file.name for t in texts if t.separator == ";") if len(separators) > 1 else (),
        notes=notes,
        header=tuple(header) if header is not None else texts[0].columns if texts[0].has_header else (),
    )


def _file_separator(path: Path, label: Path | str) -> str:
    """The separator of one headed file of a delimited source, from its own first lines: monthly
    exports change it (a `;` month from a decimal-comma locale's spreadsheet beside `,` months;
    a `.tsv` month beside `.csv` ones), and read with the first file's, such a file's header was
    one column, refused as if the file were no interaction log (`_delimiter`)."""
    lines = _header_lines(path)
    if not lines:
        return ","
    separator = _delimiter(lines)
    _same_separator(path, lines, separator)
    return separator


def _delimiter(lines: list[str]) -> str:
    """A headed delimited file's separator: a tab when its first line holds one and none of
    `, ; |` outside quotes (a `.tsv` month of a source read as CSV), else `_csv_separator`."""
    bare = _QUOTED.sub("", lines[0])
    return "\t" if "\t" in bare and not any(s in bare for s in _CSV_SEPARATORS) else _csv_separator(lines)


def _same_separator(label: Path | str, lines: list[str], separator: str) -> None:
    """DataError when the header line is split by `separator` but none of the rows below it is,
    while they all hold another one (a `user_id,item_id,rating` line added by hand on top of
    Book-Crossing's `"43842";"0739432540";"0"` rows): every row would be one field, and the error
    would be a missing item column, pointing away from the line to fix."""
    rows = [_QUOTED.sub("", row) for row in lines[1:21]]
    if not rows or separator not in _QUOTED.sub("", lines[0]) or any(separator in row for row in rows):
        return
    other = next((sep for sep in ("\t", ";", "|", ",") if sep != separator and all(sep in row for row in rows)), None)
    if other is not None:
        raise DataError(
            f"{label}: the header line is split by {separator!r} but the rows by {other!r} "
            f"({lines[0][:60]!r} over {lines[1][:60]!r}): write the header line with {other!r} "
            "between the names, as the rows are"
        )


def _repeated_names(path: Path, header: list[str], mapping: dict[str, str]) -> list[str]:
    """A note for each column read for a role whose name the header line has more than once
    (a Last.fm 1K export headed `user timestamp artist_id artist artist_id song`): polars reads
    the first and renames the others `<name>_duplicated_<n>`, a name in no file, so the choice
    would go unseen and the others could not be named with a column option."""
    notes = []
    for canon, source in mapping.items():
        positions = [i + 1 for i, name in enumerate(header) if name == source or name.startswith(f"{source}_duplicated_")]
        if len(positions) > 1:
            notes.append(
                f"{path}: the header names {len(positions)} columns {source!r} (columns "
                f"{', '.join(map(str, positions))}); column {positions[0]} is read as the {_MAP_FIELDS[canon]}: "
                "to read another, rename it in the header line and name it with the column option"
            )
    return notes


def _unread_sequences(path: Path, header: list[str], mapping: dict[str, str]) -> list[str]:
    """A note for each RecBole `:token_seq` column of a header that is not read: a sequential
    data set's `item_id_list:token_seq` holds each row's earlier items, and reading the row as its
    session and target item alone leaves all of those out without a word."""
    read = set(mapping.values())
    lists = [name for name in header if name.strip().endswith(":token_seq") and name not in read]
    if not lists:
        return []
    return [
        f"{path}: {', '.join(repr(name) for name in lists)} hold(s) a list of ids per row (a RecBole "
        "sequential file), which is not read: each row is read as its user and item alone; for every "
        "interaction, ingest the data set's flat .inter file (one user, item and time per line)"
    ]


@dataclass(frozen=True)
class ByteLayout:
    """What of delimited files is not field text, so validation can prove that a typed read saw
    every field spelled exactly as polars writes its value back (`validation._typed_read_is_exact`):
    `data_bytes` = the files' sizes less their header lines, plus one for each missing final line
    end; each row adds `columns` bytes of separators and line end to its fields. Only for
    uncompressed files with LF line ends whose every column is mapped, each file with the same
    number of columns and the same canonical column `last`. `files` holds each file's (path,
    size, mtime_ns) when counted: a file written to since (a log still growing) voids the count."""

    data_bytes: int
    columns: int
    last: str
    files: tuple[tuple[str, int, int], ...] = ()

    def unchanged(self) -> bool:
        """Whether every file still has the size and modification time it had when counted."""
        try:
            stats = [(os.stat(path), size, mtime) for path, size, mtime in self.files]
        except OSError:
            return False
        return all(st.st_size == size and st.st_mtime_ns == mtime for st, size, mtime in stats)


def _byte_layout(texts: list[_TextFile]) -> ByteLayout | None:
    data_bytes, shapes, files = 0, set(), []
    for text in texts:
        if len(text.mapping) != len(text.columns) or set(text.mapping.values()) != set(text.columns):
            return None  # an unmapped column's bytes would go uncounted
        with _local(text.file).open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
            end = head.find(b"\n")
            if head[:2] == b"\x1f\x8b" or end < 0 or head[:end].endswith(b"\r"):
                return None  # compressed, one long line, or CRLF line ends
            stat = os.fstat(fh.fileno())
            size = stat.st_size
            fh.seek(size - 1)
            final_lf = fh.read(1) == b"\n"
        files.append((str(_local(text.file)), size, stat.st_mtime_ns))
        data_bytes += size - (end + 1 if text.has_header else 0) + (0 if final_lf else 1)
        last = next(canon for canon, source in text.mapping.items() if source == text.columns[-1])
        shapes.add((len(text.columns), last))
    if len(shapes) != 1:
        return None
    ((columns, last),) = shapes
    return ByteLayout(data_bytes, columns, last, tuple(files))


# --------------------------------------------------------------------------- JSON Lines


def open_decompressed(path: Path) -> IO[bytes]:
    """`path` opened for reading bytes, decompressed when it is gzip'd (as polars reads it)."""
    with path.open("rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")  # type: ignore[return-value]


def first_non_utf8(source: Path | str) -> str | None:
    """Where the first byte that is not UTF-8 stands in `source` (a file, or a directory's data
    files in read order): `b.csv line 8002 (byte 0xe9)`, or None. For the error of a read that
    failed on one past the sniffed head, so the user can find it in a large file; one pass over
    the files, on that error path only."""
    path = Path(source)
    if not path.exists():
        return None
    for file in data_files(path) if path.is_dir() else [path]:
        decoder, line = codecs.getincrementaldecoder("utf-8")(), 1
        with open_decompressed(file) as fh:
            while block := fh.read(1 << 20):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:  # exc.object: the block after the bytes held over
                    line += exc.object.count(b"\n", 0, exc.start)
                    name = file.relative_to(path).as_posix() if path.is_dir() else file.name
                    return f"{name} line {line} (byte {exc.object[exc.start]:#x})"
                line += block.count(b"\n")
    return None


def _whole_lines(path: Path, limit: int = 1000, budget: int = _SNIFF_BYTES) -> list[bytes]:
    """The first `limit` lines of a (possibly gzip'd) file, or as many as fill `budget` bytes (the
    sniff window), but always whole: a JSON Lines record can be longer than the window (a long
    review text)."""
    lines: list[bytes] = []
    used = 0
    try:
        with open_decompressed(path) as fh:
            for line in fh:
                lines.append(line)
                used += len(line)
                if len(lines) >= limit or used >= budget:
                    break
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read file ({exc.__class__.__name__}: {exc})") from None
    return lines


_NOT_JSON = (json.JSONDecodeError, UnicodeDecodeError, RecursionError)
"""What `json.loads` raises on a line that is no JSON text it can read: a line nested deeper than
Python's recursion limit (`[[[[...`) is such a line too, quarantined later as malformed_json,
rather than an 'unexpected RecursionError' ending the command."""


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


_JQ_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a key jq's `.name` spells as it is


def _refuse_nested_only(label: Path | str, records: list[dict]) -> None:
    """DataError for JSON Lines whose every key holds an object or a list: a document of nested
    records (Spotify's Million Playlist Dataset slice, `{"info": {...}, "playlists": [{"pid": 0,
    "tracks": [...]}]}`, after the `jq -c .` the pretty-printed refusal gives), where no line is an
    interaction and the missing-column hint offered `--user-col info --item-col playlists`. The
    message names the keys and the `jq` line that writes one line per (user, item) where the first
    record shows a list of objects holding a list of objects (each playlist's tracks), else the one
    that writes the first list's elements one a line."""
    if not records or any(not isinstance(v, dict | list) for record in records for v in record.values()):
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
            keys = _named_keys(p, _jsonl_keys(p, p), columns)
            first_keys = keys if first_keys is None else first_keys
            mappings.append((f, map_columns(p, keys, columns)))
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

    def struct(mapping: dict[str, str]) -> pl.Struct:
        return pl.Struct({src: pl.String() for src in dict.fromkeys(mapping.values())})

    frame = _concat(
        [
            _decode_lines(_jsonl_lines(p), shaped, struct(m), m, f, per_file, spellings[f.name], flagged)
            for (f, m), p in zip(mappings, paths, strict=True)
        ]
    )

    def exact() -> pl.LazyFrame:
        """Per-line check for the rare line that looks like an object but does not decode
        (`{"a":}`, an object or list where a value should be): bisection, not a Python loop."""
        frames = []
        for (f, m), p in zip(mappings, paths, strict=True):
            lines = _jsonl_lines(p).collect()
            text = lines.get_column(_LINE)
            ok = decodable(text, struct(m), text.str.contains(_OBJECT_LINE).to_numpy())
            late = spellings[f.name]
            frames.append(_decode_lines(lines.lazy(), pl.Series(_OK, ok), struct(m), m, f, per_file, late, flagged))
        return _concat(frames)

    late = _confirm_late_keys(unfound, per_file) if flagged else None
    header = tuple(first_keys or ())  # the first lines' keys, as a header names columns (for hints)
    return RawSource(label, "jsonl", frame, mappings[0][1], per_file, exact, notes=notes, header=header, late_keys=late)


# --------------------------------------------------------------------------- Parquet


def _hive_values(name: str) -> dict[str, str | None]:
    """`key=value` directories of a file's relative path (hive partitioning), as strings."""
    parts = PurePosixPath(name).parts[:-1]
    values: dict[str, str | None] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if sep and key:
            value = unquote(value)
            values[key] = None if value == "__HIVE_DEFAULT_PARTITION__" else value
    return values


_PARQUET_ROW = "__source_row"
"""The row index of a Parquet scan, renamed to ROW once the file's columns are selected: a table
may hold a `source_row` column of its own (a processed directory's batches, lineage columns),
which polars refuses to add a row index beside."""


def _scan_parquet(
    label: Path | str, files: list[DataFile], columns: ColumnMap | None, per_file: bool
) -> RawSource:
    """One lazy scan per file (so ROW restarts at 1 in each), partition values from the relative
    path added as string columns. Only the files' schemas (footers) are read here: each file's
    own names are mapped to roles (all must fill the first file's roles), and its own types say
    which of its id columns are floats, since
    pandas writes a partition holding a missing id as float64 beside int64 ones (a float id
    column read as text in a concatenation would spell user 3 as "3.0" there and "3" elsewhere)."""
    scans: list[tuple[DataFile, pl.LazyFrame, pl.Schema]] = []
    for f in files:
        try:
            frame = pl.scan_parquet(f.target(), row_index_name=_PARQUET_ROW, row_index_offset=1)
            if per_file:
                hive = _hive_values(f.name)
                frame = frame.with_columns(pl.lit(v, dtype=pl.String).alias(k) for k, v in hive.items())
            scans.append((f, frame, frame.collect_schema()))
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"{f.label}: not a readable Parquet file ({first_error_line(exc)})") from None
        except OSError as exc:
            raise DataError(f"{f.label}: cannot read ({exc})") from None
    # Each file's own names are mapped, as each delimited file's header and each JSON Lines
    # file's keys are: a month written as `userId` beside months of `user_id` lines up.
    mapped: list[tuple[DataFile, pl.LazyFrame, pl.Schema, dict[str, str]]] = []
    unmapped: list[tuple[DataFile, DataError]] = []
    for f, frame, own in scans:
        try:
            names = [h for h in own.names() if h != _PARQUET_ROW]
            mapped.append((f, frame, own, map_columns(f.label, names, columns)))
        except DataError as exc:
            unmapped.append((f, exc))
    if unmapped:
        raise _unmapped_files(label, unmapped, [(f, m) for f, _, _, m in mapped])
    first, mapping = mapped[0][0], mapped[0][3]
    for f, _, own, m in mapped:
        _same_parquet_roles(f, m, mapping, first)
        flags = [(canon, m[canon]) for canon in (USER, ITEM) if own[m[canon]] == pl.Boolean]
        if flags:  # every id would be "true" or "false": a flag column taken for the ids
            canon, src = flags[0]
            raise DataError(
                f"{f.label}: the {_MAP_FIELDS[canon]} column {src!r} holds booleans (true / false), not ids; "
                "it is likely a flag taken for the id column: name the id column with {option}",
                setting=f"data.columns.{_MAP_FIELDS[canon]}",
            )
        nested = {canon: src for canon, src in m.items() if own[src].is_nested()}
        if nested:
            listing = ", ".join(f"{src!r} ({own[src]})" for src in nested.values())
            raise DataError(
                f"{label if f is first else f.label}: column(s) {listing} hold lists or structs, not one value a row; "
                "ingest reads one (user, item) interaction a row: explode a list of items first (polars / pandas "
                "`explode`), or name a plain column with {option}",
                setting=f"data.columns.{_MAP_FIELDS[next(iter(nested))]}",
            )
    selected = []
    time_types = [own[m[TIME]] for _, _, own, m in mapped] if TIME in mapping else []
    # Partitions whose time is a date / datetime beside ones where it is a number or text: a
    # concatenation would cast the datetimes to their integer microseconds (read back by
    # magnitude, so a time before 1973 went wrong) and a date to its day count (read as
    # seconds: 1970). Each such column is then read as text, as each file alone would be.
    mixed_time = len({isinstance(t, pl.Datetime | pl.Date) for t in time_types}) > 1
    any_float = any(own[m[canon]].is_float() for _, _, own, m in mapped for canon in (USER, ITEM))
    notes: list[str] = []
    for f, frame, own, mapping in mapped:
        floats = [canon for canon in (USER, ITEM) if canon in mapping and own[mapping[canon]].is_float()]
        fixes = [_float_id(canon) for canon in floats]
        notes += _rounded_float_ids(f, frame, [mapping[c] for c in floats])
        time_type = own[mapping[TIME]] if TIME in mapping else None
        if mixed_time:
            fixes.append(_time_text(pl.col(TIME), time_type).alias(TIME))
        elif isinstance(time_type, pl.Datetime):  # pandas writes tz-aware and naive partitions alike
            fixes.append(as_utc(pl.col(TIME), time_type).alias(TIME))
        verdict = (_float_id_range([mapping[c] for c in floats]),) if any_float else ()  # every file: they concatenate
        one = _select(frame, mapping, f, per_file, extra=verdict, row_index=_PARQUET_ROW)
        selected.append(one.with_columns(fixes) if fixes else one)
    # The first file's column names, as a delimited file's header: the hints that name a session or
    # an item's name column (Diginetica's NA users: `--user-col sessionId`) read them.
    header = tuple(mapped[0][2])
    return RawSource(
        label, "parquet", _concat(_as_text_where_apart(selected)), mapped[0][3], per_file, notes=notes, header=header
    )


def _as_text_where_apart(frames: list[pl.LazyFrame]) -> list[pl.LazyFrame]:
    """`frames` (one per Parquet file, canonical columns) with each column whose types have no
    common type across the files read as text in every file, as validation reads text anyway:
    one month's export writes its ids or times dictionary-encoded (Categorical) beside int64
    ones, or binary beside integers, and polars refuses to concatenate those (`failed to
    determine supertype of i64 and cat`), which failed the whole source with no file or column
    named. Columns that combine (int32 and int64, string and large_string) are left alone."""
    if len(frames) < 2:
        return frames
    schemas = [frame.collect_schema() for frame in frames]
    apart = []
    for name in (USER, ITEM, TIME, WEIGHT, EVENT):
        types = [schema[name] for schema in schemas if name in schema]
        if len(set(types)) < 2:
            continue
        try:
            pl.concat([pl.LazyFrame(schema={name: t}) for t in types], how="vertical_relaxed").collect_schema()
        except pl.exceptions.PolarsError:
            apart.append(name)
    if not apart:
        return frames
    return [
        frame.with_columns(_time_text(pl.col(n), schema[n]).alias(n) for n in apart)
        for frame, schema in zip(frames, schemas, strict=True)
    ]


def _same_parquet_roles(f: DataFile, own: dict[str, str], first_roles: dict[str, str], first: DataFile) -> None:
    """DataError when Parquet file `f`'s columns fill other roles than the first file's: a later
    month that gained a `rating` would have its values left out (or every other file's rows
    would have none), one that lost its time column would leave its rows without times. Each
    file's own names are mapped (`_scan_parquet`), so a renamed column is no such case."""
    extra = [(canon, src) for canon, src in own.items() if canon not in first_roles]
    if extra:
        canon, src = extra[0]
        raise DataError(
            f"{f.label}: has a {_MAP_FIELDS[canon]} column {src!r} that {first.name} lacks, so its values "
            "would be left out; the files of a source must fill the same roles: ingest it on its own "
            "(with --append), or add the column to the others"
        )
    lacking = [(canon, src) for canon, src in first_roles.items() if canon not in own]
    if lacking:
        canon, src = lacking[0]
        raise DataError(
            f"{f.label}: no {_MAP_FIELDS[canon]} column, which {first.name} has ({src!r}); the files of a "
            "source must fill the same roles: ingest it on its own (with --append), or move it out"
        )


FLOAT_EXACT_IDS = 2**53
"""Beyond +-2^53 a float64 holds only every second integer (then every fourth, ...)."""


def _rounded_float_ids(f: DataFile, frame: pl.LazyFrame, names: list[str]) -> list[str]:
    """A note for each float id column (`names`, the file's own) holding whole ids at or beyond
    +-2^53 that a 64-bit integer still holds: they are read as the whole number the float is, but
    a float64 cannot tell such neighbours apart, so a writer that put int64 ids through float64
    (pandas, for a column with a missing value) may already have merged distinct ids into one.
    Reads the file's float id columns only (Parquet is columnar); most files have none."""
    if not names:
        return []
    wide = [
        pl.col(n).filter(pl.col(n).is_finite() & (pl.col(n).abs() >= FLOAT_EXACT_IDS)
                         & pl.col(n).cast(pl.Int64, strict=False).is_not_null()).n_unique().alias(n)
        for n in names
    ]  # fmt: skip
    try:
        counts = frame.select(wide).collect().row(0, named=True)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{f.label}: not a readable Parquet file ({first_error_line(exc)})") from None
    return [
        f"{f.label}: column {name!r} holds {count} float id(s) at or beyond 2^53 ({FLOAT_EXACT_IDS}), where a float "
        "cannot hold every integer: distinct ids may already have been merged by the writer's rounding "
        "(pandas puts an integer column with a missing value through float64); write ids as integers or strings"
        for name, count in counts.items()
        if count
    ]


def _time_text(column: pl.Expr, dtype: pl.DataType | None) -> pl.Expr:
    """A time column as the text validation parses: a date or datetime (UTC once `as_utc` ran)
    as ISO-8601, anything else as its own text."""
    if isinstance(dtype, pl.Datetime):
        return as_utc(column, dtype).dt.strftime("%Y-%m-%dT%H:%M:%S%.f")
    if isinstance(dtype, pl.Date):
        return column.dt.strftime("%Y-%m-%d")
    return column.cast(pl.String)


def _float_id_range(names: list[str]) -> pl.Expr:
    """READ_ERROR for a Parquet file's rows: ID_OUT_OF_RANGE where one of its float id columns
    `names` (the file's own names) holds a whole number no Int64 holds (infinite, or beyond +-2^63), else null. Read on the
    raw column (before `_float_id`, which makes such a value null): such an id was quarantined as
    `missing_user`, its value erased from the quarantine file."""
    out = [pl.col(n).is_not_nan() & (pl.col(n) == pl.col(n).floor()) & pl.col(n).cast(pl.Int64, strict=False).is_null()
           for n in names]  # fmt: skip
    flagged = pl.any_horizontal(out) if out else pl.lit(False)
    return pl.when(flagged).then(pl.lit(ID_OUT_OF_RANGE)).otherwise(pl.lit(None, dtype=pl.String)).alias(READ_ERROR)


def _float_id(name: str) -> pl.Expr:
    """A float id column as the ids it spells: pandas stores an integer id column that holds a
    missing value as float64 (1.0, 2.0, NaN), which read as text would give ids "1.0" (unlike the
    "1" of the same log as CSV) and a user "NaN". Whole values become integer text, NaN missing; a
    whole value no Int64 holds keeps its float text (quarantined: `_float_id_range`)."""
    value = pl.col(name)
    whole = value.cast(pl.Int64, strict=False)
    return (
        pl.when(value.is_nan())
        .then(pl.lit(None, dtype=pl.String))
        .when((value == value.floor()) & whole.is_not_null())
        .then(whole.cast(pl.String))
        .otherwise(value.cast(pl.String))
        .alias(name)
    )


# --------------------------------------------------------------------------- entry points


def _scan_remote(location: Location, format: str | None, columns: ColumnMap | None) -> RawSource:
    """A non-local URL: Parquet files (a file, or a directory that may be hive-partitioned)."""
    found = location.files(DATA_SUFFIXES)
    files = [DataFile(name=r.name, location=location, remote_path=r.path) for r in found]
    fmt = format
    if fmt is None:
        first = files[0]
        if first.name.lower().endswith(_PARQUET_SUFFIXES):
            fmt = "parquet"
        else:
            with location.open(found[0].path) as fh:
                fmt = "parquet" if fh.read(4) == b"PAR1" else "text"
    if fmt != "parquet":
        raise DataError(
            f"{location.url}: {location.protocol}:// sources are read as Parquet only (found {fmt}); "
            "copy text logs to a local directory or convert them to Parquet"
        )
    parquet = [f for f in files if f.name.lower().endswith(_PARQUET_SUFFIXES)] if location.is_dir else files
    if not parquet:
        raise DataError(f"{location.url}: directory holds no Parquet files")
    return _scan_parquet(location.url, parquet, columns, location.is_dir)


def scan_source(
    source: str | Path, format: str | None = None, columns: ColumnMap | None = None, header: list[str] | None = None
) -> RawSource:
    """Lazily scan a file, a directory or an fsspec URL into raw canonical columns (see RawSource).

    Nothing is parsed here beyond splitting fields: a bad value becomes a quarantined row later,
    while a file that cannot be read at all (missing, binary, wrong delimiter, no user/item
    column, empty, unknown URL protocol) raises DataError naming the file and the cause.
    `header` (data.header): the names of the fields of delimited files without a header line
    (`_named_files`); refused for Parquet and JSON Lines, whose columns are named already.
    """
    if format is not None and format not in FORMATS:
        raise DataError(f"{source}: unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    url = as_url(source)
    if url is not None:
        location = resolve(url)
        if location.is_local:
            return scan_source(location.local_path, format, columns, header)
        if header is not None:
            raise _header_not_text(url, "parquet")
        return _scan_remote(location, format, columns)
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    per_file = path.is_dir()
    listing = list_source(path) if per_file else SourceListing([path], [])
    paths = listing.files
    if not per_file and path.stat().st_size == 0:
        raise NoDataRows(f"{path}: empty file")
    fmt = _one_format(path, paths, format) if per_file else (format or detect_format(path))
    files = [DataFile(name=p.relative_to(path).as_posix() if per_file else p.name, path=p) for p in paths]
    if header is not None and fmt in {"parquet", "jsonl"}:
        raise _header_not_text(path, fmt)
    if fmt == "parquet":
        scanned = _scan_parquet(path, files, columns, per_file)
    elif fmt == "jsonl":
        scanned = _scan_jsonl(path, files, columns, per_file)
    else:
        scanned = _scan_text(path, files, "csv" if fmt == "movielens-csv" else fmt, columns, per_file, header)
        scanned.format = fmt
    if per_file:
        warn_unread(path, listing)
    return scanned


def _header_not_text(source: Path | str, fmt: str) -> DataError:
    """data.header on a source whose columns are named by its format: the names would be ignored."""
    return DataError(
        f"{source}: data.header names the fields of delimited text files without a header line, but this "
        f"source is {fmt}, whose columns are named already: leave data.header unset (name columns with "
        "data.columns.* instead)"
    )
