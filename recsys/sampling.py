"""Negative samplers for two-tower training: which items a batch is contrasted against, and how likely each was.

Why log-probabilities travel with the items: a sampled loss is an estimate of a full-corpus loss, and
the estimate is biased towards whatever the sampler over-draws (popular items under in-batch sampling).
Subtracting `log q` from each logit (Yi et al. 2019, "Sampling-bias-corrected neural modeling") removes
that bias, and NCE (Gutmann & Hyvarinen 2010) needs `q` by definition. So every sampler returns a
`Negatives` with, for each candidate, `log_q` = the log of the *per-draw* probability of that item under
the sampler's distribution, and `pos_log_q` = the same quantity for each batch positive. Convention:
`num_candidates * q(j)` is the expected number of times item j appears in one row of candidates, so
`log(k q)` in NCE is the log expected count.

Shapes: `items` is `(N,)` when one candidate set is shared by the whole batch (one matmul) or `(B, N)`
when each example has its own. Candidates that are the batch's own positives (in-batch and mixed
sampling) come first, and `Negatives.in_batch` says how many such columns there are: column i of them is
example i's positive, which losses receive separately, so that "diagonal" must be masked (see
`negative_mask`). Other hits (a candidate the user interacted with in training) are "accidental hits";
`accidental_hit_mask` finds them with a vectorised sorted-key lookup.

Randomness: every draw uses the `torch.Generator` passed to `sample`, so the same seed gives the same
negatives. Draws happen on the generator's device and are returned on `pos_idx`'s device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from recsys.errors import ConfigError

if TYPE_CHECKING:  # the model module imports this one; avoid the cycle at runtime
    from recsys.models.two_tower import TwoTowerConfig

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps user indices `(B,)` to current-model scores against every item `(B, n_items)`; used without grad."""


@dataclass(frozen=True)
class Negatives:
    """Candidate negatives for one batch and the log-probability with which each was drawn.

    items: `(N,)` shared across the batch or `(B, N)` per example (int64 item indices).
    log_q: same shape as `items`; log per-draw probability of each candidate under the sampler.
    pos_log_q: `(B,)`; the same quantity for each batch positive (Yi et al. correct the positive too).
    in_batch: how many leading columns are the batch positives themselves (column i = example i's
        positive); these must be masked on the diagonal because losses get the positive separately.
    has_positives: every example's positive is among the candidates (the full catalogue,
        `AllItemsSampler`): the column equal to each example's positive must be masked whether or not
        accidental hits are removed, or the positive would count twice in a softmax's denominator.
    """

    items: torch.Tensor
    log_q: torch.Tensor
    pos_log_q: torch.Tensor
    in_batch: int = 0
    has_positives: bool = False

    @property
    def shared(self) -> bool:
        """True when one candidate set serves every example (scores are one `(B, d) @ (d, N)` matmul)."""
        return self.items.dim() == 1

    @property
    def num(self) -> int:
        """Candidates per example."""
        return int(self.items.shape[-1])

    def to(self, device: torch.device | str) -> Negatives:
        return Negatives(
            self.items.to(device), self.log_q.to(device), self.pos_log_q.to(device), self.in_batch,
            self.has_positives,
        )  # fmt: skip


class Sampler(Protocol):
    """Draws negatives for a batch of (user, positive item) pairs."""

    def sample(self, user_idx: torch.Tensor, pos_idx: torch.Tensor, generator: torch.Generator) -> Negatives:
        """Return candidates for users `user_idx` `(B,)` whose positives are `pos_idx` `(B,)`."""
        ...


def item_counts_from_csr(train: sp.spmatrix) -> np.ndarray:
    """Interactions per item (non-zeros per column): the stream frequency a batch of interactions samples from."""
    csr = sp.csr_matrix(train)
    csr.eliminate_zeros()
    return np.asarray(csr.getnnz(axis=0), dtype=np.int64)


def _shape(batch: int, num: int, shared: bool) -> tuple[int, ...]:
    return (num,) if shared else (batch, num)


class UniformSampler:
    """Every item equally likely: q = 1/n. The unbiased baseline; rarely hard enough late in training."""

    def __init__(self, n_items: int, num: int, shared: bool = True) -> None:
        if n_items <= 0:
            raise ConfigError(f"uniform sampler needs at least one item, got n_items={n_items}")
        self.n_items, self.num, self.shared = n_items, num, shared
        self.log_q_value = -math.log(n_items)

    def sample(self, user_idx: torch.Tensor, pos_idx: torch.Tensor, generator: torch.Generator) -> Negatives:
        shape = _shape(pos_idx.shape[0], self.num, self.shared)
        items = torch.randint(0, self.n_items, shape, generator=generator, device=generator.device)
        items = items.to(pos_idx.device)
        log_q = torch.full(shape, self.log_q_value, device=pos_idx.device)
        return Negatives(items, log_q, torch.full(pos_idx.shape, self.log_q_value, device=pos_idx.device))


