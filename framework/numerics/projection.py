"""Projection of a 3D map into 2D images: Fourier-slice (fast) and real-space (reference).

Conventions
-----------
* Maps are cubic float32 arrays (z, y, x) of side n; images are (N, n, n). The centre of both
  is index ``n // 2`` on every axis (docs/conventions.md).
* Rotations are ``(N, 3, 3)`` matrices A (RELION's ``Euler_angles2matrix``): A takes map
  coordinates (x, y, z) into the particle frame, and image ``i`` is the integral along z of the
  map sampled at ``A_i^T (x, y, z)^T`` (coordinates in pixels from the centre). Any proper
  rotation matrix works: ``scipy.spatial.transform.Rotation.from_euler("ZYZ", (rot, tilt,
  psi), degrees=True).as_matrix().T`` is A for RELION's angles.
* Shifts are ``(N, 2)`` (shift_x, shift_y) in Angstrom = ``rlnOriginXAngst/YAngst``: the
  projected particle centre lands at ``n//2 - shift / pixel_size`` in the image.
* The line integral is a sum over voxels (unit step): a map of ones of side L projects to L.
* Fourier-slice projection pads the map ``pad`` times, divides it by the trilinear gridding
  function (sinc^2 per axis of the padded box) first, samples the central slice trilinearly
  and keeps the frequencies inside the Nyquist circle (``|k| <= n/2`` pixels); shifts are
  phase ramps. All FFTs go through :mod:`emforge.numerics.fft` (cached plans).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from . import fft as _fft

__all__ = [
    "PreparedVolume",
    "prepare_volume",
    "project_fourier",
    "project_real_space",
    "phase_ramps",
    "gridding_function",
]


@dataclass(frozen=True)
class PreparedVolume:
    """A map ready for repeated slicing: the padded, gridding-corrected, centred rfft.

    Attributes
    ----------
    spectrum : ndarray complex64 (M, M, M//2+1), DC at [0, 0, 0], map centre moved to index 0
    box : int, side n of the original map
    padded_box : int, M
    """

    spectrum: np.ndarray
    box: int
    padded_box: int


def _cubic(volume, name: str = "volume") -> np.ndarray:
    v = np.asarray(volume)
    if v.ndim != 3 or len(set(v.shape)) != 1 or v.shape[0] < 2:
        raise ValueError(f"{name}: must be a cubic 3D array (n, n, n), got shape {v.shape}")
    if np.iscomplexobj(v):
        raise ValueError(f"{name}: must be real")
    return v.astype(np.float32, copy=False)


def padded_size(n: int, pad: float) -> int:
    """Side of the padded box: ``round(pad * n)``, at least n."""
    if not np.isfinite(pad) or pad < 1.0:
        raise ValueError(f"pad: must be a number >= 1, got {pad}")
    return max(int(n), int(round(float(pad) * n)))


def gridding_function(n: int, m: int, ndim: int = 3) -> np.ndarray:
    """Real-space attenuation of trilinear interpolation on an m-grid, on an n-box:
    ``prod_axes sinc^2((i - n//2) / m)`` (float32, shape ``(n,) * ndim``)."""
    r = (np.arange(n) - n // 2) / float(m)
    g = (np.sinc(r) ** 2).astype(np.float32)
    out = g
    for _ in range(ndim - 1):
        out = np.multiply.outer(out, g)
    return out


def _centre_padded(a: np.ndarray, m: int) -> np.ndarray:
    """Zero-pad a cubic ``a`` (side n) to ``m`` keeping index n//2 at m//2, then roll that
    index to 0 (ready for an FFT whose origin is the map centre)."""
    n = a.shape[0]
    out = np.zeros((m, m, m), dtype=np.float32)
    idx = (np.arange(n) - n // 2) % m
    out[np.ix_(idx, idx, idx)] = a
    return out


def prepare_volume(volume, *, pad: float = 2.0, gridding_correction: bool = True):
    """Pad, gridding-correct and Fourier-transform a map once for many projections.

    Parameters
    ----------
    volume : ndarray (n, n, n), real
    pad : float
        Padding factor (>= 1); the padded box is ``round(pad * n)``. 2 is accurate to a
        correlation > 0.999 with real-space projections; 1 is faster and rougher.
    gridding_correction : bool
        Divide the map by :func:`gridding_function` before the FFT (undoes the real-space
        fall-off that trilinear interpolation of the slice causes).

    Returns
    -------
    PreparedVolume
    """
    v = _cubic(volume)
    n = v.shape[0]
    m = padded_size(n, pad)
    if gridding_correction:
        v = v / gridding_function(n, m)
    spec = _fft.rfftn(_centre_padded(v, m))
    return PreparedVolume(np.ascontiguousarray(spec, np.complex64), n, m)


def _rotations(rotations, n_expected: int | None = None) -> np.ndarray:
    r = np.asarray(rotations, dtype=np.float64)
    if r.ndim == 2 and r.shape == (3, 3):
        r = r[None]
    if r.ndim != 3 or r.shape[1:] != (3, 3):
        raise ValueError(f"rotations: must have shape (N, 3, 3), got {r.shape}")
    if n_expected is not None and r.shape[0] != n_expected:
        raise ValueError(f"rotations: {r.shape[0]} matrices for {n_expected} images")
    if not np.all(np.isfinite(r)):
        raise ValueError("rotations: contains NaN or infinite values")
    return np.ascontiguousarray(r)


def phase_ramps(n: int, count: int, shifts=None, *, pixel_size=None, sign: float = -1.0):
    """Per-axis phase factors that put the image centre at index n//2 and apply ``shifts``.

    The image translation is ``t = n//2 - shift / pixel_size`` pixels per axis, and the factor
    is ``exp(sign * 2 pi i k t / n)``: ``sign=-1`` translates a spectrum whose origin is at
    index 0 (projection), ``sign=+1`` undoes it (insertion).

    Returns
    -------
    phase_y : complex64 (count, n); phase_x : complex64 (count, n//2+1)
    """
    t = np.full((count, 2), float(n // 2))
    if shifts is not None:
        s = np.asarray(shifts, dtype=np.float64)
        if s.shape != (count, 2):
            raise ValueError(
                f"shifts: must have shape ({count}, 2) (shift_x, shift_y), got {s.shape}"
            )
        if pixel_size is None or not pixel_size > 0:
            raise ValueError("pixel_size: a positive pixel size (Angstrom) is needed with shifts")
        t = t - s / float(pixel_size)
    ky = np.fft.fftfreq(n) * n
    kx = np.arange(n // 2 + 1, dtype=np.float64)
    py = np.exp(sign * 2j * np.pi * t[:, 1:2] * ky[None] / n).astype(np.complex64)
    px = np.exp(sign * 2j * np.pi * t[:, 0:1] * kx[None] / n).astype(np.complex64)
    return py, px


def _ctf_array(ctf, count: int, n: int) -> np.ndarray:
    if ctf is None:
        return np.zeros((0, 0, 0), dtype=np.float32)
    c = np.asarray(ctf, dtype=np.float32)
    if c.ndim == 2:
        c = c[None]
    if c.ndim != 3 or c.shape[1:] != (n, n // 2 + 1) or c.shape[0] not in (1, count):
        raise ValueError(
            f"ctf: must be the rfft half-grid ({count} or 1, {n}, {n // 2 + 1}), got {c.shape}"
        )
    return np.ascontiguousarray(c)


def project_fourier(
    volume,
    rotations,
    *,
    shifts=None,
    pixel_size: float | None = None,
    pad: float = 2.0,
    ctf=None,
    max_radius: float | None = None,
    gridding_correction: bool = True,
    return_spectrum: bool = False,
    threads: int | None = None,
) -> np.ndarray:
    """Fourier-slice projections of a map into N orientations (batched, compiled).

    Parameters
    ----------
    volume : ndarray (n, n, n) real, or a :class:`PreparedVolume` (then ``pad`` and
        ``gridding_correction`` are those it was prepared with)
    rotations : ndarray (N, 3, 3)
        Matrices A of docs/conventions.md (map frame -> particle frame).
    shifts : ndarray (N, 2), optional
        (shift_x, shift_y) in Angstrom (``rlnOriginXAngst/YAngst``); needs ``pixel_size``.
    pixel_size : float, optional
        Angstrom per pixel (only used for the shifts).
    pad : float
        Padding factor of the map before its FFT (default 2).
    ctf : ndarray (N or 1, n, n//2+1), optional
        Multiplies each projection's spectrum (rfft half-grid, DC at [0, 0]).
    max_radius : float, optional
        Keep image frequencies with ``|k| <= max_radius`` pixels (default n/2, Nyquist).
    gridding_correction : bool
        See :func:`prepare_volume`.
    return_spectrum : bool
        Return the image spectra (N, n, n//2+1) complex64 instead of the images.
    threads : int, optional
        FFT threads (compiled-kernel threads follow ``NUMBA_NUM_THREADS``).

    Returns
    -------
    ndarray float32 (N, n, n): the projections (sums along z, unit voxel step).
    """
    from . import _slice_kernels as _k

    if not isinstance(volume, PreparedVolume):
        volume = prepare_volume(volume, pad=pad, gridding_correction=gridding_correction)
    n, m = volume.box, volume.padded_box
    rot = _rotations(rotations)
    count = rot.shape[0]
    py, px = phase_ramps(n, count, shifts, pixel_size=pixel_size, sign=-1.0)
    c = _ctf_array(ctf, count, n)
    r = n / 2.0 if max_radius is None else float(max_radius)
    if not r >= 0:
        raise ValueError(f"max_radius: must be >= 0, got {max_radius}")
    out = np.empty((count, n, n // 2 + 1), dtype=np.complex64)
    _k.extract_slices(volume.spectrum, rot, m / n, r * r, py, px, c, out)
    if return_spectrum:
        return out
    return _fft.irfftn(out, shape=(count, n, n), axes=(-2, -1), threads=threads)


def project_real_space(
    volume, rotations, *, shifts=None, pixel_size: float | None = None, order: int = 3
) -> np.ndarray:
    """Reference projector: rotate by interpolation and sum along z (slow; for tests).

    Each image pixel (x, y) sums ``volume`` at ``A^T (x, y, z)^T`` for z = -n//2 ... n - n//2 - 1
    (pixels from the centre), interpolated with ``scipy.ndimage.map_coordinates`` (spline
    ``order``, default 3: cubic; 1 is trilinear and blurs fine detail; zero outside). Shifts as in :func:`project_fourier` (applied to the image coordinates).

    Returns
    -------
    ndarray float32 (N, n, n)
    """
    v = _cubic(volume).astype(np.float64)
    n = v.shape[0]
    if order > 1:
        v = ndimage.spline_filter(v, order=order, mode="constant")
    rot = _rotations(rotations)
    t = np.zeros((rot.shape[0], 2))
    if shifts is not None:
        s = np.asarray(shifts, dtype=np.float64)
        if s.shape != t.shape:
            raise ValueError(f"shifts: must have shape ({t.shape[0]}, 2), got {s.shape}")
        if pixel_size is None or not pixel_size > 0:
            raise ValueError("pixel_size: a positive pixel size (Angstrom) is needed with shifts")
        t = s / float(pixel_size)
    g = np.arange(n, dtype=np.float64) - n // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    out = np.empty((rot.shape[0], n, n), dtype=np.float32)
    for i, a in enumerate(rot):
        # image pixel (x, y) shows the particle point (x + shift_x/px, y + shift_y/px)
        xs, ys = x + t[i, 0], y + t[i, 1]
        pts = np.tensordot(a.T, np.stack([xs, ys, z]), axes=1)  # map (x, y, z) per pixel
        coords = np.stack([pts[2], pts[1], pts[0]]) + n // 2
        vals = ndimage.map_coordinates(
            v, coords, order=order, mode="constant", cval=0.0, prefilter=False
        )
        out[i] = vals.sum(axis=0)
    return out
