"""A run promotes on its own only when it ran whole and tested enough users (`promotion.min_test_users`).

Found on the first day: an Amazon Beauty sample under movielens.toml kept 23 users after the k-core,
5 of 6 models failed (tuning found no validation user), the run exited 1, and popularity - scored
on 1 test user, without a warning - became the first champion of `movielens-best`. Here a log of a
dozen users under the same protocol plays that run, on the session's MLflow SQLite store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import load_config

USERS = 12


def _tiny_log(path: Path) -> Path:
    """12 users x 5-7 five-star ratings of 20 items: after the 5-core and the 20% held out, one test
    user and no validation user, as the Amazon sample had (seeded: the same log every time)."""
    rng = np.random.default_rng(1)
    rows = [(f"u{u}", f"i{i}", 1_600_000_000 + 1000 * u + j, 5.0) for u in range(USERS)
            for j, i in enumerate(rng.choice(20, size=rng.integers(5, 8), replace=False))]  # fmt: skip
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "rating"], orient="row").write_csv(path)
    return path


def _config(tmp: Path, mlflow_uri: str, models: str, *extra: str):
    repo = Path(__file__).resolve().parents[2]
    return load_config(repo / "pipelines/configs/movielens.toml", [
        f'data.source="{_tiny_log(tmp / "tiny.csv")}"', f'data.processed_dir="{tmp / "processed"}"',
        f'data.raw_dir="{tmp / "raw"}"', "evaluation.bootstrap_samples=50", "folding.enabled=false",
        f'tracking.tracking_uri="{mlflow_uri}"', f'tracking.experiment="refused-{tmp.name}"',
        f'tracking.model_name_prefix="{tmp.name}"', f'promotion.registered_model="{tmp.name}-best"',
        f"models={models}", *extra,
    ])  # fmt: skip


def _champion(cfg, mlflow_uri: str):
    from mlflow import MlflowClient

    from recsys.tracking.registry import alias_version

    return alias_version(MlflowClient(mlflow_uri), cfg.promotion.registered_model, "champion")


@pytest.mark.slow
def test_a_run_with_a_failed_model_promotes_nothing_and_names_recsys_promote(
    prefect_harness, tmp_path, shared_mlflow_uri
):
    """Through the Prefect flow `recsys run` uses: the tuned model fails (no validation user), the
    popularity model finishes; with the user floor off, only the failure keeps the line empty."""
    from flows.pipeline import PipelineFailed, training_flow_for

    models = '[{name="popularity", kind="popularity"}, {name="ease", kind="ease", tuning={n_trials=2}}]'
    cfg = _config(tmp_path, shared_mlflow_uri, models, "promotion.min_test_users=0")
    with pytest.raises(PipelineFailed) as failed:  # `recsys run` exits 1
        training_flow_for(cfg)(cfg, True)
    summary = failed.value.summary

    assert [m["status"] for m in summary["models"]] == ["ok", "failed"]
    assert "no validation user" in summary["models"][1]["error"]
    promotion = summary["promotion"]
    assert promotion["reason"].startswith("not promoted automatically: 1 of 2 models failed (ease)")
    assert "`recsys promote`" in promotion["reason"] and "\n" not in promotion["reason"]
    assert not promotion["promoted"] and summary["champion"] is None
    assert _champion(cfg, shared_mlflow_uri) is None  # before the fix: popularity, chosen on 1 user


def test_too_few_test_users_choose_no_champion_and_are_warned_about_with_one_model(tmp_path, shared_mlflow_uri):
    """Popularity alone, on one test user: the run neither promotes it (the default floor, 20)
    nor stays silent about the size of its test set (the warning needed two finished models).
    `recsys promote` (run_promotion) still promotes it when asked to."""
    from mlflow import MlflowClient

    from pipelines.promote import run_promotion
    from pipelines.report import SMALL_TEST_TAG
    from pipelines.run import run_pipeline

    cfg = _config(tmp_path, shared_mlflow_uri, '[{name="popularity", kind="popularity"}]')
    assert cfg.promotion.min_test_users == 20
    result = run_pipeline(cfg, log=lambda _: None)

    users = result.dataset["warm_test_users"]
    assert users == 1 and [m.status for m in result.models] == ["ok"]
    reason = result.promotion["reason"]
    assert reason.startswith(f"not promoted automatically: only {users} test user(s) with a training history, "
                             "under promotion.min_test_users = 20")  # fmt: skip
    assert "`recsys promote`" in reason and not result.promotion["promoted"]
    assert _champion(cfg, shared_mlflow_uri) is None

    parent = MlflowClient(shared_mlflow_uri).get_run(result.mlflow_parent_run_id)
    assert parent.data.tags[SMALL_TEST_TAG].startswith(f"only {users} test user(s): too few")

    deliberate = run_promotion(cfg, {m.name: m.mlflow_run_id for m in result.models})
    assert deliberate.promoted and _champion(cfg, shared_mlflow_uri).run_id == result.models[0].mlflow_run_id
    again = run_pipeline(cfg, log=lambda _: None)  # refused again: its summary names the champion that serves
    assert not again.promotion["promoted"] and again.promotion["champion_run_id"] == result.models[0].mlflow_run_id
    assert again.promotion["champion"] == "popularity"
