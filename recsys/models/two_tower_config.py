"""The two-tower model's typed config, apart from the model: `recsys.config` builds `RunConfig` from
every model's config, and `recsys/models/two_tower.py` imports torch, a second of start-up that
commands which only read a config (`recsys ingest`, `recsys data ...`, `--help`) should not pay.
`recsys.models.two_tower` imports it back, so `from recsys.models.two_tower import TwoTowerConfig`
still works. Nothing here may import torch (tests/test_startup.py checks)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, PositiveFloat, model_validator

from recsys.distill_config import DistillConfig
from recsys.models.model_config import ModelConfig

LossName = Literal[
    "bce",
    "sampled_softmax",
    "nce",
    "infonce",
    "bpr",
    "hinge",
    "positives_only",
    "contrastive",
    "lifted",
    "npair",
    "gbce",
    "sampled_softmax_corrected",
]
SamplerName = Literal["uniform", "popularity", "in_batch", "mixed", "hard", "all"]


class TwoTowerConfig(ModelConfig):
    kind: Literal["two_tower"] = "two_tower"
    dim: int = Field(64, gt=0, description="output embedding size")
    user_layers: list[int] = Field(
        default_factory=list, description="hidden sizes of the user MLP ([] = id embedding only)"
    )
    item_layers: list[int] = Field(default_factory=list)
    projection_head: int | None = Field(
        None, description="size of a training-only projection head (None = none)"
    )
    use_features: bool = Field(
        False, description="feed side features (categorical, multi-hot, numeric) to the towers"
    )
    normalize: bool = True
    temperature: PositiveFloat | Literal["auto"] = Field(
        "auto", description="softmax temperature of the unit-vector scores; 'auto' = 0.05 for a sequence user tower, "
        "else 0.1; for bce / gbce with the 'auto' logit_offset at most 1 / (2 L + 4), L = the offset's log(n_items / "
        "mean items per user), so sparse catalogues get a sharper scale (recsys.models.defaults.two_tower_temperature)",
    )
    learn_temperature: bool = False
    loss: LossName = "sampled_softmax"
    sampler: SamplerName | Literal["auto"] = Field(
        "auto",
        description="negatives: uniform, popularity (count^alpha), in_batch, mixed (in-batch + uniform), hard "
        "(mined from the current model) or all (every item of the catalogue, the full softmax; ignores "
        "num_negatives). 'auto' = all for a sequence user tower on a catalogue of at most 10,000 items, "
        "else uniform (recsys.models.defaults.two_tower_sampler)",
    )
    sampler_alpha: float = Field(0.75, ge=0, description="popularity^alpha sampling exponent")
    mixed_uniform_fraction: float = Field(0.5, ge=0, le=1)
    num_negatives: int = Field(256, ge=0)
    shared_negatives: bool = Field(True, description="one negative set per batch (one matmul) vs per example")
    logq_correction: bool = True
    logit_offset: float | Literal["auto"] = Field(
        "auto",
        description="pointwise losses (bce, gbce): added to every logit s / T. 'auto' = log(n_items / mean "
        "items per user) - 1 / T, at most 0 (recsys.losses.pointwise_offset: without it, L2-normalised towers "
        "can only push uniform negatives down by pointing users and items apart); 0 = off",
    )
    gbce_calibration: float = Field(
        0.75, ge=0, le=1, description="gbce: the calibration t of Petrov & Macdonald 2023 (0 = plain BCE)"
    )
    remove_accidental_hits: bool = True
    margin: float = Field(
        0.0, ge=0, description="hinge/triplet margin and additive margin for softmax losses"
    )
    hard_negative_k: int = Field(100, gt=0)
    batch_size: int | None = Field(
        None,
        gt=0,
        description="per process; the global batch is batch_size x world size. None = data-aware: the largest "
        "power of two <= interactions / 32, within 128-1024 (recsys.models.defaults)",
    )
    epochs: int = Field(
        10, gt=0, description="10 reaches ~0.40 recall@20 on ML-100K (random 80/20 split); 20 adds ~0.01"
    )
    lr: float = Field(5e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "adagrad"] = "adam"
    lr_schedule: Literal["constant", "cosine", "step"] = "constant"
    lr_step_epochs: int = Field(
        5, gt=0, description="step schedule: multiply the lr by lr_step_gamma every this many epochs"
    )
    lr_step_gamma: float = Field(0.5, gt=0, le=1, description="step schedule: decay factor")
    grad_clip: float | None = Field(None, gt=0)
    max_steps_per_epoch: int | None = Field(
        None,
        gt=0,
        description="cut every epoch after this many steps (smoke runs and benchmarks on big data)",
    )
    eval_every: int = Field(1, ge=0)
    early_stopping_patience: int = Field(0, ge=0)
    early_stopping_min_steps: int = Field(
        200,
        ge=0,
        description="stop early only once this many optimizer steps have passed since the best epoch: patience "
        "counted in epochs alone ends small data sets' training on the random-init plateau (an epoch is few steps)",
    )
    validation_metric: str = "recall@20"
    checkpoint_dir: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, gt=0, description="torch intra-op threads (None = torch default)")
    user_input: Literal["id", "history", "sequence"] = Field(
        "id",
        description="what the user tower encodes: 'id', a learned embedding per training user (new users "
        "are folded in from their history's item vectors); 'history', the user's interactions (weighted "
        "mean of a learned item-input embedding, then the MLP), trained with each example's target item "
        "left out, so a new user goes through the very function training users do (YouTube-DNN / FISM "
        "style; what strong generalisation needs); 'sequence', causal self-attention over the user's last "
        "sequence_length interactions in time order (SASRec style, recsys.models.sequence_tower), trained on "
        "every prefix; batch_size then counts windows of sequence_length targets",
    )
    sequence_length: int = Field(
        50, ge=2, description="sequence user tower: the last N interactions it attends over (and the window length)"
    )
    sequence_blocks: int = Field(2, ge=1, description="sequence user tower: self-attention blocks")
    sequence_heads: int = Field(1, ge=1, description="sequence user tower: attention heads (must divide dim)")
    sequence_dropout: float = Field(0.2, ge=0, lt=1, description="sequence user tower: dropout on inputs, attention and MLPs")
    sequence_time_buckets: int = Field(
        0, ge=0, description="sequence user tower: embed the time since the previous interaction in this many log2 "
        "buckets (0 = off; histories sent to the pyfunc carry no times and use the 'unknown' bucket)",
    )
    sequence_tied_items: bool = Field(
        True, description="sequence user tower: its item inputs are the item tower's id embeddings (SASRec's tying)"
    )
    history_limit: int | None = Field(
        500,
        gt=0,
        description="history user tower: pool at most this many of each training user's items (a fixed "
        "seeded sample per user; None = all). A user is an example once per interaction and each time "
        "pools their whole history, so one power user's cost per epoch grows with the square of their "
        "activity; at 500 x dim the pooling costs no more than scoring a batch's ~1000 negatives, and the "
        "mean of a uniform sample estimates the mean of all. Folded-in users pool everything",
    )
    fold_in: Literal["mean", "least_squares"] = Field(
        "mean",
        description="new users of an id user tower: mean of the history's item vectors, or the implicit-ALS least-squares "
        "solve against the item vectors (recsys.models.fold_in), which also pushes away untouched items; "
        "for softmax-trained towers it scored below mean on ML-100K (benchmarks/RESULTS.md, quality)",
    )
    fold_in_alpha: float = Field(
        10.0, ge=0, description="least_squares fold-in: confidence 1 + alpha * weight"
    )
    fold_in_regularization: float = Field(
        1.0, gt=0, description="least_squares fold-in: L2 on the user vector"
    )
    quiet: bool = Field(False, description="no progress bar (it is also off when stderr is not a terminal)")
    distill: DistillConfig | None = Field(
        None, description="knowledge distillation from a teacher model (recsys.distill); None = off"
    )

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> Self:
        if self.user_input == "sequence" and self.dim % self.sequence_heads:
            raise ValueError(f"sequence_heads = {self.sequence_heads} must divide dim = {self.dim}")
        return self

    @model_validator(mode="after")
    def _negatives_for_the_loss(self) -> Self:
        """A sampler that draws `num_negatives` items draws none at 0: every loss but positives_only
        then has nothing to contrast (a softmax over the positive alone is constant), so the towers
        stay at their random start while the run reports a model. ("auto" on a sequence tower may be
        `all`, which ignores num_negatives, so it is left to the data.)"""
        draws = self.sampler in ("uniform", "popularity", "hard") or (
            self.sampler == "auto" and self.user_input != "sequence"
        )
        if draws and self.num_negatives == 0 and self.loss != "positives_only":
            raise ValueError(
                f"model {self.name!r}: loss {self.loss!r} with sampler {self.sampler!r} and num_negatives = 0 "
                "has no negative to learn from; set num_negatives > 0, sampler = in_batch, mixed or all, "
                "or loss = positives_only"
            )
        return self

    @model_validator(mode="after")
    def _teacher_is_another_model(self) -> Self:
        if self.distill is not None and self.distill.teacher == self.name and not self.distill.checkpoint:
            raise ValueError(
                f"model {self.name!r}: distill.teacher names the model itself; for self-distillation use "
                'teacher = "self" with checkpoint = a saved model directory'
            )
        return self
