"""MLflow's server, with job execution on (`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true`), locks the
creation of its SQLite store's tables with an empty `db_init_lock-<hash>` in the system temp folder
and never removes it: one more file for every store `recsys ui` ever served (seen with a real
`recsys ui` on 2026-12-08; with the job runner off, recsys's default, none is made).
`recsys.tracking.store.remove_init_lock` removes it once the store's tables all exist."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys.tracking.store import init_lock_path, remove_init_lock, sqlite_path


@pytest.fixture
def private_temp(tmp_path, monkeypatch) -> Path:
    """The system temp folder, as MLflow's server finds it (`tempfile.gettempdir()`), private to the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_the_lock_is_where_mlflow_puts_it(shared_mlflow_uri, private_temp):
    import sqlalchemy
    from mlflow.store.db import utils
    from mlflow.utils import file_utils

    taken = []
    real = file_utils.ExclusiveFileLock

    class Seen(real):  # MLflow's own lock, its path noted
        def __init__(self, path: str) -> None:
            taken.append(path)
            super().__init__(path)

    file_utils.ExclusiveFileLock = Seen
    engine = sqlalchemy.create_engine(shared_mlflow_uri)
    try:
        utils._safe_initialize_tables(engine)
    finally:
        file_utils.ExclusiveFileLock = real
        engine.dispose()
    assert taken == [str(init_lock_path(shared_mlflow_uri))]
    assert init_lock_path(shared_mlflow_uri).parent == private_temp


def test_the_lock_of_a_complete_store_is_removed_and_any_other_kept(shared_mlflow_uri, tmp_path, private_temp):
    lock = init_lock_path(shared_mlflow_uri)
    lock.touch()
    assert remove_init_lock(shared_mlflow_uri) and not lock.exists()
    assert not remove_init_lock(shared_mlflow_uri)  # nothing there: nothing to do
    lock.write_text("not MLflow's")  # a file MLflow did not write (its lock is empty)
    assert not remove_init_lock(shared_mlflow_uri) and lock.exists()
    empty = tmp_path / "new.db"  # a store whose tables are not created yet: its creator may hold the lock
    sqlite3.connect(empty).close()
    uri = f"sqlite:///{empty}"
    init_lock_path(uri).touch()
    assert sqlite_path(uri) == empty
    assert not remove_init_lock(uri) and init_lock_path(uri).exists()


def test_recsys_ui_removes_the_lock_its_server_left(shared_mlflow_uri, private_temp, monkeypatch):
    from recsys.cli import app, tracking_cmds

    def server(command, env, log_prefix=None) -> int:  # the MLflow server: serves, leaves its lock, ends
        init_lock_path(shared_mlflow_uri).touch()
        return 0

    monkeypatch.setattr(tracking_cmds, "run_in_process_group", server)
    monkeypatch.setattr(tracking_cmds, "stop_orphaned_groups", lambda: [])
    result = CliRunner().invoke(app, ["ui", "--port", "5124", "--set", f"tracking.tracking_uri={shared_mlflow_uri}"])
    assert result.exit_code == 0, result.output
    assert list(private_temp.iterdir()) == []
