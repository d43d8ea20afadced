"""JSON Lines with malformed lines: each bad line is one quarantined row (malformed_json) with its
line number, the good lines ingest, and rows_in == rows_accepted + rows_quarantined."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import DataConfig
from recsys.data.ingest import ingest, read_canonical
from recsys.data.readers import decodable, scan_source
from recsys.data.validation import validate
from recsys.errors import DataError

GOOD = '{{"user_id": "{u}", "item_id": "{i}", "rating": {r}, "timestamp": {t}}}'
T0 = 1_700_000_000


def _good(u: str, i: str, r: float = 4.0, t: int = T0) -> str:
    return GOOD.format(u=u, i=i, r=r, t=t)


# line number -> content; line 2 is blank (skipped but counted in the numbering).
LINES = {
    1: _good("u1", "i1"),
    2: "",
    3: _good("u2", "i2", 3.0, T0 + 1),
    4: '{"user_id": "u3", "item_id": "i',  # truncated record
    5: "not json at all",  # garbage
    6: "[1, 2, 3]",  # an array, not an object
    7: _good("u4", "i4", 5.0, T0 + 2),
    8: "42",  # a bare number
    9: '{"user_id": "u5", "item_id": "i5", "rating": "many", "timestamp": 1700000003}',  # bad weight
    10: "   ",  # whitespace only: blank
    11: _good("u6", "i6", 1.0, T0 + 4),
}
BAD = [
    (4, "malformed_json"),
    (5, "malformed_json"),
    (6, "malformed_json"),
    (8, "malformed_json"),
    (9, "bad_weight"),
]


def _write(path: Path, lines: dict[int, str]) -> Path:
    path.write_text("\n".join(lines[n] for n in sorted(lines)) + "\n")
    return path


def test_bad_lines_are_quarantined_with_their_line_numbers(tmp_path: Path) -> None:
    accepted, quarantine, rows_in = read_canonical(_write(tmp_path / "events.jsonl", LINES))
    assert rows_in == 9  # 11 lines, two blank
    assert quarantine.select("source_row", "reason").rows() == BAD
    assert accepted["source_row"].to_list() == [1, 3, 7, 11]
    assert accepted["user_id"].to_list() == ["u1", "u2", "u4", "u6"]
    assert accepted["weight"].to_list() == [4.0, 3.0, 5.0, 1.0]
    assert accepted["timestamp"].to_list()[2] == datetime.fromtimestamp(T0 + 2, UTC)
    assert rows_in == accepted.height + quarantine.height
    assert "source_file" not in quarantine.columns  # a single file keeps the old schema


def test_object_shaped_but_undecodable_line_takes_the_exact_path(tmp_path: Path) -> None:
    """`{"user_id": }` passes the cheap shape test and fails the decoder: the lazy read fails, the
    exact rebuild isolates the line, and the other rows are the same as without it."""
    lines = {**LINES, 12: '{"user_id": "u7", "item_id": }', 13: _good("u8", "i8", 2.0, T0 + 5)}
    accepted, quarantine, rows_in = read_canonical(_write(tmp_path / "events.jsonl", lines))
    assert quarantine.select("source_row", "reason").rows() == [*BAD, (12, "malformed_json")]
    assert accepted["source_row"].to_list() == [1, 3, 7, 11, 13]
    assert rows_in == 11 == accepted.height + quarantine.height


def test_first_line_garbage_still_reads_as_jsonl(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.ndjson", {1: "garbage", 2: _good("u1", "i1"), 3: _good("u2", "i2")})
    accepted, quarantine, _ = read_canonical(path)
    assert quarantine.select("source_row", "reason").rows() == [(1, "malformed_json")]
    assert accepted["user_id"].to_list() == ["u1", "u2"]


def test_no_object_at_all_is_a_one_line_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.jsonl", {1: "garbage", 2: "[1]"})
    with pytest.raises(DataError, match="no line is a JSON object") as info:
        read_canonical(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_ingest_counts_and_quarantine_file(tmp_path: Path) -> None:
    report = ingest(_write(tmp_path / "events.jsonl", LINES), tmp_path / "out", DataConfig())
    assert (report.rows_in, report.rows_accepted, report.rows_quarantined) == (9, 4, 5)
    assert report.reasons == {"malformed_json": 4, "bad_weight": 1}
    stored = pl.read_parquet(report.quarantine_path)
    assert stored.select("source_row", "reason").rows() == BAD
    assert report.interactions == 4


def test_values_read_the_same_as_a_clean_file(tmp_path: Path) -> None:
    """A malformed line must not change how the good lines are read (number formatting included)."""
    clean = {n: v for n, v in LINES.items() if n in (1, 3, 7, 11)}
    a, _, _ = read_canonical(_write(tmp_path / "clean.jsonl", clean))
    b, _, _ = read_canonical(_write(tmp_path / "dirty.jsonl", LINES))
    assert a.drop("source_row").equals(b.drop("source_row"))


def test_decodable_isolates_exactly_the_planted_bad_lines() -> None:
    rng = np.random.default_rng(0)
    n = 1000
    lines = [f'{{"a": "{v}"}}' for v in rng.integers(0, 100, n)]
    planted = [0, 37, 38, 500, 999]
    for i in planted:
        lines[i] = '{"a": }'
    candidates = np.ones(n, dtype=bool)
    candidates[10] = False  # not a candidate: stays False whatever it holds
    ok = decodable(pl.Series(lines), pl.Struct({"a": pl.String()}), candidates)
    assert np.flatnonzero(~ok).tolist() == sorted([*planted, 10])


def test_lazy_scan_marks_rows_without_reading(tmp_path: Path) -> None:
    raw = scan_source(_write(tmp_path / "events.jsonl", LINES))
    assert raw.format == "jsonl" and raw.exact is not None
    frame = raw.frame.collect()
    assert frame.filter(pl.col("__read_error").is_not_null())["source_row"].to_list() == [4, 5, 6, 8]


def test_a_key_read_twice_with_other_values_is_quarantined_not_one_value_picked(tmp_path: Path) -> None:
    """`{"rating": 3, "rating": 5}`: polars' decode kept 3 and Python's json (this reader's key
    sniffing, jq, pandas) keeps 5, so which rating the row got depended on the reader. Such a
    line is now quarantined as duplicate_key, through the lazy read and the per-line rebuild
    alike; the same value twice, or the key again inside a nested object, is no conflict."""
    path = tmp_path / "events.jsonl"
    lines = [
        '{"user_id": "u1", "item_id": "i1", "rating": 3, "rating": 5, "timestamp": 1700000000}',
        '{"user_id": "u2", "item_id": "i2", "rating": 4, "rating": 4, "timestamp": 1700000001}',
        '{"user_id": "u3", "item_id": "i3", "rating": 2, "meta": {"rating": 1, "user_id": "x"}, "timestamp": 1700000002}',
        '{"user_id": "u4", "user_id": "u5", "item_id": "i4", "timestamp": 1700000003}',
        '{"user_id": "u6", "item_id": "i6", "rating": 1, "timestamp": 1700000004}',
    ]
    path.write_text("\n".join(lines) + "\n")
    raw = scan_source(path)
    for frame in (raw.frame, raw.exact()):  # the rebuild (a line the lazy read fails on) reads the same
        result = validate(replace(raw, frame=frame, exact=None), 1.0)
        assert result.quarantine.select("source_row", "reason").rows() == [(1, "duplicate_key"), (4, "duplicate_key")]
        # ...showing every value the key was given (it showed polars' pick, 3 and u4), the rest as read
        shown = result.quarantine.select("user_id", "item_id", "weight").rows()
        assert shown == [("u1", "i1", "[3, 5]"), ('["u4", "u5"]', "i4", None)], shown
        got = result.accepted.select("user_id", "weight").rows()
        assert got == [("u2", 4.0), ("u3", 2.0), ("u6", 1.0)]  # whole numbers: exact in float32


def test_boolean_ids_are_quarantined_and_a_negative_zero_id_is_zero(tmp_path: Path) -> None:
    """JSON `true` under the user key became the user "true" (and `-0.0` the user "-0", beside
    the user "0" of `0`): a boolean id is a flag mapped as an id, quarantined as boolean_id; the
    number -0 is the id 0. A string "true" or "-0" is an id like any other. A key holding only
    booleans stops ingest naming it."""
    path = tmp_path / "events.jsonl"
    lines = [
        '{"user_id": true, "item_id": "i1"}',
        '{"user_id": "u1", "item_id": false}',
        '{"user_id": -0.0, "item_id": "i2"}',
        '{"user_id": 0, "item_id": "i3"}',
        '{"user_id": "true", "item_id": "i4"}',
        '{"user_id": "-0", "item_id": "i5"}',
    ]
    path.write_text("\n".join(lines) + "\n")
    result = validate(scan_source(path), 1.0)
    assert result.quarantine.select("source_row", "reason").rows() == [(1, "boolean_id"), (2, "boolean_id")]
    assert result.accepted.select("user_id", "item_id").rows() == [("0", "i2"), ("0", "i3"), ("true", "i4"), ("-0", "i5")]

    path.write_text("".join(f'{{"user_id": "u{n}", "item_id": {str(n % 2 == 0).lower()}}}\n' for n in range(4)))
    with pytest.raises(DataError, match=r"no row passed validation \(boolean_id: 4; row 1: 'item_id' is 'true'\).*not true / false"):
        ingest(path, tmp_path / "out", DataConfig(min_user_interactions=1, min_item_interactions=1))
