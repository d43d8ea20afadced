"""Chunked full-corpus top-k: one matmul per chunk of users, seen items masked, `torch.topk`.

Every model retrieves by dot product, so ranking is model-agnostic: score a chunk of users against
all items (memory bounded by chunk_size x n_items floats, and by SCORE_BUFFER_BYTES whatever the
catalogue), set excluded items to -inf, keep the k best. Ties are broken towards the lower item index so that the same factors always give the same
lists (and therefore the same metrics), whatever torch's topk kernel does with equal values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data.split import EvalSet

if TYPE_CHECKING:
    from recsys.models.base import Recommender

PAD_ITEM = -1
"""Item index used where a user has fewer than k rankable items (its score is -inf)."""

SCORE_BUFFER_BYTES = 128 * 2**20
"""Most bytes of one chunk's users x items float32 scores. `evaluation.chunk_size` counts users, so
on its own the buffer grows with the catalogue: 2,048 users x 1M items is 8 GB per model evaluated,
twice that with two models evaluating at once (`orchestration.max_workers = 2`), on a log such as an
Amazon reviews category. Catalogues up to 16,384 items keep 2,048 users per chunk.

128 MiB, not the 512 MiB of before: every ranking of a run (a two-tower's per-epoch validation, the
test, validation and folding scoring) takes one such buffer, and with two models at once two of them
were most of `recsys run`'s peak on a sparse log (an Amazon-shaped log's 55k items: 2 x 430 MB of
scores over a 0.7 GB base). Fewer users per matmul cost no time: the scores of a smaller chunk stay
closer to the cache for the masking and topk passes (8k users x 55k items x 64 dims, k = 100, at 1
thread on a loaded machine, best of 3: 512 MiB 2.9 s, 128 MiB 2.7 s). The lists do not depend on it."""


def chunk_rows(chunk_size: int, n_items: int) -> int:
    """Users per matmul: `chunk_size`, fewer where their scores would exceed SCORE_BUFFER_BYTES."""
    return max(1, min(chunk_size, SCORE_BUFFER_BYTES // (4 * max(n_items, 1))))


@dataclass(frozen=True)
class RankedLists:
    """Top-k lists for a set of users: row i of `items`/`scores` belongs to `users[i]`.

    items:  (n, k) int64 item indices, best first, padded with -1.
    scores: (n, k) float32 dot-product scores, -inf where padded.
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    @property
    def k(self) -> int:
        return int(self.items.shape[1])

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def truncate(self, k: int) -> RankedLists:
        """The top-k prefix: lists at a smaller k need no re-ranking."""
        return RankedLists(self.users, self.items[:, :k], self.scores[:, :k])


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None means the fastest device present: cuda when available, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_THREADS_LOCK = threading.Lock()
_THREAD_REQUESTS: list[tuple[object, int]] = []  # active torch_threads blocks, oldest first
_THREADS_BEFORE: list[int] = []  # torch's setting before the first active block


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` torch intra-op threads inside the block (None leaves the setting as it is).

    The setting is process-wide while models train concurrently in threads, so blocks are counted:
    the setting is restored only when the last open block ends, never under a block still running
    (a plain save/restore let one model's exit switch another, mid-training, back to all cores, and
    the same config gave different results from run to run). Concurrent blocks that ask for the
    same number - the pipeline gives every model the same thread budget - keep it stable."""
    if threads is None:
        yield
        return
    token = object()
    with _THREADS_LOCK:
        if not _THREAD_REQUESTS:
            _THREADS_BEFORE[:] = [torch.get_num_threads()]
        _THREAD_REQUESTS.append((token, threads))
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREAD_REQUESTS[:] = [r for r in _THREAD_REQUESTS if r[0] is not token]
            torch.set_num_threads(_THREAD_REQUESTS[-1][1] if _THREAD_REQUESTS else _THREADS_BEFORE[0])


def _as_float32(vecs: np.ndarray | torch.Tensor, device: torch.device, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(vecs) if isinstance(vecs, torch.Tensor) else torch.from_numpy(np.asarray(vecs))
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (rows x dims) matrix, got shape {tuple(tensor.shape)}")
    return tensor.to(device=device, dtype=torch.float32)


def reported_scores(items: np.ndarray, scores: np.ndarray, item_scores: np.ndarray | None) -> np.ndarray:
    """The scores to report for top-k `items` ranked by `scores`: `item_scores[item]` where a model
    gives one (`Recommender.exact_item_scores`), padding (`PAD_ITEM`) keeping its -inf.

    Why: popularity ranks by its counts nudged a few float32 steps apart to order ties by the raw
    id (`break_ties`), so a count of 42 was reported as 42.0000076; the nudge orders, the count is
    what a caller reads. Without `item_scores` the ranked scores are returned unchanged."""
    if item_scores is None:
        return scores
    out = np.array(scores, dtype=np.float32, copy=True)
    real = items != PAD_ITEM
    out[real] = np.asarray(item_scores, dtype=np.float32)[items[real]]
    return out


def item_major(item_vecs: np.ndarray | torch.Tensor, device: str | torch.device | None = "cpu") -> torch.Tensor:
    """The item matrix the way `topk` multiplies it, prepared once: float32 on `device`, stored as a
    contiguous (d, n_items) matrix and returned as its (n_items, d) transposed view.

    Why: `topk` transposes its items to contiguous memory before the matmul (one copy per call,
    cheap against a chunk of 2,048 users). A server answers one user per call, and there that copy
    of the whole catalogue (25 MB at 100k x 64) cost ~30 times the matrix-vector product itself.
    Given this view, `topk` finds the transpose already contiguous and copies nothing; the product
    runs on the same memory layout, so scores and lists are bit-identical to `topk` on the plain
    matrix. Costs one extra copy of the item matrix, held by the caller."""
    items = _as_float32(item_vecs, resolve_device(device), "item_vecs")
    return items.T.contiguous().T


def _mask_excluded(scores: torch.Tensor, block: sp.csr_matrix) -> None:
    """Set every (row, item) stored in `block` to -inf, in place, with one indexed write.

    On CPU the write goes through numpy on the tensor's own memory: it is single-threaded, so on a
    loaded machine it cannot stall waiting for a descheduled intra-op thread the way a parallel
    torch index_put can (measured: ~1 ms vs 1-50 ms for 80k cells on 2 busy cores)."""
    if block.nnz == 0:
        return
    rows = np.repeat(np.arange(block.shape[0], dtype=np.int64), np.diff(block.indptr))
    cols = block.indices.astype(np.int64, copy=False)
    if scores.device.type == "cpu":
        scores.view(-1).numpy()[rows * scores.shape[1] + cols] = -np.inf  # view(-1): contiguous, no copy
        return
    scores[torch.from_numpy(rows).to(scores.device), torch.from_numpy(cols).to(scores.device)] = float("-inf")


def _finite_ties(values: np.ndarray) -> np.ndarray:
    """ties[:, j]: columns j and j + 1 hold the same finite score (-inf ties are padding anyway)."""
    return (values[:, 1:] == values[:, :-1]) & (values[:, 1:] != -np.inf)


def _lowest_tied(
    scores: torch.Tensor, rows: np.ndarray, values: np.ndarray, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` of a top-k whose k-th score v ties with the next one: keep the entries above v
    (a sorted top-k holds every item scoring above v, first) and fill the rest with the tied items
    of lowest index, what a stable descending sort would put there.

    One pass over each row (mark the items scoring exactly v, take the smallest indices with a
    topk on a key that grows as the index falls) instead of a full sort: rows of a degenerate
    embedding tie almost everywhere (popularity's one-dimensional vectors: every row of its
    neighbour search), and sorting 20k x 27k scores took ~8 s where this takes a fraction."""
    k = values.shape[1]
    tie_value = values[:, -1]
    device = scores.device
    row_scores = scores[torch.from_numpy(rows).to(device)]
    n_items = row_scores.shape[1]
    # Nearly every tie group is small (items whose vectors point one way: in WALS, the tail items
    # one user alone interacted with, 2-25 of them on a 71k-item long-tail log): a top-(k + window)
    # of the tied rows holds the whole group when its last score is below v, and sorting that
    # window by (score desc, index asc) gives the stable sort's first k, without the two full-width
    # passes below (which took ~40% of an item-neighbour search on such a log).
    width = min(n_items, k + TIE_WINDOW)
    window_values, window_indices = torch.topk(row_scores, width, dim=1, largest=True, sorted=True)
    window_values, window_indices = window_values.cpu().numpy(), window_indices.cpu().numpy()
    fits = (window_values[:, -1] < tie_value) if width < n_items else np.ones(rows.size, dtype=bool)
    values, indices = values.copy(), indices.copy()
    if fits.any():
        order = np.lexsort((window_indices[fits], -window_values[fits]), axis=-1)[:, :k]
        values[fits] = np.take_along_axis(window_values[fits], order, axis=1)
        indices[fits] = np.take_along_axis(window_indices[fits], order, axis=1)
    if fits.all():
        return values, indices
    wide = ~fits
    rest_values, rest_indices = _lowest_tied_wide(row_scores[torch.from_numpy(np.flatnonzero(wide)).to(device)],
                                                  values[wide], indices[wide])
    values[wide], indices[wide] = rest_values, rest_indices
    return values, indices


TIE_WINDOW = 32
"""How many places past k `_lowest_tied` looks for the end of a tie group before the full-width pass."""


def _lowest_tied_wide(
    row_scores: torch.Tensor, values: np.ndarray, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`_lowest_tied` for rows (their scores `row_scores`) whose tie group outruns the window."""
    k = values.shape[1]
    tie_value = values[:, -1]
    n_above = (values > tie_value[:, None]).sum(axis=1)
    need = k - n_above
    device = row_scores.device
    n_items = row_scores.shape[1]
    key = torch.arange(n_items, 0, -1, device=device, dtype=torch.int32)
    key = torch.where(row_scores == torch.from_numpy(tie_value).to(device)[:, None], key, 0)
    first = torch.topk(key, int(need.max()), dim=1, sorted=True).indices.cpu().numpy()
    column = np.arange(k)[None, :]
    from_tie = column >= n_above[:, None]
    source = np.clip(column - n_above[:, None], 0, first.shape[1] - 1)
    indices = np.where(from_tie, np.take_along_axis(first, source, axis=1), indices)
    values = np.where(from_tie, tie_value[:, None], values)
    return values, indices


