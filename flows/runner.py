"""The Prefect runner behind `recsys schedule`, with what it leaves behind cleaned up.

Why not `prefect.serve()`: it makes a Runner of its own, and that Runner leaves two things behind
on every stop and on a kill -9.

* Its storage directory, `$TMPDIR/runner_storage/<uuid>`: its stop removes it only after its
  exit stack, which re-raises the cancellation that Ctrl-C or SIGTERM brings, so the removal never
  ran and a machine that restarts schedules collected one empty directory per start. Here the
  runner's storage is a directory of the schedule's own scratch directory (`recsys.files.scratch_dir`,
  `$TMPDIR/recsys-schedule-<pid>-*`): removed when the command ends, and after a kill -9 by the
  next start once its process is gone; a concurrent schedule's directory is never touched.
* A flow run it had moved to Pending whose process then died (a Ctrl-C landing while the run's
  process starts, the schedule killed) stayed Pending for ever, holding the deployment's
  concurrency slot: with the default `--overlap skip` every later run of the deployment, also after
  a restart, was cancelled at once ("Deployment concurrency limit reached"), and on Prefect's
  temporary server, whose leases die with it, nothing ever released the slot. The schedule notes
  each run it submits (`RUNS_FILE` in its scratch directory); when it stops, those not finished are
  set Crashed (which releases the slot), and a schedule that starts does the same for the runs
  noted by schedules that were killed.

Its runs' processes run `flows.flow_run_process` (Prefect's engine, with a Ctrl-C while the process
starts said in one line, not as a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys.faults import fault_point

log = logging.getLogger(__name__)

SCHEDULE_PREFIX = "recsys-schedule"
"""`recsys schedule`'s scratch directory: `$TMPDIR/recsys-schedule-<pid>-*` (`recsys.files.scratch_dir`)."""

RUNS_FILE = "flow-runs"
"""The ids of the flow runs a schedule moved to Pending, one a line, in its scratch directory."""

STORAGE_DIR = "runner-storage"
"""The Prefect runner's storage directory (its `_tmp_dir`) inside the scratch directory."""

UNFINISHED = ("PENDING", "RUNNING", "CANCELLING")
"""Flow-run states that hold the deployment's concurrency slot."""


def serve_deployment(deployment: Any, scratch: Path, say: Callable[[str], None], temporary_server: bool = False) -> None:
    """`prefect.serve(deployment)` (blocks until Ctrl-C or SIGTERM), with the runner's storage in
    `scratch` and the runs it submits noted there; then the runs it left unfinished set Crashed,
    said in one line through `say`, and so is a deployment the stop could not pause, its server
    down, unless that server is Prefect's temporary one (`temporary_server`), whose end the
    schedule reports itself (`flows.deployments.stop_when_server_ends`).

    A stop at any moment once the deployment is on the server pauses it (`stop_serving`): the
    runner's own stop pauses it only once the runner has started, and a Ctrl-C while it started
    (entering its services, seconds on a busy machine) left the deployment unpaused, its server
    scheduling runs that nothing ran. The deployment's creation is not cut by a Ctrl-C (held back
    until the server has answered: `flows.stopping.held`), so the stop knows what to pause.

    A user's server (PREFECT_API_URL) that stops answering as the runner starts, or for good while
    it serves, ends the schedule with one RecsysError naming it (`server_lost`)."""
    from prefect.exceptions import TerminationSignal

    from flows import stopping

    server_grace_s()  # a bad RECSYS_SCHEDULE_SERVER_GRACE_S is refused before anything is served
    _no_websocket_tracebacks()
    stopping.clear()
    runner = _runner(scratch)
    runner.say = say  # what the server watch says (`_watch_server`)
    name = runner.deployment_name = f"{deployment.flow_name}/{deployment.name}"
    pause = None
    runner.user_server = not temporary_server
    try:
        with stopping.held(None):
            runner.applying = True
            deployment_id = runner.add_deployment(deployment)
            fault_point("schedule.applied")
            if not temporary_server:  # asked now: at the stop it may be down
                pause = pause_commands(deployment_id, name)
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as exc:
        log.info("received %s, stopped serving", type(exc).__name__)
    except Exception as exc:
        if temporary_server or (lost := server_lost(exc, runner)) is None:
            raise  # the temporary server's end is said by `flows.deployments.stop_when_server_ends`
        raise lost from None
    finally:
        stop_serving(runner, scratch, name, say, pause if not temporary_server else None, temporary_server)


