"""The ``finish`` step of refine.projection_matching: outputs and ``extra/report.html``.

The particles' poses come from the last iteration: each particle's best class (its reference
projection's angles) composed with its final 2-D alignment from class averaging
(``poses_from_alignment``); shifts are written in Å (RELION origin sign).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emforge.engine import StepContext
from emforge.objects import FSC, Volume

from ._steps import _load_npz, _read_map, _write_map, _write_stack

__all__ = ["finish_step", "refined_poses"]


def refined_poses(d: Path, half: str, ref: str, n_refs: int, chunk: int) -> dict[str, np.ndarray]:
    """Poses (rot, tilt, psi; shifts px), class and score of one half's particles."""
    from emforge.protocols.refine import kernels as K

    cls = _load_npz(d / f"classify_{half}.npz")
    best = cls["reference"][:, 0]
    nh = len(best)
    angle, dx, dy = (np.zeros(nh) for _ in range(3))
    mirror = np.zeros(nh, bool)
    score = cls["score"][:, 0].astype(np.float64)
    # start from the similarity-matrix alignment, then take class averaging's final one
    angle[:], dx[:], dy[:], mirror[:] = (cls[k][:, 0] for k in ("angle", "dx", "dy", "mirror"))
    for c, lo in enumerate(range(0, n_refs, chunk), 1):
        z = _load_npz(d / f"classavg_{half}_{c:03d}.npz")
        m = z["members"]
        if not len(m):
            continue
        sel = (best[m] >= lo) & (best[m] < lo + chunk)
        rows = m[sel]
        angle[rows], dx[rows], dy[rows] = (z[k][sel, 0] for k in ("angle", "dx", "dy"))
        mirror[rows] = z["mirror"][sel, 0]
    eulers_ref = _load_npz(d / f"projections_{ref}.npz")["eulers"]
    eulers, shifts = K.poses_from_alignment(eulers_ref[best], angle, dx, dy, mirror)
    return {"eulers": eulers, "shifts": shifts, "class": best, "score": score}


def finish_step(
    ctx: StepContext, *, extra: str, meta: str, first: int, last: int, n_refs: int, chunk: int,
    goldstandard: bool, pixel_size: float, box: int, source_id: int, n: int, sym: str,
) -> dict:  # fmt: skip
    from ._steps import gather_classes

    ex = Path(extra)
    d = ex / f"iter_{last:02d}"
    md = _load_npz(meta)
    px = pixel_size
    # -- particles -----------------------------------------------------------------------
    cols = {k: np.zeros(n) for k in ("rot", "tilt", "psi", "shift_x", "shift_y", "score")}
    cols["class_id"] = np.zeros(n, np.int64)
    cols["subset"] = np.zeros(n, np.int64)
    for s, h in enumerate(("even", "odd"), 1):
        rows = md[h]
        r = refined_poses(d, h, h if goldstandard else "all", n_refs, chunk)
        for j, k in enumerate(("rot", "tilt", "psi")):
            cols[k][rows] = r["eulers"][:, j]
        cols["shift_x"][rows] = r["shifts"][:, 0] * px
        cols["shift_y"][rows] = r["shifts"][:, 1] * px
        cols["class_id"][rows] = r["class"] + 1
        cols["score"][rows] = r["score"]
        cols["subset"][rows] = s
    ctx.output_set_copy("particles", source_id, cols,
                        attrs={"refined_by": "refine.projection_matching", "symmetry": sym})  # fmt: skip
    # -- classes -------------------------------------------------------------------------
    stacks, crow = [], {k: [] for k in ("rot", "tilt", "psi", "class_id", "subset", "count",
                                        "quality")}  # fmt: skip
    gallery = {}
    for s, h in enumerate(("even", "odd"), 1):
        ref = h if goldstandard else "all"
        g = gather_classes([str(d / f"classavg_{h}_{c:03d}.npz")
                            for c in range(1, len(range(0, n_refs, chunk)) + 1)])  # fmt: skip
        eul = _load_npz(d / f"projections_{ref}.npz")["eulers"]
        used = np.flatnonzero(g["counts"] > 0)
        stacks.append(g["averages"][used])
        for j, k in enumerate(("rot", "tilt", "psi")):
            crow[k].append(eul[used, j])
        crow["class_id"].append(used + 1)
        crow["subset"].append(np.full(len(used), s))
        crow["count"].append(g["counts"][used])
        crow["quality"].append(g["quality"][used])
        gallery[h] = (g["averages"], g["counts"], d / f"projections_{ref}.mrcs")
    averages = np.concatenate(stacks)
    cpath = ctx.path("classes.mrcs")
    _write_stack(cpath, averages, px)
    ccols = {k: np.concatenate(v) for k, v in crow.items()}
    ccols["class_id"] = ccols["class_id"].astype(np.int64)
    ccols["subset"] = ccols["subset"].astype(np.int64)
    ccols["count"] = ccols["count"].astype(np.int64)
    ccols["quality"] = ccols["quality"].astype(np.float64)
    ccols.update(image_path=np.full(len(averages), str(cpath), dtype=object),
                 image_index=np.arange(len(averages), dtype=np.int64),
                 pixel_size=np.full(len(averages), px))  # fmt: skip
    ctx.output_set("classes", "SetOfParticles", ccols,
                   attrs={"box": [box, box], "pixel_size": px, "symmetry": sym})  # fmt: skip
    # -- maps ------------------------------------------------------------------------------
    even, odd = _read_map(d / "threed_even_raw.mrc"), _read_map(d / "threed_odd_raw.mrc")
    vpath = ctx.path("volume.mrc")
    _write_map(vpath, 0.5 * (even + odd), px)
    shape = (box, box, box)
    ctx.output("volume", Volume(str(vpath), px, shape, half1=str(d / "threed_even_raw.mrc"),
                                half2=str(d / "threed_odd_raw.mrc")))  # fmt: skip
    ctx.output("filtered", Volume(str(d / "threed.mrc"), px, shape, half1=str(d / "threed_even.mrc"),
                                  half2=str(d / "threed_odd.mrc")))  # fmt: skip
    f = _load_npz(d / "fsc.npz")
    from emforge.protocols.refine import kernels as K

    res = {t: float(K.eman_resolution(f["s"], f["fsc_masked"], t)) for t in (0.143, 0.5)}
    ctx.output("fsc", FSC(tuple(map(float, f["s"])), tuple(map(float, f["fsc_masked"])),
                          {"0.143": res[0.143], "0.5": res[0.5]},
                          label="gold-standard, masked" if goldstandard else "masked"))  # fmt: skip
    history = [
        (k, _load_npz(ex / f"iter_{k:02d}" / "fsc.npz")) for k in range(first, last + 1)
        if (ex / f"iter_{k:02d}" / "fsc.npz").exists()
    ]  # fmt: skip
    resolutions = [float(K.eman_resolution(h["s"], h["fsc_masked"], 0.143)) for _, h in history]
    _write_report(ctx, history, resolutions, cols, gallery, even + odd, _read_map(d / "threed.mrc"),
                  sym=sym, px=px, n=n, n_refs=n_refs, res=res[0.143])  # fmt: skip
    return {
        "resolution": res[0.143],
        "resolutions": resolutions,
        "iterations": [k for k, _ in history],
        "classes": int(len(averages)),
    }


