"""Particle poses from 2D alignments to projections, and angular errors.

Conventions (docs/conventions.md)
---------------------------------
* A pose is RELION ZYZ Euler angles (rot, tilt, psi) in degrees, matrix
  ``A = euler_zyz_to_matrix(...)`` (map frame -> particle frame), and an origin shift ``s``
  (x, y) in pixels with RELION's ``rlnOrigin`` sign: the image is
  ``P(r) = Proj_A(r + s)``, i.e. what ``numerics.project_fourier(volume, A, shifts=s * px,
  pixel_size=px)`` makes (the projected centre lands at ``n//2 - s``).
* An alignment (angle a, d = (dx, dy), mirror) of :mod:`emforge.numerics.align2d` brings the
  particle onto the reference ``Proj_B``: ``P(r) = Proj_B(R(a) M r + d)``, ``M`` the x-flip
  when mirrored, ``R(a)`` the counter-clockwise rotation of (x, y).
* In-plane rotation: ``Proj_{Q(a) B}(u) = Proj_B(R(a) u)`` with ``Q(a) = diag(R(-a), 1)``.
  Mirror: ``Proj_B(M u) = Proj_{D B}(u)`` with ``D = diag(-1, 1, -1)`` (a proper rotation by
  180 degrees about y), so the x-flip of a projection is a projection.
* Hence: no mirror: ``A = Q(a) B``, ``s = R(-a) d``; mirror: ``A = Q(-a) D B``,
  ``s = R(a) M d`` (both verified numerically in tests/protocols/refine/test_poses.py).
"""

from __future__ import annotations

import numpy as np

from emforge.numerics.rotations import (
    euler_zyz_to_matrix,
    matrix_to_euler_zyz,
    rotation_angle_between,
)
from emforge.numerics.symmetry import symmetry_matrices

__all__ = ["poses_from_alignment", "angular_error"]

_D = np.diag([-1.0, 1.0, -1.0])


def _rot2(deg: np.ndarray) -> np.ndarray:
    """(N, 2, 2) counter-clockwise rotations of (x, y) by ``deg`` degrees."""
    t = np.radians(deg)
    c, s = np.cos(t), np.sin(t)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _inplane(deg: np.ndarray) -> np.ndarray:
    """(N, 3, 3) ``Q(a) = diag(R(-a), 1)``: Proj_{Q(a) B}(u) = Proj_B(R(a) u)."""
    q = np.zeros((deg.size, 3, 3))
    q[:, :2, :2] = _rot2(-deg)
    q[:, 2, 2] = 1.0
    return q


def poses_from_alignment(ref_eulers, angle, dx, dy, mirror) -> tuple[np.ndarray, np.ndarray]:
    """Poses of particles aligned to reference projections.

    Parameters
    ----------
    ref_eulers : array (N, 3)
        RELION ZYZ angles (rot, tilt, psi), degrees, of each particle's reference projection.
    angle, dx, dy, mirror : arrays (N,)
        The alignment of each particle onto its reference (degrees, pixels, bool), as
        :func:`emforge.numerics.rotate_translate_flip` or :func:`.classify` give it.

    Returns
    -------
    eulers : ndarray float64 (N, 3)
        (rot, tilt, psi) degrees of the particle.
    shifts : ndarray float64 (N, 2)
        Origin (x, y) in pixels, RELION ``rlnOrigin`` sign (module notes).
    """
    e = np.asarray(ref_eulers, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != 3:
        raise ValueError(f"ref_eulers: need shape (N, 3), got {e.shape}")
    n = e.shape[0]
    try:
        a, tx, ty = (np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in (angle, dx, dy))
        mir = np.broadcast_to(np.asarray(mirror, bool), (n,))
    except ValueError:
        raise ValueError(
            f"angle, dx, dy, mirror: need {n} values each (one per particle)"
        ) from None
    b = euler_zyz_to_matrix(e)
    d = np.stack([tx, ty], -1)
    md = np.where(mir[:, None], d * [-1.0, 1.0], d)
    s = np.einsum("nij,nj->ni", _rot2(np.where(mir, a, -a)), md)
    a_mat = np.where(mir[:, None, None], _inplane(-a) @ (_D @ b), _inplane(a) @ b)
    return matrix_to_euler_zyz(a_mat), s


def angular_error(eulers_a, eulers_b, *, symmetry: str = "c1", convention: str = "eman"):
    """Smallest rotation angle between two sets of poses, over the map's symmetry.

    Parameters
    ----------
    eulers_a, eulers_b : arrays (N, 3)
        RELION ZYZ angles in degrees.
    symmetry : str
        Point group of the map (``c1`` default): pose ``A`` and ``A @ S`` are the same view.
    convention : {"eman", "relion"}
        Axis convention of ``symmetry`` (:func:`emforge.numerics.symmetry_matrices`).

    Returns
    -------
    ndarray float64 (N,): degrees in [0, 180], ``min_S angle(A_a S, A_b)``.
    """
    a = euler_zyz_to_matrix(np.asarray(eulers_a, np.float64))
    b = euler_zyz_to_matrix(np.asarray(eulers_b, np.float64))
    if a.shape != b.shape:
        raise ValueError(f"eulers_b: shape {b.shape[:-1]} differs from eulers_a's {a.shape[:-1]}")
    try:
        group = symmetry_matrices(symmetry, convention=convention)
    except ValueError as err:
        raise ValueError(f"symmetry: {err}") from None
    expanded = np.einsum("...ij,gjk->...gik", a, group)
    return rotation_angle_between(expanded, b[..., None, :, :]).min(-1)
