"""End to end: `mlflow models serve` on models:/NAME@champion answers what the pyfunc answers, and
what `recsys serve` answers (one server per store and session: the `mlflow_models_serve` fixture)."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest


@pytest.fixture(scope="module")
def recsys_api(logged):
    """`recsys serve`'s app on the same model, in process (tests/tracking/test_server.py runs the real
    command): what the MLflow endpoint's answers are compared with."""
    from fastapi.testclient import TestClient

    from recsys.tracking.server import build_app, load_index

    return TestClient(build_app(load_index(f"runs:/{logged.runs['wals']}/model", logged.uri), name="recsys-wals"))


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _refused(url: str, body: dict) -> str:
    """The message of a request the server must refuse with 400."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        _post(url, body)
    assert refused.value.code == 400
    return json.loads(refused.value.read())["message"]


@pytest.mark.slow
def test_served_champion_answers_top_k(mlflow_models_serve, logged, planted_split):
    url = f"{mlflow_models_serve}/invocations"
    body = {
        "dataframe_records": [
            {"user_id": "u1", "history": []},
            {"user_id": "newcomer", "history": ["i3", "i7", "i11"]},
            {"user_id": "stranger", "history": []},
        ],
        "params": {"k": 5},
    }
    answer = _post(url, body)["predictions"]
    model = logged.models["wals"]
    from recsys.evaluation.ranking import topk

    expected, _ = topk(model.user_factors[[1]], model.item_factors, 5, exclude=planted_split.train[[1]])
    assert answer[0]["user_id"] == "u1" and answer[0]["source"] == "model"
    assert answer[0]["item_ids"] == [f"i{i}" for i in expected[0]]
    assert [a["source"] for a in answer] == ["model", "fold_in", "popularity"]
    assert all(len(a["item_ids"]) == len(a["scores"]) == 5 for a in answer)
    assert not {"i3", "i7", "i11"} & set(answer[1]["item_ids"])
    # the popularity fallback reports the training counts exactly (not 46.00001144 for a tied 46)
    counts = np.bincount(planted_split.train.indices, minlength=planted_split.n_items)
    assert answer[2]["scores"] == counts[[int(i[1:]) for i in answer[2]["item_ids"]]].astype(float).tolist()
    _requests_mlflow_schema_enforcement_used_to_break(url)


def _requests_mlflow_schema_enforcement_used_to_break(url: str) -> None:
    """MLflow enforces the signature before the pyfunc runs. With k declared `long` and history
    `Array(string)`: k in some rows only was a pandas cast error, 2.5 was cut to 2 without a word,
    1e30 became -2**63, and integer item ids (MovieLens) or a row without a history were refused.
    Each is answered now, or refused with the pyfunc's own one-line reason."""
    rows = [{"user_id": "u1", "k": 3}, {"user_id": "u2"}, {"user_id": "new", "history": [3, 7]}]
    answer = _post(url, {"dataframe_records": rows})["predictions"]
    assert [len(a["item_ids"]) for a in answer] == [3, 10, 10]
    assert [a["source"] for a in answer] == ["model", "model", "popularity"]  # ids 3, 7: not in this vocab
    split = {"columns": ["user_id", "k"], "data": [["u1", 2], ["u2", None]]}
    assert [len(a["item_ids"]) for a in _post(url, {"dataframe_split": split})["predictions"]] == [2, 10]
    columns = {"user_id": ["u1", "new"], "history": [[], ["i3", 11]]}
    assert [a["source"] for a in _post(url, {"inputs": columns})["predictions"]] == ["model", "fold_in"]
    assert "k of row 0 must be an integer from 1 to" in _refused(url, {"dataframe_records": [{"user_id": "u1", "k": 2.5}]})
    assert "k of row 0 must be from 1 to 96" in _refused(url, {"dataframe_records": [{"user_id": "u1", "k": 1e30}]})
    assert "k of row 0 must be an integer" in _refused(url, {"dataframe_records": [{"user_id": "u1", "k": "5"}]})
    assert "history of row 0 must be a list" in _refused(url, {"dataframe_records": [{"user_id": "x", "history": "i3"}]})
    _what_mlflow_decides_before_the_pyfunc(url)


