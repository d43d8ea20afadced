"""Rows with more fields than the header (an unquoted separator inside a value) are quarantined as
`extra_fields`, never cut short without a word; a trailing separator loses nothing and is kept."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys.data.ingest import read_canonical


def _by_row(quarantine: pl.DataFrame) -> dict[int, str]:
    return dict(zip(quarantine["source_row"].to_list(), quarantine["reason"].to_list(), strict=True))


@pytest.mark.parametrize("typed", [True, False], ids=["integer-log", "text-log"])
def test_a_row_with_an_extra_field_is_quarantined_with_its_row_number(tmp_path: Path, typed: bool) -> None:
    """Every column mapped; rows 3 and 7 have a field too many (row 7 after a blank line, which is
    no row but keeps its number). Integer logs take the typed read first, text logs the text read;
    both end in the rebuild that finds the rows."""
    user = (lambda i: str(i)) if typed else (lambda i: f"u{i}")
    lines = [f"{user(i)},{i + 10},4,88125094{i}" for i in range(1, 10)]
    lines[2] = f"{user(3)},13,Toy Story, The,5"  # shifted: the rating column would read "Toy Story"
    lines[4] = f"{user(5)},15,4,881250945,"  # a trailing separator: nothing lost
    lines.insert(5, "")  # a blank line: row 6
    lines[6] = f"{user(7)},17,4,881250947,tag"  # the row numbered 7
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(lines) + "\n")
    accepted, quarantine, rows_in = read_canonical(path)
    assert _by_row(quarantine) == {3: "extra_fields", 7: "extra_fields"}
    assert quarantine.filter(pl.col("source_row") == 3)["weight"].item() == "Toy Story"  # the text as read
    assert rows_in == accepted.height + quarantine.height == 9
    assert sorted(accepted["source_row"].to_list()) == [1, 2, 4, 5, 8, 9, 10]
    kept = accepted.filter(pl.col("source_row") == 5)
    assert kept["weight"].item() == 4.0 and kept["item_id"].cast(pl.String).item() == "15"


def test_a_headerless_tab_file_with_an_extra_field_quarantines_that_row(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\tx\n22\t377\t1\t878887116\n")
    accepted, quarantine, rows_in = read_canonical(path)
    assert _by_row(quarantine) == {2: "extra_fields"}
    assert (rows_in, accepted.height) == (3, 2)


def test_a_tab_file_read_unquoted_also_quarantines_rows_with_extra_fields(tmp_path: Path) -> None:
    """A field that starts with a quote fails the quoted read; the unquoted rebuild reads it and
    still finds the row with a field too many."""
    path = tmp_path / "plays.tsv"
    path.write_text(
        'user\titem\tplays\nu1\t"Weird Al" Yankovic\t3\nu2\tMuse\t4\tZ\nu3\tBjörk\t5\n'
    )
    accepted, quarantine, rows_in = read_canonical(path)
    assert _by_row(quarantine) == {2: "extra_fields"}
    assert sorted(accepted["item_id"].to_list()) == ['"Weird Al" Yankovic', "Björk"]
    assert rows_in == 3


def test_a_ratings_dat_row_with_an_extra_field_is_quarantined(tmp_path: Path) -> None:
    """`::` files split on ':' with empty gap columns that are never read, so polars' own field
    count check never ran: the fifth field was dropped and the row accepted."""
    path = tmp_path / "ratings.dat"
    path.write_text("1::1193::5::978300760\n1::661::3::978302109::x\n2::3408::4::978300275\n")
    accepted, quarantine, rows_in = read_canonical(path)
    assert _by_row(quarantine) == {2: "extra_fields"}
    assert (rows_in, accepted["item_id"].to_list()) == (3, ["1193", "3408"])
