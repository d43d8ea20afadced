"""Chaos: concurrent writers, kill -9 and a dying or frozen tracking server, each followed by a rerun (issue 20).

`python -m benchmarks chaos`. Every probe runs real `recsys` processes in a scratch directory and
checks what an operator would after the rerun:

* data lost  - a batch or a trained model that was committed (or that a rerun should have produced)
               is missing;
* left inconsistent - the processed directory contradicts itself (vocab vs table vs manifest, a
               batch twice, staging left behind), a run is still RUNNING after the rerun, or the
               champion is the worse model.

Kills are SIGKILL, placed either at named points (`RECSYS_KILL_AT`, recsys/faults.py: between the two
renames of a swap, after a promotion decided, ...) or at a random moment; a frozen server is SIGSTOP
(its port stays open), and how long the run takes to give up on it is in the notes. Bounded: every process has
a timeout and the whole benchmark a deadline (CHAOS_DEADLINE_S, default 2400 s); what did not fit is
reported as not run. Everything listens on 127.0.0.1 only, and the scratch directory is removed.
`python -m benchmarks.bench_chaos PROBE...` runs only the named probes and prints their table
without writing the results section.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).parent
OUT = HERE / "results" / "chaos.md"
DEADLINE = float(os.environ.get("CHAOS_DEADLINE_S", "2400"))
PROCESS_TIMEOUT = 600
SEED = 20
TINY = [
    "data.synthetic.n_users=150", "data.synthetic.n_items=80", "data.synthetic.n_clusters=4",
    "data.synthetic.interactions_per_user=14", "data.min_user_interactions=2", "evaluation.ks=[10, 20]",
    "evaluation.bootstrap_samples=50",
    'models=[{name="pop", kind="popularity"}, {name="wals", kind="wals", factors=8, iterations=4, threads=1}]',
]  # fmt: skip
GOOD, BAD = "wals", "pop"  # on planted clusters WALS beats popularity by far (recall@20 ~0.5 vs ~0.15)


@dataclass
class Probe:
    name: str
    what: str
    tried: int = 0
    survived: int = 0
    lost: int = 0
    inconsistent: int = 0
    worse: int = 0
    running: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str = ""

    def trial(self, problems: list[str], lost: int = 0, worse: int = 0, running: int = 0) -> None:
        self.tried += 1
        self.lost += lost
        self.worse += worse
        self.running += running
        if problems or lost or worse or running:
            self.inconsistent += 1 if (problems or worse or running) else 0
            self.notes += problems
        else:
            self.survived += 1


class Chaos:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.started = time.monotonic()
        self.rng = random.Random(SEED)
        self.recsys = Path(sys.executable).with_name("recsys")
        self.env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        self.env.pop("RECSYS_KILL_AT", None)
        self.env.pop("MLFLOW_TRACKING_URI", None)

    # ------------------------------------------------------------------ processes
    def left(self) -> float:
        return DEADLINE - (time.monotonic() - self.started)

    def command(self, *args: str) -> list[str]:
        if self.recsys.is_file():
            return [str(self.recsys), *args]
        return [sys.executable, "-c", "from recsys.cli import app; app()", *args]

    def start(
        self, *args: str, kill_at: str | None = None, cwd: Path | None = None, stop_at: str | None = None
    ) -> subprocess.Popen:
        env = dict(self.env)
        if kill_at:
            env["RECSYS_KILL_AT"] = kill_at
        if stop_at:  # the process SIGSTOPs itself there (recsys/faults.py) until SIGCONT
            env["RECSYS_STOP_AT"] = stop_at
        return subprocess.Popen(
            self.command(*args), cwd=cwd or self.root, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def run(self, *args: str, kill_at: str | None = None, cwd: Path | None = None) -> tuple[int, str]:
        proc = self.start(*args, kill_at=kill_at, cwd=cwd)
        try:
            out, _ = proc.communicate(timeout=min(PROCESS_TIMEOUT, max(self.left(), 30)))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            return -999, out
        return proc.returncode, out

    # ------------------------------------------------------------------ data
    def log_file(self, name: str, users: range, rows_per_user: int, start: int) -> tuple[Path, int]:
        """A CSV of `users` x `rows_per_user` distinct (user, item) rows; returns (path, rows)."""
        rng = np.random.default_rng(abs(hash(name)) % 2**32)
        n_users = len(users)
        user = np.repeat(np.arange(users.start, users.stop), rows_per_user)
        item = (
            rng.integers(0, 5000, size=n_users)[:, None] + np.arange(rows_per_user)[None, :]
        ).ravel() % 20000
        frame = pl.DataFrame({
            "user_id": [f"u{u}" for u in user], "item_id": [f"i{i}" for i in item],
            "rating": rng.integers(1, 6, size=user.size), "timestamp": start + np.arange(user.size),
        })  # fmt: skip
        path = self.root / "raw" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_csv(path)
        return path, frame.height


def staging_left(out: Path) -> list[str]:
    return [
        p.name
        for p in out.parent.iterdir()
        if p.name.startswith(f".{out.name}.") and p.name.endswith((".tmp", ".old"))
    ]


def check_processed(
    out: Path, expected: dict[str, int], base_ids: list[str] | None = None
) -> tuple[list[str], int]:
    """(problems, batches lost) of a processed directory that should hold each of `expected`
    (source file name -> rows) exactly once."""
    from recsys.data.storage import load_processed, read_manifest

    if not out.is_dir():
        return [f"{out.name}: directory missing"], len(expected)
    try:
        manifest = read_manifest(out)
        data = load_processed(out)
    except Exception as exc:
        return [f"{out.name}: unreadable ({exc})"], len(expected)
    problems = []
    batches = manifest["batches"]
    sources = [Path(b["source"]).name for b in batches]
    lost = sum(1 for name in expected if name not in sources)
    # A rerun of an append that did land adds nothing (ingest's --append of content a batch already
    # holds; older versions added a batch of rows all quarantined as duplicates): either way the file's
    # rows are accepted once, so consistent. Rows accepted twice are not; a file in no batch is lost.
    for name in set(sources):
        accepted = sum(b["rows_accepted"] for b in batches if Path(b["source"]).name == name)
        if name in expected and accepted != expected[name]:
            problems.append(f"{name}: {accepted} rows accepted, the file has {expected[name]}")
    if manifest["rows_in"] != manifest["rows_accepted"] + manifest["rows_quarantined"]:
        problems.append("rows_in != rows_accepted + rows_quarantined")
    if manifest["rows_in"] != sum(b["rows_in"] for b in batches):
        problems.append("manifest rows_in is not the sum of its batches")
    users_in_table = data.interactions["user_idx"].n_unique()
    if not (len(data.user_ids) == manifest["users"] == users_in_table):
        problems.append(
            f"vocab {len(data.user_ids)} / manifest {manifest['users']} / table {users_in_table} users"
        )
    if base_ids is not None and list(data.user_ids[: len(base_ids)]) != base_ids:
        problems.append("the append-only user vocab moved")
    if staging_left(out):
        problems.append(f"staging left: {staging_left(out)}")
    return problems, lost


def store_state(uri: str, experiment: str, registered: str) -> tuple[int, str | None, int]:
    """(RUNNING runs, champion's model name, FINISHED model runs) of an experiment / registry line."""
    from mlflow import MlflowClient

    from recsys.tracking.registry import CHAMPION, alias_version

    client = MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    running = sum(1 for r in runs if r.info.status == "RUNNING")
    finished_models = sum(
        1 for r in runs if r.info.status == "FINISHED" and r.data.tags.get("recsys.kind") == "model"
    )
    champion = alias_version(client, registered, CHAMPION)
    name = client.get_run(champion.run_id).data.tags.get("recsys.model_name") if champion else None
    return running, name, finished_models


# ====================================================================== probes
def probe_concurrent_appends(chaos: Chaos, probe: Probe, trials: int = 2, writers: int = 3) -> None:
    for trial in range(trials):
        out = chaos.root / "processed" / f"concurrent-{trial}"
        base, base_rows = chaos.log_file(f"c{trial}-base", range(0, 2000), 20, 0)
        code, text = chaos.run("ingest", str(base), "--out", str(out))
        if code != 0:
            probe.trial([f"base ingest failed: {text[-300:]}"])
            continue
        files = [
            chaos.log_file(f"c{trial}-new{i}", range(2000 + 4000 * i, 6000 + 4000 * i), 50, 10**7 * (i + 1))
            for i in range(writers)
        ]
        procs = [chaos.start("ingest", str(path), "--out", str(out), "--append") for path, _ in files]
        codes = [p.wait(timeout=PROCESS_TIMEOUT) for p in procs]
        expected = {base.name: base_rows, **{p.name: n for p, n in files}}
        problems, lost = check_processed(out, expected)
        if any(codes):
            problems.append(f"exit codes {codes}")
        probe.trial(problems, lost=lost)


def probe_concurrent_promotions(chaos: Chaos, probe: Probe, trials: int = 4) -> None:
    uri = f"sqlite:///{chaos.root / 'promo' / 'mlflow.db'}"
    base = [*TINY, f'data.processed_dir="{chaos.root / "promo-data"}"', f'data.raw_dir="{chaos.root / "promo-raw"}"',
            f'tracking.tracking_uri="{uri}"', 'tracking.experiment="promo"', "promotion.auto=false"]  # fmt: skip
    code, text = chaos.run("run", "--no-prefect", "--json", str(chaos.root / "promo.json"), *sets(base))
    if code != 0:
        probe.skipped = f"setup run failed ({code}): {text[-300:]}"
        return
    runs = {
        m["name"]: m["mlflow_run_id"] for m in json.loads((chaos.root / "promo.json").read_text())["models"]
    }
    for trial in range(trials):
        registered = f"chaos-promo-{trial}"
        overrides = sets([*base, f'promotion.registered_model="{registered}"'])
        order = [GOOD, BAD] if trial % 2 else [BAD, GOOD]
        procs = [chaos.start("promote", "--run-id", runs[name], *overrides) for name in order]
        codes = [p.wait(timeout=PROCESS_TIMEOUT) for p in procs]
        running, champion, _ = store_state(uri, "promo", registered)
        problems = [f"exit codes {codes}"] if any(codes) else []
        probe.trial(problems, worse=int(champion != GOOD), running=running)
        if champion != GOOD:
            probe.notes.append(f"trial {trial}: champion {champion}")


def staged_seconds(chaos: Chaos, out: Path, new: Path) -> float:
    """How long an append of `new` to (a copy of) `out` runs once its staging directory exists:
    the window a random kill must land in (a fixed window missed it on a fast machine)."""
    copy = out.with_name(f"{out.name}-calibration")
    shutil.copytree(out, copy)
    proc = chaos.start("ingest", str(new), "--out", str(copy), "--append")
    while proc.poll() is None and not staging_left(copy):
        time.sleep(0.002)
    started = time.perf_counter()
    proc.wait()
    window = time.perf_counter() - started
    shutil.rmtree(copy)
    return window


def probe_kill_ingest(chaos: Chaos, probe: Probe, kill_at: str | None, trials: int) -> None:
    from recsys.data.storage import load_processed

    for trial in range(trials):
        out = chaos.root / "processed" / f"{probe.name}-{trial}"
        base, base_rows = chaos.log_file(f"{probe.name}-{trial}-base", range(0, 3000), 20, 0)
        if chaos.run("ingest", str(base), "--out", str(out))[0] != 0:
            probe.trial(["base ingest failed"])
            continue
        base_ids = [str(u) for u in load_processed(out).user_ids]
        new, new_rows = chaos.log_file(f"{probe.name}-{trial}-new", range(1500, 40000), 10, 10**8)
        if kill_at:
            code, _ = chaos.run("ingest", str(new), "--out", str(out), "--append", kill_at=kill_at)
            killed = code == -signal.SIGKILL
        else:  # a random moment of the append while it writes (its staging dir exists)
            window = staged_seconds(chaos, out, new)
            proc = chaos.start("ingest", str(new), "--out", str(out), "--append")
            while proc.poll() is None and not staging_left(out):
                time.sleep(0.002)
            time.sleep(chaos.rng.uniform(0.0, 0.9 * window))
            proc.send_signal(signal.SIGKILL)
            killed = proc.wait() == -signal.SIGKILL
        code, text = chaos.run("ingest", str(new), "--out", str(out), "--append")  # the rerun
        problems, lost = check_processed(out, {base.name: base_rows, new.name: new_rows}, base_ids)
        if code != 0:
            problems.append(f"rerun exit {code}: {text[-300:]}")
        if not killed:
            probe.notes.append(f"trial {trial}: the process finished before the kill")
        probe.trial(problems, lost=lost)


def pipeline_sets(chaos: Chaos, name: str, uri: str, source: str = "synthetic") -> list[str]:
    return sets([
        *TINY, f'data.source="{source}"', f'data.processed_dir="{chaos.root / name / "processed"}"',
        f'data.raw_dir="{chaos.root / name / "raw"}"', f'tracking.tracking_uri="{uri}"', f'tracking.experiment="{name}"',
        f'tracking.offline_dir="{chaos.root / name / "unlogged"}"', f'promotion.registered_model="chaos-{name}"',
        f'tracking.model_name_prefix="{name}"',
    ])  # fmt: skip


def run_data_dir(args: list[str]) -> Path:
    """The processed directory `recsys run ARGS` (no --config) writes: its config is the shipped
    default.toml with the overrides, whose [data] settings (aggregate, min_item_interactions) name
    the directory; the built-in defaults name another one."""
    from pipelines.data import dataset_dir
    from recsys.cli.common import load_run_config

    return dataset_dir(load_run_config(None, [a for a in args if a != "--set"], default=True).data)


def probe_kill_run(chaos: Chaos, probe: Probe, kill_at: str, landing: bool = False) -> None:
    """A pipeline run killed at `kill_at`, then rerun: nothing RUNNING, the right champion."""
    uri = f"sqlite:///{chaos.root / probe.name / 'mlflow.db'}"
    source = "synthetic"
    expected: dict[str, int] = {}
    if landing:
        zone = chaos.root / probe.name / "landing"
        for day in range(2):
            path, rows = chaos.log_file(
                f"{probe.name}-day{day}", range(day * 100, day * 100 + 150), 14, day * 10**6
            )
            zone.mkdir(parents=True, exist_ok=True)
            shutil.move(path, zone / path.name)
            expected[path.name] = rows
        source = str(zone)
    overrides = pipeline_sets(chaos, probe.name, uri, source)
    if landing:  # day 0 ingested by a first, clean run; the killed run appends day 1
        first_day = zone / f"{probe.name}-day1.csv"
        hidden = first_day.with_name(".hold")
        first_day.rename(hidden)
        if chaos.run("run", "--no-prefect", *overrides)[0] != 0:
            probe.trial(["first run failed"])
            return
        hidden.rename(first_day)
    killed, _ = chaos.run("run", "--no-prefect", *overrides, kill_at=kill_at)
    code, text = chaos.run("run", "--no-prefect", *overrides)  # the rerun
    problems = [] if code == 0 else [f"rerun exit {code}: {text[-400:]}"]
    if killed != -signal.SIGKILL:
        problems.append(f"the kill at {kill_at} did not happen (exit {killed})")
    running, champion, finished = store_state(uri, probe.name, f"chaos-{probe.name}")
    lost = max(0, 2 - finished)  # the rerun's two models must be in the store
    worse = int(champion != GOOD)
    if landing:  # on these logs either model may win; the champion is checked on planted data only
        probe.notes.append(f"champion after the rerun: {champion}")
        worse = 0
    if landing:
        more, lost_batches = check_processed(run_data_dir(overrides), expected)
        problems += more
        lost += lost_batches
    probe.trial(problems, lost=lost, worse=worse, running=running)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(chaos: Chaos, db: Path, artifacts: Path, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{db}", "--default-artifact-root",
         artifacts.as_uri(), "--no-serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=chaos.root, env=chaos.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + min(300, max(chaos.left(), 30))
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.5)
    os.killpg(server.pid, signal.SIGKILL)
    raise RuntimeError("mlflow server did not start")


def until_training(chaos: Chaos, db: Path, run: subprocess.Popen) -> bool:
    """Wait until `run` has its parent and a model's MLflow run open in the server's store `db`
    (training under way); False when the run ended (or the deadline came) first."""
    while run.poll() is None and time.monotonic() < chaos.started + DEADLINE:
        with sqlite3.connect(db) as conn:
            runs = conn.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]
        if runs >= 2:
            return True
        time.sleep(0.1)
    return False


