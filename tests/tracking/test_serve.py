"""End to end: `mlflow models serve` on models:/NAME@champion answers what the pyfunc answers."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from mlflow import MlflowClient

from recsys.cli.tracking_cmds import serve_command, venv_env
from recsys.tracking.registry import CHAMPION

READY_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_served_champion_answers_top_k(logged, planted_split):
    client = MlflowClient(logged.uri, registry_uri=logged.uri)
    client.set_registered_model_alias("recsys-wals", CHAMPION, logged.versions["wals"])
    port = _free_port()
    server = subprocess.Popen(
        serve_command("models:/recsys-wals@champion", port),
        env=venv_env(logged.uri), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"mlflow models serve exited with {server.returncode}: {server.stderr.read()[-2000:]}"
                )
            try:
                if _get(f"http://127.0.0.1:{port}/ping") == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_TIMEOUT_S} s")
            time.sleep(0.5)
        body = {
            "dataframe_records": [
                {"user_id": "u1", "history": []},
                {"user_id": "newcomer", "history": ["i3", "i7", "i11"]},
                {"user_id": "stranger", "history": []},
            ],
            "params": {"k": 5},
        }
        answer = _post(f"http://127.0.0.1:{port}/invocations", body)["predictions"]
        model = logged.models["wals"]
        from recsys.evaluation.ranking import topk

        expected, _ = topk(model.user_factors[[1]], model.item_factors, 5, exclude=planted_split.train[[1]])
        assert answer[0]["user_id"] == "u1" and answer[0]["source"] == "model"
        assert answer[0]["item_ids"] == [f"i{i}" for i in expected[0]]
        assert [a["source"] for a in answer] == ["model", "fold_in", "popularity"]
        assert all(len(a["item_ids"]) == len(a["scores"]) == 5 for a in answer)
        assert not {"i3", "i7", "i11"} & set(answer[1]["item_ids"])
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
