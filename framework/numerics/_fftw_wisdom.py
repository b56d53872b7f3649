"""FFTW wisdom kept between processes for :mod:`emforge.numerics.fft` (see its docstring).

The cache file is :func:`wisdom_cache_path`; it is read once per process before the first
plan, and merged into (under a file lock, by an atomic rename) when a process has measured a
new plan. ``EMFORGE_FFTW_WISDOM=0`` turns the cache off; a damaged file is ignored with a
:class:`RuntimeWarning`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

# before pyFFTW loads its OpenMP runtime: see "Threads" in emforge.numerics.fft
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _import_pyfftw():
    """``import pyfftw`` without its Dask interface: ``pyfftw.interfaces`` imports
    ``dask.array`` (0.2 s, more than every FFT of a small map) whenever Dask is installed,
    for ``pyfftw.interfaces.dask_fft``, which emforge never uses. Hiding ``dask.array.fft``
    while pyFFTW loads makes that optional import fail as it does without Dask; a Dask
    already imported is left alone, and Dask imports normally afterwards."""
    import sys

    hide = "dask.array.fft" not in sys.modules
    if hide:
        sys.modules["dask.array.fft"] = None  # type: ignore[assignment]
    try:
        import pyfftw as module
    finally:
        if hide and sys.modules.get("dask.array.fft", 0) is None:
            del sys.modules["dask.array.fft"]
    return module


try:  # pragma: no cover - exercised implicitly
    pyfftw = _import_pyfftw()
    _HAVE_PYFFTW = True
except ImportError:  # pragma: no cover - depends on the environment
    pyfftw = None
    _HAVE_PYFFTW = False

try:  # POSIX advisory lock for the wisdom cache; elsewhere the atomic rename alone
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["export_wisdom", "import_wisdom", "save_wisdom_cache", "wisdom_cache_path"]

#: per-process state: cache read?, did FFTW accept it?, plans measured since the last save
_WISDOM = {"loaded": False, "imported": False, "new_plans": 0, "atexit": False}


def wisdom_cache_path() -> Path:
    """Where measured plans are kept between processes: ``$XDG_CACHE_HOME/emforge/fftw-wisdom.txt``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "emforge" / "fftw-wisdom.txt"


def _cache_enabled() -> bool:
    return os.environ.get("EMFORGE_FFTW_WISDOM", "1") != "0"


def _load_wisdom_cache() -> None:
    """Import the cached wisdom once per process, before the first plan is made."""
    if _WISDOM["loaded"]:
        return
    _WISDOM["loaded"] = True
    if _cache_enabled():
        _WISDOM["imported"] = import_wisdom(wisdom_cache_path())


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path.lock`` (no-op where ``fcntl`` is missing)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def save_wisdom_cache() -> bool:
    """Merge this process's wisdom into :func:`wisdom_cache_path` if it measured a plan and
    ``EMFORGE_FFTW_WISDOM`` is not ``0``: under a lock, by an atomic rename. True if written."""
    if not _HAVE_PYFFTW or not _WISDOM["new_plans"] or not _cache_enabled():
        return False
    path = wisdom_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path):
            if path.exists():  # keep what other processes measured meanwhile
                import_wisdom(path)
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

    A missing file returns False; a damaged one returns False with a :class:`RuntimeWarning`
    (wisdom is only a speed-up, it never stops a computation).
    """
    if not _HAVE_PYFFTW:
        return False
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        warnings.warn(f"FFTW wisdom {path} ignored: {exc}", RuntimeWarning, stacklevel=2)
        return False
    try:
        wisdom = tuple(base64.b64decode(x, validate=True) for x in text.split())
        ok = len(wisdom) == 3 and bool(all(pyfftw.import_wisdom(wisdom)))
    except (ValueError, TypeError):
        ok = False
    if not ok:
        warnings.warn(
            f"FFTW wisdom {path} ignored: not a wisdom file written by emforge",
            RuntimeWarning,
            stacklevel=2,
        )
    return ok
