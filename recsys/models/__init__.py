"""Model zoo: one model per module, its typed config beside it.

Importing this package is cheap: its names load on first access (PEP 562), so reading a config
(`recsys.config`, which needs every model's config) does not load torch or implicit. A model whose
module loads a heavy backend keeps its config in a torch-free `<model>_config.py` (two_tower,
item_tower, wals, wals_spark); its model module imports it back, so either import path works.
`load_builtin_kinds()` imports every model module, which registers its kind (`model_kinds()`,
`Recommender.load` call it).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "recsys.models.base",
    "Recommender": "recsys.models.base",
    "build_model": "recsys.models.base",
    "model_kinds": "recsys.models.base",
    "FactorModel": "recsys.models.factors",
    "FactorModelConfig": "recsys.models.factors",
    "PopularityConfig": "recsys.models.popularity",
    "WALSConfig": "recsys.models.wals_config",
    "EASEConfig": "recsys.models.ease",
    "TwoTowerConfig": "recsys.models.two_tower_config",
    "WALSSparkConfig": "recsys.models.wals_spark_config",
    "ItemTowerConfig": "recsys.models.item_tower_config",
    "BlendConfig": "recsys.models.blend_config",
}
__all__ = [*_EXPORTS, "load_builtin_kinds"]


def load_builtin_kinds() -> None:
    """Import every built-in model module: defining a `Recommender` subclass registers its kind."""
    from recsys.models import blend, ease, factors, item_tower, popularity, two_tower, wals, wals_spark  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recsys.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