def stop_serving(
    runner: Any, scratch: Path, name: str, say: Callable[[str], None], pause: str | None, temporary_server: bool
) -> None:  # fmt: skip
    """What a schedule's stop leaves done, however it stopped: its unfinished runs set Crashed and
    its deployment paused where the runner's stop did not (`pause_unpaused`), with a further Ctrl-C
    or SIGTERM held back meanwhile (`flows.stopping.held`); one more skips what is left, said in one
    line (the runs are left to the next start). A deployment left unpaused on the user's server is
    said with the command that pauses it (`pause`, or one that finds the schedule's id)."""
    from flows import stopping

    runs = noted_runs(scratch)
    why = None
    try:
        with stopping.held(f"pausing deployment {name} and closing its runs first"):
            if stopping.forced():  # the runner's stop was cut short already
                raise KeyboardInterrupt
            fault_point("schedule.stopping")
            closed = crash_unfinished(runs, "the `recsys schedule` serving it stopped first")
            if closed is None:  # the API does not answer: the next start closes them
                hand_over(runs)
            elif closed:
                say(f"marked {len(closed)} unfinished flow run(s) of this schedule Crashed ({', '.join(closed)})")
            pause_unpaused(runner)
    except KeyboardInterrupt:  # stopped at once: nothing more is asked of the server
        hand_over(runs)
        why = "this schedule was stopped at once, before it paused it"
    applied = runner.applying and (stopping.forced() or runner._deployment_registry.get_deployment_ids())
    if applied and not runner.paused and not temporary_server:  # forced: its creation may have gone on
        say(unpaused_line(name, pause or pause_commands(None, name, ask=False), why))


class ApiLost(Exception):
    """The user's Prefect server (PREFECT_API_URL) stopped answering the runner's polls
    (`_end_when_server_lost`)."""


POLL_FAILURES = 3
"""Failed polls in a row after which a schedule that has polled its user's server gives up on it:
Prefect's runner ends there too (`critical_service_loop`'s `consecutive`), after printing each
failure's traceback."""

HEALTH_EVERY_S = 5.0
"""How often a serving schedule checks that its user's server answers (`_watch_server`), at most:
a shorter grace checks more often (`health_every_s`)."""

SAY_DOWN_AFTER = 2
"""Failed health checks in a row before the schedule says its server does not answer: one check
that waited out its 2 s on a busy server is no news."""

SERVER_GRACE_S = 60.0
"""How long a serving schedule's user server may go unanswered before the schedule gives up on it:
a restart of the server (`prefect server start` answers within ~10-20 s) is waited out, said in
two lines; a server that stays down ends the schedule in one error line. RECSYS_SCHEDULE_SERVER_GRACE_S
sets another (`server_grace_s`): a server that takes longer to restart, or a test that cannot wait."""

GRACE_ENV = "RECSYS_SCHEDULE_SERVER_GRACE_S"

LEAST_GRACE_S = 6.0
"""The shortest grace GRACE_ENV takes. The checks come every grace / (SAY_DOWN_AFTER + 2) s at most
(`health_every_s`), so the loss is said at the SAY_DOWN_AFTER-th failed check, at most one interval
and one check's HEALTH_TIMEOUT_S (2 s) after the first failure, before the grace runs out; at 6 s the
checks are 1.5 s apart, no hammering of a server that restarts."""


