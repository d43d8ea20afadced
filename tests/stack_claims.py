"""A claim (`recsys.stack.claim`) made by a process of its own, which a test can then kill."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLAIMER = (
    "import sys, time; from recsys.stack import claim; claim(sys.argv[1]); "
    "print('claimed', flush=True); time.sleep(300)"
)


def claimed_by_another_process(root: Path) -> subprocess.Popen:
    """A process that claimed `root` and sleeps (kill it to make the claim an orphan's)."""
    owner = subprocess.Popen([sys.executable, "-c", CLAIMER, str(root)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None and owner.stdout.readline().strip() == "claimed", owner.communicate()
    return owner
