"""Implicit conversion edge cases that a wrong line would pass silently (each pinned down by
mutation testing of recsys/data/implicit.py), on small hand-built frames with the expected pairs
written out."""

from __future__ import annotations

import numpy as np
import polars as pl

from recsys.data.implicit import ORDER, _free_block, _Surrogates, aggregate, k_core
from recsys.data.schema import ITEM, TIME, TIME_DTYPE, USER, WEIGHT
from recsys.data.vocab import CODE_DTYPE, WIDE_CODE_DTYPE

TOP = 1 << 32
HALF = 1 << 31

# u1: i1 i2; u2: i1; u3: i2 i3 (i3 has one user, u2 one item)
PAIRS = pl.DataFrame({USER: ["u1", "u1", "u2", "u3", "u3"], ITEM: ["i1", "i2", "i1", "i2", "i3"]})


def test_k_core_with_one_limit_above_one_applies_it() -> None:
    """users >= 2 alone drops u2; items >= 2 alone drops i3 (and neither drops anything else)."""
    users, rounds = k_core(PAIRS, 2, 1)
    assert sorted(users.rows()) == [("u1", "i1"), ("u1", "i2"), ("u3", "i2"), ("u3", "i3")] and rounds == 1
    items, rounds = k_core(PAIRS, 1, 2)
    assert sorted(items.rows()) == [("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u3", "i2")] and rounds == 1
    same, rounds = k_core(PAIRS, 1, 1)
    assert same.equals(PAIRS) and rounds == 0


def test_stand_ins_take_the_block_just_below_2_to_the_32_when_it_is_free() -> None:
    none_taken = np.array([], dtype=np.uint64)
    assert _free_block(none_taken, 3) == TOP - 3
    assert _free_block(np.array([HALF, TOP - 4], dtype=np.uint64), 3) == TOP - 3  # just clear of it
    # a narrow id at the block's first code: the highest gap that holds 3 is then the lowest one
    assert _free_block(np.array([TOP - 3], dtype=np.uint64), 3) == HALF


def test_a_narrow_id_of_exactly_2_to_the_31_is_never_a_stand_in() -> None:
    """2**31 is the first code a block may use: with the top code taken, the gap search starts
    there, so 2**31 itself must count as taken (the block then starts just after it)."""
    values = pl.Series([HALF, TOP - 1, 2**40, 7, 2**40], dtype=WIDE_CODE_DTYPE)
    found = _Surrogates.of(values)
    assert found is not None
    surrogates, codes = found
    assert surrogates.base == HALF + 1
    assert codes.dtype == CODE_DTYPE and codes.to_list() == [HALF, TOP - 1, HALF + 1, 7, HALF + 1]
    assert surrogates.decode(codes).to_list() == values.to_list()


def _rows(users: list[int], items: list[int], weights: list[float], times: list[int | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            USER: pl.Series(users, dtype=WIDE_CODE_DTYPE),
            ITEM: pl.Series(items, dtype=CODE_DTYPE),
            TIME: pl.Series(times, dtype=pl.Int64).cast(TIME_DTYPE),
            WEIGHT: pl.Series(weights, dtype=pl.Float32),
            ORDER: pl.Series(range(len(users)), dtype=pl.Int64),
        }
    )


def test_wide_and_narrow_users_near_the_stand_in_block_stay_apart() -> None:
    """Users 2**31 and 2**32 - 1 (narrow) beside the wide user 2**40: three users, three pairs,
    never one user merged into another through a shared stand-in code."""
    rows = _rows([HALF, 2**40, TOP - 1, 2**40], [1, 1, 1, 1], [1.0, 2.0, 4.0, 8.0], [1, 2, 3, 4])
    got = aggregate(rows.lazy(), "sum").collect().sort(USER)
    assert got.select(USER, ITEM, WEIGHT).rows() == [(HALF, 1, 1.0), (TOP - 1, 1, 4.0), (2**40, 1, 10.0)]
    assert got.schema[USER] == WIDE_CODE_DTYPE