def health_every_s(grace: float) -> float:
    """Seconds between a serving schedule's health checks: HEALTH_EVERY_S, or less when the grace is
    short, so that SAY_DOWN_AFTER failed checks, the notice, and one more check fit in it (a 6 s
    grace, e.g. a test's, is watched every 1.5 s instead of giving up at its second check)."""
    return min(HEALTH_EVERY_S, grace / (SAY_DOWN_AFTER + 2))


def server_grace_s() -> float:
    """SERVER_GRACE_S, or GRACE_ENV's number of seconds (at least LEAST_GRACE_S, so the schedule says
    the server is gone before it gives up); a value that is not such a number is refused in one line."""
    from recsys.errors import RecsysError

    text = os.environ.get(GRACE_ENV, "").strip()
    if not text:
        return SERVER_GRACE_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= LEAST_GRACE_S:  # also NaN
        raise RecsysError(
            f"{GRACE_ENV}={text!r}: give a number of seconds, at least {LEAST_GRACE_S:g} (default {SERVER_GRACE_S:g})"
        )
    return value


def server_lost(error: BaseException, runner: Any) -> Exception | None:
    """The one-line error (RecsysError) for a runner that ended because its user's Prefect server
    (PREFECT_API_URL) stopped answering, or None when the server answers (the error is not its).

    Why: the server going down as the schedule started (or for good while it served) ended the
    runner after three failed polls, ~30-40 s, each printed with its traceback (~40 lines), and then
    "unexpected ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception): this is a bug",
    exit 1, naming neither the server nor what to do."""
    from prefect.settings import PREFECT_API_URL

    from flows.api_loss import api_answers
    from recsys.errors import RecsysError, first_line

    leaf = error
    while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
        leaf = leaf.exceptions[0]
    if not isinstance(leaf, ApiLost) and api_answers():
        return None
    polled = getattr(getattr(runner, "_scheduled_run_poller", None), "last_polled", None)  # Prefect's poller's
    when = "as this schedule started" if polled is None else "while this schedule served"
    return RecsysError(
        f"the Prefect server {PREFECT_API_URL.value()} (PREFECT_API_URL) stopped answering {when} "
        f"({first_line(leaf)}): the schedule stopped with it; start the server again (`prefect server start`, "
        "`recsys stack up`) or point PREFECT_API_URL at one that runs, then start the schedule again (`recsys schedule`)"
    )


