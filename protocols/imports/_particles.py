"""Import protocols for particle stacks, tomograms and 3D coordinates."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emforge.engine import Output, Protocol, ProtocolParams, SourcePath, Step, StepContext, param
from emforge.errors import EmforgeError, InputFileError, ParamError

from ._protocols import (
    _PX_HELP,
    _check_path,
    _ImportMany,
    _paths,
    import_many_step,
)

__all__ = ["ImportParticles", "ImportTomograms", "ImportTiltSeries", "ImportCoordinates3D"]


def _particle_columns(
    stack: str, star: str, pixel_size: float | None, *, star_attrs: dict | None = None
) -> dict[str, np.ndarray]:
    """The set's columns; ``star_attrs`` (a dict) receives what export needs of the STAR file."""
    from emforge.io import read_info, read_particles_star

    if star:
        cols, info = read_particles_star(star, pixel_size=pixel_size)
        if star_attrs is not None:
            star_attrs.update(info.as_attrs())
        if stack:  # the stack given explicitly replaces the paths written in the STAR file
            cols["image_path"] = np.full(
                len(cols["image_index"]), os.path.abspath(stack), dtype=object
            )
        return cols
    info = read_info(stack)
    px = pixel_size or info.pixel_size
    if px <= 0:
        raise ParamError("pixel_size", f"{stack}: the header says pixel size 0; set pixel_size")
    n = info.shape[0]
    return {
        "image_path": np.full(n, os.path.abspath(stack), dtype=object),
        "image_index": np.arange(n, dtype=np.int64),
        "pixel_size": np.full(n, px),
    }


def _check_images(cols: dict[str, np.ndarray]) -> tuple[int, int]:
    """Every referenced stack exists and holds the referenced index; returns the box (y, x)."""
    from emforge.io import read_info

    box = None
    for path in np.unique(cols["image_path"].astype(str)):
        if not os.path.isfile(path):
            raise InputFileError(path, "particle stack referenced by the STAR file does not exist")
        info = read_info(path)
        top = int(cols["image_index"][cols["image_path"] == path].max())
        if top >= info.shape[0]:
            raise InputFileError(
                path, f"holds {info.shape[0]} images but image {top + 1} is referenced"
            )
        this = tuple(info.shape[1:])
        if box is not None and this != box:
            raise InputFileError(
                path, f"images are {this[1]}x{this[0]} px, other stacks {box[1]}x{box[0]}"
            )
        box = this
    assert box is not None
    return box  # type: ignore[return-value]


def import_particles_step(
    ctx: StepContext, *, stack: str, star: str, pixel_size: float | None
) -> dict:
    star_attrs: dict = {}
    cols = _particle_columns(stack, star, pixel_size, star_attrs=star_attrs)
    box = _check_images(cols)
    attrs = {"box": list(box), "pixel_size": float(np.median(cols["pixel_size"]))}
    attrs["source"] = star or stack
    if star_attrs:  # the optics table and labels, for a RELION-ready export
        attrs["star"] = star_attrs
    ctx.output_set("particles", "SetOfParticles", cols, attrs=attrs)
    return {"count": int(len(cols["image_index"])), "box": list(box)}


