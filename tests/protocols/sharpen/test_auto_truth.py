"""sharpen.auto against ground truth and against cctbx's phenix.auto_sharpen.

Ground truth: the deposited EMD-3488 map (``truth``, 100^3 at 1.05 Å/px, 3.2 Å) blurred by a
known B = 100 Å² (``blurred``: F x exp(-100 s^2/4)). cctbx-base 2025.11 (``auto_sharpen.run``
with resolution=3.2, i.e. phenix.auto_sharpen's b_iso_to_d_cut scan) on the same files gives a
masked CC to the truth of 0.983 on the blurred map (b_sharpen +88.7 Å²) and 0.970 on the
deposited map (it blurs by 31.5 Å²); benchmarks/peers/cctbx_side.py reproduces them.
Also: the anisotropic B fit on a map with a known B tensor, the region-weight bounds, the
filter (B mixed inside the exponent) and the flat-score warning as `runs show` prints it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("EMFORGE_FFTW_EFFORT", "FFTW_ESTIMATE")

from emforge.numerics import irfftn, rfftn, spatial_frequency_rfft  # noqa: E402
from emforge.protocols.sharpen.kernels import (  # noqa: E402
    apply_auto_sharpening,
    auto_sharpen,
    b_iso_to_d_cut_filter,
    fit_aniso_b,
    remove_aniso,
)
from emforge.protocols.sharpen.kernels.auto import (  # noqa: E402
    _fit_region_weight,
    _pick_best,
    auto_filter,
)
from emforge.protocols.sharpen.kernels.mapb import map_b  # noqa: E402

RES = 3.2  # EMD-3488's resolution
CCTBX_CC_BLURRED = 0.983  # cctbx's masked CC on the blurred map (see the module docstring)
CCTBX_CC_DEPOSITED = 0.970


# --------------------------------------------------------------------------- anisotropic B
def _aniso_map(b_cart, n=64, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n, n)).astype(np.float32)
    s, (sz, sy, sx) = spatial_frequency_rfft(a.shape, pixel_size=1.0, components=True)
    c = (sz, sy, sx)
    q = sum(b_cart[i][j] * c[i] * c[j] for i in range(3) for j in range(3))
    return irfftn(rfftn(a) * np.exp(-q / 4.0), shape=a.shape)


def test_aniso_fit_recovers_a_known_b_tensor_and_removal_makes_the_map_isotropic():
    b_cart = np.array([[80.0, 10.0, 0.0], [10.0, 40.0, -5.0], [0.0, -5.0, 30.0]])
    m = _aniso_map(b_cart)
    fit = fit_aniso_b(m, pixel_size=1.0, resolution=3.0)
    traceless = b_cart - np.trace(b_cart) / 3 * np.eye(3)
    np.testing.assert_allclose(fit.aniso, traceless, atol=1.5)
    assert np.trace(fit.aniso) == pytest.approx(0.0, abs=1e-9)
    assert fit.anisotropy == pytest.approx(np.ptp(np.linalg.eigvalsh(b_cart)), abs=3.0)
    out, _ = remove_aniso(m, pixel_size=1.0, resolution=3.0)
    assert fit_aniso_b(out, pixel_size=1.0, resolution=3.0).anisotropy < 1.0
    # isotropic now: its map B is the tensor's mean B (trace / 3)
    assert map_b(out, pixel_size=1.0, resolution=3.0).b == pytest.approx(50.0, abs=1.5)


def test_aniso_fit_of_an_isotropic_map_is_isotropic():
    fit = fit_aniso_b(_aniso_map(60.0 * np.eye(3), seed=1), pixel_size=1.0, resolution=3.0)
    assert fit.anisotropy < 3.0  # the scatter of random coefficients on a 64^3 box: ~2 Å²
    assert fit.b_iso == pytest.approx(60.0, abs=2.0)


def test_aniso_fit_rejects_a_2d_map():
    with pytest.raises(ValueError, match="map: an anisotropic B needs a 3D map"):
        fit_aniso_b(np.random.default_rng(0).standard_normal((32, 32)), pixel_size=1.0)


# --------------------------------------------------------------------------- the pieces
def test_region_weight_is_clamped_so_the_mid_trial_beats_both_ends():
    b_iso = np.linspace(-100.0, 300.0, 9)  # mid (37.5% of the range) = index 3
    sa = np.array([4.0, 3.9, 3.8, 3.7, 3.4, 3.1, 2.8, 2.5, 2.2])
    nr = np.array([10.0, 6.0, 3.0, 1.5, 1.4, 1.3, 1.2, 1.1, 1.0])
    # the mid ties the sharp end at lo = (4.0 - 3.7) / (10 - 1.5) and the blurred end at
    # hi = (3.7 - 2.2) / (1.5 - 1); the delta ratio (4.0 - 2.2) / (10 - 1) = 0.2 lies between
    # them (always: it is their mediant) but within the 10% buffer of lo, so it is clamped
    lo, hi = 0.3 / 8.5, 3.0
    pad = 0.1 * (hi - lo)
    w, bounds = _fit_region_weight(sa, nr, b_iso, default=1.0)
    assert bounds == pytest.approx((lo + pad, hi - pad))
    assert w == pytest.approx(lo + pad)
    score = sa - w * nr
    assert score[3] > score[0] and score[3] > score[-1]
    # a delta ratio well inside the bounds is kept
    nr2 = np.array([10.0, 8.0, 6.5, 5.0, 4.0, 3.0, 2.0, 1.5, 1.0])
    w2, (lo2, hi2) = _fit_region_weight(sa, nr2, b_iso, default=1.0)
    assert lo2 < w2 < hi2 and w2 == pytest.approx(0.2)


def test_auto_filter_mixes_b_inside_the_exponent():
    shape, px = (40, 40, 40), 1.05
    s = spatial_frequency_rfft(shape, pixel_size=px)
    got = auto_filter(shape, pixel_size=px, b_sharpen=100.0, d_cut=RES)
    inside = s <= 1.0 / (0.833 * RES)  # Phenix's map coefficients end at 0.833 x resolution
    want = np.where(inside, b_iso_to_d_cut_filter(s, b_sharpen=100.0, d_cut=RES), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.all(got[~inside] == 0) and np.any(~inside)
    # at 3.0 Å the sharpened tail is gone: exp((100 - 200 (1 - w)) s^2/4), not w e^(+100 s^2/4)
    i = np.argmin(np.abs(s - 1 / 3.0))
    assert got.flat[i] < 0.15


def test_flat_score_picks_no_change_and_a_peaked_one_does_not():
    b_sharpen = np.linspace(110.0, -290.0, 21)
    rng = np.random.default_rng(0)
    # a broad peak at b_sharpen -30, 0.03 above no change, with noise 0.02 per trial
    broad = 3.0 - 0.03 * ((b_sharpen + 30.0) / 40.0) ** 2 + 0.02 * rng.standard_normal(21)
    i, note = _pick_best(broad, b_sharpen)
    assert "flat auto-sharpen score" in note and abs(b_sharpen[i]) == pytest.approx(10.0)
    sharp = 3.0 - 0.5 * ((b_sharpen - 90.0) / 40.0) ** 2 + 0.02 * rng.standard_normal(21)
    i, note = _pick_best(sharp, b_sharpen)
    assert note == "" and b_sharpen[i] == pytest.approx(90.0, abs=20.0)


# --------------------------------------------------------------------------- ground truth
def test_auto_sharpen_restores_a_map_blurred_by_b100_at_least_as_well_as_cctbx(
    truth, blurred, mask, pixel_size, masked_cc
):
    r = auto_sharpen(blurred, pixel_size=pixel_size, resolution=RES)
    cc = masked_cc(r.map, truth, mask)
    assert cc >= CCTBX_CC_BLURRED, cc  # measured 0.989
    assert masked_cc(blurred, truth, mask) < 0.9  # the blur is real (0.868)
    # the map B is the deposited map's (+10.5 at 3.2 Å) + 100; the applied B undoes the blur
    assert r.b_iso_original == pytest.approx(110.5, abs=3.0)
    assert 80.0 <= r.b_sharpen <= 140.0
    assert not any("flat" in n for n in r.notes)
    # the region weight was fitted within its bounds, and the blur was isotropic (< 25 Å²
    # spread, the deposited map's own anisotropy is about 18 Å²)
    lo, hi = r.region_weight_bounds
    assert lo <= r.region_weight <= hi
    assert r.aniso is not None and r.aniso.anisotropy < 25.0
    # a half map gets the same filter as the map
    np.testing.assert_allclose(
        apply_auto_sharpening(blurred, r, pixel_size=pixel_size), r.map, atol=1e-4
    )


def test_auto_sharpen_keeps_an_already_sharpened_map_and_says_so(
    truth, mask, pixel_size, masked_cc
):
    r = auto_sharpen(truth, pixel_size=pixel_size, resolution=RES)
    assert any("flat auto-sharpen score" in n for n in r.notes), r.notes
    assert r.b_sharpen == 0.0 and r.b_iso == r.b_iso_original and r.aniso is None
    # only the blur beyond 3.2 Å that every trial has: CC 0.990
    assert masked_cc(r.map, truth, mask) >= max(CCTBX_CC_DEPOSITED, 0.985)


@pytest.mark.slow
def test_flat_score_warning_is_recorded_and_shown(tmp_path, truth, pixel_size):
    from emforge.engine.listing import show_lines
    from emforge.io import write_volume
    from emforge.project import Project

    path = tmp_path / "emd_3488.mrc"
    write_volume(str(path), truth, voxel_size=pixel_size)
    proj = Project.init(tmp_path / "P")
    vid = proj.run("import.volume", params={"path": str(path)})
    rid = proj.run("sharpen.auto", params={"resolution": RES}, inputs={"volume": f"{vid}.volume"})
    shown = "\n".join(show_lines(proj, rid))
    assert "flat auto-sharpen score" in shown
    assert "applied sharpening B = +0.0 Å²" in shown
