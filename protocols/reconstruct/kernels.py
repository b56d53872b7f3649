"""Pure kernels of the simulate / reconstruct / project protocols (arrays in, arrays out).

Conventions as :mod:`emforge.numerics.projection` and docs/conventions.md: maps (z, y, x)
cubic float32, images (N, n, n), pose matrices A (N, 3, 3) from RELION ZYZ Euler angles,
shifts (N, 2) = (shift_x, shift_y) in Angstrom (``rlnOriginXAngst/YAngst``), defocus in
Angstrom, CTF on the rfft half-grid ``(N, n, n//2+1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emforge.numerics import fft as _fft

__all__ = [
    "fourier_resize",
    "particle_radius",
    "SimulatedPoses",
    "simulated_poses",
    "simulate_images",
    "noise_sigma",
    "ctf_stack",
    "wiener_shells",
]


def fourier_resize(volume: np.ndarray, box: int) -> np.ndarray:
    """Fourier-crop (or zero-pad) a cubic map to ``box``³, keeping its density scale.

    Parameters
    ----------
    volume : ndarray (n, n, n) real
    box : int, new side (>= 2)

    Returns
    -------
    ndarray float32 (box, box, box). When cropping, frequencies outside the new box's Nyquist
    sphere are dropped (what binning should give); the pixel size becomes ``px * n / box``.
    The map centre stays at index ``n // 2`` -> ``box // 2``.
    """
    v = np.asarray(volume, dtype=np.float64)
    n = v.shape[0]
    if v.ndim != 3 or len(set(v.shape)) != 1:
        raise ValueError(f"volume: must be a cubic 3D array, got shape {v.shape}")
    if int(box) != box or box < 2:
        raise ValueError(f"box: must be an integer >= 2, got {box}")
    box = int(box)
    if box == n:
        return v.astype(np.float32)
    f = np.fft.fftshift(_fft.fftn(v.astype(np.complex64)))
    out = np.zeros((box,) * 3, dtype=np.complex64)
    c_in, c_out, h = n // 2, box // 2, min(n, box) // 2
    lo, hi = -h, min(n, box) - h
    src = slice(c_in + lo, c_in + hi)
    dst = slice(c_out + lo, c_out + hi)
    out[dst, dst, dst] = f[src, src, src]
    if box < n:
        g = np.arange(box) - c_out
        r2 = g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
        out[r2 > (box / 2) ** 2] = 0
    res = np.real(_fft.ifftn(np.fft.ifftshift(out))) * (box / n) ** 3
    return res.astype(np.float32)


def particle_radius(volume: np.ndarray, *, fraction: float = 0.99) -> float:
    """Radius (pixels, from the box centre) of the sphere holding ``fraction`` of the map's
    positive density; at least 2 and at most half the box."""
    v = np.clip(np.asarray(volume, dtype=np.float64), 0, None)
    n = v.shape[0]
    if not v.any():
        return n / 2.0
    g = np.arange(n) - n // 2
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    order = np.argsort(r.ravel())
    cum = np.cumsum(v.ravel()[order])
    k = int(np.searchsorted(cum, fraction * cum[-1]))
    return float(np.clip(r.ravel()[order][min(k, cum.size - 1)], 2.0, n / 2.0))


@dataclass(frozen=True)
class SimulatedPoses:
    """True parameters of simulated particles: ``angles`` (N, 3) RELION (rot, tilt, psi) deg,
    ``shifts`` (N, 2) Angstrom, ``defocus`` (N,) Angstrom (U = V, astigmatism-free)."""

    angles: np.ndarray
    shifts: np.ndarray
    defocus: np.ndarray


def simulated_poses(
    count: int,
    *,
    pixel_size: float,
    defocus_range: tuple[float, float],
    max_shift: float,
    symmetry: str = "c1",
    seed: int = 0,
) -> SimulatedPoses:
    """Uniformly random poses (reduced to EMAN2's asymmetric unit of ``symmetry``, mirror
    half included), shifts uniform in ``[-max_shift, max_shift]`` pixels per axis, defocus
    uniform in ``defocus_range`` (Angstrom). Seeded: the same seed gives the same values."""
    from emforge.numerics import matrix_to_euler_zyz, random_rotations, reduce_to_asymmetric_unit

    rng = np.random.default_rng([seed, 1])
    rot = random_rotations(count, seed=np.random.default_rng([seed, 0]))
    if symmetry.lower() != "c1":
        rot = reduce_to_asymmetric_unit(rot, symmetry, inc_mirror=True)
    shifts = rng.uniform(-max_shift, max_shift, size=(count, 2)) * pixel_size
    defocus = rng.uniform(defocus_range[0], defocus_range[1], size=count)
    return SimulatedPoses(matrix_to_euler_zyz(rot), shifts, defocus)


def ctf_stack(box: int, *, pixel_size: float, columns: dict[str, np.ndarray]) -> np.ndarray:
    """CTFs (N, box, box//2+1) float32 of particles from their CTF columns (``defocus_u``,
    ``defocus_v``, ``defocus_angle``, ``voltage``, ``cs``, ``amplitude_contrast``,
    ``phase_shift``; units of :mod:`emforge.columns`)."""
    from emforge.numerics import ctf_2d

    def col(name):
        return np.asarray(columns[name], dtype=np.float64)

    return ctf_2d(
        (box, box),
        pixel_size=pixel_size,
        defocus_u=col("defocus_u"),
        defocus_v=col("defocus_v"),
        defocus_angle=col("defocus_angle"),
        voltage=col("voltage"),
        cs=col("cs"),
        amplitude_contrast=col("amplitude_contrast"),
        phase_shift=col("phase_shift"),
    )


def simulate_images(
    prepared, angles: np.ndarray, shifts: np.ndarray, ctf: np.ndarray, *, pixel_size: float
) -> np.ndarray:
    """Noise-free CTF-modulated projections (N, n, n) float32 of a prepared map
    (:func:`emforge.numerics.prepare_volume`)."""
    from emforge.numerics import euler_zyz_to_matrix, project_fourier

    rot = euler_zyz_to_matrix(angles)
    return project_fourier(prepared, rot, shifts=shifts, pixel_size=pixel_size, ctf=ctf)


def noise_sigma(images: np.ndarray, radius: float, snr: float) -> float:
    """Standard deviation of white noise giving ``snr`` = signal variance / noise variance,
    the signal variance taken over the pixels within ``radius`` of each image's centre
    (n//2), averaged over the images."""
    n = images.shape[-1]
    g = np.arange(n) - n // 2
    inside = (g[:, None] ** 2 + g[None, :] ** 2) <= radius**2
    var = float(np.mean(np.var(images[:, inside], axis=1)))
    return float(np.sqrt(var / snr)) if var > 0 else 0.0


def wiener_shells(weight_half: np.ndarray, box: int, fsc_half: np.ndarray) -> np.ndarray:
    """Per-shell Wiener constants (box//2+1,) from the half-map FSC (FSC-weighted, as RELION's
    ``1/tau²``): ``tau_k = <W>_k (1 - FSC_k) / FSC_k`` with ``<W>_k`` the mean inserted weight
    of one half in shell k (the half-map SNR per voxel is ``FSC / (1 - FSC)``).

    Parameters
    ----------
    weight_half : ndarray (M, M, M//2+1), summed CTF² weights of one half (padded grid)
    box : int, n (the output box)
    fsc_half : ndarray (>= box//2+1,), half-map FSC per shell of the n-box
    """
    m = weight_half.shape[0]
    ky = np.fft.fftfreq(m) * m
    kx = np.arange(weight_half.shape[-1], dtype=np.float64)
    r = np.sqrt(ky[:, None, None] ** 2 + ky[None, :, None] ** 2 + kx[None, None, :] ** 2)
    nsh = box // 2 + 1
    idx = np.minimum(np.rint(r * box / m).astype(np.int64), nsh - 1)
    cnt = np.bincount(idx.ravel(), minlength=nsh)
    mean_w = np.bincount(idx.ravel(), weights=weight_half.ravel(), minlength=nsh) / np.maximum(
        cnt, 1
    )
    f = np.clip(np.asarray(fsc_half, dtype=np.float64)[:nsh], 1e-3, 0.999)
    if f.size < nsh:
        f = np.concatenate([f, np.full(nsh - f.size, 1e-3)])
    tau = mean_w * (1.0 - f) / f
    tau[0] = 0.0
    return tau.astype(np.float32)
