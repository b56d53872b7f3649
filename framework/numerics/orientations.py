"""Sets of orientations in 3D: EMAN2's "eman" generator and a near-uniform SO(3) grid.

* :func:`eman_orientations` reproduces ``EmanOrientationGenerator::gen_orientations`` of EMAN2
  (libEM/symmetry.cpp) view for view, including its float32 arithmetic and its quirks: one view
  at the pole, the ``az_max/h < 2.8 -> h = az_max/2.1`` rule, the exact ``alt == alt_max``
  equator rules, the icos az offset of 234 degrees. Angles are EMAN ``(az, alt, phi)`` degrees
  (convert with :func:`.rotations.eman_to_euler_zyz` or :func:`.rotations.eman_to_matrix`).
* :func:`so3_grid` is a quasi-uniform set of full rotations (super-Fibonacci spiral, Alexa 2022)
  with about ``8 pi^2 / step^3`` rotations, for exhaustive 3D searches; uniformly random
  rotations are :func:`.rotations.random_rotations`.
"""

from __future__ import annotations

import numpy as np

from .rotations import quaternion_to_matrix
from .symmetry import SymmetrySpec, parse_symmetry

__all__ = ["eman_orientations", "so3_grid", "so3_grid_size"]

_F = np.float32
_DEG2RAD = np.pi / 180.0  # EMAN2's EMConsts::deg2rad is a double
_RAD2DEG = 180.0 / np.pi


def _delimiters(spec: SymmetrySpec, inc_mirror: bool, maxtilt: float):
    """(alt_min, alt_max, az_max) as float32, as EMAN2's ``get_delimiters`` computes them."""
    if spec.kind == "c":
        return _F(0), _F(180 if inc_mirror else 90), _F(360) / _F(spec.n)
    if spec.kind == "d":
        return _F(0), _F(90), _F(360 if inc_mirror else 180) / _F(spec.n)
    if spec.kind == "h":
        return _F(90) - _F(maxtilt), _F(90), _F(360)
    cap_sig, alpha, _ = _platonic_params(spec.n)
    half = not inc_mirror and spec.kind != "tet"
    az_max = _F((0.5 if half else 1.0) * _RAD2DEG * float(cap_sig))
    return _F(0), _F(_RAD2DEG * float(alpha)), az_max


def _platonic_params(m: int):
    """(cap_sig, alpha, theta_c/2) in float32 radians, as ``PlatonicSym::init`` stores them
    (the C++ calls the double-precision libm functions on float arguments)."""
    cap_sig = _F(2.0 * np.pi / m)
    c = float(cap_sig)
    alpha = _F(np.arccos(1.0 / (float(np.sqrt(_F(3))) * np.tan(float(_F(c / 2))))))
    half_theta_c = _F(0.5 * np.arccos(np.cos(c) / (1.0 - np.cos(c))))
    return cap_sig, alpha, half_theta_c


def _platonic_inside(spec: SymmetrySpec, alt, az, inc_mirror: bool, alt_max, az_max):
    """EMAN2's float32 ``is_in_asym_unit`` for tet/oct/icos on arrays of (alt, az) degrees."""
    cap_sig, alpha, half_theta_c = _platonic_params(spec.n)
    a = (az * _DEG2RAD).astype(_F)
    a = np.minimum(a, cap_sig - a)
    t = (alt * _DEG2RAD).astype(_F)

    def bound(al):
        half_sig = cap_sig / _F(2)
        b = (np.sin((half_sig - a).astype(np.float64)) / np.tan(float(half_theta_c))).astype(_F)
        b = (b + np.sin(a.astype(np.float64)) / np.tan(float(al))).astype(_F)
        b = (b * (1.0 / np.sin(float(half_sig)))).astype(_F)
        return np.arctan(1.0 / b.astype(np.float64)).astype(_F)

    ok = (alt >= 0) & (alt <= alt_max) & (az < az_max) & (az >= 0) & (bound(alpha) > t)
    if spec.kind == "tet" and not inc_mirror:
        ok &= ~(bound(alpha / _F(2)) < t)
    return ok


def _ring_azimuths(h, bound, d_odd_flag: bool, az_max) -> np.ndarray:
    """az = 0, az += h (float32) while az <= bound; EMAN2's D-odd mirror jump when flagged."""
    k = int(float(bound) / float(h)) + 3
    steps = np.full(k, h, dtype=_F)
    steps[0] = 0
    az = np.add.accumulate(steps, dtype=_F)
    first = az[az <= bound]
    if not d_odd_flag:
        return first
    restart = _F(az[len(first)] + az_max / _F(2))
    k2 = int(float(az_max) / float(h)) + 3
    steps = np.full(k2, h, dtype=_F)
    steps[0] = restart
    second = np.add.accumulate(steps, dtype=_F)
    return np.concatenate([first, second[second <= az_max]])


def _az_bound(spec: SymmetrySpec, alt, alt_max, az_max, h, inc_mirror: bool):
    """EMAN2's ``get_az_max``: (adjusted az bound, D-odd mirror flag)."""
    at_equator = alt == alt_max
    if spec.kind == "d" and at_equator and spec.n % 2 == 1:
        return (az_max / _F(4), True) if inc_mirror else (az_max / _F(2), False)
    if spec.kind == "d" and at_equator and inc_mirror:
        return az_max / _F(2), False
    if spec.kind == "c" and not inc_mirror and at_equator and spec.n % 2 == 1:
        return az_max / _F(2), False
    if spec.kind in ("c", "tet"):
        return az_max - h / _F(4), False
    if inc_mirror and spec.kind in ("d", "oct", "icos"):
        return az_max - h / _F(4), False
    return az_max, False


