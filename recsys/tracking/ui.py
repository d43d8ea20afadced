"""What a person sees in the MLflow UI: a model-training experiment whose runs table shows the key
metrics, named datasets, a source and a link from each model run to its model and registry version.

How the MLflow 3.17 UI decides (read from its bundled JavaScript; the docs do not say):

- GenAI or model training. The sidebar switch "GenAI | Model training" is one setting per browser
  (local storage, default GenAI), overridden by the URL parameter `workflowType=machine_learning`;
  opening an experiment redirects to its GenAI Overview or to its Runs table accordingly. Earlier
  3.x releases read the experiment tag `mlflow.experimentKind` instead. So experiments carry the
  tag (`custom_model_development`), and every link recsys prints carries the parameter.
- Runs table columns are browser state too (default: Dataset, Source, Models; no metrics), and
  child runs are nested, collapsed, under their parent whenever the table is sorted by start time
  without a filter. A *saved view* is shared through the experiment: the tag
  `mlflow.sharedViewState.<id>` holds its sort, filter and columns, the "Views" menu lists it, and
  `?viewStateShareKey=<id>` opens it. Ours lists model runs by the promotion metric with recall@k,
  ndcg@k and folding@k as the first columns.
- Dataset column: the run's dataset input, shown as "name (digest)".
- Source column: the tags `mlflow.source.name` / `mlflow.source.type` (and the git commit).
- Models column: the run's `mlflow.log-model.history` tag (what `log_model` records), merged with
  the registered versions made from the run.
"""

from __future__ import annotations

import getpass
import json
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from recsys.tracking.store import metric_key

if TYPE_CHECKING:
    from mlflow import MlflowClient

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
WORKFLOW_PARAM = {"workflowType": "machine_learning"}
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_ID = "recsys-models"
KEY_METRICS = ("recall", "ndcg", "folding")  # at the promotion metric's k
SOURCE_NAME, SOURCE_TYPE, SOURCE_COMMIT, USER = (
    "mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit", "mlflow.user",
)  # fmt: skip
INHERITED_PREFIXES = ("mlflow.source.", USER)  # a model run has its pipeline run's source


def key_metrics(metric: str = "recall@20") -> list[str]:
    """The promotion metric first, then recall / ndcg / folding at its k (20 when it has none)."""
    match = re.search(r"@(\d+)$", metric)
    k = match.group(1) if match else "20"
    names = [metric] + [f"{name}@{k}" for name in KEY_METRICS]
    return list(dict.fromkeys(names))


def _column(metric: str) -> str:
    return f"metrics.`{metric_key(metric)}`"


def models_view(metric: str = "recall@20", now_ms: int | None = None) -> str:
    """The saved view's tag value: model runs (not their pipeline parents) sorted by `metric`,
    flat, with the key metrics as the first columns, then the model, source and dataset."""
    metrics = [_column(m) for m in key_metrics(metric)]
    columns = metrics + ["attributes.`Models`", "attributes.`Source`", "attributes.`Dataset`"]
    state = {
        "searchFilter": "tags.`recsys.kind` = 'model'",
        "orderByKey": _column(metric),
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": columns,
    }
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    name = f"recsys: models by {metric}"
    return json.dumps({"name": name, "createdAt": stamp, "updatedAt": stamp, "state": json.dumps(state)})


def experiment_tags(metric: str = "recall@20") -> dict[str, str]:
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND, VIEW_TAG_PREFIX + VIEW_ID: models_view(metric)}


def present_experiment(client: MlflowClient, experiment_id: str, metric: str = "recall@20") -> None:
    """Give the experiment the tags above where it lacks them (a view a person edited is kept)."""
    experiment = client.get_experiment(experiment_id)
    for key, value in experiment_tags(metric).items():
        if key not in experiment.tags:
            client.set_experiment_tag(experiment_id, key, value)


