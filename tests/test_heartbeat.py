"""A line a minute while a model trains (pipelines.heartbeat): a log that is not a terminal showed
nothing between "training X" and "finished X", 19 minutes for one two-tower trial on a large log."""

from __future__ import annotations

import pipelines.heartbeat as heartbeat
from pipelines.heartbeat import with_heartbeat


def test_a_line_at_most_every_interval_and_the_models_callback_still_decides():
    lines: list[str] = []
    stop = with_heartbeat("tt", lines.append, lambda step, metrics: step == 2, every_s=0.0)
    assert stop(1, {"loss": 0.5, "val_recall@20": 0.25, "lr": 0.01}) is False
    assert stop(2, {"loss": 0.4}) is True
    assert lines[0].startswith("  tt: epoch 1, loss 0.5, val_recall@20 0.25 (") and len(lines) == 2
    quiet: list[str] = []
    with_heartbeat("tt", quiet.append)(1, {"loss": 0.5})  # a minute has not passed
    assert quiet == []


def test_a_run_logs_the_heartbeat_of_a_model_and_of_a_tuning_trial(monkeypatch, tmp_path):
    from pipelines.run import run_pipeline
    from recsys.config import load_config

    monkeypatch.setattr(heartbeat, "EVERY_S", 0.0)
    cfg = load_config(None, [
        "data.synthetic.n_users=60", "data.synthetic.n_items=40", "data.min_user_interactions=2",
        "folding.enabled=false", "evaluation.bootstrap_samples=10", "split.validation_fraction=0.2",
        f'data.processed_dir="{tmp_path / "p"}"', f'data.raw_dir="{tmp_path / "raw"}"',
        'models=[{name="w", kind="wals", factors=4, iterations=2}, '
        '{name="t", kind="wals", factors=4, iterations=2, tuning={n_trials=1}}]',
    ])  # fmt: skip
    lines: list[str] = []
    run_pipeline(cfg, tracking=False, log=lines.append)
    assert any(line.startswith("  w: epoch 1") for line in lines), lines
    assert any(line.startswith("  t trial 0: epoch 1") for line in lines), lines
