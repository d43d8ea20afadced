"""A test session writes nothing into the user's ~/.prefect: the Prefect harness's server wrote its
block-registration memo there (`memo_store.toml`), and a temporary server's database would land
there too, since the session pointed only Prefect's result storage elsewhere. tests/conftest.py
now points PREFECT_HOME at the session's temp folder (and turns MLflow's telemetry off, which wrote
~/.config/mlflow/telemetry.json). Checked by a session of its own, run with a home of the test's
making and none of the Prefect or MLflow settings this session exported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# A test that runs flows on the harness, and subprocesses with and without a PREFECT_HOME of their own.
NODE = "tests/flows/test_pipeline.py::test_persisted_results_go_to_the_sessions_folder_not_the_users"


@pytest.mark.slow
def test_a_test_session_leaves_the_users_prefect_home_alone(tmp_path: Path):
    home = tmp_path / "user"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PYTEST_", "DASK_", "MLFLOW_"))}
    env["HOME"] = str(home)
    session = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
         NODE],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert session.returncode == 0, session.stdout[-3000:] + session.stderr[-3000:]
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert not (home / ".prefect").exists(), written
    assert not (home / ".config" / "mlflow").exists(), written  # MLflow's telemetry id (tests/conftest.py)
    assert (tmp_path / "t" / "prefect-home" / "memo_store.toml").is_file()  # the memo is written: in the session's home
