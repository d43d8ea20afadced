"""Step: turn `data.source` into a processed data directory, and a processed directory into a split.

Sources: "synthetic" (the planted-cluster generator, whose clusters become folding blocks), a
processed directory (has manifest.json, e.g. the output of `recsys data combine`), or raw files in
any supported format. A directory of raw files is a landing zone: each run ingests only the files
it has not seen (append, stable vocab), which is how scheduled runs pick up new logs.

The source may be an fsspec URL. `file://` is the local path under another name (same digests, same
processed data). For other protocols (object storage) files are told apart by size + version tag
from fsspec `info()` (ETag, generation, mtime), so deciding what is new never downloads a byte;
the files are then read as Parquet through fsspec.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from recsys.config import DataConfig, RunConfig, SplitConfig
from recsys.data.dataset import InteractionData
from recsys.data.readers import DATA_SUFFIXES, READER_VERSION, list_source, warn_unread
from recsys.data.remote import Location, as_url, resolve
from recsys.data.source_stamp import (
    SourceChanged,
    SourceStamp,
    changed_error,
    changed_files,
    file_digest,
    stat_files,
)
from recsys.errors import AlreadyIngested, DataError, NoDataRows, RecsysWarning

if TYPE_CHECKING:  # `recsys ingest` imports this module (SHAPING): scipy.sparse comes with a split
    from recsys.data.ingest import IngestReport
    from recsys.data.split import Split

LEDGER = "sources.json"  # which raw files (name, size, content hash) a processed dir holds


@dataclass
class DatasetResult:
    """What the data step produced: a processed directory and what was done to get it."""

    processed_dir: str
    fingerprint: str
    source_fingerprint: str
    ingested_files: list[str] = field(default_factory=list)
    reused: bool = False  # nothing new: the processed dir was already up to date
    report: dict = field(default_factory=dict)  # the last ingest's summary, if any
    warnings: list[str] = field(default_factory=list)  # about this use of the data (see processed_as)
    # Landing files this run left for a later one (still being written, no rows yet, a copy): a
    # cached result that names any is not reused, or a file rewritten with the same bytes (same
    # cache key) would never be read.
    passed_over: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def is_processed_dir(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


def source_files(source: Path) -> list[Path]:
    """Raw files behind a source, in a stable order (a file, or a landing directory's files)."""
    if source.is_file():
        return [source]
    if source.is_dir():
        # The reader's own listing: the same suffixes (`.pq` too), and compressed files it does
        # not open (`.bz2`, `.zst`) named rather than skipped run after run.
        listing = list_source(source)
        warn_unread(source, listing)
        return listing.files
    raise _missing(source)


def _missing(source: Path) -> DataError:
    return DataError(f"{source}: no such file or directory{_public_hint(source)}", setting="data.source", value="PATH")


def _public_hint(source: Path) -> str:
    """What to say about a data.source that is no path: a bare word may be a misspelt public set
    (`movielens-100` for `movielens-100k`), which would otherwise read as a missing file."""
    import difflib

    from recsys.data.fetch import DATASETS

    if len(source.parts) > 1 or source.suffix:
        return "; give {option}"
    close = difflib.get_close_matches(str(source), list(DATASETS), n=1, cutoff=0.6)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f" and no public data set: {guess}the public sets are {', '.join(DATASETS)}; or give {{option}}"


DIGEST_CACHE = ".digests.json"  # in data.processed_dir: raw file -> (size, mtime, inode, digest)
_RACY_NS = 2_000_000_000  # a file changed this close to its hashing is hashed again (coarse clocks)


class DigestCache:
    """Content digests of raw files, reused while a file's size, mtime and inode are unchanged.

    Every run decides what is new by content hash, and a run hashed each landing file two or three
    times (the source fingerprint, the ledger check, Prefect's cache key): ~18 s a pass for 10 GB
    of logs that had not changed since yesterday. The stat rule is git's index rule, with its
    "racily clean" guard: an entry is trusted only when the file's mtime lies well before the moment
    hashing began, so a write during or just before the hashing (same mtime on a coarse clock) is
    hashed again. A lost or corrupt cache only costs the hashing again.

    Several runs share one cache (every data set under `data.processed_dir`, and a run's source
    fingerprint is taken outside any data set's writer lock): `save` holds the cache's own lock
    (`.digests.json.lock`), reads the file again and writes it merged with this run's new entries,
    so two runs saving at once both keep theirs (a plain rewrite of what each had read lost the
    other's, and the next run hashed those files again)."""

    def __init__(self, processed_dir: str | Path) -> None:
        self.path = Path(processed_dir) / DIGEST_CACHE
        self.entries: dict[str, dict] = self._load()
        self.fresh: set[str] = set()  # keys this object hashed, to merge into the file on `save`

    def _load(self) -> dict[str, dict]:
        try:
            loaded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            loaded = {}
        return loaded if isinstance(loaded, dict) else {}

    def digest(self, file: Path) -> str:
        st = file.stat()
        key, stamp = str(file.resolve()), [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = self.entries.get(key)
        if isinstance(hit, dict) and hit.get("stat") == stamp and hit.get("hashed_at", 0) - st.st_mtime_ns > _RACY_NS:
            return str(hit["digest"])
        hashed_at = time.time_ns()  # taken before reading: a later write moves mtime past the entry's
        digest = file_digest(file)
        self.entries[key] = {"stat": stamp, "hashed_at": hashed_at, "digest": digest}
        self.fresh.add(key)
        return digest

    def save(self) -> None:
        """Merge this object's new entries into the file under its lock (see the class). A key two
        runs both hashed keeps the later hashing. Temp files a writer killed mid-save left (only
        ever written under the lock, so any found while holding it are orphans) are removed."""
        if not self.fresh:
            return
        from filelock import FileLock

        from recsys.files import write_text_atomic

        with contextlib.suppress(OSError):  # a read-only store: the next run hashes again
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path.with_name(f"{self.path.name}.lock"))):
                for orphan in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                    orphan.unlink(missing_ok=True)
                merged = self._load()
                for key in self.fresh:
                    theirs, ours = merged.get(key), self.entries[key]
                    if not isinstance(theirs, dict) or theirs.get("hashed_at", 0) <= ours["hashed_at"]:
                        merged[key] = ours
                for key in _gone(merged, time.time_ns()):
                    del merged[key]
                write_text_atomic(self.path, json.dumps(merged))
            self.entries = merged
        self.fresh = set()


