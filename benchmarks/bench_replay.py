"""Day two, replayed: ML-100K (~7 months) lands slice by slice and the scheduled pipeline runs after each.

The first slice (the first 14 weeks) starts the line; eight more slices of ~14.6 days follow. After
each one the Prefect training flow runs exactly as a `recsys schedule` deployment runs it
(`flows.pipeline.training_pipeline(config_path, overrides, scheduled=True)`, tracking on): the landing
directory's new file is ingested (append, stable vocab), the log is split by the rolling protocol
(train / 14-day validation window / 14-day forward test window), four models train, the challenger
is chosen on validation users, the standing champion is re-scored on the forward window, and the rule
decides. The flows run in a worker process with its own Prefect home (no shared Prefect database).

Then, from what MLflow logged:
* per slice: champion, challenger, forward-window recall@20 of both (warm users, 95% bootstrap
  intervals), p-value, decision;
* audit: every evaluation made (each model on its own split, each champion re-scored on a later
  split, the follow-up checks below) is matched by split digest to the logged splits, and the test
  pairs it scored are intersected with the model's training pairs by raw (user id, item id);
* oracle: the model with the best forward-window recall@20 among the champion and this run's
  candidates; the rule agrees when it kept the champion and the champion was that model, or promoted
  the challenger and the challenger was;
* out of sample: every promoted model against the champion it replaced on the NEXT forward window
  (paired test), to see whether a promotion was ever significantly worse.

`python -m benchmarks replay` (RECSYS_SHARED_DIR when the shared data is elsewhere;
RECSYS_REPLAY_SMOKE=1 for a 2-slice, 2-model smoke run that writes nothing under benchmarks/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ML100K_INTER as ML100K
from benchmarks.common import REPO, RESULTS_DIR, commit_description

RESULTS = RESULTS_DIR / "replay.md"
CONFIG = REPO / "pipelines" / "configs" / "movielens.toml"
BOOTSTRAP_DAYS, N_SLICES, WINDOW_DAYS = 98.0, 8, 14
METRIC = "recall@20"
MODELS = (
    'models=[{name="popularity", kind="popularity"},'
    ' {name="wals", kind="wals", factors=32, regularization=17.0, alpha=3.16, iterations=6},'
    ' {name="two_tower_softmax", kind="two_tower", loss="sampled_softmax", sampler="in_batch", batch_size=512,'
    '  epochs=20, early_stopping_patience=3},'
    ' {name="two_tower_mixed", kind="two_tower", loss="sampled_softmax", sampler="mixed", user_input="history",'
    '  lr=0.02, epochs=10, early_stopping_patience=2}]'
)


def smoke() -> bool:
    return os.environ.get("RECSYS_REPLAY_SMOKE") == "1"


def overrides(tmp: Path) -> list[str]:
    models = 'models=[{name="popularity", kind="popularity"}, {name="wals", kind="wals", factors=16}]'
    return [
        f'data.source="{tmp / "landing"}"', f'data.processed_dir="{tmp / "processed"}"', f'data.raw_dir="{tmp / "raw"}"',
        f"split.window_days={WINDOW_DAYS}", "evaluation.ks=[10, 20, 50]", "evaluation.bootstrap_samples=200",
        "folding.enabled=false", f'tracking.tracking_uri="sqlite:///{tmp / "mlflow.db"}"',
        'tracking.experiment="replay"', 'tracking.model_name_prefix="replay"', "tracking.register_models=false",
        'promotion.registered_model="replay-best"', f'promotion.metric="{METRIC}"', models if smoke() else MODELS,
    ]  # fmt: skip


def slice_bounds(first: float, last: float) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of each slice: the bootstrap weeks, then N_SLICES equal slices."""
    day = 86400.0
    cut = first + BOOTSTRAP_DAYS * day
    slices = 2 if smoke() else N_SLICES
    step = (last + 1 - cut) / slices
    edges = [first, *(cut + i * step for i in range(slices)), last + 1]
    return list(zip(edges[:-1], edges[1:], strict=True))


