"""`recsys run` on logs nobody tuned for (tiny, one interaction per user, items seen once, one
timestamp for all ...): a sensible run with a warning where the data limits the numbers, or one
`error:` line with exit code 2 that names the problem and the fix - never NaN metrics printed as if
fine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.run import prepare_run_inputs
from recsys.cli import app
from recsys.config import load_config
from recsys.errors import DataError

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "pipelines" / "configs" / "default.toml"
T0 = 1_600_000_000
EVERY_ROW = ["data.min_user_interactions=1", "data.min_item_interactions=1"]


def write_log(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return path


def config(tmp_path: Path, log: Path, *overrides: str):
    return load_config(DEFAULT, [f"data.source={log}", f"data.processed_dir={tmp_path / 'p'}",
                                 f"data.raw_dir={tmp_path / 'raw'}", *overrides])  # fmt: skip


def split_error(tmp_path: Path, rows: list[tuple[str, str, int]], *overrides: str) -> str:
    """The one-line error the run's split step raises on this log (before any model trains)."""
    cfg = config(tmp_path, write_log(tmp_path / "log.csv", rows), *overrides)
    with pytest.raises(DataError) as caught:
        prepare_run_inputs(cfg)
    message = str(caught.value)
    assert "\n" not in message and "no test user to score" in message
    return message


