"""pipelines/ steps without Prefect: landing-zone ingest across scheduled runs, train/evaluate/tune
commands on tiny synthetic data."""

from __future__ import annotations

import gzip
import json
import shlex
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from pipelines.data import prepare_dataset
from pipelines.run import load_data_and_split
from recsys.cli import app
from recsys.config import load_config

TINY = [
    "data.synthetic.n_users=120", "data.synthetic.n_items=60", "data.synthetic.n_clusters=3",
    "data.synthetic.interactions_per_user=12", "data.min_user_interactions=2",
    "split.validation_fraction=0.15", "evaluation.ks=[5, 20]", "evaluation.bootstrap_samples=50",
]


def _log(path: Path, users: list[str], items: list[str], start: int) -> None:
    pl.DataFrame({
        "user_id": users, "item_id": items,
        "timestamp": [start + i for i in range(len(users))], "rating": [4.0] * len(users),
    }).write_csv(path)


def test_landing_directory_ingests_only_new_files_and_keeps_the_vocab(tmp_path):
    """A scheduled run picks up the files added since the last run; old indices never move."""
    landing = tmp_path / "landing"
    landing.mkdir()
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in rng.integers(0, 30, 300)]
    items = [f"i{i}" for i in rng.integers(0, 40, 300)]
    _log(landing / "day1.csv", users, items, 1_700_000_000)
    cfg = load_config(None, [f'data.source="{landing}"', f'data.processed_dir="{tmp_path / "processed"}"'])

    first = prepare_dataset(cfg)
    data1, _ = load_data_and_split(first, cfg)
    again = prepare_dataset(cfg)
    assert again.reused and again.fingerprint == first.fingerprint and again.ingested_files == []

    _log(landing / "day2.csv", ["u0", "new-user"], ["i0", "new-item"], 1_700_100_000)
    second = prepare_dataset(cfg)
    data2, _ = load_data_and_split(second, cfg)
    assert second.ingested_files == ["day2.csv"]
    assert second.processed_dir == first.processed_dir and second.fingerprint != first.fingerprint
    assert list(data2.user_ids[: data1.n_users]) == list(data1.user_ids)  # append-only vocab
    assert list(data2.item_ids[: data1.n_items]) == list(data1.item_ids)
    assert "new-user" in set(data2.user_ids[data1.n_users:]) and "new-item" in set(data2.item_ids[data1.n_items:])


def test_changed_landing_file_is_refused_with_a_clear_error(tmp_path):
    from recsys.errors import DataError

    landing = tmp_path / "landing"
    landing.mkdir()
    _log(landing / "day1.csv", ["a", "b"], ["x", "y"], 1_700_000_000)
    cfg = load_config(None, [f'data.source="{landing}"', f'data.processed_dir="{tmp_path / "processed"}"'])
    prepare_dataset(cfg)
    _log(landing / "day1.csv", ["a", "c"], ["x", "z"], 1_700_000_000)
    with pytest.raises(DataError, match="append-only"):
        prepare_dataset(cfg)


def test_a_header_only_landing_file_is_passed_over_until_it_holds_rows(tmp_path):
    """An export of a quiet day (the header, no row) stopped the run with `no data rows`, and every
    run after it, until someone removed the file; it is now named in a warning and taken up once
    rows are written to it. A landing zone holding nothing but such a file is still an error."""
    from recsys.errors import DataError, RecsysWarning

    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "day1.csv").write_text("user_id,item_id,timestamp,rating\n")
    cfg = load_config(None, [f'data.source="{landing}"', f'data.processed_dir="{tmp_path / "processed"}"'])
    with pytest.raises(DataError, match=r"day1\.csv: no data rows"):
        prepare_dataset(cfg)
    _log(landing / "day1.csv", ["a", "b"], ["x", "y"], 1_700_000_000)
    (landing / "day2.csv").write_text("user_id,item_id,timestamp,rating\n")
    with pytest.warns(RecsysWarning, match=r"day2\.csv: no data rows: not ingested"):
        assert prepare_dataset(cfg).ingested_files == ["day1.csv"]
    with pytest.warns(RecsysWarning, match=r"day2\.csv: no data rows"):
        assert prepare_dataset(cfg).reused
    _log(landing / "day2.csv", ["c"], ["z"], 1_700_100_000)
    assert prepare_dataset(cfg).ingested_files == ["day2.csv"]
    with gzip.open(landing / "day3.csv.gz", "wb"):
        pass  # a compressed export of nothing: not 0 bytes on disk, and no line in it
    with pytest.warns(RecsysWarning, match=r"day3\.csv\.gz: empty file: not ingested"):
        assert prepare_dataset(cfg).reused


