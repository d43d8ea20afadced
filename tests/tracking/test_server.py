"""`recsys serve`: every documented request form, k checked, limits, one-line error bodies; the running
server fuzzed against its own OpenAPI schema (schemathesis); SIGTERM ends it with nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

# A dev dependency (pyproject [dev]; `make test` installs it): a venv made before it was added
# skips this module with the reason instead of failing to collect.
schemathesis = pytest.importorskip("schemathesis", reason="pip install -e '.[dev]' (schemathesis fuzzes the API)")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from pinged import answers_ping  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from recsys.evaluation.ranking import topk  # noqa: E402
from recsys.tracking.registry import CHAMPION  # noqa: E402
from recsys.tracking.server import MAX_JSON_DEPTH, RequestError, build_app, load_index, parse_json  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120
MAX_RESULTS = 500


@pytest.fixture(scope="module")
def index(logged):
    return load_index(f"runs:/{logged.runs['wals']}/model", logged.uri)


@pytest.fixture(scope="module")
def api(index):
    return TestClient(build_app(index, name="recsys-wals", max_results=MAX_RESULTS))


def _post(api, body, **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.post("/invocations", content=data, headers={"Content-Type": "application/json", **headers})


def _assert_one_line_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message"}
    message = body["message"]
    assert "\n" not in message and "Traceback" not in message and ".py" not in message
    assert str(REPO) not in response.text and "site-packages" not in response.text
    return message


def test_every_documented_request_form_is_read_as_documented(api, logged, planted_split):
    model = logged.models["wals"]
    expected, _ = topk(model.user_factors[[1, 2]], model.item_factors, 5, exclude=planted_split.train[[1, 2]])
    want = [[f"i{i}" for i in row] for row in expected]
    forms = [
        {"dataframe_records": [{"user_id": "u1"}, {"user_id": "u2"}], "params": {"k": 5}},
        {"dataframe_split": {"columns": ["user_id", "k"], "data": [["u1", 5], ["u2", 5]]}},
        {"inputs": {"user_id": ["u1", "u2"]}, "params": {"k": 5}},  # two users, not one id "['u1' 'u2']"
        {"inputs": {"user_id": ["u1", "u2"], "k": 5}},
        {"inputs": [{"user_id": "u1", "k": 5}, {"user_id": "u2", "k": 5}]},
        {"instances": [{"user_id": "u1"}, {"user_id": "u2"}], "params": {"k": 5}},
        {"dataframe_records": [{"user_id": "u1", "k": 5.0}, {"user_id": "u2"}], "params": {"k": 5.0}},  # 5.0 is a JSON Schema integer
    ]
    for body in forms:
        response = _post(api, body)
        assert response.status_code == 200, (body, response.text)
        predictions = response.json()["predictions"]
        assert [p["user_id"] for p in predictions] == ["u1", "u2"], body
        assert [p["item_ids"] for p in predictions] == want, body
        assert {p["source"] for p in predictions} == {"model"}
    # one user as a scalar, an integer id read as its string, a history for an unknown user
    single = _post(api, {"inputs": {"user_id": "u1"}, "params": {"k": 5}}).json()["predictions"]
    assert [p["item_ids"] for p in single] == want[:1]
    folded = _post(api, {"dataframe_records": [{"user_id": 12345, "history": ["i3", "i7"], "k": 3}]}).json()
    assert folded["predictions"][0]["user_id"] == "12345" and folded["predictions"][0]["source"] == "fold_in"
    # a missing Content-Type is read as JSON
    bare = api.post("/invocations", content=json.dumps(forms[0]).encode())
    assert bare.status_code == 200 and len(bare.json()["predictions"]) == 2


def test_a_history_of_unknown_items_is_named_in_the_answer(api):
    """A history holding only item ids the model does not know was ignored, and the user got the
    popularity fallback with nothing to say why (the same answer as no history at all). The row now
    names those ids in `unknown_history` (an added field, only on such rows); source stays popularity,
    or fold_in when the history also held known items."""
    body = {"dataframe_records": [
        {"user_id": "newcomer", "history": ["sku-1", "sku-2", "sku-1", 7]},
        {"user_id": "nobody"},
        {"user_id": "mixed", "history": ["i3", "sku-9", "i7"]},
        {"user_id": "known", "history": ["i3", "i7"]},
        {"user_id": "u1", "history": ["sku-3"]},
    ], "params": {"k": 5}}  # fmt: skip
    response = _post(api, body)
    assert response.status_code == 200, response.text
    only_unknown, no_history, mixed, known, model_user = response.json()["predictions"]
    assert only_unknown["source"] == "popularity" and only_unknown["unknown_history"] == ["sku-1", "sku-2", "7"]
    assert only_unknown["item_ids"] == no_history["item_ids"] and "unknown_history" not in no_history
    assert mixed["source"] == "fold_in" and mixed["unknown_history"] == ["sku-9"]
    assert mixed["item_ids"] == known["item_ids"] and "unknown_history" not in known  # the unknown id changed nothing
    assert model_user["source"] == "model" and model_user["unknown_history"] == ["sku-3"]
    documented = api.get("/openapi.json").json()["components"]["schemas"]["Prediction"]
    assert "unknown_history" in documented["properties"] and "unknown_history" not in documented.get("required", [])


@pytest.mark.parametrize(
    "body, status, says",
    [
        ({"dataframe_records": [{"user_id": "u1"}], "params": {"k": 0}}, 400, "greater than or equal to 1"),
        ({"dataframe_records": [{"user_id": "u1"}], "params": {"k": -3}}, 400, "greater than or equal to 1"),
        ({"dataframe_records": [{"user_id": "u1", "k": 2**63}]}, 400, "less than or equal to 96"),
        ({"dataframe_records": [{"user_id": "u1"}], "params": {"k": 97}}, 400, "less than or equal to 96"),
        ({"dataframe_records": [{"user_id": "u1"}], "params": {"k": 5.5}}, 400, "params.k: Input should be a valid integer"),
        ({"dataframe_records": [{"user_id": "u1"}], "params": {"k": "5"}}, 400, "valid integer"),
        ({"dataframe_records": [{"user_id": None}]}, 400, "user_id"),
        ({"dataframe_split": {"columns": ["user_id"], "data": [[None]]}}, 400, "user_id"),
        ({"inputs": {"user_id": ["u1", "u2"], "k": [1]}}, 400, "one value per user_id"),
        ({"params": {"k": 3}}, 400, "body: send exactly one of"),  # was "body: Value error, send ..."
        ({"user_id": "u1", "k": 3}, 400, 'the body has no dataframe_records, dataframe_split, inputs, instances (got k, user_id): wrap the rows, e.g. {"dataframe_records"'),
        ({"dataframe_records": [{"user_id": f"u{i}"} for i in range(60)], "params": {"k": 10}}, 413, "limit"),
        # the pyfunc's similar-items rows (answered at /invocations by `mlflow models serve`)
        ({"dataframe_records": [{"item_id": "i3", "k": 3}]}, 400, 'this server answers at POST /similar: {"item_id"'),
        ({"inputs": {"item_id": ["i3", "i4"]}}, 400, "ask for similar items, which this server answers at POST /similar"),
        ({"dataframe_split": {"columns": ["item_id"], "data": [["i3"]]}}, 400, "POST /similar"),
    ],
)
def test_bad_requests_get_a_one_line_reason(api, body, status, says):
    assert says in _assert_one_line_error(_post(api, body), status)


def test_garbage_bodies_are_client_errors_never_500(api):
    deep = b"[" * 100_000 + b"]" * 100_000
    nested = json.dumps({"dataframe_records": [{"user_id": "u1", "history": [[[[["i1"]]]]]}]}).encode()
    too_deep = b'{"inputs": ' + b"[" * (MAX_JSON_DEPTH + 5) + b"]" * (MAX_JSON_DEPTH + 5) + b"}"
    for body in (deep, too_deep, nested, b"not json", b"\xff\xfe", b"[1, 2]", b"{}"):
        _assert_one_line_error(_post(api, body), 400)
    _assert_one_line_error(api.post("/invocations", content=b"user_id\nu1", headers={"Content-Type": "text/csv"}), 415)
    _assert_one_line_error(_post(api, b" " * (2 << 20)), 413)
    _assert_one_line_error(api.get("/nowhere"), 404)


def test_an_empty_body_is_called_empty():
    """`curl -d ''` got "invalid JSON: Expecting value at line 1 column 1", which does not say nothing was sent."""
    for body in (b"", b"  \n"):
        with pytest.raises(RequestError) as caught:
            parse_json(body, "application/json")
        assert caught.value.status == 400 and str(caught.value).startswith("the body is empty: send a JSON object")


def test_a_method_the_path_does_not_take_is_405_naming_the_allowed_ones(api):
    """The JSON error handler dropped Starlette's `Allow` header, which a 405 must carry (RFC 9110;
    schemathesis --checks all: "405 without required Allow header")."""
    for method, path, allowed in (("DELETE", "/health", "GET"), ("GET", "/invocations", "POST")):
        response = api.request(method, path)
        _assert_one_line_error(response, 405)
        assert allowed in response.headers.get("allow", "")


# ---------------------------------------------------------------------------------------------------
# The real command on 127.0.0.1: fuzzed, then stopped with SIGTERM.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(logged):
    MlflowClient(logged.uri, registry_uri=logged.uri).set_registered_model_alias(
        "recsys-wals", CHAMPION, logged.versions["wals"]
    )
    port = _free_port()
    command = [sys.executable, "-m", "recsys.cli", "serve", "--model", "recsys-wals", "--port", str(port),
               "--max-results", str(MAX_RESULTS), "--set", f"tracking.tracking_uri={logged.uri}"]  # fmt: skip
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    if not answers_ping(server, base, time.monotonic() + READY_TIMEOUT_S, "recsys serve"):
        pytest.fail(f"recsys serve exited with {server.returncode}: {server.stdout.read()[-2000:]}")
    yield server, base
    if server.poll() is None:
        server.kill()
        server.wait()


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_fuzzed_requests_never_break_the_server(served, mode):
    """Requests drawn from the server's own OpenAPI schema (valid ones, then ones that break it):
    never a 5xx, only documented status codes, bodies that match the documented schemas,
    schema-breaking requests refused with a 4xx and schema-valid ones answered (`{}` was
    schema-valid and refused before the schema said "exactly one of"; an unknown item on /similar
    is 404, a missing resource, not 400)."""
    _, base = served
    # 413 answers a schema-valid request over the documented rows x k limit (--max-results)
    accepted = ["2xx", "3xx", "401", "403", "404", "409", "413", "429"]
    config = schemathesis.config.SchemathesisConfig.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": accepted}}}
    )
    api = schemathesis.openapi.from_url(f"{base}/openapi.json", config=config)

    @given(case=api.as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def check(case):
        # The two columnar forms need columns of one length (dataframe_split: one value per column
        # in every row, typed by the column's position; inputs as columns: one k / history per
        # user_id): JSON Schema cannot say that, so their schema-valid bodies may still be refused
        # (their parsing has its own cases in test_bad_requests_get_a_one_line_reason).
        body = case.body if isinstance(case.body, dict) else {}
        columnar = body.get("dataframe_split") is not None or isinstance(body.get("inputs"), dict)
        assume(mode is GenerationMode.NEGATIVE or not columnar)
        case.call_and_validate(
            checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                    response_schema_conformance, negative_data_rejection, positive_data_acceptance],
            timeout=30,
        )  # fmt: skip

    check()


@pytest.mark.slow
def test_rest_scores_are_the_in_process_scores_and_popularity_counts_come_back_exact(served, logged, planted_split):
    """Over `recsys serve` on 127.0.0.1: a model user's list is `model.recommend`'s, item for item,
    its scores within float32 rounding of a dot product (rtol 1e-6; float32 widened to a JSON
    float64 is exact); an unknown user's popularity fallback reports the training counts exactly
    (they read 46.00001144 for a count of 46 tied with three others: the tie-break's float32 steps)."""
    from recsys.data.matrix import item_popularity

    _, base = served
    body = json.dumps({"dataframe_records": [{"user_id": "u1"}, {"user_id": "u2"}, {"user_id": "stranger"}],
                       "params": {"k": 20}}).encode()  # fmt: skip
    request = urllib.request.Request(base + "/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        predictions = json.loads(response.read())["predictions"]
    assert [p["source"] for p in predictions] == ["model", "model", "popularity"]
    items, scores = logged.models["wals"].recommend([1, 2], k=20, exclude=planted_split.train)
    for row, prediction in enumerate(predictions[:2]):
        assert prediction["item_ids"] == [f"i{i}" for i in items[row]]
        np.testing.assert_allclose(prediction["scores"], scores[row], rtol=1e-6, atol=0)
    counts = np.bincount(planted_split.train.indices, minlength=planted_split.n_items)
    served_items = [int(i[1:]) for i in predictions[2]["item_ids"]]
    assert predictions[2]["scores"] == counts[served_items].astype(float).tolist()  # exact
    popularity = item_popularity(planted_split.train)
    ids = np.asarray(planted_split.item_ids).astype(str)
    assert served_items == np.lexsort((ids, -popularity))[:20].tolist()  # ties still by the raw id's text
    assert len(set(predictions[2]["scores"])) < 20  # the premise: the first 20 hold ties


def test_a_popularity_models_rest_scores_are_its_counts_exactly(logged, planted_data, planted_split):
    """A popularity model fitted as the pipeline fits it (with the raw item ids, so ties are broken
    by their text) and logged: `recsys serve`'s app answers its users and fold-in users with the
    counts themselves, identical to `recommend` in process, and ties in the raw ids' text order."""
    from recsys.models.popularity import PopularityConfig
    from recsys.tracking.server import build_app, load_index

    from .conftest import log_one

    run_id = log_one(logged, PopularityConfig(name="popularity"), planted_split, planted_data,
                     item_ids=planted_split.item_ids)  # fmt: skip
    api = TestClient(build_app(load_index(f"runs:/{run_id}/model", logged.uri), name="pop", max_results=MAX_RESULTS))
    body = {"dataframe_records": [{"user_id": "u1"}, {"user_id": "newcomer", "history": ["i3", "i7"]}],
            "params": {"k": 20}}  # fmt: skip
    response = _post(api, body)
    assert response.status_code == 200, response.text
    user, newcomer = response.json()["predictions"]
    assert (user["source"], newcomer["source"]) == ("model", "fold_in")
    counts = np.bincount(planted_split.train.indices, minlength=planted_split.n_items).astype(np.float32)
    ids = np.asarray(planted_split.item_ids).astype(str)
    by_text = np.lexsort((ids, -counts))
    seen = set(planted_split.train[1].indices.tolist())  # what serving masks: the split has no validation part
    want = [int(i) for i in by_text if i not in seen][:20]
    assert user["item_ids"] == [f"i{i}" for i in want]
    assert user["scores"] == counts[want].astype(float).tolist()  # exact
    want_new = [int(i) for i in by_text if i not in (3, 7)][:20]
    assert newcomer["item_ids"] == [f"i{i}" for i in want_new]
    assert newcomer["scores"] == counts[want_new].astype(float).tolist()


def test_the_served_models_download_lives_with_the_server_and_a_killed_servers_is_removed(logged, tmp_path):
    """MLflow downloads a model to a temporary directory it never removes: each `recsys serve`
    start left a copy of the model in $TMPDIR. The download is kept while the process serves (the
    saved model is read on the first fold-in) and removed when it exits; a server killed with -9
    leaves it to the next start."""
    from recsys.tracking.server import SERVE_DOWNLOADS

    killed = tmp_path / f"{SERVE_DOWNLOADS}-999999999-abcd"
    (killed / "model").mkdir(parents=True)
    serving = (
        "import os, sys, tempfile\n"
        "from recsys.tracking.server import load_index\n"
        "index = load_index(sys.argv[1], sys.argv[2])\n"
        "assert index.model is not None\n"  # read lazily from the download
        "print(*os.listdir(tempfile.gettempdir()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", serving, f"runs:/{logged.runs['wals']}/model", logged.uri],
        capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (while_serving,) = done.stdout.split()  # the killed server's download is gone, its own is there
    assert while_serving.startswith(f"{SERVE_DOWNLOADS}-") and while_serving != killed.name
    assert list(tmp_path.iterdir()) == []  # removed at exit


@pytest.mark.slow
def test_sigterm_stops_the_server_and_leaves_nothing_running(served):
    server, base = served
    body = json.dumps({"inputs": {"user_id": ["u1", "u2"]}, "params": {"k": 3}}).encode()
    request = urllib.request.Request(base + "/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert len(json.loads(response.read())["predictions"]) == 2
    children = _children(server.pid)
    import tempfile

    from recsys.tracking.server import SERVE_DOWNLOADS

    download = list(Path(tempfile.gettempdir()).glob(f"{SERVE_DOWNLOADS}-{server.pid}-*"))
    assert len(download) == 1  # the served model, read lazily
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal
    assert not download[0].exists()  # SIGTERM's default action runs no exit hook: serve removes it first
    for pid in children:
        assert not _alive(pid), f"child {pid} outlived recsys serve"
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(base + "/ping", timeout=2)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"

