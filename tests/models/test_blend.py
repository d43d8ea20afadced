"""`kind = "blend"`: a weighted, scale-normalised sum of other models' scores (recsys.models.blend).

Members are small EASE / WALS models fitted on the planted data (milliseconds each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.config import load_config
from recsys.data.split import EvalSet
from recsys.distill import distillation_waves
from recsys.errors import ConfigError, ModelError
from recsys.evaluation.ranking import topk
from recsys.models.base import Recommender, build_model
from recsys.models.blend import Blend, BlendConfig
from recsys.models.ease import EASEConfig
from recsys.models.wals import WALSConfig
from recsys.tuning import TuningConfig, tune

from .conftest import make_planted
from .contract import RecommenderContract


def _members(train: sp.csr_matrix) -> dict[str, Recommender]:
    return {
        "ease": build_model(EASEConfig(name="ease")).fit(train),
        "wals": build_model(WALSConfig(name="wals", factors=16, iterations=5, threads=1)).fit(train),
    }


class TestBlendContract(RecommenderContract):
    model_config = BlendConfig(name="blend", members=["ease", "wals"], weights={"wals": 0.5}, scale_users=50)
    min_recall_at_10 = 0.45
    seed_sensitive = False  # item vectors are the members' own; the seed only picks the users that set the scales

    def fit_model(self, model: Recommender, train: sp.csr_matrix, **fit_kwargs: Any) -> Recommender:
        model.set_members(_members(train))  # type: ignore[attr-defined]
        return model.fit(train, **fit_kwargs)


def _scores(model: Recommender, users: np.ndarray | slice) -> np.ndarray:
    return model.user_factors[users] @ model.item_factors.T


def test_blend_scores_are_the_weighted_sum_of_scale_normalised_member_scores(planted):
    members = _members(planted.train)
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"], weights={"ease": 0.3, "wals": 0.8}))
    blend.set_members(members)
    blend.fit(planted.train)
    # the scale is the within-user spread of the member's scores over all training users (200 < 512)
    for name, member in members.items():
        scores = _scores(member, slice(None)).astype(np.float64)
        assert blend.scales[name] == pytest.approx(np.sqrt(np.var(scores, axis=1).mean()), rel=1e-4)
    direct = sum(w * _scores(members[n], slice(None)) / blend.scales[n] for n, w in {"ease": 0.3, "wals": 0.8}.items())
    tolerance = 1e-5 * np.abs(direct).max()  # float32 dot products of different widths
    np.testing.assert_allclose(_scores(blend, slice(None)), direct, atol=tolerance)
    rows = planted.train[:7]
    folded = blend.fold_in(rows) @ blend.item_factors.T
    direct = sum(w * (members[n].fold_in(rows) @ members[n].item_factors.T) / blend.scales[n]
                 for n, w in {"ease": 0.3, "wals": 0.8}.items())  # fmt: skip
    np.testing.assert_allclose(folded, direct, atol=tolerance)


def test_a_member_weighing_zero_is_left_out_and_save_load_keeps_scores_and_fold_in(planted, tmp_path: Path):
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"], weights={"ease": 0.0}))
    blend.set_members(_members(planted.train))
    blend.fit(planted.train)
    assert list(blend.members) == ["wals"] and blend.item_factors.shape[1] == 16
    full = Blend(BlendConfig(name="b2", members=["ease", "wals"]))
    full.set_members(_members(planted.train))
    full.fit(planted.train)
    loaded = Recommender.load(full.save(tmp_path / "blend"))
    assert isinstance(loaded, Blend) and loaded.scales == full.scales
    assert sorted(p.name for p in (tmp_path / "blend" / "members").iterdir()) == ["ease", "wals"]
    assert not list((tmp_path / "blend").rglob("*.pkl"))
    np.testing.assert_array_equal(_scores(loaded, slice(None)), _scores(full, slice(None)))
    rows = planted.train[10:20]
    np.testing.assert_array_equal(loaded.fold_in(rows), full.fold_in(rows))


def test_a_blend_refuses_members_trained_on_other_data(planted):
    other = make_planted(n_users=150)
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"]))
    blend.set_members(_members(other.train))
    with pytest.raises(ModelError, match="trained on the same split"):
        blend.fit(planted.train)


def _recall_at_10(model: Recommender, train: sp.csr_matrix, test: sp.csr_matrix, users: np.ndarray) -> float:
    items, _ = topk(model.user_factors[users], model.item_factors, 10, exclude=train[users])
    truth = test[users]
    hits = [len(set(row) & set(truth[r].indices)) / min(10, truth[r].nnz) for r, row in enumerate(items)]
    return float(np.mean(hits))


def test_a_tuned_blend_of_members_that_each_saw_half_of_the_signal_beats_both_on_held_out_users():
    """Member `a` (EASE) is trained on clusters 0-1's items only, `b` (WALS) on 2-3's: each knows
    half of the users. Configured with b's weight 0 (the blend is `a` alone), the search on the
    even users' validation interactions must find a weight for b; judged on the odd users, which
    the search never saw, the tuned blend beats both members. After the configured weights the
    search tries each member alone (`a` alone is the configured trial already), so on validation
    a tuned blend is never below its best member."""
    planted = make_planted(n_users=240, seed=3)
    train, test = planted.train, planted.test
    half = np.isin(planted.item_cluster, [0, 1]).astype(np.float32)
    only = {"a": sp.csr_matrix(train @ sp.diags(half)), "b": sp.csr_matrix(train @ sp.diags(1 - half))}
    members = {
        "a": build_model(EASEConfig(name="a")).fit(only["a"]),
        "b": build_model(WALSConfig(name="b", factors=16, iterations=8, threads=1)).fit(only["b"]),
    }
    cfg = BlendConfig(name="blend", members=["a", "b"], weights={"b": 0.0}, tuning=TuningConfig(n_trials=8))
    users = np.arange(train.shape[0])
    validation = EvalSet(truth=sp.csr_matrix(sp.diags((users % 2 == 0).astype(np.float32)) @ test), exclude=train)

    def build(config):
        model = build_model(config)
        model.set_members(members)
        return model

    outcome = tune(cfg, train, validation, metric="recall@10", build=build)
    assert outcome.trials[0].params == {"weights.a": 1.0, "weights.b": 0.0}  # trial 0: the configured weights
    assert [t.params for t in outcome.trials[1:2]] == [{"weights.a": 0.0, "weights.b": 1.0}]  # then each member alone
    assert outcome.best_params["weights.b"] > 0
    held_out = users[users % 2 == 1]
    recall = {name: _recall_at_10(m, train, test, held_out) for name, m in members.items()}
    blended = _recall_at_10(outcome.model, train, test, held_out)
    assert blended > max(recall.values()) + 0.15, (blended, recall)
    # the searched weights won out of fold too (searched on one half of the validation users, scored
    # on the other), so they are kept
    check = outcome.cross_check
    assert check is not None and check.kept_searched and check.delta > 0 and check.p_value < 0.05
    assert check.n_users == int((users % 2 == 0).sum()) and len(check.fold_params) == 2


def _noise_case(cross_check: bool | None):
    """Two members of about equal quality (EASE and WALS on the same planted data), equal weights
    configured, and 24 validation users: the search finds weights that score higher on those users
    by chance. Returns (outcome, members, train, validation)."""
    planted = make_planted(n_users=200, seed=7)
    train = planted.train
    members = _members(train)
    cfg = BlendConfig(name="blend", members=["ease", "wals"],
                      tuning=TuningConfig(n_trials=10, cross_check=cross_check))  # fmt: skip
    chosen = np.zeros(train.shape[0], dtype=np.float32)
    chosen[np.arange(0, train.shape[0], 8)] = 1.0  # every 8th user: 25 validation users
    validation = EvalSet(truth=sp.csr_matrix(sp.diags(chosen) @ planted.test), exclude=train)

    built: list[BlendConfig] = []

    def build(config):
        built.append(config)
        model = build_model(config)
        model.set_members(members)
        return model

    outcome = tune(cfg, train, validation, metric="recall@10", build=build)
    return outcome, members, train, validation, built


def test_a_blend_keeps_its_configured_weights_when_the_searched_ones_win_only_on_the_users_that_chose_them():
    """h88's finding on ML-100K: weights searched on ~100 validation users scored below equal weights
    on other users. The out-of-fold check (recsys.tuning.cross_check) keeps the configured weights
    unless searching wins on users the search did not see, significantly."""
    outcome, members, train, _, built = _noise_case(None)  # a blend checks by default
    searched = max((r for r in outcome.trials if r.value is not None), key=lambda r: r.value)
    assert searched.value > outcome.trials[0].value  # the search found "better" weights on its own users...
    check = outcome.cross_check
    assert check is not None and not check.kept_searched and check.n_users == 25  # ...which did not hold up
    # each half's search chose on its own 12-13 users (the same search on all 25 would choose the same twice)
    assert check.fold_params != [searched.params, searched.params]
    assert check.p_value >= 0.05 or check.delta <= 0
    assert outcome.best_params == {"weights.ease": 1.0, "weights.wals": 1.0}
    assert outcome.best_value == pytest.approx(outcome.trials[0].value, abs=1e-12)
    configured = Blend(BlendConfig(name="blend", members=["ease", "wals"]))
    configured.set_members(members)
    configured.fit(train)
    np.testing.assert_allclose(_scores(outcome.model, slice(None)), _scores(configured, slice(None)), rtol=1e-6)
    # three searches of 10 trials, nothing fitted besides: the configured model is trial 0's
    assert len(built) == 30 and outcome.model.config.tuning is None


def test_the_cross_checks_half_searches_see_only_their_half_and_score_each_user_as_the_whole_set_does(planted):
    from recsys.tuning import only_users

    train = planted.train
    validation = EvalSet(truth=planted.test, exclude=train)
    half = validation.users[::2]
    part = only_users(validation, half)
    np.testing.assert_array_equal(part.users, half)
    assert part.exclude is validation.exclude and part.truth[half].nnz == validation.truth[half].nnz
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"]))
    blend.set_members(_members(train))
    blend.fit(train)
    from recsys.data.matrix import item_popularity
    from recsys.evaluation.evaluate import evaluate
    from recsys.tuning import _validation_eval_config

    cfg, popularity = _validation_eval_config("recall@10"), item_popularity(train)
    whole = evaluate(blend, validation, cfg, item_popularity=popularity).per_user
    alone = evaluate(blend, part, cfg, item_popularity=popularity).per_user
    np.testing.assert_allclose(alone["recall@10"].to_numpy(), whole["recall@10"].to_numpy()[::2], atol=0)


def test_with_the_cross_check_off_a_blend_keeps_the_searched_weights():
    outcome, *_ = _noise_case(False)
    best = max((r for r in outcome.trials if r.value is not None), key=lambda r: r.value)
    assert outcome.cross_check is None
    assert outcome.best_params == best.params != {"weights.ease": 1.0, "weights.wals": 1.0}


# ----------------------------------------------------------------------------- config
def _models(*specs: str) -> str:
    return "models=[" + ", ".join(specs) + "]"


WALS = '{name="wals", kind="wals"}'
EASE = '{name="ease", kind="ease"}'


def test_config_checks_members_and_puts_a_blend_in_a_wave_after_them():
    cfg = load_config(None, [_models('{name="b", kind="blend", members=["ease", "wals"]}', WALS, EASE)])
    assert [[m.name for m in wave] for wave in distillation_waves(cfg.models)] == [["wals", "ease"], ["b"]]
    two = load_config(None, [_models('{name="b2", kind="blend", members=["b", "wals"]}',
                                     '{name="b", kind="blend", members=["ease", "wals"]}', WALS, EASE)])  # fmt: skip
    assert [[m.name for m in wave] for wave in distillation_waves(two.models)] == [["wals", "ease"], ["b"], ["b2"]]

    with pytest.raises(ConfigError, match=r"blend members \['nope'\] are not models of this run"):
        load_config(None, [_models('{name="b", kind="blend", members=["wals", "nope"]}', WALS)])
    with pytest.raises(ConfigError, match="cycle: a -> c -> a"):
        load_config(None, [_models('{name="a", kind="blend", members=["c", "wals"]}',
                                   '{name="c", kind="blend", members=["a", "wals"]}', WALS)])  # fmt: skip
    with pytest.raises(ConfigError, match="names itself"):
        load_config(None, [_models('{name="b", kind="blend", members=["b", "wals"]}', WALS)])
    with pytest.raises(ConfigError, match="not members"):
        load_config(None, [_models('{name="b", kind="blend", members=["ease", "wals"], weights={pop=1}}', WALS, EASE)])
    with pytest.raises(ConfigError, match="at least 2"):
        load_config(None, [_models('{name="b", kind="blend", members=["wals"]}', WALS)])
    for weight in ("-1.0", "inf", "nan"):  # a blend's vectors are never checked for divergence: weights are
        with pytest.raises(ConfigError, match="finite and >= 0"):
            load_config(None, [_models(f'{{name="b", kind="blend", members=["ease", "wals"], weights={{wals={weight}}}}}', WALS, EASE)])
    tuned = load_config(None, ["split.validation_fraction=0.1", _models(
        '{name="b", kind="blend", members=["ease", "wals"], tuning={space={"weights.ease"={low=0, high=2}}}}', WALS, EASE
    )])  # fmt: skip
    assert tuned.model("b").tuning.space["weights.ease"].high == 2
    with pytest.raises(ConfigError, match="unknown parameter"):
        load_config(None, ["split.validation_fraction=0.1", _models(
            '{name="b", kind="blend", members=["ease", "wals"], tuning={space={"weights.pop"={low=0, high=2}}}}', WALS, EASE
        )])  # fmt: skip


def test_recsys_tune_refuses_a_blend_alone_before_any_work():
    from pipelines.tune import tune_model

    cfg = load_config(None, [_models('{name="b", kind="blend", members=["ease", "wals"]}', WALS, EASE)])
    with pytest.raises(ConfigError, match="recsys run"):
        tune_model(cfg, None, "b", trials=3)  # type: ignore[arg-type] - refused before the split is read


TINY = [
    "data.synthetic.n_users=120", "data.synthetic.n_items=60", "data.synthetic.n_clusters=3",
    "data.synthetic.interactions_per_user=12", "data.min_user_interactions=2", "split.validation_fraction=0.15",
    "evaluation.ks=[5, 20]", "evaluation.bootstrap_samples=20", "tracking.enabled=false", "folding.enabled=false",
]  # fmt: skip


def test_recsys_train_trains_a_blend_after_its_members_and_alone_from_the_saved_ones(tmp_path: Path):
    from typer.testing import CliRunner

    from recsys.cli import app

    config = tmp_path / "run.toml"
    cfg = load_config(None, [*TINY, f'data.processed_dir="{tmp_path / "p"}"', f'data.raw_dir="{tmp_path / "raw"}"', _models(
        '{name="b", kind="blend", members=["ease", "wals"]}', '{name="wals", kind="wals", factors=8, iterations=3}',
        '{name="ease", kind="ease"}',
    )])  # fmt: skip
    config.write_text(cfg.to_toml())
    models = tmp_path / "models"
    runner = CliRunner()
    alone = runner.invoke(app, ["train", "--config", str(config), "--models", str(models), "--model", "b"])
    assert alone.exit_code == 2 and "needs at least 2 trained members" in alone.output
    assert f"neither trained by this command nor saved under {models}" in " ".join(alone.output.split())  # where it looked
    both = runner.invoke(app, ["train", "--config", str(config), "--models", str(models)])
    assert both.exit_code == 0, both.output
    assert both.output.index("trained ease") < both.output.index("trained b ")  # members first
    again = runner.invoke(app, ["train", "--config", str(config), "--models", str(models), "--model", "b"])
    assert again.exit_code == 0, again.output
    loaded = Recommender.load(models / "b")
    assert isinstance(loaded, Blend) and list(loaded.members) == ["ease", "wals"]


def test_recsys_train_refuses_to_blend_saved_members_trained_on_another_split(tmp_path: Path):
    """Members loaded from --models were once blended whatever split they were trained on (only the
    shape was checked): after `--set split.seed=7` the members knew that split's test interactions,
    and the blend, saved with the new split's record, passed `recsys evaluate`'s own check with
    inflated metrics. They are checked as evaluate checks a saved model: exit 2, nothing saved; a
    distillation teacher loaded from --models too."""
    from typer.testing import CliRunner

    from recsys.cli import app

    config = tmp_path / "run.toml"
    cfg = load_config(None, [*TINY, f'data.processed_dir="{tmp_path / "p"}"', f'data.raw_dir="{tmp_path / "raw"}"', _models(
        '{name="b", kind="blend", members=["ease", "wals"]}', '{name="wals", kind="wals", factors=8, iterations=3}',
        '{name="ease", kind="ease"}', '{name="kd", kind="two_tower", epochs=1, distill={teacher="wals"}}',
    )])  # fmt: skip
    config.write_text(cfg.to_toml())
    models = tmp_path / "models"
    runner = CliRunner()
    members = runner.invoke(app, ["train", "--config", str(config), "--models", str(models), "-m", "ease", "-m", "wals"])
    assert members.exit_code == 0, members.output
    other = runner.invoke(app, ["train", "--config", str(config), "--models", str(models), "-m", "b", "--set", "split.seed=7"])
    assert other.exit_code == 2, other.output
    assert "trained on another split" in other.output and "'b' would learn from it" in other.output
    assert not (models / "b").exists()
    student = runner.invoke(app, ["train", "--config", str(config), "--models", str(models), "-m", "kd", "--set", "split.seed=7"])
    assert student.exit_code == 2 and "'kd' would learn from it" in student.output, student.output  # a teacher alike
    handoff = runner.invoke(app, ["train", "--config", str(config), "--models", str(models), "-m", "kd",
                                  "--handoff", str(tmp_path / "h"), "--set", "split.seed=7"])  # fmt: skip
    assert handoff.exit_code == 2 and "'kd' would learn from it" in handoff.output, handoff.output  # what --nproc ranks load


def test_the_champion_blends_weights_are_queued_in_the_searchs_own_keys():
    """The next run's search starts from the champion's parameters (`pipelines.tune`): a blend's
    saved config holds `weights` as a dict while its search draws `weights.<member>`, so without
    the conversion the champion's weights were dropped from the queue."""
    from pipelines.tune import as_tuning_params
    from recsys.tuning import search_space, warm_starts

    cfg = BlendConfig(name="blend", members=["ease", "wals"], tuning=TuningConfig(n_trials=4))
    saved = BlendConfig(name="old-blend", members=["ease", "wals"], weights={"ease": 0.2, "wals": 0.7}).model_dump()
    queued = warm_starts({}, search_space(cfg), [as_tuning_params(cfg, saved)])
    assert queued == [{"weights.ease": 0.2, "weights.wals": 0.7}]
    unreadable = {"members": ["ease"], "weights": {"ease": 1.0}}  # another version's config: queued as it is
    assert as_tuning_params(cfg, unreadable) == unreadable


