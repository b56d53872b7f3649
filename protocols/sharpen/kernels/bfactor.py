"""Global B-factor sharpening kernels (Phenix ``map_sharpening`` b_iso modes).

All kernels take a map as a float32 ndarray (z, y, x) (2D (y, x) also works), a pixel size in
Angstrom and keyword-only options; they return new float32 arrays of the same shape.
B factors follow the crystallographic sign: a map with B has Fourier amplitudes falling as
``exp(-B s^2 / 4)``; *sharpening* by ``b_sharpen > 0`` multiplies by ``exp(+b_sharpen s^2/4)``.
"""

from __future__ import annotations

import numpy as np

from emforge.numerics import (
    amplitude_profile_rfft,
    guinier_fit,
    irfftn,
    rfftn,
    spatial_frequency_rfft,
)

__all__ = [
    "estimate_b_iso",
    "sharpen_b",
    "sharpen_to_b_iso",
    "sharpen_b_iso_to_d_cut",
    "sharpen_resolution_dependent",
    "b_iso_to_d_cut_filter",
    "d_cut_weight",
    "resolution_dependent_filter",
]


# ---------------------------------------------------------------- validation (shared by kernels)
def check_map(map, name: str = "map") -> np.ndarray:
    """Return ``map`` as float32 after checking it is a finite, non-constant 2D/3D array."""
    a = np.asarray(map)
    if a.ndim not in (2, 3) or min(a.shape) < 4:
        raise ValueError(f"{name}: must be a 2D or 3D array with every side >= 4, got {a.shape}")
    if np.iscomplexobj(a):
        raise ValueError(f"{name}: must be real, got {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if float(a.max()) == float(a.min()):
        raise ValueError(f"{name}: is constant (e.g. all zeros); nothing to sharpen")
    return a


def check_pixel_size(pixel_size) -> float:
    """Return ``pixel_size`` as float after checking it is a positive finite number."""
    px = float(pixel_size)
    if not (np.isfinite(px) and px > 0):
        raise ValueError(f"pixel_size: must be a positive number of Angstrom, got {pixel_size}")
    return px


def check_resolution(d, pixel_size: float, name: str) -> float:
    """Return resolution ``d`` (Angstrom) after checking it is not finer than Nyquist."""
    d = float(d)
    if not (np.isfinite(d) and d > 0):
        raise ValueError(f"{name}: must be a positive resolution in Angstrom, got {d}")
    if d < 2.0 * pixel_size - 1e-6:
        raise ValueError(f"{name}: {d:g} A is finer than Nyquist ({2 * pixel_size:g} A)")
    return d


# ---------------------------------------------------------------- kernels
def estimate_b_iso(map, *, pixel_size: float, d_min: float, d_max: float = 10.0) -> float:
    """The map's own isotropic B (Angstrom^2) from a Wilson/Guinier fit.

    Fits ``ln A(s) = a - B s^2 / 4`` to the radial rms amplitude ``A(s) = sqrt(<|F|^2>)`` per
    shell over ``d_max >= d >= d_min`` (:func:`emforge.numerics.guinier_fit`).
    Positive for a blurred map; a sharpened map gives a small or negative B.
    """
    a = check_map(map)
    px = check_pixel_size(pixel_size)
    d_min = check_resolution(d_min, px, "d_min")
    if not d_max > d_min:
        raise ValueError(f"d_max: must be coarser than d_min ({d_min} A), got {d_max}")
    s, amp = amplitude_profile_rfft(rfftn(a), shape=a.shape, pixel_size=px, kind="rms")
    return guinier_fit(s, amp, d_min=d_min, d_max=d_max)[0]


def _apply(a: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return irfftn(rfftn(a) * grid, shape=a.shape)


def sharpen_b(map, *, pixel_size: float, b_sharpen: float) -> np.ndarray:
    """Sharpen by ``b_sharpen`` (Angstrom^2): multiply F by ``exp(+b_sharpen s^2 / 4)``.

    Negative ``b_sharpen`` blurs. Same as ``bfactor_filter(map, -b_sharpen)``.
    """
    a = check_map(map)
    s = spatial_frequency_rfft(a.shape, pixel_size=check_pixel_size(pixel_size))
    return _apply(a, np.exp(np.float32(b_sharpen / 4.0) * s * s))


def sharpen_to_b_iso(
    map, *, pixel_size: float, b_iso_target: float, d_min: float, d_max: float = 10.0
) -> np.ndarray:
    """Sharpen (or blur) so the map's fitted B becomes ``b_iso_target``.

    ``b_sharpen = estimate_b_iso(map, d_min, d_max) - b_iso_target`` is applied with
    :func:`sharpen_b`.
    """
    b_iso = estimate_b_iso(map, pixel_size=pixel_size, d_min=d_min, d_max=d_max)
    return sharpen_b(map, pixel_size=pixel_size, b_sharpen=b_iso - float(b_iso_target))


def d_cut_weight(s, *, d_cut: float, k_sharpen: float = 10.0) -> np.ndarray:
    """Phenix logistic weight ``w = 1 / (1 + exp(k_sharpen (d_cut - d)))``, ``d = 1/s``.

    float32, same shape as ``s`` (1/Angstrom); 1 at s = 0, 0.5 at ``d_cut``, -> 0 beyond.
    ``k_sharpen`` is in 1/Angstrom (10: w goes from 0.9 to 0.1 over about 0.44 A).
    """
    s = np.asarray(s, dtype=np.float32)
    d = 1.0 / np.maximum(s, np.float32(1e-30))
    arg = np.clip(np.float32(k_sharpen) * (np.float32(d_cut) - d), -80.0, 80.0)
    return (1.0 / (1.0 + np.exp(arg))).astype(np.float32)


def b_iso_to_d_cut_filter(
    s, *, b_sharpen: float, d_cut: float, b_blur_hires: float = 200.0, k_sharpen: float = 10.0
) -> np.ndarray:
    """The ``b_iso_to_d_cut`` filter as a function of ``s`` (1/Angstrom), float32.

    The B is mixed inside the exponent: with ``w`` = :func:`d_cut_weight` (w -> 1 at low
    resolution, 0.5 at ``d_cut``, -> 0 beyond),

        b(s) = w * b_sharpen + (1 - w) * (b_sharpen - b_blur_hires)
        filter(s) = exp(+b(s) s^2 / 4)

    so the data are sharpened by ``b_sharpen`` up to ``d_cut`` and by ``b_sharpen -
    b_blur_hires`` (blurred when ``b_blur_hires > b_sharpen``) beyond, with the logistic
    transition of steepness ``k_sharpen``. (Mixing the two filters linearly instead would
    let the sharpened tail ``w exp(+b_sharpen s^2/4)`` survive past ``d_cut``.) At s = 0 the
    filter is 1.
    """
    s = np.asarray(s, dtype=np.float32)
    w = d_cut_weight(s, d_cut=d_cut, k_sharpen=k_sharpen)
    b = np.float32(b_sharpen) - (1.0 - w) * np.float32(b_blur_hires)
    return np.exp(b * (s * s) / np.float32(4.0)).astype(np.float32)


def sharpen_b_iso_to_d_cut(
    map,
    *,
    pixel_size: float,
    b_sharpen: float,
    d_cut: float,
    b_blur_hires: float = 200.0,
    k_sharpen: float = 10.0,
) -> np.ndarray:
    """Phenix ``b_iso_to_d_cut``: sharpen by ``b_sharpen`` to ``d_cut``, blur beyond.

    The combination is written out in :func:`b_iso_to_d_cut_filter`; one forward and one
    inverse FFT. ``d_cut`` (Angstrom) must not be finer than Nyquist.
    """
    a = check_map(map)
    px = check_pixel_size(pixel_size)
    d_cut = check_resolution(d_cut, px, "d_cut")
    s = spatial_frequency_rfft(a.shape, pixel_size=px)
    grid = b_iso_to_d_cut_filter(
        s, b_sharpen=b_sharpen, d_cut=d_cut, b_blur_hires=b_blur_hires, k_sharpen=k_sharpen
    )
    return _apply(a, grid)


def resolution_dependent_filter(s, *, d_cut: float, b0: float, b1: float, b2: float):
    """The ``resolution_dependent`` scale as a function of ``s`` (1/Angstrom), float32.

    ``log10(scale)`` is piecewise linear in ``s^2`` through the points

    ========================  ==========================  ============
    where                     s^2                         log10 scale
    ========================  ==========================  ============
    low resolution (s = 0)    0                           0
    "d_cut / 2"               (1 / (2 d_cut))^2           b0
    d_cut                     (1 / d_cut)^2               b1
    0.833 d_cut               (1 / (0.833 d_cut))^2       b1 + b2
    ========================  ==========================  ============

    and constant (b1 + b2) beyond. Interpretation: "d_cut/2" is read as *half the spatial
    frequency* of ``d_cut`` (d = 2 d_cut), the only reading under which the points are in
    order of increasing ``s`` (a d of d_cut/2 would lie beyond 0.833 d_cut).
    """
    s2 = np.asarray(s, dtype=np.float64) ** 2
    xp = [0.0, (0.5 / d_cut) ** 2, (1.0 / d_cut) ** 2, (1.0 / (0.833 * d_cut)) ** 2]
    fp = [0.0, b0, b1, b1 + b2]
    return (10.0 ** np.interp(s2, xp, fp)).astype(np.float32)


def sharpen_resolution_dependent(
    map, *, pixel_size: float, d_cut: float, b0: float, b1: float, b2: float
) -> np.ndarray:
    """Phenix ``resolution_dependent`` sharpening with parameters (b0, b1, b2).

    The scale is :func:`resolution_dependent_filter` (log10 piecewise linear in s^2).
    """
    a = check_map(map)
    px = check_pixel_size(pixel_size)
    d_cut = check_resolution(d_cut, px, "d_cut")
    s = spatial_frequency_rfft(a.shape, pixel_size=px)
    return _apply(a, resolution_dependent_filter(s, d_cut=d_cut, b0=b0, b1=b1, b2=b2))
