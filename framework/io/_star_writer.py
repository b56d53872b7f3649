"""Writing RELION 3.1 STAR files: particles (data_optics + data_particles), 3D coordinates.

Part of :mod:`emforge.io.star` (which re-exports the writers). What is written, and what is
left out, is described in ``docs/conventions.md`` ("STAR files").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..columns import COORDINATE3D_COLUMNS, PARTICLE_COLUMNS
from ..errors import ParamError
from .mrc import atomic_target
from .star import _COORD_LABELS, _OPTICS_LABELS, _PARTICLE_LABELS, star_label

__all__ = ["write_particles_star", "write_coordinates3d_star"]

_FLOAT_FORMAT = "%.12g"
#: columns of a set that are the project's own and never go into a STAR file
_NOT_WRITTEN = {"id"}


def _check_columns(columns: dict, required: tuple[str, ...]) -> tuple[dict[str, np.ndarray], int]:
    cols = {k: np.asarray(v) for k, v in columns.items() if k not in _NOT_WRITTEN}
    for name in required:
        if name not in cols:
            raise ParamError("columns", f"missing required column {name}")
    lengths = {k: v.shape[0] if v.ndim else -1 for k, v in cols.items()}
    if len(set(lengths.values())) > 1 or min(lengths.values(), default=0) < 0:
        raise ParamError("columns", f"columns differ in length: {lengths}")
    return cols, next(iter(lengths.values()), 0)


def _holds_values(values: np.ndarray, default) -> bool:
    """False for a standard column that only holds its 'unset' default (NaN, 0, '')."""
    if values.dtype == object:
        return any(v != default for v in values)
    if isinstance(default, float) and np.isnan(default):
        return bool(np.any(~np.isnan(values.astype(np.float64))))
    return bool(np.any(values != default))


def _star_names(cols: dict[str, np.ndarray], star_path: Path) -> list[str]:
    folder = os.path.dirname(os.path.abspath(star_path))
    unique, inverse = np.unique(cols["image_path"].astype(str), return_inverse=True)
    rel = []
    for p in unique:
        inside = os.path.isabs(p) and os.path.commonpath([folder, os.path.abspath(p)]) == folder
        rel.append(os.path.relpath(p, folder) if inside else p)
    names = np.array(rel, dtype=object)[inverse]
    index = cols["image_index"].astype(np.int64)
    if np.any(index < 0):
        raise ParamError("columns", "image_index must be >= 0")
    return [f"{i + 1:06d}@{p}" for i, p in zip(index.tolist(), names, strict=True)]


def _image_size(cols: dict[str, np.ndarray], image_size, optics) -> int | None:
    """The box (px): as given, else from the stack headers, else from the original optics."""
    if image_size is not None:
        if not isinstance(image_size, int | np.integer) or image_size <= 0:
            raise ParamError(
                "image_size", f"must be a positive number of pixels, got {image_size!r}"
            )
        return int(image_size)
    from .mrc import read_info

    sizes = {
        read_info(p).shape[-1]: p
        for p in np.unique(cols["image_path"].astype(str))
        if os.path.isfile(p)
    }
    if len(sizes) > 1:
        (a, pa), (b, pb) = list(sizes.items())[:2]
        raise ParamError("image_size", f"stacks differ in size: {pa} is {a} px, {pb} is {b} px")
    if sizes:
        return next(iter(sizes))
    known = {row.get("rlnImageSize") for row in optics or ()} - {None}
    return int(known.pop()) if len(known) == 1 else None


def _group_numbers(cols, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Optics groups: unique (original group, pixel size, voltage, Cs, amplitude contrast).

    Groups keep their original number when each original group is one written group, else
    they are numbered 1..K.
    """
    keys = pd.DataFrame({"orig": cols.get("rlnOpticsGroup", np.zeros(n, np.int64))})
    for ours, label in _OPTICS_LABELS.items():
        keys[label] = cols[ours].astype(np.float64) if ours in cols else np.nan
    groups = keys.drop_duplicates().sort_values(list(keys.columns)).reset_index(drop=True)
    orig = groups["orig"]
    keep = bool(len(groups)) and orig.is_unique and bool((orig > 0).all())
    groups["rlnOpticsGroup"] = orig.astype(np.int64) if keep else np.arange(1, len(groups) + 1)
    number = keys.merge(groups, how="left", on=list(keys.columns))["rlnOpticsGroup"].to_numpy()
    return groups, number


