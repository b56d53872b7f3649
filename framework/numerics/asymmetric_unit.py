"""EMAN2's asymmetric units of point groups and helices, tested on view directions.

Conventions
-----------
* The units are EMAN2's (``get_delimiters`` / ``is_in_asym_unit`` of libEM/symmetry.cpp), for
  groups in EMAN2's axes (:mod:`.symmetry`, ``convention="eman"``). They are tested on the view
  direction (third row of a pose matrix, map frame) as EMAN alt/az: alt from +z, az such that
  the direction is ``(sin alt sin az, -sin alt cos az, cos alt)``; icos az is counted from
  EMAN's offset of 234 degrees. Boundaries are closed (within ``tol`` degrees).
* Without ``inc_mirror`` a unit is 1/(2G) of the sphere (projections from opposite directions
  are mirror images of each other), with it 1/G.
"""

from __future__ import annotations

import numpy as np

from .symmetry import SymmetrySpec, expand_poses, parse_symmetry

__all__ = [
    "asymmetric_unit_limits",
    "direction_in_asymmetric_unit",
    "in_asymmetric_unit",
    "reduce_to_asymmetric_unit",
]


def asymmetric_unit_limits(symbol: str, *, inc_mirror: bool = False, maxtilt: float = 90.0):
    """EMAN2's asymmetric-unit delimiters ``(alt_min, alt_max, az_max)`` in degrees (float64).

    cn: alt <= 90 (180 with mirror), az < 360/n; dn: alt <= 90, az < 180/n (360/n); tet/oct/icos:
    alt <= acos(1/(sqrt 3 tan(pi/m))), az < 360/m (halved for oct/icos without mirror), m = 3/4/5,
    further cut by Baldwin's lower edge; hn: alt from ``90 - maxtilt`` to 90, all az.
    """
    spec = parse_symmetry(symbol)
    if spec.kind == "c":
        return 0.0, 180.0 if inc_mirror else 90.0, 360.0 / spec.n
    if spec.kind == "d":
        return 0.0, 90.0, (360.0 if inc_mirror else 180.0) / spec.n
    if spec.kind == "h":
        return 90.0 - maxtilt, 90.0, 360.0
    cap_sig = 2 * np.pi / spec.n
    alpha = np.arccos(1.0 / (np.sqrt(3.0) * np.tan(cap_sig / 2)))
    az_max = np.degrees(cap_sig) * (0.5 if (not inc_mirror and spec.kind != "tet") else 1.0)
    return 0.0, float(np.degrees(alpha)), float(az_max)


def _baldwin_bound(az, m: int, alpha):
    """Baldwin's lower edge of a platonic asymmetric unit: max alt (rad) at az' (rad)."""
    cap_sig = 2 * np.pi / m
    half_theta_c = 0.5 * np.arccos(np.cos(cap_sig) / (1.0 - np.cos(cap_sig)))
    b = np.sin(cap_sig / 2 - az) / np.tan(half_theta_c) + np.sin(az) / np.tan(alpha)
    return np.arctan(np.sin(cap_sig / 2) / b)


