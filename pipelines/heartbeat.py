"""A progress line at most once a minute while a model trains, for logs that are not a terminal.

Why: under Prefect (and in a scheduler's log file) a model said "training X" and then nothing until
it finished: a two-tower trial on a 70k-item log was silent for 19 minutes, which reads as a hang.
The per-epoch callback already sees every epoch; this passes one line of it to the run's log when a
minute has gone by since the last line, so a quick model prints nothing extra and a slow one shows
it is moving (epoch, loss, validation metric, elapsed time).
"""

from __future__ import annotations

import time
from collections.abc import Callable

EVERY_S = 60.0

Callback = Callable[[int, dict[str, float]], object]


def with_heartbeat(
    name: str, log: Callable[[str], None], callback: Callback | None = None, every_s: float | None = None
) -> Callable[[int, dict[str, float]], object]:
    """`callback` (may be None), plus a line to `log` at most every `every_s` (default EVERY_S)
    seconds of training."""
    every_s = EVERY_S if every_s is None else every_s
    started = time.perf_counter()
    last = {"at": started}

    def beat(step: int, metrics: dict[str, float]) -> object:
        now = time.perf_counter()
        if now - last["at"] >= every_s:
            last["at"] = now
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k == "loss" or k.startswith("val_"))
            log(f"  {name}: epoch {step}{', ' + shown if shown else ''} ({now - started:.0f}s)")
        return callback(step, metrics) if callback is not None else None

    return beat
