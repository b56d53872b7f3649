"""Robust automatic 3D masks: the molecule is the best-ranked component, not the brightest voxels.

Private module of :mod:`emforge.protocols.automask.kernels` (see :func:`robust_auto_mask`).
Volumes are ``(z, y, x)`` float32, the box centre is index ``N // 2``, connectivity is
6-connected; pixel sizes, resolutions and distances in Angstrom unless stated.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ._morphology import CROSS

__all__ = ["choose_components", "mask_warnings", "soft_edge_width"]

#: threshold as a fraction of the molecule's low-passed peak (the map is low-passed at the
#: resolution, so the contour at this low level lies about one blur length outside the atoms)
THRESHOLD_FRACTION = 0.05
#: a component is kept when its score reaches this fraction of the best one
KEEP_FRACTION = 0.2


def _centrality(centroid: list[float], shape: tuple[int, ...]) -> float:
    """``1 / (1 + (d / (n/4))**2)``, ``d`` the distance (px) of ``centroid`` from the box
    centre, ``n = min(shape)``."""
    d = math.dist(centroid, [n // 2 for n in shape])
    return 1.0 / (1.0 + (d / (0.25 * min(shape))) ** 2)


def _rank(lp: np.ndarray, labels: np.ndarray, count: int) -> tuple[np.ndarray, int, float]:
    """Scores (integrated density times centrality) of the components that can matter,
    the best label and its peak value.

    The integrated density bounds a score from above, so components are visited by
    decreasing density and the walk stops once one cannot reach ``KEEP_FRACTION`` of the
    best score: the others get score 0 (they would not be kept either way). Masses and
    density-weighted centroids of all components come from one pass over the foreground
    voxels (weighted ``bincount`` of the values and of the values times each coordinate).
    """
    flat = labels.ravel()
    idx = np.flatnonzero(flat)  # the foreground only: no 16-byte copy of every voxel
    lab = flat[idx]
    vals = lp.ravel()[idx].astype(np.float64)
    mass = np.bincount(lab, weights=vals, minlength=count + 1)
    mass[0] = 0.0
    moments = []
    for stride, n in zip(np.cumprod((1,) + lp.shape[:0:-1])[::-1], lp.shape, strict=True):
        coord = (idx // stride) % n
        moments.append(np.bincount(lab, weights=vals * coord, minlength=count + 1))
    score = np.zeros(count + 1)
    best = 0
    for k in np.argsort(mass)[::-1]:
        if k == 0 or mass[k] <= 0 or mass[k] < KEEP_FRACTION * score[best]:
            break
        centroid = [float(m[k]) / mass[k] for m in moments]
        score[k] = mass[k] * _centrality(centroid, lp.shape)
        if score[k] > score[best]:
            best = int(k)
    best_peak = float(vals[lab == best].max()) if best else 0.0
    return score, best, best_peak


def _region(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``keep[labels]``: a comparison per kept label when they are few (a bool lookup table
    gathered per voxel costs more than a handful of vectorised comparisons)."""
    kept = np.flatnonzero(keep)
    if len(kept) > 4:
        return keep[labels]
    out = np.zeros(labels.shape, dtype=bool)
    for k in kept:
        out |= labels == k
    return out


def choose_components(lp: np.ndarray) -> tuple[np.ndarray, dict]:
    """Pick the molecule in a low-passed map and the threshold that outlines it.

    1. ``t = 0.05 *`` the highest value within ``min(shape) / 4`` px of the box centre; label
       the 6-connected components of ``lp > t``; score each by its integrated density (sum of
       ``lp``) times its centrality ``1 / (1 + (d / (n/4))**2)``, ``d`` the distance (px)
       of its density-weighted centroid from the box centre, ``n = min(shape)``.
    2. ``t = 0.05 *`` the best component's peak, and step 1 is repeated once at that ``t``.
    3. Keep every component whose score is at least 0.2 of the best one.

    Returns the kept region (bool, ``lp.shape``) and the numbers behind it: ``threshold``,
    ``molecule_peak``, ``map_peak``, ``components``, ``kept``.
    """
    top = float(lp.max())
    r = max(1, min(lp.shape) // 4)
    win = tuple(slice(max(n // 2 - r, 0), n // 2 + r + 1) for n in lp.shape)
    central = float(lp[win].max())
    if not central > 1e-3 * float(np.abs(lp).max()):  # only rounding noise is positive
        raise ValueError("volume: the low-passed map has no positive density near the centre")
    thr = THRESHOLD_FRACTION * central
    for _ in range(2):
        labels, count = ndimage.label(lp > thr, structure=CROSS)
        score, best, peak = _rank(lp, labels, count)
        if best == 0:
            raise ValueError("volume: no density above the threshold of the automatic mask")
        if THRESHOLD_FRACTION * peak == thr:
            break
        thr = THRESHOLD_FRACTION * peak
    keep = score >= KEEP_FRACTION * score[best]
    keep[0] = False
    keep &= score > 0
    info = {
        "threshold": float(thr),
        "molecule_peak": peak,
        "map_peak": top,
        "components": int(count),
        "kept": int(keep.sum()),
    }
    return _region(labels, keep), info


def soft_edge_width(resolution: float, pixel_size: float) -> int:
    """Width (px) of the Gaussian soft edge: half the resolution, at least 1 px."""
    return max(1, int(round(0.5 * resolution / pixel_size)))


def mask_warnings(lp: np.ndarray, mask: np.ndarray, threshold: float, pixel_size: float) -> list:
    """Sentences for what a user should check: the box centre or most of the density above
    ``threshold`` outside the mask, or a brighter density than the masked one left out."""
    out = []
    inside = mask >= 0.5
    centre = tuple(n // 2 for n in lp.shape)
    reach = max(2, int(0.1 * min(lp.shape)))
    near = tuple(slice(max(c - reach, 0), c + reach + 1) for c in centre)
    if not inside[near].any():
        out.append(
            f"the mask misses the box centre (nothing within {reach} px of voxel {centre}): "
            "is the particle centred?"
        )
    above = lp > threshold
    total = float(lp.sum(where=above, dtype=np.float64))
    covered = float(lp.sum(where=above & inside, dtype=np.float64))
    if total > 0 and covered < 0.5 * total:
        out.append(
            f"the mask holds only {100 * covered / total:.0f}% of the density above the "
            f"threshold {threshold:.4g}: check the map for other particles or contaminants"
        )
    peak_in = float(lp.max(where=inside, initial=0.0))
    peak_out = float(lp.max(where=~inside, initial=-np.inf))
    if peak_out > peak_in:
        at = np.unravel_index(int(np.argmax(np.where(inside, -np.inf, lp))), lp.shape)
        dist = pixel_size * math.dist(at, centre)
        out.append(
            f"a density brighter than the masked one was left out (low-passed peak "
            f"{peak_out:.4g} > {peak_in:.4g}, at voxel {tuple(map(int, at))}, "
            f"{dist:.0f} Å from the centre): a contaminant, or an off-centre particle?"
        )
    return out
