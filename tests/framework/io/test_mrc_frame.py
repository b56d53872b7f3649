"""Where a map sits: the frame from MRC ORIGIN and/or NXSTART/NYSTART/NZSTART.

EMDB maps carry their frame in either field (EMD-1832: NSTART = -32 at 5.7 Å, ORIGIN 0). The
frame is the (z, y, x) position in Å of voxel (0, 0, 0); ORIGIN wins when it is non-zero,
else NSTART × voxel size (docs/conventions.md). Writing keeps the field the frame came in.
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from emforge.io import read_info, read_volume, write_volume

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
EMD1832 = DATA / "maps" / "emd_1832.map"


def _need_data() -> None:
    if not EMD1832.is_file():
        pytest.skip(f"real test data not found at {DATA}")


def _header(path: Path) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(ORIGIN x, y, z), (NXSTART, NYSTART, NZSTART) straight from mrcfile."""
    with mrcfile.open(path, header_only=True, permissive=True) as mrc:
        h = mrc.header
        origin = (float(h.origin.x), float(h.origin.y), float(h.origin.z))
        return origin, (int(h.nxstart), int(h.nystart), int(h.nzstart))


def _variant(path: Path, data: np.ndarray, voxel: float, *, origin_xyz=None, nstart_xyz=None):
    """Write ``data`` with mrcfile directly, the frame in ORIGIN, in NSTART, in both or none."""
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.asarray(data, np.float32))
        mrc.voxel_size = voxel
        if origin_xyz is not None:
            mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = origin_xyz
        if nstart_xyz is not None:
            mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = nstart_xyz


@pytest.mark.parametrize(
    "name, nstart, voxel", [("emd_1832.map", -32, 5.7), ("emd_5625.map", -28, 4.23)]
)
def test_emdb_frame_comes_from_nstart(name, nstart, voxel):
    """The data README's values: EMD-1832 at -32 × 5.7 = -182.4 Å, EMD-5625 at -118.44 Å."""
    _need_data()
    info = read_info(DATA / "maps" / name)
    assert info.header_origin == (0.0, 0.0, 0.0) and info.nstart == (nstart,) * 3
    assert info.origin == pytest.approx((nstart * voxel,) * 3, abs=0.01)
    assert info.origin_field == "nstart"


def test_three_variants_origin_nstart_none(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(8, 10, 12)).astype(np.float32)
    px = 2.5
    _variant(tmp_path / "o.mrc", data, px, origin_xyz=(-30.0, -25.0, -20.0))
    _variant(tmp_path / "n.mrc", data, px, nstart_xyz=(-12, -10, -8))
    _variant(tmp_path / "z.mrc", data, px)
    o, n, z = (read_info(tmp_path / f"{k}.mrc") for k in "onz")
    assert o.origin == pytest.approx((-20.0, -25.0, -30.0))  # (z, y, x)
    assert n.origin == pytest.approx(o.origin)
    assert z.origin == (0.0, 0.0, 0.0)
    assert (o.origin_field, n.origin_field, z.origin_field) == ("origin", "nstart", "none")


