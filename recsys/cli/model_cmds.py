"""`recsys train`, `recsys evaluate` and `recsys tune`: models without the orchestrator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from recsys.cli.common import (
    ConfigOption,
    JsonOption,
    SetOption,
    app,
    config_args,
    config_path,
    console,
    err_console,
    load_run_config,
    next_step,
    print_table,
    user_errors,
    writable_dir,
    writable_output,
    write_text_atomic,
)
from recsys.errors import ConfigError
from recsys.files import process_temp_dir, write_text_new

ModelsDir = Annotated[
    Path, typer.Option("--models", "--out", help="Directory of saved models (one sub-directory per model).")
]
OnlyOption = Annotated[
    list[str] | None, typer.Option("--model", "-m", help="Only these models (by name; default: every model of the config). Repeatable.")
]


def _prepare(loaded):
    """The config (`load_run_config`, loaded once by the command: its checks ran on it before any
    work) with its thread budget pinned, and its split, data prepared as `recsys run` prepares it."""
    from pipelines.data import ingest_warnings
    from pipelines.run import prepare_run_inputs
    from pipelines.train import pin_thread_budget

    cfg = pin_thread_budget(loaded)
    with console.status("preparing data and split"):
        inputs = prepare_run_inputs(cfg)
    dataset, data, split = inputs.dataset, inputs.data, inputs.split
    for warning in [*ingest_warnings(dataset, data.manifest), *inputs.warnings]:  # as recsys run prints them
        err_console.print(f"warning: {warning}", style="yellow", markup=False, soft_wrap=True)
    console.print(
        f"data {dataset.processed_dir}: {split.n_users:,} users x {split.n_items:,} items, "
        f"{split.train.nnz:,} train / {split.test.nnz:,} test interactions ({split.protocol} split)"
    )
    return cfg, split


def _plain(line: str) -> None:
    """A progress line (a tuning trial) printed as it is: parameter dicts are no rich markup."""
    console.print(line, markup=False, highlight=False)


def _save(model, split, path: Path) -> str:
    """Save with the split it was trained on, which `recsys evaluate` checks; returns a note when it
    replaced a model saved there (a second train said nothing of the one it overwrote)."""
    from recsys.data.split import split_record

    replaced = (path / "config.json").is_file()
    model.trained_on = split_record(split)
    model.save(path)
    return " (replaced the model saved there)" if replaced else ""


def _check_trained_on(model, split, path: Path, hint: str | None = None) -> None:
    """A model evaluated on another split than it was trained on (another --set split.seed, other
    data) is scored on interactions it may have trained on: inflated metrics, silently. Refused.
    Models saved without the record (by older releases) are not checked. `hint`: what to do instead,
    where the model is an input of another's training (a blend member, a distillation teacher)."""
    from recsys.data.split import split_record

    saved = model.trained_on or {}
    if not saved.get("split_digest"):
        return
    now = split_record(split)
    if saved["split_digest"] == now["split_digest"]:
        return
    what = "other data" if saved.get("fingerprint") != now["fingerprint"] else "another split (protocol, fractions or split.seed)"
    raise ConfigError(
        f"{path}: trained on {what} than this config gives (split {saved['split_digest']}, now {now['split_digest']}), "
        "so its test users may hold training interactions: "
        + (hint or "evaluate with the --config and --set it was trained with, or retrain it here (recsys evaluate --train)")
    )


NOT_THE_MODEL = frozenset({
    "name", "tuning", "threads", "device", "quiet", "calculate_training_loss", "validation_metric", "eval_every",
    "max_items", "max_memory_gb", "checkpoint_dir", "checkpoint_interval", "master", "spark_conf", "driver_memory",
    "num_user_blocks", "num_item_blocks",
})  # fmt: skip
"""Model settings that say where or how a fit ran (threads, devices, memory guards, a Spark
cluster), or what it reports, not which model it makes: `_check_trained_as` does not compare them."""