def _end_when_server_lost(runner: Any) -> None:
    """Have `runner`'s poll for scheduled runs end the runner (ApiLost) when the user's Prefect server
    does not answer: at its first failed poll if none had succeeded yet (the server went down as the
    schedule started: nothing suggests it comes back), else at the `POLL_FAILURES`-th in a row, where
    Prefect's own loop would end it after printing every failure's traceback. A failed poll while the
    server answers (its own error) is Prefect's to handle. Another Prefect (no such poller): unchanged."""
    import httpx

    from flows.api_loss import api_unanswered
    from recsys.errors import first_line

    poller = getattr(runner, "_scheduled_run_poller", None)
    poll = getattr(poller, "_get_and_submit_flow_runs", None)
    if poll is None or not callable(getattr(poller, "run", None)):
        log.debug("Prefect's runner has no scheduled-run poller: a lost server ends it as Prefect does")
        return
    _watch_server(runner, poller)
    failures = 0

    async def polling(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        try:
            result = await poll(*args, **kwargs)
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            failures += 1
            if poller.last_polled is None or failures >= POLL_FAILURES:
                if await asyncio.to_thread(api_unanswered) is not None:
                    raise ApiLost(first_line(exc)) from exc
            raise
        failures = 0
        return result

    poller._get_and_submit_flow_runs = polling


def _watch_server(runner: Any, poller: Any) -> None:
    """Alongside the poller's loop, check every `health_every_s` that the user's server answers: say
    so once it has not for `SAY_DOWN_AFTER` checks in a row, and again when it answers; end the runner
    (ApiLost) once it has not answered for `SERVER_GRACE_S`.

    Why: a server that went down while the schedule served was given up on only after three failed
    polls, each waiting out Prefect's client retries (2 + 4 + 8 + 16 + 32 s) before it failed: 234 s
    measured (tests/flows/test_schedule_server_lost.py) with nothing on the terminal but a websocket
    warning, a schedule that looked fine while nothing could run."""
    import time

    import anyio

    from flows.api_loss import api_unanswered
    from flows.ephemeral import current_api_url

    run = poller.run
    say = getattr(runner, "say", None) or (lambda line: log.warning("%s", line))
    grace = server_grace_s()
    every = health_every_s(grace)

    async def watch() -> None:
        down_since, checks = None, 0
        while True:
            await anyio.sleep(every)
            why = await asyncio.to_thread(api_unanswered)
            if why is None:
                if checks >= SAY_DOWN_AFTER:
                    say(f"the Prefect server {current_api_url()} (PREFECT_API_URL) answers again: this schedule serves on")
                down_since, checks = None, 0
                continue
            down_since, checks = down_since or time.monotonic(), checks + 1
            if time.monotonic() - down_since >= grace:
                raise ApiLost(why)
            if checks == SAY_DOWN_AFTER:
                say(f"the Prefect server {current_api_url()} (PREFECT_API_URL) does not answer ({why}): this "
                    f"schedule waits for it, and stops if it has not answered within {grace:g} s")

    async def run_watched(*args: Any, **kwargs: Any) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            await run(*args, **kwargs)
            group.cancel_scope.cancel()

    poller.run = run_watched


def pause_unpaused(runner: Any) -> None:
    """Pause the deployment(s) of `runner` when its own stop did not (it never started, or its stop
    was cut), as that stop does (`Runner._pause_schedules`, with a client of its own: the runner's
    went with its event loop); not when the API does not answer (its client's retries took over a
    minute). Sets `runner.paused` when done."""
    from prefect import get_client

    from flows.api_loss import api_answers

    if runner.paused or runner.left_unpaused or not runner._deployment_registry.get_deployment_ids():
        return  # left unpaused: its stop found the API down (asking again cost up to 2 s more)
    if not api_answers():
        return

    async def pause() -> None:
        async with get_client() as client:
            runner._client = client
            await runner._pause_schedules()

    try:
        asyncio.run(pause())
    except Exception as exc:  # said as a deployment left unpaused
        log.warning("could not pause the deployment of this schedule: %s", exc)


def pause_commands(deployment_id: Any, name: str, ask: bool = True) -> str:
    """The command(s) that pause the schedule(s) of deployment `name` ("flow/name") as the runner's
    stop would have (Prefect 3's CLI has no pause of a deployment, and its `schedule pause --all`
    pauses every deployment's schedules), read while the server answers (`ask`); a `recsys schedule` of
    it applies the deployment again, which makes its schedule active again."""
    from prefect import get_client

    ids = []
    try:
        if ask:
            with get_client(sync_client=True) as client:
                ids = [schedule.id for schedule in client.read_deployment(deployment_id).schedules]
    except Exception as exc:  # never a reason to fail a start: the line then says where the ids are
        log.debug("could not read the schedules of %s: %s", name, exc)
    if not ids:
        return f"`prefect deployment schedule ls {name}`, then `prefect deployment schedule pause {name} SCHEDULE_ID`"
    return ", ".join(f"`prefect deployment schedule pause {name} {schedule_id}`" for schedule_id in ids)


def unpaused_line(name: str, pause: str, why: str | None = None) -> str:
    """What a schedule says when its stop did not pause deployment `name`: by default its server was
    down (said with its URL): the server, once back, schedules its runs, which nothing runs (Late),
    until it is paused (`pause`, from `pause_commands`) or served again; or `why` it did not."""
    from flows.ephemeral import current_api_url

    if why is not None:
        return (f"deployment {name} was left unpaused: {why}, and its server schedules runs that nothing runs "
                f"(they show Late): pause it ({pause}), or serve it again (`recsys schedule`)")  # fmt: skip
    return (
        f"deployment {name} was left unpaused: its Prefect server {current_api_url()} (PREFECT_API_URL) did not "
        "answer when this schedule stopped, and once back it schedules runs that nothing runs (they show Late): "
        f"pause it then ({pause}), or serve it again (`recsys schedule`)"
    )


def hand_over(runs: list[uuid.UUID]) -> Path | None:
    """Note `runs` in a directory of this process's that outlives it (`$TMPDIR/recsys-schedule-<pid>-*`,
    not a `scratch_dir`), for the next schedule to close when this process is gone, as a killed
    schedule's (`crash_runs_of_killed_schedules`): they could not be closed now, the API not
    answering, and one left Pending holds the deployment's slot."""
    import tempfile

    if not runs:
        return None
    directory = Path(tempfile.mkdtemp(prefix=f"{SCHEDULE_PREFIX}-{os.getpid()}-"))
    for run in runs:
        note_run(directory, run)
    return directory


class _WarningWithoutTraceback(logging.Filter):
    """Keep a warning's message, drop its traceback: the runner's cancellation observer warns with
    a websocket traceback (a dozen frames of websockets' internals) whenever its server goes away or
    restarts, and then polls until it is back: nothing a user can act on in those frames."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.WARNING and record.exc_info:
            record.exc_info, record.exc_text = None, None
        return True


class _NoTracebackOnceApiGone(logging.Filter):
    """Once the schedule gave up on its API (its temporary server ended: `flows.api_loss.give_up_on_api`),
    an error's traceback becomes one line (the message, then the exception's): the runner's stop
    then fails to read its run and to report it Crashed, each with two chained tracebacks of ~30
    frames of httpx for "All connection attempts failed", which the schedule's error line explains."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flows.api_loss import _gave_up

        if record.exc_info and record.exc_info[1] is not None and _gave_up.is_set():
            record.msg, record.args = f"{record.getMessage()}: {record.exc_info[1]}", None
            record.exc_info, record.exc_text = None, None
        return True


