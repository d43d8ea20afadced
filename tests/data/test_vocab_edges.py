"""Vocab edge cases that a wrong line would pass silently (each pinned down by mutation testing of
recsys/data/vocab.py): loading, block labels, and ids past 2**63 read back from text."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys.data.vocab import WIDE_CODE_DTYPE, Vocab
from recsys.errors import DataError


def test_load_reads_a_saved_vocab_under_the_default_column_names(tmp_path: Path) -> None:
    Vocab().extend(pl.DataFrame({"id": ["b", "a"]})).save(tmp_path / "v.parquet")
    loaded = Vocab.load(tmp_path / "v.parquet")
    assert (loaded.id_name, loaded.idx_name) == ("id", "idx")
    assert loaded.ids().tolist() == ["a", "b"]


def test_load_of_a_missing_file_is_an_empty_vocab_with_the_given_names(tmp_path: Path) -> None:
    """The first ingest has no vocab on disk: it starts from an empty one that still names its
    columns like the frames it will extend from and index."""
    empty = Vocab.load(tmp_path / "absent.parquet", id_name="user_id", idx_name="user_idx")
    assert len(empty) == 0 and (empty.id_name, empty.idx_name) == ("user_id", "user_idx")
    grown = empty.extend(pl.DataFrame({"user_id": ["u2", "u1"]}))
    out = grown.index(pl.LazyFrame({"user_id": ["u1", "u2"]})).collect()
    assert out.columns == ["user_idx"] and out["user_idx"].to_list() == [0, 1]
    assert Vocab.load(tmp_path / "absent.parquet").id_name == "id"
    assert Vocab.load(tmp_path / "absent.parquet").idx_name == "idx"


def test_load_refuses_a_vocab_without_its_columns_or_unreadable(tmp_path: Path) -> None:
    pl.DataFrame({"id": ["a"], "index": [0]}).write_parquet(tmp_path / "renamed.parquet")
    with pytest.raises(DataError, match=r"renamed.parquet: vocab lacks columns \['idx'\]"):
        Vocab.load(tmp_path / "renamed.parquet")
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"garbage.parquet: unreadable vocab \("):
        Vocab.load(tmp_path / "garbage.parquet")


def test_a_vocab_with_a_gap_in_its_indices_names_the_range_it_needs() -> None:
    with pytest.raises(DataError, match=r"^vocab user_id: indices are not 0\.\.2$"):
        Vocab(pl.DataFrame({"user_id": ["a", "b", "c"], "user_idx": [0, 1, 3]}), id_name="user_id", idx_name="user_idx")


def test_block_labels_use_the_vocab_id_column_even_when_it_is_not_first() -> None:
    vocab = Vocab(id_name="item_id", idx_name="item_idx").extend(pl.DataFrame({"item_id": ["x", "y", "z"]}))
    labels = pl.DataFrame({"score": ["z", "x"], "item_id": ["x", "z"], "block": [4, 9]})
    assert vocab.with_blocks(labels).blocks().tolist() == [4, -1, 9]


def test_block_labels_with_another_id_column_name_take_the_first_non_block_column() -> None:
    vocab = Vocab(id_name="item_id", idx_name="item_idx").extend(pl.DataFrame({"item_id": ["x", "y", "z"]}))
    labels = pl.DataFrame({"block": [4, 9], "raw": ["y", "x"]})
    assert vocab.with_blocks(labels).blocks().tolist() == [9, 4, -1]


def test_block_labels_without_a_block_column_are_refused() -> None:
    vocab = Vocab().extend(pl.DataFrame({"id": ["a"]}))
    with pytest.raises(DataError, match=r"id labels need an id column and a 'block' column; got \['id', 'group'\]"):
        vocab.with_blocks(pl.DataFrame({"id": ["a"], "group": [1]}))
    with pytest.raises(DataError, match="need an id column"):
        vocab.with_blocks(pl.DataFrame({"block": [1]}))


def test_an_id_labelled_twice_takes_its_last_label_and_keeps_one_entry() -> None:
    vocab = Vocab().extend(pl.DataFrame({"id": ["a", "b"]}))
    labelled = vocab.with_blocks(pl.DataFrame({"id": ["a", "b", "a"], "block": [1, 5, 2]}))
    assert len(labelled) == 2 and labelled.ids().tolist() == ["a", "b"]
    assert labelled.blocks().tolist() == [2, 5]


def test_ids_past_2_to_the_63_read_back_from_text_join_their_codes() -> None:
    """A saved vocab holds ids as text; a 64-bit code column (hashed ids) must find every one of
    them, the largest included, and extending from such codes must not append a known id again."""
    top = str(2**64 - 1)
    vocab = Vocab(pl.DataFrame({"id": [top, str(2**63), "5"], "idx": [0, 1, 2]}))
    frame = pl.LazyFrame({"id": pl.Series([5, 2**64 - 1, 2**63], dtype=WIDE_CODE_DTYPE), "w": [1, 2, 3]})
    out = vocab.index(frame).collect()
    assert out["idx"].to_list() == [2, 0, 1] and out["w"].to_list() == [1, 2, 3]
    fresh = Vocab(pl.DataFrame({"id": [top, "5"], "idx": [0, 1]}))
    grown = fresh.extend(pl.DataFrame({"id": pl.Series([2**64 - 1, 7, 5], dtype=WIDE_CODE_DTYPE)}))
    assert grown.ids().tolist() == [top, "5", "7"]


def test_labels_given_again_change_only_the_ids_they_name() -> None:
    """An append labels its own ids: ids labelled by an earlier batch keep their blocks."""
    vocab = Vocab().extend(pl.DataFrame({"id": ["a", "b", "c"]}))
    first = vocab.with_blocks(pl.DataFrame({"id": ["a", "c"], "block": [3, 7]}))
    again = first.extend(pl.DataFrame({"id": ["d"]})).with_blocks(pl.DataFrame({"id": ["b", "d"], "block": [5, 0]}))
    assert again.blocks().tolist() == [3, 5, 7, 0]


@pytest.mark.parametrize("dtype", [pl.String, pl.Categorical, pl.UInt32, pl.UInt64])
def test_index_keeps_the_frame_row_order_against_a_larger_vocab(dtype: pl.DataType) -> None:
    """A hash join builds on the smaller side: a few rows against a 5,000-id vocab come out in
    the vocab's order unless the join keeps the frame's (as `index` promises by default)."""
    vocab = Vocab(pl.DataFrame({"id": [str(i) for i in range(5000)], "idx": range(5000)}))
    frame = pl.LazyFrame({"id": pl.Series(["4000", "3", "2500", "3"]).cast(dtype), "w": [1, 2, 3, 4]})
    out = vocab.index(frame).collect()
    assert out["w"].to_list() == [1, 2, 3, 4] and out["idx"].to_list() == [4000, 3, 2500, 3]


@pytest.mark.parametrize("dtype", [pl.String, pl.Categorical, pl.UInt32, pl.UInt64])
def test_extending_twice_breaks_ties_by_id_text_whatever_the_id_type(dtype: pl.DataType) -> None:
    """Ties in first appearance go by the id's text, so "10" comes before "9" whether the ids
    arrive as text or as decimal codes; known ids keep their index, including one seen again
    earlier than any new id."""
    first = pl.DataFrame({"id": pl.Series(["9", "10", "3"]).cast(dtype), "seen": [4, 4, 1]})
    vocab = Vocab().extend(first, order="seen")
    assert vocab.ids().tolist() == ["3", "10", "9"]
    second = pl.DataFrame({"id": pl.Series(["9", "7", "100", "20", "7"]).cast(dtype), "seen": [0, 6, 5, 5, 2]})
    grown = vocab.extend(second, order="seen")
    assert grown.ids().tolist() == ["3", "10", "9", "7", "100", "20"]
    frame = pl.LazyFrame({"id": pl.Series(["20", "9", "7", "100"]).cast(dtype)})
    assert grown.index(frame).collect()["idx"].to_list() == [5, 2, 3, 4]
