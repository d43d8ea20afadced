"""A new user's first day (issue 19): shipped configs run or fail with the fetcher's offline hint,
play counts survive ingest, a `<name>ID` column is found, broken files and configs are one-line
errors with hints that name options the command has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipelines.data import prepare_dataset
from recsys.config import DataConfig, load_config
from recsys.data import fetch as fetch_module
from recsys.data.ingest import ingest
from recsys.errors import ConfigError, DataError, ModelError, TrackingError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "pipelines" / "configs").glob("*.toml"))
PLAYS = "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n3\t51\t228\n3\t53\t1\n2\t51\t17\n"


@pytest.fixture()
def offline(monkeypatch):
    """No network: every download goes to a refused local port."""
    monkeypatch.setattr(fetch_module, "BASE_URL", "http://127.0.0.1:9")
    for name, spec in fetch_module.DATASETS.items():
        monkeypatch.setitem(fetch_module.DATASETS, name, spec.__class__(**{**spec.__dict__, "base_url": ""}))


# --------------------------------------------------------------------------- 1. shipped configs


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads_and_its_source_resolves_or_says_how_to_fetch_it(path, tmp_path, offline):
    cfg = load_config(path, [f"data.raw_dir={tmp_path / 'raw'}", f"data.processed_dir={tmp_path / 'p'}"])
    assert cfg.models, f"{path.name} has no models"
    if cfg.data.source == "synthetic":
        return  # `make run` runs default.toml as shipped; the README test runs its commands
    assert cfg.data.source in fetch_module.DATASETS, f"{path.name}: data.source must exist as shipped"
    with pytest.raises(DataError) as caught:
        prepare_dataset(cfg)
    message = str(caught.value)
    assert f"recsys data fetch {cfg.data.source} --offline PATH" in message
    assert "--set data.source=PATH/" in message and "\n" not in message


def test_a_named_source_in_the_cache_is_ingested_without_the_network(tmp_path, offline):
    folder = tmp_path / "downloads" / "hetrec"
    folder.mkdir(parents=True)
    (folder / "user_artists.dat").write_text(PLAYS)
    fetch_module.fetch("lastfm-2k", tmp_path / "raw", offline=folder)  # `recsys data fetch --offline`
    cfg = load_config(REPO / "pipelines/configs/plays.toml", [
        f"data.raw_dir={tmp_path / 'raw'}", f"data.processed_dir={tmp_path / 'p'}",
        "data.min_user_interactions=1", "data.min_item_interactions=1",
    ])  # fmt: skip
    dataset = prepare_dataset(cfg)
    manifest = json.loads((Path(dataset.processed_dir) / "manifest.json").read_text())
    assert manifest["weights"] == {"column": "weight", "aggregate": "sum", "binarize": False, "kept": True,
                                   "warning": None}  # fmt: skip
    assert manifest["interactions"] == 4 and not manifest["has_timestamps"]


# --------------------------------------------------------------------------- 2. weights and columns


def test_play_counts_are_kept_and_artist_id_is_the_item_column(tmp_path):
    log = tmp_path / "user_artists.dat"
    log.write_text(PLAYS)
    report = ingest(log, tmp_path / "out", DataConfig())
    assert report.mapping == {"user_id": "userID", "item_id": "artistID", "weight": "weight"}
    assert report.warnings == []
    from recsys.data.storage import load_processed

    data = load_processed(tmp_path / "out")
    weights = {
        (data.user_ids[u], data.item_ids[i]): w
        for u, i, w in data.interactions.select("user_idx", "item_idx", "weight").iter_rows()
    }
    assert weights[("2", "51")] == pytest.approx(13883 + 17)  # repeated pair: plays add up
    assert weights[("3", "53")] == pytest.approx(1.0)


@pytest.mark.parametrize("settings, cause", [({"aggregate": "count"}, "data.aggregate = count"),
                                             ({"binarize": True}, "data.binarize = true")])
def test_discarding_varying_weights_warns_in_one_line_and_the_manifest_says_so(tmp_path, settings, cause):
    log = tmp_path / "plays.tsv"
    log.write_text(PLAYS)
    report = ingest(log, tmp_path / "out", DataConfig(**settings))
    assert len(report.warnings) == 1 and cause in report.warnings[0] and "\n" not in report.warnings[0]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["weights"]["kept"] is False and manifest["weights"]["warning"] == report.warnings[0]


def test_ratings_thresholded_into_positives_then_binarised_need_no_warning(tmp_path):
    """movielens.toml's ratings >= 4 -> 1 is the conversion the config asks for: warning about
    'discarded weights' there (with advice to stop binarising) would be noise on every run."""
    log = tmp_path / "ratings.csv"
    log.write_text("user_id,item_id,rating\na,x,5\na,y,4\nb,y,2\nb,x,5\n")
    report = ingest(log, tmp_path / "out", DataConfig(positive_min_weight=4.0, binarize=True))
    assert report.warnings == [] and report.interactions == 3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["weights"]["kept"] is False and manifest["weights"]["binarize"] is True


def test_constant_weights_counted_need_no_warning(tmp_path):
    log = tmp_path / "clicks.csv"
    log.write_text("user_id,item_id\na,x\na,x\nb,y\n")
    report = ingest(log, tmp_path / "out", DataConfig(aggregate="count"))
    # No weight is discarded; the one warning is that the repeated (a, x) row, with no time to
    # tell it from a copy, was quarantined as a duplicate rather than counted.
    [warning] = report.warnings
    assert warning.startswith("duplicates quarantined: 1 row") and "no time column" in warning, warning


@pytest.mark.parametrize("header, item", [("userId\ttrackId", "trackId"), ("user_id\tsong_id", "song_id"),
                                          ("visitorid\tARTISTID", "ARTISTID")])
def test_the_remaining_id_column_is_found_by_its_suffix(tmp_path, header, item):
    log = tmp_path / "log.tsv"
    log.write_text(f"{header}\n1\t2\n")
    assert ingest(log, tmp_path / "out", DataConfig()).mapping["item_id"] == item


def test_two_candidate_id_columns_are_never_guessed(tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text("userID\tartistID\ttagID\n1\t2\t3\n")
    with pytest.raises(DataError) as caught:
        ingest(log, tmp_path / "out", DataConfig())
    assert caught.value.render({"data.columns.item": "--item-col {value}"}).endswith("--item-col artistID")
    assert str(caught.value).endswith("--set data.columns.item=artistID")  # what `recsys run` can do


# --------------------------------------------------------------------------- 3 and 5. one-line errors


@pytest.mark.parametrize("text, says", [
    (b"models = 5\n", "models must be [[models]] tables"),
    (b"\xff\xfe\x00\x01 not toml", "not a UTF-8 text file"),
    (b"[split]\ntest_fraction = 3\n[data]\nsource = 5\n", "split.test_fraction: Input should be less than 1"),
])  # fmt: skip
def test_bad_configs_are_one_line_config_errors(tmp_path, text, says):
    path = tmp_path / "c.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert says in str(caught.value) and "\n" not in str(caught.value)


MODELS = b'[[models]]\nname = "pop"\nkind = "popularity"\n[[models]]\nname = "bce"\nkind = "two_tower"\n'


@pytest.mark.parametrize("text, overrides, says", [
    # a model's key as `--set` addresses it; pydantic's path was `models.1.two_tower.epochz`
    (MODELS + b"epochz = 3\n", [], "models.bce.epochz: unknown key (did you mean 'epochs'?)"),
    (MODELS, ["models.bce.epochz=3"], "models.bce.epochz: unknown key (did you mean 'epochs'?)"),
    (MODELS, ["models.bce.epochs=-1"], "models.bce.epochs: Input should be greater than 0"),
    # was "models.1: Input tag 'two_towr' found using 'kind' does not match any of the expected tags: ..."
    (MODELS, ["models.bce.kind=two_towr"], "models.bce.kind: unknown model kind 'two_towr' (did you mean 'two_tower'?); "
                                           "kinds: popularity, wals, two_tower"),
    # was "models.2: Unable to extract tag using discriminator 'kind'"
    (MODELS + b'[[models]]\nname = "x"\n', [], "models.x.kind: no kind given: add kind = one of popularity, wals"),
    # was "evaluation.ks: Value error, ks must be ..."
    (b"[evaluation]\nks = [-5]\n", [], "invalid config (c.toml): evaluation.ks: ks must be a non-empty list"),
    # `--set data.source=$DATA` with DATA unset: the empty path read the working directory as a landing zone
    (MODELS, ["data.source="], "data.source: is empty: name a file, a directory"),
    (MODELS + b'[data]\nsource = " "\n', [], "data.source: is empty"),
    # pydantic read `true` as 1 for a number: a one-epoch two-tower, a seed of 1, without a word
    (MODELS, ["models.bce.epochs=true"], "models.bce: epochs = true: a boolean where the key takes a number"),
    (MODELS + b"[split]\nseed = false\n", [], "split: seed = false: a boolean"),
    (MODELS, ["models.bce.tuning.n_trials=true"], "models.bce.tuning: n_trials = true: a boolean"),
    (MODELS, ["serving.ann.min_items=true"], "serving.ann: min_items = true: a boolean"),
    # a choice names the closest one; a union key was one problem per member, under pydantic's member tags:
    # "sampler.literal['uniform',...]: Input should be ...; sampler.literal['auto']: Input should be 'auto'"
    (MODELS, ["models.bce.sampler=unifrom"], "models.bce.sampler: 'unifrom' is not one of 'uniform', 'popularity', "
                                             "'in_batch', 'mixed', 'hard', 'all', 'auto' (did you mean 'uniform'?)"),
    (MODELS, ["split.protocol=rnadom"], "split.protocol: 'rnadom' is not one of 'temporal', 'rolling', "
                                        "'leave_last_n', 'random', 'strong_generalization' (did you mean 'random'?)"),
    (MODELS, ["models.bce.tuning.space={lr={low=1,high=0.1}}"], "models.bce.tuning.space.lr: low (1.0) must be "
                                                                "below high (0.1)"),
])  # fmt: skip
def test_config_errors_name_keys_as_the_toml_and_set_write_them(tmp_path, text, overrides, says):
    path = tmp_path / "c.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    message = str(caught.value).replace(str(tmp_path) + "/", "")
    assert says in message and "\n" not in message, message


@pytest.mark.parametrize("text, overrides, where", [
    (MODELS, ["split.seeed=1"], "(--set split.seeed=1): split.seeed: unknown key"),
    (MODELS, ["split.seed=1", "models.bce.epochz=3"], "(--set models.bce.epochz=3): models.bce.epochz"),
    (MODELS, ["models.bce.tuning.n_trials=true"], "(--set models.bce.tuning.n_trials=true): models.bce.tuning:"),
    (MODELS + b"[split]\nseeed = 1\n", [], "(c.toml): split.seeed"),
    (MODELS + b"[split]\nseeed = 1\n", ["split.seed=x"], "(c.toml, --set split.seed=x): split.seed: "),
])  # fmt: skip
def test_a_config_error_names_the_set_that_made_it_not_the_file(tmp_path, text, overrides, where):
    """A typo in `--set split.seeed=1` was reported as `invalid config (pipelines/configs/default.toml)`,
    a file that has no such key."""
    path = tmp_path / "c.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    assert f"invalid config {where}" in str(caught.value).replace(str(tmp_path) + "/", ""), str(caught.value)


@pytest.mark.parametrize("text, overrides, says", [
    # each was "<key>: Input should be a valid list": a --set value TOML cannot read stays text
    (MODELS, ["models.bce.user_layers=[64,"],
     "(--set models.bce.user_layers=[64,): models.bce.user_layers: '[64,' is not a TOML list (no closing ]); "
     "e.g. --set 'models.bce.user_layers=[64]'"),
    (MODELS, ["models.bce.user_layers=64"], "models.bce.user_layers: expected a list, got 64; "
                                            "e.g. --set 'models.bce.user_layers=[64]'"),
    (MODELS, ["data.positive_events=[click, buy]"], "data.positive_events: '[click, buy]' is not a TOML list (its "
                                                    "strings need quotes); e.g. --set 'data.positive_events=[\"click\", \"buy\"]'"),
    (MODELS, ["data.positive_events=click"], "expected a list, got 'click'; e.g. --set 'data.positive_events=[\"click\"]'"),
    # nothing of the value fits: the key's default (its first three), checked by the key's own validators
    (MODELS, ["evaluation.ks=[x,"], "evaluation.ks: '[x,' is not a TOML list (no closing ]); "
                                    "e.g. --set 'evaluation.ks=[10, 20, 50]'"),
    (MODELS, ["evaluation.ks=[0]"], "evaluation.ks: ks must be"),  # a list: not this message
    # in the file: the example is the TOML line
    (MODELS + b"user_layers = 64\n", [], "models.bce.user_layers: expected a list, got 64; e.g. user_layers = [64]"),
])  # fmt: skip
def test_a_key_that_takes_a_list_given_something_else_names_it_and_an_example_that_works(
    tmp_path, text, overrides, says
):
    path = tmp_path / "c.toml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    message = str(caught.value)
    assert says in message and "\n" not in message and "valid list" not in message, message
    example = re.search(r"e\.g\. --set '([^']*)'", message)
    if example:  # the example works: the config loads with it in place of the bad value
        fixed = [example.group(1) if o.split("=", 1)[0] == example.group(1).split("=", 1)[0] else o for o in overrides]
        load_config(path, fixed)


@pytest.mark.parametrize("overrides, says", [
    # was "data.event_weights: Input should be a valid dictionary"
    (["data.event_weights=view"], "(--set data.event_weights=view): data.event_weights: expected a table (TOML's "
                                  "{name = value, ...}), got 'view'; e.g. --set 'data.event_weights={view = 1.0}'"),
    (["data.event_weights=[view]"], "got '[view]'; e.g. --set 'data.event_weights={view = 1.0}'"),
    (["models.bce.tuning.space=factors"], "models.bce.tuning.space: expected a table (TOML's {name = value, ...}), "
                                          "got 'factors'"),  # no value to guess: no example
])  # fmt: skip
def test_a_key_that_takes_a_table_given_something_else_names_the_form(tmp_path, overrides, says):
    path = tmp_path / "c.toml"
    path.write_bytes(MODELS)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    message = str(caught.value)
    assert says in message and "valid dictionary" not in message, message
    if example := re.search(r"e\.g\. --set '([^']*)'", message):
        load_config(path, [example.group(1)])  # the example works


def test_booleans_are_still_read_where_a_key_takes_one():
    cfg = load_config(None, ["models=[{name='w', kind='wals', tuning={enabled=false}}]", "serving.ann.enabled=false",
                             "tracking.enabled=false", "data.binarize=true"])  # fmt: skip
    assert cfg.models[0].tuning.enabled is False and cfg.serving.ann.enabled is False and cfg.data.binarize is True


def test_an_unknown_model_name_is_a_config_error_and_still_a_key_error():
    cfg = load_config(None)
    with pytest.raises(ConfigError, match=r"no model named 'wals'.*\(none\)"):
        cfg.model("wals")
    with pytest.raises(KeyError):
        cfg.model("wals")


def _saved_wals(tmp_path: Path) -> Path:
    import scipy.sparse as sp

    from recsys.models.wals import WALS, WALSConfig

    train = sp.random(30, 20, density=0.3, format="csr", random_state=0, dtype=np.float32)
    return WALS(WALSConfig(name="wals", factors=4, iterations=2, threads=1)).fit(train).save(tmp_path / "wals")


@pytest.mark.parametrize("damage", ["config.json", "factors.safetensors"])
def test_a_damaged_saved_model_is_a_model_error(tmp_path, damage):
    from recsys.models.base import Recommender

    path = _saved_wals(tmp_path)
    (path / damage).write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="retrain it"):
        Recommender.load(path)


def test_damaged_checkpoints_are_model_errors(tmp_path):
    import torch

    from recsys.training import latest_checkpoint, restore_checkpoint

    (tmp_path / "latest.json").write_text("{not json")
    with pytest.raises(ModelError, match="checkpoint is damaged"):
        latest_checkpoint(tmp_path)
    state = tmp_path / "epoch-0001"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"fingerprint": "f", "has_best": False, "optimizer": {}}))
    (state / "tensors.safetensors").write_bytes(b"\x00truncated")
    network = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(network.parameters())
    with pytest.raises(ModelError, match="checkpoint is damaged"):
        restore_checkpoint(state, network=network, optimizer=optimizer, generator=torch.Generator(), fingerprint="f")


def test_appending_onto_a_damaged_batch_is_a_data_error(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id\na,x\nb,y\n")
    ingest(log, tmp_path / "out", DataConfig())
    batch = next((tmp_path / "out").rglob("part-*.parquet"))
    batch.write_bytes(b"garbage")
    with pytest.raises(DataError, match="processed data is damaged"):
        ingest(log, tmp_path / "out", DataConfig(), append=True)


def test_a_read_only_tracking_store_is_a_tracking_error_naming_no_tracking(tmp_path, shared_mlflow_uri, monkeypatch):
    from recsys.config import RunConfig, TrackingConfig
    from recsys.tracking.runs import Tracker

    # MLflow makes the "parent folder" of `file:/abs/mlflow.db` read as a relative path (a folder
    # named `file:` in the working directory) before it opens a URI-filename store: not ours to fix.
    monkeypatch.chdir(tmp_path)

    path = shared_mlflow_uri.removeprefix("sqlite:///")
    Tracker(TrackingConfig(tracking_uri=shared_mlflow_uri, experiment="read-only"))  # the experiment exists
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    cfg = RunConfig(tracking=TrackingConfig(tracking_uri=read_only, experiment="read-only"))
    tracker = Tracker(cfg.tracking, cfg, check=False)
    with pytest.raises(TrackingError) as caught:
        tracker.start_parent()
    assert "readonly database" in str(caught.value)
    assert caught.value.render({"tracking.enabled": "--no-tracking"}).endswith("turn tracking off with --no-tracking")


def test_the_pipeline_passes_the_weight_warning_on(tmp_path):
    from pipelines.data import ingest_warnings

    log = tmp_path / "plays.tsv"
    log.write_text(PLAYS)
    cfg = load_config(None, [f"data.source={log}", f"data.processed_dir={tmp_path / 'p'}", "data.aggregate=count"])
    warnings = ingest_warnings(prepare_dataset(cfg))
    assert len(warnings) == 1 and "weights discarded" in warnings[0]
    kept = load_config(None, [f"data.source={log}", f"data.processed_dir={tmp_path / 'q'}"])
    assert ingest_warnings(prepare_dataset(kept)) == []


def test_make_runs_synthetic_data_ingests_without_a_weight_warning_and_the_same_pairs(tmp_path):
    """default.toml counts pairs; the generator's play counts are taste-free draws, so the pipeline
    leaves them out instead of warning that they were discarded: the processed data (fingerprint:
    pairs, times, weights) is what ingesting them with count gives."""
    from pipelines.data import ingest_warnings
    from recsys.data.synthetic import write_synthetic

    root = Path(__file__).resolve().parents[1]
    small = ["data.synthetic.n_users=200", "data.synthetic.n_items=100"]
    cfg = load_config(root / "pipelines/configs/default.toml",
                      [*small, f"data.processed_dir={tmp_path / 'p'}", f"data.raw_dir={tmp_path / 'raw'}"])  # fmt: skip
    dataset = prepare_dataset(cfg)
    assert ingest_warnings(dataset) == []
    with_plays = write_synthetic(cfg.data.synthetic, tmp_path / "plays")
    report = ingest(with_plays["interactions"], tmp_path / "direct", cfg.data)
    assert "weights discarded" in report.warnings[0]  # the plays are there, and vary
    assert dataset.fingerprint == report.fingerprint


@pytest.mark.parametrize("metric", ["recall@7", "coverage@20", "recall"])
def test_a_promotion_metric_the_run_does_not_compute_is_refused_before_training(metric, tmp_path):
    """promotion.metric = recall@7 with evaluation.ks = [10, 20, 50, 100] trained every model,
    showed a column of nan and stopped at the promotion ('no finished candidate has metric');
    coverage@k is not per user, so no paired test can use it. One line before any training."""
    from typer.testing import CliRunner

    from recsys.cli import app

    args = ["run", "--no-prefect", "--no-tracking", "--config", str(REPO / "pipelines/configs/default.toml"),
            "--set", f"promotion.metric={metric}", "--set", f"data.processed_dir={tmp_path / 'p'}"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"promotion.metric '{metric}' is not computed by this run" in text
    assert "K one of evaluation.ks (10, 20, 50, 100)" in text and "--set promotion.metric=recall@20" in text
    assert "training" not in result.output and not (tmp_path / "p").exists()
    with pytest.raises(ConfigError):
        load_config(REPO / "pipelines/configs/default.toml", [f"promotion.metric={metric}"])
    assert load_config(REPO / "pipelines/configs/default.toml", ["promotion.metric=ndcg@50"]).promotion.metric == "ndcg@50"


def test_a_coverage_guard_without_coverage_metrics_is_refused():
    """evaluation.metrics without 'coverage' left the rule's max_coverage_drop guard skipped without
    a word (the champion's and challenger's coverage@k were missing)."""
    default = REPO / "pipelines/configs/default.toml"
    with pytest.raises(ConfigError, match="needs coverage@20, but evaluation.metrics has no 'coverage'"):
        load_config(default, ['evaluation.metrics=["recall", "ndcg"]'])
    off = load_config(default, ['evaluation.metrics=["recall", "ndcg"]', "promotion.max_coverage_drop=1"])
    assert off.promotion.max_coverage_drop == 1
    untracked = load_config(default, ['evaluation.metrics=["recall", "ndcg"]', "tracking.enabled=false"])
    assert untracked.promotion.max_coverage_drop < 1  # nothing is promoted without tracking


def test_a_models_set_written_as_json_names_the_toml_form():
    """--set 'models=[{"name": "pop", ...}]' (JSON) stays text, and the error said only 'got str',
    naming the config file the value did not come from."""
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "pipelines/configs/movielens.toml", ['models=[{"name":"pop","kind":"popularity"}]'])
    message = str(caught.value)
    assert message.startswith("--set models: not a TOML list of tables: '[{" + '"name":"pop"')
    assert """--set 'models=[{name="pop", kind="popularity"}""" in message and "movielens.toml" not in message
    cfg = load_config(REPO / "pipelines/configs/movielens.toml", ['models=[{name="pop", kind="popularity"}]'])
    assert [m.name for m in cfg.models] == ["pop"]


