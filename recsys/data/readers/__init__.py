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

from pathlib import Path

from recsys.config import ColumnMap
from recsys.data.readers.base import (
    AUTO_NAMES,
    BOOLEAN_ID,
    DUPLICATE_KEY,
    EXTRA_FIELDS,
    FORMATS,
    ID_OUT_OF_RANGE,
    LATE_KEY,
    MALFORMED_JSON,
    NOT_UTF8_HINT,
    READ_ERROR,
    ROW,
    SOURCE_FILE,
    ByteLayout,
    DataFile,
    RawSource,
)
from recsys.data.readers.delimited import _scan_text, first_non_utf8
from recsys.data.readers.delta import delta_files
from recsys.data.readers.frames import first_error_line, number_rows, open_decompressed, row_numbers
from recsys.data.readers.jsonl import _scan_jsonl, decodable
from recsys.data.readers.naming import column_label, column_name, describe_columns, name_column
from recsys.data.readers.parquet import _scan_parquet, _scan_remote
from recsys.data.readers.sniff import (
    DATA_SUFFIXES,
    SourceListing,
    _one_format,
    base_name,
    detect_format,
    list_source,
    warn_unread,
)
from recsys.data.remote import as_url, resolve
from recsys.errors import DataError, NoDataRows

# The version of what reading a file gives: bump READER_VERSION in the same commit as any change to
# a reader (or to the validation of what it read) that changes which rows come out of a file, their
# values (a column now read as the time, ids unwrapped) or what is quarantined. Ingest records it in
# each batch of a processed directory's manifest (a batch without it was read before it existed:
# version 0), and a scheduled run re-reads a landing zone whose batches were read by another version,
# once, keeping its vocab (`pipelines.data`). A change that only words an error differently is no bump.
READER_VERSION = 4
# 2: dt= / date= / day= folders give Parquet rows their day; 3: MongoDB $binary ids read as hex;
# 4: CSV and JSON Lines files in day folders take the folder's day as their time

__all__ = [
    "AUTO_NAMES", "BOOLEAN_ID", "DATA_SUFFIXES", "DUPLICATE_KEY", "EXTRA_FIELDS", "FORMATS", "ID_OUT_OF_RANGE",
    "LATE_KEY", "MALFORMED_JSON", "NOT_UTF8_HINT", "READER_VERSION", "READ_ERROR", "ROW", "SOURCE_FILE", "ByteLayout", "DataFile",
    "RawSource", "SourceListing", "base_name", "column_label", "column_name", "decodable", "describe_columns",
    "detect_format", "first_error_line", "first_non_utf8", "list_source", "name_column", "number_rows",
    "open_decompressed", "row_numbers", "scan_source", "warn_unread",
]  # fmt: skip


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
    current = delta_files(path) if per_file else None
    if current is not None:
        listing, dropped = _delta_listing(path, listing, current)
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
    if current is not None and dropped:
        scanned.notes.append(
            f"{path}: a Delta Lake table: {dropped} Parquet file(s) its log removed (earlier versions, kept on disk "
            "until a VACUUM) are not read; the files of its current version are"
        )
    return scanned


def _delta_listing(path: Path, listing: SourceListing, current: set[str]) -> tuple[SourceListing, int]:
    """`listing` of a Delta table's folder narrowed to the files its current version holds
    (`delta_files`), and how many were left out; DataError for a file the log holds that is not
    in the folder (deleted by hand, or the folder copied in part)."""
    names = {p.relative_to(path).as_posix(): p for p in listing.files}
    missing = sorted(current - names.keys())
    if missing:
        raise DataError(
            f"{path}: the Delta Lake table's log holds {len(missing)} file(s) that are not in its folder "
            f"({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}): copy the whole table folder, or "
            "export its rows (`pl.read_delta(DIR).write_parquet(NEW)`) and ingest that"
        )
    kept = [p for name, p in names.items() if name in current]
    if not kept:
        raise NoDataRows(f"{path}: the Delta Lake table's current version holds no file (its log adds none, or removed them all)")
    return SourceListing(kept, listing.unread), len(names) - len(kept)


def _header_not_text(source: Path | str, fmt: str) -> DataError:
    """data.header on a source whose columns are named by its format: the names would be ignored."""
    return DataError(
        f"{source}: data.header names the fields of delimited text files without a header line, but this "
        f"source is {fmt}, whose columns are named already: leave data.header unset (name columns with "
        "data.columns.* instead)"
    )
