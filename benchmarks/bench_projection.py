"""Projection and back-projection speed and accuracy (issue 11).

    python benchmarks/bench_projection.py [--n 128] [--views 1000] [--repeats 5] [--pad 2]
                                          [--no-compile] [--json]

Workloads (the issue's): project an n^3 map into ``views`` random orientations, and insert
``views`` images of n^2 into an n^3 map (Fourier insertion + finishing: the division by the
weights, the inverse FFT, the gridding correction, both halves and the full map).

Timing: ``cold`` is the first call in this process (the numba kernels loaded from their cache,
FFTW plans measured); ``warm`` are ``--repeats`` further calls (min / median / max).
``compile`` runs the first call in a fresh process with an empty ``NUMBA_CACHE_DIR``
(what a new installation pays once) and again with the filled cache. Threads: numba's
(``NUMBA_NUM_THREADS``) and FFTW's (``EMFORGE_FFT_THREADS``); the load average is printed
before and after, and the peak RSS of this process at the end.

Accuracy: correlation of Fourier-slice projections with real-space (cubic spline) line
integrals for 3 views, and the FSC with the truth of the round trip (project, then insert).

Peer: torch-projectors 0.13.1 (``benchmarks/peers/torchproj_side.py``) in its own venv
(``TORCHPROJ_BUILD``: a ~9 min build from its sdist against torch 2.13.0 CPU), the same map,
poses, padding and threads (``torch.set_num_threads`` = numba's), each mode in a fresh process:
its cold column is that process's first call, like ours. Its back-projection pads the images
(its grid has the images' size) and finishes one map without gridding correction; ours makes
the map and both halves. Without the venv the table falls back to the design notes' figures
(project 0.26-0.45 s, back-project 1.0-2.5 s), marked as such. ASPIRE is not run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT, machine, table
from bench_masks_kernels import synthetic_blob_map
from scipy.spatial.transform import Rotation

from emforge.numerics import (
    default_threads,
    finish_reconstruction,
    fsc,
    insert_images,
    prepare_volume,
    project_fourier,
    project_real_space,
)

#: torch-projectors on this kind of machine, from the design notes (seconds, min-max).
RECORDED_PEER = {"project": (0.26, 0.45), "backproject": (1.0, 2.5)}


def _time(fn, repeats: int) -> dict:
    """Cold first call, then ``repeats`` warm calls: wall seconds, and the median CPU seconds
    of this process (all threads; on a busy machine, CPU / threads bounds the quiet wall time)."""
    t0 = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t0
    warm, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        warm.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "cold": cold,
        "cpu": statistics.median(cpu),
        "min": min(warm),
        "median": statistics.median(warm),
        "max": max(warm),
        "out": out,
    }


_CHILD = """
import json, time
import numpy as np
t0 = time.perf_counter()
from emforge.numerics import project_fourier, reconstruct_fourier
t1 = time.perf_counter()
rot = np.eye(3)[None]
img = project_fourier(np.zeros((16, 16, 16), np.float32), rot)
t2 = time.perf_counter()
reconstruct_fourier(img, rot)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "project": t2 - t1, "reconstruct": t3 - t2}))
"""


def compile_times() -> dict:
    """First-call times in fresh processes: empty numba cache, then the filled one."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = []
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                check=True, cwd=ROOT,
            )  # fmt: skip
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"empty_cache": runs[0], "filled_cache": runs[1]}


