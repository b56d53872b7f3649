"""FFTs through pyFFTW plans: cheap (estimated) plans for new shapes, measured plans for shapes
that repeat often or have wisdom from an earlier process; scipy.fft as the fallback.

Every FFT in emforge goes through :func:`rfftn` / :func:`irfftn` (real data) or :func:`fftn` /
:func:`ifftn` (complex data) so that the thread setting and the planning policy are the same
everywhere.

Conventions
-----------
* Arrays are (z, y, x) or (y, x); a stack of 2D images is (n, y, x) with ``axes=(-2, -1)``.
* ``float32`` in gives ``complex64`` out, ``float64`` gives ``complex128``; nothing is upcast.
  Other real dtypes (integers, float16) are converted to ``float32`` first.
* The forward transform is unnormalised and the inverse carries the ``1/N`` factor, exactly as
  :func:`numpy.fft.rfftn` / :func:`numpy.fft.irfftn`. The half axis is the last transformed axis.
* Outputs are fresh arrays the caller owns (never a plan's internal buffer); inputs are never
  modified.

Threads
-------
``threads`` defaults to ``$EMFORGE_FFT_THREADS`` or else :func:`os.cpu_count`, for pyFFTW and
scipy alike. The PyPI pyFFTW wheel threads through OpenMP: with ``OMP_NUM_THREADS=1`` in the
environment, ``threads > 1`` silently runs on one core. On a machine already busy with other
work, OpenMP's spinning threads made ``threads=2`` up to 10x *slower* than 1 (100^3 c2r:
2.5 ms quiet, 15-60 ms under a load of 5 on 2 cores), so importing this module sets
``OMP_WAIT_POLICY=PASSIVE`` in the environment unless it is already set.

Planning (which plan answers a call)
------------------------------------
Measuring an FFTW plan (``FFTW_MEASURE``) costs 0.4-1.5 s per shape on one thread (7-47 times
a :func:`scipy.fft.rfftn` of that shape; more with threads), more than a one-off map needs,
while an ``FFTW_ESTIMATE`` plan costs milliseconds and ran 1.3-2.4x faster than scipy.fft and
as fast as the measured plan at 64^3-128^3 (one thread). So, per problem (kind, shape, dtype,
axes, threads):

1. a plan already made in this process answers;
2. else, when FFTW wisdom from an earlier process (the cache file below) holds a measured plan
   for the problem, that plan is made from the wisdom alone (milliseconds);
3. else an ``FFTW_ESTIMATE`` plan answers (scipy.fft for problems of 2^22 elements or more,
   about 161^3: from 160^3 up measured FFTW plans were no faster than scipy.fft, and an
   estimated one was slower at 256^3), and at the ``$EMFORGE_FFTW_MEASURE_AFTER``-th call of
   the problem (default 64, about where measuring pays for itself) a measured plan replaces
   it, which the wisdom cache keeps for later processes.

``planner_effort=`` (or ``$EMFORGE_FFTW_EFFORT``) asks for a plan of that effort at the first
call. When pyFFTW is not importable, or making a plan fails, :mod:`scipy.fft` answers with
``workers=threads``. :func:`path_counts` says how many calls each path answered.

Wisdom cache
------------
Wisdom is read from :func:`wisdom_cache_path` (``$XDG_CACHE_HOME/emforge/fftw-wisdom.txt``)
before the first plan of a process and written back at exit (and at the end of every run) when
the process measured a new plan: under a file lock, merged with what other processes wrote, by
an atomic rename. ``EMFORGE_FFTW_WISDOM=0`` turns the cache off (neither read nor written). A
damaged cache file is ignored with a warning.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Sequence

import numpy as np
import scipy.fft as _sfft

# pyFFTW is imported by _fftw_wisdom, after it set OMP_WAIT_POLICY=PASSIVE (unless the user
# chose a policy): OpenMP threads that spin while waiting make threaded FFTW several times
# slower than one thread as soon as the machine has other work (measured on 2 shared cores).
from ._fftw_wisdom import (
    _HAVE_PYFFTW,
    _WISDOM,
    _load_wisdom_cache,
    export_wisdom,
    import_wisdom,
    pyfftw,
    save_wisdom_cache,
    wisdom_cache_path,
)

__all__ = [
    "rfftn",
    "irfftn",
    "fftn",
    "ifftn",
    "rfft_shape",
    "backend",
    "default_threads",
    "clear_plan_cache",
    "plan_cache_size",
    "path_counts",
    "export_wisdom",
    "import_wisdom",
    "save_wisdom_cache",
    "wisdom_cache_path",
]

_EFFORTS = ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT", "FFTW_EXHAUSTIVE")
_MAX_PLANS = 64
_PLANS: dict[tuple, _Plan] = {}
_SEEN: dict[tuple, int] = {}  # calls of large problems answered by scipy.fft so far
_LARGE = 1 << 22  # elements (~161^3): from here scipy.fft answers until a shape repeats
_CACHE_LOCK = threading.Lock()
_COUNTS = {"scipy": 0, "estimate": 0, "plan": 0, "wisdom": 0, "measured": 0}
_force_scipy = False


def backend() -> str:
    """Library that answers FFT calls once plans exist: ``"pyfftw"`` or ``"scipy"``."""
    return "pyfftw" if (_HAVE_PYFFTW and not _force_scipy) else "scipy"


#: set in a process forked after this module loaded: FFTW's OpenMP threads do not survive a
#: fork (GNU OpenMP hangs the child's first threaded transform), so such children use one
#: thread and plan afresh. The engine's local workers are such children, one step per core.
_FORKED = False


def _after_fork_in_child() -> None:
    global _FORKED
    _FORKED = True
    _PLANS.clear()
    _SEEN.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def default_threads() -> int:
    """FFT threads used when ``threads`` is not given: ``$EMFORGE_FFT_THREADS`` if set, else
    ``os.cpu_count()``; always 1 in a forked child process (see ``_FORKED``)."""
    if _FORKED:
        return 1
    env = os.environ.get("EMFORGE_FFT_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    return max(1, os.cpu_count() or 1)


def _measure_after() -> int:
    env = os.environ.get("EMFORGE_FFTW_MEASURE_AFTER", "")
    return max(1, int(env)) if env.strip().isdigit() else 64


def _effort(planner_effort: str | None) -> str | None:
    """The effort asked for explicitly (argument, else environment), or None (adaptive)."""
    eff = planner_effort or os.environ.get("EMFORGE_FFTW_EFFORT") or None
    if eff is not None and eff not in _EFFORTS:
        raise ValueError(f"planner_effort: {eff!r} is not one of {', '.join(_EFFORTS)}")
    return eff


def _norm_axes(ndim: int, axes: Sequence[int] | None) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(ndim))
    out = tuple(int(a) % ndim for a in axes)
    if len(set(out)) != len(out) or list(out) != sorted(out):
        raise ValueError(f"axes: {tuple(axes)} must be distinct and increasing")
    return out


def rfft_shape(shape: Sequence[int], axes: Sequence[int] | None = None) -> tuple[int, ...]:
    """Shape of :func:`rfftn` of a real array of ``shape`` (last transformed axis n//2+1)."""
    shape = tuple(int(n) for n in shape)
    ax = _norm_axes(len(shape), axes)
    out = list(shape)
    out[ax[-1]] = shape[ax[-1]] // 2 + 1
    return tuple(out)


def _as_real(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if np.iscomplexobj(a):
        raise ValueError("a: rfftn needs a real array, got complex input")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    return a


def _as_complex(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f)
    if f.dtype not in (np.complex64, np.complex128):
        if f.dtype == np.float64:
            f = f.astype(np.complex128)
        else:
            f = f.astype(np.complex64)
    return f


# --------------------------------------------------------------------------- plans


class _Plan:
    """One FFTW plan with its own aligned buffers; executed under its lock.

    ``execute`` runs on the caller's array when it has the plan's dtype, strides and alignment
    and the transform preserves its input (r2c, c2c); otherwise (c2r always: FFTW destroys the
    input of a multi-dimensional c2r) the input is copied once into the plan's buffer. The
    output is written straight into a fresh aligned array that the caller owns.
    """

    def __init__(self, kind, in_shape, in_dtype, out_shape, out_dtype, axes, threads, flags):
        self.buf_in = pyfftw.empty_aligned(in_shape, dtype=in_dtype)
        self.buf_out = pyfftw.empty_aligned(out_shape, dtype=out_dtype)
        backward = kind in ("c2r", "c2c-")
        self.fftw = pyfftw.FFTW(
            self.buf_in,
            self.buf_out,
            axes=axes,
            direction="FFTW_BACKWARD" if backward else "FFTW_FORWARD",
            flags=flags,
            threads=threads,
        )
        real = out_shape if kind == "c2r" else in_shape
        n = int(np.prod([real[a] for a in axes]))
        self.scale = out_dtype.type(1.0 / n) if backward else None
        self.copy_in = kind == "c2r"
        self.threads = threads
        self.provisional = False  # an FFTW_ESTIMATE plan made by the default policy
        self.calls = 1
        self.lock = threading.Lock()

    def _direct(self, x: np.ndarray) -> bool:
        return (
            not self.copy_in
            and x.dtype == self.buf_in.dtype
            and x.strides == self.buf_in.strides
            and x.ctypes.data % pyfftw.simd_alignment == 0
        )

    def execute(self, x: np.ndarray) -> np.ndarray:
        out = pyfftw.empty_aligned(self.buf_out.shape, dtype=self.buf_out.dtype)
        with self.lock:
            src = x if self._direct(x) else self.buf_in
            if src is self.buf_in:
                np.copyto(self.buf_in, x)
            try:
                self.fftw.update_arrays(src, out)
            except ValueError:  # e.g. a read-only or oddly strided view: go through the buffer
                np.copyto(self.buf_in, x)
                self.fftw.update_arrays(self.buf_in, out)
            try:
                self.fftw.execute()
            finally:  # do not keep the caller's arrays alive in the cache
                self.fftw.update_arrays(self.buf_in, self.buf_out)
        if self.scale is not None:
            out *= self.scale
        return out


def _make_plan(key: tuple, flags: tuple[str, ...]) -> _Plan:
    kind, shape, dtype, axes, threads, real_shape = key[:6]
    dt = np.dtype(dtype)
    cdt = np.result_type(dt, np.complex64)
    if kind == "r2c":
        return _Plan(kind, shape, dt, rfft_shape(shape, axes), cdt, axes, threads, flags)
    if kind == "c2r":
        rdt = np.dtype(np.float32 if dt == np.complex64 else np.float64)
        return _Plan(kind, shape, dt, real_shape, rdt, axes, threads, flags)
    return _Plan(kind, shape, dt, shape, dt, axes, threads, flags)


def _new_plan(key: tuple, effort: str | None) -> tuple[_Plan | None, str]:
    """A plan for a problem without one in this process, and how it was made; None when
    scipy.fft should answer (large problems until they repeat)."""
    _load_wisdom_cache()
    if effort is not None:
        return _make_plan(key, (effort,)), "measured" if effort != _EFFORTS[0] else "estimate"
    if _WISDOM["imported"]:
        with contextlib.suppress(RuntimeError):  # FFTW: no wisdom for this problem
            return _make_plan(key, ("FFTW_MEASURE", "FFTW_WISDOM_ONLY")), "wisdom"
    if _measure_after() <= 1:
        return _make_plan(key, ("FFTW_MEASURE",)), "measured"
    if int(np.prod(key[1])) >= _LARGE:  # scipy.fft is as fast as FFTW here: no plan yet
        return None, "scipy"
    plan = _make_plan(key, ("FFTW_ESTIMATE",))
    plan.provisional = True
    return plan, "estimate"


def _get_plan(key: tuple, effort: str | None) -> _Plan | None:
    """The cached plan for ``key``, or a new one, or None (scipy.fft answers). A provisional
    (estimated) plan, or scipy for a large problem, is replaced by a measured plan at the
    problem's ``$EMFORGE_FFTW_MEASURE_AFTER``-th call."""
    with _CACHE_LOCK:
        hit = _PLANS.get(key)
    if hit is not None and not hit.provisional:
        _COUNTS["plan"] += 1
        return hit
    if hit is not None:
        hit.calls += 1
        if hit.calls < _measure_after():
            _COUNTS["estimate"] += 1
            return hit
        plan, source = _make_plan(key, ("FFTW_MEASURE",)), "measured"
    else:
        plan, source = _new_plan(key, effort)
        if plan is None:
            with _CACHE_LOCK:
                seen = _SEEN[key] = _SEEN.get(key, 0) + 1
            if seen < _measure_after():
                return None
            plan, source = _make_plan(key, ("FFTW_MEASURE",)), "measured"
    if source == "measured":
        _WISDOM["new_plans"] += 1
        if not _WISDOM["atexit"]:
            _WISDOM["atexit"] = True
            atexit.register(save_wisdom_cache)
    _COUNTS[source] += 1
    with _CACHE_LOCK:
        if key not in _PLANS and len(_PLANS) >= _MAX_PLANS:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[key] = plan
        _SEEN.pop(key, None)
    return plan


def _planned(kind, x, axes, threads, real_shape, effort) -> np.ndarray | None:
    """``x`` transformed by a pyFFTW plan, or None when scipy.fft should answer."""
    if backend() != "pyfftw":
        return None
    key = (kind, x.shape, x.dtype.str, axes, threads, real_shape, effort or "FFTW_MEASURE")
    try:
        plan = _get_plan(key, effort)
        return None if plan is None else plan.execute(x)
    except (ValueError, TypeError, RuntimeError, MemoryError):
        return None


def _threads(threads: int | None) -> int:
    return 1 if _FORKED else (int(threads) if threads else default_threads())


def rfftn(
    a: np.ndarray,
    *,
    axes: Sequence[int] | None = None,
    threads: int | None = None,
    planner_effort: str | None = None,
) -> np.ndarray:
    """Forward real-to-complex FFT over ``axes`` (all axes by default).

    Parameters
    ----------
    a : ndarray, real, shape (..., n)
        Map (z, y, x), image (y, x) or stack (n, y, x) with ``axes=(-2, -1)``.
    axes : sequence of int, optional
        Axes to transform, increasing; the last one becomes the half (n//2+1) axis.
    threads : int, optional
        FFTW threads / scipy ``workers`` (default :func:`default_threads`).
    planner_effort : str, optional
        ``"FFTW_ESTIMATE"``, ``"FFTW_MEASURE"`` ...: plan with that effort at once. By default
        the planning policy of the module docstring applies.

    Returns
    -------
    ndarray, complex64 for float32 input (complex128 for float64), shape ``rfft_shape``.
    Equal to :func:`numpy.fft.rfftn` within the precision of the dtype.
    """
    a = _as_real(a)
    ax = _norm_axes(a.ndim, axes)
    nthr = _threads(threads)
    out = _planned("r2c", a, ax, nthr, None, _effort(planner_effort))
    if out is not None:
        return out
    _COUNTS["scipy"] += 1
    return _sfft.rfftn(a, axes=ax, workers=nthr)


def irfftn(
    f: np.ndarray,
    *,
    shape: Sequence[int] | None = None,
    axes: Sequence[int] | None = None,
    threads: int | None = None,
    planner_effort: str | None = None,
) -> np.ndarray:
    """Inverse of :func:`rfftn` (normalised by 1/N like :func:`numpy.fft.irfftn`).

    Parameters
    ----------
    f : ndarray, complex, half-grid from :func:`rfftn`
    shape : sequence of int, optional
        Shape of the real output array (full array shape). Needed for an odd length on the
        half axis; by default that axis is taken even, ``2 * (m - 1)``.
    axes, threads, planner_effort : as in :func:`rfftn`.

    Returns
    -------
    ndarray, float32 for complex64 input (float64 for complex128). ``f`` is not modified.
    """
    f = _as_complex(f)
    ax = _norm_axes(f.ndim, axes)
    if shape is None:
        real_shape = list(f.shape)
        real_shape[ax[-1]] = 2 * (f.shape[ax[-1]] - 1)
        real_shape = tuple(real_shape)
    else:
        real_shape = tuple(int(n) for n in shape)
        if rfft_shape(real_shape, ax) != f.shape:
            raise ValueError(f"shape: {real_shape} does not match a half-grid of {f.shape}")
    nthr = _threads(threads)
    out = _planned("c2r", f, ax, nthr, real_shape, _effort(planner_effort))
    if out is not None:
        return out
    _COUNTS["scipy"] += 1
    s = tuple(real_shape[a] for a in ax)
    return _sfft.irfftn(f, s=s, axes=ax, workers=nthr)


def fftn(
    a: np.ndarray,
    *,
    axes: Sequence[int] | None = None,
    threads: int | None = None,
    inverse: bool = False,
) -> np.ndarray:
    """Complex FFT over ``axes`` (all by default), like :func:`numpy.fft.fftn`; with
    ``inverse=True`` like :func:`numpy.fft.ifftn` (1/N). Real input is taken as complex;
    complex64 (float32 input) stays complex64. Same planning policy and threads as
    :func:`rfftn`; ``a`` is not modified."""
    a = np.asarray(a)
    a = _as_complex(a) if np.iscomplexobj(a) else _as_real(a).astype(np.result_type(a, "c8"))
    ax = _norm_axes(a.ndim, axes)
    nthr = _threads(threads)
    kind = "c2c-" if inverse else "c2c+"
    out = _planned(kind, a, ax, nthr, None, _effort(None))
    if out is not None:
        return out
    _COUNTS["scipy"] += 1
    return (_sfft.ifftn if inverse else _sfft.fftn)(a, axes=ax, workers=nthr)


def ifftn(a: np.ndarray, *, axes: Sequence[int] | None = None, threads: int | None = None):
    """Inverse complex FFT (1/N), :func:`fftn` with ``inverse=True``."""
    return fftn(a, axes=axes, threads=threads, inverse=True)


def clear_plan_cache() -> None:
    """Forget every cached plan and the per-shape call counts (wisdom stays in FFTW's memory)."""
    with _CACHE_LOCK:
        _PLANS.clear()
        _SEEN.clear()


def plan_cache_size() -> int:
    """Number of plans currently cached."""
    return len(_PLANS)


def path_counts() -> dict[str, int]:
    """Calls answered so far by each path: ``estimate`` (an FFTW_ESTIMATE plan, new or
    cached), ``plan`` (a cached measured plan), ``wisdom`` (a plan made from loaded wisdom),
    ``measured`` (a plan measured for this call), ``scipy`` (no pyFFTW, or planning failed)."""
    return dict(_COUNTS)
