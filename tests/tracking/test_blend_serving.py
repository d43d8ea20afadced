"""A blend as serving meets it (`recsys.tracking.pyfunc.ServingIndex`, what the MLflow pyfunc and
`recsys serve` answer from): /similar follows the blend's weights, and a saved blend serves the
lists the in-memory one recommends. Members: EASE and a small WALS on the planted split (ms each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data.split import Split
from recsys.models.base import Recommender, build_model
from recsys.models.blend import Blend, BlendConfig, cosine_scale
from recsys.models.ease import EASEConfig
from recsys.models.wals import WALSConfig
from recsys.similar import unit_rows
from recsys.tracking.pyfunc import ServingIndex, seen_matrix, write_serving_artifacts


@pytest.fixture(scope="module")
def members(planted_split: Split) -> dict[str, Recommender]:
    return {
        "ease": build_model(EASEConfig(name="ease")).fit(planted_split.train),
        "wals": build_model(WALSConfig(name="wals", factors=8, iterations=4, threads=1)).fit(planted_split.train),
    }


def _blend(members: dict[str, Recommender], split: Split, weights: dict[str, float]) -> Blend:
    blend = Blend(BlendConfig(name="blend", members=list(members), weights=weights))
    blend.set_members(members)
    return blend.fit(split.train)


def test_similar_items_of_a_served_blend_follow_its_weights(members, planted_split: Split, tmp_path: Path):
    """/similar on a blend was the cosine of its concatenated item vectors, which carry no weights:
    a blend weighing EASE 10,000 times WALS answered what one weighing WALS 10,000 times EASE did.
    It is now sum_m c_m cos_m, c_m = (w_m / tau_m) / sum_n (w_n / tau_n) (tau_m: the member's
    within-query spread of cosines): a blend dominated by one member answers that member's lists."""
    ids = [str(planted_split.item_ids[i]) for i in range(0, 60, 3)]
    alone = {n: ServingIndex(write_serving_artifacts(m, planted_split, tmp_path / n)).similar(ids, 5) for n, m in members.items()}
    for name in members:
        weights = {n: 1.0 if n == name else 1e-4 for n in members}
        served = ServingIndex(write_serving_artifacts(_blend(members, planted_split, weights), planted_split, tmp_path / f"b-{name}"))
        got = served.similar(ids, 5)
        assert got["item_ids"].tolist() == alone[name]["item_ids"].tolist(), name
    # the scores are the weighted mean of the members' cosines, to float32 precision
    weights = {"ease": 0.3, "wals": 0.8}
    blend = _blend(members, planted_split, weights)
    served = ServingIndex(write_serving_artifacts(blend, planted_split, tmp_path / "mixed"))
    got = served.similar(ids, 5)
    units = {n: unit_rows(m.item_factors).astype(np.float64) for n, m in members.items()}
    taus = {n: cosine_scale(units[n].astype(np.float32), blend.config.seed) for n in members}
    assert served.model.similarity_scales == pytest.approx(taus, rel=1e-6)  # saved with the blend: the ones served
    coefficients = {n: weights[n] / taus[n] for n in members}
    total = sum(coefficients.values())
    for row, query in zip(got.itertuples(), range(0, 60, 3), strict=True):
        want = sum(c / total * (units[n] @ units[n][query]) for n, c in coefficients.items())
        picked = [int(np.flatnonzero(planted_split.item_ids == i)[0]) for i in row.item_ids]
        np.testing.assert_allclose(row.scores, want[picked], rtol=0, atol=1e-5)
        others = np.delete(want, [query, *picked])
        assert others.max() <= min(row.scores) + 1e-5  # nothing left out scores above the list
    # a blend saved before the similarity scales were kept makes the same ones on first use
    state = served.directory / "model" / "blend.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "similarity_scales"}))
    older = Recommender.load(served.directory / "model")
    np.testing.assert_array_equal(older.similarity_vectors(), served.model.similarity_vectors())


def test_a_saved_blend_serves_the_in_memory_blends_lists(members, planted_split: Split, tmp_path: Path):
    """The served lists (known users, their seen items masked after blending) are the in-memory
    blend's top-k, ids exact and scores within 1e-5 relative to the largest; a folded-in user too."""
    blend = _blend(members, planted_split, {"ease": 0.4, "wals": 1.0})
    served = ServingIndex(write_serving_artifacts(blend, planted_split, tmp_path / "serving"))
    users = np.arange(0, planted_split.n_users, 7)
    items, scores = blend.recommend(users, k=10, exclude=seen_matrix(planted_split))
    got = served.recommend([str(planted_split.user_ids[u]) for u in users], 10)
    assert set(got["source"]) == {"model"}
    assert got["item_ids"].tolist() == [[str(planted_split.item_ids[i]) for i in row] for row in items]
    np.testing.assert_allclose(np.array(got["scores"].tolist()), scores, rtol=0, atol=1e-5 * np.abs(scores).max())


def test_similar_items_never_answer_with_or_for_an_item_without_training_data(planted_split: Split, tmp_path: Path):
    """/similar masked nothing but the query: an item without training interactions (ML-100K's
    strong-generalisation split has 62, seen only by held-out users) kept its untrained vector, a
    two-tower's random start, and was among the top-20 of 9.5-31% of the trained items' lists of
    the run's two-towers; asked for, it got a made-up list (EASE's and WALS's zero vectors: the
    first items by index). Recommendations mask such items already; similar items now do too,
    and asking for one is an UnknownItem naming it (the server's 404)."""
    from dataclasses import replace

    from recsys.tracking.pyfunc import UnknownItem

    cold = 7
    keep = np.ones(planted_split.n_items, dtype=np.float32)
    keep[cold] = 0.0
    train = (planted_split.train @ sp.diags(keep)).tocsr()
    train.eliminate_zeros()
    split = replace(planted_split, train=train)  # item 7 only in test: in the catalogue, never trained on
    members = {
        "ease": build_model(EASEConfig(name="ease")).fit(train),
        "wals": build_model(WALSConfig(name="wals", factors=8, iterations=4, threads=1)).fit(train),
    }
    served = ServingIndex(write_serving_artifacts(_blend(members, split, {"wals": 0.5}), split, tmp_path / "b"))
    everything = served.similar([str(split.item_ids[i]) for i in range(0, split.n_items, 5) if i != cold], split.n_items - 1)
    assert all(str(split.item_ids[cold]) not in row for row in everything["item_ids"])
    assert all(len(row) == split.n_items - 2 for row in everything["item_ids"])  # every other trained item
    with pytest.raises(UnknownItem, match=rf"'{split.item_ids[cold]}' \(row 1\) has no training interactions"):
        served.similar([str(split.item_ids[0]), str(split.item_ids[cold])], 5)