def until_stopped(chaos: Chaos, run: subprocess.Popen) -> bool:
    """Wait until `run` froze itself at its RECSYS_STOP_AT point; False when it ended (or the
    deadline came) first."""
    import psutil

    process = psutil.Process(run.pid)
    while run.poll() is None and time.monotonic() < chaos.started + DEADLINE:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.status() == psutil.STATUS_STOPPED:
                return True
        time.sleep(0.05)
    return False


def probe_server(chaos: Chaos, name: str) -> tuple[Callable[[], subprocess.Popen], Path, str, Path]:
    """A tracking server of the probe's own (its store, artifacts and the run's --json summary in
    the probe's folder): (start it, again after a kill on the same port and store; the store
    file; the tracking URI; the summary path)."""
    db, artifacts = chaos.root / name / "server.db", chaos.root / name / "artifacts"
    db.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return (lambda: start_server(chaos, db, artifacts, port)), db, f"http://127.0.0.1:{port}", chaos.root / name / "summary.json"


def probe_server_dies(chaos: Chaos, probe: Probe) -> None:
    """The MLflow server is killed while a run trains; the run must keep everything, exit 2, and a
    resume must log it all once the server is back."""
    from recsys.tracking.reevaluate import SAVED_MODEL_ARTIFACT

    name = probe.name
    start, db, uri, summary = probe_server(chaos, name)
    server = start()
    run = chaos.start("run", "--no-prefect", "--json", str(summary), *pipeline_sets(chaos, name, uri))
    killed = until_training(chaos, db, run)
    if killed:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    out, _ = run.communicate(timeout=PROCESS_TIMEOUT)
    problems = []
    if not killed:
        problems.append("the run ended before the server could be killed")
        os.killpg(server.pid, signal.SIGKILL)
    if run.returncode != 2 or "--resume-tracking" not in out:
        problems.append(f"exit {run.returncode}, not 2 with a resume hint: {out[-300:]}")
    lost = 2
    if summary.is_file():
        data = json.loads(summary.read_text())
        kept = Path(data.get("unlogged_dir") or chaos.root / "none")
        models_kept = [
            m
            for m in data["models"]
            if m.get("unlogged") and (kept / m["name"] / "files" / SAVED_MODEL_ARTIFACT).is_dir()
        ]
        finished_before = 2 - len(models_kept)
        server = start()
        try:
            code, text = chaos.run("run", "--resume-tracking", str(kept), *pipeline_sets(chaos, name, uri))
            if code != 0:
                problems.append(f"resume exit {code}: {text[-300:]}")
            running, _, finished = store_state(f"sqlite:///{db}", name, f"chaos-{name}")
            lost = max(0, 2 - finished)
            probe.notes.append(
                f"{len(models_kept)} model(s) kept on disk, {finished_before} logged before the kill"
            )
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    else:
        problems.append("no --json summary")
        running = 0
    probe.trial(problems, lost=lost, running=running)


