"""Two-tower: the shared contract, every loss x sampler, folding without negatives, features, fold-in,
persistence of the towers, and the ML-100K feature loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.data.features import FeatureColumn, FeatureSet, load_recbole_features
from recsys.evaluation.ranking import topk
from recsys.models.base import Recommender
from recsys.models.two_tower import LossName, TwoTower, TwoTowerConfig

from .conftest import Planted
from .contract import RecommenderContract, planted_recall

FAST = TwoTowerConfig(
    name="tt", dim=16, num_negatives=32, batch_size=256, epochs=15, lr=0.05, seed=3,
    threads=1, device="cpu", quiet=True,
)  # fmt: skip
K = 10


class TestTwoTowerContract(RecommenderContract):
    model_config = FAST
    min_recall_at_10 = 0.45  # measured ~0.57 (sampled softmax, uniform negatives); random ~0.09
    min_fold_in_overlap = 0.6  # centroid of the history vs the trained id embedding: measured ~0.72


class TestHistoryTwoTowerContract(RecommenderContract):
    """The user tower encodes the history instead of an id: the whole contract again."""

    model_config = FAST.model_copy(update={"user_input": "history"})
    min_recall_at_10 = 0.45  # measured ~0.59
    min_fold_in_overlap = 0.99  # fold-in is the trained function itself: identical vectors


def fit(planted: Planted, **overrides) -> TwoTower:
    return TwoTower(FAST.model_copy(update=overrides)).fit(planted.train)


def recall_and_leakage(model: TwoTower, planted: Planted) -> tuple[float, float]:
    """recall@10 on the held-out items and the share of recommended items outside the user's cluster."""
    users = np.flatnonzero(np.diff(planted.test.indptr) > 0)
    items, _ = model.recommend(users, k=K, exclude=planted.train)
    leakage = float(np.mean(planted.item_cluster[items] != planted.user_cluster[users][:, None]))
    return planted_recall(items, planted.test, users), leakage


# ----------------------------------------------------------------------------- losses x samplers
LOSSES = list(get_args(LossName))  # every loss the config accepts: a new one gets this suite too
SAMPLERS = ["uniform", "popularity", "in_batch", "mixed", "hard"]


def in_cluster_share(model: TwoTower, planted: Planted) -> float:
    """Share of the top-10 lists (training items excluded) inside the user's own planted cluster."""
    users = np.arange(planted.n_users)
    items, _ = model.recommend(users, k=K, exclude=planted.train)
    return float(np.mean(planted.item_cluster[items] == planted.user_cluster[users][:, None]))


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_and_sampler_learns_the_planted_clusters(planted, loss, sampler):
    """Four short epochs put each user's own cluster at the top of their lists: at least 35% of the
    top 10 (measured 0.47 for positives_only, 0.54 for bpr with uniform negatives, up to 0.98; a
    random ranking gives 0.25 and popularity 0.11), with a finite loss that went down."""
    margin = 0.5 if loss in {"contrastive", "hinge", "lifted"} else 0.0
    model = fit(
        planted, loss=loss, sampler=sampler, epochs=4, batch_size=512, num_negatives=16, margin=margin
    )
    losses = [entry["loss"] for entry in model.history]
    assert len(losses) == 4 and np.isfinite(losses).all()
    assert losses[-1] < losses[0], f"{loss}/{sampler} loss did not go down: {losses}"
    assert np.isfinite(model.item_factors).all()
    share = in_cluster_share(model, planted)
    assert share >= 0.35, f"{loss}/{sampler}: {share:.3f} of the top 10 in the user's cluster (random 0.25)"


def test_negatives_beat_positives_only_which_folds_clusters_together(planted):
    """Without negatives nothing pushes unrelated clusters apart: recall drops and recommendations leak
    into other clusters (folding). In-batch BCE and sampled softmax both fix it."""
    folded_recall, folded_leak = recall_and_leakage(fit(planted, loss="positives_only"), planted)
    for loss, sampler in [("sampled_softmax", "uniform"), ("bce", "in_batch")]:
        recall, leak = recall_and_leakage(fit(planted, loss=loss, sampler=sampler), planted)
        assert recall > folded_recall + 0.05, f"{loss}: {recall:.3f} vs positives_only {folded_recall:.3f}"
        assert folded_leak > 1.5 * leak, f"{loss}: leakage {leak:.3f} vs positives_only {folded_leak:.3f}"


