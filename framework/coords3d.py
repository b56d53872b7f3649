"""Coordinate frames of 3D points in tomograms (``SetOfCoordinates3D``).

Stored frame: ``x, y, z`` are float voxel positions in the tomogram named by the ``tomogram``
column, measured from the centre of voxel (0, 0, 0) (so voxel ``(k, j, i)`` is at
``x = i, y = j, z = k``), with ``pixel_size`` the voxel size of that tomogram in Å. Values are
never rounded, so a point keeps its position when it is re-expressed at another binning.

The other frames are derived:

* centred Å: ``(x - centre) × pixel_size`` with ``centre = n // 2`` along that axis (EMAN2's
  and RELION 5's centre for even sizes);
* EMAN2 ``apix_unbin`` boxes: centred Å / ``apix_unbin`` (unbinned tilt-series pixels from the
  tomogram centre);
* another binning of the same tomogram: centred Å / new voxel size + new ``n // 2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["centres", "to_centred_angstrom", "from_centred_angstrom", "rebin"]


def centres(shape_zyx: Sequence[int]) -> np.ndarray:
    """The centre voxel ``(x, y, z) = (nx // 2, ny // 2, nz // 2)`` of a (z, y, x) shape."""
    nz, ny, nx = (int(v) for v in shape_zyx)
    return np.array([nx // 2, ny // 2, nz // 2], dtype=np.float64)


def to_centred_angstrom(xyz: np.ndarray, shape_zyx: Sequence[int], pixel_size: float) -> np.ndarray:
    """(n, 3) voxel positions (x, y, z) → Å from the tomogram centre."""
    return (np.asarray(xyz, dtype=np.float64) - centres(shape_zyx)) * float(pixel_size)


def from_centred_angstrom(
    xyz_a: np.ndarray, shape_zyx: Sequence[int], pixel_size: float
) -> np.ndarray:
    """(n, 3) positions in Å from the tomogram centre → voxel positions (x, y, z)."""
    return np.asarray(xyz_a, dtype=np.float64) / float(pixel_size) + centres(shape_zyx)


def rebin(
    xyz: np.ndarray,
    shape_from: Sequence[int],
    pixel_from: float,
    shape_to: Sequence[int],
    pixel_to: float,
) -> np.ndarray:
    """Voxel positions in one binning of a tomogram → the same points in another binning."""
    return from_centred_angstrom(
        to_centred_angstrom(xyz, shape_from, pixel_from), shape_to, pixel_to
    )
