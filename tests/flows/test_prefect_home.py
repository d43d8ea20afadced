"""A test session writes nothing into the user's ~/.prefect: the Prefect harness's server wrote its
block-registration memo there (`memo_store.toml`), and a temporary server's database would land
there too, while the session pointed only Prefect's result storage elsewhere. tests/conftest.py
points PREFECT_HOME at the session's temp folder (and turns MLflow's telemetry off, which wrote
~/.config/mlflow/telemetry.json). Checked inside this session, on the harness its flow tests use:
a session of its own with a fresh HOME said the same but cost ~30-40 s of the suite."""

from __future__ import annotations

import os
from pathlib import Path


def test_prefect_writes_its_home_into_the_sessions_folder(prefect_harness, request):
    from prefect.settings import get_current_settings

    home = Path(request.config._tmp_path_factory.getbasetemp()) / "prefect-home"
    settings = get_current_settings()
    assert Path(settings.home) == home
    assert Path(settings.server.memo_store_path) == home / "memo_store.toml"
    assert (home / "memo_store.toml").is_file()  # written by the harness's server as it registered blocks
    assert os.environ.get("MLFLOW_DISABLE_TELEMETRY", "").lower() in ("true", "1")
