"""The example plugin's protocols (imported on first use, never at discovery).

Each protocol declares its params, inputs and outputs, lists its steps in ``steps()`` and
does the work in module-level step functions ``fn(ctx, **args)``. Step arguments are plain
data (paths, numbers, tuples) built from the resolved inputs, so a step can run in a worker
process; files go to ``ctx.extra`` and outputs are registered with ``ctx.output``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from emforge.engine.protocol import Input, Output, Protocol, ProtocolParams, ShownWhen, Step, param
from emforge.errors import InputFileError
from emforge.io.mrc import read_volume, write_volume
from emforge.objects import FSC, Volume, VolumeMask

from .kernels import normalize_volume, sigma_cutoff, threshold_volume

__all__ = [
    "Normalize",
    "Threshold",
    "Sleep",
    "normalize_step",
    "threshold_step",
    "sleep_step",
]


def _volume_args(volume: Volume) -> dict[str, Any]:
    """Plain, picklable step arguments describing an input map."""
    voxel = volume.voxel_size or (volume.pixel_size,) * 3
    return {
        "path": str(volume.path),
        "voxel_size": tuple(float(v) for v in voxel),
        "origin": tuple(float(v) for v in volume.origin),
    }


def _result_of(results: dict[str, Any], step: str) -> dict[str, Any]:
    value = results.get(step, results)
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- normalize


def normalize_step(
    ctx: Any,
    *,
    path: str,
    voxel_size: tuple[float, float, float],
    origin: tuple[float, float, float],
    mean: float,
    std: float,
    mask_radius: float | None,
) -> dict[str, float]:
    """Read the map, normalise it, write ``extra/normalized.mrc`` and register it."""
    data, _ = read_volume(path)
    try:
        out = normalize_volume(data, mean, std, mask_radius=mask_radius)
    except ValueError as exc:
        raise InputFileError(path, str(exc)) from exc
    ctx.extra.mkdir(parents=True, exist_ok=True)
    target = Path(ctx.extra) / "normalized.mrc"
    write_volume(target, out, voxel_size=voxel_size, origin=origin)
    ctx.output(
        "volume",
        Volume(
            path=str(target),
            pixel_size=voxel_size[2],
            shape=out.shape,
            origin=origin,
            voxel_size=voxel_size,
        ),
    )
    ctx.log(f"normalised {Path(path).name} to mean {mean:g}, std {std:g} -> {target.name}")
    ctx.progress(1.0, "normalised")
    return {
        "input_mean": float(data.mean(dtype="float64")),
        "input_std": float(data.std(dtype="float64")),
    }


class Normalize(Protocol):
    """Shift and scale a map to a target mean and standard deviation."""

    id = "example.normalize"
    version = "1"
    label = "Normalise a map"
    help = (
        "Shift and scale a map so its voxels (all of them, or those inside a centred "
        "sphere) have a target mean and standard deviation."
    )

    class Params(ProtocolParams):
        mean: float = param(0.0, "Target mean of the measured voxels", unit="map units")
        std: float = param(
            1.0, "Target standard deviation of the measured voxels", unit="map units", gt=0
        )
        mask_radius: float | None = param(
            None,
            "Measure the statistics inside a centred sphere of this radius; empty: the whole box",
            unit="px",
            gt=0,
            section="Mask",
            level="advanced",
        )

    inputs = {"volume": Input("Volume", "the map to normalise")}
    outputs = {"volume": Output("Volume", "the normalised map (same pixel size and origin)")}

    def validate(self) -> list[str]:
        problems = []
        volume = self.input.get("volume")
        radius = self.params.mask_radius
        if volume is not None and radius is not None and radius > min(volume.shape) / 2:
            problems.append(
                f"mask_radius: {radius:g} px is larger than half the smallest box "
                f"side ({min(volume.shape) / 2:g} px)"
            )
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        args = {
            **_volume_args(self.input["volume"]),
            "mean": p.mean,
            "std": p.std,
            "mask_radius": p.mask_radius,
        }
        return [
            Step(
                "normalize",
                normalize_step,
                args=args,
                outputs=("volume",),
                label="Normalise the map",
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = _result_of(results, "normalize")
        if "input_mean" not in r:
            return ""
        return (
            f"input mean {r['input_mean']:.4g}, std {r['input_std']:.4g} -> "
            f"mean {self.params.mean:g}, std {self.params.std:g}"
        )


# --------------------------------------------------------------------------- threshold


def threshold_step(
    ctx: Any,
    *,
    path: str,
    voxel_size: tuple[float, float, float],
    origin: tuple[float, float, float],
    method: str,
    sigma: float,
    threshold: float,
) -> dict[str, float]:
    """Read the map, cut it at the threshold, write ``extra/mask.mrc`` and register it."""
    data, _ = read_volume(path)
    cutoff = sigma_cutoff(data, sigma) if method == "sigma" else float(threshold)
    mask, fraction = threshold_volume(data, cutoff)
    ctx.extra.mkdir(parents=True, exist_ok=True)
    target = Path(ctx.extra) / "mask.mrc"
    write_volume(target, mask, voxel_size=voxel_size, origin=origin)
    ctx.output(
        "mask",
        VolumeMask(
            path=str(target),
            pixel_size=voxel_size[2],
            shape=mask.shape,
            origin=origin,
            voxel_size=voxel_size,
            soft=False,
        ),
    )
    ctx.log(f"threshold {cutoff:.6g}: {100 * fraction:.2f}% of the voxels inside")
    if fraction == 0.0:
        ctx.log("warning: no voxel is above the threshold; the mask is empty")
    ctx.progress(1.0, "thresholded")
    return {"threshold": cutoff, "fraction_inside": fraction}


class Threshold(Protocol):
    """Binary mask of the voxels above a value, or above mean + n standard deviations."""

    id = "example.threshold"
    version = "1"
    label = "Threshold a map into a mask"
    help = (
        "Binary (0/1) mask of the voxels above a cut-off given as an absolute value or "
        "as standard deviations above the map's mean."
    )

    class Params(ProtocolParams):
        method: Literal["sigma", "value"] = param(
            "sigma",
            "How the cut-off is given: 'sigma' above the mean, or an absolute 'value'",
            choices=("sigma", "value"),
        )
        sigma: float = param(
            1.0,
            "Cut-off in standard deviations above the mean",
            unit="σ",
            shown_when=ShownWhen("method", "==", "sigma"),
        )
        threshold: float = param(
            0.0, "Absolute cut-off", unit="map units", shown_when=ShownWhen("method", "==", "value")
        )

    inputs = {"volume": Input("Volume", "the map to threshold")}
    outputs = {"mask": Output("VolumeMask", "binary mask, float32, same grid as the map")}

    def steps(self) -> list[Step]:
        p = self.params
        args = {
            **_volume_args(self.input["volume"]),
            "method": p.method,
            "sigma": p.sigma,
            "threshold": p.threshold,
        }
        return [
            Step(
                "threshold", threshold_step, args=args, outputs=("mask",), label="Threshold the map"
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = _result_of(results, "threshold")
        if "fraction_inside" not in r:
            return ""
        return (
            f"cut-off {r['threshold']:.4g}: {100 * r['fraction_inside']:.2f}% of the voxels inside"
        )


# --------------------------------------------------------------------------- sleep


def sleep_step(ctx: Any, *, index: int, seconds: float, register: bool = False) -> dict[str, float]:
    """Sleep ``seconds``; return when and where (pid) it ran, to measure parallelism.
    ``register``: also register the ``record`` output (a one-point curve: 0 -> seconds)."""
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    ctx.progress(1.0, f"slept {seconds:g} s")
    if register:
        ctx.output("record", FSC((0.0,), (float(seconds),), label="seconds slept"))
    return {"index": index, "start": start, "end": end, "pid": os.getpid()}


class Sleep(Protocol):
    """``n_steps`` independent steps that each sleep; no inputs, an optional tiny output."""

    id = "example.sleep"
    version = "1"
    label = "Sleep in parallel steps"
    help = (
        "Run n independent steps that each sleep for a while; used to measure how the "
        "engine schedules parallel steps. With register_output, the last step registers a "
        "tiny record (no file), as a protocol that produces data does."
    )
    outputs = {
        "record": Output("FSC", "one point: the seconds slept (register_output)", optional=True)
    }

    class Params(ProtocolParams):
        seconds: float = param(1.0, "How long each step sleeps", unit="s", ge=0)
        n_steps: int = param(4, "Number of independent steps", ge=1, le=1000)
        register_output: bool = param(
            False, "The last step registers the 'record' output (no file is written)"
        )

    def steps(self) -> list[Step]:
        p = self.params
        return [
            Step(
                f"sleep_{i + 1}",
                sleep_step,
                args={"index": i, "seconds": p.seconds}
                | ({"register": True} if p.register_output and i == p.n_steps - 1 else {}),
                outputs=["record"] if p.register_output and i == p.n_steps - 1 else [],
                label=f"Sleep {p.seconds:g} s ({i + 1}/{p.n_steps})",
            )
            for i in range(p.n_steps)
        ]
