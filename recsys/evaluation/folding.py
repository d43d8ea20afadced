"""Folding diagnostic (Xin et al., RecSys 2017, "Folding: Why Good Models Sometimes Make Spurious
Recommendations").

A model trained on positives only has no reason to keep unrelated groups of items apart, so their
embeddings can fold onto each other and the model recommends items from groups a user never touched
while its recall looks fine. Recall cannot see this (the spurious items are simply not relevant);
the diagnostic needs a notion of "unrelated", which block-disjoint data gives us: every user and item
carries a block label (planted cluster or source data set, see `recsys.data.combine`) and no user
interacts across blocks, so any recommendation outside a user's blocks is spurious by construction.

Three views, all vectorised and chunked over users like `ranking.topk`:

- `folding_at_k`: share of each user's top-k list that lies in blocks the user never touched, shown
  beside the same share for a uniformly random recommender (closed form, `random_folding_rate`) and
  for popularity (`popularity_topk`), the two reference points that make the number readable.
- `score_folding`: the paper's score view, (1/mn) sum_ij max(0, s_ij - r_ij) with cosine scores.
- `neighbour_cross_block`: the embedding view, which needs no recommender: how many of an item's
  nearest neighbours come from other blocks. When no blocks are known the same number is computed
  on clusters found by k-means (`kmeans_labels`), a weaker, self-referential signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.sparse as sp
import torch

from recsys.data.split import EvalSet, Split
from recsys.evaluation.ranking import PAD_ITEM, resolve_device, topk

if TYPE_CHECKING:
    from recsys.models.base import Recommender

UNKNOWN_BLOCK = -1
"""Block label of a user or item whose block is not known; such entries are left out, never guessed."""

BlockSets = sp.spmatrix | np.ndarray
"""(n_rows, n_blocks) boolean: block b is set for row u when user u is at home in block b."""


# --------------------------------------------------------------------------- block bookkeeping
def n_blocks_of(item_blocks: np.ndarray, user_blocks: np.ndarray | None = None) -> int:
    """Number of block labels in use (labels are 0..n-1; -1 means unknown)."""
    top = int(item_blocks.max(initial=UNKNOWN_BLOCK))
    if user_blocks is not None and user_blocks.size:
        top = max(top, int(user_blocks.max()))
    return top + 1


def user_block_sets(
    history: sp.spmatrix,
    item_blocks: np.ndarray,
    user_blocks: np.ndarray | None = None,
    n_blocks: int | None = None,
) -> sp.csr_matrix:
    """(n_rows, n_blocks) bool CSR of the blocks each row's user is at home in.

    A user is at home in the blocks of the items in their `history` (rows x items) and, when
    `user_blocks` (one label per row, -1 unknown) is given, in their own block. Items of unknown
    block add nothing. Built with one sparse constructor, no loop over users.
    """
    hist = sp.csr_matrix(history)
    item_blocks = np.asarray(item_blocks, dtype=np.int64)
    if hist.shape[1] != item_blocks.shape[0]:
        raise ValueError(
            f"history has {hist.shape[1]} items but item_blocks has {item_blocks.shape[0]} labels"
        )
    n_rows = hist.shape[0]
    if n_blocks is None:
        n_blocks = n_blocks_of(item_blocks, user_blocks)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(hist.indptr))
    cols = item_blocks[hist.indices]
    if user_blocks is not None:
        user_blocks = np.asarray(user_blocks, dtype=np.int64)
        if user_blocks.shape[0] != n_rows:
            raise ValueError(f"user_blocks has {user_blocks.shape[0]} labels for {n_rows} history rows")
        rows = np.concatenate([rows, np.arange(n_rows, dtype=np.int64)])
        cols = np.concatenate([cols, user_blocks])
    known = cols >= 0
    data = np.ones(int(known.sum()), dtype=np.float32)
    sets = sp.csr_matrix((data, (rows[known], cols[known])), shape=(n_rows, max(n_blocks, 0)))
    sets.sum_duplicates()
    return sets.astype(bool)


def _home_rows(sets: BlockSets, start: int, stop: int, own: np.ndarray | None, n_blocks: int) -> np.ndarray:
    """Dense bool (stop - start, n_blocks) home-block mask for a chunk of rows (n_blocks is small).

    Always a copy: the own labels are written into it, and a caller's dense boolean matrix must not
    take them (its next use without labels would see them)."""
    chunk = sets[start:stop]
    home = chunk.toarray().astype(bool) if sp.issparse(chunk) else np.array(chunk, dtype=bool)
    if home.shape[1] < n_blocks:  # the caller's matrix may predate a block only items carry
        home = np.pad(home, ((0, 0), (0, n_blocks - home.shape[1])))
    if own is not None:
        labels = np.asarray(own[start:stop], dtype=np.int64)
        has = labels >= 0
        home[np.flatnonzero(has), labels[has]] = True
    return home


def _block_count(sets: BlockSets, item_blocks: np.ndarray, own: np.ndarray | None) -> int:
    width = int(sets.shape[1])
    return max(width, n_blocks_of(np.asarray(item_blocks), None if own is None else np.asarray(own)))


# --------------------------------------------------------------------------- ranking view
def folding_at_k(
    topk_items: np.ndarray,
    user_blocks_of_rows: np.ndarray | None,
    item_blocks: np.ndarray,
    user_item_blocks: BlockSets,
    *,
    chunk_size: int = 4096,
) -> np.ndarray:
    """Per-row share of recommended items that lie in blocks the user is not at home in.

    topk_items: (n, k) int64 item indices, padded with -1 (padding is ignored).
    user_blocks_of_rows: (n,) own block label of each row's user (-1 unknown) or None.
    item_blocks: (n_items,) block label per item (-1 unknown; such items are ignored, not counted
        as foreign, because we cannot tell).
    user_item_blocks: (n, n_blocks) bool, dense or sparse: blocks where the row's user has any
        interaction (see `user_block_sets`).
    Returns float64 (n,); NaN where the user has no known home block or no judgeable item in the list.
    """
    items = np.asarray(topk_items, dtype=np.int64)
    if items.ndim != 2:
        raise ValueError(f"topk_items must be (users, k), got shape {items.shape}")
    if user_item_blocks.shape[0] != items.shape[0]:
        raise ValueError(f"user_item_blocks has {user_item_blocks.shape[0]} rows for {items.shape[0]} lists")
    item_blocks = np.asarray(item_blocks, dtype=np.int64)
    n_blocks = _block_count(user_item_blocks, item_blocks, user_blocks_of_rows)
    out = np.full(items.shape[0], np.nan, dtype=np.float64)
    for start in range(0, items.shape[0], chunk_size):
        stop = min(start + chunk_size, items.shape[0])
        home = _home_rows(user_item_blocks, start, stop, user_blocks_of_rows, n_blocks)
        chunk = items[start:stop]
        blocks = np.where(chunk != PAD_ITEM, item_blocks[np.maximum(chunk, 0)], UNKNOWN_BLOCK)
        judgeable = blocks >= 0
        at_home = np.take_along_axis(home, np.maximum(blocks, 0), axis=1)
        foreign = (judgeable & ~at_home).sum(axis=1)
        counted = judgeable.sum(axis=1)
        ok = (counted > 0) & home.any(axis=1)
        out[start:stop][ok] = foreign[ok] / counted[ok]
    return out


def random_folding_rate(
    user_item_blocks: BlockSets,
    user_blocks_of_rows: np.ndarray | None,
    item_blocks: np.ndarray,
    exclude: sp.spmatrix | None = None,
    *,
    chunk_size: int = 4096,
) -> np.ndarray:
    """Expected `folding_at_k` of a uniformly random recommender, per row, in closed form.

    A random recommender draws its list uniformly without replacement from the items it may show
    (all items minus the row of `exclude`, aligned with `user_item_blocks`). Conditional on how many
    judgeable items it draws, the foreign count is hypergeometric, so the expected share is exactly
    (foreign allowed items) / (judgeable allowed items), whatever k is. NaN where undefined.
    """
    item_blocks = np.asarray(item_blocks, dtype=np.int64)
    n_rows, n_items = int(user_item_blocks.shape[0]), item_blocks.shape[0]
    n_blocks = _block_count(user_item_blocks, item_blocks, user_blocks_of_rows)
    known = item_blocks >= 0
    block_sizes = np.bincount(item_blocks[known], minlength=n_blocks).astype(np.float64)
    excl = None
    if exclude is not None:
        excl = sp.csr_matrix(exclude)
        if excl.shape != (n_rows, n_items):
            raise ValueError(f"exclude has shape {excl.shape}; expected (rows, items) = {(n_rows, n_items)}")
    out = np.full(n_rows, np.nan, dtype=np.float64)
    for start in range(0, n_rows, chunk_size):
        stop = min(start + chunk_size, n_rows)
        home = _home_rows(user_item_blocks, start, stop, user_blocks_of_rows, n_blocks)
        foreign = (~home).astype(np.float64) @ block_sizes
        judgeable = np.full(stop - start, block_sizes.sum())
        if excl is not None:
            part = excl[start:stop]
            rows = np.repeat(np.arange(stop - start), np.diff(part.indptr))
            blocks = item_blocks[part.indices]
            seen = blocks >= 0
            rows, blocks = rows[seen], blocks[seen]
            away = ~home[rows, blocks]
            judgeable -= np.bincount(rows, minlength=stop - start)
            foreign -= np.bincount(rows[away], minlength=stop - start)
        ok = (judgeable > 0) & home.any(axis=1)
        out[start:stop][ok] = foreign[ok] / judgeable[ok]
    return out


def popularity_topk(
    item_popularity: np.ndarray,
    n_rows: int,
    k: int,
    exclude: sp.spmatrix | None = None,
    *,
    chunk_size: int = 2048,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Top-k items by popularity for `n_rows` users with their own exclusions: the popularity
    reference for `folding_at_k`. Ranked through `ranking.topk` (a rank-1 dot product) so that the
    masking and the tie order (lower index first) are exactly the evaluator's."""
    pop = np.asarray(item_popularity, dtype=np.float32).reshape(-1, 1)
    users = np.ones((n_rows, 1), dtype=np.float32)
    items, _ = topk(users, pop, k, exclude=exclude, chunk_size=chunk_size, device=device)
    return items


