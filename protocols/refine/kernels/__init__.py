"""Pure kernels of the refinement family (issue 12): ndarrays in, ndarrays out.

Similarity matrix, classification and poses (:mod:`.simmx`, :mod:`.classify`, :mod:`.poses`);
selection, class averaging, make3d and the gold-standard post-processing
(:mod:`.selection`, :mod:`.classaverage`, :mod:`.make3d`, :mod:`.postprocess`).
"""

from __future__ import annotations

from .classaverage import ClassAverages, class_averages
from .classify import Classification, classify
from .make3d import Make3D, make3d
from .poses import angular_error, poses_from_alignment
from .postprocess import GoldStandard, eman_resolution, gold_standard_postprocess
from .selection import keep_mask
from .simmx import (
    ALIGNERS,
    COMPARATORS,
    RALIGNERS,
    similarity_matrix,
    twostage_similarity,
)

__all__ = [
    "ALIGNERS",
    "COMPARATORS",
    "RALIGNERS",
    "Classification",
    "ClassAverages",
    "GoldStandard",
    "Make3D",
    "angular_error",
    "class_averages",
    "classify",
    "eman_resolution",
    "gold_standard_postprocess",
    "keep_mask",
    "make3d",
    "poses_from_alignment",
    "similarity_matrix",
    "twostage_similarity",
]
