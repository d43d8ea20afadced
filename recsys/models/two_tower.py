"""Two-tower retrieval model: a user tower and an item tower trained with sampled negatives.

Each tower is an id embedding plus optional side-feature encoders (summed), an optional MLP, and
L2 normalisation; scores are dot products divided by a fixed or learned temperature. An optional
projection head sits on top of each tower during training only (SimCLR style): the loss sees the
head's output, retrieval uses the tower output before it, which generalises better.

After training, `user_factors` / `item_factors` are the tower outputs for every user and item,
computed once and cached as float32 numpy, so retrieval, evaluation and serving are the same
dot-product top-k as for every other model. The training loop itself lives in `recsys.training`, the
config (`TwoTowerConfig`, imported here) in `two_tower_config.py`, which reading a config loads
without torch.

Users unseen at training time (strong generalisation, new sign-ups) depend on what the user
tower encodes (`user_input`):
- "history": the tower pools the user's interactions (weighted mean of a learned item-input
  embedding, then the MLP), trained with each example's target item left out of its own history.
  A new user goes through exactly the function training users do; on ML-100K strong generalisation
  this is what brings the two-tower level with WALS (benchmarks/RESULTS.md, quality).
- "id" (default): an id embedding has no row for a new user. Instead we take the
  (interaction-weighted) mean of the user's history item vectors, L2-normalised when the model is:
  with a softmax-type loss on normalised vectors a user's vector is pulled towards the centroid of
  the items it interacted with, so the centroid is the standard item-based approximation. When the
  model has user features and they are given for the new users, the feature part of the user tower
  (id embedding left out) is added to that centroid.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from recsys.data.features import FeatureColumn, FeatureSet
from recsys.data.split import EvalSet
from recsys.distill import resolve_teacher, teacher_targets
from recsys.errors import DataError, ModelError
from recsys.losses import POINTWISE_LOSSES
from recsys.models.base import (
    FitCallback,
    Recommender,
    as_user_item_csr,
    seeded_global_torch_rng,
)
from recsys.models.defaults import resolved_sampler, resolved_temperature, two_tower_batch_size
from recsys.models.fold_in import least_squares_users
from recsys.models.sequence_tower import SequenceTower, order_rows, sequence_batch_size, windows_per_user
from recsys.models.two_tower_config import LossName as LossName  # re-exported: the names' old home
from recsys.models.two_tower_config import SamplerName as SamplerName
from recsys.models.two_tower_config import TwoTowerConfig

MIN_LEARNED_TEMPERATURE = 0.01
"""Learned temperatures are clamped here (CLIP's logit-scale cap) so the logits cannot explode."""


# ===================================================================== network
class FeatureEncoder(nn.Module):
    """Sum of one encoder per side feature, each mapping its column to a `dim` vector.

    The feature values are persistent buffers, so the state_dict (saved as safetensors) carries
    them and a loaded model can recompute its towers without the original feature files."""

    def __init__(self, specs: list[dict[str, Any]], n_rows: int, dim: int) -> None:
        super().__init__()
        self.specs = specs
        self.encoders = nn.ModuleDict()
        for spec in specs:
            name, kind, card = spec["name"], spec["kind"], len(spec["vocabulary"])
            if kind == "categorical":
                self.encoders[name] = scaled_embedding(card, dim)
                self.register_buffer(f"values_{name}", torch.zeros(n_rows, dtype=torch.int64))
            elif kind == "multi_hot":
                self.encoders[name] = nn.Linear(card, dim, bias=False)
                self.register_buffer(f"values_{name}", torch.zeros(n_rows, card))
            elif kind == "numeric":
                self.encoders[name] = nn.Linear(1, dim)
                self.register_buffer(f"values_{name}", torch.zeros(n_rows, 1))
            else:
                raise DataError(f"feature {name!r}: unknown kind {kind!r} (categorical, multi_hot, numeric)")

    def set_values(self, columns: dict[str, FeatureColumn]) -> None:
        """Copy feature values in; multi-hot bags are row-normalised so the encoder averages tags."""
        for spec in self.specs:
            col = columns[spec["name"]]
            values = torch.as_tensor(np.asarray(col.values))
            if col.kind == "multi_hot":
                values = values.float() / values.float().sum(dim=1, keepdim=True).clamp_min(1.0)
            elif col.kind == "numeric":
                values = values.float().reshape(-1, 1)
            getattr(self, f"values_{spec['name']}").copy_(values)

    def forward(
        self, index: torch.Tensor | None, values: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Encode rows `index` of the stored values, or explicit `values` (rows of new entities)."""
        out = None
        for spec in self.specs:
            name = spec["name"]
            column = values[name] if values is not None else getattr(self, f"values_{name}")[index]
            encoded = self.encoders[name](column)
            out = encoded if out is None else out + encoded
        assert out is not None
        return out


def scaled_embedding(n: int, dim: int) -> nn.Embedding:
    """An embedding table initialised N(0, 1/dim): rows start with norm ~1, so dot products (and
    cosines after L2 normalisation) start in a range where the softmax temperature is meaningful."""
    table = nn.Embedding(n, dim)
    nn.init.normal_(table.weight, std=dim**-0.5)
    return table


def mlp(dim: int, layers: list[int]) -> nn.Sequential:
    """`dim` -> hidden layers (ReLU) -> `dim`; the identity when `layers` is empty."""
    blocks: list[nn.Module] = []
    width = dim
    for hidden in layers:
        blocks += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    if layers:
        blocks.append(nn.Linear(width, dim))
    network = nn.Sequential(*blocks)
    zero_biases(network)
    return network


class Tower(nn.Module):
    """id embedding (+ feature encoders) -> optional MLP (ReLU) -> `dim` vector."""

    def __init__(self, n: int, dim: int, layers: list[int], feature_specs: list[dict[str, Any]]) -> None:
        super().__init__()
        self.dim = dim
        self.ids = scaled_embedding(n, dim)
        self.features = FeatureEncoder(feature_specs, n, dim) if feature_specs else None
        self.mlp = mlp(dim, layers)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        x = self.ids(index)
        if self.features is not None:
            x = x + self.features(index)
        return self.mlp(x)

    def from_features(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The tower for entities without an id row: features only (id embedding = 0)."""
        assert self.features is not None
        return self.mlp(self.features(None, values))


class HistoryTower(nn.Module):
    """User tower of `user_input = "history"`: the weighted mean of the user's items in a learned
    item-input table (+ user feature encoders) -> optional MLP -> `dim` vector.

    The training interactions are kept as CSR buffers (not saved: a loaded model has its user
    vectors, and new users bring their own rows). In training each example leaves its target item
    out of the pooled history; otherwise the tower would learn to find the target in its own input,
    which a held-out user's history does not contain."""

    def __init__(
        self, n_users: int, n_items: int, dim: int, layers: list[int], feature_specs: list[dict[str, Any]]
    ) -> None:
        super().__init__()
        self.dim = dim
        self.items = scaled_embedding(n_items, dim)
        self.features = FeatureEncoder(feature_specs, n_users, dim) if feature_specs else None
        self.mlp = mlp(dim, layers)
        self.register_buffer("indptr", torch.zeros(n_users + 1, dtype=torch.int64), persistent=False)
        self.register_buffer("indices", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("weights", torch.zeros(0), persistent=False)

    def set_history(self, interactions: sp.csr_matrix) -> None:
        """The users' interactions (users x items, the rows `forward` pools), on the tower's device."""
        self.indptr, self.indices, self.weights = csr_tensors(interactions, self.items.weight.device)

    def forward(self, index: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Users `index` from their stored history, leaving out item `exclude[b]` for row b."""
        positions, rows, offsets = csr_row_positions(self.indptr, index)
        items, weights = self.indices[positions], self.weights[positions]
        if exclude is not None:
            weights = weights * (items != exclude[rows])
        x = self.pool(items, weights, rows, offsets, index.shape[0])
        if self.features is not None:
            x = x + self.features(index)
        return self.mlp(x)

    def encode(self, history: sp.csr_matrix, features: torch.Tensor | None = None) -> torch.Tensor:
        """Users given only their rows (n x items CSR) and optionally their encoded features."""
        indptr, items, weights = csr_tensors(history, self.items.weight.device)
        n = history.shape[0]
        rows = torch.repeat_interleave(torch.arange(n, device=indptr.device), indptr.diff())
        x = self.pool(items, weights, rows, indptr[:-1], n)
        return self.mlp(x if features is None else x + features)

    def pool(
        self, items: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor, n: int
    ) -> torch.Tensor:
        """Weighted mean of the item-input vectors per row (one embedding_bag); empty rows give 0."""
        total = F.embedding_bag(items, self.items.weight, offsets, mode="sum", per_sample_weights=weights)
        mass = torch.zeros(n, device=weights.device, dtype=weights.dtype).index_add_(0, rows, weights)
        return total / mass.clamp_min(1e-12).unsqueeze(1)


def sample_rows(matrix: sp.csr_matrix, limit: int, seed: int) -> sp.csr_matrix:
    """At most `limit` entries per row: rows longer than that keep a seeded uniform sample (in their
    original order); shorter rows are kept whole. Vectorised: one random key per entry, a lexsort
    by (row, key), and each entry's rank within its row."""
    lengths = np.diff(matrix.indptr)
    if lengths.size == 0 or lengths.max() <= limit:
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), lengths)
    order = np.lexsort((np.random.default_rng(seed).random(matrix.nnz), rows))
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], lengths)
    keep = rank < limit
    indptr = np.concatenate([[0], np.cumsum(np.minimum(lengths, limit))])
    return sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)


