"""Cross-run comparison and the tracking CLI commands, on the session's real store."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import SplitConfig
from recsys.tracking.compare import compare, display_rows, latest_pipeline_model_runs, render
from recsys.tracking.registry import CHAMPION

from .conftest import log_one


@pytest.fixture(scope="module")
def champion_set(logged) -> MlflowClient:
    client = MlflowClient(logged.uri, registry_uri=logged.uri)
    client.set_registered_model_alias("recsys-popularity", CHAMPION, logged.versions["popularity"])
    return client


def test_comparison_ranks_models_with_intervals_and_delta_to_champion(logged, champion_set):
    frame = compare(champion_set, "tests", "recall@20", max_runs=50, registered_model="recsys-popularity")
    ours = frame.filter(frame["run_id"].is_in(list(logged.runs.values())))
    assert ours.get_column("model").to_list() == ["wals", "popularity"]  # wals wins on planted blocks
    for _, group in frame.group_by("lineage", "split"):
        means = group.get_column("mean").drop_nulls().to_list()
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
    assert markdown.splitlines()[0].startswith("| lineage | split | model | kind | recall@20 | 95% CI")
    assert "★" in markdown
    csv = render(frame, "recall@20", "csv")
    assert csv.splitlines()[0].startswith("lineage,split,model,kind,mean,ci_low,ci_high,delta_to_champion")
    assert render(frame, "recall@20", "html").startswith("<table>")


def test_latest_pipeline_candidates(logged, champion_set):
    runs = latest_pipeline_model_runs(champion_set, "tests")
    assert runs and all(champion_set.get_run(r).info.status == "FINISHED" for r in runs)


def test_latest_pipeline_candidates_skip_a_pipeline_still_running(logged):
    """`recsys promote` beside a `recsys run`: the running pipeline's models finished so far are not
    the candidates; the newest pipeline that ended is."""
    from recsys.tracking.runs import TAG_KIND

    client = MlflowClient(logged.uri, registry_uri=logged.uri)
    experiment = client.create_experiment(f"promote-beside-run-{uuid.uuid4().hex[:8]}")
    children = {}
    for start, name in ((1_000, "ended"), (2_000, "running")):
        parent = client.create_run(experiment, start_time=start, tags={TAG_KIND: "pipeline"}).info.run_id
        child = client.create_run(experiment, start_time=start + 1, tags={"mlflow.parentRunId": parent})
        client.set_terminated(child.info.run_id)
        children[name] = child.info.run_id
        if name == "ended":
            client.set_terminated(parent)
    name = client.get_experiment(experiment).name
    assert latest_pipeline_model_runs(client, name) == [children["ended"]]


@pytest.mark.parametrize("how", ["KILLED", "RUNNING, its process gone"])
def test_latest_pipeline_candidates_refuse_a_newest_run_that_did_not_go_whole(logged, how):
    """The MLflow server killed mid-run, then back: `recsys promote` said the dead run "is still
    running: it promotes its own models when it ends" (it never would) and took the run before it;
    once the next start had closed it KILLED, promote chose among the models it had logged before
    the kill (here `pop`, its other models never finished). Both are refused, naming the run."""
    import subprocess
    import sys

    from recsys.errors import TrackingError
    from recsys.tracking.liveness import TAG_PID, process_tags
    from recsys.tracking.runs import TAG_KIND

    client = MlflowClient(logged.uri, registry_uri=logged.uri)
    experiment = client.create_experiment(f"promote-after-a-death-{uuid.uuid4().hex[:8]}")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {**process_tags(), TAG_PID: gone.stdout.strip(), TAG_KIND: "pipeline"}  # this host, a pid that ended
    parents = {}
    for start, name in ((1_000, "whole"), (2_000, "dead")):
        parent = client.create_run(experiment, start_time=start, tags=dead).info.run_id
        child = client.create_run(experiment, start_time=start + 1, tags={"mlflow.parentRunId": parent})
        client.set_terminated(child.info.run_id)  # finished before the kill
        parents[name] = parent
        if name == "whole" or how == "KILLED":
            client.set_terminated(parent, status="FINISHED" if name == "whole" else "KILLED")
    name = client.get_experiment(experiment).name
    with pytest.raises(TrackingError, match=f"newest pipeline run {parents['dead']} .*did not go whole") as caught:
        latest_pipeline_model_runs(client, name)
    assert how.split(",")[0] in str(caught.value) and "--run-id" in str(caught.value)


def test_promote_closes_a_run_whose_process_died_killed_and_says_so(logged, tmp_path):
    """After the MLflow server died mid-run, `recsys promote` refused the run (RUNNING, its process
    gone) but left it RUNNING in the store, and in the UI, until the next `recsys run`. Promote now
    closes it KILLED with the start's note, in one line, and still refuses it; a run whose process
    lives (this one) stays RUNNING."""
    import subprocess
    import sys

    from recsys.tracking.liveness import TAG_KILLED_NOTE, TAG_PID, process_tags
    from recsys.tracking.runs import TAG_KIND

    client = MlflowClient(logged.uri, registry_uri=logged.uri)
    name = f"promote-closes-{uuid.uuid4().hex[:8]}"
    experiment = client.create_experiment(name)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = client.create_run(experiment, start_time=2_000, tags={**process_tags(), TAG_PID: gone.stdout.strip(),
                                                                 TAG_KIND: "pipeline"}).info.run_id  # fmt: skip
    child = client.create_run(experiment, start_time=2_001, tags={"mlflow.parentRunId": dead}).info.run_id
    client.set_terminated(child)  # a model that finished before the server died
    alive = client.create_run(experiment, start_time=1_000, tags=process_tags()).info.run_id  # this live process

    args = ["promote", "--set", f"tracking.tracking_uri={logged.uri}", "--set", f"tracking.experiment={name}"]
    result = CliRunner().invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    closing = [line for line in result.output.splitlines() if line.startswith("closed ")]
    assert closing == [f"closed 1 run(s) left RUNNING by a process that died as KILLED: {dead}"], result.output
    assert f"newest pipeline run {dead}" in said and "did not go whole (KILLED" in said
    closed = client.get_run(dead)
    assert closed.info.status == "KILLED"
    assert closed.data.tags[TAG_KILLED_NOTE].startswith(f"process {gone.stdout.strip()} on ")
    assert client.get_run(alive).info.status == "RUNNING" and client.get_run(child).info.status == "FINISHED"
    again = CliRunner().invoke(app, args)  # nothing left to close: no line
    assert again.exit_code == 2 and "closed " not in again.output, again.output
    client.set_terminated(alive)


def test_cli_compare_writes_table_and_plot(logged, champion_set, tmp_path):
    out, plot = tmp_path / "cmp.md", tmp_path / "curves.png"
    args = ["compare", "--set", f"tracking.tracking_uri={logged.uri}", "--set", "tracking.experiment=tests"]
    args += ["--format", "markdown", "--output", str(out), "--plot", str(plot)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| wals |" in out.read_text()
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_compare_output_into_a_new_folder_or_onto_a_folder(logged, champion_set, tmp_path):
    """-o into a folder that does not exist yet is written (as --plot is); -o naming a folder is an
    error naming --output, not 'Is a directory (.../.NAME.tmp)'."""
    args = ["compare", "--set", f"tracking.tracking_uri={logged.uri}", "--set", "tracking.experiment=tests"]
    written = CliRunner().invoke(app, [*args, "-f", "csv", "-o", str(tmp_path / "new" / "cmp.csv")])
    assert written.exit_code == 0, written.output
    assert (tmp_path / "new" / "cmp.csv").read_text().startswith("lineage,split,model")
    onto = CliRunner().invoke(app, [*args, "-o", str(tmp_path)])
    assert onto.exit_code == 2, onto.output
    assert f"--output {tmp_path} is a directory" in " ".join(onto.output.split()) and ".tmp" not in onto.output


def test_cli_compare_runs_above_mlflows_search_limit_is_a_usage_error(logged):
    """--runs 100000 reached MLflow's search (at most 50,000 results): 'unexpected MlflowException
    ... this is a bug', exit 1."""
    result = CliRunner().invoke(app, ["compare", "--set", f"tracking.tracking_uri={logged.uri}", "--runs", "100000"])
    assert result.exit_code == 2, result.output
    assert "less than or equal to 50000" in result.output and "bug" not in result.output


