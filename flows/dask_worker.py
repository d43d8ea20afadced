"""Preloaded into the workers of `recsys run`'s own Dask LocalCluster (`flows.pipeline.task_runner_for`).

`dask_teardown` runs as a worker closes (the cluster's close, at the flow's end): it freezes the
heap (`recsys.exit_gc`), so the worker process ends without the interpreter's exit collections
walking what its model tasks imported and loaded (torch, MLflow, Prefect, the split: ~500k objects).

Why: measured with two workers after a model-like task (those imports and a 1M-row ingest's ids),
the workers were still alive 4 s after the nanny asked them to close, and the nanny killed them
(SIGKILL), printing "Worker process still alive after 4.0 seconds, killing" once per worker; a
killed worker's atexit handlers (Prefect's log and event flush) never ran. Frozen, they exit on
their own, within that time. Only the local cluster's workers: a shared cluster's
(orchestration.dask_address) are not this run's to change.
"""

from __future__ import annotations

from typing import Any

PRELOAD = __name__
"""What the local cluster's `preload` names."""


def dask_teardown(worker: Any) -> None:
    """Distributed's preload hook, called as the worker closes."""
    from recsys.exit_gc import no_collection_at_exit

    no_collection_at_exit()
