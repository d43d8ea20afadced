"""Tiny planted-cluster logs for the two-tower loop's tests (one process and data-parallel alike).

Users and items fall in clusters and every user picks items of their own cluster only, so a tower
that learns anything recommends inside the user's cluster. Built directly with numpy; the draws
depend only on the arguments, so a test's data is the same in every process that builds it.
"""

from __future__ import annotations

import numpy as np


def cluster_picks(
    n_users: int, n_items: int, n_clusters: int, per_user: int, held_out: int = 2, seed: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user (cluster `user % n_clusters`) picks `per_user` random items of their cluster; the
    first `held_out` picks are test. Returns `(users, items, is_test)`, one entry per pick, user-major."""
    rng = np.random.default_rng(seed)
    cluster_items = rng.permutation(n_items).reshape(n_clusters, -1)
    picks = np.argsort(rng.random((n_users, cluster_items.shape[1])), axis=1)[:, :per_user]
    items = cluster_items[np.arange(n_users) % n_clusters][np.arange(n_users)[:, None], picks]
    users = np.repeat(np.arange(n_users), per_user)
    is_test = np.tile(np.arange(per_user) < held_out, n_users)
    return users, items.ravel(), is_test
