"""Export one split per data set in every peer's native format, from the project's own splitter.

Runs in the project venv. For each data set in DATASETS it ingests the source with `recsys.data`,
splits it with `recsys.data.splits.split_data` and writes, under `<out>/<dataset>/`:

* `train.tsv`, `valid.tsv`, `test.tsv`: `user  item  rating  timestamp` (Cornac, LensKit, implicit);
* `recbole/<dataset>/<dataset>.{train,valid,test}.inter`: RecBole's benchmark files (atomic format,
  `user_id:token item_id:token rating:float timestamp:float`), so RecBole skips its own splitter;
* `train.npz`, `valid.npz`, `test.npz`: the CSR matrices themselves, for score.py and the project;
* `meta.json`: sizes, protocol, split settings, row counts and the data fingerprint.

Ids are the project's dense integer indices, so every system's lists map back without a vocab and
every system trains and is scored on identical interactions.

    .venv/bin/python benchmarks/peers/export.py [--out DIR] [--datasets a,b] [--synthetic-users N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.config import DataConfig, SplitConfig, SyntheticConfig
from recsys.data.dataset import InteractionData
from recsys.data.ingest import ingest
from recsys.data.schema import ITEM_IDX, TIME, USER_IDX
from recsys.data.split import Split
from recsys.data.splits import split_data
from recsys.data.storage import load_processed
from recsys.data.synthetic import write_synthetic
from recsys.files import atomic_path

REPO = Path(__file__).resolve().parents[2]
ML100K = REPO.parent / "shared/data/ml-100k/ml-100k.inter"
DEFAULT_OUT = REPO / "benchmarks/out/peers/export"
RECBOLE_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
PLAIN_HEADER = ["user", "item", "rating", "timestamp"]
PART_FILES = {"train": "train", "validation": "valid", "test": "test"}


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark data set: where its interactions come from and how they are split."""

    source: str  # "ml100k" or "synthetic"
    split: SplitConfig
    description: str


DATASETS: dict[str, DatasetSpec] = {
    "ml100k-random": DatasetSpec(
        "ml100k",
        SplitConfig(protocol="random", test_fraction=0.1, validation_fraction=0.1, seed=0),
        "ML-100K, every rating a positive, random 80/10/10 per user",
    ),
    "ml100k-temporal": DatasetSpec(
        "ml100k",
        SplitConfig(protocol="leave_last_n", n=5, validation_fraction=0.1, seed=0),
        "ML-100K, every rating a positive, per user the last 5 items test and the 5 before validation",
    ),
    "synthetic-1m": DatasetSpec(
        "synthetic",
        SplitConfig(protocol="random", test_fraction=0.1, validation_fraction=0.1, seed=0),
        "recsys.data.synthetic planted clusters, ~1M interactions, random 80/10/10 per user",
    ),
}

# Every rating counts once: the usual implicit-feedback reading of ML-100K in RecBole's BPR runs.
DATA_CONFIG = DataConfig(aggregate="max", binarize=True)


