"""Acceptance run of the refinement family (#12): projection matching on simulated EMD-3488 particles.

    python benchmarks/refine_acceptance.py [--sym c2,c1] [--n 3000] [--iter 6] [--delta 5]
        [--workers 2] [--executor local] [--set KEY=VALUE ...] [--keep DIR] [--quick]

This is a script, not a test: it takes minutes to hours on 2 cores. What it does:

1. Data (``../shared/data/maps/emd_3488.mrc``, 100³ at 1.05 Å/px): the truth is the map
   Fourier-cropped to 64³ (1.641 Å/px). Its 2-fold axis is z (CC of the map with its 180°
   rotation about z: 0.9999), so ``c2`` in EMAN2's axes applies to it as it is.
2. ``simulate.particles``: ``--n`` particles of the truth, uniformly random views over the
   whole sphere, shifts uniform in ±3 px, defocus 1–3 µm, SNR 0.1 (seeded). One set for all runs.
3. Oracle: ``reconstruct.particles`` of that set with its true poses (Wiener CTF correction,
   the run's symmetry).
4. Start: a 30 Å low-pass of the truth rotated by 20° (about z for c2, which keeps the 2-fold
   on z; about (1, 2, 3)/√14 for c1).
5. ``refine.projection_matching`` (gold standard, its default) with ``iter``, ``sym`` and
   ``delta``, plus any ``--set`` params, on the chosen executor.
6. Scoring (``_refine_truth.py``): the refined map is in the start's frame, so the truth is
   first put into it by a rotational search (global at 10° on 24³, local to 0.3° on 48³, then
   the shift); the same search against the mirrored truth is the hand check (correct hand:
   a higher CC with the truth than with its mirror). All FSCs with the truth use one soft
   sphere (the truth's 99%-density radius + 3 px, 4 px cosine edge) on both maps.

Printed per symmetry, with the #12 pass rules:

* FSC-with-truth(0.5) resolution of the refined map vs the oracle's: ≤ 1.3×;
* median angular error (refined pose in the truth frame vs true pose, smallest over the
  truth's own c2 operators, also for the c1 run) vs 1.5 × the angular step (``delta``);
* the hand;
* the refinement's reported gold-standard resolution (its ``fsc`` output, 0.143) vs the
  truth FSC(0.5) resolution: within ±20%.

Wall and CPU time of each stage and the load average (start and end) are printed with them:
on a shared machine the times are upper bounds. ``--quick``: 600 particles at 32³, 2
iterations, δ = 15°, for a smoke test of the script (the pass rules are printed but mean
little there).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _refine_truth as rt  # noqa: E402
from _common import ROOT, machine  # noqa: E402

MAP = ROOT / ".." / "shared" / "data" / "maps" / "emd_3488.mrc"
START_ROTATION = {"c2": (0.0, 0.0, 1.0), "c1": (1.0, 2.0, 3.0)}
START_ANGLE, START_RES = 20.0, 30.0
#: the truth's own point group: errors are taken modulo it for every run (a c1 refinement of
#: a c2 object may put any particle at either of two equivalent poses)
TRUTH_SYM = "c2"


def _cpu() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


class Clock:
    """Wall and CPU (this process and its waited-for children) of each stage."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    def run(self, label: str, fn, *args, **kwargs):
        t0, c0 = time.perf_counter(), _cpu()
        out = fn(*args, **kwargs)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        self.rows.append((label, wall, cpu))
        la = os.getloadavg()[0]
        print(f"  [{label}] {wall:.1f} s wall, {cpu:.1f} s cpu (load {la:.1f})", flush=True)
        return out


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def prepare(folder: Path, box: int) -> tuple[np.ndarray, float, dict[str, str]]:
    """The truth (Fourier-cropped map) and the two starting models, written as MRC files."""
    from emforge.io import read_volume, write_volume
    from emforge.numerics import axis_angle_to_matrix, lowpass, rotate_volume
    from emforge.protocols.reconstruct.kernels import fourier_resize

    data = read_volume(MAP)[0]
    px = 1.05 * data.shape[0] / box  # EMD-3488: 1.05 Å/px (../shared/data/README.md)
    truth = fourier_resize(data, box)
    files = {"truth": str(folder / "truth.mrc")}
    write_volume(files["truth"], truth, voxel_size=px)
    for sym, axis in START_ROTATION.items():
        r = axis_angle_to_matrix(np.asarray(axis) / np.linalg.norm(axis), START_ANGLE)
        start = lowpass(rotate_volume(truth, r, order=3), START_RES, pixel_size=px)
        files[f"start_{sym}"] = str(folder / f"start_{sym}.mrc")
        write_volume(files[f"start_{sym}"], start, voxel_size=px)
    return truth, px, files


