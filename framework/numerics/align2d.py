"""2D alignment: EMAN2's ``rotate_translate_flip``, batched N x M (``refine`` is :mod:`.refine2d`).

Conventions
-----------
* Images are (y, x) arrays, stacks (n, y, x), square boxes of even size; the rotation centre is
  the box centre ``n // 2``. A point (x, y) is (column, row); angles are in degrees,
  counter-clockwise from +x towards +y.
* An alignment (angle, dx, dy, mirror) brings the **particle onto the reference**:
  first, if ``mirror``, x -> -x about the centre (EMAN2's x-flip); then a rotation by ``angle``
  about the centre; then a translation by (dx, dy) pixels (of the input box). The aligned
  image is ``aligned(T r) = particle(r)`` with ``T r = R(angle) M r + (dx, dy)``
  (:func:`transform_images_2d` applies it).
* Relation to RELION: a particle with pose (rot, tilt, psi0 + a) and origin o (pixels,
  ``rlnOriginX/Y``) against a reference projected at (rot, tilt, psi0) aligns with
  ``angle = a`` and ``(dx, dy) = R(a) o`` (so ``o = R(-a) (dx, dy)``); see docs/conventions.md.
* Scores follow EMAN2: ``score`` is ``-ccc`` of the aligned particle with the reference
  (smaller is better, -1 = identical), see :mod:`.compare`.
* Rotational search (EMAN2 ``rotational``): a translation-invariant footprint, the Fourier
  amplitude on polar rings, gives the angle modulo 180 degrees with a 1-D circular CCF; both
  the angle and angle + 180 are then tried with a translational CCF (integer peak within
  +-maxshift, refined to sub-pixel by a parabola), for the particle and its mirror image; the
  lowest score wins. Rotations are bilinear, on a grid of ``180 / nang`` degree steps.
* Implementation: per particle, the spectra of its ``nang`` rotations (and of its mirror) are
  made once; per pair, a compiled kernel (:mod:`._align_kernels`) forms the four CCF spectra
  (mirror x turn) straight into reused FFTW buffers, the inverse FFT is pruned to the
  2 ms + 3 rows around zero shift that the peak search reads, and the peak search with its
  parabola is compiled too. Results equal the plain numpy formulation to float32 rounding.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from . import fft as _fft

__all__ = ["Alignment2D", "rotate_translate_flip", "transform_images_2d",
           "fourier_shrink_2d"]  # fmt: skip


@dataclass(frozen=True)
class Alignment2D:
    """Alignment parameters, arrays of one shape ((N, M) per pair, or (N,) per particle).

    ``angle`` degrees in [0, 360); ``dx``, ``dy`` pixels of the input box; ``mirror`` bool;
    ``score`` = -ccc (EMAN2 sign); ``reference`` the reference index (per-particle results).
    """

    angle: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    mirror: np.ndarray
    score: np.ndarray
    reference: np.ndarray | None = None

    @classmethod
    def of(cls, angle, dx, dy, mirror, score, *, scale: float = 1.0) -> Alignment2D:
        """Alignment from raw arrays: angle mod 360, shifts times ``scale`` (e.g. a shrink
        factor back to input pixels), float32 values and bool mirrors."""
        return cls((np.asarray(angle) % 360.0).astype(np.float32),
                   (np.asarray(dx) * scale).astype(np.float32),
                   (np.asarray(dy) * scale).astype(np.float32), np.asarray(mirror, bool),
                   np.asarray(score).astype(np.float32))  # fmt: skip

    def best(self) -> Alignment2D:
        """The lowest-score reference of every particle, as (N,) arrays."""
        if self.score.ndim != 2:
            raise ValueError("best: needs the (N, M) per-pair result")
        j = np.argmin(self.score, axis=1)
        n = np.arange(j.size)
        pick = [getattr(self, f)[n, j] for f in ("angle", "dx", "dy", "mirror", "score")]
        return Alignment2D(*pick, reference=j)


def map_chunks(fn, items, workers: int) -> list:
    """``[fn(i) for i in items]``, on ``workers`` threads when more than one (kernels release
    the GIL), in the order of ``items``."""
    items = list(items)
    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))
    return [fn(i) for i in items]


def _stack(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    a = a[None] if a.ndim == 2 else a
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] % 2 or a.shape[1] < 8:
        raise ValueError(f"{name}: need square even boxes >= 8, (n, y, x); got {a.shape}")
    return a


def fourier_shrink_2d(images, shrink: int) -> np.ndarray:
    """Fourier-crop a stack (n, y, x) by an integer factor to (n, y/shrink, x/shrink), float32.

    The box centre stays the centre; values keep their scale (a constant stays that constant).
    """
    a = _stack(images, "images")
    s = int(shrink)
    if s < 1 or a.shape[1] % (2 * s):
        raise ValueError(f"shrink: must be an integer >= 1 dividing half the box, got {shrink}")
    if s == 1:
        return a
    n, m = a.shape[1], a.shape[1] // s
    f = _fft.rfftn(a, axes=(-2, -1))
    rows = np.r_[0 : m // 2, n - m // 2 : n]
    g = f[:, rows, : m // 2 + 1].copy()
    g[:, m // 2, :] = 0  # the cropped Nyquist row has no Hermitian partner
    return (_fft.irfftn(g, shape=(a.shape[0], m, m), axes=(-2, -1)) / (s * s)).astype(np.float32)


def _bilinear_operator(coords_y, coords_x, n: int) -> sp.csr_matrix:
    """Sparse (P, n*n) matrix sampling an n x n image bilinearly at (coords_y, coords_x)."""
    y0, x0 = np.floor(coords_y), np.floor(coords_x)
    fy, fx = coords_y - y0, coords_x - x0
    rows, cols, vals = [], [], []
    p = np.arange(coords_y.size)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = (y0 + dy).astype(np.int64), (x0 + dx).astype(np.int64)
            ok = (yy >= 0) & (yy < n) & (xx >= 0) & (xx < n) & (wy * wx > 0)
            rows.append(p[ok])
            cols.append(yy[ok] * n + xx[ok])
            vals.append((wy * wx)[ok])
    shape = (coords_y.size, n * n)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=shape, dtype=np.float32)  # fmt: skip


@lru_cache(maxsize=8)
def _rotation_operator(n: int, nang: int) -> sp.csr_matrix:
    """Rotations by j * 180/nang degrees, j < nang, stacked: (nang*n*n, n*n)."""
    c = n // 2
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) - c
    out = []
    for j in range(nang):
        t = np.radians(j * 180.0 / nang)  # aligned(r') = particle(R(-t) r')
        sx = np.cos(t) * xx + np.sin(t) * yy + c
        sy = -np.sin(t) * xx + np.cos(t) * yy + c
        out.append(_bilinear_operator(sy.ravel(), sx.ravel(), n))
    return sp.vstack(out).tocsr()


@lru_cache(maxsize=8)
def _polar_operator(n: int, nang: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Polar sampling of a centred n x n amplitude on rings 2..n/2-1 and angles j*180/nang."""
    radii = np.arange(2, n // 2, dtype=np.float64)
    t = np.radians(np.arange(nang) * 180.0 / nang)
    ky = radii[:, None] * np.sin(t)[None] + n // 2
    kx = radii[:, None] * np.cos(t)[None] + n // 2
    return _bilinear_operator(ky.ravel(), kx.ravel(), n), radii


def _mirror(a: np.ndarray) -> np.ndarray:
    """x -> -x about the centre n//2 (index i -> (n - i) % n)."""
    return np.roll(a[..., ::-1], 1, axis=-1)


def _footprints(a: np.ndarray, nang: int, threads: int | None = None) -> np.ndarray:
    """Angular rfft of the polar Fourier amplitude, ring means removed: (n, rings, nang//2+1)."""
    n = a.shape[1]
    amp = np.abs(
        np.fft.fftshift(
            _fft.fftn(a - a.mean((1, 2), keepdims=True), axes=(1, 2), threads=threads), axes=(1, 2)
        )
    )
    op, radii = _polar_operator(n, nang)
    pol = (op @ amp.reshape(a.shape[0], -1).T).T.reshape(a.shape[0], radii.size, nang)
    pol = pol - pol.mean(-1, keepdims=True)
    pol *= np.sqrt(radii)[None, :, None]  # area weight of a ring: sum_r r (A . B) over theta
    return _fft.rfftn(pol, axes=(-1,), threads=threads).astype(np.complex64)


def _rotated_spectra(a: np.ndarray, nang: int, threads: int, angles=None):
    """Spectra of the particles rotated by j*180/nang (all j < nang, or the j in ``angles``),
    DC removed, and their energies: (k, nj, P) kx-major, (k, nj)."""
    from . import _align_kernels as _k

    n = a.shape[1]
    op = _rotation_operator(n, nang)
    blocks = np.arange(nang) if angles is None else np.asarray(angles, np.int64)
    nj = blocks.size
    rot = np.empty((a.shape[0], nj, n * n), np.float32)
    flat = np.ascontiguousarray(a.reshape(a.shape[0], -1), dtype=np.float32)
    for i in range(a.shape[0]):
        _k.csr_block_matvec(op.indptr, op.indices, op.data, flat[i], blocks, n * n, rot[i])
    rot = rot.reshape(a.shape[0], nj, n, n)
    f = _fft.rfftn(rot, axes=(-2, -1), threads=threads, planner_effort="FFTW_ESTIMATE")
    f[..., 0, 0] = 0
    herm = np.full(n // 2 + 1, 2.0, np.float32)
    herm[[0, -1]] = 1.0
    energy = (np.abs(f) ** 2 * herm).sum((-2, -1)) / (n * n)
    # kx-major (transposed) layout: the CCF's inverse FFT runs along contiguous ky first
    return np.ascontiguousarray(f.transpose(0, 1, 3, 2)).reshape(a.shape[0], nj, -1), energy


class _Workspace:
    """Buffers and plans of the pruned inverse FFT of ``nbatch`` CCF spectra of box n: the
    complex inverse along y, then the real inverse along x of the 2 ms + 3 rows around zero
    shift only (all that the peak search reads). ``run`` leaves ``scale`` times the CCF
    rows in ``out`` (FFTW's unnormalised transforms)."""

    def __init__(self, nbatch: int, n: int, ms: int):
        h, c = n // 2 + 1, n // 2
        self.rows = slice(c - ms - 1, c + ms + 2)
        self.n = n
        empty = _fft.pyfftw.empty_aligned if _fft.backend() == "pyfftw" else np.empty
        self.x = empty((nbatch, h, n), dtype=np.complex64)  # transposed spectra (kx, ky)
        self.z = empty((nbatch, h, n), dtype=np.complex64)
        self.out = empty((nbatch, n, 2 * ms + 3), dtype=np.float32)  # (x, y) window rows
        self.plans = None
        self.scale = 1.0
        if _fft.backend() == "pyfftw":
            fftw = _fft.pyfftw.FFTW
            flags = ("FFTW_MEASURE", "FFTW_DESTROY_INPUT")
            self.plans = (
                fftw(self.x, self.z, axes=(2,), direction="FFTW_BACKWARD", flags=flags,
                     threads=1),
                fftw(self.z[:, :, self.rows], self.out, axes=(1,), direction="FFTW_BACKWARD",
                     flags=flags, threads=1),
            )  # fmt: skip
            self.scale = float(n * n)

    def run(self) -> None:
        if self.plans is not None:
            self.plans[0].execute()
            self.plans[1].execute()
            return
        z = _fft.ifftn(self.x, axes=(2,), threads=1)
        self.out[...] = _fft.irfftn(np.ascontiguousarray(z[:, :, self.rows]),
                                    shape=self.out.shape, axes=(1,), threads=1)  # fmt: skip


_WORKSPACES: dict[tuple, list[_Workspace]] = {}
_WS_LOCK = threading.Lock()


def _reset_after_fork() -> None:  # a forked worker starts with its own, free pool
    global _WS_LOCK
    _WS_LOCK = threading.Lock()
    _WORKSPACES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _take_workspace(nbatch: int, n: int, ms: int) -> _Workspace:
    key = (nbatch, n, ms)
    with _WS_LOCK:
        free = _WORKSPACES.get(key)
        if free:
            return free.pop()
        if sum(len(v) for v in _WORKSPACES.values()) > 64:  # other shapes: let them go
            _WORKSPACES.clear()
    return _Workspace(nbatch, n, ms)


def _give_workspace(ws: _Workspace, key: tuple) -> None:
    with _WS_LOCK:
        _WORKSPACES.setdefault(key, []).append(ws)


def _footprint_angles(fp_a, fp_b, nang: int, threads: int = 1) -> np.ndarray:
    """Rotation index j (angle j*180/nang, modulo 180) of every (mirror, particle, reference)
    from the peak of the footprints' angular CCF: (m, Nc, Mc) int."""
    nmir, mc = fp_a.shape[0], fp_b.shape[2]
    fa = np.conj(fp_a).transpose(3, 0, 1, 2).reshape(fp_a.shape[3], -1, fp_a.shape[2])
    c = np.matmul(np.ascontiguousarray(fa), fp_b)  # fp_b (nf, rings, Mc)
    c = c.reshape(c.shape[0], nmir, -1, c.shape[2]).transpose(1, 2, 3, 0)
    pad = 16 * -(-mc // 16) - mc  # a few FFT shapes for reference subsets of any size
    if pad:
        c = np.concatenate([c, np.zeros((*c.shape[:2], pad, c.shape[3]), c.dtype)], axis=2)
    ccf = _fft.irfftn(c, shape=(*c.shape[:-1], nang), axes=(-1,), threads=threads)
    return np.argmax(ccf[:, :, :mc], axis=-1)


def _pairs(a_spec, a_energy, j, jidx, b_spec, b_energy, n: int, ms: int, nang: int):
    """Best of (mirror, angle, angle+180) for a chunk: arrays (Nc, Mc). ``j`` (m, Nc, Mc) the
    footprint angles, ``jidx`` where their rotations are on the angle axis of ``a_spec``
    (m, Nc, nj, P) and ``a_energy``; ``b_spec`` carries the checkerboard that puts the CCF's
    zero shift at n//2."""
    from . import _align_kernels as _k

    nmir, nc = a_spec.shape[:2]
    mc = b_spec.shape[0]
    nb = 2 * nmir * mc
    # workspaces come in batch sizes of whole blocks of 16 references, so that reference
    # subsets of every size (pairs=) share a few plans; the unused tail is transformed idly
    key = (2 * nmir * 16 * -(-mc // 16), n, ms)
    ws = _take_workspace(*key)
    sy, sx, peak = (np.empty(nb) for _ in range(3))
    ang, dx, dy, score = (np.empty((nc, mc)) for _ in range(4))
    mirror = np.empty((nc, mc), bool)
    cols = np.arange(mc)
    try:
        for i in range(nc):
            ji, ki = j[:, i], np.ascontiguousarray(jidx[:, i])
            _k.cross_products(a_spec[:, i], ki, b_spec, ws.x.reshape(ws.x.shape[0], -1))
            ws.run()
            _k.window_peaks(ws.out, ms, n // 2 - ms - 1, nb, sy, sx, peak)
            ea = a_energy[np.arange(nmir)[:, None], i, ki]  # (m, Mc)
            with np.errstate(invalid="ignore", divide="ignore"):
                sc = -(peak / ws.scale).reshape(2, nmir, mc) / np.sqrt(ea[None] * b_energy)
            sc = np.where(np.isfinite(sc), sc, 1e24).reshape(2 * nmir, mc)
            best = np.argmin(sc, axis=0)
            turn, mir = np.divmod(best, nmir)
            ang[i] = ji[mir, cols] * (180.0 / nang) + 180.0 * turn
            pick = best * mc + cols
            dx[i], dy[i], score[i] = sx[pick], sy[pick], sc.ravel()[pick]
            mirror[i] = mir.astype(bool)
    finally:
        _give_workspace(ws, key)
    return ang, dx, dy, mirror, score


def _particle_chunk(ai, refs, nang: int, ms: int, mstep: int, threads: int, flip: bool = True):
    """Align the particles ``ai`` (k, n, n) to all references; (k, M) arrays."""
    n = ai.shape[1]
    b_spec, b_energy, fp_b = refs
    both = np.stack([ai, _mirror(ai)]) if flip else ai[None]
    fp_a = np.stack([_footprints(x, nang, threads) for x in both])
    blocks = [slice(j, j + mstep) for j in range(0, b_spec.shape[0], mstep)]
    if ai.shape[0] == 1 and 2 * b_spec.shape[0] < nang:
        # few references: rotate the particle only to the angles their footprints chose
        j = _footprint_angles(fp_a, fp_b, nang, threads)
        uniq = [np.unique(j[mi, 0]) for mi in range(both.shape[0])]
        width = 16 * -(-max(u.size for u in uniq) // 16)  # a few FFT shapes: pad to 16s
        a_spec = np.empty((both.shape[0], 1, width, b_spec.shape[1]), np.complex64)
        a_energy = np.empty((both.shape[0], 1, width), np.float32)
        jidx = np.empty_like(j)
        for mi, u in enumerate(uniq):
            padded = np.concatenate([u, np.full(width - u.size, u[-1])])
            a_spec[mi], a_energy[mi] = _rotated_spectra(both[mi], nang, threads, angles=padded)
            jidx[mi, 0] = np.searchsorted(u, j[mi, 0])
        parts = [_pairs(a_spec, a_energy, j[:, :, b], jidx[:, :, b], b_spec[b], b_energy[b], n,
                        ms, nang) for b in blocks]  # fmt: skip
    else:
        spec_e = [_rotated_spectra(x, nang, threads) for x in both]
        a_spec = np.stack([sp_ for sp_, _ in spec_e])
        a_energy = np.stack([e for _, e in spec_e])
        parts = []
        for b in blocks:
            j = _footprint_angles(fp_a, fp_b[:, :, b], nang, threads)
            parts.append(_pairs(a_spec, a_energy, j, j, b_spec[b], b_energy[b], n, ms, nang))
    return [np.concatenate(v, axis=1) for v in zip(*parts, strict=True)]  # fmt: skip


def _reference_spectra(b: np.ndarray, nang: int):
    n = b.shape[1]
    bf = _fft.rfftn(b - b.mean((1, 2), keepdims=True), axes=(-2, -1))
    bf[:, 0, 0] = 0
    herm = np.full(n // 2 + 1, 2.0, np.float32)
    herm[[0, -1]] = 1.0
    energy = (np.abs(bf) ** 2 * herm).sum((-2, -1)) / (n * n)
    iy, ix = np.ogrid[0:n, 0 : n // 2 + 1]
    bf *= (1 - 2 * ((iy + ix) % 2)).astype(np.float32)  # CCF zero shift at n//2
    fp = np.ascontiguousarray(_footprints(b, nang).transpose(2, 1, 0))  # (nf, rings, M)
    return np.ascontiguousarray(bf.transpose(0, 2, 1)).reshape(b.shape[0], -1), energy, fp


def rotate_translate_flip(images, references, *, maxshift: float | None = None, shrink: int = 1,
                          nang: int = 180, chunk_pairs: int = 1024,
                          workers: int | None = None, flip: bool = True,
                          pairs=None) -> Alignment2D:  # fmt: skip
    """Align every image (particle) to every reference (EMAN2 ``rotate_translate_flip``).

    Parameters
    ----------
    images : array (N, y, x)
        Particles, square even box.
    references : array (M, y, x)
        Same box.
    maxshift : float, optional
        Largest |dx|, |dy| in pixels of the input box (default box/4, capped at box/2 - 2 of
        the shrunk box).
    shrink : int
        Fourier-crop both by this factor first (shifts are reported in input pixels).
    nang : int
        Angular samples over 180 degrees (default 180: 1 degree steps).
    chunk_pairs : int
        Pairs per batch (memory ~ chunk_pairs * 40 * box^2 / shrink^2 bytes per worker).
    workers : int, optional
        Threads working on chunks of particles in parallel (default: the FFT thread count,
        :func:`.fft.default_threads`); each runs its FFTs on one thread.
    flip : bool
        Also try the x-mirrored particle (default; EMAN2 ``rotate_translate_flip``). False:
        EMAN2 ``rotate_translate`` (``mirror`` always False).
    pairs : int array (N, K), optional
        Align particle i only to the references ``pairs[i]`` (entries -1: none; their result
        has score +inf and zero angle and shifts). The result is then (N, K), entry [i, k]
        for reference ``pairs[i, k]``.

    Returns
    -------
    Alignment2D with (N, M) arrays (or (N, K) with ``pairs``); ``.best()`` picks each
    particle's reference.
    """
    a = fourier_shrink_2d(_stack(images, "images"), shrink)
    b = fourier_shrink_2d(_stack(references, "references"), shrink)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"references: box {b.shape[1:]} differs from the images' {a.shape[1:]}")
    if int(nang) < 8 or int(chunk_pairs) < 1:
        raise ValueError("nang, chunk_pairs: nang must be >= 8 and chunk_pairs >= 1")
    nw = _fft.default_threads() if workers is None else int(workers)
    if nw < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    n, nm = a.shape[1], b.shape[0]
    ms = n // 4 if maxshift is None else int(np.floor(float(maxshift) / shrink))
    ms = int(np.clip(ms, 0, n // 2 - 2))
    refs = _reference_spectra(b, nang)
    if pairs is not None:
        pairs = np.asarray(pairs)
        if pairs.ndim != 2 or pairs.shape[0] != a.shape[0] or pairs.dtype.kind not in "iu":
            raise ValueError(f"pairs: need integer (N, K) = ({a.shape[0]}, K), got {pairs.shape}")
        if pairs.size and (pairs.max() >= nm or pairs.min() < -1):
            raise ValueError(f"pairs: reference indices must be -1 or in [0, {nm})")
        return _aligned_pairs(a, refs, pairs, int(nang), ms, int(chunk_pairs), nw, bool(flip),
                              shrink)  # fmt: skip
    mstep = max(1, min(nm, int(chunk_pairs)))
    # few references: one particle at a time, rotated only to the angles they need
    nstep = 1 if 2 * nm < int(nang) else max(1, int(chunk_pairs) // mstep)
    starts = range(0, a.shape[0], nstep)

    def run(i):
        return _particle_chunk(a[i : i + nstep], refs, int(nang), ms, mstep, 1,
                               bool(flip))  # fmt: skip

    chunks = map_chunks(run, starts, nw)
    return Alignment2D.of(*(np.concatenate(v) for v in zip(*chunks, strict=True)), scale=shrink)


def _aligned_pairs(a, refs, pairs, nang, ms, chunk_pairs, nw, flip, shrink) -> Alignment2D:
    """:func:`rotate_translate_flip` with a reference subset per particle, (N, K) arrays."""
    b_spec, b_energy, fp_b = refs
    nimg, k = pairs.shape
    out = [np.zeros((nimg, k), np.float64) for _ in range(3)]
    mir = np.zeros((nimg, k), bool)
    score = np.full((nimg, k), np.inf)

    def run(i):
        sel = np.flatnonzero(pairs[i] >= 0)
        if sel.size == 0:
            return
        idx = pairs[i, sel]
        sub = (b_spec[idx], b_energy[idx], fp_b[:, :, idx])
        mstep = max(1, min(idx.size, chunk_pairs))
        res = _particle_chunk(a[i : i + 1], sub, nang, ms, mstep, 1, flip)
        for o, v in zip(out, res[:3], strict=True):
            o[i, sel] = v[0]
        mir[i, sel] = res[3][0]
        score[i, sel] = res[4][0]

    map_chunks(run, range(nimg), nw)
    return Alignment2D.of(*out, mir, score, scale=shrink)


def transform_images_2d(images, angle, dx, dy, mirror) -> np.ndarray:
    """Apply alignments to a stack: ``aligned(R(angle) M r + (dx, dy)) = image(r)``, bilinear.

    Parameters
    ----------
    images : array (N, y, x)
    angle, dx, dy, mirror : arrays (N,) or scalars
        Degrees, pixels, bool, as in the module notes (centre ``n // 2``; zero outside).

    Returns
    -------
    ndarray (N, y, x) float32
    """
    a = _stack(images, "images")
    nimg, n = a.shape[0], a.shape[1]
    ang, tx, ty, mir = (np.broadcast_to(np.asarray(v, np.float64), (nimg,)) for v in
                        (angle, dx, dy, np.asarray(mirror, bool)))  # fmt: skip
    c = n // 2
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) - c
    t = np.radians(ang)[:, None, None]
    ux, uy = xx[None] - tx[:, None, None], yy[None] - ty[:, None, None]
    sx = np.cos(t) * ux + np.sin(t) * uy
    sy = -np.sin(t) * ux + np.cos(t) * uy
    sx = np.where(mir[:, None, None], -sx, sx) + c
    sy = sy + c
    y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
    fy, fx = (sy - y0).astype(np.float32), (sx - x0).astype(np.float32)
    flat = a.reshape(nimg, -1)
    base = (np.arange(nimg) * n * n)[:, None, None]
    out = np.zeros_like(a)
    for oy, wy in ((0, 1 - fy), (1, fy)):
        for ox, wx in ((0, 1 - fx), (1, fx)):
            yy_, xx_ = y0 + oy, x0 + ox
            ok = (yy_ >= 0) & (yy_ < n) & (xx_ >= 0) & (xx_ < n)
            idx = base + np.clip(yy_, 0, n - 1) * n + np.clip(xx_, 0, n - 1)
            out += np.where(ok, flat.ravel()[idx] * wy * wx, 0.0).astype(np.float32)
    return out
