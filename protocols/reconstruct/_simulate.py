"""simulate.particles: noisy, CTF-modulated projections of a map with known poses.

The rows of the output set hold the true poses, shifts and CTF, so a reconstruction with them
is the oracle; images go to one MRC stack in ``extra/``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emforge.engine import Input, Level, Output, Protocol, ProtocolParams, Step, StepContext, param
from emforge.objects import Volume

from ._common import montage_panel, symmetry_problems, write_particles_stack

__all__ = ["SimulateParticles"]

_BLOCK = 256  # images projected at a time


def simulate_step(
    ctx: StepContext,
    *,
    volume: dict,
    n: int,
    box: int,
    snr: float,
    defocus_min: float,
    defocus_max: float,
    max_shift: float,
    symmetry: str,
    seed: int,
    voltage: float,
    cs: float,
    amplitude_contrast: float,
) -> dict:
    from emforge.io import read_volume
    from emforge.numerics import prepare_volume
    from emforge.protocols.sharpen._report import Panel, write_report

    from .kernels import (
        ctf_stack,
        fourier_resize,
        noise_sigma,
        particle_radius,
        simulate_images,
        simulated_poses,
    )

    src = Volume.from_attrs(volume)
    data = read_volume(src.path)[0]
    box = box or data.shape[0]
    px = src.pixel_size * data.shape[0] / box
    vol = fourier_resize(data, box)
    poses = simulated_poses(
        n, pixel_size=px, defocus_range=(defocus_min * 1e4, defocus_max * 1e4),
        max_shift=max_shift, symmetry=symmetry, seed=seed,
    )  # fmt: skip
    cols: dict[str, Any] = {
        "rot": poses.angles[:, 0],
        "tilt": poses.angles[:, 1],
        "psi": poses.angles[:, 2],
        "shift_x": poses.shifts[:, 0],
        "shift_y": poses.shifts[:, 1],
        "defocus_u": poses.defocus,
        "defocus_v": poses.defocus,
        "defocus_angle": np.zeros(n),
        "voltage": np.full(n, voltage),
        "cs": np.full(n, cs),
        "amplitude_contrast": np.full(n, amplitude_contrast),
        "phase_shift": np.zeros(n),
    }
    prepared = prepare_volume(vol)
    radius = particle_radius(vol)

    def clean(a: int, b: int) -> np.ndarray:
        ctf = ctf_stack(box, pixel_size=px, columns={k: v[a:b] for k, v in cols.items()})
        return simulate_images(prepared, poses.angles[a:b], poses.shifts[a:b], ctf, pixel_size=px)

    # the noise level: from the signal variance of (up to) the first block of clean images
    sigma = noise_sigma(clean(0, min(n, _BLOCK)), radius, snr)
    rng = np.random.default_rng([seed, 2])
    first: list[np.ndarray] = []

    def blocks():
        for a in range(0, n, _BLOCK):
            b = min(n, a + _BLOCK)
            img = clean(a, b)
            img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
            if not first:
                first.append(img[:16].copy())
            ctx.progress(b / n, f"{b}/{n} particles")
            yield a, img

    path = str(ctx.path("particles.mrcs"))
    write_particles_stack(path, blocks(), (n, box, box), px)
    cols.update(
        image_path=np.full(n, path, dtype=object),
        image_index=np.arange(n, dtype=np.int64),
        pixel_size=np.full(n, px),
        subset=(np.arange(n) % 2 + 1).astype(np.int64),
    )
    attrs = {"box": [box, box], "pixel_size": px, "symmetry": symmetry, "snr": snr}
    ctx.output_set("particles", "SetOfParticles", cols, attrs=attrs)
    write_report(
        ctx.extra,
        "simulate.particles",
        [
            montage_panel(first[0], "first particles"),
            Panel("slices", "map", before=data if box == data.shape[0] else vol, after=vol),
        ],
        [
            ("particles", str(n)),
            ("box", f"{box} px at {px:.4g} Å/px"),
            ("SNR", f"{snr:g} inside a radius of {radius:.1f} px (noise σ {sigma:.4g})"),
            ("defocus", f"{defocus_min:g}–{defocus_max:g} µm"),
        ],
    )
    return {"count": n, "box": box, "pixel_size": px, "noise_sigma": sigma, "radius_px": radius}


class SimulateParticles(Protocol):
    id = "simulate.particles"
    version = "1"
    label = "Simulate particles from a map"
    help = (
        "Project a map into n uniformly random orientations with random shifts, apply a CTF with "
        "random defocus and add white Gaussian noise at a given SNR. The output rows hold the true "
        "poses, shifts and CTF (a reconstruction with them is the oracle)."
    )

    class Params(ProtocolParams):
        n: int = param(1000, "Number of particles", section="Particles", ge=1, le=10_000_000)
        box: int = param(
            0,
            "Image side: the map is Fourier-cropped (or padded) to box³ first; 0: the map's box",
            unit="px",
            section="Particles",
            ge=0,
        )
        snr: float = param(
            0.1,
            "Signal variance / noise variance, the signal taken inside the particle (the sphere "
            "holding 99% of the map's positive density)",
            section="Particles",
            gt=0,
        )
        defocus_min: float = param(
            1.0, "Smallest defocus (underfocus)", unit="µm", section="CTF", gt=0
        )
        defocus_max: float = param(
            3.0, "Largest defocus (underfocus)", unit="µm", section="CTF", gt=0
        )
        voltage: float = param(300.0, "Acceleration voltage", unit="kV", section="CTF",
                               level=Level.ADVANCED, gt=0)  # fmt: skip
        cs: float = param(2.7, "Spherical aberration", unit="mm", section="CTF",
                          level=Level.ADVANCED, ge=0)  # fmt: skip
        amplitude_contrast: float = param(0.1, "Amplitude contrast fraction", section="CTF",
                                          level=Level.ADVANCED, ge=0, lt=1)  # fmt: skip
        max_shift: float = param(
            0.0, "Largest random shift per axis", unit="px", section="Particles", ge=0
        )
        symmetry: str = param(
            "c1",
            "Point group of the map (EMAN2 axes); poses are drawn in its asymmetric unit",
            section="Particles",
        )
        seed: int = param(0, "Random seed (same seed, same particles)", section="Particles", ge=0)

    inputs = {"volume": Input(("Volume",), "the map to project")}
    outputs = {
        "particles": Output(
            "SetOfParticles", "the simulated particles with their true poses and CTF"
        )
    }

    def validate(self) -> list[str]:
        p, vol = self.params, self.input["volume"]
        problems = symmetry_problems(p.symmetry)
        n = vol.shape[0]
        if len(set(vol.shape)) != 1:
            problems.append(
                f"input 'volume': must be a cubic map, got {vol.shape[2]}x{vol.shape[1]}x{vol.shape[0]}"
            )
        if p.box == 1:
            problems.append("param 'box': must be 0 (the map's box) or >= 2 px")
        if p.defocus_max < p.defocus_min:
            problems.append(
                f"param 'defocus_max': {p.defocus_max} µm is below defocus_min ({p.defocus_min} µm)"
            )
        box = p.box or n
        if p.max_shift >= box / 2:
            problems.append(
                f"param 'max_shift': {p.max_shift} px must be below half the box ({box / 2:g} px)"
            )
        return problems

    def steps(self) -> list[Step]:
        args = self.params.model_dump()
        return [
            Step(
                "simulate",
                simulate_step,
                outputs=["particles"],
                args=dict(volume=self.input["volume"].to_attrs(), **args),
            )
        ]

    def summary(self, outputs: dict[str, Any], results: dict[str, Any]) -> str:
        r = results.get("simulate", {})
        return (
            f"{r.get('count')} particles, {r.get('box')} px at {r.get('pixel_size', 0):.4g} Å/px, "
            f"noise σ {r.get('noise_sigma', 0):.4g}; report extra/report.html"
        )
