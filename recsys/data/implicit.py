"""Implicit-feedback conversion: positive rule -> aggregation of repeated pairs -> k-core.

These removals are deliberate filtering (the config asks for them), not bad data, so they are
reported step by step (rows, users, items after each) rather than quarantined.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from recsys.config import DataConfig
from recsys.data.first_seen import aggregation as first_seen_aggregation
from recsys.data.schema import EVENT, FIRST_SEEN, ITEM, TIME, USER, WEIGHT
from recsys.data.vocab import CODE_DTYPE, CODE_DTYPES, MAX_CODE, WIDE_CODE_DTYPE
from recsys.errors import DataError

ORDER = "_order"
"""Sort key of a row's first appearance (batch, then source row): new vocab entries follow it."""


@dataclass(frozen=True)
class FilterStep:
    """The table after one step: how many rows (interactions), distinct users and items remain."""

    name: str
    rows: int
    users: int
    items: int

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


def _measure(name: str, frame: pl.DataFrame) -> FilterStep:
    counts = frame.select(pl.len(), pl.col(USER).n_unique(), pl.col(ITEM).n_unique()).row(0)
    return FilterStep(name, int(counts[0]), int(counts[1]), int(counts[2]))


def encode_ids(frame: pl.LazyFrame) -> pl.LazyFrame:
    """user_id / item_id as 4-byte codes: every later step (distinct counts, the (user, item)
    group-by, k-core windows, vocab joins) then hashes codes instead of strings, which is most of
    the ingest time on large logs. String columns become Categorical; columns that already hold
    decimal codes (CODE_DTYPES, see `vocab.decimal_codes`) are kept. Casting either back to String
    gives the ids unchanged."""
    schema = frame.collect_schema()
    return frame.with_columns(
        pl.col(c).cast(pl.Categorical) for c in (USER, ITEM) if schema[c] not in CODE_DTYPES
    )


def positive_filter(frame: pl.LazyFrame, cfg: DataConfig, has_event: bool) -> pl.LazyFrame:
    """Keep rows that count as positive feedback: weight >= positive_min_weight and, when given, an
    event in positive_events and in event_weights (a source without an event column cannot satisfy
    an event rule); then weigh each row by its event's weight (`weigh_events`)."""
    if cfg.positive_min_weight is not None:
        frame = frame.filter(pl.col(WEIGHT) >= cfg.positive_min_weight)
    for setting, events in (("positive_events", cfg.positive_events), ("event_weights", cfg.event_weights)):
        if not events:
            continue
        if not has_event:
            raise DataError(
                f"data.{setting} is set but the source has no event column: name it with {{option}}",
                setting="data.columns.event",
            )
        frame = frame.filter(pl.col(EVENT).is_in(list(events)))
    return weigh_events(frame, cfg)


def weigh_events(frame: pl.LazyFrame, cfg: DataConfig) -> pl.LazyFrame:
    """Each row's weight times its event's `data.event_weights` entry (a log without a weight column
    weighs 1 a row, so the row then weighs its event's weight): a purchase can count for more than a
    view, as in Hu et al.'s confidence or any retail log's view < cart < buy. Rows of other events
    were dropped by `positive_filter`; `auto` then sums them per pair (see `recsys.data.ingest_checks.weight_policy`)."""
    if not cfg.event_weights:
        return frame
    events, values = zip(*cfg.event_weights.items(), strict=True)
    factor = pl.col(EVENT).cast(pl.String).replace_strict(list(events), list(values), return_dtype=pl.Float32)
    return frame.with_columns((pl.col(WEIGHT) * factor).cast(pl.Float32).alias(WEIGHT))


