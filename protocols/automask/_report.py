"""The automask report: central slices of the map with the mask outlines, as a PNG.

Drawn with Pillow (no plotting library to import: a fresh process writes it in tens of
milliseconds). Slices are ``(row, column)`` views of a ``(z, y, x)`` volume.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["write_mask_report"]

RED = (230, 20, 20)
ORANGE = (255, 165, 0)
GAP = 8
LINE = 14  # px per text line


def _outline(inside: np.ndarray) -> np.ndarray:
    """The pixels of ``inside`` with a 4-neighbour outside it (one pixel wide)."""
    return inside & ~ndimage.binary_erosion(inside, border_value=1)


def _panel(img: np.ndarray, mask: np.ndarray, zoom: int) -> np.ndarray:
    """RGB uint8 panel: the slice in grey (its min..max), the 0.05 and 0.5 mask outlines."""
    lo, hi = float(img.min()), float(img.max())
    grey = np.zeros(img.shape, np.uint8)
    if hi > lo:
        grey = ((img - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    grey = np.repeat(np.repeat(grey, zoom, axis=0), zoom, axis=1)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    big = np.repeat(np.repeat(mask, zoom, axis=0), zoom, axis=1)
    for level, colour in ((0.05, ORANGE), (0.5, RED)):
        inside = big >= level
        if inside.any() and not inside.all():
            rgb[_outline(inside)] = colour
    return rgb


def _text_lines(title: str, width_px: int) -> list[str]:
    chars = max(40, width_px // 6)
    lines = []
    for line in title.splitlines():
        lines += textwrap.wrap(line, chars) or [""]
    lines.append("red: mask = 0.5, orange: soft edge = 0.05")
    return lines


def write_mask_report(path: Any, volume: np.ndarray, mask: np.ndarray, *, title: str) -> str:
    """Central z, y and x slices of the map with the mask's 0.5 (red) and 0.05 (orange)
    outlines, under ``title`` (several lines allowed). Panels are enlarged by an integer
    factor to at least 256 px. Returns the path written (PNG)."""
    from PIL import Image, ImageDraw, ImageFont

    cz, cy, cx = (s // 2 for s in volume.shape)
    views = [
        ("central z slice (x right, y down)", volume[cz], mask[cz]),
        ("central y slice (x right, z down)", volume[:, cy], mask[:, cy]),
        ("central x slice (y right, z down)", volume[:, :, cx], mask[:, :, cx]),
    ]
    zoom = max(1, math.ceil(256 / max(volume.shape)))
    panels = [_panel(np.asarray(v, np.float32), np.asarray(m), zoom) for _, v, m in views]
    width = sum(p.shape[1] for p in panels) + GAP * (len(panels) + 1)
    lines = _text_lines(title, width)
    top = GAP + LINE * (len(lines) + 1)
    height = top + max(p.shape[0] for p in panels) + GAP
    canvas = np.full((height, width, 3), 255, np.uint8)
    x = GAP
    heads = []
    for (name, _, _), p in zip(views, panels, strict=True):
        canvas[top : top + p.shape[0], x : x + p.shape[1]] = p
        heads.append((x, name))
        x += p.shape[1] + GAP
    image = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for i, line in enumerate(lines):
        draw.text(
            (GAP, GAP + LINE * i),
            line.encode("latin-1", "replace").decode("latin-1"),
            fill=(0, 0, 0),
            font=font,
        )
    for hx, name in heads:
        draw.text((hx, top - LINE), name, fill=(0, 0, 0), font=font)
    image.save(path, format="PNG", compress_level=1)
    return str(path)
