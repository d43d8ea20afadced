"""Model zoo: importing this package registers every built-in model kind."""

from recsys.models.base import ModelConfig, Recommender, build_model, model_kinds
from recsys.models.ease import EASEConfig
from recsys.models.factors import FactorModel, FactorModelConfig
from recsys.models.item_tower import ItemTowerConfig
from recsys.models.popularity import PopularityConfig
from recsys.models.two_tower import TwoTowerConfig
from recsys.models.wals import WALSConfig
from recsys.models.wals_spark import WALSSparkConfig

__all__ = [
    "ModelConfig", "Recommender", "build_model", "model_kinds", "FactorModel", "FactorModelConfig",
    "PopularityConfig", "WALSConfig", "EASEConfig", "TwoTowerConfig", "WALSSparkConfig", "ItemTowerConfig",
]
