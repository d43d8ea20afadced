"""Ranking edges: the reported scores, where the ranking wrappers run, and a tie group too wide for
the tie window when k is more than half the catalogue. Hand-built cases, answers worked out below."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data.split import EvalSet
from recsys.evaluation import ranking
from recsys.evaluation.ranking import PAD_ITEM, item_major, rank_eval_set, rank_factors, reported_scores, topk
from recsys.models.factors import FactorModel


def test_reported_scores_read_the_items_own_scores_keep_padding_and_leave_the_ranked_ones():
    """Items [2, 0, pad] ranked by nudged scores: reported as item_scores[2] = 5, item_scores[0] =
    3, and -inf for the padding; the ranked scores the caller holds are not written over."""
    items = np.array([[2, 0, PAD_ITEM]], dtype=np.int64)
    ranked = np.array([[5.0000005, 3.0000002, -np.inf]], dtype=np.float32)
    before = ranked.copy()
    out = reported_scores(items, ranked, np.array([3.0, 0.5, 5.0]))
    np.testing.assert_array_equal(out, np.array([[5.0, 3.0, -np.inf]], dtype=np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(ranked, before)
    assert reported_scores(items, ranked, None) is ranked


def _eval_set() -> EvalSet:
    """2 users x 3 items: u0 tests item 2 having seen item 0, u1 tests item 1; item 1 is masked."""
    truth = sp.csr_matrix(np.array([[0, 0, 1], [0, 1, 0]], dtype=np.float32))
    exclude = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0]], dtype=np.float32))
    return EvalSet(truth=truth, exclude=exclude, masked_items=np.array([False, True, False]))


def test_the_eval_set_rankings_score_on_the_given_device_with_the_given_threads(monkeypatch):
    """`meta` stands in for an accelerator (it holds no values, so the top-k reading is replaced by
    a recorder): the scores of both wrappers are made on the device asked for, with the torch
    thread count asked for; the setting is restored afterwards."""
    seen: list[tuple[str, int]] = []

    def record(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        seen.append((scores.device.type, torch.get_num_threads()))
        return np.zeros((scores.shape[0], k), np.int64), np.zeros((scores.shape[0], k), np.float32)

    monkeypatch.setattr(ranking, "_topk_rows", record)
    before = torch.get_num_threads()
    threads = before + 1
    vecs = np.eye(3, dtype=np.float32)[:2]
    rank_factors(vecs, np.eye(3, dtype=np.float32), _eval_set(), 2, device="meta", threads=threads)
    model = FactorModel.from_arrays(vecs, np.eye(3, dtype=np.float32))
    rank_eval_set(model, _eval_set(), 2, device="meta", threads=threads)
    assert seen == [("meta", threads), ("meta", threads)]
    assert torch.get_num_threads() == before


def test_item_major_puts_the_items_on_the_given_device():
    vecs = np.arange(6, dtype=np.float64).reshape(3, 2)
    assert item_major(vecs, device="meta").device.type == "meta"
    prepared = item_major(vecs, device="cpu")
    assert prepared.device.type == "cpu" and prepared.dtype == torch.float32
    np.testing.assert_array_equal(prepared.numpy(), vecs.astype(np.float32))


def test_a_tie_group_wider_than_the_window_when_k_is_most_of_the_catalogue():
    """100 items: items 55..99 score 1..45 (item 99 best), items 0..54 tie at 0. At k = 60 the tie
    group runs past the window (60 + 32 places), so the full-width pass fills the 15 places left
    after the 45 scored items, with the tied items of lowest index: 99, 98, ..., 55, then 0..14."""
    scores = np.zeros(100, dtype=np.float32)
    scores[55:] = np.arange(1, 46, dtype=np.float32)
    items, values = topk(np.ones((1, 1), np.float32), scores[:, None], 60, device="cpu", threads=1)
    assert items[0].tolist() == list(range(99, 54, -1)) + list(range(15))
    expected = np.concatenate([np.arange(45, 0, -1), np.zeros(15)]).astype(np.float32)
    np.testing.assert_array_equal(values[0], expected)


def test_vectors_that_require_grad_rank_like_plain_arrays():
    """A training loop hands over its parameters as they are (`requires_grad`): no numpy view of
    them is possible, yet the lists are those of the same numbers as arrays. Items e0, e1, e0 + e1:
    user (1, 2) scores them 1, 2, 3 -> [2, 1]; user (2, -1) scores 2, -1, 1 -> [0, 2]."""
    users = np.array([[1.0, 2.0], [2.0, -1.0]], dtype=np.float32)
    items = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    params = torch.nn.Parameter(torch.from_numpy(users)), torch.nn.Parameter(torch.from_numpy(items))
    got, scores = topk(*params, 2, device="cpu", threads=1)
    assert got.tolist() == [[2, 1], [0, 2]]
    np.testing.assert_allclose(scores, [[3.0, 2.0], [2.0, 1.0]], rtol=0, atol=1e-6)


def test_users_are_scored_one_chunk_at_a_time(monkeypatch):
    """5 users in chunks of 2: three score matrices of 2, 2 and 1 rows, each user scored once. Same
    lists either way; what a chunk bounds is the time and memory of a large evaluation."""
    heights: list[int] = []
    real = ranking._topk_rows

    def record(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        heights.append(scores.shape[0])
        return real(scores, k)

    monkeypatch.setattr(ranking, "_topk_rows", record)
    users = np.array([[1, 0], [0, 1], [1, 1], [-1, 0], [0, -1]], dtype=np.float32)
    items = np.array([[1, 0], [0, 1]], dtype=np.float32)
    got, _ = topk(users, items, 1, chunk_size=2, device="cpu", threads=1)
    assert heights == [2, 2, 1]
    assert got[:, 0].tolist() == [0, 1, 0, 1, 0]  # user (1, 1) ties: the lower index


def test_no_device_named_means_cuda_where_torch_has_one(monkeypatch):
    """The default picks the accelerator when present (checked here without one: torch.device
    only names it), the CPU otherwise; a named device is taken as given."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ranking.resolve_device(None) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ranking.resolve_device(None) == torch.device("cpu")
    assert ranking.resolve_device("meta") == torch.device("meta")
