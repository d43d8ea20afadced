"""Fixtures shared by every test module. Heavy services (MLflow store, Prefect harness) are
session-scoped in their own conftest files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Prefect's server telemetry writes to its SQLite from a background task and logs noisy
# "database is locked" tracebacks under load; it is not part of what the tests check.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

REPO = Path(__file__).resolve().parents[1]
ML100K = REPO.parent / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The shared MovieLens 100K (RecBole layout); tests that need it skip when it is absent."""
    if not (ML100K / "ml-100k.inter").is_file():
        pytest.skip("shared/data/ml-100k is not beside the repo")
    return ML100K


@pytest.fixture(scope="session")
def shared_mlflow_uri(tmp_path_factory) -> str:
    """One real MLflow SQLite store per session (creating one runs ~10-20 s of migrations)."""
    from recsys.tracking.store import check_tracking

    root = tmp_path_factory.mktemp("mlflow-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    check_tracking(uri)  # runs the migrations once, here
    return uri
