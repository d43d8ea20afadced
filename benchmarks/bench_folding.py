"""Folding per loss on block-disjoint data: do sampled negatives keep unrelated blocks apart?

Data: MovieLens 100K combined with a prefixed copy of itself (`recsys data combine`): two blocks with
identical structure and no shared user or item, so every recommendation across the seam is spurious
(falls back to planted clusters with zero leakage when ML-100K is not beside the repo). One random
80/20 split; each model is trained with FOLDING_SEEDS seeds (default 3) and the table reports
folding@20 (mean ± sd over seeds) beside its two references measured in the same run (a uniformly
random recommender, closed form, and popularity), the score and embedding views, recall@20 over the
full corpus and recall@20 within the user's own blocks (foreign items masked), and the cost of the
folding diagnostic relative to `evaluate()` on the same model.

Two-tower models share one architecture (id embedding -> one shared hidden layer -> L2-normalised
output): the shared layer is the path through which positives-only training can map unrelated blocks
onto each other. A positives-only model with id embeddings only (no shared parameters) is included
as a control. Environment: FOLDING_SEEDS, FOLDING_EPOCHS (default 5) and FOLDING_ONLY (comma-separated model
names, e.g. "positives_only,softmax mixed,wals,popularity") make it cheaper.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from benchmarks.common import ML100K_INTER
from recsys.config import EvaluationConfig, SplitConfig, SyntheticConfig
from recsys.data.dataset import InteractionData
from recsys.data.split import EvalSet, Split
from recsys.evaluation.evaluate import evaluate
from recsys.evaluation.folding import folding_report
from recsys.files import atomic_path, write_text_atomic
from recsys.models import build_model
from recsys.models.base import ModelConfig
from recsys.models.popularity import PopularityConfig
from recsys.models.two_tower import TwoTowerConfig
from recsys.models.wals import WALSConfig

INTER = ML100K_INTER
RESULTS_DIR = Path(__file__).parent / "results"
RESULTS = RESULTS_DIR / "folding.md"
BAR_PNG = RESULTS_DIR / "folding_bar.png"
PCA_PNG = RESULTS_DIR / "folding_pca.png"
K, NEIGHBOURS = 20, 10
SEEDS = int(os.environ.get("FOLDING_SEEDS", "3"))
EPOCHS = int(os.environ.get("FOLDING_EPOCHS", "5"))
THREADS = min(2, os.cpu_count() or 1)
ONLY = [n.strip() for n in os.environ.get("FOLDING_ONLY", "").split(",") if n.strip()]
CONTROL = "positives_only"


def two_tower(name: str, **overrides) -> TwoTowerConfig:
    base = {
        "dim": 32,
        "user_layers": [64],
        "item_layers": [64],
        "epochs": EPOCHS,
        "batch_size": 2048,
        "num_negatives": 128,
        "lr": 1e-2,
        "threads": THREADS,
        "device": "auto",
        "quiet": True,
        "eval_every": 0,
    }
    return TwoTowerConfig(name=name, **{**base, **overrides})


def model_configs() -> list[ModelConfig]:
    return [
        two_tower(CONTROL, loss="positives_only"),
        two_tower("positives_only (id only)", loss="positives_only", user_layers=[], item_layers=[]),
        two_tower("bce uniform", loss="bce", sampler="uniform"),
        two_tower("bce popularity", loss="bce", sampler="popularity"),
        two_tower(
            "softmax in-batch + logQ", loss="sampled_softmax", sampler="in_batch", logq_correction=True
        ),
        two_tower(
            "softmax in-batch, no logQ", loss="sampled_softmax", sampler="in_batch", logq_correction=False
        ),
        two_tower("softmax mixed", loss="sampled_softmax", sampler="mixed"),
        two_tower("nce", loss="nce", sampler="uniform"),
        two_tower("infonce", loss="infonce", sampler="uniform"),
        # Metric-learning losses (issue 11) with their natural samplers; margins as in bench_quality.
        two_tower("contrastive", loss="contrastive", sampler="uniform", margin=1.0),
        two_tower("lifted", loss="lifted", sampler="uniform", margin=1.0),
        two_tower("npair", loss="npair", sampler="in_batch"),
        WALSConfig(name="wals", factors=32, iterations=10, threads=THREADS),
        PopularityConfig(name="popularity"),
    ]


# --------------------------------------------------------------------------- data
def block_disjoint_data(work: Path) -> tuple[InteractionData, str]:
    """ML-100K + prefixed copy via `combine`, or planted clusters with no leakage."""
    from recsys.data.storage import load_processed

    if INTER.is_file():
        from recsys.data.combine import combine

        combine([INTER, INTER], work / "ml100k-x2")
        return load_processed(work / "ml100k-x2"), "ML-100K + prefixed copy (2 blocks)"
    from recsys.config import DataConfig
    from recsys.data.ingest import ingest
    from recsys.data.synthetic import generate

    synthetic = generate(SyntheticConfig(n_users=2000, n_items=1500, n_clusters=4, leakage=0.0, seed=0))
    raw = work / "synthetic.parquet"
    synthetic.interactions.write_parquet(raw)
    ingest(
        raw,
        work / "synthetic",
        DataConfig(),
        user_labels=synthetic.user_clusters,
        item_labels=synthetic.item_clusters,
    )
    return load_processed(work / "synthetic"), "planted clusters, leakage 0 (4 blocks; ML-100K not found)"


def within_block_eval_set(split: Split) -> EvalSet:
    """The test set with every item outside the user's own block masked: recall inside the block."""
    test = split.test_set()
    assert split.user_blocks is not None and split.item_blocks is not None
    foreign = split.user_blocks[:, None] != split.item_blocks[None, :]
    mask = sp.csr_matrix(foreign.astype(np.float32)) + sp.csr_matrix(test.exclude)
    mask.data[:] = 1.0
    return EvalSet(truth=test.truth, exclude=sp.csr_matrix(mask))


