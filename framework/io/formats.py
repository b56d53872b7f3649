"""Other image formats (TIFF volumes, the EM format) and a reader that dispatches on extension.

Every reader returns float32 arrays in (z, y, x) order and voxel sizes in Å as (z, y, x)
tuples (``None`` where the file does not say).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from ..errors import InputFileError, ParamError
from .mrc import read_volume

__all__ = ["read_tiff_volume", "read_em", "read_image_file", "IMAGE_EXTENSIONS"]

_MRC_EXT = {".mrc", ".map", ".mrcs", ".st", ".rec", ".ali"}
_TIFF_EXT = {".tif", ".tiff"}
_EM_EXT = {".em"}
#: extensions :func:`read_image_file` understands
IMAGE_EXTENSIONS = tuple(sorted(_MRC_EXT | _TIFF_EXT | _EM_EXT))

_UNIT_TO_ANGSTROM = {
    "nm": 10.0,
    "nanometer": 10.0,
    "um": 1e4,
    "µm": 1e4,
    "micron": 1e4,
    "\\u00B5m": 1e4,
    "a": 1.0,
    "å": 1.0,
    "angstrom": 1.0,
}

# EM format: byte 0 machine code (PC = 6 and VAX = 1 little-endian, others big-endian),
# byte 3 data type code, then nx, ny, nz as int32; 512-byte header, data x fastest.
_EM_TYPES = {1: np.uint8, 2: np.int16, 4: np.int32, 5: np.float32, 9: np.float64}
_EM_HEADER = 512


def _need_file(path: Path) -> None:
    if not path.exists():
        raise InputFileError(path, "file not found")
    if not path.is_file():
        raise InputFileError(path, "is not a file")


def _tiff_voxel_size(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    """(z, y, x) voxel size in Å from ImageJ metadata (unit, spacing) and X/YResolution."""
    meta = tif.imagej_metadata or {}
    scale = _UNIT_TO_ANGSTROM.get(str(meta.get("unit", "")).strip().lower())
    tags = tif.pages[0].tags
    if scale is None or "XResolution" not in tags or "YResolution" not in tags:
        return None
    sizes = []
    for name in ("YResolution", "XResolution"):
        num, den = tags[name].value
        if num <= 0:
            return None
        sizes.append(scale * den / num)  # resolution is pixels per unit
    z = scale * float(meta["spacing"]) if "spacing" in meta else sizes[1]
    return (_tidy(z), _tidy(sizes[0]), _tidy(sizes[1]))


def _tidy(value: float) -> float:
    """Round to float32 precision, shortest decimal (10.52, not 10.520000457763672)."""
    return float(np.format_float_positional(np.float32(value)))


def read_tiff_volume(
    path: str | os.PathLike,
) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Read a TIFF image or multi-page volume as float32 (z, y, x).

    Parameters
    ----------
    path : str or path-like
        ``.tif``/``.tiff`` file: pages are z sections (a single page gives (1, y, x)).

    Returns
    -------
    data : numpy.ndarray
        float32 (z, y, x), values unchanged (uint8 0..255 stay 0..255).
    voxel_size : tuple of float or None
        (z, y, x) in Å from ImageJ metadata (unit, spacing, X/YResolution) when present.
    """
    path = Path(path)
    _need_file(path)
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            voxel = _tiff_voxel_size(tif)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError) as exc:
        # tifffile raises IndexError/KeyError on some corrupt files: still the file's fault
        raise InputFileError(
            path, f"not a readable TIFF file: {type(exc).__name__}: {exc}"
        ) from None
    data = np.squeeze(data)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3 or np.iscomplexobj(data):
        raise InputFileError(path, f"TIFF holds {data.shape} {data.dtype}, not a grey volume")
    return np.ascontiguousarray(data, dtype=np.float32), voxel


def read_em(path: str | os.PathLike) -> tuple[np.ndarray, None]:
    """Read a file in the EM format (TOM toolbox / EM-package) as float32 (z, y, x).

    Parameters
    ----------
    path : str or path-like
        ``.em`` file: 512-byte header (machine code, data type code, nx, ny, nz) then the data
        with x fastest.

    Returns
    -------
    data : numpy.ndarray
        float32 (z, y, x).
    voxel_size : None
        The EM header has no reliable voxel size; give it yourself.
    """
    path = Path(path)
    _need_file(path)
    size = path.stat().st_size
    if size < _EM_HEADER:
        raise InputFileError(
            path, f"not an EM file: {size} bytes, shorter than the 512-byte header"
        )
    with open(path, "rb") as fh:
        header = fh.read(_EM_HEADER)
    order = "<" if header[0] in (1, 6) else ">"
    code = header[3]
    nx, ny, nz = (int(v) for v in np.frombuffer(header[4:16], dtype=order + "i4"))
    if header[0] > 6 or code not in _EM_TYPES or min(nx, ny, nz) < 1:
        raise InputFileError(
            path, f"not an EM file (machine {header[0]}, type {code}, size {nx}x{ny}x{nz})"
        )
    dtype = np.dtype(_EM_TYPES[code]).newbyteorder(order)
    need = nx * ny * nz * dtype.itemsize
    if size - _EM_HEADER < need:
        raise InputFileError(
            path, f"truncated: header says {need} bytes of data, file has {size - _EM_HEADER}"
        )
    raw = np.fromfile(path, dtype=dtype, count=nx * ny * nz, offset=_EM_HEADER)
    return raw.reshape(nz, ny, nx).astype(np.float32), None


def read_image_file(
    path: str | os.PathLike, *, pixel_size: float | None = None
) -> tuple[np.ndarray, tuple[float, float, float] | None, tuple[float, float, float]]:
    """Read any supported image file, choosing the reader by extension.

    Parameters
    ----------
    path : str or path-like
        ``.mrc .map .mrcs .st .rec .ali`` (MRC), ``.tif .tiff`` (TIFF), ``.em`` (EM).
    pixel_size : float, optional
        Voxel size in Å that replaces the file's.

    Returns
    -------
    data : numpy.ndarray
        float32 (z, y, x) (a single image is (1, y, x); a stack (n, y, x)).
    voxel_size : tuple of float or None
        (z, y, x) in Å: the override, else the file's, else None (unknown or 0 in the header).
    origin : tuple of float
        (z, y, x) in Å: the MRC map's frame (``MrcInfo.origin``: ORIGIN, else NSTART × voxel
        size); (0, 0, 0) for other formats.
    """
    path = Path(path)
    ext = path.suffix.lower()
    override = None
    if pixel_size is not None:
        value = float(pixel_size)
        if not np.isfinite(value) or value <= 0:
            raise ParamError("pixel_size", f"must be a positive number of Å, got {pixel_size!r}")
        override = (value, value, value)
    if ext in _MRC_EXT:
        data, info = read_volume(path)
        voxel = info.voxel_size if min(info.voxel_size[1:]) > 0 else None
        return data, override or voxel, info.origin
    if ext in _TIFF_EXT:
        data, voxel = read_tiff_volume(path)
    elif ext in _EM_EXT:
        data, voxel = read_em(path)
    else:
        known = " ".join(IMAGE_EXTENSIONS)
        raise InputFileError(path, f"unknown image file extension {ext!r}; known: {known}")
    return data, override or voxel, (0.0, 0.0, 0.0)
