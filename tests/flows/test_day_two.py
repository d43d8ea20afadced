"""Day two: scheduled runs on a growing landing directory, as `recsys schedule` runs them.

Run 1 (Prefect flow, tracking on, scheduled: rolling split) trains on the first batch; the same
config and data give identical metrics without Prefect and tracking, and through `recsys train` +
`recsys evaluate`. A second batch lands (more days, users seen only in the newest days, and repeats of old pairs
inside the new test window); run 2
re-scores run 1's champion on its rolling forward window - never on a pair the champion trained on -
and decides; `recsys promote` on the same registry reaches the very same decision.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recsys.config import load_config

START = datetime(2024, 1, 1, tzinfo=UTC)
MODELS = (
    'models=[{name="pop", kind="popularity"}, {name="wals", kind="wals", factors=8, iterations=4},'
    ' {name="tt_a", kind="two_tower", dim=16, epochs=2, num_negatives=16, batch_size=128, lr=0.05},'
    ' {name="tt_b", kind="two_tower", dim=16, epochs=2, num_negatives=16, batch_size=128, lr=0.05,'
    ' loss="sampled_softmax"}]'
)


def planted_log(seed: int = 0) -> pl.DataFrame:
    """150 users in 4 taste clusters over 60 items, 16 in-cluster items each at random days 0-60;
    20 more users join on day 54 (they are cold in the newest test window)."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(170):
        cluster = user % 4
        pool = np.arange(cluster, 60, 4)
        items = rng.choice(pool, size=12, replace=False, p=np.linspace(2, 1, pool.size) / np.linspace(2, 1, pool.size).sum())
        days = rng.uniform(54, 60, size=12) if user >= 150 else rng.uniform(0, 60, size=12)
        rows += [(f"u{user}", f"i{item}", START + timedelta(days=float(d))) for item, d in zip(items, days, strict=True)]
    return pl.DataFrame(rows, schema=["user", "item", "time"], orient="row").with_columns(
        pl.col("time").dt.epoch("s").alias("timestamp"), pl.lit(1.0).alias("rating")
    ).drop("time")


def day_cut(frame: pl.DataFrame, low: float, high: float) -> pl.DataFrame:
    seconds = int(START.timestamp())
    return frame.filter((pl.col("timestamp") >= seconds + low * 86400) & (pl.col("timestamp") < seconds + high * 86400))


