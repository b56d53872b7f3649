"""make3d from class averages: exact projections, weights, keep on quality, passes, symmetry."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import (
    eman_orientations,
    eman_to_euler_zyz,
    euler_zyz_to_matrix,
    matrix_to_euler_zyz,
    project_fourier,
    symmetry_matrices,
)
from emforge.protocols.refine.kernels import make3d
from emforge.protocols.refine.kernels.make3d import good_size

N = 32
Z, Y, X = np.mgrid[0:N, 0:N, 0:N] - N // 2
INSIDE = X**2 + Y**2 + Z**2 < (N // 2 - 2) ** 2


def _blob(cx, cy, cz, s):
    return np.exp(-((X - cx) ** 2 + (Y - cy) ** 2 + (Z - cz) ** 2) / (2.0 * s * s))


def _phantom() -> np.ndarray:
    v = _blob(4, 0, -3, 3) + 0.8 * _blob(-5, 4, 2, 2.5) + 0.6 * _blob(0, -6, 5, 2)
    return v.astype(np.float32)


def _c2_phantom() -> np.ndarray:  # V(-x, -y, z) = V(x, y, z): a 2-fold on z
    v = _blob(5, 2, -3, 2.5) + _blob(-5, -2, -3, 2.5) + 0.7 * _blob(1, -6, 4, 2)
    v = v + 0.7 * _blob(-1, 6, 4, 2)
    return v.astype(np.float32)


def _turn(v):
    """(x, y) -> (-x, -y) about n//2: the 2-fold on z."""
    return np.roll(np.flip(v, (1, 2)), 1, (1, 2))


def _cc(a, b) -> float:
    return float(np.corrcoef(a[INSIDE], b[INSIDE])[0, 1])


def _views(sym="c1", delta=5.0, inc_mirror=True):
    return eman_to_euler_zyz(eman_orientations(sym, delta, inc_mirror=inc_mirror))


def test_exact_projections_at_dense_views_reproduce_the_volume():
    vol = _phantom()
    e = _views()
    proj = project_fourier(vol, euler_zyz_to_matrix(e))
    res = make3d(proj, e, np.ones(len(e)), iterations=1)
    assert res.volume.shape == (N, N, N) and res.volume.dtype == np.float32
    assert res.used.all()
    assert _cc(res.volume, vol) > 0.95


def test_zero_weight_classes_are_skipped_and_weights_matter():
    vol = _phantom()
    e = _views(delta=8.0)
    proj = project_fourier(vol, euler_zyz_to_matrix(e))
    rng = np.random.default_rng(0)
    junk = proj.copy()
    bad = rng.random(len(e)) < 0.3
    junk[bad] = rng.normal(0, proj.std() * 3, junk[bad].shape)
    w = np.where(bad, 0.0, 5.0)
    res = make3d(junk, e, w, iterations=1)
    assert not res.used[bad].any() and res.used[~bad].all()
    assert _cc(res.volume, vol) > 0.95
    # a tiny weight on the junk barely changes the map, an equal weight spoils it
    low = make3d(junk, e, np.where(bad, 0.01, 5.0), iterations=1).volume
    equal = make3d(junk, e, np.ones(len(e)), iterations=1).volume
    assert _cc(low, vol) > 0.95 > _cc(equal, vol)


