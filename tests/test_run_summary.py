"""The lines `recsys run` ends with: the champion line says the promotion decision once."""

from __future__ import annotations

import pytest

from recsys.cli.pipeline_cmds import champion_line


def test_the_champion_line_names_the_decision_once():
    first = {"champion": "wals", "promotion": {"decision": "promoted", "reason": "promoted: no champion yet"}}
    assert champion_line(first) == "champion: [bold]wals[/] (promoted: no champion yet)"
    kept = {"champion": "ease", "promotion": {"decision": "kept", "reason": "challenger not better (p = 0.41)"}}
    assert champion_line(kept) == "champion: [bold]ease[/] (kept: challenger not better (p = 0.41))"
    assert champion_line({"champion": None}) == "champion: [bold]unchanged[/] ()"
    # without a promotion (tracking or promotion.auto off) the run's best model is no champion
    off = {"champion": "wals", "promotion": {"decision": "", "reason": "tracking disabled: best model of this run"}}
    assert champion_line(off) == "best model: [bold]wals[/] (tracking disabled: best model of this run)"
    foreign = {"champion": "ease", "promotion": {"decision": "not comparable", "reason": "not comparable: the champion has no lineage tag"}}
    assert champion_line(foreign).splitlines()[1].endswith("`recsys promote --force` makes the challenger champion deliberately")


def test_the_not_comparable_hint_names_the_runs_config_and_challenger():
    """Printed bare, `recsys promote --force` read the default config: after a movielens.toml run
    (split.seed changed: not comparable) it answered "kept: already champion" about the synthetic
    line's run, exit 0. The hint carries the run's store options and its challenger's run id."""
    split_changed = {"champion": "wals", "promotion": {
        "decision": "not comparable", "reason": "not comparable: 1805 of the 1885 test interactions (95.8%) were in "
        "the champion's training data", "challenger": "ease", "challenger_run_id": "abc123", "selection": "validation",
        "metric": "recall@20", "registered_model": "movielens-best"}}
    hint = champion_line(split_changed, " --config pipelines/configs/movielens.toml").splitlines()[1]
    assert hint == ("nothing moved: look at `recsys compare --config pipelines/configs/movielens.toml`, then `recsys "
                    "promote --config pipelines/configs/movielens.toml --run-id abc123 --force` makes the challenger "
                    "champion deliberately")


def test_a_run_that_promoted_nothing_names_its_best_model_apart_from_the_champion():
    """A run of another lineage (same config, second data set) ended `champion: ease (not comparable:
    ...)`, as if ease were this run's champion: ease was the registry line's, and nothing moved."""
    foreign = {"champion": "ease", "promotion": {
        "decision": "not comparable", "reason": "not comparable: the challenger belongs to lineage 'a', the champion to 'b'",
        "challenger": "wals", "selection": "validation", "metric": "recall@20", "registered_model": "movielens-best"}}
    first = champion_line(foreign).splitlines()[0]
    assert first == ("not promoted: this run's best model by validation recall@20, [bold]wals[/] (not comparable: "
                     "the challenger belongs to lineage 'a', the champion to 'b'); movielens-best champion unchanged: [bold]ease[/]")
    assert not first.startswith("champion:")
    kept = {"champion": "ease", "promotion": {"decision": "kept", "reason": "challenger not better (p = 0.41)",
                                              "challenger": "ease", "selection": "validation", "metric": "recall@20",
                                              "registered_model": "movielens-best"}}
    assert champion_line(kept) == ("not promoted: this run's best model by validation recall@20, [bold]ease[/] "
                                   "(kept: challenger not better (p = 0.41)); movielens-best champion unchanged: [bold]ease[/]")
    failed = {"champion": None, "promotion": {"decision": "", "reason": "not decided: the tracking store failed"}}
    assert champion_line(failed) == "champion: [bold]unchanged[/] (not decided: the tracking store failed)"