class AllItemsSampler:
    """No sampling: every item of the catalogue is a candidate for every example, one shared `(n,)`
    set, so a softmax loss is the full-catalogue cross-entropy (SASRec trained this way beats its
    sampled variants by a wide margin: Klenitskiy & Vasilev 2023). Affordable while `B x n` logits
    fit a step (ML-100K: ~800 targets x 1.7k items). Each item is drawn exactly once per row, so
    q = 1/n for every candidate and positive: the logQ correction is a constant shift, which a
    softmax ignores. The positive itself is a candidate (`has_positives`): the loop masks its column.
    `num_negatives` is ignored."""

    def __init__(self, n_items: int) -> None:
        if n_items <= 0:
            raise ConfigError(f"all-items sampler needs at least one item, got n_items={n_items}")
        self.n_items = n_items
        self.log_q_value = -math.log(n_items)

    def sample(self, user_idx: torch.Tensor, pos_idx: torch.Tensor, generator: torch.Generator) -> Negatives:
        items = torch.arange(self.n_items, device=pos_idx.device)
        log_q = torch.full((self.n_items,), self.log_q_value, device=pos_idx.device)
        pos_log_q = torch.full(pos_idx.shape, self.log_q_value, device=pos_idx.device)
        return Negatives(items, log_q, pos_log_q, has_positives=True)


class PopularitySampler:
    """q(j) proportional to count_j ** alpha (word2vec's unigram^0.75): harder than uniform, cheap.

    Items with zero count are never drawn (log q = -inf) when alpha > 0; they have no training signal.
    Draws use `torch.multinomial` with replacement; `log_q` is the exact log-probability.
    """

    def __init__(self, item_counts: np.ndarray, num: int, alpha: float = 0.75, shared: bool = True) -> None:
        counts = np.asarray(item_counts, dtype=np.float64)
        if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
            raise ConfigError("popularity sampler needs a 1-D array of non-negative item counts")
        weights = counts**alpha  # 0 ** 0 == 1: alpha=0 is uniform over all items
        if weights.sum() <= 0:
            raise ConfigError("popularity sampler: every item has zero count")
        probs = weights / weights.sum()
        self.num, self.shared, self.alpha = num, shared, alpha
        self.probs = torch.as_tensor(probs, dtype=torch.float64)
        with np.errstate(divide="ignore"):
            self.log_probs = torch.as_tensor(np.log(probs), dtype=torch.float32)
        self._probs_on: dict[torch.device, torch.Tensor] = {}

    def _probs(self, device: torch.device) -> torch.Tensor:
        if device not in self._probs_on:
            self._probs_on[device] = self.probs.to(device)
        return self._probs_on[device]

    def log_prob(self, items: torch.Tensor) -> torch.Tensor:
        """Exact log q of any item indices (same shape, on the items' device)."""
        return self.log_probs.to(items.device)[items]

    def sample(self, user_idx: torch.Tensor, pos_idx: torch.Tensor, generator: torch.Generator) -> Negatives:
        shape = _shape(pos_idx.shape[0], self.num, self.shared)
        n_draws = math.prod(shape)
        if n_draws == 0:
            items = torch.empty(shape, dtype=torch.long, device=pos_idx.device)
        else:
            flat = torch.multinomial(
                self._probs(generator.device), n_draws, replacement=True, generator=generator
            )
            items = flat.view(shape).to(pos_idx.device)
        return Negatives(items, self.log_prob(items), self.log_prob(pos_idx))


class InBatchSampler:
    """The batch's own positives are the negatives (no extra item-tower passes).

    Batches are drawn from the interaction stream, so item j appears with its empirical frequency
    p_j = count_j / total; that is the `log_q` (Yi et al. 2019 estimate it by streaming; here it is
    exact from the training counts). Candidates are the `(B,)` positives, shared by the batch, and all B
    columns are `in_batch` (column i is example i's positive and must be masked for example i).
    """

    def __init__(self, item_counts: np.ndarray) -> None:
        counts = np.asarray(item_counts, dtype=np.float64)
        if counts.ndim != 1 or counts.sum() <= 0:
            raise ConfigError("in-batch sampler needs a 1-D array of item counts with a positive total")
        with np.errstate(divide="ignore"):
            self.log_probs = torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32)

    def log_prob(self, items: torch.Tensor) -> torch.Tensor:
        return self.log_probs.to(items.device)[items]

    def sample(self, user_idx: torch.Tensor, pos_idx: torch.Tensor, generator: torch.Generator) -> Negatives:
        log_q = self.log_prob(pos_idx)
        return Negatives(pos_idx, log_q, log_q, in_batch=int(pos_idx.shape[0]))


