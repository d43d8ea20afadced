"""Explicit ratings with negative values turned into implicit positives.

Jester rates jokes -10.0..10.0 and Anime (CooperUnion's `rating.csv`) writes -1 for "watched, not
rated": a negative value there is a rating, not bad data. Under a positive rule (`--min-rating`) a row
below it is simply not positive, and under binarize / count each row is one interaction; only a
weight kept as a confidence cannot be negative, and there the quarantine says so in a `warning:` line.
A bulk quarantine of any other reason is named the same way. Replicas are a few rows written here,
in each log's shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import DataConfig
from recsys.data.ingest import ingest
from recsys.data.storage import load_processed

runner = CliRunner()

JESTER = [  # user, joke, rating: continuous, two decimals, -10..10
    (1, 5, "-9.81"), (1, 7, "5.00"), (1, 8, "8.16"), (2, 5, "-0.34"), (2, 7, "4.99"), (2, 9, "7.04"),
    (3, 7, "-10.00"), (3, 8, "10.00"), (3, 9, "-2.50"),
]  # fmt: skip
ANIME = [  # user_id, anime_id, rating: -1 = watched, not rated; else 1..10
    (1, 20, -1), (1, 24, -1), (1, 79, 9), (2, 20, 8), (2, 24, -1), (3, 79, -1), (3, 20, 10),
]  # fmt: skip


def _write(path: Path, header: str, rows: list[tuple]) -> Path:
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def _pairs(out: Path) -> dict[tuple[str, str], float]:
    data = load_processed(out)
    frame = data.interactions
    users = data.user_ids[frame["user_idx"].to_numpy()].tolist()
    items = data.item_ids[frame["item_idx"].to_numpy()].tolist()
    return dict(zip(zip(users, items, strict=True), frame["weight"].to_list(), strict=True))


def test_positive_rule_reads_negative_ratings_as_not_positive(tmp_path: Path) -> None:
    """Jester under `--min-rating 5`: every row is valid (none quarantined), the rule keeps the
    ratings >= 5 (5.00 included, 4.99 not), and no warning asks to scale the rule as if the column
    were 0-10 stars (its -10..10 has no such reading)."""
    source = _write(tmp_path / "jester.csv", "user_id,joke_id,rating", JESTER)
    report = ingest(source, tmp_path / "out", DataConfig(positive_min_weight=5))
    assert (report.rows_accepted, report.rows_quarantined) == (len(JESTER), 0)
    expected = {("1", "7"): 5.0, ("1", "8"): 8.16, ("2", "9"): 7.04, ("3", "8"): 10.0}
    assert _pairs(tmp_path / "out") == pytest.approx(expected, abs=1e-5)  # float32 weights
    assert [s.rows for s in report.steps][:2] == [len(JESTER), 4]
    assert not [w for w in report.warnings if "positive_min_weight" in w], report.warnings


def test_binarize_and_count_keep_watched_but_unrated_rows(tmp_path: Path) -> None:
    """Anime's -1 rows are interactions (the user watched it) when the config says so
    (data.negative_weights = interaction): binarize or count counts each."""
    source = _write(tmp_path / "rating.csv", "user_id,anime_id,rating", ANIME)
    every_pair = {(str(u), str(i)): 1.0 for u, i, _ in ANIME}
    for cfg in (DataConfig(binarize=True, negative_weights="interaction"),
                DataConfig(aggregate="count", negative_weights="interaction")):  # fmt: skip
        report = ingest(source, tmp_path / "out", cfg)
        assert report.rows_quarantined == 0, report.reasons
        assert _pairs(tmp_path / "out") == every_pair


def test_kept_weights_quarantine_negatives_with_a_warning(tmp_path: Path) -> None:
    """Without a rule the weights are confidences: the -1 rows stay quarantined, and the CLI
    names the reason, the count and the two options that read them."""
    source = _write(tmp_path / "rating.csv", "user_id,anime_id,rating", ANIME)
    result = runner.invoke(app, ["ingest", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["batches"][0]["reasons"] == {"negative_weight": 4}
    lines = [line for line in result.output.splitlines() if line.startswith("warning:") and "negative_weight" in line]
    assert len(lines) == 1, result.output
    assert "4 of 7 rows (57%)" in lines[0] and "--min-rating" in lines[0] and "data.binarize=true" in lines[0]
    assert "(source rows 1, 2, 5, 6)" in lines[0] and "data.negative_weights=interaction" in lines[0]
    quarantine = pl.read_parquet(tmp_path / "out" / manifest["batches"][0]["quarantine"])
    assert quarantine.height == 4


def test_rule_at_or_below_zero_drops_negative_confidences_as_a_step(tmp_path: Path) -> None:
    """`--min-rating -2` passes negative ratings the kept weights cannot hold: they are dropped as
    a reported step with a warning, never summed into a pair (2, 5 would weigh -0.34)."""
    source = _write(tmp_path / "jester.csv", "user_id,joke_id,rating", JESTER)
    report = ingest(source, tmp_path / "out", DataConfig(positive_min_weight=-2))
    assert [s.name.split(" (")[0] for s in report.steps] == ["validated", "positive", "weight >= 0", "aggregate"]
    assert [s.rows for s in report.steps] == [9, 6, 5, 5]
    assert min(_pairs(tmp_path / "out").values()) >= 0
    assert any("1 of 6 rows have a negative weight" in w and "--min-rating" in w for w in report.warnings)


def test_append_without_the_rule_does_not_sum_earlier_negatives(tmp_path: Path) -> None:
    """A batch ingested under binarize keeps its -1 rows; an append that keeps the weights must
    not add them into the pairs' confidences (u1's 20 would weigh 9 - 1)."""
    first = _write(tmp_path / "a.csv", "user_id,anime_id,rating", ANIME)
    second = _write(tmp_path / "b.csv", "user_id,anime_id,rating", [(1, 20, 9), (4, 79, 7)])
    out = tmp_path / "out"
    ingest(first, out, DataConfig(binarize=True, negative_weights="interaction"))
    report = ingest(second, out, DataConfig(), append=True)
    pairs = _pairs(out)
    assert pairs[("1", "20")] == 9.0 and min(pairs.values()) > 0
    assert any("negative weight" in w and "were dropped" in w for w in report.warnings)


def test_dwell_ms_column_is_read_as_the_weight(tmp_path: Path) -> None:
    """A `dwell_ms` column (dwell time in milliseconds) is the weight, not ignored as 1 per row."""
    source = _write(
        tmp_path / "dwell.csv", "user_id,item_id,dwell_ms,timestamp",
        [(1, 1, 1500, 1_600_000_000), (1, 2, 420_000, 1_600_000_100), (2, 1, 0, 1_600_000_200)],
    )  # fmt: skip
    report = ingest(source, tmp_path / "out", DataConfig())
    assert report.mapping.get("weight") == "dwell_ms"
    assert _pairs(tmp_path / "out") == {("1", "1"): 1500.0, ("1", "2"): 420_000.0}
    assert any("weigh 0 in column 'dwell_ms'" in w for w in report.warnings)


def test_a_bulk_quarantine_is_named_in_a_warning(tmp_path: Path) -> None:
    """A third of the rows with US dates: the summary table counts them, and a `warning:` line
    names the reason, the count, the first value and the option, as for any reason that takes a
    fifth or more of the rows (missing_user and negative_weight have their own)."""
    rows = [(k % 4, k % 5, 1 + k % 5, "09/13/2005" if k % 3 == 0 else 1_500_000_000 + k) for k in range(12)]
    source = _write(tmp_path / "log.csv", "user_id,item_id,rating,timestamp", rows)
    report = ingest(source, tmp_path / "out", DataConfig())
    assert report.reasons == {"bad_timestamp": 4}
    named = [w for w in report.warnings if "bad_timestamp" in w]
    assert len(named) == 1 and "4 of 12 rows (33%)" in named[0], report.warnings
    assert "'09/13/2005'" in named[0] and "--time-col" in named[0]


RETAIL = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom
536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom
536367,84879,ASSORTED COLOUR BIRD ORNAMENT,32,12/1/2010 8:34,1.69,13047,United Kingdom
C536379,D,Discount,-1,12/1/2010 9:41,27.5,14527,United Kingdom
C536383,35004C,SET OF 3 COLOURED  FLYING DUCKS,-1,12/1/2010 9:49,4.65,15311,United Kingdom
536384,35004C,SET OF 3 COLOURED  FLYING DUCKS,4,12/1/2010 9:53,4.65,15311,United Kingdom
C536391,22556,PLASTERS IN TIN CIRCUS PARADE ,-12,12/1/2010 10:24,1.65,17548,United Kingdom
"""  # UCI Online Retail's first rows and returns (InvoiceNo 'C...', negative Quantity), in its layout
RETAIL_ARGS = ["--user-col", "CustomerID", "--item-col", "StockCode", "--weight-col", "Quantity",
               "--time-col", "InvoiceDate", "--time-format", "%m/%d/%Y %H:%M"]  # fmt: skip


