"""Popularity: the shared contract plus hand-computed counts, weight sums and tie order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.models.popularity import Popularity, PopularityConfig, popularity_scores

from .contract import RecommenderContract


class TestPopularityContract(RecommenderContract):
    model_config = PopularityConfig(name="pop")
    min_recall_at_10 = 0.15  # popular items span all clusters: above random (~0.09), far below WALS
    min_fold_in_overlap = 1.0  # every user's vector is [1]: fold-in must give exactly the same lists
    seed_sensitive = False


def small() -> sp.csr_matrix:
    """4 users x 5 items; counts per item [2, 3, 1, 0, 2], weight sums [6, 3, 9, 0, 2]; one explicit zero."""
    dense = np.array(
        [
            [5, 1, 0, 0, 0],
            [1, 1, 0, 0, 1],
            [0, 1, 9, 0, 0],
            [0, 0, 0, 0, 1],
        ],
        dtype=np.float32,
    )
    m = sp.csr_matrix(dense)
    # an explicitly stored zero is not an interaction
    return sp.csr_matrix(
        (np.r_[m.data, 0.0], np.r_[m.indices, 3], np.r_[m.indptr[:-1], m.nnz + 1]), shape=m.shape
    )


def test_popularity_scores_count_users_and_sum_weights_ignoring_explicit_zeros():
    m = small()
    assert m.nnz == 9  # the explicit zero is stored
    np.testing.assert_array_equal(popularity_scores(m, "count"), [2, 3, 1, 0, 2])
    np.testing.assert_array_equal(popularity_scores(m, "weight"), [6, 3, 9, 0, 2])
    np.testing.assert_array_equal(popularity_scores(m), [2, 3, 1, 0, 2])  # the default is the count
    assert popularity_scores(m, "count").dtype == np.float32 and popularity_scores(m, "weight").dtype == np.float32


@pytest.mark.parametrize(
    ("by", "expected_top"),
    [
        ("count", [1, 0, 4, 2, 3]),  # counts 3, 2, 2 (tie: lower index first), 1, 0
        ("weight", [2, 0, 1, 4, 3]),  # sums 9, 6, 3, 2, 0
    ],
)
def test_recommends_by_popularity_with_ties_to_the_lower_index(by, expected_top):
    model = Popularity(PopularityConfig(name="p", by=by)).fit(small())
    np.testing.assert_array_equal(model.item_factors[:, 0], popularity_scores(small(), by))
    np.testing.assert_array_equal(model.user_factors, np.ones((4, 1), dtype=np.float32))
    items, scores = model.recommend([0, 3], k=5)
    np.testing.assert_array_equal(items, [expected_top, expected_top])
    np.testing.assert_array_equal(scores[0], popularity_scores(small(), by)[expected_top])


def test_seen_items_are_masked_and_the_rest_keep_popularity_order():
    m = small()
    model = Popularity(name="p").fit(m)
    items, _ = model.recommend([1], k=3, exclude=m)  # user 1 saw items 0, 1, 4
    np.testing.assert_array_equal(items, [[2, 3, -1]])


def test_fold_in_ignores_the_history_and_gives_the_all_ones_vector():
    model = Popularity(name="p").fit(small())
    np.testing.assert_array_equal(model.fold_in(small()[:2]), np.ones((2, 1), dtype=np.float32))


def test_save_waits_for_another_writer_removes_a_killed_saves_copy_and_keeps_the_umask(tmp_path):
    """Two saves of one model directory (two `recsys train --models DIR`) once collided in the swap
    ('Directory not empty') and left their staging copies behind; mkdtemp's 0700 made every saved
    model unreadable to the rest of a team sharing the directory."""
    import os
    import threading
    import time

    from filelock import FileLock

    from recsys.models.base import Recommender

    model = Popularity(PopularityConfig(name="pop")).fit(small())
    target = tmp_path / "pop"
    killed = tmp_path / ".pop.saving-deadbeef"  # what a save killed mid-write leaves
    killed.mkdir()
    (killed / "config.json").write_text("{")
    with FileLock(str(tmp_path / ".pop.lock")):  # another writer is saving
        saving = threading.Thread(target=model.save, args=(target,))
        saving.start()
        time.sleep(0.5)
        assert not target.exists()  # it waits its turn
    saving.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pop.lock", "pop"]
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == 0o777 & ~umask
    assert Recommender.load(target).n_items == 5


def test_a_save_killed_while_replacing_the_old_model_leaves_no_half_deleted_directory(tmp_path, monkeypatch):
    """The old model directory was deleted in place before the new one moved in: a kill during the
    delete left some of its files gone and others there, where `recsys evaluate` loads it. The old
    one is moved aside whole now, and deleted once the new one is in place."""
    import shutil

    from recsys.models.base import Recommender

    target = tmp_path / "pop"
    Popularity(PopularityConfig(name="pop")).fit(small()).save(target)
    real_rmtree = shutil.rmtree

    def killed_while_deleting(path, *args, **kwargs):
        files = sorted(p for p in Path(path).rglob("*") if p.is_file())
        if files:
            files[-1].unlink()  # part of it gone, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed_while_deleting)
    newer = Popularity(PopularityConfig(name="pop")).fit(small()[:, :4])
    with pytest.raises(KeyboardInterrupt):
        newer.save(target)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert Recommender.load(target).n_items == 4  # the whole new model, never a partial old one


KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
import numpy as np, scipy.sparse as sp
from recsys.models.popularity import Popularity, PopularityConfig

target = Path(sys.argv[1])
counts = sp.csr_matrix(np.array([[5, 1, 0, 0, 0], [1, 1, 0, 0, 1], [0, 1, 9, 0, 0], [0, 0, 0, 0, 1]], dtype=np.float32))
Popularity(PopularityConfig(name="pop")).fit(counts).save(target)
real_replace, renames = os.replace, []

def replace(src, dst, *args, **kwargs):
    renames.append(src)
    if len(renames) == 2:  # the old model moved aside, the new one not yet in its place
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace
Popularity(PopularityConfig(name="pop")).fit(counts[:, :4]).save(target)
"""


