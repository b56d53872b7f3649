"""Half-map sharpening kernels: RELION ``postprocess`` and the Phenix half-map route.

Inputs are two half maps (float32 ndarrays (z, y, x), same shape), a pixel size in Angstrom and
keyword-only options; outputs are a :class:`HalfmapResult` of float32 maps and float64 curves.
B factors in the result use RELION's convention: ``b_factor`` is the B *applied* as
``exp(-b_factor s^2 / 4)``, negative for sharpening (a map blurred by 100 A^2 gives about -100).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emforge.numerics import (
    MaskedFSC,
    amplitude_profile_rfft,
    irfftn,
    masked_fsc_corrected,
    raised_cosine,
    rfftn,
    shell_index_rfft,
    spatial_frequency_rfft,
)

from .bfactor import check_map, check_pixel_size
from .refspec import expected_amplitude, fit_to_reference

__all__ = ["HalfmapResult", "fsc_weight", "sharpen_halfmaps", "sharpen_halfmaps_phenix"]


@dataclass
class HalfmapResult:
    """Output of :func:`sharpen_halfmaps` / :func:`sharpen_halfmaps_phenix`.

    Attributes
    ----------
    map, half1, half2 : float32 (z, y, x)
        Sharpened full map (average of the halves) and the halves with the same filter.
    fsc : MaskedFSC
        Unmasked, masked, phase-randomised and corrected FSC curves (``fsc.s`` in 1/A).
    resolution : float
        Angstrom, corrected FSC at ``fsc.threshold``.
    b_factor : float
        RELION convention: applied as ``exp(-b_factor s^2/4)``; negative sharpens.
    guinier_s2, guinier_ln_amplitude : float64 (nshells,)
        Guinier plot of the (masked) average: s^2 (1/A^2) and ln of the FSC-weighted rms
        amplitude (-inf where the weight is 0). ``guinier_fit_range`` = (d_max, d_min) in A;
        ``guinier_intercept`` the fitted ln-amplitude at s = 0 (NaN when no fit was made).
    filter_s, filter_values : float64 (nshells,)
        The radial filter applied to the halves' average, at the shell centres.
    fsc_weights : float64 (nshells,)
        Per-shell weights used (``sqrt(2 FSC/(1+FSC))`` for RELION, CC* for Phenix).
    """

    map: np.ndarray
    half1: np.ndarray
    half2: np.ndarray
    fsc: MaskedFSC
    resolution: float
    b_factor: float
    guinier_s2: np.ndarray
    guinier_ln_amplitude: np.ndarray
    guinier_fit_range: tuple[float, float]
    guinier_intercept: float
    filter_s: np.ndarray
    filter_values: np.ndarray
    fsc_weights: np.ndarray
    notes: list[str] = field(default_factory=list)


def fsc_weight(fsc_values) -> np.ndarray:
    """Per-shell weight ``sqrt(2 FSC / (1 + FSC))`` (the correlation of the full map with the
    truth, Rosenthal & Henderson 2003), 0 where FSC <= 0; float64."""
    f = np.asarray(fsc_values, dtype=np.float64)
    out = np.zeros_like(f)
    pos = f > 0
    out[pos] = np.sqrt(2.0 * f[pos] / (1.0 + f[pos]))
    return out


def _prepare(half1, half2, mask, pixel_size):
    a = check_map(half1, "half1")
    b = check_map(half2, "half2")
    if a.shape != b.shape:
        raise ValueError(f"half2: shape {b.shape} differs from half1 shape {a.shape}")
    px = check_pixel_size(pixel_size)
    m = None
    if mask is not None:
        m = np.asarray(mask, dtype=np.float32)
        if m.shape != a.shape:
            raise ValueError(f"mask: shape {m.shape} differs from the half maps {a.shape}")
        if not np.isfinite(m).all() or m.max() <= 0:
            raise ValueError("mask: must be finite with some voxels > 0")
    return a, b, m, px


def _fsc_and_fts(a, b, m, px, fsc_threshold, rng):
    rng = np.random.default_rng(0) if rng is None else rng
    Fa, Fb = rfftn(a), rfftn(b)
    res = masked_fsc_corrected(
        a, b, m, pixel_size=px, rng=rng, threshold=fsc_threshold, ft1=Fa, ft2=Fb
    )
    avg = 0.5 * (a + b)
    Fm = rfftn(avg * m) if m is not None else 0.5 * (Fa + Fb)
    return res, Fa, Fb, Fm


def _finish(a, Fa, Fb, grid, fscres, b, gs2, glna, grange, gint, fs, fv, w, notes):
    h1 = irfftn(Fa * grid, shape=a.shape)
    h2 = irfftn(Fb * grid, shape=a.shape)
    full = 0.5 * (h1 + h2)
    return HalfmapResult(
        full, h1, h2, fscres, fscres.resolution, b, gs2, glna, grange, gint, fs, fv, w, notes
    )


def _guinier(s, amp, d_max, d_min, notes, shape, px):
    """Fit over the map-B fit range (:mod:`.mapb`, ``d_max`` 0 or None: its default) to
    ``d_min``; returns ``(B_fit, intercept, (d_max, d_min))`` or ``(0, nan, range)`` with a note
    when the box leaves too few shells. Notes also carry the fit's warnings."""
    from .mapb import fit_map_b, map_b_fit_range

    res = d_min if np.isfinite(d_min) else None
    try:
        rng = map_b_fit_range(shape, pixel_size=px, resolution=res, d_max=d_max or None)
        fit = fit_map_b(s, amp, d_min=rng[1], d_max=rng[0])
    except ValueError as exc:
        notes.append(f"no Guinier fit ({str(exc).removeprefix('resolution: ')}); B set to 0")
        return 0.0, float("nan"), (float(d_max or 10.0), float(d_min))
    notes.extend(fit.warnings)
    return fit.b, fit.intercept, fit.fit_range


