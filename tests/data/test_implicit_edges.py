"""Implicit conversion edge cases that a wrong line would pass silently (each pinned down by
mutation testing of recsys/data/implicit.py), on small hand-built frames with the expected pairs
written out."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.config import DataConfig
from recsys.data.implicit import (
    NEGATIVE_WEIGHT_STEP,
    ORDER,
    ZERO_WEIGHT_STEP,
    _free_block,
    _Surrogates,
    aggregate,
    k_core,
    positive_filter,
    to_implicit,
)
from recsys.data.schema import EVENT, FIRST_SEEN, ITEM, TIME, TIME_DTYPE, USER, WEIGHT
from recsys.data.vocab import CODE_DTYPE, WIDE_CODE_DTYPE
from recsys.errors import DataError

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


@pytest.mark.parametrize("setting", ["positive_events", "event_weights"])
def test_an_event_rule_without_an_event_column_names_the_setting_and_the_fix(setting: str) -> None:
    cfg = DataConfig(**{setting: ["buy"] if setting == "positive_events" else {"buy": 2.0}})
    rows = _rows([1], [1], [1.0], [1]).lazy()
    with pytest.raises(DataError) as caught:
        positive_filter(rows, cfg, has_event=False)
    assert str(caught.value) == (
        f"data.{setting} is set but the source has no event column: name it with --set data.columns.event=NAME"
    )
    assert caught.value.setting == "data.columns.event"


def test_last_breaks_equal_timestamps_by_input_order_and_puts_null_times_first() -> None:
    """aggregate = last: the weight of the latest row by timestamp; rows at the same time go by
    ORDER (input order, whatever the frame's row order), and a row without a time is earliest."""
    rows = pl.DataFrame(
        {
            USER: pl.Series([1, 1, 1, 1, 2, 2], dtype=CODE_DTYPE),
            ITEM: pl.Series([9, 9, 9, 9, 9, 9], dtype=CODE_DTYPE),
            TIME: pl.Series([50, 50, 40, None, None, 10], dtype=pl.Int64).cast(TIME_DTYPE),
            WEIGHT: pl.Series([7.0, 2.0, 3.0, 9.0, 4.0, 6.0], dtype=pl.Float32),
            ORDER: pl.Series([5, 1, 2, 8, 9, 0], dtype=pl.Int64),  # row 0 came after row 1
        }
    )
    got = aggregate(rows.lazy(), "last").collect().sort(USER)
    assert got.select(USER, WEIGHT).rows() == [(1, 7.0), (2, 6.0)]
    assert got.get_column(ORDER).to_list() == [1, 0]  # the pair's first row
    assert got.get_column(TIME).dt.epoch("us").to_list() == [50, 10]  # the latest time


def _log(rows: list[tuple[str, str, float, int, str]]) -> pl.LazyFrame:
    """Validated canonical rows (user, item, weight, time in us, event) in input order."""
    users, items, weights, times, events = zip(*rows, strict=True)
    return pl.LazyFrame(
        {
            USER: list(users),
            ITEM: list(items),
            TIME: pl.Series(times, dtype=pl.Int64).cast(TIME_DTYPE),
            WEIGHT: pl.Series(weights, dtype=pl.Float32),
            EVENT: list(events),
            ORDER: pl.Series(range(len(rows)), dtype=pl.Int64),
        }
    )


def _pairs(frame: pl.DataFrame) -> dict[tuple[str, str], float]:
    strings = frame.with_columns(pl.col(USER, ITEM).cast(pl.String))
    return {(u, i): w for u, i, w in strings.select(USER, ITEM, WEIGHT).rows()}


def test_an_event_rule_alone_is_measured_and_named_as_a_positive_step() -> None:
    """positive_events with no weight rule: the step table still shows the validated rows and the
    rows the rule kept, each with their own distinct counts."""
    log = _log([("u1", "i1", 1, 1, "buy"), ("u1", "i2", 1, 2, "view"), ("u2", "i3", 1, 3, "view")])
    pairs, steps = to_implicit(log, DataConfig(positive_events=["buy"]), has_event=True)
    assert _pairs(pairs) == {("u1", "i1"): 1.0}
    assert [(s.name, s.rows, s.users, s.items) for s in steps] == [
        ("validated", 3, 2, 3),
        ("positive (event in ['buy'])", 1, 1, 1),
        ("aggregate (auto)", 1, 1, 1),
    ]


def test_every_positive_rule_is_named_in_its_step() -> None:
    log = _log([("u1", "i1", 4, 1, "buy"), ("u1", "i2", 1, 2, "buy"), ("u2", "i1", 5, 3, "view")])
    cfg = DataConfig(positive_min_weight=2, positive_events=["buy", "view"], event_weights={"buy": 3, "view": 0.5})
    pairs, steps = to_implicit(log, cfg, has_event=True)
    assert _pairs(pairs) == {("u1", "i1"): 12.0, ("u2", "i1"): 2.5}
    assert steps[1].name == "positive (weight >= 2 and event in ['buy', 'view'] and event weighted buy=3, view=0.5)"
    assert (steps[1].rows, steps[1].users, steps[1].items) == (2, 2, 1)


def test_a_weight_of_zero_is_no_negative_row_but_no_interaction() -> None:
    """Weights 0 and 0.5 are not negative: no `weight >= 0` step; the 0 pair goes at the zero step."""
    log = _log([("u1", "i1", 0, 1, "x"), ("u1", "i2", 0.5, 2, "x"), ("u2", "i1", 2, 3, "x")])
    pairs, steps = to_implicit(log, DataConfig(aggregate="sum"), has_event=True)
    assert _pairs(pairs) == {("u1", "i2"): 0.5, ("u2", "i1"): 2.0}
    assert [(s.name, s.rows) for s in steps] == [("validated", 3), ("aggregate (sum)", 3), (ZERO_WEIGHT_STEP, 2)]


def test_the_negative_step_drops_negative_rows_only_and_a_last_zero_still_ends_the_pair() -> None:
    """A return (-1) is dropped row by row; a pair whose latest row weighs 0 (aggregate = last)
    keeps that 0, so the zero step drops it, as it would without any negative row in the log."""
    log = _log(
        [("u1", "i1", 5, 1, "x"), ("u1", "i1", 0, 2, "x"), ("u2", "i1", 3, 0, "x"), ("u2", "i1", -1, 1, "x")]
    )
    pairs, steps = to_implicit(log, DataConfig(aggregate="last"), has_event=True)
    assert _pairs(pairs) == {("u2", "i1"): 3.0}
    assert [(s.name, s.rows) for s in steps] == [
        ("validated", 4),
        (NEGATIVE_WEIGHT_STEP, 3),
        ("aggregate (last)", 2),
        (ZERO_WEIGHT_STEP, 1),
    ]


def test_binarized_weights_stay_float32() -> None:
    log = _log([("u1", "i1", 4, 1, "x"), ("u1", "i1", 2, 2, "x"), ("u2", "i1", 0.5, 3, "x")])
    pairs, _ = to_implicit(log, DataConfig(aggregate="sum", binarize=True), has_event=True)
    assert pairs.schema[WEIGHT] == pl.Float32
    assert _pairs(pairs) == {("u1", "i1"): 1.0, ("u2", "i1"): 1.0}


@pytest.mark.parametrize(
    ("min_user", "min_item", "kept"),
    [
        (2, 1, {("u1", "i1"), ("u1", "i2"), ("u3", "i2"), ("u3", "i3")}),
        (1, 2, {("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u3", "i2")}),
    ],
)
def test_a_k_core_of_two_on_one_side_runs_and_is_reported(min_user: int, min_item: int, kept: set) -> None:
    log = _log([(u, i, 1, n, "x") for n, (u, i) in enumerate(PAIRS.rows())])
    cfg = DataConfig(min_user_interactions=min_user, min_item_interactions=min_item)
    pairs, steps = to_implicit(log, cfg, has_event=True)
    assert set(_pairs(pairs)) == kept
    assert (steps[-1].name, steps[-1].rows) == (f"k-core (users >= {min_user}, items >= {min_item}; 1 round)", 4)


SMALL = [  # (user, item, weight, time, order): u/i 2 rows (times 5, 5, order 3 after 1), u/j one, v/i a null time
    ("u", "i", 2.0, 5, 3),
    ("u", "i", 7.0, 5, 1),
    ("u", "j", 1.5, 2, 0),
    ("v", "i", 4.0, None, 2),
    ("v", "i", 3.0, 1, 4),
]


def _typed(user_type: pl.DataType, item_type: pl.DataType) -> pl.DataFrame:
    users, items, weights, times, order = zip(*SMALL, strict=True)
    code = {"u": "1", "v": "2", "i": "10", "j": "11"}

    def spelled(ids: tuple[str, ...], dtype: pl.DataType) -> pl.Series:
        """Text ids as "u1", "i10" (no number hides in them), integer ids as their codes."""
        text = dtype in (pl.String, pl.Categorical)
        return pl.Series([f"{i}{code[i]}" if text else code[i] for i in ids]).cast(dtype)

    return pl.DataFrame(
        {
            USER: spelled(users, user_type),
            ITEM: spelled(items, item_type),
            TIME: pl.Series(times, dtype=pl.Int64).cast(TIME_DTYPE),
            WEIGHT: pl.Series(weights, dtype=pl.Float32),
            ORDER: pl.Series(order, dtype=pl.Int64),
        }
    )


@pytest.mark.parametrize(
    ("how", "weights"),
    [("count", [2.0, 1.0, 2.0]), ("sum", [9.0, 1.5, 7.0]), ("auto", [9.0, 1.5, 7.0]), ("max", [7.0, 1.5, 4.0]), ("last", [2.0, 1.5, 3.0])],
)
@pytest.mark.parametrize(
    "types", [(pl.String, pl.String), (pl.Categorical, pl.String), (pl.String, pl.UInt32), (pl.UInt64, pl.String)]
)
def test_the_two_column_group_by_gives_each_pair_by_hand(how: str, weights: list[float], types: tuple) -> None:
    """Ids that do not pack into one key (text, or a 64-bit column beside a text one) group on
    two columns: one row per pair with the weight of `how`, the latest time, the first ORDER and
    the first-seen time."""
    got = aggregate(_typed(*types).lazy(), how).collect()
    got = got.with_columns(pl.col(USER, ITEM).cast(pl.String).str.strip_chars("uvij")).sort(USER, ITEM)
    assert got.select(USER, ITEM).rows() == [("1", "10"), ("1", "11"), ("2", "10")]
    assert got.get_column(WEIGHT).to_list() == weights and got.schema[WEIGHT] == pl.Float32
    assert got.get_column(TIME).dt.epoch("us").to_list() == [5, 2, 1]
    assert got.get_column(ORDER).to_list() == [1, 0, 2]
    assert got.get_column(FIRST_SEEN).dt.epoch("us").to_list() == [5, 2, 1]


def test_wide_ids_with_no_free_block_group_on_two_columns() -> None:
    """Narrow users every 46,340 codes over [2**31, 2**32), the top one included, leave no gap
    for 46,341 wide users: the stand-ins are refused and the pairs are grouped on two columns,
    every user its own."""
    narrow = np.append(np.arange(HALF, TOP, 46_340, dtype=np.uint64), np.uint64(TOP - 1))
    wide = (np.arange(46_341, dtype=np.uint64) + 1) << np.uint64(40)
    assert _free_block(narrow, wide.size) is None
    users = np.concatenate([narrow, wide, wide[:1]])
    rows = _rows(users.tolist(), [3] * users.size, [1.0] * users.size, [1] * users.size)
    got = aggregate(rows.lazy(), "count").collect()
    assert got.height == narrow.size + wide.size and got.schema[USER] == WIDE_CODE_DTYPE
    counts = dict(got.select(USER, WEIGHT).rows())
    assert counts[int(wide[0])] == 2.0 and counts[int(wide[-1])] == 1.0 and counts[HALF] == 1.0
    assert counts[TOP - 1] == 1.0


def test_the_largest_user_and_item_codes_come_back_from_the_pair_key() -> None:
    """user * 2**32 + item near 2**64: a float division of the key would round the item into the
    user (2**32 - 64, 2**32 - 1 -> user 2**32 - 63)."""
    users = [TOP - 64, TOP - 1, HALF, 0]
    items = [TOP - 1, TOP - 1, TOP - 1, TOP - 1]
    rows = _rows(users, items, [1.0, 2.0, 3.0, 4.0], [1, 2, 3, 4]).with_columns(pl.col(USER).cast(CODE_DTYPE))
    got = aggregate(rows.lazy(), "sum").collect().sort(USER)
    assert got.select(USER, ITEM, WEIGHT).rows() == [
        (0, TOP - 1, 4.0),
        (HALF, TOP - 1, 3.0),
        (TOP - 64, TOP - 1, 1.0),
        (TOP - 1, TOP - 1, 2.0),
    ]


def test_an_unknown_aggregate_names_the_choices() -> None:
    with pytest.raises(DataError, match=r"^unknown aggregate 'mean'; choose auto, count, sum, max or last$"):
        aggregate(_typed(pl.String, pl.String).lazy(), "mean")
