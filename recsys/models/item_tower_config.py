"""The item tower's typed config, apart from the model: `recsys.config` builds `RunConfig` from every
model's config, and `recsys/models/item_tower.py` imports torch, a second of start-up that commands
which only read a config should not pay (see `recsys/models/two_tower_config.py`). Nothing here may
import torch (tests/test_startup.py checks)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsys.models.model_config import ModelConfig


class ItemTowerConfig(ModelConfig):
    kind: Literal["item_tower"] = "item_tower"
    dim: int = Field(64, gt=0)
    layers: list[int] = Field(default_factory=list, description="hidden sizes of the tower's MLP ([] = embedding only)")
    temperature: float = Field(0.1, gt=0)
    num_negatives: int = Field(256, gt=0, description="shared negatives per batch")
    sampler: Literal["uniform", "popularity"] = "uniform"
    sampler_alpha: float = Field(0.75, ge=0, description="popularity^alpha sampling exponent")
    window: int | None = Field(
        None, gt=0, description="partners within this many positions in the user's time order (needs times); "
        "None = any other item of the user",
    )  # fmt: skip
    batch_size: int = Field(1024, gt=0, description="pairs per step")
    epochs: int = Field(10, gt=0)
    lr: float = Field(5e-3, gt=0)
    threads: int | None = Field(None, gt=0, description="torch intra-op threads (None = torch default)")
    quiet: bool = True