def test_cli_errors_are_one_line_with_exit_code_2(logged):
    result = CliRunner().invoke(
        app, ["compare", "--set", f"tracking.tracking_uri={logged.uri}", "--experiment", "no-such-experiment"]
    )
    assert result.exit_code == 2
    assert "no experiment named 'no-such-experiment'" in result.output
    bad = CliRunner().invoke(
        app, ["serve", "--set", f"tracking.tracking_uri={logged.uri}", "--model", "nope"]
    )
    assert bad.exit_code == 2 and "no registered model 'nope' in" in bad.output
    # The store is shared by the session, so which names fit the message's list depends on test order:
    # it must name registered models of the store, whichever come first.
    from mlflow import MlflowClient

    names = {m.name for m in MlflowClient(logged.uri).search_registered_models()}
    assert "pass --model one of" in bad.output and any(name in bad.output for name in names)


def test_cli_serve_names_the_aliases_a_model_has(logged, champion_set):
    """A mistyped --alias (or --model) was told to run `recsys promote`, which would not help."""
    result = CliRunner().invoke(
        app, ["serve", "--set", f"tracking.tracking_uri={logged.uri}", "--model", "recsys-popularity", "--alias", "champoin"]
    )
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "registered model 'recsys-popularity' has no version with alias 'champoin': pass --alias one of" in text
    assert "champion" in text.split("pass --alias one of", 1)[1] and "recsys promote" not in text


