"""Interaction logs as the tools that produce them write them (pandas, polars, pyarrow, Spark-style
directories, MongoDB exports), each written here with that library in tmp_path: read right, or
refused in one `error:` line that names the file and says what to do."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import polars as pl
from typer.testing import CliRunner

from recsys.cli import app

runner = CliRunner()


def _ingest(source: Path, out: Path, *args: str) -> pl.DataFrame:
    """The accepted rows of an ingest that must succeed, in file and row order."""
    result = runner.invoke(app, ["ingest", str(source), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    rows = pl.read_parquet(out / "interactions" / "**" / "*.parquet")
    return rows.sort([c for c in ("source_file", "source_row") if c in rows.columns])


def _refusal(source: Path, out: Path, *args: str) -> str:
    """The one `error:` line of an ingest that must exit 2."""
    result = runner.invoke(app, ["ingest", str(source), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: "), line
    return line


def test_pandas_times_parsed_with_a_half_hour_offset_are_read_as_their_utc_instants(tmp_path: Path) -> None:
    """pandas parses `2024-01-01T10:00:00+05:30` strings to `datetime64[ns, UTC+05:30]` and writes the
    zone `+05:30` into the Parquet file's Arrow schema; polars cannot parse that zone and panicked
    reading the footer (a Rust backtrace, then a Python traceback), even where the column was not
    the time (`created`, at -03:30). Parquet holds the UTC instants: those are the times."""
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b"],
            "item_id": ["x", "y"],
            "timestamp": pd.to_datetime(["2024-01-01T10:00:00+05:30", "2024-01-01T23:15:00+05:30"]),
            "created": pd.to_datetime(["2023-12-31T20:00:00-03:30"] * 2),
        }
    )
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    rows = _ingest(path, tmp_path / "out")
    assert rows["timestamp"].to_list() == [datetime(2024, 1, 1, 4, 30, tzinfo=UTC), datetime(2024, 1, 1, 17, 45, tzinfo=UTC)]
    assert rows["user_id"].to_list() == ["a", "b"] and rows["source_row"].to_list() == [1, 2]
