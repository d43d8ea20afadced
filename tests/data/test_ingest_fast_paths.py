"""Ingest's fast paths (decimal id codes, integer timestamps) must give exactly the slow paths' results.

The sample (first rows) only proposes a fast path; a later row it cannot represent exactly must send
validation back to the text route, never merge ids, shift a timestamp or quarantine a good row.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import DataConfig
from recsys.data import validation
from recsys.data.ingest import ingest, read_canonical
from recsys.data.readers import scan_source
from recsys.data.storage import batch_file, load_processed
from recsys.data.validation import _integer_to_time, _numeric_to_time, validate
from recsys.data.vocab import CODE_DTYPE, Vocab, decimal_codes

NOW = datetime(2030, 1, 1, tzinfo=UTC)
FILLER = 2500  # more rows than validation samples, so the odd rows come after the sample


def _csv(path: Path, rows: list[tuple], header: str = "user_id,item_id,rating,timestamp") -> Path:
    path.write_text(header + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows))
    return path


def _filler(n: int = FILLER) -> list[tuple]:
    return [(i % 97, i % 89, 1 + i % 5, 1_600_000_000 + i) for i in range(n)]


def test_decimal_codes_accept_only_canonical_decimals() -> None:
    text = pl.Series(
        "id", ["0", "7", "4294967295", "007", "+7", "-7", " 7", "7 ", "4294967296", "u7", "", "-0"]
    )
    code, canonical = decimal_codes(pl.col("id"))
    out = text.to_frame().select(code.alias("code"), canonical.alias("ok"))
    assert out["ok"].to_list() == [True, True, True] + [False] * 9
    assert out["code"].head(3).to_list() == [0, 7, 4294967295]


@pytest.mark.parametrize("odd", ["007", "+7", "u7", "4294967296"])
def test_late_non_decimal_id_keeps_ids_distinct(tmp_path: Path, odd: str) -> None:
    rows = [*_filler(), (7, 1, 5, 1_700_000_000), (odd, 1, 5, 1_700_000_000)]
    report = ingest(_csv(tmp_path / "a.csv", rows), tmp_path / "out", DataConfig())
    data = load_processed(tmp_path / "out")
    ids = data.user_ids.tolist()
    assert "7" in ids and odd in ids and len(set(ids)) == len(ids)
    assert report.rows_quarantined == 0  # "7" and the odd id are different users: no duplicate
    accepted, _, _ = read_canonical(tmp_path / "a.csv")
    assert accepted.schema["user_id"] == pl.String


def test_late_padded_id_is_stripped_as_on_the_text_route(tmp_path: Path) -> None:
    """' 7' is the id '7' (ids are stripped), so that row exactly repeats the row before it."""
    rows = [*_filler(), (7, 1, 5, 1_700_000_000), ('" 7"', 1, 5, 1_700_000_000)]
    report = ingest(_csv(tmp_path / "a.csv", rows), tmp_path / "out", DataConfig())
    assert report.reasons == {"duplicate": 1}
    assert "7" in load_processed(tmp_path / "out").user_ids.tolist()


def test_decimal_ids_give_the_same_dataset_as_text_ids(tmp_path: Path) -> None:
    """The same log with ids spelled as numbers and as 'u<number>' ingests to the same structure."""
    rows = [*_filler(), *_filler(50)]  # the repeats are exact duplicates
    numeric = ingest(_csv(tmp_path / "n.csv", rows), tmp_path / "n", DataConfig())
    text_rows = [(f"u{u}", f"i{i}", r, t) for u, i, r, t in rows]
    text = ingest(_csv(tmp_path / "t.csv", text_rows), tmp_path / "t", DataConfig())
    for key in ("rows_in", "rows_accepted", "rows_quarantined", "users", "items", "interactions"):
        assert getattr(numeric, key) == getattr(text, key), key
    assert numeric.reasons == text.reasons == {"duplicate": 50}
    a, b = load_processed(tmp_path / "n"), load_processed(tmp_path / "t")
    assert [f"u{u}" for u in a.user_ids] == b.user_ids.tolist()
    assert a.interactions.equals(b.interactions)


def test_validation_rows_hold_codes_and_accepted_holds_text(tmp_path: Path) -> None:
    result = validate(scan_source(_csv(tmp_path / "a.csv", _filler(10))), 1.0, now=NOW)
    assert result.rows.schema["user_id"] == CODE_DTYPE
    assert result.accepted.schema["user_id"] == pl.String
    assert result.accepted["user_id"].to_list() == [str(i % 97) for i in range(10)]


def test_append_after_coded_batch_finds_cross_batch_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _filler(100)
    ingest(_csv(tmp_path / "a.csv", first), out, DataConfig())
    assert pl.read_parquet(batch_file(out, 1)).schema["user_id"] == CODE_DTYPE  # stored as codes
    before = load_processed(out)
    second = [*first[:10], ("u1", 3, 5, 1_700_000_000), (1, 3, 5, 1_700_000_001)]
    report = ingest(_csv(tmp_path / "b.csv", second), out, DataConfig(), append=True)
    assert report.reasons == {"duplicate": 10} and report.rows_accepted == 2
    after = load_processed(out)
    assert after.user_ids[: before.n_users].tolist() == before.user_ids.tolist()
    assert after.user_ids[before.n_users :].tolist() == ["u1"]


def test_vocab_index_never_matches_non_canonical_text_to_a_code() -> None:
    vocab = Vocab(pl.DataFrame({"id": ["007", "7"], "idx": [0, 1]}))
    frame = pl.LazyFrame({"id": pl.Series([7], dtype=CODE_DTYPE)})
    assert vocab.index(frame).collect()["idx"].to_list() == [1]


def test_integer_time_route_matches_float_route() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.integers(-(10**11), 10**11, 20_000),
            rng.integers(10**11, 7 * 10**13, 20_000),
            -rng.integers(10**11, 7 * 10**13, 20_000),
            [0, 1, -1, 10**11 - 1, 10**11, 7 * 10**13 - 1, 7 * 10**13, 10**14, 10**17, 2**62],
        ]
    )
    text = pl.Series("t", [str(v) for v in values] + ["+5", "05", "1e9", "1.5", "", "x"])
    out = text.to_frame().select(
        _integer_to_time(pl.col("t")).alias("fast"),
        _numeric_to_time(pl.col("t").cast(pl.Float64, strict=False)).alias("slow"),
    )
    parsed = out.filter(pl.col("fast").is_not_null())
    assert parsed["fast"].equals(parsed["slow"])
    assert parsed.height == 60_000 + 6 + 2  # everything below 7e13 in magnitude, "+5" and "05"


@pytest.mark.parametrize("late", ["1600000000.5", "1.6e9", "1600000000000000", "-1.5"])
def test_late_non_integer_timestamp_is_parsed_not_quarantined(tmp_path: Path, late: str) -> None:
    rows = [*_filler(), (1000, 1000, 5, f'"{late}"'), (1001, 1001, 5, "yesterday")]
    result = validate(scan_source(_csv(tmp_path / "a.csv", rows)), 1.0, now=NOW)
    assert result.reasons == {"bad_timestamp": 1}
    assert result.quarantine["source_row"].to_list() == [FILLER + 2]
    got = result.rows.filter(pl.col("source_row") == FILLER + 1)["timestamp"].item()
    expected = pl.select(_numeric_to_time(pl.lit(late.strip()).cast(pl.Float64))).item()
    assert got == expected


def test_rows_in_is_accepted_plus_quarantined_on_fast_paths(tmp_path: Path) -> None:
    rows = [*_filler(), ("", 1, 5, 1), (1, "", 5, 1), (1, 2, "x", 1), (1, 2, 5, "x"), (1, 2, -1, 1)]
    result = validate(scan_source(_csv(tmp_path / "a.csv", rows)), 1.0, now=NOW)
    assert result.rows_in == result.rows_accepted + result.rows_quarantined == FILLER + 5
    assert result.quarantine["reason"].to_list() == [
        "missing_user",
        "missing_item",
        "bad_weight",
        "bad_timestamp",
        "negative_weight",
    ]
    assert result.rows.schema["user_id"] == CODE_DTYPE  # blanks do not push ids off the fast path


@pytest.mark.parametrize("late", [" 4", "4 ", "\t4.5"])
def test_late_padded_weight_is_parsed_not_quarantined(tmp_path: Path, late: str) -> None:
    rows = [*_filler(), (1000, 1000, f'"{late}"', 1_600_000_000), (1001, 1001, "four", 1_600_000_000)]
    result = validate(scan_source(_csv(tmp_path / "a.csv", rows)), 1.0, now=NOW)
    assert result.reasons == {"bad_weight": 1}
    assert result.quarantine["source_row"].to_list() == [FILLER + 2]
    got = result.rows.filter(pl.col("source_row") == FILLER + 1)["weight"].item()
    assert got == float(late.strip())


def _validate_both_ways(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """validate() as ingest runs it and with the text read only, plus what the typed read did:
    the dtypes it was asked for and whether the byte proof kept its result."""
    raw = scan_source(path)
    assert raw.typed is not None
    calls: list[dict] = []
    proofs: list[bool] = []
    typed_scan, prove = raw.typed, validation._typed_read_is_exact

    def recording(dtypes: dict) -> pl.LazyFrame:
        calls.append(dtypes)
        return typed_scan(dtypes)

    def proving(frame: pl.DataFrame, source) -> bool:
        proofs.append(prove(frame, source))
        return proofs[-1]

    monkeypatch.setattr(validation, "_typed_read_is_exact", proving)
    fast = validate(replace(raw, typed=recording), 1.0, now=NOW)
    text = validate(replace(raw, typed=None), 1.0, now=NOW)
    return fast, text, calls, proofs


def _same(a, b) -> None:
    assert a.rows.equals(b.rows)
    assert a.quarantine.equals(b.quarantine)
    assert a.reasons == b.reasons and a.rows_in == b.rows_in


ALL_TYPED = {"user_id": pl.UInt64(), "item_id": pl.UInt64(), "timestamp": pl.Int64(), "weight": pl.Int64()}


def test_typed_read_of_a_plain_integer_log_gives_the_text_routes_result(tmp_path: Path, monkeypatch) -> None:
    rows = [*_filler(), ("", 1, 5, 1_600_000_000), (1, 2, -1, 1_600_000_000), (1, 2, 5, 4_000_000_000)]
    rows += [(3, "", "", 1_600_000_000), *_filler(20)]  # empty middle fields; exact duplicates
    fast, text, calls, proofs = _validate_both_ways(_csv(tmp_path / "a.csv", rows), monkeypatch)
    assert calls == [ALL_TYPED] and proofs == [True]  # the typed result was kept
    _same(fast, text)
    assert fast.reasons == {
        "duplicate": 20,
        "missing_user": 1,
        "missing_item": 1,
        "negative_weight": 1,
        "future_timestamp": 1,
    }
    shown = fast.quarantine.filter(pl.col("reason") == "missing_user").row(0, named=True)
    assert (shown["user_id"], shown["timestamp"], shown["weight"]) == (None, "1600000000", "5")


@pytest.mark.parametrize(
    "odd_row",
    [
        ("007", 1, 5, 1_600_000_000),
        (7, "+1", 5, 1_600_000_000),
        (7, 1, "05", 1_600_000_000),
        (7, 1, 5, '" 1600000000"'),
        (7, 1, 5, '"1600000000"'),
        (7, 1, 5, "-0"),
        (7, 1, 5, ""),  # the last column empty: maybe a short row, so no proof
    ],
)
def test_a_late_number_spelled_otherwise_sends_validation_back_to_the_text(
    tmp_path: Path, monkeypatch, odd_row: tuple
) -> None:
    """The CSV parser reads "007" as 7; only the byte count shows the spelling differed, and the
    text route keeps "007" apart from "7" and shows it as written."""
    rows = [*_filler(), (7, 1, 5, 1_600_000_000), odd_row, ("", 2, 5, 1_600_000_000)]
    path = _csv(tmp_path / "a.csv", rows)
    fast, text, calls, proofs = _validate_both_ways(path, monkeypatch)
    assert calls == [ALL_TYPED] and proofs == [False]
    _same(fast, text)
    ingest(path, tmp_path / "out", DataConfig())
    ids = load_processed(tmp_path / "out").user_ids.tolist()
    assert "7" in ids and (odd_row[0] == 7 or "007" in ids)


def test_typed_read_is_not_tried_where_bytes_cannot_prove_it(tmp_path: Path) -> None:
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(b"user_id,item_id,rating,timestamp\r\n1,2,5,1600000000\r\n")
    extra = _csv(tmp_path / "extra.csv", [(1, 2, 5, 1, "x")], header="user_id,item_id,rating,timestamp,note")
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::2::5::1600000000\n")
    for path in (crlf, extra, dat):
        assert scan_source(path).layout is None, path
        assert validate(scan_source(path), 1.0, now=NOW).rows_accepted == 1


def test_byte_layout_of_a_directory_counts_each_files_header_and_final_line_end(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_text("user_id,item_id\n1,2\n3,4\n")
    (tmp_path / "d" / "b.csv").write_text("user_id,item_id\n5,6")  # no final LF
    layout = scan_source(tmp_path / "d").layout
    assert layout is not None and (layout.columns, layout.data_bytes, layout.last) == (2, 8 + 4, "item_id")
    (tmp_path / "d" / "c.csv").write_text("item_id,user_id\n7,8\n")  # another column last: no proof
    assert scan_source(tmp_path / "d").layout is None


def test_decimal_bytes_match_the_written_numbers() -> None:
    rng = np.random.default_rng(1)
    values = [*rng.integers(-(10**18), 10**18, 500).tolist(), *rng.integers(-50, 50, 500).tolist()]
    values += [0, 9, 10, 99, 100, -1, -10, 2**63 - 1, None]
    frame = pl.DataFrame(
        {"a": values, "b": [None] * len(values), "c": [v and abs(v) % 2**32 for v in values]}
    )
    frame = frame.with_columns(pl.col("c").cast(pl.UInt32))
    expected = sum(len(str(v)) for v in values if v is not None) + sum(
        len(str(v)) for v in frame["c"].to_list() if v is not None
    )
    assert validation._decimal_bytes(frame, ["a", "b", "c"]) == expected


def test_decimal_bytes_of_long_tailed_ids_count_the_few_long_ones_exactly() -> None:
    """Zipf-drawn 64-bit ids (the higher powers are counted over the values that reach them) and
    every power's edges (10**k - 1, 10**k) up to 2**64 - 1, with and without a null."""
    rng = np.random.default_rng(2)
    edges = [v for k in range(1, 20) for v in (10**k - 1, 10**k)] + [2**64 - 1]
    for values in ([*rng.zipf(1.2, 5_000).tolist(), *edges], [*rng.zipf(1.2, 5_000).tolist(), None], edges[:9]):
        frame = pl.DataFrame({"ids": pl.Series(values, dtype=pl.UInt64)})
        expected = sum(len(str(v)) for v in values if v is not None)
        assert validation._decimal_bytes(frame, ["ids"]) == expected


