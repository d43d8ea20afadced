"""After a command has returned, the `recsys` process ends without the interpreter's last
collection walking the whole heap (`recsys.exit_gc`): after `recsys run`
(~900k objects) that walk took 4-8 s on a 2-core machine before the shell got its prompt back.
Timings are not asserted (see benchmarks); the test checks, in a real process, that the heap is
frozen at exit and that the command's outputs and exit code are those of an ordinary exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import atexit, gc, sys
atexit.register(lambda: print(f"frozen at exit: {gc.get_freeze_count()}", file=sys.stderr))  # runs last
from recsys.cli.entry import main
sys.argv = ["recsys", *sys.argv[1:]]
main()
"""


def _recsys(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_a_finished_command_freezes_the_heap_and_keeps_its_outputs(tmp_path: Path) -> None:
    source = tmp_path / "log.csv"
    source.write_text("user_id,item_id\n" + "".join(f"u{u},i{(u * 7 + k) % 13}\n" for u in range(20) for k in range(3)))
    done = _recsys("ingest", str(source), "--out", str(tmp_path / "out"), "--json", str(tmp_path / "summary.json"))
    assert done.returncode == 0, done.stderr[-2000:]
    frozen = int(done.stderr.strip().splitlines()[-1].removeprefix("frozen at exit: "))
    assert frozen > 10_000  # the imported stack (polars, typer, rich) is in the frozen generation
    assert json.loads((tmp_path / "summary.json").read_text())["rows_in"] == 60
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["interactions"] > 0


INTERRUPTED = r"""
import atexit, gc, sys
atexit.register(lambda: print(f"frozen at exit: {gc.get_freeze_count()}", file=sys.stderr))  # runs last
from recsys.cli import app
from recsys.cli.common import user_errors
from recsys.cli.entry import main

@app.command("interrupted-for-test")
@user_errors
def interrupted() -> None:
    import polars  # noqa: F401 - a command's own imports, as `recsys run`'s torch and MLflow
    raise KeyboardInterrupt  # what Ctrl-C raises in the command's main thread

sys.argv = ["recsys", "interrupted-for-test"]
main()
"""


def test_an_interrupted_command_freezes_the_heap_too() -> None:
    """After Ctrl-C or SIGTERM the exit's collection walked the whole heap: `recsys run` ended 8-13 s
    after its "interrupted" line on a loaded 2-core machine (1.2-1.5 s frozen), and every test that
    interrupts a real run waited that out."""
    done = subprocess.run([sys.executable, "-c", INTERRUPTED], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr[-2000:]
    *_, said, last = done.stderr.strip().splitlines()
    assert said == "interrupted", done.stderr[-2000:]
    assert int(last.removeprefix("frozen at exit: ")) > 10_000


FLOW_RUN = r"""
import atexit, gc, runpy, sys
atexit.register(lambda: print(f"frozen at exit: {gc.get_freeze_count()}", file=sys.stderr))  # runs last
def engine(*args, **kwargs):  # stands in for Prefect's engine: a flow run that imports its stack and ends
    import polars  # noqa: F401
runpy.run_module = engine
from flows.flow_run_process import main
main()
"""

RANK = r"""
import atexit, gc, sys
atexit.register(lambda: print(f"frozen at exit: {gc.get_freeze_count()}", file=sys.stderr))  # runs last
from recsys.distributed import run_rank
from recsys.errors import DataError
def body():
    if sys.argv[1] == "fail":
        raise DataError("no split here")
    return 0
run_rank(body)
"""


def test_a_scheduled_flow_run_process_freezes_the_heap() -> None:
    """Each flow-run process of `recsys schedule` imports torch, MLflow and Prefect: ~1 CPU-s of exit
    collection per run without the freeze."""
    done = subprocess.run([sys.executable, "-c", FLOW_RUN], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stderr.strip().splitlines()[-1].removeprefix("frozen at exit: ")) > 10_000


def test_a_torchrun_rank_freezes_the_heap_whether_it_trained_or_failed() -> None:
    for how, code in (("ok", 0), ("fail", 2)):
        done = subprocess.run([sys.executable, "-c", RANK, how], capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stderr[-2000:]
        assert int(done.stderr.strip().splitlines()[-1].removeprefix("frozen at exit: ")) > 10_000
        if how == "fail":
            assert "error (rank 0): no split here" in done.stderr