@dataclass(frozen=True)
class _Surrogates:
    """Stand-in 4-byte codes for the few ids of a 64-bit code column that do not fit 32 bits.

    Wide ids (hashed ids, 64-bit user ids) cost ingest a two-column (user, item) group-by, about
    twice the one-u64-key group-by (10M rows, 2.5M pairs, 2 cores: ~0.9 s of CPU against ~0.4 s).
    Often only some ids are wide: those get a block of codes that no narrow id holds, in sorted
    order, so every id has a distinct 4-byte code and the pair key packs again. The block is the
    one just below 2**32 when it is free, else the highest free gap among the narrow ids of the
    upper half (a long-tailed log's narrow ids reach close to 2**32: one narrow id in the first
    block, 1 in 10M rows, used to send the whole log to the two-column group-by).
    `decode` restores the ids after the group-by (on pairs, not rows)."""

    base: int
    wide: np.ndarray  # sorted distinct wide ids; wide[i] has code base + i

    @classmethod
    def of(cls, values: pl.Series) -> tuple[_Surrogates, pl.Series] | None:
        """(surrogates, 4-byte codes of `values`), or None where no block of codes is free.

        Three passes over the rows (a compare, the wrapping cast, the stand-ins' scatter): every
        other step reads only the ids of [2**31, 2**64), which a long-tailed log has few of (10M
        rows: ~0.1 s). polars throughout: a numpy copy of a streamed column (~1,300 chunks on
        the 10M Zipf log) cost ~80 MB of fresh pages per column, ~0.03 CPU-s for both."""
        at_upper = values >= (MAX_CODE + 1) // 2
        upper = values.filter(at_upper).to_numpy()
        is_wide = upper > MAX_CODE
        wide, position = np.unique(upper[is_wide], return_inverse=True)
        if wide.size > MAX_CODE // 2:
            return None
        base = _free_block(upper[~is_wide], wide.size)
        if base is None:
            return None
        codes = values.cast(CODE_DTYPE, wrap_numerical=True).rechunk()  # a wide value wraps here
        stand_ins = at_upper.arg_true().to_numpy()[is_wide]
        return cls(base, wide), codes.scatter(stand_ins, (base + position).astype(np.uint32))

    def decode(self, codes: pl.Series) -> pl.Series:
        ids = codes.to_numpy().astype(np.uint64)
        stand_in = np.flatnonzero(ids >= self.base)
        stand_in = stand_in[ids[stand_in] < self.base + self.wide.size]
        ids[stand_in] = self.wide[ids[stand_in] - self.base]
        return pl.Series(codes.name, ids, dtype=WIDE_CODE_DTYPE)


def _free_block(taken: np.ndarray, size: int) -> int | None:
    """The first code of `size` consecutive 4-byte codes that none of `taken` (the narrow ids of
    [2**31, 2**32)) holds: the block just below 2**32 when free, else the highest gap between
    the distinct taken codes that holds it; None where none does."""
    top, half = MAX_CODE + 1, (MAX_CODE + 1) // 2
    if not np.any(taken >= top - size):
        return top - size
    taken = np.unique(taken)
    bounds = np.concatenate([np.array([half - 1], dtype=np.int64), taken.astype(np.int64), np.array([top], dtype=np.int64)])
    room = np.diff(bounds) - 1  # free codes between two consecutive taken ones
    fits = np.flatnonzero(room >= size)
    return None if fits.size == 0 else int(bounds[fits[-1]] + 1)


def _narrow_wide_ids(frame: pl.LazyFrame) -> tuple[pl.DataFrame, dict[str, _Surrogates]] | None:
    """`frame` collected, with each 64-bit code id column replaced by 4-byte codes (`_Surrogates`),
    when the other id column is 4-byte too; None where a column's codes are not free (or no
    column is wide)."""
    schema = frame.collect_schema()
    wide = [c for c in (USER, ITEM) if schema.get(c) == WIDE_CODE_DTYPE]
    narrow_types = (pl.Categorical, CODE_DTYPE, WIDE_CODE_DTYPE)
    if not wide or any(schema.get(c) not in narrow_types for c in (USER, ITEM)):
        return None
    rows = frame.collect()
    surrogates, columns = {}, []
    for c in wide:
        column = rows.get_column(c)
        if column.null_count():
            return None
        found = _Surrogates.of(column)
        if found is None:
            return None
        surrogates[c] = found[0]
        columns.append(found[1])
    return rows.with_columns(columns), surrogates


