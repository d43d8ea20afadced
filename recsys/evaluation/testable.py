"""Refuse a split whose test part scores no user, before any model trains on it.

Model metrics are means over the warm test users (a training history and at least one test item
with a training interaction, `recsys.evaluation.cold`). With none, every model's recall@k is the mean
of nothing: a run on a 5-row log, a session log (one interaction per user), a log whose items are
each seen once, or a temporal split of a log whose rows all share one timestamp trained every model,
printed `recall@20 = nan` for each, picked a "best model" among NaNs and exited 0. The cause is in
the data and the split settings, so it is a one-line `DataError` naming what left the test empty and
the setting that changes it.
"""

from __future__ import annotations

import numpy as np

from recsys.data.split import Split
from recsys.errors import DataError
from recsys.evaluation.cold import ColdSplit, divide_test


def require_test_users(split: Split, filtered: str | None = None, parts: ColdSplit | None = None) -> None:
    """Raise a `DataError` when the split's test part has no warm user to score; else nothing.
    `filtered`: what a filter before the split left, when it left one user or one item (the k-core:
    `pipelines.data.k_core_shrink`), named in the hint for that case. `parts`: `divide_test(split)`
    when the caller has it (computed here otherwise)."""
    counts = (parts if parts is not None else divide_test(split)).counts()
    if counts["warm_test_users"] > 0:
        return
    raise DataError(
        f"the {split.protocol} split leaves no test user to score ({_why(split, counts)}), so every "
        f"model's recall@k would be NaN; {_hint(split, counts, filtered)}"
    )


def _why(split: Split, counts: dict[str, int]) -> str:
    """What emptied the test part, from the split's matrices (counts, not guesses)."""
    n_test, n_rows = int(split.test.nnz), _rows(split)
    if n_test == 0:
        return f"none of its {n_rows:,} interactions is held out for testing"
    parts = []
    if dropped := counts["cold_item_test_interactions"]:
        parts.append(f"{dropped:,} of its {n_test:,} test interactions are on items with no training "
                     "interaction, which no model can rank")  # fmt: skip
    if cold := counts["cold_test_users"]:
        parts.append(f"{cold:,} test user(s) have no training history and are scored by the fallback alone")
    return "; ".join(parts) or f"its {n_test:,} test interactions belong to no scorable user"


def _hint(split: Split, counts: dict[str, int], filtered: str | None = None) -> str:
    """The setting that fills the test part for this protocol and cause."""
    meta = split.meta
    users, items = _active(split)
    if users == 1 or items == 1:  # no split setting helps: nothing is shared between users or items
        what = "one user" if users == 1 else "one item"
        if filtered:
            return f"the log has {what} after filtering: {filtered}"
        return (f"the log has {what} after filtering: a recommender learns from what users share and ranks "
                "several items, so use a log with more users and items")  # fmt: skip
    if split.test.nnz == 0:
        protocol = split.protocol
        if protocol == "random":
            return (f"a log this small needs more data, or a larger share held out "
                    f"({{option:split.test_fraction=0.5}}; now {meta.get('test_fraction')})")  # fmt: skip
        if protocol == "strong_generalization":
            return (f"{meta.get('n_active_users', 0):,} users drew no held-out user at split.heldout_users = "
                    f"{meta.get('heldout_users')}: hold out a count instead ({{option:split.heldout_users=1}}) "
                    "or use more data")  # fmt: skip
        if protocol == "leave_last_n":
            return (f"no user has more than split.n = {meta.get('n')} interaction(s) to hold out "
                    "(validation takes as many again): use more data or {option:split.protocol=random}")  # fmt: skip
        return ("no interaction is after the test cut-off "
                f"({meta.get('cutoff')}; a log whose times are all equal has no later part): use "
                "{option:split.protocol=random}, or set split.cutoff before the newest interaction")  # fmt: skip
    if counts["cold_item_test_interactions"] >= split.test.nnz:
        return ("each item needs interactions on both sides of the split (a log whose items are each seen "
                "once has none): {option:data.min_item_interactions=2} or more")  # fmt: skip
    if split.protocol in ("temporal", "rolling"):
        return ("every test user was first seen after the cut-off (new users, no history to rank from): use "
                "a log with a longer history, or hold out per user: {option:split.protocol=leave_last_n}")  # fmt: skip
    if split.protocol == "strong_generalization":
        return ("every held-out user's interactions fell in the truth, none in the fold-in history: use more "
                f"data, or a larger fold-in share (split.fold_in_fraction, now {meta.get('fold_in_fraction')})")  # fmt: skip
    return ("a user needs a training interaction besides the tested one (a session log of one "
            "interaction per user has none): {option:data.min_user_interactions=2} or more")  # fmt: skip


def _parts(split: Split) -> list:
    return [p for p in (split.train, split.test, split.validation, split.fold_in, split.validation_fold_in)
            if p is not None]  # fmt: skip


def _rows(split: Split) -> int:
    """Interactions in every part of the split (what the protocol divided)."""
    return int(np.sum([part.nnz for part in _parts(split)]))


def _active(split: Split) -> tuple[int, int]:
    """Users and items with an interaction in some part (the vocab may hold filtered-out ids)."""
    users = np.zeros(split.train.shape[0], dtype=bool)
    items = np.zeros(split.train.shape[1], dtype=bool)
    for part in _parts(split):  # CSR parts (Split's contract): rows with entries, columns named
        users |= np.diff(part.indptr) > 0
        items[part.indices] = True
    return int(users.sum()), int(items.sum())