def test_a_blend_whose_vectors_exceed_its_memory_bound_is_skipped_naming_the_widest_member(planted):
    """The blend holds a copy of its members' vectors (EASE's n_items wide): above max_memory_gb
    it is a ModelSkipped (the run goes on without it) before anything is concatenated."""
    from recsys.errors import ModelSkipped

    n_users, n_items = planted.train.shape
    width = n_items + 16  # EASE's vectors + WALS's 16 factors
    needed_gb = 4 * (n_users + n_items) * width / 1e9
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"], max_memory_gb=needed_gb * 0.99))
    blend.set_members(_members(planted.train))
    with pytest.raises(ModelSkipped, match=rf"{width:,} wide \(ease {n_items:,}, wals 16\).*leave 'ease' out of members"):
        blend.fit(planted.train)
    roomy = Blend(BlendConfig(name="b", members=["ease", "wals"], max_memory_gb=needed_gb * 1.01))
    roomy.set_members(_members(planted.train))
    assert roomy.fit(planted.train).item_factors.shape[1] == width


def test_a_killed_runs_member_workspace_is_removed_when_the_next_run_starts(tmp_path: Path, monkeypatch):
    """A run hands blend members (and distillation teachers) over in a private $TMPDIR directory,
    a copy of every member (EASE's n_items^2 too). A run killed with -9 left it for ever (one
    found after a kill-9 QA run); the next run's start removes those of runs that no longer run."""
    import os
    import tempfile

    from pipelines.run import TEACHERS_PREFIX, teachers_workspace

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{TEACHERS_PREFIX}-999999999-abcd"  # above any pid_max: no such process
    (dead / "ease").mkdir(parents=True)
    cfg = load_config(None, [_models('{name="b", kind="blend", members=["ease", "wals"]}',
                                     '{name="wals", kind="wals"}', '{name="ease", kind="ease"}')])  # fmt: skip
    with teachers_workspace(cfg) as workspace:
        assert workspace is not None and workspace.name.startswith(f"{TEACHERS_PREFIX}-{os.getpid()}-")
        assert not dead.exists()
        (workspace / "wals").mkdir()
    assert not workspace.exists()


