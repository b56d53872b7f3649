"""Template matching of a reference against a tomogram (pure kernels, float32, arrays (z, y, x)).

Two scores, both as the maximum over a set of rotations, keeping the best rotation per voxel:

* ``"flc"``: locally normalised cross-correlation. The rotated template is filtered by the
  missing wedge (and an optional CTF) in Fourier space, then made zero-mean and unit-sd under
  the mask. With a spherical mask (the default) the local mean and sd of the tomogram under the
  mask do not depend on the rotation and are computed once per tile, so each rotation costs one
  template-sized FFT pair plus one tile-sized FFT pair.
* ``"ccf"``: EMAN2's e2spt_tempmatch score, the plain CCF with the filtered template
  (unit norm under the mask), divided by the tomogram's global sd; no local normalisation.

The tomogram is extended by zeros outside its box (linear, not circular correlation), so tiles
of the tomogram padded by the template half-size on each side give exactly the untiled score
(:func:`plan_tiles`, :func:`match_tile`). Rotations and tiles are independent chunks; partial
results over rotation chunks merge with :func:`merge_best`.

Rotations act on (x, y, z) vectors; a rotation matrix ``A`` means the template placed in the
tomogram is ``T(A^T r)`` (as :func:`emforge.numerics.align3d.rotate_volume`), so the RELION ZYZ
angles of the pick are ``matrix_to_euler_zyz(A)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as _sfft
import scipy.ndimage as ndi

from emforge.numerics import fft as _fft
from emforge.numerics.align3d import rotate_volume
from emforge.numerics.orientations import eman_orientations, so3_grid
from emforge.numerics.rotations import eman_to_matrix

__all__ = [
    "Tile",
    "rotation_set",
    "spherical_mask",
    "estimate_memory",
    "plan_tiles",
    "prepare_tomogram",
    "match_tile",
    "merge_best",
    "match_template",
    "pick_peaks",
    "pick_peaks_eman",
    "reference_at_pixel_size",
]

# bytes per voxel of a padded tile while matching: tile (4), its rfft (~4.1), local sd (4),
# best score (4), best index (4), product + inverse (~8), padded template + its rfft (~8),
# transient local-statistics FFTs (~16, freed before the rotation loop)
_BYTES_PER_VOXEL = 48


def rotation_set(kind: str = "eman", *, delta: float = 30.0, phitoo: float | None = None,
                 step: float | None = None) -> np.ndarray:  # fmt: skip
    """Rotation matrices (N, 3, 3) float64 to scan.

    ``kind="eman"``: EMAN2's generator ``gen_orientations("eman", delta, phitoo, inc_mirror=1)``
    (c1), phitoo defaulting to delta; delta 30 gives e2spt_tempmatch's 588 rotations.
    ``kind="so3"``: a near-uniform SO(3) set at about ``step`` degrees (default ``delta``).
    """
    if kind == "eman":
        p = delta if phitoo is None else phitoo
        ang = eman_orientations("c1", delta, inc_mirror=True, phitoo=p)
        return eman_to_matrix(ang).astype(np.float64)
    if kind == "so3":
        return so3_grid(delta if step is None else step)
    raise ValueError(f"rotations: must be 'eman' or 'so3', got {kind!r}")


def spherical_mask(n: int, radius: float | None = None) -> np.ndarray:
    """Binary sphere (n, n, n) float32 centred at n // 2, radius default n / 2 - 1 px."""
    r = n / 2 - 1 if radius is None else float(radius)
    g = np.arange(n) - n // 2
    d2 = g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
    return (d2 <= r * r).astype(np.float32)


@dataclass(frozen=True)
class Tile:
    """One tile: ``inner`` the voxels it scores (start, stop per axis, tomogram px);
    ``outer`` the region read (inner +- the template half-size, may go outside the tomogram,
    filled with zeros there); ``fft_shape`` the padded FFT box."""

    inner: tuple[tuple[int, int], ...]
    outer: tuple[tuple[int, int], ...]
    fft_shape: tuple[int, int, int]


