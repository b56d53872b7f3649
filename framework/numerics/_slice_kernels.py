"""Compiled (numba) kernels of the Fourier-slice projector and the Fourier inserter.

Private module: the public, checked entry points are :mod:`.projection` and
:mod:`.reconstruction`. Every kernel works on a cubic rfft half-grid ``(M, M, M//2+1)`` of a
padded volume whose real-space centre (index ``M//2``) has been moved to index 0, so that
frequency ``(kx, ky, kz)`` in padded-grid pixels sits at ``[kz % M, ky % M, kx]`` for
``kx >= 0``; points with ``kx < 0`` are read and written through Friedel symmetry
(``F(-k) = conj(F(k))``).

Rotations are ``(N, 3, 3)`` float64 matrices A of docs/conventions.md: image frequency
``(kx, ky)`` lies at ``scale * A^T (kx, ky, 0)^T`` in the volume, ``scale = M / n`` (n the
image box). Image spectra are rfft half-grids ``(N, n, n//2+1)`` (DC at ``[0, 0]``).

Compiled with ``cache=True``: the machine code is kept between processes in numba's cache
(see :func:`emforge.numerics._numba_cache.configure`, imported first).
"""

from __future__ import annotations

import math

import numpy as np

from . import _numba_cache

_numba_cache.configure()

import numba  # noqa: E402  (the cache location must be set before numba is imported)
from numba import njit, prange  # noqa: E402

__all__ = ["extract_slices", "insert_slices", "insert_slices_split", "num_threads"]


def num_threads() -> int:
    """Threads numba's parallel kernels use (``NUMBA_NUM_THREADS``, default all cores)."""
    return int(numba.get_num_threads())


@njit(cache=True, inline="always")
def _signed(i, n):
    return i if 2 * i < n else i - n


@njit(cache=True, inline="always")
def _wrap(i, m):
    """Index ``i`` (in ``[-m, 2m)``) wrapped into ``[0, m)`` without a division."""
    if i < 0:
        return i + m
    if i >= m:
        return i - m
    return i


@njit(cache=True, inline="always")
def _sample(vol, px, py, pz):
    """Trilinear value of the half-grid ``vol`` at padded-grid frequency (px, py, pz)."""
    conj = px < 0.0
    if conj:
        px, py, pz = -px, -py, -pz
    m0, m1, m2 = vol.shape
    fx0, fy0, fz0 = math.floor(px), math.floor(py), math.floor(pz)
    fx, fy, fz = np.float32(px - fx0), np.float32(py - fy0), np.float32(pz - fz0)
    x0 = int(fx0)
    x1 = min(x0 + 1, m2 - 1)
    y0 = _wrap(int(fy0), m1)
    z0 = _wrap(int(fz0), m0)
    y1 = _wrap(y0 + 1, m1)
    z1 = _wrap(z0 + 1, m0)
    gx = np.float32(1.0) - fx
    c00 = vol[z0, y0, x0] * gx + vol[z0, y0, x1] * fx
    c01 = vol[z0, y1, x0] * gx + vol[z0, y1, x1] * fx
    c10 = vol[z1, y0, x0] * gx + vol[z1, y0, x1] * fx
    c11 = vol[z1, y1, x0] * gx + vol[z1, y1, x1] * fx
    gy = np.float32(1.0) - fy
    v = (c00 * gy + c01 * fy) * (np.float32(1.0) - fz) + (c10 * gy + c11 * fy) * fz
    return np.conj(v) if conj else v


@njit(parallel=True, cache=True)
def extract_slices(vol, rot, scale, r2max, phase_y, phase_x, ctf, out):
    """Central slices of ``vol`` into ``out`` (N, n, n//2+1), times the phase ramps and CTF.

    ``phase_y`` (N, n), ``phase_x`` (N, n//2+1) complex64; ``ctf`` (N or 1, n, n//2+1) or an
    empty (0, 0, 0) array for none. Pixels with ``kx^2 + ky^2 > r2max`` are set to 0.
    """
    nimg, ny, nxh = out.shape
    has_ctf = ctf.shape[0] > 0
    stride = 1 if ctf.shape[0] > 1 else 0
    for n in prange(nimg):
        ax, ay, az = scale * rot[n, 0, 0], scale * rot[n, 0, 1], scale * rot[n, 0, 2]
        bx, by, bz = scale * rot[n, 1, 0], scale * rot[n, 1, 1], scale * rot[n, 1, 2]
        ci = n * stride
        for iy in range(ny):
            ky = _signed(iy, ny)
            py_ = phase_y[n, iy]
            for ix in range(nxh):
                if ix * ix + ky * ky > r2max:
                    out[n, iy, ix] = 0
                    continue
                v = _sample(vol, ax * ix + bx * ky, ay * ix + by * ky, az * ix + bz * ky)
                v = v * (py_ * phase_x[n, ix])
                if has_ctf:
                    v = v * ctf[ci, iy, ix]
                out[n, iy, ix] = v
    return out