class MixedSampler:
    """Mixed negative sampling (Yang et al. 2020): the B in-batch positives plus `num` uniform items.

    In-batch negatives are all popular; the uniform ones cover the long tail that in-batch sampling
    never shows the model. Because both sources put candidates in the same softmax, the correct `q` for
    every candidate is the mixture: expected count of j in a row is `B p_j + num / n`, so the per-draw
    `q_mix(j) = (B p_j + num / n) / (B + num)` (the convention of this module). This is exact for the
    design, and it is what the logQ correction needs; using each source's own q would over-correct items
    that both sources can draw.
    """

    def __init__(self, item_counts: np.ndarray, num: int, shared: bool = True) -> None:
        counts = np.asarray(item_counts, dtype=np.float64)
        if counts.ndim != 1 or counts.sum() <= 0:
            raise ConfigError("mixed sampler needs a 1-D array of item counts with a positive total")
        self.n_items, self.num, self.shared = counts.size, num, shared
        self.freq = torch.as_tensor(counts / counts.sum(), dtype=torch.float64)

    def log_prob(self, items: torch.Tensor, batch_size: int) -> torch.Tensor:
        """log q_mix of any items for a batch of `batch_size` positives."""
        freq = self.freq.to(items.device)[items]
        expected = batch_size * freq + self.num / self.n_items
        return torch.log(expected / (batch_size + self.num)).float()

    def sample(self, user_idx: torch.Tensor, pos_idx: torch.Tensor, generator: torch.Generator) -> Negatives:
        batch = int(pos_idx.shape[0])
        shape = _shape(batch, self.num, self.shared)
        uniform = torch.randint(0, self.n_items, shape, generator=generator, device=generator.device)
        uniform = uniform.to(pos_idx.device)
        in_batch = pos_idx if self.shared else pos_idx.unsqueeze(0).expand(batch, batch)
        items = torch.cat([in_batch, uniform], dim=-1)
        return Negatives(items, self.log_prob(items, batch), self.log_prob(pos_idx, batch), in_batch=batch)


class HardNegativeSampler:
    """Negatives mined from the current model: `num` draws uniform among each user's top-k non-positives.

    `score_fn(user_idx) -> (B, n_items)` gives the current model's scores (called under no_grad, fresh
    every batch, so the hard set follows the model). The user's training positives and the batch
    positive are excluded before top-k. Negatives are per example `(B, num)`, whatever `shared` says.
    `log_q = -log k_u` (k_u = k, or fewer when the user has fewer non-positive items): this is the exact
    probability *given* the top-k set, but the set itself depends on the model, so the logQ correction
    is only an approximation here (it is a constant shift per row, i.e. a no-op for softmax losses).
    Set `score_fn` after constructing the model if it is not available at build time.
    """

    def __init__(
        self, n_items: int, num: int, k: int, train: sp.spmatrix, score_fn: ScoreFn | None = None
    ) -> None:
        self.n_items, self.num = n_items, num
        self.k = min(k, n_items)
        self.train = sp.csr_matrix(train)
        self.train.eliminate_zeros()
        self.score_fn = score_fn

    def sample(self, user_idx: torch.Tensor, pos_idx: torch.Tensor, generator: torch.Generator) -> Negatives:
        if self.score_fn is None:
            raise ConfigError(
                "hard-negative sampler has no score_fn; set sampler.score_fn to the model's scorer"
            )
        batch = int(user_idx.shape[0])
        with torch.no_grad():
            scores = self.score_fn(user_idx).detach().float().clone()
        device = scores.device
        sub = self.train[user_idx.cpu().numpy()]
        rows = torch.as_tensor(np.repeat(np.arange(batch), np.diff(sub.indptr)), device=device)
        cols = torch.as_tensor(sub.indices.astype(np.int64), device=device)
        scores[rows, cols] = -torch.inf
        scores[torch.arange(batch, device=device), pos_idx.to(device)] = -torch.inf
        top_scores, top_items = torch.topk(scores, self.k, dim=1)
        k_row = torch.isfinite(top_scores).sum(dim=1).clamp(min=1)  # fewer than k non-positives: shrink
        u = torch.rand((batch, self.num), generator=generator, device=generator.device).to(device)
        pick = (u * k_row.unsqueeze(1)).long().clamp(max=self.k - 1)
        items = torch.gather(top_items, 1, pick).to(pos_idx.device)
        log_k = -torch.log(k_row.float()).to(pos_idx.device)
        return Negatives(items, log_k.unsqueeze(1).expand(batch, self.num).contiguous(), log_k)


