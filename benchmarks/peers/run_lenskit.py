"""LensKit (2025.x) on an exported split: implicit-feedback ALS and FlexMF (logistic MF, torch).

Runs in benchmarks/peers/.venv-lenskit. Data goes in through `from_interactions_df`, lists come
from a `topn_pipeline` and `lenskit.batch.recommend` (which excludes each user's training items);
we ask for K + the largest validation count so that dropping validation items afterwards still
leaves K items. Own metrics: LensKit's RunAnalysis with Recall@20 (= hits / min(20, |test|), the
project's definition) and NDCG@20 (LensKit's rank weight 1 / max(1, log2 rank)), measured on those same filtered lists.

    python benchmarks/peers/run_lenskit.py EXPORT_DIR RESULTS_DIR DATASET {als,flexmf}
"""

from __future__ import annotations

import numpy as np
import peer_io

PARAMS = {
    "als": {"embedding_size": 64, "epochs": 15, "regularization": 0.05, "weight": 10.0},
    "flexmf": {"embedding_size": 64, "epochs": 10},
}


def main() -> None:
    export_dir, results_dir, dataset, model_name = peer_io.parse_args()
    import lenskit
    import pandas as pd
    import torch
    from lenskit.als import ImplicitMFScorer
    from lenskit.batch import recommend
    from lenskit.data import ItemListCollection, from_interactions_df
    from lenskit.flexmf import FlexMFImplicitScorer
    from lenskit.metrics import NDCG, Recall, RunAnalysis
    from lenskit.pipeline import topn_pipeline

    torch.set_num_threads(peer_io.TORCH_THREADS)
    times: dict[str, float] = {}
    with peer_io.stopwatch(times, "load"):
        parts, meta = peer_io.read_split(export_dir)
        users = peer_io.test_users(parts)
        extra = int(np.bincount(parts["valid"].users).max(initial=0))
    # <user-code>
    with peer_io.stopwatch(times, "load_native"):
        train = pd.read_csv(export_dir / "train.tsv", sep="\t")
        data = from_interactions_df(train, user_col="user", item_col="item")  # presence only
    params = PARAMS[model_name]
    scorer = {"als": ImplicitMFScorer, "flexmf": FlexMFImplicitScorer}[model_name](**params)
    pipe = topn_pipeline(scorer, n=peer_io.K + extra)
    with peer_io.stopwatch(times, "fit"):
        pipe.train(data)
    with peer_io.stopwatch(times, "recommend"):
        recs = recommend(pipe, users.tolist(), n=peer_io.K + extra)
    # </user-code>
    frame = recs.to_df()
    frame = frame.sort_values(["user_id", "rank"]) if "rank" in frame else frame
    order = {int(u): row for row, u in enumerate(users)}
    ranked = np.full((users.size, peer_io.K + extra), -1, dtype=np.int64)
    rows = frame["user_id"].astype(np.int64).map(order).to_numpy()
    cols = frame.groupby("user_id").cumcount().to_numpy()
    ranked[rows, cols] = frame["item_id"].astype(np.int64).to_numpy()
    lists = peer_io.drop_seen(ranked, users, peer_io.seen_keys(parts, meta["n_items"]), meta["n_items"])
    with peer_io.stopwatch(times, "own_eval"):
        flat = pd.DataFrame(
            {
                "user_id": np.repeat(users, lists.shape[1]),
                "item_id": lists.ravel(),
                "rank": np.tile(np.arange(1, lists.shape[1] + 1), users.size),
            }
        )
        flat = flat[flat["item_id"] >= 0]
        test = pd.read_csv(export_dir / "test.tsv", sep="\t").rename(
            columns={"user": "user_id", "item": "item_id"}
        )
        analysis = RunAnalysis()
        analysis.add_metric(Recall(20))
        analysis.add_metric(NDCG(20))
        summary = analysis.measure(
            ItemListCollection.from_df(flat, "user_id"),
            ItemListCollection.from_df(test[["user_id", "item_id"]], "user_id"),
        ).list_summary()
    peer_io.write_topk(
        results_dir / f"lenskit-{model_name}.json",
        system="lenskit",
        model=model_name,
        dataset=dataset,
        version=lenskit.__version__,
        users=users,
        lists=lists,
        times=times,
        params=params,
        own_metrics={
            "recall@20": float(summary.loc["Recall@20", "mean"]),
            "ndcg@20": float(summary.loc["NDCG@20", "mean"]),
        },
        own_definitions={"recall@20": "recall", "ndcg@20": "ndcg_lenskit"},
    )


if __name__ == "__main__":
    main()