def csr_tensors(matrix: sp.spmatrix, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indptr int64, indices int64, data float32) of a CSR matrix as tensors on `device`."""
    rows = sp.csr_matrix(matrix)
    return (
        torch.as_tensor(rows.indptr.astype(np.int64), device=device),
        torch.as_tensor(rows.indices.astype(np.int64), device=device),
        torch.as_tensor(rows.data.astype(np.float32), device=device),
    )


def csr_row_positions(
    indptr: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For CSR rows `index`: the positions of their entries in the CSR arrays, the output row of
    each entry, and each row's start offset in that concatenation (embedding_bag's `offsets`)."""
    starts = indptr[index]
    lengths = indptr[index + 1] - starts
    offsets = torch.cumsum(lengths, 0) - lengths
    total = int(lengths.sum())
    rows = torch.repeat_interleave(
        torch.arange(index.shape[0], device=index.device), lengths, output_size=total
    )
    positions = torch.arange(total, device=index.device) - offsets[rows] + starts[rows]
    return positions, rows, offsets


def zero_biases(module: nn.Module) -> None:
    """Start biases at 0: the id embeddings are small, and default (random) biases would dominate
    them, so every output would point the same way after L2 normalisation and training would stall."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear) and layer.bias is not None:
            nn.init.zeros_(layer.bias)


def projection_head(dim: int, size: int) -> nn.Module:
    """SimCLR-style head: used by the loss during training, dropped for retrieval."""
    head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, size))
    zero_biases(head)
    return head


class TwoTowerNetwork(nn.Module):
    """Both towers, the optional training heads and the temperature."""

    def __init__(
        self,
        config: TwoTowerConfig,
        n_users: int,
        n_items: int,
        feature_specs: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        super().__init__()
        specs = feature_specs or {}
        self.normalize = config.normalize
        self.user_input = config.user_input
        self.history_limit, self.seed = config.history_limit, config.seed
        self.user_tower: Tower | HistoryTower | SequenceTower
        self.item_tower = Tower(n_items, config.dim, config.item_layers, specs.get("item", []))
        if config.user_input == "history":
            self.user_tower = HistoryTower(
                n_users, n_items, config.dim, config.user_layers, specs.get("user", [])
            )
        elif config.user_input == "sequence":
            user_specs = specs.get("user", [])
            self.user_tower = SequenceTower(
                n_users, config.dim, mlp(config.dim, config.user_layers),
                FeatureEncoder(user_specs, n_users, config.dim) if user_specs else None,
                self.item_tower.ids if config.sequence_tied_items else scaled_embedding(n_items, config.dim),
                length=config.sequence_length, blocks=config.sequence_blocks, heads=config.sequence_heads,
                dropout=config.sequence_dropout, time_buckets=config.sequence_time_buckets,
            )  # fmt: skip
        else:
            self.user_tower = Tower(n_users, config.dim, config.user_layers, specs.get("user", []))
        head = config.projection_head
        # One head shared by both towers: the loss then compares g(h_u) with g(h_i) for the same g,
        # which keeps the pre-head vectors h_u, h_i in one space (separate heads let them drift apart
        # and retrieval from before the head becomes random).
        self.head = projection_head(config.dim, head) if head else None
        log_t = torch.tensor(math.log(resolved_temperature(config.temperature, config.user_input)))
        self.learn_temperature = config.learn_temperature
        if config.learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    def _finish(self, x: torch.Tensor, head: nn.Module | None, training: bool) -> torch.Tensor:
        if training and head is not None:
            x = head(x)
        return F.normalize(x, dim=-1) if self.normalize else x

    def set_history(self, interactions: sp.csr_matrix, times: sp.spmatrix | None = None) -> None:
        """Give a history user tower the training interactions it pools, a sequence tower the same
        in time order (`times`: users x items event times); a no-op for id towers."""
        if isinstance(self.user_tower, SequenceTower):
            self.user_tower.set_sequences(order_rows(interactions, times))
        if isinstance(self.user_tower, HistoryTower):
            rows = sp.csr_matrix(interactions)
            if self.history_limit is not None:
                rows = sample_rows(rows, self.history_limit, self.seed)
            self.user_tower.set_history(rows)

    def user_vectors(
        self,
        users: torch.Tensor,
        *,
        training: bool = False,
        exclude: torch.Tensor | None = None,
        sequence: tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """Retrieval vectors, or (training=True) the projection-head vectors the loss sees.
        `exclude[b]`: an item a history tower leaves out of user b's input (the example's target).
        `sequence`: a sequence tower's training windows (`SequenceExamples.windows` of this rank);
        the output then has one row per counted target, `users` the user of each."""
        if sequence is not None:
            assert isinstance(self.user_tower, SequenceTower)
            return self._finish(self.user_tower.forward_windows(users, sequence), self.head, training)
        if isinstance(self.user_tower, HistoryTower):
            return self._finish(self.user_tower(users, exclude), self.head, training)
        return self._finish(self.user_tower(users), self.head, training)

    def item_vectors(self, items: torch.Tensor, *, training: bool = False) -> torch.Tensor:
        return self._finish(self.item_tower(items), self.head, training)

    def temperature(self) -> torch.Tensor:
        t = self.log_temperature.exp()
        return t.clamp_min(MIN_LEARNED_TEMPERATURE) if self.learn_temperature else t

    @torch.no_grad()
    def all_vectors(self, n: int, side: Literal["user", "item"], chunk: int = 65536) -> np.ndarray:
        """Retrieval vectors for every row of one side, in chunks (bounded memory), as float32 numpy."""
        device = self.log_temperature.device
        encode = self.user_vectors if side == "user" else self.item_vectors
        parts = [
            encode(torch.arange(start, min(start + chunk, n), device=device)).float().cpu()
            for start in range(0, n, chunk)
        ]
        if not parts:
            return np.zeros((0, self.user_tower.dim), dtype=np.float32)
        return np.ascontiguousarray(torch.cat(parts).numpy(), dtype=np.float32)


# ===================================================================== model
class TwoTower(Recommender):
    """Two-tower retrieval on the one model protocol (see module docstring)."""

    kind = "two_tower"
    Config = TwoTowerConfig
    config: TwoTowerConfig

    def __init__(self, config: TwoTowerConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.network: TwoTowerNetwork | None = None
        self.feature_specs: dict[str, list[dict[str, Any]]] = {}
        self._user_factors: np.ndarray | None = None
        self._item_factors: np.ndarray | None = None
        self.teacher: Recommender | None = None

    def set_teacher(self, teacher: Recommender | None) -> TwoTower:
        """The fitted model `config.distill` distills from, for the next `fit` (the base `fit`
        signature is the same for every model, so the teacher is set beforehand rather than passed).
        Only its factors are used; it is never saved with the student. Not needed when
        `distill.checkpoint` names a saved teacher (self-distillation)."""
        if teacher is not None:
            teacher._check_fitted()
        self.teacher = teacher
        return self

    # ----------------------------------------------------------------- training
    def data_aware_config(self, train: sp.csr_matrix) -> TwoTowerConfig:
        """A None batch size, the "auto" sampler and temperature (a pointwise loss's is data-aware) and an
        "auto" pointwise logit offset resolved on the training matrix."""
        from recsys.training import resolve_logit_offset, resolve_temperature

        update: dict[str, Any] = {}
        if self.config.batch_size is None and self.config.user_input == "sequence":
            windows = windows_per_user(np.diff(train.indptr), self.config.sequence_length)
            update["batch_size"] = sequence_batch_size(int(windows.sum()))
        elif self.config.batch_size is None:
            update["batch_size"] = two_tower_batch_size(int(train.nnz))
        update["sampler"] = resolved_sampler(self.config.sampler, self.config.user_input, int(train.shape[1]))
        update["temperature"] = resolve_temperature(self.config.model_copy(update=update), train)
        if self.config.logit_offset == "auto" and self.config.loss in POINTWISE_LOSSES:  # needs the temperature
            update["logit_offset"] = resolve_logit_offset(self.config.model_copy(update=update), train)
        return self.config.model_copy(update=update) if update else self.config

    def build_network(self, n_users: int, n_items: int, features: FeatureSet | None) -> TwoTowerNetwork:
        """A fresh network for this config; features are used only when config.use_features."""
        use = self.config.use_features and features is not None
        self.feature_specs = features.specs() if use else {}
        network = TwoTowerNetwork(self.config, n_users, n_items, self.feature_specs)
        if use:
            features.check(n_users, n_items)
            if network.user_tower.features is not None:
                network.user_tower.features.set_values(features.user)
            if network.item_tower.features is not None:
                network.item_tower.features.set_values(features.item)
        return network

    def _fit(
        self, train: sp.csr_matrix, *, validation: EvalSet | None, callback: FitCallback, features: Any
    ) -> None:
        from recsys.training import train_two_tower

        if features is not None and not isinstance(features, FeatureSet):
            raise TypeError(
                f"features must be a recsys.data.features.FeatureSet, got {type(features).__name__}"
            )
        targets = self._teacher_targets(train)
        with seeded_global_torch_rng(self.config.seed):  # concurrent fits must not share the generator
            self.network = self.build_network(self.n_users, self.n_items, features)
        self._user_factors = self._item_factors = None
        result = train_two_tower(
            self.network,
            train,
            self.config,
            validate=self._validator(validation, train) if validation is not None else None,
            callback=callback,
            teacher=targets,
            max_steps=self.config.max_steps_per_epoch,
            times=self.train_times,
        )
        self.history[:0] = result.earlier_history  # epochs run before a resume, so history is whole
        self.resumed_from = result.resumed_from
        self.refresh_factors()

    def _teacher_targets(self, train: sp.csr_matrix):
        """The teacher's factors and top-m for `train` when distilling (None otherwise); a teacher set
        without a `distill` config is a mistake worth a clear error, not a silent no-op."""
        distill = self.config.distill
        if distill is None:
            if self.teacher is not None:
                raise ModelError(
                    f"model {self.config.name!r} was given a teacher but has no distill config; "
                    "add [models.distill] (teacher, temperature, weight) or do not set a teacher"
                )
            return None
        teacher = resolve_teacher(distill, self.teacher, self.kind)
        return teacher_targets(teacher, train, distill, self.config.temperature)

    def _validator(self, validation: EvalSet, train: sp.csr_matrix):
        """A closure the loop calls to score the current network on the validation set."""
        from recsys.evaluation.evaluate import evaluate
        from recsys.sections import EvaluationConfig

        metric = self.config.validation_metric
        name, _, k = metric.partition("@")
        eval_cfg = EvaluationConfig(ks=[int(k) if k else 20], metrics=[name], bootstrap_samples=0)
        popularity = np.bincount(train.indices, minlength=self.n_items).astype(np.float64)

        def validate() -> dict[str, float]:
            self.refresh_factors()
            was_fitted, self.is_fitted = self.is_fitted, True  # evaluation asks for fitted models
            try:
                summary = evaluate(self, validation, eval_cfg, item_popularity=popularity).summary
            finally:
                self.is_fitted = was_fitted
            return {metric: float(summary[metric])}

        return validate

    def refresh_factors(self) -> None:
        """Recompute the cached retrieval vectors from the towers (eval mode, no grad)."""
        assert self.network is not None
        was_training = self.network.training
        self.network.eval()
        self._user_factors = self.network.all_vectors(self.n_users, "user")
        self._item_factors = self.network.all_vectors(self.n_items, "item")
        self.network.train(was_training)

    # ----------------------------------------------------------------- vectors
    @property
    def user_factors(self) -> np.ndarray:
        if self._user_factors is None:
            raise RuntimeError("two-tower model has no factors yet; call fit() or load()")
        return self._user_factors

    @property
    def item_factors(self) -> np.ndarray:
        if self._item_factors is None:
            raise RuntimeError("two-tower model has no factors yet; call fit() or load()")
        return self._item_factors

    @property
    def temperature(self) -> float:
        """The (possibly learned) softmax temperature; scores for ranking do not need it."""
        if self.network is not None:
            return float(self.network.temperature())
        return resolved_temperature(self.config.temperature, self.config.user_input)

    def fold_in_ordered(self, histories: sp.spmatrix, times: sp.spmatrix | None = None) -> np.ndarray:
        return self.fold_in(histories, times=times)

    @property
    def reads_order(self) -> bool:
        return self.config.user_input == "sequence"

    def fold_in(
        self,
        histories: sp.spmatrix,
        user_features: dict[str, np.ndarray] | None = None,
        times: sp.spmatrix | None = None,
    ) -> np.ndarray:
        """Vectors for users unseen in training, from their interaction rows (and features).

        A history user tower encodes them exactly as it encodes training users. An id tower has no
        row for them: the interaction-weighted mean of the history's item vectors, or with
        `fold_in = "least_squares"` the implicit-ALS solve against them; plus the feature-only user
        tower when the model has user features and `user_features` (name -> rows for these users,
        encoded like the FeatureSet) is given. Vectors are L2-normalised when the model is. Users
        with empty histories and no features get a zero vector (they rank by nothing), except with a
        history tower with an MLP: there they get the MLP's learned no-history vector, as in training.
        A sequence tower encodes the last `sequence_length` items in the order of `times` (event
        times aligned with `histories`; without them, item index order)."""
        self._check_fitted()
        rows = as_user_item_csr(histories, self.n_items)
        if self.config.user_input in ("history", "sequence"):
            return self._history_fold_in(rows, user_features, times)
        if self.config.fold_in == "least_squares":
            conf = rows.copy()
            conf.data = 1.0 + self.config.fold_in_alpha * conf.data
            vectors = least_squares_users(conf, self.item_factors, self.config.fold_in_regularization)
        else:
            weights = np.asarray(rows.sum(axis=1)).ravel()
            vectors = np.asarray(rows @ self.item_factors, dtype=np.float32)
            vectors /= np.maximum(weights, 1e-12)[:, None].astype(np.float32)
        if user_features is not None and self.feature_specs.get("user"):
            assert self.network is not None and isinstance(self.network.user_tower, Tower)
            with torch.no_grad():
                features = self.network.user_tower.from_features(
                    self._user_feature_values(user_features, rows.shape[0])
                )
                features = F.normalize(features, dim=-1) if self.config.normalize else features
            vectors += features.float().cpu().numpy()
        return self._normalised(vectors)

    def _history_fold_in(
        self, rows: sp.csr_matrix, user_features: dict[str, np.ndarray] | None, times: sp.spmatrix | None
    ) -> np.ndarray:
        tower = self.network.user_tower if self.network is not None else None
        if not isinstance(tower, HistoryTower | SequenceTower):
            raise ModelError(
                f"model {self.config.name!r} has no {self.config.user_input} tower weights (towers.safetensors) "
                "to fold users in with"
            )
        with torch.no_grad():
            features = None
            if user_features is not None and tower.features is not None:
                features = tower.features(None, self._user_feature_values(user_features, rows.shape[0]))
            if isinstance(tower, SequenceTower):
                vectors = tower.encode(order_rows(rows, times), features).float().cpu().numpy()
            else:
                vectors = tower.encode(rows, features).float().cpu().numpy()
        return self._normalised(vectors)

    def _normalised(self, vectors: np.ndarray) -> np.ndarray:
        if self.config.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0.0)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _user_feature_values(self, user_features: dict[str, np.ndarray], n: int) -> dict[str, torch.Tensor]:
        """Raw feature rows of `n` new users as the tensors the user FeatureEncoder takes."""
        assert self.network is not None
        values: dict[str, torch.Tensor] = {}
        for spec in self.feature_specs["user"]:
            raw = np.asarray(user_features[spec["name"]])
            if raw.shape[0] != n:
                raise DataError(
                    f"user feature {spec['name']!r} has {raw.shape[0]} rows for {n} fold-in users"
                )
            tensor = torch.as_tensor(raw)
            if spec["kind"] == "multi_hot":
                tensor = tensor.float() / tensor.float().sum(dim=1, keepdim=True).clamp_min(1.0)
            elif spec["kind"] == "numeric":
                tensor = tensor.float().reshape(-1, 1)
            values[spec["name"]] = tensor.to(self.network.log_temperature.device)
        return values

    # ----------------------------------------------------------------- persistence
    def _factor_tensors(self) -> dict[str, np.ndarray]:
        """With id towers, the factors are their output: saved once, as the towers (recomputed on
        load, in eval mode, as `fit` computed them), so a logged model holds no second copy."""
        # A history tower encodes the training histories, which the saved state does not hold.
        recomputable = self.network is not None and self.config.user_input == "id"
        return {} if recomputable else super()._factor_tensors()

    def _load_factors(self, tensors: dict[str, np.ndarray]) -> None:
        if not tensors:  # saved with towers: `_load_extra` recomputes the factors from them
            return
        self._user_factors = np.ascontiguousarray(tensors["user_factors"], dtype=np.float32)
        self._item_factors = np.ascontiguousarray(tensors["item_factors"], dtype=np.float32)

    def _save_extra(self, directory: Path) -> None:
        """Tower weights (and feature buffers) as safetensors, feature specs as JSON."""
        from safetensors.torch import save_file

        if self.network is None:
            return
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.network.state_dict().items()}
        save_file(state, str(directory / "towers.safetensors"))
        (directory / "features.json").write_text(json.dumps(self.feature_specs, indent=2))

    def _load_extra(self, directory: Path) -> None:
        from safetensors.torch import load_file

        weights = directory / "towers.safetensors"
        if not weights.is_file():
            return
        spec_file = directory / "features.json"
        self.feature_specs = json.loads(spec_file.read_text()) if spec_file.is_file() else {}
        self.network = TwoTowerNetwork(self.config, self.n_users, self.n_items, self.feature_specs)
        self.network.load_state_dict(load_file(str(weights)))
        self.network.eval()
        if self._user_factors is None:
            self.refresh_factors()