class ImportParticles(Protocol):
    id = "import.particles"
    version = "1"
    label = "Import particles"
    help = "Import a particle stack (MRC), optionally with a RELION STAR file carrying poses, CTF and coordinates."

    class Params(ProtocolParams):
        stack: SourcePath = param(
            "",
            "Particle stack (.mrcs/.mrc); optional when the STAR file names the images",
            section="Input",
        )
        star: SourcePath = param(
            "", "RELION STAR file with the particles' metadata (optional)", section="Input"
        )
        pixel_size: float | None = param(
            None,
            "Pixel size; absent: from the STAR file, else the stack header",
            unit="Å",
            section="Input",
            gt=0,
        )

    outputs = {"particles": Output("SetOfParticles", "the particles with their metadata")}

    def external_files(self) -> list[str]:
        return [p for p in (self.params.stack, self.params.star) if p and os.path.isfile(p)]

    def validate(self) -> list[str]:
        p = self.params
        problems: list[str] = []
        if not p.stack and not p.star:
            problems.append("param 'stack': give a particle stack, a STAR file, or both")
            return problems
        if p.stack:
            _check_path("stack", p.stack, problems)
        if p.star:
            _check_path("star", p.star, problems)
        if problems:
            return problems
        try:
            _check_images(_particle_columns(p.stack, p.star, p.pixel_size))
        except EmforgeError as exc:
            problems.append(str(exc))
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        return [
            Step(
                "import",
                import_particles_step,
                outputs=["particles"],
                args=dict(
                    stack=os.path.abspath(p.stack) if p.stack else "",
                    star=os.path.abspath(p.star) if p.star else "",
                    pixel_size=p.pixel_size,
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = results.get("import", {})
        return f"{r.get('count')} particles, box {r.get('box')}"


class ImportTomograms(_ImportMany):
    id = "import.tomograms"
    version = "1"
    label = "Import tomograms"
    help = "Import tomograms (MRC, TIFF or EM; a glob pattern for several) as a SetOfTomograms."
    item_kind = "Tomogram"
    output = "tomograms"

    class Params(ProtocolParams):
        path: SourcePath = param("", "Tomogram file or glob pattern", section="Input")
        pixel_size: float | None = param(
            None,
            _PX_HELP + "; TIFF files without resolution tags have none",
            unit="Å",
            section="Input",
            gt=0,
        )
        binning: float = param(
            1.0,
            "Tomogram voxel size / tilt-series pixel size (4 for a bin-4 tomogram)",
            section="Tilt series",
            gt=0,
        )
        tilt_series: str = param(
            "",
            "Tilt-series name of every tomogram; 'stem': each file's name before any '__' "
            "or '.' (EMAN2's base name); empty: not linked",
            section="Tilt series",
        )

    outputs = {"tomograms": Output("SetOfTomograms", "the imported tomograms")}

    def steps(self) -> list[Step]:
        p = self.params
        paths = _paths(p.path)
        if p.tilt_series == "stem":
            names = [Path(f).name.split(".")[0].split("__")[0] for f in paths]
        else:
            names = [p.tilt_series] * len(paths)
        extra = {
            "binning": [float(p.binning)] * len(paths),
            "tilt_series": np.array(names, dtype=object),
        }
        args = dict(paths=paths, pixel_size=p.pixel_size, kind=self.item_kind, extra=extra)
        return [Step("import", import_many_step, outputs=[self.output], args=args)]


def import_tiltseries_step(ctx: StepContext, *, path: str, fmt: str, name: str) -> dict:
    from emforge.io.tiltseries import read_tiltseries

    cols = read_tiltseries(path, fmt)
    if name:
        cols["tilt_series"] = np.full(len(cols["tilt_index"]), name, dtype=object)
    for col in ("shift_x", "shift_y"):  # Warp offsets are Å already; others have none
        cols.setdefault(col, np.zeros(len(cols["tilt_index"])))
    ctx.output_set("tiltseries", "SetOfTiltSeries", cols, attrs={"source": path, "format": fmt})
    series = sorted(set(cols["tilt_series"].tolist()))
    return {"tilts": len(cols["tilt_index"]), "series": series}


class ImportTiltSeries(Protocol):
    id = "import.tiltseries"
    version = "1"
    label = "Import tilt-series geometry"
    help = (
        "Import per-tilt angles, dose and CTF from IMOD .tlt, Warp .xml, SerialEM .mdoc or a "
        "RELION 5 tomograms.star as a SetOfTiltSeries (one row per tilt image)."
    )

    class Params(ProtocolParams):
        path: SourcePath = param(
            "", "Tilt-series metadata file (.tlt, .xml, .mdoc, .star)", section="Input"
        )
        format: Literal["auto", "tlt", "xml", "mdoc", "star"] = param(
            "auto", "File format; auto guesses from the extension", section="Input"
        )
        name: str = param(
            "", "Tilt-series name (default: from the file, or the file name)", section="Input"
        )

    outputs = {"tiltseries": Output("SetOfTiltSeries", "the tilts, grouped by tilt_series")}

    def external_files(self) -> list[str]:
        return _paths(self.params.path)[:1]

    def validate(self) -> list[str]:
        from emforge.io.tiltseries import read_tiltseries

        problems: list[str] = []
        found = _check_path("path", self.params.path, problems)
        if found:
            try:
                read_tiltseries(found[0], self.params.format)
            except EmforgeError as exc:
                problems.append(str(exc))
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        args = dict(path=_paths(p.path)[0], fmt=p.format, name=p.name)
        return [Step("import", import_tiltseries_step, outputs=["tiltseries"], args=args)]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = results.get("import", {})
        return f"{r.get('tilts')} tilts in {len(r.get('series', []))} tilt series"


def _read_text_coords(path: str) -> dict[str, np.ndarray]:
    try:
        data = np.loadtxt(path, ndmin=2, dtype=np.float64)
    except ValueError as exc:  # numpy's message quotes the text: name only the position
        where = re.search(r"row (\d+), column (\d+)", str(exc))
        at = f" (line {int(where[1]) + 1}, column {where[2]})" if where else ""
        raise InputFileError(path, f"not a table of numbers{at}") from None
    if data.shape[1] < 3:
        raise InputFileError(path, f"needs at least 3 columns (x y z), found {data.shape[1]}")
    return {"x": data[:, 0], "y": data[:, 1], "z": data[:, 2]}


def _read_eman2_info(path: str, pixel_size: float | None) -> tuple[dict[str, np.ndarray], dict]:
    """EMAN2 ``info/<tomogram>_info.json`` through :mod:`emforge.io.eman2_info` (one reader)."""
    from emforge.io.eman2_info import info_to_columns, read_info

    name = Path(path).name.removesuffix(".json").removesuffix("_info")
    return info_to_columns(read_info(path), path, tomogram=name, pixel_size=pixel_size)


def _read_centred_star(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """RELION 5 particles with only ``rlnCenteredCoordinate{X,Y,Z}Angst`` (Å from the tomogram
    centre): the ``centred`` frame with ``pixel_size`` 1 Å (see docs/conventions.md)."""
    from emforge.io.star import read_star_blocks

    blocks = read_star_blocks(path)
    labels = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]
    table = next((t for t in blocks.values() if all(lb in t for lb in labels)), None)
    if table is None:
        raise InputFileError(
            path, "has neither rlnCoordinateX/Y/Z nor rlnCenteredCoordinateX/Y/ZAngst"
        )
    n = len(table)
    cols = {k: table[lb].to_numpy(float) for k, lb in zip("xyz", labels, strict=True)}
    cols["pixel_size"] = np.ones(n)
    if "rlnTomoName" in table:
        cols["tomogram"] = table["rlnTomoName"].astype(str).to_numpy(object)
    angles = [f"rlnAngle{a}" for a in ("Rot", "Tilt", "Psi")]
    if all(a in table for a in angles):
        for k, a in zip(("rot", "tilt", "psi"), angles, strict=True):
            cols[k] = table[a].to_numpy(float)
        cols["has_orientation"] = np.ones(n, dtype=np.int64)
    return cols, {"frame": "centred"}


def _read_coords(
    path: str, fmt: str, pixel_size: float | None
) -> tuple[dict[str, np.ndarray], dict]:
    from emforge.io import read_coordinates3d_star

    if fmt == "star":
        try:
            cols = read_coordinates3d_star(path, pixel_size=pixel_size)
        except InputFileError as exc:
            if "rlnCoordinateX" not in str(exc):
                raise
            return _read_centred_star(path)
        if "rot" in cols:
            cols["has_orientation"] = np.ones(len(cols["x"]), dtype=np.int64)
        return cols, {}
    if fmt == "eman2":
        return _read_eman2_info(path, pixel_size)
    return _read_text_coords(path), {}


def import_coords_step(
    ctx: StepContext, *, path: str, tomogram: str, pixel_size: float | None, fmt: str
) -> dict:
    cols, attrs = _read_coords(path, fmt, pixel_size)
    n = len(cols["x"])
    if tomogram or "tomogram" not in cols:
        name = tomogram or (Path(path).stem.removesuffix("_info"))
        cols["tomogram"] = np.full(n, name, dtype=object)
    if attrs.get("frame") != "centred" and (pixel_size is not None or "pixel_size" not in cols):
        cols["pixel_size"] = np.full(n, np.nan if pixel_size is None else pixel_size)
    if "method" not in cols:
        cols["method"] = np.full(n, fmt, dtype=object)
    ctx.output_set("coordinates", "SetOfCoordinates3D", cols, attrs={"source": path, **attrs})
    tomos = sorted(set(cols["tomogram"].tolist()))
    return {"count": n, "tomograms": tomos}


class ImportCoordinates3D(Protocol):
    id = "import.coordinates3d"
    version = "1"
    label = "Import 3D coordinates"
    help = "Import 3D particle coordinates from a RELION/Warp STAR file, a plain text x y z table or EMAN2 info JSON."

    class Params(ProtocolParams):
        path: SourcePath = param(
            "", "Coordinates file (.star, .txt/.coords, or EMAN2 info/*_info.json)", section="Input"
        )
        format: Literal["auto", "star", "text", "eman2"] = param(
            "auto", "File format; auto guesses from the extension", section="Input"
        )
        tomogram: str = param(
            "",
            "Tomogram name for every coordinate (default: from the file, or the file name)",
            section="Input",
        )
        pixel_size: float | None = param(
            None,
            "Pixel size the coordinates refer to; absent: from the file if it says",
            unit="Å",
            section="Input",
            gt=0,
        )

    outputs = {"coordinates": Output("SetOfCoordinates3D", "the coordinates")}

    def _format(self) -> str:
        f = self.params.format
        if f != "auto":
            return f
        ext = Path(self.params.path).suffix.lower()
        return {".star": "star", ".json": "eman2"}.get(ext, "text")

    def external_files(self) -> list[str]:
        return _paths(self.params.path)[:1]

    def validate(self) -> list[str]:
        problems: list[str] = []
        found = _check_path("path", self.params.path, problems)
        if found:  # coordinate files are small: read them now so a bad one is refused up front
            try:
                _read_coords(found[0], self._format(), self.params.pixel_size)
            except EmforgeError as exc:
                problems.append(str(exc))
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        return [
            Step(
                "import",
                import_coords_step,
                outputs=["coordinates"],
                args=dict(
                    path=_paths(p.path)[0],
                    tomogram=p.tomogram,
                    pixel_size=p.pixel_size,
                    fmt=self._format(),
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = results.get("import", {})
        return f"{r.get('count')} coordinates in {len(r.get('tomograms', []))} tomogram(s)"
