"""`emforge export N.fsc`: RELION postprocess STAR, EMDB FSC XML, CSV; anything else refused."""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import starfile

from emforge.cli import main
from emforge.objects import FSC

BOX, PIXEL = 64, 1.5


@pytest.fixture
def fsc_ref(project):
    """An FSC curve with known values (shells k / (N px), a smooth fall-off) in the project."""
    s = np.arange(BOX // 2 + 1) / (BOX * PIXEL)
    values = 1.0 / (1.0 + np.exp((s - 0.15) / 0.02))
    fsc = FSC(tuple(s), tuple(values), {"0.143": 1 / 0.1864}, label="masked, corrected")
    return str(project.add(fsc, name="fsc")), fsc


def _export(capsys, project, ref, out):
    rc = main(["export", ref, str(out), "-P", str(project.path)])
    return rc, capsys.readouterr().err


def test_fsc_to_relion_postprocess_star(project, fsc_ref, tmp_path, capsys):
    ref, fsc = fsc_ref
    out = tmp_path / "postprocess.star"
    rc, err = _export(capsys, project, ref, out)
    assert rc == 0, err
    blocks = starfile.read(out, always_dict=True)
    assert list(blocks) == ["general", "fsc"]
    general = blocks["general"]
    general = general if isinstance(general, dict) else general.iloc[0].to_dict()
    assert general["rlnFinalResolution"] == pytest.approx(fsc.crossings["0.143"], rel=1e-9)
    table = blocks["fsc"]
    n = len(fsc.frequencies)
    np.testing.assert_array_equal(table["rlnSpectralIndex"], np.arange(n))
    np.testing.assert_allclose(table["rlnResolution"], fsc.frequencies, rtol=1e-9, atol=1e-15)
    with np.errstate(divide="ignore"):
        want = np.where(np.arange(n) == 0, 999.0, 1.0 / np.asarray(fsc.frequencies))
    np.testing.assert_allclose(table["rlnAngstromResolution"], want, rtol=1e-9)  # 999: DC
    np.testing.assert_allclose(
        table["rlnFourierShellCorrelationCorrected"], fsc.values, rtol=1e-9, atol=1e-12
    )


def test_fsc_to_emdb_xml(project, fsc_ref, tmp_path, capsys):
    ref, fsc = fsc_ref
    out = tmp_path / "fsc.xml"
    rc, err = _export(capsys, project, ref, out)
    assert rc == 0, err
    root = ET.parse(out).getroot()
    assert root.tag == "fsc"
    assert root.get("xaxis") == "Resolution (A-1)"
    assert root.get("yaxis") == "Correlation Coefficient"
    assert root.get("title")
    points = root.findall("coordinate")
    assert len(points) == len(fsc.frequencies)
    x = [float(p.find("x").text) for p in points]
    y = [float(p.find("y").text) for p in points]
    np.testing.assert_allclose(x, fsc.frequencies, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(y, fsc.values, rtol=1e-9, atol=1e-12)


def test_fsc_to_csv(project, fsc_ref, tmp_path, capsys):
    ref, fsc = fsc_ref
    out = tmp_path / "fsc.csv"
    rc, err = _export(capsys, project, ref, out)
    assert rc == 0, err
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(fsc.frequencies)
    np.testing.assert_allclose(
        [float(r["frequency_per_A"]) for r in rows], fsc.frequencies, rtol=1e-9, atol=1e-15
    )
    np.testing.assert_allclose([float(r["fsc"]) for r in rows], fsc.values, rtol=1e-9)
    assert [int(r["shell"]) for r in rows] == list(range(len(rows)))
    assert float(rows[1]["resolution_A"]) == pytest.approx(1 / fsc.frequencies[1], rel=1e-9)


@pytest.mark.parametrize("name", ["fsc.mrc", "fsc.txt"])
def test_fsc_to_other_formats_is_one_clear_line(project, fsc_ref, tmp_path, capsys, name):
    ref, _ = fsc_ref
    rc, err = _export(capsys, project, ref, tmp_path / name)
    assert rc == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    for word in (name, ".star", ".xml", ".csv"):
        assert word in err
    assert not (tmp_path / name).exists()
