"""Benchmark of the masks family; prints tables with ratios against physical baselines.

Rules: ``docs/benchmarks.md`` (helpers in ``benchmarks/_common.py``).

1. Masks in memory, warm (repeated calls in this process after one untimed call), against a
   preallocated ``np.multiply(a, b, out=c)`` of the same arrays (the least a mask can cost):
   a 3D raised-cosine mask built and applied to 256³ (``mask_volume`` into a preallocated
   output, what masks.volumes runs) and a binary circular mask with mean fill applied in
   place to one streaming chunk (64 × 128², what masks.particles runs per chunk).
2. Streaming: a particle stack of ``--images`` × 128² (default 50,000: 3.3 GB) and of
   ``--small`` images (default 10,000), each masked file to file by ``mask_stack_file`` (the
   step of masks.particles: read, mask, write a new stack with header statistics, fsync,
   rename) in a fresh process per repeat, against ``cp`` of the same bytes (and ``cp`` followed
   by ``sync`` of the copy: our writer fsyncs before it renames, plain ``cp`` does not). Before
   every repeat of either side the last output is deleted, dirty pages are flushed and the
   input is dropped from the page cache (untimed): each repeat reads from the disk. Peak RSS
   is that of the fresh process (``os.wait4``), for both sizes: bounded means equal for both.
   Warm: the small stack masked in this process versus ``shutil.copyfile`` + ``os.fsync``,
   both with the cache drop inside the timed call. Targets: throughput ≥ 50% of ``cp``, peak
   RSS ≤ 500 MB and the same for both sizes.
3. Automask of a 256³ synthetic map: ``auto3d`` with given parameters (kernel, warm), and the
   whole ``automask.auto3d`` protocol with automatic parameters through the Python API, cold:
   each repeat is a fresh process that opens the project and runs the protocol (read, mask,
   write the mask and the masked map, report, registration). Wall time of ``Project.run``,
   CPU time and peak RSS of that process (``resource.getrusage``), the load average; min /
   median / max of ``--automask-repeats`` (default 5). Target: <= 1.5 s.

Run: ``python benchmarks/bench_masks.py [--images 50000] [--small 10000] [--box 128]
[--tmp /tmp] [--repeats 5] [--skip-stream] [--skip-automask] [--automask-repeats 5]
[--wait 120]``. The
stacks are written in a temporary folder under ``--tmp`` (free space is checked first) and
deleted afterwards. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Sample,
    Stats,
    cold_call,
    copy_baseline,
    drop_file_cache,
    machine,
    report,
    wait_quiet,
    warm,
)

from emforge.io import StackWriter  # noqa: E402
from emforge.protocols.masks._stream import CHUNK_BYTES, mask_stack_file  # noqa: E402
from emforge.protocols.masks.kernels import apply_mask, make_mask, mask_volume  # noqa: E402

MB = 2**20


# --------------------------------------------------------------------------- (1) in memory


def bench_kernels(repeats: int) -> str:
    """Warm mask kernels against a preallocated ``np.multiply(..., out=)`` of the same size."""
    rng = np.random.default_rng(0)
    n = 256
    vol = rng.standard_normal((n, n, n), dtype=np.float32)
    other = rng.standard_normal((n, n, n), dtype=np.float32)
    out = np.empty_like(vol)
    kw = {"inner_radius": 0.35 * n, "outer_radius": 0.45 * n}
    cases = [
        (
            "raised cosine 256³ built + applied (mask_volume, out=)",
            warm(lambda: mask_volume(vol, "raised_cosine", out=out, **kw), repeats),
            warm(lambda: np.multiply(vol, other, out=out), repeats),
        )
    ]
    box = 128
    chunk = max(1, CHUNK_BYTES // (4 * box * box))
    block = rng.standard_normal((chunk, box, box), dtype=np.float32)
    work = np.empty_like(block)
    mask = make_mask((box, box), "circular", radius=0.4 * box)

    def masked() -> None:
        np.copyto(work, block)  # the stream masks the freshly read buffer in place
        apply_mask(work, mask, binary=True, fill="mean", out=work)

    def multiplied() -> None:
        np.copyto(work, block)
        np.multiply(work, mask, out=work)

    cases.append(
        (f"binary circle, mean fill, one chunk {chunk} × {box}² in place", warm(masked, repeats),
         warm(multiplied, repeats))
    )  # fmt: skip
    return report(cases, peer="np.multiply(out=)")


# --------------------------------------------------------------------------- (2) streaming


def write_input(path: Path, n: int, box: int) -> float:
    """A synthetic float32 stack of ``n`` images (noise plus a per-image offset); seconds."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((256, box, box), dtype=np.float32)
    t0 = time.perf_counter()
    with StackWriter(path, (n, box, box), voxel_size=1.0) as w:
        for start in range(0, n, 256):
            k = min(256, n - start)
            w.write(start, base[:k] + np.float32(start % 13))
    return time.perf_counter() - t0


