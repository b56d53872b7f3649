"""The demo: a project built from data emforge generates itself, run through a template.

``emforge demo PATH`` shows the main job, particles in and a post-processed map out, on data
it makes itself (a fresh clone has no ``../shared``): a synthetic "molecule" (240 Gaussian
atoms in 8 domains, no symmetry, :func:`phantom`) and a 30 Å low-pass of it as the starting
model. The template ``templates/demo_refine.json`` then simulates noisy CTF-modulated
particles from the phantom (``simulate.particles``), refines them from the starting model
(``refine.projection_matching``, gold standard), masks the result (``automask.auto3d``),
sharpens it from its half maps (``sharpen.halfmaps``) and maps its local resolution
(``analysis.local_resolution``). The last line says where the reports are and the
resolution reached.

When the refinement family is not installed, the demo runs the older post-processing
template ``templates/demo.json`` (import a map with half maps and a particle STAR file,
mask, sharpen, mask the particles) on data from :func:`make_demo_data`.

Everything is seeded: the same command gives the same files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from .project import Project

__all__ = [
    "make_demo_data",
    "make_refine_demo_data",
    "phantom",
    "run_demo",
    "DEMO_TEMPLATE",
    "REFINE_DEMO_TEMPLATE",
]

BOX = 64
PIXEL = 2.0
N_PARTICLES = 200
DEMO_TEMPLATE = "demo.json"
REFINE_DEMO_TEMPLATE = "demo_refine.json"
REFINE_PROTOCOL = "refine.projection_matching"
START_RESOLUTION = 30.0  # Å, low-pass of the phantom that starts the refinement


def _blobs(box: int, rng: np.random.Generator) -> np.ndarray:
    """A compact synthetic molecule: 24 Gaussian 'atoms' groups inside radius box/4."""
    zz, yy, xx = np.ogrid[:box, :box, :box]
    c = box // 2
    vol = np.zeros((box, box, box), np.float32)
    for _ in range(24):
        p = rng.normal(0, box / 10, 3)
        s = rng.uniform(1.5, 3.0)
        vol += np.exp(
            -(((zz - c - p[0]) ** 2 + (yy - c - p[1]) ** 2 + (xx - c - p[2]) ** 2) / (2 * s * s))
        ).astype(np.float32)
    return vol


def _euler_zyz(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION ZYZ rotation matrix (x, y, z basis) for angles in degrees."""
    a, b, g = np.deg2rad([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    return np.array(
        [
            [cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
            [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
            [sb * ca, sb * sa, cb],
        ]
    )


def _project(vol: np.ndarray, rot: float, tilt: float, psi: float) -> np.ndarray:
    from scipy.ndimage import affine_transform

    r = _euler_zyz(rot, tilt, psi)  # maps map coordinates to the particle frame (x, y, z)
    rzyx = r[::-1, ::-1]
    c = np.array(vol.shape) // 2
    offset = c - rzyx.T @ c
    rotated = affine_transform(vol, rzyx.T, offset=offset, order=1)
    return rotated.sum(axis=0)


def make_demo_data(folder: Path, *, seed: int = 7) -> dict[str, str]:
    """Write the demo's map, half maps, particle stack and STAR file; returns their paths."""
    from .io import write_particles_star, write_stack, write_volume

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vol = _blobs(BOX, rng)
    vol /= vol.max()
    paths = {
        "map": folder / "demo_map.mrc",
        "half1": folder / "demo_half1.mrc",
        "half2": folder / "demo_half2.mrc",
        "stack": folder / "demo_particles.mrcs",
        "star": folder / "demo_particles.star",
    }
    write_volume(paths["map"], vol, voxel_size=PIXEL)
    for name in ("half1", "half2"):
        write_volume(
            paths[name], vol + rng.normal(0, 0.05, vol.shape).astype(np.float32), voxel_size=PIXEL
        )
    rot, psi = rng.uniform(-180, 180, (2, N_PARTICLES))
    tilt = np.rad2deg(np.arccos(rng.uniform(-1, 1, N_PARTICLES)))
    images = np.stack([_project(vol, *ang) for ang in zip(rot, tilt, psi, strict=True)]).astype(
        np.float32
    )
    images += rng.normal(0, images.std(), images.shape).astype(np.float32)
    write_stack(paths["stack"], images, voxel_size=PIXEL)
    defocus = rng.uniform(8000, 25000, N_PARTICLES)
    cols = {
        "image_path": np.full(N_PARTICLES, str(paths["stack"]), dtype=object),
        "image_index": np.arange(N_PARTICLES),
        "pixel_size": np.full(N_PARTICLES, PIXEL),
        "rot": rot,
        "tilt": tilt,
        "psi": psi,
        "shift_x": np.zeros(N_PARTICLES),
        "shift_y": np.zeros(N_PARTICLES),
        "defocus_u": defocus,
        "defocus_v": defocus - rng.uniform(0, 500, N_PARTICLES),
        "defocus_angle": rng.uniform(0, 180, N_PARTICLES),
        "voltage": np.full(N_PARTICLES, 300.0),
        "cs": np.full(N_PARTICLES, 2.7),
        "amplitude_contrast": np.full(N_PARTICLES, 0.1),
        "micrograph": np.array(
            [f"mic_{i // 20:03d}.mrc" for i in range(N_PARTICLES)], dtype=object
        ),
        "coord_x": rng.uniform(100, 3900, N_PARTICLES),
        "coord_y": rng.uniform(100, 3900, N_PARTICLES),
        "subset": (np.arange(N_PARTICLES) % 2) + 1,
    }
    write_particles_star(paths["star"], cols, image_size=BOX)
    return {k: str(v) for k, v in paths.items()}


def phantom(box: int = BOX, *, seed: int = 7) -> np.ndarray:
    """The refinement demo's molecule: ``(box, box, box)`` float32, max 1, no symmetry.

    240 Gaussian "atoms" (σ = 1 px, weights 0.5–1) in 8 domains whose centres are spread by
    box/10 about the box centre (atoms by box/25 about their domain): detail down to about
    3 px, so that a refinement has high-resolution signal to recover (the older demo's
    blobs, σ 1.5–3 px, have almost none beyond 5 px).
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    c = box // 2
    domains = rng.normal(0.0, box / 10, (8, 3))
    atoms = domains[rng.integers(0, 8, 240)] + rng.normal(0.0, box / 25, (240, 3))
    atoms = np.clip(atoms + c, 2, box - 3)
    vol = np.zeros((box, box, box), np.float64)
    base = np.floor(atoms).astype(int)
    frac = atoms - base
    weight = rng.uniform(0.5, 1.0, 240)
    for corner in np.ndindex(2, 2, 2):  # trilinear splat of each atom, then one blur
        w = weight * np.prod(np.where(np.array(corner), frac, 1 - frac), axis=1)
        idx = base + np.array(corner)
        np.add.at(vol, (idx[:, 2], idx[:, 1], idx[:, 0]), w)
    vol = gaussian_filter(vol, 1.0, mode="constant")
    return (vol / vol.max()).astype(np.float32)


def make_refine_demo_data(folder: Path, *, seed: int = 7) -> dict[str, str]:
    """Write the phantom and the starting model (its 30 Å low-pass); returns their paths."""
    from .io import write_volume
    from .numerics import lowpass

    folder.mkdir(parents=True, exist_ok=True)
    vol = phantom(BOX, seed=seed)
    paths = {"phantom": folder / "phantom.mrc", "model": folder / "initial_model.mrc"}
    write_volume(paths["phantom"], vol, voxel_size=PIXEL)
    start = lowpass(vol, START_RESOLUTION, pixel_size=PIXEL)
    write_volume(paths["model"], start, voxel_size=PIXEL)
    return {k: str(v) for k, v in paths.items()}


def load_demo_template(name: str = DEMO_TEMPLATE) -> dict[str, Any]:
    return json.loads((files("emforge.templates") / name).read_text(encoding="utf-8"))


def refine_installed(registry: Any = None) -> bool:
    """Whether the refinement family (``refine.projection_matching``) is installed."""
    if registry is None:
        from .plugins import default_registry

        registry = default_registry()
    return REFINE_PROTOCOL in registry


def _fill(raw: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    for node in raw["nodes"]:
        for key, value in list(node.get("params", {}).items()):
            if isinstance(value, str) and value.startswith("$"):
                node["params"][key] = data[value[1:]]
    return raw


def _report(project: Project, runs: dict[str, int], node: str) -> Path:
    from .engine.runs import run_row

    return Path(run_row(project, runs[node])["workdir"]) / "extra" / "report.html"


def run_demo(
    path: Path,
    *,
    workers: int | None = None,
    echo: Callable[[str], Any] = print,
    refine: bool | None = None,
) -> dict[str, int]:
    """Create (or reuse) the demo project at ``path`` and run the demo template on it.

    ``refine`` None: the refinement demo when ``refine.projection_matching`` is installed,
    else the post-processing demo; True / False force one.
    """
    import time

    from .engine.templates import Template, run_template

    t0 = time.perf_counter()
    path = Path(path).expanduser().resolve()
    refine = refine_installed() if refine is None else refine
    echo(f"emforge demo: generating data in {path / 'data'}")
    if refine:
        data = make_refine_demo_data(path / "data")
        raw = load_demo_template(REFINE_DEMO_TEMPLATE)
    else:
        data = make_demo_data(path / "data")
        raw = load_demo_template(DEMO_TEMPLATE)
    project = Project.init(path, exist_ok=True)
    tpl = Template.model_validate(_fill(raw, data))

    def event(node: str, what: str, run_id: int) -> None:
        echo(f"  {node}: run {run_id} {'skipped (fresh)' if what == 'fresh' else what}")

    runs = run_template(project, tpl, workers=workers, on_event=event)
    fsc = project.outputs(runs["postprocess"])["fsc"]
    res = fsc.crossings.get("0.143", float("nan"))
    echo(
        f"emforge demo: done in {time.perf_counter() - t0:.0f} s. Project: {project.path} "
        f"({project.db_path.name}); try: emforge runs list -P {project.path}"
    )
    if refine:
        echo(
            f"emforge demo: resolution reached {res:.1f} Å (gold standard, masked FSC 0.143 of "
            f"sharpen.halfmaps); reports: {_report(project, runs, 'refine')} (refinement), "
            f"{_report(project, runs, 'postprocess')} (post-processing)"
        )
    else:
        echo(
            f"emforge demo: resolution {res:.1f} Å (masked FSC 0.143 of sharpen.halfmaps); "
            f"report: {_report(project, runs, 'postprocess')}"
        )
    return runs
