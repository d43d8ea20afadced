"""A partial rerun of a per-data-set benchmark keeps the other sets and the hand-written verdict."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench_generalization import ratios_from_section
from benchmarks.common import (
    STAMP_PREFIX,
    SetSections,
    merge_set_sections,
    read_set_sections,
    write_set_sections,
)

NAMES = ["set-a", "set-b"]
EARLIER = f"""## A benchmark

| data set | best |
|---|---|
| set-a | 1.00x |
| set-b | 2.00x |

### Verdict

Both fine.

### set-a

old a. Ran on `111`.

| model | recall@20 [95% CI] | vs reference |
|---|---:|---:|
| popularity | 0.1000 [0.0900, 0.1100] | 0.50x |
| wals | 0.3000 [0.2800, 0.3200] | 1.50x |
| **bare implicit (chosen on validation)** (reference) | 0.2000 [0.1800, 0.2200] | 1.00x |
| cluster oracle | 0.9000 | 4.50x |

### set-b

old b. Ran on `111`.

{STAMP_PREFIX}`111`._
"""


def test_a_rerun_of_one_set_keeps_the_other_and_flags_the_verdict(tmp_path: Path) -> None:
    path = tmp_path / "bench.md"
    path.write_text(EARLIER)
    earlier = read_set_sections(path, NAMES)
    now = SetSections(rows={"set-b": "| set-b | 3.00x |"}, sections={"set-b": "### set-b\n\nnew b. Ran on `222`."})

    merged = merge_set_sections(earlier, now, NAMES, "`222`")

    assert merged.rows == {"set-a": "| set-a | 1.00x |", "set-b": "| set-b | 3.00x |"}
    assert list(merged.sections) == NAMES
    assert "old a" in merged.sections["set-a"] and "new b" in merged.sections["set-b"]
    assert STAMP_PREFIX not in "".join(merged.sections.values())  # the run writes its own stamp
    (verdict,) = merged.hand_written
    assert verdict.startswith("### Verdict\n\n_Written by hand before set-b rerun on `222`")
    assert verdict.endswith("Both fine.")


def test_a_written_results_file_reads_back_as_the_sets_it_was_written_from(tmp_path: Path) -> None:
    """`write_set_sections` (both generalisation benchmarks) writes what `read_set_sections` cuts:
    a partial rerun finds every set and the verdict again."""
    path = tmp_path / "bench.md"
    path.write_text(EARLIER)
    earlier = read_set_sections(path, NAMES)
    out = tmp_path / "results" / "bench.md"
    head = ["## A benchmark", "", "| data set | best |", "|---|---|", *earlier.rows.values(), ""]

    write_set_sections(out, head, earlier)

    assert read_set_sections(out, NAMES) == earlier
    text = out.read_text()
    assert text.startswith("\n".join(head) + "\n### Verdict\n\nBoth fine.\n\n### set-a\n")
    assert text.endswith("old b. Ran on `111`.\n")  # one newline at the end, no blank line
    assert list(out.parent.iterdir()) == [out]  # no temp file left beside it


def test_the_plot_reads_ratios_to_the_reference_from_the_value_column(tmp_path: Path) -> None:
    path = tmp_path / "bench.md"
    path.write_text(EARLIER)
    text = read_set_sections(path, NAMES).sections["set-a"]
    ratios, popularity = ratios_from_section(text)
    assert list(ratios) == ["wals"]  # the oracle row after the reference is not a model of the run
    assert abs(ratios["wals"] - 1.5) < 1e-12 and abs(popularity - 0.5) < 1e-12  # 0.3 / 0.2 in floats



def test_citeulike_preparation_keeps_whole_libraries_of_the_first_users_up_to_the_cap(tmp_path: Path) -> None:
    import polars as pl
    import pytest

    from benchmarks.bench_generalization_real import citeulike_pairs

    users = tmp_path / "users.dat"
    # Each line: the number of articles, then their ids (the data set's layout); user 0 lists article 1 twice.
    users.write_text("4 3 1 4 1\n2 5 9\n4 2 6 5 3\n")
    out = citeulike_pairs(users, tmp_path / "prep", cap=5)
    rows = pl.read_csv(out).rows()
    # The leading counts are no articles; user 2's 4 pairs would pass the cap: dropped whole.
    assert rows == [(0, 3), (0, 1), (0, 4), (1, 5), (1, 9)]
    assert citeulike_pairs(users, tmp_path / "again", cap=5).read_bytes() == out.read_bytes()
    users.write_text("2 1 4\n5 9\n")  # a line whose first number is not its count: another layout
    with pytest.raises(ValueError, match="line 2 does not start with the number of articles"):
        citeulike_pairs(users, tmp_path / "other", cap=5)


def test_each_known_real_log_runs_its_config_and_a_missing_file_stops_the_run(tmp_path: Path, monkeypatch) -> None:
    import pytest

    import benchmarks.bench_generalization_real as real

    for log in real.KNOWN_LOGS:
        monkeypatch.delenv(log.variable, raising=False)
    assert real.given_logs() == []  # nothing named: every set keeps its last results
    ratings = tmp_path / "ratings.dat"
    ratings.write_text("1::10::8::1365029107\n")
    monkeypatch.setenv("RECSYS_BENCH_MOVIETWEETINGS", str(ratings))
    (log,) = real.given_logs()
    data_set = real.data_set(log, tmp_path)
    assert data_set.config.name == "movielens.toml" and data_set.config.is_file()
    assert "data.positive_min_weight=8" in data_set.overrides
    monkeypatch.setenv("RECSYS_BENCH_CITEULIKE", str(tmp_path / "missing.dat"))
    with pytest.raises(SystemExit, match="RECSYS_BENCH_CITEULIKE"):
        real.given_logs()


def test_chaos_checks_the_processed_directory_recsys_run_writes(tmp_path: Path) -> None:
    """`recsys run` without --config reads the shipped default.toml ([data] aggregate = count,
    min_item_interactions = 3), which names the processed directory; the check resolved the built-in
    defaults, looked in another directory and counted both landed batches lost."""
    from benchmarks.bench_chaos import run_data_dir, sets
    from pipelines.data import dataset_dir
    from recsys.cli.common import config_path
    from recsys.config import load_config

    args = sets([f'data.source="{tmp_path / "landing"}"', f'data.processed_dir="{tmp_path / "processed"}"'])
    overrides = [a for a in args if a != "--set"]
    assert run_data_dir(args) == dataset_dir(load_config(config_path(None), overrides).data)
    assert run_data_dir(args) != dataset_dir(load_config(None, overrides).data)


def test_replay_reports_a_scheduled_run_on_unchanged_inputs_as_no_decision() -> None:
    """A slice after which the inputs were unchanged trains nothing (orchestration.if_unchanged): no
    models, no challenger. The report says so, and the follow-up check of a promotion looks past it
    (it asked the store for a challenger run None)."""
    from benchmarks.bench_replay import follow_ups, report

    def at(n: int) -> dict:
        return {"number": n, "rows": 10, "start": 0.0, "end": 86400.0 * n, "seconds": 1.0}

    first = {"slice": at(1), "dataset": {}, "unchanged": None,
             "models": [{"mlflow_run_id": "r1", "name": "pop", "status": "ok", "metrics": {}}],
             "promotion": {"decision": "promoted", "reason": "promoted", "challenger_run_id": "r1", "compared_run_id": "r0"}}  # fmt: skip
    skipped = {"slice": at(2), "dataset": {}, "models": [], "unchanged": {"matches_run": "p1"},
               "promotion": {"champion": None, "promoted": False, "decision": "", "reason": "not decided: nothing trained"}}  # fmt: skip
    assert follow_ups(None, [first, skipped], None) == []
    text = report([first, skipped], [], (1, 1, 0), 60.0, (1.0, 1.0), "abc")
    assert "| 2 | 1970-01-02 | - / - | (none) | - | - | - | - | unchanged: nothing trained | - |" in text
    assert "0 not comparable (1 scheduled run(s) found the inputs of the last run unchanged" in text


def test_the_generalization_reference_is_scored_on_the_targets_the_runs_models_are():
    """The bare-implicit reference's targets are the pipeline's warm ones: no test interaction on an
    item without training data (nothing can rank it) and no held-out user without a history.
    Scored on the whole truth, the reference was charged for those and every ratio ran high."""
    import numpy as np
    import scipy.sparse as sp

    from benchmarks.bench_generalization import eval_sets
    from recsys.data.split import Split
    from recsys.evaluation.cold import divide_test

    def csr(rows: dict[int, list[int]]) -> sp.csr_matrix:
        cells = [(u, i) for u, items in rows.items() for i in items]
        users, items = zip(*cells, strict=True)
        return sp.csr_matrix((np.ones(len(cells), np.float32), (users, items)), shape=(4, 6))

    split = Split(protocol="rolling", train=csr({0: [0, 1, 4], 1: [2, 3]}), validation=csr({2: [3], 0: [5]}),
                  test=csr({0: [3, 5], 1: [4], 2: [0], 3: [1, 5]}))  # fmt: skip
    validation, test = eval_sets(split)
    warm = divide_test(split).warm
    assert test.truth[0].indices.tolist() == [3]  # item 5 has no training data
    assert test.users.tolist() == [0, 1] == warm.users.tolist()  # users 2 and 3 have no history
    assert test.masked_items is not None and test.masked_items[5]
    assert 5 not in validation.truth.indices  # validation's cold item left out as well