def _check_trained_as(model, model_cfg, path: Path) -> None:
    """A saved model of another kind, or trained with other settings than the config's (another
    --set models.wals.factors), is not the model the config names: `recsys evaluate` scored the saved
    one under the config's name without a word, so a user comparing factors=16 to factors=8 saw the
    same numbers twice. Refused, as another split is. Settings the config leaves to the fit (None,
    "auto": resolved from the data) and those of a tuned model (the search chose them) are not
    compared."""
    kind = getattr(model, "kind", None)
    if kind != model_cfg.kind:
        raise ConfigError(
            f"{path}: holds a {kind} model, the config's {model_cfg.name!r} is a {model_cfg.kind}: evaluate with the "
            "--config and --set it was trained with, or retrain it here (recsys evaluate --train)"
        )
    if model_cfg.tuning is not None and model_cfg.tuning.enabled:
        return
    saved = model.config.model_dump()
    differ = [
        f"{key}={saved[key]!r} (this config: {want!r})"
        for key, want in model_cfg.model_dump().items()
        if key not in NOT_THE_MODEL and want is not None and want != "auto" and key in saved and saved[key] != want
    ]
    if differ:
        raise ConfigError(
            f"{path}: trained with {', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''}: evaluate with the --config "
            "and --set it was trained with, or retrain it here (recsys evaluate --train)"
        )


def _refuse_no_saved_model(models: list, models_dir: Path) -> None:
    """`recsys evaluate` before any `recsys train` (or with another --models): refused before the data
    is prepared. It generated or read the data and split it (seconds to minutes, a processed folder
    written into the working directory) only to say "no saved model" at the first model."""
    if any((models_dir / m.name / "config.json").is_file() for m in models):
        return  # some are there: each missing one is named as the loop reaches it
    where = "" if models_dir == Path("data/models") else f" --models {models_dir}"
    state = "does not exist" if not models_dir.exists() else "holds none of them"
    raise ConfigError(
        f"--models {models_dir}: no saved model of this config ({', '.join(m.name for m in models)}); the folder "
        f"{state}: run `recsys train{where}` first with the same --config and --set, or pass --train"
    )


def _check_saved_inputs(model_cfg, found: dict, trained: dict, split, models_dir: Path) -> None:
    """The saved models a blend (members) or a distilling student (teacher) loads from --models
    must have been trained on this split: a member trained on another one (another split.seed, other
    data, same shape) knows this split's test interactions, and the blend, saved with this split's
    record, would pass `recsys evaluate`'s check with inflated metrics. Refused, as evaluate refuses."""
    for name, model in found.items():
        if name not in trained:
            _check_trained_on(
                model, split, models_dir / name,
                hint=f"{model_cfg.name!r} would learn from it: retrain {name!r} with this --config and --set "
                f"(recsys train --model {name}), or train {model_cfg.name!r} with the ones {name!r} was trained with",
            )  # fmt: skip


def _with_folding(results: dict, summary: dict) -> tuple[dict, str | None]:
    """The results with folding@k (measured where the data has blocks: planted clusters, combined
    sets) as a table column, and its name: the table showed recall and ndcg alone, so the folding
    diagnostic of `data synth` / `data combine` data was only in --json."""
    import dataclasses

    keys = sorted({k for s in summary.values() for k in s["folding"] if k.startswith("folding@")})
    if not keys:
        return results, None
    key = keys[0]
    shown = {
        name: dataclasses.replace(result, summary={**result.summary, key: summary[name]["folding"].get(key)})
        for name, result in results.items()
    }
    return shown, key


def _applicable(models: list, split, cfg, only: list[str] | None) -> list:
    """The models that apply to this data, as `recsys run` decides it: a model whose `check_data`
    refuses it (EASE above its catalogue bound) is skipped with a warning when the whole config is
    trained, so the other models still train (train stopped at it, exit 2, where a run goes on);
    named with --model, it is refused."""
    from pipelines.train import skip_reason

    if only:
        return models
    kept = []
    for model_cfg in models:
        if (reason := skip_reason(model_cfg, split, cfg.orchestration.threads_per_model)) is not None:
            err_console.print(f"warning: skipped {model_cfg.name}: {reason}", style="yellow", markup=False, soft_wrap=True)
            continue
        kept.append(model_cfg)
    if not kept:
        raise ConfigError("no model of the config applies to this data (every one skipped above)")
    return kept