@pytest.mark.parametrize(
    ("weight", "stamp", "expected_weight", "expected_time"),
    [
        ("4.5", "1600000000", 4.5, datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)),
        ("4", "1600000000.5", 4.0, datetime(2020, 9, 13, 12, 26, 40, 500000, tzinfo=UTC)),
        ("4", "2021-01-01T00:00:00Z", 4.0, datetime(2021, 1, 1, tzinfo=UTC)),
        ("4", '"1600000000 "', 4.0, datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)),
        ("4", '" 1600000000"', 4.0, datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)),
        ('"4 "', "1600000000", 4.0, datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)),
    ],
)
def test_late_value_beyond_the_samples_pattern_is_read_by_the_general_parse(
    tmp_path: Path, monkeypatch, weight: str, stamp: str, expected_weight: float, expected_time: datetime
) -> None:
    """A value the typed read (or the integer / unstripped text route) cannot take, after the
    sample: validation starts again and parses it like any other row, on either route."""
    rows = [*_filler(), (1000, 1000, weight, stamp), (1001, 1001, 5, "yesterday")]
    fast, text, calls, _ = _validate_both_ways(_csv(tmp_path / "a.csv", rows), monkeypatch)
    assert calls  # the typed read was tried first
    _same(fast, text)
    assert fast.reasons == {"bad_timestamp": 1}
    got = fast.rows.filter(pl.col("source_row") == FILLER + 1).row(0, named=True)
    assert (got["weight"], got["timestamp"]) == (expected_weight, expected_time)


