"""Last.fm 1K / 360K: the artist and track MusicBrainz ids are empty on many rows while the names
beside them are always written. The header ingest suggests for the headerless files names the
artist name the item, and wherever an id column with empty ids is read as the item, the rows are
quarantined as `missing_item` and the name column that would read them is named."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from recsys.cli import app

runner = CliRunner()

# usersha1-artmbid-artname-plays.tsv as published: no header, tabs, an empty mbid on some rows.
LASTFM_360K = (
    "00000c289a1829a808ac09c00daf10bc3c4e223b\t3bd73256-3905-4f3a-97e2-8b341527f805\tbetty blowtorch\t2137\n"
    "00000c289a1829a808ac09c00daf10bc3c4e223b\tf2fb0ff0-5679-42ec-a55c-15109ce6e320\tdie Ärzte\t1099\n"
    "00000c289a1829a808ac09c00daf10bc3c4e223b\t\tmelissa etheridge\t897\n"
    "00001411dc427966b17297bf4d69e7e193135d89\t\tthe most serene republic\t512\n"
)


def _ingest(source: Path, out: Path, *args: str):
    return runner.invoke(app, ["ingest", str(source), "--out", str(out), *args])


def test_the_suggested_360k_header_names_the_artist_name_the_item(tmp_path: Path) -> None:
    path = tmp_path / "usersha1-artmbid-artname-plays.tsv"
    path.write_text(LASTFM_360K)
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    # The play counts are named `plays` (a count, summed), not `rating`, which they were named before.
    assert "sed -i '1i user_id\\tmbid\\titem_id\\tplays'" in line, line
    assert "--header user_id,mbid,item_id,plays" in line, line
    assert "the item is column 3 (a name), not the MusicBrainz id in column 2" in line, line
    result = _ingest(path, tmp_path / "out", "--header", "user_id,mbid,item_id,plays")  # doing what it says
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["rows_in"], manifest["rows_accepted"], manifest["items"]) == (4, 4, 4)
    assert manifest["batches"][0]["columns"]["weight"] == "plays", manifest["batches"][0]["columns"]


def test_empty_mbids_read_as_the_item_are_quarantined_and_the_name_column_named(tmp_path: Path) -> None:
    path = tmp_path / "plays.tsv"
    path.write_text("user_id\tartist_mbid\tartist_name\tplays\n" + LASTFM_360K)
    refused = _ingest(path, tmp_path / "out")  # no item column by name: the suggestion is the name
    assert refused.exit_code == 2
    assert refused.output.strip().endswith("name it with --item-col artist_name"), refused.output
    out = tmp_path / "out"
    result = _ingest(path, out, "--item-col", "artist_mbid")
    assert result.exit_code == 0, result.output
    quarantine = pl.read_parquet(out / "quarantine" / "batch=000001.parquet")
    assert quarantine.select("source_row", "reason").rows() == [(3, "missing_item"), (4, "missing_item")]
    text = " ".join(result.output.split())
    assert "2 of 4 rows (50.0%) have no item id in column 'artist_mbid'" in text, text
    assert "'artist_name' names the same items: read it as the item with --item-col artist_name" in text


def test_a_1k_header_whose_track_ids_are_all_empty_names_the_track_name(tmp_path: Path) -> None:
    """The README's 1K header read `track_id` as the item (an alias of item ids), empty on every
    row here: the error said only 'check that column'."""
    path = tmp_path / "userid-timestamp-artid-artname-traid-traname.tsv"
    path.write_text(
        "user_id\ttimestamp\tartist_id\tartist_name\ttrack_id\ttrack_name\n"
        "user_000001\t2009-05-04T23:08:57Z\tf1b1cf71-bd35-4e99-8624-24a6e15f133a\tDeep Dish\t\tFuck Me Im Famous\n"
        "user_000001\t2009-05-04T13:52:04Z\t\tUnderworld\t\tBoy, Boy, Boy (Switch Remix)\n"
    )
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "no row passed validation (missing_item: 2" in line
    assert line.endswith("'track_name' names the same items: read it as the item with --item-col track_name"), line
