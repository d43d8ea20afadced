"""ANN retrieval for large catalogues (issue 22): usearch vs faiss-cpu vs hnswlib, then recsys serve.

Synthetic catalogues of 100k and 1M items, d = 64, shaped like a two-tower's output: a mixture of
1,024 Gaussian clusters in a random 24-dimensional subspace plus a little noise in all 64 (learned
embeddings have a low intrinsic dimension), L2-normalised, so inner product = cosine; 10k queries
drawn the same way. The exact answer (inner-product top-100 of every query, torch matmul in
chunks) is the reference. Every library builds an HNSW graph with the same shape (M = 16 links,
ef_construction = 128) and is searched at several ef; for each we report recall@10 and @100 of ANN
against exact, single-query latency p50 / p99 (one thread, one query at a time), queries/s of a
batch on 2 threads, build time on 2 threads and memory (peak RSS growth of the worker and the size
of the saved index).

Bounds: each (library, catalogue) runs in its own worker process with an address-space limit
(RECSYS_BENCH_ANN_MEMORY_GB, default 6) and a wall-clock limit (RECSYS_BENCH_ANN_TIMEOUT_S, default
900 s); a worker over either is reported as such, never left running. Latency is measured on
RECSYS_BENCH_ANN_LATENCY_QUERIES (default 2,000) of the queries, recall on all of them.

Then the chosen library serves end to end: the largest catalogue of the run (1M by default) as a
logged model's serving artifacts (index built by `recsys.ann`), `recsys serve`'s FastAPI app under
uvicorn on 127.0.0.1, single-user requests over HTTP with seen-item filtering (every user has seen
50 items); latency measured at the client, exact (brute force through the same server) beside it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR

RESULTS = RESULTS_DIR / "ann.md"
DIM = 64
CLUSTERS = 1024
N_QUERIES = 10_000
SIZES = [int(s) for s in os.environ.get("RECSYS_BENCH_ANN_SIZES", "100000,1000000").split(",")]
LIBRARIES = os.environ.get("RECSYS_BENCH_ANN_LIBRARIES", "usearch,faiss,hnswlib").split(",")
EFS = [64, 128, 256, 512]
M, EF_CONSTRUCTION = 16, 128
MEMORY_GB = float(os.environ.get("RECSYS_BENCH_ANN_MEMORY_GB", "6"))
TIMEOUT_S = float(os.environ.get("RECSYS_BENCH_ANN_TIMEOUT_S", "720"))
LATENCY_QUERIES = int(os.environ.get("RECSYS_BENCH_ANN_LATENCY_QUERIES", "2000"))
SERVE_USERS = int(os.environ.get("RECSYS_BENCH_ANN_SERVE_USERS", "2000"))
SEEN_PER_USER = 50


# ============================================================================ data
LATENT = 24
"""Intrinsic dimension of the synthetic vectors: learned embeddings occupy a low-dimensional part of
their space; isotropic 64-d noise alone (no structure) is the worst case of every graph index."""


def synthetic(n: int, seed: int) -> np.ndarray:
    """n unit vectors: a 1,024-cluster Gaussian mixture in a random LATENT-d subspace of R^64, plus a
    little isotropic noise (deterministic in `seed`; the subspace and centres are shared by every
    seed, so queries and items come from one distribution)."""
    shared = np.random.default_rng(0)
    basis = np.linalg.qr(shared.standard_normal((DIM, LATENT)))[0].astype(np.float32)  # (64, LATENT)
    centres = shared.standard_normal((CLUSTERS, LATENT)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for lo in range(0, n, 200_000):
        hi = min(n, lo + 200_000)
        latent = centres[rng.integers(0, CLUSTERS, hi - lo)] + 0.7 * rng.standard_normal((hi - lo, LATENT))
        out[lo:hi] = latent @ basis.T + 0.1 * rng.standard_normal((hi - lo, DIM))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def exact_top(items: np.ndarray, queries: np.ndarray, k: int, threads: int = 2) -> np.ndarray:
    """(n_queries, k) exact inner-product top-k item indices, chunked (bounded memory)."""
    import torch

    torch.set_num_threads(threads)
    item_t = torch.from_numpy(items)
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    step = max(1, 2**26 // max(items.shape[0], 1))  # <= 256 MB of scores at a time
    for lo in range(0, queries.shape[0], step):
        scores = torch.from_numpy(queries[lo : lo + step]) @ item_t.T
        out[lo : lo + step] = torch.topk(scores, k, dim=1).indices.numpy()
    return out


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean |ANN top-k ∩ exact top-k| / k over queries."""
    hits = [np.intersect1d(a[:k], b[:k], assume_unique=False).size for a, b in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / k


# ============================================================================ libraries (worker side)
class Adapter:
    """build(vectors, threads) / set_ef(ef) / search(queries, k, threads) -> (n, k) ids / save(path)."""


class USearch(Adapter):
    def build(self, vectors: np.ndarray, threads: int) -> None:
        from usearch.index import Index

        self.index = Index(ndim=DIM, metric="ip", dtype="f32", connectivity=M, expansion_add=EF_CONSTRUCTION)
        self.index.add(np.arange(vectors.shape[0], dtype=np.uint64), vectors, threads=threads)

    def set_ef(self, ef: int) -> None:
        self.index.expansion_search = ef

    def search(self, queries: np.ndarray, k: int, threads: int) -> np.ndarray:
        return np.asarray(self.index.search(queries, k, threads=threads).keys, dtype=np.int64).reshape(-1, k)

    def save(self, path: Path) -> None:
        self.index.save(str(path))


class Faiss(Adapter):
    def build(self, vectors: np.ndarray, threads: int) -> None:
        import faiss

        faiss.omp_set_num_threads(threads)
        self.faiss = faiss
        self.index = faiss.IndexHNSWFlat(DIM, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(vectors)

    def set_ef(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef

    def search(self, queries: np.ndarray, k: int, threads: int) -> np.ndarray:
        self.faiss.omp_set_num_threads(threads)
        return self.index.search(queries, k)[1].astype(np.int64)

    def save(self, path: Path) -> None:
        self.faiss.write_index(self.index, str(path))


class Hnswlib(Adapter):
    def build(self, vectors: np.ndarray, threads: int) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.init_index(max_elements=vectors.shape[0], ef_construction=EF_CONSTRUCTION, M=M, random_seed=0)
        self.index.add_items(vectors, np.arange(vectors.shape[0]), num_threads=threads)

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def search(self, queries: np.ndarray, k: int, threads: int) -> np.ndarray:
        return self.index.knn_query(queries, k=k, num_threads=threads)[0].astype(np.int64)

    def save(self, path: Path) -> None:
        self.index.save_index(str(path))


ADAPTERS = {"usearch": USearch, "faiss": Faiss, "hnswlib": Hnswlib}


def rss_mb() -> float:
    """Current resident memory of this process (MB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) / 1024
    return float("nan")


def worker(library: str, data_dir: str) -> dict[str, Any]:
    """One library on one catalogue: build, save, then every ef (recall, latency, throughput)."""
    folder = Path(data_dir)
    items = np.load(folder / "items.npy")
    queries = np.load(folder / "queries.npy")
    truth = np.load(folder / "truth.npy")
    adapter = ADAPTERS[library]()
    before = rss_mb()
    start = time.perf_counter()
    adapter.build(items, threads=2)
    build_s = time.perf_counter() - start
    grown = rss_mb() - before
    path = folder / f"{library}.index"
    adapter.save(path)
    size_mb = path.stat().st_size / 2**20
    path.unlink()
    rows = []
    for ef in EFS:
        adapter.set_ef(ef)
        start = time.perf_counter()
        found = adapter.search(queries, 100, threads=2)
        qps = queries.shape[0] / (time.perf_counter() - start)
        latencies = []
        for q in queries[:LATENCY_QUERIES]:
            t0 = time.perf_counter()
            adapter.search(q[None, :], 10, threads=1)
            latencies.append(time.perf_counter() - t0)
        ms = np.asarray(latencies) * 1000
        rows.append({
            "ef": ef, "recall@10": recall(found, truth, 10), "recall@100": recall(found, truth, 100),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "qps_2_threads": qps,
        })  # fmt: skip
    return {"library": library, "build_s": build_s, "rss_growth_mb": grown, "index_mb": size_mb, "efs": rows}


def run_worker(library: str, data_dir: Path) -> dict[str, Any]:
    """The worker in a child process under the memory and time bounds."""
    limit = int(MEMORY_GB * 2**30)

    def bound() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    command = [sys.executable, "-m", "benchmarks.bench_ann", "worker", library, str(data_dir)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, preexec_fn=bound,
                              env={**os.environ, "OMP_NUM_THREADS": "2"})  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"library": library, "error": f"over the {TIMEOUT_S:.0f} s limit"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1][:160]
        return {"library": library, "error": f"exit {done.returncode}: {last}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ============================================================================ serving end to end
def serve_end_to_end(items: np.ndarray, queries: np.ndarray, work: Path) -> dict[str, Any]:
    """The 1M catalogue behind `recsys serve` (its FastAPI app under uvicorn on 127.0.0.1): single-user
    HTTP requests, 50 seen items per user filtered, ANN (recsys.ann defaults) vs exact on one server."""
    import threading

    import httpx
    import scipy.sparse as sp
    import uvicorn

    from recsys.ann import AnnConfig
    from recsys.data.split import Split
    from recsys.distributed import free_port
    from recsys.models.factors import FactorModel
    from recsys.tracking.pyfunc import ServingIndex, write_serving_artifacts
    from recsys.tracking.server import build_app

    n_users = SERVE_USERS
    rng = np.random.default_rng(7)
    users = queries[:n_users]
    seen_items = rng.integers(0, items.shape[0], (n_users, SEEN_PER_USER))
    train = sp.csr_matrix(
        (np.ones(seen_items.size, np.float32), (np.repeat(np.arange(n_users), SEEN_PER_USER), seen_items.ravel())),
        shape=(n_users, items.shape[0]),
    )
    train.data[:] = 1.0
    # One more training row, never queried, holding every item: every item of a trained catalogue has
    # training data (serving skips items without any, as the evaluator does: recsys.evaluation.cold),
    # while each queried user keeps its 50 seen items to filter.
    n_items = items.shape[0]
    everything = sp.csr_matrix((np.ones(n_items, np.float32), (np.zeros(n_items, np.int64), np.arange(n_items))),
                               shape=(1, n_items))  # fmt: skip
    train = sp.csr_matrix(sp.vstack([train, everything]))
    model = FactorModel.from_arrays(np.vstack([users, users[:1]]), items, name="synthetic")
    split = Split(protocol="random", train=train, test=sp.csr_matrix(train.shape, dtype=np.float32))
    started = time.perf_counter()
    directory = write_serving_artifacts(model, split, work / "serving", ann=AnnConfig(min_items=1))
    artifacts_s = time.perf_counter() - started
    index = ServingIndex(directory)
    report = json.loads((directory / "ann.json").read_text())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(index, name="synthetic"), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    out: dict[str, Any] = {"artifacts_s": artifacts_s, "index": report}  # "ann" / "exact": the latencies
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for mode in ("ann", "exact"):
                index.use_ann = mode == "ann"
                latencies, full, leaked = [], 0, 0
                for u in range(min(n_users, LATENCY_QUERIES)):
                    body = {"dataframe_records": [{"user_id": str(u)}], "params": {"k": 10}}
                    t0 = time.perf_counter()
                    answer = client.post("/invocations", json=body).json()["predictions"][0]
                    latencies.append(time.perf_counter() - t0)
                    got = [int(i) for i in answer["item_ids"]]
                    full += len(got) == 10
                    leaked += len(set(got) & set(seen_items[u].tolist()))
                ms = np.asarray(latencies) * 1000
                out[mode] = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                             "full_lists": full / len(latencies), "seen_returned": leaked}  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return out


# ============================================================================ report
def best_ef(result: dict[str, Any], target: float = 0.99) -> dict[str, Any] | None:
    ok = [row for row in result.get("efs", []) if row["recall@100"] >= target]
    return min(ok, key=lambda r: r["ef"]) if ok else None


def table(size: int, results: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"### {size:,} items x d = {DIM}, {N_QUERIES:,} queries",
        "",
        "| library | build (2 threads) | RSS growth | index file | ef | recall@10 | recall@100 | p50 | p99 | queries/s (2 threads) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if "error" in result:
            lines.append(f"| {result['library']} | {result['error']} | | | | | | | | |")
            continue
        for row in result["efs"]:
            lines.append(
                f"| {result['library']} | {result['build_s']:.1f} s | {result['rss_growth_mb']:.0f} MB | "
                f"{result['index_mb']:.0f} MB | {row['ef']} | {row['recall@10']:.4f} | {row['recall@100']:.4f} | "
                f"{row['p50_ms']:.3f} ms | {row['p99_ms']:.3f} ms | {row['qps_2_threads']:,.0f} |"
            )
    return lines + [""]


RAW = Path(__file__).parent / "out" / "ann"
PARTS = os.environ.get("RECSYS_BENCH_ANN_PARTS", "libraries,serve").split(",")


def main() -> None:
    """Each part writes its raw JSON under benchmarks/out/ann/ (with the commit and load it ran
    under); the report is assembled from whatever parts have run."""
    from benchmarks.common import commit_description

    RAW.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recsys-ann-") as tmp:
        for size in SIZES:
            needs_serve = "serve" in PARTS and size == max(SIZES)
            if "libraries" not in PARTS and not needs_serve:
                continue
            started, load, commit = time.perf_counter(), os.getloadavg(), commit_description()
            folder = Path(tmp) / str(size)
            folder.mkdir()
            items, queries = synthetic(size, seed=size), synthetic(N_QUERIES, seed=size + 1)
            if "libraries" in PARTS:
                t0 = time.perf_counter()
                truth = exact_top(items, queries, 100)
                exact_s = time.perf_counter() - t0
                for name, array in (("items", items), ("queries", queries), ("truth", truth)):
                    np.save(folder / f"{name}.npy", array)
                print(f"{size:,} items: exact top-100 of {N_QUERIES:,} queries in {exact_s:.0f} s", flush=True)
                results = []
                for library in LIBRARIES:
                    results.append(run_worker(library, folder))
                    print(json.dumps(results[-1]), flush=True)
                record = {"size": size, "exact_s": exact_s, "results": results, "load": load,
                          "commit": commit, "seconds": time.perf_counter() - started}  # fmt: skip
                (RAW / f"libraries-{size}.json").write_text(json.dumps(record))
            if needs_serve:
                started, load = time.perf_counter(), os.getloadavg()
                serve = serve_end_to_end(items, queries, folder)
                serve.update(size=size, load=load, commit=commit, seconds=time.perf_counter() - started)
                print(json.dumps(serve), flush=True)
                (RAW / f"serve-{size}.json").write_text(json.dumps(serve))
            del items, queries
    write_report()


def target_verdict(libraries: list[dict[str, Any]], size: int = 1_000_000) -> str:
    """The issue's target, per library at `size` items: one ef with recall@100 >= 0.99 of exact and
    single-query p99 <= 5 ms."""
    record = next((r for r in libraries if r["size"] == size), None)
    if record is None:
        return f"Target at {size:,} items: not measured in this run."
    said = []
    for result in record["results"]:
        if "error" in result:
            said.append(f"{result['library']} {result['error']}")
            continue
        ok = [row for row in result["efs"] if row["recall@100"] >= 0.99 and row["p99_ms"] <= 5.0]
        said.append(f"{result['library']} met at ef {ok[0]['ef']}" if ok else f"{result['library']} not met")
    return f"Target at {size:,} items (recall@100 >= 0.99 and p99 <= 5 ms at one ef): " + "; ".join(said) + "."


def write_report() -> None:
    libraries = sorted((json.loads(p.read_text()) for p in RAW.glob("libraries-*.json")), key=lambda r: r["size"])
    serves = sorted((json.loads(p.read_text()) for p in RAW.glob("serve-*.json")), key=lambda r: r["size"])
    lines = ["## ANN retrieval: usearch vs faiss-cpu vs hnswlib, and recsys serve (issue 22)", "",
             __doc__.split("\n\n", 1)[1].strip(), ""]  # fmt: skip
    for record in libraries:
        load = record["load"]
        lines += table(record["size"], record["results"])[:-1]
        lines += ["", f"Exact top-100 (torch, 2 threads): {record['exact_s']:.0f} s. Load average at the start "
                  f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on 2 cores shared with other work (absolute times are "
                  f"inflated and noisy, p99 most of all; the libraries ran one after another under the same load). "
                  f"{record['seconds'] / 60:.0f} min. _Ran on commit {record['commit']}_", ""]  # fmt: skip
    lines += ["### Smallest ef reaching recall@100 >= 0.99 of exact (target at 1M: p99 <= 5 ms)", "",
              "| library | items | ef | recall@100 | p50 | p99 | build |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for record in libraries:
        for result in record["results"]:
            row = best_ef(result)
            if "error" in result:
                lines.append(f"| {result['library']} | {record['size']:,} | {result['error']} | | | | |")
            elif row is None:
                lines.append(f"| {result['library']} | {record['size']:,} | none of {EFS} | | | | |")
            else:
                lines.append(f"| {result['library']} | {record['size']:,} | {row['ef']} | {row['recall@100']:.4f} | "
                             f"{row['p50_ms']:.3f} ms | {row['p99_ms']:.3f} ms | {result['build_s']:.0f} s |")  # fmt: skip
    lines += ["", target_verdict(libraries), ""]
    for serve in serves:
        ann, load = serve["index"], serve["load"]
        lines += [
            f"### End to end through `recsys serve` ({serve['size']:,} items, {SEEN_PER_USER} seen items filtered per user, k = 10)",
            "",
            f"Serving artifacts with the index (recsys.ann: {ann['library']}, {ann['index']}, "
            + ", ".join(f"{k} = {v}" for k, v in ann["params"].items())
            + f") written in {serve['artifacts_s']:.0f} s; recall against exact, measured at build on "
            f"{ann['recall_users']} users: recall@10 {ann['recall@10']:.4f}, recall@100 {ann['recall@100']:.4f}. "
            f"Requests: one user each, HTTP on 127.0.0.1, latency at the client. Load average "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.",
            "",
            "| search | p50 | p99 | full lists of 10 | seen items returned |", "|---|---|---|---|---|",
        ]  # fmt: skip
        for mode in ("ann", "exact"):
            row = serve[mode]
            lines.append(f"| {mode} | {row['p50_ms']:.2f} ms | {row['p99_ms']:.2f} ms | {100 * row['full_lists']:.1f}% "
                         f"| {row['seen_returned']} |")  # fmt: skip
        lines += ["", f"Serving part ran on commit {serve['commit']}.", ""]
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3])))
    else:
        main()
