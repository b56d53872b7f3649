"""emforge.numerics.tilt: tilt geometry, per-tilt defocus and CTFs, missing-wedge masks."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import ctf_2d, euler_zyz_to_matrix
from emforge.numerics import tilt as tl


def test_matrices_are_relion_tilt_poses():
    t = np.array([-60.0, -3.0, 0.0, 45.0])
    want = euler_zyz_to_matrix(np.stack([0 * t, t, 0 * t], 1))
    np.testing.assert_allclose(tl.tilt_series_matrices(t), want, atol=1e-12)
    mx = tl.tilt_series_matrices([30.0], axis="x")[0]
    np.testing.assert_allclose(mx[2], [0, -0.5, np.cos(np.radians(30))], atol=1e-12)


def test_defocus_follows_height_after_tilt():
    m = tl.tilt_series_matrices([0.0, 30.0, -30.0])
    pos = np.array([[100.0, 7.0, 0.0], [0.0, 0.0, 20.0]])
    d = tl.tilt_defocus([20000.0, 21000.0, 22000.0], m, pos, pixel_size=2.0)
    # x = 100 px at +-30 deg: height +-50 px = +-100 A; z = 20 px: 20 cos t px
    np.testing.assert_allclose(d[:, 0], [20000.0, 21000.0 - 100.0, 22000.0 + 100.0])
    c = np.cos(np.radians(30))
    np.testing.assert_allclose(d[:, 1], [20000 - 40, 21000 - 40 * c, 22000 - 40 * c])
    ctfs = tl.tilt_ctf_2d((16, 16), pixel_size=2.0, defocus_u=[20000.0, 21000.0],
                          defocus_v=[19000.0, 20000.0], matrices=m[:2], position=pos[0],
                          defocus_angle=30.0)  # fmt: skip
    want = ctf_2d((16, 16), pixel_size=2.0, defocus_u=np.array([20000.0, 20900.0]),
                  defocus_v=np.array([19000.0, 19900.0]), defocus_angle=30.0)  # fmt: skip
    np.testing.assert_allclose(ctfs, want, atol=1e-6)


def _brute_wedge(shape, lo, hi, rfft):
    """Is frequency k within 0.01 deg of the central plane of some tilt in [lo, hi] (axis y)?"""
    kz = np.fft.fftfreq(shape[0])[:, None, None]
    ky = np.fft.fftfreq(shape[1])[None, :, None]
    kx = (np.fft.rfftfreq(shape[2]) if rfft else np.fft.fftfreq(shape[2]))[None, None, :]
    kx, ky, kz = np.broadcast_arrays(kx, ky, kz)
    rho = np.hypot(kx, kz)
    best = np.full(kx.shape, np.inf)
    for t in np.radians(np.arange(lo, hi + 1e-9, 0.005)):
        best = np.minimum(best, np.abs(kx * np.sin(t) + kz * np.cos(t)))
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = (best <= rho * np.radians(0.01)) | (rho == 0)
    ang = np.degrees(np.arctan2(-kz, kx))
    ang = np.where(ang > 90, ang - 180, np.where(ang <= -90, ang + 180, ang))
    edge = (np.abs(ang - lo) < 0.02) | (np.abs(ang - hi) < 0.02)
    return inside, edge


@pytest.mark.parametrize("lo,hi", [(-60.0, 60.0), (-45.0, 57.0)])
def test_wedge_mask_zeroes_exactly_the_unmeasured_region(lo, hi):
    shape = (12, 10, 14)
    for rfft in (True, False):
        m = tl.missing_wedge_mask(shape, tilt_min=lo, tilt_max=hi, rfft=rfft)
        inside, edge = _brute_wedge(shape, lo, hi, rfft)
        assert m.shape == inside.shape
        assert np.array_equal(m[~edge] > 0, inside[~edge])
        assert 0.1 < (m == 0).mean() < 0.5
    full = tl.missing_wedge_mask(shape, tilt_min=lo, tilt_max=hi, rfft=False)
    half = tl.missing_wedge_mask(shape, tilt_min=lo, tilt_max=hi)
    np.testing.assert_array_equal(full[..., :7], half[..., :7])


def test_wedge_mask_about_x_is_the_y_mask_turned():
    my = tl.missing_wedge_mask((12, 12, 12), tilt_min=-50, tilt_max=50, rfft=False)
    mx = tl.missing_wedge_mask((12, 12, 12), tilt_min=-50, tilt_max=50, axis="x", rfft=False)
    # a tilt about x sees (ky, kz) as a tilt about y sees (kx, -kz): swap the x and y axes, flip z
    turned = np.swapaxes(my, 1, 2)[(-np.arange(12)) % 12]
    np.testing.assert_array_equal(mx, turned)


def test_bad_arguments():
    with pytest.raises(ValueError, match="tilt_min"):
        tl.missing_wedge_mask((8, 8, 8), tilt_min=40, tilt_max=-40)
    with pytest.raises(ValueError, match="axis"):
        tl.tilt_series_matrices([0.0], axis="z")
    with pytest.raises(ValueError, match="positions"):
        tl.tilt_defocus([0.0], tl.tilt_series_matrices([0.0]), np.zeros((2, 2)), pixel_size=1.0)
