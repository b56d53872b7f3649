"""poses_from_alignment / angular_error: recovered poses reproject onto the particles."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from emforge.numerics import euler_zyz_to_matrix, rotate_translate_flip, transform_images_2d
from emforge.numerics.compare import ccc
from emforge.numerics.projection import project_fourier
from emforge.protocols.refine.kernels import angular_error, poses_from_alignment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _phantom import phantom, project, random_eulers, references  # noqa: E402


@pytest.fixture(scope="module")
def vol():
    return phantom(32, seed=4)


def test_x_flip_of_a_projection_is_the_projection_at_d_a(vol):
    rng = np.random.default_rng(0)
    a = euler_zyz_to_matrix(random_eulers(rng, 4))
    img = project_fourier(vol, a)
    flipped = np.roll(img[..., ::-1], 1, axis=-1)  # x -> -x about n//2
    d = np.diag([-1.0, 1.0, -1.0])
    want = project_fourier(vol, d @ a)
    np.testing.assert_allclose(flipped, want, atol=1e-4 * np.abs(want).max())
    # and it is not trivially so: the flip changes the image
    assert np.abs(flipped - img).max() > 0.1 * np.abs(img).max()


def test_poses_from_alignment_reproduce_the_particles(vol):
    rng = np.random.default_rng(7)
    k = 16
    truth = random_eulers(rng, k)
    shifts = rng.uniform(-3, 3, (k, 2))
    parts = project(vol, truth, shifts)
    ref_eul, refs = references(vol, 12.0)  # 145 views of one hemisphere: half need the mirror
    best = rotate_translate_flip(parts, refs).best()
    assert 0 < best.mirror.sum() < k  # both cases are exercised
    eul, sh = poses_from_alignment(ref_eul[best.reference], best.angle, best.dx, best.dy,
                                   best.mirror)  # fmt: skip
    again = project(vol, eul, sh)
    c = np.diag(ccc(again, parts))
    assert c.min() > 0.97, c
    err = angular_error(eul, truth)
    assert np.median(err) < 6.0 and err.max() < 12.0, err
    # the shift is the true origin to within the pose error's displacement
    assert np.abs(sh - shifts).max() < 1.5


def test_exact_poses_for_exact_alignments(vol):
    """A particle made at the pose the formula gives is brought onto its reference by exactly
    that alignment (no aligner involved), and not by the other mirror."""
    ref_eul, refs = references(vol, 30.0)
    j = np.array([3, 7, 11, 20])
    a = np.array([30.0, 145.0, 250.0, 300.0])
    dx, dy = np.array([2.0, -1.5, 0.0, 3.0]), np.array([-1.0, 2.5, 1.0, -2.0])
    mir = np.array([False, True, False, True])
    eul, sh = poses_from_alignment(ref_eul[j], a, dx, dy, mir)
    parts = project(vol, eul, sh)
    moved = transform_images_2d(parts, a, dx, dy, mir)
    good = np.diag(ccc(moved, refs[j]))
    assert good.min() > 0.995, good
    wrong = np.diag(ccc(transform_images_2d(parts, a, dx, dy, ~mir), refs[j]))
    assert wrong.max() < good.min() - 0.05, wrong


def test_angular_error_hand_values():
    a = np.array([[10.0, 40.0, 20.0], [0.0, 90.0, 0.0]])
    b = np.array([[10.0, 40.0, 35.0], [0.0, 90.0, 0.0]])
    np.testing.assert_allclose(angular_error(a, b), [15.0, 0.0], atol=1e-6)
    # c2 about z: the pose A and A @ Rz(180) are the same view
    rz = np.diag([-1.0, -1.0, 1.0])
    m = euler_zyz_to_matrix(a[:1]) @ rz
    from emforge.numerics import matrix_to_euler_zyz

    other = matrix_to_euler_zyz(m)
    np.testing.assert_allclose(angular_error(a[:1], other), [180.0], atol=1e-4)
    np.testing.assert_allclose(angular_error(a[:1], other, symmetry="c2"), [0.0], atol=1e-4)
    with pytest.raises(ValueError, match="symmetry"):
        angular_error(a, b, symmetry="q7")


def test_bad_input():
    with pytest.raises(ValueError, match="ref_eulers"):
        poses_from_alignment(np.zeros((3, 2)), 0, 0, 0, False)
    with pytest.raises(ValueError, match="angle"):
        poses_from_alignment(np.zeros((3, 3)), [0, 1], 0, 0, False)
