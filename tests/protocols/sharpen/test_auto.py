"""Auto-sharpening (adjusted surface area, kurtosis) against synthetic and real ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.protocols.sharpen.kernels import (
    adjusted_surface_area,
    auto_sharpen,
    estimate_solvent_fraction,
    kurtosis,
)


def _cubes(n_box, sides, gap=6):
    """Box of low noise with solid cubes of value 10 (a known segmentation)."""
    rng = np.random.default_rng(0)
    a = 0.01 * rng.standard_normal((n_box,) * 3).astype(np.float32)
    x = 4
    for side in sides:
        a[x : x + side, 4 : 4 + side, 4 : 4 + side] = 10.0
        x += side + gap
    return a


def test_adjusted_surface_area_of_one_cube_is_exact():
    side, n = 8, 40
    a = _cubes(n, [side])
    # choose the solvent fraction so that 20% of the molecular volume is exactly the cube
    sf = 1.0 - side**3 / 0.2 / n**3
    r = adjusted_surface_area(a, solvent_fraction=sf, region_weight=0.5, target_regions=2.0)
    assert r.n_regions == 1
    assert r.sa_ratio == pytest.approx(((side + 2) ** 3 - side**3) / side**3)
    assert r.score == pytest.approx(r.sa_ratio - 0.5 * 1 / 2.0)


def test_adjusted_surface_area_counts_regions_and_keeps_largest():
    a = _cubes(48, [8, 4, 4])  # 512 + 64 + 64 voxels above the contour
    sf = 1.0 - 640 / 0.2 / 48**3
    r = adjusted_surface_area(a, solvent_fraction=sf)
    assert r.n_regions == 3
    # the largest region alone holds more than 30% of the enclosed volume
    assert r.sa_ratio == pytest.approx((10**3 - 8**3) / 8**3)


def test_kurtosis_known_distributions():
    rng = np.random.default_rng(1)
    assert kurtosis(rng.standard_normal(400_000)) == pytest.approx(0.0, abs=0.05)
    assert kurtosis(rng.uniform(size=400_000)) == pytest.approx(-1.2, abs=0.02)


def test_solvent_fraction_of_real_map(truth, average):
    # haemoglobin (64 kDa, ~1.21 A^3/Da -> 77,000 A^3) in a (105 A)^3 box: 93% solvent
    for m in (truth, average):
        assert estimate_solvent_fraction(m) == pytest.approx(0.93, abs=0.03)


@pytest.mark.parametrize(
    "method",
    [
        "adjusted_sa",
        "kurtosis",
    ],
)
def test_auto_sharpen_improves_masked_correlation(
    method, average, truth, mask, pixel_size, masked_cc
):
    r = auto_sharpen(average, pixel_size=pixel_size, method=method, resolution=3.5)
    assert set(r.scan) == {"b_iso", "b_sharpen", "score", "sa_ratio", "n_regions", "kurtosis"}
    assert all(v.shape == (21,) for v in r.scan.values())
    assert r.best == int(np.argmax(r.scan["score"]))
    assert r.b_iso == r.scan["b_iso"][r.best]
    # the input carries about B_truth + 100; a useful choice sharpens it substantially
    assert 20.0 <= r.b_sharpen <= 180.0
    assert masked_cc(r.map, truth, mask) > masked_cc(average, truth, mask) + 0.05


def test_auto_sharpen_region_weight_balances_scan_ends(average, pixel_size):
    r = auto_sharpen(average, pixel_size=pixel_size, resolution=3.5, n_steps=5)
    assert r.scan["score"][0] == pytest.approx(r.scan["score"][-1])
    assert r.region_weight > 0


def test_auto_sharpen_rejects_bad_arguments(average, pixel_size):
    with pytest.raises(ValueError, match="method"):
        auto_sharpen(average, pixel_size=pixel_size, method="best")
    with pytest.raises(ValueError, match="resolution: 1.5 A is finer than Nyquist"):
        auto_sharpen(average, pixel_size=pixel_size, resolution=1.5)
