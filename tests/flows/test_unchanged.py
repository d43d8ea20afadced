"""A scheduled run whose inputs did not change trains nothing (pipelines.unchanged).

Before, a nightly schedule over a log that did not grow retrained every model and registered a new,
identical version of each, every night. Now a run whose data, split, config and code equal those of
the last finished run of its lineage skips training, evaluation and registration, with one line
naming that run: by default scheduled runs do, runs started by hand train (`--if-changed` skips,
`--force` trains). The runs are real (`run_pipeline`, the Prefect flow, `recsys run`) against the
session's SQLite MLflow store; one tiny landing directory (60 users x 40 items, popularity) is shared
by the tests in file order, the last of which appends to it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from recsys.config import load_config

START = 1_700_000_000


def land(landing: Path, name: str, seed: int, rows: int = 600) -> None:
    """A day of interactions over 60 days (so a rolling split would have windows)."""
    rng = np.random.default_rng(seed)
    pl.DataFrame({
        "user_id": [f"u{i}" for i in rng.integers(0, 60, rows)], "item_id": [f"i{i}" for i in rng.integers(0, 40, rows)],
        "timestamp": START + seed * 86400 * 60 + np.arange(rows) * 8640, "rating": [4.0] * rows,
    }).write_csv(landing / name)  # fmt: skip


def settings(tmp: Path, uri: str, name: str) -> list[str]:
    return [
        f'name="{name}"', f'data.source="{tmp / "landing"}"', f'data.processed_dir="{tmp / "processed"}"',
        f'data.raw_dir="{tmp / "raw"}"', f'tracking.offline_dir="{tmp / "unlogged"}"', 'data.aggregate="last"', 'split.scheduled="as_configured"',
        "evaluation.ks=[10]", "evaluation.bootstrap_samples=20", "folding.enabled=false",
        'promotion.metric="recall@10"', f'tracking.tracking_uri="{uri}"', 'tracking.experiment="unchanged"',
        f'tracking.model_name_prefix="{name}"', f'promotion.registered_model="{name}-best"',
        'models=[{name="pop", kind="popularity"}]',
    ]  # fmt: skip


class Lineage:
    def __init__(self, tmp: Path, uri: str, name: str) -> None:
        (tmp / "landing").mkdir()
        land(tmp / "landing", "day1.csv", 0)
        self.tmp, self.uri, self.name = tmp, uri, name
        self.sets = settings(tmp, uri, name)
        self.cfg = load_config(None, self.sets)
        self.client = mlflow.MlflowClient(uri, registry_uri=uri)

    def run(self, scheduled: bool = True, cfg=None):
        from pipelines.run import run_pipeline

        lines: list[str] = []
        result = run_pipeline(cfg or self.cfg, scheduled=scheduled, log=lines.append)
        return result, lines

    def versions(self) -> dict[str, int]:
        """Registry versions of the model's line and of the serving line."""
        return {n: len(self.client.search_model_versions(f"name='{n}'")) for n in (f"{self.name}-pop", f"{self.name}-best")}

    def pipeline_runs(self) -> list:
        experiment = self.client.get_experiment_by_name("unchanged").experiment_id
        return self.client.search_runs(
            [experiment], filter_string=f"tags.`recsys.kind` = 'pipeline' and tags.`recsys.lineage` LIKE '{self.name}|%'",
            order_by=["attributes.start_time DESC"],
        )  # fmt: skip


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, shared_mlflow_uri) -> Lineage:
    """The lineage's first scheduled run, trained and registered."""
    tmp = tmp_path_factory.mktemp("unchanged")
    line = Lineage(tmp, shared_mlflow_uri, f"unchanged-{tmp.name}")
    first, _ = line.run()
    assert first.mlflow_parent_run_id and first.models[0].status == "ok"
    return line


