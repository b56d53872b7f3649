"""MRC/CCP4 maps, images and stacks, read and written through :mod:`mrcfile`.

Arrays come back as float32 in (z, y, x) order (stacks as (n, y, x)); voxel sizes and
origins are given in Å in (z, y, x) order. Files whose MAPC/MAPR/MAPS are not 1 2 3 are
reordered to (z, y, x). All writes are atomic: a hidden temporary file in the target folder
is written, fsynced and renamed over the target, so a crash never leaves a half-written file
under the final name. See ``docs/conventions.md``.
"""

from __future__ import annotations

import errno
import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import mrcfile
import numpy as np

from ..errors import InputFileError, OutputFileError, ParamError

__all__ = [
    "MrcInfo",
    "atomic_target",
    "StackReader",
    "StackWriter",
    "open_stack",
    "read_info",
    "read_volume",
    "write_stack",
    "write_volume",
]

_HEADER_BYTES = 1024
_SUPPORTED = {
    0: np.dtype(np.int8),
    1: np.dtype(np.int16),
    2: np.dtype(np.float32),
    6: np.dtype(np.uint16),
    12: np.dtype(np.float16),
}
_UNSUPPORTED = {3: "complex int16", 4: "complex float32", 101: "packed 4-bit"}
_SUPPORTED_TEXT = "0 (int8), 1 (int16), 2 (float32), 6 (uint16), 12 (float16)"
_KEPT_DTYPES = {np.dtype(t) for t in (np.float16, np.int8, np.int16, np.uint16)}


@dataclass(frozen=True)
class MrcInfo:
    """What an MRC header says, in emforge's (z, y, x) convention.

    Attributes
    ----------
    shape : tuple of int
        Shape of the array as returned: (z, y, x) after MAPC/MAPR/MAPS reordering; for a
        stack (n, y, x); a single 2D image is (1, y, x).
    voxel_size : tuple of float
        (z, y, x) voxel size in Å (CELLA / MXYZ; 0 where the header says 0).
    origin : tuple of float
        The map's frame: (z, y, x) position in Å of voxel (0, 0, 0). From the ORIGIN field when
        any of its values is non-zero, else NSTART × voxel size, else (0, 0, 0); see
        ``origin_field`` and ``docs/conventions.md``.
    nstart : tuple of int
        (z, y, x) NXSTART/NYSTART/NZSTART in voxels (they count columns/rows/sections and are
        reordered with the axes).
    mode : int
        MRC mode of the stored data.
    is_stack : bool
        True for a ``.mrcs`` file or a file with ISPG 0 and NZ > 1 (mrcfile's rule).
    axis_order : tuple of int
        (MAPC, MAPR, MAPS) as stored (1 = x, 2 = y, 3 = z).
    dtype : numpy.dtype
        dtype of the stored data (arrays are returned as float32).
    header_origin : tuple of float
        (z, y, x) ORIGIN field in Å, as stored.
    origin_field : str
        Where the frame came from: ``"origin"``, ``"nstart"``, ``"both"`` (the two agree) or
        ``"none"``; :func:`write_volume` writes a frame back into the same field(s).
    cell_angles : tuple of float
        CELLB (alpha, beta, gamma) in degrees; (90, 90, 90) for an orthogonal cell.
    """

    shape: tuple[int, ...]
    voxel_size: tuple[float, float, float]
    origin: tuple[float, float, float]
    nstart: tuple[int, int, int]
    mode: int
    is_stack: bool
    axis_order: tuple[int, int, int]
    dtype: np.dtype
    header_origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    origin_field: str = "none"
    cell_angles: tuple[float, float, float] = (90.0, 90.0, 90.0)

    @property
    def pixel_size(self) -> float:
        """Pixel size along x in Å."""
        return self.voxel_size[2]

    @property
    def placement(self) -> dict:
        """Voxel size, frame and frame field as :func:`write_volume` keywords: a map written
        with ``**info.placement`` sits where this one does, in the same header fields."""
        return {
            "voxel_size": self.voxel_size,
            "origin": self.origin,
            "origin_field": self.origin_field,
        }

    @property
    def orthogonal(self) -> bool:
        """True when the cell angles are 90° (within 0.01°) or unset (0)."""
        return all(a == 0.0 or abs(a - 90.0) <= 0.01 for a in self.cell_angles)


