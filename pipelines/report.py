"""Human-readable summaries of a pipeline run: the terminal table and the markdown artifact."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from recsys.config import RunConfig

if TYPE_CHECKING:
    from pipelines.run import PipelineResult

HEADLINE = ("recall@20", "ndcg@20", "recall@50", "coverage@20")


def _columns(cfg: RunConfig) -> list[str]:
    wanted = [cfg.promotion.metric, *HEADLINE]
    return list(dict.fromkeys(wanted))


def _plain(values: dict, key: str) -> str:
    return f"{values[key]:.4f}" if key in values else "-"


def _cold(m, key: str) -> str:
    return _plain(m.cold.get("group", {}).get("metrics", {}), key)


def _fold_key(folding: dict) -> str | None:
    return next((k for k in folding if k.startswith(("folding@", "neighbour_cross"))), None)


def _cell(metrics: dict, ci: dict, key: str, compact: bool = False) -> str:
    """mean [lo, hi] (markdown) or mean ±half-width (terminal) of the bootstrap interval."""
    if key not in metrics:
        return "-"
    lo_hi = ci.get(key)
    if not lo_hi:
        return f"{metrics[key]:.4f}"
    if compact:
        return f"{metrics[key]:.4f} ±{(lo_hi[1] - lo_hi[0]) / 2:.3f}"
    return f"{metrics[key]:.4f} [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"


def comparison_table(result: PipelineResult, cfg: RunConfig) -> Table:
    cols = _columns(cfg)
    table = Table(title=f"{cfg.name}: {result.dataset.get('split')} split, "
                  f"{result.dataset.get('users')} users x {result.dataset.get('items')} items")
    table.add_column("model")
    table.add_column("loss / sampler")
    for c in cols:
        table.add_column(c, justify="right")
    table.add_column(f"val {cfg.promotion.metric}", justify="right")
    table.add_column(f"cold {cfg.promotion.metric}", justify="right")
    table.add_column("folding", justify="right")
    table.add_column("fit s", justify="right")
    for m in result.models:
        champion = " *" if m.name == result.champion else ""
        if m.status != "ok":
            table.add_row(m.name + champion, m.kind, *(["-"] * (len(cols) + 2)), "-", f"[red]failed: {m.error}[/]")
            continue
        fold = _fold_key(m.folding)
        table.add_row(
            m.name + champion,
            f"{m.loss}/{m.sampler}" if m.loss else m.kind,
            *(_cell(m.metrics, m.ci, c, compact=True) for c in cols),
            _plain(m.validation, cfg.promotion.metric),
            _cold(m, cfg.promotion.metric),
            f"{m.folding[fold]:.3f}" if fold else "-",
            f"{m.fit_seconds:.1f}",
        )
    return table


def comparison_markdown(result: PipelineResult, cfg: RunConfig) -> str:
    cols = _columns(cfg)
    lines = [
        f"# {cfg.name}: model comparison",
        "",
        f"Data: {result.dataset.get('users')} users, {result.dataset.get('items')} items, "
        f"{result.dataset.get('train_interactions')} train / {result.dataset.get('test_interactions')} test "
        f"interactions, `{result.dataset.get('split')}` split, fingerprint `{result.dataset.get('fingerprint')}`.",
        f"Lineage `{result.dataset.get('lineage', '-')}`, split digest `{result.dataset.get('split_digest', '-')}`. "
        f"Metrics are over test users with a training history; {result.dataset.get('cold_test_users', 0)} cold test "
        f"users are scored by the fallback (cold column), {result.dataset.get('cold_test_items', 0)} cold items "
        "are masked.",
        "",
        "| model | loss / sampler | " + " | ".join(cols)
        + f" | val {cfg.promotion.metric} | cold {cfg.promotion.metric} | folding | fit s | MLflow run |",
        "|---" * (len(cols) + 7) + "|",
    ]
    for m in result.models:
        fold = _fold_key(m.folding)
        run = f"`{m.mlflow_run_id}`" if m.mlflow_run_id else "-"
        if m.status != "ok":
            lines.append(f"| {m.name} | {m.kind} | " + " | ".join("-" for _ in cols) + f" | - | - | - | failed: {m.error} | {run} |")
            continue
        lines.append(
            f"| {m.name}{' (champion)' if m.name == result.champion else ''} | "
            f"{f'{m.loss}/{m.sampler}' if m.loss else m.kind} | "
            + " | ".join(_cell(m.metrics, m.ci, c) for c in cols)
            + f" | {_plain(m.validation, cfg.promotion.metric)} | {_cold(m, cfg.promotion.metric)}"
            + (f" | {m.folding[fold]:.3f}" if fold else " | -")
            + f" | {m.fit_seconds:.1f} | {run} |"
        )
    if result.tracking_uri:
        lines += ["", f"MLflow: `{result.tracking_uri}`, parent run `{result.mlflow_parent_run_id}`."]
    if result.promotion:
        decision = result.promotion.get("decision") or ""
        lines += ["", f"Promotion{f' ({decision})' if decision else ''}: {result.promotion.get('reason', '')}"]
    return "\n".join(lines) + "\n"
