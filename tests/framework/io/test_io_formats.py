"""Tests of emforge.io.formats: TIFF volumes, the EM format and the extension dispatcher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from emforge.errors import InputFileError, ParamError
from emforge.io.formats import read_em, read_image_file, read_tiff_volume
from emforge.io.mrc import write_volume

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
TOMO = DATA / "tomo"


def _need_data() -> None:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA}")


@pytest.mark.parametrize(
    ("name", "shape"), [("13pf_MT.tif", (36, 206, 94)), ("14pf_MT.tif", (44, 136, 84))]
)
def test_microtubule_tiffs(name, shape):
    _need_data()
    data, voxel = read_tiff_volume(TOMO / name)
    assert data.shape == shape and data.dtype == np.float32
    np.testing.assert_array_equal(data, tifffile.imread(TOMO / name).astype(np.float32))
    assert voxel == pytest.approx((10.52, 10.52, 10.52))  # README: 10.52 Å/px


def test_synthetic_tiff_without_metadata(tmp_path):
    values = np.random.default_rng(0).integers(0, 255, (3, 5, 4)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "v.tif", values)
    data, voxel = read_tiff_volume(tmp_path / "v.tif")
    np.testing.assert_array_equal(data, values.astype(np.float32))
    assert voxel is None
    tifffile.imwrite(tmp_path / "i.tiff", values[0])
    assert read_tiff_volume(tmp_path / "i.tiff")[0].shape == (1, 5, 4)


def test_ribosome_em_is_a_sensible_volume():
    _need_data()
    data, voxel = read_em(TOMO / "bin4_voxel2.176_ribosome.em")
    assert data.shape == (48, 48, 48) and data.dtype == np.float32 and voxel is None
    assert np.all(np.isfinite(data)) and np.abs(data).max() < 1.0  # not byte-swapped garbage
    radius = np.sqrt(((np.indices(data.shape) - 24) ** 2).sum(0))
    inner, outer = data[radius < 10], data[radius > 20]
    # a ribosome: strong (dark, negative) density in the middle, flat solvent outside
    assert inner.mean() < -3 * outer.std() and abs(outer.mean()) < 0.5 * outer.std()
    assert inner.std() > 3 * outer.std()
    weight = np.abs(data - np.median(data))
    centre = [float((weight * g).sum() / weight.sum()) for g in np.indices(data.shape)]
    assert centre == pytest.approx([24, 24, 24], abs=2.0)


def _em_file(path: Path, values: np.ndarray, machine: int, code: int) -> None:
    order = "<" if machine == 6 else ">"
    header = bytearray(512)
    header[0], header[3] = machine, code
    nz, ny, nx = values.shape
    header[4:16] = np.array([nx, ny, nz], dtype=order + "i4").tobytes()
    path.write_bytes(bytes(header) + values.astype(values.dtype.newbyteorder(order)).tobytes())


@pytest.mark.parametrize(
    ("machine", "code", "dtype"),
    [(6, 5, np.float32), (6, 2, np.int16), (5, 5, np.float32), (0, 2, np.int16), (6, 1, np.uint8)],
)
def test_em_synthetic(tmp_path, machine, code, dtype):
    values = (np.random.default_rng(1).normal(0, 30, (3, 4, 5))).astype(dtype)
    _em_file(tmp_path / "s.em", values, machine, code)
    data, _ = read_em(tmp_path / "s.em")
    np.testing.assert_array_equal(data, values.astype(np.float32))


def test_em_errors(tmp_path):
    values = np.zeros((3, 4, 5), np.float32)
    _em_file(tmp_path / "t.em", values, 6, 5)
    raw = (tmp_path / "t.em").read_bytes()
    (tmp_path / "t.em").write_bytes(raw[:-8])
    with pytest.raises(
        InputFileError, match=r"t\.em: truncated: header says 240 bytes of data, file has 232"
    ):
        read_em(tmp_path / "t.em")
    (tmp_path / "x.em").write_bytes(b"text " * 200)
    with pytest.raises(InputFileError, match=r"x\.em: not an EM file"):
        read_em(tmp_path / "x.em")
    with pytest.raises(InputFileError, match=r"none\.em: file not found"):
        read_em(tmp_path / "none.em")


def test_dispatcher(tmp_path):
    volume = np.random.default_rng(2).normal(size=(4, 5, 6)).astype(np.float32)
    for ext in (".mrc", ".map", ".rec", ".st", ".ali", ".mrcs", ".MRC"):
        write_volume(tmp_path / f"v{ext}", volume, voxel_size=(1.0, 2.0, 3.0), origin=(4, 5, 6))
        data, voxel, origin = read_image_file(tmp_path / f"v{ext}")
        np.testing.assert_array_equal(data, volume)
        assert voxel == (1.0, 2.0, 3.0) and origin == (4.0, 5.0, 6.0)
    _, voxel, _ = read_image_file(tmp_path / "v.mrc", pixel_size=0.5)
    assert voxel == (0.5, 0.5, 0.5)
    with pytest.raises(ParamError, match="pixel_size"):
        read_image_file(tmp_path / "v.mrc", pixel_size=0)
    (tmp_path / "p.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputFileError, match=r"p\.png: unknown image file extension '\.png'"):
        read_image_file(tmp_path / "p.png")


def test_dispatcher_on_real_files():
    _need_data()
    data, voxel, _ = read_image_file(DATA / "particles" / "sample.mrcs")
    assert data.shape == (17, 200, 200) and voxel is None  # header says 0
    _, voxel, _ = read_image_file(DATA / "particles" / "sample.mrcs", pixel_size=1.4)
    assert voxel == (1.4, 1.4, 1.4)
    data, voxel, _ = read_image_file(TOMO / "13pf_MT.tif")
    assert data.shape == (36, 206, 94) and voxel == pytest.approx((10.52,) * 3)
    data, voxel, origin = read_image_file(TOMO / "bin4_voxel2.176_ribosome.em", pixel_size=8.7)
    assert data.shape == (48, 48, 48) and voxel == (8.7, 8.7, 8.7) and origin == (0, 0, 0)
    data, voxel, _ = read_image_file(DATA / "maps" / "emd_3488.mrc")
    assert voxel == (1.05, 1.05, 1.05)
