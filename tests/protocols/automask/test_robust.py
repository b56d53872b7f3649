"""The robust automatic mask: bright contaminants, margins tied to the resolution, warnings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from emforge.protocols.automask import kernels as A
from emforge.protocols.automask._morphology import CROSS, dilate6, erode6

MAPS = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "maps"


def _read_map(name: str) -> tuple[np.ndarray, float]:
    path = MAPS / name
    if not path.exists():
        pytest.skip(f"real map {path} not available")
    mrcfile = pytest.importorskip("mrcfile")
    with mrcfile.open(path, permissive=True) as mrc:
        return np.asarray(mrc.data, dtype=np.float32).copy(), float(mrc.voxel_size.x)


def _above_2sigma(vol: np.ndarray) -> np.ndarray:
    return vol > vol.mean(dtype=np.float64) + 2 * vol.std(dtype=np.float64)


def plant_contaminant(vol: np.ndarray, apix: float, cutoff: float):
    """A Gaussian blob (sigma 2 A) at 0.2 box from the centre along (+z, +y, -x), scaled so
    that its low-passed peak is twice the molecule's. Returns (dirty map, blob footprint)."""
    n = vol.shape[0]
    c = n // 2 + np.array([1, 1, -1]) * int(0.2 * n)
    z, y, x = np.ogrid[:n, :n, :n]
    r2 = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2
    s = max(2.0 / apix, 1.0)
    blob = np.exp(-r2 / (2 * s * s)).astype(np.float32)
    lp_mol = A.gaussian_lowpass(vol, pixel_size=apix, cutoff=cutoff).max()
    lp_blob = A.gaussian_lowpass(blob, pixel_size=apix, cutoff=cutoff).max()
    return vol + np.float32(2 * lp_mol / lp_blob) * blob, r2 <= (2 * s) ** 2


@pytest.mark.parametrize("name", ["emd_3488.mrc", "emd_5625.map"])
def test_bright_contaminant_does_not_take_the_mask(name):
    vol, apix = _read_map(name)
    res = max(5.0, 3 * apix)
    dirty, blob = plant_contaminant(vol, apix, 1.0 / res)
    molecule = _above_2sigma(vol)
    assert not (molecule & blob).any()  # the blob sits in the solvent
    mask, info = A.robust_auto_mask(dirty, pixel_size=apix)
    dens = vol[molecule]
    inside = mask[molecule] >= 0.5
    assert inside.mean() >= 0.98 and dens[inside].sum() >= 0.98 * dens.sum()
    assert mask[blob].max() < 0.05
    assert any("brighter" in w for w in info["warnings"]), info["warnings"]
    assert info["map_peak"] > 1.5 * info["molecule_peak"]


def test_eman2_rule_loses_the_molecule_to_the_contaminant():
    """The bug behind the robust rule: EMAN2's seeds (the 24 highest voxels) go to the blob."""
    vol, apix = _read_map("emd_3488.mrc")
    dirty, blob = plant_contaminant(vol, apix, 1.0 / 5.0)
    mask, _ = A.auto_mask(dirty, pixel_size=apix)
    assert (mask[_above_2sigma(vol)] >= 0.5).mean() < 0.05 and mask[blob].min() > 0.5


@pytest.mark.parametrize("name", ["emd_3488.mrc", "emd_1832.map", "emd_5625.map"])
def test_clean_maps_covered_tightly_without_warnings(name):
    vol, apix = _read_map(name)
    high = _above_2sigma(vol)
    mask, info = A.robust_auto_mask(vol, pixel_size=apix)
    assert mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
    assert (mask[high] >= 0.5).mean() >= 0.98
    assert (mask >= 0.5).sum() <= 3 * high.sum() and mask.sum() <= 3 * high.sum()
    assert info["warnings"] == []
    assert info["lowpass_cutoff"] == pytest.approx(1 / info["resolution"])
    assert info["nshellsgauss"] == max(1, round(0.5 * info["resolution"] / apix))
    masked, _ = A.robust_auto_mask(vol, pixel_size=apix, return_mask=False)
    np.testing.assert_array_equal(masked, vol * mask)


