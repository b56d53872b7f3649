"""Cropping subtomograms out of a tomogram at float positions (``subtomo.extract``, path a).

Geometry: a point at float voxel position ``p = (x, y, z)`` (voxel ``(k, j, i)`` of the
tomogram is at ``x = i, y = j, z = k``) ends at voxel ``(m // 2, m // 2, m // 2)`` of the
``m``-voxel output box. The box is cut around the nearest voxel ``c = floor(p + 0.5)`` and the
residual ``p - c`` (in [-0.5, 0.5)) is removed by a Fourier phase shift, so the marker sits on
the box centre to sub-voxel precision. ``shrink`` Fourier-crops the box (``m = box // shrink``)
in the same transform, keeping the centre voxel on the centre voxel (for an even ``m`` its
Nyquist planes are zeroed, as they have no symmetric partner). Voxels whose position
falls outside the tomogram are 0 (zero padding at the edges), also after ``invert`` and
``normalise``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["output_box", "crop_padded", "extract_one", "extract_subtomograms"]


def output_box(box: int, shrink: int = 1) -> int:
    """Edge of the output box: ``box // shrink`` voxels."""
    return int(box) // max(1, int(shrink))


def crop_padded(volume: np.ndarray, start_zyx: Sequence[int], box: int) -> np.ndarray:
    """The ``box``³ block of ``volume`` (z, y, x) whose first voxel is ``start_zyx`` (ints,
    possibly negative or past the end); voxels outside the volume are 0. float32."""
    out = np.zeros((box, box, box), np.float32)
    src, dst = [], []
    for s, n in zip(start_zyx, volume.shape, strict=True):
        a, b = max(0, s), min(n, s + box)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def _spectrum_index(m: int, n: int) -> np.ndarray:
    """Indices into an ``n``-point full FFT axis of the ``m`` lowest frequencies, in the order of
    an ``m``-point FFT axis (``fftfreq(m) · m`` taken modulo ``n``)."""
    return np.rint(np.fft.fftfreq(m) * m).astype(np.int64) % n


def extract_one(
    volume: np.ndarray,
    position_xyz: Sequence[float],
    box: int,
    *,
    shrink: int = 1,
    invert: bool = False,
    normalise: bool = False,
) -> np.ndarray:
    """One subtomogram.

    Parameters
    ----------
    volume : ndarray (z, y, x)
        The tomogram, any real dtype.
    position_xyz : (3,) float
        Marker position (x, y, z) in voxels of ``volume``.
    box : int
        Edge of the cropped cube in voxels of ``volume`` (>= 2).
    shrink : int
        Fourier-crop factor (>= 1); the output edge is ``box // shrink``, its voxel
        ``box / (box // shrink)`` times the tomogram's.
    invert : bool
        Multiply by -1 (dark protein to white).
    normalise : bool
        Zero mean, unit standard deviation over the voxels inside the tomogram.

    Returns
    -------
    ndarray float32 (m, m, m), the marker at voxel (m // 2, m // 2, m // 2).
    """
    from emforge.numerics import irfftn, rfftn

    box = int(box)
    m = output_box(box, shrink)
    p = np.asarray(position_xyz, dtype=np.float64)[::-1]  # (z, y, x)
    c = np.floor(p + 0.5).astype(np.int64)
    frac = p - c
    block = crop_padded(volume, c - box // 2, box)
    if m == box and not frac.any():
        out = block
    else:
        spec = rfftn(np.fft.ifftshift(block))  # the box centre box // 2 to index 0
        kz = np.fft.fftfreq(box)[:, None, None]
        ky = np.fft.fftfreq(box)[None, :, None]
        kx = np.fft.rfftfreq(box)[None, None, :]
        # out(r) = in(r + frac): multiply by exp(+2πi k·frac), k in cycles per voxel
        phase = np.exp(2j * np.pi * (kz * frac[0] + ky * frac[1] + kx * frac[2]))
        spec = spec * phase.astype(np.complex64)
        if m != box:
            iz = _spectrum_index(m, box)
            spec = spec[iz][:, iz][:, :, : m // 2 + 1]
            spec = spec * np.float32((m / box) ** 3)
            if m % 2 == 0:  # the Nyquist planes of the small box have no symmetric partner
                spec[m // 2] = 0
                spec[:, m // 2] = 0
                spec[:, :, m // 2] = 0
        out = np.fft.fftshift(irfftn(spec, shape=(m, m, m))).astype(np.float32)
    if invert:
        out = -out
    step = box / m
    inside = np.ones((m, m, m), bool)
    for axis in range(3):
        src = p[axis] + (np.arange(m) - m // 2) * step
        ok = (src >= -0.5) & (src <= volume.shape[axis] - 0.5)
        shape = [1, 1, 1]
        shape[axis] = m
        inside &= ok.reshape(shape)
    out = np.where(inside, out, np.float32(0))
    if normalise and inside.any():
        vals = out[inside].astype(np.float64)
        sd = vals.std()
        out = np.where(inside, (out - vals.mean()) / (sd if sd > 0 else 1.0), 0.0)
    return np.ascontiguousarray(out, dtype=np.float32)


def extract_subtomograms(
    volume: np.ndarray,
    positions_xyz: np.ndarray,
    box: int,
    *,
    shrink: int = 1,
    invert: bool = False,
    normalise: bool = False,
) -> np.ndarray:
    """:func:`extract_one` for every row of ``positions_xyz`` (n, 3) (x, y, z voxels).
    Returns float32 (n, m, m, m), ``m = box // shrink``."""
    pos = np.asarray(positions_xyz, dtype=np.float64).reshape(-1, 3)
    m = output_box(box, shrink)
    out = np.empty((len(pos), m, m, m), np.float32)
    for i, q in enumerate(pos):
        out[i] = extract_one(volume, q, box, shrink=shrink, invert=invert, normalise=normalise)
    return out