# --------------------------------------------------------------------------- score view
def _unit_rows(vecs: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """L2-normalised float32 rows; all-zero rows stay zero (cosine 0 with everything)."""
    tensor = vecs if isinstance(vecs, torch.Tensor) else torch.from_numpy(np.asarray(vecs))
    tensor = tensor.detach().to(device=device, dtype=torch.float32)
    return torch.nn.functional.normalize(tensor, dim=1, eps=1e-12)


def score_folding(
    user_vecs: np.ndarray | torch.Tensor,
    item_vecs: np.ndarray | torch.Tensor,
    user_item_blocks: BlockSets,
    user_blocks_of_rows: np.ndarray | None,
    item_blocks: np.ndarray,
    *,
    chunk_size: int = 2048,
    device: str | torch.device | None = None,
) -> float:
    """The paper's score view: F = (1 / (m n)) sum_{i, j} max(0, s_ij - r_ij).

    m: number of rows of `user_vecs` whose user has at least one known home block (others have no
       defined relatedness and are skipped);
    n: number of items with a known block;
    s_ij: cosine of user i's and item j's vectors (both L2-normalised, so every model is on the
       common scale [-1, 1] whatever its norms or temperature);
    r_ij: 1 when item j's block is one of user i's home blocks, 0 otherwise (across blocks).
    Since s_ij <= 1, same-block terms are 0 and the sum runs over cross-block pairs only: F is the
    positive cosine mass the model puts on unrelated pairs, per user-item pair. 0 = unrelated pairs
    never score above orthogonal; a fully folded model approaches the cross-block share of pairs.
    """
    dev = resolve_device(device)
    item_blocks = np.asarray(item_blocks, dtype=np.int64)
    known = np.flatnonzero(item_blocks >= 0)
    if user_vecs.shape[0] != user_item_blocks.shape[0]:
        raise ValueError(
            f"user_vecs has {user_vecs.shape[0]} rows but user_item_blocks has {user_item_blocks.shape[0]}"
        )
    if known.size == 0 or user_vecs.shape[0] == 0:
        return float("nan")
    n_blocks = _block_count(user_item_blocks, item_blocks, user_blocks_of_rows)
    items_known = (
        item_vecs[torch.from_numpy(known)] if isinstance(item_vecs, torch.Tensor) else item_vecs[known]
    )
    items_t = _unit_rows(items_known, dev).T.contiguous()
    blocks_t = torch.from_numpy(item_blocks[known]).to(dev)
    total, m = 0.0, 0
    with torch.inference_mode():
        for start in range(0, int(user_vecs.shape[0]), chunk_size):
            stop = min(start + chunk_size, int(user_vecs.shape[0]))
            home = _home_rows(user_item_blocks, start, stop, user_blocks_of_rows, n_blocks)
            rows = np.flatnonzero(home.any(axis=1))
            if rows.size == 0:
                continue
            users = _unit_rows(user_vecs[start:stop], dev)[torch.from_numpy(rows).to(dev)]
            same = torch.from_numpy(home[rows]).to(dev)[:, blocks_t]  # zeroed in place: no second chunk x items
            total += float((users @ items_t).clamp_(min=0.0).masked_fill_(same, 0.0).sum(dtype=torch.float64))
            m += int(rows.size)
    return total / (m * known.size) if m else float("nan")


# --------------------------------------------------------------------------- embedding view
def _one_direction(item_vecs: np.ndarray | torch.Tensor) -> bool:
    """One-dimensional item vectors (popularity's): under cosine every item points one way, so an
    item's "nearest neighbours" are an arbitrary tie (the lowest indices) and their blocks say
    nothing about the embedding. The view is then not applicable (nan, shown as "-"), rather than
    a number that reads like a measurement, and the all-tied neighbour search (20k x 27k scores on
    an ML-20M-sized catalogue: seconds) is not run."""
    return item_vecs.ndim == 2 and int(item_vecs.shape[1]) < 2


def neighbour_cross_block(
    item_vecs: np.ndarray | torch.Tensor,
    item_blocks: np.ndarray,
    neighbours: int = 10,
    *,
    items: np.ndarray | None = None,
    max_centres: int | None = 20_000,
    seed: int = 0,
    chunk_size: int = 2048,
    device: str | torch.device | None = None,
) -> float:
    """Mean over items of the share of each item's `neighbours` nearest neighbours (cosine, the
    item itself excluded) that belong to another block.

    Only items with a known block (and in the `items` boolean mask, when given: e.g. items seen in
    training, whose vectors mean something) take part, as centres and as neighbours. Needs no
    recommender and no users: 0 = blocks are cleanly separated in embedding space; a collapsed
    space approaches the share of other-block items among the candidates. Exact search costs
    centres x items x dim, so above `max_centres` items a seeded uniform sample of centres is used
    (neighbours are still searched among all items): the mean then has a sampling error of at most
    about 0.5 / sqrt(max_centres).
    """
    item_blocks = np.asarray(item_blocks, dtype=np.int64)
    if _one_direction(item_vecs):
        return float("nan")
    take = item_blocks >= 0
    if items is not None:
        take &= np.asarray(items, dtype=bool)
    chosen = np.flatnonzero(take)
    if chosen.size < 2:
        return float("nan")
    dev = resolve_device(device)
    picked = item_vecs[torch.from_numpy(chosen)] if isinstance(item_vecs, torch.Tensor) else item_vecs[chosen]
    vecs = _unit_rows(picked, dev)
    n = int(chosen.size)
    centres = np.arange(n)
    if max_centres is not None and n > max_centres:
        centres = np.sort(np.random.default_rng(seed).choice(n, size=max_centres, replace=False))
    itself = sp.csr_matrix(
        (np.ones(centres.size, np.float32), (np.arange(centres.size), centres)), shape=(centres.size, n)
    )
    rows = vecs[torch.from_numpy(centres).to(dev)]
    nbrs, _ = topk(rows, vecs, min(neighbours, n - 1), exclude=itself, chunk_size=chunk_size, device=dev)
    blocks = item_blocks[chosen]
    valid = nbrs != PAD_ITEM
    other = (blocks[np.maximum(nbrs, 0)] != blocks[centres][:, None]) & valid
    return float(np.mean(other.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)))


