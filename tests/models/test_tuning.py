"""Per-run tuning (recsys.tuning): searches on validation users only, warm-starts from the
configured parameters, prunes on the per-epoch validation metric, returns the best trial's model."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pipelines.tune import tune_in_run
from recsys.data.split import Split
from recsys.errors import ConfigError, SetupError
from recsys.models.base import build_model
from recsys.models.defaults import ease_l2
from recsys.models.ease import EASEConfig
from recsys.models.two_tower import TwoTowerConfig
from recsys.models.wals import WALSConfig
from recsys.tracking.runs import ModelRun, NullTracker
from recsys.tuning import DEFAULT_SPACES, ParamRange, TuningConfig, covering, search_space, tune

from .conftest import Planted


def strong_split(planted: Planted) -> Split:
    """Planted clusters as a strong-generalisation split: users 0-139 train, 140-169 validation,
    170-199 test (held-out users' train rows are their fold-in, their test rows the target)."""
    n = planted.n_users
    train_users, val_users, test_users = np.arange(140), np.arange(140, 170), np.arange(170, n)

    def rows(matrix: sp.csr_matrix, users: np.ndarray) -> sp.csr_matrix:
        keep = np.zeros(n, dtype=np.float32)
        keep[users] = 1.0
        return sp.csr_matrix(sp.diags(keep) @ matrix, dtype=np.float32)

    return Split(
        protocol="strong_generalization",
        train=rows(planted.train + planted.test, train_users),
        validation=rows(planted.test, val_users),
        validation_fold_in=rows(planted.train, val_users),
        test=rows(planted.test, test_users),
        fold_in=rows(planted.train, test_users),
    )


class Untouchable:
    """Stands in for the test matrices: any use at all fails the test."""

    def __getattr__(self, name: str):
        raise AssertionError(f"tuning read the test set ({name})")

    def __getitem__(self, key):
        raise AssertionError("tuning read the test set")


WALS_TUNED = WALSConfig(
    name="wals", factors=8, iterations=4, threads=1, seed=5,
    tuning=TuningConfig(n_trials=5, space={"regularization": ParamRange(low=0.01, high=100.0, log=True),
                                           "alpha": ParamRange(low=0.5, high=20.0, log=True)}),
)  # fmt: skip


def trials_of(outcome):
    return [(r.params, r.value, r.state) for r in outcome.trials]


def run_in_pipeline(model_cfg, split):
    from recsys.config import RunConfig, SplitConfig

    cfg = RunConfig(models=[model_cfg], split=SplitConfig(validation_fraction=0.15))
    tracker = NullTracker()
    return tune_in_run(
        model_cfg, split, cfg, tracker=tracker, model_run=ModelRun("", "m", None, tracker), log=lambda _: None
    )


def test_tuning_never_reads_test_users(planted):
    """Same choice and same trial values whatever the test users hold, and the search runs with
    the test matrices replaced by objects that fail on any access."""
    split = strong_split(planted)
    first = run_in_pipeline(WALS_TUNED, split)
    rng = np.random.default_rng(1)
    poisoned = dataclasses.replace(
        split,
        test=sp.random(*split.test.shape, density=0.3, format="csr", dtype=np.float32, random_state=rng),
        fold_in=sp.csr_matrix(split.fold_in.shape, dtype=np.float32),
    )
    second = run_in_pipeline(WALS_TUNED, poisoned)
    assert trials_of(second) == trials_of(first)
    assert second.best_params == first.best_params
    untouchable = run_in_pipeline(
        WALS_TUNED, dataclasses.replace(split, test=Untouchable(), fold_in=Untouchable())
    )
    assert untouchable.best_params == first.best_params
    # the out-of-fold check's two half searches and its scoring see the validation users only, too
    checked = WALS_TUNED.model_copy(update={"tuning": WALS_TUNED.tuning.model_copy(update={"cross_check": True})})
    cross = run_in_pipeline(checked, dataclasses.replace(split, test=Untouchable(), fold_in=Untouchable()))
    assert cross.cross_check is not None and cross.cross_check.n_users == 30


def test_the_configured_parameters_are_trial_zero_and_the_best_trial_is_the_final_model(planted):
    split = strong_split(planted)
    configured = WALS_TUNED.model_copy(update={"regularization": 3.0, "alpha": 2.0})
    outcome = tune(configured, split.train, split.validation_set())
    assert outcome.trials[0].params == {"regularization": 3.0, "alpha": 2.0}
    assert outcome.queued[0] == {"regularization": 3.0, "alpha": 2.0}
    best = max((r for r in outcome.trials if r.value is not None), key=lambda r: r.value)
    assert outcome.best_params == best.params and outcome.best_value == best.value >= outcome.trials[0].value
    assert outcome.model.config.regularization == pytest.approx(best.params["regularization"])
    assert outcome.model.config.tuning is None  # the final model's config reproduces it without a search
    assert len(outcome.trials) == 5 and not outcome.timed_out


def test_queued_warm_starts_outside_the_space_are_cut_to_what_fits(planted):
    split = strong_split(planted)
    champion = {"regularization": 7.5, "alpha": 500.0, "factors": 8, "name": "other"}
    outcome = tune(WALS_TUNED, split.train, split.validation_set(), queue=[champion])
    assert {"regularization": 7.5} in outcome.queued  # alpha out of range: left to the sampler
    assert any(r.params["regularization"] == 7.5 for r in outcome.trials[:2])


def test_a_default_space_is_widened_to_contain_the_configured_setting():
    space = {"alpha": ParamRange(low=0.1, high=50.0, log=True), "factors": [32, 64], "iterations": ParamRange(low=5, high=25, integer=True)}
    widened = covering(space, {"alpha": 600.0, "factors": 256, "iterations": 15, "name": "w"})
    assert widened["alpha"] == ParamRange(low=0.1, high=600.0, log=True)
    assert widened["factors"] == [32, 64, 256] and widened["iterations"] == space["iterations"]
    assert covering(space, {"alpha": 0.01})["alpha"].low == 0.01


def test_a_data_aware_wals_alpha_above_the_default_space_is_still_trial_zero():
    """On a large sparse catalogue the data-aware alpha (0.1 x 3000 items / 5 a row = 60) is above
    the default space's 50: the space stretches to it, so trial 0 is the untuned model. A space the
    config gives is kept as given (the value is then drawn)."""
    from .test_defaults import sparse_clusters

    train, held = sparse_clusters()
    validation = sp.csr_matrix((np.ones(held.size, dtype=np.float32), (np.arange(held.size), held)), shape=train.shape)
    val = Split(protocol="random", train=train, validation=validation, test=validation).validation_set()
    wals = WALSConfig(name="wals", factors=16, iterations=4, threads=1, seed=0, tuning=TuningConfig(n_trials=1))
    outcome = tune(wals, train, val)
    assert outcome.trials[0].params["alpha"] == pytest.approx(60.0)
    assert DEFAULT_SPACES["wals"]["alpha"].high < 60.0  # the shipped range itself is unchanged
    given = {"alpha": ParamRange(low=0.5, high=50.0, log=True)}
    fixed = tune(wals.model_copy(update={"tuning": TuningConfig(n_trials=1, space=given)}), train, val)
    assert fixed.trials[0].params["alpha"] <= 50.0


def test_an_interrupted_trial_is_reported_as_interrupted_and_the_interrupt_goes_on(planted):
    """Ctrl-C in a trial printed it as "failed" (and closed its MLflow run FAILED)."""
    split = strong_split(planted)
    finished = []

    class Hooks:
        def start(self, number, params):
            def on_epoch(step, metrics):
                if number == 1:
                    raise KeyboardInterrupt

            return on_epoch

        def finish(self, record):
            finished.append((record.number, record.state))

    with pytest.raises(KeyboardInterrupt):
        tune(WALS_TUNED, split.train, split.validation_set(), hooks=Hooks())
    assert finished == [(0, "complete"), (1, "interrupted")]


def test_ease_tunes_its_l2_from_the_data_aware_default(planted):
    split = strong_split(planted)
    outcome = tune(EASEConfig(name="e", tuning=TuningConfig(n_trials=4)), split.train, split.validation_set())
    first = outcome.trials[0].params["l2"]
    assert first == pytest.approx(ease_l2(split.train))  # trial 0: the data-aware default
    assert outcome.best_value > 0.3


def test_two_tower_trials_below_the_median_are_pruned(planted):
    split = strong_split(planted)
    cfg = TwoTowerConfig(
        name="tt", dim=8, epochs=4, batch_size=512, num_negatives=16, threads=1, device="cpu", quiet=True,
        tuning=TuningConfig(n_trials=5, prune_warmup_epochs=1, space={"lr": ParamRange(low=1e-5, high=0.05, log=True)}),
    )  # fmt: skip
    outcome = tune(cfg, split.train, split.validation_set())
    states = [r.state for r in outcome.trials]
    assert "pruned" in states and "complete" in states
    pruned = next(r for r in outcome.trials if r.state == "pruned")
    assert pruned.epochs < cfg.epochs


def test_a_refusal_that_no_parameter_changes_stops_the_search_at_the_first_trial(planted):
    """EASE above its catalogue bound refuses whatever l2 is: one trial, then the refusal itself
    (not "no tuning trial finished" after n_trials identical failures)."""
    split = strong_split(planted)
    cfg = EASEConfig(name="e", max_items=10, tuning=TuningConfig(n_trials=5))
    logged: list[str] = []
    from recsys.config import RunConfig, SplitConfig

    run = RunConfig(models=[cfg], split=SplitConfig(validation_fraction=0.15))
    tracker = NullTracker()
    with pytest.raises(SetupError, match="max_items = 10"):
        tune_in_run(
            cfg, split, run, tracker=tracker, model_run=ModelRun("", "e", None, tracker), log=logged.append
        )
    trial_lines = [line for line in logged if " trial " in line]
    assert len(trial_lines) == 1 and "failed" in trial_lines[0] and "max_items = 10" in trial_lines[0]


def test_a_failed_trial_is_one_line_with_its_error_and_optuna_prints_no_traceback(planted, capsys, caplog):
    """Optuna logs a failed trial as a WARNING with its whole traceback; the search reports it
    through the hooks instead (state and error), and carries on with the next trial."""
    split = strong_split(planted)
    calls = {"n": 0}

    def build(trial_cfg):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom in trial zero")
        return build_model(trial_cfg)

    outcome = tune(WALS_TUNED.model_copy(update={"tuning": TuningConfig(n_trials=3)}), split.train,
                   split.validation_set(), build=build)  # fmt: skip
    assert [r.state for r in outcome.trials] == ["failed", "complete", "complete"]
    assert outcome.trials[0].error == "RuntimeError: boom in trial zero"
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err + caplog.text
    assert "boom" not in printed.out + printed.err + caplog.text


def test_space_names_are_checked_when_the_config_is_loaded():
    with pytest.raises(ValueError, match="unknown parameter"):
        WALSConfig(name="w", tuning=TuningConfig(space={"factor": [8, 16]}))
    with pytest.raises(ConfigError, match="nothing to tune"):
        from recsys.models.popularity import PopularityConfig

        search_space(PopularityConfig(name="p", tuning=TuningConfig()))


def test_a_split_whose_validation_part_came_out_empty_says_so_not_to_set_the_fraction():
    """A 12-user log under movielens.toml: validation_fraction = 0.1 is set, but the hash held out
    no validation user; the message used to say "set split.validation_fraction (e.g. 0.1)"."""
    from pipelines.tune import validation_or_refuse

    train = sp.csr_matrix(np.ones((12, 5), dtype=np.float32))
    empty = sp.csr_matrix((12, 5), dtype=np.float32)
    split = Split("strong_generalization", train, empty, validation=empty, validation_fold_in=empty)
    with pytest.raises(ConfigError) as caught:
        validation_or_refuse(split, "wals")
    message = str(caught.value)
    assert "of 12 users the split held out 0 for validation" in message
    assert "models.wals.tuning.enabled = false" in message and "e.g. 0.1" not in message
    with pytest.raises(ConfigError, match=r"set split.validation_fraction \(e.g. 0.1\)"):
        validation_or_refuse(dataclasses.replace(split, validation=None), "wals")


def test_a_config_that_tunes_needs_validation_users_and_set_reaches_the_tuning_section():
    from pathlib import Path

    from recsys.config import load_config

    with pytest.raises(ConfigError, match="validation_fraction"):
        load_config(None, ['models=[{name = "w", kind = "wals", tuning = {n_trials = 3}}]'])
    configs = Path(__file__).resolve().parents[2] / "pipelines" / "configs"
    cfg = load_config(
        configs / "movielens.toml", ["models.wals.tuning.n_trials=5", "models.ease.tuning.enabled=false"]
    )
    assert cfg.model("wals").tuning.n_trials == 5 and not cfg.model("ease").tuning.enabled
    for shipped in ("movielens.toml", "plays.toml"):  # on by default in both
        models = load_config(configs / shipped).models
        assert all(m.tuning is not None and m.tuning.enabled for m in models if m.kind != "popularity"), (
            shipped
        )


def test_a_diverging_trial_fails_and_is_never_chosen(planted):
    """A trial whose lr blows the towers up to zero vectors (every score ties) used to complete with
    a validation score of arbitrary lists and could be chosen: it now fails with the reason, and the
    search goes on and chooses among the trials that trained."""
    split = strong_split(planted)
    cfg = TwoTowerConfig(
        name="tt", dim=8, epochs=2, batch_size=128, num_negatives=16, threads=1, device="cpu", quiet=True,
        lr=0.05, eval_every=0,  # no per-epoch validation: nothing restores an earlier epoch
        tuning=TuningConfig(n_trials=4, prune=False, space={"lr": [0.05, 1e28]}),
    )  # fmt: skip
    outcome = tune(cfg, split.train, split.validation_set())
    by_lr = {lr: [r for r in outcome.trials if r.params["lr"] == lr] for lr in (0.05, 1e28)}
    assert by_lr[1e28] and all(r.state == "failed" and "training diverged" in r.error for r in by_lr[1e28])
    assert by_lr[0.05] and all(r.state == "complete" for r in by_lr[0.05])
    assert outcome.best_params["lr"] == 0.05


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without CUDA")
def test_a_missing_cuda_device_stops_the_search_at_the_first_trial(planted):
    """device = 'cuda' on a machine without one fails every parameter setting alike: it was a plain
    ModelError, so a tuned run tried (and printed) every trial before 'no tuning trial finished ...
    raise tuning.n_trials', a hint that cannot help."""
    split = strong_split(planted)
    cfg = TwoTowerConfig(
        name="tt", dim=8, epochs=1, batch_size=512, num_negatives=8, threads=1, device="cuda", quiet=True,
        tuning=TuningConfig(n_trials=4, space={"lr": ParamRange(low=1e-3, high=0.1, log=True)}),
    )  # fmt: skip
    from recsys.config import RunConfig, SplitConfig

    logged: list[str] = []
    run = RunConfig(models=[cfg], split=SplitConfig(validation_fraction=0.15))
    tracker = NullTracker()
    with pytest.raises(SetupError, match="no CUDA device"):
        tune_in_run(cfg, split, run, tracker=tracker, model_run=ModelRun("", "tt", None, tracker), log=logged.append)
    assert len([line for line in logged if " trial " in line]) == 1


def test_recsys_tune_reports_failed_and_pruned_trials_too():
    """`recsys tune` printed only completed trials: with Optuna's own failure lines silenced, a
    failed trial would vanish from its output."""
    from pipelines.tune import _ProgressHooks, trial_line
    from recsys.tuning import TrialRecord

    seen: list[str] = []
    hooks = _ProgressHooks(lambda record: seen.append(trial_line(record)))
    hooks.finish(TrialRecord(0, {"lr": 0.04392703808058264, "dim": 64}, 0.25, "complete", 1.0))
    hooks.finish(TrialRecord(1, {"lr": 9.0}, None, "failed", 1.0, error="ModelError: training diverged"))
    hooks.finish(TrialRecord(2, {"lr": 1e-5}, None, "pruned", 1.0))
    assert seen[0] == "trial 0: complete 0.2500 lr=0.04393, dim=64"  # 4 significant digits, not 16
    assert "trial 1: failed" in seen[1] and "(ModelError: training diverged)" in seen[1]
    assert seen[2].startswith("trial 2: pruned")


def test_the_timeout_guard_stops_a_running_trial_and_keeps_the_first_one_as_it_stands(planted, monkeypatch):
    """One two-tower trial on a 70k-item log ran 19 minutes against a 240 s guard that was only
    checked between trials. Now a running trial stops at its next epoch; the first trial is kept
    (the search needs a model), a later one is pruned. A slow set-up before the first trial (a
    loaded machine) used up most of the guard: Optuna's own clock, started after it, then began a
    second trial; the guard stops the study itself."""
    import recsys.tuning as tuning_module

    real = tuning_module._popularity
    monkeypatch.setattr(tuning_module, "_popularity", lambda train: time.sleep(1.45) or real(train))
    split = strong_split(planted)
    cfg = TwoTowerConfig(
        name="tt", dim=8, epochs=400, batch_size=512, num_negatives=16, threads=1, device="cpu", quiet=True,
        tuning=TuningConfig(n_trials=3, timeout_s=1.5, prune=False),
    )  # fmt: skip
    outcome = tune(cfg, split.train, split.validation_set())
    first = outcome.trials[0]
    assert first.state == "complete" and 0 < first.epochs < cfg.epochs and outcome.model is not None
    assert "timeout_s = 1.5 s guard" in first.error and outcome.timed_out
    assert len(outcome.trials) == 1  # no trial starts after the guard


def test_the_timeout_guard_scores_a_later_trial_as_it_stands_and_keeps_the_better_one(planted):
    """A trial stopped by the guard after another has finished is scored on the validation users as
    it stands and competes with the finished one; no trial starts after it. It was pruned: a
    loaded machine that cut the second two-tower trial of a check-in log left the untuned first
    trial, below popularity, though the cut one already scored above it. Driven by the clock the
    guard reads, advanced from the per-epoch hook: no sleeping, no timing."""
    now = [0.0]

    class Hooks:
        def start(self, number, params):
            def on_epoch(step, metrics):
                if number == 1 and step == 2:  # trial 1's second epoch: the guard's time is up
                    now[0] = 1e6

            return on_epoch

        def finish(self, record):
            pass

    split = strong_split(planted)
    cfg = WALS_TUNED.model_copy(update={"tuning": WALS_TUNED.tuning.model_copy(update={"timeout_s": 1e5, "prune": False})})
    outcome = tune(cfg, split.train, split.validation_set(), hooks=Hooks(), clock=lambda: now[0])
    first, second = outcome.trials
    assert first.state == "complete" and first.error is None and first.epochs == cfg.iterations
    assert second.state == "complete" and second.epochs == 2 and "timeout_s = 100000 s guard" in second.error
    assert second.value is not None and second.value != first.value  # scored: two settings, two values
    better = max((first, second), key=lambda trial: trial.value)  # ties keep the earlier
    assert outcome.timed_out and outcome.best_value == better.value and outcome.best_params == better.params
    assert {name: getattr(outcome.model.config, name) for name in better.params} == better.params  # its model


def test_the_timeout_guard_keeps_an_ease_trial_whose_one_solve_had_finished(planted):
    """EASE calls its callback once, after the solve: when the guard's time ran out during a solve
    (tuning ease on Last.fm, ~20 s a trial against 240 s), the finished trial was pruned with
    "stopped after 1 epoch(s)", though nothing was stopped. It is scored and kept; no trial
    starts after it. Driven by the clock the guard reads: no sleeping, no timing."""
    now = [0.0]

    class Hooks:
        def start(self, number, params):
            def on_epoch(step, metrics):
                if number == 1:  # trial 1's solve ends after the guard's time
                    now[0] = 1e6

            return on_epoch

        def finish(self, record):
            pass

    split = strong_split(planted)
    cfg = EASEConfig(name="ease", tuning=TuningConfig(n_trials=4, timeout_s=1e5))
    outcome = tune(cfg, split.train, split.validation_set(), hooks=Hooks(), clock=lambda: now[0])
    first, second = outcome.trials
    assert first.state == second.state == "complete" and second.error is None and second.value is not None
    assert outcome.timed_out and outcome.best_value == max(first.value, second.value)


def _paused_study(n_trials: int, on_plot):
    """A finished study whose first trial read from inside Optuna's plotting calls `on_plot`, so a
    test can order two threads' plots (`plot_study` itself reads `study.trials`, with no states)."""
    import optuna

    class Paused(optuna.study.Study):
        hooked = False

        def get_trials(self, deepcopy=True, states=None):
            if states is not None and not self.hooked:
                self.hooked = True
                on_plot()
            return super().get_trials(deepcopy=deepcopy, states=states)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=n_trials))
    study.optimize(lambda t: t.suggest_float("lr", 0, 1) + t.suggest_float("temperature", 0, 1), n_trials=n_trials)
    study.__class__ = Paused
    return study