class PositiveLookup:
    """Membership test "did user u interact with item j in training?" for whole (B, N) grids at once.

    Two vectorised paths, same answer:
    - shared candidates `(N,)` (the common case): walk the batch users' CSR rows, look each item up
      in an item -> candidate-column table, then scatter True into the grid. Work is O(nnz of the
      distinct batch users + B N + n_items) with no search at all; the grid search below cost ~0.7 s
      per mask at B = 4096, N = 1024 on ML-100K and dominated the training step.
    - per-example candidates `(B, N)`: keys `u * n_items + j` are sorted once and the grid is one
      `torch.searchsorted`, O(B N log nnz).
    Tensors are copied to the query's device once and cached there (`keys` may also be moved by hand).
    """

    def __init__(self, train: sp.spmatrix) -> None:
        csr = sp.csr_matrix(train)
        csr.eliminate_zeros()
        n_users, self.n_items = csr.shape
        rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(csr.indptr))
        keys = rows * self.n_items + csr.indices.astype(np.int64)
        if not csr.has_canonical_format:  # sorted, duplicate-free rows give sorted unique keys already
            keys = np.unique(keys)
        self.keys = torch.as_tensor(keys, dtype=torch.long)
        self.indptr = torch.as_tensor(csr.indptr.astype(np.int64))
        self.indices = torch.as_tensor(csr.indices.astype(np.int64))
        self._csr_on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _csr(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._csr_on:
            self._csr_on[device] = (self.indptr.to(device), self.indices.to(device))
        return self._csr_on[device]

    def contains(self, user_idx: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Bool `(B, N)`: item `items[b, n]` (or `items[n]` when 1-D) is a training positive of `user_idx[b]`."""
        if items.dim() == 1:
            return self.contains_shared(user_idx, items)
        return self.contains_by_search(user_idx, items)

    def contains_by_search(self, user_idx: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The sorted-key search for any `(N,)` or `(B, N)` grid: one searchsorted over B x N keys."""
        keys_sorted = self.keys.to(items.device)
        grid = items.unsqueeze(0) if items.dim() == 1 else items
        query = user_idx.to(items.device).long().unsqueeze(1) * self.n_items + grid
        if keys_sorted.numel() == 0:
            return torch.zeros(query.shape, dtype=torch.bool, device=items.device)
        where = torch.searchsorted(keys_sorted, query).clamp(max=keys_sorted.numel() - 1)
        return keys_sorted[where] == query

    def contains_shared(self, user_idx: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Bool `(B, N)` for one candidate list `(N,)` shared by the batch, from the users' CSR rows.

        Users and candidates are deduplicated first (a batch of interactions repeats active users;
        samplers draw with replacement), the small `(distinct users, distinct candidates)` grid is
        filled from the rows' positives, then expanded back to `(B, N)` by gathering columns and rows.
        """
        device = items.device
        batch = int(user_idx.shape[0])
        if items.numel() == 0 or batch == 0:
            return torch.zeros((batch, items.numel()), dtype=torch.bool, device=device)
        indptr, indices = self._csr(device)
        users, user_row = torch.unique(user_idx.to(device).long(), return_inverse=True)
        candidates, candidate_col = torch.unique(items.long(), return_inverse=True)  # sorted
        starts = indptr[users]
        lengths = indptr[users + 1] - starts
        total = int(lengths.sum())
        owner = torch.repeat_interleave(
            torch.arange(users.numel(), device=device), lengths, output_size=total
        )
        # position of each of the owners' positives in `indices`: row start + rank within the row
        first_of_owner = torch.cumsum(lengths, 0) - lengths
        liked = indices[starts[owner] + torch.arange(total, device=device) - first_of_owner[owner]]
        col, hit = candidate_columns(liked, candidates, self.n_items)
        small = torch.zeros((users.numel(), candidates.numel()), dtype=torch.bool, device=device)
        small[owner[hit], col[hit]] = True
        # columns first on the small grid, then whole-row copies: ~10x faster than one 2-D gather
        return small.index_select(1, candidate_col).index_select(0, user_row)


def candidate_columns(
    liked: torch.Tensor, candidates: torch.Tensor, n_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each liked item its column among the sorted distinct `candidates`, and whether it is one.

    An item -> column table makes this one gather per liked item; a searchsorted over the candidates
    cost ~10 ms a batch at ~500k liked items (a 5M-interaction set) and was the training loop's
    largest overhead over a hand-written one. The table is O(n_items) per call (~30 us at 50k
    items; built per call so one lookup may serve concurrent callers), so when the catalogue is
    much larger than the batch's liked items (millions of items) the search is the cheaper one."""
    if n_items <= TABLE_LOOKUP_RATIO * liked.numel():
        slot = torch.full((n_items,), -1, dtype=torch.int64, device=liked.device)
        slot[candidates] = torch.arange(candidates.numel(), device=liked.device)
        col = slot[liked]
        return col, col >= 0
    col = torch.searchsorted(candidates, liked).clamp_max(candidates.numel() - 1)
    return col, candidates[col] == liked


TABLE_LOOKUP_RATIO = 8
"""`candidate_columns` builds its item table while n_items <= this x the liked items looked up."""


def accidental_hit_mask(
    user_idx: torch.Tensor,
    pos_idx: torch.Tensor,
    neg_items: torch.Tensor,
    positives: PositiveLookup | sp.spmatrix,
) -> torch.Tensor:
    """Bool `(B, N)`: True where a negative is the example's positive or any training positive of its user.

    Such a candidate is not a negative at all; leaving it in pushes the model away from a true item.
    Note that in-batch columns hit on their diagonal too, so this mask also covers `in_batch` columns.
    """
    lookup = positives if isinstance(positives, PositiveLookup) else PositiveLookup(positives)
    return lookup.contains(user_idx, neg_items) | own_positive_mask(pos_idx, neg_items)


def own_positive_mask(pos_idx: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Bool `(B, N)`: candidate n is example b's own positive (candidates `(N,)` or `(B, N)`)."""
    grid = candidates.unsqueeze(0) if candidates.dim() == 1 else candidates
    return grid == pos_idx.unsqueeze(1)


def batch_positive_mask(negatives: Negatives, batch_size: int) -> torch.Tensor | None:
    """Bool `(B, N)` marking column i < `in_batch` for row i (the example's own positive); None if none."""
    if negatives.in_batch == 0:
        return None
    n = negatives.num
    eye = torch.zeros((batch_size, n), dtype=torch.bool, device=negatives.items.device)
    diag = torch.arange(min(batch_size, negatives.in_batch), device=eye.device)
    eye[diag, diag] = True
    return eye


def negative_mask(
    user_idx: torch.Tensor,
    pos_idx: torch.Tensor,
    negatives: Negatives,
    positives: PositiveLookup | None = None,
) -> torch.Tensor | None:
    """The `hit_mask` to hand a loss: the in-batch diagonal always, the positive's own column when the
    candidates contain it (`has_positives`), accidental hits when `positives` is given.

    Returns None when nothing needs masking (losses then skip the masking work).
    """
    mask = batch_positive_mask(negatives, int(pos_idx.shape[0]))
    if negatives.has_positives:
        own = own_positive_mask(pos_idx, negatives.items)
        mask = own if mask is None else mask | own
    if positives is not None:
        hits = accidental_hit_mask(user_idx, pos_idx, negatives.items, positives)
        hits = hits.expand(int(pos_idx.shape[0]), negatives.num)
        mask = hits if mask is None else mask | hits
    return mask


def build_sampler(
    cfg: TwoTowerConfig,
    item_counts: np.ndarray,
    train: sp.spmatrix,
    *,
    score_fn: ScoreFn | None = None,
) -> Sampler:
    """The sampler a two-tower config asks for.

    `mixed` draws `round(mixed_uniform_fraction * num_negatives)` uniform items on top of the B in-batch
    positives (at least one when the fraction is positive). `hard` ignores `shared_negatives`; `all`
    (the full catalogue as candidates) ignores `num_negatives` and `shared_negatives`.
    """
    n_items = int(np.asarray(item_counts).shape[0])
    num, shared = cfg.num_negatives, cfg.shared_negatives
    match cfg.sampler:
        case "uniform":
            return UniformSampler(n_items, num, shared)
        case "popularity":
            return PopularitySampler(item_counts, num, cfg.sampler_alpha, shared)
        case "in_batch":
            return InBatchSampler(item_counts)
        case "mixed":
            n_uniform = round(cfg.mixed_uniform_fraction * num)
            if cfg.mixed_uniform_fraction > 0:
                n_uniform = max(1, n_uniform)
            return MixedSampler(item_counts, n_uniform, shared)
        case "all":
            return AllItemsSampler(n_items)
        case "hard":
            return HardNegativeSampler(n_items, num, cfg.hard_negative_k, train, score_fn)
    raise ConfigError(f"unknown sampler {cfg.sampler!r}")
