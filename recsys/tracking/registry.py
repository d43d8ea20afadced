"""Model registry: a version per trained model, and champion/challenger promotion by a stated rule.

Two kinds of registered model, each with one job:

* `{prefix}-{model name}` (e.g. `recsys-wals`): every training of that model is a new version, the
  model's own history. Written by `Tracker.log_model_result` when `tracking.register_models`.
* `promotion.registered_model` (default `recsys-best`): the serving line. The best candidate of a
  pipeline run is registered here as a new version with alias `challenger`; alias `champion` marks
  what `recsys serve` (`models:/recsys-best@champion`) answers with. Keeping all candidates in one
  registered model lets a WALS champion be replaced by a two-tower challenger without the serving
  URI changing.

Promotion rule (PromotionConfig): with no champion, the challenger becomes champion. Otherwise the
challenger is promoted only if (1) both were evaluated on the same split (equal split digest, which
covers the data fingerprint, protocol and seed) - or, when they were not and the caller hands over
the challenger's `Split`, the champion is re-evaluated on that split first (see below); if neither
holds the comparison is refused with the reason; (2) its mean `metric` (e.g. recall@20) over the users both evaluated is higher, with a paired test on
the per-user values giving p < `p_value`; and (3) its coverage at the metric's k is not lower than
the champion's by more than `max_coverage_drop` (relative). The decision's reason is written as a
tag on the challenger's run and on its model version.

Re-evaluating the champion. A scheduled pipeline ingests new data every run, so the fingerprint and
the split change every run and a same-split rule alone would never promote again. The vocab is
append-only (old user/item indices never move, new ones are appended), so the champion's saved model
(`saved_model/` of its run) can be scored on the challenger's split "as deployed":

* items the champion never saw get zero vectors, so they score 0 - exactly what the deployed model
  does for an item it has no vector for (it can only recommend them after the old ones run out);
* users it learned keep their learned vectors; users beyond its `user_factors` are folded in from
  their current training history restricted to the items it knows (`model.fold_in`); protocols with
  fold-in histories (strong generalisation) fold in every evaluated user, as the evaluator does.

The re-evaluation refuses (and the comparison stays refused, with the reason) when the saved model
is missing or of an unknown kind, or when the champion's vocab (from its pyfunc's serving
artifacts) is not a prefix of the current one - then indices no longer mean the same ids. Known
bias: an interaction the champion trained on can sit in the current test set only if the split
moved it (random splits hash each (user, item) pair with the seed, so old pairs keep their part;
strong generalisation may hold out users the champion trained on); such leakage favours the
champion, never the challenger. The champion's re-evaluated summary is logged on the challenger's
run as `champion_<metric>` (e.g. `champion_recall_at_20`) so the comparison is visible in MLflow.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import TrackingError
from recsys.faults import fault_point
from recsys.tracking.locks import registry_lock, set_alias_if_unchanged
from recsys.tracking.runs import (
    PER_USER_ARTIFACT,
    PYFUNC_ARTIFACT,
    TAG_FINGERPRINT,
    TAG_MODEL,
    TAG_SPLIT_DIGEST,
    with_retries,
)
from recsys.tracking.store import metric_key

if TYPE_CHECKING:
    import polars as pl
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from recsys.config import EvaluationConfig, PromotionConfig
    from recsys.data.split import Split
    from recsys.models.base import Recommender

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_DECISION = "recsys.promotion.decision"
TAG_REASON = "recsys.promotion.reason"
TAG_CHAMPION_REEVALUATED = "recsys.promotion.champion_reevaluated"  # the champion's run id
SAVED_MODEL_ARTIFACT = "saved_model"  # where Tracker.log_model_result writes `model.save`
CHAMPION_METRIC_PREFIX = "champion_"


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of applying the promotion rule; `reason` is one human-readable sentence."""

    promoted: bool
    reason: str
    champion_version: str | None
    challenger_version: str | None
    p_value: float | None = None
    delta: float | None = None
    metric: str = ""
    challenger_run_id: str | None = None
    champion_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Versions and aliases


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model unless it exists (tolerates a concurrent creator)."""
    from mlflow.exceptions import MlflowException

    try:
        with_retries(lambda: client.create_registered_model(name))
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(exc).lower():
            raise


def register_run_model(
    client: MlflowClient, name: str, run_id: str, tags: dict[str, str] | None = None
) -> ModelVersion:
    """Register the run's pyfunc (artifact `model/`) as a new version of `name`."""
    ensure_registered_model(client, name)
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{PYFUNC_ARTIFACT}"
    return with_retries(lambda: client.create_model_version(name, source, run_id=run_id, tags=tags or {}))


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version carrying `alias`, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


# --------------------------------------------------------------------------------------------------
# Per-user metrics


def load_per_user(client: MlflowClient, run_id: str) -> Any:
    """The run's per-user metrics table (polars), or TrackingError naming the run."""
    import polars as pl

    with tempfile.TemporaryDirectory(prefix="recsys-per-user-") as tmp:
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


