"""Data-aware defaults (recsys.models.defaults): the documented rules by hand, and that a model left
at "auto" fits with exactly those values and names them in its config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.models.defaults import WALS_MIN_OBSERVED_SHARE, heavy_tailed, two_tower_batch_size, wals_defaults
from recsys.models.two_tower import TwoTower, TwoTowerConfig
from recsys.models.wals import WALS, WALSConfig

# 3 users x 4 items; user 2 and items 2, 3 are empty. Weights 1, 2, 3: not heavy-tailed.
SMALL = sp.csr_matrix(np.array([[1.0, 2.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))


def test_wals_rule_by_hand_on_a_small_matrix():
    """linear f; alpha = 3 / mean w = 3 / 2; mass 6 over 2 active users and 2 active items:
    L_u = 4 items + 1.5 x 6 / 2 = 8.5, L_i = 2 users + 1.5 x 6 / 2 = 6.5; reg = 0.025 sqrt(8.5 x 6.5)."""
    found = wals_defaults(SMALL)
    assert found["confidence"] == "linear" and found["eps"] == 1.0
    assert found["alpha"] == pytest.approx(1.5, rel=1e-12)
    assert found["regularization"] == pytest.approx(0.025 * math.sqrt(8.5 * 6.5), rel=1e-12)


def test_binarized_weights_give_alpha_three_and_given_settings_are_kept():
    binary = wals_defaults(SMALL, binarize=True)  # f = 1 everywhere, mass 3
    assert binary["alpha"] == pytest.approx(3.0) and binary["confidence"] == "linear"
    assert binary["regularization"] == pytest.approx(0.025 * math.sqrt((4 + 4.5) * (2 + 4.5)), rel=1e-12)
    kept = wals_defaults(SMALL, alpha=10.0, confidence="log", eps=2.0)
    assert (kept["alpha"], kept["confidence"], kept["eps"]) == (10.0, "log", 2.0)
    mass = float(np.log1p(np.array([1.0, 2.0, 3.0]) / 2.0).sum())
    expected = 0.025 * math.sqrt((4 + 10 * mass / 2) * (2 + 10 * mass / 2))
    assert kept["regularization"] == pytest.approx(expected, rel=1e-9)


def sparse_clusters(n_users: int = 600, n_items: int = 3000, clusters: int = 60, per_user: int = 6, seed: int = 0):
    """A large sparse catalogue with planted taste clusters: each user holds `per_user` random
    items of its own cluster, one of them held out. Returns (train, held-out item per user)."""
    rng = np.random.default_rng(seed)
    size = n_items // clusters
    block = rng.integers(0, clusters, n_users)
    items = block[:, None] * size + np.argsort(rng.random((n_users, size)), axis=1)[:, :per_user]
    held = items[:, -1]
    train = sp.csr_matrix(
        (np.ones(n_users * (per_user - 1), dtype=np.float32),
         (np.repeat(np.arange(n_users), per_user - 1), items[:, :-1].ravel())),
        shape=(n_users, n_items),
    )  # fmt: skip
    return train, held


def test_a_sparse_catalogue_gets_the_observed_share_floor_on_alpha():
    """10 users x 1,000 items, 2 items each (mass 2 a row): 3 / mean w = 3 is below the floor
    0.1 x 1000 / 2 = 50, so alpha = 50 and the regularisation follows from it."""
    rows = np.repeat(np.arange(10), 2)
    matrix = sp.csr_matrix((np.ones(20), (rows, np.arange(20))), shape=(10, 1000))
    found = wals_defaults(matrix)
    assert found["alpha"] == pytest.approx(WALS_MIN_OBSERVED_SHARE * 1000 / 2, rel=1e-12) == pytest.approx(50.0)
    assert found["regularization"] == pytest.approx(0.025 * math.sqrt((1000 + 50 * 2) * (10 + 50 * 1)), rel=1e-12)


def test_an_empty_matrix_gets_a_finite_alpha():
    assert wals_defaults(sp.csr_matrix((3, 50), dtype=np.float32))["alpha"] == pytest.approx(3.0)


def test_on_a_sparse_catalogue_the_default_wals_finds_the_clusters_popularity_cannot():
    """Without the floor (alpha = 3) the unobserved cells drown the 5 observed ones of every row
    and WALS ranks like nothing (hit rate 0.003 here); with it, the planted clusters come out
    (0.32; drawing 20 of a cluster's 45 unseen items at random would hit 0.44)."""
    train, held = sparse_clusters()
    model = WALS(WALSConfig(name="wals", factors=16, iterations=8, threads=1, seed=0))
    model.fit(train)
    assert model.config.alpha == pytest.approx(WALS_MIN_OBSERVED_SHARE * 3000 / 5)
    top, _ = model.recommend(np.arange(train.shape[0]), k=20, exclude=train)
    hit_rate = float(np.mean((top == held[:, None]).any(axis=1)))
    popular = np.argsort(-np.asarray(train.sum(axis=0)).ravel(), kind="stable")[:20]
    popularity_hits = float(np.mean(np.isin(held, popular)))
    assert hit_rate > 0.2 and hit_rate > 5 * popularity_hits, (hit_rate, popularity_hits)


def test_heavy_tailed_counts_get_log_confidence_with_the_median_as_eps():
    weights = np.array([2.0] * 50 + [1000.0] * 2)  # 99th percentile 1000 > 10 x median 2
    assert heavy_tailed(weights) and not heavy_tailed(np.array([1.0, 2.0, 3.0, 5.0]))
    counts = sp.csr_matrix((weights, (np.arange(52) % 13, np.arange(52) % 7)), shape=(13, 7))
    found = wals_defaults(counts)
    assert found["confidence"] == "log" and found["eps"] == pytest.approx(2.0)
    assert found["alpha"] == pytest.approx(3.0 / float(np.log1p(counts.data / 2.0).mean()), rel=1e-9)


def test_two_tower_batch_gives_at_least_32_steps_within_128_to_1024():
    assert two_tower_batch_size(40_000) == 1024  # 1250 -> capped
    assert two_tower_batch_size(20_000) == 512  # 625 -> largest power of two below
    assert two_tower_batch_size(1_000) == 128  # 31 -> floor


def test_a_wals_left_at_auto_fits_with_the_rule_and_names_the_values(planted):
    model = WALS(WALSConfig(name="wals", factors=4, iterations=2, threads=1, seed=0))
    model.fit(planted.train)
    rule = wals_defaults(planted.train)
    assert model.config.confidence == rule["confidence"]
    for name in ("eps", "alpha", "regularization"):
        assert getattr(model.config, name) == pytest.approx(rule[name], rel=1e-9), name


def test_a_two_tower_left_at_auto_picks_the_batch_from_the_interaction_count(planted):
    config = TwoTowerConfig(name="tt", dim=8, epochs=1, seed=0, threads=1)
    assert config.batch_size is None
    resolved = TwoTower(config).data_aware_config(planted.train)
    assert resolved.batch_size == two_tower_batch_size(planted.train.nnz)
