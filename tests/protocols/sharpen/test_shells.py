"""Shell sharpening with anisotropic correction, on EMD-3488 blurred anisotropically."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import irfftn, rfftn, spatial_frequency_rfft
from emforge.protocols.sharpen.kernels.shells import (
    fit_anisotropic_falloff,
    format_anisotropy_summary,
    remove_anisotropy,
    sharpen_shells,
)

B_AXES = np.array([60.0, 100.0, 160.0])  # blur along x, y, z
RES = 3.5
EIGHT_PI2 = 8 * np.pi**2


def _aniso_filter(a, px, U):
    """Multiply F by exp(-2 pi^2 s^T U s), U = (U11, U22, U33, U12, U13, U23) in x, y, z."""
    _, (sz, sy, sx) = spatial_frequency_rfft(a.shape, pixel_size=px, components=True)
    u11, u22, u33, u12, u13, u23 = U
    q = u11 * sx * sx + u22 * sy * sy + u33 * sz * sz
    q = q + 2 * (u12 * sx * sy + u13 * sx * sz + u23 * sy * sz)
    return irfftn(rfftn(a) * np.exp(-2 * np.pi**2 * q).astype(np.float32), shape=a.shape)


def _b(U):
    return EIGHT_PI2 * np.asarray(U[:3])


@pytest.fixture(scope="module")
def aniso_clean(truth, pixel_size):
    # exp(-(Bx sx^2 + By sy^2 + Bz sz^2)/4) is U_ii = B_i / (8 pi^2)
    return _aniso_filter(truth, pixel_size, (*(B_AXES / EIGHT_PI2), 0, 0, 0))


@pytest.fixture(scope="module")
def aniso(aniso_clean):
    rng = np.random.default_rng(31)
    return aniso_clean + np.float32(0.003) * rng.standard_normal(aniso_clean.shape, np.float32)


@pytest.fixture(scope="module")
def sharpened(aniso, pixel_size):
    return sharpen_shells(aniso, pixel_size=pixel_size, resolution=RES)


def test_fit_is_exact_for_a_known_anisotropic_filter(truth, pixel_size):
    # The deposited map has its own (unknown) U: compare the change the filter makes.
    U_add = np.array([0.8, 1.3, 1.9, 0.25, -0.15, 0.1])
    u0 = fit_anisotropic_falloff(truth, pixel_size=pixel_size, d_min=RES)
    u1 = fit_anisotropic_falloff(
        _aniso_filter(truth, pixel_size, U_add), pixel_size=pixel_size, d_min=RES
    )
    np.testing.assert_allclose(u1 - u0, U_add, atol=0.01)


def test_fitted_anisotropy_has_the_right_order_and_size(aniso, truth, pixel_size):
    u = fit_anisotropic_falloff(aniso, pixel_size=pixel_size, d_min=RES)
    u0 = fit_anisotropic_falloff(truth, pixel_size=pixel_size, d_min=RES)
    b = _b(u)
    assert b[0] < b[1] < b[2]
    np.testing.assert_allclose(b - _b(u0), B_AXES, rtol=0.25)


def test_remove_anisotropy_equalises_the_axes(aniso_clean, truth, pixel_size):
    u = fit_anisotropic_falloff(aniso_clean, pixel_size=pixel_size, d_min=RES)
    flat = remove_anisotropy(aniso_clean, u, pixel_size=pixel_size)
    u_flat = fit_anisotropic_falloff(flat, pixel_size=pixel_size, d_min=RES)
    # left: the truth's own (small) anisotropy; the isotropic B is kept
    u0 = fit_anisotropic_falloff(truth, pixel_size=pixel_size, d_min=RES)
    assert np.ptp(_b(u_flat)) <= np.ptp(_b(u0)) + 1.0
    assert _b(u_flat).mean() == pytest.approx(_b(u).mean(), abs=1.0)


def test_sharpen_shells_removes_most_of_the_anisotropy(sharpened, aniso, pixel_size):
    d_fit = 3.8  # stay clear of the low-pass edge at the resolution
    before = np.ptp(_b(fit_anisotropic_falloff(aniso, pixel_size=pixel_size, d_min=d_fit)))
    after = np.ptp(_b(fit_anisotropic_falloff(sharpened.map, pixel_size=pixel_size, d_min=d_fit)))
    assert before > 80
    assert after <= 0.3 * before
    assert sharpened.summary["b_axes"][0] < sharpened.summary["b_axes"][2]


def test_sharpen_shells_improves_the_map(sharpened, aniso, truth, mask, masked_cc, pixel_size):
    before = masked_cc(aniso, truth, mask)
    after = masked_cc(sharpened.map, truth, mask)
    assert after > before + 0.05
    iso = sharpen_shells(aniso, pixel_size=pixel_size, resolution=RES, anisotropic=False)
    assert after > masked_cc(iso.map, truth, mask) + 0.01
    assert sharpened.map.dtype == np.float32 and sharpened.map.shape == truth.shape


def test_summary_reports_like_phenix(sharpened):
    sm = sharpened.summary
    assert sm["noise_source"] == "noise floor"
    assert sm["data_anisotropy"] > 1.5  # the data fall off much faster along z
    assert sm["error_anisotropy"] == pytest.approx(1.0, abs=0.1)  # white noise
    assert sm["scale_anisotropy"] > 1.2  # z is boosted more than x
    assert sm["data_b_axes"][0] < sm["data_b_axes"][1] < sm["data_b_axes"][2]
    n = sm["s"].size
    assert sm["signal_axes"].shape == sm["noise_axes"].shape == sm["scale_axes"].shape == (n, 3)
    text = format_anisotropy_summary(sharpened)
    for word in ("Overall anisotropy", "XY", "XZ", "YZ", "Anisotropy of data"):
        assert word in text
    assert "Anisotropy of uncertainties" in text and "Anisotropy of scale factors" in text
    assert f"{sm['U'][2]:8.4f}" in text


def test_half_map_errors(halves, average, truth, mask, masked_cc, pixel_size):
    h1, h2 = halves
    r = sharpen_shells(average, pixel_size=pixel_size, resolution=3.2, half1=h1, half2=h2)
    assert r.summary["noise_source"] == "half maps"
    assert r.summary["error_anisotropy"] == pytest.approx(1.0, abs=0.1)
    assert masked_cc(r.map, truth, mask) > masked_cc(average, truth, mask) + 0.05
    assert r.half1.shape == truth.shape and r.half2 is not None
    np.testing.assert_allclose(0.5 * (r.half1 + r.half2), r.map, atol=1e-5)
    # isotropic blur: no axis stands out
    assert np.ptp(r.summary["b_axes"]) < 25


def test_bad_input(aniso, pixel_size):
    with pytest.raises(ValueError, match="finer than Nyquist"):
        sharpen_shells(aniso, pixel_size=pixel_size, resolution=2.0)
    with pytest.raises(ValueError, match="half2: give both"):
        sharpen_shells(aniso, pixel_size=pixel_size, resolution=RES, half1=aniso)
    with pytest.raises(ValueError, match="half1: shape"):
        sharpen_shells(
            aniso, pixel_size=pixel_size, resolution=RES, half1=aniso[:90], half2=aniso[:90]
        )
    with pytest.raises(ValueError, match="map: must be 3D"):
        fit_anisotropic_falloff(aniso[0], pixel_size=pixel_size, d_min=RES)
    with pytest.raises(ValueError, match="U: must be 6"):
        remove_anisotropy(aniso, [1.0, 2.0], pixel_size=pixel_size)
