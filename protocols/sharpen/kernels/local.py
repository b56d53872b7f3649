"""Local sharpening: per-box sharpening parameters in overlapping soft-edged boxes, blended.

Conventions
-----------
* Maps are float32 ndarrays (z, y, x), cubic boxes of ``box`` voxels (even), pixel size in
  Angstrom. Box ``(i, j, k)`` starts at voxel ``start = step - box + (i, j, k) * step``
  (see :func:`box_starts`; the map is extended periodically beyond its edges, like the
  FFT-based global filters); its centre is ``start + box/2``. ``step`` divides ``box`` with
  ``box/step >= 2``.
* Windows are separable Hann windows ``sin^2(pi (t + 1/2) / box)``, ``t = 0 .. box-1``;
  with ``step = box/m`` the windows of all boxes sum to the constant ``(m/2)^3`` everywhere
  in the map, so windowing, filtering each box and summing blends the boxes without seams.
* Each windowed box is zero-padded by ``pad`` voxels per side before filtering, so the filter
  does not wrap around the box; filtered boxes are added back (padding included) and the sum
  is divided by the summed windows.
* Batched FFTs over the boxes use :mod:`scipy.fft` (one (n, P, P, P) transform per chunk).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from emforge.numerics import (
    default_nshells,
    hermitian_weights,
    raised_cosine,
    shell_frequencies,
    shell_index_rfft,
)

from .bfactor import check_map, check_pixel_size, check_resolution
from .halfmaps import fsc_weight

__all__ = ["LocalSharpenResult", "sharpen_local", "box_starts", "hann_window"]

_CHUNK_VOXELS = 8_000_000  # real voxels per batched FFT chunk (about 32 MB of float32)


# ------------------------------------------------------------------------ box machinery
def hann_window(box: int) -> np.ndarray:
    """Separable 3D Hann window (box, box, box) float32 (see the module notes)."""
    t = np.sin(np.pi * (np.arange(box) + 0.5) / box).astype(np.float32) ** 2
    return t[:, None, None] * t[None, :, None] * t[None, None, :]


def box_starts(n: int, box: int, step: int) -> np.ndarray:
    """Start voxels of the boxes along one axis of length ``n``: ``step - box, 2 step - box,
    ...`` up to ``n - 1``, so every voxel of the map lies in exactly ``box/step`` boxes
    (int64)."""
    return np.arange(step - box, n, step, dtype=np.int64)


def _check_box(shape, box, step, resolution, px):
    if box is None:
        box = int(np.clip(2 * round(6.0 * resolution / px), 24, 64))
    box, step = int(box), int(box // 2 if step is None else step)
    if box < 8 or box % 2:
        raise ValueError(f"box: must be an even number of voxels >= 8, got {box}")
    if step < 1 or box % step or box // step < 2:
        raise ValueError(f"step: must divide box ({box}) into 2 or more parts, got {step}")
    if box > min(shape):
        raise ValueError(f"box: {box} voxels is larger than the map {shape}")
    return box, step


class _Boxes:
    """Windowed, zero-padded boxes of a map, and the overlap-add that puts them back."""

    def __init__(self, shape, box, step, pad):
        self.shape, self.box, self.step, self.pad = tuple(shape), box, step, pad
        self.P = box + 2 * pad
        self.starts = [box_starts(n, box, step) for n in shape]
        self.grid_shape = tuple(len(s) for s in self.starts)
        zz, yy, xx = np.meshgrid(*self.starts, indexing="ij")
        self.corner = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
        self.window = hann_window(box)
        self.margin = box + pad  # periodic extension on every side
        self.norm = self._window_sum()

    def centres(self) -> np.ndarray:
        """(n, 3) centre voxel (z, y, x) of every box."""
        return self.corner + self.box // 2

    def _extend(self, a):
        return np.pad(a, self.margin, mode="wrap")

    def chunks(self):
        """Slices of box indices such that one chunk's padded boxes fit _CHUNK_VOXELS."""
        per = max(1, _CHUNK_VOXELS // self.P**3)
        n = len(self.corner)
        return [slice(i, min(i + per, n)) for i in range(0, n, per)]

    def extract(self, ext, sl) -> np.ndarray:
        """Windowed, zero-padded boxes ``sl`` from an extended map: (n, P, P, P) float32."""
        b, p, m = self.box, self.pad, self.margin
        idx = self.corner[sl] + m
        out = np.zeros((len(idx), self.P, self.P, self.P), np.float32)
        for i, (z, y, x) in enumerate(idx):
            out[i, p : p + b, p : p + b, p : p + b] = ext[z : z + b, y : y + b, x : x + b]
        out[:, p : p + b, p : p + b, p : p + b] *= self.window
        return out

    def add(self, acc, boxes, sl) -> None:
        """Add filtered padded boxes back into the extended accumulator ``acc``."""
        P, off = self.P, self.margin - self.pad
        for i, (z, y, x) in enumerate(self.corner[sl] + off):
            acc[z : z + P, y : y + P, x : x + P] += boxes[i]

    def crop(self, acc) -> np.ndarray:
        m = self.margin
        nz, ny, nx = self.shape
        return acc[m : m + nz, m : m + ny, m : m + nx] / self.norm

    def _window_sum(self) -> np.ndarray:
        acc = np.zeros(tuple(n + 2 * self.margin for n in self.shape), np.float32)
        b, m = self.box, self.margin
        for z, y, x in self.corner + m:
            acc[z : z + b, y : y + b, x : x + b] += self.window
        nz, ny, nx = self.shape
        return acc[m : m + nz, m : m + ny, m : m + nx]


def _workers() -> int:
    return max(1, os.cpu_count() or 1)


def _rfft_boxes(x: np.ndarray) -> np.ndarray:
    return sfft.rfftn(x, axes=(1, 2, 3), workers=_workers())


def _irfft_boxes(f: np.ndarray, P: int) -> np.ndarray:
    return sfft.irfftn(f, s=(P, P, P), axes=(1, 2, 3), workers=_workers())


def _box_radial(values, sh, hw, nsh) -> np.ndarray:
    """(n, nsh) Hermitian-weighted sums over shells of a stack of half-grids (n, ...)."""
    n = values.shape[0]
    idx = (np.arange(n, dtype=np.int64)[:, None] * (nsh + 1)
           + np.minimum(sh, nsh).ravel()[None, :]).ravel()
    w = (values * hw).reshape(n, -1).ravel()
    return np.bincount(idx, weights=w, minlength=n * (nsh + 1)).reshape(n, nsh + 1)[:, :nsh]