def test_a_growing_single_file_source_keeps_its_vocab(tmp_path):
    """A run's `data.source` that is one log its writer appends to is re-read whole when it grows,
    and old ids keep their indices: rebuilt in the new file's order, a user who reached the k-core
    only today (first seen before the others) took index 0, and every later run's promotion was
    `not comparable` (the champion's vocab no prefix of today's)."""
    log = tmp_path / "events.csv"
    _log(log, ["early", "u1", "u1", "u2", "u2"], ["x", "x", "y", "x", "y"], 1_700_000_000)
    cfg = load_config(None, [f'data.source="{log}"', f'data.processed_dir="{tmp_path / "processed"}"',
                             "data.min_user_interactions=2"])  # fmt: skip
    data1, _ = load_data_and_split(prepare_dataset(cfg), cfg)
    assert list(data1.user_ids) == ["u1", "u2"]  # "early" is below the k-core
    with log.open("a") as fh:
        fh.write("early,y,1700000100,4.0\nu3,x,1700000101,4.0\nu3,y,1700000102,4.0\n")
    second = prepare_dataset(cfg)
    data2, _ = load_data_and_split(second, cfg)
    assert second.ingested_files == ["events.csv"]
    assert list(data2.user_ids) == ["u1", "u2", "early", "u3"]
    assert list(data2.item_ids[: data1.n_items]) == list(data1.item_ids)


def test_a_single_file_source_that_shrank_says_its_earlier_rows_are_gone(tmp_path):
    """A log rotated or truncated in place is read again whole, so the rows it no longer holds leave
    the processed data: that was silent (only smaller counts in the run's `kept:` line)."""
    from recsys.errors import RecsysWarning

    log = tmp_path / "events.csv"
    _log(log, ["a", "b", "c"], ["x", "y", "z"], 1_700_000_000)
    cfg = load_config(None, [f'data.source="{log}"', f'data.processed_dir="{tmp_path / "processed"}"'])
    prepare_dataset(cfg)
    _log(log, ["d"], ["x"], 1_700_100_000)
    with pytest.warns(RecsysWarning, match=r"events\.csv holds 1 rows, fewer than the 3 .* gone from the processed data"):
        assert prepare_dataset(cfg).ingested_files == ["events.csv"]


def test_a_run_on_a_missing_source_writes_nothing(tmp_path):
    """The run's data step takes its directory's lock before preparing it; a source that is not
    there is refused first, so a typo leaves no processed folder or lock file behind."""
    from pipelines.run import run_pipeline
    from recsys.errors import DataError

    processed = tmp_path / "processed"
    cfg = load_config(None, [f'data.source="{tmp_path / "nope.csv"}"', f'data.processed_dir="{processed}"',
                             'models=[{name="pop", kind="popularity"}]'])  # fmt: skip
    with pytest.raises(DataError, match="nope.csv: no such file or directory"):
        run_pipeline(cfg, tracking=False, log=lambda _: None)
    assert not processed.exists()


def test_a_run_on_a_malformed_source_leaves_no_lock_or_folder(tmp_path):
    """The run's data step holds its data set's writer lock (`.NAME-TAG.lock` in
    data.processed_dir) from before the ingest reads the source; a source refused there left that
    file behind, beside nothing (it does so no more, as an output refused before the lock never
    did). Only the digest cache of the run's cache key, taken before any lock, is there."""
    from pipelines.data import DIGEST_CACHE
    from pipelines.run import run_pipeline
    from recsys.errors import DataError

    bad, processed = tmp_path / "bad.csv", tmp_path / "processed"
    bad.write_bytes(b"user_id,item_id\n\x00\x01\x02garbage\n")
    cfg = load_config(None, [f'data.source="{bad}"', f'data.processed_dir="{processed}"',
                             'models=[{name="pop", kind="popularity"}]'])  # fmt: skip
    with pytest.raises(DataError, match="binary content"):
        run_pipeline(cfg, tracking=False, log=lambda _: None)
    left = sorted(p.name for p in processed.iterdir()) if processed.exists() else []
    assert [name for name in left if not name.startswith(DIGEST_CACHE)] == []