def overrides(tmp: Path, uri: str) -> list[str]:
    return [
        f'data.source="{tmp / "landing"}"', f'data.processed_dir="{tmp / "processed"}"',
        f'data.raw_dir="{tmp / "raw"}"', 'data.columns.user="user"', 'data.columns.item="item"',
        'data.columns.time="timestamp"', 'data.columns.weight="rating"',
        "split.window_days=7", "evaluation.ks=[10, 20]", "evaluation.bootstrap_samples=100",
        "folding.enabled=false", "orchestration.max_workers=2", "orchestration.threads_per_model=1",
        f'tracking.tracking_uri="{uri}"', f'tracking.experiment="day-two-{tmp.name}"',
        f'tracking.model_name_prefix="{tmp.name}"', f'promotion.registered_model="{tmp.name}-best"',
        "tracking.register_models=false", MODELS,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def first_runs(prefect_harness, prefect_console, tmp_path_factory, shared_mlflow_uri):
    """Batch 1 (days 0-45) in the landing directory; run 1 on Prefect (tracking, scheduled), the same
    in-process without tracking, and `recsys evaluate --train` (rolling set explicitly)."""
    from typer.testing import CliRunner

    from flows.pipeline import training_flow_for
    from pipelines.run import run_pipeline
    from recsys.cli import app

    tmp = tmp_path_factory.mktemp("daytwo")
    (tmp / "landing").mkdir()
    log = planted_log()
    day_cut(log, 0, 45).write_csv(tmp / "landing" / "batch-1.csv")
    sets = overrides(tmp, shared_mlflow_uri)
    cfg = load_config(None, sets)
    with prefect_console() as console:
        run1 = training_flow_for(cfg)(cfg, True, True)
    quiet = run_pipeline(cfg, tracking=False, scheduled=True, log=lambda _: None).to_json()
    out = tmp / "evaluate.json"
    args = ["evaluate", "--train", "--models", str(tmp / "models"), "--json", str(out)]
    for assignment in [*sets, 'split.protocol="rolling"']:
        args += ["--set", assignment]
    cli = CliRunner().invoke(app, args)
    assert cli.exit_code == 0, cli.output
    return tmp, sets, log, run1, quiet, json.loads(out.read_text()), console.getvalue()


@pytest.mark.slow
def test_the_flow_logs_which_columns_its_ingest_took(first_runs):
    printed = first_runs[-1]
    assert "columns: user=user, item=item, time=timestamp, weight=rating" in printed, printed[-2000:]
    assert "kept: " in printed and "(steps: aggregate" in printed, printed[-2000:]


@pytest.mark.slow
def test_same_config_data_and_threads_give_identical_metrics_on_every_path(first_runs, shared_mlflow_uri):
    _, _, _, run1, quiet, cli, _ = first_runs
    assert run1["dataset"]["split"] == "rolling"  # scheduled + timestamps: the rolling protocol
    prefect = {m["name"]: m["metrics"] for m in run1["models"]}
    in_process = {m["name"]: m["metrics"] for m in quiet["models"]}
    by_cli = {name: {k: float(v) for k, v in entry["metrics"].items()} for name, entry in cli.items()}
    assert prefect == in_process == by_cli  # exactly: two two-towers trained concurrently in threads
    client = mlflow.MlflowClient(shared_mlflow_uri)
    parent = client.get_run(run1["mlflow_parent_run_id"]).data
    params = parent.params
    assert params["orchestration.threads_per_model"] == "1" and params["evaluation.threads"] == "1"
    assert params["split.protocol"] == "rolling"
    # the MLflow UI's run page shows the comparison as the run's description
    description = parent.tags["mlflow.note.content"]
    assert description.startswith("# ") and "| model |" in description
    assert all(f"| {m['name']}" in description for m in run1["models"])


@pytest.mark.slow
def test_second_scheduled_run_decides_like_recsys_promote_and_never_on_leaked_pairs(first_runs, shared_mlflow_uri):
    from typer.testing import CliRunner

    from flows.pipeline import training_flow_for
    from recsys.cli import app
    from recsys.tracking.registry import CHAMPION, TAG_DECISION, TAG_REASON, alias_version
    from recsys.tracking.split_artifact import load_run_split

    tmp, sets, log, run1, _, _, _ = first_runs
    client = mlflow.MlflowClient(shared_mlflow_uri)
    registry = f"{tmp.name}-best"
    assert run1["promotion"]["decision"] == "promoted" and run1["promotion"]["selection"] == "validation"
    # `recsys run --json`: the champion after the run, and none compared with on a new line
    assert run1["promotion"]["champion_version"] == run1["promotion"]["challenger_version"] is not None
    assert run1["promotion"]["compared_version"] is None
    champion_1 = alias_version(client, registry, CHAMPION)

    # the next day's files land, and they repeat 120 pairs of run 1's training days inside run 2's
    # test window (plays, clicks): a repeat keeps its pair's first-seen time, so it stays a training
    # pair and run 2 is comparable with run 1's champion (placed by the latest time it would leak)
    repeats = day_cut(log, 0, 31).sample(120, seed=1).with_columns(
        (pl.col("timestamp") - int(START.timestamp())) % (5 * 86400) + int(START.timestamp()) + 55 * 86400
    )
    pl.concat([day_cut(log, 45, 61), repeats]).write_csv(tmp / "landing" / "batch-2.csv")
    cfg = load_config(None, sets)
    run2 = training_flow_for(cfg)(cfg, True, True)
    decision = run2["promotion"]
    assert decision["decision"] in ("promoted", "kept"), decision["reason"]
    assert "champion re-evaluated on the current split" in decision["reason"]
    assert decision["n_users"] > 0 and decision["compared_run_id"] == champion_1.run_id

    # cold users (joined on day 54) are counted, kept out of the model metrics, scored by fallback
    assert run2["dataset"]["cold_test_users"] >= 10
    model_run = client.get_run(run2["models"][1]["mlflow_run_id"])
    assert model_run.data.metrics["cold_test_users"] == run2["dataset"]["cold_test_users"]
    assert "cold_recall_at_20" in model_run.data.metrics

    # audit from the logged splits: the champion never saw a pair of run 2's test window
    champion_split = load_run_split(client, champion_1.run_id)
    today = load_run_split(client, decision["challenger_run_id"])
    n_users, n_items = champion_split.train.shape
    seen = (champion_split.train + (champion_split.validation if champion_split.validation is not None else 0))
    assert sp.csr_matrix(today.test)[:n_users, :n_items].multiply(seen).count_nonzero() == 0

    # `recsys promote` later, in its own process, on the same registry: the same decision
    with_alias = alias_version(client, registry, CHAMPION)
    if decision["decision"] == "promoted":  # put run 1's champion back, as before run 2 promoted
        client.set_registered_model_alias(registry, CHAMPION, champion_1.version)
    # the runs' config (built-in settings + sets) is named `cfg.name`; the CLI reads the repository's
    # default.toml (named "default"), and takes the newest pipeline run of its config's lineage
    args = ["promote", "--set", f"name={cfg.name}"]
    for assignment in sets:
        args += ["--set", assignment]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    challenger = client.get_run(decision["challenger_run_id"]).data.tags
    assert challenger[TAG_DECISION] == decision["decision"] and challenger[TAG_REASON] == decision["reason"]
    assert alias_version(client, registry, CHAMPION).run_id == with_alias.run_id
