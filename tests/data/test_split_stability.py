"""Day two: a log that grows by appended batches (new users, new items, new pairs of old users,
repeats of old pairs at any later or earlier time, vocab entries with no interactions yet) never
moves an old pair to another part of the split.

Property-based (hypothesis): random append sequences over an append-only vocab, as incremental
ingest builds it. Each stage's table is derived from all batches by ingest's own aggregation
(`batches.all_rows` + `implicit.to_implicit`: repeats summed, the latest timestamp and the
first-seen time kept), split afresh, and every pair seen before must keep its part."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.config import DataConfig, SplitConfig
from recsys.data.batches import all_rows
from recsys.data.implicit import to_implicit
from recsys.data.readers import ROW
from recsys.data.schema import FIRST_SEEN, ITEM, TIME, USER, WEIGHT
from recsys.data.splits import make_split

START = datetime(2024, 1, 1, tzinfo=UTC)
PARTS = ("train", "validation", "test", "fold_in", "validation_fold_in")
AGE = {"train": 0, "validation": 1, "test": 2}  # rolling: a pair may only move towards train

# One append: (pairs, repeats of earlier rows, extra vocab entries). A pair is (user id number, item
# id number, day); a repeat (k, day) repeats the k-th earlier row's pair (mod their count) on `day`.
pair = st.tuples(st.integers(0, 40), st.integers(0, 60), st.integers(0, 200))
repeat = st.tuples(st.integers(0, 10_000), st.integers(0, 200))
batch = st.tuples(
    st.lists(pair, min_size=1, max_size=40),
    st.lists(repeat, max_size=15),
    st.lists(st.integers(0, 90), max_size=3),
)
history = st.lists(batch, min_size=2, max_size=5)


class GrowingLog:
    """Raw (user id, item id, time) rows per batch and append-only vocabs, like a processed
    directory after appends; its table is what ingest derives from the batches."""

    def __init__(self) -> None:
        self.users: list[str] = []
        self.items: list[str] = []
        self.batches: list[list[tuple[str, str, int]]] = []

    def append(
        self,
        pairs: list[tuple[int, int, int]],
        repeats: list[tuple[int, int]] = (),
        idle_items: list[int] = (),
    ) -> None:
        earlier = [(u, i) for rows in self.batches for u, i, _ in rows]
        rows = [(f"u{user}", f"i{item}", day) for user, item, day in pairs]
        if earlier:  # the log repeats old pairs (plays, clicks), later or - late data - earlier
            rows += [(*earlier[k % len(earlier)], day) for k, day in repeats]
        for user, item, _ in rows:
            self._index(self.users, user)
            self._index(self.items, item)
        for item in idle_items:  # vocab grows without interactions (e.g. catalogue sync)
            self._index(self.items, f"new-item-{item}")
        self.batches.append(rows)

    @staticmethod
    def _index(vocab: list[str], raw: str) -> None:
        if raw not in vocab:
            vocab.append(raw)

    def table(self) -> pl.DataFrame:
        """One row per pair (user id, item id, timestamp, weight, first_seen), by ingest's aggregation."""
        frames = [
            (
                number,
                pl.LazyFrame(
                    {
                        USER: [u for u, _, _ in rows],
                        ITEM: [i for _, i, _ in rows],
                        TIME: pl.Series(
                            [START + timedelta(days=d) for _, _, d in rows], dtype=pl.Datetime("us", "UTC")
                        ),
                        WEIGHT: pl.Series([1.0] * len(rows), dtype=pl.Float32),
                        ROW: pl.Series(range(1, len(rows) + 1), dtype=pl.Int64),
                    }
                ),
            )
            for number, rows in enumerate(self.batches, start=1)
        ]
        pairs, _ = to_implicit(all_rows(frames), DataConfig(aggregate="sum"), has_event=False)
        return pairs.with_columns(pl.col(USER, ITEM).cast(pl.String))

    def split(self, cfg: SplitConfig) -> dict[tuple[str, str], str]:
        user_index = {u: i for i, u in enumerate(self.users)}
        item_index = {t: i for i, t in enumerate(self.items)}
        pairs = self.table()
        frame = pl.DataFrame(
            {
                "user_idx": pl.Series([user_index[u] for u in pairs[USER]], dtype=pl.Int32),
                "item_idx": pl.Series([item_index[i] for i in pairs[ITEM]], dtype=pl.Int32),
                TIME: pairs[TIME],
                WEIGHT: pairs[WEIGHT],
                FIRST_SEEN: pairs[FIRST_SEEN],
            }
        )
        users, items = np.array(self.users, dtype=object), np.array(self.items, dtype=object)
        split = make_split(frame, len(users), len(items), cfg, user_ids=users, item_ids=items)
        parts = {}
        for name in PARTS:
            matrix = getattr(split, name)
            if matrix is not None:
                coo = matrix.tocoo()
                parts.update({(users[u], items[i]): name for u, i in zip(coo.row, coo.col, strict=True)})
        return parts


STABLE = [
    SplitConfig(protocol="random", test_fraction=0.3, validation_fraction=0.2, seed=5),
    SplitConfig(protocol="strong_generalization", heldout_users=0.3, validation_fraction=0.2, seed=5),
    SplitConfig(protocol="rolling", cutoff=START + timedelta(days=120), window_days=30),
    SplitConfig(protocol="temporal", cutoff=START + timedelta(days=100)),
]


@pytest.mark.parametrize("cfg", STABLE, ids=lambda c: c.protocol)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=history)
def test_appending_never_moves_an_old_pair(cfg, batches):
    seen: dict[tuple[str, str], str] = {}
    for parts in splits_as_the_log_grows(batches, cfg):
        moved = {k: (seen[k], parts.get(k)) for k in seen if parts.get(k) != seen[k]}
        assert not moved, f"{cfg.protocol}: old pairs moved {moved}"
        seen.update(parts)


def splits_as_the_log_grows(batches, cfg: SplitConfig):
    """The split after each append (stages too small to split are skipped: nothing to compare yet)."""
    log = GrowingLog()
    for pairs, repeats, idle in batches:
        log.append(pairs, repeats, idle)
        try:
            yield log.split(cfg)
        except Exception as exc:  # e.g. a first batch that would hold out every user
            assert "would be held out" in str(exc) or "nothing to train on" in str(exc)


@settings(max_examples=30, deadline=None)
@given(batches=history)
def test_a_rolling_cutoff_that_advances_only_moves_pairs_towards_train(batches):
    """Default rolling cut-off (newest timestamp minus the window): as the log grows the windows
    slide forward, so a test pair may become validation or train, but never the reverse - a model
    trained by an earlier run never sees a later run's validation or test pair."""
    seen: dict[tuple[str, str], str] = {}
    for parts in splits_as_the_log_grows(batches, SplitConfig(protocol="rolling", window_days=20)):
        backwards = {k: (seen[k], parts[k]) for k in seen if AGE[parts[k]] > AGE[seen[k]]}
        assert not backwards, backwards
        seen.update(parts)


def test_adding_one_item_to_the_vocab_moves_no_pair():
    """The bug that started it: keys from vocab indices moved ~80% of test pairs when one item
    was appended to the vocab with no new interactions."""
    log = GrowingLog()
    rng = np.random.default_rng(0)
    log.append([(int(u), int(i), 0) for u, i in rng.integers(0, [40, 60], size=(600, 2))])
    cfg = SplitConfig(protocol="random", test_fraction=0.2, seed=0)
    before = log.split(cfg)
    log.append([], idle_items=[999])
    assert log.split(cfg) == before
