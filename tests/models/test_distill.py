"""Knowledge distillation into the two-tower: the KL term against a direct formula over the candidate
set, the teacher's top-m, that weight 0 leaves training untouched, that a real teacher pulls the
student towards its rankings, self-distillation from a checkpoint, config checks and the pipeline
and CLI hand-off of teachers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from recsys.cli import app
from recsys.config import load_config
from recsys.distill import (
    DistillConfig,
    TeacherTargets,
    distillation_loss,
    distillation_waves,
    order_by_teacher,
    teacher_targets,
)
from recsys.errors import ConfigError, ModelError
from recsys.evaluation.ranking import topk
from recsys.models.two_tower import TwoTower, TwoTowerConfig
from recsys.models.wals import WALS, WALSConfig

from .conftest import make_planted

STUDENT = dict(
    dim=16, epochs=3, num_negatives=16, batch_size=128, lr=0.05, seed=3, threads=1, device="cpu", quiet=True
)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _kl_formula(student: np.ndarray, teacher: np.ndarray, t: float) -> float:
    """T^2 * mean_rows sum_j p_t,j (log p_t,j - log p_s,j) with both softmaxes at temperature T."""
    p_t, p_s = _softmax(teacher / t), _softmax(student / t)
    return float((p_t * (np.log(p_t) - np.log(p_s))).sum(axis=1).mean() * t**2)


# ----------------------------------------------------------------------------- the loss term
def test_distillation_loss_is_the_kl_over_positive_shared_negatives_and_teacher_top_m():
    rng = np.random.default_rng(0)
    n_users, n_items, d_t, d_s = 5, 9, 3, 4
    u_t, v_t = rng.normal(size=(n_users, d_t)), rng.normal(size=(n_items, d_t))
    users, items, negs = np.array([0, 3, 4]), np.array([1, 2, 8]), np.array([5, 6])
    top = np.array([[7, 0]] * n_users)
    targets = TeacherTargets(
        torch.tensor(u_t, dtype=torch.float64), torch.tensor(v_t, dtype=torch.float64),
        torch.tensor(top), scale=2.5, temperature=1.7, weight=0.8,
    )  # fmt: skip
    student_u, student_v = rng.normal(size=(3, d_s)), rng.normal(size=(n_items, d_s))
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    loss = distillation_loss(
        targets, t(users).long(), t(items).long(), t(negs).long(),
        user_vecs=t(student_u), pos_vecs=t(student_v[items]), neg_vecs=t(student_v[negs]),
        top_vecs=t(student_v[top[users]]), temperature=0.2,
    )  # fmt: skip

    candidates = np.concatenate([items[:, None], np.broadcast_to(negs, (3, 2)), top[users]], axis=1)
    student = np.einsum("bd,bcd->bc", student_u, student_v[candidates]) / 0.2
    teacher = 2.5 * np.einsum("bd,bcd->bc", u_t[users], v_t[candidates])
    assert loss.item() == pytest.approx(0.8 * _kl_formula(student, teacher, 1.7), rel=1e-10)


def test_per_example_negatives_and_padded_top_m_columns_are_dropped_from_both_sides():
    rng = np.random.default_rng(1)
    u_t, v_t = rng.normal(size=(2, 3)), rng.normal(size=(6, 3))
    top = np.array([[4, -1], [5, 3]])  # user 0 has one unseen item only: its second slot is padding
    targets = TeacherTargets(
        torch.tensor(u_t),
        torch.tensor(v_t),
        torch.tensor(top),
        scale=1.0,
        temperature=1.0,
        weight=1.0,
        padded=True,
    )
    users, items, negs = np.array([0, 1]), np.array([0, 1]), np.array([[2, 3], [0, 2]])
    s_u, s_v = rng.normal(size=(2, 4)), rng.normal(size=(6, 4))
    t = torch.tensor
    loss = distillation_loss(
        targets, t(users), t(items), t(negs), user_vecs=t(s_u), pos_vecs=t(s_v[items]),
        neg_vecs=t(s_v[negs]), top_vecs=t(s_v[np.maximum(top, 0)]), temperature=1.0,
    )  # fmt: skip

    rows = []
    for b, cands in enumerate([[0, 2, 3, 4], [1, 0, 2, 5, 3]]):  # padding column left out of row 0
        cands = np.array(cands)
        rows.append(_kl_formula((s_u[b] @ s_v[cands].T)[None], (u_t[b] @ v_t[cands].T)[None], 1.0))
    assert loss.item() == pytest.approx(np.mean(rows), rel=1e-10)


def test_teacher_top_m_is_the_teachers_best_unseen_items_and_shapes_must_match():
    data = make_planted(seed=2)
    wals = WALS(WALSConfig(name="wals", factors=8, iterations=4, seed=0)).fit(data.train)
    targets = teacher_targets(
        wals, data.train, DistillConfig(teacher="wals", top_m=5), student_temperature=0.1
    )
    expected, _ = topk(wals.user_factors, wals.item_factors, 5, exclude=data.train, device="cpu")
    assert np.array_equal(targets.top_items.numpy(), expected)
    seen = data.train.toarray()[np.arange(data.n_users)[:, None], targets.top_items.numpy()]
    assert not seen.any()  # never one of the user's training items
    assert targets.scale == pytest.approx(10.0)  # read like the student's cosines: 1 / its temperature

    with pytest.raises(ModelError, match="same split"):
        teacher_targets(wals, data.train[:, :-1].tocsr(), DistillConfig(teacher="wals"), 0.1)


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def planted():
    return make_planted(seed=4)


@pytest.fixture(scope="module")
def wals_teacher(planted):
    return WALS(WALSConfig(name="wals", factors=16, iterations=8, regularization=0.1, seed=0)).fit(
        planted.train
    )


def _student(planted, teacher=None, **distill) -> TwoTower:
    cfg = TwoTowerConfig(
        name="tt", **STUDENT, distill=DistillConfig(teacher="wals", **distill) if distill else None
    )
    return TwoTower(cfg).set_teacher(teacher).fit(planted.train)


def test_weight_zero_trains_exactly_like_no_distillation(planted, wals_teacher):
    """The teacher's top-m rides along in the forward pass but draws nothing from the generator and
    adds nothing to the gradient: the same seed gives the same network."""
    plain = _student(planted)
    silent = _student(planted, wals_teacher, weight=0.0, top_m=10)
    assert np.allclose(plain.item_factors, silent.item_factors, atol=1e-6)
    assert np.allclose(plain.user_factors, silent.user_factors, atol=1e-6)


def _top_overlap(a, b, train, k: int = 10) -> float:
    top_a, _ = topk(a.user_factors, a.item_factors, k, exclude=train, device="cpu")
    top_b, _ = topk(b.user_factors, b.item_factors, k, exclude=train, device="cpu")
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b, strict=True)]))


def test_distillation_pulls_the_students_rankings_towards_the_teachers(planted, wals_teacher):
    plain = _student(planted)
    distilled = _student(planted, wals_teacher, weight=5.0, temperature=1.0, top_m=20)
    before, after = (
        _top_overlap(plain, wals_teacher, planted.train),
        _top_overlap(distilled, wals_teacher, planted.train),
    )
    assert after > before + 0.05, (before, after)


def test_self_distillation_from_a_saved_checkpoint(planted, tmp_path: Path):
    first = _student(planted)
    first.save(tmp_path / "tt-v1")
    cfg = TwoTowerConfig(
        name="tt",
        **STUDENT,
        distill=DistillConfig(teacher="self", checkpoint=str(tmp_path / "tt-v1"), weight=1.0),
    )
    second = TwoTower(cfg).fit(planted.train)
    assert second.history and np.isfinite(second.history[-1]["loss"])
    assert not np.allclose(second.item_factors, first.item_factors)

    WALS(WALSConfig(name="w", factors=4, iterations=2)).fit(planted.train).save(tmp_path / "wals")
    wrong = cfg.model_copy(
        update={"distill": DistillConfig(teacher="self", checkpoint=str(tmp_path / "wals"))}
    )
    with pytest.raises(ModelError, match="self-distillation needs a saved two_tower"):
        TwoTower(wrong).fit(planted.train)


def test_a_named_teacher_that_was_not_given_is_a_clear_error(planted):
    with pytest.raises(ModelError, match="needs the trained teacher"):
        _student(planted, None, weight=1.0)


# ----------------------------------------------------------------------------- config
def _models(*specs: str) -> str:
    return "models=[" + ", ".join(specs) + "]"


def test_config_checks_teachers_and_orders_students_after_them():
    tt = 'kind="two_tower", dim=8'
    cfg = load_config(None, [_models(
        f'{{name="kd2", {tt}, distill={{teacher="kd1"}}}}', f'{{name="kd1", {tt}, distill={{teacher="wals"}}}}',
        '{name="wals", kind="wals"}', '{name="pop", kind="popularity"}',
    )])  # fmt: skip
    assert [m.name for m in order_by_teacher(cfg.models)] == ["wals", "kd1", "kd2", "pop"]
    assert [[m.name for m in wave] for wave in distillation_waves(cfg.models)] == [
        ["wals", "pop"],
        ["kd1"],
        ["kd2"],
    ]

    with pytest.raises(ConfigError, match="not a model of this run"):
        load_config(None, [_models(f'{{name="kd", {tt}, distill={{teacher="nope"}}}}')])
    with pytest.raises(ConfigError, match="cycle"):
        load_config(
            None,
            [
                _models(
                    f'{{name="a", {tt}, distill={{teacher="b"}}}}',
                    f'{{name="b", {tt}, distill={{teacher="a"}}}}',
                )
            ],
        )
    with pytest.raises(ConfigError, match="names the model itself"):
        load_config(None, [_models(f'{{name="a", {tt}, distill={{teacher="a"}}}}')])
    with pytest.raises(ConfigError, match="needs distill.checkpoint"):
        load_config(None, [_models(f'{{name="a", {tt}, distill={{teacher="self"}}}}')])


# ----------------------------------------------------------------------------- pipeline and CLI
TINY = [
    "data.synthetic.n_users=120",
    "data.synthetic.n_items=60",
    "data.synthetic.n_clusters=3",
    "data.synthetic.interactions_per_user=12",
    "data.min_user_interactions=2",
    "split.validation_fraction=0.15",
    "evaluation.ks=[5, 20]",
    "evaluation.bootstrap_samples=50",
    "tracking.enabled=false",
    "folding.enabled=false",
]
STUDENT_TOML = 'kind="two_tower", dim=8, epochs=2, num_negatives=8, batch_size=128, quiet=true'


def test_pipeline_trains_teachers_first_and_a_failed_teacher_fails_only_its_student(tmp_path: Path):
    from pipelines.run import run_pipeline

    cfg = load_config(None, [*TINY, f'data.processed_dir="{tmp_path / "p"}"', f'data.raw_dir="{tmp_path / "raw"}"', _models(
        f'{{name="kd", {STUDENT_TOML}, distill={{teacher="wals", top_m=5}}}}',
        '{name="wals", kind="wals", factors=8, iterations=3}',
        f'{{name="orphan", {STUDENT_TOML}, distill={{teacher="boom"}}}}',
        '{name="boom", kind="two_tower", dim=8, epochs=2, lr=1e30, normalize=false, batch_size=64, quiet=true}',
    )])  # fmt: skip
    result = run_pipeline(cfg, tracking=False, log=lambda _: None)

    status = {m.name: m.status for m in result.models}
    assert [m.name for m in result.models] == ["kd", "wals", "orphan", "boom"]  # config order kept
    assert status == {"kd": "ok", "wals": "ok", "orphan": "failed", "boom": "failed"}
    orphan = next(m for m in result.models if m.name == "orphan")
    assert "no trained 'boom'" in orphan.error


def test_cli_trains_a_student_after_its_teacher_and_alone_once_the_teacher_is_saved(tmp_path: Path):
    config = tmp_path / "run.toml"
    cfg = load_config(None, [*TINY, f'data.processed_dir="{tmp_path / "p"}"', f'data.raw_dir="{tmp_path / "raw"}"', _models(
        f'{{name="kd", {STUDENT_TOML}, distill={{teacher="wals", top_m=5}}}}',
        '{name="wals", kind="wals", factors=8, iterations=3}',
    )])  # fmt: skip
    config.write_text(cfg.to_toml())
    models = tmp_path / "models"
    runner = CliRunner()

    alone = runner.invoke(app, ["train", "--config", str(config), "--models", str(models), "--model", "kd"])
    assert alone.exit_code == 2 and "distills from 'wals'" in alone.output

    both = runner.invoke(app, ["train", "--config", str(config), "--models", str(models)])
    assert both.exit_code == 0, both.output
    assert both.output.index("trained wals") < both.output.index("trained kd")  # teacher first
    saved = json.loads((models / "kd" / "config.json").read_text())
    assert saved["config"]["distill"]["teacher"] == "wals"  # the student records what it learned from

    again = runner.invoke(app, ["train", "--config", str(config), "--models", str(models), "--model", "kd"])
    assert again.exit_code == 0, again.output


def test_teacher_targets_by_hand_top_m_padding_scale_rules_and_top_m_zero():
    """Hand-sized teacher: scores user 0 = [3, 2, 0, 1], user 1 = [0, 0, 1, 1], user 2 = [3, 2, 1, 2].
    The top-2 unseen items are [1, 3], [0, 1] (a tie: lower index first) and [3, -1] (user 2 saw
    three of the four items: padded). The logit scale is the configured one, else 1 / the teacher's
    own temperature (a two-tower teacher), else 1 / the student's."""
    from recsys.models.factors import FactorModel

    teacher = FactorModel.from_arrays(
        np.array([[1, 0], [0, 1], [1, 1]]), np.array([[3, 0], [2, 0], [0, 1], [1, 1]]), name="t"
    )
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 0]], dtype=np.float32))
    got = teacher_targets(teacher, train, DistillConfig(teacher="t", top_m=2, teacher_scale=4.0), 0.2)
    np.testing.assert_array_equal(got.top_items.numpy(), [[1, 3], [0, 1], [3, -1]])
    assert got.top_items.dtype == torch.int64 and got.padded and got.top_m == 2
    assert got.scale == 4.0  # configured: neither temperature is read
    assert teacher_targets(teacher, train, DistillConfig(teacher="t", top_m=2), 0.2).scale == pytest.approx(5.0)
    teacher.temperature = 0.5  # what a two-tower teacher exposes: its own softmax temperature
    assert teacher_targets(teacher, train, DistillConfig(teacher="t", top_m=2), 0.2).scale == pytest.approx(2.0)
    teacher.temperature = 0.0  # not a usable temperature: the student's is read instead
    assert teacher_targets(teacher, train, DistillConfig(teacher="t", top_m=2), 0.2).scale == pytest.approx(5.0)

    for m in (0, 1):
        some = teacher_targets(teacher, train, DistillConfig(teacher="t", top_m=m), 0.2)
        assert some.top_items.shape == (3, m) and some.top_items.dtype == torch.int64
        assert not some.padded  # every user has at least one unseen item
    np.testing.assert_array_equal(some.top_items.numpy(), [[1], [0], [3]])

    with pytest.raises(ModelError, match=r"'t' has 3 users x 4 items but the student trains on 3 x 3"):
        teacher_targets(teacher, train[:, :3].tocsr(), DistillConfig(teacher="t"), 0.2)
