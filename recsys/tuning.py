"""Per-run hyper-parameter search: Optuna TPE on the validation users, never on test.

A model's `[models.tuning]` section (`TuningConfig`) turns the search on for every run of that
config: `n_trials` trials (and at most `timeout_s` seconds), each fitting the model on the training
matrix with parameters drawn from `space` (or the kind's `DEFAULT_SPACES`) and scoring `metric` on
the validation `EvalSet`. `tune` takes exactly those two inputs, so it cannot see test users: there is
no argument to pass them through (tests/test_tuning.py also poisons the test split and checks that
nothing changes).

* Warm start: the configured parameters (data-aware defaults resolved on the training data) are
  trial 0, so a tuned model never scores below the untuned one on validation. A kind's default
  space is widened to contain them (`covering`: the data-aware WALS alpha reaches the hundreds on
  large sparse catalogues, above the range that suits dense ones); a value outside a space the config
  gives is drawn like the others (`warm_starts`); a config may queue more right after it
  (`ModelConfig.tuning_warm_starts`: a blend tries each member alone); a caller may
  queue more (the pipeline queues the current champion's parameters of the same lineage,
  `pipelines.tune`). Queued trials count towards `n_trials`.
* Pruning: models that validate per epoch (the two-tower) report each epoch's validation metric;
  Optuna's median rule stops a trial that is below the median of earlier trials at the same epoch,
  after `prune_warmup_epochs` (early epochs sit on a plateau whatever the parameters).
* The best trial's fitted model is returned as the final model: it *is* the model fitted once with
  the chosen parameters on the training data (every trial uses the model's seed), so the caller
  scores it once on test without fitting again.
* Budget and determinism: with the same seed, data and `n_trials` the chosen parameters are the
  same on every run. `timeout_s` is a wall-clock guard: no trial starts after it, and a trial of
  a model that reports per epoch or iteration (two-tower, WALS) stops at its next report once it
  has passed (one two-tower trial on a 70k-item log took 19 minutes against a 240 s guard). A trial
  stopped so is scored on the validation users as it stands (a model trained for fewer epochs) and
  competes like a finished one: the first trial so gives the search a model, and a later one whose
  shorter training already beats every finished trial is the better choice (pruning it threw away
  a setting a loaded machine had cut short, and left the untuned first trial, below popularity on
  a check-in log). When the guard acts the outcome says so (`timed_out`), because fewer trials, or
  shorter ones, may choose differently.

This module knows nothing of MLflow or Prefect: `TrialHooks` is how a caller logs trials (the
pipeline makes them nested MLflow runs).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys.sections import NoBoolNumbers

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp

    from recsys.data.split import EvalSet
    from recsys.models.base import ModelConfig, Recommender


class ParamRange(BaseModel):
    """A numeric search range: `{ low = 0.01, high = 100, log = true }` (add `integer = true` for ints)."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> ParamRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and self.low <= value <= self.high


SpaceEntry = ParamRange | list[Any]
"""A range, or a list of choices (categorical)."""


