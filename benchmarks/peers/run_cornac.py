"""Cornac on an exported split: BPR and EASE (WMF needs TensorFlow, which we do not install).

Runs in benchmarks/peers/.venv-cornac. Data goes in through cornac's own Reader and
BaseMethod.from_splits (train / validation / test exactly as exported); lists come from the model's
own `score` (Cornac has no batch top-k API in 3.0.1, so it is one call per user, as in Cornac's own
evaluator). Own metrics: cornac's ranking_eval with Recall@20 (= hits / |test|) and NDCG@20, with
exclude_unknowns=True, i.e. test items never seen in training are dropped from the truth.

    python benchmarks/peers/run_cornac.py EXPORT_DIR RESULTS_DIR DATASET {bpr,ease}
"""

from __future__ import annotations

import numpy as np
import peer_io

PARAMS = {
    "bpr": {"k": 64, "max_iter": 200, "learning_rate": 0.01, "lambda_reg": 0.01, "seed": 0},
    "ease": {"lamb": 500.0, "posB": True, "seed": 0},
}


def main() -> None:
    export_dir, results_dir, dataset, model_name = peer_io.parse_args()
    import cornac
    from cornac.data import Reader
    from cornac.eval_methods import BaseMethod
    from cornac.eval_methods.base_method import ranking_eval
    from cornac.metrics import NDCG, Recall

    times: dict[str, float] = {}
    with peer_io.stopwatch(times, "load"):
        parts, meta = peer_io.read_split(export_dir)
        users = peer_io.test_users(parts)
    # <user-code>
    with peer_io.stopwatch(times, "load_native"):
        reader = Reader()
        train, valid, test = (
            reader.read(str(export_dir / f"{p}.tsv"), fmt="UIR", sep="\t", skip_lines=1)
            for p in peer_io.PARTS
        )
        method = BaseMethod.from_splits(
            train_data=train, test_data=test, val_data=valid, exclude_unknowns=True, seed=0, verbose=False
        )
    params = PARAMS[model_name]
    model = {"bpr": cornac.models.BPR, "ease": cornac.models.EASE}[model_name](verbose=False, **params)
    with peer_io.stopwatch(times, "fit"):
        model.fit(method.train_set)
    uid_map = method.train_set.uid_map
    item_ids = np.asarray([int(i) for i in method.train_set.item_ids], dtype=np.int64)
    to_cornac = np.full(meta["n_items"], -1, dtype=np.int64)
    to_cornac[item_ids] = np.arange(item_ids.size)
    seen = _seen_matrix(parts, meta["n_users"], meta["n_items"])
    with peer_io.stopwatch(times, "recommend"):
        ranked = np.full((users.size, peer_io.K), -1, dtype=np.int64)
        for row, user in enumerate(users):  # Cornac's API scores one user at a time
            scores = np.asarray(model.score(uid_map[str(user)]), dtype=np.float64).ravel()
            masked = to_cornac[seen.indices[seen.indptr[user] : seen.indptr[user + 1]]]
            scores[masked[masked >= 0]] = -np.inf  # train and validation items, as the project masks
            top = np.argpartition(-scores, peer_io.K)[: peer_io.K]
            ranked[row] = item_ids[top[np.argsort(-scores[top], kind="stable")]]
    # </user-code>
    with peer_io.stopwatch(times, "own_eval"):
        own, _ = ranking_eval(
            model, [Recall(k=20), NDCG(k=20)], method.train_set, method.test_set, val_set=method.val_set,
            exclude_unknowns=True,
        )  # fmt: skip
    lists = peer_io.drop_seen(ranked, users, peer_io.seen_keys(parts, meta["n_items"]), meta["n_items"])
    peer_io.write_topk(
        results_dir / f"cornac-{model_name}.json",
        system="cornac",
        model=model_name,
        dataset=dataset,
        version=cornac.__version__,
        users=users,
        lists=lists,
        times=times,
        params=params,
        own_metrics={"recall@20": float(own[0]), "ndcg@20": float(own[1])},
        own_definitions={"recall@20": "recall_raw_known", "ndcg@20": "ndcg_known"},
    )


def _seen_matrix(parts: dict[str, peer_io.Part], n_users: int, n_items: int):
    """users x items CSR (project indices) of train + validation: what no list may contain."""
    import scipy.sparse as sp

    users = np.concatenate([parts["train"].users, parts["valid"].users])
    items = np.concatenate([parts["train"].items, parts["valid"].items])
    return sp.csr_matrix((np.ones(users.size, dtype=np.float32), (users, items)), shape=(n_users, n_items))


if __name__ == "__main__":
    main()
