"""The lines `recsys run` ends with: the champion line says the promotion decision once."""

from __future__ import annotations

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
