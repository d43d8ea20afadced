"""Every split protocol: no leakage, reproducible by seed, shares as configured, right items held out."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recsys.config import SplitConfig
from recsys.data.dataset import InteractionData
from recsys.data.matrix import event_times
from recsys.data.schema import FIRST_SEEN
from recsys.data.splits import make_split, split_data
from recsys.errors import ConfigError, DataError

N_USERS, N_ITEMS = 300, 200
START = datetime(2024, 1, 1, tzinfo=UTC)
PROTOCOLS = ["temporal", "rolling", "leave_last_n", "random", "strong_generalization"]


def interactions(seed: int = 7, n_users: int = N_USERS, n_items: int = N_ITEMS) -> pl.DataFrame:
    """Unique (user, item) pairs with skewed activity (1 to ~60 items per user) and distinct-ish times."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.geometric(1 / 15, size=n_users), n_items)
    users = np.repeat(np.arange(n_users), sizes)
    # distinct items per user: rank random keys per user and take the first `size`
    keys = rng.random((n_users, n_items)).argsort(axis=1)
    items = np.concatenate([keys[u, :s] for u, s in enumerate(sizes)])
    seconds = rng.integers(0, 90 * 86400, size=users.size)
    return pl.DataFrame(
        {
            "user_idx": users.astype(np.int32),
            "item_idx": items.astype(np.int32),
            "timestamp": pl.Series([START + timedelta(seconds=int(s)) for s in seconds]).cast(
                pl.Datetime("us", "UTC")
            ),
            "weight": rng.integers(1, 6, size=users.size).astype(np.float32),
        }
    )


def lookup_times(df: pl.DataFrame, matrix: sp.csr_matrix) -> np.ndarray:
    """Timestamps (epoch us) of the interactions stored in `matrix`."""
    coo = matrix.tocoo()
    cells = pl.DataFrame({"user_idx": coo.row.astype(np.int32), "item_idx": coo.col.astype(np.int32)})
    joined = cells.join(df, on=["user_idx", "item_idx"], how="left")
    assert joined.get_column("timestamp").null_count() == 0
    return joined.get_column("timestamp").dt.epoch("us").to_numpy()


def assert_disjoint(*matrices: sp.csr_matrix) -> None:
    present = [m for m in matrices if m is not None]
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            assert a.multiply(b).nnz == 0


def assert_partition(df: pl.DataFrame, split) -> None:
    """Every interaction lands in exactly one part, with its weight."""
    parts = [split.train, split.validation, split.test, split.fold_in, split.validation_fold_in]
    parts = [p for p in parts if p is not None]
    assert_disjoint(*parts)
    total = sum(parts[1:], parts[0]).tocsr()
    full = sp.csr_matrix(
        (df["weight"].to_numpy(), (df["user_idx"].to_numpy(), df["item_idx"].to_numpy())),
        shape=(N_USERS, N_ITEMS),
    )
    assert (total != full).nnz == 0


