"""Geometric masks with Xmipp semantics: build them, and apply them to images and volumes.

Pure numerical kernels: ndarrays in, ndarrays out, no I/O.

Conventions (all functions)
---------------------------
* Arrays are ``(y, x)`` images, ``(n, y, x)`` image stacks or ``(z, y, x)`` volumes; pixel data
  are float32 in and out (other input dtypes are converted once, never upcast to float64).
* The mask centre is the array index ``N // 2`` on every axis (even and odd ``N``), moved by an
  optional ``shift = (x, y[, z])`` in pixels, given in the order users type it.
* All lengths (radii, widths, heights, sigma, border) are in pixels.

Geometries (``r`` is the distance to the centre; Xmipp formulas)
----------------------------------------------------------------
2D: :data:`GEOMETRIES_2D`; 3D: :data:`GEOMETRIES_3D`.

* ``circular`` / ``sphere``: 1 where ``r**2 <= radius**2`` (inclusive).
* ``crown``: 1 where ``inner**2 <= r**2 <= outer**2`` (both inclusive).
* ``box``: a box exactly ``X`` (x ``Y`` x ``Z``) pixels wide; along an axis of width ``X`` it spans
  the logical coordinates ``-X/2 ... X/2 - 1`` for even ``X`` and ``-(X-1)/2 ... (X-1)/2`` for odd
  ``X`` (in general ``-(X//2) ... -(X//2) + X - 1``; with a fractional shift, the half-open
  interval ``[-(X//2) - 1/2, -(X//2) + X - 1/2)``, which still holds exactly ``X`` pixels).
* ``cylinder`` (3D): axis along z; 1 where ``x**2 + y**2 <= radius**2`` and ``|z| <= height/2``.
* ``gaussian``: ``K exp(-r**2 / (2 sigma**2))`` with ``K = 1 / (sqrt(2 pi) sigma)**dim`` so that
  the mask integrates to 1 (its peak is NOT 1); ``peak_one=True`` uses ``K = 1``.
* ``raised_cosine``: 1 for ``r <= inner``, ``(1 + cos(pi (r - inner) / (outer - inner))) / 2``
  between, 0 for ``r >= outer``.
* ``raised_crown``: ``(1 - RC(r; inner - w, inner + w)) * RC(r; outer - w, outer + w)`` with RC
  the raised cosine above and ``w = border``; ``inner_radius = 0`` means no hole (the first
  factor is taken as 1).

Binary geometries (:func:`is_binary`) keep the pixels inside and set the others to a fill;
continuous ones multiply, and the fill does not apply to them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._geometry import (
    BINARY_GEOMETRIES,
    GEOMETRIES_2D,
    GEOMETRIES_3D,
    MaskParams,
    PlaneSource,
    _check_shape,
    _check_shift,
    axis_coords,
    radial_profile,
    resolve_mask_params,
)

__all__ = [
    "GEOMETRIES_2D",
    "GEOMETRIES_3D",
    "BINARY_GEOMETRIES",
    "FILL_MODES",
    "MaskParams",
    "is_binary",
    "resolve_mask_params",
    "axis_coords",
    "centered_axes",
    "radius_squared",
    "radial_profile",
    "make_mask",
    "fill_values",
    "apply_mask",
    "mask_volume",
]

FILL_MODES = ("value", "min", "max", "mean")


def is_binary(geometry: str) -> bool:
    """True if ``geometry`` gives a 0/1 mask (circular, sphere, box, crown, cylinder)."""
    if geometry not in GEOMETRIES_2D + GEOMETRIES_3D:
        raise ValueError(f"geometry: unknown '{geometry}'")
    return geometry in BINARY_GEOMETRIES


def centered_axes(
    shape: Sequence[int], shift: Sequence[float] | None = None, *, dtype=np.float32
) -> tuple[np.ndarray, ...]:
    """Logical coordinates of each axis, shaped to broadcast (like ``np.ogrid``).

    Parameters
    ----------
    shape : (y, x) or (z, y, x)
    shift : (x, y[, z]) pixels, optional
        Moves the centre from index ``N // 2`` to ``N // 2 + shift`` on each axis.
    dtype : float dtype of the returned arrays (float32 by default).

    Returns
    -------
    tuple of ndarray
        One array per axis in array order, e.g. for 3D shapes ``(nz,1,1)``, ``(1,ny,1)``,
        ``(1,1,nx)`` holding ``i - N//2 - shift``.
    """
    shp = _check_shape(shape)
    nd = len(shp)
    shifts_zyx = _check_shift(shift, nd)[::-1]
    axes = []
    for axis, (n, s) in enumerate(zip(shp, shifts_zyx, strict=True)):
        view = [1] * nd
        view[axis] = n
        axes.append(axis_coords(n, s, dtype).reshape(view))
    return tuple(axes)


def radius_squared(
    shape: Sequence[int], shift: Sequence[float] | None = None, *, dtype=np.float32
) -> np.ndarray:
    """Squared distance to the mask centre, built by broadcasting 1-D squares (float32)."""
    axes = centered_axes(shape, shift, dtype=dtype)
    out = axes[0] ** 2
    for a in axes[1:]:
        out = out + a**2
    return out


def make_mask(
    shape: Sequence[int],
    geometry: str,
    *,
    radius: float = -1,
    inner_radius: float = 0.0,
    outer_radius: float = -1,
    box_size: int | Sequence[int] = -1,
    height: float = -1,
    sigma: float = -1,
    border: float = 2.0,
    shift: Sequence[float] | None = None,
    peak_one: bool = False,
    dtype=np.float32,
) -> np.ndarray:
    """Build a geometric mask.

    Parameters
    ----------
    shape : (y, x) or (z, y, x)
        Mask shape; 2D shapes take :data:`GEOMETRIES_2D`, 3D shapes :data:`GEOMETRIES_3D`.
    geometry : str
        See the module docstring for the formulas.
    radius : float
        circular / sphere / cylinder radius, px; -1 -> ``min(shape) / 2``.
    inner_radius, outer_radius : float
        crown / raised_cosine / raised_crown radii, px; inner may be 0; outer -1 ->
        ``min(shape) / 2``.
    box_size : int or (x, y[, z]) ints
        Full box widths, px; -1 -> ``N // 2`` on each axis.
    height : float
        Cylinder height along z, px; -1 -> ``nz``.
    sigma : float
        Gaussian sigma, px; -1 -> ``min(shape) / 6``.
    border : float
        Raised-crown border decay ``w``, px (> 0).
    shift : (x, y[, z]) floats, optional
        Moves the centre from index ``N // 2``, px.
    peak_one : bool
        Gaussian only: peak value 1 instead of unit integral.
    dtype : float dtype, or bool for a binary geometry.

    Returns
    -------
    ndarray of ``shape`` and ``dtype`` (float32 by default), values in [0, 1] (gaussian: up to
    ``K``).

    Raises
    ------
    ValueError
        Naming the argument, see :func:`resolve_mask_params`.
    """
    p = resolve_mask_params(
        shape,
        geometry,
        radius=radius,
        inner_radius=inner_radius,
        outer_radius=outer_radius,
        box_size=box_size,
        height=height,
        sigma=sigma,
        border=border,
        shift=shift,
        peak_one=peak_one,
    )
    dt = np.dtype(dtype)
    if not (dt.kind == "f" or (dt == np.bool_ and p.binary)):
        raise ValueError(f"dtype: expected a float dtype (or bool for a binary mask), got {dt}")
    src = PlaneSource(p)
    out = np.zeros(src.shape3, dtype=dt)
    for planes, block, win in src.groups():
        if block is None:
            continue
        y0, y1, x0, x1 = win
        for k in planes:
            out[k, y0:y1, x0:x1] = block
    return out.reshape(p.shape)


def _as_float32(data: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name}: expected real pixel values, got dtype {arr.dtype}")
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


def _check_out(out: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if out is None:
        return
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape:
        got = (getattr(out, "shape", None), getattr(out, "dtype", None))
        raise ValueError(f"out: expected a float32 array of shape {shape}, got {got}")


def fill_values(images: np.ndarray, fill: str, fill_value: float, item_ndim: int) -> np.ndarray:
    """Fill value(s) for binary masking, from the WHOLE input item (before masking).

    Parameters
    ----------
    images : float32 array whose last ``item_ndim`` axes are one image/volume.
    fill : "value" | "min" | "max" | "mean"
    fill_value : used with ``fill="value"``.

    Returns
    -------
    float32 scalar array (``"value"``) or an array shaped ``images.shape[:-item_ndim]`` followed
    by ``item_ndim`` ones, broadcastable against ``images``.
    """
    if fill not in FILL_MODES:
        raise ValueError(f"fill: expected one of {', '.join(FILL_MODES)}, got {fill!r}")
    if fill == "value":
        v = float(fill_value)
        if not np.isfinite(v):
            raise ValueError(f"fill_value: must be finite, got {fill_value!r}")
        return np.asarray(v, dtype=np.float32)
    axes = tuple(range(images.ndim - item_ndim, images.ndim))
    if fill == "min":
        return images.min(axis=axes, keepdims=True)
    if fill == "max":
        return images.max(axis=axes, keepdims=True)
    lead = images.shape[: images.ndim - item_ndim]
    rows = images.reshape(*lead, -1)  # one axis per item: a float64 reduction twice as fast
    means = np.add.reduce(rows, axis=-1, dtype=np.float64) / rows.shape[-1]
    return means.astype(np.float32).reshape(*lead, *(1,) * item_ndim)


def apply_mask(
    images: np.ndarray,
    mask: np.ndarray,
    *,
    binary: bool,
    fill: str = "value",
    fill_value: float = 0.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Apply one mask to an image, a stack of images, a volume or a stack of volumes.

    Parameters
    ----------
    images : ndarray
        ``mask.shape`` or ``(n, *mask.shape)``: the trailing axes must equal the mask shape;
        leading axes are a stack (vectorised, no loop per item). Converted to float32.
    mask : ndarray, (y, x) or (z, y, x)
    binary : bool
        True: pixels where ``mask >= 0.5`` are kept and all others are set to the fill.
        False (continuous geometries and created masks): ``images * mask``; fill is ignored.
    fill : "value" | "min" | "max" | "mean"
        Binary only: ``fill_value``, or the min / max / mean of the WHOLE input item (per image
        or volume, computed before masking).
    fill_value : float
    out : float32 ndarray of ``images.shape``, optional
        Written and returned; may be ``images`` itself (in place).

    Returns
    -------
    float32 ndarray of ``images.shape``.
    """
    m = np.asarray(mask)
    if m.ndim not in (2, 3):
        raise ValueError(f"mask: expected a 2D or 3D array, got shape {m.shape}")
    data = _as_float32(images, "images")
    if data.ndim < m.ndim or data.shape[data.ndim - m.ndim :] != m.shape:
        raise ValueError(f"mask: shape {m.shape} does not match the images' shape {data.shape}")
    _check_out(out, data.shape)
    if not binary:
        if fill not in FILL_MODES:
            raise ValueError(f"fill: expected one of {', '.join(FILL_MODES)}, got {fill!r}")
        return np.multiply(data, m.astype(np.float32, copy=False), out=out)
    fv = fill_values(data, fill, fill_value, m.ndim)
    inside = m >= 0.5
    if out is None:
        return np.where(inside, data, fv)
    if not np.shares_memory(out, data):
        np.copyto(out, data)
    np.copyto(out, fv, where=~inside)
    return out


