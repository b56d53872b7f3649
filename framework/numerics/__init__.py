"""Shared numerical toolkit: cached FFTs (:mod:`.fft`) and Fourier-space tools (:mod:`.fourier`).

Import from here: ``from emforge.numerics import rfftn, fsc, bfactor_filter``. See the module
docstrings for the conventions (rfft half-grids, s in 1/Angstrom, shells, Hermitian weights,
B-factor sign).
"""

from __future__ import annotations

from .fft import (
    backend,
    clear_plan_cache,
    default_threads,
    export_wisdom,
    import_wisdom,
    irfftn,
    plan_cache_size,
    rfft_shape,
    rfftn,
)
from .fourier import (
    MaskedFSC,
    amplitude_profile,
    amplitude_profile_rfft,
    apply_radial_filter,
    bfactor_filter,
    default_nshells,
    fsc,
    fsc_crossing,
    fsc_rfft,
    guinier_fit,
    hermitian_weights,
    lowpass,
    masked_fsc_corrected,
    phase_randomize,
    radial_average,
    radial_filter_grid,
    radial_sum,
    raised_cosine,
    shell_frequencies,
    shell_index_rfft,
    spatial_frequency_rfft,
)

__all__ = [
    "backend",
    "clear_plan_cache",
    "default_threads",
    "export_wisdom",
    "import_wisdom",
    "irfftn",
    "plan_cache_size",
    "rfft_shape",
    "rfftn",
    "MaskedFSC",
    "amplitude_profile",
    "amplitude_profile_rfft",
    "apply_radial_filter",
    "bfactor_filter",
    "default_nshells",
    "fsc",
    "fsc_crossing",
    "fsc_rfft",
    "guinier_fit",
    "hermitian_weights",
    "lowpass",
    "masked_fsc_corrected",
    "phase_randomize",
    "radial_average",
    "radial_filter_grid",
    "radial_sum",
    "raised_cosine",
    "shell_frequencies",
    "shell_index_rfft",
    "spatial_frequency_rfft",
]
