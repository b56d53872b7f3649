"""Shared synthetic data of the refine kernel tests: an asymmetric phantom and its views."""

from __future__ import annotations

import numpy as np

from emforge.numerics import eman_orientations, eman_to_euler_zyz, euler_zyz_to_matrix
from emforge.numerics.projection import project_fourier


def phantom(n: int = 32, seed: int = 0, blobs: int = 6) -> np.ndarray:
    """A sum of Gaussian blobs of different widths and weights within n/4 of the centre."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[0:n, 0:n, 0:n].astype(np.float64) - n // 2
    vol = np.zeros((n, n, n))
    for _ in range(blobs):
        cx, cy, cz = rng.uniform(-n / 4, n / 4, 3)
        s, w = rng.uniform(1.5, 3.0), rng.uniform(0.5, 1.5)
        vol += w * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2 + (zz - cz) ** 2) / (2 * s * s))
    return vol.astype(np.float32)


def project(vol, eulers, shifts_px=None) -> np.ndarray:
    """Projections at RELION eulers (K, 3) with origin shifts in pixels (K, 2)."""
    sh = None if shifts_px is None else np.asarray(shifts_px, np.float64)
    return project_fourier(vol, euler_zyz_to_matrix(np.asarray(eulers, np.float64)), shifts=sh,
                           pixel_size=None if sh is None else 1.0)  # fmt: skip


def references(vol, delta: float):
    """EMAN c1 orientations at ``delta`` (RELION eulers (M, 3)) and their projections."""
    eul = eman_to_euler_zyz(eman_orientations("c1", delta)).astype(np.float64)
    return eul, project(vol, eul)


def random_eulers(rng, k: int) -> np.ndarray:
    """Uniform random views: rot, psi uniform, cos(tilt) uniform in [-1, 1]."""
    return np.stack([rng.uniform(-180, 180, k), np.degrees(np.arccos(rng.uniform(-1, 1, k))),
                     rng.uniform(-180, 180, k)], -1)  # fmt: skip


def blob_images(blobs, angle, dx, dy, mirror, n: int = 64) -> np.ndarray:
    """Exact images p with aligned(R(a) M r + d) = p(r) for the reference sum of Gaussian
    ``blobs`` [(x, y, sigma, weight)] (the convention of emforge.numerics.align2d)."""
    c = n // 2
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) - c
    out = np.zeros((len(angle), n, n))
    for i, (a, tx, ty, m) in enumerate(zip(angle, dx, dy, mirror, strict=True)):
        t = np.radians(a)
        x = -xx if m else xx
        px, py = np.cos(t) * x - np.sin(t) * yy + tx, np.sin(t) * x + np.cos(t) * yy + ty
        for qx, qy, s, w in blobs:
            out[i] += w * np.exp(-((px - qx) ** 2 + (py - qy) ** 2) / (2 * s * s))
    return out.astype(np.float32)


def random_blobs(rng, k: int = 8):
    return [(*rng.uniform(-12, 12, 2), rng.uniform(1.5, 3.5), rng.uniform(0.5, 1.5))
            for _ in range(k)]  # fmt: skip
