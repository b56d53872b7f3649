"""EMAN2-style automask kernels: flood fill, shells, soft edges, automatic parameters, real maps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from emforge.protocols.automask import kernels as A

MAPS = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "maps"
CROSS = ndimage.generate_binary_structure(3, 1)


def _read_map(name: str) -> tuple[np.ndarray, float]:
    path = MAPS / name
    if not path.exists():
        pytest.skip(f"real map {path} not available")
    mrcfile = pytest.importorskip("mrcfile")
    with mrcfile.open(path, permissive=True) as mrc:
        return np.asarray(mrc.data, dtype=np.float32).copy(), float(mrc.voxel_size.x)


def _ball(shape, centre, radius):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


def _corners(n: int, c: int):
    ends = (slice(0, c), slice(n - c, n))
    return [(a, b, d) for a in ends for b in ends for d in ends]


# ------------------------------------------------------------------------------- auto3d


def test_auto3d_on_real_map_keeps_connected_density_and_drops_planted_blobs():
    vol, _ = _read_map("emd_3488.mrc")
    n = vol.shape[0]
    thr = 0.06
    blobs = np.zeros(vol.shape, dtype=bool)
    for cz, cy, cx in [
        (6, 6, 6),
        (6, 6, n - 7),
        (6, n - 7, 6),
        (n - 7, 6, 6),
        (n - 7, n - 7, n - 7),
    ]:
        blobs |= _ball(vol.shape, (cz, cy, cx), 3)
    vol[blobs] = 0.2  # above the threshold, below the particle's highest voxels
    assert not (ndimage.binary_dilation(blobs, CROSS) & (vol > thr) & ~blobs).any()  # isolated
    # reference: the 24 highest voxels, grown through > thr by iterated 6-neighbour propagation
    seeds = np.zeros(vol.shape, dtype=bool)
    seeds.ravel()[np.argsort(vol, axis=None)[-24:]] = True
    assert not (seeds & blobs).any()
    ref = ndimage.binary_propagation(seeds, structure=CROSS, mask=vol > thr)
    mask = A.auto3d(vol, threshold=thr, nmaxseed=24)
    assert mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
    kept = (mask[ref] == 1).mean()
    assert kept >= 0.999 and ref.sum() > 10_000
    assert not mask[blobs].any()
    assert not mask[~ref].any()
    soft = A.auto3d(vol, threshold=thr, nmaxseed=24, nshells=2, nshellsgauss=4)
    assert not soft[blobs].any() and (soft[ref] > 0.5).mean() >= 0.999
    masked = A.auto3d(vol, threshold=thr, nmaxseed=24, return_mask=False)
    np.testing.assert_array_equal(masked, vol * mask)


@pytest.mark.parametrize("n", [40, 41])
@pytest.mark.parametrize("shells", [1, 3, 5])
def test_nshells_adds_exactly_that_many_6_connected_shells(n, shells):
    obj = _ball((n, n, n), (n // 2, n // 2, n // 2), 6) | _ball((n, n, n), (n - 3, 2, n - 2), 3)
    obj[n // 2, : n // 2, n // 2] = True  # a thin bridge reaching the y = 0 face
    vol = obj.astype(np.float32)
    got = A.auto3d(vol, threshold=0.5, radius=2, nshells=shells)
    seeds_reach = ndimage.label(obj, CROSS)[0]
    connected = seeds_reach == seeds_reach[n // 2, n // 2, n // 2]
    ref = ndimage.binary_dilation(connected, CROSS, iterations=shells)
    np.testing.assert_array_equal(got, ref.astype(np.float32))
    # nshellsgauss // 2 extra shells before the Gaussian: its support starts from them
    g = A.auto3d(vol, threshold=0.5, radius=2, nshells=shells, nshellsgauss=2)
    ref2 = ndimage.binary_dilation(connected, CROSS, iterations=shells + 1)
    assert np.all(g[ref2] > 0.3) and g.max() <= 1.0


def test_soft_edge_of_auto3d_decreases_monotonically_along_rays():
    n = 48
    vol = _ball((n, n, n), (24, 24, 24), 9).astype(np.float32)
    mask = A.auto3d(vol, threshold=0.5, radius=3, nshells=2, nshellsgauss=6)
    assert mask[24, 24, 24] == pytest.approx(1.0, abs=1e-5) and mask[0, 0, 0] == 0
    assert mask.min() >= 0 and mask.max() <= 1
    rng = np.random.default_rng(4)
    dirs = rng.normal(size=(40, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    t = np.arange(0.0, 23.0, 0.5)
    for d in dirs:
        pts = 24 + t[:, None] * d[None, :]
        vals = ndimage.map_coordinates(mask, pts.T, order=1)
        assert np.all(np.diff(vals) <= 1e-5), vals  # float32 FFT rounding on the plateau
        assert vals[0] > 0.99 and vals[-1] < 0.01


def test_hollow_shell_needs_nmaxseed_radius_seeding_finds_nothing():
    n = 48
    z, y, x = np.ogrid[:n, :n, :n]
    r = np.sqrt((z - 24.0) ** 2 + (y - 24.0) ** 2 + (x - 24.0) ** 2)
    rng = np.random.default_rng(5)
    vol = np.exp(-((r - 15.0) ** 2) / (2 * 2.0**2)).astype(np.float32)
    vol += rng.normal(0, 0.03, vol.shape).astype(np.float32)
    shell = vol > 0.3
    ring = (r > 13.5) & (r < 16.5)
    found = A.auto3d(vol, threshold=0.3, nmaxseed=10, radius=0)
    assert (found[shell] == 1).mean() >= 0.99 and (found[ring] == 1).mean() >= 0.99
    assert not found[r < 8].any()
    empty = A.auto3d(vol, threshold=0.3, radius=6)
    assert empty.dtype == np.float32 and not empty.any()


def test_sigma_threshold_and_argument_errors():
    rng = np.random.default_rng(6)
    vol = rng.normal(size=(16, 16, 16)).astype(np.float32)
    vol[6:10, 6:10, 6:10] += 10
    thr = vol.mean(dtype=np.float64) + 2.0 * vol.std(dtype=np.float64)
    np.testing.assert_array_equal(
        A.auto3d(vol, sigma=2.0, radius=2), A.auto3d(vol, threshold=thr, radius=2)
    )
    bad = [
        ({"radius": 2}, "^threshold"),
        ({"threshold": 1, "sigma": 1, "radius": 2}, "^threshold"),
        ({"threshold": 1}, "^radius: no seeds"),
        ({"threshold": 1, "nmaxseed": 16**3 + 1}, "^nmaxseed.*larger than the volume"),
        ({"threshold": 1, "radius": 2, "nshells": -1}, "^nshells"),
        ({"threshold": 1, "radius": 2, "nshellsgauss": 1.5}, "^nshellsgauss"),
        ({"threshold": 1, "radius": -2}, "^radius"),
    ]
    for kw, match in bad:
        with pytest.raises(ValueError, match=match):
            A.auto3d(vol, **kw)
    with pytest.raises(ValueError, match="^volume"):
        A.auto3d(vol[0], threshold=1, radius=2)


# ------------------------------------------------------------------- automatic parameters


@pytest.mark.parametrize("name", ["emd_3488.mrc", "emd_1832.map", "emd_5625.map"])
def test_auto_parameters_mask_covers_particle_and_excludes_corners(name):
    vol, apix = _read_map(name)
    params = A.auto_parameters(vol, pixel_size=apix)
    n = min(vol.shape)
    assert params["radius"] == 0 and params["nmaxseed"] == 24
    assert params["threshold"] == pytest.approx(0.15 * params["vmax"])
    assert 0 < params["particle_radius_px"] <= int(n / 2.2)
    assert params["nshells"] >= int(0.05 * n) and params["nshellsgauss"] >= 1
    mask, same = A.auto_mask(vol, pixel_size=apix)
    assert same == params and mask.dtype == np.float32
    high = vol > vol.mean() + 4 * vol.std()
    assert (mask[high] > 0.5).mean() >= 0.95
    for corner in _corners(n, n // 8):
        assert mask[corner].max() == 0.0
    assert 0.02 < (mask > 0.5).mean() < 0.6


def test_auto_parameters_follow_documented_rules():
    vol, apix = _read_map("emd_1832.map")
    p = A.auto_parameters(vol, pixel_size=apix, resolution=20.0)
    n = vol.shape[0]
    assert p["resolution"] == 20.0 and p["lowpass_cutoff"] == pytest.approx(1 / 30)
    assert p["nshells"] == int(0.05 * n + 0.5 + 0.75 * 20.0 / apix)
    assert p["nshellsgauss"] == max(1, round(1.5 * 20.0 / (math.sqrt(2) * apix)))
    lp = A.gaussian_lowpass(vol, pixel_size=apix, cutoff=1 / 30)
    prof = A.radial_max_profile(lp, int(n / 2.2))
    assert p["vmax"] == pytest.approx(prof[: p["particle_radius_px"] + 1].max())
    with pytest.raises(ValueError, match="^resolution"):
        A.auto_parameters(vol, pixel_size=apix, resolution=apix)
    with pytest.raises(ValueError, match="^pixel_size"):
        A.auto_parameters(vol, pixel_size=0)


# ----------------------------------------------------------------------- mask.soft


@pytest.mark.parametrize(
    "shape,kw",
    [
        ((33, 32), {"outer_radius": 9.0, "width": 3.0}),
        ((32, 33), {"inner_radius": 4.0, "outer_radius": 10.0, "width": 2.0, "value": 2.5}),
        ((20, 21, 22), {"inner_radius": 3.0, "outer_radius": 6.5, "shift": (1, -2, 0.5)}),
        ((21, 21, 21), {}),
    ],
)
def test_soft_mask_matches_eman2_formula(shape, kw):
    got = A.soft_mask(shape, **kw)
    shift = kw.get("shift", (0,) * len(shape))
    axes = [np.arange(n) - (n // 2 + s) for n, s in zip(shape, shift[::-1], strict=True)]
    r = np.sqrt(sum(g**2 for g in np.meshgrid(*axes, indexing="ij")))
    inner, outer = kw.get("inner_radius", 0.0), kw.get("outer_radius", min(shape) / 2)
    w, v = kw.get("width", 4.0), kw.get("value", 1.0)
    ref = np.full(shape, v)
    ref[r > outer] = v * np.exp(-(((r[r > outer] - outer) / w) ** 2))
    if inner > 0:
        ref[r < inner] = v * np.exp(-(((inner - r[r < inner]) / w) ** 2))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * v)
    with pytest.raises(ValueError, match="^inner_radius"):
        A.soft_mask(shape, inner_radius=8, outer_radius=5)
    with pytest.raises(ValueError, match="^width"):
        A.soft_mask(shape, width=0)


# ------------------------------------------------------------------ threshold masks


def test_threshold_mask_morphology_matches_scipy():
    n = 36
    big = _ball((n, n, n), (18, 18, 18), 7)
    small = _ball((n, n, n), (4, 4, 30), 2)
    edge = np.zeros((n, n, n), dtype=bool)
    edge[:, 17:19, 0:12] = True  # joins the big ball; touches the x = 0 face and the z faces
    vol = (big | small | edge).astype(np.float32) * 2.0
    lone = A.threshold_mask(vol, threshold=1.0)
    np.testing.assert_array_equal(lone, (big | edge).astype(np.float32))  # 6-connected
    every = A.threshold_mask(vol, threshold=1.0, keep_largest=False)
    np.testing.assert_array_equal(every, (big | small | edge).astype(np.float32))
    both = big | small | edge
    got = A.threshold_mask(vol, threshold=1.0, keep_largest=False, dilate=2, erode=1)
    ref = ndimage.binary_erosion(ndimage.binary_dilation(both, CROSS, 2), CROSS, 1)
    np.testing.assert_array_equal(got, ref.astype(np.float32))
    inv = A.threshold_mask(vol, threshold=1.0, keep_largest=False, invert=True)
    np.testing.assert_array_equal(inv, 1 - every)
    with pytest.raises(ValueError, match="^threshold: no voxel"):
        A.threshold_mask(vol, threshold=5.0)
    with pytest.raises(ValueError, match="^dilate"):
        A.threshold_mask(vol, threshold=1.0, dilate=-1)


def test_threshold_mask_soft_edge_is_a_raised_cosine_of_the_euclidean_distance():
    n = 40
    rng = np.random.default_rng(7)
    obj = _ball((n, n, n), (20, 19, 21), 7) | _ball((n, n, n), (29, 30, 8), 4)
    vol = obj.astype(np.float32) + rng.uniform(-0.2, 0.2, obj.shape).astype(np.float32)
    w = 5.5
    got = A.threshold_mask(vol, threshold=0.5, keep_largest=False, soft_edge=w)
    d = ndimage.distance_transform_edt(~obj)
    ref = np.where(d < w, 0.5 * (1 + np.cos(np.pi * d / w)), 0.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    dirs = rng.normal(size=(30, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    t = np.arange(0.0, 14.0, 0.5)
    away = dirs @ np.array([9.0, 11.0, -13.0]) < 0  # rays that do not pass the small ball
    for dvec in dirs[away]:  # monotone along rays from the centre of the big ball
        pts = np.array([20, 19, 21]) + t[:, None] * dvec
        vals = ndimage.map_coordinates(got, pts.T, order=1)
        assert np.all(np.diff(vals) <= 1e-6) and vals[0] == 1 and vals[-1] < 1e-3


def test_lowpass_and_soft_edge_go_through_the_emforge_fft(monkeypatch):
    from emforge.numerics import fft

    calls = []
    real_r, real_i = fft.rfftn, fft.irfftn
    monkeypatch.setattr(fft, "rfftn", lambda a, **kw: calls.append("r") or real_r(a, **kw))
    monkeypatch.setattr(fft, "irfftn", lambda f, **kw: calls.append("i") or real_i(f, **kw))
    vol = np.zeros((20, 22, 24), np.float32)
    vol[10, 11, 12] = 1.0
    lp = A.gaussian_lowpass(vol, pixel_size=1.0, cutoff=0.1)
    assert calls == ["r", "i"] and lp.dtype == np.float32
    # the transfer exp(-s^2 / 2 fc^2) of a delta sums to 1 (DC gain) and peaks at the delta
    assert lp.sum(dtype=np.float64) == pytest.approx(1.0, rel=1e-5)
    assert np.unravel_index(np.argmax(lp), lp.shape) == (10, 11, 12)
    mask = A.auto3d(vol, threshold=0.5, radius=2, nshellsgauss=3)
    assert calls == ["r", "i", "r", "i"] and mask.dtype == np.float32
