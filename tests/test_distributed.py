"""Data-parallel two-tower training and evaluation: 2 gloo processes on 127.0.0.1 against 1 process.

The claim under test: with per-rank batch B, W ranks train exactly like one process with batch W*B
(the loss over the gathered global batch is the one-process loss, and DDP's averaged gradient is its
gradient). So per-epoch losses must agree to float rounding and the final recall@10 must be equal.
Tolerance: 1e-4 relative on every epoch's loss (observed differences are ~1e-7: summation order of
the per-rank shares differs from one matmul over the whole batch, and Adam carries it forward).

One `torch.multiprocessing` spawn (a free port from binding to 0) does all the 2-process work for the
module; the one-process references run in the test process. The ranks run with torch's pickling
collective disabled and report the sockets they listen on: only 127.0.0.1 (issue 20, item 9).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.multiprocessing as mp
from cluster_picks import cluster_picks

from recsys import distributed
from recsys.config import EvaluationConfig
from recsys.data.split import EvalSet, Split
from recsys.errors import ConfigError, ModelError
from recsys.evaluation.evaluate import evaluate
from recsys.models.base import Recommender
from recsys.models.two_tower import TwoTower, TwoTowerConfig
from recsys.training import gather_negatives, shard_batches, steps_per_epoch

WORLD = 2
PER_RANK_BATCH = 32
LOSS_RTOL = 1e-4
CFG = TwoTowerConfig(
    name="ddp", dim=8, num_negatives=12, batch_size=PER_RANK_BATCH, epochs=4, lr=0.05, seed=3,
    threads=1, device="cpu", quiet=True, eval_every=0,
)  # fmt: skip
CASES: dict[str, dict[str, Any]] = {
    # in-batch positives gathered across ranks + shared uniform draws, logQ, accidental hits, learned T;
    # a history user tower (each rank pools its users' rows, target left out)
    "mixed_shared": {"sampler": "mixed", "loss": "sampled_softmax", "learn_temperature": True,
                     "user_input": "history"},
    # per-example negatives: each rank keeps its rows of the global draw; clipped gradients
    "uniform_per_example_bce": {"sampler": "uniform", "shared_negatives": False, "loss": "bce", "grad_clip": 1.0},
    # pure in-batch with no accidental-hit removal: only the (global) diagonal is masked
    "in_batch_diagonal": {"sampler": "in_batch", "loss": "infonce", "remove_accidental_hits": False},
    # a sequence user tower: ranks split the global batch of windows, rows = their windows' targets
    # (uneven: 81 windows = 64 + 17, shared 9 / 8); no dropout, whose masks each rank would draw alone;
    # temperature 0.1, at which the tolerances below were set (`sequence_all_t005` checks the sequence
    # default 0.05, which doubles the logits and with them the float drift between the ranks and one process)
    "sequence": {"user_input": "sequence", "sequence_length": 4, "sequence_dropout": 0.0, "sampler": "mixed",
                 "temperature": 0.1},
    # the sequence tower's default full softmax: the whole catalogue on every rank, each row's own
    # positive masked by the rank's rows even without accidental-hit removal
    "sequence_all": {"user_input": "sequence", "sequence_length": 4, "sequence_dropout": 0.0, "sampler": "all",
                     "remove_accidental_hits": False, "temperature": 0.1},
    # the same at the sequence tower's default temperature, 0.05 (the same tolerances hold; the doubled
    # logits take half the step size to learn the planted clusters on this tiny set)
    "sequence_all_t005": {"user_input": "sequence", "sequence_length": 4, "sequence_dropout": 0.0,
                          "sampler": "all", "remove_accidental_hits": False, "temperature": 0.05, "lr": 0.02},
}  # fmt: skip
EVAL = EvaluationConfig(ks=[5, 10], metrics=["recall", "ndcg", "hit_rate", "coverage"], bootstrap_samples=50)


@dataclass(frozen=True)
class Planted:
    train: sp.csr_matrix
    test: sp.csr_matrix
    times: sp.csr_matrix  # the order each user picked their items in (random): what a sequence tower reads

    def test_set(self) -> EvalSet:
        return EvalSet(truth=self.test, exclude=self.train)


def planted() -> Planted:
    """81 users x 48 items in 4 clusters, 7 items of their cluster each (2 held out): 405 training
    interactions, so the last global batch (405 = 6 * 64 + 21) splits unevenly, 11 / 10."""
    n_users, n_items, per_user = 81, 48, 7
    users, items, is_test = cluster_picks(n_users, n_items, n_clusters=4, per_user=per_user)

    def csr(mask: np.ndarray, values: np.ndarray | None = None) -> sp.csr_matrix:
        data = np.ones(mask.sum(), dtype=np.float32) if values is None else values[mask]
        return sp.csr_matrix((data, (users[mask], items[mask])), shape=(n_users, n_items))

    order = np.tile(np.arange(1, per_user + 1, dtype=np.float64), n_users)
    return Planted(csr(~is_test), csr(is_test), csr(~is_test, order))


def ddp_split(seed: int = 0) -> Split:
    """The planted data as a split with the meta a real one carries (its digest reads them)."""
    data = planted()
    split = Split(protocol="random", train=data.train, test=data.test)
    split.meta = {"protocol": "random", "seed": seed, "test_fraction": 0.2, "fingerprint": "planted-ddp",
                  "rows": {"train": int(data.train.nnz), "test": int(data.test.nnz)}}  # fmt: skip
    return split


def recall_at_10(model: Recommender, data: Planted) -> float:
    popularity = np.bincount(data.train.indices, minlength=data.train.shape[1]).astype(np.float64)
    cfg = EvaluationConfig(ks=[10], metrics=["recall"], bootstrap_samples=0)
    return float(evaluate(model, data.test_set(), cfg, item_popularity=popularity).summary["recall@10"])


# ----------------------------------------------------------------------------- the 2-process side
def _no_pickles(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a rank called all_gather_object: it unpickles what other processes send")


def listening_addresses() -> list[str]:
    """The IP addresses this process accepts TCP connections on."""
    import psutil

    return sorted(
        {c.laddr.ip for c in psutil.Process().net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    )


def gloo_threads() -> list[str] | None:
    """Names of this process's gloo threads (its worker and socket-loop threads); None off Linux."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    names = []
    for task in tasks.iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # a thread that ended meanwhile
            continue
    return sorted(name for name in names if "gloo" in name)