def aggregate(frame: pl.LazyFrame, how: str) -> pl.LazyFrame:
    """One row per (user, item). count = number of rows, sum / max of weights, last = the weight of
    the latest row (by timestamp, then input order; null timestamps count as earliest). The
    timestamp kept is always the latest (when the pair was last active: what leave-last-n and a
    sequence model order by); FIRST_SEEN is when it was first seen (`recsys.data.first_seen`: the
    earliest time in its first batch), what temporal and rolling splits place it by, so a repeat
    never moves an old pair into a later test window."""
    weights = {
        "count": pl.len().cast(pl.Float32),
        "sum": pl.col(WEIGHT).sum().cast(pl.Float32),
        # Rows without a weight column weigh 1.0, so summing keeps a weight column and counts otherwise.
        "auto": pl.col(WEIGHT).sum().cast(pl.Float32),
        "max": pl.col(WEIGHT).max().cast(pl.Float32),
        "last": pl.col(WEIGHT).sort_by([TIME, ORDER], nulls_last=False).last().cast(pl.Float32),
    }
    if how not in weights:
        raise DataError(f"unknown aggregate {how!r}; choose auto, count, sum, max or last")
    narrowed = _narrow_wide_ids(frame)
    if narrowed is not None:  # the rows are collected: the first-seen bounds read them, not the source again
        rows, surrogates = narrowed
        first_seen = first_seen_aggregation(rows.lazy(), ORDER)
        pairs = _aggregate_rows(rows.lazy(), weights[how], first_seen).collect()
        return pairs.with_columns(code.decode(pairs.get_column(c)) for c, code in surrogates.items()).lazy()
    return _aggregate_rows(frame, weights[how], first_seen_aggregation(frame, ORDER))


