"""Automatic and threshold-based 3D masks with EMAN2 semantics (mask.auto3d, mask.soft).

Pure numerical kernels: ndarrays in, ndarrays out, no I/O. Volumes are ``(z, y, x)`` float32
(other real dtypes are converted once); the box centre is index ``N // 2`` on every axis; lengths
are in pixels unless stated (pixel sizes and resolutions in Angstrom). Connectivity is always
6-connected (faces). Unlike EMAN2, odd boxes and the outermost voxel layer are handled like any
other voxel, and nothing wraps around the box edges (outside the box is empty).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import fft as sfft  # frequency helpers only: the transforms go through emforge's FFT

from emforge.numerics import fft
from emforge.protocols.masks.kernels import make_mask, radius_squared

from ._morphology import (
    bounded_sq_distance,
    bounding_slices,
    dilate6,
    erode6,
    gaussian_soften,
    keep_labels_with,
    largest_component,
)
from ._robust import choose_components, mask_warnings, soft_edge_width

__all__ = [
    "auto3d",
    "auto_parameters",
    "auto_mask",
    "gaussian_lowpass",
    "radial_max_profile",
    "robust_auto_mask",
    "soft_mask",
    "threshold_mask",
]


def _as_volume(volume: np.ndarray) -> np.ndarray:
    arr = np.asarray(volume)
    if arr.ndim != 3 or arr.dtype.kind not in "fiu" or min(arr.shape) < 1:
        raise ValueError(f"volume: expected a real (z, y, x) array, got {arr.dtype} {arr.shape}")
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or value < 0:
        raise ValueError(f"{name}: expected a whole number >= 0, got {value!r}")
    return int(value)


def _real(name: str, value: float, *, minimum: float | None = None, strict=False) -> float:
    v = float(value)
    bad = not math.isfinite(v) or (
        minimum is not None and (v <= minimum if strict else v < minimum)
    )
    if bad:
        rel = ">" if strict else ">="
        want = "finite" if minimum is None else f"finite and {rel} {minimum:g}"
        raise ValueError(f"{name}: must be {want}, got {value!r}")
    return v


def _check_auto3d(vol, threshold, sigma, radius, nmaxseed, nshells, nshellsgauss, max_radius):
    if (threshold is None) == (sigma is None):
        raise ValueError("threshold: give exactly one of threshold or sigma (mean + sigma*std)")
    radius = _real("radius", radius, minimum=0.0)
    nmaxseed = _count("nmaxseed", nmaxseed)
    if nmaxseed > vol.size:
        raise ValueError(f"nmaxseed: {nmaxseed} is larger than the volume ({vol.size} voxels)")
    if radius == 0 and nmaxseed == 0:
        raise ValueError("radius: no seeds; give radius > 0 and/or nmaxseed > 0")
    if max_radius is not None:
        max_radius = _real("max_radius", max_radius, minimum=0.0, strict=True)
    if threshold is not None:
        thr = _real("threshold", threshold)
    else:
        thr = float(vol.mean(dtype=np.float64) + _real("sigma", sigma) * vol.std(dtype=np.float64))
    return thr, radius, nmaxseed, _count("nshells", nshells), _count("nshellsgauss", nshellsgauss)


def _seeds(vol, binary, thr, radius, nmaxseed, max_radius) -> np.ndarray:
    """Radius seeds (value >= thr within ``radius`` of the centre) and the ``nmaxseed`` highest
    voxels above the threshold."""
    seeds = np.zeros(vol.shape, dtype=bool)
    if radius > 0:
        win = []
        for n in vol.shape:
            c = np.arange(n) - n // 2
            idx = np.flatnonzero(np.abs(c) <= radius)
            win.append(slice(int(idx[0]), int(idx[-1]) + 1))
        win = tuple(win)
        r2 = _r2_window(vol.shape, win)
        near = r2 <= min(radius, max_radius or radius) ** 2
        seeds[win] = near & (vol[win] >= thr)
    if nmaxseed > 0:
        cand = np.flatnonzero(binary)
        if cand.size > nmaxseed:
            top = np.argpartition(vol.ravel()[cand], cand.size - nmaxseed)[-nmaxseed:]
            cand = cand[top]
        seeds.ravel()[cand] = True
    return seeds


def _r2_window(shape, win) -> np.ndarray:
    axes = []
    for axis, (n, sl) in enumerate(zip(shape, win, strict=True)):
        c = (np.arange(sl.start, sl.stop) - n // 2).astype(np.float32)
        view = [1] * len(shape)
        view[axis] = c.size
        axes.append((c * c).reshape(view))
    return axes[0] + axes[1] + axes[2]


def auto3d(
    volume: np.ndarray,
    *,
    threshold: float | None = None,
    sigma: float | None = None,
    radius: float = 0,
    nmaxseed: int = 0,
    nshells: int = 0,
    nshellsgauss: int = 0,
    return_mask: bool = True,
    max_radius: float | None = None,
) -> np.ndarray:
    """EMAN2 ``mask.auto3d``: flood-fill the density connected to seeds, grow it, soften it.

    1. Threshold ``t`` = ``threshold``, or ``mean + sigma * std`` of the volume.
    2. Seeds: the voxels within ``radius`` px of the centre (index N//2) whose value is
       ``>= t``, and/or the ``nmaxseed`` highest voxels among those ``> t``.
    3. Flood fill: the 6-connected components of ``{value > t}`` (plus the seeds) that contain a
       seed. ``max_radius`` (px, optional) first removes everything farther than that from the
       centre (EMAN2's refinement applies ``mask.sharp`` before ``mask.auto3d``).
    4. Binary 6-connected dilation by ``nshells + nshellsgauss // 2`` voxels.
    5. If ``nshellsgauss > 0``: Gaussian low-pass with transfer ``exp(-(nshellsgauss * s)**2)``,
       ``s`` in cycles/pixel (non-periodic: computed on a zero-padded window), values below 0.002
       set to 0, result clipped to [0, 1].

    Parameters
    ----------
    volume : (z, y, x) ndarray, converted to float32.
    threshold, sigma : float
        Exactly one of them.
    radius : float >= 0, px.
    nmaxseed, nshells, nshellsgauss : int >= 0
        ``radius`` and ``nmaxseed`` cannot both be 0.
    return_mask : bool
        True: return the mask; False: return ``volume * mask``.
    max_radius : float > 0, px, optional.

    Returns
    -------
    float32 ndarray of ``volume.shape``: the mask in [0, 1] (0/1 when ``nshellsgauss == 0``;
    all zeros when no seed qualifies), or the masked volume.
    """
    vol = _as_volume(volume)
    thr, radius, nmaxseed, nshells, nshellsgauss = _check_auto3d(
        vol, threshold, sigma, radius, nmaxseed, nshells, nshellsgauss, max_radius
    )
    binary = vol > thr
    if max_radius is not None and max_radius < 0.5 * math.sqrt(sum(n * n for n in vol.shape)):
        binary &= make_mask(vol.shape, "sphere", radius=max_radius, dtype=bool)
    seeds = _seeds(vol, binary, thr, radius, nmaxseed, max_radius)
    region = keep_labels_with(binary | seeds, seeds)
    mask = _grow_and_soften(region, nshells, nshellsgauss)
    return mask if return_mask else np.multiply(vol, mask)


def _grow_and_soften(region: np.ndarray, nshells: int, nshellsgauss: int) -> np.ndarray:
    """Steps 4 and 5 of :func:`auto3d`: dilation by ``nshells + nshellsgauss // 2``, then the
    Gaussian soft edge (float32 out)."""
    region = dilate6(region, nshells + nshellsgauss // 2)
    if nshellsgauss > 0:
        return gaussian_soften(region, float(nshellsgauss))
    return region.astype(np.float32)


def gaussian_lowpass(volume: np.ndarray, *, pixel_size: float, cutoff: float) -> np.ndarray:
    """Gaussian low-pass ``exp(-s**2 / (2 cutoff**2))``, ``s`` and ``cutoff`` in 1/Angstrom.

    Periodic (FFT over the whole box, through :mod:`emforge.numerics.fft` and its thread
    setting), float32 in and out.
    """
    vol = _as_volume(volume)
    spec = fft.rfftn(vol)
    hz, hy, hx = (
        np.exp(-((f / pixel_size) ** 2) / (2.0 * cutoff**2)).astype(np.float32)
        for f in (
            sfft.fftfreq(vol.shape[0]),
            sfft.fftfreq(vol.shape[1]),
            sfft.rfftfreq(vol.shape[2]),
        )
    )
    hyx = hy[:, None] * hx[None, :]
    for k in range(spec.shape[0]):  # one pass over the spectrum, plane by plane (in cache)
        spec[k] *= hz[k] * hyx
    return fft.irfftn(spec, shape=vol.shape)


def radial_max_profile(volume: np.ndarray, rmax: int | None = None) -> np.ndarray:
    """Maximum value on each shell ``round(r) == i`` around index N//2, for ``i < rmax``.

    Returns float64 of length ``rmax`` (default: ``min(shape) // 2``); empty shells give -inf.
    """
    vol = _as_volume(volume)
    rmax = min(vol.shape) // 2 if rmax is None else int(rmax)
    shells = np.rint(np.sqrt(radius_squared(vol.shape))).astype(np.int32)
    keep = shells < rmax
    out = np.full(rmax, -np.inf)
    # unbuffered scatter-max: linear in the voxels (ndimage.maximum with labels sorts them)
    np.maximum.at(out, shells[keep], vol[keep].astype(np.float64))
    return out


def _auto(vol: np.ndarray, pixel_size: float, resolution: float | None):
    pixel_size = _real("pixel_size", pixel_size, minimum=0.0, strict=True)
    if resolution is not None:
        resolution = _real("resolution", resolution, minimum=2 * pixel_size)
    res = resolution if resolution is not None else max(5.0, 3.0 * pixel_size)
    cutoff = min(0.08, 1.0 / (1.5 * res))
    lp = gaussian_lowpass(vol, pixel_size=pixel_size, cutoff=cutoff)
    n = min(vol.shape)
    rlim = max(int(n / 2.2), 2)
    prof = radial_max_profile(lp, rlim)
    top = float(np.max(prof))
    if not top > 0:
        raise ValueError("volume: the low-passed map has no positive density near the centre")
    rp, active = rlim, False
    for i, v in enumerate(prof):
        active = active or v >= 0.9 * top
        if active and v < 0.2 * top:
            rp = i
            break
    vmax = float(np.max(prof[: rp + 1]))
    params = {
        "threshold": 0.15 * vmax,
        "radius": 0,
        "nmaxseed": 24,
        "nshells": int(0.05 * n + 0.5 + 0.75 * res / pixel_size),
        "nshellsgauss": max(1, int(round(1.5 * res / (math.sqrt(2.0) * pixel_size)))),
        "max_radius": float(rp),
        "vmax": vmax,
        "particle_radius_px": int(rp),
        "resolution": float(res),
        "lowpass_cutoff": float(cutoff),
    }
    return params, lp


def auto_parameters(
    volume: np.ndarray, *, pixel_size: float, resolution: float | None = None
) -> dict:
    """Choose :func:`auto3d` parameters the way EMAN2's refinement post-processing does.

    Rules (``n = min(volume.shape)``, ``res`` = ``resolution`` in Angstrom, or when None
    ``max(5 A, 3 * pixel_size)``, EMAN2's default target never finer than 1.5x Nyquist):

    1. Low-pass the map: Gaussian ``exp(-s**2 / 2 fc**2)`` with ``fc = min(0.08, 1 / (1.5 res))``
       1/Angstrom (never sharper than ~12.5 A).
    2. Radial maximum profile ``md[i]`` of the low-passed map (shells ``round(r) == i`` around
       the centre) for ``i < rlim = int(n / 2.2)`` (at least ~10% padding is demanded).
    3. Walking out from the centre, once ``md`` has reached 0.9 of its maximum, the first radius
       where it drops below 0.2 of that maximum is the particle radius ``rp`` (``rlim`` if it
       never drops); ``vmax = max(md[:rp + 1])``.
    4. ``threshold = 0.15 vmax``, ``radius = 0``, ``nmaxseed = 24``,
       ``nshells = int(0.05 n + 0.5 + 0.75 res / pixel_size)``,
       ``nshellsgauss = max(1, round(1.5 res / (sqrt(2) pixel_size)))`` (the same edge width
       as EMAN2's final Gaussian softening at ``1 / (1.5 res)``), ``max_radius = rp``.

    Parameters
    ----------
    volume : (z, y, x) ndarray.
    pixel_size : float, Angstrom per pixel (> 0).
    resolution : float, Angstrom, optional (>= 2 * pixel_size).

    Returns
    -------
    dict with the :func:`auto3d` keywords ``threshold, radius, nmaxseed, nshells, nshellsgauss,
    max_radius`` and the measured/used values ``vmax, particle_radius_px, resolution,
    lowpass_cutoff``.
    """
    params, _ = _auto(_as_volume(volume), pixel_size, resolution)
    return params


def auto_mask(
    volume: np.ndarray,
    *,
    pixel_size: float,
    resolution: float | None = None,
    return_mask: bool = True,
) -> tuple[np.ndarray, dict]:
    """:func:`auto_parameters` then :func:`auto3d` on the low-passed map (as EMAN2 does).

    Returns ``(mask, params)`` (float32 mask in [0, 1]), or ``(volume * mask, params)`` when
    ``return_mask`` is False (the ORIGINAL volume is multiplied).
    """
    vol = _as_volume(volume)
    params, lp = _auto(vol, pixel_size, resolution)
    keys = ("threshold", "radius", "nmaxseed", "nshells", "nshellsgauss", "max_radius")
    mask = auto3d(lp, **{k: params[k] for k in keys})
    return (mask if return_mask else np.multiply(vol, mask)), params


def robust_auto_mask(
    volume: np.ndarray,
    *,
    pixel_size: float,
    resolution: float | None = None,
    return_mask: bool = True,
) -> tuple[np.ndarray, dict]:
    """An automatic mask that survives bright contaminants, with margins in Angstrom.

    1. Low-pass the map at its resolution (``res`` = ``resolution``, or when None
       ``max(5 A, 3 * pixel_size)``): Gaussian ``exp(-s**2 / 2 fc**2)``, ``fc = 1 / res``
       1/Angstrom (real-space sigma ``res / (2 pi)``).
    2. Components of the low-passed map above ``0.05 *`` the molecule's peak, ranked by
       integrated density times centrality; the best ones are kept (rules in
       :func:`~emforge.protocols.automask._robust.choose_components`). A small bright blob
       away from the centre no longer takes the mask from the molecule. The margin around
       the atoms comes from the blur and the low contour level, so it scales with the
       resolution in Angstrom, not with the box.
    3. :func:`auto3d`'s Gaussian soft edge (``nshellsgauss`` = ``round(0.5 res / pixel_size)``
       px, at least 1) applied to the kept region itself (no extra shells: its 0.5 level
       stays on the region's surface).
    4. Warnings (sentences) when the mask misses the box centre, holds less than half of the
       density above the threshold, or leaves out a density brighter than the one it holds.

    Parameters
    ----------
    volume : (z, y, x) ndarray, converted to float32.
    pixel_size : float, Angstrom per pixel (> 0).
    resolution : float, Angstrom, optional (>= 2 * pixel_size).
    return_mask : bool
        False: return ``volume * mask`` (the original volume) instead of the mask.

    Returns
    -------
    ``(mask, info)``: the float32 mask in [0, 1], and a dict with ``threshold,
    nshellsgauss, resolution, lowpass_cutoff, molecule_peak, map_peak, components, kept`` and
    ``warnings`` (list of str).
    """
    vol = _as_volume(volume)
    pixel_size = _real("pixel_size", pixel_size, minimum=0.0, strict=True)
    if resolution is not None:
        resolution = _real("resolution", resolution, minimum=2 * pixel_size)
    res = resolution if resolution is not None else max(5.0, 3.0 * pixel_size)
    cutoff = 1.0 / res
    lp = gaussian_lowpass(vol, pixel_size=pixel_size, cutoff=cutoff)
    region, info = choose_components(lp)
    width = soft_edge_width(res, pixel_size)
    mask = gaussian_soften(region, float(width))
    info.update(
        nshellsgauss=width,
        resolution=float(res),
        lowpass_cutoff=float(cutoff),
        warnings=mask_warnings(lp, mask, info["threshold"], pixel_size),
    )
    return (mask if return_mask else np.multiply(vol, mask)), info


def soft_mask(
    shape: Sequence[int],
    *,
    inner_radius: float = 0.0,
    outer_radius: float = -1,
    width: float = 4.0,
    value: float = 1.0,
    shift: Sequence[float] | None = None,
) -> np.ndarray:
    """EMAN2 ``mask.soft`` as a mask array.

    ``value`` for ``inner_radius <= r <= outer_radius``; ``value * exp(-((r - outer)/width)**2)``
    beyond ``outer_radius`` and, when ``inner_radius > 0``, ``value * exp(-((inner - r)/width)**2)``
    inside ``inner_radius``. ``r`` is the distance to index N//2 moved by ``shift`` (x, y[, z]).

    Parameters
    ----------
    shape : (y, x) or (z, y, x)
    inner_radius : float >= 0, px.
    outer_radius : float > inner_radius, px; -1 -> ``min(shape) / 2``.
    width : float > 0, px (Gaussian fall-off width).
    value : float, the plateau value.

    Returns
    -------
    float32 ndarray of ``shape``.
    """
    shape = tuple(shape)
    inner = _real("inner_radius", inner_radius, minimum=0.0)
    outer = _real("outer_radius", outer_radius)
    outer = min(shape) / 2 if outer == -1 else outer
    if outer <= inner:
        raise ValueError(
            f"inner_radius: must be smaller than outer_radius ({outer:g}), got {inner:g}"
        )
    width = _real("width", width, minimum=0.0, strict=True)
    value = _real("value", value)
    r = np.sqrt(radius_squared(shape, shift))
    t = np.maximum(r - np.float32(outer), np.float32(0))
    if inner > 0:
        t += np.maximum(np.float32(inner) - r, np.float32(0))
    t *= np.float32(1.0 / width)
    np.square(t, out=t)
    np.negative(t, out=t)
    np.exp(t, out=t)
    if value != 1.0:
        t *= np.float32(value)
    return t


def threshold_mask(
    volume: np.ndarray,
    *,
    threshold: float,
    keep_largest: bool = True,
    dilate: int = 0,
    erode: int = 0,
    soft_edge: float = 0.0,
    invert: bool = False,
) -> np.ndarray:
    """Threshold a map into a mask, with simple 6-connected morphology and a soft edge.

    Steps: ``value > threshold``; optionally keep the largest 6-connected component; ``dilate``
    then ``erode`` iterations of 6-connected binary dilation / erosion (outside the box counts
    as background, so erosion also eats from the box faces); with ``soft_edge = W > 0`` px, a
    raised-cosine fall-off ``(1 + cos(pi d / W)) / 2`` at Euclidean distance ``d`` (exact,
    computed only within ``W``) from the binary mask, 0 for ``d >= W``; ``invert`` returns
    ``1 - mask``.

    Returns
    -------
    float32 ndarray of ``volume.shape`` in [0, 1].

    Raises
    ------
    ValueError
        Bad arguments, or no voxel above ``threshold``.
    """
    vol = _as_volume(volume)
    thr = _real("threshold", threshold)
    dilate, erode = _count("dilate", dilate), _count("erode", erode)
    soft = _real("soft_edge", soft_edge, minimum=0.0)
    binary = vol > thr
    if not binary.any():
        raise ValueError(f"threshold: no voxel is above {thr:g} (the maximum is {vol.max():g})")
    if keep_largest:
        binary = largest_component(binary)
    binary = erode6(dilate6(binary, dilate), erode)
    mask = binary.astype(np.float32)
    box = bounding_slices(binary, int(math.ceil(soft))) if soft > 0 else None
    if box is not None:
        d2 = bounded_sq_distance(binary[box], soft)
        near = (d2 > 0) & (d2 < soft * soft)
        sub = mask[box]
        sub[near] = 0.5 * (1.0 + np.cos(np.sqrt(d2[near]) * (math.pi / soft)))
    if invert:
        np.subtract(np.float32(1), mask, out=mask)
    return mask