def stream_mask(src: str, dst: str, n: int, box: int) -> None:
    """What one masks.particles step does to one stack (run in a fresh process per repeat)."""
    mask = make_mask((box, box), "circular", radius=0.4 * box)
    mask_stack_file(
        [src] * n, np.arange(n), dst, mask=mask, binary=True, fill="mean", fill_value=0.0,
        pixel_size=1.0,
    )  # fmt: skip


def _copy_fsync(src: str, dst: str) -> None:
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mbs(nbytes: int, s: Stats) -> str:
    return f"{nbytes / MB / s.median:.0f} MB/s"


def bench_stream(sizes: list[int], box: int, tmp: str, repeats: int) -> str:
    image = box * box * 4
    need = sum(sizes) * image + 2 * max(sizes) * image + 256 * MB  # inputs, output, copy
    free = shutil.disk_usage(tmp).free
    if free < need:
        return f"(2) streaming skipped: {free / 2**30:.1f} GB free in {tmp}, need {need / 2**30:.1f} GB"
    folder = Path(tempfile.mkdtemp(prefix="emforge_bench_masks_", dir=tmp))
    lines, cases, rss = [], [], {}
    try:
        for count in sizes:
            src = folder / f"input_{count}.mrcs"
            print(
                f"[masks] writing {count} × {box}² ({count * image / 2**30:.2f} GB) ...", flush=True
            )
            write_input(src, count, box)
        for count in sizes:
            src, dst = folder / f"input_{count}.mrcs", folder / f"masked_{count}.mrcs"

            def reset(src=src, dst=dst) -> None:
                dst.unlink(missing_ok=True)
                drop_file_cache(src)

            size = src.stat().st_size
            print(f"[masks] {count} images: ours, cp, cp + sync (x{repeats} each) ...", flush=True)
            ours = cold_call(stream_mask, str(src), str(dst), count, box, repeats=repeats,
                             label=f"mask {count}", before=reset)  # fmt: skip
            cp = copy_baseline(src, repeats, before=lambda src=src: drop_file_cache(src))
            cps = copy_baseline(
                src, repeats, fsync=True, before=lambda src=src: drop_file_cache(src)
            )
            reset()
            inner = Stats("inner", [Sample(x.inner_wall, x.cpu, x.rss_mb) for x in ours.samples])
            cases += [
                (f"{count} × {box}² vs cp, cold", ours, cp),
                (f"{count} × {box}² vs cp + sync, cold", ours, cps),
            ]
            rss[count] = ours.rss_mb
            lines.append(
                f"{count} images ({size / 2**30:.2f} GB): ours {_mbs(size, ours)} (process; the call "
                f"alone {_mbs(size, inner)}), cp {_mbs(size, cp)}, cp + sync {_mbs(size, cps)}; "
                f"ours = {cp.median / ours.median:.0%} of cp, {cps.median / ours.median:.0%} of "
                f"cp + sync (target ≥ 50% of cp); peak RSS ours {ours.rss_mb:.0f} MB, cp {cp.rss_mb:.0f} MB"
            )
        small = min(sizes)
        src, dst = folder / f"input_{small}.mrcs", folder / f"masked_{small}.mrcs"
        mask = make_mask((box, box), "circular", radius=0.4 * box)
        ids, names = np.arange(small), [str(src)] * small

        def ours_warm() -> None:
            drop_file_cache(src)
            mask_stack_file(names, ids, str(dst), mask=mask, binary=True, fill="mean",
                            fill_value=0.0, pixel_size=1.0)  # fmt: skip

        def copy_warm() -> None:
            drop_file_cache(src)
            _copy_fsync(str(src), str(dst) + ".copy")

        cases.append((f"{small} × {box}² warm vs shutil.copyfile + fsync", warm(ours_warm, repeats),
                      warm(copy_warm, repeats)))  # fmt: skip
        lo, hi = min(sizes), max(sizes)
        lines.append(
            f"peak RSS of the fresh process: {lo} images {rss[lo]:.0f} MB, {hi} images "
            f"{rss[hi]:.0f} MB (target ≤ 500 MB and the same for both)"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return report(cases, peer="cp") + "\n" + "\n".join(lines)


_COLD_CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from emforge.project import Project
proj = Project.open(sys.argv[1])
t1 = time.perf_counter()
r1 = resource.getrusage(resource.RUSAGE_SELF)
proj.run("automask.auto3d", inputs={"volume": sys.argv[2]}, params=json.loads(sys.argv[3]))
t2 = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_SELF)
cpu = ru.ru_utime + ru.ru_stime
print(json.dumps({"open": t1 - t0, "run": t2 - t1, "cpu": cpu,
                  "run_cpu": cpu - r1.ru_utime - r1.ru_stime, "rss_mb": ru.ru_maxrss / 1024}))