def test_two_models_plotting_their_searches_at_once_keep_the_runs_warnings(tmp_path):
    """Two models of a run finish their searches together (ML-1M: both two-towers hit the guard
    within a second). Each plot silenced Optuna's experimental notice with `catch_warnings`, which
    saves and restores the process-wide filter list: interleaved, the second block restored the
    first one's "ignore everything" for good, and every later warning of the run (a model's zero
    vectors, sampled metrics) was dropped. Here the second plot is held inside Optuna's plotting
    until the first has finished, the crossing that leaked; with plots taking turns, the first
    waits for it in vain (0.5 s) and they run one after the other."""
    import threading
    import warnings

    from recsys.errors import RecsysWarning
    from recsys.tuning import plot_study

    first_done, second_inside = threading.Event(), threading.Event()
    first = _paused_study(4, lambda: second.start() or second_inside.wait(0.5))
    late = _paused_study(5, lambda: second_inside.set() or first_done.wait(10))
    second = threading.Thread(target=plot_study, args=(late, tmp_path / "second"))
    with warnings.catch_warnings(record=True) as shown:  # keeps the filters in force, records what passes
        plot_study(first, tmp_path / "first")
        first_done.set()
        second.join(10)
        warnings.warn("a model's vectors are zero", RecsysWarning, stacklevel=1)
    assert first.hooked and late.hooked and not second.is_alive()
    assert [str(w.message) for w in shown] == ["a model's vectors are zero"]
    assert sorted(p.name for p in (tmp_path / "second").iterdir()) == ["optimization_history.png", "param_importances.png"]


