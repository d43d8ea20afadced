"""`recsys data combine`: build block-disjoint data for the folding diagnostic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.table import Table

from recsys.cli.common import (
    DataConfigOption,
    JsonOption,
    SetOption,
    console,
    data_app,
    load_run_config,
    run_on,
    user_errors,
    write_text_atomic,
)
from recsys.cli.data_cmds import source_path


@data_app.command("combine")
@user_errors
def combine_command(
    sources: Annotated[
        list[Path],
        typer.Argument(
            parser=source_path,  # an empty one ("$A" unset) was the working directory
            help="Two or more raw interaction files/directories (any readable format) or processed data directories.",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Processed data directory to write (replaced atomically).")
    ],
    prefix_ids: Annotated[
        bool,
        typer.Option(
            "--prefix-ids/--no-prefix-ids",
            help="Prefix ids with their source (b0:, b1:, ...) so any sources are disjoint; without it shared ids are an error.",
        ),
    ] = True,
    format: Annotated[
        str | None,
        typer.Option("--format", "-f", help="Force the reader for raw sources (see `recsys ingest --help`)."),
    ] = None,
    blocks: Annotated[
        Literal["source", "nested"],
        typer.Option(
            "--blocks",
            help="Block labels: 'source' = source index; 'nested' = keep a source's own labels, offset per source.",
        ),
    ] = "source",
    json_out: JsonOption = None,
    config: DataConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Merge interaction sets with disjoint users and items into one processed directory that records
    the block (source) of every user and item, for the folding diagnostic: a model trained on the
    union should never recommend one block's items to another block's users.

    Raw sources are ingested with the config's data section (positive rule, aggregation, k-core).

    Example: recsys data combine ml-100k.inter ml-100k.inter --out data/processed/ml100k-x2
    """
    from recsys.data.combine import combine

    data_cfg = load_run_config(config, overrides).data
    with console.status("combining ...") as status:
        report = combine(
            sources,
            out,
            data_cfg,
            prefix_ids=prefix_ids,
            format=format,
            blocks=blocks,
            progress=lambda stage: status.update(f"combine: {stage} ..."),
        )
    table = Table(title=f"combined -> {report.out_dir}", title_justify="left")
    for column in ("source", "kind", "prefix", "blocks", "users", "items", "interactions"):
        table.add_column(column, justify="right" if column in {"users", "items", "interactions"} else "left")
    for s in report.sources:
        table.add_row(
            s.path,
            s.kind,
            s.prefix or "-",
            ",".join(map(str, s.blocks)),
            f"{s.users:,}",
            f"{s.items:,}",
            f"{s.interactions:,}",
        )
    table.add_row("total", "", "", "", f"{report.users:,}", f"{report.items:,}", f"{report.interactions:,}")
    console.print(table)
    run_on(out, config)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(report.to_json_dict(), indent=2) + "\n")
