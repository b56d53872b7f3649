"""emforge.numerics.align3d: rotation round trips, CCF peaks, ccc.tomo.thresh and FLC."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import align3d as a3
from emforge.numerics import euler_zyz_to_matrix
from emforge.numerics.tilt import missing_wedge_mask


def blob_volume(n=32, centres=((3, -2, 4), (-5, 4, 0), (0, 6, -6)), sigma=2.5):
    zz, yy, xx = np.mgrid[0:n, 0:n, 0:n] - n // 2
    v = np.zeros((n, n, n))
    for x, y, z in centres:
        v += np.exp(-((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2) / (2 * sigma**2))
    return v.astype(np.float32)


def test_rotation_moves_points_to_a_r_and_round_trips():
    a = euler_zyz_to_matrix([30.0, 50.0, -70.0])
    p = np.array([6.0, -3.0, 4.0])
    v = blob_volume(centres=(p,))
    w = a3.rotate_volume(v, a, order=3)
    zz, yy, xx = np.mgrid[0:32, 0:32, 0:32] - 16
    com = np.array([(w * g).sum() for g in (xx, yy, zz)]) / w.sum()
    np.testing.assert_allclose(com, a @ p, atol=0.05)
    vol = blob_volume()
    back = a3.rotate_volume(a3.rotate_volume(vol, a, order=3), a.T, order=3)
    assert np.abs(back - vol).max() < 0.02 * vol.max()
    lin = a3.rotate_volume(a3.rotate_volume(vol, a, order=1), a.T, order=1)
    assert np.abs(lin - vol).max() < 0.1 * vol.max()
    sh = a3.rotate_volume(vol, np.eye(3), shift=(2.0, -1.0, 3.0))
    inner = (slice(4, -4),) * 3  # away from the voxels that np.roll wraps around
    np.testing.assert_allclose(
        sh[inner], np.roll(vol, (3, -1, 2), axis=(0, 1, 2))[inner], atol=1e-5
    )


def test_ccf_peak_is_the_shift():
    v = blob_volume()
    moved = np.roll(v, (2, -3, 5), axis=(0, 1, 2))
    c = a3.ccf_3d(moved, v)
    assert np.unravel_index(np.argmax(c), c.shape) == (2, 32 - 3, 5)


def test_ccc_tomo_thresh_definition_and_wedge():
    rng = np.random.default_rng(0)
    v = blob_volume() + rng.normal(0, 0.05, (32,) * 3).astype(np.float32)
    w = rng.normal(0, 1, (32,) * 3).astype(np.float32) + v
    f1, f2 = np.fft.fftn(v.astype(np.float64)), np.fft.fftn(w.astype(np.float64))
    h1, h2 = np.fft.rfftn(v.astype(np.float64)), np.fft.rfftn(w.astype(np.float64))
    s1, s2 = np.std(np.stack([h1.real, h1.imag])), np.std(np.stack([h2.real, h2.imag]))
    k = (abs(f1) ** 2 >= (0.5 * s1) ** 2) & (abs(f2) ** 2 >= (0.5 * s2) ** 2)
    want = np.real(f1[k] * np.conj(f2[k])).sum() / np.sqrt(
        (abs(f1[k]) ** 2).sum() * (abs(f2[k]) ** 2).sum()
    )
    assert a3.ccc_tomo_thresh(v, w) == pytest.approx(want, abs=1e-6)
    assert a3.ccc_tomo_thresh(v, v) == pytest.approx(1.0)
    # a wedge-filtered copy: the empty wedge drops out, the score stays 1 while plain ccc falls
    m = missing_wedge_mask(v.shape, tilt_min=-50, tilt_max=50)
    wedged = np.fft.irfftn(np.fft.rfftn(v) * m, s=v.shape, axes=(0, 1, 2)).astype(np.float32)
    assert a3.ccc_tomo_thresh(wedged, v) == pytest.approx(1.0, abs=1e-6)
    assert np.corrcoef(wedged.ravel(), v.ravel())[0, 1] < 0.99


def test_flc_equals_brute_force_local_correlation():
    rng = np.random.default_rng(4)
    target = rng.normal(size=(10, 11, 12)).astype(np.float32)
    tmpl = rng.normal(size=(5, 5, 5)).astype(np.float32)
    zz, yy, xx = np.mgrid[-2:3, -2:3, -2:3]
    mask = (zz**2 + yy**2 + xx**2 <= 5).astype(np.float32)
    target[3:8, 2:7, 6:11] = 2 * tmpl + 1  # template centred at (5, 4, 8)
    got = a3.flc_3d(target, tmpl, mask)
    sel = mask > 0
    want = np.empty(target.shape)
    for z in range(10):
        for y in range(11):
            for x in range(12):
                win = np.roll(target, (2 - z, 2 - y, 2 - x), axis=(0, 1, 2))[:5, :5, :5]
                want[z, y, x] = np.corrcoef(win[sel], tmpl[sel])[0, 1]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.unravel_index(np.argmax(got), got.shape) == (5, 4, 8)
    assert got[5, 4, 8] == pytest.approx(1.0, abs=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="matrix"):
        a3.rotate_volume(np.zeros((8, 8, 8)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="template"):
        a3.flc_3d(np.zeros((4, 4, 4)), np.ones((5, 5, 5)))
    with pytest.raises(ValueError, match="reference"):
        a3.ccf_3d(np.zeros((4, 4, 4)), np.ones((5, 5, 5)))
