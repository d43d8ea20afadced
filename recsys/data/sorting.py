"""Whether ingest's sorts use polars' thread pool.

Why: ingest keeps two threads busy most of the time (the main thread deriving, a background
thread writing files or checking duplicates), so on a machine of two cores a sort that splits
itself over the pool takes the other thread's core and only adds its own coordination. Measured
on a 2-core machine: 10M 32-bit row hashes sort in ~0.16 CPU-s on one thread against ~0.30 on
two, and the 2.5M-row implicit table of a 10M-row Zipf log in ~0.17 against ~0.27, with no
shorter wall time. Where the pool has more threads than ingest keeps busy, sorts use it."""

from __future__ import annotations

import polars as pl

BUSY_THREADS = 2
"""Threads ingest keeps busy itself (its main thread and one background thread at a time)."""


def sort_in_parallel() -> bool:
    """The `multithreaded` argument for ingest's sorts: True only where polars' pool has threads
    beyond the ones ingest keeps busy itself."""
    return pl.thread_pool_size() > BUSY_THREADS