@pytest.mark.parametrize("next_start", ["load", "save"])
def test_a_save_killed_between_its_renames_is_finished_at_the_next_start(tmp_path, next_start):
    """A save moves the old model aside, then the new one in: a kill -9 between the two left no
    model at the path (`recsys evaluate` said it cannot read it), and the next save deleted both
    whole copies as leftovers. The next load (or save) finishes the swap: the new model, written
    whole before the swap began, moves in."""
    import subprocess
    import sys

    from recsys.models.base import Recommender

    target = tmp_path / "pop"
    killed = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(target)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not target.exists()
    if next_start == "save":  # a save of another model at the same path: the finished swap is replaced
        Popularity(PopularityConfig(name="pop")).fit(small()[:, :3]).save(target)
        assert Recommender.load(target).n_items == 3
    else:
        assert Recommender.load(target).n_items == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pop.lock", "pop"]


def test_ties_go_by_the_raw_id_so_the_file_layout_does_not_move_the_lists(tmp_path):
    """The same log as one CSV (by user) and as a directory of yearly files: ingest numbers items
    in the order it first meets them, so the layouts give the tied items other indices, and with
    ties broken by index the popularity lists (and recall: 0.1828 against 0.1831 on an
    ml-latest-small-like log) moved with the layout under the same fingerprint and split. Through
    the pipeline's `train_model`, which hands the model the split's raw item ids."""
    import datetime as dt

    from pipelines.train import train_model
    from recsys.config import DataConfig, SplitConfig
    from recsys.data.ingest import ingest
    from recsys.data.splits import split_data
    from recsys.data.storage import load_processed

    rows = []  # 16 users, each with one item of 2019 (e..h) and one of 2020 (a..d): every item has 4 users
    for u in range(16):
        rows.append((f"u{u:02d}", "abcd"[u % 4], dt.datetime(2020, 3, 1 + u, tzinfo=dt.UTC)))
        rows.append((f"u{u:02d}", "hgfe"[u // 4], dt.datetime(2019, 3, 1 + u, tzinfo=dt.UTC)))
    line = "{},{},{}\n".format
    one = tmp_path / "one" / "log.csv"
    one.parent.mkdir()
    one.write_text("user_id,item_id,timestamp\n" + "".join(line(u, i, t.isoformat()) for u, i, t in rows))
    yearly = tmp_path / "yearly"
    yearly.mkdir()
    for year in (2019, 2020):
        text = "".join(line(u, i, t.isoformat()) for u, i, t in rows if t.year == year)
        (yearly / f"{year}.csv").write_text("user_id,item_id,timestamp\n" + text)

    lists, recalls, orders = [], [], []
    for source in (one, yearly):
        out = tmp_path / f"processed-{source.name}"
        ingest(source, out, DataConfig())
        split = split_data(load_processed(out), SplitConfig(protocol="random", test_fraction=0.5, seed=3))
        model = train_model(PopularityConfig(name="pop"), split)
        users = np.arange(split.n_users)
        items, _ = model.recommend(users, k=3, exclude=split.train)
        by_user = {split.user_ids[u]: [split.item_ids[i] for i in row if i >= 0] for u, row in zip(users, items, strict=True)}
        lists.append(by_user)
        truth = split.test.tolil().rows
        hits = [len(set(row) & set(truth[u])) / max(1, min(3, len(truth[u]))) for u, row in zip(users, items, strict=True) if truth[u]]
        recalls.append(float(np.mean(hits)))
        orders.append(list(split.item_ids))
    assert orders[0] != orders[1]  # the layouts do number the items otherwise
    assert lists[0] == lists[1]
    assert recalls[0] == pytest.approx(recalls[1], abs=1e-12)


def test_an_unknown_users_served_list_orders_ties_by_the_raw_item_id(tmp_path):
    """Serving's popularity answer (a user with no vector and no history) ordered tied items by
    index, which follows the order the log was read in; by the raw id now, as the model does."""
    from recsys.data.split import Split
    from recsys.tracking.pyfunc import ServingIndex, answer, write_serving_artifacts

    train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32))  # every item once
    ids = np.array(["d", "c", "b", "a"], dtype=object)
    split = Split(protocol="random", train=train, test=train, user_ids=np.array(["u0", "u1"], dtype=object), item_ids=ids)
    model = Popularity(PopularityConfig(name="pop")).fit(train, item_ids=ids)
    served = answer(ServingIndex(write_serving_artifacts(model, split, tmp_path / "serving")), {"user_id": ["stranger"], "k": 4})
    assert served["source"].tolist() == ["popularity"]
    assert served["item_ids"][0] == ["a", "b", "c", "d"]
    np.testing.assert_allclose(served["scores"][0], [1, 1, 1, 1], rtol=1e-6)


@pytest.mark.parametrize("as_text", [False, True])
def test_break_ties_orders_each_run_of_equal_scores_by_the_ids_text(as_text):
    """Against a direct sort: by score, ties by the id's text ("10" before "9"), first id highest;
    scores keep their order across runs and zero stays zero. Numeric and text id arrays both."""
    from recsys.models.popularity import break_ties

    rng = np.random.default_rng(7)
    scores = rng.integers(0, 6, size=400).astype(np.float32)  # long runs of ties, zeros included
    ids = rng.permutation(400) * 3 + 1
    ids = ids.astype(str).astype(object) if as_text else ids
    out = break_ties(scores, ids)
    text = np.asarray(ids).astype(str)
    expected = np.lexsort((text, -scores))  # score descending, then text ascending
    positive = expected[scores[expected] > 0]
    assert np.all(np.diff(out[positive]) < 0)  # strictly in the expected order: every tie set apart
    assert np.all(out[scores == 0] == 0)
    np.testing.assert_allclose(out, scores, rtol=1e-5)  # a few float32 steps: still the popularity


def test_scores_are_the_exact_popularity_in_process_saved_and_served_ties_still_by_the_raw_id(tmp_path):
    """A popularity score is a count (or a weight sum): it read 3.0000005 where three items tied
    at 3 (served as JSON too: 42.00000762939453 for a tie at 42), the float32 steps `break_ties`
    adds to order the ties. The steps still order them (by the raw id's text, as before), but
    every score reported - `recommend`, after save/load, and served from each source (the
    model's own users, fold-in, and the popularity fallback of any model) - is the popularity
    itself, exactly (the counts are integers below 2**24: exact in float32)."""
    from recsys.data.split import Split
    from recsys.tracking.pyfunc import ServingIndex, answer, write_serving_artifacts

    # item counts [3, 3, 3, 2, 1]; by the id's text the tied three go a (1), b (2), c (0)
    dense = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=np.float32)
    train = sp.csr_matrix(dense)
    ids = np.array(["c", "a", "b", "e", "d"], dtype=object)
    model = Popularity(PopularityConfig(name="pop")).fit(train, item_ids=ids)
    want_items, want_scores = [1, 2, 0, 3, 4], [3.0, 3.0, 3.0, 2.0, 1.0]

    items, scores = model.recommend([0], k=5)
    assert items[0].tolist() == want_items
    assert scores[0].tolist() == want_scores  # exact: no tolerance

    loaded = Popularity.load(model.save(tmp_path / "pop"))
    items, scores = loaded.recommend([0], k=5)
    assert items[0].tolist() == want_items and scores[0].tolist() == want_scores

    split = Split(protocol="random", train=train, test=train, user_ids=np.array(["u0", "u1", "u2"], dtype=object),
                  item_ids=ids)  # fmt: skip
    index = ServingIndex(write_serving_artifacts(model, split, tmp_path / "serving"))
    served = answer(index, {"user_id": ["u2", "newcomer", "stranger"], "history": [None, ["e"], None], "k": 5})
    assert served["source"].tolist() == ["model", "fold_in", "popularity"]
    assert served["item_ids"].tolist() == [["e", "d"], ["a", "b", "c", "d"], ["a", "b", "c", "e", "d"]]
    assert served["scores"].tolist() == [[2.0, 1.0], [3.0, 3.0, 3.0, 1.0], want_scores]


