"""WALS on Spark MLlib: the shared contract, plus what only the Spark backend can get wrong.

The key checks are closed-form ones: Spark's last half-iteration solves every user against the final
item factors, so our numpy `fold_in` of the training rows must reproduce Spark's user factors almost
exactly. That single identity pins down the confidence mapping (r = c - 1 with Spark alpha = 1), Spark's
ALS-WR regularisation (regParam * n_u) and the orientation/ordering of the collected factors.

Needs pyspark and a Java runtime; skipped (with the reason) where either is missing. One SparkSession
serves the whole module (local[2], 2 blocks each way, few iterations) and is stopped at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import threading

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import EvaluationConfig
from recsys.data.matrix import item_popularity
from recsys.data.split import EvalSet
from recsys.errors import DataError
from recsys.evaluation.evaluate import evaluate
from recsys.models import fold_in
from recsys.models.base import build_model
from recsys.models.popularity import PopularityConfig
from recsys.models.wals import WALSConfig, confidence
from recsys.models.wals_spark import (
    WALSSpark,
    WALSSparkConfig,
    spark_ratings,
    spark_session,
    stop_spark_session,
)

from .conftest import Planted
from .contract import RecommenderContract, planted_recall

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
    pytest.mark.skipif(
        shutil.which("java") is None, reason="wals_spark needs a Java runtime: no `java` on PATH"
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("pyspark") is None,
        reason="wals_spark needs pyspark (pip install 'recsys[spark]')",
    ),
]

# One block each way: on tiny data every extra block only adds Spark stages (the block count changes
# how the work is partitioned, not the solution). C1-only JIT and the serial GC halve the JVM's CPU
# time for a short-lived test JVM (measured: 35 s vs 78 s of JVM CPU for one start + 6 fits).
FAST = WALSSparkConfig(
    name="ws",
    factors=16,
    iterations=5,
    regularization=0.01,
    alpha=10.0,
    seed=3,
    num_user_blocks=1,
    num_item_blocks=1,
    spark_conf={"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"},
)


def start_in_background(items: list[pytest.Item]) -> None:
    """Called as the session's first test starts, with this module's selected tests
    (tests/conftest.py): `FAST`'s session (its JVM, ~10-15 s to start) starts in a thread while the
    tests before this module run; the first fit waits for it on `spark_session`'s lock (not niced:
    a niced JVM slowed every fit of this module on a busy machine). A failure to start is left to
    that fit, which starts the session again and reports it."""
    if shutil.which("java") is None or importlib.util.find_spec("pyspark") is None:
        return

    def start() -> None:
        with contextlib.suppress(Exception):
            spark_session(FAST)

    threading.Thread(target=start, name="spark-session-start", daemon=True).start()


@pytest.fixture(scope="module", autouse=True)
def one_spark_session():
    """Every test in this module shares the session `FAST` starts; it is stopped when they are done."""
    yield
    stop_spark_session()


class TestWALSSparkContract(RecommenderContract):
    model_config = FAST
    min_recall_at_10 = 0.45  # popularity ~0.22, random ~0.09 (see test_shared_evaluator_scores_it_...)
    min_fold_in_overlap = 0.95  # fold-in re-solves exactly what Spark's last user step solved

    # ------------------------------------------------------------------ Spark-specific, on the class's fitted model
    def test_fold_in_of_training_rows_reproduces_sparks_user_factors(
        self, model: WALSSpark, planted: Planted
    ):
        """Spark's final user update is the closed form with regParam * n_u; float32 factors, double solves."""
        folded = model.fold_in(planted.train)
        np.testing.assert_allclose(folded, model.user_factors, rtol=1e-3, atol=1e-4)

    def test_fold_in_in_many_small_chunks_equals_one_chunk(
        self, model: WALSSpark, planted: Planted, monkeypatch
    ):
        rows = planted.train[:40]
        whole = model.fold_in(rows)
        monkeypatch.setattr(fold_in, "FOLD_IN_CHUNK_BYTES", 8 * FAST.factors**2 * 7)  # 7 interactions a chunk
        assert len(fold_in.chunks(rows.indptr, FAST.factors)) == 40  # rows have 6-12 items: one a chunk
        np.testing.assert_allclose(model.fold_in(rows), whole, rtol=1e-5, atol=1e-6)

    def test_fold_in_with_implicits_constant_penalty_would_not_match(
        self, model: WALSSpark, planted: Planted
    ):
        """Guards the test above: the ALS-WR scaling is what makes it pass, not a loose tolerance."""
        rows = planted.train
        items = model.item_factors.astype(np.float64)
        conf = confidence(rows, WALSConfig(name="w", alpha=FAST.alpha))
        user = 0
        idx, c = conf[user].indices, conf[user].data.astype(np.float64)
        y = items[idx]
        lhs = items.T @ items + (y.T * (c - 1)) @ y + FAST.regularization * np.eye(FAST.factors)
        constant = np.linalg.solve(lhs, y.T @ c)
        assert not np.allclose(constant, model.user_factors[user], rtol=1e-3, atol=1e-4)

    def test_shared_evaluator_scores_it_and_recall_beats_popularity_clearly(
        self, model: WALSSpark, planted: Planted
    ):
        users = np.flatnonzero(np.diff(planted.test.indptr) > 0)
        popularity = build_model(PopularityConfig(name="pop")).fit(planted.train)
        ours = planted_recall(model.recommend(users, k=10, exclude=planted.train)[0], planted.test, users)
        floor = planted_recall(
            popularity.recommend(users, k=10, exclude=planted.train)[0], planted.test, users
        )
        assert ours > floor + 0.2, f"spark recall@10 {ours:.3f} vs popularity {floor:.3f}"

        result = evaluate(
            model,
            EvalSet(truth=planted.test, exclude=planted.train),
            EvaluationConfig(ks=[10], metrics=["recall"], bootstrap_samples=0),
            item_popularity=item_popularity(planted.train),
        )
        assert result.n_users_evaluated == users.size
        assert result.summary["recall@10"] == pytest.approx(ours, abs=1e-6)

    def test_training_records_spark_timings_and_one_step(self, model: WALSSpark):
        assert [int(h["step"]) for h in model.history] == [FAST.iterations]
        assert set(model.spark_seconds) == {"session", "transfer", "als", "collect"}
        assert all(v >= 0 for v in model.spark_seconds.values())


