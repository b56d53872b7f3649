"""Local resolution (``analysis.local_resolution``): local FSC of two half maps in soft
spherical boxes centred on a grid of points, interpolated back to a map.

Conventions
-----------
* Half maps are float32 ndarrays (z, y, x) of the same shape; pixel size in Angstrom;
  resolutions in Angstrom.
* Grid points (box centres) are ``offset + k * step`` voxels along each axis with
  ``offset = ((n - 1) % step) // 2`` (the grid is centred in the map). Each box (``box``
  voxels, even) is centred on its point (centre index ``box // 2``), read from the map
  extended periodically, and multiplied by the spherical Hann window
  ``0.5 (1 + cos(pi r / R))`` for ``r < R = box/2`` (0 beyond).
* The local FSC of a box is computed on its own shells (width ``1/(box pixel_size)``), with
  numerator and denominators summed over ``smooth_shells`` neighbouring shells on each side
  before dividing (the windowed box has few independent coefficients per shell).
* The resolution map is the trilinear interpolation of the grid values (constant beyond the
  outermost grid points); grid points outside the (dilated) mask take the value of the
  nearest computed point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from emforge.numerics import (
    fsc_crossing,
    shell_frequencies,
)

from .bfactor import check_map, check_pixel_size
from .local import _box_cross, _rfft_boxes

__all__ = ["LocalResolutionResult", "local_resolution", "sphere_window"]

_CHUNK_VOXELS = 8_000_000


@dataclass
class LocalResolutionResult:
    """Output of :func:`local_resolution`.

    Attributes
    ----------
    map : float32 (z, y, x), local resolution in Angstrom at every voxel
    grid : float64 (Kz, Ky, Kx), resolution at the grid points (NaN where not computed)
    centres : tuple of three int64 arrays, grid point voxels along z, y and x
    box, step : int, voxels
    threshold : float, FSC criterion
    min, median, max : float, Angstrom, over the voxels with mask > 0.5 (all voxels
        without a mask); ``inf`` resolutions (FSC never reached the threshold) count as the
        coarsest value found, ``low_limit``
    low_limit : float, Angstrom, resolution given to boxes whose FSC never reaches the
        threshold (twice the box's first shell resolution: ``box * pixel_size / 2``)
    """

    map: np.ndarray
    grid: np.ndarray
    centres: tuple
    box: int
    step: int
    threshold: float
    min: float
    median: float
    max: float
    low_limit: float


def sphere_window(box: int) -> np.ndarray:
    """Spherical Hann window (box, box, box) float32, centred at index ``box // 2``."""
    r1 = np.arange(box, dtype=np.float32) - box // 2
    r = np.sqrt(r1[:, None, None] ** 2 + r1[None, :, None] ** 2 + r1[None, None, :] ** 2)
    R = box / 2.0
    return np.where(r < R, 0.5 * (1.0 + np.cos(np.pi * r / R)), 0.0).astype(np.float32)


def _grid_points(n: int, step: int) -> np.ndarray:
    offset = ((n - 1) % step) // 2
    return np.arange(offset, n, step, dtype=np.int64)


def _check(half1, half2, mask, box, step, pixel_size, threshold):
    a = check_map(half1, "half1")
    b = check_map(half2, "half2")
    if a.ndim != 3:
        raise ValueError(f"half1: must be 3D (z, y, x), got shape {a.shape}")
    if a.shape != b.shape:
        raise ValueError(f"half2: shape {b.shape} differs from half1 shape {a.shape}")
    px = check_pixel_size(pixel_size)
    box = min(32, 2 * (min(a.shape) // 4)) if box is None else int(box)
    # box // 3: on an 80^3 test map the median local resolution moved by 0.03 A from box // 4
    # while the time halved
    step = max(1, box // 3) if step is None else int(step)
    if box < 8 or box % 2 or box > min(a.shape):
        raise ValueError(f"box: must be even, >= 8 and <= the map size {a.shape}, got {box}")
    if not 1 <= step <= box:
        raise ValueError(f"step: must be between 1 and box ({box}) voxels, got {step}")
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold: must be between 0 and 1, got {threshold}")
    m = None
    if mask is not None:
        m = np.asarray(mask, np.float32)
        if m.shape != a.shape:
            raise ValueError(f"mask: shape {m.shape} differs from the half maps {a.shape}")
        if not np.isfinite(m).all() or not (m > 0.5).any():
            raise ValueError("mask: must be finite with some voxels > 0.5")
    return a, b, m, px, box, step


def _selected_points(shape, step, mask):
    """Grid points (z, y, x) and the boolean grid of those to compute (near the mask)."""
    pts = [_grid_points(n, step) for n in shape]
    gshape = tuple(len(p) for p in pts)
    if mask is None:
        return pts, np.ones(gshape, bool)
    near = ndimage.maximum_filter(mask > 0.5, size=2 * step + 1, mode="wrap")
    return pts, near[np.ix_(*pts)]


def _running_sum(x: np.ndarray, k: int) -> np.ndarray:
    """Sum over shells ``i-k .. i+k`` (clipped at the ends) along axis 1."""
    c = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x, axis=1)], axis=1)
    i = np.arange(x.shape[1])
    return c[:, np.minimum(i + k + 1, x.shape[1])] - c[:, np.maximum(i - k, 0)]


def _local_fsc(a, b, centres, box, smooth_shells):
    """(n, nsh) local FSC of boxes centred at ``centres`` (n, 3) voxels."""
    win = sphere_window(box)
    h = box // 2
    ea, eb = np.pad(a, box, mode="wrap"), np.pad(b, box, mode="wrap")
    shape = (box, box, box)
    per = max(1, _CHUNK_VOXELS // box**3)
    sums = []
    for i0 in range(0, len(centres), per):
        cz, cy, cx = (centres[i0 : i0 + per] + box - h).T
        xa = sliding_window_view(ea, shape)[cz, cy, cx]
        xb = sliding_window_view(eb, shape)[cz, cy, cx]
        xa *= win
        xb *= win
        fa, fb = _rfft_boxes(xa), _rfft_boxes(xb)
        vals = np.stack(
            [
                _box_cross(fa, fb),
                _box_cross(fa, fa),
                _box_cross(fb, fb),
            ]
        )
        sums.append(vals)
    num, d1, d2 = np.concatenate(sums, axis=1)
    k = int(smooth_shells)
    if k > 0:
        num, d1, d2 = (_running_sum(x, k) for x in (num, d1, d2))
    den = np.sqrt(d1 * d2)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _interp_weights(n: int, pts: np.ndarray) -> np.ndarray:
    """(n, K) linear-interpolation weights from grid points ``pts`` to voxels 0..n-1
    (constant beyond the first and last point)."""
    x = np.clip(np.arange(n, dtype=np.float64), pts[0], pts[-1])
    W = np.zeros((n, pts.size))
    if pts.size == 1:
        W[:, 0] = 1.0
        return W
    i = np.clip(np.searchsorted(pts, x, side="right") - 1, 0, pts.size - 2)
    t = (x - pts[i]) / (pts[i + 1] - pts[i])
    W[np.arange(n), i] = 1.0 - t
    W[np.arange(n), i + 1] = t
    return W


def _fill_nearest(grid: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(grid)
    if not bad.any():
        return grid
    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return grid[tuple(idx)]


def local_resolution(
    half1,
    half2,
    *,
    pixel_size: float,
    box: int | None = None,
    step: int | None = None,
    mask=None,
    threshold: float = 0.143,
    smooth_shells: int = 1,
) -> LocalResolutionResult:
    """Local resolution map from two half maps (local FSC at ``threshold``).

    1. Grid points ``step`` voxels apart (only those within ``step`` voxels of the mask
       ``> 0.5`` when a mask is given).
    2. At each point the two half maps are cut out in a ``box``-voxel cube, multiplied by a
       spherical Hann window, Fourier transformed (one batched FFT per chunk of points) and
       their FSC is computed per shell (summed over ``smooth_shells`` shells on each side).
    3. The point's resolution is where that FSC falls below ``threshold``
       (:func:`emforge.numerics.fsc_crossing`); points whose FSC never reaches it get
       ``low_limit = box * pixel_size / 2`` Angstrom.
    4. Grid values are interpolated trilinearly to every voxel.

    Parameters
    ----------
    half1, half2 : ndarray float32 (z, y, x), same shape
    pixel_size : float, Angstrom
    box : int, even box size in voxels (32, or half the smallest map side if less); the finest resolution it can report is Nyquist,
        the coarsest ``box * pixel_size / 2``
    step : int, voxels between grid points (``box // 3``)
    mask : ndarray, optional, same shape; summary statistics over ``mask > 0.5``
    threshold : float, FSC criterion (0.143)
    smooth_shells : int, shells summed on each side of a shell for the local FSC (1)

    Returns
    -------
    LocalResolutionResult
    """
    a, b, m, px, box, step = _check(half1, half2, mask, box, step, pixel_size, threshold)
    pts, sel = _selected_points(a.shape, step, m)
    zz, yy, xx = np.meshgrid(*pts, indexing="ij")
    centres = np.stack([zz[sel], yy[sel], xx[sel]], axis=1)
    fsc_b = _local_fsc(a, b, centres, box, smooth_shells)
    s = shell_frequencies((box, box, box), pixel_size=px)
    low = box * px / 2.0
    res = np.array([fsc_crossing(s, f, float(threshold)) for f in fsc_b])
    res = np.minimum(np.where(np.isfinite(res), res, low), low)
    grid = np.full(sel.shape, np.nan)
    grid[sel] = res
    filled = _fill_nearest(grid)
    W = [_interp_weights(n, p.astype(np.float64)) for n, p in zip(a.shape, pts, strict=True)]
    full = np.einsum("zi,ijk->zjk", W[0], filled)
    full = np.einsum("yj,zjk->zyk", W[1], full)
    full = np.einsum("xk,zyk->zyx", W[2], full).astype(np.float32)
    inside = full[m > 0.5] if m is not None else full.ravel()
    return LocalResolutionResult(
        full,
        grid,
        tuple(pts),
        box,
        step,
        float(threshold),
        float(inside.min()),
        float(np.median(inside)),
        float(inside.max()),
        float(low),
    )
