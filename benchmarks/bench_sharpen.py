"""Map sharpening, emforge vs cctbx: cold and warm time, peak RSS and masked correlation to the truth.

    python benchmarks/bench_sharpen.py [--cases emd3488,model5me2,coarse1832]
        [--modes auto,halfmap,model,local,locres] [--repeats 5] [--threads N] [--no-cctbx]
        [--quick] [--keep DIR]

Cases (built in a temporary folder in this process, before any timing; the same files for both
sides):

* ``emd3488``: EMD-3488 cropped to 80^3 (voxels 10-89; NXSTART = 10 in a 100^3 cell, so the
  model 5me2.pdb keeps its place), 1.05 A/px, blurred with B = 100 A^2, half-map noise power
  6x the signal power at 3.5 A.
* ``model5me2``: the density of the atomic model 5me2.pdb (gemmi, electron form factors, atom
  B + 20 A^2, cut at 2.2 A) on the same grid, blurred with B = 50 A^2, noise power 3x the
  signal at 4.5 A.
* ``coarse1832``: EMD-1832 (64^3, 5.7 A/px, NXSTART = -32), blurred with B = 1000 A^2, noise
  power 4x the signal at 25 A. There is no atomic model, so no ``model`` mode.

Half maps = blurred truth + independent white noise; the full map is their average. The
resolution given to both sides is the FSC = 0.143 crossing of the unmasked half maps. The
scoring mask (threshold of the smoothed truth, dilated 3 voxels, soft edge) is seen by
neither side.

Timing (docs/benchmarks.md):

* cold: a fresh process per repeat for both sides. Ours through ``cold_call`` with empty caches
  (no FFTW wisdom, new cache folders): the child reads the case's MRC files and times the
  kernel call alone; cctbx: ``cctbx_side.py`` (own venv) per repeat, timing its call alone.
  Imports and map I/O are excluded on both sides; each process's peak RSS is reported.
* warm: repeated calls in one process after an earlier call there. Ours: ``warm`` in this
  process (one untimed call, then the repeats). cctbx: each of its cold processes
  (``cctbx_side.py --repeat 2``) calls twice; the second call is a warm sample. A cctbx call
  takes 10-60 s where ours takes 0.1-3 s, so this halves the benchmark's time.
* threads: cctbx runs with nproc=1. Ours is timed with ``EMFORGE_FFT_THREADS=1`` (cold
  children: every thread variable 1) and with N threads (``--threads``, default all cores).
  Ratios (cctbx / emforge, medians) use the 1-thread figures: the same threads on both sides.

``met``: our masked CC to the truth >= cctbx's, and >= 5x faster cold and warm. For ``locres``
there is no correlation: the CC columns show the median local resolution inside the mask
(speed only in ``met``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import _common
import mrcfile
import numpy as np
from _common import ROOT, Sample, Stats, machine, table, wait_quiet
from scipy import ndimage

DATA = ROOT / ".." / "shared" / "data"
MAP = DATA / "maps" / "emd_3488.mrc"
COARSE_MAP = DATA / "maps" / "emd_1832.map"
MODEL = DATA / "models" / "5me2.pdb"
CCTBX_SIDE = ROOT / "benchmarks" / "peers" / "cctbx_side.py"
CCTBX_REQ = ["cctbx-base==2025.11"]
MODES = ("auto", "halfmap", "model", "local", "locres")
CASES = ("emd3488", "model5me2", "coarse1832")
START, SIZE = 10, 80  # EMD-3488 crop: voxels START .. START+SIZE-1 on each axis
SEED = 20240605

# blur B (A^2), resolution where the noise power is `ratio` x the signal power (A), ratio
NOISE = {
    "emd3488": (100.0, 3.5, 6.0),
    "model5me2": (50.0, 4.5, 3.0),
    "coarse1832": (1000.0, 25.0, 4.0),
}

# What emforge runs per mode (the options a user would pick given the same inputs as cctbx).
OPTIONS = {
    "auto": "auto_sharpen(full, resolution=R)",
    "halfmap": "sharpen_halfmaps_phenix(half1, half2)  [no mask]",
    "model": "model_map(pdb, resolution=R) + sharpen_model(full, model_map, resolution=R)",
    "local": "sharpen_local(full, resolution=R, half1, half2, method='halfmap')",
    "locres": "local_resolution(half1, half2)  [no mask]",
}


@dataclass
class Case:
    """One benchmark case: float32 (z, y, x) maps, pixel size ``px`` A, files in ``folder``."""

    name: str
    truth: np.ndarray
    full: np.ndarray
    half1: np.ndarray
    half2: np.ndarray
    mask: np.ndarray
    px: float
    resolution: float  # unmasked half-map FSC 0.143, given to both sides
    true_resolution: float  # FSC 0.143 of the half maps against the noise-free signal
    nstart: int  # NXSTART = NYSTART = NZSTART of the files
    cell: int  # MX = MY = MZ of the files
    model: str | None
    folder: Path

    @property
    def origin_xyz(self) -> tuple[float, float, float]:
        return (self.nstart * self.px,) * 3

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.mrc"


# --------------------------------------------------------------------------- test data


def _write_map(path: Path, data: np.ndarray, px: float, cell: int, nstart: int) -> None:
    """MRC, axis order 1 2 3, NXSTART/NYSTART/NZSTART = ``nstart`` in a ``cell``^3 cell."""
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data, np.float32))
        m.header.mx = m.header.my = m.header.mz = cell
        m.voxel_size = px
        m.header.nxstart = m.header.nystart = m.header.nzstart = nstart


def _masked_cc(a, b, w) -> float:
    """Real-space correlation of ``a`` and ``b`` weighted by the soft mask ``w``."""
    a, b, w = (np.asarray(x, np.float64) for x in (a, b, w))
    a = a - np.average(a, weights=w)
    b = b - np.average(b, weights=w)
    return float(np.sum(w * a * b) / np.sqrt(np.sum(w * a * a) * np.sum(w * b * b)))


def _truth(name: str):
    """(truth map, pixel size, nstart, cell, model path or None) of a case."""
    from emforge.io import read_volume
    from emforge.protocols.sharpen.kernels.model import model_map

    for f in (MAP, MODEL, COARSE_MAP):
        if not f.exists():
            sys.exit(f"bench_sharpen: test data missing: {f}")
    if name == "coarse1832":
        vol, info = read_volume(COARSE_MAP)
        return (
            np.ascontiguousarray(vol, np.float32),
            float(info.voxel_size[0]),
            int(info.nstart[0]),
            vol.shape[0],
            None,
        )
    whole, info = read_volume(MAP)
    px = float(info.voxel_size[0])
    if name == "emd3488":
        crop = (slice(START, START + SIZE),) * 3
        return np.ascontiguousarray(whole[crop], np.float32), px, START, whole.shape[0], str(MODEL)
    mm = model_map(str(MODEL), shape=(SIZE,) * 3, pixel_size=px, origin=(START * px,) * 3,
                   resolution=2.2, b_add=20.0)  # fmt: skip
    return mm.astype(np.float32), px, START, whole.shape[0], str(MODEL)


def build_case(name: str, folder: Path) -> Case:
    """Blur the truth, add noise, write full and half maps and ``case.json`` into ``folder``."""
    from emforge.numerics import amplitude_profile, bfactor_filter, fsc, fsc_crossing

    truth, px, nstart, cell, model = _truth(name)
    b_blur, noise_res, ratio = NOISE[name]
    blurred = bfactor_filter(truth, b_blur, pixel_size=px)
    s, rms = amplitude_profile(blurred, pixel_size=px, kind="rms")
    sigma = np.sqrt(ratio * np.interp(1.0 / noise_res, s, rms**2) / blurred.size)
    rng = np.random.default_rng(SEED)
    h1, h2 = (
        blurred + np.float32(sigma) * rng.standard_normal(blurred.shape, dtype=np.float32)
        for _ in range(2)
    )
    full = 0.5 * (h1 + h2)
    smooth = ndimage.gaussian_filter(truth, 1.5)
    core = ndimage.binary_dilation(smooth > 0.5 * smooth.std(), iterations=3)
    mask = np.clip(ndimage.gaussian_filter(core.astype(np.float32), 2.0), 0.0, 1.0)
    shells, f_half = fsc(h1, h2, pixel_size=px)
    _, c1 = fsc(h1, blurred, pixel_size=px)
    _, c2 = fsc(h2, blurred, pixel_size=px)
    res = round(float(fsc_crossing(shells, f_half, 0.143)), 2)
    true_res = float(fsc_crossing(shells, c1 * c2, 0.143))
    folder.mkdir(parents=True, exist_ok=True)
    for k, v in (("full", full), ("half1", h1), ("half2", h2)):
        _write_map(folder / f"{k}.mrc", v, px, cell, nstart)
    meta = {"px": px, "resolution": res, "nstart": nstart, "model": model}
    (folder / "case.json").write_text(json.dumps(meta))
    return Case(name, truth, full, h1, h2, mask, px, res, true_res, nstart, cell, model, folder)


# --------------------------------------------------------------------------- emforge side


def _emforge_call(mode: str, d):
    """A no-argument callable running emforge's kernel(s) for ``mode`` on ``d``; returns the map.

    ``d`` has ``full, half1, half2, px, resolution, origin_xyz, model``.
    """
    from emforge.protocols.sharpen.kernels import auto_sharpen, sharpen_halfmaps_phenix
    from emforge.protocols.sharpen.kernels.local import sharpen_local
    from emforge.protocols.sharpen.kernels.locres import local_resolution
    from emforge.protocols.sharpen.kernels.model import model_map, sharpen_model

    px, r = d.px, d.resolution
    if mode == "auto":
        return lambda: auto_sharpen(d.full, pixel_size=px, resolution=r).map
    if mode == "halfmap":
        return lambda: sharpen_halfmaps_phenix(d.half1, d.half2, pixel_size=px).map
    if mode == "model":

        def run_model():
            mm = model_map(
                d.model, shape=d.full.shape, pixel_size=px, origin=d.origin_xyz, resolution=r
            )
            return sharpen_model(d.full, mm, pixel_size=px, resolution=r).map

        return run_model
    if mode == "local":
        return lambda: (
            sharpen_local(
                d.full, pixel_size=px, resolution=r, half1=d.half1, half2=d.half2, method="halfmap"
            ).map
        )
    if mode == "locres":
        return lambda: local_resolution(d.half1, d.half2, pixel_size=px).map
    raise ValueError(f"unknown mode {mode!r}")


def cold_child(folder: str, mode: str, out: str) -> None:
    """In a fresh process: read a case's files, run ``mode`` once, append the call's wall and
    CPU seconds (imports and reading excluded) as one JSON line to ``out``."""
    from emforge.io import read_volume

    meta = json.loads((Path(folder) / "case.json").read_text())
    maps = {k: np.asarray(read_volume(Path(folder) / f"{k}.mrc")[0], np.float32)
            for k in ("full", "half1", "half2")}  # fmt: skip
    d = SimpleNamespace(**maps, px=meta["px"], resolution=meta["resolution"],
                        origin_xyz=(meta["nstart"] * meta["px"],) * 3, model=meta["model"])  # fmt: skip
    call = _emforge_call(mode, d)
    t0, c0 = time.perf_counter(), time.process_time()
    call()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with open(out, "a") as fh:
        fh.write(json.dumps({"wall": wall, "cpu": cpu}) + "\n")


def ours_cold(case: Case, mode: str, repeats: int, threads: int) -> Stats:
    """Kernel seconds in a fresh process per repeat; RSS is each whole process's peak."""
    out = case.folder / f"cold_{mode}_{threads}t.jsonl"
    out.unlink(missing_ok=True)
    procs = _common.cold_call(cold_child, str(case.folder), mode, str(out),
                              repeats=repeats, threads=threads)  # fmt: skip
    inner = [json.loads(ln) for ln in out.read_text().splitlines()]
    stats = Stats(f"emforge cold {threads}t")
    for p, k in zip(procs.samples, inner, strict=True):
        stats.samples.append(Sample(k["wall"], k["cpu"], p.rss_mb, inner_wall=p.wall))
    return stats


