"""Terminal tables fit 80-120 columns: every model name whole on its row, every mean whole, the
folding column named after the measure it holds; `--wide` keeps the full intervals."""

from __future__ import annotations

import re
from dataclasses import replace
from types import SimpleNamespace

import pytest
from rich.console import Console

from pipelines.report import comparison_markdown, comparison_table
from pipelines.run import ModelOutcome, PipelineResult
from recsys.config import load_config
from recsys.evaluation.evaluate import format_table

NAMES = ["popularity", "wals", "two_tower_bce", "two_tower_softmax", "two_tower_nce_with_a_long_name"]
METRICS = ["recall@20", "recall@50", "recall@100", "ndcg@20", "ndcg@50", "ndcg@100"]


def _render(table, width: int) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text().splitlines()


def _evaluation(i: int) -> SimpleNamespace:
    summary = {m: 0.1531 + i / 100 for m in METRICS}
    return SimpleNamespace(summary=summary, ci={m: (v - 0.0312, v + 0.0309) for m, v in summary.items()},
                           n_users_evaluated=943)  # fmt: skip


def _result(folding_key: str) -> PipelineResult:
    models = [
        ModelOutcome(name=n, kind="two_tower" if "tower" in n else n, loss="sampled_softmax" if "tower" in n else None,
                     sampler="popularity" if "tower" in n else None,
                     metrics={"recall@20": 0.4573 + i / 100, "ndcg@20": 0.3491, "recall@50": 0.6756, "coverage@20": 0.99},
                     ci={"recall@20": [0.4460, 0.4680], "ndcg@20": [0.34, 0.36], "recall@50": [0.66, 0.69]},
                     folding={folding_key: 0.017})
        for i, n in enumerate(NAMES)
    ]  # fmt: skip
    return PipelineResult(dataset={"split": "random", "users": 2000, "items": 1000}, models=models, champion="wals")


def _fits(lines: list[str], width: int) -> None:
    """Within the width, and no column cropped: every table row ends in the table's right border."""
    assert max(map(len, lines)) <= width
    assert not any("┃┃" in line for line in lines), "a column squeezed to nothing"
    for line in lines:
        if line.startswith(("│", "┃", "┏", "┡", "└")):
            assert line.rstrip().endswith(("│", "┃", "┓", "┩", "┘")), line


def _cells_whole(lines: list[str], texts: list[str]) -> None:
    for text in texts:
        assert any(text in line for line in lines), f"{text!r} is cut or wrapped"


@pytest.mark.parametrize("width", [80, 100, 120])
def test_evaluate_table_fits_and_keeps_names_and_means_whole(width):
    lines = _render(format_table({n: _evaluation(i) for i, n in enumerate(NAMES)}, METRICS, width=width), width)
    _fits(lines, width)
    _cells_whole(lines, NAMES + [f"{0.1531 + i / 100:.4f}" for i in range(len(NAMES))] + ["±0.031"])


def test_evaluate_table_wide_has_the_full_intervals():
    lines = _render(format_table({"wals": _evaluation(0)}, METRICS, wide=True), 400)
    _cells_whole(lines, ["0.1531 [0.1219, 0.1840]"])


@pytest.mark.parametrize("width", [80, 120])
def test_run_table_fits_keeps_names_whole_and_names_the_folding_measure(width):
    cfg = load_config("pipelines/configs/default.toml")
    found = _result("neighbour_cross_cluster@10")
    lines = _render(comparison_table(found, cfg, width=width), width)
    _fits(lines, width)
    _cells_whole(lines, [n for n in NAMES if n != "wals"] + ["wals *", "0.4573"])
    text = "\n".join(lines)
    assert "cross-cluster" in text and "folding@" not in text  # not called folding when it is not
    blocks = "\n".join(_render(comparison_table(_result("folding@20"), cfg, width=width), width))
    assert "folding@20" in blocks and "cross-cluster" not in blocks
    assert "| cross-cluster@10 |" in comparison_markdown(found, cfg)


