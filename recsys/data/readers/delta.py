"""Delta Lake tables read as a directory of Parquet files: only the files the table holds now.

A Delta table's folder keeps the Parquet files of every version until a VACUUM: an overwrite, a
DELETE, an UPDATE, a MERGE or an OPTIMIZE writes new files and *removes* the old ones in its
transaction log (`_delta_log/`), leaving them on disk. Read as a plain directory, every row an
overwrite replaced was read again beside its replacement, with not a word said. The log's JSON
commits are replayed here (add, then remove, in version order) to keep the files the current
version holds; what the replay cannot follow is refused with the line that exports the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

from recsys.errors import DataError

DELTA_LOG = "_delta_log"

_EXPORT = (
    "export the table's current rows as Parquet, e.g. `pl.read_delta(DIR).write_parquet(NEW)` (with the "
    "deltalake package), and ingest NEW"
)


def delta_files(root: Path) -> set[str] | None:
    """The files (relative to `root`, as posix paths) that the Delta table at `root` holds now,
    or None when `root` has no `_delta_log/` (see `replay`)."""
    log = root / DELTA_LOG
    if not log.is_dir():
        return None
    return replay(str(root), [p.name for p in log.iterdir()], lambda name: (log / name).read_text(encoding="utf-8"))


def replay(root: str, names: list[str], read: Callable[[str], str]) -> set[str]:
    """The files a Delta table's current version holds, from the names of its `_delta_log/` entries
    and a reader of one by name (a local folder or an fsspec location). DataError where the JSON
    commits alone do not say: a log that starts at a checkpoint (its earlier commits cleaned up),
    a file with a deletion vector (rows deleted inside it), a file outside the folder."""
    commits = sorted(n for n in names if n.endswith(".json") and n[: -len(".json")].isdigit())
    checkpoint = any(".checkpoint" in n and n.endswith(".parquet") for n in names)
    if checkpoint or not commits or int(commits[0][: -len(".json")]) != 0:
        raise DataError(
            f"{root}: a Delta Lake table whose log starts at a checkpoint (or holds no commit), which is not "
            f"replayed, so which of its Parquet files it holds now is unknown here: {_EXPORT}"
        )
    active: dict[str, None] = {}
    for commit in commits:
        for number, line in enumerate(read(commit).splitlines(), start=1):
            action = _action(root, commit, number, line)
            if "add" in action:
                add = action["add"]
                if add.get("deletionVector"):
                    raise DataError(
                        f"{root}: a Delta Lake table with rows deleted inside its files (deletion vectors, "
                        f"{commit}), which a read of the files would bring back: {_EXPORT}"
                    )
                active[_relative(root, add["path"])] = None
            elif "remove" in action:
                active.pop(_relative(root, action["remove"]["path"]), None)
    return set(active)


def _action(root: str, commit: str, number: int, line: str) -> dict:
    """One line of a commit as its action ({} for a blank line); DataError for a line that is no
    action with a path (a commit cut short by a killed writer, or edited by hand)."""
    if not line.strip():
        return {}
    try:
        action = json.loads(line)
        for kind in ("add", "remove"):
            if kind in action and not isinstance(action[kind].get("path"), str):
                raise ValueError(f"its {kind} has no path")
    except (ValueError, AttributeError, TypeError) as exc:
        raise DataError(
            f"{root}: the Delta Lake table's log {DELTA_LOG}/{commit}, line {number}, is not a readable action "
            f"({exc}), so which Parquet files the table holds is unknown: {_EXPORT}"
        ) from None
    return action if isinstance(action, dict) else {}


def _relative(root: str, path: str) -> str:
    """A log action's path (a URI relative to the table, percent-encoded) as a relative posix path."""
    if "://" in path or path.startswith("/"):
        raise DataError(f"{root}: a Delta Lake table with files outside its folder ({path}): {_EXPORT}")
    return unquote(path)
