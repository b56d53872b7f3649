"""Image processors and averagers of e2classaverage (EMAN2 facts §3.7), batched over stacks.

Stacks are (K, n, n) float32, square even boxes, centre n//2; Fourier arrays are rfft
half-grids (K, n, n//2+1) with DC at [0, 0]; radii in pixels.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from emforge.numerics import fft as _fft

from ._transform2d import transform_stack

__all__ = [
    "AVERAGERS",
    "NORMPROCS",
    "normalize_stack",
    "circlemean",
    "gaussian_edge",
    "decay_edge",
    "reference_filter",
    "average_groups",
    "transform_ctf",
    "match_structure_factor",
]

AVERAGERS = ("mean", "ctf.weight", "ctf.auto")
NORMPROCS = ("edgemean", "normalize", None)


def _radius(n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    return np.sqrt(xx * xx + yy * yy)


def _std(a: np.ndarray) -> np.ndarray:
    s = a.std(axis=(1, 2), keepdims=True)
    return np.where(s > 0, s, 1.0)


def normalize_stack(a: np.ndarray, normproc: str | None) -> np.ndarray:
    """EMAN2 ``normalize.edgemean`` (``(x - mean of the 1-pixel border) / std``),
    ``normalize`` (``(x - mean) / std``) or None (unchanged). float32 copy."""
    if normproc not in NORMPROCS:
        raise ValueError(f"normproc: must be one of {NORMPROCS}, got {normproc!r}")
    a = np.array(a, dtype=np.float32)
    if normproc is None:
        return a
    if normproc == "normalize":
        m = a.mean(axis=(1, 2), keepdims=True)
    else:
        edge = np.concatenate([a[:, 0], a[:, -1], a[:, 1:-1, 0], a[:, 1:-1, -1]], axis=1)
        m = edge.mean(axis=1)[:, None, None]
    return ((a - m) / _std(a)).astype(np.float32)


def circlemean(a: np.ndarray, radius: float) -> np.ndarray:
    """EMAN2 ``normalize.circlemean``: subtract the mean of the 2-pixel ring
    ``radius <= r < radius + 2`` (the whole image if that ring is empty), divide by the std."""
    n = a.shape[1]
    r = _radius(n)
    ring = (r >= radius) & (r < radius + 2)
    m = a[:, ring].mean(axis=1) if ring.any() else a.mean(axis=(1, 2))
    return ((a - m[:, None, None]) / _std(a)).astype(np.float32)


def gaussian_edge(n: int, inner: float, width: float) -> np.ndarray:
    """EMAN2 ``mask.gaussian``: 1 for r <= inner, ``exp(-((r - inner) / width)^2)`` beyond."""
    r = _radius(n)
    return np.where(r <= inner, 1.0, np.exp(-(((r - inner) / max(width, 1e-6)) ** 2)))


def decay_edge(a: np.ndarray) -> np.ndarray:
    """e2classaverage ``--decayedge``: circlemean at n/2 - n/15, then a Gaussian edge from
    there with width n/20."""
    n = a.shape[1]
    inner = n / 2 - n / 15
    return (circlemean(a, inner) * gaussian_edge(n, inner, n / 20)).astype(np.float32)


def _auto2d(img: np.ndarray, gmw: int) -> np.ndarray:
    """A 2-D ``mask.auto2d`` (sigma 0.2, nmaxseed 10, nshells gmw-2, nshellsgauss gmw): the
    4-connected regions above mean + 0.2 std holding one of the 10 highest pixels, dilated by
    gmw - 2 pixels, with a Gaussian fall-off ``exp(-(d / gmw)^2)`` outside (d = distance)."""
    thr = img.mean() + 0.2 * img.std()
    above = img > thr
    if not above.any():
        return np.ones_like(img)
    lab, _ = ndimage.label(above)
    top = np.argsort(img, axis=None)[-10:]
    ids = np.unique(lab.ravel()[top])
    region = np.isin(lab, ids[ids > 0])
    if gmw - 2 > 0:
        region = ndimage.binary_dilation(region, iterations=gmw - 2)
    d = ndimage.distance_transform_edt(~region)
    return np.exp(-((d / gmw) ** 2)).astype(np.float32)


def reference_filter(a: np.ndarray, *, automask: bool = False) -> np.ndarray:
    """The processing of each new reference between class-averaging passes (facts §3.7):
    gmw = max(5, n // 12); circlemean at n/2 - gmw; Gaussian edge (inner n/2 - gmw, width
    gmw / 1.3), or with ``automask`` the :func:`_auto2d` mask."""
    n = a.shape[1]
    gmw = max(5, n // 12)
    out = circlemean(a, n / 2 - gmw)
    if automask:
        return np.stack([x * _auto2d(x, gmw) for x in out]).astype(np.float32)
    return (out * gaussian_edge(n, n / 2 - gmw, gmw / 1.3)).astype(np.float32)


@lru_cache(maxsize=8)
def _ctf_maps(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat gathers: half grid -> full centred grid (CTF(-k) = CTF(k)), and back."""
    k = np.arange(n) - n // 2
    ky, kx = np.meshgrid(k, k, indexing="ij")
    flip = kx < 0
    row = np.where(flip, -ky, ky) % n
    to_full = (row * (n // 2 + 1) + np.abs(kx)).ravel()
    hy = np.fft.fftfreq(n) * n
    hy, hx = np.meshgrid(hy.astype(int), np.arange(n // 2 + 1), indexing="ij")
    nyq = hx == n // 2  # +Nyquist column: read its mate (-k) on the centred grid's -n/2 column
    y = np.where(nyq, -hy, hy) % n
    y = (y + n // 2) % n
    x = np.where(nyq, 0, hx + n // 2)
    return to_full, (y * n + x).ravel()


def transform_ctf(ctf: np.ndarray, angle, mirror) -> np.ndarray:
    """The CTF of an image after the alignment (angle, mirror) (shifts do not change it):
    the half-grid CTF is expanded to the full centred grid (CTF(-k) = CTF(k)), rotated and
    mirrored like the image, and cut back to the half grid. (K, n, n//2+1) float32."""
    c = np.asarray(ctf, dtype=np.float32)
    k, n = c.shape[0], c.shape[1]
    to_full, back = _ctf_maps(n)
    full = c.reshape(k, -1)[:, to_full].reshape(k, n, n)
    rot = transform_stack(full, angle, 0.0, 0.0, mirror)
    return rot.reshape(k, -1)[:, back].reshape(c.shape)


def _group_sum(x: np.ndarray, groups: np.ndarray, inc: np.ndarray, m: int) -> np.ndarray:
    """Sum of the rows x[k] with inc[k] per group: (m, *x.shape[1:]) (zeros where empty)."""
    sel = np.flatnonzero(inc)
    out = np.zeros((m, *x.shape[1:]), dtype=x.dtype)
    if sel.size == 0:
        return out
    order = sel[np.argsort(groups[sel], kind="stable")]
    gs = groups[order]
    starts = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
    out[gs[starts]] = np.add.reduceat(x[order], starts, axis=0)
    return out


def _ring_index(n: int) -> np.ndarray:
    ky = np.fft.fftfreq(n) * n
    kx = np.arange(n // 2 + 1)
    return np.rint(np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)).astype(np.int64)


def match_structure_factor(images, references) -> np.ndarray:
    """EMAN2 ``filter.matchto``: scale every Fourier ring (``round(|k|)``) of image k so that
    its power equals reference k's (rings where either has no power are left alone).
    (K, n, n) float32."""
    a = np.asarray(images, dtype=np.float32)
    r = np.asarray(references, dtype=np.float32)
    n = a.shape[1]
    ring = _ring_index(n).ravel()
    herm = np.broadcast_to(np.r_[1.0, np.full(n // 2 - 1, 2.0), 1.0], (n, n // 2 + 1)).ravel()
    fa = _fft.rfftn(a, axes=(-2, -1)).reshape(a.shape[0], -1)
    fr = _fft.rfftn(r, axes=(-2, -1)).reshape(r.shape[0], -1)
    nr = ring.max() + 1

    def power(f):
        return np.stack([np.bincount(ring, np.abs(x) ** 2 * herm, nr) for x in f])

    pa, pr = power(fa), power(fr)
    gain = np.sqrt(np.divide(pr, pa, out=np.ones_like(pa), where=(pa > 0) & (pr > 0)))
    out = (fa * gain[:, ring]).reshape(a.shape[0], n, n // 2 + 1).astype(np.complex64)
    return _fft.irfftn(out, shape=a.shape, axes=(-2, -1)).astype(np.float32)


def average_groups(images, groups, ngroups: int, *, included=None, ctf=None,
                   averager: str = "mean") -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Average aligned images by group (class), EMAN2's averagers (facts §3.7).

    Parameters
    ----------
    images : (K, n, n) aligned images (phase-flipped when ``ctf`` is given)
    groups : int (K,) group of each image in [0, ngroups)
    included : bool (K,), optional (default all)
    ctf : (K, n, n//2+1), the images' CTF values in the aligned frame (needed by ctf.*)
    averager : ``mean``: sum / count. ``ctf.weight``: F = sum F_i |CTF_i| / sum CTF_i^2 (with
        phase-flipped F_i this is sum F_raw,i CTF_i / sum CTF_i^2, the CTF-corrected
        least-squares average; EMAN2 multiplies flipped data by CTF^2, which leaves a |CTF|
        envelope, see docs); the denominator is floored at 1e-4 per image.
        ``ctf.auto``: F = sum F_i SNR_i / max(|CTF_i|, 0.05) / max(sum SNR_i, 0.05), zero
        beyond radius (n-2)/2, with SNR_i = CTF_i^2 S(ring) / N_i(ring) (SNR <= 0 -> 0.001):
        S the ring power of the group's ctf.weight average, N_i the ring power of image i's
        residual from it (EMAN2 reads SNR curves from the CTF fit; here they are estimated
        from the group, so noisier images weigh less).

    Returns
    -------
    (averages (ngroups, n, n) float32, zeros for empty groups; counts (ngroups,) int64)
    """
    a = np.asarray(images, dtype=np.float32)
    g = np.asarray(groups, dtype=np.int64).reshape(-1)
    k, n = a.shape[0], a.shape[1]
    inc = np.ones(k, bool) if included is None else np.asarray(included, bool).reshape(-1)
    if averager not in AVERAGERS:
        raise ValueError(f"averager: must be one of {AVERAGERS}, got {averager!r}")
    counts = np.bincount(g[inc], minlength=ngroups).astype(np.int64)

    def gsum(x):
        return _group_sum(x, g, inc, ngroups)

    if averager == "mean":
        s = gsum(a.reshape(k, -1)).astype(np.float64)
        avg = s / np.maximum(counts, 1)[:, None]
        return avg.reshape(ngroups, n, n).astype(np.float32), counts
    if ctf is None:
        raise ValueError(f"ctf: the {averager} averager needs the images' CTF")
    c = np.asarray(ctf, dtype=np.float32)
    if c.shape != (k, n, n // 2 + 1):
        raise ValueError(f"ctf: need shape {(k, n, n // 2 + 1)}, got {c.shape}")
    f = _fft.rfftn(a, axes=(-2, -1)).reshape(k, -1)
    c2 = (c * c).reshape(k, -1)
    ac = np.abs(c).reshape(k, -1)
    num = gsum(f * ac)
    den = np.maximum(gsum(c2), 1e-4 * np.maximum(counts, 1)[:, None])
    fw = num / den
    if averager == "ctf.auto":
        ring = _ring_index(n).ravel()
        nr = ring.max() + 1
        cnt = np.bincount(ring, minlength=nr)
        onehot = sp.csr_matrix((np.ones(ring.size), (np.arange(ring.size), ring)),
                               shape=(ring.size, nr))  # fmt: skip
        sig = (onehot.T @ (np.abs(fw) ** 2).T).T / cnt  # (G, rings)
        res = f - ac * fw[g]
        noise = (onehot.T @ (np.abs(res) ** 2).T).T / cnt  # (K, rings)
        floor = 1e-6 * np.maximum(noise.mean(1, keepdims=True), 1e-30) + 1e-30
        snr = c2 * (sig[g] / np.maximum(noise, floor))[:, ring]
        snr = np.where(snr <= 0, 0.001, snr)
        num = gsum(f * (snr / np.maximum(ac, 0.05)))
        den = np.maximum(gsum(snr), 0.05)
        fw = np.where(ring[None] <= (n - 2) / 2, num / den, 0.0)
    fw = np.where(counts[:, None] > 0, fw, 0.0).reshape(ngroups, n, n // 2 + 1)
    avg = _fft.irfftn(fw.astype(np.complex64), shape=(ngroups, n, n), axes=(-2, -1))
    return avg.astype(np.float32), counts
