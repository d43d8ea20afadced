"""`recsys ingest`: summary output, --json contents, one-line errors with exit code 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app

runner = CliRunner()


def test_ml100k_via_cli(ml100k_dir: Path, tmp_path: Path) -> None:
    out, summary = tmp_path / "ml", tmp_path / "summary.json"
    result = runner.invoke(
        app, ["ingest", str(ml100k_dir / "ml-100k.inter"), "--out", str(out), "--json", str(summary)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(summary.read_text())
    assert set(data) == {
        "rows_in",
        "rows_accepted",
        "rows_quarantined",
        "users",
        "items",
        "interactions",
        "fingerprint",
    }
    assert (data["rows_in"], data["rows_accepted"], data["rows_quarantined"]) == (100_000, 100_000, 0)
    assert (data["users"], data["items"]) == (943, 1682)
    assert data["fingerprint"] in result.output and "943" in result.output
    assert (out / "manifest.json").is_file()


def test_flags_reach_the_config(tmp_path: Path) -> None:
    src = tmp_path / "log.csv"
    src.write_text("who,what,stars,when\na,x,5,1\na,y,2,2\nb,x,4,3\nb,x,4,3\nc,z,5,4\n")
    summary = tmp_path / "s.json"
    args = [
        "ingest",
        str(src),
        "--out",
        str(tmp_path / "out"),
        "--user-col",
        "who",
        "--item-col",
        "what",
        "--weight-col",
        "stars",
        "--time-col",
        "when",
        "--min-rating",
        "4",
        "--min-item-interactions",
        "2",
        "--json",
        str(summary),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(summary.read_text())
    # (b, x) repeated exactly -> quarantined; rating >= 4 keeps a-x, b-x, c-z; items with 2 users: x only.
    assert (data["rows_in"], data["rows_accepted"], data["rows_quarantined"]) == (5, 4, 1)
    assert (data["users"], data["items"], data["interactions"]) == (2, 1, 2)
    assert "duplicate" in result.output


def test_unreadable_file_is_one_line_exit_2_and_nothing_written(tmp_path: Path) -> None:
    src = tmp_path / "tabs.tsv"
    src.write_text("user\titem\n1\t2\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["ingest", str(src), "--out", str(out), "--format", "csv"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("error:") and "wrong delimiter" in result.output
    assert not out.exists()
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope.csv"), "--out", str(out)])
    assert missing.exit_code == 2 and "no such file" in missing.output
    # A missing source leaves nothing behind: it created --out's parent folders and a lock file there.
    fresh = tmp_path / "fresh" / "out"
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope.csv"), "--out", str(fresh)])
    assert missing.exit_code == 2 and "no such file" in missing.output
    assert not fresh.parent.exists()


def test_refused_output_directory_leaves_no_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused --out left the writer lock's file behind: `--out .` (or `--out ""`) in a folder
    put `..lock` into it (and in an empty folder that lock made it "not empty"); a foreign non-empty
    folder or a file as --out left `.NAME.lock` beside it. Every refusal comes before the lock."""
    src = tmp_path / "log.csv"
    src.write_text("user_id,item_id\n1,2\n3,4\n")
    for folder, contents in (("full", {"notes.txt": "mine\n"}), ("empty", {})):
        here = tmp_path / folder
        here.mkdir()
        for name, text in contents.items():
            (here / name).write_text(text)
        monkeypatch.chdir(here)
        for out in (".", "", ".."):
            result = runner.invoke(app, ["ingest", str(src), "--out", out])
            assert result.exit_code == 2, (folder, out, result.output)
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error:") and "working directory" in lines[0], lines
            assert sorted(p.name for p in here.iterdir()) == sorted(contents), (folder, out)
            assert not list(tmp_path.glob(".*")), (folder, out)  # nor a `.full.lock` above it
    monkeypatch.chdir(tmp_path)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("x\n")
    (tmp_path / "afile").write_text("x\n")
    for out, why in (("foreign", "not empty"), ("afile", "not a directory")):
        for extra in ([], ["--append"]):
            result = runner.invoke(app, ["ingest", str(src), "--out", out, *extra])
            assert result.exit_code == 2 and why in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "empty", "foreign", "full", "log.csv"]
    assert [p.name for p in (tmp_path / "foreign").iterdir()] == ["keep.txt"]
    (tmp_path / "gone").mkdir()
    monkeypatch.chdir(tmp_path / "gone")
    (tmp_path / "gone").rmdir()  # a working directory removed under the shell: the check must not trip on it
    result = runner.invoke(app, ["ingest", str(src), "--out", str(tmp_path / "fine")])
    assert result.exit_code == 0 and (tmp_path / "fine" / "manifest.json").is_file(), result.output


