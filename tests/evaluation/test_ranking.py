"""Chunked top-k: order, tie-breaks, masking, padding, chunk invariance, and the eval-set wrappers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.split import EvalSet
from recsys.evaluation.ranking import PAD_ITEM, RankedLists, item_major, rank_eval_set, rank_factors, topk
from recsys.models.factors import FactorModel


def FixedFactors(users: np.ndarray, items: np.ndarray) -> FactorModel:  # noqa: N802 - reads like the class it was
    """Fixed vectors behind the model protocol; fold-in = sum of the history's item vectors."""
    return FactorModel.from_arrays(users, items, name="fixed")


def reference_topk(
    scores: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: full lexsort by (score desc, item asc), masked items dropped, -1 padding."""
    scores = scores.astype(np.float32).copy()
    if exclude is not None:
        scores[exclude] = -np.inf
    n, m = scores.shape
    order = np.lexsort((np.broadcast_to(np.arange(m), (n, m)), -scores), axis=-1)[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    order = np.where(np.isneginf(top_scores), PAD_ITEM, order)
    return order, top_scores


def test_hand_example_order_ties_masking_and_padding() -> None:
    users = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    items = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [1.0, 0.0]], dtype=np.float32)
    # scores: user0 = [1, 1, 0, .5, 1]; user1 = [0, 0, 1, .5, 0]; user2 = [1, 1, 1, 1, 1]
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=np.float32))
    got_items, got_scores = topk(users, items, 3, exclude)
    # user0: item 1 masked; ties at 1.0 between items 0 and 4 -> lower index first; then item 3 (0.5)
    # user1: items 2,3,4 masked; items 0 and 1 tie at 0.0; one slot left -> padding
    # user2: only item 4 allowed -> two padded slots
    np.testing.assert_array_equal(got_items, [[0, 4, 3], [0, 1, -1], [4, -1, -1]])
    np.testing.assert_array_equal(got_scores, [[1, 1, 0.5], [0, 0, -np.inf], [1, -np.inf, -np.inf]])
    assert got_items.dtype == np.int64 and got_scores.dtype == np.float32


def test_boundary_tie_keeps_lowest_indices() -> None:
    # Six items all scoring 1.0 and k=3: exactly items 0, 1, 2 must be chosen, whatever torch.topk does.
    items = np.ones((6, 1), dtype=np.float32)
    got, _ = topk(np.ones((4, 1), dtype=np.float32), items, 3)
    np.testing.assert_array_equal(got, np.tile([0, 1, 2], (4, 1)))


def test_k_larger_than_catalogue_returns_every_item() -> None:
    items = np.array([[3.0], [1.0], [2.0]], dtype=np.float32)
    got_items, got_scores = topk(np.array([[1.0], [-1.0]], dtype=np.float32), items, 10)
    assert got_items.shape == (2, 3)
    np.testing.assert_array_equal(got_items, [[0, 2, 1], [1, 2, 0]])
    np.testing.assert_array_equal(got_scores, [[3, 2, 1], [-1, -2, -3]])


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_matches_brute_force_with_many_ties_for_any_chunk_size(chunk_size: int) -> None:
    rng = np.random.default_rng(0)
    # small integer factors -> many exactly tied scores, including across the k-th place
    users = rng.integers(-2, 3, size=(40, 3)).astype(np.float32)
    items = rng.integers(-2, 3, size=(60, 3)).astype(np.float32)
    mask = rng.random((40, 60)) < 0.3
    mask[5, :57] = True  # user 5 has only 3 allowed items -> padded at k=10
    exclude = sp.csr_matrix(mask.astype(np.float32))
    got_items, got_scores = topk(users, items, 10, exclude, chunk_size=chunk_size)
    want_items, want_scores = reference_topk(users @ items.T, 10, mask)
    np.testing.assert_array_equal(got_items, want_items)
    np.testing.assert_array_equal(got_scores, want_scores)
    assert not mask[np.arange(40)[:, None], np.where(got_items >= 0, got_items, 0)][got_items >= 0].any()
    assert (got_items[5, 3:] == PAD_ITEM).all()


def test_accepts_torch_tensors_and_restores_thread_count() -> None:
    before = torch.get_num_threads()
    users, items = torch.eye(3), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    got, _ = topk(users, items, 1, threads=1, device="cpu")
    np.testing.assert_array_equal(got[:, 0], [1, 0, 2])
    assert torch.get_num_threads() == before


def test_empty_user_set_and_bad_arguments() -> None:
    items = np.ones((4, 2), dtype=np.float32)
    got_items, got_scores = topk(np.empty((0, 2), dtype=np.float32), items, 3)
    assert got_items.shape == (0, 3) and got_scores.shape == (0, 3)
    with pytest.raises(ValueError, match="k must be positive"):
        topk(np.ones((1, 2), dtype=np.float32), items, 0)
    with pytest.raises(ValueError, match="dimension"):
        topk(np.ones((1, 3), dtype=np.float32), items, 2)
    with pytest.raises(ValueError, match="exclude has shape"):
        topk(np.ones((1, 2), dtype=np.float32), items, 2, exclude=sp.csr_matrix((2, 4)))


def _two_cluster_model() -> tuple[FixedFactors, np.ndarray]:
    items = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    users = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # user 0's trained vector points to cluster B
    return FixedFactors(users, items), items


def test_rank_eval_set_uses_fold_in_and_skips_users_without_truth() -> None:
    model, _ = _two_cluster_model()
    fold_in = sp.csr_matrix(
        np.array([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]], dtype=np.float32)
    )
    truth = sp.csr_matrix(
        np.array([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0]], dtype=np.float32)
    )
    ranked = rank_eval_set(model, EvalSet(truth=truth, exclude=fold_in, fold_in=fold_in), 2)
    assert isinstance(ranked, RankedLists)
    np.testing.assert_array_equal(ranked.users, [0, 2])  # user 1 has no truth
    # user 0 folds in from item 0 -> vector (1, 0): items 1, 2 (item 0 masked); its trained vector would give 3, 4
    # user 2 folds in from item 3 -> vector (0, 1): items 4, 5 (item 3 masked)
    np.testing.assert_array_equal(ranked.items, [[1, 2], [4, 5]])
    assert ranked.truncate(1).items.tolist() == [[1], [4]]


def test_rank_factors_matches_rank_eval_set_without_fold_in() -> None:
    model, items = _two_cluster_model()
    truth = sp.csr_matrix(
        np.array([[0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=np.float32)
    )
    exclude = sp.csr_matrix(
        np.array([[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=np.float32)
    )
    eval_set = EvalSet(truth=truth, exclude=exclude)
    by_model = rank_eval_set(model, eval_set, 3)
    by_factors = rank_factors(model.user_factors, items, eval_set, 3)
    np.testing.assert_array_equal(by_model.items, by_factors.items)
    # user 0 = (0, 1): item 3 (1.0), item 4 masked, item 5 (0.8), item 2 (0.2)
    np.testing.assert_array_equal(by_model.items[0], [3, 5, 2])
    with pytest.raises(ValueError, match="one vector per user"):
        rank_factors(model.user_factors[:2], items, eval_set, 3)


def test_item_major_matrix_gives_bit_identical_lists_without_a_per_call_copy() -> None:
    """Serving passes `item_major` items so that `topk` does not copy the catalogue per request;
    the lists and scores must be exactly those of the plain matrix (same product, same layout)."""
    rng = np.random.default_rng(3)
    users, items = rng.standard_normal((7, 16), dtype=np.float32), rng.standard_normal((500, 16), dtype=np.float32)
    exclude = sp.random(7, 500, density=0.05, format="csr", random_state=4, dtype=np.float32)
    prepared = item_major(items)
    assert prepared.shape == (500, 16) and prepared.T.is_contiguous()  # topk's .T.contiguous() is then free
    assert prepared.T.contiguous().data_ptr() == prepared.data_ptr()
    plain_items, plain_scores = topk(users, items, 20, exclude=exclude, device="cpu")
    got_items, got_scores = topk(users, prepared, 20, exclude=exclude, device="cpu")
    np.testing.assert_array_equal(got_items, plain_items)
    np.testing.assert_array_equal(got_scores, plain_scores)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 40), levels=st.integers(1, 4))
def test_rows_tied_across_the_cut_take_the_lowest_tied_indices(seed: int, k: int, levels: int) -> None:
    """Scores from a few levels tie almost everywhere (a one-dimensional embedding such as
    popularity's, under cosine, ties everywhere): every row's k-th score ties with the next, and the
    list must be what a stable descending sort gives, with any mask."""
    rng = np.random.default_rng(seed)
    users = np.ones((9, 1), dtype=np.float32)
    items = rng.integers(0, levels, size=(50, 1)).astype(np.float32)
    mask = rng.random((9, 50)) < 0.2
    got_items, got_scores = topk(users, items, k, sp.csr_matrix(mask.astype(np.float32)), chunk_size=4)
    want_items, want_scores = reference_topk(users @ items.T, k, mask)
    np.testing.assert_array_equal(got_items, want_items)
    np.testing.assert_array_equal(got_scores, want_scores)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 30), group=st.integers(2, 80))
def test_tie_groups_inside_and_beyond_the_tie_window_both_take_the_lowest_indices(seed: int, k: int, group: int) -> None:
    """Long-tail WALS: the tail items of one user point one way, so an item's neighbours tie in
    small groups (2-25 items) at the cut; `_lowest_tied` sorts a top-(k + TIE_WINDOW) window when
    the group ends inside it and makes the full-width pass otherwise. Groups of 2..80 tied items
    at random places, mixed with distinct scores, cover both paths in one call."""
    rng = np.random.default_rng(seed)
    n_items = 200
    items = rng.normal(size=(n_items, 4)).astype(np.float32)
    tied = rng.permutation(n_items)[:group]
    items[tied] = items[tied[0]]  # one direction, bit-identical scores for every user
    users = rng.normal(size=(12, 4)).astype(np.float32)
    users[:6] = items[tied[0]] * rng.uniform(0.5, 2.0, size=(6, 1)).astype(np.float32)  # the group ranks first
    mask = rng.random((12, n_items)) < 0.1
    got_items, got_scores = topk(users, items, k, sp.csr_matrix(mask.astype(np.float32)), chunk_size=5)
    want_items, want_scores = reference_topk(users @ items.T, k, mask)
    np.testing.assert_array_equal(got_items, want_items)  # the order is exact; numpy's and torch's sums
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)  # may differ in the last bit


def test_a_large_catalogue_is_scored_in_fewer_users_per_chunk_not_in_a_larger_buffer() -> None:
    """`evaluation.chunk_size` counts users, so its scores grew with the catalogue: 2,048 users x 200k
    items (a sparse reviews log) took a 1.6 GB buffer per model evaluated. Measured as the process's
    peak RSS in a fresh interpreter (what the OOM killer reads), 2,048 users x 200k items x 4 dims:
    about SCORE_BUFFER_BYTES (128 MiB) of scores now, 1.6 GB before the bound, 512 MiB with the
    first bound (two of those, one per model ranking at once, were most of `recsys run`'s peak on an
    Amazon-shaped log). The lists are unchanged."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import resource, numpy as np, torch
        from recsys.evaluation.ranking import topk
        rng = np.random.default_rng(0)
        users = rng.standard_normal((2048, 4), dtype=np.float32)
        items = rng.standard_normal((200_000, 4), dtype=np.float32)
        torch.mm(torch.ones(8, 4), torch.ones(4, 8))  # torch's own start-up memory before the baseline
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        got, _ = topk(users[:64], items, 10, chunk_size=2048, threads=1)
        assert (got[:, 0] == np.argmax(users[:64] @ items.T, axis=1)).all()
        topk(users, items, 10, chunk_size=2048, threads=1)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    grown = int(done.stdout.split()[-1])
    assert grown < 320 * 2**20, f"peak RSS grew by {grown / 2**20:.0f} MiB ranking 2,048 users x 200k items"


@pytest.mark.parametrize("budget_rows", [1, 3, 7])
def test_lists_do_not_depend_on_the_score_buffer_bound(monkeypatch, budget_rows: int) -> None:
    """Small integer factors: exact scores and many ties, so chunks of any height must agree exactly."""
    from recsys.evaluation import ranking

    rng = np.random.default_rng(budget_rows)
    users = rng.integers(-2, 3, size=(23, 3)).astype(np.float32)
    items = rng.integers(-2, 3, size=(40, 3)).astype(np.float32)
    mask = rng.random((23, 40)) < 0.3
    monkeypatch.setattr(ranking, "SCORE_BUFFER_BYTES", 4 * 40 * budget_rows)
    assert ranking.chunk_rows(2048, 40) == budget_rows
    got_items, got_scores = topk(users, items, 9, exclude=sp.csr_matrix(mask.astype(np.float32)), chunk_size=2048)
    want_items, want_scores = reference_topk(users @ items.T, 9, mask)
    np.testing.assert_array_equal(got_items, want_items)
    np.testing.assert_array_equal(got_scores, want_scores)


def test_both_eval_set_wrappers_never_rank_masked_items_and_return_users_scores_and_lengths() -> None:
    """`EvalSet.masked_items` (items without training data) must be masked by `rank_factors` as by
    `rank_eval_set`: the two wrappers differ only in where the vectors come from. Planted: user 0's
    best items are 3 (1.0) and 5 (0.8); masking item 3 must move 5 up and bring 2 (0.2) in."""
    model, items = _two_cluster_model()
    truth = sp.csr_matrix(
        np.array([[0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=np.float32)
    )
    exclude = sp.csr_matrix(
        np.array([[0, 0, 0, 0, 1, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=np.float32)
    )
    masked = np.array([False, False, False, True, False, False])
    eval_set = EvalSet(truth=truth, exclude=exclude, masked_items=masked)
    # user 0 = (0, 1): 3 masked, 4 excluded -> 5 (0.8), 2 (0.2), 1 (0.1); user 1 = (1, 0): 1 excluded -> 0, 2, 5
    want_items = [[5, 2, 1], [0, 2, 5]]
    want_scores = [[0.8, 0.2, 0.1], [1.0, 0.8, 0.2]]
    for ranked in (
        rank_factors(model.user_factors, items, eval_set, 3),
        rank_factors(torch.from_numpy(model.user_factors), items, eval_set, 3),  # torch rows index torch
        rank_eval_set(model, eval_set, 3),
    ):
        np.testing.assert_array_equal(ranked.users, [0, 1])  # user 2 has no truth
        np.testing.assert_array_equal(ranked.items, want_items)
        np.testing.assert_allclose(ranked.scores, want_scores, rtol=1e-6)
        assert len(ranked) == 2 and ranked.k == 3
        top1 = ranked.truncate(1)
        np.testing.assert_array_equal(top1.users, [0, 1])
        np.testing.assert_allclose(top1.scores, [[0.8], [1.0]], rtol=1e-6)


def test_wrapper_errors_name_the_counts_and_the_argument() -> None:
    model, items = _two_cluster_model()
    truth = sp.csr_matrix((3, 6), dtype=np.float32)
    eval_set = EvalSet(truth=truth, exclude=truth)
    with pytest.raises(ValueError, match="user_vecs has 2 rows but the eval set has 3 users; pass one vector per"):
        rank_factors(model.user_factors[:2], items, eval_set, 3)
    with pytest.raises(ValueError, match="user_vecs has 1 rows but"):  # rows, not the (2) dimensions
        rank_factors(model.user_factors[:1], items, eval_set, 3)
    with pytest.raises(ValueError, match="eval set has 5 items but the model knows 6"):
        rank_eval_set(model, EvalSet(truth=sp.csr_matrix((3, 5)), exclude=sp.csr_matrix((3, 5))), 3)
    with pytest.raises(ValueError, match=r"eval set exclude \(3, 5\) and truth \(3, 6\) differ in shape"):
        rank_factors(model.user_factors, items, EvalSet(truth=truth, exclude=sp.csr_matrix((3, 5))), 3)
    with pytest.raises(ValueError, match=r"item_vecs must be a 2-d \(rows x dims\) matrix, got shape \(6,\)"):
        item_major(items[:, 0])
    ranked_set = EvalSet(truth=sp.csr_matrix(np.eye(3, 6, dtype=np.float32)), exclude=truth)
    with pytest.raises(ValueError, match="chunk_size must be positive"):  # forwarded, not dropped
        rank_factors(model.user_factors, items, ranked_set, 3, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        rank_eval_set(model, ranked_set, 3, chunk_size=0)


def test_topk_masks_items_for_everyone_and_refuses_malformed_arguments_by_name() -> None:
    users = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    items = np.array([[3.0, 0.0], [2.0, 1.0], [0.0, 3.0], [1.0, 2.0]], dtype=np.float32)
    # user 0 scores [3, 2, 0, 1], user 1 [0, 1, 3, 2]; items 0 and 2 (each user's best) masked for both
    got, scores = topk(users, items, 3, masked_items=np.array([True, False, True, False]))
    np.testing.assert_array_equal(got, [[1, 3, -1], [3, 1, -1]])
    np.testing.assert_array_equal(scores[:, 2], [-np.inf, -np.inf])
    unmasked, _ = topk(users, items, 2, masked_items=np.zeros(4, dtype=bool))  # none masked: all rankable
    np.testing.assert_array_equal(unmasked, [[0, 1], [2, 3]])
    with pytest.raises(ValueError, match=r"masked_items has shape \(3,\); expected \(4,\)"):
        topk(users, items, 2, masked_items=np.array([True, False, False]))
    with pytest.raises(TypeError, match="exclude must be a scipy.sparse CSR matrix, got ndarray"):
        topk(users, items, 2, exclude=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="chunk_size must be positive, got 0"):
        topk(users, items, 2, chunk_size=0)
    with pytest.raises(ValueError, match=r"item_vecs must be a 2-d \(rows x dims\) matrix, got shape \(4,\)"):
        topk(users, items[:, 0], 2)
    with pytest.raises(ValueError, match=r"user vectors \(2, 2, 1\) and item vectors \(4, 2\) differ in dimension"):
        topk(torch.ones(2, 2, 1), items, 2)
