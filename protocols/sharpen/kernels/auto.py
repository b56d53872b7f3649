"""Automatic sharpening: scan b_iso and keep the map with the best adjusted surface area
(Terwilliger et al., Acta Cryst D74:545, 2018) or the highest kurtosis.

Inputs are float32 maps (z, y, x) and a pixel size in Angstrom; see :func:`auto_sharpen`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from emforge.numerics import irfftn, rfftn, spatial_frequency_rfft

from .aniso import AnisoB, aniso_filter, fit_aniso_b
from .bfactor import b_iso_to_d_cut_filter, check_map, check_pixel_size, check_resolution
from .mapb import map_b

__all__ = [
    "SurfaceAreaScore",
    "AutoSharpenResult",
    "estimate_solvent_fraction",
    "adjusted_surface_area",
    "kurtosis",
    "auto_sharpen",
    "auto_filter",
    "apply_auto_sharpening",
]

_A3_PER_RESIDUE = 135.0  # protein volume per residue (110 Da x 1.23 A^3/Da)
_STRUCT26 = np.ones((3, 3, 3), bool)


@dataclass
class SurfaceAreaScore:
    """Connectivity and detail of one map (see :func:`adjusted_surface_area`)."""

    sa_ratio: float
    n_regions: int
    target_regions: float
    region_weight: float
    score: float
    contour: float


@dataclass
class AutoSharpenResult:
    """Output of :func:`auto_sharpen`.

    ``map`` is the best trial map (float32); ``scan`` holds one float64 array per column, one
    row per trial: ``b_iso`` (target B of the trial map), ``b_sharpen`` (B applied),
    ``score``, ``sa_ratio``, ``n_regions``, ``kurtosis``. ``best`` is the index of the chosen row.
    ``region_weight_bounds`` are the bounds the fitted region weight was clamped to (NaN when
    not clamped); ``aniso`` the overall B tensor removed before the scan (None if not);
    ``d_min_ratio`` the Fourier cut-off of every trial (x ``d_cut``, see :func:`auto_filter`).
    """

    map: np.ndarray
    method: str
    best: int
    b_iso: float
    b_sharpen: float
    b_iso_original: float
    region_weight: float
    target_regions: float
    solvent_fraction: float
    d_cut: float | None
    scan: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    map_b_fit_range: tuple[float, float] = (float("nan"), float("nan"))
    region_weight_bounds: tuple[float, float] = (float("nan"), float("nan"))
    aniso: AnisoB | None = None
    d_min_ratio: float = 0.833


def kurtosis(map) -> float:
    """Excess kurtosis of the voxel values, ``<(x-m)^4>/<(x-m)^2>^2 - 3`` (0 for a Gaussian)."""
    a = np.asarray(map, dtype=np.float32)
    d = (a - np.float32(a.mean(dtype=np.float64))) / np.float32(max(float(a.std()), 1e-30))
    d2 = d * d  # on the standardised values: no float32 overflow for strongly sharpened maps
    v = float(d2.mean(dtype=np.float64))
    if v <= 0:
        return 0.0
    return float(np.mean(d2 * d2, dtype=np.float64) / (v * v) - 3.0)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    c = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    c0 = np.cumsum(hist * c)
    mu0 = c0 / np.maximum(w0, 1)
    mu1 = (c0[-1] - c0) / np.maximum(w1, 1)
    return float(c[np.argmax(w0 * w1 * (mu0 - mu1) ** 2)])


def estimate_solvent_fraction(map, *, sigma: float = 2.0) -> float:
    """Fraction of the box that is solvent.

    The map is smoothed with a Gaussian of ``sigma`` voxels (averaging out noise and
    high-resolution detail) and split into molecule and solvent by Otsu's threshold on the
    smoothed density; the solvent is what lies below it. Clipped to [0.05, 0.99].
    On EMD-3488 (haemoglobin, 64 kDa in a 105 A box, about 93% solvent) this gives 0.94-0.95
    for the map, the map blurred by B = 100 and noisy half-map averages.
    """
    a = check_map(map)
    sm = ndimage.gaussian_filter(a, float(sigma))
    return float(np.clip(np.mean(sm <= _otsu(sm)), 0.05, 0.99))


def _bbox(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Bounding box of the True voxels of ``mask`` grown by ``margin`` (clipped to the box)."""
    sl = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        idx = np.nonzero(mask.any(axis=other))[0]
        sl.append(slice(max(idx[0] - margin, 0), idx[-1] + 1 + margin))
    return tuple(sl)


