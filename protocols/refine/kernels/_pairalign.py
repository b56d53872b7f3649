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

import threading

import numpy as np
import scipy.sparse as sp

from emforge.numerics import fft as _fft
from emforge.numerics.align2d import Alignment2D, _footprints, _mirror, map_chunks
from emforge.numerics.compare import cost as _cost
from emforge.numerics.compare import frc_band_weights

from ._transform2d import transform_stack

__all__ = ["align_pairs", "paired_cost", "paired_frc", "ALIGNERS"]

ALIGNERS = ("rotate_translate_flip", "rotate_translate", None)
_CHUNK = 512


def _th() -> int | None:
    """FFT threads: 1 inside the aligner's worker threads (they already share the cores)."""
    return None if threading.current_thread() is threading.main_thread() else 1


def _herm(n: int) -> np.ndarray:
    h = np.full(n // 2 + 1, 2.0, np.float32)
    h[[0, -1]] = 1.0
    return h


def _window(ccf: np.ndarray, ms: int):
    """Peak of CCFs (..., n, n) (zero shift at n//2) within +-ms px, refined by a parabola
    through the peak and its neighbours along each axis (offset clipped to +-0.5 px; none
    unless the three points are concave). Returns (sy, sx, peak value)."""
    c = ccf.shape[-1] // 2
    lead = ccf.shape[:-2]
    w = ccf[..., c - ms - 1 : c + ms + 2, c - ms - 1 : c + ms + 2].reshape(
        -1, 2 * ms + 3, 2 * ms + 3
    )
    inner = w[:, 1:-1, 1:-1].reshape(w.shape[0], -1)
    k = np.argmax(inner, axis=1)
    iy, ix = np.divmod(k, 2 * ms + 1)
    iy, ix = iy + 1, ix + 1
    r = np.arange(w.shape[0])
    peak = w[r, iy, ix]

    def offset(m, p):
        d = m - 2 * peak + p
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.clip(np.where(d < 0, 0.5 * (m - p) / d, 0.0), -0.5, 0.5)

    oy = offset(w[r, iy - 1, ix], w[r, iy + 1, ix])
    ox = offset(w[r, iy, ix - 1], w[r, iy, ix + 1])
    return tuple(v.reshape(lead) for v in (iy - ms - 1 + oy, ix - ms - 1 + ox, peak))


def _ref_tables(b: np.ndarray, nang: int):
    n = b.shape[1]
    bf = _fft.rfftn(b - b.mean((1, 2), keepdims=True), axes=(-2, -1), threads=_th())
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
    g = _fft.rfftn(_rotate(a, angle, mirror), axes=(-2, -1), threads=_th())
    g[..., 0, 0] = 0
    ea = (np.abs(g) ** 2 * _herm(n)).sum((-2, -1)) / (n * n)
    ccf = _fft.irfftn(bf[idx] * np.conj(g), shape=(a.shape[0], n, n), axes=(-2, -1), threads=_th())
    sy, sx, peak = _window(ccf, ms)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = -peak / np.sqrt(ea * be[idx])
    return np.where(np.isfinite(score), score, 1e24), sx, sy


def _refine_chunk(a, idx, tables, ang, mir, ms: int, step: float):
    """Local refinement candidates of (angle, dx, dy): the angle -+ step/2, the angle itself
    and the parabola's vertex through the three -ccc values (clipped to +-step), the
    translation re-fitted by the CCF at each. Arrays (4, k): angle, dx, dy, mirror, -ccc."""
    h = 0.5 * step
    cand = [_score_at(a, idx, tables, ang + d, mir, ms) + (ang + d,) for d in (-h, 0.0, h)]
    s = np.stack([c[0] for c in cand])
    den = s[0] - 2 * s[1] + s[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(den > 0, 0.5 * h * (s[0] - s[2]) / den, 0.0)
    vert = ang + np.clip(off, -step, step)
    cand.append(_score_at(a, idx, tables, vert, mir, ms) + (vert,))
    sc, sx, sy, an = (np.stack([c[j] for c in cand]) for j in range(4))
    return an, sx, sy, np.broadcast_to(mir, an.shape), sc


def _choose(cands, a, b, idx, cmp: str, opts: dict):
    """Per pair, the candidate (rows of (C, k) arrays) with the lowest score: the aligner's
    -ccc, or ``cmp`` (EMAN2 sign) of the particle transformed by each candidate."""
    ang, sx, sy, mir, sc = cands
    if cmp != "ccc" or opts:
        sc = np.stack([paired_cost(cmp, transform_stack(a, ang[c], sx[c], sy[c], mir[c]), b,
                                   idx, **opts) for c in range(ang.shape[0])])  # fmt: skip
    best = np.argmin(sc, axis=0)
    k = np.arange(ang.shape[1])
    return tuple(v[best, k] for v in (ang, sx, sy, mir, sc))


def _chunk(a, idx, tables, nang: int, ms: int, flip: bool):
    n = a.shape[1]
    bf, be, fpb = tables
    both = np.stack([a, _mirror(a)]) if flip else a[None]
    nm = both.shape[0]
    fp = _footprints(a, nang)  # (k, rings, nh); the mirror image's is its conjugate
    fpa = np.stack([fp, np.conj(fp)]) if flip else fp[None]  # (polar angle t -> 180 - t)
    c = np.einsum("mkrh,krh->mkh", np.conj(fpa), fpb[idx])
    j = np.argmax(
        _fft.irfftn(c, shape=(*c.shape[:-1], nang), axes=(-1,), threads=_th()), axis=-1
    )  # (nm, k)
    rot = np.stack([_rotate(both[m], j[m] * (180.0 / nang)) for m in range(nm)])
    g = _fft.rfftn(rot, axes=(-2, -1), threads=_th())
    g[..., 0, 0] = 0
    ea = (np.abs(g) ** 2 * _herm(n)).sum((-2, -1)) / (n * n)  # (nm, k)
    bb = bf[idx][None]
    x = np.stack([bb * np.conj(g), bb * g])  # (turn, nm, k, n, nh)
    ccf = _fft.irfftn(x, shape=(*x.shape[:-2], n, n), axes=(-2, -1), threads=_th())
    sy, sx, peak = _window(ccf, ms)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = -peak / np.sqrt(ea[None] * be[idx][None, None])
    score = np.where(np.isfinite(score), score, 1e24).reshape(2 * nm, -1)
    turn, mir = np.divmod(np.arange(2 * nm), nm)
    ang = j[mir] * (180.0 / nang) + 180.0 * turn[:, None]
    mirs = np.broadcast_to((mir > 0)[:, None], ang.shape)
    return ang, sx.reshape(ang.shape), sy.reshape(ang.shape), mirs, score


def align_pairs(images, references, ref_index, *, align="rotate_translate_flip", ralign=None,
                maxshift=None, aligncmp: str = "ccc", aligncmp_options=None,
                raligncmp: str = "ccc", raligncmp_options=None, nang: int = 180,
                workers: int | None = None) -> Alignment2D:  # fmt: skip
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
    aligncmp, aligncmp_options : comparator choosing among the aligner's candidates (plain /
        mirrored x angle / angle + 180, each at its best translation), as EMAN2's aligners use
        their ``cmp``; ``ccc`` (default) is the aligner's own score
    raligncmp, raligncmp_options : the same for the refinement's candidates
    nang : angular samples over 180 degrees (1 degree steps by default)
    workers : threads over chunks of 512 pairs (default: the FFT thread count)

    Returns
    -------
    Alignment2D with (K,) arrays: angle deg, dx, dy px, mirror, score (EMAN2 sign: -ccc, or
    the chosen comparator's cost).
    """
    acmp = (aligncmp, dict(aligncmp_options or {}))
    rcmp = (raligncmp, dict(raligncmp_options or {}))
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
            ai, ii = a[s : s + _CHUNK], idx[s : s + _CHUNK]
            return _choose(_chunk(ai, ii, tables, int(nang), ms, flip), ai, b, ii, *acmp)

        parts = map_chunks(run, starts, nw)
        ali = Alignment2D.of(*(np.concatenate(v) for v in zip(*parts, strict=True)))
    if ralign == "refine" and k:
        tables = _ref_tables(b, int(nang))
        out = []
        for i in range(0, k, _CHUNK):
            ai, ii = a[i : i + _CHUNK], idx[i : i + _CHUNK]
            cands = _refine_chunk(ai, ii, tables, ali.angle[i : i + _CHUNK].astype(np.float64),
                                  ali.mirror[i : i + _CHUNK], ms, 180.0 / int(nang))  # fmt: skip
            out.append(_choose(cands, ai, b, ii, *rcmp))
        ali = Alignment2D.of(*(np.concatenate(v) for v in zip(*out, strict=True)))
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
               maxres: float = 8.0, snr=None, sweight: bool = True,
               zeromask: bool = False) -> np.ndarray:  # fmt: skip
    """:func:`emforge.numerics.frc` (unsigned) of image k with ``references[ref_index[k]]``,
    batched: (K,) float64. ``zeromask`` zeroes, in both images of a pair, the pixels that are 0
    in either before the FFT."""
    a = np.asarray(images, dtype=np.float32)
    b = np.asarray(references, dtype=np.float32)
    idx = np.asarray(ref_index, dtype=np.int64).reshape(-1)
    n, nr = a.shape[1], a.shape[1] // 2
    keep, onehot, counts = _ring_tables(n)
    if zeromask:
        bb = b[idx]
        both = (a != 0) & (bb != 0)
        fa = _fft.rfftn(a * both, axes=(-2, -1), threads=_th()).reshape(a.shape[0], -1)[:, keep]
        fb = _fft.rfftn(bb * both, axes=(-2, -1), threads=_th()).reshape(a.shape[0], -1)[:, keep]
        pb = np.asarray(onehot.T @ (np.abs(fb) ** 2).T).T
        idx = np.arange(a.shape[0])
    else:
        fa = _fft.rfftn(a, axes=(-2, -1), threads=_th()).reshape(a.shape[0], -1)[:, keep]
        fb = _fft.rfftn(b, axes=(-2, -1), threads=_th()).reshape(b.shape[0], -1)[:, keep]
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

    ``ccc`` (no options) and ``frc`` are batched; any other comparator or option goes through :func:`emforge.numerics.compare.cost` once per reference (a loop over
    classes, not pairs).
    """
    a = np.asarray(images, dtype=np.float32)
    b = np.asarray(references, dtype=np.float32)
    idx = np.asarray(ref_index, dtype=np.int64).reshape(-1)
    if name == "ccc" and not options:
        return -_paired_ccc(a, b, idx)
    if name == "frc" and "pixel_size" in options:
        return -paired_frc(a, b, idx, **options)
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
