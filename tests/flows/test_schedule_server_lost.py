"""`recsys schedule` whose user's Prefect server (PREFECT_API_URL) goes down while it serves: what a
user watching the terminal sees, from a real `recsys` process serving on the session's harness
behind a proxy that the test closes as a killed server goes (and opens again, as a restart).

Before, the schedule said nothing but a websocket warning for 234 s (three failed polls, each
waiting out Prefect's client retries) and then gave up; now it says at its second failed health
check (5 s apart) that the server does not answer and how long it waits, says so again if the
server comes back, and gives up after `flows.runner.SERVER_GRACE_S` (60 s; here GRACE_S or LOST_GRACE_S
through RECSYS_SCHEDULE_SERVER_GRACE_S, so the test waits seconds, not a minute: a grace that short is
watched with checks closer together, `flows.runner.health_every_s`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from killable_proxy import KillableProxy
from stopped import recsys_cli

from flows.runner import GRACE_ENV

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="signals to a process group")]

YEARLY = "0 3 1 1 *"  # a real schedule, never due while the test runs
POLL = b"get_scheduled_flow_runs"  # the runner's poll for scheduled runs (a POST to the API)
GRACE_S = 10  # RECSYS_SCHEDULE_SERVER_GRACE_S: the product's 60 s, shortened (the same watch, notice and end)
# The server that stays down: the least grace the setting takes (checks 1.5 s apart), so the loss is
# still said before the schedule gives up, 4 s sooner; the restart keeps GRACE_S (checks 2.5 s apart),
# room for the test to bring the server back between the notice (~5 s after the kill) and the end (~12 s).
LOST_GRACE_S = 6
GIVES_UP_WITHIN_S = 240  # a generous bound on the grace + a check: it gives up, it does not hang
# The runner polls every 2 s, not Prefect's 10 s: each test waits for its second poll before the kill
# and, on a restart, for a poll through the new server (~8 s less per wait). A failed poll still waits
# out Prefect's client retries (~60 s), so it is the health checks that say the loss and end the schedule.
POLL_EVERY_S = "2"


class Serving:
    """A `recsys schedule` child serving deployment `name` through `proxy`, its output read as it comes."""

    def __init__(self, proxy: KillableProxy, tmp_path: Path, grace_s: int) -> None:
        self.proxy, self.api = proxy, f"http://127.0.0.1:{proxy.port}/api"
        self.name = f"served-{uuid.uuid4().hex[:6]}"
        (tmp_path / "tmp").mkdir()
        env = {**os.environ, "PREFECT_API_URL": self.api, "PREFECT_HOME": str(tmp_path / "prefect"),
               "TMPDIR": str(tmp_path / "tmp"), "COLUMNS": "1000", GRACE_ENV: str(grace_s),
               "PREFECT_RUNNER_POLL_FREQUENCY": POLL_EVERY_S}  # fmt: skip
        self.process = subprocess.Popen(
            recsys_cli("schedule", "--cron", YEARLY, "--name", self.name), env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [self._read(self.process.stdout, self.out), self._read(self.process.stderr, self.err)]

    @staticmethod
    def _read(stream, lines: list[str]) -> threading.Thread:
        thread = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in stream), daemon=True)
        thread.start()
        return thread

    def polled(self, times: int, timeout: float = 180) -> None:
        """Wait until the runner polled `times` times in all (the one before the last was answered)."""
        deadline = time.monotonic() + timeout
        while sum(POLL in line for line in self.proxy.requests) < times:
            assert self.process.poll() is None and time.monotonic() < deadline, self.out + self.err
            time.sleep(0.1)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.out):
            assert self.process.poll() is None and time.monotonic() < deadline, self.out + self.err
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for reader in self.readers:
            reader.join(10)


@contextmanager
def serving(tmp_path: Path, grace_s: int = GRACE_S) -> Iterator[Serving]:
    from prefect.settings import PREFECT_API_URL

    harness = urlsplit(str(PREFECT_API_URL.value()))
    schedule = Serving(KillableProxy((harness.hostname or "127.0.0.1", int(harness.port or 80))), tmp_path, grace_s)
    try:
        yield schedule
    finally:
        schedule.stop()


def _down_line(api: str) -> str:
    return f"  the Prefect server {api} (PREFECT_API_URL) does not answer ("


def test_a_schedule_whose_server_goes_down_while_it_serves_says_so_and_ends_in_one_line(prefect_harness, tmp_path):
    """The server killed once the schedule served (a poll answered): a line saying it does not
    answer and how long the schedule waits, then, once that time is out, the line saying how to
    pause the deployment it leaves unpaused and one error line; exit 2, no traceback."""
    with serving(tmp_path, LOST_GRACE_S) as schedule:
        schedule.polled(2)
        schedule.proxy.kill()
        schedule.process.wait(timeout=GIVES_UP_WITHIN_S)
    out, err = schedule.out, schedule.err
    assert schedule.process.returncode == 2, out + err
    api, deployment = schedule.api, f"training-pipeline/{schedule.name}"
    assert [line for line in out if "Prefect server" in line] == [
        f"{_down_line(api)}[Errno 111] Connection refused): this schedule waits for it, and stops if it has not "
        f"answered within {LOST_GRACE_S} s",
        f"  deployment {deployment} was left unpaused: its Prefect server {api} (PREFECT_API_URL) did not answer "
        "when this schedule stopped, and once back it schedules runs that nothing runs (they show Late): pause it "
        f"then ({out[-1].split('pause it then (', 1)[-1].split('), or serve', 1)[0]}), or serve it again "
        "(`recsys schedule`)",
    ], out
    assert err[-1] == (
        f"error: the Prefect server {api} (PREFECT_API_URL) stopped answering while this schedule served "
        "([Errno 111] Connection refused): the schedule stopped with it; start the server again "
        "(`prefect server start`, `recsys stack up`) or point PREFECT_API_URL at one that runs, then start the "
        "schedule again (`recsys schedule`)"
    ), err
    assert not any("Traceback" in line or "ExceptionGroup" in line for line in out + err), out + err


def test_a_schedule_whose_server_restarts_while_it_serves_serves_on(prefect_harness, tmp_path):
    """The server down for a while (a restart), then back on its port: the schedule says it does
    not answer, then that it answers again, and serves on (a Ctrl-C then stops it as ever: exit 0,
    its deployment paused)."""
    from flows.runner import health_every_s

    with serving(tmp_path) as schedule:
        schedule.polled(2)
        schedule.proxy.kill()
        killed = time.monotonic()
        schedule.wait_for(_down_line(schedule.api).strip())
        back = KillableProxy(schedule.proxy.upstream, schedule.proxy.port)
        schedule.wait_for("answers again")
        # Past the grace it would have given up at had it not seen the server back (its first failed
        # check came within a check of the kill, the end at a check after the grace), and then one
        # more poll through the new server: it serves on, not merely until its grace runs out.
        beyond = killed + GRACE_S + 2 * health_every_s(GRACE_S)
        while time.monotonic() < beyond:
            assert schedule.process.poll() is None, schedule.out + schedule.err
            time.sleep(0.1)
        polls = sum(POLL in line for line in back.requests)
        deadline = time.monotonic() + 120
        while sum(POLL in line for line in back.requests) < polls + 1:  # it polls on, through the new one
            assert schedule.process.poll() is None and time.monotonic() < deadline, schedule.out + schedule.err
            time.sleep(0.1)
    out = schedule.out
    assert schedule.process.returncode == 0, out + schedule.err
    assert [line for line in out if "Prefect server" in line and "answer" in line][-1] == (
        f"  the Prefect server {schedule.api} (PREFECT_API_URL) answers again: this schedule serves on"
    ), out
    assert not any("Traceback" in line for line in out + schedule.err)


def test_the_grace_setting_is_a_number_of_seconds_long_enough_to_say_the_loss_first(monkeypatch):
    """RECSYS_SCHEDULE_SERVER_GRACE_S: unset, 60 s; a number of at least 6 s, else one refusal naming
    the setting (read before anything is served). The health checks come every 5 s, closer together
    under a grace too short for the notice and one more check at that pace."""
    from flows.runner import GRACE_ENV, SERVER_GRACE_S, health_every_s, server_grace_s
    from recsys.errors import RecsysError

    monkeypatch.delenv(GRACE_ENV, raising=False)
    assert server_grace_s() == SERVER_GRACE_S == 60
    monkeypatch.setenv(GRACE_ENV, "300")
    assert server_grace_s() == 300
    monkeypatch.setenv(GRACE_ENV, "6")
    assert server_grace_s() == 6
    assert [health_every_s(g) for g in (60, 300, 20, 10, 6)] == [5, 5, 5, 2.5, 1.5]
    for bad in ("soon", "5", "nan", "-60"):
        monkeypatch.setenv(GRACE_ENV, bad)
        with pytest.raises(RecsysError, match=rf"{GRACE_ENV}=.*at least 6 \(default 60\)"):
            server_grace_s()


def test_a_short_grace_is_watched_at_its_own_pace(monkeypatch):
    """The watch sleeps `health_every_s(grace)` between checks, not HEALTH_EVERY_S: a 6 s grace is
    checked every 1.5 s (with 5 s checks it would give up at its third check, 15 s in). Fails when
    the watch's sleep is not the scaled pace."""
    import asyncio
    import types

    import anyio

    from flows.runner import GRACE_ENV, HEALTH_EVERY_S, _watch_server

    slept: list[float] = []

    class Stop(Exception):
        pass

    async def sleep(delay: float) -> None:
        slept.append(delay)
        raise Stop

    async def serve() -> None:  # the poller's own loop: runs until the watch ends it
        await asyncio.sleep(60)

    for grace, pace in (("6", 1.5), ("60", HEALTH_EVERY_S)):
        monkeypatch.setenv(GRACE_ENV, grace)
        monkeypatch.setattr(anyio, "sleep", sleep)
        poller = types.SimpleNamespace(run=serve)
        _watch_server(types.SimpleNamespace(say=lambda line: None), poller)
        with pytest.raises(BaseException) as raised:
            asyncio.run(poller.run())
        assert raised.group_contains(Stop) if isinstance(raised.value, BaseExceptionGroup) else raised.type is Stop
        monkeypatch.undo()
        assert slept[-1] == pace
