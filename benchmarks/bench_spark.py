"""WALS on Spark MLlib ALS (`wals_spark`) vs WALS on implicit (`wals`), MovieLens 100K, same split.

What it answers: what Spark costs on one small machine (JVM start, data transfer, fixed job overhead,
time per iteration) against the single-process reference timed in the same run, and whether both
backends reach similar recall@20 with the same confidence (c = 1 + alpha * rating), factors and
iterations. Spark exists for data that does not fit one machine, so the speed ratio here is the price
of that option at small scale, not a verdict.

Protocol: the project's ingest + random 80/20 per-user split (seed 0); both models scored by the shared
evaluator (full corpus, train items masked). Spark runs in local[2] with 2 blocks each way; implicit
with 2 threads. Spark's time per iteration is (fit with N iterations - fit with 1) / (N - 1), so the
job's fixed overhead (blocking, caching, collecting) is reported apart. Regularisation is not one
number across backends (Spark scales regParam by each row's rating count, ALS-WR; implicit does not),
so Spark is run twice: with the same number, and with regParam = lambda / mean ratings per user, which
gives the average user the same penalty as implicit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ML100K_INTER
from recsys.config import DataConfig, EvaluationConfig, SplitConfig
from recsys.data.ingest import ingest
from recsys.data.matrix import item_popularity
from recsys.data.split import Split
from recsys.data.splits import split_data
from recsys.data.storage import load_processed
from recsys.evaluation.evaluate import evaluate
from recsys.files import write_text_atomic
from recsys.models.base import Recommender
from recsys.models.wals import WALS, WALSConfig

INTER = ML100K_INTER
RESULTS = Path(__file__).parent / "results" / "spark.md"
FACTORS, ITERATIONS, ALPHA, LAMBDA, SEED = 32, 10, 10.0, 0.05, 42


def load_split(path: Path = INTER) -> Split:
    """The project's own ingest (ratings kept as weights) and random 80/20 per-user split, seed 0."""
    with tempfile.TemporaryDirectory() as tmp:
        ingest(path, Path(tmp) / "ml100k", DataConfig(source=str(path), aggregate="max"))
        data = load_processed(Path(tmp) / "ml100k")
    return split_data(data, SplitConfig(protocol="random", test_fraction=0.2, seed=0))


def recall_at_20(model: Recommender, split: Split) -> float:
    result = evaluate(
        model,
        split.test_set(),
        EvaluationConfig(ks=[20], metrics=["recall"], bootstrap_samples=0),
        item_popularity=item_popularity(split.train),
    )
    return float(result.summary["recall@20"])


def main() -> None:
    if not INTER.is_file():
        print(f"skipped: {INTER.name} not found beside the repo (shared/data/ml-100k)")
        return
    if shutil.which("java") is None:
        print("skipped: no `java` on PATH (Spark needs a Java 17+ runtime)")
        return
    try:
        from recsys.models.wals_spark import WALSSpark, WALSSparkConfig, spark_session, stop_spark_session
    except ImportError:
        print("skipped: pyspark is not installed (pip install 'recsys[spark]')")
        return

    split = load_split()
    train = split.train
    per_user = train.nnz / max(1, int(np.sum(np.diff(train.indptr) > 0)))

    # the settings both backends are compared at; each adds only its own execution settings
    shared = dict(factors=FACTORS, iterations=ITERATIONS, regularization=LAMBDA, alpha=ALPHA, seed=SEED)
    implicit_cfg = WALSConfig(
        name="wals",
        **shared,
        threads=2,
        device="cpu",
        calculate_training_loss=False,
    )
    WALS(implicit_cfg).fit(train)  # warm-up
    implicit_model = WALS(implicit_cfg).fit(train)
    implicit_per_iter = implicit_model.fit_seconds / ITERATIONS
    implicit_recall = recall_at_20(implicit_model, split)
    print(f"implicit: {implicit_per_iter:.3f} s/iteration, recall@20 {implicit_recall:.4f}", flush=True)

    base = WALSSparkConfig(
        name="wals_spark",
        **shared,
        master="local[2]",
        num_user_blocks=2,
        num_item_blocks=2,
    )
    stop_spark_session()
    started = time.perf_counter()
    spark_session(base)
    jvm_seconds = time.perf_counter() - started
    one = WALSSpark(base.model_copy(update={"iterations": 1})).fit(train)  # also warms the JVM's JIT
    one = WALSSpark(base.model_copy(update={"iterations": 1})).fit(train)
    same = WALSSpark(base).fit(train)
    matched_reg = LAMBDA / per_user
    matched = WALSSpark(base.model_copy(update={"regularization": matched_reg})).fit(train)
    stop_spark_session()
    spark_per_iter = (same.spark_seconds["als"] - one.spark_seconds["als"]) / (ITERATIONS - 1)
    overhead = one.spark_seconds["als"] - spark_per_iter
    same_recall, matched_recall = recall_at_20(same, split), recall_at_20(matched, split)
    print(
        f"spark: {spark_per_iter:.3f} s/iteration, recall@20 {same_recall:.4f} / {matched_recall:.4f}",
        flush=True,
    )

    lines = [
        "## WALS on Spark MLlib ALS vs WALS on implicit",
        "",
        f"MovieLens 100K through the project's ingest, random 80/20 per-user split (seed 0): "
        f"{train.shape[0]} users x {train.shape[1]} items, {train.nnz} train ratings. "
        f"factors={FACTORS}, iterations={ITERATIONS}, c = 1 + {ALPHA:g} * rating for both. "
        "Spark local[2] (2 user x 2 item blocks), implicit CG with 2 threads; one run each after a warm-up.",
        "",
        "| | implicit (`wals`) | Spark (`wals_spark`) | ratio Spark / implicit |",
        "|---|---:|---:|---:|",
        f"| time per iteration (s) | {implicit_per_iter:.3f} | {spark_per_iter:.3f} "
        f"| {spark_per_iter / implicit_per_iter:.0f}x |",
        f"| fixed ALS job overhead per fit (s) | - | {overhead:.2f} | |",
        f"| data transfer to Spark per fit (s) | - | {same.spark_seconds['transfer']:.2f} | |",
        f"| factor collection per fit (s) | - | {same.spark_seconds['collect']:.2f} | |",
        f"| JVM / SparkSession start, once per process (s) | - | {jvm_seconds:.2f} | |",
        f"| recall@20, regularization {LAMBDA:g} (same number) | {implicit_recall:.4f} | {same_recall:.4f} | |",
        f"| recall@20, Spark regParam {matched_reg:.2e} (= {LAMBDA:g} / {per_user:.0f} ratings per user) "
        f"| {implicit_recall:.4f} | {matched_recall:.4f} | |",
        "",
        "Spark multiplies regParam by each row's rating count (ALS-WR) while implicit adds a constant "
        "lambda, so the same number is a far stronger penalty in Spark; the second recall row gives the "
        "average user implicit's penalty (items still differ). implicit uses conjugate gradient "
        "(3 steps), Spark exact Cholesky solves, so equal settings need not give equal factors. "
        f"Measured on a {os.cpu_count()}-core machine with load average {os.getloadavg()[0]:.1f} at the end "
        "(other jobs running), so absolute Spark times are inflated; Spark's per-stage scheduling overhead "
        "dominates at this size either way.",
    ]
    write_text_atomic(RESULTS, "\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