#: agreement (Å) needed between ORIGIN and NSTART × voxel size to call them one frame
_FRAME_TOL = 0.01
ORIGIN_FIELDS = ("origin", "nstart", "both", "none")


def _frame(header_origin, nstart, voxel, limit: int = 0) -> tuple[tuple[float, float, float], str]:
    """The frame (z, y, x) in Å and the field it came from (see :class:`MrcInfo`).

    ORIGIN wins when any of its values is non-zero (the rule of the UCSF Chimera/ChimeraX and
    IMP readers); NSTART (voxels) × voxel size is used when ORIGIN is all zero or not finite.
    An NSTART beyond ``limit`` voxels (10 × the grid: an uninitialised header) is ignored.
    """
    if limit and any(abs(n) > limit for n in nstart):
        nstart = (0, 0, 0)
    from_nstart = tuple(_f32(n * v) for n, v in zip(nstart, voxel, strict=True))
    if any(header_origin) and all(np.isfinite(header_origin)):
        agree = any(nstart) and all(
            abs(a - b) <= _FRAME_TOL for a, b in zip(header_origin, from_nstart, strict=True)
        )
        return tuple(header_origin), "both" if agree else "origin"  # type: ignore[return-value]
    if any(nstart):
        return from_nstart, "nstart"  # type: ignore[return-value]
    return (0.0, 0.0, 0.0), "none"


# --------------------------------------------------------------------------- checks


def _header_fields(raw: bytes, order: str) -> dict[str, int]:
    ints = np.frombuffer(raw[:16], dtype=order + "i4")
    mapcrs = np.frombuffer(raw[64:76], dtype=order + "i4")
    nsymbt = int(np.frombuffer(raw[92:96], dtype=order + "i4")[0])
    return {
        "nx": int(ints[0]),
        "ny": int(ints[1]),
        "nz": int(ints[2]),
        "mode": int(ints[3]),
        "mapcrs": tuple(int(v) for v in mapcrs),
        "nsymbt": nsymbt,
    }


def _plausible(h: dict[str, int]) -> bool:
    dims_ok = min(h["nx"], h["ny"], h["nz"]) >= 1 and h["nsymbt"] >= 0
    known = h["mode"] in _SUPPORTED or h["mode"] in _UNSUPPORTED
    axes_ok = sorted(h["mapcrs"]) == [1, 2, 3] or h["mapcrs"] == (0, 0, 0)
    return dims_ok and known and axes_ok