# ----------------------------------------------------------------------------- architecture options
def test_a_fitted_model_holds_no_gradients(planted):
    """The last training step's gradients, as large as the parameters (both embeddings), stayed on
    them for the life of the fitted model, though nothing reads them after training."""
    model = fit(planted, epochs=2, user_layers=[32])
    assert [name for name, p in model.network.named_parameters() if p.grad is not None] == []
    assert any(p.requires_grad for p in model.network.parameters())  # still trainable


def test_mlp_towers_with_learned_temperature_train_well(planted):
    model = fit(planted, user_layers=[32], item_layers=[32], learn_temperature=True)
    np.testing.assert_allclose(np.linalg.norm(model.item_factors, axis=1), 1.0, rtol=1e-5)
    temperatures = [entry["temperature"] for entry in model.history]
    assert temperatures[-1] != pytest.approx(FAST.temperature) and min(temperatures) >= 0.01
    assert recall_and_leakage(model, planted)[0] > 0.45  # measured ~0.6


def test_projection_head_is_trained_but_retrieval_uses_the_vectors_before_it(planted):
    model = fit(planted, projection_head=8)
    assert model.user_factors.shape == (planted.n_users, 16) and model.item_factors.shape == (
        planted.n_items,
        16,
    )
    users = torch.arange(5)
    with torch.no_grad():
        before_head = torch.nn.functional.normalize(model.network.user_tower(users), dim=-1).numpy()
        trained_on = model.network.user_vectors(users, training=True)
    np.testing.assert_allclose(model.user_factors[:5], before_head, rtol=1e-5, atol=1e-6)
    assert trained_on.shape == (5, 8)
    assert recall_and_leakage(model, planted)[0] > 0.35  # measured ~0.44 (random ~0.09)


def test_unnormalised_towers_give_unnormalised_vectors(planted):
    model = fit(planted, normalize=False, epochs=3)
    norms = np.linalg.norm(model.item_factors, axis=1)
    assert not np.allclose(norms, 1.0)


def test_fold_in_is_the_weighted_mean_of_history_item_vectors_normalised(planted):
    model = fit(planted, epochs=2)
    dense = np.zeros((2, planted.n_items), dtype=np.float32)
    dense[0, 3], dense[0, 7], dense[1, 5] = 1.0, 3.0, 2.0
    rows = sp.csr_matrix(dense)
    got = model.fold_in(rows)
    v = model.item_factors
    want0 = (v[3] + 3 * v[7]) / 4
    np.testing.assert_allclose(got[0], want0 / np.linalg.norm(want0), rtol=1e-5)
    np.testing.assert_allclose(got[1], v[5] / np.linalg.norm(v[5]), rtol=1e-5)
    empty = model.fold_in(sp.csr_matrix((1, planted.n_items), dtype=np.float32))
    assert (empty == 0).all()


