"""Import protocols: bring maps, masks, particles, tomograms and 3D coordinates into a project.

Maps, masks and tomograms are rewritten into the run's ``extra/`` folder as plain float32 MRC
files in (z, y, x) order with the pixel size and origin in the header, whatever the source
format (MRC with any axis order, TIFF, EM): every later protocol then reads one simple kind of
file. Particle stacks are referenced where they are (they can be large); their metadata goes
into the project database as a SetOfParticles.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from emforge.engine import Output, Protocol, ProtocolParams, SourcePath, Step, StepContext, param
from emforge.errors import ParamError
from emforge.objects import Volume, VolumeMask

__all__ = ["ImportVolume", "ImportVolumes", "ImportMask"]

_PX_HELP = "Pixel size; absent: from the file header (required when the header says 0)"


def _paths(pattern: str) -> list[str]:
    matches = sorted(glob.glob(os.path.expanduser(pattern)))
    return [os.path.abspath(m) for m in matches]


def _check_path(name: str, pattern: str, problems: list[str], *, many: bool = False) -> list[str]:
    if not pattern:
        problems.append(f"param '{name}': give a file" + (" or a glob pattern" if many else ""))
        return []
    found = _paths(pattern)
    if not found:
        problems.append(f"param '{name}': {pattern}: no such file")
    elif len(found) > 1 and not many:
        problems.append(f"param '{name}': {pattern} matches {len(found)} files; give one file")
    return found


_MRC_SUFFIXES = (".mrc", ".map", ".mrcs", ".rec", ".st", ".ali")


def _geometry_problem(path: str, info) -> str | None:
    """Why a map's geometry cannot be imported (non-orthogonal cell, anisotropic voxels)."""
    if not info.orthogonal:
        angles = ", ".join(f"{a:.4g}°" for a in info.cell_angles)
        return (
            f"{path}: non-orthogonal cell (alpha, beta, gamma = {angles}); emforge reads maps "
            "on orthogonal axes only (resample it onto a 90° grid first)"
        )
    vz, vy, vx = info.voxel_size
    spread = max(info.voxel_size) - min(info.voxel_size)
    if min(info.voxel_size) > 0 and spread > 1e-4 * max(info.voxel_size):
        return (
            f"{path}: anisotropic voxels (z, y, x) = ({vz:g}, {vy:g}, {vx:g}) Å; emforge's "
            "protocols need cubic voxels (resample the map, or set pixel_size if the header is wrong)"
        )
    return None


def _load(path: str, pixel_size: float | None) -> tuple[np.ndarray, tuple, tuple, str]:
    """Read any supported image file: (data, voxel (z, y, x) Å, frame (z, y, x) Å, origin field).

    Checks the pixel size is known and positive and, for MRC files, that the cell is
    orthogonal with cubic voxels. The frame and the field it came in follow
    :class:`emforge.io.MrcInfo` (``"none"`` for TIFF and EM files).
    """
    from emforge.errors import InputFileError
    from emforge.io import read_image_file, read_volume

    override = pixel_size
    field = "none"
    if Path(path).suffix.lower() in _MRC_SUFFIXES:
        data, info = read_volume(path, pixel_size=override)
        problem = _geometry_problem(path, info)
        if problem:
            raise InputFileError(path, problem.removeprefix(f"{path}: "))
        voxel = info.voxel_size if min(info.voxel_size[1:]) > 0 else None
        origin, field = info.origin, info.origin_field
    else:
        data, voxel, origin = read_image_file(path, pixel_size=override)
    if voxel is None or min(voxel) <= 0:
        raise ParamError(
            "pixel_size", f"{path}: the file gives no pixel size (0 in the header); set pixel_size"
        )
    return data, voxel, origin, field