def same(a: sp.csr_matrix | None, b: sp.csr_matrix | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and (a != b).nnz == 0


@pytest.fixture(scope="module")
def data() -> pl.DataFrame:
    return interactions()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("validation_fraction", [0.0, 0.1])
def test_no_interaction_is_lost_or_leaked(data, protocol, validation_fraction):
    split = make_split(
        data, N_USERS, N_ITEMS,
        SplitConfig(protocol=protocol, validation_fraction=validation_fraction, window_days=9,
                    validation_window_days=9 if validation_fraction else 0),
    )  # fmt: skip
    for m in (split.train, split.test, split.validation, split.fold_in, split.validation_fold_in):
        if m is not None:
            assert m.shape == (N_USERS, N_ITEMS) and m.dtype == np.float32
    assert split.test.nnz > 0
    assert (split.validation is not None) == (validation_fraction > 0)
    if validation_fraction:
        assert split.validation.nnz > 0
    assert_partition(data, split)
    assert split.meta["protocol"] == protocol and split.meta["seed"] == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_same_seed_same_split_in_any_row_order_and_another_seed_differs(data, protocol):
    cfg = SplitConfig(protocol=protocol, validation_fraction=0.1, seed=3)
    a = make_split(data, N_USERS, N_ITEMS, cfg)
    b = make_split(data.sample(fraction=1.0, shuffle=True, seed=11), N_USERS, N_ITEMS, cfg)
    for name in ("train", "validation", "test", "fold_in", "validation_fold_in"):
        assert same(getattr(a, name), getattr(b, name)), name
    if protocol in ("random", "strong_generalization"):  # time-based protocols reseed only ties
        c = make_split(data, N_USERS, N_ITEMS, cfg.model_copy(update={"seed": 4}))
        assert not same(a.test, c.test)


def test_temporal_puts_every_train_interaction_at_or_before_the_cutoff_and_test_after(data):
    split = make_split(data, N_USERS, N_ITEMS, SplitConfig(protocol="temporal", test_fraction=0.25))
    cutoff = pl.Series([datetime.fromisoformat(split.meta["cutoff"])]).cast(pl.Datetime("us", "UTC"))
    cutoff_us = int(cutoff.dt.epoch("us")[0])
    assert lookup_times(data, split.train).max() <= cutoff_us < lookup_times(data, split.test).min()
    assert split.test.nnz / data.height == pytest.approx(0.25, abs=0.01)


def test_temporal_validation_lies_between_the_two_cutoffs(data):
    cfg = SplitConfig(protocol="temporal", test_fraction=0.2, validation_fraction=0.1)
    split = make_split(data, N_USERS, N_ITEMS, cfg)
    train, val, test = (lookup_times(data, m) for m in (split.train, split.validation, split.test))
    assert train.max() < val.min() and val.max() < test.min()
    assert split.validation.nnz / data.height == pytest.approx(0.1, abs=0.01)
    assert split.meta["validation_cutoff"] < split.meta["cutoff"]


def test_temporal_explicit_cutoff_is_honoured(data):
    cutoff = START + timedelta(days=60)
    split = make_split(
        data, N_USERS, N_ITEMS, SplitConfig(protocol="temporal", cutoff=cutoff.replace(tzinfo=None))
    )
    expected_test = data.filter(pl.col("timestamp") > cutoff).height
    assert split.test.nnz == expected_test
    assert datetime.fromisoformat(split.meta["cutoff"]) == cutoff


@pytest.mark.parametrize("protocol", ["temporal", "rolling", "leave_last_n"])
def test_time_based_protocols_refuse_data_without_timestamps(data, protocol):
    no_time = data.with_columns(pl.lit(None, pl.Datetime("us", "UTC")).alias("timestamp"))
    with pytest.raises(DataError, match=f"{protocol} split needs timestamps; this data has none"):
        make_split(no_time, N_USERS, N_ITEMS, SplitConfig(protocol=protocol))


def test_repeated_pairs_are_refused_because_they_could_leak(data):
    with pytest.raises(DataError, match="repeated"):
        make_split(pl.concat([data, data.head(3)]), N_USERS, N_ITEMS, SplitConfig())


def test_leave_last_n_holds_out_each_users_latest_items():
    # user 0: items 0..4 at days 0..4; user 1: two items; user 2: one item (stays in train)
    rows = [(0, i, i) for i in range(5)] + [(1, 7, 3), (1, 8, 1), (2, 9, 0)]
    df = pl.DataFrame(
        {
            "user_idx": pl.Series([r[0] for r in rows], dtype=pl.Int32),
            "item_idx": pl.Series([r[1] for r in rows], dtype=pl.Int32),
            "timestamp": pl.Series([START + timedelta(days=r[2]) for r in rows]).cast(
                pl.Datetime("us", "UTC")
            ),
            "weight": pl.Series([1.0] * len(rows), dtype=pl.Float32),
        }
    )
    split = make_split(df, 3, 10, SplitConfig(protocol="leave_last_n", n=2, validation_fraction=0.5))
    assert sorted(split.test[0].indices) == [3, 4]
    assert sorted(split.validation[0].indices) == [1, 2]
    assert sorted(split.train[0].indices) == [0]
    # user 1 has 2 <= n interactions: all in train; user 2 likewise
    assert sorted(split.train[1].indices) == [7, 8] and split.test[1].nnz == 0
    assert sorted(split.train[2].indices) == [9]


def test_leave_last_n_on_skewed_data_picks_the_latest(data):
    split = make_split(data, N_USERS, N_ITEMS, SplitConfig(protocol="leave_last_n", n=3))
    counts = data.group_by("user_idx").len()
    heavy = counts.filter(pl.col("len") > 3).get_column("user_idx").to_numpy()
    assert set(split.test_set().users) == set(heavy)
    assert np.all(np.diff(split.test.indptr)[heavy] == 3)
    times = data.with_columns(pl.col("timestamp").dt.epoch("us").alias("t"))
    for user in heavy[:50]:
        mine = times.filter(pl.col("user_idx") == user)
        test_items = split.test[user].indices
        held = mine.filter(pl.col("item_idx").is_in(test_items))["t"]
        kept = mine.filter(~pl.col("item_idx").is_in(test_items))["t"]
        assert held.min() >= kept.max()


def test_leave_last_n_breaks_timestamp_ties_by_seed_not_by_item_index(data):
    tied = data.with_columns(pl.lit(START).cast(pl.Datetime("us", "UTC")).alias("timestamp"))
    tests = [
        make_split(tied, N_USERS, N_ITEMS, SplitConfig(protocol="leave_last_n", seed=s)).test
        for s in range(3)
    ]
    assert not same(tests[0], tests[1]) and not same(tests[1], tests[2])
    assert same(
        tests[0], make_split(tied, N_USERS, N_ITEMS, SplitConfig(protocol="leave_last_n", seed=0)).test
    )


def test_random_holds_out_each_pair_by_its_own_hash(data):
    split = make_split(data, N_USERS, N_ITEMS, SplitConfig(protocol="random", test_fraction=0.2))
    assert split.test.nnz / data.height == pytest.approx(0.2, abs=0.02)
    # per pair, not per user: users' test shares scatter around 0.2 and a user may keep no train pair
    sizes = np.bincount(data["user_idx"].to_numpy(), minlength=N_USERS)
    big = sizes >= 20
    shares = np.diff(split.test.indptr)[big] / sizes[big]
    assert shares.std() > 0.03 and abs(shares.mean() - 0.2) < 0.03


def test_random_validation_share(data):
    split = make_split(
        data, N_USERS, N_ITEMS, SplitConfig(protocol="random", test_fraction=0.2, validation_fraction=0.2)
    )
    assert split.validation.nnz / data.height == pytest.approx(0.2, abs=0.03)
    with pytest.raises(ConfigError, match="must be < 1"):
        make_split(data, N_USERS, N_ITEMS, SplitConfig(protocol="random", test_fraction=0.6, validation_fraction=0.4))


def test_strong_generalization_holds_out_whole_users(data):
    cfg = SplitConfig(
        protocol="strong_generalization", heldout_users=0.2, validation_fraction=0.1, fold_in_fraction=0.75
    )
    split = make_split(data, N_USERS, N_ITEMS, cfg)
    held = lambda *ms: np.flatnonzero(sum(np.diff(m.indptr) for m in ms) > 0)  # noqa: E731
    test_users = held(split.fold_in, split.test)
    val_users = held(split.validation_fold_in, split.validation)
    n_active = data["user_idx"].n_unique()
    assert test_users.size == split.meta["n_test_users"] and val_users.size == split.meta["n_validation_users"]
    assert test_users.size / n_active == pytest.approx(0.2, abs=0.06)
    assert val_users.size / n_active == pytest.approx(0.1, abs=0.05)
    assert not set(test_users) & set(val_users)
    train_rows = np.diff(split.train.indptr)
    assert np.all(train_rows[test_users] == 0) and np.all(train_rows[val_users] == 0)
    # the test set scores held-out users with truth and folds them in from their own fold-in rows
    assert set(split.test_set().users) <= set(test_users)
    assert split.test_set().fold_in is split.fold_in
    assert set(split.validation_set().users) <= set(val_users)
    # fold-in and truth are disjoint, their union is the user's history, fold-in gets ~75%
    sizes = np.bincount(data["user_idx"].to_numpy(), minlength=N_USERS)
    fold = np.diff(split.fold_in.indptr)[test_users]
    truth = np.diff(split.test.indptr)[test_users]
    np.testing.assert_array_equal(fold + truth, sizes[test_users])
    assert fold.sum() / sizes[test_users].sum() == pytest.approx(0.75, abs=0.05)


def test_strong_generalization_with_a_user_count(data):
    split = make_split(
        data, N_USERS, N_ITEMS, SplitConfig(protocol="strong_generalization", heldout_users=25)
    )
    assert np.flatnonzero(np.diff((split.fold_in + split.test).indptr) > 0).size == 25
    assert split.validation is None and split.validation_fold_in is None


def test_strong_generalization_refuses_more_users_than_it_can_hold_out(data):
    with pytest.raises(DataError, match="strong_generalization: all 300 users would be held out"):
        make_split(
            data, N_USERS, N_ITEMS, SplitConfig(protocol="strong_generalization", heldout_users=10_000)
        )


def test_split_data_carries_vocab_blocks_and_fingerprint(data):
    dataset = InteractionData(
        interactions=data,
        user_ids=np.array([f"u{i}" for i in range(N_USERS)], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object),
        user_blocks=np.arange(N_USERS) % 4,
        item_blocks=np.arange(N_ITEMS) % 4,
        manifest={"fingerprint": "abc123"},
    )
    split = split_data(dataset, SplitConfig(protocol="random", seed=5))
    assert split.meta["fingerprint"] == "abc123" and split.meta["seed"] == 5
    assert split.user_ids[7] == "u7" and split.item_ids[3] == "i3"
    assert split.user_blocks is dataset.user_blocks and split.item_blocks is dataset.item_blocks
    assert split.n_users == N_USERS and split.n_items == N_ITEMS


def test_rolling_tests_the_window_after_the_cutoff_and_validates_the_window_before(data):
    split = make_split(data, N_USERS, N_ITEMS, SplitConfig(protocol="rolling", window_days=10))
    newest = data["timestamp"].max()
    cutoff, train_end = newest - timedelta(days=10), newest - timedelta(days=20)
    assert datetime.fromisoformat(split.meta["cutoff"]) == cutoff
    assert datetime.fromisoformat(split.meta["train_end"]) == train_end
    train, val, test = (lookup_times(data, m) for m in (split.train, split.validation, split.test))
    us = lambda moment: int(pl.Series([moment]).dt.epoch("us")[0])  # noqa: E731
    assert train.max() <= us(train_end) < val.min() and val.max() <= us(cutoff) < test.min()
    assert split.test.nnz == data.filter(pl.col("timestamp") > cutoff).height
    assert_partition(data, split)


def test_rolling_with_an_explicit_cutoff_leaves_the_future_out(data):
    cutoff = START + timedelta(days=40)
    split = make_split(
        data, N_USERS, N_ITEMS,
        SplitConfig(protocol="rolling", cutoff=cutoff, window_days=7, validation_window_days=0),
    )  # fmt: skip
    in_window = (pl.col("timestamp") > cutoff) & (pl.col("timestamp") <= cutoff + timedelta(days=7))
    assert split.validation is None
    assert split.test.nnz == data.filter(in_window).height
    assert split.train.nnz == data.filter(pl.col("timestamp") <= cutoff).height
    assert split.meta["rows"] == {"train": split.train.nnz, "test": split.test.nnz}


def test_rolling_with_nothing_before_the_windows_is_a_clear_error(data):
    with pytest.raises(DataError, match="rolling split: nothing to train on"):
        make_split(data, N_USERS, N_ITEMS, SplitConfig(protocol="rolling", window_days=60))


def test_part_of_a_pair_depends_on_raw_ids_not_on_vocab_order(data):
    """The same raw data indexed by two different vocab orders splits identically, id for id."""
    users = np.array([f"user-{i}" for i in range(N_USERS)], dtype=object)
    items = np.array([f"item-{i}" for i in range(N_ITEMS)], dtype=object)
    user_perm, item_perm = np.random.default_rng(0).permutation(N_USERS), np.random.default_rng(1).permutation(N_ITEMS)
    reindexed = data.with_columns(
        pl.Series("user_idx", np.argsort(user_perm)[data["user_idx"].to_numpy()].astype(np.int32)),
        pl.Series("item_idx", np.argsort(item_perm)[data["item_idx"].to_numpy()].astype(np.int32)),
    )
    for protocol in ("random", "strong_generalization"):
        cfg = SplitConfig(protocol=protocol, validation_fraction=0.1, seed=3)
        a = make_split(data, N_USERS, N_ITEMS, cfg, user_ids=users, item_ids=items)
        b = make_split(reindexed, N_USERS, N_ITEMS, cfg, user_ids=users[user_perm], item_ids=items[item_perm])
        assert raw_parts(a, users, items) == raw_parts(b, users[user_perm], items[item_perm])


def raw_parts(split, users: np.ndarray, items: np.ndarray) -> dict[tuple[str, str], str]:
    """(raw user id, raw item id) -> the name of the part it landed in."""
    out = {}
    for name in ("train", "validation", "test", "fold_in", "validation_fold_in"):
        matrix = getattr(split, name)
        if matrix is not None:
            coo = matrix.tocoo()
            out.update({(str(users[u]), str(items[i])): name for u, i in zip(coo.row, coo.col, strict=True)})
    return out


def tiny_log(days: list[float], first_seen: list[datetime | None] | None = None) -> pl.DataFrame:
    """One (user i, item i) pair per entry, at START + days[i]."""
    n = len(days)
    frame = pl.DataFrame(
        {
            "user_idx": np.arange(n, dtype=np.int32),
            "item_idx": np.arange(n, dtype=np.int32),
            "timestamp": pl.Series([START + timedelta(days=d) for d in days], dtype=pl.Datetime("us", "UTC")),
            "weight": np.ones(n, dtype=np.float32),
        }
    )
    if first_seen is not None:
        frame = frame.with_columns(pl.Series(FIRST_SEEN, first_seen, dtype=pl.Datetime("us", "UTC")))
    return frame


def parts_by_row(split, n: int) -> list[str]:
    """The part of row i (pair (i, i)), or "none"."""
    named = {"train": split.train, "validation": split.validation, "test": split.test}
    return [next((k for k, m in named.items() if m is not None and m[i, i] != 0), "none") for i in range(n)]


@pytest.mark.parametrize(
    "cutoff",
    [
        START + timedelta(days=20),
        (START + timedelta(days=20)).astimezone(timezone(timedelta(hours=2))),  # the same instant
        (START + timedelta(days=20)).replace(tzinfo=None),  # naive: taken as UTC
    ],
)
def test_rolling_boundaries_belong_to_the_earlier_part_and_meta_records_the_windows(cutoff):
    """Windows are half-open on the left: a pair first seen exactly at a cut-off belongs to the part
    before it, and the oldest pair may sit exactly on the train end."""
    log = tiny_log([0, 10, 20, 25, 40])  # train end = day 0, cut-off = day 20, window end = day 30
    cfg = SplitConfig(protocol="rolling", cutoff=cutoff, window_days=10, validation_window_days=20)
    split = make_split(log, 5, 5, cfg)
    assert parts_by_row(split, 5) == ["train", "validation", "validation", "test", "none"]
    day = lambda d: (START + timedelta(days=d)).isoformat()  # noqa: E731
    windows = {
        k: split.meta[k] for k in ("cutoff", "window_days", "window_end", "train_end", "validation_cutoff")
    }
    assert windows == {
        "cutoff": day(20),
        "window_days": 10,
        "window_end": day(30),
        "train_end": day(0),
        "validation_cutoff": day(0),
    }
    assert split.meta["placed_by"] == "timestamp"


def test_rolling_validation_window_of_any_length_and_of_none():
    cutoff = START + timedelta(days=20)
    one_us = SplitConfig(
        protocol="rolling", cutoff=cutoff, window_days=10, validation_window_days=1 / 86_400_000_000
    )
    split = make_split(tiny_log([0, 20]), 2, 2, one_us)
    assert parts_by_row(split, 2) == ["train", "validation"]
    assert split.meta["validation_cutoff"] == (cutoff - timedelta(microseconds=1)).isoformat()
    none = SplitConfig(protocol="rolling", cutoff=cutoff, window_days=10, validation_window_days=0)
    split = make_split(tiny_log([0, 20]), 2, 2, none)
    assert parts_by_row(split, 2) == ["train", "train"] and "validation_cutoff" not in split.meta


def test_rolling_on_one_interaction_and_on_none():
    cfg = SplitConfig(protocol="rolling", cutoff=START + timedelta(days=20), window_days=10)
    assert parts_by_row(make_split(tiny_log([0]), 1, 1, cfg), 1) == ["train"]
    with pytest.raises(DataError, match="^cannot compute a rolling cut-off: no interactions$"):
        make_split(tiny_log([0]).head(0), 1, 1, cfg)


def test_rolling_checks_the_first_seen_times_it_places_pairs_by():
    log = tiny_log([0, 10, 20], first_seen=[START, None, START + timedelta(days=20)])
    with pytest.raises(DataError, match="^rolling split needs timestamps; 1 of 3 rows have none"):
        make_split(
            log, 3, 3, SplitConfig(protocol="rolling", cutoff=START + timedelta(days=15), window_days=10)
        )


def test_random_split_names_the_fractions_it_refuses(data):
    message = (
        "split: test_fraction + validation_fraction must be < 1 for a random split (got 0.6 + 0.4); "
        "something must stay in train"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        make_split(
            data, N_USERS, N_ITEMS, SplitConfig(protocol="random", test_fraction=0.6, validation_fraction=0.4)
        )


def test_strong_generalization_with_one_held_out_user_is_a_count(data):
    split = make_split(data, N_USERS, N_ITEMS, SplitConfig(protocol="strong_generalization", heldout_users=1))
    assert split.meta["n_test_users"] == 1
    assert np.flatnonzero(np.diff((split.fold_in + split.test).indptr) > 0).size == 1


def test_split_data_hashes_the_raw_ids_and_keeps_event_times(data):
    """split_data splits by the data set's raw ids (what keeps a pair's part across re-indexing), not
    by vocab indices, and carries each pair's event time for sequence models."""
    users = np.array([f"u{i}" for i in range(N_USERS)], dtype=object)
    items = np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object)
    dataset = InteractionData(
        interactions=data, user_ids=users, item_ids=items, manifest={"fingerprint": "abc123"}
    )
    cfg = SplitConfig(protocol="random", seed=5)
    split = split_data(dataset, cfg)
    by_raw = make_split(data, N_USERS, N_ITEMS, cfg, user_ids=users, item_ids=items)
    by_user_index = make_split(data, N_USERS, N_ITEMS, cfg, item_ids=items)
    by_item_index = make_split(data, N_USERS, N_ITEMS, cfg, user_ids=users)
    assert same(split.test, by_raw.test)
    assert not same(split.test, by_user_index.test) and not same(split.test, by_item_index.test)
    expected = event_times(data, N_USERS, N_ITEMS)
    assert split.times is not None and same(split.times, expected)


def test_leave_last_n_keeps_a_user_with_exactly_2n_items_out_of_validation():
    """With validation, a user is held out for validation only with more than 2n interactions: one with
    exactly 2n gives n to test and keeps n in train."""
    log = tiny_log([0, 1]).with_columns(pl.lit(0, pl.Int32).alias("user_idx"))  # one user, two items
    split = make_split(log, 1, 2, SplitConfig(protocol="leave_last_n", n=1, validation_fraction=0.1))
    assert (split.train.nnz, split.validation.nnz, split.test.nnz) == (1, 0, 1)
    assert split.test[0, 1] != 0 and split.meta["n"] == 1


def test_strong_generalization_user_count_with_validation_users_and_its_meta(data):
    cfg = SplitConfig(protocol="strong_generalization", heldout_users=25, validation_fraction=0.2)
    split = make_split(data, N_USERS, N_ITEMS, cfg)
    held = lambda *ms: set(np.flatnonzero(sum(np.diff(m.indptr) for m in ms) > 0))  # noqa: E731
    test_users, val_users = held(split.fold_in, split.test), held(split.validation_fold_in, split.validation)
    assert len(test_users) == 25 and not test_users & val_users
    assert len(val_users) / (N_USERS - 25) == pytest.approx(0.2, abs=0.06)
    assert split.meta["n_active_users"] == N_USERS and split.meta["n_validation_users"] == len(val_users)


def test_strong_generalization_refusals_name_what_to_change(data):
    message = (
        "split: heldout_users + validation_fraction must be < 1 for a strong_generalization split "
        "(got 0.6 + 0.4); something must stay in train"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        cfg = SplitConfig(protocol="strong_generalization", heldout_users=0.6, validation_fraction=0.4)
        make_split(data, N_USERS, N_ITEMS, cfg)
    with pytest.raises(DataError, match="would be held out"):  # 299 test users + the last one to validation
        cfg = SplitConfig(protocol="strong_generalization", heldout_users=299, validation_fraction=0.999)
        make_split(data, N_USERS, N_ITEMS, cfg)


def test_split_meta_records_what_reproduces_it(data):
    random = make_split(data, N_USERS, N_ITEMS, SplitConfig(protocol="random", validation_fraction=0.1))
    assert random.protocol == "random" and random.validation_fold_in is None and random.fold_in is None
    recorded = {k: random.meta[k] for k in ("protocol", "test_fraction", "validation_fraction", "assignment")}
    assert recorded == {"protocol": "random", "test_fraction": 0.2, "validation_fraction": 0.1, "assignment": 2}
    assert "heldout_users" not in random.meta and set(random.meta["rows"]) == {"train", "validation", "test"}
    cfg = SplitConfig(protocol="strong_generalization", heldout_users=0.2, validation_fraction=0.1)
    strong = make_split(data, N_USERS, N_ITEMS, cfg)
    assert strong.meta["heldout_users"] == 0.2
    assert strong.meta["fold_in_fraction"] == cfg.fold_in_fraction
    assert set(strong.meta["rows"]) == {"train", "validation", "test", "fold_in", "validation_fold_in"}
    assert make_split(data, N_USERS, N_ITEMS, SplitConfig(protocol="temporal")).meta["placed_by"] == "timestamp"


def test_temporal_default_cutoffs_are_lower_quantiles_of_the_times():
    """Ten pairs on days 0..9: the cut-off is the time with a share 1 - test_fraction at or before it."""
    log = tiny_log(list(range(10)))
    for test_fraction, n_test in ((0.3, 3), (0.9, 9), (0.05, 0)):
        split = make_split(log, 10, 10, SplitConfig(protocol="temporal", test_fraction=test_fraction))
        assert parts_by_row(split, 10).count("test") == n_test, test_fraction
    cfg = SplitConfig(protocol="temporal", test_fraction=0.3, validation_fraction=0.2)
    assert parts_by_row(make_split(log, 10, 10, cfg), 10) == ["train"] * 5 + ["validation"] * 2 + ["test"] * 3
    assert parts_by_row(make_split(tiny_log([0]), 1, 1, SplitConfig(protocol="temporal")), 1) == ["train"]
    with pytest.raises(DataError, match="^cannot compute a temporal cut-off: no interactions$"):
        make_split(log.head(0), 10, 10, SplitConfig(protocol="temporal"))


def test_split_refusals_users_see(data):
    nulls = tiny_log([0, 1, 2]).with_columns(pl.lit(None, pl.Datetime("us", "UTC")).alias("timestamp"))
    none = (
        'temporal split needs timestamps; this data has none (all 3 rows have a null timestamp). '
        'Use split.protocol = "random" or "strong_generalization".'
    )
    with pytest.raises(DataError, match=f"^{re.escape(none)}$"):
        make_split(nulls, 3, 3, SplitConfig(protocol="temporal"))
    some = tiny_log([0, 1, 2]).with_columns(
        pl.when(pl.col("user_idx") == 1).then(None).otherwise(pl.col("timestamp")).alias("timestamp")
    )
    partial = (
        "temporal split needs timestamps; 1 of 3 rows have none (every source row of those had an empty time: "
        "rows_without_time in the ingest manifest). Drop those rows from the source and ingest again, or use "
        'split.protocol = "random" or "strong_generalization".'
    )
    with pytest.raises(DataError, match=f"^{re.escape(partial)}$"):
        make_split(some, 3, 3, SplitConfig(protocol="temporal"))
    unknown = (
        "split.protocol: unknown protocol 'zipf'; choose one of "
        "['leave_last_n', 'random', 'rolling', 'strong_generalization', 'temporal']"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(unknown)}$"):
        make_split(data, N_USERS, N_ITEMS, SplitConfig().model_copy(update={"protocol": "zipf"}))
    for kind, n in (("user", N_USERS), ("item", N_ITEMS)):
        ids = {f"{kind}_ids": np.array(["a"])}
        message = f"cannot split: the {kind} vocab has 1 ids but the data has {n} {kind}s"
        with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
            make_split(data, N_USERS, N_ITEMS, SplitConfig(protocol="random"), **ids)


def test_without_a_vocab_an_index_stands_for_its_decimal_text(data):
    cfg = SplitConfig(protocol="random", validation_fraction=0.1)
    users, items = np.arange(N_USERS).astype(str), np.arange(N_ITEMS).astype(str)
    by_text = make_split(data, N_USERS, N_ITEMS, cfg, user_ids=users, item_ids=items)
    assert same(make_split(data, N_USERS, N_ITEMS, cfg).test, by_text.test)


def test_temporal_validation_before_an_explicit_cutoff_and_its_refusals():
    """With an explicit cut-off, validation is the last validation_fraction of what precedes it."""
    log = tiny_log(list(range(10)))
    cfg = SplitConfig(protocol="temporal", cutoff=START + timedelta(days=6), validation_fraction=0.5)
    assert parts_by_row(make_split(log, 10, 10, cfg), 10) == ["train"] * 4 + ["validation"] * 3 + ["test"] * 3
    assert "validation_cutoff" not in make_split(log, 10, 10, SplitConfig(protocol="temporal")).meta
    early = SplitConfig(protocol="temporal", cutoff=START - timedelta(days=1), validation_fraction=0.5)
    meta = make_split(log, 10, 10, early).meta  # nothing precedes the cut-off: an empty validation window
    assert meta["validation_cutoff"] == meta["cutoff"]
    message = "split: test_fraction + validation_fraction must be < 1 for a temporal split (got 0.6 + 0.4)"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        make_split(log, 10, 10, SplitConfig(protocol="temporal", test_fraction=0.6, validation_fraction=0.4))
    first_seen = tiny_log([0, 10, 20], first_seen=[START, None, START + timedelta(days=20)])
    with pytest.raises(DataError, match="^temporal split needs timestamps; 1 of 3 rows have none"):
        make_split(first_seen, 3, 3, SplitConfig(protocol="temporal"))
