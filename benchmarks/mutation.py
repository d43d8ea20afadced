"""`make mutate`: mutation testing of the code whose mistakes no type checker sees.

mutmut (configured under `[tool.mutmut]` in pyproject.toml: which files, which tests) changes one
operator, constant or argument at a time in the losses, the samplers, the metrics, the splits and
the training step's loss assembly, runs the tests that cover the changed function, and records
whether they noticed. This script runs it over `MODULES`, then writes
`benchmarks/results/mutation.md`: per module, the mutants killed (a test failed or timed out),
the survivors, and the score killed / (killed + survived + no tests). A survivor that cannot be
killed because the mutant behaves exactly like the original (an equivalent mutant) is listed in
`benchmarks/mutation_equivalent.toml` with the reason, keyed by mutant name and the mutated line,
and counted apart; an entry whose line no longer matches is ignored, so a stale reason never hides
a real survivor. Entries marked `cuda_only = true` are mutants that only change the device a tensor
is made on where the CPU is the default: equivalent on a CPU-only machine, counted apart again, and
the report gives the score both without them and with them counted as survivors.
Target: >= 85% killed per module.

    python -m benchmarks.mutation                  # every module (~25 min on 2 quiet cores; niced)
    python -m benchmarks.mutation recsys/losses.py # one module
    python -m benchmarks.mutation --report         # rewrite the report from the last run's results

Runs are incremental: mutmut keeps results in `mutants/` and re-checks only changed functions.
Workers fork from a server that has not run tests (a fork of a process with a running torch
thread pool can deadlock), with one BLAS / OpenMP thread each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

from benchmarks.common import REPO, RESULTS_DIR, commit_description
from recsys.files import write_text_atomic

MODULES: dict[str, list[str]] = {
    "recsys/losses.py": ["recsys.losses.*"],
    "recsys/sampling.py": ["recsys.sampling.*"],
    "recsys/evaluation/metrics.py": ["recsys.evaluation.metrics.*"],
    "recsys/data/splits.py": ["recsys.data.splits.*"],
    "recsys/training.py (loss assembly)": [
        f"recsys.training.x_{name}__mutmut_*"
        for name in (
            "local_negatives",
            "extra_items",
            "assemble_negatives",
            "hit_mask_for",
            "compute_loss",
            "loss_options",
            "resolve_logit_offset",
        )
    ],
}
TARGET = 0.85
EQUIVALENT = Path(__file__).resolve().parent / "mutation_equivalent.toml"
RESULTS = RESULTS_DIR / "mutation.md"
KILLED = {
    1: "killed",
    3: "killed",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
}
SURVIVED = {0: "survived", 5: "no tests", 33: "no tests"}


def run(modules: list[str]) -> None:
    names = [pattern for module in modules for pattern in MODULES[module]]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    mutmut = Path(sys.executable).parent / "mutmut"
    subprocess.run(
        [str(mutmut), "run", *names, "--max-children", str(os.cpu_count() or 1)], cwd=REPO, env=env
    )


def exit_codes() -> dict[str, int | None]:
    """Mutant name -> the exit code of its test run (None: not run yet), from mutmut's records."""
    codes: dict[str, int | None] = {}
    for meta in (REPO / "mutants").rglob("*.py.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def mutated_line(name: str) -> str:
    """The `+` line of the mutant's diff (`mutmut show`), stripped; "" when mutmut cannot show it."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mutmut"), "show", name], cwd=REPO, capture_output=True, text=True
    )
    added = [
        line[1:].strip()
        for line in done.stdout.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return " / ".join(added)


def equivalents() -> dict[str, dict[str, str]]:
    return tomllib.loads(EQUIVALENT.read_text()) if EQUIVALENT.is_file() else {}


def report() -> None:
    codes = exit_codes()
    known = equivalents()
    rows, survivors = [], []
    for module, patterns in MODULES.items():
        mine = {n: c for n, c in codes.items() if any(fnmatch(n, p) for p in patterns)}
        counts: Counter[str] = Counter()
        for name, code in sorted(mine.items()):
            if code is None:
                counts["not run"] += 1
                continue
            if code in KILLED:
                counts[KILLED[code]] += 1
                continue
            line = mutated_line(name)
            entry = known.get(name)
            if entry is not None and entry.get("line") == line and entry.get("cuda_only"):
                counts["cuda only"] += 1
                survivors.append((module, name, line, f"CUDA only: {entry['reason']}"))
            elif entry is not None and entry.get("line") == line:
                counts["equivalent"] += 1
                survivors.append((module, name, line, f"equivalent: {entry['reason']}"))
            else:
                counts[SURVIVED.get(code, "suspicious")] += 1
                survivors.append((module, name, line, SURVIVED.get(code, f"exit code {code}")))
        detected = counts["killed"] + counts["timeout"]
        judged = detected + counts["survived"] + counts["no tests"] + counts["suspicious"]
        with_cuda = judged + counts["cuda only"]
        rows.append(
            (
                module,
                len(mine),
                counts,
                detected / judged if judged else float("nan"),
                detected / with_cuda if with_cuda else float("nan"),
            )
        )
    write(rows, survivors)


def write(rows: list, survivors: list) -> None:
    lines = [
        "## mutation: do the tests notice a broken loss, sampler, metric or split?",
        "",
        "mutmut changes one operator, constant or argument at a time and runs the tests that cover the "
        "changed function (`[tool.mutmut]` in pyproject.toml; `make mutate`). Score = killed (a test "
        "failed, or the run timed out) / (killed + survived + no covering test); equivalent mutants "
        "(behave exactly like the original; reasons in `benchmarks/mutation_equivalent.toml`) are "
        f'counted apart. "CUDA only" mutants change only which device a tensor is made on where the '
        "CPU is the default (a dropped `device=`, `.to(None)`): on a CPU-only machine they behave exactly "
        "like the original, and the tests that run on `meta` tensors cannot see them either (they need a "
        "CUDA generator, or run ops `meta` has no kernel for); the last column counts them as survivors. "
        f"Target >= {TARGET:.0%} per module. Code: commit {commit_description()}.",
        "",
        "| module | mutants | killed | timeout | survived | no tests | equivalent | CUDA only | not run "
        "| score | score, CUDA only as survivors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for module, total, c, score, strict in rows:
        mark = "" if score != score else (" (target met)" if score >= TARGET else " (**below target**)")
        lines.append(
            f"| {module} | {total} | {c['killed']} | {c['timeout']} | {c['survived']} | {c['no tests']} "
            f"| {c['equivalent']} | {c['cuda only']} | {c['not run']} | {score:.1%}{mark} | {strict:.1%} |"
        )
    if survivors:
        lines += ["", "Mutants not killed (the changed line as mutmut shows it):", ""]
        lines += ["| module | mutant | mutated line | status |", "|---|---|---|---|"]
        for module, name, line, status in survivors:
            shown = line.replace("|", "\\|")
            lines.append(f"| {module} | `{name.rsplit('.', 1)[-1]}` | `{shown}` | {status} |")
    write_text_atomic(RESULTS, "\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


def main(argv: list[str]) -> None:
    if "--report" not in argv:
        modules = [m for m in MODULES if not argv or any(m.startswith(a) for a in argv)]
        run(modules)
    report()


if __name__ == "__main__":
    main(sys.argv[1:])
