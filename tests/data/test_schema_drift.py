"""Sources whose schema drifts inside one source, as real exports do: monthly files that change
their separator, Parquet files that change a column's type, JSON Lines whose keys come late.
Each case is generated here, so the test knows every row it wrote and checks that each one is
either read with its own values or named (quarantine reason, warning, or one error)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import DataConfig
from recsys.data.ingest import ingest, read_canonical
from recsys.data.readers import scan_source
from recsys.data.validation import validate
from recsys.errors import DataError

T0 = 1_600_000_000


def _truth(month: int, n: int = 6) -> list[tuple[str, str, float, int]]:
    """The rows of one month's export: (user, item, rating, Unix seconds), all distinct. Ratings
    are whole numbers, exact in float32, so rows read back compare exactly (tolerance 0)."""
    return [(str(i * 7 % 13 + month), str(i * 5 % 17), float(1 + (i + month) % 5), T0 + month * 1000 + i) for i in range(n)]


def _read(root: Path) -> list[tuple[str, str, float, int]]:
    accepted, quarantine, rows_in = read_canonical(root)
    assert quarantine.height == 0 and rows_in == accepted.height
    got = accepted.select("user_id", "item_id", pl.col("weight").cast(pl.Float64), pl.col("timestamp").dt.epoch("s"))
    return sorted(got.rows())


def test_parquet_files_whose_column_types_do_not_combine_are_read_as_text(tmp_path: Path) -> None:
    """One month writes ids, ratings and times dictionary-encoded (or ids as binary) beside
    int64 / float64 ones: polars cannot concatenate cat with i64 (it failed the whole source with
    `cannot read as parquet (failed to determine supertype of i64 and cat)`); each such column is
    read as text in every file, so every row keeps its values."""
    root = tmp_path / "events"
    root.mkdir()
    a, b = _truth(1), _truth(2)
    pq.write_table(
        pa.table({
            "user_id": pa.array([int(u) for u, *_ in a], pa.int64()),
            "item_id": pa.array([int(i) for _, i, *_ in a], pa.int32()),
            "rating": pa.array([r for *_, r, _ in a], pa.float64()),
            "timestamp": pa.array([t for *_, t in a], pa.int64()),
        }),
        root / "2024-01.parquet",
    )  # fmt: skip
    pq.write_table(
        pa.table({
            "user_id": pa.array([u for u, *_ in b]).dictionary_encode(),
            "item_id": pa.array([i.encode() for _, i, *_ in b], pa.binary()),
            "rating": pa.array([f"{r:g}" for *_, r, _ in b]).dictionary_encode(),
            "timestamp": pa.array([str(t) for *_, t in b], pa.large_string()).dictionary_encode(),
        }),
        root / "2024-02.parquet",
    )  # fmt: skip
    assert _read(root) == sorted(a + b)


def _delimited(path: Path, rows: list[tuple[str, str, float, int]], separator: str, gz: bool = False) -> None:
    names = ("user_id", "item_id", "rating", "timestamp")
    text = "".join(separator.join(map(str, row)) + "\n" for row in [names, *rows]).encode()
    path.write_bytes(gzip.compress(text) if gz else text)


def test_monthly_exports_that_change_their_separator_are_each_read_with_their_own(tmp_path: Path) -> None:
    """A `;` month (a decimal-comma locale's spreadsheet) and a gzip'd `.tsv` month beside `,`
    months: each file was read with the first file's separator, so the `;` file's header was one
    column and the source was refused as "not every file is an interaction log", and a `.tsv`
    beside `.csv` files as two formats. Each file is now split by its own separator."""
    root = tmp_path / "exports"
    root.mkdir()
    months = {1: (",", "2024-01.csv", False), 2: (";", "2024-02.csv", False), 3: ("\t", "2024-03.tsv.gz", True)}
    for month, (separator, name, gz) in months.items():
        _delimited(root / name, _truth(month), separator, gz)
    assert _read(root) == sorted(row for month in months for row in _truth(month))


def test_a_decimal_comma_month_beside_comma_separated_months_reads_its_own_numbers(tmp_path: Path) -> None:
    """A `;` month whose ratings are written `4,5` (a decimal-comma locale's spreadsheet) beside
    `,` months: the decimal comma was chosen for the whole source, which has no one separator,
    so that month's ratings were quarantined as bad_weight (the hint, data.decimal=comma, would
    read every file so). The `;` file's numbers are now read as a `;` source's are, and said so;
    a quoted `"4,5"` in a `,` file is still quarantined, with the hint naming that file."""
    root = tmp_path / "exports"
    root.mkdir()
    _delimited(root / "2024-01.csv", _truth(1), ",")
    half = [(u, i, r + 0.5, t) for u, i, r, t in _truth(2)]
    (root / "2024-02.csv").write_text(
        "user_id;item_id;rating;timestamp\n" + "".join(f"{u};{i};{r:g};{t}\n".replace(".", ",") for u, i, r, t in half)
    )
    (root / "2024-03.csv").write_text("user_id,item_id,rating,timestamp\n" + "".join(f"{u},{i},{r:g},{t}\n" for u, i, r, t in _truth(3)))
    result = validate(scan_source(root), 1.0)
    assert result.rows_quarantined == 0
    got = result.accepted.select("user_id", "item_id", pl.col("weight").cast(pl.Float64), pl.col("timestamp").dt.epoch("s"))
    assert sorted(got.rows()) == sorted(_truth(1) + half + _truth(3))  # x.5 is exact in float32: tolerance 0
    (note,) = result.notes
    assert note.startswith("2024-02.csv in ") and "6 weight value(s) of column" in note and "read with a decimal comma (row 1: '3,5' as 3.5)" in note

    with (root / "2024-03.csv").open("a") as fh:
        fh.write('9,9,"4,5",1600000000\n')
    result = validate(scan_source(root), 1.0)
    assert result.quarantine.select("source_file", "reason").rows() == [("2024-03.csv", "bad_weight")]
    assert any(n.startswith("2024-03.csv in ") and "--set data.decimal=comma" in n for n in result.notes)


def test_a_json_key_between_the_sampled_windows_is_still_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `rating` key on three lines of a file larger than the key sample, in a stretch none of
    the sampled windows touches: its values were passed over without a word (every row weighed
    1). The lines' text is now searched for the role's spellings as the file is decoded, and the
    first line holding the key named. (Windows of 1 KB, 4 KB in all, stand for 64 KB and 2 MB.)"""
    monkeypatch.setattr("recsys.data.readers.jsonl._KEY_WINDOW", 1024)
    monkeypatch.setattr("recsys.data.readers.jsonl._KEY_SAMPLE_BYTES", 4096)
    records = [{"user_id": f"u{n % 50}", "item_id": f"i{n}", "ts": T0 + n} for n in range(6000)]
    for n in (2500, 2501, 2502):  # about 5/12 of the way: between the windows at 1/3 and 2/3
        records[n]["rating"] = 5
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = validate(scan_source(path), 1.0)
    assert result.rows_accepted == 6000 and set(result.accepted["weight"]) == {1.0}
    (note,) = result.notes
    assert "key 'rating' occurs only past the first lines" in note and "first seen on line 2501" in note
    assert "--weight-col rating (data.columns.weight)" in note


def test_a_json_key_renamed_midway_is_named_with_what_its_lines_become(tmp_path: Path) -> None:
    """An export that renames `timestamp` to `ts` from line 1501 on (past the first lines, from
    which the columns are chosen): those rows were accepted without a time, and not a word said.
    The warning names the line, both keys and what such lines become. A key renamed within the
    first lines (`user_id` -> `userId` from line 11) is named the same way."""
    records = [{"user_id": f"u{n % 40}", "item_id": f"i{n}", ("timestamp" if n < 1500 else "ts"): T0 + n} for n in range(2000)]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = validate(scan_source(path), 1.0)
    assert result.rows_accepted == 2000 and result.accepted["timestamp"].null_count() == 500
    (note,) = result.notes
    assert "line 1501 has no key 'timestamp' (read as the time) but has 'ts'" in note
    assert "accepted without a time" in note and "--time-col ts" in note

    early = [{("user_id" if n < 10 else "userId"): f"u{n}", "item_id": "i", "ts": T0 + n} for n in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in early))
    result = validate(scan_source(path), 1.0)
    assert result.reasons == {"missing_user": 2}
    (note,) = result.notes
    assert "line 11 has no key 'user_id' (read as the user) but has 'userId'" in note and "missing_user" in note


