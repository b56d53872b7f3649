"""3D rotation, cross-correlation and scores for subtomograms.

Conventions
-----------
* Volumes are (z, y, x) float32 arrays; the rotation centre is the box centre ``n // 2`` on each
  axis; points are (x, y, z) vectors, as in docs/conventions.md.
* :func:`rotate_volume` with a matrix ``A`` moves the content at point ``r`` to ``A r``:
  ``out(r) = v(A^T r)``. With ``A`` a RELION pose matrix (:func:`.euler_zyz_to_matrix`),
  summing the output along z gives the projection of ``v`` at that pose.
* CCFs are circular: ``ccf[s] = sum_r v(r) ref(r - s)`` at wrapped index ``s``, so the peak of
  a volume equal to ``ref`` translated by ``+s`` is at ``s``.
* :func:`ccc_tomo_thresh` is EMAN2's ``ccc.tomo.thresh``, unsigned (EMAN2 returns the
  negative); :func:`flc_3d` is Roseman's locally normalised cross-correlation (the ``FLC``
  score of pyTME): a Pearson correlation between the masked template and the target under
  the mask at every translation.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from . import fft as _fft

__all__ = ["rotate_volume", "ccf_3d", "ccc_tomo_thresh", "flc_3d"]


def _volume(v, name: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    if v.ndim != 3 or min(v.shape) < 2:
        raise ValueError(f"{name}: need a 3D volume (z, y, x), got shape {v.shape}")
    return v


def rotate_volume(volume, matrix, *, order: int = 1, shift=None) -> np.ndarray:
    """Rotate (and shift) a volume about its centre: ``out(r) = v(A^T (r - t))``.

    Parameters
    ----------
    volume : array (z, y, x)
    matrix : array (3, 3)
        Rotation A acting on (x, y, z) vectors.
    order : int
        Spline order of :func:`scipy.ndimage.affine_transform` (1 trilinear, 3 cubic).
    shift : array (3,), optional
        Translation t in voxels, (x, y, z), applied after the rotation.

    Returns
    -------
    ndarray (z, y, x) float32; voxels sampled from outside the box are 0.
    """
    v = _volume(volume, "volume")
    a = np.asarray(matrix, dtype=np.float64)
    if a.shape != (3, 3) or not np.allclose(a @ a.T, np.eye(3), atol=1e-5):
        raise ValueError(f"matrix: need a 3x3 rotation matrix, got shape {a.shape}")
    if order not in range(6):
        raise ValueError(f"order: must be 0..5, got {order}")
    t = np.zeros(3) if shift is None else np.asarray(shift, np.float64).reshape(3)
    m = a.T[::-1, ::-1]  # (z, y, x) index form of A^T
    c = np.array([n // 2 for n in v.shape], np.float64)
    offset = c - m @ (c + t[::-1])
    return ndi.affine_transform(v, m, offset=offset, order=order, mode="constant", cval=0.0,
                                output=np.float32)  # fmt: skip


def ccf_3d(volume, reference) -> np.ndarray:
    """Circular cross-correlation ``ccf[s] = sum_r v(r) ref(r - s)``, (z, y, x) float32,
    zero shift at index (0, 0, 0)."""
    v, r = _volume(volume, "volume"), _volume(reference, "reference")
    if v.shape != r.shape:
        raise ValueError(f"reference: shape {r.shape} differs from the volume's {v.shape}")
    fv, fr = _fft.rfftn(v), _fft.rfftn(r)
    return _fft.irfftn(fv * np.conj(fr), shape=v.shape)


def _herm(shape) -> np.ndarray:
    w = np.full(shape[-1] // 2 + 1, 2.0)
    w[0] = 1.0
    if shape[-1] % 2 == 0:
        w[-1] = 1.0
    return w


def ccc_tomo_thresh(volume, reference) -> float:
    """EMAN2 ``ccc.tomo.thresh`` (unsigned): a Fourier correlation over the coefficients where
    both |F|^2 >= (0.5 sigma_F)^2, sigma_F the standard deviation of each volume's complex
    coefficients (real and imaginary parts, as EMAN2 stores them). Missing-wedge regions (and
    other empty ones) drop out of both sums:
    ``sum Re(F1 conj F2) / sqrt(sum |F1|^2 sum |F2|^2)`` over the kept coefficients of the full
    Fourier grid (Hermitian weights on the rfft half grid). Returns a float in [-1, 1]."""
    v, r = _volume(volume, "volume"), _volume(reference, "reference")
    if v.shape != r.shape:
        raise ValueError(f"reference: shape {r.shape} differs from the volume's {v.shape}")
    f1, f2 = _fft.rfftn(v).astype(np.complex128), _fft.rfftn(r).astype(np.complex128)
    w = _herm(v.shape)

    def sigma(f):
        parts = np.stack([f.real, f.imag])
        return parts.std()

    keep = (np.abs(f1) ** 2 >= (0.5 * sigma(f1)) ** 2) & (np.abs(f2) ** 2 >= (0.5 * sigma(f2)) ** 2)
    wk = keep * w
    num = (np.real(f1 * np.conj(f2)) * wk).sum()
    den = np.sqrt((np.abs(f1) ** 2 * wk).sum() * (np.abs(f2) ** 2 * wk).sum())
    return float(num / den) if den > 0 else 0.0


def flc_3d(target, template, mask=None) -> np.ndarray:
    """Locally normalised cross-correlation of a template at every (circular) translation.

    ``flc[x] = sum_m M(m) (T(m) - mu_T) (V(x + m) - mu_V(x)) / (n sigma_T sigma_V(x))`` with m
    the template offsets from its centre ``n // 2``, M the mask (> 0 counts as 1, n its voxel
    count), mu/sigma the mean and population standard deviation under the mask (of the template,
    and of the target window centred at x). Equals the Pearson correlation between the masked
    template and the target under the mask placed at x; 0 where the window is flat.

    Parameters
    ----------
    target : array (z, y, x)
    template : array (a, b, c), no larger than the target on any axis
    mask : array like ``template``, optional (default all ones)

    Returns
    -------
    ndarray like ``target``, float32, in [-1, 1]; index x is the template centre's position.
    """
    v = _volume(target, "target").astype(np.float64)
    t = _volume(template, "template").astype(np.float64)
    m = np.ones_like(t) if mask is None else (np.asarray(mask) > 0).astype(np.float64)
    if m.shape != t.shape:
        raise ValueError(f"mask: shape {m.shape} differs from the template's {t.shape}")
    if any(a > b for a, b in zip(t.shape, v.shape, strict=True)):
        raise ValueError(f"template: shape {t.shape} is larger than the target's {v.shape}")
    n = m.sum()
    if n < 2:
        raise ValueError("mask: needs at least 2 voxels > 0")
    mu = (t * m).sum() / n
    sd = np.sqrt(((t - mu) ** 2 * m).sum() / n)
    if sd == 0:
        raise ValueError("template: is constant under the mask")
    tn = (t - mu) / sd * m

    def at_origin(a):
        out = np.zeros(v.shape)
        out[tuple(slice(0, s) for s in a.shape)] = a
        return np.roll(out, [-(s // 2) for s in a.shape], axis=(0, 1, 2))

    fv, fv2 = _fft.rfftn(v), _fft.rfftn(v * v)
    corr = lambda f, k: _fft.irfftn(f * np.conj(_fft.rfftn(at_origin(k))), shape=v.shape)  # noqa: E731
    num = corr(fv, tn)
    mean = corr(fv, m) / n
    var = np.maximum(corr(fv2, m) / n - mean * mean, 0.0)
    floor = 1e-10 * max(float(var.max()), 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(var > floor, num / (n * np.sqrt(var)), 0.0)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
