"""Data-parallel two-tower training and evaluation: process groups, rank shares, gathers with autograd.

Why this module exists: a single-machine run must be the one-process case of the distributed one, not
a separate path. So the training loop (`recsys.training`) always asks this module for its rank, world
size, its share of each global batch and the gathered in-batch item vectors; with no process group
those answers are `0`, `1`, "all of it" and "the tensor itself", and nothing here touches
`torch.distributed`.

How one step is shared (world size W, per-rank batch B, global batch W*B):

- every rank draws the same permutation of the interactions (same seed), so every rank knows the whole
  global batch; rank r encodes only its contiguous, balanced share of it (`rank_share`);
- negatives are sampled for the *global* batch from an identically seeded generator on every rank, so
  shared sampled negatives and every `log q` (which for in-batch and mixed sampling depends on the
  global batch) are the same everywhere without communication; only the in-batch item *vectors*,
  computed on the rank that owns the example, are exchanged (`all_gather_with_grad`), and gradients
  flow back to the owning rank through the gather's backward (an all-reduce);
- each rank's loss is its local mean scaled by `W * local / global` (`global_mean_share`), so DDP's
  gradient average equals the gradient of the one-process loss over the global batch.

Backends: gloo on CPU, nccl on CUDA (`backend_for`). `recsys train --nproc N` starts N processes of
`python -m recsys.distributed train ...` with `launch`; `torchrun ... -m recsys.distributed train ...`
still works for several machines. Distributed evaluation (`evaluate_distributed`) shards users across
ranks and gathers the per-user metrics and top-k lists, so every rank ends with the one-process result.

Nothing listens beyond the rendezvous host. torch's TCPStore binds every interface whatever host it
is given, so the process hosting the store binds the socket itself (to 127.0.0.1 unless
`RECSYS_DDP_HOST` / `--rdzv-host` names another address) and hands it over (`master_listen_fd`);
gloo's and nccl's own sockets are pinned to that address's interface (GLOO_SOCKET_IFNAME /
NCCL_SOCKET_IFNAME, unless set). Ranks exchange only tensors (`all_gather_rows`), never pickled
objects, so a rank cannot make another one unpickle (run) anything.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from recsys.errors import ConfigError, ModelError
from recsys.exit_gc import no_collection_at_exit

if TYPE_CHECKING:
    from recsys.data.split import EvalSet, Split
    from recsys.evaluation.evaluate import EvaluationResult
    from recsys.models.base import FitCallback, Recommender
    from recsys.sections import EvaluationConfig

HOST_ENV = "RECSYS_DDP_HOST"
DEFAULT_HOST = "127.0.0.1"
STORE_ENV = "RECSYS_DDP_STORE"  # set by `launch`: the store is hosted by the launcher, ranks only connect
DEFAULT_TIMEOUT = timedelta(minutes=10)
"""How long a collective may wait for a slow rank before the group gives up (torch's default is 30 min)."""


# ===================================================================== rank / world
def is_distributed() -> bool:
    """True inside an initialised process group (torchrun or `init_process_group` in a spawned worker)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Rank on this machine (which GPU to use); torchrun sets LOCAL_RANK."""
    return int(os.environ.get("LOCAL_RANK", rank()))


def is_rank_zero() -> bool:
    """Rank 0 writes checkpoints, saved models and MLflow logs; the others only compute."""
    return rank() == 0


def backend_for(device: str | torch.device) -> str:
    """nccl for CUDA tensors, gloo for CPU (nccl cannot move CPU tensors, gloo is slow on GPUs)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: torch.device) -> torch.device:
    """The device this rank trains on: `cuda:LOCAL_RANK` under a process group, else `device` as is."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", local_rank())
    return device