@pytest.mark.parametrize("early", ["1600000000", '" 1600000000"'])
def test_whitespace_only_time_is_a_missing_timestamp_whatever_the_sample(
    tmp_path: Path, monkeypatch, early: str
) -> None:
    """'   ' is no timestamp (like an empty field), whether or not the first rows were padded."""
    rows = [(1, 1, 5, early), *_filler(), (1000, 1000, 5, '"   "')]
    fast, text, _, _ = _validate_both_ways(_csv(tmp_path / "a.csv", rows), monkeypatch)
    _same(fast, text)
    assert fast.reasons == {}
    assert fast.rows.filter(pl.col("source_row") == FILLER + 2)["timestamp"].item() is None


def test_typed_read_of_a_directory_and_a_headerless_file_matches_the_text_route(
    tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / "d").mkdir()
    _csv(tmp_path / "d" / "a.csv", [*_filler(), ("", 1, 5, 1_600_000_000)])
    _csv(
        tmp_path / "d" / "b.csv",
        [*_filler(30), (1, 2, -1, 1_600_000_000)],
        header="user_id,item_id,rating,ts",
    )
    fast, text, calls, proofs = _validate_both_ways(tmp_path / "d", monkeypatch)
    assert proofs == [True] and calls == [ALL_TYPED]
    _same(fast, text)
    # b.csv's first 30 rows repeat a.csv's first 30 exactly; rows are numbered within each file.
    assert fast.quarantine.select(pl.col("source_file").cast(pl.String), "source_row", "reason").rows() == [
        ("a.csv", FILLER + 1, "missing_user"),
        *[("b.csv", row, "duplicate") for row in range(1, 31)],
        ("b.csv", 31, "negative_weight"),
    ]
    headerless = tmp_path / "u.data"
    headerless.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in _filler(3000)))
    monkeypatch.undo()
    fast, text, calls, proofs = _validate_both_ways(headerless, monkeypatch)
    assert proofs == [True]
    _same(fast, text)
    assert fast.rows_accepted == 3000 - fast.reasons.get("duplicate", 0)


