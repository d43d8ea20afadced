"""MLflow's own tracking server app (Flask handlers over an SQLite store) served from a thread, so a
test can stop it at an exact point; its store is a copy of the session's migrated one, so no
migration runs. One per process at a time (MLflow's handlers keep their stores in globals)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


class ThreadServer:
    """MLflow's tracking server app on 127.0.0.1 in a thread; `kill()` closes its port for good."""

    def __init__(self, db: Path, artifacts: Path) -> None:
        from mlflow.server import app as server_app
        from mlflow.server import handlers
        from werkzeug.serving import make_server

        self.sqlite_uri = f"sqlite:///{db}"
        handlers._tracking_store = handlers._model_registry_store = None
        handlers._get_tracking_store(self.sqlite_uri, artifacts.as_uri())
        handlers._get_model_registry_store(self.sqlite_uri)
        self._server = make_server("127.0.0.1", 0, server_app, threaded=True)
        self.uri = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def kill(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=30)

    @classmethod
    def on_copy_of(cls, sqlite_uri: str, folder: Path) -> ThreadServer:
        """A server on a copy of the migrated store at `sqlite_uri`, made in `folder`."""
        db = folder / "server.db"
        with sqlite3.connect(sqlite_uri.split("sqlite:///", 1)[1]) as src, sqlite3.connect(db) as dst:
            src.backup(dst)  # a migrated store without migrating again
        return cls(db, folder / "artifacts")
