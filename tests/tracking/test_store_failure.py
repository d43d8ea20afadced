"""The tracking store fails mid-run, or was never a store (issue 20, items 3 and 8).

* A run killed with SIGKILL leaves its MLflow runs RUNNING; the next start closes them KILLED, with
  a note, by the host + pid they were tagged with. Runs of live processes are left alone.
* The MLflow server dies after the parent run opened: every model still trains, the summary table
  and --json are written, the runs and trained models are kept on disk, the command exits 2 with
  one line, and `recsys run --resume-tracking` logs it all once a store is back.
* In-memory SQLite is refused before any work.

The server is MLflow's own tracking server app served from a thread (tests/thread_server.py), so the
test can stop it at an exact point.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from stopped import stopped_at_its_point
from thread_server import ThreadServer
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import RunConfig, TrackingConfig
from recsys.errors import TrackingError
from recsys.tracking.reevaluate import SAVED_MODEL_ARTIFACT
from recsys.tracking.store import check_tracking

runner = CliRunner()

# ----------------------------------------------------------------------------- item 3: kill -9

OPEN_RUNS_THEN_DIE = """
    import os, signal, sys
    from recsys.config import RunConfig, TrackingConfig
    from recsys.models.popularity import PopularityConfig
    from recsys.tracking.runs import Tracker

    cfg = RunConfig(name="doomed", tracking=TrackingConfig(tracking_uri=sys.argv[1], experiment=sys.argv[2]))
    tracker = Tracker(cfg.tracking, cfg)
    parent = tracker.start_parent()
    child = tracker.start_child(parent, PopularityConfig(name="pop"))
    child.callback(1, {"loss": 0.5})
    print(parent, child.run_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_runs_of_a_killed_process_are_closed_killed_at_the_next_start(tracking_uri):
    from recsys.tracking.runs import Tracker

    experiment = f"dead-{uuid.uuid4().hex[:8]}"
    cfg = RunConfig(tracking=TrackingConfig(tracking_uri=tracking_uri, experiment=experiment))
    alive = Tracker(cfg.tracking, cfg)
    mine = alive.start_parent("still-running")  # this process lives: its run must stay open
    killed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(OPEN_RUNS_THEN_DIE), tracking_uri, experiment],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    orphans = killed.stdout.split()
    client = MlflowClient(tracking_uri)
    assert {client.get_run(r).info.status for r in orphans} == {"RUNNING"}

    again = Tracker(cfg.tracking, cfg)
    assert sorted(again.closed_dead_runs) == sorted(orphans)
    for run_id in orphans:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert "ended without closing this run" in run.data.tags["recsys.killed"]
        assert run.data.tags["mlflow.note.content"] == run.data.tags["recsys.killed"]
    assert client.get_run(mine).info.status == "RUNNING"
    alive.end(mine)


