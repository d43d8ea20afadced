"""Re-scoring the champion on the current split, as deployed, so a scheduled run can compare it with
the challenger on the same users and pairs.

A scheduled pipeline ingests new data every run, so the fingerprint and the split change every run
and a same-split rule alone would never promote again. The vocab is append-only (old user/item
indices never move, new ones are appended), so the champion's saved model (`saved_model/` of its
run) can be scored on the challenger's split "as deployed":

* items the champion never trained on - appended since, or without a training row in its own split -
  are masked from its rankings (`deployed_eval_set`), exactly what its serving index does
  (`recsys.tracking.pyfunc`: it never returns an item it has no trained vector for); appended items
  get zero vectors, which the mask makes moot;
* users it learned (a training row in its own split: `user_has_vector` of its serving artifacts)
  keep their learned vectors; other users - appended since, or cold in its split - are folded in
  from their current training history restricted to the items it knows (`model.fold_in`), as its
  pyfunc would serve them; protocols with fold-in histories (strong generalisation) fold in every
  evaluated user, as the evaluator does.

Only the warm test users of the split are scored (`recsys.evaluation.cold`), the challenger's
metric users. The re-evaluation refuses (TrackingError with the reason) when the saved model is
missing or of an unknown kind, or when the champion's vocab (from its pyfunc's serving artifacts)
is not a prefix of the current one - then indices no longer mean the same ids. It also counts the
current test interactions the champion saw (its serving artifacts' seen matrix): the promotion rule
refuses to compare on leaked pairs. The champion's re-evaluated summary is logged on the
challenger's run as `champion_<metric>` (e.g. `champion_recall_at_20`), visible in MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import TrackingError
from recsys.files import scratch_dir
from recsys.tracking.runs import PER_USER_ARTIFACT, PYFUNC_ARTIFACT, with_retries
from recsys.tracking.store import metric_key

if TYPE_CHECKING:
    import polars as pl
    from mlflow import MlflowClient

    from recsys.config import EvaluationConfig
    from recsys.data.split import EvalSet, Split
    from recsys.models.base import Recommender

TAG_CHAMPION_REEVALUATED = "recsys.promotion.champion_reevaluated"  # the champion's run id
SAVED_MODEL_ARTIFACT = "model/artifacts/serving/model"  # the one `model.save` of a logged model
LEGACY_SAVED_MODEL_ARTIFACT = "saved_model"  # runs logged before the factors were stored once
CHAMPION_METRIC_PREFIX = "champion_"


def load_per_user(client: MlflowClient, run_id: str) -> Any:
    """The run's per-user metrics table (polars), or TrackingError naming the run."""
    import polars as pl

    with scratch_dir("recsys-per-user") as tmp:
        try:
            path = client.download_artifacts(run_id, PER_USER_ARTIFACT, tmp)
        except Exception as exc:
            raise TrackingError(f"run {run_id} has no {PER_USER_ARTIFACT} artifact ({exc})") from None
        return pl.read_parquet(Path(path))


