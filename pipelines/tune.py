"""Step: hyper-parameter search (Optuna, TPE, seeded) on the validation split — never on test.

Each trial trains on `train` and scores the validation target; the best parameters are written
back into a copy of the config, so `recsys run --config best.toml` reproduces the winner.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recsys.config import RunConfig
from recsys.data.matrix import item_popularity
from recsys.data.split import Split
from recsys.errors import ConfigError

SearchSpace = Callable[[Any], dict[str, Any]]


def _wals_space(trial: Any) -> dict[str, Any]:
    return {
        "factors": trial.suggest_categorical("factors", [32, 64, 128, 256]),
        # Wide: on strong generalisation the best ML-100K WALS needs regularisation ~17.
        "regularization": trial.suggest_float("regularization", 1e-2, 1e3, log=True),
        "alpha": trial.suggest_float("alpha", 0.5, 50.0, log=True),
        "iterations": trial.suggest_int("iterations", 5, 30),
    }


def _two_tower_space(trial: Any) -> dict[str, Any]:
    return {
        "dim": trial.suggest_categorical("dim", [32, 64, 128]),
        "lr": trial.suggest_float("lr", 1e-3, 5e-2, log=True),
        "temperature": trial.suggest_float("temperature", 0.02, 0.5, log=True),
        "num_negatives": trial.suggest_categorical("num_negatives", [32, 128, 512]),
        "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-3, log=True),
    }


SPACES: dict[str, SearchSpace] = {"wals": _wals_space, "two_tower": _two_tower_space}


@dataclass
class TuneResult:
    model: str
    metric: str
    best_value: float
    best_params: dict[str, Any]
    trials: list[dict[str, Any]]
    config: RunConfig


def tune_model(
    cfg: RunConfig, split: Split, model_name: str, *, trials: int, metric: str | None = None,
    progress: Callable[[int, float, dict], None] | None = None, space: SearchSpace | None = None,
) -> TuneResult:
    """Search the model's space (or `space`); metric defaults to the promotion metric (recall@20)."""
    import optuna

    from pipelines.train import train_model
    from recsys.evaluation.cold import warm_validation
    from recsys.evaluation.evaluate import evaluate

    model_cfg = cfg.model(model_name)
    space = space or SPACES.get(model_cfg.kind)
    if space is None:
        raise ConfigError(f"model {model_name!r} ({model_cfg.kind}) has nothing to tune; tunable kinds: {sorted(SPACES)}")
    validation = warm_validation(split)
    if validation is None:
        raise ConfigError("tuning needs a validation split: set split.validation_fraction (e.g. 0.1)")
    metric = metric or cfg.promotion.metric
    eval_cfg = cfg.evaluation.model_copy(update={"bootstrap_samples": 0})
    popularity = item_popularity(split.train)
    history: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = space(trial)
        model = train_model(model_cfg.model_copy(update=params), split)
        # Early stopping inside fit uses the same validation target; test is never touched.
        value = float(evaluate(model, validation, eval_cfg, item_popularity=popularity).summary[metric])
        history.append({"trial": trial.number, metric: value, **params})
        if progress is not None:
            progress(trial.number, value, params)
        return value if math.isfinite(value) else 0.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.optimize(objective, n_trials=trials)
    best = dict(study.best_params)
    tuned = cfg.model_copy(deep=True)
    tuned.models = [m.model_copy(update=best) if m.name == model_name else m for m in tuned.models]
    return TuneResult(model_name, metric, float(study.best_value), best, history, RunConfig.model_validate(tuned.resolved()))
