"""Streaming stack I/O: positioned reads into reused buffers, block statistics, write-back."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from emforge.errors import ParamError
from emforge.io import StackWriter, open_stack
from emforge.io import _mrc_stream as stream
from emforge.io._mrc_stream import StackStats


def _write(path, images, chunk, **kw):
    with StackWriter(path, images.shape, voxel_size=1.25, **kw) as w:
        for start in range(0, len(images), chunk):
            w.write(start, images[start : start + chunk])


def _header_stats(path):
    with mrcfile.open(path, header_only=True) as mrc:
        h = mrc.header
        return float(h.dmin), float(h.dmax), float(h.dmean), float(h.rms)


@pytest.mark.parametrize("chunk", [1, 7, 64, 200])  # 200 > n: one short block
def test_block_statistics_equal_numpy_on_the_whole_stack(tmp_path, chunk, monkeypatch):
    # a large mean over a small spread: sum-of-squares formulas lose every digit here
    monkeypatch.setattr(stream, "WRITEBACK_BYTES", 64 << 10)  # many write-back windows
    rng = np.random.default_rng(5)
    images = (1000.0 + rng.standard_normal((131, 24, 20))).astype(np.float32)
    path = tmp_path / "s.mrcs"
    _write(path, images, chunk)
    full = images.astype(np.float64)
    dmin, dmax, dmean, rms = _header_stats(path)
    assert dmin == images.min() and dmax == images.max()
    assert dmean == pytest.approx(full.mean(), rel=1e-6)
    assert rms == pytest.approx(full.std(), rel=1e-4)  # std ≈ 1 next to a mean of 1000
    with open(tmp_path / "validate.txt", "w") as log:
        assert mrcfile.validate(str(path), print_file=log)
    raw = path.read_bytes()
    assert len(raw) == 1024 + images.nbytes and raw[1024:] == images.tobytes()
    with open_stack(path) as s:
        assert s.info.is_stack and s.info.pixel_size == pytest.approx(1.25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mrcs", "validate.txt"]


def test_statistics_count_unwritten_images_as_zero_and_rewrites_once(tmp_path):
    images = np.random.default_rng(6).normal(5, 2, (6, 8, 8)).astype(np.float32)
    path = tmp_path / "z.mrcs"
    with StackWriter(path, (8, 8, 8), voxel_size=1.0) as w:
        w.write(0, images[:4] * 3)  # overwritten below: must not count twice
        w.write(0, images[:4])
        w.write(4, images[4:])
    expected = np.concatenate([images, np.zeros((2, 8, 8), np.float32)]).astype(np.float64)
    dmin, dmax, dmean, rms = _header_stats(path)
    assert (dmin, dmax) == (expected.min(), expected.max())
    assert dmean == pytest.approx(expected.mean(), rel=1e-6)
    assert rms == pytest.approx(expected.std(), rel=1e-5)
    with open_stack(path) as s:
        np.testing.assert_array_equal(s[:], expected.astype(np.float32))


def test_stack_stats_merge_matches_numpy():
    rng = np.random.default_rng(7)
    parts = [
        rng.normal(m, s, k).astype(np.float32)
        for m, s, k in ((0, 1, 10), (50, 3, 999), (-7, 0.1, 1))
    ]
    st = StackStats()
    for p in parts:
        st.add_block(p)
    st.add_constant(2.0, 5)
    allv = np.concatenate([*parts, np.full(5, 2.0, np.float32)]).astype(np.float64)
    assert st.count == allv.size and (st.min, st.max) == (allv.min(), allv.max())
    assert st.mean == pytest.approx(allv.mean(), rel=1e-6)  # float32 sums per image
    assert st.rms == pytest.approx(allv.std(), rel=1e-6)


@pytest.mark.parametrize("dtype", [">i2", "<f4", ">f4", "<u2", "<f2"])
def test_reader_reads_any_stored_dtype_into_float32(tmp_path, dtype):
    data = np.random.default_rng(8).normal(100, 30, (9, 5, 7)).astype(dtype)
    path = tmp_path / "d.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.set_image_stack()
    want = data.astype(np.float32)
    with open_stack(path) as s:
        out = np.full((4, 5, 7), np.nan, np.float32)
        assert s.read_into([8, 0, 1, 2], out) is out
        np.testing.assert_array_equal(out, want[[8, 0, 1, 2]])
        np.testing.assert_array_equal(s[2:9:3], want[2:9:3])
        np.testing.assert_array_equal(s[-1], want[-1])


def test_reader_checks_its_buffer_and_closes(tmp_path):
    path = tmp_path / "c.mrcs"
    _write(path, np.ones((3, 4, 4), np.float32), 3)
    s = open_stack(path)
    with pytest.raises(ParamError, match="out"):
        s.read_into(slice(0, 2), np.empty((3, 4, 4), np.float32))
    with pytest.raises(ParamError, match="out"):
        s.read_into(slice(0, 2), np.empty((2, 4, 4), np.float64))
    with pytest.raises(IndexError):
        s[[0, 3]]
    s.close()
    with pytest.raises(ValueError, match="closed"):
        s[0]


def test_reader_dropping_the_cache_reads_the_same(tmp_path):
    images = np.random.default_rng(9).standard_normal((50, 16, 16)).astype(np.float32)
    path = tmp_path / "r.mrcs"
    _write(path, images, 50)
    with open_stack(path, drop_cache=True) as s:
        buf = np.empty((8, 16, 16), np.float32)
        got = [s.read_into(slice(a, a + 8), buf).copy() for a in range(0, 48, 8)]
    np.testing.assert_array_equal(np.concatenate(got), images[:48])
