"""Similarity matrix of particles against reference projections (EMAN2 ``e2simmx``,
``e2simmx2stage``).

Conventions
-----------
* ``particles`` (N, n, n) and ``references`` (M, n, n) float32, square even boxes, centre
  ``n // 2``. The result is an :class:`emforge.numerics.Alignment2D` of (N, M) arrays: the
  alignment of entry [i, j] brings particle i onto reference j (angle degrees, dx/dy pixels of
  the input box, mirror), ``score`` EMAN2-signed (smaller is better); NaN scores become 1e24.
* Per pair, as EMAN2: align (``align``), optionally refine (``ralign``), then score with
  ``cmp`` the particle against the reference brought into the particle's frame (EMAN2 aligns
  the reference to the particle and compares there), both multiplied by ``mask`` when given.
  With ``cmp="ccc"``, no ``ralign`` and no ``mask`` the score is the aligner's own ``-ccc`` of
  the best translational CCF peak (no second comparison).
* ``shrink`` Fourier-crops both stacks first: everything runs on the small box (the
  comparator's ``pixel_size`` is scaled with it) and shifts are reported in input pixels.
* Speed choice ``candidates=k``: ``ralign`` and ``cmp`` run only on the k references with the
  best alignment score per particle; every other entry of the row keeps its alignment and gets
  score (row max of the computed entries) + 1e-4, like ``e2simmx2stage --fillzero``.
* Names: aligners :data:`ALIGNERS`, refine aligners :data:`RALIGNERS`, comparators
  :data:`COMPARATORS` (those of :func:`emforge.numerics.compare.cost`, options in
  ``cmp_options``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from emforge.numerics.align2d import (
    Alignment2D,
    fourier_shrink_2d,
    rotate_translate_flip,
    transform_images_2d,
)
from emforge.numerics.compare import cost
from emforge.numerics.refine2d import refine_2d

__all__ = [
    "ALIGNERS",
    "RALIGNERS",
    "COMPARATORS",
    "similarity_matrix",
    "twostage_similarity",
    "inverse_alignment",
]

ALIGNERS = ("rotate_translate_flip", "rotate_translate")
RALIGNERS = ("refine",)
COMPARATORS = ("ccc", "sqeuclidean", "frc", "phase")
_ALIGN_OPTIONS = {"nang", "chunk_pairs"}
_RALIGN_OPTIONS = {"precision", "maxiter"}
_CMP_OPTIONS = {
    "ccc": set(),
    "sqeuclidean": {"normto", "zeromask"},
    "frc": {"pixel_size", "minres", "maxres", "snr", "sweight", "zeromask"},
    "phase": {"pixel_size", "minres", "maxres", "snr", "ampweight"},
}
_FILL = 1e-4  # e2simmx2stage's fill above the row maximum
_BAD = 1e24  # EMAN2's score for a non-finite comparison


def _choice(param: str, value, choices, *, none_ok: bool = False):
    if value is None and none_ok:
        return None
    if value not in choices:
        extra = " or None" if none_ok else ""
        raise ValueError(f"{param}: unknown {value!r}; use one of {', '.join(choices)}{extra}")
    return value


def _options(param: str, opts, allowed) -> dict:
    opts = dict(opts or {})
    bad = sorted(set(opts) - set(allowed))
    if bad:
        ok = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"{param}: unknown option(s) {', '.join(bad)}; allowed: {ok}")
    return opts


def _checked(align, ralign, cmp, align_options, ralign_options, shrink):
    """Validated (align, ralign, cmp, align options, ralign options); one-line errors."""
    if int(shrink) != shrink or shrink < 1:
        raise ValueError(f"shrink: must be an integer >= 1, got {shrink}")
    return (_choice("align", align, ALIGNERS), _choice("ralign", ralign, RALIGNERS, none_ok=True),
            _choice("cmp", cmp, COMPARATORS),
            _options("align_options", align_options, _ALIGN_OPTIONS),
            _options("ralign_options", ralign_options, _RALIGN_OPTIONS))  # fmt: skip


def inverse_alignment(angle, dx, dy, mirror):
    """Parameters of the inverse transform: if (angle, dx, dy, mirror) maps r to
    ``T r = R(a) M r + d``, the result maps u to ``T^-1 u`` in the same form, so
    ``transform_images_2d(ref, *inverse_alignment(...))`` is the reference in the particle's
    frame, ``ref(T r)``. Arrays (K,)."""
    a = np.asarray(angle, np.float64)
    mir = np.asarray(mirror, bool)
    t = np.radians(a)
    c, s = np.cos(t), np.sin(t)
    # R(-a) d
    rx, ry = c * dx + s * dy, -s * dx + c * dy
    # no mirror: T^-1 u = R(-a) u - R(-a) d;  mirror: T^-1 u = R(a) M u - M R(-a) d
    ia = np.where(mir, a, -a)
    return ia, np.where(mir, rx, -rx), -ry, mir


def _prepare(particles, references, shrink, mask, maxshift, cmp, cmp_options):
    a = fourier_shrink_2d(particles, shrink)
    b = fourier_shrink_2d(references, shrink)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"references: box {b.shape[1:]} differs from the particles' {a.shape[1:]}")
    m = None
    if mask is not None:
        m = np.asarray(mask, np.float32)
        if m.shape != tuple(np.shape(particles)[-2:]):
            raise ValueError(
                f"mask: shape {m.shape} differs from the box {np.shape(particles)[-2:]}"
            )
        m = (fourier_shrink_2d(m[None], shrink)[0] > 0.5).astype(np.float32)
    ms = None if maxshift is None else float(maxshift) / shrink
    opts = _options("cmp_options", cmp_options, _CMP_OPTIONS[cmp])
    if "pixel_size" in opts:
        opts["pixel_size"] = float(opts["pixel_size"]) * shrink
    elif cmp in ("frc", "phase"):
        raise ValueError(f"cmp_options: {cmp} needs pixel_size (Angstrom)")
    if opts.get("snr") is not None and shrink > 1:
        # a Fourier crop keeps the low rings: ring r of the shrunk box is the frequency of
        # ring r of the full box, so the per-ring SNR curves are truncated, not resampled
        opts["snr"] = np.asarray(opts["snr"])[..., : a.shape[-1] // 2]
    return a, b, m, ms, opts


_BATCH = 4096  # pairs per refine / transform batch of _rescore


def _rescore(a, b, al, rows, cols, *, k, ralign, ralign_options, cmp, opts, mask, ms, snr):
    """ralign + cmp on the k best of each row of ``al`` (arrays (n, K) over ``cols``, a (n, K)
    index array into ``b``, -1 = none); rows are the particles' indices into ``a``. The
    refinement and the transforms run in batches of pairs; the comparator per particle."""
    angle, dx, dy = (np.array(v, np.float64) for v in (al.angle, al.dx, al.dy))
    mirror, score = np.array(al.mirror), np.array(al.score, np.float64)
    rows = np.asarray(rows)
    chosen = []
    for r in range(rows.size):
        valid = np.flatnonzero(cols[r] >= 0)
        order = valid[np.argsort(score[r, valid], kind="stable")]
        chosen.append((valid, order[: min(k, order.size)]))
    pr = np.concatenate([np.full(sel.size, r) for r, (_, sel) in enumerate(chosen)]).astype(int)
    pc = np.concatenate([sel for _, sel in chosen]).astype(int)
    moved = np.empty((pr.size, *a.shape[1:]), np.float32)
    for s0 in range(0, pr.size, _BATCH):
        r_, c_ = pr[s0 : s0 + _BATCH], pc[s0 : s0 + _BATCH]
        refs = b[cols[r_, c_]]
        if ralign is not None:
            ref = refine_2d(a[rows[r_]], refs, angle[r_, c_], dx[r_, c_], dy[r_, c_],
                            mirror[r_, c_], maxshift=ms, **ralign_options)  # fmt: skip
            angle[r_, c_], dx[r_, c_], dy[r_, c_] = ref.angle, ref.dx, ref.dy
        inv = inverse_alignment(angle[r_, c_], dx[r_, c_], dy[r_, c_], mirror[r_, c_])
        moved[s0 : s0 + _BATCH] = transform_images_2d(refs, *inv)
    if mask is not None:
        moved *= mask
    start = 0
    for r, (valid, sel) in enumerate(chosen):
        if sel.size == 0:
            continue
        i = rows[r]
        p = a[i : i + 1] if mask is None else a[i : i + 1] * mask
        o = dict(opts)
        if snr is not None:
            o["snr"] = snr[i] if snr.ndim == 2 else snr
        v = cost(cmp, p, moved[start : start + sel.size], **o)[0]
        start += sel.size
        v = np.where(np.isfinite(v), v, _BAD)
        score[r, sel] = v
        rest = np.setdiff1d(valid, sel, assume_unique=True)
        if rest.size:
            score[r, rest] = v.max() + _FILL
    return Alignment2D(angle, dx, dy, mirror, score)


def _similarity(a, b, pairs, *, align, align_options, ralign, ralign_options, cmp, opts, mask, ms,
                candidates, workers, progress, chunk):  # fmt: skip
    """The shrunk-box work of :func:`similarity_matrix`; ``pairs`` (N, K) or None (all)."""
    nimg, nref = a.shape[0], b.shape[0]
    snr = opts.pop("snr", None)
    if snr is not None:
        snr = np.asarray(snr, np.float64)
        if snr.ndim == 2 and snr.shape[0] != nimg:
            raise ValueError(
                f"cmp_options: snr needs one row per particle ({nimg}), got {snr.shape}"
            )
        if snr.ndim == 2 and snr.shape[0] == 1:
            snr = snr[0]
    rescore = ralign is not None or mask is not None or cmp != "ccc" or snr is not None
    width = nref if pairs is None else pairs.shape[1]
    k = width if candidates is None or candidates <= 0 else min(int(candidates), width)
    parts = []
    for start in range(0, nimg, chunk):
        stop = min(nimg, start + chunk)
        sub = None if pairs is None else pairs[start:stop]
        al = rotate_translate_flip(a[start:stop], b, maxshift=ms, workers=workers,
                                   flip=align == "rotate_translate_flip", pairs=sub,
                                   **align_options)  # fmt: skip
        if rescore:
            cols = np.broadcast_to(np.arange(nref), (stop - start, nref)) if sub is None else sub
            al = _rescore(a, b, al, range(start, stop), cols, k=k, ralign=ralign,
                          ralign_options=ralign_options, cmp=cmp, opts=opts, mask=mask, ms=ms,
                          snr=snr)  # fmt: skip
        parts.append(al)
        if progress is not None:
            progress(stop / nimg)
    if not parts:  # no particles
        empty = np.zeros((0, width))
        return [empty, empty, empty, empty.astype(bool), empty]
    fields = [np.concatenate([getattr(p, f) for p in parts]) for f in
              ("angle", "dx", "dy", "mirror", "score")]  # fmt: skip
    return fields


def similarity_matrix(particles, references, *, align: str = "rotate_translate_flip",
                      align_options: dict | None = None, ralign: str | None = None,
                      ralign_options: dict | None = None, cmp: str = "ccc",
                      cmp_options: dict | None = None, mask=None, shrink: int = 1,
                      maxshift: float | None = None, candidates: int = 0,
                      workers: int | None = None,
                      progress: Callable[[float], None] | None = None,
                      chunk: int = 1024) -> Alignment2D:  # fmt: skip
    """Align and compare every particle with every reference (EMAN2 ``e2simmx``).

    Parameters
    ----------
    particles : array (N, n, n)
    references : array (M, n, n)
    align : str
        ``"rotate_translate_flip"`` (default) or ``"rotate_translate"`` (no mirror).
    align_options : dict, optional
        ``nang`` (angular samples over 180 degrees), ``chunk_pairs``.
    ralign : str or None
        ``"refine"`` (:func:`emforge.numerics.refine_2d`) or None.
    ralign_options : dict, optional
        ``precision``, ``maxiter``.
    cmp : str
        ``"ccc"``, ``"sqeuclidean"``, ``"frc"``, ``"phase"``.
    cmp_options : dict, optional
        Options of the comparator (:func:`emforge.numerics.compare.cost`); ``pixel_size`` (of
        the input box, Angstrom) is required by frc and phase; ``snr`` may have one row per
        particle.
    mask : array (n, n), optional
        0/1; both images are multiplied by it before ``cmp``.
    shrink : int
        Fourier-crop factor of both stacks (module notes).
    maxshift : float, optional
        Largest |dx|, |dy| in input pixels (default box/4).
    candidates : int
        k > 0: ``ralign``/``cmp`` only on each particle's k best references by alignment score
        (module notes); 0: on all.
    workers : int, optional
        Aligner threads (default: the FFT thread count).
    progress : callable(fraction), optional
        Called after each chunk of particles with the fraction done.
    chunk : int
        Particles per chunk.

    Returns
    -------
    Alignment2D with (N, M) arrays; ``.best()`` the best reference of each particle.
    """
    align, ralign, cmp, aopts, ropts = _checked(align, ralign, cmp, align_options,
                                                ralign_options, shrink)  # fmt: skip
    if int(candidates) != candidates or candidates < 0:
        raise ValueError(f"candidates: must be an integer >= 0, got {candidates}")
    if int(chunk) < 1:
        raise ValueError(f"chunk: must be >= 1, got {chunk}")
    shrink = int(shrink)
    a, b, m, ms, opts = _prepare(particles, references, shrink, mask, maxshift, cmp, cmp_options)
    ang, dx, dy, mir, score = _similarity(
        a, b, None, align=align, align_options=aopts, ralign=ralign, ralign_options=ropts,
        cmp=cmp, opts=opts, mask=m, ms=ms, candidates=int(candidates), workers=workers,
        progress=progress, chunk=int(chunk))  # fmt: skip
    return _result(ang, dx, dy, mir, score, shrink)


def _result(ang, dx, dy, mir, score, shrink) -> Alignment2D:
    """Shifts back to input pixels (the aligner got shrunk stacks), float32 arrays."""
    score = np.where(np.isnan(score), _BAD, score)
    return Alignment2D.of(ang, dx, dy, mir, score, scale=shrink)


def _centers(dist: np.ndarray, n1: int) -> np.ndarray:
    """Greedy farthest-point centres on a distance matrix, starting with 0 (e2simmx2stage)."""
    centers = [0]
    nearest = dist[0].copy()
    for _ in range(1, n1):
        c = int(np.argmax(nearest))
        centers.append(c)
        nearest = np.minimum(nearest, dist[c])
    return np.array(centers, np.int64)


def twostage_similarity(particles, references, *, shrink1: int = 2, ncenters: int | None = None,
                        nbest_centers: int = 4, **options) -> tuple[Alignment2D, dict]:  # fmt: skip
    """Similarity matrix computed only where it matters (EMAN2 ``e2simmx2stage``).

    1. Self-similarity of the references at ``shrink1`` (the aligner, ``-ccc``), symmetrised.
    2. ``ncenters`` (default 3 int(sqrt(M))) centres by greedy farthest point, starting at
       reference 0; each reference joins its 2 closest centres; each centre's average is the
       mean of its members aligned onto it (full size).
    3. Stage 1: the particles against the centre averages at ``shrink1`` (``align``, ``cmp``,
       no ``ralign``).
    4. Stage 2: each particle against the members of its ``nbest_centers`` best centres only,
       with every option of :func:`similarity_matrix`; the other entries of the row get
       (row max of the computed entries) + 1e-4, their alignment zero.

    Parameters
    ----------
    particles, references : arrays (N, n, n), (M, n, n)
    shrink1 : int
        Fourier-crop factor of steps 1 and 3 (relative to the input box).
    ncenters : int, optional
    nbest_centers : int
    **options
        Those of :func:`similarity_matrix` (``progress`` is called once per stage-2 chunk).

    Returns
    -------
    (Alignment2D with (N, M) arrays, info) with info ``{"centers": (n1,) reference indices,
    "members": (M, 2) centres of each reference (positions in ``centers``),
    "computed_fraction": stage-2 pairs / (N M), "seconds": wall time of the reference step
    (1-2, independent of N), stage 1 and stage 2}``. ``shrink1`` is relative to the input box
    (EMAN2's ``--shrinks1``): with ``shrink`` > 1 choose ``shrink1`` > ``shrink``.
    """
    refs = np.asarray(references, np.float32)
    parts = np.asarray(particles, np.float32)
    nref = refs.shape[0] if refs.ndim == 3 else 1
    if int(shrink1) != shrink1 or shrink1 < 1:
        raise ValueError(f"shrink1: must be an integer >= 1, got {shrink1}")
    n1 = 3 * int(np.sqrt(nref)) if ncenters is None else int(ncenters)
    if n1 < 1:
        raise ValueError(f"ncenters: must be >= 1, got {ncenters}")
    if int(nbest_centers) != nbest_centers or nbest_centers < 1:
        raise ValueError(f"nbest_centers: must be an integer >= 1, got {nbest_centers}")
    n1 = min(n1, nref)
    unknown = set(options) - {"align", "align_options", "ralign", "ralign_options", "cmp",
                              "cmp_options", "mask", "shrink", "maxshift", "candidates",
                              "workers", "progress", "chunk"}  # fmt: skip
    if unknown:
        raise ValueError(f"options: unknown {', '.join(sorted(unknown))}")
    progress = options.pop("progress", None)
    common = {k: options[k] for k in ("align", "align_options", "maxshift", "workers")
              if k in options}  # fmt: skip
    clock = [time.perf_counter()]
    selfsim = similarity_matrix(refs, refs, shrink=shrink1, **common)
    dist = 0.5 * (selfsim.score + selfsim.score.T).astype(np.float64)
    np.fill_diagonal(dist, dist.min() - 1.0)
    centers = _centers(dist, n1)
    dc = dist[:, centers]
    dc[centers, np.arange(n1)] = -np.inf  # a centre is its own closest centre
    members = np.argsort(dc, axis=1, kind="stable")[:, : min(2, n1)]
    averages = np.zeros((n1, *refs.shape[1:]), np.float32)
    for c in range(n1):
        mem = np.flatnonzero((members == c).any(1))
        t = centers[c]
        moved = transform_images_2d(refs[mem], selfsim.angle[mem, t], selfsim.dx[mem, t],
                                    selfsim.dy[mem, t], selfsim.mirror[mem, t])  # fmt: skip
        averages[c] = moved.mean(0)
    clock.append(time.perf_counter())
    stage1 = similarity_matrix(parts, averages, shrink=shrink1,
                               **{k: v for k, v in options.items()
                                  if k in ("align", "align_options", "cmp", "cmp_options",
                                           "mask", "maxshift", "workers", "chunk")})  # fmt: skip
    clock.append(time.perf_counter())
    nb = min(int(nbest_centers), n1)
    best = np.argsort(stage1.score, axis=1, kind="stable")[:, :nb]
    member_sets = [np.flatnonzero((members == c).any(1)) for c in range(n1)]
    rows = [np.unique(np.concatenate([member_sets[c] for c in row])) for row in best]
    width = max(r.size for r in rows) if rows else 0
    pairs = np.full((parts.shape[0], width), -1, np.int64)
    for i, r in enumerate(rows):
        pairs[i, : r.size] = r
    result = _pairs_matrix(parts, refs, pairs, progress=progress, **options)
    clock.append(time.perf_counter())
    info = {
        "seconds": dict(
            zip(("references", "stage1", "stage2"), np.diff(clock).tolist(), strict=True)
        ),  # fmt: skip
        "centers": centers,
        "members": members,
        "computed_fraction": float((pairs >= 0).sum()) / max(1, parts.shape[0] * nref),
    }
    return result, info


def _pairs_matrix(parts, refs, pairs, *, align="rotate_translate_flip", align_options=None,
                  ralign=None, ralign_options=None, cmp="ccc", cmp_options=None, mask=None,
                  shrink=1, maxshift=None, candidates=0, workers=None, progress=None,
                  chunk=1024) -> Alignment2D:  # fmt: skip
    """Stage 2 of :func:`twostage_similarity`: the listed pairs, scattered into (N, M)."""
    align, ralign, cmp, aopts, ropts = _checked(align, ralign, cmp, align_options,
                                                ralign_options, shrink)  # fmt: skip
    shrink = int(shrink)
    a, b, m, ms, opts = _prepare(parts, refs, shrink, mask, maxshift, cmp, cmp_options)
    ang, dx, dy, mir, score = _similarity(
        a, b, pairs, align=align, align_options=aopts, ralign=ralign, ralign_options=ropts,
        cmp=cmp, opts=opts, mask=m, ms=ms, candidates=int(candidates), workers=workers,
        progress=progress, chunk=int(chunk))  # fmt: skip
    nimg, nref = a.shape[0], b.shape[0]
    full = [np.zeros((nimg, nref)) for _ in range(3)]
    fmir = np.zeros((nimg, nref), bool)
    fscore = np.full((nimg, nref), np.nan)
    rows = np.broadcast_to(np.arange(nimg)[:, None], pairs.shape)
    ok = pairs >= 0
    for f, v in zip(full, (ang, dx, dy), strict=True):
        f[rows[ok], pairs[ok]] = v[ok]
    fmir[rows[ok], pairs[ok]] = mir[ok]
    fscore[rows[ok], pairs[ok]] = score[ok]
    rowmax = np.where(np.isfinite(fscore), fscore, -np.inf).max(axis=1, initial=-np.inf)
    rowmax = np.where(np.isfinite(rowmax), rowmax, 0.0)
    fscore = np.where(np.isnan(fscore), (rowmax + _FILL)[:, None], fscore)
    return _result(*full, fmir, fscore, shrink)