def _aggregate_rows(frame: pl.LazyFrame, weight: pl.Expr, first_seen: pl.Expr) -> pl.LazyFrame:
    """`aggregate` with its weight and first-seen aggregations chosen."""
    schema = frame.collect_schema()
    if schema.get(USER) in (pl.Categorical, CODE_DTYPE) and schema.get(ITEM) in (pl.Categorical, CODE_DTYPE):
        # One u64 key per pair groups far faster than a two-column key. A decimal-code id is read
        # back from its half of the key (taking `first()` per group is a gather over all rows,
        # as costly as the grouping itself); a Categorical one still needs `first()`.
        # Measured (10M rows, 1.4M pairs, 2 cores): this group-by ~0.5-0.7 s in the default
        # (streaming) engine, ~1.1 s in-memory; grouping the key alone ~0.3 s, so the aggregations
        # are cheap. A sort-based variant (user|item|row packed in one u64, np.sort, segment
        # reductions, a gather of the timestamps) was no faster (~0.6-0.8 s) and was not kept.
        high = pl.col(USER).to_physical().cast(pl.UInt64) * pl.lit(1 << 32, dtype=pl.UInt64)
        key = high + pl.col(ITEM).to_physical().cast(pl.UInt64)
        half = pl.lit(1 << 32, dtype=pl.UInt64)
        from_key = {
            USER: (pl.col("_pair") // half).cast(CODE_DTYPE).alias(USER),
            ITEM: (pl.col("_pair") % half).cast(CODE_DTYPE).alias(ITEM),
        }
        coded = [c for c in (USER, ITEM) if schema[c] == CODE_DTYPE]
        return (
            frame.with_columns(key.alias("_pair"))
            .group_by("_pair")
            .agg(
                *(pl.col(c).first() for c in (USER, ITEM) if c not in coded),
                pl.col(TIME).max().alias(TIME),
                weight.alias(WEIGHT),
                pl.col(ORDER).min().alias(ORDER),
                first_seen,
            )
            .select(
                *(from_key[c] if c in coded else pl.col(c) for c in (USER, ITEM)),
                TIME,
                WEIGHT,
                ORDER,
                FIRST_SEEN,
            )
        )
    return frame.group_by(USER, ITEM).agg(
        pl.col(TIME).max().alias(TIME),
        weight.alias(WEIGHT),
        pl.col(ORDER).min().alias(ORDER),
        first_seen,
    )  # 64-bit codes (WIDE_CODE_DTYPE) do not pack into one key: a two-column key, still no strings


ZERO_WEIGHT_STEP = "weight > 0 (weights kept: a weight of 0 is no interaction)"
NEGATIVE_WEIGHT_STEP = "weight >= 0 (a negative weight is no confidence, and no interaction unless data.negative_weights says so)"


def k_core(frame: pl.DataFrame, min_user: int, min_item: int) -> tuple[pl.DataFrame, int]:
    """Drop users with < min_user items and items with < min_item users, repeatedly, until nothing
    changes (removing an item can push a user under the limit and vice versa). The k-core is the
    unique largest subgraph meeting both limits, so the removal order does not matter.
    Returns the core and the number of rounds that removed something."""
    rounds = 0
    if min_user <= 1 and min_item <= 1:
        return frame, rounds
    while True:
        keep = (pl.len().over(USER) >= min_user) & (pl.len().over(ITEM) >= min_item)
        kept = frame.filter(keep)
        if kept.height == frame.height:
            return frame, rounds
        frame, rounds = kept, rounds + 1


def to_implicit(
    frame: pl.LazyFrame, cfg: DataConfig, has_event: bool
) -> tuple[pl.DataFrame, list[FilterStep]]:
    """Validated canonical rows (+ ORDER) -> one row per surviving (user, item) pair with
    user_id, item_id (4-byte codes, see `encode_ids`), timestamp, weight, ORDER, FIRST_SEEN; plus
    the step report."""
    steps: list[FilterStep] = []
    rows = encode_ids(frame)
    has_rule = cfg.positive_min_weight is not None or bool(cfg.positive_events) or bool(cfg.event_weights)
    if has_rule:
        collected = rows.collect()
        validated_rows = collected.height
        steps.append(_measure("validated", collected))
        rule = []
        if cfg.positive_min_weight is not None:
            rule.append(f"weight >= {cfg.positive_min_weight:g}")
        if cfg.positive_events:
            rule.append(f"event in {cfg.positive_events}")
        if cfg.event_weights:
            rule.append("event weighted " + ", ".join(f"{event}={w:g}" for event, w in cfg.event_weights.items()))
        positive_rows = positive_filter(collected.lazy(), cfg, has_event).collect()
        del collected
        steps.append(_measure(f"positive ({' and '.join(rule)})", positive_rows))
        positive = positive_rows.lazy()
    else:
        # Nothing to measure before the aggregation: it reads the rows lazily, so they are not
        # first copied into one more frame (10M rows: ~0.3 GB and ~0.1 s).
        validated_rows = rows.select(pl.len()).collect().item()
        positive = positive_filter(rows, cfg, has_event)
    measured = has_rule
    counted = (cfg.binarize or cfg.aggregate == "count") and (
        cfg.positive_min_weight is not None or cfg.negative_weights == "interaction"
    )  # `recsys.data.ingest_checks.negative_rows_counted` (this module does not import ingest)
    if not counted:
        # Kept weights are confidences, and where each row counts one, a negative row is no
        # interaction (a return) unless the config says it is. Validation quarantines such a row
        # unless the config reads the column as a rating or counts it
        # (`recsys.data.ingest_checks.negative_weights_read`); one can still get here from a rule at or
        # below 0 (`--min-rating -2` on Jester) or an earlier batch ingested under other settings.
        # Summed in, it would cancel a pair's positive rows; counted, a return would be a purchase.
        low = positive.select(pl.col(WEIGHT).min()).collect().item()
        if low is not None and low < 0:
            if not measured:
                steps.append(_measure("validated", positive.collect()))
                measured = True
            positive = positive.filter(pl.col(WEIGHT) >= 0).collect().lazy()
            steps.append(_measure(NEGATIVE_WEIGHT_STEP, positive.collect()))
    pairs = aggregate(positive, cfg.aggregate).collect()
    steps.append(_measure(f"aggregate ({cfg.aggregate})", pairs))
    if not measured:
        # Aggregation keeps every user and item, so the validated rows have the same distinct
        # counts as the pairs: no need for two distinct-counts over every validated row.
        steps.insert(0, FilterStep("validated", validated_rows, steps[0].users, steps[0].items))
    if cfg.binarize:
        pairs = pairs.with_columns(pl.lit(1.0, dtype=pl.Float32).alias(WEIGHT))
    else:
        # A kept weight of 0 (Book-Crossing's and Goodreads' "no rating") is no interaction to any
        # model: the user x item matrix stores no zeros. Dropping those pairs here, as a reported
        # step before the k-core, keeps the k-core, the counts and the matrices telling one story.
        # Counted first: the filter copies every pair (2.5M on a 10M-row log), which the usual log,
        # without zero weights, would pay for nothing.
        if pairs.select((pl.col(WEIGHT) > 0).sum()).item() < pairs.height:
            pairs = pairs.filter(pl.col(WEIGHT) > 0)
            steps.append(_measure(ZERO_WEIGHT_STEP, pairs))
    if cfg.min_user_interactions > 1 or cfg.min_item_interactions > 1:
        pairs, rounds = k_core(pairs, cfg.min_user_interactions, cfg.min_item_interactions)
        name = f"k-core (users >= {cfg.min_user_interactions}, items >= {cfg.min_item_interactions}; {rounds} round{'' if rounds == 1 else 's'})"
        steps.append(_measure(name, pairs))
    return pairs, steps
