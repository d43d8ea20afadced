"""This project's models on an exported split, held to the same contract as every peer runner.

Runs in the project venv: builds the model from its config with `build_model`, fits on the
exported train matrix (validation only for early stopping), writes the top-100 lists through
peer_io, and records the project's own `evaluate()` numbers, which score.py must reproduce exactly
(same code, so any difference is a bug in the harness).

    .venv/bin/python benchmarks/peers/run_project.py EXPORT_DIR RESULTS_DIR DATASET MODEL
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, for `benchmarks.peers.export`

import numpy as np  # noqa: E402
import peer_io  # noqa: E402

# Fixed, sensible settings (no tuning, like every peer): same 64 dimensions and ALS settings as the
# bare implicit run; the two-tower settings are those of pipelines/configs/movielens.toml.
PARAMS: dict[str, dict] = {
    "popularity": {"kind": "popularity"},
    "wals": {
        "kind": "wals", "factors": 64, "regularization": 0.05, "alpha": 10.0, "iterations": 15,
        "calculate_training_loss": False,
    },
    "two_tower": {
        "kind": "two_tower", "dim": 64, "loss": "sampled_softmax", "sampler": "in_batch", "batch_size": 512,
        "epochs": 10, "eval_every": 1, "early_stopping_patience": 2, "quiet": True, "device": "cpu",
        "threads": peer_io.TORCH_THREADS,
    },
}  # fmt: skip


def main() -> None:
    export_dir, results_dir, dataset, model_name = peer_io.parse_args()
    from benchmarks.peers.export import load_split
    from recsys.config import EvaluationConfig
    from recsys.data.matrix import item_popularity
    from recsys.evaluation.evaluate import evaluate
    from recsys.models import build_model, model_kinds

    times: dict[str, float] = {}
    with peer_io.stopwatch(times, "load"):
        split, meta = load_split(export_dir)
        test_set = split.test_set()
        users = test_set.users
    # <user-code>
    params = PARAMS[model_name]
    config = model_kinds()[params["kind"]].Config(name=model_name, seed=0, **params)
    model = build_model(config)
    with peer_io.stopwatch(times, "fit"):
        model.fit(split.train, validation=split.validation_set())
    with peer_io.stopwatch(times, "recommend"):
        ranked, _ = model.recommend(users, k=peer_io.K, exclude=test_set.exclude)
    # </user-code>
    eval_cfg = EvaluationConfig(ks=[20], metrics=["recall", "ndcg"], bootstrap_samples=0)
    with peer_io.stopwatch(times, "own_eval"):
        own = evaluate(model, test_set, eval_cfg, item_popularity=item_popularity(split.train)).summary
    parts = {"train": split.train, "valid": split.validation}
    seen = np.unique(np.concatenate([_keys(m) for m in parts.values()]))
    lists = peer_io.drop_seen(ranked, users, seen, meta["n_items"])
    peer_io.write_topk(
        results_dir / f"recsys-{model_name}.json",
        system="recsys",
        model=model_name,
        dataset=dataset,
        version="this repo",
        users=users,
        lists=lists,
        times=times,
        params=config.model_dump(mode="json"),
        own_metrics={"recall@20": own["recall@20"], "ndcg@20": own["ndcg@20"]},
        own_definitions={"recall@20": "recall", "ndcg@20": "ndcg"},
        notes=f"{len(model.history)} epochs/iterations recorded",
    )


def _keys(matrix) -> np.ndarray:
    """user * n_items + item for every stored entry of a CSR."""
    coo = matrix.tocoo()
    return coo.row.astype(np.int64) * np.int64(matrix.shape[1]) + coo.col.astype(np.int64)


if __name__ == "__main__":
    main()
