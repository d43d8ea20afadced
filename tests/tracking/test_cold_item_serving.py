"""Items the model never trained on are served to nobody, as the evaluator ranks them for nobody.

The planted split with every training interaction of three items moved to test: those items have
zero WALS vectors (cold items). The evaluator masks them (`recsys.evaluation.cold`); the serving
index - what the pyfunc and `recsys serve` answer from - must too, for every source (model, fold-in,
popularity) and on the ANN route. k = the whole catalogue, so a cold item would be in every list
if serving did not mask it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient

from recsys.ann import AnnConfig
from recsys.evaluation.cold import divide_test
from recsys.evaluation.ranking import topk
from recsys.models.base import build_model
from recsys.models.wals import WALSConfig
from recsys.tracking.pyfunc import ServingIndex, answer, write_serving_artifacts
from recsys.tracking.server import build_app

COLD = np.array([5, 17, 40])


@pytest.fixture(scope="module")
def cold_split(planted_split):
    """The planted split with every training row of the COLD items moved into test."""
    train = sp.csr_matrix(planted_split.train, dtype=np.float32)
    moved = sp.csr_matrix(train @ sp.diags(np.isin(np.arange(train.shape[1]), COLD).astype(np.float32)))
    moved.eliminate_zeros()
    kept = sp.csr_matrix(train - moved)
    kept.eliminate_zeros()
    test = sp.csr_matrix(planted_split.test + moved)
    test.data[:] = 1.0
    return replace(planted_split, train=kept, test=test)


@pytest.fixture(scope="module", params=["exact", "ann"])
def served(request, cold_split, tmp_path_factory) -> tuple[ServingIndex, np.ndarray]:
    """(serving index, model user vectors) of one WALS fit, with or without an ANN index."""
    model = build_model(WALSConfig(name="wals", factors=8, iterations=4, threads=1, regularization=0.1, alpha=5.0))
    model = model.fit(cold_split.train)
    ann = AnnConfig(min_items=1, expansion_search=128, recall_users=50) if request.param == "ann" else None
    directory = write_serving_artifacts(model, cold_split, tmp_path_factory.mktemp(request.param), ann)
    index = ServingIndex(directory)
    assert (index.ann is not None) == (request.param == "ann")
    return index, model.user_factors


def test_cold_items_are_the_ones_the_evaluator_masks(cold_split):
    warm = divide_test(cold_split).warm
    assert np.flatnonzero(warm.masked_items).tolist() == COLD.tolist()


@pytest.mark.parametrize("k", [20, None], ids=["k20", "whole-catalogue"])
def test_served_lists_equal_the_evaluators_and_never_hold_an_item_the_model_never_trained_on(served, cold_split, k):
    """k = 20 goes through the ANN search on the ANN route; the whole catalogue past it (exact)."""
    index, user_vectors = served
    warm = divide_test(cold_split).warm
    users = warm.users[:40]
    k = k or cold_split.n_items
    expected, _ = topk(user_vectors[users], index.item_vectors, k, exclude=warm.exclude[users],
                       masked_items=warm.masked_items)  # fmt: skip
    frame = answer(index, {"user_id": [str(cold_split.user_ids[u]) for u in users], "k": k})
    assert set(frame["source"]) == {"model"}
    assert [list(x) for x in frame["item_ids"]] == [[str(cold_split.item_ids[i]) for i in row if i >= 0] for row in expected]


def test_no_source_serves_a_cold_item_over_rest(served, cold_split):
    """`recsys serve`'s app: a known user, a user folded in from a history, an unknown user."""
    index, _ = served
    cold_ids = {str(cold_split.item_ids[i]) for i in COLD}
    history = [str(cold_split.item_ids[i]) for i in cold_split.train[3].indices]
    body = {"dataframe_records": [{"user_id": str(cold_split.user_ids[0])},
                                  {"user_id": "new-user", "history": history}, {"user_id": "nobody"}],
            "params": {"k": cold_split.n_items}}  # fmt: skip
    response = TestClient(build_app(index, name="cold")).post("/invocations", json=body)
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    assert [row["source"] for row in rows] == ["model", "fold_in", "popularity"]
    for row in rows:
        assert row["item_ids"] and not cold_ids & set(row["item_ids"])


def test_the_champion_is_rescored_without_the_items_it_never_trained_on(logged, cold_split, planted_split, planted_data):
    """A champion trained on `cold_split` is re-scored on the planted split, where the COLD items
    have training data: it is scored as it serves, i.e. never ranking the COLD items. Their vectors
    are set large (arbitrary, as an id tower's untrained embeddings are), so ranking them would put
    them first for everyone and change every user's recall."""
    from mlflow import MlflowClient

    from recsys.data.matrix import item_popularity
    from recsys.evaluation.evaluate import evaluate, evaluate_factors
    from recsys.tracking.reevaluate import reevaluate_champion
    from recsys.tracking.runs import Tracker

    cfg = logged.config.model_copy(deep=True)
    cfg.tracking.register_models = False
    model_cfg = WALSConfig(name="wals_cold", factors=8, iterations=4, threads=1, regularization=0.1, alpha=5.0)
    model = build_model(model_cfg).fit(cold_split.train)
    items = model.item_factors.copy()
    items[COLD] = 10.0 * np.abs(model.user_factors).mean(axis=0)
    model._set_factors(model.user_factors, items)
    tracker = Tracker(cfg.tracking, cfg, check=False)
    parent = tracker.start_parent("cold-champion", split=cold_split, data=planted_data)
    with tracker.model_run(parent, model_cfg) as run:
        result = evaluate(model, divide_test(cold_split).warm, cfg.evaluation,
                          item_popularity=item_popularity(cold_split.train))  # fmt: skip
        tracker.log_model_result(run, model, result, cold_split, planted_data)
    tracker.end(parent)

    again = reevaluate_champion(MlflowClient(logged.uri), run.run_id, planted_split, cfg.evaluation)
    warm = divide_test(planted_split).warm
    assert warm.masked_items is None  # today every item has training data
    masked = np.isin(np.arange(planted_split.n_items), COLD)
    quiet = cfg.evaluation.model_copy(update={"bootstrap_samples": 0})
    served = evaluate_factors(model.user_factors, items, replace(warm, masked_items=masked), quiet,
                              item_popularity=item_popularity(planted_split.train))  # fmt: skip
    ranked = evaluate_factors(model.user_factors, items, warm, quiet, item_popularity=item_popularity(planted_split.train))
    assert served.summary["recall@20"] != pytest.approx(ranked.summary["recall@20"], abs=1e-3)  # the premise
    assert again.summary["recall@20"] == pytest.approx(served.summary["recall@20"], abs=1e-6)
    np.testing.assert_allclose(
        again.per_user.sort("user_idx")["recall@20"].to_numpy(),
        served.per_user.sort("user_idx")["recall@20"].to_numpy(),
        atol=1e-6,
    )
