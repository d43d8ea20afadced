"""`recsys ingest` on small replicas of the published layouts of well-known public interaction logs.

Each replica is written here by a generator (never downloaded) in the shape its documentation gives:
MovieLens 100K `u.data`, 1M `ratings.dat`, ml-latest `ratings.csv`, Amazon reviews 2018 (5-core
JSON) and 2023 (JSON Lines and CSV), Last.fm 1K and 360K, Book-Crossing, Goodreads, Retailrocket,
Yelp, Steam-style JSON Lines, Netflix prize, RecBole `.inter`, Parquet, gzip'd CSV and a directory of
monthly files, with the dirt such files carry (BOM, CRLF, quotes, empty values, duplicates, ids with
leading zeros, ms / s / ISO times, trailing blank lines). Each is ingested through the CLI as a user
would (no column map unless the README says one is needed) and checked against what the generator
knows: the columns found, every row counted (rows_in == accepted + quarantined, with the reasons),
ids kept as written, timestamps in the right unit, weights kept. Layouts the readers cannot take
must fail with one `error:` line that says what to do.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import random
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.cli import app

runner = CliRunner()
T0 = 1_200_000_000  # 2008-01-10, seconds


@dataclass
class Layout:
    """A written replica and what ingest must make of it. `rows`: the (user, item, weight, unix
    seconds or None) of every data row as the generator meant it, in file order."""

    path: Path
    mapping: dict[str, str]
    rows: list[tuple[str, str, float | None, float | None]]
    args: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    weighted: bool = True


def _draws(seed: int, n: int, users: list[str], items: list[str], weights: list[float]) -> list[tuple]:
    """n distinct (user, item, weight, seconds) rows: distinct, so exact duplicates are only the
    ones a layout adds on purpose."""
    rng = random.Random(seed)
    seen: set[tuple[str, str, float]] = set()
    rows = []
    while len(rows) < n:
        row = (rng.choice(users), rng.choice(items), rng.choice(weights))
        if row[:2] in {r[:2] for r in seen}:
            continue
        seen.add(row)
        rows.append((*row, float(T0 + rng.randrange(300_000_000))))
    return rows


USERS = [str(u) for u in range(1, 41)]
ITEMS = [str(i) for i in range(1, 61)]
STARS = [1.0, 2.0, 3.0, 4.0, 5.0]
# ASIN / ISBN-10 style: leading zeros and a trailing X must survive as written.
ASINS = [
    "0000013714",
    "0005080789",
    "000100039X",
    "B00002N62Y",
    "B0000C321X",
    *[f"B{i:09d}" for i in range(40)],
]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


POSITIONAL = {"user_id": "field_0", "item_id": "field_1", "weight": "field_2", "timestamp": "field_3"}


def _headerless(tmp: Path, name: str, separator: str, seed: int) -> Layout:
    """MovieLens' headerless user, item, rating, timestamp lines."""
    rows = _draws(seed, 300, USERS, ITEMS, STARS)
    path = tmp / name
    path.write_text("".join(separator.join((u, i, _num(w), _num(t))) + "\n" for u, i, w, t in rows))
    return Layout(path, POSITIONAL, rows)


def ml100k(tmp: Path) -> Layout:
    return _headerless(tmp, "u.data", "\t", 1)


def ml1m(tmp: Path) -> Layout:
    return _headerless(tmp, "ratings.dat", "::", 2)


def filmtrust(tmp: Path) -> Layout:
    """LibRec's FilmTrust / Epinions ratings.txt: `user item rating`, one space, no header."""
    rows = [(u, i, w, None) for u, i, w, _ in _draws(20, 300, USERS, ITEMS, [0.5, 1.0, 2.5, 4.0])]
    path = tmp / "ratings.txt"
    path.write_text("".join(f"{u} {i} {w}\n" for u, i, w, _ in rows))
    return Layout(path, {k: v for k, v in POSITIONAL.items() if k != "timestamp"}, rows)


def ml_latest(tmp: Path) -> Layout:
    rows = _draws(3, 300, USERS, ITEMS, [0.5, 1.0, 2.5, 3.5, 4.0, 5.0])
    path = tmp / "ratings.csv"
    path.write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{w},{_num(t)}\n" for u, i, w, t in rows)
    )
    return Layout(
        path, {"user_id": "userId", "item_id": "movieId", "weight": "rating", "timestamp": "timestamp"}, rows
    )


def amazon_2018_json(tmp: Path) -> Layout:
    """5-core reviews: one JSON object a line, extra keys with lists and text (quotes, newlines)."""
    reviewers = [f"A{n:02d}SUAM1J3GNN3B" for n in range(30)]
    rows = _draws(4, 300, reviewers, ASINS, STARS)
    lines = [
        json.dumps(
            {
                "reviewerID": u,
                "asin": i,
                "reviewerName": 'J. "Mac" McDonald',
                "helpful": [2, 3],
                "reviewText": 'I bought this for my husband,\nwho "loves" it.',
                "overall": w,
                "summary": "Heavenly",
                "unixReviewTime": int(t),
                "reviewTime": "09 13, 2009",
            }
        )
        for u, i, w, t in rows
    ]
    path = tmp / "Books_5.json"
    path.write_text("\n".join(lines) + "\n")
    mapping = {"user_id": "reviewerID", "item_id": "asin", "weight": "overall", "timestamp": "unixReviewTime"}
    return Layout(path, mapping, rows)


def amazon_2023_jsonl(tmp: Path) -> Layout:
    """2023 reviews: user_id, parent_asin (the item) beside the variant's asin, ms timestamps."""
    users = [f"AGKHLEW2SOWHNMFQIJGBECAF7INQ{n:02d}" for n in range(30)]
    rows = _draws(5, 300, users, ASINS, STARS)
    lines = [
        json.dumps(
            {
                "rating": w,
                "title": "Such a lovely scent",
                "text": "This spray is really nice.",
                "images": [],
                "asin": i + "V",
                "parent_asin": i,
                "user_id": u,
                "timestamp": int(t) * 1000 + 123,
                "helpful_vote": 0,
                "verified_purchase": True,
            }
        )
        for u, i, w, t in rows
    ]
    rows = [(u, i, w, t + 0.123) for u, i, w, t in rows]
    path = tmp / "All_Beauty.jsonl"
    path.write_text("\n".join(lines) + "\n")
    mapping = {"user_id": "user_id", "item_id": "parent_asin", "weight": "rating", "timestamp": "timestamp"}
    return Layout(path, mapping, rows)


def amazon_2023_csv(tmp: Path) -> Layout:
    users = [f"AE{n:02d}GKHLEW2SOWHN" for n in range(30)]
    rows = _draws(6, 300, users, ASINS, STARS)
    path = tmp / "All_Beauty.train.csv"
    path.write_text(
        "user_id,parent_asin,rating,timestamp\n"
        + "".join(f"{u},{i},{w},{int(t) * 1000}\n" for u, i, w, t in rows)
    )
    mapping = {"user_id": "user_id", "item_id": "parent_asin", "weight": "rating", "timestamp": "timestamp"}
    return Layout(path, mapping, rows)


LASTFM_1K_HEADER = "user_id\ttimestamp\tartist_id\tartist_name\ttrack_id\ttrack_name\n"
ARTISTS = [
    '"Weird Al" Yankovic',
    'The "Heroes"',
    "Guns N' Roses",
    "Sigur Rós",
    "AC/DC",
    "Björk",
    *[f"Artist {n}" for n in range(30)],
]


def _lastfm_1k_lines(rows: list[tuple]) -> str:
    """userid, ISO time with Z, artist mbid (often empty), artist name, track mbid, track name."""
    return "".join(
        f'{u}\t{datetime.fromtimestamp(t, UTC):%Y-%m-%dT%H:%M:%SZ}\t\t{i}\t\t"Heroes" (live)\n'
        for u, i, _, t in rows
    )


def lastfm_1k(tmp: Path) -> Layout:
    """With the header line the README asks for (the published file has none). Artist names start
    with a quote that closes mid-field, which a quoted TSV read refuses; the artist mbid is often
    empty, so the user names the artist column."""
    rows = _draws(7, 300, [f"user_{n:06d}" for n in range(1, 31)], ARTISTS, [1.0])
    path = tmp / "lastfm-1k.tsv"
    path.write_text(LASTFM_1K_HEADER + _lastfm_1k_lines(rows))
    mapping = {"user_id": "user_id", "item_id": "artist_name", "timestamp": "timestamp"}
    return Layout(path, mapping, rows, args=["--item-col", "artist_name"], weighted=False)


