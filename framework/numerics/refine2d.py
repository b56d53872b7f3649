"""Local 2D refinement of alignments (EMAN2's ``refine`` aligner), batched over pairs.

Conventions are those of :mod:`.align2d`: (angle, dx, dy, mirror) brings the particle onto
the reference, angles in degrees, shifts in pixels, centre ``n // 2``. The mirror flag is kept
fixed, as in EMAN2.

EMAN2 runs a Nelder-Mead simplex (GSL) per pair over (dx, dy, angle) starting from the given
alignment, initial steps 1 px, 1 px, 5 degrees, precision 0.04, at most 28 iterations. Here all
pairs move together in a compass search with the same start steps: each round evaluates the
six moves +-step along each parameter for every pair, takes the best improving one, and
halves a pair's steps when none improves; it stops when the steps fall below ``precision``
(in pixels; the angle step scales with it) or after ``maxiter`` rounds. The objective is the
Pearson correlation (:func:`.compare.ccc`) of the bilinearly transformed particle with its
reference; the score returned is -ccc (EMAN2 sign). A result with |dx| or |dy| > ``maxshift``
is replaced by the input alignment (EMAN2).

The objective is evaluated by a compiled kernel (:func:`._align_kernels.transformed_ccc`) that
samples the transformed particle and sums the moments on the fly, in parallel over pairs and
trial moves (same values as transforming with :func:`.transform_images_2d` and correlating).
"""

from __future__ import annotations

import numpy as np

from .align2d import Alignment2D, _stack

__all__ = ["refine_2d"]


def _paired_ccc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = a.reshape(a.shape[0], -1).astype(np.float64)
    y = b.reshape(b.shape[0], -1).astype(np.float64)
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(1) / den, 0.0)


def refine_2d(images, references, angle, dx, dy, mirror, *, maxshift: float | None = None,
              precision: float = 0.04, maxiter: int = 60) -> Alignment2D:  # fmt: skip
    """Refine one alignment per (image, reference) pair.

    Parameters
    ----------
    images, references : array (N, y, x)
        Pair n is (images[n], references[n]); a single reference (y, x) is used for all.
    angle, dx, dy, mirror : array (N,) or scalars
        Start alignment (degrees, pixels, bool), e.g. from :func:`.rotate_translate_flip`.
    maxshift : float, optional
        Largest allowed |dx|, |dy| in pixels (default box / 4).
    precision : float
        Final step in pixels (angle step = 5 * precision degrees).
    maxiter : int
        Rounds of the search.

    Returns
    -------
    Alignment2D with (N,) arrays.
    """
    a = _stack(images, "images")
    b = _stack(references, "references")
    if b.shape[0] == 1 and a.shape[0] > 1:
        b = np.broadcast_to(b, a.shape)
    if a.shape != b.shape:
        raise ValueError(f"references: need one per image, got {b.shape} for {a.shape}")
    if not precision > 0 or int(maxiter) < 1:
        raise ValueError("precision, maxiter: must be > 0 and >= 1")
    n = a.shape[0]
    ms = a.shape[1] / 4 if maxshift is None else float(maxshift)
    p0 = np.stack([np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in (dx, dy, angle)], 1)
    mir = np.broadcast_to(np.asarray(mirror, bool), (n,))
    p = p0.copy()
    step = np.tile([1.0, 1.0, 5.0], (n, 1))

    from . import _align_kernels as _k

    a_c = np.ascontiguousarray(a)
    b_c = b if b.flags.c_contiguous else np.ascontiguousarray(b)
    mir_c = np.ascontiguousarray(mir)

    def trials(idx, q):
        """ccc of pair idx[i] transformed by each row of q[i] (k, t, 3) -> (k, t)."""
        res = np.empty(q.shape[:2])
        _k.transformed_ccc(a_c, b_c, np.ascontiguousarray(idx, np.int64),
                           np.ascontiguousarray(q, np.float64), mir_c, res)  # fmt: skip
        return res

    best = trials(np.arange(n), p[:, None, :])[:, 0]
    moves = np.concatenate([np.eye(3), -np.eye(3)])
    for _ in range(int(maxiter)):
        active = step[:, 0] >= precision
        if not active.any():
            break
        idx = np.flatnonzero(active)
        trial = p[idx, None, :] + moves[None] * step[idx, None, :]  # (k, 6, 3)
        s = trials(idx, trial)
        k = np.argmax(s, 1)
        gain = s[np.arange(idx.size), k] > best[idx]
        up = idx[gain]
        p[up] = trial[np.flatnonzero(gain), k[gain]]
        best[up] = s[gain, k[gain]]
        step[idx[~gain]] *= 0.5
    out = (np.abs(p[:, 0]) > ms) | (np.abs(p[:, 1]) > ms)
    p[out] = p0[out]
    if out.any():
        best[out] = trials(np.flatnonzero(out), p0[out][:, None, :])[:, 0]
    return Alignment2D.of(p[:, 2], p[:, 0], p[:, 1], mir.copy(), -best)
