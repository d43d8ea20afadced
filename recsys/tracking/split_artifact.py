"""The split a pipeline run evaluated on, logged as an artifact of its parent run (`split/`).

Why log it: `recsys promote`, run later in another process, must reach the decision `recsys run`
reached, so it needs the very same split - rebuilding it from the processed data would give another
one as soon as a new file has been ingested. And an audit ("was any model ever tested on a pair it
trained on?") needs the pairs behind each split digest, not just the digest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from recsys.errors import TrackingError
from recsys.files import scratch_dir
from recsys.tracking.runs import TAG_SPLIT_DIGEST, split_digest, with_retries

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from recsys.data.split import Split

SPLIT_ARTIFACT = "split"
PARENT_TAG = "mlflow.parentRunId"


def log_split(client: MlflowClient, run_id: str, split: Split) -> None:
    """Write `split` (recsys.data.split_io) under the run's `split/` artifact path."""
    from recsys.data.split_io import save_split

    with scratch_dir("recsys-split") as tmp:
        directory = save_split(split, Path(tmp) / SPLIT_ARTIFACT)
        with_retries(lambda: client.log_artifacts(run_id, str(directory), SPLIT_ARTIFACT))


def load_run_split(client: MlflowClient, run_id: str) -> Split:
    """The split a model run was evaluated on: its pipeline (parent) run's `split/` artifact, checked
    against the digest the model run was tagged with. TrackingError says why it cannot be had."""
    from recsys.data.split_io import load_split

    run = client.get_run(run_id)
    expected = run.data.tags.get(TAG_SPLIT_DIGEST)
    owner = run.data.tags.get(PARENT_TAG) or run_id
    with scratch_dir("recsys-split") as tmp:
        try:
            path = client.download_artifacts(owner, SPLIT_ARTIFACT, tmp)
            split = load_split(path)
        except Exception as exc:
            raise TrackingError(
                f"run {run_id}'s split was not logged with its pipeline run {owner} ({type(exc).__name__}); "
                "runs logged before splits were kept cannot be re-scored - promote a newer run"
            ) from None
    if expected and split_digest(split) != expected:
        raise TrackingError(
            f"the split logged with pipeline run {owner} (digest {split_digest(split)}) is not the one run "
            f"{run_id} was evaluated on (digest {expected})"
        )
    return split
