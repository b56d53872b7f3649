"""emforge.numerics.fft against numpy.fft (the reference implementation)."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.numerics import fft

SHAPES = [((24, 20, 18), None), ((17, 19, 21), None), ((30, 31), None), ((5, 16, 15), (-2, -1))]


@pytest.mark.parametrize(("shape", "axes"), SHAPES)
def test_rfftn_matches_numpy_float32(shape, axes):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape).astype(np.float32)
    keep = a.copy()
    got = fft.rfftn(a, axes=axes)
    ref = np.fft.rfftn(a.astype(np.float64), axes=axes)
    assert got.dtype == np.complex64
    assert got.shape == ref.shape == fft.rfft_shape(shape, axes)
    assert np.abs(got - ref).max() < 1e-5 * np.abs(ref).max()
    assert np.array_equal(a, keep)  # input untouched


@pytest.mark.parametrize(("shape", "axes"), SHAPES)
def test_round_trip_float32_and_input_preserved(shape, axes):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(shape).astype(np.float32)
    f = fft.rfftn(a, axes=axes)
    f_keep = f.copy()
    back = fft.irfftn(f, shape=shape, axes=axes)
    assert back.dtype == np.float32
    assert np.abs(back - a).max() < 1e-5
    assert np.array_equal(f, f_keep)  # the c2r transform must not destroy the caller's array
    # a second forward transform after an inverse one gives the same answer (plan reuse)
    again = fft.rfftn(a, axes=axes)
    assert np.abs(again - f).max() < 1e-5 * np.abs(f).max()


def test_float64_stays_float64_and_matches_numpy():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((12, 14, 16))
    f = fft.rfftn(a)
    assert f.dtype == np.complex128
    assert np.allclose(f, np.fft.rfftn(a), rtol=0, atol=1e-9)
    assert fft.irfftn(f).dtype == np.float64


def test_irfftn_matches_numpy_on_odd_length():
    rng = np.random.default_rng(3)
    f = np.fft.rfftn(rng.standard_normal((10, 12, 13))).astype(np.complex64)
    got = fft.irfftn(f, shape=(10, 12, 13))
    assert np.abs(got - np.fft.irfftn(f, s=(10, 12, 13), axes=(0, 1, 2))).max() < 1e-5
    with pytest.raises(ValueError, match="shape"):
        fft.irfftn(f, shape=(10, 12, 16))


def test_non_contiguous_input():
    rng = np.random.default_rng(4)
    big = rng.standard_normal((32, 32, 32)).astype(np.float32)
    view = big[::2, 1::2, ::2]
    assert np.abs(fft.rfftn(view) - np.fft.rfftn(view)).max() < 1e-3


def test_scipy_fallback_gives_same_answer(monkeypatch):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((16, 18, 20)).astype(np.float32)
    ref = fft.rfftn(a)
    monkeypatch.setattr(fft, "_force_scipy", True)
    assert fft.backend() == "scipy"
    got = fft.rfftn(a)
    assert got.dtype == np.complex64
    assert np.abs(got - ref).max() < 1e-4
    assert np.abs(fft.irfftn(got, shape=a.shape) - a).max() < 1e-5


def test_plan_cache_and_wisdom_round_trip(tmp_path):
    a = np.ones((8, 8, 8), np.float32)
    fft.rfftn(a, planner_effort="FFTW_ESTIMATE")
    assert fft.plan_cache_size() >= 1
    path = tmp_path / "wisdom.txt"
    if fft.backend() != "pyfftw":
        pytest.skip("pyFFTW not installed: no wisdom to export")
    assert fft.export_wisdom(path)
    assert fft.import_wisdom(path)
    assert not fft.import_wisdom(tmp_path / "missing.txt")
    fft.clear_plan_cache()
    assert fft.plan_cache_size() == 0


def test_rejects_complex_input_and_bad_effort():
    with pytest.raises(ValueError, match="real"):
        fft.rfftn(np.ones((4, 4), np.complex64))
    with pytest.raises(ValueError, match="planner_effort"):
        fft.rfftn(np.ones((4, 4), np.float32), planner_effort="FAST")