def pairs(n_users: int, n_items: int, n: int, seed: int = 0) -> list[tuple[str, str, int]]:
    """`n` distinct (user, item) pairs at distinct minutes."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(n_users * n_items, size=n, replace=False)
    return [(f"u{c // n_items}", f"i{c % n_items}", T0 + 60 * k) for k, c in enumerate(np.sort(codes))]


# --------------------------------------------------------------------------- 1. a test part of nobody


def test_a_five_row_log_is_refused_with_the_setting_that_holds_more_out(tmp_path):
    """5 rows, random split at test_fraction 0.2: no pair drew test. Every model trained and the
    table printed `nan` for every metric, exit 0."""
    message = split_error(tmp_path, pairs(3, 4, 5), *EVERY_ROW)
    assert "none of its 5 interactions is held out" in message
    assert "--set split.test_fraction=" in message


def test_a_session_log_of_one_interaction_per_user_names_the_user_k_core(tmp_path):
    """Every user seen once: every test user is cold (no history), so the model metrics average
    nobody; EASE even failed with a hint to lower a learning rate it does not have."""
    rows = [(f"s{u}", f"i{u % 40}", T0 + u) for u in range(300)]
    message = split_error(tmp_path, rows, *EVERY_ROW)
    assert "have no training history" in message and "--set data.min_user_interactions=2" in message


def test_a_log_whose_items_are_each_seen_once_names_the_item_k_core(tmp_path):
    rows = [(f"u{k % 30}", f"i{k}", T0 + k) for k in range(300)]
    message = split_error(tmp_path, rows, *EVERY_ROW)
    assert "on items with no training interaction" in message and "--set data.min_item_interactions=2" in message


@pytest.mark.parametrize("kind", ["user", "item"])
def test_a_log_of_one_user_or_one_item_says_so(tmp_path, kind):
    rows = [("u0", f"i{k}", T0 + k) if kind == "user" else (f"u{k}", "i0", T0 + k) for k in range(50)]
    assert f"the log has one {kind} after filtering" in split_error(tmp_path, rows, *EVERY_ROW)


def test_a_k_core_that_leaves_one_user_names_its_setting(tmp_path):
    """One heavy user beside 30 with two interactions each: the k-core at 3 kept the heavy one alone,
    and the error said only "the log has one user after filtering", not which setting did it."""
    rows = [("heavy", f"i{k}", T0 + k) for k in range(20)]
    rows += [(f"u{u}", f"i{(u + k) % 20}", T0 + 100 + 2 * u + k) for u in range(30) for k in range(2)]
    message = split_error(tmp_path, rows, "data.min_user_interactions=3", "data.min_item_interactions=1")
    assert "the log has one user after filtering: the k-core (users >= 3, items >= 1" in message, message
    assert "left 1 of 31 users: lower data.min_user_interactions" in message, message


def test_a_temporal_split_of_one_timestamp_names_the_cut_off_and_the_random_protocol(tmp_path):
    """All rows at one instant: the cut-off is that instant and nothing is after it."""
    rows = [(u, i, T0) for u, i, _ in pairs(100, 80, 1500)]
    message = split_error(tmp_path, rows, "split.protocol=temporal")
    assert "none of its 1,500 interactions is held out" in message
    assert "times are all equal" in message and "--set split.protocol=random" in message


def test_a_temporal_test_of_new_users_only_names_the_per_user_protocol_not_the_k_core(tmp_path):
    """The cut-off falls where one new user's history begins: every test user is cold. The k-core
    hint (for one interaction per user) would not help: this user has five."""
    early = [(f"u{k % 10}", f"i{k % 7}", T0 + k) for k in range(50)]
    rows = early + [("new", f"i{k}", T0 + 1000 + k) for k in range(5)]
    message = split_error(tmp_path, rows, *EVERY_ROW, "split.protocol=temporal", "split.test_fraction=0.09")
    assert "first seen after the cut-off" in message and "--set split.protocol=leave_last_n" in message
    assert "min_user_interactions" not in message


def test_strong_generalization_that_holds_out_nobody_names_a_count(tmp_path):
    message = split_error(tmp_path, pairs(6, 10, 30), *EVERY_ROW, "split.protocol=strong_generalization")
    assert "--set split.heldout_users=1" in message


def test_leave_last_n_with_no_user_above_n_says_so(tmp_path):
    message = split_error(tmp_path, pairs(3, 4, 5), *EVERY_ROW, "split.protocol=leave_last_n", "split.n=3")
    assert "no user has more than split.n = 3" in message


def test_a_small_log_with_some_scorable_user_still_runs(tmp_path):
    """The check refuses only a test part of nobody: 30 rows leave 3 warm test users."""
    cfg = config(tmp_path, write_log(tmp_path / "log.csv", pairs(6, 10, 30)), *EVERY_ROW)
    assert prepare_run_inputs(cfg).split.test.nnz > 0


def test_recsys_run_on_a_five_row_log_exits_2_with_one_line_and_trains_nothing(tmp_path):
    log = write_log(tmp_path / "log.csv", pairs(3, 4, 5))
    args = ["run", "--config", str(DEFAULT), "--no-prefect", "--no-tracking", "--json", str(tmp_path / "s.json")]
    for setting in [f"data.source={log}", f"data.processed_dir={tmp_path / 'p'}", *EVERY_ROW]:
        args += ["--set", setting]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no test user to score" in errors[0], result.output
    assert "training " not in result.output and "= nan" not in result.output
    assert not (tmp_path / "s.json").exists()


# --------------------------------------------------------------------------- 2. models on data they cannot learn from


def test_ease_on_single_item_users_names_the_missing_co_occurrence_not_a_learning_rate():
    """Every training user with one item (users of two interactions, one held out): EASE's weights
    are all zero. The error said "training diverged ...; lower the learning rate (lr)", a setting
    EASE does not have."""
    import scipy.sparse as sp

    from recsys.errors import ModelError
    from recsys.models.ease import EASE

    users = np.arange(40)
    train = sp.csr_matrix((np.ones(40, dtype=np.float32), (users, users % 10)), shape=(40, 10))
    with pytest.raises(ModelError) as caught:
        EASE(name="ease").fit(train)
    message = str(caught.value)
    assert "no training user has two or more items" in message and "data.min_user_interactions" in message
    assert "learning rate" not in message
    rows, cols = np.append(users, 0), np.append(users % 10, 3)  # one user with two items: the model fits
    train = sp.csr_matrix((np.ones(41, dtype=np.float32), (rows, cols)), shape=(40, 10))
    assert np.count_nonzero(EASE(name="ease").fit(train).item_factors) > 0


# --------------------------------------------------------------------------- 3. rows the run never read


def test_the_kept_line_counts_the_rows_quarantined_for_empty_ids_by_reason(tmp_path):
    """A fifth of the rows with an empty user or item id: validation quarantines them (counted in
    the manifest), but the run said `kept: 8 interactions of 8 rows`, as if the log had 8 rows."""
    from pipelines.data import ingest_filters

    rows = [(f"u{k % 3}", f"i{k % 5}", T0 + k) for k in range(8)] + [("", "i1", T0 + 20), ("u1", "", T0 + 21)]
    cfg = config(tmp_path, write_log(tmp_path / "log.csv", rows), *EVERY_ROW)
    inputs = prepare_run_inputs(cfg)
    line = ingest_filters(inputs.dataset, inputs.data.manifest)
    where = Path(inputs.dataset.processed_dir) / "quarantine"
    assert line.startswith(f"kept: 8 interactions of 10 rows (2 quarantined: missing_item 1, missing_user 1; "
                           f"rows in {where}), 3 of 3 users"), line  # fmt: skip


def test_the_kept_line_of_a_clean_log_is_unchanged(tmp_path):
    from pipelines.data import ingest_filters

    cfg = config(tmp_path, write_log(tmp_path / "log.csv", pairs(6, 10, 30)), *EVERY_ROW)
    inputs = prepare_run_inputs(cfg)
    assert ingest_filters(inputs.dataset, inputs.data.manifest) == (
        "kept: 30 interactions of 30 rows, 6 of 6 users, 10 of 10 items (steps: aggregate (count))")


def test_a_filter_emptied_by_the_k_core_after_the_weight_rule_names_every_step(tmp_path):
    """A `clicked` flag (mostly 0) read as the weight: `weight > 0` keeps 75 of 1,500 rows, one per
    user, and the k-core removes them. The error named the k-core alone, so lowering it looked like
    the fix; the rows after each step show where the log went."""
    from pipelines.data import prepare_dataset

    log = tmp_path / "clicks.csv"
    log.write_text("user_id,item_id,timestamp,clicked\n" + "".join(
        f"u{k // 15},i{k % 15},{T0 + k},{int(k % 15 == 0 and k // 15 < 75)}\n" for k in range(1500)))  # fmt: skip
    cfg = config(tmp_path, log, "data.columns.weight=clicked", "data.aggregate=auto")
    with pytest.raises(DataError) as caught:
        prepare_dataset(cfg)
    message = str(caught.value)
    assert "no interactions left after filtering (k-core" in message
    assert "rows after each step: validated 1,500, aggregate (sum) 1,500, weight > 0" in message
    assert " 75, k-core (users >= 3, items >= 3" in message and message.index("rows after") < message.index("lower")


def test_a_filter_emptied_by_its_only_step_keeps_its_short_message(tmp_path):
    from pipelines.data import prepare_dataset

    cfg = config(tmp_path, write_log(tmp_path / "log.csv", pairs(3, 4, 5)))
    with pytest.raises(DataError) as caught:
        prepare_dataset(cfg)
    assert "rows after each step" not in str(caught.value)


# --------------------------------------------------------------------------- 4. a split that is not what it says


def _indexed(times: np.ndarray, n_users: int = 50, per_user: int = 6):
    import polars as pl

    from recsys.data.schema import ITEM_IDX, TIME, USER_IDX, WEIGHT

    users = np.repeat(np.arange(n_users), per_user)
    items = (users * 7 + np.tile(np.arange(per_user), n_users)) % 40
    return pl.DataFrame({USER_IDX: users, ITEM_IDX: items, WEIGHT: np.ones(users.size, dtype=np.float32),
                         TIME: pl.Series(times, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))})  # fmt: skip


def test_leave_last_n_on_one_timestamp_warns_that_the_hash_not_recency_chose(recwarn):
    """Every row at one instant: leave_last_n held out a hash-chosen item per user, a random split
    that read as next-item results, without a word."""
    from recsys.config import SplitConfig
    from recsys.data.splits import make_split
    from recsys.errors import RecsysWarning

    frame = _indexed(np.full(300, T0 * 1_000_000))
    with pytest.warns(RecsysWarning, match=r"leave_last_n: for 50 of 50 held-out users .* the split is a random one"):
        make_split(frame, 50, 40, SplitConfig(protocol="leave_last_n"))
    distinct = _indexed(T0 * 1_000_000 + np.arange(300) * 60_000_000)
    recwarn.clear()
    make_split(distinct, 50, 40, SplitConfig(protocol="leave_last_n"))
    assert not [w for w in recwarn if issubclass(w.category, RecsysWarning)]


# --------------------------------------------------------------------------- 5. weights that say "nothing happened"


@pytest.mark.parametrize("value, warned", [(0, True), (1, False), (5, False)])
def test_a_weight_column_of_zeros_counted_as_interactions_warns(tmp_path, value, warned):
    """A `rating` (or clicked) column that is 0 in every row under default.toml's aggregate = count:
    every row became an interaction, silently (a varying column warns; a constant one did not)."""
    from recsys.config import DataConfig
    from recsys.data.ingest import ingest

    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp,rating\n" + "".join(
        f"u{k % 7},i{k % 5},{T0 + k},{value}\n" for k in range(35)))  # fmt: skip
    report = ingest(log, tmp_path / "out", DataConfig(aggregate="count"))
    zeros = [w for w in report.warnings if "is 0 in every row" in w]
    assert len(zeros) == warned, report.warnings
    if warned:
        assert "column 'rating'" in zeros[0] and "data.aggregate = sum" in zeros[0] and "\n" not in zeros[0]


def test_a_rolling_split_of_one_timestamp_names_the_random_protocol_not_the_window():
    """It said "nothing to train on ...; shorten split.window_days", which no window length fixes."""
    from recsys.config import SplitConfig
    from recsys.data.splits import make_split

    with pytest.raises(DataError, match=r"every interaction \(300\) has the same time .* split.protocol = \"random\"") as caught:
        make_split(_indexed(np.full(300, T0 * 1_000_000)), 50, 40, SplitConfig(protocol="rolling"))
    assert "window_days" not in str(caught.value)


# --------------------------------------------------------------------------- 6. settings larger than the catalogue


def size_lines(tmp_path: Path, *overrides: str) -> tuple[list[str], object]:
    """The run's warnings about settings too large for a 40-user x 25-item log, and its split."""
    cfg = config(tmp_path, write_log(tmp_path / "log.csv", pairs(40, 25, 400)), *EVERY_ROW, *overrides)
    inputs = prepare_run_inputs(cfg)
    return inputs.warnings, inputs


