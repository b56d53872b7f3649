"""Template matching: peak RSS of a tiled 512 x 512 x 256 match under a memory bound.

Runs the match in a child process (few rotations) and reads its peak RSS with
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``. The side-by-side run against pyTME (recall,
decoys, orientation error, wall/CPU ratio) is not written yet.

    python benchmarks/bench_template_match.py --memory-gb 2 --rotations 2
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

CHILD = r"""
import sys, time, numpy as np
from emforge.protocols.subtomo.kernels import template_match as tm
shape = tuple(int(a) for a in sys.argv[1].split(","))
bound = float(sys.argv[2]); nrot = int(sys.argv[3])
rng = np.random.default_rng(0)
tomo = rng.normal(0, 1, shape).astype(np.float32)
g = np.arange(48) - 24
t = (g[:, None, None] ** 2 / 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2 <= 400).astype(np.float32)
rots = tm.rotation_set("so3", step=30)[:nrot]
tiles = tm.plan_tiles(shape, t.shape, memory_bytes=bound - tomo.nbytes * 3)
t0 = time.perf_counter()
b, i = tm.match_template(tomo, t, rots, memory_bytes=bound - tomo.nbytes * 3)
print(len(tiles), max(tm.estimate_memory(x.fft_shape, t.shape) for x in tiles), time.perf_counter() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="256,512,512")
    ap.add_argument("--memory-gb", type=float, default=2.0)
    ap.add_argument("--rotations", type=int, default=2)
    a = ap.parse_args()
    bound = a.memory_gb * 1e9
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, a.shape, str(bound), str(a.rotations)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    ntiles, est, match_s = out.stdout.split()
    print(f"load(1 min) {os.getloadavg()[0]:.2f}  shape {a.shape}  rotations {a.rotations}")
    print(f"bound {bound / 1e9:.2f} GB  tiles {ntiles}  est/tile {int(est) / 1e9:.2f} GB")
    print(f"peak RSS {ru.ru_maxrss / 1e6:.2f} GB  match {float(match_s):.1f} s  wall {wall:.1f} s  "
          f"CPU {ru.ru_utime + ru.ru_stime:.1f} s")  # fmt: skip
    print("PASS" if ru.ru_maxrss * 1e3 <= bound else "FAIL: peak RSS over the bound")


if __name__ == "__main__":
    main()
