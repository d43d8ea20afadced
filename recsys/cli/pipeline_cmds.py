"""`recsys run` (the whole pipeline on Prefect) and `recsys schedule` (a cron deployment)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from recsys.cli.common import (
    DEFAULT_CONFIG,
    STARTED,
    ConfigOption,
    SetOption,
    app,
    config_path,
    console,
    debug_enabled,
    err_console,
    load_run_config,
    on_terminate,
    print_table,
    shipped_configs,
    user_errors,
    writable_output,
    write_text_atomic,
)

if TYPE_CHECKING:
    from recsys.config import RunConfig


@app.command()
@user_errors(flags={"tracking.enabled": "--no-tracking"})
def run(
    config: ConfigOption = None,
    set_: SetOption = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Also write a machine-readable summary to this file. Its promotion block: champion, "
            "champion_version and champion_run_id hold the champion alias after the run; compared_version "
            "and compared_run_id are the champion the challenger was compared with (null on a first promotion).",
        ),
    ] = None,
    no_tracking: Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow (no registry, no promotion).")] = False,
    no_prefect: Annotated[
        bool, typer.Option("--no-prefect", help="Run the same steps in-process without Prefect (models one at a time).")
    ] = False,
    wide: Annotated[bool, typer.Option("--wide", help="Show full intervals [low, high] in the comparison table.")] = False,
    resume_tracking: Annotated[
        Path | None,
        typer.Option(
            "--resume-tracking",
            help="Log the runs a failed tracking store left on disk (the directory a failed run named, "
            "or tracking.offline_dir for all of them) instead of running the pipeline.",
        ),
    ] = None,
    if_changed: Annotated[
        bool,
        typer.Option(
            "--if-changed",
            help="Train nothing when the data, split, config and code equal those of the last finished run "
            "of this config and data source (as scheduled runs do; needs tracking): one line names that run. "
            "Runs started at once take turns on this machine only (a file lock), not across machines.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help='Train even when the inputs are unchanged (also when orchestration.if_unchanged = "skip"). '
            "A run started by hand trains by default: this overrides only that config setting.",
        ),
    ] = False,
) -> None:
    """Run the training pipeline: ingest -> split -> train all models -> evaluate -> MLflow -> promote.

    Runs as a Prefect flow on the ephemeral API by default, or on PREFECT_API_URL when set.
    Defaults to pipelines/configs/default.toml (synthetic data) when no --config is given.
    Exit code 0 when every model finished or was skipped (EASE above its catalogue bound: it does
    not apply to the data), 1 when any model failed or all were skipped (the others are still logged),
    2 when the tracking store failed mid-run: the summary and --json are still written, and the
    trained models and their logs are kept in a directory the error names, for --resume-tracking;
    2 also when the Prefect server stopped answering during the run (models that finished are logged).
    Ctrl-C exits 130 and SIGTERM 143, after stopping every model (their MLflow runs closed KILLED);
    while a model finishes one long computation, a second Ctrl-C exits at once.
    The run promotes its challenger on its own only when no model failed and it tested at least
    promotion.min_test_users users (default 20); otherwise nothing moves and the last line says why:
    `recsys promote` promotes it deliberately.
    Inputs equal to the last finished run's (orchestration.if_unchanged): a run started by hand trains
    (and names the run it repeats); with --if-changed, or as a scheduled run, it trains nothing and
    exits 0 with one line naming that run.
    """
    given, config = config, config_path(config)  # a shipped config's name -> its file
    cfg = load_run_config(config, set_, default=resume_tracking is None)
    writable_output(json_out, "--json")
    if resume_tracking is not None:
        _resume_tracking(cfg, resume_tracking)
        return
    cfg = _skip_policy(cfg, if_changed=if_changed, force=force, tracking=not no_tracking)
    from pipelines.report import comparison_table, run_warning

    console.print(f"[bold]recsys run[/] {config or '(defaults)'}: {len(cfg.models)} models, data = {cfg.data.source}")
    summary, failed = _execute(cfg, config, set_ or [], tracking=not no_tracking, prefect=not no_prefect)
    if summary.get("unchanged"):
        _unchanged(summary, json_out, cfg, store_args(given, set_), prefect=not no_prefect)
        return
    from pipelines.run import ModelOutcome, PipelineResult

    result = PipelineResult(
        dataset=summary["dataset"],
        models=[ModelOutcome(**{k: v for k, v in m.items()}) for m in summary["models"]],
        champion=summary.get("champion"), promotion=summary.get("promotion", {}),
        mlflow_parent_run_id=summary.get("mlflow_parent_run_id"), tracking_uri=summary.get("tracking_uri"),
        wall_seconds=summary.get("wall_seconds", 0.0), step_seconds=summary.get("step_seconds", {}),
        tracking_error=summary.get("tracking_error"), unlogged_dir=summary.get("unlogged_dir"),
    )
    print_table(comparison_table(result, cfg, wide=wide, width=console.width), wide)
    if warning := run_warning(result, cfg):
        err_console.print(f"warning: {warning}", style="yellow", markup=False, soft_wrap=True)
    if json_out is not None:
        result.write_json(json_out)
    _where_to_look(summary, json_out, cfg, store_args(given, set_), prefect=not no_prefect)
    if summary.get("tracking_error"):
        from rich.markup import escape

        from pipelines.report import tracking_failed_line

        err_console.print(f"[bold red]error:[/] {escape(tracking_failed_line(summary, store_args(given, set_)))}",
                          highlight=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(code=2)
    if failed:
        console.print(f"[bold red]{failed}[/]")
        raise typer.Exit(code=1)


def _skip_policy(cfg: RunConfig, *, if_changed: bool, force: bool, tracking: bool) -> RunConfig:
    """`cfg` with `orchestration.if_unchanged` as --if-changed / --force set it (pipelines.unchanged)."""
    from recsys.errors import ConfigError

    if if_changed and force:
        raise ConfigError("--if-changed and --force: one skips a run whose inputs are unchanged, the other "
                          "trains it; pass one")  # fmt: skip
    if if_changed and not (tracking and cfg.tracking.enabled):
        raise ConfigError("--if-changed compares with the last finished run in MLflow, and this run has no "
                          "tracking: drop --no-tracking (or tracking.enabled = false), or --if-changed")  # fmt: skip
    if not (if_changed or force):
        return cfg
    out = cfg.model_copy(deep=True)
    out.orchestration.if_unchanged = "skip" if if_changed else "train"
    return out


def _unchanged(summary: dict, json_out: Path | None, cfg: RunConfig, args: str, *, prefect: bool) -> None:
    """The end of a run that trained nothing: where the run it repeats is. Its line was logged; in
    Prefect's log format (time, level, flow run) with the flow's, so there it is said once more."""
    from pipelines.run import PipelineResult

    same = summary["unchanged"]
    if json_out is not None:
        PipelineResult(dataset=summary["dataset"], models=[], champion=summary.get("champion"),
                       promotion=summary.get("promotion", {}),
                       tracking_uri=summary.get("tracking_uri"), wall_seconds=summary.get("wall_seconds", 0.0),
                       step_seconds=summary.get("step_seconds", {}), unchanged=same).write_json(json_out)  # fmt: skip
    lines = [same["message"]] if prefect else []
    lines += [f"MLflow store: {summary.get('tracking_uri')}   repeated run: {same['matches_run']}",
             f"compare:      recsys compare{args} --metric {cfg.promotion.metric}",
             f"data:         {summary['dataset'].get('processed_dir')}"]  # fmt: skip
    if json_out:
        lines.append(f"summary:      {json_out}")
    console.print("\n".join(lines), soft_wrap=True, highlight=False, markup=False)


def ephemeral_prefect_settings() -> None:
    """Settings for Prefect's ephemeral API, which `recsys run` and `recsys schedule` start as a
    local server unless PREFECT_API_URL is set: on a loaded 2-core machine it needs more than the
    default 20 s to start, and its telemetry, offline, logs an ERROR line. A user's own values win.
    Environment variables only: set before Prefect's import reads its settings."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def ephemeral_prefect_defaults() -> None:
    """`ephemeral_prefect_settings`, and the server started in a session of its own
    (`isolate_ephemeral_server`, which imports Prefect's server module: ~3 s)."""
    ephemeral_prefect_settings()
    from flows.ephemeral import isolate_ephemeral_server

    isolate_ephemeral_server()  # Ctrl-C's SIGINT to the terminal's process group must not stop it mid-run


