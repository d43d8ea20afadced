"""data.header / `recsys ingest --header`: headerless delimited files (YOOCHOOSE, Last.fm, Taobao)
read as they are, under names the user gives, instead of being refused with a `sed -i '1i ...'`
that edits a (possibly read-only, gzip'd, multi-GB) source file in place."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import DataConfig, load_config
from recsys.data.readers import scan_source
from recsys.errors import DataError

runner = CliRunner()

CLICKS = (
    "1,2014-04-07T10:51:09.277Z,214536502,0\n"
    "1,2014-04-07T10:54:09.868Z,214536500,0\n"
    "2,2014-04-07T13:56:37.614Z,214662742,0\n"
)
NAMES = "session_id,timestamp,item_id,category"


def _ingest(source: Path, out: Path, *args: str):
    return runner.invoke(app, ["ingest", str(source), "--out", str(out), *args])


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_ingest_reads_a_headerless_click_log_under_the_given_names(tmp_path: Path) -> None:
    """YOOCHOOSE's clicks: `--header` names the fields, every row is read from the first line, and
    the columns map from those names (session_id, the one id column left, as the user)."""
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(CLICKS)
    before = path.read_bytes()
    out = tmp_path / "out"
    result = _ingest(path, out, "--header", NAMES)
    assert result.exit_code == 0, result.output
    manifest = _manifest(out)
    assert manifest["rows_in"] == 3 and manifest["rows_accepted"] == 3 and manifest["interactions"] == 3
    assert manifest["batches"][0]["columns"] == {
        "user_id": "session_id", "item_id": "item_id", "timestamp": "timestamp"
    }  # fmt: skip
    got = pl.read_parquet(out / "interactions").sort("timestamp")
    assert got["user_id"].cast(pl.String).to_list() == ["1", "1", "2"]
    assert got["item_id"].cast(pl.String).to_list() == ["214536502", "214536500", "214662742"]
    assert path.read_bytes() == before  # the source is left as it is


def test_the_header_names_a_gzipped_directory_and_a_first_line_equal_to_them_is_the_header(tmp_path: Path) -> None:
    """A landing directory: a gzip'd day without a header line beside one whose first line spells
    the names; the names apply to each file, and the header line is not read as a row."""
    landing = tmp_path / "landing"
    landing.mkdir()
    with gzip.open(landing / "day1.csv.gz", "wt") as fh:
        fh.write(CLICKS)
    (landing / "day2.csv").write_text(NAMES + "\n3,2014-04-08T10:00:00Z,214536502,0\n")
    raw = scan_source(landing, columns=None, header=NAMES.split(","))
    frame = raw.frame.collect()
    assert frame["user_id"].to_list() == ["1", "1", "2", "3"]
    assert frame["item_id"].to_list() == ["214536502", "214536500", "214662742", "214536502"]


@pytest.mark.parametrize(
    ("text", "names", "expected"),
    [
        (
            CLICKS,
            "session_id,timestamp,item_id",
            "data.header gives 3 names (session_id,timestamp,item_id) but the file's first line has 4 fields "
            "('1,2014-04-07T10:51:09.277Z,214536502,0')",
        ),
        (
            "user_id,item_id,rating,ts\n1,2,3,4\n",
            NAMES,
            "starts with a header line ('user_id,item_id,rating,ts') other than the names data.header gives",
        ),
    ],
    ids=["wrong-count", "other-header"],
)
def test_names_that_do_not_fit_the_file_are_one_error_line(text: str, names: str, expected: str, tmp_path: Path) -> None:
    """A name short (or one too many) would shift every column; a header line other than the
    names would be read as a row: both stop ingest with one line, nothing written."""
    path = tmp_path / "clicks.csv"
    path.write_text(text)
    result = _ingest(path, tmp_path / "out", "--header", names)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {path}: ") and expected in line, line
    assert not (tmp_path / "out").exists()


def test_the_refusal_of_a_headerless_file_names_the_setting_first(tmp_path: Path) -> None:
    """The refusal offered only `sed -i '1i ...' FILE`; it now names `--header` for ingest (and
    `--set data.header=...` elsewhere) with the same suggested names, which then read the file."""
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(CLICKS)
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "--header user_id,timestamp,item_id,column_4" in line, line
    assert line.index("--header") < line.index("sed -i '1i user_id,timestamp,item_id,column_4'"), line
    with pytest.raises(DataError) as caught:
        scan_source(path)
    assert "--set data.header=user_id,timestamp,item_id,column_4" in str(caught.value)
    result = _ingest(path, tmp_path / "out", "--header", "user_id,timestamp,item_id,column_4")
    assert result.exit_code == 0, result.output
    assert _manifest(tmp_path / "out")["rows_accepted"] == 3


def test_a_run_reads_the_headerless_log_with_data_header_and_names_its_directory_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`recsys run`'s data step (`prepare_dataset`) with `--set data.header=...` as one string;
    the processed directory of a config without the setting keeps its name (the hash leaves the
    unset setting out), and one with it gets another."""
    from pipelines.data import dataset_dir, prepare_dataset, source_fingerprint

    path = tmp_path / "clicks.csv"
    path.write_text(CLICKS)
    base = [f'data.source="{path}"', f'data.processed_dir="{tmp_path / "processed"}"']
    cfg = load_config(None, [*base, f"data.header={NAMES}"])
    assert cfg.data.header == NAMES.split(",")
    result = prepare_dataset(cfg)
    manifest = _manifest(Path(result.processed_dir))
    assert manifest["rows_accepted"] == 3 and manifest["batches"][0]["columns"]["user_id"] == "session_id"
    assert Path(result.processed_dir) == dataset_dir(cfg.data)
    # Pinned as in test_pipeline_steps: the names and keys from before data.header existed.
    plain = DataConfig(source="data/raw/events.csv", positive_events=["transaction"])
    assert dataset_dir(plain).name == "events.csv-957fd286"
    monkeypatch.setattr("pipelines.data.READER_VERSION", 1)  # the key moves with it by design
    assert source_fingerprint(DataConfig()) == "b55f8e36026b1c6ce7a6"
    assert dataset_dir(plain.model_copy(update={"header": ["user_id", "item_id"]})) != dataset_dir(plain)


