"""Step: ingest the file or directory named by `cfg.data.source` into a processed directory.

The orchestrator-agnostic wrapper around `recsys.data.ingest.ingest` for file sources; synthetic
data is generated first by the data step and then ingested with its planted clusters as labels
(see pipelines/data.py). Returns the library's IngestReport unchanged, so flows can log it.
"""

from __future__ import annotations

import re
from pathlib import Path

from recsys.config import ConfigError, RunConfig
from recsys.data.ingest import IngestReport, ingest


def default_out_dir(cfg: RunConfig) -> Path:
    """`<data.processed_dir>/<source name>`: one processed directory per source."""
    stem = Path(cfg.data.source.rstrip("/")).name
    for suffix in (".gz", ".parquet", ".pq", ".csv", ".tsv", ".jsonl", ".ndjson", ".inter", ".dat", ".data", ".txt"):
        stem = stem.removesuffix(suffix)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "data"
    return Path(cfg.data.processed_dir) / slug


def run_ingest(cfg: RunConfig, out_dir: Path | None = None, *, append: bool = False) -> IngestReport:
    """Ingest `cfg.data.source` (a file or directory of raw interactions) with `cfg.data` settings."""
    source = cfg.data.source
    if source == "synthetic":
        raise ConfigError(
            "run_ingest reads files; for data.source = 'synthetic' use the data step (pipelines/data.py)"
        )
    return ingest(
        source, out_dir or default_out_dir(cfg), cfg.data, format=cfg.data.format, append=append
    )
