"""What every benchmark shares: where the shared data sets live and the provenance line of a section.

Every section of RESULTS.md says which commit it ran on (`stamp`), so a table can always be traced
to the code that produced it, and how to rerun it (`python -m benchmarks <name>`).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from recsys.files import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RECSYS_SHARED_DIR", REPO.parent / "shared"))
"""The shared data folder beside the repo (never copied into it); `RECSYS_SHARED_DIR` points elsewhere."""
ML100K_INTER = SHARED / "data" / "ml-100k" / "ml-100k.inter"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
STAMP_PREFIX = "_Ran on commit "


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def commit_description() -> str:
    """`abc1234`, plus a note when code differs from it (result files themselves do not count)."""
    commit = _git("rev-parse", "--short=10", "HEAD") or "unknown"
    changed = _git("status", "--porcelain", "--", ".", ":!benchmarks/results", ":!benchmarks/RESULTS.md")
    return f"`{commit}`" + (" with uncommitted changes" if changed else "")


def stamp(name: str, commit: str) -> None:
    """Replace the provenance line at the end of `results/<name>.md` with this run's; `commit` is
    `commit_description()` taken when the run started (the tree may move while it runs)."""
    section = RESULTS_DIR / f"{name}.md"
    if not section.is_file():
        return
    load = os.getloadavg()[0]
    line = (
        f"{STAMP_PREFIX}{commit}, {os.cpu_count()} cores, load average {load:.1f} at the end; "
        f"rerun: `python -m benchmarks {name}`._"
    )
    kept = [x for x in section.read_text().rstrip("\n").split("\n") if not x.startswith(STAMP_PREFIX)]
    while kept and not kept[-1].strip():
        kept.pop()
    write_text_atomic(section, "\n".join([*kept, "", line]) + "\n")


@dataclass
class SetSections:
    """A per-data-set results file cut into what a partial rerun must keep: the summary row and the
    `### <set>` subsection of each data set, and the hand-written `### ...` blocks (verdicts)."""

    rows: dict[str, str] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)
    hand_written: list[str] = field(default_factory=list)


def read_set_sections(path: Path, names: Sequence[str]) -> SetSections:
    """Cut an earlier results file (see `SetSections`); `names` are the benchmark's data set names.

    A summary row is a table line whose first cell is a set's name; a subsection runs from its
    `### ` heading to the next one; the provenance line of `stamp` is dropped (the run rewrites it).
    """
    found = SetSections()
    if not path.is_file():
        return found
    text = "\n".join(x for x in path.read_text().split("\n") if not x.startswith(STAMP_PREFIX))
    for line in text.split("\n"):
        first = line.split("|")[1].strip() if line.startswith("|") and line.count("|") > 2 else ""
        if first in names:
            found.rows[first] = line
    for block in re.split(r"(?m)^(?=### )", text)[1:]:
        title = block.split("\n", 1)[0].removeprefix("### ").strip()
        if title in names:
            found.sections[title] = block.rstrip()
        else:
            found.hand_written.append(block.rstrip())
    return found


def write_set_sections(path: Path, head: Sequence[str], merged: SetSections) -> None:
    """Write a per-data-set results file: `head` (title, protocol, summary table), then the
    hand-written blocks and each set's subsection, in the layout `read_set_sections` cuts again."""
    lines = list(head)
    for block in [*merged.hand_written, *merged.sections.values()]:
        lines += [block, ""]
    write_text_atomic(path, "\n".join(lines).rstrip() + "\n")


def merge_set_sections(earlier: SetSections, now: SetSections, order: Sequence[str], commit: str) -> SetSections:
    """This run's sets, plus the earlier file's sets that this run did not redo, in `order`.

    Why: a run of some sets (`RECSYS_BENCH_SETS`, or a data file not given) used to rewrite the file
    with its sets alone, so earlier results and the hand-written verdict were merged back by hand.
    Each subsection names the commit it ran on; a kept verdict says which sets were rerun after it
    was written, since its numbers may no longer match them.
    """
    rows = {**earlier.rows, **now.rows}
    sections = {**earlier.sections, **now.sections}
    merged = SetSections(
        rows={n: rows[n] for n in order if n in rows},
        sections={n: sections[n] for n in order if n in sections},
    )
    rerun = [n for n in order if n in now.sections]
    for block in earlier.hand_written:
        heading, _, body = block.partition("\n")
        body = body.lstrip("\n")
        if rerun:  # earlier notes stay: each names the sets one later run redid
            body = f"{STALE_PREFIX}{', '.join(rerun)} rerun on {commit}: check its numbers against the tables._\n\n{body}"
        merged.hand_written.append(f"{heading}\n\n{body}".rstrip())
    return merged


STALE_PREFIX = "_Written by hand before "
