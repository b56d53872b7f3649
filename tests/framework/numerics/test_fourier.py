"""emforge.numerics.fourier against analytic results and numpy reference computations."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import fourier as fo
from emforge.numerics import rfftn


def _gaussian_blob(n, sigma, pixel):
    c = np.arange(n) - n // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    r2 = (x * x + y * y + z * z) * pixel**2
    return np.exp(-r2 / (2 * sigma**2)).astype(np.float32)


def test_spatial_frequency_matches_numpy_grid():
    shape, px = (12, 10, 9), 1.3
    s, (sz, sy, sx) = fo.spatial_frequency_rfft(shape, pixel_size=px, components=True)
    fz, fy, fx = np.meshgrid(
        np.fft.fftfreq(12, px), np.fft.fftfreq(10, px), np.fft.rfftfreq(9, px), indexing="ij"
    )
    assert s.dtype == np.float32 and s.shape == (12, 10, 5)
    assert np.allclose(s, np.sqrt(fz**2 + fy**2 + fx**2), atol=1e-6)
    assert np.allclose(sz + 0 * s, fz) and np.allclose(sx + 0 * s, fx)


def test_shell_index_cubic_is_rounded_radius_in_fourier_pixels():
    n = 16
    k = np.fft.fftfreq(n) * n
    kz, ky, kx = np.meshgrid(k, k, np.fft.rfftfreq(n) * n, indexing="ij")
    expect = np.rint(np.sqrt(kz**2 + ky**2 + kx**2)).astype(int)
    assert np.array_equal(fo.shell_index_rfft((n, n, n)), expect)
    assert fo.default_nshells((n, n, n)) == 9
    # non-cubic: shells in units of the smallest dimension's Fourier spacing
    sh = fo.shell_index_rfft((20, 10, 16))
    assert sh[0, 5, 0] == 5 and sh[10, 0, 0] == 5 and sh[0, 0, 8] == 5


def test_hermitian_weights_make_radial_sum_equal_full_grid_sum():
    rng = np.random.default_rng(0)
    for shape in [(16, 17, 18), (15, 16, 19), (21, 20)]:
        a = rng.standard_normal(shape)
        F = rfftn(a)
        power = fo.radial_sum(np.abs(F) ** 2, fo.shell_index_rfft(shape), 10_000, real_shape=shape)
        assert power.sum() == pytest.approx(np.prod(shape) * (a**2).sum(), rel=1e-10)
        # per shell, compared with the same sum over the full (numpy fftn) grid
        full = np.abs(np.fft.fftn(a)) ** 2
        grids = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
        shells = np.rint(np.sqrt(sum(g**2 for g in grids)) * min(shape)).astype(int)
        ref = np.bincount(shells.ravel(), weights=full.ravel())
        assert np.allclose(power[: ref.size], ref, rtol=1e-9)


def test_radial_average_of_known_radial_function():
    shape = (32, 32, 32)
    s = fo.spatial_frequency_rfft(shape, pixel_size=1.0)
    sh = fo.shell_index_rfft(shape)
    n = fo.default_nshells(shape)
    k = np.arange(n)
    # a function of the shell index is returned exactly
    got = fo.radial_average((sh.astype(np.float64) ** 2 + 3.0), sh, n)
    assert np.allclose(got, k**2 + 3.0)
    # a smooth function of |s|: same as the per-shell mean over the full numpy grid, and close
    # to the function at the shell centre
    got = fo.radial_average(np.cos(4 * s), sh, n)
    g = np.meshgrid(*[np.fft.fftfreq(32)] * 3, indexing="ij")
    r = np.sqrt(sum(x**2 for x in g))
    shells = np.rint(r * 32).astype(int).ravel()
    ref = np.bincount(shells, np.cos(4 * r).ravel()) / np.bincount(shells)
    assert np.allclose(got, ref[:n], atol=1e-6)
    assert np.allclose(got[1:], np.cos(4 * k[1:] / 32.0), atol=0.02)
    # extra weights: weighted mean of a constant is that constant
    assert np.allclose(fo.radial_average(np.full(s.shape, 2.5), sh, n, weights=s + 1), 2.5)


def test_fsc_of_map_with_itself_is_one_and_independent_noise_near_zero():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 40, 40)).astype(np.float32)
    s, f = fo.fsc(a, a, pixel_size=1.2)
    assert np.allclose(f, 1.0, atol=1e-6)
    assert s[1] == pytest.approx(1 / (40 * 1.2))
    b = rng.standard_normal((40, 40, 40)).astype(np.float32)
    _, g = fo.fsc(a, b, pixel_size=1.2)
    # noise FSC: sigma ~ 1/sqrt(number of voxels in the shell) -> |FSC| < 0.3 beyond shell 2
    assert np.abs(g[3:]).max() < 0.3
    with pytest.raises(ValueError, match="map2"):
        fo.fsc(a, b[:-1], pixel_size=1.0)


def test_fsc_crossing_interpolates_and_edge_cases():
    s = np.linspace(0, 0.5, 11)
    f = np.array([1, 0.2, 0.9, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.0, 0.0])
    # first below 0.143 is index 7 (s=0.35), previous index 6 (s=0.30, fsc 0.2)
    sc = 0.30 + (0.2 - 0.143) / (0.2 - 0.1) * 0.05
    assert fo.fsc_crossing(s, f) == pytest.approx(1 / sc)
    assert fo.fsc_crossing(s, np.ones(11)) == pytest.approx(2.0)  # never crosses: Nyquist
    assert fo.fsc_crossing(s, np.zeros(11)) == np.inf


def test_bfactor_filter_inverse_is_identity_and_matches_analytic_gaussian():
    px, n = 1.0, 48
    blob = _gaussian_blob(n, 3.0, px)
    back = fo.bfactor_filter(fo.bfactor_filter(blob, 50.0, pixel_size=px), -50.0, pixel_size=px)
    assert np.abs(back - blob).max() < 1e-4
    # Gaussian sigma^2 in real space maps to exp(-2 pi^2 sigma^2 s^2): B adds 8 pi^2 sigma^2
    b = 8 * np.pi**2 * 1.0  # adds sigma^2 = 1 A^2
    blurred = fo.bfactor_filter(blob, b, pixel_size=px)
    expect = _gaussian_blob(n, np.sqrt(10.0), px) * (3.0 / np.sqrt(10.0)) ** 3
    assert np.abs(blurred - expect).max() < 1e-4


def test_guinier_fit_recovers_synthetic_b_exactly():
    s = np.linspace(0, 0.4, 60)
    amp = 7.0 * np.exp(-83.0 * s**2 / 4)
    b, a = fo.guinier_fit(s, amp, d_min=3.0, d_max=10.0)
    assert b == pytest.approx(83.0, abs=1e-8)
    assert a == pytest.approx(np.log(7.0), abs=1e-10)
    with pytest.raises(ValueError, match="d_min"):
        fo.guinier_fit(s, amp, d_min=10.0, d_max=3.0)


def test_amplitude_profile_of_gaussian_and_guinier_of_it():
    px = 1.0
    blob = _gaussian_blob(64, 2.0, px)  # FT ~ exp(-2 pi^2 sigma^2 s^2) -> B = 8 pi^2 sigma^2
    s, amp = fo.amplitude_profile(blob, pixel_size=px)
    b, _ = fo.guinier_fit(s, amp, d_min=4.0, d_max=10.0)
    assert b == pytest.approx(8 * np.pi**2 * 4.0, rel=0.01)


def test_lowpass_and_radial_filter_array_form():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((32, 32, 32)).astype(np.float32)
    lp = fo.lowpass(a, 4.0, pixel_size=1.0, width=2.0)
    s, amp = fo.amplitude_profile(lp, pixel_size=1.0)
    _, amp0 = fo.amplitude_profile(a, pixel_size=1.0)
    assert np.allclose(amp[s < 0.25 - 1 / 32], amp0[s < 0.25 - 1 / 32], rtol=1e-4)
    assert np.all(amp[s > 0.25 + 1 / 32] < 1e-3 * amp0.mean())
    ratio = amp[8] / amp0[8]  # shell 8 is exactly at 1/4 A^-1: half-height of the edge
    assert ratio == pytest.approx(0.5, abs=0.05)
    per_shell = np.where(np.arange(17) <= 8, 1.0, 0.0)
    cut = fo.apply_radial_filter(a, per_shell)
    _, amp2 = fo.amplitude_profile(cut, pixel_size=1.0)
    assert np.allclose(amp2[:9], amp0[:9], rtol=1e-4) and np.all(amp2[9:] < 1e-3)


def test_phase_randomize_keeps_amplitudes_and_decorrelates_high_resolution():
    rng = np.random.default_rng(3)
    a = fo.lowpass(rng.standard_normal((40, 40, 40)).astype(np.float32), 2.5, pixel_size=1.0)
    r = fo.phase_randomize(a, from_resolution=5.0, pixel_size=1.0, rng=rng)
    assert r.dtype == np.float32
    s, amp = fo.amplitude_profile(a, pixel_size=1.0)
    _, amp_r = fo.amplitude_profile(r, pixel_size=1.0)
    assert np.allclose(amp, amp_r, rtol=1e-4, atol=1e-4 * amp.max())
    _, f = fo.fsc(a, r, pixel_size=1.0)
    assert np.allclose(f[s < 0.2 - 1e-9], 1.0, atol=1e-5)
    assert np.abs(f[(s > 0.21) & (s < 0.38)]).max() < 0.2


def test_masked_fsc_corrected_removes_mask_correlation():
    rng = np.random.default_rng(4)
    n, px = 48, 1.0
    signal = fo.lowpass(rng.standard_normal((n, n, n)).astype(np.float32), 6.0, pixel_size=px)
    signal *= _gaussian_blob(n, 12.0, px)
    h1 = signal + 0.02 * rng.standard_normal((n, n, n)).astype(np.float32)
    h2 = signal + 0.02 * rng.standard_normal((n, n, n)).astype(np.float32)
    mask = (_gaussian_blob(n, 10.0, px) > 0.3).astype(np.float32)  # sharp mask: correlates
    res = fo.masked_fsc_corrected(h1, h2, mask, pixel_size=px, rng=np.random.default_rng(5))
    assert isinstance(res, fo.MaskedFSC)
    beyond = res.s > 1 / 5.0
    # no signal beyond 6 A: masked FSC is inflated by the sharp mask, corrected is near 0
    assert res.fsc_random[beyond].mean() > 0.05
    assert abs(res.fsc_corrected[res.s > 1 / 4.0].mean()) < 0.05
    assert 4.5 < res.resolution < 8.0
    assert np.allclose(
        res.fsc_corrected[: res.randomize_shell + 1], res.fsc_masked[: res.randomize_shell + 1]
    )