CLIENT_RETRIES = 2
"""Prefect client retries for `recsys run` (PREFECT_CLIENT_MAX_RETRIES unless the environment sets
it): waits of 2 and 4 s, a grace of ~6 s per request for a server that blips. Prefect's default, 5
(2 + 4 + 8 + 16 + 32 s), made each request to a server that had died mid-run take a minute to fail,
one after the other, so the run ended minutes after the server (a restarted server comes back after
that anyway, and the run cannot continue on it)."""


def bounded_client_retries() -> None:
    """Set `recsys run`'s Prefect client retries (CLIENT_RETRIES) unless the environment sets them;
    before Prefect's import reads its settings."""
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", str(CLIENT_RETRIES))


def _execute(cfg, config: Path | None, overrides: list[str], *, tracking: bool, prefect: bool) -> tuple[dict, str | None]:
    from recsys.import_gc import defer_full_collections, imports_done

    defer_full_collections()  # until the imports below are in: ~1 CPU-s of full collections fewer
    if not prefect:
        from pipelines.run import run_pipeline

        imports_done()
        result = run_pipeline(cfg, tracking=tracking, log=lambda msg: console.print(f"  {msg}"))
        failed = f"{len(result.failed)} model(s) failed" if result.failed else None
        return result.to_json(), failed
    bounded_client_retries()  # before Prefect's import (in launch_server_early) reads its settings
    ephemeral_prefect_settings()
    from flows.server_start import launch_server_early, start_server_in_background

    # The temporary server's process first (Prefect's settings read, ~0.8 s in): it starts while
    # Prefect's server module, the flows, models and tracking are imported here.
    early = launch_server_early()
    try:
        ephemeral_prefect_defaults()
        from flows.ephemeral import check_api, lost_api, running_servers, stop_ephemeral_server

        already = running_servers()  # e.g. a test harness's: not this run's to stop
        server_start = start_server_in_background(early)  # handed to Prefect, waited on by a thread
    except BaseException:
        if early is not None:
            early.stop()
        raise
    try:
        from flows.api_loss import give_up_on_api, one_shot, quiet_api_noise
        from flows.errors import quiet_deterministic_errors
        from flows.pipeline import PipelineFailed, close_dead_flow_runs, flow_run_tags, training_flow_for

        if not debug_enabled():
            quiet_deterministic_errors()
            quiet_api_noise()
        from prefect import tags

        imports_done()  # collected once and frozen while the server starts
        check_api("--no-prefect")  # a server that is down: one line now, not Prefect's error after the set-up
        server_start.wait()
    except BaseException:
        server_start.abandon()
        raise
    previous = _stop_worker_threads_on_signals()
    try:
        _stop_servers_of_killed_runs()
        try:  # flow runs a killed `recsys run` left RUNNING: Crashed, as Prefect marks lost infrastructure
            closed = close_dead_flow_runs()
            if closed:
                console.print(f"  marked {len(closed)} flow run(s) of dead processes Crashed")
        except Exception as exc:  # never a reason not to run
            console.print(f"  [yellow]could not check for flow runs of dead processes: {exc}[/]")
        with tags(*flow_run_tags()), one_shot():
            return training_flow_for(cfg)(cfg, tracking), None
    except PipelineFailed as exc:
        return exc.summary, str(exc)
    except Exception as exc:
        started = [server for server in running_servers() if not any(server is kept for kept in already)]
        if (lost := lost_api(exc, "--no-prefect", started)) is not None:  # the server died mid-run: one line
            give_up_on_api()  # nobody to send anything to: the exit must not wait on Prefect's senders
            raise lost from None
        raise
    finally:
        _restore_signals(previous)
        stop_ephemeral_server(keep=already)  # now, not at exit: the wall time printed includes it


