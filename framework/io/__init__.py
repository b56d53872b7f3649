"""Image and metadata I/O: MRC (via mrcfile), STAR (via starfile), TIFF and EM.

Arrays are float32 in (z, y, x) order, sizes in Å; see ``docs/conventions.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names and the submodule defining them. Loaded on first access (PEP 562), so that
# `import emforge.io.mrc` does not pay for pandas/starfile.
_WHERE = {
    "IMAGE_EXTENSIONS": "formats",
    "read_em": "formats",
    "read_image_file": "formats",
    "read_tiff_volume": "formats",
    "MrcInfo": "mrc",
    "StackReader": "mrc",
    "StackWriter": "mrc",
    "atomic_target": "mrc",
    "open_stack": "mrc",
    "read_info": "mrc",
    "read_volume": "mrc",
    "write_stack": "mrc",
    "write_volume": "mrc",
    "StarInfo": "star",
    "read_coordinates3d_star": "star",
    "read_particles_star": "star",
    "read_star_blocks": "star",
    "write_coordinates3d_star": "star",
    "write_particles_star": "star",
    "write_fsc": "fsc",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "write_fsc",
    "write_particles_star",
    "write_stack",
    "write_volume",
]