def _nyquist_note(fscres, px, notes) -> None:
    f = np.asarray(fscres.fsc_corrected)
    if f.size and np.all(f[1:] >= fscres.threshold):
        notes.append(
            f"the FSC never falls below {fscres.threshold:g}: the resolution is limited by "
            f"Nyquist ({2 * px:.3g} Å), not measured"
        )


def sharpen_halfmaps(
    half1,
    half2,
    *,
    pixel_size: float,
    mask=None,
    fsc_threshold: float = 0.143,
    guinier_d_max: float = 0.0,
    lowpass: bool = True,
    b_override: float | None = None,
    rng=None,
) -> HalfmapResult:
    """RELION ``postprocess`` of two half maps.

    1. FSC: masked FSC corrected by phase randomisation (:func:`masked_fsc_corrected`; the
       plain FSC when ``mask`` is None); ``resolution`` where it falls below ``fsc_threshold``.
    2. FSC weighting: per shell ``w = sqrt(2 FSC/(1+FSC))``, 0 where FSC <= 0.
    3. Guinier: rms amplitude per shell of the average of the halves (multiplied by ``mask``
       when given), times ``w``, fitted as ``ln A = a + b_factor s^2/4`` from ``guinier_d_max``
       to the resolution; ``b_override`` replaces the fitted value. (The weighted amplitude
       ``w |F_avg|`` estimates the signal amplitude, because the signal fraction of the
       average's power is ``2 FSC/(1+FSC)``, so the fit is not biased by the noise.)
    4. Filter ``w(s) * exp(-b_factor s^2/4)`` (times a raised-cosine low-pass at the
       resolution, 2 shells wide, when ``lowpass``) applied to both halves; the map is their
       average. The output maps are not masked.

    Parameters
    ----------
    half1, half2 : ndarray float32 (z, y, x), same shape
    pixel_size : float, Angstrom
    mask : ndarray, optional, same shape, soft mask in [0, 1]
    fsc_threshold : float, FSC criterion for the resolution (0.143)
    guinier_d_max : float, low-resolution end of the Guinier fit in Angstrom (0: the map-B rule
        of :mod:`.mapb`, max(10, 2 x resolution) widened to at least 5 shells)
    lowpass : bool, low-pass at the resolution (True)
    b_override : float, optional, B to apply instead of the fitted one (RELION sign)
    rng : numpy.random.Generator, optional, for phase randomisation (default seed 0)

    Returns
    -------
    HalfmapResult
    """
    a, b, m, px = _prepare(half1, half2, mask, pixel_size)
    fscres, Fa, Fb, Fm = _fsc_and_fts(a, b, m, px, fsc_threshold, rng)
    notes: list[str] = []
    s, amp = amplitude_profile_rfft(Fm, shape=a.shape, pixel_size=px, kind="rms")
    w = fsc_weight(fscres.fsc_corrected)
    w[0] = 1.0
    wamp = amp * w
    with np.errstate(divide="ignore"):
        ln_amp = np.log(wamp)
    d_min = fscres.resolution
    _nyquist_note(fscres, px, notes)
    b_fit, intercept, grange = _guinier(s, wamp, guinier_d_max, d_min, notes, a.shape, px)
    b_applied = -b_fit if b_override is None else float(b_override)
    s_grid = spatial_frequency_rfft(a.shape, pixel_size=px)
    sh = shell_index_rfft(a.shape)
    grid = w.astype(np.float32)[np.minimum(sh, w.size - 1)]
    grid *= np.exp(np.float32(-b_applied / 4.0) * s_grid * s_grid)
    curve = w * np.exp(-b_applied * s**2 / 4.0)
    if lowpass and np.isfinite(d_min):
        width = 2.0 / (min(a.shape) * px)
        grid *= raised_cosine(s_grid, 1.0 / d_min, width)
        curve = curve * raised_cosine(s, 1.0 / d_min, width)
    return _finish(
        a,
        Fa,
        Fb,
        grid,
        fscres,
        b_applied,
        s**2,
        ln_amp,
        grange,
        intercept,
        s,
        curve,
        w,
        notes,
    )