def _stop_servers_of_killed_runs() -> None:
    """Stop the temporary Prefect servers that killed `recsys run`s and `recsys schedule`s left:
    still serving, reparented to init (~230 MB each)."""
    from flows.ephemeral import stop_orphaned_servers

    try:
        if orphans := stop_orphaned_servers():
            console.print(f"  stopped {len(orphans)} temporary Prefect server(s) left by killed runs "
                          f"(pids {', '.join(map(str, orphans))})")
    except Exception as exc:  # never a reason not to run
        console.print(f"  [yellow]could not check for Prefect servers of killed runs: {exc}[/]")


def _stop_worker_threads_on_signals():
    """Ctrl-C raises KeyboardInterrupt in the main thread only; models train in Prefect's worker
    threads, and the flow's exit waits for them. These handlers also set `recsys.interrupt`, which
    every training loop checks, so they stop within a step (their runs closed KILLED). SIGTERM (a
    scheduler's stop, `timeout`) unwinds the same way instead of killing the process where it
    stands, which left Prefect's temporary server running; during the flow Prefect's own handler
    raises first and, after its teardown, re-sends the signal here."""
    import signal

    from recsys import interrupt

    def on_interrupt(signum, frame):
        interrupt.request()
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, on_interrupt), signal.signal(signal.SIGTERM, on_terminate)


