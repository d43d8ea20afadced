"""Where runs go: resolve the tracking URI, fail fast when it is unusable, name metrics safely.

The local default is an SQLite store under `mlflow/` beside the working directory, with artifacts in
`mlflow/artifacts`, so one command tracks everything on a laptop; `MLFLOW_TRACKING_URI` or
`tracking.tracking_uri` points at a real server instead. MLflow's HTTP client retries for minutes by
default, which would let a pipeline train for an hour and then lose every result; `check_tracking`
probes the store with a short timeout before any training starts and raises `TrackingError`.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from filelock import FileLock

from recsys.errors import TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from recsys.config import TrackingConfig

DEFAULT_TRACKING_URI = "sqlite:///mlflow/mlflow.db"
PROBE_TIMEOUT_SECONDS = 3.0

# MLflow metric names allow [A-Za-z0-9_\-. :/] only, so "recall@20" is logged as "recall_at_20".
_AT = "@"
_AT_KEY = "_at_"
_KEY_AT = re.compile(r"^(?P<metric>.+?)_at_(?P<k>\d+)(?P<suffix>(_ci_low|_ci_high)?)$")


def metric_key(name: str) -> str:
    """MLflow-safe metric key: "recall@20" -> "recall_at_20"; names without '@' pass unchanged."""
    return name.replace(_AT, _AT_KEY)


def metric_name(key: str) -> str:
    """Inverse of `metric_key` for keys of the form "<metric>_at_<k>" (CI suffixes kept)."""
    match = _KEY_AT.match(key)
    if match is None:
        return key
    return f"{match['metric']}{_AT}{match['k']}{match['suffix']}"


def resolve_tracking_uri(cfg: TrackingConfig | None = None) -> str:
    """Config wins over the environment, the environment over the local SQLite default."""
    if cfg is not None and cfg.tracking_uri:
        return cfg.tracking_uri
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def is_in_memory(uri: str) -> bool:
    """`sqlite://`, `sqlite:///:memory:` and `...?mode=memory`: a store that dies with the process."""
    if not is_sqlite(uri):
        return False
    path = uri.split("://", 1)[1] if "://" in uri else ""
    return path in ("", "/") or ":memory:" in path or "mode=memory" in path


def sqlite_path(uri: str) -> Path:
    """The database file of an `sqlite:///relative` or `sqlite:////absolute` URI (query stripped),
    also in SQLite's URI-filename form `sqlite:///file:/abs/mlflow.db?mode=ro&uri=true`: read as a
    plain path, `file:/abs` would be a folder named `file:` in the working directory, where the
    registry locks and the artifact folder would then go."""
    path = uri.split(":///", 1)[1] if ":///" in uri else ""
    path = path.split("?", 1)[0]
    if path.startswith("file:"):
        path = unquote(urlparse(path).path)
    return Path(path)


def default_artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store live in `artifacts/` beside the database file; a server
    decides its own artifact root (None).

    Why beside the file: MLflow's own default for a store it opens directly is `./mlruns` of the
    working directory when the experiment is made, fixed in the experiment from then on, so the
    artifacts of a store went wherever its first run happened to start (a cron job's home, a
    notebook's folder) and `recsys ui`, serving from the store's directory, could not find them.
    Beside the file they travel with it (copy `mlflow/` and both come), from any directory."""
    if is_sqlite(uri):
        return (sqlite_path(uri).resolve().parent / "artifacts").as_uri()
    return None


DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")


def is_database_server(uri: str) -> bool:
    """A store MLflow opens directly in a database server (`postgresql+psycopg://...` too)."""
    return urlparse(uri).scheme.split("+", 1)[0] in DATABASE_SCHEMES


def artifact_location(uri: str, configured: str | None = None) -> str | None:
    """Where a new experiment of the store `uri` keeps its artifacts: `tracking.artifact_location`
    (a folder made an absolute file URI, so every later run finds it from any directory; a URI as
    written), else `default_artifact_location`. A database server has no directory "beside" it
    that every machine logging to it could read, so there `configured` is required
    (`ensure_experiment` refuses without it)."""
    if configured:
        scheme = urlparse(configured).scheme
        if len(scheme) > 1:  # s3://, gs://, file:///..., mlflow-artifacts:/ (not a drive letter C:)
            return configured
        return Path(configured).expanduser().resolve().as_uri()
    return default_artifact_location(uri)


