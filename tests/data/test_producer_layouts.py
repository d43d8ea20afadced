"""Interaction logs as the tools that produce them write them (pandas, polars, pyarrow, Spark-style
directories, MongoDB exports), each written here with that library in tmp_path: read right, or
refused in one `error:` line that names the file and says what to do."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import fsspec
import pandas as pd
import polars as pl
import pyarrow
import pyarrow as pa
import pyarrow.feather
import pyarrow.orc
import pyarrow.parquet as pq
from typer.testing import CliRunner

from recsys.cli import app

runner = CliRunner()


def _ingest(source: Path, out: Path, *args: str) -> pl.DataFrame:
    """The accepted rows of an ingest that must succeed, in file and row order."""
    result = runner.invoke(app, ["ingest", str(source), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    rows = pl.read_parquet(out / "interactions" / "**" / "*.parquet")
    return rows.sort([c for c in ("source_file", "source_row") if c in rows.columns])


def _refusal(source: Path, out: Path, *args: str) -> str:
    """The one `error:` line of an ingest that must exit 2."""
    result = runner.invoke(app, ["ingest", str(source), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: "), line
    return line


def test_pandas_times_parsed_with_a_half_hour_offset_are_read_as_their_utc_instants(tmp_path: Path) -> None:
    """pandas parses `2024-01-01T10:00:00+05:30` strings to `datetime64[ns, UTC+05:30]` and writes the
    zone `+05:30` into the Parquet file's Arrow schema; polars cannot parse that zone and panicked
    reading the footer (a Rust backtrace, then a Python traceback), even where the column was not
    the time (`created`, at -03:30). Parquet holds the UTC instants: those are the times."""
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b"],
            "item_id": ["x", "y"],
            "timestamp": pd.to_datetime(["2024-01-01T10:00:00+05:30", "2024-01-01T23:15:00+05:30"]),
            "created": pd.to_datetime(["2023-12-31T20:00:00-03:30"] * 2),
        }
    )
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    rows = _ingest(path, tmp_path / "out")
    assert rows["timestamp"].to_list() == [datetime(2024, 1, 1, 4, 30, tzinfo=UTC), datetime(2024, 1, 1, 17, 45, tzinfo=UTC)]
    assert rows["user_id"].to_list() == ["a", "b"] and rows["source_row"].to_list() == [1, 2]
    # Spark's legacy int96 timestamps, zoned: pyarrow's own schema shows the column naive, while the
    # Arrow schema stored in the footer (which polars reads) keeps the zone, and polars panicked.
    zoned = pa.array([datetime(2024, 1, 1, 4, 30), datetime(2024, 1, 1, 17, 45)], pa.timestamp("ns", tz="+05:30"))
    table = pa.table({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": zoned})
    pq.write_table(table, tmp_path / "int96.parquet", use_deprecated_int96_timestamps=True)
    assert _ingest(tmp_path / "int96.parquet", tmp_path / "int96")["timestamp"].to_list() == rows["timestamp"].to_list()


def test_mongoexport_lines_read_their_wrapped_ids_numbers_and_dates(tmp_path: Path) -> None:
    """mongoexport writes each ObjectId as `{"$oid": ...}`, each date as `{"$date": ...}` (an ISO
    string in relaxed mode, `{"$numberLong": ms}` in canonical mode) and, in canonical mode, each
    number wrapped too. Relaxed exports had every line quarantined as malformed_json ("flatten them
    first"); canonical ones were refused as nested records, "no line is one interaction". Each
    wrapper now reads as the value it wraps."""
    oid = ["65a1b2c3d4e5f60718293a4c", "65a1b2c3d4e5f60718293a4e"]
    relaxed = [
        {"_id": {"$oid": "65a1b2c3d4e5f60718290001"}, "user_id": {"$oid": oid[0]}, "item_id": 77, "rating": 4.5,
         "timestamp": {"$date": "2024-01-01T10:00:00.000Z"}},
        {"_id": {"$oid": "65a1b2c3d4e5f60718290002"}, "user_id": {"$oid": oid[1]}, "item_id": 78, "rating": 3,
         "timestamp": {"$date": "2024-01-02T12:00:00.000+01:00"}},
    ]  # fmt: skip
    canonical = [
        {"_id": {"$oid": "65a1b2c3d4e5f60718290001"}, "user_id": {"$oid": oid[0]}, "item_id": {"$numberLong": "77"},
         "rating": {"$numberDouble": "4.5"}, "timestamp": {"$date": {"$numberLong": "1704103200000"}}},
        {"_id": {"$oid": "65a1b2c3d4e5f60718290002"}, "user_id": {"$oid": oid[1]}, "item_id": {"$numberInt": "78"},
         "rating": {"$numberInt": "3"}, "timestamp": {"$date": {"$numberLong": "1704193200000"}}},
    ]  # fmt: skip
    times = [datetime(2024, 1, 1, 10, tzinfo=UTC), datetime(2024, 1, 2, 11, tzinfo=UTC)]
    for name, records in (("relaxed", relaxed), ("canonical", canonical)):
        path = tmp_path / f"{name}.json"
        path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        rows = _ingest(path, tmp_path / name)
        assert rows["user_id"].cast(pl.String).to_list() == oid, name
        assert rows["item_id"].cast(pl.String).to_list() == ["77", "78"], name
        assert rows["weight"].to_list() == [4.5, 3.0] and rows["timestamp"].to_list() == times, name


def _run_hint(line: str, file: Path, new: Path) -> None:
    """Run the backquoted conversion an error line gives, FILE and NEW filled in."""
    code = line.split("`")[1].replace("FILE", repr(str(file))).replace("NEW", repr(str(new)))
    exec(code, {"pl": pl, "pyarrow": pyarrow})  # noqa: S102 - the hint's own text, written by ingest


def test_orc_avro_and_feather_parts_of_a_directory_are_refused_with_the_line_that_converts_them(tmp_path: Path) -> None:
    """Spark writes ORC or Avro parts as readily as Parquet ones, and a Feather part may sit beside
    Parquet ones: such a directory read its Parquet parts and skipped the others with a warning to
    give them 'their format's extension' (which they have), their rows left out; one holding only
    Feather parts said it held 'no supported data files'. Each is refused, naming the files, with
    the line that writes one as Parquet, which then ingests; so is an Arrow IPC *stream* file
    (`write_ipc_stream`), which was 'binary content'."""
    table = pa.table({"user_id": ["u3", "u4"], "item_id": ["a", "b"]})
    writers = {
        "part-00001-c000.snappy.orc": lambda p: pyarrow.orc.write_table(table, p),
        "part-00001-c000.avro": lambda p: pl.from_arrow(table).write_avro(p),
        "part-1.feather": lambda p: pyarrow.feather.write_feather(table, p),
    }
    for name, write in writers.items():
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["a", "b"]}), folder / "part-00000-c000.snappy.parquet")
        write(folder / name)
        line = _refusal(folder, tmp_path / "out")
        assert f"holds 1 file(s) of a format ingest does not read ({name}), whose rows would be left out" in line
        _run_hint(line, folder / name, folder / "part-00001.parquet")
        (folder / name).unlink()
        rows = _ingest(folder, tmp_path / f"out-{name}")
        assert rows.height == 4 and sorted(rows["user_id"].to_list()) == ["u1", "u2", "u3", "u4"]
    stream = tmp_path / "events.arrows"
    pl.from_arrow(table).write_ipc_stream(stream)
    line = _refusal(stream, tmp_path / "out")
    assert "an Arrow IPC stream" in line, line
    _run_hint(line, stream, tmp_path / "events.parquet")
    assert _ingest(tmp_path / "events.parquet", tmp_path / "out-stream").height == 2


def test_decimal_ids_with_a_scale_read_as_the_integers_they_spell(tmp_path: Path) -> None:
    """Spark reads an Oracle `NUMBER` column declared without a precision as `decimal(38,10)`: its
    Parquet ids were read as "123.0000000000", so one user was two users beside an int64 month
    (and beside the same log as CSV). Whole values now read as integers; 4.5 keeps its text."""
    folder = tmp_path / "events"
    folder.mkdir()
    scaled = pa.decimal128(38, 10)
    ids = [Decimal("123"), Decimal("4.5"), Decimal("-7")]
    pq.write_table(pa.table({"user_id": pa.array(ids, scaled), "item_id": pa.array([1, 2, 3], scaled)}), folder / "a.parquet")
    pq.write_table(pa.table({"user_id": [123], "item_id": [4]}), folder / "b.parquet")
    rows = _ingest(folder, tmp_path / "out")
    assert rows["user_id"].cast(pl.String).to_list() == ["123", "4.5000000000", "-7", "123"]
    assert rows["item_id"].cast(pl.String).to_list() == ["1", "2", "3", "4"]
    users = pl.read_parquet(tmp_path / "out" / "users.parquet")
    assert users.height == 3


def test_a_pandas_timedelta_weight_reads_as_seconds_and_a_duration_time_is_refused(tmp_path: Path) -> None:
    """A dwell time pandas computed as `end - start` is a Timedelta, written as a Parquet duration:
    ingest failed with "cannot read as parquet (casting from Duration('ms') to String not
    supported)", naming no column. As the weight it reads as seconds (a warning says so); as the
    time (a span is no point in time) it is refused, naming the column."""
    frame = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "dwell_time": pd.to_timedelta(["1.5s", "2min"])})
    path = tmp_path / "dwell.parquet"
    frame.to_parquet(path)
    result = runner.invoke(app, ["ingest", str(path), "--out", str(tmp_path / "out"), "--weight-col", "dwell_time"])
    assert result.exit_code == 0, result.output
    assert "the weight column holds durations (in dwell.parquet): read as their seconds" in result.output
    rows = pl.read_parquet(tmp_path / "out" / "interactions" / "**" / "*.parquet").sort("source_row")
    assert rows["weight"].to_list() == [1.5, 120.0]
    line = _refusal(path, tmp_path / "out2", "--time-col", "dwell_time")
    assert "the time column 'dwell_time' holds durations" in line and "--time-col NAME" in line, line


def test_a_json_array_under_a_json_lines_name_says_how_to_write_json_lines(tmp_path: Path) -> None:
    """polars' `write_json` and pandas' `to_json(orient="records")` write one JSON array; saved as
    `.jsonl` / `.ndjson` it was refused as "JSON Lines extension but no line is a JSON object",
    with no way forward. It gets the JSON array refusal (and its `jq` line) a `.json` file gets."""
    frame = pl.DataFrame({"user_id": [1, 2], "item_id": ["a", "b"]})
    frame.write_json(tmp_path / "events.jsonl")
    frame.to_pandas().to_json(tmp_path / "events.ndjson", orient="records", indent=2)
    for name in ("events.jsonl", "events.ndjson"):
        line = _refusal(tmp_path / name, tmp_path / "out")
        assert "a JSON array, not JSON Lines (one object a line)" in line and "`jq -c '.[]' FILE > NEW.jsonl`" in line


def test_json_lines_with_ids_nested_in_objects_say_which_jq_line_lifts_them_out(tmp_path: Path) -> None:
    """An API's event export nests its ids (`{"user": {"id": 1}, "item": {"id": "a"}}`): every line
    was quarantined as malformed_json and the error said "flatten them first, e.g. with jq". It
    names the keys and gives the jq line that lifts each id out under its key, which then ingests."""
    records = [{"user": {"id": n, "name": f"u{n}"}, "item": {"id": f"i{n}"}, "ts": 1704103200 + n} for n in (1, 2)]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    line = _refusal(path, tmp_path / "out")
    assert "key(s) 'user' (" in line and "'item' (" in line, line
    assert "`jq -c '.user = .user.id | .item = .item.id' FILE > NEW.jsonl`" in line, line
    lifted = tmp_path / "lifted.jsonl"  # what that jq line writes
    lifted.write_text("".join(json.dumps({**r, "user": r["user"]["id"], "item": r["item"]["id"]}) + "\n" for r in records))
    rows = _ingest(lifted, tmp_path / "lifted")
    assert rows["user_id"].cast(pl.String).to_list() == ["1", "2"] and rows["item_id"].to_list() == ["i1", "i2"]


def test_a_pandas_range_index_named_like_the_user_says_it_is_in_the_metadata_and_how_to_write_it(tmp_path: Path) -> None:
    """`df.set_index("user_id").to_parquet(...)` where the ids run 1, 2, 3: pandas keeps them as a
    RangeIndex, stored as (start, stop, step) in the file's pandas metadata, not as a column, and
    the error said "no user column found (columns are ['item_id', 'rating'])", with no hint that
    the ids were in the file. It names the index and the line that writes it as a column."""
    path = tmp_path / "ratings.parquet"
    pd.DataFrame({"user_id": [1, 2, 3], "item_id": [7, 8, 9], "rating": [4.0, 3.0, 5.0]}).set_index("user_id").to_parquet(path)
    line = _refusal(path, tmp_path / "out")
    assert "column 'user_id' is pandas' index, which `to_parquet` stored as a RangeIndex (from 1, step 1)" in line
    code = line.split("`")[3].replace("FILE", repr(str(path))).replace("NEW", repr(str(tmp_path / "new.parquet")))
    exec(code, {"pd": pd})  # noqa: S102 - the hint's own line
    rows = _ingest(tmp_path / "new.parquet", tmp_path / "new")
    assert rows["user_id"].cast(pl.String).to_list() == ["1", "2", "3"] and rows["weight"].to_list() == [4.0, 3.0, 5.0]


def test_a_partition_folder_named_after_a_column_the_files_hold_keeps_the_files_values(tmp_path: Path) -> None:
    """Files filed by day under `timestamp=2024-01-01/` that hold their exact `timestamp` column
    (polars' `write_parquet(partition_by=...)` keeps a key column in the files too): the folder's
    value replaced the file's, so every time read as midnight of its day. The file's column wins."""
    folder = tmp_path / "events" / "timestamp=2024-01-01"
    folder.mkdir(parents=True)
    times = [datetime(2024, 1, 1, 10, 30), datetime(2024, 1, 1, 17, 45)]
    pq.write_table(pa.table({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": times}), folder / "part-0.parquet")
    rows = _ingest(tmp_path / "events", tmp_path / "out")
    assert rows["timestamp"].to_list() == [t.replace(tzinfo=UTC) for t in times]


def test_uuid_ids_stored_as_16_bytes_read_as_the_uuids_they_are(tmp_path: Path) -> None:
    """DuckDB, Iceberg and pyarrow's `pa.uuid()` store a UUID column as 16 raw bytes (Parquet's UUID
    logical type), which polars reads as binary: ingest failed with "cannot read as parquet (invalid
    utf8)", naming no column, or, where the bytes happened to be UTF-8, read ids of control
    characters. They read as the UUIDs' text, the ids a month exported with UUID strings has."""
    folder = tmp_path / "events"
    folder.mkdir()
    users = [uuid.UUID("9f1c2d3e-4b5a-4c6d-8e7f-a0b1c2d3e4f5"), uuid.UUID("00000000-0000-4000-8000-000000000001")]
    as_bytes = pa.array([u.bytes for u in users], pa.binary(16)).cast(pa.uuid())
    (folder / "month=01").mkdir()
    (folder / "month=02").mkdir()
    pq.write_table(pa.table({"user_id": as_bytes, "item_id": ["x", "y"]}), folder / "month=01" / "part-0.parquet")
    pq.write_table(pa.table({"user_id": [str(u) for u in users], "item_id": ["z", "z"]}), folder / "month=02" / "part-0.parquet")
    rows = _ingest(folder, tmp_path / "out")
    assert rows["user_id"].to_list() == [str(u) for u in users] * 2
    assert pl.read_parquet(tmp_path / "out" / "users.parquet").height == 2
    digest = pa.array([bytes(range(16)), bytes(range(16, 32))], pa.binary(16))  # plain fixed-width bytes: hex
    pq.write_table(pa.table({"user_id": digest, "item_id": ["x", "y"]}), tmp_path / "md5.parquet")
    assert _ingest(tmp_path / "md5.parquet", tmp_path / "md5")["user_id"].to_list() == [bytes(range(16)).hex(), bytes(range(16, 32)).hex()]