# ----------------------------------------------------------------------------- confidence mapping
def test_spark_is_given_confidence_minus_one_so_its_one_plus_alpha_r_is_our_confidence():
    weights = sp.csr_matrix(np.array([[0, 2, 0, 0.5], [3, 0, 0, 0]], dtype=np.float32))
    for scaling in ("linear", "log"):
        cfg = FAST.model_copy(update={"alpha": 4.0, "confidence": scaling, "eps": 0.5})
        ours = confidence(weights, WALSConfig(name="w", alpha=4.0, confidence=scaling, eps=0.5))
        r = spark_ratings(weights, cfg)
        np.testing.assert_array_equal(1.0 + 1.0 * r.data, ours.data)  # Spark: c = 1 + alpha * |r|, alpha = 1
    np.testing.assert_allclose(
        spark_ratings(weights, FAST.model_copy(update={"alpha": 4.0})).data, [8, 2, 12]
    )


def test_negative_weights_are_refused_before_spark_starts():
    with pytest.raises(DataError, match="negative"):
        WALSSpark(FAST).fit(sp.csr_matrix(np.array([[1.0, -2.0]], dtype=np.float32)))


# ----------------------------------------------------------------------------- absent users and items
def test_users_and_items_absent_from_train_get_zero_vectors(planted: Planted):
    train = planted.train.tolil()
    train[5, :] = 0  # user 5 has no history
    train[:, 7] = 0  # nobody saw item 7
    model = WALSSpark(FAST).fit(sp.csr_matrix(train))
    assert not model.user_factors[5].any() and not model.item_factors[7].any()
    assert np.abs(model.user_factors[4]).sum() > 0 and np.abs(model.item_factors[6]).sum() > 0
    assert not model.fold_in(sp.csr_matrix((2, planted.n_items), dtype=np.float32)).any()
