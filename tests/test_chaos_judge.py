"""The chaos benchmark's server-freezes probe reads a given-up run's output as an operator would:
exit 2, one `error:` line, and in it the `--resume-tracking` command it then runs. Checked here on
the line `recsys run` itself composes, so a change to that line that the probe can no longer read
fails here, not as a silent "no hint" in a benchmark rerun minutes long."""

from __future__ import annotations

import shlex

from benchmarks.bench_chaos import judge_gave_up
from pipelines.report import tracking_failed_line
from recsys.cli.pipeline_cmds import store_args

SETS = ['tracking.tracking_uri="http://127.0.0.1:5999"', 'tracking.experiment="server freezes"']
SUMMARY = {
    "tracking_uri": "http://127.0.0.1:5999",
    "tracking_error": "no answer within MLFLOW_HTTP_REQUEST_TIMEOUT, /api/2.0/mlflow/runs/log-batch",
    "unlogged_dir": "/scratch/with space/unlogged/abc123",
    "models": [{"name": "wals", "status": "ok", "unlogged": True}, {"name": "pop", "status": "ok", "unlogged": True}],
}
ERROR = f"error: {tracking_failed_line(SUMMARY, store_args(None, SETS))}"
TABLE = "champion: unchanged (not decided: log the kept runs with `recsys run --resume-tracking /elsewhere`)"


def test_a_run_that_gave_up_as_it_should_yields_its_printed_resume_command() -> None:
    problems, resume = judge_gave_up(2, f"training wals\n{TABLE}\n{ERROR}\n")

    assert problems == []
    set_args = [arg for item in SETS for arg in ("--set", item)]
    assert resume == ["run", *set_args, "--resume-tracking", "/scratch/with space/unlogged/abc123"]
    assert shlex.join(["recsys", *resume]) in ERROR  # the very command the line prints


def test_a_run_that_did_not_give_up_properly_is_a_problem_each_way() -> None:
    problems, resume = judge_gave_up(1, f"{TABLE}\nTraceback (most recent call last):\nerror: boom\n{ERROR}\n")

    assert resume is not None  # the hint is still found in the error lines
    assert problems == ["exit 1, not 2", "2 `error:` lines, not 1", "a traceback"]


def test_a_run_without_the_hint_in_its_error_line_has_no_resume_command() -> None:
    # the champion line names a resume command too, but only the error line counts
    problems, resume = judge_gave_up(2, f"{TABLE}\nerror: the tracking store failed\n")

    assert resume is None
    assert len(problems) == 1 and problems[0].startswith("no `recsys run ... --resume-tracking DIR`")
