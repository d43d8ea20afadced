"""`combine`: block-disjoint processed data from several sources, blocks travelling with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.config import DataConfig, SplitConfig, SyntheticConfig
from recsys.data.combine import combine
from recsys.data.ingest import ingest
from recsys.data.splits import split_data
from recsys.data.storage import load_processed
from recsys.data.synthetic import generate
from recsys.errors import DataError

CSV = """user,item,rating,timestamp
u1,i1,5,1700000000
u1,i1,4,1700000100
u1,i2,3,1700000200
u2,i2,4,1700000300
u2,i3,1,1700000400
u3,i4,2,1700000500
u3,,5,1700000600
"""
# 7 rows: 1 quarantined (missing item); u1-i1 repeats -> 5 pairs under `count`, weight 2 for (u1, i1).


@pytest.fixture()
def small_csv(tmp_path: Path) -> Path:
    path = tmp_path / "a.csv"
    path.write_text(CSV)
    return path


@pytest.fixture()
def synthetic_processed(tmp_path: Path) -> tuple[Path, pl.DataFrame, pl.DataFrame]:
    """A processed dir of a small planted-cluster set, with its cluster labels stored as blocks."""
    data = generate(SyntheticConfig(n_users=40, n_items=30, n_clusters=3, interactions_per_user=6, seed=1))
    raw = tmp_path / "synthetic.parquet"
    data.interactions.write_parquet(raw)
    out = tmp_path / "synthetic"
    ingest(raw, out, DataConfig(), user_labels=data.user_clusters, item_labels=data.item_clusters)
    return out, data.user_clusters, data.item_clusters


def test_combine_raw_csv_and_processed_dir(small_csv, synthetic_processed, tmp_path):
    synth_dir, _, _ = synthetic_processed
    synth = load_processed(synth_dir)
    report = combine([small_csv, synth_dir], tmp_path / "out", DataConfig(aggregate="count"))
    out = load_processed(tmp_path / "out")

    assert (
        (report.users, report.items) == (3 + synth.n_users, 4 + synth.n_items) == (out.n_users, out.n_items)
    )
    assert report.interactions == 5 + synth.interactions.height == out.interactions.height
    # blocks = source index, every id prefixed with its source
    users = dict(zip(out.user_ids, out.user_blocks, strict=True))
    items = dict(zip(out.item_ids, out.item_blocks, strict=True))
    assert {users[u] for u in ("b0:u1", "b0:u2", "b0:u3")} == {0}
    assert {items[i] for i in ("b0:i1", "b0:i2", "b0:i3", "b0:i4")} == {0}
    assert sorted(np.bincount(out.user_blocks)) == sorted([3, synth.n_users])
    assert all(u.startswith("b1:") for u, b in users.items() if b == 1)
    # disjoint by construction: no interaction crosses blocks
    rows = out.interactions
    assert np.array_equal(
        out.user_blocks[rows["user_idx"].to_numpy()], out.item_blocks[rows["item_idx"].to_numpy()]
    )
    # weights pass through: (u1, i1) was counted twice in source 0; source 1 keeps its own weights
    u1, i1 = list(out.user_ids).index("b0:u1"), list(out.item_ids).index("b0:i1")
    pair = rows.filter((pl.col("user_idx") == u1) & (pl.col("item_idx") == i1))
    assert pair["weight"].to_list() == [2.0]
    assert rows["weight"].sum() == pytest.approx(6 + synth.interactions["weight"].sum())
    # the raw source's quarantine is kept and the manifest names the real inputs
    quarantine = pl.read_parquet(tmp_path / "out" / "quarantine" / "combine-source-0.parquet")
    assert quarantine["reason"].to_list() == ["missing_item"]
    assert out.manifest["sources"] == [str(small_csv), str(synth_dir)]
    assert [s["kind"] for s in out.manifest["combine"]["sources"]] == ["raw", "processed"]
    assert report.sources[0].rows_in == 7 and report.sources[0].rows_quarantined == 1


def test_nested_blocks_keep_planted_clusters(small_csv, synthetic_processed, tmp_path):
    synth_dir, user_clusters, item_clusters = synthetic_processed
    combine([small_csv, synth_dir], tmp_path / "out", blocks="nested")
    out = load_processed(tmp_path / "out")
    # source 0 has no labels -> block 0; source 1's clusters 0..2 become 1..3
    planted = dict(zip(item_clusters["item_id"], item_clusters["block"], strict=True))
    for item_id, block in zip(out.item_ids, out.item_blocks, strict=True):
        expected = 0 if item_id.startswith("b0:") else planted[item_id.removeprefix("b1:")] + 1
        assert block == expected
    assert set(out.user_blocks) == {0, 1, 2, 3}


def test_blocks_travel_into_splits(small_csv, synthetic_processed, tmp_path):
    combine([synthetic_processed[0], small_csv], tmp_path / "out")
    data = load_processed(tmp_path / "out")
    split = split_data(data, SplitConfig(protocol="random", test_fraction=0.3, seed=0))
    np.testing.assert_array_equal(split.item_blocks, data.item_blocks)
    np.testing.assert_array_equal(split.user_blocks, data.user_blocks)
    assert set(split.item_blocks) == {0, 1}


def test_overlapping_ids_without_prefix_are_an_error_naming_the_counts(small_csv, tmp_path):
    other = tmp_path / "b.csv"
    other.write_text("user,item\nu1,i1\nu9,i2\nu9,i9\n")
    with pytest.raises(DataError, match=r"share 1 user id\(s\) and 2 item id\(s\)"):
        combine([small_csv, other], tmp_path / "out", prefix_ids=False)
    assert not (tmp_path / "out").exists()
    # disjoint ids need no prefix, and keep their names
    other.write_text("user,item\nx1,j1\nx2,j1\n")
    combine([small_csv, other], tmp_path / "out", prefix_ids=False)
    out = load_processed(tmp_path / "out")
    assert sorted(out.user_ids) == ["u1", "u2", "u3", "x1", "x2"]
    assert dict(zip(out.item_ids, out.item_blocks, strict=True))["j1"] == 1


def test_bad_calls_are_data_errors(small_csv, tmp_path):
    with pytest.raises(DataError, match="at least two sources"):
        combine([small_csv], tmp_path / "out")
    with pytest.raises(DataError, match="no such file"):
        combine([small_csv, tmp_path / "missing.csv"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_combine_and_one_line_error(small_csv, tmp_path):
    from recsys.cli import app  # the whole CLI: combine must be registered on `recsys data`

    other = tmp_path / "b.csv"
    other.write_text("user,item\nu1,i1\n")
    runner = CliRunner()
    summary = tmp_path / "summary.json"
    result = runner.invoke(
        app,
        [
            "data",
            "combine",
            str(small_csv),
            str(other),
            "--out",
            str(tmp_path / "out"),
            "--json",
            str(summary),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(summary.read_text())["users"] == 4
    result = runner.invoke(
        app, ["data", "combine", str(small_csv), str(other), "--out", str(tmp_path / "o2"), "--no-prefix-ids"]
    )
    assert result.exit_code == 2
    assert "share 1 user id(s) and 1 item id(s)" in result.output
    assert "Traceback" not in result.output


def test_ml100k_plus_prefixed_copy(ml100k_dir, tmp_path):
    source = ml100k_dir / "ml-100k.inter"
    report = combine([source, source], tmp_path / "out")
    out = load_processed(tmp_path / "out")
    assert (report.users, report.items, report.interactions) == (1886, 3364, 200_000)
    np.testing.assert_array_equal(np.bincount(out.user_blocks), [943, 943])
    np.testing.assert_array_equal(np.bincount(out.item_blocks), [1682, 1682])
    assert out.user_ids[0].startswith("b0:") and out.fingerprint


def test_a_repeated_pair_keeps_its_first_seen_time_through_the_union(small_csv, synthetic_processed, tmp_path):
    """(u1, i1) is seen at t0 and again 100 s later: the source stores first_seen t0 and timestamp
    t0 + 100, and the union must keep both (time-based splits place pairs by first_seen), with the
    weight unchanged. Without the first-seen rows the union's first_seen is the latest time."""
    combine([small_csv, synthetic_processed[0]], tmp_path / "out")
    source = load_processed(tmp_path / "out")
    rows = source.interactions.with_columns(
        pl.Series("user", source.user_ids[source.interactions["user_idx"].to_numpy()]),
        pl.Series("item", source.item_ids[source.interactions["item_idx"].to_numpy()]),
    )
    pair = rows.filter((pl.col("user") == "b0:u1") & (pl.col("item") == "b0:i1")).row(0, named=True)
    assert pair["timestamp"].timestamp() == 1_700_000_100
    assert pair["first_seen"].timestamp() == 1_700_000_000
    assert pair["weight"] == pytest.approx(9.0)  # auto -> sum of the two ratings, 5 + 4
    others = rows.filter(pl.col("user").str.starts_with("b1:"))
    assert others.select((pl.col("first_seen") == pl.col("timestamp")).all()).item()
    assert rows.height == source.interactions.height == 5 + others.height


