"""The `ease` model's typed config, apart from the model (numpy, scipy.sparse, threadpoolctl): reading
a config must not load them (see `recsys/models/wals_config.py`, tests/test_startup.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsys.models.defaults import EASE_L2_SCALE
from recsys.models.model_config import ModelConfig

DEFAULT_MAX_ITEMS = 10_000
DEFAULT_MAX_MEMORY_GB = 8.0


class EASEConfig(ModelConfig):
    kind: Literal["ease"] = "ease"
    l2: float | None = Field(
        None,
        gt=0,
        description="L2 weight lambda added to the Gram matrix's diagonal; None = data-aware: "
        "`l2_scale` x the mean interactions per item, at least 100 (recsys.models.defaults.ease_l2)",
    )
    l2_scale: float = Field(
        EASE_L2_SCALE,
        gt=0,
        description="with l2 = None: lambda = l2_scale x mean interactions per item, at least 100",
    )
    weighting: Literal["binary", "log", "raw"] = Field(
        "binary",
        description="what a history row holds: 1 per interaction (Steck's setting), log(1 + weight), "
        "or the raw weight",
    )
    threads: int = Field(0, ge=0, description="BLAS threads for the inverse (0 = the run's thread budget / all cores)")
    max_items: int = Field(
        DEFAULT_MAX_ITEMS,
        gt=0,
        description="refuse catalogues larger than this (fitting needs 16 x n_items^2 bytes)",
    )
    max_memory_gb: float = Field(
        DEFAULT_MAX_MEMORY_GB,
        gt=0,
        description="refuse data whose fit (16 x n_items^2 bytes) plus user vectors (4 x n_users x n_items "
        "bytes) need more than this many GB",
    )
