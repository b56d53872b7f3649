"""Kernels of the example plugin against analytic answers (no files, no engine)."""

from __future__ import annotations

import numpy as np
import pytest

from emforge_example.kernels import normalize_volume, sigma_cutoff, sphere_mask, threshold_volume


@pytest.mark.parametrize("n", [8, 9])
def test_sphere_mask_is_centred_on_n_over_2(n):
    centre = n // 2
    one = sphere_mask((n, n, n), 0.5)
    assert one.sum() == 1 and one[centre, centre, centre]
    six = sphere_mask((n, n, n), 1.0)
    assert six.sum() == 7  # the centre and its 6 face neighbours
    ball = sphere_mask((n, n, n), 3.0)
    # symmetric about N//2 (in the range where both sides exist)
    k = np.arange(1, 4)
    assert np.array_equal(ball[centre + k, centre, centre], ball[centre - k, centre, centre])


def test_sphere_mask_rejects_bad_arguments():
    with pytest.raises(ValueError, match="radius"):
        sphere_mask((4, 4, 4), 0)
    with pytest.raises(ValueError, match="shape"):
        sphere_mask((4, 4), 1)


def test_normalize_whole_box_hits_targets():
    rng = np.random.default_rng(0)
    vol = rng.normal(3.0, 7.0, size=(16, 20, 24)).astype(np.float64)
    out = normalize_volume(vol, 5.0, 2.0)
    assert out.dtype == np.float32 and out.shape == vol.shape
    assert out.mean(dtype=np.float64) == pytest.approx(5.0, abs=1e-5)
    assert out.std(dtype=np.float64) == pytest.approx(2.0, rel=1e-5)


def test_normalize_inside_sphere_applies_one_affine_change():
    rng = np.random.default_rng(1)
    vol = rng.normal(0.0, 1.0, size=(24, 24, 24)).astype(np.float32)
    vol[12, 12, 12] += 50.0  # an outlier inside the sphere changes the statistics
    inside = sphere_mask(vol.shape, 6.0)
    out = normalize_volume(vol, mean=-1.0, std=0.5, mask_radius=6.0)
    assert out[inside].mean(dtype=np.float64) == pytest.approx(-1.0, abs=1e-5)
    assert out[inside].std(dtype=np.float64) == pytest.approx(0.5, rel=1e-5)
    # the same scale and shift everywhere, outside the sphere too
    slope, intercept = np.polyfit(vol.ravel().astype(np.float64), out.ravel(), 1)
    m, s = vol[inside].mean(dtype=np.float64), vol[inside].std(dtype=np.float64)
    assert slope == pytest.approx(0.5 / s, rel=1e-5)
    assert intercept == pytest.approx(-1.0 - m * 0.5 / s, abs=1e-4)


def test_normalize_rejects_constant_maps_and_bad_arguments():
    with pytest.raises(ValueError, match="constant"):
        normalize_volume(np.ones((4, 4, 4)))
    with pytest.raises(ValueError, match="std"):
        normalize_volume(np.zeros((4, 4, 4)), 0.0, 0.0)
    with pytest.raises(ValueError, match="3D"):
        normalize_volume(np.zeros((4, 4)))


def test_threshold_of_a_ramp_counts_voxels_above():
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # values 0..119
    mask, fraction = threshold_volume(vol, 89.5)
    assert mask.dtype == np.float32
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert mask.sum() == 30 and fraction == pytest.approx(30 / 120)
    assert np.array_equal(mask.astype(bool), vol > 89.5)
    assert threshold_volume(vol, 119.0)[1] == 0.0  # strictly above


def test_sigma_cutoff_of_two_level_map():
    vol = np.zeros((2, 4, 4), dtype=np.float32)
    vol[0] = 1.0
    vol[1] = -1.0  # mean 0, population std 1
    assert sigma_cutoff(vol, 2.5) == pytest.approx(2.5)
    assert sigma_cutoff(vol + 3.0, -1.0) == pytest.approx(2.0)