RUNNER_STOP_LOGGERS = ("prefect.runner.cancellation_manager", "prefect.runner.state_proposer")
"""Where the runner's stop logs its failed calls to an API that is gone (`_NoTracebackOnceApiGone`)."""


def _no_websocket_tracebacks() -> None:
    """`_WarningWithoutTraceback` on the runner's cancellation observer, `_NoTracebackOnceApiGone`
    on `RUNNER_STOP_LOGGERS` (not with RECSYS_DEBUG)."""
    if os.environ.get("RECSYS_DEBUG", "") not in ("", "0", "false"):
        return
    for name, kind in (("prefect.FlowRunCancellingObserver", _WarningWithoutTraceback),
                       *((stop, _NoTracebackOnceApiGone) for stop in RUNNER_STOP_LOGGERS)):  # fmt: skip
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


def _runner(scratch: Path) -> Any:
    from prefect.runner import Runner

    class NotingRunner(Runner):
        """A Runner whose storage is `scratch / STORAGE_DIR` and which notes in `scratch / RUNS_FILE`
        every flow run it moves to Pending (the server gave it the deployment's slot), and which
        skips its pause-on-shutdown when the API does not answer (`left_unpaused`); `paused` once it
        paused its deployment. SIGTERM while it starts stops it as Ctrl-C does; a Ctrl-C or SIGTERM
        more during its stop is held back (`flows.stopping`): it cut the pause, or the stop of the
        runs' processes, midway."""

        applying = False  # its deployment asked for (`serve_deployment`)
        exiting = False  # its stop begun
        deployment_name = "its deployment"  # "flow/name", set by `serve_deployment`, for what a stop says
        left_unpaused = False
        paused = False
        user_server = False  # PREFECT_API_URL's, not Prefect's temporary one (`serve_deployment`)

        async def _pause_schedules(self) -> None:
            await super()._pause_schedules()
            self.paused = True

        def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
            """SIGTERM while the runner starts stops it as Ctrl-C does (`serve_deployment` pauses the
            deployment then): Prefect's exited at once (sys.exit(0) from within its start), skipping
            the pause its stop makes, which had not begun."""
            if not self.started and not self.stopping and not self.exiting:  # still starting
                import signal

                from prefect.exceptions import TerminationSignal

                self._logger.info("SIGTERM received, initiating graceful shutdown...")  # as Prefect's says
                raise TerminationSignal(signal.SIGTERM)
            if self.stopping:  # its graceful stop under way (Prefect's exited at once, as unpaused)
                from flows import stopping

                stopping.again(f"pausing deployment {self.deployment_name} and stopping its runs first")
                return
            super().handle_sigterm(*args, **kwargs)

        async def __aenter__(self):  # type: ignore[override]
            from flows.api_loss import api_unanswered

            fault_point("schedule.runner_starting")  # a Ctrl-C here lands in Prefect's __aenter__'s first await
            if self.user_server and (why := await asyncio.to_thread(api_unanswered)) is not None:
                raise ApiLost(why)  # its start would spend ~7 s on the events websocket's retries first
            entered = await super().__aenter__()
            if self.user_server:
                _end_when_server_lost(self)
            proposer = getattr(self, "_state_proposer", None)
            pending = getattr(proposer, "propose_pending", None)
            if pending is None:  # another Prefect: nothing is noted, the stop cleans up nothing
                log.debug("Prefect's runner has no state proposer to note submitted runs with")
                return entered

            async def noting(flow_run: Any) -> bool:
                accepted = await pending(flow_run)
                if accepted:
                    note_run(scratch, flow_run.id)
                return accepted

            proposer.propose_pending = noting
            _start_runs_with_our_command(self)
            return entered

        async def __aexit__(self, *exc_info: Any) -> None:
            from flows import stopping
            from flows.api_loss import api_answers

            self.exiting = True
            with stopping.held(f"pausing deployment {self.deployment_name} and stopping its runs first"):
                fault_point("schedule.runner_stopping")
                if self.pause_on_shutdown and not await asyncio.to_thread(api_answers):
                    # pausing a deployment on a server that is gone took Prefect's client retries
                    # (over a minute) and then raised ConnectError ("this is a bug")
                    self.pause_on_shutdown = False
                    self.left_unpaused = True  # said by `serve_deployment` when the server is the user's
                await super().__aexit__(*exc_info)

    runner = NotingRunner(pause_on_shutdown=True)
    runner._tmp_dir = scratch / STORAGE_DIR  # Prefect's own, $TMPDIR/runner_storage/<uuid>, outlived every stop
    return runner


