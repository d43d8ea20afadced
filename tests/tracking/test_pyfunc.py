"""The logged pyfunc, loaded back through MLflow, answers exactly what the evaluator ranks."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from recsys.data.matrix import item_popularity
from recsys.evaluation.ranking import topk


@pytest.fixture(scope="module")
def wals_pyfunc(logged, tmp_path_factory):
    mlflow.set_tracking_uri(logged.uri)
    try:  # dst_path: MLflow's default download directory is never removed
        return mlflow.pyfunc.load_model(f"runs:/{logged.runs['wals']}/model", dst_path=str(tmp_path_factory.mktemp("pyfunc")))
    finally:
        mlflow.set_tracking_uri(None)


def _ids(split, items: np.ndarray) -> list[list[str]]:
    return [[str(split.item_ids[i]) for i in row if i >= 0] for row in items]


def test_pyfunc_topk_equals_the_evaluator_item_for_item(logged, planted_split, wals_pyfunc):
    split, model = planted_split, logged.models["wals"]
    users = split.test_set().users[:60]
    k = 15
    items, scores = topk(
        model.user_factors[users], model.item_factors, k, exclude=split.test_set().exclude[users]
    )
    request = pd.DataFrame({"user_id": [str(split.user_ids[u]) for u in users]})
    answer = wals_pyfunc.predict(request, params={"k": k})
    assert answer["user_id"].tolist() == request["user_id"].tolist()
    assert answer["source"].unique().tolist() == ["model"]
    assert [list(x) for x in answer["item_ids"]] == _ids(split, items)
    assert np.allclose(np.stack(answer["scores"].to_numpy()), scores, atol=1e-5)
    # the evaluator's stored top-k agrees too (same users, k = max(ks) = 20)
    ranked = logged.results["wals"].topk
    position = np.searchsorted(ranked.users, users)
    served = wals_pyfunc.predict(request, params={"k": ranked.k})
    assert [list(x) for x in served["item_ids"]] == _ids(split, ranked.items[position])


def test_seen_items_are_never_served(logged, planted_split, wals_pyfunc):
    split = planted_split
    users = np.arange(40)
    answer = wals_pyfunc.predict(pd.DataFrame({"user_id": [f"u{u}" for u in users], "k": [30] * 40}))
    for u, served in zip(users, answer["item_ids"], strict=True):
        seen = {f"i{i}" for i in split.train[u].indices}
        assert len(served) == 30 and not seen & set(served)


def test_unknown_user_with_history_is_folded_in(logged, planted_split, wals_pyfunc):
    split, model = planted_split, logged.models["wals"]
    history_rows = split.train[[3, 4]]
    histories = [[f"i{i}" for i in history_rows[r].indices] + ["not-an-item"] for r in range(2)]
    answer = wals_pyfunc.predict(
        pd.DataFrame({"user_id": ["new-a", "new-b"], "k": [10, 10], "history": histories})
    )
    assert answer["source"].tolist() == ["fold_in", "fold_in"]
    assert answer["unknown_history"].tolist() == [["not-an-item"], ["not-an-item"]]  # ignored, and said so
    binary = history_rows.copy()
    binary.data[:] = 1.0
    expected, _ = topk(model.fold_in(binary), model.item_factors, 10, exclude=binary)
    assert [list(x) for x in answer["item_ids"]] == _ids(split, expected)
    # a user of block b folds in to block b's items (planted structure)
    blocks = {int(i[1:]) % 4 for i in answer["item_ids"][0][:5]}
    assert blocks == {3 % 4}


def test_unknown_user_without_history_gets_most_popular_items(planted_split, wals_pyfunc):
    answer = wals_pyfunc.predict(pd.DataFrame({"user_id": ["stranger"]}), params={"k": 5})
    popularity = item_popularity(planted_split.train)
    ids = np.asarray(planted_split.item_ids).astype(str)
    order = np.lexsort((ids, -popularity))[:5]  # by count, ties by the raw id's text (break_ties)
    assert answer["source"].tolist() == ["popularity"]
    assert list(answer["item_ids"][0]) == [ids[i] for i in order]
    np.testing.assert_allclose(answer["scores"][0], popularity[order], rtol=1e-5)  # a few float32 steps above


def test_per_row_k_and_mixed_sources_in_one_request(wals_pyfunc):
    request = pd.DataFrame(
        {"user_id": ["u1", "stranger", "new"], "k": [3, 2, 4], "history": [[], [], ["i0", "i4"]]}
    )
    answer = wals_pyfunc.predict(request)
    assert [len(x) for x in answer["item_ids"]] == [3, 2, 4]
    assert answer["source"].tolist() == ["model", "popularity", "fold_in"]
    assert not {"i0", "i4"} & set(answer["item_ids"][2])


def test_known_user_with_a_history_has_both_its_seen_items_and_the_history_masked(logged, planted_split, wals_pyfunc):
    """A known user who also sends a history: its stored seen items and the sent items are both
    excluded, in a request whose other row is unknown (every branch of the exclusion wiring)."""
    from recsys.tracking.pyfunc import seen_matrix

    split, model = planted_split, logged.models["wals"]
    u, uid = 5, str(planted_split.user_ids[5])
    plain = wals_pyfunc.predict(pd.DataFrame({"user_id": [uid]}), params={"k": 10})
    sent = list(plain["item_ids"][0][:3])  # its three best unseen items, now sent as its history
    answer = wals_pyfunc.predict(pd.DataFrame({"user_id": ["stranger", uid], "k": [10, 10], "history": [[], sent]}))
    assert answer["source"].tolist() == ["popularity", "model"]
    exclude = seen_matrix(split)[[u]].tolil()
    for item in sent:
        exclude[0, int(np.flatnonzero(split.item_ids.astype(str) == item)[0])] = 1.0
    expected, _ = topk(model.user_factors[[u]], model.item_factors, 10, exclude=exclude.tocsr())
    assert list(answer["item_ids"][1]) == _ids(split, expected)[0]
    assert not set(sent) & set(answer["item_ids"][1])


def test_records_answer_equals_the_dataframe_answer(planted_split, wals_pyfunc):
    """`recsys serve` answers through `answer_records` (plain lists, no DataFrame per request): row
    for row what the pyfunc's DataFrame answer holds, records with missing columns included, and the
    vocab lookup gives the same indices one by one (few ids) and at once (many)."""
    from recsys.tracking.pyfunc import answer, answer_records

    index = wals_pyfunc.unwrap_python_model().index
    records = [{"user_id": "u1", "k": 3}, {"user_id": "stranger"}, {"user_id": "new", "history": ["i0", "i4"]}]
    framed = answer(index, pd.DataFrame.from_records(records)).to_dict("records")
    assert [row.pop("unknown_history") for row in framed] == [[], [], []]  # every row of a frame; only non-empty in records
    assert answer_records(index, records) == framed
    ids = [str(u) for u in planted_split.user_ids[:80]] + ["nobody"]
    many = index.user_indices(ids)
    assert many.tolist() == [int(index.user_indices([i])[0]) for i in ids]
    assert many[:80].tolist() == list(range(80)) and many[-1] == -1


def test_saving_the_pyfunc_draws_no_progress_bar_and_logs_no_info_line(planted_split, tmp_path, capfd, monkeypatch):
    """MLflow checks the input example by loading the model back, with an artifact-download bar
    and an INFO line per model: in a run's output they land between the trial lines."""
    import logging

    from recsys.models.popularity import Popularity
    from recsys.tracking.pyfunc import save_pyfunc

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    monkeypatch.setattr(logging.getLogger("mlflow.pyfunc"), "level", logging.NOTSET)
    model = Popularity(name="popularity")
    model.fit(planted_split.train)
    capfd.readouterr()
    save_pyfunc(model, planted_split, tmp_path / "model", staging=tmp_path / "staging")
    printed = capfd.readouterr()
    assert (tmp_path / "model" / "MLmodel").is_file()
    assert "Downloading artifacts" not in printed.err + printed.out
    assert "Validating input example" not in printed.err + printed.out


