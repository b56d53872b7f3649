"""Geometric masks: argument resolution, radial profiles and plane-by-plane construction.

Private helper of :mod:`emforge.protocols.masks.kernels` (the public names are re-exported
there). Conventions:

* arrays are ``(y, x)`` or ``(z, y, x)``; the logical origin is the array index ``N // 2`` on
  every axis, for even and odd ``N``;
* a shift is given as users type it, ``(x, y)`` or ``(x, y, z)`` in pixels, and moves the
  mask centre to index ``N // 2 + shift`` on each axis;
* the logical coordinate of index ``i`` on an axis of length ``N`` is ``i - N // 2 - shift``.

A mask is built one ``z`` plane at a time, and on each plane only inside the rectangular window
that holds its support (everything outside the window is exactly zero). Radially symmetric
masks with whole-pixel shifts use a look-up table indexed by the integer ``r**2`` (exact to
float64 before the final rounding to float32) and compute each distinct ``|z|`` plane once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GEOMETRIES_2D",
    "GEOMETRIES_3D",
    "BINARY_GEOMETRIES",
    "MaskParams",
    "resolve_mask_params",
    "axis_coords",
    "radial_profile",
    "PlaneSource",
]

GEOMETRIES_2D = ("circular", "box", "crown", "gaussian", "raised_cosine", "raised_crown")
GEOMETRIES_3D = ("sphere", "box", "crown", "cylinder", "gaussian", "raised_cosine", "raised_crown")
BINARY_GEOMETRIES = frozenset({"circular", "sphere", "box", "crown", "cylinder"})


@dataclass(frozen=True)
class MaskParams:
    """A geometry with every ``-1`` default resolved; fields that do not apply are None.

    Lengths are in pixels. ``shift`` and ``box_size`` are in user order ``(x, y[, z])``;
    ``shape`` is the array shape ``(y, x)`` or ``(z, y, x)``.
    """

    geometry: str
    shape: tuple[int, ...]
    shift: tuple[float, ...]
    radius: float | None = None
    inner_radius: float | None = None
    outer_radius: float | None = None
    box_size: tuple[int, ...] | None = None
    height: float | None = None
    sigma: float | None = None
    border: float | None = None
    peak_one: bool = False

    @property
    def binary(self) -> bool:
        """True for the 0/1 geometries (circular, sphere, box, crown, cylinder)."""
        return self.geometry in BINARY_GEOMETRIES

    @property
    def support_radius(self) -> float:
        """Distance beyond which a radial mask is exactly 0 (inf for the gaussian)."""
        g = self.geometry
        if g in ("circular", "sphere", "cylinder"):
            return float(self.radius)
        if g in ("crown", "raised_cosine"):
            return float(self.outer_radius)
        if g == "raised_crown":
            return float(self.outer_radius + self.border)
        return math.inf


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shp = tuple(int(s) for s in shape)
        ok = len(shp) in (2, 3) and all(s >= 1 for s in shp) and shp == tuple(shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape: expected (y, x) or (z, y, x) positive integers, got {shape!r}")
    return shp


def _check_geometry(geometry: str, shape: tuple[int, ...]) -> None:
    allowed = GEOMETRIES_2D if len(shape) == 2 else GEOMETRIES_3D
    if geometry in allowed:
        return
    if geometry in GEOMETRIES_2D + GEOMETRIES_3D:
        kind = "2D" if geometry in GEOMETRIES_2D else "3D"
        raise ValueError(
            f"geometry: '{geometry}' is a {kind}-only geometry but the shape {shape} is "
            f"{len(shape)}D; use one of {', '.join(allowed)}"
        )
    raise ValueError(f"geometry: unknown '{geometry}'; use one of {', '.join(allowed)}")


def _number(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return v


#: the narrowest gaussian a pixel grid can hold (px); narrower ones overflow their peak
MIN_SIGMA = 0.1


def _positive_or_default(name: str, value: float, default: float) -> float:
    v = _number(name, value)
    if v == -1:
        return float(default)
    if v <= 0:
        raise ValueError(f"{name}: must be positive (or -1 for the default), got {value!r}")
    return v


def _within_box(name: str, value: float, shape: tuple[int, ...]) -> float:
    limit = 0.5 * math.sqrt(sum(n * n for n in shape))
    if value > limit:
        raise ValueError(
            f"{name}: {value:g} px is beyond the box (half diagonal {limit:.4g} px for "
            f"shape {shape})"
        )
    return value


def _check_shift(shift: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if shift is None:
        return (0.0,) * ndim
    try:
        values = tuple(_number("shift", s) for s in shift)
    except TypeError:
        raise ValueError(f"shift: expected a sequence (x, y[, z]), got {shift!r}") from None
    if len(values) != ndim:
        want = "(x, y)" if ndim == 2 else "(x, y, z)"
        raise ValueError(f"shift: expected {want} for a {ndim}D mask, got {shift!r}")
    return values


def _box_widths(box_size: int | Sequence[int], shape: tuple[int, ...]) -> tuple[int, ...]:
    sizes_xyz = shape[::-1]
    given = [box_size] * len(shape) if np.ndim(box_size) == 0 else list(box_size)
    if len(given) != len(shape):
        raise ValueError(f"box_size: expected one width or {len(shape)} (x, y[, z]) widths")
    widths = []
    for w, n in zip(given, sizes_xyz, strict=True):
        v = _number("box_size", w)
        if v == -1:
            v = float(n // 2)
        if v < 1 or not v.is_integer():
            raise ValueError(f"box_size: widths must be whole pixels >= 1 (or -1), got {w!r}")
        if v > n:
            raise ValueError(f"box_size: width {v:g} px is larger than the box ({n} px)")
        widths.append(int(v))
    return tuple(widths)


def resolve_mask_params(
    shape: Sequence[int],
    geometry: str,
    *,
    radius: float = -1,
    inner_radius: float = 0.0,
    outer_radius: float = -1,
    box_size: int | Sequence[int] = -1,
    height: float = -1,
    sigma: float = -1,
    border: float = 2.0,
    shift: Sequence[float] | None = None,
    peak_one: bool = False,
) -> MaskParams:
    """Check the arguments of a geometric mask and resolve the ``-1`` defaults.

    Defaults (``size = min(shape)``, i.e. the box size of a square/cubic box):
    ``radius`` and ``outer_radius`` -1 -> ``size / 2``; ``box_size`` -1 -> ``N // 2`` on each
    axis (a full width); ``height`` -1 -> ``nz``; ``sigma`` -1 -> ``size / 6``.
    ``inner_radius`` may be 0 for crown, raised_cosine and raised_crown.

    Raises
    ------
    ValueError
        Naming the argument: unknown geometry or a 2D/3D mismatch with ``shape``; a radius that
        is not positive or lies beyond the half diagonal of the box; ``inner_radius >=
        outer_radius``; ``sigma``/``border``/``height`` not positive; a box width that is not
        a whole number of pixels or is wider than the box; a height taller than ``nz``; a shift
        of the wrong length.
    """
    shp = _check_shape(shape)
    _check_geometry(geometry, shp)
    g = geometry
    size = min(shp)
    kw: dict = {}
    if g in ("circular", "sphere", "cylinder"):
        r = _positive_or_default("radius", radius, size / 2)
        kw["radius"] = _within_box("radius", r, shp)
    if g in ("crown", "raised_cosine", "raised_crown"):
        inner = _number("inner_radius", inner_radius)
        if inner < 0:
            raise ValueError(f"inner_radius: must be >= 0, got {inner_radius!r}")
        outer = _within_box(
            "outer_radius", _positive_or_default("outer_radius", outer_radius, size / 2), shp
        )
        if inner >= outer:
            raise ValueError(
                f"inner_radius: must be smaller than outer_radius ({outer:g} px), got {inner:g}"
            )
        kw.update(inner_radius=inner, outer_radius=outer)
    if g == "raised_crown":
        kw["border"] = _number("border", border)
        if kw["border"] <= 0:
            raise ValueError(f"border: must be positive for raised_crown, got {border!r}")
    if g == "box":
        kw["box_size"] = _box_widths(box_size, shp)
    if g == "cylinder":
        kw["height"] = _positive_or_default("height", height, shp[0])
        if kw["height"] > shp[0]:
            raise ValueError(f"height: {kw['height']:g} px is taller than the box ({shp[0]} px)")
    if g == "gaussian":
        kw["sigma"] = _positive_or_default("sigma", sigma, size / 6)
        if kw["sigma"] < MIN_SIGMA:  # narrower than the grid: its peak overflows
            raise ValueError(f"sigma: must be at least {MIN_SIGMA} px, got {sigma!r}")
    return MaskParams(g, shp, _check_shift(shift, len(shp)), peak_one=bool(peak_one), **kw)


def axis_coords(n: int, shift: float = 0.0, dtype: np.dtype = np.float64) -> np.ndarray:
    """Logical coordinates ``i - n // 2 - shift`` of the ``n`` indices of one axis (1-D)."""
    return (np.arange(n, dtype=np.float64) - (n // 2 + shift)).astype(dtype, copy=False)


def _raised_cosine(r: np.ndarray, r1: float, r2: float) -> np.ndarray:
    t = np.clip((r - r1) / (r2 - r1), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def radial_profile(p: MaskParams, r2: np.ndarray) -> np.ndarray:
    """Value of a radially symmetric mask at squared distances ``r2`` (float64 in and out).

    circular/sphere ``r2 <= R**2``; crown ``R1**2 <= r2 <= R2**2``; gaussian
    ``K exp(-r2 / 2 sigma**2)`` with ``K = (sqrt(2 pi) sigma)**-dim`` (1 with ``peak_one``);
    raised_cosine 1 for ``r <= R1``, ``(1 + cos(pi (r - R1) / (R2 - R1))) / 2`` between,
    0 for ``r >= R2``; raised_crown ``(1 - RC(r; R1 - w, R1 + w)) RC(r; R2 - w, R2 + w)``,
    where an inner radius of 0 means no hole (the first factor is 1).
    """
    g = p.geometry
    r2 = np.asarray(r2, dtype=np.float64)
    if g in ("circular", "sphere"):
        return (r2 <= p.radius**2).astype(np.float64)
    if g == "crown":
        return ((r2 >= p.inner_radius**2) & (r2 <= p.outer_radius**2)).astype(np.float64)
    if g == "gaussian":
        k = 1.0 if p.peak_one else (math.sqrt(2.0 * math.pi) * p.sigma) ** (-len(p.shape))
        return k * np.exp(r2 * (-0.5 / p.sigma**2))
    r = np.sqrt(r2)
    if g == "raised_cosine":
        return _raised_cosine(r, p.inner_radius, p.outer_radius)
    if g == "raised_crown":
        w = p.border
        value = _raised_cosine(r, p.outer_radius - w, p.outer_radius + w)
        if p.inner_radius > 0:
            value *= 1.0 - _raised_cosine(r, p.inner_radius - w, p.inner_radius + w)
        return value
    raise ValueError(f"geometry: '{g}' is not radially symmetric")


Window = tuple[int, int, int, int]
Group = tuple[list[int], np.ndarray | None, Window | None]


class PlaneSource:
    """The mask of ``p`` as groups of identical ``z`` planes (a 2D mask is one plane).

    :meth:`groups` yields ``(planes, block, window)``: for every z index in ``planes`` the
    mask equals the float32 ``block`` on ``window = (y0, y1, x0, x1)`` and 0 elsewhere;
    ``block is None`` means those planes are entirely 0.
    """

    def __init__(self, p: MaskParams) -> None:
        self.p = p
        nd = len(p.shape)
        self.shape3 = p.shape if nd == 3 else (1, *p.shape)
        nz, ny, nx = self.shape3
        self.cz = axis_coords(nz, p.shift[2]) if nd == 3 else np.zeros(1)
        self.cy = axis_coords(ny, p.shift[1])
        self.cx = axis_coords(nx, p.shift[0])
        self.integral = all(float(s).is_integer() for s in p.shift)

    def groups(self) -> Iterator[Group]:
        g = self.p.geometry
        if g == "box":
            return self._box_groups()
        if g == "cylinder":
            return self._cylinder_groups()
        return self._radial_groups()

    @staticmethod
    def _span(c: np.ndarray, lo: float, hi: float, right: str = "right") -> tuple[int, int]:
        return int(np.searchsorted(c, lo, "left")), int(np.searchsorted(c, hi, right))

    def _window(self, radius: float, z2: float) -> Window | None:
        if not math.isfinite(radius):
            return (0, self.shape3[1], 0, self.shape3[2])
        rem = radius * radius - z2
        if rem < 0:
            return None
        h = math.sqrt(rem) * (1 + 1e-12) + 1e-9
        y0, y1 = self._span(self.cy, -h, h)
        x0, x1 = self._span(self.cx, -h, h)
        return (y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None

    def _z_groups(self) -> dict[float, list[int]]:
        out: dict[float, list[int]] = {}
        for k, z in enumerate(self.cz):
            out.setdefault(float(z * z), []).append(k)
        return out

    def _radial_groups(self) -> Iterator[Group]:
        if self.integral:
            yield from self._radial_groups_integral()
            return
        p = self.p
        support = p.support_radius
        for z2, ks in self._z_groups().items():
            win = self._window(support, z2)
            if win is None:
                yield ks, None, None
                continue
            y0, y1, x0, x1 = win
            r2 = (self.cy[y0:y1, None] ** 2 + z2) + self.cx[None, x0:x1] ** 2
            yield ks, radial_profile(p, r2).astype(np.float32), win

    def _radial_groups_integral(self) -> Iterator[Group]:
        """Whole-pixel shift: ``r**2`` is an integer, so every row of the mask is a row of a
        table indexed by ``u = z**2 + y**2``; the few distinct ``u`` values are computed once
        (from a look-up table over integer ``r**2``) and each plane is a band of table rows."""
        p = self.p
        nx = self.shape3[2]
        z2 = np.rint(self.cz).astype(np.intp) ** 2
        y2 = np.rint(self.cy).astype(np.intp) ** 2
        x2 = np.rint(self.cx).astype(np.intp) ** 2
        u = z2[:, None] + y2[None, :]
        support = p.support_radius
        live = u <= support * support if math.isfinite(support) else np.ones(u.shape, bool)
        uniq, row = np.unique(u[live], return_inverse=True)
        lut = radial_profile(p, np.arange(int(uniq.max(initial=0)) + int(x2.max()) + 1))
        table = np.take(lut.astype(np.float32), uniq[:, None] + x2[None, :])
        rows = np.full(u.shape, -1, dtype=np.intp)
        rows[live] = row.ravel()
        for ks in self._z_groups().values():
            band = np.flatnonzero(live[ks[0]])
            if band.size == 0:
                yield ks, None, None
                continue
            y0, y1 = int(band[0]), int(band[-1]) + 1
            yield ks, table[rows[ks[0], y0:y1]], (y0, y1, 0, nx)

    def _box_groups(self) -> Iterator[Group]:
        widths = self.p.box_size  # (x, y[, z])
        spans = []
        for c, w in zip((self.cx, self.cy), widths[:2], strict=True):
            lo = -(w // 2) - 0.5
            spans.append(self._span(c, lo, lo + w, right="left"))
        (x0, x1), (y0, y1) = spans
        if len(widths) == 3:
            lo = -(widths[2] // 2) - 0.5
            z_in = (self.cz >= lo) & (self.cz < lo + widths[2])
        else:
            z_in = np.ones(1, dtype=bool)
        yield from self._split(z_in, np.ones((y1 - y0, x1 - x0), np.float32), (y0, y1, x0, x1))

    def _cylinder_groups(self) -> Iterator[Group]:
        p = self.p
        win = self._window(p.radius, 0.0)
        z_in = np.abs(self.cz) <= p.height / 2
        if win is None:
            yield list(range(self.shape3[0])), None, None
            return
        y0, y1, x0, x1 = win
        r2 = self.cy[y0:y1, None] ** 2 + self.cx[None, x0:x1] ** 2
        yield from self._split(z_in, (r2 <= p.radius**2).astype(np.float32), win)

    @staticmethod
    def _split(z_in: np.ndarray, block: np.ndarray, win: Window) -> Iterator[Group]:
        inside = [int(k) for k in np.flatnonzero(z_in)]
        outside = [int(k) for k in np.flatnonzero(~z_in)]
        empty = block.size == 0
        if inside:
            yield inside, (None if empty else block), (None if empty else win)
        if outside:
            yield outside, None, None