def _worker(rank: int, port: int, out: str, eval_model: str) -> None:
    """One rank: train every case, evaluate a saved model sharded, write a checkpoint to resume."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.all_gather_object = _no_pickles  # type: ignore[assignment]
    distributed.init_process_group("gloo", rank=rank, world_size=WORLD, master_port=port)
    try:
        data = planted()
        report: dict[str, Any] = {"rank": rank, "world": distributed.world_size(), "cases": {}}
        report["listening"] = listening_addresses()  # the store (rank 0) and gloo's pairs are up
        for name, overrides in CASES.items():
            model = TwoTower(CFG.model_copy(update=overrides)).fit(data.train, times=data.times)
            report["cases"][name] = {
                "losses": [h["loss"] for h in model.history],
                "recall@10": recall_at_10(model, data),
                "item_factors": model.item_factors.tolist(),
            }
        model = Recommender.load(eval_model)
        popularity = np.bincount(data.train.indices, minlength=data.train.shape[1]).astype(np.float64)
        result = distributed.evaluate_distributed(model, data.test_set(), EVAL, item_popularity=popularity)
        report["eval"] = {
            "summary": result.summary,
            "ci": {k: list(v) for k, v in result.ci.items()},
            "per_user": result.per_user.to_dict(as_series=False),
            "topk": result.topk.items.tolist(),
            "evaluated": result.n_users_evaluated,
            "skipped": result.n_users_skipped,
        }
        resume_cfg = CFG.model_copy(
            update={**CASES["mixed_shared"], "epochs": 2, "checkpoint_dir": f"{out}/ckpt"}
        )
        TwoTower(resume_cfg).fit(data.train)
        # last: `recsys train --nproc`'s entry point, which leaves the group when it is done
        distributed.train_main(distributed.TrainArgs(Path(out, "split"), Path(out, "model.json"), Path(out, "trained"), None))
        report["gloo_threads_after_leaving"] = gloo_threads()
        Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        distributed.destroy_process_group()


def run_ranks(out: Path) -> None:
    """All the 2-process work: the model the ranks evaluate, then one spawn of WORLD ranks."""
    data = planted()
    eval_model = TwoTower(CFG.model_copy(update={"batch_size": WORLD * PER_RANK_BATCH})).fit(data.train)
    eval_model.save(out / "eval-model")
    distributed.save_split(ddp_split(), out / "split")  # what `recsys train --nproc` hands its ranks
    (out / "model.json").write_text(CFG.model_copy(update={"epochs": 1}).model_dump_json())
    mp.spawn(
        _worker, args=(distributed.free_port(), str(out), str(out / "eval-model")), nprocs=WORLD, join=True
    )


RUN_RANKS = "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); " \
    "import test_distributed; test_distributed.run_ranks(Path(sys.argv[2]))"  # fmt: skip
_background: tuple[subprocess.Popen, Path] | None = None


def start_in_background(items: list[pytest.Item]) -> None:
    """Called as the session's first test starts, with this module's selected tests
    (tests/conftest.py): when one of them needs `two_ranks`, `run_ranks` starts in a process of its
    own at nice +10, so its ~15 s of work fill the CPU the tests before this module leave idle
    instead of slowing them. Its folder is in the session's pytest temp folder, as the fixture's
    in-process one is: pytest removes it with that folder, also after a session killed with -9 (in
    the machine's temp dir, as `recsys-test-ddp-*`, nobody claimed or reaped it)."""
    global _background
    wanted = [item for item in items if "two_ranks" in getattr(item, "fixturenames", ())]
    if not wanted:
        return
    out = wanted[0].config._tmp_path_factory.mktemp("ddp")
    with open(out / "ranks.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", RUN_RANKS, str(Path(__file__).parent), str(out)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=lambda: os.nice(10),
        )  # fmt: skip
    _background = (process, out)
    atexit.register(_stop_background)


def _stop_background() -> None:
    """At exit: the ranks' directory goes, and so do the ranks of a session stopped before them."""
    if _background is not None:
        process, out = _background
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the spawned ranks too
            process.wait()
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Iterator[tuple[dict[str, Any], dict[str, Any], Path]]:
    """Both ranks' reports and the checkpoint directory they wrote (by the process started at
    collection, or here when none was)."""
    if _background is None:
        out = tmp_path_factory.mktemp("ddp")
        run_ranks(out)
    else:
        process, out = _background
        assert process.wait(timeout=600) == 0, (out / "ranks.log").read_text()[-4000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    yield reports[0], reports[1], out


def one_process(overrides: dict[str, Any], **more: Any) -> TwoTower:
    """The reference: one process with the doubled (global) batch."""
    return TwoTower(CFG.model_copy(update={**overrides, "batch_size": WORLD * PER_RANK_BATCH, **more}))


# ----------------------------------------------------------------------------- training parity
@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_gloo_ranks_train_like_one_process_with_the_doubled_batch(two_ranks, case):
    rank0, rank1, _ = two_ranks
    data = planted()
    reference = one_process(CASES[case]).fit(data.train, times=data.times)
    expected = [h["loss"] for h in reference.history]
    got = rank0["cases"][case]["losses"]
    assert len(got) == CFG.epochs and rank0["world"] == WORLD
    assert got == pytest.approx(expected, rel=LOSS_RTOL)
    assert got[-1] < got[0]  # it learned something, so the comparison is not between two flat lines
    assert rank0["cases"][case]["recall@10"] == recall_at_10(reference, data)
    assert rank0["cases"][case]["recall@10"] > 0.3  # planted clusters: far above random (10/48 ~ 0.2)
    np.testing.assert_allclose(
        np.asarray(rank0["cases"][case]["item_factors"]), reference.item_factors, atol=1e-4
    )
    # both ranks hold the same model and report the same (global) losses
    assert rank1["cases"][case]["losses"] == got
    assert rank1["cases"][case]["item_factors"] == rank0["cases"][case]["item_factors"]


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_in_one_process_with_the_same_global_batch(two_ranks):
    """Epochs 1-2 on 2 ranks (checkpointed by rank 0), 3-4 in one process: same as 4 epochs in one."""
    _, _, out = two_ranks
    data = planted()
    saved = json.loads((out / "ckpt" / "epoch-0002" / "state.json").read_text())
    assert saved["world_size"] == WORLD and saved["global_batch"] == WORLD * PER_RANK_BATCH
    resumed = one_process(CASES["mixed_shared"], checkpoint_dir=str(out / "ckpt")).fit(data.train)
    straight = one_process(CASES["mixed_shared"]).fit(data.train)
    assert [h["step"] for h in resumed.history] == [1, 2, 3, 4]
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in straight.history], rel=LOSS_RTOL
    )
    np.testing.assert_allclose(resumed.item_factors, straight.item_factors, atol=1e-4)


