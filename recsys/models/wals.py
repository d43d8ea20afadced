"""WALS over implicit's AlternatingLeastSquares (Hu, Koren & Volinsky 2008; CG solver of Takács et al.).

Three things about implicit 0.7.3 that this module exists to get right once:

* Confidence. implicit reads every stored matrix value as the full confidence `c_ui` (its solver adds
  `(c - 1) y yᵀ` on top of `YᵀY` and `c y` to the right-hand side; unobserved cells have c = 1, p = 0),
  and its own `alpha` only multiplies the matrix (`c = alpha * w`, with no `+ 1`). We therefore build
  the confidence matrix ourselves in `confidence()` (`c = 1 + alpha * w` or `1 + alpha * log(1 + w/eps)`)
  and always hand implicit `alpha=1.0`, which it treats as a no-op. Training and fold-in both go
  through `confidence()`, so they can never disagree.
* Orientation. `fit` takes users x items (0.7 changed this from items x users); we pass our
  users x items CSR as is and assert the factor shapes afterwards.
* Stopping. implicit's per-iteration callback cannot stop `fit`, and a second `fit` call continues
  from the current factors but re-transposes the matrix. So early stopping raises a private
  exception out of the callback: one `fit` call, one transpose, and the factors of the best
  validation evaluation are restored afterwards.
"""

from __future__ import annotations

import logging
from typing import Any

import implicit.cpu.als
import implicit.gpu
import implicit.gpu.als
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.data.matrix import item_popularity
from recsys.data.split import EvalSet
from recsys.errors import DataError, ModelError, SetupError
from recsys.models.base import FitCallback, HostVectors, as_user_item_csr
from recsys.models.defaults import wals_defaults
from recsys.models.wals_config import WALSConfig

log = logging.getLogger(__name__)

# implicit is imported above, not lazily: threadpool_limits only reaches BLAS libraries that are
# already loaded when it is entered, and implicit's extension loads its own copy of OpenBLAS.


def resolved(config: WALSConfig, train: sp.spmatrix) -> WALSConfig:
    """`config` with its data-aware defaults (None fields) filled from `train` (recsys.models.defaults)."""
    fields = ("confidence", "eps", "alpha", "regularization")
    if all(getattr(config, name) is not None for name in fields):
        return config
    found = wals_defaults(
        train, binarize=config.binarize, confidence=config.confidence, eps=config.eps, alpha=config.alpha
    )
    return config.model_copy(update={name: getattr(config, name) if getattr(config, name) is not None else found[name] for name in fields})


def confidence(matrix: sp.spmatrix, config: WALSConfig) -> sp.csr_matrix:
    """The confidence matrix implicit is fitted on: c = 1 + alpha * f(w) on observed cells.

    f(w) = w (linear) or log(1 + w / eps) (log); with `binarize`, w = 1 first. Unobserved cells stay
    unstored, which implicit reads as c = 1, p = 0. Negative weights are refused: implicit would read
    them as "disliked" and the log scaling would be undefined.
    """
    csr = as_user_item_csr(matrix)
    weights = csr.data.astype(np.float64)
    if weights.size and weights.min() < 0:
        raise DataError(
            f"WALS needs non-negative interaction weights; {int(np.sum(weights < 0))} entries are negative "
            f"(smallest {weights.min():g})"
        )
    if config.binarize:
        weights = np.ones_like(weights)
    if config.alpha is None or config.confidence is None or (config.confidence == "log" and config.eps is None):
        config = resolved(config, csr)  # a config used before any fit: resolve on this matrix
    scaled = weights if config.confidence == "linear" else np.log1p(weights / config.eps)
    data = (1.0 + config.alpha * scaled).astype(np.float32)
    return sp.csr_matrix((data, csr.indices.copy(), csr.indptr.copy()), shape=csr.shape)


class _StopTraining(Exception):
    """Raised from implicit's callback: the only way to leave its fit loop early."""


def _to_numpy(factors: Any) -> np.ndarray:
    """implicit's CPU factors are numpy; GPU ones are implicit.gpu.Matrix."""
    array = factors.to_numpy() if hasattr(factors, "to_numpy") else factors
    return np.array(array, dtype=np.float32, order="C", copy=True)  # a copy: implicit updates in place