def sharpen_halfmaps_phenix(
    half1,
    half2,
    *,
    pixel_size: float,
    mask=None,
    fsc_threshold: float = 0.143,
    guinier_d_max: float = 0.0,
    b_target: float = 0.0,
    lowpass: bool = False,
    reference: str = "protein",
    rng=None,
) -> HalfmapResult:
    """Phenix half-map sharpening: per-shell scale = CC* x expected / observed amplitude.

    ``CC = FSC`` of the halves per shell (masked and phase-randomisation corrected when a mask
    is given), ``CC* = sqrt(2 CC/(1+CC))`` (0 where CC <= 0). ``observed`` is the rms amplitude
    per shell of the (masked) average. The output amplitude per shell is ``CC* x expected``:
    the expected amplitude of the error-free map, down-weighted by how well the average
    correlates with it.

    Model of the expected amplitude ``E(s)``: the signal amplitude is estimated per shell as
    ``CC* x observed`` (the signal fraction of the average's power is CC*^2). Beyond
    ``s0 = 1/d_max`` of the map-B fit range (:mod:`.mapb`; ``guinier_d_max`` when given) the
    expected amplitude follows the reference protein spectrum ``R(s)`` (:mod:`.refspec`, a
    B = 0 protein map, which keeps the 4-5 Å bump of protein maps): ``ln(signal) - ln R = a -
    B s^2/4`` is fitted over the fit range, and ``E(s) = exp(a - B s0^2/4) R(s)/R(s0) x
    exp(-b_target (s^2 - s0^2)/4)`` (``b_target`` 0: a B = 0 protein map). With ``reference``
    "guinier" (the earlier model) ``E`` is the Guinier line of the signal at ``s0``, flat beyond
    (times the ``b_target`` term). Below ``s0`` (where amplitudes follow the molecule's shape
    rather than Wilson statistics) ``E`` is the estimated signal amplitude itself, so
    low-resolution shells are only weighted by CC*. Unlike the RELION route the shell-to-shell
    wiggles of the observed spectrum above ``s0`` are replaced by the reference's shape
    ("shell sharpening").

    Parameters are as for :func:`sharpen_halfmaps`, plus ``b_target`` (Angstrom^2, the B of the
    expected map) and ``reference`` ("protein", default, or "guinier"). ``b_factor`` in the result is ``b_target - B_fit`` (the equivalent overall
    B applied, RELION sign).
    """
    a, b, m, px = _prepare(half1, half2, mask, pixel_size)
    fscres, Fa, Fb, Fm = _fsc_and_fts(a, b, m, px, fsc_threshold, rng)
    notes: list[str] = []
    s, obs = amplitude_profile_rfft(Fm, shape=a.shape, pixel_size=px, kind="rms")
    cc_star = fsc_weight(fscres.fsc_corrected)
    cc_star[0] = 1.0
    sig = cc_star * obs
    d_min = fscres.resolution
    _nyquist_note(fscres, px, notes)
    b_fit, intercept, grange = _guinier(s, sig, guinier_d_max, d_min, notes, a.shape, px)
    s0 = 1.0 / grange[0]
    ref = None
    if reference == "protein" and np.isfinite(intercept):
        ref = fit_to_reference(s, sig, d_max=grange[0], d_min=grange[1])
    if ref is not None:
        e_hi = expected_amplitude(s, intercept=ref[0], b=ref[1], d_max=grange[0], b_target=b_target)
    elif np.isfinite(intercept):
        e_hi = np.exp(intercept - b_fit * s0**2 / 4.0 - b_target * (s**2 - s0**2) / 4.0)
    else:
        e_hi = sig
    expected = np.where(s < s0, sig, e_hi)
    scale = np.zeros_like(obs)
    np.divide(cc_star * expected, obs, out=scale, where=obs > 0)
    if lowpass and np.isfinite(d_min):
        scale *= raised_cosine(s, 1.0 / d_min, 2.0 / (min(a.shape) * px))
    sh = shell_index_rfft(a.shape)
    grid = scale.astype(np.float32)[np.minimum(sh, scale.size - 1)]
    with np.errstate(divide="ignore"):
        ln_sig = np.log(sig)
    return _finish(
        a,
        Fa,
        Fb,
        grid,
        fscres,
        float(b_target - b_fit),
        s**2,
        ln_sig,
        grange,
        intercept,
        s,
        scale,
        cc_star,
        notes,
    )
