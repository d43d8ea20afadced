"""A writer killed with -9 inside `recsys.files.atomic_path` leaves its temp; the next writer of the
same path removes it, and never the temp of a writer that still runs.

Before: the hidden `.<name>.XXXXXXXX.tmp` (a whole summary, config or plot) stayed beside the
output for ever, and its name did not say whose it was. The kill is a real SIGKILL of a process in
the middle of its write; the live writer is a real process frozen (SIGSTOP) in the middle of its own.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from stopped import stopped_at_its_point

from recsys.files import write_text_atomic

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")

WRITER = """
import os, signal, sys
from recsys.files import atomic_path

with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text(sys.argv[2])
    print(tmp, flush=True)
    os.kill(os.getpid(), getattr(signal, sys.argv[3]))
"""


def _writer(path: Path, text: str, sig: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), text, sig], stdout=subprocess.PIPE, text=True)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_the_next_writer_removes_a_killed_writers_temp_and_leaves_a_live_ones(tmp_path: Path):
    out = tmp_path / "summary.json"
    live = _writer(out, "live", "SIGSTOP")
    with stopped_at_its_point(live):  # frozen between its temp and its rename
        live_temp = Path(live.stdout.readline().strip())
        killed = _writer(out, "half", "SIGKILL")  # its own start left the live writer's temp alone
        left = Path(killed.stdout.readline().strip())
        assert killed.wait(timeout=60) == -signal.SIGKILL
        assert f"-{killed.pid}." in left.name  # the name says whose it is
        assert sorted([left.name, live_temp.name]) == _hidden(tmp_path) and not out.exists()

        write_text_atomic(out, "next")
        assert out.read_text() == "next"
        assert _hidden(tmp_path) == [live_temp.name]  # the dead writer's temp is gone, the live one's kept
    assert live.wait(timeout=60) == 0
    assert _hidden(tmp_path) == [] and out.read_text() == "live"
