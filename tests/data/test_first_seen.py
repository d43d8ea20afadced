"""First-seen times through real ingests: a repeated pair keeps the time it was first seen across
appends (its timestamp moves to the latest), time-based splits place it by that time, a directory
written before first-seen times were stored loads and splits by timestamp until its next append
stores them, and the fingerprint tells apart tables that differ only in first-seen times."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from recsys.config import DataConfig, SplitConfig
from recsys.data import storage
from recsys.data.ingest import ingest
from recsys.data.schema import FIRST_SEEN, ITEM_IDX, TIME, USER_IDX, WEIGHT
from recsys.data.splits import split_data

DAY = 86_400
START = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
# Batch 1 (days 0-19): u1 plays a three times, b once; u2 plays a and c; u3 plays c and d.
BATCH_1 = [
    ("u1", "a", 1, 2), ("u1", "a", 1, 0), ("u1", "a", 1, 5), ("u1", "b", 1, 3),
    ("u2", "a", 1, 4), ("u2", "c", 1, 6), ("u3", "c", 1, 8), ("u3", "d", 1, 9), ("u3", "a", 1, 19),
]  # fmt: skip
# Batch 2 (days 21-28): repeats of old pairs (u1-a on day 25, u2-c on day 22), one repeat dated
# before its pair was first seen (late data: u3-d on day 1), and new pairs (u1-c, u4-b).
BATCH_2 = [("u1", "a", 2, 25), ("u2", "c", 1, 22), ("u3", "d", 1, 1), ("u1", "c", 1, 24), ("u4", "b", 1, 26)]
OLD_PAIRS = {("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c"), ("u3", "c"), ("u3", "d"), ("u3", "a")}


def _csv(path: Path, rows: list[tuple]) -> Path:
    lines = [f"{u},{i},{w},{START + day * DAY}" for u, i, w, day in rows]
    path.write_text("user,item,rating,timestamp\n" + "\n".join(lines) + "\n")
    return path


def _by_pair(out: Path) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(user id, item id) -> (weight, timestamp day, first-seen day) from a processed directory."""
    data = storage.load_processed(out)
    frame = data.interactions
    users, items = data.user_ids[frame[USER_IDX].to_numpy()], data.item_ids[frame[ITEM_IDX].to_numpy()]
    days = [(frame[c].dt.epoch("s").to_numpy() - START) / DAY for c in (TIME, FIRST_SEEN)]
    return {
        (u, i): (w, t, f)
        for u, i, w, t, f in zip(users.tolist(), items.tolist(), frame[WEIGHT].to_list(), *days, strict=True)
    }


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> tuple[Path, Path]:
    """One directory after batch 1 only (copied aside) and the same after batch 2 was appended."""
    tmp = tmp_path_factory.mktemp("first-seen")
    out, before = tmp / "processed", tmp / "before"
    ingest(_csv(tmp / "b1.csv", BATCH_1), before, DataConfig(aggregate="sum"))
    ingest(_csv(tmp / "b1.csv", BATCH_1), out, DataConfig(aggregate="sum"))
    ingest(_csv(tmp / "b2.csv", BATCH_2), out, DataConfig(aggregate="sum"), append=True)
    return before, out


def test_a_repeat_keeps_its_pair_first_seen_time_and_moves_its_timestamp(grown):
    before, after = (_by_pair(d) for d in grown)
    assert before[("u1", "a")] == (3.0, 5.0, 0.0)  # repeats within a batch: earliest time of the batch
    assert after[("u1", "a")] == (5.0, 25.0, 0.0)  # weight summed, latest timestamp, first-seen kept
    assert after[("u2", "c")] == (2.0, 22.0, 6.0)
    assert after[("u3", "d")] == (2.0, 9.0, 9.0)  # late data dated day 1 does not re-time the old pair
    assert after[("u1", "c")] == (1.0, 24.0, 24.0)
    assert {k: v[2] for k, v in after.items() if k in OLD_PAIRS} == {k: v[2] for k, v in before.items()}


@pytest.mark.parametrize(
    "cfg",
    [
        SplitConfig(protocol="rolling", cutoff=datetime(2024, 1, 21, tzinfo=UTC), window_days=7),
        SplitConfig(protocol="temporal", cutoff=datetime(2024, 1, 21, tzinfo=UTC)),
    ],
    ids=["rolling", "temporal"],
)
def test_old_pairs_keep_their_side_when_the_log_repeats_them_in_the_test_window(grown, cfg):
    """Batch 2 repeats u1-a and u2-c inside the test window after the cut-off: both stay training
    pairs (placed by when they were first seen), and the test part holds only new pairs."""
    sides = [_sides(split_data(storage.load_processed(d), cfg)) for d in grown]
    assert {k: sides[1][k] for k in sides[0]} == sides[0]
    assert sides[0][("u1", "a")] == sides[1][("u1", "a")] == "train"
    assert {k for k, side in sides[1].items() if side == "test"} == {("u1", "c"), ("u4", "b")}


def _sides(split) -> dict[tuple[str, str], str]:
    out = {}
    for name in ("train", "validation", "test"):
        matrix = getattr(split, name)
        if matrix is not None:
            coo = matrix.tocoo()
            out |= {(split.user_ids[u], split.item_ids[i]): name for u, i in zip(coo.row, coo.col, strict=True)}
    return out


def test_a_directory_without_first_seen_splits_by_timestamp_until_its_next_append(grown, tmp_path):
    """Written before first-seen times were stored: it loads, time-based splits place its pairs by
    their latest timestamp (what the runs that wrote it did), and an append stores them."""
    old = tmp_path / "old"
    shutil.copytree(grown[0], old)
    table = old / storage.IMPLICIT_FILE
    storage.write_table(pl.read_parquet(table).drop(FIRST_SEEN), table)
    data = storage.load_processed(old)
    assert FIRST_SEEN not in data.interactions.columns
    cfg = SplitConfig(protocol="temporal", cutoff=datetime(2024, 1, 6, tzinfo=UTC))
    split = split_data(data, cfg)
    assert split.meta["placed_by"] == TIME and _sides(split)[("u1", "a")] == "train"  # day 5 <= day 5
    ingest(_csv(tmp_path / "b2.csv", BATCH_2), old, DataConfig(aggregate="sum"), append=True)
    assert _by_pair(old) == _by_pair(grown[1])


def test_the_fingerprint_tells_apart_tables_that_differ_only_in_first_seen_times():
    """Same pairs, weights and latest timestamps; u1-a first seen on day 0 in one, day 2 in the
    other: they split differently, so one fingerprint (hence one split digest) must not name both.
    A table without repeats (first seen = timestamp) keeps the fingerprint it had without the column."""
    day = [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 3, 6)]
    table = pl.DataFrame(
        {USER_IDX: [0, 0], ITEM_IDX: [0, 1], TIME: [day[2], day[2]], WEIGHT: [2.0, 1.0], FIRST_SEEN: [day[0], day[2]]}
    )
    ids = (["u1"], ["a", "b"])
    other = table.with_columns(pl.Series(FIRST_SEEN, [day[1], day[2]]))
    assert storage.fingerprint(table, *ids) != storage.fingerprint(other, *ids)
    no_repeats = table.with_columns(pl.col(TIME).alias(FIRST_SEEN))
    assert storage.fingerprint(no_repeats, *ids) == storage.fingerprint(no_repeats.drop(FIRST_SEEN), *ids)