def ours_warm(case: Case, mode: str, repeats: int, threads: int) -> tuple[Stats, np.ndarray]:
    """Repeated calls in this process with ``EMFORGE_FFT_THREADS=threads``; the last map."""
    call = _emforge_call(mode, case)
    kept = {}
    old = os.environ.get("EMFORGE_FFT_THREADS")
    os.environ["EMFORGE_FFT_THREADS"] = str(threads)
    try:
        stats = _common.warm(lambda: kept.__setitem__("map", call()), repeats,
                             label=f"emforge warm {threads}t")  # fmt: skip
    finally:
        if old is None:
            os.environ.pop("EMFORGE_FFT_THREADS", None)
        else:
            os.environ["EMFORGE_FFT_THREADS"] = old
    return stats, kept["map"]


# --------------------------------------------------------------------------- cctbx side


def _cctbx_args(mode: str, case: Case, out: Path) -> list[str]:
    args = [mode, "--out", str(out), "--resolution", str(case.resolution), "--nproc", "1"]
    if mode in ("auto", "model"):
        args += ["--map", str(case.path("full"))]
    else:
        args += ["--half1", str(case.path("half1")), "--half2", str(case.path("half2"))]
    if mode == "model":
        args += ["--model", str(case.model)]
    return args


def _check_alignment(mode: str, out: np.ndarray, info, case: Case) -> str:
    """'' if cctbx's output lines up with the input voxel for voxel, else the problem."""
    if out.shape != case.full.shape:
        return f"shape {out.shape} != input {case.full.shape}"
    if tuple(info.nstart) != (case.nstart,) * 3:
        return f"nstart (z, y, x) {tuple(info.nstart)} != {(case.nstart,) * 3}"
    if mode == "locres":
        return ""
    cc0 = _masked_cc(out, case.full, case.mask)
    if cc0 < 0.5:
        return f"masked CC with the input only {cc0:.2f}"
    for ax in range(3):
        for sh in (-1, 1):
            if _masked_cc(np.roll(out, sh, axis=ax), case.full, case.mask) > cc0:
                return f"shifted by {sh} voxel on axis {ax} correlates better with the input"
    return ""