def test_a_year_month_day_folder_layout_gives_its_rows_their_day(tmp_path: Path) -> None:
    """Spark's `partitionBy("year", "month", "day")` (and `"hour"`) leaves those columns out of the
    files: the dataset had no time column, and the warning offered `--time-col day`, which reads the
    day of the month as Unix seconds. The folders' day (and hour) is the rows' time, as a `date=`
    folder's is; a time column the files hold themselves is still preferred."""
    root = tmp_path / "events"
    for (y, m, d, h), users in (((2024, 1, 31, 23), ["a", "b"]), ((2024, 2, 1, 0), ["c"])):
        folder = root / f"year={y}" / f"month={m}" / f"day={d}" / f"hour={h}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"user_id": users, "item_id": ["x"] * len(users)}), folder / "part-00000-c000.snappy.parquet")
    result = runner.invoke(app, ["ingest", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and "time=year-month-day" in result.output, result.output
    rows = pl.read_parquet(tmp_path / "out" / "interactions" / "**" / "*.parquet").sort("source_file", "source_row")
    assert rows["timestamp"].to_list() == [datetime(2024, 1, 31, 23, tzinfo=UTC)] * 2 + [datetime(2024, 2, 1, tzinfo=UTC)]
    own = root / "year=2024" / "month=1" / "day=31" / "hour=23" / "part-00000-c000.snappy.parquet"
    exact = pa.array([datetime(2024, 1, 31, 23, 5), datetime(2024, 1, 31, 23, 59)], pa.timestamp("us"))
    pq.write_table(pa.table({"user_id": ["a", "b"], "item_id": ["x", "x"], "timestamp": exact}), own)
    (root / "year=2024" / "month=2").rename(tmp_path / "moved")  # every file now holds its own times
    rows = _ingest(root, tmp_path / "own")
    assert rows["timestamp"].to_list() == [t.replace(tzinfo=UTC) for t in exact.to_pylist()]


def test_a_json_boolean_flag_as_the_weight_reads_as_one_and_zero(tmp_path: Path) -> None:
    """BigQuery exports a BOOL column to JSON as `true` / `false`: read with `--weight-col clicked`
    (as the warning naming such a flag says), every row was quarantined as bad_weight ('true' is no
    number), while the same column in Parquet reads as 1 / 0. JSON's booleans read so too."""
    path = tmp_path / "impressions.jsonl"
    records = [{"user_id": "1", "item_id": "9", "clicked": True}, {"user_id": "2", "item_id": "9", "clicked": False}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = _ingest(path, tmp_path / "out", "--weight-col", "clicked")
    assert rows["weight"].to_list() == [1.0, 0.0]


def _delta_table(root: Path, commits: list[list[dict]], files: dict[str, pa.Table]) -> None:
    """A Delta Lake table as its protocol lays it out (no deltalake package here): Parquet files in
    the folder, one JSON line per action in `_delta_log/<20-digit version>.json`."""
    (root / "_delta_log").mkdir(parents=True)
    for name, table in files.items():
        pq.write_table(table, root / name)
    head = [{"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}},
            {"metaData": {"id": "t", "format": {"provider": "parquet", "options": {}}, "schemaString": "{}",
                          "partitionColumns": [], "configuration": {}, "createdTime": 0}}]  # fmt: skip
    for version, actions in enumerate(commits):
        lines = (head if version == 0 else []) + actions
        (root / "_delta_log" / f"{version:020d}.json").write_text("".join(json.dumps(a) + "\n" for a in lines))


def test_a_delta_table_folder_reads_the_files_of_its_current_version_only(tmp_path: Path) -> None:
    """A Delta Lake table keeps the files an overwrite (or DELETE, UPDATE, OPTIMIZE) replaced until a
    VACUUM, removed only in its `_delta_log`: read as a plain folder, every replaced row was read
    again beside its replacement, without a word. The log's commits are replayed: the current
    version's files are read, and a warning counts the others; a log that starts after its first
    commit with no checkpoint, or deletion vectors, are refused with the line that exports the table."""
    old, new = "part-00000-0a1b-c000.snappy.parquet", "part-00000-2c3d-c000.snappy.parquet"
    files = {old: pa.table({"user_id": ["u1", "u2"], "item_id": ["x", "y"]}), new: pa.table({"user_id": ["u3"], "item_id": ["z"]})}
    add = {"partitionValues": {}, "size": 1, "modificationTime": 0, "dataChange": True}
    overwrite = [{"remove": {"path": old, "deletionTimestamp": 1, "dataChange": True}}, {"add": {"path": new, **add}}]
    table = tmp_path / "events"
    _delta_table(table, [[{"add": {"path": old, **add}}], overwrite], files)
    result = runner.invoke(app, ["ingest", str(table), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "1 Parquet file(s) its log removed (earlier versions, kept on disk until a VACUUM) are not read" in result.output
    rows = pl.read_parquet(tmp_path / "out" / "interactions" / "**" / "*.parquet")
    assert rows["user_id"].to_list() == ["u3"]
    (table / "_delta_log" / "00000000000000000000.json").unlink()  # cleaned up, with no checkpoint to start from
    assert "it starts at commit 1, with no checkpoint to start from" in _refusal(table, tmp_path / "out2")
    dv = tmp_path / "dv"
    deleted = {"storageType": "u", "pathOrInlineDv": "ab^-aqEH.-t@S}K{vb[*k^", "sizeInBytes": 34, "cardinality": 1}
    _delta_table(dv, [[{"add": {"path": old, **add, "deletionVector": deleted}}]], {old: files[old]})
    assert "deletion vectors" in _refusal(dv, tmp_path / "out3")


def test_a_delta_commit_cut_short_is_refused_in_one_line_naming_the_commit_and_line(tmp_path: Path) -> None:
    """A commit a killed writer left half-written (or one edited by hand) stopped ingest with
    "unexpected JSONDecodeError ... this is a bug": the line is named, with the export that reads it."""
    name = "part-00000-0a1b-c000.snappy.parquet"
    add = {"path": name, "partitionValues": {}, "size": 1, "modificationTime": 0, "dataChange": True}
    for n, tail in enumerate(['{"remove": {"path": "part-0', '{"remove": {"deletionTimestamp": 1}}']):
        table = tmp_path / f"t{n}"
        _delta_table(table, [[{"add": add}]], {name: pa.table({"user_id": ["u1"], "item_id": ["x"]})})
        with (table / "_delta_log" / "00000000000000000000.json").open("a") as log:
            log.write(tail + "\n")
        line = _refusal(table, tmp_path / f"out{n}")
        assert line.startswith(f"error: {table}: the Delta Lake table's log _delta_log/00000000000000000000.json, line 4,"), line
        assert "pl.read_delta(DIR).write_parquet(NEW)" in line, line


def _ingest_from_memory(local: Path, out: Path) -> pl.DataFrame:
    """Ingest the folder `local` copied into fsspec's memory filesystem (standing in for s3://)."""
    fs = fsspec.filesystem("memory")
    root = f"/producer-layouts-{uuid.uuid4().hex}/events"
    for path in local.rglob("*"):
        if path.is_file():
            fs.pipe(f"{root}/{path.relative_to(local).as_posix()}", path.read_bytes())
    try:
        return _ingest(Path(f"memory://{root}"), out)
    finally:
        fs.rm(root, recursive=True)


def test_a_delta_table_in_object_storage_reads_its_current_version_too(tmp_path: Path) -> None:
    """The same overwrite in object storage (memory:// stands in for s3://): the listing skipped
    `_delta_log/` and read every Parquet file, the replaced ones too."""
    local = tmp_path / "events"
    old, new = "part-00000-0a1b-c000.snappy.parquet", "part-00000-2c3d-c000.snappy.parquet"
    files = {old: pa.table({"user_id": ["u1", "u2"], "item_id": ["x", "y"]}), new: pa.table({"user_id": ["u3"], "item_id": ["z"]})}
    add = {"partitionValues": {}, "size": 1, "modificationTime": 0, "dataChange": True}
    overwrite = [{"remove": {"path": old, "deletionTimestamp": 1, "dataChange": True}}, {"add": {"path": new, **add}}]
    _delta_table(local, [[{"add": {"path": old, **add}}], overwrite], files)
    rows = _ingest_from_memory(local, tmp_path / "out")
    assert rows["user_id"].to_list() == ["u3"]


def test_an_iceberg_table_folder_is_refused_with_the_line_that_exports_it(tmp_path: Path) -> None:
    """An Apache Iceberg table's folder (data/*.parquet, metadata/*.metadata.json and Avro manifests,
    as pyiceberg and Spark lay it out) lists its current files in the manifests, and keeps replaced
    files until they expire: its manifests were named as Avro files to convert to Parquet. It is
    named as an Iceberg table, with the line that exports its current rows."""
    table = tmp_path / "warehouse" / "events"
    (table / "data").mkdir(parents=True)
    (table / "metadata").mkdir()
    pq.write_table(pa.table({"user_id": ["u1"], "item_id": ["x"]}), table / "data" / "00000-0-5f2b.parquet")
    (table / "metadata" / "00001-8c1d.metadata.json").write_text(json.dumps({"format-version": 2, "snapshots": []}))
    pl.DataFrame({"manifest_path": ["m0.avro"]}).write_avro(table / "metadata" / "snap-1-1-8c1d.avro")
    line = _refusal(table, tmp_path / "out")
    assert "an Apache Iceberg table (metadata/00001-8c1d.metadata.json)" in line, line
    assert "pl.scan_iceberg(" in line and "sink_parquet(NEW)" in line, line


def test_variable_length_binary_ids_that_are_no_text_are_refused_naming_the_column(tmp_path: Path) -> None:
    """Raw id bytes (a SHA-1 prefix) written as Parquet BINARY, variable length (pyarrow `binary()`
    and `large_binary()`, Spark's BinaryType): the read failed with "cannot read as parquet
    (invalid utf8)", naming no column and, for a folder of files, not the file. Refused naming the
    file, the column, the first row and how to write the ids; BINARY that is text (Hive and Impala
    write strings so) is still read as that text."""
    landing = tmp_path / "landing"
    landing.mkdir()
    good = pa.table({"user_id": pa.array([b"u1", b"u2"], pa.binary()), "item_id": ["x", "y"], "ts": [1, 2]})
    pq.write_table(good, landing / "part-0.parquet")
    assert _ingest(landing / "part-0.parquet", tmp_path / "text").get_column("user_id").to_list() == ["u1", "u2"]
    for kind in (pa.binary(), pa.large_binary()):
        ids = pa.array([b"ok", b"\x9f\x1c\x2d", b"\x00\xff"], kind)
        pq.write_table(pa.table({"user_id": ["a", "b", "c"], "item_id": ids, "ts": [1, 2, 3]}), landing / "part-1.parquet")
        line = _refusal(landing, tmp_path / f"out-{kind}")
        assert "part-1.parquet" in line and "item column 'item_id'" in line and "row 2 is the first" in line
        assert "hex or base64" in line and "cast the column to a string" in line
        assert not (tmp_path / f"out-{kind}").exists()


def test_dt_and_date_folders_give_their_rows_their_day_in_iso_and_compact_form(tmp_path: Path) -> None:
    """Hive / Airflow layouts file a day's export under `dt=2024-01-01/` or `date=20240101/`, the
    files holding no time. `dt` is no time name: the rows had no time, and the second day's rows
    were quarantined as duplicates of the first's (same pair, no time); `date=20240101` was read
    as Unix seconds (1970-08-23, with a warning only). Both are the day of their rows now, an
    `hour=` folder below adds the hour, and a time column the files hold is still preferred."""
    for key, days in (("dt", ["2024-01-01", "2024-01-02"]), ("date", ["20240101", "20240102"])):
        root = tmp_path / key
        for day in days:
            (root / f"{key}={day}").mkdir(parents=True)
            pq.write_table(pa.table({"user_id": ["a", "b"], "item_id": ["x", "y"]}), root / f"{key}={day}" / "part-0.parquet")
        rows = _ingest(root, tmp_path / f"out-{key}")
        assert rows.height == 4, key
        assert rows["timestamp"].to_list() == [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 1, 2, 2)], key
    hourly = tmp_path / "hourly" / "dt=2024-03-05" / "hour=07"
    hourly.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["a"], "item_id": ["x"]}), hourly / "part-0.parquet")
    assert _ingest(tmp_path / "hourly", tmp_path / "out-hourly")["timestamp"].to_list() == [datetime(2024, 3, 5, 7, tzinfo=UTC)]
    exact = pa.array([datetime(2024, 1, 1, 10, 5)], pa.timestamp("us"))
    pq.write_table(pa.table({"user_id": ["a"], "item_id": ["x"], "ts": exact}), hourly / "part-0.parquet")
    assert _ingest(tmp_path / "hourly", tmp_path / "out-own")["timestamp"].to_list() == [datetime(2024, 1, 1, 10, 5, tzinfo=UTC)]


def test_a_day_folder_that_names_no_day_is_refused_where_it_would_be_the_time(tmp_path: Path) -> None:
    root = tmp_path / "events"
    for day in ("2024-01-01", "latest", "2024-02-30"):
        (root / f"dt={day}").mkdir(parents=True)
        pq.write_table(pa.table({"user_id": ["a"], "item_id": ["x"]}), root / f"dt={day}" / "part-0.parquet")
        if day == "2024-01-01":
            continue
        line = _refusal(root, tmp_path / "out")
        assert f"dt={day}/part-0.parquet: the folder dt={day} names no day (YYYY-MM-DD or YYYYMMDD)" in line
        assert "--time-col" in line
        (root / f"dt={day}" / "part-0.parquet").unlink()
        (root / f"dt={day}").rmdir()
    (root / "dt=latest").mkdir()
    for n, day in enumerate(("2024-01-01", "latest")):  # files with times of their own: the folders are not read
        times = pa.array([datetime(2024, 1, 1, n)], pa.timestamp("us"))
        pq.write_table(pa.table({"user_id": ["a"], "item_id": ["x"], "timestamp": times}), root / f"dt={day}" / "part-0.parquet")
    assert _ingest(root, tmp_path / "own")["timestamp"].to_list() == [datetime(2024, 1, 1, n, tzinfo=UTC) for n in (0, 1)]


def test_mongoexport_binary_ids_read_as_hex_and_uuid_text(tmp_path: Path) -> None:
    """mongoexport writes a BinData field (a UUID user id, a hashed item key) as
    `{"$binary": {"base64": ..., "subType": "04"}}`, or in the legacy form `{"$binary": ..., "$type":
    "00"}`: every such file was refused as holding objects. A UUID reads as its canonical text (as a
    Parquet UUID column does), other bytes as hex; bytes read as the time are refused naming the key."""
    import base64

    users = [uuid.UUID(int=7), uuid.UUID("9f1c2d3e-4b5a-4c6d-8e7f-a0b1c2d3e4f5")]
    keys = [bytes([0, 255, 16]), bytes([1, 2])]

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    canonical = [
        {"_id": {"$oid": f"65a1b2c3d4e5f6071829000{n}"}, "user_id": {"$binary": {"base64": b64(u.bytes), "subType": "04"}},
         "item_id": {"$binary": {"subType": "00", "base64": b64(k)}}, "ts": {"$date": f"2024-01-0{n + 1}T10:00:00Z"}}
        for n, (u, k) in enumerate(zip(users, keys, strict=True))
    ]  # fmt: skip
    legacy = [{"user_id": {"$binary": b64(u.bytes), "$type": "04"}, "item_id": {"$binary": b64(k), "$type": "00"}}
              for u, k in zip(users, keys, strict=True)]  # fmt: skip
    for name, records in (("canonical", canonical), ("legacy", legacy)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        rows = _ingest(path, tmp_path / f"out-{name}")
        assert rows["user_id"].to_list() == [str(u) for u in users], name
        assert rows["item_id"].to_list() == ["00ff10", "0102"], name
    timed = tmp_path / "timed.jsonl"
    timed.write_text("".join(json.dumps({"user_id": "a", "item_id": "b", "ts": {"$binary": {"base64": "AAE=", "subType": "00"}}}) + "\n"
                             for _ in range(2)))  # fmt: skip
    line = _refusal(timed, tmp_path / "out-timed")
    assert "key 'ts', read as the time, holds MongoDB binary values" in line and "--time-col" in line


_ADD = pa.struct([("path", pa.string()), ("partitionValues", pa.map_(pa.string(), pa.string())), ("size", pa.int64()),
                  ("modificationTime", pa.int64()), ("dataChange", pa.bool_()), ("stats", pa.string()),
                  ("deletionVector", pa.struct([("storageType", pa.string()), ("pathOrInlineDv", pa.string()),
                                                ("offset", pa.int32()), ("sizeInBytes", pa.int32()),
                                                ("cardinality", pa.int64())]))])  # fmt: skip
_REMOVE = pa.struct([("path", pa.string()), ("deletionTimestamp", pa.int64()), ("dataChange", pa.bool_())])
_PROTOCOL = pa.struct([("minReaderVersion", pa.int32()), ("minWriterVersion", pa.int32())])


def _delta_checkpoint(log: Path, name: str, adds: list[str], tombstones: list[str], dv: dict | None = None) -> None:
    """A checkpoint Parquet as Delta writes one: a row per action, one struct column per action
    kind (`protocol`, `add`, `remove`; the others null in that row)."""
    rows = [{"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}, "add": None, "remove": None}]
    rows += [{"protocol": None, "remove": None, "add": {"path": p, "partitionValues": [], "size": 1, "modificationTime": 0,
                                                        "dataChange": False, "stats": None, "deletionVector": dv}}
             for p in adds]  # fmt: skip
    rows += [{"protocol": None, "add": None, "remove": {"path": p, "deletionTimestamp": 1, "dataChange": False}}
             for p in tombstones]  # fmt: skip
    schema = pa.schema([("protocol", _PROTOCOL), ("add", _ADD), ("remove", _REMOVE)])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), log / name)


def _checkpointed_table(root: Path) -> dict[str, str]:
    """Versions 0-3 of a table: 0 adds a and b, 1 replaces a by c, checkpoint at 2 (after 2 adds d),
    3 removes b; the commits before the checkpoint cleaned up, as Delta's log retention does."""
    names = {k: f"part-0000{n}-{k}-c000.snappy.parquet" for n, k in enumerate("abcd")}
    files = {names[k]: pa.table({"user_id": [f"u-{k}"], "item_id": [f"i-{k}"]}) for k in "abcd"}
    add = {"partitionValues": {}, "size": 1, "modificationTime": 0, "dataChange": True}
    commits = [
        [{"add": {"path": names["a"], **add}}, {"add": {"path": names["b"], **add}}],
        [{"remove": {"path": names["a"], "deletionTimestamp": 1, "dataChange": True}}, {"add": {"path": names["c"], **add}}],
        [{"add": {"path": names["d"], **add}}],
        [{"remove": {"path": names["b"], "deletionTimestamp": 2, "dataChange": True}}],
    ]
    _delta_table(root, commits, files)
    log = root / "_delta_log"
    _delta_checkpoint(log, f"{2:020d}.checkpoint.parquet", [names["b"], names["c"], names["d"]], [names["a"]])
    (log / "_last_checkpoint").write_text(json.dumps({"version": 2, "size": 5}))
    for version in (0, 1, 2):
        (log / f"{version:020d}.json").unlink()
    return names


def test_a_delta_log_that_starts_at_a_checkpoint_is_replayed_from_it(tmp_path: Path) -> None:
    """Delta keeps a checkpoint every 10 commits and cleans up commits past their retention, so a
    table older than a month has a log that starts at a checkpoint: every such table was refused.
    The checkpoint's add rows are its version's files (its remove rows tombstones), then the JSON
    commits after it; multi-part checkpoints read all parts, a stale `_last_checkpoint` falls
    back to the listing, and what cannot be replayed is refused in one line."""
    table = tmp_path / "events"
    names = _checkpointed_table(table)
    result = runner.invoke(app, ["ingest", str(table), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "2 Parquet file(s) its log removed" in result.output
    assert sorted(pl.read_parquet(tmp_path / "out" / "interactions" / "**" / "*.parquet")["user_id"]) == ["u-c", "u-d"]

    log = table / "_delta_log"
    (log / "_last_checkpoint").write_text(json.dumps({"version": 9}))  # a pointer past a cleanup
    (log / f"{2:020d}.checkpoint.parquet").unlink()
    _delta_checkpoint(log, f"{2:020d}.checkpoint.0000000001.0000000002.parquet", [names["b"]], [names["a"]])
    _delta_checkpoint(log, f"{2:020d}.checkpoint.0000000002.0000000002.parquet", [names["c"], names["d"]], [])
    assert sorted(_ingest(table, tmp_path / "parts")["user_id"]) == ["u-c", "u-d"]
    (log / f"{2:020d}.checkpoint.0000000002.0000000002.parquet").unlink()  # a part missing
    line = _refusal(table, tmp_path / "out-part")
    assert "log cannot be replayed (its checkpoint's parts are not all there" in line and "pl.read_delta" in line

    dv_table = tmp_path / "dv"
    names = _checkpointed_table(dv_table)
    deleted = {"storageType": "u", "pathOrInlineDv": "ab^-aqEH", "offset": None, "sizeInBytes": 34, "cardinality": 1}
    _delta_checkpoint(dv_table / "_delta_log", f"{2:020d}.checkpoint.parquet", [names["c"]], [], dv=deleted)
    assert "deletion vectors, 00000000000000000002.checkpoint.parquet" in _refusal(dv_table, tmp_path / "out-dv")
    torn = tmp_path / "torn"
    _checkpointed_table(torn)
    (torn / "_delta_log" / f"{2:020d}.checkpoint.parquet").write_bytes(b"PAR1 cut short")
    assert "checkpoint _delta_log/00000000000000000002.checkpoint.parquet is not readable Parquet" in _refusal(
        torn, tmp_path / "out-torn"
    )


def test_a_checkpointed_delta_table_in_object_storage_is_replayed_too(tmp_path: Path) -> None:
    local = tmp_path / "events"
    _checkpointed_table(local)
    rows = _ingest_from_memory(local, tmp_path / "out")
    assert sorted(rows["user_id"]) == ["u-c", "u-d"]


def test_csv_and_json_lines_files_in_day_folders_take_their_folders_day(tmp_path: Path) -> None:
    """Spark's `partitionBy("dt").csv(...)` / `.json(...)` leaves the day out of the files as it
    does for Parquet, but hive folders were read for Parquet alone: such rows had no time. Files
    with a time of their own keep it; a day folder that names no day, or files of which only some
    are filed under a day, are refused."""
    csv_root, json_root = tmp_path / "csv", tmp_path / "json"
    for n, day in enumerate(("2024-01-01", "20240102")):
        (csv_root / f"dt={day}").mkdir(parents=True)
        (csv_root / f"dt={day}" / "part-00000.csv").write_text("user_id,item_id\na,x\nb,y\n")
        (json_root / f"date={day}").mkdir(parents=True)
        (json_root / f"date={day}" / "part-00000.json").write_text(f'{{"user_id": "u{n}", "item_id": "x"}}\n')
    rows = _ingest(csv_root, tmp_path / "out-csv")
    assert rows["timestamp"].to_list() == [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 1, 2, 2)]
    rows = _ingest(json_root, tmp_path / "out-json")
    assert rows["timestamp"].to_list() == [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2)]
    alone = _ingest(csv_root / "dt=20240102" / "part-00000.csv", tmp_path / "out-alone")  # a landing zone's way
    assert alone["timestamp"].to_list() == [datetime(2024, 1, 2, tzinfo=UTC)] * 2

    (csv_root / "dt=2024-01-01" / "part-00000.csv").write_text("user_id,item_id,timestamp\na,x,1704103200\n")
    (csv_root / "dt=20240102" / "part-00000.csv").write_text("user_id,item_id,timestamp\nb,y,1704189600\n")
    assert _ingest(csv_root, tmp_path / "own")["timestamp"].to_list() == [
        datetime(2024, 1, 1, 10, tzinfo=UTC), datetime(2024, 1, 2, 10, tzinfo=UTC)]  # fmt: skip
    (json_root / "date=latest").mkdir()
    (json_root / "date=latest" / "part-00000.json").write_text('{"user_id": "u9", "item_id": "x"}\n')
    assert "date=latest/part-00000.json: the folder date=latest names no day" in _refusal(json_root, tmp_path / "bad")
    (json_root / "date=latest" / "part-00000.json").rename(json_root / "loose.json")
    (json_root / "date=latest").rmdir()
    line = _refusal(json_root, tmp_path / "mixed")
    assert "2 of its 3 files are filed under a day folder" in line and "loose.json is not" in line
