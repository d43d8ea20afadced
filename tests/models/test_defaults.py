"""Data-aware defaults (recsys.models.defaults): the documented rules by hand, and that a model left
at "auto" fits with exactly those values and names them in its config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.models.defaults import heavy_tailed, two_tower_batch_size, wals_defaults
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
