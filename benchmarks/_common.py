"""Shared helpers of the benchmarks: timing, tables, the Scipion peer."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # makes `benchmarks.peers` importable when run as a script
    sys.path.insert(0, str(ROOT))


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Smallest wall time of ``repeats`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def table(rows: list[tuple], header: tuple) -> str:
    cols = list(zip(*([header] + [tuple(map(str, r)) for r in rows]), strict=True))
    widths = [max(len(c) for c in col) for col in cols]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def machine() -> str:
    return f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}"


def scipion(mode: str, *args: object) -> dict | None:
    """Run one mode of the Scipion side in its own venv; None (with a line) if it cannot run."""
    from benchmarks.peers.scipion_side import run_scipion

    try:
        return run_scipion(mode, *args)
    except Exception as exc:  # the peer is optional: say why and carry on
        print(f"[scipion] {mode} could not run: {type(exc).__name__}: {str(exc)[:300]}")
        return None
