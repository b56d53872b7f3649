"""Write and read back particle sets: emforge vs Scipion, in one run, with ratios.

    python benchmarks/bench_sets.py [--n 100000] [--big 1000000] [--no-scipion]

Each particle has pose (rot, tilt, psi, shifts), CTF (defocus U/V, angle, voltage, Cs,
amplitude contrast) and a coordinate (micrograph, x, y). "Read" means: back into numpy arrays.
Scipion runs in its own virtual environment (benchmarks/.envs/scipion, built on first use).
Targets (issue 2): emforge ≥ 30× faster to write and ≥ 10× faster to read than Scipion;
1M rich items written in ≤ 5 s and read to arrays in ≤ 1 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, scipion, table

from emforge.project import Project

READ = [
    "rot",
    "tilt",
    "psi",
    "shift_x",
    "shift_y",
    "defocus_u",
    "defocus_v",
    "defocus_angle",
    "voltage",
    "cs",
    "amplitude_contrast",
    "micrograph",
    "coord_x",
    "coord_y",
    "image_path",
    "image_index",
]


def particles(n: int, extra: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    cols = {
        "image_path": np.array(
            [f"Runs/000002/extra/stack_{i // 10000:04d}.mrcs" for i in range(n)], dtype=object
        ),
        "image_index": np.arange(n) % 10000,
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
        "micrograph": np.array([f"mic_{i // 300:06d}.mrc" for i in range(n)], dtype=object),
        "coord_x": rng.uniform(0, 4000, n),
        "coord_y": rng.uniform(0, 4000, n),
    }
    if extra:
        cols["rlnGroupNumber"] = rng.integers(1, 50, n)
        cols["rlnAutopickFigureOfMerit"] = rng.random(n)
    return cols


def emforge_write_read(n: int, extra: bool = False) -> dict[str, float]:
    cols = particles(n, extra)
    with tempfile.TemporaryDirectory() as tmp:
        proj = Project.init(Path(tmp) / "p")
        # warm-up on 10 items: module imports (pandas for the string columns) are paid
        # before timing, as the Scipion side imports its modules before it times the write
        proj.create_set("SetOfParticles", particles(10, extra))
        t0 = time.perf_counter()
        s = proj.create_set("SetOfParticles", cols)
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = s.read(*READ, *(["rlnGroupNumber", "rlnAutopickFigureOfMerit"] if extra else []))
        read_s = time.perf_counter() - t0
        for k in back:
            assert np.array_equal(back[k], cols[k]), k
    return {"write_s": write_s, "read_s": read_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--no-scipion", action="store_true")
    args = ap.parse_args()
    print(f"bench_sets: {args.n} particles with pose + CTF + coordinate; {machine()}")
    ours = emforge_write_read(args.n)
    peer = None if args.no_scipion else scipion("sets", args.n)
    rows = [("emforge", f"{ours['write_s']:.3f}", f"{ours['read_s']:.3f}", "", "")]
    if peer:
        rows.append(
            (
                "scipion",
                f"{peer['write_s']:.3f}",
                f"{peer['read_s']:.3f}",
                f"{peer['write_s'] / ours['write_s']:.0f}× (target ≥ 30×)",
                f"{peer['read_s'] / ours['read_s']:.0f}× (target ≥ 10×)",
            )
        )
    print(table(rows, ("framework", "write s", "read s", "emforge faster: write", "read")))
    big = emforge_write_read(args.big, extra=True)
    print(
        f"emforge {args.big} rich items (+2 extra columns): write {big['write_s']:.2f} s (target ≤ 5), "
        f"read {big['read_s']:.2f} s (target ≤ 1)"
    )


if __name__ == "__main__":
    main()
