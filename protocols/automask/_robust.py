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


def _component_stats(lp: np.ndarray, labels: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """Integrated density, peak, peak voxel and density-weighted centroid of each label."""
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx]
    val = lp.ravel()[idx].astype(np.float64)
    mass = np.bincount(lab, weights=val, minlength=count + 1)
    zyx = np.unravel_index(idx, lp.shape)
    centroid = (
        np.stack([np.bincount(lab, weights=val * c, minlength=count + 1) for c in zyx], axis=1)
        / np.maximum(mass, 1e-30)[:, None]
    )
    peak = np.full(count + 1, -np.inf)
    np.maximum.at(peak, lab, val)
    peak_at = np.zeros(count + 1, dtype=np.int64)
    hit = val == peak[lab]
    peak_at[lab[hit]] = idx[hit]
    return {"mass": mass, "centroid": centroid, "peak": peak, "peak_at": peak_at}


def _scores(stats: dict, shape: tuple[int, ...]) -> np.ndarray:
    """Integrated density times centrality ``1 / (1 + (d / (n/4))**2)``, ``d`` the distance
    (px) of the component's centroid from the box centre, ``n = min(shape)``."""
    centre = np.array([n // 2 for n in shape], dtype=np.float64)
    d = np.linalg.norm(stats["centroid"] - centre, axis=1)
    score = stats["mass"] / (1.0 + (d / (0.25 * min(shape))) ** 2)
    score[0] = -np.inf
    return score


def choose_components(lp: np.ndarray) -> tuple[np.ndarray, dict]:
    """Pick the molecule in a low-passed map and the threshold that outlines it.

    1. ``t = 0.05 *`` the highest value within ``min(shape) / 4`` px of the box centre; label
       the 6-connected components of ``lp > t``; score each by its integrated density (sum of
       ``lp``) times its centrality (see :func:`_scores`).
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
        stats = _component_stats(lp, labels, count)
        score = _scores(stats, lp.shape)
        best = int(np.argmax(score))
        peak = float(stats["peak"][best])
        if THRESHOLD_FRACTION * peak == thr:
            break
        thr = THRESHOLD_FRACTION * peak
    keep = score >= KEEP_FRACTION * score[best]
    keep[0] = False
    info = {
        "threshold": float(thr),
        "molecule_peak": peak,
        "map_peak": top,
        "components": int(count),
        "kept": int(keep.sum()),
    }
    return keep[labels], info


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
    total = float(lp[above].sum(dtype=np.float64))
    covered = float(lp[above & inside].sum(dtype=np.float64))
    if total > 0 and covered < 0.5 * total:
        out.append(
            f"the mask holds only {100 * covered / total:.0f}% of the density above the "
            f"threshold {threshold:.4g}: check the map for other particles or contaminants"
        )
    outside = np.where(inside, -np.inf, lp)
    at = np.unravel_index(int(np.argmax(outside)), lp.shape)
    peak_in = float(lp[inside].max()) if inside.any() else 0.0
    if outside[at] > peak_in:
        dist = pixel_size * math.dist(at, centre)
        out.append(
            f"a density brighter than the masked one was left out (low-passed peak "
            f"{float(outside[at]):.4g} > {peak_in:.4g}, at voxel {tuple(map(int, at))}, "
            f"{dist:.0f} Å from the centre): a contaminant, or an off-centre particle?"
        )
    return out