def test_a_folding_measure_that_does_not_apply_is_a_dash_not_nan():
    """Popularity's one-dimensional vectors have no embedding view: folding reports nan, the table
    says "-" (it printed "nan" in the terminal and markdown)."""
    cfg = load_config("pipelines/configs/default.toml")
    found = _result("neighbour_cross_cluster@10")
    found.models[0] = replace(found.models[0], folding={"neighbour_cross_cluster@10": float("nan")})
    lines = _render(comparison_table(found, cfg, width=160), 160)
    cells = [cell.strip() for cell in next(line for line in lines if NAMES[0] in line).split("│")]
    assert cells[-3] == "-" and not any(re.search(r"\bnan\b", line) for line in lines)  # last: fit s
    markdown = comparison_markdown(found, cfg)
    assert not re.search(r"\bnan\b", markdown) and "0.017" in markdown


def test_compare_table_keeps_model_names_whole_at_80_columns():
    import datetime as dt

    import polars as pl

    from recsys.tracking.compare import rich_table

    frame = pl.DataFrame({
        "lineage": ["default:synthetic"] * 5, "split": ["random/0a1b2c3d"] * 5, "model": NAMES, "kind": ["two_tower"] * 5, "mean": [0.45] * 5, "ci_low": [0.44] * 5, "ci_high": [0.46] * 5,
        "delta_to_champion": [0.01] * 5, "champion": [False] * 5, "run_id": ["0123456789abcdef"] * 5,
        "started": [dt.datetime(2026, 1, 1)] * 5,
    })  # fmt: skip
    lines = _render(rich_table(frame, "recall@20", width=80), 80)
    _fits(lines, 80)
    _cells_whole(lines, NAMES)


@pytest.mark.parametrize("width", range(100, 141, 4))
def test_run_table_never_squeezes_a_column_to_an_ellipsis(width):
    """Short model names leave the run table a few columns too wide at ~120: rich squeezed the
    wrappable fit s column to one letter ("…" in every row). It is whole, or left out and named."""
    cfg = load_config("pipelines/configs/movielens.toml")
    found = _result("neighbour_cross_cluster@10")
    names = ["popularity", "wals", "tt"]
    found.models = [replace(m, name=n, loss=None, sampler=None) for m, n in zip(found.models[:3], names, strict=True)]
    lines = _render(comparison_table(found, cfg, width=width), width)
    _fits(lines, width)
    text = "\n".join(lines)
    assert "…" not in text
    assert "fit s" in text  # the column's header, or the caption naming it as left out


def _two_groups():
    import datetime as dt

    import polars as pl

    long = "movielens|/srv/shared/data/movielens/ml-100k/ml-100k.inter"
    return pl.DataFrame({
        "lineage": [long, long, "default|synthetic"], "split": ["54177b0b9e770dad"] * 2 + ["0a1b2c3d4e5f6a7b"],
        "model": ["wals", "popularity", "two_tower_nce"], "kind": ["wals", "popularity", "two_tower"],
        "mean": [0.37, 0.18, 0.52], "ci_low": [0.33, 0.15, 0.50], "ci_high": [0.40, 0.20, 0.54],
        "delta_to_champion": [0.0, -0.19, None], "champion": [True, False, False],
        "run_id": ["5027169e00", "e3cf82b200", "1ba7dec900"], "started": [dt.datetime(2026, 1, 1)] * 3,
    }), long  # fmt: skip


@pytest.mark.parametrize("width", [80, 120])
def test_compare_table_titles_each_group_with_its_whole_lineage(width):
    """The lineage (config name | data source path) was a column rich squeezed to one letter a line
    at 120 columns; each (lineage, split) group is now its own table under a title naming both."""
    from recsys.tracking.compare import rich_table

    frame, long = _two_groups()
    lines = _render(rich_table(frame, "recall@20", width=width), width)
    _fits(lines, width)
    text = "\n".join(lines)
    assert "…" not in text
    assert long.replace(" ", "") in "".join(line.strip() for line in lines[:4]).replace(" ", "")
    second = next(i for i, line in enumerate(lines) if "default|synthetic" in line)
    assert any("wals" in line for line in lines[:second]) and any("popularity" in line for line in lines[:second])
    assert all("two_tower_nce" not in line for line in lines[:second])
    assert any("two_tower_nce" in line for line in lines[second:])


def test_compare_markdown_escapes_the_pipe_in_a_lineage():
    """A lineage is 'name|source': unescaped, its '|' split the markdown row into one cell too many."""
    from recsys.tracking.compare import render

    frame, _ = _two_groups()
    rows = render(frame, "recall@20", "markdown").splitlines()
    cells = [len(row.replace("\\|", "").split("|")) for row in rows]
    assert len(set(cells)) == 1, rows
    assert "movielens\\|/srv/shared" in rows[2]


