"""Planted-cluster data for model tests: the right answer is known, so quality can be asserted.

Users and items are split into clusters and every user interacts only inside their own cluster,
with Zipf-like item popularity inside each cluster. A model that learns anything recommends the
user's own cluster; popularity alone cannot (the globally popular items belong to all clusters);
random ranking gets about k / n_unseen. Shapes are deliberately non-square (users != items) so a
transposed matrix fails loudly. Generated directly with numpy (no dependency on recsys.data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp

N_USERS, N_ITEMS, N_CLUSTERS = 200, 120, 4


@dataclass(frozen=True)
class Planted:
    train: sp.csr_matrix  # users x items, float32 weights in 1..5
    test: sp.csr_matrix  # held-out interactions of the same users, disjoint from train
    user_cluster: np.ndarray  # (n_users,) cluster of each user
    item_cluster: np.ndarray  # (n_items,) cluster of each item

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]


def make_planted(
    n_users: int = N_USERS,
    n_items: int = N_ITEMS,
    n_clusters: int = N_CLUSTERS,
    min_items: int = 8,
    max_items: int = 16,
    test_share: float = 0.25,
    seed: int = 0,
) -> Planted:
    """Each user picks `min_items..max_items` distinct items of their cluster (Gumbel top-k over
    popularity 1/rank^0.8) and a `test_share` of them (at least one) is held out."""
    rng = np.random.default_rng(seed)
    user_cluster = np.arange(n_users) % n_clusters
    item_cluster = rng.permutation(np.arange(n_items) % n_clusters)  # clusters interleaved in index space
    per_cluster = n_items // n_clusters
    cluster_items = np.stack([np.flatnonzero(item_cluster == c)[:per_cluster] for c in range(n_clusters)])
    log_popularity = -0.8 * np.log1p(np.arange(per_cluster))  # rank r within the cluster

    keys = log_popularity + rng.gumbel(size=(n_users, per_cluster))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    n_per_user = rng.integers(min_items, max_items + 1, size=n_users)
    chosen = rank < n_per_user[:, None]
    rows, slots = np.nonzero(chosen)
    items = cluster_items[user_cluster[rows], slots]
    weights = rng.integers(1, 6, size=rows.size).astype(np.float32)

    # hold out the `test_share` of each user's items with the smallest random key (>= 1 per user)
    order = np.lexsort((rng.random(rows.size), rows))
    position = np.empty(rows.size, dtype=np.int64)
    starts = np.r_[0, np.cumsum(n_per_user)[:-1]]
    position[order] = np.arange(rows.size) - np.repeat(starts, n_per_user)
    n_test = np.maximum(1, np.round(test_share * n_per_user)).astype(np.int64)
    is_test = position < n_test[rows]

    def csr(mask: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix(
            (weights[mask], (rows[mask], items[mask])), shape=(n_users, n_items), dtype=np.float32
        )
        m.sort_indices()
        return m

    return Planted(csr(~is_test), csr(is_test), user_cluster, item_cluster)


@pytest.fixture(scope="session")
def planted() -> Planted:
    return make_planted()