def _header_problems(
    path: str,
    pixel_size: float | None,
    problems: list[str],
    *,
    name: str = "path",
    stack_as_map: bool = True,
) -> tuple | None:
    """Validate a map file's header (size, pixel size; an MRC particle stack is refused
    unless ``stack_as_map``)."""
    from emforge.errors import EmforgeError
    from emforge.io import read_image_file, read_info

    try:
        if Path(path).suffix.lower() in _MRC_SUFFIXES:
            info = read_info(path)
            if pixel_size is None and min(info.voxel_size) <= 0:
                problems.append(
                    f"param 'pixel_size': {path}: the header says pixel size 0; set pixel_size"
                )
            problem = _geometry_problem(path, info)
            if problem and not (pixel_size is not None and info.orthogonal):  # pixel_size overrides
                problems.append(f"param '{name}': {problem}")
            if not stack_as_map and Path(path).suffix.lower() == ".mrcs":
                problems.append(
                    f"param '{name}': {path}: is a particle stack (.mrcs), not a map; "
                    "set stack_as_map=true to import its images as one 3D map"
                )
            return info.shape
        data, voxel, _ = read_image_file(path, pixel_size=pixel_size)
        if voxel is None:
            problems.append(
                f"param 'pixel_size': {path}: the file gives no pixel size; set pixel_size"
            )
        return data.shape
    except EmforgeError as exc:
        problems.append(str(exc))
        return None


def _frame_problems(name: str, path: str, half: str, pixel_size: float | None) -> list[str]:
    """A half map must sit where its map sits (same frame within 0.01 Å)."""
    from emforge.io import read_info

    frames = []
    for f in (path, half):
        if Path(f).suffix.lower() not in _MRC_SUFFIXES:
            return []  # TIFF/EM files carry no frame
        info = read_info(f)
        if pixel_size is not None and info.origin_field == "nstart":  # NSTART moves with the voxel
            frames.append(tuple(n * pixel_size for n in info.nstart))
        else:
            frames.append(info.origin)
    if all(abs(a - b) <= 0.01 for a, b in zip(*frames, strict=True)):
        return []
    show = [", ".join(f"{v:g}" for v in fr) for fr in frames]
    return [f"param '{name}': {half}: frame ({show[1]}) Å differs from the map's ({show[0]}) Å"]


def _write_map(
    ctx: StepContext, name: str, data: np.ndarray, voxel: tuple, origin: tuple, field: str
) -> str:
    """Write the project copy with the source's frame, in the header field(s) it came in."""
    from emforge.io import write_volume

    target = ctx.path(name)
    write_volume(
        target,
        data.astype(np.float32, copy=False),
        voxel_size=voxel,
        origin=origin,
        origin_field=field,
    )
    return str(target)


def value_problems(path: str) -> list[str]:
    """A map must hold finite values, not all zeros (one line naming the file and the count)."""
    from emforge.errors import EmforgeError
    from emforge.io import read_image_file

    try:
        data = read_image_file(path)[0]
    except EmforgeError as exc:
        return [str(exc)]
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        return [f"param 'path': {path}: contains {bad} NaN/infinite values of {data.size}"]
    if not np.any(data):
        return [f"param 'path': {path}: is all zeros"]
    return []


def import_volume_step(
    ctx: StepContext, *, path: str, pixel_size: float | None, half1: str, half2: str
) -> dict:
    data, voxel, origin, field = _load(path, pixel_size)
    out = _write_map(ctx, "volume.mrc", data, voxel, origin, field)
    halves = []
    for i, h in enumerate((half1, half2), start=1):
        if h:
            hd, hv, ho, hf = _load(h, pixel_size or voxel[2])
            if hd.shape != data.shape:
                raise ParamError(
                    f"half{i}", f"{h}: shape {hd.shape} differs from the map's {data.shape}"
                )
            halves.append(_write_map(ctx, f"half{i}.mrc", hd, hv, ho, hf))
    vol = Volume(
        out,
        float(voxel[2]),
        tuple(data.shape),
        tuple(map(float, origin)),
        half1=halves[0] if halves else None,
        half2=halves[1] if len(halves) > 1 else None,
        voxel_size=tuple(map(float, voxel)),
        source=path,
        origin_field=field,
    )
    ctx.output("volume", vol, label=Path(path).name)
    return {
        "shape": list(data.shape),
        "pixel_size": voxel[2],
        "min": float(data.min()),
        "max": float(data.max()),
    }