# ------------------------------------------------------------------------------------------ worker
def worker(tmp: Path) -> None:
    """Runs in its own process (PREFECT_HOME under tmp): land each slice, run the scheduled flow."""
    import polars as pl

    from flows.pipeline import PipelineFailed, training_pipeline

    log = pl.read_csv(ML100K, separator="\t")
    times = log.get_column("timestamp:float")
    (tmp / "landing").mkdir(parents=True, exist_ok=True)
    summaries = []
    for number, (start, end) in enumerate(slice_bounds(float(times.min()), float(times.max())), 1):
        part = log.filter((pl.col("timestamp:float") >= start) & (pl.col("timestamp:float") < end))
        target = tmp / "landing" / f"slice-{number:02d}.inter"
        part.write_csv(target.with_suffix(".tmp"), separator="\t")
        target.with_suffix(".tmp").rename(target)  # a whole file lands, as in a landing zone
        began = time.perf_counter()
        try:
            summary = training_pipeline(str(CONFIG), overrides(tmp), tracking=True, scheduled=True)
        except PipelineFailed as exc:
            summary = exc.summary
        summary["slice"] = {"number": number, "rows": part.height, "start": start, "end": end,
                            "seconds": time.perf_counter() - began}  # fmt: skip
        summaries.append(summary)
        print(f"slice {number}: {summary['promotion'].get('decision')} - {summary['promotion'].get('reason')}", flush=True)
        (tmp / "summaries.json").write_text(json.dumps(summaries, indent=1, default=str))


# ------------------------------------------------------------------------------------------ analysis
def pairs_of(matrix, split):
    """Raw (user id, item id) pairs stored in `matrix` (a part of `split`)."""
    import numpy as np
    import polars as pl

    coo = matrix.tocoo()
    users = np.asarray(split.user_ids).astype(str)
    items = np.asarray(split.item_ids).astype(str)
    return pl.DataFrame({"user": users[coo.row], "item": items[coo.col]})


def audit(client, summaries: list[dict], extra: list[tuple[str, str]]) -> tuple[int, int, int]:
    """(evaluations audited, splits, test pairs that were in the evaluated model's training data)."""
    from recsys.tracking.reevaluate import TAG_CHAMPION_REEVALUATED
    from recsys.tracking.runs import TAG_SPLIT_DIGEST
    from recsys.tracking.split_artifact import load_run_split

    runs = [m["mlflow_run_id"] for s in summaries for m in s["models"] if m.get("mlflow_run_id")]
    digests = {r: client.get_run(r).data.tags[TAG_SPLIT_DIGEST] for r in runs}
    splits = {}
    for run_id, digest in digests.items():
        if digest not in splits:
            splits[digest] = load_run_split(client, run_id)
    evaluations = [(r, digests[r]) for r in runs]  # each model on its own split
    for r in runs:  # each champion re-scored on a challenger's split
        champion = client.get_run(r).data.tags.get(TAG_CHAMPION_REEVALUATED)
        if champion:
            evaluations.append((champion, digests[r]))
    evaluations += [(model, digests[on]) for model, on in extra]  # the follow-up checks
    leaked = 0
    for model_run, digest in evaluations:
        trained = splits[digests[model_run]]
        scored = splits[digest]
        train_pairs = pairs_of(trained.train, trained)
        test_pairs = pairs_of(scored.test, scored)
        leaked += test_pairs.join(train_pairs, on=["user", "item"], how="inner").height
    return len(evaluations), len(splits), leaked


def rescore(client, model_run: str, on_run: str, evaluation):
    from recsys.tracking.reevaluate import reevaluate_champion
    from recsys.tracking.split_artifact import load_run_split

    return reevaluate_champion(client, model_run, load_run_split(client, on_run), evaluation)


def follow_ups(client, summaries: list[dict], evaluation) -> list[dict]:
    """Each promotion (from the second run on) replayed on the next forward window: the promoted model
    against the champion it replaced, paired over the users both were scored on."""
    from recsys.evaluation.stats import paired_test
    from recsys.tracking.reevaluate import paired_values

    out = []
    for i, summary in enumerate(summaries[:-1]):
        decision = summary["promotion"]
        if decision.get("decision") != "promoted" or not decision.get("compared_run_id"):
            continue
        # the next slice that trained: one whose inputs were unchanged trained nothing (no challenger)
        later = next((t["promotion"]["challenger_run_id"] for t in summaries[i + 1:]
                      if t["promotion"].get("challenger_run_id")), None)  # fmt: skip
        if later is None:
            continue
        new, old = decision["challenger_run_id"], decision["compared_run_id"]
        new_scores, old_scores = rescore(client, new, later, evaluation), rescore(client, old, later, evaluation)
        ours, theirs = paired_values(old_scores.per_user, new_scores.per_user, METRIC)
        test = paired_test(ours, theirs, seed=0)
        out.append({"slice": i + 1, "next": i + 2, "new": new, "old": old, "on": later, "delta": test.delta_mean,
                    "p": test.p_value, "ci": (test.ci_low, test.ci_high), "n": test.n})  # fmt: skip
    return out


