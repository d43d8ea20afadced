"""Bare `implicit` ALS on an exported split: what a user of the library writes without recsys.

Runs in the project venv (implicit is already a project dependency) but imports nothing from recsys,
so it measures the library as a peer would use it. Own metrics: implicit.evaluation's
ranking_metrics_at_k, whose "precision" is pooled recall (sum hits / sum min(K, |test|)).

    python benchmarks/peers/run_implicit.py EXPORT_DIR RESULTS_DIR DATASET als
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns (and slows) with threaded BLAS

import numpy as np  # noqa: E402
import peer_io  # noqa: E402
import scipy.sparse as sp  # noqa: E402

PARAMS = {"als": {"factors": 64, "regularization": 0.05, "alpha": 10.0, "iterations": 15, "random_state": 0}}


def main() -> None:
    export_dir, results_dir, dataset, model_name = peer_io.parse_args()
    import implicit
    from implicit.als import AlternatingLeastSquares
    from implicit.evaluation import ranking_metrics_at_k

    times: dict[str, float] = {}
    with peer_io.stopwatch(times, "load"):
        parts, meta = peer_io.read_split(export_dir)
        n_users, n_items = meta["n_users"], meta["n_items"]

        def matrix(part: peer_io.Part) -> sp.csr_matrix:
            return sp.csr_matrix(
                (part.ratings.astype(np.float32), (part.users, part.items)), shape=(n_users, n_items)
            )

        train, valid, test = (matrix(parts[p]) for p in peer_io.PARTS)
        seen = (train + valid).tocsr()
        users = peer_io.test_users(parts)
    # <user-code>
    params = PARAMS[model_name]
    model = AlternatingLeastSquares(**params)
    with peer_io.stopwatch(times, "fit"):
        model.fit(train, show_progress=False)  # implicit's confidence: c = alpha * r
    with peer_io.stopwatch(times, "recommend"):
        ranked, _ = model.recommend(users, seen[users], N=peer_io.K, filter_already_liked_items=True)
    # </user-code>
    with peer_io.stopwatch(times, "own_eval"):
        own = ranking_metrics_at_k(model, seen, test, K=20, show_progress=False)
    lists = peer_io.drop_seen(ranked, users, peer_io.seen_keys(parts, n_items), n_items)
    peer_io.write_topk(
        results_dir / f"implicit-{model_name}.json",
        system="implicit",
        model=model_name,
        dataset=dataset,
        version=implicit.__version__,
        users=users,
        lists=lists,
        times=times,
        params=params,
        own_metrics={"recall@20": float(own["precision"]), "ndcg@20": float(own["ndcg"])},
        own_definitions={"recall@20": "recall_pooled", "ndcg@20": "ndcg"},
    )


if __name__ == "__main__":
    main()
