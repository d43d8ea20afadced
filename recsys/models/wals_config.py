"""The `wals` model's typed config, apart from the model: `recsys.config` builds `RunConfig` from every
model's config, and `recsys/models/wals.py` imports implicit at module level (on purpose, see there),
which commands that only read a config should not load (see `recsys/models/two_tower_config.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from recsys.models.model_config import ModelConfig


class WALSConfig(ModelConfig):
    kind: Literal["wals"] = "wals"
    factors: int = Field(64, gt=0)
    regularization: float | None = Field(
        None,
        ge=0,
        description="L2 penalty lambda on every factor (implicit: lambda * I); None = data-aware, "
        "frequency-scaled (recsys.models.defaults)",
    )
    alpha: float | None = Field(
        None, gt=0, description="confidence scale: c = 1 + alpha * f(w); None = 3 / mean f(w)"
    )
    confidence: Literal["linear", "log"] | None = Field(
        None, description="f(w) = w or log(1 + w / eps); None = log when the weights are heavy-tailed"
    )
    eps: float | None = Field(
        None, gt=0, description="log scaling: c = 1 + alpha * log(1 + w / eps); None = the median weight"
    )
    binarize: bool = Field(False, description="treat every interaction as weight 1 before scaling")
    iterations: int = Field(15, gt=0)
    solver: Literal["cg", "cholesky"] = "cg"
    cg_steps: int = Field(3, gt=0)
    threads: int = Field(0, ge=0, description="0 = all cores")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    calculate_training_loss: bool = Field(
        True,
        description="compute implicit's training loss every iteration (history 'loss'; costs ~one extra pass)",
    )
    eval_every: int = Field(0, ge=0, description="evaluate on validation every N iterations (0 = never)")
    early_stopping_patience: int = Field(
        0,
        ge=0,
        description="stop after N evaluations without improvement and keep the best evaluated factors (0 = off)",
    )
    validation_metric: str = "recall@20"

    @field_validator("validation_metric")
    @classmethod
    def _metric_at_k(cls, value: str) -> str:
        name, _, k = value.partition("@")
        if not name or not k.isdigit() or int(k) <= 0:
            raise ValueError(f"validation_metric must look like 'recall@20', got {value!r}")
        return value