def _what_mlflow_decides_before_the_pyfunc(url: str) -> None:
    """README's serving section, as MLflow's server behaves: `instances` records with different
    keys never reach the pyfunc (MLflow's own 400); the forms README names instead answer them, and
    a column the signature does not name is dropped (a misspelt k: the default), so is a param
    (`"params": {"kk": 3}`), and a misspelt user_id leaves the pyfunc a frame with neither rows nor
    columns, the very frame `{"dataframe_records": []}` gives it: both are 400 (recsys serve answers
    no rows with `{"predictions": []}`; answering that frame would answer a misspelt id with nothing).
    `params.k` is checked by MLflow against the signature's `long`, so 5.0 is refused there (recsys
    serve reads it as 5). The pyfunc's one-line reason comes wrapped in MLflow's "Failed to predict
    data '<the request as a table>'" and a newline. If MLflow starts passing these through, this
    fails and README (and maybe the pyfunc) must change."""
    rows = [{"user_id": "u1", "k": 3}, {"user_id": "u2"}]
    assert "All arrays must be of the same length" in _refused(url, {"instances": rows})
    ragged = [{"user_id": "u1", "history": []}, {"user_id": "new", "history": ["i3"]}]
    assert "Invalid input" in _refused(url, {"instances": ragged})
    assert [a["source"] for a in _post(url, {"dataframe_records": ragged})["predictions"]] == ["model", "fold_in"]
    for body in ({"dataframe_records": rows}, {"inputs": rows},
                 {"instances": [rows[0], {"user_id": "u2", "k": None}]}):  # fmt: skip
        assert [len(a["item_ids"]) for a in _post(url, body)["predictions"]] == [3, 10]
    assert len(_post(url, {"dataframe_records": [{"user_id": "u1", "kk": 3}]})["predictions"][0]["item_ids"]) == 10
    assert len(_post(url, {"dataframe_records": [{"user_id": "u1"}], "params": {"kk": 3}})["predictions"][0]["item_ids"]) == 10
    for body in ({"dataframe_records": []}, {"dataframe_records": [{"userid": "u1"}]}):
        assert "request needs a 'user_id' column; got []" in _refused(url, body)
    assert "Can not safely convert" in _refused(url, {"dataframe_records": [{"user_id": "u1"}], "params": {"k": 5.0}})
    # and what recsys serve exists for (README): no Content-Type, deep JSON: 500 without a JSON body
    for body, headers in ((b'{"inputs": {"user_id": "u1"}}', {}),
                          (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", {"Content-Type": "application/json"})):  # fmt: skip
        host, port = url.removeprefix("http://").split("/")[0].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("POST", "/invocations", body=body, headers=headers)  # urllib would add a Content-Type
        response = connection.getresponse()
        assert (response.status, response.read()) == (500, b"Internal Server Error")
        connection.close()
    csv = urllib.request.Request(url, data=b"user_id\nu1\n", headers={"Content-Type": "text/csv"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as unread:
        urllib.request.urlopen(csv, timeout=30)
    assert unread.value.code == 400 and "Traceback" in json.loads(unread.value.read())["stack_trace"]
    wrapped = _refused(url, {"dataframe_records": [{"user_id": "u1", "k": 0}]})
    assert wrapped.startswith("Failed to predict data '") and wrapped.endswith("\nError: k of row 0 must be from 1 to 96 (the number of items), got 0")


@pytest.mark.slow
def test_mlflow_endpoint_names_the_history_ids_the_model_does_not_know(mlflow_models_serve, recsys_api):
    """`recsys serve` named a supplied history's unknown item ids (`unknown_history`); through
    `mlflow models serve` the same request came back without them, so a history of unknown ids only
    got the popularity fallback with nothing to say why (the same answer as no history at all). The
    pyfunc's answer now has an `unknown_history` column ([] on rows without such ids; MLflow's JSON
    writes every column of every row) and the other columns are unchanged: recsys serve's, value for
    value."""
    body = {"dataframe_records": [
        {"user_id": "newcomer", "history": ["i3", "i7"]},                    # (a) known ids
        {"user_id": "newcomer", "history": ["i3", "sku-9", "i7"]},           # (b) partly unknown
        {"user_id": "newcomer", "history": ["sku-1", "sku-2", "sku-1", 7]},  # (c) all unknown
        {"user_id": "nobody"},                                               # (d) unknown user
        {"user_id": "u1", "history": ["sku-3"]},                             # a model user too
    ], "params": {"k": 5}}  # fmt: skip
    served = _post(f"{mlflow_models_serve}/invocations", body)["predictions"]
    assert [row.get("unknown_history") for row in served] == [[], ["sku-9"], ["sku-1", "sku-2", "7"], [], ["sku-3"]]
    assert [row["source"] for row in served] == ["fold_in", "fold_in", "popularity", "popularity", "model"]
    assert served[1]["item_ids"] == served[0]["item_ids"] and served[2]["item_ids"] == served[3]["item_ids"]
    ours = recsys_api.post("/invocations", json=body).json()["predictions"]
    assert [{**row, "unknown_history": row.get("unknown_history", [])} for row in ours] == served
    # the columnar form names them per row too
    columns = {"user_id": ["u1", "x"], "history": [["sku-1"], ["i3"]]}
    assert [row["unknown_history"] for row in _post(f"{mlflow_models_serve}/invocations", {"inputs": columns})["predictions"]] == [["sku-1"], []]


ANSWERED_ALIKE = [
    {"dataframe_records": [{"user_id": "u1"}, {"user_id": "u2", "k": 3}], "params": {"k": 5}},
    {"dataframe_records": [{"user_id": "u1", "k": 96}]},  # k = every item: the unseen ones, in order
    {"dataframe_records": [{"user_id": 1, "history": [3, "i4", 7.0]}, {"user_id": "new", "history": ["i4", "i8"]}]},
    {"dataframe_split": {"columns": ["user_id", "k"], "data": [["u1", 2], ["stranger", 4]]}},
    {"inputs": {"user_id": ["u1", "new"], "k": 4, "history": [[], ["i3", "i9"]]}},
    {"inputs": {"user_id": "u3"}, "params": {"k": 2}},
    {"inputs": [{"user_id": "u1", "k": 2}, {"user_id": "u2"}]},
    {"instances": [{"user_id": "u1", "k": None}, {"user_id": "u2", "k": 1}]},
]

REFUSED_ALIKE = [
    {"dataframe_records": [{"user_id": "u1"}], "params": {"k": k}} for k in (0, -3, 97, 2**63, 2.5, "5", True)
] + [
    {"dataframe_records": [{"user_id": "u1", "k": k}]} for k in (0, 97, 2**63, 2.5, "5", True)
] + [
    {"dataframe_records": [{"user_id": user}]} for user in (None, True, {"a": 1}, 1.5)
] + [
    {"dataframe_records": [{"user_id": "new", "history": history}]}
    for history in ("i3", {"a": "i3"}, [["i3"]], [True], [None], ["i3", 2.5], [{"id": "i3"}])
] + [
    {"dataframe_records": [{"k": 3}]},
    {"dataframe_records": ["u1"]},
    {"dataframe_records": {"user_id": "u1"}},
    {"dataframe_split": {"columns": ["user_id"], "data": [["u1", 3]]}},
    {"inputs": {"user_id": ["u1", "u2"], "k": [1]}},
    {"dataframe_records": [{"user_id": "u1"}], "inputs": {"user_id": "u2"}},
    {"params": {"k": 3}},
    {"user_id": "u1"},
    {},
    [{"user_id": "u1"}],
]


def _status_and_body(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


@pytest.mark.slow
def test_mlflow_endpoint_and_recsys_serve_answer_and_refuse_the_same_requests(mlflow_models_serve, recsys_api):
    """The same model behind both servers: every request one answers, the other answers with the same
    rows (ids, lists, scores exactly, sources, unknown history ids), and every malformed request
    (wrong types, k out of 1..n_items, an empty or unwrapped body) both refuse with 400. A history
    holding a list, a boolean, a null or a fraction was served by MLflow's endpoint as if it held
    unknown ids (popularity, no word) and refused by recsys serve. The differences MLflow's server
    decides before the pyfunc runs are in `_what_mlflow_decides_before_the_pyfunc`."""
    url = f"{mlflow_models_serve}/invocations"
    for body in ANSWERED_ALIKE:
        status, theirs = _status_and_body(url, json.dumps(body).encode())
        assert status == 200, (body, theirs)
        ours = recsys_api.post("/invocations", json=body)
        assert ours.status_code == 200, (body, ours.text)
        named = [{**row, "unknown_history": row.get("unknown_history", [])} for row in ours.json()["predictions"]]
        assert theirs["predictions"] == named, body
    for body in [*REFUSED_ALIKE, b"", b"not json"]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, theirs = _status_and_body(url, raw)
        ours = recsys_api.post("/invocations", content=raw, headers={"Content-Type": "application/json"})
        assert (status, ours.status_code) == (400, 400), (body, theirs, ours.text)


def test_the_port_of_a_server_that_stopped_after_answering_is_free_again_but_a_listening_one_is_not():
    """A server that answered a request and stopped leaves its side of the connection in TIME_WAIT
    (a minute on Linux). uvicorn binds over it (SO_REUSEADDR) but the port check before loading the
    model did not, so `recsys serve` restarted on its port right after a stop failed with 'cannot
    listen on 127.0.0.1:PORT (Address already in use)'. A port someone listens on stays refused."""
    from recsys.cli.tracking_cmds import _port_is_free
    from recsys.errors import TrackingError

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    answered, _ = server.accept()
    answered.close()  # the server closes first: its end waits in TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    _port_is_free(port)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        with pytest.raises(TrackingError, match="cannot listen on"):
            _port_is_free(listening.getsockname()[1])


@pytest.mark.parametrize("tracking_uri", ["sqlite"], indirect=True)  # a local artifacts folder
def test_a_model_whose_artifacts_folder_is_gone_names_where_its_files_should_be(logged, tmp_path):
    """A store copied or moved without its artifacts/ folder: `recsys serve` said 'Could not find an
    "MLmodel" configuration file at "$TMPDIR/recsys-serve-.../MLmodel"', its own download folder."""
    import sqlite3

    from recsys.errors import TrackingError
    from recsys.tracking.server import load_index
    from recsys.tracking.store import sqlite_path

    copy = tmp_path / "mlflow.db"
    source, target = sqlite3.connect(sqlite_path(logged.uri)), sqlite3.connect(copy)
    source.backup(target)
    source.close()
    run = logged.runs["wals"]
    gone = tmp_path / "moved-away" / run / "artifacts"
    target.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?", (gone.as_uri(), run))
    target.commit()
    target.close()
    with pytest.raises(TrackingError) as caught:
        load_index(f"runs:/{run}/model", f"sqlite:///{copy}")
    said = str(caught.value)
    assert f"its files are not at {gone / 'model'}" in said and "MLmodel" not in said, said
