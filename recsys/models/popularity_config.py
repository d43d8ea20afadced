"""The `popularity` model's typed config, apart from the model (numpy, scipy.sparse): reading a config
must not load them (see `recsys/models/wals_config.py`, tests/test_startup.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsys.models.model_config import ModelConfig


class PopularityConfig(ModelConfig):
    kind: Literal["popularity"] = "popularity"
    by: Literal["count", "weight"] = Field(
        "count",
        description="count = number of users who interacted with the item; weight = sum of interaction weights",
    )