def _dilate_cube(m: np.ndarray) -> np.ndarray:
    """Binary dilation by the full 3x3(x3) cube, done as one 3-voxel pass per axis."""
    out = m.copy()
    for ax in range(m.ndim):
        src = out.copy()
        lo = [slice(None)] * m.ndim
        hi = [slice(None)] * m.ndim
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        out[tuple(lo)] |= src[tuple(hi)]
        out[tuple(hi)] |= src[tuple(lo)]
    return out


def _regions(a: np.ndarray, n_mol: float, contour_fraction: float, region_fraction: float):
    """(sa_ratio, n_regions, contour) of one map; see :func:`adjusted_surface_area`.

    Segmentation runs on the bounding box of the voxels above the contour and the dilation on
    the bounding box of the selected regions (1 voxel margins), not on the whole map.
    """
    flat = a.ravel()
    k = int(np.clip(round(contour_fraction * n_mol), 1, flat.size - 1))
    t = float(np.partition(flat, flat.size - k - 1)[flat.size - k - 1])
    above = a > t
    if not above.any():
        return 0.0, 0, t
    above = above[_bbox(above)]
    labels, n = ndimage.label(above)
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    need = region_fraction * sizes.sum()
    n_take = int(np.searchsorted(np.cumsum(sizes[order]), need) + 1)
    keep = np.zeros(n + 1, bool)
    keep[order[:n_take] + 1] = True
    sel = keep[labels]
    sel = sel[_bbox(sel)]
    n_sel = np.count_nonzero(sel)
    added = np.count_nonzero(_dilate_cube(np.pad(sel, 1))) - n_sel
    return added / max(n_sel, 1), int(n), t


def _target_regions(n_mol: float, pixel_size: float | None, residues_per_region: float):
    vol = n_mol * (pixel_size if pixel_size else 1.0) ** 3
    return max(vol / (_A3_PER_RESIDUE * residues_per_region), 1.0)


def adjusted_surface_area(
    map,
    *,
    solvent_fraction: float | None = None,
    pixel_size: float | None = None,
    region_weight: float = 1.0,
    target_regions: float | None = None,
    contour_fraction: float = 0.2,
    region_fraction: float = 0.3,
    residues_per_region: float = 50.0,
) -> SurfaceAreaScore:
    """Adjusted surface area of a map (detail minus fragmentation).

    1. Normalise (mean 0, sd 1); molecular volume = ``(1 - solvent_fraction)`` x box
       (:func:`estimate_solvent_fraction` when not given).
    2. Contour at the level enclosing ``contour_fraction`` (20%) of the molecular volume;
       label the connected regions above it (6-connected, :func:`scipy.ndimage.label`).
    3. Over the largest regions that together hold ``region_fraction`` (30%) of the enclosed
       volume, ``sa_ratio`` = voxels added by one 3x3x3 dilation / voxels in those regions
       (a voxel count estimate of surface/volume).
    4. ``score = sa_ratio - region_weight * n_regions / target_regions``, ``target_regions`` =
       residues in the molecular volume (135 A^3 each; 1 A pixels when ``pixel_size`` is not
       given) / ``residues_per_region``.

    ``region_weight`` is fitted over a B scan by :func:`auto_sharpen`; alone the default is 1.
    """
    a = check_map(map)
    a = (a - a.mean()) / a.std()
    sf = estimate_solvent_fraction(a) if solvent_fraction is None else float(solvent_fraction)
    if not 0.0 <= sf < 1.0:
        raise ValueError(f"solvent_fraction: must be in [0, 1), got {solvent_fraction}")
    n_mol = (1.0 - sf) * a.size
    sa, n, t = _regions(a, n_mol, contour_fraction, region_fraction)
    tr = target_regions or _target_regions(n_mol, pixel_size, residues_per_region)
    return SurfaceAreaScore(sa, n, tr, region_weight, sa - region_weight * n / tr, t)


