"""Terminal tables that fit 80-120 columns: the model name column never shrinks (no wrap, as wide
as the longest name); when a table is too wide its cells are first stacked (the interval under the
mean), then optional columns are left out in a stated order and the caption says which. The full
`mean [low, high]` intervals are for `--wide` (or the markdown / CSV exports).

Every column is no-wrap and the layout decisions are made here, by rendering: rich's own
shrinking of wrappable columns can still crop the right-hand ones (seen with rich 14)."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

METRIC_MIN_WIDTH = 6  # "0.4573": a mean always stays on one line


def add_name_column(table: Table, header: str, names: Sequence[str], **style: str) -> None:
    """A left column that rich never shrinks or wraps: which row is which model stays readable."""
    width = max([len(header), *(len(n) for n in names)])
    table.add_column(header, no_wrap=True, min_width=width, **style)


STACKED = "+stacked"
"""First step of `fit_width`: build the table with stacked cells (interval under the mean)."""


def add_value_column(table: Table, header: str, wide: bool = False) -> None:
    """A right-aligned number column, header on one line."""
    table.add_column(header, justify="right", min_width=max(METRIC_MIN_WIDTH, len(header)), no_wrap=True)


def interval_cell(
    mean: float, low: float | None = None, high: float | None = None, wide: bool = False, stacked: bool = False
) -> str:
    """`0.4573 ±0.011` (half-width of the interval), `0.4573 [0.4460, 0.4680]` when wide; stacked
    puts the interval on a second line."""
    if low is None or high is None:
        return f"{mean:.4f}"
    interval = f"[{low:.4f}, {high:.4f}]" if wide else f"±{(high - low) / 2:.3f}"
    return f"{mean:.4f}{chr(10) if stacked else ' '}{interval}"


_EDGES = ("│", "┃", "┓", "┐", "┛", "┘", "┩", "┤", "╇")


def fits(table: Table, width: int) -> bool:
    """Whether `table` renders within `width` columns with every column whole. Rendered rather
    than measured: rich's minimum measurement misses cases where its layout still crops the
    right-hand columns (seen with rich 14), and a cropped row no longer ends in a border."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    rows = [line.rstrip() for line in console.export_text().splitlines()]
    if any("┃┃" in line or "┳┓" in line for line in rows):  # a column squeezed to nothing, still "bordered"
        return False
    return all(line.endswith(_EDGES) for line in rows if line.startswith(("│", "┃", "┏", "┡", "└", "┗")))


def fit_width(build: Callable[[set[str]], Table], optional: Sequence[str], width: int | None) -> Table:
    """`build(hidden)` with stacked cells (STACKED in `hidden`) and then as few of the `optional`
    columns (first = first to go) left out as `width` needs; the caption names the ones left out.
    `width=None`: everything on one line."""
    hidden: set[str] = set()
    table = build(hidden)
    if width is None:
        return table
    for name in [STACKED, *optional]:
        if fits(table, width):
            break
        hidden.add(name)
        table = build(hidden)
    if hidden - {STACKED}:
        note = f"not shown at {width} columns: {', '.join(n for n in optional if n in hidden)} (widen the terminal or set COLUMNS)"
        table.caption = f"{table.caption}\n{note}" if table.caption else note
    return table