def _eman_alt_az(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    alt = np.degrees(np.arccos(np.clip(d[..., 2], -1.0, 1.0)))
    az = np.mod(np.degrees(np.arctan2(d[..., 0], -d[..., 1])), 360.0)
    return alt, az


def _au_mask(d: np.ndarray, spec: SymmetrySpec, inc_mirror: bool, tol: float, maxtilt: float):
    alt, az = _eman_alt_az(d)
    if spec.kind == "icos":
        az = np.mod(az - 234.0, 360.0)  # EMAN's alignment offset: a 3-fold on +x
    az = np.where(az > 360.0 - tol, az - 360.0, az)  # az just below 360 is az 0
    alt_min, alt_max, az_max = asymmetric_unit_limits(
        f"{spec.kind}{spec.n}" if spec.kind in "cdh" else spec.kind,
        inc_mirror=inc_mirror,
        maxtilt=maxtilt,
    )
    if spec.kind == "h" and inc_mirror:
        alt_min -= maxtilt
    pole = alt <= tol
    ok = (alt <= alt_max + tol) & (alt >= alt_min - tol) & (az <= az_max + tol) & (az >= -tol)
    if spec.kind in ("tet", "oct", "icos"):
        cap_sig = 2 * np.pi / spec.n
        alpha = np.arccos(1.0 / (np.sqrt(3.0) * np.tan(cap_sig / 2)))
        a = np.radians(np.clip(az, 0.0, None))
        a = np.minimum(a, cap_sig - a)
        rtol = np.radians(tol)
        ok &= np.radians(alt) <= _baldwin_bound(a, spec.n, alpha) + rtol
        if spec.kind == "tet" and not inc_mirror:
            ok &= np.radians(alt) <= _baldwin_bound(a, spec.n, alpha / 2) + rtol
    return ok | (pole & (alt_min <= tol))


def direction_in_asymmetric_unit(
    directions, symbol: str, *, inc_mirror: bool = False, tol: float = 1e-3, maxtilt: float = 90.0
) -> np.ndarray:
    """Whether view directions lie in EMAN2's asymmetric unit of ``symbol``.

    Parameters
    ----------
    directions : array_like, shape (..., 3)
        View directions (x, y, z) in the map frame, any non-zero length.
    symbol : str
        EMAN-convention symmetry symbol.
    inc_mirror : bool
        Use the asymmetric unit with its mirror half (what ``inc_mirror`` generates).
    tol : float
        Tolerance in degrees on every boundary (boundaries are closed).
    maxtilt : float
        Helical symmetry only: views within ``maxtilt`` degrees of the equator.

    Returns
    -------
    ndarray of bool, shape (...)
    """
    d = np.asarray(directions, dtype=np.float64)
    if d.ndim == 0 or d.shape[-1] != 3:
        raise ValueError(f"directions: expected shape (..., 3), got {d.shape}")
    if not tol >= 0:
        raise ValueError(f"tol: must be >= 0, got {tol}")
    norm = np.linalg.norm(d, axis=-1, keepdims=True)
    if np.any(~(norm > 0)):
        raise ValueError("directions: has zero length or NaN")
    return _au_mask(d / norm, parse_symmetry(symbol), bool(inc_mirror), float(tol), float(maxtilt))


def in_asymmetric_unit(
    matrices, symbol: str, *, inc_mirror: bool = False, tol: float = 1e-3, maxtilt: float = 90.0
) -> np.ndarray:
    """Whether each pose is viewed from EMAN2's asymmetric unit of ``symbol``.

    Parameters
    ----------
    matrices : array_like, shape (..., 3, 3)
        Pose matrices (map -> particle frame); their third rows are the view directions.
    symbol, inc_mirror, tol, maxtilt
        As :func:`direction_in_asymmetric_unit`.

    Returns
    -------
    ndarray of bool, shape (...)
    """
    a = np.asarray(matrices, dtype=np.float64)
    if a.ndim < 2 or a.shape[-2:] != (3, 3):
        raise ValueError(f"matrices: expected shape (..., 3, 3), got {a.shape}")
    return direction_in_asymmetric_unit(
        a[..., 2, :], symbol, inc_mirror=inc_mirror, tol=tol, maxtilt=maxtilt
    )


def reduce_to_asymmetric_unit(matrices, symbol: str, *, inc_mirror: bool = False) -> np.ndarray:
    """Replace each pose by its first symmetry mate ``A @ S`` viewed from EMAN's asymmetric unit.

    Parameters
    ----------
    matrices : array_like, shape (N, 3, 3)
        Pose matrices (map -> particle frame).
    symbol : str
        EMAN-convention point-group symbol.
    inc_mirror : bool
        Reduce into the asymmetric unit with its mirror half.

    Returns
    -------
    ndarray, float64, shape (N, 3, 3)
        Equivalent poses whose view directions pass :func:`in_asymmetric_unit`. Without
        ``inc_mirror`` the unit covers only one hemisphere of cn: poses viewed from the other
        side (which no rotation of the group brings in) are returned unchanged.
    """
    mates = expand_poses(matrices, symbol)
    inside = in_asymmetric_unit(mates, symbol, inc_mirror=inc_mirror)
    first = np.where(inside.any(axis=1), np.argmax(inside, axis=1), 0)
    return mates[np.arange(len(mates)), first]
