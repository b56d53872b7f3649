"""3-D reconstruction from class averages (EMAN2 ``e2make3dpar`` / ``e2make3d``).

Conventions: averages (M, n, n) float32 in their projection's frame (no shifts), orientations
RELION ZYZ Euler angles (M, 3) in degrees (matrices by
:func:`emforge.numerics.euler_zyz_to_matrix`), symmetry symbols with EMAN2's axes
(:func:`emforge.numerics.symmetry_matrices`), volumes (n, n, n) with centre n//2.

Pass structure (the documented choice): EMAN2.0's ``e2make3d --iter`` passes (Part II §1.4),
on top of the direct Fourier inversion of :mod:`emforge.numerics.reconstruction`:

1. Each average has its edge mean subtracted (``--preprocess normalize.edgemean``'s centring)
   and is inserted with weight ``ptcl_repr`` (classes with weight 0 are skipped), symmetrised
   (every image once per group element), into a grid padded to ``pad`` pixels (EMAN2's
   ``--pad``; default good_size(1.3 n)), trilinear, gridding-corrected.
2. ``keep``/``keepsig`` select the classes by ``quality`` (class_qual, **larger is better**;
   e2make3dpar as written drops the larger values, which with class_qual = frc(high)/frc(low)
   discards the best classes: fixed here, see docs). Without ``quality`` the selection is
   e2make3d's ``--keepabs`` one: the agreement of each slice with the previous pass.
3. Every further pass (``iterations`` >= 2) re-projects the previous volume (times ``mask``,
   the ``--itermask``, when given) at every class orientation, scales each average by the
   least-squares factor onto its re-projection (``reconstruct_norm``), measures the agreement
   (Pearson correlation; ``reconstruct_absqual``), and inserts again.

Why not e2make3dpar's ``FourierIterReconstructor`` (4 seeded passes with a Gaussian splat and
``threshold.compress`` between them): those passes correct EMAN2's own gridding error of a
non-oversampled splat; the padded trilinear insertion with gridding correction used here has
no such error to iterate away (a plain single pass reproduces a map from its exact projections
to CC > 0.99), so the iterations here spend their time where e2make3d's do: per-class scale
and quality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emforge.numerics.projection import project_fourier
from emforge.numerics.reconstruction import finish_reconstruction, insert_images
from emforge.numerics.rotations import euler_zyz_to_matrix
from emforge.numerics.symmetry import symmetry_matrices

from .selection import keep_mask

__all__ = ["Make3D", "make3d", "good_size"]


@dataclass(frozen=True)
class Make3D:
    """volume (n, n, n) float32; used (M,) bool, the classes inserted in the last pass."""

    volume: np.ndarray
    used: np.ndarray


def good_size(n: int) -> int:
    """The smallest even box >= n whose prime factors are 2, 3, 5, 7 (FFT-friendly, as
    EMAN2's ``good_size``)."""
    m = max(2, int(np.ceil(n)))
    while True:
        if m % 2 == 0:
            r = m
            for p in (2, 3, 5, 7):
                while r % p == 0:
                    r //= p
            if r == 1:
                return m
        m += 1


def _edge_centre(a: np.ndarray) -> np.ndarray:
    edge = np.concatenate([a[:, 0], a[:, -1], a[:, 1:-1, 0], a[:, 1:-1, -1]], axis=1)
    return (a - edge.mean(axis=1)[:, None, None]).astype(np.float32)


def _fit(img: np.ndarray, proj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: least-squares scale s with img ~ s * proj (+ offset) and Pearson r."""
    x = img.reshape(img.shape[0], -1).astype(np.float64)
    y = proj.reshape(proj.shape[0], -1).astype(np.float64)
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    sxy, sxx, syy = (x * y).sum(1), (x * x).sum(1), (y * y).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(syy > 0, sxy / syy, 1.0)
        r = np.where(sxx * syy > 0, sxy / np.sqrt(sxx * syy), 0.0)
    return scale, r


def make3d(averages, eulers, weights, *, quality=None, keep: float = 0.8, keepsig: bool = False,
           pad=None, symmetry: str = "c1", iterations: int = 2, mask=None,
           pixel_size: float = 1.0) -> Make3D:  # fmt: skip
    """Reconstruct a map from class averages (see the module notes).

    Parameters
    ----------
    averages : (M, n, n) class averages
    eulers : (M, 3) RELION ZYZ degrees of each average's projection
    weights : (M,) ptcl_repr; 0 skips a class
    quality : (M,) optional class_qual (larger is better; NaN = unusable)
    keep, keepsig : :func:`.selection.keep_mask` on ``-quality`` (or on the agreement)
    pad : int >= n, padded box in pixels (None: good_size(1.3 n))
    symmetry : point group symbol (EMAN2 axes)
    iterations : passes >= 1
    mask : (n, n, n) optional, multiplies the volume before re-projection (itermask)
    pixel_size : A per pixel (unused by the result; kept for the shared signature)

    Returns
    -------
    Make3D
    """
    img = np.asarray(averages, dtype=np.float32)
    if img.ndim != 3 or img.shape[1] != img.shape[2]:
        raise ValueError(f"averages: need (M, n, n), got {img.shape}")
    mcount, n = img.shape[0], img.shape[1]
    e = np.asarray(eulers, dtype=np.float64)
    if e.shape != (mcount, 3):
        raise ValueError(f"eulers: need shape ({mcount}, 3), got {e.shape}")
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (mcount,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights: need {mcount} finite values >= 0")
    if int(iterations) < 1:
        raise ValueError(f"iterations: must be >= 1, got {iterations}")
    p = good_size(1.3 * n) if pad is None else int(pad)
    if p < n:
        raise ValueError(f"pad: must be >= the box {n}, got {pad}")
    if mask is not None and np.shape(mask) != (n, n, n):
        raise ValueError(f"mask: need shape {(n, n, n)}, got {np.shape(mask)}")
    sym = symmetry_matrices(symmetry)
    rot = euler_zyz_to_matrix(e)
    img = _edge_centre(img)
    usable = w > 0
    used = usable.copy()
    if quality is not None:
        q = np.asarray(quality, dtype=np.float64).reshape(-1)
        if q.shape != (mcount,):
            raise ValueError(f"quality: need {mcount} values")
        sel = usable & np.isfinite(q)
        used = np.zeros(mcount, bool)
        used[sel] = keep_mask(-q[sel], keep, keepsig=keepsig)
    scale = np.ones(mcount)
    volume = np.zeros((n, n, n), np.float32)
    for it in range(int(iterations)):
        if it > 0 and usable.any():
            ref = volume if mask is None else volume * np.asarray(mask, np.float32)
            idx = np.flatnonzero(usable)
            proj = project_fourier(ref, rot[idx])
            s, r = _fit(img[idx], proj)
            scale[idx] = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 1.0)
            if quality is None:
                used = np.zeros(mcount, bool)
                used[idx] = keep_mask(-r, keep, keepsig=keepsig)
        ins = np.flatnonzero(used)
        if ins.size == 0:
            break
        acc = insert_images(img[ins] * scale[ins, None, None].astype(np.float32), rot[ins],
                            weights=w[ins], subset=np.ones(ins.size, np.int64), symmetry=sym,
                            pad=p / n)  # fmt: skip
        volume = finish_reconstruction(acc).volume
    return Make3D(volume.astype(np.float32), used)
