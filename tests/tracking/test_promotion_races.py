"""Two promotions at once never leave the worse model as champion (issue 20, item 2).

WALS is far better than popularity on the planted data (tests/tracking/test_registry.py), so the
right champion after promoting both, in any order, is WALS. The tests take the store from the
`tracking_uri` fixture (through `logged`), so they can run against any tracking backend.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import pytest
from mlflow import MlflowClient

from recsys.config import PromotionConfig
from recsys.tracking import registry
from recsys.tracking.registry import CHALLENGER, CHAMPION, alias_version, promote, register_run_model


@pytest.fixture()
def client(logged) -> MlflowClient:
    return MlflowClient(logged.uri, registry_uri=logged.uri)


def test_two_concurrent_promotions_keep_the_better_champion(logged, client, monkeypatch):
    """Both promoters read the champion before either sets it, unless the registry line is
    locked: registering is slowed (as on a busy server) so the two reads surely overlap, and the
    worse challenger is the slower one, so without the lock its "no champion yet" lands last."""
    cfg = PromotionConfig(registered_model=f"race-{uuid.uuid4().hex[:8]}")
    pop, wals = logged.runs["popularity"], logged.runs["wals"]
    delays = {wals: 0.4, pop: 1.2}
    real_register = registry.register_run_model

    def slow_register(mlflow_client, name, run_id, tags=None):
        version = real_register(mlflow_client, name, run_id, tags)
        time.sleep(delays[run_id])
        return version

    monkeypatch.setattr(registry, "register_run_model", slow_register)
    decisions, errors = {}, []

    def run(run_id: str) -> None:
        try:
            decisions[run_id] = promote(MlflowClient(logged.uri, registry_uri=logged.uri), cfg, run_id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in (wals, pop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert alias_version(client, cfg.registered_model, CHAMPION).run_id == wals
    # at most one of them can have been promoted over "no champion"; the other was compared
    reasons = sorted(d.reason.split(":")[0] for d in decisions.values())
    assert reasons in (["kept champion", "promoted"], ["promoted", "promoted"])
    if reasons == ["promoted", "promoted"]:  # popularity first, then WALS beat it by the rule
        assert decisions[wals].reason.startswith("promoted: challenger is better")


def test_a_champion_moved_by_another_machine_is_compared_before_the_alias_moves(logged, client, monkeypatch):
    """No shared lock (another machine): while popularity's promotion runs, WALS becomes champion
    elsewhere. The alias must not be overwritten with the decision taken against the old state."""
    name = f"cas-{uuid.uuid4().hex[:8]}"
    cfg = PromotionConfig(registered_model=name)
    pop, wals = logged.runs["popularity"], logged.runs["wals"]
    elsewhere = register_run_model(client, name, wals)  # registered by the other machine
    monkeypatch.setattr(registry, "registry_lock", lambda *a, **k: contextlib.nullcontext(), raising=False)
    real_set = MlflowClient.set_registered_model_alias
    moved = []

    def set_alias(self, model, alias, version):
        real_set(self, model, alias, version)
        if alias == CHALLENGER and not moved:  # our challenger is in; the other machine promotes now
            moved.append(True)
            real_set(self, model, CHAMPION, elsewhere.version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", set_alias)
    decision = promote(client, cfg, pop)
    assert moved
    assert alias_version(client, name, CHAMPION).run_id == wals
    assert not decision.promoted and decision.reason.startswith("kept champion")
    assert decision.compared_run_id == decision.champion_run_id == wals
