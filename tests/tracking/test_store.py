"""Store resolution, fail-fast checks, metric naming and the no-op tracker."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from recsys.config import RunConfig, TrackingConfig
from recsys.errors import TrackingError
from recsys.models.popularity import PopularityConfig
from recsys.tracking.runs import NullTracker, make_tracker, param_dict
from recsys.tracking.store import (
    DEFAULT_TRACKING_URI,
    check_tracking,
    default_artifact_location,
    metric_key,
    metric_name,
    resolve_tracking_uri,
    sqlite_path,
)


def test_metric_names_map_at_sign_and_back():
    assert metric_key("recall@20") == "recall_at_20"
    assert metric_key("recall@20_ci_low") == "recall_at_20_ci_low"
    assert metric_key("loss") == "loss"
    for name in ["recall@20", "ndcg@100", "recall_raw@5", "recall@20_ci_high", "loss", "fit_seconds"]:
        assert metric_name(metric_key(name)) == name


def test_uri_precedence_config_then_env_then_default(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(TrackingConfig()) == DEFAULT_TRACKING_URI == "sqlite:///mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_tracking_uri(TrackingConfig()) == "http://tracking.example:5000"
    assert resolve_tracking_uri(TrackingConfig(tracking_uri="sqlite:///x.db")) == "sqlite:///x.db"


def test_local_artifacts_live_beside_the_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        default_artifact_location("sqlite:///mlflow/mlflow.db")
        == (tmp_path / "mlflow" / "artifacts").as_uri()
    )
    assert default_artifact_location("http://host:5000") is None


def test_an_sqlite_uri_filename_names_the_database_it_opens(tmp_path, monkeypatch):
    """`sqlite:///file:/abs/mlflow.db?mode=ro&uri=true` (SQLite's URI filename: a read-only store)
    is the database at /abs/mlflow.db: its artifacts and registry locks go beside it, not under a
    folder named `file:` in the working directory."""
    from recsys.tracking.locks import lock_path

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    db = tmp_path / "store dir" / "mlflow.db"
    for uri in (f"sqlite:///file:{db}?mode=ro&uri=true", f"sqlite:///{db.parent.as_uri()}/mlflow.db?uri=true"):
        assert sqlite_path(uri) == db
        assert default_artifact_location(uri) == (db.parent / "artifacts").as_uri()
        assert lock_path(uri, "m").parent == db.parent / ".locks"
    assert sqlite_path("sqlite:///mlflow/mlflow.db") == Path("mlflow/mlflow.db")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_unreachable_server_fails_fast_before_training():
    uri = f"http://127.0.0.1:{_closed_port()}"
    cfg = RunConfig(tracking=TrackingConfig(tracking_uri=uri), models=[PopularityConfig(name="pop")])
    start = time.monotonic()
    with pytest.raises(TrackingError, match="not reachable"):
        make_tracker(cfg)  # what a pipeline calls before training anything
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    ("command", "hint"),
    [(["run", "--no-prefect"], "or turn tracking off with --no-tracking"),
     (["serve"], "point MLFLOW_TRACKING_URI at one that runs"),
     (["registry"], "point MLFLOW_TRACKING_URI at one that runs")],
)
def test_an_unreachable_server_hints_at_an_option_the_command_has(command, hint, monkeypatch):
    """`recsys serve` (registry, compare, promote) against a tracking server that is down said
    "start it or pass --no-tracking", an option these commands do not have (and tracking off is no
    way out for a command that reads the store); `recsys run` keeps its --no-tracking hint."""
    from typer.testing import CliRunner

    from recsys.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    result = CliRunner().invoke(app, command)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    said = " ".join(result.output.split())
    assert "not reachable" in said and hint in said, result.output
    assert ("--no-tracking" in said) == (command[0] == "run"), result.output


def test_unsupported_scheme_is_a_tracking_error():
    with pytest.raises(TrackingError, match="unsupported scheme"):
        check_tracking("ftp://example/store")


@pytest.mark.parametrize("uri", ["mlruns", "file:./mlruns"])
def test_a_folder_tracking_uri_is_refused_with_the_sqlite_uri_to_use(uri, tmp_path, monkeypatch):
    """A folder (MLflow's file store) reached MLflow, which raised; recsys run and compare said
    'unexpected MlflowException ... this is a bug', exit 1, after any training was done."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(TrackingError, match="is a folder: MLflow's file store") as caught:
        check_tracking(uri)
    assert f"--set tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}" in str(caught.value)
    assert not (tmp_path / "mlruns").exists()


def test_disabled_tracking_is_a_no_op_with_the_same_interface():
    cfg = RunConfig(tracking=TrackingConfig(enabled=False, tracking_uri="http://127.0.0.1:9"))
    tracker = make_tracker(cfg)
    assert isinstance(tracker, NullTracker) and not tracker.enabled
    assert isinstance(
        make_tracker(RunConfig(tracking=TrackingConfig(tracking_uri="http://127.0.0.1:9")), enabled=False),
        NullTracker,
    )
    parent = tracker.start_parent("x", {"a": "b"})
    run = tracker.start_child(parent, PopularityConfig(name="pop"))
    assert run.callback(0, {"loss": 1.0}) is None
    with tracker.model_run(parent, PopularityConfig(name="pop")) as inner:
        inner.callback(1, {"loss": 0.5})
    tracker.end(run, "FAILED", error="boom")
    assert tracker.log_model_result(run, None, None, None).model_uri == ""


def test_params_are_strings_with_long_values_cut_and_none_dropped():
    params = param_dict({"a": 1, "b": None, "c": [1, 2], "d": "x" * 2000})
    assert params["a"] == "1" and params["c"] == "[1, 2]" and "b" not in params
    assert len(params["d"]) == 500 and params["d"].endswith("...")


# Two processes opening one new SQLite store at once (the store-open lock):
# tests/tracking/test_concurrency.py::test_two_processes_create_and_log_to_one_new_store.


def test_a_server_uri_with_credentials_is_probed_with_them_and_never_printed():
    """`http://user:password@host` is how MLflow's client (requests) sends basic auth; the probe
    (urllib) took `user:password@127.0.0.1` for the host, called the server unreachable and printed
    the password in that line."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    seen: list[str | None] = []

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_tracking(f"http://alice:s3cret@127.0.0.1:{server.server_port}")  # reachable, credentials sent
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [expected]
    with pytest.raises(TrackingError, match="not reachable") as refused:
        check_tracking(f"http://alice:s3cret@127.0.0.1:{_closed_port()}")
    assert "s3cret" not in str(refused.value) and "alice:***@127.0.0.1" in str(refused.value)


def test_a_configured_artifact_location_holds_a_new_experiments_artifacts_from_any_directory(tmp_path, monkeypatch):
    """`tracking.artifact_location` (here by `--set`, relative): the experiment is made with it as
    an absolute location, so a run started later in another directory logs its artifacts there,
    not in ./mlruns of the first run's directory (MLflow's default for a store it opens directly)."""
    from mlflow import MlflowClient

    from recsys.config import load_config
    from recsys.tracking.runs import Tracker

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    sets = [f'tracking.tracking_uri="{uri}"', 'tracking.experiment="placed"', 'tracking.artifact_location="shared/art"']
    monkeypatch.chdir(first)
    cfg = load_config(None, sets)
    experiment_id = Tracker(cfg.tracking, cfg).experiment_id
    assert MlflowClient(uri).get_experiment(experiment_id).artifact_location == (first / "shared" / "art").as_uri()
    monkeypatch.chdir(second)
    tracker = Tracker(cfg.tracking, cfg)
    assert tracker.experiment_id == experiment_id
    run = tracker.client.create_run(experiment_id)
    tracker.client.log_text(run.info.run_id, "logged", "note.txt")
    assert (first / "shared" / "art" / run.info.run_id / "artifacts" / "note.txt").read_text() == "logged"
    assert not (second / "mlruns").exists() and not (second / "shared").exists()


def test_a_new_experiment_on_a_database_server_needs_an_artifact_location():
    """A postgresql:// (mysql://, mssql://) store has no directory beside it that every machine
    could read; without `tracking.artifact_location` MLflow fixed the experiment's artifacts in
    ./mlruns of the first run's directory. A new experiment there is refused, naming the setting;
    one given a location gets it (absolute)."""
    from recsys.tracking.store import artifact_location, is_database_server

    assert is_database_server("postgresql+psycopg://u:p@db/mlflow") and is_database_server("mysql://db/m")
    assert not is_database_server("sqlite:///mlflow/mlflow.db") and not is_database_server("http://host:5000")
    assert artifact_location("postgresql://db/mlflow") is None
    assert artifact_location("postgresql://db/mlflow", "s3://bucket/mlflow") == "s3://bucket/mlflow"
    assert artifact_location("postgresql://db/mlflow", "/srv/mlflow/art") == "file:///srv/mlflow/art"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("MlflowException: API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed with exception "
         "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: /api/2.0/mlflow/runs/log-batch "
         "(Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=5000): Failed to establish a new "
         "connection: [Errno 111] Connection refused\"))", "connection refused, /api/2.0/mlflow/runs/log-batch"),
        ("MlflowException: API request to http://h:5000/api/2.0/mlflow/runs/get?run_uuid=abc failed with exception "
         "HTTPConnectionPool(host='h', port=5000): Max retries exceeded with url: /api/2.0/mlflow/runs/get?run_uuid=abc "
         "(Caused by ProtocolError('Connection aborted.', RemoteDisconnected('Remote end closed connection')))",
         "connection closed by the server, /api/2.0/mlflow/runs/get"),
        ("MlflowException: API request to http://h:5000/api/2.0/mlflow/runs/update failed with exception "
         "HTTPConnectionPool(host='h', port=5000): Read timed out. (read timeout=30)",
         "no answer within MLFLOW_HTTP_REQUEST_TIMEOUT, /api/2.0/mlflow/runs/update"),
        ("MlflowException: Run 'abc' not found", None),
        ("OperationalError: database is locked", None),
    ],
)  # fmt: skip
def test_a_lost_connection_is_said_in_a_few_words_naming_the_call(text, said):
    """The run's error line quoted MLflow's whole urllib3 chain, cut at 300 characters mid-word."""
    from recsys.tracking.store import is_lost_connection, lost_connection

    assert lost_connection(text) == said
    assert is_lost_connection(said or text) == (said is not None)