# ===================================================================== setup / teardown
def rendezvous_host(host: str | None = None) -> str:
    """The address ranks meet on: `host`, else $RECSYS_DDP_HOST, else 127.0.0.1 (this machine only)."""
    return host or os.environ.get(HOST_ENV) or DEFAULT_HOST


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port the OS says is free right now (bind to 0); for tests and single-machine launches."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listen_on(host: str, port: int = 0) -> socket.socket:
    """A listening TCP socket bound to `host` only (port 0: any free one), for a TCPStore to serve on."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    return sock


def host_store(host: str, port: int, world_size: int, timeout: timedelta = DEFAULT_TIMEOUT) -> dist.TCPStore:
    """A TCPStore served on `host`:`port` only (port 0: a free one, see `.port`). The store owns the
    socket from here on and closes it when it is garbage-collected: keep it alive while ranks meet."""
    sock = listen_on(host, port)
    store = dist.TCPStore(
        host, sock.getsockname()[1], world_size, True, timeout=timeout, wait_for_workers=False,
        master_listen_fd=sock.fileno(),
    )  # fmt: skip
    sock.detach()
    return store


def pin_interfaces(host: str) -> dict[str, str]:
    """Environment that keeps gloo's and nccl's sockets on the interface holding `host` (e.g. `lo`
    for 127.0.0.1); variables the user set are kept. Empty when no local interface has `host`."""
    import psutil

    try:
        address = socket.getaddrinfo(host, None)[0][4][0]
    except OSError:
        return {}
    names = [
        name for name, addrs in psutil.net_if_addrs().items() if any(a.address == address for a in addrs)
    ]
    if not names:
        return {}
    return {var: os.environ.get(var, names[0]) for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")}


_HOSTED: list[Any] = []  # the store rank 0 hosts, alive until the group is left


def init_process_group(
    backend: str | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Join the process group. Arguments default to the environment `launch` and torchrun set
    (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); pass them explicitly from `torch.multiprocessing`
    workers.

    backend None: nccl when CUDA is available, else gloo. Under nccl the rank's GPU is selected first,
    so `cuda` means `cuda:LOCAL_RANK` for everything that follows. Outside torchrun (whose agent
    hosts the store), rank 0 hosts it bound to the rendezvous host only, unless `launch` does."""
    if is_distributed():
        return
    env_rank, env_world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    rank = rank if rank is not None else int(env_rank) if env_rank is not None else None
    world_size = world_size if world_size is not None else int(env_world) if env_world is not None else None
    if rank is None or world_size is None:
        raise ConfigError(
            "distributed training needs RANK and WORLD_SIZE: launch with `recsys train --nproc N` "
            "(or torchrun), or pass rank= and world_size="
        )
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside world size {world_size}")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    _import_group_defaults_before_the_group()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    host = master_addr or os.environ.get("MASTER_ADDR") or rendezvous_host()
    port = master_port or int(os.environ.get("MASTER_PORT", "29500"))
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":  # torchrun's agent hosts it
        dist.init_process_group(
            backend, init_method=f"tcp://{host}:{port}", rank=rank, world_size=world_size, timeout=timeout
        )
        return
    os.environ.update(pin_interfaces(host))
    if rank == 0 and not os.environ.get(STORE_ENV):
        store = host_store(host, port, world_size, timeout)
        _HOSTED[:] = [store]
    else:
        store = dist.TCPStore(host, port, world_size, False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


def _import_group_defaults_before_the_group() -> None:
    """Import `torch.distributed.nn.functional` while no process group exists.

    Why: its ten collectives take `group=group.WORLD` as a default argument, evaluated once, at
    import. DistributedDataParallel imports it (through `torch.distributed._shard`) when it wraps
    the first model, that is while our group is alive, and those defaults then held the group for
    the rest of the process: `destroy_process_group` could not free it, so gloo's worker threads
    ran on into the interpreter's exit. A worker still letting go of the tensor of the rank's last
    collective there must take the GIL; Python ends such a thread where it stands, inside a C++
    destructor, and the rank died of SIGABRT ("terminate called without an active exception")
    after a successful training, seen on rank 1 while rank 0 was still saving (torch 2.13).
    Imported first, the defaults are None (the default group at each call)."""
    import torch.distributed.nn.functional  # noqa: F401


def destroy_process_group() -> None:
    """Leave the group and wait for it to end (its worker threads exit before this returns).

    Every rank must have finished its collectives: the group's destructor waits for this rank's
    collectives in flight. A rank that failed uses `abandon_process_group` instead."""
    if is_distributed():
        dist.destroy_process_group()
    _HOSTED.clear()


_ABANDONED: list[Any] = []  # groups left by a failing rank, kept so that nothing waits for them


def abandon_process_group() -> None:
    """Leave the group without waiting for it: torch forgets it (`is_distributed()` is False after),
    but a reference kept here stops its destructor, which would wait for the collectives this rank
    has in flight. Why: a rank that failed may have started one that the others never join (they
    wait in another), and the destructor then waited for the group timeout (10 min) while the
    launcher, with no rank exited, stopped nobody. The group's sockets close when the process ends
    (`run_rank` ends it at once), and the others' collectives fail then instead of timing out."""
    if is_distributed():
        _ABANDONED.append(dist.group.WORLD)
        dist.destroy_process_group()
    _HOSTED.clear()


@contextmanager
def process_group(backend: str | None = None, **kwargs: Any) -> Iterator[None]:
    """`with process_group(): ...` joins the group for the block and always leaves it: waiting for
    it to end when the block succeeds, without waiting when it raises (`abandon_process_group`)."""
    init_process_group(backend, **kwargs)
    try:
        yield
    except BaseException:
        abandon_process_group()
        raise
    destroy_process_group()


# ===================================================================== shares of a global batch
def split_sizes(total: int, world: int) -> list[int]:
    """Balanced contiguous shares of `total` rows: sizes differ by at most one, earlier ranks larger.

    Every rank computes this from numbers it already has, so uneven last batches need no size exchange.
    """
    base, extra = divmod(total, world)
    return [base + (1 if r < extra else 0) for r in range(world)]


def rank_share(total: int, rank: int = 0, world: int = 1) -> slice:
    """Rank `rank`'s contiguous rows of a global batch of `total` (all of it when world == 1).

    Contiguous (not strided) so that concatenating the ranks' shares in rank order is the global batch
    in its original order: the gathered in-batch vectors line up with the sampler's columns as is."""
    sizes = split_sizes(total, world)
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def global_mean_share(local_mean: torch.Tensor, local: int, total: int, world: int) -> torch.Tensor:
    """Scale a rank's mean loss so that DDP's gradient *average* over ranks is the gradient of the mean
    over the global batch: `W * local / total * local_mean` (exactly `local_mean` for one process).

    A rank whose share is empty (a last batch smaller than the world) still joins every collective;
    its mean over nothing is NaN, so it contributes a graph-connected zero instead."""
    if local == 0:
        return torch.nan_to_num(local_mean, nan=0.0) * 0.0
    if world == 1 and local == total:
        return local_mean
    return local_mean * (world * local / total)


# ===================================================================== collectives
class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends every rank's gradient for a row back to the rank that owns it.

    Rows may differ in number per rank (`sizes`): the forward pads to the largest share. The backward
    all-reduces (sums) the full gradient and keeps this rank's rows; gloo has no reduce-scatter, and
    the gradient of a (W*B, d) block is small next to the towers' own."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, sizes: tuple[int, ...], group: Any) -> torch.Tensor:
        me = dist.get_rank(group)
        ctx.sizes, ctx.me, ctx.group = sizes, me, group
        biggest = max(sizes)
        padded = tensor.new_zeros((biggest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=group)
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.me])
        return total[start : start + ctx.sizes[ctx.me]], None, None


