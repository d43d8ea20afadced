"""Samplers draw what they claim (frequencies vs exact q), report exact log q, and masks find every hit."""

from __future__ import annotations

import math
import re
import warnings
from typing import get_args

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.config import ConfigError
from recsys.models.two_tower import SamplerName, TwoTowerConfig
from recsys.sampling import (
    AllItemsSampler,
    HardNegativeSampler,
    InBatchSampler,
    MixedSampler,
    Negatives,
    PopularitySampler,
    PositiveLookup,
    UniformSampler,
    accidental_hit_mask,
    build_sampler,
    candidate_columns,
    item_counts_from_csr,
    negative_mask,
)

COUNTS = np.array([1, 2, 3, 4, 0, 10])
# 3 users x 6 items: user 0 likes {0, 3}, user 1 likes {1, 2, 5}, user 2 likes {} (empty row).
TRAIN = sp.csr_matrix(
    (np.ones(5, dtype=np.float32), (np.array([0, 0, 1, 1, 1]), np.array([0, 3, 1, 2, 5]))), shape=(3, 6)
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fixed_scores(users: torch.Tensor) -> torch.Tensor:
    """A model whose score for item j is j for every user (top items are the highest indices)."""
    return torch.arange(6, dtype=torch.float32).expand(users.shape[0], 6)


def all_samplers(shared: bool = True) -> list:
    return [
        UniformSampler(6, 7, shared),
        PopularitySampler(COUNTS, 7, 0.75, shared),
        InBatchSampler(COUNTS),
        MixedSampler(COUNTS, 7, shared),
        HardNegativeSampler(6, 7, 2, TRAIN, fixed_scores),
    ]


USERS, POS = torch.tensor([0, 1, 2]), torch.tensor([3, 5, 0])


@pytest.mark.parametrize("index", range(5))
def test_same_seed_same_negatives(index):
    a = all_samplers()[index].sample(USERS, POS, gen(7))
    b = all_samplers()[index].sample(USERS, POS, gen(7))
    assert torch.equal(a.items, b.items) and torch.equal(a.log_q, b.log_q)
    assert a.items.dtype == torch.long and a.log_q.shape == a.items.shape and a.pos_log_q.shape == (3,)


def test_different_seeds_give_different_draws():
    sampler = UniformSampler(1000, 50)
    assert not torch.equal(sampler.sample(USERS, POS, gen(1)).items, sampler.sample(USERS, POS, gen(2)).items)


def test_uniform_log_q_and_shapes():
    shared = UniformSampler(6, 7, shared=True).sample(USERS, POS, gen())
    per_example = UniformSampler(6, 7, shared=False).sample(USERS, POS, gen())
    assert shared.items.shape == (7,) and shared.shared
    assert per_example.items.shape == (3, 7) and not per_example.shared
    for negs in (shared, per_example):
        assert negs.items.min() >= 0 and negs.items.max() < 6
        assert torch.allclose(negs.log_q, torch.full_like(negs.log_q, -math.log(6)))
        assert torch.allclose(negs.pos_log_q, torch.full((3,), -math.log(6)))


def test_popularity_log_q_is_exact_and_frequencies_match():
    alpha = 0.75
    q = COUNTS.astype(float) ** alpha / (COUNTS.astype(float) ** alpha).sum()
    with np.errstate(divide="ignore"):
        log_q = np.log(q)  # -inf for the zero-count item
    sampler = PopularitySampler(COUNTS, 40_000, alpha, shared=False)
    negs = sampler.sample(USERS, POS, gen(3))  # 120,000 draws
    draws = negs.items.flatten().numpy()
    np.testing.assert_allclose(negs.log_q.numpy(), log_q[negs.items.numpy()], rtol=1e-6)
    np.testing.assert_allclose(negs.pos_log_q.numpy(), log_q[POS.numpy()], rtol=1e-6)
    freq = np.bincount(draws, minlength=6) / draws.size
    sigma = np.sqrt(q * (1 - q) / draws.size)
    assert np.all(np.abs(freq - q) <= 5 * sigma + 1e-12), (freq, q)
    assert freq[4] == 0  # a zero-count item is never drawn


def test_popularity_alpha_zero_is_uniform_and_bad_counts_fail():
    negs = PopularitySampler(COUNTS, 5, alpha=0.0).sample(USERS, POS, gen())
    assert torch.allclose(negs.log_q, torch.full((5,), -math.log(6)))
    with pytest.raises(ConfigError):
        PopularitySampler(np.array([0, 0]), 5)
    with pytest.raises(ConfigError):
        PopularitySampler(np.array([1, -1]), 5)


def test_in_batch_uses_the_positives_with_stream_frequency():
    negs = InBatchSampler(COUNTS).sample(USERS, POS, gen())
    assert torch.equal(negs.items, POS) and negs.in_batch == 3 and negs.shared
    expected = np.log(COUNTS[POS.numpy()] / COUNTS.sum())
    np.testing.assert_allclose(negs.log_q.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(negs.pos_log_q.numpy(), expected, rtol=1e-6)


def test_mixed_shapes_and_mixture_log_q():
    batch, num, n = 3, 4, 6
    p = COUNTS / COUNTS.sum()
    q_mix = (batch * p + num / n) / (batch + num)
    shared = MixedSampler(COUNTS, num, shared=True).sample(USERS, POS, gen())
    per_example = MixedSampler(COUNTS, num, shared=False).sample(USERS, POS, gen())
    assert shared.items.shape == (batch + num,) and per_example.items.shape == (batch, batch + num)
    assert shared.in_batch == per_example.in_batch == batch
    assert torch.equal(shared.items[:batch], POS)
    assert torch.equal(per_example.items[:, :batch], POS.expand(batch, batch))
    for negs in (shared, per_example):
        np.testing.assert_allclose(negs.log_q.numpy(), np.log(q_mix)[negs.items.numpy()], rtol=1e-6)
    np.testing.assert_allclose(shared.pos_log_q.numpy(), np.log(q_mix)[POS.numpy()], rtol=1e-6)


def test_mixed_q_is_the_frequency_of_candidates_when_batches_come_from_the_stream():
    """The per-draw convention: item j's share of all candidates is q_mix(j) when positives ~ p."""
    batch, num, n, rounds = 8, 8, 6, 4000
    p = COUNTS / COUNTS.sum()
    sampler = MixedSampler(COUNTS, num, shared=True)
    g = gen(11)
    positives = torch.multinomial(torch.tensor(p), batch * rounds, replacement=True, generator=g).view(
        rounds, batch
    )
    counts = np.zeros(n)
    for r in range(rounds):  # test-only loop over batches
        counts += np.bincount(sampler.sample(positives[r], positives[r], g).items.numpy(), minlength=n)
    freq = counts / counts.sum()
    q_reported = sampler.log_prob(torch.arange(n), batch).exp().numpy()
    np.testing.assert_allclose(freq, q_reported, atol=0.01)


def test_accidental_hit_mask_hand_built():
    users, pos = torch.tensor([0, 1, 2]), torch.tensor([3, 5, 4])
    shared = torch.tensor([0, 1, 4, 5])
    expected = torch.tensor(
        [
            [True, False, False, False],  # user 0 likes 0 (and 3)
            [False, True, False, True],  # user 1 likes 1, 2, 5
            [False, False, True, False],  # user 2 likes nothing, but 4 is its batch positive
        ]
    )
    assert torch.equal(accidental_hit_mask(users, pos, shared, TRAIN), expected)
    per_example = torch.tensor([[3, 3, 2, 1], [2, 0, 0, 5], [4, 4, 0, 1]])
    expected_pe = torch.tensor(
        [[True, True, False, False], [True, False, False, True], [True, True, False, False]]
    )
    assert torch.equal(accidental_hit_mask(users, pos, per_example, PositiveLookup(TRAIN)), expected_pe)


def test_positive_lookup_matches_dense_on_random_matrix():
    rng = np.random.default_rng(0)
    train = sp.random(50, 40, density=0.1, format="csr", random_state=1, dtype=np.float32)
    train.data[:5] = 0.0  # explicit zeros are not interactions
    users = torch.as_tensor(rng.integers(0, 50, 30))
    items = torch.as_tensor(rng.integers(0, 40, (30, 25)))
    dense = train.toarray() != 0
    expected = dense[users.numpy()[:, None], items.numpy()]
    assert torch.equal(PositiveLookup(train).contains(users, items), torch.as_tensor(expected))
    assert item_counts_from_csr(train).tolist() == dense.sum(axis=0).tolist()


@pytest.mark.parametrize("seed", range(3))
def test_shared_row_walk_equals_key_search_and_dense_truth(seed):
    """The CSR row walk (shared candidates) against the sorted-key search and a dense lookup, on data with
    everything that can trip it: repeated batch users, repeated candidates, users with empty rows,
    duplicate and explicit-zero entries in the CSR, and candidates nobody likes."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 60, 45
    rows, cols = rng.integers(0, n_users - 5, 400), rng.integers(0, n_items - 3, 400)  # last rows/cols empty
    values = rng.choice([0.0, 1.0, 2.0], size=400, p=[0.1, 0.6, 0.3]).astype(np.float32)
    train = sp.csr_matrix((values, (rows, cols)), shape=(n_users, n_items))
    train.data[rng.random(train.nnz) < 0.05] = 0.0  # explicit zeros after summing duplicates
    lookup, dense = PositiveLookup(train), train.toarray() != 0
    users = torch.as_tensor(rng.integers(0, n_users, 200))
    pos = torch.as_tensor(rng.integers(0, n_items, 200))
    shared = torch.as_tensor(rng.integers(0, n_items, 70))  # 70 draws from 45 items: duplicates
    expected = torch.as_tensor(dense[users.numpy()[:, None], shared.numpy()[None, :]])
    assert torch.equal(lookup.contains_shared(users, shared), expected) and expected.any()
    assert torch.equal(lookup.contains(users, shared), lookup.contains_by_search(users, shared))
    with_positive = expected | (shared.unsqueeze(0) == pos.unsqueeze(1))
    assert torch.equal(accidental_hit_mask(users, pos, shared, lookup), with_positive)
    per_example = torch.as_tensor(rng.integers(0, n_items, (200, 30)))
    expected_pe = torch.as_tensor(dense[users.numpy()[:, None], per_example.numpy()])
    assert torch.equal(lookup.contains(users, per_example), expected_pe)
    # the shared path on an expanded grid is the per-example path on the same cells
    assert torch.equal(lookup.contains(users, shared.expand(200, 70)), expected)


def test_shared_row_walk_edge_cases():
    lookup = PositiveLookup(TRAIN)
    empty_candidates = lookup.contains_shared(torch.tensor([0, 1]), torch.empty(0, dtype=torch.long))
    assert empty_candidates.shape == (2, 0)
    assert lookup.contains_shared(torch.empty(0, dtype=torch.long), torch.tensor([0, 1])).shape == (0, 2)
    only_empty_user = lookup.contains_shared(torch.tensor([2, 2]), torch.tensor([0, 1, 2, 3, 4, 5]))
    assert not only_empty_user.any() and only_empty_user.shape == (2, 6)
    nobody = PositiveLookup(sp.csr_matrix((3, 6), dtype=np.float32))
    assert not nobody.contains_shared(USERS, torch.tensor([0, 5, 5])).any()


def test_negative_mask_masks_in_batch_diagonal_always_and_duplicates_only_as_hits():
    users, pos = torch.tensor([0, 1, 2]), torch.tensor([3, 5, 3])  # users 0 and 2 share positive 3
    negs = InBatchSampler(COUNTS).sample(users, pos, gen())
    diagonal_only = negative_mask(users, pos, negs)
    assert torch.equal(diagonal_only, torch.eye(3, dtype=torch.bool))
    with_hits = negative_mask(users, pos, negs, PositiveLookup(TRAIN))
    expected = torch.eye(3, dtype=torch.bool)
    expected[0, 2] = expected[2, 0] = True  # same item 3 appears as the other example's candidate
    expected[1, 0] = False  # item 3 is not a positive of user 1
    assert torch.equal(with_hits, expected)
    assert negative_mask(users, pos, UniformSampler(6, 4).sample(users, pos, gen())) is None


def test_all_items_are_every_rows_candidates_once_with_uniform_q_and_the_positive_column_masked():
    """The full catalogue, shared, q = 1/n on both sides (a constant logQ shift); the candidates hold
    each positive, whose column `negative_mask` masks even without accidental-hit removal."""
    negs = AllItemsSampler(6).sample(USERS, POS, gen())
    assert negs.shared and negs.has_positives and negs.in_batch == 0
    assert torch.equal(negs.items, torch.arange(6))
    assert torch.allclose(negs.log_q, torch.full((6,), -math.log(6)))
    assert torch.allclose(negs.pos_log_q, torch.full((3,), -math.log(6)))
    own = torch.zeros(3, 6, dtype=torch.bool)
    own[torch.arange(3), POS] = True
    assert torch.equal(negative_mask(USERS, POS, negs), own)
    with_hits = negative_mask(USERS, POS, negs, PositiveLookup(TRAIN))
    assert torch.equal(with_hits, own | torch.as_tensor(TRAIN.toarray() != 0)[USERS])
    moved = negs.to("cpu")
    assert moved.has_positives
    with pytest.raises(ConfigError, match="^all-items sampler needs at least one item, got n_items=0$"):
        AllItemsSampler(0)


def test_hard_negatives_come_from_top_k_and_never_from_positives():
    # fixed_scores ranks items 5 > 4 > 3 > 2 > 1 > 0 for everyone.
    sampler = HardNegativeSampler(6, 2000, 2, TRAIN, fixed_scores)
    users, pos = torch.tensor([0, 1, 2]), torch.tensor([3, 5, 1])
    negs = sampler.sample(users, pos, gen(5))
    assert negs.items.shape == (3, 2000) and not negs.shared
    expected_sets = [{4, 5}, {3, 4}, {4, 5}]  # top-2 after removing {0,3}, {1,2,5}, {1 (batch pos)}
    for row, expected in zip(negs.items.tolist(), expected_sets, strict=True):
        assert set(row) == expected  # both top-k items drawn, nothing else
    assert not accidental_hit_mask(users, pos, negs.items, TRAIN).any()
    assert torch.allclose(negs.log_q, torch.full((3, 2000), -math.log(2)))


def test_hard_negatives_shrink_k_when_a_user_has_few_non_positives():
    train = sp.csr_matrix(np.array([[1, 1, 1, 1, 0, 0]], dtype=np.float32))
    negs = HardNegativeSampler(6, 500, 4, train, fixed_scores).sample(
        torch.tensor([0]), torch.tensor([4]), gen()
    )
    assert set(negs.items.flatten().tolist()) == {5}  # only item 5 is neither positive nor the batch positive
    assert torch.allclose(negs.log_q, torch.zeros_like(negs.log_q))  # k_u = 1 -> log q = 0
    with pytest.raises(ConfigError, match="score_fn"):
        HardNegativeSampler(6, 5, 2, train).sample(torch.tensor([0]), torch.tensor([4]), gen())


@pytest.mark.parametrize("name", get_args(SamplerName))
def test_build_sampler_covers_every_config_name(name):
    cfg = TwoTowerConfig(
        name="tt", sampler=name, num_negatives=4, hard_negative_k=3, mixed_uniform_fraction=0.5
    )
    sampler = build_sampler(cfg, COUNTS, TRAIN, score_fn=fixed_scores)
    negs = sampler.sample(USERS, POS, gen())
    assert isinstance(negs, Negatives)
    expected_num = {"uniform": 4, "popularity": 4, "in_batch": 3, "mixed": 3 + 2, "hard": 4, "all": 6}[name]
    assert negs.num == expected_num


def test_lookup_on_movielens_matches_dense(ml100k_dir):
    table = np.loadtxt(ml100k_dir / "ml-100k.inter", skiprows=1, usecols=(0, 1), dtype=np.int64)
    users, items = (
        np.unique(table[:, 0], return_inverse=True)[1],
        np.unique(table[:, 1], return_inverse=True)[1],
    )
    train = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)))
    assert train.shape == (943, 1682)
    rng = np.random.default_rng(0)
    batch_users = torch.as_tensor(rng.integers(0, 943, 256))
    negs = PopularitySampler(item_counts_from_csr(train), 100, shared=False).sample(
        batch_users, batch_users, gen()
    )
    expected = (train.toarray() != 0)[batch_users.numpy()[:, None], negs.items.numpy()]
    got = PositiveLookup(train).contains(batch_users, negs.items)
    assert torch.equal(got, torch.as_tensor(expected)) and got.any()  # popular items are often hits


def test_negatives_move_between_devices_whole():
    """`Negatives.to` keeps every field (items, both log q, the in-batch count), on the new device."""
    negatives = MixedSampler(COUNTS, 2).sample(USERS, POS, gen())
    moved = negatives.to("cpu")
    assert moved.in_batch == negatives.in_batch == 3 and moved.shared
    for name in ("items", "log_q", "pos_log_q"):
        assert torch.equal(getattr(moved, name), getattr(negatives, name)), name
        assert getattr(moved, name).device.type == "cpu"


def test_candidate_columns_table_and_search_agree():
    """Both ways of finding a liked item's candidate column (the item table for ordinary catalogues,
    the search when the catalogue dwarfs the batch) give the same columns and hits."""
    gen = torch.Generator().manual_seed(0)
    candidates = torch.unique(torch.randint(0, 500, (60,), generator=gen))
    liked = torch.randint(0, 500, (300,), generator=gen)
    table_col, table_hit = candidate_columns(liked, candidates, 500)  # 500 <= 8 x 300: the table
    search_col, search_hit = candidate_columns(liked, candidates, 10**6)  # the search
    assert torch.equal(table_hit, search_hit)
    assert torch.equal(table_col[table_hit], search_col[search_hit])
    assert torch.equal(candidates[table_col[table_hit]], liked[table_hit])
    assert torch.equal(table_hit, torch.isin(liked, candidates))


def test_sampler_defaults_users_rely_on():
    """Shared candidates (one matmul) and word2vec's alpha = 0.75 are the documented defaults."""
    assert UniformSampler(6, 4).sample(USERS, POS, gen()).items.shape == (4,)
    negs = PopularitySampler(COUNTS, 4).sample(USERS, POS, gen())
    assert negs.items.shape == negs.log_q.shape == (4,)
    q = COUNTS.astype(float) ** 0.75 / (COUNTS.astype(float) ** 0.75).sum()
    np.testing.assert_allclose(negs.pos_log_q.numpy(), np.log(q[POS.numpy()]), rtol=1e-6)


def test_samplers_take_the_smallest_valid_catalogue():
    """One item, or one interaction in total, is enough: every draw is that item, with log q = 0."""
    one = torch.tensor([0])
    for sampler in (UniformSampler(1, 3), PopularitySampler(np.array([1]), 3)):
        negs = sampler.sample(one, one, gen())
        assert negs.items.tolist() == [0, 0, 0] and torch.equal(negs.log_q, torch.zeros(3))
    in_batch = InBatchSampler(np.array([0, 1]))
    assert in_batch.log_prob(torch.tensor([1])).item() == 0.0
    assert in_batch.log_prob(torch.tensor([0])).item() == -math.inf
    mixed = MixedSampler(np.array([0, 1]), 1)  # q_mix(1) = (1 * 1 + 1 / 2) / 2
    assert mixed.log_prob(torch.tensor([1]), 1).item() == pytest.approx(math.log(0.75))


@pytest.mark.parametrize(
    ("make", "counts", "message"),
    [
        (
            lambda c: PopularitySampler(c, 3),
            np.ones((2, 2)),
            "popularity sampler needs a 1-D array of non-negative item counts",
        ),
        (
            lambda c: PopularitySampler(c, 3),
            np.array([]),
            "popularity sampler needs a 1-D array of non-negative item counts",
        ),
        (lambda c: PopularitySampler(c, 3), np.zeros(3), "popularity sampler: every item has zero count"),
        (
            InBatchSampler,
            np.ones((2, 2)),
            "in-batch sampler needs a 1-D array of item counts with a positive total",
        ),
        (
            InBatchSampler,
            np.zeros(3),
            "in-batch sampler needs a 1-D array of item counts with a positive total",
        ),
        (
            lambda c: MixedSampler(c, 3),
            np.ones((2, 2)),
            "mixed sampler needs a 1-D array of item counts with a positive total",
        ),
        (
            lambda c: MixedSampler(c, 3),
            np.zeros(3),
            "mixed sampler needs a 1-D array of item counts with a positive total",
        ),
    ],
)
def test_bad_item_counts_fail_with_the_message_users_see(make, counts, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        make(counts)


def test_bad_catalogue_and_missing_scorer_fail_with_the_message_users_see():
    with pytest.raises(ConfigError, match="^uniform sampler needs at least one item, got n_items=0$"):
        UniformSampler(0, 3)
    message = "hard-negative sampler has no score_fn; set sampler.score_fn to the model's scorer"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        HardNegativeSampler(6, 5, 2, TRAIN).sample(USERS, POS, gen())


def test_zero_count_items_give_no_divide_warning():
    """An item nobody interacted with has log q = -inf by design; that is no reason to warn the user."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PopularitySampler(COUNTS, 3)
        InBatchSampler(COUNTS)


def test_popularity_with_nothing_to_draw_returns_empty_long_items():
    none_shared = PopularitySampler(COUNTS, 0).sample(USERS, POS, gen())
    assert (
        none_shared.items.shape == none_shared.log_q.shape == (0,) and none_shared.items.dtype == torch.long
    )
    assert none_shared.pos_log_q.shape == (3,)
    empty = torch.empty(0, dtype=torch.long)
    no_batch = PopularitySampler(COUNTS, 4, shared=False).sample(empty, empty, gen())
    assert no_batch.items.shape == (0, 4) and no_batch.items.dtype == torch.long


META = torch.device("meta")  # stands in for an accelerator: a device other than the CPU generator's


def meta_scores(users: torch.Tensor) -> torch.Tensor:
    return fixed_scores(users).to(META)


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("shared", [True, False])
def test_draws_come_back_on_the_positives_device(index, shared):
    """Draws happen on the generator's device (here the CPU) and are returned on `pos_idx`'s device, the
    model's: a sampler that left one tensor behind breaks training on a GPU. Tensors on torch's `meta`
    device carry shapes and devices but no data, so this runs on a CPU-only machine."""
    sampler = all_samplers(shared)[index]
    if isinstance(sampler, HardNegativeSampler):
        sampler.score_fn = meta_scores  # the model scores on its own device; user ids stay on the CPU
        negs = sampler.sample(USERS, POS.to(META), gen())
    else:
        negs = sampler.sample(USERS.to(META), POS.to(META), gen())
    for name in ("items", "log_q", "pos_log_q"):
        assert getattr(negs, name).device == META, name
    empty = PopularitySampler(COUNTS, 0, shared=shared).sample(USERS.to(META), POS.to(META), gen())
    assert empty.items.device == META


def test_masks_and_lookups_stay_on_the_candidates_device():
    lookup, nobody = PositiveLookup(TRAIN), PositiveLookup(sp.csr_matrix((3, 6), dtype=np.float32))
    per_example = torch.tensor([[3, 3, 2, 1], [2, 0, 0, 5], [4, 4, 0, 1]], device=META)
    for found in (
        lookup.contains(USERS, per_example),  # user ids may stay on the CPU
        nobody.contains(USERS, per_example),
        lookup.contains_shared(USERS, torch.empty(0, dtype=torch.long, device=META)),
        negative_mask(
            USERS.to(META), POS.to(META), InBatchSampler(COUNTS).sample(USERS, POS.to(META), gen())
        ),
    ):
        assert found.device == META and found.dtype == torch.bool
    col, hit = candidate_columns(torch.tensor([0, 5], device=META), torch.tensor([1, 5], device=META), 6)
    assert col.device == hit.device == META
    moved = Negatives(POS, POS.float(), POS.float(), in_batch=3).to(META)
    assert moved.items.device == moved.log_q.device == moved.pos_log_q.device == META and moved.in_batch == 3


def test_negative_mask_without_in_batch_columns_is_the_accidental_hits():
    lookup = PositiveLookup(TRAIN)
    for shared in (True, False):
        negs = UniformSampler(6, 5, shared).sample(USERS, POS, gen(2))
        expected = accidental_hit_mask(USERS, POS, negs.items, lookup).expand(3, 5)
        assert torch.equal(negative_mask(USERS, POS, negs, lookup), expected)


@pytest.mark.parametrize("shared", [True, False])
def test_build_sampler_passes_shared_negatives_on(shared):
    for name, num in (("uniform", 4), ("popularity", 4), ("mixed", 3 + 2)):
        cfg = TwoTowerConfig(name="tt", sampler=name, num_negatives=4, shared_negatives=shared)
        items = build_sampler(cfg, COUNTS, TRAIN).sample(USERS, POS, gen()).items
        assert items.shape == ((num,) if shared else (3, num)), name


@pytest.mark.parametrize(("fraction", "n_uniform"), [(0.0, 0), (0.1, 1), (0.5, 2), (1.0, 4)])
def test_build_sampler_mixed_draws_at_least_one_uniform_item_when_asked_for_any(fraction, n_uniform):
    cfg = TwoTowerConfig(name="tt", sampler="mixed", num_negatives=4, mixed_uniform_fraction=fraction)
    assert build_sampler(cfg, COUNTS, TRAIN).sample(USERS, POS, gen()).num == 3 + n_uniform


def test_build_sampler_names_a_sampler_it_does_not_know():
    cfg = TwoTowerConfig(name="tt").model_copy(update={"sampler": "zipf"})  # past validation
    with pytest.raises(ConfigError, match="^unknown sampler 'zipf'$"):
        build_sampler(cfg, COUNTS, TRAIN)


def test_lookup_on_unsorted_csr_with_duplicates_matches_dense():
    """A CSR built by hand may have unsorted rows and repeated entries; the sorted keys must not care."""
    train = sp.csr_matrix(
        (np.ones(6, dtype=np.float32), np.array([3, 0, 3, 5, 1, 4]), np.array([0, 3, 5, 6])), shape=(3, 6)
    )
    assert not train.has_canonical_format
    dense = train.toarray() != 0  # user 0 likes {0, 3}, user 1 {1, 5}, user 2 {4}
    grid = torch.tensor([[0, 1, 3, 5], [5, 4, 1, 0], [4, 3, 2, 1]])
    expected = torch.as_tensor(dense[np.arange(3)[:, None], grid.numpy()])
    lookup = PositiveLookup(train)
    assert torch.equal(lookup.contains(USERS, grid), expected)
    assert torch.equal(lookup.contains_shared(USERS, grid[0]), torch.as_tensor(dense[:, [0, 1, 3, 5]]))


def test_lookup_edge_sizes():
    """One candidate, one known interaction, no interactions, no candidates in a large catalogue."""
    lookup = PositiveLookup(TRAIN)
    assert lookup.contains_shared(torch.tensor([0, 1]), torch.tensor([3])).tolist() == [[True], [False]]
    single = PositiveLookup(sp.csr_matrix(([1.0], ([0], [3])), shape=(2, 6)))
    assert single.contains(torch.tensor([0, 1]), torch.tensor([[3, 1], [3, 3]])).tolist() == [
        [True, False],
        [False, False],
    ]
    nobody = PositiveLookup(sp.csr_matrix((3, 6), dtype=np.float32)).contains(
        USERS, torch.tensor([[0, 5]] * 3)
    )
    assert nobody.shape == (3, 2) and nobody.dtype == torch.bool and not nobody.any()
    wide = PositiveLookup(sp.csr_matrix(([1.0], ([0], [7])), shape=(2, 100)))  # far more items than likes
    empty = wide.contains_shared(torch.tensor([0, 1]), torch.empty(0, dtype=torch.long))
    assert empty.shape == (2, 0) and empty.dtype == torch.bool
    assert item_counts_from_csr(TRAIN).dtype == np.int64


def test_candidate_columns_search_past_the_last_candidate():
    """Liked items above the largest candidate, and equal to it, on the search path."""
    col, hit = candidate_columns(torch.tensor([0, 3, 4]), torch.tensor([1, 3]), 10**6)
    assert hit.tolist() == [False, True, False] and col[hit].tolist() == [1]


def test_all_items_sampler_takes_a_one_item_catalogue():
    """One item is still a catalogue: its only candidate is the positive (masked), log q = log 1."""
    negs = AllItemsSampler(1).sample(torch.tensor([0]), torch.tensor([0]), gen())
    assert negs.items.tolist() == [0] and negs.log_q.tolist() == [0.0] and negs.pos_log_q.tolist() == [0.0]
    assert negative_mask(torch.tensor([0]), torch.tensor([0]), negs).tolist() == [[True]]


def test_own_positive_mask_is_b_by_n_for_shared_and_per_example_candidates():
    from recsys.sampling import own_positive_mask

    pos = torch.tensor([2, 0])
    shared = own_positive_mask(pos, torch.tensor([0, 1, 2]))
    per_example = own_positive_mask(pos, torch.tensor([[2, 2, 1], [1, 0, 0]]))
    assert shared.tolist() == [[False, False, True], [True, False, False]]
    assert per_example.tolist() == [[True, True, False], [False, True, True]]


def test_in_batch_columns_and_the_full_catalogue_both_mask_each_rows_positive():
    """In-batch positives in front of the full catalogue (in_batch = 2, has_positives): each row's
    positive is masked in its in-batch column AND where the catalogue holds it again, so it never
    counts twice; with accidental-hit removal, the user's other training items too."""
    users, pos = torch.tensor([0, 1]), torch.tensor([3, 1])
    items = torch.tensor([3, 1, 0, 1, 2, 3, 4, 5])
    negs = Negatives(items, torch.zeros(8), torch.zeros(2), in_batch=2, has_positives=True)
    expected = torch.tensor([[1, 0, 0, 0, 0, 1, 0, 0], [0, 1, 0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(negative_mask(users, pos, negs), expected)
    from recsys.training import Share, hit_mask_for

    assert torch.equal(hit_mask_for(users, pos, negs, Share.of(2), None), expected)
    liked = torch.as_tensor(TRAIN.toarray() != 0)[users][:, items]
    assert torch.equal(negative_mask(users, pos, negs, PositiveLookup(TRAIN)), expected | liked)
    assert torch.equal(hit_mask_for(users, pos, negs, Share.of(2), PositiveLookup(TRAIN)), expected | liked)
