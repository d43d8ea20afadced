"""When each (user, item) pair was first seen: the time the time-based splits place it by.

Why: ingest aggregates a pair's repeats into one row whose `timestamp` is the latest (what
`leave_last_n` and the sequence tower's ordering want). A temporal or rolling split that placed a
pair by that time would move it forward every time the log repeats it: a pair the champion trained
on reappears in a later run's test window (play counts, clicks), and every scheduled comparison
becomes "not comparable". So the implicit table also keeps `first_seen`, and `temporal` / `rolling`
place a pair by it: a pair first seen before the cut-off is a training pair, and its later repeats
are not new test targets (a seen item is masked from its user's ranking anyway).

Definition: the earliest timestamp of the pair's rows in the *first ingest batch* that holds a
timestamped row of it. Not the earliest over all batches: an appended batch that repeats an old
pair with an even earlier time (late data) must not move the old pair either, so a pair's
first-seen time never changes once it has been ingested. Rows are read from the stored batches,
which are the lossless record, so the value is a pure function of the batches in order.

Cost: one more min per pair in ingest's group-by, over a single 64-bit key that packs (batch, time)
as `batch * span + (time - earliest)`, where `span` is the log's time range in microseconds; one
extra scan of the timestamp column finds that range. A single batch (every first ingest) needs no
packing: its minimum time is the answer. A log whose time range times its batch count
does not fit 63 bits (centuries of microseconds, or tens of thousands of batches over decades)
falls back to a per-pair sort by (batch, time), which is correct and slower.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from recsys.data.schema import FIRST_SEEN, TIME, TIME_DTYPE

BATCH_SHIFT = 40
"""ORDER (see `recsys.data.implicit.ORDER`) = batch << BATCH_SHIFT | row within the batch."""

_KEY_LIMIT = 1 << 63


def batch_of(order: pl.Expr) -> pl.Expr:
    """The ingest batch a row came from, from its ORDER key."""
    return order // (1 << BATCH_SHIFT)


def aggregation(frame: pl.LazyFrame, order: str) -> pl.Expr:
    """The group-by aggregation that gives each pair's first-seen time (`FIRST_SEEN`, the canonical
    time type) over the rows of `frame` (canonical columns plus the `order` key).

    Reads the time range and batch range of `frame` first (one scan of two columns), to pack
    (batch, time) into one Int64 whose per-pair minimum is the answer."""
    micros = pl.col(TIME).dt.epoch("us")
    batch = batch_of(pl.col(order))
    lo, hi, first, last = (
        frame.select(
            micros.min().alias("lo"),
            micros.max().alias("hi"),
            batch.min().alias("b0"),
            batch.max().alias("b1"),
        )
        .collect()
        .row(0)
    )
    if lo is None:  # no timestamps at all: nothing to place by
        return pl.lit(None, dtype=TIME_DTYPE).alias(FIRST_SEEN)
    if first == last:  # one batch (a first ingest): the earliest time, without packing every row's key
        return pl.col(TIME).min().alias(FIRST_SEEN)
    span = int(hi) - int(lo) + 1
    if (int(last) - int(first) + 1) * span > _KEY_LIMIT:
        nulls_last = pl.col(TIME).is_null()  # a batch holding the pair without a time does not count
        return pl.col(TIME).sort_by([nulls_last, batch, pl.col(TIME)]).first().alias(FIRST_SEEN)
    key = (batch - int(first)) * span + (micros - int(lo))
    return (key.min() % span + int(lo)).cast(pl.Int64).cast(TIME_DTYPE).alias(FIRST_SEEN)


def pair_time(columns: Sequence[str]) -> str:
    """The column a time-based split places pairs by: FIRST_SEEN where the table has it, else the
    timestamp (a table with one row per interaction, e.g. a synthetic one, has no repeats)."""
    return FIRST_SEEN if FIRST_SEEN in columns else TIME
