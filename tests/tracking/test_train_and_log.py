"""`recsys run`'s model step (`pipelines.run.train_and_log`) in the session's real SQLite store:
each epoch's metrics reach the model's run while it trains, not only in the summary afterwards."""

from __future__ import annotations

import os
import time

from mlflow import MlflowClient

import pipelines.run as run_step
from recsys.config import EvaluationConfig, FoldingConfig, RunConfig, SplitConfig, TrackingConfig
from recsys.models.wals import WALSConfig
from recsys.tracking.runs import Tracker


def _wals_run(uri: str, experiment: str, iterations: int, bootstrap_samples: int) -> tuple[WALSConfig, RunConfig]:
    """A tiny WALS and a run config logging to `experiment` of the session's store."""
    wals = WALSConfig(name="wals", factors=4, iterations=iterations, threads=1, regularization=0.1, alpha=5.0)
    cfg = RunConfig(
        name=f"{experiment}-test", models=[wals], split=SplitConfig(protocol="random", test_fraction=0.25, seed=0),
        evaluation=EvaluationConfig(ks=[20], bootstrap_samples=bootstrap_samples),
        tracking=TrackingConfig(tracking_uri=uri, experiment=experiment, register_models=False),
    )  # fmt: skip
    return wals, cfg


def test_each_epoch_reaches_the_model_run_while_it_trains(shared_mlflow_uri, planted_data, planted_split, monkeypatch):
    """The per-epoch callback is what shows a long fit's curve in the MLflow UI as it goes (and what
    a killed run leaves behind). Without it the tracker logs the history only with the results, after
    evaluation, so the store is read at the moment evaluation starts: three iterations, three
    entries, the same ones the finished run holds (nothing logged twice)."""
    wals, cfg = _wals_run(shared_mlflow_uri, "streaming", iterations=3, bootstrap_samples=20)
    tracker = Tracker(cfg.tracking, cfg)
    parent = tracker.start_parent(data=planted_data, split=planted_split)
    client = MlflowClient(shared_mlflow_uri)
    experiment = client.get_run(parent).info.experiment_id
    at_evaluation: list = []
    evaluate = run_step.evaluate_model

    def evaluate_once_the_store_was_read(model, split, run_cfg):
        [child] = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
        at_evaluation.extend(client.get_metric_history(child.info.run_id, "loss"))
        return evaluate(model, split, run_cfg)

    monkeypatch.setattr(run_step, "evaluate_model", evaluate_once_the_store_was_read)
    outcome = run_step.train_and_log(wals, planted_split, cfg, tracker, parent, threads=1, log=lambda _: None)
    tracker.end(parent)
    assert outcome.status == "ok"
    assert len(at_evaluation) == 3 and len({m.step for m in at_evaluation}) == 3
    final = client.get_metric_history(outcome.mlflow_run_id, "loss")
    assert sorted((m.step, m.value) for m in final) == sorted((m.step, m.value) for m in at_evaluation)  # as stored


def test_a_model_whose_turn_comes_after_an_interrupt_opens_no_run(shared_mlflow_uri, planted_split):
    """After Ctrl-C, Prefect's thread pool still started the model tasks queued behind the running
    ones: each opened an MLflow run, trained nothing and closed it KILLED, so the UI listed models
    that never ran. A model whose turn comes after the interrupt now stops before opening a run."""
    import uuid

    import pytest

    from recsys import interrupt

    wals, cfg = _wals_run(shared_mlflow_uri, f"queued-{uuid.uuid4().hex[:8]}", iterations=3, bootstrap_samples=20)
    tracker = Tracker(cfg.tracking, cfg)
    parent = tracker.start_parent()
    interrupt.request()  # Ctrl-C reached the flow while this model waited for a worker thread
    try:
        with pytest.raises(interrupt.Interrupted):
            run_step.train_and_log(wals, planted_split, cfg, tracker, parent, threads=1, log=lambda _: None)
    finally:
        interrupt.clear()
        tracker.end(parent, "KILLED")
    client = MlflowClient(shared_mlflow_uri)
    experiment = client.get_run(parent).info.experiment_id
    assert client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'") == []


def test_the_work_before_a_fit_counts_as_the_models_compute(shared_mlflow_uri, planted_data, planted_split, monkeypatch):
    """Libraries load on a model's first use (torch, implicit: a run starts without them), 1-2 s
    inside the model's task but outside its fit. The run's orchestration overhead counts only what
    no step measured, so that time must reach the model's compute (`setup_seconds`); without it a
    Prefect run reported ~10% overhead that was torch's import in `skip_reason` (stood in for here
    by a 0.3 s wait there)."""
    import time

    wals, cfg = _wals_run(shared_mlflow_uri, "setup", iterations=2, bootstrap_samples=0)
    tracker = Tracker(cfg.tracking, cfg)
    parent = tracker.start_parent(data=planted_data, split=planted_split)
    skip_reason = run_step.skip_reason  # the first to import the model's libraries

    def slow_to_load(*args, **kwargs):
        time.sleep(0.3)
        return skip_reason(*args, **kwargs)

    monkeypatch.setattr(run_step, "skip_reason", slow_to_load)
    outcome = run_step.train_and_log(wals, planted_split, cfg, tracker, parent, threads=1, log=lambda _: None)
    tracker.end(parent)
    assert outcome.setup_seconds >= 0.3
    parts = outcome.fit_seconds + outcome.setup_seconds + outcome.eval_seconds + outcome.log_seconds
    assert abs(outcome.compute_seconds - parts) < 1e-9


