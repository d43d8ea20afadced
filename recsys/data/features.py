"""Side features for the two-tower model, aligned to the vocab indices of a split.

Each feature is one column of one kind, because the kind decides the encoder the tower builds:

- ``categorical``: one int code per row (0 = unknown) -> an embedding table;
- ``multi_hot``: a dense 0/1 row per entity over a small vocabulary (e.g. the 19 ML-100K genres)
  -> a bias-free linear layer on the row-normalised bag (the mean of the tag embeddings, what an
  ``EmbeddingBag(mode="mean")`` computes, but on a dense matrix, which is cheaper for small vocabs);
- ``numeric``: one float per row, standardised with the mean/std seen at load time, missing -> 0
  (the mean) -> a linear layer.

Rows are aligned to the vocab index arrays a split carries (``Split.user_ids`` / ``item_ids``), so
row ``i`` of a user feature belongs to user index ``i``; ids absent from the feature file get the
unknown code / an empty bag / the mean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from recsys.errors import DataError

FeatureKind = Literal["categorical", "multi_hot", "numeric"]
UNKNOWN = "<unk>"


@dataclass(frozen=True)
class FeatureColumn:
    """One feature of one entity type.

    values: categorical -> (n,) int64 codes into ``vocabulary`` (0 = unknown);
            multi_hot   -> (n, len(vocabulary)) float32 0/1 (column 0, unknown, is never set);
            numeric     -> (n,) float32 standardised values (missing = 0).
    vocabulary: the tokens of the codes (index 0 is ``<unk>``); empty for numeric.
    mean/std: the raw statistics used to standardise a numeric column (kept so new rows can be
              encoded the same way).
    """

    name: str
    kind: FeatureKind
    values: np.ndarray
    vocabulary: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0

    @property
    def cardinality(self) -> int:
        return len(self.vocabulary)

    def spec(self) -> dict[str, Any]:
        """Everything but the values: what a tower needs to rebuild its encoder (saved as JSON)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "vocabulary": list(self.vocabulary),
            "mean": self.mean,
            "std": self.std,
        }


@dataclass(frozen=True)
class FeatureSet:
    """User and item features, each aligned to the vocab indices (row i = index i)."""

    user: dict[str, FeatureColumn] = field(default_factory=dict)
    item: dict[str, FeatureColumn] = field(default_factory=dict)

    def check(self, n_users: int, n_items: int) -> None:
        """Raise DataError if any column is not aligned to the model's index space."""
        for side, columns, n in (("user", self.user, n_users), ("item", self.item, n_items)):
            for col in columns.values():
                if col.values.shape[0] != n:
                    raise DataError(
                        f"{side} feature {col.name!r} has {col.values.shape[0]} rows but there are {n} {side}s; "
                        "features must be aligned to the split's vocab"
                    )

    def specs(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "user": [c.spec() for c in self.user.values()],
            "item": [c.spec() for c in self.item.values()],
        }

    def tensors(self) -> dict[str, np.ndarray]:
        """Values keyed ``user.<name>`` / ``item.<name>`` (safetensors-ready)."""
        out = {f"user.{k}": np.ascontiguousarray(c.values) for k, c in self.user.items()}
        out.update({f"item.{k}": np.ascontiguousarray(c.values) for k, c in self.item.items()})
        return out

    @classmethod
    def from_saved(cls, specs: dict[str, list[dict[str, Any]]], tensors: dict[str, np.ndarray]) -> FeatureSet:
        """Inverse of ``specs()`` + ``tensors()``."""

        def build(side: str) -> dict[str, FeatureColumn]:
            return {
                s["name"]: FeatureColumn(
                    name=s["name"],
                    kind=s["kind"],
                    values=tensors[f"{side}.{s['name']}"],
                    vocabulary=tuple(s["vocabulary"]),
                    mean=float(s["mean"]),
                    std=float(s["std"]),
                )
                for s in specs.get(side, [])
            }

        return cls(user=build("user"), item=build("item"))

    def to_json(self) -> str:
        return json.dumps(self.specs())


