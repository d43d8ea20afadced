"""The one protocol every model follows (after implicit's RecommenderBase).

Data contract: `fit` takes a users x items CSR (float32; the raw signal, e.g. counts or ratings
after implicit conversion); retrieval is always a dot product between `user_factors` (or
`fold_in(histories)` for users unseen at training time) and `item_factors`, so one evaluator, one
pyfunc and one folding diagnostic serve every model. Persistence is JSON + safetensors, never pickle.

Subclasses implement `_fit`, the two factor properties and `fold_in`; the public `fit` does the
bookkeeping (input checks, seeding, timing, history) so no subclass can forget it.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import random
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from recsys import interrupt
from recsys.data.split import EvalSet
from recsys.errors import ModelError, RecsysError, RecsysWarning, first_line
from recsys.faults import fault_point
from recsys.models.model_config import ModelConfig  # noqa: F401 - re-exported: every model config's base

FitCallback = Callable[[int, dict[str, float]], bool | None]
"""Called after every epoch/iteration with (step, metrics). Returning True stops training early."""

FORMAT_VERSION = 1
_REGISTRY: dict[str, type[Recommender]] = {}


def as_user_item_csr(matrix: sp.spmatrix, n_items: int | None = None) -> sp.csr_matrix:
    """Coerce to the data contract (CSR, float32, sorted, no explicit zeros) or say why not."""
    if not sp.issparse(matrix):
        raise TypeError(f"expected a scipy.sparse users x items matrix, got {type(matrix).__name__}")
    csr = sp.csr_matrix(matrix, dtype=np.float32, copy=True)  # never mutate the caller's matrix
    csr.eliminate_zeros()
    csr.sort_indices()
    if n_items is not None and csr.shape[1] != n_items:
        raise ValueError(
            f"matrix has {csr.shape[1]} columns but the model knows {n_items} items; "
            "matrices must be users x items over the same item vocab"
        )
    return csr


_GLOBAL_RNG = threading.RLock()
_FITS = itertools.count(1)  # `Recommender.fit_token`: unique per fit in this process


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so the same config and data give the same metrics. Holds the
    global-generator lock, so it never reseeds a generator another model is drawing from (see
    `seeded_global_torch_rng`)."""
    with _GLOBAL_RNG:
        random.seed(seed)
        np.random.seed(seed % (2**32))
        try:
            import torch

            torch.manual_seed(seed)
        except ImportError:  # pragma: no cover - torch is a hard dependency
            pass


@contextmanager
def seeded_global_torch_rng(seed: int) -> Iterator[None]:
    """Draws from torch's *global* generator (module initialisers such as `nn.init.normal_` and
    `nn.Linear` take no generator) made private and reproducible: under a process-wide lock, from
    a copy of the CPU generator seeded with `seed`, restored afterwards.

    Why: the pipeline trains models concurrently in threads; without this, two models' weight
    initialisations interleave on the one global generator and the same config gives different
    metrics from run to run (recsys run vs recsys train gave 0.5145 vs 0.4973 recall@20)."""
    import torch

    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class PrivateTorchRng:
    """A training's own stream of torch's *global* generator, for draws that take no generator
    (dropout, `F.scaled_dot_product_attention`'s dropout): `active()` swaps it in under the
    global-generator lock and swaps the process's state back after. It starts where
    `torch.manual_seed(seed)` puts the generator, the state a fit alone in its process draws from.

    Why: concurrent fits share the one global generator, and each fit starts by reseeding it
    (`seed_everything`): a sequence tower's dropout masks changed with whatever model started
    beside it, and `recsys run` gave other metrics than `recsys evaluate --train` (recall@10 0.3389
    vs 0.3610 on one synthetic log)."""

    def __init__(self, seed: int, device: Any = None) -> None:
        import torch

        self.device = torch.device(device) if device is not None else torch.device("cpu")
        cuda = [self.device] if self.device.type == "cuda" else []
        with _GLOBAL_RNG, torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            self.state = torch.get_rng_state()
            self.cuda_state = torch.cuda.get_rng_state(self.device) if cuda else None

    @contextmanager
    def active(self) -> Iterator[None]:
        import torch

        with _GLOBAL_RNG:
            saved = torch.get_rng_state()
            saved_cuda = torch.cuda.get_rng_state(self.device) if self.cuda_state is not None else None
            torch.set_rng_state(self.state)
            if self.cuda_state is not None:
                torch.cuda.set_rng_state(self.cuda_state, self.device)
            try:
                yield
            finally:
                self.state = torch.get_rng_state()
                torch.set_rng_state(saved)
                if saved_cuda is not None:
                    self.cuda_state = torch.cuda.get_rng_state(self.device)
                    torch.cuda.set_rng_state(saved_cuda, self.device)


