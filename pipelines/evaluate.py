"""Step: score a trained model on the split's test set (full corpus) and measure folding."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from recsys.config import RunConfig
from recsys.data.matrix import item_popularity
from recsys.data.split import Split
from recsys.models.base import Recommender


@dataclass
class ModelEvaluation:
    """Everything the tracker and the reports need about one model's test performance."""

    name: str
    result: object  # recsys.evaluation.evaluate.EvaluationResult
    folding: dict[str, float | str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.result.summary)


def evaluate_model(model: Recommender, split: Split, cfg: RunConfig) -> ModelEvaluation:
    """Full-corpus metrics (with CIs and per-user values) plus the folding diagnostic."""
    from recsys.evaluation.evaluate import evaluate

    start = time.perf_counter()
    popularity = item_popularity(split.train)
    result = evaluate(model, split.test_set(), cfg.evaluation, item_popularity=popularity)
    folding = measure_folding(model, split, cfg, popularity) if cfg.folding.enabled else {}
    return ModelEvaluation(model.config.name, result, folding, time.perf_counter() - start)


def measure_folding(model: Recommender, split: Split, cfg: RunConfig, popularity: np.ndarray) -> dict:
    from recsys.evaluation.folding import folding_report

    report = folding_report(
        model, split, item_blocks=split.item_blocks, user_blocks=split.user_blocks,
        k=cfg.folding.k, neighbours=cfg.folding.neighbours, item_popularity=popularity,
    )
    return report.to_dict()