# ----------------------------------------------------------------- encoders from raw columns
def _align(keys: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each vocab id, the row in the feature table holding it: (rows, found mask)."""
    keys = np.asarray(keys).astype(str)
    ids = np.asarray(ids).astype(str)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    pos = np.searchsorted(sorted_keys, ids)
    pos_clipped = np.minimum(pos, max(len(keys) - 1, 0))
    found = (pos < len(keys)) & (sorted_keys[pos_clipped] == ids) if len(keys) else np.zeros(len(ids), bool)
    return order[pos_clipped], found


def categorical_column(name: str, keys: np.ndarray, raw: np.ndarray, ids: np.ndarray) -> FeatureColumn:
    """Codes for ``raw`` (one token per key row), aligned to ``ids``; missing/empty -> 0 (unknown)."""
    tokens = np.asarray(raw).astype(str)
    present = (tokens != "") & (tokens != "None")
    vocab = np.unique(tokens[present])
    codes = np.searchsorted(vocab, tokens) + 1
    codes[~present] = 0
    rows, found = _align(keys, ids)
    aligned = np.where(found, codes[rows] if len(codes) else 0, 0).astype(np.int64)
    return FeatureColumn(name, "categorical", aligned, (UNKNOWN, *vocab.tolist()))


def multi_hot_column(name: str, keys: np.ndarray, raw: np.ndarray, ids: np.ndarray) -> FeatureColumn:
    """A 0/1 matrix of whitespace-separated token bags (``raw[i]`` = bag of key row i), aligned to ``ids``."""
    bags = pl.Series(np.asarray(raw).astype(str)).str.split(" ")
    lengths = bags.list.len().to_numpy().astype(np.int64)
    flat = bags.explode().to_numpy().astype(str)
    keep = flat != ""
    owners = np.repeat(np.arange(len(lengths)), lengths)[keep]
    flat = flat[keep]
    vocab = np.unique(flat)
    table = np.zeros((len(lengths), len(vocab) + 1), dtype=np.float32)
    table[owners, np.searchsorted(vocab, flat) + 1] = 1.0
    rows, found = _align(keys, ids)
    aligned = np.zeros((len(ids), table.shape[1]), dtype=np.float32)
    if len(lengths):
        aligned[found] = table[rows[found]]
    return FeatureColumn(name, "multi_hot", aligned, (UNKNOWN, *vocab.tolist()))


def numeric_column(name: str, keys: np.ndarray, raw: np.ndarray, ids: np.ndarray) -> FeatureColumn:
    """Standardised floats aligned to ``ids``; missing or unparsable -> 0 (the mean)."""
    values = np.asarray(raw, dtype=np.float64)
    finite = np.isfinite(values)
    mean = float(values[finite].mean()) if finite.any() else 0.0
    std = float(values[finite].std()) if finite.sum() > 1 else 1.0
    std = std if std > 0 else 1.0
    standard = np.where(finite, (values - mean) / std, 0.0)
    rows, found = _align(keys, ids)
    aligned = np.where(found, standard[rows] if len(values) else 0.0, 0.0).astype(np.float32)
    return FeatureColumn(name, "numeric", aligned, (), mean, std)


# ----------------------------------------------------------------- RecBole (ML-100K) loader
def _read_atomic(path: Path) -> pl.DataFrame:
    """A RecBole atomic file with its `name:type` header reduced to bare names, all as strings."""
    if not path.is_file():
        raise DataError(f"{path}: feature file not found")
    try:
        frame = pl.read_csv(path, separator="\t", infer_schema=False, quote_char=None)
        frame = frame.with_columns(pl.all().fill_null(""))
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{path}: cannot read as a tab-separated RecBole atomic file: {exc}") from None
    return frame.rename({c: c.split(":", 1)[0] for c in frame.columns})


def _require(frame: pl.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {frame.columns}")


def _to_float(values: pl.Series) -> np.ndarray:
    return values.cast(pl.Float64, strict=False).to_numpy().astype(np.float64)


def load_recbole_features(
    item_file: str | Path | None,
    user_file: str | Path | None,
    item_ids: np.ndarray,
    user_ids: np.ndarray,
) -> FeatureSet:
    """ML-100K side features aligned to the given vocab id arrays.

    Items (``ml-100k.item``): ``genres`` multi-hot from ``class:token_seq`` and ``release_year``
    numeric. Users (``ml-100k.user``): ``age`` numeric, ``gender`` and ``occupation`` categorical.
    Either file may be None (that side gets no features). Ids missing from a file get the unknown
    code, an empty bag or the mean."""
    item: dict[str, FeatureColumn] = {}
    user: dict[str, FeatureColumn] = {}
    if item_file is not None:
        path = Path(item_file)
        frame = _read_atomic(path)
        _require(frame, path, ["item_id", "class", "release_year"])
        keys = frame["item_id"].to_numpy()
        item["genres"] = multi_hot_column("genres", keys, frame["class"].to_numpy(), item_ids)
        item["release_year"] = numeric_column(
            "release_year", keys, _to_float(frame["release_year"]), item_ids
        )
    if user_file is not None:
        path = Path(user_file)
        frame = _read_atomic(path)
        _require(frame, path, ["user_id", "age", "gender", "occupation"])
        keys = frame["user_id"].to_numpy()
        user["age"] = numeric_column("age", keys, _to_float(frame["age"]), user_ids)
        user["gender"] = categorical_column("gender", keys, frame["gender"].to_numpy(), user_ids)
        user["occupation"] = categorical_column("occupation", keys, frame["occupation"].to_numpy(), user_ids)
    return FeatureSet(user=user, item=item)
