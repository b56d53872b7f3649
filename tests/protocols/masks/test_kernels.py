"""Geometric mask kernels against the Xmipp formulas, computed here independently in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emforge.protocols.masks import kernels as K

# ---------------------------------------------------------------- float64 reference formulas


def _coords(shape, shift):
    shift = shift if shift is not None else (0.0,) * len(shape)
    axes = [
        np.arange(n, dtype=np.float64) - (n // 2 + s)
        for n, s in zip(shape, shift[::-1], strict=True)
    ]
    return np.meshgrid(*axes, indexing="ij")


def _rc(r, r1, r2):
    out = np.zeros_like(r)
    out[r <= r1] = 1.0
    mid = (r > r1) & (r < r2)
    out[mid] = 0.5 * (1.0 + np.cos(np.pi * (r[mid] - r1) / (r2 - r1)))
    return out


def reference(shape, geometry, shift=None, **kw):
    """Straightforward float64 meshgrid evaluation of the documented formulas."""
    grids = _coords(shape, shift)
    r2 = sum(g**2 for g in grids)
    r = np.sqrt(r2)
    size = min(shape)
    if geometry in ("circular", "sphere"):
        return (r2 <= kw.get("radius", size / 2) ** 2).astype(float)
    if geometry == "crown":
        r1, r2_ = kw.get("inner_radius", 0.0), kw.get("outer_radius", size / 2)
        return ((r2 >= r1**2) & (r2 <= r2_**2)).astype(float)
    if geometry == "box":
        widths = kw.get("box_size", [n // 2 for n in shape[::-1]])
        out = np.ones(shape)
        for g, w in zip(grids, widths[::-1], strict=True):
            lo = -(w // 2)  # integer coordinates: lo <= c <= lo + w - 1
            out *= (g >= lo - 0.5) & (g < lo + w - 0.5)
        return out
    if geometry == "cylinder":
        rad, h = kw.get("radius", size / 2), kw.get("height", shape[0])
        z, y, x = grids
        return ((x**2 + y**2 <= rad**2) & (np.abs(z) <= h / 2)).astype(float)
    if geometry == "gaussian":
        s = kw.get("sigma", size / 6)
        k = 1.0 if kw.get("peak_one") else 1.0 / (math.sqrt(2 * math.pi) * s) ** len(shape)
        return k * np.exp(-r2 / (2 * s * s))
    r1, r2_ = kw.get("inner_radius", 0.0), kw.get("outer_radius", size / 2)
    if geometry == "raised_cosine":
        return _rc(r, r1, r2_)
    w = kw.get("border", 2.0)
    inner = 1.0 - _rc(r, r1 - w, r1 + w) if r1 > 0 else 1.0
    return inner * _rc(r, r2_ - w, r2_ + w)


CASES_2D = [
    ("circular", {"radius": 7.0}),
    ("circular", {}),
    ("crown", {"inner_radius": 3.0, "outer_radius": 9.5}),
    ("crown", {"inner_radius": 0.0, "outer_radius": 6.0}),
    ("box", {"box_size": (6, 9)}),
    ("box", {}),
    ("gaussian", {"sigma": 3.5}),
    ("gaussian", {"peak_one": True}),
    ("raised_cosine", {"inner_radius": 4.0, "outer_radius": 10.0}),
    ("raised_cosine", {"inner_radius": 0.0}),
    ("raised_crown", {"inner_radius": 5.0, "outer_radius": 11.0, "border": 2.5}),
    ("raised_crown", {"inner_radius": 0.0, "outer_radius": 9.0, "border": 1.5}),
]
CASES_3D = [
    ("sphere", {"radius": 6.5}),
    ("sphere", {}),
    ("crown", {"inner_radius": 2.0, "outer_radius": 8.0}),
    ("box", {"box_size": (5, 8, 7)}),
    ("box", {}),
    ("cylinder", {"radius": 5.0, "height": 9.0}),
    ("cylinder", {}),
    ("gaussian", {"sigma": 2.5}),
    ("gaussian", {"sigma": 3.0, "peak_one": True}),
    ("raised_cosine", {"inner_radius": 3.0, "outer_radius": 8.0}),
    ("raised_crown", {"inner_radius": 4.0, "outer_radius": 8.0, "border": 2.0}),
    ("raised_crown", {"inner_radius": 0.0, "outer_radius": 7.0, "border": 2.0}),
]
SHIFTS_2D = [None, (2, -3), (1.25, -0.5)]
SHIFTS_3D = [None, (1, -2, 3), (0.5, -1.25, 0.75)]


@pytest.mark.parametrize("shape", [(32, 32), (33, 33), (31, 28)])
@pytest.mark.parametrize("geometry,kw", CASES_2D)
@pytest.mark.parametrize("shift", SHIFTS_2D)
def test_2d_masks_match_formulas(shape, geometry, kw, shift):
    got = K.make_mask(shape, geometry, shift=shift, **kw)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got, reference(shape, geometry, shift, **kw), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(20, 20, 20), (21, 21, 21), (19, 22, 21)])
@pytest.mark.parametrize("geometry,kw", CASES_3D)
@pytest.mark.parametrize("shift", SHIFTS_3D)
def test_3d_masks_match_formulas(shape, geometry, kw, shift):
    got = K.make_mask(shape, geometry, shift=shift, **kw)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_allclose(got, reference(shape, geometry, shift, **kw), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [32, 33])
def test_raised_cosine_is_one_half_zero_at_r1_mid_r2(n):
    c = n // 2
    m = K.make_mask((n, n, n), "raised_cosine", inner_radius=4.0, outer_radius=10.0)
    assert m[c, c, c + 4] == 1.0 and m[c, c - 4, c] == 1.0
    assert m[c + 7, c, c] == pytest.approx(0.5, abs=1e-7)
    assert m[c, c, c + 10] == 0.0 and m[c - 10, c, c] == 0.0
    assert 0.0 < m[c, c, c + 9] < 0.5 < m[c, c, c + 5] < 1.0
    # fractional radii reached exactly through a half-pixel shift along x
    m2 = K.make_mask((n, n), "raised_cosine", inner_radius=4.5, outer_radius=8.5, shift=(0.5, 0))
    assert m2[c, c + 5] == 1.0
    assert m2[c, c + 7] == pytest.approx(0.5, abs=1e-7)
    assert m2[c, c + 9] == 0.0 and m2[c, c - 8] == 0.0


@pytest.mark.parametrize(
    "shape,geometry,kw,shift",
    [
        ((33, 32), "circular", {"radius": 6}, (3, -5)),
        ((32, 31), "raised_crown", {"inner_radius": 3, "outer_radius": 7}, (-4, 2)),
        ((24, 25, 26), "sphere", {"radius": 5}, (2, -3, 4)),
        ((24, 25, 26), "raised_cosine", {"inner_radius": 2, "outer_radius": 6}, (-5, 1, 3)),
        ((24, 25, 26), "cylinder", {"radius": 4, "height": 8}, (3, 2, -4)),
        ((24, 25, 26), "box", {"box_size": (5, 6, 7)}, (4, -3, 2)),
        ((24, 25, 26), "gaussian", {"sigma": 2.0}, (1, 1, -2)),
    ],
)
def test_shift_moves_the_mask_by_exactly_the_shift(shape, geometry, kw, shift):
    base = K.make_mask(shape, geometry, **kw)
    moved = K.make_mask(shape, geometry, shift=shift, **kw)
    dst = tuple(slice(s, None) if s >= 0 else slice(None, s) for s in shift[::-1])
    src = tuple(
        slice(None, -s if s > 0 else None) if s >= 0 else slice(-s, None) for s in shift[::-1]
    )
    np.testing.assert_array_equal(moved[dst], base[src])  # the part that does not wrap
    if geometry != "gaussian":  # compact support: identical to a circular roll
        axes = tuple(range(len(shape)))
        np.testing.assert_array_equal(moved, np.roll(base, shift[::-1], axis=axes))


@pytest.mark.parametrize("n,w", [(32, 8), (32, 7), (33, 8), (33, 7), (16, 16), (15, 1)])
def test_box_width_is_exact(n, w):
    m = K.make_mask((n, n, n), "box", box_size=w)
    inside = np.flatnonzero(m[n // 2, n // 2])
    assert inside.size == w == int(m.sum() ** (1 / 3) + 0.5)
    lo = -(w // 2)  # -X/2 .. X/2-1 for even X, -(X-1)/2 .. (X-1)/2 for odd X
    np.testing.assert_array_equal(inside - n // 2, np.arange(lo, lo + w))
    for axis in range(3):
        assert m.any(axis=tuple(a for a in range(3) if a != axis)).sum() == w
    # per-axis widths in (x, y, z) order, and exact width with a fractional shift
    m = K.make_mask((n, n, n), "box", box_size=(3, 5, 7), shift=(0.5, -0.25, 0.75))
    counts = [m.any(axis=tuple(a for a in range(3) if a != axis)).sum() for axis in range(3)]
    assert counts == [7, 5, 3]


def test_defaults_resolve_like_scipion():
    p = K.resolve_mask_params((64, 64, 64), "sphere")
    assert p.radius == 32
    p = K.resolve_mask_params((65, 65), "raised_cosine")
    assert (p.inner_radius, p.outer_radius) == (0.0, 32.5)
    assert K.resolve_mask_params((40, 50, 60), "box").box_size == (30, 25, 20)
    assert K.resolve_mask_params((40, 50, 60), "cylinder").height == 40
    assert K.resolve_mask_params((60, 60), "gaussian").sigma == 10
    np.testing.assert_array_equal(
        K.make_mask((60, 60), "gaussian"), K.make_mask((60, 60), "gaussian", sigma=10)
    )
    g = K.make_mask((120, 120), "gaussian", sigma=10)  # unit integral (box = +-6 sigma)
    assert g.sum() == pytest.approx(1.0, abs=1e-6) and g.max() < 1
    g3 = K.make_mask((48, 48, 48), "gaussian", sigma=4)
    assert g3.sum() == pytest.approx(1.0, abs=1e-6)
    assert K.make_mask((121, 121), "gaussian", peak_one=True).max() == 1.0


@pytest.mark.parametrize(
    "shape,geometry,kw,match",
    [
        ((32, 32), "crown", {"inner_radius": 9, "outer_radius": 9}, "^inner_radius"),
        ((32, 32), "raised_cosine", {"inner_radius": 10, "outer_radius": 5}, "^inner_radius"),
        ((32, 32), "gaussian", {"sigma": -2}, "^sigma"),
        ((32, 32), "circular", {"radius": 40}, "^radius.*beyond the box"),
        ((32, 32, 32), "raised_cosine", {"outer_radius": 100}, "^outer_radius"),
        ((32, 32), "hexagon", {}, "^geometry: unknown"),
        ((32, 32, 32), "circular", {}, "^geometry: 'circular' is a 2D"),
        ((32, 32), "cylinder", {}, "^geometry: 'cylinder' is a 3D"),
        ((32, 32), "box", {"box_size": 40}, "^box_size"),
        ((32, 32), "box", {"box_size": 4.5}, "^box_size"),
        ((32, 32, 32), "cylinder", {"height": 40}, "^height"),
        ((32, 32), "raised_crown", {"border": 0}, "^border"),
        ((32, 32), "circular", {"shift": (1, 2, 3)}, "^shift"),
        ((32, 32, 32, 2), "sphere", {}, "^shape"),
        ((32, 32), "circular", {"radius": -3}, "^radius"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(shape, geometry, kw, match):
    with pytest.raises(ValueError, match=match):
        K.make_mask(shape, geometry, **kw)


def test_fill_modes_use_whole_image_statistics():
    rng = np.random.default_rng(1)
    n, size = 3, 24
    stack = rng.normal(0.0, 1.0, (n, size, size)).astype(np.float32)
    mask = K.make_mask((size, size), "circular", radius=6)
    inside = mask > 0.5
    stack[:, inside] += np.array([10.0, 20.0, 30.0], np.float32)[:, None]  # stats differ
    stack[:, size // 2, size // 2] = [-50.0, -60.0, -70.0]  # the minimum is inside too
    for fill, fn in (("min", np.min), ("max", np.max), ("mean", np.mean)):
        got = K.apply_mask(stack, mask, binary=True, fill=fill)
        assert got.dtype == np.float32
        for i in range(n):
            whole = fn(stack[i].astype(np.float64))
            np.testing.assert_allclose(got[i][~inside], whole, rtol=1e-6)
            assert abs(whole - fn(stack[i][~inside])) > 1.0  # would differ if outside-only
            np.testing.assert_array_equal(got[i][inside], stack[i][inside])
    got = K.apply_mask(stack[0], mask, binary=True, fill="value", fill_value=-7.5)
    assert np.all(got[~inside] == -7.5)
    soft = K.make_mask((size, size), "raised_cosine", inner_radius=4, outer_radius=9)
    got = K.apply_mask(stack, soft, binary=False, fill="max", fill_value=3.0)  # fill ignored
    np.testing.assert_array_equal(got, stack * soft)


def test_apply_mask_dtypes_out_and_in_place():
    rng = np.random.default_rng(2)
    vol = rng.normal(size=(16, 17, 18)).astype(np.float32)
    m = K.make_mask(vol.shape, "sphere", radius=6)
    ref = np.where(m > 0.5, vol, vol.mean(dtype=np.float64)).astype(np.float32)
    out = np.empty_like(vol)
    assert K.apply_mask(vol, m, binary=True, fill="mean", out=out) is out
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    work = vol.copy()
    assert K.apply_mask(work, m, binary=True, fill="mean", out=work) is work
    np.testing.assert_allclose(work, ref, rtol=1e-6)
    ints = (vol * 100).astype(np.int16)
    assert K.apply_mask(ints, m.astype(np.float64), binary=False).dtype == np.float32
    with pytest.raises(ValueError, match="^out"):
        K.apply_mask(vol, m, binary=False, out=np.empty(vol.shape, np.float64))
    with pytest.raises(ValueError, match="^mask"):
        K.apply_mask(vol, m[:, :, :-1], binary=False)
    with pytest.raises(ValueError, match="^fill"):
        K.apply_mask(vol, m, binary=True, fill="median")


@pytest.mark.parametrize("geometry,kw", CASES_3D)
@pytest.mark.parametrize("fill", ["value", "min", "mean"])
def test_mask_volume_equals_make_then_apply(geometry, kw, fill):
    rng = np.random.default_rng(3)
    vol = (rng.normal(size=(21, 20, 22)) + 0.3).astype(np.float32)
    mask = K.make_mask(vol.shape, geometry, shift=(1, -2, 0.5), **kw)
    binary = K.is_binary(geometry)
    ref = K.apply_mask(vol, mask, binary=binary, fill=fill, fill_value=2.0)
    got = K.mask_volume(vol, geometry, fill=fill, fill_value=2.0, shift=(1, -2, 0.5), **kw)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)
    work = vol.copy()
    K.mask_volume(work, geometry, fill=fill, fill_value=2.0, out=work, shift=(1, -2, 0.5), **kw)
    np.testing.assert_array_equal(work, ref)


def test_coordinate_helpers():
    z, y, x = K.centered_axes((5, 4, 7), shift=(1, 0.5, -2))
    assert z.shape == (5, 1, 1) and y.shape == (1, 4, 1) and x.shape == (1, 1, 7)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x.ravel(), np.arange(7) - 3 - 1)
    np.testing.assert_array_equal(y.ravel(), np.arange(4) - 2 - 0.5)
    np.testing.assert_array_equal(z.ravel(), np.arange(5) - 2 + 2)
    r2 = K.radius_squared((4, 6))
    assert r2.dtype == np.float32 and r2[2, 3] == 0 and r2[0, 0] == 4 + 9
    assert K.is_binary("crown") and not K.is_binary("raised_crown")
