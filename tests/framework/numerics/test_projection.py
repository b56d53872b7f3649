"""Fourier-slice and real-space projection against analytic projections and real data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _recon_data import (  # noqa: E402
    corr,
    emd3488_64,
    euler_matrix,
    gaussian_blobs,
    gaussian_projection,
    random_rotations,
)

from emforge.numerics import (  # noqa: E402
    prepare_volume,
    project_fourier,
    project_real_space,
    spatial_frequency_rfft,
)

BLOBS = [(8.0, -5.0, 3.0), (-6.0, 4.0, -7.0), (2.0, 9.0, 5.0)]


def test_docs_euler_formula_is_scipy_zyz_transposed():
    rng = np.random.default_rng(3)
    for rot, tilt, psi in rng.uniform(-180, 180, (20, 3)):
        ours = euler_matrix(rot, tilt, psi)
        sp = Rotation.from_euler("ZYZ", (rot, tilt, psi), degrees=True).as_matrix().T
        np.testing.assert_allclose(ours, sp, atol=1e-12)


@pytest.mark.parametrize("n", [32, 33])
def test_centre_gaussian_projects_to_centre_for_any_rotation(n):
    vol = gaussian_blobs(n, [(0.0, 0.0, 0.0)], 1.5)
    rots = random_rotations(12, seed=n)
    for proj in (project_fourier(vol, rots), project_real_space(vol, rots)):
        for p in proj:
            assert np.unravel_index(np.argmax(p), p.shape) == (n // 2, n // 2)
            assert p.max() == pytest.approx(np.sqrt(2 * np.pi) * 1.5, rel=0.02)


def test_fourier_projection_equals_analytic_gaussians_with_euler_poses_and_shifts():
    n, sigma, px = 64, 2.5, 1.3
    angles = [(0, 0, 0), (90, 0, 0), (0, 90, 0), (30, 60, -45), (-120, 150, 10)]
    rots = np.stack([euler_matrix(*a) for a in angles])
    shifts_px = np.array([[0, 0], [3.5, -2], [-4, 1.25], [2, 2], [0.5, -6]])
    vol = gaussian_blobs(n, BLOBS, sigma)
    proj = project_fourier(vol, rots, shifts=shifts_px * px, pixel_size=px)
    ref = project_real_space(vol, rots, shifts=shifts_px * px, pixel_size=px)
    for i in range(len(angles)):
        truth = gaussian_projection(n, BLOBS, sigma, rots[i], shifts_px[i])
        assert corr(proj[i], truth) > 0.9999
        # sinc^2 pre-correction is exact on average over poses, not at grid-aligned ones: 3%
        assert np.abs(proj[i] - truth).max() < 0.03 * truth.max()
        assert corr(ref[i], truth) > 0.999  # the reference projector is right too


def test_rot_90_moves_x_to_minus_y():
    # A = R_z(90) maps the map point (10, 0, 0) to (0, -10, 0): image row n//2 - 10.
    n = 48
    vol = gaussian_blobs(n, [(10.0, 0.0, 0.0)], 1.5)
    p = project_fourier(vol, euler_matrix(90, 0, 0)[None])[0]
    assert np.unravel_index(np.argmax(p), p.shape) == (n // 2 - 10, n // 2)


def test_shift_moves_particle_centre_to_box_centre_minus_shift():
    n, px = 48, 2.0
    vol = gaussian_blobs(n, [(0.0, 0.0, 0.0)], 1.5)
    p = project_fourier(vol, np.eye(3)[None], shifts=[[8.0, -6.0]], pixel_size=px)[0]
    # centre at N//2 - shift/pixel_size: x = 24 - 4, y = 24 + 3
    assert np.unravel_index(np.argmax(p), p.shape) == (27, 20)


def test_emd3488_projections_match_real_space(data_dir):
    vol, _ = emd3488_64(data_dir)
    rots = random_rotations(8, seed=11)
    proj = project_fourier(vol, rots)
    ref = project_real_space(vol, rots)
    ccs = [corr(a, b) for a, b in zip(proj, ref, strict=True)]
    assert min(ccs) >= 0.99, ccs
    # the cubic-spline reference damps the finest detail a little (3.7% of the std here)
    assert np.std(proj) == pytest.approx(np.std(ref), rel=0.05)


def test_padding_converges():
    vol = gaussian_blobs(40, BLOBS, 1.2)
    rots = random_rotations(4, seed=5)
    fine = project_fourier(vol, rots, pad=4)
    cc = {}
    for pad in (1, 2):
        coarse = project_fourier(vol, rots, pad=pad)
        cc[pad] = min(corr(a, b) for a, b in zip(coarse, fine, strict=True))
    assert 0.99 < cc[1] < cc[2]
    assert cc[2] > 0.9995


def test_prepared_volume_and_ctf():
    n, px = 40, 1.5
    vol = gaussian_blobs(n, BLOBS, 1.5)
    rots = random_rotations(3, seed=2)
    pv = prepare_volume(vol)
    plain = project_fourier(pv, rots)
    np.testing.assert_allclose(plain, project_fourier(vol, rots), atol=1e-5)
    # a CTF of -1 inverts the contrast; a low-pass CTF equals filtering the projection
    np.testing.assert_allclose(
        project_fourier(pv, rots, ctf=-np.ones((n, n // 2 + 1))), -plain, atol=1e-5
    )
    s = spatial_frequency_rfft((n, n), pixel_size=px)
    filt = np.exp(-50.0 * s**2).astype(np.float32)
    filtered = np.fft.irfft2(np.fft.rfft2(plain) * filt, s=(n, n))
    np.testing.assert_allclose(project_fourier(pv, rots, ctf=filt), filtered, atol=1e-4)


def test_spectrum_output_is_rfft_of_images():
    vol = gaussian_blobs(32, BLOBS, 1.5)
    rots = random_rotations(2, seed=1)
    spec = project_fourier(vol, rots, return_spectrum=True)
    img = project_fourier(vol, rots)
    np.testing.assert_allclose(spec, np.fft.rfft2(img), atol=2e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rotations": np.eye(2)}, "rotations"),
        ({"rotations": np.full((1, 3, 3), np.nan)}, "rotations"),
        ({"shifts": [[1.0, 2.0]]}, "pixel_size"),
        ({"shifts": [[1.0, 2.0, 3.0]], "pixel_size": 1.0}, "shifts"),
        ({"pad": 0.5}, "pad"),
        ({"ctf": np.ones((5, 5))}, "ctf"),
        ({"max_radius": -1.0}, "max_radius"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, match):
    args = {"rotations": np.eye(3)[None]} | kwargs
    rot = args.pop("rotations")
    with pytest.raises(ValueError, match=match):
        project_fourier(np.zeros((8, 8, 8)), rot, **args)


def test_non_cubic_volume_is_refused():
    with pytest.raises(ValueError, match="volume: must be a cubic"):
        project_fourier(np.zeros((8, 8, 9)), np.eye(3)[None])
