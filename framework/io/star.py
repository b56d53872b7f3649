"""RELION STAR files (particles, 3D coordinates, generic blocks), through :mod:`starfile`.

Particle tables map to the columns of :data:`emforge.columns.PARTICLE_COLUMNS`; every other
STAR column is kept as an *extra* column under its STAR name (int64, float64 or str) and is
written back unchanged. Conventions (0-based image index, shifts in Å with RELION's sign, the
STAR file as pixel-size authority) are in ``docs/conventions.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..columns import COORDINATE3D_COLUMNS, PARTICLE_COLUMNS, STR
from ..errors import InputFileError, ParamError
from .mrc import atomic_target

__all__ = [
    "StarInfo",
    "read_star_blocks",
    "read_particles_star",
    "write_particles_star",
    "read_coordinates3d_star",
    "write_coordinates3d_star",
]

#: our column -> RELION label, for per-particle values (the order used when writing)
_PARTICLE_LABELS = {
    "micrograph": "rlnMicrographName",
    "coord_x": "rlnCoordinateX",
    "coord_y": "rlnCoordinateY",
    "rot": "rlnAngleRot",
    "tilt": "rlnAngleTilt",
    "psi": "rlnAnglePsi",
    "shift_x": "rlnOriginXAngst",
    "shift_y": "rlnOriginYAngst",
    "defocus_u": "rlnDefocusU",
    "defocus_v": "rlnDefocusV",
    "defocus_angle": "rlnDefocusAngle",
    "phase_shift": "rlnPhaseShift",
    "class_id": "rlnClassNumber",
    "subset": "rlnRandomSubset",
    "score": "rlnEmforgeScore",
}
#: our column -> RELION label, for values that live in data_optics in RELION 3.1
_OPTICS_LABELS = {
    "pixel_size": "rlnImagePixelSize",
    "voltage": "rlnVoltage",
    "cs": "rlnSphericalAberration",
    "amplitude_contrast": "rlnAmplitudeContrast",
}
#: RELION labels consumed on import without becoming extra columns
_CONSUMED = {
    "rlnImageName",
    "rlnOriginX",
    "rlnOriginY",
    "rlnPixelSize",
    "rlnDetectorPixelSize",
    "rlnMagnification",
}
_COORD_LABELS = {
    "x": "rlnCoordinateX",
    "y": "rlnCoordinateY",
    "z": "rlnCoordinateZ",
    "rot": "rlnAngleRot",
    "tilt": "rlnAngleTilt",
    "psi": "rlnAnglePsi",
    "score": "rlnEmforgeScore",
    "tag": "rlnEmforgeTag",
}
_STRING_LABELS = [
    "rlnImageName",
    "rlnMicrographName",
    "rlnTomoName",
    "rlnOpticsGroupName",
    "rlnImageOriginalName",
    "rlnTomoParticleName",
    "rlnEmforgeTag",
]
_FLOAT_FORMAT = "%.12g"


@dataclass(frozen=True)
class StarInfo:
    """Where a particle table came from.

    Attributes
    ----------
    path : str
        The STAR file.
    block : str
        Name of the particle data block ("particles", or "" for ``data_``).
    optics : list of dict
        The data_optics rows as read (empty for a pre-3.1 file).
    extra_columns : list of str
        STAR labels kept as extra columns.
    relion31 : bool
        True when the file had a data_optics block.
    """

    path: str
    block: str
    optics: list[dict] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    relion31: bool = True


# --------------------------------------------------------------------------- generic


def read_star_blocks(path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Read every data block of a STAR file.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict of str to pandas.DataFrame
        Block name (without ``data_``) to table; a key/value (non-loop) block becomes a
        one-row table. Known string labels (image, micrograph, tomogram names) stay strings.

    Raises
    ------
    InputFileError
        Missing, binary, unparsable or without any data block.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file not found" if not path.exists() else "is not a file")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if b"\x00" in head:
        raise InputFileError(path, "not a STAR file: binary content")
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=_STRING_LABELS)
    except Exception as exc:  # starfile raises many kinds; all mean "unreadable"
        # the parser's message may quote the file's text: give only its kind
        raise InputFileError(path, f"not a readable STAR file ({type(exc).__name__})") from None
    if not blocks:
        raise InputFileError(path, "not a STAR file: no data_ block found")
    return {
        str(name): (block if isinstance(block, pd.DataFrame) else pd.DataFrame([block]))
        for name, block in blocks.items()
    }


def _as_array(series: pd.Series) -> np.ndarray:
    """A STAR column as int64, float64 or an object array of str (missing -> '')."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_integer_dtype(series):
        if series.isna().any():
            return series.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        return series.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    values = series.astype(object).to_numpy()
    return np.array(["" if _missing(v) else str(v) for v in values], dtype=object)


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _typed(path: Path, label: str, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a STAR column to a standard column's dtype, with a one-line error if it cannot."""
    if dtype == STR:
        return np.array(["" if _missing(v) else str(v) for v in values], dtype=object)
    try:
        out = pd.to_numeric(pd.Series(values), errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        raise InputFileError(path, f"column {label} is not numeric") from None
    if dtype.kind == "i":
        if not np.all(np.isfinite(out)) or np.any(out != np.round(out)):
            raise InputFileError(path, f"column {label} must hold integers")
        return out.astype(np.int64)
    return out


def _pick_block(path: Path, blocks: dict[str, pd.DataFrame], label: str) -> str:
    if "particles" in blocks:
        return "particles"
    for name, df in blocks.items():
        if label in df.columns and name != "optics":
            return name
    loops = [n for n, df in blocks.items() if n != "optics" and len(df.columns) > 1]
    name = loops[0] if loops else next(iter(blocks))
    raise InputFileError(path, f"missing required column {label} in data_{name}")


# --------------------------------------------------------------------------- particles


def _image_names(path: Path, names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split 'N@stack' into 0-based index and resolved stack path (no '@': index 0)."""
    parts = pd.Series(names, dtype=object).str.partition("@")
    has_at = (parts[1] == "@").to_numpy()
    stacks = np.where(has_at, parts[2].to_numpy(), parts[0].to_numpy())
    index = np.zeros(len(names), dtype=np.int64)
    if has_at.any():
        numbers = pd.to_numeric(parts[0][has_at], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(numbers) | (numbers < 1) | (numbers != np.round(numbers))
        if bad.any():
            first = names[np.flatnonzero(has_at)[np.argmax(bad)]]
            raise InputFileError(path, f"bad rlnImageName {first!r}: expected N@file, N >= 1")
        index[has_at] = numbers.astype(np.int64) - 1
    folder = os.path.dirname(os.path.abspath(path))
    unique, inverse = np.unique(stacks.astype(str), return_inverse=True)
    resolved = np.array([_resolve(folder, p) for p in unique], dtype=object)
    return index, resolved[inverse]


def _resolve(folder: str, name: str) -> str:
    if os.path.isabs(name):
        return os.path.normpath(name)
    beside = os.path.normpath(os.path.join(folder, name))
    if os.path.exists(beside):
        return beside
    here = os.path.abspath(name)
    return here if os.path.exists(here) else beside


class _Lookup:
    """Per-particle values of a label: from the particle table, else broadcast from optics."""

    def __init__(self, path: Path, particles: pd.DataFrame, optics: pd.DataFrame | None):
        self.path, self.particles, self.group = path, particles, None
        self.optics = None
        if optics is None or len(particles) == 0:
            return
        if "rlnOpticsGroup" not in optics.columns:
            raise InputFileError(path, "missing required column rlnOpticsGroup in data_optics")
        if "rlnOpticsGroup" in particles.columns:
            self.group = _typed(
                path, "rlnOpticsGroup", particles["rlnOpticsGroup"].to_numpy(), np.dtype(np.int64)
            )
        elif len(optics) == 1:
            self.group = np.full(len(particles), int(optics["rlnOpticsGroup"].iloc[0]))
        else:
            raise InputFileError(path, "missing required column rlnOpticsGroup in data_particles")
        unknown = sorted(set(self.group.tolist()) - set(optics["rlnOpticsGroup"].tolist()))
        if unknown:
            raise InputFileError(path, f"rlnOpticsGroup {unknown[0]} is not in data_optics")
        _check_unique_groups(path, optics)
        self.optics = optics.set_index("rlnOpticsGroup")

    def __call__(self, label: str) -> np.ndarray | None:
        if label in self.particles.columns:
            return _as_array(self.particles[label])
        if self.optics is not None and label in self.optics.columns:
            return _as_array(self.optics[label].reindex(self.group).reset_index(drop=True))
        return None


def _check_unique_groups(path: Path, optics: pd.DataFrame) -> None:
    """Each rlnOpticsGroup is defined once in data_optics; else name both definitions."""
    groups = optics["rlnOpticsGroup"].tolist()
    for i, g in enumerate(groups):
        if g in groups[:i]:
            j = groups.index(g)
            names = optics.get("rlnOpticsGroupName")
            what = f" ({names.iloc[j]} and {names.iloc[i]})" if names is not None else ""
            raise InputFileError(
                path,
                f"rlnOpticsGroup {g} is defined twice in data_optics, rows {j + 1} and {i + 1}{what}",
            )


def _pixel_sizes(path: Path, get: _Lookup, n: int, override) -> np.ndarray:
    if override is not None:
        value = float(override)
        if not np.isfinite(value) or value <= 0:
            raise ParamError("pixel_size", f"must be a positive number of Å, got {override!r}")
        return np.full(n, value)
    px = None
    for label in ("rlnImagePixelSize", "rlnPixelSize"):
        if (px := get(label)) is not None:
            px = _typed(path, label, px, np.dtype(np.float64))
            break
    if px is None:
        det, mag = get("rlnDetectorPixelSize"), get("rlnMagnification")
        if det is None or mag is None:
            raise InputFileError(
                path,
                "no pixel size (rlnImagePixelSize, rlnPixelSize or "
                "rlnDetectorPixelSize + rlnMagnification); give pixel_size",
            )
        det = _typed(path, "rlnDetectorPixelSize", det, np.dtype(np.float64))
        mag = _typed(path, "rlnMagnification", mag, np.dtype(np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            px = det * 1e4 / mag  # detector pixel in µm, magnification -> Å
    if n and not np.all(px > 0):
        raise InputFileError(
            path, f"pixel size {px[~(px > 0)][0]} Å is not positive; give pixel_size"
        )
    return px


def read_particles_star(
    path: str | os.PathLike, *, pixel_size: float | None = None
) -> tuple[dict[str, np.ndarray], StarInfo]:
    """Read a RELION particle STAR file (3.1+ with data_optics, or pre-3.1 single block).

    Parameters
    ----------
    path : str or path-like
        The STAR file. ``rlnImageName`` is required.
    pixel_size : float, optional
        Pixel size in Å that overrides the file's (needed when the file has none).

    Returns
    -------
    columns : dict of str to numpy.ndarray
        Our particle columns present in the file (see ``emforge.columns.PARTICLE_COLUMNS``):
        always ``image_path`` (absolute), ``image_index`` (0-based) and ``pixel_size`` (Å);
        poses with shifts in Å (pre-3.1 ``rlnOriginX/Y`` pixels are multiplied by the pixel
        size); CTF values (optics-group values broadcast per particle); plus every other
        STAR column of the particle block under its STAR name.
    info : StarInfo
        The optics table, block name and the extra column names.
    """
    path = Path(path)
    blocks = read_star_blocks(path)
    name = _pick_block(path, blocks, "rlnImageName")
    particles = blocks[name]
    if "rlnImageName" not in particles.columns:
        raise InputFileError(path, f"missing required column rlnImageName in data_{name}")
    optics = blocks.get("optics") if name == "particles" else None
    get = _Lookup(path, particles, optics)
    n = len(particles)
    schema = {c.name: c for c in PARTICLE_COLUMNS}
    index, stacks = _image_names(path, _as_array(particles["rlnImageName"]))
    out: dict[str, np.ndarray] = {"image_path": stacks, "image_index": index}
    out["pixel_size"] = _pixel_sizes(path, get, n, pixel_size)
    for ours, label in {**_PARTICLE_LABELS, **_OPTICS_LABELS}.items():
        if ours != "pixel_size" and (values := get(label)) is not None:
            out[ours] = _typed(path, label, values, schema[ours].dtype)
    for axis in ("x", "y"):
        old = f"rlnOrigin{axis.upper()}"
        if f"shift_{axis}" not in out and old in particles.columns:
            pixels = _typed(path, old, _as_array(particles[old]), np.dtype(np.float64))
            out[f"shift_{axis}"] = pixels * out["pixel_size"]
    used = _CONSUMED | set(_PARTICLE_LABELS.values()) | set(_OPTICS_LABELS.values())
    extras = [c for c in particles.columns if c not in used]
    for label in extras:
        out[label] = _as_array(particles[label])
    optics_rows = [] if optics is None else optics.to_dict(orient="records")
    info = StarInfo(str(path), name, optics_rows, extras, relion31=optics is not None)
    return out, info


def _check_columns(columns: dict, required: tuple[str, ...]) -> tuple[dict[str, np.ndarray], int]:
    cols = {k: np.asarray(v) for k, v in columns.items()}
    for name in required:
        if name not in cols:
            raise ParamError("columns", f"missing required column {name}")
    lengths = {k: v.shape[0] if v.ndim else -1 for k, v in cols.items()}
    if len(set(lengths.values())) > 1 or min(lengths.values(), default=0) < 0:
        raise ParamError("columns", f"columns differ in length: {lengths}")
    return cols, next(iter(lengths.values()), 0)


def _worth_writing(values: np.ndarray, default) -> bool:
    """Skip standard columns that only hold their 'unset' default (NaN, 0 for ids, '')."""
    if values.dtype == object:
        return any(v != "" for v in values)
    if isinstance(default, float) and np.isnan(default):
        return bool(np.any(~np.isnan(values.astype(np.float64))))
    return True


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


def _optics_table(cols, n: int, image_size, optics) -> tuple[pd.DataFrame, np.ndarray]:
    """Group particles by (original group, pixel size, voltage, Cs, amplitude contrast)."""
    keys = pd.DataFrame({"orig": cols.get("rlnOpticsGroup", np.zeros(n, np.int64))})
    for ours, label in _OPTICS_LABELS.items():
        keys[label] = cols[ours].astype(np.float64) if ours in cols else np.nan
    groups = keys.drop_duplicates().sort_values(list(keys.columns)).reset_index(drop=True)
    groups["rlnOpticsGroup"] = np.arange(1, len(groups) + 1)
    number = keys.merge(groups, how="left", on=list(keys.columns))["rlnOpticsGroup"].to_numpy()
    originals = list(optics or [])
    rows = []
    for g in groups.itertuples(index=False):
        values = g._asdict()
        row = {"rlnOpticsGroup": values.pop("rlnOpticsGroup"), "rlnOpticsGroupName": ""}
        orig = values.pop("orig")
        match = next((o for o in originals if _same_group(o, orig, values)), {})
        row["rlnOpticsGroupName"] = (
            match.get("rlnOpticsGroupName") or f"opticsGroup{row['rlnOpticsGroup']}"
        )
        row.update(values)
        if image_size is not None:
            row["rlnImageSize"] = int(image_size)
        row.setdefault("rlnImageDimensionality", 2)
        row.update({k: v for k, v in match.items() if k not in row})
        rows.append(row)
    table = pd.DataFrame(rows)
    table = table[[c for c in table.columns if not table[c].isna().all()]]
    return table, number


def _same_group(row: dict, orig, values: dict) -> bool:
    if orig and row.get("rlnOpticsGroup") != orig:
        return False
    for label, value in values.items():
        have = row.get(label)
        if have is not None and not np.isnan(value) and not np.isclose(float(have), value):
            return False
    return True


def _frame(pairs: list[tuple[str, np.ndarray]]) -> pd.DataFrame:
    data = {}
    for label, values in pairs:
        if label not in data:
            data[label] = pd.Series(values.astype(object) if values.dtype == object else values)
    return pd.DataFrame(data)


def write_particles_star(
    path: str | os.PathLike,
    columns: dict[str, np.ndarray],
    *,
    image_size: int | None = None,
    optics: list[dict] | None = None,
) -> None:
    """Write particles as a RELION 3.1 STAR file (data_optics + data_particles), atomically.

    Parameters
    ----------
    path : str or path-like
        Target STAR file.
    columns : dict of str to numpy.ndarray
        Our particle columns (``image_path``, ``image_index``, ``pixel_size`` required) and
        extra columns, written back under their names. Standard columns holding only their
        unset default (all NaN, all '') are left out; ``subset``/``class_id`` all 0 too.
    image_size : int, optional
        Box size written as rlnImageSize in data_optics.
    optics : list of dict, optional
        Original data_optics rows (``StarInfo.optics``): a written group that matches one
        (same rlnOpticsGroup when given as an extra, same values) takes its name and its other
        fields (e.g. rlnMtfFileName, rlnMicrographOriginalPixelSize).

    Notes
    -----
    Optics groups are the unique (rlnOpticsGroup extra, pixel size, voltage, Cs, amplitude
    contrast) combinations, numbered from 1. Image paths inside the STAR file's folder are
    written relative to it; others as given. Image numbers are 1-based (``image_index + 1``).
    """
    path = Path(path)
    cols, n = _check_columns(columns, ("image_path", "image_index", "pixel_size"))
    optics_df, group = _optics_table(cols, n, image_size, optics)
    schema = {c.name: c for c in PARTICLE_COLUMNS}
    pairs = [("rlnImageName", np.array(_star_names(cols, path), dtype=object))]
    for ours, label in _PARTICLE_LABELS.items():
        if ours in cols and _worth_writing(cols[ours], schema[ours].default):
            if ours in ("subset", "class_id") and not np.any(cols[ours]):
                continue
            pairs.append((label, cols[ours].astype(schema[ours].dtype)))
    pairs.append(("rlnOpticsGroup", group.astype(np.int64)))
    pairs += [(k, v) for k, v in cols.items() if k not in schema]
    text = starfile.to_string(
        {"optics": optics_df, "particles": _frame(pairs)},
        float_format=_FLOAT_FORMAT,
        na_rep="nan",
    )
    _write_text(path, text)


def _write_text(path: Path, text: str) -> None:
    # starfile stamps the time in its first comment; a fixed line keeps equal data equal bytes
    if text.startswith("# Created by the starfile"):
        text = "# written by emforge" + text[text.index("\n") :]
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- 3D coordinates


def read_coordinates3d_star(
    path: str | os.PathLike, *, pixel_size: float | None = None
) -> dict[str, np.ndarray]:
    """Read 3D particle coordinates (RELION 4/5, Warp) from a STAR file.

    Parameters
    ----------
    path : str or path-like
        STAR file with rlnCoordinateX/Y/Z (in pixels) in data_particles (or the first block
        that has them).
    pixel_size : float, optional
        Pixel size (Å) the coordinates refer to; default: rlnImagePixelSize (or rlnPixelSize)
        of the file, else NaN.

    Returns
    -------
    dict of str to numpy.ndarray
        ``x, y, z`` (px), ``tomogram`` (rlnTomoName, else rlnMicrographName, else ''),
        ``pixel_size``, ``rot/tilt/psi`` when present, and every other STAR column of the
        block under its STAR name (e.g. rlnOriginXAngst, rlnTomoParticleName).
    """
    path = Path(path)
    blocks = read_star_blocks(path)
    name = _pick_block(path, blocks, "rlnCoordinateX")
    table = blocks[name]
    for label in ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"):
        if label not in table.columns:
            raise InputFileError(path, f"missing required column {label} in data_{name}")
    get = _Lookup(path, table, blocks.get("optics") if name == "particles" else None)
    schema = {c.name: c for c in COORDINATE3D_COLUMNS}
    out: dict[str, np.ndarray] = {}
    for ours, label in _COORD_LABELS.items():
        if (values := get(label)) is not None:
            out[ours] = _typed(path, label, values, schema[ours].dtype)
    tomo = next((lb for lb in ("rlnTomoName", "rlnMicrographName") if lb in table.columns), None)
    n = len(table)
    out["tomogram"] = _as_array(table[tomo]) if tomo else np.full(n, "", dtype=object)
    try:
        out["pixel_size"] = _pixel_sizes(path, get, n, pixel_size)
    except InputFileError:
        out["pixel_size"] = np.full(n, np.nan)
    used = set(_COORD_LABELS.values()) | {tomo, "rlnImagePixelSize", "rlnPixelSize"}
    for label in table.columns:
        if label not in used:
            out[label] = _as_array(table[label])
    return out


def write_coordinates3d_star(path: str | os.PathLike, columns: dict[str, np.ndarray]) -> None:
    """Write 3D coordinates as a STAR file (data_optics when pixel sizes are known), atomically.

    ``x, y, z`` are required (pixels); ``tomogram`` is written as rlnTomoName, angles as
    rlnAngleRot/Tilt/Psi, ``pixel_size`` as rlnImagePixelSize of one optics group per value;
    extra columns under their names.
    """
    path = Path(path)
    cols, n = _check_columns(columns, ("x", "y", "z"))
    schema = {c.name: c for c in COORDINATE3D_COLUMNS}
    pairs = []
    if "tomogram" in cols and _worth_writing(cols["tomogram"], ""):
        pairs.append(("rlnTomoName", cols["tomogram"].astype(object)))
    for ours, label in _COORD_LABELS.items():
        if ours in cols and _worth_writing(cols[ours], schema[ours].default):
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
    pairs += [(k, v) for k, v in cols.items() if k not in schema]
    blocks["particles"] = _frame(pairs)
    text = starfile.to_string(blocks, float_format=_FLOAT_FORMAT, na_rep="nan")
    _write_text(path, text)
