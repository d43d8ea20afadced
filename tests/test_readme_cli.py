"""Every `recsys` command shown in README.md's code blocks, walked as a new user would: its options
exist (`--help`), its happy path on tiny data exits 0, and bad input (a missing file, a garbage
file, a bad config, a bad --set) exits 2 with one `error:` line and no traceback.

The commands are parsed from README.md, so a command added there without a case here fails, and
an option the README shows that the command does not have fails too."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def readme_commands() -> list[list[str]]:
    """`recsys ...` command lines of README.md's code blocks, as argument lists (comments,
    line continuations and `&&` chains handled)."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            for part in line.split("&&"):
                try:
                    tokens = shlex.split(part, comments=True)
                except ValueError:
                    continue
                if tokens[:1] == ["recsys"] and len(tokens) > 1:
                    commands.append(tokens[1:])
    return commands


def command_name(tokens: list[str]) -> str:
    return " ".join(tokens[:2]) if tokens[0] == "data" else tokens[0]


def options(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("--")]


def invoke(args: list[str]):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def assert_one_line_error(args: list[str], says: str | None = None) -> None:
    result = invoke(args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.exit_code == 2, (args, result.output)
    assert len(errors) == 1, (args, result.output)
    if says:
        assert says in errors[0], (args, errors[0])


# ------------------------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def work(tmp_path_factory, shared_mlflow_uri) -> dict[str, Path]:
    """Tiny inputs: a config (synthetic 120 x 60, popularity + a tiny WALS, the session's MLflow
    store), a CSV log, a garbage file, a config that does not validate."""
    root = tmp_path_factory.mktemp("readme")
    config = root / "tiny.toml"
    config.write_text(f"""
name = "readme"
[data]
source = "synthetic"
processed_dir = "{root / 'processed'}"
raw_dir = "{root / 'raw'}"
min_user_interactions = 2
[data.synthetic]
n_users = 120
n_items = 60
n_clusters = 3
interactions_per_user = 12
[split]
validation_fraction = 0.15
[evaluation]
ks = [5, 20]
bootstrap_samples = 50
[tracking]
tracking_uri = "{shared_mlflow_uri}"
experiment = "readme"
model_name_prefix = "readme"
[promotion]
registered_model = "readme-best"
[[models]]
name = "popularity"
kind = "popularity"
[[models]]
name = "wals"
kind = "wals"
factors = 8
iterations = 3
threads = 1
""")
    log = root / "ratings.csv"
    pl.DataFrame({"userId": ["a", "a", "b", "c"], "movieId": ["x", "y", "x", "z"],
                  "rating": [5.0, 4.0, 4.0, 3.0]}).write_csv(log)  # fmt: skip
    other = root / "other.csv"
    pl.DataFrame({"userId": ["d", "e"], "movieId": ["p", "q"], "rating": [5.0, 4.0]}).write_csv(other)
    garbage = root / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 8)
    bad = root / "bad.toml"
    bad.write_text('[split]\ntest_fraction = 7\n[[models]]\nname = "m"\nkind = "no-such-kind"\n')
    ml = root / "downloads" / "ml-100k"
    ml.mkdir(parents=True)
    (ml / "u.data").write_text("1\t10\t5\t881250949\n2\t10\t4\t881250950\n2\t11\t3\t881250951\n")
    return {"root": root, "config": config, "log": log, "other": other, "garbage": garbage, "bad": bad,
            "missing": root / "missing.toml", "ml": ml}  # fmt: skip


def _config_cases(w: dict[str, Path], args: list[str]) -> list[tuple[list[str], str | None]]:
    """The four kinds of bad input for a command that reads a config."""
    return [
        ([*args, "--config", w["missing"]], "config file not found"),
        ([*args, "--config", w["garbage"]], "not a UTF-8 text file"),
        ([*args, "--config", w["bad"]], "invalid config"),
        ([*args, "--config", w["config"], "--set", "split.test_fraction"], "expected key=value"),
        ([*args, "--config", w["config"], "--set", "models.nope.factors=3"], "no model named 'nope'"),
    ]