LOST_CONNECTION = (
    (("connection refused", "failed to establish a new connection", "newconnectionerror"), "connection refused"),
    (("remote end closed", "remotedisconnected", "connection reset", "connection aborted", "broken pipe"),
     "connection closed by the server"),
    (("read timed out", "readtimeouterror", "connecttimeouterror", "connect timeout"),
     "no answer within MLFLOW_HTTP_REQUEST_TIMEOUT"),
)  # fmt: skip
"""Markers of a store call that got no answer at all, and how the error line says it."""


def lost_connection(text: str) -> str | None:
    """`connection refused, /api/2.0/mlflow/runs/log-batch` for the error of a call to a server that
    no longer answers (killed, stopped, frozen); None for any other error.

    Why: MLflow's text for it is its whole urllib3 chain ("API request to http://HOST/api/... failed
    with exception HTTPConnectionPool(host=..., port=...): Max retries exceeded with url: ...
    (Caused by NewConnectionError(...))"), cut at 300 characters mid-word in the run's one error
    line, where what a user needs is that the server went away and which call found it."""
    low = text.lower()
    cause = next((said for markers, said in LOST_CONNECTION if any(m in low for m in markers)), None)
    if cause is None:
        return None
    call = re.search(r"API request to \S*?(/api/[^\s?]+)", text)
    return f"{cause}, {call.group(1)}" if call else cause


def is_lost_connection(failure: str) -> bool:
    """Whether a tracker's `failure` text is `lost_connection`'s."""
    return failure.startswith(tuple(said for _, said in LOST_CONNECTION))


HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
"""What `limit_http_retries` sets where the user did not: a server that stops answering with its
port open is given up on after about timeout x (retries + 1) seconds per call (the chaos
benchmark's server-freezes probe measures it)."""


def limit_http_retries() -> None:
    """Make MLflow's HTTP client give up in seconds rather than minutes (respects user settings)."""
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)


def check_tracking(uri: str, timeout: float = PROBE_TIMEOUT_SECONDS, *, create: bool = True) -> None:
    """Raise TrackingError (quickly) when the store at `uri` cannot be used; create a local one.

    HTTP servers are probed with GET /health (falling back to the experiments API for servers
    behind a proxy that hides /health); SQLite stores get their directory created and are opened.
    `create=False` (commands that read runs: compare, promote, serve): a SQLite file that does not
    exist is an error naming where it was looked for, not a new empty store made in passing.
    """
    if is_http(uri):
        _probe_http(uri, timeout, reading=not create)
        limit_http_retries()
        return
    if is_sqlite(uri):
        if is_in_memory(uri):
            raise TrackingError(
                f"tracking URI {uri!r} is an in-memory SQLite store: every run, metric and model would "
                "vanish when the process exits; use sqlite:///path/to/mlflow.db or --no-tracking"
            )
        if ":///" not in uri:  # sqlite://mlflow.db: read as a host, the store was the working directory
            rest = uri.split(":", 1)[1].lstrip("/")
            raise TrackingError(
                f"tracking URI {uri!r}: a SQLite store's path comes after three slashes: "
                f"--set tracking.tracking_uri=sqlite:///{rest} (relative to the working directory; "
                f"sqlite:////{rest} for /{rest})"
            )
        db = sqlite_path(uri)
        if not str(db):
            raise TrackingError(f"tracking URI {uri!r}: expected sqlite:///path/to/mlflow.db")
        if not create and not db.is_file():
            raise TrackingError(
                f"no MLflow store at {db.resolve()} ({uri}): nothing was tracked there; run `recsys run` "
                "first, or point --set tracking.tracking_uri=sqlite:///PATH/mlflow.db (or MLFLOW_TRACKING_URI) "
                "at the store your runs used (relative paths are read from the working directory)"
            )
        try:
            # first without the lock: a file that is clearly no store gets no .locks/ folder beside it
            _refuse_foreign_sqlite(db, uri, create=create, settled=False)
            db.parent.mkdir(parents=True, exist_ok=True)
            with store_open_lock(db):
                _refuse_foreign_sqlite(db, uri, create=create)
                client(uri).search_experiments(max_results=1)
        except TrackingError:
            raise
        except Exception as exc:  # sqlalchemy/mlflow errors: the store itself is broken or locked
            raise TrackingError(_schema_hint(uri, exc) or f"tracking store {uri}: cannot open ({type(exc).__name__}: {exc})") from None
        return
    scheme = urlparse(uri).scheme
    allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("1", "true")
    if scheme in ("", "file") and not allowed:  # MLflow 3 raises on its file store unless opted in
        folder = uri.removeprefix("file://").removeprefix("file:") or "."
        if Path(folder).is_file() or Path(folder).suffix.lower() in (".db", ".sqlite", ".sqlite3"):
            # a database file named without its scheme: "is a folder ... use sqlite:///.../mlflow.db/mlflow.db"
            # sent the user to a file inside their database file
            raise TrackingError(
                f"tracking URI {uri!r} is a path without a scheme: name the SQLite store as "
                f"--set tracking.tracking_uri=sqlite:///{Path(folder).resolve()} (or MLFLOW_TRACKING_URI)"
            )
        raise TrackingError(
            f"tracking URI {uri!r} is a folder: MLflow's file store, which this MLflow refuses (maintenance "
            f"mode); use a SQLite store: --set tracking.tracking_uri=sqlite:///{Path(folder).resolve() / 'mlflow.db'} "
            "(migrate runs already there with `mlflow migrate-filestore`, or set MLFLOW_ALLOW_FILE_STORE=true)"
        )
    base = scheme.split("+", 1)[0]  # postgresql+psycopg://, mysql+pymysql://: SQLAlchemy's driver forms
    if base not in ("", "file", "databricks", "postgresql", "mysql", "mssql"):
        raise TrackingError(
            f"tracking URI {uri!r}: unsupported scheme {scheme!r}; use sqlite:///PATH/mlflow.db, http(s)://HOST:PORT "
            "(an MLflow server) or postgresql:// / mysql:// / mssql:// (a database)"
        )
    if base in ("postgresql", "mysql", "mssql"):
        _open_database(uri)


