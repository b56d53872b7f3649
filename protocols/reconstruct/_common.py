"""Helpers shared by the simulate / reconstruct / project protocols: checks, image reading,
particle-set attributes, report plots."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "symmetry_problems",
    "read_images",
    "set_box",
    "set_pixel_size",
    "write_particles_stack",
    "montage",
    "CTF_COLUMNS",
]

#: the particle columns a CTF needs (units of :mod:`emforge.columns`)
CTF_COLUMNS = (
    "defocus_u",
    "defocus_v",
    "defocus_angle",
    "voltage",
    "cs",
    "amplitude_contrast",
    "phase_shift",
)


def symmetry_problems(symbol: str, name: str = "symmetry", convention: str = "eman") -> list[str]:
    """A point-group symbol these protocols accept (cN, dN, tet, oct, icos), one line."""
    from emforge.numerics import parse_symmetry

    try:
        spec = parse_symmetry(symbol, convention=convention)
    except ValueError as exc:
        return [f"param '{name}': {str(exc).removeprefix('symmetry: ')}"]
    if spec.kind == "h":
        return [
            f"param '{name}': helical symmetry ({symbol!r}) is not supported here; give a point group"
        ]
    return []


def read_images(sources: list[str], indices: np.ndarray, box: tuple[int, int]) -> np.ndarray:
    """Images ``(sources[i], indices[i])`` as one float32 stack (k, ny, nx)."""
    from emforge.io import open_stack

    idx = np.asarray(indices, dtype=np.int64)
    out = np.empty((len(idx), *box), np.float32)
    srcs = np.asarray(sources, dtype=object)
    for path in dict.fromkeys(sources):
        sel = srcs == path
        reader = open_stack(path)
        try:
            out[sel] = reader[idx[sel]]
        finally:
            reader.close()
    return out


def set_box(particles: Any) -> tuple[int, int]:
    """(ny, nx) of a particle set's images: its ``box`` attribute or the first stack's header."""
    box = particles.attrs.get("box")
    if box:
        return tuple(int(b) for b in box)  # type: ignore[return-value]
    from emforge.io import read_info

    path = particles.read("image_path")["image_path"][0]
    return tuple(read_info(path).shape[1:])  # type: ignore[return-value]


def set_pixel_size(particles: Any) -> float:
    px = particles.attrs.get("pixel_size")
    return float(px or np.median(particles.read("pixel_size")["pixel_size"]))


def write_particles_stack(path: str, images_iter, shape: tuple[int, int, int], pixel_size: float):
    """Stream blocks ``(start, block)`` into one MRC stack (atomic)."""
    from emforge.io import StackWriter

    with StackWriter(path, shape, voxel_size=pixel_size) as writer:
        for start, block in images_iter:
            writer.write(start, block)


def montage(images: np.ndarray, count: int = 16) -> np.ndarray:
    """Up to ``count`` images side by side on a square grid (each normalised to zero mean,
    unit standard deviation), for a report panel."""
    k = min(count, len(images))
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    ny, nx = images.shape[1:]
    out = np.zeros((rows * ny, cols * nx), np.float32)
    for i in range(k):
        a = images[i] - images[i].mean()
        a = a / (a.std() + 1e-12)
        r, c = divmod(i, cols)
        out[r * ny : (r + 1) * ny, c * nx : (c + 1) * nx] = a
    return out


def montage_panel(images: np.ndarray, title: str):
    """Report panel: :func:`montage` of the first ``images`` (N, y, x), z-scored, in pixels."""
    from emforge.protocols.sharpen._report import Panel

    return Panel(
        "image", title, image=montage(images), label="z-score", xlabel="x (px)", ylabel="y (px)"
    )