def runs_page_url(base_url: str, experiment_id: str | None) -> str:
    """The experiment's runs table in model-training mode with the recsys view (the experiment list
    when the id is unknown)."""
    base = base_url.rstrip("/")
    if not experiment_id:
        return f"{base}/#/experiments?{urlencode(WORKFLOW_PARAM)}"
    query = urlencode({**WORKFLOW_PARAM, "viewStateShareKey": VIEW_ID})
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


def source_tags(commit: str, source: tuple[str, str] | None = None) -> dict[str, str]:
    """Source column tags: `source` = (type, name), by default what started this process
    ("recsys run", ...) as a LOCAL source; the git commit shows as the run's version."""
    kind, name = source or ("LOCAL", default_source_name())
    tags = {SOURCE_TYPE: kind, SOURCE_NAME: name}
    if commit and commit != "unknown":
        tags[SOURCE_COMMIT] = commit
    try:
        tags[USER] = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        pass
    return tags


def default_source_name(argv: list[str] | None = None) -> str:
    """"recsys <command>" when started by the recsys CLI, else the program's name."""
    args = sys.argv if argv is None else argv
    program = Path(args[0]).name if args and args[0] else "python"
    if program == "__main__.py":  # python -m package
        program = Path(args[0]).parent.name
    if program == "recsys":
        command = next((a for a in args[1:] if not a.startswith("-")), "")
        return f"recsys {command}".strip()
    return program


def dataset_name(manifest: Mapping[str, Any]) -> str:
    """A readable name for the data set: its own name, else the source it was ingested from
    ("synthetic", a file name, a landing directory's name, a URL's last part)."""
    if manifest.get("name"):
        return str(manifest["name"])
    source = manifest.get("source") or (manifest.get("config") or {}).get("source")
    if source:
        text = str(source).rstrip("/")
        return text.rsplit("/", 1)[-1] or text
    files = manifest.get("sources") or []
    if files:
        first = Path(str(files[0])).name
        return first if len(files) == 1 else f"{first} +{len(files) - 1} files"
    return "interactions"


def dataset_source(manifest: Mapping[str, Any]) -> str:
    """Where the data came from, as text: the configured source (path, URL or "synthetic")."""
    source = manifest.get("source") or (manifest.get("config") or {}).get("source")
    return str(source) if source else "unknown"


def record_logged_model(client: MlflowClient, run_id: str, model_dir: Path, artifact_path: str) -> None:
    """Record the pyfunc saved in `model_dir` (logged under `artifact_path`) in the run's
    `mlflow.log-model.history`, as `mlflow.pyfunc.log_model` would: the runs table's Models
    column then links the run to its model and to the registry versions made from it."""
    from mlflow.models import Model

    model = Model.load(str(model_dir))
    model.run_id, model.artifact_path = run_id, artifact_path
    client._record_logged_model(run_id, model)


def inherited(tags: Mapping[str, str]) -> dict[str, str]:
    """The parent-run tags a model run copies: recsys provenance and the run's source."""
    return {k: v for k, v in tags.items() if k.startswith("recsys.") or k.startswith(INHERITED_PREFIXES)}



def experiment_runs_url(tracking_uri: str, experiment: str, ui_base: str = "http://127.0.0.1:5000") -> str:
    """Where to look at `experiment`'s runs: on the tracking server itself, or for a local store
    on `ui_base` (what `recsys ui` serves). Never creates the store or the experiment."""
    from recsys.tracking.store import client, is_http, is_sqlite, sqlite_path

    base = tracking_uri if is_http(tracking_uri) else ui_base
    if is_sqlite(tracking_uri) and not sqlite_path(tracking_uri).is_file():
        return runs_page_url(base, None)
    try:
        found = client(tracking_uri).get_experiment_by_name(experiment)
    except Exception:  # unreachable or broken store: the experiment list is still a place to start
        found = None
    return runs_page_url(base, found.experiment_id if found is not None else None)
