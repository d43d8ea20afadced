"""A processed directory read by an older recsys is re-read once by the running one (issue: the
ingest cache keyed on file digests and settings only, so reader fixes never reached a landing zone
ingested before them).

The older directory is made by ingesting with this code and then taking out what an older recsys
did not write (the batches' `reader_version`) and giving its vocab an order a fresh ingest would
not give (plus an id the files no longer yield), so the tests can tell a kept vocab from a rebuilt
one. Kills and the concurrent start are real subprocesses, as in test_crash_safety.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import polars as pl
import pytest
from stopped import stopped_at_its_point

from pipelines.data import dataset_dir, prepare_dataset, source_fingerprint
from recsys.config import load_config
from recsys.data import storage
from recsys.data.readers import READER_VERSION
from recsys.errors import RecsysWarning


def _log(path: Path, users: range, start: int) -> None:
    rows = [f"u{u},i{(u + k) % 17},{1 + (u + k) % 5},{start + u * 4 + k}" for u in users for k in range(4)]
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")


def _overrides(tmp_path: Path) -> list[str]:
    return [f"data.source={tmp_path / 'landing'}", f"data.processed_dir={tmp_path / 'processed'}"]


def _older_directory(tmp_path: Path) -> tuple[Path, list[str]]:
    """A landing zone of two days ingested by "an older recsys": no reader version in its batches,
    a vocab in reversed order with one id ("u-gone") its files no longer give. Returns the
    directory and its user ids by index."""
    landing = tmp_path / "landing"
    landing.mkdir()
    _log(landing / "day1.csv", range(0, 12), 1_700_000_000)
    _log(landing / "day2.csv", range(8, 20), 1_700_500_000)
    cfg = load_config(None, _overrides(tmp_path))
    prepare_dataset(cfg)
    out = dataset_dir(cfg.data)
    manifest = json.loads((out / "manifest.json").read_text())
    for batch in manifest["batches"]:
        del batch["reader_version"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    users = pl.read_parquet(out / "users.parquet")
    ids = ["u-gone", *reversed(users.get_column("user_id").to_list())]
    pl.DataFrame({"user_id": ids, "user_idx": list(range(len(ids)))}, schema=users.schema).write_parquet(
        out / "users.parquet"
    )
    return out, ids


def _reread_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RecsysWarning) and "re-read" in str(w.message)]


def test_a_directory_read_before_the_reader_version_is_re_read_once_keeping_its_vocab(tmp_path: Path) -> None:
    out, ids = _older_directory(tmp_path)
    before = json.loads((out / "manifest.json").read_text())
    ledger = json.loads((out / "sources.json").read_text())
    cfg = load_config(None, _overrides(tmp_path))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = prepare_dataset(cfg)
    [line] = _reread_lines(caught)
    assert "reader version 0" in line and "2 raw file(s)" in line and "keeping its user and item indices" in line
    manifest = json.loads((out / "manifest.json").read_text())
    assert [b["reader_version"] for b in manifest["batches"]] == [READER_VERSION, READER_VERSION]
    assert [Path(b["source"]).name for b in manifest["batches"]] == ["day1.csv", "day2.csv"]
    assert {b["ingest_id"] for b in manifest["batches"]}.isdisjoint(b["ingest_id"] for b in before["batches"])
    assert manifest["rows_in"] == before["rows_in"] == 24 * 4
    assert json.loads((out / "sources.json").read_text()) == ledger  # the same files, each once
    data = storage.load_processed(out)
    assert list(data.user_ids) == ids  # every index where it was, the id no file gives kept too
    assert result.fingerprint == manifest["fingerprint"] and not result.reused

    with warnings.catch_warnings(record=True) as caught:  # the next run: nothing to re-read
        warnings.simplefilter("always")
        again = prepare_dataset(cfg)
    assert _reread_lines(caught) == [] and again.reused and again.fingerprint == result.fingerprint
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_the_cache_key_moves_with_the_reader_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached ingest result of the older readers is not reused (the flow's ingest task is keyed
    on source_fingerprint), so the re-read is reached at all."""
    import pipelines.data

    landing = tmp_path / "landing"
    landing.mkdir()
    _log(landing / "day1.csv", range(0, 5), 1_700_000_000)
    cfg = load_config(None, _overrides(tmp_path))
    now = source_fingerprint(cfg.data)
    monkeypatch.setattr(pipelines.data, "READER_VERSION", READER_VERSION - 1)
    assert source_fingerprint(cfg.data) != now


