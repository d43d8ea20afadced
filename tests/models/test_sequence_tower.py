"""Sequence user tower (`user_input = "sequence"`): the model contract, causal masking, the training
windows, order from times, fold-in of unseen users, exact resume, and the pipeline wiring of times."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch

from recsys.data.matrix import event_times
from recsys.models.base import Recommender
from recsys.models.sequence_tower import (
    PAD,
    SequenceExamples,
    SequenceTower,
    attention_mask,
    order_rows,
    windows_per_user,
)
from recsys.models.two_tower import TwoTower, TwoTowerConfig, mlp, scaled_embedding

from .conftest import Planted
from .contract import RecommenderContract, planted_recall

SEQ = TwoTowerConfig(
    name="seq", user_input="sequence", dim=16, num_negatives=32, batch_size=16, epochs=8, lr=0.02, seed=3,
    threads=1, device="cpu", quiet=True, sequence_length=8, sequence_blocks=1, sequence_dropout=0.1,
)  # fmt: skip


def random_times(train: sp.csr_matrix, seed: int = 0) -> sp.csr_matrix:
    """Event times in a random order per user: planted clusters have no order of their own, and item
    index order would be a false signal (the next item always has a larger index)."""
    times = sp.csr_matrix(train, dtype=np.float64, copy=True)
    times.data = 1.0 + np.random.default_rng(seed).permutation(times.nnz).astype(np.float64)
    return times


@pytest.fixture(scope="module")
def fitted_seq(planted: Planted) -> tuple[TwoTower, sp.csr_matrix]:
    """One fit, shared by the contract and the tests below: (model, the times it trained with)."""
    times = random_times(planted.train)
    return TwoTower(SEQ).fit(planted.train, times=times), times


class TestSequenceTowerContract(RecommenderContract):
    model_config = SEQ
    min_recall_at_10 = 0.45  # measured ~0.70 with random times
    min_fold_in_overlap = None  # fold-in without times is index order; with times it is exact (below)

    def fit_model(self, model, train, **fit_kwargs):
        return model.fit(train, times=random_times(train), **fit_kwargs)

    @pytest.fixture(scope="class")
    def fitted(self, fitted_seq):
        return fitted_seq[0], fitted_seq[0]  # fit returns self (checked by the contract on the others)


# ----------------------------------------------------------------------------- causal masking
def tower(length: int = 6, blocks: int = 2, heads: int = 2) -> SequenceTower:
    torch.manual_seed(0)
    net = SequenceTower(
        3, 8, mlp(8, []), None, scaled_embedding(20, 8), length=length, blocks=blocks, heads=heads,
        dropout=0.0, time_buckets=4,
    )  # fmt: skip
    return net.eval()


def test_a_future_item_cannot_change_a_prefix_output_but_an_earlier_one_does():
    net = tower()
    window = torch.tensor([[PAD, 3, 7, 1, 9, 4], [2, 5, 8, 11, 0, 6]])
    times = torch.tensor([[0.0, 10, 500, 9000, 9100, 99999], [1.0, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        base = net.encode_windows(window, times)
        for j in range(1, 6):  # change the item (and its time) at position j
            changed, later = window.clone(), times.clone()
            changed[:, j] = 15
            later[:, j] += 77777.0
            out = net.encode_windows(changed, later)
            torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=0)  # the prefix before j
            assert (out[:, j:] - base[:, j:]).abs().amax() > 1e-4  # j and every position after it see it


def test_the_mask_is_causal_over_real_items_and_every_row_attends_itself():
    valid = torch.tensor([[False, False, True, True]])
    mask = attention_mask(valid)[0, 0]
    expected = torch.tensor(
        [[True, False, False, False], [False, True, False, False], [False, False, True, False], [False, False, True, True]]
    )
    assert torch.equal(mask, expected)


# ----------------------------------------------------------------------------- windows and order
def test_windows_count_every_target_once_with_half_a_window_of_context_at_least():
    lengths = np.array([0, 1, 2, 5, 9, 12])
    indptr = np.r_[0, np.cumsum(lengths)]
    rows = sp.csr_matrix((np.ones(indptr[-1]), np.arange(indptr[-1]) % 50, indptr), shape=(6, 50))
    sequences = order_rows(rows)
    examples = SequenceExamples(sequences, length=4, device=torch.device("cpu"))
    assert list(windows_per_user(lengths, 4)) == [0, 0, 1, 1, 3, 5]  # n <= N + 1: one; then +1 per stride 2
    items, _, counted, targets = examples.windows(torch.arange(examples.n))
    users = examples.user.unsqueeze(1).expand_as(counted)[counted].numpy()
    assert examples.n_targets == 24 and np.bincount(users, minlength=6).tolist() == [0, 0, 1, 4, 8, 11]
    # every target s[t], t >= 1, of every user is counted exactly once ...
    got = sorted(zip(users.tolist(), targets[counted].tolist(), strict=True))
    want = sorted((u, int(i)) for u in range(6) for i in sequences.items[indptr[u] + 1 : indptr[u + 1]])
    assert got == want
    # ... right after its input (the previous item), with >= N - S = 2 items of context (or all before it)
    inputs = items[counted].tolist()
    position_of = {int(i): p for p, i in enumerate(sequences.items.tolist())}
    assert all(position_of[t] == position_of[i] + 1 for i, t in zip(inputs, targets[counted].tolist(), strict=True))
    first_real = (items != PAD).float().argmax(dim=1, keepdim=True)
    context = (torch.arange(4).expand_as(counted) - first_real + 1)[counted].numpy()
    before = np.array([position_of[t] for t in targets[counted].tolist()]) - indptr[users]
    assert (context >= np.minimum(2, before)).all() and (context <= before).all()


def test_rows_are_ordered_by_time_then_item_and_unknown_times_come_first():
    rows = sp.csr_matrix(np.array([[1, 1, 1, 1], [1, 0, 1, 0]], dtype=np.float32))
    times = sp.csr_matrix(np.array([[30.0, 10.0, 0.0, 10.0], [5.0, 0, 2.0, 0]]))
    ordered = order_rows(rows, times)
    assert ordered.items.tolist() == [2, 1, 3, 0, 2, 0]
    assert ordered.times.tolist() == [0.0, 10.0, 10.0, 30.0, 2.0, 5.0]


def test_event_times_are_seconds_after_the_first_event_plus_one_and_nulls_store_nothing():
    stamps = pl.from_epoch(pl.Series([100, 160, 101, None]), time_unit="s").dt.replace_time_zone("UTC")
    frame = pl.DataFrame({"user_idx": [0, 0, 1, 1], "item_idx": [2, 0, 1, 2], "timestamp": stamps})
    times = event_times(frame, 2, 3)
    assert times.toarray().tolist() == [[61.0, 0.0, 1.0], [0.0, 2.0, 0.0]]


# ----------------------------------------------------------------------------- model behaviour
def test_order_changes_the_user_vectors_and_fold_in_with_the_same_times_is_the_trained_function(fitted_seq, planted):
    model, times = fitted_seq
    rows = planted.train[:20]
    np.testing.assert_allclose(model.fold_in(rows, times=times[:20]), model.user_factors[:20], atol=1e-6)
    reversed_times = times[:20].copy()
    reversed_times.data = -reversed_times.data + reversed_times.data.max() + 1.0
    assert np.abs(model.fold_in(rows, times=reversed_times) - model.user_factors[:20]).max() > 1e-3


def test_training_without_times_learns_item_index_order_which_planted_data_does_not_have(fitted_seq, planted):
    """Why order must come from times: index order is a false sequential signal on planted data."""
    users = np.flatnonzero(np.diff(planted.test.indptr) > 0)
    with_times, _ = fitted_seq
    without = TwoTower(SEQ).fit(planted.train)
    recall = [planted_recall(m.recommend(users, k=10, exclude=planted.train)[0], planted.test, users)
              for m in (with_times, without)]  # fmt: skip
    assert recall[0] > recall[1] + 0.15, recall


def test_killed_and_resumed_equals_an_uninterrupted_run_exactly(planted, tmp_path: Path):
    cfg = SEQ.model_copy(update={"epochs": 3, "sampler": "mixed", "sequence_time_buckets": 3})
    times = random_times(planted.train)
    whole = TwoTower(cfg).fit(planted.train, times=times)
    ckpt = str(tmp_path / "ckpt")
    killed = TwoTower(cfg.model_copy(update={"checkpoint_dir": ckpt}))
    killed.fit(planted.train, times=times, callback=lambda step, m: step >= 1)
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text()) == {"checkpoint": "epoch-0001"}
    resumed = TwoTower(cfg.model_copy(update={"checkpoint_dir": ckpt})).fit(planted.train, times=times)
    np.testing.assert_array_equal(resumed.user_factors, whole.user_factors)
    np.testing.assert_array_equal(resumed.item_factors, whole.item_factors)
    # another order is another training run: its checkpoint is refused
    from recsys.errors import ModelError

    with pytest.raises(ModelError, match="different config or training data"):
        TwoTower(cfg.model_copy(update={"checkpoint_dir": ckpt, "epochs": 4})).fit(
            planted.train, times=random_times(planted.train, seed=1)
        )


def test_saved_model_folds_in_new_users_like_the_trained_one(fitted_seq, planted, tmp_path: Path):
    model, times = fitted_seq
    loaded = Recommender.load(model.save(tmp_path / "m"))
    rows = planted.train[40:50]
    np.testing.assert_allclose(
        loaded.fold_in_ordered(rows, times[40:50]), model.fold_in(rows, times=times[40:50]), atol=1e-6
    )
    assert np.abs(loaded.fold_in(sp.csr_matrix(rows.shape, dtype=np.float32))).max() == 0.0  # no history: 0


def test_the_defaults_validation_chose_full_catalogue_and_temperature_resolve_at_fit(fitted_seq):
    """`sampler = "auto"` resolves at fit (and is saved so): `all` for a sequence tower up to
    FULL_CATALOGUE_MAX_ITEMS items, `uniform` above it and for the other user towers;
    `temperature = "auto"`: 0.05 for a sequence tower (its network trains with it), 0.1 otherwise."""
    from recsys.models.defaults import FULL_CATALOGUE_MAX_ITEMS, two_tower_sampler

    model = fitted_seq[0]
    assert SEQ.sampler == SEQ.temperature == "auto"
    assert model.config.sampler == "all" and model.config.temperature == 0.05
    assert model.temperature == pytest.approx(0.05)  # the network's, not only the config's
    assert TwoTower(TwoTowerConfig(name="id")).temperature == TwoTower(TwoTowerConfig(name="h", user_input="history")).temperature == 0.1
    assert TwoTower(TwoTowerConfig(name="s", user_input="sequence")).temperature == 0.05
    assert two_tower_sampler("sequence", FULL_CATALOGUE_MAX_ITEMS) == "all"
    assert two_tower_sampler("sequence", FULL_CATALOGUE_MAX_ITEMS + 1) == "uniform"
    assert two_tower_sampler("history", 10) == two_tower_sampler("id", 10) == "uniform"


def test_heads_must_divide_the_dimension():
    with pytest.raises(ValueError, match="sequence_heads"):
        TwoTowerConfig.model_validate({**SEQ.model_dump(), "sequence_heads": 3})


def test_the_pipeline_trains_on_the_split_times_and_a_saved_split_keeps_them(fitted_seq, planted, tmp_path: Path):
    from pipelines.train import train_model
    from recsys.data.split import Split
    from recsys.data.split_io import load_split, save_split

    model, times = fitted_seq
    split = Split(protocol="random", train=planted.train, test=planted.test, times=times)
    trained = train_model(SEQ, split)
    np.testing.assert_array_equal(trained.user_factors, model.user_factors)
    loaded = load_split(save_split(split, tmp_path / "split"))
    assert loaded.times is not None and (loaded.times != times).nnz == 0
    assert loaded.test_set().times is loaded.times  # evaluation orders fold-in histories by them


# ----------------------------------------------------------------------------- serving
def test_served_history_order_is_the_time_order_through_the_pyfunc_and_recsys_serve(fitted_seq, planted, tmp_path):
    """A new user's history list is read in its order: in time order it is the trained user's vector
    (same top-k, same scores), reversed it is another user; the same through `recsys serve`'s app."""
    from fastapi.testclient import TestClient

    from recsys.data.split import Split
    from recsys.evaluation.ranking import topk
    from recsys.tracking.pyfunc import ServingIndex, answer, write_serving_artifacts
    from recsys.tracking.server import build_app

    model, times = fitted_seq
    split = Split(protocol="random", train=planted.train, test=planted.test, times=times)
    index = ServingIndex(write_serving_artifacts(model, split, tmp_path / "serving"))
    user = 40
    row = times[user]
    in_order = [str(i) for i in row.indices[np.argsort(row.data, kind="stable")]]
    served = answer(index, {"user_id": ["new-a", "new-b"], "history": [in_order, in_order[::-1]], "k": 10})
    assert served["source"].tolist() == ["fold_in", "fold_in"]
    want_items, want_scores = topk(model.user_factors[user : user + 1], model.item_factors, 10,
                                   exclude=planted.train[user])  # fmt: skip
    assert served["item_ids"][0] == [str(i) for i in want_items[0]]
    np.testing.assert_allclose(served["scores"][0], want_scores[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(served["scores"][1], served["scores"][0], atol=1e-4)  # order matters
    api = TestClient(build_app(index, name="seq"))
    response = api.post("/invocations", json={"dataframe_records": [{"user_id": "new-b", "history": in_order[::-1]}],
                                              "params": {"k": 10}})  # fmt: skip
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"][0]["scores"], served["scores"][1], rtol=1e-5, atol=1e-6)


def test_a_held_out_users_stored_history_is_served_in_its_event_times_as_the_evaluator_ranks_it(
    fitted_seq, planted, tmp_path
):
    """A strong-generalisation held-out user has no training row: serving folds in its stored history
    (the split's fold-in rows). The evaluator orders that history by the split's event times, so
    serving must too (it once read it in item index order: other lists than the ones scored). A
    supplied history comes after the stored one."""
    from recsys.data.split import Split
    from recsys.evaluation.cold import divide_test
    from recsys.evaluation.ranking import rank_eval_set, topk
    from recsys.tracking.pyfunc import ServingIndex, write_serving_artifacts

    model, times = fitted_seq
    held_out = np.zeros(planted.n_users, dtype=bool)
    held_out[::10] = True
    keep = sp.diags((~held_out).astype(np.float32))
    fold_in = sp.csr_matrix(sp.diags(held_out.astype(np.float32)) @ planted.train)
    test = sp.csr_matrix(sp.diags(held_out.astype(np.float32)) @ planted.test)
    split = Split(protocol="strong_generalization", train=sp.csr_matrix(keep @ planted.train), test=test,
                  fold_in=fold_in, times=times)  # fmt: skip
    index = ServingIndex(write_serving_artifacts(model, split, tmp_path / "serving"))
    warm = divide_test(split).warm
    ranked = rank_eval_set(model, warm, 10)
    served = index.recommend([str(u) for u in ranked.users], 10)
    assert set(served["source"]) == {"fold_in"}
    assert served["item_ids"].tolist() == [[str(i) for i in row if i >= 0] for row in ranked.items]
    np.testing.assert_allclose(np.array(served["scores"].tolist()), ranked.scores, rtol=1e-5, atol=1e-6)
    # a supplied history is read after the stored one: its items are the newest
    user = int(ranked.users[0])
    extra = [i for i in range(planted.n_items) if fold_in[user, i] == 0][:3]
    both = index.recommend([str(user)], 10, histories=[[str(i) for i in extra]])
    added = sp.csr_matrix((np.ones(3), ([0, 0, 0], extra)), shape=(1, planted.n_items))
    history = sp.csr_matrix(fold_in[user] + added)
    stored = sp.csr_matrix(times[user].multiply(fold_in[user] != 0))
    order = sp.csr_matrix(stored + sp.csr_matrix((stored.max() + np.arange(1, 4), ([0, 0, 0], extra)), shape=added.shape))
    vector = model.fold_in_ordered(history, order)
    want_items, _ = topk(vector, model.item_factors, 10, exclude=history, masked_items=warm.masked_items)
    assert both["item_ids"][0] == [str(i) for i in want_items[0]]


def test_dropout_draws_are_the_models_own_so_a_model_starting_beside_it_changes_nothing(planted):
    """`recsys run` trains models concurrently in threads and each fit starts by seeding torch's
    global generator (`seed_everything`). A sequence tower's dropout drew from that generator, so a
    model starting while it trained changed its masks: the same config gave recall@10 0.3389 in
    `recsys run` and 0.3610 in `recsys evaluate --train`. Here the other model's start is simulated
    between epochs (the callback); the vectors must equal an undisturbed fit's."""
    from recsys.models.base import seed_everything

    cfg = SEQ.model_copy(update={"epochs": 2, "sequence_dropout": 0.3})
    times = random_times(planted.train)
    alone = TwoTower(cfg).fit(planted.train, times=times)
    beside = TwoTower(cfg).fit(planted.train, times=times, callback=lambda _epoch, _metrics: seed_everything(7))
    np.testing.assert_array_equal(beside.item_factors, alone.item_factors)
    np.testing.assert_array_equal(beside.user_factors, alone.user_factors)