def score(proj, rid: int, oracle_rid: int, truth, px, sym, step, true_eulers, clock) -> dict:
    from emforge.engine.runs import run_row
    from emforge.io import read_volume
    from emforge.numerics import fsc_crossing
    from emforge.protocols.reconstruct.kernels import particle_radius

    out = proj.outputs(rid)
    refined = read_volume(out["volume"].path)[0]
    oracle = read_volume(proj.outputs(oracle_rid)["volume"].path)[0]
    mask = rt.soft_sphere(truth.shape[0], particle_radius(truth) + 3)
    fit = clock.run(f"{sym}: fit truth", rt.fit_rotation, refined, truth, pixel_size=px)
    fit_m = clock.run(f"{sym}: fit mirror", rt.fit_rotation, refined, rt.mirrored(truth),
                      pixel_size=px)  # fmt: skip
    truth_f = rt.truth_in_frame(truth, fit)
    res_ref = rt.fsc_resolution(refined, truth_f, pixel_size=px, mask=mask)
    res_orc = rt.fsc_resolution(oracle, truth, pixel_size=px, mask=mask)
    cols = out["particles"].read("rot", "tilt", "psi")
    eulers = np.stack([cols["rot"], cols["tilt"], cols["psi"]], 1)
    err = rt.angular_errors(eulers, true_eulers, fit, TRUTH_SYM)
    fsc = out["fsc"]
    gold = fsc.crossings.get("0.143")
    if gold is None:
        gold = fsc_crossing(np.asarray(fsc.frequencies), np.asarray(fsc.values), 0.143)
    params = json.loads(run_row(proj, rid)["params_json"])
    step = step or params.get("delta")
    return {
        "res_refined": res_ref, "res_oracle": res_orc, "median_err": float(np.median(err)),
        "err_p90": float(np.percentile(err, 90)), "step": step, "cc": fit.cc, "cc_mirror": fit_m.cc,
        "gold": float(gold), "frame_angle": _angle(fit.matrix, TRUTH_SYM),
    }  # fmt: skip


def _angle(g: np.ndarray, sym: str) -> float:
    """The rotation angle of the fitted frame (smallest over the symmetry), vs 20° applied."""
    from emforge.numerics import rotation_angle_between, symmetry_matrices

    return float(min(rotation_angle_between(g @ s, np.eye(3)) for s in symmetry_matrices(sym)))


def verdict(sym: str, r: dict) -> list[str]:
    ok_res = r["res_refined"] <= 1.3 * r["res_oracle"]
    ok_ang = r["step"] is not None and r["median_err"] <= 1.5 * float(r["step"])
    ok_hand = r["cc"] > r["cc_mirror"]
    ok_gold = abs(r["gold"] - r["res_refined"]) <= 0.2 * r["res_refined"]
    step = f"{float(r['step']):.2f}°" if r["step"] is not None else "unknown"
    lines = [
        f"sym {sym}:",
        f"  FSC-with-truth(0.5): refined {r['res_refined']:.2f} Å, oracle {r['res_oracle']:.2f} Å, "
        f"ratio {r['res_refined'] / r['res_oracle']:.2f} (pass <= 1.30): {_pf(ok_res)}",
        f"  median angular error {r['median_err']:.2f}° (90%: {r['err_p90']:.1f}°) vs 1.5 x step "
        f"{step}: {_pf(ok_ang)}",
        f"  hand: CC with truth {r['cc']:.3f}, with its mirror {r['cc_mirror']:.3f}: "
        f"{'correct' if ok_hand else 'WRONG'} ({_pf(ok_hand)})",
        f"  gold-standard resolution (reported, 0.143) {r['gold']:.2f} Å vs truth FSC(0.5) "
        f"{r['res_refined']:.2f} Å: {100 * (r['gold'] / r['res_refined'] - 1):+.0f}% "
        f"(pass within ±20%): {_pf(ok_gold)}",
        f"  frame of the refined map: rotated {r['frame_angle']:.1f}° from the truth "
        f"(start rotated {START_ANGLE:g}°)",
    ]
    return lines


