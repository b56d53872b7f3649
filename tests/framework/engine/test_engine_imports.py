"""Import protocols on the real files of ``../shared/data`` (pixel sizes and counts from its
README and the STAR files), and bad files: one clear line, exit status 2 in the CLI."""

from __future__ import annotations

import shutil

import mrcfile
import numpy as np
import pytest

from emforge.cli import main
from emforge.engine.listing import run_rows
from emforge.errors import EmforgeError, ValidationError
from emforge.io import read_info, read_volume
from emforge.project import Project

# file -> (shape (z, y, x), voxel size (z, y, x) in Å), from the data README
MAPS = {
    "emd_3488.mrc": ((100, 100, 100), (1.05, 1.05, 1.05)),
    "emd_1832.map": ((64, 64, 64), (5.7, 5.7, 5.7)),
    "emd_5625.map": ((56, 56, 56), (4.23, 4.23, 4.23)),
    # MicroED map, axis order mapc/mapr/maps = 3/1/2: 73 columns run along z, 43 rows along x
    "EMD-3001.map": ((73, 25, 43), (0.45875, 0.3925, 0.44825)),
    "EMD-3197.map": ((20, 20, 20), (11.4, 11.4, 11.4)),
}


def _import(project: Project, protocol: str, **params) -> object:
    rid = project.run(protocol, params=params, workers=1)
    (out,) = project.outputs(rid).values()
    return out


def test_import_every_real_map(project, data_dir):
    found = sorted(p.name for p in (data_dir / "maps").iterdir() if p.suffix in (".map", ".mrc"))
    assert set(found) - set(MAPS) == {"emd_3488_contour_mask.mrc"}
    for name, (shape, voxel) in MAPS.items():
        if name == "EMD-3001.map":  # non-orthogonal cell (beta 94.33°): refused, one line
            with pytest.raises(ValidationError, match="non-orthogonal cell"):
                _import(project, "import.volume", path=str(data_dir / "maps" / name))
            continue
        vol = _import(project, "import.volume", path=str(data_dir / "maps" / name))
        # the frame as deposited (EMD-1832: NSTART -32 × 5.7 Å; EMD-5625: -28 × 4.23 Å)
        assert vol.origin == pytest.approx(read_info(data_dir / "maps" / name).origin), name
        assert vol.kind == "Volume" and tuple(vol.shape) == shape, name
        np.testing.assert_allclose(vol.voxel_size, voxel, rtol=1e-4, err_msg=name)
        assert vol.pixel_size == pytest.approx(voxel[2], rel=1e-4)
        data, _ = read_volume(vol.path)
        assert data.dtype == np.float32 and data.shape == shape
        with mrcfile.open(data_dir / "maps" / name, permissive=True) as src:
            raw = np.asarray(src.data, dtype=np.float32)
            standard = (int(src.header.mapc), int(src.header.mapr), int(src.header.maps)) == (
                1,
                2,
                3,
            )
        if standard:  # same voxels in the same (z, y, x) order
            np.testing.assert_array_equal(data, raw)
        else:  # same voxels, re-ordered
            np.testing.assert_allclose(np.sort(data, axis=None), np.sort(raw, axis=None))


def test_import_contour_mask(project, data_dir):
    mask = _import(
        project, "import.mask", path=str(data_dir / "maps" / "emd_3488_contour_mask.mrc")
    )
    assert mask.kind == "VolumeMask" and tuple(mask.shape) == (100, 91, 91) and not mask.soft
    assert mask.pixel_size == pytest.approx(1.05)
    data, _ = read_volume(mask.path)
    assert set(np.unique(data).tolist()) == {0.0, 1.0}


@pytest.mark.parametrize(
    "star, count, pixel_size, box",
    [
        ("relion31.star", 5, 2.806, 256),
        ("sample_particles_relion31.star", 17, 1.4, 200),
        ("empiar_10076_7.star", 7, 1.31, 320),  # 5 µm detector pixel / 38168× magnification
    ],
)
def test_import_particles_with_star(project, data_dir, star, count, pixel_size, box):
    parts = _import(project, "import.particles", star=str(data_dir / "particles" / star))
    assert parts.kind == "SetOfParticles" and len(parts) == count
    cols = parts.read()
    np.testing.assert_allclose(cols["pixel_size"], pixel_size, rtol=1e-5)
    assert parts.attrs["box"] == [box, box]
    assert cols["image_index"].tolist() == list(range(count))  # STAR 1-based -> 0-based