def test_a_headed_file_among_headerless_ones_is_refused_not_read_by_position(tmp_path: Path) -> None:
    """A later month that gained a header line, with its columns in another order, beside
    headerless months (`user,item,rating,time` by position): its rows were read by position
    (its times as user ids) and its header as a row, without a word. The reverse (a later month
    that lost its header) was refused as 'not an interaction log'; both now name the file and
    the header line to add."""
    root = tmp_path / "exports"
    root.mkdir()
    (root / "2024-01.csv").write_text("".join(f"{u},{i},{r:g},{t}\n" for u, i, r, t in _truth(1)))
    (root / "2024-02.csv").write_text(
        "timestamp,rating,item_id,user_id\n" + "".join(f"{t},{r:g},{i},{u}\n" for u, i, r, t in _truth(2))
    )
    with pytest.raises(DataError, match=r"2024-02\.csv: starts with a header line .* while 2024-01\.csv .* has none"):
        read_canonical(root)
    # pandas' to_csv heads its index column with an empty name: still a header line.
    (root / "2024-01.csv").write_text("".join(f"{n},{u},{i},{r:g}\n" for n, (u, i, r, _) in enumerate(_truth(1))))
    (root / "2024-02.csv").write_text(",user_id,item_id,rating\n" + "".join(f"{n},{u},{i},{r:g}\n" for n, (u, i, r, _) in enumerate(_truth(2))))
    with pytest.raises(DataError, match=r"2024-02\.csv: starts with a header line"):
        read_canonical(root)

    (root / "2024-01.csv").write_text("user_id,item_id,rating,timestamp\n" + "".join(f"{u},{i},{r:g},{t}\n" for u, i, r, t in _truth(1)))
    (root / "2024-02.csv").write_text("".join(f"{u},{i},{r:g},{t}\n" for u, i, r, t in _truth(2)))
    with pytest.raises(DataError, match=r"2024-02\.csv: has no header line .*sed -i '1i user_id,item_id,rating,timestamp'"):
        read_canonical(root)

    # pandas' to_csv heads its index column with an empty name: a header all the same.
    for month in (1, 2):
        rows = "".join(f"{n},{u},{i},{r:g},{t}\n" for n, (u, i, r, t) in enumerate(_truth(month)))
        (root / f"2024-0{month}.csv").write_text(",user_id,item_id,rating,timestamp\n" + rows)
    assert _read(root) == sorted(_truth(1) + _truth(2))