def _restore_signals(previous) -> None:
    import signal

    from recsys import interrupt

    signal.signal(signal.SIGINT, previous[0])
    signal.signal(signal.SIGTERM, previous[1])
    interrupt.clear()  # the request is served: the flow's threads are done; later commands in this process run


def _resume_tracking(cfg, path: Path) -> None:
    """`recsys run --resume-tracking DIR`: log every kept bundle under DIR into the store."""
    import shlex

    from recsys.errors import ConfigError, TrackingError
    from recsys.tracking.offline import bundle_in_use, find_bundles, kept_experiment, resume_bundle
    from recsys.tracking.runs import Tracker

    if not path.exists():  # said "no runs kept ... here", as if it had looked in a directory
        raise ConfigError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise ConfigError(f"{path} is a file, not a directory: give the directory a failed run named "
                          "(or tracking.offline_dir)")  # fmt: skip
    bundles = find_bundles(path)
    if not bundles:
        raise TrackingError(f"{path}: no runs kept by a failed tracking store here (expected <dir>/<run>/run.json)")
    # Before the store is touched (the wrong config would make its experiment): a bundle of another
    # experiment logged here is where `recsys promote` / `compare` with the run's config never look.
    others = {b: theirs for b in bundles if (theirs := kept_experiment(b)) not in (None, cfg.tracking.experiment)}
    for bundle, theirs in others.items():
        err_console.print(
            f"skipped {bundle}: a run of experiment {theirs!r}, and this command logs to {cfg.tracking.experiment!r}; "
            f"resume it with the run's --config, or --set {shlex.quote(f'tracking.experiment={theirs}')}",
            highlight=False, markup=False, soft_wrap=True,
        )  # fmt: skip
    bundles = [b for b in bundles if b not in others]
    if not bundles:
        raise TrackingError(f"{path}: no run kept here is of experiment {cfg.tracking.experiment!r} (see above): "
                            "give the --config and --set the run used")  # fmt: skip
    # A bundle whose run still trains is not whole yet: logged now, the models its run keeps later
    # were never logged. The others are logged; the command then fails naming what it left.
    checked = {b: bundle_in_use(b) for b in bundles}
    busy = [exc for exc in checked.values() if exc is not None]
    bundles = [b for b, exc in checked.items() if exc is None]
    if not bundles:
        raise busy[0] if len(busy) == 1 else TrackingError("; ".join(map(str, busy)))
    tracker = Tracker(cfg.tracking, cfg)  # checks the store, and closes runs whose process died
    for bundle in bundles:
        report = resume_bundle(tracker.client, tracker.experiment_id, bundle)
        if report.already_logged:
            console.print(f"{bundle}: already logged ({', '.join(report.runs.values())})")
            continue
        runs = ", ".join(f"{key} -> {run_id}" for key, run_id in report.runs.items())
        console.print(f"logged {bundle} into {tracker.uri}: {runs}")
        if report.registered:
            console.print(f"  registered {', '.join(report.registered)}; apply the promotion rule with `recsys promote`")
    if busy:
        raise TrackingError("; ".join(map(str, busy)))


