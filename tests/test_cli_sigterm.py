"""SIGTERM ends every command as Ctrl-C does (`recsys.cli.common.user_errors`): its `finally`
blocks run (temp files and staging directories removed), one line `terminated (SIGTERM)` and exit
code 143. Only `recsys run` on Prefect caught SIGTERM; `recsys ingest`, `train`, `tune`, `promote`
... died where they stood: exit -15, no message, a staging copy left for the next start to clean.

The signal is sent at a planted moment (ingest's new directory fully staged, not yet swapped in),
so the test does not race the command's speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import os, signal, sys
from recsys.data import storage
from recsys.cli.entry import main

real_write_json = storage.write_json

def write_json(path, data):
    real_write_json(path, data)
    if os.path.basename(path) == "manifest.json":  # everything staged, nothing swapped in yet
        os.kill(os.getpid(), signal.SIGTERM)

storage.write_json = write_json
sys.argv = ["recsys", "ingest", sys.argv[1], "--out", sys.argv[2]]
main()
"""


def test_sigterm_unwinds_a_command_removes_its_staging_and_exits_143(tmp_path: Path) -> None:
    source = tmp_path / "log.csv"
    source.write_text("user_id,item_id\n" + "".join(f"u{u},i{(u * 7 + k) % 13}\n" for u in range(20) for k in range(3)))
    out = tmp_path / "processed"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(source), str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 143, (done.returncode, done.stderr[-2000:])
    assert done.stderr.strip().splitlines()[-1] == "terminated (SIGTERM)", done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not out.exists()  # nothing half there: the staged directory was never swapped in ...
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # ... nor left, nor its lock