def test_a_models_set_of_names_blames_the_set_not_the_file():
    """--set 'models=["popularity"]' (the README's `--set models=[...]` read as a list of names) is
    valid TOML, and the error named default.toml, which has proper [[models]], and gave no example."""
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "pipelines/configs/default.toml", ['models=["popularity"]'])
    message = str(caught.value)
    assert message.startswith("--set models: models must be tables") and "default.toml" not in message
    assert """--set 'models=[{name="pop", kind="popularity"}""" in message and "\n" not in message


@pytest.mark.parametrize("setting", ["promotion.registered_model", "tracking.experiment", "tracking.model_name_prefix"])
def test_an_empty_registry_or_experiment_name_is_a_config_error(setting):
    """promotion.registered_model = "" reached MLflow: 'unexpected MlflowException: Missing value for
    required parameter name ... this is a bug' from recsys promote, exit 1."""
    with pytest.raises(ConfigError, match=f"{setting}: String should have at least 1 character"):
        load_config(REPO / "pipelines/configs/default.toml", [f'{setting}=""'])


def test_pairs_weighing_0_are_a_reported_step_and_a_warning_not_a_silent_loss_in_the_matrix(tmp_path):
    """Book-Crossing's rating 0 (implicit): with the weights kept, those pairs used to pass the
    k-core and then vanish from every user x item matrix (it stores no zeros), unreported."""
    log = tmp_path / "ratings.csv"
    log.write_text('"User-ID";"ISBN";"Book-Rating"\n"1";"034545104X";"0"\n"1";"0155061224";"5"\n'
                   '"2";"034545104X";"0"\n"2";"0155061224";"0"\n"3";"0155061224";"8"\n')  # fmt: skip
    report = ingest(log, tmp_path / "kept", DataConfig(aggregate="sum"))
    assert [(s.name, s.rows, s.users) for s in report.steps][-1] == (
        "weight > 0 (weights kept: a weight of 0 is no interaction)", 2, 2)  # fmt: skip
    assert report.users == 2 and report.interactions == 2
    zero = next(w for w in report.warnings if "3 of 5 pairs (60%) weigh 0 in column 'Book-Rating'" in w)
    assert "--set data.binarize=true" in zero  # the hint is what a user types, not the TOML spelling
    counted = ingest(log, tmp_path / "counted", DataConfig(aggregate="sum", binarize=True))
    assert counted.interactions == 5 and not any("weigh 0" in w for w in counted.warnings)