def test_typed_read_of_a_file_whose_header_stands_behind_a_hash(tmp_path: Path, monkeypatch) -> None:
    """`#user_id,...`: the typed read was refused (its schema against the header's `#user_id`),
    so such files always took the slower text route."""
    path = _csv(tmp_path / "a.csv", [*_filler(), ("", 1, 5, 1_600_000_000)], header="#user_id,item_id,rating,timestamp")
    fast, text, calls, proofs = _validate_both_ways(path, monkeypatch)
    assert calls == [ALL_TYPED] and proofs == [True]
    _same(fast, text)
    assert fast.reasons["missing_user"] == 1


_ODD_SPELLINGS = {
    "user_id": ["007", "+7", " 7", '"7"', "", "u7", "4294967296", "-1", "0"],
    "item_id": ["01", "+1", '"1"', "", "i1", "1.0"],
    "rating": ["05", "+5", "5.0", "4.5", "", " 5", "-0", "99999999999999999999", "nan"],
    "timestamp": ["01600000000", "+1600000000", "1.6e9", "", "   ", "2021-01-01", "-0", "1600000000000"],
}


@pytest.mark.parametrize("seed", range(12))
def test_typed_read_never_changes_the_result_on_randomly_spoiled_logs(
    tmp_path: Path, monkeypatch, seed: int
) -> None:
    """Differential check: plain-integer logs with a few odd spellings planted after the sample
    (and, for some seeds, a short row or a CRLF line) validate exactly as the text read does."""
    rng = np.random.default_rng(seed)
    rows = [list(r) for r in _filler()]
    rows += [list(r) for r in _filler(40)]  # duplicates
    names = list(_ODD_SPELLINGS)
    for _ in range(int(rng.integers(1, 5))):
        row = [str(v) for v in rows[int(rng.integers(0, len(rows)))]]
        column = int(rng.integers(0, 4))
        row[column] = str(rng.choice(_ODD_SPELLINGS[names[column]]))
        rows.append(row)
    rng.shuffle(rows[FILLER:])
    text = "user_id,item_id,rating,timestamp\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)
    if seed % 3 == 1:
        text += "5,6,5\n"  # a short row
    if seed % 3 == 2:
        text = text.replace("\n", "\r\n", 2500)[:-1]  # CRLF head, LF tail, no final line end
    path = tmp_path / "a.csv"
    path.write_text(text)
    fast, slow, _, _ = _validate_both_ways(path, monkeypatch)
    _same(fast, slow)