@pytest.mark.parametrize("names", ["user_id", "user_id,,item_id", "user_id,item_id,user_id"])
def test_bad_names_are_refused_when_read(names: str, tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text(CLICKS)
    result = _ingest(path, tmp_path / "out", "--header", names)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: --header {names!r}: "), line


def test_the_header_is_refused_for_a_parquet_source(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pl.DataFrame({"user_id": ["1"], "item_id": ["2"]}).write_parquet(path)
    with pytest.raises(DataError, match=r"data\.header names the fields of delimited text files"):
        scan_source(path, header=["a", "b"])


def test_the_suggested_names_of_yoochoose_buys_make_no_weight_of_the_price(tmp_path: Path) -> None:
    """YOOCHOOSE's buys (session, time, item, price, quantity): the suggestion named the price
    `rating`, so keeping it weighed each purchase by its price; a price is no preference strength,
    so it and the quantity after it are named by position, and the buys count one each."""
    path = tmp_path / "yoochoose-buys.dat"
    path.write_text("420374,2014-04-06T18:44:58.314Z,214537888,12462,1\n489758,2014-04-06T09:59:52.422Z,214826955,1360,2\n")
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    names = "user_id,timestamp,item_id,column_4,column_5"
    assert f"--header {names} " in line and f"sed -i '1i {names}'" in line, line
    result = _ingest(path, tmp_path / "out", "--header", names)
    assert result.exit_code == 0, result.output
    manifest = _manifest(tmp_path / "out")
    assert "weight" not in manifest["batches"][0]["columns"] and manifest["weights"]["column"] is None
