"""Knowledge distillation into the two-tower student (Hinton et al. 2015, applied to retrieval).

Why: WALS (or any trained model of the run) already ranks well, but the two-tower learns only from
each interaction's positive against a few sampled negatives. The teacher's scores carry "dark
knowledge" — how much it prefers every candidate, not just which one was clicked — so we add
`weight * T^2 KL(softmax(teacher/T) || softmax(student/T))` over a per-example candidate set to the
retrieval loss (`recsys.losses.distillation_kl`).

Candidate set of one training example: its positive, the sampled negatives (shared or per example,
exactly the ones the retrieval loss sees, in-batch positives included) and the teacher's top-m items
for the user. The top-m is precomputed once per fit with `recsys.evaluation.ranking.topk`
*excluding the user's training items*: those are already known to the student as positives, while
the teacher's best unseen items are what evaluation measures and what sampled negatives almost never
contain. No logQ correction and no accidental-hit mask are applied to the KL term: both softmaxes are
over the same sampled set, so duplicates weigh the same on both sides and the KL is zero exactly when
the student's scores over the set equal the teacher's.

Teacher logits are `teacher_scale * u_t . v_t`. Scores of different models live on different scales
(WALS predicts preferences around 0..1, a normalised two-tower scores cosines), and softmax is not
scale-free, so the default scale is `1 / temperature` of the teacher when it has one (a two-tower:
self-distillation gives back its own logits) and otherwise `1 / temperature` of the student, i.e. the
teacher's scores are read like the student's cosine similarities.

The teacher enters as precomputed factors (`TeacherTargets`): under DDP every rank builds the same
ones (they are small: users x d + items x d + users x m), so nothing is communicated. The teacher
model itself is never saved with the student.

Config: `[[models]] kind = "two_tower"` with `[models.distill]` (or an inline table) holding
`teacher` (another model's name in the run, or "self" with `checkpoint` = a saved two-tower),
`temperature`, `weight`, `top_m`, `teacher_scale`. Which model is "wals" is the pipeline's business:
`check_teachers` / `order_by_teacher` validate names and give a training order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from recsys.distill_config import (  # noqa: F401 - the config side, re-exported
    SELF,
    DistillConfig,
    check_teachers,
    depends_on,
    distillation_waves,
    order_by_teacher,
    teacher_name,
    teacher_names,
)
from recsys.errors import ModelError

if TYPE_CHECKING:  # torch is imported by the functions that compute: `DistillConfig` and the teacher
    import torch  # checks are part of reading a config, which must not load torch (tests/test_startup.py)

    from recsys.models.base import Recommender

# ===================================================================== teacher targets
@dataclass(frozen=True)
class TeacherTargets:
    """What the training loop needs from the teacher, as tensors on the training device.

    user_factors (n_users, d_t), item_factors (n_items, d_t): teacher vectors; top_items
    (n_users, m) int64: the teacher's best unseen items per user (-1 = padding where fewer than m
    unseen items exist); scale: teacher logits = scale * u.v; temperature, weight: from the config."""

    user_factors: torch.Tensor
    item_factors: torch.Tensor
    top_items: torch.Tensor
    scale: float
    temperature: float
    weight: float
    padded: bool = False  # some user has fewer than m unseen items (checked once, not per step)

    @property
    def top_m(self) -> int:
        return int(self.top_items.shape[1])

    def to(self, device: torch.device | str) -> TeacherTargets:
        return TeacherTargets(
            self.user_factors.to(device),
            self.item_factors.to(device),
            self.top_items.to(device),
            self.scale,
            self.temperature,
            self.weight,
            self.padded,
        )

    def fingerprint(self) -> str:
        """Digest of the teacher (factors, top-m, settings): a checkpoint distilled from another
        teacher must not be resumed."""
        digest = hashlib.sha256()
        for tensor in (self.user_factors, self.item_factors, self.top_items):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(np.asarray([self.scale, self.temperature, self.weight], dtype=np.float64).tobytes())
        return digest.hexdigest()[:16]


def resolve_teacher(cfg: DistillConfig, given: Recommender | None, student_kind: str) -> Recommender:
    """The teacher model: the one set on the student (pipeline: the trained model named by
    `cfg.teacher`), else the saved model at `cfg.checkpoint` (self-distillation: must be a two-tower)."""
    if given is not None:
        return given
    if cfg.checkpoint:
        from recsys.models.base import Recommender

        try:
            teacher = Recommender.load(cfg.checkpoint)
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(
                f"distill.checkpoint {cfg.checkpoint}: cannot load the teacher ({error})"
            ) from error
        if cfg.teacher == SELF and teacher.kind != student_kind:
            raise ModelError(
                f"distill.checkpoint {cfg.checkpoint} holds a {teacher.kind} model; self-distillation "
                f"needs a saved {student_kind}"
            )
        return teacher
    raise ModelError(
        f"distill.teacher = {cfg.teacher!r} needs the trained teacher: call model.set_teacher(teacher) "
        "before fit (the pipeline does this for a model of the run), or give distill.checkpoint"
    )


def teacher_targets(
    teacher: Recommender,
    train: sp.csr_matrix,
    cfg: DistillConfig,
    student_temperature: float,
    device: torch.device | str = "cpu",
) -> TeacherTargets:
    """Teacher factors and its top-m unseen items per training user, computed once per fit."""
    import torch

    from recsys.evaluation.ranking import topk

    n_users, n_items = train.shape
    users, items = np.asarray(teacher.user_factors), np.asarray(teacher.item_factors)
    if users.shape[0] != n_users or items.shape[0] != n_items:
        raise ModelError(
            f"teacher {teacher.config.name!r} has {users.shape[0]} users x {items.shape[0]} items but the "
            f"student trains on {n_users} x {n_items}: teacher and student must be fitted on the same split"
        )
    if cfg.top_m > 0:
        top, _ = topk(users, items, cfg.top_m, exclude=train, device="cpu")
    else:
        top = np.zeros((n_users, 0), dtype=np.int64)
    scale = cfg.teacher_scale
    if scale is None:
        own = getattr(teacher, "temperature", None)  # a two-tower teacher's softmax temperature
        scale = 1.0 / float(own if isinstance(own, (int, float)) and own > 0 else student_temperature)
    return TeacherTargets(
        torch.from_numpy(np.ascontiguousarray(users, dtype=np.float32)).to(device),
        torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32)).to(device),
        torch.from_numpy(np.ascontiguousarray(top, dtype=np.int64)).to(device),
        float(scale),
        cfg.temperature,
        cfg.weight,
        padded=bool((top < 0).any()),
    )


# ===================================================================== the loss term
def candidate_scores(
    user_vecs: torch.Tensor,
    pos_vecs: torch.Tensor,
    neg_vecs: torch.Tensor | None,
    top_vecs: torch.Tensor,
) -> torch.Tensor:
    """Dot products `(B, 1 + N + m)` of each user with its positive, negatives (`(N, d)` shared,
    `(B, N, d)` per example, or None) and top-m items `(B, m, d)`, in that column order."""
    import torch

    columns = [(user_vecs * pos_vecs).sum(dim=-1, keepdim=True)]
    if neg_vecs is not None:
        if neg_vecs.dim() == 2:
            columns.append(user_vecs @ neg_vecs.T)
        else:
            columns.append(torch.einsum("bd,bnd->bn", user_vecs, neg_vecs))
    columns.append(torch.einsum("bd,bmd->bm", user_vecs, top_vecs))
    return torch.cat(columns, dim=1)


def top_items_for(targets: TeacherTargets, users: torch.Tensor) -> torch.Tensor:
    """The teacher's top-m items of each batch user, padding (-1) replaced by item 0 (it is masked)."""
    return targets.top_items[users].clamp_min(0)


