"""Named kill points, for crash tests and `python -m benchmarks chaos`.

Why: "survives a kill -9" must be checked at the moments that matter - between the two renames of a
directory swap, after a batch is staged, between a promotion's decision and its alias - and a kill at
a random time almost never lands in such a window. `fault_point(name)` does nothing unless the
environment variable `RECSYS_KILL_AT` names that point; then the process sends itself SIGKILL there,
as the OOM killer or an operator would (no `finally`, no `atexit`, no flush).

`RECSYS_KILL_AT=name` kills the first time the point is reached, `name:N` the N-th time (per
process); several points are separated by commas (`a,b:2`). The points are listed in `POINTS` so tests and the benchmark cannot name one that does not
exist. `RECSYS_STOP_AT` (same syntax) sends SIGSTOP instead: the process freezes there until a test,
having done what another process would do in that window, resumes it with SIGCONT.
`RECSYS_INTERRUPT_AT` sends SIGINT (a Ctrl-C that lands exactly there), which a test can aim at a
point in its own process, where SIGSTOP would freeze the test itself; `RECSYS_TERMINATE_AT` SIGTERM.
"""

from __future__ import annotations

import os
import signal

ENV = "RECSYS_KILL_AT"
STOP_ENV = "RECSYS_STOP_AT"
INTERRUPT_ENV = "RECSYS_INTERRUPT_AT"
TERMINATE_ENV = "RECSYS_TERMINATE_AT"
POINTS = (
    "ingest.read",  # the source read and validated, nothing staged yet (a producer may write meanwhile)
    "encoding.copied",  # a source in another encoding copied as UTF-8, not yet checked unchanged
    "ingest.staged",  # the new batch and derived files written in the staging dir, not yet swapped in
    "storage.between_renames",  # old processed dir moved aside, new one not yet in place
    "train.epoch",  # a model finished an epoch (its per-epoch metrics logged)
    "tracking.parent_opened",  # a pipeline's parent run created, its params, data set and split not yet logged
    "tracking.artifacts",  # a model's metrics logged, its artifacts and pyfunc not yet
    "promote.decided",  # the promotion rule decided, the champion alias not yet moved
    "offline.kept",  # an artifact copy into a kept run's bundle staged whole and committed, not yet moved into its files/
    "resume.logged",  # a kept run logged in full by `--resume-tracking`, resuming.json not yet updated
    "resume.registered",  # `--resume-tracking` registered a kept run's model, the run's completion tag not yet set
    "ingest.done",  # `recsys ingest` wrote its directory and released its lock, summary not yet printed
    "run.prepared",  # a run's data step brought its processed directory up to date, not yet loaded it
    "tracking.closing",  # a run's close begun (Ctrl-C held back), its status not yet sent
    "flow_run.starting",  # a scheduled flow run's process started, Prefect's engine not yet imported
    "schedule.serving",  # `recsys schedule` set up (its scratch directory made), its runner not yet started
    "schedule.applied",  # `recsys schedule`'s deployment created on the server, its runner not yet started
    "schedule.runner_starting",  # `recsys schedule`'s runner starting (entering its services), not yet serving
    "schedule.runner_stopping",  # `recsys schedule`'s runner stopping: its deployment not yet paused, its runs not yet stopped
    "schedule.stopping",  # `recsys schedule` stopping: its runs not yet closed, its deployment not yet paused
)
_seen: dict[tuple[str, str], int] = {}


def fault_point(name: str) -> None:
    """SIGKILL (RECSYS_KILL_AT), SIGSTOP (RECSYS_STOP_AT), SIGINT (RECSYS_INTERRUPT_AT) or SIGTERM
    (RECSYS_TERMINATE_AT) this process here when the variable names `name` (see the module docstring)."""
    signals = ((ENV, signal.SIGKILL), (STOP_ENV, signal.SIGSTOP), (INTERRUPT_ENV, signal.SIGINT),
               (TERMINATE_ENV, signal.SIGTERM))  # fmt: skip
    for env, sig in signals:
        wanted = [nth for point, _, nth in (e.strip().partition(":") for e in os.environ.get(env, "").split(","))
                  if point == name]  # fmt: skip
        if not wanted:
            continue
        _seen[env, name] = _seen.get((env, name), 0) + 1
        if _seen[env, name] in {int(nth or 1) for nth in wanted}:
            os.kill(os.getpid(), sig)
