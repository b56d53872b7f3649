"""Classification of particles from a similarity matrix (EMAN2 ``e2classify``).

Conventions: a similarity matrix is an :class:`emforge.numerics.Alignment2D` of (N, M) arrays,
N particles by M references, scores EMAN2-signed (smaller is better); the alignment of entry
[i, j] brings particle i onto reference j (:mod:`emforge.numerics.align2d`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emforge.numerics.align2d import Alignment2D

__all__ = ["Classification", "classify"]


@dataclass(frozen=True)
class Classification:
    """The ``sep`` classes of every particle, best first: (N, sep) arrays.

    ``reference`` int64 class (reference) index; ``angle`` degrees, ``dx``, ``dy`` pixels,
    ``mirror`` bool: the alignment of the particle onto that reference; ``score`` its
    similarity-matrix score (smaller is better).
    """

    reference: np.ndarray
    angle: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    mirror: np.ndarray
    score: np.ndarray


def classify(sim: Alignment2D, *, sep: int = 1) -> Classification:
    """Put each particle in its ``sep`` best classes (EMAN2 ``e2classify``).

    For each row, ``sep`` times: the class is the argmin of the row's scores (the first on
    ties), then that entry is set to the row's maximum so that the next pass finds the
    next-best class (EMAN2's rule; with ``sep`` > M a class repeats once every entry is at the
    maximum).

    Parameters
    ----------
    sim : Alignment2D with (N, M) arrays
        Similarity matrix, e.g. from :func:`.similarity_matrix`.
    sep : int
        Classes per particle, >= 1.

    Returns
    -------
    Classification with (N, sep) arrays; alignment and score copied from ``sim``.
    """
    score = np.asarray(sim.score)
    if score.ndim != 2 or score.shape[1] < 1:
        raise ValueError(f"sim: need (N, M) arrays with M >= 1, got {score.shape}")
    if int(sep) != sep or sep < 1:
        raise ValueError(f"sep: must be an integer >= 1, got {sep}")
    work = np.array(score, dtype=np.float64)
    rowmax = work.max(axis=1) if work.shape[0] else np.zeros(0)
    rows = np.arange(work.shape[0])
    cls = np.empty((work.shape[0], int(sep)), np.int64)
    for k in range(int(sep)):
        j = np.argmin(work, axis=1)
        cls[:, k] = j
        work[rows, j] = rowmax
    pick = [np.asarray(getattr(sim, f))[rows[:, None], cls] for f in
            ("angle", "dx", "dy", "mirror", "score")]  # fmt: skip
    return Classification(cls, *pick)