def mask_volume(
    volume: np.ndarray,
    geometry: str,
    *,
    fill: str = "value",
    fill_value: float = 0.0,
    out: np.ndarray | None = None,
    **geometry_options,
) -> np.ndarray:
    """Build a 3D geometric mask and apply it in one pass, without a full-size mask array.

    Equivalent to ``apply_mask(volume, make_mask(volume.shape, geometry, **geometry_options),
    binary=is_binary(geometry), fill=fill, fill_value=fill_value, out=out)``, but works plane by
    plane on the support window of each plane (faster and with little extra memory).

    Parameters
    ----------
    volume : (z, y, x) ndarray, converted to float32.
    geometry : one of :data:`GEOMETRIES_3D`.
    fill, fill_value : as in :func:`apply_mask` (binary geometries only; the min / max / mean
        are of the whole input volume).
    out : float32 ndarray of ``volume.shape``, optional; may be ``volume`` (in place).
    **geometry_options
        The keywords of :func:`make_mask` (radius, inner_radius, outer_radius, box_size, height,
        sigma, border, shift, peak_one).

    Returns
    -------
    float32 ndarray of ``volume.shape``.
    """
    vol = _as_float32(volume, "volume")
    if vol.ndim != 3:
        raise ValueError(f"volume: expected a (z, y, x) array, got shape {vol.shape}")
    p = resolve_mask_params(vol.shape, geometry, **geometry_options)
    _check_out(out, vol.shape)
    fv = fill_values(vol, fill, fill_value, 3).reshape(()) if p.binary else np.float32(0)
    in_place = out is not None and np.shares_memory(out, vol)
    fresh = out is None and float(fv) == 0.0
    res = np.zeros(vol.shape, np.float32) if fresh else (np.empty_like(vol) if out is None else out)
    for planes, block, win in PlaneSource(p).groups():
        outside = None if block is None or not p.binary else block < 0.5
        for k in planes:
            if block is None:
                if not fresh:
                    res[k].fill(fv)
                continue
            y0, y1, x0, x1 = win
            if not fresh:
                _fill_outside(res[k], win, fv)
            src, dst = vol[k, y0:y1, x0:x1], res[k, y0:y1, x0:x1]
            if outside is None:
                np.multiply(src, block, out=dst)
                continue
            if not in_place:
                np.copyto(dst, src)
            np.copyto(dst, fv, where=outside)
    return res


def _fill_outside(plane: np.ndarray, win: tuple[int, int, int, int], value) -> None:
    y0, y1, x0, x1 = win
    plane[:y0] = value
    plane[y1:] = value
    plane[y0:y1, :x0] = value
    plane[y0:y1, x1:] = value