#: default scan of the target b_iso (Å², map B units): Phenix scans -100 ... 300 in its own B
#: (an ML Wilson fit against a protein reference spectrum), which on EMD-3488 and its blurred
#: copies is 34-39 Å² above the map B of :func:`.mapb.map_b` at 3.2-3.5 Å; the same window in
#: map B units is -140 ... 260
B_MIN, B_MAX = -140.0, 260.0
#: coarser than this fine end of the map-B fit (Å) a map has no Wilson regime (it begins near
#: 10 Å, :mod:`.mapb`): its map B is the fall-off of the molecule's shape (the reference protein
#: spectrum alone falls by B = 3100 Å² over 48-24 Å), not a blur, so a target b_iso means
#: nothing there; the default scan is then ``b_sharpen`` from ``COARSE_B_SHARPEN[0]`` to
#: ``[1]`` (Phenix's window when it cannot determine a map's B: it sets it to 200 and scans
#: b_iso -100 ... 300), and the amplitude anisotropy (the molecule's shape) is not removed
COARSE_D_MIN = 10.0
COARSE_B_SHARPEN = (-100.0, 300.0)
#: the contour of the adjusted surface area encloses this fraction of the molecular volume
CONTOUR_FRACTION = 0.3
#: a flat score: the trial nearest b_sharpen 0 scores within this many times the roughness of
#: the score curve (:func:`_roughness`) of the best
FLAT_TOLERANCE = 3.5
#: ... or when the whole score curve spreads over less than this fraction of its median |score|
FLAT_SPREAD = 0.01
#: with a resolution, every trial keeps Fourier coefficients to ``D_MIN_RATIO x resolution``
#: only, as Phenix does (its map coefficients stop at ``d_min_ratio`` = 0.833 x resolution).
#: ``b_blur_hires`` (200 Å²) damps the noise beyond the resolution of a 3 Å map by ~e^-5 at
#: 2.5 Å, but at 24 Å by less than 10% to Nyquist; without the cut-off a coarse map's noise
#: beyond its resolution is sharpened with the rest
D_MIN_RATIO = 0.833


def _fit_region_weight(
    sa: np.ndarray, nr: np.ndarray, b_iso: np.ndarray, default: float, buffer: float = 0.1
) -> tuple[float, tuple[float, float]]:
    """Region weight (and its bounds) from a scan ordered from the most to the least sharpened.

    Phenix "delta_ratio": ``w = (sa[0] - sa[-1]) / (nr[0] - nr[-1])``, the weight at which the
    most and the least sharpened trials score the same (``default`` when either change is not
    positive). It is then clamped to ``[lo, hi]``: with ``m`` the trial at 37.5% of the b_iso
    range, ``lo = (sa[0] - sa[m]) / (nr[0] - nr[m])`` and ``hi = (sa[m] - sa[-1]) / (nr[m] -
    nr[-1])`` are the weights at which ``m`` ties the sharp and the blurred end (so within them
    ``m`` beats both and the score has an interior maximum), each moved inwards by ``buffer``
    of ``hi - lo``. Without a valid interval (``lo >= hi``) the weight is not clamped. The
    bounds returned are ``(nan, nan)`` then.
    """
    d_sa, d_nr = sa[0] - sa[-1], nr[0] - nr[-1]
    w = float(d_sa / d_nr) if d_sa > 0 and d_nr > 0 else float(default)
    m = int(np.argmin(np.abs(b_iso - (b_iso[0] + 0.375 * (b_iso[-1] - b_iso[0])))))
    if m in (0, b_iso.size - 1) or not (nr[0] > nr[m] > nr[-1]):
        # no bounds unless the region count falls on both sides of m (otherwise a bound
        # divides by a zero change, e.g. a coarse map that is one region at every B)
        return w, (float("nan"), float("nan"))
    lo = max((sa[0] - sa[m]) / max(nr[0] - nr[m], 1e-12), 1e-10)
    hi = max((sa[m] - sa[-1]) / max(nr[m] - nr[-1], 1e-12), 1e-10)
    pad = buffer * max(hi - lo, 0.0)
    lo, hi = lo + pad, hi - pad
    if not lo < hi:
        return w, (float("nan"), float("nan"))
    return float(min(max(w, lo), hi)), (float(lo), float(hi))