def test_import_tomograms_and_em_reference(project, data_dir):
    tomos = _import(
        project, "import.tomograms", path=str(data_dir / "tomo" / "*.tif"), pixel_size=10.52
    )
    assert tomos.kind == "SetOfTomograms" and len(tomos) == 2
    np.testing.assert_allclose(tomos.read()["pixel_size"], 10.52)
    for path in tomos.read()["image_path"]:
        data, info = read_volume(path)
        assert (
            data.ndim == 3
            and data.dtype == np.float32
            and info.voxel_size == pytest.approx((10.52,) * 3)
        )

    em = str(data_dir / "tomo" / "bin4_voxel2.176_ribosome.em")
    with pytest.raises(ValidationError) as info:
        project.run("import.volume", params={"path": em})
    (line,) = info.value.lines()
    assert "pixel_size" in line and em in line
    ref = _import(project, "import.volume", path=em, pixel_size=8.7)
    assert tuple(ref.shape) == (48, 48, 48) and ref.pixel_size == pytest.approx(8.7)


def test_import_tilt_series_particles_as_coordinates(project, data_dir):
    star = (
        data_dir
        / "tomo"
        / "ribosome_tiltseries"
        / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12.star"
    )
    coords = _import(project, "import.coordinates3d", path=str(star))
    assert coords.kind == "SetOfCoordinates3D" and len(coords) == 40
    cols = coords.read()
    tomos, counts = np.unique(cols["tomogram"].astype(str), return_counts=True)
    assert len(tomos) == 4 and counts.tolist() == [10, 10, 10, 10]
    assert np.all(np.isfinite(cols["x"])) and np.all(np.isfinite(cols["z"]))


@pytest.fixture
def bad_files(tmp_path, data_dir):
    raw = (data_dir / "maps" / "emd_5625.map").read_bytes()
    files = {
        "truncated": tmp_path / "truncated.mrc",
        "text": tmp_path / "text.mrc",
        "star": tmp_path / "garbage.star",
        "orphan_star": tmp_path / "orphan.star",
    }
    files["truncated"].write_bytes(raw[: len(raw) // 2])
    files["text"].write_text("not a map\n" * 200)
    files["star"].write_text("data_\nloop_\n_rlnFoo #1\n1\n2\n")
    shutil.copyfile(
        data_dir / "particles" / "empiar_10076_7.star", files["orphan_star"]
    )  # its stack is not there
    return files


def test_bad_files_give_one_line_and_exit_2(project, bad_files, capsys):
    cases = [
        # protocol, param, value, words of the message, the file it names
        ("import.volume", "path", "/no/such/map.mrc", "no such file", "map.mrc"),
        ("import.volume", "path", bad_files["truncated"], "truncated", "truncated.mrc"),
        ("import.volume", "path", bad_files["text"], "not an MRC file", "text.mrc"),
        ("import.mask", "path", bad_files["truncated"], "truncated", "truncated.mrc"),
        ("import.tomograms", "path", bad_files["text"], "not an MRC file", "text.mrc"),
        ("import.particles", "stack", bad_files["truncated"], "truncated", "truncated.mrc"),
        ("import.particles", "star", bad_files["star"], "rlnImageName", "garbage.star"),
        (
            "import.particles",
            "star",
            bad_files["orphan_star"],
            "does not exist",
            "empiar_10076_7.mrc",
        ),
    ]
    for protocol, name, path, words, named in cases:
        rc = main(["run", protocol, "-P", str(project.path), "-p", f"{name}={path}"])
        cap = capsys.readouterr()
        lines = cap.err.strip().splitlines()
        assert rc == 2, (protocol, path, cap.err)
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in cap.err, (
            protocol,
            lines,
        )
        assert named in lines[0], lines
    assert project.list_objects() == []
    assert run_rows(project) == []  # no run was recorded


def test_bad_coordinates_file_exit_2(project, bad_files, tmp_path, capsys):
    two = tmp_path / "two_columns.txt"
    two.write_text("1 2\n3 4\n")
    for path in (two, bad_files["star"]):
        rc = main(["run", "import.coordinates3d", "-P", str(project.path), "-p", f"path={path}"])
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(path) in err
        assert rc == 2


def test_corrupt_tiff_is_one_line(project, tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"garbage" * 10)
    with pytest.raises(EmforgeError):
        project.run("import.volume", params={"path": str(bad), "pixel_size": 1.0})
