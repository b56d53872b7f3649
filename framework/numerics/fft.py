"""Real-to-complex FFTs with cached pyFFTW plans and a transparent scipy.fft fallback.

Every FFT in emforge goes through :func:`rfftn` / :func:`irfftn` so that plans are made once
per (shape, dtype, axes, threads) and reused.

Conventions
-----------
* Arrays are (z, y, x) or (y, x); a stack of 2D images is (n, y, x) with ``axes=(-2, -1)``.
* ``float32`` in gives ``complex64`` out, ``float64`` gives ``complex128``; nothing is upcast.
  Other real dtypes (integers, float16) are converted to ``float32`` first.
* The forward transform is unnormalised and the inverse carries the ``1/N`` factor, exactly as
  :func:`numpy.fft.rfftn` / :func:`numpy.fft.irfftn`. The half axis is the last transformed axis.
* Outputs are fresh arrays the caller owns (never a plan's internal buffer).

Threads
-------
``threads`` defaults to ``$EMFORGE_FFT_THREADS`` or else :func:`os.cpu_count`. The PyPI pyFFTW
wheel threads through OpenMP: with ``OMP_NUM_THREADS=1`` in the environment, ``threads > 1``
silently runs on one core. On a machine already busy with other work, OpenMP's spinning
threads made ``threads=2`` up to 10x *slower* than 1 (100^3 c2r: 2.5 ms quiet, 15-60 ms under
a load of 5 on 2 cores), so importing this module sets ``OMP_WAIT_POLICY=PASSIVE`` in the
environment unless it is already set; ``EMFORGE_FFT_THREADS=1`` is the other remedy.

Planning
--------
Plans use ``FFTW_MEASURE`` by default (about 2x faster than ``FFTW_ESTIMATE`` on 256^3, costs
0.25-1 s of planning once per shape); set ``EMFORGE_FFTW_EFFORT=FFTW_ESTIMATE`` in the
environment, or pass ``planner_effort``, to plan faster. :func:`export_wisdom` /
:func:`import_wisdom` save and restore the planning results between processes. When pyFFTW is
not importable, or making a plan fails, the same call is answered by :mod:`scipy.fft` with
``workers=threads``.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.fft as _sfft

# OpenMP threads that spin while waiting make threaded FFTW several times slower than one
# thread as soon as the machine has other work (measured on 2 shared cores). Sleep instead,
# unless the user chose a policy. Only effective if no OpenMP runtime was loaded before us.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # pragma: no cover - exercised implicitly
    import pyfftw
    import pyfftw.builders as _builders

    _HAVE_PYFFTW = True
except ImportError:  # pragma: no cover - depends on the environment
    pyfftw = None
    _builders = None
    _HAVE_PYFFTW = False

__all__ = [
    "rfftn",
    "irfftn",
    "rfft_shape",
    "backend",
    "default_threads",
    "clear_plan_cache",
    "plan_cache_size",
    "export_wisdom",
    "import_wisdom",
    "save_wisdom_cache",
    "wisdom_cache_path",
]

_EFFORTS = ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT", "FFTW_EXHAUSTIVE")
_PLANS: dict[tuple, tuple[object, threading.Lock]] = {}
_CACHE_LOCK = threading.Lock()
_MAX_PLANS = 64
_force_scipy = False


def backend() -> str:
    """Name of the library answering FFT calls: ``"pyfftw"`` or ``"scipy"``."""
    return "pyfftw" if (_HAVE_PYFFTW and not _force_scipy) else "scipy"


#: set in a process forked after this module loaded: FFTW's OpenMP threads do not survive a
#: fork (GNU OpenMP hangs the child's first threaded transform), so such children use one
#: thread and plan afresh. The engine's local workers are such children, one step per core.
_FORKED = False


def _after_fork_in_child() -> None:
    global _FORKED
    _FORKED = True
    _PLANS.clear()


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


def _effort(planner_effort: str | None) -> str:
    eff = planner_effort or os.environ.get("EMFORGE_FFTW_EFFORT", "FFTW_MEASURE")
    if eff not in _EFFORTS:
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


def _get_plan(kind: str, shape, dtype, axes, threads, effort, real_shape):
    key = (kind, shape, np.dtype(dtype).str, axes, threads, effort, real_shape)
    with _CACHE_LOCK:
        hit = _PLANS.get(key)
    if hit is not None:
        return hit
    _load_wisdom_cache()
    _WISDOM["new_plans"] += 1
    dummy = pyfftw.empty_aligned(shape, dtype=dtype)
    dummy[...] = 0
    if kind == "r2c":
        plan = _builders.rfftn(
            dummy, axes=axes, threads=threads, planner_effort=effort, avoid_copy=False
        )
    else:
        s = tuple(real_shape[a] for a in axes)
        plan = _builders.irfftn(
            dummy, s=s, axes=axes, threads=threads, planner_effort=effort, avoid_copy=False
        )
    entry = (plan, threading.Lock())
    with _CACHE_LOCK:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS.setdefault(key, entry)
        return _PLANS[key]


def _execute(plan, lock: threading.Lock, data: np.ndarray) -> np.ndarray:
    # Copy into the plan's own buffers: passing ``data`` to ``plan(data)`` may make FFTW adopt
    # the caller's array as its input (and a c2r transform destroys its input).
    with lock:
        plan.input_array[...] = data
        return np.array(plan(), copy=True)


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
        FFTW threads (default ``os.cpu_count()``); scipy ``workers`` in the fallback.
    planner_effort : str, optional
        ``"FFTW_ESTIMATE"``, ``"FFTW_MEASURE"`` (default) ...

    Returns
    -------
    ndarray, complex64 for float32 input (complex128 for float64), shape ``rfft_shape``.
    Equal to :func:`numpy.fft.rfftn` within the precision of the dtype.
    """
    a = _as_real(a)
    ax = _norm_axes(a.ndim, axes)
    nthr = 1 if _FORKED else (int(threads) if threads else default_threads())
    effort = _effort(planner_effort)
    if backend() == "pyfftw":
        try:
            plan, lock = _get_plan("r2c", a.shape, a.dtype, ax, nthr, effort, None)
            return _execute(plan, lock, a)
        except (ValueError, TypeError, RuntimeError, MemoryError):
            pass
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
    nthr = 1 if _FORKED else (int(threads) if threads else default_threads())
    effort = _effort(planner_effort)
    if backend() == "pyfftw":
        try:
            plan, lock = _get_plan("c2r", f.shape, f.dtype, ax, nthr, effort, real_shape)
            return _execute(plan, lock, f)
        except (ValueError, TypeError, RuntimeError, MemoryError):
            pass
    s = tuple(real_shape[a] for a in ax)
    return _sfft.irfftn(f, s=s, axes=ax, workers=nthr)