@pytest.mark.parametrize("second_ids", ["codes", "text"])
def test_append_gives_what_one_ingest_of_both_files_gives(tmp_path: Path, second_ids: str) -> None:
    """Ingesting day 1 then appending day 2 equals ingesting day 1 + day 2 as one file, whether
    both batches hold decimal codes (compared and grouped as codes) or day 2 has text ids."""
    day1 = [*_filler(3000), *_filler(10)]
    day2 = [(u, i, r, t + 10**6) for u, i, r, t in _filler(500)] + _filler(20)  # 20 repeat day 1
    if second_ids == "text":
        day2 = [*day2, ("u7", 1, 5, 1_700_000_000), ("007", 1, 5, 1_700_000_000)]
    config = DataConfig(aggregate="sum")
    ingest(_csv(tmp_path / "d1.csv", day1), tmp_path / "inc", config)
    appended = ingest(_csv(tmp_path / "d2.csv", day2), tmp_path / "inc", config, append=True)
    whole = ingest(_csv(tmp_path / "all.csv", day1 + day2), tmp_path / "one", config)
    assert appended.reasons == {"duplicate": 20}
    for key in ("users", "items", "interactions", "fingerprint"):
        assert getattr(appended, key) == getattr(whole, key), key
    a, b = load_processed(tmp_path / "inc"), load_processed(tmp_path / "one")
    assert a.user_ids.tolist() == b.user_ids.tolist() and a.item_ids.tolist() == b.item_ids.tolist()
    assert a.interactions.equals(b.interactions)


