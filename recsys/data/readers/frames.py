"""Pieces every reader assembles its lazy frame from: the canonical column selection, row numbers
by file, concatenation of per-file frames, the unmapped-file check for directories, opening
compressed text, and the first useful line of a polars read error.

Shared here so delimited, JSON Lines and Parquet sources number rows and name files the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import polars as pl

from recsys.data.readers.base import _MAP_FIELDS, _SNIFF_BYTES, ROW, SOURCE_FILE, DataFile, GzipReader
from recsys.data.readers.sniff import _some
from recsys.errors import DataError

# --------------------------------------------------------------------------- scanning


def first_error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


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


def _local(file: DataFile) -> Path:
    if file.path is None:
        raise DataError(f"{file.label}: text formats are read from local files only")
    return file.path


# --------------------------------------------------------------------------- JSON Lines


def open_decompressed(path: Path) -> IO[bytes]:
    """`path` opened for reading bytes, decompressed when it is gzip'd (as polars reads it)."""
    with path.open("rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    return GzipReader(path, "rb") if gzipped else path.open("rb")  # type: ignore[return-value]


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
