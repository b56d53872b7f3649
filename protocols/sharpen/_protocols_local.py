"""Model, shell (anisotropic) and local sharpening, and local resolution.

sharpen.model, sharpen.shells, sharpen.local and analysis.local_resolution; each writes its
map(s) and a report (``extra/report.png`` + ``report.html``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from emforge.engine import (
    Input,
    Level,
    Output,
    Protocol,
    ProtocolParams,
    SourcePath,
    Step,
    StepContext,
    param,
)
from emforge.objects import Volume

from ._common import (
    fit_range_problems,
    halves_of,
    identical_halves_problems,
    map_problems,
    mask_grid_problems,
    pair_problems,
    read,
    resolution_problems,
    warning_lines,
    write_outputs,
)
from ._report import Panel, write_report

__all__ = ["SharpenModel", "SharpenShells", "SharpenLocal", "LocalResolution"]


def _map_b(ctx: StepContext, data: np.ndarray, pixel_size: float, resolution: float):
    """The map B (:func:`.kernels.mapb.map_b`) at ``resolution``; its warnings go to ``ctx``."""
    from .kernels.mapb import map_b

    mb = map_b(data, pixel_size=pixel_size, resolution=resolution)
    for w in mb.warnings:
        ctx.warn(w)
    return mb


class _HalfmapInputs(Protocol):
    """Shared validation of a map (optional halves) input pair."""

    def _reference(self) -> Volume:
        return self.input.get("volume") or self.input["half1"]

    def _source_attrs(self) -> dict[str, Any]:
        """The map's attributes for a step; with only half1/half2 given, ``path`` is empty and
        the step averages the halves."""
        vol = self.input.get("volume")
        if vol is not None:
            return vol.to_attrs()
        return {**self.input["half1"].to_attrs(), "path": "", "half1": None, "half2": None}

    def _halves_problems(self, required: bool) -> list[str]:
        vol, h1, h2 = self.input.get("volume"), self.input.get("half1"), self.input.get("half2")
        if (h1 is None) != (h2 is None):
            return ["input 'half2': give both half1 and half2"]
        if vol is None and h1 is None:
            return ["input 'volume': give a map, or half1 and half2"]
        if required and h1 is None and not vol.has_halves:
            return [
                "input 'volume': this protocol needs half maps: give a map with half maps, or half1 and half2"
            ]
        problems: list[str] = []
        if h1 is not None:
            problems += pair_problems(h1, h2)
            if vol is not None and tuple(vol.shape) != tuple(h1.shape):
                problems.append(
                    f"input 'half1': shape {tuple(h1.shape)} differs from the map's {tuple(vol.shape)}"
                )
        for name, path in zip(("half1", "half2"), halves_of(self.input) or (), strict=False):
            problems += map_problems(name, path)
        if vol is not None:
            problems += map_problems("volume", vol.path, vol.source)
        if not problems:
            problems += identical_halves_problems(halves_of(self.input))
        return problems + mask_grid_problems(self.input.get("mask"), self._reference())


# -- sharpen.model ------------------------------------------------------------------------------
def model_step(ctx: StepContext, *, volume: dict, model: str, resolution: float) -> dict:
    from emforge.io import read_info

    from .kernels.mapb import b_sentence
    from .kernels.model import model_map, sharpen_model

    src = Volume.from_attrs(volume)
    data = read(src.path)
    info = read_info(src.path)
    origin_xyz = tuple(info.origin[::-1])
    mm = model_map(
        model, shape=data.shape, pixel_size=src.pixel_size, origin=origin_xyz, resolution=resolution
    )
    res = sharpen_model(data, mm, pixel_size=src.pixel_size, resolution=resolution)
    try:
        mb = _map_b(ctx, data, src.pixel_size, resolution)
    except ValueError as exc:  # a box too small for a Guinier fit: sharpening needs none
        ctx.warn(f"map B not fitted: {str(exc).removeprefix('resolution: ')}")
        mb = None
    halves = None
    if src.has_halves:
        halves = tuple(
            sharpen_model(read(h), mm, pixel_size=src.pixel_size, resolution=resolution).map
            for h in (src.half1, src.half2)
        )
    write_outputs(ctx, src, res.map, halves)  # type: ignore[arg-type]
    from emforge.io import write_volume

    write_volume(ctx.path("model_map.mrc"), mm, **info.placement)
    write_report(
        ctx.extra,
        "sharpen.model",
        [
            Panel(
                "curves",
                "map–model correlation per shell",
                s=res.s,
                curves={"CC": res.cc, "CC (smoothed)": res.cc_smoothed},
                ylabel="CC",
                vlines={"resolution": resolution},
            ),
            Panel(
                "curves",
                "applied scale",
                s=res.s,
                curves={"scale": res.scale},
                ylabel="scale",
                vlines={"resolution": resolution},
            ),
            Panel(
                "curves",
                "amplitudes",
                s=res.s,
                curves={
                    "map": np.log(np.maximum(res.map_amplitude, 1e-30)),
                    "model": np.log(np.maximum(res.model_amplitude, 1e-30)),
                },
                ylabel="ln amplitude",
            ),
            Panel("slices", "map", before=data, after=res.map),
        ],
        [
            ("model", Path(model).name),
            ("resolution", f"{resolution:g} Å"),
            *(
                [
                    ("B", b_sentence(mb.b) + " (the scale per shell is not a single B)"),
                    ("map B fit range", f"{mb.d_max:.3g}–{mb.d_min:.3g} Å ({mb.n_shells} shells)"),
                ]
                if mb is not None
                else []
            ),
            (
                "mean CC to the resolution",
                f"{float(np.nanmean(res.cc[res.s <= 1 / resolution])):.3f}",
            ),
        ],
    )
    out: dict[str, Any] = {"mean_cc": float(np.nanmean(res.cc[res.s <= 1 / resolution]))}
    if mb is not None:
        out.update(map_b=float(mb.b), map_b_fit_range=list(mb.fit_range))
    return out


class SharpenModel(_HalfmapInputs):
    id = "sharpen.model"
    version = "1"
    label = "Model-based sharpening (Phenix)"
    help = (
        "Compute a model map on the map's grid (gemmi) and scale each resolution shell of the map by the "
        "per-shell map–model correlation towards the model's amplitude fall-off."
    )
    citations = ("Terwilliger T.C. et al. (2018) Acta Cryst D74:545-559",)

    class Params(ProtocolParams):
        model: SourcePath = param(
            "", "Atomic model (PDB or mmCIF) in the map's frame", section="Input"
        )
        resolution: float = param(
            0.0, "Map resolution (model map computed to it)", unit="Å", section="Input", gt=0
        )

    inputs = {"volume": Input(("Volume",), "the map (its half maps, if any, are sharpened alike)")}
    outputs = {"volume": Output("Volume", "the sharpened map")}

    def validate(self) -> list[str]:
        p, vol = self.params, self.input["volume"]
        problems = map_problems("volume", vol.path, vol.source) + resolution_problems(
            "resolution", p.resolution, vol.pixel_size
        )
        if not p.model or not Path(p.model).is_file():
            return problems + [f"param 'model': {p.model or '(empty)'}: no such file"]
        from emforge.io import read_info

        from .kernels.model import _read_structure, check_model_in_box

        try:
            structure = _read_structure(p.model)
            info = read_info(vol.path)
            check_model_in_box(structure, vol.shape, vol.pixel_size, tuple(info.origin[::-1]))
        except ValueError as exc:
            problems.append(f"param 'model': {p.model}: {str(exc).removeprefix('model: ')}")
        except RuntimeError as exc:  # gemmi's error for an unreadable file
            problems.append(f"param 'model': {p.model}: not a readable PDB/mmCIF file ({exc})")
        return problems

    def external_files(self) -> list[str]:
        return [self.params.model] if Path(self.params.model).is_file() else []

    def steps(self) -> list[Step]:
        return [
            Step(
                "sharpen",
                model_step,
                outputs=["volume"],
                args=dict(
                    volume=self.input["volume"].to_attrs(),
                    model=str(Path(self.params.model).resolve()),
                    resolution=self.params.resolution,
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        from .kernels.mapb import b_sentence

        r = results.get("sharpen", {})
        head = f"mean map–model CC {r.get('mean_cc', float('nan')):.3f}; report extra/report.html"
        if "map_b" in r:
            head = f"{b_sentence(r['map_b'])}; {head}"
        return "\n".join([head, *warning_lines(results)])


# -- sharpen.shells ---------------------------------------------------------------------------------
def shells_step(
    ctx: StepContext,
    *,
    volume: dict,
    halves: list[str],
    resolution: float,
    anisotropic: bool,
    b_target: float,
) -> dict:
    from .kernels.shells import format_anisotropy_summary, sharpen_shells

    src = Volume.from_attrs(volume)
    h = [read(p) for p in halves] if halves else [None, None]
    data = read(src.path) if src.path else 0.5 * (h[0] + h[1])
    mb = _map_b(ctx, data, src.pixel_size, resolution)
    res = sharpen_shells(
        data,
        pixel_size=src.pixel_size,
        resolution=resolution,
        half1=h[0],
        half2=h[1],
        anisotropic=anisotropic,
        d_max=mb.d_max,
        b_target=b_target,
    )
    hdr = Volume.from_attrs({**volume, "path": src.path or halves[0]})
    write_outputs(ctx, hdr, res.map, (res.half1, res.half2) if res.half1 is not None else None)
    from .kernels.mapb import b_sentence

    text = format_anisotropy_summary(res) + "\n" + b_sentence(mb.b)
    sm = res.summary
    panels = [Panel("slices", "map", before=data, after=res.map)]
    if "s" in sm and "scale_axes" in sm:
        s = np.asarray(sm["s"])
        sc = np.asarray(sm["scale_axes"])
        panels.insert(
            0,
            Panel(
                "curves",
                "scale factor per axis",
                s=s,
                curves={a: sc[:, i] for i, a in enumerate("xyz")},
                ylabel="mean scale",
                vlines={"resolution": resolution},
            ),
        )
        sig = np.asarray(sm["signal_axes"])
        with np.errstate(divide="ignore", invalid="ignore"):  # no signal left: a gap, not ln(1e-30)
            ln_sig = np.where(sig > 0, np.log(np.where(sig > 0, sig, 1.0)), np.nan)
        panels.insert(
            1,
            Panel(
                "curves",
                "signal amplitude per axis",
                s=s,
                curves={a: ln_sig[:, i] for i, a in enumerate("xyz")},
                ylabel="ln rms amplitude",
                vlines={"resolution": resolution},
            ),
        )
    write_report(
        ctx.extra,
        "sharpen.shells",
        panels,
        [("summary", line) for line in text.splitlines()] + [("warning", w) for w in ctx.warnings],
    )
    (ctx.extra / "anisotropy.txt").write_text(text + "\n", encoding="utf-8")
    return {
        "map_b": float(mb.b),
        "U": [float(u) for u in res.U],
        "summary_text": text,
        "b_axes": [float(b) for b in sm.get("b_axes", [])],
    }


class SharpenShells(_HalfmapInputs):
    id = "sharpen.shells"
    version = "2"
    label = "Shell sharpening with anisotropic correction"
    help = (
        "Fit and remove the overall anisotropic fall-off (U), estimate per direction the anisotropy of the "
        "signal and of the errors (from half maps, or the noise floor), and scale each coefficient by the "
        "expected signal factor 1/(1+E²); beyond 10 Å the signal is scaled to a reference protein spectrum "
        "(conventions.md)."
    )

    class Params(ProtocolParams):
        resolution: float = param(0.0, "Map resolution", unit="Å", section="Sharpening", gt=0)
        anisotropic: bool = param(True, "Correct the anisotropic fall-off", section="Sharpening")
        b_target: float = param(
            0.0,
            "Overall B of the output relative to the reference protein spectrum",
            unit="Å²",
            section="Sharpening",
            level=Level.ADVANCED,
        )

    inputs = {
        "volume": Input(
            ("Volume",), "the map (with half maps: better error estimates)", optional=True
        ),
        "half1": Input(("Volume",), "first half map", optional=True),
        "half2": Input(("Volume",), "second half map", optional=True),
    }
    outputs = {"volume": Output("Volume", "the sharpened map")}

    def validate(self) -> list[str]:
        ref = self._reference() if (self.input.get("volume") or self.input.get("half1")) else None
        problems = self._halves_problems(required=False)
        if ref is not None:
            problems += resolution_problems("resolution", self.params.resolution, ref.pixel_size)
            if not problems:
                problems += fit_range_problems(
                    "resolution", ref.shape, ref.pixel_size, self.params.resolution
                )
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        attrs = self._source_attrs()
        return [
            Step(
                "sharpen",
                shells_step,
                outputs=["volume"],
                args=dict(
                    volume=attrs,
                    halves=list(halves_of(self.input) or ()),
                    resolution=p.resolution,
                    anisotropic=p.anisotropic,
                    b_target=p.b_target,
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        text = results.get("sharpen", {}).get("summary_text", "")
        return "\n".join([text, *warning_lines(results)])


# -- sharpen.local -------------------------------------------------------------------------------------
def local_step(
    ctx: StepContext,
    *,
    volume: dict,
    halves: list[str],
    resolution: float,
    method: str,
    box: int,
    step: int,
) -> dict:
    from .kernels.local import sharpen_local
    from .kernels.mapb import b_sentence

    src = Volume.from_attrs(volume)
    h = [read(p) for p in halves] if halves else [None, None]
    data = read(src.path) if src.path else 0.5 * (h[0] + h[1])
    mb = _map_b(ctx, data, src.pixel_size, resolution)
    res = sharpen_local(
        data,
        pixel_size=src.pixel_size,
        resolution=resolution,
        box=box or None,
        step=step or None,
        half1=h[0],
        half2=h[1],
        method=method,
        d_max=mb.d_max,
    )
    for note in res.notes:
        ctx.warn(note)
    write_outputs(
        ctx,
        Volume.from_attrs({**volume, "path": src.path or halves[0]}),
        res.map,
        (res.half1, res.half2) if res.half1 is not None else None,
    )
    bl = res.b_local
    mid = bl[bl.shape[0] // 2]
    write_report(
        ctx.extra,
        f"sharpen.local ({method})",
        [
            Panel("slices", "map", before=data, after=res.map),
            Panel(
                "image",
                f"local B, central layer of boxes (global B {res.b_global:.1f} Å²)",
                image=mid,
                label="local B (Å²)",
                xlabel="box index along x",
                ylabel="box index along y",
            ),
        ],
        [
            ("method", method),
            ("B", b_sentence(mb.b, res.b_global - res.b_target)),
            ("map B fit range", f"{mb.d_max:.3g}–{mb.d_min:.3g} Å ({mb.n_shells} shells)"),
            ("box / step", f"{res.box} / {res.step} px"),
            ("local sharpening B range", f"{np.nanmin(bl):.1f} … {np.nanmax(bl):.1f} Å²"),
        ]
        + [("warning", w) for w in ctx.warnings],
    )
    return {
        "map_b": float(mb.b),
        "b_sharpen_applied": float(res.b_global - res.b_target),
        "b_global": float(res.b_global - res.b_target),
        "b_local_min": float(np.nanmin(bl)),
        "b_local_max": float(np.nanmax(bl)),
        "boxes": int(bl.size),
    }


class SharpenLocal(_HalfmapInputs):
    id = "sharpen.local"
    version = "1"
    label = "Local sharpening"
    help = (
        "Sharpen in overlapping soft-edged boxes with parameters fitted per box (local Guinier B, or local FSC "
        "weighting with half maps), blended smoothly so that no box edge shows."
    )

    class Params(ProtocolParams):
        resolution: float = param(0.0, "Map resolution", unit="Å", section="Sharpening", gt=0)
        method: Literal["b_iso", "halfmap"] = param(
            "b_iso",
            "Per-box B from the map, or per-box FSC weighting from half maps",
            section="Sharpening",
        )
        box: int = param(
            0, "Box size; 0: automatic", unit="px", section="Boxes", level=Level.ADVANCED, ge=0
        )
        step: int = param(
            0,
            "Distance between box centres; 0: box/2",
            unit="px",
            section="Boxes",
            level=Level.ADVANCED,
            ge=0,
        )

    inputs = SharpenShells.inputs
    outputs = {"volume": Output("Volume", "the locally sharpened map")}

    def validate(self) -> list[str]:
        problems = self._halves_problems(required=self.params.method == "halfmap")
        if not problems:
            ref = self._reference()
            problems += resolution_problems("resolution", self.params.resolution, ref.pixel_size)
            problems += self._box_problems(ref)
            if not problems:
                problems += fit_range_problems(
                    "resolution", ref.shape, ref.pixel_size, self.params.resolution
                )
        return problems

    def _box_problems(self, ref: Volume) -> list[str]:
        """The kernel's own box check (the automatic box included), run before the run."""
        from .kernels.local import _check_box

        p = self.params
        try:
            _check_box(ref.shape, p.box or None, p.step or None, p.resolution, ref.pixel_size)
        except ValueError as exc:
            name, _, text = str(exc).partition(": ")
            auto = " (the automatic box; set a smaller box)" if name == "box" and not p.box else ""
            return [f"param '{name}': {text}{auto}"]
        return []

    def steps(self) -> list[Step]:
        p = self.params
        attrs = self._source_attrs()
        return [
            Step(
                "sharpen",
                local_step,
                outputs=["volume"],
                args=dict(
                    volume=attrs,
                    halves=list(halves_of(self.input) or ()),
                    resolution=p.resolution,
                    method=p.method,
                    box=p.box,
                    step=p.step,
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        from .kernels.mapb import b_sentence

        r = results.get("sharpen", {})
        head = (
            f"{b_sentence(r.get('map_b', float('nan')), r.get('b_global', 0))} (global); "
            f"{r.get('boxes')} boxes, local sharpening B {r.get('b_local_min', 0):.1f} … "
            f"{r.get('b_local_max', 0):.1f} Å²; report extra/report.html"
        )
        return "\n".join([head, *warning_lines(results)])


# -- analysis.local_resolution -----------------------------------------------------------------------------
def locres_step(
    ctx: StepContext,
    *,
    volume: dict,
    halves: list[str],
    mask_path: str,
    box: int,
    step: int,
    threshold: float,
) -> dict:
    from emforge.io import read_info, write_volume

    from .kernels.locres import local_resolution

    src = Volume.from_attrs(volume)
    h1, h2 = read(halves[0]), read(halves[1])
    mask = read(mask_path) if mask_path else None
    res = local_resolution(
        h1,
        h2,
        pixel_size=src.pixel_size,
        box=box or None,
        step=step or None,
        mask=mask,
        threshold=threshold,
    )
    info = read_info(halves[0])
    path = ctx.path("local_resolution.mrc")
    write_volume(path, res.map, **info.placement)
    ctx.output(
        "local_resolution",
        Volume(
            str(path),
            src.pixel_size,
            tuple(res.map.shape),
            src.origin,
            voxel_size=src.voxel_size,
            origin_field=src.origin_field,
        ),
    )
    inside = res.map[mask > 0.5] if mask is not None else res.map.ravel()
    _locres_report(ctx, 0.5 * (h1 + h2), res.map, mask, inside)
    return {"min": res.min, "median": res.median, "max": res.max, "box": res.box, "step": res.step}


def _locres_report(
    ctx: StepContext,
    avg: np.ndarray,
    locmap: np.ndarray,
    mask: np.ndarray | None,
    inside: np.ndarray,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = avg.shape[0] // 2
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), constrained_layout=True)
    axes[0].imshow(avg[c], cmap="gray")
    axes[0].set_title("map (central z slice)")
    shown = np.where(mask[c] > 0.5, locmap[c], np.nan) if mask is not None else locmap[c]
    im = axes[1].imshow(shown, cmap="jet_r")
    fig.colorbar(im, ax=axes[1], label="local resolution (Å)")
    axes[1].set_title(
        "local resolution (inside the mask)" if mask is not None else "local resolution"
    )
    axes[2].hist(inside[np.isfinite(inside)], bins=40, color="steelblue")
    axes[2].set_xlabel("local resolution (Å)")
    axes[2].set_ylabel("voxels")
    axes[2].set_title("distribution")
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(ctx.path("report.png"), dpi=90)
    plt.close(fig)


class LocalResolution(_HalfmapInputs):
    id = "analysis.local_resolution"
    version = "1"
    label = "Local resolution from half maps"
    help = "Local FSC in soft spherical windows on a grid, resolution where it crosses the threshold, as a map."

    class Params(ProtocolParams):
        threshold: float = param(0.143, "FSC threshold", section="Resolution", gt=0, lt=1)
        box: int = param(0, "Window size; 0: 32 px", unit="px", section="Windows", ge=0)
        step: int = param(0, "Grid spacing; 0: box/3", unit="px", section="Windows", ge=0)

    inputs = {
        **SharpenShells.inputs,
        "mask": Input(("VolumeMask",), "summarise inside this mask", optional=True),
    }
    outputs = {"local_resolution": Output("Volume", "the local resolution map (Å)")}

    def validate(self) -> list[str]:
        problems = self._halves_problems(required=True)
        if not problems and self.params.box and self.params.box > min(self._reference().shape):
            problems.append(f"param 'box': {self.params.box} px is larger than the map")
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        mask = self.input.get("mask")
        return [
            Step(
                "locres",
                locres_step,
                outputs=["local_resolution"],
                args=dict(
                    volume=self._reference().to_attrs(),
                    halves=list(halves_of(self.input) or ()),
                    mask_path=mask.path if mask is not None else "",
                    box=p.box,
                    step=p.step,
                    threshold=p.threshold,
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = results.get("locres", {})
        where = "inside the mask" if self.input.get("mask") is not None else "over the box"
        return (
            f"local resolution {where}: min {r.get('min', 0):.2f}, median {r.get('median', 0):.2f}, "
            f"max {r.get('max', 0):.2f} Å; report extra/report.png"
        )