def _cctbx_once(mode: str, case: Case, repeat: int) -> dict:
    from benchmarks.peers.venv import ensure_venv, run_in_venv

    py = ensure_venv("cctbx", CCTBX_REQ)
    args = _cctbx_args(mode, case, case.folder / f"cctbx_{mode}") + ["--repeat", str(repeat)]
    return run_in_venv(py, CCTBX_SIDE, args, timeout=1800)


def cctbx_side(mode: str, case: Case, repeats: int) -> dict:
    """cctbx: ``repeats`` fresh processes with two calls each; the first call of a process is
    a cold sample, the second (after that one call) a warm one."""
    from emforge.io import read_volume

    try:
        cold, warm = Stats("cctbx cold"), Stats("cctbx warm")
        for _ in range(repeats):
            r = _cctbx_once(mode, case, 2)
            (w0, w1), (c0, c1) = r["seconds_all"], r["cpu_seconds_all"]
            cold.samples.append(Sample(w0, c0, r["peak_rss_mb"]))
            warm.samples.append(Sample(w1, c1, r["peak_rss_mb"]))
        out, info = read_volume(r["output"])
    except Exception as exc:  # the peer is optional: say why and carry on
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    problem = _check_alignment(mode, out, info, case)
    if problem:
        return {"error": f"output does not line up with the input: {problem}"}
    return {"cold": cold, "warm": warm, "map": out}