def test_resuming_with_another_global_batch_says_how_to_fix_it(tmp_path: Path):
    data = planted()
    TwoTower(CFG.model_copy(update={"epochs": 1, "checkpoint_dir": str(tmp_path)})).fit(data.train)
    other = TwoTower(CFG.model_copy(update={"epochs": 2, "batch_size": 48, "checkpoint_dir": str(tmp_path)}))
    with pytest.raises(
        ModelError, match=r"global batch of 32 \(1 rank\(s\)\); this run's is 48: set batch_size"
    ):
        other.fit(data.train)


def test_a_missing_checkpoint_named_by_latest_json_is_an_error(tmp_path: Path):
    data = planted()
    TwoTower(CFG.model_copy(update={"epochs": 1, "checkpoint_dir": str(tmp_path)})).fit(data.train)
    import shutil

    shutil.rmtree(tmp_path / "epoch-0001")
    again = TwoTower(CFG.model_copy(update={"epochs": 2, "checkpoint_dir": str(tmp_path)}))
    with pytest.raises(ModelError, match=r"latest.json names checkpoint 'epoch-0001', but .* is missing"):
        again.fit(data.train)


def test_a_resume_is_recorded_with_its_epoch_step_and_checkpoint(tmp_path: Path):
    data = planted()
    first = TwoTower(CFG.model_copy(update={"epochs": 1, "checkpoint_dir": str(tmp_path / "ckpt")}))
    assert first.fit(data.train).resumed_from is None
    resumed = TwoTower(CFG.model_copy(update={"epochs": 2, "checkpoint_dir": str(tmp_path / "ckpt")}))
    resumed.fit(data.train)
    steps = steps_per_epoch(data.train.nnz, PER_RANK_BATCH, 1)
    expected = {"epoch": 1, "step": steps, "checkpoint": str(tmp_path / "ckpt" / "epoch-0001")}
    assert resumed.resumed_from == expected
    assert Recommender.load(resumed.save(tmp_path / "model")).resumed_from == expected  # config.json