def test_a_refused_runs_digest_cache_is_what_the_next_run_reuses(tmp_path, monkeypatch):
    """What a refused run leaves in data.processed_dir: the digest cache (`.digests.json` and its
    lock), kept on purpose. The run's cache key hashed every landing file before the ingest refused
    the malformed one, and those digests hold while the files are unchanged: with the bad file
    removed (or fixed), the next run hashes none of the others again (gigabytes of good logs beside
    one bad export). Removing the cache at a refusal would only cost that hashing."""
    import os

    import pipelines.data as data_step
    from pipelines.run import run_pipeline
    from recsys.errors import DataError

    landing, processed = tmp_path / "landing", tmp_path / "processed"
    landing.mkdir()
    (landing / "a.csv").write_bytes(b"user_id,item_id\n\x00\x01\x02garbage\n")  # read first: refused
    _log(landing / "b.csv", [f"u{i}" for i in range(20)], [f"i{i % 5}" for i in range(20)], 1_700_000_000)
    for name in ("a.csv", "b.csv"):  # written well before their hashing (the cache's 2 s racy guard)
        os.utime(landing / name, (1_700_000_000, 1_700_000_000))
    hashed: list[str] = []

    def counted(path, *args, **kwargs):
        hashed.append(Path(path).name)
        return real(path, *args, **kwargs)

    real = data_step.file_digest
    monkeypatch.setattr(data_step, "file_digest", counted)
    cfg = load_config(None, [f'data.source="{landing}"', f'data.processed_dir="{processed}"',
                             "data.min_user_interactions=1", "data.min_item_interactions=1",
                             'models=[{name="pop", kind="popularity"}]'])  # fmt: skip
    with pytest.raises(DataError, match="binary content"):
        run_pipeline(cfg, tracking=False, log=lambda _: None)
    assert sorted(hashed) == ["a.csv", "b.csv"]
    assert sorted(p.name for p in processed.iterdir()) == [".digests.json", ".digests.json.lock"]
    (landing / "a.csv").unlink()
    hashed.clear()
    assert prepare_dataset(cfg).ingested_files == ["b.csv"]
    assert hashed == []  # b.csv's digest came from the refused run's cache


def test_landing_directory_reads_what_ingest_reads(tmp_path):
    """A `.pq` file is ingested (not skipped run after run), and a bzip2 file (an error) or an
    extensionless one (a warning) is named, as `recsys ingest DIR` does, instead of lying unread."""
    from recsys.errors import DataError, RecsysWarning

    landing = tmp_path / "landing"
    landing.mkdir()
    _log(landing / "day1.csv", ["a", "b"], ["x", "y"], 1_700_000_000)
    pl.DataFrame({"user_id": ["c"], "item_id": ["z"], "rating": [3.0]}).write_parquet(landing / "day2.pq")
    (landing / "000000_0").write_text("user_id,item_id\nd,w\n")  # Hive's extensionless data file
    (landing / "day3.csv").touch()  # being written: taken up once it holds something
    cfg = load_config(None, [f'data.source="{landing}"', f'data.processed_dir="{tmp_path / "processed"}"'])
    with pytest.warns(RecsysWarning, match=r"1 file\(s\) not read \(000000_0\)"):
        assert prepare_dataset(cfg).ingested_files == ["day1.csv", "day2.pq"]
    (landing / "000000_0").unlink()
    _log(landing / "day3.csv", ["e"], ["v"], 1_700_000_000)
    assert prepare_dataset(cfg).ingested_files == ["day3.csv"]
    (landing / "day3.csv.bz2").write_bytes(b"BZh91AY&SY")
    with pytest.raises(DataError, match=r"day3\.csv\.bz2\), which would be skipped"):
        prepare_dataset(cfg)


