"""Shared CLI plumbing: the app objects, one-line errors with exit code 2, config loading."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from recsys.errors import RecsysError

console = Console()
if not console.is_terminal:  # piped or captured: wide enough for the comparison tables
    console = Console(width=160)
err_console = Console(stderr=True)

app = typer.Typer(
    name="recsys",
    help="Train, evaluate and compare recommenders: ingest -> WALS / two-tower -> full-corpus recall@k -> MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Data sets: generate synthetic data, fetch public sets, combine blocks.", no_args_is_help=True)
app.add_typer(data_app, name="data")

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn RecsysError (bad input, bad config) into one red line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RecsysError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config (see pipelines/configs/).", dir_okay=False)
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value: a.b=c (models by name: models.wals.factors=128). Repeatable."),
]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Also write a machine-readable summary to this file.")]


def load_run_config(config: Path | None, overrides: list[str] | None):
    from recsys.config import load_config

    return load_config(config, overrides or [])
