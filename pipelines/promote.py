"""Step: choose a pipeline run's challenger on validation users and apply the promotion rule.

Selection and confirmation use different data. Candidates are ranked by `validation_<metric>` (the
warm validation users, logged by the evaluate step); the chosen one is then compared with the
champion once, on the test users (recsys.tracking.decision). Ranking by test and then testing the
winner on the same users would favour whichever candidate got lucky on them, and its p-value would
not mean what it says. A run without a validation part ranks on test and the rule divides its
significance level by the number of candidates (Bonferroni).

`recsys run` (after training) and `recsys promote` (any time later) both call `run_promotion` with
the run's candidates: the same selection, the same split (handed over, or read back from the run),
the same logged evaluation config - the same decision. Before it, `recsys run` asks
`automatic_promotion_refused`: a run with a failed model, or tested on fewer than
`promotion.min_test_users` users, moves no alias on its own; `recsys promote` is the deliberate way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pipelines.evaluate import VALIDATION_PREFIX
from recsys.config import RunConfig
from recsys.errors import TrackingError
from recsys.tracking.decision import Selection
from recsys.tracking.registry import PromotionDecision, promote
from recsys.tracking.runs import TAG_KIND
from recsys.tracking.store import check_tracking, client, metric_key, resolve_tracking_uri

if TYPE_CHECKING:
    from recsys.data.split import Split


def best_candidate(mlflow_client, run_ids: Sequence[str], metric: str) -> tuple[str, Selection]:
    """The finished run with the highest validation `metric` (ties: the first given), or - when some
    finished candidate has no validation value - the highest test `metric`, with how it was chosen."""
    runs = [_candidate_run(mlflow_client, run_id) for run_id in run_ids]
    for run in runs:
        if run.data.tags.get(TAG_KIND) == "pipeline":
            raise TrackingError(
                f"run {run.info.run_id} is a pipeline run, not a model run: pass its model runs to --run-id "
                "(`recsys compare --format csv`, column run_id), or leave --run-id out to promote the "
                "latest pipeline run's models"
            )
    finished = [r for r in runs if r.info.status == "FINISHED"]
    validation_key = metric_key(f"{VALIDATION_PREFIX}{metric}")
    if finished and all(validation_key in r.data.metrics for r in finished):
        key, basis = validation_key, "validation"
    else:
        key, basis = metric_key(metric), "test"
    scored = [(r.data.metrics[key], -i, r.info.run_id) for i, r in enumerate(finished) if key in r.data.metrics]
    if not scored:
        raise TrackingError(f"no finished candidate run has metric {metric!r} ({key}); runs: {list(run_ids)}")
    return max(scored)[2], Selection(basis, len(scored), metric)  # type: ignore[arg-type]


def _candidate_run(mlflow_client, run_id: str):
    """The run `run_id`, or a TrackingError naming it (a mistyped `--run-id` is the user's to fix,
    not a bug)."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_run(run_id)
    except MlflowException as exc:
        known = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # unknown id; '' or malformed
        if not any(code in str(exc.error_code) for code in known) and "not found" not in str(exc).lower():
            raise
        if (run := _run_by_prefix(mlflow_client, run_id)) is not None:
            return run
        raise TrackingError(
            f"no run with id {run_id!r} in {mlflow_client.tracking_uri}: pass a model run id from "
            "`recsys compare --format csv` (column run_id) to --run-id, or leave --run-id out to "
            "promote the latest pipeline run's models"
        ) from None


def _run_by_prefix(mlflow_client, prefix: str):
    """The one run whose id starts with `prefix` (4 or more hex digits), None when no run does: the
    run ids `recsys compare` and `recsys registry` print are their first 8 digits, and a user copies
    those. A prefix that several runs share is a TrackingError naming them."""
    import re

    if not re.fullmatch(r"[0-9a-f]{4,31}", prefix):
        return None
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    runs = mlflow_client.search_runs(experiments, max_results=50_000) if experiments else []
    found = [r for r in runs if r.info.run_id.startswith(prefix)]
    if len(found) > 1:
        shown = ", ".join(r.info.run_id for r in found[:5])
        raise TrackingError(f"run id {prefix!r} is the start of {len(found)} runs ({shown}): pass more of the id to --run-id")
    return found[0] if found else None


def automatic_promotion_refused(cfg: RunConfig, outcomes: Sequence, warm_test_users: int | None) -> str | None:
    """Why this run must not promote on its own (one line, naming `recsys promote`), else None.

    A run with a failed model exits 1, and a champion chosen among its survivors was chosen among
    fewer candidates than the config asks for. An Amazon Beauty sample under movielens.toml kept 23
    users after the k-core: 5 of 6 models failed, and popularity, scored on 1 test user, became the
    first champion of the line; every later data set on that config was then `not comparable` with
    it. `warm_test_users`: the test users with a training history, the ones a promotion compares
    on (None: not known, no floor applied). Only automatic promotion is refused: a person who has
    looked at the run can still promote it with `recsys promote`, which this line names."""
    failed = [m.name for m in outcomes if m.status == "failed"]
    deliberate = "`recsys promote` (with this run's --config / --set) promotes its finished models deliberately"
    if failed:
        return (f"not promoted automatically: {len(failed)} of {len(outcomes)} models failed ({', '.join(failed)}), "
                f"and a failed run never moves the champion on its own; {deliberate}")  # fmt: skip
    floor = cfg.promotion.min_test_users
    if warm_test_users is not None and warm_test_users < floor:
        return (f"not promoted automatically: only {warm_test_users} test user(s) with a training history, under "
                f"promotion.min_test_users = {floor}: too few to choose a champion on; add test users, or "
                f"{deliberate}")  # fmt: skip
    return None


def run_promotion(
    cfg: RunConfig,
    candidate_run_ids: Sequence[str] | Mapping[str, str],
    *,
    split: Split | None = None,
    force: bool = False,
) -> PromotionDecision:
    """Choose the pipeline run's challenger (validation users) and apply the promotion rule to it.

    `split`: the split the candidates were evaluated on (None: read back from their pipeline run).
    The champion is scored with the evaluation config the challenger's run logged, so this gives
    the same decision in the pipeline and in a later `recsys promote`."""
    run_ids = (
        list(candidate_run_ids.values())
        if isinstance(candidate_run_ids, Mapping)
        else list(candidate_run_ids)
    )
    if not run_ids:
        raise TrackingError("nothing to promote: no candidate runs")
    uri = resolve_tracking_uri(cfg.tracking)
    check_tracking(uri)
    mlflow_client = client(uri)
    challenger, selection = best_candidate(mlflow_client, run_ids, cfg.promotion.metric)
    return promote(mlflow_client, cfg.promotion, challenger, split=split, selection=selection, force=force)