class _VolumeParams(ProtocolParams):
    path: SourcePath = param("", "Map file (MRC/CCP4, TIFF or EM)", section="Input")
    pixel_size: float | None = param(None, _PX_HELP, unit="Å", section="Input", gt=0)
    stack_as_map: bool = param(
        False,
        "Import an MRC particle stack (.mrcs) as one 3D map (refused otherwise)",
        section="Input",
        level="advanced",
    )


class ImportVolume(Protocol):
    id = "import.volume"
    version = "1"
    label = "Import a map"
    help = "Import one 3D map (optionally with its two half maps) as a Volume."

    class Params(_VolumeParams):
        half1: SourcePath = param("", "First half map (optional)", section="Half maps")
        half2: SourcePath = param("", "Second half map (optional)", section="Half maps")

    outputs = {"volume": Output("Volume", "the imported map (float32 MRC in the project)")}

    def external_files(self) -> list[str]:
        return [
            p
            for p in (self.params.path, self.params.half1, self.params.half2)
            if p and os.path.isfile(p)
        ]

    def validate(self) -> list[str]:
        problems: list[str] = []
        p = self.params
        found = _check_path("path", p.path, problems)
        shape = (
            _header_problems(found[0], p.pixel_size, problems, stack_as_map=p.stack_as_map)
            if found
            else None
        )
        if bool(p.half1) != bool(p.half2):
            problems.append("param 'half1'/'half2': give both half maps or neither")
        for name in ("half1", "half2"):
            value = getattr(p, name)
            if value:
                hfound = _check_path(name, value, problems)
                hshape = (
                    _header_problems(hfound[0], p.pixel_size, problems, name=name)
                    if hfound
                    else None
                )
                if hshape is not None:
                    problems += [
                        line.replace("param 'path'", f"param '{name}'")
                        for line in value_problems(hfound[0])
                    ]
                if shape and hshape and tuple(hshape) != tuple(shape):
                    problems.append(
                        f"param '{name}': {value}: shape {tuple(hshape)} differs from the map's {tuple(shape)}"
                    )
                elif shape and hshape:
                    problems += _frame_problems(name, found[0], hfound[0], p.pixel_size)
        if shape is not None and len(shape) == 3 and shape[0] == 1:
            problems.append(f"param 'path': {p.path}: is a 2D image, not a 3D map")
        elif shape is not None:
            problems += value_problems(found[0])
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        return [
            Step(
                "import",
                import_volume_step,
                outputs=["volume"],
                args=dict(
                    path=_paths(p.path)[0],
                    pixel_size=p.pixel_size,
                    half1=_paths(p.half1)[0] if p.half1 else "",
                    half2=_paths(p.half2)[0] if p.half2 else "",
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        v = outputs["volume"]
        return f"map {v.shape[2]}x{v.shape[1]}x{v.shape[0]} at {v.pixel_size:.4g} Å/px" + (
            " with half maps" if v.has_halves else ""
        )


def import_many_step(
    ctx: StepContext,
    *,
    paths: list[str],
    pixel_size: float | None,
    kind: str,
    extra: dict[str, list] | None = None,
) -> dict:
    cols: dict[str, list] = {"image_path": [], "pixel_size": []}
    for i, path in enumerate(paths):
        data, voxel, origin, field = _load(path, pixel_size)
        cols["image_path"].append(
            _write_map(ctx, f"{kind.lower()}_{i + 1:04d}.mrc", data, voxel, origin, field)
        )
        cols["pixel_size"].append(voxel[2])
        ctx.progress((i + 1) / len(paths), Path(path).name)
    ctx.output_set(
        "volumes" if kind == "Volume" else "tomograms",
        f"SetOf{kind}s",
        {
            "image_path": np.array(cols["image_path"], dtype=object),
            "pixel_size": np.array(cols["pixel_size"]),
            "image_index": np.zeros(len(paths), np.int64),
            **{k: np.asarray(v) for k, v in (extra or {}).items()},
        },
        attrs={"sources": paths},
    )
    return {"count": len(paths)}


class _ImportMany(Protocol):
    """Every file matching a glob pattern, imported as a set of ``item_kind`` items."""

    item_kind: ClassVar[str] = "Volume"
    output: ClassVar[str] = "volumes"

    def external_files(self) -> list[str]:
        return _paths(self.params.path)

    def validate(self) -> list[str]:
        problems: list[str] = []
        stack_ok = getattr(self.params, "stack_as_map", True)
        for f in _check_path("path", self.params.path, problems, many=True):
            if _header_problems(f, self.params.pixel_size, problems, stack_as_map=stack_ok):
                problems += value_problems(f)
        return problems

    def steps(self) -> list[Step]:
        args = dict(
            paths=_paths(self.params.path), pixel_size=self.params.pixel_size, kind=self.item_kind
        )
        return [Step("import", import_many_step, outputs=[self.output], args=args)]


class ImportVolumes(_ImportMany):
    id = "import.volumes"
    version = "1"
    label = "Import several maps"
    help = "Import every map matching a glob pattern as a SetOfVolumes."
    Params = _VolumeParams
    outputs = {"volumes": Output("SetOfVolumes", "the imported maps")}


def _mask_value_problems(path: str) -> list[str]:
    from emforge.io import read_image_file

    bad = value_problems(path)
    if bad:
        return bad
    data = read_image_file(path)[0]
    lo, hi = float(data.min()), float(data.max())
    if lo < -1e-6 or hi > 1 + 1e-6 or not np.isfinite([lo, hi]).all():
        return [f"param 'path': {path}: mask values must lie in [0, 1], found {lo:.4g} … {hi:.4g}"]
    return []


def import_mask_step(ctx: StepContext, *, path: str, pixel_size: float | None) -> dict:
    data, voxel, origin, field = _load(path, pixel_size)
    lo, hi = float(data.min()), float(data.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ParamError(
            "path", f"{path}: mask values must lie in [0, 1], found {lo:.4g} … {hi:.4g}"
        )
    data = np.clip(data, 0.0, 1.0)
    soft = bool(np.any((data > 1e-6) & (data < 1 - 1e-6)))
    out = _write_map(ctx, "mask.mrc", data, voxel, origin, field)
    ctx.output(
        "mask",
        VolumeMask(
            out,
            float(voxel[2]),
            tuple(data.shape),
            tuple(map(float, origin)),
            voxel_size=tuple(map(float, voxel)),
            soft=soft,
            source=path,
            origin_field=field,
        ),
        label=Path(path).name,
    )
    return {"inside_fraction": float(data.mean()), "soft": soft}


class ImportMask(Protocol):
    id = "import.mask"
    version = "1"
    label = "Import a 3D mask"
    help = "Import a 3D mask (values in [0, 1], binary or soft) as a VolumeMask."
    Params = _VolumeParams
    outputs = {"mask": Output("VolumeMask", "the imported mask")}

    def external_files(self) -> list[str]:
        return _paths(self.params.path)[:1]

    def validate(self) -> list[str]:
        problems: list[str] = []
        found = _check_path("path", self.params.path, problems)
        stack_ok = self.params.stack_as_map
        if found and _header_problems(
            found[0], self.params.pixel_size, problems, stack_as_map=stack_ok
        ):
            problems += _mask_value_problems(found[0])
        return problems

    def steps(self) -> list[Step]:
        return [
            Step(
                "import",
                import_mask_step,
                outputs=["mask"],
                args=dict(path=_paths(self.params.path)[0], pixel_size=self.params.pixel_size),
            )
        ]
