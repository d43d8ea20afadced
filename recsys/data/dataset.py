"""An ingested, indexed interaction set: what a processed data directory loads into.

Splitters and models work on dense integer indices; raw ids live only in the vocab arrays so that
index -> id is one array lookup (the pyfunc and reports map back with it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl


@dataclass
class InteractionData:
    """interactions: columns user_idx (Int32), item_idx (Int32), timestamp (Datetime UTC, may be
    null), weight (Float32), one row per (user, item) after implicit conversion and filtering.
    user_ids[i] / item_ids[j] are the raw ids of index i / j (the vocab, append-only).
    user_blocks / item_blocks: int block labels (planted clusters or combined sources) when known."""

    interactions: pl.DataFrame
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_blocks: np.ndarray | None = None
    item_blocks: np.ndarray | None = None
    manifest: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def fingerprint(self) -> str:
        return str(self.manifest.get("fingerprint", ""))
