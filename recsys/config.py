"""Typed configuration for a whole pipeline run, loaded from TOML with `--set a.b=c` overrides.

Every section is a pydantic model with `extra="forbid"`, so a typo is a clear error naming the key
instead of a silently ignored setting. Model configs live beside their models (LensKit style) and
are selected by `kind`. `resolved()` is what gets dumped to MLflow params and saved with models.

Reading a config loads no model backend: torch and implicit cost a second or more at every start of
`recsys`, and `ingest`, `data ...` or a bad config's error need neither. So the configs come from
torch-free modules (`recsys/models/*_config.py` where the model's own module is heavy), and
tests/test_startup.py fails if torch, implicit or mlflow comes back.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import tomllib
import typing
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from recsys.ann_config import AnnConfig
from recsys.errors import ConfigError
from recsys.models.blend_config import BlendConfig
from recsys.models.ease_config import EASEConfig
from recsys.models.item_tower_config import ItemTowerConfig
from recsys.models.popularity_config import PopularityConfig
from recsys.models.two_tower_config import TwoTowerConfig
from recsys.models.wals_config import WALSConfig
from recsys.models.wals_spark_config import WALSSparkConfig
from recsys.sections import EvaluationConfig, Section

AnyModelConfig = Annotated[
    PopularityConfig | WALSConfig | TwoTowerConfig | WALSSparkConfig | EASEConfig | ItemTowerConfig | BlendConfig,
    Field(discriminator="kind"),
]
MODEL_CONFIGS: dict[str, type[BaseModel]] = {
    c.model_fields["kind"].default: c for c in typing.get_args(typing.get_args(AnyModelConfig)[0])
}
"""kind -> config class of every model a config can name (without importing any model's module)."""


class ColumnMap(Section):
    """Source column names; None = auto-detect from common names (user, userId, user_id:token ...)."""

    user: str | None = None
    item: str | None = None
    time: str | None = None
    weight: str | None = None
    event: str | None = None


class SyntheticConfig(Section):
    """The planted-cluster generator used when `data.source = "synthetic"`."""

    n_users: int = Field(2000, gt=0)
    n_items: int = Field(1000, gt=0)
    n_clusters: int = Field(8, gt=0)
    interactions_per_user: float = Field(30.0, gt=0, description="mean; activity is log-normally skewed")
    popularity_exponent: float = Field(1.0, ge=0, description="Zipf exponent of item popularity within a cluster")
    leakage: float = Field(0.0, ge=0, le=1, description="share of interactions drawn outside the user's cluster")
    noise_rate: float = Field(0.0, ge=0, le=1, description="share of interactions with uniformly random items")
    days: int = Field(90, gt=0, description="timestamps span this many days")
    seed: int = 0


def header_names(names: str | list[str]) -> list[str]:
    """data.header's names from a list or one comma-separated string (`--header a,b,c`): each
    stripped, none empty or repeated, at least two (a user and an item), so a typo is refused
    when the config is read rather than read as a column. Raises ValueError."""
    listed = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    if len(listed) < 2 or not all(listed):
        raise ValueError(
            f"expected at least two non-empty column names separated by commas, got {','.join(listed)!r} "
            "(e.g. user_id,item_id,rating,timestamp)"
        )
    repeated = sorted({n for n in listed if listed.count(n) > 1})
    if repeated:
        raise ValueError(f"names a column twice ({', '.join(repeated)}): give each field its own name")
    return listed


def strftime_layout(layout: str) -> str:
    """A data.time_format with at least one date directive, refused at load time: one without any
    (`mm/dd/yyyy`, a spreadsheet's spelling) would read no row, and every row would be quarantined."""
    if not re.search(r"%[YyjmdbBhFDsGg]", layout):
        raise ValueError(
            f"data.time_format {layout!r} has no strftime date directive: write it as e.g. '%m/%d/%Y %H:%M' "
            "(%Y year, %m month, %d day, %H hour, %M minute, %S second, %z zone)"
        )
    return layout


class DataConfig(Section):
    source: str = Field("synthetic", description='"synthetic", a file, a directory, a processed data dir or a URL')
    format: str | None = Field(None, description="force a reader: csv, tsv, parquet, jsonl, movielens, recbole ...")
    columns: ColumnMap = Field(default_factory=ColumnMap)
    positive_min_weight: float | None = Field(
        None,
        description="keep interactions with weight >= this (e.g. rating >= 4); rows below it, negative ratings "
        "included, are not positive (with no rule a negative weight is quarantined: see negative_weights)",
    )
    positive_events: list[str] | None = Field(None, description="keep only these event types")
    event_weights: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = Field(
        None,
        description="weight of each event type, e.g. {view = 1, addtocart = 3, transaction = 5}: a row weighs its "
        "event's weight (times the weight column, if any); rows of unlisted events are dropped (reported); "
        "aggregate auto then sums",
    )
    aggregate: Literal["auto", "count", "sum", "max", "last"] = Field(
        "auto", description="how repeated (user, item) pairs combine; auto = sum when the log has a weight column, else count"
    )
    exact_duplicates: Literal["quarantine", "keep"] = Field(
        "quarantine",
        description="a row equal to an earlier one in every column read (user, item, time, weight, event): "
        "quarantine = a copied row, quarantined as duplicate; keep = a repeated event, passed on to the "
        "aggregation (count counts it, sum adds it), for click / view logs with no time or dates only; "
        "with keep an --append counts rows equal to an earlier batch's too (an --append of content a batch already "
        "holds adds nothing)",
    )
    binarize: bool = Field(False, description="set every kept weight to 1.0 after aggregation")
    negative_weights: Literal["quarantine", "interaction"] = Field(
        "quarantine",
        description="a row with a negative weight where no positive rule reads the column: quarantine = "
        "not an interaction (quarantined as negative_weight, with a warning naming the rows): a return (UCI "
        "Online Retail's negative Quantity, invoices 'C...') or a dislike; interaction = under binarize or "
        "aggregate = count each such row is one interaction (Anime's -1 = watched, not rated); a weight "
        "kept as a confidence is never negative either way",
    )
    min_user_interactions: int = Field(1, ge=1, description="k-core: users need at least this many items")
    min_item_interactions: int = Field(1, ge=1, description="k-core: items need at least this many users")
    max_future_days: float = Field(1.0, ge=0, description="quarantine timestamps more than this far in the future")
    decimal: Literal["auto", "comma", "point"] = Field(
        "auto",
        description="a comma in a weight / time value: comma = decimal point (4,5), point = thousands separator "
        "(1,234); auto = comma in ';'-separated files (in a directory: those files alone), else not read",
    )
    encoding: str | None = Field(
        None,
        description="text encoding of the source files, e.g. latin-1 or cp1252 (Book-Crossing), utf-16; "
        "unset = UTF-8 (a UTF-16 / UTF-32 file with a byte-order mark is read as such); other encodings are "
        "copied once as UTF-8 beside the output while ingest reads them",
    )
    header: list[str] | None = Field(
        None,
        description="names of the fields of delimited files that have no header line (YOOCHOOSE, Last.fm 1K / 360K, "
        "Taobao's UserBehavior.csv), in order, e.g. [\"session_id\", \"timestamp\", \"item_id\", \"category\"] "
        "(on the command line one comma-separated string): each file is read from its first line under these names, "
        "which columns are mapped from as from a header; a file whose first line is these names reads it as its "
        "header; unset = files need a header line (or all-numeric fields read by position)",
    )
    time_format: str | None = Field(
        None,
        description="strftime layout of a time column written neither as Unix time nor as ISO-8601, e.g. "
        "'%m/%d/%Y %H:%M' (UCI Online Retail's 12/1/2010 8:26), '%d.%m.%Y' or '%Y%m%d' (yyyymmdd integers); "
        "times without a zone (%z) are UTC; values it does not read are parsed as without it; unset = "
        "Unix seconds / milliseconds and ISO-8601 only",
    )
    processed_dir: str = Field("data/processed", description="where ingested datasets are written")
    raw_dir: str = Field("data/raw", description="download cache and synthetic raw files")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @field_validator("source")
    @classmethod
    def _some_source(cls, source: str) -> str:
        """An empty source read as the working directory (`Path("")` is `.`): `--set
        data.source=$DATA` with DATA unset ingested every data-like file under the current folder."""
        if not source.strip():
            raise ValueError(
                'is empty: name a file, a directory, a URL, a public set (movielens-100k ...) or "synthetic" '
                "(an unset shell variable in --set data.source=$VAR?)"
            )
        return source

    @field_validator("time_format")
    @classmethod
    def _strftime_layout(cls, layout: str | None) -> str | None:
        return None if layout is None else strftime_layout(layout)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, name: str | None) -> str | None:
        """An encoding Python can decode text with, refused at load time rather than mid-ingest."""
        if name is None:
            return None
        try:
            codec = codecs.lookup(name.strip())
        except LookupError:
            raise ValueError(f"unknown encoding {name!r}: use a Python codec name such as latin-1, cp1252, utf-16") from None
        if not getattr(codec, "_is_text_encoding", True):  # base64, zlib ...: bytes to bytes
            raise ValueError(f"{name!r} is not a text encoding: use e.g. latin-1, cp1252 or utf-16")
        return name.strip()

    @field_validator("header", mode="before")
    @classmethod
    def _header_names(cls, names: object) -> object:
        """A list of names, or one comma-separated string (`--set data.header=a,b,c`, which `--set`
        reads as text): see `header_names`."""
        if names is None:
            return None
        if isinstance(names, str) or (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            return header_names(names)
        return names  # pydantic's own type error names what is wrong

    @field_validator("event_weights")
    @classmethod
    def _no_weights_is_unset(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        """`event_weights = {}` weighs nothing: the same as leaving it out, down to the processed
        directory's name and the ingest cache key (which leave the setting out while it is unset)."""
        return weights or None


SplitProtocol = Literal["temporal", "rolling", "leave_last_n", "random", "strong_generalization"]


class SplitConfig(Section):
    """How interactions are divided; see recsys/data/splits.py. Random decisions hash the raw ids with
    the seed, so a pair keeps its part when the log grows (scheduled runs stay comparable)."""

    protocol: SplitProtocol = "random"
    test_fraction: float = Field(0.2, gt=0, lt=1, description="random: chance a pair is test; temporal: share of pairs first seen after the cut-off")
    validation_fraction: float = Field(0.0, ge=0, lt=1, description="0 = no validation split (rolling: see validation_window_days)")
    n: int = Field(1, ge=1, description="leave_last_n: latest items per user held out (by last interaction; not stable as the log grows, so not for scheduled runs)")
    cutoff: datetime | None = Field(None, description="temporal / rolling: explicit test cut-off (UTC); default from test_fraction / the newest timestamp")
    window_days: float = Field(7.0, gt=0, description="rolling: days after the cut-off that are tested")
    validation_window_days: float | None = Field(None, ge=0, description="rolling: days before the cut-off used for validation (None = window_days, 0 = none)")
    heldout_users: float = Field(0.2, gt=0, description="strong generalisation: share (<1) or count (>=1) of test users")
    fold_in_fraction: float = Field(0.8, gt=0, lt=1, description="strong generalisation: chance a held-out pair is fold-in rather than truth")
    scheduled: Literal["rolling", "as_configured"] = Field(
        "rolling", description="protocol of scheduled runs (recsys schedule): rolling when the data has timestamps, else as configured"
    )
    seed: int = 0


class FoldingConfig(Section):
    enabled: bool = True
    k: int = Field(20, gt=0)
    neighbours: int = Field(10, gt=0)


MIN_STALE_MINUTES = 5.0
"""The least `tracking.stale_run_minutes` (other than 0): below it a few late heartbeats (one a
minute, recsys.tracking.liveness) would close a live run."""


class TrackingConfig(Section):
    enabled: bool = True
    tracking_uri: str | None = Field(None, description="None = $MLFLOW_TRACKING_URI or sqlite:///mlflow/mlflow.db")
    experiment: str = Field("recsys", min_length=1)
    artifact_location: str | None = Field(
        None,
        description="where a NEW experiment's artifacts go (a folder, file:///..., s3://...; a relative folder is "
        "made absolute from the working directory): None = artifacts/ beside a SQLite store's file; a database "
        "server's store (postgresql://, mysql://, mssql://) needs it, or MLflow would put the artifacts in ./mlruns "
        "of whatever directory the first run started in; a tracking server (http://) decides its own. An "
        "existing experiment keeps the location it was made with",
    )
    register_models: bool = True
    model_name_prefix: str = Field(
        "recsys", min_length=1, description="registered model name = {prefix}-{model name}"
    )
    offline_dir: str = Field(
        "mlflow/unlogged",
        description="where a run keeps its models and logs when the tracking store fails mid-run "
        "(log them later with `recsys run --resume-tracking DIR`)",
    )
    stale_run_minutes: float = Field(
        30.0,
        ge=0,
        description="a RUNNING run opened on another machine (or container) is closed KILLED by the next "
        "run's start once its heartbeat (stamped every minute while it is open) is older than this; "
        "0 = never (runs of this machine are closed as soon as their process is gone)",
    )

    @field_validator("stale_run_minutes")
    @classmethod
    def _not_a_few_beats(cls, value: float) -> float:
        if 0 < value < MIN_STALE_MINUTES:
            raise ValueError(
                f"must be 0 (off) or at least {MIN_STALE_MINUTES:g}: a heartbeat comes every minute, and a few "
                "late ones must not close a live run"
            )
        return value


class PromotionConfig(Section):
    auto: bool = True
    metric: str = "recall@20"
    p_value: float = Field(0.05, gt=0, lt=1)
    max_coverage_drop: float = Field(0.1, ge=0, le=1, description="relative coverage@k loss tolerated")
    registered_model: str = Field(
        "recsys-best", min_length=1, description="the model name holding champion/challenger aliases"
    )
    min_test_users: int = Field(
        20, ge=0, description="fewest test users (with a training history) on which `recsys run` promotes "
        "automatically; `recsys promote` is not held to it (0 = no floor)",
    )
    """Why 20: a champion chosen on a handful of users is chosen on noise. An Amazon Beauty sample
    under movielens.toml tested 1 user and made popularity the first champion of its line (a first
    promotion has no champion to be tested against). On ML-100K (206 test users) WALS's 95%
    interval of recall@20 is about +-0.037 and its lead over popularity 0.20; the half-width grows
    as 1/sqrt(users): about +-0.12 at 20 users (still inside the lead), +-0.17 at 10 (nearly all of
    it; below 10 the run also warns, pipelines.report.MIN_TEST_USERS). Not 50: a scheduled run tests
    one forward window, and movielens.toml's scheduled run on ML-100K (rolling, 7 days) tests 29
    warm users, the replay benchmark's 14-day windows 32-55 (benchmarks/results/replay.md): 50 would
    stop the schedule from ever promoting. Normal runs test far more: default.toml's synthetic log
    1,926 users, movielens.toml on ML-100K 206 (measured); plays.toml holds out 20% of each
    lastfm-2k user's ~50 artists, so nearly all its 1,892 users."""


class ServingConfig(Section):
    """What a logged model's serving artifacts carry beyond the vectors (`recsys serve`, the pyfunc)."""

    ann: AnnConfig = Field(default_factory=AnnConfig, description="ANN index for large catalogues (recsys.ann)")


class OrchestrationConfig(Section):
    task_runner: Literal["threads", "dask", "sequential"] = "threads"
    max_workers: int = Field(2, gt=0, description="models trained at once")
    threads_per_model: int | None = Field(None, gt=0, description="torch/BLAS threads per model (None = cores // max_workers)")
    dask_address: str | None = None
    retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(1.0, ge=0)
    if_unchanged: Literal["skip_scheduled", "skip", "train"] = Field(
        "skip_scheduled",
        description="a run whose data, split, config and code equal the last finished run of its lineage "
        "(recsys.tracking.unchanged; needs tracking): skip_scheduled = scheduled runs train nothing, runs "
        "started by hand train; skip = every run skips; train = every run trains",
    )


class RunConfig(Section):
    name: str = "recsys"
    seed: int = 42
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    models: list[AnyModelConfig] = Field(default_factory=list)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    folding: FoldingConfig = Field(default_factory=FoldingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)

    @model_validator(mode="after")
    def _unique_model_names(self) -> RunConfig:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {duplicates}")
        return self

    @model_validator(mode="after")
    def _tuning_has_validation_users(self) -> RunConfig:
        """Tuning chooses on validation users only: a config that tunes needs a validation split."""
        tuned = [m.name for m in self.models if m.tuning is not None and m.tuning.enabled]
        if tuned and self.split.validation_fraction <= 0:
            raise ValueError(
                f"models {tuned} have [models.tuning] enabled but split.validation_fraction is 0: tuning "
                "chooses on validation users only; set split.validation_fraction (e.g. 0.1) or tuning.enabled = false"
            )
        return self

    @model_validator(mode="after")
    def _promotion_metric_is_evaluated(self) -> RunConfig:
        """The challenger is chosen and tested on per-user `promotion.metric` values, so it must be a
        per-user metric the evaluation computes at one of its ks: `recall@7` with ks = [10, 20]
        trained every model, showed a column of nan and then stopped at the promotion."""
        from recsys.evaluation.metric_names import PER_USER_METRICS

        name, at, k = self.promotion.metric.partition("@")
        computed = [m for m in self.evaluation.metrics if m in PER_USER_METRICS]
        if not at or not k.isdigit() or name not in computed or int(k) not in self.evaluation.ks:
            raise ValueError(
                f"promotion.metric {self.promotion.metric!r} is not computed by this run: it must be NAME@K with "
                f"NAME one of evaluation.metrics' per-user metrics ({', '.join(computed) or 'none'}) and K one of "
                f"evaluation.ks ({', '.join(map(str, self.evaluation.ks))}); e.g. --set promotion.metric="
                f"{(computed or ['recall'])[0]}@{20 if 20 in self.evaluation.ks else self.evaluation.ks[-1]}"
            )
        guarded = self.tracking.enabled and self.promotion.max_coverage_drop < 1  # no tracking: no promotion
        if guarded and "coverage" not in self.evaluation.metrics:
            raise ValueError(  # the rule's coverage guard would be skipped without a word
                f"promotion.max_coverage_drop = {self.promotion.max_coverage_drop} needs coverage@{k}, but "
                "evaluation.metrics has no 'coverage': add it, or --set promotion.max_coverage_drop=1 to drop the guard"
            )
        return self

    @model_validator(mode="after")
    def _teachers_exist(self) -> RunConfig:
        """A student's `distill.teacher` must be another model of the run, with no cycles."""
        from recsys.distill_config import check_teachers

        try:
            check_teachers(list(self.models))
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return self

    def model(self, name: str):
        for m in self.models:
            if m.name == name:
                return m
        raise ModelNotFound(
            f"no model named {name!r} in the config's [[models]] ({', '.join(m.name for m in self.models) or 'none'})"
        )

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        """Stable hash of the resolved config (keys caching together with the data fingerprint)."""
        return hashlib.sha256(json.dumps(self.resolved(), sort_keys=True).encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        return dumps_toml(self.resolved())


class ModelNotFound(ConfigError, KeyError):
    """`RunConfig.model(name)` for a name the config does not have (a KeyError for dict-like use)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.render()


def _parse_value(raw: str) -> Any:
    """`--set` values are TOML literals (numbers, booleans, lists, quoted strings); bare words are strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply `a.b.c=value` to a raw config dict. Inside `models`, address a model by its name:
    `models.wals.factors=128` (or by position: `models.0.factors=128`)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {assignment!r}: empty key")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _select_model(node, part, assignment)
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise ConfigError(f"--set {assignment!r}: {'.'.join(parts[: i + 1])} is not a section")
    if isinstance(node, list):
        raise ConfigError(f"--set {assignment!r}: name a model, e.g. models.<name>.<field>=value")
    node[parts[-1]] = _parse_value(raw.strip())


def _select_model(models: list[dict[str, Any]], key: str, assignment: str) -> dict[str, Any]:
    for m in models:
        if m.get("name", m.get("kind")) == key:
            return m
    if key.isdigit() and int(key) < len(models):
        return models[int(key)]
    names = [m.get("name", m.get("kind")) for m in models]
    raise ConfigError(f"--set {assignment!r}: no model named {key!r}; models: {names}")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a TOML config (or defaults), apply overrides, validate; errors name the file and key."""
    data: dict[str, Any] = {}
    if path is not None:
        source = Path(path)
        if not source.is_file():
            raise ConfigError(f"{source}: config file not found")
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not a UTF-8 text file (byte {exc.start}): is it a TOML config?") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the config ({exc.strerror or exc})") from None
    for assignment in overrides:
        apply_override(data, assignment)
    models = data.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        from_set = any(a.split("=", 1)[0].strip() == "models" for a in overrides)
        example = "e.g. --set 'models=[{name=\"pop\", kind=\"popularity\"}, {name=\"wals\", kind=\"wals\"}]'"
        if isinstance(models, str) and from_set:  # a --set value TOML cannot read stays text (JSON's "k": v)
            raise ConfigError(
                f"--set models: not a TOML list of tables: {models[:80]!r}; write inline tables with key = value, "
                + example
            )
        if from_set:  # `models=["pop"]` is valid TOML but not tables: the --set is at fault, not the file
            raise ConfigError(
                f"--set models: models must be tables (name, kind, ...), got {type(models).__name__} "
                f"{str(models)[:80]}; write inline tables, " + example
            )
        raise ConfigError(
            f"{path or '--set'}: models must be [[models]] tables (name, kind, ...), got {type(models).__name__}"
        )
    for model in models:
        if "kind" in model:
            model.setdefault("name", model["kind"])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, models, overrides)) from None


def _describe(
    exc: ValidationError, path: str | Path | None, models: Sequence[dict[str, Any]] = (), overrides: Sequence[str] = ()
) -> str:
    """Every problem on one line: `invalid config (FILE): key: problem; key: problem`; an unknown
    key names the closest key of its section (`factor` -> did you mean 'factors'?). A model's keys
    are named as `--set` addresses them, `models.<name>.<key>`: pydantic's `models.3.two_tower.key`
    (list index, then the kind it validated against) matched neither the TOML nor the `--set`.
    Where every problem is a key a `--set` gave, the `--set` is named instead of the file: a typo
    in `--set split.seeed=1` was reported as in default.toml, which has no such key."""
    grouped: dict[str, list[Any]] = {}  # a union's members fail one by one: one problem per key
    for err in exc.errors():
        grouped.setdefault(_key_path(err, models), []).append(err)
    problems, keys = [], list(grouped)
    given = [a for a in overrides if any(_within(k, a.split("=", 1)[0].strip()) for k in keys)]
    for key, errs in grouped.items():
        problems.append(f"{key or 'config'}: {_problem(errs, key, _set_it(key, given))}")
    where = ", ".join(f"--set {a}" for a in given)
    if not given or not all(any(_within(k, a.split("=", 1)[0].strip()) for a in given) for k in keys):
        where = ", ".join(filter(None, (str(path or "built-in defaults and --set"), where)))
    return f"invalid config ({where}): " + "; ".join(problems)


def _set_it(key: str, assignments: Sequence[str]) -> bool:
    """Whether the last word on `key` was a `--set` of the key itself (so the hint is a `--set`)."""
    return any(a.split("=", 1)[0].strip() == key for a in assignments)


def _problem(errs: list[Any], key: str = "", from_set: bool = False) -> str:
    """What is wrong with one key. A value outside a choice names the closest choice; a key whose
    type is a union (`sampler`: a name or "auto") was one problem per member, each under a key
    suffixed with pydantic's member tag (`sampler.literal['auto']: Input should be 'auto'`)."""
    if all(e["type"] == "literal_error" for e in errs):
        import difflib

        choices = [c for e in errs for c in re.findall(r"'([^']*)'", str(e["ctx"].get("expected", "")))]
        given = str(errs[0]["input"])
        close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{given!r} is not one of {', '.join(map(repr, choices))}{hint}"
    errs = [e for e in errs if e["type"] == "value_error"] or errs  # a validator's reason over a member's type
    messages = []
    for err in errs:
        if err["type"] == "extra_forbidden":
            msg = _unknown_key(err["loc"])
        elif err["type"] == "union_tag_invalid":
            msg = _unknown_kind(err["ctx"])
        elif err["type"] == "union_tag_not_found":
            msg = f"no kind given: add kind = one of {', '.join(MODEL_CONFIGS)}"
        elif err["type"] == "list_type":
            msg = _not_a_list(err, key, from_set)
        elif err["type"] == "dict_type":
            msg = _not_a_table(err, key, from_set)
        else:
            msg = err["msg"].removeprefix("Value error, ")
        messages.append(msg)
    return "; or ".join(dict.fromkeys(messages))


_MEMBER_TAGS = {"int", "float", "str", "bool", "list", "dict", "none", "constrained-float", "constrained-int"}


def _member_tag(part: Any) -> bool:
    """A pydantic union member's tag in an error's location (`literal['auto']`, `constrained-float`,
    `function-after[...]`, `list[any]`): not a key the user wrote."""
    return isinstance(part, str) and ("[" in part or part in _MEMBER_TAGS)


def _within(key: str, assigned: str) -> bool:
    """Whether a problem at `key` lies in what `--set assigned=...` wrote (the key, a section it
    set whole, or the section a model-level problem names)."""
    return bool(key) and (key == assigned or key.startswith(assigned + ".") or assigned.startswith(key + "."))


def _key_path(err: Any, models: Sequence[dict[str, Any]]) -> str:
    """`models.<name>.<key>` for a model's key (the kind pydantic inserts after the index dropped),
    `models.<name>.kind` for an unknown kind; other keys as pydantic dotted them."""
    loc = [part for i, part in enumerate(err["loc"]) if i == 0 or not _member_tag(part)]
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int) and loc[1] < len(models):
        model = models[loc[1]]
        rest = loc[3:] if len(loc) >= 3 and loc[2] == model.get("kind") else loc[2:]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            rest = ["kind"]
        loc = ["models", model.get("name", loc[1]), *rest]
    return ".".join(str(p) for p in loc)


def _unknown_kind(ctx: dict[str, Any]) -> str:
    """An unknown model kind with the closest one and the list: pydantic's "Input tag 'walz' found
    using 'kind' does not match any of the expected tags" named neither as a user would."""
    import difflib

    kind = str(ctx.get("tag", ""))
    close = difflib.get_close_matches(kind, list(MODEL_CONFIGS), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown model kind {kind!r}{hint}; kinds: {', '.join(MODEL_CONFIGS)}"


def _section_of(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The config class whose key `loc[-1]` is (pydantic's error location), or None."""
    section: Any = RunConfig
    parts = [p for p in loc[:-1] if not _member_tag(p)]
    while parts:  # models.<index>.<kind>.key: the kind's own config; a.b.key: the section's
        part = parts.pop(0)
        if section is RunConfig and part == "models" and len(parts) >= 2:
            section, parts = MODEL_CONFIGS.get(str(parts[1])), parts[2:]
        else:
            field = section.model_fields.get(str(part)) if section is not None else None
            options = (typing.get_args(field.annotation) or (field.annotation,)) if field else ()
            section = next((t for t in options if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if section is None:
            return None
    return section


def _unknown_key(loc: tuple) -> str:
    """"unknown key", with the section's closest key when one is close: a typo such as
    `--set models.wals.factor=3` otherwise leaves the user to read the docs for the spelling."""
    import difflib

    section = _section_of(loc)
    if section is None:
        return "unknown key"
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1, cutoff=0.7)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _not_a_list(err: Any, key: str, from_set: bool) -> str:
    """A key that takes a list given something else, with an example that works. A `--set` value
    that TOML cannot read stays text (`--set 'models.tt.user_layers=[64,'`, `--set ...=[click]`,
    whose strings lack quotes), so pydantic said "Input should be a valid list" of what looked
    like a list; the example keeps what was meant where it can (`[64]`, `["click"]`)."""
    loc = [p for p in err["loc"] if not _member_tag(p)]
    given, name = err["input"], str(loc[-1])
    if isinstance(given, str) and given.lstrip().startswith("["):
        words = [w.strip() for w in given.strip().strip("[]").split(",") if w.strip()]
        if not given.rstrip().endswith("]"):
            reason = "no closing ]"
        elif any(re.fullmatch(r"[A-Za-z_][\w@.:/-]*", w) and w not in ("true", "false", "inf", "nan") for w in words):
            reason = "its strings need quotes"
        else:
            try:
                tomllib.loads(f"v = {given}")
                reason = "not a list"
            except tomllib.TOMLDecodeError as exc:
                reason = re.sub(r"\s*\(at [^)]*\)$", "", str(exc)) or "invalid"
        said = f"{given!r} is not a TOML list ({reason})"
    else:
        said = f"expected a list, got {given!r}"
    example = _list_example(loc, given)
    if example is None:
        return said
    return _with_example(said, key, name, dumps_toml({"v": example})[len("v = "):].strip(), from_set)


def _not_a_table(err: Any, key: str, from_set: bool) -> str:
    """A key that takes a table (`data.event_weights`) given something else: pydantic said "Input
    should be a valid dictionary". Named with TOML's inline-table form and, where the given word
    makes one the key accepts, an example (`--set data.event_weights=view` -> `{view = 1.0}`)."""
    loc = [p for p in err["loc"] if not _member_tag(p)]
    given, name = err["input"], str(loc[-1])
    said = f"expected a table (TOML's {{name = value, ...}}), got {given!r}"
    section = _section_of(loc)
    field = section.model_fields.get(name) if section is not None else None
    word = str(given).strip().strip("{}[]'\"").split("=", 1)[0].strip()
    if field is None or not re.fullmatch(r"[A-Za-z_][\w-]*", word):
        return said
    value = next((v for v in (1.0, 1, "a") if _accepts(section, name, {word: v})), None)
    if value is None:
        return said
    return _with_example(said, key, name, f"{{{word} = {dumps_toml({'v': value})[len('v = '):].strip()}}}", from_set)


def _accepts(section: type[BaseModel], name: str, value: Any) -> bool:
    """Whether `section`'s key `name` validates `value` (errors of its other keys aside)."""
    base: dict[str, Any] = {"name": "x"} if section in MODEL_CONFIGS.values() else {}
    try:
        section.model_validate({**base, name: value})
    except ValidationError as exc:
        return not any(e["loc"][:1] == (name,) for e in exc.errors())
    return True


def _with_example(said: str, key: str, name: str, shown: str, from_set: bool) -> str:
    """`said` and an example written as the user gave the key: a `--set`, else the TOML line."""
    return f"{said}; e.g. --set '{key}={shown}'" if from_set else f"{said}; e.g. {name} = {shown}"


def _list_example(loc: Sequence[Any], given: Any) -> list[Any] | None:
    """A value the key accepts: the items given (brackets, quotes and empty items mended), else
    the key's default, else one item of its type; each tried against the key's own validators."""
    section = _section_of(loc)
    field = section.model_fields.get(str(loc[-1])) if section is not None else None
    if section is None or field is None:
        return None
    item = next((typing.get_args(t)[0] for t in (field.annotation, *typing.get_args(field.annotation))
                 if typing.get_origin(t) is list and typing.get_args(t)), str)  # fmt: skip
    words = [w.strip().strip("'\"") for w in str(given).strip().strip("[]").split(",")]
    candidates: list[list[Any]] = []
    try:  # what was given, mended: text or one number, not a table
        scalar = isinstance(given, str | int | float) and not isinstance(given, bool)
        candidates.append([item(w) for w in words if w] if scalar and item in (int, float, str) else [])
    except ValueError:
        pass
    default = field.get_default(call_default_factory=True)
    default = default if isinstance(default, list) else []
    candidates += [default[:3], default, {int: [64], float: [0.5], str: ["a"]}.get(item, [])]  # short first
    return next((c for c in candidates if c and _accepts(section, str(loc[-1]), c)), None)


def dumps_toml(data: dict[str, Any]) -> str:
    """Minimal TOML writer for resolved configs (tables, arrays of tables, scalars, lists)."""

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return json.dumps(str(v))

    out: list[str] = []

    def table(prefix: str, body: dict[str, Any], header: str | None) -> None:
        simple = {k: v for k, v in body.items() if v is not None and not isinstance(v, dict) and not _is_table_list(v)}
        if header:
            out.append(f"\n{header}")
        out.extend(f"{k} = {scalar(v)}" for k, v in simple.items())
        for k, v in body.items():
            name = f"{prefix}{k}"
            if isinstance(v, dict):
                table(f"{name}.", v, f"[{name}]")
            elif _is_table_list(v):
                for entry in v:
                    table(f"{name}.", entry, f"[[{name}]]")

    table("", data, None)
    return "\n".join(out).lstrip() + "\n"


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested config into dotted keys (MLflow params); model lists keyed by model name."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif _is_table_list(value):
            for i, entry in enumerate(value):
                flat.update(flatten(entry, f"{name}.{entry.get('name', i)}."))
        else:
            flat[name] = value
    return flat
