"""Tests of emforge.io.mrc against mrcfile itself, the real data and synthetic files."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from emforge.errors import InputFileError, ParamError
from emforge.io.mrc import (
    StackWriter,
    open_stack,
    read_info,
    read_volume,
    write_stack,
    write_volume,
)

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
MAPS = sorted((DATA / "maps").glob("*")) if DATA.is_dir() else []
STACKS = sorted((DATA / "particles").glob("*.mrc*")) if DATA.is_dir() else []

# From the data README (nx*ny*nz reordered to z, y, x for EMD-3001; voxel size z, y, x).
README = {
    "emd_3488.mrc": ((100, 100, 100), (1.05, 1.05, 1.05), (0, 0, 0)),
    "emd_3488_contour_mask.mrc": ((100, 91, 91), (1.05, 1.05, 1.05), (0, 0, 0)),
    "emd_1832.map": ((64, 64, 64), (5.7, 5.7, 5.7), (-32, -32, -32)),
    "emd_5625.map": ((56, 56, 56), (4.23, 4.23, 4.23), (-28, -28, -28)),
    "EMD-3001.map": ((73, 25, 43), (0.459, 0.392, 0.448), None),
    "EMD-3197.map": ((20, 20, 20), (11.4, 11.4, 11.4), None),
}
# The particles README: the STAR file is the pixel-size authority (headers say 0 or 1).
STAR_PIXEL = {"relion31.mrcs": 2.806, "sample.mrcs": 1.4, "empiar_10076_7.mrc": 5e4 / 38168}


def _need_data() -> None:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA}")


def _raw(path: Path):
    """Header values and data straight from mrcfile (permissive: relion31.mrcs lacks 'MAP ')."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(path, permissive=True) as mrc:
            h = mrc.header
            cell = [float(h.cella[a]) for a in "xyz"]
            m = [int(h.mx), int(h.my), int(h.mz)]
            vox_xyz = [c / s if s else 0.0 for c, s in zip(cell, m, strict=True)]
            return {
                "mapcrs": (int(h.mapc), int(h.mapr), int(h.maps)),
                "nxyz": (int(h.nx), int(h.ny), int(h.nz)),
                "vox_xyz": vox_xyz,
                "origin_xyz": [float(h.origin[a]) for a in "xyz"],
                "nstart_crs": (int(h.nxstart), int(h.nystart), int(h.nzstart)),
                "mode": int(h.mode),
                "data": np.array(mrc.data),
            }


@pytest.mark.parametrize("path", MAPS + STACKS, ids=lambda p: p.name)
def test_real_files_match_mrcfile_header(path):
    _need_data()
    raw = _raw(path)
    info = read_info(path)
    data, info2 = read_volume(path)
    assert info2 == info
    nx, ny, nz = raw["nxyz"]
    assert raw["mapcrs"] in ((1, 2, 3), (3, 1, 2))
    if raw["mapcrs"] == (1, 2, 3):
        assert info.shape == (nz, ny, nx)
        expected = raw["data"].reshape(info.shape)
        assert info.nstart == raw["nstart_crs"][::-1]
    else:  # EMD-3001: columns run along z, rows along x, sections along y
        assert info.shape == (nx, nz, ny)
        expected = raw["data"].transpose(2, 0, 1)
        c, r, s = raw["nstart_crs"]
        assert info.nstart == (c, s, r)
    np.testing.assert_array_equal(data, expected.astype(np.float32))
    assert data.dtype == np.float32 and data.flags.c_contiguous
    assert info.voxel_size == pytest.approx(raw["vox_xyz"][::-1], rel=1e-6)
    assert info.header_origin == pytest.approx(raw["origin_xyz"][::-1])
    # the frame: ORIGIN when non-zero, else NSTART × voxel size (EMD-1832: -32 × 5.7 Å)
    frame = (
        raw["origin_xyz"][::-1]
        if any(raw["origin_xyz"])
        else [n * v for n, v in zip(info.nstart, info.voxel_size, strict=True)]
    )
    assert info.origin == pytest.approx(frame, abs=1e-3)
    assert info.mode == raw["mode"]


