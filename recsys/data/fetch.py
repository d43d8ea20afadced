"""Public data sets (MovieLens, HetRec Last.fm from GroupLens): download once, verify, cache, unzip.

A download goes to `<archive>.part` and is renamed to its final name only after its SHA-256 matches
the published value, so a cached archive is always a complete, verified one; a mismatch leaves
nothing behind. Extraction goes to a temp directory that is renamed into place, so an extracted
folder is complete too. Offline machines pass `offline=` a zip or an extracted folder already on
disk; either lands in the cache (a folder's ratings file is linked or copied in), so a pipeline that
names the set in `data.source` finds it afterwards without the network. Only the standard library talks to the network (urllib), so no extra dependency is needed.
"""

from __future__ import annotations

import glob
import hashlib
import os
import secrets
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from recsys.data.public_sets import BASE_URL, DATASETS, HETREC_URL, DatasetName, PublicDataset  # noqa: F401
from recsys.errors import DataError
from recsys.files import announced_lock

CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60

SHA256: dict[str, str] = {
    # As published in tensorflow/datasets url_checksums/movielens.txt (sizes above likewise); the
    # ml-100k value is also the one used by several independent projects.
    "ml-100k.zip": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    "ml-1m.zip": "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    "ml-20m.zip": "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
    # As used by several independent loaders of the HetRec 2011 archive.
    "hetrec2011-lastfm-2k.zip": "6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c",
}
"""Expected archive checksums by file name; tests and mirrors may patch or extend this table."""