def _damaged_models(w: dict[str, Path]) -> Path:
    """A copy of the trained models whose WALS factors file is garbage."""
    import shutil

    damaged = w["root"] / "damaged-models"
    if not damaged.exists():
        shutil.copytree(w["root"] / "models", damaged)
        (damaged / "wals" / "factors.safetensors").write_bytes(b"\x00 not safetensors")
    return damaged


def _happy_tracked(w: dict[str, Path]) -> None:
    result = invoke(["run", "--config", w["config"], "--no-prefect", "--json", w["root"] / "run.json"])
    assert result.exit_code == 0, result.output
    assert "champion:" in result.output and (w["root"] / "run.json").is_file()
    assert "end to end" in result.output  # the wall time covers start-up, not only the pipeline
    wall = next(line for line in result.output.splitlines() if line.startswith("wall time:"))
    assert "Prefect" not in wall  # --no-prefect starts no Prefect server: the line named one


# Per command: (happy path or the reason it is covered elsewhere, bad-input cases).
Case = tuple[Callable[[dict[str, Path]], None] | str, Callable[[dict[str, Path]], list]]


def _ok(*args) -> Callable[[dict[str, Path]], None]:
    def run(w: dict[str, Path]) -> None:
        result = invoke([a(w) if callable(a) else a for a in args])
        assert result.exit_code == 0, result.output

    return run


