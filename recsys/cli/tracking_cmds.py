"""`recsys promote`, `recsys compare`, `recsys registry`, `recsys ui`, `recsys serve`: the MLflow side of the CLI.

MLflow is imported inside the commands so that `recsys --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from recsys.cli.common import (
    ConfigOption,
    JsonOption,
    SetOption,
    app,
    config_path,
    console,
    err_console,
    load_run_config,
    sigterm_to_the_server,
    user_errors,
    writable_output,
    write_text_atomic,
)
from recsys.cli.process import run_in_process_group, stop_orphaned_groups
from recsys.errors import TrackingError

UI_LOG_PREFIX = "recsys-ui-server"
"""`$TMPDIR/recsys-ui-server-<pid>-*/server.log`: the MLflow UI server's output, passed on to our stderr
(`run_in_process_group`), so the server never holds the pipe of `recsys ui | tee`."""

def _config(config: Path | None, overrides: list[str] | None):
    return load_run_config(config_path(config), overrides)


def _client(cfg, *, create: bool = False):
    """The configured store's URI and a client; a local store that does not exist is an error
    (these commands read runs) unless `create`."""
    from recsys.tracking.store import check_tracking, client, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking)
    check_tracking(uri, create=create)
    return uri, client(uri)


def venv_env(tracking_uri: str | None = None) -> dict[str, str]:
    """Environment for MLflow subprocesses: this interpreter's bin dir first on PATH (`mlflow
    models serve` execs `uvicorn` by name), the tracking URI when given."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


@app.command()
@user_errors
def promote(
    config: ConfigOption = None,
    set_: SetOption = None,
    run_id: Annotated[
        list[str] | None,
        typer.Option(
            "--run-id",
            help="Candidate model run id (repeatable; the 8-digit start that compare and registry print will do). Default: the models of the latest pipeline run of this config's "
            "lineage (config name + data source) that has ended (one still running promotes its own).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Make the chosen challenger champion even when the rule says kept or not comparable "
            "(e.g. after changing split.seed); recorded on the run as forced.",
        ),
    ] = False,
) -> None:
    """Promote the run's challenger to champion if it beats the current one (promotion.* in config).

    The challenger is the candidate with the best validation promotion.metric. It must beat the
    champion - re-scored on the challenger's split, the one logged with its run - on the test users
    with a paired test p < promotion.p_value, and not lose more than promotion.max_coverage_drop of
    coverage. The same function decides inside `recsys run`, so both give the same decision. The
    verdict is promoted, kept, or not comparable (another lineage, test pairs the champion
    trained on, sampled metrics against full-corpus ones, a champion whose metrics cannot be read),
    with the reason; the last line says where the champion and challenger aliases point now.
    This is the deliberate promotion of a `recsys run` that promoted nothing on its own (a model
    failed, or fewer than promotion.min_test_users test users): the rule above still applies, and
    promotion.min_test_users does not.
    """
    from pipelines.promote import run_promotion
    from recsys.lineage import lineage
    from recsys.tracking.compare import latest_pipeline_model_runs

    cfg = _config(config, set_)
    candidates = list(run_id or [])
    _, mlflow_client = _client(cfg)
    close_dead_runs(mlflow_client, cfg.tracking.experiment, cfg.tracking.stale_run_minutes * 60)
    if not candidates:
        candidates = latest_pipeline_model_runs(mlflow_client, cfg.tracking.experiment, lineage(cfg),
                                                cfg.tracking.stale_run_minutes * 60)  # fmt: skip
    decision = run_promotion(cfg, candidates, force=force)
    colour = {"promoted": "green", "kept": "yellow"}.get(decision.decision, "red")
    console.print(decision_line(decision.decision or "kept", decision.reason, colour), highlight=False)
    if decision.decision == "not comparable":
        from recsys.cli.pipeline_cmds import not_comparable_hint, store_args

        console.print(not_comparable_hint(decision.to_dict(), store_args(config, set_)), highlight=False)
    if decision.challenger_mean is not None and decision.champion_mean is not None:
        lo_a, hi_a = decision.challenger_ci or (float("nan"), float("nan"))
        lo_b, hi_b = decision.champion_ci or (float("nan"), float("nan"))
        console.print(
            f"{decision.metric} over {decision.n_users} test users: challenger {decision.challenger_mean:.4f} "
            f"[{lo_a:.4f}, {hi_a:.4f}], champion {decision.champion_mean:.4f} [{lo_b:.4f}, {hi_b:.4f}], "
            f"p = {decision.p_value:.3g} (alpha {decision.alpha:.3g}, challenger chosen on {decision.selection})",
            highlight=False,
        )
    from recsys.tracking.registry import CHALLENGER, alias_version

    challenger_now = alias_version(mlflow_client, cfg.promotion.registered_model, CHALLENGER)
    console.print(aliases_line(cfg.promotion.registered_model, decision, challenger_now and challenger_now.version))


def close_dead_runs(mlflow_client, experiment: str, stale_after_s: float) -> list[str]:
    """Close KILLED the runs of `experiment` left RUNNING by a process that died, as the next
    `recsys run`'s start does (`liveness.mark_dead_runs`), and say so in one line. Why here too:
    after the tracking server died mid-run, promote refused that run as dead but left it RUNNING in
    the store (and the UI) until the next `recsys run`. A failing check never stops the command."""
    from recsys.tracking.liveness import mark_dead_runs

    try:
        found = mlflow_client.get_experiment_by_name(experiment)
        closed = mark_dead_runs(mlflow_client, [found.experiment_id], stale_after_s) if found is not None else []
    except Exception as exc:
        err_console.print(f"warning: could not check for runs left RUNNING by dead processes: {exc}",
                          style="yellow", markup=False, highlight=False)  # fmt: skip
        return []
    if closed:
        console.print(f"closed {len(closed)} run(s) left RUNNING by a process that died as KILLED: {', '.join(closed)}",
                      markup=False, highlight=False, soft_wrap=True)  # fmt: skip
    return closed


def decision_line(decision: str, reason: str, colour: str) -> str:
    """`DECISION: REASON` with the decision in colour, said once: most reasons start with their
    decision already (`promoted: no champion yet`), which printed `promoted: promoted: ...`."""
    if reason.startswith(decision):
        return f"[bold {colour}]{decision}[/]{reason[len(decision):]}"
    return f"[bold {colour}]{decision}[/]: {reason}"


def aliases_line(registered_model: str, decision, challenger_now: str | None = None) -> str:
    """Where the aliases point after the decision (`decision.champion_version`), and for a promotion
    the champion it replaced (`decision.compared_version`). A challenger the decision did not
    register (another lineage's run: not comparable) leaves the alias where it was, `challenger_now`
    (the store's): it printed `challenger v-` beside a line whose challenger alias still held v1."""
    champion = f"v{decision.champion_version or '-'}"
    if decision.promoted and decision.compared_version and decision.compared_version != decision.champion_version:
        champion += f" (was v{decision.compared_version})"
    return f"{registered_model}: champion {champion}, challenger v{decision.challenger_version or challenger_now or '-'}"


def _no_alias(mlflow_client, name: str, alias: str) -> str:
    """Why `recsys serve` has nothing to load, with what the store does hold: a mistyped --alias
    or --model was told to run `recsys promote`, which would not help."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = sorted(mlflow_client.get_registered_model(name).aliases)
    except MlflowException:
        lines = sorted(m.name for m in mlflow_client.search_registered_models(max_results=50))
        shown = ", ".join(lines[:10]) + (", ..." if len(lines) > 10 else "")
        return (
            f"no registered model {name!r} in {mlflow_client.tracking_uri}: pass --model one of "
            f"{shown}" if lines else f"no registered model {name!r} in {mlflow_client.tracking_uri}: run `recsys run` first"
        )
    if aliases:
        return f"registered model {name!r} has no version with alias {alias!r}: pass --alias one of {', '.join(aliases)}"
    if mlflow_client.search_model_versions(f"name = '{name}'", max_results=1):
        # a per-model line (default-wals): promotion never sets aliases there
        return (f"registered model {name!r} has no aliases (only promotion.registered_model gets champion / "
                f"challenger): pass --version N (`recsys registry --model {name}` lists them)")
    return f"registered model {name!r} has no version with alias {alias!r}; run `recsys promote` first"


@app.command()
@user_errors
def compare(
    config: ConfigOption = None,
    set_: SetOption = None,
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", "-e", help="MLflow experiment (default: tracking.experiment)."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", "-m", help="Metric to rank by, e.g. recall@20 (default: promotion.metric)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | markdown | csv | html")] = "table",
    runs: Annotated[
        int, typer.Option("--runs", "-n", min=1, max=50_000, help="How many of the newest model runs to compare (MLflow returns at most 50,000).")
    ] = 20,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a recall@k curve plot (PNG) of the compared models.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the table to this file instead of stdout.")
    ] = None,
) -> None:
    """Compare models across pipeline runs: metric mean, CI (evaluation.confidence, 95% by default) and delta to the current champion.

    Rows are grouped by lineage (config name + data source), split digest and evaluation protocol
    (full corpus, or sampled metrics), all shown; the delta to the champion is computed only within a
    group (against the champion measured on that split that way), never across data sets, splits
    or protocols. Run it with the --config and --set that `recsys run` used (it prints the line).
    """
    from recsys.tracking.compare import compare as compare_runs
    from recsys.tracking.compare import plot_curves, render, rich_table

    if fmt not in ("table", "markdown", "csv", "html"):
        raise TrackingError(f"--format {fmt!r}: choose table, markdown, csv or html")
    # before the store is read: a --plot directory failed after the table, naming a temp file beside it
    writable_output(output, "--output", example="compare.md")
    writable_output(plot, "--plot", example="compare.png")
    cfg = _config(config, set_)
    metric = metric or cfg.promotion.metric
    _, mlflow_client = _client(cfg)
    frame = compare_runs(
        mlflow_client, experiment or cfg.tracking.experiment, metric, runs, cfg.promotion.registered_model
    )
    if frame.height == 0:
        from recsys.tracking.compare import no_finished_models

        err_console.print(no_finished_models(mlflow_client, experiment or cfg.tracking.experiment), markup=False)
        return
    if fmt == "table" and output is None:
        console.print(rich_table(frame, metric, width=console.width))
    else:
        text = render(frame, metric, "markdown" if fmt == "table" else fmt)  # type: ignore[arg-type]
        if output is None:
            sys.stdout.write(text)
        else:
            write_text_atomic(output, text)
            console.print(f"wrote {output}")
    if plot is not None:
        console.print(f"wrote {plot_curves(frame, plot)}")


@app.command()
@user_errors
def registry(
    config: ConfigOption = None,
    set_: SetOption = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Only this registered model, e.g. default-best (default: all).")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", "-m", help="Metric shown per version, e.g. recall@20 (default: promotion.metric)."),
    ] = None,
    versions: Annotated[
        int,
        typer.Option(
            "--versions", "-n", min=1, max=10_000,
            help="Newest versions shown per registered model; versions holding an alias are always shown.",
        ),
    ] = 10,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | markdown")] = "table",
    json_out: JsonOption = None,
) -> None:
    """List the model registry: every registered model and its versions, with aliases (champion,
    challenger), model, metric, promotion decision, run id and data fingerprint.

    Each trained model is a version of PREFIX-NAME (tracking.model_name_prefix, e.g. default-wals);
    promotion.registered_model (e.g. default-best) is the serving line whose champion alias `recsys
    serve` loads. The champion's row is bold; --json has every version's full run id and data
    fingerprint. Run it with the --config and --set that `recsys run` used to read the same store.
    """
    from recsys.tracking.listing import list_registry, render_markdown, rich_table, to_json

    if fmt not in ("table", "markdown"):
        raise TrackingError(f"--format {fmt!r}: choose table or markdown")
    writable_output(json_out, "--json")
    cfg = _config(config, set_)
    metric = metric or cfg.promotion.metric
    uri, mlflow_client = _client(cfg)
    models = list_registry(mlflow_client, metric, model, versions)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(to_json(models, metric, uri), indent=2) + "\n")
    if not models:
        err_console.print(f"no registered models in {uri} yet: `recsys run` registers every model it trains")
        return
    if fmt == "markdown":
        sys.stdout.write(render_markdown(models, metric))
    else:
        console.print(rich_table(models, metric, width=console.width))


@app.command()
@user_errors
def ui(
    config: ConfigOption = None,
    set_: SetOption = None,
    port: Annotated[
        int, typer.Option("--port", "-p", min=1, max=65535, help="Port for the MLflow UI (bound to 127.0.0.1).")
    ] = 5000,
) -> None:
    """Open the MLflow UI on the configured store (local SQLite by default) at http://127.0.0.1:PORT.

    Prints the experiment's runs table as a link: model runs ranked by the promotion metric, with
    recall@k, ndcg@k and folding@k first (the saved view "recsys: models by ...")."""
    from recsys.stack import mlflow_server_env
    from recsys.tracking.store import (
        artifact_location,
        is_sqlite,
        remove_init_lock,
        resolve_tracking_uri,
        sqlite_path,
    )
    from recsys.tracking.ui import experiment_runs_url

    cfg = _config(config, set_)
    uri = resolve_tracking_uri(cfg.tracking)
    if not is_sqlite(uri):
        raise TrackingError(
            f"tracking URI {uri} is a server already: open {experiment_runs_url(uri, cfg.tracking.experiment)}"
        )
    if orphans := stop_orphaned_groups():  # what a `recsys ui` killed with SIGKILL left serving
        console.print(f"stopped {len(orphans)} MLflow UI server(s) left by a killed recsys ui "
                      f"(pids {', '.join(map(str, orphans))})")
    _port_is_free(port)  # else MLflow's server failed after the link was printed, and exited 0
    if not sqlite_path(uri).is_file():
        err_console.print(
            f"note: no store at {sqlite_path(uri)} yet (recsys run creates it there): the UI starts empty; "
            "run recsys ui where recsys run ran, or set MLFLOW_TRACKING_URI",
            style="yellow", markup=False, soft_wrap=True,
        )  # fmt: skip
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    artifacts = artifact_location(uri, cfg.tracking.artifact_location)
    if artifacts:
        command += ["--default-artifact-root", artifacts]
    base = f"http://127.0.0.1:{port}"
    console.print(f"MLflow UI on {base} (Ctrl-C to stop)")
    console.print(f"runs: {experiment_runs_url(uri, cfg.tracking.experiment, base)}", soft_wrap=True)
    try:
        code = run_in_process_group(command, env=mlflow_server_env(venv_env()), log_prefix=UI_LOG_PREFIX)
    finally:
        remove_init_lock(uri)  # the empty db_init_lock-<hash> its job store leaves in the temp folder
    raise typer.Exit(code)


@app.command()
@user_errors
def serve(
    config: ConfigOption = None,
    set_: SetOption = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Registered model (default: promotion.registered_model).")
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option("--alias", help="Registry alias to serve, e.g. champion or challenger (default: champion)."),
    ] = None,
    version: Annotated[
        int | None,
        typer.Option(
            "--version", min=1,
            help="Serve this version instead of an alias (e.g. of a per-model line such as default-wals, "
            "which has no aliases; `recsys registry` lists them).",
        ),
    ] = None,
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="Port (bound to 127.0.0.1).")] = 5001,
    max_results: Annotated[
        int, typer.Option("--max-results", min=1, help="Most recommendations (rows x k) one request may ask for; 413 beyond.")
    ] = 100_000,
) -> None:
    """Serve a registered model over REST on 127.0.0.1 (in this process; Ctrl-C or SIGTERM stops it).

    POST /invocations with {"dataframe_records": [{"user_id": "u1"}], "params": {"k": 10}} (or
    "dataframe_split", "inputs": {"user_id": [...]}, "instances"); each answer row has user_id,
    item_ids, scores and source (model | fold_in | popularity). k must be 1..number of items; errors
    are JSON {"error_code", "message"} with a one-line message (400, 413 over --max-results, 415).
    POST /similar with {"item_id": "i1", "k": 10} (or a list of ids) answers the k items most
    similar to each (cosine of the model's item vectors, a blend's members' cosines weighted as
    its scores are; never the item itself). A model logged
    with an ANN index (catalogues of serving.ann.min_items items or more) is searched through it.
    The request schema is at /openapi.json, interactive docs at /docs.
    """
    if alias is not None and version is not None:
        # both named: serving one of them silently (it was the version) answers with a model the
        # user may not have meant; the alias's version and the numbered one can differ
        raise typer.BadParameter(
            f"--alias {alias} and --version {version} each name a model: pass one of them, not both",
            param_hint="'--alias'",
        )
    alias = alias or "champion"
    cfg = _config(config, set_)  # before the server's imports (torch, mlflow): a bad config fails at once
    from recsys.tracking.registry import alias_version
    from recsys.tracking.server import build_app, load_index
    from recsys.tracking.server import serve as run_server

    uri, mlflow_client = _client(cfg)
    name = model or cfg.promotion.registered_model
    if version is not None:
        found = _numbered_version(mlflow_client, name, version)
        label, model_uri = f"{name} version {found.version}", f"models:/{name}/{found.version}"
    else:
        found = alias_version(mlflow_client, name, alias)
        if found is None:
            raise TrackingError(_no_alias(mlflow_client, name, alias))
        label, model_uri = f"{name}@{alias} (version {found.version})", f"models:/{name}@{alias}"
    _port_is_free(port)
    with console.status(f"loading {label}"):
        index = load_index(model_uri, uri)
    shown = f"{name}/{found.version}" if version is not None else f"{name}@{alias}"
    app = build_app(index, name=shown, version=str(found.version), max_results=max_results)
    console.print(f"serving {label} on http://127.0.0.1:{port}/invocations")
    sigterm_to_the_server()  # uvicorn shuts down gracefully, then re-raises it: the process ends by it
    run_server(app, port)


def _numbered_version(mlflow_client, name: str, version: int):
    """Version `version` of `name`, or a TrackingError naming the versions there are."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version(name, str(version))
    except MlflowException:
        pass
    quoted = name.replace("'", "\\'")
    numbers = sorted(int(v.version) for v in mlflow_client.search_model_versions(f"name = '{quoted}'"))
    if not numbers:  # no such model (or an empty one): say what the store holds
        raise TrackingError(_no_alias(mlflow_client, name, "champion"))
    held = f"versions {numbers[0]} to {numbers[-1]}" if len(numbers) > 1 else f"version {numbers[0]}"
    raise TrackingError(f"registered model {name!r} has no version {version}: it has {held} "
                        f"(`recsys registry --model {name}`)")  # fmt: skip


def _port_is_free(port: int) -> None:
    import socket

    with socket.socket() as probe:
        # as the servers bind (uvicorn, MLflow's): a stopped server's connections left in TIME_WAIT
        # do not hold the port, a listening socket does (Linux refuses the bind either way)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise TrackingError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): choose another --port") from None


def serve_command(model_uri: str, port: int) -> list[str]:
    """`mlflow models serve` for a recsys pyfunc (MLflow's own server; `recsys serve` is the
    documented endpoint, this is how the pyfunc is checked against MLflow's)."""
    return [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