def test_a_members_scale_is_computed_once_for_the_trials_of_a_search(planted, monkeypatch):
    """Every tuning trial fits a new blend on the same fitted members and sample: the scales (a
    users x n_items product per member, n_items wide with EASE) are remembered per member and
    sample, and computed anew for a member refitted in place."""
    from recsys.models import blend as blend_module

    calls: list[str] = []
    real = blend_module._score_scale
    monkeypatch.setattr(blend_module, "_score_scale", lambda m, u, c: calls.append(m.config.name) or real(m, u, c))
    members = _members(planted.train)
    first = Blend(BlendConfig(name="b", members=["ease", "wals"], weights={"wals": 0.5}))
    first.set_members(members)
    first.fit(planted.train)
    second = Blend(BlendConfig(name="b", members=["ease", "wals"], weights={"ease": 0.2}))
    second.set_members(members)
    second.fit(planted.train)
    assert sorted(calls) == ["ease", "wals"] and second.scales == first.scales
    members["wals"].fit(planted.train[:, :])  # refitted in place: new vectors, a new scale
    third = Blend(BlendConfig(name="b", members=["ease", "wals"]))
    third.set_members(members)
    third.fit(planted.train)
    assert sorted(calls) == ["ease", "wals", "wals"]
    for _ in range(3):  # and again: a fit is told apart by its fit_token, not by where its arrays lie
        members["wals"].fit(planted.train)
        again = Blend(BlendConfig(name="b", members=["ease", "wals"]))
        again.set_members(members)
        again.fit(planted.train)
    assert sorted(calls) == ["ease", *["wals"] * 5]
    # the training users' vectors are made on first use (a trial scored on folded-in users never
    # builds them), and are the weighted members' own
    assert again._users is None
    np.testing.assert_allclose(again.user_factors[:, -16:], members["wals"].user_factors / again.scales["wals"], rtol=1e-6)


