"""Timing helpers for the mask kernels (called by the masks benchmark; runnable on its own).

``python benchmarks/bench_masks_kernels.py`` prints both measurements as JSON.
"""

from __future__ import annotations

import json
import time

import numpy as np

from emforge.protocols.automask.kernels import auto3d
from emforge.protocols.masks.kernels import apply_mask, make_mask, mask_volume

__all__ = ["raised_cosine_vs_multiply", "automask_256", "synthetic_blob_map"]


def _best(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return float(best)


def raised_cosine_vs_multiply(n: int = 256, repeats: int = 5) -> dict:
    """Build AND apply a 3D raised-cosine mask on an ``n**3`` float32 volume, versus a plain
    numpy multiply of two ``n**3`` float32 arrays (best of ``repeats`` each, interleaved).

    The mask runs from ``inner_radius = 0.35 n`` to ``outer_radius = 0.45 n`` px. ``fused_s`` is
    :func:`mask_volume` (the protocol path); ``make_apply_s`` is :func:`make_mask` followed by
    :func:`apply_mask` (a full-size mask array); ``ratio`` is ``fused_s / multiply_s``.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n, n), dtype=np.float32)
    b = rng.standard_normal((n, n, n), dtype=np.float32)
    kw = {"inner_radius": 0.35 * n, "outer_radius": 0.45 * n}

    def fused():
        return mask_volume(a, "raised_cosine", **kw)

    def two_step():
        return apply_mask(a, make_mask(a.shape, "raised_cosine", **kw), binary=False)

    times = {"multiply": np.inf, "fused": np.inf, "make_apply": np.inf}
    fns = {"multiply": lambda: a * b, "fused": fused, "make_apply": two_step}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name] = min(times[name], _best(fn, 1))
    return {
        "n": n,
        "multiply_s": times["multiply"],
        "fused_s": times["fused"],
        "make_apply_s": times["make_apply"],
        "ratio": times["fused"] / times["multiply"],
        "ratio_make_apply": times["make_apply"] / times["multiply"],
    }


def synthetic_blob_map(n: int = 256, seed: int = 0) -> np.ndarray:
    """A particle-like float32 map: 12 overlapping Gaussian blobs near the centre plus noise."""
    rng = np.random.default_rng(seed)
    z, y, x = (np.arange(n, dtype=np.float32) - n // 2 for _ in range(3))
    vol = rng.normal(0.0, 0.05, (n, n, n)).astype(np.float32)
    for _ in range(12):
        cz, cy, cx = rng.uniform(-0.2 * n, 0.2 * n, 3)
        s = rng.uniform(0.05 * n, 0.1 * n)
        gz = np.exp(-((z - cz) ** 2) / (2 * s * s)).astype(np.float32)
        gy = np.exp(-((y - cy) ** 2) / (2 * s * s)).astype(np.float32)
        gx = np.exp(-((x - cx) ** 2) / (2 * s * s)).astype(np.float32)
        vol += gz[:, None, None] * (gy[:, None] * gx[None, :])[None]
    return vol


def automask_256(repeats: int = 3) -> dict:
    """Time :func:`auto3d` on a 256**3 synthetic blob map (threshold 0.3, nmaxseed 24,
    nshells 4, nshellsgauss 6); best of ``repeats``."""
    vol = synthetic_blob_map(256)
    kw = {"threshold": 0.3, "nmaxseed": 24, "nshells": 4, "nshellsgauss": 6}
    mask = auto3d(vol, **kw)
    seconds = _best(lambda: auto3d(vol, **kw), repeats)
    return {"n": 256, "seconds": seconds, "mask_fraction": float((mask > 0.5).mean())}


if __name__ == "__main__":
    print(json.dumps({"raised_cosine": raised_cosine_vs_multiply(), "automask": automask_256()}))
