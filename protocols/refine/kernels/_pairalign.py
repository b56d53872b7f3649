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
import scipy.sparse as sp

from emforge.numerics import fft as _fft
from emforge.numerics.align2d import Alignment2D, _footprints, _mirror, _window
from emforge.numerics.compare import cost as _cost
from emforge.numerics.compare import frc_band_weights

from ._transform2d import transform_stack

__all__ = ["align_pairs", "paired_cost", "paired_frc", "ALIGNERS"]

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


def _rotate(a: np.ndarray, t_deg: np.ndarray, mirror=False) -> np.ndarray:
    """``out(R(t) M r) = a(r)`` about n//2, bilinear, zero outside (as align2d's operator)."""
    return transform_stack(a, t_deg, 0.0, 0.0, mirror)


def _score_at(a, idx, tables, angle, mirror, ms: int):
    """-ccc, shift (sx, sy) of the particles turned by ``angle`` (mirror first) at the best
    translation within +-ms (CCF peak, sub-pixel), as in the coarse search."""
    n = a.shape[1]
    bf, be, _ = tables
    g = _fft.rfftn(_rotate(a, angle, mirror), axes=(-2, -1))
    g[..., 0, 0] = 0
    ea = (np.abs(g) ** 2 * _herm(n)).sum((-2, -1)) / (n * n)
    ccf = _fft.irfftn(bf[idx] * np.conj(g), shape=(a.shape[0], n, n), axes=(-2, -1))
    sy, sx, peak = _window(ccf, ms)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = -peak / np.sqrt(ea * be[idx])
    return np.where(np.isfinite(score), score, 1e24), sx, sy


def _refine_chunk(a, idx, tables, ang, mir, ms: int, step: float):
    """Local refinement of (angle, dx, dy): scores at angle -+ step/2 and the parabola's
    vertex through the three (clipped to +-step), translation re-fitted by the CCF at each;
    the best of the evaluated alignments is kept."""
    h = 0.5 * step
    cand = [_score_at(a, idx, tables, ang + d, mir, ms) + (ang + d,) for d in (-h, 0.0, h)]
    s = np.stack([c[0] for c in cand])
    den = s[0] - 2 * s[1] + s[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(den > 0, 0.5 * h * (s[0] - s[2]) / den, 0.0)
    cand.append(_score_at(a, idx, tables, ang + np.clip(off, -step, step), mir, ms)
                + (ang + np.clip(off, -step, step),))  # fmt: skip
    allc = [np.stack([c[j] for c in cand]) for j in range(4)]
    best = np.argmin(allc[0], axis=0)
    k = np.arange(a.shape[0])
    sc, sx, sy, an = (v[best, k] for v in allc)
    return an, sx, sy, mir, sc


def _chunk(a, idx, tables, nang: int, ms: int, flip: bool):
    n = a.shape[1]
    bf, be, fpb = tables
    both = np.stack([a, _mirror(a)]) if flip else a[None]
    nm = both.shape[0]
    fp = _footprints(a, nang)  # (k, rings, nh); the mirror image's is its conjugate
    fpa = np.stack([fp, np.conj(fp)]) if flip else fp[None]  # (polar angle t -> 180 - t)
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
    ralign : None or ``"refine"``: local refinement from the result (EMAN2's ``refine``
        aligner's job, done as: -ccc at the angle -+ half a grid step and at the parabola's
        vertex through the three, each with the translation re-fitted by the sub-pixel CCF
        peak; the best is kept, so the score never gets worse). Not
        :func:`emforge.numerics.refine_2d`'s compass search: that costs ~150 bilinear
        transforms per pair, minutes for 10^4 particles.
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
                              (-_paired_ccc(a, b, idx)).astype(np.float32))  # fmt: skip
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
        tables = _ref_tables(b, int(nang))
        out = [_refine_chunk(a[i : i + _CHUNK], idx[i : i + _CHUNK], tables,
                             ali.angle[i : i + _CHUNK].astype(np.float64),
                             ali.mirror[i : i + _CHUNK], ms, 180.0 / int(nang))
               for i in range(0, k, _CHUNK)]  # fmt: skip
        ang, dx, dy, mir, sc = (np.concatenate(v) for v in zip(*out, strict=True))
        ali = Alignment2D((ang % 360.0).astype(np.float32), dx.astype(np.float32),
                          dy.astype(np.float32), mir.astype(bool), sc.astype(np.float32))  # fmt: skip
    return ali


