"""Streaming access to MRC image stacks: plain positioned reads and writes, constant memory.

:class:`StackReader` reads images with ``preadv`` straight into the caller's buffer (no memory
map: a map's touched pages count in the process's RSS and a 3 GB stack read through one makes
a 3 GB process). :class:`StackWriter` writes blocks with ``pwritev`` into a hidden temporary
file whose space is reserved first, accumulates the header statistics (min, max, mean, rms) per
block, starts the write-back of what it wrote as it goes, drops those pages from the page cache
once they are on disk, and fsyncs once at the end before the atomic rename. See
``docs/conventions.md`` and :mod:`emforge.io.mrc` (which exports both classes).
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass, replace
from pathlib import Path

import mrcfile
import mrcfile.utils
import numpy as np
from mrcfile.constants import IMAGE_STACK_SPACEGROUP, MAP_ID
from mrcfile.dtypes import HEADER_DTYPE

from ..errors import InputFileError, ParamError
from .mrc import _HEADER_BYTES, _SUPPORTED, _info, _open, _triple, atomic_target

__all__ = ["StackReader", "StackWriter", "open_stack"]

#: largest scratch buffer a read or a statistic uses (bytes)
SCRATCH_BYTES = 4 << 20
#: bytes written between two write-back windows of :class:`StackWriter`
WRITEBACK_BYTES = 16 << 20
#: write-back windows in flight before the writer waits for the oldest (dirty pages bounded)
WRITEBACK_WINDOWS = 4


# --------------------------------------------------------------------------- page cache


def _sync_file_range():
    """libc's ``sync_file_range`` (Linux) or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SFR = _sync_file_range()
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4


def _drop_cache(fd: int, offset: int, length: int) -> None:
    """Tell the kernel the bytes ``offset .. offset + length`` will not be read again soon."""
    if length > 0 and hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:  # pragma: no cover - advice only
            pass


def _writeback(fd: int, offset: int, length: int, *, wait: bool) -> None:
    """Start (``wait=False``) or finish (``wait=True``) writing a range of ``fd`` to disk."""
    if _SFR is None or length <= 0:
        return
    flags = _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER if wait else _SFR_WRITE
    if _SFR(fd, offset, length, flags) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise OSError(err, os.strerror(err))


def _full_read(fd: int, buf: memoryview, offset: int, path: Path) -> None:
    done = 0
    while done < len(buf):
        got = os.preadv(fd, [buf[done:]], offset + done)
        if got == 0:
            raise InputFileError(path, f"truncated: no data at byte {offset + done}")
        done += got


def _full_write(fd: int, buf: memoryview, offset: int) -> None:
    done = 0
    while done < len(buf):
        done += os.pwritev(fd, [buf[done:]], offset + done)


def _runs(index: np.ndarray) -> list[tuple[int, int, int]]:
    """(first image, count, position in the output) of each run of consecutive indices."""
    if index.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [index.size]))
    return [(int(index[a]), int(b - a), int(a)) for a, b in zip(starts, ends, strict=True)]


# --------------------------------------------------------------------------- reading


