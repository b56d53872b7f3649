"""Point-group and helical symmetry in 3D: group matrices, asymmetric units, pose expansion.

Conventions
-----------
* Symbols (case-insensitive): ``c<n>``, ``d<n>``, ``tet`` (or ``t``), ``oct`` (``o``), ``icos``
  (``i``), helical ``h<n>`` (n subunits, twist and rise given separately); with
  ``convention="relion"`` also ``i1`` ... ``i4``.
* A group is returned as its rotation matrices ``S`` (shape ``(G, 3, 3)``, float64, identity
  first) with ``map(S @ r) = map(r)`` for points ``r = (x, y, z)`` of the map. The set is closed
  under inversion, so the same array also holds the frame changes of emforge's pose matrices
  (see :mod:`.rotations`): the poses ``A @ S`` all give the same projection as ``A``.
* ``convention="eman"`` (default) uses EMAN2's axes: the n-fold of cn/dn on z, the dn 2-folds
  on x (and at multiples of 180/n degrees about z), tet with a 3-fold on z and a 2-fold in the
  yz plane at y < 0, oct with 4-folds on x, y, z, icos with a 5-fold on z and a 2-fold in the
  xz plane at x > 0. ``convention="relion"`` uses RELION's axes (``symmetries.cpp``): cn, dn and
  oct are identical; RELION T is EMAN tet turned by 60 degrees about z; RELION I (= I2, its
  default) and I1 put 2-folds on the axes; I3 is EMAN icos turned by 36 degrees about z; I4 is
  EMAN icos. See docs/conventions.md.
* Asymmetric units are EMAN2's (``get_delimiters`` / ``is_in_asym_unit``), tested on the view
  direction (third row of a pose matrix) as EMAN az/alt: alt from +z, az such that the direction
  is ``(sin alt sin az, -sin alt cos az, cos alt)``. Boundaries are closed (within ``tol``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .rotations import axis_angle_to_matrix, eman_to_matrix

__all__ = [
    "SymmetrySpec",
    "parse_symmetry",
    "symmetry_matrices",
    "symmetry_order",
    "helical_operators",
    "asymmetric_unit_limits",
    "in_asymmetric_unit",
    "direction_in_asymmetric_unit",
    "expand_poses",
    "reduce_to_asymmetric_unit",
]

_PLATONIC_FOLD = {"tet": 3, "oct": 4, "icos": 5}
_ALIASES = {"t": "tet", "tet": "tet", "o": "oct", "oct": "oct", "i": "icos", "icos": "icos"}


@dataclass(frozen=True)
class SymmetrySpec:
    """A parsed symmetry symbol: ``kind`` in c, d, tet, oct, icos, h; ``n`` its order parameter
    (the n of cn/dn/hn; 3, 4, 5 for tet/oct/icos); ``variant`` the RELION icosahedral setting
    (1-4, 0 for EMAN's)."""

    kind: str
    n: int
    variant: int = 0

    @property
    def order(self) -> int:
        """Number of rotations in the group (n for helical symmetry)."""
        return {"c": self.n, "d": 2 * self.n, "h": self.n, "tet": 12, "oct": 24, "icos": 60}[
            self.kind
        ]


def parse_symmetry(symbol: str, *, convention: str = "eman") -> SymmetrySpec:
    """Parse a symmetry symbol such as ``"c1"``, ``"D7"``, ``"icos"`` or ``"h3"``.

    Parameters
    ----------
    symbol : str
        The symbol (case-insensitive).
    convention : {"eman", "relion"}
        Axis convention; ``"relion"`` also accepts ``i1`` ... ``i4`` (``i`` = ``i2``).

    Returns
    -------
    SymmetrySpec
    """
    if convention not in ("eman", "relion"):
        raise ValueError(f"convention: {convention!r} is not 'eman' or 'relion'")
    s = str(symbol).strip().lower()
    m = re.fullmatch(r"([cdh])(\d+)", s)
    if m:
        n = int(m.group(2))
        if n < 1:
            raise ValueError(f"symmetry: {symbol!r} needs an order >= 1")
        return SymmetrySpec(m.group(1), n)
    if s in _ALIASES:
        kind = _ALIASES[s]
        variant = 2 if (kind == "icos" and convention == "relion") else 0
        return SymmetrySpec(kind, _PLATONIC_FOLD[kind], variant)
    m = re.fullmatch(r"i([1-4])", s)
    if m and convention == "relion":
        return SymmetrySpec("icos", 5, int(m.group(1)))
    raise ValueError(
        f"symmetry: {symbol!r} is not one of cN, dN, hN, tet, oct, icos"
        + (" or i1-i4" if convention == "relion" else "")
    )


def _closure(generators: list[np.ndarray], order: int) -> np.ndarray:
    """All products of the generators (breadth first, identity first), rounded to exact 0/±1."""
    group = [np.eye(3)]
    frontier = [np.eye(3)]
    while frontier:
        new = []
        for a in frontier:
            for g in generators:
                m = g @ a
                if not any(np.abs(m - b).max() < 1e-6 for b in group):
                    group.append(m)
                    new.append(m)
        frontier = new
    out = np.array(group)
    for v in (0.0, 1.0, -1.0):
        out[np.abs(out - v) < 1e-12] = v
    if len(out) != order:  # pragma: no cover - a wrong generator table is a bug
        raise RuntimeError(f"group closure gave {len(out)} elements, expected {order}")
    return out


_GOLD = (1 + 5**0.5) / 2
# (fold, axis) generators of RELION's icosahedral settings (symmetries.cpp), in exact form:
# (1, 0, gold) ~ (0.5257, 0, 0.8507), (2, 0, 1) ~ (0.8944, 0, 0.4472)
_RELION_ICOS_AXES = {
    1: [(2, (1, 0, 0)), (5, (_GOLD, 0, -1))],
    2: [(2, (0, 0, 1)), (5, (1, 0, _GOLD))],
    3: [(2, (-1, 0, _GOLD)), (5, (0, 0, 1))],
    4: [(2, (1, 0, _GOLD)), (5, (2, 0, 1))],
}


@lru_cache(maxsize=64)
def _group(spec: SymmetrySpec, convention: str) -> np.ndarray:
    n = spec.n
    if spec.kind in ("c", "d"):
        az = np.arange(n) * (360.0 / n)
        rots = eman_to_matrix(np.stack([az, 0 * az, 0 * az], -1))
        if spec.kind == "d":  # EMAN alt = 180: 2-folds in the xy plane, the first on x
            flips = eman_to_matrix(np.stack([az, 0 * az + 180.0, 0 * az], -1))
            rots = np.concatenate([rots, flips])
        for v in (0.0, 1.0, -1.0):
            rots[np.abs(rots - v) < 1e-12] = v
        return rots
    if spec.kind == "h":
        raise ValueError("symmetry: helical groups need twist and rise: use helical_operators")
    if convention == "relion":
        if spec.kind == "tet":
            gens = [(3, (0, 0, 1)), (2, (0, 2**0.5, 1))]  # (0, 0.8165, 0.5774)
        elif spec.kind == "oct":
            gens = [(3, (1, 1, 1)), (4, (0, 0, 1))]
        else:
            gens = _RELION_ICOS_AXES[spec.variant]
        mats = [axis_angle_to_matrix(ax, 360.0 / f) for f, ax in gens]
    else:  # EMAN2's tables (Baldwin): a face (tet, oct) or a vertex (icos) on z
        if spec.kind == "tet":
            eul = [(0, 0, 120), (0, np.degrees(np.arccos(-1.0 / 3.0)), 60)]
        elif spec.kind == "oct":
            eul = [(0, 0, 90), (0, 90, 0)]
        else:
            eul = [(90, 0, -18), (90, np.degrees(np.arctan(2.0)), -54)]
        mats = [eman_to_matrix(e) for e in eul]
    return _closure(mats, spec.order)


def symmetry_matrices(symbol: str, *, convention: str = "eman") -> np.ndarray:
    """Rotation matrices of a point group.

    Parameters
    ----------
    symbol : str
        ``c<n>``, ``d<n>``, ``tet``, ``oct``, ``icos`` (``i1``-``i4`` with RELION's convention).
    convention : {"eman", "relion"}
        Axis convention (module docstring).

    Returns
    -------
    ndarray, float64, shape (G, 3, 3), read-only
        Identity first; cn: rotations by k·360/n about z (EMAN's order), dn: then the 2-folds.
    """
    out = _group(parse_symmetry(symbol, convention=convention), convention).view()
    out.setflags(write=False)
    return out


def symmetry_order(symbol: str) -> int:
    """Number of symmetry operators of ``symbol`` (cn: n, dn: 2n, tet 12, oct 24, icos 60)."""
    return parse_symmetry(symbol, convention="relion").order


def helical_operators(n: int, *, twist: float, rise: float) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` operators of a helix, in EMAN2's order (k = 0, 1, -1, 2, -2, ...).

    Parameters
    ----------
    n : int
        Number of subunits (>= 1).
    twist : float
        Rotation per subunit about z, degrees (right-handed about +z for positive twist).
    rise : float
        Translation per subunit along z, Angstrom.

    Returns
    -------
    rotations : ndarray, float64, shape (n, 3, 3)
        ``R_k``, the active rotation by ``k·twist`` about z.
    shifts : ndarray, float64, shape (n, 3)
        ``(0, 0, k·rise)`` in Angstrom, (x, y, z); subunit k is ``r -> R_k r + shift_k``.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n: must be an integer >= 1, got {n}")
    if not (np.isfinite(twist) and np.isfinite(rise)):
        raise ValueError("twist, rise: must be finite numbers")
    i = np.arange(int(n))
    k = (i + 1) // 2 * np.where((i > 1) & (i % 2 == 0), -1, 1)
    rot = axis_angle_to_matrix(np.broadcast_to([0.0, 0.0, 1.0], (int(n), 3)), k * float(twist))
    shifts = np.zeros((int(n), 3))
    shifts[:, 2] = k * float(rise)
    return rot, shifts


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


def expand_poses(matrices, symbol: str, *, convention: str = "eman") -> np.ndarray:
    """Symmetry-expand poses: every ``A @ S`` for the group's matrices ``S``.

    Parameters
    ----------
    matrices : array_like, shape (N, 3, 3)
        Pose matrices (map -> particle frame).
    symbol : str
        Point-group symbol.
    convention : {"eman", "relion"}
        Axis convention of the group (that of the map's symmetry axes).

    Returns
    -------
    ndarray, float64, shape (N, G, 3, 3)
        ``out[i, k] = A_i @ S_k``; ``out[:, 0]`` are the input poses.
    """
    a = np.asarray(matrices, dtype=np.float64)
    if a.ndim != 3 or a.shape[1:] != (3, 3):
        raise ValueError(f"matrices: expected shape (N, 3, 3), got {a.shape}")
    return np.einsum("nij,gjk->ngik", a, symmetry_matrices(symbol, convention=convention))


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
