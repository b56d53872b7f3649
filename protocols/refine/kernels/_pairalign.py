"""Paired 2D alignment: particle k onto reference ``ref_index[k]`` (one pair per particle).

The search is :func:`emforge.numerics.rotate_translate_flip`'s (same footprints, angle grid,
translational CCF, sub-pixel peak and ``-ccc`` score, conventions of
:mod:`emforge.numerics.align2d`), specialised to one reference per particle: the angle is read
from the footprint CCF first, so each particle is rotated only to the angle it needs (2 images:
plain and mirrored, the +180 degree turn comes from the conjugate spectrum) instead of to all
``nang`` angles. Class averaging aligns ~10^4 particles each to its own class, batched across
classes in one call, with no Python loop over particles or classes.

A paired comparator (:func:`paired_cost`) scores each aligned particle against its reference
with :func:`emforge.numerics.compare.cost` semantics (EMAN2 sign, smaller is better).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from emforge.numerics import fft as _fft
from emforge.numerics.align2d import Alignment2D, _footprints, _mirror, _window
from emforge.numerics.compare import cost as _cost
from emforge.numerics.refine2d import refine_2d

__all__ = ["align_pairs", "paired_cost", "ALIGNERS"]

ALIGNERS = ("rotate_translate_flip", "rotate_translate", None)
_CHUNK = 512


def _herm(n: int) -> np.ndarray:
    h = np.full(n // 2 + 1, 2.0, np.float32)
    h[[0, -1]] = 1.0
    return h


def _ref_tables(b: np.ndarray, nang: int):
    n = b.shape[1]
    bf = _fft.rfftn(b - b.mean((1, 2), keepdims=True), axes=(-2, -1))
    bf[:, 0, 0] = 0
    energy = (np.abs(bf) ** 2 * _herm(n)).sum((-2, -1)) / (n * n)
    iy, ix = np.ogrid[0:n, 0 : n // 2 + 1]
    bf *= (1 - 2 * ((iy + ix) % 2)).astype(np.float32)  # CCF zero shift at n//2
    return bf, energy, _footprints(b, nang)


def _rotate(a: np.ndarray, t_deg: np.ndarray) -> np.ndarray:
    """``out(R(t) r) = a(r)`` about n//2, bilinear, zero outside (as align2d's operator)."""
    from emforge.numerics.align2d import transform_images_2d

    z = np.zeros_like(t_deg)
    return transform_images_2d(a, t_deg, z, z, np.zeros(t_deg.shape, bool))


def _chunk(a, idx, tables, nang: int, ms: int, flip: bool):
    n = a.shape[1]
    bf, be, fpb = tables
    both = np.stack([a, _mirror(a)]) if flip else a[None]
    nm = both.shape[0]
    fpa = np.stack([_footprints(x, nang) for x in both])  # (nm, k, rings, nh)
    c = np.einsum("mkrh,krh->mkh", np.conj(fpa), fpb[idx])
    j = np.argmax(_fft.irfftn(c, shape=(*c.shape[:-1], nang), axes=(-1,)), axis=-1)  # (nm, k)
    rot = np.stack([_rotate(both[m], j[m] * (180.0 / nang)) for m in range(nm)])
    g = _fft.rfftn(rot, axes=(-2, -1))
    g[..., 0, 0] = 0
    ea = (np.abs(g) ** 2 * _herm(n)).sum((-2, -1)) / (n * n)  # (nm, k)
    bb = bf[idx][None]
    x = np.stack([bb * np.conj(g), bb * g])  # (turn, nm, k, n, nh)
    ccf = _fft.irfftn(x, shape=(*x.shape[:-2], n, n), axes=(-2, -1))
    sy, sx, peak = _window(ccf, ms)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = -peak / np.sqrt(ea[None] * be[idx][None, None])
    score = np.where(np.isfinite(score), score, 1e24).reshape(2 * nm, -1)
    best = np.argmin(score, axis=0)
    turn, mir = np.divmod(best, nm)
    k = np.arange(a.shape[0])

    def pick(v):
        return v.reshape(2 * nm, -1)[best, k]

    ang = j[mir, k] * (180.0 / nang) + 180.0 * turn
    return ang, pick(sx), pick(sy), mir.astype(bool), pick(score)


