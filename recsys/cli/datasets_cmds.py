"""Commands registered on the recsys app (see recsys/cli/__init__.py)."""

from recsys.cli.common import app, data_app  # noqa: F401
