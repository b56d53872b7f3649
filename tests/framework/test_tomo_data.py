"""Tomography data model: coordinates, tilt series and tomograms round-trip through the
project database, and the coordinate-frame helpers agree with hand-computed values."""

from __future__ import annotations

import numpy as np

from emforge.coords3d import from_centred_angstrom, rebin, to_centred_angstrom
from emforge.objects import Coordinate3D, TiltImage, Tomogram
from emforge.project import Project


def test_coordinates_round_trip_with_tag_method_orientation(project: Project) -> None:
    cols = {
        "tomogram": np.array(["t1", "t1", "t2"], dtype=object),
        "x": np.array([10.25, 200.0, 3.125]),
        "y": np.array([1.5, 2.5, 3.5]),
        "z": np.array([0.0, 50.75, 99.0]),
        "pixel_size": np.full(3, 6.82),
        "tag": np.array(["ribo", "ribo", "mt"], dtype=object),
        "method": np.array(["manual", "tm", "manual"], dtype=object),
        "score": np.array([0.0, 0.87, 0.0]),
        "rot": np.array([0.0, 12.0, 0.0]),
        "has_orientation": np.array([0, 1, 0]),
    }
    s = project.create_set("SetOfCoordinates3D", cols, name="coords")
    back = Project.open(project.path).get(s.id).read()
    for k, v in cols.items():
        assert np.array_equal(back[k], v), k
    assert back["boxsize"].tolist() == [0, 0, 0]
    items = list(s)
    assert isinstance(items[1], Coordinate3D) and items[1].method == "tm"
    assert items[1].has_orientation == 1 and items[0].x == 10.25


def test_tilt_series_and_tomogram_round_trip(project: Project) -> None:
    n = 5
    cols = {
        "tilt_series": np.array(["ts1"] * n, dtype=object),
        "tilt_index": np.arange(n),
        "tilt_angle": np.linspace(-60, 60, n),
        "tilt_axis": np.full(n, -86.1),
        "dose": np.arange(n) * 3.0,
        "defocus_u": np.full(n, 39100.0),
    }
    s = project.create_set("SetOfTiltSeries", cols, name="ts")
    back = project.get(s.id).read()
    assert np.array_equal(back["tilt_angle"], [-60, -30, 0, 30, 60])
    assert np.array_equal(back["off_axis"], np.zeros(n))
    assert isinstance(next(iter(s)), TiltImage)
    tomo = Tomogram("t.mrc", 6.82, (100, 200, 200), tilt_series="ts1", binning=4.0)
    oid = project.add(tomo)
    got = project.get(oid)
    assert got.binning == 4.0 and got.tilt_series == "ts1"
    assert abs(got.unbinned_pixel_size - 1.705) < 1e-12


def test_frames_centre_and_rebin() -> None:
    # a 200 (x) × 100 (y) × 50 (z) tomogram at 6.8 Å: centre voxel (100, 50, 25)
    xyz = np.array([[100.0, 50.0, 25.0], [101.25, 40.0, 0.0]])
    a = to_centred_angstrom(xyz, (50, 100, 200), 6.8)
    assert np.allclose(a, [[0, 0, 0], [8.5, -68.0, -170.0]])
    assert np.allclose(from_centred_angstrom(a, (50, 100, 200), 6.8), xyz)
    # bin 4 → bin 1 (800 × 400 × 200 at 1.7 Å): centre 400, offsets × 4, floats kept
    b1 = rebin(xyz, (50, 100, 200), 6.8, (200, 400, 800), 1.7)
    assert np.allclose(b1, [[400, 200, 100], [405.0, 160.0, 0.0]])
    back = rebin(b1, (200, 400, 800), 1.7, (50, 100, 200), 6.8)
    assert np.max(np.abs(back - xyz)) < 1e-12
