"""What a local source was when an ingest began: its files' stat and its content digest.

Two day-two problems share this record. An `--append` killed after its batch landed and then run
again must not add the batch twice (under data.exact_duplicates = "keep" nothing row by row tells
a re-run from real repeated events): ingest stores the source's content digest in the batch's
manifest entry, which is swapped in with the batch in one rename, so "rows landed" and "digest
recorded" never diverge, and a later append of the same content is refused. And a landing file
read while its producer was still writing it must never be recorded as ingested: the stat of each
file is taken before its content is hashed or read, and taken again once everything is staged,
just before the swap; a difference (size, mtime, inode, or the directory's listing) means the
bytes read are not the bytes hashed, so nothing is swapped in (`SourceChanged`).

Why stat, not a second hash: a second pass over multi-GB logs doubles the cost of every ingest,
while any write to a file moves its mtime (nanoseconds on current file systems) or its size.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from recsys.data.readers import list_source
from recsys.errors import DataError

Stat = tuple[str, int, int, int]  # (path, size, mtime_ns, inode)


class SourceChanged(DataError):
    """A source file changed between the moment ingest took its stamp and the moment its batch
    was about to be swapped in: it was (most likely) still being written, so what was read is not
    what was hashed, and nothing was written. A landing zone passes such a file over until it
    stops changing."""


@dataclass(frozen=True)
class SourceStamp:
    """A source's files' stat (taken first) and the content digest of those files (None where
    it was not worth hashing: see `ingest._stamp`)."""

    digest: str | None
    stats: tuple[Stat, ...]


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """Content hash of a raw file (blake2b, streamed: bounded memory for multi-GB logs)."""
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def source_paths(source: Path) -> list[Path] | None:
    """The files ingest reads for local `source`: itself when a regular file, a directory's data
    files (`list_source`), None for anything else (a FIFO is never hashed: it would block; the
    reader names it)."""
    if source.is_file():
        return [source]
    if source.is_dir():
        return list_source(source).files
    return None


def stat_files(paths: list[Path]) -> tuple[Stat, ...]:
    """(path, size, mtime_ns, inode) of each file; a file gone meanwhile reads as size -1."""
    stats = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            stats.append((str(path), -1, 0, 0))
            continue
        stats.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(stats)


def content_digest(source: Path, paths: list[Path], digests: list[str] | None = None) -> str:
    """The digest of a source's content: a file's own `file_digest`, or for a directory one hash
    of each data file's relative name and digest (`digests` when already known)."""
    if source.is_file():
        return digests[0] if digests else file_digest(source)
    known = digests or [file_digest(p) for p in paths]
    h = hashlib.blake2b(digest_size=16)
    for path, digest in zip(paths, known, strict=True):
        h.update(f"{path.relative_to(source).as_posix()}\0{digest}\n".encode())
    return h.hexdigest()


def take_stamp(source: Path) -> SourceStamp | None:
    """Stat `source`'s files, then hash them (in that order: a write during the hashing shows in
    `changed_files` later). None for a source that is neither a file nor a directory."""
    paths = source_paths(source)
    if paths is None:
        return None
    stats = stat_files(paths)
    return SourceStamp(content_digest(source, paths), stats)


def changed_files(stamp: SourceStamp, source: Path) -> list[str]:
    """The files of `source` whose stat differs from `stamp`'s, or that were added or removed
    since (a directory listed again); [] when it is as it was."""
    try:
        paths = source_paths(source) or []
    except DataError:
        paths = []
    now = dict((s[0], s) for s in stat_files(paths))
    then = dict((s[0], s) for s in stamp.stats)
    return sorted(name for name in now.keys() | then.keys() if now.get(name) != then.get(name))


def changed_error(source: object, changed: list[str]) -> SourceChanged:
    """The one-line error for a source that changed while it was read."""
    names = ", ".join(Path(n).name for n in changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return SourceChanged(
        f"{source}: changed while it was read ({names}: size or modification time moved, or files came or "
        "went), most likely still being written: nothing was written; run again once it is complete (producers: "
        "write under a hidden or _-prefixed name and rename it when complete)"
    )
