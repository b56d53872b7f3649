"""Where numba keeps the compiled kernels of emforge between processes.

numba's ``cache=True`` writes machine code next to the source file (``__pycache__``), or, when
that folder cannot be written, under the user's cache folder; when neither works, decorating
the function fails. An emforge installed read-only (a system site-packages, a container image
run as another user, a home without write access) must still import and cache. So, before
numba is imported, :func:`configure` leaves ``NUMBA_CACHE_DIR`` alone if it is set or the
package folder is writable, and otherwise sets it to the first writable of
``$XDG_CACHE_HOME/emforge/numba`` (``~/.cache/emforge/numba``) and
``<tempdir>/emforge-numba-<uid>``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["choose_cache_dir", "configure"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def _writable(folder: Path) -> bool:
    """True when ``folder`` exists or can be made, and a file can be created in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def choose_cache_dir(
    source_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The ``NUMBA_CACHE_DIR`` emforge needs, or None when numba's own choice works.

    Parameters
    ----------
    source_dir : Path, optional
        Folder of the compiled modules (default: this package's folder); numba caches in its
        ``__pycache__`` when that is writable.
    env : mapping, optional
        Environment to read (default ``os.environ``).
    """
    env = os.environ if env is None else env
    if env.get("NUMBA_CACHE_DIR"):
        return None
    source_dir = _PACKAGE_DIR if source_dir is None else Path(source_dir)
    if _writable(source_dir / "__pycache__"):
        return None
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates = [Path(base) / "emforge" / "numba"]
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    candidates.append(Path(tempfile.gettempdir()) / f"emforge-numba-{uid}")
    for folder in candidates:
        if _writable(folder):
            return str(folder)
    return str(candidates[-1])


def configure() -> None:
    """Set ``NUMBA_CACHE_DIR`` (environment, and numba's config if numba is already loaded)
    when :func:`choose_cache_dir` says so. Call before the first ``@njit(cache=True)``."""
    # GNU OpenMP (numba's default layer here) aborts a process forked after it ran, and the
    # engine's local workers are forked; the workqueue layer survives a fork. A user's choice
    # (NUMBA_THREADING_LAYER) is kept.
    layer = os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    loaded = sys.modules.get("numba.core.config")
    if loaded is not None and loaded.THREADING_LAYER == "default" and layer == "workqueue":
        loaded.THREADING_LAYER = layer
    folder = choose_cache_dir()
    if folder is None:
        return
    os.environ["NUMBA_CACHE_DIR"] = folder
    config = sys.modules.get("numba.core.config")
    if config is not None:
        config.CACHE_DIR = folder
