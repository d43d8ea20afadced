"""Wiring of the training step: what `recsys.training.compute_loss` hands the loss.

The losses are checked against formulas in tests/test_losses.py; these tests check that the loop
passes them the right things: the sampler's `log q` (negatives and positive), the in-batch diagonal
and accidental-hit mask, and nothing else. Each test fails when one piece of wiring is removed
(e.g. `hit_mask=None`, `pos_log_q=None`, `log_q=None` in `compute_loss`, or `positives=None` in
`train_two_tower`): the step's loss is recomputed here from the network's vectors with a direct
numpy formula and hand-built masks, and an unmasked accidental hit is shown to change the gradient.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.nn import functional as F

from recsys.distill import TeacherTargets
from recsys.losses import get_loss
from recsys.models.two_tower import TwoTowerConfig, TwoTowerNetwork
from recsys.sampling import Negatives, PositiveLookup, build_sampler, item_counts_from_csr
from recsys.training import TowerForward, compute_loss, train_two_tower

# 5 users x 8 items; item 0 is liked by four users, item 1 by three: in-batch and popularity
# candidates hit other users' positives often, and q differs between items.
LIKES = {0: [0, 1, 2], 1: [0, 3], 2: [0, 1, 4], 3: [0, 5, 6], 4: [1, 7]}
N_USERS, N_ITEMS = 5, 8
BATCH_USERS = np.array([0, 1, 2, 3, 4])
BATCH_ITEMS = np.array([0, 3, 1, 5, 7])
T = 0.5


def train_matrix() -> sp.csr_matrix:
    rows = [u for u, items in LIKES.items() for _ in items]
    cols = [i for items in LIKES.values() for i in items]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(N_USERS, N_ITEMS))


def config(**overrides) -> TwoTowerConfig:
    base = dict(
        name="tt", dim=4, temperature=T, num_negatives=6, batch_size=5, epochs=1, seed=0, threads=1,
        device="cpu", quiet=True, sampler_alpha=0.75, mixed_uniform_fraction=0.5,
    )  # fmt: skip
    return TwoTowerConfig(**{**base, **overrides})


def hand_log_q(cfg: TwoTowerConfig, items: np.ndarray, batch: int) -> np.ndarray:
    """log q of `items` under `cfg.sampler`, from the item counts by hand (sampling.py's convention)."""
    counts = np.bincount(np.concatenate(list(LIKES.values())), minlength=N_ITEMS).astype(float)
    if cfg.sampler in ("uniform", "all"):  # all: every item once per row, so q = 1/n too
        q = np.full(N_ITEMS, 1 / N_ITEMS)
    elif cfg.sampler == "popularity":
        q = counts**cfg.sampler_alpha / (counts**cfg.sampler_alpha).sum()
    elif cfg.sampler == "in_batch":
        q = counts / counts.sum()
    else:  # mixed: B in-batch columns plus `num` uniform ones
        num = round(cfg.mixed_uniform_fraction * cfg.num_negatives)
        q = (batch * counts / counts.sum() + num / N_ITEMS) / (batch + num)
    return np.log(q[items])


def hand_mask(cfg: TwoTowerConfig, candidates: np.ndarray, in_batch: int) -> np.ndarray:
    """(B, N) True where candidate n is not a negative for row b: its own in-batch column always, as
    is the row's positive among the full catalogue (`all`); with `remove_accidental_hits`, any item
    the user liked in training or the row's positive."""
    batch = BATCH_USERS.size
    grid = np.broadcast_to(candidates, (batch, candidates.shape[-1]))
    mask = np.zeros(grid.shape, dtype=bool)
    if cfg.sampler == "all":
        mask |= grid == BATCH_ITEMS[:, None]
    for b in range(min(batch, in_batch)):
        mask[b, b] = True
    if cfg.remove_accidental_hits:
        for b, user in enumerate(BATCH_USERS):
            mask[b] |= np.isin(grid[b], LIKES[int(user)]) | (grid[b] == BATCH_ITEMS[b])
    return mask


def hand_loss(cfg: TwoTowerConfig, u: np.ndarray, p: np.ndarray, n: np.ndarray, neg: Negatives) -> float:
    """The loss of one step written out row by row (float64), from the vectors and hand-built q and mask."""
    candidates = neg.items.numpy()
    batch = u.shape[0]
    grid = np.broadcast_to(candidates, (batch, candidates.shape[-1]))
    log_q = hand_log_q(cfg, grid, batch)
    pos_log_q = hand_log_q(cfg, BATCH_ITEMS, batch)
    mask = hand_mask(cfg, candidates, neg.in_batch)
    s_pos = (u * p).sum(axis=1)
    s_neg = np.einsum("bd,bnd->bn", u, n) if n.ndim == 3 else u @ n.T
    correct = cfg.logq_correction or cfg.loss == "nce"
    rows = []
    for b in range(batch):
        keep = ~mask[b]
        if cfg.loss == "sampled_softmax":
            pos = s_pos[b] / T - (pos_log_q[b] if correct else 0.0)
            negs = s_neg[b, keep] / T - (log_q[b, keep] if correct else 0.0)
            rows.append(np.logaddexp.reduce(np.r_[pos, negs]) - pos)
        elif cfg.loss == "bce":
            terms = np.logaddexp(0, s_neg[b, keep] / T)  # -log(1 - sigmoid)
            w = np.exp(-log_q[b, keep]) if correct else np.ones(keep.sum())
            rows.append(np.logaddexp(0, -s_pos[b] / T) + (w / w.sum() * terms).sum())
        elif cfg.loss == "nce":
            c, log_k = -1 / T, math.log(grid.shape[1])
            g_pos = s_pos[b] / T + c - log_k - pos_log_q[b]
            g_neg = s_neg[b, keep] / T + c - log_k - log_q[b, keep]
            rows.append(np.logaddexp(0, -g_pos) + np.logaddexp(0, g_neg).sum())
        else:
            raise AssertionError(cfg.loss)
    return float(np.mean(rows))


def one_step(cfg: TwoTowerConfig) -> tuple[float, float, Negatives]:
    """compute_loss on the fixed batch and the same step recomputed by hand from the same draws."""
    train = train_matrix()
    torch.manual_seed(0)
    network = TwoTowerNetwork(cfg, N_USERS, N_ITEMS)
    sampler = build_sampler(cfg, item_counts_from_csr(train), train)
    users, items = torch.as_tensor(BATCH_USERS), torch.as_tensor(BATCH_ITEMS)
    generator = torch.Generator().manual_seed(7)
    twin = torch.Generator().manual_seed(7)
    drawn = sampler.sample(users, items, twin)  # what compute_loss will draw from the same state
    positives = PositiveLookup(train) if cfg.remove_accidental_hits else None
    loss = compute_loss(
        TowerForward(network), users, items, cfg=cfg, sampler=sampler, loss_fn=get_loss(cfg.loss),
        positives=positives, generator=generator,
    )  # fmt: skip
    with torch.no_grad():
        u = network.user_vectors(users, training=True).double().numpy()
        every = network.item_vectors(torch.arange(N_ITEMS), training=True).double().numpy()
    want = hand_loss(cfg, u, every[BATCH_ITEMS], every[drawn.items.numpy()], drawn)
    return float(loss.detach()), want, drawn


STEP_CASES = [
    # (sampler, loss, logq_correction, remove_accidental_hits, shared_negatives)
    ("in_batch", "sampled_softmax", True, True, True),  # diagonal, hits, q on both sides
    ("in_batch", "sampled_softmax", True, False, True),  # the diagonal is masked even without hit removal
    ("in_batch", "sampled_softmax", False, True, True),
    ("mixed", "sampled_softmax", True, True, True),
    ("popularity", "sampled_softmax", True, True, False),  # per-example candidates
    ("popularity", "bce", True, True, True),  # importance weights 1/q
    ("popularity", "nce", False, True, True),  # NCE takes q even with the correction off
    ("uniform", "nce", True, False, False),
    ("all", "sampled_softmax", True, True, True),  # the full catalogue: q = 1/n, hits masked
    ("all", "sampled_softmax", False, False, True),  # the positive's own column is masked even so
]


@pytest.mark.parametrize(("sampler", "loss", "logq", "hits", "shared"), STEP_CASES)
def test_a_training_step_computes_the_loss_with_the_samplers_q_and_the_masks(
    sampler, loss, logq, hits, shared
):
    cfg = config(
        sampler=sampler, loss=loss, logq_correction=logq, remove_accidental_hits=hits, shared_negatives=shared
    )
    got, want, _ = one_step(cfg)
    assert got == pytest.approx(want, rel=1e-5)


def test_the_all_items_sampler_is_the_full_catalogue_cross_entropy_with_the_positive_counted_once():
    """sampler = "all": the step's loss is `logsumexp_j(s_j / T) - s_pos / T` over every item, as
    `F.cross_entropy` of the user's scores against the whole catalogue computes it. Fails if the
    sampler draws a sample instead (other candidates), if the positive's own column is left unmasked
    (it would count twice in the denominator) or if the logQ correction were not constant."""
    for logq in (True, False):
        cfg = config(sampler="all", loss="sampled_softmax", logq_correction=logq, remove_accidental_hits=False,
                     num_negatives=3)  # fmt: skip
        train = train_matrix()
        torch.manual_seed(0)
        network = TwoTowerNetwork(cfg, N_USERS, N_ITEMS)
        sampler = build_sampler(cfg, item_counts_from_csr(train), train)
        users, items = torch.as_tensor(BATCH_USERS), torch.as_tensor(BATCH_ITEMS)
        loss = compute_loss(
            TowerForward(network), users, items, cfg=cfg, sampler=sampler, loss_fn=get_loss(cfg.loss),
            positives=None, generator=torch.Generator().manual_seed(7),
        )  # fmt: skip
        with torch.no_grad():
            scores = network.user_vectors(users, training=True) @ network.item_vectors(
                torch.arange(N_ITEMS), training=True
            ).T
        want = F.cross_entropy(scores.double() / T, items)
        assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)


