"""Image comparators (EMAN2's ``ccc``, ``sqeuclidean``, ``frc``, ``phase``), batched N x M.

Conventions
-----------
* ``images`` is a stack (N, y, x) (or one image (y, x)), ``references`` a stack (M, y, x) of the
  same box; every function returns an (N, M) float64 array, entry [n, m] comparing image n
  with reference m. Nothing loops over pairs in Python: real-space comparators are built from
  pixel moments (matrix products), Fourier ones from per-ring matrix products; the
  pair-dependent options (``zeromask``, ``phase``) broadcast over chunks of pairs.
* **Sign rule**: every comparator returns the quantity its name says, with EMAN2's magnitude.
  ``ccc`` and ``frc`` are correlations (1 = identical, larger is better); ``sqeuclidean`` and
  ``phase`` are distances (0 = identical, smaller is better). EMAN2 returns ``-ccc`` and
  ``-frc`` so that smaller is always better; :func:`cost` gives that EMAN2-signed value for any
  comparator, and it is what the aligners of :mod:`.align2d` minimise and report.
* Fourier rings: ring ``i = round(|k|)`` in Fourier pixels of the (square) box, rings
  ``0 .. ny//2 - 1`` (EMAN2's ``calc_fourier_shell_correlation``); sums run over the full
  Fourier grid (the rfft half grid with Hermitian weights). Resolutions in Angstrom, pixel
  size in Angstrom.
"""

from __future__ import annotations

import numpy as np

from . import fft as _fft
from .fourier import hermitian_weights, shell_index_rfft

__all__ = ["ccc", "sqeuclidean", "frc", "frc_curve", "phase", "frc_band_weights", "cost"]

_CHUNK = 1 << 24  # elements of the largest temporary of a pairwise chunk


def _stacks(images, references):
    a = np.asarray(images, dtype=np.float64)
    b = np.asarray(references, dtype=np.float64)
    a = a[None] if a.ndim == 2 else a
    b = b[None] if b.ndim == 2 else b
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError(f"images: need stacks (n, y, x), got {a.shape} and {b.shape}")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"references: box {b.shape[1:]} differs from the images' {a.shape[1:]}")
    return a, b


def _moments(a, b, mask, zeromask: bool):
    """Pixel moments over the pixels valid for each pair: n, Sx, Sy, Sxx, Syy, Sxy (N, M)."""
    n, m = a.shape[0], b.shape[0]
    x, y = a.reshape(n, -1), b.reshape(m, -1)
    w = np.ones(x.shape[1]) if mask is None else (np.asarray(mask).reshape(-1) > 0.5) * 1.0
    if mask is not None and w.size != x.shape[1]:
        raise ValueError(f"mask: shape {np.shape(mask)} differs from the box {a.shape[1:]}")
    vx = (x != 0) * w if zeromask else np.broadcast_to(w, x.shape)
    vy = (y != 0) * 1.0 if zeromask else np.ones_like(y)
    cnt = vx @ vy.T
    return (cnt, (vx * x) @ vy.T, vx @ (vy * y).T, (vx * x * x) @ vy.T, vx @ (vy * y * y).T,
            (vx * x) @ (vy * y).T)  # fmt: skip


