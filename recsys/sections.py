"""Config sections that library modules below `recsys.config` need: a leaf module (pydantic only).

`recsys.config` imports every model's config to build `RunConfig`; a model that needed a section back
from it (the validation scorer builds an `EvaluationConfig`) closed an import circle. Sections
shared that way live here, and `recsys.config` re-exports them, so `from recsys.config import
EvaluationConfig` keeps working above the models.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _takes_bool(annotation: Any) -> bool:
    if annotation in (bool, Any, object):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_takes_bool(arg) for arg in typing.get_args(annotation))
    return False


class NoBoolNumbers(BaseModel):
    """Base of every config section and model config: an unknown key is an error naming it, not a
    silent no-op, and so is a boolean for a number. pydantic reads `true` as 1 in an int or float
    field, so `factors = true` (or `--set models.wals.factors=true`) trained a one-factor WALS
    without a word."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        # a model validator: a field validator cannot run on a model config's `kind` (the discriminator)
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if isinstance(value, bool) and field is not None and not _takes_bool(field.annotation):
                    raise ValueError(f"{name} = {str(value).lower()}: a boolean where the key takes a number or text")
        return data


class Section(NoBoolNumbers):
    """Base of every config section: an unknown key is an error naming it, not a silent no-op."""


class EvaluationConfig(Section):
    ks: list[int] = Field(default_factory=lambda: [10, 20, 50, 100])
    metrics: list[str] = Field(
        default_factory=lambda: [
            "recall",
            "recall_raw",
            "precision",
            "ndcg",
            "map",
            "mrr",
            "hit_rate",
            "coverage",
        ]
    )
    chunk_size: int = Field(
        2048, gt=0, description="users scored per matmul (fewer on catalogues above 16,384 items: 128 MiB of scores); bounds memory"
    )
    threads: int | None = Field(None, gt=0)
    bootstrap_samples: int = Field(1000, ge=0)
    confidence: float = Field(0.95, gt=0, lt=1)
    sampled_negatives: int | None = Field(
        None, description="sampled metrics (biased; Krichene & Rendle 2020). None = full corpus"
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        """A misspelt metric (`ndgc`) passed the config and failed every model after its training
        (each model `failed`, exit 1): refused with the config, before any work."""
        import difflib

        from recsys.evaluation.metric_names import ALL_METRICS  # names only: no numpy, polars, scipy

        unknown = [m for m in metrics if m not in ALL_METRICS]
        if unknown:
            close = {m: difflib.get_close_matches(m, ALL_METRICS, n=1) for m in unknown}
            named = ", ".join(f"{m!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for m, c in close.items())
            raise ValueError(f"unknown metric {named}; known: {', '.join(ALL_METRICS)}")
        return metrics

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, ks: list[int]) -> list[int]:
        if not ks or any(k <= 0 for k in ks):
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(ks))
