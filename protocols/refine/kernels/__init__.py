"""Pure kernels of the refinement family (#12): ndarrays in, ndarrays out (contract in the
family's docs). This file holds the CLASSAVG part: selection, class averaging, make3d and the
gold-standard post-processing."""

from __future__ import annotations

from .classaverage import ClassAverages, class_averages
from .make3d import Make3D, make3d
from .postprocess import GoldStandard, eman_resolution, gold_standard_postprocess
from .selection import keep_mask

__all__ = [
    "ClassAverages",
    "GoldStandard",
    "Make3D",
    "class_averages",
    "eman_resolution",
    "gold_standard_postprocess",
    "keep_mask",
    "make3d",
]
