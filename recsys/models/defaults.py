"""Data-aware defaults: the values a model uses for a setting left at "auto" (None), from the training data.

Runs with tuning off (and every search's trial 0, `recsys.tuning`) start from these. Each rule is
a formula of a few data statistics, fixed once on development data that is not in the
generalisation benchmark (other synthetic seeds and shapes, MovieLens 100K with a temporal split;
benchmarks/RESULTS.md, generalisation section, says which) and never per data set. `fit` writes the
resolved values into the model's config, so a saved model and its MLflow run name the numbers used.

WALS (`wals_defaults`), iALS with one regularisation constant:
* confidence: log scaling `1 + alpha log(1 + w / median w)` when the weights are heavy-tailed (99th
  percentile over 10x the median: play counts, dwell times), linear `1 + alpha w` otherwise (ratings
  kept as positives, binary data, small counts).
* alpha: `3 / mean f(w)`, i.e. an observed cell weighs 1 + 3 times an unobserved one on average
  (the best alpha on the development sets was 1-30 for binary data, flat near 3), but at least
  `0.1 x n_items / mean f-mass of a user row`: a user's observed confidence mass is at least a tenth
  of the unobserved mass (implicit weighs every unobserved cell 1, so that mass is the catalogue
  size). On a dense data set the first term is the larger (ML-100K: 3 x 58 items per user is 0.12 of
  1,447 items) and the floor changes nothing; on a large sparse catalogue (8-15 items per user
  among 20-70k items) the first term let the unobserved cells drown the observed ones, and every
  user got the same near-zero scores: validation recall@20 at or below popularity. Chosen on
  development sets outside the generalisation benchmark (planted-cluster synthetic seeds 21-24 of
  2-37k items; generated replicas shaped like MovieLens 20M (a sparse 12-per-user sample of it),
  MovieLens 1M and the HetRec Last.fm log, since the real files were not on the development
  machine; MovieLens 100K with a temporal split), untuned, validation users only: a share of
  0.05-0.2 took the sparse synthetic sets from 0.001-0.02 to 0.32-0.65 and the Last.fm replica from
  0.175 to 0.33-0.35, left the dense ones within +-1% (+4-6% on the MovieLens 1M replica), and cost
  2% on the MovieLens 20M replica's sample, where nothing beats popularity; 0.1 is the middle.
* regularization: `0.025 x sqrt(L_u x L_i)`, where `L_u = n_items + alpha x mean f-mass of a user
  row` and `L_i = n_users + alpha x mean f-mass of an item column` are the mean confidence mass of a
  user's and an item's least-squares problem. This is the frequency-scaled regularisation of
  Rendle et al. 2022 (iALS++, "Revisiting the Performance of iALS on Item Recommendation Benchmarks":
  `lambda (|I_u| + alpha0 |I|)` per user, `lambda (|U_i| + alpha0 |U|)` per item) collapsed to the
  single constant implicit's solver takes: the geometric mean of the two sides' masses. The
  constant 0.025 is where the development sets' optima fell (0.014-0.043 at factors 64).
EASE (`ease_l2`): `l2 = l2_scale (10) x mean interactions per item`, at least 100: lambda is added
  to the Gram matrix's diagonal, whose scale is the item counts; small data sets wanted 100-1000.
Two-tower (`two_tower_batch_size`): the largest power of two at most `interactions / 32`, between
  128 and 1024, so an epoch has at least ~32 optimizer steps. With a fixed 1024 a small data set
  has ~20 steps per epoch, the first epochs sit on the random-init plateau, and early stopping
  (patience in epochs) ended training there, below popularity.
Two-tower sampler (`two_tower_sampler`): a sequence user tower scores the whole catalogue per target
  (`all`, the full softmax) while the catalogue has at most FULL_CATALOGUE_MAX_ITEMS items, else
  draws `uniform` negatives like the other user towers. Chosen on ML-100K next-item validation users
  (benchmarks/results/sequence.md): the full softmax beat 256 uniform negatives at every epoch.
Two-tower temperature (`two_tower_temperature`): 0.05 for a sequence user tower (its full softmax on
  unit vectors wanted the sharper scale on both next-item validation sets), 0.1 for the others.
  Pointwise losses (bce, gbce) take at most that, and at most `1 / (2 L + POINTWISE_LOGIT_MARGIN)`
  (`pointwise_temperature`), where `L = log(w+ n_items / (w- mean items per user))` is the optimum
  logit of a typical positive, the same quantity as the logit offset's (`recsys.losses.pointwise_offset`,
  `b = L - 1 / T`). Why: the offset puts an aligned pair (cosine 1) at `L` and an orthogonal, unrelated
  pair at `b`; unit vectors span only `1 / T` nats between the two. On a sparse catalogue L is large
  (MovieTweetings 6.1, a Ciao sample 7.3, against 3.2 on ML-100K), so at T = 0.1 the unrelated pair sits
  at only -3.9 / -2.7: sigmoid(b) x n_items expected false positives per user outnumber the user's real
  ones, and BCE again pushes unrelated items down the only way unit vectors allow, by pointing users
  and items apart (the collapse the offset was introduced against). With `1 / T >= 2 L + margin` the
  unrelated pair sits at `-L - margin`: the mirror image of the positive, so n_items x sigmoid(b) is a
  small fraction of the user's positives. Lowering T, not the offset alone, is what helps: at T = 0.1
  with the orthogonal pair moved to -L - 4 the aligned pair could only reach 6 - L, below the
  positive's optimum (validation, sets below: mean 0.266 on MovieTweetings, under the rule's 0.270,
  and below T = 0.1 on FilmTrust).
  Checked on development logs outside both generalisation tables, validation users only, untuned
  BCE (popularity in brackets): MovieTweetings 100K without the reported split's test users, 4
  resplits, mean 0.258 at T = 0.1 -> 0.270 at the rule's 0.062 (0.244), higher on all 4; a 40% user
  sample of Ciao, 2 resplits, 0.028 / 0.045 -> 0.048 / 0.063 at 0.054 (0.044 / 0.061: below
  popularity before); FilmTrust, 2 resplits, 0.806 / 0.760 -> 0.809 / 0.762 at 0.078 (0.821 /
  0.765: popularity is almost all there is). The margin 4 is not tuned: it keeps ML-100K, where the
  defaults were set, at ~0.1 (2 L + 4 = 10.3 there).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the EASE config reads EASE_L2_SCALE, and reading a config
    import numpy as np  # must not load numpy and scipy (tests/test_startup.py)
    import scipy.sparse as sp

HEAVY_TAIL_RATIO = 10.0
"""99th percentile / median of the weights above which WALS scales confidence logarithmically."""
WALS_MEAN_CONFIDENCE = 3.0
"""alpha x mean f(w): how much more an observed cell weighs than an unobserved one, on average."""
WALS_MIN_OBSERVED_SHARE = 0.1
"""Least alpha x (mean f-mass of a user row) / n_items: observed vs unobserved mass of a user's problem."""
WALS_REGULARIZATION_SCALE = 0.025
EASE_L2_SCALE = 10.0
EASE_L2_FLOOR = 100.0
STEPS_PER_EPOCH = 32
BATCH_RANGE = (128, 1024)