def test_a_1_to_5_positive_rule_on_a_10_point_scale_warns_once_naming_the_setting(tmp_path):
    """movielens.toml's positive_min_weight = 4 on Book-Crossing / MovieTweetings (0-10) kept most
    dislikes (4, 5, 6 of 10) as positives without a word."""
    log = tmp_path / "ratings.csv"
    log.write_text("user_id,item_id,rating\na,x,9\na,y,4\nb,y,6\nb,x,10\nc,z,1\n")
    report = ingest(log, tmp_path / "out", DataConfig(positive_min_weight=4.0, binarize=True))
    scale = [w for w in report.warnings if "positive_min_weight" in w]
    assert len(scale) == 1 and "\n" not in scale[0]
    assert "--set data.positive_min_weight=8" in scale[0] and "reach 10" in scale[0]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert scale[0] in manifest["warnings"]


@pytest.mark.parametrize("rows, rule", [
    ("a,x,5\na,y,4.5\nb,y,0.5\nb,x,3.5\n", 4.0),  # ml-latest-small's half stars: the scale the rule means
    ("a,x,13883\na,y,2\nb,y,1\nb,x,228\n", 2.0),  # play counts with a "played twice" rule: no rating scale
    ("a,x,9\na,y,4\nb,y,6\nb,x,10\n", 8.0),       # a rule already written for 10 points
])
def test_a_positive_rule_on_its_own_scale_or_on_counts_gets_no_scale_warning(tmp_path, rows, rule):
    log = tmp_path / "ratings.csv"
    log.write_text("user_id,item_id,rating\n" + rows)
    report = ingest(log, tmp_path / "out", DataConfig(positive_min_weight=rule, binarize=True))
    assert not [w for w in report.warnings if "positive_min_weight" in w]


