"""Step: train one model from its config on a split.

Thread budget: the flow trains `orchestration.max_workers` models at once; each gets
`cores // max_workers` BLAS/torch threads (or `threads_per_model`), so concurrent models do not
oversubscribe the cores. A model's own `threads` setting, when given, wins.

The budget changes the last bits of float sums (BLAS and torch split reductions by thread), and
training amplifies them, so it is part of what makes a result: `pin_thread_budget` writes it into
the config (`orchestration.threads_per_model`, `evaluation.threads`) before anything runs, every
path (`recsys run` with or without Prefect, `recsys train` + `evaluate`, promotion's re-scoring)
uses the pinned values, and the tracker logs them with the rest of the config.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from recsys.config import OrchestrationConfig, RunConfig
from recsys.data.split import Split
from recsys.distill import teacher_name
from recsys.errors import ModelError
from recsys.models.base import FitCallback, ModelConfig, Recommender, build_model


def thread_budget(cfg: OrchestrationConfig) -> int:
    """Threads each concurrently trained model may use."""
    if cfg.threads_per_model:
        return cfg.threads_per_model
    workers = 1 if cfg.task_runner == "sequential" else cfg.max_workers
    return max(1, (os.cpu_count() or 1) // workers)


def pin_thread_budget(cfg: RunConfig) -> RunConfig:
    """A copy of `cfg` with the thread budget written in: `orchestration.threads_per_model` (what
    each model trains with) and, unless set, `evaluation.threads` (what ranking uses)."""
    budget = thread_budget(cfg.orchestration)
    pinned = cfg.model_copy(deep=True)
    pinned.orchestration.threads_per_model = budget
    if pinned.evaluation.threads is None:
        pinned.evaluation.threads = budget
    return pinned


def with_thread_budget(model_cfg: ModelConfig, threads: int) -> ModelConfig:
    """Fill the model's thread setting from the budget unless the user set it explicitly."""
    if getattr(model_cfg, "kind", "") in ("wals", "ease") and getattr(model_cfg, "threads", 1) == 0:
        return model_cfg.model_copy(update={"threads": threads})
    if getattr(model_cfg, "kind", "") in ("two_tower", "item_tower") and getattr(model_cfg, "threads", 1) is None:
        return model_cfg.model_copy(update={"threads": threads})
    return model_cfg


def model_builder(
    threads: int | None = None, teacher: Recommender | None = None, members: Mapping[str, Recommender] | None = None
) -> Callable[[ModelConfig], Recommender]:
    """Config -> unfitted model with the thread budget applied and, for a distilling student, its
    teacher set, for a blend its fitted members: what `train_model` fits once and every tuning trial
    fits again (a blend's trials reuse the same members: only the weights change)."""

    def build(model_cfg: ModelConfig) -> Recommender:
        if threads is not None:
            model_cfg = with_thread_budget(model_cfg, threads)
        model = build_model(model_cfg)
        if teacher is not None and getattr(model_cfg, "distill", None) is not None:
            model.set_teacher(teacher)  # type: ignore[attr-defined]
        if members is not None and model_cfg.kind == "blend":
            model.set_members(members)  # type: ignore[attr-defined]
        return model

    return build


def skip_reason(model_cfg: ModelConfig, split: Split, threads: int | None = None) -> str | None:
    """Why `model_cfg` does not apply to `split`'s training matrix (`Recommender.check_data`: EASE
    above its catalogue bound), or None. `recsys run`, `train` and `evaluate` skip such a model
    before any work, with this reason, and train the config's others."""
    from recsys.errors import ModelSkipped

    try:
        model_builder(threads)(model_cfg).check_data(*split.train.shape)
    except ModelSkipped as exc:  # callers print "skipped <name>: <reason>": the name once, not twice
        return str(exc).removeprefix(f"model {model_cfg.name!r}: ")
    return None


STALE_CHECKPOINT_S = 24 * 3600
"""A `recsys run` checkpoint directory of another split or config untouched this long is removed."""


