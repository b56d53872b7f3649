"""Local resolution from half maps of EMD-3488 with known, spatially varying noise."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.protocols.sharpen.kernels.locres import local_resolution, sphere_window


@pytest.fixture(scope="module")
def uniform(halves, mask, pixel_size):
    return local_resolution(*halves, pixel_size=pixel_size, mask=mask)


def test_uniform_noise_gives_the_global_resolution(uniform, truth_resolution, mask):
    # truth_resolution: FSC 0.143 of the masked halves from the noise model (about 3.2 A)
    assert uniform.median == pytest.approx(truth_resolution, abs=0.5)
    inside = uniform.map[mask > 0.5]
    assert uniform.min == pytest.approx(inside.min()) and uniform.max == pytest.approx(inside.max())
    assert 2.0 <= uniform.min <= uniform.median <= uniform.max <= uniform.low_limit


def test_result_layout(uniform, truth, mask):
    r = uniform
    assert r.map.shape == truth.shape and r.map.dtype == np.float32
    assert r.grid.shape == tuple(len(c) for c in r.centres)
    assert np.isfinite(r.map).all()
    # grid points far from the mask are not computed
    assert np.isnan(r.grid).any() and np.isfinite(r.grid).any()
    # the map passes through the grid values at the grid points
    iz, iy, ix = (np.asarray(c) for c in r.centres)
    g = r.map[np.ix_(iz, iy, ix)]
    ok = np.isfinite(r.grid)
    np.testing.assert_allclose(g[ok], r.grid[ok], rtol=1e-5)


def test_noisier_half_of_the_box_has_worse_resolution(blurred, noise_sigma, mask, pixel_size):
    rng = np.random.default_rng(77)
    level = np.where(np.arange(blurred.shape[2]) < 50, 0.6, 2.0).astype(np.float32)
    sigma = np.float32(noise_sigma) * level[None, None, :]
    h1 = blurred + sigma * rng.standard_normal(blurred.shape, np.float32)
    h2 = blurred + sigma * rng.standard_normal(blurred.shape, np.float32)
    r = local_resolution(h1, h2, pixel_size=pixel_size, mask=mask, box=24, step=6)
    inside = mask > 0.5
    left = np.median(r.map[:, :, :45][inside[:, :, :45]])
    right = np.median(r.map[:, :, 55:][inside[:, :, 55:]])
    assert left < right - 0.2


def test_sphere_window():
    w = sphere_window(16)
    assert w.shape == (16, 16, 16) and w.dtype == np.float32
    assert w[8, 8, 8] == pytest.approx(1.0) and w[0, 8, 8] == 0.0
    np.testing.assert_allclose(w, w.transpose(1, 2, 0))


def test_bad_input(halves, mask, pixel_size):
    h1, h2 = halves
    with pytest.raises(ValueError, match="half2: shape"):
        local_resolution(h1, h2[:90], pixel_size=pixel_size)
    with pytest.raises(ValueError, match="mask: shape"):
        local_resolution(h1, h2, pixel_size=pixel_size, mask=mask[:90])
    with pytest.raises(ValueError, match="box: must be even"):
        local_resolution(h1, h2, pixel_size=pixel_size, box=25)
    with pytest.raises(ValueError, match="threshold"):
        local_resolution(h1, h2, pixel_size=pixel_size, threshold=1.5)
    with pytest.raises(ValueError, match="contains NaN"):
        local_resolution(h1 * np.nan, h2, pixel_size=pixel_size)