def auto_sharpen(
    map,
    *,
    pixel_size: float,
    b_min: float | None = None,
    b_max: float | None = None,
    n_steps: int = 21,
    method: str = "adjusted_sa",
    solvent_fraction: float | None = None,
    resolution: float | None = None,
    b_blur_hires: float = 200.0,
    k_sharpen: float = 10.0,
    region_weight: float | None = None,
    region_weight_default: float = 1.0,
    remove_anisotropy: bool | None = None,
    contour_fraction: float = CONTOUR_FRACTION,
    flat_tolerance: float = FLAT_TOLERANCE,
    d_min_ratio: float = D_MIN_RATIO,
) -> AutoSharpenResult:
    """Scan the target b_iso from ``b_min`` to ``b_max`` (Å²) and keep the best map.

    The default window (``b_min``/``b_max`` None) is ``B_MIN`` ... ``B_MAX``; on a coarse map
    (the map-B fit's fine end coarser than ``COARSE_D_MIN``, 10 Å) it is ``b_sharpen`` =
    ``COARSE_B_SHARPEN`` (-100 ... 300 Å²) about the map's own B, and ``remove_anisotropy``
    (None: automatic) is off there; a note says so.

    1. The map's own B (``b_iso_original``) is the map B of :func:`.mapb.map_b` (fit range from
       ``resolution``, the pixel size and the box). With ``remove_anisotropy`` (3D maps) the
       overall B tensor is fitted (:func:`.aniso.fit_aniso_b`, ``aniso``) and its traceless
       part removed from the map before the scan, as Phenix does (``remove_aniso``).
    2. Trial ``b`` is the map sharpened by ``b_sharpen = b_iso_original - b`` with the
       ``b_iso_to_d_cut`` filter (:func:`.bfactor.b_iso_to_d_cut_filter`: B mixed inside the
       exponent, ``d_cut = resolution``, ``b_blur_hires``, ``k_sharpen``) and no Fourier
       coefficients finer than ``d_min_ratio x resolution`` (where Phenix's map coefficients
       end); without ``resolution`` plain ``exp(b_sharpen s^2/4)`` to Nyquist. One forward
       FFT for all.
    3. ``method="adjusted_sa"``: per trial ``sa_ratio`` and ``n_regions`` as in
       :func:`adjusted_surface_area` (contour at ``contour_fraction`` of the molecular volume;
       solvent fraction estimated once from the input); ``region_weight`` (unless given) by
       :func:`_fit_region_weight` (Phenix ``delta_ratio`` clamped so that the trial at 37.5%
       of the range beats both ends); the best trial maximises ``sa_ratio - region_weight
       n_regions/target``. ``method="kurtosis"``: the highest :func:`kurtosis` (``sa_ratio``
       and ``n_regions`` NaN in the scan; ``region_weight`` NaN).
    4. A flat score (:func:`_pick_best`: no trial measurably better than the one nearest no
       change) keeps the smallest change: ``b_sharpen = 0`` exactly (``b_iso`` = the map's
       B; ``best`` = the scan row nearest it), the anisotropy not removed (``aniso`` None),
       still blurred beyond ``resolution`` as every trial is; ``notes`` says so.

    Returns
    -------
    AutoSharpenResult (scan table, best map float32, parameters used)
    """
    a = check_map(map)
    px = check_pixel_size(pixel_size)
    if method not in ("adjusted_sa", "kurtosis"):
        raise ValueError(f"method: {method!r} is not 'adjusted_sa' or 'kurtosis'")
    if int(n_steps) < 2 or (b_min is not None and b_max is not None and not b_max > b_min):
        raise ValueError(f"n_steps: need >= 2 steps and b_max > b_min, got {n_steps}")
    if not 0.0 < contour_fraction <= 1.0:
        raise ValueError(f"contour_fraction: must be in (0, 1], got {contour_fraction}")
    if not 0.0 < d_min_ratio <= 1.0:
        raise ValueError(f"d_min_ratio: must be in (0, 1], got {d_min_ratio}")
    d_cut = None if resolution is None else check_resolution(resolution, px, "resolution")
    fit = map_b(a, pixel_size=px, resolution=d_cut)
    b0 = fit.b
    coarse = fit.d_min > COARSE_D_MIN
    window = (b0 - COARSE_B_SHARPEN[1], b0 - COARSE_B_SHARPEN[0]) if coarse else (B_MIN, B_MAX)
    b_min = window[0] if b_min is None else float(b_min)
    b_max = window[1] if b_max is None else float(b_max)
    if not b_max > b_min:
        raise ValueError(f"b_max: must exceed b_min ({b_min}), got {b_max}")
    if remove_anisotropy is None:
        remove_anisotropy = not coarse
    coarse_note = (
        f"coarse map (map B fitted to {fit.d_min:.3g} Å, no Wilson regime): scanned "
        f"b_sharpen {b0 - b_max:+.0f} … {b0 - b_min:+.0f} Å² about the map's B"
        + ("" if remove_anisotropy else ", anisotropy (the molecule's shape) kept")
        if coarse
        else ""
    )
    sf = estimate_solvent_fraction(a) if solvent_fraction is None else float(solvent_fraction)
    if not 0.0 <= sf < 1.0:
        raise ValueError(f"solvent_fraction: must be in [0, 1), got {solvent_fraction}")
    n_mol = (1.0 - sf) * a.size
    target = _target_regions(n_mol, px, 50.0)
    aniso = (
        fit_aniso_b(a, pixel_size=px, resolution=d_cut)
        if remove_anisotropy and a.ndim == 3
        else None
    )
    trial = _trial_maker(a, px, d_cut, b_blur_hires, k_sharpen, aniso, d_min_ratio)
    bs = np.linspace(b_min, b_max, int(n_steps))
    cols = _scan(trial, b0 - bs, n_mol, contour_fraction, with_regions=method == "adjusted_sa")
    bounds = (float("nan"), float("nan"))
    if method == "adjusted_sa":
        rw = region_weight
        nr = cols["n_regions"] / target
        if rw is None:
            rw, bounds = _fit_region_weight(cols["sa_ratio"], nr, bs, region_weight_default)
        score = cols["sa_ratio"] - rw * nr
    else:
        rw, score = float("nan"), cols["kurtosis"].copy()
    best, flat_note = _pick_best(score, b0 - bs, flat_tolerance)
    scan = {"b_iso": bs, "b_sharpen": b0 - bs, "score": score, **cols}
    notes = list(fit.warnings) + [n for n in (coarse_note, flat_note) if n]
    b_best = float(b0) if flat_note else float(bs[best])
    if flat_note and aniso is not None:  # the smallest change: the anisotropy is kept as well
        aniso = None
        trial = _trial_maker(a, px, d_cut, b_blur_hires, k_sharpen, None, d_min_ratio)
    result = AutoSharpenResult(
        trial(b0 - b_best),
        method,
        best,
        b_best,
        float(b0 - b_best),
        float(b0),
        float(rw),
        float(target),
        sf,
        d_cut,
        scan,
        notes,
    )
    result.map_b_fit_range, result.region_weight_bounds, result.aniso = fit.fit_range, bounds, aniso
    result.d_min_ratio = float(d_min_ratio)
    return result