def test_the_hand_step_is_sensitive_to_each_piece_of_wiring():
    """The cases above can tell the wirings apart: the fixed batch has accidental hits and items
    with different q, so dropping the mask, the negatives' or the positive's q changes the loss."""
    cfg = config(sampler="in_batch", loss="sampled_softmax")
    _, full, drawn = one_step(cfg)
    mask = hand_mask(cfg, drawn.items.numpy(), drawn.in_batch)
    off_diagonal_hits = mask & ~np.eye(*mask.shape, dtype=bool)
    assert off_diagonal_hits.any()
    assert np.ptp(hand_log_q(cfg, BATCH_ITEMS, 5)) > 0.5
    for changed in ({"remove_accidental_hits": False}, {"logq_correction": False}):
        _, other, _ = one_step(cfg.model_copy(update=changed))
        assert abs(other - full) > 1e-3, changed


# ----------------------------------------------------------------------------- the gradient
class FixedNegatives:
    """A sampler that always offers the same shared candidates (uniform q): the test controls
    which candidate is an accidental hit."""

    def __init__(self, items: list[int]) -> None:
        self.items = torch.tensor(items)

    def sample(self, user_idx: torch.Tensor, pos_idx: torch.Tensor, generator: torch.Generator) -> Negatives:
        log_q = torch.full((self.items.numel(),), -math.log(N_ITEMS))
        return Negatives(self.items, log_q, torch.full(pos_idx.shape, -math.log(N_ITEMS)))


