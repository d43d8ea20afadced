"""Diagnostic plots logged with every model run (matplotlib Figure objects with the Agg canvas:
no display needed and no pyplot global state, so concurrent model threads can plot safely).

Each function takes plain arrays/dicts and writes one PNG, so they work from a run's logged data as
well as from live objects, and the tracker stays free of plotting details.
"""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import wraps
from pathlib import Path

import numpy as np

from recsys.files import atomic_path

_AT_K = re.compile(r"^(?P<metric>[a-z_]+)@(?P<k>\d+)$")

RC_LOCK = threading.RLock()
"""Held while a plot is drawn and saved, and while Optuna's plots (`recsys.tuning.plot_study`) run
with their process-wide `plt.style.use("ggplot")` inside a `matplotlib.rc_context`: a figure reads
rcParams as its artists are made and saved, so one of ours drawn in another thread during that
window would come out in ggplot style."""


def _styled(plot: Callable[..., Path | None]) -> Callable[..., Path | None]:
    """`plot` drawn and saved under RC_LOCK (see there), its figure collected young (see
    `_collected_young`)."""

    @wraps(plot)
    def drawn(*args, **kwargs):
        with RC_LOCK, _collected_young():
            return plot(*args, **kwargs)

    return drawn


@contextmanager
def _collected_young() -> Iterator[None]:
    """Pause the cyclic garbage collector while a figure is drawn and saved, then collect the
    youngest generation, where all of the figure still is.

    Why: a matplotlib figure is a web of reference cycles that only the cyclic collector frees.
    Drawn with the collector on, the figure outlived the young collections its own allocations set
    off and was promoted to the oldest generation, which only a full collection frees: a walk of
    the whole heap of a process that imported torch, MLflow and Prefect (~850k objects, 0.4-0.6
    CPU-s each). The 21 figures of the default `recsys run` piled up garbage there (~4,700 objects
    a figure: benchmarks/results/plots_gc.md) and set off one such collection more per run. The
    pause is process-wide but lasts one figure (~0.1 s); what other threads allocate meanwhile is
    collected young with it. A process that turned the collector off keeps it off."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect(0)
        if enabled:
            gc.enable()


def _figure(figsize: tuple[float, float]):
    """A pyplot-free Figure: no global state, so model threads can plot at the same time."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def metric_curve(summary: Mapping[str, float], metric: str = "recall") -> tuple[np.ndarray, np.ndarray]:
    """(ks, values) of `metric@k` in a summary dict, sorted by k."""
    pairs = sorted(
        (int(m["k"]), float(v))
        for key, v in summary.items()
        if (m := _AT_K.match(key)) and m["metric"] == metric
    )
    if not pairs:
        return np.array([], dtype=np.int64), np.array([], dtype=np.float64)
    ks, values = zip(*pairs, strict=True)
    return np.asarray(ks), np.asarray(values)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def curve_styles(n: int) -> list[dict]:
    """A distinct (colour, marker, line style) per curve: tab10 colours x markers x two line styles,
    so 20 runs stay tellable apart (colour alone repeats after ten)."""
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    return [
        {
            "color": colours[i % len(colours)],
            "marker": MARKERS[(i // len(colours) + i) % len(MARKERS)],
            "linestyle": "-" if (i // len(colours)) % 2 == 0 else "--",
        }
        for i in range(n)
    ]


@_styled
def plot_metric_at_k(
    curves: Mapping[str, Mapping[str, float]], path: str | Path, metric: str = "recall", title: str | None = None
) -> Path:
    """`metric@k` against k, one line per model (a single model is a one-entry mapping). With more
    than a few curves the legend goes outside the axes, on the right, so it hides no line."""
    drawn = [(name, *metric_curve(summary, metric)) for name, summary in curves.items()]
    drawn = [(name, ks, values) for name, ks, values in drawn if ks.size]
    outside = len(drawn) > 4
    fig = _figure((10, 4.8) if outside else (6, 4))
    ax = fig.subplots()
    ax.set_title(f"{metric}@k" + (f": {title}" if title else ""), fontsize="medium")
    for (name, ks, values), style in zip(drawn, curve_styles(len(drawn)), strict=True):
        ax.plot(ks, values, label=name, markersize=5, linewidth=1.2, **style)
    ax.set_xlabel("k")
    ax.set_ylabel(f"{metric}@k")
    ax.grid(True, alpha=0.3)
    if drawn and outside:
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  ncol=1 if len(drawn) <= 22 else 2)  # fmt: skip
        fig.subplots_adjust(left=0.08, right=0.62, bottom=0.12, top=0.95)
        return _save(fig, path, adjust=False)
    if drawn:
        ax.legend(fontsize="small")
    return _save(fig, path)


def best_step(history: Sequence[Mapping[str, float]]) -> int | None:
    """The step (epoch or iteration) with the best validation score (`val_*`, higher is better,
    first of ties: what early stopping keeps), or None without validation."""
    key = next((k for entry in history for k in entry if k.startswith("val_")), None)
    scored = [(float(e[key]), -int(e.get("step", i))) for i, e in enumerate(history) if key and key in e]
    scored = [(v, s) for v, s in scored if np.isfinite(v)]
    return -max(scored)[1] if scored else None


@_styled
def plot_history(
    history: Sequence[Mapping[str, float]],
    path: str | Path,
    max_panels: int = 6,
    title: str | None = None,
    unit: str = "epoch",
) -> Path | None:
    """Training/validation curves: one panel per metric recorded in `model.history` (None when
    empty), integer `unit` ticks on the x axis and the best validation step marked."""
    fig = history_figure(history, max_panels, title, unit)
    return None if fig is None else _save(fig, path)


def history_figure(
    history: Sequence[Mapping[str, float]], max_panels: int = 6, title: str | None = None, unit: str = "epoch"
):
    """The figure `plot_history` saves (None without a curve: fewer than two steps). A closed-form
    model (EASE) records one entry, its fit summary: drawn, it was a page of lone dots against
    "epochs" 0.95-1.05 in the MLflow UI; those values stay in the run's metrics."""
    from matplotlib.ticker import MaxNLocator

    names = sorted({k for entry in history for k in entry if k != "step"})[:max_panels]
    if not names or len(history) < 2:
        return None
    fig = _figure((6, 1.0 + 2.0 * len(names)))
    axes = fig.subplots(len(names), 1, squeeze=False, sharex=True)
    steps = np.array([entry.get("step", i) for i, entry in enumerate(history)], dtype=np.float64)
    best = best_step(history)
    for ax, name in zip(axes[:, 0], names, strict=True):
        values = np.array([entry.get(name, np.nan) for entry in history], dtype=np.float64)
        ax.plot(steps, values, marker=".")
        if best is not None:
            ax.axvline(best, color="tab:red", linestyle="--", linewidth=1, label=f"best {unit} {best}")
        ax.set_ylabel(name, fontsize="small")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if best is not None:
        axes[0, 0].legend(fontsize="small")
    axes[-1, 0].set_xlabel(unit)
    axes[0, 0].set_title("training curves" + (f": {title}" if title else ""), fontsize="medium")
    return fig


@_styled
def plot_popularity_bias(
    recommended_items: np.ndarray, item_popularity: np.ndarray, path: str | Path, title: str | None = None
) -> Path:
    """How popular are recommended items compared with the catalogue? Two histograms of
    log10(1 + training count): over every catalogue item, and over every recommendation slot."""
    popularity = np.asarray(item_popularity, dtype=np.float64)
    items = np.asarray(recommended_items).ravel()
    items = items[items >= 0]
    catalogue = np.log10(1.0 + popularity)
    recommended = np.log10(1.0 + popularity[items]) if items.size else np.array([])
    bins = np.linspace(0.0, max(float(catalogue.max(initial=0.0)), 1e-6), 30)
    fig = _figure((6, 4))
    ax = fig.subplots()
    ax.hist(catalogue, bins=bins, density=True, alpha=0.5, label="catalogue items")
    if recommended.size:
        ax.hist(recommended, bins=bins, density=True, alpha=0.5, label="recommendations")
    ax.set_xlabel("log10(1 + training interactions)")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    ax.set_title("popularity of recommendations" + (f": {title}" if title else ""), fontsize="medium")
    return _save(fig, path)


EXACT_PCA_MAX_DIM = 256
"""Up to this many dimensions the 2-D PCA is a full thin SVD (n x d^2 work); wider vectors (EASE's
are n_items wide) get their top two components from ARPACK instead."""


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """First two principal components (centred SVD); zeros when fewer than two dimensions vary.

    Only two components are drawn, so wide vectors do not pay for all of them: a full SVD of EASE's
    8,904 x 8,904 item matrix held a Last.fm-sized run in the plot for over ten minutes, where two
    ARPACK singular vectors (seeded start vector, deterministic) take about a second."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    if x.shape[0] < 2 or x.shape[1] == 0:
        return np.zeros((x.shape[0], 2))
    if min(x.shape) > max(EXACT_PCA_MAX_DIM, 3):
        from scipy.sparse.linalg import svds

        start = np.random.default_rng(0).standard_normal(min(x.shape))
        u, s, _ = svds(x, k=2, v0=start, solver="arpack")
        order = np.argsort(s)[::-1]
        u, s = u[:, order], s[order]
    else:
        u, s, _ = np.linalg.svd(x, full_matrices=False)
    coords = u[:, :2] * s[:2]
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((coords.shape[0], 2 - coords.shape[1]))])
    return coords


def popularity_deciles(item_popularity: np.ndarray) -> np.ndarray:
    """Decile (0..9) of each item's popularity rank; ties share the lower rank's decile."""
    popularity = np.asarray(item_popularity, dtype=np.float64)
    ranks = np.argsort(np.argsort(popularity, kind="stable"), kind="stable")
    return np.minimum((ranks * 10) // max(len(popularity), 1), 9)


@_styled
def plot_item_embeddings(
    item_vectors: np.ndarray,
    path: str | Path,
    labels: np.ndarray | None = None,
    label_name: str = "block",
    title: str | None = None,
) -> Path:
    """2-D PCA of item vectors coloured by `labels` (planted block, or popularity decile)."""
    return _save(item_embeddings_figure(item_vectors, labels, label_name, title), path)


MAX_DISCRETE_LABELS = 20
"""Up to this many distinct labels get one colour each (tab10 / tab20); more get a continuous map."""


def item_embeddings_figure(
    item_vectors: np.ndarray, labels: np.ndarray | None = None, label_name: str = "block", title: str | None = None
):
    """The figure `plot_item_embeddings` saves. Few labels get one colour each and a colour bar with
    one band per label, its tick in the band's middle: tab10 stretched over 8 blocks showed ten
    bands (two in colours no item had) with the ticks on band edges, so a block's colour could
    not be read off the bar."""
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap

    coords = pca_2d(item_vectors)
    fig = _figure((5.5, 5))
    ax = fig.subplots()
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=6)
    else:
        values, codes = np.unique(np.asarray(labels), return_inverse=True)
        if len(values) <= MAX_DISCRETE_LABELS:
            base = colormaps["tab10" if len(values) <= 10 else "tab20"]
            cmap = ListedColormap([base(i) for i in range(len(values))])
            norm = BoundaryNorm(np.arange(len(values) + 1) - 0.5, len(values))
            scatter = ax.scatter(coords[:, 0], coords[:, 1], c=codes, s=6, cmap=cmap, norm=norm)
            bar = fig.colorbar(scatter, ax=ax, label=label_name, ticks=np.arange(len(values)))
            bar.ax.set_yticklabels([str(v) for v in values])
        else:
            scatter = ax.scatter(coords[:, 0], coords[:, 1], c=labels, s=6, cmap="viridis")
            fig.colorbar(scatter, ax=ax, label=label_name)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("item embeddings (PCA)" + (f": {title}" if title else ""), fontsize="medium")
    return fig


def _save(fig, path: str | Path, adjust: bool = True) -> Path:
    target = Path(path)
    if adjust:
        fig.subplots_adjust(
            left=0.16, right=0.95, bottom=0.12, top=0.92, hspace=0.35
        )  # tight_layout costs ~0.3 s
    # A temp file of this writer's own (two `recsys compare --plot` of one path shared one name, so
    # one published the other's half-written file, or found it gone), removed if the save fails.
    with atomic_path(target, suffix=f".tmp{target.suffix or '.png'}") as tmp:
        fig.savefig(tmp, dpi=110)
    return target