def run_emforge(n: int, views: int, repeats: int, pad: float) -> dict:
    """Time both workloads and measure their accuracy."""
    vol = synthetic_blob_map(n, seed=1)
    rots = Rotation.random(views, random_state=2).as_matrix()
    prepared = prepare_volume(vol, pad=pad)
    res = {
        "prepare": _time(lambda: prepare_volume(vol, pad=pad), repeats),
        "slices": _time(lambda: project_fourier(prepared, rots), repeats),
        "project": _time(lambda: project_fourier(vol, rots, pad=pad), repeats),
    }
    imgs = res["project"]["out"]
    res["insert"] = _time(lambda: insert_images(imgs, rots, pad=pad), repeats)
    acc = res["insert"]["out"]
    res["finish"] = _time(lambda: finish_reconstruction(acc), repeats)
    res["backproject"] = _time(
        lambda: finish_reconstruction(insert_images(imgs, rots, pad=pad)), repeats
    )
    ref = project_real_space(vol, rots[:3])
    res["proj_cc"] = min(
        float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(imgs[:3], ref, strict=True)
    )
    _, f = fsc(res["backproject"]["out"].volume, vol, pixel_size=1.0)
    res["fsc_min_08"] = float(f[1 : int(0.8 * n // 2) + 1].min())
    return res


TORCHPROJ_BUILD = (
    "python3 -m venv benchmarks/.envs/torchproj && benchmarks/.envs/torchproj/bin/pip install "
    "torch==2.13.0 numpy scipy pybind11 ninja wheel setuptools && MAX_JOBS=2 "
    "benchmarks/.envs/torchproj/bin/pip install --no-build-isolation --no-binary "
    "torch-projectors torch-projectors==0.13.1"
)
TORCHPROJ_PY = Path(ROOT) / "benchmarks" / ".envs" / "torchproj" / "bin" / "python"


def run_peers(n: int, views: int, repeats: int, pad: float, threads: int) -> dict:
    """torch-projectors on the same map, poses, padding and threads, each mode in a fresh
    process of its own venv (built by ``TORCHPROJ_BUILD``, ~9 min; skipped when absent).
    Returns ``{"torch-projectors": {step: timings, "proj_cc": cc, "fsc_min_08": f}}``."""
    if not TORCHPROJ_PY.exists():
        print(f"peers: torch-projectors venv missing; build it with:\n  {TORCHPROJ_BUILD}")
        return {}
    vol = synthetic_blob_map(n, seed=1)
    rots = Rotation.random(views, random_state=2).as_matrix()
    side = Path(ROOT) / "benchmarks" / "peers" / "torchproj_side.py"
    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/map.npy", vol)
        # its rotation matrices are the transposes of ours (map frame <- image frame): with
        # ours as they are its projections correlate 0.89 with the line integrals, with the
        # transposes 0.999
        np.save(f"{tmp}/rot.npy", rots.transpose(0, 2, 1))
        common = ["--map", f"{tmp}/map.npy", "--rotations", f"{tmp}/rot.npy", "--pad",
                  str(pad), "--threads", str(threads), "--repeats", str(repeats)]  # fmt: skip
        for mode, extra in (("project", []), ("backproject", ["--images", f"{tmp}/proj.npy"])):
            out = subprocess.run(
                [str(TORCHPROJ_PY), str(side), mode, *common, *extra, "--out", f"{tmp}/{mode}.npy"],
                capture_output=True, text=True, check=True, cwd=ROOT,
            )  # fmt: skip
            res.update(json.loads(out.stdout.strip().splitlines()[-1]))
            if mode == "project":
                imgs = np.load(f"{tmp}/project.npy")
                np.save(f"{tmp}/proj.npy", imgs)
                ref = project_real_space(vol, rots[:3])
                res["proj_cc"] = min(
                    float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
                    for a, b in zip(imgs[:3], ref, strict=True)
                )
        _, f = fsc(np.load(f"{tmp}/backproject.npy"), vol, pixel_size=1.0)
        res["fsc_min_08"] = float(f[1 : int(0.8 * n // 2) + 1].min())
    return {"torch-projectors": res}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--views", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pad", type=float, default=2.0)
    ap.add_argument("--no-compile", action="store_true", help="skip the fresh-process timings")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    a = ap.parse_args(argv)
    import numba

    load0 = os.getloadavg()[0]
    print(
        f"machine: {machine()}; numba threads {numba.get_num_threads()}, FFT threads {default_threads()}"
    )
    print(
        f"workload: {a.n}^3 map, {a.views} views of {a.n}^2, pad {a.pad}, {a.repeats} warm repeats"
    )
    comp = None if a.no_compile else compile_times()
    r = run_emforge(a.n, a.views, a.repeats, a.pad)
    import numba as _nb

    peers = run_peers(a.n, a.views, a.repeats, a.pad, _nb.get_num_threads())
    rows = []
    for key, label in (
        ("prepare", "prepare map (pad, gridding, FFT)"),
        ("slices", "slices + inverse FFTs (prepared)"),
        ("project", "project (total)"),
        ("insert", "insert (image FFTs + kernel)"),
        ("finish", "finish (divide, 3 inverse FFTs)"),
        ("backproject", "back-project (total)"),
    ):
        t = r[key]
        tp = peers.get("torch-projectors", {}).get(key)
        if tp:
            peer_s = f"{tp['cold']:.3f} / {tp['min']:.3f} / {tp['median']:.3f} / {tp['max']:.3f}"
            ratio = f"{t['median'] / tp['median']:.2f} (cold {t['cold'] / tp['cold']:.2f})"
        else:
            peer = RECORDED_PEER.get(key)
            ratio = f"{t['median'] / peer[0]:.2f}-{t['median'] / peer[1]:.2f}" if peer else ""
            peer_s = f"{peer[0]}-{peer[1]} (design notes)" if peer else ""
        rows.append(
            (
                label,
                f"{t['cold']:.3f}",
                f"{t['min']:.3f}",
                f"{t['median']:.3f}",
                f"{t['max']:.3f}",
                f"{t['cpu']:.3f}",
                peer_s,
                ratio,
            )
        )
    print(
        table(
            rows,
            (
                "step",
                "cold s",
                "min s",
                "median s",
                "max s",
                "cpu s",
                "torch-projectors cold/min/med/max s",
                "ours/peer",
            ),
        )
    )
    print(
        f"accuracy: projection cc with real space (3 views) {r['proj_cc']:.4f}; round trip min FSC to 0.8 Nyquist {r['fsc_min_08']:.4f}"
    )
    if comp:
        e, f = comp["empty_cache"], comp["filled_cache"]
        print(f"first call in a fresh process: empty numba cache project {e['project']:.2f} s, reconstruct {e['reconstruct']:.2f} s; "
              f"filled cache project {f['project']:.2f} s, reconstruct {f['reconstruct']:.2f} s (import {f['import']:.2f} s)")  # fmt: skip
    if not peers:
        print("peers: not run (see above); ratios use the design notes' figures")
    else:
        tp = peers["torch-projectors"]
        print(
            f"torch-projectors accuracy: projection cc {tp['proj_cc']:.4f}; round trip min FSC to "
            f"0.8 Nyquist {tp['fsc_min_08']:.4f}; threads {tp['threads']}, peak RSS "
            f"{tp['peak_rss_mb']:.0f} MiB (its own process; no gridding correction, one map, no halves)"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"load average: {load0:.1f} before, {os.getloadavg()[0]:.1f} after; peak RSS {rss:.0f} MiB"
    )
    if a.json:
        clean = {
            k: ({kk: vv for kk, vv in v.items() if kk != "out"} if isinstance(v, dict) else v)
            for k, v in r.items()
        }
        print(json.dumps({"emforge": clean, "compile": comp, "peers": peers, "peak_rss_mib": rss}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