# ----------------------------------------------------------------------------- item 8: in memory


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"])
def test_in_memory_sqlite_is_refused(uri, monkeypatch):
    with pytest.raises(TrackingError, match="in-memory SQLite"):
        check_tracking(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = runner.invoke(app, ["run", "--no-prefect", "--set", "data.synthetic.n_users=10"])
    assert result.exit_code == 2 and "in-memory SQLite" in result.output


# ----------------------------------------------------------------------------- item 8: server dies


@pytest.fixture()
def server(shared_mlflow_uri, tmp_path):
    """A server of its own, killed mid-run (so not parametrised over the stores: it copies the
    session's migrated SQLite store)."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    srv = ThreadServer.on_copy_of(shared_mlflow_uri, tmp_path)
    yield srv
    srv.kill()
    mlflow.set_tracking_uri(previous)  # the server's store set the process-wide default


def _config(tmp_path: Path, uri: str, experiment: str) -> list[str]:
    return [
        "data.synthetic.n_users=120", "data.synthetic.n_items=60", "data.synthetic.n_clusters=3",
        "data.synthetic.interactions_per_user=12", "data.min_user_interactions=2", "evaluation.ks=[5, 20]",
        "evaluation.bootstrap_samples=20", f'data.processed_dir="{tmp_path / "processed"}"',
        f'data.raw_dir="{tmp_path / "raw"}"', f'tracking.tracking_uri="{uri}"', f'tracking.experiment="{experiment}"',
        f'tracking.offline_dir="{tmp_path / "unlogged"}"', 'tracking.model_name_prefix="dying"',
        f'promotion.registered_model="dying-{experiment}"',
        'models=[{name="pop", kind="popularity"}, {name="wals", kind="wals", factors=8, iterations=3, threads=1}]',
    ]  # fmt: skip


@pytest.mark.slow
def test_server_dying_mid_run_keeps_everything_and_resume_logs_it(server, tmp_path, monkeypatch):
    from pipelines import run as pipeline

    experiment = f"dying-{uuid.uuid4().hex[:8]}"
    overrides = _config(tmp_path, server.uri, experiment)
    # The server is gone for good once killed: each request to it failed only after MLflow's retries
    # and their backoff sleeps (recsys's own limit, 2 retries, is seconds per request), the bulk of
    # this test's time. Connection refused goes the same way without them.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    def execute(cfg, config, sets, *, tracking, prefect):
        def kill_then_train(one, wave):  # the parent run is open; the server dies before any model
            server.kill()
            return [one(m) for m in wave]

        result = pipeline.run_pipeline(cfg, tracking=tracking, map_models=kill_then_train, log=lambda _: None)
        return result.to_json(), None

    monkeypatch.setattr("recsys.cli.pipeline_cmds._execute", execute)
    summary_file = tmp_path / "summary.json"
    sets = [arg for item in overrides for arg in ("--set", item)]
    result = runner.invoke(app, ["run", "--no-prefect", "--json", str(summary_file), *sets])

    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--resume-tracking" in errors[0] and "Traceback" not in result.output
    assert "wals" in result.output and "pop" in result.output  # the comparison table was printed
    summary = json.loads(summary_file.read_text())
    bundle = Path(summary["unlogged_dir"])
    assert str(bundle) in errors[0]
    assert [m["status"] for m in summary["models"]] == ["ok", "ok"]
    assert {m["unlogged"] for m in summary["models"]} == {str(bundle)}
    assert not summary["promotion"]["promoted"] and summary["promotion"]["reason"].startswith("not decided")
    for name in ("parent", "pop", "wals"):
        assert (bundle / name / "run.json").is_file()
    assert (bundle / "wals" / "files" / SAVED_MODEL_ARTIFACT / "config.json").is_file()  # the trained model
    assert (bundle / "wals" / "files" / "model" / "MLmodel").is_file()  # the pyfunc

    # the store is back (here: its database, directly): log what was kept
    store = server.sqlite_uri
    resumed = runner.invoke(app, ["run", "--resume-tracking", str(tmp_path / "unlogged"), *sets,
                                  "--set", f'tracking.tracking_uri="{store}"'])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    client = MlflowClient(store, registry_uri=store)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}  # nothing left RUNNING
    new = {
        r.data.tags.get("recsys.model_name", "parent"): r
        for r in runs
        if "recsys.resumed_from" in r.data.tags
    }
    assert sorted(new) == ["parent", "pop", "wals"] and {r.info.status for r in new.values()} == {"FINISHED"}
    for name in ("pop", "wals"):
        child = new[name]
        assert child.data.tags["mlflow.parentRunId"] == new["parent"].info.run_id
        outcome = next(m for m in summary["models"] if m["name"] == name)
        assert child.data.metrics["recall_at_20"] == pytest.approx(outcome["metrics"]["recall@20"], abs=1e-12)
        assert child.data.params["name"] == name
        listed = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"model", "evaluation"} <= listed
        assert client.get_registered_model(f"dying-{name}").latest_versions
    # only the parent reached the server before it died: it is closed, pointing at its replacement
    originals = [r for r in runs if "recsys.replaced_by" in r.data.tags]
    assert [r.info.run_id for r in originals] == [summary["mlflow_parent_run_id"]]
    assert originals[0].info.status == "KILLED"
    assert originals[0].data.tags["recsys.replaced_by"] == new["parent"].info.run_id
    # the split the models were evaluated on moved to the new parent, so the rule can run on them
    assert "split" in {a.path for a in client.list_artifacts(new["parent"].info.run_id)}
    promoted = runner.invoke(app, ["promote", *sets, "--set", f'tracking.tracking_uri="{store}"'])
    assert promoted.exit_code == 0, promoted.output
    from recsys.tracking.registry import CHAMPION, alias_version

    champion = alias_version(client, f"dying-{experiment}", CHAMPION)
    assert champion is not None and champion.run_id in {new["pop"].info.run_id, new["wals"].info.run_id}
    again = runner.invoke(
        app, ["run", "--resume-tracking", str(bundle), *sets, "--set", f'tracking.tracking_uri="{store}"']
    )
    assert again.exit_code == 0 and "already logged" in " ".join(again.output.split())  # wrapped at 120 columns
    assert len(client.search_runs([exp.experiment_id])) == len(runs)


def test_an_interrupted_run_closes_its_parent_run_killed_at_once(shared_mlflow_uri, tmp_path):
    """Ctrl-C in the middle of the models: the model run was closed KILLED but the parent run stayed
    RUNNING until the next run's dead-process sweep (the MLflow UI showed it running)."""
    from pipelines.run import run_pipeline
    from recsys.config import load_config

    experiment = f"interrupted-{uuid.uuid4().hex[:8]}"
    cfg = load_config(None, _config(tmp_path, shared_mlflow_uri, experiment))

    def interrupt(line: str) -> None:
        if line.startswith("training pop"):  # the second model: wals (longest first) has finished
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, tracking=True, log=interrupt)
    client = MlflowClient(shared_mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    status = {run.data.tags.get("recsys.kind", "?"): run.info.status for run in runs if "recsys.model_name" not in run.data.tags}
    models = {run.data.tags["recsys.model_name"]: run.info.status for run in runs if "recsys.model_name" in run.data.tags}
    assert models.get("wals") == "FINISHED" and "RUNNING" not in models.values()
    assert list(status.values()) == ["KILLED"], status


OPEN_A_PARENT_RUN = """
    import signal, sys
    # A child started by a process that ignores SIGINT (an xdist worker can) inherits SIG_IGN, and
    # Python then installs no KeyboardInterrupt handler: the SIGINT below would be dropped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from recsys.config import RunConfig, TrackingConfig
    from recsys.tracking.runs import Tracker

    cfg = RunConfig(name="interrupted-open", tracking=TrackingConfig(tracking_uri=sys.argv[1], experiment=sys.argv[2]))
    Tracker(cfg.tracking, cfg).start_parent()
"""


def test_an_interrupt_while_the_parent_run_opens_closes_it_killed(tracking_uri):
    """Ctrl-C of `recsys run` against the team stack left the parent run RUNNING: opening it is
    several store calls after its creation (params, data set, the split uploaded through the
    server's proxy), and the handler that closes it KILLED on an interrupt started only once the
    run's id was returned. The process is frozen right after the run's creation
    (RECSYS_STOP_AT=tracking.parent_opened), then gets SIGINT: the run must end KILLED at once."""
    import os
    import signal

    from recsys.faults import STOP_ENV

    experiment = f"open-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, STOP_ENV: "tracking.parent_opened", "MLFLOW_TRACKING_URI": tracking_uri}
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(OPEN_A_PARENT_RUN), tracking_uri, experiment],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    with stopped_at_its_point(process):
        client = MlflowClient(tracking_uri)
        [run] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        assert run.info.status == "RUNNING"  # created, frozen before its params
        os.kill(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
    assert client.get_run(run.info.run_id).info.status == "KILLED"


def test_a_runs_later_trackers_start_offline_once_one_found_the_store_failing(shared_mlflow_uri, tmp_path):
    """Each model task of a Prefect run builds its own tracker. A frozen server (connections
    accepted, never answered) cost every one of them MLflow's timeout times its tries (~95 s)
    before it went offline, and the flow's own tracker once more: a run of four models took 413 s
    instead of 45. Once one tracker of a run finds the store failing, the run's later trackers
    (and the flow's) go offline at once; another run still asks the store."""
    from recsys.models.popularity import PopularityConfig
    from recsys.tracking.runs import Tracker

    cfg = RunConfig(name="gone", tracking=TrackingConfig(
        tracking_uri=shared_mlflow_uri, experiment=f"gone-{tmp_path.name}", offline_dir=str(tmp_path / "unlogged")))  # fmt: skip
    flow = Tracker(cfg.tracking, cfg, check=False)
    parent = flow.start_parent("gone")

    def task() -> Tracker:  # what flows.pipeline.task_tracker builds for a model of this run
        tracker = Tracker(cfg.tracking, cfg, check=False, offline_if_gone=True, parent_id=parent)
        tracker.adopt_parent(parent, flow.parent_tags(parent))
        return tracker

    first = task()
    first.start_child(parent, PopularityConfig(name="pop"))
    first.mark_failed("MlflowException: API request to /api/2.0/mlflow/runs/log-batch failed: Read timed out")
    later = task()
    assert later.failure == first.failure and later.experiment_id == ""  # the store was not asked
    assert later.start_child(parent, PopularityConfig(name="wals")).run_id.startswith("offline")
    flow.log_params(parent, {"after": 1})  # the flow's tracker: offline before its next store call
    assert flow.failure == first.failure and flow.kept_in == first.kept_in
    other = Tracker(cfg.tracking, cfg, check=False, offline_if_gone=True, parent_id="another-run")
    assert other.failure is None and other.experiment_id == flow.experiment_id


def test_a_password_in_the_tracking_uri_is_never_printed_logged_or_written(mlflow_database, tmp_path, monkeypatch):
    """A store URI with a password (`postgresql://user:PASSWORD@host/db`, the team's database opened
    directly) was printed in the run's closing lines, written to --json, logged as the parent run's
    `tracking.tracking_uri` param and in its description, and saved in every model run's
    config/run.toml: everyone who could read the store or the logs read the password. Now each
    shows ***."""
    from urllib.parse import urlparse

    secret = urlparse(mlflow_database).password
    assert secret
    experiment = f"secret-{uuid.uuid4().hex[:8]}"
    sets = [arg for item in _config(tmp_path, mlflow_database, experiment)[:-1]
            + ['models=[{name="pop", kind="popularity"}]'] for arg in ("--set", item)]  # fmt: skip
    summary_file = tmp_path / "summary.json"
    # A database store makes a new experiment only with an artifact location (else MLflow's ./mlruns
    # of the working directory): refused without one, naming the setting.
    refused = runner.invoke(app, ["run", "--no-prefect", *sets])
    assert refused.exit_code == 2 and "tracking.artifact_location" in refused.output, refused.output.replace(secret, "***")
    assert secret not in refused.output
    sets += ["--set", f'tracking.artifact_location="{tmp_path / "artifacts"}"']
    result = runner.invoke(app, ["run", "--no-prefect", "--json", str(summary_file), *sets])
    assert result.exit_code == 0, result.output.replace(secret, "***")
    store_line = next(line for line in result.output.splitlines() if line.startswith("MLflow store:"))
    assert ":***@" in store_line and secret not in store_line
    # only the commands to run next repeat the command's own --set (copied, they must work)
    assert all("--set" in line for line in result.output.splitlines() if secret in line)
    assert secret not in summary_file.read_text()
    client = MlflowClient(mlflow_database)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert not [k for k, v in {**run.data.params, **run.data.tags}.items() if secret in v]
    child = next(r for r in runs if r.data.tags.get("recsys.kind") == "model")
    logged = Path(client.download_artifacts(child.info.run_id, "config/run.toml", str(tmp_path)))
    assert ":***@" in logged.read_text() and secret not in logged.read_text()
    assert (tmp_path / "artifacts" / child.info.run_id / "artifacts" / "config" / "run.toml").is_file()


def test_a_damaged_kept_run_record_is_one_error_line_naming_it(shared_mlflow_uri, tmp_path):
    """A kept run's record that is not one (edited by hand, cut short by a full disk) stopped
    `--resume-tracking` with "unexpected JSONDecodeError ... this is a bug", exit 1 (found by QA):
    now one error line naming the file and what to do, exit 2, and nothing logged."""
    bundle = tmp_path / "unlogged" / "a-run"
    for name, text in (("parent", '{"key": "parent", "name": "p", "run_id": "r"}'), ("wals", '{"key": "wals", "na')):
        (bundle / name).mkdir(parents=True)
        (bundle / name / "run.json").write_text(text)
    result = runner.invoke(app, ["run", "--resume-tracking", str(bundle), "--set",
                                 f'tracking.tracking_uri="{shared_mlflow_uri}"'])  # fmt: skip
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output and "bug" not in result.output
    assert f"{bundle / 'wals' / 'run.json'} is not a readable record" in " ".join(result.output.split())


def test_a_resume_logs_only_the_kept_runs_of_its_configs_experiment(shared_mlflow_uri, tmp_path):
    """`recsys run --resume-tracking DIR` printed bare (as the error line printed it) read the default
    config: the runs of a run with --set tracking.experiment=... (or another --config) were logged
    into the default experiment, where `recsys promote` and `recsys compare` with the run's config
    never found them, and the bundle was marked logged. A bundle of another experiment is now
    skipped with the --set that resumes it; only bundles of other experiments is an error, before the
    store is touched."""
    ours, theirs = f"ours-{uuid.uuid4().hex[:8]}", f"theirs-{uuid.uuid4().hex[:8]}"
    kept = tmp_path / "unlogged"
    for experiment in (ours, theirs):
        record = {"key": "parent", "name": "default", "run_id": f"offline-{experiment}", "status": "FINISHED",
                  "params": {"tracking.experiment": experiment}}  # fmt: skip
        (kept / experiment / "parent").mkdir(parents=True)
        (kept / experiment / "parent" / "run.json").write_text(json.dumps(record))
    store = ["--set", f'tracking.tracking_uri="{shared_mlflow_uri}"']
    result = runner.invoke(app, ["run", "--resume-tracking", str(kept), *store, "--set", f"tracking.experiment={ours}"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert f"skipped {kept / theirs}: a run of experiment '{theirs}'" in said and f"--set tracking.experiment={theirs}" in said
    assert f"logged {kept / ours} into" in said and not (kept / theirs / "logged.json").exists()
    client = MlflowClient(shared_mlflow_uri)
    [run] = client.search_runs([client.get_experiment_by_name(ours).experiment_id])
    assert run.data.tags["recsys.resumed_from"] == f"offline-{ours}"

    elsewhere = f"elsewhere-{uuid.uuid4().hex[:8]}"
    result = runner.invoke(app, ["run", "--resume-tracking", str(kept / theirs), *store, "--set", f"tracking.experiment={elsewhere}"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert client.get_experiment_by_name(elsewhere) is None  # nothing made in passing


def test_a_missing_resume_directory_is_named_as_missing(tmp_path):
    """`recsys run --resume-tracking /nonexistent` said "no runs kept by a failed tracking store
    here", as if it had looked in a directory: a missing path (or a file) is now said to be so, in
    one error line naming it, exit 2, before any store is made."""
    store = tmp_path / "mlflow.db"
    sets = ["--set", f'tracking.tracking_uri="sqlite:///{store}"']
    for path, said in ((tmp_path / "nope", "no such file or directory"), (tmp_path / "a.json", "is a file, not a directory")):
        if path.suffix:
            path.write_text("{}\n")
        result = runner.invoke(app, ["run", "--resume-tracking", str(path), *sets])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith(f"error: {path}") and said in lines[0] and "no runs kept" not in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no store made in passing
