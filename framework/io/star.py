"""RELION STAR files (particles, 3D coordinates, generic blocks), through :mod:`starfile`.

Particle tables map to the columns of :data:`emforge.columns.PARTICLE_COLUMNS`; every other
STAR column is kept as an *extra* column under its STAR name (int64, float64 or str; an
emforge-only ``rlnEmforgeMyNote`` as ``my_note``) and is written back unchanged. The writers
are in ``_star_writer.py``. Conventions (0-based image index, shifts in Å with RELION's sign,
the STAR file as pixel-size authority) are in ``docs/conventions.md``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..columns import COORDINATE3D_COLUMNS, PARTICLE_COLUMNS, STR
from ..errors import InputFileError, ParamError

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
    labels : list of str
        The labels of the particle block, in file order.
    """

    path: str
    block: str
    optics: list[dict] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    relion31: bool = True
    labels: list[str] = field(default_factory=list)

    def as_attrs(self) -> dict:
        """What a set keeps of its STAR source (JSON-safe): optics rows and particle labels.

        :func:`write_particles_star` takes them back (``optics=``, ``labels=``).
        """
        rows = [{str(k): _plain(v) for k, v in row.items()} for row in self.optics]
        return {"optics": rows, "labels": list(self.labels)}


def _plain(value):
    """A STAR cell as a JSON-safe Python value (NaN and missing -> None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if _missing(value):
        return None
    return value if isinstance(value, int | float | str) else str(value)


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
    extras = []
    for label in particles.columns:
        if label not in used:
            ours = extra_name(label)
            extras.append(label if ours in schema or ours in out else ours)
            out[extras[-1]] = _as_array(particles[label])
    optics_rows = [] if optics is None else optics.to_dict(orient="records")
    labels = [str(c) for c in particles.columns]
    info = StarInfo(str(path), name, optics_rows, extras, optics is not None, labels)
    return out, info


def extra_name(label: str) -> str:
    """The column name of an extra STAR label: ``rlnEmforgeMyNote`` -> ``my_note``, others
    unchanged (the inverse of :func:`star_label`)."""
    rest = label.removeprefix("rlnEmforge")
    if rest == label or not rest:
        return label
    return re.sub(r"(?<!^)(?=[A-Z])", "_", rest).lower()


def star_label(name: str) -> str:
    """The STAR label of an extra column: RELION labels (``rln...``) as they are, any other
    name as an emforge-only label, ``my_note`` -> ``rlnEmforgeMyNote``."""
    if name.startswith("rln"):
        return name
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    return "rlnEmforge" + "".join(p[:1].upper() + p[1:] for p in parts)


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
            ours = extra_name(label)
            out[label if ours in schema or ours in out else ours] = _as_array(table[label])
    return out


# the writers live in their own module; they are part of this module's API
from ._star_writer import write_coordinates3d_star, write_particles_star  # noqa: E402
