"""Cross-run comparison and the tracking CLI commands, on the session's real store."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from recsys.cli import app
from recsys.tracking.compare import compare, latest_pipeline_model_runs, render
from recsys.tracking.registry import CHAMPION


@pytest.fixture(scope="module")
def champion_set(logged) -> MlflowClient:
    client = MlflowClient(logged.uri, registry_uri=logged.uri)
    client.set_registered_model_alias("recsys-popularity", CHAMPION, logged.versions["popularity"])
    return client


def test_comparison_ranks_models_with_intervals_and_delta_to_champion(logged, champion_set):
    frame = compare(champion_set, "tests", "recall@20", max_runs=50, registered_model="recsys-popularity")
    ours = frame.filter(frame["run_id"].is_in(list(logged.runs.values())))
    assert ours.get_column("model").to_list() == ["wals", "popularity"]  # wals wins on planted blocks
    means = frame.get_column("mean").drop_nulls().to_list()
    assert means == sorted(means, reverse=True)
    wals = ours.row(0, named=True)
    result = logged.results["wals"]
    assert wals["mean"] == pytest.approx(result.summary["recall@20"])
    assert (wals["ci_low"], wals["ci_high"]) == pytest.approx(result.ci["recall@20"])
    pop_recall = logged.results["popularity"].summary["recall@20"]
    assert wals["delta_to_champion"] == pytest.approx(result.summary["recall@20"] - pop_recall)
    assert ours.row(1, named=True)["champion"] and not wals["champion"]
    assert dict(wals["curve"])[10] == pytest.approx(result.summary["recall@10"])


def test_rendered_formats(logged, champion_set):
    frame = compare(champion_set, "tests", "recall@20", registered_model="recsys-popularity")
    markdown = render(frame, "recall@20", "markdown")
    assert markdown.splitlines()[0].startswith("| model | kind | recall@20 | 95% CI")
    assert "★" in markdown
    csv = render(frame, "recall@20", "csv")
    assert csv.splitlines()[0].startswith("model,kind,mean,ci_low,ci_high,delta_to_champion")
    assert render(frame, "recall@20", "html").startswith("<table>")


def test_latest_pipeline_candidates(logged, champion_set):
    runs = latest_pipeline_model_runs(champion_set, "tests")
    assert runs and all(champion_set.get_run(r).info.status == "FINISHED" for r in runs)


def test_cli_compare_writes_table_and_plot(logged, champion_set, tmp_path):
    out, plot = tmp_path / "cmp.md", tmp_path / "curves.png"
    args = ["compare", "--set", f"tracking.tracking_uri={logged.uri}", "--set", "tracking.experiment=tests"]
    args += ["--format", "markdown", "--output", str(out), "--plot", str(plot)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| wals |" in out.read_text()
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_errors_are_one_line_with_exit_code_2(logged):
    result = CliRunner().invoke(
        app, ["compare", "--set", f"tracking.tracking_uri={logged.uri}", "--experiment", "no-such-experiment"]
    )
    assert result.exit_code == 2
    assert "no experiment named 'no-such-experiment'" in result.output
    bad = CliRunner().invoke(
        app, ["serve", "--set", f"tracking.tracking_uri={logged.uri}", "--model", "nope"]
    )
    assert bad.exit_code == 2 and "has no version with alias 'champion'" in bad.output
