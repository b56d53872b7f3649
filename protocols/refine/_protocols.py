"""refine.projection_matching: EMAN2's e2refine loop, gold standard, one step per stage.

See :mod:`._loop` for the step graph and :mod:`._steps` for the files of each iteration.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emforge.engine import Input, Output, Protocol, Step

from ._params import (
    ClassAverageParams,
    ClassifyParams,
    LoopParams,
    Make3DParams,
    ProjectParams,
    RefineAligner,
    SimmxParams,
)

__all__ = ["ProjectionMatching", "particle_problems", "common_problems", "n_references"]


def n_references(sym: str, delta: float, inc_mirror: bool) -> int:
    from emforge.numerics import eman_orientations

    return len(eman_orientations(sym, delta, inc_mirror=inc_mirror))


def particle_problems(parts: Any, *, apix: float = 0.0) -> tuple[list[str], dict[str, Any]]:
    """Problems with a particle set (square even box, one pixel size, CTF all-or-none) and
    what was read (box, pixel size, whether it has CTF)."""
    from emforge.protocols.reconstruct._common import CTF_COLUMNS, set_box

    n = len(parts)
    if n == 0:
        return ["input 'particles': the set is empty"], {}
    problems = []
    box = set_box(parts)
    if box[0] != box[1] or box[0] % 2:
        problems.append(
            f"input 'particles': images must be square with an even side, got {box[1]}x{box[0]} px"
        )
    cols = parts.read("pixel_size", *CTF_COLUMNS)
    px = cols["pixel_size"]
    if apix > 0:
        pixel = float(apix)
    elif not np.all(np.isfinite(px) & (px > 0)) or np.ptp(px) > 1e-3 * np.median(px):
        problems.append(
            "input 'particles': pixel sizes must be set and equal for every row (or give apix)"
        )
        pixel = float("nan")
    else:
        pixel = float(np.median(px))
    have = [np.isfinite(cols[k]) for k in CTF_COLUMNS if k != "phase_shift"]
    full = np.all(have, axis=0)
    if full.any() and not full.all():
        missing = [k for k, h in zip(CTF_COLUMNS, have, strict=False) if not h.all()]
        problems.append(
            f"input 'particles': {int((~full).sum())} of {n} rows lack CTF values "
            f"({', '.join(missing)}); give CTF on every row or on none"
        )
    return problems, {"box": int(box[1]), "pixel_size": pixel, "has_ctf": bool(full.all())}


def common_problems(p: Any, info: dict[str, Any], *, n_refs: int | None) -> list[str]:
    """Checks of the comparator / averager / shrink params against the particles."""
    from emforge.protocols.reconstruct._common import symmetry_problems

    problems = []
    if hasattr(p, "sym"):
        problems += [ln.replace("'symmetry'", "'sym'") for ln in symmetry_problems(p.sym)]
    box = info.get("box", 0)
    for name in ("shrink", "twostage"):
        f = getattr(p, name, 0)
        if f > 1 and box and (box % f or (box // f) % 2 or box // f < 8):
            problems.append(f"param '{name}': {box} px / {f} must be an even box of at least 8 px")
    if getattr(p, "classaverager", "mean") != "mean" and not info.get("has_ctf", True):
        problems.append(
            f"param 'classaverager': {p.classaverager} needs CTF columns on the particles "
            "(use mean)"
        )
    if n_refs is not None and getattr(p, "sep", 1) > n_refs:
        problems.append(f"param 'sep': {p.sep} classes per particle but only {n_refs} references")
    return problems


class LoopAllParams(
    Make3DParams, ClassAverageParams, ClassifyParams, SimmxParams, ProjectParams, LoopParams
):
    """All params of the loop (fields in the order: loop, projection, ..., reconstruction)."""


class ProjectionMatching(Protocol):
    id = "refine.projection_matching"
    version = "1"
    label = "Projection-matching refinement (EMAN2 e2refine), gold standard"
    help = (
        "EMAN2's e2refine loop: each iteration projects the map over the asymmetric unit, "
        "aligns and scores every particle against every projection (similarity matrix), puts "
        "each particle in its best class(es), averages the classes, reconstructs and "
        "postprocesses (FSC, Wiener filter, mask). Gold standard is ON by default: the even and "
        "odd particles are refined independently from independent random-phase starts, and "
        "their FSC gives the resolution. Particles with CTF are phase-flipped once before the "
        "loop. Every stage is a step (per half and chunk), so a run killed mid-iteration "
        "resumes inside that iteration."
    )
    Params = LoopAllParams
    inputs = {
        "particles": Input(("SetOfParticles",), "particles (CTF from the rows, if any)"),
        "model": Input(("Volume",), "starting map (rescaled to the particles' pixel and box)"),
    }
    outputs = {
        "volume": Output("Volume", "final map (sum of the unfiltered halves) with its half maps"),
        "filtered": Output("Volume", "final Wiener-filtered, masked map and its filtered halves"),
        "fsc": Output("FSC", "gold-standard FSC of the last iteration (masked)"),
        "particles": Output(
            "SetOfParticles",
            "input rows with refined poses, shifts (Å), class, score and half (subset)",
        ),  # fmt: skip
        "classes": Output(
            "SetOfParticles",
            "class averages of both halves with their "
            "projection directions, member counts (count) and quality",
        ),  # fmt: skip
    }
    citations = (
        "Tang G, et al. (2007) EMAN2: an extensible image processing suite for electron "
        "microscopy. J Struct Biol 157:38-46.",
    )

    def _info(self) -> tuple[list[str], dict[str, Any]]:
        return particle_problems(self.input["particles"], apix=self.params.apix)

    def validate(self) -> list[str]:
        p = self.params
        problems, info = self._info()
        if not info:
            return problems
        n = len(self.input["particles"])
        if n < 2:
            problems.append("input 'particles': the even/odd halves need at least 2 particles")
        model = self.input["model"]
        if len(set(model.shape)) != 1:
            problems.append("input 'model': must be a cubic map, got shape " + str(model.shape))
        elif np.isfinite(info["pixel_size"]):
            scaled = model.shape[0] * model.pixel_size / info["pixel_size"]
            if scaled < info["box"] / 2 or scaled > 4 * info["box"]:
                problems.append(
                    f"input 'model': {model.shape[0]} px at {model.pixel_size:.4g} Å/px spans "
                    f"{scaled:.0f} particle pixels for a {info['box']} px box; check the pixel "
                    "sizes (or apix)"
                )
        n_refs = None
        sym_bad = common_problems(p, info, n_refs=None)
        problems += sym_bad
        if not any(ln.startswith("param 'sym'") for ln in sym_bad):
            n_refs = n_references(p.sym, p.delta, p.inc_mirror)
            if p.sep > n_refs:
                problems.append(
                    f"param 'sep': {p.sep} classes per particle but only {n_refs} references"
                )
        if np.isfinite(info["pixel_size"]) and p.targetres < 2 * info["pixel_size"]:
            problems.append(
                f"param 'targetres': {p.targetres} Å is beyond Nyquist "
                f"({2 * info['pixel_size']:.3g} Å)"
            )
        if p.startiter > p.iter:
            problems.append(f"param 'startiter': {p.startiter} is after the last iteration "
                            f"(iter = {p.iter})")  # fmt: skip
        elif p.startiter > 1:
            problems += self._startiter_problems()
        problems += self._kernel_problems()
        return problems

    def _startiter_problems(self) -> list[str]:
        """Iteration k-1's maps must exist to re-enter at k. Without a run folder (a new run,
        or ``runs edit``, which validates without one) this cannot be checked here; the
        project step then fails in one line naming the missing map."""
        k = self.params.startiter
        if self.workdir is None:
            return []
        from ._steps import seed_map

        prev = self.workdir / "extra" / f"iter_{k - 1:02d}"
        halves = ("even", "odd") if self.params.goldstandard else ("all",)
        try:
            for h in halves:
                seed_map(prev, h)
        except Exception as exc:  # noqa: BLE001 - reported as one line
            return [f"param 'startiter': iteration {k - 1} has no map to start from ({exc})"]
        return []

    def _kernel_problems(self) -> list[str]:
        """Params the kernels of this version do not take (refused, never ignored)."""
        from emforge.protocols.refine import kernels as K

        from ._steps import missing_options

        p, out = self.params, []
        checks = [
            (p.prefilt, K.similarity_matrix, "prefilt", "prefilt"),
            (p.classrefsf, K.class_averages, "setsfref", "classrefsf"),
            (p.classalign.maxshift is not None, K.class_averages, "maxshift", "classalign"),
            (
                p.classralign not in (None, RefineAligner()),
                K.class_averages,
                "ralign_options",
                "classralign",
            ),
            (p.classaligncmp.name != "ccc", K.class_averages, "aligncmp_options", "classaligncmp"),
            (p.simaligncmp.name != "ccc", K.similarity_matrix, "aligncmp", "simaligncmp"),
            (p.simraligncmp.name != "ccc", K.similarity_matrix, "raligncmp", "simraligncmp"),
            (p.classraligncmp.name != "ccc", K.class_averages, "raligncmp", "classraligncmp"),
        ]
        for wanted, fn, arg, name in checks:
            if wanted and missing_options(fn, [arg]):
                out.append(f"param '{name}': not supported by this version's kernels")
        return out

    def steps(self) -> list[Step]:
        from emforge.protocols.reconstruct._common import CTF_COLUMNS

        from ._loop import loop_steps
        from ._report import finish_step

        p, parts, model = self.params, self.input["particles"], self.input["model"]
        _, info = self._info()
        box, px = info["box"], info["pixel_size"]
        cols = parts.read("image_path", "image_index", *CTF_COLUMNS)
        n = len(cols["image_index"])
        ctf = None
        if info["has_ctf"]:
            ctf = {c: np.asarray(cols[c], np.float64) for c in CTF_COLUMNS}
            ctf["phase_shift"] = np.nan_to_num(ctf["phase_shift"])
        extra = (self.workdir or _NoDir()) / "extra"
        return loop_steps(
            p, extra=extra, n=n, box=box, px=px,
            n_refs=n_references(p.sym, p.delta, p.inc_mirror),
            prepare_args=dict(sources=cols["image_path"].tolist(), indices=cols["image_index"],
                              ctf_columns=ctf, box=box, pixel_size=px),
            start_args=dict(model=model.path, model_pixel_size=model.pixel_size, box=box,
                            pixel_size=px, targetres=p.targetres, goldstandard=p.goldstandard,
                            seed=p.seed),
            finish_fn=finish_step,
            finish_args=dict(source_id=int(self.input_ids.get("particles") or 0), n=n,
                             sym=p.sym),
        )  # fmt: skip

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = results.get("finish", {})
        per = ", ".join(f"{x:.3g}" for x in r.get("resolutions", []))
        kind = "gold-standard" if self.params.goldstandard else "half-map (not independent)"
        return (
            f"{kind} resolution {r.get('resolution', float('nan')):.3g} Å (masked FSC "
            f"0.143; per iteration: {per} Å); report extra/report.html"
        )


class _NoDir:
    """Stands in for the run folder before one exists (steps listed for validation)."""

    def __truediv__(self, other: str) -> Any:
        from pathlib import Path

        return Path("<run>") / other
