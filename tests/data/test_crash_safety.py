"""Processed directories under concurrency and kill -9 (issue 20, items 1 and 4-7).

Two writers of one directory serialise on its lock and both batches land; a writer killed between
the two renames of the swap, or between a batch and the record of ingested files, leaves a state the
next start finishes (never a vanished directory, a rebuilt vocab or a re-ingested file); a corrupt
manifest, a directory of mixed formats and a FIFO are one-line errors, never silent loss.

Kills are real SIGKILLs of a subprocess, placed by wrapping the function that runs just before the
moment in question, so the tests describe the failure without relying on the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from stopped import stopped_at_its_point
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import DataConfig, load_config
from recsys.data import storage
from recsys.data.ingest import ingest
from recsys.data.storage import load_processed
from recsys.errors import DataError


def _log(path: Path, users: range, items: int = 6, start: int = 0) -> Path:
    """A small CSV: every user of `users` rates `items` items once, timestamps from `start`."""
    rows = [
        f"u{u},i{(u + k) % 40},{1 + (u + k) % 5},{start + u * items + k}" for u in users for k in range(items)
    ]
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows) + "\n")
    return path


def _run_killed(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter (it kills itself with SIGKILL at the planted moment)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )


# ----------------------------------------------------------------------------- item 1


def test_concurrent_appends_serialise_and_both_batches_land(tmp_path: Path) -> None:
    out = tmp_path / "proc"
    ingest(_log(tmp_path / "base.csv", range(0, 20)), out, DataConfig())
    sources = [
        _log(tmp_path / f"new{i}.csv", range(20 + 30 * i, 50 + 30 * i), start=10_000 * (i + 1))
        for i in range(2)
    ]
    barrier, errors = threading.Barrier(2), []

    def append(source: Path) -> None:
        barrier.wait()
        try:
            ingest(source, out, DataConfig(), append=True)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert [b["batch"] for b in manifest["batches"]] == [1, 2, 3]
    assert sorted(Path(b["source"]).name for b in manifest["batches"][1:]) == ["new0.csv", "new1.csv"]
    assert manifest["rows_in"] == 80 * 6
    data = load_processed(out)
    assert data.n_users == 80 == manifest["users"]  # vocab and table agree
    assert data.interactions["user_idx"].n_unique() == 80
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".old"))]


# ----------------------------------------------------------------------------- item 4

KILL_BETWEEN_RENAMES = """
    import os, signal, sys
    from pathlib import Path
    from recsys.config import DataConfig
    from recsys.data.ingest import ingest

    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst) == out:  # the second rename: the new directory moving into place
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *a, **k)

    os.replace = replace
    ingest(source, out, DataConfig(), append=True)
"""


def test_kill_between_the_renames_is_completed_at_the_next_start(tmp_path: Path) -> None:
    out = tmp_path / "proc"
    ingest(_log(tmp_path / "a.csv", range(0, 30)), out, DataConfig())
    first_vocab = load_processed(out).user_ids.tolist()
    killed = _run_killed(
        KILL_BETWEEN_RENAMES, str(_log(tmp_path / "b.csv", range(30, 50), start=9_000)), str(out)
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not out.exists()  # the moment the issue describes: old aside, new not yet in place

    report = ingest(_log(tmp_path / "c.csv", range(50, 60), start=20_000), out, DataConfig(), append=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [Path(b["source"]).name for b in manifest["batches"]] == ["a.csv", "b.csv", "c.csv"]
    assert report.batch == 3
    data = load_processed(out)
    assert data.user_ids.tolist()[:30] == first_vocab  # the vocab was kept, not rebuilt
    assert data.n_users == 60
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_recover_rolls_back_a_swap_whose_new_directory_is_incomplete(tmp_path: Path) -> None:
    out = tmp_path / "proc"
    ingest(_log(tmp_path / "a.csv", range(0, 10)), out, DataConfig())
    aside, staged = tmp_path / ".proc.abcd1234.old", tmp_path / ".proc.efgh5678.tmp"
    aside.mkdir()
    staged.mkdir()  # killed before its manifest was written: incomplete
    (aside / storage.SWAP_FILE).write_text(json.dumps({"staged": staged.name}))
    os.replace(out, aside / "previous")
    (tmp_path / ".proc.zzzz9999.tmp").mkdir()  # another writer's leftover staging
    sibling = tmp_path / ".proc.other.abcd1234.tmp"  # a sibling directory's staging: not ours
    sibling.mkdir()
    done = storage.recover(out)
    assert done[0] == f"rolled back an interrupted swap of {out}"
    assert load_processed(out).n_users == 10
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".proc")) == [
        ".proc.lock",
        ".proc.other.abcd1234.tmp",
    ]


KILL_DURING_INGEST = """
    import sys
    from pathlib import Path
    from recsys.config import DataConfig
    from recsys.data import storage
    from recsys.data.ingest import ingest
    import os, signal

    real_write_json = storage.write_json

    def write_json(path, data):
        real_write_json(path, data)
        if Path(path).name == "manifest.json":  # everything staged, nothing swapped in yet
            os.kill(os.getpid(), signal.SIGKILL)

    storage.write_json = write_json
    ingest(Path(sys.argv[1]), Path(sys.argv[2]), DataConfig(), append=True)
