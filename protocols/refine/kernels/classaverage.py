"""Class averaging with iterative re-alignment and exclusion (EMAN2 ``e2classaverage``).

Conventions: images (N, n, n) float32, square even boxes, centre n//2; alignments as
:mod:`emforge.numerics.align2d` (they bring the PARTICLE onto the REFERENCE); scores in EMAN2's
sign (smaller is better); CTF values on the rfft half-grid (N, n, n//2+1); pixel size in A.

What happens per class (facts §3.7, e2classaverage ``class_average``):

1. Every image is normalised once with ``normproc`` (``edgemean``: border mean 0, std 1).
2. Pass 0 aligns each member to its reference (the class's projection) with ``align`` (+
   ``ralign``), scores the aligned image against the reference with ``cmp`` and averages
   all members with ``averager``. The new reference is that average after
   :func:`~._avgtools.reference_filter` (circlemean and a Gaussian edge of gmw = max(5, n//12)
   pixels, or the 2-D automask).
3. Passes 1..niter: the members whose last score is outside ``keep`` / ``keepsig``
   (:func:`.selection.keep_mask`, within the class; all excluded -> the best reinstated) are
   left out; the others are re-aligned to the current reference, scored and averaged. After
   the last pass the exclusion is computed once more from its scores (EMAN2's niter+1 loop).
   So there are niter + 1 align/average passes.
4. Final: the last reference is aligned onto the class's projection (``rotate_translate`` +
   ``refine``, ccc); each member's alignment is composed with it and the ORIGINAL (normalised)
   images are averaged once more with the composed alignments and the inclusion flags, so the
   average sits in the projection's frame (no final alignment with ``align=None``). Then
   ``normalize.toimage`` (least-squares scale and offset onto the projection) and
   ``--decayedge`` (circlemean at n/2 - n/15, Gaussian edge of width n/20). class_qual = frc(30-10 A) / frc(100-30 A) of the average with the
   projection (larger is better).

Speed: every step runs on all members of all classes at once (paired alignment batched
across classes, sparse group sums); there is no Python loop over particles, and only the
``frc``/``phase`` comparators loop over classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emforge.numerics.align2d import Alignment2D

from ._avgtools import (
    AVERAGERS,
    average_groups,
    decay_edge,
    match_structure_factor,
    normalize_stack,
    reference_filter,
    transform_ctf,
)
from ._pairalign import ALIGNERS, align_pairs, paired_cost, paired_frc
from ._transform2d import transform_stack
from .selection import keep_mask

__all__ = ["ClassAverages", "class_averages", "compose_alignments", "class_quality"]


@dataclass(frozen=True)
class ClassAverages:
    """Result of :func:`class_averages`.

    averages : (M, n, n) float32, zeros for empty classes
    counts : (M,) int64 particles included (ptcl_repr)
    quality : (M,) float64 class_qual = frc(30-10 A) / frc(100-30 A), larger is better; NaN
        when empty
    included : (N, sep) bool
    alignment : Alignment2D of (N, sep) arrays, each particle's final alignment onto its class
        average's frame (= the class projection's frame); score NaN where not a member
    """

    averages: np.ndarray
    counts: np.ndarray
    quality: np.ndarray
    included: np.ndarray
    alignment: Alignment2D


def compose_alignments(first: Alignment2D, then: Alignment2D) -> Alignment2D:
    """``then`` after ``first``: r -> R(a2) (R(a1) M1 r + t1) + t2 (``then`` has no mirror).

    Angle a1 + a2, mirror M1, shift R(a2) t1 + t2; the score is ``first``'s."""
    t = np.radians(then.angle.astype(np.float64))
    c, s = np.cos(t), np.sin(t)
    dx = c * first.dx + (-s) * first.dy + then.dx
    dy = s * first.dx + c * first.dy + then.dy
    ang = (first.angle.astype(np.float64) + then.angle) % 360.0
    return Alignment2D(ang.astype(np.float32), dx.astype(np.float32), dy.astype(np.float32),
                       np.asarray(first.mirror, bool).copy(), first.score.copy())  # fmt: skip


