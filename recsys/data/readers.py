"""Readers: turn any supported interaction file into one lazy frame of *raw* canonical columns.

Every text column is read as a string (never inferred), so a single malformed value cannot fail the
whole read: validation parses the strings and quarantines the rows that do not parse. Each row keeps
its 1-based source row number, so a quarantine row says exactly which line of the input was bad.

Formats are detected from the extension *and* the first bytes of the file (MovieLens `u.data` has
no telling extension; a `.csv` may really be `::`-separated), and can be forced with `format=`.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.config import ColumnMap
from recsys.data.schema import EVENT, ITEM, TIME, USER, WEIGHT
from recsys.errors import DataError

ROW = "source_row"
"""1-based data row of the source (for a directory: counted across its files in name order)."""

FORMATS = ("csv", "tsv", "parquet", "jsonl", "movielens", "movielens-dat", "movielens-csv", "recbole")

# Header names recognised without a column map, in order of preference (compared lower-cased,
# after stripping a RecBole `:type` suffix).
AUTO_NAMES: dict[str, tuple[str, ...]] = {
    USER: ("user_id", "user", "userid", "uid", "customer_id", "visitorid"),
    ITEM: ("item_id", "item", "itemid", "movieid", "movie_id", "product_id", "track_id", "artist_id", "iid"),
    TIME: ("timestamp", "time", "ts", "datetime", "date", "event_time"),
    WEIGHT: ("rating", "weight", "count", "plays", "play_count", "score", "value", "dwell"),
    EVENT: ("event", "event_type", "action", "type"),
}
_MAP_FIELDS = {USER: "user", ITEM: "item", TIME: "time", WEIGHT: "weight", EVENT: "event"}
_POSITIONAL = (USER, ITEM, WEIGHT, TIME)  # u.data / ratings.dat / headerless numeric files
_TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".dat", ".data", ".inter", ".jsonl", ".ndjson", ".json"}
_SNIFF_BYTES = 64 * 1024


@dataclass
class RawSource:
    """A scanned source: `frame` has ROW plus the canonical column names holding *raw* values
    (strings for text formats; native dtypes for Parquet). `mapping` says which source column
    became which canonical column, for messages and the manifest."""

    path: Path
    format: str
    frame: pl.LazyFrame
    mapping: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [c for c in (USER, ITEM, TIME, WEIGHT, EVENT) if c in self.mapping]


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


def _head_lines(path: Path, head: bytes) -> list[str]:
    if b"\x00" in head:
        raise DataError(f"{path}: not a text or Parquet file (binary content)")
    # Cut at the last newline so a multi-byte character split by the sniff window does not look corrupt.
    cut = head.rfind(b"\n")
    text_bytes = head if cut < 0 or len(head) < _SNIFF_BYTES else head[:cut]
    try:
        text = text_bytes.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text or Parquet file (undecodable bytes)") from None
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
        files = _directory_files(path)
        return detect_format(files[0])
    head = _read_head(path)
    if not head:
        raise DataError(f"{path}: empty file")
    if head[:4] == b"PAR1":
        return "parquet"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in {".parquet", ".pq"}:
        raise DataError(f"{path}: has a Parquet extension but is not a Parquet file")
    lines = _head_lines(path, head)
    if not lines:
        raise DataError(f"{path}: empty file")
    sniffed = _sniff_text(path, lines)
    if suffix in {".jsonl", ".ndjson"} and sniffed != "jsonl":
        raise DataError(f"{path}: JSON Lines extension but the first line is not a JSON object")
    if suffix == ".inter" and sniffed == "tsv":
        return "recbole"  # RecBole headers without types still read fine as TSV with auto-mapping
    return sniffed


def _directory_files(path: Path) -> list[Path]:
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not p.name.startswith((".", "_"))
        and (
            p.suffix.lower() in {".parquet", ".pq"} or p.suffix.lower() in _TEXT_SUFFIXES or p.suffix == ".gz"
        )
    )
    if not files:
        raise DataError(f"{path}: directory holds no supported data files (.parquet, .csv, .tsv, .jsonl ...)")
    return files


# --------------------------------------------------------------------------- column mapping


def _base_name(name: str) -> str:
    """RecBole headers are `name:type`; compare the name only."""
    return name.split(":", 1)[0].strip().lower()


def map_columns(path: Path, header: list[str], columns: ColumnMap | None) -> dict[str, str]:
    """canonical name -> source column. Explicit names win; the rest come from AUTO_NAMES.
    Raises DataError naming the file, the missing role and the columns that were found."""
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
            elif wanted.lower() in by_base:
                mapping[canon] = by_base[wanted.lower()]
            else:
                raise DataError(f"{path}: no column {wanted!r} (--{attr}-col); columns are {header}")
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
    for canon, attr in ((USER, "user"), (ITEM, "item")):
        if canon not in mapping:
            hint = ""
            if len(header) == 1:
                hint = f" (one column {header[0]!r}: wrong delimiter or format?)"
            raise DataError(
                f"{path}: no {attr} column found{hint}; columns are {header}; name it with --{attr}-col"
            )
    return mapping


# --------------------------------------------------------------------------- scanning


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
    path: Path | list[Path],
    separator: str,
    has_header: bool,
    quote: str | None,
    new_columns: list[str] | None = None,
) -> pl.LazyFrame:
    return pl.scan_csv(
        path,
        separator=separator,
        has_header=has_header,
        infer_schema=False,
        quote_char=quote,
        row_index_name=ROW,
        row_index_offset=1,
        truncate_ragged_lines=True,
        new_columns=new_columns,
    )


def first_error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def _select(frame: pl.LazyFrame, mapping: dict[str, str]) -> pl.LazyFrame:
    return frame.select(
        pl.col(ROW).cast(pl.Int64), *(pl.col(src).alias(canon) for canon, src in mapping.items())
    )


def _scan_positional(
    path: Path | list[Path], separator: str, first_line: str
) -> tuple[pl.LazyFrame, dict[str, str]]:
    """Headerless files (u.data, ratings.dat, numeric CSV): columns are user, item[, rating[, time]]."""
    if separator == "::":
        # polars needs a one-byte separator: split on ':' and keep every other field (the odd
        # ones are the empty strings between the two colons).
        n_fields = first_line.count("::") + 1
        names = [f"field_{i // 2}" if i % 2 == 0 else f"_gap_{i // 2}" for i in range(2 * n_fields - 1)]
        frame = _scan_delimited(path, ":", False, None, names)
    else:
        n_fields = len(first_line.split(separator))
        names = [f"field_{i}" for i in range(n_fields)]
        frame = _scan_delimited(path, separator, False, None, names)
    if n_fields < 2:
        raise DataError(
            f"{path}: expected at least user and item columns separated by {separator!r}, found one column"
        )
    mapping = dict(zip(_POSITIONAL, [f"field_{i}" for i in range(n_fields)], strict=False))
    return frame, mapping


def _scan_text(path: Path, files: list[Path], fmt: str, columns: ColumnMap | None) -> RawSource:
    lines = _head_lines(path, _read_head(files[0]))
    if not lines:
        raise DataError(f"{path}: empty file")
    first = lines[0]
    source: Path | list[Path] = files if len(files) > 1 else files[0]
    if fmt == "movielens-dat":
        if "::" not in first:
            raise DataError(f"{path}: format movielens-dat expects 'user::item::rating::timestamp' lines")
        frame, mapping = _scan_positional(source, "::", first)
        return RawSource(path, fmt, _select(frame, mapping), mapping)
    separator = "\t" if fmt in {"tsv", "movielens", "recbole"} else ","
    fields = first.split(separator)
    headerless = fmt == "movielens" or (
        fmt in {"csv", "tsv"} and len(fields) >= 2 and all(_is_number(f) for f in fields)
    )
    if headerless:
        if len(fields) < 2:
            raise DataError(f"{path}: format {fmt} expects {separator!r}-separated columns, found one column")
        frame, mapping = _scan_positional(source, separator, first)
        return RawSource(path, fmt, _select(frame, mapping), mapping)
    quote = '"'
    header = _csv_header(files[0], separator, quote)
    mapping = map_columns(path, header, columns)
    frame = _scan_delimited(source, separator, True, quote)
    return RawSource(path, fmt, _select(frame, mapping), mapping)


def _scan_jsonl(path: Path, files: list[Path], columns: ColumnMap | None) -> RawSource:
    keys: dict[str, None] = {}
    for line in _head_lines(path, _read_head(files[0]))[:1000]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # the sniff window may cut the last line; polars reports real corruption
        if not isinstance(record, dict):
            raise DataError(f"{path}: JSON Lines rows must be objects, found {type(record).__name__}")
        keys.update(dict.fromkeys(record))
    if not keys:
        raise DataError(f"{path}: no JSON object on the first line")
    mapping = map_columns(path, list(keys), columns)
    schema = dict.fromkeys(keys, pl.String())
    frame = pl.scan_ndjson(
        files if len(files) > 1 else files[0], schema=schema, row_index_name=ROW, row_index_offset=1
    )
    return RawSource(path, "jsonl", _select(frame, mapping), mapping)


def _scan_parquet(path: Path, files: list[Path], columns: ColumnMap | None) -> RawSource:
    try:
        frame = pl.scan_parquet(
            files if len(files) > 1 else files[0],
            hive_partitioning=path.is_dir(),
            row_index_name=ROW,
            row_index_offset=1,
        )
        header = frame.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: not a readable Parquet file ({first_error_line(exc)})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    header = [h for h in header if h != ROW]
    mapping = map_columns(path, header, columns)
    return RawSource(path, "parquet", _select(frame, mapping), mapping)


def scan_source(source: str | Path, format: str | None = None, columns: ColumnMap | None = None) -> RawSource:
    """Lazily scan a file or directory into raw canonical columns (see RawSource).

    Nothing is parsed here beyond splitting fields: a bad value becomes a quarantined row later,
    while a file that cannot be read at all (missing, binary, wrong delimiter, no user/item
    column, empty) raises DataError naming the file and the cause.
    """
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if format is not None and format not in FORMATS:
        raise DataError(f"{path}: unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    files = _directory_files(path) if path.is_dir() else [path]
    if not path.is_dir() and path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    fmt = format or detect_format(path)
    if fmt == "parquet":
        if path.is_dir():
            files = [f for f in files if f.suffix.lower() in {".parquet", ".pq"}]
            if not files:
                raise DataError(f"{path}: directory holds no Parquet files")
        return _scan_parquet(path, files, columns)
    if path.is_dir():
        files = [f for f in files if f.suffix.lower() not in {".parquet", ".pq"}]
    if fmt == "jsonl":
        return _scan_jsonl(path, files, columns)
    scanned = _scan_text(path, files, "csv" if fmt == "movielens-csv" else fmt, columns)
    scanned.format = fmt
    return scanned
