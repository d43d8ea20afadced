"""Lineage: which stream of data and which pipeline a model comes from.

A scheduled pipeline runs the same config on a log that grows; its runs form a lineage, named by
the config's `name` and the normalised data source. Only models of one lineage are compared: a
champion trained on MovieLens is never replaced by (or compared with) a model trained on a Last.fm
log, even when the same config and registered model name were used for both. The lineage is
tagged on every run (`recsys.lineage`, `recsys.lineage_id`), on the registry line and on its
versions; `recsys compare` groups by it, and later tuning can warm-start from the champion of the
same lineage.

Normalising the source: `file://` URLs and local paths name the same place (resolved, absolute,
no trailing slash); other URLs keep their scheme and path with the host lower-cased; a public set
name ("movielens-100k") is itself; "synthetic" carries its generator settings, since two different
generators are two different data sets.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from recsys.config import DataConfig, RunConfig

TAG_LINEAGE = "recsys.lineage"
TAG_LINEAGE_ID = "recsys.lineage_id"


@dataclass(frozen=True)
class Lineage:
    """`name` is human-readable (config name | source); `id` a short stable digest of it."""

    config_name: str
    source: str

    @property
    def name(self) -> str:
        return f"{self.config_name}|{self.source}"

    @property
    def id(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()[:12]

    def tags(self) -> dict[str, str]:
        return {TAG_LINEAGE: self.name, TAG_LINEAGE_ID: self.id}


def normalised_source(data: DataConfig) -> str:
    """The data source as one canonical string (see the module docstring)."""
    source = data.source.strip()
    if source == "synthetic":
        settings = json.dumps(data.synthetic.model_dump(mode="json"), sort_keys=True)
        return f"synthetic:{hashlib.sha256(settings.encode()).hexdigest()[:8]}"
    parts = urlsplit(source)
    if parts.scheme and len(parts.scheme) > 1:  # a URL (a one-letter scheme is a Windows drive)
        if parts.scheme == "file":
            return str(Path(parts.path).expanduser().resolve())
        path = parts.path.rstrip("/") or "/"
        return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))
    candidate = Path(source).expanduser()
    if candidate.exists() or "/" in source or source.startswith("."):
        return str(candidate.resolve())
    return source  # a public data set name, e.g. "movielens-100k"


def lineage(cfg: RunConfig) -> Lineage:
    return Lineage(cfg.name, normalised_source(cfg.data))


def own_line(registered_model: str, lineage_name: str) -> str:
    """The registry line to give `lineage_name` when `registered_model` serves another lineage:
    `<registered_model>-<data set>-<6 hex of the lineage>` (e.g. `recsys-best-ml-1m-3fa2b1`). The
    same lineage always gets the same name, so every later run of it that sets it lands on the one
    line; the digest keeps two sources with one file name (or two config names on one source)
    apart. Suggested, never used on its own: a serving URI is something a team chooses, and a
    mistyped data path must not quietly start a line of its own."""
    source = lineage_name.partition("|")[2].rstrip("/")
    stem = re.split(r"[/\\]", source)[-1]
    stem = stem.split(".", 1)[0] if not stem.startswith(".") else stem
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(lineage_name.encode()).hexdigest()[:6]
    return f"{registered_model}-{slug}-{digest}" if slug else f"{registered_model}-{digest}"