def weights_of(train: sp.spmatrix) -> np.ndarray:
    import numpy as np
    import scipy.sparse as sp

    csr = sp.csr_matrix(train)
    return np.asarray(csr.data[csr.data > 0], dtype=np.float64)


def heavy_tailed(weights: np.ndarray) -> bool:
    """True when the weights look like counts or durations with a long tail."""
    import numpy as np

    if weights.size == 0:
        return False
    median = float(np.median(weights))
    return median > 0 and float(np.quantile(weights, 0.99)) > HEAVY_TAIL_RATIO * median


def wals_defaults(
    train: sp.spmatrix,
    *,
    binarize: bool = False,
    confidence: str | None = None,
    eps: float | None = None,
    alpha: float | None = None,
) -> dict[str, float | str]:
    """`confidence`, `eps`, `alpha` and `regularization` by the rules in the module docstring;
    the ones given are kept and the others follow from them."""
    import numpy as np
    import scipy.sparse as sp

    csr = sp.csr_matrix(train)
    weights = np.ones_like(weights_of(csr)) if binarize else weights_of(csr)
    if confidence is None:
        confidence = "log" if heavy_tailed(weights) else "linear"
    if eps is None:
        eps = float(np.median(weights)) if weights.size and confidence == "log" else 1.0
    scaled = np.log1p(weights / eps) if confidence == "log" else weights
    mean_f = float(scaled.mean()) if scaled.size else 1.0
    n_users, n_items = csr.shape
    active_users = max(int(np.count_nonzero(np.diff(csr.indptr))), 1)
    active_items = max(int(np.count_nonzero(np.bincount(csr.indices, minlength=n_items))), 1)
    mass = float(scaled.sum())
    if alpha is None:
        floor = WALS_MIN_OBSERVED_SHARE * n_items / (mass / active_users) if mass > 0 else 0.0
        alpha = max(WALS_MEAN_CONFIDENCE / max(mean_f, 1e-12), floor)
    user_side = n_items + alpha * mass / active_users
    item_side = active_users + alpha * mass / active_items
    regularization = WALS_REGULARIZATION_SCALE * math.sqrt(user_side * item_side)
    return {"confidence": confidence, "eps": eps, "alpha": alpha, "regularization": regularization}