class TuningConfig(NoBoolNumbers):
    """`[models.tuning]`: per-run search of this model's hyper-parameters on the validation users."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True
    n_trials: int = Field(20, ge=1, description="trials per run, queued warm starts included")
    timeout_s: float | None = Field(
        None, gt=0,
        description="wall-clock guard: no trial starts after this many seconds, and a running trial stops at "
        "its next epoch (None = no limit)",
    )
    metric: str | None = Field(None, description="validation metric to maximise; None = promotion.metric")
    space: dict[str, SpaceEntry] | None = Field(
        None, description="parameter -> range or choices; None = the kind's default space (recsys.tuning)"
    )
    prune: bool = Field(True, description="stop trials whose per-epoch validation metric is below the median")
    prune_warmup_epochs: int = Field(3, ge=0, description="epochs before a trial may be pruned")
    warm_start: bool = Field(True, description="queue the champion's parameters of the same lineage")
    cross_check: bool | None = Field(
        None,
        description="keep the searched parameters only when the same search on one half of the validation users "
        "beats the configured parameters on the other half (both ways; paired Wilcoxon, p < cross_check_alpha), "
        "else keep the configured ones; costs two searches on half the users. None = the kind's default (on for "
        "a blend, whose trials are cheap and whose weights overfit a small validation set)",
    )
    cross_check_alpha: float = Field(0.05, gt=0, lt=1, description="significance level of the cross-check")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return None if value is None else check_tuning_metric(value, "metric")


def check_tuning_metric(metric: str, where: str = "tuning metric") -> str:
    """`metric` as a search scores it, NAME@K, or a ConfigError (a ValueError) naming `where`: checked before the first trial, since a bad name once failed every trial (each a full
    fit) and ended with advice to raise n_trials."""
    from recsys.errors import ConfigError
    from recsys.evaluation.metrics import ALL_METRICS

    name, at, k = metric.partition("@")
    if name not in ALL_METRICS or not at or not k.isdigit() or int(k) < 1:
        raise ConfigError(
            f"{where} {metric!r} is not NAME@K with NAME one of {', '.join(ALL_METRICS)} and K a positive "
            "integer, e.g. recall@20"
        )
    return metric


DEFAULT_SPACES: dict[str, dict[str, SpaceEntry]] = {
    "wals": {
        "factors": [32, 64, 128],
        # Strong L2 is what iALS needs (Rendle et al. 2022): the range reaches 1000.
        "regularization": ParamRange(low=0.01, high=1000.0, log=True),
        "alpha": ParamRange(low=0.1, high=50.0, log=True),
        "iterations": ParamRange(low=5, high=25, integer=True),
    },
    "ease": {"l2": ParamRange(low=0.5, high=1e5, log=True)},
    "two_tower": {
        "lr": ParamRange(low=1e-3, high=5e-2, log=True),
        "temperature": ParamRange(low=0.03, high=0.5, log=True),
        "dim": [32, 64, 128],
        "num_negatives": [64, 128, 256],
    },
}
"""What a `[models.tuning]` section without `space` searches, by model kind."""

UNUSED_BY = {"num_negatives": lambda cfg: getattr(cfg, "sampler", None) == "in_batch"}
"""Default-space parameters a given config ignores (in-batch sampling draws no extra negatives)."""


def search_space(model_cfg: ModelConfig) -> dict[str, SpaceEntry]:
    """The space a model's tuning searches; a clear error when there is none or a name is unknown."""
    from recsys.errors import ConfigError

    tuning = model_cfg.tuning
    space = dict(tuning.space) if tuning is not None and tuning.space is not None else None
    if space is None:
        space = model_cfg.default_tuning_space()
    if space is None:
        if model_cfg.kind not in DEFAULT_SPACES:
            # `recsys tune --model pop` has no section to remove: say which models can be tuned instead
            remedy = "remove the tuning section" if tuning is not None else "tune a model of another kind"
            raise ConfigError(
                f"models.{model_cfg.name}.tuning: a {model_cfg.kind} model has nothing to tune by default; "
                f"give tuning.space or {remedy} (default spaces: {sorted(DEFAULT_SPACES)})"
            )
        space = {k: v for k, v in DEFAULT_SPACES[model_cfg.kind].items() if not UNUSED_BY.get(k, _never)(model_cfg)}
    fields = model_cfg.tunable_names()
    unknown = sorted(set(space) - fields)
    if unknown:
        raise ConfigError(
            f"models.{model_cfg.name}.tuning.space: unknown parameter(s) {unknown}; "
            f"{model_cfg.kind} parameters: {sorted(fields)}"
        )
    return space


def _never(_: Any) -> bool:
    return False


# ============================================================================ the search
@dataclass
class TrialRecord:
    number: int
    params: dict[str, Any]
    value: float | None
    state: str  # "complete" | "pruned" | "failed" | "interrupted"
    seconds: float
    epochs: int = 0
    error: str | None = None


