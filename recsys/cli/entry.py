"""The `recsys` console script: the typer app, plus "Ctrl-C again exits now" while threads finish.

Why: after Ctrl-C (or SIGTERM) a command unwinds at once, and every model loop stops at its next
check (`recsys.interrupt`). A model thread inside one long C call - an EASE inverse on a large
catalogue, an SVD - cannot check anything until that call returns, and the interpreter waits for
it at exit: the terminal sat silent for half a minute or more after "interrupted", and a second
Ctrl-C did not help (the command had restored Python's own handler, which only raises in the
waiting main thread). A second press means "now": once the command has returned, a second Ctrl-C
(or SIGTERM) ends the process at once with the same exit code. Nothing is lost by not waiting:
the interrupted runs are already closed KILLED, and the thread's work was to be discarded.

The handler is installed here, in a real process after the command, never inside the app: tests
run commands in-process (typer's runner), where a handler that outlived the command would end the
test process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from recsys.exit_gc import no_collection_at_exit

INTERRUPTED_CODES = (130, 143)  # Ctrl-C, SIGTERM (see `recsys.cli.common.user_errors`)


def _busy_threads() -> list[threading.Thread]:
    """Threads the interpreter will wait for at exit (non-daemon, alive, not this one) that are
    doing something: an idle thread-pool worker (ingest's validation pool, Prefect's task runner
    between tasks) sits in `_worker`, waiting on its queue, and ends at once at exit."""
    frames = sys._current_frames()
    me = threading.current_thread()
    pool = os.path.join("concurrent", "futures", "thread.py")

    def idle(thread: threading.Thread) -> bool:
        frame = frames.get(thread.ident) if thread.ident is not None else None
        return frame is not None and frame.f_code.co_name == "_worker" and frame.f_code.co_filename.endswith(pool)

    return [t for t in threading.enumerate() if t is not me and t.is_alive() and not t.daemon and not idle(t)]


def _exit_now_on_signal(code: int) -> None:
    def exit_now(signum, frame):  # noqa: ARG001 - the signal-handler signature
        sys.stderr.write("exiting now\n")
        sys.stderr.flush()
        os._exit(code)

    signal.signal(signal.SIGINT, exit_now)
    signal.signal(signal.SIGTERM, exit_now)


def main() -> None:
    """Run the `recsys` app; after an interrupted command, make the next Ctrl-C exit at once."""
    try:
        from recsys.cli import app  # typer and rich; a command's own imports (polars, torch) come later
    except KeyboardInterrupt:  # Ctrl-C right after Enter printed a traceback from deep in an import
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None

    code: int | str | None = 0
    try:
        app(prog_name="recsys")
    except SystemExit as exc:
        code = exc.code
        raise
    finally:
        if code in INTERRUPTED_CODES:
            busy = _busy_threads()
            _exit_now_on_signal(int(code))
            if busy:
                sys.stderr.write(
                    f"waiting for {len(busy)} worker thread(s) to reach a point where they can stop "
                    "(a model inside one long computation stops when it returns); press Ctrl-C again "
                    "to exit now\n"
                )
                sys.stderr.flush()
        # Interrupted commands too: after Ctrl-C or SIGTERM `recsys run` sat 8-13 s past its
        # "interrupted" line in the exit's collection (1.2-1.5 s with this, load ~10). Done after the
        # handler above, so a second Ctrl-C during the collection still exits at once.
        no_collection_at_exit()
