"""The tracking stores every tracking test runs against, a planted-cluster data set, and one logged
pipeline run per store that most tests read.

`tracking_uri` is parametrised: `sqlite` is the session's one migrated SQLite store (what a laptop
uses), `postgres` an `mlflow server` on PostgreSQL with the artifact proxy (what a team runs;
tests/conftest.py starts it in the background). Every test that takes `tracking_uri` or `logged`
runs once per store, with [sqlite] / [postgres] in its id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import EvaluationConfig, RunConfig, SplitConfig, TrackingConfig
from recsys.data.dataset import InteractionData
from recsys.data.split import Split
from recsys.data.splits import split_data

N_USERS, N_ITEMS, N_BLOCKS, PER_USER = 240, 96, 4, 14


STORES = ["sqlite", "postgres"]


@pytest.fixture(scope="session", params=STORES)
def tracking_uri(request: pytest.FixtureRequest) -> str:
    """The SQLite store shared with the flow tests, or the PostgreSQL-backed REST server."""
    if request.param == "sqlite":
        return request.getfixturevalue("shared_mlflow_uri")
    return request.getfixturevalue("mlflow_server")


@pytest.fixture(scope="session")
def tracking_ui(tracking_uri: str, request: pytest.FixtureRequest) -> str:
    """Base URL of the MLflow UI on `tracking_uri`'s runs: `recsys ui` (tests/conftest.py starts it on
    the SQLite store) or the tracking server's own UI. Asked for only on the SQLite store: a
    [postgres] test that named `recsys_ui` would start the UI, and the SQLite store under it, on the
    PostgreSQL worker too (tests/conftest.py starts the UI for `sqlite` tests that take this)."""
    from recsys.tracking.store import is_http

    return tracking_uri if is_http(tracking_uri) else request.getfixturevalue("recsys_ui")


def planted_interactions(seed: int = 0) -> InteractionData:
    """Users and items in N_BLOCKS blocks; every user interacts only inside its block, with a
    Zipf-like popularity inside the block, so a factor model must find the blocks to do well."""
    rng = np.random.default_rng(seed)
    user_blocks = np.arange(N_USERS) % N_BLOCKS
    item_blocks = np.arange(N_ITEMS) % N_BLOCKS
    per_block = N_ITEMS // N_BLOCKS
    weights = 1.0 / np.arange(1, per_block + 1)
    keys = rng.random((N_USERS, per_block)) ** (1.0 / weights)  # weighted sampling without replacement
    local = np.argsort(-keys, axis=1)[:, :PER_USER]
    items = local * N_BLOCKS + user_blocks[:, None]
    users = np.repeat(np.arange(N_USERS), PER_USER)
    frame = pl.DataFrame(
        {
            "user_idx": users.astype(np.int32),
            "item_idx": items.ravel().astype(np.int32),
            "timestamp": pl.Series([None] * users.size, dtype=pl.Datetime("us", "UTC")),
            "weight": np.ones(users.size, dtype=np.float32),
        }
    )
    return InteractionData(
        interactions=frame,
        user_ids=np.array([f"u{i}" for i in range(N_USERS)], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object),
        user_blocks=user_blocks,
        item_blocks=item_blocks,
        manifest={"fingerprint": f"planted-{seed}", "source": "synthetic", "name": "planted"},
    )


@pytest.fixture(scope="session")
def planted_data() -> InteractionData:
    return planted_interactions(0)


@pytest.fixture(scope="session")
def planted_split(planted_data: InteractionData) -> Split:
    return split_data(planted_data, SplitConfig(protocol="random", test_fraction=0.25, seed=0))


def run_config(uri: str, name: str = "tracking-test") -> RunConfig:
    from recsys.models.popularity import PopularityConfig
    from recsys.models.wals import WALSConfig

    return RunConfig(
        name=name,
        models=[
            PopularityConfig(name="popularity"),
            WALSConfig(name="wals", factors=8, iterations=4, threads=1, regularization=0.1, alpha=5.0),
        ],
        evaluation=EvaluationConfig(ks=[5, 10, 20], bootstrap_samples=200),
        tracking=TrackingConfig(tracking_uri=uri, experiment="tests"),
        split=SplitConfig(protocol="random", test_fraction=0.25, seed=0),
    )


@dataclass
class LoggedPipeline:
    uri: str
    config: RunConfig
    parent_id: str
    runs: dict[str, str]  # model name -> child run id
    models: dict
    results: dict
    versions: dict[str, str]


def log_pipeline(
    uri: str, data: InteractionData, split: Split, name: str = "tracking-test"
) -> LoggedPipeline:
    """What the lead's pipeline does, minus Prefect: parent run, one child per model, results."""
    from recsys.data.matrix import item_popularity
    from recsys.evaluation.evaluate import evaluate
    from recsys.models.base import build_model
    from recsys.tracking.runs import Tracker

    cfg = run_config(uri, name)
    tracker = Tracker(cfg.tracking, cfg)
    parent = tracker.start_parent(data=data, split=split)
    runs, models, results, versions = {}, {}, {}, {}
    popularity = item_popularity(split.train)
    for model_cfg in cfg.models:
        with tracker.model_run(parent, model_cfg) as run:
            model = build_model(model_cfg).fit(split.train, callback=run.callback)
            result = evaluate(model, split.test_set(), cfg.evaluation, item_popularity=popularity)
            logged = tracker.log_model_result(run, model, result, split, data, extra_metrics={"note": "x"})
        runs[model_cfg.name], models[model_cfg.name], results[model_cfg.name] = run.run_id, model, result
        versions[model_cfg.name] = logged.version
    tracker.end(parent)
    return LoggedPipeline(uri, cfg, parent, runs, models, results, versions)


