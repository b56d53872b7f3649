"""Gold-standard post-processing of two half maps (EMAN2 ``e2refine_postprocess``, facts §3.9).

Conventions: maps (n, n, n) float32, centre n//2, pixel size in A; FSC shells ``round(|k|)``
(:func:`emforge.numerics.fsc`), ``s`` in 1/A with s[0] = 0 (DC); resolutions in A.

Steps:

1. Unmasked FSC of even and odd.
2. The mean of the halves is Wiener-filtered by that FSC (:func:`wiener_byfsc`, snrmult 2;
   with ``target_resolution`` the filter is at its floor beyond 1/target) and
   edge-normalised: the map the automask is computed from.
3. Mask: ``mask`` if given; else ``automask`` = a dict of :func:`emforge.protocols.automask
   .kernels.auto3d` keywords (threshold, radius, nshells, nshellsgauss, nmaxseed: the five
   automask3d values) applied to the filtered mean map; else EMAN2's automatic parameters
   (:func:`~emforge.protocols.automask.kernels.auto_mask` at the target resolution, or at the
   unmasked resolution when no target is given); ``automask=False`` uses no mask (all ones).
4. Masked FSC of the unfiltered halves; resolution at 0.143 by :func:`eman_resolution`.
5. Output even / odd / combined: the unfiltered maps Wiener-filtered by the masked FSC
   (snrmult 2), the combined one symmetrised (mean over the group), edge-normalised, times the
   mask (these seed the next iteration).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emforge.numerics import fft as _fft
from emforge.numerics.align3d import rotate_volume
from emforge.numerics.fourier import fsc as _fsc
from emforge.numerics.fourier import shell_index_rfft
from emforge.numerics.symmetry import symmetry_matrices

__all__ = ["GoldStandard", "gold_standard_postprocess", "eman_resolution", "wiener_byfsc"]


@dataclass(frozen=True)
class GoldStandard:
    """Result of :func:`gold_standard_postprocess` (maps (n, n, n) float32; curves (n//2+1,))."""

    even: np.ndarray
    odd: np.ndarray
    combined: np.ndarray
    mask: np.ndarray
    s: np.ndarray
    fsc_unmasked: np.ndarray
    fsc_masked: np.ndarray
    resolution: float
    resolution_unmasked: float


def eman_resolution(s, fsc, threshold: float = 0.143) -> float:
    """Resolution (A) where the FSC crosses ``threshold``, by e2refine_easy's rule.

    The rows are those of EMAN2's FSC file (r = 1 .. n/2; a leading DC row with s = 0 is
    dropped first). Scan si = 2 .. len - 3 for the first ``F[si-1] > t >= F[si]``; then
    ``frac = (t - F[si]) / (F[si-1] - F[si])`` and the resolution is
    ``1 / (s[si] (1 - frac) + s[si-1] frac)``. No crossing: ``1 / s[-1]`` when the curve is
    still above the threshold at the end of the scan, else ``inf`` (never above it).
    """
    f = np.asarray(fsc, dtype=np.float64).reshape(-1)
    q = np.asarray(s, dtype=np.float64).reshape(-1)
    if f.shape != q.shape or f.size < 2:
        raise ValueError("fsc: must be 1D and as long as s")
    if q[0] == 0:
        f, q = f[1:], q[1:]
    t = float(threshold)
    for si in range(2, f.size - 2):
        if f[si - 1] > t and f[si] <= t:
            frac = (t - f[si]) / (f[si - 1] - f[si])
            return float(1.0 / (q[si] * (1 - frac) + q[si - 1] * frac))
    if f.size >= 3 and f[f.size - 3] > t:
        return float(1.0 / q[-1])
    return float("inf")


def _fsc_for_filter(fsc: np.ndarray) -> np.ndarray:
    """EMAN2's clean-up: from the first shell i > 2 with FSC < 0 on, a 5-point running mean;
    once that is <= 0, 1e-5 from there to the end."""
    f = np.asarray(fsc, dtype=np.float64).copy()
    neg = np.flatnonzero((np.arange(f.size) > 2) & (f < 0))
    if neg.size:
        i0 = neg[0]
        pad = np.pad(fsc, 2, mode="edge")
        run = np.convolve(pad, np.ones(5) / 5, mode="valid")
        f[i0:] = run[i0:]
        bad = np.flatnonzero(f[i0:] <= 0)
        if bad.size:
            f[i0 + bad[0] :] = 1e-5
    return np.clip(f, 1e-5, 0.99999)


def wiener_byfsc(volume, fsc, *, snrmult: float = 2.0, maxfreq_shell=None) -> np.ndarray:
    """EMAN2 ``filter.wiener.byfsc``: per shell snr = snrmult F / (1 - F),
    W = snr^2 / (snr^2 + 1), floored at 0.001 (also beyond ``maxfreq_shell``, in Fourier px).

    volume (n, n, n); fsc (n//2+1,) per shell round(|k|); shells beyond the curve get the floor.
    """
    v = np.asarray(volume, dtype=np.float32)
    f = _fsc_for_filter(np.asarray(fsc, dtype=np.float64))
    snr = snrmult * f / (1 - f)
    w = np.maximum(snr**2 / (snr**2 + 1), 0.001)
    if maxfreq_shell is not None:
        w[np.arange(w.size) > maxfreq_shell] = 0.001
    sh = shell_index_rfft(v.shape)
    wf = np.append(w, 0.001)[np.minimum(sh, w.size)]
    out = _fft.irfftn(_fft.rfftn(v) * wf.astype(np.float32), shape=v.shape)
    return out.astype(np.float32)


def _edge_normalize(v: np.ndarray) -> np.ndarray:
    faces = np.concatenate([v[0].ravel(), v[-1].ravel(), v[:, 0].ravel(), v[:, -1].ravel(),
                            v[:, :, 0].ravel(), v[:, :, -1].ravel()])  # fmt: skip
    sd = v.std()
    return ((v - faces.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32)


def _symmetrize(v: np.ndarray, symmetry: str) -> np.ndarray:
    mats = symmetry_matrices(symmetry)
    if mats.shape[0] == 1:
        return v
    return (sum(rotate_volume(v, s) for s in mats) / mats.shape[0]).astype(np.float32)


def _mask(combined, mask, automask, pixel_size, res):
    n = combined.shape[0]
    if mask is not None:
        m = np.asarray(mask, dtype=np.float32)
        if m.shape != combined.shape:
            raise ValueError(f"mask: need shape {combined.shape}, got {m.shape}")
        return m
    if automask is False:
        return np.ones((n, n, n), np.float32)
    from emforge.protocols.automask.kernels import auto3d, auto_mask

    if isinstance(automask, dict):
        keys = {"threshold", "radius", "nshells", "nshellsgauss", "nmaxseed", "sigma"}
        bad = set(automask) - keys
        if bad:
            raise ValueError(f"automask: unknown keys {sorted(bad)}; use {sorted(keys)}")
        return auto3d(combined, **automask).astype(np.float32)
    if automask is not None:
        raise ValueError("automask: must be None, False or a dict of auto3d parameters")
    r = res if np.isfinite(res) else 4.0 * pixel_size
    return auto_mask(combined, pixel_size=pixel_size, resolution=max(r, 2.0 * pixel_size))[0]


def gold_standard_postprocess(even, odd, *, pixel_size: float, target_resolution=None,
                              mask=None, automask=None, symmetry: str = "c1") -> GoldStandard:  # fmt: skip
    """e2refine_postprocess on two independent half maps (see the module notes).

    Parameters
    ----------
    even, odd : (n, n, n) half maps
    pixel_size : A per pixel
    target_resolution : A, optional (the first filter's maxfreq; the automask's resolution)
    mask : (n, n, n) optional, used as is
    automask : None (EMAN2 automatic parameters), False (no mask) or a dict of auto3d keywords
    symmetry : point group of the combined map

    Returns
    -------
    GoldStandard
    """
    e = np.asarray(even, dtype=np.float32)
    o = np.asarray(odd, dtype=np.float32)
    if e.ndim != 3 or len(set(e.shape)) != 1 or e.shape != o.shape:
        raise ValueError(f"odd: need two cubic maps of one shape, got {e.shape} and {o.shape}")
    if not pixel_size > 0:
        raise ValueError(f"pixel_size: must be > 0, got {pixel_size}")
    n = e.shape[0]
    s, f_un = _fsc(e, o, pixel_size=pixel_size)
    res_un = eman_resolution(s, f_un)
    maxshell = None
    if target_resolution is not None:
        if not target_resolution > 0:
            raise ValueError(f"target_resolution: must be > 0 A, got {target_resolution}")
        maxshell = n * pixel_size / float(target_resolution)
    comb_f = _edge_normalize(wiener_byfsc((e + o) / 2, f_un, maxfreq_shell=maxshell))
    res_for_mask = float(target_resolution) if target_resolution is not None else res_un
    m = _mask(comb_f, mask, automask, pixel_size, res_for_mask)
    _, f_m = _fsc(e, o, pixel_size=pixel_size, mask=m)
    res_m = eman_resolution(s, f_m)

    def final(v, sym=False):
        x = wiener_byfsc(v, f_m)
        return (_edge_normalize(_symmetrize(x, symmetry) if sym else x) * m).astype(np.float32)

    return GoldStandard(final(e), final(o), final((e + o) / 2, True), m, s, f_un, f_m, res_m,
                        res_un)  # fmt: skip
