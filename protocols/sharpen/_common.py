"""Helpers shared by the sharpening protocols: map checks, half-map inputs, output writing."""

from __future__ import annotations

from typing import Any

import numpy as np

from emforge.engine import StepContext
from emforge.engine.checks import grid_problems
from emforge.objects import FSC, Volume

__all__ = [
    "map_problems",
    "pair_problems",
    "identical_halves_problems",
    "mask_grid_problems",
    "resolution_problems",
    "halves_of",
    "read",
    "write_outputs",
    "masked_correlation",
    "warning_lines",
    "fit_range_problems",
]


def read(path: str) -> np.ndarray:
    from emforge.io import read_volume

    return read_volume(path)[0]


def map_problems(name: str, path: str, source: str | None = None) -> list[str]:
    """A map must be finite and not all zeros (one line each, naming the input and file;
    ``source`` is the file the map was imported from, named when known)."""
    data = read(path)
    where = f"{source} (project copy {path})" if source else path
    if not np.all(np.isfinite(data)):
        return [
            f"input '{name}': {where} contains {int(np.count_nonzero(~np.isfinite(data)))} NaN/infinite values"
        ]
    if not np.any(data):
        return [f"input '{name}': {where} is all zeros"]
    return []


def pair_problems(a: Volume, b: Volume, what: str = "half1") -> list[str]:
    """Half map ``b`` must lie on the grid of ``a`` (shape, pixel size within 0.1%)."""
    return grid_problems("half2", b, a, what, tolerance=1e-3)


def identical_halves_problems(halves: tuple[str, str] | None) -> list[str]:
    """Two identical half maps give FSC = 1 everywhere (a Nyquist 'resolution'): refuse them."""
    if halves is None:
        return []
    a, b = halves
    if a == b or np.array_equal(read(a), read(b)):
        return [
            f"input 'half2': {b} is identical to half1 ({a}): the FSC would be 1 at every "
            "frequency; give two independently refined half maps"
        ]
    return []


def mask_grid_problems(mask: Any, reference: Volume, what: str = "map") -> list[str]:
    """A mask input must lie on the grid (shape and pixel size) of the map it is used with."""
    return [] if mask is None else grid_problems("mask", mask, reference, what)


def resolution_problems(name: str, value: float | None, pixel_size: float) -> list[str]:
    if value is not None and 0 < value < 2 * pixel_size:
        return [
            f"param '{name}': {value} Å is finer than Nyquist ({2 * pixel_size:.3g} Å at {pixel_size:.4g} Å/px)"
        ]
    return []


def halves_of(inputs: dict[str, Any]) -> tuple[str, str] | None:
    """The two half-map paths: from ``half1``/``half2`` inputs, or from the volume's halves."""
    h1, h2 = inputs.get("half1"), inputs.get("half2")
    if h1 is not None and h2 is not None:
        return h1.path, h2.path
    vol = inputs.get("volume")
    if vol is not None and vol.has_halves:
        return vol.half1, vol.half2
    return None


def write_outputs(
    ctx: StepContext,
    src: Volume,
    data: np.ndarray,
    halves: tuple[np.ndarray, np.ndarray] | None,
    fsc: FSC | None = None,
) -> None:
    """Write the sharpened map (and halves) next to the source's header values; register them."""
    from emforge.io import read_info, write_volume

    info = read_info(src.path)
    path = ctx.path("sharpened.mrc")
    write_volume(path, data.astype(np.float32), **info.placement)
    hp: list[str | None] = [None, None]
    if halves is not None:
        for i, h in enumerate(halves):
            p = ctx.path(f"sharpened_half{i + 1}.mrc")
            write_volume(p, h.astype(np.float32), **info.placement)
            hp[i] = str(p)
    ctx.output(
        "volume",
        Volume(
            str(path),
            src.pixel_size,
            src.shape,
            src.origin,
            hp[0],
            hp[1],
            src.voxel_size,
            origin_field=src.origin_field,
        ),
    )
    if fsc is not None:
        ctx.output("fsc", fsc)


def masked_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Real-space correlation of two maps inside a mask (weights), mean removed."""
    w = np.ones_like(a) if mask is None else mask
    wa = a - np.average(a, weights=w)
    wb = b - np.average(b, weights=w)
    return float(np.sum(w * wa * wb) / np.sqrt(np.sum(w * wa * wa) * np.sum(w * wb * wb)))


def warning_lines(results: dict[str, Any]) -> list[str]:
    """``"warning: ..."`` for every warning the steps recorded (``ctx.warn``), in step order."""
    return [f"warning: {w}" for r in results.values() for w in (r or {}).get("warnings", [])]


def fit_range_problems(
    name: str, shape, pixel_size: float, resolution: float | None, d_max: float | None = None
) -> list[str]:
    """Validation of the map-B fit range (see :mod:`.kernels.mapb`): one line naming
    ``name`` when the box holds too few Fourier shells coarser than the resolution."""
    from .kernels.mapb import map_b_fit_range

    try:
        map_b_fit_range(shape, pixel_size=pixel_size, resolution=resolution, d_max=d_max)
    except ValueError as exc:
        return [f"param '{name}': {str(exc).removeprefix('resolution: ')}"]
    return []
