"""Global sharpening protocols: sharpen.bfactor, sharpen.auto, sharpen.halfmaps.

Each writes the sharpened map (and sharpened half maps where there are half maps) and a run
report (``extra/report.png`` + ``report.html``) with the plots a user looks at: FSC curves,
the Guinier plot with its fit, the applied filter against resolution, the B scan.
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
from emforge.objects import FSC, Volume

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

__all__ = ["SharpenBFactor", "SharpenAuto", "SharpenHalfmaps"]


#: largest exponent a sharpening filter may reach: e^80 ≈ 5.5e34 stays inside float32
_MAX_EXPONENT = 80.0


def gain_problems(p: Any, pixel_size: float) -> list[str]:
    """B factors whose filter exp(±B s²/4) would overflow float32 at Nyquist (one line each)."""
    s2 = 1.0 / (2.0 * pixel_size) ** 2
    limit = 4.0 * _MAX_EXPONENT / s2
    return [
        f"param '{name}': {value:g} Å² gives exp({abs(value) * s2 / 4:.3g}) at Nyquist, "
        f"beyond float32; at {pixel_size:.4g} Å/px give |{name}| ≤ {limit:.0f} Å²"
        for name in ("b_sharpen", "b_iso", "b_blur_hires")
        if abs(value := float(getattr(p, name, 0.0))) > limit
    ]


def _profile(data: np.ndarray, pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    from emforge.numerics.fourier import amplitude_profile

    return amplitude_profile(data, pixel_size=pixel_size)


def _filter_panel(
    s: np.ndarray, before: np.ndarray, after: np.ndarray, d: float | None = None
) -> Panel:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(before > 0, after / before, np.nan)
    return Panel(
        "curves",
        "applied filter",
        s=s,
        curves={"output / input amplitude": ratio},
        ylabel="scale",
        vlines={"d_cut": d} if d else None,
    )


def _spectrum_panel(s: np.ndarray, before: np.ndarray, after: np.ndarray) -> Panel:
    return Panel(
        "curves",
        "radial amplitude spectrum",
        s=s,
        curves={
            "input": np.log(np.maximum(before, 1e-30)),
            "sharpened": np.log(np.maximum(after, 1e-30)),
        },
        ylabel="ln mean |F|",
    )


# -- sharpen.bfactor ---------------------------------------------------------------------------
def _needs_map_b(mode: str, b_sharpen: float) -> bool:
    return mode == "b_iso" or (mode == "b_iso_to_d_cut" and b_sharpen == 0)


def bfactor_step(
    ctx: StepContext,
    *,
    volume: dict,
    mode: str,
    b_sharpen: float,
    b_iso: float,
    d_cut: float,
    b_blur_hires: float,
    k_sharpen: float,
    b0: float,
    b1: float,
    b2: float,
    fit_d_min: float,
    fit_d_max: float,
) -> dict:
    from .kernels import sharpen_b, sharpen_b_iso_to_d_cut, sharpen_resolution_dependent
    from .kernels.mapb import b_sentence, map_b

    src = Volume.from_attrs(volume)
    px = src.pixel_size
    data = read(src.path)
    fit_res = fit_d_min or None

    def fit(m: np.ndarray):
        try:
            return map_b(m, pixel_size=px, resolution=fit_res, d_max=fit_d_max or None)
        except ValueError as exc:  # only where the mode does not need it (validated)
            ctx.warn(f"no map B: {str(exc).removeprefix('resolution: ')}")
            return None

    own = fit(data)
    for w in own.warnings if own else []:
        ctx.warn(w)
    applied: float | None = None
    if mode == "b_sharpen":
        applied = b_sharpen
    elif _needs_map_b(mode, b_sharpen):
        applied = own.b - b_iso  # type: ignore[union-attr]
    elif mode == "b_iso_to_d_cut":
        applied = b_sharpen

    def run(m: np.ndarray) -> np.ndarray:
        if mode in ("b_sharpen", "b_iso"):
            return sharpen_b(m, pixel_size=px, b_sharpen=applied)  # type: ignore[arg-type]
        if mode == "b_iso_to_d_cut":
            return sharpen_b_iso_to_d_cut(
                m,
                pixel_size=px,
                b_sharpen=applied,  # type: ignore[arg-type]
                d_cut=d_cut,
                b_blur_hires=b_blur_hires,
                k_sharpen=k_sharpen,
            )
        return sharpen_resolution_dependent(m, pixel_size=px, d_cut=d_cut, b0=b0, b1=b1, b2=b2)

    out = run(data)
    halves = tuple(run(read(h)) for h in (src.half1, src.half2)) if src.has_halves else None
    write_outputs(ctx, src, out, halves)  # type: ignore[arg-type]
    s, before = _profile(data, px)
    _, after = _profile(out, px)
    new = fit(out) if own else None
    own_b = own.b if own else float("nan")
    new_b = new.b if new else float("nan")
    sentence = b_sentence(own_b, applied) if own else "map B: not fitted"
    write_report(
        ctx.extra,
        f"sharpen.bfactor ({mode})",
        [
            _spectrum_panel(s, before, after),
            _filter_panel(s, before, after, d_cut if mode != "b_sharpen" else None),
            Panel("slices", "map", before=data, after=out),
        ],
        [
            ("mode", mode),
            ("B", sentence),
            ("map B after", f"{new_b:+.1f} Å²"),
            (
                "map B fit range",
                f"{own.d_max:.3g}–{own.d_min:.3g} Å ({own.n_shells} shells)" if own else "-",
            ),
        ]
        + [("warning", w) for w in ctx.warnings],
    )
    return {
        "map_b": own_b,
        "b_sharpen_applied": applied,
        "b_iso_before": own_b,
        "b_iso_after": new_b,
        "mode": mode,
        "map_b_fit_range": list(own.fit_range) if own else None,
    }


class SharpenBFactor(Protocol):
    id = "sharpen.bfactor"
    version = "1"
    label = "B-factor sharpening (Phenix map_sharpening modes)"
    help = (
        "Sharpen one map by a B factor: apply b_sharpen, reach a target b_iso, sharpen up to d_cut and blur "
        "beyond (b_iso_to_d_cut), or a resolution-dependent scale. The map's own B is fitted (Wilson/Guinier)."
    )
    citations = (
        "Terwilliger T.C. et al. (2018) Automated map sharpening by maximization of detail and "
        "connectivity. Acta Cryst D74:545-559",
    )

    class Params(ProtocolParams):
        mode: Literal["b_sharpen", "b_iso", "b_iso_to_d_cut", "resolution_dependent"] = param(
            "b_sharpen", "Sharpening mode", section="Mode"
        )
        b_sharpen: float = param(
            0.0,
            "B to remove (positive sharpens): the map is multiplied by exp(+B s²/4). "
            "In b_iso_to_d_cut, 0 means: from the map's own B down to b_iso",
            unit="Å²",
            section="Mode",
            shown_when=ShownWhen("mode", "in", ["b_sharpen", "b_iso_to_d_cut"]),
        )
        b_iso: float = param(
            0.0,
            "Target overall B of the output",
            unit="Å²",
            section="Mode",
            shown_when=ShownWhen("mode", "in", ["b_iso", "b_iso_to_d_cut"]),
        )
        d_cut: float = param(
            0.0,
            "Resolution where sharpening stops and blurring begins (b_iso_to_d_cut) or the "
            "reference resolution (resolution_dependent)",
            unit="Å",
            section="Mode",
            shown_when=ShownWhen("mode", "in", ["b_iso_to_d_cut", "resolution_dependent"]),
            ge=0,
        )
        b_blur_hires: float = param(
            200.0,
            "Blurring B applied beyond d_cut",
            unit="Å²",
            section="Mode",
            level=Level.ADVANCED,
            shown_when=ShownWhen("mode", "==", "b_iso_to_d_cut"),
        )
        k_sharpen: float = param(
            10.0,
            "Steepness of the logistic transition at d_cut",
            section="Mode",
            level=Level.ADVANCED,
            shown_when=ShownWhen("mode", "==", "b_iso_to_d_cut"),
        )
        b0: float = param(
            0.0,
            "log10 scale at d_cut/2 (resolution_dependent)",
            section="Mode",
            shown_when=ShownWhen("mode", "==", "resolution_dependent"),
            ge=-30,
            le=30,
        )
        b1: float = param(
            0.0,
            "log10 scale at d_cut (resolution_dependent)",
            section="Mode",
            shown_when=ShownWhen("mode", "==", "resolution_dependent"),
            ge=-30,
            le=30,
        )
        b2: float = param(
            0.0,
            "added log10 scale at 0.833·d_cut (resolution_dependent)",
            section="Mode",
            shown_when=ShownWhen("mode", "==", "resolution_dependent"),
            ge=-30,
            le=30,
        )
        fit_d_min: float = param(
            0.0,
            "Finest resolution of the map B (Guinier) fit; 0: d_cut when given, else 3 pixels",
            unit="Å",
            section="B fit",
            level=Level.ADVANCED,
            ge=0,
        )
        fit_d_max: float = param(
            0.0,
            "Coarsest resolution of the map B fit; 0: max(10 Å, 2 × fit_d_min), widened to at "
            "least 5 Fourier shells",
            unit="Å",
            section="B fit",
            level=Level.ADVANCED,
            ge=0,
        )

    inputs = {"volume": Input(("Volume",), "the map (its half maps, if any, are sharpened alike)")}
    outputs = {"volume": Output("Volume", "the sharpened map (with sharpened half maps)")}

    def _d_min(self) -> float:
        p = self.params
        return p.fit_d_min or (p.d_cut if p.mode != "b_sharpen" else 0.0)

    def validate(self) -> list[str]:
        p, vol = self.params, self.input["volume"]
        problems = map_problems("volume", vol.path, vol.source)
        problems += resolution_problems("d_cut", p.d_cut, vol.pixel_size)
        problems += resolution_problems("fit_d_min", p.fit_d_min, vol.pixel_size)
        if p.mode in ("b_iso_to_d_cut", "resolution_dependent") and p.d_cut <= 0:
            problems.append(f"param 'd_cut': required (> 0 Å) in mode {p.mode}")
        problems += gain_problems(p, vol.pixel_size)
        if p.fit_d_max and p.fit_d_max <= self._d_min():
            problems.append(
                f"param 'fit_d_max': {p.fit_d_max} Å must be coarser than fit_d_min ({self._d_min():.3g} Å)"
            )
        elif _needs_map_b(p.mode, p.b_sharpen) and not problems:
            name = "fit_d_min" if p.fit_d_min else ("d_cut" if p.d_cut else "fit_d_min")
            problems += fit_range_problems(
                name, vol.shape, vol.pixel_size, self._d_min() or None, p.fit_d_max or None
            )
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        return [
            Step(
                "sharpen",
                bfactor_step,
                outputs=["volume"],
                args=dict(
                    volume=self.input["volume"].to_attrs(),
                    mode=p.mode,
                    b_sharpen=p.b_sharpen,
                    b_iso=p.b_iso,
                    d_cut=p.d_cut,
                    b_blur_hires=p.b_blur_hires,
                    k_sharpen=p.k_sharpen,
                    b0=p.b0,
                    b1=p.b1,
                    b2=p.b2,
                    fit_d_min=self._d_min(),
                    fit_d_max=p.fit_d_max,
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        from .kernels.mapb import b_sentence

        r = results.get("sharpen", {})
        mb = r.get("map_b")
        head = b_sentence(mb, r.get("b_sharpen_applied")) if mb is not None else "map B: -"
        lines = [
            f"{r.get('mode')}: {head}; map B after {r.get('b_iso_after', float('nan')):+.1f} Å²; "
            "report extra/report.html"
        ]
        return "\n".join(lines + warning_lines(results))


# -- sharpen.auto ------------------------------------------------------------------------------
def auto_step(ctx: StepContext, *, volume: dict, options: dict) -> dict:
    from .kernels import apply_auto_sharpening, auto_sharpen
    from .kernels.mapb import b_sentence

    src = Volume.from_attrs(volume)
    data = read(src.path)
    res = auto_sharpen(data, pixel_size=src.pixel_size, **options)
    for note in res.notes:
        ctx.warn(note)
    halves = None
    if src.has_halves:  # the same anisotropy removal and filter as the map
        halves = tuple(
            apply_auto_sharpening(read(h), res, pixel_size=src.pixel_size)
            for h in (src.half1, src.half2)
        )
    write_outputs(ctx, src, res.map, halves)
    s, before = _profile(data, src.pixel_size)
    _, after = _profile(res.map, src.pixel_size)
    label = "adjusted surface area" if res.method == "adjusted_sa" else "kurtosis"
    write_report(
        ctx.extra,
        f"sharpen.auto ({label})",
        [
            Panel(
                "scan",
                "b_iso scan",
                x=res.scan["b_iso"],
                y=res.scan["score"],
                best=res.best,
                xlabel="target b_iso (Å²)",
                ylabel=label,
            ),
            _filter_panel(s, before, after, options.get("resolution")),
            _spectrum_panel(s, before, after),
            Panel("slices", "map", before=data, after=res.map),
        ],
        [
            ("method", label),
            ("B", b_sentence(res.b_iso_original, res.b_sharpen)),
            ("best b_iso", f"{res.b_iso:.1f} Å²"),
            ("map B fit range", "{:.3g}–{:.3g} Å".format(*res.map_b_fit_range)),
            ("solvent fraction", f"{res.solvent_fraction:.2f}"),
            ("region weight", f"{res.region_weight:.3g}"),
            ("region weight bounds", "{:.3g}–{:.3g}".format(*res.region_weight_bounds)),
            ("anisotropy removed", _aniso_text(res.aniso)),
        ]
        + [("warning", w) for w in ctx.warnings],
    )
    scan = {k: [float(x) for x in v] for k, v in res.scan.items()}
    return {
        "map_b": res.b_iso_original,
        "b_sharpen_applied": res.b_sharpen,
        "b_iso": res.b_iso,
        "b_sharpen": res.b_sharpen,
        "b_iso_original": res.b_iso_original,
        "method": res.method,
        "scan": scan,
    }


def _aniso_text(aniso) -> str:
    if aniso is None:
        return "no"
    return "principal B {} Å² (z, y, x tensor; removed: its traceless part)".format(
        " / ".join(f"{b:+.1f}" for b in aniso.principal)
    )


class SharpenAuto(Protocol):
    id = "sharpen.auto"
    version = "2"
    label = "Automatic sharpening (b_iso scan)"
    help = (
        "Scan the target b_iso and keep the map that maximises the adjusted surface area (detail and "
        "connectivity, Terwilliger et al. 2018) or the kurtosis. The map's overall anisotropy is "
        "removed first; each trial sharpens up to the resolution and blurs beyond it (Phenix "
        "b_iso_to_d_cut). When the score is flat the map's B is kept, with a warning."
    )
    citations = SharpenBFactor.citations

    class Params(ProtocolParams):
        method: Literal["adjusted_sa", "kurtosis"] = param(
            "adjusted_sa", "Score to maximise", section="Scan"
        )
        b_min: float = param(
            -140.0,
            "Lowest target b_iso (map B after sharpening; Phenix's -100 in its own B scale)",
            unit="Å²",
            section="Scan",
        )
        b_max: float = param(
            260.0,
            "Highest target b_iso (Phenix's 300 in its own B scale)",
            unit="Å²",
            section="Scan",
        )
        n_steps: int = param(21, "Number of trial b_iso values", section="Scan", ge=2, le=201)
        resolution: float = param(
            0.0,
            "Map resolution (sharpen up to it, blur beyond); 0: sharpen to Nyquist",
            unit="Å",
            section="Scan",
            ge=0,
        )
        solvent_fraction: float = param(
            0.0,
            "Solvent fraction of the box; 0: estimated from the map",
            section="Scan",
            level=Level.ADVANCED,
            ge=0,
            lt=1,
        )

    inputs = {"volume": Input(("Volume",), "the map to sharpen")}
    outputs = {"volume": Output("Volume", "the best-scoring map")}

    def validate(self) -> list[str]:
        p, vol = self.params, self.input["volume"]
        problems = map_problems("volume", vol.path, vol.source) + resolution_problems(
            "resolution", p.resolution, vol.pixel_size
        )
        if p.b_max <= p.b_min:
            problems.append(f"param 'b_max': {p.b_max} must exceed b_min ({p.b_min})")
        if not problems:
            problems += fit_range_problems(
                "resolution", vol.shape, vol.pixel_size, p.resolution or None
            )
        return problems

    def steps(self) -> list[Step]:
        p = self.params
        from .kernels.auto import B_MAX, B_MIN

        default = (p.b_min, p.b_max) == (B_MIN, B_MAX)  # the kernel's window (coarse maps)
        opts = dict(
            b_min=None if default else p.b_min,
            b_max=None if default else p.b_max,
            n_steps=p.n_steps,
            method=p.method,
            resolution=p.resolution or None,
            solvent_fraction=p.solvent_fraction or None,
        )
        return [
            Step(
                "scan",
                auto_step,
                outputs=["volume"],
                args=dict(volume=self.input["volume"].to_attrs(), options=opts),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = results.get("scan", {})
        from .kernels.mapb import b_sentence

        lines = [
            f"{b_sentence(r.get('b_iso_original', 0), r.get('b_sharpen', 0))} "
            f"(best b_iso {r.get('b_iso', 0):.1f} Å²); report extra/report.html",
            *warning_lines(results),
            "   b_iso     score",
        ]
        scan = r.get("scan", {})
        for b, sc in zip(scan.get("b_iso", []), scan.get("score", []), strict=False):
            lines.append(f"  {b:7.1f}  {sc:8.4f}")
        return "\n".join(lines)


# -- sharpen.halfmaps ------------------------------------------------------------------------------
def halfmaps_step(
    ctx: StepContext, *, volume: dict, halves: list[str], mask_path: str, method: str, options: dict
) -> dict:
    from .kernels import sharpen_halfmaps, sharpen_halfmaps_phenix

    src = Volume.from_attrs(volume)
    h1, h2 = read(halves[0]), read(halves[1])
    mask = read(mask_path) if mask_path else None
    rng = np.random.default_rng(options.pop("seed"))
    fn = sharpen_halfmaps if method == "relion" else sharpen_halfmaps_phenix
    res = fn(h1, h2, pixel_size=src.pixel_size, mask=mask, rng=rng, **options)
    from .kernels.mapb import MapBFit, b_sentence, map_b

    for note in res.notes:
        ctx.warn(note)
    try:
        mb = map_b(0.5 * (h1 + h2), pixel_size=src.pixel_size, resolution=res.resolution)
    except ValueError as exc:  # too few shells coarser than the FSC resolution
        ctx.warn(f"no map B: {str(exc).removeprefix('resolution: ')}")
        mb = MapBFit(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    for w in mb.warnings:
        ctx.warn(w)
    f = res.fsc
    fsc_obj = FSC(
        tuple(map(float, f.s)),
        tuple(map(float, f.fsc_corrected)),
        {f"{f.threshold:g}": float(res.resolution)},
        label="masked, phase-randomisation corrected" if mask is not None else "unmasked",
    )
    write_outputs(ctx, src, res.map, (res.half1, res.half2), fsc_obj)
    curves = {"unmasked": f.fsc_unmasked}
    if mask is not None:
        curves.update(
            {"masked": f.fsc_masked, "phase randomised": f.fsc_random, "corrected": f.fsc_corrected}
        )
    write_report(
        ctx.extra,
        f"sharpen.halfmaps ({method})",
        [
            Panel(
                "curves",
                "Fourier shell correlation",
                s=f.s,
                curves=curves,
                ylabel="FSC",
                hlines=(0.143, 0.5),
                vlines={f"{res.resolution:.2f} Å": res.resolution},
                ylim=(-0.1, 1.05),
            ),
            Panel(
                "guinier",
                "Guinier plot",
                s2=res.guinier_s2,
                ln_amp=res.guinier_ln_amplitude,
                b=res.b_factor,
                intercept=res.guinier_intercept,
                fit_range=res.guinier_fit_range,
            ),
            Panel(
                "curves",
                "applied filter",
                s=res.filter_s,
                curves={"filter": res.filter_values, "FSC weight": res.fsc_weights},
                ylabel="scale",
                vlines={"resolution": res.resolution},
            ),
            Panel("slices", "map", before=0.5 * (h1 + h2), after=res.map),
        ],
        [
            ("method", method),
            ("resolution (FSC = 0.143)", f"{res.resolution:.2f} Å"),
            ("B", b_sentence(mb.b, -res.b_factor)),
            ("map B fit range", f"{mb.d_max:.3g}–{mb.d_min:.3g} Å ({mb.n_shells} shells)"),
            ("B factor (RELION sign, applied as exp(-B s²/4))", f"{res.b_factor:.1f} Å²"),
            (
                "Guinier fit range (signal)",
                f"{res.guinier_fit_range[0]:.3g}–{res.guinier_fit_range[1]:.2f} Å",
            ),
        ]
        + [("warning", n) for n in ctx.warnings],
    )
    return {
        "resolution": float(res.resolution),
        "b_factor": float(res.b_factor),
        "map_b": float(mb.b),
        "b_sharpen_applied": float(-res.b_factor),
        "notes": list(res.notes),
    }


class SharpenHalfmaps(Protocol):
    id = "sharpen.halfmaps"
    version = "2"
    label = "Half-map sharpening (RELION postprocess, Phenix half-map)"
    help = (
        "Masked FSC with phase-randomisation correction, resolution at FSC 0.143, FSC weighting, Guinier B "
        "fitted from 10 Å to the resolution and applied, optional low-pass (RELION); or per-shell "
        "CC* × expected/observed scaling (Phenix), the expected amplitude beyond 10 Å following a reference "
        "protein spectrum (conventions.md)."
    )
    citations = (
        "Chen S. et al. (2013) High-resolution noise substitution to measure overfitting and validate "
        "resolution in 3D structure determination by single particle electron cryomicroscopy. "
        "Ultramicroscopy 135:24-35",
        "Rosenthal P.B., Henderson R. (2003) J Mol Biol 333:721-745",
    )

    class Params(ProtocolParams):
        method: Literal["relion", "phenix"] = param(
            "relion", "RELION postprocess or Phenix half-map sharpening", section="Method"
        )
        fsc_threshold: float = param(
            0.143, "FSC threshold defining the resolution", section="Method", gt=0, lt=1
        )
        guinier_d_max: float = param(
            0.0,
            "Coarsest resolution of the Guinier fit; 0: max(10 Å, 2 × resolution), widened to "
            "at least 5 Fourier shells",
            unit="Å",
            section="Method",
            level=Level.ADVANCED,
        )
        b_override: float | None = param(
            None,
            "Apply this B instead of the fitted one (RELION convention: negative sharpens)",
            unit="Å²",
            section="Method",
            level=Level.ADVANCED,
            shown_when=ShownWhen("method", "==", "relion"),
        )
        lowpass: bool = param(True, "Low-pass the result at the resolution", section="Method")
        seed: int = param(
            0, "Seed of the phase randomisation", section="Method", level=Level.EXPERT
        )

    inputs = {
        "volume": Input(
            ("Volume",), "a map with two half maps (or give half1 and half2)", optional=True
        ),
        "half1": Input(("Volume",), "first half map", optional=True),
        "half2": Input(("Volume",), "second half map", optional=True),
        "mask": Input(("VolumeMask",), "mask for the FSC (recommended)", optional=True),
    }
    outputs = {
        "volume": Output("Volume", "the sharpened map with sharpened half maps"),
        "fsc": Output("FSC", "the (corrected) FSC curve and its 0.143 crossing"),
    }

    def _reference(self) -> Volume:
        return self.input.get("volume") or self.input["half1"]

    def validate(self) -> list[str]:
        vol, h1, h2 = self.input.get("volume"), self.input.get("half1"), self.input.get("half2")
        if (h1 is None) != (h2 is None):
            return ["input 'half2': give both half1 and half2"]
        if h1 is None and (vol is None or not vol.has_halves):
            return ["input 'volume': give a map with half maps, or half1 and half2"]
        problems: list[str] = []
        if h1 is not None:
            problems += pair_problems(h1, h2)
        halves = halves_of(self.input)
        for name, path in zip(("half1", "half2"), halves or (), strict=False):
            problems += map_problems(name, path)
        if not problems:
            problems += identical_halves_problems(halves)
        return problems + mask_grid_problems(self.input.get("mask"), self._reference(), "half maps")

    def steps(self) -> list[Step]:
        p = self.params
        mask = self.input.get("mask")
        options: dict[str, Any] = dict(
            fsc_threshold=p.fsc_threshold,
            guinier_d_max=p.guinier_d_max,
            lowpass=p.lowpass,
            seed=p.seed,
        )
        if p.method == "relion":
            options["b_override"] = p.b_override
        return [
            Step(
                "postprocess",
                halfmaps_step,
                outputs=["volume", "fsc"],
                args=dict(
                    volume=self._reference().to_attrs(),
                    halves=list(halves_of(self.input) or ()),
                    mask_path=mask.path if mask is not None else "",
                    method=p.method,
                    options=options,
                ),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        from .kernels.mapb import b_sentence

        r = results.get("postprocess", {})
        head = (
            f"resolution {r.get('resolution', 0):.2f} Å (FSC {self.params.fsc_threshold}); "
            f"{b_sentence(r.get('map_b', float('nan')), r.get('b_sharpen_applied'))}; "
            "report extra/report.html"
        )
        return "\n".join([head, *warning_lines(results)])
