"""A model logged with an ANN index (serving.ann): its parameters and measured recall in MLflow, the
served lists equal to exact search (seen items filtered, lists full), similar items over REST
(/similar never returns the query item) and through the pyfunc's item_id form."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from recsys.ann import AnnConfig
from recsys.models.wals import WALSConfig
from recsys.similar import unit_rows
from recsys.tracking.pyfunc import answer
from recsys.tracking.server import build_app, load_index


@pytest.fixture(scope="module")
def ann_run(logged, planted_split, planted_data) -> str:
    """One WALS model logged with an index forced onto the 96-item catalogue (ef >= catalogue: exact)."""
    from recsys.data.matrix import item_popularity
    from recsys.evaluation.evaluate import evaluate
    from recsys.models.base import build_model
    from recsys.tracking.runs import Tracker

    cfg = logged.config.model_copy(deep=True)
    cfg.tracking.register_models = False
    cfg.serving.ann = AnnConfig(min_items=1, expansion_search=128, recall_users=100)
    model_cfg = WALSConfig(name="wals_ann", factors=8, iterations=4, threads=1, regularization=0.1, alpha=5.0)
    tracker = Tracker(cfg.tracking, cfg, check=False)
    parent = tracker.start_parent("ann", split=planted_split, data=planted_data)
    with tracker.model_run(parent, model_cfg) as run:
        model = build_model(model_cfg).fit(planted_split.train)
        result = evaluate(model, planted_split.test_set(), cfg.evaluation,
                          item_popularity=item_popularity(planted_split.train))  # fmt: skip
        tracker.log_model_result(run, model, result, planted_split, planted_data)
    tracker.end(parent)
    return run.run_id


@pytest.fixture(scope="module")
def served(ann_run, logged):
    return load_index(f"runs:/{ann_run}/model", logged.uri)


def test_index_parameters_and_measured_recall_are_logged(ann_run, logged):
    run = MlflowClient(logged.uri).get_run(ann_run)
    assert run.data.params["ann.library"] == "faiss" and run.data.params["ann.connectivity"] == "16"
    assert run.data.params["ann.augmented"] == "True"  # WALS vectors are not unit: the MIPS transform
    assert run.data.metrics["ann_recall_at_10"] == run.data.metrics["ann_recall_at_100"] == 1.0
    plain = MlflowClient(logged.uri).get_run(logged.runs["wals"])  # 96 items < the default 100k
    assert not any(key.startswith("ann") for key in (*plain.data.params, *plain.data.metrics))


def test_served_lists_through_the_index_equal_exact_search_with_seen_items_filtered(
    served, planted_split, monkeypatch
):
    assert served.ann is not None and served.use_ann
    users = [f"u{i}" for i in range(0, 240, 3)] + ["nobody"]
    searched = []  # a spy on the real index: the lists below must come from it, not from exact search
    real_topk = served.ann.topk
    monkeypatch.setattr(served.ann, "topk", lambda vectors, *a, **kw: searched.append(len(vectors)) or real_topk(vectors, *a, **kw))
    with_ann = answer(served, {"user_id": users, "k": 20})
    assert sum(searched) == len(users) - 1  # every known user through the index; "nobody" gets popularity
    served.use_ann = False
    try:
        exact = answer(served, {"user_id": users, "k": 20})
    finally:
        served.use_ann = True
    assert with_ann["item_ids"].tolist() == exact["item_ids"].tolist()
    assert all(len(items) == 20 for items in with_ann["item_ids"])
    seen = planted_split.train.tocsr()
    for user, items in zip(users[:-1], with_ann["item_ids"], strict=False):
        row = seen[int(user[1:])].indices
        assert not {f"i{i}" for i in row} & set(items)


def test_similar_over_rest_never_returns_the_query_item_and_is_the_cosine_top_k(served):
    api = TestClient(build_app(served, name="ann"))
    response = api.post("/similar", json={"item_id": ["i0", "i7", "i13"], "k": 5})
    assert response.status_code == 200, response.text
    rows = response.json()["similar"]
    unit = unit_rows(served.item_vectors)
    for row, query in zip(rows, ["i0", "i7", "i13"], strict=True):
        assert row["item_id"] == query and query not in row["item_ids"] and len(row["item_ids"]) == 5
        q = int(query[1:])
        cosine = unit @ unit[q]
        cosine[q] = -np.inf
        assert row["item_ids"] == [f"i{i}" for i in np.argsort(-cosine, kind="stable")[:5]]
        np.testing.assert_allclose(row["scores"], np.sort(cosine)[::-1][:5], atol=1e-5)
    # a well-formed request naming an item the model lacks is 404 (no such resource), a malformed one 400
    for body, status, says in (({"item_id": "nope"}, 404, "not in the model's catalogue"),
                               ({"item_id": ["i1", "nope"]}, 404, "'nope' (row 1)"),
                               ({"item_id": "i1", "k": 96}, 400, "k"), ({"items": "i1"}, 400, "item_id")):  # fmt: skip
        bad = api.post("/similar", json=body)
        assert bad.status_code == status and says in bad.json()["message"], (body, bad.text)


def test_the_pyfunc_answers_item_id_rows_with_similar_items(served):
    frame = answer(served, [{"item_id": "i3", "k": 4}, {"item_id": "i4"}])
    assert frame["item_id"].tolist() == ["i3", "i4"] and frame["source"].tolist() == ["similar", "similar"]
    assert [len(x) for x in frame["item_ids"]] == [4, 10]
    assert "i3" not in frame["item_ids"][0] and "i4" not in frame["item_ids"][1]
