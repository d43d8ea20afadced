"""The process of a flow run that `recsys schedule` starts: Prefect's own `python -m prefect.engine`,
run by `python -m flows.flow_run_process` (`flows.runner` gives the runner this command), so that a
Ctrl-C landing while the process starts ends it with one line instead of a traceback.

Why: Ctrl-C signals the terminal's whole process group, and a served deployment's flow-run process
is in the schedule's. While it started - importing Prefect, then loading the flow (recsys, torch):
seconds of every run - the KeyboardInterrupt surfaced as its traceback (dozens of import frames) in
the schedule's output, or as Prefect's "Execution of flow run ... interrupted by base exception"
with the traceback; once the flow runs, the flow's own interrupt handling reports it. Kept free of
recsys imports before the engine's (bar `recsys.import_gc`, which imports only `gc`), so the window it
covers starts at once.

Its imports are collected as `recsys run`'s are (`recsys.import_gc`): full collections put off from the
first line until the flow starts, then one collection and a freeze.
"""

from __future__ import annotations

import logging
import sys

INTERRUPTED_LINE = "flow run interrupted (Ctrl-C): its process stopped"


class _NoInterruptTraceback(logging.Filter):
    """Prefect's engine logs an interrupt of the flow's load with its traceback: keep the message,
    drop the traceback (a KeyboardInterrupt has nothing to debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info, record.exc_text = None, None
        return True


class _NoDeterministicTraceback(logging.Filter):
    """The flow's end by a deterministic error (`recsys.errors.is_deterministic`: bad input or
    config, a tracking store that does not answer, `flows.pipeline.TrackingLost`): keep Prefect's
    message, drop its traceback. Why: a scheduled run started while the MLflow server was down
    printed two Prefect tracebacks (flow and subflow, ~30 lines each) into the schedule's output for
    one `TrackingError` whose message says all; `recsys run` prints such an error as one line. A bug
    keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            from recsys.errors import is_deterministic

            if is_deterministic(error):
                record.exc_info, record.exc_text = None, None
        return True


def main() -> None:
    # Before Prefect's engine imports anything: full collections wait until the imports are in (the
    # engine's, then the flow's: recsys, MLflow, torch); the flow collects once and freezes them at its
    # start (`training_pipeline` calls `imports_done`), as `recsys run` does before its flow.
    from recsys.import_gc import defer_full_collections

    defer_full_collections()
    try:
        import runpy

        from recsys.faults import fault_point

        logging.getLogger("prefect.engine").addFilter(_NoInterruptTraceback())
        logging.getLogger("prefect.flow_runs").addFilter(_NoDeterministicTraceback())
        fault_point("flow_run.starting")
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except KeyboardInterrupt:
        sys.stderr.write(f"{INTERRUPTED_LINE}\n")
        sys.stderr.flush()
        raise SystemExit(130) from None
    finally:
        # The flow run has reported its state; its heap (torch, MLflow, Prefect) need not be walked
        # once more by the exit's collection (~1 CPU-s per run, `recsys.exit_gc`).
        from recsys.exit_gc import no_collection_at_exit

        no_collection_at_exit()


if __name__ == "__main__":
    main()
