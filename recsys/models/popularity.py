"""Popularity: the floor every model must beat. (Stub: being implemented.)"""

from __future__ import annotations

from typing import Literal

from recsys.models.base import ModelConfig


class PopularityConfig(ModelConfig):
    kind: Literal["popularity"] = "popularity"