def test_cutoffs_no_smaller_than_what_a_user_can_be_ranked_warn_once_naming_each(tmp_path):
    """ks = [10, 20, 50, 100] on 25 items: recall@50 and recall@100 were 1 for every model, and only
    the promotion metric (recall@20) was ever looked at; nothing said so. One line names every such
    cutoff, says why the metric is trivially 1, and the ks that keep the metrics informative."""
    from pipelines.evaluate import evaluate_model
    from recsys.models.popularity import Popularity, PopularityConfig
    from recsys.sizes import rankable_items

    lines, inputs = size_lines(tmp_path, 'models=[{name="pop", kind="popularity"}]')
    most = rankable_items(inputs.split)[1]
    assert 20 < most < 50  # the log leaves the default ks on both sides of the bound
    [line] = [line for line in lines if "evaluation.ks" in line]
    assert line.startswith(f"evaluation.ks 50, 100 are at least the {most} items a test user can be ranked"), line
    assert "recall@50, recall@100 are trivially 1" in line and "recall@20" not in line, line
    assert "--set 'evaluation.ks=[10, 20]'" in line, line
    # what the line claims: at k = that bound every warm test user's recall is 1, whatever the ranking
    cfg = inputs.cfg.model_copy(deep=True)
    cfg.evaluation.ks, cfg.folding.enabled = [most], False
    model = Popularity(PopularityConfig(name="pop")).fit(inputs.split.train)
    recall = evaluate_model(model, inputs.split, cfg).result.per_user[f"recall@{most}"].to_numpy()
    assert recall.size > 0 and np.all(np.abs(recall - 1.0) < 1e-12)
    # and the ks it suggests draw no warning
    (tmp_path / "b").mkdir()
    assert size_lines(tmp_path / "b", 'models=[{name="pop", kind="popularity"}]', "evaluation.ks=[10, 20]")[0] == []


