"""The model-run plots and the cyclic garbage collector, in a heap the size of `recsys run`'s.

A matplotlib figure is a web of reference cycles. Drawn with the collector running, a figure
outlives the young collections its own allocations set off and is promoted to the oldest
generation, which only a full collection frees; a full collection walks the whole heap, so in a
process that imported torch, MLflow and Prefect each one costs about half a CPU-second. Since
`recsys.tracking.plots` draws each figure with the collector paused and collects it young, no
figure reaches that generation.

Both ways are measured in this process, alternating, on the default run's figures (1,000 items,
1,926 test users x 100 recommendations, 64-d factors in 8 blocks, a 10-epoch history): the
reference is each plot function as it was (`__wrapped__`: under RC_LOCK, collector running).
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR

RESULTS = RESULTS_DIR / "plots_gc.md"
ROUNDS = 5
SETS_PER_ROUND = 6  # 6 x 4 figures: about the default run's 21
USERS, ITEMS, DIM, BLOCKS, EPOCHS = 1926, 1000, 64, 8, 10


def heavy_heap() -> int:
    """Import what a `recsys run` process holds (torch, MLflow's SQL store, Prefect); its object count."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import prefect  # noqa: F401
    import torch  # noqa: F401

    gc.collect()
    return len(gc.get_objects())


def figures(draw, out: Path) -> None:
    """One model's four figures, drawn by `draw(plot_name, *args, **kwargs)`."""
    rng = np.random.default_rng(0)
    summary = {f"{m}@{k}": float(rng.random()) for m in ("recall", "ndcg") for k in (10, 20, 50, 100)}
    history = [{"step": i, "loss": float(rng.random()), "val_recall@20": float(rng.random())} for i in range(EPOCHS)]
    items = rng.integers(0, ITEMS, size=(USERS, 100))
    popularity = rng.zipf(1.5, size=ITEMS).astype(np.float64)
    vectors = rng.standard_normal((ITEMS, DIM)).astype(np.float32)
    draw("plot_metric_at_k", {"model": summary}, out / "recall_at_k.png", title="model")
    draw("plot_history", history, out / "training_curves.png", title="model")
    draw("plot_popularity_bias", items, popularity, out / "popularity_bias.png", title="model")
    draw("plot_item_embeddings", vectors, out / "pca.png", np.arange(ITEMS) % BLOCKS, "item block", title="model")


def measure(young: bool, out: Path) -> dict[str, float]:
    """CPU of drawing SETS_PER_ROUND sets (any collection they set off included), and then the
    objects they left for a full collection and that collection's CPU."""
    from recsys.tracking import plots

    def draw(name: str, *args, **kwargs) -> None:
        plot = getattr(plots, name)
        if young:
            plot(*args, **kwargs)
        else:
            with plots.RC_LOCK:
                plot.__wrapped__(*args, **kwargs)

    gc.collect()
    start = time.thread_time()
    for _ in range(SETS_PER_ROUND):
        figures(draw, out)
    cpu = time.thread_time() - start
    start = time.thread_time()
    left = gc.collect()
    return {"cpu": cpu, "left": left / (4 * SETS_PER_ROUND), "full_cpu": time.thread_time() - start}


def main() -> None:
    objects = heavy_heap()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        measure(True, out)  # matplotlib imported, its caches filled
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(ROUNDS):
            for young in (False, True):
                runs[young].append(measure(young, out))
    med = {young: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for young, rs in runs.items()}
    full_cpu = float(np.median([r["full_cpu"] for rs in runs.values() for r in rs]))
    # CPython starts a full collection once the objects promoted to the oldest generation since the
    # last one exceed a quarter of those it already holds (~ the heap): each object left costs
    # that share of a full collection.
    def implied_ms(left: float) -> float:
        return left / (objects / 4) * full_cpu * 1000

    rows = [
        f"| {label} | {med[y]['cpu'] / (4 * SETS_PER_ROUND) * 1000:.0f} | {med[y]['left']:,.0f} | {implied_ms(med[y]['left']):.1f} |"
        for y, label in ((False, "collector running (reference)"), (True, "collected young (plots.py)"))
    ]
    total = {y: med[y]["cpu"] / (4 * SETS_PER_ROUND) * 1000 + implied_ms(med[y]["left"]) for y in (False, True)}
    text = [
        "## Model-run plots and the garbage collector (bench_plots_gc)",
        "",
        f"{4 * SETS_PER_ROUND} figures per round (4 per model, as `Tracker.log_model_result` draws them), {ROUNDS} "
        f"rounds alternating, medians; in a heap of {objects:,} objects (torch, MLflow's SQL store and Prefect "
        f"imported, as in `recsys run`), where one full collection takes {full_cpu:.2f} CPU-s. CPU is this thread's. "
        "The last column is each figure's share of a full collection: CPython starts one when the objects promoted "
        "to the oldest generation since the last exceed a quarter of those already there.",
        "",
        "| figures drawn | drawing CPU ms / figure | objects left per figure for a full collection | full-collection CPU ms / figure |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Ratio of CPU per figure (drawing + its share of full collections), collected young / reference: "
        f"**{total[True] / total[False]:.2f}** ({total[True]:.0f} / {total[False]:.0f} ms).",
    ]
    RESULTS.write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