def test_a_parquet_file_with_a_role_the_first_file_lacks_is_named(tmp_path: Path) -> None:
    """The columns of a Parquet source are chosen from its first file: a later month that gained
    a `rating` column was read without it (every row weighing 1), without a word."""
    root = tmp_path / "events"
    root.mkdir()
    pl.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "timestamp": [T0, T0]}).write_parquet(root / "2024-01.parquet")
    pl.DataFrame({"user_id": [3, 4], "item_id": [1, 2], "timestamp": [T0, T0], "rating": [5.0, 1.0]}).write_parquet(
        root / "2024-02.parquet"
    )
    with pytest.raises(DataError, match=r"2024-02\.parquet: has a weight column 'rating' that 2024-01\.parquet lacks"):
        read_canonical(root)


def test_parquet_months_that_rename_their_columns_are_read_by_each_file_s_names(tmp_path: Path) -> None:
    """`userId` / `movieId` in one month, `user_id` / `item_id` in the next (an export job
    rewritten midway): the columns were chosen from the first file, and the second was refused as
    having "no column 'userId'", while CSV and JSON Lines map each file's own names. Parquet
    files are now mapped one by one too, and read with their own values."""
    root = tmp_path / "events"
    root.mkdir()
    a, b = _truth(1), _truth(2)
    names = {1: ("userId", "movieId", "rating", "timestamp"), 2: ("user_id", "item_id", "weight", "ts")}
    for month, rows in ((1, a), (2, b)):
        users, items, ratings, times = zip(*rows, strict=True)
        user, item, rating, time = names[month]
        frame = pl.DataFrame({time: list(times), item: list(items), user: list(users), rating: list(ratings)})
        frame.write_parquet(root / f"2024-0{month}.parquet")
    assert _read(root) == sorted(a + b)


def test_exports_with_other_column_orders_joined_into_one_file_are_refused(tmp_path: Path) -> None:
    """`cat jan.csv feb.csv > all.csv` where February's export orders its columns otherwise: every
    row after February's header line was read under January's (its times as user ids, its
    ratings as items), and only that line quarantined (bad_timestamp). The line is now named
    with where its names sit. A joined export in the same order under other names
    (`userId,movieId,...`) lines up, so only its header line is quarantined, as before."""
    jan, feb = _truth(1), _truth(2)
    path = tmp_path / "all.csv"
    path.write_text(
        "user_id,item_id,rating,timestamp\n" + "".join(f"{u},{i},{r:g},{t}\n" for u, i, r, t in jan)
        + "timestamp,rating,item_id,user_id\n" + "".join(f"{t},{r:g},{i},{u}\n" for u, i, r, t in feb)
    )  # fmt: skip
    with pytest.raises(DataError, match=r"all\.csv: row 7 is a header line .*'timestamp' in the user column"):
        read_canonical(path)

    path.write_text(
        "user_id,item_id,rating,timestamp\n" + "".join(f"{u},{i},{r:g},{t}\n" for u, i, r, t in jan)
        + "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r:g},{t}\n" for u, i, r, t in feb)
    )  # fmt: skip
    accepted, quarantine, _ = read_canonical(path)
    assert quarantine.select("source_row", "reason").rows() == [(7, "bad_timestamp")]
    got = accepted.select("user_id", "item_id", "weight", pl.col("timestamp").dt.epoch("s")).rows()
    assert sorted(got) == sorted(jan + feb)