@dataclass
class TuningOutcome:
    """What a search chose. `model` is the best trial's fitted model (the final model); `config` its
    config (the model's config with the chosen parameters and no tuning section)."""

    model: Recommender
    config: ModelConfig
    metric: str
    best_value: float
    best_params: dict[str, Any]
    trials: list[TrialRecord]
    seconds: float
    timed_out: bool
    queued: list[dict[str, Any]] = field(default_factory=list)
    study: Any = None  # the optuna Study, for plots
    cross_check: CrossCheck | None = None  # how the search did out of fold, when checked (`cross_check`)

    def summary(self) -> dict[str, Any]:
        states = [t.state for t in self.trials]
        return {
            "metric": self.metric, "best_value": self.best_value, "best_params": self.best_params,
            "trials": len(self.trials), "complete": states.count("complete"), "pruned": states.count("pruned"),
            "failed": states.count("failed"), "seconds": self.seconds, "timed_out": self.timed_out,
            **({"cross_check": asdict(self.cross_check)} if self.cross_check is not None else {}),
        }  # fmt: skip


class TrialHooks(Protocol):
    """How a caller records trials (pipelines: nested MLflow runs). `start` returns the per-epoch
    metrics callback of that trial (or None)."""

    def start(self, number: int, params: dict[str, Any]) -> Callable[[int, dict[str, float]], None] | None: ...

    def finish(self, record: TrialRecord) -> None: ...


class _TrialFailed(Exception):
    """A trial's fit or evaluation raised: the study records it FAILED and carries on."""


def tune(
    model_cfg: ModelConfig,
    train: sp.csr_matrix,
    validation: EvalSet,
    *,
    metric: str = "recall@20",
    queue: Iterable[Mapping[str, Any]] = (),
    hooks: TrialHooks | None = None,
    build: Callable[[ModelConfig], Recommender] | None = None,
    features: Any = None,
    clock: Callable[[], float] = time.perf_counter,
    item_ids: Any = None,
) -> TuningOutcome:
    """Search `model_cfg.tuning` (enabled or not: the caller decides to tune) on `validation`.

    `queue`: extra parameter sets to try first, after the configured parameters (values outside the
    space are dropped). `build` makes a model from a trial config (default `build_model`; the
    pipeline's also hands a distilling student its teacher). `clock`: seconds, what the
    `timeout_s` guard reads (a test drives it epoch by epoch instead of sleeping). `item_ids`: the
    raw ids (`Split.item_ids`), for each trial's `fit`. With `cross_check` on (see `TuningConfig`)
    the searched parameters are kept only when they beat the configured ones out of fold."""
    from recsys.errors import ModelError
    from recsys.models.base import build_model

    tuning = model_cfg.tuning or TuningConfig()
    metric = tuning.metric or metric
    search = _Search(model_cfg, tuning, metric, train, features=features, item_ids=item_ids,
                     build=build or build_model, clock=clock)  # fmt: skip
    started = clock()
    extra = [*model_cfg.tuning_warm_starts(), *queue]
    found = search.run(validation, extra, hooks)
    if found.model is None:
        errors = sorted({r.error for r in found.records if r.error})
        raise ModelError(
            f"model {model_cfg.name!r}: no tuning trial finished ({len(found.records)} tried"
            + (f"; first error: {errors[0]}" if errors else "")
            + "); raise tuning.n_trials / timeout_s or narrow tuning.space"
        )
    outcome = TuningOutcome(
        model=found.model, config=found.model.config, metric=metric, best_value=found.value,
        best_params=dict(found.params), trials=found.records, seconds=0.0,
        timed_out=len(found.records) < tuning.n_trials or found.guard_hit, queued=found.queued, study=found.study,
    )  # fmt: skip
    if cross_checks(model_cfg) and any(search.configured.get(k) != v for k, v in found.params.items()):
        configured = {k: v for k, v in search.configured.items() if k in search.space}
        trial_0 = found.first if found.queued and found.queued[0] == configured else None
        outcome = cross_check(search, outcome, validation, extra, trial_0)
    outcome.seconds = clock() - started
    return outcome


def cross_checks(model_cfg: ModelConfig) -> bool:
    """Whether `model_cfg`'s search is checked out of fold: `tuning.cross_check`, or the kind's default."""
    setting = model_cfg.tuning.cross_check if model_cfg.tuning is not None else None
    return type(model_cfg).cross_check_by_default if setting is None else setting