def _blend_members(model_cfg, models_dir: Path, trained: dict, only: list[str] | None, split):
    """A blend's fitted members (trained in this command or saved under --models, on this `split`;
    None for other models), or False where fewer than two are there: skipped with a warning when the
    whole config is trained, as `recsys run` skips it; named with --model, refused (exit 2)."""
    from pipelines.train import find_members
    from recsys.errors import ModelSkipped

    def warn(line: str) -> None:
        err_console.print(line, style="yellow", markup=False, soft_wrap=True)

    try:
        members = find_members(model_cfg, models_dir, trained, log=warn)
    except ModelSkipped as exc:
        if only:  # "did not train in this run" says nothing of where this command looked, or what to do
            missing = [m for m in model_cfg.members if m not in trained and not (models_dir / m / "config.json").is_file()]
            raise ConfigError(
                f"model {model_cfg.name!r}: a blend needs at least 2 trained members; {missing} are neither trained by "
                f"this command nor saved under {models_dir}: train them first with the same --config and --set "
                f"({' '.join(['recsys train', *(f'--model {m}' for m in missing)])}), or name them with --model too"
            ) from exc
        warn(f"warning: skipped {model_cfg.name}: {str(exc).removeprefix(f'model {model_cfg.name!r}: ')}")
        return False
    _check_saved_inputs(model_cfg, members or {}, trained, split, models_dir)
    return members


def _teacher(model_cfg, models_dir: Path, trained: dict, split):
    """`find_teacher`, a teacher loaded from --models checked against this `split` as members are."""
    from pipelines.train import find_teacher
    from recsys.distill import teacher_name

    teacher = find_teacher(model_cfg, models_dir, trained)
    if teacher is not None:
        _check_saved_inputs(model_cfg, {teacher_name(model_cfg): teacher}, trained, split, models_dir)
    return teacher


def _selected(cfg, only: list[str] | None):
    """The chosen models, each distillation teacher before its students."""
    from recsys.distill import order_by_teacher

    if not cfg.models:
        raise ConfigError("the config has no [[models]]")
    return order_by_teacher([cfg.model(n) for n in only] if only else list(cfg.models))


@app.command()
@user_errors
def train(
    config: ConfigOption = None,
    set_: SetOption = None,
    models_dir: ModelsDir = Path("data/models"),
    only: OnlyOption = None,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Train two-tower models on N local processes (DDP; gloo on CPU, nccl on GPU).",
        ),
    ] = 1,
    rdzv_host: Annotated[
        str | None,
        typer.Option(
            "--rdzv-host",
            help="Address the --nproc ranks meet on (default $RECSYS_DDP_HOST or 127.0.0.1: nothing listens beyond this machine).",
        ),
    ] = None,
    handoff: Annotated[
        Path | None,
        typer.Option(
            "--handoff",
            help="Several machines: write the split and each two-tower model's config under DIR (a file system "
            "every node sees) and print the torchrun command to start on every node, instead of training here.",
        ),
    ] = None,
) -> None:
    """Train the config's models on its split and save them (JSON + safetensors) under --models.

    No MLflow, no Prefect: the quick loop for a notebook or a terminal. `recsys run` does it all.
    A model with an enabled [models.tuning] section is tuned on the validation users first and the
    best trial is saved, as `recsys run --no-tracking` does (same config, data and threads: same
    model and metrics).
    With --nproc N, two-tower models train with DistributedDataParallel on N processes; batch_size
    is per process (the global batch is batch_size x N). A model with a `distill` teacher trains after
    it, a blend after its members; trained alone (--model), it loads them saved under --models, which
    must have been trained on this config's split (else exit 2).
    """
    if handoff is not None and nproc > 1:
        raise ConfigError("--handoff writes what torchrun's ranks load and trains nothing here; --nproc trains here: pass one")
    loaded = load_run_config(config, set_, default=True)
    _selected(loaded, only)  # unknown names: before any work
    # after the config: a bad one fails before numpy and scipy load
    from pipelines.train import fit_model

    writable_dir(models_dir, "--models")
    if handoff is not None:
        writable_dir(handoff, "--handoff")
    cfg, split = _prepare(loaded)
    selected = _applicable(_selected(cfg, only), split, cfg, only)
    for model_cfg in selected if nproc > 1 or handoff is not None else []:
        if model_cfg.kind == "two_tower" and model_cfg.tuning is not None and model_cfg.tuning.enabled:
            option = "--nproc" if handoff is None else "--handoff"
            raise ConfigError(
                f"models.{model_cfg.name}.tuning: {option} trains one distributed fit, not a search; "
                f"--set models.{model_cfg.name}.tuning.enabled=false (e.g. after recsys tune)"
            )
    if handoff is not None:
        _write_handoff(selected, split, handoff, models_dir, config_args(config, set_))
        return
    trained = {}
    for model_cfg in selected:
        if nproc > 1 and model_cfg.kind == "two_tower":
            _train_distributed(
                _with_saved_teacher(model_cfg, models_dir, split),
                split,
                models_dir / model_cfg.name,
                nproc,
                rdzv_host,
            )
            continue
        teacher = _teacher(model_cfg, models_dir, trained, split)
        members = _blend_members(model_cfg, models_dir, trained, only, split)
        if members is False:
            continue
        with console.status(f"training {model_cfg.name}"):
            model = fit_model(
                model_cfg, split, cfg, teacher=teacher, threads=cfg.orchestration.threads_per_model, log=_plain,
                members=members or None,
            )
            replaced = _save(model, split, models_dir / model_cfg.name)
        trained[model_cfg.name] = model
        if model.resumed_from:
            resumed = model.resumed_from
            console.print(
                f"resumed {model_cfg.name} from {resumed['checkpoint']} (epoch {resumed['epoch']}, step {resumed['step']})"
            )
        console.print(
            f"trained [bold]{model_cfg.name}[/] in {model.fit_seconds:.1f} s -> {models_dir / model_cfg.name}{replaced}"
        )
    picked = [arg for name in only or [] for arg in ("--model", name)]
    next_step("recsys evaluate", *config_args(config, set_), "--models", models_dir, *picked)