def test_cli_serve_serves_a_numbered_version_of_a_line_without_aliases(logged, monkeypatch):
    """Per-model lines (recsys-wals) never get aliases, so `recsys serve --model recsys-wals` had
    nothing to load; --version N serves that version (the app is taken before it would listen)."""
    from fastapi.testclient import TestClient

    import recsys.tracking.server as server

    served = {}
    monkeypatch.setattr(server, "serve", lambda app, port: served.update(app=app, port=port))
    sets = ["serve", "--set", f"tracking.tracking_uri={logged.uri}", "--model", "recsys-wals"]
    result = CliRunner().invoke(app, [*sets, "--version", logged.versions["wals"], "--port", "5999"])
    assert result.exit_code == 0, result.output
    assert f"serving recsys-wals version {logged.versions['wals']}" in " ".join(result.output.split())
    answer = TestClient(served["app"]).post("/invocations", json={"dataframe_records": [{"user_id": "u1"}]})
    assert answer.status_code == 200 and answer.json()["predictions"][0]["source"] == "model"
    missing = CliRunner().invoke(app, [*sets, "--version", "999"])
    assert missing.exit_code == 2 and "registered model 'recsys-wals' has no version 999: it has" in missing.output


def test_deltas_stay_inside_a_lineage_and_split(logged, champion_set, planted_data, planted_split):
    """Another data source (lineage) on the very same split: no delta to this champion. Another
    split of this lineage: the delta is to the champion re-scored on that split, never to its own
    number on another split."""
    from recsys.data.splits import split_data
    from recsys.models.popularity import PopularityConfig
    from recsys.tracking.reevaluate import TAG_CHAMPION_REEVALUATED

    other_lineage = log_one(logged, PopularityConfig(name="popularity"), planted_split, planted_data, source="elsewhere.csv")
    reseeded = split_data(planted_data, SplitConfig(protocol="random", test_fraction=0.25, seed=7))
    other_split = log_one(logged, PopularityConfig(name="popularity"), reseeded, planted_data)
    unscored = log_one(logged, PopularityConfig(name="popularity"), reseeded, planted_data)
    champion_set.log_metric(other_split, "champion_recall_at_20", 0.125)  # as decide() logs a re-scoring
    champion_set.set_tag(other_split, TAG_CHAMPION_REEVALUATED, logged.runs["popularity"])
    frame = compare(champion_set, "tests", "recall@20", max_runs=200, registered_model="recsys-popularity")
    rows = {r["run_id"]: r for r in frame.iter_rows(named=True)}
    assert rows[other_lineage]["lineage"].endswith("elsewhere.csv") and rows[other_lineage]["delta_to_champion"] is None
    assert rows[other_split]["split"] != rows[logged.runs["wals"]]["split"]
    assert rows[other_split]["delta_to_champion"] == pytest.approx(rows[other_split]["mean"] - 0.125)
    assert rows[unscored]["delta_to_champion"] == pytest.approx(rows[other_split]["mean"] - 0.125)  # same split
    # groups are contiguous: each (lineage, split) appears in one run of rows
    keys = list(zip(frame["lineage"], frame["split"], frame["evaluation"], strict=True))
    starts = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(starts) == len(set(keys))
    header, cells = display_rows(frame, "recall@20")
    assert header[:2] == ["lineage", "split"]