def judge_gave_up(code: int, out: str) -> tuple[list[str], list[str] | None]:
    """(problems, the printed resume command's arguments after `recsys`) of a `recsys run` whose
    tracking server stopped answering: what an operator needs is exit 2, one `error:` line, no
    traceback, and in that line the `recsys run ... --resume-tracking DIR` to copy."""
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    problems = [] if code == 2 else [f"exit {code}, not 2"]
    if len(errors) != 1:
        problems.append(f"{len(errors)} `error:` lines, not 1")
    if "Traceback (most recent call last)" in out:
        problems.append("a traceback")
    hint = re.search(r"`(recsys run [^`]*--resume-tracking [^`]+)`", "\n".join(errors))
    if hint is None:
        problems.append(f"no `recsys run ... --resume-tracking DIR` in the error line: {out[-300:]}")
        return problems, None
    return problems, shlex.split(hint.group(1))[1:]


def probe_server_freezes(chaos: Chaos, probe: Probe) -> None:
    """The MLflow server is frozen (SIGSTOP of its process group: its port stays open, nothing
    answers) while a run trains: after WALS's first epoch (the run stopped there, so no store call
    is in flight; a server frozen between a response's headers and its body is given up on after
    one timeout, as urllib3 retries no body read, and a freeze at a random moment measured either
    ~33 s or ~97 s). The run must end by itself, after MLflow's request timeout x tries
    (the seconds from the freeze to its exit go in the notes: README's figure), exit 2 with one error
    line, keep every model not logged in its bundle; once the server goes on (SIGCONT), the printed
    `--resume-tracking` command must log every model and leave no run RUNNING."""
    from recsys.tracking.reevaluate import SAVED_MODEL_ARTIFACT
    from recsys.tracking.store import HTTP_LIMITS

    name = probe.name
    start, db, uri, summary = probe_server(chaos, name)
    server = start()
    run = chaos.start("run", "--no-prefect", "--json", str(summary), *pipeline_sets(chaos, name, uri), stop_at="train.epoch")
    try:
        if not until_stopped(chaos, run):
            run.communicate(timeout=PROCESS_TIMEOUT)
            probe.skipped = f"the run ended (exit {run.returncode}) before the server could be frozen"
            return
        os.killpg(server.pid, signal.SIGSTOP)
        os.kill(run.pid, signal.SIGCONT)
        frozen = time.monotonic()
        try:
            out, _ = run.communicate(timeout=min(PROCESS_TIMEOUT, max(chaos.left(), 30)))
        except subprocess.TimeoutExpired:
            run.kill()
            out, _ = run.communicate()
            probe.trial([f"hung: still running {time.monotonic() - frozen:.0f} s after the freeze, killed"])
            return
        gave_up = time.monotonic() - frozen
        problems, resume = judge_gave_up(run.returncode, out)
        limits = {**HTTP_LIMITS, **chaos.env}
        timeout, tries = limits["MLFLOW_HTTP_REQUEST_TIMEOUT"], 1 + int(limits["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
        said = re.search(r"stopped answering during the run \(([^)]*)\)", out)
        probe.notes.append(f"the run exited {gave_up:.0f} s after the freeze (MLFLOW_HTTP_REQUEST_TIMEOUT "
                           f"{timeout} s x {tries} tries; {said.group(1) if said else 'no cause said'})")  # fmt: skip
        data = json.loads(summary.read_text()) if summary.is_file() else {"models": []}
        bundle = Path(data.get("unlogged_dir") or chaos.root / "none")
        unlogged = [m["name"] for m in data["models"] if m.get("unlogged")]
        kept = [n for n in unlogged if (bundle / n / "files" / SAVED_MODEL_ARTIFACT).is_dir()]
        if not summary.is_file():
            problems.append("no --json summary")
        if len(kept) < len(unlogged):
            problems.append(f"trained but in no bundle: {sorted(set(unlogged) - set(kept))}")
        os.killpg(server.pid, signal.SIGCONT)
        if resume is not None:
            code, text = chaos.run(*resume)
            if code != 0:
                problems.append(f"resume exit {code}: {text[-300:]}")
        running, _, finished = store_state(f"sqlite:///{db}", name, f"chaos-{name}")
        if finished > 2:
            problems.append(f"{finished} finished model runs, not 2")
        probe.notes.append(f"{len(kept)} model(s) kept on disk, {len(data['models']) - len(unlogged)} logged "
                           "before the run gave up")  # fmt: skip
        probe.trial(problems, lost=max(0, 2 - finished), running=running)
    finally:
        if run.poll() is None:  # the probe itself broke: leave nothing running
            run.kill()
            run.wait()
        os.killpg(server.pid, signal.SIGCONT)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


# ====================================================================== report
PROBES: list[tuple[str, str, Callable[[Chaos, Probe], None]]] = [
    ("concurrent-appends", "3 `recsys ingest --append` at once onto one directory (x2)", probe_concurrent_appends),
    ("concurrent-promotions", "2 `recsys promote` at once, WALS vs the far worse popularity (x4)", probe_concurrent_promotions),
    ("kill-ingest-staged", "kill -9 during an append (all staged, before the swap), rerun", lambda c, p: probe_kill_ingest(c, p, "ingest.staged", 2)),
    ("kill-between-renames", "kill -9 between the two renames of the swap, rerun", lambda c, p: probe_kill_ingest(c, p, "storage.between_renames", 2)),
    ("kill-ingest-random", "kill -9 at a random moment of an append while it writes (within the time an unkilled append of the same data writes), rerun", lambda c, p: probe_kill_ingest(c, p, None, 3)),
    ("kill-data-step", "`recsys run` on a landing zone killed after a batch is staged, rerun", lambda c, p: probe_kill_run(c, p, "ingest.staged", landing=True)),
    ("kill-training", "`recsys run` killed after a training epoch, rerun", lambda c, p: probe_kill_run(c, p, "train.epoch")),
    ("kill-logging", "`recsys run` killed between a model's metrics and its artifacts, rerun", lambda c, p: probe_kill_run(c, p, "tracking.artifacts")),
    ("kill-promotion", "`recsys run` killed after the promotion decided, before the alias moved, rerun", lambda c, p: probe_kill_run(c, p, "promote.decided")),
    ("server-dies", "MLflow server (127.0.0.1) killed -9 while a run trains, then restarted and `--resume-tracking`", probe_server_dies),
    ("server-freezes", "MLflow server (127.0.0.1) frozen (SIGSTOP, port open) after a run's first epoch: the run gives up by itself; SIGCONT, then the printed `--resume-tracking`", probe_server_freezes),
]  # fmt: skip


def report(probes: list[Probe], wall: float) -> str:
    lines = [
        "## Chaos: concurrency, kill -9 and a dying tracking server (bench_chaos)",
        "",
        f"`python -m benchmarks chaos`: {wall:.0f} s. Each trial runs real `recsys` processes in a scratch directory "
        "(127.0.0.1 only), kills where stated (SIGKILL: at a named point via RECSYS_KILL_AT, or at a random moment) "
        "or freezes the tracking server (SIGSTOP: the seconds until the run gives up on it are in the notes), "
        "reruns, and checks what an operator would. *Data lost*: committed batches or a rerun's models missing. "
        "*Left inconsistent*: trials after which the processed directory contradicts itself (vocab / table / "
        "manifest, a batch twice, staging left), a run is still RUNNING, or the worse model is champion.",
        "",
        "| probe | what | tried | survived | data lost | left inconsistent | worse champion | RUNNING after rerun | s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in probes:
        if p.skipped:
            lines.append(f"| {p.name} | {p.what} | not run: {p.skipped} | | | | | | |")
            continue
        lines.append(
            f"| {p.name} | {p.what} | {p.tried} | {p.survived} | {p.lost} | {p.inconsistent} | {p.worse} | "
            f"{p.running} | {p.seconds:.0f} |"
        )
    totals = [
        sum(getattr(p, k) for p in probes)
        for k in ("tried", "survived", "lost", "inconsistent", "worse", "running")
    ]
    lines.append(
        f"| **total** | | {totals[0]} | {totals[1]} | {totals[2]} | {totals[3]} | {totals[4]} | {totals[5]} | |"
    )
    notes = [f"- {p.name}: {n}" for p in probes for n in p.notes]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def main(only: list[str] | None = None) -> None:
    wanted = only or [name for name, _, _ in PROBES]
    root = Path(tempfile.mkdtemp(prefix="recsys-chaos-"))
    chaos = Chaos(root)
    probes = []
    try:
        for name, what, fn in PROBES:
            if name not in wanted:
                continue
            probe = Probe(name, what)
            probes.append(probe)
            if chaos.left() < 60:
                probe.skipped = "deadline reached"
                continue
            started = time.monotonic()
            print(f"  probe {name} ...", flush=True)
            try:
                fn(chaos, probe)
            except Exception as exc:  # a probe that breaks is reported, never hides the others
                probe.skipped = probe.skipped or f"{type(exc).__name__}: {exc}"[:200]
            probe.seconds = time.monotonic() - started
            print(f"    tried {probe.tried}, survived {probe.survived}, lost {probe.lost}, inconsistent "
                  f"{probe.inconsistent}, worse {probe.worse}, running {probe.running} ({probe.seconds:.0f} s)", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = report(probes, time.monotonic() - chaos.started)
    if not only:  # a subset's table would replace the whole section: printed only
        OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