@njit(cache=True, inline="always")
def _add(grid, h, z, y, x, v, w, owner, nown):
    """Add (v, w) at voxel (z, y, x) of half ``h`` if this thread owns plane z."""
    if z % nown == owner:
        grid[h, z, y, x, 0] += v.real
        grid[h, z, y, x, 1] += v.imag
        grid[h, z, y, x, 2] += w


@njit(cache=True, inline="always")
def _acc(grid, h, z, y, x, vr, vi, w, g):
    grid[h, z, y, x, 0] += vr * g
    grid[h, z, y, x, 1] += vi * g
    grid[h, z, y, x, 2] += w * g


@njit(cache=True, inline="always")
def _splat_plane(grid, h, z, y0, y1, x0, x1, gz, fy, fx, v, w):
    """Trilinear share ``gz`` of (v, w) into the four voxels of plane z."""
    gy = np.float32(1.0) - fy
    gx = np.float32(1.0) - fx
    vr, vi = v.real, v.imag
    _acc(grid, h, z, y0, x0, vr, vi, w, gz * gy * gx)
    _acc(grid, h, z, y1, x0, vr, vi, w, gz * fy * gx)
    if x1 >= 0:
        _acc(grid, h, z, y0, x1, vr, vi, w, gz * gy * fx)
        _acc(grid, h, z, y1, x1, vr, vi, w, gz * fy * fx)


@njit(cache=True, inline="always")
def _splat_trilinear(grid, h, px, py, pz, v, w, owner, nown):
    if px < 0.0:
        px, py, pz, v = -px, -py, -pz, np.conj(v)
    m0, m1, m2 = grid.shape[1], grid.shape[2], grid.shape[3]
    fx0, fy0, fz0 = math.floor(px), math.floor(py), math.floor(pz)
    fx, fy, fz = np.float32(px - fx0), np.float32(py - fy0), np.float32(pz - fz0)
    x0 = int(fx0)
    x1 = x0 + 1 if x0 + 1 < m2 else -1
    y0 = _wrap(int(fy0), m1)
    z0 = _wrap(int(fz0), m0)
    y1 = _wrap(y0 + 1, m1)
    z1 = _wrap(z0 + 1, m0)
    if z0 % nown == owner:
        _splat_plane(grid, h, z0, y0, y1, x0, x1, np.float32(1.0) - fz, fy, fx, v, w)
    if z1 % nown == owner:
        _splat_plane(grid, h, z1, y0, y1, x0, x1, fz, fy, fx, v, w)


@njit(cache=True, inline="always")
def _splat_gauss(grid, h, px, py, pz, v, w, owner, nown, gx, gy):
    """EMAN2's Gaussian splat: 6x6x6 voxels, g = exp(-hk d^2), hk = 1/(|k|^2/4000 + 0.15)
    clamped at >= 0.1 (|k|, d in padded-grid pixels); voxels with x < 0 go to their Friedel
    mate. ``gx``, ``gy``: scratch arrays of 6 float32."""
    m0, m1, m2 = grid.shape[1], grid.shape[2], grid.shape[3]
    hk = 1.0 / ((px * px + py * py + pz * pz) / 4000.0 + 0.15)
    if hk < 0.1:
        hk = 0.1
    x0 = int(math.floor(px)) - 2
    y0 = int(math.floor(py)) - 2
    z0 = int(math.floor(pz)) - 2
    for i in range(6):  # the Gaussian is separable: 18 exponentials instead of 216
        gx[i] = math.exp(-hk * (x0 + i - px) ** 2)
        gy[i] = math.exp(-hk * (y0 + i - py) ** 2)
    vc = np.conj(v)
    for iz in range(z0, z0 + 6):
        zd, zm = iz % m0, (-iz) % m0
        if zd % nown != owner and zm % nown != owner:
            continue
        gz = np.float32(math.exp(-hk * (iz - pz) ** 2))
        for j in range(6):
            iy = y0 + j
            gzy = gz * gy[j]
            yd, ym = iy % m1, (-iy) % m1
            for i in range(6):
                ix = x0 + i
                g = gzy * gx[i]
                if ix >= 0:
                    if ix < m2:
                        _add(grid, h, zd, yd, ix, v * g, w * g, owner, nown)
                elif -ix < m2:
                    _add(grid, h, zm, ym, -ix, vc * g, w * g, owner, nown)