"""


def test_a_kill_during_ingest_leaves_no_staging_after_the_next_start(tmp_path: Path) -> None:
    out = tmp_path / "proc"
    ingest(_log(tmp_path / "a.csv", range(0, 10)), out, DataConfig())
    killed = _run_killed(
        KILL_DURING_INGEST, str(_log(tmp_path / "b.csv", range(10, 20), start=5000)), str(out)
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the stale staging dir
    data = load_processed(out)  # a reader finds the directory as it was, and cleans up
    assert data.n_users == 10
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".old"))]


# ----------------------------------------------------------------------------- item 5

KILL_AFTER_INGEST = """
    import os, signal, sys
    from recsys.config import load_config
    import recsys.data.ingest as library
    from pipelines.data import prepare_dataset

    real_ingest = library.ingest

    def ingest(*args, **kwargs):
        report = real_ingest(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)  # the batch is in; whatever the step does next is not

    library.ingest = ingest
    prepare_dataset(load_config(None, sys.argv[1:]))
"""


def test_a_kill_after_the_batch_never_ingests_the_file_twice(tmp_path: Path) -> None:
    from pipelines.data import dataset_dir, prepare_dataset

    landing = tmp_path / "landing"
    landing.mkdir()
    _log(landing / "day1.csv", range(0, 20))
    overrides = [f"data.source={landing}", f"data.processed_dir={tmp_path / 'processed'}"]
    cfg = load_config(None, overrides)
    prepare_dataset(cfg)
    _log(landing / "day2.csv", range(20, 30), start=50_000)
    killed = _run_killed(KILL_AFTER_INGEST, *overrides)
    assert killed.returncode == -9, killed.stderr[-2000:]

    result = prepare_dataset(cfg)  # the rerun
    assert result.ingested_files == [] and result.reused
    manifest = json.loads((dataset_dir(cfg.data) / "manifest.json").read_text())
    assert [Path(b["source"]).name for b in manifest["batches"]] == ["day1.csv", "day2.csv"]
    assert manifest["rows_in"] == 30 * 6 and manifest["rows_quarantined"] == 0
    ledger = json.loads((dataset_dir(cfg.data) / "sources.json").read_text())
    assert sorted(ledger) == ["day1.csv", "day2.csv"]


# ----------------------------------------------------------------------------- item 6


@pytest.mark.parametrize("content", ["{}", "[]", "{not json", ""])
def test_append_onto_a_corrupt_manifest_is_refused(tmp_path: Path, content: str) -> None:
    out = tmp_path / "proc"
    ingest(_log(tmp_path / "a.csv", range(0, 10)), out, DataConfig())
    (out / "manifest.json").write_text(content)
    result = CliRunner().invoke(
        app, ["ingest", str(_log(tmp_path / "b.csv", range(10, 20))), "--out", str(out), "--append"]
    )
    assert result.exit_code == 2, result.output
    assert "corrupt manifest" in result.output and "--out" in result.output
    assert "Traceback" not in result.output
    assert (out / "manifest.json").read_text() == content  # nothing replaced
    assert storage.list_batches(out) == [1]


# ----------------------------------------------------------------------------- item 7


def test_a_directory_of_mixed_formats_names_the_files_it_would_skip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _log(src / "a.csv", range(0, 5))
    pl.DataFrame({"user_id": ["u9"], "item_id": ["i1"], "rating": [5], "timestamp": [1]}).write_parquet(
        src / "b.parquet"
    )
    with pytest.raises(DataError, match=r"2 formats .*csv: a\.csv.*parquet: b\.parquet") as info:
        ingest(src, tmp_path / "proc", DataConfig())
    assert "--append" in str(info.value)
    assert not (tmp_path / "proc").exists()


def test_a_fifo_in_a_source_directory_is_an_error(tmp_path: Path) -> None:
    from pipelines.data import source_files

    src = tmp_path / "src"
    src.mkdir()
    _log(src / "a.csv", range(0, 5))
    os.mkfifo(src / "b.csv")
    for read in (lambda: ingest(src, tmp_path / "proc", DataConfig()), lambda: source_files(src)):
        with pytest.raises(DataError, match=r"b\.csv: a FIFO \(named pipe\)"):
            read()


def test_an_ingest_replaced_by_another_before_its_summary_says_so(tmp_path: Path) -> None:
    """Two non-append `recsys ingest` into one --out: the writer lock makes them take turns, so the
    second replaces the first's data right after it. The first's summary is built from what it
    wrote (its own counts, not the other's), and since the directory no longer holds that, it says
    so plainly. The first is frozen (RECSYS_STOP_AT) between releasing its lock and printing; the
    second ingest runs in that window."""

    from recsys.faults import STOP_ENV

    out = tmp_path / "proc"
    mine, theirs = _log(tmp_path / "mine.csv", range(0, 20)), _log(tmp_path / "theirs.csv", range(100, 130))
    first = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "ingest", str(mine), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, STOP_ENV: "ingest.done", "COLUMNS": "200", "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    with stopped_at_its_point(first):
        other = ingest(theirs, out, DataConfig())  # the other writer, in the window
    said, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "20 users" in said and f"{other.users} users" not in said  # its own data, not the other's
    assert f"warning: another writer replaced {out} after this ingest (it now holds {theirs})" in err
    assert "no longer there" in err
    from recsys.data.ingest import replaced_since

    assert replaced_since(other) is None  # the directory holds the other's batch ...
    ingest(_log(tmp_path / "later.csv", range(200, 210), start=50_000), out, DataConfig(), append=True)
    assert replaced_since(other) is None  # ... and still does after an append: that replaces nothing


def _ingest_waiting_for_the_lock(
    args: list[str], lines: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, threading.Thread]:
    """`recsys ingest ARGS` in a child process, returned once it says (on stderr, collected into
    `lines` by the returned reader thread) that it waits for another writer's lock."""
    child = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "ingest", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "300", "OPENBLAS_NUM_THREADS": "1", **(env or {})},
    )  # fmt: skip
    reader = threading.Thread(target=lambda: lines.extend(child.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not any("waiting for another writer" in line for line in lines):
        assert child.poll() is None and time.monotonic() < deadline, lines
        time.sleep(0.05)
    return child, reader


def test_the_replaced_batches_warning_names_what_the_directory_held_when_the_ingest_got_its_lock(
    tmp_path: Path,
) -> None:
    """`recsys ingest` without --append read the manifest for its "held N batch(es)" warning before
    it took the directory's writer lock, so an append that ran while it waited was replaced too but
    left out of the warning. The test holds the lock; the ingest starts, reads, and waits (saying
    so on stderr, where a non-terminal run showed nothing); the append lands in that window."""
    out = tmp_path / "proc"
    first, appended, today = (_log(tmp_path / f"{name}.csv", range(i * 20, i * 20 + 10), start=i * 10_000)
                              for i, name in enumerate(("first", "appended", "today")))  # fmt: skip
    ingest(first, out, DataConfig())
    lines: list[str] = []
    with storage.writer_lock(out):  # another writer at work
        replacing, reader = _ingest_waiting_for_the_lock([str(today), "--out", str(out)], lines)
        ingest(appended, out, DataConfig(), append=True)  # lands while the replacing ingest waits
    said = replacing.stdout.read()
    assert replacing.wait(60) == 0, lines
    reader.join(10)
    warning = " ".join(" ".join(lines).split())
    assert "held 2 batch(es) (120 rows in: first.csv, appended.csv)" in warning, warning
    assert "replaced by today.csv alone" in warning and "10 users" in said


@pytest.mark.parametrize("command", ["run", "train"])
def test_a_run_trains_on_the_data_it_prepared_while_another_ingest_waits(command: str, tmp_path: Path) -> None:
    """`recsys run`'s data step reads one generation of its processed directory: from bringing it
    up to date to loading it, the run holds its writer lock, so a non-append ingest into the same
    directory waits and the run neither describes nor trains on the other writer's data. The run is
    frozen (RECSYS_STOP_AT) right after its ingest; the other writer is started in that window.
    `recsys train` (and `evaluate`) read their data through the same step (`prepare_run_inputs`),
    where they had a copy of its three lines without the stop point."""

    from pipelines.data import dataset_dir
    from recsys.faults import STOP_ENV

    mine, theirs = _log(tmp_path / "mine.csv", range(0, 20)), _log(tmp_path / "theirs.csv", range(100, 130))
    sets = [f'data.source="{mine}"', f'data.processed_dir="{tmp_path / "processed"}"', "data.min_user_interactions=1",
            "data.min_item_interactions=1", 'models=[{name="pop", kind="popularity"}]']  # fmt: skip
    script = """
        import json, sys
        from pipelines.run import run_pipeline
        from recsys.config import load_config
        result = run_pipeline(load_config(None, sys.argv[1:]), tracking=False, log=lambda line: print(line, file=sys.stderr))
        print(json.dumps(result.dataset))
    """
    argv = [sys.executable, "-c", textwrap.dedent(script), *sets]
    if command == "train":
        argv = [sys.executable, "-m", "recsys.cli", "train", "--models", str(tmp_path / "models"),
                *(f"--set={item}" for item in sets)]  # fmt: skip
    run = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, STOP_ENV: "run.prepared", "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "300"},
    )  # fmt: skip
    other: dict = {}
    with stopped_at_its_point(run):
        if command == "train":  # the CLI's config: pipelines/configs/default.toml under the --set
            from recsys.cli.common import load_run_config

            out = dataset_dir(load_run_config(None, sets, default=True).data)
        else:
            out = dataset_dir(load_config(None, sets).data)
        waits = threading.Event()
        writer = threading.Thread(target=lambda: other.update(
            report=ingest(theirs, out, DataConfig(), progress=lambda line: waits.set() if "waiting" in line else None)
        ))  # fmt: skip
        writer.start()
        while not waits.is_set() and writer.is_alive():  # the run holds the lock: the other writer waits
            time.sleep(0.02)
    said, err = run.communicate(timeout=120)
    writer.join(timeout=60)
    assert run.returncode == 0, err
    assert waits.is_set()  # the other writer waited for the run's lock
    if command == "train":  # "data DIR: 20 users x ... items, ..." before training
        assert f"data {out}: 20 users x" in " ".join(said.split()), said
    else:
        dataset = json.loads(said.strip().splitlines()[-1])
        assert dataset["users"] == 20 and dataset["processed_dir"] == str(out)  # its own data, not the other's 30
    assert other["report"].users == 30 and load_processed(out).n_users == 30  # the other ingest landed after it


def test_a_writer_waiting_on_a_refused_one_still_excludes_the_next(tmp_path: Path) -> None:
    """A writer whose input is refused removes its lock file (and the folder made for it) as it
    lets go, with a second writer already waiting on that file: the waiter must take the lock on a
    new file at that name (filelock re-checks the file it locked still has a name; the folder is
    made again), so a third writer that comes while the waiter works waits too. The waiter is
    frozen at `ingest.staged` (RECSYS_STOP_AT), holding the lock, while the third one tries."""
    from filelock import FileLock, Timeout

    from recsys.faults import STOP_ENV

    out = tmp_path / "new" / "proc"
    lines: list[str] = []
    with pytest.raises(DataError, match="refused"), storage.writer_lock(out):  # the refused writer
        good = str(_log(tmp_path / "good.csv", range(10)))
        waiter, reader = _ingest_waiting_for_the_lock([good, "--out", str(out)], lines, {STOP_ENV: "ingest.staged"})
        raise DataError("refused")
    with stopped_at_its_point(waiter):
        third = FileLock(str(storage.lock_file(out)), timeout=0, is_singleton=False)
        with pytest.raises(Timeout):
            third.acquire()
    assert waiter.wait(60) == 0, lines
    reader.join(10)
    assert load_processed(out).manifest["rows_in"] == 60