def synthetic_config(n_users: int) -> SyntheticConfig:
    """~25 interactions per user: 40,000 users give about a million interactions."""
    return SyntheticConfig(
        n_users=n_users,
        n_items=max(n_users // 5, 100),
        n_clusters=20,
        interactions_per_user=25.0,
        leakage=0.1,
        seed=0,
    )


def load_source(source: str, work: Path, synthetic_users: int) -> InteractionData:
    """Ingest the source with the project's own pipeline (validation, implicit conversion, vocab)."""
    processed = work / "processed" / source
    if processed.exists():
        shutil.rmtree(processed)
    if source == "ml100k":
        if not ML100K.is_file():
            raise SystemExit(f"ML-100K not found at {ML100K}")
        ingest(ML100K, processed, DATA_CONFIG)
    elif source == "synthetic":
        raw = write_synthetic(synthetic_config(synthetic_users), work / "raw" / "synthetic")
        ingest(raw["interactions"], processed, DATA_CONFIG)
    else:
        raise SystemExit(f"unknown source {source!r}")
    return load_processed(processed)


def part_frame(matrix: sp.csr_matrix, timestamps: pl.DataFrame) -> pl.DataFrame:
    """One part's (user, item, rating, timestamp) rows, sorted by user then time then item."""
    coo = matrix.tocoo()
    rows = pl.DataFrame(
        {
            USER_IDX: coo.row.astype(np.int32),
            ITEM_IDX: coo.col.astype(np.int32),
            "rating": coo.data.astype(np.float64),
        }
    )
    joined = rows.join(timestamps, on=[USER_IDX, ITEM_IDX], how="left")
    return joined.select(
        pl.col(USER_IDX).alias("user"),
        pl.col(ITEM_IDX).alias("item"),
        pl.col("rating"),
        (pl.col(TIME).dt.epoch("ms").cast(pl.Float64) / 1000.0).fill_null(0.0).alias("timestamp"),
    ).sort(["user", "timestamp", "item"])


def write_part(frame: pl.DataFrame, path: Path, header: list[str]) -> None:
    """TSV with the given header; temp name then rename."""
    with atomic_path(path) as tmp:
        frame.rename(dict(zip(frame.columns, header, strict=True))).write_csv(tmp, separator="\t")


def export_split(name: str, spec: DatasetSpec, split: Split, data: InteractionData, out: Path) -> dict:
    """Write every format for one split; returns the meta written to meta.json."""
    target = out / name
    recbole_dir = target / "recbole" / name
    recbole_dir.mkdir(parents=True, exist_ok=True)
    timestamps = data.interactions.select(USER_IDX, ITEM_IDX, TIME)
    parts = {"train": split.train, "validation": split.validation, "test": split.test}
    for part, matrix in parts.items():
        file = PART_FILES[part]
        frame = part_frame(matrix, timestamps)
        write_part(frame, target / f"{file}.tsv", PLAIN_HEADER)
        write_part(frame, recbole_dir / f"{name}.{file}.inter", RECBOLE_HEADER)
        sp.save_npz(target / f"{file}.npz", matrix.tocsr(), compressed=False)
    meta = {
        "dataset": name,
        "description": spec.description,
        "n_users": split.n_users,
        "n_items": split.n_items,
        "protocol": split.protocol,
        "split": spec.split.model_dump(mode="json"),
        "rows": {PART_FILES[p]: int(m.nnz) for p, m in parts.items()},
        "test_users": int(np.count_nonzero(np.diff(split.test.indptr))),
        "fingerprint": data.fingerprint,
    }
    (target / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def load_split(export_dir: Path) -> tuple[Split, dict]:
    """The exported matrices as a project Split (for score.py and the project runner)."""
    meta = json.loads((export_dir / "meta.json").read_text())
    split = Split(
        protocol=meta["protocol"],
        train=sp.load_npz(export_dir / "train.npz").tocsr(),
        validation=sp.load_npz(export_dir / "valid.npz").tocsr(),
        test=sp.load_npz(export_dir / "test.npz").tocsr(),
        meta=meta,
    )
    return split, meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--synthetic-users", type=int, default=40_000)
    args = parser.parse_args(argv)
    names = [n for n in args.datasets.split(",") if n]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise SystemExit(f"unknown data set(s) {unknown}; known: {sorted(DATASETS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    loaded: dict[str, InteractionData] = {}
    for name in names:
        spec = DATASETS[name]
        start = time.perf_counter()
        if spec.source not in loaded:
            loaded[spec.source] = load_source(spec.source, args.out.parent / "work", args.synthetic_users)
        data = loaded[spec.source]
        meta = export_split(name, spec, split_data(data, spec.split), data, args.out)
        print(
            f"exported {name}: {meta['n_users']} users, {meta['n_items']} items, rows {meta['rows']} "
            f"({time.perf_counter() - start:.1f}s)"
        )


if __name__ == "__main__":
    main()
