"""The one-u64-key pair aggregation gives exactly what a plain (user, item) group-by gives, and
each pair's first-seen time by its definition (both the packed-key and the sort fallback)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.data.implicit import ORDER, _free_block, _Surrogates, aggregate
from recsys.data.schema import FIRST_SEEN, ITEM, TIME, TIME_DTYPE, USER, WEIGHT
from recsys.data.vocab import CODE_DTYPE


def _rows(
    n: int, seed: int, *, null_times: float = 0.0, shuffle_order: bool = False, wide_times: bool = False
) -> pl.DataFrame:
    """Rows of three ingest batches (ORDER = batch << 40 | row). wide_times: times spread over
    +-2**61 us, too wide to pack with the batch into one Int64 (the sort fallback)."""
    rng = np.random.default_rng(seed)
    times = rng.integers(1_600_000_000, 1_600_000_050, n).astype(np.int64) * 1_000_000
    if wide_times:
        times = rng.integers(-(2**61), 2**61, n).astype(np.int64)
    order = np.arange(n, dtype=np.int64) + (np.sort(rng.integers(1, 4, n)) << 40)
    if shuffle_order:
        order = rng.permutation(order)
    frame = pl.DataFrame(
        {
            USER: rng.integers(0, 30, n).astype(np.uint32),
            ITEM: rng.integers(0, 7, n).astype(np.uint32) * 1000,
            TIME: pl.Series(times).cast(TIME_DTYPE),
            WEIGHT: rng.integers(1, 6, n).astype(np.float32) / 2,
            ORDER: order,
        }
    )
    if null_times:
        frame = frame.with_columns(
            pl.when(pl.Series(rng.random(n) < null_times)).then(None).otherwise(pl.col(TIME)).alias(TIME)
        )
    return frame


def _expected(rows: pl.DataFrame, how: str) -> pl.DataFrame:
    """A plain (user, item) group-by; first_seen by its definition: the earliest time among the
    pair's rows of the first batch that has a timestamped row of it."""
    weight = {"count": pl.len(), "max": pl.col(WEIGHT).max(), "sum": pl.col(WEIGHT).sum()}[how]
    timed = rows.filter(pl.col(TIME).is_not_null()).with_columns((pl.col(ORDER) // (1 << 40)).alias("batch"))
    first_batch = timed.group_by(USER, ITEM).agg(pl.col("batch").min())
    first_seen = (
        timed.join(first_batch, on=[USER, ITEM, "batch"])
        .group_by(USER, ITEM)
        .agg(pl.col(TIME).min().alias(FIRST_SEEN))
    )
    return (
        rows.group_by(USER, ITEM)
        .agg(pl.col(TIME).max(), weight.cast(pl.Float32).alias(WEIGHT), pl.col(ORDER).min())
        .join(first_seen, on=[USER, ITEM], how="left")
        .sort(USER, ITEM)
    )


@pytest.mark.parametrize("how", ["count", "max", "sum"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"null_times": 0.3},
        {"null_times": 0.9},
        {"null_times": 1.0},
        {"shuffle_order": True},
        {"wide_times": True},
    ],
)
def test_pair_key_aggregation_matches_two_column_group_by(how: str, kwargs: dict) -> None:
    rows = _rows(2000, seed=len(kwargs) + (how == "max"), **kwargs)
    got = aggregate(rows.lazy(), how).collect()
    assert got.schema == _expected(rows, how).schema
    assert got.sort(USER, ITEM).equals(_expected(rows, how))


@pytest.mark.parametrize("how", ["count", "max"])
def test_categorical_ids_group_like_their_text(how: str) -> None:
    coded = _rows(500, seed=3)
    rows = coded.with_columns(
        (pl.lit("u") + pl.col(USER).cast(pl.String)).cast(pl.Categorical).alias(USER),
        pl.col(ITEM).cast(pl.String).cast(pl.Categorical).alias(ITEM),
    )
    got = aggregate(rows.lazy(), how).collect()
    want = _expected(rows.with_columns(pl.col(USER, ITEM).cast(pl.String)), how)
    assert got.with_columns(pl.col(USER, ITEM).cast(pl.String)).sort(USER, ITEM).equals(want)


def test_largest_ids_keep_their_halves_of_the_key() -> None:
    rows = _rows(100, seed=4).with_columns(
        (pl.col(USER) + (2**32 - 64)).cast(CODE_DTYPE), (pl.col(ITEM) + (2**32 - 8000)).cast(CODE_DTYPE)
    )
    assert aggregate(rows.lazy(), "count").collect().sort(USER, ITEM).equals(_expected(rows, "count"))


@pytest.mark.parametrize("narrow_at_top", [False, True])
def test_64_bit_ids_group_like_a_two_column_group_by(narrow_at_top: bool) -> None:
    """Ids past 32 bits get stand-in 4-byte codes just below 2**32 for the one-key group-by, and
    their own values back afterwards. A narrow id already in that range (narrow_at_top) moves the
    stand-ins to a free gap below it, never a merge of two users."""
    rows = _rows(3000, seed=7)
    users = rows.get_column(USER).cast(pl.UInt64)
    wide = pl.Series([2**40 + 5, 2**63 + 1, 2**64 - 1], dtype=pl.UInt64)
    top = (1 << 32) - 1  # the code the last of 3 stand-ins would take
    users = pl.Series(
        USER, np.where(users.to_numpy() % 5 == 0, wide.to_numpy()[users.to_numpy() % 3], users.to_numpy())
    )
    if narrow_at_top:
        users = pl.Series(USER, np.where(users.to_numpy() == 7, top, users.to_numpy()), dtype=pl.UInt64)
    rows = rows.with_columns(users.cast(pl.UInt64))
    got = aggregate(rows.lazy(), "sum").collect()
    expected = _expected(rows, "sum")
    assert got.schema == expected.schema
    assert got.sort(USER, ITEM).equals(expected)
    assert set(got.get_column(USER).to_list()) >= set(wide.to_list())


@pytest.mark.parametrize(("wide", "base"), [([2**40, 2**63], (1 << 32) - 5), ([2**40, 2**63, 2**64 - 1], 1 << 31)])
def test_a_narrow_id_at_the_top_moves_the_stand_ins_to_the_highest_free_gap(wide: list[int], base: int) -> None:
    """A long-tailed log (raw Zipf ids: 1 narrow id in 10M rows lands in the block just below
    2**32) keeps the one-key group-by: the wide ids take the highest gap between the narrow ids of
    [2**31, 2**32) that holds them all (2 fit between top-6 and top-3; 3 only below top-6), each id
    keeps a distinct code, and decoding gives the ids back."""
    top = 1 << 32
    values = np.array([5, top - 1, top - 3, top - 6, *wide, wide[0]], dtype=np.uint64)
    found = _Surrogates.of(pl.Series(values))
    assert found is not None
    surrogates, codes = found
    assert surrogates.base == base
    assert codes.dtype == CODE_DTYPE
    assert codes.n_unique() == len(set(values.tolist()))
    assert surrogates.decode(codes).to_list() == values.tolist()


def test_no_free_gap_for_the_stand_ins_keeps_the_two_column_route() -> None:
    """Where no gap in [2**31, 2**32) holds the wide ids, `_free_block` says so (None): the
    caller then groups on two columns instead of merging ids."""
    taken = np.array([3 << 30], dtype=np.uint64)
    assert _free_block(taken, (1 << 31) - 1) is None
    assert _free_block(taken, 1 << 30) == (1 << 31)
