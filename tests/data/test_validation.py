"""Validation: each planted bad row lands in quarantine with exactly its reason; nothing is lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from recsys.data.readers import scan_source
from recsys.data.validation import REASONS, validate

NOW = datetime(2024, 6, 1, tzinfo=UTC)
SOON = int((NOW + timedelta(hours=12)).timestamp())  # inside max_future_days=1
LATER = int((NOW + timedelta(days=3)).timestamp())  # beyond it

# (line, expected reason or None); line numbers are 1-based data rows.
PLANTED = [
    ("u1,i1,4,1700000000", None),
    (",i1,4,1700000000", "missing_user"),
    ("u2,,4,1700000000", "missing_item"),
    ("u2,i2,4,yesterday", "bad_timestamp"),
    ("u2,i3,four,1700000000", "bad_weight"),
    ("u2,i4,inf,1700000000", "non_finite_weight"),
    ("u2,i5,NaN,1700000000", "non_finite_weight"),
    ("u2,i6,-1,1700000000", "negative_weight"),
    (f"u2,i7,4,{LATER}", "future_timestamp"),
    (f"u2,i8,4,{SOON}", None),
    ("u1,i1,4,1700000000", "duplicate"),  # exact copy of row 1
    ("u1,i1,5,1700000000", None),  # same pair, other rating: not a duplicate
    ("u3,i9,2,", None),  # empty timestamp is missing, not bad
    ("   ,i1,4,1700000000", "missing_user"),  # blank after trimming
    ("u2,i2,4,yesterday", "bad_timestamp"),  # a copy of a bad row keeps its own reason
    ("u1,i1,4,1700000000", "duplicate"),  # third copy
]


def _planted_file(tmp_path: Path) -> Path:
    path = tmp_path / "planted.csv"
    path.write_text("user,item,rating,timestamp\n" + "\n".join(line for line, _ in PLANTED) + "\n")
    return path


def test_every_planted_row_gets_exactly_its_reason(tmp_path: Path) -> None:
    result = validate(scan_source(_planted_file(tmp_path)), max_future_days=1.0, now=NOW)

    expected_bad = {row: reason for row, (_, reason) in enumerate(PLANTED, start=1) if reason}
    got_bad = dict(
        zip(result.quarantine["source_row"].to_list(), result.quarantine["reason"].to_list(), strict=True)
    )
    assert got_bad == expected_bad
    expected_good = [row for row, (_, reason) in enumerate(PLANTED, start=1) if reason is None]
    assert result.accepted["source_row"].to_list() == expected_good
    assert result.rows_in == len(PLANTED) == result.rows_accepted + result.rows_quarantined
    assert set(result.reasons) <= set(REASONS)
    assert result.reasons["duplicate"] == 2 and result.reasons["non_finite_weight"] == 2


def test_quarantine_keeps_raw_values(tmp_path: Path) -> None:
    result = validate(scan_source(_planted_file(tmp_path)), max_future_days=1.0, now=NOW)
    bad_time = result.quarantine.filter(pl.col("source_row") == 4).row(0, named=True)
    assert bad_time == {
        "source_row": 4,
        "user_id": "u2",
        "item_id": "i2",
        "timestamp": "yesterday",
        "weight": "4",
        "reason": "bad_timestamp",
    }
    assert result.quarantine.filter(pl.col("source_row") == 5)["weight"].item() == "four"


def test_accepted_rows_are_canonical(tmp_path: Path) -> None:
    result = validate(scan_source(_planted_file(tmp_path)), max_future_days=1.0, now=NOW)
    accepted = result.accepted
    assert accepted.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert accepted.schema["weight"] == pl.Float32
    assert accepted.filter(pl.col("source_row") == 13)["timestamp"].item() is None
    assert accepted.filter(pl.col("source_row") == 12)["weight"].item() == 5.0


def test_future_window_is_configurable(tmp_path: Path) -> None:
    strict = validate(scan_source(_planted_file(tmp_path)), max_future_days=0.0, now=NOW)
    assert strict.quarantine.filter(pl.col("reason") == "future_timestamp")["source_row"].to_list() == [9, 10]
    lenient = validate(scan_source(_planted_file(tmp_path)), max_future_days=10.0, now=NOW)
    assert "future_timestamp" not in lenient.reasons


def test_hash_collision_never_quarantines_a_distinct_row() -> None:
    """Duplicates are found on a u64 row hash; rows that merely share a hash must be compared
    exactly. Plant a fake collision: rows 0, 1 and 3 share a hash, only row 3 copies row 0."""
    from recsys.data.validation import _HASH, _duplicate_mask

    frame = pl.DataFrame(
        {
            "__user_id": ["a", "b", "c", "a"],
            "__item_id": ["x", "y", "z", "x"],
            _HASH: pl.Series([7, 7, 9, 7], dtype=pl.UInt64),
        }
    )
    valid = np.array([True, True, True, True])
    mask = _duplicate_mask(frame, valid, ["__user_id", "__item_id"])
    assert mask.tolist() == [False, False, False, True]
    # An invalid row is never the "earlier copy" that makes a valid row a duplicate.
    mask = _duplicate_mask(frame, np.array([False, True, True, True]), ["__user_id", "__item_id"])
    assert mask.tolist() == [False, False, False, False]


def test_padding_after_the_sample_window_still_parses(tmp_path: Path) -> None:
    """The sample (first rows) decides whether weights need stripping; a padded weight further down
    must still parse (fallback), and a blank one is still bad_weight."""
    body = [f"u{i},i{i},3,1700000000" for i in range(2500)] + ["u9,i9, 4 ,1700000000", "u8,i8,  ,1700000000"]
    path = tmp_path / "late_padding.csv"
    path.write_text("user,item,rating,timestamp\n" + "\n".join(body) + "\n")
    result = validate(scan_source(path), max_future_days=1.0, now=NOW)
    assert result.accepted.filter(pl.col("source_row") == 2501)["weight"].item() == 4.0
    assert result.quarantine.select("source_row", "reason").rows() == [(2502, "bad_weight")]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40), st.integers(1, 4))
def test_rows_cut_out_by_slicing_equal_a_filter(keep: list[bool], chunks: int) -> None:
    """A few rejected rows are cut out of the accepted frame by slicing (no copy): the result must
    be the filter's, row for row, wherever the cuts fall (first, last, adjacent, every row) and
    however the frame is chunked (the streaming read's chunks)."""
    from recsys.data.validation import _without_rows

    n = len(keep)
    parts = [pl.DataFrame({"a": np.arange(n) * 3, "b": [f"r{i}" for i in range(n)]})[i::chunks] for i in range(chunks)]
    frame = pl.concat(parts, rechunk=False).sort("a")
    frame = pl.concat([frame.slice(0, n // 2), frame.slice(n // 2)], rechunk=False)
    mask = np.array(keep)
    cut = _without_rows(frame, mask, int((~mask).sum()))
    assert_frame_equal(cut, frame.filter(pl.Series(mask)))
