"""Column schemas of the typed sets.

Every set kind has a fixed list of *standard* columns with a dtype, a unit and a default
(used where a column was not given). Anything else a user or a STAR file brings is an
*extra* column (int64, float64 or str) that is carried through every copy untouched.

String columns are stored dictionary-encoded; they are given and returned as numpy arrays of
``dtype=object`` holding ``str``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Column",
    "PARTICLE_COLUMNS",
    "COORDINATE3D_COLUMNS",
    "SUBTOMOGRAM_COLUMNS",
    "VOLUME_COLUMNS",
    "TOMOGRAM_COLUMNS",
    "TILT_COLUMNS",
    "SCHEMAS",
    "STR",
]

STR = np.dtype(object)


@dataclass(frozen=True)
class Column:
    """One standard column: name, numpy dtype, default fill value, unit and meaning."""

    name: str
    dtype: np.dtype
    default: object
    unit: str
    help: str


def _f(name: str, unit: str, help: str, default: float = float("nan")) -> Column:
    return Column(name, np.dtype(np.float64), default, unit, help)


def _i(name: str, unit: str, help: str, default: int = 0) -> Column:
    return Column(name, np.dtype(np.int64), default, unit, help)


def _s(name: str, help: str) -> Column:
    return Column(name, STR, "", "", help)


_IMAGE = (
    _s("image_path", "MRC stack (or single image) holding the item's pixels"),
    _i("image_index", "", "0-based index of the image in its stack (RELION's N@ is 1-based)"),
    _f("pixel_size", "Å", "pixel size of the image"),
)
_POSE = (
    _f("rot", "deg", "first Euler angle, RELION ZYZ convention", 0.0),
    _f("tilt", "deg", "second Euler angle, RELION ZYZ convention", 0.0),
    _f("psi", "deg", "third Euler angle, RELION ZYZ convention", 0.0),
    _f("shift_x", "Å", "origin shift along x, as RELION 3.1 rlnOriginXAngst", 0.0),
    _f("shift_y", "Å", "origin shift along y, as RELION 3.1 rlnOriginYAngst", 0.0),
)
_CTF = (
    _f("defocus_u", "Å", "defocus along the major axis (underfocus positive)"),
    _f("defocus_v", "Å", "defocus along the minor axis (underfocus positive)"),
    _f("defocus_angle", "deg", "astigmatism angle"),
    _f("voltage", "kV", "acceleration voltage"),
    _f("cs", "mm", "spherical aberration"),
    _f("amplitude_contrast", "", "amplitude contrast fraction"),
    _f("phase_shift", "deg", "phase shift (phase plate)", 0.0),
)
_BOOK = (
    _i("subset", "", "half-set for gold-standard refinement: 0 none, 1 or 2"),
    _i("class_id", "", "class number, 0 when unclassified"),
    _f("score", "", "a quality score (meaning set by the producing protocol)"),
)

PARTICLE_COLUMNS: tuple[Column, ...] = (
    *_IMAGE,
    *_POSE,
    *_CTF,
    _s("micrograph", "micrograph the particle was picked from"),
    _f("coord_x", "px", "x coordinate of the particle centre in its micrograph"),
    _f("coord_y", "px", "y coordinate of the particle centre in its micrograph"),
    *_BOOK,
)

COORDINATE3D_COLUMNS: tuple[Column, ...] = (
    _s("tomogram", "tomogram the coordinate belongs to"),
    _f("x", "px", "x in voxels of the named tomogram, voxel (0, 0, 0) = 0, float, never rounded"),
    _f("y", "px", "y in voxels of the named tomogram, voxel (0, 0, 0) = 0, float, never rounded"),
    _f("z", "px", "z in voxels of the named tomogram, voxel (0, 0, 0) = 0, float, never rounded"),
    _f("pixel_size", "Å", "voxel size of the tomogram the coordinates are measured in"),
    _f("rot", "deg", "first Euler angle, RELION ZYZ convention", 0.0),
    _f("tilt", "deg", "second Euler angle, RELION ZYZ convention", 0.0),
    _f("psi", "deg", "third Euler angle, RELION ZYZ convention", 0.0),
    _s("tag", "class name, e.g. the EMAN2 class_list name of the box"),
    _f("score", "", "picking score (EMAN2 tm: label sum / best; manual: 0)"),
    _s("method", "how the point was picked: manual, tm, or the source format"),
    _i("has_orientation", "", "1 when rot/tilt/psi are a known orientation, 0 when unknown"),
    _i("boxsize", "px", "box size of the tag in unbinned tilt-series pixels, 0 if unknown"),
)

SUBTOMOGRAM_COLUMNS: tuple[Column, ...] = (
    *_IMAGE,
    *_POSE,
    _f("shift_z", "Å", "origin shift along z", 0.0),
    _s("tomogram", "tomogram the subtomogram was extracted from"),
    _f("coord_x", "px", "x coordinate in the tomogram"),
    _f("coord_y", "px", "y coordinate in the tomogram"),
    _f("coord_z", "px", "z coordinate in the tomogram"),
    _i("coord_id", "", "id of the SetOfCoordinates3D row it was cut at, -1 if none", -1),
    _s("tag", "class name carried from the coordinate"),
    *_BOOK,
)

VOLUME_COLUMNS: tuple[Column, ...] = (
    *_IMAGE,
    _s("half1_path", "first half map, if any"),
    _s("half2_path", "second half map, if any"),
    *_BOOK,
)

TOMOGRAM_COLUMNS: tuple[Column, ...] = (
    *_IMAGE,
    _s("tilt_series", "tilt series the tomogram was reconstructed from, if known"),
    _f("binning", "", "tomogram voxel size / tilt-series pixel size (1 when unknown)", 1.0),
)

TILT_COLUMNS: tuple[Column, ...] = (
    *_IMAGE,
    _s("tilt_series", "name of the tilt series this tilt image belongs to"),
    _i("tilt_index", "", "0-based position of the tilt in its series, in acquisition-file order"),
    _f("tilt_angle", "deg", "tilt angle (EMAN2 tlt_params[3], ytilt)", 0.0),
    _f("tilt_axis", "deg", "in-plane tilt-axis angle from y, ccw (EMAN2 tlt_params[2])", 0.0),
    _f("off_axis", "deg", "off-axis tilt about x (EMAN2 tlt_params[4], xtilt)", 0.0),
    _f("shift_x", "Å", "alignment shift along x (EMAN2 tlt_params[0] × pixel size)", 0.0),
    _f("shift_y", "Å", "alignment shift along y (EMAN2 tlt_params[1] × pixel size)", 0.0),
    _f("dose", "e/Å²", "accumulated dose before this tilt", 0.0),
    *_CTF,
    _i("excluded", "", "1 when the tilt is excluded from processing"),
)

SCHEMAS: dict[str, tuple[Column, ...]] = {
    "SetOfParticles": PARTICLE_COLUMNS,
    "SetOfCoordinates3D": COORDINATE3D_COLUMNS,
    "SetOfSubTomograms": SUBTOMOGRAM_COLUMNS,
    "SetOfVolumes": VOLUME_COLUMNS,
    "SetOfTomograms": TOMOGRAM_COLUMNS,
    "SetOfTiltSeries": TILT_COLUMNS,
}
