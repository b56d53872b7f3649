"""The masks protocols: masks.create, masks.volumes, masks.particles.

Kernels (``kernels.py``) are pure; this module reads and writes files and declares the
protocols. Particle stacks are streamed file to file in chunks (memory does not grow with the
stack) by several parallel steps, each writing its own output stack; the output set is a copy
of the input set with only ``image_path``/``image_index`` changed, so every metadata column
(pose, shifts, CTF, coordinates, extra columns) is kept exactly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from emforge.engine import Input, Output, Protocol, ShownWhen, Step, StepContext, param
from emforge.engine.checks import grid_problems, memory_problems
from emforge.objects import Mask2D, Volume, VolumeMask

from ._params import (
    FillParams,
    Geometry2DParams,
    Geometry3DParams,
    geometry_options,
    geometry_problems,
)
from ._stream import mask_stack_file

__all__ = ["MaskCreate", "MaskVolumes", "MaskParticles", "mask_stack_file", "check_created_mask"]

_SOURCE_HELP = (
    "Where the mask comes from: a geometry given here, or a mask created earlier (input 'mask')"
)


def check_created_mask(
    mask: Any, shape: tuple[int, ...], pixel_size: float, what: str
) -> list[str]:
    """A created mask must match the input's dimensions and pixel size (within 1%)."""
    return grid_problems("mask", mask, _Grid(tuple(shape), pixel_size), what)


@dataclass(frozen=True)
class _Grid:
    shape: tuple[int, ...]
    pixel_size: float


def _mask_source_problems(source: str, mask: Any) -> list[str]:
    """A mask input is applied only with source = mask: refuse the ambiguity otherwise."""
    if source == "mask" and mask is None:
        return ["input 'mask': required when source = mask"]
    if source != "mask" and mask is not None:
        return [
            "input 'mask': given, but source = geometry would ignore it; "
            "set -p source=mask to apply it, or drop the mask input"
        ]
    return []


def _read_mask(path: str) -> np.ndarray:
    from emforge.io import read_volume

    data, _ = read_volume(path)
    return data


# -- masks.create -----------------------------------------------------------------------------
def create_step(
    ctx: StepContext,
    *,
    shape: list[int],
    pixel_size: float,
    geometry: str,
    options: dict[str, Any],
    origin: list[float] | None = None,
    origin_field: str = "origin",
) -> dict:
    """Write the mask; ``origin``/``origin_field``: the reference map's frame (None: 0)."""
    from emforge.io import write_volume

    from .kernels import is_binary, make_mask

    mask = make_mask(tuple(shape), geometry, **options)
    path = ctx.path("mask.mrc")
    frame = tuple(map(float, origin)) if origin else (0.0, 0.0, 0.0)
    write_volume(path, mask, voxel_size=pixel_size, origin=frame, origin_field=origin_field)
    soft = not is_binary(geometry)
    if len(shape) == 3:
        vm = VolumeMask(
            str(path), pixel_size, tuple(shape), frame, soft=soft, origin_field=origin_field
        )
        ctx.output("mask", vm)
    else:
        ctx.output("mask", Mask2D(str(path), pixel_size, tuple(shape), soft=soft))
    return {"inside_fraction": float(mask.mean()), "max": float(mask.max())}


