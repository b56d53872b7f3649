"""Write and read back particle sets: emforge vs Scipion, cold and warm, with ratios.

    python benchmarks/bench_sets.py [--n 100000] [--big 1000000] [--per-mic 50] [--repeats 5]
                                    [--no-scipion] [--wait 120]

Rules: ``docs/benchmarks.md`` (helpers in ``benchmarks/_common.py``).

Data as users have it: each particle has pose (rot, tilt, psi, shifts), CTF (defocus U/V,
angle, voltage, Cs, amplitude contrast), a coordinate (micrograph name, x, y) and an image
location (stack path, index), and ``--per-mic`` particles (default 50) come from each
micrograph and its stack: 100,000 particles carry 2,000 distinct micrograph names and 2,000
distinct stack paths, 1,000,000 carry 20,000 of each.

Both sides write the set into their database and read it back into numpy arrays (checked
equal to what was written). Not timed on either side: making the arrays, creating the project
and importing modules (emforge writes a 10-item set first; Scipion imports before it times).

- Cold: every repeat is a fresh process for both sides (emforge through ``cold_call``,
  Scipion through its own venv, a process per call). The write and read times are taken
  inside the process; the peak RSS is that of the whole process.
- Warm (emforge only: the Scipion side runs as one process per call): repeated writes of new
  sets, and repeated reads, in this process after one untimed call.

Scipion runs in its own virtual environment (benchmarks/.envs/scipion, built on first use).
Targets: emforge ≥ 30× faster to write and ≥ 10× faster to read than Scipion; 1M rich items
written in ≤ 5 s and read to arrays in ≤ 1 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    MIN_REPEATS,
    Sample,
    Stats,
    check_repeats,
    cold_call,
    machine,
    report,
    scipion,
    wait_quiet,
    warm,
)

READ = [
    "rot", "tilt", "psi", "shift_x", "shift_y", "defocus_u", "defocus_v", "defocus_angle",
    "voltage", "cs", "amplitude_contrast", "micrograph", "coord_x", "coord_y", "image_path",
    "image_index",
]  # fmt: skip
EXTRA = ["rlnGroupNumber", "rlnAutopickFigureOfMerit"]


def particles(
    n: int, per_mic: int = 50, extra: bool = False, root: str = "/data/project"
) -> dict[str, np.ndarray]:
    """``n`` particles, ``per_mic`` per micrograph (and per stack), as a picker extracts them.

    Stack paths are absolute, inside the project folder ``root`` (how reads return them).
    """
    rng = np.random.default_rng(1)
    mic = np.arange(n) // per_mic
    cols = {
        "image_path": np.array(
            [f"{root}/Runs/000002/extra/mic_{m:06d}_particles.mrcs" for m in mic], dtype=object
        ),
        "image_index": np.arange(n) % per_mic,
        "pixel_size": np.full(n, 1.05),
        "rot": rng.uniform(-180, 180, n),
        "tilt": rng.uniform(0, 180, n),
        "psi": rng.uniform(-180, 180, n),
        "shift_x": rng.normal(0, 3, n),
        "shift_y": rng.normal(0, 3, n),
        "defocus_u": rng.uniform(5000, 30000, n),
        "defocus_v": rng.uniform(5000, 30000, n),
        "defocus_angle": rng.uniform(0, 180, n),
        "voltage": np.full(n, 300.0),
        "cs": np.full(n, 2.7),
        "amplitude_contrast": np.full(n, 0.1),
        "micrograph": np.array([f"MotionCorr/job002/mic_{m:06d}.mrc" for m in mic], dtype=object),
        "coord_x": rng.uniform(0, 4000, n),
        "coord_y": rng.uniform(0, 4000, n),
    }
    if extra:
        cols["rlnGroupNumber"] = rng.integers(1, 50, n)
        cols["rlnAutopickFigureOfMerit"] = rng.random(n)
    return cols


def _timed(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def cold_write_read(n: int, per_mic: int, extra: bool, out_path: str) -> None:
    """One cold repeat (run in a fresh process): write the set, read it back, check, record."""
    from emforge.project import Project

    names = READ + (EXTRA if extra else [])
    with tempfile.TemporaryDirectory() as tmp:
        proj = Project.init(Path(tmp) / "p")
        cols = particles(n, per_mic, extra, str(proj.path))
        proj.create_set("SetOfParticles", particles(10, per_mic, extra, str(proj.path)))
        s, write_s, write_cpu = _timed(lambda: proj.create_set("SetOfParticles", cols))
        back, read_s, read_cpu = _timed(lambda: s.read(*names))
        for k in back:
            assert np.array_equal(back[k], cols[k]), k
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {"write": [write_s, write_cpu], "read": [read_s, read_cpu], "rss_mb": rss}
    with open(out_path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def emforge_cold(n: int, per_mic: int, extra: bool, repeats: int) -> tuple[Stats, Stats]:
    """(write, read) Stats of ``repeats`` fresh processes; RSS is the whole process's peak."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.jsonl"
        proc = cold_call(cold_write_read, n, per_mic, extra, str(out), repeats=repeats)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    stats = (Stats(f"emforge write {n}"), Stats(f"emforge read {n}"))
    for row, sample in zip(rows, proc.samples, strict=True):
        for st, key in zip(stats, ("write", "read"), strict=True):
            st.samples.append(Sample(row[key][0], row[key][1], sample.rss_mb))
    return stats


