"""A scheduled flow run's process (`python -m flows.flow_run_process`, which `recsys schedule`'s
runner starts instead of `python -m prefect.engine`): Ctrl-C reaches it with the schedule's whole
process group, and one landing while it started printed its KeyboardInterrupt traceback (dozens of
import frames) in the schedule's output. The Ctrl-C is made to land exactly there
(RECSYS_INTERRUPT_AT, recsys.faults): one line, exit 130."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flows.flow_run_process import INTERRUPTED_LINE
from recsys.import_gc import IMPORTING_OLDEST_THRESHOLD

REPO = Path(__file__).resolve().parents[2]


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


# A flow-run process as `recsys schedule`'s runner starts it, with gc.callbacks noting, at each
# collection until the exit's (`recsys.exit_gc`), the oldest generation's threshold, the frozen count
# and how far the imports had got.
PROBE = r"""
import atexit, gc, json, sys
import recsys.exit_gc as exit_gc

seen, exiting = [], []
gc.callbacks.append(lambda phase, info: phase == "start" and not exiting and seen.append(
    (gc.get_threshold()[2], gc.get_freeze_count(), "prefect" in sys.modules, "pipelines.run" in sys.modules)))
real_exit = exit_gc.no_collection_at_exit
exit_gc.no_collection_at_exit = lambda: (exiting.append(1), real_exit())
atexit.register(lambda: print("probe " + json.dumps({"seen": seen, "at_exit": gc.get_threshold()}), file=sys.stderr))
from flows.flow_run_process import main
main()
"""


def test_a_scheduled_flow_run_process_defers_full_collections_until_its_flow_starts(prefect_harness, tmp_path):
    """`recsys run` puts off full collections while it imports Prefect, MLflow and torch, then
    collects once and freezes them (`recsys.import_gc`, ~1 CPU-s); the flow-run process each
    scheduled run starts (`flows.flow_run_process`) imports the same stack and did not. A real one:
    a flow run of `training_pipeline` on this harness's server, run as `recsys schedule`'s runner
    runs it (the entrypoint in PREFECT__FLOW_ENTRYPOINT, as its runner gives it)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from flows.pipeline import training_pipeline

    sets = ["data.synthetic.n_users=60", "data.synthetic.n_items=30", "data.synthetic.n_clusters=2",
            "data.synthetic.interactions_per_user=8", "data.min_user_interactions=2", "folding.enabled=false",
            "evaluation.ks=[5]", 'promotion.metric="recall@5"', "evaluation.bootstrap_samples=10",
            f'data.processed_dir="{tmp_path / "p"}"', f'data.raw_dir="{tmp_path / "raw"}"',
            'models=[{name="pop", kind="popularity"}]']  # fmt: skip
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(training_pipeline, parameters={"overrides": sets, "tracking": False})
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT__FLOW_RUN_ID": str(run.id),
               "PREFECT__FLOW_ENTRYPOINT": "flows/pipeline.py:training_pipeline", "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
        done = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        state = client.read_flow_run(run.id).state
    assert done.returncode == 0 and state is not None and state.is_completed(), (state, done.stderr[-3000:])
    probe = json.loads(done.stderr.strip().splitlines()[-1].removeprefix("probe "))
    seen, default = probe["seen"], tuple(probe["at_exit"])
    # Prefect's engine and the flow's module (loaded from its file, under Prefect's own module name:
    # `pipelines.run` is one of its imports) imported with full collections put off ...
    importing = [oldest for oldest, frozen, prefect, _ in seen if prefect and not frozen]
    assert importing and set(importing) == {IMPORTING_OLDEST_THRESHOLD}, sorted(set(importing))
    # ... then, before the exit's collection, the flow ran on a frozen heap (its imports in), the
    # thresholds restored
    running = [(oldest, flow) for oldest, frozen, _, flow in seen if frozen]
    assert running and set(running) == {(default[2], True)}, sorted(set(running))
    assert default[2] != IMPORTING_OLDEST_THRESHOLD
