"""`ingest`: read -> validate (quarantine) -> store batch -> implicit conversion -> vocab -> manifest.

The public entry point of the data layer; the CLI (`recsys ingest`), the pipeline step and
`data combine` all call `ingest`, and other readers of raw files call `read_canonical`.

Incremental ingest (`append=True`) stores the new validated rows as one more batch and re-derives
the implicit table from *all* batches, so a (user, item) pair seen in several batches is aggregated
once (counts add up, `last` takes the latest) and k-core sees the whole history. Rows that exactly
repeat a row of an earlier batch are quarantined as `duplicate`; under data.exact_duplicates =
"keep" (repeated events of a log without fine times) they are counted, as they would be in one
ingest of all batches. So that an append re-run (after a kill that came once its batch had landed)
adds nothing under either rule, each batch records its source's content digest, and an append of
content a batch already holds raises AlreadyIngested before reading it (`recsys.data.source_stamp`).
The vocab only grows: old indices never move.

The whole call - reading the previous manifest, staging, swapping in - holds the directory's writer
lock (`storage.writer_lock`), so concurrent appends run one after the other and both land, and
whatever a killed writer left is finished or undone first. `sidecar_files` are JSON files written in
the same swap as the batch (the pipeline's record of which raw files are in), so a kill can never
leave a batch in without its record, or the record without its batch.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from recsys.config import ColumnMap, DataConfig
from recsys.data import storage
from recsys.data.batches import aligned_ids, all_rows
from recsys.data.encoding import Transcoded, utf8_source
from recsys.data.implicit import ORDER, FilterStep, to_implicit
from recsys.data.ingest_checks import (
    coarse_duplicates_warning,
    column_drift,
    duplicates_rule_drift,
    event_rule_check,
    k_core_warning,
    missing_items_warning,
    missing_users_warning,
    negative_weight_note,
    negative_weight_warning,
    negative_weights_read,
    nothing_accepted,
    quarantine_share_warnings,
    rating_scale_warning,
    role_column,
    rows_text,
    rows_without_time,
    summed_ratings_warning,
    unread_time_warning,
    untimed_rows_warning,
    weight_drift,
    weight_policy,
    zero_weight_warning,
)
from recsys.data.readers import (
    READER_VERSION,
    ROW,
    SOURCE_FILE,
    RawSource,
    first_error_line,
    row_numbers,
    scan_source,
)
from recsys.data.remote import as_url, local_path_of
from recsys.data.schema import EVENT, FIRST_SEEN, ITEM, ITEM_IDX, TIME, USER, USER_IDX, WEIGHT
from recsys.data.sorting import sort_in_parallel
from recsys.data.source_stamp import (
    SourceStamp,
    changed_error,
    changed_files,
    content_digest,
    source_paths,
    stat_files,
)
from recsys.data.suspicions import suspicions
from recsys.data.validation import REASON, ValidationResult, validate
from recsys.data.vocab import Vocab
from recsys.errors import AlreadyIngested, DataError
from recsys.faults import fault_point

MANIFEST_VERSION = 1
JSON_KEYS = ("rows_in", "rows_accepted", "rows_quarantined", "users", "items", "interactions", "fingerprint")

Progress = Callable[[str], None]


@dataclass
class IngestReport:
    """What one ingest call did. rows_* count this call's source (rows_in == accepted + quarantined);
    users / items / interactions / fingerprint describe the whole processed set afterwards.
    `replaced_batches`: the manifest's batches that a non-append ingest replaced, read under the
    writer lock, so they are what the directory held when this call swapped its data in (read
    before the lock, an append that ran while this call waited was replaced but not named)."""

    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    users: int
    items: int
    interactions: int
    fingerprint: str
    steps: list[FilterStep]
    out_dir: Path
    quarantine_path: Path | None
    seconds: float
    reasons: dict[str, int] = field(default_factory=dict)
    batch: int = 1
    format: str = ""
    mapping: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one line each, also in the manifest
    planted: bool = False  # the vocab's blocks are a `recsys data synth` folder's planted clusters
    ingest_id: str = ""  # this call's batch's "ingest_id" in the manifest (`replaced_since`)
    replaced_batches: list[dict] = field(default_factory=list)  # a non-append ingest's predecessors
    rows_without_time: int = 0  # accepted rows with an empty time where the log has a time column

    def to_json_dict(self) -> dict[str, int | str]:
        return {key: getattr(self, key) for key in JSON_KEYS}


def read_canonical(
    source: str | Path,
    format: str | None = None,
    columns: ColumnMap | None = None,
    *,
    max_future_days: float = 1.0,
    decimal: str = "auto",
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Read and validate one source without storing anything.

    Returns (accepted rows in the canonical schema + source_row, quarantined raw rows with reason,
    rows_in). Raises DataError when the file cannot be read at all."""
    result = validate(scan_source(source, format, columns), max_future_days, decimal=decimal)
    return result.accepted, result.quarantine, result.rows_in


