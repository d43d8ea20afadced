"""Shared CLI plumbing: the app objects, one error contract for every command, config loading.

The contract: bad input, a bad config or an unusable file ends a command with one line on stderr,
`error: <what> (<where>): <hint>`, and exit code 2; a bug (any other exception) with one line and
exit code 1. No traceback unless `--debug` is given (anywhere on the command line) or RECSYS_DEBUG=1.
Usage errors (unknown option, bad value) follow the same one-line form.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors its own click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - older typer on click itself
    from click.exceptions import ClickException, UsageError

from recsys.errors import RecsysError
from recsys.files import write_text_atomic  # noqa: F401 - the commands' atomic writes

STARTED = time.perf_counter()
"""When the command started (this module is imported first): `recsys run` reports end-to-end time."""

TABLE_WIDTH = 120
"""Tables are laid out for at most this many columns (terminals are 80-120 wide; a pipe has none)."""

console = Console()
if not console.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit():
    # piped or captured: lay out as a 120-column terminal would, unless COLUMNS says how wide
    console = Console(width=TABLE_WIDTH)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

DEFAULT_CONFIG = Path("pipelines/configs/default.toml")
"""The config every command uses when no --config is given (relative to the working directory)."""

DEBUG_FLAG = "--debug"


def print_table(table, wide: bool = False) -> None:
    """A table on stdout; `wide` lets it be as wide as it needs (full intervals), also when piped."""
    if wide:
        Console(width=max(console.width, 400)).print(table)
    else:
        console.print(table)


def next_step(command: str, *args: object) -> None:
    """The command to run next, one line, shell-quoted and never wrapped, so it can be copied: a
    first-day user finishing `train`, `ingest`, `data combine` should not have to guess."""
    import shlex

    line = " ".join([command, *(shlex.quote(str(a)) for a in args)])
    console.print(f"next: {line}", markup=False, highlight=False, soft_wrap=True)


def run_on(
    out: Path | str, config: Path | None, sets: list[str] | tuple[str, ...] = (), *, runnable: bool = False
) -> None:
    """The next step after writing a processed directory: `recsys run` on it with the config whose
    [data] made it (a processed data.source is used as it is; another config's settings only warn),
    and `sets`, the `--set` overrides that give the config the [data] settings the directory was
    made with (`recsys ingest --config movielens.toml --min-user-interactions 1`: its
    `data.min_user_interactions=1`; without it the suggested run warned that the directory was
    ingested with other settings and said to re-ingest it). `runnable`: without `config`, `sets`
    are those against the config `recsys run` loads without --config, so the line runs as printed;
    else FILE stands for a config the user writes."""
    extra = [arg for item in sets for arg in ("--set", item)]
    if config is not None or runnable:
        named = ["--config", config] if config is not None else []
        next_step("recsys run", *named, *extra, "--set", f"data.source={out}")
        return
    import shlex

    line = " ".join(["recsys run --config FILE", *(shlex.quote(a) for a in extra), "--set", shlex.quote(f"data.source={out}")])
    console.print(f"next: {line}   (FILE: a config with these [data] settings)", markup=False, highlight=False,
                  soft_wrap=True)  # fmt: skip


def config_args(config: Path | None, overrides: list[str] | None) -> list[str]:
    """--config / --set as given, to repeat them in a next step."""
    args: list[str] = ["--config", str(config)] if config is not None else []
    for item in overrides or []:
        args += ["--set", item]
    return args


def debug_enabled() -> bool:
    return os.environ.get("RECSYS_DEBUG", "") not in ("", "0", "false")


def error_line(what: str, where: str | None = None, hint: str | None = None) -> str:
    """`error: <what> (<where>): <hint>` on one line (newlines in any part become spaces)."""
    text = what + (f" ({where})" if where else "") + (f": {hint}" if hint else "")
    return "error: " + " ".join(text.split())


def print_error(line: str) -> None:
    err_console.print(line, markup=False)


def quiet_library_tracebacks() -> None:
    """MLflow's SQL store logs every database error with a traceback before raising it; the
    command turns the raised error into its one line, so the logged copy is noise."""
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def one_line_warnings() -> None:
    """Print the library's `RecsysWarning`s as one `warning: <message>` line on stderr, as the CLI's
    own warnings are, instead of Python's `path:line: Category: message` plus the source line, and
    each message once per command: Python's once-per-place registry is reset whenever a library
    touches the warning filters, and a run evaluates every model twice (validation, test), so the
    sampled-metrics warning came out six times for three models. Other warnings keep Python's form."""
    from recsys.errors import RecsysWarning

    original = warnings.showwarning
    if getattr(original, "_recsys_one_line", False):
        # Installed by an earlier command of this process (CliRunner, a notebook): this is a new
        # command, so its warnings show again.
        original._recsys_shown.clear()  # type: ignore[attr-defined]
        return
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if not issubclass(category, RecsysWarning):
            original(message, category, filename, lineno, file, line)
        elif str(message) not in shown:
            shown.add(str(message))
            err_console.print(f"warning: {message}", style="yellow", markup=False)

    show._recsys_one_line = True  # type: ignore[attr-defined]
    show._recsys_shown = shown  # type: ignore[attr-defined]
    warnings.showwarning = show


class OneLineErrors(TyperGroup):
    """The root command group: usage errors (unknown option, bad value, missing argument) become
    one `error:` line with exit code 2 instead of click's multi-line box; `--debug` anywhere on
    the command line turns tracebacks back on."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        if DEBUG_FLAG in args[: args.index("--") if "--" in args else len(args)]:
            args.remove(DEBUG_FLAG)
            os.environ["RECSYS_DEBUG"] = "1"
        if not debug_enabled():
            quiet_library_tracebacks()
        one_line_warnings()
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as exc:
            if not exc.format_message():  # no arguments at all: the help was shown
                sys.exit(exc.exit_code)
            command = exc.ctx.command_path if exc.ctx is not None else "recsys"
            print_error(error_line(exc.format_message(), command, f"see `{command} --help`"))
            sys.exit(2)
        except typer.Abort:
            print_error("interrupted")
            sys.exit(130)
        except ClickException as exc:
            print_error(error_line(exc.format_message()))
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def _flags_show_no_type() -> None:
    """typer 0.29's rich help prints a type after every option, `<bool>` after flags too
    (`--no-tracking <bool>`), which reads as if the flag took a value; `--no-tracking true` is then
    refused with "unexpected extra argument". A flag takes no value: its type column stays empty."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "flags_show_no_type", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.flags_show_no_type = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()
app = typer.Typer(
    name="recsys",
    cls=OneLineErrors,
    help=(
        "Train, evaluate and compare recommenders: ingest -> popularity / WALS / EASE / two-tower and sequence "
        "towers (and their blend) -> full-corpus recall@k -> MLflow."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Markdown, not rich markup: rich read "[data]" and "[low, high]" in option help as style tags
    # and dropped them, and kept the docstrings' line breaks, so an 80-column terminal showed every
    # paragraph ragged (a full line, then a word or two). Markdown reflows paragraphs to the width.
    rich_markup_mode="markdown",
)
data_app = typer.Typer(help="Data sets: generate synthetic data, fetch public sets, combine blocks.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option(DEBUG_FLAG, help="Show full tracebacks instead of one-line errors (anywhere on the line).")
    ] = False,
) -> None:
    if debug:
        os.environ["RECSYS_DEBUG"] = "1"


F = TypeVar("F", bound=Callable[..., Any])


def _where(exc: OSError) -> str | None:
    return str(exc.filename) if exc.filename is not None else None


def _os_hint(exc: OSError) -> str:
    """What to do about an OSError. A file where a directory must go (`recsys data synth --out
    ratings.csv`) read "File exists (ratings.csv): check the path and its permissions", which sent
    the user to permissions; it names the file instead."""
    if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename is not None:
        path = Path(str(exc.filename))
        blocking = next((p for p in (path, *path.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            return f"{blocking} is a file, not a directory: choose another path"
    return "check the path and its permissions"


def _unwind_on_sigterm() -> Any:
    """Turn SIGTERM into `recsys.interrupt.Terminated` for the command's duration, so every command
    unwinds as on Ctrl-C: its `finally` blocks remove temp files and staging directories, its lock
    files are released, and it ends with one line and exit code 143. Without it only `recsys run`
    (on Prefect) caught SIGTERM; `ingest`, `train`, `tune`, `promote`, ... died where they stood,
    silently, leaving a staging copy for the next start to clean. Installed only in the main thread
    and only over the default handler (an embedding program's own handler is left alone); returns
    what to restore, or None."""
    import signal

    if not _in_main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    return signal.signal(signal.SIGTERM, on_terminate)


def on_terminate(signum, frame):  # type: ignore[no-untyped-def]  # noqa: ARG001 - the handler signature
    """The SIGTERM handler of every command (`recsys run` installs it too, with its SIGINT one):
    worker threads stop at their next `recsys.interrupt` check, as on Ctrl-C, and the main thread
    unwinds with `Terminated` (exit 143)."""
    from recsys import interrupt

    interrupt.request()
    raise interrupt.Terminated


def _restore_sigterm(previous: Any) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
        from recsys import interrupt

        interrupt.clear()  # served (the process exits 143) or never asked; later in-process commands run


def sigterm_to_the_server() -> None:
    """Give SIGTERM back to a long-running server's own graceful stop (`recsys serve`: uvicorn;
    `recsys schedule`'s runner installs its own over the command's, `flows.runner`), which installs its handler only over the default one:
    SIGTERM is how a service is stopped, and such a stop ends the process as its server decides
    (uvicorn swallowed the command's exception and exited 0). `user_errors` restores its own on the way out."""
    import signal

    if _in_main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def user_errors(fn: F | None = None, *, flags: Mapping[str, str] | None = None) -> Any:
    """Apply the error contract to a command. `flags` maps config settings to this command's own
    options (e.g. {"data.columns.item": "--item-col {value}"}), so a hint names an option that exists."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            previous = _unwind_on_sigterm()
            try:
                return command(*args, **kwargs)
            except (typer.Exit, UsageError):  # a usage error raised by the command itself (options that
                raise  # exclude each other): RecsysCli.main's one line and exit 2, not "unexpected ...: a bug"
            except KeyboardInterrupt as exc:
                from recsys.interrupt import Terminated

                terminated = isinstance(exc, Terminated) or isinstance(exc.__context__, Terminated)
                print_error("terminated (SIGTERM)" if terminated else "interrupted")
                sys.exit(143 if terminated else 130)
            except RecsysError as exc:
                if debug_enabled():
                    raise
                print_error(error_line(exc.render(flags)))
                raise typer.Exit(code=2) from None
            except OSError as exc:  # a path that cannot be read or written: the user's to fix
                if debug_enabled():
                    raise
                what = exc.strerror or str(exc)
                print_error(error_line(what, _where(exc), _os_hint(exc)))
                raise typer.Exit(code=2) from None
            except Exception as exc:  # a bug: still one line, the traceback behind --debug
                if debug_enabled():
                    raise
                first = " ".join(str(exc).split())[:300]
                print_error(error_line(f"unexpected {type(exc).__name__}: {first}", None,
                                       "this is a bug; rerun with --debug for the traceback"))
                raise typer.Exit(code=1) from None
            finally:
                _restore_sigterm(previous)

        return wrapper  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help=(
            "TOML config file, or the name of a shipped one: default | movielens | plays (pipelines/configs/). "
            f"Default: {DEFAULT_CONFIG} when it is here (the repository root), else the shipped default."
        ),
        dir_okay=False,
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value: a.b=c (models by name: models.wals.factors=128). Repeatable."),
]
DataConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config whose [data] section to use (default: built-in data settings).", dir_okay=False),
]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Also write a machine-readable summary to this file.")]


def writable_output(path: Path | None, option: str, example: str = "summary.json") -> None:
    """Refuse an output file that cannot be written before the work, not after it: a run that
    trained, logged and promoted, or a 30-trial search, then ended with exit 2 because --json or
    --out pointed into a read-only or missing place, and the summary or tuned config was lost.
    Makes nothing (`probe_writable`): the write makes the missing folders, so a command refused
    later leaves none behind. `example`: the file name a directory given instead is completed
    with in the hint."""
    if path is None:
        return
    from recsys.errors import ConfigError
    from recsys.files import probe_writable

    if path.is_dir():
        raise ConfigError(f"{option} {path} is a directory: give a file name, e.g. {option} {path / example}")
    blocking = next((p for p in path.parents if p.exists()), None)
    if blocking is not None and not blocking.is_dir():  # mkdir said "File exists", naming no file
        raise ConfigError(f"cannot write {option} {path} ({blocking} is a file, not a directory): choose another path")
    try:
        probe_writable(path)
    except OSError as exc:
        raise ConfigError(f"cannot write {option} {path} ({exc.strerror or exc}): choose another path") from None


def writable_dir(path: Path, option: str) -> None:
    """`writable_output` for an output directory (`recsys train --models`): a two-tower trained for
    minutes was lost when its directory could not be written at the end. Makes nothing either."""
    from recsys.errors import ConfigError
    from recsys.files import probe_writable

    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a directory: choose another directory")
    blocking = next((p for p in path.parents if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ConfigError(f"cannot write {option} {path} ({blocking} is a file, not a directory): choose another directory")
    try:
        probe_writable(path / ".probe")
    except OSError as exc:
        raise ConfigError(f"cannot write {option} {path} ({exc.strerror or exc}): choose another directory") from None


def shipped_configs() -> dict[str, Path]:
    """The configs installed with the package (`pipelines/configs/*.toml`), by name. A user who
    installed recsys and works in their own directory has no `pipelines/configs/` beside them:
    `--config movielens` must still find the config the README tells them to use."""
    import pipelines

    return {path.stem: path for path in sorted((Path(pipelines.__file__).parent / "configs").glob("*.toml"))}


def config_path(config: Path | None) -> Path | None:
    """The config file a command reads: --config as a path; else, for a bare name that is no file
    here (`--config movielens`), the shipped config of that name; with no --config, the default
    config of the working directory (the repository root) when it is there, else the shipped one."""
    from recsys.errors import ConfigError

    if config is None:
        return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else shipped_configs().get("default")
    if config.exists():
        return config
    shipped = shipped_configs()
    if config.suffix == "" and len(config.parts) == 1 and config.name in shipped:
        return shipped[config.name]
    names = " | ".join(shipped)
    raise ConfigError(f"{config}: config file not found; the shipped configs go by name: --config {names}")


def load_run_config(config: Path | None, overrides: list[str] | None, *, default: bool = False):
    """The config of a command. With `default`, a missing --config means DEFAULT_CONFIG (as for
    `recsys run`); where it is not here, the built-in defaults with the overrides, and a clear
    error when those name no model (built-in defaults have none: such a run would train nothing).
    A config file that names no model is refused the same way (with `default`: the commands that train)."""
    from recsys.config import load_config
    from recsys.errors import ConfigError

    if default:
        resolved = config_path(config)
        if resolved is None:  # no default config here and none shipped (a broken install)
            cfg = load_config(None, overrides or [])
            if not cfg.models:
                raise ConfigError(
                    f"no --config given and {DEFAULT_CONFIG} is not here ({Path.cwd()}), and the built-in "
                    "defaults name no model: run from the repository root or pass --config FILE"
                )
            return cfg
        config = resolved
    config = config_path(config) if config is not None else None
    cfg = load_config(config, overrides or [])
    if default and not cfg.models:  # a config file without [[models]]: the run would train nothing and exit 0
        raise ConfigError(
            f"{config} names no model (no [[models]] table): add one (name, kind), or name them with "
            """--set 'models=[{name="wals", kind="wals"}]'"""
        )
    return cfg
