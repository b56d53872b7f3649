"""Tilt-series geometry for subtomograms: per-tilt defocus and CTFs, missing-wedge masks.

Conventions
-----------
* Tomogram points r = (x, y, z) in pixels from the tomogram (or subtomogram) centre; +z is
  the beam direction at tilt 0, pointing towards the electron source.
* A tilt series about the y axis (the default, as IMOD/EMAN2/RELION with the tilt axis along
  y) has the pose matrices ``A_i = R_y(tilt_i)`` of docs/conventions.md, i.e. RELION angles
  (rot, tilt, psi) = (0, tilt_i, 0): image i is the projection of the tomogram along the third
  row of A_i, d_i = (sin t_i, 0, cos t_i). About the x axis: ``A_i = R_x(tilt_i)`` with
  R_x(a) = [[1, 0, 0], [0, cos a, sin a], [0, -sin a, cos a]], d_i = (0, -sin t_i, cos t_i).
* Per-tilt defocus (EMAN2 ``e2spt_extract``): after tilting, a point's height along the beam
  is ``z' = (A_i r)_z = d_i . r``; a point higher up (z' > 0, nearer the source) is that much
  less underfocused: ``defocus(r, i) = defocus_i - z' * pixel_size`` (Angstrom; underfocus
  positive, like ``rlnDefocusU``). For the y axis: ``z' = x sin t + z cos t``.
* The missing wedge: tilt i measures the central plane of the 3D Fourier transform normal to
  d_i (the Fourier-slice theorem). A frequency k = (kx, ky, kz) lies in the plane of tilt
  ``t(k) = atan(-kz / kx)`` (y axis; ``atan(kz / ky)`` for the x axis), folded into
  (-90, 90]; it is measured iff ``tilt_min <= t(k) <= tilt_max``. Frequencies on the tilt
  axis (kx = kz = 0) lie in every plane and are kept.
"""

from __future__ import annotations

import numpy as np

from . import fft as _fft
from .ctf import ctf_2d

__all__ = ["tilt_series_matrices", "tilt_defocus", "tilt_ctf_2d", "missing_wedge_mask"]


def _axis(axis: str) -> str:
    if axis not in ("x", "y"):
        raise ValueError(f"axis: must be 'x' or 'y', got {axis!r}")
    return axis


def tilt_series_matrices(tilt_angles, *, axis: str = "y") -> np.ndarray:
    """Pose matrices (T, 3, 3) of a single-axis tilt series, tilts in degrees (module notes)."""
    t = np.radians(np.atleast_1d(np.asarray(tilt_angles, dtype=np.float64)))
    if t.ndim != 1 or not np.all(np.isfinite(t)):
        raise ValueError("tilt_angles: need a 1D array of finite angles in degrees")
    c, s = np.cos(t), np.sin(t)
    m = np.zeros((t.size, 3, 3))
    if _axis(axis) == "y":
        m[:, 0, 0], m[:, 0, 2], m[:, 1, 1], m[:, 2, 0], m[:, 2, 2] = c, -s, 1, s, c
    else:
        m[:, 0, 0], m[:, 1, 1], m[:, 1, 2], m[:, 2, 1], m[:, 2, 2] = 1, c, s, -s, c
    return m


def tilt_defocus(defocus, matrices, positions, *, pixel_size: float) -> np.ndarray:
    """Defocus of points of a tomogram in each tilt image.

    Parameters
    ----------
    defocus : array (T,)
        Defocus of each tilt at the tilt axis / tomogram centre, Angstrom.
    matrices : array (T, 3, 3)
        Pose of each tilt (:func:`tilt_series_matrices` or refined poses).
    positions : array (P, 3)
        Points (x, y, z) in pixels from the centre.
    pixel_size : float, Angstrom

    Returns
    -------
    ndarray (T, P) float64: ``defocus_i - (A_i r)_z * pixel_size``.
    """
    d = np.asarray(defocus, np.float64).reshape(-1)
    a = np.asarray(matrices, np.float64)
    r = np.atleast_2d(np.asarray(positions, np.float64))
    if a.shape != (d.size, 3, 3):
        raise ValueError(f"matrices: need shape ({d.size}, 3, 3), got {a.shape}")
    if r.ndim != 2 or r.shape[1] != 3:
        raise ValueError(f"positions: need shape (P, 3), got {r.shape}")
    if not pixel_size > 0:
        raise ValueError(f"pixel_size: must be > 0, got {pixel_size}")
    height = r @ a[:, 2, :].T  # (P, T)
    return d[:, None] - height.T * float(pixel_size)


def tilt_ctf_2d(shape, *, pixel_size: float, defocus_u, defocus_v, matrices, position,
                rfft: bool = True, **ctf) -> np.ndarray:  # fmt: skip
    """CTF images (T, *grid) of the tilts of one point: U and V of each tilt (T,) shifted by
    the point's height (:func:`tilt_defocus`); ``ctf`` options go to :func:`.ctf_2d`."""
    u = np.asarray(defocus_u, np.float64).reshape(-1)
    v = np.asarray(defocus_v, np.float64).reshape(-1)
    dz = tilt_defocus(np.zeros(u.size), matrices, np.reshape(position, (1, 3)),
                      pixel_size=pixel_size)[:, 0]  # fmt: skip
    return ctf_2d(shape, pixel_size=pixel_size, rfft=rfft, defocus_u=u + dz, defocus_v=v + dz,
                  **ctf)  # fmt: skip


def missing_wedge_mask(shape, *, tilt_min: float, tilt_max: float, axis: str = "y",
                       rfft: bool = True) -> np.ndarray:  # fmt: skip
    """1 on the Fourier coefficients a single-axis tilt series measures, 0 in the missing wedge.

    Parameters
    ----------
    shape : tuple (z, y, x)
        Real-space box.
    tilt_min, tilt_max : float
        Tilt range in degrees, -90 <= tilt_min <= tilt_max <= 90.
    axis : 'y' or 'x'
        Tilt axis (module notes).
    rfft : bool
        The unshifted rfft half grid (z, y, x//2+1) (default) or the full grid (z, y, x).

    Returns
    -------
    ndarray float32 of the grid's shape.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"shape: need a 3D box (z, y, x), got {shape}")
    if not -90.0 <= tilt_min <= tilt_max <= 90.0:
        raise ValueError(
            f"tilt_min, tilt_max: need -90 <= min <= max <= 90, got {tilt_min}, {tilt_max}"
        )
    kz = np.fft.fftfreq(shape[0])[:, None, None]
    ky = np.fft.fftfreq(shape[1])[None, :, None]
    kx = (np.fft.rfftfreq(shape[2]) if rfft else np.fft.fftfreq(shape[2]))[None, None, :]
    grid = _fft.rfft_shape(shape) if rfft else shape
    u, w = (kx, -kz) if _axis(axis) == "y" else (ky, kz)
    u, w = np.broadcast_to(u, grid), np.broadcast_to(w, grid)
    t = np.degrees(np.arctan2(w, u))  # plane tilt, folded into (-90, 90]
    t = np.where(t > 90, t - 180, np.where(t <= -90, t + 180, t))
    on_axis = (u == 0) & (w == 0)
    return (on_axis | ((t >= tilt_min - 1e-9) & (t <= tilt_max + 1e-9))).astype(np.float32)