@pytest.mark.parametrize("name", sorted(README))
def test_real_maps_match_readme_table(name):
    _need_data()
    shape, voxel, nstart = README[name]
    info = read_info(DATA / "maps" / name)
    assert info.shape == shape
    assert info.voxel_size == pytest.approx(voxel, abs=1e-3)
    if nstart is not None:
        assert info.nstart == nstart
    assert info.is_stack == (name == "emd_3488_contour_mask.mrc")  # ISPG 0 in the header


@pytest.mark.parametrize("path", MAPS, ids=lambda p: p.name)
def test_real_maps_round_trip(path, tmp_path):
    _need_data()
    data, info = read_volume(path)
    out = tmp_path / "copy.mrc"
    write_volume(out, data, voxel_size=info.voxel_size, origin=info.origin)
    data2, info2 = read_volume(out)
    np.testing.assert_array_equal(data2, data)
    assert info2.shape == info.shape
    assert info2.voxel_size == pytest.approx(info.voxel_size, rel=1e-6)
    assert info2.origin == pytest.approx(info.origin)
    assert info2.axis_order == (1, 2, 3) and info2.mode == 2


def test_emd3001_anisotropic_voxels_survive(tmp_path):
    _need_data()
    data, info = read_volume(DATA / "maps" / "EMD-3001.map")
    assert info.voxel_size == pytest.approx((33.03 / 72, 4.71 / 12, 17.93 / 40), rel=1e-5)
    write_volume(tmp_path / "a.mrc", data, voxel_size=info.voxel_size)
    with mrcfile.open(tmp_path / "a.mrc") as mrc:
        assert (mrc.voxel_size.z, mrc.voxel_size.y, mrc.voxel_size.x) == pytest.approx(
            info.voxel_size, rel=1e-6
        )
    assert read_info(tmp_path / "a.mrc").voxel_size == pytest.approx(info.voxel_size, rel=1e-6)


def test_emd1832_nstart():
    _need_data()
    assert read_info(DATA / "maps" / "emd_1832.map").nstart == (-32, -32, -32)


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.name)
def test_particle_stacks_pixel_size_from_star(path, tmp_path):
    _need_data()
    header = read_info(path)
    assert min(header.voxel_size) in (0.0, 1.0)  # wrong in the header, as the README says
    px = STAR_PIXEL[path.name]
    data, info = read_volume(path, pixel_size=px)
    assert info.voxel_size == (px, px, px)
    write_stack(tmp_path / "s.mrcs", data, voxel_size=px)
    back, info2 = read_volume(tmp_path / "s.mrcs", require_pixel_size=True)
    np.testing.assert_array_equal(back, data)
    assert info2.is_stack and info2.pixel_size == pytest.approx(px, rel=1e-6)


def test_require_pixel_size_names_the_file():
    _need_data()
    path = DATA / "particles" / "empiar_10076_7.mrc"
    with pytest.raises(ParamError, match=r"pixel_size: the header of .*empiar_10076_7\.mrc says 0"):
        read_volume(path, require_pixel_size=True)
    read_volume(DATA / "particles" / "relion31.mrcs", require_pixel_size=True)  # 1 Å passes
    _, info = read_volume(path, pixel_size=1.31, require_pixel_size=True)
    assert info.voxel_size == (1.31, 1.31, 1.31)
    with pytest.raises(ParamError, match="pixel_size"):
        read_volume(path, pixel_size=-1.0)


