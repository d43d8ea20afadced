"""Planted taste clusters: synthetic interaction logs whose right answer is known.

Users and items belong to K clusters. A user mostly interacts with items of their own cluster, with
Zipf popularity inside each cluster; a share `leakage` of interactions goes to another cluster
(popularity-weighted) and a share `noise_rate` to a uniformly random item. Because the block labels
are known, the folding diagnostic and tests can check whether a model keeps unrelated clusters apart,
and every ingest/split/train step can be exercised without downloading anything.

Everything is vectorised numpy driven by one `np.random.default_rng(cfg.seed)`: the same config gives
byte-identical data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from recsys.config import ConfigError, SyntheticConfig
from recsys.data.schema import CANONICAL_SCHEMA, ITEM, TIME, USER, WEIGHT
from recsys.data.storage import lock_file
from recsys.files import announced_lock, atomic_path

START = datetime(2024, 1, 1, tzinfo=UTC)
"""Fixed start of the synthetic time span, so timestamps depend only on the config."""

ACTIVITY_SIGMA = 0.7
"""Log-normal spread of per-user activity: a few heavy users, many light ones."""

MIN_ACTIVITY = 3
OVERSAMPLE = 4
"""Candidate draws per wanted interaction; repeats of a (user, item) pair are dropped, spares refill."""

OWN, CROSS, NOISE = 0, 1, 2
"""Where an interaction's item comes from: the user's block, another block, or anywhere."""

PLAY_COUNT_P = 0.4
"""Weights are play counts ~ Geometric(p) >= 1 (mean 1/p), an implicit-feedback-like signal."""


@dataclass(frozen=True)
class SyntheticData:
    """interactions: canonical schema (user_id "u00042", item_id "i00017", timestamp UTC, weight >= 1),
    one row per (user, item), sorted by user then time. user_clusters / item_clusters: the planted
    block of every id (columns user_id|item_id, block)."""

    interactions: pl.DataFrame
    user_clusters: pl.DataFrame
    item_clusters: pl.DataFrame
    config: SyntheticConfig


def generate(cfg: SyntheticConfig) -> SyntheticData:
    """Generate a planted-cluster interaction log (see the module docstring).

    Realised interactions per user are the log-normal target (mean interactions_per_user, at least 3),
    capped by how many distinct items the draws reach: pairs are unique, repeats are dropped and
    replaced by spare draws, so a user of a small cluster can end up with slightly fewer.
    """
    if cfg.n_clusters > min(cfg.n_users, cfg.n_items):
        raise ConfigError(
            f"{cfg.n_clusters} planted clusters need at least that many users and items (have {cfg.n_users} "
            f"users, {cfg.n_items} items): use {{option}} (or fewer clusters, or more users and items)",
            setting="data.synthetic.n_clusters", value=str(min(cfg.n_users, cfg.n_items)),
        )  # fmt: skip
    rng = np.random.default_rng(cfg.seed)
    k = cfg.n_clusters
    user_block = rng.permutation(np.arange(cfg.n_users) % k)
    item_block = rng.permutation(np.arange(cfg.n_items) % k)

    # Items sorted by block; Zipf weight by a random popularity rank inside the block.
    items_by_block = np.argsort(item_block, kind="stable")
    block_sizes = np.bincount(item_block, minlength=k)
    block_start = np.concatenate([[0], np.cumsum(block_sizes)[:-1]])
    rank_in_block = np.empty(cfg.n_items, dtype=np.int64)
    rank_in_block[items_by_block] = _shuffled_ranks(rng, block_sizes)
    zipf = (rank_in_block + 1.0) ** -cfg.popularity_exponent
    # Cumulative within-block probabilities, shifted by the block number: block c spans (c, c + 1],
    # so one searchsorted draws a popularity-weighted item of any block for every draw at once.
    sorted_weights = zipf[items_by_block]
    block_of_sorted = item_block[items_by_block]
    block_totals = np.bincount(block_of_sorted, weights=sorted_weights, minlength=k)
    shifted_cdf = (
        block_of_sorted
        + _cumsum_within(sorted_weights, block_start, block_sizes) / block_totals[block_of_sorted]
    )

    # Per-user activity: log-normal with the configured mean, at least MIN_ACTIVITY.
    mu = np.log(cfg.interactions_per_user) - ACTIVITY_SIGMA**2 / 2
    wanted = np.rint(rng.lognormal(mu, ACTIVITY_SIGMA, size=cfg.n_users)).astype(np.int64)
    wanted = np.clip(wanted, min(MIN_ACTIVITY, cfg.n_items), cfg.n_items)

    # Every wanted interaction ("slot") gets a source: own block, another block (leakage) or any item
    # (noise). The per-user count of each source is fixed here, so the realised cross-cluster share
    # stays at `leakage` even though repeats of popular items are dropped below.
    slot_user = np.repeat(np.arange(cfg.n_users), wanted)
    u = rng.random(slot_user.size)
    slot_source = np.where(
        u < cfg.noise_rate,
        NOISE,
        np.where(u < cfg.noise_rate + cfg.leakage * (1 - cfg.noise_rate), CROSS, OWN),
    )
    needed = np.bincount(slot_user * 3 + slot_source, minlength=cfg.n_users * 3)

    # OVERSAMPLE candidate draws per slot, same source; target block drawn per candidate.
    users = np.repeat(slot_user, OVERSAMPLE)
    source = np.repeat(slot_source, OVERSAMPLE)
    n_draws = users.size
    target_block = user_block[users]
    if k > 1:  # leakage goes to another block, uniformly among the other k - 1
        target_block = np.where(
            source == CROSS, (target_block + rng.integers(1, k, size=n_draws)) % k, target_block
        )
    position = np.searchsorted(shifted_cdf, target_block + rng.random(n_draws), side="right")
    position = np.clip(
        position, block_start[target_block], block_start[target_block] + block_sizes[target_block] - 1
    )
    items = np.where(source == NOISE, rng.integers(0, cfg.n_items, size=n_draws), items_by_block[position])

    # Unique (user, item) pairs in draw order, then the first `needed` of each (user, source) group.
    first = pl.Series(users * cfg.n_items + items).is_first_distinct().to_numpy()  # hashed, O(n)
    users, items, source = users[first], items[first], source[first]
    group = users * 3 + source
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    rank = np.empty(group.size, dtype=np.int64)
    rank[order] = np.arange(group.size) - np.searchsorted(sorted_group, sorted_group, side="left")
    keep = rank < needed[group]
    users, items = users[keep], items[keep]

    seconds = rng.integers(0, cfg.days * 86_400, size=users.size)
    plays = rng.geometric(PLAY_COUNT_P, size=users.size).astype(np.float32)
    by_user_then_time = np.lexsort((seconds, users))
    users, items, seconds, plays = (a[by_user_then_time] for a in (users, items, seconds, plays))
    micros = seconds * 1_000_000 + int(START.timestamp()) * 1_000_000
    interactions = pl.DataFrame(
        {
            USER: _ids("u", users, cfg.n_users),
            ITEM: _ids("i", items, cfg.n_items),
            TIME: pl.Series(micros).cast(pl.Datetime("us", "UTC")),
            WEIGHT: plays,
        },
        schema=CANONICAL_SCHEMA,
    )
    user_clusters = pl.DataFrame(
        {USER: _ids("u", np.arange(cfg.n_users), cfg.n_users), "block": user_block.astype(np.int32)}
    )
    item_clusters = pl.DataFrame(
        {ITEM: _ids("i", np.arange(cfg.n_items), cfg.n_items), "block": item_block.astype(np.int32)}
    )
    return SyntheticData(interactions, user_clusters, item_clusters, cfg)


def write_synthetic(cfg: SyntheticConfig, out_dir: str | Path) -> dict[str, Path]:
    """Generate and write the data set (see `write_data`)."""
    return write_data(generate(cfg), out_dir)


def write_data(data: SyntheticData, out_dir: str | Path) -> dict[str, Path]:
    """Write interactions.parquet, user_clusters.parquet, item_clusters.parquet and synthetic.json
    (the config) into out_dir. Each file is written to a temp name and renamed, so a crash never
    leaves a half-written file under a final name. synthetic.json, which marks the folder as the
    generator's (`planted_blocks`), is removed first and written last: a rewrite killed between
    files left the new interactions beside the old clusters, read as their planted blocks. Two
    writers of one folder take turns (a lock file beside it), so their files never mix; a reader
    (`ingest`) takes the same lock (`reading`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with announced_lock(lock_file(out), f"another writer of {out}"):
        return _write_files(data, out)


def _write_files(data: SyntheticData, out: Path) -> dict[str, Path]:
    paths = {
        "interactions": out / "interactions.parquet",
        "user_clusters": out / "user_clusters.parquet",
        "item_clusters": out / "item_clusters.parquet",
        "config": out / "synthetic.json",
    }
    config_json = json.dumps(data.config.model_dump(mode="json"), indent=2)
    paths["config"].unlink(missing_ok=True)
    _atomic_write(paths["interactions"], data.interactions.write_parquet)
    _atomic_write(paths["user_clusters"], data.user_clusters.write_parquet)
    _atomic_write(paths["item_clusters"], data.item_clusters.write_parquet)
    _atomic_write(paths["config"], lambda p: Path(p).write_text(config_json))
    return paths


@contextmanager
def reading(source: str | Path, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold a generator folder's lock (the one `write_data` holds) while `source` - the folder or a
    file in it - is read: a reader that ran beside a rewrite took the new interactions with the old
    clusters, or, finding synthetic.json removed mid-rewrite, read the folder's three Parquet files
    as one log. Any other source is read without a lock; so is a folder this process cannot write
    a lock into (a read-only copy has no writer)."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    lock = lock_file(folder)
    ours = lock.is_file() or (folder / "synthetic.json").is_file()
    if not ours or not os.access(lock if lock.exists() else folder.parent, os.W_OK):
        yield
        return
    with announced_lock(lock, f"`recsys data synth` writing {folder}", say):
        yield


def planted_blocks(source: str | Path) -> tuple[Path, pl.DataFrame, pl.DataFrame] | None:
    """(interactions file, user clusters, item clusters) when `source` is what `write_data` wrote:
    its folder or its interactions.parquet; None for anything else. Ingesting the generator's output
    once dropped the planted clusters (and its folder, holding synthetic.json, was refused as two
    formats), so `recsys data synth` -> `recsys ingest` could not measure folding on known blocks."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    files = {name: folder / f"{name}.parquet" for name in ("interactions", "user_clusters", "item_clusters")}
    if path.is_file() and path != files["interactions"]:
        return None
    if not (folder / "synthetic.json").is_file() or not all(f.is_file() for f in files.values()):
        return None
    return files["interactions"], pl.read_parquet(files["user_clusters"]), pl.read_parquet(files["item_clusters"])


def summarize(data: SyntheticData) -> dict[str, float]:
    """Realised statistics (what the CLI prints): sizes, activity and the measured cross-cluster share."""
    df = data.interactions
    blocks = df.join(data.user_clusters.rename({"block": "ub"}), on=USER).join(
        data.item_clusters.rename({"block": "ib"}), on=ITEM
    )
    per_user = df.group_by(USER).len().get_column("len")
    return {
        "interactions": df.height,
        "users": int(df.get_column(USER).n_unique()),
        "items": int(df.get_column(ITEM).n_unique()),
        "clusters": data.config.n_clusters,
        "mean_per_user": float(per_user.mean()),
        "min_per_user": int(per_user.min()),
        "max_per_user": int(per_user.max()),
        "cross_cluster_share": float((blocks["ub"] != blocks["ib"]).mean()) if df.height else 0.0,
    }


def _shuffled_ranks(rng: np.random.Generator, block_sizes: np.ndarray) -> np.ndarray:
    """For items sorted by block: a random permutation of 0..size-1 inside every block."""
    block_of = np.repeat(np.arange(block_sizes.size), block_sizes)
    order = np.lexsort((rng.random(block_of.size), block_of))  # shuffle within block
    starts = np.repeat(np.concatenate([[0], np.cumsum(block_sizes)[:-1]]), block_sizes)
    ranks = np.empty(block_of.size, dtype=np.int64)
    ranks[order] = np.arange(block_of.size) - starts
    return ranks


def _cumsum_within(values: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every block start (values sorted by block)."""
    total = np.cumsum(values)
    before = np.concatenate([[0.0], total])[starts]
    return total - np.repeat(before, sizes)


def _ids(prefix: str, indices: np.ndarray, count: int) -> pl.Series:
    """Zero-padded string ids ("u00042") that sort like their indices."""
    width = max(5, len(str(max(count - 1, 0))))
    return prefix + pl.Series(indices).cast(pl.String).str.zfill(width)


def _atomic_write(path: Path, writer: Callable[[Path], object]) -> None:
    """writer(temp) then rename (`recsys.files.atomic_path`: a temp of this writer's own, given a
    plain file's mode, removed on any error); one call per file, where the tests interrupt a rewrite."""
    with atomic_path(path) as tmp:
        writer(tmp)
