"""sharpen.auto on a coarse map (ground truth: Gaussian blobs at 5.7 Å/px blurred by a known
B, plus noise): Phenix's Fourier cut-off at 0.833 x resolution, the coarse scan window, and
region-weight bounds that need a falling region count."""

from __future__ import annotations

import numpy as np

from emforge.numerics import amplitude_profile, bfactor_filter
from emforge.protocols.sharpen.kernels.auto import _fit_region_weight, auto_sharpen

PX, RES, N = 5.7, 24.0, 48


def _cc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _coarse_case():
    rng = np.random.default_rng(11)
    z, y, x = np.mgrid[:N, :N, :N].astype(np.float32)
    truth = np.zeros((N, N, N), np.float32)
    for c in rng.uniform(0.3 * N, 0.7 * N, size=(10, 3)):
        r2 = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2
        truth += np.exp(-r2 * PX * PX / (2 * 10.0**2))
    blurred = bfactor_filter(truth, 600.0, pixel_size=PX)
    noisy = blurred + np.float32(0.05 * blurred.std()) * rng.standard_normal(
        truth.shape, np.float32
    )
    return truth, noisy


def test_coarse_map_is_sharpened_mildly_and_cut_at_0833_resolution():
    truth, noisy = _coarse_case()
    r = auto_sharpen(noisy, pixel_size=PX, resolution=RES, n_steps=11)
    # the map B (tens of thousands of Å² of molecular shape here) is not a blur: the scan is
    # b_sharpen -100 ... 300 about it, and the anisotropy is kept
    assert r.b_iso_original > 1000
    assert -100.0 - 1e-6 <= r.b_sharpen <= 300.0 + 1e-6
    assert r.aniso is None and any("coarse map" in n for n in r.notes)
    # nothing finer than 0.833 x resolution survives (noise there was sharpened before)
    s, amp = amplitude_profile(r.map, pixel_size=PX, kind="rms")
    _, amp0 = amplitude_profile(noisy, pixel_size=PX, kind="rms")
    beyond = s > 1.0 / (0.833 * RES) * 1.05
    assert np.all(amp[beyond] <= 1e-4 * amp0[1])
    # and the result is at least as close to the truth as the input
    assert _cc(r.map, truth) >= _cc(noisy, truth) - 1e-3


def test_region_weight_is_not_bounded_by_a_constant_region_count():
    sa = np.linspace(2.0, 1.8, 11)
    b_iso = np.linspace(-100.0, 300.0, 11)
    w, bounds = _fit_region_weight(sa, np.full(11, 1.0 / 200), b_iso, default=1.0)
    assert w == 1.0 and np.all(np.isnan(bounds))
