"""A `recsys data fetch` killed with -9 mid-download, for real: a child process reading a slow body
from a server on 127.0.0.1. What it leaves (its partial download) is removed by the next fetch of
the set, which holds the set's lock: no live fetcher's file is among what it finds then."""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

from recsys.data import fetch as fetch_module
from recsys.data.fetch import fetch

HALF = (1 << 20) + 4096  # more than one read of the fetcher (CHUNK_BYTES): it writes before it stalls


class _Stalling(http.server.BaseHTTPRequestHandler):
    """Promises twice HALF bytes, sends HALF, then waits (a mirror that stalls mid-body)."""

    release = threading.Event()

    def do_GET(self):  # noqa: N802 (http.server API)
        self.send_response(200)
        self.send_header("Content-Length", str(2 * HALF))
        self.end_headers()
        self.wfile.write(b"\0" * HALF)
        self.wfile.flush()
        self.release.wait(60)

    def log_message(self, *args):
        pass


def test_a_fetch_killed_mid_download_leaves_nothing_after_the_next_fetch(tmp_path: Path, monkeypatch):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stalling)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    raw = tmp_path / "raw"
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    child = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "data", "fetch", "movielens-100k", "--raw-dir", str(raw), "--base-url", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _partial(raw):  # the first MiB is on disk: the download is under way
            assert child.poll() is None, child.communicate()[1]
            assert time.monotonic() < deadline, "the fetch wrote nothing in 120 s"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        _Stalling.release.set()
        httpd.shutdown()
        httpd.server_close()
    assert _partial(raw), "the kill left no partial download: the test no longer kills mid-write"

    archive = tmp_path / "ml-100k.zip"  # the next fetch: the set's zip from disk
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", "196\t242\t3\t881250949\n")
    monkeypatch.setitem(fetch_module.SHA256, "ml-100k.zip", hashlib.sha256(archive.read_bytes()).hexdigest())
    assert fetch("movielens-100k", raw, offline=archive) == raw / "ml-100k" / "u.data"
    left = sorted(str(p.relative_to(raw)) for p in raw.rglob("*"))
    assert left == [".fetch.ml-100k.lock", "ml-100k", "ml-100k/u.data"]  # the lock stays, for the next fetch


def _partial(raw: Path) -> list[Path]:
    """The fetcher's partial downloads holding at least one read's worth."""
    if not raw.is_dir():
        return []
    return [p for p in raw.iterdir() if "ml-100k.zip" in p.name and p.is_file() and p.stat().st_size >= 1 << 20]
