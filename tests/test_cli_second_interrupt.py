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
