"""The Parquet writer of ingest's own tables (batches, implicit table, vocabularies)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from recsys.data.parquet_out import _to_arrow, write_table


def _chunked_like_a_batch() -> pl.DataFrame:
    """Columns chunked as a validated batch is: the streaming read's chunks beside a row number
    built in one piece, and one column with a null."""
    parts = [
        pl.DataFrame(
            {
                "user_id": pl.Series([1, 2, 3], dtype=pl.UInt32),
                "timestamp": pl.Series([10, None, 30], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                "weight": pl.Series([1.0, 2.5, 4.0], dtype=pl.Float32),
            }
        ),
        pl.DataFrame(
            {
                "user_id": pl.Series([4, 5], dtype=pl.UInt32),
                "timestamp": pl.Series([40, 50], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
                "weight": pl.Series([1.0, 5.0], dtype=pl.Float32),
            }
        ),
    ]
    frame = pl.concat(parts, rechunk=False)
    frame = frame.with_columns(pl.Series("source_row", [1, 2, 3, 4, 5], dtype=pl.Int64))
    assert [frame.get_column(c).n_chunks() for c in frame.columns] == [2, 2, 2, 1]
    return frame


def test_differently_chunked_columns_convert_to_the_same_table() -> None:
    frame = _chunked_like_a_batch()
    assert _to_arrow(frame).equals(frame.to_arrow())


def test_a_table_round_trips_and_only_columns_with_nulls_stay_optional(tmp_path: Path) -> None:
    frame = _chunked_like_a_batch()
    path = tmp_path / "batch.parquet"
    write_table(frame, path)
    assert pl.read_parquet(path).equals(frame)
    schema = pq.read_schema(path)
    assert {field.name: field.nullable for field in schema} == {
        "user_id": False,
        "timestamp": True,
        "weight": False,
        "source_row": False,
    }