def paired_values(champion: Any, challenger: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(challenger, champion) per-user values of `metric` for the users both evaluated, aligned by user_id."""
    for name, frame in (("champion", champion), ("challenger", challenger)):
        if metric not in frame.columns:
            raise TrackingError(f"{name} per-user metrics have no column {metric!r}; have {frame.columns}")
    joined = challenger.select("user_id", metric).join(
        champion.select("user_id", metric), on="user_id", how="inner", suffix="_champion"
    )
    return (
        joined.get_column(metric).to_numpy().astype(np.float64),
        joined.get_column(f"{metric}_champion").to_numpy().astype(np.float64),
    )


def coverage_metric(metric: str) -> str:
    """coverage at the promotion metric's k: "recall@20" -> "coverage@20"."""
    _, _, k = metric.partition("@")
    return f"coverage@{k}" if k else "coverage"


@dataclass(frozen=True)
class ChampionReevaluation:
    """The champion scored on the challenger's split, as deployed (see the module docstring).

    per_user has the per-user artifact's layout (user_id, user_idx, one column per metric), so the
    rule pairs it with the challenger's exactly as it pairs two logged runs."""

    run_id: str
    summary: dict[str, float]
    per_user: pl.DataFrame
    n_users: int
    n_new_items: int  # items of the current vocab the champion has no vector for (they score 0)
    n_folded_in: int  # evaluated users scored through fold_in (no learned vector, or the protocol's)
    n_test_seen: int | None = None  # current test interactions the champion saw in training (None: unknown)
    n_test: int = 0  # current test interactions

    def note(self) -> str:
        """The clause the decision's reason carries."""
        return f"champion re-evaluated on the current split ({self.n_users} users)"

    def leak(self) -> str | None:
        """Why the comparison would be on leaked data (None when it would not)."""
        if self.n_test_seen is None:
            return "the champion's training pairs are unknown (its run has no serving artifacts), so a leak cannot be ruled out"
        if self.n_test_seen:
            share = self.n_test_seen / max(self.n_test, 1)
            return (
                f"{self.n_test_seen} of the {self.n_test} test interactions ({share:.1%}) were in the champion's "
                "training data (the split changed - another seed or protocol - or a leave_last_n split moved a "
                "repeated pair into test)"
            )
        return None


def vocab_strings(ids: np.ndarray | None, n: int) -> np.ndarray:
    """Raw ids as strings, as the serving artifacts store them (index strings without a vocab)."""
    if ids is None or len(ids) == 0:
        return np.arange(n).astype(str)
    return np.asarray(ids).astype(str)


def load_run_model(client: MlflowClient, run_id: str, directory: Path) -> Recommender:
    """The run's saved model (`saved_model/` artifact), or TrackingError saying why not."""
    from recsys.models.base import Recommender

    try:
        path = client.download_artifacts(run_id, SAVED_MODEL_ARTIFACT, str(directory))
    except Exception as exc:
        try:
            path = client.download_artifacts(run_id, LEGACY_SAVED_MODEL_ARTIFACT, str(directory))
        except Exception:
            raise TrackingError(f"run {run_id} has no {SAVED_MODEL_ARTIFACT}/ artifact ({exc})") from None
    try:
        return Recommender.load(path)
    except Exception as exc:  # unknown kind, missing files, shapes that do not match the config
        raise TrackingError(
            f"run {run_id}: cannot load {SAVED_MODEL_ARTIFACT}/ ({type(exc).__name__}: {exc})"
        ) from None


def check_vocab_prefix(
    client: MlflowClient, run_id: str, model: Recommender, split: Split, directory: Path
) -> None:
    """Raise TrackingError unless the champion's user and item vocabs (from its pyfunc's serving
    artifacts) are prefixes of the split's: only then does index i mean the same id in both."""
    import polars as pl

    from recsys.tracking.pyfunc import ARTIFACT_KEY

    base = f"{PYFUNC_ARTIFACT}/artifacts/{ARTIFACT_KEY}"
    checks = (
        ("user", model.n_users, split.user_ids, split.n_users),
        ("item", model.n_items, split.item_ids, split.n_items),
    )
    for kind, n_model, current_ids, n_current in checks:
        artifact = f"{base}/{kind}s.parquet"
        try:
            path = client.download_artifacts(run_id, artifact, str(directory))
        except Exception as exc:
            raise TrackingError(
                f"run {run_id} has no {artifact} artifact, so its {kind} indices cannot be matched "
                f"to the current vocab ({exc})"
            ) from None
        old = pl.read_parquet(path).sort(f"{kind}_idx").get_column(f"{kind}_id").to_numpy().astype(str)
        if old.size != n_model:
            raise TrackingError(
                f"run {run_id}: its {kind} vocab has {old.size} ids but its model knows {n_model} {kind}s"
            )
        if old.size > n_current:
            raise TrackingError(
                f"the {kind} vocab shrank: the champion knows {old.size} {kind}s, the current split "
                f"has {n_current}; a vocab must be append-only"
            )
        now = vocab_strings(current_ids, n_current)[: old.size]
        differ = np.flatnonzero(old != now)
        if differ.size:
            first = int(differ[0])
            raise TrackingError(
                f"the {kind} vocab is not an append-only extension of the champion's: index {first} "
                f"is {str(old[first])!r} for the champion but {str(now[first])!r} now "
                f"({differ.size} of {old.size} indices differ)"
            )


def seen_test_interactions(client: MlflowClient, run_id: str, split: Split, directory: Path) -> int | None:
    """How many of `split`'s test interactions the champion saw at training time (its serving
    artifact's seen matrix: train + validation + fold-in of its own split), or None when unknown.
    Stable splits never move an old pair into test (rolling and temporal place a repeated pair by
    when it was first seen), but a changed split seed or protocol, or leave_last_n on a log that
    repeats a pair, can; the champion has memorised such a pair, and the promotion rule refuses to
    compare on it."""
    from recsys.tracking.pyfunc import _SEEN, ARTIFACT_KEY

    try:
        path = client.download_artifacts(
            run_id, f"{PYFUNC_ARTIFACT}/artifacts/{ARTIFACT_KEY}/{_SEEN}", str(directory)
        )
        seen = sp.load_npz(path).tocsr()
    except Exception:
        return None
    rows, cols = min(seen.shape[0], split.n_users), min(seen.shape[1], split.n_items)
    test = sp.csr_matrix(split.test)[:rows, :cols]
    return int(test.multiply(seen[:rows, :cols]).count_nonzero())


def champion_serving_tensors(client: MlflowClient, run_id: str, directory: Path) -> dict[str, np.ndarray] | None:
    """The champion's serving tensors (`user_has_vector`: users with a training row in its split;
    `popularity`: each item's training count), from either artifact layout, or None."""
    from safetensors.numpy import load_file

    from recsys.tracking.pyfunc import _SERVING, _VECTORS, ARTIFACT_KEY

    for name in (_SERVING, _VECTORS):
        try:
            path = client.download_artifacts(run_id, f"{PYFUNC_ARTIFACT}/artifacts/{ARTIFACT_KEY}/{name}", str(directory))
            return load_file(path)
        except Exception:
            continue
    return None


def deployed_eval_set(eval_set: EvalSet, n_known_items: int, popularity: np.ndarray | None) -> EvalSet:
    """`eval_set` with the items the champion never trained on masked as well: those appended after
    it (index >= `n_known_items`) and those without a training row in its own split (`popularity`
    0), which its serving index never returns (`recsys.tracking.pyfunc.ServingIndex`)."""
    n_items = eval_set.truth.shape[1]
    untrained = np.ones(n_items, dtype=bool)
    untrained[:n_known_items] = False
    if popularity is not None:
        n = min(popularity.size, n_known_items)
        untrained[:n] = popularity[:n] <= 0
    if eval_set.masked_items is not None:
        untrained |= eval_set.masked_items
    return replace(eval_set, masked_items=untrained if untrained.any() else None)


def as_deployed_vectors(
    model: Recommender, split: Split, eval_set, has_vector: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """(user vectors for every user of `split`, item vectors for every item, users folded in).

    The model is scored as it would serve on today's vocab: items appended after it was trained
    get zero vectors (and are masked: `deployed_eval_set`); learned users (`has_vector`, default: every user it knows) keep
    their vectors; other users (appended after it, or without a training row in its split; for
    fold-in protocols every evaluated user) are folded in from their history restricted to the
    items the model knows. Only the evaluated users' rows are filled (the evaluator reads no other)."""
    n_known_items = model.n_items
    if n_known_items > split.n_items or model.n_users > split.n_users:
        raise TrackingError(
            f"the champion knows {model.n_users} users x {n_known_items} items but the current split "
            f"has {split.n_users} x {split.n_items}; a vocab must be append-only"
        )
    known_items = np.asarray(model.item_factors, dtype=np.float32)
    item_vecs = np.zeros((split.n_items, known_items.shape[1]), dtype=np.float32)
    item_vecs[:n_known_items] = known_items
    user_vecs = np.zeros((split.n_users, known_items.shape[1]), dtype=np.float32)
    users = eval_set.users
    if eval_set.fold_in is not None:
        folded = users
        histories: sp.csr_matrix = eval_set.fold_in
    else:
        learned_users = np.zeros(split.n_users, dtype=bool)
        learned_users[: model.n_users] = True
        if has_vector is not None:  # a user without a training row in its split has no real vector
            n = min(has_vector.size, model.n_users)
            learned_users[:n] &= has_vector[:n]
        known = learned_users[users]
        learned = users[known]
        user_vecs[learned] = np.asarray(model.user_factors, dtype=np.float32)[learned]
        folded = users[~known]
        histories = split.train
    if folded.size:
        rows = histories.tocsr()[folded][:, :n_known_items]
        times = None if split.times is None else split.times.tocsr()[folded][:, :n_known_items]
        user_vecs[folded] = model.fold_in_ordered(rows, times)
    return user_vecs, item_vecs, int(folded.size)


def reevaluate_champion(
    client: MlflowClient,
    champion_run_id: str,
    split: Split,
    evaluation: EvaluationConfig,
    *,
    challenger_digest: str | None = None,
) -> ChampionReevaluation:
    """Score the champion's saved model on `split`'s warm test users with the project's evaluator.

    `challenger_digest` (the challenger's split digest) guards against being handed a split the
    challenger was not evaluated on. Bootstrap intervals are skipped: the rule pairs per-user
    values and the summary means do not depend on them. Raises TrackingError with the reason when
    the champion cannot be re-evaluated."""
    from recsys.data.matrix import item_popularity
    from recsys.evaluation.cold import divide_test
    from recsys.evaluation.evaluate import evaluate_factors
    from recsys.tracking.runs import split_digest

    digest = split_digest(split)
    if challenger_digest is not None and digest != challenger_digest:
        raise TrackingError(
            f"the split handed over (digest {digest}) is not the challenger's (digest {challenger_digest})"
        )
    with scratch_dir("recsys-champion") as tmp:
        model = load_run_model(client, champion_run_id, Path(tmp))
        check_vocab_prefix(client, champion_run_id, model, split, Path(tmp))
        n_test_seen = seen_test_interactions(client, champion_run_id, split, Path(tmp))
        tensors = champion_serving_tensors(client, champion_run_id, Path(tmp)) or {}
    has_vector = tensors["user_has_vector"].astype(bool) if "user_has_vector" in tensors else None
    eval_set = divide_test(split).warm
    user_vecs, item_vecs, n_folded = as_deployed_vectors(model, split, eval_set, has_vector)
    eval_set = deployed_eval_set(eval_set, model.n_items, tensors.get("popularity"))
    try:
        result = evaluate_factors(
            user_vecs,
            item_vecs,
            eval_set,
            evaluation.model_copy(update={"bootstrap_samples": 0}),
            item_popularity=item_popularity(split.train),
        )
    except ValueError as exc:
        raise TrackingError(f"evaluating the champion failed: {exc}") from None
    return ChampionReevaluation(
        run_id=champion_run_id,
        summary=dict(result.summary),
        per_user=per_user_with_ids(result.per_user, split),
        n_users=int(result.n_users_evaluated),
        n_new_items=split.n_items - model.n_items,
        n_folded_in=n_folded,
        n_test_seen=n_test_seen,
        n_test=int(sp.csr_matrix(split.test).nnz),
    )


def per_user_with_ids(per_user: pl.DataFrame, split: Split) -> pl.DataFrame:
    """Add `user_id` the way the per-user artifact has it (Tracker._write_artifacts)."""
    import polars as pl

    ids = vocab_strings(split.user_ids, split.n_users)
    if len(ids) != split.n_users:
        ids = np.arange(split.n_users).astype(str)
    user_ids = ids[per_user.get_column("user_idx").to_numpy()]
    return per_user.with_columns(pl.Series("user_id", user_ids)).select("user_id", pl.exclude("user_id"))


def log_champion_metrics(
    client: MlflowClient, challenger_run_id: str, reevaluation: ChampionReevaluation
) -> None:
    """The champion's re-evaluated summary on the challenger's run as `champion_<metric>`, so the
    comparison behind the decision is visible beside the challenger's own metrics in MLflow."""
    import time

    from mlflow.entities import Metric, RunTag

    stamp = int(time.time() * 1000)
    values: dict[str, float] = {**reevaluation.summary, "n_users_evaluated": reevaluation.n_users}
    if reevaluation.n_test_seen is not None:
        values["test_seen_fraction"] = reevaluation.n_test_seen / max(reevaluation.n_test, 1)
    metrics = [
        Metric(metric_key(f"{CHAMPION_METRIC_PREFIX}{name}"), float(value), stamp, 0)
        for name, value in values.items()
        if np.isfinite(value)
    ]
    tags = [RunTag(TAG_CHAMPION_REEVALUATED, reevaluation.run_id)]
    with_retries(lambda: client.log_batch(challenger_run_id, metrics=metrics, tags=tags))
