"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): a closed-form item-item model.

EASE learns an item x item weight matrix B with a zero diagonal that reconstructs each user's
history row from the other items: minimise `|X - X B|^2 + lambda |B|^2` subject to `diag(B) = 0`.
The solution is one inverse of the regularised Gram matrix, `P = (X^T X + lambda I)^-1`,
`B = -P / diag(P)` column-wise with the diagonal set to 0. On MovieLens-like data it is a very
strong baseline (benchmarks/peers/REPORT.md: Cornac's EASE led ML-100K's random split).

How it fits the one dot-product protocol (`recsys.models.base`): a user's score for item j is
`x_u . B[:, j]`, so

* the user vector is the user's history row `x_u` (n_items wide, after the `weighting` below),
* the item vectors are the columns of B (`item_factors = B^T`, one row per item),
* fold-in of a new user is the history row itself: EASE never trained a per-user parameter, so a
  user unseen at training time is scored exactly like a training user. That makes EASE native to
  strong generalisation (held-out users need no solve at all).

So the evaluator, the pyfunc, the folding diagnostic and the registry serve it unchanged. The price
is width: factors are n_items wide. Fitting holds two dense n_items x n_items float64 matrices
(the Gram matrix and its inverse, 16 * n_items^2 bytes: 1.6 GB at 10,000 items) and the user
vectors are n_users x n_items float32 (4 GB for 100,000 users of 10,000 items), so the model refuses,
before allocating anything, catalogues above `max_items` and data whose fit plus user vectors need
more than `max_memory_gb`, naming the factorised alternative (`kind = "wals"`, memory linear in the
catalogue). A refusal is a `ModelSkipped` (a `SetupError`): tuning stops at once instead of
repeating it every trial, and a run skips the model with a warning and goes on, exit 0 (a process
killed for memory would lose every model of the run; most real catalogues are above the bound).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.data.split import EvalSet
from recsys.errors import DataError, ModelError, ModelSkipped
from recsys.models.base import FitCallback, HostVectors, as_user_item_csr
from recsys.models.defaults import ease_l2
from recsys.models.ease_config import DEFAULT_MAX_ITEMS, DEFAULT_MAX_MEMORY_GB, EASEConfig  # noqa: F401 - re-exported


def _require_co_occurrence(rows: sp.csr_matrix, name: str) -> None:
    """EASE learns item-item weights from items that share a user; with no training user holding two
    items (a session log of single clicks, a sample of one interaction per user) every weight is 0
    and every score ties. The generic check after the fit said "training diverged ...; lower the
    learning rate (lr)", which EASE has none of: say what the data lacks instead."""
    if rows.nnz and int(np.diff(rows.indptr).max()) < 2:
        raise ModelError(
            f"model {name!r}: no training user has two or more items, so no two items co-occur and EASE's "
            "item-item weights are all zero (every score ties); it needs users with several interactions: "
            "raise data.min_user_interactions, or use a log with longer histories"
        )


def history_rows(matrix: sp.spmatrix, weighting: str, n_items: int | None = None) -> sp.csr_matrix:
    """The rows EASE reconstructs: interactions as 1 (binary), log(1 + w) or w. Negative weights
    are refused (an EASE row is an amount of interaction, not a rating offset)."""
    csr = as_user_item_csr(matrix, n_items)
    if csr.nnz and csr.data.min() < 0:
        raise DataError(
            f"ease needs non-negative interaction weights; {int(np.sum(csr.data < 0))} entries are negative"
        )
    if weighting == "binary":
        csr.data = np.ones_like(csr.data)
    elif weighting == "log":
        csr.data = np.log1p(csr.data).astype(np.float32)
    return csr


