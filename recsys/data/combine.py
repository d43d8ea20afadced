"""Block-disjoint data: merge interaction sets whose users and items do not overlap.

Why: the folding diagnostic (`recsys.evaluation.folding`) needs to know which recommendations are
spurious. If two data sets share no user and no item (ML-100K beside a synthetic set, or ML-100K
beside a copy of itself with renamed ids), no user has any reason to be shown the other set's items,
so every such recommendation is folding by construction. Models train on the union without being
told where the seam is; the block of every user and item travels with the processed directory
(the vocab's `block` column) to the splits and the evaluator.

Pipeline: each source becomes a one-row-per-(user, item) table (raw files through `ingest` with the
given `DataConfig`, so the same positive rule, aggregation and k-core apply to each; processed
directories as they are) -> ids optionally prefixed "b<i>:" -> disjointness checked -> one ingest
of the union with aggregation `sum` and no further filtering (each pair already appears once, so the
weights pass through unchanged, and k-core on disjoint parts equals k-core per part; a repeated
pair also brings a weight-0 row at its first-seen time, so that time survives the union).

Blocks: by default the source index 0..n-1 (`blocks="source"`), the seam the diagnostic is about.
With `blocks="nested"` a source that already carries block labels (a combined or synthetic set)
keeps them, offset so that labels of different sources never collide, and a source without labels
is one block: useful when each source has known clusters of its own.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from recsys.config import ColumnMap, DataConfig
from recsys.data import storage
from recsys.data.dataset import InteractionData
from recsys.data.ingest import ingest
from recsys.data.schema import FIRST_SEEN, ITEM, ITEM_IDX, TIME, USER, USER_IDX, WEIGHT
from recsys.data.vocab import BLOCK, UNKNOWN_BLOCK
from recsys.errors import DataError

BlockMode = Literal["source", "nested"]
Progress = Callable[[str], None]
COMBINED_FILE = "combined.parquet"


@dataclass(frozen=True)
class CombinedSource:
    """One input as it entered the union."""

    path: str
    kind: Literal["raw", "processed"]
    prefix: str
    users: int
    items: int
    interactions: int
    blocks: list[int]
    rows_in: int | None = None
    rows_quarantined: int | None = None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class CombineReport:
    out_dir: Path
    users: int
    items: int
    interactions: int
    fingerprint: str
    block_mode: BlockMode
    sources: list[CombinedSource] = field(default_factory=list)

    def to_json_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "users": self.users,
            "items": self.items,
            "interactions": self.interactions,
            "fingerprint": self.fingerprint,
            "block_mode": self.block_mode,
            "sources": [s.to_dict() for s in self.sources],
        }


def source_prefix(index: int) -> str:
    return f"b{index}:"


def _as_pairs(data: InteractionData) -> pl.DataFrame:
    """Canonical rows with raw ids (index -> id is one gather per column): one per pair, plus, for
    a pair first seen before its latest timestamp (a repeat, see `recsys.data.first_seen`), a
    weight-0 row at its first-seen time. The union's ingest (aggregate `sum`) then gives the pair
    the same weight, latest time and first-seen time it had in its source, so time-based splits
    of the combined data place it where its source's splits do."""
    users = pl.Series(USER, data.user_ids.astype(str), dtype=pl.String)
    items = pl.Series(ITEM, data.item_ids.astype(str), dtype=pl.String)
    frame = data.interactions
    pairs = pl.DataFrame(
        {
            USER: users.gather(frame.get_column(USER_IDX)),
            ITEM: items.gather(frame.get_column(ITEM_IDX)),
            TIME: frame.get_column(TIME),
            WEIGHT: frame.get_column(WEIGHT),
        }
    )
    if FIRST_SEEN not in frame.columns:
        return pairs
    earlier = frame.get_column(FIRST_SEEN).ne_missing(frame.get_column(TIME))
    first_rows = pairs.filter(earlier).with_columns(
        frame.get_column(FIRST_SEEN).filter(earlier).alias(TIME), pl.lit(0.0, dtype=pl.Float32).alias(WEIGHT)
    )
    return pl.concat([pairs, first_rows], how="vertical")


