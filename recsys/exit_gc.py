"""Skip the interpreter's last garbage collection when a heavy process ends.

Why: at exit CPython collects every generation, walking the whole heap. A process that imported
torch, MLflow and Prefect holds ~900k objects, so that walk alone took 4-8 s after `recsys run` had
printed its last line and closed everything (0.6-1.1 s with this), and about 1 CPU-s in each
torchrun rank and each scheduled flow-run process, on machines where every core is busy training.

Why it is safe: what the process owns is closed before it gets here (outputs written through temp
files and renamed, MLflow runs ended, servers stopped), and freezing skips no exit step: threads are
joined and atexit handlers (logging's flush, temp directories' finalizers, multiprocessing's) run as
before. The collection below first runs the finalizers of objects that are garbage already, as the
exit collection would; only objects still reachable at exit are not collected, whose finalizers
Python does not promise to run either.
"""

from __future__ import annotations

import gc


def no_collection_at_exit() -> None:
    """Collect what is garbage now, then freeze every object left (call it on the way out)."""
    gc.collect()
    gc.freeze()