def test_the_work_directory_is_a_staging_directory_of_out_that_the_next_writer_removes(
    small_csv, tmp_path, monkeypatch
):
    """The work directory (each raw source ingested) was a `.combine.*` TemporaryDirectory: a combine
    killed with SIGKILL left it, with copies of its sources, for ever. It is one of --out's own
    staging directories now, which the next writer of --out removes (`storage.recover`)."""
    import recsys.data.combine as combine_module
    from recsys.data import storage

    out = tmp_path / "out" / "combined"
    staged, real = [], combine_module.ingest

    def ingest(source, target, *args, **kwargs):
        if Path(target).name.startswith("source-"):  # a raw source, ingested into the work directory
            staged.append(Path(target).parent in storage._staging(out, "tmp"))  # what a kill here leaves
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(combine_module, "ingest", ingest)
    combine([small_csv, small_csv], out)
    assert staged == [True, True]
    assert sorted(p.name for p in out.parent.iterdir()) == [".combined.lock", "combined"]


def test_nested_blocks_after_a_labelled_source_start_past_its_labels(small_csv, synthetic_processed, tmp_path):
    """The next source's block starts after the widest label of the one before: the planted
    clusters 0..2 stay 0..2 and the unlabelled CSV after them is block 3, never one of them."""
    synth_dir, _, item_clusters = synthetic_processed
    combine([synth_dir, small_csv], tmp_path / "out", blocks="nested")
    out = load_processed(tmp_path / "out")
    planted = dict(zip(item_clusters["item_id"], item_clusters["block"], strict=True))
    for item_id, block in zip(out.item_ids, out.item_blocks, strict=True):
        assert block == (3 if item_id.startswith("b1:") else planted[item_id.removeprefix("b0:")])
    assert set(out.user_blocks) == {0, 1, 2, 3}