def ease_weights(rows: sp.csr_matrix, l2: float) -> np.ndarray:
    """Steck's closed form: `B = I - P diagMat(1 / diag(P))` with `P = (X^T X + l2 I)^-1`, i.e.
    `B[i, j] = -P[i, j] / P[j, j]` off the diagonal and 0 on it. float64 throughout (the inverse of a
    near-singular Gram matrix loses digits in float32), returned as float64.

    The regularised Gram matrix is symmetric positive definite, so P comes from its Cholesky factor
    (`G = U^T U`, `P = U^-1 U^-T`: a factorisation, a triangular inverse and one matrix product, all
    in place but the product) rather than a general inverse: about half the time of
    `np.linalg.inv` at 4,000 items on 2 cores, which is most of a tuning trial at 10,000 items."""
    from scipy.linalg import lapack

    gram = np.asarray((rows.T @ rows).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    upper, info = lapack.dpotrf(gram, lower=False, clean=True, overwrite_a=True)
    if info == 0:
        upper, info = lapack.dtrtri(upper, lower=False, overwrite_c=True)
    if info != 0:  # pragma: no cover - G + l2 I with l2 > 0 is positive definite unless digits are lost
        raise ModelError(f"ease: the regularised Gram matrix is not positive definite (l2={l2:g}); raise l2")
    weights = upper @ upper.T  # P, turned into B in place: two n x n matrices at the peak
    del upper
    weights /= -np.diag(weights).copy()[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


class EASE(HostVectors):
    """Closed-form item-item autoencoder on the dot-product protocol (see module docstring)."""

    kind = "ease"
    Config = EASEConfig
    config: EASEConfig
    zero_vectors_diverged = False  # closed form: an item co-occurring with no other has a zero column
    single_solve = True  # one solve; its callback comes after it

    def __init__(self, config: EASEConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._users: np.ndarray | None = None  # (n_users, n_items) history rows, float32
        self._items: np.ndarray | None = None  # (n_items, n_items) = B^T, float32

    def check_data(self, n_users: int, n_items: int) -> None:
        check_catalogue(n_items, n_users, self.config)

    def data_aware_config(self, train: sp.csr_matrix) -> EASEConfig:
        """`l2 = None` becomes `l2_scale` x the mean interactions per item (the scale of the Gram
        matrix's diagonal, which lambda is added to), at least 100."""
        if self.config.l2 is not None:
            return self.config
        return self.config.model_copy(update={"l2": ease_l2(train, self.config.l2_scale)})

    def _fit(
        self, train: sp.csr_matrix, *, validation: EvalSet | None, callback: FitCallback, features: Any
    ) -> None:
        rows = history_rows(train, self.config.weighting)
        _require_co_occurrence(rows, self.config.name)
        l2 = float(self.config.l2 or 0.0)
        with threadpool_limits(self.config.threads or None, "blas"):
            weights = ease_weights(rows, l2)
        if not np.isfinite(weights).all():  # pragma: no cover - the regularised Gram matrix is SPD
            raise ModelError(f"ease: weights are not finite (l2={l2:g}); raise l2")
        self._items = np.ascontiguousarray(weights.T, dtype=np.float32)
        self._users = np.ascontiguousarray(rows.toarray(), dtype=np.float32)
        callback(1, {"l2": l2, "nonzero_weights": float(np.count_nonzero(weights))})

    def fold_in(self, histories: sp.spmatrix) -> np.ndarray:
        """A new user's vector is their (weighted) history row: the same input training users have."""
        self._check_fitted()
        rows = history_rows(histories, self.config.weighting, self.n_items)
        return np.ascontiguousarray(rows.toarray(), dtype=np.float32)

    def _load_factors(self, tensors: dict[str, np.ndarray]) -> None:
        users, items = tensors["user_factors"], tensors["item_factors"]
        expected = ((self.n_users, self.n_items), (self.n_items, self.n_items))
        if (users.shape, items.shape) != expected:
            raise ValueError(f"ease: saved factors {users.shape}, {items.shape} do not match {expected}")
        self._users = np.ascontiguousarray(users, dtype=np.float32)
        self._items = np.ascontiguousarray(items, dtype=np.float32)


def check_catalogue(n_items: int, n_users: int, config: EASEConfig) -> None:
    """Refuse data whose dense item x item matrices, or those plus the dense user vectors, would not
    fit the configured bounds, before allocating them."""
    fit_gb = 16 * n_items**2 / 1e9
    users_gb = 4 * n_users * n_items / 1e9
    if n_items > config.max_items:
        bound = f"the catalogue is above models.{config.name}.max_items = {config.max_items:,}"
    elif fit_gb + users_gb > config.max_memory_gb:
        bound = f"together above models.{config.name}.max_memory_gb = {config.max_memory_gb:g}"
    else:
        return
    raise ModelSkipped(
        f"model {config.name!r}: ease needs dense {n_items:,} x {n_items:,} matrices to fit ({fit_gb:.1f} GB) "
        f"and {users_gb:.1f} GB of user vectors ({n_users:,} users); {bound}: raise it if the machine has the "
        'memory, or use kind = "wals" (factorised: memory linear in the catalogue)'
    )