def _check_file(path: Path) -> bool:
    """Check an MRC file before mrcfile opens it; return True for a legacy header.

    A legacy header lacks the 'MAP ' id or a recognised machine stamp (old RELION/EMAN stacks)
    but is otherwise consistent; mrcfile only reads those in permissive mode.
    """
    if not path.exists():
        raise InputFileError(path, "file not found")
    if path.is_dir():
        raise InputFileError(path, "is a folder, not an MRC file")
    size = path.stat().st_size
    if size < _HEADER_BYTES:
        raise InputFileError(
            path, f"not an MRC file: {size} bytes, shorter than the 1024-byte MRC header"
        )
    with open(path, "rb") as fh:
        raw = fh.read(_HEADER_BYTES)
    has_id = raw[208:211] == b"MAP"
    stamp = {0x44: "<", 0x11: ">"}.get(raw[212])
    if has_id:
        h = _header_fields(raw, stamp or "<")
        if stamp is None and not _plausible(h):
            h = _header_fields(raw, ">")
    else:
        candidates = [_header_fields(raw, o) for o in ((stamp,) if stamp else ("<", ">"))]
        good = [c for c in candidates if _plausible(c)]
        if not good:
            raise InputFileError(path, "not an MRC file: no 'MAP ' id and no valid header")
        h = good[0]
    mode = h["mode"]
    if mode not in _SUPPORTED:
        kind = f" ({_UNSUPPORTED[mode]})" if mode in _UNSUPPORTED else ""
        raise InputFileError(
            path, f"unsupported MRC mode {mode}{kind}; supported: {_SUPPORTED_TEXT}"
        )
    if min(h["nx"], h["ny"], h["nz"]) < 1 or h["nsymbt"] < 0:
        raise InputFileError(
            path, f"corrupt MRC header: nx, ny, nz = {h['nx']}, {h['ny']}, {h['nz']}"
        )
    need = h["nx"] * h["ny"] * h["nz"] * _SUPPORTED[mode].itemsize
    have = size - _HEADER_BYTES - h["nsymbt"]
    if have < need:
        raise InputFileError(
            path, f"truncated: header says {need} bytes of data, file has {max(have, 0)}"
        )
    return not has_id or stamp is None