def _with_saved_teacher(model_cfg, models_dir: Path, split):
    """Distributed ranks load the teacher themselves: point distill.checkpoint at the saved one,
    checked here against this `split` as `recsys train` checks a teacher it loads (ranks do not)."""
    from pipelines.train import find_teacher
    from recsys.distill import teacher_name

    name = teacher_name(model_cfg)
    if name is None:
        return model_cfg
    if not (models_dir / name / "config.json").is_file():
        find_teacher(model_cfg, models_dir)  # raises the clear error now rather than on every rank
    _teacher(model_cfg, models_dir, {}, split)
    distill = model_cfg.distill.model_copy(update={"checkpoint": str(models_dir / name)})
    return model_cfg.model_copy(update={"distill": distill})


def _write_handoff(selected, split, handoff: Path, models_dir: Path, config_given: list[str]) -> None:
    """`recsys train --handoff DIR`: what `--nproc` hands its local ranks (the split, each model's
    config), written where every node can read it, and the torchrun command that starts the ranks
    there. The paths are absolute, since each node starts torchrun from a folder of its own."""
    import shlex

    from recsys.distributed import save_split

    towers = [m for m in selected if m.kind == "two_tower"]
    if not towers:
        raise ConfigError("--handoff: no two_tower model selected (data-parallel training is for two-tower models)")
    root = handoff.resolve()
    save_split(split, root / "split")
    console.print(f"wrote the split to {root / 'split'}; on every node (N nodes, P processes each), run:")
    for model_cfg in towers:
        config_file = write_text_atomic(
            root / f"{model_cfg.name}.json", _with_saved_teacher(model_cfg, models_dir, split).model_dump_json()
        )
        args = ["train", "--split", root / "split", "--model-config", config_file, "--out", (models_dir / model_cfg.name).resolve()]
        launcher = "torchrun --nnodes N --nproc-per-node P --rdzv-backend c10d --rdzv-endpoint HOST:29400"
        console.print(f"{launcher} -m recsys.distributed {shlex.join(map(str, args))}", soft_wrap=True, markup=False)
    others = [arg for m in selected if m.kind != "two_tower" for arg in ("--model", m.name)]
    if others:
        console.print("not data-parallel (train them here):")
        next_step("recsys train", *config_given, "--models", models_dir, *others)


DDP_HANDOFF = "recsys-ddp"
"""`$TMPDIR/recsys-ddp-<pid>-*`: the split and config a `recsys train --nproc` hands to its ranks."""


def _train_distributed(model_cfg, split, out: Path, nproc: int, host: str | None = None) -> None:
    """Hand the split and config to N ranks of `python -m recsys.distributed train` and wait."""
    import shutil

    from recsys.distributed import launch, save_split, worker_command
    from recsys.errors import ModelError

    tmp = process_temp_dir(DDP_HANDOFF)  # a launcher killed with -9 leaves it to the next one
    try:
        save_split(split, tmp / "split")
        (tmp / "model.json").write_text(model_cfg.model_dump_json())
        args = ["train", "--split", f"{tmp}/split", "--model-config", f"{tmp}/model.json", "--out", str(out)]
        if launch(nproc, worker_command(args), host=host) != 0:
            raise ModelError(
                f"distributed training of {model_cfg.name} failed on {nproc} processes (rank errors above)"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"trained [bold]{model_cfg.name}[/] on {nproc} processes -> {out}")