# ----------------------------------------------------------------------------- nothing listens beyond
@pytest.mark.slow
def test_a_data_parallel_model_records_the_split_it_trained_on(two_ranks):
    """The ranks of `recsys train --nproc` saved no split record (`recsys train` does), so `recsys
    evaluate` scored a DDP model on any split, test users it trained on included. Rank 0 records
    the split it trained on (read back from disk) as `recsys train` would, and evaluate checks it."""
    from recsys.cli.model_cmds import _check_trained_on
    from recsys.data.split import split_record

    path = two_ranks[2] / "trained"
    model = Recommender.load(path)
    assert model.trained_on == split_record(ddp_split()) and model.trained_on["fingerprint"] == "planted-ddp"
    _check_trained_on(model, ddp_split(), path)  # the split it trained on: accepted
    with pytest.raises(ConfigError, match="trained on another split"):
        _check_trained_on(model, ddp_split(seed=7), path)


def test_ranks_listen_on_the_loopback_only(two_ranks):
    rank0, rank1, _ = two_ranks
    assert "127.0.0.1" in rank0["listening"]  # the rendezvous store rank 0 hosts
    for report in (rank0, rank1):
        assert set(report["listening"]) <= {"127.0.0.1"}, report["listening"]


LAUNCHED_RANK = """
import json, os, sys, time
import psutil
from recsys import distributed

def listening_addresses():
    return sorted({c.laddr.ip for c in psutil.Process().net_connections("tcp") if c.status == psutil.CONN_LISTEN})

distributed.init_process_group("gloo")
rank = distributed.rank()
sizes = distributed.all_gather_sizes(rank + 5)
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as fh:
    json.dump({"sizes": sizes, "listening": listening_addresses(), "env": os.environ["MASTER_ADDR"]}, fh)
if rank == 1:
    # A failing rank, as recsys code fails: `distributed.process_group` leaves the group on the way
    # out (exiting with a live gloo group can abort in its destructor: exit -6 instead of 3).
    distributed.destroy_process_group()
    sys.exit(3)  # the launcher must stop the others and report this code
time.sleep(900)  # longer than the test may run: only the launcher stopping it ends this rank
open(os.path.join(sys.argv[1], "rank0-finished"), "w").close()
"""