def test_plotting_a_search_leaves_the_process_matplotlib_style_as_it_was(tmp_path):
    """Each of Optuna's matplotlib plots calls `plt.style.use("ggplot")`, a process-wide change:
    after the first model's search was plotted, every plot of the run logged later (recall@k,
    training curves, embeddings) was drawn grey-on-grey in ggplot style. The search's plots keep
    their own look; the settings around them are put back."""
    import matplotlib

    from recsys.tracking.plots import _figure
    from recsys.tuning import plot_study

    before = dict(matplotlib.rcParams)
    written = plot_study(_paused_study(4, lambda: None), tmp_path / "plots")
    assert sorted(p.name for p in written) == ["optimization_history.png", "param_importances.png"]
    changed = {key for key, value in matplotlib.rcParams.items() if before.get(key) != value}
    assert changed == set()
    assert _figure((2, 2)).subplots().get_facecolor() == matplotlib.colors.to_rgba(before["axes.facecolor"])


def test_a_two_tower_with_a_checkpoint_dir_tunes_every_trial_today_and_on_the_next_days_data(planted, tmp_path):
    """`checkpoint_dir` is one training's resume point. Every trial checkpointed into it, so each
    trial after the first met trial 0's checkpoint and failed ("belongs to a different config"), and
    a scheduled run on grown data failed every trial, hence the model (found by QA). Trials do not
    checkpoint: all complete, on both days, and nothing is written there."""
    split = strong_split(planted)
    checkpoints = tmp_path / "checkpoints"
    cfg = TwoTowerConfig(
        name="tt", dim=8, epochs=2, batch_size=512, num_negatives=16, threads=1, device="cpu", quiet=True,
        checkpoint_dir=str(checkpoints), tuning=TuningConfig(n_trials=2, prune=False, space={"lr": [0.01, 0.04]}),
    )  # fmt: skip
    first = tune(cfg, split.train, split.validation_set())
    assert [r.state for r in first.trials] == ["complete"] * 2, [r.error for r in first.trials]
    grown = split.train.tolil()
    grown[0, np.flatnonzero(split.train[0].toarray().ravel() == 0)[0]] = 1.0  # one more interaction
    second = tune(cfg, sp.csr_matrix(grown, dtype=np.float32), split.validation_set())
    assert [r.state for r in second.trials] == ["complete"] * 2, [r.error for r in second.trials]
    assert not checkpoints.exists()


def test_recsys_tune_trains_a_students_distillation_teacher_first(planted):
    """`recsys tune --model <student>` built every trial without the teacher the config names, so
    each trial failed ("call model.set_teacher(teacher) before fit") and the search ended in "no
    tuning trial finished", exit 2 (found by QA). The teacher is trained first, as `recsys run`
    and `recsys train` do, and the student's trials learn from it."""
    from pipelines.tune import tune_model
    from recsys.config import RunConfig, SplitConfig

    teacher = WALSConfig(name="wals", factors=8, iterations=3, threads=1, seed=5)
    student = TwoTowerConfig(
        name="student", dim=8, epochs=1, batch_size=512, num_negatives=16, threads=1, device="cpu", quiet=True,
        distill={"teacher": "wals", "top_m": 10}, tuning=TuningConfig(space={"lr": [0.01, 0.02]}),
    )  # fmt: skip
    cfg = RunConfig(models=[teacher, student], split=SplitConfig(validation_fraction=0.15))
    said: list[str] = []
    result = tune_model(cfg, strong_split(planted), "student", trials=1, log=said.append)
    assert [t["trial"] for t in result.trials] == [0] and np.isfinite(result.best_value)
    assert said == ["training wals, the teacher 'student' distills from"]
