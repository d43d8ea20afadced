"""fsspec URLs as data sources: resolve, list, open and version files without reading their bytes.

Interaction logs at scale sit in partitioned Parquet, often in object storage. `data.source` may
therefore be a URL (`file:///data/events/`, `s3://bucket/events/`, `memory://...`): fsspec knows
how to list and open it, and `info()` gives each file's size and a version tag (ETag, generation,
mtime) from metadata alone, so a scheduled run can tell what is new without downloading anything.

`file://` URLs resolve to ordinary paths and take exactly the local code path (same formats, same
content digests, same results as the plain path). Other protocols are read through fsspec file
objects, Parquet only (see `recsys.data.readers`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote

from recsys.errors import DataError

if TYPE_CHECKING:  # fsspec is imported only when a URL is actually used
    from fsspec import AbstractFileSystem

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
# pathlib collapses '//' so a URL given as a CLI Path argument arrives as 'file:/x' or 's3:/bucket/k'.
# A scheme of two or more letters keeps Windows drive letters ('C:/') out.
_MANGLED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)")
LOCAL_PROTOCOLS = frozenset({"file", "local"})
# info() keys that change whenever the object's content does, most specific first.
_VERSION_KEYS = ("ETag", "etag", "md5", "md5Hash", "crc32c", "generation", "version_id", "VersionId")
_TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")


def as_url(source: str | PurePath) -> str | None:
    """The URL that `source` names, or None for a plain path.

    A URL that went through pathlib lost one slash (Path('file:///x') is 'file:/x'); it is restored
    so `recsys ingest file:///data/dir` works although the CLI argument is a Path."""
    text = str(source)
    if _URL.match(text):
        return text
    if isinstance(source, PurePath):
        match = _MANGLED.match(text)
        if match:
            scheme, rest = match.group(1), text[match.end() :]
            return f"{scheme}:///{rest}" if scheme.lower() in LOCAL_PROTOCOLS else f"{scheme}://{rest}"
    return None


def local_path_of(source: str | PurePath) -> str | PurePath:
    """`source` with a file:// URL replaced by its plain path, so it takes the local code path in
    full (README: "`file:///...` reads like a path"): ingest read such a URL through fsspec, so a
    UTF-16 file or `--encoding latin-1` was not decoded, an `--append` recorded no content digest
    (a retried one added its batch twice) and the source was not held against a rewrite. Other
    sources are returned as they are; a bad file:// URL is the one-line DataError of `resolve`."""
    url = as_url(source)
    if url is None or url.split(":", 1)[0].lower() not in LOCAL_PROTOCOLS:
        return source
    return resolve(url).local_path


@dataclass(frozen=True)
class RemoteFile:
    """One data file behind a URL: `name` is its path relative to the source directory (or its base
    name for a single-file source), `version` is size + version tag from metadata."""

    path: str
    name: str
    size: int
    version: str


@dataclass(frozen=True)
class Location:
    """A resolved URL: the fsspec filesystem, the path within it, and whether it is a directory."""

    url: str
    fs: AbstractFileSystem
    path: str
    is_dir: bool

    @property
    def protocol(self) -> str:
        protocol = self.fs.protocol
        return protocol[0] if isinstance(protocol, tuple | list) else str(protocol)

    @property
    def is_local(self) -> bool:
        return self.protocol in LOCAL_PROTOCOLS

    @property
    def local_path(self) -> Path:
        """The ordinary path of a local (file://) location."""
        if not self.is_local:
            raise DataError(f"{self.url}: not a local URL")
        return Path(self.path)

    def url_of(self, path: str) -> str:
        """A URL for one file of this location (to ingest it on its own)."""
        return str(self.fs.unstrip_protocol(path))

    def open(self, path: str) -> IO[bytes]:
        try:
            return self.fs.open(path, "rb")
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.url_of(path)}: cannot open ({exc.__class__.__name__}: {exc})") from None

    def files(self, suffixes: tuple[str, ...]) -> list[RemoteFile]:
        """The data files under this location (or the file itself), in name order. Hidden and
        `_`-prefixed names (`_SUCCESS`, `_metadata`) and everything below such a directory
        (`_temporary/`, `_delta_log/`) are skipped like in a local directory."""
        if not self.is_dir:
            info = self.fs.info(self.path)
            return [_remote_file(self.path, PurePosixPath(self.path).name, info)]
        try:
            found: dict[str, dict[str, Any]] = self.fs.find(self.path, withdirs=False, detail=True)
        except OSError as exc:
            raise DataError(f"{self.url}: cannot list ({exc.__class__.__name__}: {exc})") from None
        root = PurePosixPath(self.path)
        files = []
        for path, info in sorted(found.items()):
            relative = PurePosixPath(path).relative_to(root)
            name = relative.name
            hidden = any(part.startswith((".", "_")) for part in relative.parts)
            if hidden or not name.lower().endswith(suffixes):
                continue
            files.append(_remote_file(path, relative.as_posix(), info))
        if not files:
            raise DataError(f"{self.url}: holds no supported data files ({', '.join(suffixes)})")
        return files


def _remote_file(path: str, name: str, info: dict[str, Any]) -> RemoteFile:
    tag = next((str(info[k]) for k in _VERSION_KEYS if info.get(k) not in (None, "")), None)
    if tag is None:
        tag = next((str(info[k]) for k in _TIME_KEYS if info.get(k) not in (None, "")), "")
    size = int(info.get("size") or 0)
    return RemoteFile(path=path, name=name, size=size, version=f"{size}:{tag}")


def resolve(url: str) -> Location:
    """Resolve `url` with fsspec; an unknown protocol, a missing optional backend or a missing path
    is a one-line DataError naming the URL."""
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec ships with the project
        raise DataError(f"{url}: URL sources need the fsspec package") from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError) as exc:
        raise DataError(f"{url}: cannot open URL ({exc})") from None
    info = _info(url, fs, path)
    if info is None and unquote(path) != path:
        # file URIs are percent-encoded (Path.as_uri() writes 'part=1' as 'part%3D1'); fsspec
        # does not decode them, so try the decoded path before calling it missing.
        path = unquote(path)
        info = _info(url, fs, path)
    if info is None:
        raise DataError(f"{url}: no such file or directory")
    return Location(url=url, fs=fs, path=path, is_dir=info.get("type") == "directory")


def _info(url: str, fs: AbstractFileSystem, path: str) -> dict[str, Any] | None:
    try:
        return fs.info(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataError(f"{url}: cannot read ({exc.__class__.__name__}: {exc})") from None