@app.command()
@user_errors
def evaluate(
    config: ConfigOption = None,
    set_: SetOption = None,
    models_dir: ModelsDir = Path("data/models"),
    only: OnlyOption = None,
    json_out: JsonOption = None,
    train_first: Annotated[
        bool, typer.Option("--train", help="Train the models first (train + evaluate in one command).")
    ] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Show full intervals [low, high] (a table wider than 120 columns).")
    ] = False,
) -> None:
    """Evaluate saved models on the test split: full-corpus metrics with bootstrap CIs.

    The split is recomputed from the config (seeded), so pass the --config and --set the models
    were trained with: a model saved by `recsys train` (with --nproc too) records its split, and
    another one (other data, split settings or seed: test users whose interactions it trained on)
    is refused.
    """
    from pipelines.evaluate import evaluate_model
    from pipelines.train import fit_model
    from recsys.evaluation.evaluate import format_table
    from recsys.models.base import Recommender

    writable_output(json_out, "--json")
    loaded = load_run_config(config, set_, default=True)
    _selected(loaded, only)  # unknown names: before any work
    if train_first:
        writable_dir(models_dir, "--models")
    elif models_dir.exists() and not models_dir.is_dir():  # was "FILE/popularity: no saved model", after the split
        raise ConfigError(f"--models {models_dir} is a file, not the directory `recsys train --models DIR` saved "
                          "the models in")
    else:
        _refuse_no_saved_model(_selected(loaded, only), models_dir)
    cfg, split = _prepare(loaded)
    results, summary, trained = {}, {}, {}
    for model_cfg in _applicable(_selected(cfg, only), split, cfg, only):
        path = models_dir / model_cfg.name
        if train_first:
            teacher = _teacher(model_cfg, models_dir, trained, split)
            members = _blend_members(model_cfg, models_dir, trained, only, split)
            if members is False:
                continue
            with console.status(f"training {model_cfg.name}"):
                model = trained[model_cfg.name] = fit_model(
                    model_cfg, split, cfg, teacher=teacher, threads=cfg.orchestration.threads_per_model, log=_plain,
                    members=members or None,
                )
                _save(model, split, path)
        elif not (path / "config.json").is_file():
            raise ConfigError(f"{path}: no saved model; run `recsys train` first or pass --train")
        else:
            model = Recommender.load(path)
            _check_trained_on(model, split, path)
            _check_trained_as(model, model_cfg, path)
        if model.n_items != split.n_items:
            raise ConfigError(
                f"{path}: model knows {model.n_items} items but the split has {split.n_items}; retrain it"
            )
        with console.status(f"evaluating {model_cfg.name}"):
            evaluation = evaluate_model(model, split, cfg)
        results[model_cfg.name] = evaluation.result
        summary[model_cfg.name] = {
            "metrics": evaluation.result.summary,
            "ci": evaluation.result.ci,
            "folding": evaluation.folding,
        }
    metrics = [f"{m}@{k}" for m in ("recall", "ndcg") for k in cfg.evaluation.ks if k in (20, 50, 100)]
    metrics = metrics or [f"recall@{cfg.evaluation.ks[0]}"]
    results, folding = _with_folding(results, summary)
    if folding:  # second, so a narrow terminal drops other columns first
        metrics.insert(1, folding)
    print_table(format_table(results, metrics, wide=wide, width=console.width), wide)
    from pipelines.report import FOLD_NOTES, interval_note

    # what `±0.011` is and at which level: `recsys run`'s table says it, this one said nothing
    console.print(interval_note(cfg, wide), highlight=False)
    if folding:
        console.print(FOLD_NOTES["folding"], highlight=False)
    if warning := _small_test_warning(results, cfg, split):
        err_console.print(f"warning: {warning}", style="yellow", markup=False, soft_wrap=True)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(summary, indent=2, default=float))


def _small_test_warning(results: dict, cfg, split) -> str | None:
    """As `recsys run` warns: every model at the metric's ceiling, or the best model's lead within
    its own interval (pipelines.report)."""
    from pipelines.report import saturated_warning, small_test_warning

    metric = cfg.promotion.metric
    scores = {name: (r.summary[metric], r.ci.get(metric)) for name, r in results.items() if metric in r.summary}
    n_users = max((r.n_users_evaluated for r in results.values()), default=0)
    means = {name: mean for name, (mean, _) in scores.items()}
    if saturated := saturated_warning(means, metric=metric, n_items=split.n_items, n_users=n_users):
        return saturated
    return small_test_warning(
        scores, metric=metric, n_users=max((r.n_users_evaluated for r in results.values()), default=0),
        confidence=cfg.evaluation.confidence, protocol=split.protocol,
        popularity={name for name in results if cfg.model(name).kind == "popularity"},
    )


