"""Config sections that library modules below `recsys.config` need: a leaf module (pydantic only).

`recsys.config` imports every model's config to build `RunConfig`; a model that needed a section back
from it (the validation scorer builds an `EvaluationConfig`) closed an import circle. Sections
shared that way live here, and `recsys.config` re-exports them, so `from recsys.config import
EvaluationConfig` keeps working above the models.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """Base of every config section: an unknown key is an error naming it, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