def test_origin_wins_over_a_disagreeing_nstart(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    _variant(tmp_path / "b.mrc", data, 2.0, origin_xyz=(10.0, 20.0, 30.0), nstart_xyz=(-2, -2, -2))
    info = read_info(tmp_path / "b.mrc")
    assert info.origin == pytest.approx((30.0, 20.0, 10.0)) and info.origin_field == "origin"
    _variant(tmp_path / "c.mrc", data, 2.0, origin_xyz=(-4.0, -4.0, -4.0), nstart_xyz=(-2, -2, -2))
    info = read_info(tmp_path / "c.mrc")  # the two agree: both are kept
    assert info.origin == pytest.approx((-4.0, -4.0, -4.0)) and info.origin_field == "both"


def test_nstart_follows_anisotropic_voxels_and_axis_order(tmp_path):
    """NSTART counts columns/rows/sections: MAPC/MAPR/MAPS = 3 1 2 moves them with the axes."""
    data = np.zeros((5, 6, 7), np.float32)  # raw (section, row, column) = (y, x, z)
    with mrcfile.new(tmp_path / "r.map") as mrc:
        mrc.set_data(data)
        h = mrc.header
        h.mapc, h.mapr, h.maps = 3, 1, 2  # columns along z, rows along x, sections along y
        h.mx, h.my, h.mz = 6, 5, 7  # counts along crystal x, y, z
        h.cella = (6 * 0.5, 5 * 0.4, 7 * 0.3)
        h.nxstart, h.nystart, h.nzstart = -1, -2, -3  # columns (z), rows (x), sections (y)
    info = read_info(tmp_path / "r.map")
    assert info.shape == (7, 5, 6) and info.nstart == (-1, -3, -2)
    assert info.origin == pytest.approx((-1 * 0.3, -3 * 0.4, -2 * 0.5))


@pytest.mark.parametrize("field", ["origin", "nstart", "both"])
def test_written_the_way_it_came(tmp_path, field):
    data = np.ones((8, 8, 8), np.float32)
    frame = (-20.0, -15.0, -10.0)  # (z, y, x) = nstart (-8, -6, -4) × 2.5 Å
    write_volume(tmp_path / "w.mrc", data, voxel_size=2.5, origin=frame, origin_field=field)
    origin_xyz, nstart_xyz = _header(tmp_path / "w.mrc")
    assert origin_xyz == ((-10.0, -15.0, -20.0) if field != "nstart" else (0.0, 0.0, 0.0))
    assert nstart_xyz == ((-4, -6, -8) if field != "origin" else (0, 0, 0))
    info = read_info(tmp_path / "w.mrc")
    assert info.origin == pytest.approx(frame) and info.origin_field == field


def test_nstart_that_is_not_whole_voxels_falls_back_to_origin(tmp_path):
    """A frame that NSTART cannot express (resampled map) is kept in ORIGIN, never rounded."""
    write_volume(
        tmp_path / "f.mrc",
        np.ones((4, 4, 4)),
        voxel_size=3.0,
        origin=(-5.0, -6.0, -7.0),
        origin_field="nstart",
    )
    origin_xyz, nstart_xyz = _header(tmp_path / "f.mrc")
    assert origin_xyz == (-7.0, -6.0, -5.0) and nstart_xyz == (0, 0, 0)
    assert read_info(tmp_path / "f.mrc").origin == pytest.approx((-5.0, -6.0, -7.0))


def test_emd1832_round_trip_keeps_nstart(tmp_path):
    _need_data()
    data, info = read_volume(EMD1832)
    write_volume(
        tmp_path / "c.map",
        data,
        voxel_size=info.voxel_size,
        origin=info.origin,
        origin_field=info.origin_field,
    )
    origin_xyz, nstart_xyz = _header(tmp_path / "c.map")
    assert nstart_xyz == (-32, -32, -32) and origin_xyz == (0.0, 0.0, 0.0)
    assert read_info(tmp_path / "c.map").origin == pytest.approx(info.origin, abs=0.01)


def test_pixel_size_override_rescales_an_nstart_frame(tmp_path):
    """NSTART is in voxels: a user-given pixel size moves the frame with it; ORIGIN (Å) stays."""
    _variant(tmp_path / "n.mrc", np.zeros((4, 4, 4)), 2.0, nstart_xyz=(-2, -2, -2))
    _, info = read_volume(tmp_path / "n.mrc", pixel_size=3.0)
    assert info.origin == pytest.approx((-6.0, -6.0, -6.0))
    _variant(tmp_path / "o.mrc", np.zeros((4, 4, 4)), 2.0, origin_xyz=(-4.0, -4.0, -4.0))
    _, info = read_volume(tmp_path / "o.mrc", pixel_size=3.0)
    assert info.origin == pytest.approx((-4.0, -4.0, -4.0))


def test_cell_angles_are_read():
    _need_data()
    info = read_info(DATA / "maps" / "EMD-3001.map")
    assert info.cell_angles == pytest.approx((90.0, 94.326, 90.0), abs=1e-3)
    assert not info.orthogonal
    assert read_info(EMD1832).orthogonal


def test_a_nan_origin_is_not_a_frame(tmp_path):
    """A NaN ORIGIN (seen in damaged headers) falls back to NSTART instead of poisoning every
    position downstream."""
    _variant(
        tmp_path / "n.mrc",
        np.zeros((4, 4, 4)),
        2.0,
        origin_xyz=(np.nan, 0.0, 0.0),
        nstart_xyz=(-2, -2, -2),
    )
    info = read_info(tmp_path / "n.mrc")
    assert info.origin == pytest.approx((-4.0, -4.0, -4.0)) and info.origin_field == "nstart"


def test_an_uninitialised_nstart_is_not_a_frame(tmp_path):
    """NSTART far beyond the grid (more than 10 × its size: garbage from an uninitialised
    header) would move the map by kilometres of Å; it is ignored, as Chimera does."""
    _variant(tmp_path / "g.mrc", np.zeros((4, 4, 4)), 2.0, nstart_xyz=(-1000000, 3, 3))
    info = read_info(tmp_path / "g.mrc")
    assert info.nstart == (3, 3, -1000000)
    assert info.origin == (0.0, 0.0, 0.0) and info.origin_field == "none"
