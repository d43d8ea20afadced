"""Planted-cluster generator: schema, determinism, planted structure (leakage, noise, popularity)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.config import ConfigError, SyntheticConfig
from recsys.data.schema import CANONICAL_SCHEMA
from recsys.data.synthetic import generate, summarize, write_synthetic

SMALL = {"n_users": 600, "n_items": 400, "n_clusters": 4, "interactions_per_user": 20.0}


def blocks_of(data) -> pl.DataFrame:
    return data.interactions.join(data.user_clusters.rename({"block": "user_block"}), on="user_id").join(
        data.item_clusters.rename({"block": "item_block"}), on="item_id"
    )


def cross_share(data) -> float:
    b = blocks_of(data)
    return float((b["user_block"] != b["item_block"]).mean())


@pytest.fixture(scope="module")
def default_data():
    return generate(SyntheticConfig())


def test_default_config_has_the_canonical_schema_and_configured_sizes(default_data):
    df = default_data.interactions
    assert dict(df.schema) == CANONICAL_SCHEMA
    assert (
        df["user_id"].n_unique() == 2000
        and df["user_id"].min() == "u00000"
        and df["user_id"].max() == "u01999"
    )
    assert df["item_id"].str.contains(r"^i\d{5}$").all()
    assert df.select(pl.struct("user_id", "item_id").is_duplicated().any()).item() is False
    assert df["weight"].min() >= 1.0
    assert default_data.user_clusters.height == 2000 and default_data.item_clusters.height == 1000
    assert set(default_data.user_clusters["block"].unique()) == set(range(8))
    # every cluster gets n/k users and items (balanced assignment)
    assert default_data.item_clusters["block"].value_counts()["count"].to_list() == [125] * 8


def test_activity_is_skewed_around_the_configured_mean_with_a_floor(default_data):
    per_user = default_data.interactions.group_by("user_id").len()["len"]
    assert per_user.min() >= 3
    assert per_user.mean() == pytest.approx(30, rel=0.1)
    assert per_user.max() > 3 * per_user.median()  # log-normal: heavy users exist


def test_timestamps_span_the_configured_days(default_data):
    ts = default_data.interactions["timestamp"]
    span_days = (ts.max() - ts.min()).total_seconds() / 86400
    assert 85 < span_days <= 90


def test_same_seed_same_data_and_another_seed_differs():
    a, b = generate(SyntheticConfig(**SMALL, seed=1)), generate(SyntheticConfig(**SMALL, seed=1))
    assert a.interactions.equals(b.interactions) and a.user_clusters.equals(b.user_clusters)
    c = generate(SyntheticConfig(**SMALL, seed=2))
    assert not a.interactions.equals(c.interactions)


def test_without_leakage_or_noise_every_interaction_stays_in_the_users_cluster():
    assert cross_share(generate(SyntheticConfig(**SMALL, leakage=0.0, noise_rate=0.0))) == 0.0


@pytest.mark.parametrize("leakage", [0.1, 0.3])
def test_leakage_sets_the_cross_cluster_share(leakage):
    assert cross_share(generate(SyntheticConfig(**SMALL, leakage=leakage))) == pytest.approx(
        leakage, abs=0.02
    )


def test_noise_is_uniform_so_it_crosses_clusters_k_minus_1_over_k_of_the_time():
    # 4 clusters: a uniformly random item is outside the user's cluster 3/4 of the time
    assert cross_share(generate(SyntheticConfig(**SMALL, noise_rate=0.4))) == pytest.approx(
        0.4 * 0.75, abs=0.03
    )


def test_cross_cluster_leakage_is_popularity_weighted():
    b = blocks_of(generate(SyntheticConfig(**SMALL, leakage=0.5)))
    cross = (
        b.filter(pl.col("user_block") != pl.col("item_block"))["item_id"].value_counts()["count"].to_numpy()
    )
    assert cross.max() > 10 * np.median(cross)


def test_popularity_is_zipf_skewed_within_clusters_and_flat_without_exponent():
    def top_share(exponent: float) -> float:
        counts = (
            generate(SyntheticConfig(**SMALL, popularity_exponent=exponent))
            .interactions["item_id"]
            .value_counts()
        )
        counts = np.sort(counts["count"].to_numpy())[::-1]
        return counts[: len(counts) // 10].sum() / counts.sum()

    skewed, flat = top_share(1.0), top_share(0.0)
    assert skewed > 0.3  # top 10% of items draw far more than 10% of interactions
    assert flat < 0.16


def test_more_clusters_than_items_is_a_config_error():
    with pytest.raises(ConfigError, match="n_clusters"):
        generate(SyntheticConfig(n_users=50, n_items=5, n_clusters=8))


def test_write_synthetic_writes_readable_parquet_and_no_temp_files(tmp_path):
    cfg = SyntheticConfig(**SMALL, seed=3)
    paths = write_synthetic(cfg, tmp_path / "raw")
    data = generate(cfg)
    assert pl.read_parquet(paths["interactions"]).equals(data.interactions)
    assert pl.read_parquet(paths["user_clusters"]).equals(data.user_clusters)
    assert pl.read_parquet(paths["item_clusters"]).equals(data.item_clusters)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(p.name for p in paths.values())


def test_summary_reports_realised_numbers():
    data = generate(SyntheticConfig(**SMALL, leakage=0.2))
    summary = summarize(data)
    assert summary["interactions"] == data.interactions.height
    assert summary["users"] == 600 and summary["clusters"] == 4
    assert summary["cross_cluster_share"] == pytest.approx(cross_share(data))


def test_cli_synth_writes_the_files_and_prints_a_summary(tmp_path):
    from typer.testing import CliRunner

    from recsys.cli import app

    out = tmp_path / "synth"
    args = ["data", "synth", "--out", str(out), "--users", "300", "--items", "120", "--clusters", "3"]
    result = CliRunner().invoke(app, [*args, "--leakage", "0.1", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "cross_cluster_share" in result.output
    cfg = SyntheticConfig(n_users=300, n_items=120, n_clusters=3, leakage=0.1, seed=4)
    assert pl.read_parquet(out / "interactions.parquet").equals(generate(cfg).interactions)

    assert f"next: recsys ingest {out} --out" in result.output

    # what synth wrote ingests with its clusters as the folding blocks, as the folder or its file
    from recsys.data.storage import load_processed

    clusters = dict(pl.read_parquet(out / "item_clusters.parquet").iter_rows())
    for source in (out, out / "interactions.parquet"):
        processed = tmp_path / f"processed-{source.name}"
        ingested = CliRunner().invoke(app, ["ingest", str(source), "--out", str(processed)])
        assert ingested.exit_code == 0 and "planted clusters" in ingested.output, ingested.output
        data = load_processed(processed)
        assert data.item_blocks is not None
        assert [clusters[i] for i in data.item_ids] == list(data.item_blocks)

    bad = CliRunner().invoke(app, ["data", "synth", "--out", str(out), "--users", "2", "--clusters", "3"])
    assert bad.exit_code == 2 and "use --clusters 2" in bad.output  # an option synth has, not a config key


def test_a_rewrite_killed_between_files_is_not_read_as_planted_blocks(tmp_path, monkeypatch):
    """A second `recsys data synth --out` into one folder, killed after its interactions and before
    its clusters: the folder held the new interactions, the old clusters and the old synthetic.json,
    and ingest read the old clusters as the planted blocks of the new data. The marker is removed
    first and written last now, so such a folder is not the generator's."""
    import recsys.data.synthetic as synthetic

    out = tmp_path / "synth"
    small = SyntheticConfig(n_users=40, n_items=20, n_clusters=2, interactions_per_user=5.0)
    synthetic.write_data(generate(small), out)
    assert synthetic.planted_blocks(out) is not None
    real = synthetic._atomic_write

    def killed_after_the_interactions(path, writer):
        if path.name == "user_clusters.parquet":
            raise KeyboardInterrupt  # where the kill landed
        real(path, writer)

    monkeypatch.setattr(synthetic, "_atomic_write", killed_after_the_interactions)
    with pytest.raises(KeyboardInterrupt):
        synthetic.write_data(generate(small.model_copy(update={"n_users": 60, "seed": 1})), out)
    assert synthetic.planted_blocks(out) is None


