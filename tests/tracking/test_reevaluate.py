"""Promotion across scheduled runs whose data grew: the champion, trained and evaluated on D1, is
re-evaluated on the challenger's split of D2 = D1 + appended users, items and interactions (an
append-only vocab, as incremental ingest produces) before the rule is applied.

The planted blocks fix the ordering: WALS finds the blocks and beats popularity by a wide margin on
any split of this data, so "better" and "worse" challengers are known in advance."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from mlflow import MlflowClient

from recsys.config import PromotionConfig, SplitConfig
from recsys.data.dataset import InteractionData
from recsys.data.splits import split_data
from recsys.errors import TrackingError
from recsys.evaluation.cold import divide_test
from recsys.models.popularity import PopularityConfig
from recsys.models.wals import WALSConfig
from recsys.tracking.reevaluate import (
    TAG_CHAMPION_REEVALUATED,
    as_deployed_vectors,
    load_per_user,
    reevaluate_champion,
)
from recsys.tracking.registry import CHAMPION, alias_version, promote

from .conftest import N_BLOCKS, N_ITEMS, N_USERS, PER_USER, log_one

NEW_USERS, NEW_ITEMS = 40, 16
SPLIT = SplitConfig(protocol="random", test_fraction=0.25, seed=0)


def grown(base: InteractionData, seed: int = 1) -> InteractionData:
    """`base` plus NEW_USERS users and NEW_ITEMS items appended to the vocab, block structure kept:
    every old user gets 2 new in-block items, every new user PER_USER in-block items of the grown
    catalogue. Old rows and old indices are untouched."""
    rng = np.random.default_rng(seed)
    n_users, n_items = N_USERS + NEW_USERS, N_ITEMS + NEW_ITEMS
    user_blocks, item_blocks = np.arange(n_users) % N_BLOCKS, np.arange(n_items) % N_BLOCKS
    new_per_block = NEW_ITEMS // N_BLOCKS
    # old users x 2 of the new items of their block
    picks = np.argsort(rng.random((N_USERS, new_per_block)), axis=1)[:, :2]
    old_users = np.repeat(np.arange(N_USERS), 2)
    old_items = N_ITEMS + picks.ravel() * N_BLOCKS + np.repeat(user_blocks[:N_USERS], 2)
    # new users x PER_USER of the (old + new) items of their block
    per_block = n_items // N_BLOCKS
    local = np.argsort(rng.random((NEW_USERS, per_block)), axis=1)[:, :PER_USER]
    new_users = np.repeat(np.arange(N_USERS, n_users), PER_USER)
    new_items = (local * N_BLOCKS + user_blocks[N_USERS:, None]).ravel()
    users = np.concatenate([old_users, new_users]).astype(np.int32)
    items = np.concatenate([old_items, new_items]).astype(np.int32)
    appended = pl.DataFrame(
        {
            "user_idx": users,
            "item_idx": items,
            "timestamp": pl.Series([None] * users.size, dtype=pl.Datetime("us", "UTC")),
            "weight": np.ones(users.size, dtype=np.float32),
        }
    )
    return InteractionData(
        interactions=pl.concat([base.interactions, appended]),
        user_ids=np.concatenate([base.user_ids, [f"u{i}" for i in range(N_USERS, n_users)]]).astype(object),
        item_ids=np.concatenate([base.item_ids, [f"i{i}" for i in range(N_ITEMS, n_items)]]).astype(object),
        user_blocks=user_blocks,
        item_blocks=item_blocks,
        manifest={"fingerprint": "planted-grown", "source": "synthetic", "name": "planted"},
    )


@pytest.fixture(scope="module")
def client(logged) -> MlflowClient:
    return MlflowClient(logged.uri, registry_uri=logged.uri)


@pytest.fixture(scope="module")
def grown_data(planted_data) -> InteractionData:
    return grown(planted_data)


@pytest.fixture(scope="module")
def grown_split(grown_data):
    return split_data(grown_data, SPLIT)


@pytest.fixture(scope="module")
def run2(logged, grown_data, grown_split) -> dict[str, str]:
    """The scheduled run on D2: a WALS and a popularity challenger, logged like the pipeline does."""
    wals = WALSConfig(name="wals", factors=8, iterations=4, threads=1, regularization=0.1, alpha=5.0)
    return {
        "wals": log_one(logged, wals, grown_split, grown_data),
        "popularity": log_one(logged, PopularityConfig(name="popularity"), grown_split, grown_data),
    }


def test_grown_data_extends_the_old_vocab(planted_data, planted_split, grown_data, grown_split):
    """The premise: D2's vocab extends D1's and D1's rows are all still there."""
    assert list(grown_data.item_ids[:N_ITEMS]) == list(planted_data.item_ids)
    assert list(grown_data.user_ids[:N_USERS]) == list(planted_data.user_ids)
    assert grown_split.n_users == N_USERS + NEW_USERS and grown_split.n_items == N_ITEMS + NEW_ITEMS
    everything = grown_split.train + grown_split.test
    old = planted_split.train + planted_split.test
    assert (everything[:N_USERS, :N_ITEMS] != old).nnz == 0
    assert grown_split.meta["fingerprint"] != planted_split.meta["fingerprint"]


