"""Tests of emforge.io.star on the real STAR files and small synthetic ones."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import starfile

from emforge.errors import InputFileError, ParamError
from emforge.io.star import (
    read_coordinates3d_star,
    read_particles_star,
    read_star_blocks,
    write_coordinates3d_star,
    write_particles_star,
)

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
PARTICLES = DATA / "particles"
TOMO = DATA / "tomo" / "ribosome_tiltseries"
REAL = ["relion31.star", "sample_particles_relion31.star", "empiar_10076_7.star"]
PIXEL = {
    "relion31.star": 2.806,
    "sample_particles_relion31.star": 1.4,
    "empiar_10076_7.star": 5 * 1e4 / 38168,
}
STACK = {
    "relion31.star": "relion31.mrcs",
    "sample_particles_relion31.star": "sample.mrcs",
    "empiar_10076_7.star": "empiar_10076_7.mrc",
}
COMPARED = [
    "rot",
    "tilt",
    "psi",
    "shift_x",
    "shift_y",
    "defocus_u",
    "defocus_v",
    "defocus_angle",
    "voltage",
    "cs",
    "amplitude_contrast",
    "phase_shift",
    "pixel_size",
    "coord_x",
    "coord_y",
    "image_index",
    "subset",
    "class_id",
]


def _need_data() -> None:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA}")


def _assert_same(a: dict, b: dict, names) -> None:
    for name in names:
        if name not in a:
            assert name not in b
            continue
        if a[name].dtype == object:
            assert list(a[name]) == list(b[name]), name
        else:
            np.testing.assert_allclose(b[name], a[name], atol=1e-4, rtol=0, err_msg=name)


@pytest.mark.parametrize("name", REAL)
def test_real_star_matches_file(name):
    _need_data()
    cols, info = read_particles_star(PARTICLES / name)
    blocks = starfile.read(PARTICLES / name, always_dict=True)
    table = blocks.get("particles", next(iter(blocks.values())))
    n = len(table)
    numbers = [int(s.split("@")[0]) for s in table["rlnImageName"]]
    np.testing.assert_array_equal(cols["image_index"], np.array(numbers) - 1)
    assert set(cols["image_path"]) == {os.path.abspath(PARTICLES / STACK[name])}
    np.testing.assert_allclose(cols["pixel_size"], np.full(n, PIXEL[name]), rtol=1e-9)
    np.testing.assert_allclose(cols["defocus_u"], table["rlnDefocusU"])
    for ours, label in [
        ("rot", "rlnAngleRot"),
        ("shift_x", "rlnOriginXAngst"),
        ("shift_y", "rlnOriginYAngst"),
        ("psi", "rlnAnglePsi"),
    ]:
        if label in table:
            np.testing.assert_allclose(cols[ours], table[label])  # same sign as RELION
    assert all(cols[e].shape == (n,) for e in info.extra_columns)
    assert info.relion31 == (name != "empiar_10076_7.star")


def test_optics_groups_broadcast():
    _need_data()
    cols, info = read_particles_star(PARTICLES / "sample_particles_relion31.star")
    group = cols["rlnOpticsGroup"]
    np.testing.assert_array_equal(cols["voltage"], np.where(group == 1, 300.0, 200.0))
    assert [row["rlnMtfFileName"] for row in info.optics] == ["mtf_k2_200kV.star"] * 2
    assert "rlnAutopickFigureOfMerit" in info.extra_columns
    assert cols["rlnAutopickFigureOfMerit"].dtype == np.float64
    assert cols["rlnGroupNumber"].dtype == np.int64


@pytest.mark.parametrize("name", REAL)
def test_real_star_round_trip(name, tmp_path):
    _need_data()
    cols, info = read_particles_star(PARTICLES / name)
    out = tmp_path / "sub" / "exported.star"
    out.parent.mkdir()
    write_particles_star(out, cols, image_size=64, optics=info.optics, labels=info.labels)
    back, info2 = read_particles_star(out)
    _assert_same(cols, back, COMPARED + ["image_path", "micrograph"])
    assert set(info.extra_columns) <= set(info2.extra_columns) | {"rlnOpticsGroup"}
    _assert_same(cols, back, info.extra_columns)
    assert sorted(back) == sorted(cols) or set(back) - set(cols) == {"rlnOpticsGroup"}
    assert [p.name for p in out.parent.iterdir()] == ["exported.star"]  # atomic, no leftovers
    written = starfile.read(out, always_dict=True)
    assert list(written) == ["optics", "particles"]
    assert (written["optics"]["rlnImageSize"] == 64).all()
    if name == "sample_particles_relion31.star":
        assert list(written["optics"]["rlnVoltage"]) == [300.0, 200.0]
        assert list(written["optics"]["rlnMtfFileName"]) == ["mtf_k2_200kV.star"] * 2


def test_image_names_written_one_based_and_relative(tmp_path):
    (tmp_path / "stacks").mkdir()
    cols = {
        "image_path": np.array(
            [str(tmp_path / "stacks" / "a.mrcs"), "/elsewhere/b.mrcs"], dtype=object
        ),
        "image_index": np.array([0, 41]),
        "pixel_size": np.array([1.5, 1.5]),
        "rot": np.array([10.0, 20.0]),
        "my_note": np.array(["x", "y"], dtype=object),
    }
    write_particles_star(tmp_path / "p.star", cols)
    table = starfile.read(tmp_path / "p.star", always_dict=True)["particles"]
    assert list(table["rlnImageName"]) == ["000001@stacks/a.mrcs", "000042@/elsewhere/b.mrcs"]
    assert list(table["rlnEmforgeMyNote"]) == ["x", "y"]  # emforge-only: prefixed
    back, _ = read_particles_star(tmp_path / "p.star")
    assert list(back["image_path"]) == list(cols["image_path"])
    with pytest.raises(ParamError, match="missing required column pixel_size"):
        write_particles_star(
            tmp_path / "q.star", {k: cols[k] for k in ("image_path", "image_index")}
        )


def test_relative_paths_resolved(tmp_path, monkeypatch):
    star_dir, work = tmp_path / "star", tmp_path / "work"
    star_dir.mkdir()
    work.mkdir()
    (star_dir / "beside.mrcs").write_bytes(b"")
    (work / "incwd.mrcs").write_bytes(b"")
    (star_dir / "p.star").write_text(
        "data_\nloop_\n_rlnImageName\n_rlnPixelSize\n"
        "1@beside.mrcs 2.0\n2@incwd.mrcs 2.0\n3@missing.mrcs 2.0\n"
    )
    monkeypatch.chdir(work)
    cols, _ = read_particles_star(star_dir / "p.star")
    assert list(cols["image_path"]) == [
        str(star_dir / "beside.mrcs"),
        str(work / "incwd.mrcs"),
        str(star_dir / "missing.mrcs"),
    ]
    np.testing.assert_array_equal(cols["image_index"], [0, 1, 2])


def test_pre31_origins_in_pixels(tmp_path):
    path = tmp_path / "old.star"
    path.write_text(
        "data_images\n\nloop_\n_rlnImageName #1\n_rlnOriginX #2\n_rlnOriginY #3\n"
        "_rlnDetectorPixelSize #4\n_rlnMagnification #5\n_rlnAngleRot #6\n_rlnVoltage #7\n"
        "1@s.mrcs 2.0 -3.0 5.0 25000 12.5 300\n"
        "2@s.mrcs -1.5 0.5 5.0 25000 -7.0 300\n"
    )
    cols, info = read_particles_star(path)  # 5 µm / 25000 = 2 Å per pixel
    np.testing.assert_allclose(cols["pixel_size"], [2.0, 2.0])
    np.testing.assert_allclose(cols["shift_x"], [4.0, -3.0])
    np.testing.assert_allclose(cols["shift_y"], [-6.0, 1.0])
    np.testing.assert_allclose(cols["voltage"], [300.0, 300.0])
    assert not info.relion31 and info.block == "images" and info.extra_columns == []
    cols3, _ = read_particles_star(path, pixel_size=1.0)  # the override wins
    np.testing.assert_allclose(cols3["shift_x"], [2.0, -1.5])
    write_particles_star(tmp_path / "new.star", cols)
    table = starfile.read(tmp_path / "new.star", always_dict=True)["particles"]
    np.testing.assert_allclose(table["rlnOriginXAngst"], [4.0, -3.0])


def test_missing_image_name(tmp_path):
    path = tmp_path / "noimg.star"
    path.write_text(
        "data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n1 1.0\n\n"
        "data_particles\nloop_\n_rlnAngleRot\n_rlnOpticsGroup\n1.0 1\n"
    )
    with pytest.raises(
        InputFileError, match=r"noimg\.star: missing required column rlnImageName in data_particles"
    ):
        read_particles_star(path)


def test_missing_pixel_size(tmp_path):
    path = tmp_path / "nopx.star"
    path.write_text("data_\nloop_\n_rlnImageName\n1@a.mrcs\n")
    with pytest.raises(InputFileError, match=r"nopx\.star: no pixel size .*give pixel_size"):
        read_particles_star(path)
    cols, _ = read_particles_star(path, pixel_size=3.0)
    assert cols["pixel_size"].tolist() == [3.0]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "file not found"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a STAR file: binary"),
        (b"hello\nno blocks here\n", "not a STAR file: no data_ block"),
    ],
    ids=["missing", "binary", "text"],
)
def test_bad_star_files(tmp_path, content, problem):
    path = tmp_path / "bad.star"
    if content is not None:
        path.write_bytes(content)
    for reader in (read_star_blocks, read_particles_star, read_coordinates3d_star):
        with pytest.raises(InputFileError, match=rf"bad\.star: {problem}"):
            reader(path)


def test_bad_image_number(tmp_path):
    path = tmp_path / "zero.star"
    path.write_text("data_\nloop_\n_rlnImageName\n_rlnPixelSize\n0@a.mrcs 1.0\n")
    with pytest.raises(InputFileError, match=r"zero\.star: bad rlnImageName '0@a.mrcs'"):
        read_particles_star(path)


def test_tomogram_star_blocks():
    _need_data()
    blocks = read_star_blocks(
        TOMO / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12_tomograms.star"
    )
    assert list(blocks)[0] == "global" and len(blocks["global"]) == 4
    names = list(blocks["global"]["rlnTomoName"])
    assert names == [n for n in blocks if n != "global"]
    assert all(len(blocks[n]) == 37 for n in names)
    assert blocks[names[0]]["rlnMicrographPreExposure"].iloc[1] == pytest.approx(89.462)
    opt = read_star_blocks(
        TOMO / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12_optimisation_set.star"
    )
    assert opt[""]["rlnTomoTomogramsFile"].iloc[0].endswith("_tomograms.star")


def test_coordinates3d_real_round_trip(tmp_path):
    _need_data()
    path = TOMO / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12.star"
    cols = read_coordinates3d_star(path)
    table = starfile.read(path, always_dict=True)["particles"]
    assert len(cols["x"]) == 40
    np.testing.assert_allclose(cols["z"], table["rlnCoordinateZ"])
    np.testing.assert_allclose(cols["psi"], table["rlnAnglePsi"])
    assert list(cols["tomogram"]) == list(table["rlnTomoName"])
    np.testing.assert_allclose(cols["pixel_size"], 12.0)
    assert cols["rlnTomoVisibleFrames"][0].startswith("[0,1,1")
    write_coordinates3d_star(tmp_path / "c.star", cols)
    back = read_coordinates3d_star(tmp_path / "c.star")
    names = [
        "x",
        "y",
        "z",
        "rot",
        "tilt",
        "psi",
        "tomogram",
        "pixel_size",
        "rlnTomoParticleName",
        "rlnOriginZAngst",
        "rlnTomoVisibleFrames",
    ]
    _assert_same(cols, back, names)


def test_coordinates3d_synthetic(tmp_path):
    cols = {
        "x": np.array([1.0, 2.0, 3.0]),
        "y": np.array([4.0, 5.0, 6.0]),
        "z": np.array([7.0, 8.0, 9.5]),
        "tomogram": np.array(["TS_01", "TS_01", "TS_02"], dtype=object),
        "score": np.array([0.5, 0.25, 1.0]),
        "tag": np.array(["a", "b", "a"], dtype=object),
    }
    write_coordinates3d_star(tmp_path / "c.star", cols)
    back = read_coordinates3d_star(tmp_path / "c.star", pixel_size=4.0)
    _assert_same(cols, back, list(cols))
    np.testing.assert_allclose(back["pixel_size"], 4.0)
    (tmp_path / "m.star").write_text(
        "data_particles\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 2\n"
    )
    with pytest.raises(InputFileError, match="missing required column rlnCoordinateZ"):
        read_coordinates3d_star(tmp_path / "m.star")