_GONE_AFTER_NS = 24 * 3600 * 10**9


def _gone(entries: dict[str, dict], now_ns: int) -> list[str]:
    """Keys of `entries` (under the cache's lock, in `DigestCache.save`) to drop: files that no
    longer exist, hashed more than a day ago. The cache kept an entry for every landing file ever
    hashed, so a landing zone whose old files are deleted grew its `.digests.json`, read and
    rewritten whole by every run, for ever. The day spares a file that is briefly away (renamed
    into place, an unmounted share); dropping an entry only ever costs hashing that file again."""
    stale = []
    for key, entry in entries.items():
        hashed_at = entry.get("hashed_at", 0) if isinstance(entry, dict) else 0
        if now_ns - hashed_at > _GONE_AFTER_NS and not os.path.lexists(key):
            stale.append(key)
    return stale


def local_source(source: str) -> Path | Location:
    """`data.source` as a local path (a plain path, or a file:// URL) or a remote fsspec location.
    An unknown protocol or a missing path is a one-line DataError naming the URL."""
    url = as_url(source)
    if url is None:
        return Path(source)
    location = resolve(url)
    return location.local_path if location.is_local else location


def public_source(cfg: DataConfig) -> str:
    """`data.source`, with a public data set's name ("movielens-100k", "lastfm-2k", ...) replaced
    by its ratings file in `data.raw_dir`, fetched (checksum-verified) on first use. Offline, the
    error says how to put a downloaded copy in the cache."""
    from recsys.data.fetch import DATASETS, DownloadFailed, fetch

    if cfg.source not in DATASETS:
        return cfg.source
    spec = DATASETS[cfg.source]
    try:
        return str(fetch(cfg.source, Path(cfg.raw_dir)))  # type: ignore[arg-type]
    except DownloadFailed as exc:
        raise DataError(
            f"public data set {cfg.source!r} is not in {cfg.raw_dir} and cannot be downloaded "
            f"({exc.url}: {exc.reason}): "
            f"fetch it once with `recsys data fetch {cfg.source} --offline PATH` (PATH: {spec.archive} "
            f"or its unzipped folder), or use a local copy with {{option}}",
            setting="data.source",
            value=f"PATH/{spec.ratings}",
        ) from None


def remote_versions(location: Location) -> dict[str, tuple[str, str]]:
    """name -> (version from metadata, URL to ingest it by) for each data file behind `location`."""
    files = location.files(DATA_SUFFIXES)
    return {f.name: (f.version, location.url_of(f.path)) for f in files}


