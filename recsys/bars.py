"""One terminal progress display for the whole process, shared by every bar (two-tower epochs,
evaluation chunks) of every thread.

Why: `recsys run` trains and evaluates two models at once in worker threads, and each bar was a rich
`Progress` of its own. rich nests a live display started while another is running inside that one,
so when the first bar ended (a trial or an evaluation finished) the bars still running, and every
bar started later in the process, were drawn nowhere: on an ML-1M-shaped run the terminal showed no
bar for 225 of its 606 s while two-towers trained. Here bars are tasks of one `Progress`, started
with the first bar and stopped with the last, so a bar shows for as long as its work runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_LOCK = threading.Lock()
_SHARED: dict[str, Any] = {"progress": None, "bars": 0}


def _columns() -> list[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    return [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeRemainingColumn(),
    ]


@contextmanager
def shared_bar(description: str, total: int) -> Iterator[Any]:
    """A bar (a task of the process's one transient `Progress`, yielded with its id as
    `(progress, task)`) for as long as the block runs; callers decide whether to show one at all
    (a terminal, not quiet). Update it with `progress.update(task, advance=..., description=...,
    note=...)`: rich's task updates are thread-safe."""
    from rich.progress import Progress

    with _LOCK:
        if _SHARED["progress"] is None:
            progress = Progress(*_columns(), transient=True)
            progress.start()
            _SHARED["progress"] = progress
        _SHARED["bars"] += 1
        progress = _SHARED["progress"]
        task = progress.add_task(description, total=total, note="")
    try:
        yield progress, task
    finally:
        with _LOCK:
            progress.remove_task(task)
            _SHARED["bars"] -= 1
            if _SHARED["bars"] == 0:
                _SHARED["progress"] = None
                progress.stop()