@contextmanager
def _quiet(legacy: bool) -> Iterator[None]:
    """Silence mrcfile's harmless warnings (padding after the data; legacy headers)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="MRC file is .* larger than expected")
        if legacy:
            warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _open(path: Path, *, header_only: bool = False):
    """Open with mrcfile (mmap unless header_only) after :func:`_check_file`."""
    legacy = _check_file(path)
    try:
        with _quiet(legacy):
            if header_only:
                return mrcfile.open(path, mode="r", header_only=True, permissive=legacy)
            return mrcfile.mmap(path, mode="r", permissive=legacy)
    except (ValueError, OSError) as exc:
        raise InputFileError(path, f"cannot read MRC file: {exc}") from None


def _f32(value: float) -> float:
    """A float32 header value as the shortest decimal that round-trips (1.05, not 1.0499...)."""
    return float(np.format_float_positional(np.float32(value)))


def _perm(mapcrs: tuple[int, int, int]) -> tuple[int, ...]:
    """Transpose taking raw (section, row, column) data to (z, y, x), given (MAPC, MAPR, MAPS)."""
    raw_axes = (mapcrs[2], mapcrs[1], mapcrs[0])  # crystal axis (1=x, 2=y, 3=z) of s, r, c
    return tuple(raw_axes.index(a) for a in (3, 2, 1))


def _axes(header, path: Path) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    """Return (MAPC, MAPR, MAPS) and the transpose to (z, y, x)."""
    mapcrs = (int(header.mapc), int(header.mapr), int(header.maps))
    if mapcrs == (0, 0, 0):
        mapcrs = (1, 2, 3)
    if sorted(mapcrs) != [1, 2, 3]:
        raise InputFileError(path, f"invalid MAPC/MAPR/MAPS {mapcrs}: not a permutation of 1 2 3")
    return mapcrs, _perm(mapcrs)


def _info(mrc, path: Path) -> MrcInfo:
    h = mrc.header
    if 401 <= int(h.ispg) <= 630:
        raise InputFileError(path, f"volume stacks (ISPG {int(h.ispg)}) are not supported")
    mapcrs, perm = _axes(h, path)
    raw_shape = (int(h.nz), int(h.ny), int(h.nx))
    shape = tuple(raw_shape[p] for p in perm)
    cell = (float(h.cella.x), float(h.cella.y), float(h.cella.z))
    samples = (int(h.mx), int(h.my), int(h.mz))
    vox_xyz = [
        _f32(np.float32(c) / np.float32(m)) if m > 0 else 0.0
        for c, m in zip(cell, samples, strict=True)
    ]
    crs_start = {mapcrs[0]: int(h.nxstart), mapcrs[1]: int(h.nystart), mapcrs[2]: int(h.nzstart)}
    is_stack = path.suffix.lower() == ".mrcs" or (int(h.ispg) == 0 and int(h.nz) > 1)
    voxel = (vox_xyz[2], vox_xyz[1], vox_xyz[0])
    nstart = (crs_start[3], crs_start[2], crs_start[1])
    header_origin = (_f32(h.origin.z), _f32(h.origin.y), _f32(h.origin.x))
    limit = 10 * max(*raw_shape, *samples)
    origin, field = _frame(header_origin, nstart, voxel, limit)
    return MrcInfo(
        shape=shape,
        voxel_size=voxel,
        origin=origin,
        nstart=nstart,
        mode=int(h.mode),
        is_stack=bool(is_stack),
        axis_order=mapcrs,
        dtype=_SUPPORTED[int(h.mode)],
        header_origin=header_origin,
        origin_field=field,
        cell_angles=(_f32(h.cellb.alpha), _f32(h.cellb.beta), _f32(h.cellb.gamma)),
    )


# --------------------------------------------------------------------------- reading


def read_info(path: str | os.PathLike) -> MrcInfo:
    """Read an MRC header (fast: the data are not touched).

    Parameters
    ----------
    path : str or path-like
        MRC/CCP4 file (.mrc, .map, .mrcs, .st, ...).

    Returns
    -------
    MrcInfo
        Shape, (z, y, x) voxel size and origin in Å, nstart, mode, stack flag, axis order.

    Raises
    ------
    InputFileError
        Missing, not MRC, truncated or of an unsupported mode.
    """
    path = Path(path)
    with _open(path, header_only=True) as mrc:
        return _info(mrc, path)


def _triple(name: str, value, *, positive: bool = True) -> tuple[float, float, float]:
    """A number or (z, y, x) triple as three floats; ParamError if invalid."""
    values = np.atleast_1d(np.asarray(value, dtype=np.float64)).reshape(-1)
    ok = values.size in ((1, 3) if positive else (3,)) and np.all(np.isfinite(values))
    if not ok or (positive and np.any(values <= 0)):
        what = "a positive number or (z, y, x) in Å" if positive else "(z, y, x) in Å"
        raise ParamError(name, f"must be {what}, got {value!r}")
    z, y, x = np.broadcast_to(values, (3,))
    return (float(z), float(y), float(x))


def read_volume(
    path: str | os.PathLike,
    *,
    pixel_size: float | tuple[float, float, float] | None = None,
    require_pixel_size: bool = False,
) -> tuple[np.ndarray, MrcInfo]:
    """Read a whole MRC file as a float32 (z, y, x) array.

    Parameters
    ----------
    path : str or path-like
        MRC file; modes 0, 1, 2, 6 and 12 (float16) are read. A single 2D image comes back as
        (1, y, x); a stack as (n, y, x).
    pixel_size : float or (z, y, x) tuple, optional
        Voxel size in Å that replaces the header's (the returned info carries it).
    require_pixel_size : bool
        Raise :class:`ParamError` when the header's voxel size is 0 and no ``pixel_size``
        was given.

    Returns
    -------
    data : numpy.ndarray
        float32, C-contiguous, (z, y, x), reordered when MAPC/MAPR/MAPS are not 1 2 3.
    info : MrcInfo
        Header information (with the overriding voxel size when given).
    """
    path = Path(path)
    with _open(path) as mrc:
        info = _info(mrc, path)
        raw = mrc.data
        data = np.array(raw, dtype=np.float32)
    if data.ndim == 2:
        data = data[np.newaxis]
    perm = _perm(info.axis_order)
    if perm != (0, 1, 2):
        data = np.ascontiguousarray(data.transpose(perm))
    if pixel_size is not None:
        voxel = _triple("pixel_size", pixel_size)
        limit = 10 * max(info.shape)
        origin, field = _frame(info.header_origin, info.nstart, voxel, limit)  # NSTART: voxels
        info = replace(info, voxel_size=voxel, origin=origin, origin_field=field)
    elif require_pixel_size:
        relevant = info.voxel_size[1:] if info.is_stack else info.voxel_size
        if min(relevant) <= 0:
            raise ParamError(
                "pixel_size", f"the header of {path} says 0 Å per pixel; give pixel_size"
            )
    return data, info


# --------------------------------------------------------------------------- writing


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: errnos of a full disk or an exhausted quota
_FULL = (errno.ENOSPC, errno.EDQUOT)
#: files this process wrote through :func:`atomic_target` since :func:`take_written`
_WRITTEN: list[str] = []


def take_written() -> list[str]:
    """The paths this process wrote atomically since the last call (and forget them).

    The engine calls it around each step to learn which files the step made, so that a
    file deleted or changed later marks that step to be redone.
    """
    paths = list(dict.fromkeys(_WRITTEN))
    _WRITTEN.clear()
    return paths


@contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path next to ``path``; on success fsync and rename it over
    ``path``, on any exception delete it (the target is never left half written).

    A full disk (ENOSPC, EDQUOT) becomes :class:`~emforge.errors.OutputFileError` naming
    ``path`` and saying "no space left"."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise InputFileError(path, f"cannot write: folder {folder} does not exist")
    tmp = folder / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _WRITTEN.append(str(path))
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise OutputFileError(path, "cannot write: no space left on device") from None
        raise
    try:
        _fsync(folder)
    except OSError:  # pragma: no cover - some file systems cannot fsync a folder
        pass


def _storage(data: np.ndarray) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise ParamError("data", f"must be 2D (y, x) or 3D (z, y, x), got shape {data.shape}")
    if np.iscomplexobj(data):
        raise ParamError("data", "complex data cannot be written to MRC by emforge")
    native = data.dtype.newbyteorder("=")
    dtype = native if native in _KEPT_DTYPES else np.dtype(np.float32)
    return np.ascontiguousarray(data, dtype=dtype)


def _frame_fields(origin, origin_field: str, voxel) -> tuple[tuple, tuple]:
    """(ORIGIN (z, y, x) Å, NSTART (z, y, x) voxels) that write the frame ``origin``."""
    if origin_field not in ORIGIN_FIELDS:
        raise ParamError(
            "origin_field", f"must be one of {', '.join(ORIGIN_FIELDS)}, got {origin_field!r}"
        )
    frame = (0.0, 0.0, 0.0) if origin is None else _triple("origin", origin, positive=False)
    nstart = tuple(int(round(o / v)) for o, v in zip(frame, voxel, strict=True))
    whole = all(abs(n * v - o) <= _FRAME_TOL for n, v, o in zip(nstart, voxel, frame, strict=True))
    if origin_field in ("nstart", "both") and whole:
        return (frame if origin_field == "both" else (0.0, 0.0, 0.0)), nstart
    return frame, (0, 0, 0)  # ORIGIN keeps any frame, whole voxels or not


class _MrcNoStats(mrcfile.mrcfile.MrcFile):
    """An mrcfile writer that leaves DMIN, DMAX, DMEAN and RMS to :func:`_header_stats`:
    mrcfile's own statistics take a float32 copy of the whole array (a fresh 64 MB for a 256³
    map, whose first touch costs more than the arithmetic in a new process) for the rms."""

    def update_header_stats(self) -> None:
        pass


def _header_stats(header, arr: np.ndarray) -> None:
    """DMIN, DMAX, DMEAN and RMS (the standard deviation, as mrcfile and MRC2014 define it)
    of ``arr`` in one pass of float32 blocks (float64 sums; no copy of the array)."""
    from ._mrc_stream import StackStats

    if arr.size == 0:
        header.dmin, header.dmax, header.dmean, header.rms = 0.0, -1.0, -2.0, -1.0
        return
    stats = StackStats()
    rows = arr.reshape(-1, arr.shape[-1])
    if arr.dtype == np.float32:
        stats.add_block(rows)
    else:  # the kept integer and float16 modes: converted a slab of about 4 MB at a time
        per = max(1, (1 << 20) // rows.shape[1])
        for a in range(0, len(rows), per):
            stats.add_block(rows[a : a + per].astype(np.float32))
    header.dmin, header.dmax = np.float32(stats.min), np.float32(stats.max)
    header.dmean, header.rms = np.float32(stats.mean), np.float32(stats.rms)


def _write(path, data, voxel_size, origin, stack: bool, origin_field: str = "origin") -> None:
    arr = _storage(data)
    vz, vy, vx = _triple("voxel_size", voxel_size)
    (oz, oy, ox), (sz, sy, sx) = _frame_fields(origin, origin_field, (vz, vy, vx))
    with atomic_target(path) as tmp:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Data array contains")
            with _closed_on_error(_MrcNoStats(tmp, mode="w+")) as mrc:
                mrc.set_data(arr)
                _header_stats(mrc.header, arr)
                if stack and arr.ndim == 3:
                    mrc.set_image_stack()
                mrc.voxel_size = (vx, vy, vz)
                mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = ox, oy, oz
                mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = sx, sy, sz
                _stamp(mrc.header)


@contextmanager
def _closed_on_error(mrc) -> Iterator:
    """Close an open ``mrcfile`` object; if its final flush fails (a full disk), still close
    the file underneath (mrcfile leaves it open) before the error propagates."""
    try:
        with mrc:
            yield mrc
    except BaseException:
        stream = getattr(mrc, "_iostream", None)
        if stream is not None and not stream.closed:
            try:
                stream.close()
            except OSError:  # its buffered bytes cannot be flushed either
                pass
        raise


def _stamp(header) -> None:
    """A fixed label instead of mrcfile's dated one: the same data gives the same bytes."""
    header.label[0] = b"emforge".ljust(80)
    header.nlabl = 1