def champion_line(summary: dict, args: str = "") -> str:
    """`champion: NAME (DECISION: REASON)` after a promotion; after `kept` / `not comparable`
    `not promoted: this run's best model by validation METRIC, NAME (...); LINE champion unchanged:
    NAME`, because the champion is then an earlier run's model (of another lineage, for `not
    comparable`) and must not read as this run's. Most reasons start with their decision already."""
    promotion = summary.get("promotion", {})
    reason, decision = promotion.get("reason", ""), promotion.get("decision") or ""
    said = f"{decision}: " if decision and not reason.startswith(decision) else ""
    name = summary.get("champion")
    if not decision and name:  # no promotion ran (tracking or promotion.auto off): nothing is champion
        return f"best model: [bold]{name}[/] ({reason})"
    challenger = promotion.get("challenger")
    if decision in ("kept", "not comparable") and challenger:
        # nothing moved: name this run's best model as the challenger and the line's champion apart
        basis = " ".join(x for x in (promotion.get("selection", ""), promotion.get("metric", "")) if x)
        basis = f" by {basis}" if promotion.get("selection") in ("validation", "test") else ""
        line_name = promotion.get("registered_model") or "the registry line"
        served = f"[bold]{name}[/]" if name else "none"
        line = (f"not promoted: this run's best model{basis}, [bold]{challenger}[/] ({said}{reason}); "
                f"{line_name} champion unchanged: {served}")
        return line + (f"\n{not_comparable_hint(promotion, args)}" if decision == "not comparable" else "")
    if args:  # the commands a failed store's reason names, with this run's store options
        reason = reason.replace("`recsys run --resume-tracking ", f"`recsys run{args} --resume-tracking ")
        reason = reason.replace("`recsys promote`", f"`recsys promote{args}`")
    line = f"champion: [bold]{name or 'unchanged'}[/] ({said}{reason})"
    return line + (f"\n{not_comparable_hint(promotion, args)}" if decision == "not comparable" else "")


def not_comparable_hint(promotion: dict, args: str = "") -> str:
    """The line under a `not comparable` decision: commands that act on this run, as printed.
    `recsys promote --force` printed bare read the default config (another experiment and line, or
    another lineage's newest run): after a movielens.toml run it answered "kept: already champion"
    about the synthetic line, exit 0. So it names this run's store options (`args`, `store_args`)
    and its challenger (`--run-id`). When the registry line serves another lineage (the same config
    on another data set), `--force` would hand that line's serving alias to a model of other data:
    the way out is this lineage's own line, which `recsys promote` can start from this very run, no
    retraining."""
    run = promotion.get("challenger_run_id")
    runs = f" --run-id {run}" if run else ""
    line = promotion.get("own_line")
    if not line:
        return (
            f"nothing moved: look at `recsys compare{args}`, then `recsys promote{args}{runs} --force` makes "
            "the challenger champion deliberately"
        )
    return (
        f"nothing moved: `recsys promote{args}{runs} --set promotion.registered_model={line}` makes this data set's "
        "challenger champion of a line of its own; give its later runs the same --set"
    )


STORE_SETTINGS = ("tracking", "promotion")
"""The config sections `recsys compare` / `promote` / `ui` read to find a run's store and line."""


def store_args(config: Path | None, set_: list[str] | None) -> str:
    """The options that point `recsys compare` / `ui` at the store, experiment and registry line
    this run used: its --config (unless the default) and its --set of tracking.* / promotion.*.
    Printed bare, the suggestions read the default config's experiment in ./mlflow, which holds
    nothing of a run with another config or tracking URI. A shipped config is named as the user can
    type it anywhere (`--config plays`, not its path inside the installed package); the default
    one, here or shipped, is what a bare command reads."""
    import shlex

    names = {path: name for name, path in shipped_configs().items()}
    default = config is None or config == DEFAULT_CONFIG or names.get(config) == "default"
    args = [] if default else ["--config", names.get(config, str(config))]
    for item in set_ or []:
        if item.split("=", 1)[0].strip().split(".", 1)[0] in STORE_SETTINGS:
            args += ["--set", item]
    return "".join(f" {shlex.quote(a)}" for a in args)