def lastfm_360k(tmp: Path) -> Layout:
    users = [f"{n:040x}" for n in range(30)]
    rows = [(u, i, w, None) for u, i, w, _ in _draws(8, 300, users, ARTISTS, [1.0, 17.0, 2137.0, 46.0])]
    path = tmp / "usersha1-artmbid-artname-plays.tsv"
    body = "".join(
        f"{u}\t{'' if n % 5 == 0 else '3bd73256-3905-4f3a-97e2-8b341527f805'}\t{i}\t{_num(w)}\n"
        for n, (u, i, w, _) in enumerate(rows)
    )
    path.write_text("user_id\tartist_mbid\tartist_name\tplays\n" + body)
    mapping = {"user_id": "user_id", "item_id": "artist_name", "weight": "plays"}
    return Layout(path, mapping, rows, args=["--item-col", "artist_name"])


def book_crossing(tmp: Path) -> Layout:
    """BX-Book-Ratings.csv (converted to UTF-8, as the README asks): `;`-separated, every field
    quoted, CRLF, ISBNs with letters and leading zeros, rating 0 = an implicit interaction."""
    isbns = ["034545104X", "0155061224", "0446520802", "052165615X", "3257224281", "0002005018", "B0000AX7X"]
    rows = [
        (u, i, w, None)
        for u, i, w, _ in _draws(9, 200, [str(n) for n in range(1, 41)], isbns, [0.0, 5.0, 10.0])
    ]
    path = tmp / "BX-Book-Ratings.csv"
    text = '"User-ID";"ISBN";"Book-Rating"\r\n' + "".join(
        f'"{u}";"{i}";"{_num(w)}"\r\n' for u, i, w, _ in rows
    )
    path.write_bytes(text.encode())
    return Layout(path, {"user_id": "User-ID", "item_id": "ISBN", "weight": "Book-Rating"}, rows)


def goodreads(tmp: Path) -> Layout:
    rows = [(u, i, w, None) for u, i, w, _ in _draws(10, 300, USERS, ITEMS, [0.0, 3.0, 5.0])]
    path = tmp / "goodreads_interactions.csv"
    path.write_text(
        "user_id,book_id,is_read,rating,is_reviewed\n"
        + "".join(f"{u},{i},1,{_num(w)},0\n" for u, i, w, _ in rows)
    )
    return Layout(path, {"user_id": "user_id", "item_id": "book_id", "weight": "rating"}, rows)


def goodreads_json(tmp: Path) -> Layout:
    """goodreads_interactions_dedup.json.gz: hex user ids, `book_id` beside another id key
    (`review_id`, so book_id is not the one remaining id column) and `date_added` in Twitter's
    layout with the reader's offset (`Mon Aug 01 13:41:57 -0700 2016`)."""
    users = [f"8842281e1d1347389f2ab93d60773d{n:02x}" for n in range(30)]
    rows = _draws(16, 300, users, ITEMS, [0.0, 3.0, 5.0])
    zones = [timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30)), UTC]

    def added(n: int, t: float) -> str:
        return f"{datetime.fromtimestamp(t, zones[n % 3]):%a %b %d %H:%M:%S %z %Y}"

    lines = [
        json.dumps(
            {
                "user_id": u,
                "book_id": i,
                "review_id": f"{n:032x}",
                "is_read": w > 0,
                "rating": int(w),
                "review_text_incomplete": "",
                "date_added": added(n, t),
                "read_at": "",
            }
        )
        for n, (u, i, w, t) in enumerate(rows)
    ]
    path = tmp / "goodreads_interactions_dedup.json.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    mapping = {"user_id": "user_id", "item_id": "book_id", "timestamp": "date_added", "weight": "rating"}
    return Layout(path, mapping, rows)


def hm_transactions(tmp: Path) -> Layout:
    """H&M's transactions_train.csv: `t_dat` dates, 64-hex customer ids, 10-digit article ids with a
    leading zero beside another id column (`sales_channel_id`), a price that is no weight."""
    users = [f"{n:064x}" for n in range(1, 31)]
    items = [f"0{108775015 + 1000 * n}" for n in range(50)]
    rows = [(u, i, 1.0, float(t - t % 86400)) for u, i, _, t in _draws(17, 300, users, items, [1.0])]
    path = tmp / "transactions_train.csv"
    path.write_text(
        "t_dat,customer_id,article_id,price,sales_channel_id\n"
        + "".join(f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d},{u},{i},0.0508305084745762,2\n" for u, i, _, t in rows)
    )
    mapping = {"user_id": "customer_id", "item_id": "article_id", "timestamp": "t_dat"}
    return Layout(path, mapping, rows, weighted=False)


def retailrocket(tmp: Path) -> Layout:
    """events.csv: ms timestamps, an event column, transactionid empty except on purchases."""
    rows = _draws(11, 300, USERS, ITEMS, [1.0])
    events = ["view", "view", "addtocart", "transaction"]
    body = "".join(
        f"{int(t) * 1000},{u},{events[n % 4]},{i},{n if events[n % 4] == 'transaction' else ''}\n"
        for n, (u, i, _, t) in enumerate(rows)
    )
    path = tmp / "events.csv"
    path.write_text("timestamp,visitorid,event,itemid,transactionid\n" + body)
    mapping = {"user_id": "visitorid", "item_id": "itemid", "timestamp": "timestamp", "event": "event"}
    return Layout(path, mapping, rows, weighted=False)