CASES: dict[str, Case] = {
    "run": (_happy_tracked, lambda w: [
        *_config_cases(w, ["run", "--no-prefect"]),
        (["run", "--no-prefect", "--config", w["config"], "--set", f"data.source={w['root'] / 'nope.csv'}"],
         "no such file"),
        (["run", "--no-prefect", "--config", w["config"], "--no-tracking", "--set", f"data.source={w['garbage']}"],
         None),
        # A misspelt public set read as a missing file, without the names that exist.
        (["run", "--no-prefect", "--no-tracking", "--config", w["config"], "--set", "data.source=movielens-100"],
         "did you mean 'movielens-100k'?"),
        # A misspelt key named the key alone; the section's closest key is the fix.
        (["run", "--no-prefect", "--no-tracking", "--config", w["config"], "--set", "models.wals.factor=3"],
         "models.wals.factor: unknown key (did you mean 'factors'?)"),
        (["run", "--no-prefect", "--no-tracking", "--config", w["config"], "--set", "split.protocl=random"],
         "split.protocl: unknown key (did you mean 'protocol'?)"),
        # A config naming no model trained nothing and exited 0 with an empty table.
        (["run", "--no-prefect", "--no-tracking", "--config", w["config"], "--set", "models=[]"], "names no model"),
    ]),
    "ingest": (_ok("ingest", lambda w: w["log"], "--out", lambda w: w["root"] / "ingested", "--min-rating", "4",
                   "--json", lambda w: w["root"] / "summary.json"), lambda w: [
        (["ingest", w["root"] / "nope.csv", "--out", w["root"] / "o1"], "no such file"),
        (["ingest", w["garbage"], "--out", w["root"] / "o2"], None),
        (["ingest", w["log"], "--out", w["root"] / "o3", "--config", w["bad"]], "invalid config"),
        (["ingest", w["log"], "--out", w["root"] / "o4", "--set", "data.aggregate=median"], "invalid config"),
        (["ingest", w["log"], "--out", w["log"] / "sub"], "is a file, not a directory"),
    ]),
    "data synth": (_ok("data", "synth", "--out", lambda w: w["root"] / "synth", "--users", "40", "--items", "30",
                       "--clusters", "3"), lambda w: [
        (["data", "synth", "--out", w["root"] / "s2", "--users", "0"], "--users"),
        (["data", "synth", "--out", w["garbage"] / "s3"], None),
    ]),
    "data fetch": (_ok("data", "fetch", "movielens-100k", "--raw-dir", lambda w: w["root"] / "raw-fetch",
                       "--offline", lambda w: w["ml"]), lambda w: [
        (["data", "fetch", "movielens-100k", "--offline", w["root"] / "missing.zip"], "does not exist"),
        (["data", "fetch", "movielens-100k", "--raw-dir", w["root"] / "raw2", "--offline", w["garbage"]], ".zip"),
        (["data", "fetch", "movielens-1b"], "unknown public data set"),
    ]),
    "data combine": (_ok("data", "combine", lambda w: w["log"], lambda w: w["other"], "--out",
                         lambda w: w["root"] / "blocks"), lambda w: [
        (["data", "combine", w["log"], w["root"] / "nope.csv", "--out", w["root"] / "c1"], "no such file"),
        (["data", "combine", w["log"], w["garbage"], "--out", w["root"] / "c2"], None),
        (["data", "combine", w["log"], w["other"], "--out", w["root"] / "c3", "--config", w["bad"]], "invalid config"),
    ]),
    "train": (_ok("train", "--config", lambda w: w["config"], "--models", lambda w: w["root"] / "models"),
              lambda w: [*_config_cases(w, ["train"]),
                         (["train", "--config", w["config"], "--set", "models=[]"], "names no model")]),
    "evaluate": (_ok("evaluate", "--config", lambda w: w["config"], "--models", lambda w: w["root"] / "models"),
                 lambda w: [*_config_cases(w, ["evaluate"]),
                            (["evaluate", "--config", w["config"], "--models", w["root"] / "no-models"],
                             "no saved model"),
                            (["evaluate", "--config", w["config"], "--models", _damaged_models(w)],
                             "saved model is damaged")]),
    "tune": (_ok("tune", "--config", lambda w: w["config"], "--model", "wals", "--trials", "1", "--out",
                 lambda w: w["root"] / "tuned.toml"),
             lambda w: [*_config_cases(w, ["tune", "--trials", "1"]),
                        (["tune", "--config", w["config"], "--model", "nope", "--trials", "1"], "no model named")]),
    "compare": (_ok("compare", "--config", lambda w: w["config"], "--metric", "recall@20", "--format", "markdown"),
                lambda w: [*_config_cases(w, ["compare"]),
                           (["compare", "--config", w["config"], "--format", "yaml"], "--format")]),
    "promote": (_ok("promote", "--config", lambda w: w["config"]), lambda w: _config_cases(w, ["promote"])),
    "registry": (_ok("registry", "--config", lambda w: w["config"], "--format", "markdown"),
                 lambda w: [*_config_cases(w, ["registry"]),
                            (["registry", "--config", w["config"], "--format", "yaml"], "--format"),
                            (["registry", "--config", w["config"], "--model", "nope"], "no registered model")]),
    "serve": ("tests/tracking/test_server.py runs `recsys serve` and fuzzes it", lambda w: [
        *_config_cases(w, ["serve"]),
        (["serve", "--config", w["config"], "--port", "-1"], "--port"),
        (["serve", "--config", w["config"], "--alias", "nobody"], "no version with alias"),
    ]),
    "schedule": ("serves until stopped: tests/flows cover the deployment", lambda w: [
        *_config_cases(w, ["schedule"]),
    ]),
    "ui": ("serves until stopped: tests/test_process_group.py covers its child handling", lambda w: [
        *_config_cases(w, ["ui"]),
        (["ui", "--config", w["config"], "--port", "0"], "--port"),
    ]),
    "stack": ("starts servers: tests/test_team_stack.py drives it on the session's stack", lambda w: [
        (["stack", "up", "--dir", w["root"] / "stack", "--mlflow-port", "0"], "--mlflow-port"),
        (["stack", "up", "--dir", w["garbage"]], "--dir"),
        (["stack", "down", "--dir", _damaged_stack(w)], "unreadable stack state"),
    ]),
}


def _damaged_stack(w: dict[str, Path]) -> Path:
    directory = w["root"] / "damaged-stack"
    directory.mkdir(exist_ok=True)
    (directory / "stack.json").write_text("{not json")
    return directory


def test_every_readme_command_has_a_case_and_only_options_it_has():
    commands = readme_commands()
    assert len(commands) >= 10
    for tokens in commands:
        name = command_name(tokens)
        assert name in CASES, f"README shows `recsys {' '.join(tokens)}`: add a case for {name!r}"
        help_text = invoke([*name.split(), "--help"]).output
        for option in options(tokens):
            assert option in help_text, f"README uses {option} with `recsys {name}`, which has no such option"


ORDER = ["run", "ingest", "data synth", "data fetch", "data combine", "train", "evaluate", "tune", "compare",
         "promote", "registry", "serve", "schedule", "ui", "stack"]  # run first: compare / promote / serve read its runs


