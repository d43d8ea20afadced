"""Runs whose inputs did not change: the last finished pipeline run of a lineage, and whether a new
run's inputs equal its own.

Why: a nightly schedule over a log that did not grow retrained every model and registered a new,
identical version of each, every night: a registry full of copies and compute burnt for nothing.
A run's results are a function of its inputs - the data, the split, the resolved config and the
code (with the libraries that compute) - so when all of them equal those of the last run of its
lineage that FINISHED, training again can only repeat it.

What is compared (each a tag on every pipeline parent run, so a later run can read it back):
    recsys.data_fingerprint   the processed data's content fingerprint (the data step's manifest)
    recsys.split_digest       the split's digest (which pairs are train / validation / test)
    recsys.config_digest      the resolved config (scheduled protocol and thread budget written
                              in) without `orchestration.if_unchanged`: the policy itself is no
                              input, so a forced run and a scheduled run of one config match
    recsys.code_digest        the Python sources of the packages that compute (recsys, pipelines),
                              the versions of the libraries in VERSION_PACKAGES and Python's
    recsys.inputs_digest      one digest of the lineage and the four above

The reference is the newest FINISHED pipeline run of the lineage in the experiment: a run killed
mid-way (KILLED, or RUNNING until the next start closes it) or one where a model failed (FAILED) is
never it. A pipeline run still RUNNING, alive (`recsys.tracking.liveness`), with the same inputs
digest is an identical run in progress. The look and the opening of the run's own parent happen
under `locks.lineage_lock`, so of two runs started at once on the same inputs the second sees the
first. Runs logged before these tags existed match nothing: the first run after an upgrade trains.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from recsys.config import RunConfig

TAG_INPUTS = "recsys.inputs_digest"
TAG_CONFIG_DIGEST = "recsys.config_digest"
TAG_CODE = "recsys.code_digest"
TAG_LAST_UNCHANGED = "recsys.unchanged_since"
"""On the reference run: when a later run last found its inputs unchanged and trained nothing (UTC),
so the MLflow UI shows that the schedule ran, without a run of its own for each skip."""

PARTS = {"data": "recsys.data_fingerprint", "split": "recsys.split_digest",
         "config": TAG_CONFIG_DIGEST, "code": TAG_CODE}  # fmt: skip
"""What a run's inputs are made of, by the tag each is kept in (see the module docstring)."""


def config_digest(cfg: RunConfig) -> str:
    """The resolved config's digest, without the skip policy (`orchestration.if_unchanged`)."""
    resolved = cfg.resolved()
    resolved.get("orchestration", {}).pop("if_unchanged", None)
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def _sources_digest(roots: tuple[Path, ...]) -> str:
    """Digest of every `*.py` under `roots` (path relative to its root, and content). Cached: the
    code a process runs is the code it loaded."""
    digest = hashlib.sha256()
    for root in roots:
        for file in sorted(root.rglob("*.py")):
            if "__pycache__" in file.parts:
                continue
            digest.update(f"{root.name}/{file.relative_to(root).as_posix()}\0".encode())
            digest.update(file.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def code_digest(*roots: Path) -> str:
    """The code that computes a run's results: the sources under `roots` (package directories), the
    versions of the libraries that train, evaluate and log (`runs.VERSION_PACKAGES`) and Python's.
    The sources, not the git commit: a checkout with uncommitted changes, or an installed package
    outside any checkout, is still told apart."""
    from recsys.tracking.runs import package_versions

    parts = {"sources": _sources_digest(tuple(Path(r).resolve() for r in roots)),
             "versions": package_versions(), "python": f"{sys.version_info.major}.{sys.version_info.minor}"}  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunKey:
    """A pipeline run's inputs (see the module docstring)."""

    lineage_id: str
    data: str
    split: str
    config: str
    code: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def tags(self) -> dict[str, str]:
        """The tags the run's parent carries (data and split are tagged by the tracker already)."""
        return {TAG_INPUTS: self.digest, TAG_CONFIG_DIGEST: self.config, TAG_CODE: self.code}

    def changed(self, tags: Mapping[str, str]) -> list[str]:
        """The parts of these inputs that differ from those of a run with `tags` (its tags)."""
        mine = {"data": self.data, "split": self.split, "config": self.config, "code": self.code}
        return [part for part, tag in PARTS.items() if tags.get(tag) != mine[part]]


@dataclass(frozen=True)
class Previous:
    """A pipeline run compared with this one: `changed` names the parts of the inputs that differ
    (empty: identical); `running`: it has not ended yet."""

    run_id: str
    started_ms: int
    changed: tuple[str, ...]
    running: bool = False

    @property
    def same(self) -> bool:
        return not self.changed

    @property
    def started(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.started_ms / 1000))


def _search(client: MlflowClient, experiment_id: str, filter_string: str, n: int = 1) -> list:
    from recsys.tracking.runs import with_retries

    return with_retries(lambda: client.search_runs(
        [experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"], max_results=n,
    ))  # fmt: skip


def last_finished(client: MlflowClient, experiment_id: str, key: RunKey) -> Previous | None:
    """The newest FINISHED pipeline run of the key's lineage, compared with `key`; None when none."""
    from recsys.lineage import TAG_LINEAGE_ID
    from recsys.tracking.runs import TAG_KIND

    runs = _search(client, experiment_id, f"tags.`{TAG_KIND}` = 'pipeline' and tags.`{TAG_LINEAGE_ID}` = "
                                          f"'{key.lineage_id}' and attributes.status = 'FINISHED'")  # fmt: skip
    if not runs:
        return None
    run = runs[0]
    return Previous(run.info.run_id, int(run.info.start_time or 0), tuple(key.changed(run.data.tags)))


def identical_running(client: MlflowClient, experiment_id: str, key: RunKey, stale_after_s: float) -> Previous | None:
    """A pipeline run with the same inputs that is still RUNNING and whose process lives (or, run
    elsewhere, still beats: `liveness`); None when there is none."""
    from recsys.tracking.liveness import taken_for_dead
    from recsys.tracking.runs import TAG_KIND

    runs = _search(client, experiment_id, f"tags.`{TAG_KIND}` = 'pipeline' and tags.`{TAG_INPUTS}` = "
                                          f"'{key.digest}' and attributes.status = 'RUNNING'", n=20)  # fmt: skip
    for run in runs:
        if not taken_for_dead(run.data.tags, stale_after_s):
            return Previous(run.info.run_id, int(run.info.start_time or 0), (), running=True)
    return None


def note_unchanged(client: MlflowClient, run_id: str) -> None:
    """Stamp the reference run with the time a later run found it unchanged (TAG_LAST_UNCHANGED)."""
    from recsys.tracking.runs import with_retries

    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with_retries(lambda: client.set_tag(run_id, TAG_LAST_UNCHANGED, when))
