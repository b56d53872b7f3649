"""Kernels of the simulate / reconstruct / project protocols, against independent answers."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from emforge.numerics import euler_zyz_to_matrix, in_asymmetric_unit
from emforge.protocols.reconstruct.kernels import (
    fourier_resize,
    noise_sigma,
    particle_radius,
    simulated_poses,
    wiener_shells,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "framework" / "numerics"))
from _recon_data import fourier_crop  # noqa: E402  (independent crop: full FFT, window, sphere)


def test_fourier_crop_matches_an_independent_crop_and_keeps_the_density_scale():
    rng = np.random.default_rng(3)
    vol = rng.standard_normal((40, 40, 40)).astype(np.float32) + 2.0
    out = fourier_resize(vol, 24)
    assert out.shape == (24, 24, 24) and out.dtype == np.float32
    np.testing.assert_allclose(out, fourier_crop(vol, 24), atol=1e-5)
    assert out.mean() == pytest.approx(vol.mean(), rel=1e-5)  # DC (density scale) kept


def test_fourier_pad_then_crop_returns_a_band_limited_map():
    rng = np.random.default_rng(4)
    # an odd box has no Nyquist plane, so nothing is split between +k and -k on the way
    vol = fourier_resize(rng.standard_normal((32, 32, 32)), 15)
    back = fourier_resize(fourier_resize(vol, 28), 15)
    np.testing.assert_allclose(back, vol, atol=1e-5)


def test_particle_radius_of_a_ball():
    g = np.arange(40) - 20
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    ball = (r <= 9).astype(np.float32)
    assert 8.5 <= particle_radius(ball) <= 9.01


def test_noise_sigma_gives_the_requested_snr_inside_the_radius():
    img = np.zeros((3, 32, 32), np.float32)
    img[:, 12:20, 12:20] = np.array([1.0, 2.0, 3.0])[:, None, None]  # inside radius 10
    g = np.arange(32) - 16
    inside = (g[:, None] ** 2 + g[None, :] ** 2) <= 100
    var = np.mean([np.var(i[inside]) for i in img])
    assert noise_sigma(img, 10, 0.25) == pytest.approx(np.sqrt(var / 0.25), rel=1e-6)


def test_simulated_poses_are_seeded_in_the_asymmetric_unit_and_in_range():
    a = simulated_poses(200, pixel_size=2.0, defocus_range=(1e4, 3e4), max_shift=3,
                        symmetry="d7", seed=5)  # fmt: skip
    b = simulated_poses(200, pixel_size=2.0, defocus_range=(1e4, 3e4), max_shift=3,
                        symmetry="d7", seed=5)  # fmt: skip
    np.testing.assert_array_equal(a.angles, b.angles)
    assert np.all(in_asymmetric_unit(euler_zyz_to_matrix(a.angles), "d7", inc_mirror=True))
    assert np.all(np.abs(a.shifts) <= 6.0) and np.abs(a.shifts).max() > 4.0
    assert a.defocus.min() >= 1e4 and a.defocus.max() <= 3e4


def test_wiener_shells_from_a_uniform_weight():
    w = np.full((16, 16, 9), 4.0, np.float32)
    fsc = np.full(9, 0.5)  # half-map SNR 1: tau = <W>
    tau = wiener_shells(w, 8, fsc)
    assert tau.shape == (5,) and tau[0] == 0
    np.testing.assert_allclose(tau[1:], 4.0, rtol=1e-6)
    assert wiener_shells(w, 8, np.full(9, 0.2))[2] == pytest.approx(16.0, rel=1e-6)
