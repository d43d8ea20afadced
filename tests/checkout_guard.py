"""Tests write under their temp directories, never into the checkout they run from.

A test that forgets (an MLflow experiment created without an artifact location lands in
`./mlruns`; a `file:` URI taken for a path becomes a folder named `file:`) leaves litter that a
user's next `git status` shows, and that CI on a clean clone never notices unless something
looks. This plugin lists the checkout's files and folders when the session starts (less the
venv, caches and byte code) and fails the session when it ends with anything new, naming it.
Only the controller process looks (an xdist worker would see the other's files appear).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# What a test session legitimately adds: the venv, tool caches and byte code.
SKIPPED = {".git", ".venv", "recsys.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"}


def checkout_entries(root: Path) -> set[str]:
    """Every file and folder below `root`, less SKIPPED, as paths relative to it. A walk rather
    than `git status`, which does not show empty folders (MLflow's run folders are created empty)."""
    found: set[str] = set()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED]
        base = Path(folder).relative_to(root)
        found.update(str(base / name) for name in subfolders + files)
    return found


def litter(before: set[str], after: set[str]) -> list[str]:
    """The top-most of the paths that appeared (a new folder, not everything in it)."""
    new = after - before
    return sorted(path for path in new if str(Path(path).parent) not in new)


class CheckoutGuard:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.before = checkout_entries(root)
        self.new: list[str] = []

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.new = litter(self.before, checkout_entries(self.root))
        if self.new and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.new:
            terminalreporter.write_line(
                f"error: the tests left {len(self.new)} new path(s) in the checkout, "
                f"{', '.join(self.new)}: write under tmp_path instead",
                red=True, bold=True,
            )  # fmt: skip


def register(config: pytest.Config) -> None:
    """Installs the guard in the controller (or the only) process of a whole-suite session."""
    if getattr(config, "workerinput", None) is not None:
        return
    config.pluginmanager.register(CheckoutGuard(Path(config.rootpath)), "recsys-checkout-guard")
