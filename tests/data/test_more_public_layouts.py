"""More published layouts, written here byte for byte as their files are (never downloaded):
Steam 200K's headerless `steam-200k.csv`, Tmall's (IJCAI-15) `user_log_format1.csv`, KuaiRand's
`log_standard_*.csv`, dunnhumby's `transaction_data.csv`."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import zlib
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import SplitConfig
from recsys.data.splits import split_data
from recsys.data.storage import load_processed
from recsys.errors import DataError

runner = CliRunner()


def _ingest(source: Path, out: Path, *args: str):
    return runner.invoke(app, ["ingest", str(source), "--out", str(out), *args])


def _accepted(source: Path, out: Path, *args: str) -> str:
    """The output of an ingest that must succeed, its whitespace runs (rich's wrapping) made one space."""
    result = _ingest(source, out, *args)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _refusal(source: Path, out: Path, *args: str) -> str:
    """The one `error:` line of an ingest that must exit 2."""
    result = _ingest(source, out, *args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    return line


def test_steam_200k_suggested_header_reads_the_user_and_the_game(tmp_path: Path) -> None:
    """User, game (quoted), behaviour, hours, 0: the 9-digit user id looked like a Unix time, so
    the suggested header named it `timestamp`, the game `user_id` and `purchase` the item."""
    rows = (
        '151603712,"The Elder Scrolls V Skyrim",purchase,1.0,0\r\n'
        '151603712,"The Elder Scrolls V Skyrim",play,273.0,0\r\n'
        '151603712,"Fallout 4",purchase,1.0,0\r\n'
        '59945701,"Dota 2",play,2.3,0\r\n'
    )
    path = tmp_path / "steam-200k.csv"
    path.write_text(rows, newline="")
    line = _refusal(path, tmp_path / "out")
    header = line.split("sed -i '1i ", 1)[1].split("'", 1)[0]
    assert header == "user_id,item_id,event,column_4,column_5", line
    path.write_text(header + "\n" + rows, newline="")
    out = tmp_path / "out"
    assert _ingest(path, out, "--exact-duplicates", "keep").exit_code == 0
    got = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")
    assert sorted(set(got["user_id"].cast(pl.String))) == ["151603712", "59945701"]
    assert sorted(set(got["item_id"])) == ["Dota 2", "Fallout 4", "The Elder Scrolls V Skyrim"]


def test_tmall_action_type_is_the_event_and_time_stamp_the_time(tmp_path: Path) -> None:
    """`action_type` (0 click, 1 cart, 2 purchase, 3 favourite) and `time_stamp` (MMDD) went
    unread: every click weighed as a purchase, with nothing said. Now the event is read (so
    `--event-weight 2=5` weighs purchases) and the MMDD times are flagged as in 1970."""
    path = tmp_path / "user_log_format1.csv"
    path.write_text(
        "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n"
        "328862,323294,833,2882,2661,829,0\n"
        "328862,844400,1271,2882,2661,829,0\n"
        "328862,575153,1271,2882,,829,2\n"
        "234512,575153,1271,2882,2661,1111,3\n"
        "328862,323294,833,2882,2661,829,0\n"  # a second click that day: not a copied row
    )
    out = tmp_path / "out"
    result = _ingest(path, out, "--event-weight", "0=1", "--event-weight", "2=5", "--event-weight", "3=2")
    assert result.exit_code == 0, result.output
    columns = json.loads((out / "manifest.json").read_text())["batches"][-1]["columns"]
    assert columns["event"] == "action_type" and columns["timestamp"] == "time_stamp", columns
    said = " ".join(result.output.split())
    assert "is in 1970" in said
    assert "holds day numbers or dates read as 1970 seconds" in said and "--exact-duplicates keep" in said, said
    pairs = pl.read_parquet(out / "implicit.parquet")
    assert sorted(pairs["weight"].to_list()) == [1.0, 1.0, 2.0, 5.0]
    kept = tmp_path / "kept"
    args = ["--event-weight", "0=1", "--event-weight", "2=5", "--event-weight", "3=2", "--exact-duplicates", "keep"]
    assert _ingest(path, kept, *args).exit_code == 0
    assert sorted(pl.read_parquet(kept / "implicit.parquet")["weight"].to_list()) == [1.0, 2.0, 2.0, 5.0]


def test_book_crossing_backslash_escaped_quotes_name_the_sed_that_fixes_them(tmp_path: Path) -> None:
    """The Book-Crossing dump escapes a quote inside a quoted field as `\\"`, which CSV does not:
    the error said only 'fix that line'; it names the sed that doubles them, which makes it read."""
    path = tmp_path / "BX-Book-Ratings.csv"
    text = '"User-ID";"ISBN";"Book-Rating"\r\n"276725";"034545104X";"0"\r\n"276762";"B0000BLD7X\\"";"7"\r\n'
    path.write_text(text, newline="")
    line = _refusal(path, tmp_path / "out")
    assert "at line 3" in line and "`sed 's/\\\\\"/\"\"/g' FILE > NEW`" in line, line
    path.write_text(text.replace('\\"', '""'), newline="")  # what that sed does
    out = tmp_path / "out"
    assert _ingest(path, out).exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["rows_accepted"] == 2
    items = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")["item_id"].to_list()
    assert 'B0000BLD7X"' in items


def test_book_crossing_quoted_twice_gives_clean_isbns_and_one_warning(tmp_path: Path) -> None:
    """A spreadsheet's re-export of BX-Book-Ratings.csv (a public copy's first rows as written, with
    its empty `,,` rows, its CR line ends made LF as the CR refusal asks): each ISBN's field holds
    the quoted text `"034545104X"`. The quotes stayed inside every item id with no word, so no id
    matched BX-Books.csv's; now the ids are clean and one warning says so."""
    rows = [
        ("276725", "034545104X", "0"), ("276726", "0155061224", "5"), ("276727", "0446520802", "0"),
        ("276729", "052165615X", "3"), ("276729", "0521795028", "6"), ("276762", "N3453124715", "4"),
        ("276929", "2.02.032126.2", "0"), ("276747", "0060517794", "9"),
    ]  # fmt: skip
    text = "User-ID,ISBN,Book-Rating\n" + "".join(f'{u},"""{i}""",{r}\n' for u, i, r in rows) + ",,\n,,\n"
    path = tmp_path / "BX-Book-Ratings.csv"
    path.write_text(text)
    out = tmp_path / "out"
    result = _ingest(path, out, "--set", "data.binarize=true")
    assert result.exit_code == 0, result.output
    items = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")["item_id"].to_list()
    assert sorted(items) == sorted(isbn for _, isbn, _ in rows)
    said = [line for line in result.output.splitlines() if line.startswith("warning:") and "literal quotes" in line]
    assert len(said) == 1, result.output
    assert "8 of 8 item ids in column 'ISBN'" in said[0] and '(first: "034545104X")' in said[0]


def test_a_headerless_numeric_file_of_five_fields_asks_for_a_header(tmp_path: Path) -> None:
    """LFM-1b's `LFM-1b_LEs.txt` (user, artist, album, track, Unix time; no header): read by
    position it took the album id for the rating and the track id for the time (1970), and the
    real time went unread. Only u.data's two to four fields are read by position."""
    rows = "31435741\t2\t4\t4\t1385212958\n31435741\t2\t4\t5\t1385212642\n31435742\t3\t7\t9\t1385209153\n"
    path = tmp_path / "LFM-1b_LEs.txt"
    path.write_text(rows)
    line = _refusal(path, tmp_path / "out")
    assert "no header line and 5 fields" in line and "\\ttimestamp'" in line, line
    assert not (tmp_path / "out").exists()
    path.write_text("user_id\titem_id\talbum_id\ttrack_id\ttimestamp\n" + rows)
    out = tmp_path / "out"
    assert _ingest(path, out, "--exact-duplicates", "keep").exit_code == 0
    got = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")
    assert got["timestamp"].dt.year().to_list() == [2013, 2013, 2013]


STEAM_REVIEWS = [  # UCSD's steam_reviews.json (as JSON): `user_id` on some lines only, `username` on all
    {"username": "Chaos Syren", "hours": 0.1, "product_id": "725280", "date": "2017-12-17", "text": "t"},
    {"username": "Ariman1", "hours": 13.2, "product_id": "328100", "date": "2017-08-02", "user_id": "76561198059088497"},
    {"username": "freakfantom", "hours": 0.1, "product_id": "725280", "date": "2017-11-12", "text": "t"},
]


def test_steam_reviews_without_a_user_id_on_most_lines_name_the_username_key(tmp_path: Path) -> None:
    """JSON Lines had no header to look in: the warning said 'name another user column if the
    log has one'; it names the key that reads every line, and so does the error when none is left."""
    path = tmp_path / "steam_reviews.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in STEAM_REVIEWS))
    out = tmp_path / "out"
    said = _accepted(path, out)
    assert "2 of 3 rows (67%) have no user id in column 'user_id'" in said
    assert "'username' names the users too: read it as the user with --user-col username" in said, said
    assert _ingest(path, out, "--user-col", "username").exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["rows_accepted"] == 3

    path.write_text("".join(json.dumps({**r, "user_id": ""}) + "\n" for r in STEAM_REVIEWS))
    line = _refusal(path, tmp_path / "out2")
    assert line.endswith("'username' names the same users: read it as the user with --user-col username"), line


def test_one_line_per_user_lists_say_how_to_flatten_them(tmp_path: Path) -> None:
    """LightGCN's train.txt (the user, then its items) and CiteULike's users.dat (the count, then the
    items; the user is the line number), split by single spaces: the error said the separator was
    none of `, ; | tab or one space`. It now names the layout and the awk line that flattens it, and
    that line's output ingests every pair."""
    layouts = {
        "train.txt": ("0 0 1 2 3\n1 4 5\n2 1 6 7 8 9\n", "print $1, $i", {("0", "3"), ("2", "9"), ("1", "4")}),
        "users.dat": ("3 10 11 12\n1 13\n2 10 14\n", "print NR - 1, $i", {("0", "12"), ("1", "13"), ("2", "14")}),
    }
    for name, (text, printed, some_pairs) in layouts.items():
        path = tmp_path / name
        path.write_text(text)
        line = _refusal(path, tmp_path / "out")
        assert "none of" not in line and printed in line, line
        flat = tmp_path / f"{name}.csv"
        command = line.split("e.g. `", 1)[1].split("`", 1)[0]
        subprocess.run(["sh", "-c", command.replace("FILE", str(path)).replace("NEW.csv", str(flat))], check=True)
        out = tmp_path / f"out-{name}"
        assert _ingest(flat, out).exit_code == 0
        got = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")
        pairs = set(zip(got["user_id"].cast(pl.String), got["item_id"].cast(pl.String), strict=True))
        assert some_pairs <= pairs and len(pairs) == sum(len(row.split()) - 1 for row in text.splitlines())


def test_the_missing_id_column_hint_never_offers_an_event_order_or_rating_column(tmp_path: Path) -> None:
    """The hint a user copies: a funnel export (one row per event, no item) was told `--item-col
    event_id` (every event its own item), UCI Online Retail `--item-col InvoiceNo` (a basket) where
    `StockCode` is the item, and `Item;Ratings` `--user-col Ratings`. With neither id column found,
    one error names both (it named the user, and the item only on the next try)."""
    cases = [
        (
            "events.csv",
            "event_id,user_id,session_id,event_timestamp,event_name,traffic_source,product_category,order_id\n"
            "1,u_000001,s_000001_00_0,2026-01-21 18:44:34,session_start,social,,\n",
            [],
            "--item-col NAME",
        ),
        (
            "Online Retail.csv",
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
            "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n",
            [],
            "--user-col CustomerID, and no item column either: --item-col StockCode",  # both at once
        ),
        ("Online Retail.csv", None, ["--user-col", "CustomerID"], "--item-col StockCode"),
        ("ratings.csv", "Item;Ratings\n6428320;1\n", [], "--user-col NAME"),
    ]
    for name, text, args, hint in cases:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        line = _refusal(path, tmp_path / "out", *args)
        assert line.endswith(f"name it with {hint}"), line


ONLINE_RETAIL = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom\n"
    "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom\n"
    '536415,22139,"RETROSPOT TEA SET, CERAMIC",2,12/13/2010 11:52,4.95,13047,United Kingdom\n'
    "536416,22140,CAKE STAND,1,1/4/2011 9:05,4.95,13047,United Kingdom\n"
)


def test_a_time_layout_no_parse_reads_is_named_and_read_with_time_format(tmp_path: Path) -> None:
    """UCI Online Retail's `InvoiceDate` (12/1/2010 8:26, month first): every row was quarantined
    as bad_timestamp with "convert it" and nothing to convert with. The error now names
    --time-format with the layout (the month first, as 12/13/2010 shows), and that reads them."""
    path = tmp_path / "Online Retail.csv"
    path.write_text(ONLINE_RETAIL)
    columns = ["--user-col", "CustomerID", "--item-col", "StockCode", "--time-col", "InvoiceDate"]
    line = _refusal(path, tmp_path / "out", *columns)
    assert "--time-format '%m/%d/%Y %H:%M' reads these (the month first" in line, line
    out = tmp_path / "out"
    assert _ingest(path, out, *columns, "--time-format", "%m/%d/%Y %H:%M").exit_code == 0
    got = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet").sort("source_row")
    assert [f"{t:%Y-%m-%d %H:%M}" for t in got["timestamp"]] == [
        "2010-12-01 08:26", "2010-12-01 08:26", "2010-12-13 11:52", "2011-01-04 09:05"
    ]  # fmt: skip
    assert str(got["timestamp"].dtype.time_zone) == "UTC"  # type: ignore[union-attr]
    refused = _ingest(path, tmp_path / "bad", *columns, "--time-format", "mm/dd/yyyy")
    assert refused.exit_code == 2 and "no strftime date directive" in refused.output, refused.output


# Food.com's RAW_interactions.csv as re-saved by a spreadsheet (a public copy holds it so): dates
# year first with slashes and no zero padding, a rating of 0 (a review without one), a review
# with a quoted line break.
FOOD_COM_RESAVED = (
    "user_id,recipe_id,date,rating,review\n"
    "2001676733,531712,2017/8/18,5,This is my third time making this recipe. It's yummy!\n"
    '2000496795,507226,2015/9/25,0,"The best squash recipe ever,\nbut better with allspice."\n'
    "136997,523426,2016/7/17,5,My husband says this is a keeper.\n"
    "369715,507198,2013/10/15,3,Good and easy to make.\n"
)


def test_a_year_first_slashed_date_is_named_with_the_time_format_that_reads_it(tmp_path: Path) -> None:
    """`2017/8/18` (the year first, slashes): every row was quarantined as bad_timestamp and the
    error said "convert it", naming no --time-format, as only day-and-month-first layouts were
    guessed. The error now names '%Y/%m/%d', and that reads every row (unpadded month included)."""
    path = tmp_path / "RAW_interactions.csv"
    path.write_text(FOOD_COM_RESAVED)
    line = _refusal(path, tmp_path / "out")
    assert "--time-format '%Y/%m/%d' reads these (the year, the month, then the day)" in line, line
    out = tmp_path / "out"
    assert _ingest(path, out, "--time-format", "%Y/%m/%d").exit_code == 0
    got = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet").sort("source_row")
    assert [f"{t:%Y-%m-%d}" for t in got["timestamp"]] == ["2017-08-18", "2015-09-25", "2016-07-17", "2013-10-15"]
    dotted = tmp_path / "dotted.csv"
    dotted.write_text("user_id,item_id,time\n1,10,2017.08.18 14:05:33\n2,11,2018.1.2 9:00:00\n")
    assert "--time-format '%Y.%m.%d %H:%M:%S' reads these" in _refusal(dotted, tmp_path / "dotted-out")


def test_yyyymmdd_integer_dates_read_with_time_format_from_csv_and_parquet(tmp_path: Path) -> None:
    """yyyymmdd integers were read as Unix seconds (August 1970) with a warning to convert them;
    --time-format %Y%m%d reads them as dates, from a CSV (read typed as integers) and from a
    Parquet int64 column alike, and the warning names that option."""
    csv = tmp_path / "log.csv"
    csv.write_text("user_id,item_id,date\n1,10,20150701\n1,11,20150702\n2,10,20150703\n")
    warned = _ingest(csv, tmp_path / "out-1970")
    assert warned.exit_code == 0 and "--time-format %Y%m%d" in warned.output, warned.output
    parquet = tmp_path / "log.parquet"
    pl.read_csv(csv).write_parquet(parquet)
    for source in (csv, parquet):
        out = tmp_path / f"out-{source.suffix[1:]}"
        result = _ingest(source, out, "--time-format", "%Y%m%d")
        assert result.exit_code == 0 and "1970" not in result.output, result.output
        got = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet").sort("source_row")
        assert [f"{t:%Y-%m-%d}" for t in got["timestamp"]] == ["2015-07-01", "2015-07-02", "2015-07-03"]


def test_the_suggested_header_of_buys_with_a_decimal_price_names_no_rating(tmp_path: Path) -> None:
    """A YOOCHOOSE-style buys export (session, time, item, price, quantity) whose price has more than
    two decimals: the price was named by position, as a measurement, but the quantity after it was
    then guessed `rating` (the README: every number after the first one after the ids is named by
    position), so the copied header summed quantities as ratings."""
    path = tmp_path / "yoochoose-buys.dat"
    path.write_text("10,2024-01-12 00:50:00,89,94.09303132921134,2\n13,2024-01-25 00:06:00,45,99.13071820075994,1\n")
    line = _refusal(path, tmp_path / "out")
    assert "--header user_id,timestamp,item_id,column_4,column_5 " in line, line


def test_the_columns_line_says_rows_weigh_their_event_under_event_weights(tmp_path: Path) -> None:
    """Retailrocket's events.csv (no weight column) with --event-weight: the summary's columns line
    said `no weight column (each row counts 1)` while each row weighed its event's weight."""
    path = tmp_path / "events.csv"
    path.write_text(
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n1433224214164,992329,addtocart,248676,\n"
        "1433221955914,992329,transaction,248676,4000\n"
    )
    weighted = _ingest(path, tmp_path / "out", "--event-weight", "view=1", "--event-weight", "addtocart=3",
                       "--event-weight", "transaction=5")  # fmt: skip
    assert weighted.exit_code == 0, weighted.output
    said = " ".join(weighted.output.split())  # the console wraps the line
    assert "event=event, no weight column (each row weighs its event's data.event_weights)" in said, said
    plain = _ingest(path, tmp_path / "plain")
    assert "no weight column (each row counts 1)" in plain.output, plain.output


def test_a_few_quoted_names_among_plain_ones_keep_their_quotes(tmp_path: Path) -> None:
    """Track names with quotes of their own (Last.fm's `"Heroes"`, written `\"\"\"Heroes\"\"\"` in a
    CSV) among plain ones are ids as written, not a file quoted twice: they keep their quotes and
    nothing is said."""
    rows = [("user_000001", "Heroes"), ("user_000001", '"Heroes"'), ("user_000002", "Ashes To Ashes"),
            ("user_000002", "Changes"), ("user_000003", "Life On Mars?")]  # fmt: skip
    path = tmp_path / "plays.csv"
    field = lambda item: '"' + item.replace('"', '""') + '"' if '"' in item else item  # noqa: E731
    path.write_text("user_id,item_id\n" + "".join(f"{u},{field(i)}\n" for u, i in rows))
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    items = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")["item_id"].to_list()
    assert sorted(items) == sorted(i for _, i in rows) and "literal quotes" not in result.output


def test_kuairand_reads_its_millisecond_time_ms_not_its_yyyymmdd_date(tmp_path: Path) -> None:
    """KuaiRand's `log_standard_*.csv` has `date` (yyyymmdd) and `time_ms` (Unix milliseconds).
    Only `date` was a known time name, so every time read as 1970 seconds, and a second view of a
    video the same day was quarantined as a copied row; `time_ms` is the time now."""
    path = tmp_path / "log_standard_4_08_to_4_21_1k.csv"
    path.write_text(
        "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
        "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab\n"
        "0,10,20220411,1900,1649675512388,0,0,0,0,0,0,0,1385,209900,0,0,0,0,1\n"
        "0,10,20220411,2000,1649679112000,1,0,0,0,0,0,1,9000,209900,0,0,0,0,1\n"
        "1,20,20220416,2000,1650111976017,1,0,0,0,0,0,0,0,65400,0,0,0,0,1\n"
    )
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    columns = json.loads((out / "manifest.json").read_text())["batches"][-1]["columns"]
    assert columns["timestamp"] == "time_ms", columns
    said = " ".join(result.output.split())
    assert "1970" not in said and "duplicate" not in said, said
    got = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")
    assert got.height == 3
    first = got["timestamp"].min()
    assert (first.year, first.month, first.day, first.microsecond) == (2022, 4, 11, 388000), first


def test_dunnhumby_household_key_is_the_user_and_a_household_id_is_the_hint(tmp_path: Path) -> None:
    """dunnhumby's Complete Journey `transaction_data.csv` names its user `household_key`; no user
    was found, and the hint offered `STORE_ID` (the one `<name>_ID` left), which would read each
    store as a user. `household_key` is the user now, and a `household_id` is what the hint offers."""
    header = (
        "household_key,BASKET_ID,DAY,PRODUCT_ID,QUANTITY,SALES_VALUE,STORE_ID,RETAIL_DISC,TRANS_TIME,WEEK_NO,"
        "COUPON_DISC,COUPON_MATCH_DISC\n"
    )
    rows = "2375,26984851472,1,1004906,1,1.39,364,-0.6,1631,1,0,0\n2375,26984851472,1,1033142,1,0.82,364,0,1631,1,0,0\n"
    path = tmp_path / "transaction_data.csv"
    path.write_text(header + rows)
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    columns = json.loads((out / "manifest.json").read_text())["batches"][-1]["columns"]
    assert columns["user_id"] == "household_key" and columns["item_id"] == "PRODUCT_ID", columns
    path.write_text(header.replace("household_key", "household_id") + rows)
    result = _ingest(path, tmp_path / "other")
    assert result.exit_code == 2
    assert "--user-col household_id" in result.output and "STORE_ID:" not in result.output, result.output


def test_the_suggested_header_of_msd_play_counts_says_plays_not_rating(tmp_path: Path) -> None:
    """The Million Song Dataset's `train_triplets.txt` (user, song, play count; no header) starts
    with a user's counts of 1 and 2, so the suggested header named them `rating` from the first
    line alone (a rating rule would drop most plays); counts above 10 further down make it `plays`."""
    path = tmp_path / "train_triplets.txt"
    path.write_text(
        "b80344d063b5ccb3212f76538f3d9e43d87dca9e\tSOAKIMP12A8C130995\t1\n"
        "b80344d063b5ccb3212f76538f3d9e43d87dca9e\tSOAPDEY12A81C210A9\t1\n"
        "b80344d063b5ccb3212f76538f3d9e43d87dca9e\tSOBBMDR12A8C13253B\t2\n"
        "85c1f87fea955d09b4bec2e36aee110927aedf9a\tSOBBMDR12A8C13253B\t17\n"
    )
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "--header user_id,item_id,plays " in said and "user_id\\titem_id\\tplays'" in said, said
    out = tmp_path / "out"
    assert _ingest(path, out, "--header", "user_id,item_id,plays").exit_code == 0
    assert sorted(pl.read_parquet(out / "implicit.parquet")["weight"].to_list()) == [1.0, 1.0, 2.0, 17.0]


def test_the_suggested_header_of_check_in_counts_written_as_floats_says_plays(tmp_path: Path) -> None:
    """LibRec's Foursquare check-ins (`USER_894 LOC_5032 1.0`: user, venue, check-in count written
    as a float; no header): a count of `36.0` in the first lines named the column by position
    (`column_3`), as only `36` read as a whole number, so the header the refusal suggested read no
    weight and every count became 1, with nothing said. It is `plays` now, and read as the weight."""
    path = tmp_path / "trainData.txt"
    path.write_text("USER_894 LOC_5032 1.0\nUSER_894 LOC_4398 2.0\nUSER_12 LOC_5032 36.0\nUSER_12 LOC_7 1.0\n")
    said = _refusal(path, tmp_path / "out")
    assert "--header user_id,item_id,plays " in said and "'1i user_id item_id plays'" in said, said
    out = tmp_path / "out"
    assert _ingest(path, out, "--header", "user_id,item_id,plays").exit_code == 0
    assert sorted(pl.read_parquet(out / "implicit.parquet")["weight"].to_list()) == [1.0, 1.0, 2.0, 36.0]
    price = tmp_path / "price.txt"  # a decimal that is no whole number stays named by position
    price.write_text("USER_1 LOC_1 1.5\nUSER_1 LOC_2 94.09\n")
    assert "--header user_id,item_id,column_3 " in _refusal(price, tmp_path / "price-out")


def test_an_exposure_log_read_without_a_weight_names_its_click_flag(tmp_path: Path) -> None:
    """KuaiRand's log lists every video shown, `is_click` 0 on those skipped: read without a
    weight, each shown video counted as an interaction with nothing said. A warning names the flag
    and `--weight-col is_click`, which keeps only the clicked pairs."""
    path = tmp_path / "log_standard_4_22_to_5_08_pure.csv"
    path.write_text(
        "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_rand,tab\n"
        "0,10,20220422,1900,1650625512388,0,0,0,1\n"
        "0,11,20220422,1900,1650625533000,1,0,0,1\n"
        "1,10,20220423,2000,1650715976017,1,1,0,1\n"
    )
    said = _accepted(path, tmp_path / "out")
    assert "every row counts as an interaction, whatever 'is_click', 'is_like' hold" in said, said
    assert "--weight-col is_click (data.columns.weight)" in said and "is_rand" not in said, said
    out = tmp_path / "clicks"
    result = _ingest(path, out, "--weight-col", "is_click")
    assert result.exit_code == 0, result.output
    assert "whatever" not in result.output
    pairs = pl.read_parquet(out / "implicit.parquet")
    assert pairs.height == 2 and pairs["weight"].to_list() == [1.0, 1.0]
    ads = tmp_path / "raw_sample.csv"  # Taobao's display-ad log: `clk` beside `nonclk`
    ads.write_text("user,time_stamp,adgroup_id,pid,nonclk,clk\n581738,1494137644,1,430548_1007,1,0\n")
    result = _ingest(ads, tmp_path / "ads")
    assert "whatever 'clk' holds" in " ".join(result.output.split()), result.output


def test_a_rating_rule_on_kuairec_without_a_weight_names_the_columns_not_read(tmp_path: Path) -> None:
    """KuaiRec's `big_matrix.csv` has no column named as a weight; its positives are read from
    `watch_ratio`. A positive rule without a weight column is refused, and the refusal listed the
    columns read only (user, item, time), not `watch_ratio`, the one to name."""
    path = tmp_path / "big_matrix.csv"
    path.write_text(
        "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n"
        "0,3649,13838,10867,2020-07-05 00:08:23.438,20200705,1593878903.438,1.2733965\n"
        "0,9598,13665,10984,2020-07-05 00:13:41.297,20200705,1593879221.297,2.4411799\n"
        "1,3649,3240,10867,2020-07-05 01:02:11.100,20200705,1593882131.1,0.2981504\n"
    )
    line = _refusal(path, tmp_path / "out", "--min-rating", "2")
    assert "not read: ['play_duration', 'video_duration', 'time', 'date', 'watch_ratio']" in line, line
    out = tmp_path / "out"
    assert _ingest(path, out, "--min-rating", "2", "--weight-col", "watch_ratio").exit_code == 0
    assert pl.read_parquet(out / "implicit.parquet").height == 1


_BEER = (
    "beer/name: Sausa Weizen\nbeer/beerId: 47986\nbeer/brewerId: 10325\nbeer/ABV: 5.00\nbeer/style: Hefeweizen\n"
    "review/appearance: 2.5\nreview/aroma: 2\nreview/palate: 1.5\nreview/taste: 1.5\nreview/overall: {first}\n"
    "review/time: 1234817823\nreview/profileName: stcules\n"
    "review/text: A lot of foam. But a lot.\tIn the smell some banana, and then lactic and tart.\t\n\n"
    "beer/name: Red Moon\nbeer/beerId: 48213\nbeer/brewerId: 10325\nbeer/ABV: 6.20\nbeer/style: English Strong Ale\n"
    "review/appearance: 3\nreview/aroma: 2.5\nreview/palate: 2.5\nreview/taste: 3\nreview/overall: {second}\n"
    "review/time: 1235915097\nreview/profileName: \"Joe\", the brewer: Sr\nreview/text: Dark red color, light beige foam.\n"
)
_FOODS = (
    "product/productId: B001E4KFG0\nreview/userId: A3SGXH7AUHU8GW\nreview/profileName: delmartian\n"
    "review/helpfulness: 1/1\nreview/score: 5.0\nreview/time: 1303862400\nreview/summary: Good Quality Dog Food\n"
    "review/text: I have bought several of the Vitality canned dog food products.\n\n"
    "product/productId: B00813GRG4\nreview/userId: A1D87F6ZCVE5NK\nreview/profileName: dll pa\n"
    "review/helpfulness: 0/0\nreview/score: 1.0\nreview/time: 1346976000\nreview/summary: Not as Advertised\n"
    "review/text: Product arrived labeled as Jumbo Salted Peanuts...\n"
)


def test_snap_multi_line_review_records_say_how_to_flatten_them(tmp_path: Path) -> None:
    """BeerAdvocate, RateBeer and Amazon fine foods (SNAP) write one `key: value` line per field and
    a blank line after each review: the first line did not split, and the error said to force a
    reader with --format, which none does. It now names the layout and the awk line that writes one
    user,item,rating,time line per review from the keys the file shows, and that line's output ingests."""
    layouts = {
        "beeradvocate.txt": (
            _BEER.format(first="1.5", second="3"),
            {("stcules", "47986", 1.5), ('"Joe", the brewer: Sr', "48213", 3.0)},  # quotes, comma, ': ' kept
        ),
        "Ratebeer.txt": (_BEER.format(first="13/20", second="8/20"), {("stcules", "47986", 13.0)}),
        "foods.txt": (_FOODS, {("A3SGXH7AUHU8GW", "B001E4KFG0", 5.0), ("A1D87F6ZCVE5NK", "B00813GRG4", 1.0)}),
        "beeradvocate.txt.gz": (_BEER.format(first="1.5", second="3"), {("stcules", "47986", 1.5)}),  # as shipped
    }
    for name, (text, some) in layouts.items():
        path = tmp_path / name
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
        line = _refusal(path, tmp_path / "out")
        assert "--format" not in line and "multi-line review records" in line, line
        flat = tmp_path / f"{name}.csv"
        command = line.split("e.g. `", 1)[1].split("`, and ingest", 1)[0]
        subprocess.run(["sh", "-c", command.replace("FILE", str(path)).replace("NEW.csv", str(flat))], check=True)
        out = tmp_path / f"out-{name}"
        result = _ingest(flat, out)
        assert result.exit_code == 0, result.output
        got = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")
        rows = set(zip(got["user_id"].cast(pl.String), got["item_id"].cast(pl.String), got["weight"], strict=True))
        assert some <= rows and got.height == 2, rows
        assert got["timestamp"].dt.year().min() >= 2009


def test_a_headerless_user_item_time_file_reads_its_unix_times_as_times_not_weights(tmp_path: Path) -> None:
    """Behance's `Behance_appreciate_1M` (`user item time`, single spaces, no header) was read by
    position as user, item, rating: every appreciation weighed its Unix time (~1.3e9). A third field
    spelled as a Unix time in seconds or milliseconds is the time; a rating there stays the weight."""
    path = tmp_path / "Behance_appreciate_1M"
    path.write_text("276633 01398047 1299355262\n276633 01598823 1299355300\n12 01398047 1300000000\n")
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    assert "time=column 3, no weight column" in " ".join(result.output.split()), result.output
    got = pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")
    assert got["weight"].to_list() == [1.0, 1.0, 1.0]
    assert got["timestamp"].dt.year().to_list() == [2011, 2011, 2011]
    assert got["item_id"].cast(pl.String).to_list()[:2] == ["01398047", "01598823"]  # leading zeros kept
    rated = tmp_path / "ydata-ymusic-rating-study-v1_0-train.txt"  # Yahoo! R3: user, song, rating
    rated.write_text("1\t14\t5\n1\t35\t1\n2\t14\t3\n")
    out = tmp_path / "rated"
    assert _ingest(rated, out).exit_code == 0
    assert pl.read_parquet(out / "interactions" / "batch=000001" / "part-0.parquet")["weight"].to_list() == [5.0, 1.0, 3.0]


def test_a_session_or_order_id_is_never_taken_as_the_one_remaining_item_column(tmp_path: Path) -> None:
    """Trivago's `train.csv` (user_id, session_id, ..., reference: the item on item actions) has no
    item column by name, and `session_id`, the one `<name>_id` left, was read as the item without a
    word: every session an item. Now no item is found, and the error asks for one."""
    path = tmp_path / "train.csv"
    path.write_text(
        "user_id,session_id,timestamp,step,action_type,reference,platform,city,device,current_filters,impressions,prices\n"
        '00RL8Z82B2Z1,aff3928535f48,1541037460,1,search for poi,Newtown,AU,"Sydney, Australia",mobile,,,\n'
        '00RL8Z82B2Z1,aff3928535f48,1541037522,2,interaction item image,666856,AU,"Sydney, Australia",mobile,,,\n'
    )
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: no item column found"), result.output
    result = _ingest(path, tmp_path / "out", "--item-col", "reference")
    assert result.exit_code == 0, result.output
    orders = tmp_path / "orders.csv"  # an order id beside the user is no item either
    orders.write_text("user_id,order_id,rating\n1,10,5\n2,11,4\n")
    result = _ingest(orders, tmp_path / "orders")
    assert result.exit_code == 2 and "no item column found" in result.output, result.output


def test_a_rating_id_is_never_taken_as_the_one_remaining_user_column(tmp_path: Path) -> None:
    """Douban's moviedata-10m `ratings.csv` (RATING_ID, USER_MD5, MOVIE_ID, RATING, RATING_TIME):
    `RATING_ID`, the one `<name>_ID` left, was read as the user without a word, every rating its own
    user. Now no user is guessed and the hint names USER_MD5; an order id stays a basket's user."""
    path = tmp_path / "ratings.csv"
    path.write_text(
        "RATING_ID,USER_MD5,MOVIE_ID,RATING,RATING_TIME\n"
        "1359352573,0ab7e3efacd56983f16503572d2b9915,5113101,2,2018-09-05 19:42:07\n"
        "1598245094,84dfd3f91dd85ea105bc74a4f0d7a067,5113101,1,2019-07-09 14:52:07\n"
    )
    line = _refusal(path, tmp_path / "out")
    assert line.startswith("error: no user column found") and line.endswith("--user-col USER_MD5"), line
    baskets = tmp_path / "order_products__prior.csv"
    baskets.write_text("order_id,product_id,add_to_cart_order,reordered\n2,33120,1,1\n2,28985,2,1\n")
    result = _ingest(baskets, tmp_path / "baskets")
    assert result.exit_code == 0 and "user=order_id" in result.output, result.output


def test_a_million_playlist_slice_says_how_to_write_one_line_per_playlist_and_track(tmp_path: Path) -> None:
    """Spotify's Million Playlist Dataset slices are one pretty-printed JSON document; after the
    `jq -c .` the first refusal gives, the hint was `--user-col info --item-col playlists`. Every key
    holding an object or a list now names the jq line that writes one line per playlist and track."""
    document = {
        "info": {"generated_on": "2017-12-03 08:41:42.057563", "slice": "0-999", "version": "v1"},
        "playlists": [
            {
                "name": "Throwbacks", "collaborative": "false", "pid": 0, "modified_at": 1493424000,
                "tracks": [
                    {"pos": 0, "artist_name": "Missy Elliott", "track_uri": "spotify:track:0UaMYEvWZi0ZqiDOoHU3YI",
                     "duration_ms": 226863, "album_name": "The Cookbook"},
                ],
            }
        ],
    }  # fmt: skip
    path = tmp_path / "mpd.slice.0-999.json"
    path.write_text(json.dumps(document, indent=4))
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2 and "`jq -c . FILE > NEW.jsonl`" in result.output, result.output
    compact = tmp_path / "mpd.jsonl"
    compact.write_text(json.dumps(document) + "\n")  # what `jq -c .` writes
    line = _refusal(compact, tmp_path / "out")
    assert "--user-col" not in line and "every key of its first lines holds a nested object or list" in line, line
    assert "`jq -c '.playlists[] | .pid as $u | .tracks[] | {user_id: $u, item_id: .track_uri}' FILE > NEW.jsonl`" in line


def test_the_hints_for_a_session_list_log_never_offer_its_item_list_as_the_user(tmp_path: Path) -> None:
    """Amazon-M2's (KDD Cup 2023) `sessions_train.csv`, `prev_items,next_item,locale`: no user, and
    the hint offered the item list `prev_items` as the user and as the item; it offers no user by
    name now, and `next_item` as the item."""
    path = tmp_path / "sessions_train.csv"
    path.write_text(
        "prev_items,next_item,locale\n"
        "\"['B09W9FND7K' 'B09JSPLN1M']\",B09M7GY217,DE\n"
        "\"['B076THCGSG' 'B007MO8IME' 'B08MF65MLV']\",B001B4TKA0,DE\n"
    )
    line = _refusal(path, tmp_path / "out")
    assert "--user-col NAME" in line and line.endswith("--item-col next_item"), line


def test_the_suggested_header_of_twitch_names_no_streamer_an_event(tmp_path: Path) -> None:
    """Twitch's `100k_a.csv` (user, stream id, streamer, start, stop; no header): a lower-case word
    beside integer ids is named `event` (Taobao's `pv`), so the streamer names were offered as
    events. A word column with more than 20 values in the first lines is named by position."""
    streamers = ["mithrain", "alptv", "wtcn", "jrokezftw", "berkriptepe", *(f"streamer{chr(97 + n)}" for n in range(25))]
    path = tmp_path / "100k_a.csv"
    path.write_text("".join(f"1,{33842865744 + 7 * n},{name},{154 + n},{156 + n}\n" for n, name in enumerate(streamers)))
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "--header user_id,item_id,column_3,column_4,column_5 " in said, said


def test_kuairec_rows_with_an_empty_time_are_counted_and_named(tmp_path: Path) -> None:
    """KuaiRec's `big_matrix.csv` leaves `time`, `date` and `timestamp` empty on some rows. Such a
    row is valid and kept with no time, and was counted nowhere: a temporal split then refused the
    data with no word at ingest. Now the summary table, the manifest and a warning count them and
    say what a temporal split does with them."""
    header = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n"
    timed = (
        "0,3649,13838,10867,2020-07-05 00:08:23.438,20200705,1593878903.438,1.2733965\n"
        "1,9598,3240,10984,2020-07-05 01:02:11.100,20200705,1593882131.1,0.2981504\n"
    )
    path = tmp_path / "big_matrix.csv"
    path.write_text(header + timed + "1,3649,5000,10867,,,,0.4602004\n")  # a pair with no timed row
    out = tmp_path / "out"
    said = _accepted(path, out)
    assert "without a time │ 1" in said, said
    assert (
        "warning: 1 of 3 rows (33.3%) has an empty time in column 'timestamp' and was accepted without one "
        "(rows_without_time in the manifest); 1 of 3 interactions (user, item pairs) has no time at all, so "
        "temporal splits (temporal, rolling, leave_last_n) refuse this data" in said
    ), said
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["batches"][-1]["rows_without_time"] == 1
    with pytest.raises(DataError, match="1 of 3 rows have none"):  # what the warning said
        split_data(load_processed(out), SplitConfig(protocol="temporal"))
    path.write_text(header + timed + "0,3649,5000,10867,,,,0.4602004\n")  # its pair has a timed row
    said = _accepted(path, out)
    assert "every interaction kept has a time all the same" in said, said
    assert split_data(load_processed(out), SplitConfig(protocol="temporal")).meta["rows"]["train"] == 2
    path.write_text(header + timed)
    result = _ingest(path, out)
    assert "without a time" not in result.output and "empty time" not in result.output, result.output
    assert "rows_without_time" not in json.loads((out / "manifest.json").read_text())["batches"][-1]


def test_a_column_named_like_a_time_but_not_read_is_named_without_duplicates(tmp_path: Path) -> None:
    """Douban's `RATING_TIME`, Ta-Feng's `TRANSACTION_DT`, dunnhumby's `DAY`: no automatic pick
    reads them, so the log had no time, and the column was named only when duplicates were
    quarantined. Now a warning names it, and the option that reads it, whenever no time is read."""
    douban = tmp_path / "douban.csv"
    douban.write_text("USER_MD5,MOVIE_ID,RATING,RATING_TIME\nab12,5113101,2,2018-09-05 19:42:07\ncd34,5113101,1,2019-07-09 14:52:07\n")
    dunnhumby = tmp_path / "transaction_data.csv"
    dunnhumby.write_text(
        "household_key,BASKET_ID,DAY,PRODUCT_ID,QUANTITY,SALES_VALUE,STORE_ID,RETAIL_DISC,TRANS_TIME,WEEK_NO\n"
        "2375,26984851472,1,1004906,1,1.39,364,-0.6,1631,1\n2375,26984851472,1,1033142,1,0.82,364,0,1631,1\n"
    )
    cases = (
        (douban, "'RATING_TIME' is named like a time but not read; if it holds times, read it with --time-col RATING_TIME"),
        (dunnhumby, "'DAY', 'TRANS_TIME' are named like times but not read; if one holds times, read it with --time-col NAME"),
    )
    for path, named in cases:
        said = _accepted(path, tmp_path / path.stem, "--user-col", "USER_MD5" if path is douban else "household_key")
        assert f"warning: no time column is read, so temporal splits (temporal, rolling, leave_last_n) refuse this data: {named}" in said, said
    result = _ingest(douban, tmp_path / "timed", "--user-col", "USER_MD5", "--time-col", "RATING_TIME")
    assert result.exit_code == 0 and "no time column is read" not in result.output, result.output


def test_a_column_named_t_not_read_is_named_as_a_time(tmp_path: Path) -> None:
    """A compact export `u,i,t,r` (a public library-loans log: user, item, float Unix time, an empty
    rating): read with --user-col u --item-col i, its times were dropped with nothing said (the
    columns line does not mention time). The warning now names `t` and --time-col t."""
    path = tmp_path / "interactions_train.csv"
    path.write_text("u,i,t,r\n142,1964,1679585406.0,\n362,3705,1706871659.0,\n142,3705,1706871700.0,\n")
    said = _accepted(path, tmp_path / "out", "--user-col", "u", "--item-col", "i")
    assert "'t' is named like a time but not read; if it holds times, read it with --time-col t" in said, said
    timed = _ingest(path, tmp_path / "timed", "--user-col", "u", "--item-col", "i", "--time-col", "t")
    assert timed.exit_code == 0 and "no time column is read" not in timed.output, timed.output


def test_jodie_decimal_times_get_a_1970_warning_worded_for_them(tmp_path: Path) -> None:
    """JODIE's `reddit.csv` / `wikipedia.csv` time each event in seconds since the log began,
    written as decimals (`0.0`, `36.0`): all in 1970, and the warning spoke of integer times,
    yyyymmdd dates and day numbers. It names decimal times and seconds from the log's start now."""
    path = tmp_path / "reddit.csv"
    path.write_text(
        "user_id,item_id,timestamp,state_label,comma_separated_list_of_features\n"
        "0,0,0.0,0,-0.319991,-0.435701,0.106784\n1,1,6.0,0,-0.319991,-0.435701,0.106784\n"
        "0,1,36.0,0,-0.319991,-0.435701,0.106784\n"
    )
    said = _accepted(path, tmp_path / "out")
    assert "integer times" not in said, said
    assert (
        "warning: every timestamp ('timestamp') is in 1970 (latest 1970-01-01 00:00:36): decimal times are read as "
        "Unix seconds (milliseconds from 1e11), so seconds counted from the log's start (JODIE's 0.0, 36.0)" in said
    ), said


@pytest.mark.parametrize(
    ("time", "rating", "unit"),
    [
        (lambda r: 1_300_000_000 + r * 3600, lambda r: r % 5 + 1, "seconds"),
        (lambda r: 1_300_000_000_000 + r * 3_600_000, lambda r: r % 5 + 1, "milliseconds"),
        (lambda r: 1_300_000_000 + r * 3600, lambda r: f"{r % 9 / 2 + 1:.1f}", "seconds"),  # half stars: decimal 'times'
    ],
    ids=["seconds", "milliseconds", "half-stars"],
)
def test_a_headerless_files_time_before_its_rating_is_named_as_swapped(tmp_path: Path, time, rating, unit) -> None:
    """A headerless export whose fields are `user,item,unix_time,rating` (time third) is read by
    position as user, item, rating, timestamp: the Unix times became the weights and the ratings
    1970 times, and the only warning was the generic 1970 one (yyyymmdd dates? decimal times
    counted from the log's start?), which did not say the two fields look swapped. It now names
    both and the --header that reads the file right; the file is still ingested as read."""
    path = tmp_path / "ratings.csv"
    path.write_text("".join(f"{r % 7},{r % 11},{time(r)},{rating(r)}\n" for r in range(40)))
    said = _accepted(path, tmp_path / "out")
    assert (
        "is in 1970 (latest 1970-01-01 00:00:05) while the weights (column 3) are Unix times in "
        f"{unit} (the largest 1.3e+" in said
    ), said
    assert "look like user, item, timestamp, rating" in said and "--header user_id,item_id,timestamp,rating" in said, said
    assert "yyyymmdd" not in said and "JODIE" not in said, said
    out = tmp_path / "named"
    named = _accepted(path, out, "--header", "user_id,item_id,timestamp,rating")
    assert "warning:" not in named, named
    interactions = load_processed(out).interactions
    assert interactions["weight"].max() <= 5.0 and interactions["timestamp"].min().year == 2011


def test_a_headerless_u_data_with_yyyymmdd_dates_is_not_called_swapped(tmp_path: Path) -> None:
    """The swap is named only where the third field holds Unix times: u.data's layout with yyyymmdd
    dates (ratings third, as read) keeps the 1970 warning's yyyymmdd advice, and a file whose
    header names the columns (`rating` holding times by the writer's choice) gets no swap hint."""
    dates = tmp_path / "u.data"
    dates.write_text("".join(f"{r % 7}\t{r % 11}\t{r % 5 + 1}\t{20150701 + r % 28}\n" for r in range(40)))
    said = _accepted(dates, tmp_path / "out")
    assert "yyyymmdd" in said and "swapped" not in said, said
    headed = tmp_path / "headed.csv"
    headed.write_text("user_id,item_id,rating,timestamp\n" + "".join(f"{r % 7},{r % 11},{1_300_000_000 + r},{r % 5 + 1}\n" for r in range(40)))
    said = _accepted(headed, tmp_path / "headed")
    assert "is in 1970" in said and "swapped" not in said, said



def test_a_headerless_files_1970_times_are_left_out_with_a_header_not_a_column_option(tmp_path: Path) -> None:
    """A headerless file whose times land in 1970 (yyyymmdd dates read by position) was told to leave
    them out with --time-col / data.columns.time, which such a file refuses (its columns have no
    names). It is told the header that leaves the time field unread; that header reads it without
    times and without the warning. A headed file keeps the column options' advice."""
    dates = tmp_path / "u.data"
    dates.write_text("".join(f"{r % 7}\t{r % 11}\t{r % 5 + 1}\t{20150701 + r % 28}\n" for r in range(40)))
    said = _accepted(dates, tmp_path / "out")
    assert "--header user_id,item_id,rating,unused" in said and "--time-col" not in said, said
    named = _accepted(dates, tmp_path / "named", "--header", "user_id,item_id,rating,unused")
    assert "is in 1970" not in named and "columns: user=user_id, item=item_id, weight=rating " in named, named
    headed = tmp_path / "headed.csv"
    headed.write_text("user_id,item_id,rating,timestamp\n" + "".join(f"{r % 7},{r % 11},{r % 5 + 1},{20150701 + r}\n" for r in range(40)))
    said = _accepted(headed, tmp_path / "headed")
    assert "(--time-col / data.columns.time)" in said, said

def _cut_gzip(path: Path, text: str, keep: float = 0.5) -> None:
    """`text` gzip'd into `path`, cut after `keep` of its compressed bytes (an interrupted download)."""
    data = gzip.compress(text.encode())
    path.write_bytes(data[: int(len(data) * keep)])


_CSV = "user_id,item_id,rating,timestamp\n" + "".join(f"{r * 7919 % 1013},{r * 104729 % 877},{r % 5 + 1},{1_300_000_000 + r * 37}\n" for r in range(20000))
_JSONL = "".join(json.dumps({"user_id": r * 7919 % 1013, "item_id": r % 877, "rating": r % 5 + 1}) + "\n" for r in range(8000))


# The read paths a faulty .gz can stop: (file name, its text, ingest's options).
_GZIP_READS = pytest.mark.parametrize(
    ("name", "text", "args"),
    [
        ("ratings.csv.gz", _CSV[:200], ()),  # inside the first 64 KB: the sniff's read
        ("ratings.csv.gz", _CSV, ()),  # further on: polars' read
        ("u.data.gz", _CSV.split("\n", 1)[1].replace(",", "\t"), ()),  # headerless, read by position
        ("events.jsonl.gz", _JSONL, ()),  # the JSON Lines key search read it past the head
        ("ratings.csv.gz", _CSV, ("--encoding", "latin-1")),  # the copy as UTF-8
        ("day/2024-01-02.csv.gz", _CSV, ()),  # one file of a directory, beside a whole one
    ],
    ids=["head", "csv", "positional", "jsonl", "encoding", "directory"],
)


def _gzip_source(path: Path, name: str) -> Path:
    """What ingest is given for the faulty `path`: the file, or for the directory case its folder,
    with a whole .gz beside it."""
    if not name.startswith("day/"):
        return path
    (path.parent / "2024-01-01.csv.gz").write_bytes(gzip.compress(_CSV[:2000].encode()))
    return path.parent


@_GZIP_READS
def test_a_truncated_gzip_file_is_named_as_cut_short_with_what_to_do(tmp_path: Path, name: str, text: str, args) -> None:
    """A .gz cut short (an interrupted download or copy) stopped ingest with "cannot read
    (unexpected end of file)" or "cannot read file (EOFError: Compressed file ended before the
    end-of-stream marker was reached)", and from the JSON Lines key search and the --encoding copy
    with "unexpected EOFError ...: this is a bug". Each now says the file ends early, why, and to
    fetch or copy it again, naming the file (in a directory, the one that is cut)."""
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    _cut_gzip(path, text)
    line = _refusal(_gzip_source(path, name), tmp_path / "out", *args)
    assert line.startswith(f"error: {path}: its gzip stream ends early: the file is cut short, as an interrupted download or copy"), line
    assert "fetch or copy it again (`recsys data fetch NAME` for the built-in sets)" in line and "bug" not in line, line


def _damaged_gzip(path: Path, text: str, how: str) -> None:
    """`text` gzip'd into `path` with bytes changed in the middle of its stream, not cut: "block"
    makes the deflate block that starts halfway an invalid one (zlib: "invalid block type"; the
    first half is flushed to a byte boundary, so the byte is the block's header whatever zlib's
    version), "crc" a digit halfway that still decodes, which only the stream's checksum catches."""
    body = text.encode()
    half = next(i for i in range(len(body) // 2, len(body)) if body[i : i + 1].isdigit())
    data = body[:half] + (b"1" if body[half:half + 1] == b"0" else b"0") + body[half + 1 :] if how == "crc" else body
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = deflate.compress(data[: len(data) // 2]) + deflate.flush(zlib.Z_FULL_FLUSH)
    rest = deflate.compress(data[len(data) // 2 :]) + deflate.flush()
    if how == "block":
        rest = b"\xff" + rest[1:]  # BFINAL 1, BTYPE 11: a reserved block type
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    path.write_bytes(header + first + rest + struct.pack("<II", zlib.crc32(body), len(body) & 0xFFFFFFFF))


@pytest.mark.parametrize("how", ["block", "crc"])
@_GZIP_READS
def test_a_gzip_file_damaged_inside_its_stream_is_named_as_damaged_with_what_to_do(
    tmp_path: Path, name: str, text: str, args, how: str
) -> None:
    """A .gz whose bytes were changed in the middle (a faulty download, copy or disk), not cut short,
    stopped ingest with "cannot read (corrupt gzip stream does not have a matching checksum)",
    "cannot read file (BadGzipFile: CRC check failed ...)", or, from the JSON Lines key search and
    the --encoding copy, "CRC check failed ...: check the path and its permissions". Each now says
    the stream is damaged, that `gzip -t` confirms it, and to fetch or copy it again, naming the
    file (in a directory, the damaged one). `gzip -t` does report it."""
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    _damaged_gzip(path, text, how)
    assert subprocess.run(["gzip", "-t", str(path)], capture_output=True).returncode != 0
    line = _refusal(_gzip_source(path, name), tmp_path / "out", *args)
    assert line.startswith(f"error: {path}: its gzip stream is damaged ("), line
    assert f"(`gzip -t {path}` says so too); fetch or copy it again (`recsys data fetch NAME` for the built-in sets)" in line, line
    assert ("invalid block type" if how == "block" else "CRC check failed") in line and "permissions" not in line, line