@pytest.fixture(scope="session")
def logged(tracking_uri: str, planted_data: InteractionData, planted_split: Split) -> LoggedPipeline:
    return log_pipeline(tracking_uri, planted_data, planted_split)


@pytest.fixture()
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def log_one(
    logged: LoggedPipeline, model_cfg, split: Split, data: InteractionData, register: bool = False,
    source: str | None = None, evaluation: EvaluationConfig | None = None, item_ids: np.ndarray | None = None,
) -> str:
    """Train, evaluate and log one more model under a new parent run; returns the child run id.
    `source`: another data source, i.e. another lineage (same config name); `evaluation`: another
    evaluation config (e.g. sampled metrics); `item_ids`: fit with the raw item ids, as the pipeline
    does (popularity breaks ties by them)."""
    from recsys.data.matrix import item_popularity
    from recsys.evaluation.evaluate import evaluate
    from recsys.models.base import build_model
    from recsys.tracking.runs import Tracker

    cfg = logged.config.model_copy(deep=True)
    if source is not None:
        cfg.data.source = source
    cfg.tracking.register_models = register
    if evaluation is not None:
        cfg.evaluation = evaluation
    tracker = Tracker(cfg.tracking, cfg, check=False)
    parent = tracker.start_parent(f"extra-{model_cfg.name}", split=split, data=data)
    with tracker.model_run(parent, model_cfg) as run:
        model = build_model(model_cfg).fit(split.train, callback=run.callback, item_ids=item_ids)
        result = evaluate(
            model, split.test_set(), cfg.evaluation, item_popularity=item_popularity(split.train)
        )
        tracker.log_model_result(run, model, result, split, data)
    tracker.end(parent)
    return run.run_id


READY_TIMEOUT_S = 90


@pytest.fixture(scope="session")
def mlflow_models_serve(logged: LoggedPipeline, tmp_path_factory: pytest.TempPathFactory):
    """`mlflow models serve` (MLflow's own scoring server, `--env-manager local`) on
    models:/recsys-wals@champion at 127.0.0.1: its base URL. One per store and session: a start
    costs seconds (MLflow spawns uvicorn, which imports the model)."""
    import socket
    import subprocess
    import time

    from mlflow import MlflowClient
    from pinged import answers_ping

    from recsys.cli.tracking_cmds import serve_command, venv_env
    from recsys.tracking.registry import CHAMPION

    MlflowClient(logged.uri, registry_uri=logged.uri).set_registered_model_alias(
        "recsys-wals", CHAMPION, logged.versions["wals"]
    )
    # TMPDIR: MLflow downloads the served model into a temp folder it never removes
    scratch = tmp_path_factory.mktemp("mlflow-models-serve")
    log = scratch / "server.log"  # a file, not a pipe: a session's requests could fill a pipe nobody reads

    def start() -> tuple[subprocess.Popen, str]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with log.open("w") as out:
            server = subprocess.Popen(
                serve_command("models:/recsys-wals@champion", port),
                env={**venv_env(logged.uri), "TMPDIR": str(scratch)}, stdout=subprocess.DEVNULL, stderr=out,
            )  # fmt: skip
        return server, f"http://127.0.0.1:{port}"

    server, base = start()
    tries = 1
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not answers_ping(server, base, deadline, "mlflow models serve", pause_s=0.5):
            # The free port probed above can be taken by another process before uvicorn binds it
            # (other suites' servers on this machine): start again on a new one.
            if "address already in use" in log.read_text().lower() and tries < 3:
                server, base = start()
                tries += 1
                continue
            pytest.fail(f"mlflow models serve exited with {server.returncode}: {log.read_text()[-2000:]}")
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