@pytest.mark.parametrize(
    ("mode", "dtype"),
    [(0, np.int8), (1, np.int16), (2, np.float32), (6, np.uint16), (12, np.float16)],
)
def test_modes_read_exactly(tmp_path, mode, dtype):
    rng = np.random.default_rng(mode)
    if np.dtype(dtype).kind == "f":
        values = rng.normal(0, 100, (3, 5, 7)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, (3, 5, 7), endpoint=True).astype(dtype)
    path = tmp_path / f"m{mode}.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(values)
        mrc.voxel_size = 2.0
    data, info = read_volume(path)
    assert info.mode == mode and info.dtype == np.dtype(dtype)
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, values.astype(np.float32))
    # write_volume keeps this dtype
    write_volume(tmp_path / "w.mrc", values, voxel_size=2.0)
    with mrcfile.open(tmp_path / "w.mrc") as mrc:
        assert int(mrc.header.mode) == mode
        np.testing.assert_array_equal(mrc.data, values)


@pytest.mark.parametrize("dtype", [np.float64, np.uint8, np.int32, bool])
def test_other_dtypes_written_as_float32(tmp_path, dtype):
    values = (np.arange(24).reshape(2, 3, 4) % 2).astype(dtype)
    write_volume(tmp_path / "f.mrc", values, voxel_size=1.0)
    data, info = read_volume(tmp_path / "f.mrc")
    assert info.mode == 2
    np.testing.assert_array_equal(data, values.astype(np.float32))


def _reordered_file(path: Path, volume: np.ndarray, mapcrs, voxel_zyx, nstart_zyx, origin_zyx):
    """Write a (z, y, x) volume with the given MAPC/MAPR/MAPS, as cctbx and others do."""
    c, r, s = mapcrs
    zyx_axis = {3: 0, 2: 1, 1: 2}  # crystal axis -> axis of the (z, y, x) volume
    raw = volume.transpose(zyx_axis[s], zyx_axis[r], zyx_axis[c])  # raw[section, row, col]
    counts_xyz = volume.shape[::-1]
    vox_xyz = voxel_zyx[::-1]
    start_xyz = nstart_zyx[::-1]
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ascontiguousarray(raw))
        h = mrc.header
        h.mapc, h.mapr, h.maps = c, r, s
        h.mx, h.my, h.mz = counts_xyz
        h.cella = tuple(n * v for n, v in zip(counts_xyz, vox_xyz, strict=True))
        h.nxstart, h.nystart, h.nzstart = (start_xyz[c - 1], start_xyz[r - 1], start_xyz[s - 1])
        h.origin.x, h.origin.y, h.origin.z = origin_zyx[::-1]


@pytest.mark.parametrize("mapcrs", [(3, 2, 1), (2, 3, 1), (3, 1, 2), (1, 2, 3)])
def test_axis_reordering(tmp_path, mapcrs):
    volume = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    voxel, nstart, origin = (1.5, 2.0, 2.5), (-3, -2, -1), (10.0, 20.0, 30.0)
    path = tmp_path / "r.map"
    _reordered_file(path, volume, mapcrs, voxel, nstart, origin)
    with mrcfile.open(path) as mrc:  # the file really is stored in the other order
        assert (int(mrc.header.mapc), int(mrc.header.mapr), int(mrc.header.maps)) == mapcrs
    data, info = read_volume(path)
    np.testing.assert_array_equal(data, volume)
    assert info.shape == (6, 5, 4) and info.axis_order == mapcrs
    assert info.voxel_size == pytest.approx(voxel)
    assert info.nstart == nstart
    assert info.origin == pytest.approx(origin)
    assert read_info(path) == info


def test_stack_with_swapped_rows_and_columns(tmp_path):
    images = np.random.default_rng(1).normal(size=(3, 5, 4)).astype(np.float32)
    path = tmp_path / "t.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ascontiguousarray(images.transpose(0, 2, 1)))
        mrc.set_image_stack()
        mrc.header.mapc, mrc.header.mapr = 2, 1
    with open_stack(path) as stack:
        assert stack.shape == (3, 5, 4)
        np.testing.assert_array_equal(stack[1], images[1])
        np.testing.assert_array_equal(stack[:], images)


# --------------------------------------------------------------------------- errors


def _good(tmp_path: Path) -> Path:
    path = tmp_path / "good.mrc"
    write_volume(path, np.ones((20, 20, 20), np.float32), voxel_size=1.0)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match=r"nothere\.mrc: file not found"):
        read_volume(tmp_path / "nothere.mrc")
    with pytest.raises(InputFileError, match=r"nothere\.mrcs: file not found"):
        open_stack(tmp_path / "nothere.mrcs")