def test_a_scheduled_run_on_unchanged_inputs_trains_and_registers_nothing(lineage):
    before, runs = lineage.versions(), lineage.pipeline_runs()
    assert before == {f"{lineage.name}-pop": 1, f"{lineage.name}-best": 1}
    result, lines = lineage.run()
    reference = runs[0].info.run_id
    assert result.models == [] and result.mlflow_parent_run_id is None and not result.failed
    assert result.unchanged["matches_run"] == reference and not result.unchanged["in_progress"]
    line = [x for x in lines if x.startswith("skipped:")]
    assert line == [result.unchanged["message"]]  # one line: which run, how to force
    assert f"unchanged since run {reference}" in line[0] and "--force" in line[0]
    assert lineage.versions() == before  # no new registry version of either line
    assert [r.info.run_id for r in lineage.pipeline_runs()] == [reference]  # no MLflow run either
    assert "recsys.unchanged_since" in lineage.client.get_run(reference).data.tags
    assert result.to_json()["unchanged"]["matches_run"] == reference


def test_a_run_by_hand_trains_and_recsys_run_if_changed_skips(lineage, tmp_path):
    """A person rerunning the same config (to check determinism, say) gets the run, and is told it
    repeats one; `recsys run --if-changed` skips it as a schedule would, and says so."""
    import json

    from typer.testing import CliRunner

    from recsys.cli import app

    reference = lineage.pipeline_runs()[0].info.run_id
    before = lineage.versions()
    manual, lines = lineage.run(scheduled=False)
    assert manual.mlflow_parent_run_id and manual.models[0].status == "ok"
    assert any(f"inputs unchanged since run {reference}" in x and "training anyway" in x for x in lines), lines
    assert lineage.versions()[f"{lineage.name}-pop"] == before[f"{lineage.name}-pop"] + 1

    config = tmp_path / "empty.toml"  # the built-in defaults, as load_config(None, ...) reads them
    config.write_text("# every setting comes from --set\n")
    args = ["run", "--no-prefect", "--if-changed", "--config", str(config), "--json", str(tmp_path / "out.json")]
    for assignment in lineage.sets:
        args += ["--set", assignment]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"skipped: unchanged since run {manual.mlflow_parent_run_id}" in said, result.output
    assert said.count("skipped: unchanged") == 1 and "recall@10" not in said.split("skipped:")[0], result.output
    summary = json.loads((tmp_path / "out.json").read_text())
    assert summary["unchanged"]["matches_run"] == manual.mlflow_parent_run_id
    # The model that serves, as the run it repeats left the line (not null: nothing was decided).
    champion = lineage.client.get_model_version_by_alias(lineage.cfg.promotion.registered_model, "champion")
    assert summary["promotion"]["champion_run_id"] == champion.run_id and summary["champion"] == "pop", summary
    assert lineage.pipeline_runs()[0].info.run_id == manual.mlflow_parent_run_id  # the skip added no run

    for bad, says in ((["--force"], "pass one"), (["--no-tracking"], "this run has no tracking")):
        result = CliRunner().invoke(app, [*args, *bad])
        errors = [x for x in result.output.splitlines() if x.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and says in result.output, result.output


def test_the_prefect_flow_skips_as_run_pipeline_does_and_force_trains(lineage, prefect_harness, tmp_path):
    """The deployment's flow (scheduled=True) decides as `recsys run --no-prefect`: the run it repeats
    was made without Prefect. `--param force=true` trains."""
    from flows.pipeline import training_flow_for, training_pipeline

    reference = lineage.pipeline_runs()[0].info.run_id
    before = lineage.versions()
    summary = training_flow_for(lineage.cfg)(lineage.cfg, True, True)
    assert summary["models"] == [] and summary["unchanged"]["matches_run"] == reference
    assert summary["champion"] == "pop" and summary["promotion"]["champion_version"] is not None  # still serving
    assert lineage.versions() == before and lineage.pipeline_runs()[0].info.run_id == reference

    forced = training_pipeline(None, lineage.sets, scheduled=True, force=True)
    assert "unchanged" not in forced and forced["models"][0]["status"] == "ok"
    assert lineage.versions()[f"{lineage.name}-pop"] == before[f"{lineage.name}-pop"] + 1
    newest = lineage.pipeline_runs()[0]
    assert newest.info.run_id == forced["mlflow_parent_run_id"] and newest.info.status == "FINISHED"
    # the policy is no input: the forced run is what the next scheduled run repeats
    again, _ = lineage.run()
    assert again.unchanged["matches_run"] == forced["mlflow_parent_run_id"]


def test_a_changed_config_trains(lineage):
    from pipelines.run import make_tracker, prepare_run_inputs
    from pipelines.unchanged import unchanged_check

    changed = lineage.cfg.model_copy(deep=True)
    changed.evaluation.bootstrap_samples = 30
    lines: list[str] = []
    inputs = prepare_run_inputs(changed, scheduled=True)
    tracker = make_tracker(inputs.cfg)
    tracker.run_config = inputs.cfg
    with unchanged_check(inputs.cfg, tracker, inputs.data, inputs.split, True, lines.append) as found:
        assert not found.skip
    reference = lineage.pipeline_runs()[0].info.run_id
    assert len(lines) == 1 and lines[0].startswith(f"inputs changed since run {reference} ("), lines
    assert lines[0].endswith("): config; training"), lines


def test_two_scheduled_runs_at_once_on_the_same_inputs_train_once(tmp_path, shared_mlflow_uri, monkeypatch):
    """Both look for an identical run before either opens one, unless the lineage is locked from the
    look to the opening: the look is slowed (as on a busy store) so the two surely overlap."""
    from recsys.tracking import unchanged

    line = Lineage(tmp_path, shared_mlflow_uri, f"race-{tmp_path.name}")
    real = unchanged.last_finished

    def slow_look(*args, **kwargs):
        found = real(*args, **kwargs)
        time.sleep(1.0)
        return found

    monkeypatch.setattr(unchanged, "last_finished", slow_look)
    results: list = []
    errors: list = []

    def scheduled() -> None:
        try:
            results.append(line.run()[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scheduled) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    trained = [r for r in results if r.mlflow_parent_run_id]
    skipped = [r for r in results if r.unchanged]
    assert len(trained) == 1 and len(skipped) == 1, [r.to_json() for r in results]
    assert skipped[0].unchanged["matches_run"] == trained[0].mlflow_parent_run_id
    assert line.versions() == {f"{line.name}-pop": 1, f"{line.name}-best": 1}
    assert len(line.pipeline_runs()) == 1


def test_data_appended_after_a_run_killed_midway_trains(lineage):
    """Data lands; a run on it is killed mid-way (kill -9: its parent run left RUNNING, its process
    gone). That run is no reference and blocks nothing: the next scheduled run trains on the new
    data, and the one after it repeats that run. (Last in the file: it grows the shared log.)"""
    import subprocess

    from pipelines.run import make_tracker, prepare_run_inputs
    from pipelines.unchanged import unchanged_check
    from recsys.tracking.liveness import HEARTBEATS, TAG_PID, TAG_PID_STARTED
    from recsys.tracking.unchanged import identical_running

    last = lineage.pipeline_runs()[0].info.run_id
    land(lineage.tmp / "landing", "day2.csv", 1)
    # the killed run, as far as it got: its data prepared, its parent opened as run_pipeline opens it
    inputs = prepare_run_inputs(lineage.cfg, scheduled=True)
    tracker = make_tracker(inputs.cfg)
    tracker.run_config = inputs.cfg
    with unchanged_check(inputs.cfg, tracker, inputs.data, inputs.split, True, lambda _: None) as found:
        killed = tracker.start_parent(data=inputs.data, split=inputs.split, tags=found.tags)
    experiment = lineage.client.get_experiment_by_name("unchanged").experiment_id
    assert identical_running(lineage.client, experiment, found.key, 0).run_id == killed  # alive: in progress
    HEARTBEATS.remove(killed)  # then its process dies (a pid that was, and is no more)
    gone = subprocess.Popen(["true"])
    gone.wait()
    for tag, value in ((TAG_PID, str(gone.pid)), (TAG_PID_STARTED, "")):
        lineage.client.set_tag(killed, tag, value)
    assert identical_running(lineage.client, experiment, found.key, 0) is None  # not in progress any more

    before = lineage.versions()
    result, lines = lineage.run()
    assert result.mlflow_parent_run_id not in (None, killed) and result.models[0].status == "ok"
    assert any(f"inputs changed since run {last}" in x and "data" in x for x in lines), lines
    assert lineage.client.get_run(killed).info.status == "KILLED"  # closed by the new run's start
    assert lineage.versions()[f"{lineage.name}-pop"] == before[f"{lineage.name}-pop"] + 1
    again, _ = lineage.run()
    assert again.unchanged["matches_run"] == result.mlflow_parent_run_id
