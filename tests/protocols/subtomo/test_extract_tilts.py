"""subtomo.extract path b kernels: markers at known sub-pixel 3D positions, projected into a
tilt series of the same frame, land at the centre of their reconstructed subtomograms."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics.ctf import ctf_2d
from emforge.numerics.projection import project_fourier
from emforge.numerics.tilt import tilt_defocus, tilt_series_matrices
from emforge.protocols.subtomo.kernels.extract_tilts import (
    cut_subtilts,
    reconstruct_subtomograms,
    select_tilts,
    subtilt_positions,
)

N = 64
POINTS = np.array([[32, 32, 32], [20.3, 40.7, 28.4], [44.6, 22.2, 36.9], [27.5, 26.25, 40.1],
                   [38.8, 45.1, 25.3]])  # fmt: skip


def _markers(points, n=N, sigma=1.5):
    z, y, x = np.indices((n, n, n)).astype(float)
    vol = np.zeros((n, n, n), np.float32)
    for px, py, pz in points:
        vol += np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / (2 * sigma**2))
    return vol


def _offset(v, r=5):
    """Marker centroid (x, y, z) relative to voxel box // 2 (thresholded, within radius r)."""
    zz, yy, xx = np.indices(v.shape) - v.shape[0] // 2
    w = np.clip(v, 0, None) * (xx**2 + yy**2 + zz**2 <= r * r)
    w = np.where(w > 0.2 * w.max(), w, 0)
    return np.array([(w * xx).sum(), (w * yy).sum(), (w * zz).sum()]) / w.sum()


@pytest.fixture(scope="module")
def volume():
    return _markers(POINTS)


def test_subtilt_positions_are_the_projected_markers():
    tilts = np.array([-45.0, 0.0, 30.0])
    a = tilt_series_matrices(tilts)
    ts = project_fourier(_markers(POINTS[1:2]), a)
    xy = subtilt_positions(POINTS[1:2] - N // 2, a, image_shape=(N, N))[0]
    for img, (x, y) in zip(ts, xy, strict=True):
        iy, ix = np.unravel_index(np.argmax(img), img.shape)
        assert abs(ix - x) <= 0.5 + 1e-9 and abs(iy - y) <= 0.5 + 1e-9


def test_reconstructed_subtilt_markers_sit_at_the_box_centre(volume):
    tilts = np.arange(-60.0, 61.0, 3.0)
    a = tilt_series_matrices(tilts)
    ts = project_fourier(volume, a)  # the tilt series of the same frame as the tomogram
    st, valid = cut_subtilts(ts, POINTS - N // 2, a, box=24, padtwod=2.0)
    assert st.shape == (len(POINTS), tilts.size, 48, 48) and valid.all()
    rec = reconstruct_subtomograms(st, a, box=24, valid=valid)
    err = max(np.abs(_offset(v)).max() for v in rec)
    assert err < 0.1
    # too few tilts: an all-zero volume, as EMAN2
    few = reconstruct_subtomograms(st[:1], a, box=24, valid=np.arange(tilts.size)[None] < 3)
    assert not few.any()


def test_phase_flip_uses_the_points_own_depth():
    """A marker 600 px above the centre imaged with its depth-dependent CTF: phase-flipping with
    the depth rule makes every sub-tilt spectrum non-negative; ignoring the depth does not."""
    px, n, box = 5.0, 512, 32
    tilts = np.array([-20.0, 0.0, 20.0])
    a = tilt_series_matrices(tilts)
    r = np.array([[10.0, -5.0, 600.0]])
    base = np.full(tilts.size, 25000.0)
    du = tilt_defocus(base, a, r, pixel_size=px)[:, 0]
    xy = subtilt_positions(r, a, image_shape=(n, n))[0]
    yy, xx = np.indices((n, n))
    ts = np.empty((tilts.size, n, n), np.float32)
    for t, (x, y) in enumerate(xy):
        g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.0**2))
        c = ctf_2d((n, n), pixel_size=px, defocus_u=du[t], defocus_v=du[t])
        ts[t] = np.fft.irfft2(np.fft.rfft2(g) * c, s=(n, n))

    def negative_fraction(defocus):  # noqa: E306
        st, _ = cut_subtilts(ts, r, a, box=box, padtwod=1.0, pixel_size=px, defocus=defocus)
        f = np.fft.rfft2(np.fft.ifftshift(st[0], axes=(-2, -1))).real
        big = np.abs(f) > 0.05 * np.abs(f).max()
        return float(np.mean(f[big] < 0))

    assert negative_fraction(base) < 0.02
    wrong = negative_fraction(2 * base - du)  # depth with the wrong sign
    assert wrong > 0.1


def test_select_tilts_follows_maxtilt_and_tltkeep():
    t = np.array([-60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 60.0])
    assert select_tilts(t, maxtilt=45).tolist() == [0, 1, 1, 1, 1, 1, 0]
    assert select_tilts(t, tltkeep=3 / 7).tolist() == [0, 0, 1, 1, 1, 0, 0]
    loss = np.array([0, 5, 5, 5, 5, 5, 1.0])
    assert select_tilts(t, tltkeep=2 / 7, loss=loss).tolist() == [1, 0, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="tltkeep"):
        select_tilts(t, tltkeep=0)