def test_reevaluating_on_the_champions_own_split_reproduces_its_logged_metrics(logged, client, planted_split):
    again = reevaluate_champion(client, logged.runs["wals"], planted_split, logged.config.evaluation)
    logged_per_user = load_per_user(client, logged.runs["wals"]).sort("user_id")
    ours = again.per_user.sort("user_id")
    assert ours.get_column("user_id").to_list() == logged_per_user.get_column("user_id").to_list()
    np.testing.assert_allclose(
        ours["recall@20"].to_numpy(), logged_per_user["recall@20"].to_numpy(), atol=1e-6
    )
    for name in ("recall@20", "ndcg@10", "coverage@20"):
        assert again.summary[name] == pytest.approx(logged.results["wals"].summary[name], abs=1e-6)
    assert again.n_new_items == 0 and again.n_folded_in == 0
    assert again.n_users == logged.results["wals"].n_users_evaluated


def test_as_deployed_vectors_pad_new_items_with_zeros_and_fold_in_new_users(logged, grown_split):
    model = logged.models["wals"]
    eval_set = grown_split.test_set()
    user_vecs, item_vecs, n_folded = as_deployed_vectors(model, grown_split, eval_set)
    assert item_vecs.shape == (N_ITEMS + NEW_ITEMS, model.item_factors.shape[1])
    np.testing.assert_array_equal(item_vecs[:N_ITEMS], model.item_factors)
    assert not item_vecs[N_ITEMS:].any()  # unseen items score 0, as the deployed model would
    users = eval_set.users
    new = users[users >= N_USERS]
    old = users[users < N_USERS]
    assert n_folded == new.size > 0
    np.testing.assert_array_equal(user_vecs[old], model.user_factors[old])
    expected = model.fold_in(grown_split.train[new][:, :N_ITEMS])
    np.testing.assert_allclose(user_vecs[new], expected, rtol=1e-5, atol=1e-6)
    assert np.abs(user_vecs[new]).sum() > 0


def test_a_clearly_better_challenger_on_grown_data_is_promoted_after_reevaluation(
    logged, client, run2, grown_split, planted_split
):
    from pipelines.promote import run_promotion

    cfg = logged.config.model_copy(deep=True)
    cfg.promotion = PromotionConfig(registered_model="promo-grown-better", metric="recall@20")
    first = promote(client, cfg.promotion, logged.runs["popularity"])  # run 1 on D1
    assert first.promoted and first.reason == "promoted: no champion yet"

    decision = run_promotion(cfg, {"popularity": run2["popularity"], "wals": run2["wals"]}, split=grown_split)
    n_users = grown_split.test_set().users.size
    assert decision.promoted and decision.decision == "promoted" and decision.challenger_run_id == run2["wals"]
    assert decision.reason.startswith("promoted: challenger is better")
    assert f"; champion re-evaluated on the current split ({n_users} users)" in decision.reason
    assert decision.delta > 0.2 and decision.p_value < 0.05
    assert alias_version(client, "promo-grown-better", CHAMPION).run_id == run2["wals"]

    # the champion's re-evaluated metrics sit beside the challenger's own in MLflow
    run = client.get_run(run2["wals"])
    champion_recall = run.data.metrics["champion_recall_at_20"]
    assert run.data.metrics["recall_at_20"] - champion_recall == pytest.approx(decision.delta, abs=1e-6)
    assert run.data.metrics["champion_n_users_evaluated"] == n_users
    assert run.data.tags[TAG_CHAMPION_REEVALUATED] == logged.runs["popularity"]

    # the split hashes raw ids, so no pair the champion trained on is in today's test set
    leaked = grown_split.test[:N_USERS, :N_ITEMS].multiply(planted_split.train).count_nonzero()
    assert leaked == 0
    assert run.data.metrics["champion_test_seen_fraction"] == 0
    assert "training data" not in decision.reason


