"""A scheduled flow run's process (`python -m flows.flow_run_process`, which `recsys schedule`'s
runner starts instead of `python -m prefect.engine`): Ctrl-C reaches it with the schedule's whole
process group, and one landing while it started printed its KeyboardInterrupt traceback (dozens of
import frames) in the schedule's output. The Ctrl-C is made to land exactly there
(RECSYS_INTERRUPT_AT, recsys.faults): one line, exit 130."""

from __future__ import annotations

import os
import subprocess
import sys

from flows.flow_run_process import INTERRUPTED_LINE


def test_a_ctrl_c_while_a_flow_runs_process_starts_is_one_line():
    env = {**os.environ, "RECSYS_INTERRUPT_AT": "flow_run.starting"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.flow_run_process"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [INTERRUPTED_LINE], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