def test_auto_summing_repeated_ratings_warns_with_the_count_and_the_setting(tmp_path):
    """With no config, aggregate = auto summed five 2-star ratings of one Amazon Beauty pair into
    weight 10, without a word. The rule stays (processed data keeps its meaning; play counts sum
    rightly), but a rating-named column summed says so in one line and in the manifest."""
    log = tmp_path / "ratings.csv"
    log.write_text("user_id,parent_asin,rating,timestamp\n" + "".join(
        f"a,x,2,{1600000000 + i}\n" for i in range(5)) + "a,y,5,1600000009\nb,x,4,1600000010\n")  # fmt: skip
    report = ingest(log, tmp_path / "out", DataConfig())
    summed = [w for w in report.warnings if "summed" in w]
    assert len(summed) == 1 and summed[0].startswith("4 repeated (user, item) rows were summed")
    assert "--set data.aggregate=last" in summed[0] and "\n" not in summed[0]
    assert summed[0] in json.loads((tmp_path / "out" / "manifest.json").read_text())["warnings"]
    from recsys.data.storage import load_processed

    data = load_processed(tmp_path / "out")  # the sum itself is unchanged: processed data keeps its meaning
    assert sorted(data.interactions["weight"].to_list()) == pytest.approx([4.0, 5.0, 10.0])
    last = ingest(log, tmp_path / "last", DataConfig(aggregate="last"))
    assert not [w for w in last.warnings if "summed" in w]
    binarized = ingest(log, tmp_path / "binarized", DataConfig(binarize=True))  # every pair weighs 1: no sum to warn of
    assert not [w for w in binarized.warnings if "summed" in w]