def test_a_worse_challenger_on_grown_data_is_kept_out_after_reevaluation(logged, client, run2, grown_split):
    cfg = PromotionConfig(registered_model="promo-grown-worse", metric="recall@20")
    assert promote(client, cfg, logged.runs["wals"]).promoted  # run 1 on D1: WALS is champion
    decision = promote(
        client, cfg, run2["popularity"], split=grown_split, evaluation=logged.config.evaluation
    )
    assert not decision.promoted and decision.decision == "kept" and decision.delta < -0.2
    assert decision.reason.startswith("kept champion: challenger is not better")
    assert "champion re-evaluated on the current split" in decision.reason
    assert alias_version(client, "promo-grown-worse", CHAMPION).run_id == logged.runs["wals"]


def test_a_vocab_that_is_not_append_only_is_refused(logged, client, planted_data):
    """Same interactions, but item ids renamed in reverse: index i no longer means the champion's
    item i, so a re-evaluation would score the wrong items - refused with the reason."""
    renamed = InteractionData(
        interactions=planted_data.interactions,
        user_ids=planted_data.user_ids,
        item_ids=planted_data.item_ids[::-1].copy(),
        user_blocks=planted_data.user_blocks,
        item_blocks=planted_data.item_blocks,
        manifest={"fingerprint": "planted-renamed", "source": "synthetic", "name": "planted"},
    )
    split = split_data(renamed, SPLIT)
    challenger = log_one(logged, PopularityConfig(name="popularity"), split, renamed)
    cfg = PromotionConfig(registered_model="promo-renamed")
    assert promote(client, cfg, logged.runs["popularity"]).promoted
    refused = promote(client, cfg, challenger, split=split, evaluation=logged.config.evaluation)
    assert not refused.promoted and refused.p_value is None and refused.decision == "not comparable"
    assert refused.reason.startswith("not comparable: the champion could not be re-scored on the challenger's split")
    assert (
        f"item vocab is not an append-only extension of the champion's: index 0 is 'i0' for the champion but 'i{N_ITEMS - 1}' now"
        in refused.reason
    )
    assert alias_version(client, "promo-renamed", CHAMPION).run_id == logged.runs["popularity"]


def test_a_split_that_is_not_the_challengers_is_refused(logged, client, grown_split):
    with pytest.raises(TrackingError, match="is not the challenger's"):
        reevaluate_champion(
            client, logged.runs["wals"], grown_split, logged.config.evaluation, challenger_digest="0" * 16
        )


def test_without_the_split_handed_over_the_same_decision_is_reached_from_the_logged_one(
    logged, client, run2, grown_split
):
    """`recsys promote` runs later, in another process: it reads the split back from the run's
    pipeline (parent) run and the evaluation config from its logged config, and must decide exactly
    as the pipeline did with the split in hand."""
    from pipelines.promote import run_promotion

    decisions = []
    for name, split in (("promo-same-a", grown_split), ("promo-same-b", None)):
        cfg = logged.config.model_copy(deep=True)
        cfg.promotion = PromotionConfig(registered_model=name, metric="recall@20")
        assert promote(client, cfg.promotion, logged.runs["popularity"]).promoted
        decisions.append(run_promotion(cfg, {"wals": run2["wals"], "popularity": run2["popularity"]}, split=split))
    with_split, read_back = (d.to_dict() for d in decisions)
    for version in ("champion_version", "challenger_version"):
        with_split.pop(version), read_back.pop(version)
    assert with_split == read_back
    assert with_split["decision"] == "promoted" and with_split["n_users"] > 0


def test_a_champion_that_trained_on_todays_test_pairs_is_not_comparable(logged, client, planted_data):
    """Another split seed puts pairs the champion trained on into today's test set: comparing on
    them would favour the champion, so the verdict is "not comparable" with the count - never kept
    or promoted on leaked data - and nothing moves."""
    reseeded = split_data(planted_data, SplitConfig(protocol="random", test_fraction=0.25, seed=1))
    challenger = log_one(logged, WALSConfig(name="wals", factors=8, iterations=4, threads=1), reseeded, planted_data)
    cfg = PromotionConfig(registered_model="promo-leak")
    assert promote(client, cfg, logged.runs["popularity"]).promoted
    refused = promote(client, cfg, challenger)
    leaked = reseeded.test.multiply(split_data(planted_data, SPLIT).train).count_nonzero()
    assert leaked > 0
    assert refused.decision == "not comparable" and not refused.promoted and refused.p_value is None
    assert refused.reason.startswith(
        f"not comparable: {leaked} of the {reseeded.test.nnz} test interactions"
    ) and "were in the champion's training data" in refused.reason
    assert alias_version(client, "promo-leak", CHAMPION).run_id == logged.runs["popularity"]
    assert client.get_run(challenger).data.tags["recsys.promotion.decision"] == "not comparable"

    forced = promote(client, cfg, challenger, force=True)  # the deliberate way out
    assert forced.promoted and forced.forced and forced.decision == "promoted"
    assert forced.reason.startswith("promoted by --force over the rule's verdict: not comparable:")
    assert alias_version(client, "promo-leak", CHAMPION).run_id == challenger
    assert client.get_run(challenger).data.tags["recsys.promotion.forced"] == "true"


