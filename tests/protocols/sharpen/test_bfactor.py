"""B-factor sharpening kernels against ground truth built from EMD-3488 (see conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import amplitude_profile, apply_radial_filter, lowpass
from emforge.protocols.sharpen.kernels import (
    b_iso_to_d_cut_filter,
    d_cut_weight,
    estimate_b_iso,
    resolution_dependent_filter,
    sharpen_b,
    sharpen_b_iso_to_d_cut,
    sharpen_resolution_dependent,
    sharpen_to_b_iso,
)


def test_sharpen_b_restores_spectrum_within_10_percent(blurred, truth, pixel_size):
    # b_sharpen = the blur B restores the truth's radial amplitude spectrum per shell up to the
    # resolution of the half maps (3.5 A); the blurred map here is noise-free.
    out = sharpen_b(blurred, pixel_size=pixel_size, b_sharpen=100.0)
    s, amp = amplitude_profile(out, pixel_size=pixel_size)
    _, amp_truth = amplitude_profile(truth, pixel_size=pixel_size)
    _, amp_in = amplitude_profile(blurred, pixel_size=pixel_size)
    upto = (s > 0) & (s <= 1 / 3.5)
    assert np.all(np.abs(amp[upto] / amp_truth[upto] - 1) < 0.10)
    assert np.abs(amp_in[upto] / amp_truth[upto] - 1).max() > 0.5  # the input was far off


def test_estimate_b_iso_sees_the_applied_blur(truth, blurred, pixel_size):
    b0 = estimate_b_iso(truth, pixel_size=pixel_size, d_min=3.5)
    b1 = estimate_b_iso(blurred, pixel_size=pixel_size, d_min=3.5)
    assert b1 - b0 == pytest.approx(100.0, abs=1.0)


def test_sharpen_to_b_iso_reaches_target(blurred, pixel_size):
    out = sharpen_to_b_iso(blurred, pixel_size=pixel_size, b_iso_target=20.0, d_min=3.5)
    assert estimate_b_iso(out, pixel_size=pixel_size, d_min=3.5) == pytest.approx(20.0, abs=0.5)


def test_sharpen_b_improves_masked_correlation(average, truth, mask, pixel_size, masked_cc):
    # an unsharpened map as users have it: the half-map average low-passed at the resolution
    start = lowpass(average, 3.5, pixel_size=pixel_size)
    out = sharpen_b(start, pixel_size=pixel_size, b_sharpen=100.0)
    assert masked_cc(out, truth, mask) > masked_cc(start, truth, mask) + 0.05


def test_b_iso_to_d_cut_improves_masked_correlation(average, truth, mask, pixel_size, masked_cc):
    out = sharpen_b_iso_to_d_cut(average, pixel_size=pixel_size, b_sharpen=100.0, d_cut=3.5)
    assert masked_cc(out, truth, mask) > masked_cc(average, truth, mask) + 0.05


def test_b_iso_to_d_cut_filter_definition():
    d = np.array([20.0, 3.5, 3.0])
    s = 1 / d
    w = d_cut_weight(s, d_cut=3.5, k_sharpen=10.0)
    assert w[1] == pytest.approx(0.5, abs=1e-6)
    assert w[0] == pytest.approx(1.0) and w[2] == pytest.approx(1 / (1 + np.exp(5.0)), rel=1e-5)
    f = b_iso_to_d_cut_filter(s, b_sharpen=80.0, d_cut=3.5, b_blur_hires=200.0, k_sharpen=10.0)
    # the B is mixed inside the exponent: 80 up to d_cut, 80 - 200 beyond
    expect = np.exp((w * 80.0 + (1 - w) * (80.0 - 200.0)) * s**2 / 4)
    assert np.allclose(f, expect, rtol=1e-5)
    assert b_iso_to_d_cut_filter(np.zeros(1), b_sharpen=80.0, d_cut=3.5)[0] == pytest.approx(1)


def test_b_iso_to_d_cut_transfer_beyond_the_cutoff():
    """A 2.9 A map blurred by B = 100 and sharpened by 100 to d_cut = 2.9: past the cutoff the
    total transfer (blur x filter) must fall to that of sharpening by 100 - 200 = -100, not keep
    the sharpened tail. At 2.5 A (w = 0.018) the tail of a linear mix of the two filters,
    w exp(+100 s^2/4), alone would give a transfer of 0.018, 45x the 0.0004 of the B mix."""
    d = np.array([10.0, 4.0, 2.9, 2.5, 2.2])
    s = 1 / d
    f = b_iso_to_d_cut_filter(s, b_sharpen=100.0, d_cut=2.9, b_blur_hires=200.0, k_sharpen=10.0)
    transfer = np.exp(-100.0 * s**2 / 4) * f
    assert transfer[0] == pytest.approx(1.0, abs=0.02)  # fully restored at low resolution
    assert transfer[1] == pytest.approx(1.0, abs=0.01)
    # beyond d_cut: within 20% of the blur-by-100 transfer exp(-200 s^2/4)
    assert np.all(transfer[3:] <= 1.2 * np.exp(-200.0 * s[3:] ** 2 / 4))
    assert transfer[3] < 1e-3
    # and log-linear in B between the two regimes: ln f / (s^2/4) lies in [-100, 100]
    b_eff = np.log(f) / (s**2 / 4)
    assert np.all((b_eff >= -100.0 - 1e-3) & (b_eff <= 100.0 + 1e-3))


def test_resolution_dependent_nodes_and_application(blurred, pixel_size):
    d_cut, b0, b1, b2 = 4.0, 0.3, 0.6, -0.5
    s = np.array([0.0, 0.5 / d_cut, 1 / d_cut, 1 / (0.833 * d_cut), 0.45])
    got = np.log10(resolution_dependent_filter(s, d_cut=d_cut, b0=b0, b1=b1, b2=b2))
    assert np.allclose(got, [0.0, b0, b1, b1 + b2, b1 + b2], atol=1e-6)
    out = sharpen_resolution_dependent(
        blurred, pixel_size=pixel_size, d_cut=d_cut, b0=b0, b1=b1, b2=b2
    )
    ref = apply_radial_filter(
        blurred,
        lambda x: resolution_dependent_filter(x, d_cut=d_cut, b0=b0, b1=b1, b2=b2),
        pixel_size=pixel_size,
    )
    assert np.allclose(out, ref, atol=1e-6)


def test_invalid_arguments(blurred, pixel_size):
    with pytest.raises(ValueError, match="d_cut: 1 A is finer than Nyquist"):
        sharpen_b_iso_to_d_cut(blurred, pixel_size=pixel_size, b_sharpen=50, d_cut=1.0)
    with pytest.raises(ValueError, match="map: is constant"):
        sharpen_b(np.zeros((8, 8, 8)), pixel_size=1.0, b_sharpen=50)
    bad = np.ones((8, 8, 8))
    bad[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="map: contains NaN"):
        estimate_b_iso(bad, pixel_size=1.0, d_min=3.0)
