"""Anisotropic overall B: fit a symmetric 3x3 B tensor to a map's Fourier coefficients and
remove its direction-dependent part.

A map with overall B tensor ``B`` (Å², symmetric 3x3, axes (z, y, x) like the arrays) has
Fourier amplitudes falling as ``exp(-s^T B s / 4)`` (``s`` = (sz, sy, sx), 1/Å); for an
isotropic map ``B = b I`` and this is the usual ``exp(-b s^2/4)``.

**Fit** (:func:`fit_aniso_b`). The tensor is split into its isotropic part ``b_iso I`` and a
traceless part ``A`` (``B = b_iso I + A``, ``trace A = 0``):

* ``b_iso`` is the map B of :func:`.mapb.map_b` (the same Guinier fit, fit range and sign as
  every sharpening protocol, so the reported map B does not depend on the anisotropy);
* ``A`` is the least-squares fit of ``ln |F(s)|^2 = c_k - s^T A s / 2`` over the Fourier
  coefficients of the same fit range, with one free intercept ``c_k`` per Fourier shell ``k``.
  The per-shell intercepts absorb the radial shape of the spectrum (the 4-5 Å bump of protein
  maps, a non-Guinier fall-off), so only how the amplitude varies with *direction* inside each
  shell sets ``A``. For Wilson-distributed coefficients ``ln |F|^2`` scatters about
  ``ln <|F|^2>`` minus a constant, which the intercepts also absorb.

**Removal** (:func:`remove_aniso`): multiply every coefficient by ``exp(+s^T A s / 4)``. The
result has the isotropic overall B ``b_iso`` in every direction; the mean over a shell is kept
to first order, so the map B hardly changes. The exponent is clipped to +-60.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emforge.numerics import irfftn, rfftn, shell_index_rfft, spatial_frequency_rfft

from .bfactor import check_map, check_pixel_size
from .mapb import fit_map_b, map_b_fit_range

__all__ = ["AnisoB", "fit_aniso_b", "aniso_filter", "remove_aniso"]

# a symmetric traceless 3x3 matrix in terms of 5 numbers (z, y, x axes)
_TRACELESS = np.array(
    [
        [[1, 0, 0], [0, -1, 0], [0, 0, 0]],
        [[1, 0, 0], [0, 1, 0], [0, 0, -2]],
        [[0, 1, 0], [1, 0, 0], [0, 0, 0]],
        [[0, 0, 1], [0, 0, 0], [1, 0, 0]],
        [[0, 0, 0], [0, 0, 1], [0, 1, 0]],
    ],
    dtype=np.float64,
)


@dataclass
class AnisoB:
    """An overall B tensor fit.

    ``b_cart`` (3, 3) float64, Å², axes (z, y, x): ``b_iso I + aniso``; ``b_iso`` the map B
    (Å², positive = blurred); ``aniso`` the traceless part; ``d_max`` >= ``d_min`` (Å) the
    fit range; ``n_coeffs`` the Fourier coefficients fitted; ``warnings`` of the map B fit.
    """

    b_cart: np.ndarray
    b_iso: float
    aniso: np.ndarray
    d_max: float
    d_min: float
    n_coeffs: int
    warnings: list[str] = field(default_factory=list)

    @property
    def principal(self) -> np.ndarray:
        """Eigenvalues of ``b_cart`` (Å², ascending)."""
        return np.linalg.eigvalsh(self.b_cart)

    @property
    def anisotropy(self) -> float:
        """Largest minus smallest principal B (Å²); 0 for an isotropic map."""
        e = self.principal
        return float(e[-1] - e[0])


def _quadratic(basis: np.ndarray, comps) -> list[np.ndarray]:
    """``s^T E s`` on the half-grid for every matrix ``E`` of ``basis`` (float32 grids)."""
    out = []
    for e in basis:
        q = 0.0
        for i in range(3):
            for j in range(3):
                if e[i, j]:
                    q = q + np.float32(e[i, j]) * comps[i] * comps[j]
        out.append(np.asarray(q, np.float32))
    return out


def fit_aniso_b(
    map, *, pixel_size: float, resolution: float | None = None, d_max: float | None = None
) -> AnisoB:
    """Fit the overall B tensor of a 3D map (float32 (z, y, x), ``pixel_size`` Å/px).

    The fit range is :func:`.mapb.map_b_fit_range` (``resolution`` and ``d_max`` in Å as
    there); the method is in the module docstring. Raises ValueError (naming ``map`` or
    ``resolution``) for a map that is not 3D or a box with too few shells.
    """
    a = check_map(map)
    if a.ndim != 3:
        raise ValueError(f"map: an anisotropic B needs a 3D map, got shape {a.shape}")
    px = check_pixel_size(pixel_size)
    F = rfftn(a)
    return _fit(F, a.shape, px, resolution, d_max)


def _fit(F: np.ndarray, shape, px: float, resolution, d_max) -> AnisoB:
    """:func:`fit_aniso_b` from the half-grid transform ``F`` of a real box ``shape``."""
    from emforge.numerics import amplitude_profile_rfft

    dmx, dmn = map_b_fit_range(shape, pixel_size=px, resolution=resolution, d_max=d_max)
    s_sh, amp = amplitude_profile_rfft(F, shape=shape, pixel_size=px, kind="rms")
    iso = fit_map_b(s_sh, amp, d_min=dmn, d_max=dmx)
    s, comps = spatial_frequency_rfft(shape, pixel_size=px, components=True)
    comps = [np.broadcast_to(c, s.shape) for c in comps]
    power = F.real**2 + F.imag**2
    sel = (s >= 1.0 / iso.d_max * (1 - 1e-6)) & (s <= 1.0 / iso.d_min * (1 + 1e-6))
    sel &= power > 0
    shells = shell_index_rfft(shape)[sel]
    y = np.log(power[sel].astype(np.float64))
    x = np.stack([q[sel].astype(np.float64) for q in _quadratic(_TRACELESS, comps)], axis=1)
    # one free intercept per shell: subtract each shell's mean from y and from the regressors
    _, inv, counts = np.unique(shells, return_inverse=True, return_counts=True)
    y -= (np.bincount(inv, y) / counts)[inv]
    for k in range(x.shape[1]):
        x[:, k] -= (np.bincount(inv, x[:, k]) / counts)[inv]
    aniso = np.zeros((3, 3))
    if y.size > 2 * x.shape[1]:
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        aniso = -2.0 * np.tensordot(coef, _TRACELESS, axes=1)  # y = -s^T A s / 2
    b_cart = iso.b * np.eye(3) + aniso
    return AnisoB(b_cart, iso.b, aniso, iso.d_max, iso.d_min, int(y.size), list(iso.warnings))


def aniso_filter(shape, aniso, *, pixel_size: float) -> np.ndarray:
    """``exp(+s^T aniso s / 4)`` on the rfft half-grid of a real box ``shape`` (float32):
    the factor that removes the traceless B ``aniso`` ((3, 3), Å², z, y, x axes)."""
    s, comps = spatial_frequency_rfft(
        shape, pixel_size=check_pixel_size(pixel_size), components=True
    )
    q = np.zeros(s.shape, np.float32)
    a = np.asarray(aniso, np.float64)
    for i in range(3):
        for j in range(3):
            if a[i, j]:
                q = q + np.float32(a[i, j] / 4.0) * comps[i] * comps[j]
    return np.exp(np.clip(q, -60.0, 60.0)).astype(np.float32)


def remove_aniso(
    map, *, pixel_size: float, resolution: float | None = None, d_max: float | None = None
) -> tuple[np.ndarray, AnisoB]:
    """Fit the B tensor (:func:`fit_aniso_b`) and remove its traceless part.

    Returns the corrected map (float32, same shape) and the fit. The corrected map falls off
    as ``exp(-b_iso s^2/4)`` in every direction.
    """
    a = check_map(map)
    px = check_pixel_size(pixel_size)
    F = rfftn(a)
    fit = _fit(F, a.shape, px, resolution, d_max)
    return irfftn(F * aniso_filter(a.shape, fit.aniso, pixel_size=px), shape=a.shape), fit
