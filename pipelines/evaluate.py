"""Step: score a trained model on the split's test set (full corpus) and measure folding.

Model metrics cover warm users only (a training history; cold items masked): cold test users are
counted and scored as their own group by the fallback serving uses (`recsys.evaluation.cold`).
With a validation part, the warm validation users are scored too: candidates are ranked on them,
so the test set is touched once, by the promotion rule (pipelines/promote.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.config import RunConfig
from recsys.data.matrix import item_popularity
from recsys.data.split import Split
from recsys.models.base import Recommender

VALIDATION_PREFIX = "validation_"
"""Final validation metrics are logged as `validation_<metric>` (e.g. validation_recall_at_20); the
per-epoch early-stopping curve of a two-tower is `val_<metric>`, a different series."""
COLD_PREFIX = "cold_"
"""The cold users' fallback metrics are logged as `cold_<metric>` (e.g. cold_recall_at_20)."""


@dataclass
class ModelEvaluation:
    """Everything the tracker and the reports need about one model's performance."""

    name: str
    result: object  # recsys.evaluation.evaluate.EvaluationResult on the warm test users
    folding: dict[str, float | str] = field(default_factory=dict)
    seconds: float = 0.0
    cold: dict[str, Any] = field(default_factory=dict)  # counts + the cold group's fallback metrics
    validation: dict[str, float] = field(default_factory=dict)  # warm validation users' means

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.result.summary)

    def extra_metrics(self) -> dict[str, float]:
        """What MLflow gets beside the test metrics: folding numbers, validation and cold group."""
        out: dict[str, float] = {k: v for k, v in self.folding.items() if isinstance(v, int | float)}
        out.update({f"{VALIDATION_PREFIX}{k}": v for k, v in self.validation.items()})
        out.update({k: v for k, v in self.cold.items() if isinstance(v, int | float)})
        group = self.cold.get("group", {})
        out.update({f"{COLD_PREFIX}{k}": v for k, v in group.get("metrics", {}).items()})
        return out


def evaluate_model(model: Recommender, split: Split, cfg: RunConfig) -> ModelEvaluation:
    """Full-corpus metrics on the warm test users (with CIs and per-user values), the cold users'
    fallback group, the warm validation users' means (when the split has validation) and the
    folding diagnostic."""
    from recsys.evaluation.cold import divide_test, evaluate_cold
    from recsys.evaluation.evaluate import evaluate

    start = time.perf_counter()
    popularity = item_popularity(split.train)
    parts = divide_test(split)
    result = evaluate(model, parts.warm, cfg.evaluation, item_popularity=popularity)
    cold = {**parts.counts(), "group": evaluate_cold(model, parts, cfg.evaluation, item_popularity=popularity,
                                                        item_ids=split.item_ids).to_dict()}
    validation = validation_summary(model, split, cfg, popularity)
    folding = measure_folding(model, split, cfg, popularity) if cfg.folding.enabled else {}
    return ModelEvaluation(model.config.name, result, folding, time.perf_counter() - start, cold, validation)


def validation_summary(model: Recommender, split: Split, cfg: RunConfig, popularity: np.ndarray) -> dict[str, float]:
    """Per-user metric means over the warm validation users (no intervals: they rank candidates)."""
    from recsys.evaluation.cold import divide_validation
    from recsys.evaluation.evaluate import evaluate

    parts = divide_validation(split)
    if parts is None or parts.warm.users.size == 0:
        return {}
    quiet = cfg.evaluation.model_copy(update={"bootstrap_samples": 0})
    summary = evaluate(model, parts.warm, quiet, item_popularity=popularity).summary
    return {k: float(v) for k, v in summary.items()}


def measure_folding(model: Recommender, split: Split, cfg: RunConfig, popularity: np.ndarray) -> dict:
    from recsys.evaluation.folding import folding_report

    report = folding_report(
        model, split, item_blocks=split.item_blocks, user_blocks=split.user_blocks,
        k=cfg.folding.k, neighbours=cfg.folding.neighbours, item_popularity=popularity,
    )
    return report.to_dict()