def _writable_place(out_dir: Path) -> None:
    """Refuse early, in one line, an output that cannot be created: a file where a folder must
    go (`--out file.csv/sub`), a read-only or virtual file system (`/proc/x`). The folders the
    probe makes go again (the writer lock makes them, and removes them when nothing is written)."""
    ancestor = out_dir.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    problem = None
    if not ancestor.is_dir():
        problem = f"{ancestor} is a file, not a directory"
    else:
        made = [folder for folder in (out_dir.parent, *out_dir.parent.parents) if not folder.exists()]
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryDirectory(prefix=".recsys-probe-", dir=out_dir.parent).cleanup()
        except OSError as exc:
            problem = exc.strerror or str(exc)
        storage.remove_empty(made)
    if problem:
        raise DataError(
            f"cannot write the processed data ({out_dir}: {problem}): choose another {{option}}",
            setting="data.processed_dir",
            value="DIR",
        )


def _check_readable(paths) -> None:
    """Every earlier batch must be whole Parquet before an append builds on it (reads only the
    footers): a damaged one is a one-line error, not a failure half-way through the append."""
    for path in paths:
        try:
            pl.read_parquet_schema(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise DataError(
                f"processed data is damaged ({path}: {first_error_line(exc)}): ingest again into a new --out "
                "(or without --append) to rebuild it"
            ) from None


def _refuse_out_dir(out_dir: Path, append: bool) -> None:
    """The output refusals, checked before the writer lock is taken: its file goes beside the
    output (`.NAME.lock`), so a refusal found under the lock left that file behind. `--out .` (or
    `--out ""`, the same path) has no name and is its own parent: its lock went inside it, as
    `..lock`, and the swap that replaces the directory whole cannot replace the working directory.
    `_ingest` checks again under the lock (another writer may have changed it since)."""
    try:
        here = Path.cwd().resolve()
    except OSError:  # the working directory was removed: nothing of it can be the output
        here = None
    if here is not None and here.is_relative_to(out_dir.resolve()):
        raise DataError(
            f"{out_dir}: the processed data directory is replaced whole, so it cannot be the working directory "
            "or a folder above it: name a folder for it, e.g. {option}",
            setting="data.processed_dir",
            value="data/processed/NAME",
        )
    _prepare_out_dir(out_dir, append)


def _prepare_out_dir(out_dir: Path, append: bool) -> dict | None:
    """The existing manifest when appending to a processed dir; refuse to overwrite foreign dirs."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: output exists and is not a directory")
    if storage.is_processed_dir(out_dir):
        return storage.read_manifest(out_dir) if append else None
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir}: output directory is not empty and is not a processed data directory")
    return None


def _held_batches(out_dir: Path) -> list[dict]:
    """The batches of the processed directory at `out_dir` ([] when there is none, or its manifest
    cannot be read: the ingest replaces it either way, and says what is wrong where it must)."""
    if not storage.is_processed_dir(out_dir):
        return []
    try:
        return list(storage.read_manifest(out_dir).get("batches", []))
    except DataError:
        return []


def _cross_batch_repeats(result: ValidationResult, previous: list[tuple[int, pl.LazyFrame]]) -> np.ndarray:
    """True for each accepted row of `result` that exactly repeats a row of an earlier batch.

    Rows compare on every canonical column; a batch without an event column has null events, so a
    `buy` never repeats a row stored without its event type. Only earlier rows of this batch's
    users are compared, so a small append to a large history does not hash the whole history."""
    *earlier_frames, new = aligned_ids([frame for _, frame in previous] + [result.rows.lazy()])
    schemas = [frame.collect_schema().names() for frame in [*earlier_frames, new]]
    keys = [c for c in (USER, ITEM, TIME, WEIGHT, EVENT) if any(c in names for names in schemas)]

    def comparable(frame: pl.LazyFrame, names: list[str]) -> pl.LazyFrame:
        # EVENT is the one optional canonical column (see schema.OPTIONAL_COLUMNS).
        return frame.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in keys if c not in names)

    new = comparable(new, schemas[-1]).with_row_index("_i")
    earlier = pl.concat(
        [comparable(f, names).select(keys) for f, names in zip(earlier_frames, schemas[:-1], strict=True)],
        how="vertical_relaxed",
    )
    earlier = earlier.join(new.select(pl.col(USER).unique()), on=USER, how="semi")
    repeated = new.join(earlier, on=keys, how="semi", nulls_equal=True).select("_i").collect()
    repeat_mask = np.zeros(result.rows.height, dtype=bool)
    repeat_mask[repeated.get_column("_i").to_numpy()] = True
    return repeat_mask


def _drop_cross_batch_duplicates(
    result: ValidationResult, raw: RawSource, previous: list[tuple[int, pl.LazyFrame]]
) -> ValidationResult:
    """Move accepted rows that exactly repeat a row of an earlier batch into the quarantine
    (`_cross_batch_repeats`), so an append of rows already ingested does not count them twice."""
    if not previous:
        return result
    repeat_mask = _cross_batch_repeats(result, previous)
    if not repeat_mask.any():
        return result
    is_repeat = pl.Series(repeat_mask)
    moved = _source_text(raw, result.rows.filter(is_repeat)).with_columns(pl.lit("duplicate").alias(REASON))
    order = [SOURCE_FILE, ROW] if raw.per_file else [ROW]
    quarantine = pl.concat([result.quarantine, moved], how="vertical_relaxed").sort(order)
    reasons = dict(result.reasons)
    reasons["duplicate"] = reasons.get("duplicate", 0) + moved.height
    return ValidationResult(
        rows=result.rows.filter(~is_repeat),
        quarantine=quarantine,
        rows_in=result.rows_in,
        reasons=reasons,
    )


def _all_repeated_note(result: ValidationResult, previous: list[tuple[int, pl.LazyFrame]]) -> list[str]:
    """Under data.exact_duplicates = "keep" an appended row equal to an earlier batch's row is a
    repeated event and is counted, as it would be in one ingest of both files; so an append of a
    file already ingested counts it twice. Nothing tells the two apart row by row, but a batch
    whose every row repeats earlier rows is most likely such a re-run: say so (one line)."""
    if not previous or result.rows.height == 0 or not _cross_batch_repeats(result, previous).all():
        return []
    return [
        f"every accepted row of this batch ({rows_text(result.rows.height)}) equals a row of an earlier batch, and "
        "with data.exact_duplicates = keep they are counted again as repeated events: if this file was "
        "ingested before, ingest the batches afresh without it"
    ]


def _source_text(raw: RawSource, rows: pl.DataFrame) -> pl.DataFrame:
    """The source's own values, as text, of `rows` (found by ROW, and SOURCE_FILE for a
    directory), in the quarantine's columns: what validation shows for any quarantined row.
    Reads the source again, which only an append that repeats earlier rows pays for."""
    on = [SOURCE_FILE, ROW] if raw.per_file else [ROW]
    wanted = rows.lazy().select(on)
    frame = raw.frame.with_columns(row_numbers(raw.per_file)) if raw.positional_rows else raw.frame
    text = [pl.col(c).cast(pl.String) for c in raw.columns]
    try:
        return frame.join(wanted, on=on, how="semi").select(ROW, *text).collect()
    except pl.exceptions.PolarsError:
        if raw.exact is None:  # the source read once, so this is unexpected: keep the parsed values
            return rows.select(ROW, *text)
        # JSON Lines whose lazy decode fails (or a tab-separated file whose quoted read fails):
        # validation read the rebuild, so do the same.
        rebuilt = raw.exact().with_columns(row_numbers(raw.per_file)) if raw.positional_rows else raw.exact()
        return rebuilt.join(wanted, on=on, how="semi").select(ROW, *text).collect()


def _write_batch(result: ValidationResult, batch_path: Path, quarantine_path: Path) -> None:
    """Store this call's validated rows (ids as UInt32 or UInt64 codes where all are canonical
    decimals, see `storage.scan_batches`) and its quarantine."""
    batch_path.parent.mkdir(parents=True)
    storage.write_table(result.rows, batch_path)
    quarantine_path.parent.mkdir(parents=True, exist_ok=True)
    result.quarantine.write_parquet(quarantine_path)


def _indexed_pairs(indexed: pl.LazyFrame) -> pl.DataFrame:
    """The implicit table's columns, collected from the vocab joins, in the joins' order. The
    joins' ~30 chunks are joined into one: `_sorted_by_pair` gathers every column by the new
    order, and a gather from one buffer is cheaper than one across chunks (2.5M pairs: ~0.40
    CPU-s in all against ~0.45)."""
    return indexed.select(USER_IDX, ITEM_IDX, TIME, WEIGHT, FIRST_SEEN).collect().rechunk()


def _sorted_by_pair(joined: pl.DataFrame) -> pl.DataFrame:
    """The implicit table in its stored order, by (user_idx, item_idx): one row per pair, so the
    order does not depend on the order the joins produced. Sorted on one packed key (cheaper
    than a two-column sort), after the joins are collected: inside the same query polars picks
    its multithreaded sort, which on two cores beside the background threads costs more CPU for
    no shorter wall time (`sort_in_parallel`)."""
    pair_key = pl.col(USER_IDX).cast(pl.Int64) * (1 << 32) + pl.col(ITEM_IDX).cast(pl.Int64)
    return joined.sort(pair_key, multithreaded=sort_in_parallel())


def _carry_over_foreign_files(out_dir: Path, tmp: Path, replaced: set[str]) -> None:
    """On append, keep top-level files this module does not own (e.g. a pipeline's ledger), except
    those this call writes anew (`replaced`): they are hard links, so writing one in place would
    change the live directory's copy before the swap."""
    owned = {
        storage.INTERACTIONS_DIR,
        storage.QUARANTINE_DIR,
        storage.IMPLICIT_FILE,
        storage.USERS_FILE,
        storage.ITEMS_FILE,
        storage.MANIFEST_FILE,
    }
    for entry in out_dir.iterdir():
        if entry.name not in owned and entry.name not in replaced and entry.is_file():
            storage.link_or_copy(entry, tmp / entry.name)
"""Share of rows quarantined as missing_user from which ingest says which column may be meant."""
"""Share of rows quarantined for one reason from which a `warning:` line names it (`quarantine_share_warnings`)."""
"""The top of the 1-5 star scale a `positive_min_weight` up to this value is read against."""
"""Weight column names (parts of them: `Book-Rating`, `star_rating`) that say the values are ratings."""
"""Share of pairs below which a k-core's cut is named in a warning."""
"""Share of users below which a k-core's cut is named in a warning, whatever share of pairs it keeps."""


def reader_versions(manifest: dict) -> set[int]:
    """The reader versions (`recsys.data.readers.READER_VERSION`) the batches of `manifest` were
    read with; a batch written before the version was recorded counts as version 0."""
    return {int(b.get("reader_version", 0)) for b in manifest.get("batches") or [] if isinstance(b, dict)}


def _sources(manifest: dict | None) -> list[dict]:
    return list(manifest.get("batches", [])) if manifest else []


def _stamp(
    source: str | Path, given: SourceStamp | None, *, append: bool, now: bool
) -> Callable[[], SourceStamp | None]:
    """The source's stamp (`recsys.data.source_stamp`): `given`, or taken here, before anything
    is read. The files' stat is taken at once. The content digest only for an append (the batch a
    re-run must recognise; a first ingest is idempotent anyway, and hashing 10M rows' CSV costs
    ~0.7 s of CPU): at once when `now` (compared with recorded digests before reading, so a re-run
    stops before the read), else on a background thread while the source is read and validated
    (hashlib releases the GIL). Returns a function giving the stamp (None for a remote source or
    one that is no file or directory)."""
    if given is not None or as_url(source) is not None:
        return lambda: given
    path = Path(source)
    paths = source_paths(path)
    if paths is None:
        return lambda: None
    stats = stat_files(paths)
    if not append:
        unhashed = SourceStamp(None, stats)
        return lambda: unhashed
    if now:
        stamp = SourceStamp(content_digest(path, paths), stats)
        return lambda: stamp
    hashing = ThreadPoolExecutor(1)
    digest = hashing.submit(content_digest, path, paths)
    hashing.shutdown(wait=False)

    def ready() -> SourceStamp:
        try:
            return SourceStamp(digest.result(), stats)
        except OSError:  # a file removed or replaced while it was hashed
            raise changed_error(source, [str(p) for p in paths]) from None

    return ready


def _refuse_same_content(source: str | Path, stamp: SourceStamp | None, recorded: list[dict]) -> None:
    """AlreadyIngested when a batch of the directory holds `stamp`'s content: an `--append`
    re-run after a kill that came once its batch had landed (the digest is in the manifest, which
    is swapped in with the batch, so the two never disagree), or the same file under another
    name. Under data.exact_duplicates = "keep" its rows would otherwise be counted twice; under
    the default they would make a batch of duplicates."""
    if stamp is None or stamp.digest is None:
        return
    same = next((b for b in recorded if b.get("source_digest") == stamp.digest), None)
    if same is None:
        return
    was = f"{same.get('source')}, ingested {same.get('created_at')}"
    raise AlreadyIngested(
        f"{source}: the same content as batch {same.get('batch')} ({was}; {rows_text(int(same.get('rows_in', 0)))} in) "
        "was ingested already",
        batch=int(same.get("batch", 0)),
    )


def ingest(
    source: str | Path,
    out_dir: str | Path,
    cfg: DataConfig,
    *,
    format: str | None = None,
    append: bool = False,
    user_labels: pl.DataFrame | None = None,
    item_labels: pl.DataFrame | None = None,
    progress: Progress | None = None,
    sidecar_files: Mapping[str, object] | None = None,
    keep_vocab: bool = False,
    stamp: SourceStamp | None = None,
    same_content: bool = False,
    check_unchanged: bool = True,
    vocab_of: Path | None = None,
) -> IngestReport:
    """Ingest `source` (file or directory) into the processed directory `out_dir`.

    format forces a reader (default: cfg.format, then detection). append adds a batch to an existing
    processed dir (a missing one is created). user_labels / item_labels: optional (id, block) frames
    stored as the vocab's `block` column (planted clusters, combined sources). sidecar_files: file
    name -> JSON-able value, written into the directory in the same atomic swap as the batch.
    keep_vocab: when not appending, replace the batches but keep the directory's vocab (old ids
    keep their indices, new ones are appended), so models trained on it stay comparable: a run's
    single-file source that grew is re-read whole this way (`pipelines.data`).
    stamp: the source's stat and content digest, taken by a caller that hashed it already (a
    landing zone's ledger); else ingest takes it before reading a local source. Its digest is
    recorded in the batch's manifest entry (`source_digest`), and an append of content a batch
    already holds raises AlreadyIngested, adding nothing, unless `same_content` (repeated events
    that really are new). check_unchanged: a local source whose files changed between the stamp
    and the swap raises SourceChanged, writing nothing (a file still being written); off for a
    run's single growing log, whose next run re-reads it whole anyway.
    vocab_of: a first (non-append) ingest into a new `out_dir` starts from this processed
    directory's vocab, as `keep_vocab` does from `out_dir`'s own: a re-read of a landing zone is
    built beside the directory it replaces (`pipelines.data`), and its indices must not move.
    Holds the directory's writer lock throughout (see the module docstring).
    """
    from recsys.data.synthetic import planted_blocks, reading

    say = progress or (lambda _stage: None)
    source = local_path_of(source)
    local = as_url(source) is None
    if local and not Path(source).exists():  # before the lock: nothing left behind
        raise DataError(f"{source}: no such file or directory")
    # A `recsys data synth` folder is read under its writer's lock, so a rewrite never mixes in.
    with reading(source, say) if local else contextlib.nullcontext():
        planted = None
        if local and user_labels is None and item_labels is None and not append:
            planted = planted_blocks(source)  # `recsys data synth` output: its clusters are the blocks
            if planted is not None:
                source, user_labels, item_labels = planted
        _refuse_out_dir(Path(out_dir), append)  # before the lock: a refusal leaves no lock file behind
        _writable_place(Path(out_dir))  # before the lock, whose file goes beside the output
        with storage.writer_lock(Path(out_dir), say):
            with utf8_source(source, cfg.encoding, Path(out_dir)) as text, text.naming_source():
                report = _ingest(
                    source, Path(out_dir), cfg, format=format, append=append, user_labels=user_labels,
                    item_labels=item_labels, say=say, sidecar_files=dict(sidecar_files or {}), keep_vocab=keep_vocab,
                    stamp=stamp, same_content=same_content, check_unchanged=check_unchanged, text=text,
                    vocab_of=vocab_of,
                )  # fmt: skip
    report.planted = planted is not None
    return report


def _ingest(
    source: str | Path,
    out_dir: Path,
    cfg: DataConfig,
    *,
    format: str | None,
    append: bool,
    user_labels: pl.DataFrame | None,
    item_labels: pl.DataFrame | None,
    say: Progress,
    sidecar_files: dict[str, object],
    keep_vocab: bool = False,
    stamp: SourceStamp | None = None,
    same_content: bool = False,
    check_unchanged: bool = True,
    text: Transcoded | None = None,
    vocab_of: Path | None = None,
) -> IngestReport:
    """`text`: where the source's text is read from (a UTF-8 copy of a file in another encoding,
    see recsys.data.encoding); messages name `source`."""
    started = time.perf_counter()
    text = text or Transcoded(source, source)
    previous_manifest = _prepare_out_dir(out_dir, append)
    replaced = [] if append else _held_batches(out_dir)
    vocab_from = out_dir if previous_manifest or (keep_vocab and replaced) else vocab_of  # not a corrupt one's
    previous_batches = storage.list_batches(out_dir) if previous_manifest else []
    _check_readable(storage.batch_file(out_dir, number) for number in previous_batches)
    batch = (previous_batches[-1] + 1) if previous_batches else 1
    recorded = [b for b in _sources(previous_manifest) if b.get("source_digest")] if append else []
    stamped = _stamp(source, stamp, append=append, now=bool(recorded) and not same_content)
    if recorded and not same_content:
        _refuse_same_content(source, stamped(), recorded)

    say("reading and validating")
    raw = scan_source(text.path, format or cfg.format, cfg.columns, cfg.header)
    keep = cfg.exact_duplicates == "keep"
    result = validate(
        raw,
        cfg.max_future_days,
        decimal=cfg.decimal,
        keep_duplicates=keep,
        keep_negative=negative_weights_read(cfg),
        time_format=cfg.time_format,
    )
    notes = result.notes
    previous = storage.scan_batches(out_dir, previous_batches)
    notes = notes + duplicates_rule_drift(cfg.exact_duplicates, _sources(previous_manifest))
    if keep:
        notes = notes + _all_repeated_note(result, previous)
    else:
        validated = result.rows.height
        result = _drop_cross_batch_duplicates(result, raw, previous)
        if validated and result.rows.height == 0:  # e.g. an --append rerun after a kill that had landed
            notes = notes + [
                f"every accepted row of this batch ({rows_text(validated)}) equals a row of an earlier batch, so it adds "
                "nothing (those rows are quarantined as duplicate): this file was most likely ingested before"
            ]
    fault_point("ingest.read")
    if (
        result.rows_in != result.rows_accepted + result.rows_quarantined
    ):  # pragma: no cover - a bug, not bad data
        raise AssertionError("rows_in != rows_accepted + rows_quarantined")

    now, ingest_id = datetime.now(UTC).isoformat(timespec="seconds"), uuid.uuid4().hex
    # Two background threads (`writer`) write what nothing later reads back: the batch and
    # quarantine on one (pyarrow, single-threaded, ~0.4-0.8 s on 10M rows), the vocab and the
    # implicit table on the other, while this thread goes on deriving and then fingerprints.
    # polars and pyarrow release the GIL, so each side fills the other's single-threaded
    # stretches (Parquet page encoding, file I/O, numpy). Leaving the `with` waits for the
    # writers, so the staged directory is complete (or, on an error, removed only after the
    # writers stopped) and the first failed write is re-raised.
    with storage.staged_directory(out_dir) as tmp, ThreadPoolExecutor(2) as writer:
        say("writing batch")
        if previous_manifest:
            _carry_over_foreign_files(out_dir, tmp, set(sidecar_files))
        for number in previous_batches:
            storage.link_or_copy(storage.batch_file(out_dir, number), storage.batch_file(tmp, number))
            old_q = storage.quarantine_file(out_dir, number)
            if old_q.is_file():
                storage.link_or_copy(old_q, storage.quarantine_file(tmp, number))
        batch_path = storage.batch_file(tmp, batch)
        quarantine_path = storage.quarantine_file(tmp, batch)
        batch_written = writer.submit(_write_batch, result, batch_path, quarantine_path)
        # Ids that are all canonical decimals travel as their integer value: validation checked
        # every row, and it spares building a Categorical here and writing strings there.
        rows = result.rows

        say("implicit conversion and k-core")
        has_event = EVENT in result.rows.columns or any(
            EVENT in f.collect_schema().names() for _, f in previous
        )
        *earlier, rows = aligned_ids([frame for _, frame in previous] + [rows.lazy()])
        aligned = [(number, frame) for (number, _), frame in zip(previous, earlier, strict=True)]
        weights = weight_policy(cfg, raw.mapping, _sources(previous_manifest), result.rows)
        asked = cfg.aggregate
        cfg = cfg.model_copy(update={"aggregate": weights["aggregate"]})
        if weights["column"] is None and (cfg.positive_min_weight or 0) > 1:
            # Every row of a log without weights weighs 1: the rule would drop them all. The columns
            # not read are named too: the one to give is among them (KuaiRec's `watch_ratio`).
            unread = [c for c in raw.header if c not in raw.mapping.values()]
            raise DataError(
                f"{source}: a positive rule weight >= {cfg.positive_min_weight:g} is set but the log has "
                f"no weight column (columns found: {sorted(raw.mapping.values())}"
                f"{f'; not read: {unread}' if unread else ''}), so every row weighs "
                "1 and none would pass: name the rating / count column with {option}, or drop the rule",
                setting="data.columns.weight",
            )
        event_note = event_rule_check(
            cfg, source, all_rows([*aligned, (batch, rows)]), role_column(EVENT, raw.mapping, _sources(previous_manifest))
        )
        pairs, steps = to_implicit(all_rows([*aligned, (batch, rows)]), cfg, has_event)
        if pairs.height == 0:
            if result.rows_accepted == 0 and not previous:
                raise nothing_accepted(source, raw, result)
            emptied = next((step.name for step in steps if step.rows == 0), steps[-1].name)
            relax = (
                "lower data.min_user_interactions / data.min_item_interactions (too few of its users or items "
                "have that many interactions: a sample, or a session log's short sessions?)"
                if emptied.startswith("k-core")
                else "relax the data config"
            )
            raise DataError(f"{source}: no interactions left after filtering ({emptied}){_trail(steps)}; {relax}")

        say("vocab and indexing")
        users = (
            Vocab.load(vocab_from / storage.USERS_FILE, id_name=USER, idx_name=USER_IDX)
            if vocab_from
            else Vocab(id_name=USER, idx_name=USER_IDX)
        )
        items = (
            Vocab.load(vocab_from / storage.ITEMS_FILE, id_name=ITEM, idx_name=ITEM_IDX)
            if vocab_from
            else Vocab(id_name=ITEM, idx_name=ITEM_IDX)
        )
        users = users.extend(pairs.select(USER, ORDER), order=ORDER).with_blocks(user_labels)
        items = items.extend(pairs.select(ITEM, ORDER), order=ORDER).with_blocks(item_labels)
        found = (weights["warning"], event_note, missing_users_warning(raw, result.rows_in, result.reasons),
                 missing_items_warning(raw, result.rows_in, result.reasons),
                 negative_weight_warning(raw, result.rows_in, result.reasons, result.quarantine, cfg), negative_weight_note(steps, weights["column"]),
                 coarse_duplicates_warning(raw, result), unread_time_warning(raw, result),
                 untimed_rows_warning(raw, result, pairs), k_core_warning(steps), rating_scale_warning(cfg, weights["column"], result.rows),
                 summed_ratings_warning(asked, weights, steps, cfg.binarize), zero_weight_warning(steps, weights["column"]), weight_drift(raw.mapping, _sources(previous_manifest), weights["aggregate"]),
                 column_drift(TIME, raw.mapping, _sources(previous_manifest)), column_drift(EVENT, raw.mapping, _sources(previous_manifest)))
        warnings = [w for w in found if w] + notes + suspicions(
            pairs, users, items, result.rows, raw.mapping, raw.header, raw.frame.select(TIME) if TIME in raw.mapping else None
        )
        warnings += quarantine_share_warnings(cfg, raw, result, warnings)
        warnings = [text.rename(w) for w in warnings]
        vocab_saved = [
            writer.submit(users.save, tmp / storage.USERS_FILE),
            writer.submit(items.save, tmp / storage.ITEMS_FILE),
        ]
        joined = _indexed_pairs(items.index(users.index(pairs.lazy(), keep_order=False), keep_order=False))
        # The fingerprint ignores row order, so it runs on the joined pairs beside their sort.
        fingerprinted = writer.submit(storage.fingerprint, joined, users.id_column(), items.id_column())
        indexed = _sorted_by_pair(joined)
        del joined
        written = [
            batch_written,
            *vocab_saved,
            writer.submit(storage.write_table, indexed, tmp / storage.IMPLICIT_FILE),
        ]

        say("fingerprint and manifest")
        digest = fingerprinted.result()
        for future in written:
            future.result()  # re-raises a failed write inside the staged directory
        batch_entry = {
            "batch": batch,
            "source": str(source),
            "format": raw.format,
            "columns": raw.mapping,
            "rows_in": result.rows_in,
            "rows_accepted": result.rows_accepted,
            "rows_quarantined": result.rows_quarantined,
            "reasons": result.reasons,
            "path": str(batch_path.relative_to(tmp)),
            "quarantine": str(quarantine_path.relative_to(tmp)),
            "created_at": now,
            "ingest_id": ingest_id,
            "reader_version": READER_VERSION,  # what reading the source gave (`reader_versions`)
        }
        if keep:  # recorded only when not the default, so default manifests keep their shape
            batch_entry["exact_duplicates"] = cfg.exact_duplicates
        if untimed := rows_without_time(raw, result):  # likewise: only a batch that has such rows
            batch_entry["rows_without_time"] = untimed
        if (source_stamp := stamped()) is not None and source_stamp.digest is not None:
            batch_entry["source_digest"] = source_stamp.digest
        batches = _sources(previous_manifest) + [batch_entry]
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "created_at": previous_manifest.get("created_at", now) if previous_manifest else now,
            "updated_at": now,
            "rows_in": sum(b["rows_in"] for b in batches),
            "rows_accepted": sum(b["rows_accepted"] for b in batches),
            "rows_quarantined": sum(b["rows_quarantined"] for b in batches),
            "interactions": indexed.height,
            "users": len(users),
            "items": len(items),
            "fingerprint": digest,
            "fingerprint_method": storage.FINGERPRINT_METHOD,
            "has_timestamps": bool(indexed.get_column(TIME).is_not_null().any()),
            "schema": {name: str(dtype) for name, dtype in indexed.schema.items()},
            "sources": [b["source"] for b in batches],
            "batches": batches,
            "steps": [s.to_dict() for s in steps],
            "weights": weights,
            "warnings": warnings,
            "config": cfg.model_dump(mode="json", exclude={"synthetic"}),
            "polars_version": pl.__version__,
        }
        for name, content in sidecar_files.items():
            storage.write_json(tmp / name, content)
        storage.write_json(tmp / storage.MANIFEST_FILE, manifest)
        if check_unchanged and source_stamp is not None and (changed := changed_files(source_stamp, Path(source))):
            raise changed_error(source, changed)  # read while being written: the staging is removed
        fault_point("ingest.staged")

    return IngestReport(
        rows_in=result.rows_in,
        rows_accepted=result.rows_accepted,
        rows_quarantined=result.rows_quarantined,
        users=len(users),
        items=len(items),
        interactions=indexed.height,
        fingerprint=digest,
        steps=steps,
        out_dir=out_dir,
        quarantine_path=storage.quarantine_file(out_dir, batch),
        seconds=time.perf_counter() - started,
        reasons=result.reasons,
        batch=batch,
        format=raw.format,
        mapping=raw.mapping,
        warnings=warnings,
        ingest_id=ingest_id,
        replaced_batches=replaced,
        rows_without_time=rows_without_time(raw, result),
    )


