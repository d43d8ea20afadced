"""The stored batches of a processed directory read as one frame: ids in one type, rows keyed by
their first appearance (ORDER).

Shared by ingest (which re-derives the implicit table from every batch on each append) and by
`storage.load_processed` (which derives first-seen times for directories written before they were
stored), so both read the batches the same way.
"""

from __future__ import annotations

import polars as pl

from recsys.data.first_seen import BATCH_SHIFT
from recsys.data.implicit import ORDER
from recsys.data.readers import ROW, SOURCE_FILE
from recsys.data.schema import ITEM, USER
from recsys.data.vocab import CODE_DTYPE, CODE_DTYPES, WIDE_CODE_DTYPE


def aligned_ids(frames: list[pl.LazyFrame]) -> list[pl.LazyFrame]:
    """The frames with each id column in one type: UInt32 codes where every frame holds them
    (grouping and joining 4-byte codes is ingest's fast route), 64-bit codes where every frame holds
    codes and some hold wide ones (a value is the same id at either width), else text for all (a
    code's text is its id, and "007" stays apart from 7)."""
    schemas = [frame.collect_schema() for frame in frames]
    casts = []
    for c in (USER, ITEM):
        dtypes = [schema.get(c) for schema in schemas]
        if any(dtype != CODE_DTYPE for dtype in dtypes):
            coded = all(dtype in CODE_DTYPES for dtype in dtypes)
            casts.append(pl.col(c).cast(WIDE_CODE_DTYPE if coded else pl.String))
    return [frame.with_columns(casts) for frame in frames]


def all_rows(batches: list[tuple[int, pl.LazyFrame]]) -> pl.LazyFrame:
    """Every batch's validated rows with ORDER (first-appearance key: batch, then row), as one lazy
    frame. `batches` are (batch number, rows) in batch order, ids already aligned."""

    def ordered(number: int, frame: pl.LazyFrame) -> pl.LazyFrame:
        # A batch keeps file order, so the source row orders a single file's rows (and costs
        # nothing: a position column, materialised for 10M rows, slows the pair group-by by ~15%).
        # A directory batch numbers each file's rows from 1, so its rows tie across files: there
        # the position within the batch is the order.
        single_file = SOURCE_FILE not in frame.collect_schema()
        within = pl.col(ROW).cast(pl.Int64) if single_file else pl.int_range(pl.len(), dtype=pl.Int64)
        order = (pl.lit(number, dtype=pl.Int64) * (1 << BATCH_SHIFT) + within).alias(ORDER)
        return frame.with_columns(order).drop(ROW, SOURCE_FILE, strict=False)

    return pl.concat([ordered(n, f) for n, f in batches], how="diagonal_relaxed")
