"""Fourier-space tools shared by sharpening, refinement and subtomogram averaging.

Conventions (all functions)
---------------------------
* Real arrays are (z, y, x) maps or (y, x) images, float32 unless stated; Fourier arrays are the
  rfft half-grid of :func:`emforge.numerics.fft.rfftn`, shape (nz, ny, nx//2+1) or (ny, nx//2+1),
  complex64, unshifted (DC at index 0).
* Spatial frequency ``s`` is in 1/Angstrom, ``|s| = sqrt(sz^2 + sy^2 + sx^2)`` with each
  component from that axis's own length (``fftfreq(n, pixel_size)``); resolution ``d = 1/s``
  in Angstrom. Pixels are isotropic (one ``pixel_size`` in Angstrom).
* Shells: shell ``k`` holds the voxels with ``round(|s| * n_min * pixel_size) == k`` where
  ``n_min`` is the smallest box dimension. For a cubic box N this is ``round(|k_vec|)`` in
  Fourier pixels; for a non-cubic box the shell width is the Fourier spacing of the smallest
  dimension and the last full shell (``n_min // 2``) is that dimension's Nyquist. Shell ``k``
  is at ``s_k = k / (n_min * pixel_size)``; the default number of shells is ``n_min//2 + 1``
  (voxels in the corners beyond it are left out of radial statistics).
* Radial sums use exact Hermitian weights: on the half axis, the x = 0 plane (and the x = n/2
  Nyquist plane when n is even) is its own mirror and counts once, every other plane counts
  twice, so that sums equal sums over the full (non-half) Fourier grid.
* B factors: a B of ``b`` multiplies Fourier coefficients by ``exp(-b s^2 / 4)``; positive B
  blurs, negative B sharpens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import fft as _fft

__all__ = [
    "spatial_frequency_rfft",
    "shell_index_rfft",
    "shell_frequencies",
    "default_nshells",
    "hermitian_weights",
    "radial_sum",
    "radial_average",
    "fsc",
    "fsc_rfft",
    "fsc_crossing",
    "phase_randomize",
    "MaskedFSC",
    "masked_fsc_corrected",
    "bfactor_filter",
    "raised_cosine",
    "lowpass",
    "radial_filter_grid",
    "apply_radial_filter",
    "amplitude_profile",
    "amplitude_profile_rfft",
    "guinier_fit",
]


# --------------------------------------------------------------------------- grids
def _shape(shape) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 2:
        raise ValueError(f"shape: {shape} is not a 2D or 3D box with every side >= 2")
    return shape


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@lru_cache(maxsize=16)
def _components(shape: tuple[int, ...], pixel_size: float) -> tuple[np.ndarray, ...]:
    nd = len(shape)
    comps = []
    for i, n in enumerate(shape):
        f = np.fft.rfftfreq(n, d=pixel_size) if i == nd - 1 else np.fft.fftfreq(n, d=pixel_size)
        view = [1] * nd
        view[i] = f.size
        comps.append(_readonly(f.astype(np.float32).reshape(view)))
    return tuple(comps)


@lru_cache(maxsize=8)
def _s_grid(shape: tuple[int, ...], pixel_size: float) -> np.ndarray:
    comps = _components(shape, pixel_size)
    s2 = np.zeros(_fft.rfft_shape(shape), np.float32)
    for c in comps:
        s2 += c * c
    return _readonly(np.sqrt(s2))


def spatial_frequency_rfft(shape, *, pixel_size: float, components: bool = False):
    """Spatial frequency of every voxel of the rfft half-grid of a real box.

    Parameters
    ----------
    shape : tuple of int
        Real-space shape (z, y, x) or (y, x).
    pixel_size : float
        Angstrom per pixel.
    components : bool
        Also return the per-axis components.

    Returns
    -------
    s : ndarray, float32, shape ``rfft_shape(shape)``, read-only (cached)
        ``|s|`` in 1/Angstrom.
    (sz, sy, sx) : tuple of float32 arrays, broadcastable to ``s`` (only if ``components``)
        Signed components in 1/Angstrom ((sy, sx) for 2D).
    """
    shape = _shape(shape)
    if not pixel_size > 0:
        raise ValueError(f"pixel_size: must be > 0, got {pixel_size}")
    s = _s_grid(shape, float(pixel_size))
    if components:
        return s, _components(shape, float(pixel_size))
    return s


@lru_cache(maxsize=8)
def _shells(shape: tuple[int, ...]) -> np.ndarray:
    nmin = min(shape)
    f = spatial_frequency_rfft(shape, pixel_size=1.0)  # cycles / pixel
    return _readonly(np.rint(f * nmin).astype(np.int32))


def shell_index_rfft(shape) -> np.ndarray:
    """Integer shell of every rfft voxel (see the module notes), int32, read-only (cached)."""
    return _shells(_shape(shape))


def default_nshells(shape) -> int:
    """Number of shells up to the Nyquist of the smallest dimension: ``min(shape)//2 + 1``."""
    return min(_shape(shape)) // 2 + 1