@dataclass
class _Found:
    """One search's result: the best trial's model, value and parameters (model None when no trial
    finished), every trial's record, the queued parameter sets, the study, whether the
    `timeout_s` guard stopped a running trial, and trial 0's model when it finished unstopped."""

    model: Recommender | None
    value: float
    params: dict[str, Any]
    records: list[TrialRecord]
    queued: list[dict[str, Any]]
    study: Any
    guard_hit: bool
    first: Recommender | None = None


class _Search:
    """One model's search, run on a given validation set: the whole validation set for the
    outcome, halves of it for the cross-check (the same space, budget, seed and warm starts)."""

    def __init__(
        self, model_cfg: ModelConfig, tuning: TuningConfig, metric: str, train: sp.csr_matrix, *,
        features: Any, item_ids: Any, build: Callable[[ModelConfig], Recommender], clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self.model_cfg, self.tuning, self.metric, self.train = model_cfg, tuning, metric, train
        self.features, self.item_ids, self.build, self.clock = features, item_ids, build, clock
        self.space = search_space(model_cfg)
        self.configured = configured_params(model_cfg, train)
        if tuning.space is None:
            self.space = covering(self.space, self.configured)
        self.eval_cfg = _validation_eval_config(metric)
        self.popularity = _popularity(train)

    def fit(self, params: Mapping[str, Any], validation: EvalSet, callback: Any = None) -> Recommender:
        """The model of one parameter set, fitted on the training matrix (`validation` for the
        models that validate per epoch)."""
        model = self.build(trial_config(self.model_cfg, params))
        model.fit(self.train, validation=validation, callback=callback, features=self.features,
                  times=validation.times, item_ids=self.item_ids)  # fmt: skip
        return model

    def per_user(self, model: Recommender, validation: EvalSet) -> np.ndarray:
        """`metric` of each evaluated user of `validation` (in `validation.users` order)."""
        import numpy as np

        from recsys.evaluation.evaluate import evaluate

        result = evaluate(model, validation, self.eval_cfg, item_popularity=self.popularity)
        return np.nan_to_num(result.per_user[self.metric].to_numpy().astype(np.float64))

    def run(self, validation: EvalSet, extra: Iterable[Mapping[str, Any]], hooks: TrialHooks | None) -> _Found:
        import optuna

        from recsys.errors import DataError, SetupError

        model_cfg, tuning, clock = self.model_cfg, self.tuning, self.clock
        started = clock()
        records: list[TrialRecord] = []
        best: dict[str, Any] = {"value": -math.inf, "model": None, "params": {}}
        guard = {"hit": False}  # the timeout stopped a running trial
        first: dict[str, Recommender] = {}  # trial 0's model, fitted to the end: the cross-check's configured model

        def objective(trial: Any) -> float:
            params = {name: suggest(trial, name, entry) for name, entry in self.space.items()}
            on_epoch = hooks.start(trial.number, params) if hooks is not None else None
            pruned = {"flag": False, "by_guard": False}

            def callback(step: int, metrics: dict[str, float]) -> bool:
                if on_epoch is not None:
                    on_epoch(step, metrics)
                if tuning.timeout_s is not None and clock() - started > tuning.timeout_s:
                    guard["hit"] = pruned["by_guard"] = True  # scored as it stands, never pruned
                    # No trial after this one: Optuna's own timeout counts from a later start (study set-up
                    # and warm starts come first), so under load it could still start one more.
                    trial.study.stop()
                    return True
                value = next((v for k, v in metrics.items() if k.startswith("val_")), None)
                if value is None or not tuning.prune:
                    return False
                trial.report(float(value), step)
                if step > tuning.prune_warmup_epochs and trial.should_prune():
                    pruned["flag"] = True
                    return True
                return False

            start = time.perf_counter()
            record = TrialRecord(trial.number, params, None, "failed", 0.0)
            try:
                model = self.fit(params, validation, callback)
                record.epochs = len(model.history)
                if pruned["by_guard"] and type(model).single_solve:
                    # the guard spoke after EASE's one solve had finished: nothing was stopped (it once
                    # said "stopped after 1 epoch(s)"); it is scored, and no trial starts after it
                    pruned["by_guard"] = False
                if pruned["by_guard"]:
                    record.error = f"stopped after {record.epochs} epoch(s) by the tuning.timeout_s = {tuning.timeout_s:g} s guard"
                if pruned["flag"]:
                    record.state = "pruned"
                    raise optuna.TrialPruned()
                value = _score(model, validation, self.eval_cfg, self.popularity, self.metric)
                record.value, record.state = value, "complete"
            except optuna.TrialPruned:
                raise
            except KeyboardInterrupt:  # Ctrl-C / SIGTERM stops the search: the trial is reported as such, not failed
                record.state = "interrupted"
                raise
            except (DataError, SetupError) as exc:  # the same for every parameter setting: stop the search
                record.error = f"{type(exc).__name__}: {exc}"
                raise
            except Exception as exc:
                record.error = f"{type(exc).__name__}: {exc}"
                raise _TrialFailed(record.error) from exc
            finally:
                record.seconds = time.perf_counter() - start
                records.append(record)
                if hooks is not None:
                    hooks.finish(record)
            if trial.number == 0 and record.error is None:
                first["model"] = model
            if value > best["value"]:  # ties keep the earlier trial
                best.update(value=value, model=model, params=params)
            return value

        # Optuna's own lines are silenced for good (not restored: two models tune in parallel threads and
        # a restore would race): trials, failed ones with their error, are reported through `hooks`,
        # and Optuna logs a failed trial as a WARNING with its whole traceback.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=model_cfg.seed, n_startup_trials=startup_trials(tuning.n_trials)),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=tuning.prune_warmup_epochs),
        )
        queued = warm_starts(self.configured, self.space, extra)
        for params in queued:
            study.enqueue_trial(params, skip_if_exists=True)
        study.optimize(objective, n_trials=tuning.n_trials, timeout=tuning.timeout_s, catch=(_TrialFailed,))
        return _Found(best["model"], float(best["value"]), dict(best["params"]), records, queued, study, guard["hit"],
                      first.get("model"))  # fmt: skip