def _optics_table(cols, n: int, image_size, optics) -> tuple[pd.DataFrame, np.ndarray]:
    """data_optics: the original rows (every field, in their order) updated with our values."""
    groups, number = _group_numbers(cols, n)
    originals = list(optics or [])
    rows: list[dict] = []
    for g in groups.itertuples(index=False):
        values = g._asdict()
        group, orig = int(values.pop("rlnOpticsGroup")), values.pop("orig")
        match = next((o for o in originals if _same_group(o, orig, values)), {})
        row = dict(match)
        row["rlnOpticsGroup"] = group
        name = match.get("rlnOpticsGroupName")
        if not name or any(r["rlnOpticsGroupName"] == name for r in rows):
            name = f"opticsGroup{group}"
        row["rlnOpticsGroupName"] = name
        row.update(values)
        if image_size is not None:
            row["rlnImageSize"] = int(image_size)
        if row.get("rlnImageDimensionality") is None:
            row["rlnImageDimensionality"] = 2
        rows.append(row)
    order = list(dict.fromkeys([k for o in originals for k in o]))
    first = ["rlnOpticsGroup", "rlnOpticsGroupName", *_OPTICS_LABELS.values()]
    first += ["rlnImageSize", "rlnImageDimensionality"]
    table = pd.DataFrame(rows)
    table = table[[c for c in dict.fromkeys([*order, *first, *table.columns]) if c in table]]
    table = table[[c for c in table.columns if not table[c].isna().all()]]
    for label in ("rlnOpticsGroup", "rlnImageSize", "rlnImageDimensionality"):
        if label in table and not table[label].isna().any():
            table[label] = table[label].astype(np.int64)
    return table, number


def _same_group(row: dict, orig, values: dict) -> bool:
    """An original row is the group's: the same number when the set has it, else the same
    values (our values then replace the row's, e.g. a pixel size given at import)."""
    if orig:
        return row.get("rlnOpticsGroup") == orig
    for label, value in values.items():
        have = row.get(label)
        if have is not None and not np.isnan(value) and not np.isclose(float(have), value):
            return False
    return True


def _frame(pairs: list[tuple[str, np.ndarray]], order: Sequence[str] = ()) -> pd.DataFrame:
    """The table of ``(label, values)``, first label wins; labels in ``order`` come first."""
    data = {}
    for label, values in pairs:
        if label not in data:
            data[label] = pd.Series(values.astype(object) if values.dtype == object else values)
    first = [label for label in order if label in data]
    return pd.DataFrame({k: data[k] for k in dict.fromkeys([*first, *data])})


