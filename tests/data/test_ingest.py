"""ingest(): implicit conversion, k-core, processed layout, fingerprint, append, atomicity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from recsys.config import DataConfig
from recsys.data import storage
from recsys.data.implicit import k_core
from recsys.data.ingest import ingest
from recsys.data.storage import load_processed
from recsys.errors import AlreadyIngested, DataError


def _csv(path: Path, rows: list[tuple], header: str = "user,item,rating,timestamp") -> Path:
    body = "\n".join(",".join("" if v is None else str(v) for v in row) for row in rows)
    path.write_text(f"{header}\n{body}\n")
    return path


def _weights(out: Path) -> dict[tuple[str, str], float]:
    """(user_id, item_id) -> weight from a processed directory, through its vocab."""
    data = load_processed(out)
    frame = data.interactions
    users = data.user_ids[frame["user_idx"].to_numpy()]
    items = data.item_ids[frame["item_idx"].to_numpy()]
    return dict(zip(zip(users.tolist(), items.tolist(), strict=True), frame["weight"].to_list(), strict=True))


# ----------------------------------------------------------------------------- implicit conversion

AGG_ROWS = [
    ("u", "i", 2, 10),
    ("u", "i", 5, 5),
    ("u", "i", 3, 20),
    ("u", "j", 1, None),
    ("v", "k", 4, None),
    ("v", "k", 6, None),  # null timestamps: the later row in the file is "last"
]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("count", {("u", "i"): 3.0, ("u", "j"): 1.0, ("v", "k"): 2.0}),
        ("sum", {("u", "i"): 10.0, ("u", "j"): 1.0, ("v", "k"): 10.0}),
        ("max", {("u", "i"): 5.0, ("u", "j"): 1.0, ("v", "k"): 6.0}),
        ("last", {("u", "i"): 3.0, ("u", "j"): 1.0, ("v", "k"): 6.0}),
    ],
)
def test_aggregation_modes(tmp_path: Path, how: str, expected: dict) -> None:
    out = tmp_path / "out"
    ingest(_csv(tmp_path / "agg.csv", AGG_ROWS), out, DataConfig(aggregate=how))
    assert _weights(out) == expected
    data = load_processed(out)
    ui = data.interactions.filter((pl.col("user_idx") == 0) & (pl.col("item_idx") == 0))
    assert ui["timestamp"].dt.epoch("s").item() == 20  # the latest timestamp is kept


def test_positive_rule_and_binarize(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = DataConfig(positive_min_weight=4, aggregate="sum", binarize=True)
    report = ingest(_csv(tmp_path / "agg.csv", AGG_ROWS), out, cfg)
    assert _weights(out) == {("u", "i"): 1.0, ("v", "k"): 1.0}  # only ratings >= 4 survive
    assert [s.rows for s in report.steps] == [6, 3, 2]
    assert report.steps[1].name.startswith("positive")


def test_positive_events(tmp_path: Path) -> None:
    rows = [("a", "x", "view"), ("a", "y", "buy"), ("b", "x", "buy"), ("b", "x", "buy")]
    src = _csv(tmp_path / "events.csv", rows, header="user_id,item_id,event")
    report = ingest(src, tmp_path / "out", DataConfig(positive_events=["buy"]))
    assert _weights(tmp_path / "out") == {("a", "y"): 1.0, ("b", "x"): 1.0}
    assert report.rows_quarantined == 1  # the exact repeat of (b, x, buy)
    with pytest.raises(DataError, match="no event column"):
        ingest(
            _csv(tmp_path / "plain.csv", [("a", "x", 1, 1)]),
            tmp_path / "o2",
            DataConfig(positive_events=["buy"]),
        )


# Retailrocket's events.csv shape: ms times, an event per row, transactionid only on purchases.
RETAIL_ROWS = [
    (1433221332117, "v1", "view", "i1", ""),
    (1433221332999, "v1", "view", "i1", ""),
    (1433221400000, "v1", "addtocart", "i1", ""),
    (1433221500000, "v1", "transaction", "i1", "4000"),
    (1433221600000, "v1", "view", "i2", ""),
    (1433221700000, "v2", "view", "i2", ""),
    (1433221800000, "v2", "addtocart", "i3", ""),
    (1433221900000, "v2", "wishlist", "i3", ""),
    (1433222000000, "v3", "wishlist", "i1", ""),
]


def _events(path: Path) -> Path:
    return _csv(path, RETAIL_ROWS, header="timestamp,visitorid,event,itemid,transactionid")


def test_event_weights_weigh_each_row_by_its_event_and_sum_the_pairs(tmp_path: Path) -> None:
    """An event log without ratings: each row weighs its event's weight, repeated pairs sum (auto),
    rows of events given no weight are dropped as a reported step and named in a warning."""
    out = tmp_path / "out"
    cfg = DataConfig(event_weights={"view": 1, "addtocart": 3, "transaction": 5})
    report = ingest(_events(tmp_path / "events.csv"), out, cfg)
    assert any("no weight to 'wishlist' (2 rows), so those rows are dropped" in w for w in report.warnings)
    # v1/i1: 2 views + a cart + a purchase = 1 + 1 + 3 + 5; v3 had only a wishlist row
    assert _weights(out) == {("v1", "i1"): 10.0, ("v1", "i2"): 1.0, ("v2", "i2"): 1.0, ("v2", "i3"): 3.0}
    assert [(s.rows, s.users) for s in report.steps] == [(9, 3), (7, 2), (4, 2)]
    assert "view=1, addtocart=3, transaction=5" in report.steps[1].name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"]["aggregate"] == "sum" and manifest["weights"]["kept"]
    assert manifest["weights"]["event_weights"] == {"view": 1.0, "addtocart": 3.0, "transaction": 5.0}
    assert any("'wishlist'" in w for w in manifest["warnings"])


def test_the_events_an_unmatched_rule_lists_tie_by_name_whatever_the_row_order(tmp_path: Path) -> None:
    """Events with as many rows each were listed in group_by's order, which changes between runs (a CI
    run listed 'wishlist' before 'addtocart'): ties are listed by name, so the line is the same."""
    events = ["zeta", "mu", "alpha", "kappa", "beta", "omega"]
    lines = ["visitorid,itemid,event"] + [f"v{i},i{i % 3},{event}" for i in range(60) for event in [events[i % 6]]]
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        ingest(tmp_path / "events.csv", tmp_path / "out", DataConfig(positive_events=["purchase"]))
    listed = ", ".join(f"{e!r} (10 rows)" for e in sorted(events))
    assert f"its events are {listed}:" in str(caught.value), str(caught.value)


def test_event_weights_flattened_by_count_are_flagged(tmp_path: Path) -> None:
    cfg = DataConfig(event_weights={"view": 1, "addtocart": 3, "transaction": 5, "wishlist": 2}, aggregate="count")
    report = ingest(_events(tmp_path / "events.csv"), tmp_path / "out", cfg)
    assert any(w.startswith("event weights discarded") and "data.aggregate = count" in w for w in report.warnings)
    assert _weights(tmp_path / "out")[("v1", "i1")] == 4.0  # four rows, as asked


@pytest.mark.parametrize(
    ("setting", "value"), [("positive_events", ["purchase"]), ("event_weights", {"purchase": 5.0})]
)
def test_an_event_rule_naming_no_event_of_the_log_lists_its_events(tmp_path: Path, setting: str, value) -> None:
    """Retailrocket says `transaction`, Taobao `buy`: a rule naming neither emptied the table and
    stopped with 'no interactions left after filtering; relax the data config'."""
    with pytest.raises(DataError) as caught:
        ingest(_events(tmp_path / "events.csv"), tmp_path / "out", DataConfig(**{setting: value}))
    message = str(caught.value)
    assert f"none of the events data.{setting} names ('purchase')" in message, message
    assert "'view' (4 rows), 'addtocart' (2 rows), 'wishlist' (2 rows), 'transaction' (1 row)" in message
    assert f"--set data.{setting}=" in message and not (tmp_path / "out").exists()
    if setting == "event_weights":  # every event at 1, the rarest (the purchases) too: the hint drops no row
        assert "--set data.event_weights='{view=1,addtocart=1,wishlist=1,transaction=1}'" in message, message


def test_an_event_rule_naming_some_absent_events_says_which(tmp_path: Path) -> None:
    cfg = DataConfig(positive_events=["transaction", "purchase"])
    report = ingest(_events(tmp_path / "events.csv"), tmp_path / "out", cfg)
    assert any("data.positive_events names 'purchase', which" in w and "never holds" in w for w in report.warnings)
    assert _weights(tmp_path / "out") == {("v1", "i1"): 1.0}


def test_a_k_core_that_keeps_most_pairs_but_few_users_says_so(tmp_path: Path) -> None:
    """A reviews log (Amazon's: most users review once or twice, a few review a lot) under
    movielens.toml's k-core (users >= 5): on the 200k-user replica it kept 37% of the pairs but 13%
    of the users, above the tenth of pairs that warned, so only the step table said so."""
    rows = [(f"A{u:04d}", f"B{(u * 7 + k) % 30}", 5, u * 10 + k) for u in range(80) for k in range(1 + u % 2)]
    rows += [(f"H{u}", f"B{k}", 5, 5000 + u * 100 + k) for u in range(12) for k in range(8)]  # 12 heavy reviewers
    cfg = DataConfig(min_user_interactions=5, min_item_interactions=1)
    report = ingest(_csv(tmp_path / "reviews.csv", rows), tmp_path / "out", cfg)
    assert (report.interactions, report.users) == (96, 12)
    [warning] = [w for w in report.warnings if w.startswith("k-core")]
    assert warning.startswith("k-core (users >= 5, items >= 1) kept 96 of 216 pairs (44%) but only 12 of 92 users (13%)"), warning
    assert "--min-user-interactions / data.min_user_interactions" in warning
    kept = ingest(_csv(tmp_path / "reviews.csv", rows), tmp_path / "out", cfg.model_copy(update={"min_user_interactions": 1}))
    assert kept.users == 92 and not [w for w in kept.warnings if w.startswith("k-core")]


def test_a_k_core_that_keeps_almost_nothing_says_so(tmp_path: Path) -> None:
    """Sessions as users: 60 two-item sessions and one long one. plays.toml's k-core (users >= 5)
    kept the long one alone, and the run reported recall on what was left without a word."""
    rows = [(f"s{n}", f"i{n % 9}", 1, n) for n in range(60)] + [(f"s{n}", f"i{(n + 1) % 9}", 1, n) for n in range(60)]
    rows += [("long", f"i{k}", 1, 100 + k) for k in range(9)]
    cfg = DataConfig(min_user_interactions=5, min_item_interactions=1)
    report = ingest(_csv(tmp_path / "sessions.csv", rows), tmp_path / "out", cfg)
    assert (report.interactions, report.users) == (9, 1)
    [warning] = [w for w in report.warnings if w.startswith("k-core")]
    assert warning.startswith("k-core (users >= 5, items >= 1) kept 9 of 129 pairs (7%) and 1 of 61 users"), warning
    assert "--min-user-interactions / data.min_user_interactions" in warning
    kept = ingest(_csv(tmp_path / "sessions.csv", rows), tmp_path / "out", cfg.model_copy(update={"min_user_interactions": 2}))
    assert kept.interactions == 129 and not [w for w in kept.warnings if w.startswith("k-core")]
    with pytest.raises(DataError, match=r"\(k-core \(users >= 10.*\); lower data.min_user_interactions / data.min_item"):
        ingest(_csv(tmp_path / "sessions.csv", rows), tmp_path / "o2", cfg.model_copy(update={"min_user_interactions": 10}))


def test_k_core_reaches_the_fixed_point_on_a_hand_built_graph() -> None:
    pairs = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u3", "u3", "u4"],
            "item_id": ["i1", "i2", "i1", "i2", "i1", "i3", "i4"],
        }
    )
    # Round 1 drops i3 (1 user), u4 and i4; that leaves u3 with one item, dropped in round 2.
    core, rounds = k_core(pairs, 2, 2)
    assert rounds == 2
    assert sorted(core.rows()) == [("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u2", "i2")]
    assert k_core(core, 2, 2) == (core, 0)  # a fixed point
    alone, _ = k_core(pairs, 3, 1)
    assert alone.height == 0  # no user has 3 items


def test_k_core_steps_are_reported(tmp_path: Path) -> None:
    rows = [
        ("u1", "i1", 1, 1),
        ("u1", "i2", 1, 1),
        ("u2", "i1", 1, 1),
        ("u2", "i2", 1, 1),
        ("u3", "i1", 1, 1),
        ("u3", "i3", 1, 1),
        ("u4", "i4", 1, 1),
    ]
    report = ingest(
        _csv(tmp_path / "g.csv", rows),
        tmp_path / "out",
        DataConfig(min_user_interactions=2, min_item_interactions=2),
    )
    last = report.steps[-1]
    assert last.name.startswith("k-core") and "2 rounds" in last.name
    assert (last.rows, last.users, last.items) == (4, 2, 2)
    assert (report.users, report.items, report.interactions) == (2, 2, 4)
    assert report.rows_accepted == 7  # k-core is filtering, not quarantine


# ----------------------------------------------------------------------------- storage and fingerprint

ROWS = [
    (f"u{u}", f"i{(u * 7 + k) % 11}", 1 + (u + k) % 5, 1_600_000_000 + 3600 * (u * 10 + k))
    for u in range(12)
    for k in range(4)
]


def test_processed_layout_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = ingest(_csv(tmp_path / "r.csv", ROWS), out, DataConfig())
    assert (out / "interactions" / "batch=000001" / "part-0.parquet").is_file()
    assert report.quarantine_path == out / "quarantine" / "batch=000001.parquet"
    assert pl.read_parquet(out / "users.parquet").columns == ["user_id", "user_idx"]
    manifest = json.loads((out / "manifest.json").read_text())
    for key in (
        "rows_in",
        "rows_accepted",
        "rows_quarantined",
        "interactions",
        "users",
        "items",
        "fingerprint",
    ):
        assert manifest[key] == report.to_json_dict()[key]
    assert manifest["rows_in"] == manifest["rows_accepted"] + manifest["rows_quarantined"] == len(ROWS)
    assert manifest["created_at"].endswith("+00:00") and manifest["has_timestamps"] is True
    assert manifest["batches"][0]["format"] == "csv"
    assert set(report.to_json_dict()) == {
        "rows_in",
        "rows_accepted",
        "rows_quarantined",
        "users",
        "items",
        "interactions",
        "fingerprint",
    }
    data = load_processed(out)
    assert (
        data.fingerprint == report.fingerprint
        and data.n_users == 12
        and data.interactions.height == len(ROWS)
    )
    assert data.interactions.schema["user_idx"] == pl.Int32


def test_fingerprint_ignores_row_order_but_sees_content(tmp_path: Path) -> None:
    a = ingest(_csv(tmp_path / "a.csv", ROWS), tmp_path / "a", DataConfig())
    b = ingest(_csv(tmp_path / "b.csv", ROWS[::-1]), tmp_path / "b", DataConfig())
    assert a.fingerprint == b.fingerprint
    assert (
        load_processed(tmp_path / "a").user_ids.tolist() != load_processed(tmp_path / "b").user_ids.tolist()
    )
    changed = [*ROWS[:-1], (ROWS[-1][0], ROWS[-1][1], ROWS[-1][2] + 1, ROWS[-1][3])]
    c = ingest(_csv(tmp_path / "c.csv", changed), tmp_path / "c", DataConfig(aggregate="sum"))
    d = ingest(_csv(tmp_path / "d.csv", ROWS), tmp_path / "d", DataConfig(aggregate="sum"))
    assert c.fingerprint != d.fingerprint


def test_fingerprint_is_stable_across_processes(tmp_path: Path) -> None:
    report = ingest(_csv(tmp_path / "a.csv", ROWS), tmp_path / "a", DataConfig())
    code = (
        "import polars as pl, sys; from recsys.data.storage import fingerprint, load_processed; "
        "d = load_processed(sys.argv[1]); "
        "print(fingerprint(d.interactions, d.user_ids, d.item_ids))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "a")], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == report.fingerprint


def test_missing_time_column_gives_null_timestamps(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ingest(_csv(tmp_path / "p.csv", [("a", "x"), ("b", "y")], header="user_id,item_id"), out, DataConfig())
    data = load_processed(out)
    assert data.interactions["timestamp"].null_count() == 2
    assert data.manifest["has_timestamps"] is False


# ----------------------------------------------------------------------------- append and labels


def test_append_keeps_vocab_and_aggregates_across_batches(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = [("u1", "i1", 1, 100), ("u2", "i2", 1, 200)]
    second = [("u3", "i1", 1, 300), ("u1", "i1", 1, 400), ("u0", "i9", 1, 500)]
    ingest(_csv(tmp_path / "day1.csv", first), out, DataConfig())
    before = load_processed(out)
    report = ingest(_csv(tmp_path / "day2.csv", second), out, DataConfig(), append=True)
    after = load_processed(out)

    assert report.batch == 2 and report.rows_in == 3
    assert after.user_ids[: before.n_users].tolist() == before.user_ids.tolist()
    assert after.item_ids[: before.n_items].tolist() == before.item_ids.tolist()
    assert after.user_ids.tolist() == ["u1", "u2", "u3", "u0"]  # new ids in order of first appearance
    assert _weights(out)[("u1", "i1")] == 2.0  # one pair, counted in both batches
    assert sorted(p.name for p in (out / "interactions").iterdir()) == ["batch=000001", "batch=000002"]
    manifest = after.manifest
    assert manifest["rows_in"] == 5 and len(manifest["batches"]) == 2 and manifest["interactions"] == 4

    again = ingest(tmp_path / "day2.csv", out, DataConfig(), append=True, same_content=True)  # past the digest check
    assert (again.rows_accepted, again.rows_quarantined) == (0, 3)
    assert again.reasons == {"duplicate": 3}
    assert again.fingerprint == report.fingerprint


def test_an_appended_batch_that_lost_its_weight_column_is_flagged(tmp_path: Path) -> None:
    """Day two's export lost its rating column: its rows weigh 1 beside ratings of 5, which ingest
    says (and the batch after it, which has its column again, says the reverse is now old news)."""
    out = tmp_path / "out"
    assert ingest(_csv(tmp_path / "d1.csv", [("u1", "i1", 5, 1_700_000_100)]), out, DataConfig()).warnings == []
    day2 = _csv(tmp_path / "d2.csv", [("u2", "i2", 1_700_000_200)], header="user,item,timestamp")
    (warning,) = ingest(day2, out, DataConfig(), append=True).warnings
    assert warning.startswith("this batch has no weight column, unlike the earlier ones ('rating')")
    assert ingest(_csv(tmp_path / "d3.csv", [("u3", "i3", 4, 1_700_000_300)]), out, DataConfig(), append=True).warnings == []


def test_a_gained_weight_column_is_not_flagged_under_the_count_its_warning_suggests(tmp_path: Path) -> None:
    """The reverse drift (day two gained a rating column) suggests data.aggregate = count, under
    which every row weighs 1 whatever the column: the warning then came back all the same."""
    day1 = _csv(tmp_path / "d1.csv", [("u1", "i1", 1_700_000_100)], header="user,item,timestamp")
    day2 = _csv(tmp_path / "d2.csv", [("u2", "i2", 5, 1_700_000_200)])
    for out in (tmp_path / "summed", tmp_path / "counted"):
        ingest(day1, out, DataConfig())
    (warning,) = ingest(day2, tmp_path / "summed", DataConfig(), append=True).warnings
    assert warning.startswith("this batch has a weight column ('rating'), unlike the earlier ones")
    assert ingest(day2, tmp_path / "counted", DataConfig(aggregate="count"), append=True).warnings == []


def test_cross_batch_duplicates_compare_the_event_too(tmp_path: Path) -> None:
    """A batch without an event column holds null events: an earlier `click` with the same user,
    item, time and weight is not repeated by a `buy`, nor by a row stored without its event."""
    out, header = tmp_path / "out", "user,item,rating,timestamp,event"
    ingest(_csv(tmp_path / "d1.csv", [("u1", "i1", 1, 100, "click")], header=header), out, DataConfig())
    ingest(_csv(tmp_path / "d2.csv", [("u2", "i2", 1, 200)]), out, DataConfig(), append=True)
    day3 = [("u1", "i1", 1, 100, "buy"), ("u1", "i1", 1, 100, "click"), ("u2", "i2", 1, 200, "click")]
    report = ingest(_csv(tmp_path / "d3.csv", day3, header=header), out, DataConfig(), append=True)
    assert report.reasons == {"duplicate": 1}
    stored = pl.read_parquet(report.quarantine_path)
    assert stored.select("source_row", "event", "reason").rows() == [(2, "click", "duplicate")]


# A click log without times: three clicks of (a, x), one of (a, y), two of (b, x).
CLICKS = [("a", "x"), ("a", "x"), ("a", "y"), ("b", "x"), ("a", "x"), ("b", "x")]


@pytest.mark.parametrize(
    ("setting", "expected", "quarantined"),
    [
        ("quarantine", {("a", "x"): 1.0, ("a", "y"): 1.0, ("b", "x"): 1.0}, {"duplicate": 3}),
        ("keep", {("a", "x"): 3.0, ("a", "y"): 1.0, ("b", "x"): 2.0}, {}),
    ],
)
def test_exact_duplicates_keep_counts_repeated_events(tmp_path: Path, setting: str, expected: dict, quarantined: dict) -> None:
    """A row equal to an earlier one in every column read: quarantined by default (a copied row),
    counted as a repeated event under data.exact_duplicates = keep."""
    out = tmp_path / "out"
    cfg = DataConfig(aggregate="count", exact_duplicates=setting)
    report = ingest(_csv(tmp_path / "clicks.csv", CLICKS, header="user,item"), out, cfg)
    assert _weights(out) == expected
    assert report.reasons == quarantined and report.rows_accepted == 6 - sum(quarantined.values())


def test_exact_duplicates_keep_sums_repeated_weights_of_a_dated_log(tmp_path: Path) -> None:
    """Dates only (Diginetica's eventdate): two equal rows of quantity 2 are two events; sum adds
    both under keep (2 + 2 + 3), the first only by default (2 + 3)."""
    rows = [("a", "x", 2, "2016-05-09"), ("a", "x", 2, "2016-05-09"), ("a", "x", 3, "2016-05-10")]
    src = _csv(tmp_path / "views.csv", rows, header="user,item,qty,date")
    cfg = DataConfig(aggregate="sum", columns={"weight": "qty", "time": "date"})
    ingest(src, tmp_path / "default", cfg)
    ingest(src, tmp_path / "kept", cfg.model_copy(update={"exact_duplicates": "keep"}))
    assert _weights(tmp_path / "default") == {("a", "x"): 5.0}
    assert _weights(tmp_path / "kept") == {("a", "x"): 7.0}


@pytest.mark.parametrize("setting", ["quarantine", "keep"])
def test_exact_duplicates_across_appended_batches_count_as_in_one_ingest(tmp_path: Path, setting: str) -> None:
    """A repeat split across two --append batches (the cross-batch duplicate check) ends where it
    would in one ingest of both files: counted under keep, quarantined otherwise."""
    cfg = DataConfig(aggregate="count", exact_duplicates=setting)
    day1 = _csv(tmp_path / "day1.csv", CLICKS[:3], header="user,item")
    day2 = _csv(tmp_path / "day2.csv", CLICKS[3:], header="user,item")
    both = _csv(tmp_path / "both.csv", CLICKS, header="user,item")
    ingest(both, tmp_path / "once", cfg)
    ingest(day1, tmp_path / "appended", cfg)
    report = ingest(day2, tmp_path / "appended", cfg, append=True)
    assert _weights(tmp_path / "appended") == _weights(tmp_path / "once")
    assert report.fingerprint == storage.read_manifest(tmp_path / "once")["fingerprint"]
    if setting == "quarantine":  # one repeat within day 2, one of day 1's row
        [warning] = report.warnings
        assert warning.startswith("duplicates quarantined: 2 rows") and "--exact-duplicates keep" in warning
    else:
        assert report.warnings == []  # day 2 holds new rows too: no re-run suspected
        assert _weights(tmp_path / "once")[("a", "x")] == 3.0
        with pytest.raises(AlreadyIngested, match=r"day2\.csv: the same content as batch 2"):
            ingest(day2, tmp_path / "appended", cfg, append=True)  # the same file again: nothing added
        assert _weights(tmp_path / "appended")[("b", "x")] == 2.0
        rerun = ingest(day2, tmp_path / "appended", cfg, append=True, same_content=True)  # asked for: counted again
        assert _weights(tmp_path / "appended")[("b", "x")] == 4.0
        assert any("equals a row of an earlier batch" in w for w in rerun.warnings), rerun.warnings


def test_an_append_of_a_file_already_ingested_says_it_adds_nothing(tmp_path: Path) -> None:
    """Day two exported again with its rows in another order (so not the same bytes, which the
    digest check refuses before reading): its every row is a duplicate, and the summary's counts
    were the only sign; a warning says so."""
    rows = [("a", "x", 4, 1_600_000_000), ("b", "y", 5, 1_600_000_060)]
    day1 = _csv(tmp_path / "day1.csv", [("a", "z", 3, 1_599_000_000)], header="user,item,rating,timestamp")
    day2 = _csv(tmp_path / "day2.csv", rows, header="user,item,rating,timestamp")
    ingest(day1, tmp_path / "out", DataConfig())
    assert ingest(day2, tmp_path / "out", DataConfig(), append=True).warnings == []
    again = _csv(tmp_path / "day2-again.csv", rows[::-1], header="user,item,rating,timestamp")
    rerun = ingest(again, tmp_path / "out", DataConfig(), append=True)
    assert rerun.rows_accepted == 0 and rerun.reasons == {"duplicate": 2}
    assert [w for w in rerun.warnings if "adds nothing" in w] == [
        "every accepted row of this batch (2 rows) equals a row of an earlier batch, so it adds nothing (those "
        "rows are quarantined as duplicate): this file was most likely ingested before"
    ]


def test_an_append_under_another_duplicates_rule_is_named(tmp_path: Path) -> None:
    """The rule is applied as a batch is validated: an --append with --exact-duplicates keep onto
    batches that quarantined their repeats (or the reverse) would count repeats in some batches
    only, without a word; the warning names the rule the earlier batches followed."""
    day1 = _csv(tmp_path / "day1.csv", CLICKS[:3], header="user,item")
    day2 = _csv(tmp_path / "day2.csv", CLICKS[3:], header="user,item")
    keep, quarantine = DataConfig(aggregate="count", exact_duplicates="keep"), DataConfig(aggregate="count")
    ingest(day1, tmp_path / "q", quarantine)
    report = ingest(day2, tmp_path / "q", keep, append=True)
    [drift] = [w for w in report.warnings if "earlier batches'" in w]
    assert "exact_duplicates = keep, the earlier batches' quarantine" in drift and "--exact-duplicates quarantine" in drift
    ingest(day1, tmp_path / "k", keep)
    report = ingest(day2, tmp_path / "k", quarantine, append=True)
    assert any("the earlier batches' keep" in w and "--exact-duplicates keep" in w for w in report.warnings)
    same = ingest(day2, tmp_path / "q2", quarantine), ingest(day2, tmp_path / "q2", quarantine, append=True)
    assert not any("earlier batches'" in w for r in same for w in r.warnings)  # the same rule: no word


def test_append_preserves_files_it_does_not_own(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ingest(_csv(tmp_path / "a.csv", ROWS[:10]), out, DataConfig())
    (out / "sources.json").write_text("{}")
    ingest(_csv(tmp_path / "b.csv", ROWS[10:]), out, DataConfig(), append=True)
    assert (out / "sources.json").read_text() == "{}"


def test_labels_become_blocks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    users = pl.DataFrame({"user_id": ["u1", "u2"], "block": [0, 1]})
    items = pl.DataFrame({"item_id": ["i1", "i2", "i3"], "block": [1, 0, 1]})
    ingest(
        _csv(tmp_path / "a.csv", [("u1", "i1", 1, 1), ("u2", "i2", 1, 1), ("u3", "i3", 1, 1)]),
        out,
        DataConfig(),
        user_labels=users,
        item_labels=items,
    )
    data = load_processed(out)
    assert dict(zip(data.user_ids.tolist(), data.user_blocks.tolist(), strict=True)) == {
        "u1": 0,
        "u2": 1,
        "u3": -1,
    }
    assert dict(zip(data.item_ids.tolist(), data.item_blocks.tolist(), strict=True)) == {
        "i1": 1,
        "i2": 0,
        "i3": 1,
    }
    assert pl.read_parquet(out / "items.parquet").columns == ["item_id", "item_idx", "block"]
    plain = tmp_path / "plain"
    ingest(tmp_path / "a.csv", plain, DataConfig())
    assert load_processed(plain).user_blocks is None


# ----------------------------------------------------------------------------- atomicity


def test_unreadable_source_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01\x02garbage")
    out = tmp_path / "proc" / "out"
    with pytest.raises(DataError, match="binary"):
        ingest(bad, out, DataConfig())
    # Nothing at all: no staging, and neither the writer lock's file (`.out.lock`) nor the folder
    # made for it, which a refusal of the input (found under the lock) left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_failed_reingest_keeps_the_previous_state(tmp_path: Path) -> None:
    out = tmp_path / "out"
    good = ingest(_csv(tmp_path / "a.csv", ROWS), out, DataConfig())
    with pytest.raises(DataError, match="no interactions left"):
        ingest(tmp_path / "a.csv", out, DataConfig(min_user_interactions=100))
    assert load_processed(out).fingerprint == good.fingerprint
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".out.lock"]  # no staging


def test_a_failed_background_write_fails_the_ingest_and_keeps_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch and derived files are written on a background thread: a write that fails there
    (a full disk, say) must still surface as the ingest's error, with nothing half-written."""
    out = tmp_path / "out"
    good = ingest(_csv(tmp_path / "a.csv", ROWS), out, DataConfig())
    write_table = storage.write_table

    def full_disk(frame: pl.DataFrame, path: Path) -> None:
        if path.name == storage.IMPLICIT_FILE:
            raise OSError(28, "No space left on device")
        write_table(frame, path)

    monkeypatch.setattr(storage, "write_table", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ingest(_csv(tmp_path / "b.csv", [("z", "q", 5, 100)]), out, DataConfig(), append=True)
    assert load_processed(out).fingerprint == good.fingerprint
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".out.lock"]  # no staging


def test_refuses_to_overwrite_a_foreign_directory(tmp_path: Path) -> None:
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a processed data directory"):
        ingest(_csv(tmp_path / "a.csv", ROWS), foreign, DataConfig())
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_ml100k_counts(ml100k_dir: Path, tmp_path: Path) -> None:
    report = ingest(ml100k_dir / "ml-100k.inter", tmp_path / "ml", DataConfig())
    assert (report.rows_in, report.rows_accepted, report.rows_quarantined) == (100_000, 100_000, 0)
    assert (report.users, report.items, report.interactions) == (943, 1682, 100_000)
    positives = ingest(ml100k_dir / "ml-100k.inter", tmp_path / "ml4", DataConfig(positive_min_weight=4))
    assert positives.interactions == 55_375  # ratings >= 4 in ML-100K
    assert storage.list_batches(tmp_path / "ml4") == [1]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_processed_directory_follows_the_umask(tmp_path: Path, umask: int) -> None:
    """The processed directory is built in a mkdtemp folder (0700) and renamed into place: it gets
    the mode a plain mkdir gives (`files.publishable_dir`), also when a second ingest replaces it."""
    import os

    source = tmp_path / "log.csv"
    source.write_text("user_id,item_id,rating\n" + "".join(f"u{u},i{i},4\n" for u in range(4) for i in range(3)))
    before = os.umask(umask)
    try:
        ingest(source, tmp_path / "processed", DataConfig())
        ingest(source, tmp_path / "processed", DataConfig())
    finally:
        os.umask(before)
    assert (tmp_path / "processed").stat().st_mode & 0o777 == 0o777 & ~umask