# --------------------------------------------------------------------------- scoring, table


def _quality(mode: str, out: np.ndarray, case: Case) -> tuple[float, str]:
    """Masked CC to the truth, or (locres) the median local resolution inside the mask."""
    if mode == "locres":
        q = float(np.median(np.asarray(out)[case.mask > 0.5]))
        return q, f"{q:.2f} Å"
    q = _masked_cc(out, case.truth, case.mask)
    return q, f"{q:.4f}"


def _t(s: Stats | None) -> str:
    return "-" if s is None else f"{s.median:.3f} [{s.min:.3f}-{s.max:.3f}]"


def _rows(case: Case, mode: str, ours: dict, peer: dict | None) -> tuple[tuple, tuple]:
    """(time/quality row, CPU/RSS row) of one case and mode."""
    c1, c2, w1, w2 = (ours.get(k) for k in ("cold1", "coldN", "warm1", "warmN"))
    our_q, our_s = _quality(mode, ours["map"], case)
    ok = peer is not None and "error" not in peer
    pc, pw = (peer["cold"], peer["warm"]) if ok else (None, None)
    rc = f"{pc.median / c1.median:.1f}×" if ok else "-"
    rw = f"{pw.median / w1.median:.1f}×" if ok else "-"
    if ok:
        peer_q, peer_s = _quality(mode, peer["map"], case)
        good_q = mode == "locres" or our_q >= peer_q
        fast = pc.median / c1.median >= 5 and pw.median / w1.median >= 5
        met = "yes" if good_q and fast else "NO"
    else:
        peer_s, met = ("failed", "NO") if peer is not None else ("-", "-")
    row = (case.name, mode, _t(c1), _t(c2), _t(pc), rc, _t(w1), _t(w2), _t(pw), rw,
           our_s, peer_s, met)  # fmt: skip

    def cpu(s):
        return "-" if s is None else f"{s.cpu_median:.3f}"

    def rss(s):
        return "-" if s is None else f"{s.rss_mb:.0f}"

    proc = "-" if c1 is None else f"{np.median([s.inner_wall for s in c1.samples]):.2f}"
    extra = (case.name, mode, cpu(c1), cpu(c2), cpu(pc), cpu(w1), cpu(w2), cpu(pw),
             rss(c1), rss(c2), rss(pc), rss(pw), proc)  # fmt: skip
    return row, extra


