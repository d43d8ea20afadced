"""The canonical interaction schema every reader produces and every later step relies on.

One table shape for all sources means readers are the only place that knows about file formats.
"""

from __future__ import annotations

import polars as pl

USER = "user_id"
ITEM = "item_id"
TIME = "timestamp"
WEIGHT = "weight"
EVENT = "event"
FIRST_SEEN = "first_seen"
"""Implicit table only: when a (user, item) pair was first seen (its repeats keep it; `TIME` is the
latest). Time-based splits place pairs by it, see `recsys.data.first_seen`."""

# Indexed columns (after the vocab maps ids to dense integer indices).
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"

TIME_DTYPE = pl.Datetime("us", "UTC")


def as_utc(column: pl.Expr, dtype: pl.Datetime) -> pl.Expr:
    """A Datetime column of any unit and zone as TIME_DTYPE: naive values are UTC, zoned ones are
    converted."""
    as_us = column.cast(pl.Datetime("us", dtype.time_zone))
    if dtype.time_zone is None:
        return as_us.dt.replace_time_zone("UTC")
    return as_us.dt.convert_time_zone("UTC")

CANONICAL_SCHEMA: dict[str, pl.DataType] = {
    USER: pl.String(),
    ITEM: pl.String(),
    TIME: TIME_DTYPE,
    WEIGHT: pl.Float32(),
}
OPTIONAL_COLUMNS: dict[str, pl.DataType] = {EVENT: pl.String()}

INDEXED_SCHEMA: dict[str, pl.DataType] = {
    USER_IDX: pl.Int32(),
    ITEM_IDX: pl.Int32(),
    TIME: TIME_DTYPE,
    WEIGHT: pl.Float32(),
}