FLOW_RUN_MODULE = "flows.flow_run_process"
"""The module a flow-run process runs instead of `prefect.engine` (which it runs in turn)."""


def _start_runs_with_our_command(runner: Any) -> None:
    """Have `runner` start each flow run as `python -m flows.flow_run_process` (Prefect's engine,
    with a Ctrl-C while it starts said in one line): the command its engine starter takes, set
    where the runner resolves a starter without one. Another Prefect (no such starter): unchanged."""
    import shlex

    poller = getattr(runner, "_scheduled_run_poller", None)
    resolve = getattr(poller, "_resolve_starter", None)
    if resolve is None:
        log.debug("Prefect's runner has no starter resolver: flow runs start with its own command")
        return
    command = shlex.join([sys.executable, "-m", FLOW_RUN_MODULE])

    def resolve_ours(flow_run: Any) -> Any:
        starter = resolve(flow_run)
        if getattr(starter, "_command", "") is None:  # Prefect's EngineCommandStarter, default command
            starter._command = command
        return starter

    poller._resolve_starter = resolve_ours


def note_run(scratch: Path, flow_run_id: Any) -> None:
    """Append a flow run's id to the schedule's list (a line: a kill mid-write leaves a part line,
    which `noted_runs` skips)."""
    with (scratch / RUNS_FILE).open("a", encoding="utf-8") as runs:
        runs.write(f"{flow_run_id}\n")