def test_least_squares_fold_in_solves_the_implicit_als_normal_equations(planted):
    model = fit(planted, epochs=2)
    model.config = model.config.model_copy(
        update={"fold_in": "least_squares", "fold_in_alpha": 4.0, "fold_in_regularization": 0.3}
    )
    dense = np.zeros((1, planted.n_items))
    dense[0, 3], dense[0, 7] = 1.0, 3.0
    v = model.item_factors.astype(np.float64)
    c = 1 + 4.0 * dense[0]  # confidence: 1 on untouched items, 1 + alpha w on the history
    u = np.linalg.solve(v.T @ (c[:, None] * v) + 0.3 * np.eye(v.shape[1]), v.T @ (c * (dense[0] > 0)))
    got = model.fold_in(sp.csr_matrix(dense))
    np.testing.assert_allclose(got[0], u / np.linalg.norm(u), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- history user tower
def test_history_tower_user_vector_is_the_normalised_weighted_mean_of_item_inputs(planted):
    """Written out: u = normalize(sum_j w_j E[j] / sum_j w_j) over the user's training row; with the
    target item excluded (as in training) that item's term and weight drop out."""
    model = fit(planted, user_input="history", epochs=2)
    table = model.network.user_tower.items.weight.detach().numpy().astype(np.float64)
    row = planted.train[4]
    mean = (row.data[:, None] * table[row.indices]).sum(axis=0) / row.data.sum()
    np.testing.assert_allclose(model.user_factors[4], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
    target = int(row.indices[1])
    keep = row.indices != target
    left_out = (row.data[keep, None] * table[row.indices[keep]]).sum(axis=0) / row.data[keep].sum()
    with torch.no_grad():
        got = model.network.user_vectors(torch.tensor([4, 4]), exclude=torch.tensor([target, -1]))
    np.testing.assert_allclose(got[0].numpy(), left_out / np.linalg.norm(left_out), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1].numpy(), model.user_factors[4], rtol=1e-5, atol=1e-6)


def test_history_tower_folds_in_training_users_to_their_trained_vectors(planted):
    model = fit(planted, user_input="history", user_layers=[32], epochs=2)
    np.testing.assert_allclose(
        model.fold_in(planted.train[:20]), model.user_factors[:20], rtol=1e-5, atol=1e-6
    )
    # An empty history is the MLP's learned no-history vector, the same for every such user.
    empty = model.fold_in(sp.csr_matrix((2, planted.n_items), dtype=np.float32))
    with torch.no_grad():
        cold = torch.nn.functional.normalize(model.network.user_tower.mlp(torch.zeros(1, 16)), dim=-1)
    np.testing.assert_allclose(empty, np.repeat(cold.numpy(), 2, axis=0), rtol=1e-5, atol=1e-6)
    assert np.abs(empty).sum() > 0


def test_history_sample_keeps_at_most_limit_items_per_row_seeded(planted):
    from recsys.models.two_tower import sample_rows

    capped = sample_rows(planted.train, 5, seed=1)
    lengths = np.diff(planted.train.indptr)
    np.testing.assert_array_equal(np.diff(capped.indptr), np.minimum(lengths, 5))
    for user in (0, 7, 33):  # a subset of the user's row, with the original weights
        kept = dict(zip(capped[user].indices, capped[user].data, strict=True))
        full = dict(zip(planted.train[user].indices, planted.train[user].data, strict=True))
        assert kept.items() <= full.items()
    assert (sample_rows(planted.train, 5, seed=1) != capped).nnz == 0  # same seed, same sample
    assert (sample_rows(planted.train, 5, seed=2) != capped).nnz > 0
    assert sample_rows(planted.train, int(lengths.max()), seed=1) is planted.train  # nothing to cap
    model = fit(planted, user_input="history", history_limit=5, epochs=2)
    assert int(model.network.user_tower.indptr.diff().max()) == 5
    assert model.history[-1]["loss"] < model.history[0]["loss"]


def test_history_tower_generalises_to_users_unseen_in_training(planted):
    """Strong generalisation on planted clusters: train on 4/5 of the users (every cluster keeps
    users: clusters are user index mod 4), fold the rest in from their training rows and score their
    held-out items. The history tower was trained for exactly this input; it must recommend the
    held-out users' cluster (random ~0.09)."""
    seen = np.arange(planted.n_users) % 5 != 0
    model = TwoTower(FAST.model_copy(update={"user_input": "history"})).fit(planted.train[seen])
    new_users = np.flatnonzero(~seen)
    vectors = model.fold_in(planted.train[new_users])
    items, _ = topk(vectors, model.item_factors, K, exclude=planted.train[new_users])
    recall = planted_recall(items, planted.test[new_users], np.arange(new_users.size))
    assert recall > 0.45, f"recall@10 of unseen users {recall:.3f}"  # measured ~0.6
    leakage = np.mean(planted.item_cluster[items] != planted.user_cluster[new_users][:, None])
    assert leakage < 0.2, f"{leakage:.2f} of unseen users' recommendations leave their cluster"


# ----------------------------------------------------------------------------- features
def planted_features(planted: Planted, seed: int = 0) -> FeatureSet:
    """Categorical cluster labels (informative), random multi-hot tags and numeric noise."""
    rng = np.random.default_rng(seed)
    n_clusters = int(planted.user_cluster.max()) + 1
    vocab = ("<unk>", *(f"c{c}" for c in range(n_clusters)))
    tags = (rng.random((planted.n_items, 6)) < 0.3).astype(np.float32)
    tags[:, 0] = 0.0
    return FeatureSet(
        user={
            "cluster": FeatureColumn(
                "cluster", "categorical", planted.user_cluster.astype(np.int64) + 1, vocab
            ),
            "age": FeatureColumn("age", "numeric", rng.standard_normal(planted.n_users).astype(np.float32)),
        },
        item={
            "tags": FeatureColumn("tags", "multi_hot", tags, tuple(f"t{i}" for i in range(6))),
            "cluster": FeatureColumn(
                "cluster", "categorical", planted.item_cluster.astype(np.int64) + 1, vocab
            ),
            "year": FeatureColumn("year", "numeric", rng.standard_normal(planted.n_items).astype(np.float32)),
        },
    )


@pytest.fixture(scope="module")
def featured(planted) -> TwoTower:
    return TwoTower(FAST.model_copy(update={"use_features": True})).fit(
        planted.train, features=planted_features(planted)
    )


def test_features_path_trains_with_all_three_encoder_kinds(featured, planted):
    encoders = featured.network.item_tower.features.encoders
    assert isinstance(encoders["tags"], torch.nn.Linear) and isinstance(
        encoders["cluster"], torch.nn.Embedding
    )
    assert isinstance(featured.network.user_tower.features.encoders["age"], torch.nn.Linear)
    assert featured.history[-1]["loss"] < featured.history[0]["loss"]
    assert recall_and_leakage(featured, planted)[0] > 0.45


def test_cold_start_user_with_only_features_gets_their_clusters_items(featured, planted):
    """An empty history plus the user's cluster feature: the feature-only user tower must point at the
    right cluster (random would put 1/4 of the list there)."""
    users = np.arange(planted.n_users)
    empty = sp.csr_matrix((users.size, planted.n_items), dtype=np.float32)
    features = {
        "cluster": planted.user_cluster.astype(np.int64) + 1,
        "age": np.zeros(users.size, dtype=np.float32),
    }
    items, _ = topk(featured.fold_in(empty, user_features=features), featured.item_factors, K)
    in_cluster = np.mean(planted.item_cluster[items] == planted.user_cluster[:, None])
    assert in_cluster > 0.8


def test_history_tower_with_features_folds_in_history_plus_features(planted):
    """History tower + user features: a new user is mlp(pooled history + feature encoders), the
    same sum the training users go through; a cold user with only the cluster feature still lands
    in their cluster, and adding the history keeps them there."""
    model = TwoTower(FAST.model_copy(update={"use_features": True, "user_input": "history"})).fit(
        planted.train, features=planted_features(planted)
    )
    users = np.arange(planted.n_users)
    features = {"cluster": planted.user_cluster.astype(np.int64) + 1, "age": np.zeros(users.size, np.float32)}
    trained_features = {"cluster": features["cluster"], "age": planted_features(planted).user["age"].values}
    np.testing.assert_allclose(
        model.fold_in(planted.train, user_features=trained_features), model.user_factors, rtol=1e-5, atol=1e-6
    )
    empty = sp.csr_matrix((users.size, planted.n_items), dtype=np.float32)
    for history in (empty, planted.train):
        items, _ = topk(model.fold_in(history, user_features=features), model.item_factors, K)
        assert np.mean(planted.item_cluster[items] == planted.user_cluster[:, None]) > 0.8


def test_features_are_ignored_unless_use_features(planted):
    model = TwoTower(FAST.model_copy(update={"epochs": 1})).fit(
        planted.train, features=planted_features(planted)
    )
    assert model.network.user_tower.features is None and model.feature_specs == {}


def test_misaligned_features_are_refused(planted):
    from recsys.errors import DataError

    features = planted_features(planted)
    short = FeatureSet(user={}, item={"year": FeatureColumn("year", "numeric", np.zeros(3, np.float32))})
    assert features.item["year"].values.shape[0] == planted.n_items
    with pytest.raises(DataError, match="3 rows but there are 120 items"):
        TwoTower(FAST.model_copy(update={"use_features": True})).fit(planted.train, features=short)


def test_save_load_keeps_tower_weights_and_features(featured, planted, tmp_path: Path):
    target = featured.save(tmp_path / "tt")
    assert json.loads((target / "features.json").read_text())["user"][0]["name"] == "cluster"
    loaded = Recommender.load(target)
    assert isinstance(loaded, TwoTower)
    loaded.refresh_factors()  # recompute from the loaded towers: must reproduce the saved factors
    np.testing.assert_allclose(loaded.item_factors, featured.item_factors, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.user_factors, featured.user_factors, rtol=1e-6, atol=1e-6)
    cold = {"cluster": np.array([1, 2]), "age": np.zeros(2, np.float32)}
    empty = sp.csr_matrix((2, planted.n_items), dtype=np.float32)
    np.testing.assert_allclose(
        loaded.fold_in(empty, user_features=cold),
        featured.fold_in(empty, user_features=cold),
        rtol=1e-5,
        atol=1e-6,
    )


# ----------------------------------------------------------------------------- ML-100K feature loader
def test_recbole_features_are_aligned_to_the_vocab_with_unknowns(ml100k_dir):
    item_ids = np.array(["2", "1", "no-such-item"])
    user_ids = np.array(["1", "no-such-user", "2"])
    fs = load_recbole_features(ml100k_dir / "ml-100k.item", ml100k_dir / "ml-100k.user", item_ids, user_ids)
    genres = fs.item["genres"]
    vocab = list(genres.vocabulary)
    assert (
        len(vocab) == 20 and vocab[0] == "<unk>" and "unknown" in vocab
    )  # ML-100K: 19 genres (one is "unknown")
    toy_story = {vocab[j] for j in np.flatnonzero(genres.values[1])}
    assert toy_story == {"Animation", "Children's", "Comedy"}
    assert {vocab[j] for j in np.flatnonzero(genres.values[0])} == {"Action", "Adventure", "Thriller"}
    assert genres.values[2].sum() == 0
    year = fs.item["release_year"]
    assert year.values[0] * year.std + year.mean == pytest.approx(1995, abs=1e-3) and year.values[2] == 0
    age = fs.user["age"]
    assert age.values[0] * age.std + age.mean == pytest.approx(24, abs=1e-3)  # user 1: 24 M technician
    assert age.values[2] * age.std + age.mean == pytest.approx(53, abs=1e-3)  # user 2: 53 F other
    gender, job = fs.user["gender"], fs.user["occupation"]
    assert [gender.vocabulary[c] for c in gender.values] == ["M", "<unk>", "F"]
    assert [job.vocabulary[c] for c in job.values] == ["technician", "<unk>", "other"]


def test_recbole_features_report_a_missing_file_or_column(tmp_path: Path):
    from recsys.errors import DataError

    with pytest.raises(DataError, match="not found"):
        load_recbole_features(tmp_path / "nope.item", None, np.array(["1"]), np.array(["1"]))
    bad = tmp_path / "bad.user"
    bad.write_text("user_id:token\tage:token\n1\t20\n")
    with pytest.raises(DataError, match=r"bad.user: missing column\(s\) \['gender', 'occupation'\]"):
        load_recbole_features(None, bad, np.array(["1"]), np.array(["1"]))


def test_numeric_feature_missing_values_become_the_mean(tmp_path: Path):
    users = tmp_path / "u.user"
    users.write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\n1\t20\tM\tx\n2\t\tF\t\n3\t40\t\ty\n"
    )
    fs = load_recbole_features(None, users, np.array(["1"]), np.array(["1", "2", "3"]))
    np.testing.assert_allclose(fs.user["age"].values, [-1.0, 0.0, 1.0], atol=1e-6)  # mean 30, std 10
    assert fs.user["gender"].values.tolist() == [2, 1, 0]  # <unk>, F, M
    assert fs.user["occupation"].values.tolist() == [1, 0, 2]


