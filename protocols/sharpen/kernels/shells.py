"""Shell sharpening with anisotropic correction (Phenix ``map_sharpening``, anisotropic mode).

Conventions
-----------
* Maps are float32 ndarrays (z, y, x), pixel size in Angstrom, spatial frequency ``s`` in
  1/Angstrom with components ``(sx, sy, sz)`` along the map's x, y, z axes.
* An anisotropic fall-off is the symmetric tensor ``U`` (Angstrom^2) with
  ``|F(s)| ~ exp(-2 pi^2 s^T U s)``, reported as ``(U11, U22, U33, U12, U13, U23)`` =
  (X, Y, Z, XY, XZ, YZ). Along axis ``i`` this is a B factor ``B_i = 8 pi^2 U_ii`` in the
  convention ``|F| ~ exp(-B s^2 / 4)``.
* Directions: each Fourier coefficient belongs to the cone of the axis its ``s`` is closest to
  (largest ``|s_i|``); per-shell, per-cone statistics describe the anisotropy of the data, of
  the errors and of the scale factors, and are interpolated back to every coefficient as
  ``exp(sum_i (s_i/|s|)^2 ln q_i(shell))`` (exact for an axis-aligned Gaussian fall-off).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emforge.numerics import (
    default_nshells,
    hermitian_weights,
    irfftn,
    raised_cosine,
    rfftn,
    shell_frequencies,
    shell_index_rfft,
    spatial_frequency_rfft,
)

from .bfactor import check_map, check_pixel_size, check_resolution
from .refspec import expected_amplitude, fit_to_reference

__all__ = [
    "ShellSharpenResult",
    "fit_anisotropic_falloff",
    "remove_anisotropy",
    "sharpen_shells",
    "format_anisotropy_summary",
]

_TWO_PI2 = 2.0 * np.pi**2
_AXES = ("x", "y", "z")


# ------------------------------------------------------------------------------ geometry
def _quad(comps, U) -> np.ndarray:
    """``s^T U s`` on the half-grid (float32); ``comps`` = (sz, sy, sx) broadcastable."""
    sz, sy, sx = comps
    u11, u22, u33, u12, u13, u23 = (np.float32(v) for v in U)
    return (
        u11 * sx * sx
        + u22 * sy * sy
        + u33 * sz * sz
        + 2 * (u12 * sx * sy + u13 * sx * sz + u23 * sy * sz)
    )


def _traceless(U) -> tuple[np.ndarray, float]:
    U = np.asarray(U, np.float64)
    u_iso = float(U[:3].mean())
    out = U.copy()
    out[:3] -= u_iso
    return out, u_iso


def _geometry(shape, px):
    s, comps = spatial_frequency_rfft(shape, pixel_size=px, components=True)
    sh = shell_index_rfft(shape)
    n = default_nshells(shape)
    hw = np.broadcast_to(hermitian_weights(shape), s.shape)
    return s, comps, sh, n, hw


def _cones(comps, s):
    """Cone (0 = x, 1 = y, 2 = z) of each coefficient and the weights ``(s_i/|s|)^2``."""
    sz, sy, sx = (np.broadcast_to(c, s.shape) for c in comps)
    ax = np.abs(np.stack([sx, sy, sz]))
    cone = np.argmax(ax, axis=0).astype(np.int32)
    inv = np.zeros(s.shape, np.float32)
    np.divide(1.0, s * s, out=inv, where=s > 0)
    w = [c * c * inv for c in (sx, sy, sz)]
    w[0] = np.where(s > 0, w[0], np.float32(1 / 3))
    w[1] = np.where(s > 0, w[1], np.float32(1 / 3))
    w[2] = np.where(s > 0, w[2], np.float32(1 / 3))
    return cone, w


def _binned_mean(values, idx, nbins, hw) -> np.ndarray:
    """Hermitian-weighted mean of ``values`` per bin ``idx`` (bins >= nbins dropped)."""
    idx = np.minimum(idx, nbins).ravel()
    num = np.bincount(idx, weights=(values * hw).ravel(), minlength=nbins + 1)[:nbins]
    den = np.bincount(idx, weights=hw.ravel(), minlength=nbins + 1)[:nbins]
    out = np.zeros(nbins)
    np.divide(num, den, out=out, where=den > 0)
    return out


# ------------------------------------------------------------------------------ fitting
def _check_range(d_min, d_max, px):
    d_min = check_resolution(d_min, px, "d_min")
    if not d_max > d_min:
        raise ValueError(f"d_max: must be coarser than d_min ({d_min} A), got {d_max}")
    return d_min, float(d_max)


def _fit_U(F, shape, px, d_min, d_max) -> np.ndarray:
    """Least-squares U from ln|F| per coefficient (see :func:`fit_anisotropic_falloff`)."""
    s, comps, sh, n, hw = _geometry(shape, px)
    amp = np.abs(F)
    sel = (s >= 1.0 / d_max) & (s <= 1.0 / d_min) & (amp > 0)
    k = sh[sel]
    if np.unique(k).size < 3:
        raise ValueError(f"d_min: fewer than 3 shells between {d_max} and {d_min} A to fit")
    w = hw[sel].astype(np.float64)
    y = np.log(amp[sel].astype(np.float64)) / -_TWO_PI2
    sz, sy, sx = (np.broadcast_to(c, s.shape)[sel].astype(np.float64) for c in comps)
    # traceless basis: U = diag(a, b, -a-b) + off-diagonal (c, e, f)
    X = np.stack([sx * sx - sz * sz, sy * sy - sz * sz, 2 * sx * sy, 2 * sx * sz, 2 * sy * sz])
    s2 = (s[sel].astype(np.float64)) ** 2
    # within-shell centring (one free intercept per shell) removes the radial profile
    kk = np.unique(k, return_inverse=True)[1]
    wsum = np.bincount(kk, weights=w)

    def centre(v):
        return v - (np.bincount(kk, weights=w * v) / wsum)[kk]

    Xc = np.stack([centre(x) for x in X])
    yc = centre(y)
    A = (Xc * w) @ Xc.T
    rhs = (Xc * w) @ yc
    a, b, c, e, f = np.linalg.lstsq(A, rhs, rcond=None)[0]
    # isotropic part: shell means of ln|F| (minus the anisotropic term) against s^2
    aniso = a * X[0] + b * X[1] + c * X[2] + e * X[3] + f * X[4]
    ym = np.bincount(kk, weights=w * (y - aniso)) / wsum
    xm = np.bincount(kk, weights=w * s2) / wsum
    u_iso = float(np.polyfit(xm, ym, 1, w=np.sqrt(wsum))[0])
    return np.array([u_iso + a, u_iso + b, u_iso - a - b, c, e, f])


def fit_anisotropic_falloff(map, *, pixel_size: float, d_min: float, d_max: float = 10.0):
    """Overall anisotropic fall-off ``U`` of a map's Fourier amplitudes.

    Model: ``ln|F(s)| = c(shell) - 2 pi^2 s^T U s`` over ``d_max >= 1/|s| >= d_min``. The
    traceless part of ``U`` is fitted by least squares on every Fourier coefficient with a free
    intercept per shell (so the molecule's radial amplitude profile does not bias it); the
    isotropic part ``trace(U)/3`` from the shell means of ``ln|F|`` against ``s^2`` (a Guinier
    fit; the spherical mean of ``s^T U s`` is ``s^2 trace(U)/3``).

    Parameters
    ----------
    map : ndarray float32 (z, y, x)
    pixel_size : float, Angstrom
    d_min, d_max : float, Angstrom, resolution range of the fit (d_max > d_min >= Nyquist)

    Returns
    -------
    ndarray float64 (6,)
        ``(U11, U22, U33, U12, U13, U23)`` in Angstrom^2 for axes (X, Y, Z, XY, XZ, YZ);
        ``8 pi^2 U_ii`` is the B factor along axis i.
    """
    a = check_map(map)
    if a.ndim != 3:
        raise ValueError(f"map: must be 3D (z, y, x), got shape {a.shape}")
    px = check_pixel_size(pixel_size)
    d_min, d_max = _check_range(d_min, d_max, px)
    return _fit_U(rfftn(a), a.shape, px, d_min, d_max)


def _check_U(U) -> np.ndarray:
    U = np.asarray(U, np.float64).ravel()
    if U.size != 6 or not np.isfinite(U).all():
        raise ValueError("U: must be 6 finite numbers (U11, U22, U33, U12, U13, U23) in A^2")
    return U


def remove_anisotropy(map, U, *, pixel_size: float, keep_isotropic: bool = True) -> np.ndarray:
    """Undo an anisotropic fall-off ``U``: multiply F by ``exp(+2 pi^2 s^T U' s)``.

    ``U' = U - trace(U)/3 I`` (only the anisotropy is removed; the map keeps its isotropic B)
    when ``keep_isotropic`` (default), ``U' = U`` otherwise. Returns float32, same shape.
    """
    a = check_map(map)
    px = check_pixel_size(pixel_size)
    U = _check_U(U)
    Ua = _traceless(U)[0] if keep_isotropic else U
    _, comps = spatial_frequency_rfft(a.shape, pixel_size=px, components=True)
    corr = np.exp(np.float32(_TWO_PI2) * _quad(comps, Ua))
    return irfftn(rfftn(a) * corr, shape=a.shape)


# ------------------------------------------------------------------------------ sharpening
@dataclass
class ShellSharpenResult:
    """Output of :func:`sharpen_shells`.

    Attributes
    ----------
    map : float32 (z, y, x), the sharpened map
    U : float64 (6,), overall anisotropy (U11, U22, U33, U12, U13, U23), Angstrom^2
    summary : dict
        ``b_axes`` (B along x, y, z = 8 pi^2 U_ii), ``b_iso``; ``s`` (shell centres, 1/A) and
        per-shell, per-axis-cone curves ``signal_axes``, ``noise_axes`` (rms amplitudes of
        the input's signal and errors, (nshells, 3) for x, y, z) and ``scale_axes`` (mean
        factor applied); ``data_b_axes``, ``error_b_axes`` (B per axis cone fitted to those
        curves from ``d_max`` to the resolution); ``data_anisotropy``, ``error_anisotropy``
        (largest / smallest axis amplitude at the resolution implied by those B values),
        ``scale_anisotropy`` (largest / smallest mean scale factor at the resolution shell); ``noise_source`` ("half maps" or "noise floor"), ``resolution``.
    half1, half2 : float32 or None, the half maps with the same filter (when given)
    """

    map: np.ndarray
    U: np.ndarray
    summary: dict = field(default_factory=dict)
    half1: np.ndarray | None = None
    half2: np.ndarray | None = None


def _smooth_log(q: np.ndarray) -> np.ndarray:
    """Three-shell running mean of ``ln q`` along axis 0 (q > 0)."""
    lq = np.log(q)
    out = lq.copy()
    out[1:-1] = (lq[:-2] + lq[1:-1] + lq[2:]) / 3.0
    return np.exp(out)


class _Grid:
    """Half-grid geometry of one box: shells, direction cones and cone weights."""

    def __init__(self, shape, px, ncone):
        self.s, self.comps, self.sh, self.n, self.hw = _geometry(shape, px)
        self.ncone = ncone
        self.cone, self.w = _cones(self.comps, self.s)
        self.k_per_inv_a = min(shape) * px  # shell index of s (1/A) is s * k_per_inv_a
        self.s_shell = shell_frequencies(shape, pixel_size=px)

    def per_cone(self, values, ncone: int | None = None) -> np.ndarray:
        """(n, ncone) Hermitian-weighted mean per shell and cone (one bin if ncone is 1)."""
        nc = self.ncone if ncone is None else ncone
        idx = self.sh * nc + (self.cone if nc > 1 else 0)
        return _binned_mean(values, idx, self.n * nc, self.hw).reshape(self.n, nc)

    def expand(self, q) -> np.ndarray:
        """Per coefficient ``exp(sum_i w_i ln q[shell, i])`` (``q[shell]`` for one cone)."""
        lq = np.log(np.maximum(q, 1e-30)).astype(np.float32)
        idx = np.minimum(self.sh, self.n - 1)
        if q.shape[1] == 1:
            return np.exp(lq[idx, 0])
        w = self.w
        return np.exp(w[0] * lq[idx, 0] + w[1] * lq[idx, 1] + w[2] * lq[idx, 2])


def _noise_power(F, F1, F2, g: _Grid, d: float):
    """Per-shell, per-cone error power of the *uncorrected* map, shape (n, ncone)."""
    if F1 is not None:
        diff = F1 - F2
        nraw = g.per_cone(0.25 * (diff.real**2 + diff.imag**2))
        return _smooth_log(np.maximum(nraw, 1e-30)), "half maps"
    # white noise floor: median power per cone in the shells beyond 1.15 / resolution
    p = g.per_cone(F.real**2 + F.imag**2)
    lo = min(int(np.ceil(1.15 * g.k_per_inv_a / d)), g.n - 2)
    floor = np.median(p[max(lo, 1) :], axis=0)
    return np.maximum(np.broadcast_to(floor, p.shape), 1e-30).copy(), "noise floor"


def _target(g: _Grid, s_iso, d, d_max, b_target, reference="protein"):
    """Expected amplitude per coefficient beyond 1/d_max (float32): the reference protein
    spectrum fitted to the signal amplitude (:mod:`.refspec`), or with ``reference`` "guinier"
    the Guinier line of the signal at 1/d_max; then ``b_target``."""
    a_s = np.sqrt(s_iso)
    fit = None
    if reference == "protein":  # fewer than 3 shells: the Guinier line (of 2 shells)
        fit = fit_to_reference(g.s_shell, a_s, d_max=d_max, d_min=d)
    if fit is not None:
        e = expected_amplitude(g.s, intercept=fit[0], b=fit[1], d_max=d_max, b_target=b_target)
        return e.astype(np.float32)
    sel = (g.s_shell >= 1.0 / d_max) & (g.s_shell <= 1.0 / d) & (a_s > 0)
    if np.count_nonzero(sel) < 2:
        raise ValueError(f"resolution: fewer than 2 shells between {d_max} and {d} A")
    slope, icpt = np.polyfit(g.s_shell[sel] ** 2, np.log(a_s[sel]), 1)
    s0 = 1.0 / d_max
    s2 = g.s * g.s
    lt = icpt + slope * s0**2 - b_target * (s2 - s0**2) / 4.0
    return np.exp(lt.astype(np.float32))


def _b_axes(g: _Grid, amp_axes, d_max, d) -> list[float]:
    sel = (g.s_shell >= 1.0 / d_max) & (g.s_shell <= 1.0 / d)
    out = []
    for i in range(amp_axes.shape[1]):
        ok = sel & (amp_axes[:, i] > 0)
        if np.count_nonzero(ok) < 2:
            out.append(float("nan"))
            continue
        out.append(float(-4.0 * np.polyfit(g.s_shell[ok] ** 2, np.log(amp_axes[ok, i]), 1)[0]))
    return out


def _ratio(row) -> float:
    row = np.asarray(row, np.float64)
    return float(row.max() / row.min()) if row.min() > 0 else float("inf")


def _ratio_from_b(b_axes, d) -> float:
    """Largest / smallest axis amplitude at resolution ``d`` implied by per-axis B values."""
    b = np.asarray(b_axes, np.float64)
    if not np.isfinite(b).all():
        return float("nan")
    return float(np.exp((b.max() - b.min()) / (4.0 * d * d)))


def _halves(half1, half2, shape):
    if (half1 is None) != (half2 is None):
        raise ValueError("half2: give both half maps or neither")
    if half1 is None:
        return None, None
    h1, h2 = check_map(half1, "half1"), check_map(half2, "half2")
    for name, h in (("half1", h1), ("half2", h2)):
        if h.shape != shape:
            raise ValueError(f"{name}: shape {h.shape} differs from the map shape {shape}")
    return rfftn(h1), rfftn(h2)


def sharpen_shells(
    map,
    *,
    pixel_size: float,
    resolution: float,
    half1=None,
    half2=None,
    anisotropic: bool = True,
    d_max: float = 10.0,
    b_target: float = 0.0,
    lowpass: bool = True,
    reference: str = "protein",
) -> ShellSharpenResult:
    """Shell sharpening with anisotropic correction (Phenix anisotropic ``map_sharpening``).

    1. Fit the overall fall-off ``U`` (:func:`fit_anisotropic_falloff`, ``d_max`` to
       ``resolution``) and remove its anisotropic part: ``c(s) = exp(2 pi^2 s^T U' s)``,
       ``U' = U - trace(U)/3`` (skipped, with one isotropic direction bin, when
       ``anisotropic`` is False).
    2. Errors per shell and axis cone: from the half maps ``|F1 - F2|^2 / 4`` (the error
       power of their average, which ``map`` is taken to be); without half maps, a white
       noise floor = median power per cone beyond ``1.15 / resolution``. Times ``c^2``.
    3. Signal power per shell and cone: ``<|c F|^2> - <c^2 N>`` (at least 0.1% of the power),
       smoothed over 3 shells in log; ``E^2 = N / S`` per coefficient.
    4. Shell sharpening: beyond ``1/d_max`` the signal is scaled to the expected amplitude
       ``T(s)``: the reference protein spectrum (:mod:`.refspec`) fitted to the isotropic
       signal amplitude from ``d_max`` to ``resolution`` and anchored at ``1/d_max``, falling
       with ``b_target`` beyond (``reference`` "guinier": the Guinier line of the signal at
       ``1/d_max``, flat beyond); factor ``T(s) / sqrt(S(s, direction))``; 1 below.
    5. Every coefficient is multiplied by ``c x sharpening x 1/(1 + E^2)`` (and a
       raised-cosine low-pass at ``resolution`` when ``lowpass``).

    Parameters
    ----------
    map : ndarray float32 (z, y, x); with half maps, their average
    pixel_size : float, Angstrom
    resolution : float, Angstrom (not finer than Nyquist, finer than ``d_max``)
    half1, half2 : ndarray float32, optional, same shape as ``map``
    anisotropic : bool, correct the anisotropy (True)
    d_max : float, Angstrom, low-resolution end of the fits and of shell sharpening (10)
    b_target : float, Angstrom^2, B of the expected map beyond ``d_max`` relative to the
        reference (0: a B = 0 protein map)
    lowpass : bool, low-pass at ``resolution`` (True)
    reference : "protein" (default) or "guinier", the expected fall-off beyond ``d_max``

    Returns
    -------
    ShellSharpenResult
    """
    a = check_map(map)
    if a.ndim != 3:
        raise ValueError(f"map: must be 3D (z, y, x), got shape {a.shape}")
    px = check_pixel_size(pixel_size)
    d, d_max = _check_range(resolution, d_max, px)
    F = rfftn(a)
    F1, F2 = _halves(half1, half2, a.shape)
    U = _fit_U(F, a.shape, px, d, d_max)
    g = _Grid(a.shape, px, 3 if anisotropic else 1)
    if anisotropic:
        c2 = np.exp(np.float32(2 * _TWO_PI2) * _quad(g.comps, _traceless(U)[0]))
    else:
        c2 = np.ones(g.s.shape, np.float32)
    nraw, source = _noise_power(F, F1, F2, g, d)
    n_c = g.expand(nraw) * c2
    p = F.real**2 + F.imag**2
    pc_k, nc_k = g.per_cone(p * c2), g.per_cone(n_c)
    s_k = _smooth_log(np.maximum(pc_k - nc_k, 1e-3 * np.maximum(pc_k, 1e-30)))
    s_v = g.expand(s_k)
    t = _target(g, s_k.mean(axis=1), d, d_max, float(b_target), reference)
    sharp = np.where(g.s >= 1.0 / d_max, t / np.sqrt(s_v), np.float32(1.0))
    grid = (np.sqrt(c2) * sharp / (1.0 + n_c / s_v)).astype(np.float32)
    if lowpass:
        grid *= raised_cosine(g.s, 1.0 / d, 2.0 / g.k_per_inv_a)
    out = irfftn(F * grid, shape=a.shape)
    h1 = h2 = None
    if F1 is not None:
        h1, h2 = irfftn(F1 * grid, shape=a.shape), irfftn(F2 * grid, shape=a.shape)
    summary = _summary(g, U, p, nraw, grid, d, d_max, source)
    return ShellSharpenResult(out, U, summary, h1, h2)


def _summary(g: _Grid, U, p, nraw, grid, d, d_max, source) -> dict:
    noise = g.per_cone(g.expand(nraw), 3) if nraw.shape[1] == 1 else nraw
    sig = np.sqrt(np.maximum(g.per_cone(p, 3) - noise, 0.0))
    nse = np.sqrt(noise)
    scl = g.per_cone(grid, 3)
    kd = min(int(round(g.k_per_inv_a / d)), g.n - 1)
    data_b, err_b = _b_axes(g, sig, d_max, d), _b_axes(g, nse, d_max, d)
    b_axes = 8 * np.pi**2 * np.asarray(U[:3])
    return {
        "U": tuple(float(v) for v in U),
        "b_axes": tuple(float(v) for v in b_axes),
        "b_iso": float(b_axes.mean()),
        "resolution": float(d),
        "noise_source": source,
        "s": g.s_shell,
        "signal_axes": sig,
        "noise_axes": nse,
        "scale_axes": scl,
        "data_anisotropy": _ratio_from_b(data_b, d),
        "error_anisotropy": _ratio_from_b(err_b, d),
        "scale_anisotropy": _ratio(scl[kd]),
        "data_b_axes": tuple(data_b),
        "error_b_axes": tuple(err_b),
    }


def format_anisotropy_summary(result: ShellSharpenResult) -> str:
    """Phenix-style text summary of :func:`sharpen_shells` (overall U, anisotropy of the
    data, of the uncertainties and of the scale factors). Returns a multi-line string."""
    sm = result.summary
    u = sm["U"]

    def axes(v):
        return "  ".join(f"{x:8.2f}" for x in v)

    lines = [
        "Overall anisotropy (U, A^2):",
        "        X         Y         Z        XY        XZ        YZ",
        "  " + "  ".join(f"{x:8.4f}" for x in u),
        f"B along X, Y, Z (8 pi^2 U, A^2): {axes(sm['b_axes'])}   (isotropic {sm['b_iso']:.2f})",
        f"At the resolution ({sm['resolution']:.2f} A), ratio of largest to smallest axis value:",
        f"  Anisotropy of data:          {sm['data_anisotropy']:7.3f}"
        f"   (B along X, Y, Z: {axes(sm['data_b_axes'])})",
        f"  Anisotropy of uncertainties: {sm['error_anisotropy']:7.3f}"
        f"   (B along X, Y, Z: {axes(sm['error_b_axes'])}; from {sm['noise_source']})",
        f"  Anisotropy of scale factors: {sm['scale_anisotropy']:7.3f}",
    ]
    return "\n".join(lines)
