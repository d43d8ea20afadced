"""Training-curve plots say which model and run they belong to, mark the best epoch, and tick
whole epochs."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.ticker import MaxNLocator

from recsys.tracking.plots import best_step, history_figure, item_embeddings_figure, plot_history

HISTORY = [
    {"step": 1.0, "loss": 0.9, "val_recall@20": 0.20},
    {"step": 2.0, "loss": 0.7, "val_recall@20": 0.31},
    {"step": 3.0, "loss": 0.6, "val_recall@20": 0.29},
]


def test_best_step_is_the_best_validation_score_first_of_ties():
    assert best_step(HISTORY) == 2
    assert best_step([*HISTORY, {"step": 4.0, "val_recall@20": 0.31}]) == 2
    assert best_step([{"step": 1.0, "loss": 0.5}]) is None  # no validation: nothing to mark


def test_training_curves_are_titled_marked_and_ticked_by_whole_epochs(tmp_path):
    fig = history_figure(HISTORY, title="two_tower_nce (two_tower), run 0123abcd")
    axes = fig.axes
    assert "two_tower_nce" in axes[0].get_title() and "run 0123abcd" in axes[0].get_title()
    for ax in axes:
        marks = [line for line in ax.get_lines() if line.get_label() == "best epoch 2"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [2, 2]
        assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
        assert all(float(t).is_integer() for t in ax.get_xticks())
    assert axes[-1].get_xlabel() == "epoch"
    assert plot_history(HISTORY, tmp_path / "curves.png", title="x").is_file()


def test_a_one_step_history_draws_no_training_curves(tmp_path):
    """EASE's history is one fit summary: one dot per panel against epochs 0.95-1.05 is no curve."""
    assert plot_history([{"step": 1.0, "l2": 422.2, "nonzero_weights": 1e6}], tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()


def test_the_embedding_colour_bar_has_one_band_per_block_in_the_points_colours():
    """tab10 stretched over 8 blocks: ten bands, two in colours no item had, ticks on band edges."""
    import numpy as np

    blocks = np.arange(80) % 8
    fig = item_embeddings_figure(np.random.default_rng(0).normal(size=(80, 4)), blocks, "item block")
    scatter, bar_axis = fig.axes[0].collections[0], fig.axes[1]
    assert [t.get_text() for t in bar_axis.get_yticklabels()] == [str(b) for b in range(8)]
    colours = scatter.to_rgba(scatter.get_array())
    bands = [tuple(scatter.cmap(scatter.norm(tick))) for tick in bar_axis.get_yticks()]
    assert len(set(bands)) == 8 and scatter.cmap.N == 8  # one colour per block, no unused ones
    for block in range(8):
        assert tuple(colours[np.flatnonzero(blocks == block)[0]]) == bands[block]


def test_pca_of_wide_vectors_takes_two_components_without_a_full_svd(monkeypatch):
    """EASE's item vectors are n_items wide: a full SVD of 8,904 x 8,904 held a run in this plot for
    over ten minutes. Wide vectors get the same two components (up to sign) from ARPACK."""
    import numpy as np

    from recsys.tracking import plots

    rng = np.random.default_rng(0)
    planted = rng.standard_normal((400, 2)) @ rng.standard_normal((2, 300)) * 5
    wide = (planted + rng.standard_normal((400, 300))).astype(np.float32)
    centred = wide.astype(np.float64) - wide.astype(np.float64).mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    exact = u[:, :2] * s[:2]
    full_svd = np.linalg.svd

    def no_full_svd(x, *args, **kwargs):
        assert min(np.shape(x)) <= plots.EXACT_PCA_MAX_DIM, "full SVD of wide vectors"
        return full_svd(x, *args, **kwargs)

    monkeypatch.setattr(np.linalg, "svd", no_full_svd)
    coords = plots.pca_2d(wide)
    np.testing.assert_allclose(np.abs(coords), np.abs(exact), atol=1e-6 * np.abs(exact).max())
    narrow = plots.pca_2d(wide[:, :8])  # narrow vectors: the exact SVD, as before
    assert narrow.shape == (400, 2)


def test_a_plot_that_fails_to_save_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    """The temp file was one fixed name per target (shared by two writers of one plot) and stayed
    behind when saving failed (Ctrl-C, a full disk)."""
    from matplotlib.figure import Figure

    target = tmp_path / "curves.png"
    assert plot_history(HISTORY, target) == target
    before = target.read_bytes()

    def interrupted(self, path, **kwargs):
        Path(path).write_bytes(b"half a png")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plot_history(HISTORY, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


@pytest.mark.parametrize("collector_on", [True, False])
def test_a_drawn_plot_leaves_no_garbage_for_a_full_collection(tmp_path, collector_on):
    """A figure is a web of reference cycles. Drawn with the collector on, it was promoted to the
    oldest generation, which only a full collection frees (a walk of the whole heap: 0.4-0.6 CPU-s
    in a `recsys run` process), and the run's figures set off one such collection more. The plot
    now collects it young itself, leaves the collector as it found it, and still writes a whole PNG."""
    import gc

    import numpy as np
    from PIL import Image

    from recsys.tracking.plots import plot_item_embeddings

    vectors = np.random.default_rng(0).normal(size=(200, 8))
    plot_history(HISTORY, tmp_path / "warm.png")  # the first figure fills matplotlib's caches
    was = gc.isenabled()
    try:
        gc.enable() if collector_on else gc.disable()
        gc.collect()
        curves = plot_history(HISTORY, tmp_path / "curves.png", title="x")
        pca = plot_item_embeddings(vectors, tmp_path / "pca.png", np.arange(200) % 4, title="x")
        assert gc.isenabled() is collector_on
        left = gc.collect()
    finally:
        gc.enable() if was else gc.disable()
    # Without the young collection ~4,900 objects of the two figures are left; the bound leaves room
    # for cyclic garbage other threads of a test worker make meanwhile (40 objects seen in a CI run).
    assert left < 1000, left
    for png in (curves, pca):
        with Image.open(png) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 500