def shell_frequencies(shape, *, pixel_size: float, nshells: int | None = None) -> np.ndarray:
    """Spatial frequency of each shell centre, ``k / (min(shape) * pixel_size)``, float64."""
    shape = _shape(shape)
    n = default_nshells(shape) if nshells is None else int(nshells)
    return np.arange(n, dtype=np.float64) / (min(shape) * float(pixel_size))


def hermitian_weights(shape) -> np.ndarray:
    """Hermitian multiplicity of the rfft half-grid planes of a real array of ``shape``.

    Returns a float32 array broadcastable to the half-grid, shape (1, .., nx//2+1): 1 for the
    x = 0 plane and (for even nx) the x = nx/2 plane, 2 for every other plane.
    """
    shape = tuple(int(n) for n in shape)
    nx = shape[-1]
    w = np.full(nx // 2 + 1, 2.0, np.float32)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    return w.reshape((1,) * (len(shape) - 1) + (-1,))


def _real_shape(half_shape, real_shape):
    if real_shape is not None:
        return tuple(int(n) for n in real_shape)
    return tuple(half_shape[:-1]) + (2 * (half_shape[-1] - 1),)


def radial_sum(values, shells, nshells: int, weights=None, *, real_shape=None) -> np.ndarray:
    """Hermitian-weighted sum of half-grid ``values`` per shell (float64, or complex128).

    Parameters
    ----------
    values : ndarray, half-grid shape, real or complex
    shells : ndarray of int, same shape (from :func:`shell_index_rfft`)
    nshells : int
        Shells ``0 .. nshells-1`` are returned; voxels in higher shells are left out.
    weights : ndarray, optional
        Extra weights broadcastable to ``values`` (multiplied with the Hermitian weights).
    real_shape : tuple, optional
        Real-space shape; needed only when the last real dimension is odd (default: even).
    """
    values = np.asarray(values)
    rshape = _real_shape(values.shape, real_shape)
    w = hermitian_weights(rshape)
    if weights is not None:
        w = w * np.asarray(weights, dtype=np.float32)
    idx = np.minimum(np.asarray(shells), nshells).ravel()
    n = int(nshells) + 1
    if np.iscomplexobj(values):
        re = np.bincount(
            idx, weights=np.broadcast_to(values.real * w, values.shape).ravel(), minlength=n
        )
        im = np.bincount(
            idx, weights=np.broadcast_to(values.imag * w, values.shape).ravel(), minlength=n
        )
        return (re + 1j * im)[:nshells]
    vw = np.broadcast_to(values * w, values.shape).ravel()
    return np.bincount(idx, weights=vw, minlength=n)[:nshells]


def radial_average(values, shells, nshells: int, weights=None, *, real_shape=None):
    """Hermitian-weighted mean of half-grid ``values`` per shell (float64; 0 in empty shells).

    Same arguments as :func:`radial_sum`. With ``weights`` the mean is
    ``sum(h w v) / sum(h w)`` where ``h`` are the Hermitian weights.
    """
    values = np.asarray(values)
    num = radial_sum(values, shells, nshells, weights, real_shape=real_shape)
    ones = (
        np.ones(values.shape, np.float32)
        if weights is None
        else np.broadcast_to(np.asarray(weights, np.float32), values.shape)
    )
    den = radial_sum(ones, shells, nshells, real_shape=real_shape)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


# --------------------------------------------------------------------------- FSC
def _check_pair(map1, map2):
    a = np.asarray(map1, dtype=np.float32)
    b = np.asarray(map2, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"map2: shape {b.shape} differs from map1 shape {a.shape}")
    _shape(a.shape)
    return a, b


def _masked(a, mask):
    if mask is None:
        return a
    m = np.asarray(mask, dtype=np.float32)
    if m.shape != a.shape:
        raise ValueError(f"mask: shape {m.shape} differs from map shape {a.shape}")
    return a * m


def fsc_rfft(f1, f2, *, real_shape, nshells: int | None = None) -> np.ndarray:
    """FSC per shell between two half-grid transforms of real arrays of ``real_shape``.

    Returns float64, length ``nshells`` (default ``min(shape)//2+1``); 0 where a shell is empty
    or a map has no power in it.
    """
    real_shape = _shape(real_shape)
    n = default_nshells(real_shape) if nshells is None else int(nshells)
    sh = shell_index_rfft(real_shape)
    num = radial_sum((f1 * np.conj(f2)).real, sh, n, real_shape=real_shape)
    d1 = radial_sum(f1.real**2 + f1.imag**2, sh, n, real_shape=real_shape)
    d2 = radial_sum(f2.real**2 + f2.imag**2, sh, n, real_shape=real_shape)
    den = np.sqrt(d1 * d2)
    out = np.zeros(n)
    np.divide(num, den, out=out, where=den > 0)
    return out


def fsc(map1, map2, *, pixel_size: float, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Fourier shell correlation of two maps (both multiplied by ``mask`` when given).

    Parameters
    ----------
    map1, map2 : ndarray (z, y, x) or (y, x), same shape, real (used as float32)
    pixel_size : float, Angstrom
    mask : ndarray, optional, same shape, values in [0, 1]

    Returns
    -------
    s : float64 (nshells,), 1/Angstrom (shell centres, :func:`shell_frequencies`)
    fsc : float64 (nshells,)
    """
    a, b = _check_pair(map1, map2)
    a, b = _masked(a, mask), _masked(b, mask)
    f = fsc_rfft(_fft.rfftn(a), _fft.rfftn(b), real_shape=a.shape)
    return shell_frequencies(a.shape, pixel_size=pixel_size), f


def fsc_crossing(s, fsc_values, threshold: float = 0.143) -> float:
    """Resolution (Angstrom) where an FSC curve first falls below ``threshold``.

    The search starts at the first shell after DC whose FSC is at or above the threshold (so a
    dip in the lowest shells is skipped); the crossing is then the first shell below the
    threshold, placed by linear interpolation in ``s`` between it and the shell before.
    Returns ``1/s[-1]`` (Nyquist for the default shells) when the curve never falls below the
    threshold, and ``inf`` when it never reaches it.
    """
    s = np.asarray(s, dtype=np.float64)
    f = np.asarray(fsc_values, dtype=np.float64)
    if s.shape != f.shape or s.ndim != 1 or s.size < 2:
        raise ValueError("fsc_values: must be 1D and the same length as s (>= 2 shells)")
    above = np.nonzero(f[1:] >= threshold)[0]
    if above.size == 0:
        return float("inf")
    start = above[0] + 1
    below = np.nonzero(f[start:] < threshold)[0]
    if below.size == 0:
        return float(1.0 / s[-1])
    i = start + below[0]
    t = (f[i - 1] - threshold) / (f[i - 1] - f[i])
    sc = s[i - 1] + t * (s[i] - s[i - 1])
    return float(1.0 / sc)


def _randomize_beyond(F, select, rng, real_shape):
    """Keep amplitudes, replace phases where ``select`` by those of real white noise."""
    noise = rng.standard_normal(real_shape, dtype=np.float32)
    N = _fft.rfftn(noise)
    ph = N / np.maximum(np.abs(N), np.float32(1e-30))
    out = F.copy()
    out[select] = np.abs(F[select]) * ph[select]
    return out


def phase_randomize(map, *, from_resolution: float, pixel_size: float, rng=None) -> np.ndarray:
    """Randomise Fourier phases at resolutions finer than ``from_resolution`` (Angstrom).

    Amplitudes are kept; the new phases are those of a real white-noise field, so the result
    is exactly Hermitian (a real map). Returns float32, same shape. ``rng`` is a
    ``numpy.random.Generator`` (default: a fresh unseeded one).
    """
    a = np.asarray(map, dtype=np.float32)
    _shape(a.shape)
    rng = np.random.default_rng() if rng is None else rng
    s = spatial_frequency_rfft(a.shape, pixel_size=pixel_size)
    F = _randomize_beyond(_fft.rfftn(a), s > 1.0 / from_resolution, rng, a.shape)
    return _fft.irfftn(F, shape=a.shape)


@dataclass
class MaskedFSC:
    """Result of :func:`masked_fsc_corrected`; curves are float64 over the default shells.

    ``randomize_shell`` is the last shell kept intact (phases randomised in higher shells);
    ``randomize_resolution`` its resolution in Angstrom (``inf`` if nothing was randomised).
    """

    s: np.ndarray
    fsc_unmasked: np.ndarray
    fsc_masked: np.ndarray
    fsc_random: np.ndarray
    fsc_corrected: np.ndarray
    resolution: float
    randomize_shell: int
    randomize_resolution: float
    threshold: float


def masked_fsc_corrected(
    half1,
    half2,
    mask,
    *,
    pixel_size: float,
    rng=None,
    threshold: float = 0.143,
    randomize_below: float = 0.8,
    ft1=None,
    ft2=None,
) -> MaskedFSC:
    """Masked FSC corrected for mask-induced correlation by phase randomisation (RELION).

    1. FSC of the unmasked halves; ``k`` = the shell before the first shell (after DC) where it
       drops below ``randomize_below`` (0.8).
    2. Phases of both halves are randomised (independently) in shells ``> k``, the randomised
       halves are masked and their FSC is ``fsc_random``.
    3. ``fsc_corrected = fsc_masked`` for shells ``<= k`` and
       ``(fsc_masked - fsc_random) / (1 - fsc_random)`` beyond.
    4. ``resolution`` = :func:`fsc_crossing` of the corrected curve at ``threshold``.

    Parameters
    ----------
    half1, half2 : ndarray (z, y, x), same shape, real
    mask : ndarray, same shape, soft mask in [0, 1] (``None``: no masking, no correction)
    pixel_size : float, Angstrom
    rng : numpy.random.Generator, optional (seed it for reproducible curves)
    ft1, ft2 : ndarray, optional
        :func:`rfftn` of ``half1`` / ``half2`` when the caller already has them (saves 2 FFTs).
    """
    a, b = _check_pair(half1, half2)
    rng = np.random.default_rng() if rng is None else rng
    shape = a.shape
    n = default_nshells(shape)
    s = shell_frequencies(shape, pixel_size=pixel_size)
    Fa = _fft.rfftn(a) if ft1 is None else ft1
    Fb = _fft.rfftn(b) if ft2 is None else ft2
    f_un = fsc_rfft(Fa, Fb, real_shape=shape)
    if mask is None:
        zeros = np.zeros(n)
        res = fsc_crossing(s, f_un, threshold)
        return MaskedFSC(
            s, f_un, f_un.copy(), zeros, f_un.copy(), res, n - 1, float("inf"), threshold
        )
    f_m = fsc_rfft(_fft.rfftn(_masked(a, mask)), _fft.rfftn(_masked(b, mask)), real_shape=shape)
    low = np.nonzero(f_un[1:] < randomize_below)[0]
    k = int(low[0]) if low.size else n - 1  # shell index (low[0] + 1) - 1
    f_r = np.zeros(n)
    f_c = f_m.copy()
    if k < n - 1:
        sel = shell_index_rfft(shape) > k
        ra = _fft.irfftn(_randomize_beyond(Fa, sel, rng, shape), shape=shape)
        rb = _fft.irfftn(_randomize_beyond(Fb, sel, rng, shape), shape=shape)
        f_r = fsc_rfft(
            _fft.rfftn(_masked(ra, mask)), _fft.rfftn(_masked(rb, mask)), real_shape=shape
        )
        hi = np.arange(n) > k
        ok = hi & (f_r < 1.0)
        f_c[ok] = (f_m[ok] - f_r[ok]) / (1.0 - f_r[ok])
    res = fsc_crossing(s, f_c, threshold)
    rres = float(1.0 / s[k]) if 0 < k < n - 1 else float("inf")
    return MaskedFSC(s, f_un, f_m, f_r, f_c, res, k, rres, threshold)


# --------------------------------------------------------------------------- filters
def _map(a):
    a = np.asarray(a, dtype=np.float32)
    _shape(a.shape)
    return a


def bfactor_filter(map, b: float, *, pixel_size: float) -> np.ndarray:
    """Apply ``exp(-b s^2 / 4)`` to a map: positive ``b`` blurs, ``bfactor_filter(m, -B)``
    sharpens by B. Returns float32, same shape; one forward and one inverse FFT."""
    a = _map(map)
    s = spatial_frequency_rfft(a.shape, pixel_size=pixel_size)
    filt = np.exp(np.float32(-b / 4.0) * s * s)
    return _fft.irfftn(_fft.rfftn(a) * filt, shape=a.shape)


def raised_cosine(s, s_cut: float, width: float) -> np.ndarray:
    """Low-pass profile: 1 below ``s_cut - width/2``, 0 above ``s_cut + width/2``, and a
    half cosine between (value 0.5 at ``s_cut``). ``s``, ``s_cut``, ``width`` in 1/Angstrom."""
    s = np.asarray(s)
    if width <= 0:
        return (s <= s_cut).astype(np.float32)
    x = np.clip((s - (s_cut - width / 2.0)) / width, 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * x))).astype(np.float32)


def lowpass(map, resolution: float, *, pixel_size: float, width: float = 2.0) -> np.ndarray:
    """Low-pass a map at ``resolution`` (Angstrom) with a raised-cosine edge.

    ``width`` is the full width of the edge in Fourier shells (units of
    ``1/(min(shape) * pixel_size)``), centred on ``1/resolution``. Returns float32.
    """
    a = _map(map)
    if not resolution > 0:
        raise ValueError(f"resolution: must be > 0, got {resolution}")
    w = float(width) / (min(a.shape) * pixel_size)
    return apply_radial_filter(
        a, lambda s: raised_cosine(s, 1.0 / resolution, w), pixel_size=pixel_size
    )


def radial_filter_grid(shape, filt, *, pixel_size: float | None = None) -> np.ndarray:
    """Evaluate a radial filter on the rfft half-grid of ``shape`` (float32).

    ``filt`` is either a callable of ``s`` (float32 array, 1/Angstrom; needs ``pixel_size``)
    returning values of the same shape, or a 1D array of per-shell values (index = shell
    from :func:`shell_index_rfft`; voxels in shells beyond its end get its last value).
    """
    shape = _shape(shape)
    if callable(filt):
        if pixel_size is None:
            raise ValueError("pixel_size: needed when the filter is a function of s")
        s = spatial_frequency_rfft(shape, pixel_size=pixel_size)
        return np.asarray(filt(s), dtype=np.float32)
    vals = np.asarray(filt, dtype=np.float32).ravel()
    if vals.size == 0:
        raise ValueError("filt: per-shell filter is empty")
    sh = shell_index_rfft(shape)
    return vals[np.minimum(sh, vals.size - 1)]


def apply_radial_filter(map, filt: Callable | np.ndarray, *, pixel_size: float | None = None):
    """Multiply a map's transform by a radial filter (see :func:`radial_filter_grid`).

    Returns float32, same shape; one forward and one inverse FFT.
    """
    a = _map(map)
    g = radial_filter_grid(a.shape, filt, pixel_size=pixel_size)
    return _fft.irfftn(_fft.rfftn(a) * g, shape=a.shape)


# --------------------------------------------------------------------------- amplitudes
def amplitude_profile_rfft(F, *, shape, pixel_size: float, kind: str = "mean"):
    """Radial amplitude profile from a half-grid transform of a real array of ``shape``.

    ``kind="mean"``: mean ``|F|`` per shell; ``kind="rms"``: ``sqrt(mean |F|^2)``.
    Returns ``(s, amplitude)``, float64, default shells.
    """
    shape = _shape(shape)
    n = default_nshells(shape)
    sh = shell_index_rfft(shape)
    if kind == "mean":
        amp = radial_average(np.abs(F), sh, n, real_shape=shape)
    elif kind == "rms":
        amp = np.sqrt(radial_average(F.real**2 + F.imag**2, sh, n, real_shape=shape))
    else:
        raise ValueError(f"kind: {kind!r} is not 'mean' or 'rms'")
    return shell_frequencies(shape, pixel_size=pixel_size), amp


def amplitude_profile(map, *, pixel_size: float, kind: str = "mean"):
    """Radial amplitude profile of a map: ``(s, mean |F| per shell)`` (see
    :func:`amplitude_profile_rfft`; |F| unnormalised as from :func:`rfftn`)."""
    a = _map(map)
    return amplitude_profile_rfft(_fft.rfftn(a), shape=a.shape, pixel_size=pixel_size, kind=kind)


def guinier_fit(s, amplitudes, *, d_min: float, d_max: float) -> tuple[float, float]:
    """Fit ``ln|F| = a - B s^2 / 4`` over ``d_max >= 1/s >= d_min`` (Angstrom).

    Shells with non-positive or non-finite amplitude are skipped. Returns ``(B, a)``: B in
    Angstrom^2, positive for a map whose amplitudes fall off (blurred), negative for one that
    rises (over-sharpened). Raises ValueError with fewer than 2 usable shells.
    """
    s = np.asarray(s, dtype=np.float64)
    amp = np.asarray(amplitudes, dtype=np.float64)
    if s.shape != amp.shape:
        raise ValueError("amplitudes: must have the same length as s")
    if not (d_max > d_min > 0):
        raise ValueError(f"d_min: need d_max > d_min > 0, got d_min={d_min}, d_max={d_max}")
    sel = (s >= 1.0 / d_max) & (s <= 1.0 / d_min) & np.isfinite(amp) & (amp > 0)
    if np.count_nonzero(sel) < 2:
        raise ValueError(f"d_min: fewer than 2 shells between {d_max} and {d_min} A to fit")
    x = s[sel] ** 2
    y = np.log(amp[sel])
    slope, intercept = np.polyfit(x, y, 1)
    return float(-4.0 * slope), float(intercept)