def kmeans_labels(
    vectors: np.ndarray | torch.Tensor,
    n_clusters: int,
    *,
    seed: int = 0,
    n_init: int = 3,
    max_iter: int = 100,
    tolerance: float = 0.01,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Spherical k-means (cosine) labels for the rows of `vectors`, seeded and deterministic.

    Clusters on the unit sphere because retrieval compares directions; k-means++ seeding, Lloyd
    iterations as one matmul each until at most `tolerance` of the points change cluster, `n_init`
    restarts keeping the highest total cosine. The tolerance is for structureless catalogues: on
    55,000 random 64-d vectors about 1% of points still move after 40 iterations, and the 60 more
    it takes to settle raise the total cosine by under 0.6% while costing most of the time
    (clustered vectors settle in a few iterations either way). Written in
    torch rather than taken from scikit-learn to keep the dependency list as it is.
    """
    dev = resolve_device(device)
    x = _unit_rows(vectors, dev)
    n = int(x.shape[0])
    if n == 0:
        return np.empty(0, dtype=np.int64)
    k = max(1, min(n_clusters, n))
    rng = np.random.default_rng(seed)
    best_labels, best_score = None, -np.inf
    with torch.inference_mode():
        for _ in range(n_init):
            centres = _kmeanspp(x, k, rng)
            labels = torch.full((n,), -1, dtype=torch.int64, device=dev)
            for _ in range(max_iter):
                new = (x @ centres.T).argmax(dim=1)
                settled = int((new != labels).sum()) <= tolerance * n
                labels = new
                if settled:
                    break
                # one matmul with the one-hot labels: ~3x faster on CPU than index_add_'s serial scatter
                sums = torch.nn.functional.one_hot(labels, k).to(x.dtype).T @ x
                empty = sums.norm(dim=1) == 0
                if bool(empty.any()):  # re-seed empty clusters at the worst-served points
                    worst = (x * centres[labels]).sum(dim=1).argsort()[: int(empty.sum())]
                    sums[empty] = x[worst]
                centres = torch.nn.functional.normalize(sums, dim=1)
            score = float((x * centres[labels]).sum())
            if score > best_score:
                best_labels, best_score = labels, score
    return best_labels.cpu().numpy()


def _kmeanspp(x: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """k-means++ seeding with cosine distance 1 - cos (a loop over k centres, not over points)."""
    n = int(x.shape[0])
    centres = [int(rng.integers(n))]
    dist = (1.0 - x @ x[centres[0]]).clamp_(min=0.0)
    for _ in range(1, k):
        weights = dist.double().cpu().numpy()
        total = weights.sum()
        nxt = int(rng.choice(n, p=weights / total)) if total > 0 else int(rng.integers(n))
        centres.append(nxt)
        dist = torch.minimum(dist, (1.0 - x @ x[nxt]).clamp_(min=0.0))
    return x[torch.tensor(centres, device=x.device)].clone()


# --------------------------------------------------------------------------- report
@dataclass(frozen=True)
class FoldingReport:
    """Folding numbers for one model. `to_dict()` is what gets logged.

    blocks == "known": folding (mean folding@k over scored users), random and popularity (the same
    share for the two reference recommenders), score_folding and neighbour_cross are all set.
    blocks == "found": only neighbour_cross, computed on k-means clusters of the item vectors.
    """

    k: int
    neighbours: int
    blocks: Literal["known", "found"]
    neighbour_cross: float
    folding: float = float("nan")
    random: float = float("nan")
    popularity: float = float("nan")
    score_folding: float = float("nan")
    n_users: int = 0
    n_clusters: int | None = None
    users: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), repr=False)
    per_user: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    def to_dict(self) -> dict[str, float | str]:
        if self.blocks == "found":
            return {f"neighbour_cross_cluster@{self.neighbours}": self.neighbour_cross, "blocks": "found"}
        return {
            f"folding@{self.k}": self.folding,
            f"random@{self.k}": self.random,
            f"popularity@{self.k}": self.popularity,
            "score_folding": self.score_folding,
            f"neighbour_cross_block@{self.neighbours}": self.neighbour_cross,
        }


def _known(labels: np.ndarray | None) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels, dtype=np.int64)
    return labels if bool((labels >= 0).any()) else None


def folding_report_factors(
    user_vecs: np.ndarray | torch.Tensor,
    item_vecs: np.ndarray | torch.Tensor,
    eval_set: EvalSet,
    item_blocks: np.ndarray | None,
    user_blocks: np.ndarray | None = None,
    *,
    k: int = 20,
    neighbours: int = 10,
    item_popularity: np.ndarray | None = None,
    n_clusters: int = 8,
    seed: int = 0,
    chunk_size: int = 2048,
    device: str | torch.device | None = None,
) -> FoldingReport:
    """`folding_report` from raw factors: `user_vecs` has one row per evaluated user
    (`eval_set.users`, in that order), `item_vecs` one row per item.

    Users: the evaluated users of `eval_set` (those with test truth), so folding@k describes the
    very lists recall@k is computed on. A user's home blocks: the blocks of the items in their
    `eval_set.exclude` row (their known history: train, plus validation or the fold-in history) plus
    their own label when `user_blocks` knows it. Items that take part in the embedding view: those
    with positive `item_popularity` (default: interaction counts in `eval_set.exclude`), because the
    vectors of items never seen in training are initialisation noise.
    """
    users = eval_set.users
    history = sp.csr_matrix(eval_set.exclude)
    popularity = (
        np.bincount(history.indices, minlength=history.shape[1])
        if item_popularity is None
        else np.asarray(item_popularity)
    )
    if popularity.shape[0] != history.shape[1]:
        raise ValueError(f"item_popularity has {popularity.shape[0]} entries for {history.shape[1]} items")
    if user_vecs.shape[0] != users.size:
        raise ValueError(f"user_vecs has {user_vecs.shape[0]} rows for {users.size} evaluated users")
    trained = popularity > 0
    item_blocks = _known(item_blocks)
    if item_blocks is None and _one_direction(item_vecs):  # nothing to cluster: no embedding view
        return FoldingReport(
            k=k, neighbours=neighbours, blocks="found", neighbour_cross=float("nan"), n_clusters=n_clusters
        )
    if item_blocks is None:
        chosen = np.flatnonzero(trained)
        picked = (
            item_vecs[torch.from_numpy(chosen)] if isinstance(item_vecs, torch.Tensor) else item_vecs[chosen]
        )
        found = np.full(history.shape[1], UNKNOWN_BLOCK, dtype=np.int64)
        found[chosen] = kmeans_labels(picked, n_clusters, seed=seed, device=device)
        cross = neighbour_cross_block(
            item_vecs, found, neighbours, seed=seed, chunk_size=chunk_size, device=device
        )
        return FoldingReport(
            k=k, neighbours=neighbours, blocks="found", neighbour_cross=cross, n_clusters=n_clusters
        )

    if item_blocks.shape[0] != history.shape[1]:
        raise ValueError(f"item_blocks has {item_blocks.shape[0]} labels for {history.shape[1]} items")
    if user_blocks is not None and len(user_blocks) != history.shape[0]:
        raise ValueError(f"user_blocks has {len(user_blocks)} labels for {history.shape[0]} users")
    own = None if user_blocks is None else np.asarray(user_blocks, dtype=np.int64)[users]
    n_blocks = n_blocks_of(item_blocks, user_blocks)
    sets = user_block_sets(history[users], item_blocks, own, n_blocks)
    exclude = history[users]
    ranked, _ = topk(user_vecs, item_vecs, k, exclude=exclude, chunk_size=chunk_size, device=device)
    per_user = folding_at_k(ranked, None, item_blocks, sets)
    random = random_folding_rate(sets, None, item_blocks, exclude)
    popular = folding_at_k(
        popularity_topk(popularity, users.size, k, exclude, chunk_size=chunk_size, device=device),
        None,
        item_blocks,
        sets,
    )
    return FoldingReport(
        k=k,
        neighbours=neighbours,
        blocks="known",
        neighbour_cross=neighbour_cross_block(
            item_vecs, item_blocks, neighbours, items=trained, seed=seed, chunk_size=chunk_size, device=device
        ),
        folding=_nanmean(per_user),
        random=_nanmean(random),
        popularity=_nanmean(popular),
        score_folding=score_folding(
            user_vecs, item_vecs, sets, None, item_blocks, chunk_size=chunk_size, device=device
        ),
        n_users=int(np.sum(~np.isnan(per_user))),
        users=users,
        per_user=per_user,
    )


def folding_report(
    model: Recommender,
    eval_set_or_split: EvalSet | Split,
    item_blocks: np.ndarray | None = None,
    user_blocks: np.ndarray | None = None,
    *,
    k: int = 20,
    neighbours: int = 10,
    item_popularity: np.ndarray | None = None,
    n_clusters: int = 8,
    seed: int = 0,
    chunk_size: int = 2048,
    device: str | torch.device | None = None,
) -> FoldingReport:
    """Folding numbers for a fitted model on a split's test set (or any `EvalSet`).

    With a `Split`, its `test_set()` is used, block labels default to `split.item_blocks` /
    `split.user_blocks` and popularity to the train interaction counts. When no item block is known
    (None or all -1) only the embedding view on k-means clusters is reported (`blocks="found"`).
    See `folding_report_factors` for which users and items take part.
    """
    if isinstance(eval_set_or_split, Split):
        split = eval_set_or_split
        eval_set = split.test_set()
        item_blocks = split.item_blocks if item_blocks is None else item_blocks
        user_blocks = split.user_blocks if user_blocks is None else user_blocks
        if item_popularity is None:
            train = sp.csr_matrix(split.train)
            item_popularity = np.bincount(train.indices, minlength=train.shape[1])
    else:
        eval_set = eval_set_or_split
    if eval_set.truth.shape[1] != model.n_items:
        raise ValueError(f"eval set has {eval_set.truth.shape[1]} items but the model knows {model.n_items}")
    return folding_report_factors(
        model.user_vectors(eval_set, eval_set.users),
        model.item_factors,
        eval_set,
        item_blocks,
        user_blocks,
        k=k,
        neighbours=neighbours,
        item_popularity=item_popularity,
        n_clusters=n_clusters,
        seed=seed,
        chunk_size=chunk_size,
        device=device,
    )


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