# ----------------------------------------------------------------------------- scale and fit wiring
# (each test below fails when a piece of the blend's wiring is dropped: mutation testing found them
# unguarded)


def _spread(member: Recommender, users: np.ndarray) -> float:
    """The scale by its definition: sqrt(mean over `users` of the variance of their scores)."""
    scores = _scores(member, users).astype(np.float64)
    return float(np.sqrt(np.var(scores, axis=1).mean()))


def test_a_remembered_scale_belongs_to_its_user_sample_and_one_user_is_its_own_spread(planted):
    """`score_scale` remembers a scale per member *and sample*: keyed by the member's fit alone, a
    blend fitted with another seed or scale_users would reuse the first sample's scale."""
    from recsys.models.blend import score_scale

    wals = build_model(WALSConfig(name="wals", factors=16, iterations=5, threads=1)).fit(planted.train)
    first, other = np.arange(0, 200, 2), np.array([1, 7, 9, 30, 31, 77])
    assert score_scale(wals, first) == pytest.approx(_spread(wals, first), rel=1e-5)
    assert score_scale(wals, other) == pytest.approx(_spread(wals, other), rel=1e-5)
    assert _spread(wals, other) != pytest.approx(_spread(wals, first), rel=1e-3)  # the samples do differ
    one = np.array([5])  # a single training user: its own spread, not half of it
    assert score_scale(wals, one) == pytest.approx(_spread(wals, one), rel=1e-5)


