"""Streaming a particle stack through a 2D mask, file to file (the work of masks.particles).

Imports only numpy, the image I/O and the mask kernels (not the engine), so a worker process
or a benchmark that runs :func:`mask_stack_file` starts quickly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CHUNK_BYTES", "mask_stack_file"]

#: bytes of float32 images read, masked and written at a time by :func:`mask_stack_file`
CHUNK_BYTES = 4 << 20
#: source stacks kept open at a time by :func:`mask_stack_file` (least recently used closed)
OPEN_STACKS = 64


def mask_stack_file(
    sources: list[str],
    indices: np.ndarray,
    target: str,
    *,
    mask: np.ndarray,
    binary: bool,
    fill: str,
    fill_value: float,
    pixel_size: float,
    chunk: int | None = None,
    progress: Any = None,
) -> int:
    """Stream images ``(sources[i], indices[i])`` through a mask into one new stack file.

    Reads at most ``chunk`` images at a time (default: as many as fit in 4 MiB of float32, so
    memory depends neither on the stack length nor on the box) into one reused buffer with
    plain reads, applies the mask in place and writes the buffer with a
    :class:`~emforge.io.StackWriter` (atomic: the file appears only when complete; header
    statistics per chunk; pages already read or written are released from the page cache).
    Returns the number of images written.
    """
    from emforge.io import StackWriter, open_stack

    from .kernels import apply_mask

    n = len(indices)
    if chunk is None:
        chunk = max(1, CHUNK_BYTES // (4 * int(np.prod(mask.shape))))
    chunk = max(1, min(int(chunk), n))
    buffer = np.empty((chunk, *mask.shape), np.float32)
    readers: dict[str, Any] = {}
    try:
        with StackWriter(target, (n, *mask.shape), voxel_size=pixel_size) as writer:
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                block = buffer[: stop - start]
                _read_block(readers, open_stack, sources[start:stop], indices[start:stop], block)
                apply_mask(block, mask, binary=binary, fill=fill, fill_value=fill_value, out=block)
                writer.write(start, block)
                if progress is not None:
                    progress(stop / n, f"{stop}/{n} images")
    finally:
        for r in readers.values():
            r.close()
    return n


def _read_block(readers: dict, open_stack, srcs: list[str], idx, block: np.ndarray) -> None:
    """Fill ``block`` with images ``(srcs[i], idx[i])``, opening each source stack once."""
    idx = np.asarray(idx)
    paths = list(dict.fromkeys(srcs))
    for path in paths:
        if path in readers:
            readers[path] = readers.pop(path)  # most recently used last
        else:
            readers[path] = open_stack(path, drop_cache=True)
    while len(readers) > max(OPEN_STACKS, len(paths)):  # a set from thousands of stacks
        readers.pop(next(iter(readers))).close()
    if len(paths) == 1:  # one source stack: read straight into the block
        readers[paths[0]].read_into(idx, block)
        return
    for path in paths:
        sel = np.fromiter((s == path for s in srcs), bool, len(srcs))
        block[sel] = readers[path][idx[sel]]
