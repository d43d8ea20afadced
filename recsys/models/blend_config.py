"""The `blend` model's typed config, apart from the model (numpy, scipy.sparse): reading a config must
not load them (see `recsys/models/wals_config.py`, tests/test_startup.py)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from recsys.models.model_config import ModelConfig

WEIGHT_PREFIX = "weights."
"""A member's weight as one tuning parameter: `weights.<member>` (quoted in TOML: `"weights.ease"`)."""


class BlendConfig(ModelConfig):
    """A weighted sum of other models of the same run (`recsys.models.blend`)."""

    cross_check_by_default: ClassVar[bool] = True
    """A blend's trials only re-weigh fitted members (seconds), and its weights overfit: on ML-100K's
    ~100 validation users, weights searched on one half scored below equal weights on the other
    (recsys.tuning.cross_check)."""

    kind: Literal["blend"] = "blend"
    members: list[str] = Field(
        min_length=2,
        description="names of other models of this run to blend (trained before the blend, in an earlier wave)",
    )
    weights: dict[str, float] | None = Field(
        None,
        description="member name -> weight >= 0 of its scale-normalised score; members not named (or None) weigh 1",
    )
    scale_users: int = Field(
        512, gt=0, description="training users (seeded sample) whose scores set each member's scale"
    )
    max_memory_gb: float = Field(
        8.0,
        gt=0,
        description="skip the blend when its concatenated user + item vectors (4 bytes x (users + items) x the "
        "members' widths together; with EASE n_items wide) need more than this many GB",
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_weights(cls, data: Any) -> Any:
        """Fold tuning parameters `weights.<member> = w` into `weights` (how a trial sets them)."""
        if not isinstance(data, dict) or not any(str(k).startswith(WEIGHT_PREFIX) for k in data):
            return data
        data = dict(data)
        weights = dict(data.get("weights") or {})
        for key in [k for k in data if str(k).startswith(WEIGHT_PREFIX)]:
            weights[key.removeprefix(WEIGHT_PREFIX)] = data.pop(key)
        data["weights"] = weights
        return data

    @model_validator(mode="after")
    def _members_and_weights(self) -> Self:
        repeated = sorted({m for m in self.members if self.members.count(m) > 1})
        if repeated:
            raise ValueError(f"blend members must be distinct; repeated: {repeated}")
        if self.name in self.members:
            raise ValueError(f"blend {self.name!r} names itself as a member")
        unknown = sorted(set(self.weights or {}) - set(self.members))
        if unknown:
            raise ValueError(f"weights name {unknown}, which are not members {self.members}")
        if any(not math.isfinite(w) or w < 0 for w in (self.weights or {}).values()):
            raise ValueError("blend weights must be finite and >= 0")
        if not any(w > 0 for w in self.member_weights().values()):
            raise ValueError("at least one blend weight must be > 0")
        return self

    def restricted_to(self, names: list[str]) -> BlendConfig:
        """This config blending only `names` (the members that trained in this run), their weights and
        tuning space kept: what a run trains, searches and logs when a member was skipped or failed."""
        if names == self.members:
            return self
        data = self.model_dump()
        data["members"] = [m for m in self.members if m in names]
        data["weights"] = {m: w for m, w in (self.weights or {}).items() if m in names} or None
        if self.tuning is not None and self.tuning.space is not None:
            gone = {f"{WEIGHT_PREFIX}{m}" for m in self.members if m not in names}
            data["tuning"]["space"] = {k: v for k, v in data["tuning"]["space"].items() if k not in gone}
        return type(self).model_validate(data)

    def member_weights(self) -> dict[str, float]:
        """Every member's weight, in member order (1 where `weights` does not name it)."""
        return {m: float((self.weights or {}).get(m, 1.0)) for m in self.members}

    def tuning_params(self) -> dict[str, Any]:
        return {**super().tuning_params(), **{f"{WEIGHT_PREFIX}{m}": w for m, w in self.member_weights().items()}}

    def tunable_names(self) -> set[str]:
        return super().tunable_names() | {f"{WEIGHT_PREFIX}{m}" for m in self.members}

    def tuning_warm_starts(self) -> list[dict[str, Any]]:
        """Each member alone (weight 1, the others 0), tried after the configured weights: so a
        tuned blend never scores below its best member on the validation users (the corners of the
        weight cube are where TPE's draws rarely land)."""
        return [{f"{WEIGHT_PREFIX}{m}": float(m == alone) for m in self.members} for alone in self.members]

    def default_tuning_space(self) -> dict[str, Any]:
        """Every member's weight in [0, 1]. Scores are ranked per user, so only ratios matter and one
        dimension is redundant; fixing one member at 1 would remove it but only let the others reach
        at most its weight (or, widened, make config order matter). All in [0, 1] reaches every ratio
        and 0 (drop a member), at the cost of one extra TPE dimension, cheap for 2-4 members."""
        from recsys.tuning import ParamRange

        return {f"{WEIGHT_PREFIX}{m}": ParamRange(low=0.0, high=1.0) for m in self.members}
