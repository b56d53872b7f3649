"""Ground truth shared by the projection and reconstruction tests.

Rotation matrices are built with the formula of docs/conventions.md (RELION's
``Euler_angles2matrix``); ``test_projection.py`` checks that it equals
``scipy.spatial.transform.Rotation.from_euler("ZYZ", (rot, tilt, psi)).as_matrix().T``, which
then gives uniformly random poses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from emforge.io import read_volume


def euler_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """A = R_z(psi) R_y(tilt) R_z(rot) written out as in docs/conventions.md (degrees)."""
    a, b, g = np.radians([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    return np.array(
        [
            [cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
            [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
            [sb * ca, sb * sa, cb],
        ]
    )


def random_rotations(count: int, seed: int) -> np.ndarray:
    """Uniformly random rotation matrices (N, 3, 3), our convention."""
    return Rotation.random(count, random_state=seed).as_matrix()


def fourier_crop(volume: np.ndarray, n: int) -> np.ndarray:
    """Fourier-crop a cubic map to n^3, keeping frequencies inside the Nyquist sphere of the
    new box (what binning a map should give); the density scale is kept."""
    big = volume.shape[0]
    f = np.fft.fftshift(np.fft.fftn(volume.astype(np.float64)))
    c, h = big // 2, n // 2
    f = f[c - h : c - h + n, c - h : c - h + n, c - h : c - h + n]
    g = np.arange(n) - h
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    f = f * (r <= n / 2)
    out = np.real(np.fft.ifftn(np.fft.ifftshift(f))) * (n / big) ** 3
    return out.astype(np.float32)


def emd3488_64(data_dir: Path) -> tuple[np.ndarray, float]:
    """EMD-3488 (100^3, 1.05 A) Fourier-cropped to 64^3: (map, pixel size 1.640625 A)."""
    vol, info = read_volume(data_dir / "maps" / "emd_3488.mrc")
    return fourier_crop(vol, 64), float(info.voxel_size[0]) * vol.shape[0] / 64


def gaussian_blobs(n: int, centres, sigma: float) -> np.ndarray:
    """Sum of unit-height 3D Gaussians at ``centres`` ((x, y, z) pixels from the box centre)."""
    g = np.arange(n, dtype=np.float64) - n // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    out = np.zeros((n, n, n))
    for cx, cy, cz in centres:
        out += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma**2))
    return out.astype(np.float32)


def gaussian_projection(n: int, centres, sigma: float, rot: np.ndarray, shift_px=(0.0, 0.0)):
    """Analytic projection of :func:`gaussian_blobs` with pose ``rot`` (A) and image shift
    (shift_x, shift_y) in pixels: each blob becomes sqrt(2 pi) sigma exp(-r^2 / 2 sigma^2)
    centred at (A c)_xy - shift."""
    g = np.arange(n, dtype=np.float64) - n // 2
    y, x = np.meshgrid(g, g, indexing="ij")
    out = np.zeros((n, n))
    for c in centres:
        px, py, _ = rot @ np.asarray(c, dtype=np.float64)
        px, py = px - shift_px[0], py - shift_px[1]
        out += np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma**2))
    return out * np.sqrt(2 * np.pi) * sigma


def corr(a, b) -> float:
    """Pearson correlation of two arrays."""
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])