def _unset_later(cfg: DataConfig) -> set[str]:
    """Settings added after processed directories were named by the hash of the [data] settings,
    left out of that hash while unset, so a config that does not use them keeps its directory
    (and its ingest cache key) across the upgrade."""
    unset = {"event_weights"} if cfg.event_weights is None else set()
    unset |= {"encoding"} if cfg.encoding is None else set()
    unset |= {"header"} if cfg.header is None else set()
    unset |= {"time_format"} if cfg.time_format is None else set()
    unset |= {"negative_weights"} if cfg.negative_weights == "quarantine" else set()
    return unset | ({"exact_duplicates"} if cfg.exact_duplicates == "quarantine" else set())


def source_fingerprint(cfg: DataConfig) -> str:
    """Fingerprint of the input, the settings that shape the processed data and the version of the
    readers: the cache key of the ingest task. Unchanged files, settings and readers -> same key ->
    ingest is skipped."""
    settings = cfg.model_dump(mode="json", exclude={"processed_dir", "raw_dir", "source", *_unset_later(cfg)})
    if cfg.source == "synthetic":
        content = "synthetic"
    else:
        source = local_source(public_source(cfg))
        if isinstance(source, Location):
            content = "|".join(f"{name}:{version}" for name, (version, _) in remote_versions(source).items())
        elif is_processed_dir(source):
            content = _manifest_fingerprint(source)
        else:
            cache = DigestCache(cfg.processed_dir)
            content = "|".join(f"{p.name}:{p.stat().st_size}:{cache.digest(p)}" for p in source_files(source))
            cache.save()
    # The reader version too: the same files read by a fixed reader give other rows, and a cached
    # ingest result of the older reader's would otherwise be reused for ever (`_reread`).
    blob = json.dumps({"content": content, "settings": settings, "reader": READER_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def dataset_dir(cfg: DataConfig) -> Path:
    """Where the processed data for this source + settings lives: stable across scheduled runs so
    that new files append to the same vocab."""
    settings = cfg.model_dump(mode="json", exclude={"processed_dir", "raw_dir", *_unset_later(cfg)})
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    stem = "synthetic" if cfg.source == "synthetic" else Path(cfg.source.rstrip("/")).name
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "data"
    return Path(cfg.processed_dir) / f"{slug}-{tag}"


def _read_ledger(processed: Path) -> dict[str, str]:
    ledger = processed / LEDGER
    if not ledger.is_file():
        return {}
    try:
        entries = json.loads(ledger.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{ledger}: corrupt record of ingested files ({exc}); restore it or point data.processed_dir elsewhere"
        ) from None
    if not isinstance(entries, dict):
        raise DataError(
            f"{ledger}: corrupt record of ingested files (not a JSON object); restore it or point data.processed_dir elsewhere"
        )
    return {str(k): str(v) for k, v in entries.items()}


# The [data] settings that shape a processed directory: a processed data.source is used as it is.
SHAPING = ("positive_min_weight", "positive_events", "event_weights", "exact_duplicates", "aggregate", "binarize",
           "negative_weights", "min_user_interactions", "min_item_interactions")  # fmt: skip


def processed_as(processed: Path, data: DataConfig) -> list[str]:
    """A warning when `processed` (a data.source that is already processed) was ingested with other
    positive-rule / aggregation / k-core settings than this config's: those are not applied again,
    so the run silently trained on other data than the same config on the raw log (ML-100K ingested
    with `recsys ingest --min-rating 4`, run with movielens.toml: 942 users instead of its k-core's 938)."""
    from recsys.data.storage import read_manifest

    try:
        used_manifest = read_manifest(processed)
    except (OSError, ValueError, DataError):
        return []
    used = used_manifest.get("config") or {}
    older = _older_readers(processed, used_manifest)
    wanted = data.model_dump(mode="json")
    differ = [
        f"{key} {used[key]!r} (config: {wanted[key]!r})"
        for key in SHAPING
        if key in used and used[key] != wanted[key] and not (key == "aggregate" and wanted[key] == "auto")
    ]
    if not differ:
        return older
    return older + [
        f"{processed} was ingested with {', '.join(differ)}; a processed data.source is used as it is, "
        f"so re-ingest it with this config (recsys ingest SOURCE --out {processed} --config FILE) or set "
        "data.source to the raw log"
    ]


def _read_by(versions: set[int]) -> str:
    """`read by an older recsys (reader version 0, now 4)`: `another` where a newer recsys wrote it
    (run with an older one after an upgrade was rolled back)."""
    which = "an older" if max(versions) < READER_VERSION else "another"
    was = ", ".join(str(v) for v in sorted(versions))
    return f"read by {which} recsys (reader version {was}, now {READER_VERSION})"


def _older_readers(processed: Path, manifest: dict) -> list[str]:
    """A warning when a processed data.source was read by other readers than this recsys's
    (`READER_VERSION`): a run's own processed directory is re-read once (`_reread`), but one given
    as data.source has no record of raw files to read again, and reader fixes since (a folder's
    day as the time, ids unwrapped) silently never reached it."""
    from recsys.data.ingest import reader_versions

    versions = reader_versions(manifest)
    if versions == {READER_VERSION}:
        return []
    return [
        f"{processed} was {_read_by(versions)}, whose readers gave "
        f"other rows for some layouts; a processed data.source is used as it is, so ingest its sources again "
        f"(recsys ingest SOURCE --out {processed}) or set data.source to the raw log"
    ]


def k_core_shrink(manifest: dict | None) -> str | None:
    """What the ingest's k-core left when it brought the users or items down to one (a log whose
    users mostly have fewer interactions than data.min_user_interactions): the clause that names the
    setting, for the refusal of a split with nothing to score (`require_test_users`), which said only
    "the log has one user after filtering". None otherwise."""
    steps = (manifest or {}).get("steps") or []
    for before, step in zip(steps, steps[1:], strict=False):
        if not str(step.get("name", "")).startswith("k-core"):
            continue
        shrunk = [f"{step[key]:,} of {before[key]:,} {key}" for key in ("users", "items")
                  if step.get(key) == 1 and before.get(key, 0) > 1]  # fmt: skip
        if shrunk:
            return (f"the {step['name']} left {' and '.join(shrunk)}: lower data.min_user_interactions / "
                    "data.min_item_interactions")  # fmt: skip
    return None


def _manifest_of(dataset: DatasetResult, manifest: dict | None) -> dict | None:
    """`manifest` (the one a run loaded its data with: `InteractionData.manifest`), else the
    directory's current one; None when it cannot be read."""
    from recsys.data.storage import read_manifest

    if manifest is not None:
        return manifest
    try:
        return read_manifest(Path(dataset.processed_dir))
    except (OSError, ValueError, DataError):
        return None


def ingest_warnings(dataset: DatasetResult, manifest: dict | None = None) -> list[str]:
    """One-line warnings of the processed data (e.g. a weight column reduced to 1s), for the run's
    log: ingest records them in the manifest, where every later reader finds them too. Pass the
    `manifest` the data was loaded with, so the lines describe the data the run trains on."""
    if (manifest := _manifest_of(dataset, manifest)) is None:
        return []
    own = list(getattr(dataset, "warnings", []))  # a result cached before the field existed has none
    if "warnings" in manifest:
        return list(manifest["warnings"]) + own
    warning = (manifest.get("weights") or {}).get("warning")  # written before "warnings" existed
    return ([warning] if warning else []) + own


def log_dataset(
    dataset: DatasetResult, manifest: dict | None, info: Callable[[str], None], warn: Callable[[str], None]
) -> None:
    """A run's lines about its data (columns taken, what the filters kept, warnings), from
    `manifest`, the one the data was loaded with, so they describe what the run trains on. `recsys
    run` and the Prefect flow both print them through here."""
    if (columns := ingest_columns(dataset, manifest)) is not None:
        info(f"columns: {columns}")
    if (kept := ingest_filters(dataset, manifest)) is not None:
        info(kept)
    for warning in ingest_warnings(dataset, manifest):
        warn(warning)


def ingest_columns(dataset: DatasetResult, manifest: dict | None = None) -> str | None:
    """The last ingest's column mapping in one line (`recsys.data.readers.describe_columns`), for
    the run's log, so a run on a user's file shows which columns it took; None when the manifest
    has no batch (synthetic data) or cannot be read."""
    from recsys.data.readers import describe_columns

    if (manifest := _manifest_of(dataset, manifest)) is None:
        return None
    batches = manifest.get("batches") or []
    columns = batches[-1].get("columns") if batches else None
    weighted = bool((manifest.get("weights") or {}).get("event_weights"))
    return describe_columns(columns, weighted) if columns else None


def ingest_filters(dataset: DatasetResult, manifest: dict | None = None) -> str | None:
    """What the data config kept, in one line, for the run's log: interactions of validated rows,
    users and items before and after the filter steps (positive rule, aggregation, k-core). On a
    sparse public log (most users with one review) the k-core can keep a tenth of the users; the
    run says so instead of leaving it in the manifest. None without steps (synthetic data)."""
    if (manifest := _manifest_of(dataset, manifest)) is None:
        return None
    steps = manifest.get("steps") or []
    if len(steps) < 2:
        return None
    first, last = steps[0], steps[-1]
    quarantined = int(manifest.get("rows_quarantined") or 0)
    return (
        f"kept: {last['rows']:,} interactions of {first['rows'] + quarantined:,} rows"
        f"{_quarantined(manifest, dataset, quarantined)}, {last['users']:,} of "
        f"{first['users']:,} users, {last['items']:,} of {first['items']:,} items "
        f"(steps: {', '.join(step['name'] for step in steps[1:])})"
    )


def _quarantined(manifest: dict, dataset: DatasetResult, quarantined: int) -> str:
    """The rows validation quarantined, by reason, for the `kept:` line: a log with empty ids in a
    fifth of its rows ran with `kept: 1,168 interactions of 1,168 rows` - the 332 rows it never
    read were only in the manifest and the quarantine Parquet, which the run did not name."""
    if not quarantined:
        return ""
    reasons: dict[str, int] = {}
    for batch in manifest.get("batches") or []:
        for reason, count in (batch.get("reasons") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + int(count)
    named = ", ".join(f"{reason} {count:,}" for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    where = Path(dataset.processed_dir) / "quarantine"
    return f" ({quarantined:,} quarantined{': ' + named if named else ''}; rows in {where})"


def _manifest_fingerprint(processed: Path) -> str:
    from recsys.data.storage import read_manifest

    return str(read_manifest(processed).get("fingerprint", ""))


def prepare_dataset(cfg: RunConfig) -> DatasetResult:
    """Make sure the processed directory for `cfg.data` is up to date; ingest only what is new.

    Holds the processed directory's writer lock from reading the ledger to the last ingest, so two
    runs on one landing zone never ingest the same new file twice; each file's ledger entry is
    written in the same atomic swap as its batch (`sidecar_files`), so a kill cannot split them."""
    from recsys.data.storage import ensure_recovered, writer_lock

    data = cfg.data
    key = source_fingerprint(data)
    out = dataset_dir(data)
    if data.source == "synthetic":
        with writer_lock(out):
            return _prepare_synthetic(data, out, key)
    source = local_source(public_source(data))
    if isinstance(source, Path):
        ensure_recovered(source)
    if isinstance(source, Path) and is_processed_dir(source):
        return DatasetResult(
            str(source), _manifest_fingerprint(source), key, reused=True, warnings=processed_as(source, data)
        )
    with writer_lock(out):
        return _prepare_files(data, source, out, key)


def _prepare_files(data: DataConfig, source: Path | Location, out: Path, key: str) -> DatasetResult:
    from recsys.data.ingest import ingest

    ledger = _read_ledger(out) if is_processed_dir(out) else {}
    targets: dict[str, str | Path]
    if isinstance(source, Location):
        source_is_dir = source.is_dir
        versions = remote_versions(source)
        digests = {name: version for name, (version, _) in versions.items()}
        targets = {name: target for name, (_, target) in versions.items()}
    else:
        source_is_dir = source.is_dir()
        files = source_files(source)
        names = [str(p.relative_to(source) if source_is_dir else p.name) for p in files]
        listed = stat_files(files)  # before hashing: a write from here on shows (`_settled`)
        cache = DigestCache(data.processed_dir)
        digests = {name: cache.digest(p) for name, p in zip(names, files, strict=True)}
        cache.save()
        targets = dict(zip(names, files, strict=True))
        stamps = {name: SourceStamp(_read_as(name, digests[name]), (st,)) for name, st in zip(names, listed, strict=True)}
    reread, report = [], None
    if ledger:  # read by another recsys's readers: re-read once, keeping the vocab
        remote = isinstance(source, Location)
        reread, report = _reread(data, out, ledger, digests, targets, {} if remote else stamps, source_is_dir)
    changed = [name for name, d in digests.items() if name in ledger and ledger[name] != d]
    if changed and not source_is_dir:
        # A single file that changed (a log its writer appends to) is re-ingested whole, keeping the
        # vocab: rebuilt, its order would follow the new file (a user reaching the k-core today sits
        # before older ones), and the champion could never be re-scored on today's data.
        ledger = {}
    new = [name for name in digests if name not in ledger]
    if not new and not changed:
        if reread:
            return DatasetResult(str(out), _manifest_fingerprint(out), key, ingested_files=reread,
                                 report=report.to_json_dict() if report is not None else {})  # fmt: skip
        return DatasetResult(str(out), _manifest_fingerprint(out), key, reused=True)
    if changed and source_is_dir:
        raise DataError(
            f"{data.source}: files already ingested have changed ({', '.join(changed[:3])}); "
            "landing-zone files are append-only — add new files instead, or point data.processed_dir elsewhere; "
            "a file whose producer paused mid-write for longer than the run that read it changes like this: "
            "producers should write under a hidden or _-prefixed name (not read) and rename it when complete"
        )
    rebuild = bool(changed) and not source_is_dir
    ingested: list[str] = list(reread)
    empty: list[tuple[str, DataError]] = []
    for name in new:
        append = is_processed_dir(out) and not rebuild
        ledger[name] = digests[name]
        stamp = stamps.get(name) if not isinstance(source, Location) else None
        try:
            if source_is_dir and stamp is not None and not _settled(stamp):
                raise changed_error(targets[name], [str(targets[name])])
            report = ingest(
                targets[name], out, data, format=data.format, append=append, sidecar_files={LEDGER: ledger},
                keep_vocab=True, stamp=stamp, check_unchanged=source_is_dir,
            )  # fmt: skip
        except (NoDataRows, SourceChanged, AlreadyIngested) as exc:
            # An export of a quiet day (a header, no row) must not stop every later run; left out
            # of the ledger, it is taken up once rows are written to it (as a 0-byte file is). A
            # file still being written (it changed between its listing and its swap) is taken up
            # once it stops changing: recorded half-read, it would stop every later run as a
            # changed landing file. A copy of a file already ingested is named until removed.
            del ledger[name]
            empty.append((str(targets[name]), exc))
            continue
        if rebuild and (lost := _shrunk(report, name)):
            warnings.warn(RecsysWarning(lost), stacklevel=2)
        rebuild = False
        ingested.append(name)
    if empty and not is_processed_dir(out):
        raise empty[0][1]  # nothing to train on at all: the error names the file
    for target, exc in empty:
        warnings.warn(RecsysWarning(_passed_over(target, exc)), stacklevel=2)
    passed_over = [target for target, _ in empty]
    if not ingested:
        return DatasetResult(str(out), _manifest_fingerprint(out), key, reused=True, passed_over=passed_over)
    return DatasetResult(
        str(out),
        _manifest_fingerprint(out),
        key,
        ingested_files=ingested,
        report=report.to_json_dict() if report is not None else {},
        passed_over=passed_over,
    )


def _reread(
    data: DataConfig,
    out: Path,
    ledger: dict[str, str],
    digests: dict[str, str],
    targets: dict[str, str | Path],
    stamps: dict[str, SourceStamp],
    source_is_dir: bool,
) -> tuple[list[str], IngestReport | None]:
    """Re-read the raw files of `out` when its batches were read by other readers than this
    code's (`READER_VERSION`; a directory from before the version was recorded counts as 0), so a
    reader fix reaches data ingested before it without a hand re-ingest, once: the new batches
    record this version, and the cache key (`source_fingerprint`) carries it, so a cached ingest
    result is not reused across the upgrade either. Called with `out`'s writer lock held: a second
    run that started at the same time waits, then finds the version current and reads nothing.

    The files of `ledger` are ingested again in their order into a folder inside one of `out`'s
    staging directories, the first starting from `out`'s vocab (ids keep their indices, saved
    models and splits do not move; an id the new reading no longer yields keeps its index), and
    the result is swapped in whole (`storage.swap_in`). A kill meanwhile leaves `out` as it was
    (the next writer removes the staging; `recover` completes a swap cut between its renames), and
    the next run re-reads again. Nothing is re-read when a ledger file is gone or changed (its
    rows could not be read again: a warning says the directory is kept; a changed file is refused
    or re-read as ever below), or when re-reading fails (a file the older readers took and these
    refuse: a warning names the error, the directory is kept as it was, and the error is recorded
    beside it, `_failure_file`, so later runs say so instead of reading the landing zone again up
    to the failure; a file that changed while read is tried again). Returns the names re-read and the last
    ingest's report (([], None) when nothing was)."""
    from recsys.data.ingest import ingest, reader_versions
    from recsys.data.storage import read_manifest, swap_in
    from recsys.files import publishable_dir, write_text_atomic

    versions = reader_versions(read_manifest(out))
    if versions == {READER_VERSION}:
        return [], None
    gone = [name for name in ledger if name not in digests]
    if gone:
        warnings.warn(RecsysWarning(
            f"{out}: {_read_by(versions)} but {len(gone)} of its raw "
            f"files are gone from {data.source} ({', '.join(gone[:3])}), so it is kept as read then; ingest what "
            "is left into a new data.processed_dir to read it with this version"
        ), stacklevel=3)  # fmt: skip
        return [], None
    if any(digests[name] != digest for name, digest in ledger.items()):
        return [], None  # a changed file: re-read whole (a single file) or refused (a landing zone) below
    failed = _reread_failed(out)
    if failed is not None:
        warnings.warn(RecsysWarning(
            f"{out}: {_read_by(versions)}; reading its raw files "
            f"again failed on an earlier run ({failed}), so it is kept as read then: fix that and delete "
            f"{_failure_file(out)} to read it again, or ingest into a new data.processed_dir"
        ), stacklevel=3)  # fmt: skip
        return [], None
    work = publishable_dir(out.parent, f".{out.name}.", ".tmp")  # `recover` removes it after a kill
    staged = work / "data"
    report = None
    try:
        held: dict[str, str] = {}
        for name, digest in ledger.items():
            held[name] = digest
            report = ingest(
                targets[name], staged, data, format=data.format, append=len(held) > 1,
                sidecar_files={LEDGER: dict(held)}, vocab_of=out, stamp=stamps.get(name),
                check_unchanged=source_is_dir, same_content=True,
            )  # fmt: skip
        for entry in out.iterdir():  # top-level files of others (the ingest writes the ledger itself)
            if entry.is_file() and not (staged / entry.name).exists():
                shutil.copy2(entry, staged / entry.name)
        swap_in(staged, out)
    except DataError as exc:
        if not isinstance(exc, SourceChanged):  # a file being written: the next run tries again
            write_text_atomic(_failure_file(out), json.dumps({"reader_version": READER_VERSION, "error": str(exc)}))
        warnings.warn(RecsysWarning(
            f"{out}: {_read_by(versions)}; reading its raw files "
            f"again failed, so it is kept as read then (not tried again with this version): {exc}"
        ), stacklevel=3)  # fmt: skip
        return [], None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _failure_file(out).unlink(missing_ok=True)
    warnings.warn(RecsysWarning(
        f"{out}: {_read_by(versions)}; re-read its {len(ledger)} raw file(s) with this "
        "version's readers, keeping its user and item indices"
    ), stacklevel=3)  # fmt: skip
    return list(ledger), report


def _failure_file(out: Path) -> Path:
    """Beside a processed directory (as its lock is): the error its re-read with this reader
    version met (`_reread`), so a re-read that fails (a file the older readers took and these
    refuse) is not tried again, whole landing zone read up to the failure, on every run."""
    return out.parent / f".{out.name}.reread-failed.json"


def _reread_failed(out: Path) -> str | None:
    """The recorded error of a re-read of `out` with this READER_VERSION, or None."""
    try:
        record = json.loads(_failure_file(out).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("reader_version") != READER_VERSION:
        return None
    return str(record.get("error", ""))


def _read_as(name: str, digest: str) -> str:
    """The digest a landing file's batch records (`source_digest`, which tells a copy of a file
    already ingested): its content's, and for a file under day folders (`dt=2024-01-02/`) the day
    too, which its rows are read with. Two days' exports of the same bytes are two days of rows,
    not a copy, and the second was passed over as one."""
    from recsys.data.readers.parquet_files import folder_day

    day = folder_day(name)
    if day is None:
        return digest
    return hashlib.blake2b(f"{digest}\0{day}".encode(), digest_size=16).hexdigest()


def _settled(stamp: SourceStamp) -> bool:
    """True when a landing file's stat is what it was before it was hashed (no write since)."""
    return not changed_files(stamp, Path(stamp.stats[0][0]))


def _passed_over(target: str, exc: DataError) -> str:
    """The warning for a landing file this run did not ingest (a later run may)."""
    if isinstance(exc, SourceChanged):
        return (
            f"{target}: changed while this run read it (still being written?): not ingested, a later run reads "
            "it once it stops changing"
        )
    if isinstance(exc, AlreadyIngested):
        return f"{exc}: not ingested again; remove the copy from the landing directory"
    return f"{exc}: not ingested, it is read once rows are written to it"


def _shrunk(report, name: str) -> str | None:
    """A warning when a single-file source read again holds fewer rows than the data it replaced:
    a log that was rotated or truncated, not one that grew, so the earlier rows are gone from the
    processed data (a growing log never shrinks; rotated logs belong in a landing directory)."""
    before = sum(int(b.get("rows_in", 0)) for b in report.replaced_batches)
    if report.rows_in >= before:
        return None
    return (
        f"{name} holds {report.rows_in:,} rows, fewer than the {before:,} it held when last ingested: the "
        "rows no longer in it are gone from the processed data; for a log that is rotated or truncated, "
        "give data.source a directory and add each day's file to it"
    )


def _prepare_synthetic(data: DataConfig, out: Path, key: str) -> DatasetResult:
    """Generate the planted-cluster data set (deterministic from its seed) and ingest it with its
    clusters as folding blocks.

    The generator's play counts are random draws that carry no taste. A config that counts pairs or
    binarises (default.toml) gets the log without them: every pair weighs 1 either way (the pairs
    are unique), so nothing changes but the 'weights discarded' warning, which is there to protect
    real play counts and would otherwise greet every `make run`."""
    from recsys.data.ingest import ingest
    from recsys.data.schema import WEIGHT
    from recsys.data.synthetic import generate, write_data

    if is_processed_dir(out) and _read_ledger(out).get("synthetic") == key:
        return DatasetResult(str(out), _manifest_fingerprint(out), key, reused=True)
    raw = Path(data.raw_dir) / out.name
    generated = generate(data.synthetic)
    if data.aggregate == "count" or data.binarize:
        generated = replace(generated, interactions=generated.interactions.drop(WEIGHT))
    paths = write_data(generated, raw)
    user_labels = pl.read_parquet(paths["user_clusters"])
    item_labels = pl.read_parquet(paths["item_clusters"])
    report = ingest(
        paths["interactions"], out, data, user_labels=user_labels, item_labels=item_labels,
        sidecar_files={LEDGER: {"synthetic": key}},
    )  # fmt: skip
    return DatasetResult(
        str(out),
        _manifest_fingerprint(out),
        key,
        ingested_files=[str(paths["interactions"])],
        report=report.to_json_dict(),
    )


def run_data_dir(data: DataConfig) -> Path:
    """The processed directory a run on `data` reads: the source itself when it is processed
    already, else the directory `prepare_dataset` keeps up to date (`dataset_dir`)."""
    if data.source != "synthetic":
        source = local_source(public_source(data))
        if isinstance(source, Path) and not source.exists():
            raise _missing(source)  # before the lock, whose file would go beside the output
        if isinstance(source, Path) and is_processed_dir(source):
            return source
    return dataset_dir(data)


@contextlib.contextmanager
def one_generation(directory: str | Path) -> Iterator[None]:
    """Hold the writer lock of a processed directory (re-entrant: `prepare_dataset` takes it again
    inside), so everything read meanwhile - manifest, data - is one generation of it: another
    writer (a non-append `recsys ingest --out` into it) waits instead of swapping the directory
    between a run's ingest and its load. A directory whose lock cannot be created (a read-only
    location) is read without it; `load_dataset`'s fingerprint check still guards the load."""
    from recsys.data.storage import writer_lock

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(writer_lock(Path(directory)))
        except OSError:
            pass
        yield


def load_dataset(processed_dir: str | Path, fingerprint: str | None = None) -> InteractionData:
    """Load a processed directory under its lock (one generation: no swap mid-load). With the
    `fingerprint` the run prepared (`DatasetResult.fingerprint`), data another writer put there
    since is refused with one line rather than trained on under the prepared data's name."""
    from recsys.data.storage import load_processed

    with one_generation(processed_dir):
        data = load_processed(Path(processed_dir))
    found = str(data.manifest.get("fingerprint", ""))
    if fingerprint and found != fingerprint:
        raise DataError(
            f"{processed_dir}: replaced by another writer after this run prepared it (fingerprint "
            f"{fingerprint}, now {found}); run again, or give concurrent runs their own {{option}}",
            setting="data.processed_dir",
            value="DIR",
        )
    return data


def make_split(data: InteractionData, cfg: SplitConfig) -> Split:
    from recsys.data.splits import split_data

    return split_data(data, cfg)
