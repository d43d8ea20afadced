"""Directory sources: a quarantined row names its file (relative to the directory) and its row
within that file, for every format; accepted rows carry the file too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from recsys.config import DataConfig
from recsys.data.ingest import ingest, read_canonical
from recsys.errors import AlreadyIngested, DataError, RecsysWarning

HEADER = "user_id,item_id,rating,timestamp"


def _csv(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([HEADER, *rows]) + "\n")


def _two_csv_files(root: Path) -> Path:
    # a.csv: data row 2 has a bad weight; b.csv: data row 3 has no user.
    _csv(root / "a.csv", ["u1,i1,4,1700000000", "u2,i2,four,1700000001", "u3,i3,5,1700000002"])
    _csv(root / "sub" / "b.csv", ["u4,i4,4,1700000003", "u5,i5,3,1700000004", ",i6,2,1700000005"])
    return root


def test_csv_directory_rows_are_per_file(tmp_path: Path) -> None:
    accepted, quarantine, rows_in = read_canonical(_two_csv_files(tmp_path / "logs"))
    assert rows_in == 6 == accepted.height + quarantine.height
    assert quarantine.select("source_file", "source_row", "reason").rows() == [
        ("a.csv", 2, "bad_weight"),
        ("sub/b.csv", 3, "missing_user"),
    ]
    assert quarantine.filter(pl.col("source_file") == "a.csv")["weight"].item() == "four"  # raw value kept
    assert accepted.select(pl.col("source_file").cast(pl.String), "source_row").rows() == [
        ("a.csv", 1),
        ("a.csv", 3),
        ("sub/b.csv", 1),
        ("sub/b.csv", 2),
    ]


def test_ingest_writes_source_file_into_the_quarantine(tmp_path: Path) -> None:
    report = ingest(_two_csv_files(tmp_path / "logs"), tmp_path / "out", DataConfig())
    stored = pl.read_parquet(report.quarantine_path)
    assert stored.select("source_file", "source_row", "reason").rows() == [
        ("a.csv", 2, "bad_weight"),
        ("sub/b.csv", 3, "missing_user"),
    ]
    assert report.rows_in == report.rows_accepted + report.rows_quarantined == 6


def test_reingesting_a_directory_names_each_duplicate_by_file_and_row(tmp_path: Path) -> None:
    logs, out = _two_csv_files(tmp_path / "logs"), tmp_path / "out"
    ingest(logs, out, DataConfig())
    again = ingest(logs, out, DataConfig(), append=True)
    assert again.reasons == {"duplicate": 4, "bad_weight": 1, "missing_user": 1}
    with pytest.raises(AlreadyIngested, match=r"the same content as batch 2"):  # a directory's files, digested
        ingest(logs, out, DataConfig(), append=True)
    stored = pl.read_parquet(again.quarantine_path)
    # In file order, then row order, with each file's own text (not the parsed "4.0" or datetime).
    assert stored.rows() == [
        (1, "a.csv", "u1", "i1", "1700000000", "4", "duplicate"),
        (2, "a.csv", "u2", "i2", "1700000001", "four", "bad_weight"),
        (3, "a.csv", "u3", "i3", "1700000002", "5", "duplicate"),
        (1, "sub/b.csv", "u4", "i4", "1700000003", "4", "duplicate"),
        (2, "sub/b.csv", "u5", "i5", "1700000004", "3", "duplicate"),
        (3, "sub/b.csv", None, "i6", "1700000005", "2", "missing_user"),
    ]


def test_jsonl_directory_rows_are_line_numbers_per_file(tmp_path: Path) -> None:
    root = tmp_path / "events"
    root.mkdir()
    good = '{"user_id": "u%d", "item_id": "i%d"}'
    (root / "day1.jsonl").write_text("\n".join([good % (1, 1), "{truncated", good % (2, 2)]) + "\n")
    (root / "day2.jsonl").write_text("\n".join([good % (3, 3), "", good % (4, 4), "[]"]) + "\n")
    accepted, quarantine, rows_in = read_canonical(root)
    assert quarantine.select("source_file", "source_row", "reason").rows() == [
        ("day1.jsonl", 2, "malformed_json"),
        ("day2.jsonl", 4, "malformed_json"),
    ]
    assert rows_in == 6 == accepted.height + quarantine.height
    assert accepted["source_row"].to_list() == [1, 3, 1, 3]


def test_hive_parquet_directory_rows_and_partition_values(tmp_path: Path) -> None:
    root = tmp_path / "hive"
    for part, users in (("day=1", ["u1", None]), ("day=2", ["u3", "u4", None])):
        (root / part).mkdir(parents=True)
        pl.DataFrame({"user_id": users, "item_id": ["i"] * len(users)}).write_parquet(
            root / part / "part-0.parquet"
        )
    accepted, quarantine, rows_in = read_canonical(root, columns=None)
    assert quarantine.select("source_file", "source_row", "reason").rows() == [
        ("day=1/part-0.parquet", 2, "missing_user"),
        ("day=2/part-0.parquet", 3, "missing_user"),
    ]
    assert rows_in == 5


def test_partition_key_can_be_a_mapped_column(tmp_path: Path) -> None:
    root = tmp_path / "by_event"
    for event in ("click", "view"):
        (root / f"event={event}").mkdir(parents=True)
        pl.DataFrame({"user_id": ["u1"], "item_id": [f"i-{event}"]}).write_parquet(
            root / f"event={event}" / "p.parquet"
        )
    accepted, _, _ = read_canonical(root)
    assert accepted.select("item_id", "event").rows() == [("i-click", "click"), ("i-view", "view")]


def test_jsonl_directory_maps_each_files_keys(tmp_path: Path) -> None:
    # A second export under MovieLens-style keys: its rows line up instead of being quarantined
    # as missing_user with every value null.
    root = tmp_path / "events"
    root.mkdir()
    (root / "1.jsonl").write_text('{"user_id": "u1", "item_id": "i1", "rating": 2}\n')
    (root / "2.jsonl").write_text(
        '{"userId": "u2", "movieId": "i2", "score": 3}\n{"userId": "u3", "movieId": "i3", "score": 4}\n'
    )
    accepted, quarantine, rows_in = read_canonical(root)
    assert rows_in == 3 and quarantine.height == 0
    assert accepted.select("user_id", "item_id", "weight").rows() == [
        ("u1", "i1", 2.0),
        ("u2", "i2", 3.0),
        ("u3", "i3", 4.0),
    ]


def test_directory_files_with_other_roles_are_named(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    _csv(root / "a.csv", ["u1,i1,4,1700000000"])
    (root / "b.csv").write_text("user_id,item_id\nu2,i2\n")  # no rating, no timestamp
    with pytest.raises(
        DataError, match=r"b\.csv map\(s\) other columns than a\.csv \(user, item, time, weight\)"
    ):
        read_canonical(root)


def test_files_a_directory_read_skips_are_named_in_a_warning(tmp_path: Path) -> None:
    # Hive writes its data files without an extension: their rows must not go unread unannounced.
    root = tmp_path / "logs"
    _csv(root / "a.csv", ["u1,i1,4,1700000000"])
    _csv(root / "000000_0", ["u2,i2,4,1700000000"])
    with pytest.warns(RecsysWarning, match=r"1 file\(s\) not read \(000000_0\)"):
        assert read_canonical(root)[2] == 1


def test_float_ids_of_a_later_parquet_file_spell_the_same_integers(tmp_path: Path) -> None:
    """pandas writes a partition holding a missing id as float64 beside int64 partitions: user 3
    must be "3" in both, not "3.0" in the second (the first file's dtype used to decide)."""
    root = tmp_path / "events"
    for day, users, items in (("day=1", [3, 4], ["a", "b"]), ("day=2", [3.0, None], ["c", "d"])):
        (root / day).mkdir(parents=True)
        pl.DataFrame({"user_id": users, "item_id": items}).write_parquet(root / day / "part-0.parquet")
    accepted, quarantine, rows_in = read_canonical(root)
    assert accepted["user_id"].to_list() == ["3", "4", "3"] and rows_in == 4
    assert quarantine.select("source_file", "reason").rows() == [("day=2/part-0.parquet", "missing_user")]


def test_a_parquet_file_without_a_role_is_named(tmp_path: Path) -> None:
    """A file with no column for a role the first file fills is refused, naming it. (A file that
    only spells its columns otherwise, `userId` / `movieId`, is read: see test_schema_drift.)"""
    root = tmp_path / "events"
    root.mkdir()
    pl.DataFrame({"user_id": ["u1"], "item_id": ["a"], "rating": [4.0]}).write_parquet(root / "1.parquet")
    pl.DataFrame({"userId": ["u2"], "movieId": ["b"]}).write_parquet(root / "2.parquet")
    with pytest.raises(DataError, match=r"2\.parquet: no weight column, which 1\.parquet has \('rating'\)"):
        read_canonical(root)
    pl.DataFrame({"userId": ["u2"], "title": ["b"]}).write_parquet(root / "2.parquet")
    with pytest.raises(DataError, match=r"2\.parquet lack\(s\) the user or item column that 1\.parquet has"):
        read_canonical(root)


def test_parquet_files_with_naive_and_zoned_timestamps_read_together(tmp_path: Path) -> None:
    """pandas writes tz-aware and naive partitions alike; polars cannot concatenate the two
    ("failed to determine supertype"), so each file's times are made UTC first (naive = UTC)."""
    root = tmp_path / "events"
    root.mkdir()
    noon = datetime(2020, 1, 2, 12)
    for name, zone, item in (
        ("1.parquet", "UTC", "a"),
        ("2.parquet", None, "b"),
        ("3.parquet", "Europe/Berlin", "c"),
    ):
        frame = pl.DataFrame({"user_id": ["u"], "item_id": [item], "timestamp": [noon]})
        if zone is not None:
            frame = frame.with_columns(pl.col("timestamp").dt.replace_time_zone(zone))
        frame.write_parquet(root / name)
    accepted, _, _ = read_canonical(root)
    utc = noon.replace(tzinfo=UTC)
    assert accepted.select("item_id", "timestamp").rows() == [
        ("a", utc),
        ("b", utc),
        ("c", utc - timedelta(hours=1)),
    ]


def test_empty_files_of_a_directory_hold_no_rows(tmp_path: Path) -> None:
    """Spark writes a 0-byte part file for each empty partition: the directory is read, not refused."""
    root = tmp_path / "events"
    root.mkdir()
    (root / "part-0.json").write_text('{"user_id": "u1", "item_id": "i1"}\n')
    (root / "part-1.json").touch()
    accepted, _, rows_in = read_canonical(root)
    assert rows_in == 1 and accepted["source_file"].cast(pl.String).to_list() == ["part-0.json"]
    (root / "part-0.json").write_bytes(b"")  # every data file empty: said so, not 'no supported files'
    with pytest.raises(DataError, match="holds no data file that is not empty"):
        read_canonical(root)


def test_a_linked_directory_is_read_once(tmp_path: Path) -> None:
    """A day's export linked into the source directory was skipped without a word (`rglob` does
    not follow links); a link back to the source itself is not walked again."""
    real, root = tmp_path / "exports" / "day2", tmp_path / "logs"
    _csv(real / "a.csv", ["u2,i2,4,1700000001"])
    _csv(root / "b.csv", ["u1,i1,4,1700000000"])
    (root / "day2").symlink_to(real, target_is_directory=True)
    (root / "again").symlink_to(root, target_is_directory=True)
    accepted, _, rows_in = read_canonical(root)
    assert rows_in == 2 and accepted["source_file"].cast(pl.String).to_list() == ["b.csv", "day2/a.csv"]


def test_float_ids_beyond_the_64_bit_range_are_quarantined_with_their_value_not_as_missing(tmp_path: Path) -> None:
    """A float id at or above 2^63 (or below -2^63, or infinite) spells no 64-bit integer: it was
    quarantined as `missing_user` with the id erased (null) from the quarantine file, so nobody
    could tell which ids those were. It is its own reason now, with the value kept; ids that fit
    (-2^63 itself, 2^62) still read as the integers they spell. In a directory, a file without
    float ids concatenates with one that has them (the reader's verdict column is in both)."""
    root = tmp_path / "events"
    users = [1.0, 2.0**63, 2.0**64, 1e20, float("inf"), -(2.0**63), -1e19, 2.0**62, float("nan")]
    for day, frame in (
        ("day=1", pl.DataFrame({"userId": [5, 6], "item_id": ["a", "b"]})),
        ("day=2", pl.DataFrame({"userId": users, "item_id": ["c"] * len(users)})),
    ):
        (root / day).mkdir(parents=True)
        frame.write_parquet(root / day / "part-0.parquet")
    accepted, quarantine, rows_in = read_canonical(root)
    assert rows_in == 11 and accepted.height + quarantine.height == rows_in
    assert accepted["user_id"].to_list() == ["5", "6", "1", str(-(2**63)), str(2**62)]
    bad = quarantine.filter(pl.col("reason") == "id_out_of_range")
    assert bad["source_row"].to_list() == [2, 3, 4, 5, 7]
    assert [float(v) for v in bad["user_id"]] == [2.0**63, 2.0**64, 1e20, float("inf"), -1e19]
    assert quarantine.filter(pl.col("reason") == "missing_user")["source_row"].to_list() == [9]


def test_float_ids_beyond_2_53_are_read_with_a_warning_naming_the_file_and_column(tmp_path: Path) -> None:
    """A float64 holds every integer only up to 2^53: int64 ids a writer put through float64 (pandas,
    for a column with a missing value) may have been rounded onto each other before the file was
    written. They are read as the whole numbers the floats hold, as before, with one warning
    (printed and in the manifest) naming the file, the column and how many such ids it holds;
    float ids below 2^53 warn of nothing."""
    root = tmp_path / "events"
    big = [2.0**53, 2.0**53, 2.0**60, -(2.0**55), 2.0**63, float("nan")]  # 3 distinct in range; 2^63 is out
    for day, users in (("day=1", [1.0, 2.0, 2.0**53 - 1]), ("day=2", big)):
        (root / day).mkdir(parents=True)
        pl.DataFrame({"userId": users, "item_id": ["a"] * len(users)}).write_parquet(root / day / "part-0.parquet")
    report = ingest(root, tmp_path / "out", DataConfig(min_user_interactions=1, min_item_interactions=1))
    said = [w for w in report.warnings if "2^53" in w]
    assert len(said) == 1, report.warnings
    assert "day=2/part-0.parquet: column 'userId' holds 3 float id(s) at or beyond 2^53" in said[0]
    assert "write ids as integers or strings" in said[0]
    from recsys.data.storage import read_manifest

    assert said[0] in read_manifest(tmp_path / "out")["warnings"]
    assert str(2**60) in read_canonical(root)[0]["user_id"].to_list()  # still read as the number it holds


def test_a_parquet_id_column_of_booleans_is_refused_naming_it(tmp_path: Path) -> None:
    """A boolean column taken for the item (`item` auto-mapped to a flag): every row was read as
    item "true" or "false" without a word. Refused, naming the file, the column and the option."""
    path = tmp_path / "events.parquet"
    pl.DataFrame({"user_id": ["u1", "u2"], "item": [True, False], "product_id": ["p1", "p2"]}).write_parquet(path)
    with pytest.raises(DataError, match=r"events\.parquet: the item column 'item' holds booleans .*data\.columns\.item"):
        read_canonical(path)
