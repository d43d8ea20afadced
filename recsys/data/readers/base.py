"""The readers' shared vocabulary: canonical column names of the raw frame (ROW, SOURCE_FILE, the
per-row read-error reasons), the formats and the column names each role is recognised by
(AUTO_NAMES), and the result types every reader returns (RawSource, DataFile, ByteLayout).

A leaf of the package: every other readers module imports from it, it imports none of them.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import polars as pl

from recsys.data.remote import Location
from recsys.data.schema import EVENT, ITEM, TIME, USER, WEIGHT
from recsys.errors import DataError

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


def truncated_gzip_error(path: Path | str) -> DataError:
    """What a truncated .gz is and what to do: Python's gzip says "Compressed file ended before the
    end-of-stream marker was reached", polars "unexpected end of file", and neither says why."""
    return DataError(
        f"{path}: its gzip stream ends early: the file is cut short, as an interrupted download or copy leaves it "
        f"(`gzip -t {path}` says so too); fetch or copy it again (`recsys data fetch NAME` for the built-in sets)"
    )


def damaged_gzip_error(path: Path | str, exc: BaseException) -> DataError:
    """What a .gz damaged inside its stream is (bytes changed, not cut: a faulty download, copy or
    disk) and what to do: Python's gzip says "Error -3 while decompressing data: invalid block type"
    or "CRC check failed", polars "corrupt deflate stream" or "corrupt gzip stream does not have a
    matching checksum", and neither says what it means for the file."""
    detail = str(exc).removeprefix("Error -3 while decompressing data: ")
    return DataError(
        f"{path}: its gzip stream is damaged ({detail}): bytes of the file were changed, as a faulty download, copy "
        f"or disk leaves it (`gzip -t {path}` says so too); fetch or copy it again (`recsys data fetch NAME` for "
        "the built-in sets)"
    )


def gzip_fault(path: Path) -> DataError | None:
    """The error for gzip'd `path` when its stream is cut short or damaged, read through to its end;
    None when it is whole, no gzip, or unreadable for another reason. For error paths only (a read
    that failed with a message that may mean it), never the common path."""
    try:
        with path.open("rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                return None
        with gzip.open(path, "rb") as gz:
            while gz.read(1 << 20):
                pass
    except EOFError:
        return truncated_gzip_error(path)
    except (zlib.error, gzip.BadGzipFile) as exc:
        return damaged_gzip_error(path, exc)
    except OSError:
        return None
    return None


class GzipReader(gzip.GzipFile):
    """gzip.GzipFile whose reads turn the EOFError of a truncated file into `truncated_gzip_error`,
    and the zlib.error / BadGzipFile of a damaged one into `damaged_gzip_error`: uncaught, the first
    reached the CLI as "unexpected EOFError ... this is a bug" from the JSON Lines key search and
    the --encoding copy, the second as "CRC check failed ...: check the path and its permissions",
    and the sniff said "cannot read file (EOFError: ...)" or "(BadGzipFile: ...)"."""

    def read(self, size: int | None = -1) -> bytes:
        with _named_gzip_faults(self.name):
            return super().read(size)

    def read1(self, size: int = -1) -> bytes:
        with _named_gzip_faults(self.name):
            return super().read1(size)

    def readline(self, size: int | None = -1) -> bytes:
        with _named_gzip_faults(self.name):
            return super().readline(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        with _named_gzip_faults(self.name):
            return super().seek(offset, whence)


@contextlib.contextmanager
def _named_gzip_faults(name: str) -> Iterator[None]:
    """A cut-short or damaged gzip stream read inside, raised as the DataError that says which."""
    try:
        yield
    except EOFError:
        raise truncated_gzip_error(name) from None
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise damaged_gzip_error(name, exc) from None

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
        "year_month_day",  # a year=/month=/day= folder layout's day (readers.parquet.PARTITION_DAY)
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
        "product_action",  # Coveo's SIGIR eCom 2021 log: detail, add, purchase; its event_type is pageview or event_product
        "event_type",
        "action",
        "action_type",
        "type",
        "behavior",
        "behavior_type",
        "behaviour",
        "behaviour_type",
        "interaction_type",  # XING's RecSys Challenge interactions: 0 an impression, 1-3 click, bookmark, reply
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
# Columns whose name says they hold something else: a row's, order's or session's id (the item hint
# named a funnel log's `event_id`, Online Retail's `InvoiceNo`), a rating, count, price or time, or
# an action (an event: Coveo's `product_action` holds detail / add / purchase, offered as the item).
_NOT_AN_ID = re.compile(
    r"event|order|invoice|transaction|basket|review|rating|score|count|quantity|qty|price|amount|revenue|time|date"
    r"|categor|action"
)


_DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}")
# A field holding several ids separated by spaces (`N1235 N3234`, `N55689-1 N35729-0`): MIND's
# history and impression columns. Each token has digits and no `:` or `/`, so names (`Deep Dish`,
# `Blink 182`) and times (`2019-11-11 09:05:58`, `9:05:58 AM`) are not lists.
_ID_LIST = re.compile(r"^[A-Za-z_]*\d+(?:[-_]\d+)?(?:\s+[A-Za-z_]*\d+(?:[-_]\d+)?)+$")


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
