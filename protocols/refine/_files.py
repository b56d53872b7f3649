"""File helpers and comparator options shared by the refinement steps (they run on workers:
plain files in, plain files out, never the database)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "accepted",
    "ctf_of",
    "missing_options",
    "read_rows",
    "resolved_cmp",
    "ring_snr",
]


def _save_npz(path: str | Path, **arrays: Any) -> None:
    from emforge.io.mrc import atomic_target

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})


def _load_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write_map(path: str | Path, data: np.ndarray, px: float) -> None:
    from emforge.io import write_volume

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_volume(path, np.asarray(data, np.float32), voxel_size=px)


def _read_map(path: str | Path) -> np.ndarray:
    from emforge.io import read_volume

    return read_volume(path)[0].astype(np.float32, copy=False)


def _write_stack(path: str | Path, images: np.ndarray, px: float) -> None:
    from emforge.io import StackWriter

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with StackWriter(str(path), images.shape, voxel_size=px) as w:
        w.write(0, np.asarray(images, np.float32))


def read_rows(path: str | Path, rows: np.ndarray) -> np.ndarray:
    """Images ``rows`` of one MRC stack, float32 (k, n, n)."""
    from emforge.io import open_stack

    reader = open_stack(path)
    try:
        return np.asarray(reader[np.asarray(rows, np.int64)], np.float32)
    finally:
        reader.close()


def accepted(fn: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options a kernel's signature takes (the kernels are written in parallel with this
    layer; a param the kernel lacks is refused in ``validate()``, see :func:`missing_options`)."""
    names = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in names}


def missing_options(fn: Any, names: list[str]) -> list[str]:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    return [n for n in names if n not in params]


def ctf_of(meta: dict[str, np.ndarray], rows: np.ndarray, box: int, px: float) -> np.ndarray:
    """CTF values (k, n, n//2+1) of prepared particles ``rows``."""
    from emforge.protocols.reconstruct._common import CTF_COLUMNS
    from emforge.protocols.reconstruct.kernels import ctf_stack

    return ctf_stack(box, pixel_size=px, columns={c: meta[c][rows] for c in CTF_COLUMNS})


def _rings(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    ky = np.fft.fftfreq(n) * n
    ring = np.rint(np.hypot(ky[:, None], np.arange(m)[None, :])).astype(np.int64).ravel()
    return ring, ring < n // 2


def ring_snr(ctf: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per-ring SNR (k, n//2) of particles for a comparator's ``snrweight``.

    EMAN2 takes it from e2ctf's fit; here it is estimated from the particles themselves: the
    ring power of particle i is modelled as ``S(r)·CTF_i(r)² + N(r)`` and S, N are fitted per
    ring by least squares over the given particles (their defocus spread separates the two),
    so ``SNR_i(r) = S(r)·CTF_i(r)²/N(r)``.
    """
    from emforge.numerics import rfftn

    k, n = images.shape[0], images.shape[1]
    ring, keep = _rings(n, ctf.shape[2])
    nr = n // 2
    counts = np.maximum(np.bincount(ring[keep], minlength=nr), 1)

    def per_ring(values: np.ndarray) -> np.ndarray:
        v = values.reshape(k, -1)[:, keep]
        return np.stack([np.bincount(ring[keep], row, minlength=nr) for row in v]) / counts

    c2 = per_ring(ctf.astype(np.float64) ** 2)
    power = per_ring(np.abs(rfftn(images.astype(np.float32), axes=(-2, -1))) ** 2)
    snr = np.zeros((k, nr))
    for r in range(nr):
        x, y = c2[:, r], power[:, r]
        var = np.var(x)
        s = np.cov(x, y, bias=True)[0, 1] / var if var > 1e-12 else 0.0
        noise = y.mean() - s * x.mean()
        if s > 0 and noise > 0:
            snr[:, r] = s * x / noise
    return snr


def resolved_cmp(cmp: dict, *, meta, rows, box, px, images) -> tuple[str, dict[str, Any]]:
    """(name, options) of a comparator dict for ``numerics.compare.cost``."""
    opts = {k: v for k, v in cmp.items() if k not in ("name", "snrweight")}
    if cmp["name"] in ("frc", "phase"):
        opts["pixel_size"] = float(px)
        if cmp.get("snrweight") and meta is not None and bool(meta["has_ctf"]):
            opts["snr"] = ring_snr(ctf_of(meta, rows, box, px), images)
    return cmp["name"], opts