def test_keep_on_quality_drops_the_worst_classes():
    vol = _phantom()
    e = _views(delta=8.0)
    proj = project_fourier(vol, euler_zyz_to_matrix(e))
    rng = np.random.default_rng(1)
    bad = rng.permutation(len(e))[: len(e) // 10]
    proj[bad] = rng.normal(0, proj.std() * 3, proj[bad].shape)
    quality = np.ones(len(e))
    quality[bad] = 0.1  # larger is better
    res = make3d(proj, e, np.ones(len(e)), quality=quality, keep=0.85, iterations=1)
    assert not res.used[bad].any()
    assert res.used.sum() == len(e) - bad.size
    assert _cc(res.volume, vol) > 0.95


def test_later_passes_drop_disagreeing_slices_and_fix_scales_without_quality():
    vol = _phantom()
    e = _views(delta=8.0)
    proj = project_fourier(vol, euler_zyz_to_matrix(e))
    rng = np.random.default_rng(2)
    proj *= rng.uniform(0.3, 3.0, len(e))[:, None, None].astype(np.float32)
    bad = rng.permutation(len(e))[: len(e) // 10]
    proj[bad] = rng.normal(0, proj.std() * 2, proj[bad].shape)
    one = make3d(proj, e, np.ones(len(e)), iterations=1)
    two = make3d(proj, e, np.ones(len(e)), keep=0.85, iterations=3)
    assert not two.used[bad].any()
    assert _cc(two.volume, vol) > 0.95 and _cc(two.volume, vol) > _cc(one.volume, vol) + 0.05


def test_c2_insertion_on_a_c2_phantom_from_the_asymmetric_unit():
    vol = _c2_phantom()
    np.testing.assert_allclose(_turn(vol), vol, atol=1e-4)  # the wrapped edge row only
    o = eman_orientations("c1", 4.0)
    o = o[(o[:, 0] <= 100) & (o[:, 1] >= 20) & (o[:, 1] <= 70)]  # tilted views, 100 deg of az
    e = eman_to_euler_zyz(o)
    proj = project_fourier(vol, euler_zyz_to_matrix(e))
    c2 = make3d(proj, e, np.ones(len(e)), symmetry="c2", iterations=1).volume
    c1 = make3d(proj, e, np.ones(len(e)), symmetry="c1", iterations=1).volume
    assert _cc(c2, vol) > 0.95 and _cc(c2, vol) > _cc(c1, vol) + 0.02
    # = c1 insertion of every view and its 2-fold mate (pose A @ S^T)
    s2 = symmetry_matrices("c2")[1]
    both = np.concatenate([euler_zyz_to_matrix(e), euler_zyz_to_matrix(e) @ s2.T])
    mates = make3d(np.concatenate([proj, proj]), matrix_to_euler_zyz(both),
                   np.ones(2 * len(e)), iterations=1).volume  # fmt: skip
    np.testing.assert_allclose(c2, mates, atol=1e-3 * np.abs(c2).max())
    assert _cc(_turn(c2), c2) > 0.99


def test_good_size_and_pad():
    assert good_size(64) == 64 and good_size(1.3 * 64) == 84 and good_size(1.3 * 32) == 42
    assert all(good_size(x) % 2 == 0 for x in range(10, 300, 7))
    vol = _phantom()
    e = _views(delta=10.0)
    proj = project_fourier(vol, euler_zyz_to_matrix(e))
    assert _cc(make3d(proj, e, np.ones(len(e)), pad=64, iterations=1).volume, vol) > 0.95


def test_bad_inputs_are_named():
    e = _views(delta=20.0)
    img = np.zeros((len(e), N, N), np.float32)
    with pytest.raises(ValueError, match="weights"):
        make3d(img, e, -np.ones(len(e)))
    with pytest.raises(ValueError, match="pad"):
        make3d(img, e, np.ones(len(e)), pad=16)
    with pytest.raises(ValueError, match="eulers"):
        make3d(img, e[:-1], np.ones(len(e)))


def _emd3488(box: int) -> np.ndarray:
    """EMD-3488 (haemoglobin, exact C2 about z through N//2), Fourier-cropped to ``box`` and
    band-limited to 0.8 x Nyquist (a sphere: projections carry no corner frequencies)."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "maps" / "emd_3488.mrc"
    if not path.exists():
        pytest.skip(f"real map {path} not available")
    mrcfile = pytest.importorskip("mrcfile")
    with mrcfile.open(path, permissive=True) as mrc:
        v = np.asarray(mrc.data, dtype=np.float64)
    n = v.shape[0]
    f = np.fft.fftshift(np.fft.fftn(v))
    lo = n // 2 - box // 2
    g = f[lo : lo + box, lo : lo + box, lo : lo + box]
    k = np.arange(box) - box // 2
    g = g * (
        k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2 < (0.4 * box) ** 2
    )
    return np.real(np.fft.ifftn(np.fft.ifftshift(g))).astype(np.float32) * (box / n) ** 3


def test_real_map_c2_reconstruction_from_its_asymmetric_unit():
    vol = _emd3488(40)
    z, y, x = np.mgrid[0:40, 0:40, 0:40] - 20
    inside = x**2 + y**2 + z**2 < 17**2
    assert np.corrcoef(_turn(vol)[inside], vol[inside])[0, 1] > 0.99  # C2 about z
    e = _views("c2", 6.0, inc_mirror=False)
    proj = project_fourier(vol, euler_zyz_to_matrix(e))
    rec = make3d(proj, e, np.ones(len(e)), symmetry="c2", iterations=2).volume
    assert np.corrcoef(rec[inside], vol[inside])[0, 1] > 0.99
