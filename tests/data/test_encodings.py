"""Text that is not UTF-8: `data.encoding` (`recsys ingest --encoding`) reads Latin-1 / Windows-1252
logs (Book-Crossing) through a streaming UTF-8 copy, a UTF-16 file with a byte-order mark (Excel's
'Unicode Text') is read without being asked, and what cannot be read says which encoding to name."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import polars as pl
import pytest
from stopped import stopped_at_its_point
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import DataConfig
from recsys.data.ingest import ingest

runner = CliRunner()

# Book-Crossing's BX-Book-Ratings.csv as published: Latin-1, `;`-separated, every field quoted, CRLF.
BX = b'"User-ID";"ISBN";"Book-Rating"\r\n"276725";"034545104X";"0"\r\n"276726";"Caf\xe9 9X";"5"\r\n"276727";"0446520802";"x"\r\n'


def _ingest(source: Path, out: Path, *args: str):
    return runner.invoke(app, ["ingest", str(source), "--out", str(out), *args])


def _staging_left(out: Path) -> list[str]:
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.") and not p.name.endswith(".lock")]


def test_book_crossing_latin1_is_read_with_its_encoding(tmp_path: Path) -> None:
    path = tmp_path / "BX-Book-Ratings.csv"
    path.write_bytes(BX)
    out = tmp_path / "out"
    refused = _ingest(path, out)
    assert refused.exit_code == 2
    (line,) = refused.output.strip().splitlines()
    assert line.startswith("error: ") and "--encoding latin-1" in line, line

    result = _ingest(path, out, "--encoding", "latin-1")
    assert result.exit_code == 0, result.output
    rows = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")
    assert sorted(rows["item_id"]) == ["034545104X", "Café 9X"]  # decoded, not mojibake
    quarantine = pl.read_parquet(out / "quarantine" / "batch=000001.parquet")
    assert quarantine.select("source_row", "weight", "reason").rows() == [(3, "x", "bad_weight")]  # line numbers kept
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["batches"][-1]["source"] == str(path)
    assert _staging_left(out) == []  # the UTF-8 copy is gone


def test_a_windows_byte_latin1_lacks_names_its_line_and_a_bad_name_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_bytes(b"user_id,item_id,rating\r\nA,x,5\r\nB,\x81y,3\r\n")  # 0x81: undefined in cp1252
    result = _ingest(path, tmp_path / "out", "--encoding", "cp1252")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert f"{path}: not cp1252 text: bytes 81 at line 3" in line and "--encoding latin-1" in line, line
    assert not (tmp_path / "out").exists() and _staging_left(tmp_path / "out") == []
    result = _ingest(path, tmp_path / "out", "--encoding", "klingon")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "data.encoding 'klingon'" in line


def test_excel_unicode_text_is_read_and_utf16_without_a_bom_is_named(tmp_path: Path) -> None:
    text = "user_id\titem_id\trating\r\nA\tcafé\t5\r\nB\tx\t3\r\n"
    path = tmp_path / "ratings.txt"
    path.write_bytes(text.encode("utf-16"))  # Excel 'Unicode Text': UTF-16-LE behind a BOM, tabs, CRLF
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    rows = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")
    assert rows.select("user_id", "item_id", "weight").rows() == [("A", "café", 5.0), ("B", "x", 3.0)]

    bare = tmp_path / "bare.txt"
    bare.write_bytes(text.encode("utf-16-le"))
    result = _ingest(bare, tmp_path / "out2")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "UTF-16 text without a byte-order mark" in line and "--encoding utf-16-le" in line, line
    assert _ingest(bare, tmp_path / "out2", "--encoding", "utf-16-le").exit_code == 0


def test_a_byte_order_mark_is_read_also_by_url_or_beside_a_setting_and_messages_say_so(tmp_path: Path) -> None:
    """Messages must be true now that ingest reads UTF-16 / UTF-32 behind a mark: a `file://` URL
    of such a file (read like its path, README) said to convert it with iconv; `--encoding latin-1`
    (a landing zone's setting) on it said "binary content"; the readers alone named UTF-32 as UTF-16."""
    from recsys.data.ingest import read_canonical

    text = "user_id\titem_id\trating\r\nA\tcafé\t5\r\nB\tx\t3\r\n"
    wanted = [("A", "café", 5.0), ("B", "x", 3.0)]
    for codec in ("utf-16", "utf-32"):
        path = tmp_path / f"{codec}.txt"
        path.write_bytes(text.encode(codec))
        for n, (source, args) in enumerate([(path.as_uri(), ()), (path, ("--encoding", "latin-1"))]):
            out = tmp_path / f"out-{codec}-{n}"
            result = _ingest(source, out, *args)
            assert result.exit_code == 0, result.output
            rows = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")
            assert rows.select("user_id", "item_id", "weight").rows() == wanted
            if args:
                assert f"{codec.upper()} byte-order mark: read as {codec.upper()}, not as latin-1" in result.output
        with pytest.raises(Exception, match=f"{codec.upper()} text with a byte-order mark") as info:
            read_canonical(path)  # the readers alone: UTF-8 only, and they say who reads it
        assert "iconv" not in str(info.value) and "recsys ingest" in str(info.value)


def test_a_file_url_append_run_again_adds_its_batch_once(tmp_path: Path) -> None:
    """A retried `recsys ingest --append file://...` (the step rerun after a kill -9 that came once
    its batch had landed) must add nothing: a URL recorded no content digest, so it added a twin."""
    (tmp_path / "day1.csv").write_text("user_id,item_id,rating\nA,x,5\nB,y,3\n")
    day2 = tmp_path / "day2.csv"
    day2.write_text("user_id,item_id,rating\nC,x,4\n")
    out = tmp_path / "out"
    assert _ingest(tmp_path / "day1.csv", out).exit_code == 0
    for _ in range(2):
        result = _ingest(day2.as_uri(), out, "--append")
        assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["batches"]) == 2 and manifest["interactions"] == 3
    assert "was ingested already" in result.output