def test_the_scale_is_sampled_from_users_with_history_only(planted):
    """Users without training rows have no learned vector (EASE: a zero row; scores all 0) and
    would pull a scale towards 0; users with exactly one interaction are training users like any."""
    train = planted.train.tolil()
    for user in range(0, 40):  # no history
        train.rows[user], train.data[user] = [], []
    for user in range(40, 80):  # exactly one interaction
        train.rows[user], train.data[user] = train.rows[user][:1], train.data[user][:1]
    train = sp.csr_matrix(train)
    members = {"ease": build_model(EASEConfig(name="ease")).fit(train)}
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"], scale_users=1000))  # every candidate user
    blend.set_members(members)
    blend.fit(train)
    with_history = np.flatnonzero(np.diff(train.indptr) > 0)
    assert with_history.min() == 40 and with_history.size == 160
    assert blend.scales["ease"] == pytest.approx(_spread(members["ease"], with_history), rel=1e-5)


def test_a_member_that_scores_every_item_alike_is_refused_by_name(planted):
    """Zero spread (a diverged member's zero vectors): dividing by its scale would blow the blend up."""
    members = _members(planted.train)
    members["wals"].item_factors[:] = 0.0
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"]))
    blend.set_members(members)
    with pytest.raises(ModelError, match=r"member 'wals' scores every item alike .*\(spread 0\).*drop it from members"):
        blend.fit(planted.train)


def test_a_blend_without_members_or_with_strangers_says_what_to_do(planted):
    blend = Blend(name="b", members=["ease", "wals"], weights={"ease": 0.25})  # keyword config: kept
    assert blend.config.members == ["ease", "wals"] and blend.config.member_weights()["ease"] == 0.25
    with pytest.raises(ModelError, match=r"no member to blend .*none handed over with weight > 0\); train the members first"):
        blend.fit(planted.train)
    with pytest.raises(ModelError, match=r"\['popularity'\] are not members \['ease', 'wals'\]"):
        blend.set_members({"ease": _members(planted.train)["ease"], "popularity": build_model(EASEConfig(name="p"))})
    other = make_planted(n_users=150)
    blend.set_members(_members(other.train))
    with pytest.raises(ModelError, match=r"'ease' was trained on 150 x 120 but the blend on 200 x 120"):
        blend.fit(planted.train)


