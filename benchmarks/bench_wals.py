"""WALS through recsys vs bare implicit ALS on MovieLens 100K: the wrapper must cost (almost) nothing.

Both sides fit the same confidence matrix (c = 1 + alpha * rating) with the same factors, solver,
iterations, seed and threads, BLAS held at one thread. The recsys side pays for everything the wrapper
adds: input coercion, confidence building, seeding, the per-iteration callback/history and copying the
factors out. Runs alternate (reference first, then recsys) so drifting machine load hits both; the
reported number is the median of per-pair ratios. Target: <= 1.05.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import implicit.cpu.als
import numpy as np
import polars as pl
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from benchmarks.common import ML100K_INTER
from recsys.files import write_text_atomic
from recsys.models.wals import WALS, WALSConfig

INTER = ML100K_INTER
RESULTS = Path(__file__).parent / "results" / "wals.md"
REPEATS = 5


def load_ml100k(path: Path = INTER) -> sp.csr_matrix:
    """users x items CSR of ratings from the RecBole `.inter` file (header `name:type`)."""
    frame = pl.read_csv(path, separator="\t")
    frame = frame.rename({c: c.split(":")[0] for c in frame.columns})
    dense = frame.select(
        (pl.col("user_id").rank("dense") - 1).alias("u"),
        (pl.col("item_id").rank("dense") - 1).alias("i"),
        pl.col("rating").cast(pl.Float32),
    )
    users, items, ratings = (dense[c].to_numpy() for c in ("u", "i", "rating"))
    shape = (int(users.max()) + 1, int(items.max()) + 1)
    csr = sp.csr_matrix((ratings, (users, items)), shape=shape, dtype=np.float32)
    csr.sum_duplicates()
    return csr


def fit_bare(ratings: sp.csr_matrix, cfg: WALSConfig) -> tuple[float, float, np.ndarray]:
    """What a user of implicit alone would write: scale the matrix, fit, read the factors."""
    start, cpu = time.perf_counter(), time.process_time()
    with threadpool_limits(1, "blas"):
        conf = ratings.copy()
        conf.data = 1.0 + cfg.alpha * conf.data
        model = implicit.cpu.als.AlternatingLeastSquares(
            factors=cfg.factors,
            regularization=cfg.regularization,
            alpha=1.0,
            use_cg=cfg.solver == "cg",
            iterations=cfg.iterations,
            calculate_training_loss=cfg.calculate_training_loss,
            num_threads=cfg.threads,
            random_state=cfg.seed,
        )
        model.cg_steps = cfg.cg_steps
        model.fit(conf, show_progress=False)
    return time.perf_counter() - start, time.process_time() - cpu, np.asarray(model.item_factors)


def fit_recsys(ratings: sp.csr_matrix, cfg: WALSConfig) -> tuple[float, float, np.ndarray]:
    start, cpu = time.perf_counter(), time.process_time()
    model = WALS(cfg).fit(ratings)
    return time.perf_counter() - start, time.process_time() - cpu, model.item_factors


def compare(ratings: sp.csr_matrix, cfg: WALSConfig, bare_cfg: WALSConfig | None = None) -> dict[str, float]:
    bare_cfg = bare_cfg or cfg
    fit_bare(ratings, bare_cfg)  # warm-up: page in the extension, first-touch allocations
    fit_recsys(ratings, cfg)
    bare_times, ours_times, ratios, cpu_ratios = [], [], [], []
    identical = True
    for _ in range(REPEATS):
        t_bare, cpu_bare, f_bare = fit_bare(ratings, bare_cfg)
        t_ours, cpu_ours, f_ours = fit_recsys(ratings, cfg)
        bare_times.append(t_bare)
        ours_times.append(t_ours)
        ratios.append(t_ours / t_bare)
        cpu_ratios.append(cpu_ours / cpu_bare)
        identical &= bool(np.array_equal(f_bare, f_ours))
    return {
        "bare": statistics.median(bare_times),
        "ours": statistics.median(ours_times),
        "ratio": statistics.median(ratios),
        "cpu_ratio": statistics.median(cpu_ratios),
        "identical": identical,
    }


def main() -> None:
    if not INTER.is_file():
        print(f"skipped: {INTER.name} not found beside the repo (shared/data/ml-100k)")
        return
    ratings = load_ml100k()
    base = WALSConfig(
        name="bench", factors=64, iterations=15, regularization=0.05, alpha=10.0, seed=42, device="cpu"
    )
    cases = [
        ("cg, 1 thread, loss on", base.model_copy(update={"threads": 1}), None),
        ("cg, 2 threads, loss on", base.model_copy(update={"threads": 2}), None),
        (
            "cholesky, 1 thread, loss on, 5 iterations",
            base.model_copy(update={"threads": 1, "solver": "cholesky", "iterations": 5}),
            None,
        ),
        (
            "cg, 1 thread: recsys loss on vs bare loss off (cost of the history loss)",
            base.model_copy(update={"threads": 1}),
            base.model_copy(update={"threads": 1, "calculate_training_loss": False}),
        ),
    ]
    lines = [
        "## WALS (recsys wrapper vs bare implicit ALS)",
        "",
        f"MovieLens 100K ({ratings.shape[0]} users x {ratings.shape[1]} items, {ratings.nnz} ratings), "
        f"factors={base.factors}, iterations={base.iterations}, alpha={base.alpha}, c = 1 + alpha * rating; "
        f"median of {REPEATS} alternating pairs. Target ratio <= 1.05. "
        f"Machine load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "| case | bare implicit (s) | recsys WALS (s) | wall ratio | CPU-time ratio | identical factors |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, cfg, bare_cfg in cases:
        r = compare(ratings, cfg, bare_cfg)
        row = (
            f"| {name} | {r['bare']:.3f} | {r['ours']:.3f} | {r['ratio']:.3f} | {r['cpu_ratio']:.3f} "
            f"| {'yes' if r['identical'] else 'no'} |"
        )
        print(row, flush=True)
        lines.append(row)
    lines += [
        "",
        "Identical factors: same seed and matrix give bit-identical item factors through both paths. "
        "CPU-time ratio (process CPU seconds) is less sensitive than wall time to other load on the "
        "machine; wall time is the target. The last row prices the per-iteration training loss that "
        "fills `history` (WALSConfig.calculate_training_loss, on by default).",
    ]
    write_text_atomic(RESULTS, "\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
