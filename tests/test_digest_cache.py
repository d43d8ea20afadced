"""The raw-file digest cache of the data step: a landing zone is not hashed again while its files'
size, mtime and inode stand still, and a file written around its hashing is always hashed again."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipelines.data import DIGEST_CACHE, DigestCache, file_digest, source_fingerprint
from recsys.config import DataConfig


def _rewrite_in_place(path: Path, text: str) -> None:
    """Same size, same inode, same mtime, other bytes: only a re-read can tell."""
    st = path.stat()
    with path.open("r+") as fh:
        fh.write(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _old_log(tmp_path: Path) -> Path:
    log = tmp_path / "landing" / "day1.csv"
    log.parent.mkdir()
    log.write_text("user_id,item_id\n1,2\n")
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(log, ns=(an_hour_ago, an_hour_ago))
    return log


def test_an_unchanged_file_is_not_read_again(tmp_path):
    log = _old_log(tmp_path)
    first = DigestCache(tmp_path / "processed")
    digest = first.digest(log)
    first.save()
    assert (tmp_path / "processed" / DIGEST_CACHE).is_file()
    _rewrite_in_place(log, "user_id,item_id\n1,3\n")
    # a new run (new cache object, from disk) takes the recorded digest: it did not read the file
    assert DigestCache(tmp_path / "processed").digest(log) == digest != file_digest(log)
    cfg = DataConfig(source=str(log.parent), processed_dir=str(tmp_path / "processed"))
    assert source_fingerprint(cfg) == source_fingerprint(cfg)


def test_a_touched_or_grown_file_is_hashed_again(tmp_path):
    log = _old_log(tmp_path)
    cache = DigestCache(tmp_path / "processed")
    before = cache.digest(log)
    log.write_text("user_id,item_id\n1,2\n3,4\n")
    assert cache.digest(log) == file_digest(log) != before


def test_a_file_written_just_before_its_hashing_is_hashed_again(tmp_path):
    """git's racily-clean case: on a coarse clock a write right after the hashing keeps the mtime."""
    log = tmp_path / "fresh.csv"
    log.write_text("user_id,item_id\n1,2\n")
    cache = DigestCache(tmp_path / "processed")
    cache.digest(log)
    _rewrite_in_place(log, "user_id,item_id\n1,3\n")
    assert cache.digest(log) == file_digest(log)


def test_a_corrupt_cache_is_ignored(tmp_path):
    log = _old_log(tmp_path)
    (tmp_path / "processed").mkdir()
    (tmp_path / "processed" / DIGEST_CACHE).write_text("{not json")
    assert DigestCache(tmp_path / "processed").digest(log) == file_digest(log)
