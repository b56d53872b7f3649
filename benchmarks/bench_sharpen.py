"""Map sharpening, emforge vs cctbx (issue 5), in one run: time and masked correlation to the truth.

    python benchmarks/bench_sharpen.py [--modes auto,halfmap,model,local,locres] [--no-cctbx]
                                       [--repeats 2] [--keep DIR]

Test data (built in a temporary folder, the same for both sides): EMD-3488 cropped to 80^3
(voxels 10-89 on each axis; the MRC files say NXSTART = 10 in a 100^3 cell, so the model
5me2.pdb keeps its place), blurred with B = 100 A^2; two half maps = blurred + independent
white noise whose power is 6x the signal power at 3.5 A (half-map FSC 0.143 near 3.5 A); the
full map is their average. The resolution given to both sides is the FSC = 0.143 crossing of
the unmasked half maps (what a user has without any knowledge of the truth). The mask for
scoring (a threshold of the smoothed truth, dilated 3 voxels, soft edge) is used for scoring
only; neither side sees it.

emforge runs its kernels in this process: ``cold`` is the first call (FFTW planning included),
``warm`` the best of ``--repeats`` further calls; the ratio and the target use ``warm``. cctbx
runs in its own venv (benchmarks/.envs/cctbx) through benchmarks/peers/cctbx_side.py with
nproc=1; its ``seconds`` is the wall time of the sharpening call alone, imports and I/O
excluded. Its output maps (axis order 3 2 1) are read with emforge.io.read_volume and checked
to line up voxel for voxel with the input.
Targets (issue 5): emforge's masked CC to the truth >= cctbx's in every mode, and emforge >= 5x
faster per mode. For ``locres`` there is no correlation: the table shows the median local
resolution inside the mask, next to the global FSC resolution.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from _common import ROOT, machine, table
from scipy import ndimage

from emforge.io import read_volume
from emforge.numerics import (
    amplitude_profile,
    bfactor_filter,
    fsc,
    fsc_crossing,
    fsc_rfft,
    masked_fsc_corrected,
    rfftn,
)
from emforge.protocols.sharpen.kernels import auto_sharpen, sharpen_halfmaps_phenix
from emforge.protocols.sharpen.kernels.local import sharpen_local
from emforge.protocols.sharpen.kernels.locres import local_resolution
from emforge.protocols.sharpen.kernels.model import model_map, sharpen_model

DATA = ROOT / ".." / "shared" / "data"
MAP = DATA / "maps" / "emd_3488.mrc"
MODEL = DATA / "models" / "5me2.pdb"
CCTBX_SIDE = ROOT / "benchmarks" / "peers" / "cctbx_side.py"
CCTBX_REQ = ["cctbx-base==2025.11"]
MODES = ("auto", "halfmap", "model", "local", "locres")
START, SIZE = 10, 80  # crop: voxels START .. START+SIZE-1 on each axis
B_BLUR = 100.0
NOISE_RES = 3.5  # half-map FSC 0.143 near here
SEED = 20240605

# What emforge runs per mode (the options a user would pick given the same inputs as cctbx).
OPTIONS = {
    "auto": "auto_sharpen(full, resolution=R)  [adjusted SA, b_iso -100..300 in 21 steps]",
    "halfmap": "sharpen_halfmaps_phenix(half1, half2)  [no mask; Phenix CC* x expected/observed]",
    "model": "model_map(pdb, resolution=R) + sharpen_model(full, model_map, resolution=R)",
    "local": "sharpen_local(full, resolution=R, half1, half2, method='halfmap')",
    "locres": "local_resolution(half1, half2)  [no mask; box 32, step 10]",
}


@dataclass
class Data:
    """The benchmark's maps: float32 (z, y, x), 80^3, pixel size ``px`` A."""

    truth: np.ndarray
    full: np.ndarray
    half1: np.ndarray
    half2: np.ndarray
    mask: np.ndarray
    px: float
    resolution: float  # unmasked half-map FSC 0.143, given to both sides
    masked_resolution: float  # masked, phase-randomisation corrected (scoring mask)
    true_resolution: float  # from the noise model (noise-free signal known)
    origin_xyz: tuple  # Angstrom of voxel (0, 0, 0)
    paths: dict


# --------------------------------------------------------------------------- test data


def _write_map(path: Path, data: np.ndarray, px: float, full_n: int) -> None:
    """MRC with NXSTART/NYSTART/NZSTART = START inside a ``full_n``^3 cell (axis order 1 2 3)."""
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data, np.float32))
        m.header.mx = m.header.my = m.header.mz = full_n
        m.voxel_size = px
        m.header.nxstart = m.header.nystart = m.header.nzstart = START