def ease_l2(train: sp.spmatrix, scale: float = EASE_L2_SCALE) -> float:
    """`scale x` mean interactions per item (items with any), at least EASE_L2_FLOOR."""
    import numpy as np
    import scipy.sparse as sp

    counts = np.bincount(sp.csr_matrix(train).indices, minlength=train.shape[1])
    nonzero = counts[counts > 0]
    mean = float(nonzero.mean()) if nonzero.size else 1.0
    return max(scale * mean, EASE_L2_FLOOR)


def two_tower_batch_size(n_interactions: int) -> int:
    """The largest power of two at most `n_interactions / STEPS_PER_EPOCH`, within BATCH_RANGE."""
    low, high = BATCH_RANGE
    target = max(n_interactions // STEPS_PER_EPOCH, 1)
    return int(min(high, max(low, 2 ** int(math.floor(math.log2(target))))))


FULL_CATALOGUE_MAX_ITEMS = 10_000
"""Largest catalogue a sequence tower scores in full per target by default: a step's logits are
targets x items (~800 x 10k floats at the data-aware batch, tens of MB with their gradient)."""


def two_tower_sampler(user_input: str, n_items: int) -> str:
    """`sampler = "auto"`: the full catalogue (`all`) for a sequence user tower on a catalogue of
    at most FULL_CATALOGUE_MAX_ITEMS items, `uniform` otherwise."""
    return "all" if user_input == "sequence" and n_items <= FULL_CATALOGUE_MAX_ITEMS else "uniform"


def resolved_sampler(sampler: str, user_input: str, n_items: int) -> str:
    """A configured sampler, with "auto" resolved (`two_tower_sampler`)."""
    return two_tower_sampler(user_input, n_items) if sampler == "auto" else sampler


POINTWISE_LOGIT_MARGIN = 4.0
"""Nats by which an orthogonal pair's logit lies below `-L` under `pointwise_temperature`."""


def two_tower_temperature(user_input: str, pointwise_logit: float | None = None) -> float:
    """`temperature = "auto"`: 0.05 for a sequence user tower, 0.1 for the id and history towers;
    for a pointwise loss (`pointwise_logit` = its L, see `pointwise_temperature`) at most
    `pointwise_temperature(L)`."""
    cap = 0.05 if user_input == "sequence" else 0.1
    return cap if pointwise_logit is None else min(cap, pointwise_temperature(pointwise_logit))


def pointwise_temperature(pointwise_logit: float) -> float:
    """`1 / (2 L + POINTWISE_LOGIT_MARGIN)`: the temperature at which unit vectors span the positive's
    optimum logit L above 0 and an orthogonal pair's `-L - margin` below it (module docstring)."""
    return 1.0 / (2.0 * max(pointwise_logit, 0.0) + POINTWISE_LOGIT_MARGIN)


def resolved_temperature(
    temperature: float | str, user_input: str, pointwise_logit: float | None = None
) -> float:
    """A configured temperature, with "auto" resolved (`two_tower_temperature`)."""
    if temperature == "auto":
        return two_tower_temperature(user_input, pointwise_logit)
    return float(temperature)
