"""Folding diagnostic at its edges: chunk boundaries, block labels only users carry, label 0, inputs
in other dtypes or as torch tensors, and the report's fields. Each case is small, built by hand,
and its right answer is worked out in the comments. (Written against mutmut 3 survivors of
`recsys/evaluation/folding.py`; the survivors each test kills are named in the commit messages.)"""

from __future__ import annotations

import numpy as np

from recsys.evaluation.folding import folding_at_k, random_folding_rate, score_folding


def test_own_labels_leave_the_callers_block_sets_as_they_were():
    """The own label joins the home set of this call only: a dense boolean (users x blocks) matrix
    passed in is not written to, so the same matrix without labels still gives the unlabelled
    answer. (It was written to: the second call below returned 0.0, user 0 then at home in block 0.)"""
    item_blocks = np.array([0, 0, 1, 1])
    home = np.array([[False, True]])
    lists = np.array([[0, 2]])
    np.testing.assert_allclose(folding_at_k(lists, np.array([0]), item_blocks, home), [0.0])
    np.testing.assert_allclose(folding_at_k(lists, None, item_blocks, home), [0.5])
    np.testing.assert_allclose(random_folding_rate(home, np.array([0]), item_blocks), [0.0])
    assert score_folding(np.ones((1, 2)), np.ones((4, 2)), home, np.array([0]), item_blocks) == 0.0
    np.testing.assert_array_equal(home, [[False, True]])