def _masked_cc(a, b, w) -> float:
    """Real-space correlation of ``a`` and ``b`` weighted by the soft mask ``w``."""
    a, b, w = (np.asarray(x, np.float64) for x in (a, b, w))
    a = a - np.average(a, weights=w)
    b = b - np.average(b, weights=w)
    return float(np.sum(w * a * b) / np.sqrt(np.sum(w * a * a) * np.sum(w * b * b)))


def build_data(folder: Path) -> Data:
    """Crop, blur, add noise, write the inputs of the cctbx side into ``folder``."""
    if not MAP.exists() or not MODEL.exists():
        sys.exit(f"bench_sharpen: test data missing: {MAP} or {MODEL}")
    whole, info = read_volume(MAP)
    px = float(info.voxel_size[0])
    crop = (slice(START, START + SIZE),) * 3
    truth = np.ascontiguousarray(whole[crop], np.float32)
    blurred = bfactor_filter(truth, B_BLUR, pixel_size=px)
    s, rms = amplitude_profile(blurred, pixel_size=px, kind="rms")
    sigma = np.sqrt(6.0 * np.interp(1.0 / NOISE_RES, s, rms**2) / blurred.size)
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
    res = fsc_crossing(shells, f_half, 0.143)
    mres = masked_fsc_corrected(h1, h2, mask, pixel_size=px, rng=np.random.default_rng(0))
    sig = rfftn(blurred * mask)
    cc1, cc2 = (fsc_rfft(rfftn(h * mask), sig, real_shape=truth.shape) for h in (h1, h2))
    true_res = fsc_crossing(shells, cc1 * cc2, 0.143)
    paths = {k: folder / f"{k}.mrc" for k in ("full", "half1", "half2")}
    for k, v in (("full", full), ("half1", h1), ("half2", h2)):
        _write_map(paths[k], v, px, whole.shape[0])
    return Data(
        truth, full, h1, h2, mask, px, round(float(res), 2), float(mres.resolution),
        float(true_res), (START * px,) * 3, paths,
    )  # fmt: skip


# --------------------------------------------------------------------------- emforge side


