"""Delta Lake tables read as a directory of Parquet files: only the files the table holds now.

A Delta table's folder keeps the Parquet files of every version until a VACUUM: an overwrite, a
DELETE, an UPDATE, a MERGE or an OPTIMIZE writes new files and *removes* the old ones in its
transaction log (`_delta_log/`), leaving them on disk. Read as a plain directory, every row an
overwrite replaced was read again beside its replacement, with not a word said. The log's JSON
commits are replayed here (add, then remove, in version order) to keep the files the current
version holds, from the latest checkpoint where the earlier commits were cleaned up; what the
replay cannot follow is refused with the line that exports the table.
"""

from __future__ import annotations

import json
import re
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
    return replay(str(root), [p.name for p in log.iterdir()], lambda name: (log / name).read_bytes())


_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")
_V2_CHECKPOINT = re.compile(r"^\d{20}\.checkpoint\.[0-9a-fA-F-]{36}\.(?:json|parquet)$")
LAST_CHECKPOINT = "_last_checkpoint"


def replay(root: str, names: list[str], read: Callable[[str], bytes]) -> set[str]:
    """The files a Delta table's current version holds, from the names of its `_delta_log/` entries
    and a reader of one's bytes by name (a local folder or an fsspec location).

    The JSON commits are replayed (add, then remove, in version order) from version 0 when the log
    still holds them all; a log whose earlier commits were cleaned up (Delta keeps 30 days of them,
    and a checkpoint every 10 commits) starts from its latest checkpoint instead: the checkpoint
    Parquet's `add` rows are the files of its version (its `remove` rows are tombstones, files gone
    already), then the JSON commits after it. `_last_checkpoint` names the checkpoint to start
    from; one it names that is not there (a cleanup since), or where it is missing, the latest
    checkpoint whose commits follow it all is taken. DataError where the log does not say: no
    checkpoint and no first commit, a gap in the commits, a checkpoint of parts not all there or
    not readable, a V2 checkpoint (its actions in sidecar files), a file with a deletion vector
    (rows deleted inside it), a file outside the folder."""
    commits = {int(m.group(1)): n for n in names if (m := _COMMIT.match(n))}
    if any(_V2_CHECKPOINT.match(n) for n in names):
        raise DataError(
            f"{root}: a Delta Lake table with a V2 checkpoint (its files listed in sidecar files), which is not "
            f"replayed here: {_EXPORT}"
        )
    latest = max(commits, default=-1)
    start, active = 0, dict[str, None]()
    if not _contiguous(commits, 0, latest):
        version = _checkpoint_version(root, names, commits, latest, read)
        start, active = version + 1, _checkpoint_files(root, names, version, read)
        latest = max(latest, version)
    for version in range(start, latest + 1):
        commit = commits[version]
        for number, line in enumerate(read(commit).decode("utf-8", "replace").splitlines(), start=1):
            action = _action(root, commit, number, line)
            if "add" in action:
                _no_deletion_vector(root, commit, action["add"].get("deletionVector"))
                active[_relative(root, action["add"]["path"])] = None
            elif "remove" in action:
                active.pop(_relative(root, action["remove"]["path"]), None)
    return set(active)


def _contiguous(commits: dict[int, str], first: int, last: int) -> bool:
    """Whether the log holds every commit from `first` to `last` (and at least one)."""
    return last >= first and all(v in commits for v in range(first, last + 1))


def _checkpoints(names: list[str]) -> dict[int, list[str]]:
    """version -> the names of its checkpoint's files, for each checkpoint whose parts are all
    there (a single-file checkpoint, or parts 1..n of n)."""
    parts: dict[tuple[int, int], set[int]] = {}
    files: dict[int, list[str]] = {}
    for name in sorted(names):
        found = _CHECKPOINT.match(name)
        if not found:
            continue
        version = int(found.group(1))
        of = int(found.group(3) or 1)
        parts.setdefault((version, of), set()).add(int(found.group(2) or 1))
        files.setdefault(version, []).append(name)
    whole = {v for (v, of), got in parts.items() if got == set(range(1, of + 1))}
    return {v: files[v] for v in whole}


def _checkpoint_version(
    root: str, names: list[str], commits: dict[int, str], latest: int, read: Callable[[str], bytes]
) -> int:
    """The version of the checkpoint to replay from (see `replay`); DataError when there is none
    the commits after it follow without a gap."""
    whole = _checkpoints(names)
    named = None
    if LAST_CHECKPOINT in names:
        try:
            named = int(json.loads(read(LAST_CHECKPOINT))["version"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            named = None  # a torn or odd pointer: the listing says the same, more slowly
    usable = [v for v in whole if v >= latest or _contiguous(commits, v + 1, latest)]
    if named in usable:
        return int(named)  # type: ignore[arg-type]
    if usable:
        return max(usable)
    if whole or any(_CHECKPOINT.match(n) for n in names):
        what = "its checkpoint's parts are not all there, or commits after it are missing"
    elif commits:
        first = min(commits)
        gap = next((v for v in range(first, latest + 1) if v not in commits), None)
        what = (
            f"commit {gap} is missing between {first} and {latest}" if gap is not None
            else f"it starts at commit {first}, with no checkpoint to start from"
        )
    else:
        what = "it holds no commit"
    raise DataError(
        f"{root}: a Delta Lake table whose log cannot be replayed ({what}), so which of its Parquet files it "
        f"holds now is unknown here: {_EXPORT}"
    )


def _checkpoint_files(root: str, names: list[str], version: int, read: Callable[[str], bytes]) -> dict[str, None]:
    """The files the checkpoint of `version` holds: the paths of its `add` rows, in order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    active: dict[str, None] = {}
    for name in _checkpoints(names)[version]:
        try:
            table = pq.read_table(pa.BufferReader(read(name)))
            rows = table.column("add").to_pylist() if "add" in table.column_names else []
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataError(
                f"{root}: the Delta Lake table's checkpoint {DELTA_LOG}/{name} is not readable Parquet ({exc}), so "
                f"which Parquet files the table holds is unknown: {_EXPORT}"
            ) from None
        for add in rows:
            if not add:
                continue
            if not isinstance(add.get("path"), str):
                raise DataError(
                    f"{root}: the Delta Lake table's checkpoint {DELTA_LOG}/{name} has an add row with no path: "
                    f"{_EXPORT}"
                )
            _no_deletion_vector(root, name, add.get("deletionVector"))
            active[_relative(root, add["path"])] = None
    return active


def _no_deletion_vector(root: str, entry: str, vector: object) -> None:
    """DataError for an add action (of log entry `entry`) whose file has rows deleted inside it."""
    if vector and (not isinstance(vector, dict) or any(v is not None for v in vector.values())):
        raise DataError(
            f"{root}: a Delta Lake table with rows deleted inside its files (deletion vectors, {entry}), which a "
            f"read of the files would bring back: {_EXPORT}"
        )


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
