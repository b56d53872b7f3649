"""The contrast transfer function in 2D (RELION's model), phase flipping and Wiener filtering.

Conventions
-----------
* Model (RELION ``CTF::getCTF``): ``CTF(s) = -scale * sin(chi(s)) * exp(-B |s|^2 / 4)`` with
  ``chi = pi lambda dz |s|^2 + (pi/2) Cs lambda^3 |s|^4 - phase_shift - atan(Q0 / sqrt(1 - Q0^2))``
  and ``dz = -(U + V)/2 - (U - V)/2 * cos(2 (theta - defocus_angle))``, ``theta`` the angle of
  ``s`` from the image x axis towards +y. Underfocus is positive; along ``defocus_angle`` the
  defocus is U, at 90 degrees from it V. The CTF is ``+Q0`` at s = 0 (no phase shift).
* Units: defocus in Angstrom (``rlnDefocusU/V``), angle in degrees (``rlnDefocusAngle``),
  voltage in kV, Cs in mm, amplitude contrast Q0 as a fraction, phase shift in degrees,
  B factor in Angstrom^2, frequencies in 1/Angstrom, pixel size in Angstrom.
* Grids are unshifted (DC at index 0), images (y, x): the rfft half-grid ``(ny, nx//2 + 1)``
  of :func:`emforge.numerics.fft.rfftn`, or the full grid ``(ny, nx)``. Parameters broadcast:
  arrays of shape ``B`` give CTFs of shape ``B + grid``. Output is float32. The half grid holds
  +Nyquist at x = nx/2 (``rfftfreq``), the full grid -Nyquist (``fftfreq``); an astigmatic CTF
  differs between the two there, and no real filter can be Hermitian on that column, as in
  RELION.
"""

from __future__ import annotations

import numpy as np

from . import fft as _fft

__all__ = [
    "electron_wavelength",
    "ctf_at_frequencies",
    "ctf_2d",
    "phase_flip_2d",
    "wiener_filter_2d",
]


def electron_wavelength(voltage: float) -> float:
    """Relativistic electron wavelength in Angstrom for an acceleration ``voltage`` in kV
    (300 kV: 0.019687 A), as RELION computes it."""
    if not (np.isfinite(voltage) and voltage > 0):
        raise ValueError(f"voltage: must be > 0 kV, got {voltage}")
    v = float(voltage) * 1e3
    return 12.2643247 / np.sqrt(v * (1.0 + v * 0.978466e-6))


def _params(defocus_u, defocus_v, defocus_angle, voltage, cs, amplitude_contrast, phase_shift,
            bfactor, scale):  # fmt: skip
    p = np.broadcast_arrays(
        *(
            np.asarray(x, dtype=np.float64)
            for x in (
                defocus_u,
                defocus_v,
                defocus_angle,
                voltage,
                cs,
                amplitude_contrast,
                phase_shift,
                bfactor,
                scale,
            )
        )  # fmt: skip
    )
    names = ("defocus_u", "defocus_v", "defocus_angle", "voltage", "cs", "amplitude_contrast",
             "phase_shift", "bfactor", "scale")  # fmt: skip
    for name, x in zip(names, p, strict=True):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name}: contains NaN or infinite values")
    if np.any(p[3] <= 0):
        raise ValueError("voltage: must be > 0 kV")
    if np.any((p[5] < 0) | (p[5] >= 1)):
        raise ValueError("amplitude_contrast: must be in [0, 1)")
    return p


def ctf_at_frequencies(
    sx,
    sy,
    *,
    defocus_u,
    defocus_v,
    defocus_angle=0.0,
    voltage=300.0,
    cs=2.7,
    amplitude_contrast=0.1,
    phase_shift=0.0,
    bfactor=0.0,
    scale=1.0,
) -> np.ndarray:
    """CTF values at arbitrary spatial frequencies.

    Parameters
    ----------
    sx, sy : array_like
        Frequency components along image x and y in 1/Angstrom (any broadcastable shapes F).
    defocus_u, defocus_v, defocus_angle, voltage, cs, amplitude_contrast, phase_shift, bfactor, scale
        Model parameters (units in the module docstring), scalars or arrays of shape B.

    Returns
    -------
    ndarray, float32, shape B + F
    """
    du, dv, ang, kv, cs_mm, q0, phase, b, sc = _params(
        defocus_u, defocus_v, defocus_angle, voltage, cs, amplitude_contrast, phase_shift,
        bfactor, scale,
    )  # fmt: skip
    sx, sy = np.broadcast_arrays(np.asarray(sx, np.float64), np.asarray(sy, np.float64))
    lam = 12.2643247 / np.sqrt(kv * 1e3 * (1.0 + kv * 1e3 * 0.978466e-6))
    extra = (None,) * sx.ndim
    ex = (Ellipsis, *extra)
    k1 = (np.pi * lam)[ex]
    k2 = (np.pi / 2 * cs_mm * 1e7 * lam**3)[ex]
    k3 = np.arctan(q0 / np.sqrt(1.0 - q0 * q0))[ex]
    k5 = np.radians(phase)[ex]
    u2 = sx * sx + sy * sy
    theta = np.arctan2(sy, sx)
    two_a = np.radians(2.0 * ang)[ex]
    mean = (-(du + dv) / 2)[ex]
    dev = (-(du - dv) / 2)[ex]
    dz = mean + dev * (np.cos(2 * theta) * np.cos(two_a) + np.sin(2 * theta) * np.sin(two_a))
    chi = k1 * dz * u2 + k2 * u2 * u2 - k5 - k3
    out = -np.sin(chi) * sc[ex]
    if np.any(b != 0):
        out = out * np.exp(-(b[ex] / 4.0) * u2)
    return out.astype(np.float32)


