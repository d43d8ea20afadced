"""Fewer full garbage collections while a command imports its libraries, and none of them later.

Why: importing what `recsys run` needs (Prefect, its server module, MLflow, torch, polars) builds a
heap of ~570k long-lived objects (modules, functions, classes). CPython starts a full collection
each time the objects that survived into the oldest generation grow by a quarter, so the imports
set off ~9 full collections, each walking everything imported so far: 5.4-6.0 CPU-s for the imports
against 4.7-4.9 with the full collections put off until the imports are in (a quiet 2-core
machine; `recsys run` spends them while Prefect's temporary server starts on the other core).
Each full collection later in the run walked those objects again (~0.3 CPU-s each, several per
run): once frozen (`gc.freeze`), they are left out of every later walk.

Why it is safe: only the oldest generation's collections are put off (young ones run as before,
freeing what the imports throw away), and only until `imports_done`, which collects once, freezes
what survived (objects that live as long as the process: a frozen object that later becomes garbage
is freed by reference counting, only a cycle among frozen objects would stay) and restores the
collector's thresholds. A command that fails before `imports_done` exits anyway.

Where: `recsys run` (recsys/cli/pipeline_cmds.py), and each flow-run process of `recsys schedule`
(flows/flow_run_process.py defers at its first line, before Prefect's engine imports anything;
`training_pipeline` calls `imports_done` as the flow starts). Not in a flow run that a Prefect worker
starts (`prefect worker start`, prefect.yaml): it runs Prefect's `python -m prefect.engine`, where
recsys code first runs when the flow's file is imported; the process work pool's `command` could name
`python -m flows.flow_run_process`, but as a fixed command line, not the worker's own interpreter
(Prefect's default), so a worker whose `python` on PATH is another environment would fail every run.
"""

from __future__ import annotations

import gc

IMPORTING_OLDEST_THRESHOLD = 1000
"""The oldest generation's threshold while importing (CPython's default: 10 collections of the
middle one); a full collection then comes at most every ~7M net allocations instead of ~70k."""

_saved: tuple[int, int, int] | None = None


def defer_full_collections() -> None:
    """Put off full collections until `imports_done` (call it before a command's heavy imports)."""
    global _saved
    if _saved is None:
        _saved = gc.get_threshold()
        gc.set_threshold(_saved[0], _saved[1], IMPORTING_OLDEST_THRESHOLD)


def imports_done() -> None:
    """Collect once, freeze what the imports left, restore the thresholds `defer_full_collections`
    changed (a no-op without it: a process that did not defer keeps its collector as it is)."""
    global _saved
    if _saved is None:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_saved)
    _saved = None
