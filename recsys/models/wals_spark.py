"""WALS on Spark MLlib ALS: the same implicit-feedback model as `wals`, for data beyond one machine.

Training runs in Spark (`pyspark.ml.recommendation.ALS`, implicitPrefs=True); the factors are then
collected into the same dense float32 arrays every other model has, so recommending, fold-in,
evaluation, saving and serving are plain numpy and never need Spark (or Java) again.

Three differences from implicit that this module exists to get right once:

* Confidence. Spark's implicit ALS builds `c = 1 + alpha_spark * |r|` and `p = [r > 0]` from each
  rating r. We want exactly the `wals` confidence (`recsys.models.wals.confidence`: 1 + alpha * w, or
  1 + alpha * log(1 + w / eps)). So we compute our confidence c with that very function, hand Spark
  `r = c - 1` and `alpha_spark = 1`, and Spark's `1 + 1 * (c - 1)` is our c again (exactly: for a
  float32 c >= 1, c - 1 is representable). Our `alpha` therefore never reaches Spark's `alpha`
  parameter; both backends scale the same way by construction, not by convention.
* Regularisation. Spark scales the L2 penalty by the number of ratings of the row being solved
  ("ALS-WR", Zhou et al. 2008): user u gets `regParam * n_u * I`, item i gets `regParam * n_i * I`.
  implicit uses one constant `lambda * I` for every row. The same `regularization` number therefore
  means a much stronger penalty here (by the mean row length); the two are NOT comparable
  hyper-parameters, and tuned values do not transfer. `fold_in` uses Spark's scaling so that folding
  in a training row reproduces the trained user vector.
* Progress. Spark runs every iteration inside one JVM job, with no per-iteration hook and no warm
  start, so `fit` reports one step (step = iterations) when the job ends, and early stopping is not
  available: a callback that returns True has nothing left to stop.

Spark session: one per process (`spark_session`), created on first use with the configured master,
reused by later fits with the same settings, stopped by `stop_spark_session` (and at exit).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.data.split import EvalSet
from recsys.errors import ModelError, SetupError
from recsys.models.base import FitCallback, HostVectors, as_user_item_csr
from recsys.models.fold_in import least_squares_users
from recsys.models.wals import WALSConfig, confidence
from recsys.models.wals_spark_config import WALSSparkConfig

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- Spark session
_SESSION_LOCK = threading.Lock()
_SESSION: Any = None  # pyspark.sql.SparkSession
_SESSION_KEY: tuple | None = None


def _session_settings(cfg: WALSSparkConfig) -> dict[str, str]:
    """Every Spark setting we start a session with: quiet, local-only networking unless overridden."""
    settings = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if cfg.driver_memory:
        settings["spark.driver.memory"] = cfg.driver_memory
    settings.update(cfg.spark_conf)
    return settings


def spark_session(cfg: WALSSparkConfig) -> Any:
    """The process's SparkSession for `cfg.master` and settings: reused when they match, otherwise
    the old one is stopped first (Spark allows one active SparkContext per JVM)."""
    global _SESSION, _SESSION_KEY
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SetupError(
            "wals_spark needs pyspark (pip install 'recsys[spark]') and a Java 17+ runtime on PATH or JAVA_HOME"
        ) from exc
    settings = _session_settings(cfg)
    key = (cfg.master, tuple(sorted(settings.items())))
    with _SESSION_LOCK:
        if _SESSION is not None and _SESSION_KEY == key:
            return _SESSION
        if _SESSION is not None:
            _SESSION.stop()
        builder = SparkSession.builder.master(cfg.master).appName("recsys-wals-spark")
        for name, value in settings.items():
            builder = builder.config(name, value)
        try:
            session = builder.getOrCreate()
        except Exception as exc:  # py4j/JVM start failures surface as many types
            raise SetupError(f"wals_spark: could not start Spark with master {cfg.master!r}: {exc}") from exc
        session.sparkContext.setLogLevel("WARN")
        _SESSION, _SESSION_KEY = session, key
        return session


def stop_spark_session() -> None:
    """Stop the process's SparkSession (and its JVM work) if one was started; safe to call twice."""
    global _SESSION, _SESSION_KEY
    with _SESSION_LOCK:
        if _SESSION is not None:
            _SESSION.stop()
        _SESSION, _SESSION_KEY = None, None


atexit.register(stop_spark_session)


# ----------------------------------------------------------------------------- confidence mapping
def _wals_scaling(cfg: WALSSparkConfig) -> WALSConfig:
    """The `wals` config that carries our scaling settings, so `confidence()` is shared verbatim."""
    return WALSConfig(
        name=cfg.name, alpha=cfg.alpha, confidence=cfg.confidence, eps=cfg.eps, binarize=cfg.binarize
    )


def spark_ratings(matrix: sp.spmatrix, cfg: WALSSparkConfig) -> sp.csr_matrix:
    """The `rating` values Spark is given: r = c - 1 with c our confidence, to use with Spark
    alpha = 1, so that Spark's c = 1 + alpha * |r| equals `wals.confidence` cell by cell."""
    conf = confidence(matrix, _wals_scaling(cfg))
    conf.data = conf.data - np.float32(1.0)
    return conf