@pytest.mark.slow
def test_launch_meets_on_127_0_0_1_and_stops_the_others_when_a_rank_fails(tmp_path: Path):
    import sys

    code = distributed.launch(WORLD, [sys.executable, "-c", LAUNCHED_RANK, str(tmp_path)])
    assert code == 3 and not (tmp_path / "rank0-finished").exists()  # rank 0 was stopped, not awaited
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for report in reports:
        assert report["sizes"] == [5, 6] and report["env"] == "127.0.0.1"
        assert set(report["listening"]) <= {"127.0.0.1"}, report["listening"]


def test_leaving_the_group_after_ddp_training_ends_its_gloo_threads(two_ranks):
    """After DDP training, `destroy_process_group` left the gloo group alive: torch's
    `torch.distributed.nn.functional`, imported by DDP while the group was up, holds it in its
    default arguments. Its worker threads then ran into the interpreter's exit, where one still
    letting go of the last collective's tensor was ended inside a C++ destructor: rank 1 aborted
    (SIGABRT, "terminate called without an active exception") while rank 0 was saving. Leaving
    the group (`train_main`, after DDP fits) must end its threads."""
    rank0, rank1, _ = two_ranks
    if rank0["gloo_threads_after_leaving"] is None:
        pytest.skip("thread names come from /proc (Linux)")
    assert rank0["gloo_threads_after_leaving"] == [] and rank1["gloo_threads_after_leaving"] == []


FAILING_RANK = """
import torch
import torch.distributed as dist
from recsys import distributed
from recsys.errors import ModelError

def body():
    with distributed.process_group("gloo"):  # the default timeout: 10 minutes
        if distributed.rank() == 1:
            dist.all_reduce(torch.ones(2), async_op=True)  # in flight: rank 0 never joins this one
            raise ModelError("rank 1 failed with a collective in flight")
        distributed.all_gather_sizes(5)  # rank 0 waits in another collective
    return 0

distributed.run_rank(body)
"""
LAUNCH_TWO = "import sys; from recsys import distributed; sys.exit(distributed.launch(2, [sys.executable, '-c', sys.argv[1]]))"


