"""ANN retrieval (recsys.ann) and similar items (recsys.similar) on small catalogues, where the
index must give the exact answer: seen items filtered with lists kept full, the exact fallback,
the inner-product augmentation for vectors of unequal norm, persistence without pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.ann import AnnConfig, AnnIndex, augment_items, build_for_serving
from recsys.evaluation.ranking import topk
from recsys.similar import similar_items, unit_rows

N_ITEMS, N_USERS, DIM = 600, 40, 12
EXACT = AnnConfig(min_items=1, expansion_search=N_ITEMS, recall_users=N_USERS)  # ef >= catalogue: exhaustive


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32) * rng.uniform(0.2, 3.0, (N_ITEMS, 1)).astype(np.float32)
    users = rng.standard_normal((N_USERS, DIM)).astype(np.float32)
    seen = sp.random(N_USERS, N_ITEMS, density=0.05, format="csr", random_state=1, dtype=np.float32)
    seen.data[:] = 1.0
    return items, users, seen


@pytest.mark.parametrize("unit", [False, True], ids=["augmented", "unit"])
def test_the_index_returns_the_exact_answer_on_a_small_catalogue(data, unit):
    items, users, seen = data
    vectors = unit_rows(items) if unit else items
    index = build_for_serving(vectors, users, EXACT)
    assert index is not None and index.cosine == unit and index.report["augmented"] == (not unit)
    assert index.report["recall@10"] == index.report["recall@100"] == 1.0
    got_items, got_scores = index.topk(users, 20, seen)
    want_items, want_scores = topk(users, vectors, 20, exclude=seen)
    np.testing.assert_array_equal(got_items, want_items)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)


def test_augmented_vectors_are_unit_and_rank_like_the_inner_product(data):
    items, users, _ = data
    scale = float(np.linalg.norm(items, axis=1).max())
    augmented = augment_items(items, scale)
    np.testing.assert_allclose(np.linalg.norm(augmented, axis=1), 1.0, atol=1e-5)
    query = np.hstack([users, np.zeros((N_USERS, 1), np.float32)])
    np.testing.assert_allclose(query @ augmented.T, users @ items.T / scale, rtol=1e-4, atol=1e-5)


def test_filtered_lists_stay_full_and_a_row_past_the_overfetch_limit_is_answered_exactly(data, monkeypatch):
    import recsys.evaluation.ranking  # AnnIndex imports its exact path when it needs it (start-up)

    items, users, seen = data
    rng = np.random.default_rng(3)
    heavy = sp.lil_matrix(seen.shape, dtype=np.float32)
    for row, count in enumerate(rng.integers(0, 400, N_USERS)):
        heavy[row, rng.choice(N_ITEMS, count, replace=False)] = 1.0
    heavy = sp.csr_matrix(heavy)
    index = AnnIndex.build(items, EXACT.model_copy(update={"max_overfetch": 200}))
    exact_rows = []  # a spy on the exact fallback: only rows past the over-fetch limit may reach it
    monkeypatch.setattr(recsys.evaluation.ranking, "topk", lambda v, *a, **kw: exact_rows.append(len(v)) or topk(v, *a, **kw))
    got, scores = index.topk(users, 50, heavy)
    assert sum(exact_rows) == int((np.diff(heavy.indptr) > 200).sum())  # the over-fetch kept the rest full
    monkeypatch.undo()
    assert (got >= 0).all() and np.isfinite(scores).all()  # every list has its 50 items
    assert not np.take_along_axis(heavy.toarray() > 0, got, axis=1).any()  # none of them seen
    np.testing.assert_array_equal(got, topk(users, items, 50, exclude=heavy)[0])
    # a user who has seen all but 3 items gets those 3, padded like the exact path
    almost = sp.csr_matrix(np.hstack([np.ones((1, N_ITEMS - 3)), np.zeros((1, 3))]).astype(np.float32))
    got, scores = index.topk(users[:1], 10, almost)
    assert sorted(got[0, :3]) == [N_ITEMS - 3, N_ITEMS - 2, N_ITEMS - 1] and (got[0, 3:] == -1).all()


def test_an_approximate_index_still_fills_every_list(data):
    """ef far below what exactness needs: lists may differ from exact, but stay full and unseen."""
    items, users, seen = data
    index = AnnIndex.build(items, AnnConfig(min_items=1, expansion_search=8, connectivity=4, expansion_add=8))
    got, _ = index.topk(users, 30, seen)
    assert (got >= 0).all() and not np.take_along_axis(seen.toarray() > 0, got, axis=1).any()
    assert all(len(set(row)) == 30 for row in got)


def test_saved_index_is_the_library_format_plus_json_and_answers_the_same(data, tmp_path: Path):
    items, users, seen = data
    index = build_for_serving(items, users, EXACT)
    index.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann.faiss", "ann.json"]
    loaded = AnnIndex.load(tmp_path, items)
    assert loaded.report["recall@10"] == 1.0 and loaded.params == index.params
    for a, b in zip(loaded.topk(users, 10, seen), index.topk(users, 10, seen), strict=True):
        np.testing.assert_array_equal(a, b)
    assert AnnIndex.load(tmp_path / "missing", items) is None


def test_no_index_below_the_configured_catalogue_size(data):
    items, users, _ = data
    assert build_for_serving(items, users, AnnConfig(min_items=N_ITEMS + 1)) is None
    assert build_for_serving(items, users, AnnConfig(min_items=1, enabled=False)) is None


@pytest.mark.parametrize("use_ann", [False, True])
def test_similar_items_are_the_cosine_top_k_and_never_the_query_item(data, use_ann):
    items, _, _ = data
    items = items.copy()
    items[5] = items[4] * 2.0  # an exact duplicate direction: cosine 1 with item 4, a tie with itself
    unit = unit_rows(items)
    ann = AnnIndex.build(unit, EXACT) if use_ann else None
    queries = np.arange(0, N_ITEMS, 7)
    got, scores = similar_items(items, queries, 15, ann=ann)
    assert not (got == queries[:, None]).any()
    cosine = unit[queries] @ unit.T
    cosine[np.arange(queries.size), queries] = -np.inf
    want = np.argsort(-cosine, axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, np.take_along_axis(cosine, want, axis=1), atol=1e-5)
    top_of_4, _ = similar_items(items, np.array([4, 5]), 1, ann=ann)
    assert top_of_4.ravel().tolist() == [5, 4]


def test_readme_config_blocks_for_the_sequence_tower_the_item_tower_and_ann_serving_load(tmp_path: Path):
    """From config: the README's TOML for the sequence tower and `[serving.ann]`, plus an item tower,
    load into the configs the pipeline trains and logs (README stays true to the code)."""
    import re

    from recsys.config import load_config

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    sequence = next(b for b in blocks if 'user_input = "sequence"' in b)
    ann = next(b for b in blocks if "[serving.ann]" in b)
    path = tmp_path / "run.toml"
    path.write_text(sequence + '\n[[models]]\nname = "items"\nkind = "item_tower"\n\n' + ann)
    cfg = load_config(path)
    assert [(m.kind, getattr(m, "user_input", None)) for m in cfg.models] == [("two_tower", "sequence"), ("item_tower", None)]
    assert cfg.serving.ann.min_items == 100_000 and cfg.serving.ann.expansion_search == 512


def test_masked_items_are_never_returned_and_do_not_push_rows_onto_the_exact_fallback(data, monkeypatch):
    """Items the model never trained on (a quarter of the catalogue here, more than `max_overfetch`)
    are filtered from the candidates for every row; counting them as each row's seen items would send
    every row to exact search."""
    import recsys.evaluation.ranking  # AnnIndex imports its exact path when it needs it (start-up)

    items, users, seen = data
    masked = np.zeros(N_ITEMS, dtype=bool)
    masked[np.random.default_rng(5).choice(N_ITEMS, N_ITEMS // 4, replace=False)] = True
    index = AnnIndex.build(items, EXACT.model_copy(update={"max_overfetch": 100}))
    exact_rows = []
    monkeypatch.setattr(recsys.evaluation.ranking, "topk", lambda v, *a, **kw: exact_rows.append(len(v)) or topk(v, *a, **kw))
    got, scores = index.topk(users, 20, seen, masked)
    monkeypatch.undo()
    assert sum(exact_rows) == 0 and not masked[got].any()
    want, want_scores = topk(users, items, 20, exclude=seen, masked_items=masked)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
