"""Two-tower retrieval model. (Stub: being implemented.)"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsys.models.base import ModelConfig

LossName = Literal[
    "bce", "sampled_softmax", "nce", "infonce", "bpr", "hinge", "positives_only",
    "contrastive", "lifted", "npair",
]
SamplerName = Literal["uniform", "popularity", "in_batch", "mixed", "hard"]


class TwoTowerConfig(ModelConfig):
    kind: Literal["two_tower"] = "two_tower"
    dim: int = Field(64, gt=0, description="output embedding size")
    user_layers: list[int] = Field(default_factory=list, description="hidden sizes of the user MLP ([] = id embedding only)")
    item_layers: list[int] = Field(default_factory=list)
    projection_head: int | None = Field(None, description="size of a training-only projection head (None = none)")
    use_features: bool = Field(False, description="feed side features (categorical, multi-hot, numeric) to the towers")
    normalize: bool = True
    temperature: float = Field(0.1, gt=0)
    learn_temperature: bool = False
    loss: LossName = "sampled_softmax"
    sampler: SamplerName = "uniform"
    sampler_alpha: float = Field(0.75, ge=0, description="popularity^alpha sampling exponent")
    mixed_uniform_fraction: float = Field(0.5, ge=0, le=1)
    num_negatives: int = Field(256, ge=0)
    shared_negatives: bool = Field(True, description="one negative set per batch (one matmul) vs per example")
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    margin: float = Field(0.0, ge=0, description="hinge/triplet margin and additive margin for softmax losses")
    hard_negative_k: int = Field(100, gt=0)
    batch_size: int = Field(1024, gt=0)
    epochs: int = Field(20, gt=0)
    lr: float = Field(5e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "adagrad"] = "adam"
    lr_schedule: Literal["constant", "cosine", "step"] = "constant"
    grad_clip: float | None = Field(None, gt=0)
    eval_every: int = Field(1, ge=0)
    early_stopping_patience: int = Field(0, ge=0)
    validation_metric: str = "recall@20"
    checkpoint_dir: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, gt=0, description="torch intra-op threads (None = torch default)")
    fold_in: Literal["mean", "optimize"] = "mean"