def model_names(summaries: list[dict]) -> dict[str, str]:
    return {m["mlflow_run_id"]: f"{m['name']}@{s['slice']['number']}" for s in summaries for m in s["models"]}


def oracle(summary: dict, names: dict[str, str]) -> tuple[str, str, bool | None]:
    """(best model on the forward window, the rule's pick, agreement) for a run with a champion."""
    decision = summary["promotion"]
    if not decision.get("compared_run_id") or decision.get("champion_mean") is None:
        return "", "", None
    scores = {names.get(m["mlflow_run_id"], m["name"]): m["metrics"].get(METRIC, float("-inf"))
              for m in summary["models"] if m["status"] == "ok"}  # fmt: skip
    champion = names.get(decision["compared_run_id"], "champion")
    scores[champion] = decision["champion_mean"]
    best = max(scores, key=scores.get)
    pick = names[decision["challenger_run_id"]] if decision["decision"] == "promoted" else champion
    return best, pick, best == pick


WHY = (("coverage@", "coverage guard"), ("not significant", "not significant"), ("not better", "not better"))


def power_note(summaries: list[dict]) -> str:
    """What the kept decisions were made of: how often the challenger looked better, how often that
    was significant, and how many warm users a window had (the test's power)."""
    import numpy as np

    compared = [s["promotion"] for s in summaries if s["promotion"].get("champion_mean") is not None]
    if not compared:
        return ""
    ahead = sum(d["challenger_mean"] > d["champion_mean"] for d in compared)
    significant = [d for d in compared if d.get("p_value") is not None and d["p_value"] < d["alpha"]]
    guarded = sum("coverage@" in d["reason"] for d in significant)
    overlap = sum(d["challenger_ci"][0] <= d["champion_ci"][1] for d in compared)
    users = [d["n_users"] for d in compared]
    cold = sum(s["dataset"].get("cold_test_users", 0) for s in summaries if s["promotion"].get("champion_mean") is not None)
    return (
        f"The challenger's point estimate was above the champion's in {ahead} of {len(compared)} comparisons; the "
        f"paired test found a significant gain in {len(significant)} ({guarded} of them kept by the coverage guard). "
        f"A forward window held {int(np.median(users))} warm test users (median; {min(users)}-{max(users)}; "
        f"{cold} cold test users across these windows were scored apart) and the two 95% intervals overlapped in "
        f"{overlap} of {len(compared)} comparisons: at this size most gaps are within noise, and the rule keeps "
        "the champion rather than promote on them."
    )


def fmt_ci(mean: float | None, ci) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else f"{mean:.4f}"


