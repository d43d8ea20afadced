"""Data-parallel two-tower training: 2 gloo ranks vs 1 process on the same global batch, same run.

What it measures: examples/s of one epoch-slice (`STEPS` global batches) of sampled-softmax training
with mixed negatives (in-batch positives gathered across ranks + shared uniform draws), global batch
`GLOBAL_BATCH`, dim 64, on ML-100K when the shared data is beside the repo, else a synthetic set.
The reference is one process with the whole global batch on one thread; also timed: one process on
every core, and 2 ranks with one thread each (each rank encodes half the batch, but every rank still
samples the global batch's negatives and joins a gather and DDP's all-reduce per step). Best of
`REPEATS`, since the machine may be shared. Also reports the loss difference between the runs, which
should be float rounding.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.multiprocessing as mp

from benchmarks.bench_two_tower import ml100k, synthetic
from recsys import distributed
from recsys.models.two_tower import TwoTower, TwoTowerConfig
from recsys.training import train_two_tower

HERE = Path(__file__).resolve().parent
WORLD = 2
GLOBAL_BATCH = 2048
STEPS = int(os.environ.get("RECSYS_BENCH_DDP_STEPS", "12"))
REPEATS = 2
CORES = os.cpu_count() or 1


def config(per_rank_batch: int, threads: int) -> TwoTowerConfig:
    return TwoTowerConfig(
        name="bench-ddp", dim=64, batch_size=per_rank_batch, num_negatives=512, sampler="mixed",
        loss="sampled_softmax", epochs=1, lr=5e-3, device="cpu", threads=threads, quiet=True, eval_every=0,
    )  # fmt: skip


def timed_run(train: sp.csr_matrix, cfg: TwoTowerConfig, world: int) -> tuple[float, float]:
    """(best examples/s, loss) over the first STEPS global batches; a 2-step warm-up is not timed."""
    torch.manual_seed(0)
    network = TwoTower(cfg).build_network(*train.shape, None)
    train_two_tower(network, train, cfg, max_steps=2, world_size=world)  # warm-up (allocator, gloo)
    best, loss = 0.0, float("nan")
    for _ in range(REPEATS):
        torch.manual_seed(0)
        network = TwoTower(cfg).build_network(*train.shape, None)
        seen: list[dict[str, float]] = []
        start = time.perf_counter()
        train_two_tower(
            network,
            train,
            cfg,
            max_steps=STEPS,
            world_size=world,
            callback=lambda _, m, seen=seen: seen.append(m),
        )
        seconds = time.perf_counter() - start
        best, loss = max(best, min(STEPS * GLOBAL_BATCH, train.nnz) / seconds), seen[0]["loss"]
    return best, loss


def _rank(rank: int, port: int, train_file: str, out: str) -> None:
    distributed.init_process_group("gloo", rank=rank, world_size=WORLD, master_port=port)
    try:
        train = sp.load_npz(train_file).tocsr()
        rate, loss = timed_run(train, config(GLOBAL_BATCH // WORLD, 1), WORLD)
        if rank == 0:
            Path(out).write_text(json.dumps({"rate": rate, "loss": loss}))
    finally:
        distributed.destroy_process_group()


def two_ranks(train: sp.csr_matrix) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        train_file, out = f"{tmp}/train.npz", f"{tmp}/out.json"
        sp.save_npz(train_file, train)
        mp.spawn(_rank, args=(distributed.free_port(), train_file, out), nprocs=WORLD, join=True)
        result = json.loads(Path(out).read_text())
    return result["rate"], result["loss"]


def main() -> None:
    data = ml100k()
    name = "ML-100K" if data is not None else "synthetic 500K"
    train = data if data is not None else synthetic(500_000)
    single_rate, single_loss = timed_run(train, config(GLOBAL_BATCH, 1), 1)
    all_cores_rate, _ = timed_run(train, config(GLOBAL_BATCH, CORES), 1)
    ddp_rate, ddp_loss = two_ranks(train)
    rel = abs(ddp_loss - single_loss) / abs(single_loss)
    load = os.getloadavg()[0]
    lines = [
        "## Data-parallel two-tower (DDP, gloo)",
        "",
        f"{name}, {train.nnz:,} interactions; sampled softmax, mixed negatives (in-batch gathered + 512 "
        f"shared uniform), dim 64, global batch {GLOBAL_BATCH}, {STEPS} steps, best of {REPEATS}, "
        f"{CORES} cores, load average {load:.1f} when it finished (a shared machine: threads beyond the "
        "idle cores oversubscribe, which is why the reference uses one thread).",
        "",
        "| run | examples/s | ratio to reference | mean loss |",
        "|---|---:|---:|---:|",
        f"| 1 process, batch {GLOBAL_BATCH}, 1 thread (reference) | {single_rate:,.0f} | 1.00 | {single_loss:.6f} |",
        f"| 1 process, batch {GLOBAL_BATCH}, {CORES} threads | {all_cores_rate:,.0f} | "
        f"{all_cores_rate / single_rate:.2f} | |",
        f"| {WORLD} gloo ranks x {GLOBAL_BATCH // WORLD}, 1 thread each | {ddp_rate:,.0f} | "
        f"{ddp_rate / single_rate:.2f} | {ddp_loss:.6f} |",
        "",
        f"Loss difference between 1 process and {WORLD} ranks: {rel:.1e} relative (float rounding; the "
        "tests hold it under 1e-4).",
        "",
    ]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ddp.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
