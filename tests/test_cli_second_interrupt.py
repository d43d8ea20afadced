"""A second Ctrl-C exits at once while an interrupted command's threads finish (`recsys.cli.entry`).

After Ctrl-C a model thread inside one long C call (an EASE inverse) cannot stop until the call
returns, and the process waited for it at exit, silently; the next Ctrl-C ended in a traceback
from the interpreter's shutdown. The stuck thread here sleeps (a call that releases the GIL and
checks nothing, as a LAPACK routine does); the command is interrupted as `recsys run` is.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from stopped import recsys_cli

SCRIPT = r"""
import threading, time, sys
from recsys.cli import app
from recsys.cli.common import user_errors
from recsys.cli.entry import main

@app.command("stuck-for-test")
@user_errors
def stuck() -> None:
    threading.Thread(target=time.sleep, args=(120,), name="model").start()
    raise KeyboardInterrupt  # what Ctrl-C raises in the command's main thread

sys.argv = ["recsys", "stuck-for-test"]
main()
"""


def test_a_second_ctrl_c_exits_now_instead_of_waiting_for_a_stuck_model_thread() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # up to the line that says what a second Ctrl-C does
        lines.append(line)
        if "press Ctrl-C again" in line:
            break
    output = "".join(lines)
    assert "interrupted" in output and "waiting for 1 worker thread(s)" in output, output
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=30)  # the stuck thread would hold the process for 120 s
    finally:
        process.kill()
    rest = process.stdout.read()
    assert code == 130, output + rest
    assert time.monotonic() - started < 30
    assert "exiting now" in rest and "Traceback" not in rest and "Exception ignored" not in rest, rest


def test_an_idle_thread_pool_worker_is_not_reported_as_work_to_wait_for():
    """After SIGTERM every run said it was waiting for a worker thread: ingest's idle validation
    pool, which ends at once at exit."""
    from concurrent.futures import ThreadPoolExecutor

    from recsys.cli.entry import _busy_threads

    with ThreadPoolExecutor(1, thread_name_prefix="idle-pool") as pool:
        pool.submit(lambda: None).result()
        deadline = time.monotonic() + 5  # the worker may still be leaving the task it just finished
        while [t for t in _busy_threads() if t.name.startswith("idle-pool")]:
            assert time.monotonic() < deadline, "an idle pool worker counts as busy"
            time.sleep(0.01)


def test_ctrl_c_while_the_cli_imports_is_one_line_not_a_traceback():
    """Ctrl-C within the first moments after Enter (while `recsys.cli` imports torch and polars)
    printed a KeyboardInterrupt traceback from inside an import."""
    script = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def interrupting(name, *a, **k):\n"
        "    if name == 'recsys.cli':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = interrupting\n"
        "sys.argv = ['recsys', '--help']\n"
        "from recsys.cli.entry import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "interrupted" and "Traceback" not in done.stderr, done.stderr


def _stopped(pid: int, timeout: float = 120) -> bool:
    """Wait until process `pid` is stopped (SIGSTOP at a fault point); False if it exits first."""
    from pathlib import Path

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
                return True
        except OSError:
            return False
        time.sleep(0.05)
    return False


def test_a_second_ctrl_c_while_the_run_is_being_closed_still_closes_it(tmp_path, shared_mlflow_uri):
    """Ctrl-C during training closes the model run and then the parent run KILLED; a second Ctrl-C
    that came while the parent was being closed raised inside the store call and left the parent
    RUNNING. The run is frozen at its first epoch (the first Ctrl-C) and again where the parent's
    close begins (the second): a real `recsys run` on the session's SQLite store."""
    import uuid
    from pathlib import Path

    import pytest
    from mlflow import MlflowClient

    if not Path("/proc/self/stat").exists():
        pytest.skip("waits on /proc's process state")
    uri, experiment = shared_mlflow_uri, f"second-ctrl-c-{uuid.uuid4().hex[:8]}"
    sets = [
        "data.synthetic.n_users=80", "data.synthetic.n_items=40", "data.min_user_interactions=2",
        "folding.enabled=false", "evaluation.bootstrap_samples=10", f'data.processed_dir="{tmp_path / "p"}"',
        f'data.raw_dir="{tmp_path / "raw"}"', f'tracking.tracking_uri="{uri}"', f'tracking.experiment="{experiment}"',
        'models=[{name="wals", kind="wals", factors=4, iterations=50}]',
    ]  # fmt: skip
    env = {**__import__("os").environ, "RECSYS_STOP_AT": "train.epoch,tracking.closing:2"}
    process = subprocess.Popen(  # with Python's Ctrl-C handler set in the child (`recsys_cli`)
        recsys_cli("run", "--no-prefect", *[a for s in sets for a in ("--set", s)]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        for _ in ("first epoch", "the parent's close"):
            assert _stopped(process.pid), process.communicate(timeout=30)[0]
            process.send_signal(signal.SIGINT)  # held pending while it is stopped
            process.send_signal(signal.SIGCONT)
        output = process.communicate(timeout=60)[0]
    finally:
        process.kill()
    assert process.returncode == 130, output
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    statuses = {r.data.tags.get("recsys.model_name", "parent"): r.info.status for r in runs}
    assert statuses == {"parent": "KILLED", "wals": "KILLED"}, output
    assert "closing the run first" in output, output


def test_a_signal_held_during_a_close_is_delivered_after_it_and_a_further_one_at_once():
    """`recsys.interrupt.shielded`: the close finishes before the held Ctrl-C acts; a close that
    hangs is still left by pressing again (the run then waits for the next start's sweep)."""
    import threading

    import pytest

    from recsys import interrupt

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")
    seen: list[int] = []

    def handler(signum, frame):  # noqa: ARG001
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    closed: list[str] = []
    try:
        with pytest.raises(KeyboardInterrupt), interrupt.shielded():
            signal.raise_signal(signal.SIGINT)
            closed.append("closed")  # reached: the signal waits for the block
        assert closed == ["closed"] and seen == [signal.SIGINT]
        with pytest.raises(KeyboardInterrupt), interrupt.shielded():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # pressed again: acts now
            closed.append("never")
        assert closed == ["closed"] and seen == [signal.SIGINT, signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupt.clear()


def test_a_signal_the_process_ignores_stays_ignored_during_a_close():
    """A command started ignoring Ctrl-C (a background job of a script) must not start catching it
    while it closes its runs ("closing the run first; press Ctrl-C again"), only to drop it after."""
    import threading

    import pytest

    from recsys import interrupt

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupt.shielded():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)  # ignored, as before the close
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupt.clear()
