"""Local sharpening on EMD-3488: smooth blending (no box edges) and local B that follows a
known, spatially varying blur."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import apply_radial_filter, bfactor_filter, raised_cosine
from emforge.protocols.sharpen.kernels.local import box_starts, hann_window, sharpen_local

RES = 3.5


def _global(a, b, px, res=RES, width=0.2):
    """Global sharpening with the local kernel's filter: exp(b s^2/4) x its low-pass."""
    return apply_radial_filter(
        a, lambda s: np.exp(b * s * s / 4) * raised_cosine(s * res, 1.0, width), pixel_size=px
    )


@pytest.fixture(scope="module")
def two_b(truth, pixel_size):
    """EMD-3488 blurred with B = 50 for x < 45 voxels and B = 150 for x > 55 (linear blend)."""
    w = np.clip((np.arange(truth.shape[2]) - 45) / 10.0, 0, 1).astype(np.float32)
    lo = bfactor_filter(truth, 50.0, pixel_size=pixel_size)
    hi = bfactor_filter(truth, 150.0, pixel_size=pixel_size)
    return (1 - w) * lo + w * hi


@pytest.fixture(scope="module")
def local_two_b(two_b, pixel_size):
    return sharpen_local(two_b, pixel_size=pixel_size, resolution=RES)


def _profile(a, axis, step, inside):
    """Mean |a[i+1] - a[i]| inside the mask per plane boundary i, averaged per i % step."""
    g = np.abs(np.diff(a, axis=axis))
    n = a.shape[axis]
    m = np.minimum(np.take(inside, range(n - 1), axis), np.take(inside, range(1, n), axis))
    other = tuple(k for k in range(3) if k != axis)
    per_plane = (g * m).sum(axis=other) / np.maximum(m.sum(axis=other), 1)
    i = np.arange(n - 1)
    return np.array([per_plane[i % step == k].mean() for k in range(step)])


def _seam_contrast(out, reference, step, borders, inside):
    """Largest ratio, over the 3 axes and the border classes, of the gradient of
    ``out - reference`` across a border to that within the neighbouring planes (both
    normalised by the gradient of ``reference``, which carries the map's own structure)."""
    worst = 0.0
    for axis in range(3):
        r = _profile(out - reference, axis, step, inside) / _profile(reference, axis, step, inside)
        for k in borders:
            worst = max(worst, r[k] / (0.5 * (r[(k - 1) % step] + r[(k + 1) % step])))
    return worst


def test_hann_windows_tile_to_a_constant():
    for n, box, step in ((100, 40, 20), (80, 32, 8), (37, 12, 6)):
        w = hann_window(box).astype(np.float64)
        c = box // 2
        t = w[c, c, :] / np.cbrt(w[c, c, c]) ** 2  # the 1D window
        acc = np.zeros(n + 2 * box)
        for s in box_starts(n, box, step):
            acc[s + box : s + 2 * box] += t
        np.testing.assert_allclose(acc[box : box + n], box / step / 2, rtol=1e-5)


def test_uniform_parameters_reproduce_the_global_filter(truth, pixel_size):
    crop = truth[18:82, 18:82, 18:82]
    r = sharpen_local(crop, pixel_size=pixel_size, resolution=RES, box=32, b_spread=0.0)
    assert np.all(r.b_local == r.b_global)
    ref = _global(crop, r.b_global, pixel_size)
    assert np.std(r.map - ref) < 0.03 * np.std(ref)


def test_local_b_follows_the_local_blur(local_two_b):
    b = local_two_b.b_local
    cx = local_two_b.centres[2]
    assert b.shape == tuple(len(c) for c in local_two_b.centres)
    # boxes (40 voxels, step 20, smoothed over neighbours) centred at x = 20 and x = 80 lie
    # in the B = 50 and B = 150 halves; the centres at 0 and 100 see both (periodic map)
    left = np.median(b[:, :, cx == 20])
    right = np.median(b[:, :, cx == 80])
    assert right > left + 25.0  # truth: 100 A^2 apart


