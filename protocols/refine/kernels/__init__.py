"""Pure kernels of the refinement family (issue 12): ndarrays in, ndarrays out.

Similarity matrix, classification and poses (:mod:`.simmx`, :mod:`.classify`, :mod:`.poses`);
class averaging, selection, reconstruction and postprocessing in the modules listed below.
"""

from .classify import Classification, classify
from .poses import angular_error, poses_from_alignment
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
    "angular_error",
    "classify",
    "poses_from_alignment",
    "similarity_matrix",
    "twostage_similarity",
]

# --- CLASSAVG helper's kernels (selection, classaverage, make3d, postprocess): add the imports
# --- and their names to __all__ here.