def test_a_promotion_metric_past_the_bound_is_named_as_choosing_nothing(tmp_path):
    lines, _ = size_lines(tmp_path, 'models=[{name="pop", kind="popularity"}]', "evaluation.ks=[10, 50]",
                          "promotion.metric=recall@50")  # fmt: skip
    [line] = lines
    assert "promotion.metric recall@50 cannot choose between models" in line and "and promotion.metric among them" in line


@pytest.mark.parametrize("models, named", [
    ('[{name="w", kind="wals", factors=64}, {name="t", kind="two_tower", dim=8}]', ["models.w.factors = 64"]),
    ('[{name="w", kind="wals", factors=8}, {name="t", kind="two_tower", dim=32}]', ["models.t.dim = 32"]),
    ('[{name="w", kind="wals", factors=25}, {name="p", kind="popularity"}]', []),  # at the bound: not over
])  # fmt: skip
def test_a_factor_count_above_the_users_or_items_names_the_setting(tmp_path, models, named):
    lines, _ = size_lines(tmp_path, f"models={models}", "evaluation.ks=[10, 20]")
    assert [line.split(" is more than")[0] for line in lines] == named, lines
    for line in lines:
        key = named[0].split(" = ")[0]
        assert "is more than the 25 items with training data (40 users x 25 items): over-parameterised" in line
        assert line.endswith(f"set {key} to 25 or fewer"), line


@pytest.mark.parametrize("command", [["run", "--no-prefect", "--no-tracking"], ["train", "--models", "m"]])
def test_recsys_run_and_train_print_the_size_warnings_once(tmp_path, command):
    log = write_log(tmp_path / "log.csv", pairs(40, 25, 400))
    args = [*command, "--config", str(DEFAULT)]
    if command[0] == "train":
        args[args.index("m")] = str(tmp_path / "m")
    for setting in [f"data.source={log}", f"data.processed_dir={tmp_path / 'p'}", *EVERY_ROW,
                    'models=[{name="pop", kind="popularity"}, {name="w", kind="wals", factors=64, iterations=2}]']:
        args += ["--set", setting]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "warning: " in line]
    assert [line.split("warning: ")[1][:18] for line in said] == ["evaluation.ks 50, ", "models.w.factors ="], said
