"""STAR export is RELION-ready: the real STAR files survive import.particles -> export.

Each real file of ``../shared/data/particles`` is copied into a temporary folder (with its
stack where the STAR names it), imported into a project, exported with ``emforge export``
next to the copy, and both files are read back with :func:`starfile.read` and compared column
by column, value by value (floats to 1e-9 relative: the only difference is number formatting).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from emforge.cli import main
from emforge.errors import ParamError
from emforge.io import read_info, read_particles_star, write_particles_star

#: RELION 3.0 -> 3.1 conversion (RELION's StarConverter) replaces these particle labels
_CONVERTED_30 = {"rlnMagnification", "rlnDetectorPixelSize"}
#: the optics-table labels a RELION 3.1 particles file must have
_REQUIRED_OPTICS = {"rlnOpticsGroup", "rlnOpticsGroupName", "rlnImagePixelSize", "rlnImageSize"}


def _copy_real(data_dir: Path, name: str, folder: Path) -> Path:
    """The STAR file and its stack in ``folder``, stacks where the STAR file says they are."""
    src = data_dir / "particles" / name
    star = folder / name
    shutil.copy(src, star)
    table = starfile.read(src, always_dict=True)
    table = table.get("particles", next(iter(table.values())))
    stack = {"relion31.star": "relion31.mrcs", "sample_particles_relion31.star": "sample.mrcs"}
    real = data_dir / "particles" / stack.get(name, "empiar_10076_7.mrc")
    for named in {s.partition("@")[2] for s in table["rlnImageName"]}:
        target = folder / named
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(real)  # relion31.star names an Extract/job133/... stack
    return star


def _export(capsys, project, ref: str, out: Path) -> None:
    rc = main(["export", ref, str(out), "-P", str(project.path)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "Traceback" not in cap.err


def _image_names(values) -> list[tuple[int, str]]:
    """(1-based number, stack) of each rlnImageName: '1@a' and '000001@a' are the same image."""
    out = []
    for v in values:
        number, _, stack = str(v).partition("@")
        out.append((int(number), stack))
    return out


def _same_column(label: str, got: pd.Series, want: pd.Series) -> None:
    assert len(got) == len(want), label
    if label == "rlnImageName":
        assert _image_names(got) == _image_names(want), label
    elif pd.api.types.is_numeric_dtype(want) and pd.api.types.is_numeric_dtype(got):
        np.testing.assert_allclose(
            got.to_numpy(np.float64), want.to_numpy(np.float64), rtol=1e-9, atol=0, err_msg=label
        )
    else:
        assert [str(v) for v in got] == [str(v) for v in want], label


def _per_particle(blocks: dict, label: str) -> pd.Series:
    """A label's value for each particle: from data_particles, else through its optics group."""
    parts = blocks["particles"]
    if label in parts.columns:
        return parts[label].reset_index(drop=True)
    optics = blocks["optics"].set_index("rlnOpticsGroup")
    return optics[label].reindex(parts["rlnOpticsGroup"]).reset_index(drop=True)


@pytest.mark.parametrize(
    "name", ["relion31.star", "sample_particles_relion31.star", "empiar_10076_7.star"]
)
def test_real_star_round_trip_keeps_every_column_and_the_optics(
    name, data_dir, project, tmp_path, capsys
):
    folder = tmp_path / "data"
    folder.mkdir()
    star = _copy_real(data_dir, name, folder)
    run = project.run("import.particles", params={"star": str(star)})
    out = folder / "exported.star"  # beside the source, so relative image paths stay relative
    _export(capsys, project, f"{run}.particles", out)

    original = starfile.read(star, always_dict=True)
    written = starfile.read(out, always_dict=True)
    assert list(written) == ["optics", "particles"]
    optics, parts = written["optics"], written["particles"]
    assert _REQUIRED_OPTICS <= set(optics.columns)
    box = read_info(folder / _image_names(parts["rlnImageName"])[0][1]).shape[-1]
    assert (optics["rlnImageSize"] == box).all()
    assert (optics["rlnImageDimensionality"] == 2).all()
    assert "_id" not in out.read_text() and "id" not in parts.columns
    assert out.read_text().count("# version 30001\n\ndata_") == 2  # as RELION 3.1 writes

    if "optics" in original:  # RELION 3.1: the optics table comes back as it was
        old = original["optics"]
        added = set(optics.columns) - set(old.columns)
        assert added <= {"rlnImageSize", "rlnImageDimensionality"}, added
        assert len(optics) == len(old)
        for label in old.columns:
            _same_column(label, optics[label], old[label])
        src = original["particles"]
        assert list(parts.columns) == list(src.columns)  # same columns, same order
        for label in src.columns:
            _same_column(label, parts[label], src[label])
    else:  # pre-3.1: the columns RELION 3.1 keeps per optics group move to data_optics
        src = next(iter(original.values()))
        for label in src.columns:
            if label in _CONVERTED_30:
                continue
            _same_column(label, _per_particle(written, label), src[label].reset_index(drop=True))
        pixel = 1e4 * src["rlnDetectorPixelSize"] / src["rlnMagnification"]
        _same_column("rlnImagePixelSize", _per_particle(written, "rlnImagePixelSize"), pixel)
        new = set(parts.columns) - set(src.columns)
        assert new == {"rlnOpticsGroup"}, new


