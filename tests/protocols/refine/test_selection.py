"""EMAN2 keep / keepsig selection: the #12 acceptance vectors and the reinstatement rule."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.protocols.refine.kernels import keep_mask


def test_keep_fraction_on_1_to_100_keeps_81_in_any_order():
    s = np.arange(1, 101, dtype=float)
    assert keep_mask(s, 0.8).sum() == 81
    perm = np.random.default_rng(0).permutation(100)
    m = keep_mask(s[perm], 0.8)
    assert m.sum() == 81 and set(s[perm][m]) == set(range(1, 82))


def test_keepsig_one_sigma_on_1_to_100_keeps_79():
    s = np.arange(1, 101, dtype=float)
    m = keep_mask(s, 1.0, keepsig=True)
    # mean 50.5 + population std 28.866 = 79.37
    assert m.sum() == 79 and m[:79].all()


def test_all_excluded_reinstates_the_best():
    s = np.array([5.0, 3.0, 9.0, 4.0])
    m = keep_mask(s, -10.0, keepsig=True)  # threshold far below every score
    assert m.tolist() == [False, True, False, False]


def test_keep_one_keeps_everything_and_nan_never():
    s = np.array([2.0, np.nan, 1.0, 7.0])
    assert keep_mask(s, 1.0).tolist() == [True, False, True, True]
    assert not keep_mask(np.full(3, np.nan), 0.8).any()
    assert keep_mask(np.array([]), 0.8).size == 0


def test_keep_zero_keeps_only_the_smallest_ties_included():
    assert keep_mask(np.array([3.0, 1.0, 1.0, 2.0]), 0.0).tolist() == [False, True, True, False]


def test_bad_keep_is_named():
    with pytest.raises(ValueError, match="keep"):
        keep_mask(np.arange(3.0), float("nan"))