def _halo(template_shape) -> tuple[int, ...]:
    return tuple(int(s) // 2 + 1 for s in template_shape)


def estimate_memory(fft_shape, template_shape=None) -> int:
    """Peak bytes for matching one tile of padded box ``fft_shape`` (model, see module)."""
    n = int(np.prod(fft_shape))
    t = int(np.prod(template_shape)) * 32 if template_shape is not None else 0
    return n * _BYTES_PER_VOXEL + t


def plan_tiles(shape, template_shape, *, memory_bytes: float = 2e9, workers: int = 1) -> list[Tile]:
    """Cut a tomogram of ``shape`` (z, y, x) into tiles that each fit ``memory_bytes / workers``.

    Tiles' inner regions partition the tomogram; each reads a halo of the template half-size + 1
    on every side, so its scores equal the untiled ones. The split is along the longest axes
    first (halving) until the estimate fits. Raises ValueError when even a 1-voxel tile does not.
    """
    shape = tuple(int(s) for s in shape)
    halo = _halo(template_shape)
    budget = float(memory_bytes) / max(1, int(workers))
    counts = [1, 1, 1]

    def fft_box(c):
        inner = [math.ceil(s / k) for s, k in zip(shape, c, strict=True)]
        return tuple(
            _sfft.next_fast_len(i + 2 * h, real=True) for i, h in zip(inner, halo, strict=True)
        )

    while estimate_memory(fft_box(counts), template_shape) > budget:
        sizes = [math.ceil(s / k) for s, k in zip(shape, counts, strict=True)]
        ax = int(np.argmax(sizes))
        if sizes[ax] <= 1:
            raise ValueError(
                f"memory: {memory_bytes:.3g} bytes cannot hold one tile for a template of {template_shape}"
            )
        counts[ax] *= 2
    edges = [
        np.linspace(0, s, min(k, s) + 1).round().astype(int)
        for s, k in zip(shape, counts, strict=True)
    ]
    tiles = []
    for z0, z1 in zip(edges[0][:-1], edges[0][1:], strict=True):
        for y0, y1 in zip(edges[1][:-1], edges[1][1:], strict=True):
            for x0, x1 in zip(edges[2][:-1], edges[2][1:], strict=True):
                inner = ((int(z0), int(z1)), (int(y0), int(y1)), (int(x0), int(x1)))
                outer = tuple((a - h, b + h) for (a, b), h in zip(inner, halo, strict=True))
                fs = tuple(_sfft.next_fast_len(b - a, real=True) for a, b in outer)
                tiles.append(Tile(inner, outer, fs))
    return tiles


def prepare_tomogram(tomogram) -> np.ndarray:
    """float32 copy, zero mean and unit sd (so tiles share one normalisation)."""
    v = np.asarray(tomogram, dtype=np.float32)
    if v.ndim != 3:
        raise ValueError(f"tomogram: need a 3D volume (z, y, x), got shape {v.shape}")
    sd = float(v.std())
    if sd == 0:
        raise ValueError("tomogram: is constant")
    return ((v - float(v.mean())) / sd).astype(np.float32)


def _read(tomo: np.ndarray, tile: Tile) -> np.ndarray:
    out = np.zeros(tile.fft_shape, np.float32)
    src, dst = [], []
    for (a, b), n in zip(tile.outer, tomo.shape, strict=True):
        a0, b0 = max(a, 0), min(b, n)
        src.append(slice(a0, b0))
        dst.append(slice(a0 - a, b0 - a))
    out[tuple(dst)] = tomo[tuple(src)]
    return out


def _wrap_pad(t: np.ndarray, shape) -> np.ndarray:
    """Template (centre s//2) into a box of ``shape`` with its centre at index 0 (circular)."""
    out = np.zeros(shape, np.float32)
    c = [s // 2 for s in t.shape]
    idx = [(np.arange(s) - ci) % n for s, ci, n in zip(t.shape, c, shape, strict=True)]
    out[np.ix_(*idx)] = t
    return out


def _corr(ftile: np.ndarray, kernel_padded: np.ndarray, shape, threads) -> np.ndarray:
    fk = _fft.rfftn(kernel_padded, threads=threads)
    np.conj(fk, out=fk)
    fk *= ftile
    return _fft.irfftn(fk, shape=shape, threads=threads)


def _filtered_template(template, matrix, mask, filt, threads):
    t = rotate_volume(template, matrix, order=1)
    if filt is not None:
        ft = _fft.rfftn(t, threads=threads)
        ft *= filt
        t = _fft.irfftn(ft, shape=t.shape, threads=threads)
    m = mask > 0
    n = float(m.sum())
    vals = t[m]
    mu = float(vals.mean())
    sd = float(vals.std())
    out = np.zeros_like(t)
    if sd > 0:
        out[m] = (vals - mu) / (sd * n)
    return out  # sum over mask of out * V is the Pearson numerator / (n sd_T)


def match_tile(tomo: np.ndarray, tile: Tile, template, rotations, *, mask=None, wedge=None, ctf=None,
               score: str = "flc", rotation_offset: int = 0, threads: int | None = None):  # fmt: skip
    """Score one tile over ``rotations``.

    Parameters
    ----------
    tomo : (Z, Y, X) float32, from :func:`prepare_tomogram`
    tile : Tile from :func:`plan_tiles`
    template : (s, s, s) float32, light (protein > background), same pixel size as ``tomo``
    rotations : (N, 3, 3) matrices (module notes); ``rotation_offset`` added to the indices
    mask : like template; default :func:`spherical_mask`. A non-spherical mask is rotated with
        the template, and the local statistics are then recomputed per rotation (slower).
    wedge, ctf : optional filters on the template's rfft grid (s, s, s//2+1), multiplied in
        (e.g. :func:`emforge.numerics.tilt.missing_wedge_mask`, a CTF or |CTF|).
    score : "flc" or "ccf"

    Returns
    -------
    (best, index): float32 and int32 arrays of the tile's inner shape; index = rotation number.
    """
    if score not in ("flc", "ccf"):
        raise ValueError(f"score: must be 'flc' or 'ccf', got {score!r}")
    template = np.asarray(template, np.float32)
    rotations = np.asarray(rotations, np.float64).reshape(-1, 3, 3)
    s = template.shape
    sph = mask is None
    mask = spherical_mask(s[0]) if sph else (np.asarray(mask) > 0).astype(np.float32)
    if not sph:
        sph = _is_rotation_invariant(mask)
    filt = None
    if wedge is not None:
        filt = np.asarray(wedge, np.float32)
    if ctf is not None:
        filt = np.asarray(ctf, np.float32) if filt is None else filt * np.asarray(ctf, np.float32)
    shape = tile.fft_shape
    data = _read(tomo, tile)
    ftile = _fft.rfftn(data, threads=threads)
    halo = [-a for a, _ in tile.outer]  # offset of tomogram index 0 in the tile
    inner = tuple(slice(a + h, b + h) for (a, b), h in zip(tile.inner, halo, strict=True))
    inner_shape = tuple(b - a for a, b in tile.inner)

    def local_sd(m):
        n = float(m.sum())
        mp = _wrap_pad(m, shape)
        fm = _fft.rfftn(mp, threads=threads)
        np.conj(fm, out=fm)
        s1 = _fft.irfftn(fm * ftile, shape=shape, threads=threads)[inner]
        s2 = _fft.irfftn(
            fm * _fft.rfftn(data * data, threads=threads), shape=shape, threads=threads
        )[inner]
        var = s2 / n - (s1 / n) ** 2
        sd = np.sqrt(np.maximum(var, 0, dtype=np.float32), dtype=np.float32)
        return np.where(sd > 1e-4, sd, np.inf).astype(np.float32)

    if score == "flc" and sph:
        sd_v = local_sd(mask)
    best = np.full(inner_shape, -np.inf, np.float32)
    idx = np.zeros(inner_shape, np.int32)
    for k, a in enumerate(rotations):
        m_rot = mask if sph else (rotate_volume(mask, a, order=1) > 0.5).astype(np.float32)
        kern = _filtered_template(template, a, m_rot, filt, threads)
        cc = _corr(ftile, _wrap_pad(kern, shape), shape, threads)[inner]
        if score == "flc":
            cc /= sd_v if sph else local_sd(m_rot)
        better = cc > best
        best[better] = cc[better]
        idx[better] = k + rotation_offset
    return best, idx


def _is_rotation_invariant(mask: np.ndarray) -> bool:
    s = mask.shape
    if len(set(s)) != 1:
        return False
    g = np.arange(s[0]) - s[0] // 2
    d2 = g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
    m = mask > 0
    if not m.any():
        return False
    r2 = d2[m].max()
    return bool(np.array_equal(m, d2 <= r2))


def merge_best(parts):
    """Merge (best, index) pairs of the same region over rotation chunks: voxelwise max."""
    parts = list(parts)
    best, idx = parts[0][0].copy(), parts[0][1].copy()
    for b, i in parts[1:]:
        w = b > best
        best[w] = b[w]
        idx[w] = i[w]
    return best, idx


def match_template(tomogram, template, rotations, *, mask=None, wedge=None, ctf=None, score="flc",
                   memory_bytes: float = 2e9, threads: int | None = None):  # fmt: skip
    """Whole-tomogram matching, serial over :func:`plan_tiles` tiles (the protocol spreads tiles
    and rotation chunks on the executor instead). Returns (best score, best rotation index),
    float32/int32 of the tomogram's shape."""
    tomo = prepare_tomogram(tomogram)
    template = np.asarray(template, np.float32)
    if template.ndim != 3 or any(a > b for a, b in zip(template.shape, tomo.shape, strict=True)):
        raise ValueError(
            f"template: need a 3D box no larger than the tomogram, got {template.shape}"
        )
    best = np.empty(tomo.shape, np.float32)
    idx = np.empty(tomo.shape, np.int32)
    for tile in plan_tiles(tomo.shape, template.shape, memory_bytes=memory_bytes):
        b, i = match_tile(tomo, tile, template, rotations, mask=mask, wedge=wedge, ctf=ctf,
                          score=score, threads=threads)  # fmt: skip
        sl = tuple(slice(a, c) for a, c in tile.inner)
        best[sl], idx[sl] = b, i
    return best, idx


def pick_peaks(scores, *, min_distance: float, threshold: float = -np.inf, n_max: int | None = None,
               edge: int | tuple[int, int, int] = 0) -> np.ndarray:  # fmt: skip
    """Greedy peak picking on a score map.

    Local maxima (3x3x3) above ``threshold`` and at least ``edge`` px (per axis (z, y, x) if a
    tuple) from every face are taken in decreasing score; a peak closer than ``min_distance`` px
    to one already taken is dropped; at most ``n_max`` peaks. Returns (K, 3) int (z, y, x)
    positions in decreasing score.
    """
    s = np.asarray(scores, np.float32)
    e = (edge,) * 3 if np.isscalar(edge) else tuple(edge)
    valid = np.zeros(s.shape, bool)
    valid[
        tuple(slice(int(a), max(int(a), n - int(a))) for a, n in zip(e, s.shape, strict=True))
    ] = True
    finite = np.where(np.isfinite(s), s, -np.inf)
    peak = (
        (finite == ndi.maximum_filter(finite, size=3, mode="nearest"))
        & valid
        & (finite > threshold)
    )
    pos = np.argwhere(peak)
    if len(pos) == 0:
        return np.zeros((0, 3), int)
    order = np.argsort(-finite[tuple(pos.T)], kind="stable")
    pos = pos[order]
    kept: list[np.ndarray] = []
    d2 = float(min_distance) ** 2
    for p in pos:
        if kept and np.min(((np.asarray(kept) - p) ** 2).sum(1)) < d2:
            continue
        kept.append(p)
        if n_max is not None and len(kept) >= n_max:
            break
    return np.asarray(kept, int).reshape(-1, 3)


def pick_peaks_eman(scores, *, vthr: float = 10.0, dthr: float, nptcl: int = 500, maxvol=None,
                    skip_last_label: bool = False):  # fmt: skip
    """e2spt_tempmatch's rule on an edge-mean-normalised score map: values < vthr -> 0; connected
    labels; peak = each label's maximum position, score = the label's SUM; keep sums > 5 (and
    volumes < ``maxvol`` if given); sort by sum; greedy suppression within ``dthr`` px; first
    ``nptcl``. ``skip_last_label`` reproduces EMAN2's off-by-one. Returns (positions (K, 3)
    (z, y, x) int, scores normalised by the best, 1.0 first)."""
    s = np.where(np.asarray(scores, np.float32) < vthr, 0, scores).astype(np.float32)
    lab, n = ndi.label(s > 0)
    ids = np.arange(1, n + (0 if skip_last_label else 1))
    if len(ids) == 0:
        return np.zeros((0, 3), int), np.zeros(0, np.float32)
    sums = np.asarray(ndi.sum(s, lab, ids), np.float64)
    vols = np.asarray(ndi.sum(np.ones_like(s), lab, ids), np.float64)
    pos = np.asarray(ndi.maximum_position(s, lab, ids), int).reshape(-1, 3)
    keep = sums > 5
    if maxvol is not None:
        keep &= vols < maxvol
    pos, sums = pos[keep], sums[keep]
    order = np.argsort(-sums, kind="stable")
    pos, sums = pos[order], sums[order]
    kept, ks = [], []
    for p, v in zip(pos, sums, strict=True):
        if kept and np.min(np.sqrt(((np.asarray(kept) - p) ** 2).sum(1))) < dthr:
            continue
        kept.append(p)
        ks.append(v)
        if len(kept) >= nptcl:
            break
    ks = np.asarray(ks, np.float32)
    return np.asarray(kept, int).reshape(-1, 3), (ks / ks[0] if len(ks) else ks)


def reference_at_pixel_size(reference, ref_pixel_size, tomo_pixel_size) -> np.ndarray:
    """The reference resampled (cubic spline, :func:`scipy.ndimage.zoom`) to the tomogram's pixel size.

    Both sizes in Å and required: ``None`` or 1.0 (the value a file without a header scale
    reports) is refused with ValueError naming which one, rather than matching silently at a
    wrong scale. Equal sizes return a float32 copy. The output box is
    ``round(n * ref / tomo)`` per axis.
    """
    for name, a in (
        ("reference pixel size", ref_pixel_size),
        ("tomogram pixel size", tomo_pixel_size),
    ):
        if a is None or not np.isfinite(a) or a <= 0 or a == 1.0:
            raise ValueError(f"{name}: unknown or the 1.0 Å placeholder ({a!r}); set it explicitly")
    v = np.asarray(reference, np.float32)
    if abs(ref_pixel_size - tomo_pixel_size) < 1e-4 * tomo_pixel_size:
        return v.copy()
    z = float(ref_pixel_size) / float(tomo_pixel_size)
    return ndi.zoom(v, z, order=3, mode="grid-constant", cval=0.0, grid_mode=True).astype(
        np.float32
    )
