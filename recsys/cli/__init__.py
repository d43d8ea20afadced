"""`recsys` command line: a typer app whose commands are thin calls into pipelines/, flows/ or recsys/.

Commands live in small modules by topic; each registers itself on `app` (or the `data` sub-app).
"""

from __future__ import annotations

# Importing the modules registers their commands.
from recsys.cli import (  # noqa: E402,F401
    data_cmds,
    datasets_cmds,
    folding_cmds,
    model_cmds,
    pipeline_cmds,
    stack_cmds,
    tracking_cmds,
)
from recsys.cli.common import app, data_app  # noqa: F401

__all__ = ["app"]
