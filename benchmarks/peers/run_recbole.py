"""RecBole 1.2.1 on an exported split: BPR, ENMF, MultiVAE, LightGCN, SimpleX (full-sort).

Runs in benchmarks/peers/.venv-recbole. The export's benchmark files (`<name>.train/valid/test.inter`)
are given to RecBole as `benchmark_filename`, so RecBole's own splitter is bypassed and it trains,
validates (early stopping on NDCG@20) and tests on exactly our split. Lists come from RecBole's
`full_sort_topk`, which masks each user's train and validation items, as the project does.
Own metrics: RecBole's full-sort Recall@20 (= hits / |test|) and NDCG@20 on the best checkpoint.

RecBole torch.loads its own checkpoints, which torch >= 2.6 refuses by default (weights_only):
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 restores the old behaviour for this process only.

    python benchmarks/peers/run_recbole.py EXPORT_DIR RESULTS_DIR DATASET {BPR,ENMF,MultiVAE,LightGCN,SimpleX}
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np  # noqa: E402
import peer_io  # noqa: E402

EPOCHS = int(os.environ.get("PEERS_EPOCHS", "30"))
"""Few epochs, the same for every RecBole model, so the whole benchmark fits on 2 cores."""

PARAMS: dict[str, dict] = {
    "BPR": {"embedding_size": 64, "learning_rate": 5e-3},
    "ENMF": {"embedding_size": 64, "dropout_prob": 0.7, "negative_weight": 0.2, "train_batch_size": 256},
    "MultiVAE": {"latent_dimension": 64, "mlp_hidden_size": [600], "dropout_prob": 0.5},
    "LightGCN": {"embedding_size": 64, "n_layers": 2, "reg_weight": 1e-4},
    "SimpleX": {"embedding_size": 64, "margin": 0.9, "negative_weight": 10, "gamma": 0.5, "aggregator": "mean",
                "history_len": 50, "reg_weight": 1e-5, "train_neg_sample_args": {"distribution": "uniform", "sample_num": 10}},
}  # fmt: skip


def main() -> None:
    export_dir, results_dir, dataset, model_name = peer_io.parse_args()
    export_dir, results_dir = export_dir.resolve(), results_dir.resolve()  # before the chdir below
    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed
    from recbole.utils.case_study import full_sort_topk

    torch.set_num_threads(peer_io.TORCH_THREADS)
    times: dict[str, float] = {}
    with peer_io.stopwatch(times, "load"):
        parts, meta = peer_io.read_split(export_dir)
        users = peer_io.test_users(parts)
    work = tempfile.mkdtemp(prefix="recbole-")
    os.chdir(work)  # RecBole writes log/ and log_tensorboard/ into the working directory
    # <user-code>
    config_dict = {
        "data_path": str(export_dir / "recbole"),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "eval_args": {"mode": "full", "order": "RO", "group_by": "user"},
        "metrics": ["Recall", "NDCG"],
        "topk": [20],
        "valid_metric": "NDCG@20",
        "epochs": EPOCHS,
        "eval_step": 5,
        "stopping_step": 2,
        "train_batch_size": 2048,
        "eval_batch_size": 65536,
        "seed": 0,
        "reproducibility": True,
        "device": "cpu",
        "use_gpu": False,
        "checkpoint_dir": work,
        "show_progress": False,
        **PARAMS[model_name],
    }
    config = Config(model=model_name, dataset=dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    with peer_io.stopwatch(times, "load_native"):
        data = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, data)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    with peer_io.stopwatch(times, "fit"):
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    with peer_io.stopwatch(times, "own_eval"):
        own = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    model.eval()
    with peer_io.stopwatch(times, "recommend"), torch.no_grad():
        internal = data.token2id(data.uid_field, [str(u) for u in users])
        ranked_parts = []
        for start in range(0, internal.size, 4096):  # full_sort_topk scores a batch of users at once
            _, iids = full_sort_topk(
                internal[start : start + 4096], model, test_data, k=peer_io.K, device="cpu"
            )
            ranked_parts.append(data.id2token(data.iid_field, iids.cpu().numpy()).astype(np.int64))
        ranked = np.concatenate(ranked_parts)
    # </user-code>
    lists = peer_io.drop_seen(ranked, users, peer_io.seen_keys(parts, meta["n_items"]), meta["n_items"])
    peer_io.write_topk(
        results_dir / f"recbole-{model_name.lower()}.json",
        system="recbole",
        model=model_name.lower(),
        dataset=dataset,
        version=recbole.__version__,
        users=users,
        lists=lists,
        times=times,
        params={"epochs": EPOCHS, **PARAMS[model_name]},
        own_metrics={"recall@20": float(own["recall@20"]), "ndcg@20": float(own["ndcg@20"])},
        own_definitions={"recall@20": "recall_raw", "ndcg@20": "ndcg"},
        notes=f"trained up to {EPOCHS} epochs, validation every 5, best checkpoint by NDCG@20",
    )


if __name__ == "__main__":
    main()
