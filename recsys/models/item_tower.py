"""Siamese item tower (`kind = "item_tower"`): one shared-weight tower embeds items so that items
used by the same user are close, for item-to-item retrieval ("similar items").

Each epoch pairs every training interaction (u, i) with a partner j drawn uniformly from u's other
items (or, with `window` and interaction times, from the `window` items before and after i in u's
time order); the same tower (id embedding, optional MLP, L2 normalisation) encodes anchor, partner
and sampled negatives, and the sampled softmax with logQ correction (`recsys.losses`) pulls the
partner above the negatives, the anchor and partner masked out of the negatives. One tower, not
two: similarity must be symmetric, and an item must be its own nearest neighbour's neighbour.

On the model protocol: `item_factors` are the tower's outputs; a user (training or new) is the
L2-normalised interaction-weighted mean of their items' vectors, so `recommend` is item-based
retrieval and the model can be evaluated and served like any other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch.nn import functional as F

from recsys.data.split import EvalSet
from recsys.models.base import (
    FitCallback,
    HostVectors,
    as_user_item_csr,
    seeded_global_torch_rng,
)
from recsys.models.item_tower_config import ItemTowerConfig


class ItemTowerNetwork(torch.nn.Module):
    """id embedding -> optional MLP -> L2 normalisation; the one tower for every item."""

    def __init__(self, n_items: int, cfg: ItemTowerConfig) -> None:
        super().__init__()
        from recsys.models.two_tower import mlp, scaled_embedding

        self.ids = scaled_embedding(n_items, cfg.dim)
        self.mlp = mlp(cfg.dim, cfg.layers)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self.ids(items)), dim=-1)


def partner_positions(indptr: np.ndarray, rng: np.random.Generator, window: int | None) -> np.ndarray:
    """For every CSR position p (an interaction), the position of a partner in the same row, drawn
    uniformly among the row's other positions, or among those within `window` of p; -1 for rows of
    one item. Vectorised over all interactions."""
    lengths = np.diff(indptr)
    row = np.repeat(np.arange(lengths.size), lengths)
    start, length = indptr[:-1][row], lengths[row]
    local = np.arange(indptr[-1]) - start
    if window is None:
        offset = 1 + (rng.random(local.size) * np.maximum(length - 1, 1)).astype(np.int64)
        partner = (local + offset) % np.maximum(length, 1)
    else:
        low, high = np.maximum(local - window, 0), np.minimum(local + window, length - 1)
        span = high - low  # candidates besides p itself
        draw = low + (rng.random(local.size) * np.maximum(span, 1)).astype(np.int64)
        partner = np.where(draw >= local, draw + 1, draw)
    return np.where(length > 1, start + partner, -1)


class ItemTower(HostVectors):
    """Siamese item tower on the one model protocol (see the module docstring)."""

    kind = "item_tower"
    Config = ItemTowerConfig
    config: ItemTowerConfig

    def __init__(self, config: ItemTowerConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._items: np.ndarray | None = None
        self._users: np.ndarray | None = None

    def _fit(self, train: sp.csr_matrix, *, validation: EvalSet | None, callback: FitCallback, features: Any) -> None:
        from recsys.evaluation.ranking import torch_threads
        from recsys.losses import get_loss
        from recsys.models.sequence_tower import order_rows
        from recsys.sampling import PopularitySampler, UniformSampler, item_counts_from_csr

        cfg = self.config
        ordered = order_rows(train, self.train_times)  # time order when known (window), else index order
        items = torch.as_tensor(ordered.items)
        counts = item_counts_from_csr(train)
        sampler = (PopularitySampler(counts, cfg.num_negatives, cfg.sampler_alpha) if cfg.sampler == "popularity"
                   else UniformSampler(self.n_items, cfg.num_negatives))  # fmt: skip
        loss_fn = get_loss("sampled_softmax")
        rng = np.random.default_rng(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        with seeded_global_torch_rng(cfg.seed):
            network = ItemTowerNetwork(self.n_items, cfg)
        optimizer = torch.optim.Adam(network.parameters(), lr=cfg.lr)
        with torch_threads(cfg.threads):
            for epoch in range(1, cfg.epochs + 1):
                partner = partner_positions(ordered.indptr, rng, cfg.window)
                keep = np.flatnonzero(partner >= 0)
                order = keep[rng.permutation(keep.size)]
                total, seen = 0.0, 0
                for lo in range(0, order.size, cfg.batch_size):
                    at = torch.as_tensor(order[lo : lo + cfg.batch_size])
                    anchor, other = items[at], items[torch.as_tensor(partner[order[lo : lo + cfg.batch_size]])]
                    negatives = sampler.sample(anchor, other, generator)
                    vecs = network(torch.cat([anchor, other, negatives.items]))
                    a, b, n = vecs[: at.numel()], vecs[at.numel() : 2 * at.numel()], vecs[2 * at.numel() :]
                    hits = (negatives.items[None, :] == anchor[:, None]) | (negatives.items[None, :] == other[:, None])
                    loss = loss_fn(a, b, n, negatives.log_q, temperature=cfg.temperature, hit_mask=hits,
                                   pos_log_q=negatives.pos_log_q)  # fmt: skip
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * at.numel()
                    seen += at.numel()
                if callback(epoch, {"loss": total / max(seen, 1), "pairs": float(seen)}):
                    break
            network.eval()
            with torch.no_grad():
                self._items = network(torch.arange(self.n_items)).numpy().astype(np.float32)
        self._users = self.fold_in(train)

    def fold_in(self, histories: sp.spmatrix) -> np.ndarray:
        """L2-normalised interaction-weighted mean of the history's item vectors (0 for no history)."""
        self._check_fitted()
        from recsys.similar import unit_rows

        rows = as_user_item_csr(histories, self.n_items)
        return unit_rows(np.asarray(rows @ self.item_factors, dtype=np.float32))

    def _load_factors(self, tensors: dict[str, np.ndarray]) -> None:
        self._users = np.ascontiguousarray(tensors["user_factors"], dtype=np.float32)
        self._items = np.ascontiguousarray(tensors["item_factors"], dtype=np.float32)