def test_a_blend_fits_at_exactly_its_memory_bound_and_a_refusal_names_the_shape(planted):
    from recsys.errors import ModelSkipped

    n_users, n_items = planted.train.shape
    exact = 4 * (n_users + n_items) * (n_items + 16) / 1e9  # the bound's own arithmetic
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"], max_memory_gb=exact))
    blend.set_members(_members(planted.train))
    blend.fit(planted.train)
    assert [h["step"] for h in blend.history] == [1.0]  # one computation: one step
    tight = Blend(BlendConfig(name="b", members=["ease", "wals"], max_memory_gb=exact * 0.999))
    tight.set_members(_members(planted.train))
    with pytest.raises(ModelSkipped, match=rf"for {n_users} users and {n_items} items"):
        tight.fit(planted.train)


def test_a_blend_folds_a_sequence_member_in_with_the_histories_times():
    """`fold_in_ordered` hands the times on to each member: a sequence tower's fold-in reads the
    order, and a blend that dropped them folded every held-out user in index order."""
    from recsys.models.two_tower import TwoTowerConfig

    small = make_planted(n_users=32, n_items=16, n_clusters=2, min_items=4, max_items=6)
    seq_cfg = TwoTowerConfig(
        name="seq", user_input="sequence", dim=8, num_negatives=8, batch_size=64, epochs=1, lr=0.02, seed=3,
        threads=1, device="cpu", quiet=True, sequence_length=6, sequence_blocks=1,
    )  # fmt: skip
    times = sp.csr_matrix(small.train, dtype=np.float64, copy=True)
    times.data = 1.0 + np.random.default_rng(0).permutation(times.nnz).astype(np.float64)
    seq = build_model(seq_cfg).fit(small.train, times=times)
    blend = Blend(BlendConfig(name="b", members=["seq", "ease"]))  # ease not handed over: seq alone
    blend.set_members({"seq": seq})
    blend.fit(small.train)
    assert blend.reads_order
    rows = small.train[:6]
    reversed_times = sp.csr_matrix(times[:6], copy=True)
    reversed_times.data = reversed_times.data.max() + 1.0 - reversed_times.data
    for order in (times[:6], reversed_times):
        np.testing.assert_allclose(
            blend.fold_in_ordered(rows, order), seq.fold_in_ordered(rows, order) / blend.scales["seq"], rtol=1e-5, atol=1e-7
        )
    assert not np.allclose(blend.fold_in_ordered(rows, times[:6]), blend.fold_in_ordered(rows, reversed_times), atol=1e-4)


def test_a_blend_refuses_to_score_once_a_member_changed_after_it_was_fitted(planted, tmp_path: Path):
    """The blend's item vectors and scales are fixed at fit, but its user vectors (made on first
    use) and fold-ins read the members as they are now: a member refitted in place afterwards was
    mixed in silently, its new user vectors against its old item vectors and scale (rankings from
    neither model). It is refused, naming the member, as is another model handed over with
    set_members; a loaded blend is made of its own loaded members and scores."""
    members = _members(planted.train)
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"]))
    blend.set_members(members)
    blend.fit(planted.train)
    before = _scores(blend, slice(0, 5))
    saved = blend.save(tmp_path / "b")
    members["wals"].fit(planted.train[:, :])  # refitted in place (another seed would do the same)
    with pytest.raises(ModelError, match=r"\['wals'\] changed after the blend was fitted.*fit the blend again"):
        _ = blend.user_factors
    with pytest.raises(ModelError, match="fit the blend again"):
        blend.fold_in(planted.train[:3])
    with pytest.raises(ModelError, match="fit the blend again"):
        blend.recommend(np.arange(3), k=5)
    blend.fit(planted.train)  # fitted again: the new members' blend
    assert blend.user_factors.shape[0] == planted.train.shape[0]
    loaded = Recommender.load(saved)
    np.testing.assert_allclose(_scores(loaded, slice(0, 5)), before, rtol=0, atol=1e-6 * np.abs(before).max())
    others = {n: Recommender.load(m.save(tmp_path / "others" / n)) for n, m in _members(planted.train[:, :]).items()}
    loaded.set_members(others)  # other (loaded) fits handed over to a fitted blend: a load is a fit of its own
    with pytest.raises(ModelError, match=r"\['ease', 'wals'\] changed"):
        _ = loaded.item_factors