@pytest.mark.parametrize("counting", ["data.binarize=true", "data.aggregate=count"])
def test_returns_are_no_interactions_where_each_row_counts_one(tmp_path: Path, counting: str) -> None:
    """Online Retail's returns (negative Quantity) under binarize or count: each was counted as an
    interaction (a return read as a purchase, 14527's 'D' and 17548's 22556 kept as pairs) with no
    word. Now they are quarantined as negative_weight and one warning names the rows and the
    setting that counts them where a negative row does mark an interaction."""
    source = tmp_path / "Online Retail.csv"
    source.write_text(RETAIL)
    out = tmp_path / "out"
    result = runner.invoke(app, ["ingest", str(source), "--out", str(out), *RETAIL_ARGS, "--set", counting])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["batches"][0]["reasons"] == {"negative_weight": 3}
    assert set(_pairs(out)) == {("17850", "85123A"), ("17850", "71053"), ("13047", "84879"), ("15311", "35004C")}
    lines = [line for line in result.output.splitlines() if line.startswith("warning:") and "negative_weight" in line]
    assert len(lines) == 1, result.output
    assert "3 of 7 rows" in lines[0] and "(source rows 4, 5, 7)" in lines[0] and "a return" in lines[0]
    assert "--set data.negative_weights=interaction" in lines[0]


def test_an_append_under_binarize_does_not_count_an_earlier_batchs_returns(tmp_path: Path) -> None:
    """A first batch ingested with data.negative_weights = interaction keeps its -1 rows; an append
    under binarize with the default (a negative row is no interaction) re-derives the pairs from
    every batch: those rows are dropped as a reported step, not counted as interactions."""
    first = _write(tmp_path / "a.csv", "user_id,anime_id,rating", ANIME)
    second = _write(tmp_path / "b.csv", "user_id,anime_id,rating", [(4, 79, 7)])
    out = tmp_path / "out"
    ingest(first, out, DataConfig(binarize=True, negative_weights="interaction"))
    report = ingest(second, out, DataConfig(binarize=True), append=True)
    assert set(_pairs(out)) == {("1", "79"), ("2", "20"), ("3", "20"), ("4", "79")}
    assert [s.name.split(" (")[0] for s in report.steps][:2] == ["validated", "weight >= 0"]
    assert any("4 of 8 rows have a negative weight" in w and "data.negative_weights=interaction" in w
               for w in report.warnings), report.warnings  # fmt: skip