def clear_plan_cache() -> None:
    """Forget every cached plan (wisdom stays in FFTW's memory)."""
    with _CACHE_LOCK:
        _PLANS.clear()


def plan_cache_size() -> int:
    """Number of plans currently cached."""
    return len(_PLANS)


def wisdom_cache_path() -> Path:
    """Where measured plans are kept between processes: ``$XDG_CACHE_HOME/emforge/fftw-wisdom.txt``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "emforge" / "fftw-wisdom.txt"


_WISDOM = {"loaded": False, "new_plans": 0}


def _load_wisdom_cache() -> None:
    """Import the cached wisdom once per process, before the first plan is made."""
    if _WISDOM["loaded"]:
        return
    _WISDOM["loaded"] = True
    if os.environ.get("EMFORGE_FFTW_WISDOM", "1") != "0":
        import_wisdom(wisdom_cache_path())


def save_wisdom_cache() -> bool:
    """Write this process's wisdom to :func:`wisdom_cache_path` (atomically) if it planned anything
    and ``EMFORGE_FFTW_WISDOM`` is not ``0``."""
    if (
        not _HAVE_PYFFTW
        or not _WISDOM["new_plans"]
        or os.environ.get("EMFORGE_FFTW_WISDOM", "1") == "0"
    ):
        return False
    path = wisdom_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        export_wisdom(tmp)
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written only costs planning time
        return False
    _WISDOM["new_plans"] = 0
    return True


def export_wisdom(path: str | os.PathLike) -> bool:
    """Write FFTW's accumulated wisdom to ``path`` (text, three base64 lines).

    Returns False (and writes nothing) when pyFFTW is not available.
    """
    if not _HAVE_PYFFTW:
        return False
    lines = [base64.b64encode(w).decode("ascii") for w in pyfftw.export_wisdom()]
    Path(path).write_text("\n".join(lines) + "\n", encoding="ascii")
    return True


def import_wisdom(path: str | os.PathLike) -> bool:
    """Load wisdom written by :func:`export_wisdom`; returns True when FFTW accepted it.

    A missing or unreadable file returns False: wisdom is only a speed-up.
    """
    if not _HAVE_PYFFTW:
        return False
    try:
        lines = Path(path).read_text(encoding="ascii").split()
        wisdom = tuple(base64.b64decode(x) for x in lines)
    except (OSError, ValueError):
        return False
    if len(wisdom) != 3:
        return False
    return bool(all(pyfftw.import_wisdom(wisdom)))