def replaced_since(report: IngestReport) -> str | None:
    """None while `report.out_dir` still holds the batch that ingest call wrote (later appends keep
    it); else one line saying another writer replaced the directory since. The writer lock keeps two
    ingests from mixing, but a non-append ingest that ran right after this one swapped in its own
    data, and this call's summary, quarantine path and next step would name a directory that no
    longer holds what the summary describes."""
    try:
        batches = storage.read_manifest(report.out_dir)["batches"]
    except DataError:  # gone, or another writer between its renames
        batches = []
    if any(entry.get("ingest_id") == report.ingest_id for entry in batches):
        return None
    now = f" (it now holds {', '.join(str(b.get('source')) for b in batches)})" if batches else ""
    return (
        f"another writer replaced {report.out_dir} after this ingest{now}: the summary above describes "
        "what this command wrote, which is no longer there; ingest again, or give each writer its own --out"
    )


def _trail(steps: list) -> str:
    """The rows each filter step left, when a step before the one that emptied the data already
    removed some: a `clicked` flag read as the weight (95% zeros) left 75 of 1,500 rows after
    `weight > 0`, then the k-core removed the rest, and the error named only the k-core, so lowering
    it looked like the fix. Empty when only the last step removed rows (its name says it all)."""
    rows = [step.rows for step in steps]
    emptied = next((i for i, n in enumerate(rows) if n == 0), len(rows) - 1)
    if emptied < 2 or rows[emptied - 1] == rows[0]:
        return ""
    return "; rows after each step: " + ", ".join(f"{step.name} {step.rows:,}" for step in steps)