def ccc(images, references, *, mask=None) -> np.ndarray:
    """Pearson correlation of every image with every reference (EMAN2 ``ccc``, unsigned).

    Parameters
    ----------
    images, references : array (N, y, x), (M, y, x)
    mask : array (y, x), optional
        Only pixels with ``mask > 0.5`` count.

    Returns
    -------
    ndarray (N, M): sum((x - mx)(y - my)) / sqrt(sum((x - mx)^2) sum((y - my)^2)), in [-1, 1];
    0 where an image is constant.
    """
    a, b = _stacks(images, references)
    cnt, sx, sy, sxx, syy, sxy = _moments(a, b, mask, False)
    vx = sxx - sx * sx / cnt
    vy = syy - sy * sy / cnt
    den = np.sqrt(np.maximum(vx * vy, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (sxy - sx * sy / cnt) / den
    return np.where(den > 0, out, 0.0)


def sqeuclidean(images, references, *, mask=None, normto: bool = False, zeromask: bool = False):
    """Mean squared difference (EMAN2 ``sqeuclidean``).

    Parameters
    ----------
    images, references : array (N, y, x), (M, y, x)
    mask : array (y, x), optional; only pixels with ``mask > 0.5`` count.
    normto : bool
        First fit ``a * reference + b`` to the image by least squares (EMAN2
        ``normalize.toimage``) over the counted pixels; a fitted ``a <= 0`` is undone.
    zeromask : bool
        Leave out the pixels where either image is exactly 0.

    Returns
    -------
    ndarray (N, M): mean over the counted pixels of (x - y')^2, y' the (fitted) reference.
    """
    a, b = _stacks(images, references)
    cnt, sx, sy, sxx, syy, sxy = _moments(a, b, mask, zeromask)
    cnt = np.maximum(cnt, 1.0)
    plain = (sxx - 2 * sxy + syy) / cnt
    if not normto:
        return plain
    vy = syy - sy * sy / cnt
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(vy > 0, (sxy - sx * sy / cnt) / vy, 0.0)
    o = (sx - s * sy) / cnt
    fit = (sxx - 2 * s * sxy - 2 * o * sx + s * s * syy + 2 * s * o * sy + cnt * o * o) / cnt
    return np.where(s > 0, np.maximum(fit, 0.0), plain)


def frc_band_weights(ny: int, *, pixel_size: float, minres: float, maxres: float) -> np.ndarray:
    """EMAN2's ring band weights (ny//2,): (tanh(5 (i - pmin)/pmin) + 1)/2 * (1 - tanh(i - pmax))/2
    with pmin = pixel_size ny / minres, pmax = pixel_size ny / maxres (rings in Fourier px)."""
    if not (pixel_size > 0 and minres > 0 and maxres > 0):
        raise ValueError("pixel_size, minres, maxres: must all be > 0 (Angstrom)")
    i = np.arange(ny // 2, dtype=np.float64)
    pmin, pmax = pixel_size * ny / minres, pixel_size * ny / maxres
    return (np.tanh(5 * (i - pmin) / pmin) + 1) / 2 * (1 - np.tanh(i - pmax)) / 2


def _spectra(a):
    return _fft.rfftn(a, axes=(-2, -1))


def _rings(shape):
    ring = shell_index_rfft(shape).ravel()
    herm = np.broadcast_to(hermitian_weights(shape).astype(np.float64), _fft.rfft_shape(shape))
    herm = herm.ravel()
    return ring, herm


def _pair_chunks(n: int, m: int, per_pair: int):
    step = max(1, _CHUNK // max(per_pair * n, 1))
    for j in range(0, m, step):
        yield slice(j, min(m, j + step))


def frc_curve(images, references, *, zeromask: bool = False) -> np.ndarray:
    """Fourier ring correlation of every pair, ring by ring.

    Returns
    -------
    ndarray (N, M, ny//2): FRC_i = sum Re(A conj B) / sqrt(sum |A|^2 sum |B|^2) over ring i
    (0 where a ring has no power). ``zeromask`` zeroes, in both images of a pair, the pixels
    that are 0 in either before the FFT (EMAN2).
    """
    a, b = _stacks(images, references)
    shape = a.shape[1:]
    nring = min(shape) // 2
    ring, herm = _rings(shape)
    keep = ring < nring
    ring, herm = ring[keep], herm[keep]
    out = np.zeros((a.shape[0], b.shape[0], nring))
    if zeromask:
        for sl in _pair_chunks(a.shape[0], b.shape[0], a[0].size * 3):
            bb = b[sl]
            both = (a[:, None] != 0) & (bb[None] != 0)
            fa = _spectra(a[:, None] * both).reshape(*both.shape[:2], -1)[..., keep]
            fb = _spectra(bb[None] * both).reshape(*both.shape[:2], -1)[..., keep]
            cross = np.real(fa * np.conj(fb)) * herm
            pa, pb = np.abs(fa) ** 2 * herm, np.abs(fb) ** 2 * herm
            for i in range(nring):
                sel = ring == i
                den = np.sqrt(pa[..., sel].sum(-1) * pb[..., sel].sum(-1))
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[:, sl, i] = np.where(den > 0, cross[..., sel].sum(-1) / den, 0.0)
        return out
    fa = _spectra(a).reshape(a.shape[0], -1)[:, keep]
    fb = _spectra(b).reshape(b.shape[0], -1)[:, keep]
    for i in range(nring):
        sel = ring == i
        h = herm[sel]
        ua, ub = fa[:, sel] * np.sqrt(h), fb[:, sel] * np.sqrt(h)
        cross = ua.real @ ub.real.T + ua.imag @ ub.imag.T
        den = np.sqrt(np.outer((np.abs(ua) ** 2).sum(1), (np.abs(ub) ** 2).sum(1)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, :, i] = np.where(den > 0, cross / den, 0.0)
    return out


def _snr_weights(snr, n: int, nring: int) -> np.ndarray:
    if snr is None:
        return np.ones((n, 1, nring))
    s = np.asarray(snr, dtype=np.float64)
    if s.shape not in ((nring,), (n, nring)):
        raise ValueError(f"snr: need shape ({nring},) or ({n}, {nring}), got {s.shape}")
    s = np.where(s <= 0, 0.001, s)
    return np.broadcast_to(s, (n, nring))[:, None, :]


def frc(images, references, *, pixel_size: float, minres: float = 200.0, maxres: float = 8.0,
        snr=None, sweight: bool = True, zeromask: bool = False) -> np.ndarray:  # fmt: skip
    """Weighted mean FRC (EMAN2 ``frc``, unsigned: EMAN2 returns the negative).

    Parameters
    ----------
    images, references : array (N, y, x), (M, y, x)
    pixel_size : float, Angstrom
    minres, maxres : float, Angstrom
        Band limits of :func:`frc_band_weights` (EMAN2 defaults 200 and 8).
    snr : array (ny//2,) or (N, ny//2), optional
        Per-ring SNR weight of each image (``snrweight``; values <= 0 count as 0.001).
    sweight : bool
        Weight each ring by its number of Fourier coefficients (EMAN2 default).
    zeromask : bool
        As :func:`frc_curve`.

    Returns
    -------
    ndarray (N, M): sum_i w_i FRC_i / sum_i w_i.
    """
    a, b = _stacks(images, references)
    nring = min(a.shape[1:]) // 2
    curve = frc_curve(a, b, zeromask=zeromask)
    w = frc_band_weights(a.shape[1], pixel_size=pixel_size, minres=minres, maxres=maxres)
    if sweight:
        ring, herm = _rings(a.shape[1:])
        w = w * np.bincount(ring, herm, minlength=nring)[:nring]
    w = w[None, None, :] * _snr_weights(snr, a.shape[0], nring)
    return (curve * w).sum(-1) / w.sum(-1)


def phase(images, references, *, pixel_size: float, minres: float = 500.0, maxres: float = 10.0,
          snr=None, ampweight: bool = False) -> np.ndarray:  # fmt: skip
    """Weighted mean phase error in radians (EMAN2 ``phase``; 0 = identical phases).

    Sum over Fourier pixels with ring < ny//2 of w * acos(cos(phi_a - phi_b)) / sum w, with w the
    band weight of the pixel's ring (:func:`frc_band_weights`, defaults minres 500, maxres 10 A)
    times the ring SNR (``snr`` as in :func:`frc`) and, with ``ampweight``, |A| |B|.

    Returns
    -------
    ndarray (N, M) in [0, pi].
    """
    a, b = _stacks(images, references)
    shape = a.shape[1:]
    nring = min(shape) // 2
    ring, herm = _rings(shape)
    keep = ring < nring
    ring, herm = ring[keep], herm[keep]
    band = frc_band_weights(shape[0], pixel_size=pixel_size, minres=minres, maxres=maxres)
    wpix = _snr_weights(snr, a.shape[0], nring)[:, :, ring] * band[ring] * herm  # (N, 1, P)
    fa = _spectra(a).reshape(a.shape[0], -1)[:, keep][:, None]
    fb = _spectra(b).reshape(b.shape[0], -1)[:, keep]
    out = np.empty((a.shape[0], b.shape[0]))
    for sl in _pair_chunks(a.shape[0], b.shape[0], ring.size * 4):
        prod = fa * np.conj(fb[sl][None])
        mag = np.abs(prod)
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.arccos(np.clip(np.where(mag > 0, prod.real / mag, 1.0), -1.0, 1.0))
        w = wpix * mag if ampweight else np.broadcast_to(wpix, err.shape)
        out[:, sl] = (w * err).sum(-1) / w.sum(-1)
    return out


_NEGATED = {"ccc", "frc"}
_FUNCS = {"ccc": ccc, "sqeuclidean": sqeuclidean, "frc": frc, "phase": phase}


def cost(name: str, images, references, **options) -> np.ndarray:
    """EMAN2-signed comparator value (smaller is better): ``-ccc``, ``-frc``, ``sqeuclidean``,
    ``phase``; ``options`` go to the comparator. Shape (N, M)."""
    if name not in _FUNCS:
        raise ValueError(f"name: unknown comparator {name!r}; use one of {sorted(_FUNCS)}")
    v = _FUNCS[name](images, references, **options)
    return -v if name in _NEGATED else v
