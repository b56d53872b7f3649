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
* Asymmetric units (EMAN2's) are in :mod:`.asymmetric_unit`.
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
    "expand_poses",
    "symmetry_axes_rotation",
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


def _same_set(a: np.ndarray, b: np.ndarray) -> bool:
    d = np.abs(a[:, None] - b[None]).max(axis=(2, 3))
    return bool(np.all(d.min(axis=1) < 1e-6))


def _top_axes(group: np.ndarray, fold: int) -> np.ndarray:
    """Unit axes (both signs) of the rotations by 360/fold degrees in the group."""
    cos_t = (np.trace(group, axis1=1, axis2=2) - 1.0) / 2.0
    sel = group[np.abs(cos_t - np.cos(2 * np.pi / fold)) < 1e-9]
    ax = np.stack(
        [sel[:, 2, 1] - sel[:, 1, 2], sel[:, 0, 2] - sel[:, 2, 0], sel[:, 1, 0] - sel[:, 0, 1]], 1
    )
    ax /= np.linalg.norm(ax, axis=1, keepdims=True)
    return np.concatenate([ax, -ax])


def _frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    e2 = b - (a @ b) * a
    e2 /= np.linalg.norm(e2)
    return np.stack([a, e2, np.cross(a, e2)], axis=1)


@lru_cache(maxsize=16)
def _axes_rotation(spec: SymmetrySpec) -> np.ndarray:
    g_rel, g_eman = _group(spec, "relion"), _group(SymmetrySpec(spec.kind, spec.n), "eman")
    if _same_set(g_rel, g_eman):
        return np.eye(3)
    fold = _PLATONIC_FOLD[spec.kind]
    u, v = _top_axes(g_eman, fold), _top_axes(g_rel, fold)
    cos_uv = u[1:] @ u[0]
    u2 = u[1:][np.argmax(np.where(cos_uv < 1 - 1e-9, cos_uv, -2))]  # nearest other axis
    frame_u = _frame(u[0], u2)
    for v1 in v:
        for v2 in v[np.abs(v @ v1 - u[0] @ u2) < 1e-9]:
            q = _frame(v1, v2) @ frame_u.T
            if _same_set(g_rel, q @ g_eman @ q.T):
                return q
    raise RuntimeError(
        f"no rotation relates the EMAN and RELION axes of {spec}"
    )  # pragma: no cover


def symmetry_axes_rotation(symbol: str) -> np.ndarray:
    """The rotation from EMAN2's symmetry axes to RELION's for ``symbol``.

    Parameters
    ----------
    symbol : str
        RELION-convention symbol (``c<n>``, ``d<n>``, ``tet``, ``oct``, ``i``, ``i1``-``i4``).

    Returns
    -------
    ndarray, float64, shape (3, 3)
        ``Q`` with ``symmetry_matrices(symbol, convention="relion")`` equal (as a set) to
        ``Q @ S @ Q.T`` for the EMAN group's ``S``: a map with EMAN's axes, rotated so that its
        point ``r`` moves to ``Q r``, has RELION's; its poses ``A`` become ``A @ Q.T``. Identity
        for cn, dn, oct and I4; a 60 degree turn about z for tet, 36 degrees for I3.
    """
    spec = parse_symmetry(symbol, convention="relion")
    if spec.kind == "h":
        raise ValueError(f"symbol: {symbol!r} is helical; its axis is z in both conventions")
    out = _axes_rotation(spec).view()
    out.setflags(write=False)
    return out
