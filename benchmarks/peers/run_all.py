"""Driver for `make peers`: export -> every runner in its own venv -> score -> REPORT.md.

Runs in the project venv. Each (data set, system, model) is one subprocess, so peak RSS is that run's
own, a crash or timeout in one peer costs only that row (recorded in status.json and the report),
and a missing peer venv is reported rather than fatal.

    .venv/bin/python benchmarks/peers/run_all.py [--reuse] [--datasets NAME[,NAME]]
        [--only SYSTEM|SYSTEM-MODEL[,...]] [--timeout S] [--no-report]

`--only recsys` runs every recsys model; `--only recsys-wals,cornac-ease` runs just those two.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from recsys.files import write_text_atomic

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = REPO / "benchmarks/out/peers"

# system -> (interpreter relative to REPO, runner)
SYSTEMS: dict[str, tuple[str, str]] = {
    "recsys": (".venv/bin/python", "run_project.py"),
    "implicit": (".venv/bin/python", "run_implicit.py"),
    "recbole": ("benchmarks/peers/.venv-recbole/bin/python", "run_recbole.py"),
    "cornac": ("benchmarks/peers/.venv-cornac/bin/python", "run_cornac.py"),
    "lenskit": ("benchmarks/peers/.venv-lenskit/bin/python", "run_lenskit.py"),
}

ML_MODELS = [
    ("recsys", "popularity"), ("recsys", "wals"), ("recsys", "two_tower"),
    ("implicit", "als"),
    ("recbole", "BPR"), ("recbole", "ENMF"), ("recbole", "MultiVAE"), ("recbole", "LightGCN"),
    ("cornac", "bpr"), ("cornac", "ease"),
    ("lenskit", "als"), ("lenskit", "flexmf"),
]  # fmt: skip
FAST_MODELS = [
    ("recsys", "popularity"), ("recsys", "wals"), ("implicit", "als"), ("recbole", "BPR"),
    ("cornac", "bpr"), ("lenskit", "als"),
]  # fmt: skip
"""The 1M-interaction set only runs the systems that finish in minutes on 2 cores."""

PLAN: dict[str, list[tuple[str, str]]] = {
    "ml100k-random": ML_MODELS,
    "ml100k-temporal": ML_MODELS,
    "synthetic-1m": FAST_MODELS,
}


def run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """(exit code, last lines of output, seconds); 124 on timeout, like coreutils' timeout."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        return done.returncode, tail, time.perf_counter() - start
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f}s", time.perf_counter() - start


def record_status(path: Path, key: str, value: dict) -> None:
    """Merge one run's outcome into status.json (re-read first, so runs of other data sets or systems,
    earlier or concurrent, keep their entries; written atomically)."""
    status = json.loads(path.read_text()) if path.is_file() else {}
    status[key] = value
    write_text_atomic(path, json.dumps(status, indent=1, sort_keys=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", action="store_true", help="keep the export and result files that exist")
    parser.add_argument(
        "--only", default="", help="comma-separated systems or system-model keys to run (default: all)"
    )
    parser.add_argument("--datasets", default=",".join(PLAN))
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("PEERS_TIMEOUT", "600")))
    parser.add_argument("--no-report", action="store_true", help="run only; skip score.py and report.py")
    args = parser.parse_args(argv)
    only = {s.strip().lower() for s in args.only.split(",") if s.strip()}
    unknown = only - {s for s in SYSTEMS} - {f"{s}-{m.lower()}" for runs in PLAN.values() for s, m in runs}
    if unknown:
        parser.error(f"--only: unknown system or system-model {sorted(unknown)}")
    datasets = [d for d in args.datasets.split(",") if d]
    python = str(REPO / ".venv/bin/python")
    export, results = OUT / "export", OUT / "results"
    status_path = OUT / "status.json"
    if not args.reuse:
        status_path.unlink(missing_ok=True)

    if not (args.reuse and all((export / d / "meta.json").is_file() for d in datasets)):
        code, tail, _ = run([python, str(HERE / "export.py"), "--datasets", ",".join(datasets)], args.timeout)
        print(tail)
        if code:
            raise SystemExit(f"export failed ({code})")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    for dataset in datasets:
        for system, model in PLAN[dataset]:
            if only and system not in only and f"{system}-{model.lower()}" not in only:
                continue
            key = f"{dataset}/{system}-{model.lower()}"
            target = results / dataset / f"{system}-{model.lower()}.json"
            if args.reuse and target.is_file():
                continue
            interpreter, runner = SYSTEMS[system]
            if not (REPO / interpreter).is_file():
                record_status(status_path, key, {
                    "rc": None,
                    "error": f"{interpreter} missing: run `make peers` to build the venv",
                })  # fmt: skip
                print(f"skip {key}: no venv")
                continue
            target.unlink(missing_ok=True)
            code, tail, seconds = run(
                [str(REPO / interpreter), str(HERE / runner), str(export), str(results), dataset, model],
                args.timeout,
                env,
            )
            record_status(status_path, key, {
                "rc": code, "seconds": round(seconds, 1), "timeout": args.timeout, "error": "" if code == 0 else tail,
            })  # fmt: skip
            print(
                f"{'ok  ' if code == 0 else 'FAIL'} {key} ({seconds:.0f}s)"
                + ("" if code == 0 else f"\n{tail}")
            )
    if args.no_report:
        return
    for step in ("score.py", "report.py"):
        code, tail, _ = run([python, str(HERE / step)], args.timeout)
        print(tail)
        if code:
            raise SystemExit(f"{step} failed ({code})")


if __name__ == "__main__":
    sys.exit(main())