def run_case_mode(case: Case, mode: str, a) -> tuple[dict, dict | None]:
    """Both sides of one case and mode; raises on a failure of ours."""
    w1, out = ours_warm(case, mode, a.repeats, 1)
    wn, _ = ours_warm(case, mode, a.repeats, a.threads)
    ours = {"warm1": w1, "warmN": wn, "map": out}
    ours["cold1"] = ours_cold(case, mode, a.repeats, 1)
    ours["coldN"] = ours_cold(case, mode, a.repeats, a.threads)
    peer = None if a.no_cctbx else cctbx_side(mode, case, a.repeats)
    return ours, peer


def _print_case(case: Case) -> None:
    b, nres, ratio = NOISE[case.name]
    print(f"[{case.name}] {case.full.shape[0]}^3 at {case.px} Å/px, blur B = {b:g} Å², noise "
          f"{ratio:g}x signal power at {nres} Å; R given = {case.resolution:.2f} Å (half-map FSC "
          f"0.143), true {case.true_resolution:.2f} Å; input masked CC to truth: full "
          f"{_masked_cc(case.full, case.truth, case.mask):.4f}", flush=True)  # fmt: skip


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of cases")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of modes")
    ap.add_argument("--no-cctbx", action="store_true", help="run only emforge's side")
    ap.add_argument("--repeats", type=int, default=_common.MIN_REPEATS, help="≥ 5")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="our N-thread figure")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 repeats (below the rule's 5), short wait for a quiet machine")  # fmt: skip
    ap.add_argument("--keep", help="folder for the maps (kept); default: a temporary folder")
    a = ap.parse_args()
    a.cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    for what, got, known in (("case", a.cases, CASES), ("mode", a.modes, MODES)):
        bad = [x for x in got if x not in known]
        if bad:
            ap.error(f"unknown {what}(s) {', '.join(bad)}; choose from {', '.join(known)}")
    if a.quick:
        _common.MIN_REPEATS = a.repeats = 2
    _common.check_repeats(a.repeats)
    return a


HEADER = ("case", "mode", "ours cold 1t s", "ours cold Nt s", "cctbx cold s", "cold ratio",
          "ours warm 1t s", "ours warm Nt s", "cctbx warm s", "warm ratio", "emforge CC",
          "cctbx CC", "met")  # fmt: skip
HEADER2 = ("case", "mode", "cpu cold 1t", "cpu cold Nt", "cctbx cpu cold", "cpu warm 1t",
           "cpu warm Nt", "cctbx cpu warm", "RSS MB cold 1t", "cold Nt", "cctbx cold",
           "cctbx warm", "ours whole process s")  # fmt: skip


def main() -> None:
    a = _parse()
    folder = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench_sharpen_"))
    print(f"bench_sharpen: {machine()}")
    wait_quiet(timeout=10 if a.quick else 120)
    if a.quick:
        print("QUICK smoke test: 2 repeats per figure, below the rule's 5; not for quoting")
    rows, extra, notes = [], [], []
    try:
        for name in a.cases:
            case = build_case(name, folder / name)
            _print_case(case)
            for mode in a.modes:
                if mode == "model" and case.model is None:
                    notes.append(f"{name} model: no atomic model for this map, not run")
                    continue
                try:
                    ours, peer = run_case_mode(case, mode, a)
                except Exception as exc:  # report ours failing, carry on with the others
                    notes.append(
                        f"emforge {name} {mode} FAILED: {type(exc).__name__}: {str(exc)[:300]}"
                    )
                    print(f"  {notes[-1]}", flush=True)
                    rows.append((name, mode, *["failed"] * (len(HEADER) - 4), "-", "NO"))
                    continue
                if peer is not None and "error" in peer:
                    notes.append(f"cctbx {name} {mode}: {peer['error']}")
                r, e = _rows(case, mode, ours, peer)
                rows.append(r)
                extra.append(e)
                print(f"  done (load {os.getloadavg()[0]:.1f}): {' | '.join(r)}", flush=True)
        print(f"\nmedian [min-max] of {a.repeats} repeats; N = {a.threads} threads; cctbx nproc=1; "
              "ratios = cctbx median / ours 1-thread median (same threads)")  # fmt: skip
        print(table(rows, HEADER))
        print("\nCPU seconds (medians) and peak RSS (MB, per process; warm = that process's peak)")
        print(table(extra, HEADER2))
        for mode in a.modes:
            print(f"emforge {mode}: {OPTIONS[mode]}")
        for n in notes:
            print(n)
        print(f"end: {machine()}")
    finally:
        if not a.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