def _sets(tmp_path: Path) -> list[str]:
    out = []
    for item in [*TINY, f'data.processed_dir="{tmp_path / "processed"}"', f'data.raw_dir="{tmp_path / "raw"}"',
                 'models=[{name="pop", kind="popularity"}, {name="wals", kind="wals", factors=8, iterations=3, threads=1}]']:
        out += ["--set", item]
    return out


def test_train_then_evaluate_prints_metrics_with_intervals(tmp_path):
    runner = CliRunner()
    models = tmp_path / "models"
    trained = runner.invoke(app, ["train", *_sets(tmp_path), "--models", str(models)])
    assert trained.exit_code == 0, trained.output
    assert (models / "wals" / "config.json").is_file() and (models / "pop" / "factors.safetensors").is_file()
    assert "replaced" not in trained.output
    again = runner.invoke(app, ["train", *_sets(tmp_path), "--models", str(models), "--model", "pop"])
    assert again.exit_code == 0 and "(replaced the model saved there)" in " ".join(again.output.split())

    out = tmp_path / "eval.json"
    [next_line] = [line for line in trained.output.splitlines() if line.startswith("next: ")]
    command = shlex.split(next_line.removeprefix("next: "))  # what train says to run next, as printed
    assert command[:2] == ["recsys", "evaluate"]
    evaluated = runner.invoke(app, [*command[1:], "--json", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads(out.read_text())
    assert set(summary) == {"pop", "wals"}
    assert "folding@20" in evaluated.output and "folding@20" in summary["wals"]["folding"]  # planted blocks
    # the cells' `±0.011` explained, with its level, as under `recsys run`'s table
    assert "±half-width: 95% bootstrap interval over the test users (evaluation.confidence)" in evaluated.output
    assert "folding@20" not in summary["wals"]["metrics"]
    lo, hi = summary["wals"]["ci"]["recall@20"]
    assert lo <= summary["wals"]["metrics"]["recall@20"] <= hi
    assert summary["wals"]["metrics"]["recall@20"] > summary["pop"]["metrics"]["recall@20"]

    # another split.seed puts some of the models' training pairs in the test set: refused, not scored
    other = runner.invoke(app, ["evaluate", *_sets(tmp_path), "--set", "split.seed=7", "--models", str(models)])
    assert other.exit_code == 2 and "trained on another split" in other.output and "--train" in other.output


def test_train_tunes_a_model_with_a_tuning_section_as_run_does(tmp_path):
    """`recsys train` + `evaluate` give the metrics `recsys run --no-tracking` gives for the same
    config: a model with [models.tuning] is tuned there too (it once saved the untuned fit). The
    configured l2 is far too small, so trial 0 loses and the search's pick differs from the plain fit."""
    from pipelines.run import run_pipeline
    from recsys.cli.common import load_run_config

    ease = 'models=[{name="ease", kind="ease", l2=0.01, tuning={n_trials=3, space={l2=[0.01, 30.0]}}}]'
    sets = [*_sets(tmp_path)[:-2], "--set", ease]
    models, out = tmp_path / "models", tmp_path / "eval.json"
    runner = CliRunner()
    trained = runner.invoke(app, ["train", *sets, "--models", str(models)])
    assert trained.exit_code == 0, trained.output
    assert "tuned ease: 3 trials" in trained.output, trained.output
    assert json.loads((models / "ease" / "config.json").read_text())["config"]["l2"] == pytest.approx(30.0)
    evaluated = runner.invoke(app, ["evaluate", *sets, "--models", str(models), "--json", str(out)])
    assert evaluated.exit_code == 0, evaluated.output

    cfg = load_run_config(None, [item for item in sets if item != "--set"], default=True)  # as the CLI reads it
    [run] = run_pipeline(cfg, tracking=False, log=lambda _: None).models
    for name, value in json.loads(out.read_text())["ease"]["metrics"].items():
        assert value == pytest.approx(run.metrics[name], abs=1e-6), name


def test_train_refuses_an_unwritable_models_dir_and_unknown_names_before_any_work(tmp_path):
    """Both once surfaced after the data was prepared, the first only after a model had trained."""
    (tmp_path / "a-file").write_text("")
    runner = CliRunner()
    for args, says in [(["--models", str(tmp_path / "a-file")], "is a file"), (["--model", "nope"], "no model named")]:
        result = runner.invoke(app, ["train", *_sets(tmp_path), *args])
        assert result.exit_code == 2 and says in result.output, result.output
        assert not (tmp_path / "processed").exists()  # nothing ingested, nothing trained
    tuned = runner.invoke(app, ["tune", *_sets(tmp_path), "--model", "nope"])
    assert tuned.exit_code == 2 and not (tmp_path / "processed").exists()


def test_a_processed_source_ingested_with_other_data_settings_is_used_with_a_warning(tmp_path):
    """A processed data.source is used as it is: the config's k-core / aggregation are not applied
    again, so the same config on the raw log and on an ingested copy trained on different data."""
    runner = CliRunner()
    raw, processed = tmp_path / "log.csv", tmp_path / "mine"
    _log(raw, [f"u{i % 7}" for i in range(60)], [f"i{i % 11}" for i in range(60)], 1_700_000_000)
    assert runner.invoke(app, ["ingest", str(raw), "--out", str(processed)]).exit_code == 0  # built-in settings
    sets = [*_sets(tmp_path)[:-2], "--set", 'models=[{name="pop", kind="popularity"}]', "--set",
            f'data.source="{processed}"', "--set", "data.min_user_interactions=3"]  # fmt: skip
    trained = runner.invoke(app, ["train", *sets, "--models", str(tmp_path / "models")])
    assert trained.exit_code == 0, trained.output
    # 11 items: the default ks 20, 50, 100 hold every item a user can be ranked (recsys.sizes), said apart
    [warning] = [line for line in trained.output.splitlines()
                 if line.startswith("warning:") and not line.startswith("warning: evaluation.ks")]  # fmt: skip
    assert "min_user_interactions 1 (config: 3)" in warning and "recsys ingest" in warning


def test_event_weights_shape_the_processed_data_and_leave_older_directory_names_alone(tmp_path, monkeypatch):
    """data.event_weights changes what a processed directory holds: it names its own directory and
    a processed source ingested without it is flagged. A config that does not set it keeps the
    directory (and ingest cache key) it had before the setting existed, so a scheduled run's
    landing zone is not ingested afresh into a new directory after an upgrade."""
    from pipelines.data import dataset_dir, processed_as, source_fingerprint
    from recsys.config import DataConfig
    from recsys.data.ingest import ingest

    plain = DataConfig(source="data/raw/events.csv", positive_events=["transaction"])
    assert dataset_dir(plain).name == "events.csv-957fd286"  # the name before event_weights existed
    # The key moves with the reader version by design (test_reader_version.py), so it is pinned at
    # version 1 (806c30e9960f04c171de before the version was keyed on).
    monkeypatch.setattr("pipelines.data.READER_VERSION", 1)
    assert source_fingerprint(DataConfig()) == "b55f8e36026b1c6ce7a6"
    none_weighted = DataConfig(source="data/raw/events.csv", positive_events=["transaction"], event_weights={})
    assert dataset_dir(none_weighted) == dataset_dir(plain)  # an empty table weighs nothing: unset
    assert source_fingerprint(DataConfig(event_weights={})) == "b55f8e36026b1c6ce7a6"
    weighted = plain.model_copy(update={"event_weights": {"view": 1.0, "transaction": 5.0}})
    assert dataset_dir(weighted) != dataset_dir(plain)
    monkeypatch.undo()  # the directory below is of this code's readers
    raw = tmp_path / "events.csv"
    raw.write_text("timestamp,visitorid,event,itemid\n1433221332117,1,view,10\n1433221332118,1,transaction,10\n")
    ingest(raw, tmp_path / "plain", DataConfig())
    [warning] = processed_as(tmp_path / "plain", weighted.model_copy(update={"positive_events": None}))
    assert "event_weights None (config: {'view': 1.0, 'transaction': 5.0})" in warning


def test_exact_duplicates_keep_names_its_own_directory_and_leaves_the_default_alone(tmp_path, monkeypatch):
    """data.exact_duplicates = keep changes what a processed directory holds (repeats counted):
    its own directory, cache key and processed_as flag. The default quarantine keeps the names
    and keys a config had before the setting existed (pinned as in the event_weights test)."""
    from pipelines.data import dataset_dir, processed_as, source_fingerprint
    from recsys.config import DataConfig
    from recsys.data.ingest import ingest

    plain = DataConfig(source="data/raw/events.csv", positive_events=["transaction"])
    assert dataset_dir(plain).name == "events.csv-957fd286"
    assert dataset_dir(plain.model_copy(update={"exact_duplicates": "quarantine"})) == dataset_dir(plain)
    monkeypatch.setattr("pipelines.data.READER_VERSION", 1)  # pinned at version 1, as above
    assert source_fingerprint(DataConfig()) == "b55f8e36026b1c6ce7a6"
    kept = plain.model_copy(update={"exact_duplicates": "keep"})
    assert dataset_dir(kept) != dataset_dir(plain)
    assert source_fingerprint(DataConfig(exact_duplicates="keep")) != source_fingerprint(DataConfig())
    monkeypatch.undo()  # the directory below is of this code's readers
    raw = tmp_path / "clicks.csv"
    raw.write_text("user_id,item_id\na,x\na,x\nb,x\n")
    ingest(raw, tmp_path / "plain", DataConfig())
    assert processed_as(tmp_path / "plain", DataConfig()) == []
    [warning] = processed_as(tmp_path / "plain", DataConfig(exact_duplicates="keep"))
    assert "exact_duplicates 'quarantine' (config: 'keep')" in warning


def test_train_and_evaluate_skip_a_model_that_does_not_apply_as_run_does(tmp_path):
    """EASE above its catalogue bound: a run skips it and trains the rest; train stopped at it."""
    runner, models = CliRunner(), tmp_path / "models"
    sets = [*_sets(tmp_path)[:-2], "--set",
            'models=[{name="ease", kind="ease", max_items=10}, {name="pop", kind="popularity"}]']  # fmt: skip
    for command in (["train"], ["evaluate"]):
        result = runner.invoke(app, [*command, *sets, "--models", str(models)])
        assert result.exit_code == 0, result.output
        assert "warning: skipped ease: ease needs dense" in " ".join(result.output.split())  # the name once
        assert not (models / "ease").exists()
    assert (models / "pop" / "config.json").is_file()
    alone = runner.invoke(app, ["train", *sets, "--models", str(models), "--model", "ease"])
    assert alone.exit_code == 2 and "max_items" in alone.output  # named on its own: refused


def test_evaluate_without_saved_models_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", *_sets(tmp_path), "--models", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "no saved model" in result.output and "Traceback" not in result.output


def test_tune_searches_on_validation_and_writes_a_runnable_config(tmp_path, monkeypatch):
    """Also where it writes: `tuned-<config>-<model>.toml` in the current directory, said with its
    absolute path. It was `tuned.toml` for every config and model, replaced without a word by the
    next tune; an existing one is now refused before the search (without --force)."""
    monkeypatch.chdir(tmp_path)  # no --config: the shipped default.toml
    out = tmp_path / "tuned-default-wals.toml"
    result = CliRunner().invoke(app, ["tune", *_sets(tmp_path), "--model", "wals", "--trials", "3",
                                      "--set", "models.wals.tuning.n_trials=8"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and f"recsys run --config {out.name}" in result.output
    written = out.read_text()
    again = CliRunner().invoke(app, ["tune", *_sets(tmp_path), "--model", "wals", "--trials", "3"])
    assert again.exit_code == 2 and "exists" in again.output and "--force" in again.output, again.output
    assert "trial 0" not in again.output and out.read_text() == written  # refused before the search
    assert [f"trial {n}: complete" in result.output for n in range(3)] == [True] * 3  # every trial reported
    tuned = load_config(out)  # the written file is a valid config
    wals = tuned.model("wals")
    header = out.read_text().splitlines()[0]
    assert header.startswith("# tuned by") and "best validation recall@20" in header
    # From the default space, which also holds trial 0's configured factors = 8 and iterations = 3
    assert wals.factors in (8, 32, 64, 128) and 3 <= wals.iterations <= 25
    assert wals.tuning.enabled is False  # a run of the written config trains the winner, no new search
    assert tomllib.loads(out.read_text())["split"]["validation_fraction"] == pytest.approx(0.15)


@pytest.mark.parametrize("metric", ["recall", "foo@20", "recall@0"])
def test_tune_refuses_a_bad_metric_before_any_trial(tmp_path, metric):
    """A bad --metric once failed every trial (each a full fit) and advised raising n_trials."""
    from recsys.tuning import TuningConfig

    result = CliRunner().invoke(app, ["tune", *_sets(tmp_path), "--trials", "2", "--metric", metric])
    assert result.exit_code == 2 and "--metric" in result.output and "NAME@K" in result.output, result.output
    assert "trial 0" not in result.output and "n_trials" not in result.output
    with pytest.raises(ValueError, match="NAME@K"):  # in a config: [models.tuning] metric
        TuningConfig(metric=metric)


def test_tune_refuses_a_model_with_nothing_to_tune(tmp_path):
    result = CliRunner().invoke(app, ["tune", *_sets(tmp_path), "--model", "pop", "--trials", "1"])
    assert result.exit_code == 2 and "nothing to tune" in result.output
    # the config has no [models.tuning] for it: advising to "remove the tuning section" sent the user looking
    assert "remove the tuning section" not in result.output and "tune a model of another kind" in result.output


def test_models_are_submitted_longest_first_and_reported_in_config_order(tmp_path):
    """LPT scheduling: the two-tower starts first so it never queues behind quick models; the
    summary keeps the config's order."""
    from pipelines.run import longest_first, run_pipeline

    models = (
        'models=[{name="pop", kind="popularity"}, {name="wals", kind="wals", factors=4, iterations=2},'
        ' {name="tt", kind="two_tower", dim=8, epochs=1, batch_size=256, quiet=true}]'
    )
    sets = [*TINY, models, f'data.processed_dir="{tmp_path}"', f'data.raw_dir="{tmp_path / "raw"}"', "tracking.enabled=false"]
    cfg = load_config(None, sets)
    assert [m.name for m in longest_first(cfg.models)] == ["tt", "wals", "pop"]

    started: list[str] = []

    def record(fn, wave):
        started.extend(m.name for m in wave)
        return list(map(fn, wave))

    result = run_pipeline(cfg, tracking=False, map_models=record, log=lambda _: None)
    assert started == ["tt", "wals", "pop"]
    assert [m.name for m in result.models] == ["pop", "wals", "tt"]


def test_a_scheduled_run_splits_by_rolling_windows_when_every_interaction_has_a_time():
    """`recsys schedule` runs: rolling forward windows on a timed log, the stable hashed split on a
    log without timestamps (a time-based protocol cannot split it), the config as is on request."""
    from datetime import UTC, datetime

    import numpy as np
    import polars as pl

    from pipelines.run import scheduled_config
    from recsys.config import RunConfig
    from recsys.data.dataset import InteractionData

    def data(times: list) -> InteractionData:
        frame = pl.DataFrame({"user_idx": [0, 1], "item_idx": [0, 1], "weight": [1.0, 1.0],
                              "timestamp": pl.Series(times, dtype=pl.Datetime("us", "UTC"))})  # fmt: skip
        return InteractionData(frame, np.array(["a", "b"], dtype=object), np.array(["x", "y"], dtype=object))

    timed, untimed = data([datetime(2024, 1, 1, tzinfo=UTC)] * 2), data([None, None])
    random_cfg = RunConfig()
    assert scheduled_config(random_cfg, timed).split.protocol == "rolling"
    assert scheduled_config(random_cfg, untimed).split.protocol == "random"
    leave_last = RunConfig.model_validate({"split": {"protocol": "leave_last_n"}})
    assert scheduled_config(leave_last, untimed).split.protocol == "random"
    strong = RunConfig.model_validate({"split": {"protocol": "strong_generalization", "scheduled": "as_configured"}})
    assert scheduled_config(strong, timed).split.protocol == "strong_generalization"
    assert random_cfg.split.protocol == "random"  # the caller's config is not changed


def test_a_tuned_config_never_replaces_one_written_during_the_search(tmp_path):
    """Another tune wrote the same --out while this one searched (after its start-up check): that
    file is kept and this result goes beside it, whole; --force replaces. Writes are atomic."""
    from recsys.cli.model_cmds import write_tuned

    out = tmp_path / "tuned.toml"
    out.write_text("other = 1\n")  # appeared during the search
    assert write_tuned(out, "mine = 1\n") == tmp_path / "tuned.1.toml"
    assert write_tuned(out, "mine = 2\n") == tmp_path / "tuned.2.toml"
    assert out.read_text() == "other = 1\n" and (tmp_path / "tuned.2.toml").read_text() == "mine = 2\n"
    assert write_tuned(out, "forced = 1\n", force=True) == out and out.read_text() == "forced = 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned.1.toml", "tuned.2.toml", "tuned.toml"]


def test_two_writers_of_one_output_file_both_finish_and_leave_one_whole_file(tmp_path, monkeypatch):
    """A second `recsys tune --out` / `--json` writing the same file while the first renames: they
    shared `.<name>.tmp`, so the first's rename found it gone (exit 2 after all the work)."""
    import os

    from recsys.cli.common import write_text_atomic

    out = tmp_path / "tuned.toml"
    real_replace, calls = os.replace, []

    def replace_after_the_other_writer(src, dst):
        calls.append(dst)
        if len(calls) == 1:  # the other command writes the same output in between
            write_text_atomic(out, "second = 2\n")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_after_the_other_writer)
    write_text_atomic(out, "first = 1\n")
    assert out.read_text() == "first = 1\n" and [p.name for p in tmp_path.iterdir()] == ["tuned.toml"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_run_and_evaluate_warn_when_the_top_models_tie_on_few_test_users(tmp_path):
    """Two models the test set cannot tell apart (two popularity models: the same lists) on 98 test
    users: `recsys run` and `recsys evaluate` each say so in one `warning:` line naming the option
    that adds test users, where before only the table's intervals did."""
    runner = CliRunner()
    two = 'models=[{name="pop", kind="popularity"}, {name="pop2", kind="popularity"}]'
    sets = [two if item.startswith("models=") else item for item in _sets(tmp_path)]
    ran = runner.invoke(app, ["run", "--no-prefect", "--no-tracking", *sets, "--set", "folding.enabled=false"])
    evaluated = runner.invoke(app, ["evaluate", "--train", *sets, "--models", str(tmp_path / "models")])
    for result in (ran, evaluated):
        assert result.exit_code == 0, result.output
        [line] = [line for line in result.output.splitlines() if line.startswith("warning:")]
        assert line.startswith("warning: the best model is not significantly better than popularity on 98 test users: pop's")
        assert "ties with pop2" in line and line.endswith("(more data, or a larger split.test_fraction)")


def test_a_landing_zone_of_day_folders_gives_each_file_its_folders_day(tmp_path):
    """A scheduled run ingests a landing zone one file at a time, so `dt=2024-01-01/part-0.parquet`
    was read without its folder: no time (and `year=/month=/day=` folders likewise), and a day
    whose export held the same bytes as an earlier day's was passed over as a copy of it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    landing = tmp_path / "landing"
    day = pa.table({"user_id": ["a", "b", "c"], "item_id": ["x", "y", "x"]})
    for folder in ("dt=2024-01-01", "dt=2024-01-02", "year=2024/month=1/day=3"):
        (landing / folder).mkdir(parents=True)
        pq.write_table(day, landing / folder / "part-0.parquet")
    (landing / "dt=2024-01-04").mkdir()  # a CSV export beside them
    (landing / "dt=2024-01-04" / "part-0.csv").write_text("user_id,item_id\na,x\nb,y\nc,x\n")
    cfg = load_config(None, [f'data.source="{landing}"', f'data.processed_dir="{tmp_path / "processed"}"',
                             "data.min_user_interactions=1", "data.min_item_interactions=1"])  # fmt: skip
    result = prepare_dataset(cfg)
    assert len(result.ingested_files) == 4 and not result.passed_over
    rows = pl.read_parquet(Path(result.processed_dir) / "interactions" / "**" / "*.parquet")
    assert sorted({t.day for t in rows["timestamp"]}) == [1, 2, 3, 4] and rows.height == 12
    assert prepare_dataset(cfg).reused
