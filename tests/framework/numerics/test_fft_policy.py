"""Which path answers an FFT (an estimated plan first, scipy.fft first for large problems, a
measured plan when a problem repeats, a plan from wisdom of an earlier process), the thread
setting, and the wisdom cache file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from emforge.numerics import fft

needs_pyfftw = pytest.mark.skipif(fft.backend() != "pyfftw", reason="pyFFTW is not installed")


def _close(got, ref) -> bool:
    return float(np.abs(got - ref).max()) < 2e-6 * float(np.abs(ref).max())


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No plans, no call counts, no wisdom file from the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("EMFORGE_FFTW_EFFORT", raising=False)
    monkeypatch.setenv("EMFORGE_FFTW_MEASURE_AFTER", "3")
    monkeypatch.setitem(fft._WISDOM, "loaded", True)
    monkeypatch.setitem(fft._WISDOM, "imported", False)
    fft.clear_plan_cache()
    yield
    fft.clear_plan_cache()


def _paths(n, call):
    """The path that answered each of ``n`` calls of ``call``."""
    out = []
    for _ in range(n):
        before = fft.path_counts()
        call()
        after = fft.path_counts()
        out.append(next(k for k in after if after[k] != before[k]))
    return out


@needs_pyfftw
def test_large_problems_start_with_scipy_then_measured(fresh, monkeypatch):
    monkeypatch.setattr(fft, "_LARGE", 1000)
    a = np.random.default_rng(5).standard_normal((12, 10, 14)).astype(np.float32)
    ref = np.fft.rfftn(a.astype(np.float64))
    got = []
    assert _paths(4, lambda: got.append(fft.rfftn(a))) == ["scipy", "scipy", "measured", "plan"]
    assert all(g.dtype == np.complex64 and _close(g, ref) for g in got)


@needs_pyfftw
def test_first_calls_estimated_then_measured_then_cached_all_equal_numpy(fresh):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 26, 22, 20)).astype(np.float32)  # a shape no other test uses
    ref = np.fft.rfftn(a.astype(np.float64), axes=(1, 2, 3))
    paths = []
    for _ in range(4):
        before = fft.path_counts()
        f = fft.rfftn(a, axes=(1, 2, 3))
        after = fft.path_counts()
        paths.append(next(k for k in after if after[k] != before[k]))
        assert f.dtype == np.complex64 and _close(f, ref)
        back = fft.irfftn(f, shape=a.shape, axes=(1, 2, 3))
        assert back.dtype == np.float32 and float(np.abs(back - a).max()) < 1e-5
    assert paths == ["estimate", "estimate", "measured", "plan"]
    assert fft.plan_cache_size() == 2  # one r2c and one c2r plan


@needs_pyfftw
def test_outputs_are_fresh_and_inputs_untouched(fresh):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20, 18, 16)).astype(np.float32)
    keep = a.copy()
    outs = [fft.rfftn(a, planner_effort="FFTW_ESTIMATE") for _ in range(2)]
    assert outs[0] is not outs[1] and not np.shares_memory(outs[0], outs[1])
    assert np.array_equal(a, keep)
    f_keep = outs[0].copy()
    r = [fft.irfftn(outs[0], shape=a.shape, planner_effort="FFTW_ESTIMATE") for _ in range(2)]
    assert np.array_equal(outs[0], f_keep)  # c2r destroys its input inside FFTW, not ours
    assert not np.shares_memory(r[0], r[1]) and float(np.abs(r[0] - a).max()) < 1e-5
    unaligned = np.frombuffer(bytearray(a.nbytes + 4), np.float32)[1:].reshape(a.shape)
    unaligned[...] = a
    assert _close(fft.rfftn(unaligned, planner_effort="FFTW_ESTIMATE"), np.fft.rfftn(a))


def test_complex_fftn_matches_numpy(fresh):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 18, 18)).astype(np.float32)
    ref = np.fft.fft2(a.astype(np.float64))
    for _ in range(4):  # scipy, scipy, measured, cached plan
        got = fft.fftn(a, axes=(1, 2))
        assert got.dtype == np.complex64 and _close(got, ref)
        back = fft.ifftn(got, axes=(1, 2))
        assert float(np.abs(back - a).max()) < 1e-5


def test_thread_setting_reaches_scipy_and_plans(fresh, monkeypatch):
    monkeypatch.setenv("EMFORGE_FFT_THREADS", "1")
    monkeypatch.setattr(fft, "_LARGE", 1000)  # scipy answers the first two calls
    assert fft.default_threads() == 1
    seen = []
    real = fft._sfft.rfftn

    def spy(*args, workers=None, **kw):
        seen.append(workers)
        return real(*args, workers=workers, **kw)

    monkeypatch.setattr(fft._sfft, "rfftn", spy)
    a = np.ones((10, 12, 14), np.float32)
    for _ in range(3):
        fft.rfftn(a)
    assert seen == [1, 1]  # the third call measured a plan
    if fft.backend() == "pyfftw":
        (key,) = (k for k in fft._PLANS if k[1] == a.shape)
        assert key[4] == 1 and fft._PLANS[key].threads == 1
    monkeypatch.setenv("EMFORGE_FFT_THREADS", "2")
    fft.rfftn(a)
    assert seen[-1] == 2  # a new thread count is a new problem: scipy again, with 2 workers


def test_local_sharpening_box_ffts_honour_the_thread_setting(fresh, monkeypatch):
    from emforge.protocols.sharpen.kernels import local

    monkeypatch.setenv("EMFORGE_FFT_THREADS", "1")
    monkeypatch.setattr(fft, "_force_scipy", True)
    seen = []
    real = fft._sfft.rfftn
    monkeypatch.setattr(
        fft._sfft, "rfftn", lambda *a, workers=None, **k: seen.append(workers) or real(*a, **k)
    )
    boxes = np.random.default_rng(3).standard_normal((2, 16, 16, 16)).astype(np.float32)
    f = local._rfft_boxes(boxes)
    assert seen == [1]
    monkeypatch.setattr(fft, "_force_scipy", False)
    if fft.backend() == "pyfftw":
        assert _close(local._rfft_boxes(boxes), f)
        assert {k[4] for k in fft._PLANS if k[1] == boxes.shape} == {1}
    assert _close(f, np.fft.rfftn(boxes.astype(np.float64), axes=(1, 2, 3)))
    assert float(np.abs(local._irfft_boxes(f, 16) - boxes).max()) < 1e-5


CHILD = """
import json, os, sys, warnings
import numpy as np
from emforge.numerics import fft
shape = tuple(int(n) for n in os.environ.get("TEST_SHAPE", "30,28,26").split(","))
a = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    f = fft.rfftn(a)
ok = bool(np.abs(f - np.fft.rfftn(a.astype(np.float64))).max() < 2e-6 * np.abs(f).max())
print(json.dumps({"counts": fft.path_counts(), "ok": ok, "warnings": [str(x.message) for x in w]}))
"""


def _child(tmp_path, **env) -> dict:
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "XDG_CACHE_HOME": str(tmp_path),
        "EMFORGE_FFT_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=full, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


@needs_pyfftw
def test_wisdom_written_at_exit_and_used_by_a_fresh_process(tmp_path):
    first = _child(tmp_path, EMFORGE_FFTW_MEASURE_AFTER="1")  # measures at the first call
    assert first["ok"] and first["counts"]["measured"] == 1
    cache = tmp_path / "emforge" / "fftw-wisdom.txt"
    assert cache.is_file()
    second = _child(tmp_path)  # default policy: the plan comes from the wisdom at once
    assert second["ok"] and second["counts"]["wisdom"] == 1
    assert sum(second["counts"].values()) == 1
    off = _child(tmp_path, EMFORGE_FFTW_WISDOM="0")  # the cache turned off: not read
    assert off["ok"] and off["counts"]["estimate"] == 1 and sum(off["counts"].values()) == 1


@needs_pyfftw
def test_corrupt_wisdom_file_is_ignored_with_a_warning(tmp_path):
    cache = tmp_path / "emforge" / "fftw-wisdom.txt"
    cache.parent.mkdir(parents=True)
    cache.write_text("this is not wisdom\n")
    res = _child(tmp_path, EMFORGE_FFTW_MEASURE_AFTER="1")
    assert res["ok"] and res["counts"]["measured"] == 1
    assert any("wisdom" in w and "ignored" in w for w in res["warnings"]), res["warnings"]
    # the damaged file was replaced by good wisdom at exit
    assert _child(tmp_path)["counts"]["wisdom"] == 1
    cache.write_bytes(b"\xff\xfe garbage")
    with pytest.warns(RuntimeWarning, match="ignored"):
        assert fft.import_wisdom(cache) is False


@needs_pyfftw
def test_wisdom_of_two_processes_is_merged_in_the_cache(tmp_path):
    for shape in ("30,28,26", "18,20,22"):
        assert _child(tmp_path, EMFORGE_FFTW_MEASURE_AFTER="1", TEST_SHAPE=shape)["ok"]
    for shape in ("30,28,26", "18,20,22"):  # the second save kept the first one's plan
        res = _child(tmp_path, TEST_SHAPE=shape)
        assert res["ok"] and res["counts"]["wisdom"] == 1, (shape, res)