def _emforge_call(mode: str, d: Data):
    """A no-argument callable running emforge's kernel(s) for ``mode``; returns the map."""
    px, r = d.px, d.resolution
    if mode == "auto":
        return lambda: auto_sharpen(d.full, pixel_size=px, resolution=r).map
    if mode == "halfmap":
        return lambda: sharpen_halfmaps_phenix(d.half1, d.half2, pixel_size=px).map
    if mode == "model":

        def run_model():
            mm = model_map(
                str(MODEL), shape=d.full.shape, pixel_size=px, origin=d.origin_xyz, resolution=r
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


def run_emforge(mode: str, d: Data, repeats: int) -> dict:
    """Cold (first) call, then the best of ``repeats`` warm calls: wall and CPU seconds."""
    call = _emforge_call(mode, d)
    t0, c0 = time.perf_counter(), time.process_time()
    out = call()
    cold = time.perf_counter() - t0
    cold_cpu = time.process_time() - c0
    warm, warm_cpu = float("inf"), float("nan")
    for _ in range(max(1, repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        out = call()
        dt = time.perf_counter() - t0
        if dt < warm:
            warm, warm_cpu = dt, time.process_time() - c0
    return {"map": out, "cold": cold, "cold_cpu": cold_cpu, "warm": warm, "warm_cpu": warm_cpu}


# --------------------------------------------------------------------------- cctbx side


def _cctbx_args(mode: str, d: Data, out: Path) -> list[str]:
    p = d.paths
    args = [mode, "--out", str(out), "--resolution", str(d.resolution)]
    if mode in ("auto", "model"):
        args += ["--map", str(p["full"])]
    else:
        args += ["--half1", str(p["half1"]), "--half2", str(p["half2"])]
    if mode == "model":
        args += ["--model", str(MODEL)]
    return args


def _check_alignment(mode: str, out: np.ndarray, info, d: Data) -> str:
    """'' if cctbx's output lines up with the input voxel for voxel, else the problem."""
    if out.shape != d.full.shape:
        return f"shape {out.shape} != input {d.full.shape}"
    if tuple(info.nstart) != (START,) * 3:
        return f"nstart (z, y, x) {tuple(info.nstart)} != {(START,) * 3}"
    if mode == "locres":
        return ""
    ref = d.full
    cc0 = _masked_cc(out, ref, d.mask)
    if cc0 < 0.5:
        return f"masked CC with the input only {cc0:.2f}"
    for ax in range(3):
        for sh in (-1, 1):
            if _masked_cc(np.roll(out, sh, axis=ax), ref, d.mask) > cc0:
                return f"shifted by {sh} voxel on axis {ax} correlates better with the input"
    return ""


def run_cctbx(mode: str, d: Data, folder: Path) -> dict:
    """cctbx's result dict plus ``map`` (z, y, x, read back) or ``error``."""
    from benchmarks.peers.venv import ensure_venv, run_in_venv

    try:
        py = ensure_venv("cctbx", CCTBX_REQ)
        res = run_in_venv(py, CCTBX_SIDE, _cctbx_args(mode, d, folder / mode), timeout=900)
        out, info = read_volume(res["output"])
    except Exception as exc:  # the peer is optional: say why and carry on
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    problem = _check_alignment(mode, out, info, d)
    if problem:
        return {**res, "error": f"output does not line up with the input: {problem}"}
    return {**res, "map": out}


# --------------------------------------------------------------------------- scoring, table


def _quality(mode: str, out: np.ndarray, d: Data) -> tuple[float, str]:
    """Masked CC to the truth, or (locres) the median local resolution inside the mask."""
    if mode == "locres":
        q = float(np.median(out[d.mask > 0.5]))
        return q, f"{q:.2f} Å"
    q = _masked_cc(out, d.truth, d.mask)
    return q, f"{q:.4f}"


def _row(mode: str, ours: dict, peer: dict | None, d: Data) -> tuple:
    our_t = (f"{ours['warm']:.3f} ({ours['warm_cpu']:.2f})", f"{ours['cold']:.2f}")
    our_q, our_s = _quality(mode, ours["map"], d)
    if peer is None or "error" in peer:
        failed = peer is not None
        return (mode, *our_t, "failed" if failed else "-", "-", our_s, "-", "NO" if failed else "-")
    ratio = peer["seconds"] / ours["warm"]
    peer_q, peer_s = _quality(mode, peer["map"], d)
    ok_q = True if mode == "locres" else our_q >= peer_q
    met = "yes" if (ok_q and ratio >= 5.0) else "NO"
    c_s = f"{peer['seconds']:.2f} ({peer['cpu_seconds']:.2f})"
    return (mode, *our_t, c_s, f"{ratio:.1f}×", our_s, peer_s, met)


def _print_header(d: Data, modes, no_cctbx: bool) -> None:
    print(f"bench_sharpen: EMD-3488 cropped to {SIZE}^3 at {d.px} Å/px, B = {B_BLUR:g} Å² blur, "
          f"half maps with FSC 0.143 near {NOISE_RES} Å; {machine()}")  # fmt: skip
    print(f"resolution given to both sides R = {d.resolution:.2f} Å (unmasked half-map FSC 0.143); "
          f"masked corrected FSC {d.masked_resolution:.2f} Å; true {d.true_resolution:.2f} Å")  # fmt: skip
    print(f"input masked CC to the truth: full map {_masked_cc(d.full, d.truth, d.mask):.4f}, "
          f"half map {_masked_cc(d.half1, d.truth, d.mask):.4f}")  # fmt: skip
    print(f"modes: {', '.join(modes)}; cctbx {'skipped' if no_cctbx else 'nproc=1, own venv'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of modes")
    ap.add_argument("--no-cctbx", action="store_true", help="run only emforge's side")
    ap.add_argument("--repeats", type=int, default=2, help="warm emforge calls (best is kept)")
    ap.add_argument("--keep", help="folder for the maps (kept); default: a temporary folder")
    a = ap.parse_args()
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown mode(s) {', '.join(bad)}; choose from {', '.join(MODES)}")
    folder = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench_sharpen_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        d = build_data(folder)
        _print_header(d, modes, a.no_cctbx)
        rows, notes = [], []
        for mode in modes:
            ours = run_emforge(mode, d, a.repeats)
            peer = None if a.no_cctbx else run_cctbx(mode, d, folder)
            if peer and "error" in peer:
                notes.append(f"cctbx {mode}: {peer['error']}")
            rows.append(_row(mode, ours, peer, d))
            print(f"  {mode}: done (load {os.getloadavg()[0]:.1f})", flush=True)
        header = ("mode", "emforge s warm (cpu)", "cold s", "cctbx s (cpu)",
                  "speed ratio (≥ 5×)", "emforge CC", "cctbx CC", "met")  # fmt: skip
        print(table(rows, header))
        if "locres" in modes:
            print(f"locres row: median local resolution inside the mask, not a CC ('met' = speed "
                  f"only); global FSC: masked corrected {d.masked_resolution:.2f} Å, unmasked "
                  f"{d.resolution:.2f} Å, true {d.true_resolution:.2f} Å")  # fmt: skip
        for mode in modes:
            print(f"emforge {mode}: {OPTIONS[mode]}")
        for n in notes:
            print(n)
    finally:
        if not a.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