def _labels(
    ids: np.ndarray, blocks: np.ndarray | None, id_name: str, offset: int, mode: BlockMode
) -> pl.DataFrame:
    """(id, block) for one source: its index (offset) or, nested, offset + its own labels."""
    if mode == "nested" and blocks is not None and bool((blocks >= 0).any()):
        labels = np.where(blocks >= 0, blocks + offset, UNKNOWN_BLOCK)
    else:
        labels = np.full(len(ids), offset, dtype=np.int64)
    return pl.DataFrame({id_name: ids.astype(str), BLOCK: labels.astype(np.int32)})


def _width(labels: pl.DataFrame) -> int:
    return int(labels.get_column(BLOCK).max()) + 1 if labels.height else 0


def _shared_ids(tables: list[pl.DataFrame], column: str) -> pl.Series:
    """Ids of `column` that occur in more than one source (each source's ids counted once)."""
    ids = pl.concat([t.select(pl.col(column).unique()) for t in tables])
    return ids.group_by(column).agg(pl.len().alias("n")).filter(pl.col("n") > 1).get_column(column).sort()


def _check_disjoint(tables: list[pl.DataFrame]) -> None:
    """One error naming how many user and item ids (with examples) appear in more than one source."""
    users, items = _shared_ids(tables, USER), _shared_ids(tables, ITEM)
    if users.len() or items.len():
        examples = ", ".join(repr(x) for x in pl.concat([users.head(2), items.head(2)]).to_list())
        raise DataError(
            f"sources share {users.len()} user id(s) and {items.len()} item id(s) (e.g. {examples}); "
            "combined sources must be disjoint: drop --no-prefix-ids to prefix every id with its source "
            "(b0:, b1:, ...)"
        )


