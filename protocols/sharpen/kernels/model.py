"""Model-based sharpening (Phenix ``model_sharpening``): a density map of an atomic model on the
map's grid, and per-shell scaling of the map towards the model's amplitudes weighted by the
map-model correlation.

Conventions
-----------
* Maps are float32 ndarrays (z, y, x); voxel ``[k, j, i]`` lies at the position
  ``origin + (i, j, k) * pixel_size`` Angstrom (x, y, z): ``origin`` is the map's frame
  (``MrcInfo.origin`` reversed, whether the header held it in ORIGIN or in NSTART x voxel size;
  see docs/conventions.md), given in (x, y, z) order because it is a position in the model's
  coordinate frame (Angstrom).
* The model map is periodic in the box (the box is treated as a P1 unit cell of
  ``shape * pixel_size`` Angstrom); atoms outside the box wrap around, which is why
  :func:`check_model_in_box` refuses models that mostly lie outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

import numpy as np

from emforge.numerics import (
    amplitude_profile_rfft,
    fsc_rfft,
    irfftn,
    raised_cosine,
    rfftn,
    shell_index_rfft,
    spatial_frequency_rfft,
)

from .bfactor import check_map, check_pixel_size, check_resolution

__all__ = ["ModelSharpenResult", "model_map", "check_model_in_box", "sharpen_model"]


def _read_structure(model_path_or_structure):
    import gemmi

    if isinstance(model_path_or_structure, gemmi.Structure):
        return model_path_or_structure
    if isinstance(model_path_or_structure, (str, PathLike)):
        try:
            st = gemmi.read_structure(str(model_path_or_structure))
        except (RuntimeError, ValueError, OSError) as exc:
            raise ValueError(f"model: cannot read {model_path_or_structure}: {exc}") from None
        return st
    raise ValueError(
        f"model: expected a file path or a gemmi.Structure, got {type(model_path_or_structure)}"
    )


def _atom_xyz(structure) -> np.ndarray:
    if len(structure) == 0:
        raise ValueError("model: the structure has no models (no atoms)")
    xyz = [(a.pos.x, a.pos.y, a.pos.z) for ch in structure[0] for res in ch for a in res]
    if not xyz:
        raise ValueError("model: the structure has no atoms")
    return np.asarray(xyz, dtype=np.float64)


def _box(shape, pixel_size, origin):
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape: must be a 3D box (z, y, x) with every side >= 4, got {shape}")
    px = check_pixel_size(pixel_size)
    org = np.asarray(origin, dtype=np.float64).ravel()
    if org.size != 3 or not np.isfinite(org).all():
        raise ValueError(f"origin: must be 3 finite numbers (x, y, z) in Angstrom, got {origin}")
    return shape, px, org


def check_model_in_box(
    structure, shape, pixel_size: float, origin=(0.0, 0.0, 0.0), *, max_outside: float = 0.5
) -> float:
    """Check that an atomic model lies in the map box; return the fraction of atoms outside.

    Parameters
    ----------
    structure : gemmi.Structure or path (PDB/mmCIF); the first model is used
    shape : (nz, ny, nx) of the map
    pixel_size : float, Angstrom
    origin : (x, y, z) Angstrom position of voxel (0, 0, 0)
    max_outside : float
        Largest fraction of atoms allowed outside the box (0.5: most atoms must be inside).

    Raises
    ------
    ValueError
        ``"model: N% of atoms lie outside the map box ..."`` when more than ``max_outside``
        of the atoms are outside ``[origin, origin + (nx, ny, nz) * pixel_size)``.
    """
    st = _read_structure(structure)
    shape, px, org = _box(shape, pixel_size, origin)
    xyz = _atom_xyz(st)
    size = np.array(shape[::-1], np.float64) * px  # x, y, z extent in Angstrom
    rel = xyz - org
    outside = np.any((rel < 0) | (rel >= size), axis=1)
    frac = float(outside.mean())
    if frac > max_outside:
        raise ValueError(
            f"model: {100 * frac:.0f}% of atoms lie outside the map box (origin "
            f"{tuple(round(float(v), 2) for v in org)} A, size "
            f"{tuple(round(float(v), 2) for v in size)} A); check the origin or the model"
        )
    return frac


def model_map(
    model_path_or_structure,
    *,
    shape,
    pixel_size: float,
    origin=(0.0, 0.0, 0.0),
    resolution: float,
    b_add: float = 0.0,
) -> np.ndarray:
    """Density of an atomic model on a map's grid (electron scattering factors, via gemmi).

    Atoms are placed with gemmi's ``DensityCalculatorE`` (Mott-Bethe electron form factors)
    in a P1 cell of ``shape * pixel_size`` Angstrom, blurred by the extra B that sampling on
    this grid needs; in Fourier space that blur is removed again, ``b_add`` is applied
    (``exp(-b_add s^2/4)``, positive blurs the atoms further) and the map is cut at
    ``resolution`` with a raised-cosine edge 2 shells wide.

    Parameters
    ----------
    model_path_or_structure : str, path or gemmi.Structure (first model used)
    shape : (nz, ny, nx)
    pixel_size : float, Angstrom
    origin : (x, y, z) Angstrom of voxel (0, 0, 0) (the map's frame, ORIGIN or NSTART)
    resolution : float, Angstrom (not finer than Nyquist)
    b_add : float, Angstrom^2 added to every atom's B

    Returns
    -------
    ndarray float32 (nz, ny, nx)
    """
    import gemmi

    shape, px, org = _box(shape, pixel_size, origin)
    d_min = check_resolution(resolution, px, "resolution")
    st = _read_structure(model_path_or_structure)
    check_model_in_box(st, shape, px, org)
    model = st[0].clone()
    if np.any(org != 0):
        model.transform_pos_and_adp(gemmi.Transform(gemmi.Mat33(), gemmi.Vec3(*(-org))))
    dc = gemmi.DensityCalculatorE()
    dc.d_min = 2.0 * px  # with rate 1: the grid spacing the blur is chosen for is pixel_size
    dc.rate = 1.0
    nz, ny, nx = shape
    dc.grid.set_unit_cell(gemmi.UnitCell(nx * px, ny * px, nz * px, 90, 90, 90))
    dc.grid.spacegroup = gemmi.find_spacegroup_by_name("P 1")
    dc.grid.set_size(nx, ny, nz)
    dc.set_refmac_compatible_blur(model)
    blur = float(dc.blur)
    # put_model_density_on_grid would re-size the grid from d_min/rate; fill it ourselves
    dc.grid.fill(0.0)
    dc.add_model_density_to_grid(model)
    dc.grid.symmetrize_sum()
    rho = np.ascontiguousarray(np.array(dc.grid, copy=False).transpose(2, 1, 0), np.float32)
    s = spatial_frequency_rfft(shape, pixel_size=px)
    filt = np.exp(np.float32((blur - float(b_add)) / 4.0) * s * s)
    filt *= raised_cosine(s, 1.0 / d_min, 2.0 / (min(shape) * px))
    return irfftn(rfftn(rho) * filt, shape=shape)


@dataclass
class ModelSharpenResult:
    """Output of :func:`sharpen_model`; curves are float64 over the default shells.

    Attributes
    ----------
    map : float32 (z, y, x), the sharpened map
    s : 1/Angstrom, shell centres
    cc : map-model correlation per shell (FSC inside a soft mask around the model)
    cc_smoothed : ``cc`` smoothed over shells and corrected for model error, in [0, 1)
    scale : per-shell factor applied to the map's Fourier coefficients
    model_amplitude, map_amplitude : rms amplitude per shell (model scaled to the map and
        corrected to B = 0 and for model error)
    k_model : overall scale of the model amplitudes onto the map's (for ``d < d_low``)
    b_model : the model map's own Guinier B (Angstrom^2) over ``d_low`` … ``resolution``
    b_error : model-error B (Angstrom^2): the fall-off of the map-model CC, ``cc ~ cc0 exp(-b s^2/4)``
    cc0 : the CC extrapolated to s = 0 (model completeness and solvent)
    """

    map: np.ndarray
    s: np.ndarray
    cc: np.ndarray
    cc_smoothed: np.ndarray
    scale: np.ndarray
    model_amplitude: np.ndarray
    map_amplitude: np.ndarray
    k_model: float
    b_model: float = 0.0
    b_error: float = 0.0
    cc0: float = 1.0


def _smooth(y: np.ndarray, width: int) -> np.ndarray:
    """Running mean over ``2*width+1`` shells (shorter windows at the ends)."""
    if width <= 0:
        return y.copy()
    c = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(y.size)
    lo = np.maximum(i - width, 0)
    hi = np.minimum(i + width + 1, y.size)
    return (c[hi] - c[lo]) / (hi - lo)


def _model_scale(s, amp, amp_m, d, d_low):
    """Overall scale of the model amplitudes onto the map's, over ``d_low >= d >= 2 d``."""
    band = np.nonzero((s > 1.0 / d_low) & (s <= 1.0 / max(2.0 * d, 0.5 * d_low + 0.5 * d)))[0]
    if band.size < 3:
        first = int(np.searchsorted(s, 1.0 / d_low, side="right"))
        band = np.arange(max(first, 1), min(first + 3, s.size))
    den = float(np.sum(amp_m[band] ** 2))
    if den <= 0:
        raise ValueError(f"model_map: has no density between {d_low} and {2 * d} A")
    return float(np.sqrt(np.sum(amp[band] ** 2) / den))


def model_envelope(model_map: np.ndarray, *, pixel_size: float) -> np.ndarray:
    """A soft mask around the model's density: the model map smoothed (sigma 2 Å) above 5% of
    its peak, grown by about 2 Å and softened (sigma 1.6 Å); float32 in [0, 1]."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(model_map, 2.0 / pixel_size)  # sigma 2 A
    grow = max(1, round(2.0 / pixel_size))  # about 2 A
    core = ndimage.binary_dilation(smooth > 0.05 * smooth.max(), iterations=grow)
    return np.clip(ndimage.gaussian_filter(core.astype(np.float32), 1.6 / pixel_size), 0.0, 1.0)


def _cc_falloff(s, cc, d_low, d) -> tuple[float, float]:
    """Fit ``ln cc = ln cc0 - b s^2/4`` (weighted by cc) from ``d_low`` to ``d``; (b >= 0, cc0)."""
    sel = (s >= 1.0 / d_low) & (s <= 1.0 / d) & (cc > 0.05)
    if np.count_nonzero(sel) < 3:
        return 0.0, 1.0
    slope, icpt = np.polyfit(s[sel] ** 2, np.log(np.clip(cc[sel], 1e-3, 1.0)), 1, w=cc[sel])
    return max(0.0, -4.0 * float(slope)), float(min(1.0, np.exp(icpt)))


def sharpen_model(
    map,
    model_map,
    *,
    pixel_size: float,
    resolution: float,
    smooth_shells: int = 1,
    d_low: float | None = None,
    d_extend: float = 1.2,
) -> ModelSharpenResult:
    """Phenix-style model sharpening: each shell of the map scaled to the model's amplitude x CC*.

    1. ``cc(s)``: FSC of the map and the model map inside a soft mask around the model
       (:func:`model_envelope`), so solvent noise does not dilute it; ``A_map(s)``,
       ``A_model(s)`` their rms amplitudes per shell.
    2. Model error: ``cc(s) ~ cc0 exp(-b_error s^2/4)`` fitted from ``d_low`` to the
       resolution; ``c(s) = cc(s) / (cc0 exp(-b_error s^2/4))`` (smoothed, clipped to [0, 1))
       estimates the map's correlation with the true structure, and the weight is
       ``CC* = sqrt(2 c/(1 + c))``, kept to ``resolution / d_extend`` (data a little beyond
       the nominal resolution still carry signal), 0 beyond.
    3. Target amplitude: the model's, on the map's scale (``k``, fitted from ``d_low`` to
       2 x resolution), with the model map's own overall B (``b_model``) and the model error
       removed: ``k A_model(s) exp((b_model + b_error) s^2/4) CC*(s)`` for ``d < d_low``;
       ``A_map(s) CC*(s)`` at lower resolution (a model map has no solvent contrast).
    4. ``scale(s) = target / A_map(s)`` (``scale[0] = 1``) multiplies the map's coefficients.

    Parameters
    ----------
    map, model_map : ndarray float32 (z, y, x), same shape (see :func:`model_map`)
    pixel_size : float, Angstrom
    resolution : float, Angstrom
    smooth_shells : int, half-width of the CC smoothing window in shells
    d_low : float, Angstrom; the model's amplitude profile is used at finer resolution
        (default ``max(10, 3 x resolution)``: 10 Å for atomic-resolution maps, and a band of the
        map's own signal for 20-40 Å maps)
    d_extend : float >= 1; data are kept to ``resolution / d_extend``

    Returns
    -------
    ModelSharpenResult
    """
    from .bfactor import estimate_b_iso

    a = check_map(map)
    mm = check_map(model_map, "model_map")
    if mm.shape != a.shape:
        raise ValueError(f"model_map: shape {mm.shape} differs from the map shape {a.shape}")
    px = check_pixel_size(pixel_size)
    d = check_resolution(resolution, px, "resolution")
    if not d_extend >= 1.0:
        raise ValueError(f"d_extend: must be >= 1, got {d_extend}")
    d_low = max(10.0, 3.0 * d) if d_low is None else float(d_low)
    d_keep = max(d / float(d_extend), 2.0 * px)
    env = model_envelope(mm, pixel_size=px)
    Fa, Fm = rfftn(a), rfftn(mm)
    s, amp = amplitude_profile_rfft(Fa, shape=a.shape, pixel_size=px, kind="rms")
    _, amp_m = amplitude_profile_rfft(Fm, shape=a.shape, pixel_size=px, kind="rms")
    cc = fsc_rfft(rfftn(a * env), rfftn(mm * env), real_shape=a.shape)
    k = _model_scale(s, amp, amp_m, d, float(d_low))
    b_error, cc0 = _cc_falloff(s, cc, float(d_low), d)
    try:
        b_model = estimate_b_iso(mm, pixel_size=px, d_min=d, d_max=float(d_low))
    except ValueError:
        b_model = 0.0
    envelope = np.exp((b_model + b_error) * s**2 / 4.0)
    c = np.clip(_smooth(cc, int(smooth_shells)) / (cc0 * np.exp(-b_error * s**2 / 4.0)), 0.0, 0.999)
    weight = np.sqrt(2.0 * c / (1.0 + c))
    weight[s > 1.0 / d_keep] = 0.0
    weight[0] = 1.0
    model_amp = k * amp_m * envelope
    target = np.where(s > 1.0 / d_low, model_amp, amp) * weight
    scale = np.zeros_like(amp)
    np.divide(target, amp, out=scale, where=amp > 0)
    scale[0] = 1.0
    sh = shell_index_rfft(a.shape)
    grid = scale.astype(np.float32)[np.minimum(sh, scale.size - 1)]
    grid[sh >= scale.size] = 0.0
    out = irfftn(Fa * grid, shape=a.shape)
    return ModelSharpenResult(
        out, s, cc, c, scale, model_amp, amp, k, float(b_model), float(b_error), float(cc0)
    )