@njit(cache=True)
def _insert_image(grid, n, img, rot, sym, scale, r2max, phase_y, phase_x, ctf, weights, half,
                  gauss, premult, owner, nown, a, gx, gy):  # fmt: skip
    """Insert image ``n`` (every symmetry copy) into ``grid``, writing only the z planes with
    ``z % nown == owner``; ``a`` (3, 3), ``gx``/``gy`` (6,) are scratch arrays."""
    w0 = weights[n]
    if w0 == 0.0:
        return
    ny, nxh = img.shape[1], img.shape[2]
    has_ctf = ctf.shape[0] > 0
    ci = n if ctf.shape[0] > 1 else 0
    h = half[n]
    for s in range(sym.shape[0]):
        for i in range(3):
            for j in range(3):
                a[i, j] = (
                    rot[n, i, 0] * sym[s, j, 0]
                    + rot[n, i, 1] * sym[s, j, 1]
                    + rot[n, i, 2] * sym[s, j, 2]
                )
        ax, ay, az = scale * a[0, 0], scale * a[0, 1], scale * a[0, 2]
        bx, by, bz = scale * a[1, 0], scale * a[1, 1], scale * a[1, 2]
        for iy in range(ny):
            ky = _signed(iy, ny)
            for ix in range(nxh):
                if ix * ix + ky * ky > r2max or (ix == 0 and ky < 0):
                    continue
                c = ctf[ci, iy, ix] if has_ctf else np.float32(1.0)
                wc = np.float32(w0 * c)
                v = img[n, iy, ix] * (phase_y[n, iy] * phase_x[n, ix])
                v = v * (np.float32(w0) if premult else wc)
                w = wc * c
                px = ax * ix + bx * ky
                py = ay * ix + by * ky
                pz = az * ix + bz * ky
                if gauss:
                    _splat_gauss(grid, h, px, py, pz, v, w, owner, nown, gx, gy)
                else:
                    _splat_trilinear(grid, h, px, py, pz, v, w, owner, nown)


@njit(parallel=True, cache=True)
def insert_slices(
    img, rot, sym, scale, r2max, phase_y, phase_x, ctf, weights, half, gauss, premult, nown, grid
):
    """Insert image spectra ``img`` (N, n, n//2+1) into ``grid`` (2, M, M, M//2+1, 3) float32
    (real part, imaginary part, weight interleaved, so that one voxel is one memory access),
    one copy per matrix of ``sym`` (S, 3, 3): pose A @ S^T.

    Each pixel adds ``weights[n] * ctf * F`` (``weights[n] * F`` when ``premult``: images that
    already carry their CTF) to the data and ``weights[n] * ctf^2`` to the weight of half
    ``half[n]`` (0 or 1), trilinearly (``gauss`` False) or with EMAN2's Gaussian
    kernel. ``phase_*`` are the (conjugate) centring/shift ramps. The kernel is race-free:
    thread t of T writes only the z planes with ``z % T == t`` (every thread walks every
    pixel; no extra memory). The x = 0 plane is not made Hermitian here (the caller does that
    once at the end). ``nown`` is the number of threads.
    """
    for owner in prange(nown):
        a = np.empty((3, 3))
        gx = np.empty(6, dtype=np.float32)
        gy = np.empty(6, dtype=np.float32)
        for n in range(img.shape[0]):
            _insert_image(grid, n, img, rot, sym, scale, r2max, phase_y, phase_x, ctf, weights,
                          half, gauss, premult, owner, nown, a, gx, gy)  # fmt: skip
    return grid


@njit(parallel=True, cache=True)
def insert_slices_split(
    img, rot, sym, scale, r2max, phase_y, phase_x, ctf, weights, half, gauss, premult, grid,
    extra,
):  # fmt: skip
    """As :func:`insert_slices`, with one private grid per thread: of T = 1 + len(extra)
    threads, thread t inserts images t, t + T, ... into ``grid`` (t = 0) or ``extra[t - 1]``
    (T - 1, 2, M, M, M//2+1, 3); the caller adds ``extra`` to ``grid``. Each pixel is walked
    once: faster than plane ownership, at T - 1 extra grids of memory."""
    nt = extra.shape[0] + 1
    for t in prange(nt):
        a = np.empty((3, 3))
        gx = np.empty(6, dtype=np.float32)
        gy = np.empty(6, dtype=np.float32)
        g = grid if t == 0 else extra[t - 1]
        for n in range(t, img.shape[0], nt):
            _insert_image(g, n, img, rot, sym, scale, r2max, phase_y, phase_x, ctf, weights,
                          half, gauss, premult, 0, 1, a, gx, gy)  # fmt: skip
    return grid