def _clean_target(out_dir: Path, inputs: Sequence[Path]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: output exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not storage.is_processed_dir(out_dir):
        raise DataError(f"{out_dir}: output directory is not empty and is not a processed data directory")
    resolved = out_dir.resolve()
    for source in inputs:
        if source.resolve() == resolved:
            raise DataError(f"{out_dir}: output is also an input; write the combined set elsewhere")


def combine(
    sources: Sequence[str | Path],
    out_dir: str | Path,
    cfg: DataConfig | None = None,
    *,
    prefix_ids: bool = True,
    format: str | None = None,
    blocks: BlockMode = "source",
    progress: Progress | None = None,
) -> CombineReport:
    """Merge `sources` (raw files/directories in any readable format, or processed directories)
    into one processed directory at `out_dir` whose vocab records each user's and item's block.

    prefix_ids: prefix every id with "b<i>:" (source i), which makes any sources disjoint (e.g. a
        data set and a copy of itself). Without it, ids shared between sources are a DataError.
    format / cfg: how raw sources are read and turned into implicit pairs (cfg defaults to
        DataConfig()); processed sources are taken as they were ingested.
    blocks: "source" (block = source index) or "nested" (see the module docstring).
    The output is built in a temporary sibling and swapped in atomically; per-source quarantines of
    raw inputs are kept under quarantine/combine-source-<i>.parquet.
    """
    say = progress or (lambda _stage: None)
    paths = [Path(s) for s in sources]
    if len(paths) < 2:
        raise DataError(f"combine needs at least two sources, got {len(paths)}")
    out_dir = Path(out_dir)
    _clean_target(out_dir, paths)
    cfg = cfg or DataConfig()

    # The work directory (each raw source ingested, the union) is one of out_dir's staging
    # directories, made under its writer lock: a combine killed with SIGKILL left `.combine.*`
    # behind for ever (copies of every source), now the next writer of out_dir removes it.
    with storage.writer_lock(out_dir), tempfile.TemporaryDirectory(
        prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent
    ) as work:
        work_dir = Path(work)
        tables, user_labels, item_labels, summaries, quarantines = [], [], [], [], []
        offset = 0
        for i, path in enumerate(paths):
            say(f"reading source {i}: {path.name}")
            kind, rows_in, rows_q, quarantine = "processed", None, None, None
            if not storage.is_processed_dir(path):
                kind = "raw"
                report = ingest(path, work_dir / f"source-{i}", cfg, format=format)
                rows_in, rows_q, quarantine = report.rows_in, report.rows_quarantined, report.quarantine_path
                data = storage.load_processed(work_dir / f"source-{i}")
            else:
                data = storage.load_processed(path)
            prefix = source_prefix(i) if prefix_ids else ""
            pairs = _as_pairs(data)
            user_ids = np.asarray(data.user_ids).astype(str)
            item_ids = np.asarray(data.item_ids).astype(str)
            if prefix:
                pairs = pairs.with_columns(
                    (prefix + pl.col(USER)).alias(USER), (prefix + pl.col(ITEM)).alias(ITEM)
                )
                user_ids = np.char.add(prefix, user_ids)
                item_ids = np.char.add(prefix, item_ids)
            u_lab = _labels(user_ids, data.user_blocks, USER, offset, blocks)
            i_lab = _labels(item_ids, data.item_blocks, ITEM, offset, blocks)
            offset = max(offset + 1, _width(u_lab), _width(i_lab))
            tables.append(pairs)
            user_labels.append(u_lab)
            item_labels.append(i_lab)
            quarantines.append(quarantine)
            summaries.append(
                CombinedSource(
                    path=str(path),
                    kind=kind,
                    prefix=prefix,
                    users=data.n_users,
                    items=data.n_items,
                    interactions=data.interactions.height,
                    blocks=sorted(
                        set(u_lab.get_column(BLOCK).to_list()) | set(i_lab.get_column(BLOCK).to_list())
                    ),
                    rows_in=rows_in,
                    rows_quarantined=rows_q,
                )
            )

        say("checking disjointness")
        _check_disjoint(tables)
        combined_file = work_dir / COMBINED_FILE
        pl.concat(tables, how="vertical").write_parquet(combined_file)

        say("ingesting the union")
        # Every pair appears once already: `sum` passes weights through, and nothing is filtered twice.
        union_cfg = cfg.model_copy(
            update={
                "format": None,
                "columns": ColumnMap(user=USER, item=ITEM, time=TIME, weight=WEIGHT),
                "positive_min_weight": None,
                "positive_events": None,
                "event_weights": None,
                "aggregate": "sum",
                "binarize": False,
                "min_user_interactions": 1,
                "min_item_interactions": 1,
            }
        )
        with storage.staged_directory(out_dir) as tmp:
            report = ingest(
                combined_file,
                tmp,
                union_cfg,
                format="parquet",
                user_labels=pl.concat(user_labels),
                item_labels=pl.concat(item_labels),
            )
            if report.rows_quarantined:  # pragma: no cover - rows already passed validation once
                raise DataError(
                    f"combine: {report.rows_quarantined} rows of the union were quarantined: {report.reasons}"
                )
            for i, quarantine in enumerate(quarantines):
                if quarantine is not None and quarantine.is_file():
                    shutil.copy2(quarantine, tmp / storage.QUARANTINE_DIR / f"combine-source-{i}.parquet")
            _annotate_manifest(tmp, summaries, prefix_ids, blocks)

    say("done")
    return CombineReport(
        out_dir=out_dir,
        users=report.users,
        items=report.items,
        interactions=report.interactions,
        fingerprint=report.fingerprint,
        block_mode=blocks,
        sources=summaries,
    )


def _annotate_manifest(
    root: Path, summaries: list[CombinedSource], prefix_ids: bool, blocks: BlockMode
) -> None:
    """Name the real inputs in the manifest (the ingest saw only a temporary union file)."""
    manifest = storage.read_manifest(root)
    names = [s.path for s in summaries]
    manifest["sources"] = names
    for batch in manifest.get("batches", []):
        batch["source"] = "combine(" + ", ".join(names) + ")"
    manifest["combine"] = {
        "prefix_ids": prefix_ids,
        "block_mode": blocks,
        "sources": [s.to_dict() for s in summaries],
    }
    storage.write_json(root / storage.MANIFEST_FILE, manifest)