def day(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def report(summaries, checks, audited, wall, loads, commit) -> str:
    names = model_names(summaries)
    lines = [
        "## Day two: ML-100K replayed as scheduled runs (bench_replay)",
        "",
        f"Commit {commit}. ML-100K (ratings >= 4 as positives, users with >= 5 of them) lands in a landing "
        f"directory as {len(summaries)} slices: the first {BOOTSTRAP_DAYS:.0f} days, then {N_SLICES} slices of "
        f"~{(215 - BOOTSTRAP_DAYS) / N_SLICES:.1f} days. After each, the Prefect training flow runs as a "
        "`recsys schedule` deployment runs it (`scheduled=True`: the log has timestamps, so the rolling split; "
        f"{WINDOW_DAYS}-day forward test window, {WINDOW_DAYS}-day validation window before it, train before "
        "that), tracking on. Models: popularity, WALS, two-tower (sampled softmax, in-batch), two-tower "
        "(history tower, mixed negatives). The challenger is the best candidate on validation users; the "
        "champion is re-scored on the forward window. recall@20 over the warm test users (a training "
        "history; cold users are scored apart by the fallback), 95% percentile-bootstrap intervals (1000 "
        "resamples), paired bootstrap p-values (1000 resamples).",
        "",
        "| slice | data through | test users (warm / cold) | champion | challenger (chosen on validation) | "
        "challenger recall@20 | champion recall@20 | p | decision | best on the window |",
        "|---:|---|---:|---|---|---:|---:|---:|---|---|",
    ]
    agree = total = 0
    for s in summaries:
        d = s["promotion"]
        best, _, agreed = oracle(s, names)
        if agreed is not None:
            total += 1
            agree += bool(agreed)
        verdict = "" if agreed is None else (" (agrees)" if agreed else " (differs)")
        champion = names.get(d.get("compared_run_id"), "-") if d.get("compared_run_id") else "(none)"
        p_value = f"{d['p_value']:.3g}" if d.get("p_value") is not None else "-"
        outcome = "unchanged: nothing trained" if s.get("unchanged") else (d.get("decision") or "-")
        why = next((label for text, label in WHY if text in d.get("reason", "")), "")
        outcome += f" ({why})" if why and outcome == "kept" else ""
        cells = [
            str(s["slice"]["number"]), day(s["slice"]["end"] - 1),
            f"{s['dataset'].get('warm_test_users', '-')} / {s['dataset'].get('cold_test_users', '-')}", champion,
            names.get(d.get("challenger_run_id"), "-"), fmt_ci(d.get("challenger_mean"), d.get("challenger_ci")),
            fmt_ci(d.get("champion_mean"), d.get("champion_ci")), p_value, outcome,
            f"{best or '-'}{verdict}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    n_eval, n_splits, leaked = audited
    decisions = [s["promotion"].get("decision") for s in summaries[1:] if not s.get("unchanged")]
    unchanged = sum(1 for s in summaries if s.get("unchanged"))
    follow = ", the follow-up checks below" if checks else ""
    lines += [
        "",
        f"**Leaked evaluations: {leaked}.** Audited {n_eval} evaluations (every model on its own split, every "
        f"champion re-scoring on a later split{follow}) against {n_splits} logged splits, matched by split digest: "
        "no test pair any model was scored on was in its training data.",
        "",
        f"Decisions after the first run: {decisions.count('promoted')} promoted, {decisions.count('kept')} kept, "
        f"{decisions.count('not comparable')} not comparable"
        + (f" ({unchanged} scheduled run(s) found the inputs of the last run unchanged and trained nothing, "
           "as orchestration.if_unchanged does: no decision, no failure)" if unchanged else "")  # fmt: skip
        + f". The rule agreed with the oracle (the best "
        f"forward-window recall@20 among the champion and the run's candidates) in {agree} of {total} runs. "
        + power_note(summaries),
        "",
    ]
    if checks:
        lines += [
            "Every promotion checked on the next forward window (the promoted model minus the champion it replaced, "
            "paired over the users both were scored on):",
            "",
            "| promoted at slice | checked on slice | delta recall@20 [95% CI] | p | users | significantly worse? |",
            "|---:|---:|---:|---:|---:|---|",
        ]
        for c in checks:
            worse = c["delta"] < 0 and c["p"] < 0.05
            lines.append(f"| {c['slice']} | {c['next']} | {c['delta']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] | "
                         f"{c['p']:.3g} | {c['n']} | {'yes' if worse else 'no'} |")  # fmt: skip
        worse = sum(c["delta"] < 0 and c["p"] < 0.05 for c in checks)
        lines += ["", f"Promoted models significantly worse than the champion they replaced (next window, p < 0.05): {worse}.", ""]
    else:
        lines += ["No model was promoted after the first run, so no promotion could be worse than the champion it "
                  "replaced; none could be checked on a later window.", ""]  # fmt: skip
    lines += [
        f"Whole replay: {wall / 60:.1f} min on 2 cores (load average {loads[0]:.1f} before, {loads[1]:.1f} after: "
        "a shared machine). Per slice (flow wall time, s): "
        + ", ".join(f"{s['slice']['seconds']:.0f}" for s in summaries) + ". Regenerate with `python -m benchmarks replay`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if not ML100K.is_file():
        print(f"skipped: {ML100K} not found (set RECSYS_SHARED_DIR)")
        return
    from mlflow import MlflowClient

    from recsys.tracking.decision import logged_evaluation

    loads = [os.getloadavg()[0]]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as name:
        tmp = Path(name)
        env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}  # fmt: skip
        subprocess.run([sys.executable, "-m", "benchmarks.bench_replay", "--worker", str(tmp)], check=True, cwd=REPO, env=env)
        summaries = json.loads((tmp / "summaries.json").read_text())
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        client = MlflowClient(uri, registry_uri=uri)
        evaluation = logged_evaluation(client, summaries[-1]["models"][0]["mlflow_run_id"])
        checks = follow_ups(client, summaries, evaluation)
        extra = [(c["new"], c["on"]) for c in checks] + [(c["old"], c["on"]) for c in checks]
        audited = audit(client, summaries, extra)
    loads.append(os.getloadavg()[0])
    text = report(summaries, checks, audited, time.perf_counter() - began, loads, commit_description())
    if not smoke():
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]))
    else:
        main()
