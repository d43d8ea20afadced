"""`recsys run` puts off full garbage collections while it imports its libraries, then collects
once and freezes what the imports left (`recsys.import_gc`): ~1.1-1.3 CPU-s of full collections
fewer per default run (11 -> 8 full collections, 2.2-2.5 -> 1.2 CPU-s, measured with gc.callbacks)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys import import_gc
from recsys.cli import app


@pytest.fixture
def collector() -> Iterator[None]:
    """This process's collector thresholds as they were (tests/conftest.py unfreezes the heap)."""
    threshold = gc.get_threshold()
    yield
    import_gc._saved = None
    gc.set_threshold(*threshold)


def test_full_collections_wait_for_the_imports_then_the_heap_is_frozen_and_the_thresholds_restored(collector):
    young, middle, oldest = gc.get_threshold()
    frozen = gc.get_freeze_count()
    import_gc.imports_done()  # without a deferral: nothing changes
    assert gc.get_threshold() == (young, middle, oldest) and gc.get_freeze_count() == frozen
    import_gc.defer_full_collections()
    assert gc.get_threshold() == (young, middle, import_gc.IMPORTING_OLDEST_THRESHOLD)
    import_gc.defer_full_collections()  # twice: the first thresholds are the ones restored
    import_gc.imports_done()
    assert gc.get_threshold() == (young, middle, oldest)
    assert gc.get_freeze_count() > frozen


def test_a_run_freezes_what_its_imports_left_and_restores_the_collector(tmp_path: Path, collector):
    """The wiring in `recsys run --no-prefect`; the Prefect path's is in tests/flows/test_errors.py."""
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    sets = ["data.synthetic.n_users=60", "data.synthetic.n_items=30", "data.synthetic.n_clusters=2",
            "data.synthetic.interactions_per_user=8", "data.min_user_interactions=2", "folding.enabled=false",
            f"data.processed_dir={tmp_path / 'p'}", f"data.raw_dir={tmp_path / 'raw'}",
            'models=[{name="pop", kind="popularity"}]']  # fmt: skip
    result = CliRunner().invoke(app, ["run", "--no-prefect", "--no-tracking", *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert gc.get_freeze_count() > frozen
    assert gc.get_threshold() == threshold
