"""Tilt-series readers on the real files in shared/data/tomo (values read by eye from the
files) and import.tiltseries / import.tomograms through the engine."""

from __future__ import annotations

import numpy as np
import pytest

from emforge.errors import InputFileError
from emforge.io.tiltseries import read_tiltseries


@pytest.fixture
def tomo(data_dir):
    return data_dir / "tomo"


def test_imod_tlt(tomo) -> None:
    c = read_tiltseries(tomo / "017.tlt")
    assert len(c["tilt_angle"]) == 60
    assert c["tilt_angle"][0] == -52.01 and c["tilt_angle"][-1] == 65.97
    assert c["tilt_series"][0] == "017" and c["tilt_index"].tolist() == list(range(60))


def test_warp_xml(tomo) -> None:
    c = read_tiltseries(tomo / "017.xml")
    assert np.array_equal(c["tilt_angle"], np.arange(-52, 67, 2))
    assert c["dose"][0] == 134.3059 and c["dose"][-1] == 129.8291
    assert c["tilt_axis"][0] == 83.22321 and c["pixel_size"][0] == 1.971
    # GridCTF 3.409815 µm, delta 0.01914939 µm: U = D + Δ, V = D - Δ in Å
    assert c["defocus_u"][0] == pytest.approx(34289.6439, abs=1e-3)
    assert c["defocus_v"][0] == pytest.approx(33906.6561, abs=1e-3)
    assert c["defocus_angle"][0] == 164.0 and c["shift_x"][0] == 51.38024


def test_relion5_tomograms_star(tomo) -> None:
    (star,) = (tomo / "ribosome_tiltseries").glob("*_tomograms.star")
    c = read_tiltseries(star)
    names, counts = np.unique(c["tilt_series"].astype(str), return_counts=True)
    assert names.tolist() == [f"Unt_0{k}.tomostar" for k in (50, 76, 83, 88)]
    assert counts.tolist() == [37, 37, 37, 37]
    first = c["tilt_series"] == "Unt_083.tomostar"
    assert c["defocus_u"][first][:2].tolist() == [33350.7, 25170.7]
    assert c["dose"][first][0] == 92.019 and c["pixel_size"][0] == 1.667
    # |tilt| = acos(P[2,2]): 0.6779126 → 47.32°
    assert abs(c["tilt_angle"][first][0]) == pytest.approx(
        np.degrees(np.arccos(0.6779126)), abs=1e-4
    )
    assert np.all(np.abs(c["tilt_angle"]) <= 90)


def test_bad_files(tmp_path) -> None:
    bad = tmp_path / "x.tlt"
    bad.write_text("1\nabc\n")
    with pytest.raises(InputFileError, match="x.tlt"):
        read_tiltseries(bad)
    with pytest.raises(InputFileError, match="unknown tilt-series format"):
        read_tiltseries(tmp_path / "x.foo")


def test_import_tiltseries_and_tomograms(project, tomo) -> None:
    rid = project.run("import.tiltseries", params={"path": str(tomo / "017.xml")}, workers=1)
    (ts,) = project.outputs(rid).values()
    assert ts.kind == "SetOfTiltSeries" and len(ts) == 60
    rid = project.run(
        "import.tomograms",
        params={
            "path": str(tomo / "tilt_stack.mrc"),
            "pixel_size": 6.82,
            "binning": 4,
            "tilt_series": "stem",
        },
        workers=1,
    )
    (tomos,) = project.outputs(rid).values()
    cols = tomos.read()
    assert cols["binning"].tolist() == [4.0] and cols["tilt_series"].tolist() == ["tilt_stack"]


MDOC = """PixelSpacing = 2.5
ImageFile = ts01.mrc

[ZValue = 0]
TiltAngle = 0.01
ExposureDose = 3.0
PixelSpacing = 2.5
Defocus = -3.5
RotationAngle = 85.2
DateTime = 02-Dec-26  10:00:00

[ZValue = 1]
TiltAngle = 3.02
ExposureDose = 3.0
PixelSpacing = 2.5
Defocus = -3.6
RotationAngle = 85.2
DateTime = 02-Dec-26  10:00:30

[ZValue = 2]
TiltAngle = -2.99
ExposureDose = 3.0
PixelSpacing = 2.5
Defocus = -3.4
RotationAngle = 85.2
DateTime = 02-Dec-26  10:01:00
"""


def test_serialem_mdoc(tmp_path) -> None:
    pytest.importorskip("mdocfile")
    f = tmp_path / "ts01.mrc.mdoc"
    f.write_text(MDOC)
    c = read_tiltseries(f)
    assert c["tilt_angle"].tolist() == [0.01, 3.02, -2.99]
    assert c["dose"].tolist() == [0.0, 3.0, 6.0]  # accumulated before each tilt
    assert c["defocus_u"].tolist() == pytest.approx([35000.0, 36000.0, 34000.0])
    assert c["tilt_axis"][0] == 85.2 and c["tilt_series"][0] == "ts01"


def test_relion5_centred_particle_star(project, tmp_path) -> None:
    f = tmp_path / "particles.star"
    f.write_text(
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCenteredCoordinateXAngst #2\n"
        "_rlnCenteredCoordinateYAngst #3\n_rlnCenteredCoordinateZAngst #4\n_rlnAngleRot #5\n"
        "_rlnAngleTilt #6\n_rlnAnglePsi #7\nts1 -120.5 30.25 0.0 10 20 30\n"
        "ts1 400.0 -8.0 12.5 0 90 0\n"
    )
    rid = project.run("import.coordinates3d", params={"path": str(f)}, workers=1)
    (c,) = project.outputs(rid).values()
    cols = c.read()
    assert cols["x"].tolist() == [-120.5, 400.0] and cols["z"].tolist() == [0.0, 12.5]
    assert c.attrs["frame"] == "centred" and cols["pixel_size"].tolist() == [1.0, 1.0]
    assert cols["has_orientation"].tolist() == [1, 1] and cols["tilt"].tolist() == [20.0, 90.0]
    assert cols["tomogram"].tolist() == ["ts1", "ts1"]