def test_a_latin1_directory_keeps_its_file_names_and_errors_name_the_users_file(tmp_path: Path) -> None:
    folder = tmp_path / "months"
    folder.mkdir()
    (folder / "a.csv").write_bytes(b"user_id;item_id;rating\n1;caf\xe9;5\n2;x;abc\n")
    (folder / "b.csv.gz").write_bytes(gzip.compress(b"user_id;item_id;rating\n3;caf\xe9;4\n"))
    out = tmp_path / "out"
    result = _ingest(folder, out, "--encoding", "latin-1")
    assert result.exit_code == 0, result.output
    quarantine = pl.read_parquet(out / "quarantine" / "batch=000001.parquet")
    assert quarantine.select("source_file", "source_row", "reason").rows() == [("a.csv", 2, "bad_weight")]
    assert "row 2 of a.csv" in result.output  # the quarantine-share warning
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_accepted"] == 2 and manifest["items"] == 1  # café in both files: one item

    odd = tmp_path / "odd.csv"
    odd.write_bytes(b"foo;bar\n1;\xe9\n")
    result = _ingest(odd, tmp_path / "out3", "--encoding", "latin-1")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert str(odd) in line and ".tmp" not in line, line


def test_warnings_of_a_copied_source_name_the_users_files(tmp_path: Path) -> None:
    """Through the library, as `recsys run` ingests `data.source`: the reader's warning about a
    file it does not read, and ingest's own (a column named twice), named the staging copy, or
    (the unread file) were not given at all."""
    folder = tmp_path / "plays"
    folder.mkdir()
    (folder / "a.tsv").write_bytes("user_id\titem_id\titem_id\tplays\nu1\tBj\xf6rk\tx\t3\nu2\tA\ty\t2\n".encode("latin-1"))
    (folder / "part-00000").write_bytes(b"u3\tB\tz\t1\n")  # Hive's name for a data file: not read, so named
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = ingest(folder, tmp_path / "out", DataConfig(encoding="latin-1"))
    said = [str(w.message) for w in caught] + report.warnings
    assert report.rows_accepted == 2
    assert any(s.startswith(f"{folder}: 1 file(s) not read (part-00000)") for s in said), said
    assert any(s.startswith(f"{folder / 'a.tsv'}: the header names 2 columns 'item_id'") for s in said), said
    assert not any(".tmp" in s for s in said), said


