"""subtomo.extract: crop subtomograms out of tomograms at 3D coordinates (path a of issue 13:
straight from the tomogram, as EMAN2's legacy e2spt_boxer and RELION/Warp users do).

Storage: one MRC file per tomogram, ``extra/<tomogram>.mrcs``, a stack of ``n × m`` sections of
``m × m``; subtomogram ``image_index = i`` is sections ``i·m … (i+1)·m - 1`` (``m`` is the set
attribute ``box``). :func:`read_subtomogram` reads one back.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from emforge.engine import Input, Output, Protocol, ProtocolParams, Step, StepContext, param

from .kernels.extract import extract_one, output_box

__all__ = ["ExtractSubtomograms", "read_subtomogram", "tomogram_names"]

_RTOL = 1e-3  # pixel sizes closer than this (relative) are the same


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "tomogram"


def tomogram_names(paths: list[str], tilt_series: str) -> list[str]:
    """Names a coordinate's ``tomogram`` may use for a tomogram row: the stem of each file
    (the project copy, the imported source), its EMAN2 base name (before any ``__`` or ``.``)
    and the tilt-series name."""
    names = []
    for f in paths:
        names += [Path(f).stem, Path(f).name.split(".")[0].split("__")[0]]
    return [n for n in dict.fromkeys([*names, tilt_series]) if n]


def read_subtomogram(path: str, index: int, box: int) -> np.ndarray:
    """Subtomogram ``index`` (m, m, m float32) of a stack written by ``subtomo.extract``."""
    from emforge.io import read_volume

    data = read_volume(path)[0]
    return np.ascontiguousarray(data[index * box : (index + 1) * box])


def voxel_positions(
    xyz: np.ndarray,
    pixel_size: np.ndarray,
    *,
    frame: str,
    shape_zyx: tuple[int, int, int],
    tomo_pixel: float,
) -> np.ndarray:
    """(n, 3) coordinate positions → voxels (x, y, z) of the tomogram (shape, voxel size).

    ``frame == "centred"``: x, y, z count ``pixel_size`` from the centre. Voxel frame: the
    coordinates' own voxels; a NaN ``pixel_size`` means the tomogram's; another pixel size is
    another binning of the same tomogram, of shape ``round(n · tomo_pixel / pixel_size)``,
    re-expressed through centred Å (its centre voxel maps onto the tomogram's)."""
    from emforge.coords3d import centres, from_centred_angstrom

    xyz = np.asarray(xyz, dtype=np.float64)
    ps = np.where(np.isfinite(pixel_size), pixel_size, tomo_pixel)[:, None]
    if frame == "centred":
        return from_centred_angstrom(xyz * ps, shape_zyx, tomo_pixel)
    out = xyz.copy()
    other = np.abs(ps[:, 0] / tomo_pixel - 1) > _RTOL
    for p in np.unique(ps[other, 0]):
        sel = other & (ps[:, 0] == p)
        shape_from = tuple(int(round(n * tomo_pixel / p)) for n in shape_zyx)
        centred = (xyz[sel] - centres(shape_from)) * p
        out[sel] = from_centred_angstrom(centred, shape_zyx, tomo_pixel)
    return out


def extract_step(
    ctx: StepContext,
    *,
    tomogram: str,
    name: str,
    positions: np.ndarray,
    box: int,
    shrink: int,
    invert: bool,
    normalise: bool,
    pixel_size: float,
) -> dict:
    from emforge.io import StackWriter, read_volume

    vol = read_volume(tomogram)[0]
    m = output_box(box, shrink)
    n = len(positions)
    out_pixel = pixel_size * box / m
    path = ctx.path(f"{name}.mrcs")
    with StackWriter(str(path), (n * m, m, m), voxel_size=out_pixel) as writer:
        for i, p in enumerate(positions):
            sub = extract_one(vol, p, box, shrink=shrink, invert=invert, normalise=normalise)
            writer.write(i * m, sub)
            if (i + 1) % 16 == 0 or i + 1 == n:
                ctx.progress((i + 1) / n, f"{name}: {i + 1}/{n} subtomograms")
    return {"count": n, "path": str(path)}


def gather_step(ctx: StepContext, *, columns: dict, files: list[str], attrs: dict) -> dict:
    cols = dict(columns)
    cols["image_path"] = np.array([str(ctx.extra / f) for f in files], dtype=object)
    ctx.output_set("subtomograms", "SetOfSubTomograms", cols, attrs=attrs)
    return {"count": len(files)}


class ExtractSubtomograms(Protocol):
    id = "subtomo.extract"
    version = "1"
    label = "Extract subtomograms"
    help = (
        "Crop a cube around every 3D coordinate straight from its tomogram (zero padding past "
        "the edges), centred to sub-voxel precision by a Fourier phase shift so the point sits on "
        "voxel box // 2; optional Fourier shrink, contrast inversion and normalisation. One "
        "step per tomogram. Coordinates measured at another voxel size (another binning) are "
        "re-expressed in the tomogram's voxels through the tomogram centre."
    )

    class Params(ProtocolParams):
        box: int = param(
            0,
            "Edge of the cropped cube in tomogram voxels; 0: the coordinates' boxsize "
            "(unbinned tilt-series pixels) divided by the tomogram's binning",
            unit="px",
            section="Box",
            ge=0,
        )
        shrink: int = param(
            1, "Fourier-shrink the cube by this factor (output edge box // shrink)", section="Box",
            ge=1, le=16,
        )  # fmt: skip
        invert: bool = param(False, "Multiply by -1 (dark protein becomes white)", section="Box")
        normalise: bool = param(
            True, "Zero mean and unit standard deviation over the voxels inside the tomogram",
            section="Box",
        )  # fmt: skip
        rescale: bool = param(
            True,
            "Coordinates at another pixel size than their tomogram: re-express them in its "
            "voxels (off: such a mismatch is an error)",
            section="Coordinates",
        )

    inputs = {
        "coordinates": Input(("SetOfCoordinates3D",), "the 3D points, each naming its tomogram"),
        "tomograms": Input(("SetOfTomograms",), "the tomograms the points were picked in"),
    }
    outputs = {
        "subtomograms": Output("SetOfSubTomograms", "one subtomogram per coordinate"),
    }

    # -- planning ---------------------------------------------------------------
    def _plan(self) -> tuple[list[str], list[dict]]:
        """Every problem, and per tomogram: its row, the coordinates' rows and voxel positions."""
        from emforge.io import read_info

        p = self.params
        coords = self.input["coordinates"].read()
        frame = str(self.input["coordinates"].attrs.get("frame", "voxel"))
        tomos = self.input["tomograms"].read()
        sources = list(self.input["tomograms"].attrs.get("sources") or [])
        problems: list[str] = []
        by_name: dict[str, int] = {}
        for r, (path, ts) in enumerate(zip(tomos["image_path"], tomos["tilt_series"], strict=True)):
            files = [str(path)] + ([str(sources[r])] if len(sources) == len(tomos["id"]) else [])
            for nm in tomogram_names(files, str(ts)):
                by_name.setdefault(nm, r)
        names = coords["tomogram"].astype(str)
        unknown = sorted(set(names.tolist()) - set(by_name))
        if unknown:
            problems.append(
                f"input 'coordinates': tomogram {unknown[0]!r} is not in input 'tomograms' "
                f"({len(unknown)} unknown; known: {sorted(by_name)[:8]})"
            )
        plans: list[dict] = []
        for nm in sorted(set(names.tolist()) & set(by_name)):
            r = by_name[nm]
            path, tps = str(tomos["image_path"][r]), float(tomos["pixel_size"][r])
            if not (math.isfinite(tps) and tps > 0):
                problems.append(f"input 'tomograms': {path} has no pixel size (got {tps})")
                continue
            sel = np.flatnonzero(names == nm)
            cps = coords["pixel_size"][sel]
            if frame != "centred" and not p.rescale:
                bad = np.isfinite(cps) & (np.abs(cps / tps - 1) > _RTOL)
                if bad.any():
                    problems.append(
                        f"param 'rescale': coordinates of {nm!r} are at {cps[bad][0]:g} Å/px, "
                        f"its tomogram {path} at {tps:g} Å/px (turn rescale on)"
                    )
                    continue
            if frame == "centred" and not np.isfinite(cps).all():
                problems.append(
                    f"input 'coordinates': centred coordinates of {nm!r} lack pixel_size"
                )
                continue
            box = p.box
            if box == 0:
                sizes = sorted(set(coords["boxsize"][sel].tolist()))
                if len(sizes) > 1:
                    problems.append(
                        f"param 'box': the coordinates carry several boxsizes {sizes}; give box"
                    )
                    continue
                box = int(round(sizes[0] / float(tomos["binning"][r] or 1.0)))
            if box <= 0 or output_box(box, p.shrink) < 2:
                problems.append(
                    f"param 'box': {box} px (shrink {p.shrink}) is no box; give box > 0 "
                    f"(the coordinates of {nm!r} carry no boxsize)"
                    if box <= 0
                    else f"param 'box': {box} px shrunk by {p.shrink} leaves under 2 voxels"
                )
                continue
            shape = tuple(read_info(path).shape)
            xyz = np.column_stack([coords["x"][sel], coords["y"][sel], coords["z"][sel]])
            pos = voxel_positions(xyz, cps, frame=frame, shape_zyx=shape, tomo_pixel=tps)
            plans.append(dict(name=nm, row=r, path=path, sel=sel, pos=pos, box=box, pixel=tps))
        boxes = {(pl["box"], pl["pixel"]) for pl in plans}
        if len(boxes) > 1:
            problems.append(
                f"input 'tomograms': the tomograms give different boxes / pixel sizes {sorted(boxes)}"
                "; extract them in separate runs"
            )
        return problems, plans

    def validate(self) -> list[str]:
        return self._plan()[0]

    def steps(self) -> list[Step]:
        p = self.params
        _, plans = self._plan()
        coords = self.input["coordinates"].read()
        steps, files, parts = [], [], []
        for k, pl in enumerate(plans):
            fname = f"{_safe(pl['name'])}.mrcs"
            if fname in {f"{_safe(q['name'])}.mrcs" for q in plans[:k]}:
                fname = f"{_safe(pl['name'])}_{k}.mrcs"
            steps.append(
                Step(
                    f"extract_{k}",
                    extract_step,
                    args=dict(
                        tomogram=pl["path"],
                        name=fname.removesuffix(".mrcs"),
                        positions=pl["pos"],
                        box=pl["box"],
                        shrink=p.shrink,
                        invert=p.invert,
                        normalise=p.normalise,
                        pixel_size=pl["pixel"],
                    ),  # fmt: skip
                    label=f"extract {pl['name']}",
                )
            )
            files += [fname] * len(pl["sel"])
            parts.append(pl)
        sel = np.concatenate([pl["sel"] for pl in parts]) if parts else np.zeros(0, np.int64)
        pos = np.concatenate([pl["pos"] for pl in parts]) if parts else np.zeros((0, 3))
        box = parts[0]["box"] if parts else max(p.box, 1)
        m = output_box(box, p.shrink)
        pixel = parts[0]["pixel"] * box / m if parts else float("nan")
        orient = coords["has_orientation"][sel] == 1
        cols = {
            "image_index": np.concatenate([np.arange(len(pl["sel"])) for pl in parts])
            if parts
            else np.zeros(0, np.int64),
            "pixel_size": np.full(len(sel), pixel),
            "tomogram": coords["tomogram"][sel],
            "coord_x": pos[:, 0],
            "coord_y": pos[:, 1],
            "coord_z": pos[:, 2],
            "coord_id": coords["id"][sel],
            "tag": coords["tag"][sel],
            "score": coords["score"][sel],
        }
        for a in ("rot", "tilt", "psi"):
            cols[a] = np.where(orient, coords[a][sel], 0.0)
        attrs = {"box": [m, m, m], "pixel_size": pixel, "extracted_box": box, "shrink": p.shrink}
        steps.append(
            Step(
                "gather",
                gather_step,
                deps=[s.name for s in steps],
                outputs=["subtomograms"],
                args=dict(columns=cols, files=files, attrs=attrs),
            )
        )
        return steps

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        n = results.get("gather", {}).get("count")
        return f"{n} subtomograms from {len(results) - 1} tomogram(s)"
