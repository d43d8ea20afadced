"""`recsys run --resume-tracking` of a bundle whose run is still training (two real processes).

A run whose tracking store fails goes on training: every later model is written into its bundle
(`<tracking.offline_dir>/<parent run id>/`) as it finishes. A resume started meanwhile logged the
bundle as it stood, marked it `logged.json`, and exited 0; the models the run kept after that were
never logged (every later resume said "already logged"). The run (`recsys run --no-prefect`, a real
process) loses its store (MLflow's server app in a thread of this test, shut) right after its
parent run opened, keeps `wals` (trained first), and is frozen (RECSYS_STOP_AT) before `pop`'s files are kept while
the resume runs. What a user must get: the resume refuses with one `error:` line naming the writer's
pid, exit 2, and logs nothing; once the run has ended, a resume logs all of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from stopped import stopped_at_its_point
from thread_server import ThreadServer
from typer.testing import CliRunner

from recsys.cli import app
from recsys.tracking.offline import (
    LOCK_FILE,
    LOGGED_FILE,
    PARENT_KEY,
    TAG_RESUMED_FROM,
    WRITER_MARK,
    RunRecord,
    bundle_in_use,
    no_writer,
    offline_run_id,
    save_record,
)

HOLD_THEN_SLEEP = """
import sys, time
from pathlib import Path
from recsys.tracking.offline import hold_bundle
hold_bundle(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(600)
"""


def _sets(tmp_path: Path, uri: str, experiment: str) -> list[str]:
    sets = [
        "data.synthetic.n_users=120", "data.synthetic.n_items=60", "data.synthetic.n_clusters=3",
        "data.synthetic.interactions_per_user=12", "data.min_user_interactions=2", "evaluation.ks=[5, 20]",
        "evaluation.bootstrap_samples=20", f'data.processed_dir="{tmp_path / "processed"}"',
        f'data.raw_dir="{tmp_path / "raw"}"', f'tracking.tracking_uri="{uri}"', f'tracking.experiment="{experiment}"',
        f'tracking.offline_dir="{tmp_path / "unlogged"}"', f'tracking.model_name_prefix="{experiment}"',
        f'promotion.registered_model="{experiment}-best"',
        'models=[{name="pop", kind="popularity"}, {name="wals", kind="wals", factors=8, iterations=3, threads=1}]',
    ]  # fmt: skip
    return [arg for item in sets for arg in ("--set", item)]


def test_a_bundle_whose_writer_was_killed_is_free_and_its_mark_goes(tmp_path: Path):
    """The writer's lock is the kernel's: a kill -9 of the writer frees the bundle at once, and the
    mark it left (naming a dead pid) is removed by the next resume's check."""
    import signal

    bundle = tmp_path / "bundle"
    writer = subprocess.Popen([sys.executable, "-c", HOLD_THEN_SLEEP, str(bundle)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "held"
        save_record(bundle, RunRecord(PARENT_KEY, "pipeline", offline_run_id()))
        busy = bundle_in_use(bundle)
        assert busy is not None and f"process {writer.pid}" in str(busy)
        assert (bundle / WRITER_MARK.format(pid=writer.pid)).is_file()
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    assert bundle_in_use(bundle) is None
    with no_writer(bundle):
        assert not list(bundle.glob(WRITER_MARK.format(pid="*")))


def test_a_resume_of_several_bundles_logs_the_finished_ones_and_names_the_one_still_written(
    shared_mlflow_uri, tmp_path: Path
):
    """`--resume-tracking DIR` over bundles of several runs: one still being written is left for a
    later resume (exit 2, its writer's pid named), the others are logged."""
    import signal

    kept = tmp_path / "unlogged"
    done, busy = kept / "done-run", kept / "busy-run"
    writer = subprocess.Popen([sys.executable, "-c", HOLD_THEN_SLEEP, str(busy)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "held"
        for bundle in (done, busy):
            save_record(bundle, RunRecord(PARENT_KEY, "pipeline", offline_run_id(), status="FINISHED"))
        experiment = f"several-{uuid.uuid4().hex[:8]}"
        result = CliRunner().invoke(app, ["run", "--resume-tracking", str(kept), "--set",
                                          f'tracking.tracking_uri="{shared_mlflow_uri}"', "--set",
                                          f'tracking.experiment="{experiment}"'])  # fmt: skip
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"process {writer.pid}" in errors[0] and "busy-run" in errors[0], result.output
    assert f"logged {done}" in " ".join(result.output.split())
    assert (done / LOGGED_FILE).is_file() and not (busy / LOGGED_FILE).exists()


@pytest.mark.slow
def test_a_resume_of_a_bundle_whose_run_still_trains_refuses_and_logs_nothing(
    shared_mlflow_uri, tmp_path: Path, monkeypatch
):
    import mlflow

    previous = mlflow.get_tracking_uri()
    server = ThreadServer.on_copy_of(shared_mlflow_uri, tmp_path)
    experiment = f"live-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RECSYS_"))}
    env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", RECSYS_STOP_AT="tracking.parent_opened,tracking.artifacts:2")
    try:
        with open(tmp_path / "run.log", "w") as out:
            run = subprocess.Popen(
                [sys.executable, "-m", "recsys.cli", "run", "--no-prefect", *_sets(tmp_path, server.uri, experiment)],
                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        try:
            with stopped_at_its_point(run):  # the parent run is open on the server
                server.kill()
            with stopped_at_its_point(run):  # offline: wals (trained first) kept, pop's files not yet
                bundles = list((tmp_path / "unlogged").iterdir())
                assert len(bundles) == 1 and (bundles[0] / "wals" / "files" / "model" / "MLmodel").is_file()
                assert not (bundles[0] / "pop" / "files" / "model").exists()
                store = ["--set", f'tracking.tracking_uri="{server.sqlite_uri}"']
                sets = [*_sets(tmp_path, server.uri, experiment), *store]
                early = CliRunner().invoke(app, ["run", "--resume-tracking", str(tmp_path / "unlogged"), *sets])
        finally:
            code = run.wait(timeout=300)
        output = (tmp_path / "run.log").read_text()
        assert code == 2, output[-4000:]  # the store failed: exit 2, everything kept
        assert (bundles[0] / "pop" / "files" / "model" / "MLmodel").is_file(), output[-4000:]

        client = MlflowClient(server.sqlite_uri, registry_uri=server.sqlite_uri)
        exp = client.get_experiment_by_name(experiment)

        def resumed() -> list[str]:
            runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_RESUMED_FROM}` != ''")
            return sorted(r.data.tags.get("recsys.model_name", "parent") for r in runs)

        errors = [line for line in early.output.splitlines() if line.startswith("error:")]
        assert early.exit_code == 2, early.output
        assert len(errors) == 1 and str(run.pid) in errors[0], early.output
        assert "Traceback" not in early.output
        assert resumed() == [] and not (bundles[0] / LOGGED_FILE).exists()
        assert not (bundles[0] / LOCK_FILE).exists()  # refused before a resume began: nothing made

        late = CliRunner().invoke(app, ["run", "--resume-tracking", str(tmp_path / "unlogged"), *sets])
        assert late.exit_code == 0, late.output
        assert resumed() == ["parent", "pop", "wals"]
    finally:
        server.kill()
        mlflow.set_tracking_uri(previous)
        monkeypatch.undo()