class Recommender(ABC):
    """Base class: `fit(train) -> self`, `recommend(users, k, exclude) -> (items, scores)`."""

    kind: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    zero_vectors_diverged: ClassVar[bool] = True
    """Whether a trained user or item with an all-zero vector means training went wrong for it
    (`_check_vectors` warns): true of learned vectors. EASE's are not learned: an item that
    co-occurs with no other item has a zero column of B by construction."""
    single_solve: ClassVar[bool] = False
    """Whether `fit` is one computation that calls its callback once, after it has finished (EASE,
    popularity): asking it to stop there stops nothing, so the tuning guard keeps such a trial."""
    own_similarity: ClassVar[bool] = False
    """Whether the model's item-to-item similarity is not the plain cosine of its item vectors
    (`similarity_vectors` is overridden: a blend weighs its members'): serving then loads the model
    for /similar instead of reading the item vectors alone."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register a class that names its own `kind` (what `load` reads back from a saved model).
        A subclass that inherits its parent's kind (a test double, a user's tweak of a model) is not
        registered: registered, it replaced the parent for that kind in the whole process, so every
        later load of a saved model of that kind built the subclass instead (a suite's serving test
        loaded a factors model as another test's order-reading double)."""
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            _REGISTRY[cls.kind] = cls

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        if config is None:
            overrides.setdefault("name", self.kind)
            overrides.setdefault("kind", self.kind)
            config = self.Config(**overrides)
        elif overrides:
            config = config.model_copy(update=overrides)
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config
        self.n_users: int = 0
        self.n_items: int = 0
        self.fit_seconds: float = float("nan")
        self.fit_token = 0  # a new number per fit (and per load): what caches of a fitted model's results are keyed by
        self.resumed_from: dict[str, Any] | None = None  # training resumed: epoch, step, checkpoint
        # what it was fitted on (`recsys train`: the split's digest and data fingerprint), saved with it
        # so `recsys evaluate` can refuse a test set that overlaps its training data
        self.trained_on: dict[str, Any] | None = None
        self.history: list[dict[str, float]] = []  # one entry per epoch/iteration, with "step"
        self.is_fitted = False
        self.train_times: sp.csr_matrix | None = None  # `fit(times=...)`, while `_fit` runs
        self.train_item_ids: np.ndarray | None = None  # `fit(item_ids=...)`, while `_fit` runs

    # ----------------------------------------------------------------- training
    def fit(
        self,
        train: sp.spmatrix,
        *,
        validation: EvalSet | None = None,
        callback: FitCallback | None = None,
        features: Any = None,
        times: sp.spmatrix | None = None,
        item_ids: np.ndarray | None = None,
    ) -> Self:
        """Fit on a users x items CSR. `validation` enables early stopping where the model has it;
        `callback(step, metrics)` sees every epoch/iteration (MLflow logging hooks in here);
        `features` is side information for models that use it (ignored otherwise); `times` the
        interactions' event times (a users x items matrix of seconds, e.g. `Split.times`) for models
        that read order (a sequence user tower; ignored otherwise, readable as `self.train_times`
        during `_fit`); `item_ids` the raw id of each item index (`Split.item_ids`), for a model
        whose scores tie (popularity breaks ties by them: an item's index depends on the order
        its log was read in; readable as `self.train_item_ids` during `_fit`)."""
        train = as_user_item_csr(train)
        if train.nnz == 0:
            raise ValueError("training matrix has no interactions")
        if times is not None and times.shape[0] < train.shape[0]:
            raise ValueError(f"times has {times.shape[0]} rows but the training matrix {train.shape[0]}")
        self.check_data(*train.shape)  # before any allocation: EASE's memory bounds
        self.n_users, self.n_items = train.shape
        self.history = []
        self.resumed_from = None
        self.config = self.data_aware_config(train)
        seed_everything(self.config.seed)
        self.fit_token = next(_FITS)
        start = time.perf_counter()
        # Fitted from the first step on, so validation during training can rank with the model.
        self.is_fitted = True
        self.train_times = None if times is None else sp.csr_matrix(times)[: train.shape[0]]
        self.train_item_ids = item_ids if item_ids is not None and len(item_ids) == train.shape[1] else None
        try:
            self._fit(train, validation=validation, callback=self._recording(callback), features=features)
            self._check_vectors(train)
        except BaseException:
            self.is_fitted = False
            raise
        finally:
            self.train_times = None
            self.train_item_ids = None
        self.fit_seconds = time.perf_counter() - start
        return self

    def _check_vectors(self, train: sp.csr_matrix) -> None:
        """Refuse a model whose training diverged, and warn when it did for some users or items.
        Its loss may stay finite while its vectors are useless: a two-tower with a huge lr grows
        embeddings whose squared norm overflows float32, so L2 normalisation turns them into 0,
        every score ties, and the model 'recommended' (and was tuned, chosen and promoted) with
        arbitrary lists. Any NaN or infinite vector is refused (how many, named): one such user or
        item is enough to make scores meaningless. Every trained vector zero is refused; some of
        them zero (the overflow hit only the users or items with the largest norms) is a
        `RecsysWarning` naming how many, since the rest of the model may still serve. Only rows with
        training data count for "zero" (the others keep their random start). min / max / any are
        reductions without a full temporary, so EASE's dense user rows cost one pass and no memory;
        the count of non-finite rows is only taken on the failing path."""
        trained = {"user": np.diff(train.indptr) > 0,
                   "item": np.bincount(train.indices, minlength=train.shape[1]) > 0}  # fmt: skip
        epochs = f" after {len(self.history)} epoch(s)" if self.history else ""
        fix = "lower the learning rate (lr) or raise the regularisation"
        partly: list[str] = []  # warned once both sides passed: a refused model gets no warning first
        for side, vectors in (("item", self.item_factors), ("user", self.user_factors)):
            vectors = np.asarray(vectors)
            if vectors.size == 0:
                continue
            if not (np.isfinite(vectors.max()) and np.isfinite(vectors.min())):
                bad = _count_rows(vectors, lambda block: ~np.isfinite(block).all(axis=1))
                problem = f"{bad} of {len(vectors)} {side} vectors hold NaN or infinite values, so their scores mean nothing"
            elif len(vectors) == len(trained[side]):
                zero = trained[side] & ~vectors.any(axis=1)
                n_zero, n_trained = int(zero.sum()), int(trained[side].sum())
                if n_zero == 0 or n_trained == 0:
                    continue
                if n_zero < n_trained:
                    partly += [f"{n_zero} of {n_trained} trained {side} vectors are zero"] if self.zero_vectors_diverged else []
                    continue
                problem = f"every trained {side} vector is zero, so every score ties"
            else:
                continue
            raise ModelError(f"model {self.config.name!r}: training diverged{epochs}: {problem}; {fix}")
        if partly:
            warnings.warn(
                f"model {self.config.name!r}: {' and '.join(partly)}{epochs} (training diverged for them: "
                f"every score of theirs ties, their lists are arbitrary); {fix}",
                RecsysWarning, stacklevel=3,
            )  # fmt: skip

    def check_data(self, n_users: int, n_items: int) -> None:
        """Raise `recsys.errors.ModelSkipped` where this model cannot run on a users x items
        matrix of this shape whatever its parameters (EASE's memory bounds). `fit` calls it first,
        and a run calls it before any work (`pipelines.train.skip_reason`) to skip the model.
        Every shape by default."""

    def data_aware_config(self, train: sp.csr_matrix) -> ModelConfig:
        """The config with every data-aware default ("auto" / None fields) resolved on `train`:
        what `fit` trains with and saves, so a saved model names the values it used. Models
        without such defaults return their config unchanged."""
        return self.config

    def _recording(self, callback: FitCallback | None) -> FitCallback:
        """Wrap the user's callback so every step also lands in `self.history`."""

        def record(step: int, metrics: dict[str, float]) -> bool | None:
            self.history.append({"step": float(step), **{k: float(v) for k, v in metrics.items()}})
            stop = callback(step, metrics) if callback is not None else None
            fault_point("train.epoch")
            interrupt.check()  # Ctrl-C also stops a model training in a worker thread
            return stop

        return record

    @abstractmethod
    def _fit(self, train: sp.csr_matrix, *, validation: EvalSet | None, callback: FitCallback, features: Any) -> None:
        """Model-specific training. Must call `callback(step, metrics)` after each epoch/iteration
        and stop when it returns True."""

    # ----------------------------------------------------------------- vectors
    @property
    @abstractmethod
    def user_factors(self) -> np.ndarray:
        """(n_users, d) float32 user vectors for users seen in training."""

    @property
    @abstractmethod
    def item_factors(self) -> np.ndarray:
        """(n_items, d) float32 item vectors; scores are user_vector @ item_factors.T."""

    @abstractmethod
    def fold_in(self, histories: sp.spmatrix) -> np.ndarray:
        """(n, d) float32 vectors for users given only their interaction rows (n x n_items CSR),
        without changing the model: how users unseen at training time are served."""

    def fold_in_ordered(self, histories: sp.spmatrix, times: sp.spmatrix | None = None) -> np.ndarray:
        """`fold_in`, for models that read order (a sequence user tower) also given the histories'
        event times (`times`: rows aligned with `histories`; None = unknown). Others ignore times."""
        return self.fold_in(histories)

    def similarity_vectors(self) -> np.ndarray:
        """(n_items, d) float32 vectors whose dot products are this model's item-to-item similarity
        (`recsys.similar`, /similar): the unit item vectors, so the score is their cosine (a zero
        vector stays zero: similarity 0 with every item)."""
        from recsys.similar import unit_rows

        return unit_rows(np.asarray(self.item_factors, dtype=np.float32))

    @property
    def reads_order(self) -> bool:
        """Whether `fold_in_ordered` reads the times (a sequence user tower): serving then keeps the
        stored histories' event times, so it folds them in as the evaluator does."""
        return False

    def user_vectors(self, eval_set: EvalSet, users: np.ndarray) -> np.ndarray:
        """The vectors the evaluator scores: fold-in histories when the protocol has them."""
        self._check_fitted()
        if eval_set.fold_in is not None:
            times = None if eval_set.times is None else sp.csr_matrix(eval_set.times)[users]
            return self.fold_in_ordered(eval_set.fold_in[users], times)
        return self.user_factors[users]

    # ----------------------------------------------------------------- retrieval
    def recommend(
        self,
        user_indices: np.ndarray | list[int],
        k: int = 10,
        exclude: sp.spmatrix | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores for known users, best first. `exclude` is a users x items
        CSR (all users, indexed by user index) whose items are never recommended to that user."""
        from recsys.evaluation.ranking import reported_scores, topk

        self._check_fitted()
        users = np.asarray(user_indices, dtype=np.int64)
        mask = None if exclude is None else as_user_item_csr(exclude, self.n_items)[users]
        items, scores = topk(self.user_factors[users], self.item_factors, k, exclude=mask)
        return items, reported_scores(items, scores, self.exact_item_scores)

    @property
    def exact_item_scores(self) -> np.ndarray | None:
        """(n_items,) float32 score of each item to report in place of the ranked dot product, for
        a model whose every user vector is [1] and whose item vectors are those scores nudged
        apart to order ties (popularity: `break_ties`); None (every other model): report the dot
        product. Ranking never reads it, so lists are unchanged; `recommend` and serving report it."""
        return None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} '{self.config.name}' is not fitted; call fit() or load()")

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, *, lock: bool = True) -> Path:
        """Write config.json + factors.safetensors (+ model extras) atomically into `path`.

        One writer at a time: with `lock`, a `filelock` file beside it (`.<name>.lock`) serialises
        saves, since two `recsys train --models DIR` of one model once collided in the swap (an
        OSError, 'Directory not empty', and a staging copy left behind on every collision). A
        staging copy a killed save left (`.<name>.saving-*`) is removed by the next save. `lock=False`
        for a directory private to the caller (the pyfunc's artifact tree, which is logged whole)."""
        import shutil
        import uuid
        from contextlib import nullcontext

        from filelock import FileLock

        from recsys.data.storage import lock_file

        self._check_fitted()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = f".{target.name}.saving-"
        with FileLock(str(lock_file(target))) if lock else nullcontext():
            _finish_swap(target)  # before the leftovers go: a swap a kill cut short holds both models
            for left in target.parent.glob(f"{glob.escape(staging)}*"):  # a killed save's copy
                shutil.rmtree(left, ignore_errors=True)
            tmp = target.parent / f"{staging}{uuid.uuid4().hex[:8]}"
            tmp.mkdir()  # not mkdtemp: its mode 0700 made every saved model private to its writer
            aside = target.parent / f"{staging}old-{uuid.uuid4().hex[:8]}"
            try:
                self._write(tmp)
                # The old model is moved aside whole, and deleted once the new one is in place: it was
                # deleted in place first, so a kill during that left a half-deleted model directory
                # (any file gone, others there) where `load` reads it.
                if target.exists():
                    os.replace(target, aside)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.rmtree(aside, ignore_errors=True)
        return target

    def _write(self, directory: Path) -> None:
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "config": self.config.model_dump(mode="json"),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "fit_seconds": self.fit_seconds,
            "history": self.history,
            "resumed_from": self.resumed_from,
            "trained_on": self.trained_on,
        }
        (directory / "config.json").write_text(json.dumps(meta, indent=2))
        tensors = self._factor_tensors()
        if tensors:
            save_file(tensors, str(directory / "factors.safetensors"))
        self._save_extra(directory)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recommender:
        """Load any saved model; `Recommender.load` dispatches on the saved kind."""
        from recsys.models import load_builtin_kinds

        load_builtin_kinds()
        source = Path(path)
        if not source.exists():
            _finish_interrupted_save(source)
        try:
            meta = json.loads((source / "config.json").read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelError(f"cannot read the saved model ({source / 'config.json'}: {first_line(exc)}): "
                             "retrain it (recsys train)") from None
        model_cls = _REGISTRY.get(meta.get("kind")) if isinstance(meta, dict) else None
        if model_cls is None:
            kind = meta.get("kind") if isinstance(meta, dict) else None
            raise ModelError(f"{source}: unknown model kind {kind!r}; known: {sorted(_REGISTRY)}")
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise TypeError(f"{source} holds a {meta['kind']} model, not a {cls.kind}")
        try:
            model = model_cls(model_cls.Config(**meta["config"]))
            model.n_users, model.n_items = meta["n_users"], meta["n_items"]
            model.fit_seconds = meta.get("fit_seconds", float("nan"))
            model.history = meta.get("history", [])
            model.resumed_from = meta.get("resumed_from")
            model.trained_on = meta.get("trained_on")
            factors = source / "factors.safetensors"
            model._load_factors(load_file(str(factors)) if factors.is_file() else {})
            model.fit_token = next(_FITS)  # a loaded model is a fit of its own: caches keyed by it never mix two
            model._load_extra(source)
        except RecsysError:
            raise
        except Exception as exc:  # truncated safetensors, missing keys, shapes that do not fit
            raise ModelError(f"saved model is damaged ({source}: {type(exc).__name__}: {first_line(exc)}): "
                             "retrain it (recsys train)") from None
        model.is_fitted = True
        return model

    def _factor_tensors(self) -> dict[str, np.ndarray]:
        """What `save` writes to factors.safetensors (nothing: the file is left out). A model whose
        factors follow from state `_save_extra` keeps (a two-tower's towers) need not store them."""
        return {
            "user_factors": np.ascontiguousarray(self.user_factors, dtype=np.float32),
            "item_factors": np.ascontiguousarray(self.item_factors, dtype=np.float32),
        }

    @abstractmethod
    def _load_factors(self, tensors: dict[str, np.ndarray]) -> None:
        """Restore state from the saved `user_factors` / `item_factors`."""

    def _save_extra(self, directory: Path) -> None:
        """Hook for state beyond the two factor matrices (e.g. tower weights as safetensors)."""

    def _load_extra(self, directory: Path) -> None:
        """Counterpart of `_save_extra`."""


def model_kinds() -> dict[str, type[Recommender]]:
    """Every registered model kind (the built-in ones are imported, which registers them)."""
    from recsys.models import load_builtin_kinds

    load_builtin_kinds()
    return dict(_REGISTRY)


def build_model(config: ModelConfig) -> Recommender:
    """Instantiate the model class for `config.kind`."""
    kinds = model_kinds()
    if config.kind not in kinds:
        raise ValueError(f"unknown model kind {config.kind!r}; known: {sorted(kinds)}")
    return kinds[config.kind](config)


class HostVectors(Recommender):
    """A model whose user and item vectors are two host arrays, `_users` and `_items`, filled by
    `_fit` or `load`: the two protocol properties every such model would otherwise repeat."""

    _users: np.ndarray | None = None
    _items: np.ndarray | None = None

    @property
    def user_factors(self) -> np.ndarray:
        self._check_fitted()
        assert self._users is not None
        return self._users

    @property
    def item_factors(self) -> np.ndarray:
        self._check_fitted()
        assert self._items is not None
        return self._items


def _count_rows(matrix: np.ndarray, test: Callable[[np.ndarray], np.ndarray], chunk: int = 65_536) -> int:
    """How many rows `test` (block -> one bool per row) holds for, a block of rows at a time, so a
    dense (users x items) matrix never gets a full-size temporary."""
    return sum(int(test(matrix[start : start + chunk]).sum()) for start in range(0, len(matrix), chunk))


def _finish_interrupted_save(target: Path) -> None:
    """For a reader finding no model at `target`: finish a save a kill cut short between its
    renames (`_finish_swap`), under the save's lock; nothing when the lock cannot be had here (a
    read-only copy has no writer to have been killed)."""
    from filelock import FileLock

    from recsys.data.storage import lock_file

    if not any(target.parent.glob(f"{glob.escape(f'.{target.name}.saving-old-')}*")):
        return
    try:
        with FileLock(str(lock_file(target))):
            _finish_swap(target)
    except OSError:
        pass


def _finish_swap(target: Path) -> None:
    """Call with the save's lock held. A save killed between its two renames (the old model moved
    aside to `.NAME.saving-old-*`, the new one not yet moved from `.NAME.saving-*` to `target`)
    left no model at `target`: the new one moves in, as the save was about to do. It was written
    whole before the first rename, and a save removes every other staging copy first, so it is the
    one staging copy there; when that does not hold, the old model moves back instead. The other
    copies go, as the save would have removed them."""
    if target.exists():
        return
    prefix = f".{target.name}.saving-"
    asides = sorted(target.parent.glob(f"{glob.escape(prefix)}old-*"))
    if not asides:
        return
    import shutil

    staged = [p for p in target.parent.glob(f"{glob.escape(prefix)}*") if p not in asides]
    os.replace(staged[0] if len(staged) == 1 else asides[0], target)
    for left in target.parent.glob(f"{glob.escape(prefix)}*"):  # what the save would have removed
        shutil.rmtree(left, ignore_errors=True)