@pytest.mark.slow
def test_a_rank_failing_with_a_collective_in_flight_ends_the_job_with_its_error(tmp_path: Path):
    """One rank raises with a collective the others never join still in flight: leaving the group
    waited for it (the group timeout, 10 minutes) before the rank could exit and the launcher stop
    the others. It leaves at once, says which rank failed and why, and the job ends (the timeout
    below is far under the group's). Its error named rank 0 on every rank (read after leaving)."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", LAUNCH_TWO, FAILING_RANK], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert result.returncode != 0, result.stderr[-3000:]
    assert "error (rank 1): rank 1 failed with a collective in flight" in result.stderr, result.stderr[-3000:]
    assert "terminate called" not in result.stderr and "error (rank 0)" not in result.stderr


KILLED_LAUNCHER = """
import sys
from recsys import distributed
rank = "import os, sys, time; open(os.path.join(sys.argv[1], os.environ['RANK']), 'w').write(str(os.getpid())); time.sleep(300)"
distributed.launch(2, [sys.executable, "-c", rank, sys.argv[1]])
"""


def test_the_ranks_of_a_launcher_killed_with_sigkill_stop_with_it(tmp_path: Path):
    """kill -9 of `recsys train --nproc 2`: its ranks went on alone (training to the end, or waiting
    10 minutes for the dead rendezvous store)."""
    import subprocess
    import sys
    import time

    import psutil

    launcher = subprocess.Popen([sys.executable, "-c", KILLED_LAUNCHER, str(tmp_path)])
    deadline = time.monotonic() + 120
    while not all((tmp_path / r).is_file() and (tmp_path / r).read_text() for r in "01"):
        assert launcher.poll() is None and time.monotonic() < deadline, "the ranks never started"
        time.sleep(0.1)
    ranks = [psutil.Process(int((tmp_path / r).read_text())) for r in "01"]
    launcher.kill()
    launcher.wait()
    gone, alive = psutil.wait_procs(ranks, timeout=15)
    for rank in alive:  # the test's own leftovers, by pid
        rank.kill()
    assert not alive, "a rank outlived its launcher"


# ----------------------------------------------------------------------------- distributed evaluation
@pytest.mark.slow
def test_sharded_evaluation_equals_one_process_exactly(two_ranks, tmp_path_factory):
    rank0, rank1, out = two_ranks
    data = planted()
    model = Recommender.load(out / "eval-model")
    popularity = np.bincount(data.train.indices, minlength=data.train.shape[1]).astype(np.float64)
    single = evaluate(model, data.test_set(), EVAL, item_popularity=popularity)
    got = rank0["eval"]
    assert got["summary"] == {k: float(v) for k, v in single.summary.items()}  # exact, not approximate
    assert got["ci"] == {k: list(v) for k, v in single.ci.items()}
    assert got["per_user"] == single.per_user.to_dict(as_series=False)
    assert got["topk"] == single.topk.items.tolist()
    assert (got["evaluated"], got["skipped"]) == (single.n_users_evaluated, single.n_users_skipped)
    assert rank1["eval"] == got  # every rank ends with the whole result
    assert 0 < got["summary"]["coverage@10"] <= 1  # an aggregate that needs every rank's lists


# ----------------------------------------------------------------------------- pure helpers (no group)
def test_shares_are_contiguous_balanced_and_partition_each_global_batch():
    assert distributed.split_sizes(21, 2) == [11, 10]
    assert distributed.split_sizes(1, 2) == [1, 0]  # a rank may get nothing; it still steps
    assert [distributed.rank_share(21, r, 2) for r in range(2)] == [slice(0, 11), slice(11, 21)]
    assert distributed.rank_share(7) == slice(0, 7)
    shards = [
        list(shard_batches(405, PER_RANK_BATCH, torch.Generator().manual_seed(0), r, WORLD)) for r in range(2)
    ]
    assert [len(s) for s in shards] == [steps_per_epoch(405, PER_RANK_BATCH, WORLD)] * 2 == [7, 7]
    assert [b.numel() for b in shards[0]] == [32] * 6 + [11] and [b.numel() for b in shards[1]] == [
        32
    ] * 6 + [10]
    # rank 0's rows then rank 1's rows of each step are the one-process batch of 64, in order
    single = list(shard_batches(405, WORLD * PER_RANK_BATCH, torch.Generator().manual_seed(0)))
    for step, whole in enumerate(single):
        assert torch.equal(torch.cat([shards[0][step], shards[1][step]]), whole)


def test_global_mean_share_makes_the_ddp_average_the_global_mean():
    """W ranks' scaled losses, averaged as DDP averages gradients, equal the mean over all rows."""
    losses = torch.tensor([0.3, 1.2, 0.7, 2.0, 0.1])  # per-example losses of a global batch of 5
    sizes = distributed.split_sizes(5, 2)  # [3, 2]
    means = [losses[:3].mean(), losses[3:].mean()]
    scaled = [distributed.global_mean_share(m, n, 5, 2) for m, n in zip(means, sizes, strict=True)]
    assert float(sum(scaled) / 2) == pytest.approx(float(losses.mean()), rel=1e-6)
    assert distributed.global_mean_share(means[0], 5, 5, 1) is means[0]  # one process: untouched
    empty = distributed.global_mean_share(torch.tensor([]).mean(), 0, 5, 2)  # mean over nothing = nan
    assert float(empty) == 0.0


