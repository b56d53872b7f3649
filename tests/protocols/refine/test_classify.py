"""classify (EMAN2 e2classify): hand-computed classes on tiny matrices."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import Alignment2D
from emforge.protocols.refine.kernels import classify


def _sim(score):
    s = np.asarray(score, np.float32)
    k = np.arange(s.size, dtype=np.float32).reshape(s.shape)
    return Alignment2D(k, k + 100, k + 200, (k.astype(int) % 2) == 1, s)


def test_sep_passes_by_hand():
    sim = _sim([[3.0, 1.0, 2.0, 0.5], [0.0, 4.0, 4.0, 1.0]])
    c1 = classify(sim)
    assert c1.reference.tolist() == [[3], [0]]
    c2 = classify(sim, sep=2)
    # row 0: 0.5 (3), then with it set to the max 3: 1 (1); row 1: 0 (0), then 1 (3)
    assert c2.reference.tolist() == [[3, 1], [0, 3]]
    assert c2.reference.dtype == np.int64
    np.testing.assert_array_equal(c2.score, [[0.5, 1.0], [0.0, 1.0]])
    # the alignment of each chosen entry is copied: entry [i, j] carried angle 4 i + j
    np.testing.assert_array_equal(c2.angle, [[3, 1], [4, 7]])
    np.testing.assert_array_equal(c2.dx, [[103, 101], [104, 107]])
    np.testing.assert_array_equal(c2.dy, [[203, 201], [204, 207]])
    np.testing.assert_array_equal(c2.mirror, [[True, True], [False, True]])
    # EMAN2's rule, third pass: row 1 is all at its max 4 then, the first entry wins again
    c3 = classify(sim, sep=3)
    assert c3.reference.tolist() == [[3, 1, 2], [0, 3, 0]]


def test_sep_2_on_a_mixture_puts_each_particle_in_its_two_best_classes():
    rng = np.random.default_rng(0)
    n, m = 50, 12
    score = rng.uniform(0.0, 1.0, (n, m))
    first, second = rng.integers(0, m, n), (rng.integers(1, m, n) + 0) % m
    second = np.where(second == first, (first + 1) % m, second)
    score[np.arange(n), first] = -2.0
    score[np.arange(n), second] = -1.5
    c = classify(_sim(score), sep=2)
    np.testing.assert_array_equal(c.reference[:, 0], first)
    np.testing.assert_array_equal(c.reference[:, 1], second)


def test_bad_input():
    with pytest.raises(ValueError, match="sep"):
        classify(_sim([[1.0, 2.0]]), sep=0)
    with pytest.raises(ValueError, match="sim"):
        classify(_sim([1.0, 2.0]))