def distillation_loss(
    targets: TeacherTargets,
    users: torch.Tensor,
    items: torch.Tensor,
    neg_items: torch.Tensor | None,
    *,
    user_vecs: torch.Tensor,
    pos_vecs: torch.Tensor,
    neg_vecs: torch.Tensor | None,
    top_vecs: torch.Tensor,
    temperature: torch.Tensor | float,
) -> torch.Tensor:
    """`weight * T^2 KL(teacher || student)` over each example's candidate set (mean over examples).

    `users`, `items`: the batch rows; `neg_items`: the negatives' item indices (`(N,)` or `(B, N)`,
    None for none) matching `neg_vecs`; `*_vecs`: the student's training vectors; `temperature`: the
    student's own softmax temperature (its logits are scores / temperature, as in the retrieval loss)."""
    import torch

    from recsys.losses import distillation_kl  # not at import: losses -> config -> models -> here

    student = candidate_scores(user_vecs, pos_vecs, neg_vecs, top_vecs) / temperature
    top = targets.top_items[users]
    with torch.no_grad():
        t_users = targets.user_factors[users]
        t_items = targets.item_factors
        teacher = (
            candidate_scores(
                t_users,
                t_items[items],
                t_items[neg_items] if neg_items is not None else None,
                t_items[top.clamp_min(0)],
            )
            * targets.scale
        )
    mask = None
    if targets.padded:
        mask = torch.zeros_like(student, dtype=torch.bool)
        mask[:, student.shape[1] - top.shape[1] :] = top < 0
    return targets.weight * distillation_kl(student, teacher, targets.temperature, mask)
