"""Image and metadata I/O: MRC (via mrcfile), STAR (via starfile), TIFF and EM.

Arrays are float32 in (z, y, x) order, sizes in Å; see ``docs/conventions.md``.
"""

from __future__ import annotations

from .formats import IMAGE_EXTENSIONS, read_em, read_image_file, read_tiff_volume
from .mrc import (
    MrcInfo,
    StackReader,
    StackWriter,
    atomic_target,
    open_stack,
    read_info,
    read_volume,
    write_stack,
    write_volume,
)
from .star import (
    StarInfo,
    read_coordinates3d_star,
    read_particles_star,
    read_star_blocks,
    write_coordinates3d_star,
    write_particles_star,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MrcInfo",
    "StackReader",
    "StackWriter",
    "StarInfo",
    "atomic_target",
    "open_stack",
    "read_coordinates3d_star",
    "read_em",
    "read_image_file",
    "read_info",
    "read_particles_star",
    "read_star_blocks",
    "read_tiff_volume",
    "read_volume",
    "write_coordinates3d_star",
    "write_particles_star",
    "write_stack",
    "write_volume",
]
