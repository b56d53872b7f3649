"""How paths are stored in the project database, in one place.

A project must keep working when it is copied (``cp -a P P2``) or moved (``mv P P3``), so
every path the engine records that lies **inside** the project folder is stored relative to
the project root (``Runs/000003_import_volume/extra/volume.mrc``) and resolved against the
project's current location when it is read back; a path **outside** the project (an import's
source file) is stored absolute. A stored path that is already absolute is used as it is,
which is how projects written before this rule keep opening.

What follows the rule: the file attributes of single objects (``Volume.path``, ``half1``,
``half2``, ...), the path columns of sets (:data:`PATH_COLUMNS`), run folders, the params
declared as paths (:class:`~emforge.engine.protocol.PathParam`) and the external files whose
content is hashed into step keys.

>>> to_stored("/data/P", "/data/P/Runs/000001_x/extra/a.mrc")
'Runs/000001_x/extra/a.mrc'
>>> to_stored("/data/P", "/data/maps/emd_3488.mrc")
'/data/maps/emd_3488.mrc'
>>> from_stored("/data/P2", "Runs/000001_x/extra/a.mrc")
'/data/P2/Runs/000001_x/extra/a.mrc'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "PATH_COLUMNS",
    "absolute",
    "to_stored",
    "from_stored",
    "stored_object",
    "resolved_object",
    "stored_columns",
    "resolved_strings",
]

#: set columns holding file paths (stored relative to the project root when inside it)
PATH_COLUMNS = ("image_path", "half1_path", "half2_path")

T = TypeVar("T")


def absolute(path: str) -> str:
    """``path`` with ``~`` expanded, made absolute against the current folder ("" stays "")."""
    if not path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def _inside(root: Path, path: str) -> str | None:
    """``path`` relative to ``root`` (POSIX form) when it lies inside it, else ``None``."""
    p = Path(os.path.abspath(path))
    candidates = [p]
    try:  # the folder with its symlinks resolved (the file itself is not followed)
        candidates.append(Path(os.path.realpath(p.parent)) / p.name)
    except (OSError, ValueError):
        pass
    for candidate in candidates:
        try:
            rel = candidate.relative_to(root)
        except ValueError:
            continue
        return rel.as_posix() if rel.parts else "."
    return None


def to_stored(root: str | os.PathLike, path: str | os.PathLike | None) -> Any:
    """The form of ``path`` to record in the database of the project at ``root``.

    Inside the project: relative to its root. Outside: absolute. Empty and ``None`` pass.
    """
    if path is None or path == "":
        return path
    rel = _inside(Path(root), os.fspath(path))
    return rel if rel is not None else os.path.abspath(os.fspath(path))


def from_stored(root: str | os.PathLike, stored: str | None) -> Any:
    """The absolute path of a recorded path in the project now at ``root``."""
    if stored is None or stored == "" or os.path.isabs(stored):
        return stored
    return os.path.normpath(os.path.join(os.fspath(root), *PurePosixPath(stored).parts))


def _map_fields(obj: T, root: str | os.PathLike, fn: Any) -> T:
    fields = getattr(obj, "file_fields", ())
    changes = {f: fn(root, getattr(obj, f)) for f in fields if getattr(obj, f, None)}
    return dataclasses.replace(obj, **changes) if changes else obj  # type: ignore[type-var]


def stored_object(obj: T, root: str | os.PathLike) -> T:
    """A copy of a typed object with its file attributes in stored form."""
    return _map_fields(obj, root, to_stored)


def resolved_object(obj: T, root: str | os.PathLike) -> T:
    """A copy of a typed object read from the database with its file attributes absolute."""
    return _map_fields(obj, root, from_stored)


def stored_columns(
    columns: Mapping[str, np.ndarray], root: str | os.PathLike
) -> dict[str, np.ndarray]:
    """Set columns with the path columns in stored form (other columns untouched).

    A relative path in a column means relative to the current folder, as everywhere in
    Python; it is stored absolute (or relative to the root when that puts it inside).
    """
    out = dict(columns)
    for name in PATH_COLUMNS:
        values = out.get(name)
        if values is None or values.dtype != object or not len(values):
            continue
        import pandas as pd  # hash-based: linear in the number of items, one call per path

        codes, uniques = pd.factorize(values, sort=False)
        mapped = [to_stored(root, str(u)) for u in uniques.tolist()]
        if mapped != uniques.tolist():  # nothing inside the project: keep the column as it is
            out[name] = np.array(mapped, dtype=object)[codes]
    return out


def resolved_strings(values: np.ndarray, root: str | os.PathLike) -> np.ndarray:
    """The dictionary of a stored path column with every entry made absolute."""
    return np.array([from_stored(root, v) for v in values.tolist()], dtype=object)
