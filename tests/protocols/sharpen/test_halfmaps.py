"""Half-map sharpening against ground truth built from EMD-3488 (see conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import fsc, fsc_crossing
from emforge.protocols.sharpen.kernels import (
    estimate_b_iso,
    fsc_weight,
    sharpen_halfmaps,
    sharpen_halfmaps_phenix,
)


@pytest.fixture(scope="module")
def relion(halves, mask, pixel_size):
    h1, h2 = halves
    return sharpen_halfmaps(h1, h2, pixel_size=pixel_size, mask=mask, rng=np.random.default_rng(7))


def test_fixture_half_map_fsc_crosses_near_3_5_A(halves, pixel_size, truth_resolution):
    s, f = fsc(*halves, pixel_size=pixel_size)
    assert fsc_crossing(s, f) == pytest.approx(3.5, abs=0.15)
    # masking removes solvent noise, so the true masked resolution is finer
    assert 2.9 < truth_resolution < 3.5


def test_resolution_matches_noise_model(relion, truth_resolution):
    assert relion.resolution == pytest.approx(truth_resolution, abs=0.2)
    assert relion.fsc.threshold == 0.143
    k = relion.fsc.randomize_shell
    assert np.array_equal(relion.fsc.fsc_corrected[: k + 1], relion.fsc.fsc_masked[: k + 1])
    assert relion.fsc.fsc_unmasked[k + 1] < 0.8 <= relion.fsc.fsc_unmasked[k]


def test_recovers_the_blur_b(relion, truth, pixel_size):
    # The deposited map is not B = 0: over the same fit range (10 A to the resolution) its own
    # Guinier B is b_truth (about +20 A^2 here, because the deposited map is low-passed near
    # 3.2 A). The half maps carry b_truth + 100, so RELION's B should be -(b_truth + 100):
    # the difference to the truth's own B must be the blur we applied, -100 +- 10.
    b_truth = estimate_b_iso(truth, pixel_size=pixel_size, d_min=relion.resolution, d_max=10.0)
    assert relion.b_factor + b_truth == pytest.approx(-100.0, abs=10.0)
    assert relion.guinier_fit_range == (10.0, relion.resolution)
    assert np.isfinite(relion.guinier_intercept)


def test_sharpened_map_correlates_better_with_truth(relion, average, truth, mask, masked_cc):
    before = masked_cc(average, truth, mask)
    after = masked_cc(relion.map, truth, mask)
    assert after > before + 0.05
    assert relion.map.dtype == np.float32 and relion.map.shape == truth.shape
    assert np.allclose(relion.map, 0.5 * (relion.half1 + relion.half2), atol=1e-6)


def test_filter_curve_is_weight_times_b_and_lowpass(relion):
    s = relion.filter_s
    w = fsc_weight(relion.fsc.fsc_corrected)
    inside = (s > 0) & (s < 1.0 / relion.resolution - 2.0 / (100 * 1.05))
    expect = w[inside] * np.exp(-relion.b_factor * s[inside] ** 2 / 4)
    assert np.allclose(relion.filter_values[inside], expect)
    assert np.all(relion.filter_values[s > 1.0 / relion.resolution + 2.0 / (100 * 1.05)] == 0)


def test_b_override_and_no_mask(halves, pixel_size):
    h1, h2 = halves
    r = sharpen_halfmaps(h1, h2, pixel_size=pixel_size, b_override=-50.0, lowpass=False)
    assert r.b_factor == -50.0
    s, f = fsc(h1, h2, pixel_size=pixel_size)
    assert r.resolution == pytest.approx(fsc_crossing(s, f))


def test_phenix_route_improves_and_reports(
    halves, mask, pixel_size, average, truth, masked_cc, relion
):
    r = sharpen_halfmaps_phenix(
        *halves, pixel_size=pixel_size, mask=mask, rng=np.random.default_rng(7)
    )
    assert r.resolution == pytest.approx(relion.resolution, abs=0.05)
    assert masked_cc(r.map, truth, mask) > masked_cc(average, truth, mask) + 0.05
    assert r.b_factor < -60  # equivalent overall sharpening of a B ~ 100 blurred map


def test_fsc_weight_formula():
    assert np.allclose(fsc_weight([1.0, 0.143, 0.0, -0.2]), [1.0, np.sqrt(0.286 / 1.143), 0.0, 0.0])


def test_invalid_inputs_raise_one_line_errors(halves, pixel_size):
    h1, h2 = halves
    with pytest.raises(ValueError, match="half2: shape"):
        sharpen_halfmaps(h1, h2[:-1], pixel_size=pixel_size)
    bad = h2.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="half2: contains NaN"):
        sharpen_halfmaps(h1, bad, pixel_size=pixel_size)
    with pytest.raises(ValueError, match="half1: is constant"):
        sharpen_halfmaps(np.zeros_like(h1), h2, pixel_size=pixel_size)
    with pytest.raises(ValueError, match="mask: shape"):
        sharpen_halfmaps(h1, h2, pixel_size=pixel_size, mask=np.ones((4, 4, 4)))
    with pytest.raises(ValueError, match="pixel_size"):
        sharpen_halfmaps(h1, h2, pixel_size=0)