def per_split_checkpoints(model_cfg: ModelConfig, split: Split, teacher: Recommender | None = None) -> ModelConfig:
    """The config with a two-tower's `checkpoint_dir` narrowed to
    `<checkpoint_dir>/split-<split digest>-<settings digest>` for `recsys run`; the directories of
    other splits or settings under it are removed once untouched for a day (`STALE_CHECKPOINT_S`).

    Why: the directory holds one training's resume point, and a checkpoint of other data or other
    settings is refused (`recsys.training`: a person pointing `recsys train` at the wrong directory
    is told so). A scheduled run trains on a log that has grown, so the run after the first met
    yesterday's checkpoint and the model failed on every run until someone deleted it; so did the
    run after an edit of the model's settings, or after its distillation teacher was tuned to other
    settings. Keyed by all three, a run killed with -9 still resumes on its rerun (same data, same
    settings), and any other run starts afresh. Only day-old directories go: a concurrent run of
    another config or data may be writing its own beside this one."""
    import hashlib
    import json
    import shutil
    import time

    from recsys.data.split import split_digest
    from recsys.training import RESUME_INSENSITIVE_FIELDS

    directory = getattr(model_cfg, "checkpoint_dir", None)
    if model_cfg.kind != "two_tower" or not directory:
        return model_cfg
    settings = {k: v for k, v in model_cfg.model_dump(mode="json").items() if k not in RESUME_INSENSITIVE_FIELDS}
    settings["teacher"] = teacher.config.model_dump(mode="json") if teacher is not None else None
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    own = Path(directory) / f"split-{split_digest(split)}-{key}"
    now = time.time()
    for old in Path(directory).glob("split-*"):
        if old != own and old.is_dir() and now - _newest_mtime(old) > STALE_CHECKPOINT_S:
            shutil.rmtree(old, ignore_errors=True)  # another day's data or settings: nothing to resume
            (old.parent / f".{old.name}.lock").unlink(missing_ok=True)  # its trainings' lock (recsys.training)
    return model_cfg.model_copy(update={"checkpoint_dir": str(own)})


def _newest_mtime(directory: Path) -> float:
    """The latest modification time of `directory` or anything in it (0 where it cannot be read)."""
    try:
        return max([directory.stat().st_mtime, *(p.stat().st_mtime for p in directory.rglob("*"))])
    except OSError:
        return 0.0


def train_model(
    model_cfg: ModelConfig,
    split: Split,
    *,
    threads: int | None = None,
    callback: FitCallback | None = None,
    features: Any = None,
    save_to: str | Path | None = None,
    teacher: Recommender | None = None,
    members: Mapping[str, Recommender] | None = None,
) -> Recommender:
    """Build, fit (validation split for early stopping, never test) and optionally save a model.

    `teacher`: the fitted model a two-tower with a `distill` section learns from (its
    `distill.teacher`); ignored by models that do not distill."""
    from recsys.evaluation.cold import warm_validation

    model = model_builder(threads, teacher, members)(model_cfg)
    model.fit(split.train, validation=warm_validation(split), callback=callback, features=features,
              times=split.times, item_ids=split.item_ids)
    if save_to is not None:
        model.save(save_to)
    return model


def fit_or_tune(
    model_cfg: ModelConfig,
    split: Split,
    cfg: RunConfig,
    *,
    tracker: Any,
    model_run: Any,
    threads: int | None = None,
    teacher: Recommender | None = None,
    callback: FitCallback | None = None,
    log: Callable[[str], None] = print,
    members: Mapping[str, Recommender] | None = None,
) -> tuple[Recommender, Any]:
    """(the model, the search's `TuningOutcome` or None): with an enabled `[models.tuning]` section
    the best trial of the search on the validation users (fitted on train only, each trial logged
    under `model_run`), else one fit reporting each epoch to `callback`. The one branch `recsys run`
    (`train_and_log`) and `recsys train` / `evaluate --train` (`fit_model`) take, so the same config
    gives the same model on every path. A blend whose `members` did not all train blends (and
    searches the weights of) those that did."""
    if members is not None and hasattr(model_cfg, "restricted_to"):
        model_cfg = model_cfg.restricted_to(list(members))
    if model_cfg.tuning is None or not model_cfg.tuning.enabled:
        return train_model(model_cfg, split, threads=threads, callback=callback, teacher=teacher, members=members), None
    from pipelines.tune import tune_in_run

    tuned = tune_in_run(
        model_cfg, split, cfg, tracker=tracker, model_run=model_run, build=model_builder(threads, teacher, members), log=log
    )
    return tuned.model, tuned