def test_summed_play_counts_get_no_ratings_warning(tmp_path):
    log = tmp_path / "user_artists.dat"
    log.write_text(PLAYS)  # the pair (2, 51) repeats: plays add up, rightly
    assert ingest(log, tmp_path / "out", DataConfig()).warnings == []


def test_a_run_on_a_sparse_log_says_how_many_held_out_users_its_test_does_not_score(tmp_path):
    """An Amazon-reviews-shaped log (most users with one or two reviews) under movielens.toml's
    strong generalisation with the k-core lowered to keep them: a held-out user's only review lands
    in fold-in four times in five, so most held-out users have nothing to score. The run said nothing
    of them (on the 200k-user replica: 12,604 scored of ~35,000 held out); it now says how many."""
    from pipelines.run import load_split, run_pipeline, split_line
    from recsys.evaluation.cold import divide_test

    rng = np.random.default_rng(0)
    rows = ["user_id,parent_asin,rating,timestamp"]
    for u in range(400):
        n = 1 if u % 3 else 6  # two users in three with a single review
        for i in rng.choice(60, size=n, replace=False):
            rows.append(f"AG{u:05d}XK,B0{i:08d},5.0,{1588615855070 + 1000 * len(rows)}")
    log = tmp_path / "Reviews.csv"
    log.write_text("\n".join(rows) + "\n")
    cfg = load_config(REPO / "pipelines" / "configs" / "movielens.toml", [
        f"data.source={log}", f"data.processed_dir={tmp_path / 'p'}", "data.min_user_interactions=1",
        "evaluation.bootstrap_samples=10", "folding.enabled=false", 'models=[{name="popularity", kind="popularity"}]',
    ])  # fmt: skip
    lines: list[str] = []
    run_pipeline(cfg, tracking=False, log=lines.append)
    [said] = [line for line in lines if line.startswith("split: strong_generalization")]
    split = load_split(prepare_dataset(cfg), cfg)
    assert said == split_line(split)
    counts = divide_test(split).counts()
    unscored = split.test_set().n_users_without_truth
    assert unscored > counts["warm_test_users"] + counts["cold_test_users"] > 0  # most held-out users
    assert said.endswith(f"; {unscored:,} held-out users whose every interaction fell in fold-in are not scored")
    held_out = split.meta["n_test_users"]
    assert counts["warm_test_users"] + counts["cold_test_users"] + unscored == held_out


