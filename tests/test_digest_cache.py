"""The raw-file digest cache of the data step: a landing zone is not hashed again while its files'
size, mtime and inode stand still, and a file written around its hashing is always hashed again."""

from __future__ import annotations

import json
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


def test_a_scheduled_run_reads_its_digests_from_the_cache(tmp_path):
    """Both of the data step's hashings (the source fingerprint and the ledger check) go through the
    cache: a landing file whose stat stands still is not read again, so a change that keeps size,
    mtime and inode is the one thing the step does not see (hashed, it would refuse the file as
    changed after ingest)."""
    from pipelines.data import prepare_dataset, source_fingerprint
    from recsys.config import load_config

    log = _old_log(tmp_path)
    log.write_text("user_id,item_id\n" + "".join(f"u{i % 7},i{i % 5}\n" for i in range(60)))
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(log, ns=(an_hour_ago, an_hour_ago))
    cfg = load_config(None, [f'data.source="{log.parent}"', f'data.processed_dir="{tmp_path / "processed"}"',
                             "data.min_user_interactions=1", "data.min_item_interactions=1"])  # fmt: skip
    first = prepare_dataset(cfg)
    key = source_fingerprint(cfg.data)
    text = log.read_text()
    _rewrite_in_place(log, text.replace("u1,", "u2,", 1))
    assert source_fingerprint(cfg.data) == key
    again = prepare_dataset(cfg)
    assert again.reused and again.fingerprint == first.fingerprint


def test_runs_saving_at_once_keep_each_others_entries(tmp_path):
    """Two runs on one processed_dir (other data sets, or a source fingerprint taken outside the
    writer lock) each load the cache, hash their own files, then save: both entries must survive
    (a plain rewrite of what each had loaded kept the last saver's only). Real threads, each with
    its own cache object and its own lock handle, released together once all have loaded."""
    import threading

    logs = []
    for i in range(4):
        log = tmp_path / "landing" / f"day{i}.csv"
        log.parent.mkdir(exist_ok=True)
        log.write_text(f"user_id,item_id\n{i},2\n")
        logs.append(log)
    caches = [DigestCache(tmp_path / "processed") for _ in logs]  # all loaded before any saves
    ready = threading.Barrier(len(logs))

    def one_run(cache: DigestCache, log: Path) -> None:
        cache.digest(log)
        ready.wait()
        cache.save()

    threads = [threading.Thread(target=one_run, args=pair) for pair in zip(caches, logs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    saved = json.loads((tmp_path / "processed" / DIGEST_CACHE).read_text())
    assert sorted(saved) == sorted(str(log.resolve()) for log in logs)
    assert all(saved[str(log.resolve())]["digest"] == file_digest(log) for log in logs)
    assert not list((tmp_path / "processed").glob("*.tmp"))  # no temp file left beside it


def test_a_save_keeps_the_later_hashing_and_removes_a_killed_savers_temp(tmp_path):
    log = _old_log(tmp_path)
    early, late = DigestCache(tmp_path / "processed"), DigestCache(tmp_path / "processed")
    early.digest(log)
    late.digest(log)
    orphan = tmp_path / "processed" / f".{DIGEST_CACHE}.k1lled0x.tmp"  # a saver killed with -9
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_text('{"half')
    late.save()
    early.save()  # saved last, hashed first: the file keeps the later hashing
    saved = json.loads((tmp_path / "processed" / DIGEST_CACHE).read_text())
    assert saved[str(log.resolve())]["hashed_at"] == late.entries[str(log.resolve())]["hashed_at"]
    assert not orphan.exists()


def test_a_save_drops_the_entries_of_files_deleted_more_than_a_day_after_their_hashing(tmp_path):
    """The cache kept an entry for every landing file ever hashed: a landing zone whose old days
    are deleted grew `.digests.json` (read and rewritten whole by every run) for ever. A save, under
    the cache's lock, drops entries of files gone and hashed over a day ago; a file gone since a
    recent hashing (renamed into place, a share briefly away) and every present file keep theirs."""
    log = _old_log(tmp_path)
    old_gone, new_gone = tmp_path / "landing" / "day0.csv", tmp_path / "landing" / "moving.csv"
    for path in (old_gone, new_gone):
        path.write_text("user_id,item_id\n5,6\n")
    cache = DigestCache(tmp_path / "processed")
    for path in (log, old_gone, new_gone):
        cache.digest(path)
    two_days_ago = time.time_ns() - 2 * 24 * 3600 * 10**9
    for path in (log, old_gone):  # hashed two days ago
        cache.entries[str(path.resolve())]["hashed_at"] = two_days_ago
    keys = {path: str(path.resolve()) for path in (log, old_gone, new_gone)}
    old_gone.unlink()
    new_gone.unlink()
    cache.save()
    saved = json.loads((tmp_path / "processed" / DIGEST_CACHE).read_text())
    assert sorted(saved) == sorted([keys[log], keys[new_gone]])