def _write_report(ctx, history, resolutions, cols, gallery, raw, filtered, *, sym, px, n, n_refs,
                  res) -> None:  # fmt: skip
    from emforge.numerics import euler_zyz_to_matrix, view_direction
    from emforge.protocols.reconstruct._common import montage
    from emforge.protocols.sharpen._report import Panel, write_report

    from ._steps import read_rows

    panels = []
    if history:
        s = history[-1][1]["s"]
        panels.append(Panel("curves", "gold-standard FSC (masked) per iteration", s=s,
                            curves={f"iter {k}": h["fsc_masked"] for k, h in history},
                            ylabel="FSC", hlines=(0.143,), vlines={"0.143": res},
                            ylim=(-0.1, 1.05)))  # fmt: skip
        conv = {f"{k - 1}→{k} {h}": z[f"converge_{h}"] for k, z in history
                for h in ("even", "odd") if f"converge_{h}" in z}  # fmt: skip
        if conv:
            panels.append(Panel("curves", "convergence: FSC between successive iterations",
                                s=s, curves=conv, ylabel="FSC", ylim=(-0.1, 1.05)))  # fmt: skip
        x = np.array([k for k, _ in history], float)
        panels.append(Panel("scan", "resolution (FSC 0.143) vs iteration", x=x,
                            y=np.array(resolutions), best=int(np.argmin(resolutions)),
                            xlabel="iteration", ylabel="resolution (Å)"))  # fmt: skip
    # angular distribution: view directions as (azimuth, elevation) histogram
    rot = euler_zyz_to_matrix(np.stack([cols["rot"], cols["tilt"], cols["psi"]], 1))
    v = view_direction(rot)
    az = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360
    el = np.degrees(np.arccos(np.clip(v[:, 2], -1, 1)))
    hist, _, _ = np.histogram2d(el, az, bins=(18, 36), range=((0, 180), (0, 360)))
    panels.append(Panel("image", "angular distribution (particles per 10° bin)", image=hist,
                        label="particles", xlabel="azimuth (10° bins)",
                        ylabel="tilt of the view (10° bins)"))  # fmt: skip
    avg, counts, proj = gallery["even"]
    top = np.argsort(-counts, kind="stable")[:4]
    top = top[counts[top] > 0]
    if len(top):
        pr = read_rows(proj, top)
        rows = [np.hstack([montage(avg[j][None], 1), montage(pr[i][None], 1)])
                for i, j in enumerate(top)]  # fmt: skip
        panels.append(Panel("image", "class averages (left) beside their projections (right)",
                            image=np.vstack(rows), label="z-score", xlabel="x (px)",
                            ylabel="y (px)"))  # fmt: skip
    panels.append(Panel("slices", "central slices: raw halves' sum (left), filtered (right)",
                        before=raw, after=filtered))  # fmt: skip
    table = [
        ("resolution (gold-standard FSC 0.143, masked)", f"{res:.3g} Å"),
        ("per iteration", ", ".join(f"{r:.3g}" for r in resolutions) + " Å"),
        ("particles", str(n)),
        ("references per half", f"{n_refs} (symmetry {sym})"),
        ("pixel", f"{px:.4g} Å"),
    ]
    write_report(ctx.extra, "refine.projection_matching", panels, table)