def test_a_run_whose_every_model_failed_says_so_not_that_promotion_is_off(shared_mlflow_uri):
    """Every model failed (tracking on, promotion.auto on): the summary said 'promotion.auto is off:
    best model of this run by test recall@20' and 'champion: None'."""
    from pipelines.run import ModelOutcome, promote_best
    from recsys.config import load_config
    from recsys.tracking.runs import Tracker

    cfg = load_config(None, [f"tracking.tracking_uri={shared_mlflow_uri}", "tracking.experiment=all-failed"])
    failed = ModelOutcome(name="wals", kind="wals", loss=None, sampler=None, status="failed", error="boom")
    decision = promote_best(cfg, Tracker(cfg.tracking, cfg), [failed])
    assert decision["reason"] == "not decided: no model of this run finished" and decision["champion"] is None
    assert champion_line({"champion": None, "promotion": decision}).startswith("champion: [bold]unchanged[/] (not decided")


def test_a_comparison_over_the_tag_limit_becomes_a_description_that_points_at_the_artifact():
    from pipelines.run import run_description

    table = "# x: model comparison\n\nData: ...\n\n| model | recall@20 |\n|---|---|\n" + "| m | 0.1 |\n" * 50
    assert run_description(table, limit=10_000) == table
    short = run_description(table, limit=200)
    assert len(short) <= 200 and short.startswith("# x: model comparison") and "| m |" not in short
    assert "comparison.md" in short


def test_the_small_test_warning_says_when_the_best_lead_is_inside_its_own_interval():
    """75 test users of a head-heavy log: every model tied with popularity and only the intervals
    said so. The rule: the runner-up's mean lies inside the best model's interval."""
    from pipelines.report import small_test_warning

    tied = {"pop": (0.27, (0.22, 0.32)), "wals": (0.30, (0.25, 0.35)), "tt": (0.28, [0.23, 0.33])}
    common = dict(metric="recall@20", n_users=75, confidence=0.95, popularity={"pop"})
    warning = small_test_warning(tied, protocol="random", **common)
    assert warning == (
        "the best model is not significantly better than popularity on 75 test users: wals's recall@20 0.3000 ±0.0500 "
        "(95% bootstrap interval) leads tt by only 0.0200 and pop by 0.0300, less than that half-width; "
        "more test users would narrow the intervals (more data, or a larger split.test_fraction)"
    )
    assert "(more data)" in small_test_warning(tied, protocol="leave_last_n", **common)
    assert "split.heldout_users" in small_test_warning(tied, protocol="strong_generalization", **common)
    clear = {"pop": (0.27, (0.26, 0.28)), "wals": (0.30, (0.29, 0.31))}  # lead 0.03 > half-width 0.01
    assert small_test_warning(clear, protocol="random", **common) is None
    no_intervals = {"pop": (0.27, (float("nan"), float("nan"))), "wals": (0.30, None)}  # bootstrap_samples = 0
    assert small_test_warning(no_intervals, protocol="random", **common) is None
    assert small_test_warning({"wals": (0.30, (0.2, 0.4))}, protocol="random", **common) is None
    # Two good models close together, popularity far below: an ordinary result, no warning
    close = {"pop": (0.15, (0.13, 0.17)), "wals": (0.38, (0.345, 0.415)), "ease": (0.366, (0.33, 0.40))}
    assert small_test_warning(close, protocol="random", **common) is None


def test_the_parent_run_is_tagged_when_its_top_models_tie(shared_mlflow_uri):
    """The MLflow side of the warning: a tag on the pipeline's parent run (and a line in its
    description), none when the best model leads clearly."""
    from pipelines.report import SMALL_TEST_TAG
    from pipelines.run import DESCRIPTION_TAG, ModelOutcome, PipelineResult, end_parent
    from recsys.config import load_config
    from recsys.tracking.runs import Tracker

    cfg = load_config(None, [f"tracking.tracking_uri={shared_mlflow_uri}", "tracking.experiment=small-test"])
    tracker = Tracker(cfg.tracking, cfg)
    tags = {}
    for name, lead in (("tie", 0.01), ("clear", 0.2)):
        models = [ModelOutcome(name="pop", kind="popularity", loss=None, sampler=None,
                               metrics={"recall@20": 0.3}, ci={"recall@20": [0.25, 0.35]}),
                  ModelOutcome(name="wals", kind="wals", loss=None, sampler=None,
                               metrics={"recall@20": 0.3 + lead}, ci={"recall@20": [0.26 + lead, 0.34 + lead]})]  # fmt: skip
        parent = tracker.start_parent(name)
        end_parent(tracker, parent, PipelineResult(dataset={"warm_test_users": 75, "split": "random"}, models=models), cfg)
        tags[name] = tracker.client.get_run(parent).data.tags
    assert tags["tie"][SMALL_TEST_TAG].startswith("the best model is not significantly better than popularity on 75 test users")
    assert "Warning: the best model is not significantly better than popularity" in tags["tie"][DESCRIPTION_TAG]
    assert SMALL_TEST_TAG not in tags["clear"] and "Warning" not in tags["clear"][DESCRIPTION_TAG]


