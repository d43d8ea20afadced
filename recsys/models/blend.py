"""A weighted blend of other models of the same run, on the one dot-product protocol.

    score(u, i) = sum_m  w_m * s_m(u, i) / sigma_m

where `s_m` is member m's dot-product score, `w_m` its weight (config; tuned on validation users by
the ordinary `[models.tuning]` search: `weights.<member>`) and `sigma_m` a per-member scale fixed at
fit time, so that weights are comparable across families (EASE's scores are item-item sums, WALS's
low-rank products, a two-tower's cosines / temperature: raw scales differ by orders of magnitude).

Why a blend: EASE (item-item), WALS (low rank) and two-towers make different errors; a combination
chosen on validation users is the standard remedy when no single family wins everywhere.

The scale `sigma_m` is the within-user spread of the member's scores: the root mean over a seeded
sample of training users (with history) of the variance of their scores across all items. Ranking a
user's items ignores any offset common to the user's row, so neither a global mean nor a per-user
bias (a popularity-like term every item of the row shares) should count towards the scale, as they
would with a plain RMS; the variance across items is exactly the part of a score that moves a
ranking. Averaging variances over a few hundred users (not one user, not the max) keeps one odd user
from setting it; the seeded sample makes it reproducible and keeps EASE's n_items-wide rows cheap.

Protocol: user vector = concat_m(w_m / sigma_m * u_m), item vector = concat_m(v_m), so the dot
product is the formula above, and `fold_in` is the concat of the members' weighted fold-ins: the
evaluator, pyfunc, folding diagnostic and registry serve a blend unchanged. Members weighing 0 are
left out of the vectors (no width, no fold-in cost).

Similar items (`similarity_vectors`, /similar): the members' cosines weighted as their scores are,
w_m over the member's within-query spread of cosines, normalised to sum 1 (see the method).

Members are fitted models handed over with `set_members` before `fit` (the pipeline loads them from
the run's private workspace, `pipelines.train.find_members`); `fit` checks they were trained on the
same users and items. Saving writes each member (with weight > 0) in `members/<name>/` plus the
weights, scales and similarity scales (`blend.json`); the concatenated factors follow from them, so nothing is stored
twice and a loaded blend folds in new users exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.data.split import EvalSet
from recsys.errors import ModelError, ModelSkipped
from recsys.models.base import FitCallback, HostVectors, Recommender
from recsys.models.blend_config import BlendConfig

MEMBERS_DIR = "members"
STATE_FILE = "blend.json"


_SCALES: weakref.WeakKeyDictionary[Recommender, dict[bytes, float]] = weakref.WeakKeyDictionary()
"""member -> {digest of the sampled users + its fit: its scale}: a blend's tuning fits it once per trial with
the same fitted members and the same sample, and a scale is a (users x n_items) product per member
(with EASE, n_items wide: seconds per trial at 10,000 items) that only the weights do not change."""


def score_scale(model: Recommender, users: np.ndarray, chunk: int = 128) -> float:
    """sqrt(mean over `users` of the variance of their scores across all items): see the module
    docstring. Chunked, so an EASE member's (users x items) block stays small; remembered per
    fitted member and sample (`_SCALES`)."""
    # and per fit: a member refitted in place has a new fit_token (the id of its new item array could
    # be the freed old one's)
    key = hashlib.blake2b(np.ascontiguousarray(users, dtype=np.int64).tobytes(), digest_size=16).digest()
    key += int(getattr(model, "fit_token", 0)).to_bytes(8, "little")
    known = _SCALES.setdefault(model, {})
    if key not in known:
        known[key] = _score_scale(model, users, chunk)
    return known[key]


SIMILARITY_ITEMS = 512
"""Items (seeded sample of those with a vector) whose cosines set a member's similarity scale."""