@app.command()
@user_errors
def tune(
    config: ConfigOption = None,
    set_: SetOption = None,
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="Name of the model to tune (a name from the config's models)."),
    ] = "wals",
    trials: Annotated[int, typer.Option("--trials", "-n", min=1, help="Optuna trials.")] = 20,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="Validation metric to maximise (default: promotion.metric)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the config with the best parameters "
                     "(default: tuned-CONFIG-MODEL.toml in the current directory, CONFIG the config "
                     "file's name without .toml)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the --out file if it exists.")] = False,
) -> None:
    """Hyper-parameter search (Optuna TPE, seeded) on the validation split, never on test.

    Writes the full config with the best parameters filled in and that model's own per-run search
    ([models.tuning]) switched off, so `recsys train --config` / `recsys run --config` train the winner.
    An existing --out file is refused before the search unless --force; one that appears during it
    (another tune) is kept, and this result is written beside it.
    """
    from pipelines.tune import trial_line, tune_model

    loaded = load_run_config(config, set_, default=True)
    loaded.model(model)  # an unknown name: before any work
    default = default_tuned_path(config_path(config), loaded.name, model)
    out = out if out is not None else default
    writable_output(out, "--out", example=default.name)  # a directory: the tuned config's name, not summary.json
    if out.exists() and not force:
        raise ConfigError(
            f"--out {out} exists (an earlier tune's result?): pass --force to replace it, or choose another --out"
        )
    if metric is not None:
        from recsys.tuning import check_tuning_metric

        check_tuning_metric(metric, "--metric")
    cfg, split = _prepare(loaded)
    if split.validation is None:
        cfg.split.validation_fraction = 0.1
        console.print("[yellow]no validation split configured: using split.validation_fraction = 0.1[/]")
        cfg, split = _prepare(load_run_config(config, [*(set_ or []), "split.validation_fraction=0.1"], default=True))

    result = tune_model(
        cfg,
        split,
        model,
        trials=trials,
        metric=metric,
        progress=lambda record: _plain(f"  {trial_line(record)}"),
        log=_plain,
    )
    written = write_tuned(
        out,
        f"# tuned by `recsys tune --model {model} --trials {trials}`: best validation "
        f"{result.metric} = {result.best_value:.4f}\n" + result.config.to_toml(),
        force=force,
    )
    if written != out:
        err_console.print(f"warning: {out} was written by another command during the search; kept it, "
                          f"and wrote this result to {written}", style="yellow", markup=False, soft_wrap=True)  # fmt: skip
    console.print(
        f"best {result.metric} = [bold]{result.best_value:.4f}[/] with {result.best_params}\nwrote {written.resolve()}"
        f" (the winner pinned: its search switched off)\nnext: recsys train --config {written}, "
        f"or recsys run --config {written}",
        soft_wrap=True,  # paths stay whole, ready to copy
    )


def default_tuned_path(config: Path | None, run_name: str, model: str) -> Path:
    """`tuned-<config>-<model>.toml` in the current directory, where the commands that read it run
    (data/ and mlflow/ are relative to it too). It was `tuned.toml` for every config and model: a
    second tune (another model, another config) silently replaced the first one's result."""
    import re

    stem = config.stem if config is not None else run_name
    return Path(re.sub(r"[^A-Za-z0-9._-]+", "-", f"tuned-{stem}-{model}") + ".toml")


def write_tuned(out: Path, text: str, *, force: bool = False) -> Path:
    """Write the tuned config atomically to `out` (replacing it only with `force`); returns where
    it went. A file that appeared at `out` during the search is another command's result: it is
    kept, and this one goes to the first free `<stem>.<n><suffix>` beside it."""
    if force:
        return write_text_atomic(out, text)
    target = out
    for n in range(1, 1000):
        try:
            return write_text_new(target, text)
        except FileExistsError:
            target = out.with_name(f"{out.stem}.{n}{out.suffix}")
    raise ConfigError(f"--out {out}: {out.stem}.1{out.suffix} to .999 all exist; choose another --out")