def all_gather_with_grad(
    tensor: torch.Tensor, sizes: Sequence[int] | None = None, group: Any = None
) -> torch.Tensor:
    """Concatenate every rank's `tensor` along dim 0 in rank order, differentiably.

    `sizes[r]` is rank r's row count; pass it when known (the training loop knows every share) to
    save one collective, else it is exchanged. The identity outside a process group."""
    if not is_distributed():
        return tensor
    if sizes is None:
        sizes = all_gather_sizes(int(tensor.shape[0]), group)
    if int(tensor.shape[0]) != sizes[dist.get_rank(group)]:
        raise ModelError(
            f"rank {dist.get_rank(group)} has {tensor.shape[0]} rows but sizes say {list(sizes)}"
        )
    return _AllGatherWithGrad.apply(tensor, tuple(int(n) for n in sizes), group)


def collective_device(group: Any = None) -> torch.device:
    """Where collectives move tensors: the rank's GPU under nccl, else the CPU (gloo)."""
    if is_distributed() and dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_sizes(n: int, group: Any = None) -> list[int]:
    """Every rank's `n`, in rank order ([n] for one process)."""
    if not is_distributed():
        return [int(n)]
    device = collective_device(group)
    mine = torch.tensor([int(n)], dtype=torch.int64, device=device)
    parts = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, mine, group=group)
    return [int(p.item()) for p in parts]


