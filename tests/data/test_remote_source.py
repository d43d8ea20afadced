"""fsspec URLs in data.source: file:// gives exactly what the plain path gives; other protocols
(memory:// stands in for object storage) are listed and versioned from metadata alone."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import numpy as np
import polars as pl
import pytest

from pipelines.data import load_dataset, prepare_dataset, source_fingerprint
from recsys.config import load_config
from recsys.data.ingest import ingest, read_canonical
from recsys.data.readers import scan_source
from recsys.data.remote import as_url
from recsys.errors import DataError


def _partitioned(root: Path) -> Path:
    """Hive-partitioned Parquet (part=0/, part=1/) plus the marker files Spark leaves behind."""
    rng = np.random.default_rng(0)
    n = 400
    frame = pl.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, 40, n)],
            "item_id": [f"i{i}" for i in rng.integers(0, 60, n)],
            "rating": rng.integers(1, 6, n).astype(float),
            "timestamp": 1_700_000_000 + np.arange(n),
        }
    )
    for part in (0, 1):
        folder = root / f"part={part}"
        folder.mkdir(parents=True)
        frame[part * 200 : (part + 1) * 200].write_parquet(folder / "data-0.parquet")
    (root / "_SUCCESS").write_text("")
    return root


def _cfg(source: str, processed: Path):
    return load_config(None, [f'data.source="{source}"', f'data.processed_dir="{processed}"'])


def test_as_url_recognises_urls_and_repairs_pathlib_mangling() -> None:
    assert as_url("file:///data/x") == "file:///data/x"
    assert as_url(Path("file:///data/x")) == "file:///data/x"  # Path collapsed it to file:/data/x
    assert as_url(Path("s3://bucket/key")) == "s3://bucket/key"
    assert as_url("data/x.csv") is None and as_url(Path("data/x.csv")) is None
    assert as_url(Path("C:/data/x")) is None


def test_file_url_through_prepare_dataset_equals_the_plain_path(tmp_path: Path) -> None:
    root = _partitioned(tmp_path / "events")
    by_path = prepare_dataset(_cfg(str(root), tmp_path / "p1"))
    by_url = prepare_dataset(_cfg(root.as_uri(), tmp_path / "p2"))
    assert by_url.fingerprint == by_path.fingerprint
    assert by_url.source_fingerprint == by_path.source_fingerprint
    assert (
        by_url.ingested_files == by_path.ingested_files == ["part=0/data-0.parquet", "part=1/data-0.parquet"]
    )
    a, b = load_dataset(by_path.processed_dir), load_dataset(by_url.processed_dir)
    assert a.user_ids.tolist() == b.user_ids.tolist() and a.item_ids.tolist() == b.item_ids.tolist()
    assert a.interactions.equals(b.interactions)
    assert prepare_dataset(_cfg(root.as_uri(), tmp_path / "p2")).reused


def test_file_url_ingest_of_a_directory_and_a_single_file(tmp_path: Path) -> None:
    root = _partitioned(tmp_path / "events")
    plain = ingest(root, tmp_path / "a", load_config(None, []).data)
    url = ingest(root.as_uri(), tmp_path / "b", load_config(None, []).data)
    mangled = ingest(Path(root.as_uri()), tmp_path / "c", load_config(None, []).data)  # as the CLI passes it
    assert plain.fingerprint == url.fingerprint == mangled.fingerprint
    assert (url.rows_in, url.interactions) == (plain.rows_in, plain.interactions) == (400, plain.interactions)
    one = root / "part=1" / "data-0.parquet"
    assert ingest(one.as_uri(), tmp_path / "d", load_config(None, []).data).rows_in == 200


@pytest.mark.parametrize(
    ("url", "needle"),
    [("bogus-proto://somewhere/x", "cannot open URL"), ("file:///no/such/dir/here", "no such file")],
)
def test_bad_url_is_one_line_data_error_naming_it(tmp_path: Path, url: str, needle: str) -> None:
    for call in (lambda: scan_source(url), lambda: prepare_dataset(_cfg(url, tmp_path / "p"))):
        with pytest.raises(DataError) as info:
            call()
        message = str(info.value)
        assert url in message and needle in message and "\n" not in message


@pytest.fixture
def memory_root():
    """A fresh directory on fsspec's in-memory filesystem (a protocol that is not local)."""
    fs = fsspec.filesystem("memory")
    root = f"/events-{uuid.uuid4().hex}"
    yield fs, root
    fs.rm(root, recursive=True)


