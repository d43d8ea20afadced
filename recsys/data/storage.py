"""The processed-data directory: layout, atomic writes, fingerprint and `load_processed`.

Layout (one directory per data set)::

    interactions/batch=000001/part-0.parquet   validated canonical rows of ingest batch 1 (+ source_row);
                                               ids stored as UInt32 where all are canonical decimals
    interactions/batch=000002/part-0.parquet   ... each `--append` adds a batch; batches are never rewritten
    quarantine/batch=000001.parquet            rejected raw rows with source_row and reason, per batch
    implicit.parquet                           user_idx, item_idx, timestamp, weight: the table models use
    users.parquet / items.parquet              vocab: user_id, user_idx[, block] / item_id, item_idx[, block]
    manifest.json                              counts, schema, sources, batches, filter steps, fingerprint

Why keep raw batches *and* implicit.parquet: the batches are the lossless record, so an append can
re-run aggregation and k-core over all batches (a pair seen in two batches is one pair, counted
twice), while loading stays a plain read of the derived table. Derivation happens at ingest time.

Atomicity: everything is built in a temporary sibling directory and swapped in with os.replace, so a
failed ingest leaves the previous state (or nothing) behind, never a half-written directory.

Writers and crashes: every writer of a processed directory holds `writer_lock` (a `filelock` file
`.<name>.lock` beside it), so two ingests into one directory run one after the other and both
batches land. A process killed mid-write leaves staging directories behind, or - killed between the
two renames of the swap - the old directory moved aside and the new one complete but not in place.
The next writer, holding the lock, finishes or undoes that (`recover`): a swap whose new directory
is complete is completed, else the old directory is put back; leftover staging is removed. So an
interrupted append never makes the directory vanish, and its append-only vocab is never rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.dataset import InteractionData
from recsys.data.parquet_out import write_table as write_table  # re-exported: ingest writes through it
from recsys.data.schema import FIRST_SEEN, ITEM, ITEM_IDX, TIME, USER, USER_IDX, WEIGHT
from recsys.data.vocab import Vocab
from recsys.errors import DataError
from recsys.faults import fault_point
from recsys.files import announced_lock, publishable_dir

INTERACTIONS_DIR = "interactions"
QUARANTINE_DIR = "quarantine"
IMPLICIT_FILE = "implicit.parquet"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
MANIFEST_FILE = "manifest.json"
FINGERPRINT_METHOD = "polars-id-hash-row-hash-sum-v2"
log = logging.getLogger(__name__)
_BATCH_RE = re.compile(r"^batch=(\d+)$")
SWAP_FILE = "swap.json"  # in a `.old` staging dir: which `.tmp` dir the interrupted swap was moving in
_STAGING_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|old)$")
MANIFEST_KEYS = ("manifest_version", "batches", "fingerprint", "users", "items", "interactions")


def batch_name(batch: int) -> str:
    return f"batch={batch:06d}"


def batch_file(root: Path, batch: int) -> Path:
    return root / INTERACTIONS_DIR / batch_name(batch) / "part-0.parquet"


def quarantine_file(root: Path, batch: int) -> Path:
    return root / QUARANTINE_DIR / f"{batch_name(batch)}.parquet"


def list_batches(root: Path) -> list[int]:
    """Batch numbers present under interactions/, ascending."""
    folder = root / INTERACTIONS_DIR
    if not folder.is_dir():
        return []
    found = (_BATCH_RE.match(p.name) for p in folder.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def is_processed_dir(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file()


def read_manifest(root: Path) -> dict:
    """The directory's manifest; DataError when it is missing, unparsable or lacks what every
    manifest holds. A manifest such as `{}` or `[]` is corrupt, not empty: appending to it would
    silently drop every earlier batch, so it is refused with the way out."""
    path = Path(root) / MANIFEST_FILE
    hint = "restore it from a backup, or ingest into a new --out directory"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"{root}: not a processed data directory (no {MANIFEST_FILE}); run `recsys ingest` first"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: corrupt manifest ({exc}); {hint}") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: corrupt manifest (a JSON {type(manifest).__name__}, not an object); {hint}")
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing or not isinstance(manifest["batches"], list) or not manifest["batches"]:
        what = f"no {', '.join(missing)}" if missing else "no batches"
        raise DataError(f"{path}: corrupt manifest ({what}); {hint}")
    return manifest


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def fingerprint(
    interactions: pl.DataFrame, user_ids: pl.Series | np.ndarray, item_ids: pl.Series | np.ndarray
) -> str:
    """Content hash of the interactions (user id, item id, timestamp, weight) that ignores row
    order: `interactions` holds user_idx / item_idx, and `user_ids[i]` / `item_ids[i]` is the raw
    id of index i. Each id's text is hashed once and gathered by index, so the hash describes raw
    ids, not indices: the same data gives the same fingerprint whatever order its rows (and so
    its vocab) came in. Per-row hashes (polars' fixed-seed hash, stable across processes for one
    polars version) are summed in two 32-bit halves so the sum cannot overflow, then digested
    with the row count. Hashing each distinct id once, not an id string per row, is what keeps
    this cheap on large logs.

    A pair whose first-seen time (FIRST_SEEN) differs from its latest timestamp adds the hash of
    (user, item, first-seen): two logs that differ only in when a repeated pair was first seen split
    differently, so they must not share a fingerprint, while a log without repeats keeps the
    fingerprint it had before first-seen times were stored."""
    user_hash = pl.Series(user_ids).cast(pl.String).hash(seed=0).to_numpy()
    item_hash = pl.Series(item_ids).cast(pl.String).hash(seed=0).to_numpy()
    rows = pl.DataFrame(
        {
            "u": user_hash[interactions.get_column(USER_IDX).to_numpy()],
            "i": item_hash[interactions.get_column(ITEM_IDX).to_numpy()],
            TIME: interactions.get_column(TIME),
            WEIGHT: interactions.get_column(WEIGHT),
        }
    )
    row_hash = rows.select(pl.struct("u", "i", TIME, WEIGHT).hash(seed=0)).to_series().to_numpy()
    if FIRST_SEEN in interactions.columns:
        first = rows.select("u", "i", interactions.get_column(FIRST_SEEN).alias(FIRST_SEEN))
        first = first.filter(pl.col(FIRST_SEEN).ne_missing(interactions.get_column(TIME)))
        row_hash = np.concatenate([row_hash, first.select(pl.struct(pl.all()).hash(seed=1)).to_series().to_numpy()])
    n, lo, hi = interactions.height, int((row_hash & 0xFFFFFFFF).sum()), int((row_hash >> 32).sum())
    digest = hashlib.sha256(f"{FINGERPRINT_METHOD}|{pl.__version__.split('.')[0]}|{n}|{lo}|{hi}".encode())
    return digest.hexdigest()[:32]


@contextlib.contextmanager
def staged_directory(out_dir: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `out_dir`; on success it replaces `out_dir`
    atomically (the old one is moved aside, then removed), on failure it is deleted.

    Holds `writer_lock(out_dir)` throughout. The swap is two renames; `swap.json` in the aside
    directory names the incoming one, so `recover` can finish a swap a kill interrupted."""
    out_dir = Path(out_dir)
    with writer_lock(out_dir):
        tmp = publishable_dir(out_dir.parent, f".{out_dir.name}.", ".tmp")
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        swap_in(tmp, out_dir)