class WALS(HostVectors):
    """Weighted ALS for implicit feedback: the baseline every neural model is compared with."""

    kind = "wals"
    Config = WALSConfig
    config: WALSConfig

    def __init__(self, config: WALSConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._als: Any = None  # implicit.cpu.als / implicit.gpu.als AlternatingLeastSquares
        self._users: np.ndarray | None = None  # float32 host copies, refreshed after training
        self._items: np.ndarray | None = None
        self.best_step: int | None = None  # iteration whose factors were kept (early stopping)

    def data_aware_config(self, train: sp.csr_matrix) -> WALSConfig:
        """None confidence / eps / alpha / regularization resolved on the training matrix."""
        return resolved(self.config, train)

    # ----------------------------------------------------------------- backend
    def _use_gpu(self) -> bool:
        available = bool(implicit.gpu.HAS_CUDA and implicit.gpu.HAS_RMM)
        if self.config.device == "cuda" and not available:
            raise SetupError(  # the same for every tuning trial: a search stops at the first
                "wals: device='cuda' but implicit has no CUDA backend here; use device='auto' or 'cpu'"
            )
        return self.config.device != "cpu" and available

    def _new_als(self) -> Any:
        """An implicit ALS object with our hyper-parameters and alpha=1 (scaling lives in `confidence`)."""
        cfg = self.config
        if self._use_gpu():
            if cfg.solver == "cholesky":
                log.warning(
                    "wals: implicit's GPU ALS has only the CG solver; using cg_steps=%d", cfg.cg_steps
                )
            als = implicit.gpu.als.AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=cfg.regularization,
                alpha=1.0,
                dtype=np.float32,
                iterations=cfg.iterations,
                calculate_training_loss=cfg.calculate_training_loss,
                random_state=cfg.seed,
            )
        else:
            als = implicit.cpu.als.AlternatingLeastSquares(
                factors=cfg.factors,
                regularization=cfg.regularization,
                alpha=1.0,
                dtype=np.float32,
                use_native=True,
                use_cg=cfg.solver == "cg",
                iterations=cfg.iterations,
                calculate_training_loss=cfg.calculate_training_loss,
                num_threads=cfg.threads,
                random_state=cfg.seed,
            )
        als.cg_steps = cfg.cg_steps
        return als

    # ----------------------------------------------------------------- training
    def _fit(
        self, train: sp.csr_matrix, *, validation: EvalSet | None, callback: FitCallback, features: Any
    ) -> None:
        cfg = self.config
        weights = confidence(train, cfg)
        evaluate_every = cfg.eval_every if validation is not None else 0
        popularity = item_popularity(train)
        best: dict[str, Any] = {"score": -np.inf, "step": None, "factors": None, "stale": 0}

        def on_iteration(iteration: int, seconds: float, loss: float | None) -> None:
            step = iteration + 1
            metrics: dict[str, float] = {"seconds": float(seconds)}
            if loss is not None:
                metrics["loss"] = float(loss)
            stop = False
            if evaluate_every and step % evaluate_every == 0:
                self._refresh_host_factors()
                score = self._validation_score(validation, popularity)
                metrics[f"val_{cfg.validation_metric}"] = score
                if score > best["score"]:
                    best.update(score=score, step=step, stale=0, factors=(self._users, self._items))
                else:
                    best["stale"] += 1
                    stop = bool(cfg.early_stopping_patience) and best["stale"] >= cfg.early_stopping_patience
            if callback(step, metrics) or stop:
                raise _StopTraining

        with threadpool_limits(1, "blas"):
            self._als = self._new_als()
            try:
                self._als.fit(weights, show_progress=False, callback=on_iteration)
            except _StopTraining:
                pass

        if best["factors"] is not None and cfg.early_stopping_patience:
            self._set_factors(*best["factors"])
            self.best_step = best["step"]
        else:
            self._refresh_host_factors()
            self.best_step = None
        if self._users.shape != (self.n_users, cfg.factors) or self._items.shape != (
            self.n_items,
            cfg.factors,
        ):
            raise ModelError(  # pragma: no cover - guards implicit's orientation across versions
                f"wals: implicit returned user factors {self._users.shape} and item factors {self._items.shape} "
                f"for a {self.n_users} x {self.n_items} matrix; orientation mismatch"
            )
        if not (np.isfinite(self._users).all() and np.isfinite(self._items).all()):
            raise ModelError(
                f"wals: factors became NaN/inf (regularization={cfg.regularization}, alpha={cfg.alpha}); "
                "raise regularization or lower alpha"
            )

    def _refresh_host_factors(self) -> None:
        """Copy implicit's current factors to float32 numpy and drop its cached Gram matrices, which
        implicit only invalidates at the start of fit (a stale YᵀY would corrupt fold-in)."""
        self._als._YtY = None
        self._als._XtX = None
        self._users = _to_numpy(self._als.user_factors)
        self._items = _to_numpy(self._als.item_factors)

    def _set_factors(self, users: np.ndarray, items: np.ndarray) -> None:
        """Point both our host copies and implicit's object at the given factors."""
        self._users = np.ascontiguousarray(users, dtype=np.float32)
        self._items = np.ascontiguousarray(items, dtype=np.float32)
        if self._use_gpu():
            self._als.user_factors = implicit.gpu.Matrix(self._users)
            self._als.item_factors = implicit.gpu.Matrix(self._items)
        else:
            self._als.user_factors = self._users.copy()
            self._als.item_factors = self._items.copy()
        self._als._YtY = None
        self._als._XtX = None

    def _validation_score(self, validation: EvalSet, popularity: np.ndarray) -> float:
        """`validation_metric` on the validation set with the host factors (shared evaluator)."""
        from recsys.evaluation.evaluate import evaluate
        from recsys.sections import EvaluationConfig

        name, _, k = self.config.validation_metric.partition("@")
        result = evaluate(
            self,
            validation,
            EvaluationConfig(ks=[int(k)], metrics=[name], bootstrap_samples=0),
            item_popularity=popularity,
        )
        return float(result.summary[self.config.validation_metric])

    # ----------------------------------------------------------------- vectors
    def fold_in(self, histories: sp.spmatrix) -> np.ndarray:
        """Exact least-squares user vectors for the given rows with item factors fixed (implicit's
        recalculate_user, Cholesky on CPU), using the same confidence scaling as training."""
        self._check_fitted()
        rows = as_user_item_csr(histories, self.n_items)
        if rows.shape[0] == 0:
            return np.zeros((0, self.config.factors), dtype=np.float32)
        weights = confidence(rows, self.config)
        with threadpool_limits(1, "blas"):
            vectors = self._als.recalculate_user(np.arange(rows.shape[0]), weights)
        return _to_numpy(vectors).reshape(rows.shape[0], self.config.factors)

    # ----------------------------------------------------------------- persistence
    def _load_factors(self, tensors: dict[str, np.ndarray]) -> None:
        users, items = tensors["user_factors"], tensors["item_factors"]
        expected = ((self.n_users, self.config.factors), (self.n_items, self.config.factors))
        if (users.shape, items.shape) != expected:
            raise ValueError(f"wals: saved factors {users.shape}, {items.shape} do not match {expected}")
        with threadpool_limits(1, "blas"):
            self._als = self._new_als()
        self._set_factors(users, items)