def _where_to_look(
    summary: dict, json_out: Path | None, cfg: RunConfig, args: str = "", *, prefect: bool = True
) -> None:
    from recsys.tracking.store import is_http, resolve_tracking_uri
    from recsys.tracking.ui import experiment_runs_url, runs_page_url

    lines = [champion_line(summary, args)]
    uri = summary.get("tracking_uri")
    if uri:
        lines.append(f"MLflow store: {uri}   parent run: {summary.get('mlflow_parent_run_id')}")
        if summary.get("tracking_error"):  # not asked again: a frozen server cost ~95 s more here
            runs = runs_page_url(uri if is_http(uri) else "http://127.0.0.1:5000", None)
        else:  # the summary's URI has its password hidden: look the experiment up with the real one
            runs = experiment_runs_url(resolve_tracking_uri(cfg.tracking), cfg.tracking.experiment)
            if is_http(uri):
                runs = runs.replace(resolve_tracking_uri(cfg.tracking).rstrip("/"), uri.rstrip("/"), 1)
        if is_http(uri):
            lines.append(f"browse it:    {runs}")
        elif args or not (Path("Makefile").is_file() and DEFAULT_CONFIG.is_file()):
            # `make ui` opens the default store only, and only in the repository root: run from any
            # other folder (a shipped config by name), it named a Makefile that is not there
            lines.append(f"browse it:    recsys ui{args}  ->  {runs}")
        else:
            lines.append(f"browse it:    make ui   (or: recsys ui  ->  {runs})")
        lines.append(f"compare:      recsys compare{args} --metric {cfg.promotion.metric}")
    lines.append(f"data:         {summary['dataset'].get('processed_dir')}")
    if json_out:
        lines.append(f"summary:      {json_out}")
    total = time.perf_counter() - STARTED
    pipeline = summary.get("wall_seconds", 0)
    # --no-prefect starts no Prefect server: naming one there sent users looking for it
    start = "start-up and Prefect's server" if prefect else "start-up"
    lines.append(f"wall time:    {total:.1f} s end to end = pipeline {pipeline:.1f} s (orchestration overhead "
                 f"{100 * summary.get('orchestration_overhead', 0):.0f}%) + {start} "
                 f"{max(0.0, total - pipeline):.1f} s")
    console.print("\n".join(lines), soft_wrap=True)  # commands stay one line: copy, paste, run


DEFAULT_CRON = "0 3 * * *"
"""`recsys schedule`'s schedule when neither --cron nor --interval is given: 03:00 daily."""