def swap_in(staged: Path, out_dir: Path) -> None:
    """Replace `out_dir` with the complete processed directory `staged` (call with `writer_lock`
    held). Two renames; `swap.json` in the aside directory names `staged` relative to `out_dir`'s
    parent, so `recover` finishes a swap a kill interrupted. `staged` is a staging directory of
    `out_dir` (`.<name>.XXXXXXXX.tmp`) or a folder inside one (a re-read built batch by batch)."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        (old / SWAP_FILE).write_text(json.dumps({"staged": staged.relative_to(out_dir.parent).as_posix()}))
        os.replace(out_dir, old / "previous")
    fault_point("storage.between_renames")
    os.replace(staged, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def lock_file(out_dir: Path) -> Path:
    """The lock beside (not inside) a processed directory: the directory itself is swapped whole."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.lock"


@contextlib.contextmanager
def writer_lock(out_dir: Path, progress: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the processed directory's writer lock; on first entry, `recover` what a killed writer
    left behind. Re-entrant within a thread (an ingest inside a step that already holds it); a
    second process or thread waits, saying so through `progress`.

    A hold that ends with no directory at `out_dir` (the input was refused: nothing was written)
    leaves nothing behind: the lock file goes (removed while held; filelock re-checks after each
    `flock` that the file it locked still has a name, so a waiter starts again on a new file), and
    so do the folders above it this hold made, when empty. Why: a `recsys run` or `recsys ingest`
    on a malformed source left `.NAME.lock` (and the processed folder made for it) behind, which
    an output refusal (`ingest._refuse_out_dir`, checked before the lock) does not."""
    out_dir = Path(out_dir)
    if _STAGING_RE.match(out_dir.name):  # a private staging dir (combine ingests into one): its
        yield  # creator holds the real lock, and a lock file here would outlive the dir
        return
    made = [folder for folder in (out_dir.parent, *out_dir.parent.parents) if not folder.exists()]
    say = progress or (lambda _line: None)
    path = lock_file(out_dir)
    outermost = False
    try:
        with contextlib.ExitStack() as held:
            for attempt in range(5):
                out_dir.parent.mkdir(parents=True, exist_ok=True)
                try:
                    lock = held.enter_context(announced_lock(path, f"another writer of {out_dir}", say, singleton=True))
                    break
                except FileNotFoundError:  # another writer's refusal removed the folder it made for its lock
                    if attempt == 4:
                        raise
            outermost = lock.lock_counter == 1
            if outermost:
                for line in recover(out_dir):
                    log.warning("%s (left by a writer that was killed)", line)
            try:
                yield
            finally:
                if outermost and not out_dir.exists():
                    path.unlink(missing_ok=True)
    finally:
        if outermost and not out_dir.exists():
            remove_empty(made)


def remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (deepest first) while they are empty: one holding anything (another
    writer's lock, made meanwhile) stays, and so do those above it."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def ensure_recovered(root: Path) -> None:
    """For readers: when a killed writer left `root` mid-swap (or left staging behind), take the
    writer lock, which recovers it. Costs one directory listing when nothing is to be done."""
    root = Path(root)
    if _staging(root, "old") or _staging(root, "tmp"):
        with writer_lock(root):
            pass


def _staging(out_dir: Path, kind: str) -> list[Path]:
    """This directory's own staging dirs (`.<name>.<8 mkdtemp chars>.<kind>`), not a sibling's."""
    pattern = re.compile(rf"^\.{re.escape(out_dir.name)}\.[a-z0-9_]{{8}}\.{kind}$")
    if not out_dir.parent.is_dir():
        return []
    return sorted(p for p in out_dir.parent.iterdir() if pattern.match(p.name) and p.is_dir())


def recover(out_dir: Path) -> list[str]:
    """Finish or undo what a killed writer of `out_dir` left; call with `writer_lock` held.

    A swap interrupted between its renames (`out_dir` gone, the old one in `.old/previous`) is
    completed when the staged directory it was moving in is there, else rolled back. Then every
    leftover staging directory is removed. Returns what was done, one line each."""
    out_dir = Path(out_dir)
    done: list[str] = []
    for old in _staging(out_dir, "old"):
        previous = old / "previous"
        if previous.is_dir() and not out_dir.exists():
            swap = old / SWAP_FILE
            staged = out_dir.parent / json.loads(swap.read_text())["staged"] if swap.is_file() else None
            if staged is not None and (staged / MANIFEST_FILE).is_file():
                os.replace(staged, out_dir)
                done.append(f"completed an interrupted swap of {out_dir}")
            else:
                os.replace(previous, out_dir)
                done.append(f"rolled back an interrupted swap of {out_dir}")
        shutil.rmtree(old, ignore_errors=True)
    for tmp in _staging(out_dir, "tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
        done.append(f"removed stale staging directory {tmp.name}")
    return done


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link an existing batch into the staging dir (free), copying where links are refused."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def scan_batches(root: Path, batches: list[int] | None = None) -> list[tuple[int, pl.LazyFrame]]:
    """(batch, lazy frame of its validated canonical rows) for each stored batch, ids as stored:
    UInt32 (or UInt64) where every id of the batch was a canonical decimal (see `vocab.decimal_codes`; casting
    to String gives the ids back), else text. `ingest` brings batches stored either way to one
    type before comparing or grouping them."""
    return [
        (b, pl.scan_parquet(batch_file(root, b)))
        for b in (batches if batches is not None else list_batches(root))
    ]


def load_processed(root: str | Path) -> InteractionData:
    """Load a processed directory: the implicit table (user_idx, item_idx, timestamp, weight,
    first_seen), the vocab arrays (index -> raw id), block labels when known, and the manifest.

    A directory written before first-seen times were stored has no first_seen column until its next
    append re-derives the table from the batches; until then time-based splits place its pairs by
    their latest timestamp, as the runs that wrote it did (`recsys.data.first_seen.pair_time`)."""
    root = Path(root)
    ensure_recovered(root)
    manifest = read_manifest(root)
    path = root / IMPLICIT_FILE
    try:
        first_seen = [FIRST_SEEN] if FIRST_SEEN in pl.read_parquet_schema(path) else []
        interactions = pl.read_parquet(path).select(
            pl.col(USER_IDX).cast(pl.Int32),
            pl.col(ITEM_IDX).cast(pl.Int32),
            pl.col(TIME),
            pl.col(WEIGHT).cast(pl.Float32),
            *first_seen,
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{path}: cannot read processed interactions ({exc})") from None
    users = Vocab.load(root / USERS_FILE, id_name=USER, idx_name=USER_IDX)
    items = Vocab.load(root / ITEMS_FILE, id_name=ITEM, idx_name=ITEM_IDX)
    return InteractionData(
        interactions=interactions,
        user_ids=users.ids(),
        item_ids=items.ids(),
        user_blocks=users.blocks(),
        item_blocks=items.blocks(),
        manifest=manifest,
    )