# --------------------------------------------------------------------------------------------------
# Re-evaluating the champion on the challenger's split


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
        """The clause the decision's reason carries: how many users, and any leak in its favour."""
        text = f"champion re-evaluated on the current split ({self.n_users} users)"
        if self.n_test_seen:
            share = self.n_test_seen / max(self.n_test, 1)
            text += f"; {share:.1%} of the test interactions were in its training data, which favours it"
        return text


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
    A split protocol that reshuffles grown data (random per user re-ranks a user's items when the
    user gains some) can move an old training pair into today's test set; the champion has
    memorised it, so the count is reported with the decision."""
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


def as_deployed_vectors(model: Recommender, split: Split, eval_set) -> tuple[np.ndarray, np.ndarray, int]:
    """(user vectors for every user of `split`, item vectors for every item, users folded in).

    The model is scored as it would serve on today's vocab: items appended after it was trained
    get zero vectors (score 0); learned users keep their vectors; users appended after it (or, for
    fold-in protocols, every evaluated user) are folded in from their history restricted to the
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
        learned = users[users < model.n_users]
        user_vecs[learned] = np.asarray(model.user_factors, dtype=np.float32)[learned]
        folded = users[users >= model.n_users]
        histories = split.train
    if folded.size:
        rows = histories.tocsr()[folded][:, :n_known_items]
        user_vecs[folded] = model.fold_in(rows)
    return user_vecs, item_vecs, int(folded.size)


def reevaluate_champion(
    client: MlflowClient,
    champion_run_id: str,
    split: Split,
    evaluation: EvaluationConfig,
    *,
    challenger_digest: str | None = None,
) -> ChampionReevaluation:
    """Score the champion's saved model on `split`'s test set with the project's evaluator.

    `challenger_digest` (the challenger's split digest) guards against being handed a split the
    challenger was not evaluated on. Bootstrap intervals are skipped: the rule pairs per-user
    values and the summary means do not depend on them. Raises TrackingError with the reason when
    the champion cannot be re-evaluated."""
    from recsys.data.matrix import item_popularity
    from recsys.evaluation.evaluate import evaluate_factors
    from recsys.tracking.runs import split_digest

    digest = split_digest(split)
    if challenger_digest is not None and digest != challenger_digest:
        raise TrackingError(
            f"the split handed over (digest {digest}) is not the challenger's (digest {challenger_digest})"
        )
    with tempfile.TemporaryDirectory(prefix="recsys-champion-") as tmp:
        model = load_run_model(client, champion_run_id, Path(tmp))
        check_vocab_prefix(client, champion_run_id, model, split, Path(tmp))
        n_test_seen = seen_test_interactions(client, champion_run_id, split, Path(tmp))
    eval_set = split.test_set()
    user_vecs, item_vecs, n_folded = as_deployed_vectors(model, split, eval_set)
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


# --------------------------------------------------------------------------------------------------
# The rule


def decide(
    client: MlflowClient,
    cfg: PromotionConfig,
    challenger_run_id: str,
    champion_run_id: str,
    *,
    split: Split | None = None,
    evaluation: EvaluationConfig | None = None,
) -> tuple[bool, str, float | None, float | None]:
    """Apply the rule to two runs: (promote?, reason, p_value, delta).

    When the two were evaluated on different splits and `split` (the challenger's) and `evaluation`
    are given, the champion is re-evaluated on `split` first; otherwise that case is refused."""
    from recsys.evaluation.stats import paired_test

    challenger_run, champion_run = client.get_run(challenger_run_id), client.get_run(champion_run_id)
    a_tags, b_tags = challenger_run.data.tags, champion_run.data.tags
    a_digest, b_digest = a_tags.get(TAG_SPLIT_DIGEST), b_tags.get(TAG_SPLIT_DIGEST)
    metric = cfg.metric
    coverage = coverage_metric(metric)
    cov_key = metric_key(coverage)
    note = ""
    if not a_digest or a_digest != b_digest:
        a_fp, b_fp = a_tags.get(TAG_FINGERPRINT, "?"), b_tags.get(TAG_FINGERPRINT, "?")
        what = "data fingerprints" if a_fp != b_fp else "splits"
        refusal = (
            f"not compared: challenger and champion were evaluated on different {what} "
            f"(fingerprint {a_fp[:12]} vs {b_fp[:12]}, split {a_digest} vs {b_digest})"
        )
        if split is None or evaluation is None:
            return False, f"{refusal}; re-evaluate the champion on the new data first", None, None
        try:
            again = reevaluate_champion(
                client, champion_run_id, split, evaluation, challenger_digest=a_digest
            )
        except TrackingError as exc:
            return False, f"{refusal}; the champion could not be re-evaluated on it: {exc}", None, None
        log_champion_metrics(client, challenger_run_id, again)
        champion_per_user, cov_b = again.per_user, again.summary.get(coverage)
        note = f"; {again.note()}"
    else:
        champion_per_user, cov_b = (
            load_per_user(client, champion_run_id),
            champion_run.data.metrics.get(cov_key),
        )
    ours, theirs = paired_values(champion_per_user, load_per_user(client, challenger_run_id), metric)
    if ours.size == 0:
        return (
            False,
            f"not compared: no users in common between the two runs' per-user {metric}{note}",
            None,
            None,
        )
    test = paired_test(ours, theirs, seed=0)
    delta, p = float(test.delta_mean), float(test.p_value)
    cov_a = challenger_run.data.metrics.get(cov_key)
    stats = f"delta {metric} = {delta:+.4f} over {test.n} users, p = {p:.3g}"
    if delta <= 0:
        return False, f"kept champion: challenger is not better ({stats}){note}", p, delta
    if not p < cfg.p_value:
        return (
            False,
            f"kept champion: improvement not significant ({stats}, needs p < {cfg.p_value}){note}",
            p,
            delta,
        )
    if cov_a is not None and cov_b is not None and cov_a < cov_b * (1.0 - cfg.max_coverage_drop):
        drop = 1.0 - cov_a / cov_b if cov_b else 0.0
        return (
            False,
            (
                f"kept champion: {coverage} fell {drop:.1%} ({cov_b:.4f} -> {cov_a:.4f}), more than the "
                f"{cfg.max_coverage_drop:.0%} allowed ({stats}){note}"
            ),
            p,
            delta,
        )
    return True, f"promoted: challenger is better ({stats}){note}", p, delta


