"""Score every system's exported top-k lists with the project's own evaluator.

Runs in the project venv. For each data set it loads the exported split (the very matrices the
peers trained on), aligns each result file's lists with the test users, checks the lists obey the
contract (no train/validation item, no duplicate, ids in range) and computes recall@k, ndcg@k with
bootstrap intervals through `recsys.evaluation.metrics.compute_metrics` and
`recsys.evaluation.stats.bootstrap_ci`. Because every system is scored by the same code from its
lists, a difference in metric definitions cannot hide a difference in quality.

It also recomputes, from the same lists, the quantity each peer's own evaluator reports (pooled
recall for implicit, recall over known items only for Cornac, ...) so the peer's own numbers can be
checked against ours: they must agree within TOLERANCE, or the report says why not.

    .venv/bin/python benchmarks/peers/score.py [--export DIR] [--results DIR] [--out scores.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers.export import DEFAULT_OUT, load_split  # noqa: E402
from recsys.data.matrix import item_popularity  # noqa: E402
from recsys.evaluation.metrics import compute_metrics, hit_matrix, ndcg_at_k  # noqa: E402
from recsys.evaluation.stats import bootstrap_ci  # noqa: E402
from recsys.files import write_text_atomic  # noqa: E402

KS = (20, 100)
REPORT_K = 20
TOLERANCE = 0.002
"""Absolute difference allowed between a peer's own metric and ours recomputed with its definition:
float32 scores and tie order differ between systems, nothing else should."""
BOOTSTRAP = 1000


def align_lists(record: dict, users: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """(len(users), k) item matrix in the order of `users` (padding -1), and how many evaluated
    users the file has no list for (they score zero, like an empty list)."""
    file_users = np.asarray(record["users"], dtype=np.int64)
    width = max((len(x) for x in record["items"]), default=0)
    lists = np.full((file_users.size, max(width, k)), -1, dtype=np.int64)
    for row, ranked in enumerate(record["items"]):  # JSON rows are ragged; one copy per user
        lists[row, : len(ranked)] = ranked
    out = np.full((users.size, k), -1, dtype=np.int64)
    order = np.argsort(file_users)
    pos = np.searchsorted(file_users[order], users)
    found = (pos < file_users.size) & (file_users[order][np.minimum(pos, file_users.size - 1)] == users)
    out[found] = lists[order[pos[found]], :k]
    return out, int((~found).sum())


def contract_violations(lists: np.ndarray, exclude: sp.csr_matrix, n_items: int) -> dict[str, int]:
    """Entries that break the list contract: seen items, repeated items, ids out of range."""
    valid = lists >= 0
    out_of_range = int(np.count_nonzero(lists >= n_items))
    clipped = np.where(valid & (lists < n_items), lists, -1)
    seen = int(np.count_nonzero(hit_matrix(clipped, exclude)))
    ordered = np.sort(np.where(valid, lists, -1 - np.arange(lists.shape[1])[None, :]), axis=1)
    repeats = int(np.count_nonzero(np.diff(ordered, axis=1) == 0))
    return {"seen_items": seen, "repeated_items": repeats, "out_of_range": out_of_range}


def peer_definition(
    name: str, lists: np.ndarray, truth: sp.csr_matrix, known_items: np.ndarray, k: int
) -> float:
    """The peer's own metric recomputed from the lists, using the peer's definition:

    recall         hits / min(k, |test|), mean over users (the project's recall@k);
    recall_raw     hits / |test|, mean over users (RecBole, LensKit);
    recall_pooled  sum of hits / sum of min(k, |test|) (implicit's "precision");
    *_known        as above with test items never seen in training removed from the truth and users
                   left without truth dropped (Cornac's exclude_unknowns);
    ndcg           binary nDCG@k with gain 1 / log2(rank + 1), mean over users (ours, RecBole, implicit);
    ndcg_lenskit   LensKit's default rank weight 1 / max(1, log2 rank), i.e. ranks 1 and 2 both
                   undiscounted (Jarvelin & Kekalainen's original base-2 DCG), ideal over min(k, |test|).
    """
    if name.endswith("_known"):
        keep_items = sp.diags(known_items.astype(np.float32))
        truth = sp.csr_matrix(truth @ keep_items)
        truth.eliminate_zeros()
        name = name.removesuffix("_known")
    n_rel = np.diff(truth.indptr).astype(np.float64)
    rows = n_rel > 0
    hits = hit_matrix(lists[rows, :k], truth[rows]).sum(axis=1).astype(np.float64)
    n_rel = n_rel[rows]
    if name == "recall":
        return float(np.mean(hits / np.minimum(k, n_rel)))
    if name == "recall_raw":
        return float(np.mean(hits / n_rel))
    if name == "recall_pooled":
        return float(hits.sum() / np.minimum(k, n_rel).sum())
    if name == "ndcg":
        return float(np.mean(ndcg_at_k(lists[rows], truth[rows], k)))
    if name == "ndcg_lenskit":
        weights = 1.0 / np.maximum(1.0, np.log2(np.arange(1, k + 1, dtype=np.float64)))
        dcg = hit_matrix(lists[rows, :k], truth[rows]) @ weights
        ideal = np.cumsum(weights)[np.minimum(k, n_rel).astype(np.int64) - 1]
        return float(np.mean(dcg / ideal))
    raise ValueError(f"unknown metric definition {name!r}")


def score_dataset(export_dir: Path, results_dir: Path) -> list[dict]:
    """One row per result file of the data set: our metrics + CIs, timings, own-metric check."""
    split, meta = load_split(export_dir)
    test_set = split.test_set()
    users = test_set.users
    truth = test_set.truth[users]
    exclude = test_set.exclude[users]
    popularity = item_popularity(split.train)
    known_items = popularity > 0
    k = max(KS)
    rows: list[dict] = []
    for path in sorted(results_dir.glob("*.json")):
        record = json.loads(path.read_text())
        lists, missing = align_lists(record, users, k)
        result = compute_metrics(
            lists, truth, KS, ["recall", "recall_raw", "ndcg"],
            item_popularity=popularity, n_items=split.n_items, users=users, n_users=split.n_users,
        )  # fmt: skip
        row = {key: record[key] for key in ("system", "model", "dataset", "version", "params", "notes")}
        row |= {
            key: record[key]
            for key in ("fit_seconds", "recommend_seconds", "own_eval_seconds", "load_seconds", "peak_rss_mb")
        }
        row["users_evaluated"] = result.n_users_evaluated
        row["users_missing"] = missing
        row["violations"] = contract_violations(lists, exclude, split.n_items)
        row["metrics"] = {name: value for name, value in result.summary.items() if "@" in name}
        for name in (f"recall@{REPORT_K}", f"ndcg@{REPORT_K}", f"recall@{k}"):
            _, lo, hi = bootstrap_ci(result.per_user[name].to_numpy(), n_samples=BOOTSTRAP, seed=0)
            row["metrics"][f"{name}_ci"] = [lo, hi]
        checks = {}
        for name, own in record.get("own_metrics", {}).items():
            definition = record.get("own_definitions", {}).get(name, name.split("@")[0])
            ours = peer_definition(definition, lists, truth, known_items, int(name.split("@")[1]))
            checks[name] = {
                "definition": definition,
                "own": own,
                "ours": ours,
                "diff": own - ours,
                "agree": bool(abs(own - ours) <= TOLERANCE),
            }
        row["own_check"] = checks
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--results", type=Path, default=DEFAULT_OUT.parent / "results")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT.parent / "scores.json")
    args = parser.parse_args(argv)
    scores: dict[str, dict] = {}
    for results_dir in sorted(p for p in args.results.iterdir() if p.is_dir()):
        export_dir = args.export / results_dir.name
        if not (export_dir / "meta.json").is_file():
            print(f"skipping {results_dir.name}: no export", file=sys.stderr)
            continue
        meta = json.loads((export_dir / "meta.json").read_text())
        scores[results_dir.name] = {"meta": meta, "rows": score_dataset(export_dir, results_dir)}
        print(f"scored {results_dir.name}: {len(scores[results_dir.name]['rows'])} runs")
    write_text_atomic(args.out, json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