def _paired_ccc(a: np.ndarray, b: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Pearson correlation of a[k] with b[idx[k]], in chunks (float64 sums)."""
    out = np.empty(a.shape[0])
    for s in range(0, a.shape[0], _CHUNK):
        x = a[s : s + _CHUNK].reshape(-1, a.shape[1] * a.shape[2]).astype(np.float64)
        y = b[idx[s : s + _CHUNK]].reshape(x.shape).astype(np.float64)
        x -= x.mean(1, keepdims=True)
        y -= y.mean(1, keepdims=True)
        den = np.sqrt(np.einsum("ij,ij->i", x, x) * np.einsum("ij,ij->i", y, y))
        num = np.einsum("ij,ij->i", x, y)
        out[s : s + _CHUNK] = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return out


def _ring_tables(n: int):
    ky = np.fft.fftfreq(n) * n
    ring = np.rint(np.sqrt(ky[:, None] ** 2 + np.arange(n // 2 + 1)[None] ** 2)).ravel()
    herm = np.broadcast_to(_herm(n).astype(np.float64), (n, n // 2 + 1)).ravel()
    keep = ring < n // 2
    ring = ring[keep].astype(np.int64)
    onehot = sp.csr_matrix((herm[keep], (np.arange(ring.size), ring)), shape=(ring.size, n // 2))
    return keep, onehot, np.bincount(ring, herm[keep], n // 2)


def paired_frc(images, references, ref_index, *, pixel_size: float, minres: float = 200.0,
               maxres: float = 8.0, snr=None, sweight: bool = True) -> np.ndarray:  # fmt: skip
    """:func:`emforge.numerics.frc` (unsigned, no zeromask) of image k with
    ``references[ref_index[k]]``, batched: (K,) float64."""
    a = np.asarray(images, dtype=np.float32)
    b = np.asarray(references, dtype=np.float32)
    idx = np.asarray(ref_index, dtype=np.int64).reshape(-1)
    n, nr = a.shape[1], a.shape[1] // 2
    keep, onehot, counts = _ring_tables(n)
    fa = _fft.rfftn(a, axes=(-2, -1)).reshape(a.shape[0], -1)[:, keep]
    fb = _fft.rfftn(b, axes=(-2, -1)).reshape(b.shape[0], -1)[:, keep]
    pb = np.asarray(onehot.T @ (np.abs(fb) ** 2).T).T
    fb = fb[idx]
    cross = np.asarray(onehot.T @ np.real(fa * np.conj(fb)).T).T
    den = np.sqrt(np.asarray(onehot.T @ (np.abs(fa) ** 2).T).T * pb[idx])
    curve = np.divide(cross, den, out=np.zeros_like(cross), where=den > 0)
    w = frc_band_weights(n, pixel_size=pixel_size, minres=minres, maxres=maxres)
    w = np.broadcast_to(w * counts if sweight else w, (idx.size, nr))
    if snr is not None:
        sn = np.asarray(snr, dtype=np.float64)
        if sn.shape not in ((nr,), (idx.size, nr)):
            raise ValueError(f"snr: need shape ({nr},) or ({idx.size}, {nr}), got {sn.shape}")
        w = w * np.where(sn <= 0, 0.001, sn)
    return (curve * w).sum(1) / w.sum(1)


def paired_cost(name: str, images, references, ref_index, **options) -> np.ndarray:
    """EMAN2-signed comparator of image k with ``references[ref_index[k]]``: (K,) float64.

    ``ccc`` (no options) and ``frc`` (without zeromask) are batched; any other comparator or
    option goes through :func:`emforge.numerics.compare.cost` once per reference (a loop over
    classes, not pairs).
    """
    a = np.asarray(images, dtype=np.float32)
    b = np.asarray(references, dtype=np.float32)
    idx = np.asarray(ref_index, dtype=np.int64).reshape(-1)
    if name == "ccc" and not options:
        return -_paired_ccc(a, b, idx)
    if name == "frc" and not options.get("zeromask", False) and "pixel_size" in options:
        return -paired_frc(a, b, idx, **{k: v for k, v in options.items() if k != "zeromask"})
    out = np.empty(idx.size)
    order = np.argsort(idx, kind="stable")
    bounds = np.flatnonzero(np.diff(idx[order])) + 1
    for grp in np.split(order, bounds):
        if grp.size:
            opts = dict(options)
            if np.ndim(opts.get("snr")) == 2:
                opts["snr"] = np.asarray(opts["snr"])[grp]
            out[grp] = _cost(name, a[grp], b[idx[grp[0]]][None], **opts)[:, 0]
    return out