def test_the_cold_column_goes_first_and_is_absent_without_cold_users():
    """On the default config 1 of 2,000 test users is cold (the same popularity answer for every
    model): its column pushed loss / sampler and fit s out of a 120-column table."""
    cfg = load_config("pipelines/configs/default.toml")
    found = _result("folding@20")
    assert "cold recall@20" not in "\n".join(_render(comparison_table(found, cfg, width=220), 220))
    found.dataset["cold_test_users"] = 3
    assert "cold recall@20" in "\n".join(_render(comparison_table(found, cfg, width=220), 220))
    narrow = " ".join("\n".join(_render(comparison_table(found, cfg, width=100), 100)).split())
    assert "not shown at 100 columns: cold recall@20," in narrow


@pytest.mark.parametrize("width", [80, 120])
def test_a_skipped_models_reason_is_one_caption_line_not_a_column_of_words(width):
    """EASE skipped on a Last.fm-sized catalogue (17,632 artists): its ~300-character reason sat in
    the fit s cell and wrapped one word per line into ~30 table rows. The cell says `skipped`; the
    reason is under the table, whole, and the other models' rows stay together."""
    cfg = load_config("pipelines/configs/plays.toml")
    found = _result("neighbour_cross_cluster@10")
    reason = ("model 'ease': ease needs dense 17,632 x 17,632 matrices to fit (5.0 GB) and 0.1 GB of user vectors "
              "(1,892 users); the catalogue is above models.ease.max_items = 10,000: raise it if the machine has "
              "the memory, or use kind = \"wals\" (factorised: memory linear in the catalogue) [see models]")
    found.models.insert(1, ModelOutcome(name="ease", kind="ease", loss=None, sampler=None, status="skipped", error=reason))
    lines = _render(comparison_table(found, cfg, width=width), width)
    _fits(lines, width)
    body = [line for line in lines if line.startswith("│")]
    assert len(body) <= 2 * len(found.models)  # at most two lines a model (mean, then its interval)
    row = next(line for line in body if "ease" in line)
    assert "skipped" in row and "17,632" not in row
    flat = " ".join(" ".join(lines).split())
    assert "ease skipped: ease needs dense 17,632 x 17,632" in flat and "[see models]" in flat


@pytest.mark.parametrize("width", range(100, 141, 4))
def test_evaluate_table_never_squeezes_the_users_column_to_blank(width):
    """`recsys evaluate` on a Last.fm-shaped run (four models, recall/ndcg at 20/50/100) at 120
    columns drew the users column as an empty two-space strip, header and counts gone: rich shrank
    the wrappable column to its padding. It is whole, or left out and named in the caption."""
    names = ["popularity", "ease", "wals", "two_tower_softmax"]
    lines = _render(format_table({n: _evaluation(i) for i, n in enumerate(names)}, METRICS, width=width), width)
    _fits(lines, width)
    header = next(line for line in lines if line.startswith("┃"))
    assert "┃  ┃" not in header and "users" in "\n".join(lines)


def test_the_star_marks_this_runs_model_not_an_earlier_runs_champion_of_the_same_name():
    """An Amazon-reviews-shaped log run with movielens.toml after an ML-1M run (another lineage):
    the decision is `not comparable`, the line's champion stays the ML-1M WALS and this run's best on
    validation is popularity. The table starred this run's `wals` (the champion's name) while the
    line under it said popularity; the markdown called it `(champion)`. Promotion dicts as
    `pipelines.run.promote_best` returns them."""
    cfg = load_config("pipelines/configs/movielens.toml")
    foreign = {"decision": "not comparable", "promoted": False, "challenger": "popularity",
               "champion_run_id": "ml1m-wals-run", "reason": "not comparable: the challenger belongs to lineage ..."}
    result = replace(_result("neighbour_cross_cluster@10"), champion="wals", promotion=foreign)
    text = "\n".join(_render(comparison_table(result, cfg, width=120), 120))
    assert "popularity *" in text and "wals *" not in text
    markdown = comparison_markdown(result, cfg)
    assert "| popularity (best of this run, not promoted) |" in markdown and "(champion)" not in markdown
    promoted = replace(result, promotion={**foreign, "decision": "promoted", "challenger": "wals"})
    assert "wals *" in "\n".join(_render(comparison_table(promoted, cfg, width=120), 120))
    assert "| wals (champion) |" in comparison_markdown(promoted, cfg)