def fit_model(
    model_cfg: ModelConfig,
    split: Split,
    cfg: RunConfig,
    *,
    threads: int | None = None,
    save_to: str | Path | None = None,
    teacher: Recommender | None = None,
    log: Callable[[str], None] = print,
    members: Mapping[str, Recommender] | None = None,
) -> Recommender:
    """The model `recsys run --no-tracking` trains for `model_cfg` (`fit_or_tune`), optionally
    saved. `recsys train` and `evaluate --train` fit through here (they once skipped the search and
    saved the untuned model). Without a tracking store there is no champion to warm-start from, as
    with `recsys run --no-tracking`."""
    from recsys.tracking.runs import NullTracker

    tracker = NullTracker()
    model, _ = fit_or_tune(
        model_cfg, split, cfg, tracker=tracker, model_run=tracker.start_child(None, model_cfg), threads=threads,
        teacher=teacher, log=log, members=members,
    )  # fmt: skip
    if save_to is not None:
        model.save(save_to)
    return model


def find_teacher(
    model_cfg: ModelConfig,
    saved_under: str | Path | None = None,
    trained: Mapping[str, Recommender] | None = None,
) -> Recommender | None:
    """The fitted teacher a distilling model names (None when it does not distill from a run model).

    Looked up among the models `trained` earlier in this process, then as a saved model in
    `saved_under/<teacher>` (what `recsys train` and the pipeline write), so a student can be
    (re)trained on its own after its teacher. A missing teacher is a clear error, never a silent
    fit without distillation."""
    name = teacher_name(model_cfg)
    if name is None:
        return None
    if trained and name in trained:
        return trained[name]
    if saved_under is not None and (Path(saved_under) / name / "config.json").is_file():
        return Recommender.load(Path(saved_under) / name)
    where = f" or saved under {saved_under}" if saved_under is not None else ""
    raise ModelError(
        f"model {model_cfg.name!r} distills from {name!r}, but no trained {name!r} was found in this run{where}: "
        f"train {name!r} first (it must succeed), or set distill.checkpoint to a saved teacher"
    )


def find_members(
    model_cfg: ModelConfig,
    saved_under: str | Path | None = None,
    trained: Mapping[str, Recommender] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Recommender] | None:
    """The fitted members a blend names (None for a model that is not a blend), looked up as
    `find_teacher` looks up a teacher: among the models `trained` earlier in this process, then
    saved in `saved_under/<member>`. A member that is not there (skipped, e.g. EASE above its
    catalogue bound, or failed) is left out with one warning line: the blend goes on with the
    others. Fewer than two left: `ModelSkipped` (the run skips the blend like any model that does
    not apply, exit 0)."""
    from recsys.errors import ModelSkipped

    names = list(getattr(model_cfg, "members", None) or []) if model_cfg.kind == "blend" else []
    if not names:
        return None
    found: dict[str, Recommender] = {}
    for name in names:
        if trained and name in trained:
            found[name] = trained[name]
        elif saved_under is not None and (Path(saved_under) / name / "config.json").is_file():
            found[name] = Recommender.load(Path(saved_under) / name)
    missing = [name for name in names if name not in found]
    if len(found) < 2:
        raise ModelSkipped(
            f"model {model_cfg.name!r}: a blend needs at least 2 trained members; {missing} did not train in this "
            f"run (skipped or failed){f', only {list(found)} did' if found else ''}"
        )
    if missing:
        log(f"warning: model {model_cfg.name!r} (a blend): members {missing} did not train in this run (skipped or failed); "
            f"blending {list(found)}")  # fmt: skip
    return found