def test_no_box_edges_show(local_two_b, two_b, mask, pixel_size):
    r = local_two_b
    ref = _global(two_b, r.b_global, pixel_size)
    st = r.centres[0][0] - r.box // 2  # every box start is congruent to this mod step
    borders = sorted({(st - 1) % r.step, (st - r.pad - 1) % r.step, (st + r.pad - 1) % r.step})
    inside = mask > 0.5
    assert _seam_contrast(r.map, ref, r.step, borders, inside) < 1.15
    # the same measure sees hard seams: cubes with B +- 30 switched at the box starts
    rng = np.random.default_rng(5)
    hi, lo = (
        _global(two_b, r.b_global + 30, pixel_size),
        _global(two_b, r.b_global - 30, pixel_size),
    )
    pick = np.zeros(two_b.shape, bool)
    for z in range(st, 100, r.step):
        for y in range(st, 100, r.step):
            for x in range(st, 100, r.step):
                if rng.random() < 0.5:
                    zz, yy, xx = (max(v, 0) for v in (z, y, x))
                    pick[zz : z + r.step, yy : y + r.step, xx : x + r.step] = True
    hard = np.where(pick, hi, lo)
    assert _seam_contrast(hard, ref, r.step, [(st - 1) % r.step], inside) > 1.3


def test_local_sharpening_improves_the_maps(local_two_b, two_b, truth, mask, masked_cc, pixel_size):
    assert masked_cc(local_two_b.map, truth, mask) > masked_cc(two_b, truth, mask) + 0.03
    # where the blur varies, local beats one global B
    glob = _global(two_b, local_two_b.b_global, pixel_size)
    assert masked_cc(local_two_b.map, truth, mask) > masked_cc(glob, truth, mask)


def test_halfmap_method(halves, average, truth, mask, masked_cc, pixel_size):
    h1, h2 = halves
    r = sharpen_local(
        average, pixel_size=pixel_size, resolution=3.2, half1=h1, half2=h2, method="halfmap"
    )
    assert masked_cc(r.map, truth, mask) > masked_cc(average, truth, mask) + 0.1
    res = r.resolution_local
    assert res.shape == r.b_local.shape and res.min() >= 3.2
    # boxes in the middle of the molecule reach the resolution given (3.2 A) or close to it
    assert res[res.shape[0] // 2, res.shape[1] // 2, res.shape[2] // 2] < 4.0
    assert r.map.dtype == np.float32 and r.map.shape == average.shape


def test_bad_input(two_b, pixel_size):
    with pytest.raises(ValueError, match="method"):
        sharpen_local(two_b, pixel_size=pixel_size, resolution=RES, method="magic")
    with pytest.raises(ValueError, match="half1: method 'halfmap' needs"):
        sharpen_local(two_b, pixel_size=pixel_size, resolution=RES, method="halfmap")
    with pytest.raises(ValueError, match="step: must divide"):
        sharpen_local(two_b, pixel_size=pixel_size, resolution=RES, box=40, step=30)
    with pytest.raises(ValueError, match="box: must be an even"):
        sharpen_local(two_b, pixel_size=pixel_size, resolution=RES, box=33)
    with pytest.raises(ValueError, match="finer than Nyquist"):
        sharpen_local(two_b, pixel_size=pixel_size, resolution=1.0)


def test_half_maps_get_the_same_filters(halves, average, pixel_size):
    """The filters are linear and shared: the sharpened halves average to the sharpened map."""
    h1, h2 = halves
    for method in ("b_iso", "halfmap"):
        r = sharpen_local(
            average, pixel_size=pixel_size, resolution=3.5, half1=h1, half2=h2, method=method
        )
        assert r.half1 is not None and r.half2 is not None
        assert not np.allclose(r.half1, r.half2)
        np.testing.assert_allclose(
            0.5 * (r.half1 + r.half2), r.map, atol=1e-4 * float(np.abs(r.map).max())
        )
    with pytest.raises(ValueError, match="half1"):
        sharpen_local(average, pixel_size=pixel_size, resolution=3.5, half1=h1)
