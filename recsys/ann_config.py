"""`[serving.ann]`'s typed config, apart from the index (`recsys.ann`: numpy, scipy.sparse, faiss):
`recsys.config` reads it, and reading a config must not load those (tests/test_startup.py)."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from recsys.sections import NoBoolNumbers


class AnnConfig(NoBoolNumbers):
    """`[serving.ann]`: when and how the serving artifacts get an ANN index."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True
    min_items: int = Field(
        100_000, ge=1, description="build an index when the catalogue has at least this many items (smaller "
        "catalogues are scored exactly: a matmul over them is as fast)",
    )  # fmt: skip
    connectivity: int = Field(16, ge=4, description="HNSW links per node (M)")
    expansion_add: int = Field(128, ge=8, description="HNSW ef_construction: candidates kept while building")
    expansion_search: int = Field(
        512, ge=8, description="HNSW ef_search: candidates kept per query (recall vs latency; raised to the "
        "fetch size when a request needs more). 512: the smallest ef with recall@100 >= 0.995 of exact at "
        "1M items, M = 16 (benchmarks/results/ann.md)",
    )  # fmt: skip
    max_overfetch: int = Field(
        2048, ge=0, description="a row that must skip more seen items than this is answered exactly"
    )
    recall_users: int = Field(1000, ge=0, description="users on whom recall vs exact is measured at build (logged)")
    threads: int | None = Field(None, gt=0, description="faiss threads for building and batch queries (None = all)")
    seed: int = Field(0, description="seeds the sample of users recall is measured on")
