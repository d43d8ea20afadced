"""Retrieval losses for two-tower training; each a few lines, each checked against a hand formula in tests.

One signature for all of `LOSSES`, so the training loop can swap them by name:

    loss(user (B, d), pos (B, d), neg (N, d) shared | (B, N, d) per example, log_q (N,) | (B, N) | None,
         *, temperature=1.0, hit_mask=(B, N) bool | None, margin=0.0, pos_log_q=(B,) | None) -> scalar

The scalar is a mean over the batch. Scores are dot products `s = u . i`; softmax-family and pointwise
logistic losses use logits `s / temperature`. `hit_mask` True means "this candidate is not a negative
for this example" (its own positive in-batch, or an accidental hit): softmax losses give it -inf,
pointwise losses give it zero weight and average over the remaining negatives, so a masked candidate
contributes exactly nothing (tests check loss == loss without it).

Which losses use `log_q` (the sampler's per-draw log-probability, see `recsys.sampling`):
- `sampled_softmax`: logQ correction `logit - log q` on negatives and, when `pos_log_q` is given, on the
  positive (Yi et al. 2019). Pass `log_q=None` to turn the correction off.
- `nce`: q is part of the estimator, not a correction; it always needs it (pass it even when
  `logq_correction` is off). It also takes `log_normalizer`, the paper's normalising constant c
  (default `-1 / temperature`, see `nce`).
- `bce`: importance weights `1/q` on the negatives' average (the uniform mean BCE targets).
- `sampled_softmax_corrected`: the corrected logQ of Khrylchenko et al. 2025 (negatives only; the
  positive is always in the denominator), see the function.
- `gbce`: only to estimate the sampling rate when `n_items` is not given.
- everything else ignores `log_q`: they are not estimators of a full softmax.
Metric-learning losses (`hinge`, `contrastive`, `lifted`, `npair`) work on raw similarities or
distances, where `margin` has its usual meaning; they ignore `temperature`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from recsys.errors import ConfigError

Loss = Callable[..., torch.Tensor]

POINTWISE_LOSSES = ("bce", "gbce")
"""Losses that score each (user, item) pair on an absolute logit scale: they take `offset`
(`pointwise_offset`, the two-tower's `logit_offset`)."""


def negative_scores(user: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """`(B, N)` dot products: one matmul for shared `(N, d)` negatives, a batched one for `(B, N, d)`."""
    if neg.dim() == 2:
        return user @ neg.T
    return torch.einsum("bd,bnd->bn", user, neg)


def _logits(
    user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(B,)` positive and `(B, N)` negative logits `s / T` (see the module docstring)."""
    return (user * pos).sum(dim=1) / temperature, negative_scores(user, neg) / temperature


def _per_row(x: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """Broadcast an `(N,)` per-candidate tensor to `(B, N)`; pass `(B, N)` and None through."""
    if x is None or x.dim() == 2:
        return x
    return x.unsqueeze(0).expand(batch, -1)


def _masked_mean(terms: torch.Tensor, hit_mask: torch.Tensor | None) -> torch.Tensor:
    """Per-row mean over unmasked negatives `(B,)`; a row with every negative masked contributes 0."""
    if hit_mask is None:
        return terms.mean(dim=1) if terms.shape[1] else terms.sum(dim=1)
    keep = ~hit_mask
    total = torch.where(keep, terms, torch.zeros_like(terms)).sum(dim=1)
    return total / keep.sum(dim=1).clamp(min=1)


def _masked_sum(terms: torch.Tensor, hit_mask: torch.Tensor | None) -> torch.Tensor:
    """Per-row sum over unmasked negatives `(B,)`: masked ones contribute 0 and k stays the number
    drawn (the estimators that sum their k negatives: `gbce`, `nce`)."""
    if hit_mask is not None:
        terms = torch.where(hit_mask, torch.zeros_like(terms), terms)
    return terms.sum(dim=1)


def _importance_mean(terms: torch.Tensor, log_q: torch.Tensor, hit_mask: torch.Tensor | None) -> torch.Tensor:
    """Per-row self-normalised importance-weighted mean `(B,)`: weights `1/q` over the unmasked
    negatives, normalised to sum to 1, turn a mean over draws from q into an estimate of the mean
    over uniformly drawn items; a row with every negative masked contributes 0."""
    log_w = -log_q
    if hit_mask is not None:
        log_w = log_w.masked_fill(hit_mask, -torch.inf)
    any_kept = torch.isfinite(log_w).any(dim=1, keepdim=True)
    weights = torch.softmax(torch.where(any_kept, log_w, torch.zeros_like(log_w)), dim=1)
    return torch.where(any_kept, weights * terms, torch.zeros_like(terms)).sum(dim=1)


def _softmax_xent(
    pos_logit: torch.Tensor, neg_logits: torch.Tensor, hit_mask: torch.Tensor | None
) -> torch.Tensor:
    """Mean cross-entropy of the positive (column 0) against [positive, negatives].

    `neg_logits` must be a fresh tensor of the caller's (it is masked in place: one `(B, N)` pass
    and allocation fewer). `F.cross_entropy` is `logsumexp - positive` with a fused backward
    (softmax minus one-hot), where logsumexp's backward takes three `(B, N)` passes."""
    if hit_mask is not None:
        neg_logits = neg_logits.masked_fill_(hit_mask, -torch.inf)
    logits = torch.cat([pos_logit.unsqueeze(1), neg_logits], dim=1)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def sampled_softmax(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy over [pos, negs] with logQ correction and an optional additive margin.

    Logits `(s - log q)` estimate the full-corpus softmax without the sampler's popularity bias
    (Bengio & Senecal 2008; Yi et al. 2019, who correct the in-batch positive as well: pass
    `pos_log_q`). The margin is AM-softmax style (Wang et al. 2018): the positive's similarity is
    lowered by `margin` before scaling, `(s_pos - margin) / T`, so it must win by at least that much.
    """
    # The temperature scales the (B, d) user vectors, not the (B, N) scores: one small pass instead
    # of a large one forward and another backward; shared negatives' log q enters as the bias of
    # the same matmul (addmm). Equal to scaling and subtracting afterwards up to float rounding.
    scaled = user / temperature
    pos_logit = (scaled * pos).sum(dim=1)
    if margin:
        pos_logit = pos_logit - margin / temperature
    if log_q is not None and log_q.dim() == 1 and neg.dim() == 2:
        neg_logits = torch.addmm(-log_q, scaled, neg.T)
    else:
        neg_logits = negative_scores(scaled, neg)
        if log_q is not None:
            neg_logits = neg_logits - _per_row(log_q, user.shape[0])
    if log_q is not None and pos_log_q is not None:
        pos_logit = pos_logit - pos_log_q
    return _softmax_xent(pos_logit, neg_logits, hit_mask)


def infonce(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE (van den Oord et al. 2018): softmax cross-entropy over [pos, negs] at a temperature.

    Deliberately uncorrected: `log_q`, `pos_log_q` and `margin` are ignored. With in-batch or popularity
    negatives it therefore learns popularity-biased scores; `sampled_softmax` with `log_q` is its
    bias-corrected form (identical when `log_q` is None and margin 0).
    """
    return sampled_softmax(user, pos, neg, None, temperature=temperature, hit_mask=hit_mask)


def bce(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
    offset: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Binary cross-entropy: positive labelled 1, each negative 0: `-log s(x_pos) - mean_neg log(1 - s(x_neg))`.

    Negatives are *averaged* per example (over the unmasked ones), so positive and negative evidence
    weigh equally whatever `num_negatives` is and the loss scale does not change with N.
    With `log_q` the average is importance-weighted, `w_j ~ 1/q_j` normalised per row: BCE's target is
    "every item the user did not pick is a negative", a uniform mean, and the weights undo the
    sampler's bias. Without them popularity-sampled negatives teach the model to push popular items
    down, the opposite of what recall rewards. For a uniform sampler the weights are equal and
    nothing changes. `pos_log_q` and `margin` are ignored.

    `offset` is added to every logit, `x = s / T + offset` (see `pointwise_offset` for why L2-normalised
    towers need one).
    """
    pos_logit, neg_logits = _logits(user, pos, neg, temperature)
    pos_logit, neg_logits = pos_logit + offset, neg_logits + offset
    # -log(1 - sigmoid(x)) == softplus(x); -log sigmoid(x) == softplus(-x); both stable.
    neg_terms = F.softplus(neg_logits)
    if log_q is None:
        negative = _masked_mean(neg_terms, hit_mask)
    else:
        negative = _importance_mean(neg_terms, _per_row(log_q, user.shape[0]), hit_mask)
    return (F.softplus(-pos_logit) + negative).mean()


def pointwise_offset(
    n_items: int,
    mean_items_per_user: float,
    temperature: float,
    positive_weight: float = 1.0,
    negative_weight: float = 1.0,
) -> float:
    """The logit offset `b` of the pointwise losses (`bce`, `gbce`), at most 0:

        b = log(positive_weight * n_items / (negative_weight * mean items per user)) - 1 / T

    Why: a pointwise logistic loss scores each (user, item) pair on an absolute scale. With uniform
    negatives and a positive term of weight `w+` against negative terms of total weight `w-` per
    example, the optimum logit of item i is `log(w+ n p(i | u) / w-)`: about
    `log(w+ n_items / (w- |I_u|))` for a typical positive and far below 0 for the many unrelated
    items. L2-normalised towers give logits `s / T` in `[-1/T, 1/T]` with no free offset, so the only
    way to push the unrelated items' logits below 0 is to make their cosines negative: users and
    items drift into opposite hemispheres, item vectors bunch together, and the mean of a new user's
    history vectors (the id tower's fold-in) no longer points where a trained user's vector would
    (on sparse planted clusters BCE fell to a quarter of popularity's recall). With `b` an aligned
    pair (cosine 1) gets the typical positive's optimum and an orthogonal, unrelated pair gets `b`,
    far below 0, which unit vectors reach in any dimension. BCE averages its negatives (`w+ = w- = 1`);
    gBCE weighs the positive by beta and sums k negatives (`w+ = beta`, `w- = k`)."""
    return min(0.0, pointwise_logit(n_items, mean_items_per_user, positive_weight, negative_weight) - 1.0 / temperature)


def pointwise_logit(
    n_items: int, mean_items_per_user: float, positive_weight: float = 1.0, negative_weight: float = 1.0
) -> float:
    """`L = log(positive_weight * n_items / (negative_weight * mean items per user))`: the optimum logit of a
    typical positive under uniform negatives (`pointwise_offset`), which the offset gives an aligned pair.
    The "auto" temperature of a pointwise loss is at most `1 / (2 L + margin)`
    (`recsys.models.defaults.pointwise_temperature`)."""
    ratio = positive_weight * max(n_items, 1) / (negative_weight * max(mean_items_per_user, 1.0))
    return math.log(ratio)


def gbce_beta(num_negatives: int, n_items: int, calibration: float) -> float:
    """gBCE's positive weight `beta = alpha (t (1 - 1/alpha) + 1/alpha)`, `alpha = k / (n_items - 1)`."""
    alpha = min(max(num_negatives / max(n_items - 1, 1), 1e-12), 1.0)
    return alpha * (calibration * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
    offset: float | torch.Tensor = 0.0,
    n_items: int | None = None,
    calibration: float = 0.75,
) -> torch.Tensor:
    """Generalised BCE (Petrov & Macdonald 2023, gSASRec): `-beta log s(x_pos) - sum_neg log(1 - s(x_neg))`.

    With k negatives drawn uniformly from the other `n_items - 1` items, the sampling rate is
    `alpha = k / (n_items - 1)` and `beta = alpha (t (1 - 1/alpha) + 1/alpha)` for the calibration
    parameter `t` in [0, 1]: t = 0 gives beta = 1 (plain BCE with summed negatives), t = 1 gives
    beta = alpha, which makes the predicted probabilities calibrated to the full catalogue (the
    paper's overconfidence fix). Negatives are *summed*, as in the paper; masked ones contribute 0
    and k stays the number drawn. Without `n_items`, the catalogue size is read off the sampler's
    per-draw probabilities as `1 / mean(q)` (exact for the uniform sampler, `q = 1 / n_items`). Logits are
    `s / T + offset` (`pointwise_offset` with `w+ = beta`, `w- = k`); `log_q`'s only use is that
    estimate; `pos_log_q` and `margin` are ignored.
    """
    k = neg.shape[-2]
    if n_items is None:
        if log_q is None:
            raise ConfigError("gbce needs n_items (or the sampler's log_q) to know its sampling rate")
        n_items = max(2, round(1.0 / float(log_q.detach().exp().mean())))  # uniform q = 1 / n_items
    beta = gbce_beta(k, n_items, calibration)
    pos_logit, neg_logits = _logits(user, pos, neg, temperature)
    pos_logit, neg_terms = pos_logit + offset, F.softplus(neg_logits + offset)
    return (beta * F.softplus(-pos_logit) + _masked_sum(neg_terms, hit_mask)).mean()


def sampled_softmax_corrected(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
    n_items: int | None = None,
) -> torch.Tensor:
    """Sampled softmax with the corrected logQ of Khrylchenko et al. 2025 ("Correcting the LogQ Correction").

    The full-softmax gradient is `-(1 - P(p)) grad s_p + sum_{j != p} P(j) grad s_j`. The positive is
    always in the full softmax's denominator, never Monte-Carlo sampled, so only the sum over the
    *other* items is estimated from the negatives: `sum_{j != p} P(j) grad s_j = (1 - P(p))
    E_{P(. | j != p)}[grad s_j]`, with self-normalised importance weights `exp(s_j - log q_j)` over the
    negatives alone. That is the gradient of

        w * ( -s_p + log sum_neg exp(s_j - log q_j) ),    w = stop_grad(1 - P(p)),

    where `1 - P(p) = Z / (exp(s_p) + Z)`, `Z = mean_neg exp(s_j - log q_j)` the importance estimate of
    `sum_{j != p} exp(s_j)`: the model's probability of ranking the positive wrong, which weights each
    example by how uncertain the model still is. The positive gets no `log q` (Yi et al.'s in-batch
    correction subtracts it there too, which this removes), and it is not in its own denominator.
    Logits are `s / T`; masked candidates leave both sums and the mean; `log_q=None` means uniform
    `q = 1 / n_items` (then `n_items` is required); a row with every negative masked contributes 0.
    `pos_log_q` and `margin` are ignored.
    """
    batch = user.shape[0]
    pos_logit, neg_logits = _logits(user, pos, neg, temperature)
    if log_q is None:
        if n_items is None:
            raise ConfigError("sampled_softmax_corrected needs log_q or n_items (uniform q = 1 / n_items)")
        neg_logits = neg_logits + math.log(n_items)
    else:
        neg_logits = neg_logits - _per_row(log_q, batch)
    kept = torch.ones_like(neg_logits, dtype=torch.bool) if hit_mask is None else ~hit_mask
    neg_logits = neg_logits.masked_fill(~kept, -torch.inf)
    n_kept = kept.sum(dim=1)
    any_kept = n_kept > 0
    safe = torch.where(any_kept.unsqueeze(1), neg_logits, torch.zeros_like(neg_logits))
    log_sum = torch.logsumexp(safe, dim=1)
    log_z = log_sum - torch.log(n_kept.clamp(min=1).to(log_sum.dtype))
    weight = torch.sigmoid(log_z - pos_logit).detach()  # 1 - P(p) = Z / (exp(s_p) + Z)
    per_row = weight * (log_sum - pos_logit)
    return torch.where(any_kept, per_row, torch.zeros_like(per_row)).mean()


def nce(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
    n_items: int | None = None,
    log_normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise-contrastive estimation (Gutmann & Hyvarinen 2010) with k = N noise samples per example.

    The model's log-density is `log p_m = s / T + c`, where `c` is the paper's normalising
    parameter (an estimate of `-log Z`), and data is classified against noise with logit
    `G = log p_m - log(k q)`, `q` the noise (sampler) distribution:
    `-log s(G_pos) - sum_neg log(1 - s(G_neg))`.
    Noise terms are *summed* (the estimator's k E_noise[...]); masked negatives contribute 0 and k stays
    the number drawn. Needs q of the negatives (`log_q`) and of the positive (`pos_log_q`); either one
    missing falls back to uniform `q = 1 / n_items` (then `n_items` is required). `margin` is ignored.

    Why `c` matters: NCE's optimum is `log p_m(i | u) = log p_data(i | u)`, a real log-probability
    (about `-log n_items` or lower). With L2-normalised towers `s / T` lies in `[-1/T, 1/T]` and has
    no free offset, so with `c = 0` the model can only produce such negative values by making almost
    every user-item cosine negative: users and items collapse onto opposite poles and the cluster
    structure is squeezed into what is left (on planted clusters: recall@20 0.12, no better than
    popularity, folding 0.79). At `c = 0` the noise side also dominates from the first step (each
    of the k negatives has `s(G) ~ s(log(1 / (k q)))`, about 0.9 for uniform q and k = 128).
    `log_normalizer=None` uses `c = -1 / T`: `log p_m = (s - 1) / T <= 0`, i.e. "a probability is at
    most 1" for unit vectors, which puts the optimum at ordinary cosines (related items near 1,
    unrelated near 0); recall then matches BCE. It needs `2 / T` to span the log-probability range
    (about `log n_items` nats): T = 0.1 gives 20. Pass a learned scalar to estimate c as in the paper.
    """
    batch, k = user.shape[0], neg.shape[-2]
    if (log_q is None or pos_log_q is None) and n_items is None:
        raise ConfigError(
            "nce needs log_q and pos_log_q (the noise distribution) or n_items for uniform noise"
        )
    uniform = -math.log(n_items) if n_items is not None else 0.0
    log_k = math.log(max(k, 1))
    c = -1.0 / temperature if log_normalizer is None else log_normalizer
    pos_lq = pos_log_q if pos_log_q is not None else torch.full_like(user[:, 0], uniform)
    neg_lq = (
        _per_row(log_q, batch)
        if log_q is not None
        else torch.full_like(user[:, :1], uniform).expand(batch, k)
    )
    pos_logit, neg_logits = _logits(user, pos, neg, temperature)
    pos_logit = pos_logit + c - (log_k + pos_lq)
    neg_logits = neg_logits + c - (log_k + neg_lq)
    return (F.softplus(-pos_logit) + _masked_sum(F.softplus(neg_logits), hit_mask)).mean()


def bpr(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """BPR (Rendle et al. 2009): `-log s((s_pos - s_neg) / T)`, averaged over unmasked negatives."""
    pos_logit, neg_logits = _logits(user, pos, neg, temperature)
    return _masked_mean(F.softplus(neg_logits - pos_logit.unsqueeze(1)), hit_mask).mean()


def hinge(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triplet / hinge: `max(0, margin - s_pos + s_neg)` on raw similarities, averaged over unmasked negatives."""
    s_pos = (user * pos).sum(dim=1)
    s_neg = negative_scores(user, neg)
    return _masked_mean(F.relu(margin - s_pos.unsqueeze(1) + s_neg), hit_mask).mean()


def positives_only(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """`-log s(s_pos / T)`, negatives ignored: the control that shows folding.

    With nothing pushing unrelated items apart, the cheapest solution puts all users and items in one
    region, and items from unrelated groups then show up in each other's recommendations.
    """
    return F.softplus(-(user * pos).sum(dim=1) / temperature).mean()


def contrastive(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Contrastive pair loss (Chopra, Hadsell & LeCun 2005; form of Hadsell et al. 2006).

    With Euclidean distance d: `1/2 d_pos^2 + mean_neg 1/2 max(0, margin - d_neg)^2`. Negatives further
    than `margin` cost nothing, so margin must be positive (with L2-normalised towers d is in [0, 2]).
    """
    if margin <= 0:
        raise ConfigError("contrastive loss needs margin > 0 (negatives beyond the margin cost nothing)")
    d_pos = (user - pos).norm(dim=1)
    d_neg = _distances(user, neg)
    neg_terms = 0.5 * F.relu(margin - d_neg) ** 2
    return (0.5 * d_pos**2 + _masked_mean(neg_terms, hit_mask)).mean()


def _distances(user: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """`(B, N)` Euclidean distances via |u|^2 + |n|^2 - 2 u.n: one matmul instead of a `(B, N, d)`
    difference tensor (36x faster for shared negatives). Clamped at 0 against rounding; eps under
    the root keeps the gradient finite at distance 0."""
    u2 = (user * user).sum(dim=-1, keepdim=True)
    n2 = (neg * neg).sum(dim=-1)
    n2 = n2.unsqueeze(0) if neg.dim() == 2 else n2
    sq = (u2 + n2 - 2 * negative_scores(user, neg)).clamp_min(0)
    return torch.sqrt(sq + 1e-12)


def lifted(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lifted structured loss (Song et al. 2016), per anchor for user-item retrieval.

    Paper, for a positive pair (i, j): `J = log(sum_{(i,k) neg} exp(a - D_ik) + sum_{(j,l) neg} exp(a - D_jl))
    + D_ij`, loss `1 / (2|P|) sum max(0, J)^2`, with D the Euclidean distance and a the margin. Here the
    anchor is the user and the pair is (user, positive item); the item side's negatives would be other
    users, which the (user, item, negatives) contract does not carry, so only the anchor's term is kept:
    `J_b = log sum_n exp(margin - D(u_b, n)) + D(u_b, p_b)` and the loss is `1/2 mean_b max(0, J_b)^2`.
    """
    d_pos = (user - pos).norm(dim=1)
    neg_terms = margin - _distances(user, neg)
    if hit_mask is not None:
        neg_terms = neg_terms.masked_fill(hit_mask, -torch.inf)
    j = torch.logsumexp(neg_terms, dim=1) + d_pos
    return 0.5 * (F.relu(j) ** 2).mean()


def npair(
    user: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    temperature: float | torch.Tensor = 1.0,
    hit_mask: torch.Tensor | None = None,
    margin: float = 0.0,
    pos_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-class N-pair loss (Sohn 2016): `log(1 + sum_neg exp(s_neg - s_pos))` on raw inner products.

    Since `log(1 + sum exp(s_n - s_p)) = logsumexp([s_p, s_n...]) - s_p`, this is exactly softmax cross-
    entropy / InfoNCE at temperature 1; with in-batch negatives (the other examples' positives, diagonal
    masked) it is Sohn's N-pair-mc batch construction. `temperature`, `log_q` and `margin` are ignored;
    Sohn's L2 penalty on embeddings is left to weight decay or the towers' normalisation.
    """
    return sampled_softmax(user, pos, neg, None, temperature=1.0, hit_mask=hit_mask)


def distillation_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015): `T^2 KL(softmax(teacher/T) || softmax(student/T))`.

    Rows are examples, columns candidates; mean over rows. The T^2 keeps gradient size comparable
    across temperatures. `mask` True drops a candidate from both distributions (each row needs one left).
    The teacher is treated as a constant (detached).
    """
    student = student_logits / temperature
    teacher = teacher_logits.detach() / temperature
    if mask is not None:
        student = student.masked_fill(mask, -torch.inf)
        teacher = teacher.masked_fill(mask, -torch.inf)
    log_p_teacher = F.log_softmax(teacher, dim=-1)
    log_p_student = F.log_softmax(student, dim=-1)
    p_teacher = log_p_teacher.exp()
    # 0 * log 0 terms (masked columns) are 0, not NaN.
    terms = torch.where(
        p_teacher > 0, p_teacher * (log_p_teacher - log_p_student), torch.zeros_like(p_teacher)
    )
    return terms.sum(dim=-1).mean() * temperature**2


LOSSES: dict[str, Loss] = {
    "bce": bce,
    "sampled_softmax": sampled_softmax,
    "nce": nce,
    "infonce": infonce,
    "bpr": bpr,
    "hinge": hinge,
    "positives_only": positives_only,
    "contrastive": contrastive,
    "lifted": lifted,
    "npair": npair,
    "gbce": gbce,
    "sampled_softmax_corrected": sampled_softmax_corrected,
}


def get_loss(name: str) -> Loss:
    """The loss called `name` (the `TwoTowerConfig.loss` values), or a ConfigError listing the choices."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(sorted(LOSSES))}") from None