def test_a_model_and_serving_artifacts_saved_before_the_exact_scores_still_load_and_serve(tmp_path):
    """Saved before the counts were kept beside the ranked scores (no `item_scores` in the model's
    factors, no `popularity_counts` in the serving tensors): the same lists, reporting the ranked
    scores as they did."""
    from safetensors.numpy import load_file, save_file

    from recsys.data.split import Split
    from recsys.tracking.pyfunc import ServingIndex, answer, write_serving_artifacts

    train = sp.csr_matrix(np.array([[1, 1, 1, 0], [1, 1, 0, 1]], dtype=np.float32))  # counts [2, 2, 1, 1]
    ids = np.array(["b", "a", "d", "c"], dtype=object)
    model = Popularity(PopularityConfig(name="pop")).fit(train, item_ids=ids)
    ranked = model.item_factors[:, 0]
    split = Split(protocol="random", train=train, test=train, user_ids=np.array(["u0", "u1"], dtype=object), item_ids=ids)
    directory = write_serving_artifacts(model, split, tmp_path / "serving")
    for path, key in ((directory / "model" / "factors.safetensors", "item_scores"),
                      (directory / "serving.safetensors", "popularity_counts")):  # fmt: skip
        tensors = load_file(str(path))
        save_file({name: value for name, value in tensors.items() if name != key}, str(path))
    old = Popularity.load(directory / "model")
    items, scores = old.recommend([0], k=4)
    assert items[0].tolist() == [1, 0, 3, 2] and scores[0].tolist() == ranked[[1, 0, 3, 2]].tolist()
    served = answer(ServingIndex(directory), {"user_id": ["stranger", "newcomer"], "history": [None, ["a"]], "k": 3})
    assert served["source"].tolist() == ["popularity", "fold_in"]
    assert served["item_ids"].tolist() == [["a", "b", "c"], ["b", "c", "d"]]
    assert served["scores"][1] == ranked[[0, 3, 2]].astype(float).tolist()
