"""Logs that store an interaction's time over several columns: HetRec 2011 MovieLens-2k's
`user_ratedmovies.dat` (day, month, year, hour, minute, second) and a `date` beside a `time` of
day. They were read without times (HetRec: a warning about its date parts, temporal splits
refused) or refused outright (the date+time pair: every `18:00:09` a bad timestamp)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import SplitConfig
from recsys.data.splits import split_data
from recsys.data.storage import load_processed

runner = CliRunner()

# user_ratedmovies.dat's header and first row as GroupLens ships them (tab-separated, unpadded numbers).
HETREC_HEADER = "userID\tmovieID\trating\tdate_day\tdate_month\tdate_year\tdate_hour\tdate_minute\tdate_second\n"
HETREC_PARTS = "date_year+date_month+date_day+date_hour+date_minute+date_second"


def _ingest(source: Path, out: Path) -> str:
    result = runner.invoke(app, ["ingest", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _batch(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["batches"][-1]


def test_hetrec_date_parts_are_combined_into_utc_times_that_split_temporally(tmp_path: Path) -> None:
    rows = [
        "75\t3\t1\t29\t10\t2006\t23\t17\t16",
        "75\t32\t4.5\t29\t10\t2006\t23\t23\t44",
        "75\t110\t4\t29\t10\t2006\t23\t30\t8",
        "75\t160\t2\t29\t10\t2006\t23\t16\t52",
        "75\t163\t4\t29\t10\t2006\t23\t29\t30",
        "78\t1\t4\t1\t3\t2008\t0\t5\t9",
        "78\t2\t3\t15\t3\t2008\t12\t0\t0",
        "78\t5\t5\t20\t4\t2008\t7\t45\t1",
        "78\t7\t2\t29\t2\t2008\t18\t2\t3",  # 2008 is a leap year
        "78\t9\t4\t9\t9\t2009\t9\t9\t9",
    ]
    path = tmp_path / "user_ratedmovies.dat"
    path.write_text(HETREC_HEADER + "\n".join(rows) + "\n", newline="")
    out = tmp_path / "out"
    said = _ingest(path, out)
    assert f"time={HETREC_PARTS}" in said, said
    assert "no time column is read" not in said, said
    batch = _batch(out)
    assert batch["columns"]["timestamp"] == HETREC_PARTS
    assert (batch["rows_in"], batch["rows_accepted"], batch["rows_quarantined"]) == (10, 10, 0)
    got = pl.read_parquet(out / "interactions").sort("source_row")
    assert str(got["timestamp"].dtype.time_zone) == "UTC"
    # Hand-read from the rows above: day, month, year, hour, minute, second, at UTC.
    assert got["timestamp"][0] == datetime(2006, 10, 29, 23, 17, 16, tzinfo=UTC)
    assert got["timestamp"][2] == datetime(2006, 10, 29, 23, 30, 8, tzinfo=UTC)
    assert got["timestamp"][5] == datetime(2008, 3, 1, 0, 5, 9, tzinfo=UTC)
    assert got["timestamp"][8] == datetime(2008, 2, 29, 18, 2, 3, tzinfo=UTC)
    assert got["timestamp"][0].timestamp() == 1162163836  # `date -u -d '2006-10-29 23:17:16' +%s`
    split = split_data(load_processed(out), SplitConfig(protocol="temporal"))
    rows_by_part = split.meta["rows"]
    assert rows_by_part["train"] > 0 and sum(rows_by_part.values()) == 10, rows_by_part


def test_a_date_beside_a_time_of_day_is_one_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "checkins.csv"
    path.write_text(
        "userID,venueId,date,time\n"
        "1,v1,2012-04-03,18:00:09\n"
        "1,v2,2012-04-04,08:01:00\n"
        "2,v1,2012-04-05,9:05:00\n"
    )
    out = tmp_path / "out"
    said = _ingest(path, out)
    assert "time=date+time" in said, said
    got = pl.read_parquet(out / "interactions").sort("source_row")["timestamp"].to_list()
    assert got == [
        datetime(2012, 4, 3, 18, 0, 9, tzinfo=UTC),
        datetime(2012, 4, 4, 8, 1, 0, tzinfo=UTC),
        datetime(2012, 4, 5, 9, 5, 0, tzinfo=UTC),
    ]


def test_parts_that_name_no_moment_are_quarantined_with_their_reason(tmp_path: Path) -> None:
    path = tmp_path / "user_ratedmovies.dat"
    path.write_text(
        HETREC_HEADER
        + "75\t3\t1\t29\t10\t2006\t23\t17\t16\n"
        + "75\t32\t4.5\t31\t2\t2007\t23\t23\t44\n"  # day 31 of February
        + "78\t1\t4\t1\t3\t2008\t\t5\t9\n",  # no hour: not midnight
        newline="",
    )
    out = tmp_path / "out"
    said = _ingest(path, out)
    assert "2 of 3 rows (67%) were quarantined as bad_timestamp" in said, said
    assert "the time is combined from 'date_year', 'date_month', 'date_day', 'date_hour'" in said, said
    batch = _batch(out)
    assert (batch["rows_in"], batch["rows_accepted"], batch["rows_quarantined"]) == (3, 1, 2)
    assert batch["reasons"] == {"bad_timestamp": 2}
    quarantined = pl.read_parquet(out / batch["quarantine"]).sort("source_row")
    assert quarantined["source_row"].to_list() == [2, 3]
    assert quarantined["reason"].to_list() == ["bad_timestamp", "bad_timestamp"]
    assert quarantined["timestamp"].to_list() == ["2007-02-31T23:23:44", "2008-03-01T0?:05:09"]


def test_a_log_with_one_time_column_reads_it_alone(tmp_path: Path) -> None:
    """HetRec's sibling `user_ratedmovies-timestamps.dat` (ms), with date parts beside it, and a
    `time` holding whole timestamps beside a `date`: the one time column is read as before."""
    path = tmp_path / "user_ratedmovies-timestamps.dat"
    path.write_text("userID\tmovieID\trating\ttimestamp\tdate_year\tdate_month\tdate_day\n75\t3\t1\t1162160236000\t2006\t10\t29\n")
    out = tmp_path / "out"
    said = _ingest(path, out)
    assert "time=timestamp," in said, said
    assert pl.read_parquet(out / "interactions")["timestamp"][0] == datetime(2006, 10, 29, 22, 17, 16, tzinfo=UTC)
    path = tmp_path / "profiles.csv"  # a user's birth date is no interaction time
    path.write_text("user,item,birth_year,birth_month,birth_day\n1,a,1990,5,17\n")
    assert "no time column is read" in _ingest(path, tmp_path / "out3")
    path = tmp_path / "log.csv"
    path.write_text("user,item,date,time\n1,a,2012-04-03,2012-04-03T18:00:09\n")
    said = _ingest(path, tmp_path / "out2")
    assert "time=time," in said, said
    assert pl.read_parquet(tmp_path / "out2" / "interactions")["timestamp"][0] == datetime(2012, 4, 3, 18, 0, 9, tzinfo=UTC)
