"""Day two: an `--append` re-run after a kill -9, and a landing file read while it is written.

1. Under data.exact_duplicates = "keep" identical rows are counted, so nothing row by row tells a
   re-run of an append from real repeated events: `recsys ingest day2.csv --append` killed once its
   batch had landed and then run again counted day 2 twice. Ingest now records the source's content
   digest in the batch's manifest entry, swapped in with the batch in one rename, and an append of
   the same content adds nothing. The kills are real SIGKILLs at the named fault points
   (`recsys.faults`): before the swap, between its two renames, after it.
2. A landing file read while its producer was still writing it was recorded (its ledger digest
   taken before the last write), and every later run stopped on it as a "changed landing file". It
   is now passed over with a warning and read by a later run once it stops changing. The producer's
   write lands while the ingest is frozen (RECSYS_STOP_AT) between reading the file and staging it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from stopped import stopped_at_its_point
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import DataConfig, load_config
from recsys.data import storage
from recsys.data.ingest import ingest
from recsys.data.source_stamp import SourceChanged, take_stamp
from recsys.errors import AlreadyIngested
from recsys.faults import ENV, STOP_ENV

KEEP = DataConfig(aggregate="count", exact_duplicates="keep")
CLICKS = "user,item\n" + "".join(f"u{u},i{(u * 7 + k) % 11}\n" for u in range(12) for k in range(3))
DAY2 = "user,item\n" + "".join(f"u{u},i{(u + k) % 11}\n" for u in range(4, 16) for k in range(2))


def _counts(out: Path) -> dict[str, float]:
    """Total weight per user id of the processed directory (the counted clicks)."""
    data = storage.load_processed(out)
    weights: dict[str, float] = {}
    for u, w in zip(data.interactions["user_idx"].to_list(), data.interactions["weight"].to_list(), strict=True):
        weights[str(data.user_ids[u])] = weights.get(str(data.user_ids[u]), 0.0) + w
    return weights


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", "ingest", *args],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "250", **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize("point", ["ingest.staged", "storage.between_renames", "ingest.done"])
def test_an_append_rerun_after_a_kill_counts_the_batch_once(tmp_path: Path, point: str) -> None:
    """Killed before the swap (nothing landed: the re-run appends), between its renames (the next
    start completes the swap: the re-run adds nothing) or after it (landed: the re-run adds
    nothing); either way day 2 is in once, as in an ingest that was never killed."""
    (tmp_path / "day1.csv").write_text(CLICKS)
    (tmp_path / "day2.csv").write_text(DAY2)
    out, once = tmp_path / "out", tmp_path / "once"
    for target in (out, once):
        ingest(tmp_path / "day1.csv", target, KEEP)
    ingest(tmp_path / "day2.csv", once, KEEP, append=True)
    args = (str(tmp_path / "day2.csv"), "--out", str(out), "--append", "--exact-duplicates", "keep",
            "--aggregate", "count")  # fmt: skip

    killed = _cli(*args, env={ENV: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    rerun = CliRunner().invoke(app, ["ingest", *args])  # the next start, in this process
    assert rerun.exit_code == 0, rerun.output
    manifest = storage.read_manifest(out)
    assert [Path(b["source"]).name for b in manifest["batches"]] == ["day1.csv", "day2.csv"]
    assert _counts(out) == _counts(once)
    assert manifest["fingerprint"] == storage.read_manifest(once)["fingerprint"]
    if point != "ingest.staged":  # it had landed: the re-run says so in one line
        [line] = [line for line in rerun.output.splitlines() if line.startswith("warning:")]
        assert "day2.csv: the same content as batch 2" in line and "nothing appended" in line
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".old"))]


def test_the_same_content_again_adds_nothing_unless_asked(tmp_path: Path) -> None:
    """A copy under another name is the same content too; --allow-same-content appends it all the
    same (repeated events that really happened again), and it is refused without --append."""
    (tmp_path / "day1.csv").write_text(DAY2)
    (tmp_path / "day2.csv").write_text(CLICKS)
    (tmp_path / "copy.csv").write_text(CLICKS)
    out = tmp_path / "out"
    runner = CliRunner()
    first = ["--out", str(out), "--exact-duplicates", "keep", "--aggregate", "count"]
    assert runner.invoke(app, ["ingest", str(tmp_path / "day1.csv"), *first]).exit_code == 0
    assert runner.invoke(app, ["ingest", str(tmp_path / "day2.csv"), *first, "--append"]).exit_code == 0
    before = _counts(out)
    again = runner.invoke(app, ["ingest", str(tmp_path / "copy.csv"), *first, "--append", "--json", str(tmp_path / "s.json")])
    assert again.exit_code == 0, again.output
    assert "copy.csv: the same content as batch 2" in again.output and "--allow-same-content" in again.output
    assert json.loads((tmp_path / "s.json").read_text())["rows_in"] == 0
    assert _counts(out) == before and storage.list_batches(out) == [1, 2]
    forced = runner.invoke(app, ["ingest", str(tmp_path / "copy.csv"), *first, "--append", "--allow-same-content"])
    assert forced.exit_code == 0, forced.output
    clicks = {f"u{u}": 3.0 for u in range(12)}  # CLICKS: 3 per user, now counted once more
    assert _counts(out) == {user: n + clicks.get(user, 0.0) for user, n in before.items()}
    alone = runner.invoke(app, ["ingest", str(tmp_path / "copy.csv"), *first, "--allow-same-content"])
    assert alone.exit_code == 2 and "applies to --append only" in alone.output


def test_concurrent_appends_of_one_file_land_once(tmp_path: Path) -> None:
    """Two schedulers retrying the same append at once: they take turns on the writer lock, and
    the second finds the first's digest in the manifest."""
    (tmp_path / "day1.csv").write_text(CLICKS)
    (tmp_path / "day2.csv").write_text(DAY2)
    out = tmp_path / "out"
    ingest(tmp_path / "day1.csv", out, KEEP)
    barrier, outcomes = threading.Barrier(2), []

    def append() -> None:
        barrier.wait()
        try:
            outcomes.append(ingest(tmp_path / "day2.csv", out, KEEP, append=True).batch)
        except AlreadyIngested as exc:
            outcomes.append(f"already in batch {exc.batch}")

    threads = [threading.Thread(target=append) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes, key=str) == [2, "already in batch 2"]
    assert storage.list_batches(out) == [1, 2]