"""


def _spread(values: list[float], unit: str = "s", fmt: str = ".3f") -> str:
    v = sorted(values)
    return f"{v[0]:{fmt}} / {v[len(v) // 2]:{fmt}} / {v[-1]:{fmt}} {unit}"


def automask_protocol_cold(repeats: int = 5, params: dict | None = None) -> dict:
    """``automask.auto3d`` on a 256³ map, each repeat in a fresh Python process."""
    from bench_masks_kernels import synthetic_blob_map

    from emforge.io import write_volume
    from emforge.project import Project

    folder = Path(tempfile.mkdtemp(prefix="emforge_bench_automask_"))
    try:
        path = folder / "blob256.mrc"
        write_volume(path, synthetic_blob_map(256), voxel_size=1.0)
        proj = Project.init(folder / "P")
        ref = f"{proj.run('import.volume', params={'path': str(path)})}.volume"
        rows = []
        for _ in range(repeats):
            load = os.getloadavg()[0]
            w0 = time.perf_counter()
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _COLD_CHILD,
                    str(folder / "P"),
                    ref,
                    json.dumps(params or {}),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row.update(process=time.perf_counter() - w0, load=load)
            rows.append(row)
            print(
                f"[automask] cold run {row['run']:.3f} s (cpu {row['run_cpu']:.2f} s), process cpu "
                f"{row['cpu']:.2f} s, process "
                f"{row['process']:.2f} s, peak RSS {row['rss_mb']:.0f} MB, load {load:.1f}",
                flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {k: [r[k] for r in rows] for k in rows[0]}


def bench_automask(repeats: int = 5) -> list[tuple[str, str, str, str]]:
    from bench_masks_kernels import automask_256

    fixed = automask_256(3)
    cold = automask_protocol_cold(repeats)
    loads = sorted(cold["load"])
    return [
        (
            "(3) auto3d kernel 256³ (threshold 0.3, nmaxseed 24, 4 + 6 shells), warm",
            f"{fixed['seconds']:.3f} s",
            f"mask {fixed['mask_fraction']:.1%} of the box",
            "",
        ),
        (
            f"    automask.auto3d 256³ protocol, automatic, cold x{repeats} (min/med/max)",
            _spread(cold["run"]),
            f"cpu of the run {_spread(cold['run_cpu'], fmt='.2f')}, peak RSS {max(cold['rss_mb']):.0f} MB, "
            f"load {loads[0]:.1f}-{loads[-1]:.1f}",
            "target <= 1.5 s",
        ),
        (
            "    whole fresh process (interpreter, imports, project open, run)",
            _spread(cold["process"]),
            f"cpu {_spread(cold['cpu'], fmt='.2f')}",
            "",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--box", type=int, default=128)
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-stream", action="store_true")
    ap.add_argument("--skip-automask", action="store_true")
    ap.add_argument("--automask-repeats", type=int, default=5)
    ap.add_argument("--wait", type=float, default=120.0, help="seconds to wait for load < 1.5")
    args = ap.parse_args(argv)
    print(f"bench_masks: {machine()}", flush=True)
    wait_quiet(timeout=args.wait)
    print("\n(1) masks in memory, warm\n" + bench_kernels(args.repeats), flush=True)
    if not args.skip_stream:
        sizes = sorted({args.small, args.images})
        print("\n(2) streaming\n" + bench_stream(sizes, args.box, args.tmp, args.repeats))
    if not args.skip_automask:
        rows = bench_automask(args.automask_repeats)
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        print("\n(3) automask")
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"\nend: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
