"""reconstruct.particles: direct Fourier reconstruction of a particle set with its poses.

Chunks of particles are inserted in parallel (one step each, on whatever executor the run
uses); every chunk writes its Fourier sums to ``extra/insert_KKK.npy``; the ``finish`` step
adds them in chunk order (so the result does not depend on where the chunks ran), makes the
map, its two half maps and their FSC.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import numpy as np

from emforge.engine import Input, Level, Output, Protocol, ProtocolParams, Step, StepContext, param
from emforge.objects import FSC, Volume

from ._common import CTF_COLUMNS, read_images, set_box, set_pixel_size, symmetry_problems

__all__ = ["ReconstructParticles"]

_POSE = ("rot", "tilt", "psi", "shift_x", "shift_y")


def insert_step(
    ctx: StepContext,
    *,
    sources: list[str],
    indices: np.ndarray,
    poses: np.ndarray,
    ctf_columns: dict[str, np.ndarray] | None,
    ctf: str,
    subset: np.ndarray,
    box: int,
    pixel_size: float,
    symmetry: str,
    convention: str,
    pad: float,
    target: str,
) -> dict:
    from emforge.io.mrc import atomic_target
    from emforge.numerics import euler_zyz_to_matrix, insert_images, symmetry_matrices

    from .kernels import ctf_stack

    images = read_images(sources, indices, (box, box))
    c = None
    if ctf != "none" and ctf_columns is not None:
        c = ctf_stack(box, pixel_size=pixel_size, columns=ctf_columns)
        if ctf == "phase_flip":
            c = np.sign(c).astype(np.float32)
    sym = None if symmetry.lower() == "c1" else symmetry_matrices(symmetry, convention=convention)
    acc = insert_images(
        images, euler_zyz_to_matrix(poses[:, :3]), shifts=poses[:, 3:5], pixel_size=pixel_size,
        ctf=c, subset=subset, symmetry=sym, pad=pad,
    )  # fmt: skip
    with atomic_target(target) as tmp, open(tmp, "wb") as fh:
        np.save(fh, acc.grid)
    ctx.progress(1.0, f"{len(indices)} particles inserted")
    return {"images": len(indices), "count": list(acc.count), "padded_box": acc.padded_box}


def finish_step(
    ctx: StepContext,
    *,
    targets: list[str],
    box: int,
    padded_box: int,
    pixel_size: float,
    ctf: str,
    origin: list[float],
) -> dict:
    from emforge.io import write_volume
    from emforge.numerics import FourierAccumulator, finish_reconstruction, fsc_crossing
    from emforge.protocols.sharpen._report import Panel, write_report

    from .kernels import wiener_shells

    grid = None
    for t in targets:  # fixed order: the same sum wherever the chunks ran
        part = np.load(t)
        grid = part if grid is None else grid + part
    acc = FourierAccumulator(grid, box, padded_box, "trilinear", (1, 1))
    rec = finish_reconstruction(acc, pixel_size=pixel_size)
    if ctf == "wiener":  # FSC-weighted Wiener constants per shell, from the plain halves' FSC
        tau = wiener_shells(0.5 * (acc.weight[0] + acc.weight[1]), box, rec.fsc)
        rec = finish_reconstruction(acc, wiener_constant=tau, pixel_size=pixel_size)
    paths = []
    for name, data in (("volume", rec.volume), ("half1", rec.half1), ("half2", rec.half2)):
        p = ctx.path(f"{name}.mrc")
        write_volume(p, data, voxel_size=pixel_size, origin=tuple(origin))
        paths.append(str(p))
    ctx.output(
        "volume",
        Volume(paths[0], pixel_size, (box, box, box), tuple(origin), paths[1], paths[2]),  # type: ignore[arg-type]
    )
    res = {k: fsc_crossing(rec.s, rec.fsc, t) for k, t in (("0.143", 0.143), ("0.5", 0.5))}
    ctx.output("fsc", FSC(tuple(rec.s), tuple(rec.fsc), res, label="unmasked"))
    write_report(
        ctx.extra,
        f"reconstruct.particles (ctf {ctf})",
        [
            Panel(
                "curves",
                "half-map FSC (unmasked)",
                s=rec.s,
                curves={"FSC": rec.fsc},
                ylabel="FSC",
                hlines=(0.143, 0.5),
                vlines={"0.143": res["0.143"]},
                ylim=(-0.1, 1.05),
            ),  # fmt: skip
            Panel("slices", "half 1 (left), full map (right)", before=rec.half1, after=rec.volume),
        ],
        [
            ("resolution (FSC 0.143)", f"{res['0.143']:.3g} Å"),
            ("FSC 0.5", f"{res['0.5']:.3g} Å"),
            ("box", f"{box} px at {pixel_size:.4g} Å/px, padded to {padded_box}"),
        ],  # fmt: skip
    )
    return {"resolution": res["0.143"], "fsc_0_5": res["0.5"]}


class ReconstructParticles(Protocol):
    id = "reconstruct.particles"
    version = "1"
    label = "Reconstruct a map from particles with known poses"
    help = (
        "Direct Fourier reconstruction (trilinear insertion into a padded grid, gridding correction) "
        "with the poses, shifts and CTF of the particle rows; two independent halves (even/odd "
        "or rlnRandomSubset) give the half maps and their FSC. The output volume carries its "
        "half maps, ready for sharpen.halfmaps."
    )

    class Params(ProtocolParams):
        symmetry: str = param(
            "c1", "Point group applied during insertion", section="Reconstruction"
        )
        convention: Literal["eman", "relion"] = param(
            "eman",
            "Axes of the point group: EMAN2's or RELION's (they differ for tet and icos)",
            section="Reconstruction",
            level=Level.ADVANCED,
        )
        pad: float = param(2.0, "Padding factor of the Fourier grid", section="Reconstruction",
                           ge=1, le=4)  # fmt: skip
        ctf: Literal["none", "phase_flip", "wiener"] = param(
            "wiener",
            "CTF correction: none; phase_flip (insert sign(CTF)·image, weight 1); wiener (insert "
            "CTF·image, divide by ΣCTF² + an FSC-derived constant per shell)",
            section="Reconstruction",
        )
        split: Literal["even_odd", "random_subset"] = param(
            "even_odd",
            "Halves: alternate particles of the set (even_odd) or the rows' subset column "
            "(rlnRandomSubset, 1 or 2)",
            section="Reconstruction",
        )
        parts: int = param(
            0,
            "Chunks of particles inserted in parallel; 0: one per worker, at most one per 500 particles",
            section="Execution",
            ge=0,
        )

    inputs = {"particles": Input(("SetOfParticles",), "particles with poses (and CTF)")}
    outputs = {
        "volume": Output("Volume", "the reconstruction, with its two half maps"),
        "fsc": Output("FSC", "the FSC between the half maps (unmasked)"),
    }

    def validate(self) -> list[str]:
        p, parts = self.params, self.input["particles"]
        n = len(parts)
        if n == 0:
            return ["input 'particles': the set is empty"]
        problems = symmetry_problems(p.symmetry, convention=p.convention)
        box = set_box(parts)
        if box[0] != box[1]:
            problems.append(f"input 'particles': images must be square, got {box[1]}x{box[0]} px")
        if p.parts > n:
            problems.append(
                f"param 'parts': {p.parts} chunks for {n} particle(s); give at most {n}"
            )
        cols = parts.read(*_POSE, "subset", "pixel_size", *CTF_COLUMNS)
        if not all(np.all(np.isfinite(cols[k])) for k in _POSE):
            problems.append(
                "input 'particles': some rows have no pose (rot/tilt/psi/shifts not finite)"
            )
        px = cols["pixel_size"]
        if not np.all(np.isfinite(px) & (px > 0)) or np.ptp(px) > 1e-3 * np.median(px):
            problems.append("input 'particles': pixel sizes must be set and equal for every row")
        if p.split == "random_subset" and not np.all(np.isin(cols["subset"], (1, 2))):
            bad = int(np.sum(~np.isin(cols["subset"], (1, 2))))
            problems.append(
                f"param 'split': random_subset needs subset 1 or 2 on every row; {bad} row(s) have "
                "neither (use even_odd)"
            )
        elif len(np.unique(self._subset(cols["subset"]))) < 2:
            problems.append(
                "input 'particles': both halves need particles (give at least 2, in both subsets)"
            )
        if p.ctf != "none":
            missing = [k for k in CTF_COLUMNS if not np.all(np.isfinite(cols[k]))]
            if missing:
                problems.append(
                    f"param 'ctf': {p.ctf} needs the CTF columns; {', '.join(missing)} missing "
                    "on some rows (use ctf=none)"
                )
        return problems

    def _subset(self, subset: np.ndarray) -> np.ndarray:
        if self.params.split == "random_subset":
            return subset.astype(np.int64)
        return (np.arange(len(subset)) % 2 + 1).astype(np.int64)

    def steps(self) -> list[Step]:
        p, parts = self.params, self.input["particles"]
        cols = parts.read("image_path", "image_index", *_POSE, "subset", *CTF_COLUMNS)
        n = len(cols["image_index"])
        k = p.parts or max(1, min(os.cpu_count() or 1, math.ceil(n / 500)))
        edges = np.linspace(0, n, k + 1).astype(int)
        box, px = set_box(parts)[0], set_pixel_size(parts)
        poses = np.stack([cols[c] for c in _POSE], axis=1)
        subset = self._subset(cols["subset"])
        common = dict(box=box, pixel_size=px, symmetry=p.symmetry, convention=p.convention,
                      pad=p.pad, ctf=p.ctf)  # fmt: skip
        steps, targets = [], []
        for i in range(k):
            a, b = int(edges[i]), int(edges[i + 1])
            target = str(self.workdir / "extra" / f"insert_{i + 1:03d}.npy") if self.workdir else ""
            targets.append(target)
            ctf_cols = {c: cols[c][a:b] for c in CTF_COLUMNS} if p.ctf != "none" else None
            steps.append(
                Step(
                    f"insert_{i + 1:03d}",
                    insert_step,
                    args=dict(
                        sources=cols["image_path"][a:b].tolist(),
                        indices=cols["image_index"][a:b],
                        poses=poses[a:b],
                        ctf_columns=ctf_cols,
                        subset=subset[a:b],
                        target=target,
                        **common,
                    ),  # fmt: skip
                )
            )
        from emforge.numerics.projection import padded_size

        steps.append(
            Step(
                "finish",
                finish_step,
                deps=[s.name for s in steps],
                outputs=["volume", "fsc"],
                args=dict(
                    targets=targets,
                    box=box,
                    padded_box=padded_size(box, p.pad),
                    pixel_size=px,
                    ctf=p.ctf,
                    origin=[0.0, 0.0, 0.0],
                ),  # fmt: skip
            )
        )
        return steps

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = results.get("finish", {})
        return (
            f"resolution {r.get('resolution', float('nan')):.3g} Å (half-map FSC 0.143, unmasked); "
            "report extra/report.html"
        )
