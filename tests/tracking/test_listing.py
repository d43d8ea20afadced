"""`recsys registry`'s table: cells are never cut; optional columns go first."""

from __future__ import annotations

import io

from rich.console import Console

from recsys.tracking.listing import RegisteredModelRow, VersionRow, rich_table


def _version(version: str, aliases: list[str], model: str) -> VersionRow:
    return VersionRow(version, aliases, model, "two_tower", 0.5219, "not comparable", "0123456789abcdef" * 2,
                      "b92930d174fb546e098aaf183e060149", "2026-12-05T21:00:00+00:00")  # fmt: skip


def test_a_narrow_terminal_drops_columns_instead_of_cutting_cells():
    """rich cut 'challenger' to 'challeng…' and the metric header to 'recall@…' at 120 columns."""
    models = [RegisteredModelRow("default-two_tower_softmax", "x", {"champion": "2", "challenger": "3"}, 3,
                                 [_version("3", ["challenger"], "two_tower_softmax"),
                                  _version("2", ["champion"], "two_tower_softmax")])]  # fmt: skip
    for width in (80, 100, 120):
        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
        console.print(rich_table(models, "recall@20", width=width))
        text = console.export_text()
        assert "…" not in text, text
        assert "challenger" in text and "recall@20" in text and "two_tower_softmax" in text
        assert max(len(line.rstrip()) for line in text.splitlines()) <= width