NEG_LOSSES = ["bce", "sampled_softmax", "nce", "infonce", "bpr", "hinge", "contrastive", "lifted", "npair"]


def item_gradient(loss: str, remove_hits: bool) -> torch.Tensor:
    """Gradient of one step's loss w.r.t. the item embedding table, for user 0 with positive item 0
    against candidates [1, 3]: item 1 is one of user 0's training items (an accidental hit)."""
    cfg = config(loss=loss, margin=2.5, remove_accidental_hits=remove_hits)
    train = train_matrix()
    torch.manual_seed(0)
    network = TwoTowerNetwork(cfg, N_USERS, N_ITEMS)
    value = compute_loss(
        TowerForward(network), torch.tensor([0]), torch.tensor([0]), cfg=cfg, sampler=FixedNegatives([1, 3]),
        loss_fn=get_loss(loss), positives=PositiveLookup(train) if remove_hits else None,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    value.backward()
    return network.item_tower.ids.weight.grad.clone()


@pytest.mark.parametrize("loss", NEG_LOSSES)
def test_a_masked_accidental_hit_gets_no_gradient_and_an_unmasked_one_does(loss):
    masked, unmasked = item_gradient(loss, True), item_gradient(loss, False)
    assert torch.count_nonzero(masked[1]) == 0  # item 1 takes part only as the (masked) hit
    assert masked[3].abs().sum() > 0 and masked[0].abs().sum() > 0
    assert unmasked[1].abs().sum() > 1e-4  # the hit would push a liked item away from its user


# ----------------------------------------------------------------------------- the loop
def first_step_loss(**overrides) -> float:
    """The loss of the first step of `train_two_tower` on the whole tiny data set (one batch)."""
    cfg = config(sampler="uniform", num_negatives=8, batch_size=13, **overrides)
    torch.manual_seed(0)
    network = TwoTowerNetwork(cfg, N_USERS, N_ITEMS)
    history: list[float] = []
    train_two_tower(
        network, train_matrix(), cfg, max_steps=1, callback=lambda _, m: history.append(m["loss"])
    )
    return history[0]


def test_the_loop_hands_the_pointwise_loss_its_logit_offset():
    """BCE's logit offset (`loss_options`) reaches the loss the loop calls: same seed, same draws,
    a different offset gives a different first-step loss."""
    assert (
        abs(first_step_loss(loss="bce", logit_offset=-3.0) - first_step_loss(loss="bce", logit_offset=0.0))
        > 0.1
    )


def test_the_loop_removes_accidental_hits_when_configured():
    """Same seed, same network and draws: removing hits only drops terms from the softmax's
    denominator, so the first step's loss is strictly lower (fails when the loop never builds the
    positive lookup, `positives=None`)."""
    assert first_step_loss(remove_accidental_hits=True) < first_step_loss(remove_accidental_hits=False) - 1e-3


def hand_training(cfg: TwoTowerConfig, initial: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`cfg.epochs` epochs of sampled softmax written out with plain torch ops from `initial` weights:
    the same seeded permutation and draws as the loop, q and the mask built by hand (a dense
    user x item "liked" table), logits concatenated and reduced by logsumexp, fused Adam."""
    train = train_matrix()
    liked = torch.as_tensor(train.toarray() > 0)
    users = torch.as_tensor(np.repeat(np.arange(N_USERS), np.diff(train.indptr)))
    items = torch.as_tensor(train.indices.astype(np.int64))
    weights = {
        k: initial[k].clone().requires_grad_() for k in ("user_tower.ids.weight", "item_tower.ids.weight")
    }
    user_w, item_w = weights["user_tower.ids.weight"], weights["item_tower.ids.weight"]
    optimizer = torch.optim.Adam([user_w, item_w], lr=cfg.lr, fused=True)
    counts = np.bincount(items.numpy(), minlength=N_ITEMS).astype(np.float64)
    popular = counts**cfg.sampler_alpha / (counts**cfg.sampler_alpha).sum()
    probs = popular if cfg.sampler == "popularity" else np.full(N_ITEMS, 1 / N_ITEMS)
    log_q = torch.as_tensor(np.log(probs), dtype=torch.float32)
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        for batch in torch.split(torch.randperm(users.numel(), generator=generator), cfg.batch_size):
            u, p = users[batch], items[batch]
            b, k = u.numel(), cfg.num_negatives
            if cfg.sampler == "popularity":  # per-example candidates
                grid = torch.multinomial(
                    torch.as_tensor(popular), b * k, replacement=True, generator=generator
                )
                grid = grid.view(b, k)
            else:  # one uniform candidate set shared by the batch
                grid = torch.randint(0, N_ITEMS, (k,), generator=generator).expand(b, k)
            uv, pv = F.normalize(user_w[u], dim=-1), F.normalize(item_w[p], dim=-1)
            nv = F.normalize(item_w[grid], dim=-1)
            pos = (uv * pv).sum(dim=1) / cfg.temperature - log_q[p]
            neg = (uv.unsqueeze(1) * nv).sum(dim=-1) / cfg.temperature - log_q[grid]
            neg = neg.masked_fill(liked[u.unsqueeze(1), grid] | (grid == p.unsqueeze(1)), -torch.inf)
            loss = (torch.logsumexp(torch.cat([pos.unsqueeze(1), neg], dim=1), dim=1) - pos).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: v.detach() for k, v in weights.items()}


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_training_steps_equal_a_hand_written_loop(sampler):
    """Two epochs of four steps each: the trained vectors of `train_two_tower` equal those of the plain
    torch loop above (same seed, same draws), within float rounding. Pins the loop's results while
    its hot path (hit mask, loss kernels) is optimised, and fails when any piece of wiring (mask,
    q on either side, the epoch's permutation, the optimizer) goes missing."""
    cfg = config(
        sampler=sampler, shared_negatives=sampler == "uniform", num_negatives=6, batch_size=4, epochs=2,
        lr=0.05, temperature=0.2, seed=5,
    )  # fmt: skip
    torch.manual_seed(0)
    network = TwoTowerNetwork(cfg, N_USERS, N_ITEMS)
    initial = {k: v.clone() for k, v in network.state_dict().items()}
    train_two_tower(network, train_matrix(), cfg)
    want = hand_training(cfg, initial)
    for name, value in want.items():
        assert not torch.allclose(value, initial[name], atol=1e-3), name  # it trained
        torch.testing.assert_close(network.state_dict()[name], value, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- distillation
def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _teacher(seed: int) -> tuple[np.ndarray, TeacherTargets]:
    """A teacher with random factors and fixed top-2 lists for the batch's 5 users."""
    rng = np.random.default_rng(seed)
    top = np.array([[4, 6], [5, 2], [6, 7], [1, 2], [0, 3]])
    targets = TeacherTargets(
        torch.tensor(rng.normal(size=(N_USERS, 3)), dtype=torch.float32),
        torch.tensor(rng.normal(size=(N_ITEMS, 3)), dtype=torch.float32),
        torch.tensor(top), scale=2.0, temperature=1.5, weight=0.7,
    )  # fmt: skip
    return top, targets


def _losses_without_and_with(cfg, targets, sampler, positives) -> tuple[list[float], np.ndarray, np.ndarray]:
    """compute_loss on the fixed batch without and with the teacher (same initial network), and the
    network's user and item vectors."""
    users, items = torch.as_tensor(BATCH_USERS), torch.as_tensor(BATCH_ITEMS)
    values = []
    for teacher in (None, targets):
        torch.manual_seed(0)
        network = TwoTowerNetwork(cfg, N_USERS, N_ITEMS)
        values.append(
            float(
                compute_loss(
                    TowerForward(network), users, items, cfg=cfg, sampler=sampler,
                    loss_fn=get_loss(cfg.loss), positives=positives,
                    generator=torch.Generator().manual_seed(0), teacher=teacher,
                ).detach()
            )
        )  # fmt: skip
    with torch.no_grad():
        u = network.user_vectors(users, training=True).double().numpy()
        v = network.item_vectors(torch.arange(N_ITEMS), training=True).double().numpy()
    return values, u, v


def _distillation_kl(targets: TeacherTargets, u: np.ndarray, v: np.ndarray, candidates: np.ndarray) -> float:
    """T^2 KL(teacher || student) over each row's candidates, at the teacher's temperature 1.5."""
    student = np.einsum("bd,bcd->bc", u, v[candidates]) / T
    u_t, v_t = targets.user_factors.double().numpy(), targets.item_factors.double().numpy()
    teacher = 2.0 * np.einsum("bd,bcd->bc", u_t[BATCH_USERS], v_t[candidates])
    p_t, p_s = _softmax(teacher / 1.5), _softmax(student / 1.5)
    return float((p_t * (np.log(p_t) - np.log(p_s))).sum(axis=1).mean() * 1.5**2)


def test_the_teachers_scores_reach_the_distillation_term_over_the_students_candidates():
    """compute_loss with a teacher = the same step without one + weight T^2 KL(teacher || student)
    over [positive, sampled negatives, teacher's top-m], the teacher scoring exactly those items."""
    top, targets = _teacher(3)
    cfg = config(loss="sampled_softmax")
    negatives = [1, 3, 7]
    lookup = PositiveLookup(train_matrix())
    values, u, v = _losses_without_and_with(cfg, targets, FixedNegatives(negatives), lookup)
    candidates = np.concatenate([BATCH_ITEMS[:, None], np.broadcast_to(negatives, (5, 3)), top], axis=1)
    assert values[1] - values[0] == pytest.approx(0.7 * _distillation_kl(targets, u, v, candidates), rel=1e-4)



def test_auto_logit_offset_reads_the_active_users_and_the_loss_weights():
    """"auto" offsets use the mean items per user over users with any item (an empty row is no user),
    and gBCE's weights (beta against k summed negatives) only for gbce."""
    from recsys.losses import gbce_beta, pointwise_offset
    from recsys.training import resolve_logit_offset

    rows = [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
    train = sp.csr_matrix(np.array(rows, dtype=np.float32))
    mean_items = (1 + 4) / 2  # users 0 and 2; user 1 has no item
    bce = TwoTowerConfig(name="tt", loss="bce", logit_offset="auto", temperature=0.1, num_negatives=4)
    assert resolve_logit_offset(bce, train) == pytest.approx(pointwise_offset(6, mean_items, 0.1))
    for k in (1, 4):
        gbce = bce.model_copy(update={"loss": "gbce", "num_negatives": k})
        beta = gbce_beta(k, 6, gbce.gbce_calibration)
        expected = pointwise_offset(6, mean_items, 0.1, beta, k)
        assert resolve_logit_offset(gbce, train) == pytest.approx(expected)
    # The full catalogue as candidates (`sampler = "all"`, and "auto" for a sequence tower on a
    # small catalogue): the loss sums all 6 items' terms, so the offset counts 6, not num_negatives.
    every = pointwise_offset(6, mean_items, 0.1, gbce_beta(6, 6, bce.gbce_calibration), 6)
    for update in ({"sampler": "all"}, {"sampler": "auto", "user_input": "sequence"}):
        gbce = bce.model_copy(update={"loss": "gbce", **update})
        assert resolve_logit_offset(gbce, train) == pytest.approx(every)
    # temperature "auto" resolves per user tower: 0.05 for a sequence tower, 0.1 otherwise
    auto = bce.model_copy(update={"temperature": "auto", "user_input": "sequence"})
    assert resolve_logit_offset(auto, train) == pytest.approx(pointwise_offset(6, mean_items, 0.05))
    empty = sp.csr_matrix((3, 6), dtype=np.float32)  # nobody active: one item per user is assumed
    assert resolve_logit_offset(bce, empty) == pytest.approx(pointwise_offset(6, 1.0, 0.1))
    assert resolve_logit_offset(bce.model_copy(update={"logit_offset": -2.5}), train) == -2.5


def test_auto_temperature_of_a_pointwise_loss_spans_its_optimum_logit_both_ways():
    """`temperature = "auto"` with bce / gbce and the "auto" offset: at most 1 / (2 L + 4), L the
    positive's optimum logit, so the offset L - 1 / T puts an orthogonal pair at -L - 4 (sparse
    catalogues); dense data keeps the tower's 0.1, and a given temperature, a given offset or a
    softmax loss are left alone. The fitted config, a direct `train_two_tower` caller's network and
    the offset all use the one value."""
    from recsys.losses import gbce_beta, pointwise_offset
    from recsys.models.two_tower import TwoTower
    from recsys.training import resolve_logit_offset, resolve_temperature

    n_items = 2000
    rows, cols = [0, 1, 1, 1, 2, 2], [3, 10, 500, 1999, 7, 8]  # 3 users, 2 items each
    sparse = sp.csr_matrix((np.ones(6, np.float32), (rows, cols)), shape=(4, n_items))
    logit = math.log(n_items / 2)
    bce = TwoTowerConfig(name="tt", loss="bce", temperature="auto", num_negatives=4, threads=1, epochs=1, quiet=True)
    expected = 1 / (2 * logit + 4)
    assert resolve_temperature(bce, sparse) == pytest.approx(expected)
    assert resolve_logit_offset(bce, sparse) == pytest.approx(-logit - 4)  # L - 1 / T
    assert TwoTower(bce).data_aware_config(sparse).temperature == pytest.approx(expected)
    beta = gbce_beta(4, n_items, 0.75)
    gbce = bce.model_copy(update={"loss": "gbce"})
    gbce_logit = math.log(beta * n_items / (4 * 2))
    assert resolve_temperature(gbce, sparse) == pytest.approx(min(0.1, 1 / (2 * gbce_logit + 4)))
    assert resolve_logit_offset(gbce, sparse) == pytest.approx(pointwise_offset(n_items, 2, resolve_temperature(gbce, sparse), beta, 4))
    assert resolve_temperature(bce, train_matrix()) == 0.1  # 8 items: 1 / (2 L + 4) is above the cap
    for other in ({"temperature": 0.2}, {"logit_offset": -3.0}, {"loss": "sampled_softmax"}):
        assert resolve_temperature(bce.model_copy(update=other), sparse) == other.get("temperature", 0.1)
    torch.manual_seed(0)
    network = TwoTowerNetwork(bce, 4, n_items)  # built from "auto": the data-blind 0.1 until trained
    assert float(network.temperature()) == pytest.approx(0.1)
    train_two_tower(network, sparse, bce.model_copy(update={"batch_size": 4}))
    assert float(network.temperature()) == pytest.approx(expected)


def test_loss_options_bind_what_each_loss_needs_from_the_data():
    from recsys.training import loss_options, resolve_logit_offset

    train = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=np.float32))
    base = TwoTowerConfig(name="tt", logit_offset="auto", temperature=0.1, gbce_calibration=0.5)
    gbce = base.model_copy(update={"loss": "gbce"})
    assert loss_options(gbce, train) == {
        "n_items": 6, "calibration": 0.5, "offset": resolve_logit_offset(gbce, train),
    }  # fmt: skip
    sampled_softmax_corrected = base.model_copy(update={"loss": "sampled_softmax_corrected"})
    assert loss_options(sampled_softmax_corrected, train) == {"n_items": 6}
    bce = base.model_copy(update={"loss": "bce"})
    assert loss_options(bce, train) == {"offset": resolve_logit_offset(bce, train)}
    assert loss_options(base.model_copy(update={"loss": "sampled_softmax"}), train) == {}


def test_a_ranks_negatives_and_in_batch_mask_are_its_rows_of_the_global_batch():
    """Rank 1 of 2 on a global batch of 4 owns rows 2 and 3: per-example candidates and log q are cut
    to them, and its in-batch columns are the global positions 2 and 3, not the local diagonal."""
    from recsys.sampling import InBatchSampler, Negatives
    from recsys.training import Share, hit_mask_for, local_negatives

    share = Share.of(4, rank=1, world_size=2)
    items = torch.arange(12).view(4, 3)
    per_example = local_negatives(Negatives(items, items.float(), torch.arange(4.0)), share)
    assert torch.equal(per_example.items, items[2:]) and torch.equal(per_example.log_q, items[2:].float())
    assert torch.equal(per_example.pos_log_q, torch.tensor([2.0, 3.0]))
    users, positives = torch.arange(4), torch.tensor([5, 6, 7, 8])
    in_batch = InBatchSampler(np.ones(10)).sample(users, positives, torch.Generator())
    mask = hit_mask_for(users[2:], positives[2:], in_batch, share, None)
    assert mask.tolist() == [[False, False, True, False], [False, False, False, True]]


def test_negative_vectors_come_in_candidate_order():
    """In-batch columns take the positives' vectors, the drawn ones follow: shared `(N, d)` (also with
    nothing drawn) and per example `(B, N, d)`, where every row sees the same in-batch vectors."""
    from recsys.sampling import Negatives
    from recsys.training import assemble_negatives

    pos_vecs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # the batch's 2 positives
    drawn = torch.tensor([[5.0, 5.0], [6.0, 6.0], [7.0, 7.0], [8.0, 8.0]])
    shared = Negatives(torch.tensor([10, 11, 3, 4]), torch.zeros(4), torch.zeros(2), in_batch=2)
    assert torch.equal(assemble_negatives(shared, pos_vecs, drawn[:2]), torch.cat([pos_vecs, drawn[:2]]))
    only_in_batch = Negatives(torch.tensor([10, 11]), torch.zeros(2), torch.zeros(2), in_batch=2)
    assert torch.equal(assemble_negatives(only_in_batch, pos_vecs, drawn[:0]), pos_vecs)
    one_drawn = Negatives(torch.tensor([10, 11, 3]), torch.zeros(3), torch.zeros(2), in_batch=2)
    assert torch.equal(assemble_negatives(one_drawn, pos_vecs, drawn[:1]), torch.cat([pos_vecs, drawn[:1]]))
    rows = torch.tensor([[10, 11, 3, 4], [10, 11, 5, 6]])
    per_example = Negatives(rows, torch.zeros(2, 4), torch.zeros(2), in_batch=2)
    got = assemble_negatives(per_example, pos_vecs, drawn)
    expected = torch.stack([torch.cat([pos_vecs, drawn[:2]]), torch.cat([pos_vecs, drawn[2:]])])
    assert got.shape == (2, 4, 2) and torch.equal(got, expected)


def test_positives_only_step_with_and_without_a_teacher():
    """positives_only: `mean softplus(-s_pos / T)` and nothing drawn; with a teacher, plus weight T^2
    KL(teacher || student) over [positive, teacher's top-m]."""
    top, targets = _teacher(4)
    values, u, v = _losses_without_and_with(config(loss="positives_only"), targets, None, None)
    s_pos = (u * v[BATCH_ITEMS]).sum(axis=1)
    assert values[0] == pytest.approx(np.mean(np.logaddexp(0, -s_pos / T)), rel=1e-5)
    candidates = np.concatenate([BATCH_ITEMS[:, None], top], axis=1)
    assert values[1] - values[0] == pytest.approx(0.7 * _distillation_kl(targets, u, v, candidates), rel=1e-4)


@pytest.mark.parametrize("loss", ["sampled_softmax", "positives_only"])
def test_a_sequence_towers_step_encodes_its_windows_not_the_stored_histories(loss):
    """A sequence tower's rows are the targets of its windows: the step must encode those windows
    (each target sees only the items before it), not the user's whole stored sequence, which holds
    the target and everything after it. Full catalogue (`all`), so the loss is a plain cross entropy."""
    from recsys.training import build_examples

    train = train_matrix()
    cfg = config(user_input="sequence", sequence_length=3, sequence_dropout=0.0, sampler="all", loss=loss,
                 remove_accidental_hits=False)  # fmt: skip
    torch.manual_seed(0)
    network = TwoTowerNetwork(cfg, N_USERS, N_ITEMS)
    examples = build_examples(network, train, None, cfg, torch.device("cpu"))
    batch = examples.batch(torch.arange(examples.n))
    sampler = build_sampler(cfg, item_counts_from_csr(train), train)
    value = compute_loss(
        TowerForward(network), batch.users, batch.items, cfg=cfg, sampler=sampler, loss_fn=get_loss(loss),
        positives=None, generator=torch.Generator().manual_seed(0), share=batch.share, sequence=batch.sequence,
    )  # fmt: skip
    with torch.no_grad():
        u = network.user_vectors(batch.users, training=True, sequence=batch.sequence)
        logits = u @ network.item_vectors(torch.arange(N_ITEMS), training=True).T / T
        whole = network.user_vectors(batch.users, training=True)  # the stored sequences instead
    rows = torch.arange(batch.items.shape[0])
    if loss == "sampled_softmax":
        want = F.cross_entropy(logits, batch.items)
    else:
        want = F.softplus(-logits[rows, batch.items]).mean()
    assert float(value.detach()) == pytest.approx(float(want), rel=1e-5)
    assert not torch.allclose(u, whole, atol=1e-3)  # the two encodings differ, so the check above can fail


def test_hard_negatives_are_mined_for_the_batch_users():
    """The hard sampler ranks the catalogue for the batch's users (it needs them, unlike the other
    samplers): the step's loss is the sampled softmax over each row's mined negatives, none of which
    is a training positive of that row's user or the row's positive (log q = -log k is a constant
    per row, so it cancels)."""
    from recsys.training import hard_negative_scorer

    train = train_matrix()
    cfg = config(sampler="hard", num_negatives=3, hard_negative_k=3, loss="sampled_softmax",
                 remove_accidental_hits=False)  # fmt: skip
    torch.manual_seed(0)
    network = TwoTowerNetwork(cfg, N_USERS, N_ITEMS)
    sampler = build_sampler(cfg, item_counts_from_csr(train), train, score_fn=hard_negative_scorer(network))
    users, items = torch.as_tensor(BATCH_USERS), torch.as_tensor(BATCH_ITEMS)
    drawn = sampler.sample(users, items, torch.Generator().manual_seed(7))
    value = compute_loss(
        TowerForward(network), users, items, cfg=cfg, sampler=sampler, loss_fn=get_loss(cfg.loss),
        positives=None, generator=torch.Generator().manual_seed(7),
    )  # fmt: skip
    mined = drawn.items.numpy()
    for b, user in enumerate(BATCH_USERS):
        assert not np.isin(mined[b], LIKES[int(user)] + [int(BATCH_ITEMS[b])]).any()
    with torch.no_grad():
        u = network.user_vectors(users, training=True)
        v = network.item_vectors(torch.arange(N_ITEMS), training=True)
    pos = (u * v[items]).sum(dim=1, keepdim=True)
    neg = torch.einsum("bd,bnd->bn", u, v[drawn.items])
    want = F.cross_entropy(torch.cat([pos, neg], dim=1) / T, torch.zeros(5, dtype=torch.long))
    assert float(value.detach()) == pytest.approx(float(want), rel=1e-5)
