"""The training pipeline as Prefect runs it: completes, logs to MLflow, retries I/O, caches ingest,
isolates a failing model, and carries its cron schedule."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from stopped import stopped_at_its_point
from thread_server import ThreadServer

from recsys.config import load_config
from recsys.data.storage import read_manifest
from recsys.errors import RecsysWarning

TINY = [
    "data.synthetic.n_users=150", "data.synthetic.n_items=80", "data.synthetic.n_clusters=4",
    "data.synthetic.interactions_per_user=15", "data.min_user_interactions=2", "data.min_item_interactions=1",
    "split.validation_fraction=0.1", "evaluation.ks=[10, 20]", "evaluation.bootstrap_samples=50",
    "promotion.metric=\"recall@20\"",
    'models=[{name="pop", kind="popularity"}, {name="wals", kind="wals", factors=8, iterations=3},'
    ' {name="tt", kind="two_tower", dim=16, epochs=2, num_negatives=16, batch_size=256}]',
]


def tiny_config(tmp: Path, mlflow_uri: str, *extra: str):
    return load_config(None, [
        *TINY, f'data.processed_dir="{tmp / "processed"}"', f'data.raw_dir="{tmp / "raw"}"',
        f'tracking.tracking_uri="{mlflow_uri}"', f'tracking.experiment="flows-{tmp.name}"',
        f'tracking.model_name_prefix="{tmp.name}"', f'promotion.registered_model="{tmp.name}-best"', *extra,
    ])


@pytest.fixture()
def mlflow_uri(tmp_path_factory, shared_mlflow_uri):
    return shared_mlflow_uri


@pytest.mark.slow
def test_pipeline_completes_and_logs_every_model(prefect_harness, tmp_path, mlflow_uri):
    from flows.pipeline import training_flow_for

    # A student distilling from the WALS of the same run: its task starts once the teacher is done.
    cfg = tiny_config(tmp_path, mlflow_uri, TINY[-1][:-1] + ', {name="tt_kd", kind="two_tower", dim=16, epochs=2, '
                      'num_negatives=16, batch_size=256, distill={teacher="wals", top_m=10}}]')
    summary = training_flow_for(cfg)(cfg, True)

    assert [m["name"] for m in summary["models"]] == ["pop", "wals", "tt", "tt_kd"]
    assert all(m["status"] == "ok" for m in summary["models"])
    assert summary["dataset"]["users"] > 0 and summary["dataset"]["split"] == "random"
    assert summary["champion"] in {"pop", "wals", "tt", "tt_kd"}
    client = mlflow.MlflowClient(mlflow_uri)
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    for m in summary["models"]:
        child = client.get_run(m["mlflow_run_id"])
        assert child.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert any(key.startswith("recall") for key in child.data.metrics)
    student = client.get_run(summary["models"][3]["mlflow_run_id"])
    assert student.data.params["distill.teacher"] == "wals" and student.data.params["distill.top_m"] == "10"
    json.dumps(summary)  # the --json payload is plain JSON


@pytest.mark.slow
def test_second_run_hits_the_ingest_cache(prefect_harness, tmp_path, mlflow_uri, monkeypatch):
    import flows.pipeline as fp

    calls = []
    real = fp.prepare_dataset
    monkeypatch.setattr(fp, "prepare_dataset", lambda cfg: calls.append(1) or real(cfg))
    cfg = tiny_config(tmp_path, mlflow_uri, 'models=[{name="pop", kind="popularity"}]')
    first = fp.training_flow_for(cfg)(cfg, False)
    second = fp.training_flow_for(cfg)(cfg, False)
    assert len(calls) == 1, "unchanged data and config must reuse the cached ingest"
    assert first["dataset"]["fingerprint"] == second["dataset"]["fingerprint"]
    assert first["models"][0]["metrics"] == second["models"][0]["metrics"]


@pytest.mark.slow
def test_failing_io_task_retries(prefect_harness, tmp_path, mlflow_uri, monkeypatch):
    import flows.pipeline as fp

    attempts = []
    real = fp.prepare_dataset

    def flaky(cfg):
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("transient: storage not mounted yet")
        return real(cfg)

    monkeypatch.setattr(fp, "prepare_dataset", flaky)
    cfg = tiny_config(tmp_path, mlflow_uri, 'models=[{name="pop", kind="popularity"}]',
                      "orchestration.retries=2", "orchestration.retry_delay_seconds=0")
    summary = fp.training_flow_for(cfg)(cfg, False)
    assert len(attempts) == 2
    assert summary["models"][0]["status"] == "ok"


@pytest.mark.slow
def test_failing_model_fails_alone_and_the_flow_says_so(prefect_harness, tmp_path, mlflow_uri):
    from flows.pipeline import PipelineFailed, training_flow_for

    cfg = tiny_config(
        tmp_path, mlflow_uri,
        'models=[{name="pop", kind="popularity"}, {name="boom", kind="two_tower", dim=8, epochs=2, '
        'lr=1e30, normalize=false, batch_size=64}]',
    )
    with pytest.raises(PipelineFailed) as info:
        training_flow_for(cfg)(cfg, True)
    summary = info.value.summary
    by_name = {m["name"]: m for m in summary["models"]}
    assert by_name["pop"]["status"] == "ok"
    assert by_name["boom"]["status"] == "failed"
    assert "epoch" in by_name["boom"]["error"]
    client = mlflow.MlflowClient(mlflow_uri)
    assert client.get_run(by_name["pop"]["mlflow_run_id"]).info.status == "FINISHED"
    failed = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
        filter_string="attributes.status = 'FAILED'",
    )
    # The failed model's run, and the parent run, which tells the same truth as the flow.
    assert {r.info.run_id for r in failed} == {by_name["boom"]["mlflow_run_id"], summary["mlflow_parent_run_id"]}
    assert "epoch" in client.get_run(by_name["boom"]["mlflow_run_id"]).data.tags["recsys.error"]


def test_a_model_that_does_not_apply_to_the_data_is_skipped_and_the_run_succeeds(prefect_harness, tmp_path, mlflow_uri):
    """EASE above its catalogue bound (every real catalogue of more than 10,000 items, with the
    shipped configs) made the whole run exit 1. Now it is skipped before any work: no MLflow run of
    its own, the parent FINISHED and naming it; a run where every model is skipped trained nothing
    and fails."""
    from flows.pipeline import training_flow_for
    from pipelines.run import run_pipeline

    cfg = tiny_config(tmp_path, mlflow_uri, 'models=[{name="pop", kind="popularity"}, {name="e", kind="ease", max_items=10}]')
    summary = training_flow_for(cfg)(cfg, True)  # no PipelineFailed
    by_name = {m["name"]: m for m in summary["models"]}
    assert by_name["pop"]["status"] == "ok" and summary["champion"] == "pop"
    assert by_name["e"]["status"] == "skipped" and "max_items = 10" in by_name["e"]["error"]
    assert by_name["e"]["mlflow_run_id"] is None
    client = mlflow.MlflowClient(mlflow_uri)
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["recsys.skipped_models"] == "e"
    assert "| e | ease |" in parent.data.tags["mlflow.note.content"]  # its row names it; the reason does not again
    assert "skipped: ease needs dense" in parent.data.tags["mlflow.note.content"]

    only = tiny_config(tmp_path / "only", mlflow_uri, 'models=[{name="e", kind="ease", max_items=10}]')
    result = run_pipeline(only, tracking=False, log=lambda _: None)
    assert [m.name for m in result.failed] == ["e"] and result.models[0].status == "skipped"

def test_deployment_carries_the_cron_schedule():
    from flows.deployments import pipeline_deployment

    deployment = pipeline_deployment(cron="0 3 * * *", config_path="pipelines/configs/default.toml")
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
    assert deployment.parameters["config_path"] == "pipelines/configs/default.toml"
    assert deployment.parameters["scheduled"] is True  # scheduled runs split by the rolling protocol


@pytest.mark.slow
def test_recsys_run_json_on_movielens(prefect_harness, tmp_path, shared_mlflow_uri, ml100k_dir, monkeypatch):
    """`recsys run --config movielens.toml --set data.source=... --json out.json` end to end."""
    from typer.testing import CliRunner

    from recsys.cli import app

    monkeypatch.chdir(tmp_path)  # nothing lands in the repo's data/ or mlflow/
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "out.json"
    result = CliRunner().invoke(app, [
        "run", "--config", str(repo / "pipelines/configs/movielens.toml"),
        "--set", f'data.source="{ml100k_dir / "ml-100k.inter"}"',
        "--set", f'tracking.tracking_uri="{shared_mlflow_uri}"',
        "--set", 'promotion.registered_model="movielens-test-best"',
        "--set", 'models=[{name="popularity", kind="popularity"}, {name="wals", kind="wals", factors=32, iterations=4},'
                 ' {name="tt", kind="two_tower", loss="sampled_softmax", sampler="in_batch", epochs=1, dim=16}]',
        "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert set(summary) >= {"dataset", "models", "champion", "mlflow_parent_run_id", "wall_seconds", "step_seconds"}
    assert summary["dataset"]["split"] == "strong_generalization"
    assert set(summary["dataset"]) >= {"users", "items", "train_interactions", "test_interactions", "fingerprint"}
    assert 900 < summary["dataset"]["users"] <= 943  # ratings >= 4, users with >= 5 of them
    models = {m["name"]: m for m in summary["models"]}
    assert set(models) == {"popularity", "wals", "tt"}
    for m in models.values():
        assert {"name", "kind", "loss", "sampler", "metrics", "folding", "fit_seconds", "mlflow_run_id"} <= set(m)
        assert 0.0 <= m["metrics"]["recall@20"] <= 1.0
    assert models["wals"]["metrics"]["recall@20"] > models["popularity"]["metrics"]["recall@20"]
    assert "neighbour_cross_cluster@10" in " ".join(models["wals"]["folding"])  # no known blocks: found clusters
    assert summary["champion"] in models
    # The models' compute the orchestration overhead subtracts holds each model's set-up (opening its
    # run, loading torch on first use) beside fit, evaluation and logging (2 workers, movielens.toml).
    from flows.pipeline import _critical_path

    parts = {n: m["fit_seconds"] + m["setup_seconds"] + m["eval_seconds"] + m["log_seconds"] for n, m in models.items()}
    assert all(m["setup_seconds"] > 0 for m in models.values())
    assert summary["step_seconds"]["models"] == pytest.approx(_critical_path(parts, 2), abs=0.005)  # JSON rounds to ms


@pytest.mark.slow
def test_dask_runner_gives_the_same_result_as_threads(prefect_harness, tmp_path, shared_mlflow_uri):
    """Models trained in Dask worker processes (LocalCluster) score exactly as with threads."""
    pytest.importorskip("prefect_dask")
    from flows.pipeline import training_flow_for

    models = 'models=[{name="pop", kind="popularity"}, {name="wals", kind="wals", factors=8, iterations=3, threads=1}]'
    threads = tiny_config(tmp_path, shared_mlflow_uri, models)
    dask = tiny_config(tmp_path, shared_mlflow_uri, models, 'orchestration.task_runner="dask"')
    by_threads = training_flow_for(threads)(threads, False)
    by_dask = training_flow_for(dask)(dask, False)
    assert [m["metrics"] for m in by_dask["models"]] == [m["metrics"] for m in by_threads["models"]]
    assert by_dask["dataset"] == by_threads["dataset"]


def test_the_ingest_cache_key_changes_with_the_shape_of_its_result(monkeypatch):
    """Prefect keeps the ingest result pickled (~/.prefect/storage, shared by every checkout), keyed
    by the data fingerprint only: after an upgrade that added a field to DatasetResult, a run whose
    key matched a result the older release pickled failed on every retry ('DatasetResult' object
    has no attribute 'warnings')."""
    import dataclasses

    import flows.pipeline as pipeline

    now = pipeline._ingest_cache_key(None, {"fingerprint": "abc-123"})
    older = dataclasses.make_dataclass(
        "DatasetResult", [(f.name, f.type) for f in dataclasses.fields(pipeline.DatasetResult) if f.name != "warnings"]
    )
    monkeypatch.setattr(pipeline, "DatasetResult", older)
    assert pipeline._ingest_cache_key(None, {"fingerprint": "abc-123"}) != now
    assert now.startswith("ingest-abc-123-")



def test_persisted_results_go_to_the_sessions_folder_not_the_users(prefect_harness, tmp_path, request):
    """The ingest result Prefect persists went to the user's ~/.prefect/storage (444 files there on
    one machine, from test sessions and manual runs): the harness set no result storage. The
    session's pytest folder holds it (tests/conftest.py), for flows run in process and for
    subprocesses, with a PREFECT_HOME of their own or none."""
    import os
    import subprocess
    import sys

    from prefect.settings import get_current_settings

    from flows.pipeline import ingest_flow

    storage = Path(request.config._tmp_path_factory.getbasetemp()) / "prefect-storage"
    assert Path(get_current_settings().results.local_storage_path) == storage
    before = set(storage.glob("ingest-*"))
    ingest_flow(None, [*TINY, f'data.processed_dir="{tmp_path / "p"}"', f'data.raw_dir="{tmp_path / "raw"}"'])
    assert len(set(storage.glob("ingest-*")) - before) == 1  # this run's key (its source's path is new)
    code = "from prefect.settings import get_current_settings as s; print(s().results.local_storage_path)"
    for home in (None, tmp_path / "home"):
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}
        # without PREFECT_HOME, Prefect makes ~/.prefect as it starts: a home of the test's own
        env.update({"HOME": str(tmp_path / "user")} if home is None else {"PREFECT_HOME": str(home)})
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert Path(out.stdout.strip()) == storage, home


def test_a_cached_ingest_whose_directory_another_writer_replaced_is_redone(prefect_harness, tmp_path):
    """The ingest result is cached by source and settings; a non-append `recsys ingest --out` into
    its directory since then leaves the cached fingerprint naming data no longer there. The flow
    redoes the ingest (as when the directory is gone) instead of handing the split step a result
    that `load_dataset` refuses on every run."""
    from flows.pipeline import ingest_flow
    from recsys.config import DataConfig
    from recsys.data.ingest import ingest
    from recsys.data.storage import read_manifest

    sets = [*TINY, f'data.processed_dir="{tmp_path / "processed"}"', f'data.raw_dir="{tmp_path / "raw"}"']
    first = ingest_flow(None, sets)
    other = tmp_path / "other.csv"
    other.write_text("user_id,item_id,rating\n" + "\n".join(f"u{u},i{u % 7},4" for u in range(30)) + "\n")
    ingest(other, first["processed_dir"], DataConfig())  # another writer replaces the directory
    second = ingest_flow(None, sets)
    assert second["fingerprint"] == read_manifest(Path(second["processed_dir"])).get("fingerprint")
    assert not second["reused"] and second["fingerprint"] == first["fingerprint"]  # the synthetic data again


def test_a_cached_ingest_that_passed_a_landing_file_over_is_redone(prefect_harness, tmp_path, monkeypatch):
    """A landing file touched while a run read it (an rsync of the same bytes, a producer's last
    flush) is passed over for a later run. Its bytes, and so the ingest cache key, stay the same:
    the next run took the cached result and the file was never read. A cached result that passed
    files over is redone."""
    import pipelines.data as data_step
    from flows.pipeline import ingest_flow

    landing = tmp_path / "landing"
    landing.mkdir()
    _log(landing / "day1.csv", range(0, 30))
    _log(landing / "day2.csv", range(30, 60))
    sets = [f"data.source={landing}", f'data.processed_dir="{tmp_path / "processed"}"', "data.min_user_interactions=1",
            "data.min_item_interactions=1"]  # fmt: skip
    settled = data_step._settled
    monkeypatch.setattr(data_step, "_settled", lambda stamp: "day2" not in str(stamp.stats[0][0]) and settled(stamp))
    with pytest.warns(RecsysWarning, match="day2.csv: changed while this run read it"):
        first = ingest_flow(None, sets)  # day2.csv was "touched" during the read: left for later
    assert first["ingested_files"] == ["day1.csv"] and first["passed_over"] == [str(landing / "day2.csv")]
    monkeypatch.setattr(data_step, "_settled", settled)
    second = ingest_flow(None, sets)  # the same bytes: the same cache key
    assert second["ingested_files"] == ["day2.csv"] and second["passed_over"] == []
    assert read_manifest(Path(second["processed_dir"]))["users"] == 60


def _log(path: Path, users: range, items: int = 6) -> Path:
    rows = [f"u{u},i{(u + k) % 40},{1 + (u + k) % 5},{u * items + k}" for u in users for k in range(items)]
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_the_flow_trains_on_the_data_it_prepared_while_another_ingest_waits(prefect_harness, tmp_path):
    """The flow's ingest task and split task each took the processed directory's writer lock on
    their own, so a non-append `recsys ingest --out` into it could land between them and the split
    refused the run ("replaced by another writer"). Now the flow holds the lock from its (cached)
    ingest through the split, as `pipelines.run.prepare_run_inputs` does for `recsys run
    --no-prefect` / train: the other writer waits. The flow is frozen (RECSYS_STOP_AT) right after
    its ingest step, in its own process on the session's Prefect server; the other writer starts
    in that window."""
    import os
    import subprocess
    import sys
    import textwrap
    import threading
    import time

    from prefect.settings import PREFECT_API_URL

    from pipelines.data import dataset_dir
    from recsys.config import DataConfig
    from recsys.data.ingest import ingest
    from recsys.data.storage import load_processed
    from recsys.faults import STOP_ENV

    mine, theirs = _log(tmp_path / "mine.csv", range(0, 20)), _log(tmp_path / "theirs.csv", range(100, 130))
    sets = [f'data.source="{mine}"', f'data.processed_dir="{tmp_path / "processed"}"', "data.min_user_interactions=1",
            "data.min_item_interactions=1", 'models=[{name="pop", kind="popularity"}]']  # fmt: skip
    script = """
        import json, sys
        from flows.pipeline import training_flow_for
        from recsys.config import load_config
        cfg = load_config(None, sys.argv[1:])
        print(json.dumps(training_flow_for(cfg)(cfg, False)["dataset"]))
    """
    env = {**os.environ, STOP_ENV: "run.prepared", "OPENBLAS_NUM_THREADS": "1", "PREFECT_API_URL": PREFECT_API_URL.value()}
    run = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *sets],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    out, other, waits = dataset_dir(load_config(None, sets).data), {}, threading.Event()
    writer = threading.Thread(target=lambda: other.update(
        report=ingest(theirs, out, DataConfig(), progress=lambda line: waits.set() if "waiting" in line else None)
    ))  # fmt: skip
    with stopped_at_its_point(run):
        writer.start()
        while not waits.is_set() and writer.is_alive():  # the flow holds the lock: the other writer waits
            time.sleep(0.02)
    said, err = run.communicate(timeout=120)
    writer.join(timeout=60)
    assert run.returncode == 0, err[-3000:]
    assert waits.is_set()  # the other writer waited for the flow's lock
    dataset = json.loads(said.strip().splitlines()[-1])
    assert dataset["users"] == 20 and dataset["processed_dir"] == str(out)  # its own data, not the other's 30
    assert other["report"].users == 30 and load_processed(out).n_users == 30  # the other ingest landed after it


@contextlib.contextmanager
def _server_dies_as_the_models_are_submitted(shared_mlflow_uri, tmp_path, monkeypatch) -> Iterator[ThreadServer]:
    """An MLflow server (on a copy of the session's store) that is killed once the pipeline's parent
    run is open, right before its model tasks are submitted; killed and the tracking URI put back on
    leaving (the server's store set the process-wide default)."""
    import flows.pipeline as fp

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a dead server fails each call at once
    server = ThreadServer.on_copy_of(shared_mlflow_uri, tmp_path)
    previous = mlflow.get_tracking_uri()
    submit = fp.longest_first

    def die_then_submit(wave):
        server.kill()
        return submit(wave)

    monkeypatch.setattr(fp, "longest_first", die_then_submit)
    try:
        yield server
    finally:
        server.kill()
        mlflow.set_tracking_uri(previous)


@pytest.mark.slow
def test_a_deployments_run_whose_store_died_fails_with_the_error_line(prefect_harness, tmp_path, shared_mlflow_uri,
                                                                       monkeypatch):
    """A scheduled run (the deployment's flow, `training_pipeline`) whose MLflow server died mid-run
    ended Completed, like a run that had logged everything: the schedule's operator saw green while
    its models waited on disk for a `--resume-tracking` nobody knew to run. It now fails with the
    line `recsys run` prints (the server, how it went, where the models are, the resume command
    with the run's store options); the models were trained all the same."""
    from flows.pipeline import TrackingLost, training_pipeline

    experiment = f"deployed-{tmp_path.name}"
    with _server_dies_as_the_models_are_submitted(shared_mlflow_uri, tmp_path, monkeypatch) as server:
        overrides = [*TINY[:-1], 'models=[{name="pop", kind="popularity"}]', f'data.processed_dir="{tmp_path / "p"}"',
                     f'data.raw_dir="{tmp_path / "raw"}"', f'tracking.tracking_uri="{server.uri}"',
                     f'tracking.experiment="{experiment}"', f'tracking.offline_dir="{tmp_path / "unlogged"}"',
                     f'tracking.model_name_prefix="{tmp_path.name}"', f'promotion.registered_model="{tmp_path.name}-best"']  # fmt: skip
        with pytest.raises(TrackingLost) as caught:
            training_pipeline(None, overrides, scheduled=True)
    said, summary = str(caught.value), caught.value.summary
    assert said.startswith(f"the MLflow tracking server {server.uri} stopped answering during the run"), said
    assert f"--set 'tracking.experiment=\"{experiment}\"'" in said and f"--resume-tracking {summary['unlogged_dir']}`" in said
    assert [(m["name"], m["status"]) for m in summary["models"]] == [("pop", "ok")]


@pytest.mark.slow
def test_models_queued_when_the_store_dies_still_train_and_are_kept(prefect_harness, tmp_path, shared_mlflow_uri,
                                                                    monkeypatch):
    """The tracking server dies after the parent run opened and before the model tasks start (with
    max_workers models at a time, later models start after a server died mid-run). Each task
    rebuilt its tracker by asking the store for the experiment, so each such model FAILED
    ("cannot use experiment") and was lost, where a dead store must cost the tracking only. Now
    the task starts offline: every model trains, is kept on disk with the parent run's tags (its
    lineage and split: what compare and promote select on after --resume-tracking)."""
    from flows.pipeline import training_flow_for
    from recsys.tracking.offline import bundle_in_use, load_bundle

    with _server_dies_as_the_models_are_submitted(shared_mlflow_uri, tmp_path, monkeypatch) as server:
        cfg = tiny_config(tmp_path, server.uri, 'models=[{name="pop", kind="popularity"}]',
                          f'tracking.offline_dir="{tmp_path / "unlogged"}"')
        summary = training_flow_for(cfg)(cfg, True)
    assert [(m["name"], m["status"]) for m in summary["models"]] == [("pop", "ok")]
    assert summary["tracking_error"] and summary["models"][0]["unlogged"] == summary["unlogged_dir"]
    records = {r.key: r for r in load_bundle(Path(summary["unlogged_dir"]))}
    assert set(records) == {"parent", "pop"}
    tags, parent = records["pop"].tags, records["parent"].tags
    assert tags["recsys.lineage"] == parent["recsys.lineage"]
    assert tags["recsys.split_digest"] == parent["recsys.split_digest"] == summary["dataset"]["split_digest"]
    assert tags["mlflow.parentRunId"] == summary["mlflow_parent_run_id"] == records["parent"].run_id
    # the flow ended: its trackers (the flow's and the task's) write the bundle no more, a resume may log it
    assert bundle_in_use(Path(summary["unlogged_dir"])) is None


def test_the_flow_warns_once_of_a_cutoff_past_what_a_user_can_be_ranked(prefect_harness, prefect_console, tmp_path,
                                                                         mlflow_uri):
    """The Prefect flow reads its data through `prepare_run_inputs` as `recsys run --no-prefect` does,
    and logs the run's size warnings (recsys.sizes) once, as WARNING lines of the flow run."""
    from flows.pipeline import training_flow_for

    cfg = tiny_config(tmp_path, mlflow_uri, 'models=[{name="pop", kind="popularity"}]', "evaluation.ks=[10, 20, 100]")
    with prefect_console() as console:
        summary = training_flow_for(cfg)(cfg, False)
    assert [(m["name"], m["status"]) for m in summary["models"]] == [("pop", "ok")]
    said = [line for line in console.getvalue().splitlines() if "evaluation.ks 100 is at least the" in line]
    assert len(said) == 1 and "WARNING" in said[0], console.getvalue()[-3000:]