def all_gather_rows(array: np.ndarray, group: Any = None) -> np.ndarray:
    """Every rank's rows of `array` (numeric; any number of rows, the same trailing shape and dtype
    everywhere) concatenated in rank order. Tensors only: nothing is pickled, so no rank ever
    unpickles what another sent (torch's `all_gather_object` would)."""
    array = np.ascontiguousarray(array)
    if not is_distributed():
        return array
    device = collective_device(group)
    sizes = all_gather_sizes(array.shape[0], group)
    local = torch.from_numpy(array)
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: local.shape[0]] = local
    padded = padded.to(device)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    return np.concatenate([part[:n].cpu().numpy() for part, n in zip(parts, sizes, strict=True)])


def all_reduce_max(value: float, group: Any = None) -> float:
    if not is_distributed():
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=collective_device(group))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group)
    return float(tensor.item())


def all_reduce_sum(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sum over ranks of a few float64 numbers (epoch loss sums, example counts)."""
    if not is_distributed():
        return [float(v) for v in values]
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when it is True on any: stop decisions must agree, or the others hang."""
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0


def broadcast_value(value: float, device: torch.device | str = "cpu", src: int = 0) -> float:
    """Rank `src`'s float on every rank (validation scores drive early stopping, which must agree)."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=src)
    return float(tensor.item())


def check_same_everywhere(value: int, what: str, device: torch.device | str = "cpu") -> None:
    """Raise on every rank when ranks disagree about `value` (e.g. the epoch they resumed from)."""
    seen = all_reduce_sum([value, value * value], device)
    mean = seen[0] / world_size()
    if abs(seen[1] / world_size() - mean * mean) > 1e-9:
        raise ModelError(
            f"ranks disagree about {what}: put checkpoint_dir on a file system every rank can read"
        )


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `module` under a process group; the module itself otherwise.

    Buffers are not re-broadcast every forward (they are constants: feature values, a fixed
    temperature); gradients live in the communication buckets to save a copy."""
    if not is_distributed():
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    options = inspect.signature(DistributedDataParallel.__init__).parameters
    no_buffer_sync = (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {"broadcast_buffers": False}
    )  # torch >= 2.13 renamed it; syncing once at init is harmless, buffers start identical
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        gradient_as_bucket_view=True,
        **no_buffer_sync,
    )


def rank_zero_callback(callback: FitCallback | None) -> FitCallback | None:
    """Run a fit callback (MLflow logging) on rank 0 only; other ranks see None (never stop)."""
    if callback is None or is_rank_zero():
        return callback
    return None


# ===================================================================== distributed evaluation
def shard_users(users: np.ndarray, rank: int = 0, world: int = 1) -> np.ndarray:
    """This rank's contiguous, balanced share of the evaluated users (sorted, so gathers keep order)."""
    return np.asarray(users)[rank_share(len(users), rank, world)]


