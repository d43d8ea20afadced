"""Seeded, reproducible train / validation / test splits over an indexed interaction table.

Five protocols (see DESIGN.md): a global temporal cut-off, a rolling (forward) window for
scheduled runs, leave-last-n per user, random per pair, and strong generalisation (held-out users
whose histories are split into fold-in and test, as in Liang et al. 2018 and Rendle et al.'s iALS
revisit).

Day two: a scheduled run splits a log that has grown since the last run, and the champion it is
compared with was trained on the last run's training part. So a pair's part must never depend on
what else is in the log. Every random decision is a stable 64-bit hash (`recsys.data.hashing`) of
the RAW ids - of the (user id, item id) pair, or of the user id for strong generalisation - mixed
with the seed, and each pair's part is decided on its own hash alone (no ranking within a user,
no vocabulary index): appending users, items or whole batches never moves an existing pair between
train, validation, fold-in and test. The price: a user's share is the configured fraction only on
average, and a user may have no training pair at all (a cold user: evaluation reports such users as
their own group, see `recsys.evaluation.cold`). The same data in any row order gives the same split,
a different seed a different one, and no Python loop touches users or rows.

Time-based protocols are stable in their own way: `rolling` and `temporal` with an explicit cut-off
place a pair by when it was first seen (`first_seen`, see `recsys.data.first_seen`), which no
append changes - not even one that repeats the pair later (play counts, clicks) - so an old pair
never moves. `leave_last_n` is NOT append-stable and is not what scheduled runs use: it holds out
each user's most recent interactions (by the pair's latest timestamp, what next-item protocols
evaluate), so newer pairs push old test pairs into train, and a repeat of an old training pair
makes it the user's latest again and moves it into test - a model trained before the repeat then
saw a test pair (the promotion rule refuses such a comparison as "not comparable").

Leakage is impossible by construction: the input has one row per (user, item) (checked), and every
row lands in exactly one part (or, for a rolling split with an explicit cut-off in the past, in
none: rows after its test window are left out). Every matrix has the full vocab shape so indices
agree everywhere.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.config import ConfigError, SplitConfig
from recsys.data.dataset import InteractionData
from recsys.data.first_seen import pair_time
from recsys.data.hashing import id_hashes, pair_hashes, unit_interval, user_draws
from recsys.data.matrix import event_times, to_csr
from recsys.data.schema import ITEM_IDX, TIME, USER_IDX, WEIGHT
from recsys.data.split import Split
from recsys.errors import DataError, RecsysWarning

# Which part each row goes to (UNUSED: after a rolling split's test window, in no part).
TRAIN, VALIDATION, TEST, FOLD_IN, VALIDATION_FOLD_IN, UNUSED = 0, 1, 2, 3, 4, 5
_PART = "_part"
_KEY = "_key"
_DAY_US = 86_400 * 1_000_000

# Salts keep the different random decisions of one seed independent of each other.
_SALT_ROWS = 1
_SALT_USERS = 2
_SALT_FOLD = 3
_SALT_VALIDATION_USERS = 4

ASSIGNMENT_VERSION = 2
"""How parts are assigned (2: per-pair / per-user hashes of raw ids). In the split meta, hence in the
split digest: runs split by another assignment are never taken for the same split."""


def make_split(
    interactions: pl.DataFrame,
    n_users: int,
    n_items: int,
    cfg: SplitConfig,
    *,
    user_ids: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
) -> Split:
    """Split indexed interactions (user_idx, item_idx, timestamp, weight) by `cfg.protocol`.

    `user_ids` / `item_ids` (index -> raw id, the vocab) are what the random decisions hash; without
    them an index stands for its own id (its decimal text), which is stable only while the vocab is.
    Returns a Split whose matrices are all n_users x n_items float32 CSR; `meta` records the
    protocol, seed, fractions and cut-offs so a run can be reproduced and audited.
    """
    _check_columns(interactions)
    _check_unique_pairs(interactions, n_items)
    builders = {
        "temporal": _temporal,
        "rolling": _rolling,
        "leave_last_n": _leave_last_n,
        "random": _random_per_pair,
        "strong_generalization": _strong_generalization,
    }
    if cfg.protocol not in builders:
        raise ConfigError(
            f"split.protocol: unknown protocol {cfg.protocol!r}; choose one of {sorted(builders)}"
        )
    ids = _IdHashes.of(user_ids, n_users, item_ids, n_items)
    parts, meta = builders[cfg.protocol](interactions, ids, cfg)
    return _assemble(parts, n_users, n_items, cfg, meta)


def split_data(data: InteractionData, cfg: SplitConfig) -> Split:
    """`make_split` on an ingested data set, carrying over the vocab, block labels and fingerprint."""
    split = make_split(
        data.interactions, data.n_users, data.n_items, cfg, user_ids=data.user_ids, item_ids=data.item_ids
    )
    split.user_ids = data.user_ids
    split.item_ids = data.item_ids
    split.user_blocks = data.user_blocks
    split.item_blocks = data.item_blocks
    split.meta["fingerprint"] = data.fingerprint
    split.times = event_times(data.interactions, data.n_users, data.n_items)
    return split


# --------------------------------------------------------------------------------------------------
# Protocols: each returns the interactions with a `_part` column (one of the constants above) and
# protocol-specific meta.


class _IdHashes:
    """Stable hashes of the raw ids behind each index (see `recsys.data.hashing`)."""

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        self.users, self.items = users, items

    @classmethod
    def of(cls, user_ids: np.ndarray | None, n_users: int, item_ids: np.ndarray | None, n_items: int) -> _IdHashes:
        return cls(_hash_vocab(user_ids, n_users, "user"), _hash_vocab(item_ids, n_items, "item"))

    def pairs(self, df: pl.DataFrame, seed: int, salt: int) -> np.ndarray:
        """uint64 per row from its (user id, item id), the seed and the salt."""
        users = self.users[df.get_column(USER_IDX).to_numpy()]
        items = self.items[df.get_column(ITEM_IDX).to_numpy()]
        return pair_hashes(users, items, seed, salt)


def _hash_vocab(ids: np.ndarray | None, n: int, kind: str) -> np.ndarray:
    if ids is None or len(ids) == 0:
        return id_hashes(np.arange(n).astype(str))
    if len(ids) != n:
        raise DataError(f"cannot split: the {kind} vocab has {len(ids)} ids but the data has {n} {kind}s")
    return id_hashes(ids)


def _temporal(df: pl.DataFrame, ids: _IdHashes, cfg: SplitConfig) -> tuple[pl.DataFrame, dict]:
    """Global cut-off: train = first seen <= cutoff < test. Validation sits between a second,
    earlier cut-off and the test cut-off. Default cut-offs are quantiles of the pairs' first-seen
    times, so test_fraction is (up to ties) the share of pairs first seen after the cut-off."""
    placed = pair_time(df.columns)
    _require_timestamps(df, "temporal", placed)
    micros = df.get_column(placed).dt.epoch("us").to_numpy()
    if cfg.cutoff is not None:
        cutoff = _to_micros(cfg.cutoff)
    else:
        cutoff = _lower_quantile(micros, 1.0 - cfg.test_fraction)
    validation_cutoff = None
    if cfg.validation_fraction > 0:
        before = micros[micros <= cutoff]
        if cfg.cutoff is None:
            if cfg.test_fraction + cfg.validation_fraction >= 1:
                raise ConfigError(
                    "split: test_fraction + validation_fraction must be < 1 for a temporal split "
                    f"(got {cfg.test_fraction} + {cfg.validation_fraction})"
                )
            validation_cutoff = _lower_quantile(micros, 1.0 - cfg.test_fraction - cfg.validation_fraction)
        elif before.size:
            # Explicit test cut-off: validation is the last validation_fraction of what precedes it.
            validation_cutoff = _lower_quantile(before, 1.0 - cfg.validation_fraction)
        else:
            validation_cutoff = cutoff
    ts = pl.col(placed).dt.epoch("us")
    part = pl.when(ts > cutoff).then(TEST)
    if validation_cutoff is not None:
        part = part.when(ts > validation_cutoff).then(VALIDATION)
    df = df.with_columns(part.otherwise(TRAIN).cast(pl.Int8).alias(_PART))
    meta = {"cutoff": _iso(cutoff), "placed_by": placed}
    if validation_cutoff is not None:
        meta["validation_cutoff"] = _iso(validation_cutoff)
    return df, meta


def _rolling(df: pl.DataFrame, ids: _IdHashes, cfg: SplitConfig) -> tuple[pl.DataFrame, dict]:
    """Forward evaluation for scheduled runs: test = the pairs first seen in the `window_days` after
    the cut-off, validation = those first seen in the `validation_window_days` before it, train =
    everything first seen earlier.

    The cut-off defaults to the newest timestamp (the log's latest event) minus the window, so it
    advances with every scheduled run on a growing log; a model trained by an earlier run saw only
    pairs first seen before that run's test window, hence never a pair of a later run's test
    window - also when the log repeats old pairs later (a repeat keeps the pair's first-seen time,
    see `recsys.data.first_seen`). With an explicit `cutoff`, pairs first seen after the test
    window belong to no part (nothing trains on the future)."""
    placed = pair_time(df.columns)
    _require_timestamps(df, "rolling", placed)
    micros = df.get_column(placed).dt.epoch("us").to_numpy()
    if micros.size == 0:
        raise DataError("cannot compute a rolling cut-off: no interactions")
    window = int(round(cfg.window_days * _DAY_US))
    validation_days = cfg.window_days if cfg.validation_window_days is None else cfg.validation_window_days
    validation_window = int(round(validation_days * _DAY_US))
    newest = int(df.get_column(TIME).dt.epoch("us").max())
    cutoff = _to_micros(cfg.cutoff) if cfg.cutoff is not None else newest - window
    window_end = cutoff + window
    validation_cutoff = cutoff - validation_window
    if int(micros.min()) > validation_cutoff and int(micros.min()) == newest:
        raise DataError(  # no window length helps: "shorten split.window_days" sent users in circles
            f"rolling split: nothing to train on - every interaction ({micros.size:,}) has the same time "
            f"({_iso(newest)}), so no window leaves an earlier part; use split.protocol = \"random\" (a scheduled "
            'run: with split.scheduled = "as_configured"), or a log whose times span days'
        )
    if int(micros.min()) > validation_cutoff:
        raise DataError(
            f"rolling split: nothing to train on - every interaction is newer than {_iso(validation_cutoff)} "
            f"(test window {cfg.window_days:g} days after {_iso(cutoff)}, validation window "
            f"{validation_days:g} days before it); shorten split.window_days or wait for more data"
        )
    ts = pl.col(placed).dt.epoch("us")
    part = pl.when(ts > window_end).then(UNUSED).when(ts > cutoff).then(TEST)
    if validation_window > 0:
        part = part.when(ts > validation_cutoff).then(VALIDATION)
    df = df.with_columns(part.otherwise(TRAIN).cast(pl.Int8).alias(_PART))
    meta = {
        "cutoff": _iso(cutoff),
        "window_days": cfg.window_days,
        "window_end": _iso(window_end),
        "train_end": _iso(validation_cutoff),
        "placed_by": placed,
    }
    if validation_window > 0:
        meta["validation_cutoff"] = _iso(validation_cutoff)
    return df, meta


def _leave_last_n(df: pl.DataFrame, ids: _IdHashes, cfg: SplitConfig) -> tuple[pl.DataFrame, dict]:
    """Each user's latest n interactions are test; with validation_fraction > 0 the n before them
    are validation. Users with <= n interactions (<= 2n with validation) keep more in train: a user
    is only held out from when at least one interaction stays in train. Timestamp ties are broken by
    the seeded hash of the raw (user id, item id), so ties do not favour low item indices.

    "Latest" is by the pair's latest timestamp, not its first-seen time: next-item evaluation asks
    what the user turned to most recently, and a pair re-consumed today is that (the whole pair is
    held out, all its repeats with it). Not append-stable (see the module docstring): scheduled
    runs use `rolling`."""
    _require_timestamps(df, "leave_last_n")
    n = cfg.n
    with_validation = cfg.validation_fraction > 0
    df = df.with_columns(pl.Series(_KEY, ids.pairs(df, cfg.seed, _SALT_ROWS), dtype=pl.UInt64))
    ordered = df.sort([USER_IDX, TIME, _KEY], descending=[False, True, True])
    position = pl.int_range(pl.len()).over(USER_IDX)  # 0 = latest
    count = pl.len().over(USER_IDX)
    part = pl.when((position < n) & (count > n)).then(TEST)
    if with_validation:
        part = part.when((position < 2 * n) & (count > 2 * n)).then(VALIDATION)
    ordered = ordered.with_columns(part.otherwise(TRAIN).cast(pl.Int8).alias(_PART)).drop(_KEY)
    _warn_on_tied_latest(ordered, n)
    return ordered, {"n": n}


def _warn_on_tied_latest(parts: pl.DataFrame, n: int) -> None:
    """Warn when most held-out users' test items are no later than one of their training items:
    then the seeded hash that breaks ties, not recency, chose what is held out - a random split
    under leave_last_n's name (a log with one timestamp for every row, or dates only). It ran
    without a word, so its numbers read as next-item results."""
    per_user = (
        parts.lazy()
        .group_by(USER_IDX)
        .agg(pl.col(TIME).filter(pl.col(_PART) == TEST).min().alias("_test"),
             pl.col(TIME).filter(pl.col(_PART) == TRAIN).max().alias("_train"))  # fmt: skip
        .filter(pl.col("_test").is_not_null() & pl.col("_train").is_not_null())
        .select(pl.len().alias("held"), (pl.col("_test") <= pl.col("_train")).sum().alias("tied"))
        .collect()
    )
    held, tied = int(per_user["held"][0]), int(per_user["tied"][0])
    if held and 2 * tied > held:
        warnings.warn(
            f"leave_last_n: for {tied:,} of {held:,} held-out users the latest {n} interaction(s) share their "
            "time with a training interaction (a log with one time for every row, or dates only), so a seeded "
            'hash chose what is held out, not recency: the split is a random one; use split.protocol = "random" '
            "to say so, or a log with finer times",
            RecsysWarning,
            stacklevel=2,
        )


def _random_per_pair(df: pl.DataFrame, ids: _IdHashes, cfg: SplitConfig) -> tuple[pl.DataFrame, dict]:
    """Each (user, item) pair is test with probability test_fraction and validation with
    probability validation_fraction, decided by the seeded hash of its raw ids alone, so the part of
    a pair never changes when the log grows. A user's test share is test_fraction on average; a
    user whose pairs all fall outside train is a cold test user (reported on its own)."""
    _check_fractions(cfg.test_fraction, cfg.validation_fraction, "test_fraction", "random")
    draw = unit_interval(ids.pairs(df, cfg.seed, _SALT_ROWS))
    part = np.full(draw.size, TRAIN, dtype=np.int8)
    part[draw < cfg.test_fraction + cfg.validation_fraction] = VALIDATION
    part[draw < cfg.test_fraction] = TEST
    return df.with_columns(pl.Series(_PART, part, dtype=pl.Int8)), {}


def _strong_generalization(df: pl.DataFrame, ids: _IdHashes, cfg: SplitConfig) -> tuple[pl.DataFrame, dict]:
    """Hold out whole users: a user is a test user with probability heldout_users (a share < 1)
    and a validation user with probability validation_fraction, by the seeded hash of the raw user
    id; held-out users have no train rows. Each held-out pair is fold-in with probability
    fold_in_fraction, else held-out truth, by the seeded hash of its raw ids. Every decision is a
    pair's or user's own, so appending users or pairs moves nothing; a held-out user whose pairs all
    land in fold-in has no truth and is not evaluated (counted), one with no fold-in is a cold user.

    heldout_users >= 1 is a count: the users with the smallest hashes. A count is not stable under
    appended users (a new user can displace an old one); scheduled runs should use a share."""
    active = df.get_column(USER_IDX).unique().to_numpy().astype(np.int64)
    draws = user_draws(ids.users[active], cfg.seed, _SALT_USERS)
    if cfg.heldout_users >= 1:
        n_test = min(int(cfg.heldout_users), active.size)
        order = np.argsort(draws, kind="stable")
        is_test = np.zeros(active.size, dtype=bool)
        is_test[order[:n_test]] = True
        other = unit_interval(user_draws(ids.users[active], cfg.seed, _SALT_VALIDATION_USERS))
        is_validation = ~is_test & (other < cfg.validation_fraction)
    else:
        _check_fractions(cfg.heldout_users, cfg.validation_fraction, "heldout_users", "strong_generalization")
        unit = unit_interval(draws)
        is_test = unit < cfg.heldout_users
        is_validation = ~is_test & (unit < cfg.heldout_users + cfg.validation_fraction)
    if is_test.sum() + is_validation.sum() >= active.size:
        raise DataError(
            f"strong_generalization: all {active.size} users would be held out ({int(is_test.sum())} test + "
            f"{int(is_validation.sum())} validation) and none would stay in train; hold out fewer users"
        )
    role = np.zeros(int(active.max()) + 1 if active.size else 0, dtype=np.int8)  # 0 train, 1 test, 2 validation
    role[active[is_test]] = 1
    role[active[is_validation]] = 2
    user_role = role[df.get_column(USER_IDX).to_numpy()]
    in_fold = unit_interval(ids.pairs(df, cfg.seed, _SALT_FOLD)) < cfg.fold_in_fraction
    part = np.full(df.height, TRAIN, dtype=np.int8)
    part[(user_role == 1) & in_fold] = FOLD_IN
    part[(user_role == 1) & ~in_fold] = TEST
    part[(user_role == 2) & in_fold] = VALIDATION_FOLD_IN
    part[(user_role == 2) & ~in_fold] = VALIDATION
    df = df.with_columns(pl.Series(_PART, part, dtype=pl.Int8))
    meta = {
        "n_test_users": int(is_test.sum()),
        "n_validation_users": int(is_validation.sum()),
        "n_active_users": int(active.size),
    }
    return df, meta


# --------------------------------------------------------------------------------------------------
# Assembly and helpers.


def _assemble(parts: pl.DataFrame, n_users: int, n_items: int, cfg: SplitConfig, meta: dict) -> Split:
    def matrix(part: int) -> sp.csr_matrix:
        return to_csr(parts.filter(pl.col(_PART) == part), n_users, n_items)

    strong = cfg.protocol == "strong_generalization"
    has_validation = _has_validation(cfg)
    split = Split(
        protocol=cfg.protocol,
        train=matrix(TRAIN),
        test=matrix(TEST),
        validation=matrix(VALIDATION) if has_validation else None,
        fold_in=matrix(FOLD_IN) if strong else None,
        validation_fold_in=(matrix(VALIDATION_FOLD_IN) if has_validation else None) if strong else None,
    )
    split.meta = {
        "protocol": cfg.protocol,
        "seed": cfg.seed,
        "test_fraction": cfg.test_fraction,
        "validation_fraction": cfg.validation_fraction,
        **({"heldout_users": cfg.heldout_users, "fold_in_fraction": cfg.fold_in_fraction} if strong else {}),
        "assignment": ASSIGNMENT_VERSION,
        **meta,
        "rows": {name: int(m.nnz) for name, m in _named_matrices(split).items()},
    }
    return split


def _has_validation(cfg: SplitConfig) -> bool:
    """A rolling split validates on the window before the cut-off unless that window is 0 days."""
    if cfg.protocol == "rolling":
        return cfg.validation_window_days is None or cfg.validation_window_days > 0
    return cfg.validation_fraction > 0


def _check_fractions(first: float, validation: float, name: str, protocol: str) -> None:
    if first + validation >= 1:
        raise ConfigError(
            f"split: {name} + validation_fraction must be < 1 for a {protocol} split (got {first} + {validation}); "
            "something must stay in train"
        )


def _named_matrices(split: Split) -> dict[str, sp.csr_matrix]:
    named = {
        "train": split.train,
        "validation": split.validation,
        "test": split.test,
        "fold_in": split.fold_in,
        "validation_fold_in": split.validation_fold_in,
    }
    return {k: v for k, v in named.items() if v is not None}


def _check_columns(df: pl.DataFrame) -> None:
    missing = [c for c in (USER_IDX, ITEM_IDX, TIME, WEIGHT) if c not in df.columns]
    if missing:
        raise DataError(f"cannot split interactions: missing column(s) {missing}; have {df.columns}")


def _check_unique_pairs(df: pl.DataFrame, n_items: int) -> None:
    """Uniqueness is what makes leakage impossible; ingest aggregates repeats, so this is a guard."""
    pairs = df.select(
        (pl.col(USER_IDX).cast(pl.Int64) * n_items + pl.col(ITEM_IDX).cast(pl.Int64)).n_unique()
    ).item()
    if pairs != df.height:
        raise DataError(
            f"cannot split interactions: {df.height - pairs} repeated (user, item) rows; "
            "aggregate repeats first (ingest does this with data.aggregate)"
        )


def _require_timestamps(df: pl.DataFrame, protocol: str, column: str = TIME) -> None:
    missing = df.get_column(column).null_count()
    if df.height and missing == df.height:
        raise DataError(
            f"{protocol} split needs timestamps; this data has none (all {df.height} rows have a null timestamp). "
            'Use split.protocol = "random" or "strong_generalization".'
        )
    if missing:
        raise DataError(
            f"{protocol} split needs timestamps; {missing} of {df.height} rows have none (every source row of "
            "those had an empty time: rows_without_time in the ingest manifest). Drop those rows from the source "
            'and ingest again, or use split.protocol = "random" or "strong_generalization".'
        )


def _lower_quantile(values: np.ndarray, q: float) -> int:
    """The value with a share q of the data at or below it (the 'lower' quantile: an actual value)."""
    if values.size == 0:
        raise DataError("cannot compute a temporal cut-off: no interactions")
    index = int(np.ceil(q * values.size)) - 1
    index = min(max(index, 0), values.size - 1)
    return int(np.partition(values, index)[index])


def _to_micros(moment: datetime) -> int:
    """Naive datetimes are taken as UTC, like every timestamp in the canonical schema."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(pl.Series([moment]).cast(pl.Datetime("us", "UTC")).dt.epoch("us")[0])


def _iso(micros: int) -> str:
    return pl.Series([micros]).cast(pl.Datetime("us", "UTC"))[0].isoformat()
