"""Scoring a refinement against the known truth (used by refine_acceptance.py and bench_refine.py).

A refinement started from a rotated model gives a map in the model's frame, not the truth's:
the map is compared with the truth after a rotational search (global on coarse maps, then
local), for the truth and for its mirror image (the hand check). Conventions: maps (z, y, x);
``numerics.rotate_volume(v, G)`` is ``G·v`` (``out(r) = v(G^T r)``); pose matrices are RELION
(map frame -> particle frame), so a projection of ``G·truth`` at ``A`` is a projection of the
truth at ``A G``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def soft_sphere(box: int, radius: float, edge: float = 4.0) -> np.ndarray:
    """A centred sphere of ``radius`` px with a raised-cosine edge of ``edge`` px (float32)."""
    g = np.arange(box) - box // 2
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    x = np.clip((r - radius) / edge, 0.0, 1.0)
    return (0.5 * (1 + np.cos(np.pi * x))).astype(np.float32)


def _cc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _small_rotations(step: float) -> np.ndarray:
    """27 rotations: identity and the axis-angle vectors of a 3x3x3 grid of spacing ``step``."""
    from emforge.numerics import axis_angle_to_matrix

    out = []
    for v in np.stack(np.meshgrid(*[[-step, 0.0, step]] * 3, indexing="ij"), -1).reshape(-1, 3):
        ang = float(np.linalg.norm(v))
        out.append(np.eye(3) if ang == 0 else axis_angle_to_matrix(v / ang, ang))
    return np.stack(out)


@dataclass
class Fit:
    """The rotation ``matrix`` (and shift, voxels x, y, z) putting the truth in the map's frame."""

    matrix: np.ndarray
    shift: np.ndarray
    cc: float


def fit_rotation(map_: np.ndarray, truth: np.ndarray, *, pixel_size: float) -> Fit:
    """The G (and shift) maximising CC(map, G·truth): a global search at 10° on 24³ maps
    low-passed at 15 Å, local refinement down to 0.3° on 48³ maps at 8 Å, then the shift
    from the peak of the cross-correlation (parabolic sub-voxel)."""
    from emforge.numerics import ccf_3d, lowpass, rotate_volume, so3_grid
    from emforge.protocols.reconstruct.kernels import fourier_resize

    n = map_.shape[0]

    def coarse(v: np.ndarray, box: int, res: float) -> np.ndarray:
        px = pixel_size * n / box
        c = fourier_resize(v, box) if box != n else v
        return lowpass(c, max(res, 2.2 * px), pixel_size=px) * soft_sphere(box, box * 0.42)

    m24, t24 = coarse(map_, 24, 15.0), coarse(truth, 24, 15.0)
    grid = so3_grid(10.0)
    scores = [_cc(m24, rotate_volume(t24, g)) for g in grid]
    best = grid[int(np.argmax(scores))]
    box2 = min(n, 48)
    m48, t48 = coarse(map_, box2, 8.0), coarse(truth, box2, 8.0)
    score = _cc(m48, rotate_volume(t48, best))
    for step in (5.0, 2.5, 1.2, 0.6, 0.3):
        improved = True
        while improved:
            cands = _small_rotations(step) @ best
            s = [_cc(m48, rotate_volume(t48, g)) for g in cands]
            k = int(np.argmax(s))
            improved = s[k] > score + 1e-7
            if improved:
                best, score = cands[k], s[k]
    ccf = ccf_3d(map_, rotate_volume(truth, best, order=3))
    peak = np.array(np.unravel_index(int(np.argmax(ccf)), ccf.shape))
    sub = []
    for ax in range(3):
        idx = [tuple(peak)] * 3
        lo, hi = peak.copy(), peak.copy()
        lo[ax] = (lo[ax] - 1) % n
        hi[ax] = (hi[ax] + 1) % n
        y0, y1, y2 = ccf[tuple(lo)], ccf[tuple(idx[0])], ccf[tuple(hi)]
        den = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / den if den != 0 else 0.0
        p = peak[ax] + frac
        sub.append(p - n if p > n / 2 else p)
    shift = np.array(sub[::-1])  # (x, y, z)
    return Fit(best, shift, score)


def truth_in_frame(truth: np.ndarray, fit: Fit) -> np.ndarray:
    from emforge.numerics import rotate_volume

    return rotate_volume(truth, fit.matrix, order=3, shift=fit.shift)


def mirrored(truth: np.ndarray) -> np.ndarray:
    """The mirror image z -> -z about the box centre (index i -> n - i)."""
    return np.roll(truth[::-1], 1, axis=0)


def fsc_resolution(a: np.ndarray, b: np.ndarray, *, pixel_size: float, mask=None, threshold=0.5):
    """Resolution (Å) where FSC(a·mask, b·mask) crosses ``threshold``."""
    from emforge.numerics import fsc, fsc_crossing

    if mask is not None:
        a, b = a * mask, b * mask
    s, f = fsc(a, b, pixel_size=pixel_size)
    return float(fsc_crossing(s, f, threshold))


def angular_errors(eulers: np.ndarray, true_eulers: np.ndarray, fit: Fit, symmetry: str):
    """Per particle: the angle (deg) between the refined pose composed with the map's frame
    (``A G``) and the true pose, the smallest over the truth's symmetry operators."""
    from emforge.numerics import euler_zyz_to_matrix, rotation_angle_between, symmetry_matrices

    a = euler_zyz_to_matrix(np.asarray(eulers, np.float64)) @ fit.matrix
    t = euler_zyz_to_matrix(np.asarray(true_eulers, np.float64))
    ops = symmetry_matrices(symmetry)
    errs = np.stack([rotation_angle_between(a @ s, t) for s in ops])
    return errs.min(axis=0)
