"""FFTW plans measured in one process are reused by the next through the wisdom cache."""

import subprocess
import sys

import pytest

from emforge.numerics import fft

SCRIPT = """
import time, numpy as np
from emforge.numerics import fft
a = np.zeros((48, 40, 36), np.float32)
t = time.perf_counter(); fft.rfftn(a, planner_effort="FFTW_PATIENT"); dt = time.perf_counter() - t
print(dt, fft.save_wisdom_cache())
"""


@pytest.mark.skipif(fft.backend() != "pyfftw", reason="pyFFTW is not installed: no wisdom to cache")
def test_wisdom_cache_is_written_and_reused(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        for _ in range(2)
    ]
    first, second = (float(r.stdout.split()[0]) for r in runs)
    assert runs[0].stdout.split()[1] == "True"
    assert (tmp_path / "emforge" / "fftw-wisdom.txt").is_file()
    assert second < first / 3, (first, second)  # PATIENT planning is skipped the second time


def test_no_cache_write_without_new_plans(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(fft._WISDOM, "new_plans", 0)
    assert fft.save_wisdom_cache() is False
    assert not (tmp_path / "emforge").exists()