@pytest.mark.parametrize(
    "content",
    [
        b"just some text\n",
        b"# a long text file\n" * 200,
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8,
    ],
    ids=["short-text", "long-text", "png"],
)
def test_not_an_mrc_file(tmp_path, content):
    path = tmp_path / "fake.mrc"
    path.write_bytes(content)
    for reader in (read_info, read_volume, open_stack):
        with pytest.raises(InputFileError, match=r"fake\.mrc: not an MRC file"):
            reader(path)


def test_truncated_file(tmp_path):
    path = _good(tmp_path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 100)
    msg = re.escape("good.mrc: truncated: header says 32000 bytes of data, file has 31900")
    for reader in (read_info, read_volume, open_stack):
        with pytest.raises(InputFileError, match=msg):
            reader(path)


def test_unsupported_mode(tmp_path):
    path = tmp_path / "complex.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ones((2, 3, 4), np.complex64))
    with pytest.raises(InputFileError, match=r"complex\.mrc: unsupported MRC mode 4"):
        read_volume(path)


def test_errors_are_one_line(tmp_path):
    path = tmp_path / "fake.mrc"
    path.write_bytes(b"text\n" * 400)
    with pytest.raises(InputFileError) as err:
        read_volume(path)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- stacks


@pytest.mark.parametrize("name", ["sample.mrcs", "relion31.mrcs", "empiar_10076_7.mrc"])
def test_stack_reader_matches_mrcfile(name):
    _need_data()
    path = DATA / "particles" / name
    expected = _raw(path)["data"]
    with open_stack(path) as stack:
        n = len(stack)
        assert stack.shape == expected.shape and stack.info.shape == expected.shape
        np.testing.assert_array_equal(stack[0], expected[0])
        np.testing.assert_array_equal(stack[-1], expected[-1])
        np.testing.assert_array_equal(stack[1:4], expected[1:4])
        np.testing.assert_array_equal(stack[[4, 0, 2]], expected[[4, 0, 2]])
        np.testing.assert_array_equal(stack[np.array([3, 1])], expected[[3, 1]])
        mask = np.arange(n) % 2 == 0
        np.testing.assert_array_equal(stack[mask], expected[mask])
        chunks = list(stack.iter_chunks(3))
        assert [s for s, _ in chunks] == list(range(0, n, 3))
        np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), expected)
        assert stack[0].dtype == np.float32
        with pytest.raises(IndexError):
            stack[n]


def test_single_image_is_a_stack_of_one(tmp_path):
    image = np.random.default_rng(2).normal(size=(6, 7)).astype(np.float32)
    write_volume(tmp_path / "one.mrc", image, voxel_size=1.2)
    with open_stack(tmp_path / "one.mrc") as stack:
        assert len(stack) == 1 and stack.shape == (1, 6, 7)
        np.testing.assert_array_equal(stack[0], image)
    data, info = read_volume(tmp_path / "one.mrc")
    assert data.shape == (1, 6, 7) and info.shape == (1, 6, 7) and not info.is_stack


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int16])
def test_stack_writer_streams(tmp_path, dtype):
    rng = np.random.default_rng(3)
    images = rng.normal(0, 50, (10, 8, 6)).astype(dtype)
    path = tmp_path / "out.mrcs"
    with StackWriter(path, images.shape, voxel_size=1.7, dtype=dtype) as writer:
        for start in (8, 0, 4):  # any order, blocks and single images
            writer.write(start, images[start : start + 4])
        writer.write(3, images[3])
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    with mrcfile.open(path) as mrc:
        np.testing.assert_array_equal(mrc.data, images)
        assert mrc.is_image_stack()
        stored = images.astype(np.float64)
        assert float(mrc.header.dmin) == pytest.approx(stored.min())
        assert float(mrc.header.dmax) == pytest.approx(stored.max())
        assert float(mrc.header.dmean) == pytest.approx(stored.mean(), rel=1e-5, abs=1e-5)
        assert float(mrc.header.rms) == pytest.approx(stored.std(), rel=1e-5)
    data, info = read_volume(path)
    assert info.is_stack and info.pixel_size == pytest.approx(1.7)
    np.testing.assert_array_equal(data, images.astype(np.float32))