def write_particles_star(
    path: str | os.PathLike,
    columns: dict[str, np.ndarray],
    *,
    image_size: int | None = None,
    optics: list[dict] | None = None,
    labels: Sequence[str] | None = None,
) -> None:
    """Write particles as a RELION 3.1 STAR file (data_optics + data_particles), atomically.

    Parameters
    ----------
    path : str or path-like
        Target STAR file.
    columns : dict of str to numpy.ndarray
        Our particle columns (``image_path``, ``image_index``, ``pixel_size`` required) and
        extra columns: a ``rln...`` name is written as it is, any other as an emforge-only
        label (``my_note`` -> ``rlnEmforgeMyNote``); ``id`` is not written. A standard column
        that only holds its unset default (NaN, 0, '') is left out unless ``labels`` has it.
    image_size : int, optional
        Box size (px) written as rlnImageSize; default: from the stacks' MRC headers, else
        the original optics rows. rlnImageDimensionality is 2 unless ``optics`` says.
    optics : list of dict, optional
        Original data_optics rows (``StarInfo.optics``): a written group that matches one
        (same rlnOpticsGroup when given as an extra, same values) keeps its name, number and
        every other field (e.g. rlnMtfFileName, rlnMicrographOriginalPixelSize), in order.
    labels : sequence of str, optional
        The particle labels of the source file (``StarInfo.labels``): the standard columns
        among them are written even when they hold only their default (a real all-zero
        rlnPhaseShift), and the written columns keep the source's order.

    Notes
    -----
    Optics groups are the unique (rlnOpticsGroup extra, pixel size, voltage, Cs, amplitude
    contrast) combinations, as RELION's 3.0 -> 3.1 conversion makes them. Image paths inside
    the STAR file's folder are written relative to it; others as given. Image numbers are
    1-based (``image_index + 1``).
    """
    path = Path(path)
    cols, n = _check_columns(columns, ("image_path", "image_index", "pixel_size"))
    size = _image_size(cols, image_size, optics)
    optics_df, group = _optics_table(cols, n, size, optics)
    schema = {c.name: c for c in PARTICLE_COLUMNS}
    source = set(labels or ())
    pairs = [("rlnImageName", np.array(_star_names(cols, path), dtype=object))]
    for ours, label in _PARTICLE_LABELS.items():
        if ours in cols and (label in source or _holds_values(cols[ours], schema[ours].default)):
            pairs.append((label, cols[ours].astype(schema[ours].dtype)))
    pairs.append(("rlnOpticsGroup", group.astype(np.int64)))
    pairs += [(star_label(k), v) for k, v in cols.items() if k not in schema]
    text = starfile.to_string(
        {"optics": optics_df, "particles": _frame(pairs, labels or ())},
        float_format=_FLOAT_FORMAT,
        na_rep="nan",
    )
    for block in ("optics", "particles"):  # RELION 3.1 marks each block with its version
        text = text.replace(f"\ndata_{block}\n", f"\n# version 30001\n\ndata_{block}\n", 1)
    _write_text(path, text)


def _write_text(path: Path, text: str) -> None:
    # starfile stamps the time in its first comment; a fixed line keeps equal data equal bytes
    if text.startswith("# Created by the starfile"):
        text = "# written by emforge" + text[text.index("\n") :]
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_coordinates3d_star(path: str | os.PathLike, columns: dict[str, np.ndarray]) -> None:
    """Write 3D coordinates as a STAR file (data_optics when pixel sizes are known), atomically.

    ``x, y, z`` are required (pixels); ``tomogram`` is written as rlnTomoName, angles as
    rlnAngleRot/Tilt/Psi, ``pixel_size`` as rlnImagePixelSize of one optics group per value;
    extra columns as in :func:`write_particles_star` (``id`` is not written).
    """
    path = Path(path)
    cols, n = _check_columns(columns, ("x", "y", "z"))
    schema = {c.name: c for c in COORDINATE3D_COLUMNS}
    pairs = []
    if "tomogram" in cols and _holds_values(cols["tomogram"], ""):
        pairs.append(("rlnTomoName", cols["tomogram"].astype(object)))
    for ours, label in _COORD_LABELS.items():
        if ours in cols and _holds_values(cols[ours], schema[ours].default):
            pairs.append((label, cols[ours].astype(schema[ours].dtype)))
    blocks: dict[str, pd.DataFrame] = {}
    px = cols.get("pixel_size")
    if px is not None and np.any(np.isfinite(px.astype(np.float64))):
        unique, group = np.unique(px.astype(np.float64), return_inverse=True)
        blocks["optics"] = pd.DataFrame(
            {
                "rlnOpticsGroup": np.arange(1, len(unique) + 1),
                "rlnOpticsGroupName": [f"opticsGroup{i}" for i in range(1, len(unique) + 1)],
                "rlnImagePixelSize": unique,
            }
        )
        pairs.append(("rlnOpticsGroup", group.astype(np.int64) + 1))
    pairs += [(star_label(k), v) for k, v in cols.items() if k not in schema]
    blocks["particles"] = _frame(pairs)
    text = starfile.to_string(blocks, float_format=_FLOAT_FORMAT, na_rep="nan")
    _write_text(path, text)