def _roughness(score: np.ndarray) -> float:
    """Noise of a score curve: the rms residual of each score about a local quadratic through
    it and its two neighbours on each side (5-point Savitzky-Golay, coefficients (-3, 12, 17,
    12, -3)/35, exact for a quadratic, so the curvature of the curve is not counted as noise),
    scaled by ``1/sqrt(1 - 17/35)`` to the scatter of one score. 0 with fewer than 5 trials."""
    if score.size < 5:
        return 0.0
    sg = np.array([-3.0, 12.0, 17.0, 12.0, -3.0]) / 35.0
    resid = score[2:-2] - np.convolve(score, sg, mode="valid")
    return float(np.sqrt(np.mean(resid**2) / (1.0 - 17.0 / 35.0)))


def _pick_best(score: np.ndarray, b_sharpen: np.ndarray, tolerance: float = FLAT_TOLERANCE):
    """Index of the chosen trial and a note when the score curve is flat.

    ``best`` is the highest score and ``z`` the trial nearest ``b_sharpen = 0`` (no change).
    The curve is *flat* when ``score[best] - score[z] <= tolerance x roughness``
    (:func:`_roughness`, the scatter of the curve about its neighbours): the best trial is
    not measurably better than leaving the map's B as it is; also when the whole curve spreads
    over at most ``FLAT_SPREAD`` (1%) of its median |score| (e.g. every score equal).
    Then ``z`` is chosen (the smallest change) and the note says so; otherwise ``best`` and an
    empty note. Measured on EMD-3488 (21 trials): the deposited, already sharpened map gives a
    gap of 2.3 (at 3.0 Å) and 3.2 (3.2 Å) x the roughness; the map blurred by B = 100 gives 20
    (no noise) and 6.6-17 (noisy half-map averages, three noise seeds, 80^3 and 100^3 boxes),
    blurred by 150 gives 16. Blurred by only 50 it gives 3.3: a mild blur the score cannot tell
    from none, reported as flat.
    """
    best = int(np.argmax(score))
    z = int(np.argmin(np.abs(b_sharpen)))
    gap, rough = float(score[best] - score[z]), _roughness(score)
    level = FLAT_SPREAD * max(float(np.median(np.abs(score))), 1e-12)
    still = float(np.ptp(score)) <= level
    if not still and (z == best or gap > tolerance * rough):
        return best, ""
    if not still:
        why = (
            f"the best trial (b_sharpen {b_sharpen[best]:+.1f} Å²) scores only {gap:.3g} above "
            f"the one nearest no change (b_sharpen {b_sharpen[z]:+.1f} Å²), within "
            f"{tolerance:g} x the curve's roughness ({rough:.3g})"
        )
    else:
        why = f"the score varies by {float(np.ptp(score)):.3g} over all {score.size} trials"
    return z, f"flat auto-sharpen score: {why}; kept the smallest change (b_sharpen 0)"