POINT_AT_STORE = (
    "point --set tracking.tracking_uri=sqlite:///PATH/mlflow.db (or MLFLOW_TRACKING_URI) at the store your runs used"
)


MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs", "metrics", "params", "tags", "registered_models"})
"""Tables only an MLflow store holds; a database with none of them is no store, even half made."""


def _refuse_foreign_sqlite(db: Path, uri: str, *, create: bool, settled: bool = True) -> None:
    """Raise TrackingError when the file at `db` is not an MLflow store, before MLflow opens it.

    Why: MLflow creates its ~70 tables in any SQLite database it is pointed at, so a mistyped
    tracking URI naming another application's database had MLflow's tables added to it, even by
    commands that only read runs (`recsys promote`, `compare`, `registry`, `serve`); a file that is
    not a database came back as SQLAlchemy's multi-line error with its SQL. Read-only here (sqlite3
    `mode=ro`): nothing is written to a file that turns out not to be a store. An empty file (or no
    file) is a new store for `recsys run`; for a command that reads runs it holds none. `settled=False`
    (without the store's open lock, which another process may hold while it creates the store): only
    what no store being made looks like, a file that is no database or holds none of MLFLOW_TABLES."""
    import sqlite3

    if not db.is_file():
        return
    try:
        connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise TrackingError(
            f"{db.resolve()} ({uri}) is not an MLflow store: not an SQLite database ({exc}); {POINT_AT_STORE}"
        ) from None
    if not settled:
        if tables and not tables & MLFLOW_TABLES:
            _refuse_tables(db, uri, tables)
        return
    if not tables:
        if not create:
            raise TrackingError(
                f"no MLflow store at {db.resolve()} ({uri}): the file is empty, nothing was tracked there; "
                f"run `recsys run` first, or {POINT_AT_STORE}"
            )
        return
    if "alembic_version" not in tables or "experiments" not in tables:
        _refuse_tables(db, uri, tables)


def _refuse_tables(db: Path, uri: str, tables: set[str]) -> None:
    shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise TrackingError(
        f"{db.resolve()} ({uri}) is an SQLite database without MLflow's tables (it holds: {shown}), not an "
        f"MLflow store, and is left as it was; {POINT_AT_STORE}"
    )


