"""Data versions: content hashes of the files an object records.

Below both :mod:`emforge.project` (which versions the objects it registers) and
:mod:`emforge.engine` (which versions the external files a run reads); it imports neither.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["file_version"]

#: bytes read and hashed at a time (one reused buffer)
_BLOCK = 1 << 22


def file_version(paths: Sequence[str]) -> str:
    """Content hash (blake2b, 16 bytes, hex) of the files, in order; a missing file hashes as
    absent, so creating, changing, deleting or reordering any of them changes the version."""
    h = hashlib.blake2b(digest_size=16)
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    for p in paths:
        h.update(b"\0")
        try:
            with open(p, "rb", buffering=0) as fh:
                while n := fh.readinto(buf):
                    h.update(view[:n])
        except FileNotFoundError:
            h.update(b"<missing>")
    return h.hexdigest()
