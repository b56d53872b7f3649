"""Gold-standard post-processing: analytic FSC of noisy halves, EMAN2's resolution rule, the
Wiener filter by FSC, masks and symmetry."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import fft as F
from emforge.numerics.fourier import radial_sum, shell_frequencies, shell_index_rfft
from emforge.protocols.refine.kernels import eman_resolution, gold_standard_postprocess
from emforge.protocols.refine.kernels.postprocess import wiener_byfsc

N = 48
PX = 2.0
Z, Y, X = np.mgrid[0:N, 0:N, 0:N] - N // 2


def _map() -> np.ndarray:
    def blob(cx, cy, cz, s):
        return np.exp(-((X - cx) ** 2 + (Y - cy) ** 2 + (Z - cz) ** 2) / (2.0 * s * s))

    rng = np.random.default_rng(0)
    v = sum(blob(*rng.uniform(-9, 9, 3), rng.uniform(0.8, 1.6)) for _ in range(40))
    return (v * (X**2 + Y**2 + Z**2 < 14**2)).astype(np.float32)


def _analytic_fsc(vol: np.ndarray, sigma: float) -> np.ndarray:
    """E[FSC] of (V + N1, V + N2), white noise of std sigma: S / (S + N) per shell."""
    sh = shell_index_rfft(vol.shape)
    nsh = N // 2 + 1
    sig = radial_sum(np.abs(F.rfftn(vol)) ** 2, sh, nsh)
    count = radial_sum(np.ones(sh.shape), sh, nsh)
    return sig / (sig + sigma**2 * vol.size * count)


def _halves(sigma: float, seed: int = 1):
    vol = _map()
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, sigma, (2, *vol.shape)).astype(np.float32)
    return vol, vol + noise[0], vol + noise[1]


def test_unmasked_fsc_of_two_noisy_copies_is_the_analytic_one():
    sigma = 0.05
    vol, even, odd = _halves(sigma)
    g = gold_standard_postprocess(even, odd, pixel_size=PX, automask=False)
    want = _analytic_fsc(vol, sigma)
    k = np.arange(4, N // 2 + 1)
    np.testing.assert_allclose(g.fsc_unmasked[k], want[k], atol=0.08)
    assert np.abs(g.fsc_unmasked[k] - want[k]).mean() < 0.025
    assert want[4] > 0.9 and want[-1] < 0.05  # the curve crosses 0.143 inside the box
    np.testing.assert_allclose(g.s, shell_frequencies(even.shape, pixel_size=PX))
    # the reported resolution is EMAN2's interpolation of the measured curve, and within 5 %
    # of the one the analytic curve gives
    assert g.resolution_unmasked == eman_resolution(g.s, g.fsc_unmasked)
    assert abs(g.resolution_unmasked / eman_resolution(g.s, want) - 1) < 0.05


def test_a_mask_around_the_particle_raises_the_resolution():
    vol, even, odd = _halves(0.05)
    g = gold_standard_postprocess(even, odd, pixel_size=PX, target_resolution=8.0)
    assert g.mask.shape == even.shape and g.mask.max() <= 1.0 and g.mask.min() >= 0.0
    inside = g.mask > 0.5
    assert inside.mean() < 0.5 and (vol[inside].sum() > 0.95 * vol.sum())
    assert g.resolution < g.resolution_unmasked
    assert g.resolution == eman_resolution(g.s, g.fsc_masked)
    for m in (g.even, g.odd, g.combined):
        assert m.shape == even.shape and m.dtype == np.float32
        assert not np.any(m[g.mask == 0])  # masked
        assert np.corrcoef(m[inside], vol[inside])[0, 1] > 0.95


def test_given_mask_and_automask_parameters():
    vol, even, odd = _halves(0.05)
    ball = (X**2 + Y**2 + Z**2 < 16**2).astype(np.float32)
    g = gold_standard_postprocess(even, odd, pixel_size=PX, mask=ball)
    np.testing.assert_array_equal(g.mask, ball)
    auto = {"threshold": 0.3, "radius": 4, "nshells": 2, "nshellsgauss": 3, "nmaxseed": 0}
    g2 = gold_standard_postprocess(even, odd, pixel_size=PX, automask=auto)
    assert 0 < (g2.mask > 0.5).mean() < 0.5
    with pytest.raises(ValueError, match="automask"):
        gold_standard_postprocess(even, odd, pixel_size=PX, automask={"thresh": 1})


def test_eman_resolution_hand_computed():
    n, px = 32, 2.0
    s = np.arange(n // 2 + 1) / (n * px)  # with the DC row, as numerics.fsc returns it
    f = np.linspace(1.0, 0.0, s.size)
    f[0] = 1.0
    # rows after dropping DC: r = 1..16, F[si] = f[si + 1]; first F[si-1] > 0.143 >= F[si]
    rows_f, rows_s = f[1:], s[1:]
    si = next(i for i in range(2, rows_f.size - 2) if rows_f[i - 1] > 0.143 >= rows_f[i])
    frac = (0.143 - rows_f[si]) / (rows_f[si - 1] - rows_f[si])
    want = 1.0 / (rows_s[si] * (1 - frac) + rows_s[si - 1] * frac)
    assert eman_resolution(s, f) == pytest.approx(want, rel=1e-12)
    assert eman_resolution(rows_s, rows_f) == pytest.approx(want, rel=1e-12)
    # concrete numbers: F = 0.30 then 0.10 at s = 0.1, 0.125 -> frac 0.215
    ss = np.array([0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2])
    ff = np.array([1.0, 0.99, 0.9, 0.6, 0.30, 0.10, 0.05, 0.0, 0.0])
    assert eman_resolution(ss, ff) == pytest.approx(1 / (0.125 * 0.785 + 0.1 * 0.215))
    # a dip below the threshold in the first row is skipped (the scan starts at row 2)
    ff2 = np.array([1.0, 0.1, 0.9, 0.6, 0.30, 0.10, 0.05, 0.0, 0.0])
    assert eman_resolution(ss, ff2) == eman_resolution(ss, ff)
    assert eman_resolution(ss, np.ones(9)) == pytest.approx(1 / 0.2)
    assert eman_resolution(ss, np.r_[1.0, np.zeros(8)]) == float("inf")


def test_wiener_byfsc_is_snr_squared_over_snr_squared_plus_one():
    delta = np.zeros((N, N, N), np.float32)
    delta[N // 2, N // 2, N // 2] = 1.0
    fsc = np.clip(np.linspace(1.0, 0.05, N // 2 + 1), 0, 0.99)  # never negative
    out = F.rfftn(wiener_byfsc(delta, fsc, snrmult=2.0))
    amp = np.abs(out)
    sh = shell_index_rfft(delta.shape)
    for k in (3, 10, 20):
        f = fsc[k]
        snr = 2 * f / (1 - f)
        want = max(snr**2 / (snr**2 + 1), 0.001)
        np.testing.assert_allclose(amp[sh == k], want, rtol=1e-4)
    cut = F.rfftn(wiener_byfsc(delta, fsc, maxfreq_shell=12.0))
    np.testing.assert_allclose(np.abs(cut[sh == 15]), 0.001, rtol=1e-3)


def test_combined_map_is_symmetrised():
    vol, even, odd = _halves(0.05)
    g = gold_standard_postprocess(even, odd, pixel_size=PX, automask=False, symmetry="c2")
    turned = np.roll(np.flip(g.combined, (1, 2)), 1, (1, 2))  # the 2-fold on z about n//2
    r = X**2 + Y**2 < 20**2
    assert np.corrcoef(turned[r], g.combined[r])[0, 1] > 0.99
    plain = gold_standard_postprocess(even, odd, pixel_size=PX, automask=False)
    turned = np.roll(np.flip(plain.combined, (1, 2)), 1, (1, 2))
    assert np.corrcoef(turned[r], plain.combined[r])[0, 1] < 0.8