def test_an_integer_id_sent_as_a_float_is_that_integer():
    """A JSON 1.0 (or a pandas id column with a gap, which turns float) named user "1.0", an id no
    vocab holds: `mlflow models serve` answered popularity where `recsys serve` (pydantic) read
    user 1. A float with a fraction is refused as an id, as `recsys serve` refuses it."""
    from recsys.tracking.pyfunc import BadRequest, parse_request

    assert parse_request([{"user_id": 1.0}, {"user_id": "u2"}])[0] == ["1", "u2"]
    assert parse_request(pd.DataFrame({"user_id": [7.0, 12.0]}))[0] == ["7", "12"]
    assert parse_request({"user_id": np.array([3.0], dtype=np.float32)})[0] == ["3"]
    for bad in (1.5, float("nan"), float("inf")):
        with pytest.raises(BadRequest, match="user_id of row 0 must be a string or an integer"):
            parse_request([{"user_id": bad}])


def test_importing_the_pyfunc_prints_no_mlflow_type_hints_warning():
    """MLflow's 'Add type hints to the `predict` method' warning (two lines, MLflow's path) came out
    of every `recsys run`, `recsys serve` and `mlflow models serve`: the class is defined at import."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-W", "default", "-c", "import recsys.tracking.pyfunc"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "type hints" not in done.stderr, done.stderr


def test_similar_items_of_a_popularity_model_are_refused_not_made_up(logged, tmp_path):
    """Popularity's item vectors are one number each: every cosine is 1, and /similar answered k
    arbitrary items, each with score 1.0. It says why instead (400 through either server)."""
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(logged.uri)
    try:
        popularity = mlflow.pyfunc.load_model(f"runs:/{logged.runs['popularity']}/model", dst_path=str(tmp_path))
    finally:
        mlflow.set_tracking_uri(None)
    with pytest.raises(MlflowException, match="item vectors have 1 dimension, so every item is equally similar"):
        popularity.predict(pd.DataFrame({"item_id": ["i1"], "k": [3]}))


def test_integer_history_item_ids_are_the_ids_they_spell(logged, planted_split, tmp_path):
    """MovieLens item ids are integers: a history sent as [3, 7] (or 7.0, a JSON float) folds in
    exactly as ["3", "7"] does, where str(7.0) = "7.0" was an id no vocab holds, ignored silently."""
    import dataclasses

    from recsys.tracking.pyfunc import BadRequest, ServingIndex, answer, write_serving_artifacts

    numeric = dataclasses.replace(planted_split, item_ids=np.arange(planted_split.n_items).astype(str).astype(object))
    index = ServingIndex(write_serving_artifacts(logged.models["wals"], numeric, tmp_path / "serving"))
    as_text = answer(index, [{"user_id": "new", "history": ["3", "7"]}])
    as_numbers = answer(index, [{"user_id": "new", "history": [3, 7.0]}])
    assert as_numbers["source"].tolist() == ["fold_in"]
    assert list(as_numbers["item_ids"][0]) == list(as_text["item_ids"][0])
    assert not {"3", "7"} & set(as_numbers["item_ids"][0])
    # numpy scalars (a history column built in pandas) are ids too; what is no id is refused
    as_numpy = answer(index, [{"user_id": "new", "history": np.array([3, 7], dtype=np.int64)},
                              {"user_id": "new", "history": [np.str_("3"), np.float64(7.0)]}])  # fmt: skip
    assert [list(x) for x in as_numpy["item_ids"]] == [list(as_text["item_ids"][0])] * 2
    for bad in ([["3"]], [np.bool_(True)], [None], [7.5]):
        with pytest.raises(BadRequest, match="history of row 0 must hold item ids"):
            answer(index, [{"user_id": "new", "history": bad}])


def test_the_input_example_shows_k_and_a_history_and_answers_both_ways(wals_pyfunc):
    """The signature declares k and history `Any`, so the example beside it in the MLflow UI is where
    their form shows: a known user with k, and a new user with a history (folded in)."""
    example = wals_pyfunc.input_example
    assert list(example.columns) == ["user_id", "k", "history"] and example["k"].tolist() == [10, 10]
    answer = wals_pyfunc.predict(example)
    assert answer["source"].tolist() == ["model", "fold_in"]


def test_requirements_pin_installable_versions_without_a_local_label(monkeypatch):
    """`torch==2.13.0+cpu` is on no public index: `mlflow models serve --env-manager virtualenv`
    could not build the model's environment. Pinned as MLflow's own inference pins it."""
    import importlib.metadata

    from recsys.tracking.pyfunc import RUNTIME_PACKAGES, runtime_requirements

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.13.0+cpu" if name == "torch" else real(name))
    pins = runtime_requirements()
    assert "torch==2.13.0" in pins and len(pins) == len(RUNTIME_PACKAGES)
    assert not [pin for pin in pins if "+" in pin]


def test_an_integer_id_column_reaches_the_loaded_pyfunc(wals_pyfunc):
    """Last.fm and MovieLens ids are integers, so a pandas frame of them is int64: with `user_id`
    and `item_id` declared `string`, MLflow refused it before `predict` ran ("Can not safely
    convert int64 to <U0"). Now it is read as the text the vocab holds, as over REST."""
    as_int = wals_pyfunc.predict(pd.DataFrame({"user_id": [5, 7]}), params={"k": 3})
    as_text = wals_pyfunc.predict(pd.DataFrame({"user_id": ["5", "7"]}), params={"k": 3})
    assert as_int["user_id"].tolist() == ["5", "7"] and as_int["source"].tolist() == ["popularity"] * 2
    assert [list(r) for r in as_int["item_ids"]] == [list(r) for r in as_text["item_ids"]]
    with pytest.raises(Exception, match=r"item_id '42' \(row 0\) is not in the model's catalogue"):
        wals_pyfunc.predict(pd.DataFrame({"item_id": [42]}))


def test_similar_items_are_answered_from_an_item_major_matrix_prepared_once(logged, planted_split, tmp_path):
    """/similar handed topk the plain unit matrix, which topk transposes to contiguous memory on
    every call: a copy of the whole catalogue per request (275 MB, ~0.4-1.2 s, for a blend holding
    EASE's 8k-wide columns on an 8k-item catalogue). It is prepared once, item-major, as
    `item_matrix` is; the answer is still the exact cosine top-k without the query item."""
    from recsys.tracking.pyfunc import ServingIndex, write_serving_artifacts

    index = ServingIndex(write_serving_artifacts(logged.models["wals"], planted_split, tmp_path / "serving"))
    queries = [str(planted_split.item_ids[i]) for i in (0, 5, 9)]
    got = index.similar(queries, 4)
    prepared = index._similar
    assert prepared.T.is_contiguous()  # topk's transpose is then free
    again = index.similar(queries, 4)
    assert index._similar is prepared and got["item_ids"].tolist() == again["item_ids"].tolist()
    vectors = np.asarray(logged.models["wals"].item_factors, dtype=np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for row, query in zip(got.itertuples(), (0, 5, 9), strict=True):
        cosines = unit @ unit[query]
        cosines[query] = -np.inf
        want = np.argsort(-cosines, kind="stable")[:4]
        assert list(row.item_ids) == [str(planted_split.item_ids[i]) for i in want]
        np.testing.assert_allclose(row.scores, cosines[want], rtol=0, atol=1e-5)
