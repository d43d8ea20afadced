"""The workers of `recsys run`'s own Dask LocalCluster (orchestration.task_runner = "dask") freeze
their heap as they close (`flows.dask_worker`, `recsys.exit_gc`): after a model task (torch, MLflow,
Prefect, the split: ~500k objects) the interpreter's exit collections kept a worker alive past the
nanny's 4 s, and the nanny killed it (SIGKILL) with a warning per worker, its atexit handlers
unrun. Checked in a real worker process: its atexit handler runs (it exited by itself) and sees the
heap frozen. Timings are not asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("prefect_dask")

AT_EXIT = (
    "import atexit, gc\n"
    "atexit.register(lambda: open(path, 'w').write(str(gc.get_freeze_count())))\n"
)


def test_the_local_clusters_workers_exit_with_their_heap_frozen(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from flows.pipeline import task_runner_for
    from recsys.config import OrchestrationConfig, RunConfig

    runner = task_runner_for(RunConfig(orchestration=OrchestrationConfig(task_runner="dask", max_workers=1)))
    noted = tmp_path / "frozen-at-exit"
    with LocalCluster(**runner.cluster_kwargs) as cluster, Client(cluster) as client:
        client.submit(exec, AT_EXIT, {"path": str(noted)}, pure=False).result()
    assert int(noted.read_text()) > 10_000  # the worker's imports (distributed, tornado, ...) frozen


def test_a_users_worker_preloads_are_kept(monkeypatch) -> None:
    import dask.config

    from flows.pipeline import _worker_preloads

    with dask.config.set({"distributed.worker.preload": ["their_preload"]}):
        assert _worker_preloads() == ["their_preload", "flows.dask_worker"]
    with dask.config.set({"distributed.worker.preload": []}):
        assert _worker_preloads() == ["flows.dask_worker"]