def ctf_2d(
    shape,
    *,
    pixel_size: float,
    rfft: bool = True,
    defocus_u,
    defocus_v,
    defocus_angle=0.0,
    voltage=300.0,
    cs=2.7,
    amplitude_contrast=0.1,
    phase_shift=0.0,
    bfactor=0.0,
    scale=1.0,
) -> np.ndarray:
    """CTF images on the Fourier grid of a ``(ny, nx)`` box.

    Parameters
    ----------
    shape : tuple of int
        Real-space image shape ``(ny, nx)``.
    pixel_size : float
        Angstrom per pixel.
    rfft : bool
        The rfft half-grid ``(ny, nx//2 + 1)`` (default) or the full grid ``(ny, nx)``, both
        unshifted.
    defocus_u, defocus_v, defocus_angle, voltage, cs, amplitude_contrast, phase_shift, bfactor, scale
        As :func:`ctf_at_frequencies`; arrays of shape B give a stack.

    Returns
    -------
    ndarray, float32, shape B + grid
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or min(shape) < 2:
        raise ValueError(f"shape: {shape} is not a 2D image shape with sides >= 2")
    if not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"pixel_size: must be > 0, got {pixel_size}")
    ny, nx = shape
    fx = np.fft.rfftfreq(nx, pixel_size) if rfft else np.fft.fftfreq(nx, pixel_size)
    fy = np.fft.fftfreq(ny, pixel_size)
    return ctf_at_frequencies(
        fx[None, :], fy[:, None], defocus_u=defocus_u, defocus_v=defocus_v,
        defocus_angle=defocus_angle, voltage=voltage, cs=cs,
        amplitude_contrast=amplitude_contrast, phase_shift=phase_shift, bfactor=bfactor,
        scale=scale,
    )  # fmt: skip


def _filter_images(images, ctf, name: str):
    img = np.asarray(images)
    if img.ndim < 2 or np.iscomplexobj(img):
        raise ValueError(f"images: expected real images (..., ny, nx), got {img.dtype} {img.shape}")
    c = np.asarray(ctf, dtype=np.float32)
    half = _fft.rfft_shape(img.shape[-2:])
    if c.shape[-2:] != half:
        raise ValueError(f"{name}: last two dimensions {c.shape[-2:]} are not the rfft grid {half}")
    f = _fft.rfftn(img.astype(np.float32, copy=False), axes=(-2, -1))
    return f, c


def _back(f: np.ndarray, images) -> np.ndarray:
    shape = f.shape[:-2] + np.shape(images)[-2:]
    out = _fft.irfftn(f.astype(np.complex64, copy=False), shape=shape, axes=(-2, -1))
    return out.astype(np.float32, copy=False)


def phase_flip_2d(images, ctf) -> np.ndarray:
    """Phase-flip images: multiply their Fourier transforms by the sign of the CTF.

    Parameters
    ----------
    images : array_like, shape (..., ny, nx)
        Real images.
    ctf : array_like, shape broadcastable to (..., ny, nx//2 + 1)
        CTF on the rfft half-grid (:func:`ctf_2d`); where it is 0 the coefficient is kept.

    Returns
    -------
    ndarray, float32, shape of ``images``
    """
    f, c = _filter_images(images, ctf, "ctf")
    f = f * np.where(c < 0, np.float32(-1), np.float32(1))
    return _back(f, images)


def wiener_filter_2d(images, ctf, *, wiener_constant: float) -> np.ndarray:
    """Wiener-filter images: ``F * CTF / (CTF^2 + wiener_constant)`` in Fourier space.

    Parameters
    ----------
    images : array_like, shape (..., ny, nx)
        Real images.
    ctf : array_like, shape broadcastable to (..., ny, nx//2 + 1)
        CTF on the rfft half-grid.
    wiener_constant : float
        The constant added to CTF^2 (> 0; the inverse of the signal-to-noise ratio).

    Returns
    -------
    ndarray, float32, shape of ``images``
    """
    if not (np.isfinite(wiener_constant) and wiener_constant > 0):
        raise ValueError(f"wiener_constant: must be > 0, got {wiener_constant}")
    f, c = _filter_images(images, ctf, "ctf")
    f = f * (c / (c * c + np.float32(wiener_constant)))
    return _back(f, images)