def test_a_run_whose_every_model_scores_the_ceiling_says_the_metric_cannot_choose():
    """Amazon Fashion's 5-core log under the MovieLens config keeps 12 items: popularity and WALS
    both scored recall@20 = 1.0000 ±0.000, a tie the interval rule cannot see, and the run chose a
    champion without a word. A log where the models differ gets no such line."""
    from pipelines.report import run_warning
    from pipelines.run import ModelOutcome, PipelineResult
    from recsys.config import load_config

    cfg = load_config(None, [])

    def result(wals: float) -> PipelineResult:
        models = [ModelOutcome(name="pop", kind="popularity", loss=None, sampler=None,
                               metrics={"recall@20": 1.0}, ci={"recall@20": [1.0, 1.0]}),
                  ModelOutcome(name="wals", kind="wals", loss=None, sampler=None,
                               metrics={"recall@20": wals}, ci={"recall@20": [wals, wals]})]  # fmt: skip
        dataset = {"items": 12, "warm_test_users": 55, "split": "strong_generalization"}
        return PipelineResult(dataset=dataset, models=models)

    warning = run_warning(result(1.0), cfg)
    assert warning is not None and warning.startswith("every model scores recall@20 = 1, its ceiling, on the 55")
    assert "with 12 items" in warning and "smaller k" in warning
    assert run_warning(result(0.9), cfg) is None


def test_a_test_set_of_a_few_users_is_always_warned_about():
    """Amazon Beauty's ratings (a 30,000-row prefix) under the MovieLens config test one user:
    WALS 1.0000 ±0.000 against popularity 0.0000 ±0.000, intervals of no width that the lead rule
    read as a clear win, without a word. Ten users or more: the lead rule alone, as before. With a
    single finished model as well."""
    from pipelines.report import MIN_TEST_USERS, small_test_warning

    clear = {"pop": (0.0, (0.0, 0.0)), "wals": (1.0, (1.0, 1.0))}
    common = dict(metric="recall@20", confidence=0.95, popularity={"pop"}, protocol="strong_generalization")
    warning = small_test_warning(clear, n_users=1, **common)
    assert warning is not None and warning.startswith("only 1 test user(s): too few for the 95% bootstrap intervals")
    assert "split.heldout_users" in warning
    assert small_test_warning(clear, n_users=MIN_TEST_USERS, **common) is None
    # One finished model (the Amazon Beauty run's popularity, on 1 user) is warned about too: it
    # printed nothing, as if its 1.0000 meant something
    alone = small_test_warning({"pop": (1.0, (1.0, 1.0))}, n_users=1, **common)
    assert alone == ("only 1 test user(s): too few for the 95% bootstrap intervals to mean much (over one user an "
                     "interval has no width at all); add test users (more data, or a larger split.heldout_users)")
    assert small_test_warning({}, n_users=1, **common) is None  # no finished model: nothing scored to warn about


