"""The `wals_spark` model's typed config, apart from the model: `recsys/models/wals_spark.py` imports
`recsys.models.wals`, and with it implicit, which commands that only read a config should not load
(see `recsys/models/two_tower_config.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsys.models.model_config import ModelConfig


class WALSSparkConfig(ModelConfig):
    kind: Literal["wals_spark"] = "wals_spark"
    factors: int = Field(64, gt=0, description="Spark ALS rank")
    regularization: float = Field(
        0.05,
        ge=0,
        description="Spark regParam; Spark multiplies it by each row's rating count (ALS-WR), so it is NOT "
        "comparable with wals.regularization",
    )
    alpha: float = Field(10.0, gt=0, description="confidence scale: c = 1 + alpha * f(w), as in wals")
    confidence: Literal["linear", "log"] = "linear"
    eps: float = Field(1.0, gt=0, description="log scaling: c = 1 + alpha * log(1 + w / eps)")
    binarize: bool = Field(False, description="treat every interaction as weight 1 before scaling")
    iterations: int = Field(15, gt=0, description="Spark maxIter")
    master: str = Field(
        "local[2]", description='Spark master URL: "local[N]", "spark://host:7077", "yarn", ...'
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict, description="extra Spark settings, e.g. executor memory"
    )
    driver_memory: str | None = Field(
        None, description='spark.driver.memory, e.g. "4g" (only applies at JVM start)'
    )
    checkpoint_interval: int = Field(
        10, ge=-1, description="Spark checkpointInterval; needs checkpoint_dir (-1 = never)"
    )
    checkpoint_dir: str | None = Field(
        None, description="Spark checkpoint directory (shared storage on a cluster)"
    )
    num_user_blocks: int | None = Field(
        None, gt=0, description="Spark numUserBlocks (None = Spark's default, 10)"
    )
    num_item_blocks: int | None = Field(
        None, gt=0, description="Spark numItemBlocks (None = Spark's default, 10)"
    )
