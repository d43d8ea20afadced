"""fetch(): download over HTTP (a local server), checksum, cache reuse, offline zips and folders."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from recsys.data import fetch as fetch_module
from recsys.data.fetch import fetch
from recsys.errors import DataError

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"


@pytest.fixture
def small_zip(tmp_path) -> Path:
    """A zip shaped like GroupLens' ml-100k.zip, with three ratings."""
    path = tmp_path / "build" / "ml-100k.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-100k/u.data", U_DATA)
        zf.writestr("ml-100k/README", "test archive")
    return path


@pytest.fixture
def checksum_of(monkeypatch, small_zip):
    """Point the checksum table at the test archive (as a mirror with its own zip would)."""
    digest = hashlib.sha256(small_zip.read_bytes()).hexdigest()
    monkeypatch.setitem(fetch_module.SHA256, "ml-100k.zip", digest)
    return digest


@pytest.fixture
def server(small_zip):
    """Serve small_zip's folder on 127.0.0.1 (free port); record request paths."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(small_zip.parent), **kwargs)

        def do_GET(self):  # noqa: N802 (http.server API)
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep test output quiet
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_verifies_extracts_and_then_reuses_the_cache(tmp_path, server, checksum_of):
    base_url, requests = server
    raw = tmp_path / "raw"
    ratings = fetch("movielens-100k", raw, base_url=base_url)
    assert ratings == raw / "ml-100k" / "u.data"
    assert ratings.read_text() == U_DATA
    assert hashlib.sha256((raw / "ml-100k.zip").read_bytes()).hexdigest() == checksum_of
    assert not list(raw.glob("*.part")) and not list(raw.glob(".ml-100k*"))
    assert requests == ["/ml-100k.zip"]

    assert fetch("movielens-100k", raw, base_url=base_url) == ratings
    assert requests == ["/ml-100k.zip"]  # served from the cache, no second request

    # the extracted folder gone but the verified archive cached: re-extract without downloading
    (ratings).unlink()
    assert fetch("movielens-100k", raw, base_url=base_url).read_text() == U_DATA
    assert requests == ["/ml-100k.zip"]


def test_two_fetches_of_one_set_download_it_once(tmp_path, server, checksum_of, monkeypatch):
    """Both fetchers once downloaded into the one .part file and extracted over each other."""
    import time

    base_url, requests = server
    real_download = fetch_module._download

    def slow_download(*args, **kwargs):
        time.sleep(0.5)  # the second fetcher arrives while the first downloads
        return real_download(*args, **kwargs)

    monkeypatch.setattr(fetch_module, "_download", slow_download)
    raw, found = tmp_path / "raw", []
    fetchers = [threading.Thread(target=lambda: found.append(fetch("movielens-100k", raw, base_url=base_url)))
                for _ in range(2)]  # fmt: skip
    for thread in fetchers:
        thread.start()
        time.sleep(0.1)
    for thread in fetchers:
        thread.join()
    assert requests == ["/ml-100k.zip"] and found == [raw / "ml-100k" / "u.data"] * 2
    assert found[0].read_text() == U_DATA


def test_a_fetch_waiting_for_another_says_so(tmp_path, small_zip, checksum_of):
    """The lock's wait (another fetcher's download: minutes for MovieLens 20M) was silent."""
    import io

    from filelock import FileLock
    from rich.console import Console

    raw, said = tmp_path / "raw", io.StringIO()
    raw.mkdir()
    held = FileLock(str(raw / ".fetch.ml-100k.lock"))
    held.acquire()
    waiter = threading.Thread(
        target=lambda: fetch("movielens-100k", raw, offline=small_zip, console=Console(file=said))
    )
    waiter.start()
    for _ in range(500):  # until the waiter has said it (at most 5 s)
        if said.getvalue():
            break
        threading.Event().wait(0.01)
    held.release()
    waiter.join()
    assert said.getvalue() == "waiting for another fetch of movielens-100k to finish\n"
    assert (raw / "ml-100k" / "u.data").read_text() == U_DATA


def test_checksum_mismatch_is_a_clear_error_and_caches_nothing(tmp_path, server, monkeypatch, checksum_of):
    base_url, _ = server
    monkeypatch.setitem(fetch_module.SHA256, "ml-100k.zip", "0" * 64)
    raw = tmp_path / "raw"
    with pytest.raises(DataError, match="checksum mismatch") as err:
        fetch("movielens-100k", raw, base_url=base_url)
    assert "0" * 64 in str(err.value) and checksum_of in str(err.value)
    assert [p.name for p in raw.iterdir()] == [".fetch.ml-100k.lock"]  # the fetchers' lock, no data


def test_unreachable_server_is_a_data_error_suggesting_offline(tmp_path, checksum_of):
    with pytest.raises(DataError, match="--offline"):
        fetch("movielens-100k", tmp_path / "raw", base_url="http://127.0.0.1:9/")  # discard port: refused
    assert [p.name for p in (tmp_path / "raw").iterdir()] == [".fetch.ml-100k.lock"]  # the lock, no data


def test_missing_file_on_the_server_is_a_data_error(tmp_path, server, checksum_of):
    base_url, _ = server
    with pytest.raises(DataError, match="ml-1m.zip"):
        fetch("movielens-1m", tmp_path / "raw", base_url=base_url)


def test_offline_zip_is_verified_and_extracted(tmp_path, small_zip, checksum_of):
    ratings = fetch("movielens-100k", tmp_path / "raw", offline=small_zip)
    assert ratings == tmp_path / "raw" / "ml-100k" / "u.data" and ratings.read_text() == U_DATA


def test_a_killed_fetchers_staging_is_removed_by_the_next_fetch(tmp_path, small_zip, checksum_of):
    """kill -9 during the unzip left `.ml-100k.<pid>.<hex>.tmp` (the whole archive unzipped) and
    during the download `ml-100k.zip.part`, for ever: nothing removed them."""
    raw = tmp_path / "raw"
    staging = raw / ".ml-100k.4242.abcd1234.tmp"
    (staging / "ml-100k").mkdir(parents=True)
    (staging / "ml-100k" / "u.data").write_text(U_DATA)
    (raw / "ml-100k.zip.part").write_bytes(b"half")
    (raw / ".ml-1m.4242.abcd1234.tmp").mkdir()  # another set's: not this fetch's to judge
    fetch("movielens-100k", raw, offline=small_zip)
    assert sorted(p.name for p in raw.iterdir()) == [".fetch.ml-100k.lock", ".ml-1m.4242.abcd1234.tmp", "ml-100k"]
    # killed while an offline folder's ratings file was linked or copied into the cache
    copied = raw / "ml-100k" / ".u.data.4242.abcd1234.tmp"
    copied.write_text(U_DATA)
    fetch("movielens-100k", raw)  # the cache answers, and the temp copy is gone
    assert not copied.exists()


def test_offline_zip_with_the_wrong_checksum_is_refused(tmp_path, small_zip):
    with pytest.raises(DataError, match="checksum mismatch") as caught:  # the real ml-100k checksum
        fetch("movielens-100k", tmp_path / "raw", offline=small_zip)
    assert str(caught.value).endswith("not the published ml-100k.zip (a partial or repackaged copy?): download it "
                                      "again, or pass its unzipped folder to --offline")  # fmt: skip
    assert not (tmp_path / "raw" / "ml-100k").exists()


def test_offline_folder_lands_in_the_cache_so_later_fetches_need_no_network(tmp_path):
    folder = tmp_path / "downloads" / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "u.data").write_text(U_DATA)
    cached = tmp_path / "raw" / "ml-100k" / "u.data"
    assert fetch("movielens-100k", tmp_path / "raw", offline=folder) == cached
    assert cached.read_text() == U_DATA
    assert fetch("movielens-100k", tmp_path / "raw", offline=folder.parent) == cached
    # later, without --offline and without a network (an unreachable mirror): the cache answers
    assert fetch("movielens-100k", tmp_path / "raw", base_url="http://127.0.0.1:9/") == cached
    with pytest.raises(DataError, match="no ratings.dat"):
        fetch("movielens-1m", tmp_path / "raw", offline=folder)


def test_offline_path_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        fetch("movielens-100k", tmp_path / "raw", offline=tmp_path / "nope.zip")


def test_unknown_dataset_names_the_choices(tmp_path):
    with pytest.raises(DataError, match="movielens-100k"):
        fetch("movielens-1b", tmp_path)  # type: ignore[arg-type]


def test_cli_fetch_prints_the_ratings_path_and_errors_in_one_line(tmp_path, small_zip, checksum_of):
    from typer.testing import CliRunner

    from recsys.cli import app

    raw = tmp_path / "raw"
    ok = CliRunner().invoke(
        app, ["data", "fetch", "movielens-100k", "--raw-dir", str(raw), "--offline", str(small_zip)]
    )
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip() == str(raw / "ml-100k" / "u.data")
    bad = CliRunner().invoke(
        app, ["data", "fetch", "movielens-100k", "--offline", str(tmp_path / "missing.zip")]
    )
    assert bad.exit_code == 2 and "does not exist" in bad.output and "Traceback" not in bad.output


def test_offline_takes_the_sets_interaction_file_alone_and_names_the_way_for_another_file(tmp_path):
    """A user holding only HetRec's user_artists.dat (copied out of the zip) got "--offline expects
    a .zip archive or an extracted folder". The set's own interaction file is cached as the folder
    form caches it; any other file is refused with the commands that read it without a fetch."""
    plays = tmp_path / "downloads" / "user_artists.dat"
    plays.parent.mkdir()
    plays.write_text("userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n")
    cached = fetch("lastfm-2k", tmp_path / "raw", offline=plays)
    assert cached.name == "user_artists.dat" and cached.read_text() == plays.read_text()
    assert fetch("lastfm-2k", tmp_path / "raw", base_url="http://127.0.0.1:9/") == cached  # the cache answers
    other = tmp_path / "downloads" / "my-plays.tsv"
    other.write_text(plays.read_text())
    with pytest.raises(DataError, match=f"recsys ingest {other} .or recsys run --set data.source={other}.") as caught:
        fetch("lastfm-2k", tmp_path / "raw", offline=other)
    assert "\n" not in str(caught.value)


def test_a_damaged_cached_archive_says_to_delete_it(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ml-100k.zip").write_bytes(b"not the archive")  # a download cut short by an older version
    with pytest.raises(DataError, match="checksum mismatch") as caught:
        fetch("movielens-100k", raw)
    assert str(caught.value).endswith("the cached archive is damaged: delete it and run the fetch again")


@pytest.mark.parametrize("name", ["ml-100k.zip", "download.zip"])
def test_an_offline_zip_that_is_no_zip_says_download_it_again_not_ingest_it(tmp_path, name):
    """A partial download (or an HTML error page saved as ml-100k.zip) was told "another interaction
    file needs no fetch: recsys ingest ml-100k.zip", which only fails again."""
    cut = tmp_path / name
    cut.write_bytes(b"<html>503 Service Unavailable</html>")
    with pytest.raises(DataError) as caught:
        fetch("movielens-100k", tmp_path / "raw", offline=cut)
    said = str(caught.value)
    assert said.startswith(f"{cut}: not a zip archive (a partial or failed download?)"), said
    assert "movielens/ml-100k.zip again" in said and "recsys ingest" not in said, said