class StackReader:
    """Read-only access to the images of an MRC stack, by positioned reads (no memory map).

    The header is read once when opened; images are read on demand and returned as float32.
    A single 2D image counts as a stack of one; a volume's sections count as images. Memory
    is what the caller asks for: :meth:`read_into` fills a buffer the caller reuses. Use as a
    context manager (or call :meth:`close`).

    Parameters
    ----------
    path : str or path-like
    drop_cache : bool
        After each read, advise the kernel to drop the pages read from the page cache
        (``POSIX_FADV_DONTNEED``): for one pass over a stack larger than memory.

    Attributes
    ----------
    path : pathlib.Path
    info : MrcInfo
        Header information; ``info.shape`` is (n, y, x).
    """

    def __init__(self, path: str | os.PathLike, *, drop_cache: bool = False) -> None:
        self.path = Path(path)
        self._drop = bool(drop_cache)
        with _open(self.path, header_only=True) as mrc:
            info = _info(mrc, self.path)
            header = mrc.header
            self._dtype = mrcfile.utils.data_dtype_from_header(header)
            self._offset = _HEADER_BYTES + int(header.nsymbt)
            raw = (int(header.nz), int(header.ny), int(header.nx))
        if info.axis_order[2] != 3:
            raise InputFileError(
                self.path,
                f"cannot read as an image stack: MAPS = {info.axis_order[2]} (sections are not z)",
            )
        self._raw_image = raw[1:]
        self._swap = info.axis_order[:2] == (2, 1)
        n = raw[0]
        self.info = replace(info, shape=(n, raw[2], raw[1]) if self._swap else raw)
        self._image_bytes = raw[1] * raw[2] * self._dtype.itemsize
        self._direct = self._dtype == np.dtype("=f4") and not self._swap
        self._scratch: np.ndarray | None = None
        self._fd: int | None = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        if self._drop and hasattr(os, "posix_fadvise"):  # one pass: a larger read-ahead
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n, y, x)."""
        return self.info.shape  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.info.shape[0]

    def _indices(self, index) -> np.ndarray:
        n = len(self)
        if isinstance(index, slice):
            return np.arange(*index.indices(n), dtype=np.intp)
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(f"boolean index of shape {index.shape} for a stack of {n}")
            return np.flatnonzero(index)
        index = index.astype(np.intp, copy=False).reshape(-1)
        if index.size and (index.min() < -n or index.max() >= n):
            raise IndexError(f"image index out of range for a stack of {n}")
        return np.where(index < 0, index + n, index)

    def __getitem__(self, index) -> np.ndarray:
        """float32 image (y, x) for an int; (k, y, x) for a slice, int array or boolean mask."""
        if isinstance(index, (int, np.integer)):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"image {index} out of range for a stack of {n}")
            out = np.empty((1, *self.shape[1:]), np.float32)
            self.read_into([int(index) % n], out)
            return out[0]
        idx = self._indices(index)
        out = np.empty((idx.size, *self.shape[1:]), np.float32)
        self.read_into(idx, out)
        return out

    def read_into(self, index, out: np.ndarray) -> np.ndarray:
        """Read the images ``index`` (a slice, int array or boolean mask) into ``out``.

        ``out`` is a C-contiguous float32 array of shape (k, y, x) with k the number of images
        selected; native float32 files are read straight into it. Returns ``out``.
        """
        if self._fd is None:
            raise ValueError(f"{self.path}: stack is closed")
        idx = self._indices(index)
        want = (idx.size, *self.shape[1:])
        if out.shape != want or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ParamError(
                "out", f"must be C-contiguous float32 {want}, got {out.dtype} {out.shape}"
            )
        for first, count, pos in _runs(idx):
            if self._direct:
                view = memoryview(out[pos : pos + count]).cast("B")
                _full_read(self._fd, view, self._offset + first * self._image_bytes, self.path)
            else:
                self._convert(first, count, out[pos : pos + count])
            if self._drop:
                _drop_cache(
                    self._fd, self._offset + first * self._image_bytes, count * self._image_bytes
                )
        return out

    def _convert(self, first: int, count: int, out: np.ndarray) -> None:
        """Read ``count`` images of a non-float32 (or swapped) file through a scratch buffer."""
        per = max(1, SCRATCH_BYTES // self._image_bytes)
        if self._scratch is None:
            self._scratch = np.empty((min(per, max(count, 1)), *self._raw_image), self._dtype)
        for a in range(0, count, per):
            k = min(per, count - a)
            if self._scratch.shape[0] < k:
                self._scratch = np.empty((k, *self._raw_image), self._dtype)
            raw = self._scratch[:k]
            offset = self._offset + (first + a) * self._image_bytes
            _full_read(self._fd, memoryview(raw).cast("B"), offset, self.path)  # type: ignore[arg-type]
            np.copyto(out[a : a + k], raw.swapaxes(-1, -2) if self._swap else raw, casting="unsafe")

    def iter_chunks(self, chunk: int):
        """Yield (start, float32 (k, y, x) block) for consecutive blocks of ``chunk`` images."""
        if int(chunk) < 1:
            raise ParamError("chunk", f"must be >= 1, got {chunk}")
        for start in range(0, len(self), int(chunk)):
            yield start, self[start : start + int(chunk)]

    def close(self) -> None:
        """Close the file."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> StackReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_stack(path: str | os.PathLike, *, drop_cache: bool = False) -> StackReader:
    """Open an MRC stack (or a single image, or a volume's sections) for reading.

    Returns
    -------
    StackReader
        ``len()``, ``shape`` (n, y, x), ``info``, indexing returning float32 arrays,
        ``read_into(index, out)`` into a reused buffer, ``iter_chunks(k)``; a context manager.
    """
    return StackReader(path, drop_cache=drop_cache)


# --------------------------------------------------------------------------- statistics


#: values per group of centred squares (256 KB of float32: stays in the CPU cache)
_GROUP = 1 << 16


