"""Whether a pipeline run trains at all: a run whose inputs (data, split, config, code) equal those of
the last finished run of its lineage repeats it, so by `orchestration.if_unchanged` it trains,
evaluates and registers nothing and says so in one line (recsys.tracking.unchanged says what is
compared and why).

The policy: `skip_scheduled` (the default) - a scheduled run (`recsys schedule`, the deployment)
skips, a run started by hand (`recsys run`) trains, because a person typing the command may want
exactly that rerun (to check that the same inputs give the same numbers; the tests do it on
purpose), and is told which run it repeats; `skip` - every tracked run skips (`recsys run
--if-changed`); `train` - every run trains (`recsys run --force`, a deployment run with
`--param force=true`). Without tracking there is no record of earlier runs: every run trains.

`recsys run` (`pipelines.run.run_pipeline`) and the Prefect flow (`flows.pipeline`) both open their
parent run inside `unchanged_check`, so both decide the same way, and a run of one path repeats a
run of the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.config import RunConfig
from recsys.data.dataset import InteractionData
from recsys.data.split import Split
from recsys.tracking.unchanged import Previous, RunKey

FORCE_HINT = ('to train anyway: --force (a deployment\'s run: --param force=true) or '
              'orchestration.if_unchanged = "train"')  # fmt: skip


def code_roots() -> tuple[Path, ...]:
    """The packages whose code computes a run's results: the library and these steps (the flows
    only wire them, so a run by Prefect and one without compare equal)."""
    import recsys

    return Path(recsys.__file__).parent, Path(__file__).parent


def skips_unchanged(cfg: RunConfig, scheduled: bool) -> bool:
    policy = cfg.orchestration.if_unchanged
    return policy == "skip" or (policy == "skip_scheduled" and scheduled)


def forced(cfg: RunConfig) -> RunConfig:
    """`cfg` with `orchestration.if_unchanged = "train"` (`--force`); the policy is not part of the
    compared config, so the forced run is still the reference of the next scheduled one."""
    out = cfg.model_copy(deep=True)
    out.orchestration.if_unchanged = "train"
    return out


@dataclass
class Unchanged:
    """What the look before opening the parent run found: the tags that parent carries (its inputs)
    and, when this run trains nothing, the run it repeats (`previous`) and the line saying so."""

    tags: dict[str, str] = field(default_factory=dict)
    key: RunKey | None = None  # this run's inputs (None without tracking)
    previous: Previous | None = None  # the run this one repeats, when it trains nothing
    line: str | None = None

    @property
    def skip(self) -> bool:
        return self.previous is not None

    def to_json(self) -> dict[str, Any]:
        """The `unchanged` block of `recsys run --json` (only for a run that trained nothing)."""
        p = self.previous
        assert p is not None, "only a run that trained nothing has an unchanged block"
        return {"matches_run": p.run_id, "started": p.started, "in_progress": p.running, "message": self.line}


def _skip_line(previous: Previous, fingerprint: str) -> str:
    same = f"same data (fingerprint {fingerprint[:12]}), split, config and code"
    if previous.running:
        return (f"skipped: an identical run is in progress, run {previous.run_id} (started {previous.started}): "
                f"{same}; nothing trained, evaluated or registered; {FORCE_HINT}")  # fmt: skip
    return (f"skipped: unchanged since run {previous.run_id} ({previous.started}): {same}; nothing trained, "
            f"evaluated or registered; {FORCE_HINT}")  # fmt: skip


@contextmanager
def unchanged_check(
    cfg: RunConfig, tracker: Any, data: InteractionData, split: Split, scheduled: bool,
    log: Callable[[str], None] = print,
) -> Iterator[Unchanged]:
    """Look for the run these inputs repeat, and keep the lineage's lock until the block ends: open
    the run's parent inside it (with `.tags`), unless `.skip`. A store that cannot answer the look
    costs the skip, never the run."""
    if not getattr(tracker, "enabled", False) or getattr(tracker, "failure", None):
        yield Unchanged()
        return
    from recsys.errors import first_line
    from recsys.lineage import lineage
    from recsys.tracking import unchanged as u
    from recsys.tracking.locks import lineage_lock
    from recsys.tracking.runs import split_digest

    fingerprint = str(data.fingerprint or split.meta.get("fingerprint", ""))
    key = u.RunKey(lineage(cfg).id, fingerprint, split_digest(split), u.config_digest(cfg), u.code_digest(*code_roots()))
    skipping = skips_unchanged(cfg, scheduled)
    found = Unchanged(key.tags(), key)
    with lineage_lock(tracker.client, key.lineage_id):
        try:
            stale = cfg.tracking.stale_run_minutes * 60
            running = u.identical_running(tracker.client, tracker.experiment_id, key, stale) if skipping else None
            last = running or u.last_finished(tracker.client, tracker.experiment_id, key)
        except Exception as exc:  # the look is an optimisation: training is always correct
            log(f"warning: could not look for an identical earlier run ({first_line(exc)}): training")
            last = None
        if last is not None and last.same and skipping:
            found.previous, found.line = last, _skip_line(last, fingerprint)
            if not last.running:
                try:
                    u.note_unchanged(tracker.client, last.run_id)
                except Exception as exc:  # a tag on the earlier run; the skip stands
                    log(f"warning: could not tag run {last.run_id} as unchanged: {first_line(exc)}")
        elif last is not None and last.same:
            log(f"inputs unchanged since run {last.run_id} ({last.started}); training anyway (a run started by "
                "hand trains; --if-changed skips it)")  # fmt: skip
        elif last is not None and skipping:
            log(f"inputs changed since run {last.run_id} ({last.started}): {', '.join(last.changed)}; training")
        yield found
