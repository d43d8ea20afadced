"""Atomic file writes: every output file the package writes goes through a temp file and a rename.

Why one module: readers (a scheduler reading `--json`, `recsys evaluate` reading a summary) must
never see half a file, and two processes writing one output must not share a temp name (the second
rename found `.<name>.tmp` gone after all its work, or published the other's half-written text), so
each writer gets a temp file of its own from `mkstemp`, given the mode a plain `open()` would give.
A leaf module (no third-party imports): the CLI imports it at start-up.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask (mkstemp / mkdtemp create 0600 / 0700; an output should get the mode a
    plain open() or mkdir gives)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `path` through a temp file of this writer's own beside it, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
