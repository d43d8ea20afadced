"""`recsys stack up | down | status`: the team's tracking and orchestration stack on this machine
(PostgreSQL, an MLflow server and a Prefect server on it), for trying the pipeline as it runs in
production; `make stack` / `make stack-stop` call these."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from recsys.cli.common import app, console, err_console, user_errors, write_text_atomic

if TYPE_CHECKING:
    from recsys.stack import Stack

stack_app = typer.Typer(
    help="A local PostgreSQL + MLflow server + Prefect server, as a team runs them (make stack).",
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")

DirOption = Annotated[
    Path, typer.Option("--dir", help="Where the stack keeps its data, logs and state (.stack is git-ignored).", file_okay=False)
]


@stack_app.command("up")
@user_errors
def up(
    directory: DirOption = Path(".stack"),
    postgres_port: Annotated[int, typer.Option("--postgres-port", min=1, max=65535, help="PostgreSQL port on 127.0.0.1.")] = 5433,
    mlflow_port: Annotated[int, typer.Option("--mlflow-port", min=1, max=65535, help="MLflow server port on 127.0.0.1.")] = 5000,
    prefect_port: Annotated[int, typer.Option("--prefect-port", min=1, max=65535, help="Prefect server port on 127.0.0.1.")] = 4200,
) -> None:
    """Start PostgreSQL, the MLflow server (artifacts through its proxy) and the Prefect server, all on
    127.0.0.1, and print how to point `recsys run` / `recsys schedule` at them. Data survives
    `recsys stack down`; delete the directory to start afresh. Run again on a running stack, it waits
    for a server still starting, and starts a server that died or hangs again (the whole stack if
    PostgreSQL died)."""
    from recsys.stack import Stack, stack_lock

    with stack_lock(directory, _say):  # a second `up` waits, then finds this one's stack running
        running = Stack.from_state(directory)
        if running is not None:
            down = _parts_down(running, directory)
            if not down:
                console.print(f"the stack in {directory} is running already")
                _print_usage(running.mlflow_url, running.prefect_api_url, directory)
                return
            if "postgres" not in down:  # a server died or hangs: start it alone, the rest serving on
                console.print(f"  {', '.join(down)} of the stack in {directory} is not running: starting it again",
                              highlight=False, soft_wrap=True)  # fmt: skip
                running.restart(down, log=lambda line: console.print(f"  {line}", highlight=False, soft_wrap=True))
                _print_usage(running.mlflow_url, running.prefect_api_url, directory)
                return
            # PostgreSQL died (kill -9, the OOM killer): the servers run on, answering 500; stop them before
            # starting afresh, or a survivor holds its port, the start fails on it and, the state file
            # gone with the failed start, nothing records the survivor for `recsys stack down` to stop.
            console.print(f"  {', '.join(down)} of the stack in {directory} is not running: restarting the stack")
            running.stop()
        stack = Stack(directory, postgres_port=postgres_port, mlflow_port=mlflow_port, prefect_port=prefect_port)
        stack.start(log=lambda line: console.print(f"  {line}", highlight=False))
        _print_usage(stack.mlflow_url, stack.prefect_api_url, directory)


def _parts_down(running: Stack, directory: Path) -> list[str]:
    """The parts of a recorded stack that do not run, after waiting for those still starting.

    A server whose `recsys stack up` was killed (kill -9, a closed terminal) while it started runs
    but does not answer yet: this `up` said "running already" and printed the addresses, and the
    first `recsys run` failed on them. Now it says the server is starting (pid, log) and waits
    until it answers, as the `up` that started it would have; one that dies meanwhile, or has not
    answered for longer than a start may take (hung), counts as down, and the stack restarts."""
    from recsys.stack import READY_TIMEOUT_S, StackError

    down = [name for name, server in running.servers.items() if not server.alive()]
    if (running.postgres.data / "PG_VERSION").is_file() and not running.postgres.running():
        down.insert(0, "postgres")  # the servers run on, answering 500 to every request
    if down:
        return down
    for name, server in running.servers.items():
        state = server.state()
        if state == "not answering":
            console.print(f"  {name} runs (pid {server.pid}) but has not answered at {server.health} in "
                          f"{server.age() or 0:.0f} s (log {server.log})", highlight=False, soft_wrap=True)  # fmt: skip
            down.append(name)
        elif state == "starting":
            age = server.age() or 0.0
            console.print(f"  {name}: starting (pid {server.pid}, for {age:.0f} s; log {server.log}): waiting until it answers",
                          highlight=False, soft_wrap=True)  # fmt: skip
            try:
                server.wait_ready(timeout=max(READY_TIMEOUT_S - age, 1.0))
            except StackError as exc:
                console.print(f"  {str(exc).splitlines()[0]}", highlight=False, soft_wrap=True)
                down.append(name)
                continue
            console.print(f"  {name}: ready at {server.url}", highlight=False, soft_wrap=True)
        elif state != "up":
            down.append(name)
    return down


@stack_app.command("down")
@user_errors
def down(directory: DirOption = Path(".stack")) -> None:
    """Stop the Prefect server, the MLflow server and PostgreSQL started by `recsys stack up` (a `stack up`
    still starting them is stopped first)."""
    import os
    import signal

    from recsys.stack import Stack, stack_lock

    recorded = Stack.from_state(directory) if directory.is_dir() else None
    starter = recorded.starting_process() if recorded is not None else None
    if starter is not None and starter.pid != os.getpid():
        # a start in progress (up to minutes, the servers importing): stop it rather than wait for it. Its
        # SIGTERM unwinds it as on Ctrl-C: it stops what it started, and its lock is free for us.
        _say(f"stopping the `recsys stack up` (pid {starter.pid}) that is starting the stack in {directory}")
        starter.send_signal(signal.SIGTERM)
    with stack_lock(directory, _say) if directory.is_dir() else nullcontext():  # no lock file in a typo'd dir
        stack = Stack.from_state(directory)
        if stack is None:
            stack = Stack(directory)  # no servers recorded; PostgreSQL may still run from its data dir
            if not stack.postgres.running():  # said "stopped the stack" of a typo'd or stopped directory
                console.print(f"no stack running in {directory}: nothing to stop")
                return
        stack.stop()
    console.print(f"stopped the stack in {directory} (data kept; delete the directory to drop it)")


NOT_RUNNING = 3  # `recsys stack status` of a directory with no stack: LSB's "program is not running"


@stack_app.command("status")
@user_errors
def status(directory: DirOption = Path(".stack")) -> None:
    """Which parts of the stack are up, starting (pid, log) or down, and what starts the rest.

    Exit code: 0 every part is up; 1 a part is down or still starting; 3 no stack runs in the
    directory (none started there, or stopped by `recsys stack down`); 2 bad input (an unreadable
    stack.json)."""
    from recsys.stack import Stack

    start = _start_command(directory)
    stack = Stack.from_state(directory)
    if stack is None:
        # No servers recorded; PostgreSQL may still run from its data directory (an `up` killed before it
        # recorded the stack): not "no stack", or the `up` this hint suggests fails on its port.
        postgres_up = Stack(directory).postgres.running()
        for name in ("postgres", "mlflow", "prefect"):
            _part(name, "up (not recorded in stack.json)" if name == "postgres" and postgres_up else "not running")
        if postgres_up:
            console.print(f"the stack in {directory} is partly running: start the rest with {start}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1)
        console.print(f"no stack running in {directory} (nothing recorded there): start one with {start}",
                      highlight=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(code=NOT_RUNNING)
    said = {"postgres": "up" if stack.postgres.running() else "DOWN"}
    said.update({name: server.describe() for name, server in stack.servers.items()})
    for name, state in said.items():
        _part(name, state)
    if all(state == "up" for state in said.values()):
        raise typer.Exit(code=0)
    if any(state != "up" and not state.startswith("starting") for state in said.values()):  # DOWN, not answering
        console.print(f"start what is down with {start} (it restarts only those parts)", highlight=False, soft_wrap=True)
    else:  # only starting: its `up` runs on, or a new `up` waits for it
        console.print(f"still starting: {start} waits until it answers", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def _part(name: str, state: str) -> None:
    console.print(f"  {name:9} {state}", highlight=False, soft_wrap=True)


def _start_command(directory: Path) -> str:
    """What starts the stack in `directory`: `make stack` knows only .stack."""
    if directory == Path(".stack"):
        return "`recsys stack up` (or: make stack)"
    return f"`recsys stack up --dir {directory}`"


def _say(line: str) -> None:
    err_console.print(line, markup=False, highlight=False)


def _print_usage(mlflow_url: str, prefect_api_url: str, directory: Path) -> None:
    env = directory / "env"  # replaced whole (a kill between truncating and writing it emptied it)
    write_text_atomic(env, f"export MLFLOW_TRACKING_URI={mlflow_url}\nexport PREFECT_API_URL={prefect_api_url}\n")
    prefect_ui = prefect_api_url.removesuffix("/api")
    # make stack-stop and a bare `recsys stack down` stop the stack in .stack only
    stop = "make stack-stop   (or: recsys stack down)" if directory == Path(".stack") else f"recsys stack down --dir {directory}"
    console.print(
        f"""
MLflow:   {mlflow_url}   (runs, models, registry; artifacts stored under {directory}/mlflow-artifacts)
Prefect:  {prefect_ui}   (deployments, schedules, flow runs)
Point recsys at them (or: source {env}):
  export MLFLOW_TRACKING_URI={mlflow_url}
  export PREFECT_API_URL={prefect_api_url}
  recsys run --config pipelines/configs/default.toml
  recsys schedule --cron "0 3 * * *" --config pipelines/configs/default.toml
Stop it:  {stop}""",
        highlight=False,
        soft_wrap=True,
    )
