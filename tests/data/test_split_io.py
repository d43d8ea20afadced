"""A split on disk (`recsys.data.split_io`): every part, id and meta value comes back, and a save over
an older split leaves none of the older split's parts behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.data.split import Split, split_digest
from recsys.data.split_io import load_split, save_split
from recsys.errors import DataError


def _m(rows: list[list[float]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


def strong_split() -> Split:
    """3 users x 3 items, strong generalisation: user 2 is held out (fold-in + test)."""
    return Split(
        protocol="strong_generalization",
        train=_m([[1, 2, 0], [0, 1, 0], [0, 0, 0]]),
        test=_m([[0, 0, 0], [0, 0, 0], [0, 0, 3]]),
        validation=_m([[0, 0, 1], [0, 0, 0], [0, 0, 0]]),
        fold_in=_m([[0, 0, 0], [0, 0, 0], [4, 0, 0]]),
        validation_fold_in=_m([[0, 0, 0], [0, 0, 5], [0, 0, 0]]),
        times=_m([[10, 11, 12], [0, 13, 0], [14, 0, 15]]),
        user_ids=np.array(["u0", "007", "7"], dtype=object),
        item_ids=np.array(["a", "b", "c"], dtype=object),
        meta={"seed": 3, "fingerprint": "abc", "fractions": [0.8, 0.1], "cutoff": np.datetime64("2024-01-02")},
    )


def test_every_part_id_and_meta_value_round_trips(tmp_path: Path) -> None:
    split = strong_split()
    save_split(split, tmp_path / "runs" / "r1" / "split")  # parents made as needed
    back = load_split(tmp_path / "runs" / "r1" / "split")
    assert back.protocol == "strong_generalization"
    for name in ("train", "test", "validation", "fold_in", "validation_fold_in", "times"):
        got, want = getattr(back, name), getattr(split, name)
        assert isinstance(got, sp.csr_matrix), name
        np.testing.assert_array_equal(got.toarray(), want.toarray(), err_msg=name)
    assert back.user_ids.tolist() == ["u0", "007", "7"]  # "007" and "7" stay two users
    assert back.item_ids.tolist() == ["a", "b", "c"]
    # values JSON cannot hold (a cut-off time) are kept as their text
    assert back.meta == {**split.meta, "cutoff": "2024-01-02"}
    assert split_digest(back) == split_digest(split)  # `recsys promote` compares these (meta via str)


def test_a_save_over_an_older_split_leaves_none_of_its_parts(tmp_path: Path) -> None:
    save_split(strong_split(), tmp_path / "split")
    plain = Split(protocol="random", train=_m([[1, 0], [0, 1]]), test=_m([[0, 1], [1, 0]]))
    save_split(plain, tmp_path / "split")
    back = load_split(tmp_path / "split")
    assert back.protocol == "random" and back.train.shape == (2, 2)
    assert back.validation is None and back.fold_in is None and back.validation_fold_in is None
    assert back.times is None and len(back.user_ids) == 0 and back.meta == {}
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["split.json", "test.npz", "train.npz"]
    assert [p.name for p in tmp_path.iterdir()] == ["split"]  # no staging directory left beside it


def test_a_directory_without_a_saved_split_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a saved split \(no split.json\); write one with save_split"):
        load_split(tmp_path)


def test_split_digest_is_the_identity_of_the_evaluation_and_split_record_carries_it() -> None:
    """Per-user metrics are comparable only between equal digests: equal meta (in any key order)
    gives equal digests; a different seed, shape or row count does not."""
    from dataclasses import replace

    from recsys.data.split import split_record

    base = strong_split()
    digest = split_digest(base)
    # digests are stored (run tags, a saved model's `trained_on`): the same split must keep its
    # digest across versions, or every model trained before is refused by `recsys evaluate`
    assert digest == "848e4fde73b682d5"
    reordered = replace(base, meta=dict(reversed(list(base.meta.items()))))
    assert split_digest(reordered) == digest
    assert split_digest(replace(base, meta={**base.meta, "seed": 4})) != digest
    assert split_digest(replace(base, meta={**base.meta, "rows": 10})) != split_digest(
        replace(base, meta={**base.meta, "rows": 11})
    )
    wider = replace(base, train=sp.csr_matrix((3, 4), dtype=np.float32))
    assert split_digest(wider) != digest
    assert split_record(base) == {"split_digest": digest, "fingerprint": "abc"}


KILLED_REPLACING = """
import os, shutil, signal, sys
from pathlib import Path
import numpy as np, scipy.sparse as sp
from recsys.data.split import Split
from recsys.data.split_io import save_split

target = Path(sys.argv[1])
m = lambda rows: sp.csr_matrix(np.array(rows, dtype=np.float32))
save_split(Split(protocol="random", train=m([[1, 0], [0, 1]]), test=m([[0, 1], [1, 0]])), target)

def killed_while_deleting(path, *args, **kwargs):
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    files[0].unlink()  # part of the old split gone, then the kill
    os.kill(os.getpid(), signal.SIGKILL)

shutil.rmtree = killed_while_deleting
save_split(Split(protocol="random", train=m([[1, 0, 1], [0, 1, 0]]), test=m([[0, 1, 0], [1, 0, 0]])), target)
"""


def test_a_save_killed_while_removing_the_older_split_leaves_a_whole_one(tmp_path: Path) -> None:
    """The older split was deleted in place before the new one moved in: a kill -9 during that
    left part of it (`recsys train --handoff DIR` then handed its ranks a split without its
    split.json, or without a matrix). It is moved aside whole first now, and the next save removes
    what a kill left of such a copy."""
    import os
    import subprocess
    import sys

    target = tmp_path / "split"
    killed = subprocess.run([sys.executable, "-c", KILLED_REPLACING, str(target)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert load_split(target).train.shape == (2, 3)  # the new split, whole
    save_split(strong_split(), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]  # nothing of the killed save left


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_saved_split_folder_follows_the_umask(tmp_path: Path, umask: int) -> None:
    """`recsys train --handoff DIR` writes the split that every node's ranks load, often from a
    shared file system and other accounts: its folder was 0700 (mkdtemp's mode, kept by the rename),
    so nobody but its writer could read it. It gets the mode a plain mkdir gives, as every output."""
    import os

    before = os.umask(umask)
    try:
        saved = save_split(strong_split(), tmp_path / "handoff" / "split")
        save_split(strong_split(), saved)  # a second save replaces it: same mode
    finally:
        os.umask(before)
    assert saved.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (saved / "split.json").stat().st_mode & 0o777 == 0o666 & ~umask