def test_readme_commands_happy_path_and_bad_input(work):
    assert sorted(ORDER) == sorted(CASES)
    for name in ORDER:
        happy, bad = CASES[name]
        if callable(happy):
            happy(work)
        for args, says in bad(work):
            assert_one_line_error(args, says)


def test_usage_errors_are_one_line_too():
    assert_one_line_error(["train", "--no-such-option"], "No such option")
    assert_one_line_error(["ingest"], "Missing argument")
    help_text = invoke(["tune", "--help"]).output
    assert "(from [])" not in help_text and "config's models" in help_text


def test_an_output_that_cannot_be_written_is_refused_before_the_work(work):
    """--json / --out under a file (or read-only): refused at once, one line naming the option. The
    run, search or evaluation used to do all its work (train, log, promote; every trial) and only
    then fail to write, exit 2, the summary or tuned config lost."""
    blocked = work["log"] / "out.json"  # a path under a regular file: no user can create it
    for args, option in [
        (["run", "--no-prefect", "--no-tracking", "--config", work["config"], "--json", blocked], "--json"),
        (["tune", "--config", work["config"], "--trials", "1", "--out", blocked], "--out"),
        (["evaluate", "--config", work["config"], "--train", "--models", work["root"] / "m-blocked",
          "--json", blocked], "--json"),
        (["ingest", work["log"], "--out", work["root"] / "i-blocked", "--json", blocked], "--json"),
    ]:  # fmt: skip
        result = invoke(args)
        assert result.exit_code == 2, result.output
        (line,) = [line for line in result.output.splitlines() if line.strip()]
        assert line.startswith(f"error: cannot write {option} {blocked}"), line
    assert not (work["root"] / "m-blocked").exists() and not (work["root"] / "i-blocked").exists()


def test_an_output_directory_is_completed_with_the_outputs_own_kind_of_name(tmp_path):
    """`recsys tune --out DIR` suggested `--out DIR/summary.json` for a tuned TOML config; and a file
    where `recsys evaluate --models` wants a directory is named as such."""
    config = tmp_path / "small.toml"
    config.write_text('[[models]]\nname = "wals"\nkind = "wals"\n')
    result = invoke(["tune", "--config", config, "--model", "wals", "--out", tmp_path])
    assert result.exit_code == 2, result.output
    assert f"give a file name, e.g. --out {tmp_path / 'tuned-small-wals.toml'}" in " ".join(result.output.split())
    result = invoke(["run", "--no-prefect", "--no-tracking", "--config", config, "--json", tmp_path])
    assert f"e.g. --json {tmp_path / 'summary.json'}" in " ".join(result.output.split())
    # compare --plot DIR failed after the table, naming a temp file; a path under a file said "File exists"
    assert_one_line_error(["compare", "--config", config, "--plot", tmp_path],
                          f"--plot {tmp_path} is a directory: give a file name, e.g. --plot {tmp_path / 'compare.png'}")
    assert_one_line_error(["compare", "--config", config, "--output", config / "x.md"],
                          f"cannot write --output {config / 'x.md'} ({config} is a file, not a directory)")
    # the other way round: evaluate --models FILE said "FILE/wals: no saved model", after the split
    assert_one_line_error(["evaluate", "--config", config, "--models", config],
                          f"--models {config} is a file, not the directory")  # fmt: skip


def test_schedule_refuses_a_bad_cron_or_time_zone_before_it_says_it_serves():
    """`recsys schedule --cron "61 3 * * *"` (or `--timezone Mars/Olympus`) printed "serving deployment
    ..." and then "unexpected ValueError: Invalid cron string ...: this is a bug", exit 1; with both
    --cron and --interval it served the interval, the cron dropped without a word."""
    for args, says in [
        (["--cron", "61 3 * * *"], "error: --cron '61 3 * * *': Invalid cron string"),
        (["--timezone", "Mars/Olympus"], "error: --timezone 'Mars/Olympus': Invalid timezone"),
        (["--cron", "0 3 * * *", "--interval", "60"], "error: --cron '0 3 * * *' and --interval 60"),
    ]:
        result = invoke(["schedule", *args])
        assert result.exit_code == 2, (args, result.output)
        (line,) = [line for line in result.output.splitlines() if line.strip()]
        assert line.startswith(says), (args, line)


