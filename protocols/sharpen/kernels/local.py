"""Local sharpening: per-box sharpening parameters in overlapping soft-edged boxes, blended.

Conventions
-----------
* Maps are float32 ndarrays (z, y, x), cubic boxes of ``box`` voxels (even), pixel size in
  Angstrom. Box ``(i, j, k)`` starts at voxel ``start = step - box + (i, j, k) * step``
  (see :func:`box_starts`; the map is extended periodically beyond its edges, like the
  FFT-based global filters); its centre is ``start + box/2``. ``step`` divides ``box`` with
  ``box/step >= 2``.
* Windows are separable Hann windows ``sin^2(pi (t + 1/2) / box)``, ``t = 0 .. box-1``;
  with ``step = box/m`` the windows of all boxes sum to the constant ``(m/2)^3`` everywhere
  in the map, so windowing, filtering each box and summing blends the boxes without seams.
* Each windowed box is zero-padded by ``pad`` voxels per side before filtering, so the filter
  does not wrap around the box; filtered boxes are added back (padding included) and the sum
  is divided by the summed windows.
* Batched FFTs over the boxes go through :mod:`emforge.numerics.fft` (one (n, P, P, P)
  transform per chunk, ``EMFORGE_FFT_THREADS`` threads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from emforge.numerics import (
    amplitude_profile_rfft,
    default_nshells,
    fsc_crossing,
    fsc_rfft,
    guinier_fit,
    hermitian_weights,
    irfftn,
    raised_cosine,
    rfftn,
    shell_frequencies,
    shell_index_rfft,
    spatial_frequency_rfft,
)

from .bfactor import check_map, check_pixel_size, check_resolution, estimate_b_iso
from .halfmaps import fsc_weight

__all__ = ["LocalSharpenResult", "sharpen_local", "box_starts", "hann_window"]

_CHUNK_VOXELS = 8_000_000  # real voxels per batched FFT chunk (about 32 MB of float32)


# ------------------------------------------------------------------------ box machinery
def hann_window(box: int) -> np.ndarray:
    """Separable 3D Hann window (box, box, box) float32 (see the module notes)."""
    t = np.sin(np.pi * (np.arange(box) + 0.5) / box).astype(np.float32) ** 2
    return t[:, None, None] * t[None, :, None] * t[None, None, :]


def box_starts(n: int, box: int, step: int) -> np.ndarray:
    """Start voxels of the boxes along one axis of length ``n``: ``step - box, 2 step - box,
    ...`` up to ``n - 1``, so every voxel of the map lies in exactly ``box/step`` boxes
    (int64)."""
    return np.arange(step - box, n, step, dtype=np.int64)


def default_box(resolution: float, pixel_size: float, shape=None) -> int:
    """The automatic box: about 12 x resolution (voxels, even), clipped to 24..64, and to the
    largest even size that fits in a map of ``shape`` (a small map, e.g. a 20^3
    subtomogram average at 11.4 A/px, gets a box as large as the map: at least two boxes per
    axis still overlap, but the local B then varies over half the map only)."""
    box = int(np.clip(2 * round(6.0 * resolution / pixel_size), 24, 64))
    if shape is not None:
        box = min(box, 2 * (int(min(shape)) // 2))
    return box


def _check_box(shape, box, step, resolution, px):
    if box is None:
        box = default_box(resolution, px, shape)
    box, step = int(box), int(box // 2 if step is None else step)
    if box < 8 or box % 2:
        raise ValueError(f"box: must be an even number of voxels >= 8, got {box}")
    if step < 1 or box % step or box // step < 2:
        raise ValueError(f"step: must divide box ({box}) into 2 or more parts, got {step}")
    if box > min(shape):
        raise ValueError(f"box: {box} voxels is larger than the map {shape}")
    return box, step


class _Boxes:
    """Windowed, zero-padded boxes of a map, and the overlap-add that puts them back."""

    def __init__(self, shape, box, step, pad):
        self.shape, self.box, self.step, self.pad = tuple(shape), box, step, pad
        self.P = box + 2 * pad
        self.starts = [box_starts(n, box, step) for n in shape]
        self.grid_shape = tuple(len(s) for s in self.starts)
        zz, yy, xx = np.meshgrid(*self.starts, indexing="ij")
        self.corner = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
        self.window = hann_window(box)
        self.margin = box + pad  # periodic extension on every side
        self.norm = self._window_sum()

    def extend(self, a):
        """The map extended periodically by ``margin`` voxels on every side."""
        return np.pad(a, self.margin, mode="wrap")

    def chunks(self):
        """Slices of box indices such that one chunk's padded boxes fit _CHUNK_VOXELS."""
        per = max(1, _CHUNK_VOXELS // self.P**3)
        n = len(self.corner)
        return [slice(i, min(i + per, n)) for i in range(0, n, per)]

    def extract(self, ext, sl) -> np.ndarray:
        """Windowed, zero-padded boxes ``sl`` from an extended map: (n, P, P, P) float32."""
        b, p = self.box, self.pad
        cz, cy, cx = (self.corner[sl] + self.margin).T
        out = np.zeros((len(cz), self.P, self.P, self.P), np.float32)
        inner = out[:, p : p + b, p : p + b, p : p + b]
        inner[...] = sliding_window_view(ext, (b, b, b))[cz, cy, cx]
        inner *= self.window
        return out

    def add(self, acc, boxes, sl) -> None:
        """Add filtered padded boxes back into the extended accumulator ``acc``."""
        P, off = self.P, self.margin - self.pad
        for i, (z, y, x) in enumerate(self.corner[sl] + off):
            acc[z : z + P, y : y + P, x : x + P] += boxes[i]

    def crop(self, acc) -> np.ndarray:
        m = self.margin
        nz, ny, nx = self.shape
        return acc[m : m + nz, m : m + ny, m : m + nx] / self.norm

    def _window_sum(self) -> np.ndarray:
        acc = np.zeros(tuple(n + 2 * self.margin for n in self.shape), np.float32)
        b, m = self.box, self.margin
        for z, y, x in self.corner + m:
            acc[z : z + b, y : y + b, x : x + b] += self.window
        nz, ny, nx = self.shape
        return acc[m : m + nz, m : m + ny, m : m + nx]


def _rfft_boxes(x: np.ndarray) -> np.ndarray:
    return rfftn(x, axes=(1, 2, 3))


def _irfft_boxes(f: np.ndarray, P: int) -> np.ndarray:
    return irfftn(f, shape=(f.shape[0], P, P, P), axes=(1, 2, 3))


@lru_cache(maxsize=8)
def _shell_matrix(P: int) -> np.ndarray:
    """(P*P*(P//2+1), nshells) float32: Hermitian weight of each half-grid voxel of a P^3
    box in the column of its shell (voxels beyond the last shell in no column)."""
    shape = (P, P, P)
    sh = shell_index_rfft(shape).ravel()
    hw = np.broadcast_to(hermitian_weights(shape), shell_index_rfft(shape).shape).ravel()
    nsh = default_nshells(shape)
    M = np.zeros((sh.size, nsh), np.float32)
    ok = sh < nsh
    M[np.nonzero(ok)[0], sh[ok]] = hw[ok]
    M.setflags(write=False)
    return M


def _box_radial(values: np.ndarray) -> np.ndarray:
    """(n, nshells) Hermitian-weighted sums over shells of a stack of P^3 half-grids
    (n, P, P, P//2+1); one matrix product (float32 accumulation, float64 out)."""
    n, P = values.shape[0], values.shape[1]
    v = np.ascontiguousarray(values, dtype=np.float32).reshape(n, -1)
    return (v @ _shell_matrix(P)).astype(np.float64)


@lru_cache(maxsize=8)
def _shell_matrix2(P: int) -> np.ndarray:
    m = np.repeat(_shell_matrix(P), 2, axis=0)
    m.setflags(write=False)
    return m


def _box_cross(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """(n, nshells) shell sums of ``Re(fa conj(fb))`` for complex64 stacks of P^3
    half-grids (``fb is fa`` gives the power); uses the interleaved float32 view."""
    n, P = fa.shape[0], fa.shape[1]
    va = np.ascontiguousarray(fa, np.complex64).view(np.float32).reshape(n, -1)
    vb = va if fb is fa else np.ascontiguousarray(fb, np.complex64).view(np.float32)
    prod = va * va if fb is fa else va * vb.reshape(n, -1)
    return (prod @ _shell_matrix2(P)).astype(np.float64)


# ------------------------------------------------------------------------ per-box estimates
class _Spectra:
    """Shell bookkeeping of the padded box grid (P, P, P)."""

    def __init__(self, P, px):
        shape = (P, P, P)
        self.sh = shell_index_rfft(shape)
        self.n = default_nshells(shape)
        self.s = shell_frequencies(shape, pixel_size=px)
        k = np.minimum(spatial_frequency_rfft(shape, pixel_size=1.0) * P, self.n - 1.0)
        self.i0 = np.minimum(np.floor(k).astype(np.int32), self.n - 2)
        self.t = (k - self.i0).astype(np.float32)
        self.count = _box_radial(np.ones((1,) + self.sh.shape, np.float32))[0]

    def mean_cross(self, fa, fb) -> np.ndarray:
        """(n, nsh) mean of ``Re(fa conj(fb))`` per shell (``fb is fa``: mean power)."""
        out = np.zeros((fa.shape[0], self.n))
        np.divide(_box_cross(fa, fb), self.count, out=out, where=self.count > 0)
        return out

    def expand(self, curves) -> np.ndarray:
        """Per-box per-shell curves (n, nsh) -> filters on the half-grid (n, P, P, P//2+1),
        linearly interpolated in |s| between shell centres (constant beyond the last)."""
        c = np.asarray(curves, np.float32)
        i0, t = self.i0, self.t
        return c[:, i0] * (1.0 - t) + c[:, i0 + 1] * t


def _guinier_b(s, amp, d_max, d_min) -> np.ndarray:
    """Per-row Guinier B of ``ln amp = a - B s^2/4`` over ``d_max >= 1/s >= d_min``
    (vectorised over rows; NaN where fewer than 3 shells are usable). ``d_min`` may be
    a per-row array."""
    d_min = np.broadcast_to(np.asarray(d_min, np.float64), (amp.shape[0],))[:, None]
    sel = (s[None, :] >= 1.0 / d_max) & (s[None, :] <= 1.0 / d_min) & (amp > 0)
    x = np.where(sel, s[None, :] ** 2, 0.0)
    y = np.where(sel, np.log(np.where(amp > 0, amp, 1.0)), 0.0)
    n = sel.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = x.sum(1) / n, y.sum(1) / n
        sxx = (np.where(sel, x - mx[:, None], 0.0) ** 2).sum(1)
        sxy = (np.where(sel, (x - mx[:, None]) * (y - my[:, None]), 0.0)).sum(1)
        b = -4.0 * sxy / sxx
    b[(n < 3) | ~np.isfinite(b)] = np.nan
    return b


def _smooth_grid(values, weights, grid_shape, fallback) -> np.ndarray:
    """Weighted 3x3x3 neighbourhood mean of per-box values on the box grid; boxes without
    weight in their neighbourhood get ``fallback``."""
    v = np.where(np.isfinite(values), values, 0.0).reshape(grid_shape)
    w = np.where(np.isfinite(values), weights, 0.0).reshape(grid_shape)
    num = ndimage.uniform_filter(v * w, size=3, mode="nearest")
    den = ndimage.uniform_filter(w, size=3, mode="nearest")
    out = np.full(grid_shape, float(fallback))
    ok = den > 1e-12 * max(float(w.max()), 1e-300)
    out[ok] = num[ok] / den[ok]
    return out.ravel()


def _box_stats(boxes: _Boxes, spec: _Spectra, maps) -> list[np.ndarray]:
    """Per box (n, nsh): mean power of each map, then the cross-power of maps 0 and 1."""
    exts = [boxes.extend(m) for m in maps]
    out = [[] for _ in range(len(maps) + (len(maps) > 1))]
    for sl in boxes.chunks():
        fs = [_rfft_boxes(boxes.extract(e, sl)) for e in exts]
        for i, f in enumerate(fs):
            out[i].append(spec.mean_cross(f, f))
        if len(fs) > 1:
            out[-1].append(spec.mean_cross(fs[0], fs[1]))
    return [np.concatenate(o) for o in out]


# ------------------------------------------------------------------------ the kernel
@dataclass
class LocalSharpenResult:
    """Output of :func:`sharpen_local`.

    Attributes
    ----------
    map : float32 (z, y, x), the locally sharpened map
    method : "b_iso" or "halfmap"
    box, step, pad : int, voxels
    centres : tuple of three int64 arrays, the box centres (voxels) along z, y and x
    b_fit : float64 (Kz, Ky, Kx), Guinier B fitted in each box (Angstrom^2; NaN: no fit)
    b_local : float64 (Kz, Ky, Kx), B after clamping and smoothing over neighbouring boxes;
        box k is sharpened by ``exp(+(b_local - b_target) s^2 / 4)``
    b_global : float, Angstrom^2, the whole map's Guinier B over the same range (for
        ``method="halfmap"`` of the FSC-weighted amplitude of the halves' average)
    resolution_local : float64 (Kz, Ky, Kx) local FSC = 0.143 resolution (Angstrom) for
        ``method="halfmap"``, else None
    lowpass_width : float, relative width of the raised-cosine low-pass (fraction of 1/d)
    half1, half2 : float32 (z, y, x) or None, the half maps with the same per-box filters
        (when half maps were given)
    b_target : float, Angstrom^2, the B the boxes were sharpened to (applied global
        sharpening B = ``b_global - b_target``)
    """

    map: np.ndarray
    method: str
    box: int
    step: int
    pad: int
    centres: tuple
    b_fit: np.ndarray
    b_local: np.ndarray
    b_global: float
    resolution_local: np.ndarray | None = None
    lowpass_width: float = 0.2
    half1: np.ndarray | None = None
    half2: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    b_target: float = 0.0


def _apply_boxes(boxes: _Boxes, spec: _Spectra, a, curves) -> np.ndarray:
    ext = boxes.extend(a)
    acc = np.zeros(ext.shape, np.float32)
    for sl in boxes.chunks():
        f = _rfft_boxes(boxes.extract(ext, sl))
        f *= spec.expand(curves[sl])
        boxes.add(acc, _irfft_boxes(f, boxes.P).astype(np.float32, copy=False), sl)
    return boxes.crop(acc).astype(np.float32, copy=False)


def _weighted_median(x, w) -> float:
    ok = np.isfinite(x) & (w > 0)
    if not ok.any():
        return float("nan")
    order = np.argsort(x[ok])
    cw = np.cumsum(w[ok][order])
    return float(x[ok][order][np.searchsorted(cw, 0.5 * cw[-1])])


def _local_b(b_fit, energy, grid_shape, b_glob, b_spread):
    """Local B = the map's B + the box's departure from the typical box, clamped to
    +- b_spread and smoothed over neighbouring boxes weighted by their signal energy (boxes
    under 5% of the largest energy carry no weight). Fits in small windowed boxes are
    biased by the local molecular transform, so only their differences are used."""
    w = np.where(energy >= 0.05 * energy.max(), energy, 0.0)
    ref = _weighted_median(b_fit, w)
    if not np.isfinite(ref):
        return np.full(len(b_fit), float(b_glob))
    rel = np.clip(b_fit - ref, -b_spread, b_spread)
    return b_glob + _smooth_grid(rel, w, grid_shape, 0.0)


def _lowpass_curve(s, d) -> np.ndarray:
    d = np.asarray(d, np.float64).reshape(-1, 1)
    return raised_cosine(s[None, :] * d, 1.0, 0.2).astype(np.float64)


def _halfmap_params(boxes, spec, h1, h2, d_max, d_glob):
    """Pooled (3x3x3 boxes) local FSC, its weight, local resolution and signal energy."""
    p1, p2, c = _box_stats(boxes, spec, [h1, h2])
    g = boxes.grid_shape + (spec.n,)
    pool = [
        ndimage.uniform_filter(x.reshape(g), size=(3, 3, 3, 1), mode="nearest") for x in (p1, p2, c)
    ]
    p1s, p2s, cs = (x.reshape(-1, spec.n) for x in pool)
    den = np.sqrt(p1s * p2s)
    fsc_b = np.zeros_like(cs)
    np.divide(cs, den, out=fsc_b, where=den > 0)
    d_loc = np.array([fsc_crossing(spec.s, f) for f in fsc_b])
    d_loc = np.clip(np.where(np.isfinite(d_loc), d_loc, d_max), d_glob, d_max)
    w = fsc_weight(fsc_b)
    w[:, 0] = 1.0
    amp = np.sqrt(np.maximum((p1 + p2 + 2 * c) / 4.0, 0.0))
    sel = (spec.s >= 1.0 / d_max) & (spec.s <= 1.0 / d_glob)
    energy = np.maximum(c[:, sel], 0.0).sum(axis=1)
    return w, amp * w, d_loc, energy


def _check_map_res(map, pixel_size, resolution, d_max):
    a = check_map(map)
    if a.ndim != 3:
        raise ValueError(f"map: must be 3D (z, y, x), got shape {a.shape}")
    px = check_pixel_size(pixel_size)
    d = check_resolution(resolution, px, "resolution")
    if d_max is None:
        from .mapb import map_b_fit_range

        d_max = map_b_fit_range(a.shape, pixel_size=px, resolution=d)[0]
    if not d_max > d:
        raise ValueError(f"d_max: must be coarser than the resolution ({d} A), got {d_max}")
    return a, px, d, float(d_max)


def _b_iso_params(boxes, spec, a, d_max, d):
    """Per box: weight 1, rms amplitude per shell, resolution ``d`` and signal energy."""
    p = _box_stats(boxes, spec, [a])[0]
    sel = (spec.s >= 1.0 / d_max) & (spec.s <= 1.0 / d)
    return 1.0, np.sqrt(p), np.full(len(p), d), p[:, sel].sum(axis=1)


def _global_b_halfmap(h1, h2, px, d, d_max) -> float:
    """Guinier B of the FSC-weighted amplitude of the halves' average (RELION's B without
    a mask), ``d_max`` to the coarser of ``d`` and the FSC = 0.143 resolution."""
    f1, f2 = rfftn(h1), rfftn(h2)
    shape = h1.shape
    f = fsc_rfft(f1, f2, real_shape=shape)
    s, amp = amplitude_profile_rfft(0.5 * (f1 + f2), shape=shape, pixel_size=px, kind="rms")
    d_fit = max(d, fsc_crossing(s, f))
    w = fsc_weight(f)
    if not d_max > d_fit:
        return estimate_b_iso(0.5 * (h1 + h2), pixel_size=px, d_min=d, d_max=d_max)
    return guinier_fit(s, amp * w, d_min=d_fit, d_max=d_max)[0]


#: finer than this resolution (A) the default b_target is 0 (Wilson regime, see .mapb)
COARSE_D = 10.0


def _default_b_target(d_max: float, d: float) -> float:
    """0, or on a coarse map the reference protein spectrum's Guinier B over d_max ... d."""
    if d <= COARSE_D:
        return 0.0
    from .refspec import protein_ln_amplitude

    s = np.linspace(1.0 / d_max, 1.0 / d, 16)
    return float(-4.0 * np.polyfit(s * s, protein_ln_amplitude(s), 1)[0])


def _check_halves(method, half1, half2, shape):
    if method not in ("b_iso", "halfmap"):
        raise ValueError(f"method: must be 'b_iso' or 'halfmap', got {method!r}")
    if (half1 is None) != (half2 is None):
        raise ValueError("half1: give both half maps or neither")
    if half1 is None:
        if method == "halfmap":
            raise ValueError("half1: method 'halfmap' needs both half maps")
        return None, None
    h1, h2 = check_map(half1, "half1"), check_map(half2, "half2")
    for name, h in (("half1", h1), ("half2", h2)):
        if h.shape != shape:
            raise ValueError(f"{name}: shape {h.shape} differs from the map shape {shape}")
    return h1, h2


def sharpen_local(
    map,
    *,
    pixel_size: float,
    resolution: float,
    box: int | None = None,
    step: int | None = None,
    half1=None,
    half2=None,
    method: str = "b_iso",
    d_max: float | None = None,
    b_target: float | None = None,
    b_spread: float = 100.0,
    pad: int | None = None,
) -> LocalSharpenResult:
    """Local sharpening in overlapping Hann-windowed boxes, blended without seams.

    Per box (windowed, zero-padded by ``pad``, one batched FFT per chunk of boxes):

    * ``method="b_iso"``: Guinier B of the box's rms amplitude per shell, ``d_max`` to
      ``resolution``; filter ``exp(+(B - b_target) s^2/4)`` x a raised-cosine low-pass at
      ``resolution`` (edge from 0.9/d to 1.1/d).
    * ``method="halfmap"``: local FSC of the half maps (statistics pooled over the 3x3x3
      neighbouring boxes), weight ``sqrt(2 FSC/(1+FSC))``, local resolution at FSC 0.143
      (never finer than ``resolution``), Guinier B of the weighted amplitude of the average
      from ``d_max`` to the local resolution; filter ``weight x exp(+(B - b_target) s^2/4)``
      x the low-pass at the local resolution. It is applied to ``map`` (their average).

    Local B: the whole map's B (``estimate_b_iso`` over the same range; for "halfmap" the
    Guinier B of the FSC-weighted amplitude of the halves' average) plus the box's
    departure from the signal-weighted median box, clamped to +- ``b_spread`` and smoothed
    over the 3x3x3 neighbouring boxes weighted by the boxes' signal (windowed boxes give
    biased absolute B values, their differences are what is local). Filtered boxes are added
    back and divided by the summed windows (see the module notes).

    Parameters
    ----------
    map : ndarray float32 (z, y, x)
    pixel_size : float, Angstrom
    resolution : float, Angstrom (global resolution; finer than ``d_max``)
    box : int, even box size in voxels (default ``12 resolution / pixel_size``, 24..64, at most
        the map's smallest side; a note says when the map limited it)
    step : int, voxels between boxes, dividing ``box`` into >= 2 parts (default ``box/2``)
    half1, half2 : ndarray float32, needed for ``method="halfmap"``; with ``"b_iso"`` they are
        only filtered like the map (same per-box filters) and returned
    method : "b_iso" or "halfmap"
    d_max : float, Angstrom, low-resolution end of the B fits (default: the coarse end of
        the family's map-B fit range, :func:`.mapb.map_b_fit_range`: the larger of 10 A and
        2 x ``resolution``, at least 5 shells of the map)
    b_target : float, Angstrom^2, B the boxes are sharpened to (default 0; on a coarse map,
        ``resolution`` coarser than 10 A where there is no Wilson regime, the Guinier B of
        the reference protein spectrum over ``d_max`` ... ``resolution``, about 6 d^2: the
        fall-off of an unblurred protein, not 0, which would over-sharpen by thousands of A^2)
    b_spread : float, Angstrom^2, largest departure of a box's B from the map's B (100)
    pad : int, zero padding per side of each box (default ``max(4, box // 5)``)

    Returns
    -------
    LocalSharpenResult
    """
    a, px, d, d_max = _check_map_res(map, pixel_size, resolution, d_max)
    h1, h2 = _check_halves(method, half1, half2, a.shape)
    auto_box = box is None
    box, step = _check_box(a.shape, box, step, d, px)
    pad = max(4, box // 5) if pad is None else int(pad)
    boxes = _Boxes(a.shape, box, step, pad)
    spec = _Spectra(boxes.P, px)
    if method == "b_iso":
        b_glob = estimate_b_iso(a, pixel_size=px, d_min=d, d_max=d_max)
        weight, amp, d_loc, energy = _b_iso_params(boxes, spec, a, d_max, d)
    else:
        b_glob = _global_b_halfmap(h1, h2, px, d, d_max)
        weight, amp, d_loc, energy = _halfmap_params(boxes, spec, h1, h2, d_max, d)
    if b_target is None:
        b_target = _default_b_target(d_max, d)
    b_fit = _guinier_b(spec.s, amp, d_max, d_loc)
    b_loc = _local_b(b_fit, energy, boxes.grid_shape, b_glob, float(b_spread))
    curves = weight * np.exp((b_loc - b_target)[:, None] * spec.s[None, :] ** 2 / 4.0)
    curves = curves * _lowpass_curve(spec.s, d_loc)
    out = _apply_boxes(boxes, spec, a, curves)
    halves = (
        None
        if h1 is None
        else (_apply_boxes(boxes, spec, h1, curves), _apply_boxes(boxes, spec, h2, curves))
    )
    g = boxes.grid_shape
    res_grid = d_loc.reshape(g) if method == "halfmap" else None
    centres = tuple(st + box // 2 for st in boxes.starts)
    notes = []
    if auto_box and box < default_box(d, px):
        notes.append(
            f"automatic box {box} px limited by the map's size {a.shape} (would be "
            f"{default_box(d, px)} px at {d:g} A): the local B varies over half the map at most"
        )
    return LocalSharpenResult(
        out,
        method,
        box,
        step,
        pad,
        centres,
        b_fit.reshape(g),
        b_loc.reshape(g),
        float(b_glob),
        res_grid,
        half1=None if halves is None else halves[0],
        half2=None if halves is None else halves[1],
        notes=notes,
        b_target=float(b_target),
    )
