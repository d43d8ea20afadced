"""WALS over implicit's AlternatingLeastSquares. (Stub: being implemented.)"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsys.models.base import ModelConfig


class WALSConfig(ModelConfig):
    kind: Literal["wals"] = "wals"
    factors: int = Field(64, gt=0)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(10.0, gt=0, description="confidence scale: c = 1 + alpha * f(w)")
    confidence: Literal["linear", "log"] = "linear"
    eps: float = Field(1.0, gt=0, description="log scaling: c = 1 + alpha * log(1 + w / eps)")
    binarize: bool = Field(False, description="treat every interaction as weight 1 before scaling")
    iterations: int = Field(15, gt=0)
    solver: Literal["cg", "cholesky"] = "cg"
    cg_steps: int = Field(3, gt=0)
    threads: int = Field(0, ge=0, description="0 = all cores")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_every: int = Field(0, ge=0, description="evaluate on validation every N iterations (0 = never)")
    early_stopping_patience: int = Field(0, ge=0, description="stop after N evaluations without improvement (0 = off)")
    validation_metric: str = "recall@20"