def emforge_warm(n: int, per_mic: int, repeats: int) -> tuple[Stats, Stats]:
    from emforge.project import Project

    with tempfile.TemporaryDirectory() as tmp:
        proj = Project.init(Path(tmp) / "p")
        cols = particles(n, per_mic, root=str(proj.path))
        made = []
        write = warm(lambda: made.append(proj.create_set("SetOfParticles", cols)), repeats)
        read = warm(lambda: made[-1].read(*READ), repeats)
    return write, read


def scipion_cold(n: int, per_mic: int, repeats: int) -> tuple[Stats, Stats] | None:
    """(write, read) Stats of ``repeats`` Scipion processes, or None if Scipion cannot run."""
    stats = (Stats(f"scipion write {n}"), Stats(f"scipion read {n}"))
    for _ in range(check_repeats(repeats)):
        peer = scipion("sets", n, per_mic)
        if peer is None:
            return None
        rss = float(peer.get("rss_mb", float("nan")))
        stats[0].samples.append(Sample(peer["write_s"], peer["write_cpu_s"], rss))
        stats[1].samples.append(Sample(peer["read_s"], peer["read_cpu_s"], rss))
    return stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--per-mic", type=int, default=50, help="particles per micrograph and stack")
    ap.add_argument("--repeats", type=int, default=MIN_REPEATS)
    ap.add_argument("--no-scipion", action="store_true")
    ap.add_argument("--wait", type=float, default=120.0, help="seconds to wait for load < 1.5")
    args = ap.parse_args()
    check_repeats(args.repeats)
    mics = -(-args.n // args.per_mic)
    print(f"bench_sets: {args.n} particles with pose + CTF + coordinate, {mics} micrographs and "
          f"stacks ({args.per_mic} per micrograph); {machine()}", flush=True)  # fmt: skip
    wait_quiet(timeout=args.wait)
    cw, cr = emforge_cold(args.n, args.per_mic, False, args.repeats)
    ww, wr = emforge_warm(args.n, args.per_mic, args.repeats)
    peer = None if args.no_scipion else scipion_cold(args.n, args.per_mic, args.repeats)
    pw, pr = peer if peer else (None, None)
    print(report([(f"write {args.n}, cold", cw, pw), (f"read {args.n}, cold", cr, pr)], "scipion"))
    print("targets: scipion/emforge ≥ 30× to write, ≥ 10× to read (cold against cold)")
    print(report([(f"write {args.n}, warm", ww, None), (f"read {args.n}, warm", wr, None)]))
    bw, br = emforge_cold(args.big, args.per_mic, True, args.repeats)
    print(report([(f"write {args.big} rich (+2 columns), cold", bw, None),
                  (f"read {args.big} rich (+2 columns), cold", br, None)]))  # fmt: skip
    print(f"targets: write ≤ 5 s, read ≤ 1 s (medians {bw.median:.2f} s, {br.median:.2f} s)")
    print(f"end: {machine()}")


if __name__ == "__main__":
    main()