def test_the_closing_lines_do_not_ask_a_store_that_failed_during_the_run(monkeypatch):
    """After a run whose tracking store failed, the "browse it" link asked the store for the
    experiment's id once more: against a frozen server (it accepts, never answers) that cost
    MLflow's timeout times its tries (~95 s) after the run had ended. The link is the experiment
    list then, and the store is not contacted."""
    import socket

    from recsys.cli.pipeline_cmds import _where_to_look
    from recsys.config import RunConfig

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as frozen:  # listens, never accepts: a stopped server
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(8)
        uri = f"http://127.0.0.1:{frozen.getsockname()[1]}"
        summary = {"tracking_uri": uri, "tracking_error": "MlflowException: Read timed out", "champion": None,
                   "mlflow_parent_run_id": "abc", "dataset": {"processed_dir": "data/processed/x"},
                   "promotion": {"reason": "not decided: the tracking store failed during the run"}}  # fmt: skip
        _where_to_look(summary, None, RunConfig(name="frozen"))
        frozen.setblocking(False)
        with pytest.raises(BlockingIOError):  # nobody connected
            frozen.accept()


def test_the_printed_resume_command_keeps_a_bundle_path_with_a_space_one_argument():
    """A project under `/home/Jane Doe/...`: the error line and the champion line printed
    `recsys run ... --resume-tracking /home/Jane Doe/unlogged/RUN`, which, copied, passed `/home/Jane`
    and `Doe/unlogged/RUN` (found by the chaos benchmark's server-freezes probe's parser)."""
    import re
    import shlex
    from types import SimpleNamespace

    from pipelines.report import tracking_failed_line
    from pipelines.run import ModelOutcome, promote_best
    from recsys.config import load_config

    where = "/home/Jane Doe/unlogged/abc123"
    args = " --set 'tracking.experiment=\"x\"'"
    summary = {"tracking_uri": "http://127.0.0.1:5000", "tracking_error": "connection refused, /api/2.0/mlflow/runs/log-batch",
               "unlogged_dir": where, "models": [{"name": "wals", "status": "ok", "unlogged": True}]}  # fmt: skip
    kept = ModelOutcome(name="wals", kind="wals", loss=None, sampler=None, status="ok", mlflow_run_id="r1", unlogged=where)
    tracker = SimpleNamespace(enabled=True, failure="connection refused", kept_in=where)
    decision = promote_best(load_config(None, []), tracker, [kept])
    lines = [tracking_failed_line(summary, args), champion_line({"champion": None, "promotion": decision}, args)]
    for line in lines:
        (command,) = re.findall(r"`(recsys run [^`]*)`", line)
        assert shlex.split(command) == ["recsys", "run", "--set", 'tracking.experiment="x"', "--resume-tracking", where]


@pytest.mark.parametrize("root", [True, False])
def test_browse_it_names_make_ui_only_in_the_repository_root(tmp_path, monkeypatch, capsys, root):
    """Run from any other folder (a shipped config by name, as the README says works anywhere),
    `recsys run` ended with `browse it:    make ui   (or: recsys ui ...)`: there is no Makefile
    there, so the first command it offered failed. Outside the root it offers `recsys ui` alone."""
    import recsys.tracking.ui
    from recsys.cli.pipeline_cmds import _where_to_look
    from recsys.config import RunConfig

    monkeypatch.chdir(tmp_path)
    if root:  # the repository root: its Makefile and pipelines/configs/default.toml
        (tmp_path / "Makefile").write_text("ui:\n\trecsys ui\n")
        (tmp_path / "pipelines" / "configs").mkdir(parents=True)
        (tmp_path / "pipelines" / "configs" / "default.toml").write_text("")
    link = "http://127.0.0.1:5000/#/experiments/1/runs"
    monkeypatch.setattr(recsys.tracking.ui, "experiment_runs_url", lambda uri, experiment: link)
    summary = {"tracking_uri": f"sqlite:///{tmp_path}/m.db", "champion": None, "mlflow_parent_run_id": "abc",
               "dataset": {"processed_dir": "data/processed/x"}, "promotion": {"reason": "not decided"}}  # fmt: skip
    _where_to_look(summary, None, RunConfig(name="here"))
    (browse,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("browse it:")]
    want = f"browse it:    make ui   (or: recsys ui  ->  {link})" if root else f"browse it:    recsys ui  ->  {link}"
    assert browse == want
