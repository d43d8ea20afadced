"""A split on disk: its matrices (`.npz`, no pickle), meta and vocab, written atomically.

Used to hand a split to other processes (torchrun ranks) and to log it with a pipeline run, so that
`recsys promote` later decides from exactly the split the run evaluated on (same digest), and an
audit can check which pairs every model trained and was tested on.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.data.split import Split
from recsys.errors import DataError
from recsys.files import publishable_dir

PARTS = ("train", "validation", "test", "fold_in", "validation_fold_in", "times")
META_FILE = "split.json"


def save_split(split: Split, directory: str | Path) -> Path:
    """Write `split` into `directory` (replaced atomically: a reader never sees half a split).

    Written in a staging folder beside it (`.NAME.<pid>-*`), which replaces it by two renames: the
    older split moves aside whole, the new one in, and only then is the older one deleted. Why: it
    was deleted in place first, and a kill -9 during that left part of it where a reader (the ranks
    of `recsys train --handoff DIR`) took it for a split. What a killed save left beside it (its
    staging, an older copy half deleted) is removed by the next save, once that process is gone."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(target)
    tmp = publishable_dir(target.parent, f".{target.name}.{os.getpid()}-")  # a --handoff split is read by other accounts
    try:
        present = [name for name in PARTS if getattr(split, name) is not None]
        for name in present:
            sp.save_npz(tmp / f"{name}.npz", sp.csr_matrix(getattr(split, name)))
        for kind, ids in (("users", split.user_ids), ("items", split.item_ids)):
            if len(ids):
                pl.DataFrame({"id": np.asarray(ids).astype(str)}).write_parquet(tmp / f"{kind}.parquet")
        meta = {"protocol": split.protocol, "parts": present, "meta": split.meta}
        (tmp / META_FILE).write_text(json.dumps(meta, default=str))
        aside = tmp.with_name(f"{tmp.name}.old")
        if target.exists():
            os.replace(target, aside)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if aside.exists():
        shutil.rmtree(aside, ignore_errors=True)
    return target


def _remove_dead_staging(target: Path) -> None:
    """Remove the staging folders and older copies (`.NAME.<pid>-*`) of saves whose process is gone."""
    from recsys.files import pid_named

    for left, _, alive in pid_named(target.parent, f".{target.name}."):
        if not alive and left.is_dir():
            shutil.rmtree(left, ignore_errors=True)


def load_split(directory: str | Path) -> Split:
    """Read a split written by `save_split` (ids and meta when it has them)."""
    source = Path(directory)
    meta_file = source / META_FILE
    if not meta_file.is_file():
        raise DataError(f"{source}: not a saved split (no {META_FILE}); write one with save_split")
    meta = json.loads(meta_file.read_text())
    parts = {name: sp.csr_matrix(sp.load_npz(source / f"{name}.npz")) for name in meta["parts"]}
    split = Split(protocol=meta["protocol"], **parts)
    split.meta = meta.get("meta", {})
    for kind, attribute in (("users", "user_ids"), ("items", "item_ids")):
        path = source / f"{kind}.parquet"
        if path.is_file():
            setattr(split, attribute, pl.read_parquet(path).get_column("id").to_numpy().astype(object))
    return split
