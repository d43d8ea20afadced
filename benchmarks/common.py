"""What every benchmark shares: where the shared data sets live and the provenance line of a section.

Every section of RESULTS.md says which commit it ran on (`stamp`), so a table can always be traced
to the code that produced it, and how to rerun it (`python -m benchmarks <name>`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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
    tmp = section.with_suffix(".md.tmp")
    tmp.write_text("\n".join([*kept, "", line]) + "\n")
    os.replace(tmp, section)
