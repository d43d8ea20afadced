"""Readers: every format reads into the same canonical rows, detection is by content, not by name."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from recsys.config import ColumnMap
from recsys.data.ingest import read_canonical
from recsys.data.readers import detect_format, scan_source
from recsys.data.validation import validate
from recsys.errors import DataError

# Three interactions that every fixture below encodes in its own format.
USERS = ["196", "186", "22"]
ITEMS = ["242", "302", "377"]
RATINGS = [3.0, 3.0, 1.0]
SECONDS = [881250949, 891717742, 878887116]
TIMES = [datetime.fromtimestamp(s, UTC) for s in SECONDS]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _rows(path: Path, fmt: str | None = None, columns: ColumnMap | None = None) -> pl.DataFrame:
    accepted, quarantine, rows_in = read_canonical(path, fmt, columns)
    assert rows_in == accepted.height + quarantine.height
    return accepted


def _assert_canonical(
    frame: pl.DataFrame, with_time: bool = True, with_weight: bool = True, rows: tuple[int, ...] = (1, 2, 3)
) -> None:
    assert frame["user_id"].to_list() == USERS
    assert frame["item_id"].to_list() == ITEMS
    assert frame.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert frame.schema["weight"] == pl.Float32
    assert frame["weight"].to_list() == (RATINGS if with_weight else [1.0, 1.0, 1.0])
    if with_time:
        assert frame["timestamp"].to_list() == TIMES
    else:
        assert frame["timestamp"].null_count() == 3
    assert frame["source_row"].to_list() == list(rows)


def _lines(sep: str, header: str | None = None, time_fmt=str) -> str:
    body = [
        sep.join([u, i, f"{r:g}", time_fmt(t)])
        for u, i, r, t in zip(USERS, ITEMS, RATINGS, SECONDS, strict=True)
    ]
    return "\n".join(([header] if header else []) + body) + "\n"


@pytest.mark.parametrize(
    ("name", "text", "expected_format"),
    [
        ("u.data", _lines("\t"), "movielens"),
        ("ratings.dat", _lines("::"), "movielens-dat"),
        ("ratings.csv", _lines(",", "userId,movieId,rating,timestamp"), "csv"),
        (
            "ml.inter",
            _lines("\t", "user_id:token\titem_id:token\trating:float\ttimestamp:float", lambda t: f"{t}.0"),
            "recbole",
        ),
        ("log.txt", _lines("\t", "user\titem\tscore\tts"), "tsv"),
        ("fake.csv", _lines("::"), "movielens-dat"),  # a .csv that is really ratings.dat
        ("headerless.csv", _lines(","), "csv"),
    ],
)
def test_text_formats_read_the_same_rows(tmp_path: Path, name: str, text: str, expected_format: str) -> None:
    path = _write(tmp_path / name, text)
    assert detect_format(path) == expected_format
    _assert_canonical(_rows(path))


def test_forced_format_names_are_accepted(tmp_path: Path) -> None:
    assert _rows(_write(tmp_path / "x.bin", _lines("\t")), "movielens").height == 3
    assert _rows(_write(tmp_path / "y.bin", _lines("::")), "movielens-dat").height == 3
    assert (
        _rows(
            _write(tmp_path / "z.bin", _lines(",", "userId,movieId,rating,timestamp")), "movielens-csv"
        ).height
        == 3
    )


def test_jsonl_with_mixed_value_types(tmp_path: Path) -> None:
    lines = [
        json.dumps({"userId": int(u), "itemId": i, "rating": r, "ts": t})
        for u, i, r, t in zip(USERS, ITEMS, RATINGS, SECONDS, strict=True)
    ]
    path = _write(tmp_path / "events.ndjson", "\n".join(lines) + "\n")
    assert detect_format(path) == "jsonl"
    _assert_canonical(_rows(path))


def test_parquet_file_and_partitioned_directory(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"user_id": [int(u) for u in USERS], "item_id": ITEMS, "rating": RATINGS, "timestamp": SECONDS}
    )
    frame.write_parquet(tmp_path / "one.parquet")
    _assert_canonical(_rows(tmp_path / "one.parquet"))
    folder = tmp_path / "hive"
    for part, rows in (("day=1", frame[:2]), ("day=2", frame[2:])):
        (folder / part).mkdir(parents=True)
        rows.write_parquet(folder / part / "part-0.parquet")
    assert detect_format(folder) == "parquet"
    rows = _rows(folder)
    _assert_canonical(rows, rows=(1, 2, 1))  # numbered within each file
    assert rows["source_file"].to_list() == ["day=1/part-0.parquet", "day=1/part-0.parquet", "day=2/part-0.parquet"]


def test_parquet_native_datetimes_are_converted_to_utc(tmp_path: Path) -> None:
    local = pl.Series([datetime(2024, 1, 1, 12, 0)]).dt.replace_time_zone("Europe/Paris")
    pl.DataFrame({"user": ["u"], "item": ["i"], "time": local}).write_parquet(tmp_path / "tz.parquet")
    rows = _rows(tmp_path / "tz.parquet")
    assert rows["timestamp"].to_list() == [datetime(2024, 1, 1, 11, 0, tzinfo=UTC)]


def test_gzipped_csv(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(_lines(",", "userId,movieId,rating,timestamp"))
    assert detect_format(path) == "csv"
    _assert_canonical(_rows(path))


def test_odd_column_names_auto_mapped(tmp_path: Path) -> None:
    text = "visitorid,product_id,dwell,event_time,action\n1,p1,2.5,1700000000,view\n"
    raw = scan_source(_write(tmp_path / "odd.csv", text))
    assert raw.mapping == {
        "user_id": "visitorid",
        "item_id": "product_id",
        "timestamp": "event_time",
        "weight": "dwell",
        "event": "action",
    }
    rows = _rows(tmp_path / "odd.csv")
    assert rows["event"].to_list() == ["view"]
    assert rows["weight"].to_list() == [2.5]
    assert rows["timestamp"].to_list() == [datetime.fromtimestamp(1700000000, UTC)]


def test_explicit_column_map_beats_auto_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path / "two_users.csv", "user,account,item\nu1,a1,i1\n")
    assert scan_source(path).mapping["user_id"] == "user"
    assert _rows(path, columns=ColumnMap(user="account"))["user_id"].to_list() == ["a1"]
    with pytest.raises(DataError, match="no column 'nope'"):
        scan_source(path, columns=ColumnMap(item="nope"))
    with pytest.raises(DataError, match="no column 'acount'") as info:
        scan_source(path, columns=ColumnMap(user="acount"))
    assert info.value.render().endswith("--set data.columns.user=account")  # the spelling meant, not "user"


def test_iso_and_millisecond_timestamps(tmp_path: Path) -> None:
    text = (
        "user,item,time\n"
        "a,1,2021-03-04T05:06:07Z\n"
        "a,2,2021-03-04T07:06:07+02:00\n"
        "a,3,2021-03-04 05:06:07\n"
        "a,4,2021-03-04\n"
        "a,5,1614834367000\n"  # milliseconds
        "a,6,1614834367.5\n"  # float seconds
        "a,7,2021-03-04 07:06:07+02\n"  # PostgreSQL timestamptz: hours-only offset
        "a,8,2021-03-04T00:06:07-0500\n"
    )
    rows = _rows(_write(tmp_path / "iso.csv", text))
    expected = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert rows["timestamp"].to_list() == [
        expected,
        expected,
        expected,
        datetime(2021, 3, 4, tzinfo=UTC),
        expected,
        datetime(2021, 3, 4, 5, 6, 7, 500000, tzinfo=UTC),
        expected,
        expected,
    ]


def test_no_time_and_no_weight_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "pairs.csv",
        "user_id,item_id\n" + "\n".join(f"{u},{i}" for u, i in zip(USERS, ITEMS, strict=True)) + "\n",
    )
    _assert_canonical(_rows(path), with_time=False, with_weight=False)


@pytest.mark.parametrize(
    ("name", "content", "fmt", "needle"),
    [
        ("missing.csv", None, None, "no such file"),
        ("empty.csv", b"", None, "empty file"),
        ("garbage.csv", bytes(range(256)) * 4, None, "binary"),
        ("tabbed.csv", b"user\titem\tts\n1\t2\t3\n", "csv", "wrong delimiter"),
        ("nouser.csv", b"foo,bar\n1,2\n", None, "no user column"),
        ("header_only.csv", b"user,item\n", None, "no data rows"),
        ("header_blank_lines.csv", b"user,item\r\n\r\n\r\n", None, "no data rows"),
        ("mac.csv", b"user,item\r1,2\r3,4\r", None, "carriage return only"),
        ("x.parquet.gz", gzip.compress(b"PAR1" + bytes(64), mtime=0), None, "gzip-compressed Parquet"),
        ("jester-data-1.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), None, "export the sheet as CSV"),
        ("ratings.csv", b"<!DOCTYPE html>\n<html><title>404</title></html>\n", None, "an HTML or XML document"),
        ("soc-Epinions1.txt", b"# Directed graph\n# FromNodeId\tToNodeId\n0\t4\n", None, "grep -v '^#' FILE"),
        ("fake.parquet", b"user,item\n1,2\n", None, "not a Parquet file"),
    ],
)
def test_unreadable_files_raise_one_line_data_error(tmp_path: Path, name, content, fmt, needle) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_canonical(path, fmt)
    message = str(info.value)
    assert needle in message
    assert str(path) in message
    assert "\n" not in message


def test_parquet_with_its_own_source_row_column_is_read(tmp_path: Path) -> None:
    """A table holding `source_row` (a processed directory's batches, lineage columns) was refused
    as "not a readable Parquet file"; rows are numbered by the reader all the same."""
    path = tmp_path / "events.parquet"
    pl.DataFrame({"user_id": ["u1", None], "item_id": ["a", "b"], "source_row": [100, 200]}).write_parquet(
        path
    )
    accepted, quarantine, rows_in = read_canonical(path)
    assert rows_in == 2 and accepted.select("user_id", "source_row").rows() == [("u1", 1)]
    assert quarantine.select("source_row", "reason").rows() == [(2, "missing_user")]


def test_a_named_json_key_first_seen_after_the_sniffed_lines_is_read(tmp_path: Path) -> None:
    """`rating` only on the rate events, which start after the lines the keys are sniffed from:
    `--weight-col rating` was refused as "no column 'rating'"."""
    views = [json.dumps({"user_id": f"u{n}", "item_id": "i0"}) for n in range(1000)]
    path = _write(
        tmp_path / "events.jsonl",
        "\n".join([*views, '{"user_id": "u1", "item_id": "i1", "rating": 5}']) + "\n",
    )
    accepted, quarantine, rows_in = read_canonical(path, columns=ColumnMap(weight="rating"))
    assert accepted.select("user_id", "item_id", "weight").rows() == [("u1", "i1", 5.0)]
    assert rows_in == 1001 and set(quarantine["reason"]) == {"bad_weight"}
    with pytest.raises(DataError, match="no column 'ratng'"):
        scan_source(path, columns=ColumnMap(weight="ratng"))


def test_a_boolean_parquet_weight_reads_as_one_or_zero(tmp_path: Path) -> None:
    """`--weight-col liked` on a Parquet boolean: every row was quarantined as bad_weight ("true")."""
    path = tmp_path / "likes.parquet"
    pl.DataFrame({"user_id": ["u1", "u2", "u3"], "item_id": ["a", "b", "c"], "liked": [True, False, None]}).write_parquet(path)
    accepted, quarantine, _ = read_canonical(path, columns=ColumnMap(weight="liked"))
    assert accepted.select("user_id", "weight").rows() == [("u1", 1.0), ("u2", 0.0)]
    assert quarantine.select("user_id", "reason").rows() == [("u3", "bad_weight")]


def test_a_colon_separated_file_with_a_header_line_reads_the_header(tmp_path: Path) -> None:
    """`user_id::item_id::rating::timestamp` above ML-1M-style rows: the header was read as a data
    row (quarantined as bad_timestamp) and the rows numbered from 2."""
    path = _write(tmp_path / "ratings.dat", _lines("::", "user_id::item_id::rating::timestamp"))
    assert detect_format(path) == "movielens-dat"
    _assert_canonical(_rows(path))
    extra = _write(tmp_path / "extra.dat", "UserID::MovieID::Rating::Timestamp\n1::2::5::978300760::x\n")
    accepted, quarantine, _ = read_canonical(extra)
    assert accepted.height == 0 and quarantine.select("source_row", "reason").rows() == [(1, "extra_fields")]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ratings.csv", _lines(",", "#userId,movieId,rating,timestamp")),
        ("log.tsv", _lines("\t", "# user\titem\tscore\tts")),
        ("ratings.dat", _lines("::", "#user_id::item_id::rating::timestamp")),
    ],
)
def test_a_header_line_behind_a_hash_is_read_as_the_header(tmp_path: Path, name: str, text: str) -> None:
    """`#user,item,...` (as some exporters mark the header) was refused as a comment line."""
    _assert_canonical(_rows(_write(tmp_path / name, text)))
    forced = _write(tmp_path / f"forced-{name}", text)
    _assert_canonical(_rows(forced, detect_format(forced)))


def test_comment_lines_that_are_no_header_are_still_refused(tmp_path: Path) -> None:
    """SNAP's `# Directed graph ...` block: prose, not column names, and rows of another width."""
    path = _write(tmp_path / "edges.txt", "# Directed graph: x.txt\n# Nodes: 3 Edges: 2\n0\t1\n1\t2\n")
    with pytest.raises(DataError, match="starts with comment lines"):
        detect_format(path)
    with pytest.raises(DataError, match="starts with comment lines"):
        detect_format(_write(tmp_path / "one.csv", "# exported by tool x\nu1,i1,5\n"))


def test_go_zoned_times_are_read(tmp_path: Path) -> None:
    """Go's time.String() layout (`... -0700 MST`, with a monotonic `m=+...` reading at times) was
    quarantined as bad_timestamp; ISO rows beside them read as before."""
    path = _write(
        tmp_path / "events.csv",
        "user,item,time\n"
        "u1,i1,2006-01-02 15:04:05.999999999 -0700 MST\n"
        "u2,i2,2020-01-01 00:00:00 +0000 UTC\n"
        "u3,i3,2021-05-06 07:08:09.5 +0530 IST m=+0.000123\n"
        "u4,i4,2020-01-01T00:00:00Z\n"
        "u5,i5,2020-01-01 00:00:00 -0700 MST extra\n",
    )
    accepted, quarantine, _ = read_canonical(path)
    assert accepted["timestamp"].to_list() == [
        datetime(2006, 1, 2, 22, 4, 5, 999999, tzinfo=UTC),
        datetime(2020, 1, 1, tzinfo=UTC),
        datetime(2021, 5, 6, 1, 38, 9, 500000, tzinfo=UTC),
        datetime(2020, 1, 1, tzinfo=UTC),
    ]
    assert quarantine.select("user_id", "reason").rows() == [("u5", "bad_timestamp")]


def test_a_semicolon_file_with_decimal_commas_reads_them_as_decimals(tmp_path: Path) -> None:
    """`4,5` ratings of a European `;` export were all quarantined as bad_weight."""
    path = _write(tmp_path / "ratings.csv", "user;item;rating;timestamp\nu1;i1;4,5;978300760,5\nu2;i2;3,0;978300761\nu3;i3;5;978300762\n")
    result = validate(scan_source(path), 1.0)
    assert result.accepted["weight"].to_list() == [4.5, 3.0, 5.0]
    assert result.accepted["timestamp"][0] == datetime(2000, 12, 31, 22, 12, 40, 500000, tzinfo=UTC)
    weight_note, time_note = result.notes
    assert "2 weight value(s) of column 'rating' read with a decimal comma (row 1: '4,5' as 4.5)" in weight_note
    assert "1 time value(s) of column 'timestamp'" in time_note
    # A comma is a thousands separator when asked; `4,5` is then no number and is quarantined.
    point = validate(scan_source(path), 1.0, decimal="point")
    assert point.quarantine.select("source_row", "reason").rows() == [(1, "bad_timestamp"), (2, "bad_weight")]


def test_comma_values_that_may_be_thousands_stop_with_the_setting_to_choose(tmp_path: Path) -> None:
    """`1,234` / `12,500` in a `;` file: 1.234 or 1234? Neither is guessed."""
    path = _write(tmp_path / "plays.csv", "user;item;plays\nu1;i1;1,234\nu2;i2;12,500\nu3;i3;7\n")
    with pytest.raises(DataError, match=r"row 1, column 'plays' \(weight\): '1,234' may be 1.234 .* or 1234 .*--set data.decimal=comma"):
        validate(scan_source(path), 1.0)
    assert validate(scan_source(path), 1.0, decimal="point").accepted["weight"].to_list() == [1234, 12500, 7]
    assert validate(scan_source(path), 1.0, decimal="comma").accepted["weight"].to_list() == pytest.approx([1.234, 12.5, 7], rel=1e-6)


def test_a_comma_number_in_a_comma_separated_file_names_the_setting(tmp_path: Path) -> None:
    """A quoted `"1,234"` in an ordinary CSV is not guessed at: quarantined, with a note naming data.decimal."""
    path = _write(tmp_path / "plays.csv", 'user,item,plays\nu1,i1,"1,234"\nu2,i2,7\n')
    result = validate(scan_source(path), 1.0)
    assert result.quarantine.select("source_row", "reason").rows() == [(1, "bad_weight")]
    (note,) = result.notes
    assert "quarantined as bad_weight hold a comma (row 1: '1,234'): --set data.decimal=comma" in note


@pytest.mark.parametrize("windows", [False, True])
def test_a_json_key_first_seen_past_the_sniffed_lines_is_named_in_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, windows: bool
) -> None:
    """No column option: a `Rating` key only on the rate events after the first 1000 lines was
    passed over without a word (every row weighs 1). It is still not taken, but named, with the
    option that reads it; in a file larger than the sample, windows spread through it find it."""
    views = [json.dumps({"user_id": f"u{n}", "item_id": "i0", "ts": 1_600_000_000 + n}) for n in range(2000)]
    rates = [json.dumps({"user_id": f"u{n}", "item_id": "i1", "Rating": 4, "ts": 1_600_000_000}) for n in range(2000)]
    path = _write(tmp_path / "events.jsonl", "\n".join([*views, *rates, *(v.replace("i0", "i2") for v in views)]) + "\n")
    if windows:  # four 1 KB windows, at 0, 1/3, 2/3 and the end of what follows the first lines
        monkeypatch.setattr("recsys.data.readers.jsonl._KEY_WINDOW", 1024)
        monkeypatch.setattr("recsys.data.readers.jsonl._KEY_SAMPLE_BYTES", 4096)
    result = validate(scan_source(path), 1.0)
    assert result.rows_accepted == 6000 and set(result.accepted["weight"]) == {1.0}
    (note,) = result.notes
    assert "key 'Rating' occurs only past the first lines" in note
    assert "--weight-col Rating (data.columns.weight)" in note


def test_parquet_partitions_with_datetime_and_integer_times_read_each_as_alone(tmp_path: Path) -> None:
    """Date / datetime partitions beside integer ones were concatenated as integers: a date became
    its day count read as seconds (1970), a datetime before 1973 its microseconds read as ms."""
    (tmp_path / "log").mkdir()
    frames = {
        "a.parquet": pl.Series([datetime(2020, 1, 1)]).dt.date(),
        "b.parquet": [datetime(1971, 1, 1, 0, 0, 0, 123456)],
        "c.parquet": [SECONDS[0]],
    }
    for n, (name, times) in enumerate(frames.items()):
        pl.DataFrame({"user_id": [f"u{n}"], "item_id": ["i"], "timestamp": times}).write_parquet(tmp_path / "log" / name)
    assert _rows(tmp_path / "log")["timestamp"].to_list() == [
        datetime(2020, 1, 1, tzinfo=UTC),
        datetime(1971, 1, 1, 0, 0, 0, 123456, tzinfo=UTC),
        TIMES[0],
    ]