@app.command()
@user_errors
def schedule(
    cron: Annotated[
        str | None,
        typer.Option("--cron", help='Cron expression (default "0 3 * * *": 03:00 daily); or --interval.'),
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    name: Annotated[
        str,
        typer.Option(
            "--name",
            help="Deployment name (training-pipeline/NAME): a second schedule served at the same time on this "
            "machine and Prefect needs another (one of the same name is refused).",
        ),
    ] = "nightly",
    timezone: Annotated[str, typer.Option("--timezone", help="Time zone of the cron schedule.")] = "UTC",
    interval: Annotated[
        float | None,
        typer.Option("--interval", min=1, help="Run every INTERVAL seconds instead of on --cron (21600 = every 6 h)."),
    ] = None,
    overlap: Annotated[
        Literal["skip", "queue", "allow"],
        typer.Option(
            "--overlap",
            help="A run that falls due while the previous one still runs: skip (cancelled; the next run "
            "ingests its files), queue (starts when the previous ends) or allow (side by side).",
        ),
    ] = "skip",
) -> None:
    """Serve the training pipeline as a Prefect deployment on a cron schedule or an --interval (runs until stopped).

    Ctrl-C or SIGTERM (`kill PID`) stops it; a background job of a script (`recsys schedule &`)
    starts with SIGINT ignored by the shell: stop it with `kill PID`.

    Each scheduled run ingests only the files added to a landing directory since the last run
    (append, stable vocab), retrains and re-evaluates every model, and applies the promotion rule;
    when the data, split, config and code equal those of the last finished run, it trains and
    registers nothing and logs one line naming that run (orchestration.if_unchanged; --set
    orchestration.if_unchanged=train retrains every time, `prefect deployment run
    training-pipeline/NAME --param force=true` once).
    A log with timestamps is split by the rolling protocol (train / validation window / forward test
    window of split.window_days after a cut-off that advances with the log; a pair is placed by when
    it was first seen, so the log repeating it later never moves it into a test window) unless
    split.scheduled = "as_configured"; a log without them by the stable hashed split.
    Point PREFECT_API_URL at `prefect server start` (or `make stack`) to see the schedule and its
    runs in the Prefect UI; MLFLOW_TRACKING_URI at the team's MLflow server. Several machines
    sharing one MLflow server: schedule the lineage once, on a shared Prefect server (its deployment
    runs one at a time on any worker); two schedules of one lineage on two machines can both train
    the same new inputs (the lock that stops it is per machine).
    """
    from recsys.errors import ConfigError

    if cron is not None and interval is not None:  # the cron was dropped without a word
        raise ConfigError(f"--cron {cron!r} and --interval {interval:g}: a deployment runs on one schedule, pass one")
    cron = cron or DEFAULT_CRON
    config = config_path(config)
    cfg = load_run_config(config, set_, default=True)  # fail now (also a config naming no model), not at 03:00
    ephemeral_prefect_settings()  # before Prefect's import reads its settings
    from flows.server_start import launch_server_early, start_server_in_background

    # As `recsys run` (`_execute`): the temporary server's process first (Prefect's settings read), so
    # its start overlaps the imports of the flows and of Prefect's server module; none with
    # PREFECT_API_URL. Handed to Prefect only once the checks pass: a refused schedule stops it
    # unannounced, its error line the only one (Prefect's hand-over says "Starting temporary server").
    early = launch_server_early()
    server_start = None
    try:
        from flows.deployments import check_not_served, check_schedule, next_cron_run, serve_pipeline
        from flows.ephemeral import check_api
        from recsys.tracking.store import redact, resolve_tracking_uri

        check_schedule(cron, timezone, interval)  # before "serving ...": not a bug report at Prefect's start
        check_api()
        check_not_served(name)  # a second schedule of it would pause it for both when it stops
        ephemeral_prefect_defaults()
        server_start = start_server_in_background(early)  # handed to Prefect, waited on by a thread

        when = f"every {interval:g} s" if interval else f"cron '{cron}' ({timezone})"
        console.print(f"serving deployment [bold]training-pipeline/{name}[/] {when}; Ctrl-C or SIGTERM "
                      f"(`kill {os.getpid()}`) stops it")
        args = store_args(config, set_)
        lines = [] if interval else [f"next run:     {next_cron_run(cron, timezone)}"]
        if cfg.tracking.enabled:  # where the runs' results go: the schedule itself prints nothing more until then
            lines += [f"MLflow store: {redact(resolve_tracking_uri(cfg.tracking))}",
                      f"browse it:    recsys ui{args}   compare: recsys compare{args} --metric {cfg.promotion.metric}"]
        console.print("\n".join(lines), soft_wrap=True, highlight=False, markup=False)
        server_start.wait()  # serve_pipeline's start of the server then finds it running
    except BaseException:
        if server_start is not None:
            server_start.abandon()  # interrupted, or the server did not start: it stops now
        elif early is not None:
            early.stop()  # refused (a bad cron, a second schedule of the deployment) before the hand-over
        raise
    try:
        _stop_servers_of_killed_runs()  # a `recsys schedule` killed with SIGKILL left its server serving
        # SIGTERM unwinds (exit 143) until the deployment is created; from then on Ctrl-C and SIGTERM are
        # the schedule's stop, which pauses it (exit 0; flows.runner.serve_deployment)
        serve_pipeline(say=lambda line: console.print(f"  {line}", soft_wrap=True, highlight=False, markup=False),
                       name=name, cron=cron, timezone=timezone, interval=interval, overlap=overlap,
                       config_path=str(config) if config else None, overrides=set_ or [])
    finally:
        server_start.abandon()  # stopped by serve_pipeline already, unless it failed before its own stop


def _json_dump(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2))