def _pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sym", default="c2,c1", help="symmetries to run, comma-separated")
    ap.add_argument("--n", type=int, default=3000, help="particles")
    ap.add_argument("--box", type=int, default=64, help="box the map is Fourier-cropped to")
    ap.add_argument("--iter", type=int, default=6, help="refinement iterations")
    ap.add_argument("--delta", type=float, default=None,
                    help="angular step in degrees (default: the protocol's own rule)")  # fmt: skip
    ap.add_argument("--snr", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--executor", default="local", choices=("local", "inline", "dask"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra refine.projection_matching params (JSON values)")  # fmt: skip
    ap.add_argument("--keep", type=Path, default=None, help="keep the project in this folder")
    ap.add_argument("--quick", action="store_true", help="600 particles, 32³, 2 iterations, δ 15°")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.box, args.iter = 600, 32, 2
        args.delta = args.delta or 15.0
    if not MAP.is_file():
        print(f"needs {MAP} (../shared/data next to the repository)")
        return 2
    from emforge.demo import refine_installed
    from emforge.project import Project

    if not refine_installed():
        print("refine.projection_matching is not installed (the refinement family, #12)")
        return 2
    print(f"[machine] {machine()}")
    print(f"[run] n={args.n} box={args.box} iter={args.iter} delta={args.delta} snr={args.snr} "
          f"workers={args.workers} executor={args.executor} extra={args.set}", flush=True)  # fmt: skip
    folder = args.keep or Path(tempfile.mkdtemp(prefix="refine-acceptance-"))
    folder.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    truth, px, files = clock.run("prepare", prepare, folder, args.box)
    proj = Project.init(folder / "project", exist_ok=True)
    kw = {"workers": args.workers, "executor": args.executor}
    imp = proj.run("import.volume", params={"path": files["truth"]})
    sim = clock.run("simulate", proj.run, "simulate.particles", params={
        "n": args.n, "snr": args.snr, "max_shift": 3.0, "defocus_min": 1.0, "defocus_max": 3.0,
        "seed": 12}, inputs={"volume": f"{imp}.volume"}, **kw)  # fmt: skip
    cols = proj.outputs(sim)["particles"].read("rot", "tilt", "psi")
    true_eulers = np.stack([cols["rot"], cols["tilt"], cols["psi"]], 1)
    report: list[str] = []
    for sym in [s.strip() for s in args.sym.split(",") if s.strip()]:
        oracle = clock.run(f"{sym}: oracle", proj.run, "reconstruct.particles",
                           params={"symmetry": sym}, inputs={"particles": f"{sim}.particles"},
                           **kw)  # fmt: skip
        start = proj.run("import.volume", params={"path": files[f"start_{sym}"]})
        params = {"iter": args.iter, "sym": sym, **_parse_sets(args.set)}
        if args.delta:
            params["delta"] = args.delta
        rid = clock.run(f"{sym}: refine", proj.run, "refine.projection_matching", params=params,
                        inputs={"particles": f"{sim}.particles", "model": f"{start}.volume"},
                        **kw)  # fmt: skip
        r = score(proj, rid, oracle, truth, px, sym, args.delta, true_eulers, clock)
        lines = verdict(sym, r)
        print("\n".join(lines), flush=True)
        report += lines
    print("\n== refine acceptance (#12) ==")
    print(f"n={args.n}, box {args.box} ({px:.3f} Å/px), {args.iter} iterations, SNR {args.snr}, "
          f"executor {args.executor} x {args.workers}; project {folder / 'project'}")  # fmt: skip
    print("\n".join(report))
    for label, wall, cpu in clock.rows:
        print(f"  time {label}: {wall:.1f} s wall, {cpu:.1f} s cpu")
    print(f"[machine at end] {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
