"""The yardsticks for the two-tower benchmark: minimal hand-written torch loops doing the same work.

Per step, what `recsys.training` does for sampled softmax with shared uniform negatives: gather
user and item id embeddings (positives and negatives in one lookup), L2-normalise, one
`(B, d) @ (d, N)` matmul, cross-entropy (the uniform sampler's logQ shifts every logit alike and
cancels, so the cheapest correct loop skips it; the temperature scales the (B, d) user side), backward, fused Adam step, and `loss.item()` (recsys reads the loss
every step to catch NaN). No config, no helpers, no checkpointing, no progress bar.

- `correct=True` (the reference the target is measured against) also removes accidental hits
  exactly: a negative that the example's user interacted with in training, or that is the example's
  own positive, is masked. The check is the cheapest exact one for shared candidates that we know:
  walk the CSR rows of the batch's distinct users once and look each liked item up in an
  item -> candidate-column table (O(nnz of those rows + B N), no search, no dense user x item
  matrix), then expand the small (distinct users x distinct candidates) grid to (B, N).
- `correct=False` is the plain loop: the same step with no masking at all, i.e. it trains on
  wrong negatives; it bounds what any correct loop can reach.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.nn import functional as F


class HitTable:
    """Exact "did user u interact with item j in training?" for a batch against shared candidates."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> None:
        order = np.lexsort((items, users))
        self.indices = torch.from_numpy(items[order].astype(np.int64))
        counts = np.bincount(users, minlength=n_users)
        self.indptr = torch.from_numpy(np.r_[0, np.cumsum(counts)].astype(np.int64))
        self.column = torch.full((n_items,), -1, dtype=torch.int64)  # item -> distinct-candidate slot

    def mask(self, u_idx: torch.Tensor, p_idx: torch.Tensor, n_idx: torch.Tensor) -> torch.Tensor:
        users, row_of = torch.unique(u_idx, return_inverse=True)
        candidates, col_of = torch.unique(n_idx, return_inverse=True)
        self.column[candidates] = torch.arange(candidates.numel())
        starts = self.indptr[users]
        lengths = self.indptr[users + 1] - starts
        owner = torch.repeat_interleave(torch.arange(users.numel()), lengths)
        offset = torch.arange(owner.numel()) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        slot = self.column[self.indices[starts[owner] + offset]]
        self.column[candidates] = -1  # leave the table clean for the next batch
        liked = slot >= 0
        small = torch.zeros((users.numel(), candidates.numel()), dtype=torch.bool)
        small[owner[liked], slot[liked]] = True
        return small.index_select(1, col_of).index_select(0, row_of) | (
            n_idx.unsqueeze(0) == p_idx.unsqueeze(1)
        )


def train_reference(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    *,
    batch_size: int,
    num_negatives: int,
    dim: int,
    correct: bool = True,
    lr: float = 5e-3,
    temperature: float = 0.1,
    seed: int = 0,
    max_steps: int | None = None,
) -> float:
    """One epoch over the (users, items) interactions (at most `max_steps` batches); returns examples/s."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    user_emb = torch.nn.Embedding(n_users, dim)
    item_emb = torch.nn.Embedding(n_items, dim)
    torch.nn.init.normal_(user_emb.weight, std=dim**-0.5)
    torch.nn.init.normal_(item_emb.weight, std=dim**-0.5)
    opt = torch.optim.Adam([user_emb.weight, item_emb.weight], lr=lr, fused=True)
    u_all = torch.from_numpy(users.astype(np.int64))
    i_all = torch.from_numpy(items.astype(np.int64))
    hits = HitTable(users, items, n_users, n_items) if correct else None
    # Uniform negatives: log q = -log(n_items) shifts every logit alike and cancels in the
    # softmax, so the cheapest correct loop leaves it out.
    positive_column = torch.zeros(batch_size, dtype=torch.long)

    start = time.perf_counter()
    examples = 0
    for step, batch in enumerate(torch.split(torch.randperm(u_all.numel(), generator=gen), batch_size)):
        if max_steps is not None and step >= max_steps:
            break
        u_idx, p_idx = u_all[batch], i_all[batch]
        n_idx = torch.randint(0, n_items, (num_negatives,), generator=gen)
        u = F.normalize(user_emb(u_idx), dim=-1) / temperature  # (B, d): cheaper than dividing (B, N)
        # one item lookup for positives and negatives: one dense item gradient, not two
        p, n = F.normalize(item_emb(torch.cat([p_idx, n_idx])), dim=-1).split([p_idx.numel(), num_negatives])
        neg = u @ n.T
        if hits is not None:
            neg.masked_fill_(hits.mask(u_idx, p_idx, n_idx), -torch.inf)
        logits = torch.cat([(u * p).sum(dim=1, keepdim=True), neg], dim=1)
        loss = F.cross_entropy(logits, positive_column[: batch.numel()])  # the positive is column 0
        loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        examples += batch.numel()
    return examples / (time.perf_counter() - start)