def test_schedule_says_when_it_runs_first_and_where_the_runs_go(tmp_path, monkeypatch):
    """Once serving, `recsys schedule` printed nothing until its first run (a nightly cron: up to a
    day), so it could not be told from a hung one, and it never said where the runs' results go."""
    from datetime import UTC, datetime

    import flows.deployments
    import flows.server_start

    served = []
    monkeypatch.setattr(flows.deployments, "serve_pipeline", lambda **kwargs: served.append(kwargs))
    # nor a temporary server started for it, before it serves (`flows.server_start`, as `recsys run`)
    monkeypatch.setattr(flows.server_start, "launch_server_early", lambda: None)
    monkeypatch.setattr(flows.server_start, "start_server_in_background",
                        lambda early=None: flows.server_start.ServerStart(None))  # fmt: skip
    config = tmp_path / "nightly.toml"
    config.write_text(f'[tracking]\ntracking_uri = "sqlite:///{tmp_path}/m.db"\n[[models]]\nname = "p"\n'
                      'kind = "popularity"\n')  # fmt: skip
    name = f"first-run-{tmp_path.name}"  # another schedule of this machine may serve "nightly"
    result = invoke(["schedule", "--cron", "0 3 1 1 *", "--config", config, "--name", name])
    assert result.exit_code == 0 and len(served) == 1, result.output
    now = datetime.now(UTC)
    year = now.year + 1 if (now.month, now.day, now.hour) >= (1, 1, 3) else now.year
    lines = result.output.splitlines()
    assert f"next run:     {year}-01-01 03:00 UTC" in lines, result.output
    assert f"MLflow store: sqlite:///{tmp_path}/m.db" in lines, result.output
    assert f"browse it:    recsys ui --config {config}   compare: recsys compare --config {config} " \
           "--metric recall@20" in lines, result.output  # fmt: skip
    result = invoke(["schedule", "--interval", "3600", "--config", config, "--name", name])
    assert result.exit_code == 0 and not any(line.startswith("next run:") for line in result.output.splitlines())


