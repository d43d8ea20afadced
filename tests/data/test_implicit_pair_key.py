"""The one-u64-key pair aggregation gives exactly what a plain (user, item) group-by gives."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.data.implicit import ORDER, aggregate
from recsys.data.schema import ITEM, TIME, TIME_DTYPE, USER, WEIGHT
from recsys.data.vocab import CODE_DTYPE


def _rows(n: int, seed: int, *, null_times: float = 0.0, shuffle_order: bool = False) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    times = rng.integers(1_600_000_000, 1_600_000_050, n).astype(np.int64) * 1_000_000
    order = np.arange(n, dtype=np.int64) + (1 << 40)
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
    weight = {"count": pl.len(), "max": pl.col(WEIGHT).max(), "sum": pl.col(WEIGHT).sum()}[how]
    return (
        rows.group_by(USER, ITEM)
        .agg(pl.col(TIME).max(), weight.cast(pl.Float32).alias(WEIGHT), pl.col(ORDER).min())
        .sort(USER, ITEM)
    )


@pytest.mark.parametrize("how", ["count", "max", "sum"])
@pytest.mark.parametrize(
    "kwargs", [{}, {"null_times": 0.3}, {"null_times": 0.9}, {"null_times": 1.0}, {"shuffle_order": True}]
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