def _put(fs, path: str, frame: pl.DataFrame) -> None:
    with fs.open(path, "wb") as fh:
        frame.write_parquet(fh)


def test_remote_fingerprint_comes_from_metadata_not_bytes(memory_root, tmp_path, monkeypatch) -> None:
    fs, root = memory_root
    _put(fs, f"{root}/part=0/a.parquet", pl.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"]}))
    cfg = _cfg(f"memory://{root}", tmp_path / "p")
    before = source_fingerprint(cfg.data)

    def no_reading(*args, **kwargs):
        raise AssertionError("the fingerprint of a remote source must not open files")

    with monkeypatch.context() as patch:
        patch.setattr(type(fs), "_open", no_reading)
        assert source_fingerprint(cfg.data) == before
    _put(fs, f"{root}/part=0/a.parquet", pl.DataFrame({"user_id": ["u1", "u2", "u3"], "item_id": ["i"] * 3}))
    assert source_fingerprint(cfg.data) != before  # new size -> new version


def test_remote_parquet_landing_zone_ingests_only_new_files(memory_root, tmp_path) -> None:
    fs, root = memory_root
    _put(fs, f"{root}/part=0/a.parquet", pl.DataFrame({"user_id": ["u1", None], "item_id": ["i1", "i2"]}))
    cfg = _cfg(f"memory://{root}", tmp_path / "p")
    first = prepare_dataset(cfg)
    assert first.ingested_files == ["part=0/a.parquet"] and first.report["rows_quarantined"] == 1
    assert prepare_dataset(cfg).reused
    _put(fs, f"{root}/part=1/b.parquet", pl.DataFrame({"user_id": ["u9"], "item_id": ["i1"]}))
    second = prepare_dataset(cfg)
    assert second.ingested_files == ["part=1/b.parquet"]
    data = load_dataset(second.processed_dir)
    assert data.user_ids.tolist() == ["u1", "u9"] and data.interactions.height == 2


def test_remote_directory_scan_keeps_files_and_rows(memory_root) -> None:
    fs, root = memory_root
    _put(fs, f"{root}/part=0/a.parquet", pl.DataFrame({"user_id": ["u1", None], "item_id": ["i1", "i2"]}))
    _put(fs, f"{root}/part=1/b.parquet", pl.DataFrame({"user_id": [None], "item_id": ["i3"]}))
    raw = scan_source(f"memory://{root}")
    frame = raw.frame.collect()
    assert frame.select(pl.col("source_file").cast(pl.String), "source_row").rows() == [
        ("part=0/a.parquet", 1),
        ("part=0/a.parquet", 2),
        ("part=1/b.parquet", 1),
    ]


def test_remote_text_is_refused_clearly(memory_root) -> None:
    fs, root = memory_root
    with fs.open(f"{root}/log.csv", "wb") as fh:
        fh.write(b"user_id,item_id\nu,i\n")
    with pytest.raises(DataError, match="read as Parquet only"):
        scan_source(f"memory://{root}")


def test_staging_directories_are_not_read_locally_or_remotely(memory_root, tmp_path) -> None:
    # Spark's `_temporary/` holds the part files of an unfinished write, Delta Lake's `_delta_log/`
    # JSON commits: rows from either would be duplicates or not interactions at all.
    fs, root = memory_root
    done, partial = (
        pl.DataFrame({"user_id": ["u1"], "item_id": ["i1"]}),
        pl.DataFrame({"user_id": ["u9"], "item_id": ["i9"]}),
    )
    local = tmp_path / "table"
    for name, frame in [
        ("part-0.parquet", done),
        ("_temporary/0/part-0.parquet", partial),
        (".spark-staging/p.parquet", partial),
    ]:
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(local / name)
        _put(fs, f"{root}/{name}", frame)
    (local / "_delta_log").mkdir()
    # A Delta log's commit adds the table's file (a folder with a log reads the files it holds: test_producer_layouts).
    (local / "_delta_log" / "00000000000000000000.json").write_text(
        '{"commitInfo": {}}\n{"add": {"path": "part-0.parquet", "partitionValues": {}, "dataChange": true}}\n'
    )
    for source in (local, f"memory://{root}"):
        accepted, _, rows_in = read_canonical(source)
        assert rows_in == 1 and accepted["user_id"].to_list() == ["u1"], source
