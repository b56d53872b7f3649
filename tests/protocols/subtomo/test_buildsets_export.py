"""subtomo.buildsets and subtomo.export_info through the engine, with known answers: the tag
split of an imported EMAN2 info json, the spatial halves, and the exported file bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emforge.project import Project
from emforge.protocols.subtomo.kernels.sets import spatial_halves

EXAMPLE = (Path(__file__).parents[2] / "framework" / "io" / "test_eman2_info.py").read_text()
EXAMPLE = EXAMPLE.split('EXAMPLE = """', 1)[1].split('"""', 1)[0]


def test_spatial_halves_known_answer() -> None:
    x = np.array([1.0, 5.0, 3.0, 2.0, 10.0, 20.0, 30.0, 40.0])
    g = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    # medians 2.5 (a) and 25 (b); jitter 0.01 cannot cross a gap of 0.5
    assert spatial_halves(x, g, seed=3).tolist() == [1, 2, 2, 1, 1, 1, 2, 2]


@pytest.fixture
def imported(project: Project, tmp_path: Path):
    f = tmp_path / "info" / "tomo01_info.json"
    f.parent.mkdir()
    f.write_text(EXAMPLE, encoding="utf-8")
    rid = project.run("import.coordinates3d", params={"path": str(f)}, workers=1)
    (coords,) = project.outputs(rid).values()
    return coords


def test_buildsets_one_set_per_tag(project: Project, imported) -> None:
    rid = project.run(
        "subtomo.buildsets", params={"spliteo": True}, inputs={"particles": imported.id}, workers=1
    )
    out = project.outputs(rid)
    assert sorted(out) == ["ribosome", "tm_ribo"]
    assert out["ribosome"].read()["x"].tolist() == [-412.3]
    assert out["tm_ribo"].read()["method"].tolist() == ["tm"]
    assert out["tm_ribo"].read()["subset"].tolist()[0] in (1, 2)  # one point: its jitter decides
    rid = project.run(
        "subtomo.buildsets",
        params={"tags": ["tm_ribo"]},
        inputs={"particles": imported.id},
        workers=1,
    )
    assert list(project.outputs(rid)) == ["tm_ribo"]


def test_export_info_byte_identical_and_append(project: Project, imported, tmp_path: Path) -> None:
    dest = tmp_path / "e2proj"
    project.run(
        "subtomo.export_info",
        params={"folder": str(dest)},
        inputs={"coordinates": imported.id},
        workers=1,
    )
    target = dest / "info" / "tomo01_info.json"
    assert target.read_bytes() == EXAMPLE.encode()
    project.run(
        "subtomo.export_info",
        params={"folder": str(dest), "append": True},
        inputs={"coordinates": imported.id},
        workers=1,
    )
    info = json.loads(target.read_text())
    assert len(info["boxes_3d"]) == 4 and info["boxes_3d"][2:] == info["boxes_3d"][:2]
    assert len(info["class_list"]) == 2


def test_write_lst_fixed_length_records(tmp_path: Path) -> None:
    from emforge.protocols.subtomo._buildsets import write_lst

    f = tmp_path / "ribo.lst"
    write_lst(str(f), ["particles3d/t1__ribo.hdf", "particles3d/t10__ribo.hdf"], [0, 12])
    lines = f.read_text().split("\n")
    assert lines[0] == "#LSX" and lines[1].startswith("#")
    length = int(lines[2][2:])
    # longest record "12\tparticles3d/t10__ribo.hdf" is 28 chars: padded to 29, plus newline
    assert length == 30
    records = f.read_text().splitlines(keepends=True)[3:]
    assert [len(r) for r in records] == [length, length]
    assert records[1].split("\t")[0] == "12" and records[1].rstrip().endswith("t10__ribo.hdf")