def test_outside_a_process_group_everything_is_the_one_process_case():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.all_gather_with_grad(x) is x and gather_negatives(x, 1) is x
    assert (distributed.rank(), distributed.world_size(), distributed.is_rank_zero()) == (0, 1, True)
    assert distributed.all_gather_sizes(3) == [3]
    rows = np.arange(6.0).reshape(3, 2)
    assert distributed.all_gather_rows(rows) is not None and np.array_equal(
        distributed.all_gather_rows(rows), rows
    )
    assert distributed.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0] and distributed.any_rank(False) is False
    assert distributed.wrap_ddp(torch.nn.Linear(2, 2), torch.device("cpu")).__class__ is torch.nn.Linear
    with pytest.raises(ModelError, match="no torch.distributed process group"):
        gather_negatives(x, 2)
    assert distributed.backend_for("cpu") == "gloo" and distributed.backend_for("cuda:0") == "nccl"


def test_a_rank_runs_this_module_under_the_same_interpreter():
    assert distributed.worker_command(["train", "--split", "s"], python="py") == [
        "py", "-m", "recsys.distributed", "train", "--split", "s",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="at least 1"):
        distributed.launch(0, ["true"])
    assert math.isfinite(distributed.free_port()) and distributed.free_port() > 0


def test_saved_split_round_trips_and_the_entry_point_parses_its_arguments(tmp_path: Path):
    from recsys.data.split import Split

    data = planted()
    split = Split(protocol="random", train=data.train, test=data.test)
    back = distributed.load_split(distributed.save_split(split, tmp_path / "split"))
    assert back.protocol == "random" and back.validation is None
    assert (back.train != data.train).nnz == 0 and (back.test != data.test).nnz == 0
    args = distributed.parse_args(["train", "--split", "s", "--model-config", "m.json", "--out", "o"])
    assert (args.split, args.model_config, args.out, args.mlflow_run_id) == (
        Path("s"),
        Path("m.json"),
        Path("o"),
        None,
    )


def test_the_handoff_of_a_killed_launcher_is_removed_by_the_next(tmp_path: Path, monkeypatch):
    """`recsys train --nproc` hands the split to its ranks in $TMPDIR/recsys-ddp-<pid>-*; a launcher
    killed with SIGKILL left it there for ever."""
    import os
    import tempfile

    from recsys.cli.model_cmds import DDP_HANDOFF
    from recsys.files import remove_dead_process_dirs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead, live = tmp_path / "recsys-ddp-999999999-abcd", tmp_path / f"recsys-ddp-{os.getpid()}-efgh"
    for handoff in (dead, live):
        (handoff / "split").mkdir(parents=True)
    remove_dead_process_dirs(DDP_HANDOFF)  # what the next launcher's process_temp_dir does first
    assert [p.name for p in tmp_path.iterdir()] == [live.name]



