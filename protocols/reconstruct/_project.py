"""project.volume: Fourier-slice projections of a map into a set of orientations.

Orientations come from EMAN2's "eman" generator over the asymmetric unit of ``symmetry``
(angular step ``delta``, optionally with the mirror half), or are ``n`` uniformly random ones.
The output set holds the projections (one MRC stack) with their poses; no CTF, no shifts.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from emforge.engine import (
    Input,
    Output,
    Protocol,
    ProtocolParams,
    ShownWhen,
    Step,
    StepContext,
    param,
)
from emforge.objects import Volume

from ._common import montage_panel, symmetry_problems, write_particles_stack

__all__ = ["ProjectVolume"]

_BLOCK = 256


def orientations(mode: str, *, delta: float, symmetry: str, inc_mirror: bool, n: int, seed: int):
    """Pose matrices (N, 3, 3) for :class:`ProjectVolume`'s params."""
    from emforge.numerics import eman_orientations, eman_to_matrix, random_rotations

    if mode == "random":
        return random_rotations(n, seed=seed)
    return eman_to_matrix(
        eman_orientations(symmetry, delta, inc_mirror=inc_mirror).astype(np.float64)
    )


def project_step(
    ctx: StepContext, *, volume: dict, mode: str, delta: float, symmetry: str, inc_mirror: bool,
    n: int, seed: int, pad: float,
) -> dict:  # fmt: skip
    from emforge.io import read_volume
    from emforge.numerics import matrix_to_euler_zyz, prepare_volume, project_fourier
    from emforge.protocols.sharpen._report import write_report

    src = Volume.from_attrs(volume)
    data = read_volume(src.path)[0]
    rot = orientations(mode, delta=delta, symmetry=symmetry, inc_mirror=inc_mirror, n=n, seed=seed)
    count, box = len(rot), data.shape[0]
    prepared = prepare_volume(data, pad=pad)
    first: list[np.ndarray] = []

    def blocks():
        for a in range(0, count, _BLOCK):
            b = min(count, a + _BLOCK)
            img = project_fourier(prepared, rot[a:b])
            if not first:
                first.append(img[:16].copy())
            ctx.progress(b / count, f"{b}/{count} projections")
            yield a, img

    path = str(ctx.path("projections.mrcs"))
    write_particles_stack(path, blocks(), (count, box, box), src.pixel_size)
    ang = matrix_to_euler_zyz(rot)
    cols = {
        "image_path": np.full(count, path, dtype=object),
        "image_index": np.arange(count, dtype=np.int64),
        "pixel_size": np.full(count, src.pixel_size),
        "rot": ang[:, 0],
        "tilt": ang[:, 1],
        "psi": ang[:, 2],
    }
    ctx.output_set(
        "particles", "SetOfParticles", cols,
        attrs={"box": [box, box], "pixel_size": src.pixel_size, "symmetry": symmetry},
    )  # fmt: skip
    write_report(
        ctx.extra,
        f"project.volume ({mode})",
        [
            montage_panel(first[0], "first projections"),
        ],  # fmt: skip
        [("projections", str(count)), ("box", f"{box} px at {src.pixel_size:.4g} Å/px")],
    )
    return {"count": count}


class ProjectVolume(Protocol):
    id = "project.volume"
    version = "1"
    label = "Project a map into 2D images"
    help = (
        "Fourier-slice projections (padded, trilinear, gridding-corrected) of a map, into EMAN2's "
        "orientations of an asymmetric unit (delta, symmetry, inc_mirror) or n random ones. "
        "The output particles hold their poses."
    )

    class Params(ProtocolParams):
        mode: Literal["eman", "random"] = param(
            "eman",
            "Orientations: EMAN2's even set over the asymmetric unit, or random",
            section="Orientations",
        )
        delta: float = param(
            15.0, "Angular step between views", unit="deg", section="Orientations", gt=0, le=90,
            shown_when=ShownWhen("mode", "==", "eman"),
        )  # fmt: skip
        symmetry: str = param(
            "c1", "Point group whose asymmetric unit is covered (EMAN2 axes)", section="Orientations",
            shown_when=ShownWhen("mode", "==", "eman"),
        )  # fmt: skip
        inc_mirror: bool = param(
            False, "Also cover the mirror half of the asymmetric unit", section="Orientations",
            shown_when=ShownWhen("mode", "==", "eman"),
        )  # fmt: skip
        n: int = param(
            100, "Number of random orientations", section="Orientations", ge=1, le=10_000_000,
            shown_when=ShownWhen("mode", "==", "random"),
        )  # fmt: skip
        seed: int = param(0, "Random seed", section="Orientations", ge=0,
                          shown_when=ShownWhen("mode", "==", "random"))  # fmt: skip
        pad: float = param(2.0, "Padding factor of the map before its FFT", section="Projection",
                           ge=1, le=4)  # fmt: skip

    inputs = {"volume": Input(("Volume",), "the map to project")}
    outputs = {"particles": Output("SetOfParticles", "the projections with their poses")}

    def validate(self) -> list[str]:
        p, vol = self.params, self.input["volume"]
        problems = symmetry_problems(p.symmetry) if p.mode == "eman" else []
        if len(set(vol.shape)) != 1:
            problems.append(
                f"input 'volume': must be a cubic map, got {vol.shape[2]}x{vol.shape[1]}x{vol.shape[0]}"
            )
        if p.mode == "eman" and not problems:
            from emforge.numerics import eman_orientations

            count = len(eman_orientations(p.symmetry, p.delta, inc_mirror=p.inc_mirror))
            if count == 0:
                problems.append(f"param 'delta': {p.delta}° gives no orientation for {p.symmetry}")
        return problems

    def steps(self) -> list[Step]:
        return [
            Step(
                "project",
                project_step,
                outputs=["particles"],
                args=dict(volume=self.input["volume"].to_attrs(), **self.params.model_dump()),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        return f"{results.get('project', {}).get('count')} projections; report extra/report.html"
