"""A blend in a whole run (`recsys run`'s path, the session's real SQLite store): it trains in a wave
after its members, from the run's private workspace, is tuned, evaluated and logged like any model,
and serves through the logged pyfunc; a member that did not train is left out with a warning, and a
blend left with fewer than two members is skipped (the run goes on)."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow import MlflowClient

from recsys.config import load_config

TINY = [
    "data.synthetic.n_users=120",
    "data.synthetic.n_items=60",
    "data.synthetic.n_clusters=3",
    "data.synthetic.interactions_per_user=12",
    "data.min_user_interactions=2",
    "split.validation_fraction=0.15",
    "evaluation.ks=[5, 20]",
    "evaluation.bootstrap_samples=20",
    "folding.enabled=false",
    "promotion.auto=false",
    "tracking.register_models=false",
]
MODELS = ", ".join([
    '{name="pop", kind="popularity"}',
    '{name="wals", kind="wals", factors=8, iterations=3, threads=1}',
    '{name="ease", kind="ease", max_items=10}',  # 60 items: skipped
    '{name="mix", kind="blend", members=["ease", "wals", "pop"], tuning={n_trials=3}}',
    '{name="pair", kind="blend", members=["ease", "wals"]}',
])  # fmt: skip


def test_a_blend_trains_after_its_members_is_logged_and_served_and_skips_what_did_not_train(shared_mlflow_uri, tmp_path: Path):
    from pipelines.run import run_pipeline

    cfg = load_config(None, [
        *TINY, f'data.processed_dir="{tmp_path / "p"}"', f'data.raw_dir="{tmp_path / "raw"}"',
        f"tracking.tracking_uri={shared_mlflow_uri}", "tracking.experiment=blend-run", f"models=[{MODELS}]",
    ])  # fmt: skip
    lines: list[str] = []
    result = run_pipeline(cfg, log=lines.append)

    status = {m.name: m.status for m in result.models}
    assert status == {"pop": "ok", "wals": "ok", "ease": "skipped", "mix": "ok", "pair": "skipped"}
    text = "\n".join(lines)
    assert text.index("finished wals") < text.index("training mix") and text.index("finished pop") < text.index("training mix")
    assert "warning: model 'mix' (a blend): members ['ease'] did not train in this run (skipped or failed); blending ['wals', 'pop']" in lines
    pair = next(m for m in result.models if m.name == "pair")
    assert "needs at least 2 trained members" in pair.error and pair.mlflow_run_id is None  # no run opened
    mix = next(m for m in result.models if m.name == "mix")
    assert mix.metrics["recall@20"] > 0 and mix.tuning["trials"] == 3 and mix.mlflow_run_id
    assert set(mix.tuning["best_params"]) == {"weights.wals", "weights.pop"}  # ease is not searched
    # WALS alone beats blending in popularity on users the half searches did not see: kept, and logged
    assert mix.tuning["best_params"] == {"weights.wals": 1.0, "weights.pop": 0.0}
    assert mix.tuning["cross_check"]["kept_searched"] and mix.tuning["cross_check"]["p_value"] < 0.05
    logged = MlflowClient(shared_mlflow_uri).get_run(mix.mlflow_run_id).data
    assert logged.tags["recsys.tuning.cross_check"] == "searched"
    assert logged.metrics["tuning_cross_check_p"] == pytest.approx(mix.tuning["cross_check"]["p_value"])
    assert any("cross-check on 93 validation users" in line and "searched parameters kept" in line for line in lines)

    local = MlflowClient(shared_mlflow_uri).download_artifacts(mix.mlflow_run_id, "model", str(tmp_path))
    served = mlflow.pyfunc.load_model(local)
    known = served.predict(pd.DataFrame({"user_id": ["u00003"], "k": [5]}))
    assert known["source"].tolist() == ["model"] and len(known["item_ids"][0]) == 5
    new = served.predict(pd.DataFrame({"user_id": ["new"], "k": [5], "history": [["i00042", "i00022", "i00004"]]}))
    assert new["source"].tolist() == ["fold_in"] and len(new["item_ids"][0]) == 5