def test_stack_writer_unwritten_images_are_zero(tmp_path):
    with StackWriter(tmp_path / "z.mrcs", (4, 3, 3), voxel_size=1.0) as writer:
        writer.write(1, np.ones((3, 3)))
    data, _ = read_volume(tmp_path / "z.mrcs")
    assert data[1].sum() == 9 and data[[0, 2, 3]].sum() == 0


def test_stack_writer_crash_leaves_no_file(tmp_path):
    path = tmp_path / "crash.mrcs"
    with pytest.raises(RuntimeError, match="boom"):
        with StackWriter(path, (5, 4, 4), voxel_size=1.0) as writer:
            writer.write(0, np.ones((2, 4, 4)))
            raise RuntimeError("boom")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_crash_keeps_the_old_file(tmp_path):
    path = _good(tmp_path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with StackWriter(path, (2, 4, 4), voxel_size=1.0):
            raise RuntimeError("boom")
    assert path.read_bytes() == before
    with pytest.raises(ParamError, match="data"):
        write_volume(path, np.ones((2, 2, 2, 2)), voxel_size=1.0)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_stack_writer_checks_blocks(tmp_path):
    with pytest.raises(ParamError, match="block"):
        with StackWriter(tmp_path / "b.mrcs", (2, 4, 4), voxel_size=1.0) as writer:
            writer.write(1, np.ones((2, 4, 4)))
    assert not (tmp_path / "b.mrcs").exists()


def test_write_volume_header(tmp_path):
    path = tmp_path / "v.mrc"
    volume = np.zeros((4, 5, 6), np.float32)
    write_volume(path, volume, voxel_size=(1.0, 2.0, 3.0), origin=(-10.0, 20.0, 30.5))
    write_volume(path, volume + 1, voxel_size=(1.0, 2.0, 3.0), origin=(-10.0, 20.0, 30.5))
    with mrcfile.open(path) as mrc:
        assert (float(mrc.header.origin.x), float(mrc.header.origin.z)) == (30.5, -10.0)
        assert (float(mrc.voxel_size.x), float(mrc.voxel_size.z)) == (3.0, 1.0)
        assert mrc.data.shape == (4, 5, 6) and mrc.data.min() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["v.mrc"]
    with pytest.raises(ParamError, match="voxel_size"):
        write_volume(path, volume, voxel_size=0)


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.int16, np.uint16, np.int8, np.float16]
)
def test_write_volume_header_statistics_are_those_of_the_stored_values(tmp_path, dtype):
    """DMIN, DMAX, DMEAN, RMS (standard deviation) of the values as stored, from float64
    arithmetic on them; a large mean does not cancel the rms."""
    rng = np.random.default_rng(7)
    data = (rng.standard_normal((9, 31, 17)) * 10 + 50).astype(dtype)
    path = tmp_path / f"v_{np.dtype(dtype).name}.mrc"
    write_volume(path, data, voxel_size=1.5)
    stored = read_volume(path)[0].astype(np.float64)
    with mrcfile.open(path) as mrc:
        h = mrc.header
        assert float(h.dmin) == stored.min() and float(h.dmax) == stored.max()
        assert float(h.dmean) == pytest.approx(stored.mean(), rel=1e-6)
        assert float(h.rms) == pytest.approx(stored.std(), rel=1e-5)
    write_volume(path, np.full((4, 4, 4), 1e4, dtype=np.float32) + np.arange(4.0), voxel_size=1)
    with mrcfile.open(path) as mrc:
        assert float(mrc.header.rms) == pytest.approx(np.arange(4.0).std(), rel=1e-5)