def _rows_only(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """`matrix` with every row outside `rows` emptied (same shape, so user indices keep their meaning)."""
    keep = np.zeros(matrix.shape[0], dtype=np.float32)
    keep[rows] = 1.0
    out = sp.csr_matrix(sp.diags(keep) @ sp.csr_matrix(matrix))
    out.eliminate_zeros()
    return out


def evaluate_distributed(
    model: Recommender,
    eval_set: EvalSet,
    cfg: EvaluationConfig,
    *,
    item_popularity: np.ndarray,
    device: str | None = None,
) -> EvaluationResult:
    """`recsys.evaluation.evaluate` with the users sharded across ranks; every rank gets the full result.

    Each rank ranks only its share of the users (the expensive part: a matmul against every item and
    a top-k) through `evaluate` on an eval set whose truth keeps only those rows, then the per-user
    metrics and top-k lists are all-gathered. Per-user metrics and their means are the gathered ones;
    coverage, novelty and ARP need every list, so the summary is recomputed from the gathered lists
    with `compute_metrics`; bootstrap intervals run once on the gathered per-user metrics with the
    same seed as one process. Identical to one process (the test checks it).
    """
    import polars as pl

    from recsys.data.schema import USER_IDX
    from recsys.data.split import EvalSet as _EvalSet
    from recsys.evaluation.evaluate import EvaluationResult as _Result
    from recsys.evaluation.evaluate import evaluate
    from recsys.evaluation.metrics import compute_metrics
    from recsys.evaluation.ranking import RankedLists
    from recsys.evaluation.stats import bootstrap_ci_columns

    me, world = rank(), world_size()
    truth = sp.csr_matrix(eval_set.truth)
    mine = shard_users(eval_set.users, me, world)
    shard = _EvalSet(truth=_rows_only(truth, mine), exclude=eval_set.exclude, fold_in=eval_set.fold_in)
    local = evaluate(
        model, shard, cfg.model_copy(update={"bootstrap_samples": 0}), item_popularity=item_popularity,
        device=device,
    )  # fmt: skip
    # Per-user metrics travel as one float64 matrix (user indices are exact in float64 below 2**53).
    schema = local.per_user.schema
    rows = local.per_user.select(pl.all().cast(pl.Float64)).to_numpy().reshape(-1, len(schema))
    gathered = all_gather_rows(rows)
    per_user = pl.DataFrame(gathered, schema=list(schema), orient="row").cast(dict(schema)).sort(USER_IDX)
    users = all_gather_rows(np.asarray(local.topk.users, dtype=np.int64))
    order = np.argsort(users, kind="stable")
    items = all_gather_rows(np.asarray(local.topk.items))[order]
    scores = all_gather_rows(np.asarray(local.topk.scores))[order]
    users = users[order]
    merged = compute_metrics(
        items, truth[users], cfg.ks, cfg.metrics, item_popularity=item_popularity,
        n_items=truth.shape[1], users=users, n_users=truth.shape[0],
    )  # fmt: skip
    metric_columns = [c for c in per_user.columns if c != USER_IDX]
    summary = {
        name: (float(per_user[name].to_numpy().mean()) if per_user.height else float("nan"))
        if name in metric_columns
        else value
        for name, value in merged.summary.items()
    }
    if metric_columns and cfg.bootstrap_samples > 0:
        _, lo, hi = bootstrap_ci_columns(
            per_user.select(metric_columns).to_numpy(),
            n_samples=cfg.bootstrap_samples,
            confidence=cfg.confidence,
            seed=0,
        )
        ci = {name: (float(a), float(b)) for name, a, b in zip(metric_columns, lo, hi, strict=True)}
    else:
        ci = {name: (float("nan"), float("nan")) for name in metric_columns}
    seconds = all_reduce_max(local.seconds)
    return _Result(
        summary=summary,
        ci=ci,
        per_user=per_user,
        n_users_evaluated=merged.n_users_evaluated,
        n_users_skipped=merged.n_users_skipped + eval_set.n_users_without_truth,
        seconds=float(seconds),
        topk=RankedLists(users=users, items=items, scores=scores),
        sampled_negatives=cfg.sampled_negatives,
    )


# ===================================================================== launcher
def worker_command(args: Sequence[str], *, python: str | None = None) -> list[str]:
    """One rank's command: `python -m recsys.distributed <args>` with the current interpreter, so the
    workers use the same virtual environment whether or not its bin/ is on PATH."""
    return [python or sys.executable, "-m", "recsys.distributed", *args]


def launch(
    nproc: int,
    command: Sequence[str],
    *,
    host: str | None = None,
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> int:
    """`recsys train --nproc N`: run N ranks of `command` (`worker_command(...)`) on this machine.

    This process hosts the rendezvous store on `rendezvous_host(host)` only (127.0.0.1 by default;
    torchrun's would listen on every interface) and starts the ranks with RANK / WORLD_SIZE /
    MASTER_ADDR / MASTER_PORT set, as torchrun does. When one rank fails the others are stopped.
    Returns 0, or the first failing rank's exit code."""
    import signal
    import subprocess
    import time

    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    host = rendezvous_host(host)
    store = host_store(host, 0, nproc, timeout)
    env = {
        **os.environ, "MASTER_ADDR": host, "MASTER_PORT": str(store.port),
        "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), STORE_ENV: "1", **pin_interfaces(host),
    }  # fmt: skip
    procs = [
        subprocess.Popen(
            list(command), env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, preexec_fn=_die_with(os.getpid())
        )
        for r in range(nproc)
    ]
    code = 0
    try:
        while True:
            codes = [p.poll() for p in procs]  # every one, so a failure is seen while others run
            failed = [c for c in codes if c not in (None, 0)]
            if failed or all(c is not None for c in codes):
                code = failed[0] if failed else 0
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        del store  # closes the rendezvous socket
    return code


def _die_with(launcher: int):
    """A `preexec_fn` that makes a rank get SIGTERM when its launcher dies (Linux PR_SET_PDEATHSIG).
    Why: a `recsys train --nproc N` killed with SIGKILL skips its `finally`, which stops the ranks:
    they went on alone, training to the end and saving the model after the command was gone, or
    waited for the dead launcher's rendezvous store for `DEFAULT_TIMEOUT` (10 min, ~300 MB each).
    None (nothing done) where prctl does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it (no imports
    sigterm = int(signal.SIGTERM)  # between fork and exec, where another thread may hold the import lock)

    def set_parent_death_signal() -> None:
        prctl(1, sigterm)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != launcher:  # it died before the line above: nobody will signal
            os._exit(143)

    return set_parent_death_signal


def save_split(split: Split, directory: str | Path) -> Path:
    """Write the split (`recsys.data.split_io`) so every rank loads the same split without re-running
    ingest (W processes writing one processed directory would race)."""
    from recsys.data.split_io import save_split as _save

    return _save(split, directory)


def load_split(directory: str | Path) -> Split:
    from recsys.data.split_io import load_split as _load

    return _load(directory)


@dataclass(frozen=True)
class TrainArgs:
    split: Path
    model_config: Path
    out: Path
    mlflow_run_id: str | None


def parse_args(argv: Sequence[str]) -> TrainArgs:
    parser = argparse.ArgumentParser(prog="python -m recsys.distributed", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train", help="train one two-tower model data-parallel (one rank; started by `launch` or torchrun)"
    )
    train.add_argument("--split", type=Path, required=True, help="directory written by save_split")
    train.add_argument("--model-config", type=Path, required=True, help="the model's config as JSON")
    train.add_argument("--out", type=Path, required=True, help="where rank 0 saves the trained model")
    train.add_argument("--mlflow-run-id", default=None, help="stream per-epoch metrics to this run (rank 0)")
    ns = parser.parse_args(list(argv))
    return TrainArgs(ns.split, ns.model_config, ns.out, ns.mlflow_run_id)


def mlflow_callback(run_id: str) -> FitCallback:
    """Per-epoch metrics to an existing MLflow run (tracking URI from MLFLOW_TRACKING_URI)."""
    from mlflow import MlflowClient

    client = MlflowClient()

    def log(step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if np.isfinite(value):
                client.log_metric(run_id, key, float(value), step=step)

    return log


def train_main(args: TrainArgs) -> int:
    """One rank of `recsys train --nproc N`: join the group, fit the model on the saved split (the loop
    reads rank and world size from the group), rank 0 saves it and logs to MLflow."""
    from recsys.models.base import build_model
    from recsys.models.two_tower import TwoTowerConfig

    config = TwoTowerConfig.model_validate_json(args.model_config.read_text())
    split = load_split(args.split)
    with process_group(
        backend_for("cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu")
    ):
        callback = mlflow_callback(args.mlflow_run_id) if args.mlflow_run_id and is_rank_zero() else None
        model = build_model(config)
        from recsys.evaluation.cold import warm_validation

        model.fit(split.train, validation=warm_validation(split), callback=callback, times=split.times,
                  item_ids=split.item_ids)
        if is_rank_zero():
            from recsys.data.split import split_record

            model.trained_on = split_record(split)  # as `recsys train` saves it: evaluate checks it
            model.save(args.out)  # config.json records `resumed_from` too
            if model.resumed_from:
                resumed = model.resumed_from
                print(
                    f"rank 0: resumed {config.name} from {resumed['checkpoint']} "
                    f"(epoch {resumed['epoch']}, step {resumed['step']})"
                )
                if args.mlflow_run_id:
                    log_resume(args.mlflow_run_id, resumed)
            print(
                f"rank 0 of {world_size()}: trained {config.name} in {model.fit_seconds:.1f} s -> {args.out}"
            )
    return 0


def log_resume(run_id: str, resumed: dict[str, Any]) -> None:
    """Where a distributed training resumed from, on its MLflow run (as `Tracker` logs it)."""
    from mlflow import MlflowClient

    from recsys.training import RESUMED_CHECKPOINT_TAG

    client = MlflowClient()
    client.set_tag(run_id, RESUMED_CHECKPOINT_TAG, resumed["checkpoint"])
    client.log_metric(run_id, "resumed_from_epoch", float(resumed["epoch"]))
    client.log_metric(run_id, "resumed_from_step", float(resumed["step"]))


def run_rank(body: Callable[[], int]) -> NoReturn:
    """End this rank's process with `body()`'s exit code; a RecsysError is one line, `error (rank
    R): ...`, and exit 2, as the CLI does.

    After a failure left a group behind (`abandon_process_group`) the process ends with `os._exit`
    once its output is flushed, skipping the interpreter's exit: there, gloo's worker threads would
    die where they next take the GIL, inside a C++ destructor (SIGABRT: exit -6, not this code), and
    the module teardown would free the group, whose destructor waits for the abandoned collectives."""
    from recsys.errors import RecsysError

    me = _rank_label()  # read now: after leaving the group every rank would read as rank 0
    try:
        code = body()
    except RecsysError as exc:  # one line per failing rank
        print(f"error (rank {me}): {exc}", file=sys.stderr)
        code = 2
    except BaseException as exc:
        if not _ABANDONED:
            raise  # the interpreter reports it and exits as usual
        code = _report(exc)
    if _ABANDONED:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    no_collection_at_exit()  # the group is destroyed: skip the exit's walk of the heap (~1 CPU-s a rank)
    raise SystemExit(code)


def _rank_label() -> int:
    """This process's rank: the group's, else RANK as `launch` and torchrun set it, else 0."""
    return rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def _report(exc: BaseException) -> int:
    """What the interpreter would print and return for an exception leaving the program."""
    import traceback

    if isinstance(exc, SystemExit):
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    traceback.print_exception(exc)
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point every rank runs (`python -m recsys.distributed train ...`); ends the process."""
    run_rank(lambda: train_main(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