def test_a_file_written_to_after_it_was_scanned_voids_the_byte_proof(tmp_path: Path, monkeypatch) -> None:
    """Four '007' rows carry 8 bytes more than plain '7' rows; a growing log that gains 8 plain bytes
    between scan and read must not let the count balance."""
    path = _csv(tmp_path / "a.csv", [*_filler(), *[("007", 1, 5, 1_600_000_000)] * 4])
    raw = scan_source(path)
    with path.open("a") as fh:
        fh.write("7,1,5,1\n")
    proofs: list[bool] = []
    prove = validation._typed_read_is_exact
    monkeypatch.setattr(
        validation, "_typed_read_is_exact", lambda f, r: proofs.append(prove(f, r)) or proofs[-1]
    )
    result = validate(raw, 1.0, now=NOW)
    assert proofs == [False]
    assert result.rows.schema["user_id"] == pl.String and "007" in result.rows["user_id"].to_list()


WIDE = 2**40  # ids past 32 bits: 64-bit user ids, hashed ids


def test_64_bit_ids_travel_as_wide_codes_and_give_the_text_routes_dataset(tmp_path: Path) -> None:
    """Ids beyond 2**32 (a late one, after the sample) keep the integer route at 64 bits: same
    users, items, indices and duplicates as the same log with text ids, and the ids' text intact."""
    rows = [(WIDE + u, i, r, t) for u, i, r, t in _filler()] + [(2**64 - 1, 3, 5, 1_700_000_000)]
    rows += [(WIDE + 1, 1, 2, 1_600_000_001)] * 2  # two exact copies of the filler's second row
    result = validate(scan_source(_csv(tmp_path / "w.csv", rows)), 1.0, now=NOW)
    assert result.rows.schema["user_id"] == pl.UInt64 and result.rows.schema["item_id"] == CODE_DTYPE
    numeric = ingest(_csv(tmp_path / "n.csv", rows), tmp_path / "n", DataConfig())
    text = ingest(
        _csv(tmp_path / "t.csv", [(f"u{u}", i, r, t) for u, i, r, t in rows]), tmp_path / "t", DataConfig()
    )
    assert numeric.reasons == text.reasons == {"duplicate": 2}
    a, b = load_processed(tmp_path / "n"), load_processed(tmp_path / "t")
    assert [f"u{u}" for u in a.user_ids] == b.user_ids.tolist()
    assert str(2**64 - 1) in a.user_ids.tolist()
    assert a.interactions.equals(b.interactions)


def test_an_append_of_wide_ids_to_a_batch_of_narrow_ones_keeps_every_index(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ingest(_csv(tmp_path / "day1.csv", _filler()), out, DataConfig())
    before = load_processed(out)
    day2 = [(WIDE + 5, 1, 5, 1_700_000_000), (5, 1, 5, 1_700_000_001), *_filler(3)]  # user 5 again; repeats
    report = ingest(_csv(tmp_path / "day2.csv", day2), out, DataConfig(), append=True)
    after = load_processed(out)
    assert report.reasons == {"duplicate": 3}  # day 2's copies of day-1 rows, across batches
    assert after.user_ids[: len(before.user_ids)].tolist() == before.user_ids.tolist()
    assert after.user_ids[len(before.user_ids) :].tolist() == [str(WIDE + 5)]
    assert pl.read_parquet(batch_file(out, 2)).schema["user_id"] == pl.UInt64
