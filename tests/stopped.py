"""Acting while a child process is frozen at a named point (`recsys.faults.STOP_ENV`).

A test that starts `recsys` with RECSYS_STOP_AT=<point> gets a process that SIGSTOPs itself there:
the window a concurrent writer, a producer's last write or a Ctrl-C must land in. Every such test
waits for the stop, acts, and must continue the process even when its action fails (a stopped
child outlives the test otherwise)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator


@contextlib.contextmanager
def stopped_at_its_point(run: subprocess.Popen) -> Iterator[None]:
    """Inside, `run` is stopped at its RECSYS_STOP_AT point; on leaving, it continues (SIGCONT).
    Fails (with what the child printed) when it exits without reaching the point."""
    import psutil

    try:
        process = psutil.Process(run.pid)
        while process.status() != psutil.STATUS_STOPPED:
            assert run.poll() is None, run.communicate()
            time.sleep(0.05)
        yield
    finally:
        if run.poll() is None:
            os.kill(run.pid, signal.SIGCONT)


CTRL_C_READY = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('recsys.cli', run_name='__main__', alter_sys=True)"
)
"""`python -c CTRL_C_READY ARGS...` runs `recsys ARGS...` with Python's own Ctrl-C handler. A child
started by a process that ignores SIGINT (a suite launched as a background job: `make test &`)
inherits SIG_IGN, and then a test's Ctrl-C was rightly ignored: the child served on until the
test timed out."""


def recsys_cli(*args: str) -> list[str]:
    """The command line of `recsys ARGS...` for a test that sends it Ctrl-C (`CTRL_C_READY`)."""
    import sys

    return [sys.executable, "-c", CTRL_C_READY, *args]
