"""The two-tower training loop, nanoGPT style: one loop built from small named helpers.

Hot path: the training interactions are two int64 tensors (the COO rows/cols of the train CSR) on
the training device; an epoch is one seeded permutation of their positions and a batch is a slice
of it, so there is no per-sample Dataset/DataLoader. Per step: sample negatives (`recsys.sampling`),
encode users, positives and negatives (shared negatives are one `(B, d) @ (d, N)` matmul inside the
loss), mask accidental hits, apply the loss (`recsys.losses`, with logQ correction when configured),
clip, step.

Written as the one-process case of data-parallel training (`recsys.distributed`): `batch_size` is
per rank, so a global batch is `world_size * batch_size` interactions of one seeded permutation that
every rank draws identically. Each rank encodes its contiguous share of the global batch through the
DDP-wrapped `TowerForward`; negatives are sampled for the whole global batch on every rank (same
generator state, so same draws and same `log q`, no communication); the in-batch item vectors are
all-gathered with autograd (`gather_negatives`); each rank's loss is scaled so DDP's gradient average
is the gradient of the one-process loss over the global batch. One process is the case
`(rank, world_size) = (0, 1)`: shares are whole batches, the gather is the identity, no DDP wrapper.
Rank and world size default to the current process group (none: `(0, 1)`). Only rank 0 checkpoints;
stop decisions and validation scores are agreed across ranks so no rank is left waiting.

Checkpoints (end of every epoch, into `config.checkpoint_dir`): model, optimizer, RNG states, best
weights as safetensors, everything else as JSON. No pickle, so `torch.save` is not used. A run
finds the latest checkpoint and resumes from it; the same seed then gives exactly the same result
as an uninterrupted run (on cpu).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from recsys import distributed, interrupt
from recsys.distill import TeacherTargets, distillation_loss, top_items_for
from recsys.errors import ModelError, SetupError, first_line
from recsys.evaluation.ranking import torch_threads
from recsys.files import publishable_dir
from recsys.losses import POINTWISE_LOSSES, gbce_beta, get_loss, pointwise_logit, pointwise_offset
from recsys.models.base import PrivateTorchRng
from recsys.models.defaults import resolved_sampler, resolved_temperature, two_tower_batch_size
from recsys.sampling import (
    HardNegativeSampler,
    Negatives,
    PositiveLookup,
    accidental_hit_mask,
    build_sampler,
    item_counts_from_csr,
    own_positive_mask,
)

if TYPE_CHECKING:
    from recsys.models.two_tower import TwoTowerConfig, TwoTowerNetwork

log = logging.getLogger(__name__)
RESUMED_CHECKPOINT_TAG = "recsys.resumed_from_checkpoint"
"""The MLflow tag naming the checkpoint a training resumed from (with metrics resumed_from_epoch/_step)."""

Validator = Callable[[], dict[str, float]]
"""Scores the current network on the validation set: returns {validation_metric: value}."""
EpochCallback = Callable[[int, dict[str, float]], bool | None]

CHECKPOINT_FORMAT = 1
RESUME_INSENSITIVE_FIELDS = {
    "name",
    "epochs",
    "checkpoint_dir",
    "device",
    "threads",
    "quiet",
    "eval_every",
    "early_stopping_patience",
    "early_stopping_min_steps",
}
"""Config fields that may change between a run and its resume (they do not change the state)."""


# ===================================================================== setup helpers
def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        # SetupError: no parameter of a search changes the machine, so tuning stops at the first trial
        raise SetupError("device='cuda' but torch sees no CUDA device; use device='auto' or 'cpu'")
    return torch.device(name)


def interaction_tensors(train: sp.csr_matrix, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """COO (user, item) index tensors of every training interaction, straight from the CSR."""
    users = np.repeat(np.arange(train.shape[0], dtype=np.int64), np.diff(train.indptr))
    items = train.indices.astype(np.int64)
    return torch.from_numpy(users).to(device), torch.from_numpy(items).to(device)


def build_optimizer(network: torch.nn.Module, cfg: TwoTowerConfig) -> torch.optim.Optimizer:
    """Adam/AdamW use torch's fused kernels on CPU and CUDA: the dense update of large embedding
    tables dominates a step (about 70% at 250k x 64 rows), and the fused update is 2.2x faster
    than the per-tensor loop with the same state layout, so checkpoints are interchangeable."""
    params = [p for p in network.parameters() if p.requires_grad]
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def learning_rate(cfg: TwoTowerConfig, epoch: int, step: int, total_steps: int) -> float:
    """The schedule as a pure function of (epoch, global step): nothing to checkpoint but the step."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_step_gamma ** (epoch // cfg.lr_step_epochs)
    return cfg.lr


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def global_batches(
    n: int, batch_size: int, generator: torch.Generator, world_size: int = 1
) -> Iterator[torch.Tensor]:
    """One epoch of global batches (`world_size * batch_size` positions each) from one seeded
    permutation; every rank draws the same one, so every rank knows every global batch."""
    order = torch.randperm(n, generator=generator, device=generator.device)
    yield from torch.split(order, batch_size * world_size)