class DownloadFailed(DataError):
    """The archive could not be downloaded (offline machine, unreachable mirror)."""

    def __init__(self, message: str, url: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.url, self.reason = url, reason


def fetch(
    name: DatasetName,
    raw_dir: Path,
    *,
    offline: Path | None = None,
    base_url: str | None = None,
    console: Console | None = None,
) -> Path:
    """Return the path of the ratings file of `name`, downloading and extracting it if needed.

    Order of preference: an already-extracted copy under raw_dir; a verified archive under raw_dir;
    `offline` (a zip, checksum-verified, or an extracted folder, used in place); a download from
    `base_url` (default GroupLens). Every failure is a DataError naming the file or URL and the cause.
    """
    spec = _spec(name)
    raw_dir = Path(raw_dir)
    if offline is not None and not Path(offline).exists():
        raise DataError(f"{offline}: offline path does not exist")
    raw_dir.mkdir(parents=True, exist_ok=True)
    # One fetcher of a set at a time: two (`recsys data fetch` beside a `recsys run` naming the set)
    # both downloaded into the one `.part` file, and the second extraction removed the folder the
    # first had just put in place (`rmtree` of a complete copy another reader may be using).
    with _set_lock(raw_dir / f".fetch.{spec.folder}.lock", name, console):
        _remove_stale_staging(spec, raw_dir)
        if offline is not None:
            return _from_offline(spec, Path(offline), raw_dir)
        extracted = raw_dir / spec.folder / spec.ratings
        if extracted.is_file():
            return extracted
        archive = raw_dir / spec.archive
        if not archive.is_file():
            url = f"{(base_url or spec.base_url or BASE_URL).rstrip('/')}/{spec.archive}"
            _download(url, archive, SHA256.get(spec.archive), spec.size, console)
        else:
            _verify(archive, SHA256.get(spec.archive))
        return _extract(archive, spec, raw_dir)


@contextmanager
def _set_lock(path: Path, name: str, console: Console | None) -> Iterator[None]:
    """Hold one set's fetch lock, saying so when another fetcher has it: its download can take
    minutes (MovieLens 20M), which a `recsys run` naming the set would otherwise wait out silently."""
    say = (console or Console(stderr=True)).print
    with announced_lock(path, f"another fetch of {name}", say):
        yield


def _remove_stale_staging(spec: PublicDataset, raw_dir: Path) -> None:
    """What a fetcher of this set killed with SIGKILL left: its extraction staging folders (a whole
    unzipped archive each, 1 GB for MovieLens 20M, kept for ever), its partial download, and the
    temp copy of an offline folder's ratings file (`_into_cache`). Called with the set's lock held,
    so no live fetcher's files are among them."""
    for left in raw_dir.glob(f".{glob.escape(spec.folder)}.*.tmp"):
        shutil.rmtree(left, ignore_errors=True)
    for left in (raw_dir / spec.folder).glob(f".{glob.escape(spec.ratings)}.*.tmp"):
        left.unlink(missing_ok=True)
    (raw_dir / f"{spec.archive}.part").unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _spec(name: str) -> PublicDataset:
    if name not in DATASETS:
        raise DataError(f"unknown public data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def _from_offline(spec: PublicDataset, source: Path, raw_dir: Path) -> Path:
    if source.is_dir():
        for candidate in (source / spec.ratings, source / spec.folder / spec.ratings):
            if candidate.is_file():
                return _into_cache(candidate, raw_dir / spec.folder / spec.ratings)
        raise DataError(f"{source}: no {spec.ratings} in this folder or in {spec.folder}/ below it")
    if source.is_file():
        if source.name == spec.ratings and not zipfile.is_zipfile(source):
            # the set's interaction file alone (HetRec's user_artists.dat copied out of its zip):
            # it is what the folder form caches, so it is taken the same way
            return _into_cache(source, raw_dir / spec.folder / spec.ratings)
        if not zipfile.is_zipfile(source) and (source.name == spec.archive or source.suffix.lower() == ".zip"):
            # a .zip that is none (a partial or failed download, an HTML error page saved under the
            # name): "another interaction file needs no fetch: recsys ingest X.zip" sent the user on
            url = f"{(spec.base_url or BASE_URL).rstrip('/')}/{spec.archive}"
            raise DataError(
                f"{source}: not a zip archive (a partial or failed download?): download {url} again and pass it "
                f"to --offline, or its extracted folder"
            )
        if not zipfile.is_zipfile(source):
            raise DataError(
                f"{source}: --offline expects {spec.archive}, its extracted folder or its {spec.ratings}; "
                f"another interaction file needs no fetch: recsys ingest {source} (or recsys run --set "
                f"data.source={source})"
            )
        _verify(source, SHA256.get(spec.archive), expected_name=spec.archive)
        return _extract(source, spec, raw_dir)
    raise DataError(f"{source}: offline path does not exist")


def _into_cache(found: Path, cached: Path) -> Path:
    """Put an offline folder's ratings file where `fetch` looks first (a hard link when the file
    system allows, else a copy; written under a temp name and renamed, so never half there)."""
    if cached.is_file() and cached.stat().st_size == found.stat().st_size:
        return cached
    if cached.resolve() == found.resolve():
        return found
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = cached.with_name(f".{cached.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            os.link(found, staging)
        except OSError:
            shutil.copyfile(found, staging)
        os.replace(staging, cached)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise DataError(f"cannot copy {found} into the cache ({cached}: {exc.strerror or exc})") from None
    return cached


def _verify(path: Path, expected: str | None, expected_name: str | None = None) -> None:
    if expected is None:  # a data set without a published checksum: nothing to compare with
        return
    actual = sha256_of(path)
    if actual != expected:
        label = f"{path} (as {expected_name})" if expected_name else str(path)
        # what to do: the bare mismatch left a first-day user with two hashes and no next step
        hint = (f"not the published {expected_name} (a partial or repackaged copy?): download it again, or pass "
                "its unzipped folder to --offline" if expected_name
                else "the cached archive is damaged: delete it and run the fetch again")
        raise DataError(f"{label}: checksum mismatch: expected sha256 {expected}, got {actual}; {hint}")


def _download(url: str, target: Path, expected: str | None, size_hint: int, console: Console | None) -> None:
    """Stream `url` into target.part while hashing; rename to target only when the hash matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or size_hint)
            with _progress(console) as progress:
                task = progress.add_task(f"download {target.name}", total=total)
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.advance(task, len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DownloadFailed(
            f"{url}: download failed ({reason}); fetch it elsewhere and pass --offline PATH", url, str(reason)
        ) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if expected is not None and actual != expected:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"{url}: checksum mismatch: expected sha256 {expected}, got {actual}; the download was discarded"
        )
    os.replace(partial, target)


def _extract(archive: Path, spec: PublicDataset, raw_dir: Path) -> Path:
    """Unzip into a temp folder, locate the ratings file, and rename its folder into raw_dir."""
    final_dir = raw_dir / spec.folder
    if (final_dir / spec.ratings).is_file():
        return final_dir / spec.ratings
    raw_dir.mkdir(parents=True, exist_ok=True)
    staging = raw_dir / f".{spec.folder}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()  # not mkdtemp: its 0700 mode would stick to the renamed folder
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)  # zipfile strips absolute paths and '..' components
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{archive}: cannot unzip ({exc})") from None
        found = sorted(staging.rglob(spec.ratings), key=lambda p: len(p.parts))
        if not found:
            raise DataError(f"{archive}: no {spec.ratings} inside the archive")
        if final_dir.exists():  # an incomplete earlier extraction (no ratings file): replace it
            shutil.rmtree(final_dir)
        os.replace(found[0].parent, final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final_dir / spec.ratings


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=True,
    )