def test_a_champion_whose_artifacts_are_gone_is_not_comparable_and_force_gets_past_it(
    logged, client, planted_data, planted_split
):
    """The champion's run lost its artifacts (a cleaned artifact store): `recsys promote` stopped with
    'run ... has no evaluation/per_user.parquet artifact', and --force stopped the same way, so no
    challenger could ever replace it. It is a `not comparable` verdict now, and --force works."""
    import shutil
    from pathlib import Path
    from urllib.parse import urlparse

    from recsys.tracking.store import is_http

    if is_http(logged.uri):
        pytest.skip("the server's artifact store cannot be emptied from here; the SQLite store shows it")
    champion = log_one(logged, PopularityConfig(name="popularity"), planted_split, planted_data)
    cfg = PromotionConfig(registered_model="promo-gone")
    assert promote(client, cfg, champion).promoted
    shutil.rmtree(Path(urlparse(client.get_run(champion).info.artifact_uri).path) / "evaluation")
    refused = promote(client, cfg, logged.runs["wals"])
    assert refused.decision == "not comparable" and not refused.promoted
    assert "the champion's per-user metrics on this split cannot be read" in refused.reason
    assert alias_version(client, "promo-gone", CHAMPION).run_id == champion
    forced = promote(client, cfg, logged.runs["wals"], force=True)
    assert forced.promoted and alias_version(client, "promo-gone", CHAMPION).run_id == logged.runs["wals"]


def test_under_strong_generalisation_the_champion_is_folded_in_from_the_candidates_fold_in_rows(
    logged, client, planted_data
):
    """Like with like: a held-out test user has no training row, and the candidate is scored from
    its fold-in rows (`Recommender.user_vectors` of the test set). The champion re-scored on the
    same split must get exactly those rows, not its training rows (empty: a zero vector): so a
    model re-scored as champion on the very split it was evaluated on reproduces its own per-user
    metrics, every test user folded in."""
    sg = split_data(planted_data, SplitConfig(protocol="strong_generalization", test_fraction=0.25, seed=0))
    users = sg.test_set().users
    assert users.size > 20 and sg.train[users].nnz == 0 and sg.fold_in[users].nnz > 0  # the premise
    wals = WALSConfig(name="wals", factors=8, iterations=4, threads=1, regularization=0.1, alpha=5.0)
    run_id = log_one(logged, wals, sg, planted_data)
    again = reevaluate_champion(client, run_id, sg, logged.config.evaluation)
    assert again.n_folded_in == again.n_users == users.size
    logged_per_user = load_per_user(client, run_id).sort("user_id")
    ours = again.per_user.sort("user_id")
    assert ours.get_column("user_id").to_list() == logged_per_user.get_column("user_id").to_list()
    for metric in ("recall@20", "ndcg@10"):
        np.testing.assert_allclose(ours[metric].to_numpy(), logged_per_user[metric].to_numpy(), rtol=0, atol=1e-6)
    assert again.summary["recall@20"] > 0.9  # folded in from its training rows (none): 0.36


def test_a_user_the_champion_never_learned_is_folded_in_from_the_training_rows_the_candidate_learned_from(
    logged, grown_data
):
    """Random (and rolling) splits: the candidate learned a warm test user's vector from that
    user's training rows only (its validation rows are masked, never learned from: the pipeline
    fits on `split.train`). A user new to the champion is folded in from the same rows - adding the
    validation rows would give the champion history the candidate never saw."""
    split = split_data(grown_data, SplitConfig(protocol="random", test_fraction=0.25, validation_fraction=0.2, seed=0))
    model = logged.models["wals"]
    eval_set = divide_test(split).warm
    user_vecs, _, n_folded = as_deployed_vectors(model, split, eval_set)
    new = eval_set.users[eval_set.users >= N_USERS]
    validation = sp.csr_matrix(split.validation)
    assert n_folded == new.size > 0 and validation[new].nnz > 0  # the premise: they have validation rows
    from_train = model.fold_in(split.train[new][:, :N_ITEMS])
    np.testing.assert_allclose(user_vecs[new], from_train, rtol=1e-5, atol=1e-6)
    with_validation = model.fold_in((split.train + validation).tocsr()[new][:, :N_ITEMS])
    assert not np.allclose(user_vecs[new], with_validation, rtol=1e-3, atol=1e-4)  # the test tells them apart