# ============================================================================ the cross-check
@dataclass
class CrossCheck:
    """How the searched parameters did out of fold (`cross_check`): the mean per-user difference
    `delta` (searched minus configured) over the validation users, each scored by the search run on
    the other half, its Wilcoxon p-value, the users, the parameters each half chose, and the verdict."""

    delta: float
    p_value: float
    n_users: int
    alpha: float
    fold_params: list[dict[str, Any]]
    kept_searched: bool

    def sentence(self) -> str:
        verdict = (
            "searched parameters kept" if self.kept_searched
            else "configured parameters kept (the search did not beat them significantly out of fold)"
        )  # fmt: skip
        return f"cross-check on {self.n_users} validation users: {self.delta:+.4f} (p = {self.p_value:.3g}): {verdict}"


def cross_check(
    search: _Search, outcome: TuningOutcome, validation: EvalSet, extra: list[Mapping[str, Any]],
    configured: Recommender | None = None,
) -> TuningOutcome:
    """Keep the searched parameters only when searching beats the configured ones out of fold.

    Why: the search picks the best of `n_trials` settings on the same validation users that score
    it, so its best value is optimistic, the more so the smaller the set and the flatter the
    space. On ML-100K's ~100 validation users, a blend's weights searched on one half scored below
    equal weights on the other (benchmarks/RESULTS.md, generalisation section). The check is two-fold nested validation: the validation users are split
    in two seeded halves; the same search (space, budget, seed, warm starts) runs on each half, and
    its choice is scored on the other half against the configured parameters on the same users.
    The searched parameters (of the search on every validation user, `outcome`) are kept when the
    mean per-user difference is positive and a paired Wilcoxon test puts p below
    `tuning.cross_check_alpha`; otherwise the configured parameters are the model, as an untuned run
    would have them. `extra`: the warm starts the search queued after trial 0 (so each half's search
    is the same search); `configured`: trial 0's model when it was the configured parameters, fitted
    to the end (else they are fitted here). Costs two searches on half the users."""
    import numpy as np

    from recsys.evaluation.stats import paired_test

    users = validation.users
    halves = np.array_split(np.random.default_rng(search.model_cfg.seed).permutation(users), 2)
    configured = configured or search.fit(search.configured, validation)
    base = search.per_user(configured, validation)  # in `users` order (sorted)
    searched: list[float] = []
    against: list[float] = []
    fold_params: list[dict[str, Any]] = []
    for fit_on, score_on in ((halves[0], halves[1]), (halves[1], halves[0])):
        found = search.run(only_users(validation, fit_on), extra, None)
        if found.model is None or score_on.size == 0:
            continue
        scored = only_users(validation, score_on)
        searched.extend(search.per_user(found.model, scored).tolist())
        against.extend(base[np.searchsorted(users, scored.users)].tolist())
        fold_params.append(found.params)
    alpha = search.tuning.cross_check_alpha
    if searched:
        test = paired_test(np.asarray(searched), np.asarray(against), method="wilcoxon")
        delta, p_value = test.delta_mean, test.p_value
    else:
        delta, p_value = float("nan"), float("nan")
    kept = bool(searched) and delta > 0 and p_value < alpha
    outcome.cross_check = CrossCheck(delta, p_value, len(searched), alpha, fold_params, kept)
    if not kept:
        outcome.model, outcome.config = configured, configured.config
        outcome.best_params = {k: v for k, v in search.configured.items() if k in search.space}
        outcome.best_value = float(base.mean()) if base.size else 0.0
    return outcome