def align_pairs(images, references, ref_index, *, align="rotate_translate_flip", ralign=None,
                maxshift=None, nang: int = 180, workers: int | None = None) -> Alignment2D:  # fmt: skip
    """Align image k onto ``references[ref_index[k]]``.

    Parameters
    ----------
    images : array (K, n, n) float32
    references : array (M, n, n)
    ref_index : int array (K,), values in [0, M)
    align : ``"rotate_translate_flip"``, ``"rotate_translate"`` (no mirror) or None (identity)
    ralign : None or ``"refine"`` (:func:`emforge.numerics.refine_2d` from the result)
    maxshift : float, px (default n // 4, at most n/2 - 2)
    nang : angular samples over 180 degrees (1 degree steps by default)
    workers : threads over chunks of 512 pairs (default: the FFT thread count)

    Returns
    -------
    Alignment2D with (K,) arrays: angle deg, dx, dy px, mirror, score = -ccc (EMAN2 sign).
    """
    a = np.ascontiguousarray(images, dtype=np.float32)
    b = np.ascontiguousarray(references, dtype=np.float32)
    idx = np.asarray(ref_index, dtype=np.int64).reshape(-1)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:] or a.shape[1] != a.shape[2]:
        raise ValueError(f"references: need square stacks of one box, got {a.shape}, {b.shape}")
    if idx.size != a.shape[0] or (idx.size and (idx.min() < 0 or idx.max() >= b.shape[0])):
        raise ValueError("ref_index: need one reference index in [0, M) per image")
    if align not in ALIGNERS:
        raise ValueError(f"align: must be one of {ALIGNERS}, got {align!r}")
    if ralign not in (None, "refine"):
        raise ValueError(f"ralign: must be None or 'refine', got {ralign!r}")
    n, k = a.shape[1], a.shape[0]
    ms = n // 4 if maxshift is None else int(np.floor(float(maxshift)))
    ms = int(np.clip(ms, 0, n // 2 - 2))
    if align is None or k == 0:
        z = np.zeros(k, np.float32)
        ali = Alignment2D(z, z.copy(), z.copy(), np.zeros(k, bool), z.copy())
        if k:
            ali = Alignment2D(z, z.copy(), z.copy(), np.zeros(k, bool),
                              paired_cost("ccc", a, b, idx).astype(np.float32))  # fmt: skip
    else:
        tables = _ref_tables(b, int(nang))
        flip = align == "rotate_translate_flip"
        starts = range(0, k, _CHUNK)
        nw = _fft.default_threads() if workers is None else max(1, int(workers))

        def run(s):
            return _chunk(a[s : s + _CHUNK], idx[s : s + _CHUNK], tables, int(nang), ms, flip)

        if nw > 1 and len(starts) > 1:
            with ThreadPoolExecutor(nw) as pool:
                parts = list(pool.map(run, starts))
        else:
            parts = [run(s) for s in starts]
        ang, dx, dy, mir, sc = (np.concatenate(v) for v in zip(*parts, strict=True))
        ali = Alignment2D((ang % 360.0).astype(np.float32), dx.astype(np.float32),
                          dy.astype(np.float32), mir, sc.astype(np.float32))  # fmt: skip
    if ralign == "refine" and k:
        ali = refine_2d(a, b[idx], ali.angle, ali.dx, ali.dy, ali.mirror, maxshift=ms)
    return ali


def _paired_ccc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = a.reshape(a.shape[0], -1).astype(np.float64)
    y = b.reshape(b.shape[0], -1).astype(np.float64)
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(1) / den, 0.0)


def paired_cost(name: str, images, references, ref_index, **options) -> np.ndarray:
    """EMAN2-signed comparator of image k with ``references[ref_index[k]]``: (K,) float64.

    ``ccc`` (no options) is computed directly; any other comparator/options go through
    :func:`emforge.numerics.compare.cost` once per reference (a loop over classes, not pairs).
    """
    a = np.asarray(images, dtype=np.float32)
    b = np.asarray(references, dtype=np.float32)
    idx = np.asarray(ref_index, dtype=np.int64).reshape(-1)
    if name == "ccc" and not options:
        return -_paired_ccc(a, b[idx])
    out = np.empty(idx.size)
    order = np.argsort(idx, kind="stable")
    bounds = np.flatnonzero(np.diff(idx[order])) + 1
    for grp in np.split(order, bounds):
        if grp.size:
            out[grp] = _cost(name, a[grp], b[idx[grp[0]]][None], **options)[:, 0]
    return out