class MaskCreate(Protocol):
    id = "masks.create"
    version = "1"
    label = "Create a geometric mask"
    help = "Write a 3D VolumeMask (or a 2D mask) from a geometry, for later protocols to apply."

    class Params(Geometry3DParams):
        dimensions: Literal["3d", "2d"] = param(
            "3d", "A 3D mask (VolumeMask) or a 2D mask (Mask2D)", section="Box"
        )
        size: int = param(-1, "Box size; -1: from the 'reference' input", unit="px", section="Box")
        pixel_size: float | None = param(
            None, "Pixel size; absent: from the 'reference' input", unit="Å", section="Box", gt=0
        )
        geometry2d: Literal[
            "circular", "box", "crown", "gaussian", "raised_cosine", "raised_crown"
        ] = param(
            "circular",
            "Shape of the 2D mask",
            section="Geometry",
            shown_when=ShownWhen("dimensions", "==", "2d"),
        )

    inputs = {
        "reference": Input(
            ("Volume", "SetOfParticles", "VolumeMask"),
            "takes the box size and pixel size from this object",
            optional=True,
        )
    }
    outputs = {
        "mask": Output(
            "VolumeMask | Mask2D", "the mask: a VolumeMask, or a Mask2D with dimensions = 2d"
        )
    }

    def _box(self) -> tuple[tuple[int, ...] | None, float]:  # (shape, pixel size or -1)
        p, ref = self.params, self.input.get("reference")
        ndim = 3 if p.dimensions == "3d" else 2
        if p.size > 0:
            shape: tuple[int, ...] | None = (p.size,) * ndim
        elif ref is not None:
            full = tuple(ref.attrs["box"]) if hasattr(ref, "attrs") else tuple(ref.shape)
            shape = (full[0],) * 3 if (ndim == 3 and len(full) == 2) else tuple(full[-ndim:])
        else:
            shape = None
        px = -1.0 if p.pixel_size is None else p.pixel_size
        if p.pixel_size is None and ref is not None:
            px = (
                float(ref.attrs.get("pixel_size", -1))
                if hasattr(ref, "attrs")
                else float(ref.pixel_size)
            )
        return shape, px

    def _geometry(self) -> str:
        return self.params.geometry if self.params.dimensions == "3d" else self.params.geometry2d

    def _frame(self, shape, px: float) -> dict[str, Any]:
        """The reference map's frame, when the mask shares its box and pixel size."""
        ref = self.input.get("reference")
        same = (
            ref is not None
            and not hasattr(ref, "attrs")
            and tuple(ref.shape) == tuple(shape)
            and abs(float(ref.pixel_size) - px) <= 1e-6 * px
        )
        if not same:
            return {}
        return {"origin": list(ref.origin), "origin_field": ref.origin_field}

    def validate(self) -> list[str]:
        shape, px = self._box()
        problems = []
        if shape is None:
            problems.append("param 'size': give a box size or a 'reference' input")
        if px <= 0:
            problems.append("param 'pixel_size': give a pixel size or a 'reference' input")
        if shape is not None:
            view = self.params.model_copy(update={"geometry": self._geometry()})
            problems += geometry_problems(view, shape)
            # the mask and the copy mrcfile writes: two float32 boxes
            problems += memory_problems("size", 2 * 4 * math.prod(shape))
        return problems

    def steps(self) -> list[Step]:
        shape, px = self._box()
        view = self.params.model_copy(update={"geometry": self._geometry()})
        opts = geometry_options(view)
        if len(shape) == 2:  # type: ignore[arg-type]
            opts.pop("height", None)
        return [
            Step(
                "create",
                create_step,
                outputs=["mask"],
                args=dict(
                    shape=list(shape),
                    pixel_size=px,
                    geometry=self._geometry(),
                    options=opts,
                    **self._frame(shape, px),
                ),
            )
        ]  # type: ignore[arg-type]


# -- masks.volumes --------------------------------------------------------------------------------
def mask_volume_step(
    ctx: StepContext,
    *,
    items: list[dict[str, Any]],
    source: str,
    geometry: str,
    options: dict[str, Any],
    mask_path: str,
    fill: str,
    fill_value: float,
) -> dict:
    from emforge.io import read_volume, write_volume

    from .kernels import apply_mask, mask_volume

    created = _read_mask(mask_path) if source == "mask" else None
    written = []
    for k, item in enumerate(items):
        paths = {}
        for role in ("path", "half1", "half2"):
            if not item.get(role):
                continue
            data, info = read_volume(item[role])
            if created is not None:
                out = apply_mask(data, created, binary=False, out=data)
            else:
                out = mask_volume(
                    data, geometry, fill=fill, fill_value=fill_value, out=data, **options
                )
            target = ctx.path(f"{item['name']}{'' if role == 'path' else '_' + role}.mrc")
            write_volume(target, out, **info.placement)
            paths[role] = str(target)
        written.append(paths)
        ctx.progress((k + 1) / len(items), item["name"])
    return {"written": written}