def _scan(trial, b_sharpen: np.ndarray, n_mol: float, contour: float, *, with_regions: bool):
    """Kurtosis (and sa_ratio, n_regions when ``with_regions``) of every trial map."""
    cols = {k: np.full(b_sharpen.size, np.nan) for k in ("sa_ratio", "n_regions", "kurtosis")}
    for i, b in enumerate(b_sharpen):
        m = trial(b)
        cols["kurtosis"][i] = kurtosis(m)
        if with_regions:
            sa, n, _ = _regions(m, n_mol, contour, 0.3)
            cols["sa_ratio"][i], cols["n_regions"][i] = sa, n
    return cols


def auto_filter(
    shape, *, pixel_size: float, b_sharpen: float, d_cut=None, b_blur_hires: float = 200.0,
    k_sharpen: float = 10.0, aniso=None, d_min_ratio: float = D_MIN_RATIO,
) -> np.ndarray:  # fmt: skip
    """The Fourier filter of one trial (float32, rfft half-grid of a real box ``shape``).

    ``b_iso_to_d_cut_filter(s, b_sharpen, d_cut, b_blur_hires, k_sharpen)`` (the B mixed
    inside the exponent) and 0 beyond ``s = 1/(d_min_ratio d_cut)``, or ``exp(b_sharpen
    s^2/4)`` when ``d_cut`` is None, times ``aniso_filter(aniso.aniso)`` when an
    :class:`.aniso.AnisoB` is given. The exponent of the
    plain ramp is clipped to +-60 (a float32 exp of a large B s^2 on a coarse map overflows).
    """
    s = spatial_frequency_rfft(shape, pixel_size=pixel_size)
    if d_cut is None:
        grid = np.exp(np.clip(np.float32(b_sharpen) * s * s / np.float32(4.0), -60.0, 60.0))
    else:
        grid = b_iso_to_d_cut_filter(
            s, b_sharpen=b_sharpen, d_cut=d_cut, b_blur_hires=b_blur_hires, k_sharpen=k_sharpen
        )
        grid = np.where(s * np.float32(d_min_ratio * d_cut) <= 1.0, grid, np.float32(0.0))
    if aniso is not None:
        grid = grid * aniso_filter(shape, aniso.aniso, pixel_size=pixel_size)
    return grid.astype(np.float32, copy=False)


def apply_auto_sharpening(map, result: AutoSharpenResult, *, pixel_size: float, **options):
    """Apply the sharpening chosen by :func:`auto_sharpen` (``result``) to another map of the
    same box (e.g. a half map): the same anisotropy removal and filter. ``options`` are the
    ``b_blur_hires`` and ``k_sharpen`` given to :func:`auto_sharpen` (defaults otherwise)."""
    a = check_map(map)
    options.setdefault("d_min_ratio", result.d_min_ratio)
    grid = auto_filter(
        a.shape, pixel_size=check_pixel_size(pixel_size), b_sharpen=result.b_sharpen,
        d_cut=result.d_cut, aniso=result.aniso, **options,
    )  # fmt: skip
    return irfftn(rfftn(a) * grid, shape=a.shape)


def _trial_maker(
    a: np.ndarray, px: float, d_cut, b_blur_hires: float, k_sharpen: float, aniso, d_min_ratio
):
    """Return ``trial(b_sharpen) -> map`` (:func:`auto_filter`) from one forward FFT."""
    F = rfftn(a)
    if aniso is not None:
        F = F * aniso_filter(a.shape, aniso.aniso, pixel_size=px)
    opts = dict(
        d_cut=d_cut, b_blur_hires=b_blur_hires, k_sharpen=k_sharpen, d_min_ratio=d_min_ratio
    )
    return lambda b: irfftn(
        F * auto_filter(a.shape, pixel_size=px, b_sharpen=b, **opts), shape=a.shape
    )
