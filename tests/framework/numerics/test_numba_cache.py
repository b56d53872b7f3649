"""Where the compiled kernels are cached, and that the cache works between processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from emforge.numerics._numba_cache import choose_cache_dir


def test_env_setting_wins(tmp_path):
    assert choose_cache_dir(tmp_path, {"NUMBA_CACHE_DIR": "/somewhere"}) is None


def test_writable_package_folder_keeps_numbas_default(tmp_path):
    assert choose_cache_dir(tmp_path, {}) is None


def test_read_only_package_falls_back_to_the_user_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # nothing can be created below a regular file, even as root
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert choose_cache_dir(blocker / "pkg", env) == str(tmp_path / "cache" / "emforge" / "numba")


def test_without_any_writable_cache_it_uses_the_temp_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = {"XDG_CACHE_HOME": str(blocker / "cache")}
    got = choose_cache_dir(blocker / "pkg", env)
    assert got is not None and Path(got).parent == Path(tempfile.gettempdir())


_CHILD = """
import json, time
t0 = time.perf_counter()
import numpy as np
from emforge.numerics import project_fourier, reconstruct_fourier
t1 = time.perf_counter()
rot = np.eye(3)[None]
img = project_fourier(np.zeros((8, 8, 8), np.float32), rot)
reconstruct_fourier(img, rot)
print(json.dumps({"import": t1 - t0, "first_call": time.perf_counter() - t1}))
"""


@pytest.mark.slow
def test_compiled_kernels_are_cached_between_processes(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), EMFORGE_FFTW_WISDOM="0")
    runs = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert list((tmp_path / "numba").rglob("*.nbi")), "no numba index files were written"
    cold, warm = runs[0]["first_call"], runs[1]["first_call"]
    assert warm < 0.5 * cold, runs
