"""One refinement iteration (refine.projection_matching): time per particle, local vs Dask.

    python benchmarks/bench_refine.py [--sizes 2500,5000,10000] [--box 64] [--delta 5]
        [--workers 2] [--repeats 5] [--no-cold] [--no-dask] [--set KEY=VALUE] [--keep DIR]
        [--quick]

What is timed: one iteration of ``refine.projection_matching`` (``iter=1``, ``sym=c1``,
``delta=5`` -> 833 references in EMAN2's c1 asymmetric unit without mirrors, gold standard:
both halves) through ``Project.run``, as a user runs it: reading the particles, projecting
the references, the similarity matrix, classification, class averaging, reconstruction and
post-processing, writing the outputs and recording them in the project database. Excluded:
making the data (simulate.particles of EMD-3488 Fourier-cropped to 64³, or of the demo
phantom when ../shared/data is missing; 30 Å low-pass start), done in this process before
any timing, once per size.

Cases (docs/benchmarks.md):

* warm, local executor with ``--workers`` processes: ``warm`` (one untimed run, then
  ``--repeats`` runs in this process) for each size; the time per particle is the median over
  the particle count, and should not grow with it.
* cold, the largest size: a fresh process per repeat (``cold_call``: empty FFTW wisdom, numba
  and XDG caches, so it includes compiling the numba kernels), whole process and call alone,
  peak RSS of the process and its children.
* Dask: the same iteration on a ``distributed.LocalCluster`` with ``--workers`` worker
  processes (one thread each; the executor starts the cluster, which is timed as part of
  the run), warm; then the outputs of a local and a Dask run are compared: the refined poses,
  shifts, classes and scores of every particle and the voxels of the map and half maps must
  be identical.

Peer: none. EMAN2 (e2refine_easy.py / e2simmx.py) is not installable here: it is not on PyPI
(searched /work/.library/env/packages for eman2 and sparx: only the unrelated ``sparx``
data-munging package and ``scipion-em-eman2``, a Scipion wrapper that needs an EMAN2 binary
installation from conda); so the table has our side only. Threads: every case runs with the
thread variables of the calling shell (printed); the engine runs ``--workers`` processes.
``--quick``: 250/500/1000 particles at 32², δ = 15°, 5 repeats, no cold case: a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import ROOT, Stats, cold_call, machine, report, table, wait_quiet, warm  # noqa: E402

MAP = ROOT / ".." / "shared" / "data" / "maps" / "emd_3488.mrc"
POSE_COLUMNS = ("rot", "tilt", "psi", "shift_x", "shift_y")


def _params(delta: float) -> dict:
    extra = json.loads(os.environ.get("BENCH_REFINE_SET", "{}"))
    return {"iter": 1, "sym": "c1", "delta": delta, **extra}


def _cpu_with_children() -> float:
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def prepare(folder: Path, sizes: list[int], box: int) -> tuple[str, dict[int, str], str]:
    """A project with one simulated set per size and the starting model; returns
    (project path, {size: "RUN.particles"}, "RUN.volume")."""
    from emforge.demo import phantom
    from emforge.io import read_volume, write_volume
    from emforge.numerics import lowpass
    from emforge.project import Project
    from emforge.protocols.reconstruct.kernels import fourier_resize

    if MAP.is_file():
        data, what = read_volume(MAP)[0], "EMD-3488"
        px = 1.05 * data.shape[0] / box
        truth = fourier_resize(data, box)
    else:
        truth, what, px = phantom(box), "the demo phantom", 2.0 * 64 / box
    print(f"[data] {what} at {box}³, {px:.3f} Å/px; sizes {sizes}", flush=True)
    write_volume(folder / "truth.mrc", truth, voxel_size=px)
    write_volume(folder / "start.mrc", lowpass(truth, 30.0, pixel_size=px), voxel_size=px)
    proj = Project.init(folder / "project", exist_ok=True)
    imp = proj.run("import.volume", params={"path": str(folder / "truth.mrc")})
    start = proj.run("import.volume", params={"path": str(folder / "start.mrc")})
    sets = {}
    for n in sizes:
        rid = proj.run(
            "simulate.particles",
            params={"n": n, "snr": 0.1, "max_shift": 3.0, "seed": 5},
            inputs={"volume": f"{imp}.volume"},
            workers=2,
        )
        sets[n] = f"{rid}.particles"
    return str(proj.path), sets, f"{start}.volume"


def one_iteration(
    project: str, particles: str, model: str, delta: float, workers: int, executor: str
) -> int:
    """Open the project and run one refinement iteration; the run id (module-level: cold_call)."""
    from emforge.project import Project

    return Project.open(project).run(
        "refine.projection_matching", params=_params(delta),
        inputs={"particles": particles, "model": model}, workers=workers, executor=executor,
    )  # fmt: skip


def _outputs(project: str, rid: int) -> dict[str, np.ndarray]:
    from emforge.io import read_volume
    from emforge.project import Project

    out = Project.open(project).outputs(rid)
    parts = out["particles"]
    names = [c for c in (*POSE_COLUMNS, "class_id", "score") if c in parts.column_names()]
    arrays = {f"particles.{k}": v for k, v in parts.read(*names).items()}
    vol = out["volume"]
    for name, path in (("volume", vol.path), ("half1", vol.half1), ("half2", vol.half2)):
        if path:
            arrays[name] = read_volume(path)[0]
    return arrays


def compare_outputs(project: str, a: int, b: int) -> list[str]:
    """Names of the outputs that differ (bit for bit) between runs a and b; [] when identical."""
    x, y = _outputs(project, a), _outputs(project, b)
    if set(x) != set(y):
        return [f"different outputs: {sorted(set(x) ^ set(y))}"]
    return [k for k in x if not np.array_equal(x[k], y[k], equal_nan=True)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2500,5000,10000", help="particle counts")
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--delta", type=float, default=5.0, help="angular step (degrees)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold case")
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask case")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra refine.projection_matching params (JSON values)")  # fmt: skip
    ap.add_argument("--keep", type=Path, default=None, help="make the project in this folder")
    ap.add_argument("--quick", action="store_true", help="250/500/1000 at 32², δ 15°, no cold")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.box, args.delta, args.no_cold = "250,500,1000", 32, 15.0, True
    from emforge.demo import refine_installed
    from emforge.numerics import eman_orientations

    if not refine_installed():
        print("refine.projection_matching is not installed (the refinement family, #12)")
        return 2
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            extra[key] = json.loads(value)
        except ValueError:
            extra[key] = value
    os.environ["BENCH_REFINE_SET"] = json.dumps(extra)  # seen by _params here and in children
    sizes = sorted(int(s) for s in args.sizes.split(","))
    nref = len(eman_orientations("c1", args.delta))
    print(f"[machine] {machine()}")
    wait_quiet(timeout=60)
    print(f"[case] one iteration, c1, delta {args.delta}° ({nref} references), box {args.box}, "
          f"{args.workers} workers, {args.repeats} repeats, extra params {extra}", flush=True)  # fmt: skip
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-refine-"))
    folder.mkdir(parents=True, exist_ok=True)
    project, sets, model = prepare(folder, sizes, args.box)
    rows: list[tuple[str, Stats, Stats | None]] = []
    per_particle = []
    last: dict[str, int] = {}

    cpu_all: list[float] = []  # per call: this process + its reaped workers (warm's cpu: only ours)

    def case(n: int, executor: str):
        def fn() -> None:
            c0 = _cpu_with_children()
            last[executor] = one_iteration(project, sets[n], model, args.delta, args.workers,
                                           executor)  # fmt: skip
            cpu_all.append(_cpu_with_children() - c0)

        return fn

    def cpu_median() -> float:
        done = sorted(cpu_all[-args.repeats :])
        cpu_all.clear()
        return done[len(done) // 2]

    for n in sizes:
        st = warm(case(n, "local"), args.repeats, label=f"warm local n={n}")
        rows.append((f"warm, local x{args.workers}, n={n}", st, None))
        cpu = cpu_median()
        per_particle.append((n, st.median / n * 1e3, cpu / n * 1e3))
        print(f"  n={n}: {st.summary()}; cpu incl. worker processes {cpu:.1f} s", flush=True)
    big = sizes[-1]
    if not args.no_cold:
        st = cold_call(one_iteration, project, sets[big], model, args.delta, args.workers, "local",
                       repeats=args.repeats, label=f"cold local n={big}")  # fmt: skip
        inner = sorted(s.inner_wall for s in st.samples)
        rows.append((f"cold, local x{args.workers}, n={big} (whole process)", st, None))
        print(f"  cold n={big}: {st.summary()}; call alone median {inner[len(inner) // 2]:.2f} s")
    if not args.no_dask:
        st = warm(case(big, "dask"), args.repeats, label=f"warm dask n={big}")
        rows.append((f"warm, dask LocalCluster x{args.workers}, n={big}", st, None))
        print(f"  dask n={big}: {st.summary()}; cpu incl. reaped child processes "
              f"{cpu_median():.1f} s", flush=True)  # fmt: skip
        case(big, "local")()
        diff = compare_outputs(project, last["local"], last["dask"])
        print(f"[identical] local run {last['local']} vs dask run {last['dask']} (n={big}): "
              + ("identical poses, shifts, classes, scores and maps" if not diff
                 else f"DIFFERENT: {', '.join(diff)}"))  # fmt: skip
    print()
    print(report(rows, peer="EMAN2 (not installable)"))
    print()
    print(table([(n, f"{w:.3f}", f"{c:.3f}") for n, w, c in per_particle],
                ("particles", "ms/particle (wall, median)", "ms/particle (cpu incl. workers)")))  # fmt: skip
    ms = [w for _, w, _ in per_particle]
    print(f"time per particle, largest/smallest size: {max(ms) / min(ms):.2f}x")
    print(f"[machine at end] {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
