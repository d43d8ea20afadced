"""Seeded, reproducible train / validation / test splits over an indexed interaction table.

Four protocols (see DESIGN.md): a global temporal cut-off, leave-last-n per user, random per user,
and strong generalisation (held-out users whose histories are split into fold-in and test, as in
Liang et al. 2018 and Rendle et al.'s iALS revisit).

Randomness never depends on row order: every random decision is a 64-bit hash (splitmix64) of the
(user, item) pair, or of the user, mixed with the seed. The same data in any order with the same seed
gives the same split, a different seed a different one, and no Python loop touches users or rows.

Leakage is impossible by construction: the input has one row per (user, item) (checked), and every
row lands in exactly one part. Every matrix has the full vocab shape so indices agree everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys.config import ConfigError, SplitConfig
from recsys.data.dataset import InteractionData
from recsys.data.matrix import to_csr
from recsys.data.schema import ITEM_IDX, TIME, USER_IDX, WEIGHT
from recsys.data.split import Split
from recsys.errors import DataError

# Which part each row goes to.
TRAIN, VALIDATION, TEST, FOLD_IN, VALIDATION_FOLD_IN = 0, 1, 2, 3, 4
_PART = "_part"
_KEY = "_key"

# Salts keep the different random decisions of one seed independent of each other.
_SALT_ROWS = 1
_SALT_USERS = 2
_SALT_FOLD = 3


def make_split(interactions: pl.DataFrame, n_users: int, n_items: int, cfg: SplitConfig) -> Split:
    """Split indexed interactions (user_idx, item_idx, timestamp, weight) by `cfg.protocol`.

    Returns a Split whose matrices are all n_users x n_items float32 CSR; `meta` records the
    protocol, seed, fractions and (temporal) cut-offs so a run can be reproduced and audited.
    """
    _check_columns(interactions)
    _check_unique_pairs(interactions, n_items)
    builders = {
        "temporal": _temporal,
        "leave_last_n": _leave_last_n,
        "random": _random_per_user,
        "strong_generalization": _strong_generalization,
    }
    if cfg.protocol not in builders:
        raise ConfigError(
            f"split.protocol: unknown protocol {cfg.protocol!r}; choose one of {sorted(builders)}"
        )
    parts, meta = builders[cfg.protocol](interactions, n_items, cfg)
    return _assemble(parts, n_users, n_items, cfg, meta)


def split_data(data: InteractionData, cfg: SplitConfig) -> Split:
    """`make_split` on an ingested data set, carrying over the vocab, block labels and fingerprint."""
    split = make_split(data.interactions, data.n_users, data.n_items, cfg)
    split.user_ids = data.user_ids
    split.item_ids = data.item_ids
    split.user_blocks = data.user_blocks
    split.item_blocks = data.item_blocks
    split.meta["fingerprint"] = data.fingerprint
    return split


# --------------------------------------------------------------------------------------------------
# Protocols: each returns the interactions with a `_part` column (one of the constants above) and
# protocol-specific meta.


def _temporal(df: pl.DataFrame, n_items: int, cfg: SplitConfig) -> tuple[pl.DataFrame, dict]:
    """Global cut-off: train = timestamp <= cutoff < test. Validation sits between a second, earlier
    cut-off and the test cut-off. Default cut-offs are interaction-time quantiles, so test_fraction
    is (up to ties) the share of interactions after the cut-off."""
    _require_timestamps(df, "temporal")
    micros = df.get_column(TIME).dt.epoch("us").to_numpy()
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
    ts = pl.col(TIME).dt.epoch("us")
    part = pl.when(ts > cutoff).then(TEST)
    if validation_cutoff is not None:
        part = part.when(ts > validation_cutoff).then(VALIDATION)
    df = df.with_columns(part.otherwise(TRAIN).cast(pl.Int8).alias(_PART))
    meta = {"cutoff": _iso(cutoff)}
    if validation_cutoff is not None:
        meta["validation_cutoff"] = _iso(validation_cutoff)
    return df, meta


def _leave_last_n(df: pl.DataFrame, n_items: int, cfg: SplitConfig) -> tuple[pl.DataFrame, dict]:
    """Each user's latest n interactions are test; with validation_fraction > 0 the n before them
    are validation. Users with <= n interactions (<= 2n with validation) keep more in train: a user
    is only held out from when at least one interaction stays in train. Timestamp ties are broken by
    the seeded pair hash, so ties do not favour low item indices."""
    _require_timestamps(df, "leave_last_n")
    n = cfg.n
    with_validation = cfg.validation_fraction > 0
    df = df.with_columns(_pair_key(df, n_items, cfg.seed, _SALT_ROWS))
    ordered = df.sort([USER_IDX, TIME, _KEY], descending=[False, True, True])
    position = pl.int_range(pl.len()).over(USER_IDX)  # 0 = latest
    count = pl.len().over(USER_IDX)
    part = pl.when((position < n) & (count > n)).then(TEST)
    if with_validation:
        part = part.when((position < 2 * n) & (count > 2 * n)).then(VALIDATION)
    ordered = ordered.with_columns(part.otherwise(TRAIN).cast(pl.Int8).alias(_PART)).drop(_KEY)
    return ordered, {"n": n}


def _random_per_user(df: pl.DataFrame, n_items: int, cfg: SplitConfig) -> tuple[pl.DataFrame, dict]:
    """Shuffle each user's items (seeded hash order) and hold out round(test_fraction * count) of
    them -- at least one when the user has two or more, and never all: one item always stays in
    train. Validation takes round(validation_fraction * count) of the rest (at least one when
    enabled and two or more remain)."""
    df = df.with_columns(_pair_key(df, n_items, cfg.seed, _SALT_ROWS))
    rank = pl.col(_KEY).rank("ordinal").over(USER_IDX)  # 1-based, a seeded shuffle
    count = pl.len().over(USER_IDX).cast(pl.Int64)
    n_test = _share_of(count, cfg.test_fraction, count - 1)
    part = pl.when(rank <= n_test).then(TEST)
    if cfg.validation_fraction > 0:
        n_validation = _share_of(count, cfg.validation_fraction, count - 1 - n_test)
        part = part.when(rank <= n_test + n_validation).then(VALIDATION)
    df = df.with_columns(part.otherwise(TRAIN).cast(pl.Int8).alias(_PART)).drop(_KEY)
    return df, {}


def _strong_generalization(df: pl.DataFrame, n_items: int, cfg: SplitConfig) -> tuple[pl.DataFrame, dict]:
    """Hold out whole users: heldout_users (a share of users if < 1, else a count) become test users,
    validation_fraction (a share) validation users; their train rows are empty. Only users with two
    or more interactions are eligible, since a history of one cannot give both fold-in and truth.
    Each held-out history is split per user (seeded) into fold-in (fold_in_fraction, at least one
    item) and held-out truth (the rest, at least one item)."""
    counts = df.group_by(USER_IDX).agg(pl.len().alias("_count"))
    n_active = counts.height
    eligible = counts.filter(pl.col("_count") >= 2).get_column(USER_IDX).to_numpy().astype(np.int64)
    n_test = int(cfg.heldout_users) if cfg.heldout_users >= 1 else int(round(cfg.heldout_users * n_active))
    n_validation = int(round(cfg.validation_fraction * n_active))
    n_test = max(n_test, 1)
    if cfg.validation_fraction > 0:
        n_validation = max(n_validation, 1)
    if n_test + n_validation >= eligible.size:
        raise DataError(
            f"strong_generalization: asked for {n_test} test + {n_validation} validation users, but only "
            f"{eligible.size} of {n_active} users have the 2+ interactions needed and some must stay in train"
        )
    order = np.argsort(
        _splitmix64(eligible.astype(np.uint64) ^ _seed_word(cfg.seed, _SALT_USERS)), kind="stable"
    )
    shuffled = eligible[order]
    test_users = np.sort(shuffled[:n_test])
    validation_users = np.sort(shuffled[n_test : n_test + n_validation])

    df = df.with_columns(_pair_key(df, n_items, cfg.seed, _SALT_FOLD))
    rank = pl.col(_KEY).rank("ordinal").over(USER_IDX)
    count = pl.len().over(USER_IDX).cast(pl.Int64)
    n_fold = (count.cast(pl.Float64) * cfg.fold_in_fraction + 0.5).floor().cast(pl.Int64).clip(1, count - 1)
    in_fold = rank <= n_fold
    is_test_user = pl.col(USER_IDX).is_in(pl.Series(test_users.astype(np.int32)))
    is_validation_user = pl.col(USER_IDX).is_in(pl.Series(validation_users.astype(np.int32)))
    part = (
        pl.when(is_test_user & in_fold)
        .then(FOLD_IN)
        .when(is_test_user)
        .then(TEST)
        .when(is_validation_user & in_fold)
        .then(VALIDATION_FOLD_IN)
        .when(is_validation_user)
        .then(VALIDATION)
        .otherwise(TRAIN)
    )
    df = df.with_columns(part.cast(pl.Int8).alias(_PART)).drop(_KEY)
    meta = {
        "n_test_users": int(test_users.size),
        "n_validation_users": int(validation_users.size),
        "n_eligible_users": int(eligible.size),
    }
    return df, meta


# --------------------------------------------------------------------------------------------------
# Assembly and helpers.


def _assemble(parts: pl.DataFrame, n_users: int, n_items: int, cfg: SplitConfig, meta: dict) -> Split:
    def matrix(part: int) -> sp.csr_matrix:
        return to_csr(parts.filter(pl.col(_PART) == part), n_users, n_items)

    strong = cfg.protocol == "strong_generalization"
    has_validation = cfg.validation_fraction > 0
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
        **meta,
        "rows": {name: int(m.nnz) for name, m in _named_matrices(split).items()},
    }
    return split


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


def _require_timestamps(df: pl.DataFrame, protocol: str) -> None:
    missing = df.get_column(TIME).null_count()
    if df.height and missing == df.height:
        raise DataError(
            f"{protocol} split needs timestamps; this data has none (all {df.height} rows have a null timestamp). "
            'Use split.protocol = "random" or "strong_generalization".'
        )
    if missing:
        raise DataError(
            f"{protocol} split needs timestamps; {missing} of {df.height} rows have none. "
            "Quarantine or drop them at ingest, or use a random split."
        )


def _share_of(count: pl.Expr, fraction: float, upper: pl.Expr) -> pl.Expr:
    """round(fraction * count), at least 1, at most `upper` (which may be 0: then none)."""
    wanted = (count.cast(pl.Float64) * fraction + 0.5).floor().cast(pl.Int64)
    return pl.max_horizontal(pl.lit(1, pl.Int64), wanted).clip(upper_bound=upper).clip(lower_bound=0)


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


def _pair_key(df: pl.DataFrame, n_items: int, seed: int, salt: int) -> pl.Series:
    """A seeded pseudo-random uint64 per (user, item), independent of row order."""
    pair = df.get_column(USER_IDX).to_numpy().astype(np.uint64) * np.uint64(max(n_items, 1))
    pair += df.get_column(ITEM_IDX).to_numpy().astype(np.uint64)
    return pl.Series(_KEY, _splitmix64(pair ^ _seed_word(seed, salt)), dtype=pl.UInt64)


def _seed_word(seed: int, salt: int) -> np.uint64:
    mixed = _splitmix64(np.array([(seed * 0x1000193 + salt) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return mixed[0]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised splitmix64 finaliser (Steele et al.): a fast, well-mixed 64-bit hash."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
