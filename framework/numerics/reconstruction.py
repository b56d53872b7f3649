"""Fourier reconstruction of a 3D map from 2D images with known poses (direct Fourier
inversion with compiled insertion).

Conventions
-----------
Images ``(N, n, n)`` float32, rotations ``(N, 3, 3)`` (matrices A, docs/conventions.md),
shifts ``(N, 2)`` (shift_x, shift_y) in Angstrom, CTFs on the images' rfft half-grid
``(N or 1, n, n//2+1)`` (DC at [0, 0]) — exactly as :mod:`.projection`: reconstructing the
projections of a map with their poses gives back the map. Each image spectrum is inserted as a
central slice into a padded ``M = round(pad * n)`` Fourier grid (trilinear weights, or EMAN2's
Gaussian kernel), accumulating

    data = sum_i w_i * CTF_i * F_i,   weight = sum_i w_i * CTF_i^2

per half (subset 1 or 2), and finished as ``data / (weight + wiener_constant)`` (a Wiener
filter; with ``ctf=None`` and constant 0, a plain weighted average), with a floor of
``1e-3 x`` the shell's mean weight against empty voxels. The result is inverse-transformed,
cropped to n and divided by the trilinear gridding function (sinc^2 per axis, trilinear only).

Symmetry: pass the point-group matrices S (``(S, 3, 3)``, map frame, V(S r) = V(r)); each
image is inserted once per matrix with the pose ``A @ S.T``.

Data-parallel use: :func:`insert_images` on chunks of particles returns
:class:`FourierAccumulator` objects that add (``acc1 + acc2``) and are finished once with
:func:`finish_reconstruction`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import fft as _fft
from .fourier import fsc as _fsc
from .projection import (
    _ctf_array,
    _rotations,
    gridding_function,
    padded_size,
    phase_ramps,
)

__all__ = [
    "FourierAccumulator",
    "Reconstruction",
    "insert_images",
    "finish_reconstruction",
    "reconstruct_fourier",
    "fsc_wiener_constant",
]

_KERNELS = ("trilinear", "gauss")
#: extra memory (bytes) the inserter may take for private per-thread grids; above it, the
#: threads share one grid by z planes (each walks every pixel: slower, no extra memory)
SPLIT_GRID_BYTES = 512 * 2**20


@dataclass(frozen=True)
class FourierAccumulator:
    """Sums of one or more insertion passes, per half, on the padded grid of an n-box:
    ``grid`` float32 (2, M, M, M//2+1, 3) holds the real and imaginary parts of the data and
    the weight side by side; ``count`` images per half."""

    grid: np.ndarray
    box: int
    padded_box: int
    kernel: str
    count: tuple[int, int]

    def __add__(self, other: FourierAccumulator) -> FourierAccumulator:
        if not isinstance(other, FourierAccumulator):
            return NotImplemented
        if (self.box, self.padded_box, self.kernel) != (other.box, other.padded_box, other.kernel):
            raise ValueError("other: accumulators of different box, padding or kernel")
        cnt = (self.count[0] + other.count[0], self.count[1] + other.count[1])
        return FourierAccumulator(
            self.grid + other.grid, self.box, self.padded_box, self.kernel, cnt
        )

    @property
    def data(self) -> np.ndarray:
        """Sum of weighted image spectra, complex64 (2, M, M, M//2+1) (a view of ``grid``)."""
        return self.grid[..., :2].view(np.complex64)[..., 0]

    @property
    def weight(self) -> np.ndarray:
        """Sum of weights, float32 (2, M, M, M//2+1) (a view of ``grid``)."""
        return self.grid[..., 2]


@dataclass(frozen=True)
class Reconstruction:
    """A reconstruction and its two independent halves.

    Attributes
    ----------
    volume : float32 (n, n, n), from all images
    half1, half2 : float32 (n, n, n), from subsets 1 and 2 (None when a subset is empty)
    s : float64 (nshells,), 1/Angstrom (None without ``pixel_size`` or a half)
    fsc : float64 (nshells,), FSC between the halves (None as ``s``)
    count : (int, int), images inserted per half
    """

    volume: np.ndarray
    half1: np.ndarray | None
    half2: np.ndarray | None
    s: np.ndarray | None
    fsc: np.ndarray | None
    count: tuple[int, int]


def _images(images) -> np.ndarray:
    a = np.asarray(images)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 2:
        raise ValueError(f"images: must be a stack of square images (N, n, n), got {a.shape}")
    if np.iscomplexobj(a):
        raise ValueError("images: must be real")
    return a.astype(np.float32, copy=False)


def _per_image(values, count: int, name: str, default: float) -> np.ndarray:
    if values is None:
        return np.full(count, default, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.shape != (count,):
        raise ValueError(f"{name}: needs one value per image ({count}), got {v.size}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return v


def _halves(subset, count: int) -> np.ndarray:
    if subset is None:
        return (np.arange(count) % 2).astype(np.int64)
    s = np.asarray(subset).reshape(-1)
    if s.shape != (count,) or not np.all(np.isin(s, (1, 2))):
        raise ValueError(f"subset: needs one value 1 or 2 per image ({count})")
    return (s.astype(np.int64) - 1).copy()


def _symmetry(symmetry) -> np.ndarray:
    if symmetry is None:
        return np.eye(3)[None]
    s = np.asarray(symmetry, dtype=np.float64)
    if s.ndim == 2:
        s = s[None]
    if s.ndim != 3 or s.shape[1:] != (3, 3) or s.shape[0] < 1:
        raise ValueError(f"symmetry: must be matrices of shape (S, 3, 3), got {s.shape}")
    return np.ascontiguousarray(s)


def insert_images(
    images,
    rotations,
    *,
    shifts=None,
    pixel_size: float | None = None,
    weights=None,
    ctf=None,
    ctf_premultiplied: bool = False,
    subset=None,
    symmetry=None,
    pad: float = 2.0,
    kernel: str = "trilinear",
    max_radius: float | None = None,
    threads: int | None = None,
) -> FourierAccumulator:
    """Insert N images as central slices into a padded Fourier grid (one pass, both halves).

    Parameters
    ----------
    images : ndarray (N, n, n) real
    rotations : ndarray (N, 3, 3), matrices A (map frame -> particle frame)
    shifts : ndarray (N, 2), optional, (shift_x, shift_y) Angstrom; needs ``pixel_size``
    pixel_size : float, optional, Angstrom per pixel
    weights : ndarray (N,), optional, per-image weight (default 1; 0 leaves an image out)
    ctf : ndarray (N or 1, n, n//2+1), optional, the images' CTF on their rfft half-grid
    ctf_premultiplied : bool
        The images already carry their CTF (RELION's ``rlnCtfDataAreCtfPremultiplied``, Warp's
        sub-tilt stacks): the data get ``w * F`` instead of ``w * CTF * F``; the weights are
        ``w * CTF^2`` either way. Needs ``ctf``.
    subset : ndarray (N,) of 1 or 2, optional
        Half of each image (as ``rlnRandomSubset``); default even indices 1, odd 2 (EMAN2's
        even/odd split).
    symmetry : ndarray (S, 3, 3), optional, point-group matrices (map frame)
    pad : float, padding factor (default 2)
    kernel : ``"trilinear"`` or ``"gauss"`` (EMAN2's 6x6x6 Gaussian splat,
        ``exp(-h d^2)``, ``h = max(0.1, 1 / (|k|^2 / 4000 + 0.15))``)
    max_radius : float, optional, image frequencies used, pixels (default n/2)
    threads : int, optional, FFT threads

    Returns
    -------
    FourierAccumulator
    """
    from . import _slice_kernels as _k

    if kernel not in _KERNELS:
        raise ValueError(f"kernel: must be one of {', '.join(_KERNELS)}, got {kernel!r}")
    imgs = _images(images)
    count, n = imgs.shape[0], imgs.shape[1]
    rot = _rotations(rotations, count)
    w = _per_image(weights, count, "weights", 1.0)
    half = _halves(subset, count)
    sym = _symmetry(symmetry)
    c = _ctf_array(ctf, count, n)
    if ctf_premultiplied and ctf is None:
        raise ValueError("ctf_premultiplied: needs the images' ctf")
    m = padded_size(n, pad)
    r = n / 2.0 if max_radius is None else float(max_radius)
    if not r >= 0:
        raise ValueError(f"max_radius: must be >= 0, got {max_radius}")
    py, px = phase_ramps(n, count, shifts, pixel_size=pixel_size, sign=1.0)
    spec = _fft.rfftn(imgs, axes=(-2, -1), threads=threads)
    gauss = kernel == "gauss"
    args = (spec, rot, sym, m / n, r * r, py, px, c, w, half, gauss, bool(ctf_premultiplied))
    nt = _k.num_threads()
    grid_bytes = 2 * m * m * (m // 2 + 1) * 3 * 4
    grid = np.zeros((2, m, m, m // 2 + 1, 3), np.float32)
    if nt > 1 and count >= 2 * nt and (nt - 1) * grid_bytes <= SPLIT_GRID_BYTES:
        extra = np.zeros((nt - 1, *grid.shape), np.float32)
        _k.insert_slices_split(*args, grid, extra)
        for e in extra:
            grid += e
        del extra
    else:
        _k.insert_slices(*args, nt, grid)
    cnt = (int(np.sum((half == 0) & (w != 0))), int(np.sum((half == 1) & (w != 0))))
    return FourierAccumulator(grid, n, m, kernel, cnt)


def _mirror(plane: np.ndarray) -> np.ndarray:
    """``plane[(-z) % M, (-y) % M]``: the Friedel mates within a plane of constant x."""
    return np.roll(np.flip(plane, axis=(-2, -1)), 1, axis=(-2, -1))


def _self_mirrored_planes(m: int, mh: int) -> list[int]:
    """x planes of the half-grid that are their own Friedel mirror: 0, and M/2 for even M."""
    return [0] + ([m // 2] if m % 2 == 0 and mh == m // 2 + 1 else [])


@lru_cache(maxsize=4)
def _shell_grid(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounded radius (int32) of every voxel of the (m, m, m//2+1) half-grid, the exact
    radius (float32), and the voxel count per shell."""
    kz = (np.fft.fftfreq(m) * m).astype(np.float32)
    kx = np.arange(m // 2 + 1, dtype=np.float32)
    r = np.sqrt(kz[:, None, None] ** 2 + kz[None, :, None] ** 2 + kx[None, None, :] ** 2)
    sh = np.rint(r).astype(np.int32)
    cnt = np.bincount(sh.ravel())
    for x in (sh, r, cnt):
        x.setflags(write=False)
    return sh, r, cnt


def _divide(data, wgt, m: int, wiener_constant) -> np.ndarray:
    """``data / max(weight + tau, floor)``, floor = 1e-3 x the shell's mean weight (0 where
    both are 0). On the self-mirrored planes the insertion wrote only one voxel of each
    Friedel pair, so there each voxel is first summed with its mate."""
    sh, r, cnt = _shell_grid(m)
    mean_w = np.bincount(sh.ravel(), weights=wgt.ravel(), minlength=cnt.size) / np.maximum(cnt, 1)
    den = (1e-3 * mean_w).astype(np.float32)[sh]
    tau = np.asarray(wiener_constant, dtype=np.float32)
    if tau.ndim == 1:  # per shell of the n-box, indexed by round(|k| * n / M)
        n_sh = tau.size
        idx = np.minimum(np.rint(r * ((2 * (n_sh - 1)) / m)).astype(np.int32), n_sh - 1)
        tau = tau[idx]
    w = wgt + tau
    planes = _self_mirrored_planes(m, wgt.shape[-1])
    for x in planes:
        w[..., x] += _mirror(wgt[..., x])
    np.maximum(den, w, out=den)
    den[den <= 0] = np.inf  # nothing was inserted there: the result is 0
    out = np.divide(data, den).astype(np.complex64, copy=False)
    for x in planes:
        out[..., x] = (data[..., x] + np.conj(_mirror(data[..., x]))) / den[..., x]
    return out


def _to_real(spec: np.ndarray, n: int, m: int, gridding: bool, threads) -> np.ndarray:
    vol = _fft.irfftn(spec, shape=(m, m, m), threads=threads)
    idx = (np.arange(n) - n // 2) % m  # the map centre sits at index 0 of the padded box
    vol = vol[np.ix_(idx, idx, idx)]
    if gridding:
        vol /= gridding_function(n, m)
    return vol.astype(np.float32, copy=False)


def finish_reconstruction(
    acc: FourierAccumulator,
    *,
    wiener_constant=0.0,
    pixel_size: float | None = None,
    gridding_correction: bool = True,
    threads: int | None = None,
) -> Reconstruction:
    """Turn accumulated sums into the full map, the two half maps and their FSC.

    Parameters
    ----------
    acc : FourierAccumulator
    wiener_constant : float or ndarray (n//2+1,)
        Added to the weights before dividing (1/SNR: a Wiener filter when the images were
        inserted with their CTF); a 1D array gives one value per shell of the n-box.
    pixel_size : float, optional
        Angstrom per pixel; needed for the FSC's frequencies (``s`` and ``fsc`` are None
        without it).
    gridding_correction : bool
        Divide by the trilinear gridding function (trilinear kernel only).

    Returns
    -------
    Reconstruction
    """
    if not isinstance(acc, FourierAccumulator):
        raise ValueError("acc: must be a FourierAccumulator from insert_images")
    n, m = acc.box, acc.padded_box
    data, wgt = acc.data, acc.weight
    grid = gridding_correction and acc.kernel == "trilinear"

    def real(d, w):
        return _to_real(_divide(d, w, m, wiener_constant), n, m, grid, threads)

    volume = real(data[0] + data[1], wgt[0] + wgt[1])
    halves = [real(data[h], wgt[h]) if acc.count[h] else None for h in (0, 1)]
    s = f = None
    if pixel_size is not None and halves[0] is not None and halves[1] is not None:
        s, f = _fsc(halves[0], halves[1], pixel_size=pixel_size)
    return Reconstruction(volume, halves[0], halves[1], s, f, acc.count)


def reconstruct_fourier(
    images,
    rotations,
    *,
    shifts=None,
    pixel_size: float | None = None,
    weights=None,
    ctf=None,
    ctf_premultiplied: bool = False,
    subset=None,
    symmetry=None,
    pad: float = 2.0,
    kernel: str = "trilinear",
    wiener_constant=0.0,
    max_radius: float | None = None,
    gridding_correction: bool = True,
    threads: int | None = None,
) -> Reconstruction:
    """Reconstruct a map (and its even/odd halves with their FSC) from images with poses.

    :func:`insert_images` followed by :func:`finish_reconstruction`; see those for the
    parameters. Returns a :class:`Reconstruction`.
    """
    acc = insert_images(
        images, rotations, shifts=shifts, pixel_size=pixel_size, weights=weights, ctf=ctf,
        ctf_premultiplied=ctf_premultiplied, subset=subset, symmetry=symmetry, pad=pad, kernel=kernel, max_radius=max_radius,
        threads=threads,
    )  # fmt: skip
    return finish_reconstruction(
        acc, wiener_constant=wiener_constant, pixel_size=pixel_size,
        gridding_correction=gridding_correction, threads=threads,
    )  # fmt: skip


def fsc_wiener_constant(acc: FourierAccumulator, fsc, *, fudge: float = 1.0) -> np.ndarray:
    """Per-shell Wiener constants from the half-map FSC (RELION's regularisation, tau2_fudge).

    Each shell's constant is its mean inserted weight divided by the signal-to-noise ratio of
    the full map, ``SNR = fudge * F' / (1 - F')`` with ``F' = 2 F / (1 + F)`` the FSC of the
    full map predicted from the half-map FSC ``F``: strong shells are barely damped, shells
    without signal are filtered away.

    Parameters
    ----------
    acc : FourierAccumulator
    fsc : ndarray (n//2+1,) half-map FSC per shell of the n-box (e.g. ``Reconstruction.fsc``)
    fudge : float > 0, multiplies the SNR (RELION's ``--tau2_fudge``; > 1 sharpens)

    Returns
    -------
    ndarray float64 (n//2+1,), for ``finish_reconstruction(wiener_constant=...)``
    """
    if not isinstance(acc, FourierAccumulator):
        raise ValueError("acc: must be a FourierAccumulator from insert_images")
    n, m = acc.box, acc.padded_box
    f = np.asarray(fsc, dtype=np.float64).reshape(-1)
    if f.size != n // 2 + 1 or not np.all(np.isfinite(f)):
        raise ValueError(f"fsc: need {n // 2 + 1} finite values (one per shell), got {f.size}")
    if not fudge > 0:
        raise ValueError(f"fudge: must be > 0, got {fudge}")
    _, shell_of, _ = _shell_grid(m)
    shell = np.minimum(np.rint(shell_of * n / m).astype(np.int64), n // 2).ravel()
    total = acc.weight.sum(axis=0).ravel().astype(np.float64)
    mean_w = np.bincount(shell, total, n // 2 + 1) / np.maximum(
        np.bincount(shell, None, n // 2 + 1), 1
    )
    full = np.clip(2 * f / (1 + np.clip(f, 0, None)), 1e-3, 0.999)
    return mean_w / (fudge * full / (1 - full))
