"""The step graph of refine.projection_matching: one step per stage, half and chunk.

``prepare`` (phase flip once) and ``start`` (iteration 0 maps) come first; iteration ``k``
then has, for each half H (``even``/``odd``; the references are one shared ``all`` set
without gold standard)::

    iKK_project_H -> [iKK_simmask] -> iKK_simmx_H_001.. -> iKK_classify_H
        -> iKK_classavg_H_001.. -> iKK_make3d_H -> iKK_postprocess -> i(KK+1)_project_H ...

and ``finish`` registers the outputs and writes the report. Each step ``uses`` only the
params of its stage, so a changed class-averaging param redoes the class averages of every
iteration and what follows them, never the similarity matrices before them; ``iter`` and
``startiter`` are used by no iteration step, so raising ``iter`` on a finished run and
resuming runs only the new iterations.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from emforge.engine import Step

from . import _steps as S

__all__ = ["loop_steps", "PROJECT_USES", "SIMMX_USES", "CLASSAVG_USES", "MAKE3D_USES"]

PROJECT_USES = ["sym", "delta", "inc_mirror", "perturb", "seed", "goldstandard", "apix"]
SIMMX_USES = ["shrink", "twostage", "simcmp", "simalign", "simaligncmp", "simralign",
              "simraligncmp", "simmask", "prefilt", "chunk", "apix"]  # fmt: skip
CLASSIFY_USES = ["sep"]
CLASSAVG_USES = ["classiter", "classkeep", "classkeepsig", "classcmp", "classalign",
                 "classaligncmp", "classralign", "classraligncmp", "classaverager",
                 "classnormproc", "classrefsf", "classautomask", "classes_per_step", "apix"]  # fmt: skip
MAKE3D_USES = ["pad", "recon", "m3dkeep", "m3dkeepsig", "m3diter", "m3dpreprocess",
               "m3dpostprocess", "sym", "apix"]  # fmt: skip
POST_USES = ["targetres", "automask3d", "mass", "sym", "goldstandard", "apix"]


def _dump(model: Any) -> Any:
    return None if model is None else model.model_dump(mode="json")


def simmx_options(p: Any) -> dict[str, Any]:
    return dict(
        cmp=_dump(p.simcmp), align=_dump(p.simalign), aligncmp=_dump(p.simaligncmp),
        ralign=_dump(p.simralign), raligncmp=_dump(p.simraligncmp), shrink=p.shrink,
        twostage=p.twostage, prefilt=p.prefilt, candidates=p.simcandidates,
    )  # fmt: skip


def classavg_options(p: Any) -> dict[str, Any]:
    return dict(
        cmp=_dump(p.classcmp), align=_dump(p.classalign), aligncmp=_dump(p.classaligncmp),
        ralign=_dump(p.classralign), raligncmp=_dump(p.classraligncmp),
        classiter=p.classiter, keep=p.classkeep, keepsig=p.classkeepsig,
        averager=p.classaverager, normproc=p.classnormproc, automask=p.classautomask,
        refsf=p.classrefsf,
    )  # fmt: skip


def make3d_options(p: Any) -> dict[str, Any]:
    return dict(
        keep=p.m3dkeep, keepsig=p.m3dkeepsig, pad=p.pad, iter=p.m3diter,
        preprocess=p.m3dpreprocess, postprocess=_dump(p.m3dpostprocess),
    )  # fmt: skip


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """Fixed [a, b) chunks of ``size`` (the last one shorter)."""
    return [(a, min(n, a + size)) for a in range(0, n, size)] or [(0, 0)]


def loop_steps(
    p: Any, *, extra: Path, n: int, box: int, px: float, n_refs: int,
    prepare_args: dict[str, Any], start_args: dict[str, Any], finish_fn: Any,
    finish_args: dict[str, Any],
) -> list[Step]:  # fmt: skip
    """Every step of the loop from ``p.startiter`` to ``p.iter`` (see the module notes)."""
    particles, meta = str(extra / "prep" / "particles.mrcs"), str(extra / "prep" / "meta.npz")
    steps = [
        Step("prepare", S.prepare_step, uses=["apix"],
             args=dict(prepare_args, target=particles, meta=meta)),
    ]  # fmt: skip
    if p.startiter <= 1:
        steps.append(Step("start", S.start_maps_step, uses=["targetres", "goldstandard", "seed",
                          "apix"], args=dict(start_args, out_dir=str(extra / "iter_00"))))  # fmt: skip
    halves = {"even": (n + 1) // 2, "odd": n // 2}
    ref_sets = ("even", "odd") if p.goldstandard else ("all",)
    common = dict(box=box, pixel_size=px)
    prev_post = "start" if p.startiter <= 1 else None
    for k in range(max(1, p.startiter), p.iter + 1):
        it = f"i{k:02d}"
        d, prev = extra / f"iter_{k:02d}", extra / f"iter_{k - 1:02d}"
        dep0 = [prev_post] if prev_post else []
        proj = {}
        for r in ref_sets:
            proj[r] = str(d / f"projections_{r}.mrcs")
            steps.append(Step(
                f"{it}_project_{r}", S.project_step, deps=dep0, uses=PROJECT_USES,
                args=dict(prev_dir=str(prev), half=r, sym=p.sym, delta=p.delta,
                          inc_mirror=p.inc_mirror, perturb=p.perturb, seed=p.seed, iteration=k,
                          pixel_size=px, target=proj[r]),
            ))  # fmt: skip
        mask, mask_dep = "", []
        if p.simmask == "auto":
            mask, mask_dep = str(d / "simmask.mrc"), [f"{it}_simmask"]
            steps.append(Step(f"{it}_simmask", S.simmask_step,
                              deps=[f"{it}_project_{r}" for r in ref_sets], uses=["simmask"],
                              args=dict(projections=list(proj.values()), pixel_size=px,
                                        target=mask)))  # fmt: skip
        make3d = {}
        for h, nh in halves.items():
            r = h if p.goldstandard else "all"
            refs, sims = proj[r], []
            for c, (a, b) in enumerate(chunks(nh, p.chunk), 1):
                sims.append(str(d / f"simmx_{h}_{c:03d}.npz"))
                steps.append(Step(
                    f"{it}_simmx_{h}_{c:03d}", S.simmx_step,
                    deps=["prepare", f"{it}_project_{r}", *mask_dep], uses=SIMMX_USES,
                    args=dict(particles=particles, meta=meta, half=h, start=a, stop=b,
                              projections=refs, mask=mask, options=simmx_options(p),
                              target=sims[-1], **common),
                ))  # fmt: skip
            cls = str(d / f"classify_{h}.npz")
            steps.append(Step(f"{it}_classify_{h}", S.classify_step,
                              deps=[f"{it}_simmx_{h}_{c:03d}" for c in range(1, len(sims) + 1)],
                              uses=CLASSIFY_USES, args=dict(simmx=sims, sep=p.sep, target=cls)))  # fmt: skip
            avgs = []
            for c, (lo, hi) in enumerate(chunks(n_refs, p.classes_per_step), 1):
                avgs.append(str(d / f"classavg_{h}_{c:03d}.npz"))
                steps.append(Step(
                    f"{it}_classavg_{h}_{c:03d}", S.classavg_step,
                    deps=[f"{it}_classify_{h}"], uses=CLASSAVG_USES,
                    args=dict(particles=particles, meta=meta, half=h, classify=cls,
                              projections=refs, lo=lo, hi=hi, options=classavg_options(p),
                              target=avgs[-1], **common),
                ))  # fmt: skip
            make3d[h] = str(d / f"threed_{h}_raw.mrc")
            itermask = str(prev / "mask.mrc") if k > 1 else ""
            steps.append(Step(
                f"{it}_make3d_{h}", S.make3d_step,
                deps=[f"{it}_classavg_{h}_{c:03d}" for c in range(1, len(avgs) + 1)],
                uses=MAKE3D_USES,
                args=dict(classavg=avgs, projections=refs, itermask=itermask, sym=p.sym,
                          options=make3d_options(p), target=make3d[h], **common),
            ))  # fmt: skip
        prev_post = f"{it}_postprocess"
        steps.append(Step(
            prev_post, S.postprocess_step, deps=[f"{it}_make3d_{h}" for h in halves],
            uses=POST_USES,
            args=dict(even=make3d["even"], odd=make3d["odd"], prev_dir=str(prev), out_dir=str(d),
                      pixel_size=px, targetres=p.targetres, automask=_dump(p.automask3d),
                      mass=p.mass, sym=p.sym, goldstandard=p.goldstandard),
        ))  # fmt: skip
    steps.append(Step("finish", finish_fn, deps=[s.name for s in steps if s.name != "prepare"]
                      [-1:] + ["prepare"], uses=["sym", "goldstandard", "apix"],
                      outputs=["volume", "filtered", "fsc", "particles", "classes"],
                      args=dict(finish_args, extra=str(extra), meta=meta, first=max(1, p.startiter),
                                last=p.iter, n_refs=n_refs, chunk=p.classes_per_step,
                                goldstandard=p.goldstandard, pixel_size=px, box=box)))  # fmt: skip
    return steps


def n_chunks(n: int, size: int) -> int:
    return max(1, math.ceil(n / size))