class MaskVolumes(Protocol):
    id = "masks.volumes"
    version = "1"
    label = "Apply a 3D mask"
    help = "Apply a geometric 3D mask, or a created VolumeMask, to a Volume (and its half maps) or a SetOfVolumes."

    class Params(Geometry3DParams, FillParams):
        source: Literal["geometry", "mask"] = param("geometry", _SOURCE_HELP, section="Mask")

    inputs = {
        "volume": Input(("Volume", "SetOfVolumes"), "the map(s) to mask"),
        "mask": Input(("VolumeMask",), "a created mask (with source = mask)", optional=True),
    }
    outputs = {
        "volume": Output("Volume", "the masked map (for a Volume input)", optional=True),
        "volumes": Output(
            "SetOfVolumes", "the masked maps (for a SetOfVolumes input)", optional=True
        ),
    }

    def _items(self) -> list[dict[str, Any]]:
        vol = self.input["volume"]
        if isinstance(vol, Volume):
            return [
                {
                    "name": "volume",
                    "path": vol.path,
                    "half1": vol.half1,
                    "half2": vol.half2,
                    "shape": tuple(vol.shape),
                    "pixel_size": vol.pixel_size,
                }
            ]
        from emforge.io import read_info

        cols = vol.read("image_path", "pixel_size")
        items = []
        for i, (path, px) in enumerate(zip(cols["image_path"], cols["pixel_size"], strict=True)):
            items.append(
                {
                    "name": f"volume_{i + 1:04d}",
                    "path": path,
                    "shape": tuple(read_info(path).shape),
                    "pixel_size": float(px),
                }
            )
        return items

    def validate(self) -> list[str]:
        p, problems = self.params, []
        items = self._items()
        problems += _mask_source_problems(p.source, self.input.get("mask"))
        if problems:
            return problems
        if p.source == "mask":
            for shape, px in sorted({(it["shape"], it["pixel_size"]) for it in items}):
                problems += check_created_mask(self.input["mask"], shape, px, "volume")
        else:
            for shape in sorted({it["shape"] for it in items}):
                problems += geometry_problems(p, shape)
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        mask = self.input.get("mask")
        is_single = isinstance(self.input["volume"], Volume)
        items = self._items()
        return [
            Step(
                "mask",
                mask_volume_step,
                args=dict(
                    items=items,
                    source=p.source,
                    geometry=p.geometry,
                    options=geometry_options(p),
                    mask_path=mask.path if mask is not None else "",
                    fill=p.fill,
                    fill_value=p.fill_value,
                ),
            ),
            Step(
                "register",
                register_volumes_step,
                deps=["mask"],
                outputs=["volume" if is_single else "volumes"],
                args=dict(
                    single=is_single,
                    source_id=self.input_ids.get("volume"),
                    volume=self.input["volume"].to_attrs() if is_single else None,
                    names=[it["name"] for it in items],
                ),
            ),
        ]


def register_volumes_step(
    ctx: StepContext, *, single: bool, source_id: int, volume: dict | None, names: list[str]
) -> dict:
    paths = {n: str(ctx.path(f"{n}.mrc")) for n in names}
    if single:
        v = Volume.from_attrs(volume)  # type: ignore[arg-type]
        h1 = str(ctx.path("volume_half1.mrc")) if v.half1 else None
        h2 = str(ctx.path("volume_half2.mrc")) if v.half2 else None
        ctx.output(
            "volume",
            Volume(
                paths["volume"],
                v.pixel_size,
                v.shape,
                v.origin,
                h1,
                h2,
                v.voxel_size,
                origin_field=v.origin_field,
            ),
        )
    else:
        ctx.output_set_copy(
            "volumes",
            source_id,
            {
                "image_path": np.array([paths[n] for n in names], dtype=object),
                "image_index": np.zeros(len(names), np.int64),
            },
        )
    return {}


# -- masks.particles ------------------------------------------------------------------------------
def mask_part_step(
    ctx: StepContext,
    *,
    sources: list[str],
    indices: np.ndarray,
    target: str,
    source: str,
    geometry: str,
    options: dict[str, Any],
    mask_path: str,
    box: list[int],
    fill: str,
    fill_value: float,
    pixel_size: float,
) -> dict:
    from .kernels import is_binary, make_mask

    if source == "mask":
        mask, binary = _read_mask(mask_path)[0], False
    else:
        mask, binary = make_mask(tuple(box), geometry, **options), is_binary(geometry)
    n = mask_stack_file(
        sources,
        indices,
        target,
        mask=mask,
        binary=binary,
        fill=fill,
        fill_value=fill_value,
        pixel_size=pixel_size,
        progress=ctx.progress,
    )
    return {"images": n}


