"""Binary morphology helpers for the automask kernels (6-connected, no wrap-around).

Private module of :mod:`emforge.protocols.automask.kernels`. Everything works on the bounding
box of the object grown by the reach of the operation, so big boxes with compact particles stay
cheap; outside the array counts as background (nothing there grows in, nothing leaks out).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft  # frequency helpers only: the transforms go through emforge's FFT
from scipy import ndimage

from emforge.numerics import fft

__all__ = [
    "CROSS",
    "bounding_slices",
    "dilate6",
    "erode6",
    "keep_labels_with",
    "largest_component",
    "bounded_sq_distance",
    "gaussian_soften",
]

CROSS = ndimage.generate_binary_structure(3, 1)  # 6-connectivity


def bounding_slices(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``mask`` grown by ``margin`` (clipped), or None if empty."""
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        lo = max(int(hits[0]) - margin, 0)
        hi = min(int(hits[-1]) + 1 + margin, mask.shape[axis])
        out.append(slice(lo, hi))
    return tuple(out)


def dilate6(mask: np.ndarray, n: int) -> np.ndarray:
    """``n`` iterations of binary dilation with the 6-connected cross (bool in, bool out);
    outside the array is background. Computed on the bounding box grown by ``n``."""
    out = mask.astype(bool, copy=True)
    if n <= 0:
        return out
    box = bounding_slices(out, n)
    if box is None:
        return out
    out[box] = ndimage.binary_dilation(out[box], CROSS, iterations=n)
    return out


def erode6(mask: np.ndarray, n: int) -> np.ndarray:
    """``n`` iterations of 6-connected binary erosion; outside the array is background."""
    cur = mask.astype(bool, copy=True)
    if n <= 0:
        return cur
    return ndimage.binary_erosion(cur, CROSS, iterations=n, border_value=0)


def keep_labels_with(binary: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The 6-connected components of ``binary`` that contain at least one ``seeds`` voxel."""
    labels, count = ndimage.label(binary, structure=CROSS)
    keep = np.zeros(count + 1, dtype=bool)
    keep[labels[seeds]] = True
    keep[0] = False
    return keep[labels]


def largest_component(binary: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of ``binary`` (empty stays empty)."""
    labels, count = ndimage.label(binary, structure=CROSS)
    if count <= 1:
        return binary.astype(bool, copy=True)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def bounded_sq_distance(mask: np.ndarray, limit: float) -> np.ndarray:
    """Exact squared Euclidean distance to ``mask`` wherever it is ``<= limit**2``.

    Separable min-plus passes along each axis over the offsets ``|t| <= floor(limit)`` (exact,
    because a nearest voxel within ``limit`` is within that range on every axis). Voxels farther
    than ``limit`` get a value ``> limit**2``. Returns an int32 array of ``mask.shape``.
    """
    reach = int(math.floor(limit))
    cap = int(math.floor(limit * limit)) + 1
    dtype = np.uint16 if cap + reach * reach < 60000 else np.int32
    d = np.where(mask, 0, cap).astype(dtype)
    for axis in range(mask.ndim):
        src = d.copy()
        for t in range(1, min(reach, mask.shape[axis] - 1) + 1):
            hi = [slice(None)] * mask.ndim
            lo = [slice(None)] * mask.ndim
            hi[axis], lo[axis] = slice(t, None), slice(None, -t)
            hi, lo = tuple(hi), tuple(lo)
            step = dtype(t * t)
            np.minimum(d[hi], src[lo] + step, out=d[hi])
            np.minimum(d[lo], src[hi] + step, out=d[lo])
        np.minimum(d, cap, out=d)
    return d.astype(np.int32)


def gaussian_soften(binary: np.ndarray, width: float) -> np.ndarray:
    """Low-pass a 0/1 volume with the transfer ``exp(-(width * s)**2)`` (s in cycles/pixel).

    Applied with float32 FFTs on the bounding box of the object padded by 6 sigma of the
    equivalent real-space Gaussian (``sigma = width / (pi sqrt(2))``) on every side, so the
    result is the non-periodic convolution: nothing wraps from one face of the box to the other.
    Values below 0.002 become 0 and the result is clipped to [0, 1]. Returns float32.
    """
    out = np.zeros(binary.shape, dtype=np.float32)
    sigma = width / (math.pi * math.sqrt(2.0))
    pad = int(math.ceil(6.0 * sigma)) + 1
    box = bounding_slices(binary, 0)
    if box is None:
        return out
    core = binary[box]
    sizes = [sfft.next_fast_len(n + 2 * pad, real=True) for n in core.shape]
    work = np.zeros(sizes, dtype=np.float32)
    work[tuple(slice(pad, pad + n) for n in core.shape)] = core
    spec = fft.rfftn(work)
    hz, hy, hx = (
        np.exp(-((width * f) ** 2)).astype(np.float32)
        for f in (sfft.fftfreq(sizes[0]), sfft.fftfreq(sizes[1]), sfft.rfftfreq(sizes[2]))
    )
    hyx = hy[:, None] * hx[None, :]
    for k in range(sizes[0]):  # one pass over the spectrum, plane by plane (in cache)
        spec[k] *= hz[k] * hyx
    work = fft.irfftn(spec, shape=sizes)
    # place back: the padded window, clipped to the array
    dst, src = [], []
    for sl, full in zip(box, binary.shape, strict=True):
        lo, hi = max(sl.start - pad, 0), min(sl.stop + pad, full)
        dst.append(slice(lo, hi))
        start = pad - (sl.start - lo)
        src.append(slice(start, start + hi - lo))
    block = work[tuple(src)]
    np.putmask(block, block < 0.002, 0.0)
    np.minimum(block, 1.0, out=block)
    out[tuple(dst)] = block
    return out