def test_a_ctrl_c_during_a_trained_models_close_leaves_its_run_finished(shared_mlflow_uri, planted_split, monkeypatch):
    """Ctrl-C landing exactly while a model that trained, evaluated and logged in full closes its run
    FINISHED: the close holds the signal back and delivers it as it returns, and the model step's
    interrupt handler then closed the same run again, KILLED. The finished model stays FINISHED (the
    interrupt still stops the command), and the parent, interrupted, is KILLED. The Ctrl-C is this
    process's own SIGINT at the close's fault point (`RECSYS_INTERRUPT_AT`)."""
    import signal
    import threading
    import uuid

    import pytest

    from recsys import faults, interrupt

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")
    wals, cfg = _wals_run(shared_mlflow_uri, f"closing-{uuid.uuid4().hex[:8]}", iterations=2, bootstrap_samples=5)
    tracker = Tracker(cfg.tracking, cfg)
    parent = tracker.start_parent()
    monkeypatch.setattr(faults, "_seen", {})  # counts per process: this test's first close is the model's
    monkeypatch.setenv(faults.INTERRUPT_ENV, "tracking.closing")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # an xdist worker may ignore it
    try:
        with pytest.raises(KeyboardInterrupt), run_step.parent_closed_on_error(tracker, parent):
            run_step.train_and_log(wals, planted_split, cfg, tracker, parent, threads=1, log=lambda _: None)
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupt.clear()
    client = MlflowClient(shared_mlflow_uri)
    [child] = client.search_runs(
        [client.get_run(parent).info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    assert child.info.status == "FINISHED"
    assert client.get_run(parent).info.status == "KILLED"


def test_a_two_tower_checkpointing_in_a_scheduled_run_trains_on_grown_data_and_resumes_a_rerun(
    planted_data, planted_split, tmp_path
):
    """A two-tower's `checkpoint_dir` is one training's resume point, and a checkpoint of other data
    is refused: the run after the first, on a log that had grown, failed the model (and every run
    after it, until someone deleted the directory; found by QA). `recsys run` keys it by the split:
    the next day's data trains afresh (the old day's directory removed), and a rerun on the same
    data (after a kill -9) resumes."""
    from recsys.data.split import split_digest
    from recsys.data.splits import split_data
    from recsys.models.two_tower import TwoTowerConfig
    from recsys.tracking.runs import NullTracker

    from .conftest import planted_interactions

    checkpoints = tmp_path / "checkpoints"
    tt = TwoTowerConfig(name="tt", dim=8, epochs=2, batch_size=512, num_negatives=8, threads=1, device="cpu",
                        quiet=True, checkpoint_dir=str(checkpoints))  # fmt: skip
    cfg = RunConfig(name="checkpoints-test", models=[tt], split=SplitConfig(protocol="random", test_fraction=0.25, seed=0),
                    evaluation=EvaluationConfig(ks=[20], bootstrap_samples=0), folding=FoldingConfig(enabled=False),
                    tracking=TrackingConfig(enabled=False))  # fmt: skip
    tracker = NullTracker()

    def run(split, model=tt):
        return run_step.train_and_log(model, split, cfg, tracker, None, threads=1, log=lambda _: None)

    def age(days: float) -> None:  # every checkpoint file as if written `days` ago
        for path in [checkpoints, *checkpoints.rglob("*")]:
            os.utime(path, (time.time() - days * 86400,) * 2)

    assert run(planted_split).status == "ok"
    age(2)
    next_day = split_data(planted_interactions(seed=1), cfg.split)
    assert run(next_day).resumed_from is None  # trained afresh on the new data
    assert run(next_day).resumed_from is not None  # the same data again: its checkpoint resumed
    (today,) = [p.name for p in checkpoints.iterdir() if p.is_dir()]  # the day-old directory of the old data is gone
    assert today.startswith(f"split-{split_digest(next_day)}-")
    assert [p.name for p in checkpoints.iterdir() if not p.is_dir()] == [f".{today}.lock"]  # and its lock
    # settings edited between two runs on the same data: trains afresh (it failed, the checkpoint
    # "belongs to a different config"), and yesterday's directory stays while it is fresh
    edited = run(next_day, tt.model_copy(update={"lr": tt.lr / 2}))
    assert edited.status == "ok" and edited.resumed_from is None
    assert len([p for p in checkpoints.iterdir() if p.is_dir()]) == 2


def test_a_students_checkpoint_directory_follows_its_teachers_settings(planted_split, tmp_path):
    """A tuned teacher whose settings changed (its champion warm start moved) made the student's
    checkpoint of the same split and settings 'a different config' and the student failed: the
    directory is keyed by the teacher's settings too; the same teacher keeps the same directory."""
    from pipelines.train import per_split_checkpoints
    from recsys.models.two_tower import TwoTowerConfig
    from recsys.models.wals import WALS

    student = TwoTowerConfig(name="kd", dim=8, checkpoint_dir=str(tmp_path / "ck"))
    one, other = WALS(WALSConfig(name="wals", factors=8)), WALS(WALSConfig(name="wals", factors=16))
    first = per_split_checkpoints(student, planted_split, one).checkpoint_dir
    assert per_split_checkpoints(student, planted_split, one).checkpoint_dir == first
    assert per_split_checkpoints(student, planted_split, other).checkpoint_dir != first
    assert per_split_checkpoints(student, planted_split, None).checkpoint_dir != first


def test_a_students_checkpoint_in_a_run_follows_a_retuned_teacher(planted_data, planted_split, tmp_path):
    """`recsys run` hands the student's teacher to the checkpoint keying (pipelines/run.py): a teacher
    refitted with other settings between two runs on the same data made the student's checkpoint
    'a different config or training data', and the student failed."""
    from recsys.distill import DistillConfig
    from recsys.models.two_tower import TwoTowerConfig
    from recsys.models.wals import WALS
    from recsys.tracking.runs import NullTracker

    teachers = tmp_path / "teachers"
    student = TwoTowerConfig(name="kd", dim=8, epochs=1, batch_size=512, num_negatives=8, threads=1, device="cpu",
                             quiet=True, checkpoint_dir=str(tmp_path / "ck"), distill=DistillConfig(teacher="wals"))  # fmt: skip
    cfg = RunConfig(name="kd-test", models=[WALSConfig(name="wals", factors=8), student], split=SplitConfig(protocol="random", test_fraction=0.25, seed=0),
                    evaluation=EvaluationConfig(ks=[20], bootstrap_samples=0), folding=FoldingConfig(enabled=False),
                    tracking=TrackingConfig(enabled=False))  # fmt: skip
    outcomes = []
    for factors in (8, 16):  # the teacher re-tuned between the two runs
        WALS(WALSConfig(name="wals", factors=factors, iterations=2)).fit(planted_split.train).save(teachers / "wals")
        outcomes.append(run_step.train_and_log(student, planted_split, cfg, NullTracker(), None, threads=1,
                                               log=lambda _: None, teachers_dir=teachers))  # fmt: skip
    assert [o.status for o in outcomes] == ["ok", "ok"]
    assert outcomes[1].resumed_from is None  # trained afresh for the new teacher


def test_a_member_whose_evaluation_failed_is_not_handed_to_its_blend(planted_split, tmp_path, monkeypatch):
    """A blend member (or distillation teacher) was saved for the models that need it as soon as it
    was fitted, before its evaluation and logging: one that then failed was reported failed, and
    the blend still used it without a word (the README says a member that did not train is left
    out with a warning). It is handed over only once its run finished."""
    import pytest

    from recsys.models.blend_config import BlendConfig
    from recsys.models.ease_config import EASEConfig
    from recsys.tracking.runs import NullTracker

    teachers = tmp_path / "teachers"
    ease, wals = EASEConfig(name="ease"), WALSConfig(name="wals", factors=4, iterations=2, threads=1)
    blend = BlendConfig(name="blend", members=["ease", "wals"])
    cfg = RunConfig(name="member-test", models=[ease, wals, blend], split=SplitConfig(protocol="random", test_fraction=0.25, seed=0),
                    evaluation=EvaluationConfig(ks=[20], bootstrap_samples=0), folding=FoldingConfig(enabled=False),
                    tracking=TrackingConfig(enabled=False))  # fmt: skip
    evaluate = run_step.evaluate_model

    def wals_evaluation_fails(model, split, run_cfg):
        if model.config.name == "wals":
            raise ValueError("evaluation failed")
        return evaluate(model, split, run_cfg)

    monkeypatch.setattr(run_step, "evaluate_model", wals_evaluation_fails)
    assert run_step.train_and_log(ease, planted_split, cfg, NullTracker(), None, threads=1, log=lambda _: None,
                                  teachers_dir=teachers).status == "ok"  # fmt: skip
    with pytest.raises(run_step.ModelFailed, match="evaluation failed"):
        run_step.train_and_log(wals, planted_split, cfg, NullTracker(), None, threads=1, log=lambda _: None,
                               teachers_dir=teachers)  # fmt: skip
    assert sorted(p.name for p in teachers.iterdir() if p.is_dir()) == ["ease"]
    said: list[str] = []
    outcome = run_step.train_and_log(blend, planted_split, cfg, NullTracker(), None, threads=1, log=said.append,
                                     teachers_dir=teachers)  # fmt: skip
    assert outcome.status == "skipped" and "wals" in outcome.error, outcome  # one member left: nothing to blend
