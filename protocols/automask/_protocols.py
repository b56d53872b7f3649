"""The automask protocols: automask.auto3d (EMAN2 mask.auto3d) and automask.soft (mask.soft and
threshold masks with simple morphology). Both register the mask and the masked map, and write
a report (central slices with the mask outline) to ``extra/report.png``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from emforge.engine import (
    Input,
    Level,
    Output,
    Protocol,
    ProtocolParams,
    ShownWhen,
    Step,
    StepContext,
    param,
)
from emforge.objects import Volume, VolumeMask

from ._report import write_mask_report

__all__ = ["AutoMask3D", "SoftMask", "write_mask_report"]


def _register(
    ctx: StepContext, volume: dict, data: np.ndarray, mask: np.ndarray, title: str
) -> None:
    """Write and register the mask and the masked map, and draw the report.

    ``data`` is the source map as this step read it: it is multiplied by the mask in place
    (no third map-sized array). The mask is written by a second thread meanwhile (both
    writes wait on the disk, and release the interpreter lock while they do).
    """
    from concurrent.futures import ThreadPoolExecutor

    from emforge.io import read_info, read_volume, write_volume

    src = Volume.from_attrs(volume)
    placement = read_info(src.path).placement
    mpath, vpath = ctx.path("mask.mrc"), ctx.path("masked.mrc")
    with ThreadPoolExecutor(max_workers=1) as pool:
        mask_written = pool.submit(write_volume, mpath, mask, **placement)
        soft = bool(np.any((mask > 1e-6) & (mask < 1 - 1e-6)))
        write_mask_report(ctx.path("report.png"), data, mask, title=title)
        masked = np.multiply(data, mask, out=data)
        write_volume(vpath, masked, **placement)
        mask_written.result()
    ctx.output(
        "mask",
        VolumeMask(
            str(mpath),
            src.pixel_size,
            src.shape,
            src.origin,
            voxel_size=src.voxel_size,
            soft=soft,
            origin_field=src.origin_field,
        ),
    )
    halves = []
    for i, h in enumerate((src.half1, src.half2), start=1):
        if h:
            hd, hi = read_volume(h)
            hp = ctx.path(f"masked_half{i}.mrc")
            write_volume(hp, np.multiply(hd, mask, out=hd), **hi.placement)
            halves.append(str(hp))
    ctx.output(
        "volume",
        Volume(
            str(vpath),
            src.pixel_size,
            src.shape,
            src.origin,
            halves[0] if halves else None,
            halves[1] if len(halves) > 1 else None,
            src.voxel_size,
            origin_field=src.origin_field,
        ),
    )


def _read(path: str) -> np.ndarray:
    from emforge.io import read_volume

    return read_volume(path)[0]


def auto3d_step(
    ctx: StepContext,
    *,
    volume: dict,
    auto: bool,
    resolution: float,
    options: dict,
    rule: str = "robust",
) -> dict:
    from .kernels import auto3d, auto_mask, robust_auto_mask

    data = _read(volume["path"])
    warnings: list[str] = []
    if auto:
        pick = robust_auto_mask if rule == "robust" else auto_mask
        mask, chosen = pick(data, pixel_size=volume["pixel_size"], resolution=resolution or None)
        warnings = list(chosen.pop("warnings", []))
        for w in warnings:
            ctx.log(f"warning: {w}")
    else:
        mask = auto3d(data, **options)
        chosen = dict(options)
        if chosen.get("threshold") is None:  # report the threshold mean + sigma·std that was used
            chosen["threshold"] = float(
                data.mean(dtype=np.float64) + options["sigma"] * data.std(dtype=np.float64)
            )
    if not mask.any():
        from emforge.errors import ParamError

        raise ParamError(
            "threshold",
            f"no voxel reached the threshold from the seeds ({chosen.get('threshold')}); "
            "lower it, or seed with nmaxseed",
        )
    chosen = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in chosen.items()}
    title = "\n".join([f"automask.auto3d: {_fmt(chosen)}", *(f"warning: {w}" for w in warnings)])
    _register(ctx, volume, data, mask.astype(np.float32, copy=False), title=title)
    return {
        "params": chosen,
        "inside_fraction": float((mask >= 0.5).mean()),
        "warnings": warnings,
    }


def _fmt(d: dict) -> str:
    keys = ("threshold", "nmaxseed", "radius", "nshells", "nshellsgauss")
    return ", ".join(
        f"{k}={d[k]:.4g}" if isinstance(d.get(k), float) else f"{k}={d.get(k)}"
        for k in keys
        if k in d
    )


class AutoMask3D(Protocol):
    id = "automask.auto3d"
    version = "2"
    label = "Automatic 3D mask (EMAN2 mask.auto3d)"
    help = (
        "Flood-fill the density connected to seeds above a threshold, grow it by shells and soften its edge. "
        "With no threshold and no sigma the parameters are chosen automatically (auto_rule: robust, "
        "or as EMAN2's refinement post-processing does); the summary warns when the mask misses the "
        "box centre, most of the density, or a brighter density."
    )
    citations = (
        "Tang G. et al. (2007) EMAN2: an extensible image processing suite. J Struct Biol 157:38-46",
    )

    class Params(ProtocolParams):
        threshold: float | None = param(
            None,
            "Density threshold; none (and no sigma): automatic parameters",
            section="Threshold",
        )
        sigma: float | None = param(
            None,
            "Threshold as mean + sigma·std of the map (instead of threshold)",
            section="Threshold",
        )
        radius: float = param(
            0.0,
            "Seed with the voxels within this radius of the centre that pass the threshold "
            "(0: no radius seeding)",
            unit="px",
            section="Seeds",
            ge=0,
        )
        nmaxseed: int = param(
            0,
            "Seed with the N highest voxels (use for hollow objects such as viruses)",
            section="Seeds",
            ge=0,
        )
        nshells: int = param(
            0,
            "Binary 6-connected dilation by this many voxel shells",
            unit="px",
            section="Edge",
            ge=0,
        )
        nshellsgauss: int = param(
            0,
            "Width of the Gaussian soft edge added after the shells",
            unit="px",
            section="Edge",
            ge=0,
        )
        resolution: float = param(
            0.0,
            "Resolution used by the automatic parameters (low-pass, extra shells); "
            "0: max(5 Å, 3 px)",
            unit="Å",
            section="Automatic",
            level=Level.ADVANCED,
            shown_when=ShownWhen("threshold", "==", None),
            ge=0,
        )
        auto_rule: Literal["robust", "eman2"] = param(
            "robust",
            "Automatic parameters: 'robust' ranks the connected densities by integrated density "
            "and centrality (a bright contaminant cannot take the mask) with margins set by the "
            "resolution; 'eman2' seeds from the 24 highest voxels as EMAN2's refinement does",
            section="Automatic",
            level=Level.ADVANCED,
            shown_when=ShownWhen("threshold", "==", None),
        )

    inputs = {"volume": Input(("Volume",), "the map to mask")}
    outputs = {
        "mask": Output("VolumeMask", "the mask, values in [0, 1]"),
        "volume": Output("Volume", "the map multiplied by the mask (and its half maps)"),
    }

    @property
    def automatic(self) -> bool:
        return self.params.threshold is None and self.params.sigma is None

    def validate(self) -> list[str]:
        p, vol = self.params, self.input["volume"]
        problems = []
        n = int(np.prod(vol.shape))
        if p.threshold is not None and p.sigma is not None:
            problems.append("param 'sigma': give threshold or sigma, not both")
        if p.sigma is not None and p.sigma < 0:
            problems.append(f"param 'sigma': must be ≥ 0, got {p.sigma}")
        if p.nmaxseed > n:
            problems.append(f"param 'nmaxseed': {p.nmaxseed} exceeds the {n} voxels of the map")
        half_diag = 0.5 * float(np.sqrt(np.sum(np.square(vol.shape))))
        if p.radius > half_diag:
            problems.append(
                f"param 'radius': {p.radius} px is larger than the box ({'×'.join(map(str, vol.shape))})"
            )
        if not self.automatic and p.radius == 0 and p.nmaxseed == 0:
            problems.append(
                "param 'radius': give radius > 0 or nmaxseed > 0 to seed the flood fill"
            )
        if p.resolution and p.resolution < 2 * vol.pixel_size:
            problems.append(
                f"param 'resolution': {p.resolution} Å is finer than Nyquist ({2 * vol.pixel_size:.3g} Å)"
            )
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        options = dict(
            threshold=p.threshold,
            sigma=p.sigma,
            radius=p.radius,
            nmaxseed=p.nmaxseed,
            nshells=p.nshells,
            nshellsgauss=p.nshellsgauss,
        )
        return [
            Step(
                "automask",
                auto3d_step,
                outputs=["mask", "volume"],
                args=dict(
                    volume=self.input["volume"].to_attrs(),
                    auto=self.automatic,
                    resolution=p.resolution,
                    options=options,
                    rule=p.auto_rule,
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = results.get("automask", {})
        chosen = r.get("params", {})
        head = "automatic parameters" if self.automatic else "parameters"
        extra = ""
        if "vmax" in chosen:
            extra = f" (vmax={chosen['vmax']:.4g}, particle radius={chosen.get('particle_radius_px')} px)"
        elif "molecule_peak" in chosen:
            extra = (
                f" (resolution={chosen['resolution']:.3g} Å, molecule peak="
                f"{chosen['molecule_peak']:.4g}, kept {chosen['kept']} of "
                f"{chosen['components']} components)"
            )
        lines = [
            f"{head}: {_fmt(chosen)}{extra}; mask covers {100 * r.get('inside_fraction', 0):.1f}% of the box; "
            f"report: extra/report.png"
        ]
        return "\n".join(lines + [f"warning: {w}" for w in r.get("warnings", [])])


def soft_step(ctx: StepContext, *, volume: dict, mode: str, options: dict) -> dict:
    from .kernels import soft_mask, threshold_mask

    data = _read(volume["path"])
    if mode == "soft":
        mask = soft_mask(data.shape, **options)
    else:
        mask = threshold_mask(data, **options)
    _register(ctx, volume, data, mask.astype(np.float32), title=f"automask.soft ({mode})")
    return {"inside_fraction": float((mask >= 0.5).mean())}


class SoftMask(Protocol):
    id = "automask.soft"
    version = "1"
    label = "Soft spherical or threshold mask"
    help = (
        "EMAN2 mask.soft (value between inner and outer radius, Gaussian fall-off exp(-((d-R)/width)^2) "
        "beyond them), or a threshold mask with simple morphology (largest component, dilate/erode, soft "
        "edge, invert)."
    )

    class Params(ProtocolParams):
        mode: Literal["soft", "threshold"] = param(
            "soft", "EMAN2 mask.soft, or a threshold mask", section="Mode"
        )
        inner_radius: float = param(
            0.0,
            "Inner radius (0: none)",
            unit="px",
            section="Soft",
            shown_when=ShownWhen("mode", "==", "soft"),
            ge=0,
        )
        outer_radius: float = param(
            -1.0,
            "Outer radius; -1: half the box",
            unit="px",
            section="Soft",
            shown_when=ShownWhen("mode", "==", "soft"),
        )
        width: float = param(
            4.0,
            "Width of the Gaussian fall-off",
            unit="px",
            section="Soft",
            shown_when=ShownWhen("mode", "==", "soft"),
            gt=0,
        )
        value: float = param(
            1.0,
            "Mask value inside (a mask holds values in (0, 1])",
            section="Soft",
            shown_when=ShownWhen("mode", "==", "soft"),
            gt=0,
            le=1,
        )
        threshold: float = param(
            0.0,
            "Density threshold",
            section="Threshold",
            shown_when=ShownWhen("mode", "==", "threshold"),
        )
        keep_largest: bool = param(
            True,
            "Keep only the largest 6-connected region",
            section="Threshold",
            shown_when=ShownWhen("mode", "==", "threshold"),
        )
        dilate: int = param(
            0,
            "Dilation iterations (6-connected)",
            unit="px",
            section="Threshold",
            ge=0,
            shown_when=ShownWhen("mode", "==", "threshold"),
        )
        erode: int = param(
            0,
            "Erosion iterations (6-connected), after dilation",
            unit="px",
            section="Threshold",
            ge=0,
            shown_when=ShownWhen("mode", "==", "threshold"),
        )
        soft_edge: float = param(
            0.0,
            "Raised-cosine soft edge width",
            unit="px",
            section="Threshold",
            ge=0,
            shown_when=ShownWhen("mode", "==", "threshold"),
        )
        invert: bool = param(
            False,
            "Invert the mask",
            section="Threshold",
            shown_when=ShownWhen("mode", "==", "threshold"),
        )

    inputs = {"volume": Input(("Volume",), "the map to mask")}
    outputs = {
        "mask": Output("VolumeMask", "the mask"),
        "volume": Output("Volume", "the masked map"),
    }

    def validate(self) -> list[str]:
        p, vol = self.params, self.input["volume"]
        problems = []
        if p.mode == "soft":
            outer = p.outer_radius if p.outer_radius > 0 else min(vol.shape) / 2
            if p.outer_radius <= 0 and p.outer_radius != -1:
                problems.append(
                    f"param 'outer_radius': must be > 0 (or -1: half the box), got {p.outer_radius}"
                )
            elif p.inner_radius >= outer:
                problems.append(
                    f"param 'inner_radius': {p.inner_radius} px must be smaller than outer_radius ({outer} px)"
                )
            if outer > 0.5 * float(np.sqrt(np.sum(np.square(vol.shape)))):
                problems.append(f"param 'outer_radius': {outer} px is larger than the box")
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        if p.mode == "soft":
            options = dict(
                inner_radius=p.inner_radius,
                outer_radius=p.outer_radius,
                width=p.width,
                value=p.value,
            )
        else:
            options = dict(
                threshold=p.threshold,
                keep_largest=p.keep_largest,
                dilate=p.dilate,
                erode=p.erode,
                soft_edge=p.soft_edge,
                invert=p.invert,
            )
        return [
            Step(
                "mask",
                soft_step,
                outputs=["mask", "volume"],
                args=dict(volume=self.input["volume"].to_attrs(), mode=p.mode, options=options),
            )
        ]
