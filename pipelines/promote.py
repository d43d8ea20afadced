"""Step: promote the best model of a pipeline run if it beats the champion by the configured rule.

Picks, among the candidate runs, the one with the highest `promotion.metric` (finished runs only),
registers it as the challenger of `promotion.registered_model` and applies the rule in
`recsys.tracking.registry` (significance on per-user metrics, coverage guard, same-split check).

A scheduled run ingests new data, so its split differs from the one the champion was evaluated on;
given this run's `split`, the champion is re-evaluated on it (with `cfg.evaluation`) before the rule
is applied, instead of the comparison being refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from recsys.config import RunConfig
from recsys.errors import TrackingError
from recsys.tracking.registry import PromotionDecision, promote
from recsys.tracking.store import check_tracking, client, metric_key, resolve_tracking_uri

if TYPE_CHECKING:
    from recsys.data.split import Split


def best_candidate(mlflow_client, run_ids: Sequence[str], metric: str) -> str:
    """The finished run with the highest `metric` (ties: the first given)."""
    key = metric_key(metric)
    scored = []
    for run_id in run_ids:
        run = mlflow_client.get_run(run_id)
        value = run.data.metrics.get(key)
        if run.info.status == "FINISHED" and value is not None:
            scored.append((value, -len(scored), run_id))
    if not scored:
        raise TrackingError(f"no finished candidate run has metric {metric!r} ({key}); runs: {list(run_ids)}")
    return max(scored)[2]


def run_promotion(
    cfg: RunConfig,
    candidate_run_ids: Sequence[str] | Mapping[str, str],
    *,
    split: Split | None = None,
) -> PromotionDecision:
    """Choose the pipeline run's best candidate and apply the promotion rule to it.

    `split`: the split the candidates were evaluated on. Without it a champion evaluated on other
    data cannot be re-evaluated, and the comparison is refused."""
    run_ids = (
        list(candidate_run_ids.values())
        if isinstance(candidate_run_ids, Mapping)
        else list(candidate_run_ids)
    )
    if not run_ids:
        raise TrackingError("nothing to promote: no candidate runs")
    uri = resolve_tracking_uri(cfg.tracking)
    check_tracking(uri)
    mlflow_client = client(uri)
    challenger = best_candidate(mlflow_client, run_ids, cfg.promotion.metric)
    return promote(mlflow_client, cfg.promotion, challenger, split=split, evaluation=cfg.evaluation)
