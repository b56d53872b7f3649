"""Subtomograms from the tilt series (``subtomo.extract`` path b, after EMAN2's
``e2spt_extract``): cut a 2D sub-tilt around the projection of each 3D point in every tilt
image, phase-flip it with the point's own (depth-dependent) defocus, and Fourier-reconstruct
the subtomogram from its sub-tilts. Pure ndarray kernels.

Conventions
-----------
* Arrays (z, y, x); points (x, y, z) in tilt-series pixels from the tomogram centre; the centre
  of a box of side n is the pixel/voxel ``n // 2`` (docs/conventions.md).
* Tilt i has the pose matrix ``A_i`` (:func:`emforge.numerics.tilt.tilt_series_matrices`, map
  frame -> image frame): point r projects to ``(A_i r)[:2] + (nx // 2, ny // 2) + shift_i``
  (x, y pixels) in image i, and its defocus there is ``defocus_i - (A_i r)_z * pixel_size``
  (:func:`emforge.numerics.tilt.tilt_defocus`).
* Each sub-tilt is cut around the nearest pixel and Fourier-shifted by the sub-pixel remainder,
  so the point sits exactly at ``pad // 2``; outside the image it is zero-padded.
"""

from __future__ import annotations

import numpy as np

from emforge.numerics.ctf import ctf_2d, phase_flip_2d
from emforge.numerics.reconstruction import reconstruct_fourier
from emforge.numerics.tilt import tilt_defocus

__all__ = ["select_tilts", "subtilt_positions", "cut_subtilts", "reconstruct_subtomograms"]


def _window(image: np.ndarray, start, size: int) -> np.ndarray:
    """Zero-padded square crop of side ``size`` starting at integer (y, x) ``start``."""
    out = np.zeros((size, size), np.float32)
    src, dst = [], []
    for s0, n in zip(start, image.shape, strict=True):
        a, b = max(s0, 0), min(s0 + size, n)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - s0, b - s0))
    out[tuple(dst)] = image[tuple(src)]
    return out


def _fourier_shift(a: np.ndarray, shift) -> np.ndarray:
    """Shift a real 2D array by ``shift`` (y, x) pixels (periodic, sub-pixel)."""
    ky = np.fft.fftfreq(a.shape[0])[:, None]
    kx = np.fft.rfftfreq(a.shape[1])[None, :]
    ramp = np.exp(-2j * np.pi * (shift[0] * ky + shift[1] * kx))
    return np.fft.irfft2(np.fft.rfft2(a) * ramp, s=a.shape).astype(np.float32)


def select_tilts(tilt_angles, *, maxtilt: float = 100.0, tltkeep: float = 1.0, loss=None):
    """Tilts to use (EMAN2's ``--maxtilt``, ``--tltkeep``): drop ``|tilt| > maxtilt``, then keep
    the fraction ``tltkeep`` in (0, 1] of the rest, best ranked by ``loss`` (T,) (lower is
    better; EMAN2's alignment loss) or by lowest ``|tilt|`` without it. Returns (T,) bool."""
    t = np.asarray(tilt_angles, np.float64).reshape(-1)
    if not 0 < tltkeep <= 1:
        raise ValueError(f"tltkeep: must be in (0, 1], got {tltkeep}")
    keep = np.abs(t) <= maxtilt
    rank = np.abs(t) if loss is None else np.asarray(loss, np.float64).reshape(-1)
    if rank.shape != t.shape:
        raise ValueError(f"loss: need {t.size} values, got {rank.size}")
    idx = np.nonzero(keep)[0]
    n = int(np.ceil(tltkeep * idx.size - 1e-9))
    out = np.zeros(t.size, bool)
    out[idx[np.argsort(rank[idx], kind="stable")[:n]]] = True
    return out