# --------------------------------------------------------------------------- measurement
@dataclass
class Runs:
    name: str
    values: dict[str, list[float]] = field(default_factory=dict)
    item_vectors: np.ndarray | None = None  # seed 0, for the projection plot

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(float(value))

    def mean(self, key: str) -> float:
        return statistics.fmean(self.values[key])

    def fixed(self, key: str, digits: int = 2) -> str:
        """The mean with fixed digits, or a dash when the model never recorded `key`."""
        return f"{self.mean(key):.{digits}f}" if key in self.values else "—"

    def cell(self, key: str, digits: int = 3) -> str:
        vals = self.values[key]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.fmean(vals):.{digits}f} ± {sd:.{digits}f}"


def measure(cfg: ModelConfig, split: Split, within: EvalSet, popularity: np.ndarray) -> Runs:
    runs = Runs(cfg.name)
    eval_cfg = EvaluationConfig(ks=[K], metrics=["recall"], bootstrap_samples=0)
    seeds = 1 if cfg.kind == "popularity" else SEEDS
    for seed in range(seeds):
        model = build_model(cfg.model_copy(update={"seed": seed}))
        start = time.perf_counter()
        model.fit(split.train)
        runs.add("fit_s", time.perf_counter() - start)
        if model.history:  # epochs (two-tower) or iterations (WALS); popularity has none
            runs.add("s_per_epoch", runs.values["fit_s"][-1] / len(model.history))
        start = time.perf_counter()
        full = evaluate(model, split.test_set(), eval_cfg, item_popularity=popularity)
        eval_s = time.perf_counter() - start
        start = time.perf_counter()
        report = folding_report(model, split, k=K, neighbours=NEIGHBOURS, item_popularity=popularity)
        runs.add("fold_cost", (time.perf_counter() - start) / eval_s)
        inside = evaluate(model, within, eval_cfg, item_popularity=popularity)
        for key, value in report.to_dict().items():
            runs.add(key, value)
        runs.add("recall", full.summary[f"recall@{K}"])
        runs.add("recall_within", inside.summary[f"recall@{K}"])
        if seed == 0:
            runs.item_vectors = np.asarray(model.item_factors, dtype=np.float32)
        print(
            f"  {cfg.name} seed {seed}: folding@{K} {report.folding:.3f}, recall@{K} {full.summary[f'recall@{K}']:.3f}",
            flush=True,
        )
    return runs