def cosine_scale(unit: np.ndarray, seed: int, chunk: int = 128) -> float:
    """sqrt(mean over a seeded sample of items with a vector of the variance of their cosines with
    every item): the within-query spread of a member's item-to-item scores, as `score_scale` is
    the within-user spread of its user scores. `unit`: the member's unit item vectors."""
    rows = np.flatnonzero(unit.any(axis=1))
    if rows.size == 0:
        return 0.0
    sample = np.sort(np.random.default_rng(seed).choice(rows, size=min(SIMILARITY_ITEMS, rows.size), replace=False))
    total = 0.0
    for start in range(0, sample.size, chunk):
        total += float(np.var(unit[sample[start : start + chunk]] @ unit.T, axis=1, dtype=np.float64).sum())
    return float(np.sqrt(total / sample.size))


def _score_scale(model: Recommender, users: np.ndarray, chunk: int) -> float:
    items = np.asarray(model.item_factors, dtype=np.float32)
    total = 0.0
    for start in range(0, len(users), chunk):
        scores = np.asarray(model.user_factors[users[start : start + chunk]], dtype=np.float32) @ items.T
        total += float(np.var(scores, axis=1, dtype=np.float64).sum())
    return float(np.sqrt(total / max(1, len(users))))


class Blend(HostVectors):
    """Weighted, scale-normalised sum of member models' scores (see module docstring)."""

    kind = "blend"
    Config = BlendConfig
    config: BlendConfig
    zero_vectors_diverged = False  # a zero vector is a member's: it warned (or EASE's by construction)
    own_similarity = True  # /similar weighs the members' cosines (`similarity_vectors`)
    single_solve = True  # one computation; its callback comes after it

    def __init__(self, config: BlendConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._members: dict[str, Recommender] = {}
        self.scales: dict[str, float] = {}
        self.similarity_scales: dict[str, float] = {}  # member -> `cosine_scale`, made on first use (or save)
        self._users: np.ndarray | None = None
        self._items: np.ndarray | None = None
        self._fitted_with: dict[str, int] = {}  # member -> its fit_token when the blend was fitted or loaded

    def set_members(self, members: Mapping[str, Recommender]) -> None:
        """The fitted models to blend, by name: the config's members that are available (a run
        blends those that trained; `weights` keep their meaning for the rest)."""
        unknown = sorted(set(members) - set(self.config.members))
        if unknown:
            raise ModelError(f"model {self.config.name!r}: {unknown} are not members {self.config.members}")
        self._members = {name: members[name] for name in self.config.members if name in members}

    @property
    def active(self) -> dict[str, float]:
        """Member name -> weight, for the members handed over whose weight is > 0."""
        weights = self.config.member_weights()
        return {name: weights[name] for name in self._members if weights[name] > 0}

    # ----------------------------------------------------------------- training
    def _fit(self, train: sp.csr_matrix, *, validation: EvalSet | None, callback: FitCallback, features: Any) -> None:
        active = self.active
        if not active:
            raise ModelError(
                f"model {self.config.name!r}: no member to blend (members {self.config.members}, none handed over "
                "with weight > 0); train the members first"
            )
        for name in active:
            member = self._members[name]
            if (member.n_users, member.n_items) != train.shape:
                raise ModelError(
                    f"model {self.config.name!r}: member {name!r} was trained on {member.n_users} x {member.n_items} "
                    f"but the blend on {train.shape[0]} x {train.shape[1]}: members must be trained on the same split"
                )
        self._check_memory(train.shape, active)
        with_history = np.flatnonzero(np.diff(train.indptr) > 0)
        rng = np.random.default_rng(self.config.seed)
        sample = np.sort(rng.choice(with_history, size=min(self.config.scale_users, len(with_history)), replace=False))
        self.scales, self.similarity_scales = {}, {}
        for name in active:
            scale = score_scale(self._members[name], sample)
            if not np.isfinite(scale) or scale <= 0:
                raise ModelError(
                    f"model {self.config.name!r}: member {name!r} scores every item alike for its training users "
                    f"(spread {scale:g}): it cannot be blended; drop it from members"
                )
            self.scales[name] = scale
        self._assemble()
        callback(1, {**{f"weight_{n}": w for n, w in active.items()}, **{f"scale_{n}": s for n, s in self.scales.items()}})

    def _check_memory(self, shape: tuple[int, int], active: Mapping[str, float]) -> None:
        """Refuse, before concatenating, vectors above `max_memory_gb`: the blend holds a copy of its
        members' vectors beside them (EASE's are n_items wide, and EASE's own bound does not count
        this copy). A `ModelSkipped`: the run goes on without the blend; a process killed for memory
        would lose every model of the run."""
        widths = {name: int(np.asarray(self._members[name].item_factors).shape[1]) for name in active}
        gb = 4 * (shape[0] + shape[1]) * sum(widths.values()) / 1e9
        if gb > self.config.max_memory_gb:
            widest = max(widths, key=widths.__getitem__)
            raise ModelSkipped(
                f"model {self.config.name!r}: the blend's vectors are {sum(widths.values()):,} wide "
                f"({', '.join(f'{n} {w:,}' for n, w in widths.items())}) and need {gb:.1f} GB for {shape[0]:,} users "
                f"and {shape[1]:,} items, above models.{self.config.name}.max_memory_gb = "
                f"{self.config.max_memory_gb:g}: raise it if the machine has the memory, or leave {widest!r} out of members"
            )

    def _assemble(self) -> None:
        """The concatenated item vectors from the members; the user vectors follow on first use
        (`user_factors`). Records which fit of each member they are made of (`_check_members`)."""
        active = self.active
        self._fitted_with = {name: self._members[name].fit_token for name in active}
        self._items = np.ascontiguousarray(
            np.concatenate([np.asarray(self._members[n].item_factors, dtype=np.float32) for n in active], axis=1)
        )
        self._users = None

    def _check_vectors(self, train: sp.csr_matrix) -> None:
        """Nothing to check (the base fit's divergence check): the vectors are the members' own,
        each checked when it was fitted, times finite positive factors (weights are finite, `_fit`
        refuses a scale that is not). Checking would build the training users' vectors, n_users x
        n_items with EASE, in every tuning trial."""

    def _check_members(self) -> None:
        """Refuse to score with members other than the fits the blend was made of. The item vectors
        and scales are fixed at fit, while the user vectors (made on first use) and fold-ins read the
        members as they are now: a member refitted in place after the blend (or another model handed
        over with `set_members`) would be mixed in silently, its new user vectors against its old item
        vectors and scale. No product path does that (a run and `recsys train` fit each member once,
        before its blend; a loaded blend loads its own members), but the library allows it, and a
        snapshot would cost a copy of every member's user vectors (EASE's n_users x n_items) per fit."""
        changed = [  # a member no longer handed over counts as changed (it raised a bare KeyError)
            n for n, token in self._fitted_with.items() if n not in self._members or self._members[n].fit_token != token
        ]
        if changed or list(self._fitted_with) != list(self.active):
            raise ModelError(
                f"model {self.config.name!r}: member(s) {changed or list(self.active)} changed after the blend was "
                "fitted (refitted, or other models handed over with set_members): its scales and item vectors are "
                "the old members'; fit the blend again"
            )

    @property
    def item_factors(self) -> np.ndarray:
        items = super().item_factors
        self._check_members()
        return items

    @property
    def user_factors(self) -> np.ndarray:
        """The training users' concatenated vectors, made on first use: a tuning trial scored on
        held-out users (strong generalisation) folds them in and never reads these, and with EASE a
        copy is n_users x n_items."""
        self._check_fitted()
        self._check_members()
        if self._users is None:
            self._users = self._weighted([np.asarray(m.user_factors, dtype=np.float32) for m in self.members.values()])
        return self._users

    def _weighted(self, parts: list[np.ndarray]) -> np.ndarray:
        factors = [w / self.scales[n] for n, w in self.active.items()]
        return np.ascontiguousarray(
            np.concatenate([np.float32(f) * p for f, p in zip(factors, parts, strict=True)], axis=1), dtype=np.float32
        )

    # ----------------------------------------------------------------- vectors
    @property
    def members(self) -> dict[str, Recommender]:
        """The blended members (weight > 0), by name."""
        return {name: self._members[name] for name in self.active}

    def fold_in(self, histories: sp.spmatrix) -> np.ndarray:
        return self.fold_in_ordered(histories, None)

    def fold_in_ordered(self, histories: sp.spmatrix, times: sp.spmatrix | None = None) -> np.ndarray:
        """Each member's own fold-in (a sequence tower reads `times`), weighted and concatenated."""
        self._check_fitted()
        self._check_members()
        return self._weighted([
            np.asarray(self._members[n].fold_in_ordered(histories, times), dtype=np.float32) for n in self.active
        ])  # fmt: skip

    @property
    def reads_order(self) -> bool:
        return any(member.reads_order for member in self.members.values())

    def similarity_vectors(self) -> np.ndarray:
        """Item-to-item similarity in the blend's own terms: sum_m c_m cos_m(i, j), the members' cosines
        weighted by c_m = (w_m / tau_m) / sum_n (w_n / tau_n). As for users, a weight multiplies a
        scale-normalised score: tau_m is the member's within-query spread of cosines (`cosine_scale`),
        so a low-rank member whose cosines spread widely does not drown an EASE whose columns are
        nearly orthogonal; dividing by the sum keeps the scores in [-1, 1], an item's similarity with
        itself 1. As vectors: concat_m(sqrt(c_m) x the member's unit item vectors), whose dot products
        are that sum exactly (a member whose vector for an item is zero adds 0 for it). The plain
        cosine of the blend's item vectors (concat_m(v_m), as the user scores need them) carries no
        weights and lets the member with the largest norms decide."""
        self._check_fitted()
        self._check_members()
        from recsys.similar import unit_rows

        self._set_similarity_scales()
        units = {name: unit_rows(np.asarray(self._members[name].item_factors, np.float32)) for name in self.active}
        coefficients = {
            name: w / self.similarity_scales[name] if self.similarity_scales[name] > 0 else 0.0
            for name, w in self.active.items()
        }
        total = sum(coefficients.values())
        if total <= 0:  # every member's item vectors are zero: every similarity is 0
            total = 1.0
        return np.ascontiguousarray(
            np.concatenate([np.float32(np.sqrt(coefficients[n] / total)) * units[n] for n in units], axis=1),
            dtype=np.float32,
        )

    # ----------------------------------------------------------------- persistence
    def _factor_tensors(self) -> dict[str, np.ndarray]:
        return {}  # they follow from the members saved beside (`_save_extra`)

    def _load_factors(self, tensors: dict[str, np.ndarray]) -> None:
        pass

    def _set_similarity_scales(self) -> None:
        """`similarity_scales`, made once per fit (one member's unit vectors at a time: with EASE each
        is n_items x n_items)."""
        if set(self.similarity_scales) == set(self.active):
            return
        from recsys.similar import unit_rows

        self.similarity_scales = {
            name: cosine_scale(unit_rows(np.asarray(self._members[name].item_factors, np.float32)), self.config.seed)
            for name in self.active
        }

    def _save_extra(self, directory: Path) -> None:
        self._set_similarity_scales()  # saved (and logged, in the pyfunc's copy): the ones a served /similar uses
        state = {"members": list(self.active), "scales": self.scales, "similarity_scales": self.similarity_scales}
        (directory / STATE_FILE).write_text(json.dumps(state, indent=2))
        for name, member in self.members.items():
            target = directory / MEMBERS_DIR / name
            target.mkdir(parents=True)
            member._write(target)  # inside the blend's own staging directory: saved atomically with it

    def _load_extra(self, directory: Path) -> None:
        state = json.loads((directory / STATE_FILE).read_text())
        self._members = {name: Recommender.load(directory / MEMBERS_DIR / name) for name in state["members"]}
        self.scales = {name: float(s) for name, s in state["scales"].items()}
        # a blend saved before they were kept makes them on first use, as it would have at save
        self.similarity_scales = {name: float(s) for name, s in state.get("similarity_scales", {}).items()}
        self._assemble()
