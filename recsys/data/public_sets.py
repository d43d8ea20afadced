"""The public data sets `recsys data fetch` knows (name -> archive, folder, ratings file, size), apart
from the fetching: `recsys --help` lists their names, and `recsys.data.fetch` loads urllib, zipfile
and rich's progress bars (~90 ms of every command's start-up when the CLI imported it for the names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DatasetName = Literal["movielens-100k", "movielens-1m", "movielens-20m", "lastfm-2k"]

BASE_URL = "https://files.grouplens.org/datasets/movielens"
HETREC_URL = "https://files.grouplens.org/datasets/hetrec2011"


@dataclass(frozen=True)
class PublicDataset:
    archive: str  # file name on the server, e.g. ml-100k.zip
    folder: str  # top-level folder inside the zip (the cache folder when the zip has none)
    ratings: str  # the interaction file inside `folder`
    size: int  # bytes, for the progress bar when the server sends no Content-Length
    base_url: str = ""  # where the archive lives (default BASE_URL)


DATASETS: dict[str, PublicDataset] = {
    "movielens-100k": PublicDataset("ml-100k.zip", "ml-100k", "u.data", 4_924_029),
    "movielens-1m": PublicDataset("ml-1m.zip", "ml-1m", "ratings.dat", 5_917_549),
    "movielens-20m": PublicDataset("ml-20m.zip", "ml-20m", "ratings.csv", 198_702_078),
    # HetRec 2011 Last.fm: play counts (`userID artistID weight`, tab-separated), no timestamps.
    "lastfm-2k": PublicDataset(
        "hetrec2011-lastfm-2k.zip", "hetrec2011-lastfm-2k", "user_artists.dat", 2_600_000, HETREC_URL  # size: approximate
    ),
}
