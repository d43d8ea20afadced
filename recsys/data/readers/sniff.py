"""Looking before reading: what a source is (file, directory, FIFO, archive), which files of a
directory are data, which format a file holds (extension and first bytes), its first lines
with any byte-order mark or hash-commented header handled, and its separator.

Nothing here reads a whole file: every decision is made from the head, so a wrong guess costs
milliseconds, and the readers confirm it on every row.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from recsys.data.readers.array_files import matlab_hint, npy_hint, npz_hint
from recsys.data.readers.base import (
    _DATE_LIKE,
    _PARQUET_SUFFIXES,
    _SNIFF_BYTES,
    _TEXT_SUFFIXES,
    NOT_UTF8_HINT,
    GzipReader,
)
from recsys.errors import DataError, NoDataRows, RecsysWarning

# --------------------------------------------------------------------------- detection


def _read_head(path: Path) -> bytes:
    """First bytes of a file, decompressed when gzip'd (sniffing must see the text)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
        if head[:2] == b"\x1f\x8b":
            with GzipReader(path, "rb") as gz:  # a truncated file: its own DataError
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
    b"\xff\xff\xff\xff": "an Arrow IPC stream (polars' write_ipc_stream, pyarrow's ipc.new_stream): write it as "
    "Parquet instead, e.g. `pl.read_ipc_stream(FILE).write_parquet(NEW)`",
    b"FEA1": "a Feather v1 file (old pandas' to_feather): write it as Parquet instead, e.g. "
    "`pd.read_feather(FILE).to_parquet(NEW)`",
    b"ORC": "an ORC file (Hive, Spark): write it as Parquet instead, e.g. "
    "`pl.from_arrow(pyarrow.orc.read_table(FILE)).write_parquet(NEW)`",
    b"Obj\x01": "an Avro file: write it as Parquet instead, e.g. `pl.read_avro(FILE).write_parquet(NEW)`",
    b"\x89HDF\r\n\x1a\n": "an HDF5 file (pandas' to_hdf, MATLAB's -v7.3 .mat): write it as Parquet instead, e.g. "
    "`pd.read_hdf(FILE).to_parquet(NEW)`",
    b"\x93NUMPY": "a NumPy array (.npy): write it as CSV with a header line naming the columns",
    **dict.fromkeys(
        (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"),
        "a Python pickle (pandas' to_pickle), which is not read: loading one runs its code; if you trust it, "
        "write it as Parquet, e.g. `pd.read_pickle(FILE).to_parquet(NEW)`",
    ),
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
    if head.startswith(b"PK\x03\x04"):  # a zip: a NumPy .npz is one too, and "unzip it" is no help there
        kind = npz_hint(path) or kind
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
        if kind is None and head.startswith(b"MATLAB 5.0 MAT-file"):
            kind = matlab_hint(path)
        if head.startswith(b"\x93NUMPY"):
            kind = npy_hint(path)
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
    if re.fullmatch(r"sep=.", lines[0].rstrip("\r\n"), flags=re.IGNORECASE):
        # Excel's separator directive (`sep=;`, written above the header by exporters meant for
        # Excel): read as a header, the hint asked for a header line to be added above it.
        raise DataError(
            f"{path}: starts with Excel's separator line ({lines[0].rstrip()!r}), which is not read: drop it "
            "first, e.g. `sed -i 1d FILE` (the header line below it is then the first line)"
        )
    if lines[0].lstrip().lower().startswith(("<!doctype html", "<html", "<?xml")):
        raise DataError(
            f"{path}: an HTML or XML document, not an interaction log (a download that got an error or "
            "login page, e.g. S3's AccessDenied?): open it to see what it says, and fetch the file again"
        )
    if suffix in {".jsonl", ".ndjson"}:
        # A bad first line is a quarantined row, not a reason to read the file as something else.
        if not any(line.lstrip().startswith("{") for line in lines[:1000]):
            # A JSON array of objects (pandas' `to_json(orient="records")`, polars' `write_json`, a
            # `[` line above pretty-printed objects) given a JSON Lines name: said to hold no object.
            if re.match(r"\s*\[\s*(\{|$)", lines[0]):
                raise _json_array_error(path)
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
_UNREAD_TABLES = {
    (".feather", ".arrow", ".ipc"): "Arrow IPC / Feather: `pl.read_ipc(FILE).write_parquet(NEW)`",
    (".arrows",): "Arrow IPC stream: `pl.read_ipc_stream(FILE).write_parquet(NEW)`",
    (".orc",): "ORC: `pl.from_arrow(pyarrow.orc.read_table(FILE)).write_parquet(NEW)`",
    (".avro",): "Avro: `pl.read_avro(FILE).write_parquet(NEW)`",
}
"""Table files of formats no reader opens, by name, with the line that writes one as Parquet. In a
source directory (Spark writes ORC or Avro parts as readily as Parquet ones; a Feather part beside
Parquet ones) they were skipped with a warning that said to give them 'their format's extension',
which they have: their rows left out. Named and refused instead, as the archives are."""


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
    _refuse_iceberg(path, listed)
    every = [p for p in listed if p.stat().st_size]
    unread = [p for p in every if p.name.lower().endswith(_UNREAD_ARCHIVES)]
    if unread:
        names = [p.relative_to(path).as_posix() for p in unread]
        raise DataError(
            f"{path}: holds {len(names)} compressed or archived file(s) ingest does not open "
            f"({_some(names)}), which would be skipped: decompress them (only .gz is read directly) "
            "or move them out, and ingest again"
        )
    tables = {what: [p for p in every if p.name.lower().endswith(ends)] for ends, what in _UNREAD_TABLES.items()}
    if any(tables.values()):
        (what, found), *_ = [(what, found) for what, found in tables.items() if found]
        names = [p.relative_to(path).as_posix() for found in tables.values() for p in found]
        raise DataError(
            f"{path}: holds {len(names)} file(s) of a format ingest does not read ({_some(names)}), whose rows "
            f"would be left out: write each as Parquet ({what}; NEW ending in .parquet) and move the "
            "original out, and ingest again"
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


def _refuse_iceberg(path: Path, listed: list[Path]) -> None:
    """DataError for an Apache Iceberg table's folder (`metadata/*.metadata.json` beside `data/`):
    which of its data files the current snapshot holds is written in Avro manifests, and files a
    DELETE, an overwrite or a compaction replaced stay on disk until expired, so its Parquet files
    read as a folder would bring removed rows back; its manifests were named as Avro files to
    convert to Parquet, and its metadata JSON as a second format."""
    metadata = [p for p in listed if p.parent.name == "metadata" and p.name.endswith(".metadata.json")]
    if metadata:
        last = metadata[-1].relative_to(path).as_posix()
        raise DataError(
            f"{path}: an Apache Iceberg table ({last}), whose current files are listed in its Avro manifests, not "
            "read here (a folder read would bring back rows its snapshots removed): export its current rows, e.g. "
            f"`pl.scan_iceberg('{metadata[-1]}').sink_parquet(NEW)` (with the pyiceberg package), and ingest NEW"
        )


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


def _looks_like_data(header: list[str]) -> bool:
    """Whether a "header" is really a data row of a headerless file (Last.fm 1K / 360K, Amazon's
    ratings-only CSV): no column name is a number, empty, or a date."""
    return len(header) > 1 and any(
        _is_number(name) or not name.strip() or _DATE_LIKE.match(name.strip()) for name in header
    )


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
