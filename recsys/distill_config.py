"""The config side of distillation (`recsys.distill`): the `distill` section of a two-tower config
and the run-level checks on teachers, apart from the computing side (numpy, scipy.sparse, torch):
reading a config validates them, and must not load those (tests/test_startup.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from pydantic import ConfigDict, Field, model_validator

from recsys.errors import ConfigError
from recsys.sections import NoBoolNumbers

if TYPE_CHECKING:
    from recsys.models.model_config import ModelConfig

SELF = "self"
"""`distill.teacher` value for self-distillation from a saved checkpoint of a two-tower."""


class DistillConfig(NoBoolNumbers):
    """The `distill` section of a two-tower model config."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    teacher: str = Field(description='name of another model in the run, or "self" (needs checkpoint)')
    checkpoint: str | None = Field(
        None, description="a saved model directory (Recommender.save) to load the teacher from"
    )
    temperature: float = Field(2.0, gt=0, description="distillation temperature T (softens both softmaxes)")
    weight: float = Field(0.5, ge=0, description="loss = retrieval + weight * T^2 KL(teacher || student)")
    top_m: int = Field(50, ge=0, description="teacher's top-m unseen items added to every candidate set")
    teacher_scale: float | None = Field(
        None, gt=0, description="teacher logits = scale * u.v (None: 1 / teacher's or student's temperature)"
    )

    @model_validator(mode="after")
    def _self_needs_a_checkpoint(self) -> Self:
        if self.teacher == SELF and not self.checkpoint:
            raise ValueError(
                'distill.teacher = "self" needs distill.checkpoint: the saved model to distill from'
            )
        if not self.teacher:
            raise ValueError('distill.teacher is empty: name a model of the run or use "self"')
        return self


# ===================================================================== config-level helpers
def teacher_name(model_cfg: ModelConfig) -> str | None:
    """The run model this config distills from (None: no distillation, or a checkpoint teacher)."""
    distill = getattr(model_cfg, "distill", None)
    if distill is None or distill.teacher == SELF or distill.checkpoint:
        return None
    return distill.teacher


def depends_on(model_cfg: ModelConfig) -> list[str]:
    """The run models this config needs trained first: its distillation teacher, a blend's members."""
    teacher = teacher_name(model_cfg)
    return ([teacher] if teacher is not None else []) + list(getattr(model_cfg, "members", None) or [])


def check_teachers(models: list[ModelConfig]) -> None:
    """Every named teacher and blend member exists in the run and there is no cycle (a model naming
    itself is refused by its own config, `TwoTowerConfig`, `BlendConfig`)."""
    names = {m.name for m in models}
    for m in models:
        teacher = teacher_name(m)
        if teacher is not None and teacher not in names:
            raise ConfigError(
                f"model {m.name!r}: distill.teacher {teacher!r} is not a model of this run; models: {sorted(names)}"
            )
        missing = [name for name in getattr(m, "members", None) or [] if name not in names]
        if missing:
            raise ConfigError(
                f"model {m.name!r}: blend members {missing} are not models of this run; models: {sorted(names)}"
            )
    order_by_teacher(models)


def order_by_teacher(models: list[ModelConfig]) -> list[ModelConfig]:
    """The models in config order, except that every model comes after the models it needs (its
    teacher, a blend's members: stable topological order, depth first). Models that need none keep
    their positions relative to each other."""
    by_name = {m.name: m for m in models}
    placed: list[ModelConfig] = []
    done: set[str] = set()

    def place(model: ModelConfig, chain: list[str]) -> None:
        if model.name in done:
            return
        if model.name in chain:
            cycle = " -> ".join([*chain[chain.index(model.name) :], model.name])
            raise ConfigError(f"models that need each other (distillation teachers, blend members) form a cycle: {cycle}")
        for name in depends_on(model):
            if name in by_name:
                place(by_name[name], [*chain, model.name])
        placed.append(model)
        done.add(model.name)

    for model in models:
        place(model, [])
    return placed


def teacher_names(models: list[ModelConfig]) -> set[str]:
    """Names of the run's models that some other model needs (a distillation teacher, a blend
    member): they must be kept for it."""
    return {name for m in models for name in depends_on(m)}


def distillation_waves(models: list[ModelConfig]) -> list[list[ModelConfig]]:
    """The models in groups that can train at the same time: wave 0 needs no other model, wave n+1
    only models (teachers, blend members) from waves <= n. Without distillation or blends this is
    one wave: everything runs at once."""
    depth: dict[str, int] = {}
    for model in order_by_teacher(models):
        needed = [depth[name] for name in depends_on(model) if name in depth]
        depth[model.name] = 1 + max(needed) if needed else 0
    waves: list[list[ModelConfig]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for model in models:
        waves[depth[model.name]].append(model)
    return waves