def test_a_landing_zone_whose_files_are_gone_is_kept_with_one_line(tmp_path: Path) -> None:
    out, ids = _older_directory(tmp_path)
    (tmp_path / "landing" / "day1.csv").unlink()
    with pytest.warns(RecsysWarning, match=r"1 of its raw files are gone .*day1\.csv.*kept as read then"):
        prepare_dataset(load_config(None, _overrides(tmp_path)))
    assert list(storage.load_processed(out).user_ids) == ids


SCRIPT = """
    import sys, warnings
    from recsys.config import load_config
    from pipelines.data import prepare_dataset

    warnings.simplefilter("always")
    warnings.showwarning = lambda message, *_: print("warning:", message, flush=True)
    prepare_dataset(load_config(None, sys.argv[1:]))
"""


def _start(tmp_path: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), *_overrides(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", **env},
    )  # fmt: skip


@pytest.mark.parametrize("point", ["ingest.staged:2", "storage.between_renames:3"])
def test_a_kill_mid_re_read_leaves_the_older_directory_or_the_new_one_whole(tmp_path: Path, point: str) -> None:
    """Killed once the first file is re-read (the older directory untouched, still loadable), or
    between the renames of the swap (the next start completes it): the next run ends with every
    batch re-read once and the vocab as it was."""
    out, ids = _older_directory(tmp_path)
    killed = _start(tmp_path, RECSYS_KILL_AT=point)
    output, _ = killed.communicate(timeout=120)
    assert killed.returncode == -9, output[-2000:]

    if point.startswith("ingest.staged"):  # the older directory is in place and usable as it was
        data = storage.load_processed(out)
        assert list(data.user_ids) == ids
        assert all("reader_version" not in b for b in data.manifest["batches"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_dataset(load_config(None, _overrides(tmp_path)))
    manifest = storage.read_manifest(out)
    assert [b["reader_version"] for b in manifest["batches"]] == [READER_VERSION, READER_VERSION]
    assert manifest["rows_in"] == 24 * 4
    assert list(storage.load_processed(out).user_ids) == ids
    assert len(_reread_lines(caught)) == (1 if point.startswith("ingest.staged") else 0)
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_two_runs_starting_together_after_an_upgrade_re_read_once(tmp_path: Path) -> None:
    """The first run holds the directory's writer lock through its re-read (frozen here with its
    first file staged); the second waits, then finds the version current and reads nothing."""
    out, ids = _older_directory(tmp_path)
    first = _start(tmp_path, RECSYS_STOP_AT="ingest.staged:2")
    with stopped_at_its_point(first):
        second = _start(tmp_path)
    outputs = [run.communicate(timeout=120)[0] for run in (first, second)]
    assert [run.returncode for run in (first, second)] == [0, 0], outputs
    assert sum(output.count("re-read its 2 raw file(s)") for output in outputs) == 1, outputs
    manifest = storage.read_manifest(out)
    assert [b["reader_version"] for b in manifest["batches"]] == [READER_VERSION, READER_VERSION]
    assert list(storage.load_processed(out).user_ids) == ids


def test_a_single_file_source_read_by_an_older_recsys_is_re_read_keeping_its_vocab(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    _log(log, range(0, 15), 1_700_000_000)
    overrides = [f"data.source={log}", f"data.processed_dir={tmp_path / 'processed'}"]
    cfg = load_config(None, overrides)
    prepare_dataset(cfg)
    out = dataset_dir(cfg.data)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["batches"][0]["reader_version"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    users = pl.read_parquet(out / "users.parquet")
    ids = list(reversed(users.get_column("user_id").to_list()))
    pl.DataFrame({"user_id": ids, "user_idx": list(range(len(ids)))}, schema=users.schema).write_parquet(
        out / "users.parquet"
    )
    with pytest.warns(RecsysWarning, match=r"re-read its 1 raw file\(s\)"):
        assert prepare_dataset(cfg).ingested_files == ["events.csv"]
    assert [b["reader_version"] for b in storage.read_manifest(out)["batches"]] == [READER_VERSION]
    assert list(storage.load_processed(out).user_ids) == ids


def test_a_processed_source_read_by_an_older_recsys_is_used_with_a_warning(tmp_path: Path) -> None:
    """A processed directory given as data.source holds no record of raw files to read again: it
    is used as it is, and the run says its rows came from older readers."""
    from recsys.data.ingest import ingest

    log = tmp_path / "events.csv"
    _log(log, range(0, 6), 1_700_000_000)
    out = tmp_path / "mine"
    ingest(log, out, load_config(None, []).data)
    cfg = load_config(None, [f"data.source={out}", f"data.processed_dir={tmp_path / 'processed'}"])
    assert prepare_dataset(cfg).warnings == []
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["batches"][0]["reader_version"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    [line] = prepare_dataset(cfg).warnings
    assert f"{out} was read by an older recsys (reader version 0, now {READER_VERSION})" in line
    assert f"recsys ingest SOURCE --out {out}" in line


def test_a_re_read_these_readers_refuse_keeps_the_directory_and_is_not_tried_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file the older readers took and these refuse (Parquet under `dt=latest/` with no time of
    its own): the directory stays as read then, the warning names the error, and the next runs
    say so without reading the landing zone again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import recsys.data.ingest

    landing = tmp_path / "landing"
    (landing / "latest").mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["a", "b"], "item_id": ["x", "y"]}), landing / "latest" / "part-0.parquet")
    cfg = load_config(None, [*_overrides(tmp_path), "data.min_user_interactions=1", "data.min_item_interactions=1"])
    prepare_dataset(cfg)
    out = dataset_dir(cfg.data)
    (landing / "latest").rename(landing / "dt=latest")  # as an older recsys's run saw it: the folder not read
    (out / "sources.json").write_text(json.dumps({"dt=latest/part-0.parquet": json.loads(
        (out / "sources.json").read_text())["latest/part-0.parquet"]}))  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["batches"][0]["reader_version"]
    (out / "manifest.json").write_text(json.dumps(manifest))

    with pytest.warns(RecsysWarning, match=r"failed, so it is kept as read then .*dt=latest names no day"):
        kept = prepare_dataset(cfg)
    assert kept.reused and storage.load_processed(out).n_users == 2

    def no_ingest(*args, **kwargs):
        raise AssertionError("the landing zone was read again")

    monkeypatch.setattr(recsys.data.ingest, "ingest", no_ingest)
    with pytest.warns(RecsysWarning, match=r"failed on an earlier run \(.*dt=latest names no day.*\), so it is kept"):
        assert prepare_dataset(cfg).reused


def test_a_directory_of_a_newer_recsys_is_re_read_by_the_one_running(tmp_path: Path) -> None:
    """An upgrade rolled back: the version differs, so the rows are re-read with the readers that run."""
    out, ids = _older_directory(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    for batch in manifest["batches"]:
        batch["reader_version"] = READER_VERSION + 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(RecsysWarning, match=rf"read by another recsys \(reader version {READER_VERSION + 1}, now {READER_VERSION}\); re-read"):
        prepare_dataset(load_config(None, _overrides(tmp_path)))
    assert {b["reader_version"] for b in storage.read_manifest(out)["batches"]} == {READER_VERSION}
    assert list(storage.load_processed(out).user_ids) == ids
