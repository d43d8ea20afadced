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


def test_a_flow_ended_by_a_deterministic_error_logs_its_message_without_the_traceback():
    """A scheduled run started while the MLflow server was down printed two Prefect tracebacks into
    the schedule's output for one TrackingError, whose repr there showed `{option}` unfilled. The
    flow-run process keeps the message, rendered, and drops the traceback; a bug keeps it."""
    import logging

    from flows.flow_run_process import _NoDeterministicTraceback
    from recsys.errors import TrackingError

    def logged(error: Exception) -> logging.LogRecord:
        try:
            raise error
        except Exception:
            return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1,
                                     "Encountered exception during execution: %r", (error,), sys.exc_info())  # fmt: skip

    quiet = _NoDeterministicTraceback()
    down = logged(TrackingError("tracking server http://127.0.0.1:5000 is not reachable: start it, or turn tracking "
                                "off with {option}", setting="tracking.enabled", value="false"))  # fmt: skip
    assert quiet.filter(down) and down.exc_info is None
    assert down.getMessage().endswith("turn tracking off with --set tracking.enabled=false')"), down.getMessage()
    bug = logged(ValueError("a bug"))
    assert quiet.filter(bug) and bug.exc_info is not None