def test_an_ingest_during_a_rewrite_waits_and_reads_one_generation(tmp_path):
    """`recsys data synth` rewriting a folder while `recsys ingest` reads it: the reader takes the
    writer's lock, so it reads the new generation whole - never the new interactions beside the
    old clusters, nor (synthetic.json removed mid-rewrite) the folder's three files as one log.
    The writer here is this test, stopped half-way through a rewrite with the lock held."""
    import threading
    import time

    from filelock import FileLock

    from recsys.config import DataConfig
    from recsys.data.ingest import ingest
    from recsys.data.storage import load_processed, lock_file
    from recsys.data.synthetic import _atomic_write, _write_files, write_data

    tiny = {"n_users": 60, "n_items": 40, "n_clusters": 2, "interactions_per_user": 8.0}
    old, new = generate(SyntheticConfig(**tiny, seed=1)), generate(SyntheticConfig(**tiny, seed=2))
    folder = tmp_path / "synth"
    write_data(old, folder)
    said, reports, errors = [], [], []

    def read() -> None:
        try:
            reports.append(ingest(folder, tmp_path / "read", DataConfig(), progress=said.append))
        except Exception as exc:  # reported below
            errors.append(exc)

    with FileLock(str(lock_file(folder))):  # the rewrite, as _write_files begins it
        (folder / "synthetic.json").unlink()
        _atomic_write(folder / "interactions.parquet", new.interactions.write_parquet)
        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 30
        while not said and time.monotonic() < deadline:
            time.sleep(0.02)
        _write_files(new, folder)  # the rest of the rewrite
    reader.join(60)
    assert errors == [] and said[0] == f"waiting for `recsys data synth` writing {folder} to finish"
    assert reports[0].planted
    alone = ingest(folder, tmp_path / "alone", DataConfig())  # the new generation, read on its own
    assert reports[0].fingerprint == alone.fingerprint
    read_blocks, alone_blocks = load_processed(tmp_path / "read"), load_processed(tmp_path / "alone")
    assert np.array_equal(read_blocks.user_blocks, alone_blocks.user_blocks)
    assert np.array_equal(read_blocks.item_blocks, alone_blocks.item_blocks)
