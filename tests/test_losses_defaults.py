"""What every loss does when the caller leaves a keyword out, and what its errors say.

The training loop passes every keyword, so nothing else pins the defaults down: a loss called
without `temperature` scores raw dot products (T = 1), without `margin` uses none, without
`offset` adds none; a misuse names the loss and what it needs (found by mutation testing: a
changed default or message went unnoticed)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from recsys.errors import ConfigError
from recsys.losses import LOSSES, distillation_kl, gbce, nce, sampled_softmax_corrected

RNG = np.random.default_rng(4)
U, P, N = (torch.tensor(RNG.normal(size=s)) for s in ((3, 4), (3, 4), (5, 4)))
LOG_Q = torch.log(torch.tensor(RNG.dirichlet(np.ones(5))))
POS_LOG_Q = torch.log(torch.tensor([0.2, 0.1, 0.3], dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_left_out_keywords_mean_temperature_one_no_margin_no_offset(name):
    loss = LOSSES[name]
    accepted = inspect.signature(loss).parameters
    needed = {"n_items": 50} if "n_items" in accepted else {}
    if name == "contrastive":  # refuses margin 0: only its temperature default is checked
        needed["margin"] = 0.5
    neutral = {"temperature": 1.0, "margin": 0.0, "offset": 0.0}
    spelled = {k: v for k, v in neutral.items() if k in accepted and k not in needed}
    default = loss(U, P, N, LOG_Q, pos_log_q=POS_LOG_Q, **needed)
    spelled_out = loss(U, P, N, LOG_Q, pos_log_q=POS_LOG_Q, **needed, **spelled)
    assert default.item() == pytest.approx(spelled_out.item(), rel=1e-12)


def test_misuse_errors_name_the_loss_and_what_it_needs():
    with pytest.raises(ConfigError, match=r"^gbce needs n_items \(or the sampler's log_q\)"):
        gbce(U, P, N, None)
    with pytest.raises(ConfigError, match=r"^sampled_softmax_corrected needs log_q or n_items"):
        sampled_softmax_corrected(U, P, N, None)
    with pytest.raises(ConfigError, match=r"^nce needs log_q and pos_log_q"):
        nce(U, P, N, None)
    with pytest.raises(ConfigError, match=r"^contrastive loss needs margin > 0"):
        LOSSES["contrastive"](U, P, N, LOG_Q)


def test_distillation_kl_without_temperature_is_at_one():
    student, teacher = torch.tensor(RNG.normal(size=(3, 5))), torch.tensor(RNG.normal(size=(3, 5)))
    assert distillation_kl(student, teacher).item() == pytest.approx(
        distillation_kl(student, teacher, 1.0).item()
    )


def test_corrected_softmax_row_with_one_negative_left_follows_the_formula():
    """A row whose every negative but one is masked: Z is that one negative's exp(s - log q) over a
    count of 1, and the row still contributes (only a row with none left contributes 0)."""
    mask = torch.ones((3, 5), dtype=torch.bool)
    mask[0, 2] = False  # row 0 keeps negative 2 only; rows 1 and 2 keep nothing
    got = sampled_softmax_corrected(U, P, N, LOG_Q, hit_mask=mask)
    s_p, s_j = float(U[0] @ P[0]), float(U[0] @ N[2]) - float(LOG_Q[2])
    weight = 1 / (1 + np.exp(s_p - s_j))  # sigmoid(log Z - s_p), log Z = s_j - log 1
    assert got.item() == pytest.approx(weight * (s_j - s_p) / 3, rel=1e-10)