@pytest.mark.parametrize("name", ["utf-8", "UTF8", "utf-8-sig"])
def test_utf8_names_make_no_copy(name: str, tmp_path: Path) -> None:
    from recsys.data.encoding import utf8_source

    path = tmp_path / "r.csv"
    path.write_text("user_id,item_id\n1,2\n")
    with utf8_source(path, name, tmp_path / "out") as text:
        assert text.path == path and not text.copied


def test_a_scheduled_run_reads_a_latin1_landing_zone_day_by_day(tmp_path: Path) -> None:
    """`recsys run`'s data step with `data.encoding`: each new file of a landing directory is
    copied and appended, with its ids decoded, and nothing is left beside the processed data."""
    from pipelines.data import prepare_dataset
    from recsys.config import load_config

    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "day1.csv").write_bytes(b"user_id;item_id;rating\n1;Caf\xe9;5\n2;Caf\xe9;4\n2;Th\xe9;3\n")
    overrides = [f'data.source="{landing}"', f'data.processed_dir="{tmp_path / "processed"}"', 'data.encoding="latin-1"']
    cfg = load_config(None, overrides)
    first = prepare_dataset(cfg)
    (landing / "day2.csv").write_bytes(b"user_id;item_id;rating\n3;Th\xe9;5\n")
    second = prepare_dataset(cfg)
    assert second.ingested_files == ["day2.csv"] and second.processed_dir == first.processed_dir
    items = pl.read_parquet(Path(second.processed_dir) / "items.parquet")["item_id"].to_list()
    assert sorted(items) == ["Café", "Thé"]
    assert sorted(p.name for p in (tmp_path / "processed").iterdir() if p.name.endswith(".tmp")) == []


def test_a_utf8_file_read_as_latin1_is_named(tmp_path: Path) -> None:
    """A config's data.encoding kept for a log re-exported as UTF-8 turned every `é` into `Ã©`
    without a word: the ids are still read as asked, with a warning."""
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id\n1,café\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"is valid UTF-8 with non-ASCII text, yet read as iso8859-1"):
        ingest(path, tmp_path / "out", DataConfig(encoding="latin-1"))
    ascii_only = tmp_path / "plain.csv"
    ascii_only.write_text("user_id,item_id\n1,cafe\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pure ASCII reads the same either way: nothing to say
        ingest(ascii_only, tmp_path / "out2", DataConfig(encoding="latin-1"))


def test_a_file_written_to_while_it_is_copied_is_refused(tmp_path: Path) -> None:
    """The copy is read before ingest stamps the source, so a producer's write during the copy
    went unseen (ingest then read a half file as if whole): it stops ingest, nothing written."""
    import os
    import subprocess
    import sys

    from recsys.faults import STOP_ENV

    path = tmp_path / "BX-Book-Ratings.csv"
    path.write_bytes(BX)
    out = tmp_path / "out"
    run = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "ingest", str(path), "--out", str(out), "--encoding", "latin-1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, STOP_ENV: "encoding.copied"},
    )  # fmt: skip
    with stopped_at_its_point(run):
        with path.open("ab") as fh:
            fh.write(b'"276728";"0446520802";"7"\r\n')  # the producer goes on writing
    said, _ = run.communicate(timeout=60)
    assert run.returncode == 2, said
    assert f"error: {path}: changed while it was read" in said, said
    assert not out.exists() and _staging_left(out) == []