# ----------------------------------------------------------------------------- determinism
def test_models_trained_concurrently_in_threads_equal_models_trained_alone(planted, monkeypatch):
    """The pipeline trains models as concurrent thread tasks. Weight initialisation draws from
    torch's global generator, so without a private, seeded copy of it two models interleave their
    draws and the same config gives different vectors (and metrics) from run to run. A pause inside
    every embedding initialisation makes the two threads interleave there every time."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import recsys.models.two_tower as two_tower

    configs = [FAST.model_copy(update={"name": f"tt{s}", "seed": s, "epochs": 1, "max_steps_per_epoch": 2})
               for s in range(2)]  # fmt: skip
    alone = [TwoTower(c).fit(planted.train).item_factors for c in configs]
    original = two_tower.scaled_embedding

    def slow_embedding(n: int, dim: int):
        time.sleep(0.05)  # the other thread runs now
        return original(n, dim)

    monkeypatch.setattr(two_tower, "scaled_embedding", slow_embedding)
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda c: TwoTower(c).fit(planted.train).item_factors, configs))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)


def test_torch_threads_blocks_that_overlap_keep_their_setting_until_the_last_ends():
    """A plain save/restore let one model's exit put another, still training, back on all cores."""
    from recsys.evaluation.ranking import torch_threads

    before = torch.get_num_threads()
    first, second = torch_threads(1), torch_threads(1)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first model finishes while the second still trains
    assert torch.get_num_threads() == 1
    second.__exit__(None, None, None)
    assert torch.get_num_threads() == before