def test_a_blend_of_one_weighted_member_ranks_and_finds_similar_items_as_that_member(planted):
    """The other member at weight 0 is left out: the blend's scores are the member's divided by its
    scale (same lists, users and folded-in users alike), and its similar items are the member's cosines."""
    members = _members(planted.train)
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"], weights={"ease": 0.0, "wals": 0.7}))
    blend.set_members(members)
    blend.fit(planted.train)
    wals, users = members["wals"], np.arange(0, planted.n_users, 3)
    got, scores = blend.recommend(users, k=10, exclude=planted.train)
    want, member_scores = wals.recommend(users, k=10, exclude=planted.train)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, 0.7 * member_scores / blend.scales["wals"], rtol=1e-5)
    rows = planted.train[:9]
    np.testing.assert_allclose(blend.fold_in(rows), 0.7 * wals.fold_in(rows) / blend.scales["wals"], rtol=1e-5)
    np.testing.assert_allclose(blend.similarity_vectors(), wals.similarity_vectors(), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- similarity scales
# (mutation testing of recsys/models/blend.py found each of these unguarded by the tests above)


def _units(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def test_cosine_scale_is_the_root_mean_variance_of_each_querys_cosines_by_hand():
    """Queries are the items with a vector; every item is a candidate (a zero vector: cosine 0).
    Items e1, e2, e2, e3, e3, e3 and one zero vector (7 candidates): a query in a group of g
    items has g cosines 1 and 7 - g cosines 0, variance g/7 - (g/7)^2, so over the 6 queries the
    mean variance is (1 * 6 + 2 * 10 + 3 * 12) / 49 / 6 = 62 / 294."""
    from recsys.models.blend import cosine_scale

    e1, e2, e3, zero = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]
    unit = _units(e1, e2, e2, e3, e3, e3, zero)
    want = np.sqrt(62 / 294)  # 0.45922
    for chunk in (128, 4, 1):  # one chunk, a partial last chunk, one query per chunk
        assert cosine_scale(unit, seed=0, chunk=chunk) == pytest.approx(want, abs=1e-6)
    assert cosine_scale(_units(e1, zero, zero), seed=0) == pytest.approx(np.sqrt(2 / 9), abs=1e-6)  # one query
    assert cosine_scale(_units(zero, zero), seed=0) == 0.0  # no item has a vector: no spread, no error


def test_cosine_scale_queries_each_item_once_and_a_seeded_sample_above_512_items():
    """Up to 512 items with a vector, each is a query exactly once (the exact mean, whatever the
    seed); above, a seeded sample of 512 distinct items: reproducible, and close to the exact mean."""
    from recsys.models.blend import SIMILARITY_ITEMS, cosine_scale

    def exact(unit: np.ndarray) -> float:  # every item a query, variance of its cosines with all items
        cosines = unit.astype(np.float64) @ unit.T.astype(np.float64)
        return float(np.sqrt(cosines.var(axis=1).mean()))

    rng = np.random.default_rng(5)
    small = rng.normal(size=(40, 5))
    small = (small / np.linalg.norm(small, axis=1, keepdims=True)).astype(np.float32)
    for seed in (0, 1):
        assert cosine_scale(small, seed=seed) == pytest.approx(exact(small), rel=1e-6)
    large = rng.normal(size=(SIMILARITY_ITEMS + 88, 5))
    large = (large / np.linalg.norm(large, axis=1, keepdims=True)).astype(np.float32)
    first = cosine_scale(large, seed=3)
    assert cosine_scale(large, seed=3) == first  # seeded: the same sample, bit for bit
    assert first == pytest.approx(exact(large), rel=0.02)  # 512 of 600 queries


def _with_items(train: sp.csr_matrix, name: str, items: np.ndarray) -> Recommender:
    """A fitted WALS member whose item vectors are then set to `items` (its user vectors stay
    learned, so its scores spread and the blend accepts it)."""
    model = build_model(WALSConfig(name=name, factors=items.shape[1], iterations=2, threads=1)).fit(train)
    model.item_factors[:] = items
    return model


def test_a_blends_similarity_weighs_each_members_cosines_by_weight_over_its_cosine_spread_by_hand():
    """Four items. Member `a`: directions e1, e1, e2, e2 (each query: cosines 1, 1, 0, 0, spread
    sqrt(0.25) = 0.5); member `c`: e1, e1, e1, e2 (cosines three 1s and a 0, or the reverse: spread
    sqrt(0.1875) = sqrt(3) / 4). Equal weights 0.1: c_m = w_m / tau_m normalised to sum 1 gives
    c_a = 2 sqrt(3) - 3 = 0.4641 and c_c = 4 - 2 sqrt(3) = 0.5359, so sim(0, 2) (same direction in
    `c` only) = 0.5359, sim(2, 3) (in `a` only) = 0.4641, sim(0, 1) = 1 (both), sim(0, 3) = 0.
    Weights summing below 1 still give an item similarity 1 with itself."""
    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]],
                                   dtype=np.float32))  # fmt: skip
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    members = {"a": _with_items(train, "a", _units(e1, e1, e2, e2)), "c": _with_items(train, "c", _units(e1, e1, e1, e2))}
    blend = Blend(BlendConfig(name="b", members=["a", "c"], weights={"a": 0.1, "c": 0.1}))
    blend.set_members(members)
    blend.fit(train)
    vectors = blend.similarity_vectors()
    assert blend.similarity_scales == pytest.approx({"a": 0.5, "c": np.sqrt(3) / 4}, abs=1e-6)
    assert vectors.shape == (4, 4)  # two members' 2-d unit vectors side by side
    ca, cc = 2 * np.sqrt(3) - 3, 4 - 2 * np.sqrt(3)
    want = np.array([[1, 1, cc, 0], [1, 1, cc, 0], [cc, cc, 1, ca], [0, 0, ca, 1]])
    np.testing.assert_allclose(vectors @ vectors.T, want, rtol=0, atol=1e-6)


