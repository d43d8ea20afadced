"""`recsys data synth` and `recsys data fetch`: data sets to try the pipeline on.

Thin wrappers: the work is in recsys.data.synthetic and recsys.data.fetch; these only parse flags,
print a short summary and turn RecsysError into one line with exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from recsys.cli.common import app, console, data_app, next_step, user_errors  # noqa: F401
from recsys.data.public_sets import DATASETS  # the names only: fetching loads urllib (see there)

PUBLIC_SETS = tuple(DATASETS)


@data_app.command("synth")
@user_errors(flags={"data.synthetic.n_clusters": "--clusters {value}"})
def synth_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for interactions.parquet and the cluster files.")
    ],
    users: Annotated[int, typer.Option("--users", min=1, help="Number of users.")] = 2000,
    items: Annotated[int, typer.Option("--items", min=1, help="Number of items.")] = 1000,
    clusters: Annotated[int, typer.Option("--clusters", min=1, help="Planted taste clusters (blocks).")] = 8,
    per_user: Annotated[
        float,
        typer.Option("--per-user", min=0.1, help="Mean interactions per user (log-normal, at least 3)."),
    ] = 30.0,
    popularity: Annotated[
        float,
        typer.Option("--popularity", min=0.0, help="Zipf exponent of item popularity within a cluster."),
    ] = 1.0,
    leakage: Annotated[
        float,
        typer.Option(
            "--leakage", min=0.0, max=1.0, help="Share of interactions with another cluster's items."
        ),
    ] = 0.0,
    noise: Annotated[
        float,
        typer.Option("--noise", min=0.0, max=1.0, help="Share of interactions with uniformly random items."),
    ] = 0.0,
    days: Annotated[int, typer.Option("--days", min=1, help="Timestamps span this many days.")] = 90,
    seed: Annotated[int, typer.Option("--seed", help="Same seed and flags = identical files.")] = 0,
) -> None:
    """Generate a planted-cluster data set whose right answer is known: users mostly interact with
    their own cluster's items, so folding (unrelated clusters collapsing together) can be measured.

    Writes interactions.parquet (canonical schema), user_clusters.parquet and item_clusters.parquet
    (id, block) and synthetic.json. Ingest with: recsys ingest OUT --out ... (the clusters become the
    folding blocks).

    Example: recsys data synth --out data/raw/synth --users 5000 --clusters 10 --leakage 0.05
    """
    from recsys.config import SyntheticConfig
    from recsys.data.synthetic import generate, summarize, write_data

    cfg = SyntheticConfig(
        n_users=users,
        n_items=items,
        n_clusters=clusters,
        interactions_per_user=per_user,
        popularity_exponent=popularity,
        leakage=leakage,
        noise_rate=noise,
        days=days,
        seed=seed,
    )
    data = generate(cfg)
    paths = write_data(data, out)
    summary = summarize(data)
    table = Table(title="synthetic data", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    for key, path in paths.items():
        table.add_row(key, str(path))
    console.print(table)
    next_step("recsys ingest", out, "--out", f"data/processed/{out.name}")


@data_app.command("fetch")
@user_errors
def fetch_command(
    name: Annotated[str, typer.Argument(help=f"Public data set: {', '.join(PUBLIC_SETS)}.")],
    raw_dir: Annotated[
        Path, typer.Option("--raw-dir", help="Download cache; a verified archive there is reused.")
    ] = Path("data/raw"),
    offline: Annotated[
        Path | None,
        typer.Option(
            "--offline",
            help="Use a zip (checksum-verified), an extracted folder or the set's interaction file "
            "(e.g. user_artists.dat) already on disk.",
        ),
    ] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="Mirror to download from (default: files.grouplens.org).")] = None,
) -> None:
    """Download a public archive (MovieLens, HetRec Last.fm) from GroupLens (progress bar, SHA-256
    check), unzip it under --raw-dir and print the path of its ratings file, ready for `recsys ingest`.
    Offline: --offline PATH (the zip, its unzipped folder or its interaction file) puts it in the
    same cache, where `recsys run` finds a set named in data.source (e.g. data.source = "movielens-100k").

    Example: recsys ingest "$(recsys data fetch movielens-1m)" --out data/processed/ml-1m --min-rating 4
    """
    from recsys.data.fetch import fetch
    from recsys.errors import DataError

    if name not in PUBLIC_SETS:  # the closest name first, as `recsys run --set data.source=...` gives it
        import difflib

        close = difflib.get_close_matches(name, list(PUBLIC_SETS), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"unknown public data set {name!r}{hint}; choose one of {', '.join(PUBLIC_SETS)}")
    ratings = fetch(name, raw_dir, offline=offline, base_url=base_url)  # type: ignore[arg-type]
    typer.echo(str(ratings))