def test_cli_compare_refuses_a_metric_no_run_logged(logged):
    """--metric recall@7 (no such k) or a typo printed a table of blanks with exit 0."""
    sets = ["--set", f"tracking.tracking_uri={logged.uri}", "--set", "tracking.experiment=tests"]
    result = CliRunner().invoke(app, ["compare", *sets, "--metric", "recall@7"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "metric 'recall@7' (recall_at_7) is not logged on any of the" in text
    assert "choose --metric NAME@K" in text and "recall" in text and "20" in text


def test_no_delta_to_a_champion_re_scoring_judged_not_comparable(logged, champion_set, planted_data):
    """After a split change most of the new test pairs were in the champion's training data: the
    promotion said 'not comparable', yet compare showed a delta to that leaky re-scoring (ML-100K,
    split.seed 0 -> 1: -0.037 while 95.8% of the test pairs had trained the champion)."""
    from recsys.data.splits import split_data
    from recsys.models.popularity import PopularityConfig
    from recsys.tracking.decision import NOT_COMPARABLE
    from recsys.tracking.reevaluate import TAG_CHAMPION_REEVALUATED
    from recsys.tracking.registry import TAG_DECISION

    reseeded = split_data(planted_data, SplitConfig(protocol="random", test_fraction=0.25, seed=11))
    leaky = log_one(logged, PopularityConfig(name="popularity"), reseeded, planted_data)
    beside = log_one(logged, PopularityConfig(name="popularity"), reseeded, planted_data)
    champion_set.log_metric(leaky, "champion_recall_at_20", 0.9)  # as decide() logs the re-scoring
    champion_set.set_tag(leaky, TAG_CHAMPION_REEVALUATED, logged.runs["popularity"])
    champion_set.set_tag(leaky, TAG_DECISION, NOT_COMPARABLE)
    frame = compare(champion_set, "tests", "recall@20", max_runs=200, registered_model="recsys-popularity")
    rows = {r["run_id"]: r for r in frame.iter_rows(named=True)}
    assert rows[leaky]["delta_to_champion"] is None and rows[beside]["delta_to_champion"] is None
    assert rows[leaky]["mean"] is not None


def test_sampled_metrics_are_a_group_of_their_own_and_never_promoted_over_full_corpus(
    logged, champion_set, planted_data, planted_split
):
    """A run scored with evaluation.sampled_negatives logged recall@20 ~0.99 beside full-corpus
    numbers on the same split: compare put it in their group with a delta to the full-corpus
    champion, and the promotion paired its per-user values with the champion's and promoted it
    (seen on synthetic data: 0.9957 sampled over 0.9564 full, 'challenger is better, p = 0.001')."""
    from recsys.config import EvaluationConfig, PromotionConfig
    from recsys.models.popularity import PopularityConfig
    from recsys.tracking.registry import promote

    sampled_eval = EvaluationConfig(ks=[5, 10, 20], bootstrap_samples=20, sampled_negatives=10)
    sampled = log_one(logged, PopularityConfig(name="popularity"), planted_split, planted_data, evaluation=sampled_eval)
    frame = compare(champion_set, "tests", "recall@20", max_runs=200, registered_model="recsys-popularity")
    rows = {r["run_id"]: r for r in frame.iter_rows(named=True)}
    mine, full = rows[sampled], rows[logged.runs["popularity"]]
    assert mine["split"] == full["split"] and mine["mean"] > full["mean"] + 0.2  # sampled numbers run high
    assert mine["evaluation"] == "sampled (10 negatives)" and full["evaluation"] == "full corpus"
    assert mine["delta_to_champion"] is None and full["delta_to_champion"] == pytest.approx(0.0)
    header, cells = display_rows(frame, "recall@20")
    split_cells = [row[1] for row in cells if row[1]]
    assert f"{mine['split']}, sampled (10 negatives) metrics" in split_cells and mine["split"] in split_cells
    assert render(frame, "recall@20", "csv").splitlines()[0].endswith(",evaluation")

    cfg = PromotionConfig(registered_model="promo-sampled")
    assert promote(champion_set, cfg, logged.runs["popularity"]).promoted
    refused = promote(champion_set, cfg, sampled)
    assert refused.decision == "not comparable" and not refused.promoted
    assert "is sampled (10 negatives), the champion's full corpus" in refused.reason


def _promote_cli(logged, *args: str):
    sets = ["--set", f"tracking.tracking_uri={logged.uri}", "--set", "tracking.experiment=tests"]
    return CliRunner().invoke(app, ["promote", *sets, *args])


def test_cli_promote_names_a_mistyped_or_pipeline_run_id_with_exit_code_2(logged):
    """A run id that does not exist, or a pipeline (parent) run id, is the user's to fix: one line
    naming it and what to pass instead, exit 2 (it was an 'unexpected MlflowException ... this is a
    bug', exit 1, for the first and 'no finished candidate has metric' for the second)."""
    for typo in ("deadbeef", ""):
        missing = _promote_cli(logged, "--run-id", typo)
        assert missing.exit_code == 2, missing.output
        assert f"no run with id {typo!r}" in missing.output and "--run-id" in missing.output
        assert "bug" not in missing.output
    parent = MlflowClient(logged.uri).get_run(logged.runs["wals"]).data.tags["mlflow.parentRunId"]
    pipeline = _promote_cli(logged, "--run-id", parent)
    assert pipeline.exit_code == 2, pipeline.output
    assert f"run {parent} is a pipeline run, not a model run" in pipeline.output


def test_cli_promote_takes_the_short_run_id_that_compare_prints(logged):
    """`recsys compare` and `recsys registry` print the first 8 digits of a run id; `--run-id` with
    them said "no run with id ..." (only the full id from the csv was taken). The short id now picks
    the run it starts, the same decision as the full id."""
    full = logged.runs["popularity"]
    short = _promote_cli(logged, "--set", "promotion.registered_model=promo-cli-short", "--run-id", full[:8])
    assert short.exit_code == 0, short.output
    registry = MlflowClient(logged.uri, registry_uri=logged.uri)
    assert registry.get_model_version_by_alias("promo-cli-short", "challenger").run_id == full


def test_cli_promote_of_another_lineages_run_says_the_challenger_alias_stayed(logged, planted_data, planted_split):
    """A run of another lineage is not registered on the line (not comparable), so both aliases stay
    where they were; the last line said `challenger v-` beside a challenger alias still on v1."""
    from recsys.models.popularity import PopularityConfig

    line = "--set", "promotion.registered_model=promo-cli-foreign"
    first = _promote_cli(logged, *line, "--run-id", logged.runs["popularity"])
    assert first.exit_code == 0, first.output
    version = MlflowClient(logged.uri, registry_uri=logged.uri).get_model_version_by_alias("promo-cli-foreign", "challenger").version
    other = log_one(logged, PopularityConfig(name="popularity"), planted_split, planted_data, source="/elsewhere/log.csv")
    foreign = _promote_cli(logged, *line, "--run-id", other)
    assert foreign.exit_code == 0 and foreign.output.startswith("not comparable"), foreign.output
    last = foreign.output.strip().splitlines()[-1]
    assert last == f"promo-cli-foreign: champion v{version}, challenger v{version}", foreign.output

    # forced onto the line all the same (`--force`): `recsys registry` says the rule did not decide it
    forced = _promote_cli(logged, *line, "--run-id", other, "--force")
    assert forced.exit_code == 0 and "promoted by --force" in forced.output, forced.output
    listed = CliRunner().invoke(app, ["registry", "--set", f"tracking.tracking_uri={logged.uri}", "--model",
                                      "promo-cli-foreign", "-f", "markdown"])  # fmt: skip
    rows = {row.split(" | ")[1]: row for row in listed.output.splitlines() if row.count(" | ") > 5}
    assert "| promoted (forced) |" in rows[str(int(version) + 1)], listed.output
    assert "| promoted |" in rows[str(version)], listed.output


def test_cli_promote_prints_where_the_aliases_point_after_a_promotion(logged, monkeypatch, tmp_path):
    """After `promoted` the champion alias is the challenger's version; the last line said the
    champion was still the version it had beaten. Reading the runs' per-user metrics back draws no
    MLflow download bars between the lines."""
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)  # as in a fresh shell
    line = "--set", "promotion.registered_model=promo-cli-aliases"
    first = _promote_cli(logged, *line, "--run-id", logged.runs["popularity"])
    assert first.exit_code == 0, first.output
    second = _promote_cli(logged, *line, "--run-id", logged.runs["wals"])
    assert second.exit_code == 0, second.output
    client = MlflowClient(logged.uri, registry_uri=logged.uri)
    champion = client.get_model_version_by_alias("promo-cli-aliases", CHAMPION)
    beaten = client.get_model_version_by_alias("promo-cli-aliases", "challenger")
    assert champion.run_id == logged.runs["wals"] and beaten.version == champion.version
    old = next(v for v in client.search_model_versions("name='promo-cli-aliases'") if v.run_id == logged.runs["popularity"])
    text = " ".join(second.output.split())
    assert "promoted: challenger is better" in text and "promoted: promoted" not in text, second.output
    assert "Downloading artifacts" not in first.output + second.output
    assert f"promo-cli-aliases: champion v{champion.version} (was v{old.version}), challenger v{champion.version}" in text

    # `recsys registry` lists the line as the promotions left it (the same store, no new runs)
    listing = tmp_path / "registry.json"
    listed = CliRunner().invoke(app, ["registry", "--set", f"tracking.tracking_uri={logged.uri}", "--model",
                                      "promo-cli-aliases", "--json", str(listing), "-f", "markdown"])  # fmt: skip
    assert listed.exit_code == 0, listed.output
    (line,) = json.loads(listing.read_text())["registered_models"]
    version = str(champion.version)
    assert line["aliases"] == {"champion": version, "challenger": version}
    rows = {row["version"]: row for row in line["versions"]}
    wals_run = client.get_run(logged.runs["wals"])
    assert rows[version] == {
        "version": version, "aliases": ["challenger", "champion"], "model": "wals", "kind": "wals",
        "metric": wals_run.data.metrics["recall_at_20"], "decision": "promoted", "run_id": logged.runs["wals"],
        "fingerprint": wals_run.data.tags["recsys.data_fingerprint"], "created": rows[version]["created"],
        "forced": False, "split": wals_run.data.tags["recsys.split_digest"],
    }  # fmt: skip
    assert rows[str(old.version)]["aliases"] == [] and rows[str(old.version)]["model"] == "popularity"
    assert f"| promo-cli-aliases | {version} | challenger, champion | wals | wals |" in listed.output
    assert f"| {wals_run.data.tags['recsys.split_digest'][:12]} |" in listed.output  # the split its metric is on


def test_cli_registry_refuses_an_unknown_model_and_a_missing_store_in_one_line(logged, tmp_path):
    unknown = CliRunner().invoke(app, ["registry", "--set", f"tracking.tracking_uri={logged.uri}", "--model", "nope"])
    assert unknown.exit_code == 2 and len(unknown.output.strip().splitlines()) == 1, unknown.output
    assert unknown.output.startswith("error: no registered model 'nope'") and "--model one of" in unknown.output
    missing = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    absent = CliRunner().invoke(app, ["registry", "--set", f"tracking.tracking_uri={missing}"])
    assert absent.exit_code == 2 and absent.output.startswith("error: no MLflow store"), absent.output


def test_cli_registry_refuses_a_metric_no_listed_version_logged(logged):
    """`recsys registry --metric recal@20` listed every version with an empty metric column and
    exit 0 (`recsys compare` refused the same typo): one error line naming the metrics there are."""
    name = f"{logged.config.tracking.model_name_prefix}-wals"
    args = ["registry", "--set", f"tracking.tracking_uri={logged.uri}", "--model", name]
    typo = CliRunner().invoke(app, [*args, "--metric", "recal@20"], env={"COLUMNS": "1000"})
    assert typo.exit_code == 2 and len(typo.output.strip().splitlines()) == 1, typo.output
    assert typo.output.startswith("error: metric 'recal@20' (recal_at_20) is not logged"), typo.output
    assert "--metric NAME@K with NAME one of" in typo.output and "recall" in typo.output
    good = CliRunner().invoke(app, [*args, "--metric", "ndcg@10", "-f", "markdown"])
    assert good.exit_code == 0 and "| ndcg@10 |" in good.output, good.output


def test_the_compare_command_recsys_run_prints_works_as_printed(shared_mlflow_uri, tmp_path, monkeypatch):
    """`recsys run --config FILE --set tracking.tracking_uri=...` printed `recsys compare --metric
    recall@20`: run as printed it read the default config's experiment in ./mlflow ('no experiment
    named ...') and named recall@20 whatever promotion.metric was. It carries the run's --config and
    tracking / promotion --set now."""
    import shlex

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mine.toml"
    config.write_text(
        'name = "printed"\n[tracking]\nexperiment = "printed-compare"\nmodel_name_prefix = "printed"\n'
        '[promotion]\nregistered_model = "printed-best"\nmetric = "ndcg@10"\n'
        '[data]\nsource = "synthetic"\nmin_user_interactions = 2\n'
        '[data.synthetic]\nn_users = 60\nn_items = 40\ninteractions_per_user = 8.0\n'
        '[evaluation]\nks = [10]\nbootstrap_samples = 20\n[[models]]\nname = "pop"\nkind = "popularity"\n'
    )
    run = CliRunner().invoke(
        app, ["run", "--no-prefect", "--config", str(config), "--set", f"tracking.tracking_uri={shared_mlflow_uri}"],
        env={"COLUMNS": "1000"},
    )
    assert run.exit_code == 0, run.output
    printed = next(line for line in run.output.splitlines() if line.startswith("compare:"))
    argv = shlex.split(printed.removeprefix("compare:"))
    assert argv[:1] == ["recsys"] and argv[-2:] == ["--metric", "ndcg@10"]
    compared = CliRunner().invoke(app, [*argv[1:], "--format", "csv"])
    assert compared.exit_code == 0, compared.output
    rows = compared.output.strip().splitlines()
    assert rows[0].startswith("lineage,") and len(rows) == 2 and rows[1].startswith("printed|synthetic")
    assert ",pop,popularity," in rows[1]


@pytest.mark.parametrize("command", [["compare"], ["promote", "--run-id", "abc"], ["serve"]])
def test_reading_commands_name_a_missing_store_instead_of_creating_one(command, tmp_path, monkeypatch):
    """Run from the wrong directory (or with a mistyped tracking URI), compare / promote / serve
    created an empty store there (seconds of migrations, a stray mlflow/ folder) and then said
    'no experiment named ...'; they name the file they looked for and how to point at the right one."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*command, "--set", "tracking.tracking_uri=sqlite:///elsewhere/mlflow.db"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"no MLflow store at {tmp_path / 'elsewhere' / 'mlflow.db'}" in text
    assert "--set tracking.tracking_uri=" in text and "Traceback" not in text
    assert list(tmp_path.iterdir()) == []


def test_folding_ranks_the_smallest_first(shared_mlflow_uri):
    """folding@k is the share of lists in blocks the user never touched: lower is better, and
    `recsys compare -m folding@20` put the most folded model (popularity) on top as the best."""
    import uuid

    from recsys.tracking.compare import rich_table

    client = MlflowClient(shared_mlflow_uri)
    experiment = f"folding-order-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(experiment)
    for name, folding in (("popular", 0.83), ("factor", 0.02), ("tower", 0.001)):
        run = client.create_run(experiment_id, tags={"recsys.kind": "model", "recsys.model_name": name})
        client.log_metric(run.info.run_id, "folding_at_20", folding)
        client.set_terminated(run.info.run_id)
    frame = compare(client, experiment, "folding@20", registered_model=None)
    assert frame.get_column("model").to_list() == ["tower", "factor", "popular"]
    assert "folding@20 (lower is better)" in rich_table(frame, "folding@20").heading


def test_latest_pipeline_candidates_are_of_the_configs_lineage(logged):
    """One experiment holds every data set a config ran on. `recsys promote --force` with the
    synthetic config, after a run of the same config on ML-100K, took the ML-100K run (the newest)
    and handed the synthetic serving line's champion alias to its model. The candidates are now the
    newest ended pipeline run of the config's lineage; another lineage's is an error naming it, and
    a run from before lineages were tagged is still found."""
    from recsys.errors import TrackingError
    from recsys.lineage import Lineage
    from recsys.tracking.runs import TAG_KIND

    client = MlflowClient(logged.uri, registry_uri=logged.uri)
    experiment = client.create_experiment(f"two-data-sets-{uuid.uuid4().hex[:8]}")
    synthetic, movielens = Lineage("default", "synthetic:0a1b2c3d"), Lineage("default", "/data/ml-100k.inter")
    children = {}
    for start, lineage in ((1_000, synthetic), (2_000, movielens)):
        parent = client.create_run(experiment, start_time=start, tags={TAG_KIND: "pipeline", **lineage.tags()})
        child = client.create_run(experiment, start_time=start + 1, tags={"mlflow.parentRunId": parent.info.run_id})
        client.set_terminated(child.info.run_id)
        client.set_terminated(parent.info.run_id)
        children[lineage] = child.info.run_id
    name = client.get_experiment(experiment).name
    assert latest_pipeline_model_runs(client, name, synthetic) == [children[synthetic]]
    assert latest_pipeline_model_runs(client, name, movielens) == [children[movielens]]
    with pytest.raises(TrackingError, match=re.escape("no pipeline run of this config's lineage 'default|lastfm-2k'")):
        latest_pipeline_model_runs(client, name, Lineage("default", "lastfm-2k"))

    untagged = client.create_experiment(f"before-lineages-{uuid.uuid4().hex[:8]}")
    parent = client.create_run(untagged, tags={TAG_KIND: "pipeline"})
    child = client.create_run(untagged, tags={"mlflow.parentRunId": parent.info.run_id})
    client.set_terminated(child.info.run_id)
    client.set_terminated(parent.info.run_id)
    assert latest_pipeline_model_runs(client, client.get_experiment(untagged).name, synthetic) == [child.info.run_id]


def test_plotted_curves_of_two_data_sets_name_the_data_set():
    """`recsys compare --plot` after one config ran on two data sets labelled every line
    `model (run, split ...)`: curves of different data read as one comparison. With several
    lineages each label names the config and the data source's file."""
    import polars as pl

    from recsys.tracking.compare import curve_labels

    frame = pl.DataFrame({
        "lineage": ["movielens|/data/ml-100k.inter", "movielens|/data/landing/", "movielens|/data/ml-100k.inter"],
        "split": ["5ac490fba4dc", "3355a42d1ad6", "5ac490fba4dc"], "model": ["ease", "ease", "wals"],
        "run_id": ["aaaaaa11", "bbbbbb22", "cccccc33"],
    })  # fmt: skip
    assert curve_labels(frame) == {
        "aaaaaa11": "ease (aaaaaa, split 5ac490, movielens on ml-100k.inter)",
        "bbbbbb22": "ease (bbbbbb, split 3355a4, movielens on landing)",
        "cccccc33": "wals (cccccc, split 5ac490, movielens on ml-100k.inter)",
    }
    one = frame.filter(pl.col("split") == "5ac490fba4dc")
    assert curve_labels(one)["cccccc33"] == "wals (cccccc, split 5ac490)"


def test_intervals_at_another_confidence_are_labelled_with_their_level(logged, champion_set, planted_data, planted_split):
    """A run made with `--set evaluation.confidence=0.8` logged 80% intervals, which compare showed
    under "95% CI" beside the 95% intervals of the same model on the same split (ML-100K WALS:
    [0.3617, 0.3821] next to [0.3563, 0.3875])."""
    import polars as pl

    from recsys.config import EvaluationConfig
    from recsys.models.popularity import PopularityConfig

    narrow = EvaluationConfig(ks=[5, 10, 20], bootstrap_samples=200, confidence=0.8)
    eighty = log_one(logged, PopularityConfig(name="popularity"), planted_split, planted_data, evaluation=narrow)
    frame = compare(champion_set, "tests", "recall@20", max_runs=200, registered_model="recsys-popularity")
    rows = {r["run_id"]: r for r in frame.iter_rows(named=True)}
    assert rows[eighty]["ci_level"] == pytest.approx(0.8)
    assert rows[logged.runs["popularity"]]["ci_level"] == pytest.approx(0.95)
    header, cells = display_rows(frame, "recall@20")
    assert header[5] == "CI"  # levels differ: each cell names its own
    by_run = {row[8]: row[5] for row in cells}
    assert by_run[eighty[:8]].endswith(" 80%") and by_run[logged.runs["popularity"][:8]].endswith(" 95%")
    only_ours = frame.filter(pl.col("run_id") == logged.runs["popularity"])
    assert display_rows(only_ours, "recall@20")[0][5] == "95% CI"


def test_no_delta_to_a_leaky_re_scoring_whose_decision_was_forced(logged, champion_set, planted_data):
    """`recsys promote --force` overwrites a run's decision tag with `promoted`. After forcing a
    reseeded run to champion and forcing the old champion back, compare took the old champion's
    leaky re-scoring on the reseeded split as the reference (ML-100K: a delta of -0.127 while 80%
    of that split's test pairs had trained the champion)."""
    from recsys.data.splits import split_data
    from recsys.models.popularity import PopularityConfig
    from recsys.tracking.reevaluate import TAG_CHAMPION_REEVALUATED
    from recsys.tracking.registry import TAG_DECISION, TAG_FORCED

    reseeded = split_data(planted_data, SplitConfig(protocol="random", test_fraction=0.25, seed=12))
    forced = log_one(logged, PopularityConfig(name="popularity"), reseeded, planted_data)
    beside = log_one(logged, PopularityConfig(name="popularity"), reseeded, planted_data)
    champion_set.log_metric(forced, "champion_recall_at_20", 0.9)  # as decide() logs the re-scoring
    champion_set.log_metric(forced, "champion_test_seen_fraction", 0.8)
    champion_set.set_tag(forced, TAG_CHAMPION_REEVALUATED, logged.runs["popularity"])
    champion_set.set_tag(forced, TAG_DECISION, "promoted")  # as --force records it
    champion_set.set_tag(forced, TAG_FORCED, "true")
    frame = compare(champion_set, "tests", "recall@20", max_runs=200, registered_model="recsys-popularity")
    rows = {r["run_id"]: r for r in frame.iter_rows(named=True)}
    assert rows[forced]["delta_to_champion"] is None and rows[beside]["delta_to_champion"] is None
    # a clean re-scoring (no leaked pair) stays the reference, forced or not
    champion_set.log_metric(forced, "champion_test_seen_fraction", 0.0)
    frame = compare(champion_set, "tests", "recall@20", max_runs=200, registered_model="recsys-popularity")
    rows = {r["run_id"]: r for r in frame.iter_rows(named=True)}
    assert rows[beside]["delta_to_champion"] == pytest.approx(rows[beside]["mean"] - 0.9)
