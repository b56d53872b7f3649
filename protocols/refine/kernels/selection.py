"""EMAN2's ``keep`` / ``keepsig`` selection of the best scores (e2classaverage, e2make3dpar).

Scores follow the EMAN2 sign: **smaller is better**. To select on a quality where larger is
better (class_qual), pass its negative.
"""

from __future__ import annotations

import numpy as np

__all__ = ["keep_mask"]


def keep_mask(scores, keep: float, *, keepsig: bool = False) -> np.ndarray:
    """The entries of ``scores`` that EMAN2 keeps (lower is better).

    Parameters
    ----------
    scores : array (n,)
        Finite scores, smaller is better. NaN entries are never kept (and do not enter the
        statistics).
    keep : float
        ``keepsig`` False: the fraction to keep; the threshold is ``sorted(scores)[int(n *
        keep)]`` (index clipped to n - 1) and scores ``<= threshold`` are kept, so
        ``keep = 0.8`` on 1..100 keeps 81 (EMAN2's off-by-one, kept: users' numbers rely on it).
        ``keepsig`` True: the threshold is ``mean + keep * std`` (population std); ``keep =
        1.0`` on 1..100 keeps 79.
    keepsig : bool

    Returns
    -------
    ndarray (n,) bool. When nothing would be kept, the best (lowest) score is reinstated
    (EMAN2); an empty or all-NaN input gives all False.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = float(keep)
    if not np.isfinite(k) or (not keepsig and k < 0):
        raise ValueError(f"keep: must be a finite number (>= 0 without keepsig), got {keep!r}")
    out = np.zeros(s.size, dtype=bool)
    ok = np.isfinite(s)
    if not ok.any():
        return out
    v = s[ok]
    if keepsig:
        thresh = v.mean() + k * v.std()
    else:
        srt = np.sort(v)
        thresh = srt[min(int(v.size * k), v.size - 1)]
    out[ok] = v <= thresh
    if not out.any():
        out[np.flatnonzero(ok)[np.argmin(v)]] = True
    return out