def class_quality(averages, references, *, pixel_size: float) -> np.ndarray:
    """EMAN2 class_qual of each average with its reference: frc(minres 30, maxres 10) /
    frc(minres 100, maxres 30) (both unsigned FRCs; larger is better). (M,) float64."""
    a = np.asarray(averages, np.float32)
    b = np.asarray(references, np.float32)
    i = np.arange(a.shape[0])
    hi = paired_frc(a, b, i, pixel_size=pixel_size, minres=30.0, maxres=10.0)
    lo = paired_frc(a, b, i, pixel_size=pixel_size, minres=100.0, maxres=30.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(lo != 0, hi / lo, np.nan)


def _grouped_keep(scores, groups, keep, keepsig) -> np.ndarray:
    out = np.zeros(scores.size, bool)
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    for grp in np.split(order, bounds):
        if grp.size:
            out[grp] = keep_mask(scores[grp], keep, keepsig=keepsig)
    return out


def _to_image(avg: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """normalize.toimage: alpha * avg + beta fitted to ref by least squares (alpha > 0;
    otherwise mean/std matched)."""
    x = avg.reshape(avg.shape[0], -1).astype(np.float64)
    y = ref.reshape(ref.shape[0], -1).astype(np.float64)
    xm, ym = x.mean(1, keepdims=True), y.mean(1, keepdims=True)
    vx = ((x - xm) ** 2).sum(1)
    cov = ((x - xm) * (y - ym)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.where(vx > 0, cov / vx, 0.0)
        ratio = np.where(vx > 0, np.sqrt(((y - ym) ** 2).sum(1) / vx), 1.0)
    alpha = np.where(alpha > 0, alpha, ratio)[:, None]
    return (alpha * (x - xm) + ym).reshape(avg.shape).astype(np.float32)


def _check(images, classes, references, ctf, averager, align, ralign, niter):
    a = np.asarray(images, dtype=np.float32)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] % 2 or a.shape[1] < 8:
        raise ValueError(f"images: need (N, n, n) square even boxes >= 8, got {a.shape}")
    r = np.asarray(references, dtype=np.float32)
    if r.ndim != 3 or r.shape[1:] != a.shape[1:]:
        raise ValueError(f"references: need (M, {a.shape[1]}, {a.shape[1]}), got {r.shape}")
    c = np.asarray(classes)
    c = c[:, None] if c.ndim == 1 else c
    if c.ndim != 2 or c.shape[0] != a.shape[0] or c.dtype.kind not in "iu":
        raise ValueError(f"classes: need integer (N, sep) with N = {a.shape[0]}, got {c.shape}")
    if c.size and (c.max() >= r.shape[0] or c.min() < -1):
        raise ValueError(f"classes: ids must be -1 (none) or in [0, {r.shape[0]})")
    if averager not in AVERAGERS:
        raise ValueError(f"averager: must be one of {AVERAGERS}, got {averager!r}")
    if align not in ALIGNERS:
        raise ValueError(f"align: must be one of {ALIGNERS}, got {align!r}")
    if ralign not in (None, "refine"):
        raise ValueError(f"ralign: must be None or 'refine', got {ralign!r}")
    if int(niter) < 0:
        raise ValueError(f"niter: must be >= 0, got {niter}")
    if ctf is not None:
        ctf = np.asarray(ctf, dtype=np.float32)
        n = a.shape[1]
        if ctf.shape != (a.shape[0], n, n // 2 + 1):
            raise ValueError(f"ctf: need shape {(a.shape[0], n, n // 2 + 1)}, got {ctf.shape}")
    elif averager != "mean":
        raise ValueError(f"ctf: the {averager} averager needs the images' CTF")
    return a, c.astype(np.int64), r, ctf


def class_averages(images, classes, references, *, ctf=None, niter: int = 1, keep: float = 0.8,
                   keepsig: bool = False, align="rotate_translate_flip", aligncmp: str = "ccc",
                   ralign=None, cmp: str = "ccc", cmp_options=None, averager: str = "mean",
                   normproc="edgemean", automask: bool = False, pixel_size: float = 1.0,
                   workers=None, maxshift=None, aligncmp_options=None, raligncmp: str = "ccc",
                   raligncmp_options=None, setsfref: bool = False) -> ClassAverages:  # fmt: skip
    """e2classaverage for all classes at once (see the module notes for the passes).

    Parameters
    ----------
    images : (N, n, n) particles (phase-flipped when ``ctf`` is given)
    classes : int (N, sep) (or (N,)) class ids per particle, -1 = none (e2classify's classmx)
    references : (M, n, n) the class projections
    ctf : (N, n, n//2+1) optional CTF values (needed by ``ctf.weight`` / ``ctf.auto``)
    niter : int >= 0, refinement passes after the first (EMAN2 ``--iter``)
    keep, keepsig : exclusion per class on the pass scores (:func:`.selection.keep_mask`)
    align : ``rotate_translate_flip``, ``rotate_translate`` or None
    aligncmp, aligncmp_options : comparator choosing among the aligner's candidates (``ccc``
        default: the aligner's own score); see :func:`._pairalign.align_pairs`
    ralign : None or ``refine`` (the local refinement of :func:`._pairalign.align_pairs`)
    raligncmp, raligncmp_options : comparator of the refinement
    cmp, cmp_options : comparator of :func:`emforge.numerics.compare.cost` for the scores
    averager : ``mean``, ``ctf.weight`` or ``ctf.auto`` (:func:`._avgtools.average_groups`)
    normproc : ``edgemean``, ``normalize`` or None
    automask : 2-D automask of each new reference instead of the Gaussian edge
    pixel_size : A per pixel (class_qual, and frc/phase comparators via cmp_options)
    workers : threads of the paired aligner
    maxshift : px, largest |dx|, |dy| of the aligner (default n // 4)
    setsfref : impose the reference's radial amplitude profile on each final average
        (EMAN2 ``--setsfref``, ``filter.matchto``) before ``normalize.toimage``

    Returns
    -------
    ClassAverages
    """
    a, cls, refs, ctf = _check(images, classes, references, ctf, averager, align, ralign, niter)

    def with_px(name, o):
        o = dict(o or {})
        if name in ("frc", "phase"):
            o.setdefault("pixel_size", pixel_size)
        return o

    opts = with_px(cmp, cmp_options)
    akw = dict(align=align, ralign=ralign, maxshift=maxshift, aligncmp=aligncmp,
               aligncmp_options=with_px(aligncmp, aligncmp_options), raligncmp=raligncmp,
               raligncmp_options=with_px(raligncmp, raligncmp_options), workers=workers)  # fmt: skip
    n_img, sep = cls.shape
    m, n = refs.shape[0], a.shape[1]
    pid, slot = np.nonzero(cls >= 0)
    grp = cls[pid, slot]
    k = pid.size
    imgs = normalize_stack(a, normproc)[pid]  # one row per (particle, class) membership
    mctf = None if ctf is None or averager == "mean" else ctf[pid]
    active = np.unique(grp)

    def average(ali, inc):
        x = transform_stack(imgs, ali.angle, ali.dx, ali.dy, ali.mirror)
        c = None if mctf is None else transform_ctf(mctf, ali.angle, ali.mirror)
        return x, average_groups(x, grp, m, included=inc, ctf=c, averager=averager)[0]

    cur = refs.copy()
    inc = np.ones(k, bool)
    score = ali = None
    for it in range(int(niter) + 2):
        if it > 0:
            inc = _grouped_keep(score, grp, keep, keepsig)
        if it == int(niter) + 1 or k == 0:
            break
        ali = align_pairs(imgs, cur, grp, **akw)
        aligned, avg = average(ali, inc)
        score = paired_cost(cmp, aligned, cur, grp, **opts)
        cur[active] = reference_filter(avg[active], automask=automask)

    averages = np.zeros((m, n, n), np.float32)
    counts = np.zeros(m, np.int64)
    quality = np.full(m, np.nan)
    if k:
        fin = align_pairs(cur[active], refs, active, align="rotate_translate" if align else None,
                          ralign="refine" if align else None, workers=workers)  # fmt: skip
        where = np.full(m, -1, np.int64)
        where[active] = np.arange(active.size)
        pick = where[grp]
        then = Alignment2D(*(getattr(fin, f)[pick] for f in ("angle", "dx", "dy", "mirror", "score")))  # fmt: skip
        ali = compose_alignments(ali, then)
        ali = Alignment2D(ali.angle, ali.dx, ali.dy, ali.mirror, score.astype(np.float32))
        _, avg = average(ali, inc)
        fa = match_structure_factor(avg[active], refs[active]) if setsfref else avg[active]
        out = decay_edge(_to_image(fa, refs[active]))
        averages[active] = out
        counts = np.bincount(grp[inc], minlength=m).astype(np.int64)
        quality[active] = class_quality(out, refs[active], pixel_size=pixel_size)

    def full(v, fill, dtype):
        o = np.full((n_img, sep), fill, dtype=dtype)
        if k:
            o[pid, slot] = v
        return o

    alignment = Alignment2D(
        full(ali.angle if k else 0, 0.0, np.float32), full(ali.dx if k else 0, 0.0, np.float32),
        full(ali.dy if k else 0, 0.0, np.float32), full(ali.mirror if k else False, False, bool),
        full(ali.score if k else 0, np.nan, np.float32), reference=np.where(cls >= 0, cls, -1),
    )  # fmt: skip
    return ClassAverages(averages, counts, quality, full(inc, False, bool), alignment)