def promote(
    client: MlflowClient,
    cfg: PromotionConfig,
    challenger_run_id: str,
    *,
    split: Split | None = None,
    evaluation: EvaluationConfig | None = None,
) -> PromotionDecision:
    """Register `challenger_run_id`'s model in `cfg.registered_model` as the challenger, compare it
    with the champion by the rule, move the `champion` alias when it wins, and log the reason.

    `split` / `evaluation`: the challenger's split and the evaluation config, so a champion
    evaluated on older data can be re-evaluated on it (see `decide`).

    Concurrency (recsys.tracking.locks): the read-decide-set runs under the registered model's
    lock, and the alias moves only if the champion is still the one the rule was applied to; if
    another promoter moved it meanwhile (another machine, no shared lock), the rule is applied
    again against the new champion."""
    with registry_lock(client, cfg.registered_model):
        return _promote(client, cfg, challenger_run_id, split=split, evaluation=evaluation)


MAX_DECISIONS = 5
"""How often `promote` re-applies the rule when the champion keeps moving under it."""


def _promote(
    client: MlflowClient,
    cfg: PromotionConfig,
    challenger_run_id: str,
    *,
    split: Split | None = None,
    evaluation: EvaluationConfig | None = None,
) -> PromotionDecision:
    name = cfg.registered_model
    champion = alias_version(client, name, CHAMPION)
    if champion is not None and champion.run_id == challenger_run_id:
        return PromotionDecision(
            False, "already champion: this run's model holds the champion alias", str(champion.version),
            str(champion.version), metric=cfg.metric, challenger_run_id=challenger_run_id,
            champion_run_id=champion.run_id,
        )  # fmt: skip
    model_name = client.get_run(challenger_run_id).data.tags.get(TAG_MODEL, "")
    challenger = register_run_model(client, name, challenger_run_id, tags={TAG_MODEL: model_name})
    with_retries(lambda: client.set_registered_model_alias(name, CHALLENGER, challenger.version))
    for _ in range(MAX_DECISIONS):
        if champion is None:
            promoted, reason, p, delta = True, "promoted: no champion yet", None, None
        elif champion.run_id == challenger_run_id:
            promoted, reason, p, delta = False, "already champion: this run's model holds the champion alias", None, None
        else:
            promoted, reason, p, delta = decide(
                client, cfg, challenger_run_id, champion.run_id, split=split, evaluation=evaluation
            )
        fault_point("promote.decided")
        if not promoted:
            break
        done, champion = set_alias_if_unchanged(client, name, CHAMPION, champion, challenger.version)
        if done:
            break
    else:
        raise TrackingError(
            f"{name}: the champion alias moved {MAX_DECISIONS} times while this promotion was deciding; "
            "another promoter is writing it: run `recsys promote` again when it is done"
        )
    decision = PromotionDecision(
        promoted, reason, str(champion.version) if champion else None, str(challenger.version),
        p, delta, cfg.metric, challenger_run_id, champion.run_id if champion else None,
    )  # fmt: skip
    _record(client, name, decision)
    return decision


def _record(client: MlflowClient, name: str, decision: PromotionDecision) -> None:
    """Write the decision where people look: the challenger's run and the model versions."""
    verdict = "promoted" if decision.promoted else "kept"
    tags = {TAG_DECISION: verdict, TAG_REASON: decision.reason}
    for key, value in tags.items():
        if decision.challenger_run_id:
            with_retries(lambda key=key, value=value: client.set_tag(decision.challenger_run_id, key, value))
        if decision.challenger_version:
            with_retries(
                lambda key=key, value=value: client.set_model_version_tag(
                    name, decision.challenger_version, key, value
                )
            )