def noted_runs(scratch: Path) -> list[uuid.UUID]:
    """The flow runs noted in a schedule's scratch directory (none when it noted none)."""
    try:
        lines = (scratch / RUNS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            found.append(uuid.UUID(line.strip()))
        except ValueError:  # a line cut by a kill
            continue
    return list(dict.fromkeys(found))


def crash_unfinished(
    flow_run_ids: list[uuid.UUID], why: str, states: tuple[str, ...] = UNFINISHED
) -> list[str] | None:
    """Set Crashed (forced) each of `flow_run_ids` still in one of `states` (Pending, Running or Cancelling), which
    releases the deployment's concurrency slot it holds; returns their ids, or None when the API does
    not answer (nothing done). A run the API does not know (another Prefect database) is skipped;
    an error is never a reason to fail a schedule's start or stop."""
    if not flow_run_ids:
        return []
    from prefect import get_client
    from prefect.states import Crashed

    from flows.api_loss import api_answers

    if not api_answers():
        return None
    crashed = []
    try:
        with get_client(sync_client=True) as client:
            for run_id in flow_run_ids:
                try:
                    run = client.read_flow_run(run_id)
                except Exception as exc:  # ObjectNotFound: noted on another Prefect database
                    log.debug("flow run %s: %s", run_id, exc)
                    continue
                if run.state is None or run.state.type.value not in states:
                    continue
                client.set_flow_run_state(run_id, Crashed(message=why), force=True)
                crashed.append(str(run_id))
    except Exception as exc:
        log.warning("could not close the flow runs this schedule left: %s", exc)
    return crashed


def crash_runs_of_killed_schedules(temporary_server: bool) -> list[str]:
    """Set Crashed the unfinished flow runs that schedules killed outright (kill -9, the OOM killer)
    had submitted: their scratch directories outlive them (`recsys.files.dead_process_dirs`), with
    the list of their runs. Called before this schedule's own `scratch_dir`, which removes those
    directories. On Prefect's temporary server (`temporary_server`) every such run is done for: its
    process lost its API when the killed schedule's server was stopped, as this one starts. On a
    server of the user's, a Running one's process may outlive the schedule, so only Pending ones
    (their process never started the flow) are closed; a Running one keeps its slot while its
    process renews the lease (`stop_runs_of_killed_schedules` stops that process first), and the
    server's lease expiry frees it after that process ends."""
    ids = runs_of_killed_schedules()
    states = UNFINISHED if temporary_server else ("PENDING",)
    return crash_unfinished(ids, "the `recsys schedule` serving it was killed before the run finished", states) or []


def runs_of_killed_schedules() -> list[uuid.UUID]:
    """The flow runs noted by schedules whose process is gone (`recsys.files.dead_process_dirs`)."""
    from recsys.files import dead_process_dirs

    return [run for directory in dead_process_dirs(SCHEDULE_PREFIX) for run in noted_runs(directory)]


STOP_GRACE_S = 10.0
"""How long `stop_flow_run_processes` lets a SIGTERMed flow-run process end before SIGKILL."""


def stop_runs_of_killed_schedules(proc: Path | None = None, grace: float = STOP_GRACE_S) -> list[int]:
    """Stop the flow-run processes that schedules killed outright left running
    (`stop_flow_run_processes` of the runs they noted); returns their pids.

    Why: a schedule killed with -9 leaves the process of the run it was executing training on,
    reparented to init, but its output went through a pipe to that schedule's runner, so its first
    line after the kill fails (EPIPE) and it exits there (Prefect's console: SystemExit), its MLflow
    runs closed KILLED, its flow run Crashed: measured, it trained on for the rest of the model
    (~1 min there; a long model's hours) only to be lost, on the cores and memory the next schedule's
    runs need. SIGTERMed after its temporary server was stopped (this start does that first), it
    spent minutes on client retries to report to that server, hence the SIGKILL. Never a live
    schedule's run."""
    return stop_flow_run_processes({str(run) for run in runs_of_killed_schedules()}, proc, grace)


def stop_runs_of_this_schedule(grace: float = STOP_GRACE_S) -> list[int]:
    """Stop the flow-run processes of the runs this schedule noted (its own `$TMPDIR/recsys-schedule-<pid>-*`,
    `stop_flow_run_processes`); returns their pids. For a schedule whose temporary server ended
    (`flows.deployments.stop_when_server_ends`): Prefect's runner would wait for them, and they
    trained on for minutes only to fail every report to that server."""
    from recsys.files import process_dirs

    own = [directory for directory, pid, _ in process_dirs(SCHEDULE_PREFIX) if pid == os.getpid()]
    return stop_flow_run_processes({str(run) for directory in own for run in noted_runs(directory)}, grace=grace)


def stop_flow_run_processes(runs: set[str], proc: Path | None = None, grace: float = STOP_GRACE_S) -> list[int]:
    """Stop the flow-run processes of `runs` (flow-run ids): SIGTERM (the flow closes its MLflow
    runs KILLED), then SIGKILL for those still there after `grace` seconds (one retrying a server
    that is gone takes minutes to end); returns their pids. One is recognised from /proc, all of:
    this user, this Python's directory (never another venv's), `-m flows.flow_run_process` on its
    command line, and PREFECT__FLOW_RUN_ID (set by Prefect's runner) one of `runs`."""
    import contextlib
    import signal
    import time

    from flows.ephemeral import _python_dir
    from recsys.procfs import PROC, find_own

    if not runs:
        return []
    python_dir = os.path.dirname(os.path.abspath(sys.executable))
    module = FLOW_RUN_MODULE.encode()

    def left_running(entry: Any) -> bool:
        command = entry.command()
        if _python_dir(command) != python_dir or module not in command:
            return False
        return entry.env("PREFECT__FLOW_RUN_ID") in runs

    stopped = []
    for pid in find_own(left_running, proc or PROC):
        with contextlib.suppress(OSError):  # ended meanwhile
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a stopped one takes its SIGTERM only once it goes on
            stopped.append(pid)
    deadline = time.monotonic() + grace
    while (left := set(find_own(left_running, proc or PROC)) & set(stopped)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return stopped


SERVES_FILE = "serves"
"""What a schedule serves, in its scratch directory: `deployment_key` (one line)."""


def deployment_key(deployment: str, api_url: str | None) -> str:
    """Names a deployment ("flow/name") on one Prefect: the API a user's server answers at, or for
    Prefect's temporary server (`api_url` None) the database every temporary server of this Prefect
    home opens; hashed, as a database URL can carry a password."""
    import hashlib

    if api_url:
        where = api_url.rstrip("/")
    else:
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        url = getattr(settings.server.database, "connection_url", None)
        where = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url or f"home {settings.home}")
    return f"{deployment} on {hashlib.sha256(where.encode()).hexdigest()[:16]}"


def check_served_once(key: str, scratch: Path | None = None) -> None:
    """Refuse (RecsysError, one line) to serve a deployment that a running `recsys schedule` of this
    machine serves already on the same Prefect (`deployment_key`); with `scratch`, note that this
    schedule serves it first (two that start at once then both refuse: never both serve).

    Why: the two served it side by side, until one stopped: Prefect's runner pauses its deployment
    when it stops, and that deployment was the other's too, so the one still running served a
    paused deployment (its scheduled runs gone) and never ran again, without a word."""
    from recsys.errors import RecsysError
    from recsys.files import process_dirs

    if scratch is not None:
        (scratch / SERVES_FILE).write_text(f"{key}\n", encoding="utf-8")
    for directory, pid, alive in process_dirs(SCHEDULE_PREFIX):
        if not alive or directory == scratch:
            continue
        try:
            theirs = (directory / SERVES_FILE).read_text(encoding="utf-8").strip()
        except OSError:  # starting, or one from before this check
            continue
        if theirs == key:
            deployment = key.split(" on ", 1)[0]
            raise RecsysError(
                f"{deployment} is served already by `recsys schedule` (pid {pid}) on this machine, on the same "
                f"Prefect: a second one would pause the deployment for both when it stops: stop that one first "
                f"(`kill {pid}`), or give this one another --name"
            )