def test_an_appended_batch_that_lost_its_time_column_is_flagged(tmp_path: Path) -> None:
    """February's export dropped its timestamp column: its rows were appended without times beside
    January's, without a word (only a lost weight column was named), and a temporal split then
    refused the whole directory. The batch after, with times again, says nothing: the mix is old."""
    out = tmp_path / "out"
    jan, feb, mar = tmp_path / "jan.csv", tmp_path / "feb.csv", tmp_path / "mar.csv"
    _delimited(jan, _truth(1), ",")
    feb.write_text("user_id,item_id,rating\n" + "".join(f"{u},{i},{r:g}\n" for u, i, r, _ in _truth(2)))
    _delimited(mar, _truth(3), ",")
    cfg = DataConfig(min_user_interactions=1, min_item_interactions=1)
    assert ingest(jan, out, cfg).warnings == []
    (warning,) = ingest(feb, out, cfg, append=True).warnings
    assert warning.startswith("this batch has no time column, unlike the earlier ones ('timestamp'): its rows have no time")
    assert ingest(mar, out, cfg, append=True).warnings == []


def test_a_json_line_nested_past_the_recursion_limit_is_quarantined(tmp_path: Path) -> None:
    """A line whose value nests deeper than Python's recursion limit (`[[[[...`) among the first
    lines: the key sniffing's json.loads raised RecursionError, which ended ingest as 'unexpected
    RecursionError ... this is a bug' (exit 1). It is a malformed line like any other."""
    deep = '{"user_id": "u1", "item_id": "i1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = tmp_path / "events.jsonl"
    path.write_text('{"user_id": "u0", "item_id": "i0"}\n' + deep + '\n{"user_id": "u2", "item_id": "i2"}\n')
    result = validate(scan_source(path), 1.0)
    assert result.accepted["user_id"].to_list() == ["u0", "u2"]
    assert result.quarantine.select("source_row", "reason").rows() == [(2, "malformed_json")]


def test_a_truncated_first_record_longer_than_the_sniff_window_is_one_malformed_row(tmp_path: Path) -> None:
    """A first record cut off inside a 100 KB review text fills the 64 KB sniff window alone: no
    key was found there, and the whole file was refused as holding 'no JSON object in the first
    lines'. Lines are now read on until one is an object, and the cut record is quarantined."""
    path = tmp_path / "reviews.jsonl"
    good = "".join(json.dumps({"user_id": f"u{n}", "item_id": "i", "rating": 4}) + "\n" for n in range(3))
    path.write_text('{"user_id": "u9", "item_id": "i", "text": "' + "x" * 100_000 + "\n" + good)
    result = validate(scan_source(path), 1.0)
    assert result.accepted["user_id"].to_list() == ["u0", "u1", "u2"]
    assert result.quarantine.select("source_row", "reason").rows() == [(1, "malformed_json")]


def test_a_header_line_inside_a_headerless_file_is_named_by_column_positions(tmp_path: Path) -> None:
    """Headerless rows (user, item, rating, time by position) with a header line in another
    order joined below: named against the positions, not the internal `field_N` names."""
    path = tmp_path / "all.csv"
    path.write_text("1,10,5,1600000000\nuser_id,item_id,timestamp,rating\n2,20,1600000001,4\n")
    with pytest.raises(DataError, match=r"row 2 is a header line .* than a headerless file's \(user=column 1, item=column 2"):
        read_canonical(path)


def test_an_appended_batch_with_float_spelled_ids_is_flagged(tmp_path: Path) -> None:
    """Day two's export wrote the integer user ids as floats (`3.0`: pandas does once the column
    holds a missing value). Each known user of that batch silently became a second user beside
    yesterday's `3`; the append now says so in a warning (also in the manifest)."""
    out = tmp_path / "processed"
    day1, day2 = tmp_path / "day1.csv", tmp_path / "day2.csv"
    day1.write_text("user_id,item_id,rating,timestamp\n" + "".join(f"{u},{i},4,{T0 + u * 10 + i}\n" for u in range(1, 5) for i in range(3)))
    day2.write_text("user_id,item_id,rating,timestamp\n3.0,9,5,1600001000\n7.0,9,5,1600001001\n")
    ingest(day1, out, DataConfig())
    report = ingest(day2, out, DataConfig(), append=True)
    flagged = [w for w in report.warnings if "spelled as decimals" in w]
    assert len(flagged) == 1 and "1 user id(s)" in flagged[0] and "'3.0' and '3'" in flagged[0]
    assert flagged == [w for w in json.loads((out / "manifest.json").read_text())["warnings"] if "decimals" in w]