@dataclass
class StackStats:
    """Running min, max, mean and rms of the values written, merged block by block.

    Each block contributes its count, float64 sum and the float64 sum of squared deviations
    from its own mean (computed in float32 on the centred block, so no cancellation when the
    mean is large); blocks are merged with Chan's pairwise formula. ``rms`` is the standard
    deviation about the mean, as mrcfile and the MRC2014 standard define it.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = np.inf
    max: float = -np.inf

    def add_block(self, block: np.ndarray, scratch: np.ndarray | None = None) -> None:
        """Add a float32 block (k, ...) of k images; ``scratch`` (float32) avoids allocations."""
        rows = block.reshape(len(block), -1) if block.ndim > 1 else block.reshape(1, -1)
        k = rows.size
        if k == 0:
            return
        # float32 pairwise sums per image, then float64 across images: accurate and fast
        mean = float(np.add.reduce(rows, axis=1).sum(dtype=np.float64)) / k
        if scratch is None or scratch.size < min(k, _GROUP):
            scratch = np.empty(min(k, _GROUP), np.float32)
        flat, shift, m2 = rows.reshape(-1), np.float32(mean), 0.0
        for a in range(0, k, _GROUP):  # centred squares in cache-sized groups
            part = flat[a : a + _GROUP]
            dev = np.subtract(part, shift, out=scratch[: part.size])
            m2 += float(np.dot(dev, dev))
        self._merge(k, mean, m2, float(flat.min()), float(flat.max()))

    def add_constant(self, value: float, count: int) -> None:
        """Add ``count`` values all equal to ``value`` (images never written are zero)."""
        if count > 0:
            self._merge(count, float(value), 0.0, float(value), float(value))

    def _merge(self, k: int, mean: float, m2: float, lo: float, hi: float) -> None:
        n = self.count + k
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * k / n
        self.mean += delta * k / n
        self.count = n
        self.min, self.max = min(self.min, lo), max(self.max, hi)

    @property
    def rms(self) -> float:
        return float(np.sqrt(max(self.m2, 0.0) / self.count)) if self.count else 0.0


def stack_header(shape, mode: int, voxel_size, stats: StackStats | None = None) -> np.recarray:
    """An MRC2014 image-stack header (ISPG 0, MZ 1) for an (n, y, x) stack of ``mode``.

    ``voxel_size`` is (z, y, x) in Å; ``stats`` fills DMIN, DMAX, DMEAN and RMS.
    """
    n, y, x = shape
    vz, vy, vx = voxel_size
    h = np.zeros((), dtype=HEADER_DTYPE).view(np.recarray)
    h.map = MAP_ID
    h.nversion = 20141
    h.machst = mrcfile.utils.machine_stamp_from_byte_order(h.mode.dtype.byteorder)
    h.nx, h.ny, h.nz, h.mode = x, y, n, mode
    h.mx, h.my, h.mz = x, y, 1
    h.cella.x, h.cella.y, h.cella.z = vx * x, vy * y, vz
    h.cellb.alpha = h.cellb.beta = h.cellb.gamma = 90.0
    h.mapc, h.mapr, h.maps = 1, 2, 3
    h.ispg = IMAGE_STACK_SPACEGROUP
    h.label[0] = b"emforge".ljust(80)
    h.nlabl = 1
    if stats is not None and stats.count:
        h.dmin, h.dmax, h.dmean, h.rms = stats.min, stats.max, stats.mean, stats.rms
    else:  # MRC2014: DMAX < DMIN and RMS < 0 say "not computed"
        h.dmin, h.dmax, h.dmean, h.rms = 0.0, -1.0, -2.0, -1.0
    return h


# --------------------------------------------------------------------------- writing


def _reserve(fd: int, size: int) -> None:
    """Allocate every block of the file now, so that a full disk is an ``OSError`` here."""
    os.ftruncate(fd, size)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        block = bytes(1 << 20)  # no fallocate on this file system: write the zeros ourselves
        for start in range(0, size, len(block)):
            _full_write(fd, memoryview(block)[: min(len(block), size - start)], start)


class StackWriter:
    """Stream an (n, y, x) image stack to disk with constant memory.

    Blocks are written with plain positioned writes into a hidden temporary file in the target
    folder, whose space is reserved first (a full disk raises
    :class:`~emforge.errors.OutputFileError` naming the target). The header statistics are
    accumulated block by block (:class:`StackStats`); the written range is handed to the disk
    as the stack grows and dropped from the page cache once it is there. On a clean exit the
    header is written, the file fsynced once and renamed into place; if an exception leaves
    the ``with`` block the temporary file is deleted and nothing appears at ``path``. Blocks
    may come in any order; images never written are zero (and count as zeros in the
    statistics); an image written twice keeps its last content (the statistics are then
    recomputed from the file at the end).

    Parameters
    ----------
    path : str or path-like
        Target file (use ``.mrcs``).
    shape : (n, y, x)
        Stack shape.
    voxel_size : float or (z, y, x) tuple
        Pixel size in Å.
    dtype : numpy dtype
        float32 (default), float16, int8, int16 or uint16.

    Examples
    --------
    >>> with StackWriter("out.mrcs", (1000, 64, 64), voxel_size=1.3) as w:  # doctest: +SKIP
    ...     for start, block in blocks:
    ...         w.write(start, block)
    """

    def __init__(self, path, shape, *, voxel_size, dtype=np.float32) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ParamError("shape", f"must be (n, y, x) with positive sizes, got {shape!r}")
        self.dtype = np.dtype(dtype)
        modes = {v: k for k, v in _SUPPORTED.items()}
        if self.dtype not in modes:
            raise ParamError(
                "dtype", f"must be one of float32, float16, int8, int16, uint16; got {dtype}"
            )
        self._mode = modes[self.dtype]
        self._voxel = _triple("voxel_size", voxel_size)
        self._image_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        self._ctx = None
        self._fd: int | None = None

    def __enter__(self) -> StackWriter:
        self._ctx = atomic_target(self.path)
        tmp = self._ctx.__enter__()
        self._tmp = tmp
        self._stats = StackStats()
        self._seen = np.zeros(self.shape[0], bool)
        self._restat = False
        self._scratch: np.ndarray | None = None
        self._started = _HEADER_BYTES  # write-back begun up to this byte
        self._windows: collections.deque[tuple[int, int]] = collections.deque()  # in flight
        self._end = _HEADER_BYTES  # highest byte written
        try:
            self._fd = os.open(
                tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666
            )
            _reserve(self._fd, _HEADER_BYTES + self.shape[0] * self._image_bytes)
        except BaseException as exc:
            self._close_fd()
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def write(self, start: int, block: np.ndarray) -> None:
        """Write images ``start .. start + len(block) - 1``; ``block`` is (k, y, x) or (y, x)."""
        if self._fd is None:
            raise RuntimeError("StackWriter.write() called outside its 'with' block")
        block = np.asarray(block)
        if block.ndim == 2:
            block = block[np.newaxis]
        n, y, x = self.shape
        k = block.shape[0]
        if block.ndim != 3 or block.shape[1:] != (y, x) or not 0 <= int(start) <= n - k:
            raise ParamError(
                "block",
                f"shape {block.shape} at start {start} does not fit a stack of {self.shape}",
            )
        start = int(start)
        if self.dtype.kind in "iu" and block.dtype.kind == "f":
            block = np.rint(block)
        stored = np.ascontiguousarray(block, dtype=self.dtype)
        self._account(start, stored)
        offset = _HEADER_BYTES + start * self._image_bytes
        _full_write(self._fd, memoryview(stored).cast("B"), offset)
        self._end = max(self._end, offset + stored.nbytes)
        if self._end - self._started >= WRITEBACK_BYTES:
            self._advance_writeback()

    def _account(self, start: int, stored: np.ndarray) -> None:
        k = len(stored)
        if self._seen[start : start + k].any():
            self._restat = True  # an image written again: recount from the file at the end
        self._seen[start : start + k] = True
        if not self._restat:
            self._add(stored)

    def _add(self, stored: np.ndarray) -> None:
        values = stored if stored.dtype == np.float32 else stored.astype(np.float32)
        if self._scratch is None:
            self._scratch = np.empty(_GROUP, np.float32)
        self._stats.add_block(values, self._scratch)

    def _advance_writeback(self) -> None:
        """Start writing the newest window to disk; once more than :data:`WRITEBACK_WINDOWS`
        are in flight, wait for the oldest and drop it from the page cache."""
        fd = self._fd
        window = (self._started, self._end - self._started)
        _writeback(fd, *window, wait=False)
        self._windows.append(window)
        self._started = self._end
        while len(self._windows) > WRITEBACK_WINDOWS:
            done = self._windows.popleft()
            _writeback(fd, *done, wait=True)
            _drop_cache(fd, *done)

    def _recount(self) -> StackStats:
        """Statistics of the whole temporary file, read back in blocks (rare path)."""
        self._stats = StackStats()
        with StackReader(self._tmp) as r:
            per = max(1, SCRATCH_BYTES // (4 * self.shape[1] * self.shape[2]))
            buf = np.empty((per, *self.shape[1:]), np.float32)
            for a in range(0, len(r), per):
                k = min(per, len(r) - a)
                self._add(r.read_into(slice(a, a + k), buf[:k]))
        return self._stats

    def _finish(self) -> None:
        fd = self._fd
        header = stack_header(self.shape, self._mode, self._voxel)
        _full_write(fd, memoryview(header.tobytes()), 0)  # a valid header for the recount
        if self._restat:
            stats = self._recount()
        else:
            stats = self._stats
            stats.add_constant(0.0, int((~self._seen).sum()) * self.shape[1] * self.shape[2])
        header = stack_header(self.shape, self._mode, self._voxel, stats)
        _full_write(fd, memoryview(header.tobytes()), 0)
        os.fsync(fd)
        _drop_cache(fd, 0, self._end)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
            self._close_fd()
        except BaseException as err:
            self._close_fd()
            self._ctx.__exit__(type(err), err, err.__traceback__)
            raise
        self._ctx.__exit__(exc_type, exc, tb)