# --------------------------------------------------------------------------- plots
def bar_chart(results: list[Runs], random_rate: float, popularity_rate: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"folding@{K}"
    names = [r.name for r in results]
    means = [r.mean(key) for r in results]
    sds = [statistics.stdev(r.values[key]) if len(r.values[key]) > 1 else 0.0 for r in results]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.barh(names, means, xerr=sds, color="tab:blue", alpha=0.8)
    ax.axvline(random_rate, color="tab:red", linestyle="--", label=f"random recommender ({random_rate:.2f})")
    ax.axvline(
        popularity_rate,
        color="tab:gray",
        linestyle=":",
        label=f"popularity reference ({popularity_rate:.2f})",
    )
    ax.invert_yaxis()
    ax.set_xlabel(f"folding@{K}: share of top-{K} from blocks the user never touched (mean ± sd over seeds)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(BAR_PNG, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """First two principal components of the L2-normalised vectors (what cosine retrieval sees)."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    centred = unit - unit.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def projection_plot(panels: list[Runs], item_blocks: np.ndarray, trained: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.8))
    for ax, runs in zip(np.atleast_1d(axes), panels, strict=True):
        assert runs.item_vectors is not None
        points = pca_2d(runs.item_vectors[trained])
        blocks = item_blocks[trained]
        for block in np.unique(blocks):
            sel = blocks == block
            ax.scatter(points[sel, 0], points[sel, 1], s=3, alpha=0.5, label=f"block {block}")
        ax.set_title(f"{runs.name}\nfolding@{K} {runs.mean(f'folding@{K}'):.3f}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[0].legend(markerscale=4, fontsize=8)
    fig.suptitle("item embeddings (L2-normalised), PCA to 2-D, coloured by block (seed 0)", fontsize=10)
    fig.tight_layout()
    with atomic_path(PCA_PNG, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- report
def write_markdown(results: list[Runs], data_name: str, split: Split, seconds: float, best: str) -> None:
    head = results[0]
    random_rate, pop_rate = head.mean(f"random@{K}"), head.mean(f"popularity@{K}")
    lines = [
        "## Folding per loss (bench_folding)",
        "",
        f"Data: {data_name}; {split.n_users:,} users, {split.n_items:,} items, "
        f"{split.train.nnz:,} train / {split.test.nnz:,} test interactions (random 80/20 split, seed 0). "
        f"Two-tower: dim 32, one shared hidden layer of 64, {EPOCHS} epochs, batch 2048, 128 negatives, lr 0.01; "
        "WALS: 32 factors, 10 iterations (its s/epoch is per ALS iteration). "
        f"{SEEDS} seed(s) per model (popularity is deterministic: 1). "
        f"Total {seconds:.0f} s on {os.cpu_count()} core(s).",
        "",
        *(
            [
                f"**Reduced run** (FOLDING_SEEDS={SEEDS}, FOLDING_EPOCHS={EPOCHS}, "
                f"FOLDING_ONLY={','.join(ONLY) or 'all'}): numbers are a smoke test, not the full comparison.",
                "",
            ]
            if SEEDS < 3 or EPOCHS < 5 or ONLY
            else []
        ),
        f"References measured in the same run: a uniformly random recommender folds **{random_rate:.3f}** "
        f"(closed form), popularity **{pop_rate:.3f}**. Ratio = folding@{K} / random@{K} "
        "(0 = blocks kept apart, 1 = lists ignore the blocks).",
        "",
        f"| model | folding@{K} | ratio to random | score_folding | neighbour_cross_block@{NEIGHBOURS} "
        f"| recall@{K} | recall@{K} within block | fit s | s/epoch | diagnostic cost / evaluate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.cell(f'folding@{K}')} | {r.mean(f'folding@{K}') / random_rate:.2f} "
            f"| {r.cell('score_folding')} | {r.cell(f'neighbour_cross_block@{NEIGHBOURS}')} "
            f"| {r.cell('recall')} | {r.cell('recall_within')} | {r.mean('fit_s'):.1f} "
            f"| {r.fixed('s_per_epoch')} "
            f"| {r.mean('fold_cost'):.2f}x |"
        )
    lines += [
        "",
        f"![folding@{K} per loss]({BAR_PNG.name})",
        "",
        f"![item embeddings: {CONTROL} vs {best}]({PCA_PNG.name})",
        "",
        f"Best loss by folding@{K} (then recall): **{best}**. Recall within block masks every item outside "
        "the user's block, so it separates ranking quality inside the right block from folding. "
        "Popularity's embedding views are degenerate (1-d vectors: every cosine is 1).",
        "",
    ]
    write_text_atomic(RESULTS, "\n".join(lines))


def main() -> None:
    started = time.perf_counter()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-folding-") as work:
        data, data_name = block_disjoint_data(Path(work))
    from recsys.data.splits import split_data

    split = split_data(data, SplitConfig(protocol="random", test_fraction=0.2, seed=0))
    popularity = np.bincount(split.train.indices, minlength=split.n_items)
    within = within_block_eval_set(split)
    print(f"folding benchmark on {data_name}: {SEEDS} seed(s), {EPOCHS} epoch(s)", flush=True)
    configs = [c for c in model_configs() if not ONLY or c.name in ONLY]
    results = [measure(cfg, split, within, popularity) for cfg in configs]
    towers = [r for r in results if r.name not in {CONTROL, "positives_only (id only)", "wals", "popularity"}]
    best = min(towers or results, key=lambda r: (round(r.mean(f"folding@{K}"), 3), -r.mean("recall"))).name
    control = next((r for r in results if r.name == CONTROL), results[0])
    bar_chart(results, control.mean(f"random@{K}"), control.mean(f"popularity@{K}"))
    assert split.item_blocks is not None
    projection_plot([control, next(r for r in results if r.name == best)], split.item_blocks, popularity > 0)
    write_markdown(results, data_name, split, time.perf_counter() - started, best)
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