def shard_batches(
    n: int, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1
) -> Iterator[torch.Tensor]:
    """One epoch: this rank's contiguous share of each global batch (`rank_share`). The shares of
    all ranks partition the epoch, and every rank runs the same number of steps (a rank whose share
    of a short last batch is empty still steps, so collectives stay matched)."""
    for batch in global_batches(n, batch_size, generator, world_size):
        yield batch[distributed.rank_share(batch.shape[0], rank, world_size)]


def gather_negatives(
    vectors: torch.Tensor, world_size: int = 1, sizes: list[int] | None = None
) -> torch.Tensor:
    """The global batch's in-batch item vectors from each rank's share: an all-gather with autograd
    (gradients return to the owning rank) under DDP; the identity for one process."""
    if world_size == 1:
        return vectors
    if not distributed.is_distributed():
        raise ModelError(
            f"world_size={world_size} but no torch.distributed process group is initialised; "
            "launch with torchrun (or `recsys train --nproc N`)"
        )
    return distributed.all_gather_with_grad(vectors, sizes)


def hard_negative_scorer(network: TwoTowerNetwork) -> Callable[[torch.Tensor], torch.Tensor]:
    """score_fn for the hard-negative sampler: current retrieval scores of users against all items."""

    def score(users: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            n_items = network.item_tower.ids.num_embeddings
            items = network.item_vectors(torch.arange(n_items, device=users.device))
            return network.user_vectors(users) @ items.T

    return score


def loss_options(cfg: TwoTowerConfig, train: sp.csr_matrix) -> dict[str, Any]:
    """The data-dependent keyword arguments of the configured loss, bound once per training run:
    the catalogue size for losses that need it, the pointwise losses' logit offset, gBCE's `t`."""
    n_items = int(train.shape[1])
    options: dict[str, Any] = {}
    if cfg.loss in ("gbce", "sampled_softmax_corrected"):
        options["n_items"] = n_items
    if cfg.loss == "gbce":
        options["calibration"] = cfg.gbce_calibration
    if cfg.loss in POINTWISE_LOSSES:
        options["offset"] = resolve_logit_offset(cfg, train)
    return options


def resolve_logit_offset(cfg: TwoTowerConfig, train: sp.csr_matrix) -> float:
    """`cfg.logit_offset`, with "auto" computed from the data (`recsys.losses.pointwise_offset`)."""
    if cfg.logit_offset != "auto":
        return float(cfg.logit_offset)
    n_items, mean_items, positive_weight, negative_weight = _pointwise_weights(cfg, train)
    temperature = resolve_temperature(cfg, train)
    return pointwise_offset(n_items, mean_items, temperature, positive_weight, negative_weight)


def resolve_temperature(cfg: TwoTowerConfig, train: sp.csr_matrix) -> float:
    """`cfg.temperature`, with "auto" resolved on the data: the user tower's default, and for a
    pointwise loss with the "auto" logit offset at most `1 / (2 L + margin)`, L its positive's optimum
    logit (`recsys.models.defaults.pointwise_temperature`: the offset's argument needs that range)."""
    logit = None
    if cfg.loss in POINTWISE_LOSSES and cfg.logit_offset == "auto":
        logit = pointwise_logit(*_pointwise_weights(cfg, train))
    return resolved_temperature(cfg.temperature, cfg.user_input, logit)


def _pointwise_weights(cfg: TwoTowerConfig, train: sp.csr_matrix) -> tuple[int, float, float, float]:
    """(n_items, mean items per active user, w+, w-) of the pointwise losses' offset: BCE averages
    its negatives (1, 1); gBCE weighs the positive by beta against k summed negatives."""
    per_user = np.diff(train.indptr)
    active = per_user[per_user > 0]
    mean_items = float(active.mean()) if active.size else 1.0
    n_items = int(train.shape[1])
    if cfg.loss == "gbce":  # positive weighted by beta against k summed negatives
        sampler = resolved_sampler(cfg.sampler, cfg.user_input, n_items)
        k = n_items if sampler == "all" else cfg.num_negatives  # `all`: every item is a candidate
        return n_items, mean_items, gbce_beta(k, n_items, cfg.gbce_calibration), float(max(k, 1))
    return n_items, mean_items, 1.0, 1.0


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Global batches per epoch (the same on every rank)."""
    return math.ceil(n / (batch_size * world_size))


# ===================================================================== state
@dataclass
class LoopState:
    """Everything besides tensors that a resume needs (JSON-serialisable)."""

    epoch: int = 0  # completed epochs
    global_step: int = 0
    best_metric: float = -math.inf
    best_epoch: int = -1
    bad_evaluations: int = 0
    stopped_early: bool = False  # patience ran out: a resume does nothing more
    finished: bool = False  # reached the configured epochs (a resume with more epochs continues)
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int
    best_metric: float
    stopped_early: bool
    resumed_from_epoch: int
    earlier_history: list[dict[str, float]]
    resumed_from: dict[str, Any] | None = None  # {"epoch", "step", "checkpoint"} when this run resumed


# ===================================================================== one step
class TowerForward(torch.nn.Module):
    """Everything a step encodes, as one `forward`, because DDP synchronises gradients only for work
    done inside the wrapped module's forward: users, positives and extra (sampled) items in one pass.

    Returns `(user_vecs, pos_vecs, extra_vecs, temperature)`; `extra_vecs` is `(0, d)` when no items
    besides the positives are needed (in-batch sampling, positives-only loss). A history user tower
    leaves each example's positive out of that user's pooled history; a sequence user tower encodes
    this rank's windows (`sequence`) and returns one vector per counted target."""

    def __init__(self, network: TwoTowerNetwork, rng: PrivateTorchRng | None = None) -> None:
        super().__init__()
        self.network = network
        self.rng = rng  # the training's own global-generator stream, for dropout (`dropout_rng`)

    def forward(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        extra_items: torch.Tensor,
        sequence: tuple[torch.Tensor, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        with self.rng.active() if self.rng is not None else nullcontext():
            user_vecs = self.network.user_vectors(users, training=True, exclude=items, sequence=sequence)
            item_vecs = self.network.item_vectors(torch.cat([items, extra_items]), training=True)
        n = items.shape[0]
        return user_vecs, item_vecs[:n], item_vecs[n:], self.network.temperature()


def dropout_rng(cfg: TwoTowerConfig, device: torch.device) -> PrivateTorchRng | None:
    """The private generator stream of a network that draws dropout masks (a sequence user tower);
    None for the others, whose forward draws nothing at random (no lock taken per step)."""
    if cfg.user_input == "sequence" and cfg.sequence_dropout > 0:
        return PrivateTorchRng(cfg.seed, device)
    return None


@dataclass(frozen=True)
class Share:
    """This rank's rows of a global batch: `rows` (a slice of it) and every rank's row count."""

    rows: slice
    sizes: list[int]

    @classmethod
    def of(cls, total: int, rank: int = 0, world_size: int = 1) -> Share:
        return cls(
            distributed.rank_share(total, rank, world_size), distributed.split_sizes(total, world_size)
        )

    @property
    def local(self) -> int:
        return self.rows.stop - self.rows.start

    @property
    def total(self) -> int:
        return sum(self.sizes)


@dataclass(frozen=True)
class ExampleBatch:
    """One global batch as the loss sees it: every example's (user, positive item), flattened,
    this rank's rows of them, and (sequence towers) this rank's windows for the forward pass."""

    users: torch.Tensor
    items: torch.Tensor
    share: Share
    sequence: tuple[torch.Tensor, ...] | None = None


class InteractionExamples:
    """Examples = training interactions (id and history user towers): a batch is a slice of them."""

    def __init__(self, train: sp.csr_matrix, device: torch.device) -> None:
        self.users, self.items = interaction_tensors(train, device)
        self.n = int(self.users.shape[0])

    def batch(self, index: torch.Tensor, rank: int = 0, world_size: int = 1) -> ExampleBatch:
        return ExampleBatch(self.users[index], self.items[index], Share.of(int(index.shape[0]), rank, world_size))


class WindowExamples:
    """Examples = the counted targets of sequence windows (`recsys.models.sequence_tower`): the
    loop shuffles and batches windows; each rank encodes its contiguous share of a global batch's
    windows, and its rows of the flattened targets are exactly those windows' targets."""

    def __init__(self, train: sp.csr_matrix, times: sp.spmatrix | None, length: int, device: torch.device) -> None:
        from recsys.models.sequence_tower import SequenceExamples, order_rows

        self.windows = SequenceExamples(order_rows(train, times), length, device)
        self.n = self.windows.n

    def batch(self, index: torch.Tensor, rank: int = 0, world_size: int = 1) -> ExampleBatch:
        items, times, counted, targets = self.windows.windows(index)
        users = self.windows.user[index].unsqueeze(1).expand_as(counted)[counted]
        per_window = counted.sum(dim=1)
        shares = [distributed.rank_share(int(index.shape[0]), r, world_size) for r in range(world_size)]
        sizes = [int(per_window[s].sum()) for s in shares]
        start = sum(sizes[:rank])
        mine = shares[rank]
        share = Share(slice(start, start + sizes[rank]), sizes)
        return ExampleBatch(users, targets[counted], share, (items[mine], times[mine], counted[mine]))


def build_examples(
    network: TwoTowerNetwork, train: sp.csr_matrix, times: sp.spmatrix | None, cfg: TwoTowerConfig,
    device: torch.device,
) -> InteractionExamples | WindowExamples:
    """The loop's examples for this user tower (and the training sequences a sequence tower encodes)."""
    network.set_history(train, times)
    if cfg.user_input == "sequence":
        return WindowExamples(train, times, cfg.sequence_length, device)
    return InteractionExamples(train, device)


def local_negatives(negatives: Negatives, share: Share) -> Negatives:
    """The global batch's negatives as this rank's rows see them: shared candidates unchanged,
    per-example candidates and every per-row `log q` cut to the rank's rows."""
    rows = share.rows
    items = negatives.items if negatives.shared else negatives.items[rows]
    log_q = negatives.log_q if negatives.shared else negatives.log_q[rows]
    return Negatives(items, log_q, negatives.pos_log_q[rows], negatives.in_batch, negatives.has_positives)


def extra_items(negatives: Negatives) -> torch.Tensor:
    """Candidates the item tower must encode: all but the leading in-batch columns (flattened)."""
    k = negatives.in_batch
    return negatives.items[k:] if negatives.shared else negatives.items[:, k:].reshape(-1)


def assemble_negatives(
    negatives: Negatives, in_batch_vecs: torch.Tensor | None, extra_vecs: torch.Tensor
) -> torch.Tensor:
    """Negative vectors in candidate order, `(N, d)` shared or `(B, N, d)` per example. In-batch
    columns reuse the (gathered) positives' vectors instead of running the item tower again."""
    k = negatives.in_batch
    if negatives.shared:
        if not k:
            return extra_vecs
        assert in_batch_vecs is not None
        return in_batch_vecs if extra_vecs.shape[0] == 0 else torch.cat([in_batch_vecs, extra_vecs])
    batch, num = negatives.items.shape
    rest = extra_vecs.view(batch, num - k, -1)
    if not k:
        return rest
    assert in_batch_vecs is not None
    return torch.cat([in_batch_vecs.unsqueeze(0).expand(batch, k, -1), rest], dim=1)


def hit_mask_for(
    users: torch.Tensor,
    items: torch.Tensor,
    negatives: Negatives,
    share: Share,
    positives: PositiveLookup | None,
) -> torch.Tensor | None:
    """`hit_mask` for this rank's rows: each row's own in-batch column (at its position in the
    *global* batch, so not the local diagonal unless this is rank 0) and, when `positives` is given,
    every accidental hit; the column of each row's own positive when the candidates contain it
    (the full catalogue). Equals `recsys.sampling.negative_mask` for one process."""
    batch, n = int(items.shape[0]), negatives.num
    # the full catalogue holds each row's positive; accidental-hit removal masks it anyway
    own_column = negatives.has_positives and positives is None
    mask = own_positive_mask(items, negatives.items) if own_column else None
    if negatives.in_batch:
        own = torch.arange(share.rows.start, share.rows.stop, device=negatives.items.device)
        diagonal = torch.zeros((batch, n), dtype=torch.bool, device=negatives.items.device)
        inside = own < negatives.in_batch
        diagonal[torch.arange(batch, device=diagonal.device)[inside], own[inside]] = True
        mask = diagonal if mask is None else mask | diagonal
    if positives is not None:
        hits = accidental_hit_mask(users, items, negatives.items, positives).expand(batch, n)
        mask = hits if mask is None else mask | hits
    return mask


def compute_loss(
    step: torch.nn.Module,
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    cfg: TwoTowerConfig,
    sampler: Any,
    loss_fn: Callable[..., torch.Tensor],
    positives: PositiveLookup | None,
    generator: torch.Generator,
    share: Share | None = None,
    world_size: int = 1,
    teacher: TeacherTargets | None = None,
    sequence: tuple[torch.Tensor, ...] | None = None,
) -> torch.Tensor:
    """Forward pass of this rank's share of one global batch (`users`, `items`) to its mean loss.

    `step` is a `TowerForward` (DDP-wrapped under a process group). Negatives are drawn for the whole
    global batch, so every rank draws the same ones (and the generator stays in step across ranks).
    With a `teacher`, its top-m items for this rank's users are encoded in the same forward (DDP sees
    all tower work) and the distillation term (`recsys.distill`) is added to the retrieval loss.
    `sequence`: this rank's windows when the user tower is a sequence tower (`WindowExamples`)."""
    share = share or Share.of(int(users.shape[0]))
    mine_users, mine_items = users[share.rows], items[share.rows]
    # The teacher's top-m lists overlap heavily across a batch: encode each distinct item once.
    top_unique = top_slots = None
    if teacher is not None:
        top_unique, top_slots = torch.unique(top_items_for(teacher, mine_users), return_inverse=True)
    if cfg.loss == "positives_only":
        extra = top_unique if top_unique is not None else mine_items[:0]
        user_vecs, pos_vecs, top_flat, temperature = step(mine_users, mine_items, extra, sequence)
        loss = loss_fn(user_vecs, pos_vecs, None, None, temperature=temperature, margin=cfg.margin)
        if teacher is None:
            return loss
        top_vecs = top_flat[top_slots]
        return loss + distillation_loss(
            teacher, mine_users, mine_items, None, user_vecs=user_vecs, pos_vecs=pos_vecs,
            neg_vecs=None, top_vecs=top_vecs, temperature=temperature,
        )  # fmt: skip
    negatives = local_negatives(sampler.sample(users, items, generator), share)
    sampled = extra_items(negatives)
    extra = sampled if top_unique is None else torch.cat([sampled, top_unique])
    user_vecs, pos_vecs, extra_vecs, temperature = step(mine_users, mine_items, extra, sequence)
    if top_unique is not None:
        extra_vecs, top_flat = extra_vecs[: sampled.shape[0]], extra_vecs[sampled.shape[0] :]
    in_batch = gather_negatives(pos_vecs, world_size, share.sizes) if negatives.in_batch else None
    neg_vecs = assemble_negatives(negatives, in_batch, extra_vecs)
    hit_mask = hit_mask_for(mine_users, mine_items, negatives, share, positives)
    use_log_q = cfg.logq_correction or cfg.loss == "nce"  # NCE needs q by definition
    loss = loss_fn(
        user_vecs,
        pos_vecs,
        neg_vecs,
        negatives.log_q if use_log_q else None,
        temperature=temperature,
        hit_mask=hit_mask,
        margin=cfg.margin,
        pos_log_q=negatives.pos_log_q if use_log_q else None,
    )
    if teacher is None:
        return loss
    top_vecs = top_flat[top_slots]  # (B, m, d)
    return loss + distillation_loss(
        teacher, mine_users, mine_items, negatives.items, user_vecs=user_vecs, pos_vecs=pos_vecs,
        neg_vecs=neg_vecs, top_vecs=top_vecs, temperature=temperature,
    )  # fmt: skip


def check_finite(loss: float, epoch: int, step: int, lr: float) -> None:
    if not math.isfinite(loss):
        raise ModelError(
            f"loss became {loss} at epoch {epoch}, step {step}: lower lr (now {lr:g}), set grad_clip, "
            "or use normalize=true / a larger temperature"
        )


def optimizer_step(
    network: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, clip: float | None
) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(network.parameters(), clip)
    optimizer.step()


# ===================================================================== checkpoints
def run_fingerprint(
    cfg: TwoTowerConfig,
    train: sp.csr_matrix,
    world_size: int = 1,
    teacher: TeacherTargets | None = None,
    examples: InteractionExamples | WindowExamples | None = None,
) -> str:
    """Config (minus fields that may change on resume) + data (+ the distillation teacher, when there
    is one): a checkpoint from another run is refused.

    The batch enters as the *global* batch (`batch_size * world_size`): that, not the split across
    ranks, decides the trajectory, so a checkpoint resumes under any world size that keeps it (and
    one-process fingerprints are what they always were)."""
    settings = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RESUME_INSENSITIVE_FIELDS}
    settings["batch_size"] = cfg.batch_size * world_size
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(np.asarray(train.shape, dtype=np.int64).tobytes())
    digest.update(train.indptr.astype(np.int64).tobytes())
    digest.update(train.indices.astype(np.int64).tobytes())
    if teacher is not None:
        digest.update(teacher.fingerprint().encode())
    if isinstance(examples, WindowExamples):  # the order of the sequences is training data too
        digest.update(examples.windows.items.cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as safetensors-ready tensors plus a JSON part (no pickle)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entries in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    directory: Path,
    *,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: LoopState,
    best_weights: dict[str, torch.Tensor] | None,
    fingerprint: str,
    world_size: int = 1,
    global_batch: int | None = None,
    torch_rng: PrivateTorchRng | None = None,
) -> Path:
    """Write `epoch-NNNN/` atomically (temp dir + rename), point `latest.json` at it, drop older ones."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in network.state_dict().items()}
    if best_weights is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous().clone() for k, v in best_weights.items()})
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.generator"] = generator.get_state().clone()
    # the stream dropout draws from: the training's own (`torch_rng`), else the process's
    tensors["rng.torch"] = (torch_rng.state if torch_rng is not None else torch.get_rng_state()).clone()
    if torch_rng is not None and torch_rng.cuda_state is not None:
        tensors["rng.cuda"] = torch_rng.cuda_state.clone()
    elif torch_rng is None and torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state().clone()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "state": state.__dict__,
        "optimizer": opt_meta,
        "generator_device": str(generator.device),
        "has_best": best_weights is not None,
        "world_size": world_size,  # informational: a resume may use any world size ...
        "global_batch": global_batch,  # ... that keeps this
    }
    name = f"epoch-{state.epoch:04d}"
    for left in directory.glob(".epoch-*"):  # a save killed mid-write left its temp dir (one writer: rank 0)
        shutil.rmtree(left, ignore_errors=True)
    tmp = publishable_dir(directory, f".{name}.")
    save_file(tensors, str(tmp / "tensors.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta))
    final = directory / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = directory / ".latest.json.tmp"
    pointer.write_text(json.dumps({"checkpoint": name}))
    os.replace(pointer, directory / "latest.json")
    for old in directory.glob("epoch-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint `latest.json` names, or None when there is no `latest.json` (a fresh start).

    A `latest.json` naming a checkpoint that is missing or incomplete is an error, not a fresh start:
    silently training from epoch 0 would throw away the epochs the pointer promises."""
    pointer = directory / "latest.json"
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise _damaged(pointer, exc) from None
    path = directory / str(name)
    for needed in ("state.json", "tensors.safetensors"):
        if not (path / needed).is_file():
            raise ModelError(
                f"{pointer} names checkpoint {name!r}, but {path / needed} is missing; restore it, or "
                f"delete {pointer} (or point checkpoint_dir elsewhere) to start from epoch 0"
            )
    return path


def _damaged(path: Path, exc: BaseException) -> ModelError:
    return ModelError(
        f"checkpoint is damaged ({path}: {type(exc).__name__}: {first_line(exc)}): "
        "delete the checkpoint directory to start afresh, or point checkpoint_dir elsewhere"
    )


def restore_checkpoint(
    path: Path,
    *,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    fingerprint: str,
    global_batch: int | None = None,
    torch_rng: PrivateTorchRng | None = None,
) -> tuple[LoopState, dict[str, torch.Tensor] | None]:
    """Load everything `save_checkpoint` wrote back into live objects; refuse another run's checkpoint."""
    try:
        meta = json.loads((path / "state.json").read_text())
        saved, ranks = meta.get("global_batch"), meta.get("world_size", 1)
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise _damaged(path / "state.json", exc) from None
    if global_batch is not None and saved is not None and saved != global_batch:
        raise ModelError(
            f"{path}: checkpoint was trained with a global batch of {saved} ({ranks} rank(s)); this run's is "
            f"{global_batch}: set batch_size = {saved} / world size to resume it, or use another checkpoint_dir"
        )
    if meta.get("fingerprint") != fingerprint:
        raise ModelError(
            f"{path}: checkpoint belongs to a different config or training data; "
            "delete the checkpoint directory or point checkpoint_dir elsewhere"
        )
    device = next(network.parameters()).device
    try:
        tensors = load_file(str(path / "tensors.safetensors"))
        network.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
        best = (
            {k[len("best.") :]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
            if meta["has_best"]
            else None
        )
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
        generator.set_state(tensors["rng.generator"])
        if torch_rng is not None:
            torch_rng.state = tensors["rng.torch"].clone()
        else:
            torch.set_rng_state(tensors["rng.torch"])
    except Exception as exc:  # truncated safetensors (SafetensorError), missing keys, wrong shapes
        raise _damaged(path / "tensors.safetensors", exc) from None
    if "rng.cuda" in tensors and torch_rng is not None and torch_rng.cuda_state is not None:
        torch_rng.cuda_state = tensors["rng.cuda"].clone()
    elif "rng.cuda" in tensors and torch_rng is None and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return LoopState(**meta["state"]), best


# ===================================================================== progress
@contextmanager
def progress_bar(total: int, quiet: bool) -> Iterator[Callable[..., None]]:
    """A bar with the epoch, loss and examples/s (one task of the process's shared display,
    `recsys.bars`: two models train at once); off when quiet or stderr is not a terminal."""
    from recsys.bars import shared_bar

    enabled = not quiet and sys.stderr.isatty()
    if not enabled:
        yield lambda **_: None
        return
    fields: dict[str, Any] = {"epoch": 1, "loss": float("nan"), "rate": 0.0}
    with shared_bar("two-tower epoch 1", total) as (progress, task):

        def update(**changes: Any) -> None:
            advance = changes.pop("advance", 0)
            fields.update(changes)
            progress.update(
                task, advance=advance, description=f"two-tower epoch {fields['epoch']}",
                note=f"loss {fields['loss']:.4f}  {fields['rate']:,.0f} ex/s",
            )  # fmt: skip

        yield update


# ===================================================================== the loop
def run_epoch(
    network: TwoTowerNetwork,
    examples: InteractionExamples | WindowExamples,
    *,
    cfg: TwoTowerConfig,
    state: LoopState,
    optimizer: torch.optim.Optimizer,
    sampler: Any,
    loss_fn: Callable[..., torch.Tensor],
    positives: PositiveLookup | None,
    generator: torch.Generator,
    total_steps: int,
    max_steps: int | None,
    update_bar: Callable[..., None],
    rank: int,
    world_size: int,
    step: torch.nn.Module | None = None,
    teacher: TeacherTargets | None = None,
) -> dict[str, float]:
    """One pass over the interactions (this rank's share of every global batch); returns the
    epoch's metrics for the whole global batch stream, identical on every rank.

    `step` is the (DDP-wrapped) `TowerForward` of `network`; built here for one process."""
    step = step if step is not None else TowerForward(network)
    network.train()
    start = time.perf_counter()
    loss_sum, seen, step_in_epoch = 0.0, 0, 0
    device = next(network.parameters()).device
    lr = cfg.lr
    for index in global_batches(examples.n, cfg.batch_size, generator, world_size):
        if max_steps is not None and step_in_epoch >= max_steps:
            break
        interrupt.check()  # Ctrl-C reaches a worker thread here (recsys.interrupt)
        lr = learning_rate(cfg, state.epoch, state.global_step, total_steps)
        set_learning_rate(optimizer, lr)
        batch = examples.batch(index, rank, world_size)
        share = batch.share
        local_mean = compute_loss(
            step,
            batch.users,
            batch.items,
            cfg=cfg,
            sampler=sampler,
            loss_fn=loss_fn,
            positives=positives,
            generator=generator,
            share=share,
            world_size=world_size,
            teacher=teacher,
            sequence=batch.sequence,
        )
        value = float(local_mean.item()) if share.local else 0.0
        step_in_epoch += 1
        check_finite(value, state.epoch + 1, step_in_epoch, lr)
        loss = distributed.global_mean_share(local_mean, share.local, share.total, world_size)
        optimizer_step(network, optimizer, loss, cfg.grad_clip)
        state.global_step += 1
        loss_sum += value * share.local
        seen += share.local
        update_bar(advance=1, loss=value, rate=seen / max(time.perf_counter() - start, 1e-9))
    seconds = max(time.perf_counter() - start, 1e-9)
    if world_size > 1:  # one collective per epoch: the loss of the global batches, not this rank's share
        loss_sum, global_examples = distributed.all_reduce_sum([loss_sum, seen], device)
        seen = int(global_examples)
    return {
        "loss": loss_sum / max(seen, 1),
        "examples_per_s": seen / seconds,
        "lr": lr,
        "temperature": float(network.temperature().detach()),
    }


def evaluation_due(cfg: TwoTowerConfig, epoch: int) -> bool:
    """Validate every `eval_every` epochs and always after the last one (eval_every=0: never)."""
    return cfg.eval_every > 0 and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs)


def track_best(
    state: LoopState, value: float, network: torch.nn.Module, best: dict[str, torch.Tensor] | None
) -> dict[str, torch.Tensor] | None:
    """Keep a copy of the weights at the best validation score; count evaluations without progress."""
    if value > state.best_metric:
        state.best_metric, state.best_epoch, state.bad_evaluations = value, state.epoch, 0
        return {k: v.detach().clone() for k, v in network.state_dict().items()}
    state.bad_evaluations += 1
    return best


@contextmanager
def checkpoint_writer_lock(cfg: TwoTowerConfig, world_size: int) -> Iterator[None]:
    """Hold the lock beside `cfg.checkpoint_dir` (`.<name>.lock`) for a whole single-process fit, so
    two trainings of one directory take turns: the second resumes where the first ended (a finished
    checkpoint: no epoch left to run) instead of both writing it.

    Why: two `recsys run`s of the same data and settings share the directory (it is keyed by them),
    and `save_checkpoint` removes a temp dir of a killed save, replaces `epoch-NNNN/` and
    `latest.json` and drops other epochs: two writers could remove each other's files mid-save.
    Not under torchrun (world_size > 1): its ranks read the checkpoint together and only rank 0
    writes, and a rank waiting here while the others resume would split them."""
    if not cfg.checkpoint_dir or world_size > 1:
        yield
        return
    from recsys.files import announced_lock

    directory = Path(cfg.checkpoint_dir)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with announced_lock(directory.parent / f".{directory.name}.lock", f"the training that writes {directory}"):
        yield


def train_two_tower(
    network: TwoTowerNetwork,
    train: sp.csr_matrix,
    cfg: TwoTowerConfig,
    *,
    validate: Validator | None = None,
    callback: EpochCallback | None = None,
    max_epochs_this_run: int | None = None,
    max_steps: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    teacher: TeacherTargets | None = None,
    times: sp.spmatrix | None = None,
) -> TrainResult:
    """Train `network` in place on the interactions of `train` (users x items CSR).

    Per epoch: shuffled batches -> loss -> step; optional validation (early stopping on
    `cfg.validation_metric` with `cfg.early_stopping_patience`, best weights restored at the end);
    a checkpoint (rank 0, when `cfg.checkpoint_dir`); then `callback(epoch, metrics)`, which may
    return True to stop (as may `max_epochs_this_run`; both leave a resumable checkpoint).
    `max_steps` cuts every epoch after that many steps (benchmarks and smoke tests on big data; the
    epoch then counts as done, so do not mix it with checkpoints you mean to resume).

    `rank` / `world_size` default to the current `torch.distributed` process group ((0, 1) without
    one), so `TwoTower.fit` under torchrun trains data-parallel with no other change. Every rank must
    call this with the same config and data. `cfg.batch_size` is per rank: the global batch is
    `world_size * batch_size`, and a resume may use any world size (the global batch then changes).

    `teacher` (from `recsys.distill.teacher_targets`; every rank builds the same one) adds
    `weight * T^2 KL(teacher || student)` over each example's candidates to the loss.

    `times` (users x items event times) orders the sequences of a sequence user tower, whose
    examples are the counted targets of windows (`WindowExamples`) and whose batches are windows.
    """
    rank = distributed.rank() if rank is None else rank
    world_size = distributed.world_size() if world_size is None else world_size
    # TwoTower.fit resolves the data-aware settings first; direct callers get the same rules.
    auto_temperature = cfg.temperature == "auto"
    cfg = cfg.model_copy(
        update={
            "batch_size": two_tower_batch_size(int(train.nnz)) if cfg.batch_size is None else cfg.batch_size,
            "sampler": resolved_sampler(cfg.sampler, cfg.user_input, int(train.shape[1])),
            "temperature": resolve_temperature(cfg, train),
        }
    )
    if auto_temperature:  # a network built from an "auto" config starts at the data-blind default
        with torch.no_grad():
            network.log_temperature.fill_(math.log(cfg.temperature))
    device = distributed.rank_device(resolve_device(cfg.device))
    with torch_threads(cfg.threads), checkpoint_writer_lock(cfg, world_size):
        network.to(device)
        examples = build_examples(network, train, times, cfg, device)
        score_fn = hard_negative_scorer(network) if cfg.sampler == "hard" else None
        sampler = build_sampler(cfg, item_counts_from_csr(train), train, score_fn=score_fn)
        if isinstance(sampler, HardNegativeSampler):
            sampler.score_fn = score_fn
        positives = PositiveLookup(train) if cfg.remove_accidental_hits else None
        if positives is not None:
            positives.keys = positives.keys.to(device)
        loss_fn = functools.partial(get_loss(cfg.loss), **loss_options(cfg, train))
        teacher = teacher.to(device) if teacher is not None else None
        optimizer = build_optimizer(network, cfg)
        generator = torch.Generator(device=device)
        generator.manual_seed(cfg.seed)
        torch_rng = dropout_rng(cfg, device)
        state, best = LoopState(), None
        fingerprint = run_fingerprint(cfg, train, world_size, teacher, examples)
        checkpoints = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        resume = latest_checkpoint(checkpoints) if checkpoints is not None else None
        if resume is not None:
            state, best = restore_checkpoint(
                resume, network=network, optimizer=optimizer, generator=generator,
                fingerprint=fingerprint, global_batch=cfg.batch_size * world_size, torch_rng=torch_rng,
            )  # fmt: skip
            log.info("resuming from %s: epoch %d, step %d", resume, state.epoch, state.global_step)
        resumed_from = state.epoch
        resume_info = (
            {"epoch": state.epoch, "step": state.global_step, "checkpoint": str(resume)} if resume else None
        )
        if world_size > 1:
            distributed.check_same_everywhere(resumed_from, "the epoch to resume from", device)
        step = (
            distributed.wrap_ddp(TowerForward(network, torch_rng), device)
            if world_size > 1
            else TowerForward(network, torch_rng)
        )
        earlier_history = list(state.history)
        per_epoch = steps_per_epoch(examples.n, cfg.batch_size, world_size)
        total_steps = per_epoch * cfg.epochs
        epochs_this_run = 0
        bar_total = per_epoch * max(cfg.epochs - state.epoch, 0)
        with progress_bar(bar_total, cfg.quiet or rank != 0) as update_bar:
            while state.epoch < cfg.epochs and not state.stopped_early:
                update_bar(epoch=state.epoch + 1)
                metrics = run_epoch(
                    network,
                    examples,
                    cfg=cfg,
                    state=state,
                    optimizer=optimizer,
                    sampler=sampler,
                    loss_fn=loss_fn,
                    positives=positives,
                    generator=generator,
                    total_steps=total_steps,
                    max_steps=max_steps,
                    update_bar=update_bar,
                    rank=rank,
                    world_size=world_size,
                    step=step,
                    teacher=teacher,
                )
                state.epoch += 1
                epochs_this_run += 1
                if validate is not None and evaluation_due(cfg, state.epoch):
                    value = validate()[cfg.validation_metric]
                    if world_size > 1:  # every rank must take the same early-stopping decision
                        value = distributed.broadcast_value(value, device)
                    metrics[f"val_{cfg.validation_metric}"] = value
                    best = track_best(state, value, network, best)
                    patience = cfg.early_stopping_patience
                    steps_since_best = (state.epoch - state.best_epoch) * per_epoch
                    state.stopped_early = (
                        patience > 0
                        and state.bad_evaluations >= patience
                        and steps_since_best >= cfg.early_stopping_min_steps
                    )
                state.finished = state.stopped_early or state.epoch >= cfg.epochs
                state.history.append({"step": float(state.epoch), **metrics})
                if checkpoints is not None and rank == 0:
                    save_checkpoint(
                        checkpoints,
                        network=network,
                        optimizer=optimizer,
                        generator=generator,
                        state=state,
                        best_weights=best,
                        fingerprint=fingerprint,
                        world_size=world_size,
                        global_batch=cfg.batch_size * world_size,
                        torch_rng=torch_rng,
                    )
                stop = callback(state.epoch, metrics) if callback is not None else None
                if world_size > 1:  # a callback on one rank (rank 0's MLflow) may stop all of them
                    stop = distributed.any_rank(bool(stop), device)
                if stop or (max_epochs_this_run is not None and epochs_this_run >= max_epochs_this_run):
                    break
        if best is not None:
            network.load_state_dict(best)
        # The last step's gradients (one float per parameter: both id embeddings, 27 MB at 55k items x
        # 64, 0.5 GB at 1M items) stayed on the parameters for the life of the model, in every best
        # tuning trial kept and in both models of a run training at once; nothing reads them (each
        # step sets them to None before its backward pass, and checkpoints hold no gradients).
        network.zero_grad(set_to_none=True)
        network.eval()
    return TrainResult(
        epochs_run=epochs_this_run,
        best_epoch=state.best_epoch,
        best_metric=state.best_metric,
        stopped_early=state.stopped_early,
        resumed_from_epoch=resumed_from,
        earlier_history=earlier_history,
        resumed_from=resume_info,
    )
