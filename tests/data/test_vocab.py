"""Vocab: indices are dense, deterministic, and never move when new ids arrive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data.vocab import Vocab
from recsys.errors import DataError


def _candidates(ids: list[str], order: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"id": ids, "seen": order})


def test_new_ids_follow_first_appearance_then_id() -> None:
    vocab = Vocab().extend(_candidates(["c", "a", "b", "a", "d"], [3, 1, 3, 0, 2]), order="seen")
    # a first seen at 0, d at 2, then b and c tie at 3 and are ordered by id.
    assert vocab.ids().tolist() == ["a", "d", "b", "c"]
    assert len(vocab) == 4


def test_extend_keeps_old_indices_and_appends(tmp_path: Path) -> None:
    first = Vocab(id_name="user_id", idx_name="user_idx").extend(pl.DataFrame({"user_id": ["u2", "u1"]}))
    first.save(tmp_path / "users.parquet")
    loaded = Vocab.load(tmp_path / "users.parquet", id_name="user_id", idx_name="user_idx")
    second = loaded.extend(pl.DataFrame({"user_id": ["u3", "u1", "u0"]}))
    old = dict(zip(first.table["user_id"].to_list(), first.table["user_idx"].to_list(), strict=True))
    new = dict(zip(second.table["user_id"].to_list(), second.table["user_idx"].to_list(), strict=True))
    assert {k: new[k] for k in old} == old
    assert sorted(new.values()) == list(range(4))
    assert new["u0"] == 2 and new["u3"] == 3  # no order column: new ids sorted by id


def test_index_maps_ids_to_indices() -> None:
    vocab = Vocab(id_name="item_id", idx_name="item_idx").extend(pl.DataFrame({"item_id": ["x", "y"]}))
    out = vocab.index(pl.LazyFrame({"item_id": ["y", "x", "y"], "w": [1, 2, 3]})).collect()
    assert out["item_idx"].to_list() == [1, 0, 1]


def test_blocks_default_to_unknown_and_follow_labels() -> None:
    vocab = Vocab().extend(pl.DataFrame({"id": ["a", "b", "c"]}))
    assert vocab.blocks() is None
    labelled = vocab.with_blocks(pl.DataFrame({"id": ["c", "a"], "block": [7, 3]}))
    assert labelled.blocks().tolist() == [3, -1, 7]
    grown = labelled.extend(pl.DataFrame({"id": ["z"]}))
    np.testing.assert_array_equal(grown.blocks(), [3, -1, 7, -1])


def test_corrupt_vocab_is_refused() -> None:
    with pytest.raises(DataError, match="indices"):
        Vocab(pl.DataFrame({"id": ["a", "b"], "idx": [0, 2]}))
    with pytest.raises(DataError, match="repeated"):
        Vocab(pl.DataFrame({"id": ["a", "a"], "idx": [0, 1]}))


def test_index_and_extend_accept_categorical_ids() -> None:
    """Ingest hands the vocab Categorical ids (grouping on codes is faster); results must equal
    the String path exactly, row order included."""
    vocab = Vocab(id_name="item_id", idx_name="item_idx").extend(
        pl.DataFrame({"item_id": pl.Series(["y", "x", "y"], dtype=pl.Categorical), "seen": [1, 0, 2]}),
        order="seen",
    )
    assert vocab.ids().tolist() == ["x", "y"] and vocab.table.schema["item_id"] == pl.String
    frame = pl.LazyFrame(
        {"item_id": pl.Series(["y", "x", "y", "x"], dtype=pl.Categorical), "w": [1, 2, 3, 4]}
    )
    out = vocab.index(frame).collect()
    assert out["item_idx"].to_list() == [1, 0, 1, 0] and out["w"].to_list() == [1, 2, 3, 4]


def test_two_new_ids_tied_on_first_appearance_are_ordered_by_id() -> None:
    vocab = Vocab().extend(_candidates(["b", "a"], [5, 5]), order="seen")
    assert vocab.ids().tolist() == ["a", "b"]  # not the rows' order: the same data, the same indices


def test_the_largest_32_bit_id_is_indexed_from_its_code() -> None:
    """Ingest carries ids in [0, 2**32) as UInt32 codes; the top value must join like any other
    (an inner join drops what the vocab's code table leaves out, silently)."""
    from recsys.data.vocab import CODE_DTYPE, MAX_CODE

    vocab = Vocab(pl.DataFrame({"id": ["5", str(MAX_CODE)], "idx": [0, 1]}))
    frame = pl.LazyFrame({"id": pl.Series([MAX_CODE, 5], dtype=CODE_DTYPE), "w": [1, 2]})
    out = vocab.index(frame).collect()
    assert out["idx"].to_list() == [1, 0] and out["w"].to_list() == [1, 2]


@pytest.mark.parametrize("dtype", [pl.String, pl.Categorical, pl.UInt32, pl.UInt64])
def test_index_without_kept_order_gives_the_same_rows(dtype: pl.DataType) -> None:
    """Ingest sorts the indexed pairs afterwards, so it lets the join return rows in any order
    (`keep_order=False`): the rows must be those of the ordered join, and ids the vocab lacks
    still dropped."""
    vocab = Vocab(pl.DataFrame({"id": ["7", "3", "11"], "idx": [0, 1, 2]}))
    ids = pl.Series(["3", "11", "7", "3", "99", "11"]).cast(dtype)
    frame = pl.LazyFrame({"id": ids, "w": [1, 2, 3, 4, 5, 6]})
    ordered = vocab.index(frame).collect()
    unordered = vocab.index(frame, keep_order=False).collect()
    assert ordered["idx"].to_list() == [1, 2, 0, 1, 2]
    assert unordered.sort("w").equals(ordered)


def test_all_decimal_is_known_only_for_ids_extended_from_codes() -> None:
    """`all_decimal` lets the float-spelling check skip a vocab that cannot hold `463.0`: true
    only where every id came as a decimal code, never for text ids (which may hold such a
    spelling) nor for a vocab whose text ids mix with codes."""
    from recsys.data.suspicions import float_spelled_twins
    from recsys.data.vocab import WIDE_CODE_DTYPE

    codes = pl.DataFrame({"id": pl.Series([463, 7], dtype=WIDE_CODE_DTYPE), "seen": [0, 1]})
    assert Vocab().extend(codes, order="seen").all_decimal
    texts = Vocab().extend(_candidates(["463", "463.0"], [0, 1]), order="seen")
    assert not texts.all_decimal
    mixed = texts.extend(codes.with_columns(pl.col("id") + 1000), order="seen")
    assert not mixed.all_decimal
    warned = float_spelled_twins(mixed, Vocab().extend(codes, order="seen"), {})
    assert len(warned) == 1 and "'463.0' and '463'" in warned[0]
