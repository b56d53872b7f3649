"""emforge.numerics.ctf against analytic CTF zeros, RELION's astigmatism convention and filters."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import ctf as ct
from emforge.numerics import irfftn, rfftn

LAM300 = 0.019687  # Angstrom at 300 kV


def test_wavelength():
    assert ct.electron_wavelength(300) == pytest.approx(LAM300, abs=1e-6)
    assert ct.electron_wavelength(200) == pytest.approx(0.025079, abs=1e-6)
    assert ct.electron_wavelength(100) == pytest.approx(0.037014, abs=1e-6)


@pytest.mark.parametrize("defocus", [10_000.0, 25_000.0])
def test_zeros_without_cs_at_sqrt_k_over_lambda_dz(defocus):
    """Cs = 0, no amplitude contrast: CTF = sin(pi lambda dz s^2), zero at s = sqrt(k/(lambda dz))."""
    lam = ct.electron_wavelength(300)
    k = np.arange(1, 20)
    s = np.sqrt(k / (lam * defocus))
    kw = dict(defocus_u=defocus, defocus_v=defocus, cs=0.0, amplitude_contrast=0.0)
    for theta in (0.0, 0.7, 2.0):
        v = ct.ctf_at_frequencies(s * np.cos(theta), s * np.sin(theta), **kw)
        np.testing.assert_allclose(v, 0.0, atol=2e-5)
    mid = np.sqrt((k + 0.5) / (lam * defocus))  # extrema in between: +-1, alternating
    np.testing.assert_allclose(ct.ctf_at_frequencies(mid, 0.0, **kw), (-1.0) ** k, atol=1e-5)


def test_zeros_with_cs_and_amplitude_contrast():
    """chi = -pi lam dz s^2 + pi/2 Cs lam^3 s^4 - atan(Q0/sqrt(1-Q0^2)) = -k pi: solve for s^2."""
    dz, cs, q0 = 18_000.0, 2.7, 0.1
    lam = ct.electron_wavelength(300)
    a, b = np.pi / 2 * cs * 1e7 * lam**3, -np.pi * lam * dz
    c0 = -np.arctan(q0 / np.sqrt(1 - q0 * q0))
    s2 = []
    for k in range(1, 12):
        roots = np.roots([a, b, c0 + k * np.pi])
        s2.append(np.min(roots[roots > 0].real))
    s = np.sqrt(s2)
    assert s.max() < 0.5  # all below the Nyquist of a 1 A pixel
    v = ct.ctf_at_frequencies(s, 0.0, defocus_u=dz, defocus_v=dz, cs=cs, amplitude_contrast=q0)
    np.testing.assert_allclose(v, 0.0, atol=5e-5)


def test_dc_value_amplitude_contrast_and_phase_shift():
    kw = dict(defocus_u=20_000.0, defocus_v=20_000.0, amplitude_contrast=0.1)
    assert ct.ctf_at_frequencies(0.0, 0.0, **kw) == pytest.approx(0.1, abs=1e-7)
    v = ct.ctf_at_frequencies(0.0, 0.0, phase_shift=90.0, **kw)
    assert v == pytest.approx(np.sqrt(1 - 0.01), abs=1e-6)


def test_astigmatism_angle_relion_convention():
    """Along defocus_angle (from x towards +y) the defocus is U; 90 degrees away it is V."""
    u, v, angle = 12_000.0, 20_000.0, 30.0
    s = np.linspace(0.0, 0.3, 200)
    for direction, dz in ((angle, u), (angle + 90.0, v), (angle + 180.0, u)):
        t = np.radians(direction)
        astig = ct.ctf_at_frequencies(
            s * np.cos(t), s * np.sin(t), defocus_u=u, defocus_v=v, defocus_angle=angle
        )
        round_ = ct.ctf_at_frequencies(s, 0.0, defocus_u=dz, defocus_v=dz)
        np.testing.assert_allclose(astig, round_, atol=2e-5)
    # at 45 degrees from the axes the defocus is the mean
    t = np.radians(angle + 45.0)
    mid = ct.ctf_at_frequencies(
        s * np.cos(t), s * np.sin(t), defocus_u=u, defocus_v=v, defocus_angle=angle
    )
    mean = ct.ctf_at_frequencies(s, 0.0, defocus_u=16_000.0, defocus_v=16_000.0)
    np.testing.assert_allclose(mid, mean, atol=2e-5)


def test_bfactor_envelope():
    s = np.linspace(0, 0.4, 50)
    kw = dict(defocus_u=15_000.0, defocus_v=15_000.0)
    ratio = ct.ctf_at_frequencies(s, 0.0, bfactor=80.0, **kw) / ct.ctf_at_frequencies(s, 0.0, **kw)
    ok = np.abs(ct.ctf_at_frequencies(s, 0.0, **kw)) > 0.05
    np.testing.assert_allclose(ratio[ok], np.exp(-80.0 * s[ok] ** 2 / 4), rtol=1e-4)


@pytest.mark.parametrize("shape", [(64, 64), (48, 37)])
def test_grids_half_and_full(shape):
    ny, nx = shape
    kw = dict(pixel_size=1.7, defocus_u=14_000.0, defocus_v=17_000.0, defocus_angle=-25.0)
    full = ct.ctf_2d(shape, rfft=False, **kw)
    half = ct.ctf_2d(shape, **kw)
    assert full.shape == shape and half.shape == (ny, nx // 2 + 1) and half.dtype == np.float32
    # the half grid holds +Nyquist at x = nx/2 (rfftfreq), the full grid -Nyquist (fftfreq)
    keep = nx // 2 + 1 - (1 - nx % 2)
    np.testing.assert_allclose(half[:, :keep], full[:, :keep], atol=1e-6)
    # the CTF is even: the full grid equals its point reflection (index -k) off the Nyquist lines
    refl = np.roll(full[::-1, ::-1], (1, 1), axis=(0, 1))
    ry = slice(None) if ny % 2 else np.arange(ny) != ny // 2
    rx = slice(None) if nx % 2 else np.arange(nx) != nx // 2
    np.testing.assert_allclose(full[ry][:, rx], refl[ry][:, rx], atol=1e-5)
    # pixel (iy, ix) holds frequency (iy/(ny px), ix/(nx px)) with negative frequencies wrapped
    iy, ix = 5, 3
    ref = ct.ctf_at_frequencies(ix / (nx * 1.7), -iy / (ny * 1.7), defocus_u=14_000.0,
                                defocus_v=17_000.0, defocus_angle=-25.0)  # fmt: skip
    assert full[ny - iy, ix] == pytest.approx(float(ref), abs=1e-6)


def test_batched_parameters():
    du = np.array([10_000.0, 20_000.0, 30_000.0])
    stack = ct.ctf_2d((32, 32), pixel_size=2.0, defocus_u=du, defocus_v=du + 500, voltage=[300.0])
    assert stack.shape == (3, 32, 17)
    one = ct.ctf_2d((32, 32), pixel_size=2.0, defocus_u=20_000.0, defocus_v=20_500.0)
    np.testing.assert_array_equal(stack[1], one)


def _image(n=64, seed=0):
    """White noise without Nyquist-line coefficients (where an astigmatic CTF cannot be
    Hermitian on the half grid)."""
    f = rfftn(np.random.default_rng(seed).normal(size=(n, n)).astype(np.float32))
    f[n // 2, :] = 0
    f[:, -1] = 0
    return irfftn(f, shape=(n, n))


def test_phase_flip_gives_abs_ctf():
    img = _image()
    c = ct.ctf_2d(
        img.shape, pixel_size=1.5, defocus_u=15_000.0, defocus_v=18_000.0, defocus_angle=40
    )
    observed = irfftn(rfftn(img) * c, shape=img.shape)
    flipped = ct.phase_flip_2d(observed, c)
    expected = irfftn(rfftn(img) * np.abs(c), shape=img.shape)
    np.testing.assert_allclose(flipped, expected, atol=1e-4)
    stack = ct.phase_flip_2d(np.stack([observed, observed]), c)
    assert stack.shape == (2, 64, 64)
    np.testing.assert_allclose(stack[1], expected, atol=1e-4)


def test_wiener_restores_where_ctf_is_strong():
    img = _image(seed=1)
    c = ct.ctf_2d(img.shape, pixel_size=1.5, defocus_u=15_000.0, defocus_v=15_000.0)
    observed = irfftn(rfftn(img) * c, shape=img.shape)
    k = 0.01
    out = rfftn(ct.wiener_filter_2d(observed, c, wiener_constant=k))
    f = rfftn(img)
    np.testing.assert_allclose(out, f * c * c / (c * c + k), atol=2e-3)
    strong = (np.abs(c) > 0.7) & (np.abs(f) > 1e-3 * np.abs(f).max())
    assert np.abs(out[strong] / f[strong] - 1).max() < 0.03


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ct.electron_wavelength(0), "voltage: must be > 0"),
        (lambda: ct.ctf_2d((8,), pixel_size=1, defocus_u=1, defocus_v=1), "shape: "),
        (lambda: ct.ctf_2d((8, 8), pixel_size=0, defocus_u=1, defocus_v=1), "pixel_size: must be"),
        (
            lambda: ct.ctf_2d((8, 8), pixel_size=1, defocus_u=np.nan, defocus_v=1),
            "defocus_u: contains",
        ),
        (
            lambda: ct.ctf_2d(
                (8, 8), pixel_size=1, defocus_u=1, defocus_v=1, amplitude_contrast=1.0
            ),
            "amplitude_contrast: must be in",
        ),  # fmt: skip
        (lambda: ct.phase_flip_2d(np.zeros((8, 8)), np.zeros((8, 8))), "ctf: last two dimensions"),
        (
            lambda: ct.wiener_filter_2d(np.zeros((8, 8)), np.zeros((8, 5)), wiener_constant=0),
            "wiener_constant: must be > 0",
        ),  # fmt: skip
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
