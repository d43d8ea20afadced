"""This user's processes as /proc shows them: one scan for the starts that stop what a killed
command left behind (`recsys ui`'s MLflow server groups, `recsys run`'s temporary Prefect servers).

Why one scan: both recognise their targets by the same reads (owner, parent, session, command
line, environment), and both must skip a process that exits or turns unreadable mid-read rather
than fail the command that looked. A leaf module (standard library only): the CLI imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessEntry:
    """One process's /proc directory; each read raises OSError when it is gone or not ours."""

    pid: int
    path: Path

    def parent(self) -> int:
        """Field 4 of /proc/PID/stat; the command name before it may hold spaces and parentheses."""
        return int((self.path / "stat").read_text().rsplit(")", 1)[1].split()[1])

    def is_session_leader(self) -> bool:
        return os.getsid(self.pid) == self.pid

    def command(self) -> list[bytes]:
        """The command line's words ([] when it cannot be read)."""
        try:
            return (self.path / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return []

    def env(self, name: str) -> str | None:
        """The value of `name` in the environment the process started with (None: not set)."""
        marker = f"{name}=".encode()
        for item in (self.path / "environ").read_bytes().split(b"\0"):
            if item.startswith(marker):
                return os.fsdecode(item[len(marker):])
        return None


def process(pid: int, proc: Path = PROC) -> ProcessEntry:
    return ProcessEntry(pid, proc / str(pid))


def find_own(match: Callable[[ProcessEntry], bool], proc: Path = PROC) -> list[int]:
    """The pids of this user's processes that `match` accepts, ascending. A process that exits or
    cannot be read while being matched is passed over. No /proc (not Linux): none."""
    found = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == os.getuid() and match(ProcessEntry(int(entry.name), entry)):
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
    return sorted(found)
