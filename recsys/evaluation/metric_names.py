"""The names of the metrics `recsys.evaluation.metrics` computes, apart from it (numpy, polars,
scipy.sparse): a config's checks name them, and reading a config must not load those
(tests/test_startup.py)."""

from __future__ import annotations

PER_USER_METRICS: tuple[str, ...] = ("recall", "recall_raw", "precision", "ndcg", "map", "mrr", "hit_rate")
AGGREGATE_METRICS: tuple[str, ...] = ("coverage", "novelty", "arp")
ALL_METRICS: tuple[str, ...] = PER_USER_METRICS + AGGREGATE_METRICS
