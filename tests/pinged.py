"""Waiting for a server process started by a test to answer: one loop for `recsys serve` and
`mlflow models serve` (both answer GET /ping with 200 once their model is loaded)."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request

import pytest


def answers_ping(server: subprocess.Popen, base: str, deadline: float, what: str, pause_s: float = 0.3) -> bool:
    """True once `base`/ping answers 200, False when `server` exits first; past `deadline`
    (time.monotonic) the server is killed and the test fails, naming `what`."""
    while server.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"{what} not ready at {base} before the deadline")
        time.sleep(pause_s)
    return False
