"""Settings too large for the data they meet: said once per run, before any model trains.

A config is checked on its own when it is loaded; whether `evaluation.ks = [10, 20, 50, 100]` or
`factors = 64` makes sense depends on the log, known only once it is split. On a small catalogue
(a 5-core of a niche log keeps a few dozen items) both go wrong without a word:

* a cutoff k at least as large as the items a test user can be ranked (items with training data,
  less the user's own history, which is never recommended back) puts every candidate in every
  list: recall@k is 1 and precision / hit_rate are fixed, for every model whatever it learned, and
  a promotion on such a metric chooses on nothing (the run report's saturated warning sees it only
  after every model trained);
* a factor count (WALS `factors`, a two-tower's `dim`) above the number of users or items with
  training data is over-parameterised: the score matrix has rank at most min(users, items), so the
  extra factors only add parameters to overfit with.

Each check returns one line naming the setting that fixes it; the caller logs it as a warning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from recsys.config import RunConfig
    from recsys.data.split import Split
    from recsys.evaluation.cold import ColdSplit

HIT_COUNT_METRICS = ("recall", "recall_raw", "precision", "hit_rate")
"""Metrics that count hits only: with every candidate in the list they no longer depend on the model."""

FACTOR_SETTINGS = {"wals": "factors", "wals_spark": "factors", "two_tower": "dim", "item_tower": "dim"}
"""kind -> the key holding its number of latent factors (the embedding size)."""


def size_warnings(cfg: RunConfig, split: Split, parts: ColdSplit | None = None) -> list[str]:
    """Every warning of this module for `cfg` on `split`, each one line. `parts`: `divide_test(split)`
    when the caller has it (the run computes it once for `require_test_users` and these checks)."""
    if parts is None:
        from recsys.evaluation.cold import divide_test

        parts = divide_test(split)
    lines = [cutoff_warning(cfg, split, parts)]
    lines += factor_warnings(cfg, split, parts)
    return [line for line in lines if line]


def rankable_items(split: Split, parts: ColdSplit | None = None) -> tuple[int, int]:
    """(items with training data, the most items any warm test user can be ranked).

    The evaluator masks items without training data (`ColdSplit.cold_items`) and each user's own
    history (`exclude`), so a user's candidates are the items with training data less those in the
    user's exclude row."""
    if parts is None:
        from recsys.evaluation.cold import divide_test

        parts = divide_test(split)
    warm = parts.warm
    with_data = ~parts.cold_items
    n_with_data = int(np.count_nonzero(with_data))
    users = warm.users
    if users.size == 0:
        return n_with_data, n_with_data
    excluded = sp.csr_matrix(warm.exclude)[users] @ with_data.astype(np.int64)  # history among those items
    return n_with_data, int(n_with_data - np.min(excluded))


def cutoff_warning(cfg: RunConfig, split: Split, parts: ColdSplit) -> str | None:
    """One line naming every `evaluation.ks` cutoff at or above the most items a test user can be
    ranked, or None. Sampled metrics (`evaluation.sampled_negatives`) rank other candidates: not checked."""
    ev = cfg.evaluation
    counted = [m for m in ev.metrics if m in HIT_COUNT_METRICS]
    if ev.sampled_negatives is not None or not counted:
        return None
    n_with_data, most = rankable_items(split, parts)
    over = [k for k in sorted(set(ev.ks)) if k >= most]
    if not over:
        return None
    at = ", ".join(f"recall@{k}" for k in over) if "recall" in counted else ", ".join(f"{counted[0]}@{k}" for k in over)
    fixed = [m for m in counted if m != "recall"]
    also = f" (and {', '.join(fixed)} equal for every model)" if fixed and "recall" in counted else ""
    name, _, k = cfg.promotion.metric.partition("@")
    promotion = (f"; promotion.metric {cfg.promotion.metric} cannot choose between models"
                 if name in HIT_COUNT_METRICS and k.isdigit() and int(k) in over else "")  # fmt: skip
    keep = [k for k in ev.ks if k < most] or [max(1, most // 2)]
    hint = (f"keep evaluation.ks below {most} (e.g. --set 'evaluation.ks=[{', '.join(map(str, keep))}]')"
            + (" and promotion.metric among them" if promotion else "")) if most > 1 else "use a log with more items"
    what = "is" if len(over) == 1 else "are"
    return (
        f"evaluation.ks {', '.join(map(str, over))} {what} at least the {most:,} items a test user can be ranked "
        f"({n_with_data:,} items have training data, less each user's own history): every list holds every "
        f"candidate, so {at} {'is' if len(over) == 1 else 'are'} trivially 1{also}, whatever the model "
        f"learned{promotion}; {hint}"
    )


def factor_warnings(cfg: RunConfig, split: Split, parts: ColdSplit) -> list[str]:
    """One line per model whose factor count exceeds the users or items with training data (a
    model the run skips for its catalogue, EASE's bound, has no factors: never named)."""
    users = int(np.count_nonzero(np.diff(split.train.indptr) > 0))  # CSR by Split's contract
    items = int(np.count_nonzero(~parts.cold_items))
    lines = []
    for model in cfg.models:
        key = FACTOR_SETTINGS.get(model.kind)
        value: Any = getattr(model, key, None) if key else None
        if not isinstance(value, int) or value <= min(users, items):
            continue
        fewer = "items" if items <= users else "users"
        lines.append(
            f"models.{model.name}.{key} = {value} is more than the {min(users, items):,} {fewer} with training data "
            f"({users:,} users x {items:,} items): over-parameterised, the score matrix has rank at most "
            f"{min(users, items):,}, so factors above it add parameters to overfit with and nothing the model can "
            f"express; set models.{model.name}.{key} to {min(users, items):,} or fewer"
        )
    return lines
