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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process umask (mkstemp / mkdtemp create 0600 / 0700; an output should get the mode a
    plain open() or mkdir gives)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path of this writer's own beside `path` for the caller to write (a writer that
    wants a file name, e.g. matplotlib's `savefig`); on success it gets a plain file's mode and is
    renamed onto `path`, on any error it is removed. `suffix` keeps a format-sniffing writer happy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `path` through a temp file of this writer's own beside it, then rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