def test_a_source_changed_after_its_stamp_writes_nothing(tmp_path: Path) -> None:
    """The stamp is taken before the source is read (here: by the caller, as a landing zone does
    at its listing); a write after it means the bytes read are not the bytes hashed, so the ingest
    stops with one line and leaves the directory as it was."""
    (tmp_path / "day1.csv").write_text(CLICKS)
    out = tmp_path / "out"
    ingest(tmp_path / "day1.csv", out, KEEP)
    day2 = tmp_path / "day2.csv"
    day2.write_text(DAY2)
    stamp = take_stamp(day2)
    with day2.open("a") as fh:
        fh.write("u99,i1\n")  # the producer's next write
    with pytest.raises(SourceChanged, match=r"day2\.csv: changed while it was read .*nothing was written"):
        ingest(day2, out, KEEP, append=True, stamp=stamp)
    assert storage.list_batches(out) == [1]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".old"))]


PREPARE = """
    import sys, warnings
    from recsys.config import load_config
    from pipelines.data import prepare_dataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = prepare_dataset(load_config(None, sys.argv[1:]))
    print("ingested", result.ingested_files)
    for w in caught:
        print("warning:", w.message)
"""


def test_a_landing_file_written_during_its_read_is_passed_over_until_complete(tmp_path: Path) -> None:

    from pipelines.data import dataset_dir, prepare_dataset

    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "day1.csv").write_text(CLICKS)
    overrides = [f"data.source={landing}", f"data.processed_dir={tmp_path / 'processed'}"]
    cfg = load_config(None, overrides)
    prepare_dataset(cfg)
    day2 = landing / "day2.csv"
    half = DAY2[: len(DAY2) // 2].rsplit("\n", 1)[0] + "\n"
    day2.write_text(half)  # the producer's first half
    run = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PREPARE), *overrides], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, STOP_ENV: "ingest.read", "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    with stopped_at_its_point(run):
        with day2.open("a") as fh:
            fh.write(DAY2[len(half):])  # the producer finishes while the run holds the first half
    said, err = run.communicate(timeout=60)
    assert run.returncode == 0, err[-2000:]
    assert "ingested []" in said
    assert f"warning: {day2}: changed while this run read it (still being written?): not ingested" in said
    ledger = json.loads((dataset_dir(cfg.data) / "sources.json").read_text())
    assert sorted(ledger) == ["day1.csv"]  # the half-read file is not recorded

    later = prepare_dataset(cfg)  # the next run: settled, read whole, no "changed landing file"
    assert later.ingested_files == ["day2.csv"]
    manifest = storage.read_manifest(dataset_dir(cfg.data))
    assert manifest["rows_in"] == CLICKS.count("\n") - 1 + DAY2.count("\n") - 1


def test_a_copy_in_a_landing_zone_is_named_not_counted_again(tmp_path: Path) -> None:
    """A producer that delivered day 1 again under another name: under keep its rows were counted
    twice; it is now named on each run and left out of the ledger."""
    from pipelines.data import dataset_dir, prepare_dataset
    from recsys.errors import RecsysWarning

    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "day1.csv").write_text(CLICKS)
    (landing / "day1-again.csv").write_text(CLICKS)
    cfg = load_config(None, [f"data.source={landing}", f"data.processed_dir={tmp_path / 'processed'}",
                             "data.exact_duplicates=keep", "data.aggregate=count"])  # fmt: skip
    with pytest.warns(RecsysWarning, match=r"/day1\.csv: the same content as batch 1 .*not ingested again"):
        assert prepare_dataset(cfg).ingested_files == ["day1-again.csv"]  # listed first ('-' before '.')
    out = dataset_dir(cfg.data)
    assert storage.list_batches(out) == [1]
    assert sum(_counts(out).values()) == CLICKS.count("\n") - 1
    assert list(json.loads((out / "sources.json").read_text())) == ["day1-again.csv"]