def test_a_member_without_cosine_spread_adds_nothing_to_similar_items(planted):
    """Popularity's item vectors are one-dimensional: every cosine between items is 1, a spread of
    0. Blended with WALS, its weight cannot be divided by that spread: the blend's similar items
    are WALS's; a blend of popularity alone has no similarity to offer (all 0), not an error."""
    from recsys.models.popularity import PopularityConfig

    popularity = build_model(PopularityConfig(name="pop")).fit(planted.train)
    assert popularity.item_factors.min() > 0  # every item has interactions: one direction, cosines all 1
    wals = _members(planted.train)["wals"]
    both = Blend(BlendConfig(name="b", members=["pop", "wals"]))
    both.set_members({"pop": popularity, "wals": wals})
    both.fit(planted.train)
    vectors = both.similarity_vectors()
    assert both.similarity_scales["pop"] == pytest.approx(0.0, abs=1e-6) and both.similarity_scales["wals"] > 0.05
    own = wals.similarity_vectors()
    np.testing.assert_allclose(vectors @ vectors.T, own @ own.T, rtol=0, atol=1e-5)
    alone = Blend(BlendConfig(name="b", members=["pop", "wals"], weights={"wals": 0.0}))
    alone.set_members({"pop": popularity, "wals": wals})
    alone.fit(planted.train)
    assert not alone.similarity_vectors().any()


def test_a_loaded_blend_reuses_its_saved_similarity_scales_and_an_older_one_makes_them(planted, tmp_path: Path, monkeypatch):
    """The similarity scales are saved in blend.json (with EASE each is an n_items x n_items
    product): a loaded blend serves /similar with them and computes none; a blend saved before they
    were kept makes the same ones on first use."""
    import json

    from recsys.models import blend as blend_module

    blend = Blend(BlendConfig(name="b", members=["ease", "wals"], weights={"wals": 0.5}))
    blend.set_members(_members(planted.train))
    blend.fit(planted.train)
    saved = blend.save(tmp_path / "b")
    made: list[float] = []
    real = blend_module.cosine_scale
    monkeypatch.setattr(blend_module, "cosine_scale", lambda unit, seed: made.append(seed) or real(unit, seed))
    loaded = Recommender.load(saved)
    np.testing.assert_array_equal(loaded.similarity_vectors(), blend.similarity_vectors())
    assert made == [] and loaded.similarity_scales == blend.similarity_scales
    state = saved / "blend.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "similarity_scales"}))
    older = Recommender.load(saved)
    np.testing.assert_array_equal(older.similarity_vectors(), blend.similarity_vectors())
    assert len(made) == 2 and older.similarity_scales == blend.similarity_scales


def test_a_blends_similarity_scales_are_seeded_on_a_catalogue_above_the_sample_size():
    """Above 512 items the cosine spread is taken over a sample of queries drawn with the blend's
    seed: two blends of the same members serve the same /similar scores."""
    from recsys.models.blend import SIMILARITY_ITEMS, cosine_scale
    from recsys.similar import unit_rows

    rng = np.random.default_rng(0)
    n_items = SIMILARITY_ITEMS + 88
    train = sp.random(60, n_items, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    train.data[:] = 1.0
    members = {name: build_model(WALSConfig(name=name, factors=4, iterations=2, threads=1, seed=s)).fit(train)
               for s, name in enumerate(["a", "c"])}  # fmt: skip
    scales = []
    for _ in range(2):
        blend = Blend(BlendConfig(name="b", members=["a", "c"], seed=11))
        blend.set_members(members)
        blend.fit(train)
        blend.similarity_vectors()
        scales.append(blend.similarity_scales)
    assert scales[0] == scales[1]
    for name, member in members.items():
        assert scales[0][name] == cosine_scale(unit_rows(member.item_factors), 11)


def test_a_blend_refuses_to_score_once_a_member_is_added_or_dropped_after_it_was_fitted(planted):
    """Fitted on `wals` alone, then handed `ease` too: the item vectors and scales are wals's only.
    Fitted on both, then handed `wals` alone: refused by name (it raised a bare KeyError 'ease')."""
    members = _members(planted.train)
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"]))
    blend.set_members({"wals": members["wals"]})
    blend.fit(planted.train)
    blend.set_members(members)
    with pytest.raises(ModelError, match=r"member\(s\) \['ease', 'wals'\] changed after the blend was fitted"):
        blend.recommend(np.arange(3), k=5)
    blend.fit(planted.train)
    blend.set_members({"wals": members["wals"]})
    with pytest.raises(ModelError, match=r"\['ease'\] changed after .* its scales and item vectors are the old members'"):
        blend.recommend(np.arange(3), k=5)


def test_a_blend_one_float_step_over_its_memory_bound_is_skipped(planted):
    """max_memory_gb is in units of 10^9 bytes: a bound one float step below the need refuses."""
    from recsys.errors import ModelSkipped

    n_users, n_items = planted.train.shape
    need = 4 * (n_users + n_items) * (n_items + 16) / 1e9
    blend = Blend(BlendConfig(name="b", members=["ease", "wals"], max_memory_gb=float(np.nextafter(need, 0))))
    blend.set_members(_members(planted.train))
    with pytest.raises(ModelSkipped, match="max_memory_gb"):
        blend.fit(planted.train)