def only_users(validation: EvalSet, users: np.ndarray) -> EvalSet:
    """`validation` evaluating only `users` (the others' relevant items dropped; their histories and
    masks stay, so a user is scored exactly as on the whole set)."""
    import dataclasses

    import numpy as np
    import scipy.sparse as sp

    keep = np.zeros(validation.truth.shape[0], dtype=validation.truth.dtype)
    keep[users] = 1
    truth = (sp.diags(keep) @ sp.csr_matrix(validation.truth)).tocsr()
    truth.eliminate_zeros()
    return dataclasses.replace(validation, truth=truth)


def startup_trials(n_trials: int) -> int:
    """Random trials before TPE models the space: a third of the budget, between 3 and 10."""
    return max(3, min(10, n_trials // 3))


def suggest(trial: Any, name: str, entry: SpaceEntry) -> Any:
    if isinstance(entry, list):
        return trial.suggest_categorical(name, entry)
    if entry.integer:
        return trial.suggest_int(name, int(entry.low), int(entry.high), log=entry.log)
    return trial.suggest_float(name, entry.low, entry.high, log=entry.log)


def trial_config(model_cfg: ModelConfig, params: Mapping[str, Any]) -> ModelConfig:
    """The model config of one trial: validated (a bad value is a clear error), no tuning section,
    and no two-tower `checkpoint_dir`.

    Why no checkpoints: that directory holds ONE training's resume point (`recsys.training` refuses
    a checkpoint of another config or data). Every trial wrote to it, so each later trial met the
    first one's checkpoint and failed ("belongs to a different config"): a search of one trial, and
    on the next day's data none at all (the model failed on every scheduled run). A search is not
    resumed after a kill (its study lives in the process), so its trials have nothing to keep."""
    data = {**model_cfg.model_dump(), **params, "tuning": None}
    if model_cfg.kind == "two_tower":  # Spark WALS's checkpoint_dir cuts RDD lineages: it stays
        data["checkpoint_dir"] = None
    return type(model_cfg).model_validate(data)


def configured_params(model_cfg: ModelConfig, train: sp.csr_matrix) -> dict[str, Any]:
    """The model's configured parameters with its data-aware defaults resolved on `train`: trial 0."""
    from recsys.models.base import build_model

    return build_model(trial_config(model_cfg, {})).data_aware_config(train).tuning_params()


def covering(space: Mapping[str, SpaceEntry], params: Mapping[str, Any]) -> dict[str, SpaceEntry]:
    """`space` widened so that it contains `params` (a range stretched to the value, a missing
    choice added): trial 0, the configured / data-aware setting, is then searched around instead of
    dropped. Only for a kind's default space; a space the config gives is the user's to set."""
    widened: dict[str, SpaceEntry] = {}
    for name, entry in space.items():
        value = params.get(name)
        if isinstance(entry, list):
            widened[name] = entry if value is None or value in entry else [*entry, value]
        elif value is None or in_space(entry, value) or not isinstance(value, int | float) or isinstance(value, bool):
            widened[name] = entry
        elif entry.integer and not float(value).is_integer():
            widened[name] = entry
        else:
            update = {"low": min(entry.low, float(value)), "high": max(entry.high, float(value))}
            widened[name] = entry if entry.log and update["low"] <= 0 else entry.model_copy(update=update)
    return widened


def warm_starts(
    configured: Mapping[str, Any], space: Mapping[str, SpaceEntry], extra: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Parameter sets to try first: the configured values (`configured_params`), then `extra`,
    each cut to the space's parameters with in-range values (a value outside the space is left for
    the sampler to draw)."""
    queued: list[dict[str, Any]] = []
    for candidate in [configured, *extra]:
        params = {k: v for k, v in candidate.items() if k in space and in_space(space[k], v)}
        if params and params not in queued:
            queued.append(params)
    return queued


def in_space(entry: SpaceEntry, value: Any) -> bool:
    if isinstance(entry, list):
        return value in entry
    if not entry.contains(value):
        return False
    return not entry.integer or float(value).is_integer()


def _validation_eval_config(metric: str):
    from recsys.sections import EvaluationConfig

    check_tuning_metric(metric)
    name, _, k = metric.partition("@")
    return EvaluationConfig(ks=[int(k)], metrics=[name], bootstrap_samples=0)


def _popularity(train: sp.csr_matrix):
    from recsys.data.matrix import item_popularity

    return item_popularity(train)


def _score(model: Recommender, validation: EvalSet, eval_cfg: Any, popularity: Any, metric: str) -> float:
    from recsys.evaluation.evaluate import evaluate

    value = float(evaluate(model, validation, eval_cfg, item_popularity=popularity).summary[metric])
    return value if math.isfinite(value) else 0.0


def plot_study(study: Any, directory: Any) -> list[Any]:
    """Optimisation history and parameter importance (PED-ANOVA: no extra dependency) as PNGs in
    `directory`; importance needs two complete trials and is skipped otherwise. Returns the paths."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import optuna

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # Optuna marks its matplotlib plots experimental. That notice is silenced for good, by its own
    # category only, as Optuna's log lines are (see `tune`): two models tune in parallel threads,
    # and a `warnings.catch_warnings()` block here saved and restored the process-wide filter list,
    # so two overlapping blocks restored each other's state: the notice came out as a
    # `path/recsys/tuning.py:NNN: ExperimentalWarning` line, or the block's "ignore everything" stayed
    # installed and every later warning of the run (a model's zero vectors, sampled metrics) was
    # dropped without a word. `filterwarnings` replaces an equal filter, so calls do not pile up.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from recsys.tracking.plots import RC_LOCK

    # Each of Optuna's plots calls `plt.style.use("ggplot")`, which rewrites the process-wide
    # rcParams: every plot drawn after the first search (the model runs' recall@k, training curves,
    # embeddings, `recsys compare --plot`) came out grey-on-grey ggplot. `rc_context` puts the
    # settings back on exit; RC_LOCK keeps our own plots (recsys.tracking.plots) from being drawn
    # in another thread while the style is swapped. It also serialises Optuna's plots, which draw
    # through pyplot's current figure (`plt.legend`), one per process: two models finishing their
    # searches together drew one legend on the other's figure.
    with RC_LOCK, matplotlib.rc_context():
        return _plot(study, out, complete)


def _plot(study: Any, out: Any, complete: list[Any]) -> list[Any]:
    """`plot_study`'s figures, drawn and saved; the paths written."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    written = []
    if complete:
        ax = ovm.plot_optimization_history(study)
        ax.figure.savefig(out / "optimization_history.png", dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        written.append(out / "optimization_history.png")
    if len(complete) >= 2 and complete[0].params:
        try:
            ax = ovm.plot_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
        except (RuntimeError, ValueError):  # all values equal, or one distinct parameter set
            return written
        ax.figure.savefig(out / "param_importances.png", dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        written.append(out / "param_importances.png")
    return written
