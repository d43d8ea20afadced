"""`recsys` command line: a typer app whose commands are thin calls into pipelines/, flows/ or recsys/.

Commands live in small modules by topic; each registers itself on `app` (or the `data` sub-app).
The package itself imports nothing heavy: `app` is built on first access (PEP 562), so the console
script (`recsys.cli.entry`) is in its own code, with its Ctrl-C handling, before torch and polars
load (a Ctrl-C in that second used to print a traceback from inside an import).
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "data_app"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'recsys.cli' has no attribute {name!r}")
    # Importing the modules registers their commands.
    from recsys.cli import (  # noqa: F401
        common,
        data_cmds,
        datasets_cmds,
        folding_cmds,
        model_cmds,
        pipeline_cmds,
        stack_cmds,
        tracking_cmds,
    )

    return getattr(common, name)