def _factor_frame_to_array(frame: Any, n_rows: int, rank: int) -> np.ndarray:
    """Spark's (id, features) factor DataFrame as a dense (n_rows, rank) float32 array ordered by id;
    rows Spark never saw (no ratings in train) stay zero."""
    table = frame.select("id", "features").toArrow() if hasattr(frame, "toArrow") else None
    if table is not None:
        ids = table.column("id").to_numpy()
        features = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    else:  # pragma: no cover - pyspark < 4 has no toArrow
        pdf = frame.select("id", "features").toPandas()
        ids = pdf["id"].to_numpy()
        features = np.concatenate(pdf["features"].to_numpy()) if len(pdf) else np.zeros(0)
    out = np.zeros((n_rows, rank), dtype=np.float32)
    out[ids.astype(np.int64)] = features.astype(np.float32).reshape(len(ids), rank)
    return out


# ----------------------------------------------------------------------------- model
class WALSSpark(HostVectors):
    """Weighted ALS trained by Spark MLlib; served like every other model (numpy factors)."""

    kind = "wals_spark"
    Config = WALSSparkConfig
    config: WALSSparkConfig

    def __init__(self, config: WALSSparkConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._users: np.ndarray | None = None
        self._items: np.ndarray | None = None
        self.spark_seconds: dict[str, float] = {}  # session start, data transfer, ALS fit, collect

    # ----------------------------------------------------------------- training
    def _fit(
        self, train: sp.csr_matrix, *, validation: EvalSet | None, callback: FitCallback, features: Any
    ) -> None:
        cfg = self.config
        ratings = spark_ratings(train, cfg)  # validate weights before paying for the JVM
        started = time.perf_counter()
        spark = spark_session(cfg)
        session_ready = time.perf_counter()
        frame = self._ratings_frame(spark, ratings).cache()
        frame.count()  # materialise, so the ALS timing below is training only
        data_ready = time.perf_counter()
        model = self._new_als().fit(frame)
        fitted = time.perf_counter()
        self._users = _factor_frame_to_array(model.userFactors, self.n_users, cfg.factors)
        self._items = _factor_frame_to_array(model.itemFactors, self.n_items, cfg.factors)
        frame.unpersist()
        done = time.perf_counter()
        self.spark_seconds = {
            "session": session_ready - started,
            "transfer": data_ready - session_ready,
            "als": fitted - data_ready,
            "collect": done - fitted,
        }
        if not (np.isfinite(self._users).all() and np.isfinite(self._items).all()):
            raise ModelError(
                f"wals_spark: factors became NaN/inf (regularization={cfg.regularization}, alpha={cfg.alpha}); "
                "raise regularization or lower alpha"
            )
        callback(
            cfg.iterations,
            {"seconds": fitted - data_ready, "seconds_per_iteration": (fitted - data_ready) / cfg.iterations},
        )

    def _ratings_frame(self, spark: Any, ratings: sp.csr_matrix) -> Any:
        """(user, item, rating) DataFrame from the CSR via Arrow. On a cluster with data beyond one
        machine, build this from the partitioned Parquet instead (see docs/scaling-spark.md)."""
        import pyarrow as pa

        coo = ratings.tocoo()
        table = pa.table(
            {
                "user": pa.array(coo.row.astype(np.int32)),
                "item": pa.array(coo.col.astype(np.int32)),
                "rating": pa.array(coo.data.astype(np.float32)),
            }
        )
        return spark.createDataFrame(table)

    def _new_als(self) -> Any:
        """Spark's ALS with our hyper-parameters; alpha = 1 because `spark_ratings` already scaled."""
        from pyspark.ml.recommendation import ALS

        cfg = self.config
        als = ALS(
            rank=cfg.factors,
            maxIter=cfg.iterations,
            regParam=cfg.regularization,
            implicitPrefs=True,
            alpha=1.0,
            nonnegative=False,
            seed=cfg.seed,
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            coldStartStrategy="drop",
            checkpointInterval=cfg.checkpoint_interval,
        )
        if cfg.num_user_blocks is not None:
            als.setNumUserBlocks(cfg.num_user_blocks)
        if cfg.num_item_blocks is not None:
            als.setNumItemBlocks(cfg.num_item_blocks)
        if cfg.checkpoint_dir:
            spark_session(cfg).sparkContext.setCheckpointDir(cfg.checkpoint_dir)
        return als

    # ----------------------------------------------------------------- vectors
    def fold_in(self, histories: sp.spmatrix) -> np.ndarray:
        """Exact implicit-ALS user vectors with item factors fixed, as Spark's last user step solves
        them (regParam * n_u, same confidence as training): `recsys.models.fold_in`."""
        self._check_fitted()
        rows = as_user_item_csr(histories, self.n_items)
        conf = confidence(rows, _wals_scaling(self.config))
        return least_squares_users(conf, self.item_factors, self.config.regularization, scale_by_count=True)

    # ----------------------------------------------------------------- persistence
    def _load_factors(self, tensors: dict[str, np.ndarray]) -> None:
        users, items = tensors["user_factors"], tensors["item_factors"]
        expected = ((self.n_users, self.config.factors), (self.n_items, self.config.factors))
        if (users.shape, items.shape) != expected:
            raise ValueError(
                f"wals_spark: saved factors {users.shape}, {items.shape} do not match {expected}"
            )
        self._users = np.ascontiguousarray(users, dtype=np.float32)
        self._items = np.ascontiguousarray(items, dtype=np.float32)
