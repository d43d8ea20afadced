"""Progress bars of models training and evaluating at once (`recsys run`'s worker threads) share one
display, so each bar shows for as long as its work runs (`recsys.bars`)."""

from __future__ import annotations

import io
import re
import sys
import threading
import time

import rich
from rich.console import Console

from recsys.evaluation.evaluate import _progress_bar
from recsys.training import progress_bar


def test_a_bar_that_ends_first_takes_no_other_bar_with_it(monkeypatch):
    """As on an ML-1M-shaped run: model A's trial ends while model B trains, then A's next trial
    starts and B evaluates. With a rich `Progress` per bar, B's bar lived inside A's display and went
    with it, and every bar started after that was drawn nowhere (225 s of a 606 s run showed no bar
    while two-towers trained)."""
    screen = io.StringIO()
    monkeypatch.setattr(rich, "_console", Console(file=screen, force_terminal=True, width=100))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    a1_in, b_in, a1_done = threading.Event(), threading.Event(), threading.Event()

    def steps(update, epoch: str, n: int) -> None:
        for _ in range(n):
            update(advance=1, epoch=epoch, loss=0.5, rate=100.0)
            time.sleep(0.02)

    def model_a() -> None:
        with progress_bar(5, quiet=False) as update:  # trial 1 starts first...
            a1_in.set()
            b_in.wait(10)
            steps(update, "A1", 5)
        a1_done.set()  # ...and ends while B trains
        with progress_bar(15, quiet=False) as update:
            steps(update, "A2", 15)

    def model_b() -> None:
        a1_in.wait(10)
        with progress_bar(25, quiet=False) as update:
            b_in.set()
            steps(update, "B", 25)
        with _progress_bar(True, 10, "evaluating model B") as advance:
            for _ in range(10):
                advance(1)
                time.sleep(0.02)

    threads = [threading.Thread(target=model_a), threading.Thread(target=model_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert a1_done.is_set()
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    b_steps = [int(n) for n in re.findall(r"two-tower epoch B [^0-9]*?(\d+)/25", drawn)]
    assert max(b_steps, default=0) >= 20, f"B's bar was last drawn at step {max(b_steps, default=0)} of 25"
    assert "two-tower epoch A2" in drawn and "evaluating model B" in drawn
    assert "loss 0.5000  100 ex/s" in drawn
