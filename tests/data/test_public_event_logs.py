"""Published event logs whose files are written here byte for byte as they ship (never
downloaded): Coveo's SIGIR eCom 2021 `browsing_train.csv`, OTTO's `train.jsonl`, Ciao's `rating.mat`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app

runner = CliRunner()


def _refusal(source: Path, out: Path, *args: str) -> str:
    """The one `error:` line of an ingest that must exit 2."""
    result = runner.invoke(app, ["ingest", str(source), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    return line


def test_coveos_browsing_log_hints_its_sku_as_the_item_not_its_product_action(tmp_path: Path) -> None:
    """Coveo's `browsing_train.csv` names no column like a user or an item: the hint offered
    `--item-col product_action`, whose values (detail, add, purchase) are events, so a user who
    copied it read five items. An action names an event, never an id: the SKU column is offered."""
    path = tmp_path / "browsing_train.csv"
    path.write_text(
        "session_id_hash,event_type,product_action,product_sku_hash,server_timestamp_epoch_ms,hashed_url\n"
        "00000299e6ba3c2cb6f8dd2adc5f7e0ab3f9ee07,pageview,,,1550885210881,7e5f2d7ba1d0b6ce7c1f7a4e3a0b0cb3ab1d6b7b\n"
        "00000299e6ba3c2cb6f8dd2adc5f7e0ab3f9ee07,event,detail,0f3e06a9d1ba9bc2a1f0ec1d5e8c4a4e41f6d3b2,"
        "1550885213307,b1e3c0d6f1f7c1f1a0d6e6f5e1b4c3a2d1e0f9a8\n"
        "0000a8ecda1eba7c0ae4b7d8c6a6e2c2d7e0f8b1,event,add,2a8c7c4a0f5d3b0e1c9d8e7f6a5b4c3d2e1f0a9b,"
        "1550885998127,c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1\n"
    )
    line = _refusal(path, tmp_path / "out")
    assert line.startswith("error: no user column found"), line
    assert "--user-col session_id_hash" in line and line.endswith("--item-col product_sku_hash"), line


def test_otto_sessions_with_an_event_list_say_how_to_write_one_line_per_event(tmp_path: Path) -> None:
    """OTTO's `train.jsonl` holds a session a line, its events a list of objects: the hint was
    `--user-col session, and no item column either: --item-col NAME`, which no option satisfies,
    and `--item-col aid` (found inside the list) quarantined every line as missing_item. Both now
    name the list and give the jq line that writes one line per event, which then ingests."""
    sessions = [
        {"session": 0, "events": [{"aid": 1517085, "ts": 1659304800025, "type": "clicks"},
                                  {"aid": 1563459, "ts": 1659304904511, "type": "clicks"},
                                  {"aid": 1309446, "ts": 1659367439426, "type": "carts"}]},
        {"session": 1, "events": [{"aid": 424964, "ts": 1659304800025, "type": "carts"},
                                  {"aid": 1309446, "ts": 1659304904511, "type": "orders"}]},
    ]  # fmt: skip
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(s, separators=(",", ":")) + "\n" for s in sessions))
    jq = "`jq -c '{session} as $s | .events[] | $s + .' FILE > NEW.jsonl`"
    for args in ((), ("--user-col", "session", "--item-col", "aid")):
        line = _refusal(path, tmp_path / "out", *args)
        assert line.startswith(f"error: {path}: key 'events' holds a list of objects ('aid', 'ts', 'type')"), line
        assert jq in line and "--item-col NAME" not in line, line
    # What that jq line writes, ingested: five events, times in milliseconds, `type` the event.
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps({"session": s["session"], **e}) + "\n" for s in sessions for e in s["events"]))
    out = tmp_path / "flat"
    result = runner.invoke(app, ["ingest", str(flat), "--out", str(out), "--user-col", "session", "--item-col", "aid"])
    assert result.exit_code == 0, result.output
    assert "time=ts, event=type" in result.output, result.output
    rows = pl.read_parquet(out / "interactions" / "**" / "*.parquet").sort("source_row")
    assert rows.height == 5 and rows["event"].to_list() == ["clicks", "clicks", "carts", "carts", "orders"]
    assert rows["timestamp"][0] == datetime(2022, 7, 31, 22, 0, 0, 25000, tzinfo=UTC)


def test_ciaos_matlab_ratings_and_pickles_say_what_they_are_and_what_to_write(tmp_path: Path) -> None:
    """Ciao's and Epinions' `rating_with_timestamp.mat` (Tang et al.: one MATLAB matrix, a rating a
    row: user, product, category, rating, helpfulness, time) was refused as `binary content` with no
    hint; so were a pandas pickle and an HDF5 file. Each now names its kind and the conversion, the
    .mat one with its matrix's name and shape in a line that, run, writes a CSV that ingests."""
    import pickle

    import numpy as np
    import scipy.io

    ratings = np.array([[1, 2, 3, 4, 5, 1000000000], [1, 7, 3, 5, 2, 1000003600], [2, 2, 3, 3, 1, 1000007200]])
    mat = tmp_path / "rating_with_timestamp.mat"
    scipy.io.savemat(mat, {"rating": ratings})
    line = _refusal(mat, tmp_path / "out")
    assert "a MATLAB .mat file" in line and "its matrix 'rating' (3 x 6)" in line, line
    command = line.split('`python -c "', 1)[1].split('"`', 1)[0]
    assert "header='user_id,item_id,column_3,column_4,column_5,column_6'" in command, line
    namespace: dict = {}
    exec(command.replace("NEW.csv", str(tmp_path / "new.csv")), namespace)  # the line the error gives
    written = (tmp_path / "new.csv").read_text().splitlines()
    assert written[1:] == ["1,2,3,4,5,1000000000", "1,7,3,5,2,1000003600", "2,2,3,3,1,1000007200"], written
    pickled = tmp_path / "ratings.pkl"
    pickled.write_bytes(pickle.dumps({"user_id": [1, 2], "item_id": [3, 4]}, protocol=4))
    line = _refusal(pickled, tmp_path / "out")
    assert "a Python pickle" in line and "pd.read_pickle(FILE).to_parquet(NEW)" in line, line
    hdf = tmp_path / "ratings.h5"
    hdf.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(600))
    assert "an HDF5 file" in _refusal(hdf, tmp_path / "out")


