"""Two-tower training throughput: recsys's loop vs a minimal hand-written torch loop, same run.

Sampled softmax, 1,024 shared uniform negatives, batch 4,096, dim 64, Adam, on ML-100K (when the
shared data is beside the repo) and on a synthetic interaction set (5M by default;
`RECSYS_BENCH_TWO_TOWER_INTERACTIONS` shrinks it). Both loops run the first `STEPS` batches of an
epoch (`RECSYS_BENCH_TWO_TOWER_STEPS`), so a 5M-row epoch need not finish on 2 cores; the tables,
the hit lookup and the optimizer state are still full size. Reports examples/s for both, the
ratio recsys time / reference time (target <= 1.25), the achieved GFLOP/s of the score matmuls
(forward + both backward products, 6 B N d per step) as a fraction of a plain `torch.matmul`
of the same shape measured in this run, and the process's peak RSS.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from benchmarks.reference_two_tower import train_reference
from recsys.models.two_tower import TwoTower, TwoTowerConfig
from recsys.training import train_two_tower

HERE = Path(__file__).resolve().parent
ML100K = Path(__file__).resolve().parents[1].parent / "shared/data/ml-100k/ml-100k.inter"
BATCH, NEGATIVES, DIM = 4096, 1024, 64
REPEATS = 2  # best of: the machine may be shared
STEPS = int(os.environ.get("RECSYS_BENCH_TWO_TOWER_STEPS", "8"))


def ml100k() -> sp.csr_matrix | None:
    if not ML100K.is_file():
        return None
    frame = pl.read_csv(
        ML100K, separator="\t", columns=["user_id:token", "item_id:token"], infer_schema=False
    )
    _, users = np.unique(frame["user_id:token"].to_numpy(), return_inverse=True)
    _, items = np.unique(frame["item_id:token"].to_numpy(), return_inverse=True)
    return to_csr(users, items, int(users.max()) + 1, int(items.max()) + 1)


def synthetic(n_interactions: int, seed: int = 0) -> sp.csr_matrix:
    """Skewed users (log-normal activity) x Zipf items, ~25 interactions per user."""
    rng = np.random.default_rng(seed)
    n_users = max(n_interactions // 25, 10)
    n_items = max(n_interactions // 100, 10)
    activity = rng.lognormal(0, 1, n_users)
    users = rng.choice(n_users, n_interactions, p=activity / activity.sum())
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items = rng.permutation(n_items)[rng.choice(n_items, n_interactions, p=popularity / popularity.sum())]
    return to_csr(users, items, n_users, n_items)


def to_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    ones = np.ones(users.size, dtype=np.float32)
    csr = sp.csr_matrix((ones, (users, items)), shape=(n_users, n_items))
    csr.sum_duplicates()
    return csr


def recsys_rate(train: sp.csr_matrix) -> float:
    cfg = TwoTowerConfig(
        name="bench", dim=DIM, batch_size=BATCH, num_negatives=NEGATIVES, epochs=1, loss="sampled_softmax",
        sampler="uniform", lr=5e-3, temperature=0.1, device="cpu", quiet=True,
    )  # fmt: skip
    torch.manual_seed(0)
    network = TwoTower(cfg).build_network(*train.shape, None)
    seen: list[float] = []
    train_two_tower(
        network, train, cfg, max_steps=STEPS, callback=lambda _, m: seen.append(m["examples_per_s"])
    )
    return seen[0]


def reference_rate(train: sp.csr_matrix) -> float:
    users = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
    return train_reference(
        users, train.indices, *train.shape, batch_size=BATCH, num_negatives=NEGATIVES, dim=DIM, lr=5e-3,
        max_steps=STEPS,
    )  # fmt: skip


def matmul_gflops(repeats: int = 20) -> float:
    """Plain torch.matmul of the loss's (B, d) @ (d, N) shape: the ceiling for this machine."""
    a, b = torch.randn(BATCH, DIM), torch.randn(DIM, NEGATIVES)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * BATCH * DIM * NEGATIVES * repeats / (time.perf_counter() - start) / 1e9


def achieved_gflops(examples_per_s: float) -> float:
    """Score-matmul FLOP/s implied by a throughput: 6 B N d per step of B examples."""
    return 6 * NEGATIVES * DIM * examples_per_s / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, train: sp.csr_matrix, peak: float) -> dict[str, float | str]:
    ours = max(recsys_rate(train) for _ in range(REPEATS))
    ref = max(reference_rate(train) for _ in range(REPEATS))
    row = {
        "data": name,
        "interactions": train.nnz,
        "shape": f"{train.shape[0]:,} x {train.shape[1]:,}",
        "recsys_ex_s": ours,
        "reference_ex_s": ref,
        "ratio": ref / ours,  # time ratio = inverse throughput ratio
        "gflops": achieved_gflops(ours),
        "fraction": achieved_gflops(ours) / peak,
        "rss_mb": peak_rss_mb(),
    }
    print(
        f"  {name}: recsys {ours:,.0f} ex/s, reference {ref:,.0f} ex/s, time ratio {row['ratio']:.2f}, "
        f"{row['gflops']:.1f} GFLOP/s ({row['fraction']:.0%} of matmul), peak RSS {row['rss_mb']:,.0f} MB",
        flush=True,
    )
    return row


def main() -> None:
    n_synthetic = int(os.environ.get("RECSYS_BENCH_TWO_TOWER_INTERACTIONS", "5000000"))
    peak = matmul_gflops()
    print(
        f"  torch.matmul ({BATCH}x{DIM} @ {DIM}x{NEGATIVES}): {peak:.1f} GFLOP/s, threads={torch.get_num_threads()}"
    )
    rows = []
    real = ml100k()
    if real is not None:
        rows.append(measure("ML-100K", real, peak))
    rows.append(measure(f"synthetic {n_synthetic:,}", synthetic(n_synthetic), peak))
    write_markdown(rows, peak)


def write_markdown(rows: list[dict[str, float | str]], peak: float) -> None:
    lines = [
        "## two_tower: training throughput",
        "",
        f"Sampled softmax, {NEGATIVES:,} shared uniform negatives, batch {BATCH:,}, dim {DIM}, Adam, the first "
        f"{STEPS} steps of an epoch (best of {REPEATS}); reference = minimal hand-written torch loop doing the same work "
        "(`benchmarks/reference_two_tower.py`). Ratio = recsys time / reference time (target <= 1.25). "
        f"GFLOP/s counts the score matmuls only (6 B N d per step); torch.matmul of the same shape ran at "
        f"{peak:.1f} GFLOP/s with {torch.get_num_threads()} threads. Peak RSS is the whole process so far. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine slows both loops alike).",
        "",
        "| data | interactions | users x items | recsys ex/s | reference ex/s | time ratio | GFLOP/s | of matmul | peak RSS MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['interactions']:,} | {r['shape']} | {r['recsys_ex_s']:,.0f} | "
            f"{r['reference_ex_s']:,.0f} | {r['ratio']:.2f} | {r['gflops']:.1f} | {r['fraction']:.0%} | "
            f"{r['rss_mb']:,.0f} |"
        )
    out = HERE / "results" / "two_tower.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out)
    print(f"  wrote {out}")


if __name__ == "__main__":
    main()