def test_the_background_ranks_folder_is_in_the_sessions_pytest_temp_folder(request, monkeypatch):
    """`start_in_background` wrote the ranks' work to `$TMPDIR/recsys-test-ddp-*`, removed only by
    its atexit handler: a session killed with -9 left it in the machine's temp dir for ever, neither
    claimed nor reaped. In the session's pytest temp folder it goes with that folder (pytest keeps
    the last 3 sessions' and removes older ones, a killed session's once its lock is 3 days old)."""
    import tempfile
    from types import SimpleNamespace

    started: list[list[str]] = []

    class NoProcess:  # records the command instead of starting the ranks
        def __init__(self, args: list[str], **_: Any) -> None:
            started.append(args)

    monkeypatch.setattr(subprocess, "Popen", NoProcess)
    monkeypatch.setattr(atexit, "register", lambda *_: None)
    monkeypatch.setattr(sys.modules[__name__], "_background", None)
    not_ranks = SimpleNamespace(fixturenames=("tmp_path",), config=request.config)
    start_in_background([not_ranks])  # no selected test needs the ranks: nothing starts
    assert started == [] and _background is None
    start_in_background([not_ranks, SimpleNamespace(fixturenames=("two_ranks",), config=request.config)])
    assert _background is not None
    out = _background[1]
    basetemp = request.config._tmp_path_factory.getbasetemp()
    assert out.is_dir() and out.parent == basetemp
    assert not out.name.startswith("recsys-test-ddp-") and out.parent != Path(tempfile.gettempdir())
    assert started == [[sys.executable, "-c", RUN_RANKS, str(Path(__file__).parent), str(out)]]


HANDOFF_SETS = [
    "data.synthetic.n_users=120", "data.synthetic.n_items=60", "data.synthetic.n_clusters=3",
    "data.synthetic.interactions_per_user=12", "data.min_user_interactions=2", "evaluation.ks=[5, 20]",
    "evaluation.bootstrap_samples=20", "tracking.enabled=false", "folding.enabled=false",
    'models=[{name="tt", kind="two_tower", dim=8, epochs=2, num_negatives=8, batch_size=64, quiet=true}, '
    '{name="pop", kind="popularity"}]',
]  # fmt: skip


def test_handoff_prints_the_torchrun_command_that_trains_the_model_on_other_machines(tmp_path: Path):
    """`recsys train --handoff DIR` writes what torchrun's ranks load (the split, the model's config)
    and prints the command for every node; that command, as printed (one node, two processes here),
    trains the model, and `recsys evaluate` accepts it as trained on the config's split."""
    import os
    import shlex
    import subprocess

    from typer.testing import CliRunner

    from recsys.cli import app
    from recsys.config import load_config
    from recsys.stack import free_port

    config = tmp_path / "run.toml"
    paths = [f'data.processed_dir="{tmp_path / "p"}"', f'data.raw_dir="{tmp_path / "raw"}"']
    config.write_text(load_config(None, [*HANDOFF_SETS, *paths]).to_toml())
    models, shared = tmp_path / "models", tmp_path / "shared"
    runner = CliRunner()
    both = runner.invoke(app, ["train", "--config", str(config), "--models", str(models), "--handoff", str(shared), "--nproc", "2"])
    assert both.exit_code == 2 and "pass one" in both.output
    assert not (tmp_path / "p").exists()  # refused before any work (no data ingested)
    result = runner.invoke(app, ["train", "--config", str(config), "--models", str(models), "--handoff", str(shared)])
    assert result.exit_code == 0, result.output
    assert f"recsys train --config {config} --models {models} --model pop" in result.output  # not data-parallel
    assert not (models / "tt").exists() and not (models / "pop").exists()  # --handoff itself trains nothing
    printed = [line for line in result.output.splitlines() if line.startswith("torchrun ")]
    assert len(printed) == 1 and (shared / "split").is_dir() and (shared / "tt.json").is_file()

    launcher = "torchrun --nnodes N --nproc-per-node P --rdzv-backend c10d --rdzv-endpoint HOST:29400"
    assert printed[0].startswith(launcher)
    one_node = f"--nnodes 1 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "torch.distributed.run", *shlex.split(one_node),
               *shlex.split(printed[0].removeprefix(launcher))]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # torchrun's torchelastic_* log folders: here, not in /tmp
    ranks = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    evaluated = runner.invoke(app, ["evaluate", "--config", str(config), "--models", str(models), "--model", "tt"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "tt" in evaluated.output