def eman_orientations(
    symmetry: str = "c1",
    delta: float = 5.0,
    *,
    inc_mirror: bool = False,
    perturb: bool = False,
    phitoo: float = 0.0,
    maxtilt: float = 90.0,
    seed=None,
) -> np.ndarray:
    """EMAN2's "eman" orientation generator (``gen_orientations("eman", ...)``).

    Parameters
    ----------
    symmetry : str
        EMAN symbol: ``c<n>``, ``d<n>``, ``tet``, ``oct``, ``icos``, ``h<n>``.
    delta : float
        Angular step in degrees (> 0).
    inc_mirror : bool
        Also cover the mirror half of the asymmetric unit.
    perturb : bool
        Add N(0, delta/8) to alt and N(0, h/8) to az of every view off the pole (h: the ring's
        az step), as EMAN2 does each e2refine iteration.
    phitoo : float
        If > 0, every view is repeated with phi = phitoo, 2 phitoo, ... <= 360 - phitoo.
    maxtilt : float
        Helical symmetry only: alt runs from ``90 - maxtilt`` to 90.
    seed : int, numpy.random.Generator or None
        Random source for ``perturb``.

    Returns
    -------
    ndarray, float32, shape (N, 3)
        EMAN ``(az, alt, phi)`` in degrees, in EMAN2's order (rings of increasing alt, az
        increasing; phi copies follow their view). c1, delta 5: 833 views (1665 with mirror).
    """
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"delta: must be a positive number of degrees, got {delta}")
    if not (np.isfinite(phitoo) and phitoo >= 0):
        raise ValueError(f"phitoo: must be >= 0 degrees, got {phitoo}")
    if not 0 < maxtilt <= 90:
        raise ValueError(f"maxtilt: must be in (0, 90] degrees, got {maxtilt}")
    spec = parse_symmetry(symmetry)
    inc_mirror = bool(inc_mirror)
    d = _F(delta)
    alt_min, alt_max, az_max = _delimiters(spec, inc_mirror, maxtilt)
    rng = np.random.default_rng(seed) if perturb else None
    offset = _F(234) if spec.kind == "icos" else _F(0)
    rings = []
    alt = alt_min if spec.kind == "h" else _F(0)
    while alt <= alt_max:
        if alt == 0:
            h = az_max
        else:
            h = _F(float(d) / np.sin(float(_F(float(alt) * _DEG2RAD))))
            if az_max / h < _F(2.8):
                h = az_max / _F(2.1)
        bound, flag = _az_bound(spec, alt, alt_max, az_max, h, inc_mirror)
        az = _F([0]) if alt == 0 else _ring_azimuths(h, bound, flag, az_max)
        if spec.kind in ("tet", "oct", "icos"):
            az = az[_platonic_inside(spec, alt, az, inc_mirror, alt_max, az_max)]
            az = (az + offset).astype(_F)
        alts = np.full(az.shape, alt, dtype=_F)
        if rng is not None and alt != 0:
            alts = (alts + rng.normal(0.0, 0.125 * float(d), az.shape)).astype(_F)
            az = (az + rng.normal(0.0, 0.125 * float(h), az.shape)).astype(_F)
        ring = np.stack([az, alts], -1)
        if spec.kind == "h" and inc_mirror and alt != alt_min:
            other = np.stack([az, (_F(2) * alt_min - alts).astype(_F)], -1)
            ring = np.stack([ring, other], 1).reshape(-1, 2)
        rings.append(ring)
        alt = _F(alt + d)
    views = np.concatenate(rings) if rings else np.zeros((0, 2), _F)
    phis = _F([0])
    if phitoo > 0:
        p = _F(phitoo)
        k = int(360.0 / float(p)) + 2
        steps = np.full(k, p, dtype=_F)
        extra = np.add.accumulate(steps, dtype=_F)
        phis = np.concatenate([phis, extra[extra <= _F(360) - p]])
    out = np.empty((len(views) * len(phis), 3), _F)
    out[:, 0] = np.repeat(views[:, 0], len(phis))
    out[:, 1] = np.repeat(views[:, 1], len(phis))
    out[:, 2] = np.tile(phis, len(views))
    return out


def so3_grid_size(step: float) -> int:
    """Number of rotations :func:`so3_grid` uses for an angular ``step`` (degrees):
    ``ceil(8 pi^2 / step^3)``, step in radians (15 deg: 4,400; 7.5 deg: 35,200)."""
    if not (np.isfinite(step) and 0 < step <= 180):
        raise ValueError(f"step: must be in (0, 180] degrees, got {step}")
    return int(np.ceil(8 * np.pi**2 / np.radians(step) ** 3))


def so3_grid(step: float) -> np.ndarray:
    """A near-uniform set of rotations covering SO(3) at about ``step`` degrees.

    Parameters
    ----------
    step : float
        Angular step in degrees; the set has :func:`so3_grid_size` rotations, about as many as a
        HEALPix direction grid times in-plane angles at the same step.

    Returns
    -------
    ndarray, float64, shape (N, 3, 3)
        Rotation matrices of a super-Fibonacci spiral of unit quaternions (deterministic).
        Every rotation lies within ~0.9 step of one of them (measured; tests assert <= 1 step).
    """
    n = so3_grid_size(step)
    s = np.arange(n) + 0.5
    r = np.sqrt(s / n)
    big_r = np.sqrt(1.0 - s / n)
    phi = np.sqrt(2.0)
    psi = 1.533751168755204288118041  # the real root of psi^4 = psi + 4
    alpha = 2 * np.pi * s / phi
    beta = 2 * np.pi * s / psi
    q = np.stack(
        [r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)], -1
    )
    return quaternion_to_matrix(q)
