"""Start-up of the ``emforge`` command as whole processes: ``--help``, ``protocols list`` and a
trivial ``run``, each cold (a fresh process, empty caches) with ≥ 5 repeats.

    python benchmarks/bench_startup.py [--repeats 7] [--emforge PATH]

Besides wall time (which depends on the machine's load) it prints the CPU time of each process
and, from a separate probe, how many modules building the parser imports and whether any of
numpy, SQLAlchemy, pandas or rich is among them. Targets (issue 10): ``--help`` ≤ 0.15 s,
``protocols list`` ≤ 0.3 s, a trivial ``run`` ≤ 0.4 s.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import MIN_REPEATS, cold_command, machine, table, wait_quiet

HEAVY = ("numpy", "sqlalchemy", "pandas", "rich", "pydantic", "scipy")
PROBE = (
    "import sys, emforge.cli as c; c.build_parser(); "
    f"print(len(sys.modules), [m for m in {HEAVY!r} if m in sys.modules])"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--emforge", default=str(Path(sys.executable).with_name("emforge")))
    ap.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a quiet machine")
    args = ap.parse_args()
    exe = str(Path(shutil.which(args.emforge) or args.emforge).absolute())
    python = str(Path(exe).with_name("python"))
    quiet, _ = wait_quiet(timeout=args.wait)
    print(f"bench_startup: {exe}; {machine()}")
    probe = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, check=True)
    print(f"after build_parser: {probe.stdout.strip()} (modules, heavy ones imported)")
    with tempfile.TemporaryDirectory() as tmp:
        proj = Path(tmp) / "p"
        subprocess.run([exe, "project", "init", str(proj)], check=True, capture_output=True)
        run = [exe, "run", "example.sleep", "-P", str(proj), "-p", "seconds=0", "-p", "n_steps=1"]
        cases = {
            "emforge --help": ([exe, "--help"], 0.15),
            "emforge protocols list": ([exe, "protocols", "list"], 0.3),
            "emforge run example.sleep (trivial)": (run, 0.4),
            "  the same, --executor inline": (run + ["--executor", "inline"], 0.4),
        }
        rows = []
        for name, (argv, target) in cases.items():
            s = cold_command(argv, max(args.repeats, MIN_REPEATS), label=name)
            met = "yes" if s.median <= target else "NO"
            rows.append(
                (name, f"{s.min:.3f}", f"{s.median:.3f}", f"{s.max:.3f}", f"{s.cpu_median:.3f}",
                 f"{s.rss_mb:.0f}", f"≤ {target}", met)
            )  # fmt: skip
    print(table(rows, ("case", "min s", "median s", "max s", "cpu s", "RSS MB", "target", "met")))
    if not quiet:
        print("NOTE: the machine was loaded; wall times are upper bounds, CPU times are comparable")
    print(f"load at the end: {machine()}")


if __name__ == "__main__":
    sys.exit(main())