def _topk_rows(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row as numpy (indices int64, values float32), best first, equal scores ordered by
    ascending item index; padded slots (score -inf) keep torch's index and are marked by callers.

    torch.topk picks arbitrarily among values tied at the k-th place and orders ties arbitrarily,
    so rows with a tie across the cut (rare with real-valued factors) take the tied items of lowest
    index (`_lowest_tied`), and rows with ties inside the top k are put in (score desc, index asc)
    order with one lexsort. Rows without ties, nearly all of them, cost one topk call. Only topk (and the rare tie
    pass) run in torch; the tie bookkeeping on the small (n, k) result is numpy, because each extra
    parallel torch op is a chance to wait for a descheduled worker thread on a busy machine.
    """
    n_items = scores.shape[1]
    extra = 1 if k < n_items else 0
    top_values, top_indices = torch.topk(scores, k + extra, dim=1, largest=True, sorted=True)
    values, indices = top_values.cpu().numpy(), top_indices.cpu().numpy()  # our own buffers: writable
    ties = _finite_ties(values)
    if extra:
        boundary_tie = ties[:, k - 1]
        values, indices = values[:, :k], indices[:, :k]
        if boundary_tie.any():
            rows = np.flatnonzero(boundary_tie)
            values[rows], indices[rows] = _lowest_tied(scores, rows, values[rows], indices[rows])
        ties = _finite_ties(values)
    inner_tie = ties.any(axis=1)
    if inner_tie.any():
        rows = np.flatnonzero(inner_tie)
        sub_values, sub_indices = values[rows], indices[rows]
        order = np.lexsort((sub_indices, -sub_values), axis=-1)  # score desc, then item index asc
        values[rows] = np.take_along_axis(sub_values, order, axis=1)
        indices[rows] = np.take_along_axis(sub_indices, order, axis=1)
    return np.ascontiguousarray(indices), np.ascontiguousarray(values)


def topk(
    user_vecs: np.ndarray | torch.Tensor,
    item_vecs: np.ndarray | torch.Tensor,
    k: int,
    exclude: sp.csr_matrix | None = None,
    *,
    chunk_size: int = 2048,
    device: str | torch.device | None = None,
    threads: int | None = None,
    masked_items: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items by dot product for every row of `user_vecs`.

    Returns (items int64 (n, k'), scores float32 (n, k')) with k' = min(k, n_items), best first,
    ties to the lower item index. `exclude` row i (a CSR aligned with `user_vecs`, n x n_items)
    lists items never returned for user i; `masked_items` (bool per item) items never returned for
    anyone; users with fewer than k' allowed items are padded with item -1 and score -inf. Peak
    extra memory is about chunk_size x n_items float32 (at most SCORE_BUFFER_BYTES: `chunk_rows`),
    plus a transposed copy of the items unless they come from `item_major` (callers that rank a few
    users per call should pass that).
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    dev = resolve_device(device)
    items_t = _as_float32(item_vecs, dev, "item_vecs")
    n_users, n_items = int(user_vecs.shape[0]), int(items_t.shape[0])
    if user_vecs.ndim != 2 or user_vecs.shape[1] != items_t.shape[1]:
        raise ValueError(
            f"user vectors {tuple(user_vecs.shape)} and item vectors {tuple(items_t.shape)} differ in dimension"
        )
    if exclude is not None:
        if not sp.issparse(exclude):
            raise TypeError(f"exclude must be a scipy.sparse CSR matrix, got {type(exclude).__name__}")
        if exclude.shape != (n_users, n_items):
            raise ValueError(
                f"exclude has shape {exclude.shape}; expected (users, items) = {(n_users, n_items)}"
            )
        exclude = sp.csr_matrix(exclude)
    chunk_size = chunk_rows(chunk_size, n_items)
    kk = min(k, n_items)
    masked = None
    if masked_items is not None and np.any(masked_items):
        if np.shape(masked_items) != (n_items,):
            raise ValueError(f"masked_items has shape {np.shape(masked_items)}; expected ({n_items},)")
        masked = torch.from_numpy(np.flatnonzero(masked_items)).to(dev)
    out_items = np.empty((n_users, kk), dtype=np.int64)
    out_scores = np.empty((n_users, kk), dtype=np.float32)
    if kk == 0:
        return out_items, out_scores
    items_t_t = items_t.T.contiguous()  # no copy for an `item_major` matrix
    with torch_threads(threads), torch.inference_mode():
        # One score buffer for every chunk: a fresh chunk x n_items tensor per chunk (565 MB at 2,048 x
        # 69k items) is fresh memory the kernel must fault in and zero each time, and the previous
        # chunk's scores were still alive while it was allocated (two at the peak). Measured on 1
        # thread, 20k users x 69k items: 1-dim vectors (popularity) 7.7 s -> 4.5 s, 64-dim 9.9 s -> 8.0 s.
        buffer = torch.empty((min(chunk_size, n_users), n_items), dtype=torch.float32, device=dev)
        for start in range(0, n_users, chunk_size):
            stop = min(start + chunk_size, n_users)
            users = _as_float32(user_vecs[start:stop], dev, "user_vecs")
            scores = torch.mm(users, items_t_t, out=buffer[: stop - start])
            if exclude is not None:
                _mask_excluded(scores, exclude[start:stop])
            if masked is not None:
                scores[:, masked] = float("-inf")
            idx, vals = _topk_rows(scores, kk)
            if np.isneginf(vals[:, -1]).any():  # sorted, so padding shows in the last column
                idx[np.isneginf(vals)] = PAD_ITEM
            out_items[start:stop] = idx
            out_scores[start:stop] = vals
    return out_items, out_scores


def rank_factors(
    user_vecs: np.ndarray | torch.Tensor,
    item_vecs: np.ndarray | torch.Tensor,
    eval_set: EvalSet,
    k: int,
    *,
    chunk_size: int = 2048,
    device: str | torch.device | None = None,
    threads: int | None = None,
) -> RankedLists:
    """Rank the evaluated users of `eval_set` from raw factors (no model object needed).

    `user_vecs` has one row per row of `eval_set.truth` (indexed by user index), i.e. vectors
    already computed for every user, fold-in users included; `eval_set.exclude` is masked.
    """
    if user_vecs.shape[0] != eval_set.truth.shape[0]:
        raise ValueError(
            f"user_vecs has {user_vecs.shape[0]} rows but the eval set has {eval_set.truth.shape[0]} users; "
            "pass one vector per user index"
        )
    users = eval_set.users
    rows = torch.from_numpy(users) if isinstance(user_vecs, torch.Tensor) else users
    return _rank_users(user_vecs[rows], item_vecs, eval_set, users, k, chunk_size, device, threads)


def rank_eval_set(
    model: Recommender,
    eval_set: EvalSet,
    k: int,
    *,
    chunk_size: int = 2048,
    device: str | torch.device | None = None,
    threads: int | None = None,
) -> RankedLists:
    """Rank the evaluated users of `eval_set` with `model`: vectors from `model.user_vectors`
    (fold-in for strong generalisation), `eval_set.exclude` masked."""
    users, vecs = model_user_vectors(model, eval_set)
    return _rank_users(vecs, model.item_factors, eval_set, users, k, chunk_size, device, threads)


def model_user_vectors(model: Recommender, eval_set: EvalSet) -> tuple[np.ndarray, np.ndarray]:
    """The evaluated users of `eval_set` and `model`'s vectors for them (`model.user_vectors`:
    fold-in for strong generalisation), after checking that the model knows the eval set's
    catalogue. Ranking and evaluation both start here, so a mismatch reads the same from either."""
    if eval_set.truth.shape[1] != model.n_items:
        raise ValueError(f"eval set has {eval_set.truth.shape[1]} items but the model knows {model.n_items}")
    users = eval_set.users
    return users, model.user_vectors(eval_set, users)


def _rank_users(
    vecs: np.ndarray | torch.Tensor,
    item_vecs: np.ndarray | torch.Tensor,
    eval_set: EvalSet,
    users: np.ndarray,
    k: int,
    chunk_size: int,
    device: str | torch.device | None,
    threads: int | None,
) -> RankedLists:
    """Top-k lists of `users` (rows of `vecs`), with `eval_set`'s excluded and masked items left
    out: the one ranking behind `rank_factors` and `rank_eval_set`, which differ only in where the
    vectors come from."""
    items, scores = topk(
        vecs,
        item_vecs,
        k,
        exclude=_exclude_rows(eval_set, users),
        chunk_size=chunk_size,
        device=device,
        threads=threads,
        masked_items=eval_set.masked_items,
    )
    return RankedLists(users=users, items=items, scores=scores)


def _exclude_rows(eval_set: EvalSet, users: np.ndarray) -> sp.csr_matrix:
    if eval_set.exclude.shape != eval_set.truth.shape:
        raise ValueError(
            f"eval set exclude {eval_set.exclude.shape} and truth {eval_set.truth.shape} differ in shape"
        )
    return sp.csr_matrix(eval_set.exclude)[users]
