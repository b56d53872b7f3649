"""Sets by tag and EMAN2's spatial even/odd split (e2spt_buildsets ``--spliteo``)."""

from __future__ import annotations

import numpy as np

__all__ = ["spatial_halves"]


def spatial_halves(x: np.ndarray, group: np.ndarray, seed: int = 0) -> np.ndarray:
    """Half-set per point: 1 where ``x < m``, else 2, with ``m`` the median of ``x`` within
    the point's ``group`` (tomogram) plus N(0, 0.01) jitter (seeded), as e2spt_buildsets does
    (a spatial split, so neighbouring particles share a half).

    ``x``: (n,) float positions in any unit; ``group``: (n,) labels. Returns (n,) int64 of 1/2.
    """
    x = np.asarray(x, dtype=np.float64)
    group = np.asarray(group)
    rng = np.random.default_rng(seed)
    out = np.empty(len(x), dtype=np.int64)
    for g in sorted(set(group.tolist())):
        sel = group == g
        m = float(np.median(x[sel])) + rng.normal(0.0, 0.01)
        out[sel] = np.where(x[sel] < m, 1, 2)
    return out
