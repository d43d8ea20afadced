"""Full-corpus evaluation: chunked top-k ranking, per-user metrics, statistics, and `evaluate()`.

Modules (import them directly; this package imports nothing eagerly so that `recsys.models.base`
can reach `ranking.topk` without pulling in polars/rich/scipy.stats):

- `ranking`  : `topk`, `rank_factors`, `rank_eval_set` -> `RankedLists`
- `metrics`  : recall / precision / ndcg / map / mrr / hit_rate per user; coverage, novelty, ARP
- `stats`    : bootstrap confidence intervals and paired tests between models
- `evaluate` : `evaluate`, `evaluate_factors` -> `EvaluationResult`, `format_table`
"""