def subtilt_positions(positions, matrices, *, image_shape, shifts=None) -> np.ndarray:
    """(P, T, 2) image positions (x, y) in pixels of points (P, 3) (module notes)."""
    r = np.atleast_2d(np.asarray(positions, np.float64))
    a = np.asarray(matrices, np.float64)
    ny, nx = (int(v) for v in image_shape)
    xy = np.einsum("tij,pj->pti", a[:, :2, :], r) + np.array([nx // 2, ny // 2])
    if shifts is not None:
        xy = xy + np.asarray(shifts, np.float64).reshape(1, -1, 2)
    return xy


def cut_subtilts(tilt_series, positions, matrices, *, box: int, padtwod: float = 2.0,
                 shifts=None, pixel_size: float = 1.0, defocus=None, defocus_v=None,
                 defocus_angle=0.0, voltage: float = 300.0, cs: float = 2.7,
                 amplitude_contrast: float = 0.1, invert: bool = False):  # fmt: skip
    """Cut the sub-tilts of 3D points from an aligned tilt series.

    Parameters
    ----------
    tilt_series : ndarray (T, ny, nx) real
    positions : array (P, 3), (x, y, z) tilt-series pixels from the tomogram centre
    matrices : array (T, 3, 3), tilt poses A_i
    box : int, final subtomogram side; sub-tilts are ``pad = 2 * ceil(box * padtwod / 2)``
    padtwod : float >= 1, EMAN2's ``--padtwod`` (default 2)
    shifts : array (T, 2), optional, per-tilt image shifts (x, y) in pixels
    pixel_size : float, Angstrom per pixel
    defocus : array (T,), optional, defocus U (Angstrom, underfocus positive) of each tilt at
        the tomogram centre; when given each sub-tilt is phase-flipped with the point's own
        defocus ``defocus_i - (A_i r)_z * pixel_size``
    defocus_v, defocus_angle, voltage, cs, amplitude_contrast : the tilts' CTF (defocus_v
        defaults to defocus), as :func:`emforge.numerics.ctf.ctf_2d`
    invert : bool, multiply by -1 (dark protein to white)

    Returns
    -------
    images : ndarray (P, T, pad, pad) float32, the point at pixel ``pad // 2``
    valid : ndarray (P, T) bool, the point projects inside image t
    """
    ts = np.asarray(tilt_series, np.float32)
    if ts.ndim != 3:
        raise ValueError(f"tilt_series: need (T, ny, nx), got shape {ts.shape}")
    a = np.asarray(matrices, np.float64)
    if a.shape != (ts.shape[0], 3, 3):
        raise ValueError(f"matrices: need shape ({ts.shape[0]}, 3, 3), got {a.shape}")
    if not padtwod >= 1:
        raise ValueError(f"padtwod: must be >= 1, got {padtwod}")
    r = np.atleast_2d(np.asarray(positions, np.float64))
    pad = 2 * int(np.ceil(int(box) * float(padtwod) / 2))
    xy = subtilt_positions(r, a, image_shape=ts.shape[1:], shifts=shifts)
    ny, nx = ts.shape[1:]
    valid = (xy[..., 0] >= -0.5) & (xy[..., 0] < nx - 0.5)
    valid &= (xy[..., 1] >= -0.5) & (xy[..., 1] < ny - 0.5)
    out = np.zeros((r.shape[0], ts.shape[0], pad, pad), np.float32)
    if defocus is not None:
        du = tilt_defocus(defocus, a, r, pixel_size=pixel_size)  # (T, P)
        dv = du if defocus_v is None else tilt_defocus(defocus_v, a, r, pixel_size=pixel_size)
    for p in range(r.shape[0]):
        for t in np.nonzero(valid[p])[0]:
            c = xy[p, t, ::-1]  # (y, x)
            ic = np.round(c).astype(int)
            img = _window(ts[t], ic - pad // 2, pad)
            frac = c - ic
            out[p, t] = _fourier_shift(img, -frac) if np.any(np.abs(frac) > 1e-6) else img
        if defocus is not None:
            ctf = ctf_2d((pad, pad), pixel_size=pixel_size, defocus_u=du[:, p],
                         defocus_v=dv[:, p], defocus_angle=defocus_angle, voltage=voltage,
                         cs=cs, amplitude_contrast=amplitude_contrast)  # fmt: skip
            out[p] = phase_flip_2d(out[p], ctf)
    if invert:
        out *= -1
    return out, valid


def reconstruct_subtomograms(subtilts, matrices, *, box: int, valid=None,
                             min_fraction: float = 0.2, threads=None) -> np.ndarray:  # fmt: skip
    """Fourier-reconstruct each point's subtomogram from its sub-tilts (P, T, pad, pad) with
    the tilt poses (T, 3, 3); keep the central ``box`` cube. Points with fewer ``valid``
    (P, T) tilts than ``min_fraction`` (EMAN2: 1/5) get an all-zero volume.
    Returns (P, box, box, box) float32, the point at voxel ``box // 2``."""
    st = np.asarray(subtilts, np.float32)
    p_count, t_count, pad = st.shape[0], st.shape[1], st.shape[-1]
    a = np.asarray(matrices, np.float64)
    ok = np.ones((p_count, t_count), bool) if valid is None else np.asarray(valid, bool)
    box = int(box)
    s = pad // 2 - box // 2
    out = np.zeros((p_count, box, box, box), np.float32)
    for p in range(p_count):
        use = np.nonzero(ok[p])[0]
        if use.size < max(1, min_fraction * t_count):
            continue
        rec = reconstruct_fourier(st[p, use], a[use], subset=np.ones(use.size, int),
                                  threads=threads)  # fmt: skip
        out[p] = rec.volume[s : s + box, s : s + box, s : s + box]
    return out
