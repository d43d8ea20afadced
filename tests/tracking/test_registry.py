"""Champion/challenger promotion on the real registry: every branch of the rule, with models whose
ordering is known from the planted data (WALS >> popularity on recall; random vectors cover the
catalogue but rank badly)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
import scipy.sparse as sp
from mlflow import MlflowClient

from recsys.config import PromotionConfig
from recsys.lineage import TAG_LINEAGE, lineage
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
    # the champion after the decision is the challenger; there was none to compare with
    assert first.champion_version == first.challenger_version and first.champion_run_id == random_run
    assert first.compared_version is None and first.compared_run_id is None
    assert alias_version(client, "promo-rule", CHAMPION).run_id == random_run

    # popularity beats random on recall but covers far fewer items: the coverage guard keeps random
    coverage_blocked = promote(client, cfg, pop)
    assert not coverage_blocked.promoted and "coverage@20 fell" in coverage_blocked.reason
    assert coverage_blocked.champion_version == coverage_blocked.compared_version == first.challenger_version
    # the MLflow UI's versions table shows each version's decision whole as its description
    blocked_version = client.get_model_version("promo-rule", coverage_blocked.challenger_version)
    assert blocked_version.description.startswith("kept champion") and "coverage@20 fell" in blocked_version.description
    assert "`champion` alias is what `recsys serve`" in client.get_registered_model("promo-rule").description
    assert coverage_blocked.delta > 0 and coverage_blocked.p_value < 0.05
    assert alias_version(client, "promo-rule", CHAMPION).run_id == random_run
    assert alias_version(client, "promo-rule", CHALLENGER).run_id == pop

    better = promote(client, cfg, wals)
    wals_recall = logged.results["wals"].summary["recall@20"]
    assert better.promoted and better.reason.startswith("promoted: challenger is better")
    assert better.delta > 0.3 and better.p_value < 0.05
    assert better.compared_version == first.challenger_version  # compared with the standing champion
    assert better.champion_version == better.challenger_version and better.champion_run_id == wals  # champion now
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
    assert tags[TAG_DECISION] == "kept" and tags[TAG_REASON] == worse.reason and worse.decision == "kept"
    version = client.get_model_version("promo-rule", worse.challenger_version)
    assert version.tags[TAG_REASON] == worse.reason


def test_promoting_a_run_again_decides_on_its_existing_version(logged, client):
    """`recsys promote` after `recsys run` (or twice) re-applies the rule to the version the run
    already has on the line; it registered a new version of the same run every time."""
    cfg = PromotionConfig(registered_model="promo-again")
    pop = logged.runs["popularity"]
    assert promote(client, cfg, logged.runs["wals"]).promoted
    first = promote(client, cfg, pop)
    again = promote(client, cfg, pop)
    assert not again.promoted and again.challenger_version == first.challenger_version
    versions = client.search_model_versions("name='promo-again'")
    assert sorted(v.run_id for v in versions) == sorted([logged.runs["wals"], pop])
    assert str(alias_version(client, "promo-again", CHALLENGER).version) == first.challenger_version


def test_a_challenger_of_another_lineage_is_not_comparable_and_never_registered(logged, client, planted_data, planted_split):
    """Same config name and registered model, another data source: another lineage. It is never
    compared with this line's champion nor registered on the line."""
    other = log_one(logged, PopularityConfig(name="popularity"), planted_split, planted_data, source="lastfm-like.tsv")
    cfg = PromotionConfig(registered_model="promo-lineage")
    assert promote(client, cfg, logged.runs["wals"]).promoted
    versions_before = len(client.search_model_versions("name='promo-lineage'"))
    refused = promote(client, cfg, other)
    assert refused.decision == "not comparable" and not refused.promoted
    # the rule's level is a setting, known without a test: the JSON said alpha: null (p_value stays null)
    assert refused.alpha == pytest.approx(cfg.p_value, abs=1e-12) and refused.p_value is None
    assert "the challenger belongs to lineage 'tracking-test|" in refused.reason
    assert "lastfm-like.tsv'" in refused.reason
    assert len(client.search_model_versions("name='promo-lineage'")) == versions_before
    assert client.get_registered_model("promo-lineage").tags[TAG_LINEAGE] == lineage(logged.config).name
    assert alias_version(client, "promo-lineage", CHAMPION).run_id == logged.runs["wals"]


