"""Pure sharpening kernels (ndarrays in, ndarrays out; no files, no database).

* :mod:`.bfactor` - global B-factor modes (b_sharpen, target b_iso, b_iso_to_d_cut,
  resolution_dependent) and the map's own B (Wilson/Guinier fit).
* :mod:`.halfmaps` - RELION postprocess and the Phenix half-map route.
* :mod:`.auto` - b_iso scan scored by adjusted surface area or kurtosis.
* :mod:`.aniso` - the overall anisotropic B tensor (fit and removal).

Shared Fourier tools (FFTs, shells, FSC, filters) live in :mod:`emforge.numerics`.
"""

from __future__ import annotations

from .aniso import AnisoB, fit_aniso_b, remove_aniso
from .auto import (
    AutoSharpenResult,
    SurfaceAreaScore,
    adjusted_surface_area,
    apply_auto_sharpening,
    auto_sharpen,
    estimate_solvent_fraction,
    kurtosis,
)
from .bfactor import (
    b_iso_to_d_cut_filter,
    d_cut_weight,
    estimate_b_iso,
    resolution_dependent_filter,
    sharpen_b,
    sharpen_b_iso_to_d_cut,
    sharpen_resolution_dependent,
    sharpen_to_b_iso,
)
from .halfmaps import HalfmapResult, fsc_weight, sharpen_halfmaps, sharpen_halfmaps_phenix

__all__ = [
    "AnisoB",
    "fit_aniso_b",
    "remove_aniso",
    "AutoSharpenResult",
    "apply_auto_sharpening",
    "SurfaceAreaScore",
    "adjusted_surface_area",
    "auto_sharpen",
    "estimate_solvent_fraction",
    "kurtosis",
    "b_iso_to_d_cut_filter",
    "d_cut_weight",
    "estimate_b_iso",
    "resolution_dependent_filter",
    "sharpen_b",
    "sharpen_b_iso_to_d_cut",
    "sharpen_resolution_dependent",
    "sharpen_to_b_iso",
    "HalfmapResult",
    "fsc_weight",
    "sharpen_halfmaps",
    "sharpen_halfmaps_phenix",
]
