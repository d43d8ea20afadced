"""The yardstick for the two-tower benchmark: a minimal hand-written torch loop doing the same work.

Per step, exactly what `recsys.training` does for sampled softmax with shared uniform negatives:
gather user / positive / negative id embeddings, L2-normalise, one `(B, d) @ (d, N)` matmul,
logQ correction, accidental-hit masking (sorted-key lookup), cross-entropy, backward, Adam step,
and `loss.item()` (recsys reads the loss every step to catch NaN). No config, no helpers, no
checkpointing, no progress bar: whatever recsys is slower by is the cost of its structure.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch.nn import functional as F


def train_reference(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    *,
    batch_size: int,
    num_negatives: int,
    dim: int,
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
    opt = torch.optim.Adam([user_emb.weight, item_emb.weight], lr=lr)
    u_all = torch.from_numpy(users.astype(np.int64))
    i_all = torch.from_numpy(items.astype(np.int64))
    keys = torch.unique(u_all * n_items + i_all)  # sorted: "user u interacted with item j"
    log_q = -math.log(n_items)

    start = time.perf_counter()
    examples = 0
    for step, batch in enumerate(torch.split(torch.randperm(u_all.numel(), generator=gen), batch_size)):
        if max_steps is not None and step >= max_steps:
            break
        u_idx, p_idx = u_all[batch], i_all[batch]
        n_idx = torch.randint(0, n_items, (num_negatives,), generator=gen)
        u = F.normalize(user_emb(u_idx), dim=-1)
        p = F.normalize(item_emb(p_idx), dim=-1)
        n = F.normalize(item_emb(n_idx), dim=-1)
        pos = (u * p).sum(dim=1) / temperature - log_q
        neg = u @ n.T / temperature - log_q
        query = u_idx.unsqueeze(1) * n_items + n_idx.unsqueeze(0)
        hit = keys[torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)] == query
        hit |= n_idx.unsqueeze(0) == p_idx.unsqueeze(1)
        neg = neg.masked_fill(hit, -torch.inf)
        loss = (torch.logsumexp(torch.cat([pos.unsqueeze(1), neg], dim=1), dim=1) - pos).mean()
        loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        examples += batch.numel()
    return examples / (time.perf_counter() - start)