def test_a_loss_with_no_negative_to_learn_from_is_refused_before_training() -> None:
    """num_negatives = 0 with a sampler that draws num_negatives items left a softmax over the
    positive alone (a constant loss): the towers stayed random and the run reported the model
    (recall below popularity, exit 0). Samplers that ignore num_negatives, and positives_only, stay valid."""
    from pydantic import ValidationError

    for sampler in ("uniform", "popularity", "hard", "auto"):
        with pytest.raises(ValidationError, match="has no negative to learn from"):
            TwoTowerConfig(name="tt", loss="sampled_softmax", sampler=sampler, num_negatives=0)
    for sampler in ("in_batch", "mixed", "all"):
        TwoTowerConfig(name="tt", loss="sampled_softmax", sampler=sampler, num_negatives=0)
    TwoTowerConfig(name="tt", loss="positives_only", sampler="uniform", num_negatives=0)
    TwoTowerConfig(name="tt", loss="sampled_softmax", sampler="auto", user_input="sequence", num_negatives=0)


def test_a_diverged_model_is_refused_not_reported(planted: Planted) -> None:
    """A huge lr grows the embeddings until their squared norm overflows float32: the loss stays
    finite (no NaN stop) but L2 normalisation turns every vector into 0, every score ties, and the
    run used to evaluate, tune on and promote that model. `fit` refuses it, naming the fix."""
    from recsys.errors import ModelError

    model = TwoTower(FAST.model_copy(update={"lr": 1e28, "epochs": 2}))
    with pytest.raises(ModelError, match=r"training diverged after 2 epoch\(s\): every trained (user|item) vector is zero.*\(lr\)"):
        model.fit(planted.train)
    assert not model.is_fitted
    assert np.abs(fit(planted, epochs=2).item_factors).max() > 0  # the default lr trains as before