def test_a_rerated_movie_in_a_headerless_ratings_dat_is_summed_with_the_warning_a_rating_gets(tmp_path: Path) -> None:
    """ratings.dat (`user::movie::rating::timestamp`, no header) whose user rated movie 1193 twice,
    5 then 4 stars: `aggregate = auto` summed them into 9 without the warning a column named
    `rating` gets, as the positional third field has no name. It is the rating by position (README:
    user, item, rating, timestamp), so it now gets that warning; the sum itself is unchanged."""
    path = tmp_path / "ratings.dat"
    path.write_text("1::1193::5::978300760\n1::661::3::978302109\n1::1193::4::978302500\n2::661::4::978300000\n")
    result = runner.invoke(app, ["ingest", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (summed,) = [line for line in result.output.splitlines() if "summed" in line]
    assert summed.startswith("warning: 1 repeated (user, item) rows were summed into their pairs' column 3"), summed
    assert "--set data.aggregate=last" in summed, summed
    pairs = pl.read_parquet(tmp_path / "out" / "implicit.parquet")
    assert sorted(pairs["weight"].to_list()) == [3.0, 4.0, 9.0]


def test_ncfs_sampled_negatives_file_is_named_not_given_a_header_to_read_it_as_interactions(tmp_path: Path) -> None:
    """NCF's `ml-1m.test.negative`: `(user,item)` then the 99 items sampled as negatives for that
    test pair, tab-separated. The hint was `--header user_id,item_id,column_3,...`, which reads
    `(0,25)` as a user and the first negative as the item they chose. It is named as what it is,
    with the files to ingest instead; the `.train.rating` beside it reads by position."""
    negatives = tmp_path / "ml-1m.test.negative"
    negatives.write_text(
        "".join(f"({u},{25 + u})\t" + "\t".join(str(1064 + 7 * n + u) for n in range(99)) + "\n" for u in range(3))
    )
    line = _refusal(negatives, tmp_path / "out")
    assert line.startswith(f"error: {negatives}: its lines start with a (user, item) pair in parentheses ('(0,25)')")
    assert "99 item ids" in line and ".train.rating" in line and "--header" not in line, line
    train = tmp_path / "ml-1m.train.rating"
    train.write_text("0\t32\t4\t978824330\n0\t34\t4\t978824330\n1\t4\t3\t978300000\n")
    result = runner.invoke(app, ["ingest", str(train), "--out", str(tmp_path / "train")])
    assert result.exit_code == 0 and "user=column 1, item=column 2, time=column 4, weight=column 3" in result.output


def test_a_column_option_on_a_headerless_file_is_refused_not_ignored(tmp_path: Path) -> None:
    """ML-10M's `tags.dat` (`user::movie::tag::timestamp`, no header) read by position takes the
    tag for the rating: every row bad_weight, and the error asked for `--weight-col NAME`. Given
    one (`--weight-col column_4`), the option was ignored without a word and the same error came
    back; so was any column option on u.data. It is now refused, with the data.header that names
    the fields, and under that header the tags ingest as interactions without a weight."""
    tags = tmp_path / "tags.dat"
    tags.write_text("15::4973::excellent!::1215184630\n20::1747::politics::1188263867\n20::1747::satire::1188263867\n")
    line = _refusal(tags, tmp_path / "out", "--weight-col", "column_4")
    assert line.startswith(f"error: {tags}: has no header line"), line
    assert "--weight-col column_4" in line and "--header user_id,item_id,column_3,timestamp" in line, line
    udata = tmp_path / "u.data"
    udata.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    line = _refusal(udata, tmp_path / "out", "--time-col", "when")
    assert "--time-col when" in line and "--header user_id,item_id,rating,timestamp" in line, line
    out = tmp_path / "tags"
    result = runner.invoke(
        app, ["ingest", str(tags), "--out", str(out), "--header", "user_id,item_id,tag,timestamp", "--item-col", "item_id"]
    )
    assert result.exit_code == 0, result.output
    assert "time=timestamp, no weight column" in result.output, result.output


def test_a_headerless_file_whose_rating_is_text_asks_for_names_not_a_column_option(tmp_path: Path) -> None:
    """ML-10M's `tags.dat` read by position: every tag is a bad rating, and the error said `name
    another weight column with --weight-col NAME`, an option a headerless file cannot use (refused
    since). It now says the columns are read by position and asks for the fields' names."""
    tags = tmp_path / "tags.dat"
    tags.write_text("15::4973::excellent!::1215184630\n20::1747::politics::1188263867\n")
    line = _refusal(tags, tmp_path / "out")
    assert line.startswith(f"error: {tags}: no row passed validation (bad_weight: 2; row 1: column 3 is 'excellent!')")
    assert "read by position" in line and "--header NAMES" in line and "--weight-col" not in line, line


def test_xings_interaction_type_is_the_event_and_created_at_is_named_as_a_time(tmp_path: Path) -> None:
    """XING's RecSys Challenge 2017 `interactions.csv` (tab-separated: user_id, item_id,
    interaction_type, created_at; type 0 an impression, 1-3 click, bookmark, reply, 4 a delete)
    was read as user and item alone: every impression and delete an interaction without a word
    about the type, an impression and a later click of one pair a `duplicate`, and `created_at`
    not named as the time it holds. The type is now the event (so --event-weight 1=1 ... keeps
    the clicks, bookmarks and replies) and `created_at` is named in the warning."""
    path = tmp_path / "interactions.csv"
    path.write_text(
        "user_id\titem_id\tinteraction_type\tcreated_at\n"
        "9\t1005\t0\t1478736000\n9\t1005\t1\t1478736300\n9\t2171\t0\t1478736000\n"
        "14\t1005\t2\t1479340800\n14\t3310\t4\t1479340800\n14\t3310\t0\t1479340800\n14\t3310\t0\t1479341100\n"
    )
    result = runner.invoke(app, ["ingest", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "event=interaction_type" in result.output, result.output
    (warning,) = [line for line in result.output.splitlines() if line.startswith("warning: duplicates")]
    assert "'created_at' is named like one but not read" in warning, warning
    weighted = runner.invoke(app, [
        "ingest", str(path), "--out", str(tmp_path / "clicks"), "--time-col", "created_at",
        *("--event-weight", "1=1", "--event-weight", "2=2", "--event-weight", "3=3"),
    ])  # fmt: skip
    assert weighted.exit_code == 0, weighted.output
    pairs = pl.read_parquet(tmp_path / "clicks" / "implicit.parquet")
    assert sorted(pairs["weight"].to_list()) == [1.0, 2.0], pairs


def test_tenrecs_watching_times_is_a_count_not_named_as_an_unread_time(tmp_path: Path) -> None:
    """Tenrec's `QB-video.csv` (user_id, item_id, click, follow, like, share, video_category,
    watching_times, gender, age: one row per video shown) has no time; its `watching_times`, how
    often a video was watched, was named as a time not read (`--time-col watching_times`), a hint
    that reads counts as 1970 seconds. Only the click flag's warning is left."""
    path = tmp_path / "QB-video.csv"
    path.write_text(
        "user_id,item_id,click,follow,like,share,video_category,watching_times,gender,age\n"
        "1,4,0,0,0,0,1,0,1,4\n1,1201,1,0,0,0,1,1,1,4\n2,4,1,0,1,0,1,2,2,3\n"
    )
    result = runner.invoke(app, ["ingest", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--weight-col click" in warnings[0], warnings


def test_outbrains_page_views_hint_uuid_as_the_user_not_the_document(tmp_path: Path) -> None:
    """Outbrain's `page_views_sample.csv` (uuid, document_id, timestamp, platform, geo_location,
    traffic_source) names no column like a user: the hint was `--user-col document_id`, every page
    its own user. A column named for items (a document) is never offered as the user."""
    path = tmp_path / "page_views_sample.csv"
    path.write_text(
        "uuid,document_id,timestamp,platform,geo_location,traffic_source\n"
        "1fd5f051fba643,120,31905835,1,RS,2\n8557aa9004be3b,120,32053104,1,VN>44,2\n"
    )
    line = _refusal(path, tmp_path / "out")
    assert "--user-col uuid" in line and line.endswith("--item-col document_id"), line


def test_outbrains_offset_milliseconds_read_as_seconds_are_flagged_for_their_1970_rows(tmp_path: Path) -> None:
    """Outbrain's page-view times are milliseconds since its first page view; read as Unix
    seconds they spread from 1970 to 2011, and as not every one fell in 1970 no check said so.
    Some times in 1970 beside later ones (also a 0 written for a missing time) get a warning."""
    path = tmp_path / "page_views_sample.csv"
    path.write_text(
        "uuid,document_id,timestamp,platform,geo_location,traffic_source\n"
        "1fd5f051fba643,120,31905835,1,RS,2\n8557aa9004be3b,120,1221845,1,VN>44,2\n"
        "c351b277a358f0,121,1296000000,1,KR>12,1\n"
    )
    result = runner.invoke(
        app, ["ingest", str(path), "--out", str(tmp_path / "out"), "--user-col", "uuid", "--item-col", "document_id"]
    )
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.output.splitlines() if "1970" in line]
    assert warning.startswith("warning: 1 of 3 timestamps ('timestamp') are in 1970 (earliest 1970-01-15 03:24:05"), warning
    clean = tmp_path / "clean.csv"  # no 1970 row: no warning
    clean.write_text("user_id,item_id,timestamp\n1,10,978300760\n2,10,978300761\n")
    result = runner.invoke(app, ["ingest", str(clean), "--out", str(tmp_path / "clean")])
    assert result.exit_code == 0 and "1970" not in result.output, result.output


def test_spotifys_skip_log_hints_its_session_as_the_user_not_a_user_behaviour_feature(tmp_path: Path) -> None:
    """The Music Streaming Sessions Dataset's `log_mini.csv` (session_id, session_position, ...,
    track_id_clean, ..., hist_user_behavior_n_seekfwd, ...) names no user column: the hint was
    `--user-col hist_user_behavior_n_seekfwd`, a count of seeks, since its name holds `user`. A name
    that starts with the role (`session_id`) is now offered before one that only holds it."""
    path = tmp_path / "log_mini.csv"
    path.write_text(
        "session_id,session_position,session_length,track_id_clean,skip_1,not_skipped,"
        "hist_user_behavior_n_seekfwd,hist_user_behavior_is_shuffle,hour_of_day,date,premium,context_type\n"
        "0_00006f66-33e5-4de7-a324-2d18e439fc1e,1,20,t_0479f24c-27d2-41d6-a6f3-2e28cc8e4e0f,false,true,0,true,16,"
        "2018-07-15,true,editorial_playlist\n"
    )
    line = _refusal(path, tmp_path / "out")
    assert "--user-col session_id," in line and line.endswith("--item-col track_id_clean"), line


def test_excels_separator_line_is_named_with_the_line_that_drops_it(tmp_path: Path) -> None:
    """A CSV exported for Excel may start with its separator directive (`sep=;`) above the header:
    read as a header of two columns, the hint asked to add a header line above it. It is named,
    with the `sed` that drops it; without it the file reads."""
    path = tmp_path / "ratings.csv"
    path.write_text("sep=;\r\nuser_id;item_id;rating\r\n1;10;5\r\n2;10;4\r\n")
    line = _refusal(path, tmp_path / "out")
    assert line == (
        f"error: {path}: starts with Excel's separator line ('sep=;'), which is not read: drop it first, "
        "e.g. `sed -i 1d FILE` (the header line below it is then the first line)"
    )
    path.write_text("user_id;item_id;rating\r\n1;10;5\r\n2;10;4\r\n")
    result = runner.invoke(app, ["ingest", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and "2 users, 1 items, 2 interactions" in result.output, result.output


def test_netflix_probe_and_qualifying_blocks_get_the_awk_line_that_fits_their_fields(tmp_path: Path) -> None:
    """The Netflix prize's `probe.txt` (`MovieID:` then bare user ids) and `qualifying.txt` (then
    `user,date`) got the awk line written for `combined_data_*.txt` (`user,rating,date`): run, it
    wrote rows with an empty rating, every one quarantined as bad_weight, and ingest stopped. Each
    file now gets the line for its own fields, which is run here and ingests every pair."""
    import subprocess

    for name, lines, names in (
        ("probe.txt", "1:\n30878\n2647871\n10:\n1952305\n", "user_id,item_id"),
        ("qualifying.txt", "1:\n1046323,2005-12-19\n1080030,2005-12-23\n10:\n1952305,2005-11-01\n", "user_id,item_id,date"),
    ):
        path = tmp_path / name
        path.write_text(lines)
        line = _refusal(path, tmp_path / "out")
        assert f"flatten them to one {names} line each first" in line, line
        program = line.split("`awk -F, '", 1)[1].split("' FILE > NEW`", 1)[0]
        flat = tmp_path / f"{name}.csv"
        flat.write_text(subprocess.run(["awk", "-F,", program, str(path)], capture_output=True, text=True, check=True).stdout)
        result = runner.invoke(app, ["ingest", str(flat), "--out", str(tmp_path / f"out_{name}")])
        assert result.exit_code == 0 and "│ rows accepted    │ 3 │" in result.output, result.output


def _npz_file(tmp_path: Path, layout: str) -> Path:
    """A .npz of one of three layouts ratings ship in: one 2-D array (np.savez), 1-D arrays side
    by side, and a SciPy sparse user x item matrix (scipy.sparse.save_npz)."""
    import numpy as np

    path = tmp_path / f"{layout}.npz"
    if layout == "matrix":
        np.savez(path, ratings=np.array([[1, 10, 4, 1_300_000_000], [2, 11, 5, 1_300_003_600]]))
    elif layout == "columns":
        np.savez_compressed(path, user_id=np.array([1, 2, 2]), item_id=np.array([10, 10, 11]))
    else:
        import scipy.sparse

        scipy.sparse.save_npz(path, scipy.sparse.csr_matrix(np.array([[0.0, 4.0], [5.0, 0.0]])))
    return path


@pytest.mark.parametrize(
    ("layout", "named", "rows"),
    [
        ("matrix", "write its array 'ratings' as CSV", ["1,10,4,1300000000", "2,11,5,1300003600"]),
        ("columns", "write its arrays side by side as CSV", ["1,10", "2,10", "2,11"]),
        ("sparse", "a SciPy sparse matrix saved as a NumPy archive", ["0,1,4", "1,0,5"]),
    ],
    ids=["matrix", "columns", "sparse"],
)
def test_a_numpy_npz_archive_is_named_with_the_line_that_writes_it_as_csv(
    tmp_path: Path, layout: str, named: str, rows: list[str]
) -> None:
    """A NumPy `.npz` is a zip whose members are `.npy` files, and was refused as "a zip archive, or
    an .xlsx workbook: unzip it ... or export the sheet as CSV", neither of which it is. It is now
    named as a NumPy archive with a `python -c` line that, run, writes a CSV that ingests."""
    path = _npz_file(tmp_path, layout)
    line = _refusal(path, tmp_path / "out")
    assert "NumPy archive (.npz" in line and named in line and "xlsx" not in line, line
    command = line.split('`python -c "', 1)[1].split('"`', 1)[0]
    new = tmp_path / "new.csv"
    exec(command.replace("NEW.csv", str(new)), {})  # the line the error gives
    written = new.read_text().splitlines()
    assert written[1:] == rows, written
    result = runner.invoke(app, ["ingest", str(new), "--out", str(tmp_path / "flat")])
    assert result.exit_code == 0, result.output


def test_a_numpy_npy_file_is_named_with_the_line_that_writes_it_as_csv(tmp_path: Path) -> None:
    """A NumPy `.npy` (np.save) was refused as "a NumPy array (.npy): write it as CSV with a header
    line naming the columns", with no line that does, unlike `.mat` and `.npz`. A 2-D array now gets
    the `python -c` line that, run, writes a CSV that ingests, its shape read from the header alone;
    a structured array one that writes its fields under their names; a 1-D array says it holds one
    column and that ingest needs a user and an item a row; an array of objects is not unpickled."""
    import numpy as np

    matrix = tmp_path / "ratings.npy"
    np.save(matrix, np.array([[1, 10, 4, 1_300_000_000], [2, 11, 5, 1_300_003_600], [2, 10, 3, 1_300_007_200]]))
    line = _refusal(matrix, tmp_path / "out")
    assert "a NumPy array (.npy, 3 x 4): write it as CSV first" in line, line
    command = line.split('`python -c "', 1)[1].split('"`', 1)[0]
    assert "header='user_id,item_id,column_3,column_4'" in command and "allow_pickle" not in command, line
    new = tmp_path / "new.csv"
    exec(command.replace("NEW.csv", str(new)), {})  # the line the error gives
    assert new.read_text().splitlines() == [
        "user_id,item_id,column_3,column_4", "1,10,4,1300000000", "2,11,5,1300003600", "2,10,3,1300007200"
    ]  # fmt: skip
    result = runner.invoke(app, ["ingest", str(new), "--out", str(tmp_path / "flat")])
    assert result.exit_code == 0 and "│ rows accepted    │ 3 │" in result.output, result.output

    records = tmp_path / "records.npy"
    kinds = [("user_id", "<U8"), ("item_id", "<i8"), ("rating", "<f4")]
    np.save(records, np.array([("u1", 10, 4.5), ("u2", 11, 3.0)], dtype=kinds))
    line = _refusal(records, tmp_path / "out")
    assert "structured array (.npy, 2 records of fields 'user_id', 'item_id', 'rating')" in line, line
    command = line.split('`python -c "', 1)[1].split('"`', 1)[0]
    exec(command.replace("NEW.csv", str(new)), {})
    assert new.read_text().splitlines() == ["user_id,item_id,rating", "u1,10,4.5", "u2,11,3"]
    result = runner.invoke(app, ["ingest", str(new), "--out", str(tmp_path / "records")])
    assert result.exit_code == 0 and "│ rows accepted    │ 2 │" in result.output, result.output

    column = tmp_path / "users.npy"
    np.save(column, np.array([1, 2, 3]))
    line = _refusal(column, tmp_path / "out")
    assert "(.npy, 3, int64) that holds one column of 3 values, not interactions: ingest needs a user and an item a row" in line, line

    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"user": 1}, {"user": 2}], dtype=object), allow_pickle=True)
    line = _refusal(objects, tmp_path / "out")
    assert "of Python objects, which is not loaded" in line and "python -c" not in line, line


def test_coveos_browsing_log_ingests_its_epoch_ms_times_and_product_actions(tmp_path: Path) -> None:
    """With the hinted columns, Coveo's log was read without times (`server_timestamp_epoch_ms` is in
    no list of names) and with `event_type` as the event (pageview or event_product), so a session's
    `add` and `purchase` of one SKU differed in no column read and the purchase was quarantined as a
    duplicate. A name that says epoch and unit is read as the time, and `product_action` is the event."""
    path = tmp_path / "browsing_train.csv"
    session, sku = "0000a8ecda1eba7c0ae4b7d8c6a6e2c2d7e0f8b1", "2a8c7c4a0f5d3b0e1c9d8e7f6a5b4c3d2e1f0a9b"
    path.write_text(
        "session_id_hash,event_type,product_action,product_sku_hash,server_timestamp_epoch_ms,hashed_url\n"
        f"{session},pageview,,,1550885210881,7e5f2d7ba1d0b6ce7c1f7a4e3a0b0cb3ab1d6b7b\n"
        f"{session},event_product,add,{sku},1550885998127,c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1\n"
        f"{session},event_product,purchase,{sku},1550886012500,c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1\n"
    )
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["ingest", str(path), "--out", str(out), "--user-col", "session_id_hash", "--item-col", "product_sku_hash"]
    )
    assert result.exit_code == 0, result.output
    assert "time=server_timestamp_epoch_ms, event=product_action" in result.output, result.output
    rows = pl.read_parquet(out / "interactions" / "**" / "*.parquet").sort("source_row")
    assert rows["event"].to_list() == ["add", "purchase"]
    assert rows["timestamp"].to_list() == [
        datetime(2019, 2, 23, 1, 39, 58, 127000, tzinfo=UTC),
        datetime(2019, 2, 23, 1, 40, 12, 500000, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("name", "read"),
    [("event_ts_ms", True), ("unix_time", True), ("epoch_seconds", True), ("watch_time_ms", False), ("epoch", False)],
)
def test_a_column_named_as_an_epoch_time_in_a_unit_is_read_as_the_time_and_a_duration_is_not(
    tmp_path: Path, name: str, read: bool
) -> None:
    """A moment named with its unit or epoch is the time; a duration (`watch_time_ms`) or a bare
    `epoch` (a training epoch) is not guessed as one."""
    path = tmp_path / "log.csv"
    path.write_text(f"user_id,item_id,{name}\n1,10,1550885998\n2,11,1550886012\n")
    result = runner.invoke(app, ["ingest", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (f"time={name}" in result.output) is read, result.output