def test_another_lineage_is_told_the_exact_line_of_its_own_and_gets_a_champion_there(
    logged, client, planted_data, planted_split
):
    """The same config on a second data set got no champion, and was told only to "set
    promotion.registered_model" (to what?) and, under it, that `--force` would promote it: that
    hands the first data set's serving alias to a model of other data. The decision now names the
    exact line (`own_line`: the same name for every run of that lineage, another for another
    source) and the command that starts it from this run; on it, the run becomes champion."""
    from recsys.cli.pipeline_cmds import champion_line
    from recsys.lineage import own_line

    cfg = PromotionConfig(registered_model="promo-own-line")
    assert promote(client, cfg, logged.runs["wals"]).promoted
    first = log_one(logged, PopularityConfig(name="popularity"), planted_split, planted_data, source="data/ml-1m.inter")
    refused = promote(client, cfg, first)
    line = refused.own_line
    other_lineage = client.get_run(first).data.tags[TAG_LINEAGE]
    assert refused.decision == "not comparable" and line == own_line("promo-own-line", other_lineage)
    assert line.startswith("promo-own-line-ml-1m-") and line != own_line("promo-own-line", lineage(logged.config).name)
    assert f"`--set promotion.registered_model={line}`" in refused.reason
    hint = champion_line({"champion": None, "promotion": refused.to_dict()}, " --config my.toml").splitlines()[1]
    assert f"`recsys promote --config my.toml --run-id {first} --set promotion.registered_model={line}`" in hint
    assert "--force" not in hint

    on_its_line = promote(client, PromotionConfig(registered_model=line), first)
    assert on_its_line.promoted and on_its_line.reason == "promoted: no champion yet"
    assert alias_version(client, line, CHAMPION).run_id == first
    assert client.get_registered_model(line).tags[TAG_LINEAGE] == other_lineage
    # a later run of that data set is told the same line; the first data set's line never moved
    later = log_one(logged, PopularityConfig(name="popularity"), planted_split, planted_data, source="data/ml-1m.inter")
    assert promote(client, cfg, later).own_line == line
    assert alias_version(client, "promo-own-line", CHAMPION).run_id == logged.runs["wals"]


def test_run_promotion_picks_the_best_candidate(logged, client):
    from pipelines.promote import run_promotion

    cfg = logged.config.model_copy(deep=True)
    cfg.promotion.registered_model = "promo-pipeline"
    decision = run_promotion(cfg, {"popularity": logged.runs["popularity"], "wals": logged.runs["wals"]})
    assert decision.promoted and decision.challenger_run_id == logged.runs["wals"]
    assert alias_version(client, "promo-pipeline", CHAMPION).run_id == logged.runs["wals"]


def test_the_challenger_is_chosen_on_validation_users_not_on_test(logged, client):
    """Ranked by test, the candidate that got lucky on the test users would be tested on the same
    users and its p-value would not hold; the validation metric picks it instead."""
    from pipelines.promote import best_candidate

    experiment = client.get_experiment_by_name(logged.config.tracking.experiment).experiment_id
    runs = []
    for test, validation in ((0.30, 0.20), (0.25, 0.22)):  # best on test != best on validation
        run = client.create_run(experiment, run_name="candidate")
        client.log_metric(run.info.run_id, "recall_at_20", test)
        client.log_metric(run.info.run_id, "validation_recall_at_20", validation)
        client.set_terminated(run.info.run_id, "FINISHED")
        runs.append(run.info.run_id)
    chosen, selection = best_candidate(client, runs, "recall@20")
    assert chosen == runs[1] and selection.basis == "validation" and selection.n_candidates == 2
    assert selection.alpha(0.05) == 0.05

    bare = client.create_run(experiment, run_name="no-validation")  # a run without a validation part
    client.log_metric(bare.info.run_id, "recall_at_20", 0.1)
    client.set_terminated(bare.info.run_id, "FINISHED")
    chosen, selection = best_candidate(client, [*runs, bare.info.run_id], "recall@20")
    assert chosen == runs[0] and selection.basis == "test" and selection.n_candidates == 3
    assert selection.alpha(0.05) == pytest.approx(0.05 / 3)  # Bonferroni over the candidates
    assert "alpha divided by 3" in selection.note()


def test_promoting_the_champion_again_reports_the_challenger_alias_where_it_stays(logged, client):
    """`recsys promote --run-id CHAMPION_RUN` moves nothing: its decision named the champion's own
    version as the challenger, and `recsys promote` printed `challenger v1` while the store's
    challenger alias held the kept challenger's version."""
    cfg = PromotionConfig(registered_model="promo-already")
    wals, pop = logged.runs["wals"], logged.runs["popularity"]
    assert promote(client, cfg, wals).promoted
    kept = promote(client, cfg, pop)
    assert not kept.promoted
    again = promote(client, cfg, wals)
    assert not again.promoted and again.reason.startswith("already champion")
    challenger = alias_version(client, "promo-already", CHALLENGER)
    assert str(challenger.version) == kept.challenger_version == again.challenger_version
    assert again.champion_version == str(alias_version(client, "promo-already", CHAMPION).version)
