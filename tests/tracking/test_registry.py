"""Champion/challenger promotion on the real registry: every branch of the rule, with models whose
ordering is known from the planted data (WALS >> popularity on recall; random vectors cover the
catalogue but rank badly)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
import scipy.sparse as sp
from mlflow import MlflowClient

from recsys.config import PromotionConfig, SplitConfig
from recsys.data.splits import split_data
from recsys.models.base import ModelConfig, Recommender
from recsys.models.popularity import PopularityConfig
from recsys.tracking.registry import CHALLENGER, CHAMPION, TAG_DECISION, TAG_REASON, alias_version, promote

from .conftest import log_one


class RandomVectorsConfig(ModelConfig):
    kind: Literal["test_random_vectors"] = "test_random_vectors"
    dim: int = 8


class RandomVectors(Recommender):
    """Seeded Gaussian vectors: covers the whole catalogue, recall near chance."""

    kind = "test_random_vectors"
    Config = RandomVectorsConfig

    def _fit(self, train: sp.csr_matrix, *, validation: Any, callback: Any, features: Any) -> None:
        rng = np.random.default_rng(self.config.seed)
        self._users = rng.normal(size=(self.n_users, self.config.dim)).astype(np.float32)
        self._items = rng.normal(size=(self.n_items, self.config.dim)).astype(np.float32)
        callback(0, {"loss": 0.0})

    @property
    def user_factors(self) -> np.ndarray:
        return self._users

    @property
    def item_factors(self) -> np.ndarray:
        return self._items

    def fold_in(self, histories: sp.spmatrix) -> np.ndarray:
        return np.zeros((histories.shape[0], self.config.dim), dtype=np.float32)

    def _load_factors(self, tensors: dict[str, np.ndarray]) -> None:
        self._users, self._items = tensors["user_factors"], tensors["item_factors"]


@pytest.fixture(scope="module")
def client(logged) -> MlflowClient:
    return MlflowClient(logged.uri, registry_uri=logged.uri)


@pytest.fixture(scope="module")
def random_run(logged, planted_data, planted_split) -> str:
    return log_one(logged, RandomVectorsConfig(name="random"), planted_split, planted_data)


def test_promotion_rule_end_to_end(logged, client, random_run, planted_data):
    cfg = PromotionConfig(
        registered_model="promo-rule", metric="recall@20", p_value=0.05, max_coverage_drop=0.1
    )
    pop, wals = logged.runs["popularity"], logged.runs["wals"]

    first = promote(client, cfg, random_run)
    assert first.promoted and first.reason == "promoted: no champion yet"
    assert alias_version(client, "promo-rule", CHAMPION).run_id == random_run

    # popularity beats random on recall but covers far fewer items: the coverage guard keeps random
    coverage_blocked = promote(client, cfg, pop)
    assert not coverage_blocked.promoted and "coverage@20 fell" in coverage_blocked.reason
    assert coverage_blocked.delta > 0 and coverage_blocked.p_value < 0.05
    assert alias_version(client, "promo-rule", CHAMPION).run_id == random_run
    assert alias_version(client, "promo-rule", CHALLENGER).run_id == pop

    better = promote(client, cfg, wals)
    wals_recall = logged.results["wals"].summary["recall@20"]
    assert better.promoted and better.reason.startswith("promoted: challenger is better")
    assert better.delta > 0.3 and better.p_value < 0.05
    assert better.champion_version == first.challenger_version
    champion = alias_version(client, "promo-rule", CHAMPION)
    assert champion.run_id == wals and str(champion.version) == better.challenger_version
    assert client.get_run(wals).data.metrics["recall_at_20"] == pytest.approx(wals_recall)

    again = promote(client, cfg, wals)
    assert not again.promoted and again.reason.startswith("already champion")

    worse = promote(client, cfg, pop)
    assert not worse.promoted and worse.reason.startswith("kept champion: challenger is not better")
    assert worse.delta < 0
    assert alias_version(client, "promo-rule", CHAMPION).run_id == wals

    # the reason is recorded on the challenger's run and on its model version
    tags = client.get_run(pop).data.tags
    assert tags[TAG_DECISION] == "kept" and tags[TAG_REASON] == worse.reason
    version = client.get_model_version("promo-rule", worse.challenger_version)
    assert version.tags[TAG_REASON] == worse.reason


def test_models_evaluated_on_different_splits_are_not_compared(logged, client, planted_data):
    other_split = split_data(planted_data, SplitConfig(protocol="random", test_fraction=0.25, seed=1))
    other = log_one(logged, PopularityConfig(name="popularity"), other_split, planted_data)
    cfg = PromotionConfig(registered_model="promo-splits")
    assert promote(client, cfg, logged.runs["popularity"]).promoted
    refused = promote(client, cfg, other)
    assert not refused.promoted and refused.p_value is None
    assert refused.reason.startswith(
        "not compared: challenger and champion were evaluated on different splits"
    )
    assert alias_version(client, "promo-splits", CHAMPION).run_id == logged.runs["popularity"]


def test_run_promotion_picks_the_best_candidate(logged, client):
    from pipelines.promote import run_promotion

    cfg = logged.config.model_copy(deep=True)
    cfg.promotion.registered_model = "promo-pipeline"
    decision = run_promotion(cfg, {"popularity": logged.runs["popularity"], "wals": logged.runs["wals"]})
    assert decision.promoted and decision.challenger_run_id == logged.runs["wals"]
    assert alias_version(client, "promo-pipeline", CHAMPION).run_id == logged.runs["wals"]
