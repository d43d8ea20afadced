"""The suite's own xdist grouping (tests/conftest.py): a test that needs both workers' session services
is refused at collection, naming it, rather than silently making one worker start the other's too; the
SQLite store is no such service (each worker copies the session's migrated one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).parent / "conftest.py"

SUITE = '''
import pytest

@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def tracking_uri(request):
    return request.param

@pytest.fixture
def page(tracking_uri, recsys_ui):
    return tracking_uri

def test_the_stack(team_stack):
    pass

def test_the_ui(recsys_ui_process):
    pass

def test_the_stack_and_the_ui(team_stack, recsys_ui_process):
    pass

def test_the_stack_and_the_store(team_stack, shared_mlflow_uri):
    pass

def test_a_page(page):
    pass
'''


def collect(tmp_path: Path, suite: str) -> subprocess.CompletedProcess:
    """`pytest --collect-only` of `suite` under the suite's own conftest (nothing is started: the
    services start at the end of collection, and only for a run); the modules it imports from
    tests/ are found there. No plugin is loaded from the environment (xdist, hypothesis,
    schemathesis: 2 of its 3 s on this machine): the conftest's grouping needs none of them."""
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_suite.py").write_text(suite)
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
               "--rootdir", str(tmp_path), str(tmp_path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CONFTEST.parent), os.environ.get("PYTHONPATH", "")]),
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # fmt: skip
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)


def test_a_test_needing_the_stack_and_the_sqlite_stores_ui_is_refused_by_name(tmp_path):
    done = collect(tmp_path, SUITE)
    out = done.stdout + done.stderr
    assert done.returncode == 4, out  # pytest's usage error
    (error,) = [line for line in out.splitlines() if line.startswith("ERROR: ")]
    assert error.endswith(": test_suite.py::test_the_stack_and_the_ui, test_suite.py::test_a_page[postgres]"), error
    assert "2 test(s) need both the PostgreSQL stack's services and the Prefect harness or `recsys ui`" in error
    # (the error names them all: the tests that need one group each, sqlite's page too, are not in it,
    # nor the one that needs the stack and the SQLite store, of which every worker has a copy)



def test_the_sqlite_tests_of_a_shared_server_module_are_one_scope_and_pinned_tests_stay_pinned():
    """`_scope`: the tests of a module whose server each worker would start (SHARED_SERVER_MODULES)
    go to one worker together; a pinned test there stays in its worker's group, and another
    module's unpinned test is a scope of its own."""
    from types import SimpleNamespace

    import conftest

    def item(nodeid: str, store: str) -> SimpleNamespace:
        return SimpleNamespace(nodeid=nodeid, fixturenames=["tracking_uri"], callspec=SimpleNamespace(
            params={"tracking_uri": store}))  # fmt: skip

    for module in ("tests/tracking/test_server.py", "tests/tracking/test_serve.py"):
        assert conftest._scope(item(f"{module}::test_a[sqlite]", "sqlite")) == f"module:{module}"
        assert conftest._scope(item(f"{module}::test_b[sqlite]", "sqlite")) == f"module:{module}"
        assert conftest._scope(item(f"{module}::test_a[postgres]", "postgres")) == conftest.PINNED["gw1"]
    assert conftest._scope(item("tests/tracking/test_compare.py::test_a[sqlite]", "sqlite")) is None
