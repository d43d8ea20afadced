"""Human-readable summaries of a pipeline run: the terminal table and the markdown artifact."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.table import Table

from recsys.config import RunConfig

if TYPE_CHECKING:
    from pipelines.run import PipelineResult

HEADLINE = ("recall@20", "ndcg@20", "recall@50", "coverage@20")
_STATUS_STYLE = {"failed": "red", "skipped": "yellow"}


def _count(value: object) -> str:
    """176,985 rather than 176985 (a count read from the run's dataset record; shown as is otherwise)."""
    return f"{value:,}" if isinstance(value, int) else str(value)


def _columns(cfg: RunConfig) -> list[str]:
    wanted = [cfg.promotion.metric, *HEADLINE]
    return list(dict.fromkeys(wanted))


def _plain(values: dict, key: str) -> str:
    return f"{values[key]:.4f}" if key in values else "-"


def _cold(m, key: str) -> str:
    return _plain(m.cold.get("group", {}).get("metrics", {}), key)


def _fold_cell(folding: dict, key: str | None) -> str:
    """The folding value, or "-" where the measure does not apply (nan: e.g. popularity's
    one-dimensional vectors have no embedding view)."""
    value = folding.get(key) if key else None
    return "-" if value is None or value != value else f"{value:.3f}"


def _fold_key(folding: dict) -> str | None:
    return next((k for k in folding if k.startswith(("folding@", "neighbour_cross"))), None)


def _cell(metrics: dict, ci: dict, key: str, compact: bool = False, stacked: bool = False) -> str:
    """mean [lo, hi] (markdown, --wide) or mean ±half-width (terminal) of the bootstrap interval."""
    from recsys.tables import interval_cell

    if key not in metrics:
        return "-"
    return interval_cell(metrics[key], *(ci.get(key) or (None, None)), wide=not compact, stacked=stacked)


FOLD_LABELS = {"folding": "folding", "neighbour_cross_cluster": "cross-cluster"}
FOLD_NOTES = {
    "folding": "folding@k: share of top-k lists in blocks the user never touched",
    "neighbour_cross_cluster": "cross-cluster@n: share of an item's n nearest neighbours in another "
    "k-means cluster (no blocks known: a weaker signal than folding on known blocks)",
}


def fold_header(result: PipelineResult) -> str:
    """The folding column says which measure it holds: folding@k where the data has blocks, the
    embedding view on found clusters (cross-cluster nbrs@n) otherwise; never two under one name."""
    keys = sorted({k for m in result.models if m.status == "ok" and (k := _fold_key(m.folding))})
    labels = []
    for key in keys:
        name, _, at = key.partition("@")
        labels.append(f"{FOLD_LABELS.get(name, name)}@{at}")
    return " / ".join(labels) or "folding"


def fold_note(result: PipelineResult) -> str | None:
    """One line saying what the folding column measures (a table caption)."""
    names = sorted({k.partition("@")[0] for m in result.models if m.status == "ok" and (k := _fold_key(m.folding))})
    notes = [FOLD_NOTES[n] for n in names if n in FOLD_NOTES]
    return "; ".join(notes) or None


def status_notes(result: PipelineResult) -> str | None:
    """One caption line per model that did not finish: why it was skipped or failed.

    The reason is a sentence (EASE's memory bound on a 17,632-artist Last.fm catalogue is ~300
    characters); in a table cell it wrapped one word per line into ~30 rows and pushed the models
    that did finish apart, so the cell says only `skipped` / `failed` and the reason goes here."""
    from rich.markup import escape

    lines = []
    for m in result.models:
        if m.status != "ok":  # escaped: a reason may quote a list, `[...]`, that rich reads as markup
            reason = (m.error or "").removeprefix(f"model '{m.name}': ")
            lines.append(escape(f"{m.name} {m.status}: {reason}"))
    return "\n".join(lines) or None


def tuning_notes(result: PipelineResult, cfg: RunConfig) -> str | None:
    """One caption line per model whose search `tuning.timeout_s` cut short. With the same seed,
    data and n_trials a search chooses the same parameters every run, but the guard is wall-clock:
    on a busy machine fewer trials run and another may win. A library-loans log (64k rows, 2 shared
    cores) ran 5 two-tower trials, then 3 on a second run beside another job, and the two-tower's
    recall@20 moved 0.1179 -> 0.1169 with nothing in the summary saying why (only the run's
    `recsys.tuning.timed_out` tag and an INFO log line did)."""
    budgets = {m.name: m.tuning for m in cfg.models if m.tuning is not None}
    lines = []
    for m in result.models:
        tuning = budgets.get(m.name)
        if m.status != "ok" or not m.tuning.get("timed_out") or tuning is None or tuning.timeout_s is None:
            continue
        ran = m.tuning.get("trials", 0)
        lines.append(
            f"{m.name}: its search hit tuning.timeout_s = {tuning.timeout_s:g} s ({ran} of {tuning.n_trials} trials "
            "ran, the last maybe cut short), so a rerun on a machine more or less busy may choose other parameters; "
            f"raise it (--set models.{m.name}.tuning.timeout_s={2 * tuning.timeout_s:g}) for runs that must repeat"
        )
    return "\n".join(lines) or None


def below_popularity_notes(result: PipelineResult, cfg: RunConfig) -> str | None:
    """One caption line per learned model whose test `promotion.metric` is at or below popularity's:
    it learned less than item counts. A Foursquare check-in log's second run ranked the two-tower
    at recall@20 0.0774 beside popularity's 0.0935 (its search cut to 2 trials by the timeout, the
    data-aware first trial below popularity on that log), and only the numbers in the table said so.
    Where that model's search was cut short, the line says so (`tuning_notes` gives the option)."""
    metric = cfg.promotion.metric
    floors = [m.metrics[metric] for m in result.models if m.kind == "popularity" and m.status == "ok" and metric in m.metrics]
    if not floors or max(floors) != max(floors):  # no popularity, or nan
        return None
    floor = max(floors)
    lines = []
    for m in result.models:
        value = m.metrics.get(metric)
        if m.kind == "popularity" or m.status != "ok" or value is None or value != value or value > floor:
            continue
        why = " (its search was cut short: see below)" if m.tuning.get("timed_out") else ""
        lines.append(f"{m.name} is at or below popularity: {metric} {value:.4f} vs {floor:.4f}{why}")
    return "\n".join(lines) or None


def marked_model(result: PipelineResult) -> tuple[str | None, str]:
    """The model of this run the table marks (`*`), and what it is: the champion when this run's
    challenger was promoted, else this run's best model (its challenger; the best by the promotion
    metric when nothing was decided). `result.champion` after `kept` / `not comparable` is an earlier
    run's model - of another data set when the lineages differ - so marking this run's model of
    that name (a WALS on Amazon reviews starred for an ML-1M WALS) read as if this run had one."""
    promotion = result.promotion or {}
    if promotion.get("decision") == "promoted":
        return result.champion, "champion"
    if promotion.get("decision"):
        return promotion.get("challenger"), "best of this run, not promoted"
    return result.champion, "best of this run"


def interval_note(cfg: RunConfig, wide: bool) -> str:
    """What a metric cell's interval is (a table caption line): the level is the run's
    `evaluation.confidence`, which the cells did not say (`recsys compare` names it too)."""
    shape = "\\[low, high]" if wide else "±half-width"  # escaped: rich would read [low, high] as markup
    return f"{shape}: {cfg.evaluation.confidence:.0%} bootstrap interval over the test users (evaluation.confidence)"


def comparison_table(result: PipelineResult, cfg: RunConfig, wide: bool = False, width: int | None = None) -> Table:
    """The run's models side by side, fitted to `width` columns: loss / sampler, fit s, the cold and
    validation columns and the later metrics are left out (in that order) when it must; the model
    name never is."""
    from recsys.tables import STACKED, add_name_column, add_value_column, fit_width

    cols = _columns(cfg)

    val, cold = f"val {cfg.promotion.metric}", f"cold {cfg.promotion.metric}"
    # The cold group is the few test users without a training history: often a handful (1 of 2,000
    # on the default config, the same popularity answer for every model), so it is the first column
    # to go, before the loss / sampler that tells the two-towers apart, and absent without cold users.
    no_cold = set() if result.dataset.get("cold_test_users") else {cold}

    marked, _ = marked_model(result)

    def build(hidden: set[str]) -> Table:
        hidden = hidden | no_cold
        stacked = STACKED in hidden
        shown = [c for c in cols if c not in hidden]
        extra = [name for name in ("loss / sampler", val, cold, "fit s") if name not in hidden]
        table = Table(title=f"{cfg.name}: {result.dataset.get('split')} split, "
                      f"{_count(result.dataset.get('users'))} users x {_count(result.dataset.get('items'))} items",
                      caption="\n".join(filter(None, (interval_note(cfg, wide), fold_note(result),
                                                       status_notes(result), below_popularity_notes(result, cfg),
                                                       tuning_notes(result, cfg)))) or None,
                      caption_justify="left")  # fmt: skip
        add_name_column(table, "model", [m.name + " *" for m in result.models])
        if "loss / sampler" in extra:
            table.add_column("loss / sampler", no_wrap=True)
        for c in shown:
            add_value_column(table, c, wide)
        for name in (val, cold):
            if name in extra:
                add_value_column(table, name)
        table.add_column(fold_header(result), justify="right", no_wrap=True, min_width=len(fold_header(result)))
        if "fit s" in extra:
            # never below its header: squeezed to one letter it showed "…" for every time instead of
            # being left out and named
            table.add_column("fit s", justify="right", min_width=len("fit s"))
        for m in result.models:
            name = m.name + (" *" if m.name == marked else "")
            joint = "\n" if stacked else " / "
            what = [f"{m.loss}{joint}{m.sampler}" if m.loss else m.kind] if "loss / sampler" in extra else []
            side = [_plain(m.validation, cfg.promotion.metric)] if val in extra else []
            side += [_cold(m, cfg.promotion.metric)] if cold in extra else []
            if m.status != "ok":
                # the status in the last column shown (fit s, else folding); the reason: the caption
                status = f"[{_STATUS_STYLE[m.status]}]{m.status}[/]"
                last = ["-", status] if "fit s" in extra else [status]
                table.add_row(name, *what, *(["-"] * (len(shown) + len(side))), *last)
                continue
            fold = _fold_key(m.folding)
            table.add_row(
                name, *what, *(_cell(m.metrics, m.ci, c, compact=not wide, stacked=stacked) for c in shown), *side,
                _fold_cell(m.folding, fold), *([f"{m.fit_seconds:.1f}"] if "fit s" in extra else []),
            )  # fmt: skip
        return table

    optional = [*([] if no_cold else [cold]), "loss / sampler", "fit s", val, *reversed(cols[1:])]
    return fit_width(build, optional, None if wide else width)


def comparison_markdown(result: PipelineResult, cfg: RunConfig) -> str:
    cols = _columns(cfg)
    lines = [
        f"# {cfg.name}: model comparison",
        "",
        f"Data: {_count(result.dataset.get('users'))} users, {_count(result.dataset.get('items'))} items, "
        f"{_count(result.dataset.get('train_interactions'))} train / {_count(result.dataset.get('test_interactions'))} test "
        f"interactions, `{result.dataset.get('split')}` split, fingerprint `{result.dataset.get('fingerprint')}`.",
        f"Lineage `{result.dataset.get('lineage', '-')}`, split digest `{result.dataset.get('split_digest', '-')}`. "
        f"Metrics are over test users with a training history; {result.dataset.get('cold_test_users', 0)} cold test "
        f"users are scored by the fallback (cold column), {result.dataset.get('cold_test_items', 0)} cold items "
        "are masked.",
        "",
        "| model | loss / sampler | " + " | ".join(cols)
        + f" | val {cfg.promotion.metric} | cold {cfg.promotion.metric} | {fold_header(result)} | fit s | MLflow run |",
        "|---" * (len(cols) + 7) + "|",
    ]
    marked, label = marked_model(result)
    for m in result.models:
        fold = _fold_key(m.folding)
        run = f"`{m.mlflow_run_id}`" if m.mlflow_run_id else "-"
        if m.status != "ok":
            lines.append(f"| {m.name} | {m.kind} | " + " | ".join("-" for _ in cols) + f" | - | - | - | {m.status}: {m.error} | {run} |")
            continue
        lines.append(
            f"| {m.name}{f' ({label})' if m.name == marked else ''} | "
            f"{f'{m.loss}/{m.sampler}' if m.loss else m.kind} | "
            + " | ".join(_cell(m.metrics, m.ci, c) for c in cols)
            + f" | {_plain(m.validation, cfg.promotion.metric)} | {_cold(m, cfg.promotion.metric)}"
            + f" | {_fold_cell(m.folding, fold)}"
            + f" | {m.fit_seconds:.1f} | {run} |"
        )
    if result.tracking_uri:
        lines += ["", f"MLflow: `{result.tracking_uri}`, parent run `{result.mlflow_parent_run_id}`."]
    if fold_note(result):
        lines += ["", f"Folding column: {fold_note(result)}."]
    if warning := run_warning(result, cfg):
        lines += ["", f"Warning: {warning}."]
    if result.promotion:
        decision = result.promotion.get("decision") or ""
        lines += ["", f"Promotion{f' ({decision})' if decision else ''}: {result.promotion.get('reason', '')}"]
    return "\n".join(lines) + "\n"


SMALL_TEST_TAG = "recsys.small_test_warning"
"""Set on the pipeline's parent run when the best model's lead is within its own interval."""

MORE_TEST_USERS = {
    "random": "a larger split.test_fraction",
    "temporal": "a larger split.test_fraction",
    "rolling": "a longer split.window_days",
    "strong_generalization": "a larger split.heldout_users",
}
"""The split option that puts more users in the test set, by protocol (leave_last_n already tests
every user with enough history: only more data helps there)."""


MIN_TEST_USERS = 10
"""Below this many test users `small_test_warning` always warns: the Amazon Beauty ratings
(a 30,000-row prefix) keep 23 users after the MovieLens config's 5-core and test one of them, on
whom WALS scored recall@20 = 1.0000 ±0.000 and popularity 0.0000 ±0.000: intervals of no width
that the lead rule reads as a clear win."""


def small_test_warning(
    scores: Mapping[str, tuple[float, tuple[float, float] | list[float] | None]],
    *,
    metric: str,
    n_users: int,
    confidence: float,
    protocol: str,
    popularity: set[str] | frozenset[str] = frozenset(),
) -> str | None:
    """One line when this test set cannot tell the best model from popularity (or has fewer than
    MIN_TEST_USERS users, whatever the scores and however many models finished: the Amazon Beauty
    run above, where only popularity finished, printed nothing), else None.

    `scores`: each model's mean `metric` over the test users and its bootstrap interval, as the
    evaluation already computed them (no second resampling). The rule: a popularity model's mean
    lies inside the best model's interval (the lead is under its half-width). On 75 test users of a
    head-heavy log every model tied with popularity and only the intervals said so; this names it
    and what would help. Two good models close to each other are not warned about: that is an
    ordinary result on any test set (the promotion's paired test speaks to it), and a line on every
    MovieLens run would teach users to skip warnings."""
    option = MORE_TEST_USERS.get(protocol)
    helps = f"more data, or {option}" if option else "more data"
    if 0 < n_users < MIN_TEST_USERS and scores:  # one finished model too: its numbers mean as little
        choice = " or the choice between the models" if len(scores) >= 2 else ""
        return (
            f"only {n_users} test user(s): too few for the {confidence:.0%} bootstrap intervals{choice} to mean "
            f"much (over one user an interval has no width at all); add test users ({helps})"
        )
    ranked = sorted(
        ((mean, name, ci) for name, (mean, ci) in scores.items() if mean == mean and ci and ci[0] == ci[0]),
        key=lambda row: -row[0],
    )
    if len(ranked) < 2:
        return None
    best, name, (low, high) = ranked[0]
    half = (high - low) / 2
    within = [(other, best - mean) for mean, other, _ in ranked[1:] if best - mean < half]
    base = next(((o, g) for o, g in within if o in popularity), None)
    if base is None:
        return None
    runner, gap = within[0]
    lead = f"leads {runner} by only {gap:.4f}" if gap > 0 else f"ties with {runner}"
    if runner != base[0]:
        lead += f" and {base[0]} by {base[1]:.4f}"
    return (
        f"the best model is not significantly better than popularity on {n_users} test users: {name}'s {metric} "
        f"{best:.4f} ±{half:.4f} ({confidence:.0%} bootstrap interval) {lead}, less than that half-width; "
        f"more test users would narrow the intervals ({helps})"
    )


def saturated_warning(means: Mapping[str, float], *, metric: str, n_items: int, n_users: int) -> str | None:
    """One line when every model scores `metric` = 1 on the test users: a catalogue so small that
    few items are left to rank once a user's history is excluded. Amazon Fashion's 5-core log
    keeps 12 items under the MovieLens config, and popularity and WALS both scored recall@20 (and
    recall@1) = 1.0000 ±0.000: a tie the interval rule below cannot see (no interval, no lead), so
    the champion was chosen on nothing, without a word."""
    values = [mean for mean in means.values() if mean == mean]
    if len(values) < 2 or min(values) < 1 - 1e-9:
        return None
    k = metric.rpartition("@")[2]
    smaller = "evaluate at a smaller k (evaluation.ks and promotion.metric) or " if k.isdigit() and int(k) > 1 else ""
    return (
        f"every model scores {metric} = 1, its ceiling, on the {n_users} test users, so it cannot tell the "
        f"models apart: with {n_items} items, few are left to rank once a user's history is excluded; "
        f"{smaller}use a log with more items"
    )


def run_warning(result: PipelineResult, cfg: RunConfig) -> str | None:
    """`saturated_warning`, else `small_test_warning`, for a pipeline run's models (test metrics,
    as the comparison table)."""
    metric = cfg.promotion.metric
    scores = {m.name: (m.metrics[metric], m.ci.get(metric)) for m in result.models
              if m.status == "ok" and metric in m.metrics}  # fmt: skip
    saturated = saturated_warning(
        {name: mean for name, (mean, _) in scores.items()}, metric=metric,
        n_items=int(result.dataset.get("items", 0)), n_users=int(result.dataset.get("warm_test_users", 0)),
    )  # fmt: skip
    if saturated:
        return saturated
    return small_test_warning(
        scores, metric=metric, n_users=int(result.dataset.get("warm_test_users", 0)),
        confidence=cfg.evaluation.confidence, protocol=str(result.dataset.get("split")),
        popularity={m.name for m in result.models if m.kind == "popularity"},
    )  # fmt: skip


def tracking_failed_line(summary: dict, args: str = "") -> str:
    """The error line of a run whose tracking store failed: which store, how, what was kept where,
    and the command that logs it once the store is back, with this run's store options (`args`,
    `store_args`). Printed bare, `recsys run --resume-tracking DIR` read the default config: after a
    run with `--set tracking.experiment=...` (or another --config) it logged the kept runs into
    another experiment, where `recsys promote` never found them, and marked the bundle logged."""
    from recsys.tracking.store import is_http, is_lost_connection

    uri, failure, where = summary.get("tracking_uri") or "", summary["tracking_error"], summary.get("unlogged_dir")
    store = f"the MLflow tracking server {uri}" if is_http(uri) else f"the tracking store {uri}"
    how = "stopped answering" if is_lost_connection(failure) else "failed"
    kept = sum(1 for m in summary["models"] if m.get("unlogged"))
    logged = sum(1 for m in summary["models"] if m.get("status") == "ok" and not m.get("unlogged"))
    if kept:
        what, them = f"{kept} trained model(s) and the run's logs are kept in {where}", "them"
    else:  # every model reached the store: what is kept is the pipeline run's own record
        what, them = f"the {logged} trained model(s) were logged before; the run's own record is kept in {where}", "it"
    return (f"{store} {how} during the run ({failure}); {what}: once it answers again, log {them} with "
            f"`recsys run{args} --resume-tracking {shlex.quote(str(where))}`")  # fmt: skip
