"""Compiled (numba) inner loops of :func:`emforge.numerics.align2d.rotate_translate_flip`.

Private module. Spectra are rfft half-grids flattened to ``P = n * (n//2 + 1)`` values; the
reference spectra carry the checkerboard that puts the CCF's zero shift at ``n // 2``.
Compiled with ``cache=True``, ``nogil=True`` (the aligner's threads run them in parallel).
"""

from __future__ import annotations

import numpy as np

from . import _numba_cache

_numba_cache.configure()

from numba import njit, prange  # noqa: E402  (the cache location must be set before numba is imported)

__all__ = ["cross_products", "window_peaks", "csr_block_matvec", "transformed_ccc"]


@njit(cache=True, nogil=True)
def cross_products(a_spec, j, b_spec, out):
    """``out[(t * m + mi) * R + r] = b_spec[r] * (conj(g) if t == 0 else g)`` with
    ``g = a_spec[mi, j[mi, r]]``: the CCF spectra of turn t (0, 180 degrees), mirror mi.

    a_spec (m, nang, P) complex64, j (m, R) int64, b_spec (R, P) complex64, out (>= 2 m R, P)
    complex64 (any one layout of the P spectrum values, the same for all three).
    """
    m = a_spec.shape[0]
    nr = j.shape[1]
    p = b_spec.shape[1]
    for mi in range(m):
        for r in range(nr):
            g = a_spec[mi, j[mi, r]]
            b = b_spec[r]
            o0 = out[mi * nr + r]
            o1 = out[(m + mi) * nr + r]
            for k in range(p):
                gr, gi = g[k].real, g[k].imag
                br, bi = b[k].real, b[k].imag
                o0[k] = complex(br * gr + bi * gi, bi * gr - br * gi)
                o1[k] = complex(br * gr - bi * gi, br * gi + bi * gr)


@njit(cache=True, nogil=True)
def window_peaks(ccf, ms, x0, count, sy, sx, peak):
    """Integer peak of each CCF window, refined by a parabola along each axis.

    ccf (B, n, 2 ms + 3) float32, transposed: ``ccf[b, x, iy]``, iy are the y shifts
    -ms-1 .. ms+1, ``x = x0 + ms + 1`` is zero x shift. The peak is searched over shifts
    -ms..ms on both axes (on ties the first in (y, x) row-major order); the parabola offset
    is used only where the curvature is negative and is clipped to +-0.5. Results for the
    first ``count`` windows go to sy, sx, peak (float64).
    """
    w = 2 * ms + 1
    for b in range(count):
        c = ccf[b]
        best = -np.inf
        iy = 1
        ix = x0 + 1
        for x in range(x0 + 1, x0 + w + 1):
            row = c[x]
            for y in range(1, w + 1):
                v = row[y]
                if v > best or (v == best and y < iy):
                    best = v
                    iy = y
                    ix = x
        pk = c[ix, iy]
        oy = 0.0
        d = c[ix, iy - 1] - 2.0 * pk + c[ix, iy + 1]
        if d < 0:
            oy = 0.5 * (c[ix, iy - 1] - c[ix, iy + 1]) / d
            oy = min(0.5, max(-0.5, oy))
        ox = 0.0
        d = c[ix - 1, iy] - 2.0 * pk + c[ix + 1, iy]
        if d < 0:
            ox = 0.5 * (c[ix - 1, iy] - c[ix + 1, iy]) / d
            ox = min(0.5, max(-0.5, ox))
        sy[b] = iy - ms - 1 + oy
        sx[b] = ix - x0 - ms - 1 + ox
        peak[b] = pk


@njit(cache=True, nogil=True)
def csr_block_matvec(indptr, indices, data, x, blocks, size, out):
    """Rows ``[b * size, (b + 1) * size)`` for each b in ``blocks`` of a CSR matrix times the
    vector x: ``out[i] = A[blocks[i] * size : ...] @ x`` (float32 sums in the order of the
    stored entries, as scipy's ``csr_matvec``). out (len(blocks), size) float32."""
    for i in range(blocks.size):
        r0 = blocks[i] * size
        o = out[i]
        for r in range(size):
            s = np.float32(0.0)
            for k in range(indptr[r0 + r], indptr[r0 + r + 1]):
                s += data[k] * x[indices[k]]
            o[r] = s


@njit(cache=True, nogil=True, parallel=True)
def transformed_ccc(a, b, pairs, params, mirror, out):
    """Pearson correlation of ``transform_images_2d(a[p], angle, dx, dy, mirror[p])`` with
    ``b[p]``, p = pairs[i], for every (i, trial k), without making the transformed images.

    a, b (N, n, n) float32; pairs (I,) int64; params (I, K, 3) float64 rows (dx, dy, angle
    degrees); mirror (N,) bool; out (I, K) float64. Bilinear sampling with zero outside the box, in float32 as
    :func:`emforge.numerics.align2d.transform_images_2d`; sums in float64; 0 where either image
    is constant.
    """
    npair, ntrial = params.shape[0], params.shape[1]
    n = a.shape[1]
    c = n // 2
    npx = n * n
    for job in prange(npair * ntrial):
        i = job // ntrial
        k = job % ntrial
        p = pairs[i]
        flip = mirror[p]
        tx, ty = params[i, k, 0], params[i, k, 1]
        t = np.radians(params[i, k, 2])
        ct, st = np.cos(t), np.sin(t)
        img, ref = a[p], b[p]
        sv = 0.0
        svv = 0.0
        svb = 0.0
        sb = 0.0
        sbb = 0.0
        for y in range(n):
            uy = (y - c) - ty
            for x in range(n):
                ux = (x - c) - tx
                sx = ct * ux + st * uy
                sy = -st * ux + ct * uy
                if flip:
                    sx = -sx
                sx += c
                sy += c
                fy0 = np.floor(sy)
                fx0 = np.floor(sx)
                y0, x0 = int(fy0), int(fx0)
                fy = np.float32(sy - fy0)
                fx = np.float32(sx - fx0)
                v = np.float32(0.0)
                for oy in range(2):
                    yy = y0 + oy
                    wy = fy if oy == 1 else np.float32(1.0) - fy
                    if yy < 0 or yy >= n:
                        continue
                    for ox in range(2):
                        xx = x0 + ox
                        if xx < 0 or xx >= n:
                            continue
                        wx = fx if ox == 1 else np.float32(1.0) - fx
                        v += img[yy, xx] * wy * wx
                r = np.float64(ref[y, x])
                fv = np.float64(v)
                sv += fv
                svv += fv * fv
                svb += fv * r
                sb += r
                sbb += r * r
        vx = svv - sv * sv / npx
        vy = sbb - sb * sb / npx
        den = np.sqrt(vx * vy) if vx * vy > 0 else 0.0
        out[i, k] = (svb - sv * sb / npx) / den if den > 0 else 0.0