def _balls(n: int, spec) -> np.ndarray:
    z, y, x = np.ogrid[:n, :n, :n]
    vol = np.zeros((n, n, n), np.float32)
    for c, r in spec:
        vol[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r] = 1.0
    return vol


def test_warnings_for_an_off_centre_particle_and_dropped_density():
    n = 64
    off = _balls(n, [((14, 14, 14), 6)])
    mask, info = A.robust_auto_mask(off, pixel_size=2.0, resolution=8.0)
    assert mask[14, 14, 14] > 0.99  # still found, but the user is told
    assert any("misses the box centre" in w for w in info["warnings"]), info["warnings"]
    # a central ball and eight smaller ones near the corners (4x its density together): the
    # central one is kept, the user is told that most of the density is outside
    corners = [((a, b, c), 4) for a in (10, 54) for b in (10, 54) for c in (10, 54)]
    many = _balls(n, [((32, 32, 32), 5), *corners])
    mask, info = A.robust_auto_mask(many, pixel_size=2.0, resolution=8.0)
    assert mask[32, 32, 32] > 0.99 and max(mask[c] for c, _ in corners) == 0
    assert any("holds only" in w for w in info["warnings"]), info["warnings"]
    assert not any("centre" in w for w in info["warnings"])


def test_robust_argument_errors():
    vol = _balls(16, [((8, 8, 8), 3)])
    with pytest.raises(ValueError, match="^pixel_size"):
        A.robust_auto_mask(vol, pixel_size=0)
    with pytest.raises(ValueError, match="^resolution"):
        A.robust_auto_mask(vol, pixel_size=2.0, resolution=3.0)
    with pytest.raises(ValueError, match="^volume"):
        A.robust_auto_mask(np.zeros_like(vol), pixel_size=2.0)


@pytest.mark.parametrize("n_iter", [0, 1, 3])
def test_dilate6_erode6_equal_scipy(n_iter):
    rng = np.random.default_rng(3)
    obj = ndimage.binary_opening(rng.random((30, 31, 29)) > 0.7, CROSS)
    obj[0, 5:9, 5:9] = obj[:, -1, 3] = True  # touches the faces
    np.testing.assert_array_equal(
        dilate6(obj, n_iter),
        ndimage.binary_dilation(obj, CROSS, iterations=n_iter) if n_iter else obj,
    )
    np.testing.assert_array_equal(
        erode6(obj, n_iter),
        ndimage.binary_erosion(obj, CROSS, iterations=n_iter, border_value=0) if n_iter else obj,
    )


def test_component_scores_use_mass_and_density_weighted_centroid():
    """Two uniform cubes: masses are value x volume, centroids their centres (analytic), the
    score mass / (1 + (d / (n/4))**2), d the centre's distance to the box centre N//2."""

    from emforge.protocols.automask._robust import _rank

    n = 40
    lp = np.zeros((n, n, n), np.float32)
    lp[18:23, 17:24, 19:22] = 2.0  # centre (20, 20, 20): at the box centre
    lp[2:6, 30:34, 5:9] = 3.0  # centre (3.5, 31.5, 6.5)
    labels, count = ndimage.label(lp > 0)
    score, best, peak = _rank(lp, labels, count)
    central, corner = labels[20, 20, 20], labels[3, 31, 6]
    assert best == central and peak == 2.0
    assert score[central] == pytest.approx(2.0 * 5 * 7 * 3)
    d = np.linalg.norm(np.subtract((3.5, 31.5, 6.5), 20))
    assert score[corner] == pytest.approx(3.0 * 64 / (1 + (d / 10) ** 2))


@pytest.mark.parametrize("kept", [[3], [1, 5], [2, 3, 4, 6, 7, 9]])
def test_region_of_kept_labels(kept):
    from emforge.protocols.automask._robust import _region

    labels = np.random.default_rng(1).integers(0, 10, (12, 13, 14)).astype(np.int32)
    keep = np.zeros(10, bool)
    keep[kept] = True
    region = _region(labels, keep)
    assert region.dtype == bool and region.shape == labels.shape
    np.testing.assert_array_equal(region, np.isin(labels, kept))
