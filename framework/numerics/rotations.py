"""Rotation matrices and Euler angles in 3D: RELION ZYZ, EMAN az/alt/phi, axis-angle, random.

Conventions (all functions)
---------------------------
* A rotation matrix ``A`` (shape ``(..., 3, 3)``, float64) takes a point ``r = (x, y, z)`` of the
  reference (map) frame into the particle (image) frame: ``r_particle = A @ r``. A projection is
  the integral along z of the map sampled at ``A.T @ (x, y, z)``; the projection (view) direction
  in the map frame is the third row ``A[..., 2, :]``. Vectors are (x, y, z) while arrays are
  indexed [z, y, x] (see docs/conventions.md).
* RELION Euler angles ``(rot, tilt, psi)`` in degrees, arrays of shape ``(..., 3)``:
  ``A = R_z(psi) @ R_y(tilt) @ R_z(rot)`` with the passive elementary rotations
  ``R_z(a) = [[c, s, 0], [-s, c, 0], [0, 0, 1]]`` and ``R_y(a) = [[c, 0, -s], [0, 1, 0],
  [s, 0, c]]`` (RELION's ``Euler_angles2matrix``). In scipy terms
  ``A = Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).as_matrix().T``.
* EMAN Euler angles ``(az, alt, phi)`` in degrees: ``A = R_z(phi) @ R_x(alt) @ R_z(az)`` with
  ``R_x(a) = [[1, 0, 0], [0, c, s], [0, -s, c]]`` (EMAN2 ``Transform`` type "eman"). It is the
  same matrix as RELION ``(rot, tilt, psi) = (az - 90, alt, phi + 90)``; the view direction is
  ``(sin alt sin az, -sin alt cos az, cos alt)``.
* Angles returned by the ``matrix_to_*`` functions lie in (-180, 180] except the second angle
  (tilt, alt), which lies in [0, 180]. At tilt 0 or 180 only rot + psi (rot - psi) is defined:
  rot (az) is then set to 0 and the whole in-plane angle goes into psi (phi), as RELION does.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "euler_zyz_to_matrix",
    "matrix_to_euler_zyz",
    "eman_to_matrix",
    "matrix_to_eman",
    "eman_to_euler_zyz",
    "euler_zyz_to_eman",
    "axis_angle_to_matrix",
    "view_direction",
    "rotation_angle_between",
    "random_rotations",
    "quaternion_to_matrix",
]

_GIMBAL_EPS = 1e-6  # |sin(tilt)| below which the gimbal-lock branch is used


def _angles(angles, name: str) -> np.ndarray:
    a = np.asarray(angles, dtype=np.float64)
    if a.ndim == 0 or a.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (..., 3), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def _matrices(m, name: str = "matrices") -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.ndim < 2 or a.shape[-2:] != (3, 3):
        raise ValueError(f"{name}: expected shape (..., 3, 3), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


def _wrap180(a: np.ndarray) -> np.ndarray:
    """Wrap degrees into (-180, 180]."""
    w = np.mod(a + 180.0, 360.0) - 180.0
    return np.where(w <= -180.0, w + 360.0, w)


def euler_zyz_to_matrix(angles) -> np.ndarray:
    """Rotation matrices from RELION Euler angles.

    Parameters
    ----------
    angles : array_like, shape (..., 3)
        ``(rot, tilt, psi)`` in degrees (``rlnAngleRot``, ``rlnAngleTilt``, ``rlnAnglePsi``).

    Returns
    -------
    ndarray, float64, shape (..., 3, 3)
        ``A = R_z(psi) R_y(tilt) R_z(rot)`` (map frame -> particle frame).
    """
    a = np.radians(_angles(angles, "angles"))
    ca, cb, cg = np.cos(a[..., 0]), np.cos(a[..., 1]), np.cos(a[..., 2])
    sa, sb, sg = np.sin(a[..., 0]), np.sin(a[..., 1]), np.sin(a[..., 2])
    m = np.empty(a.shape[:-1] + (3, 3))
    m[..., 0, 0] = cg * cb * ca - sg * sa
    m[..., 0, 1] = cg * cb * sa + sg * ca
    m[..., 0, 2] = -cg * sb
    m[..., 1, 0] = -sg * cb * ca - cg * sa
    m[..., 1, 1] = -sg * cb * sa + cg * ca
    m[..., 1, 2] = sg * sb
    m[..., 2, 0] = sb * ca
    m[..., 2, 1] = sb * sa
    m[..., 2, 2] = cb
    return m


def matrix_to_euler_zyz(matrices) -> np.ndarray:
    """RELION Euler angles of rotation matrices (inverse of :func:`euler_zyz_to_matrix`).

    Parameters
    ----------
    matrices : array_like, shape (..., 3, 3)
        Proper rotation matrices (map frame -> particle frame).

    Returns
    -------
    ndarray, float64, shape (..., 3)
        ``(rot, tilt, psi)`` in degrees; tilt in [0, 180], rot and psi in (-180, 180]. At
        gimbal lock (``|sin tilt| < 1e-6``) rot is 0.
    """
    m = _matrices(matrices)
    sb = np.hypot(m[..., 2, 0], m[..., 2, 1])
    tilt = np.arctan2(sb, np.clip(m[..., 2, 2], -1.0, 1.0))
    regular = sb > _GIMBAL_EPS
    rot = np.where(regular, np.arctan2(m[..., 2, 1], m[..., 2, 0]), 0.0)
    psi_reg = np.arctan2(m[..., 1, 2], -m[..., 0, 2])
    # tilt 0: A = R_z(rot + psi); tilt 180: A = R_z(psi) R_y(180) R_z(rot) -> in-plane via row 1
    # tilt 0: A = R_z(rot + psi); tilt 180: A = R_z(psi) diag(-1, 1, -1) R_z(rot)
    sgn = np.where(m[..., 2, 2] >= 0, 1.0, -1.0)
    psi_lock = np.arctan2(m[..., 0, 1], sgn * m[..., 0, 0])
    psi = np.where(regular, psi_reg, psi_lock)
    out = np.degrees(np.stack([rot, tilt, psi], axis=-1))
    out[..., 0] = _wrap180(out[..., 0])
    out[..., 2] = _wrap180(out[..., 2])
    return out


def eman_to_euler_zyz(angles) -> np.ndarray:
    """RELION ``(rot, tilt, psi)`` of EMAN ``(az, alt, phi)``: ``(az - 90, alt, phi + 90)``.

    Parameters
    ----------
    angles : array_like, shape (..., 3)
        EMAN ``(az, alt, phi)`` in degrees.

    Returns
    -------
    ndarray, float64, shape (..., 3)
        RELION angles in degrees, rot and psi wrapped into (-180, 180]; the same matrix.
    """
    a = _angles(angles, "angles")
    return np.stack([_wrap180(a[..., 0] - 90.0), a[..., 1], _wrap180(a[..., 2] + 90.0)], -1)


def euler_zyz_to_eman(angles) -> np.ndarray:
    """EMAN ``(az, alt, phi)`` of RELION ``(rot, tilt, psi)``: ``(rot + 90, tilt, psi - 90)``.

    Parameters
    ----------
    angles : array_like, shape (..., 3)
        RELION ``(rot, tilt, psi)`` in degrees.

    Returns
    -------
    ndarray, float64, shape (..., 3)
        EMAN angles in degrees, az and phi wrapped into [0, 360); the same matrix.
    """
    a = _angles(angles, "angles")
    return np.stack(
        [np.mod(a[..., 0] + 90.0, 360.0), a[..., 1], np.mod(a[..., 2] - 90.0, 360.0)], -1
    )


def eman_to_matrix(angles) -> np.ndarray:
    """Rotation matrices from EMAN Euler angles.

    Parameters
    ----------
    angles : array_like, shape (..., 3)
        ``(az, alt, phi)`` in degrees (EMAN2 ``Transform`` type "eman").

    Returns
    -------
    ndarray, float64, shape (..., 3, 3)
        ``A = R_z(phi) R_x(alt) R_z(az)`` (map frame -> particle frame, as RELION's matrix).
    """
    return euler_zyz_to_matrix(eman_to_euler_zyz(angles))


def matrix_to_eman(matrices) -> np.ndarray:
    """EMAN ``(az, alt, phi)`` of rotation matrices, az and phi in [0, 360), alt in [0, 180].

    Parameters
    ----------
    matrices : array_like, shape (..., 3, 3)
        Proper rotation matrices.

    Returns
    -------
    ndarray, float64, shape (..., 3)
        EMAN angles in degrees. At alt 0 or 180, az is 90 (RELION's rot = 0).
    """
    return euler_zyz_to_eman(matrix_to_euler_zyz(matrices))


def axis_angle_to_matrix(axis, angle) -> np.ndarray:
    """Matrices that rotate vectors by ``angle`` degrees about ``axis`` (right-hand rule).

    Parameters
    ----------
    axis : array_like, shape (..., 3)
        Rotation axis (x, y, z), any non-zero length.
    angle : array_like, shape (...)
        Angle in degrees, broadcast against ``axis[..., 0]``.

    Returns
    -------
    ndarray, float64, shape (..., 3, 3)
        ``R`` with ``R @ v`` the rotated vector (an active rotation; as a frame change it is
        the RELION matrix of the inverse rotation).
    """
    ax = _angles(axis, "axis")
    norm = np.linalg.norm(ax, axis=-1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError("axis: has zero length")
    u = ax / norm
    t = np.radians(np.asarray(angle, dtype=np.float64))
    u, t = np.broadcast_arrays(u, t[..., None])
    t = t[..., 0]
    c, s = np.cos(t)[..., None, None], np.sin(t)[..., None, None]
    k = np.zeros(u.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -u[..., 2], u[..., 1], -u[..., 0]
    k[..., 1, 0], k[..., 2, 0], k[..., 2, 1] = u[..., 2], -u[..., 1], u[..., 0]
    outer = u[..., :, None] * u[..., None, :]
    return c * np.eye(3) + s * k + (1.0 - c) * outer


def view_direction(matrices) -> np.ndarray:
    """Projection direction in the map frame: the third row of each matrix.

    Parameters
    ----------
    matrices : array_like, shape (..., 3, 3)

    Returns
    -------
    ndarray, float64, shape (..., 3)
        Unit vectors (x, y, z).
    """
    return _matrices(matrices)[..., 2, :].copy()


def rotation_angle_between(a, b) -> np.ndarray:
    """Geodesic distance between rotations: the angle of ``a @ b.T``.

    Parameters
    ----------
    a, b : array_like, shape (..., 3, 3)
        Rotation matrices, broadcast against each other.

    Returns
    -------
    ndarray, float64, shape (...)
        Angle in degrees, in [0, 180].
    """
    ma, mb = _matrices(a, "a"), _matrices(b, "b")
    trace = np.einsum("...ij,...ij->...", ma, mb)  # trace(a @ b.T)
    return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def quaternion_to_matrix(q) -> np.ndarray:
    """Rotation matrices of unit quaternions ``(w, x, y, z)`` (normalised here).

    Parameters
    ----------
    q : array_like, shape (..., 4)
        Quaternions, scalar first; ``q`` and ``-q`` give the same matrix.

    Returns
    -------
    ndarray, float64, shape (..., 3, 3)
        The active rotation matrix of each quaternion.
    """
    qa = np.asarray(q, dtype=np.float64)
    if qa.ndim == 0 or qa.shape[-1] != 4:
        raise ValueError(f"q: expected shape (..., 4), got {qa.shape}")
    norm = np.linalg.norm(qa, axis=-1, keepdims=True)
    if np.any(~(norm > 0)):
        raise ValueError("q: has zero length or NaN")
    w, x, y, z = np.moveaxis(qa / norm, -1, 0)
    m = np.empty(qa.shape[:-1] + (3, 3))
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)
    m[..., 0, 1] = 2 * (x * y - z * w)
    m[..., 0, 2] = 2 * (x * z + y * w)
    m[..., 1, 0] = 2 * (x * y + z * w)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - x * w)
    m[..., 2, 0] = 2 * (x * z - y * w)
    m[..., 2, 1] = 2 * (y * z + x * w)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


def random_rotations(n: int, *, seed=None) -> np.ndarray:
    """Uniformly distributed (Haar) random rotations.

    Parameters
    ----------
    n : int
        Number of rotations (>= 0).
    seed : int, numpy.random.Generator or None
        Seed or generator; the same seed gives the same rotations.

    Returns
    -------
    ndarray, float64, shape (n, 3, 3)
        From normalised 4D Gaussian quaternions, which are uniform on SO(3).
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n: must be an integer >= 0, got {n}")
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((int(n), 4))
    q[np.linalg.norm(q, axis=1) == 0] = (1.0, 0.0, 0.0, 0.0)
    return quaternion_to_matrix(q)
