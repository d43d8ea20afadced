"""Step: train one model from its config on a split.

Thread budget: the flow trains `orchestration.max_workers` models at once; each gets
`cores // max_workers` BLAS/torch threads (or `threads_per_model`), so concurrent models do not
oversubscribe the cores. A model's own `threads` setting, when given, wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from recsys.config import OrchestrationConfig
from recsys.data.split import Split
from recsys.models.base import FitCallback, ModelConfig, Recommender, build_model


def thread_budget(cfg: OrchestrationConfig) -> int:
    """Threads each concurrently trained model may use."""
    if cfg.threads_per_model:
        return cfg.threads_per_model
    workers = 1 if cfg.task_runner == "sequential" else cfg.max_workers
    return max(1, (os.cpu_count() or 1) // workers)


def with_thread_budget(model_cfg: ModelConfig, threads: int) -> ModelConfig:
    """Fill the model's thread setting from the budget unless the user set it explicitly."""
    if getattr(model_cfg, "kind", "") == "wals" and getattr(model_cfg, "threads", 1) == 0:
        return model_cfg.model_copy(update={"threads": threads})
    if getattr(model_cfg, "kind", "") == "two_tower" and getattr(model_cfg, "threads", 1) is None:
        return model_cfg.model_copy(update={"threads": threads})
    return model_cfg


def train_model(
    model_cfg: ModelConfig,
    split: Split,
    *,
    threads: int | None = None,
    callback: FitCallback | None = None,
    features: Any = None,
    save_to: str | Path | None = None,
) -> Recommender:
    """Build, fit (validation split for early stopping, never test) and optionally save a model."""
    if threads is not None:
        model_cfg = with_thread_budget(model_cfg, threads)
    model = build_model(model_cfg)
    model.fit(split.train, validation=split.validation_set(), callback=callback, features=features)
    if save_to is not None:
        model.save(save_to)
    return model