def test_the_split_line_accounts_for_users_whose_test_items_all_lack_training_data():
    """A long-tail log (Tianchi's mobile log: 34 users, 1,689 items in 1,690 rows): a random split's
    test items were mostly seen by nobody in training, so they are left out of the truth and their
    users not scored; the line said `test scores 1 users ...; 8 users without a test interaction
    are not scored` and 25 users were accounted for nowhere."""
    import scipy.sparse as sp

    from pipelines.run import split_line
    from recsys.data.split import Split

    def csr(pairs: list[tuple[int, int]]) -> sp.csr_matrix:
        rows, cols = zip(*pairs, strict=True)
        return sp.csr_matrix((np.ones(len(pairs), dtype=np.float32), (rows, cols)), shape=(4, 8))

    train = csr([(0, 0), (0, 1), (1, 1), (2, 2), (3, 0)])
    test = csr([(0, 2), (1, 5), (1, 6), (2, 7), (2, 1)])  # user 1's items 5, 6 and user 2's 7: no training row
    line = split_line(Split(protocol="random", train=train, test=test))
    assert line == (
        "split: random, 5 train / 5 test interactions; test scores 2 users (2 with a history, 0 cold); "
        "1 user without a test interaction is not scored; 3 test interactions on 3 item(s) without training "
        "data (never ranked) left out, and with them 1 user who had no other"
    ), line