def write_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    voxel_size: float | tuple[float, float, float],
    origin: tuple[float, float, float] | None = None,
    origin_field: str = "origin",
) -> None:
    """Write a (z, y, x) volume (or a (y, x) image) to an MRC file, atomically.

    Parameters
    ----------
    path : str or path-like
        Target file; replaced atomically (temp file in the same folder, fsync, rename).
    data : numpy.ndarray
        2D or 3D. float16 is kept (mode 12), int8/int16/uint16 are kept (modes 0/1/6);
        everything else is written as float32 (mode 2).
    voxel_size : float or (z, y, x) tuple
        Voxel size in Å.
    origin : (z, y, x) tuple, optional
        The frame: position of voxel (0, 0, 0) in Å (``MrcInfo.origin``).
    origin_field : {"origin", "nstart", "both", "none"}
        Where the frame goes: the ORIGIN field (``"origin"``, ``"none"``), NXSTART/NYSTART/
        NZSTART (``"nstart"``) or both; pass ``MrcInfo.origin_field`` of the source to write a
        map back the way it came. A frame that is not a whole number of voxels (within
        0.01 Å) cannot be an NSTART and goes to ORIGIN.
    """
    _write(path, data, voxel_size, origin, stack=False, origin_field=origin_field)


def write_stack(
    path: str | os.PathLike, data: np.ndarray, *, voxel_size: float | tuple[float, float, float]
) -> None:
    """Write an (n, y, x) image stack (ISPG 0; use a ``.mrcs`` name), atomically.

    Same dtype rules as :func:`write_volume`; ``voxel_size`` is the pixel size in Å (or a
    (z, y, x) tuple).
    """
    _write(path, data, voxel_size, None, stack=True)


# streaming readers and writers (they use the helpers above)
from ._mrc_stream import StackReader, StackWriter, open_stack  # noqa: E402