def test_the_run_tables_counts_carry_thousands_separators():
    """176985 users x 70151 items read as one long number; the terminal title and the markdown
    summary both group the digits."""
    result = _result("folding@20")
    result.dataset.update(users=176_985, items=70_151, train_interactions=1_234_567, test_interactions=89_012)
    cfg = load_config(None)
    assert "176,985 users x 70,151 items" in str(comparison_table(result, cfg).title)
    assert "Data: 176,985 users, 70,151 items, 1,234,567 train / 89,012 test" in comparison_markdown(result, cfg)



def test_piped_output_takes_its_width_from_columns():
    """A pipe has no width: tables are laid out for 120 columns there, unless COLUMNS says how wide
    (`COLUMNS=200 recsys compare | less` showed the 120-column table and told the user to widen the
    terminal)."""
    import os
    import subprocess
    import sys

    code = "from recsys.cli.common import console; print(console.width)"
    base = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    widths = [
        subprocess.run([sys.executable, "-c", code], env={**base, **extra}, capture_output=True, text=True, check=True).stdout.strip()
        for extra in ({"COLUMNS": "200"}, {})
    ]
    assert widths == ["200", "120"]


def test_the_run_table_says_what_level_its_intervals_are():
    """The cells' ± is the run's evaluation.confidence interval, which nothing on screen said (a run
    at 0.8 looked like a 95% one); the caption names it, in the shape the cells use."""
    found = _result("neighbour_cross_cluster@10")
    at_80 = load_config("pipelines/configs/default.toml", ["evaluation.confidence=0.8"])
    text = " ".join(" ".join(_render(comparison_table(found, at_80, width=120), 120)).split())
    assert "±half-width: 80% bootstrap interval over the test users (evaluation.confidence)" in text
    wide = " ".join(" ".join(_render(comparison_table(found, load_config("pipelines/configs/default.toml"), wide=True), 400)).split())
    assert "[low, high]: 95% bootstrap interval" in wide


def test_run_table_names_a_search_the_timeout_cut_short():
    """A two-tower search stopped by tuning.timeout_s (3 of 8 trials on a busy machine) chose other
    parameters than the run before, and the summary said nothing; its caption names it now. A
    search that ran its trials gets no line."""
    cfg = load_config("pipelines/configs/movielens.toml")
    found = _result("neighbour_cross_cluster@10")
    found.models[3] = replace(found.models[3], tuning={"timed_out": True, "trials": 3})
    found.models[1] = replace(found.models[1], tuning={"timed_out": False, "trials": 16})
    text = " ".join(" ".join(_render(comparison_table(found, cfg, width=120), 120)).split())
    assert (
        "two_tower_softmax: its search hit tuning.timeout_s = 240 s (3 of 8 trials ran, the last maybe cut short)"
        in text
    ), text
    assert "wals: its search" not in text


def test_run_table_names_a_learned_model_at_or_below_popularity():
    """A two-tower at recall@20 0.0774 beside popularity's 0.0935 (a Foursquare check-in log, its
    search cut to 2 trials) was said by the numbers only; the caption names it, and why where its
    search was cut short. Models above popularity get no line."""
    cfg = load_config("pipelines/configs/movielens.toml")
    found = _result("neighbour_cross_cluster@10")
    found.models[0] = replace(found.models[0], metrics={**found.models[0].metrics, "recall@20": 0.0935})
    found.models[3] = replace(found.models[3], metrics={**found.models[3].metrics, "recall@20": 0.0774},
                              tuning={"timed_out": True, "trials": 2})  # fmt: skip
    found.models[2] = replace(found.models[2], metrics={**found.models[2].metrics, "recall@20": 0.0935})
    text = " ".join(" ".join(_render(comparison_table(found, cfg, width=120), 120)).split())
    assert "two_tower_softmax is at or below popularity: recall@20 0.0774 vs 0.0935 (its search was cut short" in text, text
    assert "two_tower_bce is at or below popularity: recall@20 0.0935 vs 0.0935" in text, text
    assert "wals is at or below" not in text and "popularity is at or below" not in text