def test_nested_labels_keep_unknown_blocks_unknown():
    """A source with labels of which some are unknown (-1): the known ones are offset, the unknown
    stay unknown (not the offset: that would invent a block), also when block 0 is the only label."""
    from recsys.data.combine import _labels

    labels = _labels(np.array(["a", "b", "c"]), np.array([0, -1, 0]), "user", 4, "nested")
    assert labels.get_column("block").to_list() == [4, -1, 4]
    assert _labels(np.array(["a"]), None, "user", 4, "nested").get_column("block").to_list() == [4]


def test_overlap_errors_count_users_and_items_apart_and_name_two_of_each(small_csv, tmp_path):
    """A shared user id alone (no shared item) is an overlap too; the message names the counts,
    two examples of each and the fix."""
    other = tmp_path / "b.csv"
    other.write_text("user,item\nu1,j1\n")
    with pytest.raises(DataError, match=r"share 1 user id\(s\) and 0 item id\(s\) \(e\.g\. 'u1'\)"):
        combine([small_csv, other], tmp_path / "out", prefix_ids=False)
    other.write_text("user,item\nu1,i1\nu2,i2\nu3,i3\n")
    expected = (
        "sources share 3 user id(s) and 3 item id(s) (e.g. 'u1', 'u2', 'i1', 'i2'); combined sources must be "
        "disjoint: drop --no-prefix-ids to prefix every id with its source (b0:, b1:, ...)"
    )
    with pytest.raises(DataError) as caught:
        combine([small_csv, other], tmp_path / "out", prefix_ids=False)
    assert str(caught.value) == expected
