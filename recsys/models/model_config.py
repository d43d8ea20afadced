"""`ModelConfig`, the fields every model config has, apart from `recsys.models.base` (numpy,
scipy.sparse, safetensors): every model's config subclasses it and `recsys.config` builds `RunConfig`
from them all, and reading a config must not load those (tests/test_startup.py)."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import ConfigDict, Field, model_validator

from recsys.sections import NoBoolNumbers
from recsys.tuning import TuningConfig


class ModelConfig(NoBoolNumbers):
    """Fields every model config has. Each model declares its own subclass beside its code."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    cross_check_by_default: ClassVar[bool] = False
    """Whether a search of this kind is checked out of fold when `tuning.cross_check` is unset
    (`recsys.tuning.cross_check`): off where a trial is a full training, whose cost would triple."""

    name: str
    kind: str
    seed: int = 42
    tuning: TuningConfig | None = Field(
        None, description="per-run hyper-parameter search on the validation users (recsys.tuning); None = off"
    )

    @model_validator(mode="after")
    def _tuning_space_names_fields(self) -> Self:
        space = self.tuning.space if self.tuning is not None else None
        unknown = sorted(set(space or {}) - self.tunable_names())
        if unknown:
            raise ValueError(f"tuning.space names unknown parameter(s) {unknown} of a {self.kind} model")
        return self

    def tunable_names(self) -> set[str]:
        """The parameter names a tuning space may use: the config's fields, by default (a blend adds
        one per member weight, `weights.<member>`)."""
        return set(type(self).model_fields) - {"name", "kind", "tuning"}

    def tuning_params(self) -> dict[str, Any]:
        """The config as tuning parameters (trial 0's values), keyed like `tunable_names`."""
        return self.model_dump()

    def tuning_warm_starts(self) -> list[dict[str, Any]]:
        """Parameter sets the search tries right after trial 0 (the configured one), before the
        caller's queue and TPE: none by default (a blend tries each member alone)."""
        return []

    def default_tuning_space(self) -> dict[str, Any] | None:
        """The space a `[models.tuning]` section without `space` searches, where it depends on the
        config itself (a blend's members); None = the kind's entry of `recsys.tuning.DEFAULT_SPACES`."""
        return None
