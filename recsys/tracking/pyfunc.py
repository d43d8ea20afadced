"""One servable top-k model for every model kind: vectors + vocab + seen items, no pickle.

Every model retrieves by dot product, so serving needs only the item vectors, the user vectors, the
id <-> index vocab and what each user has already seen; the saved model directory is kept beside
them for `fold_in` of users who arrive with a history. The MLflow wrapper is logged with
models-from-code (`pyfunc_entry.py` calls `mlflow.models.set_model`), so nothing is pickled and
the served code is exactly the installed `recsys`.

Request: a table with `user_id` (str), optional `k` (int; the largest k of a request is computed
once and each row is cut to its own k) and optional `history` (list of item ids); or `params={"k": n}`
for the whole request (default 10). Over REST: {"dataframe_records": [{"user_id": "u1"}], "params":
{"k": 5}} (or "dataframe_split" / "inputs" with the same columns).
Response: one row per request row with `user_id`, `item_ids`, `scores`, `source` and
`unknown_history` (the row's supplied history ids the model does not know: ignored; [] for none;
`recsys serve` writes it only on rows that have some):

* "model"      - the user was trained on: its learned vector.
* "fold_in"    - the user has no learned vector but a history (the `history` column and/or, for a
                 known user without training rows such as a strong-generalisation held-out user,
                 its stored history): the model's `fold_in` vector.
* "popularity" - nothing is known about the user: the most popular items.

Seen items (everything the model or the user was seen with, except test) and the supplied history
are never recommended, nor are items the model never trained on (no training interaction: their
vectors are zero or untrained, so they would only be ranked by accident); the evaluator masks the
same items (`recsys.evaluation.cold`), for every source. Scores use the shared `recsys.evaluation.ranking.topk`, so for the same
users and exclusions the served lists equal the evaluator's, item for item, ties included. A
supplied history's list order is its time order, after the user's stored history, which is read in its
event times as the evaluator reads it (a sequence user tower reads the order).

Large catalogues: when the model was logged with an ANN index (`recsys.ann`, built when the
catalogue has at least `serving.ann.min_items` items), model and fold-in users are answered by it,
over-fetching past their seen items so lists stay full; popularity and the evaluator stay exact.

Similar items: rows with `item_id` (and optional `k`) instead of `user_id` get, per item, `item_id`,
`item_ids`, `scores` (cosine of the model's item vectors, `recsys.similar`; a blend's members'
cosines weighted, `Blend.similarity_vectors`; never the item itself)
and source "similar". Over REST: {"dataframe_records": [{"item_id": "i1", "k": 5}]}, or `recsys
serve`'s /similar.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import polars as pl
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from recsys.evaluation.ranking import PAD_ITEM, item_major, reported_scores, topk
from recsys.tracking.store import no_artifact_progress_bars

if TYPE_CHECKING:
    from recsys.ann import AnnConfig, AnnIndex
    from recsys.data.split import Split
    from recsys.models.base import Recommender

DEFAULT_K = 10
ENTRY_SCRIPT = Path(__file__).with_name("pyfunc_entry.py")
ARTIFACT_KEY = "serving"
SOURCES = ("model", "fold_in", "popularity")

_VECTORS = "vectors.safetensors"  # layout before the factors were stored once: still read
_SERVING = "serving.safetensors"  # user_has_vector and popularity (the factors live in model/)
_USERS = "users.parquet"
_ITEMS = "items.parquet"
_SEEN = "seen.npz"
_SEEN_TIMES = "seen_times.npz"  # event times of the seen pairs, for models that read order (`reads_order`)
_MODEL_DIR = "model"
_META = "serving.json"


# --------------------------------------------------------------------------------------------------
# Writing


def seen_matrix(split: Split) -> sp.csr_matrix:
    """Everything the model or the user was seen with at training/evaluation time, test excluded:
    train + validation + fold-in histories. This is what serving masks."""
    parts = [split.train, split.validation, split.fold_in, split.validation_fold_in]
    total = sum(
        (sp.csr_matrix(m) for m in parts if m is not None), sp.csr_matrix(split.train.shape, dtype=np.float32)
    )
    total = sp.csr_matrix(total, dtype=np.float32)
    total.sum_duplicates()
    total.eliminate_zeros()
    return total


def seen_times(times: sp.spmatrix, seen: sp.csr_matrix) -> sp.csr_matrix:
    """The split's event times (`Split.times`) of the seen pairs: the order in which the evaluator
    folds a stored history in (a strong-generalisation held-out user's fold-in rows)."""
    pattern = sp.csr_matrix(seen, dtype=np.float64, copy=True)
    pattern.data[:] = 1.0
    out = sp.csr_matrix(sp.csr_matrix(times, dtype=np.float64).multiply(pattern))
    out.eliminate_zeros()
    return out


def write_serving_artifacts(
    model: Recommender, split: Split, directory: str | Path, ann: AnnConfig | None = None
) -> Path:
    """Write what `ServingIndex` needs into `directory` (created; must not hold other files); with
    `ann` and a catalogue of at least `ann.min_items`, also the ANN index (`recsys.ann`) with its
    recall against exact search measured on a sample of the users with a learned vector."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    train = sp.csr_matrix(split.train)
    has_vector = (np.diff(train.indptr) > 0).astype(np.uint8)
    from recsys.models.popularity import break_ties

    # Ties by the raw id, as the popularity model's (`break_ties`): an unknown user's list must not
    # depend on the order the log was read in; an untrained item's 0 stays 0 (see `ServingIndex`).
    counts = np.bincount(train.indices, minlength=train.shape[1]).astype(np.float32)
    popularity = break_ties(counts, split.item_ids)
    # The factors are stored once, in the saved model (model/factors.safetensors); only what
    # serving adds to them is written here. `popularity` ranks the fallback's items, the counts
    # are the scores it reports (`reported_scores`).
    save_file({"user_has_vector": has_vector, "popularity": popularity, "popularity_counts": counts},
              str(out / _SERVING))  # fmt: skip
    user_ids = _ids(split.user_ids, split.n_users)
    item_ids = _ids(split.item_ids, split.n_items)
    pl.DataFrame({"user_id": user_ids, "user_idx": np.arange(len(user_ids), dtype=np.int32)}).write_parquet(
        out / _USERS
    )
    pl.DataFrame({"item_id": item_ids, "item_idx": np.arange(len(item_ids), dtype=np.int32)}).write_parquet(
        out / _ITEMS
    )
    seen = seen_matrix(split)
    sp.save_npz(out / _SEEN, seen, compressed=True)
    if split.times is not None and model.reads_order:
        sp.save_npz(out / _SEEN_TIMES, seen_times(split.times, seen), compressed=True)
    model.save(out / _MODEL_DIR, lock=False)  # a private tree, logged whole: no lock file in it
    if ann is not None:
        from recsys.ann import build_for_serving

        learned = np.flatnonzero(has_vector[: model.user_factors.shape[0]])
        index = build_for_serving(model.item_factors, model.user_factors[learned], ann)
        if index is not None:
            index.save(out)
    meta = {
        "model": model.config.name,
        "kind": model.kind,
        "fingerprint": str(split.meta.get("fingerprint", "")),
    }
    (out / _META).write_text(json.dumps(meta, indent=2))
    return out


def _ids(ids: np.ndarray, n: int) -> list[str]:
    """Raw ids as strings; a split without a vocab (synthetic tests) uses the index itself."""
    if ids is None or len(ids) == 0:
        return [str(i) for i in range(n)]
    if len(ids) != n:
        raise ValueError(f"vocab has {len(ids)} ids but the matrices have {n} rows/columns")
    return pl.Series(np.asarray(ids)).cast(pl.String).to_list()


def signature():
    """Explicit input/output schema: user_id (or item_id), optional k and history -> lists of ids
    and scores (and `unknown_history` for top-k rows); `params.k` for the whole request. MLflow
    checks only the inputs against it (and `params`); the outputs document the answer.

    `k` and `history` are declared `Any`: MLflow enforces the schema before `predict` runs (in
    `mlflow models serve` too), and its typed conversions got them wrong. A `long` k column failed
    with a pandas cast error when only some rows carried k (NaN), truncated 2.5 to 2 without a word
    and turned 1e30 into -2**63; a `double` one refuses an integer k (MLflow casts int64 to
    float64 only up to 6-byte integers), the input example's included. An `Array(string)` history
    refused integer item ids (MovieLens) and rows without a history. `parse_request` checks both
    (k an integer from 1 to the number of items, history a list of ids), so every request is
    either answered or refused with one line (400). `user_id` and `item_id` are `Any` for the same
    reason: as `string`, MLflow's REST parser turned a JSON integer into its text, but the loaded
    pyfunc refused a pandas integer column before `predict` ran (`mlflow.pyfunc.load_model(...)
    .predict(pd.DataFrame({"user_id": [2]}))` on Last.fm or MovieLens ids: "Can not safely convert
    int64 to <U0"); `parse_request` reads an integer (or integral float) id as the text the vocab
    holds and refuses any other type with one line."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec(AnyType(), "user_id", required=False),
            ColSpec(AnyType(), "k", required=False),
            ColSpec(AnyType(), "history", required=False),
            ColSpec(AnyType(), "item_id", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("string", "user_id", required=False),
            ColSpec("string", "item_id", required=False),
            ColSpec(Array("string"), "item_ids"),
            ColSpec(Array("double"), "scores"),
            ColSpec("string", "source"),
            ColSpec(Array("string"), "unknown_history", required=False),
        ]
    )
    params = ParamSchema([ParamSpec("k", "long", DEFAULT_K)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


RUNTIME_PACKAGES = (
    "mlflow",
    "numpy",
    "pandas",
    "polars",
    "pyarrow",
    "scipy",
    "safetensors",
    "torch",
    "implicit",
    "faiss-cpu",
)


def runtime_requirements() -> list[str]:
    """Pinned versions of what the served model imports. Given explicitly because MLflow's
    inference of requirements loads the model in a subprocess (~10 s per logged model). `recsys`
    itself is not on an index: serve with `--env-manager local` from an environment that has it.
    A local version label is dropped (`torch==2.13.0+cpu` -> `torch==2.13.0`), as MLflow's own
    inference does: no public index serves `+cpu`, so `--env-manager virtualenv` could not install
    the environment at all."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in RUNTIME_PACKAGES:
        try:
            pins.append(f"{name}=={version(name).split('+', 1)[0]}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def save_pyfunc(
    model: Recommender, split: Split, path: str | Path, *, staging: str | Path, ann: AnnConfig | None = None
) -> Path:
    """Save the MLflow pyfunc (models-from-code) for `model` at `path` (must not exist).

    `staging` is a scratch directory for the serving artifacts before MLflow copies them in; `ann`
    adds an ANN index for large catalogues (`write_serving_artifacts`)."""

    serving_dir = write_serving_artifacts(model, split, Path(staging) / ARTIFACT_KEY, ann)
    _save(path, serving_dir, input_example(serving_dir), model)  # no type-hint warning: see TopKRecommender
    return Path(path)


NEW_USER_EXAMPLE = "new-user"


def input_example(serving_dir: Path) -> pd.DataFrame:
    """The example the MLflow UI shows beside the signature (and `serving_input_example.json`): a
    known user with a k, and a user the model never saw with a history (folded in). The signature
    declares k and history `Any` (see `signature`), so the example is where the UI shows their form."""
    users = pl.read_parquet(serving_dir / _USERS).get_column("user_id")
    items = pl.read_parquet(serving_dir / _ITEMS).get_column("item_id")
    k = min(DEFAULT_K, len(items))
    rows = [{"user_id": u, "k": k, "history": None} for u in users.head(1).to_list()]
    if not (users == NEW_USER_EXAMPLE).any():
        rows.append({"user_id": NEW_USER_EXAMPLE, "k": k, "history": items.head(2).to_list()})
    return pd.DataFrame(rows)


def _save(path: str | Path, serving_dir: Path, example: pd.DataFrame, model: Recommender) -> None:
    import mlflow.pyfunc

    # Checking the input example loads the model back: a download bar and an INFO line per model,
    # between a run's log lines.
    no_artifact_progress_bars()
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=str(ENTRY_SCRIPT),
        artifacts={ARTIFACT_KEY: str(serving_dir)},
        signature=signature(),
        input_example=example,
        metadata={"recsys_model": model.config.name, "recsys_kind": model.kind},
        pip_requirements=runtime_requirements(),
    )


# --------------------------------------------------------------------------------------------------
# Serving


class ServingIndex:
    """Top-k for raw user ids from the serving artifacts; the pyfunc is a thin shell around it."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._model: Recommender | None = None
        # Scores reported in place of the ranked ones (`reported_scores`): the saved model's own
        # (popularity: its counts without the tie-break's steps) and the fallback's counts.
        # Artifacts logged before them report the ranked scores.
        self.model_item_scores: np.ndarray | None = None
        if (self.directory / _VECTORS).is_file():  # logged before the factors were stored once
            tensors = load_file(str(self.directory / _VECTORS))
        else:
            tensors = load_file(str(self.directory / _SERVING))
            tensors["user_vectors"], tensors["item_vectors"], self.model_item_scores = self._factors()
        self.popularity_counts: np.ndarray | None = tensors.get("popularity_counts")
        self.item_vectors = np.ascontiguousarray(tensors["item_vectors"], dtype=np.float32)
        self.user_vectors = np.ascontiguousarray(tensors["user_vectors"], dtype=np.float32)
        self.user_has_vector = tensors["user_has_vector"].astype(bool)
        self.popularity = tensors["popularity"]
        # popularity is each item's training count, so 0 = an item the model never trained on: what
        # the evaluator masks out of every ranking (recsys.evaluation.cold); artifacts of any age have it.
        untrained = self.popularity <= 0
        self.untrained_items: np.ndarray | None = untrained if untrained.any() else None
        self.users = pl.read_parquet(self.directory / _USERS)
        self.items = pl.read_parquet(self.directory / _ITEMS)
        self.item_ids = self.items.sort("item_idx").get_column("item_id").to_numpy()
        self._user_vocab = _vocab(self.users, "user_id", "user_idx")
        self._item_vocab = _vocab(self.items, "item_id", "item_idx")
        self._item_matrix: Any = None
        self.seen = sp.load_npz(self.directory / _SEEN).tocsr()
        times = self.directory / _SEEN_TIMES
        self.seen_times: sp.csr_matrix | None = sp.load_npz(times).tocsr() if times.is_file() else None
        from recsys.ann import AnnIndex

        self.ann: AnnIndex | None = AnnIndex.load(self.directory, self.item_vectors)
        self.use_ann = self.ann is not None  # False: exact search, as for small catalogues
        self._similar: Any = None
        self._own: bool | None = None  # `_own_similarity`, read on the first similar-items request

    def _factors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(user, item) factors of the saved model and its `exact_item_scores` (None for most
        kinds): read from its factors file, or computed by the model itself when it stores none (a
        two-tower keeps its towers only)."""
        stored = self.directory / _MODEL_DIR / "factors.safetensors"
        if stored.is_file():
            factors = load_file(str(stored))
            return factors["user_factors"], factors["item_factors"], factors.get("item_scores")
        return self.model.user_factors, self.model.item_factors, self.model.exact_item_scores

    @property
    def n_items(self) -> int:
        return int(self.item_vectors.shape[0])

    @property
    def item_matrix(self) -> Any:
        """The item vectors prepared once for exact top-k (`item_major`: no copy of the catalogue
        per request), shared with the ANN index's exact fallback; made on the first exact request."""
        if self.ann is not None:
            return self.ann.item_matrix
        if self._item_matrix is None:
            self._item_matrix = item_major(self.item_vectors)
        return self._item_matrix

    @property
    def model(self) -> Recommender:
        """The saved model, loaded on first fold-in only (known users never need it)."""
        if self._model is None:
            from recsys.models.base import Recommender

            self._model = Recommender.load(self.directory / _MODEL_DIR)
        return self._model

    def user_indices(self, user_ids: list[str]) -> np.ndarray:
        """Vocab index per requested id, -1 for ids the vocab does not know (order kept)."""
        return _positions(self._user_vocab, user_ids)

    def history_matrix(self, histories: list[Any] | None, n_rows: int, positions: bool = False) -> sp.csr_matrix:
        """Supplied histories (lists of item ids, None allowed) as an n_rows x n_items 0/1 CSR;
        item ids the vocab does not know are ignored. `positions`: each item's position in its list
        (1-based; a repeated item keeps its last) instead of 1: the list order as times."""
        if histories is None:
            return sp.csr_matrix((n_rows, self.n_items), dtype=np.float32)
        lists = [
            [] if h is None or (isinstance(h, float) and np.isnan(h)) else [_id_text(x) for x in h]
            for h in histories
        ]
        frame = pl.DataFrame(
            {"_row": np.arange(n_rows), "item_id": pl.Series(lists, dtype=pl.List(pl.String))}
        )
        exploded = frame.explode("item_id").with_columns(pl.int_range(1, pl.len() + 1).over("_row").alias("_pos"))
        exploded = exploded.drop_nulls("item_id")
        found = _positions(self._item_vocab, exploded.get_column("item_id").to_list())
        pairs = exploded.filter(pl.Series(found >= 0)).with_columns(item_idx=pl.Series(found[found >= 0]))
        if positions:
            pairs = pairs.group_by("_row", "item_idx").agg(pl.col("_pos").max())
        rows = pairs.get_column("_row").to_numpy().astype(np.int64)
        cols = pairs.get_column("item_idx").to_numpy().astype(np.int64)
        values = pairs.get_column("_pos").to_numpy().astype(np.float64) if positions else np.ones(len(rows))
        matrix = sp.csr_matrix((values, (rows, cols)), shape=(n_rows, self.n_items))
        if not positions:
            matrix = sp.csr_matrix(matrix, dtype=np.float32)
            matrix.data[:] = 1.0  # duplicates summed -> back to 0/1
        return matrix

    def recommend(
        self, user_ids: list[str], ks: np.ndarray | int = DEFAULT_K, histories: list[Any] | None = None
    ) -> pd.DataFrame:
        """Top-k per requested user (see the module docstring for sources and exclusions).

        Returns a pandas DataFrame with user_id, item_ids (list[str]), scores (list[float]), source.
        """
        return pd.DataFrame(self.recommend_columns(user_ids, ks, histories))

    def recommend_columns(
        self,
        user_ids: list[str],
        ks: np.ndarray | int = DEFAULT_K,
        histories: list[Any] | None = None,
        name_unknown: bool = False,
    ) -> dict[str, list[Any]]:
        """`recommend` as plain columns (lists): what `recsys serve` writes as JSON, without building
        a DataFrame per request. `name_unknown`: add `unknown_history`, each row's supplied history
        ids the catalogue does not know (ignored, so a history of those only gets popularity)."""
        n = len(user_ids)
        ks = np.broadcast_to(np.asarray(ks, dtype=np.int64), (n,))
        if n and int(ks.min()) <= 0:
            raise ValueError("k must be a positive integer")
        k_max = int(ks.max()) if n else DEFAULT_K
        idx = self.user_indices(user_ids)
        known = idx >= 0
        safe_idx = np.where(known, idx, 0)
        exclude = self.seen[safe_idx]  # a new matrix: its data may be overwritten
        if not known.all():
            exclude = sp.diags(known.astype(np.float32)) @ exclude
        if histories is not None:
            exclude = exclude + self.history_matrix(histories, n)
        exclude = sp.csr_matrix(exclude)
        exclude.eliminate_zeros()
        exclude.data[:] = 1.0
        has_vector = known & self.user_has_vector[safe_idx]
        has_history = np.diff(exclude.indptr) > 0
        fold = ~has_vector & has_history
        source = np.where(has_vector, "model", np.where(fold, "fold_in", "popularity"))

        items = np.full((n, min(k_max, self.n_items)), PAD_ITEM, dtype=np.int64)
        scores = np.full(items.shape, -np.inf, dtype=np.float32)
        for name, rows, vectors, item_vectors in self._groups(idx, has_vector, fold, exclude, histories):
            if not rows.size:
                continue
            if name != "popularity" and self.ann is not None and self.use_ann:
                found, ranked = self.ann.topk(vectors, k_max, exclude[rows], self.untrained_items)
            else:
                found, ranked = topk(
                    vectors, item_vectors, k_max, exclude=exclude[rows], device="cpu", masked_items=self.untrained_items
                )
            report = self.popularity_counts if name == "popularity" else self.model_item_scores
            items[rows], scores[rows] = found, reported_scores(found, ranked, report)
        columns = _response_columns(user_ids, items, scores, ks, self.item_ids, source)
        if name_unknown:
            columns["unknown_history"] = self.unknown_history(histories, n)
        return columns

    def unknown_history(self, histories: list[Any] | None, n_rows: int) -> list[list[str]]:
        """Per row, the supplied history's item ids the catalogue does not know, in request order
        without repeats: `history_matrix` ignores them, and a user whose history held only such ids
        was answered from popularity with nothing to say why."""
        if histories is None:
            return [[] for _ in range(n_rows)]
        rows = [
            [] if h is None or (isinstance(h, float) and np.isnan(h)) else list(dict.fromkeys(_id_text(x) for x in h))
            for h in histories
        ]
        flat = [x for row in rows for x in row]
        found = iter(_positions(self._item_vocab, flat) >= 0)
        return [[x for x in row if not next(found)] for row in rows]

    def item_indices(self, item_ids: list[str]) -> np.ndarray:
        """Catalogue index per requested item id, -1 for ids the catalogue does not know."""
        return _positions(self._item_vocab, item_ids)

    def similar(self, item_ids: list[str], ks: np.ndarray | int = DEFAULT_K) -> pd.DataFrame:
        """Top-k items by cosine of the model's item vectors for each requested item, never the item
        itself (`recsys.similar`); a blend's weighs its members' cosines (`Blend.similarity_vectors`).
        An id the catalogue does not know is an UnknownItem."""
        from recsys.similar import similar_items, unit_rows

        n = len(item_ids)
        ks = np.broadcast_to(np.asarray(ks, dtype=np.int64), (n,))
        idx = self.item_indices(item_ids)
        unknown = np.flatnonzero(idx < 0)
        if unknown.size:
            raise UnknownItem(f"item_id {item_ids[unknown[0]]!r} (row {unknown[0]}) is not in the model's catalogue"[:200])
        untrained = np.flatnonzero(self.untrained_items[idx]) if self.untrained_items is not None else idx[:0]
        if untrained.size:  # its vector is zero or its random start: any list would be made up
            raise UnknownItem(
                f"item_id {item_ids[untrained[0]]!r} (row {untrained[0]}) has no training interactions: the model "
                "learned nothing about it, so it has no similar items (a run whose training data has it will)"[:300]
            )
        if self.item_vectors.shape[1] < 2:  # popularity: one number per item, every cosine is 1
            raise BadRequest(
                f"this model's item vectors have {self.item_vectors.shape[1]} dimension, so every item is "
                "equally similar to every other: serve a factor model (wals, ease, two_tower) for similar items"
            )
        if self._own is None:
            self._own = self._own_similarity()
        own = self._own
        ann = self.ann if self.use_ann and not own else None  # the index holds the item vectors, not a blend's
        if self._similar is None:
            # item-major for exact search, as `item_matrix`: topk otherwise copied the whole unit
            # matrix per request (275 MB and ~1.2 s on an 8k-item blend holding EASE's 8k-wide columns)
            unit = self.model.similarity_vectors() if own else unit_rows(self.item_vectors)
            self._similar = unit if ann is not None and ann.cosine else item_major(unit)
        k_max = int(ks.max()) if n else DEFAULT_K
        items, scores = similar_items(
            self.item_vectors, idx, k_max, ann=ann, unit=self._similar, masked_items=self.untrained_items
        )  # never an item without training data: its untrained vector (a tower's random start) matched by accident
        columns = _response_columns(item_ids, items, scores, ks, self.item_ids, np.full(n, "similar"))
        return pd.DataFrame({"item_id" if name == "user_id" else name: values for name, values in columns.items()})

    def _own_similarity(self) -> bool:
        """Whether the saved model's kind defines its own item-to-item similarity
        (`Recommender.own_similarity`: a blend weighs its members' cosines), read from its config
        without loading it: the others answer from the item vectors alone."""
        from recsys.models.base import model_kinds

        try:
            kind = json.loads((self.directory / _MODEL_DIR / "config.json").read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            return False  # an unreadable model fails where it is loaded, with its own message
        model_cls = model_kinds().get(kind)
        return bool(model_cls is not None and model_cls.own_similarity)

    def _groups(self, idx: np.ndarray, has_vector: np.ndarray, fold: np.ndarray, exclude: sp.csr_matrix,
                histories: list[Any] | None):  # fmt: skip
        """(source, rows, user vectors, item vectors) for each of the three sources."""
        model_rows = np.flatnonzero(has_vector)
        yield "model", model_rows, self.user_vectors[idx[model_rows]], self.item_matrix
        fold_rows = np.flatnonzero(fold)
        if fold_rows.size:
            # A stored history in its event times (the evaluator's order), then a supplied history
            # in its list order: what a sequence user tower reads; other models ignore it.
            order = self._fold_in_times(idx[fold_rows], self.history_matrix(histories, len(idx), positions=True)[fold_rows])
            yield (
                "fold_in",
                fold_rows,
                np.asarray(self.model.fold_in_ordered(exclude[fold_rows], order), np.float32),
                self.item_matrix,
            )
        pop_rows = np.flatnonzero(~has_vector & ~fold)
        yield "popularity", pop_rows, np.ones((pop_rows.size, 1), np.float32), self.popularity[:, None]


    def _fold_in_times(self, idx: np.ndarray, supplied: sp.csr_matrix) -> sp.csr_matrix:
        """Times of fold-in rows: a known user's stored pairs at their event times (`seen_times`;
        artifacts without it, or of a model that reads no order, have none: time 0, before every
        other), each supplied item at its list position after the latest stored time (the newest)."""
        if self.seen_times is None:
            return supplied
        known = idx >= 0
        stored = sp.csr_matrix(sp.diags(known.astype(np.float64)) @ self.seen_times[np.where(known, idx, 0)])
        latest = stored.max(axis=1).toarray().ravel()
        supplied = sp.csr_matrix(supplied, dtype=np.float64, copy=True)
        supplied.data += np.repeat(latest, np.diff(supplied.indptr))
        return sp.csr_matrix(stored.maximum(supplied))


def _vocab(table: pl.DataFrame, id_column: str, index_column: str) -> pd.Index:
    """The ids of a vocab table in index order, as a hashed pandas Index (built once at load)."""
    vocab = pd.Index(table.sort(index_column).get_column(id_column).to_pandas())
    if len(vocab):
        vocab.get_loc(vocab[0])  # builds the hash table now, not on the first request
    return vocab


def _positions(vocab: pd.Index, ids: list[str]) -> np.ndarray:
    """Position of each id in `vocab`, -1 for ids it does not hold. Hash lookups: a request costs
    microseconds per id whatever the vocab's size (the join against the vocab table it replaces
    scanned the table on every request). A few ids are looked up one by one (~5 us each), many at
    once (get_indexer has ~0.5 ms of fixed cost)."""
    if len(ids) > 64:
        return vocab.get_indexer(pd.Index(ids, dtype=vocab.dtype)).astype(np.int64)
    out = np.full(len(ids), -1, dtype=np.int64)
    for i, key in enumerate(ids):
        try:
            out[i] = vocab.get_loc(key)
        except KeyError:
            continue
    return out


def _response_columns(user_ids, items, scores, ks, item_ids, source) -> dict[str, list[Any]]:
    """Cut each row to its own k and drop padding (users with fewer rankable items than k)."""
    keep = (np.arange(items.shape[1])[None, :] < ks[:, None]) & (items != PAD_ITEM)
    lengths = keep.sum(axis=1)
    flat_ids = item_ids[items[keep]].tolist()
    flat_scores = scores[keep].astype(np.float64).tolist()
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    return {
        "user_id": [str(u) for u in user_ids],
        "item_ids": [flat_ids[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
        "scores": [flat_scores[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
        "source": source.tolist(),
    }


class BadRequest(ValueError):
    """A request that cannot be answered as sent (one line, safe to show to the caller)."""


class UnknownItem(BadRequest):
    """A well-formed request naming an item the catalogue does not have: the HTTP server answers
    404 (the resource does not exist), not 400 (the request is malformed), so a client can tell a
    stale id from a broken request, and a schema-valid request is never called malformed."""


def check_k(k: Any, n_items: int, where: str = "k") -> int:
    """k must be an integer from 1 to the number of items; anything else is a BadRequest
    (k = 0 never silently becomes the default)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        if isinstance(k, float | np.floating) and float(k).is_integer():
            k = int(k)
        else:
            raise BadRequest(f"{where} must be an integer from 1 to {n_items} (the number of items), got {k!r}")
    if not 1 <= int(k) <= n_items:
        raise BadRequest(f"{where} must be from 1 to {n_items} (the number of items), got {int(k)}")
    return int(k)


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def _columns_frame(columns: dict[str, Any], key: str = "user_id") -> pd.DataFrame:
    """A dict of columns ({"user_id": [...], "k": 10, "history": [[...], ...]}) as rows; a scalar
    user_id (or `key`) is one row, a scalar k applies to every row."""
    return pd.DataFrame(_broadcast_columns(columns, key))


def _broadcast_columns(columns: dict[str, Any], key: str) -> dict[str, list[Any]]:
    """`_columns_frame`'s columns as lists of one value per row."""
    columns = dict(columns)
    user_ids = columns.get(key)
    if user_ids is None:
        raise BadRequest(f"request needs a {key!r} column")
    if not _is_list(user_ids):
        user_ids = [user_ids]
        if "history" in columns and columns["history"] is not None:
            columns["history"] = [columns["history"]]
    n = len(user_ids)
    columns[key] = list(user_ids)
    if "k" in columns and not _is_list(columns["k"]):
        columns["k"] = [columns["k"]] * n
    for name, values in columns.items():
        if not _is_list(values):
            raise BadRequest(f"column {name!r} must have one value per {key} ({n})")
        if len(values) != n:
            # MLflow's `instances` form turns records into columns and drops the records that lack a
            # key, so which rows carried it is lost: refuse rather than guess.
            raise BadRequest(
                f"column {name!r} must have one value per {key} ({n}), got {len(values)} (MLflow's "
                f"\"instances\" form: give {name} in every record or in none)"
            )
    return {name: list(values) for name, values in columns.items()}


def asks_similar(model_input: Any) -> bool:
    """True for the similar-items form of a request: rows with `item_id` and no `user_id`."""
    if isinstance(model_input, pd.DataFrame):
        return "item_id" in model_input.columns and "user_id" not in model_input.columns
    if isinstance(model_input, dict):
        return "item_id" in model_input and "user_id" not in model_input
    if isinstance(model_input, list) and model_input:
        return all(isinstance(r, dict) and "item_id" in r and "user_id" not in r for r in model_input)
    return False


def _request_columns(model_input: Any, key: str) -> dict[Any, list[Any]]:
    """A DataFrame, a dict of columns or a list of records as columns (one list per column, one
    value per row, None where a record lacks the column) with a `key` column. Plain lists, not a
    DataFrame: building one per request cost more than the top-k of a small catalogue."""
    if isinstance(model_input, pd.DataFrame):
        frame = model_input
        if len(frame) == 1 and key in frame.columns and _is_list(frame[key].iloc[0]):
            columns = _broadcast_columns(frame.iloc[0].to_dict(), key)
        else:
            columns = {name: frame[name].tolist() for name in frame.columns}
    elif isinstance(model_input, dict):
        columns = _broadcast_columns(model_input, key)
    elif isinstance(model_input, list):
        if not all(isinstance(row, dict) for row in model_input):
            raise BadRequest(f"records must be JSON objects such as {{\"{key}\": \"x1\"}}")
        names = dict.fromkeys(name for row in model_input for name in row)
        columns = {name: [row.get(name) for row in model_input] for name in names}
    else:
        raise BadRequest(f"unsupported request type {type(model_input).__name__}; send user_id (+ k, history) or item_id (+ k)")
    if key not in columns:
        raise BadRequest(f"request needs a {key!r} column; got {[str(c) for c in columns][:10]}")
    return columns


def _ids_and_ks(columns: dict[Any, list[Any]], key: str, default_k: int, limit: int) -> tuple[list[str], np.ndarray]:
    ids = columns[key]
    bad = next((i for i, u in enumerate(ids) if u is None or _is_list(u) or isinstance(u, dict | bool)
                or (isinstance(u, float | np.floating) and not float(u).is_integer())), None)  # NaN too
    if bad is not None:
        raise BadRequest(f"{key} of row {bad} must be a string or an integer, got {ids[bad]!r}"[:200])
    if "k" in columns:
        raw = [default_k if k is None or (isinstance(k, float) and np.isnan(k)) else k for k in columns["k"]]
    else:
        raw = [default_k] * len(ids)
    ks = np.asarray([check_k(k, limit, f"k of row {i}") for i, k in enumerate(raw)], dtype=np.int64)
    return [_id_text(u) for u in ids], ks


def _id_text(value: Any) -> str:
    """An id as the vocab spells it. An integer id that travelled as a float (a JSON 1.0, a pandas
    column with a gap) is that integer: str(1.0) is "1.0", an id no vocab holds, and the user got
    popularity (or the history item was ignored) without a word."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def parse_similar(model_input: Any, default_k: int, n_items: int) -> tuple[list[str], np.ndarray]:
    """(item ids, k per row) of a similar-items request; k is at most n_items - 1 (the item itself
    is never among its neighbours)."""
    columns = _request_columns(model_input, "item_id")
    extra = sorted(set(map(str, columns)) - {"item_id", "k"})
    if extra:
        raise BadRequest(f"a similar-items request has columns item_id and k only; got {extra[:5]}")
    return _ids_and_ks(columns, "item_id", default_k, max(1, n_items - 1))


def parse_request(
    model_input: Any, default_k: int = DEFAULT_K, n_items: int | None = None
) -> tuple[list[str], np.ndarray, list[Any] | None]:
    """Accept a DataFrame, a dict of columns ({"user_id": [...], "k": 10}) or a list of records;
    return (user ids, k per row, histories or None). Raises BadRequest with a one-line reason.

    Through `mlflow.pyfunc` the request is a DataFrame; MLflow turns {"inputs": {"user_id": [a, b]}}
    into one row whose cell holds the list, which is read back as one row per id. k for the whole
    request goes in `params={"k": n}` (`default_k`) or in a per-row `k` column. With `n_items`,
    every k must lie in 1..n_items."""
    columns = _request_columns(model_input, "user_id")
    limit = n_items if n_items is not None else np.iinfo(np.int64).max
    user_ids, ks = _ids_and_ks(columns, "user_id", default_k, limit)
    histories = columns.get("history")
    if histories is not None:
        for i, h in enumerate(histories):
            if h is None or (isinstance(h, float) and np.isnan(h)):
                continue
            if not _is_list(h):
                raise BadRequest(f"history of row {i} must be a list of item ids")
            # A list, a boolean, a null or a fraction is no item id: read as its text ("['i3']",
            # "True") it matched nothing, and the user got popularity as if its ids were unknown.
            bad = next((x for x in h if not _is_id(x)), _NO_BAD)
            if bad is not _NO_BAD:
                raise BadRequest(f"history of row {i} must hold item ids (strings or integers), got {bad!r}"[:200])
    return user_ids, ks, histories


_NO_BAD = object()


def _is_id(value: Any) -> bool:
    """A string or an integer (an integral float too: JSON 7.0 is 7), as `recsys serve` accepts."""
    if isinstance(value, str | np.str_):
        return True
    if isinstance(value, bool | np.bool_):
        return False
    return isinstance(value, int | np.integer) or (isinstance(value, float | np.floating) and float(value).is_integer())


def _python_model_base():
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


class TopKRecommender(_python_model_base()):
    """The MLflow pyfunc: loads a `ServingIndex` from the logged artifacts and answers requests."""

    # MLflow warns, when a PythonModel subclass is defined, that `predict` has no type hints (the
    # explicit `signature()` does that job), under its own "once" filter that no caller's filter
    # overrides: defined at import, the class printed two lines with MLflow's path into every
    # `recsys run`, `recsys serve` and `mlflow models serve`. This is MLflow's own opt-out (read
    # in PythonModel.__init_subclass__); without type hints its wrapper of predict is a pass-through.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.index = ServingIndex(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            return answer(self.index, model_input, params)
        except BadRequest as exc:
            from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


def answer(index: ServingIndex, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """Parse and answer one request (the pyfunc's predict and `recsys serve` share it). Rows with
    `item_id` instead of `user_id` ask for similar items (`ServingIndex.similar`).

    Top-k rows carry `unknown_history` (the supplied history ids the model does not know, [] for
    none) in every row: a DataFrame has one set of columns, and `mlflow models serve` writes each
    of them into each JSON row. Without it a client of MLflow's server got popularity for a history
    of unknown ids only with nothing to say why, where `recsys serve` named them."""
    answered = _answer(index, model_input, params)
    return answered if isinstance(answered, pd.DataFrame) else pd.DataFrame(answered)


def answer_records(index: ServingIndex, model_input: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`answer` as one dict per row (`recsys serve`'s JSON), without a DataFrame for top-k rows."""
    answered = _answer(index, model_input, params)
    if isinstance(answered, pd.DataFrame):
        return answered.to_dict("records")
    records = [dict(zip(answered, row, strict=True)) for row in zip(*answered.values(), strict=True)]
    for record in records:  # only where a history held ids the model does not know: rows stay as they were
        if not record.get("unknown_history", True):
            del record["unknown_history"]
    return records


def _answer(index: ServingIndex, model_input: Any, params: dict[str, Any] | None) -> pd.DataFrame | dict[str, list[Any]]:
    k = (params or {}).get("k")
    if asks_similar(model_input):
        limit = max(1, index.n_items - 1)
        default_k = min(DEFAULT_K, limit) if k is None else check_k(k, limit, "params.k")
        item_ids, ks = parse_similar(model_input, default_k, index.n_items)
        return index.similar(item_ids, ks)
    default_k = min(DEFAULT_K, index.n_items) if k is None else check_k(k, index.n_items, "params.k")
    user_ids, ks, histories = parse_request(model_input, default_k, index.n_items)
    return index.recommend_columns(user_ids, ks, histories, name_unknown=True)  # both endpoints name them