def test_stack_only_import_writes_no_invented_columns(data_dir, project, tmp_path, capsys):
    stack = data_dir / "particles" / "sample.mrcs"
    run = project.run("import.particles", params={"stack": str(stack), "pixel_size": 1.4})
    out = tmp_path / "plain.star"
    _export(capsys, project, f"{run}.particles", out)
    written = starfile.read(out, always_dict=True)
    parts, optics = written["particles"], written["optics"]
    # the set has images and a pixel size, nothing else: no zero angles, origins, phase shift
    assert list(parts.columns) == ["rlnImageName", "rlnOpticsGroup"]
    assert list(optics["rlnImageSize"]) == [read_info(stack).shape[-1]] == [200]
    assert list(optics["rlnImageDimensionality"]) == [2]
    assert list(optics["rlnImagePixelSize"]) == [1.4]
    assert len(parts) == read_info(stack).shape[0]


def test_emforge_only_columns_are_prefixed_and_read_back(tmp_path):
    cols = {
        "id": np.array([7, 9]),
        "image_path": np.array([str(tmp_path / "a.mrcs")] * 2, dtype=object),
        "image_index": np.array([0, 1]),
        "pixel_size": np.array([1.5, 1.5]),
        "score": np.array([0.5, 0.25]),
        "my_note": np.array(["x", "y"], dtype=object),
        "rlnGroupNumber": np.array([3, 4]),
    }
    write_particles_star(tmp_path / "p.star", cols, image_size=64)
    table = starfile.read(tmp_path / "p.star", always_dict=True)["particles"]
    assert set(table.columns) == {
        "rlnImageName",
        "rlnOpticsGroup",
        "rlnEmforgeScore",
        "rlnEmforgeMyNote",
        "rlnGroupNumber",
    }
    back, info = read_particles_star(tmp_path / "p.star")
    assert list(back["my_note"]) == ["x", "y"]
    np.testing.assert_allclose(back["score"], [0.5, 0.25])
    assert "id" not in back and "rlnEmforgeMyNote" not in back
    assert "my_note" in info.extra_columns


def test_image_size_missing_is_a_clear_error(tmp_path):
    cols = {
        "image_path": np.array([str(tmp_path / "a.mrcs")], dtype=object),
        "image_index": np.array([0]),
        "pixel_size": np.array([1.5]),
    }
    with pytest.raises(ParamError, match="image_size"):
        write_particles_star(tmp_path / "p.star", cols, image_size=0)


def test_pixel_size_given_at_import_keeps_the_other_optics_fields(
    data_dir, project, tmp_path, capsys
):
    folder = tmp_path / "data"
    folder.mkdir()
    star = _copy_real(data_dir, "sample_particles_relion31.star", folder)
    run = project.run("import.particles", params={"star": str(star), "pixel_size": 1.5})
    out = folder / "exported.star"
    _export(capsys, project, f"{run}.particles", out)
    optics = starfile.read(out, always_dict=True)["optics"]
    old = starfile.read(star, always_dict=True)["optics"]
    assert list(optics["rlnImagePixelSize"]) == [1.5, 1.5]  # the user's value wins
    for label in old.columns:
        if label != "rlnImagePixelSize":
            _same_column(label, optics[label], old[label])
