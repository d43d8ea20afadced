"""A new user's first day: commands run in the wrong order, with typos, or against the wrong store.

Each ends with the right behaviour or one line `error: ...` (exit 2) naming what is wrong and the
command or setting that fixes it; never a traceback, a "this is a bug" line, or a file changed that
was not the user's store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.tracking.store import sqlite_path

runner = CliRunner()

READING = [["promote"], ["compare", "--metric", "recall@20"], ["registry"], ["serve", "--port", "5999"]]


def one_error_line(result) -> str:
    """The output's one line, checked to be an `error:` line with exit code 2 and no traceback."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output and "bug" not in result.output, result.output
    return lines[0]


def tables(db: Path) -> set[str]:
    connection = sqlite3.connect(db)
    try:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        connection.close()


def copy_store(uri: str, to: Path) -> Path:
    """A private copy of the session's migrated store (sqlite3's backup: consistent while others write)."""
    source, target = sqlite3.connect(sqlite_path(uri)), sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return to


@pytest.mark.parametrize("command", READING, ids=lambda c: c[0])
def test_a_sqlite_database_of_another_application_is_refused_and_left_as_it_was(command, tmp_path: Path) -> None:
    """MLflow made its ~70 tables in any SQLite file it was pointed at, even for commands that only
    read runs: a mistyped tracking URI changed another application's database."""
    db = tmp_path / "app.db"
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE orders (id INTEGER)")
    connection.commit()
    connection.close()
    result = runner.invoke(app, [*command, "--set", f"tracking.tracking_uri=sqlite:///{db}"])
    line = one_error_line(result)
    assert "without MLflow's tables (it holds: orders)" in line and "tracking.tracking_uri" in line, line
    assert tables(db) == {"orders"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no .locks/ folder beside it either


def test_recsys_run_does_not_make_its_store_in_another_applications_database(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE orders (id INTEGER)")
    connection.commit()
    connection.close()
    result = runner.invoke(app, ["run", "--no-prefect", "--set", f"tracking.tracking_uri=sqlite:///{db}"])
    assert result.exit_code == 2, result.output
    assert "without MLflow's tables" in result.output and "Traceback" not in result.output
    assert tables(db) == {"orders"}


@pytest.mark.parametrize("command", READING[:2], ids=lambda c: c[0])
def test_a_file_that_is_not_a_database_is_one_line_saying_so(command, tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_text("not a database\n")
    line = one_error_line(runner.invoke(app, [*command, "--set", f"tracking.tracking_uri=sqlite:///{db}"]))
    assert "is not an MLflow store: not an SQLite database" in line and "tracking.tracking_uri" in line, line
    assert "sqlalche" not in line and "SELECT" not in line, line
    assert db.read_text() == "not a database\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_an_empty_file_holds_no_runs_for_a_command_that_reads_them(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.touch()
    line = one_error_line(runner.invoke(app, ["promote", "--set", f"tracking.tracking_uri=sqlite:///{db}"]))
    assert "the file is empty" in line and "run `recsys run` first" in line, line
    assert db.stat().st_size == 0


@pytest.mark.parametrize(
    ("revision", "says"),
    [
        ("0584bdc529eb", "made by an older MLflow"),  # one of MLflow's own earlier schema revisions
        ("ffffffffffff", "written by a newer MLflow"),  # a revision this MLflow does not know
    ],
)
def test_a_store_of_another_mlflow_version_names_the_command_that_fixes_it(
    revision, says, shared_mlflow_uri: str, tmp_path: Path
) -> None:
    """MLflow said "out-of-date ... run 'mlflow db upgrade <database_uri>'" both ways; for a store
    of a newer MLflow that advice fails, the fix is upgrading mlflow here."""
    db = copy_store(shared_mlflow_uri, tmp_path / "mlflow.db")
    connection = sqlite3.connect(db)
    connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    connection.commit()
    connection.close()
    uri = f"sqlite:///{db}"
    line = one_error_line(runner.invoke(app, ["registry", "--set", f"tracking.tracking_uri={uri}"]))
    assert says in line, line
    fix = f"`mlflow db upgrade {uri}`" if "older" in says else "`pip install -U mlflow"
    assert fix in line and "<database_uri>" not in line, line


def test_a_missing_experiment_names_the_experiments_the_store_holds_or_recsys_run(
    shared_mlflow_uri: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    db = copy_store(shared_mlflow_uri, tmp_path / "mlflow.db")
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    for found in client.search_experiments():
        if found.name != "Default":
            client.delete_experiment(found.experiment_id)
    store = ["--set", f"tracking.tracking_uri={uri}"]
    line = one_error_line(runner.invoke(app, ["promote", *store]))
    assert "no experiment named 'recsys-default'" in line and "run `recsys run` first" in line, line
    client.create_experiment("usage-errors")
    for command in (["promote"], ["compare", "--metric", "recall@20"]):
        line = one_error_line(runner.invoke(app, [*command, *store, "--set", "tracking.experiment=usage-erors"]))
        assert "--set tracking.experiment=NAME (experiments here: usage-errors)" in line, line


def test_serve_with_both_an_alias_and_a_version_is_a_usage_error_not_one_of_them_served(tmp_path: Path) -> None:
    """Both given, the version was served and the alias ignored without a word."""
    result = runner.invoke(app, ["serve", "--alias", "challenger", "--version", "1", "--set",
                                 f"tracking.tracking_uri=sqlite:///{tmp_path / 'none.db'}"])  # fmt: skip
    line = one_error_line(result)
    assert "--alias challenger and --version 1" in line and "not both" in line, line


SMALL = ["--set", "data.synthetic.n_users=120", "--set", "data.synthetic.n_items=60"]


def test_evaluate_refuses_a_saved_model_of_other_settings_or_kind_than_the_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`recsys train --set ...factors=8` then `recsys evaluate --set ...factors=16` scored the saved
    8-factor model under the config's name without a word (so did a config naming another kind)."""
    monkeypatch.chdir(tmp_path)
    trained = 'models=[{name="wals", kind="wals", factors=4, iterations=2}]'
    result = runner.invoke(app, ["train", *SMALL, "--set", trained])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["evaluate", *SMALL, "--set", trained]).exit_code == 0  # the same: scored
    other = 'models=[{name="wals", kind="wals", factors=6, iterations=2}]'
    line = one_error_line_last(runner.invoke(app, ["evaluate", *SMALL, "--set", other]))
    assert "data/models/wals: trained with factors=4 (this config: 6)" in line and "--train" in line, line
    line = one_error_line_last(runner.invoke(app, ["evaluate", *SMALL, "--set", 'models=[{name="wals", kind="ease"}]']))
    assert "holds a wals model, the config's 'wals' is a ease" in line, line


def one_error_line_last(result) -> str:
    """The last line, an `error:` line (after the data line evaluate prints first), exit 2, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "bug" not in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error:"), result.output
    return last


def test_promote_and_compare_after_a_run_whose_every_model_failed_say_so_and_the_way_on(
    shared_mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """promote said only "pipeline run X has no finished model runs", compare "run `recsys run`
    first", to a user who had just run it and seen every model fail."""
    monkeypatch.chdir(tmp_path)
    db = copy_store(shared_mlflow_uri, tmp_path / "mlflow.db")
    store = ["--set", f"tracking.tracking_uri=sqlite:///{db}", "--set", "tracking.experiment=all-failed", *SMALL]
    diverges = 'models=[{name="w", kind="wals", factors=4, iterations=2, alpha=1e38, regularization=1e-30}]'
    result = runner.invoke(app, ["run", "--no-prefect", *store, "--set", diverges])
    assert result.exit_code == 1 and "1 model(s) failed" in result.output, result.output
    line = one_error_line(runner.invoke(app, ["promote", *store]))
    assert "has no finished model runs (1 FAILED): its models failed or were skipped" in line, line
    assert "--run-id" in line and "`recsys run` again" in line, line
    result = runner.invoke(app, ["compare", *store])
    assert result.exit_code == 0 and "run `recsys run` first" not in result.output, result.output
    assert "its 1 pipeline run(s) have none (their models failed or were skipped" in result.output, result.output


def test_evaluate_before_any_train_is_refused_before_the_data_is_prepared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It generated and split the default config's 2,000-user log (and wrote it under data/) only to
    say "data/models/popularity: no saved model" after it."""
    monkeypatch.chdir(tmp_path)
    line = one_error_line(runner.invoke(app, ["evaluate"]))
    assert "--models data/models: no saved model of this config (popularity, wals" in line, line
    assert "run `recsys train` first" in line and "--train" in line, line
    line = one_error_line(runner.invoke(app, ["evaluate", "--models", "elsewhere"]))
    assert "run `recsys train --models elsewhere` first" in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        # two slashes: read as a host, the store looked for was the working directory itself
        ("sqlite://mlflow.db", "path comes after three slashes: --set tracking.tracking_uri=sqlite:///mlflow.db"),
        # a database file without its scheme: was "is a folder ... use sqlite:///.../mlflow.db/mlflow.db"
        ("mlflow.db", "is a path without a scheme: name the SQLite store as --set tracking.tracking_uri=sqlite:///"),
        ("htp://localhost:5000", "unsupported scheme 'htp'; use sqlite:///PATH/mlflow.db, http(s)://HOST:PORT"),
    ],
)
def test_a_mistyped_tracking_uri_names_the_form_that_works(uri, says, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.db").touch()
    line = one_error_line(runner.invoke(app, ["registry", "--set", f"tracking.tracking_uri={uri}"]))
    assert says in line, line
    if uri == "mlflow.db":
        assert line.endswith(f"sqlite:///{tmp_path.resolve() / 'mlflow.db'} (or MLFLOW_TRACKING_URI)"), line
