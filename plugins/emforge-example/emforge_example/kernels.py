"""Pure kernels of the example plugin: arrays in, arrays out; no files, no database.

Arrays are (z, y, x); the box centre is voxel N // 2 on each axis (even and odd N), as
everywhere in emforge. Outputs are float32.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sphere_mask", "normalize_volume", "sigma_cutoff", "threshold_volume"]


def _check_volume(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(f"volume must be a non-empty 3D (z, y, x) array, got shape {volume.shape}")
    if not np.issubdtype(volume.dtype, np.number) or np.iscomplexobj(volume):
        raise ValueError(f"volume must hold real numbers, got dtype {volume.dtype}")
    return volume


def sphere_mask(shape: tuple[int, int, int], radius: float) -> np.ndarray:
    """Boolean sphere centred on the box centre.

    Parameters
    ----------
    shape : (z, y, x) tuple of int
        Box shape in voxels.
    radius : float
        Radius in voxels (px); voxels whose centre is at distance <= ``radius`` from voxel
        (N_z // 2, N_y // 2, N_x // 2) are inside.

    Returns
    -------
    numpy.ndarray
        bool, shape ``shape``.
    """
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes (z, y, x), got {shape}")
    if not radius > 0:
        raise ValueError(f"radius must be > 0 px, got {radius}")
    axes = [(np.arange(n) - n // 2).astype(np.float32) ** 2 for n in shape]
    r2 = axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]
    return r2 <= np.float32(radius) ** 2


def normalize_volume(
    volume: np.ndarray, mean: float = 0.0, std: float = 1.0, *, mask_radius: float | None = None
) -> np.ndarray:
    """Shift and scale a map so that its voxels have a target mean and standard deviation.

    Parameters
    ----------
    volume : numpy.ndarray
        (z, y, x) map, any real dtype.
    mean, std : float
        Target mean and (population) standard deviation, in map units; ``std > 0``.
    mask_radius : float, optional
        When given, the statistics are measured inside a centred sphere of this radius (px)
        and the same affine change is applied to the whole box; otherwise over the whole box.

    Returns
    -------
    numpy.ndarray
        float32 (z, y, x): ``(volume - m) / s * std + mean`` with ``m, s`` the measured mean
        and standard deviation (computed in float64).

    Raises
    ------
    ValueError
        Bad arguments, or a region that is constant (its standard deviation is 0).
    """
    volume = _check_volume(volume)
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    region = volume if mask_radius is None else volume[sphere_mask(volume.shape, mask_radius)]
    if region.size == 0:
        raise ValueError(f"mask_radius {mask_radius} px selects no voxel")
    m = float(np.mean(region, dtype=np.float64))
    s = float(np.std(region, dtype=np.float64))
    if not s > 0:
        raise ValueError("the map is constant in the measured region; it cannot be scaled")
    scale = std / s
    out = volume.astype(np.float32, copy=True)
    out -= np.float32(m)
    out *= np.float32(scale)
    out += np.float32(mean)
    return out


def sigma_cutoff(volume: np.ndarray, sigma: float) -> float:
    """The value ``mean + sigma * std`` of a map (population std, float64 statistics)."""
    volume = _check_volume(volume)
    mean = float(np.mean(volume, dtype=np.float64))
    return mean + float(sigma) * float(np.std(volume, dtype=np.float64))


def threshold_volume(volume: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    """Binary mask of the voxels strictly above ``threshold``.

    Parameters
    ----------
    volume : numpy.ndarray
        (z, y, x) map.
    threshold : float
        Cut-off in map units.

    Returns
    -------
    mask : numpy.ndarray
        float32 (z, y, x), 1 where ``volume > threshold`` and 0 elsewhere.
    fraction : float
        Fraction of the box's voxels inside the mask, in [0, 1].
    """
    volume = _check_volume(volume)
    inside = volume > threshold
    return inside.astype(np.float32), float(np.count_nonzero(inside)) / inside.size