def test_help_keeps_bracketed_text_and_reflows_paragraphs_to_the_terminal() -> None:
    """Rich markup read '[data]' and '[low, high]' as style tags and dropped them, and the
    docstrings' own line breaks left an 80-column help ragged (a full line, then a word or two)."""
    run = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "80"}).output
    assert "[low, high]" in " ".join(run.split())
    ingest = runner.invoke(app, ["ingest", "--help"], env={"COLUMNS": "80"}).output
    assert "[data]" in " ".join(ingest.split())
    text = "\n".join(line.strip() for line in run.split("╭")[0].splitlines())  # above the options box
    prose = [p for p in text.split("\n\n") if p.strip() and not p.strip().startswith("Usage")]
    lines = [p.strip().splitlines() for p in prose]
    assert len(lines) >= 2 and all(len(line) > 40 for p in lines for line in p[:-1]), lines  # filled, not ragged


def test_every_options_help_is_shown_whole() -> None:
    """Help is rendered as Markdown, which drops `<word>` as an HTML tag: `recsys tune --help` said
    the default --out was `tuned--.toml`. Every option's help of every command must come out whole
    (code spans lose only their backticks)."""
    import typer

    def squeeze(text: str) -> str:
        return re.sub(r"[\s│`]+", "", text)

    def walk(command, path: list[str]) -> None:
        shown = squeeze(runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output)
        for param in command.params:
            if getattr(param, "help", None):
                assert squeeze(param.help) in shown, (path, param.name, param.help)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    tune = " ".join(runner.invoke(app, ["tune", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "tuned-CONFIG-MODEL.toml" in tune


@pytest.mark.parametrize(("command", "options"), [
    (["ingest"], ["--time-col", "--weight-col", "--min-rating", "--aggregate", "--min-user-interactions",
                  "--min-item-interactions"]),
    (["train"], ["--model"]),
    (["evaluate"], ["--model"]),
    (["data", "fetch"], ["--base-url"]),
])  # fmt: skip
def test_options_that_change_what_happens_name_their_default(command: list[str], options: list[str]) -> None:
    """`--weight-col` read "(optional; missing = 1.0)" though a `rating` column is found by itself, and
    the k-core and positive-rule options said nothing of the value used without them."""
    import typer

    group = typer.main.get_command(app)
    for name in command:
        group = group.commands[name]
    helps = {opt: param.help for param in group.params for opt in param.opts}
    for option in options:
        assert "default" in helps[option].lower(), (command, option, helps[option])


def test_help_lists_the_options() -> None:
    result = runner.invoke(app, ["ingest", "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    for flag in ("--out", "--format", "--user-col", "--min-rating", "--aggregate", "--append", "--json"):
        assert flag in result.output
    # A flag takes no value: typer 0.29 showed `--append <bool>`, read as `--append true` (refused).
    rows = {m[1]: m[0] for m in re.finditer(r"^│[ *]+--([a-z-]+)\b.*$", result.output, re.MULTILINE)}
    assert "<bool>" not in result.output and "<path>" in rows["json"] and "<path>" in rows["out"], rows


def test_replacing_earlier_batches_without_append_says_so(tmp_path: Path) -> None:
    """Day two: `recsys ingest today.tsv --out DIR` without --append replaced every earlier batch
    without a word. It still replaces (the help says so), and now names what it replaced; running
    the same ingest again replaces silently, as asked."""
    header = "userID\tartistID\tweight\n"
    first, second = tmp_path / "day1.tsv", tmp_path / "day2.tsv"
    first.write_text(header + "".join(f"{u}\t{a}\t{u * 10 + a}\n" for u in range(1, 5) for a in range(50, 54)))
    second.write_text(header + "".join(f"{u}\t{a}\t7\n" for u in range(5, 8) for a in range(50, 53)))
    out = str(tmp_path / "proc")
    for args in ([str(first)], [str(first)], [str(second), "--append"]):
        result = runner.invoke(app, ["ingest", *args, "--out", out])
        assert result.exit_code == 0 and "warning:" not in result.output, result.output
    result = runner.invoke(app, ["ingest", str(second), "--out", out])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "held 2 batch(es) (25 rows in: day1.tsv, day2.tsv)" in said and "add --append" in said


def test_event_weight_flags_weigh_the_events_of_a_headerless_looking_event_log(tmp_path: Path) -> None:
    """Taobao UserBehavior (user, item, category, behavior, seconds) with the header its users add:
    `behavior_type` is read as the event and --event-weight gives each behavior its weight."""
    src = tmp_path / "UserBehavior.csv"
    src.write_text(
        "user_id,item_id,category_id,behavior_type,timestamp\n"
        "1,2268318,2520377,pv,1511544070\n1,2268318,2520377,cart,1511544080\n1,2268318,2520377,buy,1511544090\n"
        "1,2333346,2520771,pv,1511561733\n100,2333346,2520771,fav,1511550516\n"
    )
    out, summary = tmp_path / "out", tmp_path / "s.json"
    weights = ["--event-weight", "pv=1", "--event-weight", "cart=3", "--event-weight", "buy=5"]
    result = runner.invoke(app, ["ingest", str(src), "--out", str(out), *weights, "--json", str(summary)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "event=behavior_type" in said and "aggregate (sum)" in said
    assert "warning: data.event_weights gives no weight to 'fav' (1 row), so those rows are dropped" in said
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"]["event_weights"] == {"pv": 1.0, "cart": 3.0, "buy": 5.0}
    assert json.loads(summary.read_text())["interactions"] == 2
    assert sorted(pl.read_parquet(out / "implicit.parquet")["weight"].to_list()) == [1.0, 9.0]


def test_a_misspelt_event_weight_is_one_line_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text("timestamp,visitorid,event,itemid,transactionid\n1433221332117,257597,view,355908,\n")
    for bad in ("view", "view=none", "view=0", "=3"):
        result = runner.invoke(app, ["ingest", str(src), "--out", str(tmp_path / "out"), "--event-weight", bad])
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith(f"error: --event-weight {bad!r}: expected EVENT=WEIGHT"), line
    assert not (tmp_path / "out").exists()


def test_anonymous_sessions_name_the_session_column(tmp_path: Path) -> None:
    """Diginetica's train-item-views: `;`, an empty userId on most rows. They were quarantined as
    missing_user with a count in the summary and nothing saying that sessions can be the users."""
    src = tmp_path / "train-item-views.csv"
    src.write_text(
        "sessionId;userId;itemId;timeframe;eventdate\n"
        "1;;81766;526309;2016-05-09\n1;;31331;1031018;2016-05-09\n2;;32118;243569;2016-05-09\n"
        "3;5;9654;0;2016-05-10\n3;5;33043;103001;2016-05-10\n"
    )
    result = runner.invoke(app, ["ingest", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "time=eventdate" in said
    assert (
        "warning: 3 of 5 rows (60%) have no user id in column 'userId' and were quarantined (missing_user): "
        "if it is a session log, read each session as a user with --user-col sessionId"
    ) in said
    result = runner.invoke(app, ["ingest", str(src), "--out", str(tmp_path / "out"), "--user-col", "sessionId"])
    assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_repeats_that_no_time_tells_apart_are_named_as_such(tmp_path: Path) -> None:
    """A second view of an item the same day (Diginetica's `eventdate`) or a click log without
    times equals an earlier row in every column read: quarantined as a duplicate, not counted,
    which the summary's 'duplicate' count alone did not say. The warning names
    --exact-duplicates keep, under which such rows are accepted and counted."""
    dated = tmp_path / "views.csv"
    dated.write_text("sessionId;itemId;eventdate\n1;10;2016-05-09\n1;10;2016-05-09\n1;11;2016-05-09\n")
    bare = tmp_path / "clicks.csv"
    bare.write_text("user_id,item_id\na,x\na,x\na,y\n")
    hourly = tmp_path / "tianchi.csv"  # Tianchi's mobile log: a date and an hour
    hourly.write_text("user_id,item_id,behavior_type,time\n1,2,1,2014-12-06 02\n1,2,1,2014-12-06 02\n1,3,1,2014-12-06 02\n")
    timed = tmp_path / "events.csv"
    timed.write_text("user_id,item_id,timestamp\na,x,1433221332117\na,x,1433221332117\na,y,1433221332118\n")
    tafeng = tmp_path / "ta_feng_all_months_merged.csv"  # a time column no automatic pick reads: named
    tafeng.write_text(
        "TRANSACTION_DT,CUSTOMER_ID,AGE_GROUP,PIN_CODE,PRODUCT_SUBCLASS,PRODUCT_ID,AMOUNT,ASSET,SALES_PRICE\n"
        "11/1/2000,1104905,45-49,115,110411,4710199010372,2,24,30\n"
        "11/8/2000,1104905,45-49,115,110411,4710199010372,2,24,30\n"
        "11/8/2000,1104905,45-49,115,110411,4710199010373,1,24,30\n"
    )
    cases = ((dated, "column 'eventdate' holds dates only"), (bare, "the log has no time column"),
             (hourly, "column 'time' holds whole hours only"), (timed, None),
             (tafeng, "no time column is read ('TRANSACTION_DT' is named like one but not read)"))  # fmt: skip
    for src, why in cases:
        result = runner.invoke(app, ["ingest", str(src), "--out", str(tmp_path / src.stem)])
        assert result.exit_code == 0, result.output
        said = " ".join(result.output.split())
        assert "duplicate" in said
        if why is None:  # to the millisecond: a copied row
            assert "warning" not in said, said
        else:
            assert f"warning: duplicates quarantined: 1 row equal to an earlier row in every column read; {why}" in said
            assert "count each such row as a repeated event with --exact-duplicates keep (data.exact_duplicates)" in said
    kept = runner.invoke(app, ["ingest", str(bare), "--out", str(tmp_path / "kept"), "--exact-duplicates", "keep",
                               "--aggregate", "count", "--json", str(tmp_path / "kept.json")])  # fmt: skip
    assert kept.exit_code == 0, kept.output
    summary_lines = "\n".join(x for x in kept.output.splitlines() if not x.startswith("next: "))
    assert "warning" not in summary_lines and "duplicate" not in summary_lines
    # For the run on it: the default config `recsys run` loads counts already (aggregate = "count").
    [next_line] = [x for x in kept.output.splitlines() if x.startswith("next: recsys run ")]
    assert "--set data.exact_duplicates=keep" in next_line and "data.aggregate" not in next_line, next_line
    summary = json.loads((tmp_path / "kept.json").read_text())
    assert (summary["rows_accepted"], summary["rows_quarantined"], summary["interactions"]) == (3, 0, 2)
    config = json.loads((tmp_path / "kept" / "manifest.json").read_text())["config"]
    assert config["exact_duplicates"] == "keep"


def test_the_suggested_run_carries_the_data_settings_the_flags_changed(tmp_path: Path) -> None:
    """An Amazon-reviews-shaped log (2023 columns, string ids, ms timestamps, most users with one
    review) ingested with movielens.toml and `--min-user-interactions 1` to keep those users: the
    `next:` line said `recsys run --config movielens.toml --set data.source=DIR`, whose run warned
    that DIR was ingested with min_user_interactions 1 (config: 5) and said to re-ingest it.
    The suggested command, as printed, now agrees with how the directory was made."""
    import shlex

    from pipelines.data import processed_as
    from recsys.config import load_config

    src, out = tmp_path / "Reviews.csv", tmp_path / "amz"
    rows = ["user_id,parent_asin,rating,timestamp"]
    rows += [f"AE{u:04d}QX,B0{u % 7:08d},5.0,{1588615855070 + u}" for u in range(40)]  # one review each
    rows += [f"AHEAVY{u}QX,B0{i:08d},{4.0 + (i % 2)},{1600000000000 + 10 * i + u}" for u in range(3) for i in range(7)]
    src.write_text("\n".join(rows) + "\n")
    config = "pipelines/configs/movielens.toml"
    result = runner.invoke(app, ["ingest", str(src), "--out", str(out), "--config", config,
                                 "--min-user-interactions", "1", "--aggregate", "last"])  # fmt: skip
    assert result.exit_code == 0, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("next: ")]
    command = shlex.split(line.removeprefix("next: "))
    assert command[:4] == ["recsys", "run", "--config", config]
    sets = [command[i + 1] for i, arg in enumerate(command) if arg == "--set"]
    assert "data.min_user_interactions=1" in sets and "data.aggregate=last" in sets
    cfg = load_config(config, sets)
    assert cfg.data.source == str(out)
    assert processed_as(out, cfg.data) == []  # the run takes the directory as it was made, no warning
    assert processed_as(out, load_config(config, [f"data.source={out}"]).data)  # the config alone differs


def test_without_a_config_the_suggested_run_is_a_line_that_runs_as_printed(tmp_path: Path) -> None:
    """`recsys ingest log.csv --out DIR` (no --config) said `next: recsys run --config FILE ...
    (FILE: a config with these [data] settings)`: a first-day user had no such file to give. The
    line now names no config: `recsys run` loads its default one, and the line's --set give it the
    [data] settings the directory was made with (the built-in k-core of 1, not the default config's
    3), so the run takes the directory as it is, without the warning that says to re-ingest it."""
    import shlex

    from pipelines.data import processed_as
    from recsys.cli.common import load_run_config

    src, out = tmp_path / "log.csv", tmp_path / "out"
    src.write_text("user_id,item_id,rating\n" + "".join(f"{u},{i},{1 + (u + i) % 5}\n" for u in range(6) for i in range(u % 3 + 1)))
    result = runner.invoke(app, ["ingest", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("next: ")]
    command = shlex.split(line.removeprefix("next: "))
    assert command[:2] == ["recsys", "run"] and "--config" not in command and "FILE" not in line, line
    sets = [command[i + 1] for i, arg in enumerate(command) if arg == "--set"]
    assert "data.min_user_interactions=1" in sets, sets
    cfg = load_run_config(None, sets, default=True)
    assert cfg.data.source == str(out)
    assert processed_as(out, cfg.data) == []  # no "ingested with other settings" warning
    assert processed_as(out, load_run_config(None, [f"data.source={out}"], default=True).data)  # without the sets


def test_an_append_of_a_file_without_rows_leaves_the_directory_and_succeeds(tmp_path: Path) -> None:
    """`recsys ingest today.csv --append` on a quiet day (the export's header, no row) failed the
    schedule with `no data rows`, exit 2; nothing is to be added, so it says so and exits 0. A
    first ingest of such a file is still the one-line error (no directory to keep)."""
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    (tmp_path / "day1.csv").write_text("user_id,item_id,timestamp\na,x,1700000000\nb,y,1700000001\n")
    (tmp_path / "day2.csv").write_text("user_id,item_id,timestamp\n")
    first = runner.invoke(app, ["ingest", str(tmp_path / "day2.csv"), "--out", str(out)])
    assert first.exit_code == 2 and "day2.csv: no data rows" in first.output and not out.exists()
    assert runner.invoke(app, ["ingest", str(tmp_path / "day1.csv"), "--out", str(out)]).exit_code == 0
    before = (out / "manifest.json").read_text()
    result = runner.invoke(app, ["ingest", str(tmp_path / "day2.csv"), "--out", str(out), "--append", "--json", str(summary)])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "no data rows: nothing appended" in result.output
    assert (out / "manifest.json").read_text() == before
    data = json.loads(summary.read_text())
    assert (data["rows_in"], data["rows_accepted"], data["interactions"]) == (0, 0, 2)


def test_a_mistyped_column_of_a_recbole_file_is_answered_with_its_typed_name(tmp_path: Path) -> None:
    """`--user-col user` on RecBole's `user_id:token` header said `--user-col NAME`: the typed name
    is too long to be close to `user`, so the suggestion compares the names without their type."""
    log = tmp_path / "ml.inter"
    log.write_text("user_id:token\titem_id:token\trating:float\n1\t10\t5\n2\t10\t4\n")
    result = runner.invoke(app, ["ingest", str(log), "--out", str(tmp_path / "out"), "--user-col", "user"])
    assert result.exit_code == 2
    assert " ".join(result.output.split()).endswith("name one with --user-col user_id:token"), result.output


def test_a_file_where_a_directory_must_go_is_named_not_blamed_on_permissions(tmp_path: Path) -> None:
    """`recsys data synth --out ratings.csv` said "File exists (ratings.csv): check the path and its
    permissions"; a path below a file said "Not a directory". Both name the file in the way."""
    log = tmp_path / "ratings.csv"
    log.write_text("user_id,item_id\na,b\n")
    for out in (log, log / "synth"):
        result = runner.invoke(app, ["data", "synth", "--out", str(out), "--users", "8", "--items", "8"])
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line.endswith(f"{log} is a file, not a directory: choose another path"), line


def test_a_misspelt_public_set_is_answered_with_the_closest_name(tmp_path: Path) -> None:
    """`recsys data fetch movielens-10` listed the sets; `recsys run --set data.source=movielens-10`
    named the one meant. Both do now, before any download."""
    result = runner.invoke(app, ["data", "fetch", "movielens-10", "--raw-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown public data set 'movielens-10' (did you mean 'movielens-100k'?)" in result.output
    assert not any(tmp_path.iterdir())


def test_an_empty_source_is_refused_not_read_as_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    """`recsys ingest "$LOG" --out DIR` with LOG unset ingested every data-like file under the
    working directory (`Path("")` is `.`)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.csv").write_text("user_id,item_id\na,b\nc,d\n")
    result = runner.invoke(app, ["ingest", "", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: Invalid value for 'source': is empty"), line
    assert not (tmp_path / "out").exists()
    # `recsys data combine "$A" b.csv`: the working directory was combined with b.csv
    result = runner.invoke(app, ["data", "combine", "", "notes.csv", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: Invalid value for 'sources': is empty") and not (tmp_path / "out").exists()