def register_particles_step(
    ctx: StepContext, *, source_id: int, targets: list[str], bounds: list[list[int]]
) -> dict:
    n = bounds[-1][1] if bounds else 0
    paths = np.empty(n, dtype=object)
    index = np.empty(n, dtype=np.int64)
    for target, (a, b) in zip(targets, bounds, strict=True):
        paths[a:b] = target
        index[a:b] = np.arange(b - a)
    ctx.output_set_copy("particles", source_id, {"image_path": paths, "image_index": index})
    return {"images": n, "stacks": len(targets)}


class MaskParticles(Protocol):
    id = "masks.particles"
    version = "1"
    label = "Apply a 2D mask to particles"
    help = (
        "Apply a geometric 2D mask, or a created Mask2D, to every particle image; the output set keeps every "
        "metadata column (pose, shifts, CTF, coordinates, extra columns) and only the images change."
    )

    class Params(Geometry2DParams, FillParams):
        source: Literal["geometry", "mask"] = param("geometry", _SOURCE_HELP, section="Mask")
        parts: int = param(
            0,
            "Number of output stacks written in parallel; 0: one per worker, at most one per "
            "10,000 images",
            section="Execution",
            ge=0,
        )

    inputs = {
        "particles": Input(("SetOfParticles",), "the particles to mask"),
        "mask": Input(("Mask2D",), "a created 2D mask (with source = mask)", optional=True),
    }
    outputs = {"particles": Output("SetOfParticles", "masked particles with unchanged metadata")}

    def _box(self) -> tuple[int, int]:
        box = self.input["particles"].attrs.get("box")
        if box:
            return tuple(box)  # type: ignore[return-value]
        from emforge.io import read_info

        path = self.input["particles"].read("image_path")["image_path"][0]
        return tuple(read_info(path).shape[1:])  # type: ignore[return-value]

    def _pixel_size(self) -> float:
        parts = self.input["particles"]
        return float(
            parts.attrs.get("pixel_size") or np.median(parts.read("pixel_size")["pixel_size"])
        )

    def validate(self) -> list[str]:
        p, problems = self.params, []
        if len(self.input["particles"]) == 0:
            return ["input 'particles': the set is empty"]
        n = len(self.input["particles"])
        if p.parts > n:
            problems.append(
                f"param 'parts': {p.parts} output stacks for {n} particle(s); give at most {n}"
            )
        box = self._box()
        problems += _mask_source_problems(p.source, self.input.get("mask"))
        if p.source == "mask" and self.input.get("mask") is not None:
            problems += check_created_mask(
                self.input["mask"], box, self._pixel_size(), "particle images"
            )
        elif p.source != "mask":
            problems += geometry_problems(p, box)
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        cols = self.input["particles"].read("image_path", "image_index")
        n = len(cols["image_index"])
        parts = p.parts or max(1, min(os.cpu_count() or 1, math.ceil(n / 10_000)))
        edges = np.linspace(0, n, parts + 1).astype(int)
        mask = self.input.get("mask")
        opts = geometry_options(p)
        opts.pop("height", None)
        common = dict(
            source=p.source,
            geometry=p.geometry,
            options=opts,
            mask_path=mask.path if mask else "",
            box=list(self._box()),
            fill=p.fill,
            fill_value=p.fill_value,
            pixel_size=self._pixel_size(),
        )
        steps, targets, bounds = [], [], []
        for k in range(parts):
            a, b = int(edges[k]), int(edges[k + 1])
            target = (
                str(self.workdir / "extra" / f"particles_{k + 1:03d}.mrcs") if self.workdir else ""
            )
            targets.append(target)
            bounds.append([a, b])
            steps.append(
                Step(
                    f"mask_{k + 1:03d}",
                    mask_part_step,
                    args=dict(
                        sources=cols["image_path"][a:b].tolist(),
                        indices=cols["image_index"][a:b],
                        target=target,
                        **common,
                    ),
                )
            )
        steps.append(
            Step(
                "register",
                register_particles_step,
                deps=[s.name for s in steps],
                outputs=["particles"],
                args=dict(source_id=self.input_ids["particles"], targets=targets, bounds=bounds),
            )
        )
        return steps

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = results.get("register", {})
        return f"{r.get('images')} particles masked into {r.get('stacks')} stack(s)"