def test_ui_on_a_port_in_use_is_a_one_line_error_before_any_server_starts(tmp_path):
    """MLflow's server failed after `recsys ui` had printed its link, and the command exited 0."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(
            ["ui", "--port", str(port), "--set", f"tracking.tracking_uri=sqlite:///{tmp_path / 'm.db'}"],
            "cannot listen on 127.0.0.1",
        )


def test_readmes_mlflow_commands_name_the_store_recsys_wrote():
    """README's `mlflow models serve -m models:/default-best@champion --env-manager local` (and its
    `python -c "import mlflow; ... set_signature('runs:/RUN_ID/model', ...)"`: "Run ... not found"), run as
    written in the repository root, failed with "Registered Model with name=default-best not found"
    and left a new `mlflow.db` there: MLflow's own commands do not read recsys's config, and MLflow
    3's default store is `./mlflow.db`, not recsys's `mlflow/mlflow.db`."""
    text = " ".join((REPO / "README.md").read_text().split())
    uses = [m.start() for m in re.finditer(r"mlflow models serve -m|python -c \"import mlflow;", text)]
    assert len(uses) >= 2
    for at in uses:
        assert text[max(0, at - 60):at].rstrip().endswith("MLFLOW_TRACKING_URI=sqlite:///mlflow/mlflow.db"), text[at - 60:at + 60]


def test_defaults_the_readme_names_are_the_codes():
    """Each default value the README states in prose, formatted from the code's own default: a
    default changed in the code, or a number edited in the README, fails here instead of leaving
    the README stating a value the code no longer uses."""
    from flows.runner import HEALTH_EVERY_S, LEAST_GRACE_S, SAY_DOWN_AFTER, SERVER_GRACE_S
    from recsys.ann_config import AnnConfig
    from recsys.cli.pipeline_cmds import CLIENT_RETRIES
    from recsys.config import MIN_STALE_MINUTES, PromotionConfig, SplitConfig, TrackingConfig
    from recsys.models import defaults
    from recsys.models.blend_config import BlendConfig
    from recsys.models.ease_config import EASEConfig
    from recsys.models.two_tower_config import TwoTowerConfig
    from recsys.tracking.store import HTTP_LIMITS
    from recsys.tuning import TuningConfig

    text = " ".join((REPO / "README.md").read_text().split())
    tower, ease, ann = TwoTowerConfig(name="t"), EASEConfig(name="e"), AnnConfig()
    blend = BlendConfig(name="b", members=["m1", "m2"])
    pins = [
        ("`tracking.stale_run_minutes` (default {:g}; at least {:g}, or 0 for never)",
         TrackingConfig().stale_run_minutes, MIN_STALE_MINUTES),
        ("test users with a training history were scored (default {};", PromotionConfig().min_test_users),
        ("catalogues above `max_items` ({:,}), or data needing more than `max_memory_gb` ({:g}) in all",
         ease.max_items, ease.max_memory_gb),
        ("EASE sets `l2` to {:g}x the mean item count (at least {:g})", ease.l2_scale, defaults.EASE_L2_FLOOR),
        ("sets `alpha = {:g} / mean f(w)`, but at least `{:g} x n_items", defaults.WALS_MEAN_CONFIDENCE,
         defaults.WALS_MIN_OBSERVED_SHARE),
        ("`{:g} x sqrt(mean confidence mass", defaults.WALS_REGULARIZATION_SCALE),
        ("a batch size giving at least ~{} steps per epoch", defaults.STEPS_PER_EPOCH),
        ("early stopping waits `early_stopping_min_steps` ({}) optimizer steps", tower.early_stopping_min_steps),
        ("over the user's last `sequence_length` ({}) interactions", tower.sequence_length),
        ("`sequence_blocks` ({}) pre-norm Transformer blocks", tower.sequence_blocks),
        ("`popularity` (count^alpha, alpha {:g})", tower.sampler_alpha),
        ("is `all` for a sequence user tower on a catalogue of at most {:,} items", defaults.FULL_CATALOGUE_MAX_ITEMS),
        ("test = the `split.window_days` (default {:g}) after the cut-off", SplitConfig().window_days),
        ("Past `serving.ann.min_items` items (default {:,})", ann.min_items),
        ("`connectivity = {}`, `expansion_add = {}`, `expansion_search = {}`",
         ann.connectivity, ann.expansion_add, ann.expansion_search),
        ("more than `max_overfetch` seen items (default {:,})", ann.max_overfetch),
        ("p < `tuning.cross_check_alpha` = {:g}", TuningConfig().cross_check_alpha),
        ("above `max_memory_gb` (default {:g}) the run skips the blend", blend.max_memory_gb),
        ("`MLFLOW_HTTP_REQUEST_TIMEOUT` ({} s) for each of its 1 + `MLFLOW_HTTP_REQUEST_MAX_RETRIES` ({}) tries",
         HTTP_LIMITS["MLFLOW_HTTP_REQUEST_TIMEOUT"], HTTP_LIMITS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]),
        ("`PREFECT_CLIENT_MAX_RETRIES={}` for `recsys run`", CLIENT_RETRIES),
        ("`RECSYS_SCHEDULE_SERVER_GRACE_S` sets that wait (seconds, at least {:g}; default {:g}; a wait under {:g} s "
         "is checked more often than every {:g} s)", LEAST_GRACE_S, SERVER_GRACE_S, HEALTH_EVERY_S * (SAY_DOWN_AFTER + 2),
         HEALTH_EVERY_S),
        ("stops if it has not answered within {:g} s", SERVER_GRACE_S),
    ]  # fmt: skip
    for phrase, *values in pins:
        assert phrase.format(*values) in text, f"README should say: {phrase.format(*values)}"


def test_every_toml_block_of_the_readme_loads_with_its_commented_settings(tmp_path):
    """The README's TOML examples (sequence tower, blend, per-run tuning, distillation, ANN serving),
    with their commented-out settings switched on, load as one config; the sequence tower's comment,
    which lists its defaults, lists the code's."""
    import tomllib

    from recsys.config import load_config
    from recsys.models.two_tower_config import TwoTowerConfig

    blocks = re.findall(r"```toml\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 5
    lines, listed = [], {}
    for line in "\n".join(blocks).splitlines():
        setting = re.fullmatch(r"#\s*(\w+ = .*?)(\s+#.*)?", line.strip())
        if setting:
            try:
                tomllib.loads(setting[1])
                line = setting[1]
            except tomllib.TOMLDecodeError:  # `# a = 1, b = 2`: the defaults a comment lists
                listed.update(tomllib.loads(setting[1].replace(", ", "\n")))
        lines.append(line)
    config = tmp_path / "readme.toml"
    config.write_text("[split]\nvalidation_fraction = 0.1\n" + "\n".join(lines) +
                      '\n[[models]]\nname = "ease"\nkind = "ease"\n[[models]]\nname = "two_tower_mixed"\nkind = "two_tower"\n')  # fmt: skip
    cfg = load_config(config)
    assert {"sequence", "blend", "wals", "two_tower_kd"} <= {m.name for m in cfg.models}
    assert next(m for m in cfg.models if m.name == "blend").weights == {"wals": 0.5}
    assert "regularization" in next(m for m in cfg.models if m.name == "wals").tuning.space
    defaults = TwoTowerConfig(name="t")
    assert listed and {key: getattr(defaults, key) for key in listed} == listed


def test_the_shipped_configs_are_as_the_readme_describes_them():
    """The README's numbers about the shipped configs (which config fits which log, the tuning
    budgets), formatted from the configs themselves."""
    from recsys.config import load_config

    text = " ".join((REPO / "README.md").read_text().split())
    configs = REPO / "pipelines" / "configs"
    default, movielens, plays = (load_config(configs / f"{name}.toml") for name in ("default", "movielens", "plays"))

    def trials(cfg, kind: str) -> set[int]:
        return {m.tuning.n_trials for m in cfg.models if m.kind == kind and m.tuning is not None}

    (ease,), (wals,), (towers,), (blend,), (plays_blend,) = (
        trials(movielens, "ease"), trials(movielens, "wals"), trials(movielens, "two_tower"),
        trials(movielens, "blend"), trials(plays, "blend"))  # fmt: skip
    timeouts = {m.tuning.timeout_s for cfg in (movielens, plays) for m in cfg.models if m.tuning is not None}
    synthetic = default.data.synthetic
    pins = [
        f"The shipped budgets (EASE {ease}, WALS {wals}, two-towers {towers} trials, the blend {blend} ({plays_blend} in plays.toml)",
        f"`timeout_s = {timeouts.pop():g}` only as a guard",
        f"default: {default.split.protocol} split, {synthetic.n_users:,} users x {synthetic.n_items:,} items",
        f"plays.toml's own `min_user_interactions = {plays.data.min_user_interactions}`",
        f"(`positive_min_weight` at most 5, movielens.toml's {movielens.data.positive_min_weight:g})",
    ]
    assert not timeouts, "one timeout_s in the shipped configs, as the README says"
    for phrase in pins:
        assert phrase in text, f"README should say: {phrase}"
    assert (movielens.split.protocol, plays.split.protocol) == ("strong_generalization", "random")


def test_the_option_defaults_the_readme_names_are_the_commands():
    """Ports and limits the README gives as defaults, from the commands' own option defaults (its
    serve example passes --port, so the serve port is not one)."""
    import typer.main

    text = " ".join((REPO / "README.md").read_text().split())
    root = typer.main.get_command(app)

    def default(command: str, option: str):
        node = root
        for part in command.split():
            node = node.commands[part]
        return next(param.default for param in node.params if param.name == option)

    postgres, mlflow, prefect = (default("stack up", f"{part}_port") for part in ("postgres", "mlflow", "prefect"))
    pins = [
        f"source .stack/env # MLFLOW_TRACKING_URI=http://127.0.0.1:{mlflow}, PREFECT_API_URL=http://127.0.0.1:{prefect}/api",
        f"| 127.0.0.1:{postgres} |",
        f"| http://127.0.0.1:{mlflow} |",
        f"| http://127.0.0.1:{prefect} |",
        f"browse it: make ui (or: recsys ui -> http://127.0.0.1:{default('ui', 'port')}/#/experiments/",
        f"(rows x k, default {default('serve', 'max_results'):,}; 413 beyond)",
    ]
    for phrase in pins:
        assert phrase in text, f"README should say: {phrase}"