def _schema_hint(uri: str, exc: Exception) -> str | None:
    """The error line for a store whose schema this MLflow does not expect, with the command that
    fixes it; None for any other error.

    Why: MLflow says "out-of-date database schema ... run 'mlflow db upgrade <database_uri>'" for
    both directions, and for a store written by a NEWER MLflow that advice fails (this MLflow does
    not know the revision); the fix there is upgrading mlflow in this environment."""
    found = re.search(r"found version (\w+), but expected (\w+)", str(exc))
    if found is None:
        return None
    import mlflow

    revision = found.group(1)
    if _known_revision(revision):
        return (
            f"tracking store {uri} was made by an older MLflow (schema {revision}; MLflow {mlflow.__version__} "
            f"expects {found.group(2)}): back the file up, then run `mlflow db upgrade {uri}`"
        )
    return (
        f"tracking store {uri} was written by a newer MLflow than this environment's {mlflow.__version__} "
        f"(schema {revision} is unknown to it): upgrade it (`pip install -U mlflow`, the version that wrote "
        f"the store), or {POINT_AT_STORE}"
    )


def _known_revision(revision: str) -> bool:
    """Whether this MLflow's migration scripts include `revision`."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    try:
        return ScriptDirectory.from_config(_get_alembic_config(db_url="")).get_revision(revision) is not None
    except Exception:  # alembic: an unknown revision id
        return False


DRIVER_HINTS = {
    "postgresql": "pip install 'recsys[postgres]' (psycopg)",
    "mysql": "pip install pymysql and use mysql+pymysql://",
    "mssql": "pip install pyodbc",
}


def redact(uri: str) -> str:
    """`uri` with its password replaced by ***, fit for an error line."""
    parsed = urlparse(uri)
    if not parsed.password:
        return uri
    return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)).geturl()


def _open_database(uri: str) -> None:
    """Open a database-backed store once, so an unreachable database or a missing driver is a
    TrackingError naming the store (without its password) before any training; it reached the
    user as 'unexpected OperationalError / ModuleNotFoundError ... this is a bug'."""
    import sqlalchemy

    from recsys.errors import first_line

    base = urlparse(uri).scheme.split("+", 1)[0]
    try:  # SQLAlchemy directly: MLflow's own engine retries a refused connection for ~100 s
        engine = sqlalchemy.create_engine(uri)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except ModuleNotFoundError as exc:
        raise TrackingError(
            f"tracking store {redact(uri)}: its database driver {exc.name!r} is not installed: {DRIVER_HINTS[base]}"
        ) from None
    except Exception as exc:  # sqlalchemy / driver errors: unreachable, refused, bad credentials
        raise TrackingError(
            f"tracking store {redact(uri)}: cannot open ({type(exc).__name__}: {first_line(exc)}); "
            "check that the database is running and the URI (tracking.tracking_uri or MLFLOW_TRACKING_URI)"
        ) from None


def store_open_lock(db: Path) -> FileLock:
    """The lock held while a process opens the SQLite store `db`: opening a new (or older) store
    creates (or migrates) its tables, and two `recsys run` starting together on a fresh store both
    ran the migrations; the loser failed with 'duplicate column name: step'. Beside the store, in
    the `.locks/` directory the registry locks use (recsys.tracking.locks)."""
    locks = db.resolve().parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{db.name}.open.lock"))


def init_lock_path(uri: str) -> Path:
    """Where an MLflow server locks the creation of the tables of database store `uri`
    (`mlflow.store.db.utils._safe_initialize_tables`, run by its job store when job execution is
    on): an empty `db_init_lock-<md5 of the engine URL>` in the system temp folder, which MLflow
    never removes: one per store ever served."""
    import hashlib
    import tempfile

    from sqlalchemy.engine import make_url

    digest = hashlib.md5(str(make_url(uri)).encode("utf-8"), usedforsecurity=False).hexdigest()
    return Path(tempfile.gettempdir()) / f"db_init_lock-{digest}"


def remove_init_lock(uri: str) -> bool:
    """Remove the empty `init_lock_path` of SQLite store `uri` once the store's tables all exist;
    True when it was removed. The one place recsys deals with these files (`recsys ui` calls it when
    its MLflow server ends; its own opens lock beside the store: `store_open_lock`).

    Why it cannot be put beside the store: MLflow builds the path from `tempfile.gettempdir()` of the
    server's process, and a TMPDIR of the store's folder for the server would move all its temporary
    files there too. Why removing it is safe: the lock guards only the creation of missing tables;
    with every table there, a holder finds them and does nothing (a process still holding the removed
    file keeps its lock, a new one locks a new file, and both find the tables). A store still
    missing tables (being created now, or older than this MLflow) keeps its lock, as does a file
    that is not empty (not MLflow's) and anything where the check cannot be made."""
    if not is_sqlite(uri) or is_in_memory(uri):
        return False
    path = init_lock_path(uri)
    try:
        if not path.is_file() or path.stat().st_size or not sqlite_path(uri).is_file():
            return False
        import sqlalchemy
        from mlflow.store.db.utils import _all_tables_exist

        engine = sqlalchemy.create_engine(uri)
        try:
            complete = _all_tables_exist(engine)
        finally:
            engine.dispose()
        if complete:
            path.unlink(missing_ok=True)
        return complete
    except Exception:  # never a reason for the command to fail: the file is left as MLflow left it
        return False


def _probe_http(uri: str, timeout: float, *, reading: bool = False) -> None:
    """Raise TrackingError when the server at `uri` does not answer. `reading`: for a command that
    reads the store (serve, registry, compare, promote), where turning tracking off is no way out."""
    base, auth = _without_credentials(uri.rstrip("/"))
    last: Exception | None = None
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        request = urllib.request.Request(base + path, headers=auth)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - user's URI
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 404:
                return  # reachable (auth errors surface later with MLflow's own message)
            last = exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            last = exc
            break  # connection refused / timed out: the second path cannot do better
    reason = getattr(last, "reason", last)
    message = (
        f"tracking server {redact(uri)} is not reachable ({reason}): start it, or point MLFLOW_TRACKING_URI at one "
        "that runs"
    )
    if reading:
        raise TrackingError(message)
    raise TrackingError(f"{message}, or turn tracking off with {{option}}", setting="tracking.enabled", value="false")


def _without_credentials(url: str) -> tuple[str, dict[str, str]]:
    """`url` without a `user:password@` part, and that part as a basic-auth header. Why: MLflow's
    client (requests) sends such credentials as basic auth, but urllib takes `user:password@host`
    for the host name, so the probe called a server MLflow reaches unreachable ("Name or service not
    known") and printed the password in that error."""
    parsed = urlparse(url)
    if parsed.username is None:
        return url, {}
    import base64
    from urllib.parse import unquote

    pair = f"{unquote(parsed.username)}:{unquote(parsed.password or '')}".encode()
    netloc = parsed.netloc.rsplit("@", 1)[1]
    return parsed._replace(netloc=netloc).geturl(), {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def no_artifact_progress_bars() -> None:
    """No MLflow artifact-download bars between recsys's own lines (a user's setting wins): MLflow
    draws one per file when a run's artifacts are read back (per-user metrics, the split, a
    champion's model for promotion) and when a pyfunc's input example is checked at logging."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def client(uri: str) -> MlflowClient:
    """An MlflowClient bound to `uri` (explicit, so concurrent threads never share fluent state)."""
    from mlflow import MlflowClient

    no_artifact_progress_bars()
    if is_http(uri):
        limit_http_retries()
        # MLflow prints "View run ... at <url>" for every run it ends on a server; recsys prints
        # one link to the runs page instead (recsys.tracking.ui.runs_page_url).
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(mlflow_client: MlflowClient, name: str, uri: str, location: str | None = None) -> str:
    """Id of experiment `name`, created when missing with its artifact location (`location`:
    `tracking.artifact_location`, see `artifact_location`). Safe when two processes race to create
    it (the loser reads the winner's). A database server's store without `location` is refused
    for a new experiment (TrackingError): MLflow would fix the experiment's artifacts in ./mlruns
    of this process's working directory, unreadable from any other directory or machine."""
    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    where = artifact_location(uri, location)
    if where is None and is_database_server(uri):
        raise TrackingError(
            f"tracking store {redact(uri)}: a new experiment {name!r} needs tracking.artifact_location (a folder or "
            "s3://... that every machine logging to or serving from this database can read): with a database "
            "store MLflow would keep its artifacts in ./mlruns of whatever directory this run started in; "
            "--set tracking.artifact_location=PATH"
        )
    try:
        return mlflow_client.create_experiment(name, artifact_location=where)
    except Exception:
        existing = mlflow_client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id
