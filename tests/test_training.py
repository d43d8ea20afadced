"""The two-tower training loop: exact resume from checkpoints, NaN detection, early stopping with best
weights restored, the LR schedules, batch sharding and devices."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from cluster_picks import cluster_picks

import recsys.training as training
from recsys.data.split import EvalSet
from recsys.errors import ModelError
from recsys.models.two_tower import TwoTower, TwoTowerConfig, TwoTowerNetwork
from recsys.training import (
    gather_negatives,
    learning_rate,
    resolve_device,
    shard_batches,
    steps_per_epoch,
    train_two_tower,
)

CFG = TwoTowerConfig(
    name="tt", dim=8, num_negatives=16, batch_size=128, epochs=4, lr=0.05, seed=11,
    threads=1, device="cpu", quiet=True,
)  # fmt: skip


@dataclass(frozen=True)
class Clusters:
    train: sp.csr_matrix
    test: sp.csr_matrix

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]


@pytest.fixture(scope="module")
def data() -> Clusters:
    """80 users x 48 items in 4 clusters; each user rates 8 random items of their cluster, 2 held out."""
    n_users, n_items = 80, 48
    users, items, is_test = cluster_picks(n_users, n_items, n_clusters=4, per_user=8)

    def csr(mask: np.ndarray) -> sp.csr_matrix:
        ones = np.ones(mask.sum(), dtype=np.float32)
        return sp.csr_matrix((ones, (users[mask], items[mask])), shape=(n_users, n_items))

    return Clusters(csr(~is_test), csr(is_test))


def validation_of(data: Clusters) -> EvalSet:
    return EvalSet(truth=data.test, exclude=data.train)


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize(
    "overrides",
    [
        {},  # adam, constant lr, uniform shared negatives
        {"optimizer": "adagrad", "lr_schedule": "cosine", "sampler": "mixed", "learn_temperature": True,
         "user_input": "history"},
        {"optimizer": "adamw", "lr_schedule": "step", "lr_step_epochs": 1, "sampler": "popularity",
         "shared_negatives": False, "grad_clip": 1.0, "weight_decay": 1e-4},
    ],
)  # fmt: skip
def test_killed_after_two_epochs_and_resumed_equals_an_uninterrupted_run_exactly(
    data, tmp_path: Path, overrides
):
    cfg = CFG.model_copy(update=overrides)
    validation = validation_of(data)
    whole = TwoTower(cfg).fit(data.train, validation=validation)

    ckpt = str(tmp_path / "ckpt")
    killed = TwoTower(cfg.model_copy(update={"checkpoint_dir": ckpt}))
    killed.fit(data.train, validation=validation, callback=lambda step, m: step >= 2)  # the "kill"
    assert len(killed.history) == 2
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text()) == {"checkpoint": "epoch-0002"}

    resumed = TwoTower(cfg.model_copy(update={"checkpoint_dir": ckpt})).fit(data.train, validation=validation)
    np.testing.assert_array_equal(resumed.item_factors, whole.item_factors)
    np.testing.assert_array_equal(resumed.user_factors, whole.user_factors)
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == killed.history  # the epochs before the kill come from the checkpoint
    for got, want in zip(resumed.history, whole.history, strict=True):
        assert {k: v for k, v in got.items() if k != "examples_per_s"} == {
            k: v for k, v in want.items() if k != "examples_per_s"
        }


def test_checkpoints_are_safetensors_and_json_only_and_the_old_ones_are_dropped(data, tmp_path: Path):
    killed = tmp_path / ".epoch-0002.k1lled_9"  # what a save killed mid-write left (never removed before)
    killed.mkdir()
    (killed / "tensors.safetensors").write_bytes(b"half")
    TwoTower(CFG.model_copy(update={"checkpoint_dir": str(tmp_path)})).fit(data.train)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["epoch-0004/state.json", "epoch-0004/tensors.safetensors", "latest.json"]
    state = json.loads((tmp_path / "epoch-0004" / "state.json").read_text())
    assert state["state"]["epoch"] == 4 and state["state"]["finished"] is True
    steps = steps_per_epoch(data.train.nnz, CFG.batch_size)
    assert state["state"]["global_step"] == 4 * steps


def test_a_checkpoint_folder_follows_the_umask(data, tmp_path: Path):
    """`epoch-NNNN/` was mkdtemp's 0700, kept by its rename: a checkpoint directory on a shared file
    system (a run resumed by a teammate, or by ranks under another account) was its writer's alone.
    It gets the mode a plain mkdir gives, as every output."""
    import os

    before = os.umask(0o022)
    try:
        TwoTower(CFG.model_copy(update={"checkpoint_dir": str(tmp_path), "epochs": 1})).fit(data.train)
    finally:
        os.umask(before)
    assert (tmp_path / "epoch-0001").stat().st_mode & 0o777 == 0o755


def test_a_checkpoint_from_another_config_is_refused(data, tmp_path: Path):
    TwoTower(CFG.model_copy(update={"checkpoint_dir": str(tmp_path), "epochs": 1})).fit(data.train)
    other = TwoTower(CFG.model_copy(update={"checkpoint_dir": str(tmp_path), "lr": 0.01}))
    with pytest.raises(ModelError, match="different config or training data"):
        other.fit(data.train)


def test_more_epochs_continue_a_finished_run(data, tmp_path: Path):
    """epochs is resume-insensitive: raising it trains on from the finished checkpoint."""
    TwoTower(CFG.model_copy(update={"checkpoint_dir": str(tmp_path), "epochs": 2})).fit(data.train)
    longer = TwoTower(CFG.model_copy(update={"checkpoint_dir": str(tmp_path), "epochs": 3})).fit(data.train)
    assert [h["step"] for h in longer.history] == [1, 2, 3]


# ----------------------------------------------------------------------------- NaN
def test_nan_loss_raises_model_error_naming_epoch_and_step(data, monkeypatch):
    """The loss turns NaN on the 3rd step of the 3rd epoch; the error must say exactly that."""
    steps = steps_per_epoch(data.train.nnz, CFG.batch_size)
    assert steps >= 3
    real = training.get_loss
    calls = {"n": 0}

    def poisoned(name):
        loss = real(name)

        def wrapped(*args, **kwargs):
            calls["n"] += 1
            value = loss(*args, **kwargs)
            return value * float("nan") if calls["n"] == 2 * steps + 3 else value

        return wrapped

    monkeypatch.setattr(training, "get_loss", poisoned)
    with pytest.raises(ModelError, match=r"loss became nan at epoch 3, step 3: lower lr"):
        TwoTower(CFG).fit(data.train)


def test_absurd_learning_rate_is_reported_not_silently_trained(data):
    cfg = CFG.model_copy(update={"lr": 1e30, "normalize": False, "optimizer": "adagrad", "epochs": 20})
    with pytest.raises(ModelError, match=r"loss became (nan|inf) at epoch \d+, step \d+"):
        TwoTower(cfg).fit(data.train)


# ----------------------------------------------------------------------------- early stopping
def test_early_stopping_stops_after_patience_and_restores_the_best_weights(data):
    network = TwoTower(CFG).build_network(data.n_users, data.n_items, None)
    scores = iter([0.30, 0.50, 0.40, 0.45, 0.60, 0.70])  # best at epoch 2, then 2 evaluations worse
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def remember(epoch, metrics):
        snapshots[epoch] = {k: v.clone() for k, v in network.state_dict().items()}

    cfg = CFG.model_copy(update={"epochs": 6, "early_stopping_patience": 2, "early_stopping_min_steps": 0})
    result = train_two_tower(
        network, data.train, cfg, validate=lambda: {"recall@20": next(scores)}, callback=remember
    )
    assert sorted(snapshots) == [1, 2, 3, 4]
    assert result.best_epoch == 2 and result.best_metric == 0.5 and result.stopped_early
    for name, value in network.state_dict().items():
        torch.testing.assert_close(value, snapshots[2][name], rtol=0, atol=0)


def test_early_stopping_also_waits_for_min_steps_since_the_best_epoch(data):
    """Patience in epochs alone stops small data sets on the random-init plateau (few steps per
    epoch); the stop also needs `early_stopping_min_steps` optimizer steps since the best epoch."""
    from recsys.training import steps_per_epoch

    network = TwoTower(CFG).build_network(data.n_users, data.n_items, None)
    per_epoch = steps_per_epoch(data.train.nnz, CFG.batch_size)
    scores = iter([0.30, 0.50, 0.40, 0.45, 0.44, 0.43, 0.42, 0.41])  # best at epoch 2
    cfg = CFG.model_copy(update={"epochs": 8, "early_stopping_patience": 2, "early_stopping_min_steps": 4 * per_epoch})
    result = train_two_tower(network, data.train, cfg, validate=lambda: {"recall@20": next(scores)})
    assert result.stopped_early and result.epochs_run == 6  # 2 bad evaluations at epoch 4, 4 epochs of steps at 6


def test_validation_metric_is_reported_every_eval_every_epochs_and_at_the_end(data):
    cfg = CFG.model_copy(update={"epochs": 5, "eval_every": 2})
    model = TwoTower(cfg).fit(data.train, validation=validation_of(data))
    evaluated = [int(h["step"]) for h in model.history if "val_recall@20" in h]
    assert evaluated == [2, 4, 5]
    assert all(0 <= h["val_recall@20"] <= 1 for h in model.history if "val_recall@20" in h)
    assert {"loss", "examples_per_s", "lr", "temperature"} <= set(model.history[0])


# ----------------------------------------------------------------------------- schedule, batches, device
def test_learning_rate_schedules_match_their_formulas():
    cosine = CFG.model_copy(update={"lr": 0.2, "lr_schedule": "cosine"})
    assert learning_rate(cosine, 0, 0, 100) == pytest.approx(0.2)
    assert learning_rate(cosine, 0, 50, 100) == pytest.approx(0.1)
    assert learning_rate(cosine, 0, 25, 100) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)))
    assert learning_rate(cosine, 0, 100, 100) == pytest.approx(0.0, abs=1e-12)
    step = CFG.model_copy(
        update={"lr": 0.2, "lr_schedule": "step", "lr_step_epochs": 3, "lr_step_gamma": 0.5}
    )
    assert [learning_rate(step, e, 0, 1) for e in range(7)] == pytest.approx([0.2] * 3 + [0.1] * 3 + [0.05])
    assert learning_rate(CFG, 9, 999, 1000) == CFG.lr


def test_batches_cover_every_interaction_once_and_shards_partition_them():
    gen = torch.Generator().manual_seed(0)
    batches = list(shard_batches(10, 4, gen))
    assert [b.numel() for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    shards = [torch.cat(list(shard_batches(11, 3, torch.Generator().manual_seed(1), r, 2))) for r in range(2)]
    assert sorted(torch.cat(shards).tolist()) == list(range(11)) and len(shards[0]) == 6
    assert steps_per_epoch(11, 3, world_size=2) == 2
    x = torch.randn(3, 2)
    assert gather_negatives(x, 1) is x
    with pytest.raises(ModelError, match="no torch.distributed process group"):
        gather_negatives(x, 2)


def test_device_auto_is_cuda_only_when_present_and_cpu_training_works(data):
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    model = TwoTower(CFG.model_copy(update={"device": "cpu", "epochs": 1})).fit(data.train)
    assert next(model.network.parameters()).device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            resolve_device("cuda")


def test_threads_setting_is_applied_during_training_and_restored(data):
    before = torch.get_num_threads()
    seen = []
    TwoTower(CFG.model_copy(update={"threads": 1, "epochs": 1})).fit(
        data.train, callback=lambda step, m: seen.append(torch.get_num_threads())
    )
    assert seen == [1] and torch.get_num_threads() == before


def test_training_only_touches_its_own_network(data):
    """Two networks trained from the same config and data are identical: no hidden global state."""
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        net = TwoTowerNetwork(CFG, data.n_users, data.n_items)
        train_two_tower(net, sp.csr_matrix(data.train), CFG.model_copy(update={"epochs": 2}))
        nets.append(net)
    for (name, a), (_, b) in zip(nets[0].state_dict().items(), nets[1].state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_two_trainings_of_one_checkpoint_directory_take_turns(data, tmp_path: Path):
    """Two fits of the same settings on one checkpoint_dir at once (two `recsys run`s of the same
    data: the directory is keyed by data and settings) both wrote it, and a save removes the other's
    temp dir and epochs. They take turns now: the second resumes the first's finished checkpoint."""
    import threading
    import time

    ckpt = str(tmp_path / "ckpt")
    models = [TwoTower(CFG.model_copy(update={"checkpoint_dir": ckpt})) for _ in range(2)]
    started = threading.Event()

    def slow(step, metrics):  # the first fit lingers after its first epoch: the second starts meanwhile
        started.set()
        time.sleep(0.5 if step == 1 else 0)

    first = threading.Thread(target=models[0].fit, args=(data.train,), kwargs={"callback": slow})
    first.start()
    started.wait(60)
    models[1].fit(data.train)
    first.join(60)
    assert models[0].resumed_from is None
    assert models[1].resumed_from is not None and models[1].resumed_from["epoch"] == CFG.epochs
    np.testing.assert_array_equal(models[0].item_factors, models[1].item_factors)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-0004", "latest.json"]