def taobao(tmp: Path) -> Layout:
    """Tianchi's Taobao UserBehavior.csv, published headerless (user, item, category, behavior,
    seconds); ingested with the header its users add, whose `behavior_type` is the event."""
    rows = _draws(23, 300, USERS, [str(2_268_318 + 977 * n) for n in range(60)], [1.0])
    body = "".join(
        f"{u},{i},{2_520_377 + n % 7},{('pv', 'pv', 'cart', 'fav', 'buy')[n % 5]},{int(t)}\n"
        for n, (u, i, _, t) in enumerate(rows)
    )
    path = tmp / "UserBehavior.csv"
    path.write_text("user_id,item_id,category_id,behavior_type,timestamp\n" + body)
    mapping = {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp", "event": "behavior_type"}
    return Layout(path, mapping, rows, weighted=False)


def tianchi_mobile(tmp: Path) -> Layout:
    """Tianchi's mobile-commerce log (tianchi_mobile_recommend_train_user.csv): behavior_type 1-4,
    a mostly empty geohash and times written as a date and an hour (`2014-12-06 02`)."""
    rows = [(u, i, w, float(int(t) // 3600 * 3600)) for u, i, w, t in _draws(31, 300, USERS, ITEMS, [1.0])]
    body = "".join(
        f"{u},{i},{1 + n % 4},{'' if n % 5 else '96ucm6'},{4245 + n % 3},{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H}\n"
        for n, (u, i, _, t) in enumerate(rows)
    )
    path = tmp / "tianchi_mobile_recommend_train_user.csv"
    path.write_text("user_id,item_id,behavior_type,user_geohash,item_category,time\n" + body)
    mapping = {"user_id": "user_id", "item_id": "item_id", "timestamp": "time", "event": "behavior_type"}
    return Layout(path, mapping, rows, weighted=False)


def diginetica(tmp: Path) -> Layout:
    """CIKM Cup 2016 train-item-views.csv: `;`, an empty userId on anonymous sessions, `timeframe`
    (ms since the session began) and the day as `eventdate`; sessions read as users."""
    rows = [(u, i, w, float(int(t) // 86_400 * 86_400)) for u, i, w, t in _draws(29, 300, USERS, ITEMS, [1.0])]
    body = "".join(
        f"{u};{'' if n % 3 else 7 * n};{i};{n * 1_234};{datetime.fromtimestamp(t, UTC):%Y-%m-%d}\n"
        for n, (u, i, _, t) in enumerate(rows)
    )
    path = tmp / "train-item-views.csv"
    path.write_text("sessionId;userId;itemId;timeframe;eventdate\n" + body)
    mapping = {"user_id": "sessionId", "item_id": "itemId", "timestamp": "eventdate"}
    return Layout(path, mapping, rows, args=["--user-col", "sessionId"], weighted=False)


def rees46(tmp: Path) -> Layout:
    """Kaggle's e-commerce behaviour logs (2019-Oct.csv): times written `... UTC`, empty brands."""
    rows = _draws(
        19, 300, [str(512_000_000 + n) for n in range(40)], [str(1_000_000 + n) for n in range(60)], [1.0]
    )
    body = "".join(
        f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%S} UTC,{('view', 'cart', 'purchase')[n % 3]},{i},"
        f"2053013555631882655,electronics.smartphone,{'apple' if n % 2 else ''},489.07,{u},"
        "72d76fde-8bb3-4e00-8c23-a032dfed738c\n"
        for n, (u, i, _, t) in enumerate(rows)
    )
    path = tmp / "2019-Oct.csv"
    header = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
    path.write_text(header + body)
    mapping = {
        "user_id": "user_id",
        "item_id": "product_id",
        "timestamp": "event_time",
        "event": "event_type",
    }
    return Layout(path, mapping, rows, weighted=False)


def yelp(tmp: Path) -> Layout:
    users = [f"q_QQ5kBBwlCcbL1s4NVK3{n:02d}-_" for n in range(30)]
    rows = _draws(12, 300, users, [f"b{n}-_x" for n in range(50)], STARS)
    lines = [
        json.dumps(
            {
                "review_id": f"KU_O5udG6zpxOg-VcAEod{n:03d}",
                "user_id": u,
                "business_id": i,
                "stars": w,
                "useful": 0,
                "text": "Nice\nplace",
                "date": f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%S}",
            }
        )
        for n, (u, i, w, t) in enumerate(rows)
    ]
    path = tmp / "yelp_academic_dataset_review.json"
    path.write_text("\n".join(lines) + "\n")
    return Layout(
        path, {"user_id": "user_id", "item_id": "business_id", "weight": "stars", "timestamp": "date"}, rows
    )


def steam(tmp: Path) -> Layout:
    """17-digit Steam ids as JSON strings (above 2**32: the wide-id path), item ids as numbers."""
    users = [str(76561197960265728 + n) for n in range(30)]
    rows = [(u, i, 1.0, None) for u, i, _, _ in _draws(13, 300, users, ITEMS, [1.0])]
    lines = [json.dumps({"user_id": u, "item_id": int(i), "playtime_forever": 6}) for u, i, _, _ in rows]
    path = tmp / "steam.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return Layout(path, {"user_id": "user_id", "item_id": "item_id"}, rows, weighted=False)


def netflix_flat(tmp: Path) -> Layout:
    rows = _draws(14, 300, [str(n) for n in range(1_488_800, 1_488_840)], ITEMS, STARS)
    rows = [(u, i, w, float(t - t % 86400)) for u, i, w, t in rows]
    path = tmp / "netflix.csv"
    path.write_text(
        "CustomerID,MovieID,Rating,Date\n"
        + "".join(f"{u},{i},{_num(w)},{datetime.fromtimestamp(t, UTC):%Y-%m-%d}\n" for u, i, w, t in rows)
    )
    return Layout(
        path, {"user_id": "CustomerID", "item_id": "MovieID", "weight": "Rating", "timestamp": "Date"}, rows
    )


def recbole(tmp: Path) -> Layout:
    rows = _draws(15, 300, USERS, ITEMS, STARS)
    path = tmp / "ml-100k.inter"
    path.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{w}\t{t}\n" for u, i, w, t in rows)
    )
    mapping = {
        "user_id": "user_id:token",
        "item_id": "item_id:token",
        "weight": "rating:float",
        "timestamp": "timestamp:float",
    }
    return Layout(path, mapping, rows)


def parquet_ids(tmp: Path) -> Layout:
    """String user ids and int64 item ids above 2**32."""
    rows = _draws(16, 300, [f"u{n:03d}" for n in range(30)], [str(2**40 + n) for n in range(50)], STARS)
    path = tmp / "events.parquet"
    pl.DataFrame(
        {
            "user_id": [u for u, *_ in rows],
            "item_id": pl.Series([int(i) for _, i, _, _ in rows], dtype=pl.Int64),
            "rating": [w for *_, w, _ in rows],
            "timestamp": pl.Series([int(t) for *_, t in rows], dtype=pl.Int64),
        }
    ).write_parquet(path)
    return Layout(
        path, {"user_id": "user_id", "item_id": "item_id", "weight": "rating", "timestamp": "timestamp"}, rows
    )


def gzip_csv(tmp: Path) -> Layout:
    rows = _draws(17, 300, USERS, ITEMS, STARS)
    path = tmp / "ratings.csv.gz"
    text = "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{w},{_num(t)}\n" for u, i, w, t in rows)
    path.write_bytes(gzip.compress(text.encode()))
    return Layout(
        path, {"user_id": "userId", "item_id": "movieId", "weight": "rating", "timestamp": "timestamp"}, rows
    )


def monthly_directory(tmp: Path) -> Layout:
    """One CSV a month, ISO times; one month's export put its columns in another order."""
    rows = _draws(18, 300, USERS, ITEMS, STARS)
    folder = tmp / "monthly"
    folder.mkdir()
    for month, chunk in enumerate((rows[:100], rows[100:200], rows[200:]), start=1):
        iso = [f"{datetime.fromtimestamp(t, UTC):%Y-%m-%dT%H:%M:%SZ}" for *_, t in chunk]
        if month == 2:
            body = "rating,timestamp,item_id,user_id\n" + "".join(
                f"{w},{s},{i},{u}\n" for (u, i, w, _), s in zip(chunk, iso, strict=True)
            )
        else:
            body = "user_id,item_id,rating,timestamp\n" + "".join(
                f"{u},{i},{w},{s}\n" for (u, i, w, _), s in zip(chunk, iso, strict=True)
            )
        (folder / f"2024-{month:02d}.csv").write_text(body)
    return Layout(
        folder,
        {"user_id": "user_id", "item_id": "item_id", "weight": "rating", "timestamp": "timestamp"},
        rows,
    )


def dirty_csv(tmp: Path) -> Layout:
    """A spreadsheet export: BOM, CRLF, quoted fields with commas, ids with leading zeros, an empty
    id, a negative and a zero rating, an exact duplicate, s / ms / ISO times, an empty time, and a
    trailing blank line (no row: not counted, not quarantined)."""
    lines = [
        ("007", '"a,b"', "4", "1600000000"),
        ("7", '"a,b"', "4", "1600000000"),
        ("7", '"a,b"', "4", "1600000000"),  # exact duplicate of the line above
        ("", "x", "3", "1600000000"),  # missing user
        ("u1", "", "3", "1600000000"),  # missing item
        ("u1", "x", "-1", "1600000000"),  # negative rating
        ("u1", "y", "0", "1600000000000"),  # zero rating kept; ms
        ("u1", "z", "5", "2020-09-13T12:26:40Z"),  # ISO
        ('"u 2"', "x", "5", ""),  # no time: kept, timestamp null
    ]
    path = tmp / "export.csv"
    text = (
        "\ufeffuser_id,item_id,rating,timestamp\r\n" + "".join(",".join(f) + "\r\n" for f in lines) + "\r\n"
    )
    path.write_bytes(text.encode())
    rows = [
        ("007", "a,b", 4.0, 1.6e9),
        ("7", "a,b", 4.0, 1.6e9),
        ("u1", "y", 0.0, 1.6e9),
        ("u1", "z", 5.0, 1.6e9),
        ("u 2", "x", 5.0, None),
    ]
    reasons = {"duplicate": 1, "missing_user": 1, "missing_item": 1, "negative_weight": 1}
    mapping = {"user_id": "user_id", "item_id": "item_id", "weight": "rating", "timestamp": "timestamp"}
    return Layout(path, mapping, rows, reasons=reasons)


LAYOUTS: dict[str, Callable[[Path], Layout]] = {
    f.__name__: f
    for f in (
        ml100k,
        ml1m,
        filmtrust,
        ml_latest,
        amazon_2018_json,
        amazon_2023_jsonl,
        amazon_2023_csv,
        lastfm_1k,
        lastfm_360k,
        book_crossing,
        goodreads,
        goodreads_json,
        hm_transactions,
        retailrocket,
        taobao,
        tianchi_mobile,
        diginetica,
        rees46,
        yelp,
        steam,
        netflix_flat,
        recbole,
        parquet_ids,
        gzip_csv,
        monthly_directory,
        dirty_csv,
    )
}


def _ingest(source: Path, out: Path, *args: str):
    return runner.invoke(app, ["ingest", str(source), "--out", str(out), *args])


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_real_layout_ingests_every_row_as_written(name: str, tmp_path: Path) -> None:
    layout = LAYOUTS[name](tmp_path)
    out = tmp_path / "out"
    result = _ingest(layout.path, out, *layout.args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    batch = manifest["batches"][-1]
    assert batch["columns"] == layout.mapping
    n_quarantined = sum(layout.reasons.values())
    assert batch["reasons"] == layout.reasons
    assert (manifest["rows_in"], manifest["rows_accepted"], manifest["rows_quarantined"]) == (
        len(layout.rows) + n_quarantined,
        len(layout.rows),
        n_quarantined,
    )
    assert manifest["weights"]["kept"] is layout.weighted

    got = pl.read_parquet(out / "interactions")
    got_rows = sorted(
        (
            u,
            i,
            float(w) if layout.weighted else None,
            None if t is None else t.timestamp(),
        )
        for u, i, w, t in got.select(
            pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String), "weight", "timestamp"
        ).iter_rows()
    )
    want = sorted((u, i, w if layout.weighted else None, t) for u, i, w, t in layout.rows)
    assert len(got_rows) == len(want)
    for g, w in zip(got_rows, want, strict=True):
        assert g[:3] == w[:3]
        # to the millisecond: ms timestamps keep theirs, seconds are not read as ms (or the reverse)
        assert (g[3] is None) == (w[3] is None) and (g[3] is None or abs(g[3] - w[3]) < 1e-3), (g, w)


HEADERLESS = {
    # Last.fm 1K and 360K, Amazon's ratings-only CSV: no header line, string ids.
    "lastfm-1k.tsv": _lastfm_1k_lines([("user_000001", '"Weird Al" Yankovic', 1.0, 1.2e9)]),
    "lastfm-360k.tsv": "00000c289a1829a808ac09c00daf10bc3c4e223b\t\tbetty blowtorch\t2137\n",
    "Books.csv": "0000013714,A2SUAM1J3GNN3B,5.0,1252800000\n",
}


@pytest.mark.parametrize("name", list(HEADERLESS))
def test_headerless_string_id_files_say_to_add_a_header(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(HEADERLESS[name] * 3)
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "looks like data, not a header" in line
    assert "add a header line" in line and not (tmp_path / "out").exists()


def test_an_impression_log_with_id_lists_is_refused_without_a_header_to_add(tmp_path: Path) -> None:
    """MIND's behaviors.tsv (impression id, user, US time, history list, impression list): the
    suggested header named the impression id `user_id` and the user `item_id`, so following it
    ingested nonsense; it is refused, naming the list columns."""
    path = tmp_path / "behaviors.tsv"
    path.write_text(
        "1\tU13740\t11/11/2019 9:05:58 AM\tN55189 N42782 N34694\tN55689-1 N35729-0\n"
        "2\tU91836\t11/12/2019 6:11:30 PM\t\tN20678-0 N39317-0 N58114-1\n"
    )
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {path}: column 4 ('N55189 N42782 N34694'), column 5"), line
    assert "hold lists of ids" in line and "sed -i" not in line and not (tmp_path / "out").exists()
    # Names with spaces (Last.fm's artist and track names) and dates with times are no id lists.
    lastfm = tmp_path / "lastfm.tsv"
    lastfm.write_text("user_000001\t2009-05-04 23:08:57\t\tBlink 182\t\tAll The Small Things\n" * 2)
    assert "sed -i '1i " in _ingest(lastfm, tmp_path / "out").output


HEADERLESS_SEPARATED = {
    # A slice of Book-Crossing without its header line (`;`, quoted, CRLF), and Last.fm 1K (tabs,
    # an empty artist mbid): the header line the error suggests must split as the rows do; the
    # suggestion used to be `user_id,item_id,rating,timestamp` whatever the separator, which on
    # these files reads as one column.
    "BX-Book-Ratings.csv": ('"43842";"0739432540";"0"\r\n"43842";"034545104X";"7"\r\n"55178";"0312929277";"9"\r\n', 3),
    "lastfm-1k.tsv": (
        "user_000001\t2009-05-03T15:48:25Z\tba2f4f3b-0293-4bc8-bb94-2f73b5207343\tUnderworld\t\tBoy, Boy, Boy\n"
        "user_000001\t2009-05-02T14:30:56Z\t\tRocket Empire\t\tSimmer Down Jammie\n"
        "user_000002\t2009-05-01T09:17:36Z\tc74ee320-1daa-43e6-89ee-f71070ee9e8f\tImpossible Beings\t\tDois Pólos\n",
        3,  # the artist name is the item: the row with an empty mbid is read too
    ),
}


@pytest.mark.parametrize("name", list(HEADERLESS_SEPARATED))
def test_the_suggested_header_line_splits_like_the_rows(name: str, tmp_path: Path) -> None:
    """Doing what the error says (its `sed -i '1i ...'` line, applied here in Python) makes the
    file ingest, every row read into the roles the example names."""
    text, accepted = HEADERLESS_SEPARATED[name]
    path = tmp_path / name
    path.write_bytes(text.encode())
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "sed -i '1i " in line, line
    header = line.split("sed -i '1i ", 1)[1].split("'", 1)[0].replace("\\t", "\t")
    path.write_bytes(header.encode() + b"\n" + text.encode())
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["rows_in"] == 3 and manifest["rows_accepted"] == accepted, manifest
    columns = manifest["batches"][0]["columns"]
    assert (columns["user_id"], columns["item_id"]) == ("user_id", "item_id"), columns


@pytest.mark.parametrize(
    "text",
    ["1\t\t5\t\t0.219\n1\t\t7\t\t-9.281\n2\t\t5\t\t4.2\n", "1  6  2\n12 7  5\n2  5  1\n"],
    ids=["jester-double-tabs", "aligned-spaces"],
)
def test_numbers_separated_by_runs_of_blanks_say_to_squeeze_them(text: str, tmp_path: Path) -> None:
    """Jester's jester_ratings.dat (`1\t\t5\t\t0.219`) and space-aligned columns: the errors
    were 'looks like data, add a header' (a header that would not split like the rows) and 'one
    column'; they name the runs and the awk line, which (applied here in Python) makes the file read."""
    path = tmp_path / "jester_ratings.dat"
    path.write_text(text)
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "separated by runs of spaces or tabs" in line and "awk -v OFS='\\t' '{$1 = $1; print}'" in line, line
    path.write_text("".join("\t".join(row.split()) + "\n" for row in text.splitlines()))
    assert _ingest(path, tmp_path / "out").exit_code == 0
    # One missing value in the first line of a u.data is not a run: squeezing would shift columns.
    path.write_text("196\t242\t\t881250949\n186\t302\t3\t891717742\n")
    assert "runs of spaces" not in _ingest(path, tmp_path / "out").output


def test_the_suggested_header_of_amazons_ratings_only_csv_puts_the_item_first(tmp_path: Path) -> None:
    """Amazon's ratings-only CSV (item, user, rating, time): the suggestion named the ASIN user_id
    and the reviewer item_id, so following it trained on the transposed matrix."""
    path = tmp_path / "Books.csv"
    text = "0000013714,A2SUAM1J3GNN3B,5.0,1252800000\nB00002N62Y,A1C6M8LCIX4M6M,4.0,1123804800\n"
    path.write_text(text)
    result = _ingest(path, tmp_path / "out")
    assert "sed -i '1i item_id,user_id,rating,timestamp'" in result.output, result.output
    path.write_text("item_id,user_id,rating,timestamp\n" + text)
    assert _ingest(path, tmp_path / "out").exit_code == 0
    got = pl.read_parquet(tmp_path / "out" / "interactions")
    assert sorted(got["user_id"].to_list()) == ["A1C6M8LCIX4M6M", "A2SUAM1J3GNN3B"]


CHECKINS = {
    # Gowalla (user, ISO time, latitude, longitude, location id) and Foursquare's TSMC2014 (user,
    # venue, category id, category, latitude, longitude, UTC offset in minutes, Twitter-layout time):
    # the suggestion named Gowalla's latitude item_id and its longitude rating, and Foursquare's
    # latitude rating, with its time unnamed.
    "loc-gowalla_totalCheckins.txt": (
        "0\t2010-10-19T23:55:27Z\t30.2359091167\t-97.7951395833\t22847\n"
        "0\t2010-10-18T22:17:43Z\t30.2691029532\t-97.7493953705\t420315\n",
        "user_id\ttimestamp\tcolumn_3\tcolumn_4\titem_id",
        ["22847", "420315"],
    ),
    "dataset_TSMC2014_NYC.txt": (
        "470\t49bbd6c0f964a520f4531fe3\t4bf58dd8d48988d127951735\tArts & Crafts Store\t40.719810375488535"
        "\t-74.00258103213994\t-240\tTue Apr 03 18:00:09 +0000 2012\n"
        "979\t4a43c0aef964a520c6a61fe3\t4bf58dd8d48988d1df941735\tBridge\t40.60679958140643"
        "\t-74.04416981025437\t-240\tTue Apr 03 18:00:25 +0000 2012\n",
        "user_id\titem_id\tcolumn_3\tcolumn_4\tcolumn_5\tcolumn_6\tcolumn_7\ttimestamp",
        ["49bbd6c0f964a520f4531fe3", "4a43c0aef964a520c6a61fe3"],
    ),
}


@pytest.mark.parametrize("name", list(CHECKINS))
def test_the_suggested_header_of_a_check_in_log_names_no_coordinate_an_id_or_a_rating(
    name: str, tmp_path: Path
) -> None:
    text, header, items = CHECKINS[name]
    path = tmp_path / name
    path.write_text(text)
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    spelled = header.replace("\t", "\\t")  # as the message spells a tab
    assert f"sed -i '1i {spelled}'" in result.output, result.output
    path.write_text(header + "\n" + text)
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 0, result.output
    got = pl.read_parquet(tmp_path / "out" / "interactions")
    assert sorted(got["item_id"].cast(pl.String).to_list()) == sorted(items)
    assert got["timestamp"].null_count() == 0


def test_the_suggested_header_of_a_headerless_event_log_names_its_event_not_a_rating(tmp_path: Path) -> None:
    """Taobao's UserBehavior.csv: the suggestion named the category id `rating` (a user keeping it
    would have summed category ids as weights) and the behavior `column_4`; following it now reads
    the behavior as the event, so --event-weight and data.positive_events apply."""
    text = "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,buy,1511561733\n100,4572582,2188684,pv,1511550516\n"
    path = tmp_path / "UserBehavior.csv"
    path.write_text(text)
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    header = line.split("sed -i '1i ", 1)[1].split("'", 1)[0]
    assert header == "user_id,item_id,column_3,event,timestamp", line
    path.write_text(header + "\n" + text)
    result = _ingest(path, tmp_path / "out", "--event-weight", "pv=1", "--event-weight", "buy=5")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["batches"][0]["columns"] == {
        "user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp", "event": "event"
    }  # fmt: skip
    assert manifest["weights"]["column"] is None and manifest["weights"]["aggregate"] == "sum"


def test_the_suggested_header_of_a_click_log_does_not_call_its_zero_category_a_rating(tmp_path: Path) -> None:
    """YOOCHOOSE's clicks (session, time, item, category; no header): the suggestion named the
    category `rating`, and a user keeping it lost every row whose category is 0 (weight 0). A 0
    is no rating to guess from: the column is named by position, and following the suggestion
    keeps every click."""
    text = "1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:54:09.868Z,214536500,0\n2,2014-04-07T13:56:37.614Z,214662742,0\n"
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text(text)
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    header = line.split("sed -i '1i ", 1)[1].split("'", 1)[0]
    assert header == "user_id,timestamp,item_id,column_4", line
    path.write_text(header + "\n" + text)
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["rows_accepted"] == 3 and manifest["interactions"] == 3, manifest


@pytest.mark.parametrize(
    ("name", "rows", "other"),
    [
        ("BX-Book-Ratings.csv", '"43842";"0739432540";"0"\r\n"55178";"0312929277";"9"\r\n', "';'"),
        ("clicks.csv", "1\t2014-04-07T10:51:09.277Z\t214536502\t0\n2\t2014-04-07T13:56:37.614Z\t214662742\t0\n", "'\\t'"),
    ],
)
def test_a_header_split_otherwise_than_its_rows_names_the_rows_separator(
    name: str, rows: str, other: str, tmp_path: Path
) -> None:
    """A header added by hand with commas on top of `;` or tab rows made every row one field and
    ingest stop with 'no row passed validation (missing_item ...)', naming the item column."""
    path = tmp_path / name
    path.write_text("user_id,item_id,rating\n" + rows)
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert f"header line is split by ',' but the rows by {other}" in line, line
    assert not (tmp_path / "out").exists()


def test_a_latin1_file_is_refused_with_the_encoding_to_name(tmp_path: Path) -> None:
    path = tmp_path / "BX-Book-Ratings.csv"
    path.write_bytes('"User-ID";"ISBN";"Book-Rating"\r\n"276725";"Café9X";"0"\r\n'.encode("latin-1"))
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "not a UTF-8" in line and "--encoding latin-1" in line


def test_a_latin1_byte_past_the_sniffed_head_names_the_conversion_too(tmp_path: Path) -> None:
    """...and where it is: the file of a directory, the line of a large file."""
    path = tmp_path / "logs" / "ratings.csv"
    path.parent.mkdir()
    body = "".join(f"u{n},i{n % 50},{n % 5}\n" for n in range(8000))
    path.write_bytes(("user,item,rating\n" + body + "u1,caf\xe9,3\n").encode("latin-1"))
    (tmp_path / "logs" / "a.csv").write_text("user,item,rating\nu1,i1,4\n")
    for source, where in ((path, "ratings.csv line 8002 (byte 0xe9)"), (path.parent, "ratings.csv line 8002")):
        result = _ingest(source, tmp_path / "out")
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert "utf-8" in line.lower() and "--encoding latin-1" in line and f"at {where}" in line


def test_a_time_column_in_an_unread_format_says_so_instead_of_no_interactions_left(tmp_path: Path) -> None:
    path = tmp_path / "us.csv"
    path.write_text(
        "user_id,item_id,date\n" + "".join(f"{n},{n % 7},09/{n % 28 + 1:02d}/2005\n" for n in range(1, 60))
    )
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "no row passed validation (bad_timestamp: 59; row 1: 'date' is '09/02/2005')" in line
    assert "ISO-8601" in line and "--time-col" in line


def test_netflix_prize_blocks_are_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "combined_data_1.txt"
    path.write_text("1:\n1488844,3,2005-09-06\n822109,5,2005-05-13\n2:\n2059652,4,2005-09-05\n")
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "Netflix prize `MovieID:` blocks (first line '1:')" in line
    assert "--format" not in line and "--user-col" not in line  # neither option reads blocks
    # What the message's awk line writes (done here in Python) ingests, each rating under its movie.
    assert "awk -F, 'BEGIN {print \"user_id,item_id,rating,date\"} /:$/" in line
    flat, movie = ["user_id,item_id,rating,date"], ""
    for row in path.read_text().splitlines():
        if row.endswith(":"):
            movie = row[:-1]
        else:
            user, rating, date = row.split(",")
            flat.append(f"{user},{movie},{rating},{date}")
    path.write_text("\n".join(flat) + "\n")
    assert _ingest(path, tmp_path / "out").exit_code == 0
    got = pl.read_parquet(tmp_path / "out" / "interactions").sort("user_id")
    assert got.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).rows() == [
        ("822109", "1"),
        ("1488844", "1"),
        ("2059652", "2"),
    ]


def test_two_id_like_candidates_hint_the_id_column_not_the_first_free_one(tmp_path: Path) -> None:
    """recipe_id and review_id (a reviews export such as Food.com's): no guess, and the hint names an
    id column. (Goodreads' book_id beside review_id is a known name now.)"""
    path = tmp_path / "reviews.json"
    record = {"user_id": "8842281e", "recipe_id": "24375664", "review_id": "5cd416f3", "rating": 5}
    path.write_text(json.dumps({"title": "x", **record}) + "\n")
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "--item-col recipe_id" in result.output


def test_the_user_column_hint_names_the_column_named_for_users_not_the_item_id(tmp_path: Path) -> None:
    """A Steam-like log `user_uuid,app_id,hours`: the hint used to say `--user-col app_id`."""
    path = tmp_path / "steam.csv"
    path.write_text("user_uuid,app_id,hours\n0f8e2c1a-6b1d-4c2e-9a3f-1b2c3d4e5f60,10,4.5\n")
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "--user-col user_uuid" in result.output
    mapped = _ingest(path, tmp_path / "out", "--user-col", "user_uuid")
    assert mapped.exit_code == 0 and "item=app_id" in mapped.output, mapped.output


def test_blank_lines_inside_a_csv_are_no_rows_and_keep_the_numbering(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user,item,rating\nu1,a,5\n\nu2,b,4\n,c,3\n\n")
    out = tmp_path / "out"
    assert _ingest(path, out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["rows_in"], manifest["rows_accepted"], manifest["rows_quarantined"]) == (3, 2, 1)
    quarantine = pl.read_parquet(out / "quarantine")
    assert quarantine.select("source_row", "item_id", "reason").rows() == [(4, "c", "missing_user")]


def test_appending_a_tab_file_read_unquoted_quarantines_its_repeats_with_their_text(tmp_path: Path) -> None:
    """The second ingest of the same Last.fm file: every row repeats the first batch, and the
    quarantine shows the rows as written (read again unquoted, like validation read them)."""
    layout = lastfm_1k(tmp_path)
    out = tmp_path / "out"
    assert _ingest(layout.path, out, *layout.args).exit_code == 0
    result = _ingest(layout.path, out, *layout.args, "--append")
    assert result.exit_code == 0, result.output
    quarantine = pl.read_parquet(out / "quarantine" / "batch=000002.parquet")
    assert quarantine.height == len(layout.rows) and set(quarantine["reason"]) == {"duplicate"}
    assert sorted(quarantine["item_id"]) == sorted(i for _, i, _, _ in layout.rows)


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        (
            "reviews.json",
            json.dumps([{"user_id": "u1", "item_id": "i1"}], indent=2),
            "a JSON array, not JSON Lines",
        ),
        (
            "steam.json",
            "\n".join(str({"user_id": f"u{n}", "item_id": "10"}) for n in range(3)),
            "ast.literal_eval",
        ),
        (
            "export.json",
            "\n".join(json.dumps({"user_id": f"u{n}", "item_id": "10"}, indent=2) for n in range(3)),
            "(pretty-printed), not JSON Lines (one object a line); convert it first, e.g. `jq -c . FILE",
        ),
    ],
    ids=["json-array", "python-literals", "pretty-printed"],
)
def test_json_that_is_not_json_lines_says_how_to_convert_it(
    name: str, text: str, says: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(text + "\n")
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and says in line


def test_an_unzipped_movielens_1m_folder_names_the_files_that_are_not_ratings(tmp_path: Path) -> None:
    """ratings.dat beside users.dat and movies.dat (all `::`): a one-line error listing them by
    field count, not a failed read (nor user records read as ratings)."""
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "movies.dat").write_text("1::Toy Story (1995)::Animation|Children's|Comedy\n")
    (folder / "README").write_text("SUMMARY\n")
    result = _ingest(folder, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert (
        "different numbers of fields (3 fields: movies.dat; 4 fields: ratings.dat; 5 fields: users.dat)"
        in line
    )
    (folder / "users.dat").unlink()
    (folder / "movies.dat").unlink()
    assert _ingest(folder, tmp_path / "out").exit_code == 0


def test_a_movielens_1m_folder_with_its_latin1_titles_says_to_ingest_the_ratings_alone(tmp_path: Path) -> None:
    """ML-1M's movies.dat is Latin-1 (`Misérables`): the error said only to convert it, after which
    the folder is refused for its field counts; it names the way out that works at once."""
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (folder / "movies.dat").write_bytes("1::Les Misérables (1995)::Drama\n".encode("latin-1"))
    result = _ingest(folder, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "--encoding latin-1" in line and "if movies.dat is no interaction log" in line, line
    assert "ingest the interaction file on its own" in line


def test_a_recbole_sequence_column_left_unread_is_named(tmp_path: Path) -> None:
    """A RecBole sequential `.inter` (session, earlier items as `token_seq`, target item): the
    lists were dropped without a word, each row read as (session, target) alone."""
    path = tmp_path / "diginetica.train.inter"
    path.write_text(
        "session_id:token\titem_id_list:token_seq\titem_id:token\n1\t9 4 7\t5\n2\t3\t8\n3\t8 2\t1\n"
    )
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    note = "'item_id_list:token_seq' hold(s) a list of ids per row (a RecBole sequential file), which is not read"
    assert note in result.output.replace("\n", " ")
    assert any(note in w for w in json.loads((out / "manifest.json").read_text())["warnings"])
    # A flat .inter has no such column and no such line.
    flat = tmp_path / "flat.inter"
    flat.write_text("user_id:token\titem_id:token\n1\t5\n2\t8\n")
    assert "token_seq" not in _ingest(flat, tmp_path / "out2").output


def _zipped(text: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-100k/u.data", text)
    return buffer.getvalue()


def _tar_gz(text: bytes) -> bytes:
    """The lines as a member of a gzip'd tar, as Last.fm 1K ships: said to be 'binary content'."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        member = tarfile.TarInfo("lastfm-dataset-1K/u.data")
        member.size = len(text)
        archive.addfile(member, io.BytesIO(text))
    return buffer.getvalue()


def _feather(text: bytes) -> bytes:
    """The lines as pandas' to_feather writes them (Arrow IPC): said to be 'binary content'."""
    buffer = io.BytesIO()
    rows = [line.split("\t") for line in text.decode().splitlines()]
    pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row").write_ipc(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "pack", "says"),
    [
        ("ml-100k.zip", _zipped, "a zip archive"),
        ("u.data.bz2", bz2.compress, "bzip2-compressed: decompress it"),
        ("u.data.xz", lzma.compress, "xz-compressed: decompress it"),
        ("ratings.feather", _feather, "an Arrow IPC / Feather file (pandas' to_feather): write it as Parquet"),
        ("lastfm-dataset-1K.tar.gz", _tar_gz, "a tar archive (.tar, .tar.gz), as Last.fm's and Yelp's data sets ship"),
    ],
    ids=["zip", "bzip2", "xz", "feather", "tar.gz"],
)
def test_files_ingest_does_not_read_say_what_they_are(name: str, pack, says: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(pack(b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n"))
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and says in line


def test_a_directory_with_compressed_files_it_cannot_open_names_them_instead_of_skipping_them(
    tmp_path: Path,
) -> None:
    """Monthly exports, some bzip2-compressed: reading only the plain ones would lose the others'
    rows without a word; `.gz` files are read, the rest are named."""
    folder = tmp_path / "events"
    folder.mkdir()
    rows = b"user_id,item_id,rating,timestamp\n1,2,4,881250949\n3,4,5,881250950\n"
    (folder / "2019-10.csv").write_bytes(rows)
    (folder / "2019-11.csv.gz").write_bytes(gzip.compress(rows))
    assert _ingest(folder, tmp_path / "out").exit_code == 0
    (folder / "2019-12.csv.bz2").write_bytes(bz2.compress(rows))
    result = _ingest(folder, tmp_path / "out2")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "2019-12.csv.bz2" in line and "decompress" in line
    assert not (tmp_path / "out2").exists()


def test_outside_the_repository_a_run_reads_the_shipped_configs(tmp_path, monkeypatch) -> None:
    """A user in their data folder runs `recsys run --set data.source=events.csv`, or `--config
    movielens` as the README says: there is no pipelines/configs/ beside them. Built-in defaults
    have no models (such a run trained nothing and exited 0; then it was refused): the configs
    installed with the package are used, as in the repository root."""
    from recsys.cli.common import config_path, load_run_config, shipped_configs

    layout = retailrocket(tmp_path)
    monkeypatch.chdir(tmp_path)
    shipped = shipped_configs()
    assert set(shipped) == {"default", "movielens", "plays"}  # the names --config's help lists
    help_text = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "300"}).output
    for name, path in shipped.items():
        assert f" {name} " in help_text.replace("|", " ")
        assert config_path(Path(name)) == path and path.is_absolute()
    assert config_path(None) == shipped["default"]
    # The next-step hints name a shipped config as typed, not by its path inside the package.
    from recsys.cli.pipeline_cmds import store_args

    assert store_args(shipped["plays"], ["tracking.experiment=x"]) == " --config plays --set tracking.experiment=x"
    assert store_args(shipped["default"], []) == "" and store_args(Path("mine.toml"), []) == " --config mine.toml"
    cfg = load_run_config(None, [f"data.source={layout.path}"], default=True)
    assert [m.name for m in cfg.models] == [m.name for m in load_run_config(shipped["default"], []).models]
    assert cfg.models and str(cfg.data.source) == str(layout.path)
    # A file of that name here wins over the shipped config; a missing path names the shipped ones.
    (tmp_path / "plays").write_text('name = "mine"\n[[models]]\nkind = "popularity"\n')
    assert config_path(Path("plays")) == Path("plays") and load_run_config(Path("plays"), []).name == "mine"
    missing = runner.invoke(app, ["run", "--no-tracking", "--config", "conf/nope.toml"])
    assert missing.exit_code == 2, missing.output
    (line,) = missing.output.strip().splitlines()
    assert "conf/nope.toml: config file not found" in line and "--config default | movielens | plays" in line
    # Models named on the command line make a whole config: that run trains them (scripts do this).
    named = runner.invoke(app, [
        "run", "--no-tracking", "--no-prefect", "--set", f"data.source={layout.path}",
        "--set", 'models=[{name="pop", kind="popularity"}]', "--set", "folding.enabled=false",
    ])  # fmt: skip
    assert named.exit_code == 0, named.output
    assert "best model: pop" in named.output  # no tracking: no promotion, no champion


def test_a_rating_rule_on_a_log_without_ratings_names_the_weight_column_option(tmp_path: Path) -> None:
    """Retailrocket has events, no rating: `--min-rating 4` would drop every row (each weighs 1)."""
    layout = retailrocket(tmp_path)
    result = _ingest(layout.path, tmp_path / "out", "--min-rating", "4")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "no weight column" in line and "--weight-col NAME" in line


def test_no_interactions_left_names_the_step_that_removed_them(tmp_path: Path) -> None:
    layout = ml100k(tmp_path)
    result = _ingest(layout.path, tmp_path / "out", "--min-rating", "6")
    assert result.exit_code == 2, result.output
    assert "no interactions left after filtering (positive (weight >= 6))" in result.output


@pytest.mark.parametrize(
    ("text", "gzipped"), [("x", False), ("é", False), ("x", True)], ids=["ascii", "utf8", "gzip"]
)
def test_a_first_json_record_longer_than_the_sniff_window_is_read(
    text: str, gzipped: bool, tmp_path: Path
) -> None:
    """Amazon and Goodreads reviews can run past 64 KiB; the first one used to make the file look
    like it held no JSON object (or, cut inside a character, like it was not UTF-8: the "." puts
    the window's end inside an "é")."""
    records = [
        {
            "reviewerID": f"A{n}",
            "asin": f"000{n % 5}",
            "overall": 5.0,
            "reviewText": "." + text * (70_000 if n == 0 else 3),
        }
        for n in range(20)
    ]
    body = ("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n").encode()
    path = tmp_path / ("Books_5.json.gz" if gzipped else "Books_5.json")
    path.write_bytes(gzip.compress(body) if gzipped else body)
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["rows_in"], manifest["rows_accepted"], manifest["users"], manifest["items"]) == (
        20,
        20,
        20,
        5,
    )


def test_na_user_ids_are_flagged_not_silently_one_user(tmp_path: Path) -> None:
    """Diginetica's train-item-views.csv (`;`): userId is NA for anonymous sessions. Read as text,
    every such row would belong to one user "NA"; ingest says so (CLI line and manifest)."""
    path = tmp_path / "train-item-views.csv"
    rows = [(s, "NA" if s % 3 else str(s), 81766 + s % 7) for s in range(1, 61)]
    path.write_text(
        "sessionId;userId;itemId;timeframe;eventdate\n"
        + "".join(f"{s};{u};{i};526309;2016-05-09\n" for s, u, i in rows)
    )
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    # (its repeats of a pair on one `eventdate` day are quarantined as duplicates: a warning of their own)
    (warning,) = [line for line in result.output.splitlines() if line.startswith("warning: user id")]
    n_na = sum(1 for _, u, _ in rows if u == "NA")
    n_na_pairs = len({i for _, u, i in rows if u == "NA"})
    assert f"user id 'NA' ('userId', {n_na_pairs} interactions) looks like a missing-value marker" in warning
    assert "--user-col" in warning and n_na == 40
    assert warning.endswith("a session log reads each session as a user: --user-col sessionId"), warning
    manifest = json.loads((out / "manifest.json").read_text())
    assert warning.removeprefix("warning: ") in manifest["warnings"]
    # The same log as Parquet names the session column too (it did for text files only).
    parquet = tmp_path / "train-item-views.parquet"
    pl.read_csv(path, separator=";", infer_schema=False).write_parquet(parquet)
    converted = _ingest(parquet, tmp_path / "out-parquet")
    assert converted.exit_code == 0, converted.output
    (again,) = [line for line in converted.output.splitlines() if line.startswith("warning: user id")]
    assert again.endswith("a session log reads each session as a user: --user-col sessionId"), again


def test_ids_pandas_wrote_as_floats_are_flagged(tmp_path: Path) -> None:
    """pandas' to_csv of an integer user column holding a NaN writes `64.0`: kept as written (a
    request for user 64 would then find nobody), so ingest says so; the integer items get no line."""
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id,rating\n64.0,7,4\n,8,5\n65.0,7,3\n66.0,9,1\n")
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.output.splitlines() if "spelled as a float" in line]
    assert warning.startswith("warning: every user id ('user_id') is an integer spelled as a float ('64.0')")
    assert "('64' is another user)" in warning
    assert warning.removeprefix("warning: ") in json.loads((out / "manifest.json").read_text())["warnings"]
    path.write_text("user_id,item_id,rating\n64.0,7,4\nu65,7,3\n")  # not every id: no line
    assert "spelled as a float" not in _ingest(path, tmp_path / "out2").output


@pytest.mark.parametrize(
    ("times", "warned"),
    [
        (lambda r: 20150701 + r % 28, True),  # yyyymmdd integers: read as seconds, August 1970
        (lambda r: r % 400, True),  # day numbers: the first minutes of 1970
        (lambda r: 1_436_000_000 + r * 3600, False),  # Unix seconds in 2015
    ],
)
def test_integer_times_that_all_land_in_1970_are_flagged(tmp_path: Path, times, warned: bool) -> None:
    """Integer times are read as Unix seconds: a log whose every time lands in 1970 holds some
    other integer (yyyymmdd dates, day numbers), so every date would be wrong; ingest says so
    (CLI line and manifest), and keeps the rows, ordered as the integers are."""
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id,rating,date\n" + "".join(f"{r % 7},{r % 11},4,{times(r)}\n" for r in range(60)))
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    found = [line for line in result.output.splitlines() if line.startswith("warning:")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_accepted"] == 60
    if not warned:
        assert found == [] and manifest["warnings"] == []
        return
    (warning,) = found
    assert "every timestamp ('date') is in 1970" in warning and "yyyymmdd" in warning
    assert manifest["warnings"] == [warning.removeprefix("warning: ")]


def test_warnings_name_a_headerless_files_columns_by_position(tmp_path: Path) -> None:
    """MovieTweetings' `ratings.dat` (`user::imdb id::0-10 rating::time`, no header) has ratings
    of 0; a headerless u.data-shaped export may carry yyyymmdd dates. The warnings named the
    columns by the reader's internal names ('field_2'), which appear nowhere in the file or in the
    `columns:` line (`weight=column 3`)."""
    zero = tmp_path / "ratings.dat"
    zero.write_text("".join(f"{r % 9 + 1}::{r:07d}::{r % 11}::{1_381_620_027 + r}\n" for r in range(60)))
    dates = tmp_path / "u.data"
    dates.write_text("".join(f"{r % 7}\t{r % 11}\t4\t{20150701 + r % 28}\n" for r in range(60)))
    for path, wanted in ((zero, "weigh 0 in column 3 and"), (dates, "every timestamp (column 4) is in 1970")):
        result = _ingest(path, tmp_path / f"out-{path.name}")
        assert result.exit_code == 0, result.output
        (warning,) = [line for line in result.output.splitlines() if line.startswith("warning:")]
        assert wanted in warning and "field_" not in warning, warning


def test_a_role_column_named_twice_in_the_header_is_flagged(tmp_path: Path) -> None:
    """A Last.fm 1K sample published with the header `user timestamp artist_id artist artist_id
    song` (artist and track mbids both called artist_id): the first is read as the item, which
    ingest now says, naming both positions, instead of choosing without a word."""
    path = tmp_path / "lastfm-1k.tsv"
    rows = "".join(f"user_{r % 3:06d}\t2009-05-0{r % 9 + 1}T15:48:25Z\ta{r % 5}\tArtist {r % 5}\tt{r}\tSong {r}\n" for r in range(30))
    path.write_text("user\ttimestamp\tartist_id\tartist\tartist_id\tsong\n" + rows)
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert "2 columns 'artist_id' (columns 3, 5); column 3 is read as the item" in warning, warning
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["items"] == 5 and warning.removeprefix("warning: ") in manifest["warnings"]


def test_an_appended_batch_whose_times_all_land_in_1970_is_flagged(tmp_path: Path) -> None:
    """Day two: a clean log, then a batch exported with yyyymmdd dates. The whole table's latest
    time is 2015, but the appended batch is judged on its own rows."""
    header = "user_id,item_id,rating,date\n"
    first, second = tmp_path / "day1.csv", tmp_path / "day2.csv"
    first.write_text(header + "".join(f"{r % 7},{r % 11},4,{1_436_000_000 + r * 3600}\n" for r in range(40)))
    second.write_text(header + "".join(f"{r % 5 + 7},{r % 13},4,{20150801 + r % 28}\n" for r in range(40)))
    out = tmp_path / "out"
    assert _ingest(first, out).exit_code == 0
    result = _ingest(second, out, "--append")
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert "is in 1970" in warning
    assert json.loads((out / "manifest.json").read_text())["rows_accepted"] == 80


def test_an_unzipped_ml_latest_small_folder_names_the_files_that_are_not_interaction_logs(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    ml_latest(folder)
    (folder / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n")
    (folder / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n")
    result = _ingest(folder, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "links.csv, movies.csv lack(s) the user or item column that ratings.csv has" in line
    assert "--user-col" not in line  # a column option would not fix a folder of other tables


def test_an_unzipped_movielens_25m_folder_names_ratings_csv_not_genome_scores(tmp_path: Path) -> None:
    """genome-scores.csv (movieId, tagId, relevance) maps too (tagId is the one id column left, so
    the user) and sorts first: the errors named it as the interaction file to ingest."""
    folder = tmp_path / "ml-25m"
    folder.mkdir()
    ml_latest(folder)
    (folder / "genome-scores.csv").write_text("movieId,tagId,relevance\n1,1,0.02875\n1,2,0.02375\n")
    (folder / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n")
    result = _ingest(folder, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "movies.csv lack(s) the user or item column that ratings.csv has" in line, line
    assert "(e.g. ratings.csv)" in line
    (folder / "movies.csv").unlink()
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n3,260,classic,1439472355\n")
    (line,) = _ingest(folder, tmp_path / "out").output.strip().splitlines()
    assert "genome-scores.csv, tags.csv map(s) other columns than ratings.csv (user, item, time, weight)" in line


def test_nested_json_values_in_every_line_say_to_flatten_them(tmp_path: Path) -> None:
    """An export whose time is an object in every line (`{"value": ..., "tz": ...}`): every line was
    quarantined as malformed_json; the error says why instead of showing an id as None, naming the
    key and its object before any line is read (test_producer_layouts gives the `jq` line where the
    object holds an id; MongoDB's `{"$date": ...}` wrappers are read)."""
    path = tmp_path / "export.jsonl"
    path.write_text(
        "".join(
            json.dumps({"user_id": n, "item_id": 5, "timestamp": {"value": "2020-01-01", "tz": "UTC"}}) + "\n"
            for n in range(4)
        )
    )
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert """key(s) 'timestamp' ({"value": "2020-01-01", "tz": "UTC"}) hold an object on every line""" in line
    assert "write the value each key stands for in its place first" in line


def test_pandas_float_ids_in_parquet_are_the_integers_they_spell_and_nan_is_missing(tmp_path: Path) -> None:
    """pandas stores an integer id column holding a missing value as float64 (1.0, NaN): the ids
    are those of the same log as CSV (an append of the CSV repeats every row), NaN is missing."""
    users = [1.0, 2.0, float("nan"), 10.0, 2.0]
    items = [7, 8, 9, 7, 7]
    path = tmp_path / "ratings.parquet"
    pl.DataFrame({"userId": users, "movieId": items, "rating": [4.0, 3.0, 5.0, 1.0, 2.0]}).write_parquet(path)
    out = tmp_path / "out"
    assert _ingest(path, out).exit_code == 0
    quarantine = pl.read_parquet(out / "quarantine")
    assert quarantine.select("source_row", "reason").rows() == [(3, "missing_user")]
    assert sorted(pl.read_parquet(out / "users.parquet")["user_id"].cast(pl.String)) == ["1", "10", "2"]
    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating\n1,7,4.0\n2,8,3.0\n10,7,1.0\n2,7,2.0\n")
    assert _ingest(csv, out, "--append").exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["batches"][-1]["reasons"] == {"duplicate": 4} and manifest["users"] == 3


@pytest.mark.parametrize(
    ("line", "field"),
    [('u7,"Weird Al" Yankovic,5', '"Weird Al" Yankovic'), ('u7,"unterminated,5', '"unterminated,5')],
    ids=["quote-then-text", "unterminated"],
)
def test_a_badly_quoted_csv_field_is_named_with_its_line(line: str, field: str, tmp_path: Path) -> None:
    """polars refuses the whole CSV for it; the error names the line and the rule."""
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating\nu1,a,5\nu2,b,4\n" + line + "\nu3,c,3\n")
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (error,) = result.output.strip().splitlines()
    assert f"a quoted field is not closed properly at line 4 ({field!r})" in error


@pytest.mark.parametrize("items", [[[1, 2, 3], [4]], [{"a": 1}, {"a": 2}]], ids=["list", "struct"])
def test_a_parquet_id_column_of_lists_or_structs_says_to_explode_it(items: list, tmp_path: Path) -> None:
    """One row per user with its items (a 'history' column) is not one interaction a row: refused
    with the fix, instead of a cast error (lists) or ids such as '{1}' (structs)."""
    path = tmp_path / "histories.parquet"
    pl.DataFrame({"user_id": ["u1", "u2"], "item_id": items}).write_parquet(path)
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "'item_id'" in line and "hold lists or structs" in line and "--item-col NAME" in line


def test_the_summary_shows_which_column_became_which_role(tmp_path: Path) -> None:
    """Automatic picks are visible without opening manifest.json: Instacart's order_products has
    no user column, and its only other `<name>_id` column becomes the user (an order = a basket)."""
    path = tmp_path / "order_products__prior.csv"
    path.write_text(
        "order_id,product_id,add_to_cart_order,reordered\n2,33120,1,1\n2,28985,2,1\n3,33120,1,0\n"
    )
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (
        "columns:        user=order_id, item=product_id, no weight column (each row counts 1)"
        in result.output
    )
    layout = ml100k(tmp_path)
    result = _ingest(layout.path, tmp_path / "out2")
    assert "columns:        user=column 1, item=column 2, time=column 4, weight=column 3" in result.output


def test_a_json_array_read_as_json_lines_on_request_is_still_named(tmp_path: Path) -> None:
    path = tmp_path / "reviews.json"
    path.write_text(
        "\ufeff" + json.dumps([{"user_id": "u1", "item_id": "i1"}, {"user_id": "u2", "item_id": "i2"}])
    )
    result = _ingest(path, tmp_path / "out", "--format", "jsonl")
    assert result.exit_code == 2, result.output
    assert "a JSON array, not JSON Lines" in result.output


def test_a_run_on_a_users_file_logs_the_columns_it_took(tmp_path: Path) -> None:
    """`recsys run --set data.source=events.csv` shows the automatic mapping in its log too."""
    from pipelines.run import run_pipeline
    from recsys.config import load_config

    layout = retailrocket(tmp_path)
    cfg = load_config(
        None,
        [
            f"data.source={layout.path}",
            f"data.processed_dir={tmp_path / 'p'}",
            "data.min_user_interactions=1",
            'models=[{name="pop", kind="popularity"}]',
            "tracking.enabled=false",
            "evaluation.bootstrap_samples=20",
        ],
    )
    lines: list[str] = []
    run_pipeline(cfg, tracking=False, log=lines.append)
    assert (
        "columns: user=visitorid, item=itemid, time=timestamp, event=event, no weight column (each row counts 1)"
        in lines
    )
    kept = [line for line in lines if line.startswith("kept: ")]
    assert kept and kept[0].endswith("items (steps: aggregate (count))"), lines


def test_a_repeated_header_line_read_as_an_interaction_is_flagged(tmp_path: Path) -> None:
    """Two click exports joined with `cat`: the second header is a valid row of a log without
    weight or time columns (user "user_id", item "item_id"), so ingest says so."""
    path = tmp_path / "clicks.csv"
    path.write_text("user_id,item_id\nu1,i1\nu2,i2\nuser_id,item_id\nu3,i3\n")
    out = tmp_path / "out"
    result = _ingest(path, out)
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert "the header's names ('user_id', 'item_id') are an interaction" in warning and "awk" in warning
    assert json.loads((out / "manifest.json").read_text())["warnings"] == [warning.removeprefix("warning: ")]
    clean = tmp_path / "more.csv"  # a clean batch appended later is not blamed for that line
    clean.write_text("user_id,item_id\nu4,i4\n")
    appended = _ingest(clean, out, "--append")
    assert appended.exit_code == 0 and "warning:" not in appended.output, appended.output


def test_decimal_commas_are_reported_and_ambiguous_ones_stop_ingest(tmp_path: Path) -> None:
    """A `;` export's `4,5` ratings ingest as 4.5 with a `warning:` line (also in the manifest);
    `1,234`-only values stop with one `error:` line naming row, column and data.decimal, which
    then reads them as asked."""
    path = tmp_path / "ratings.csv"
    path.write_text("user;item;rating\nu1;i1;4,5\nu2;i2;3,0\n")
    result = _ingest(path, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "read with a decimal comma (row 1: '4,5' as 4.5)" in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert any("decimal comma" in warning for warning in manifest["warnings"])
    plays = tmp_path / "plays.csv"
    plays.write_text("user;item;plays\nu1;i1;1,234\nu2;i2;2,000\n")
    result = _ingest(plays, tmp_path / "out2")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "row 1, column 'plays'" in line and "--set data.decimal=comma" in line
    assert _ingest(plays, tmp_path / "out2", "--set", "data.decimal=point").exit_code == 0
    written = pl.read_parquet(tmp_path / "out2" / "interactions" / "batch=000001" / "part-0.parquet")
    assert sorted(written["weight"].to_list()) == [1234.0, 2000.0]
