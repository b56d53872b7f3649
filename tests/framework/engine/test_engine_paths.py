"""Paths a project records: relative path params made absolute at submission, project-internal
paths stored relative to the project root so a copied or moved project keeps working.

Real data: ``EMD-3197.map`` (20³, 11.4 Å/px) copied next to the test so it can be deleted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from projectstate import db_dump

from emforge import paths
from emforge.cli import main
from emforge.engine import ProtocolParams, SourcePath, param
from emforge.engine.protocol import path_params
from emforge.engine.runs import parse_params
from emforge.io import read_volume
from emforge.project import Project, file_version

CLI = [sys.executable, "-c", "import sys; from emforge.cli import main; sys.exit(main())"]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def folders(tmp_path, data_dir):
    """Folder A holding a copy of a real map (``map.mrc``), folder B elsewhere, a project P."""
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    shutil.copy(data_dir / "maps" / "EMD-3197.map", a / "map.mrc")
    (a / "set").mkdir()
    shutil.copy(data_dir / "maps" / "EMD-3197.map", a / "set" / "m1.mrc")
    shutil.copy(data_dir / "maps" / "EMD-3197.map", a / "set" / "m2.mrc")
    Project.init(tmp_path / "P")
    return a, b, tmp_path / "P"


def _params(project: Path, run_id: int) -> dict:
    con = sqlite3.connect(project / "project.sqlite")
    try:
        row = con.execute("SELECT params_json FROM runs WHERE id = ?", (run_id,)).fetchone()
    finally:
        con.close()
    return json.loads(row[0])


# ------------------------------------------------------------------ item 3: relative params


def test_relative_path_param_works_from_another_folder(folders, capsys, monkeypatch):
    a, b, p = folders
    monkeypatch.chdir(a)
    rc, _, err = _cli(capsys, "run", "import.volume", "-P", p, "-p", "path=map.mrc")
    assert rc == 0, err
    assert _params(p, 1)["path"] == str(a / "map.mrc")
    monkeypatch.chdir(b)
    rc, out, err = _cli(capsys, "runs", "why", "1", "-P", p)
    assert rc == 0, err
    assert out.startswith("run 1: FRESH"), out
    rc, out, err = _cli(capsys, "runs", "resume", "1", "-P", p)
    assert rc == 0, err
    rc, out, err = _cli(capsys, "runs", "rerun", "1", "-P", p)
    assert rc == 0, err
    rerun = Project.open(p).outputs(2)["volume"]
    data, _ = read_volume(rerun.path)
    source, _ = read_volume(str(a / "map.mrc"))
    np.testing.assert_array_equal(data, source)


def test_project_run_makes_path_params_absolute(folders, monkeypatch):
    a, _, p = folders
    monkeypatch.chdir(a)
    proj = Project.open(p)
    proj.run("import.volume", params={"path": "map.mrc", "half1": "map.mrc", "half2": "map.mrc"})
    stored = _params(p, 1)
    assert (stored["path"], stored["half1"], stored["half2"]) == (str(a / "map.mrc"),) * 3
    # a glob pattern stays a pattern, made absolute
    proj.run("import.volumes", params={"path": "set/*.mrc"})
    assert _params(p, 2)["path"] == str(a / "set" / "*.mrc")


class _PluginParams(ProtocolParams):
    model: SourcePath = param("", "An atomic model the run reads")
    name: str = param("", "A name that happens to look like a file")


def test_path_params_are_known_by_declaration_not_by_value(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert path_params(_PluginParams) == ("model",)
    assert _PluginParams.model_json_schema()["properties"]["model"]["format"] == "path"

    class Cls:
        Params = _PluginParams
        id = "x.y"

    parsed, problems = parse_params(Cls, {"model": "m.pdb", "name": "n.pdb"})  # type: ignore[arg-type]
    assert problems == []
    assert parsed.model == str(tmp_path / "m.pdb")
    assert parsed.name == "n.pdb"  # not declared a path: kept as typed
    parsed, problems = parse_params(Cls, {"model": "m\0.pdb"})  # type: ignore[arg-type]
    assert parsed is None and problems == ["param 'model': a path cannot contain a NUL character"]


def test_vanished_source_is_missing_and_resume_refuses_in_one_line(folders, capsys, monkeypatch):
    a, b, p = folders
    monkeypatch.chdir(a)
    assert _cli(capsys, "run", "import.volume", "-P", p, "-p", "path=map.mrc")[0] == 0
    (a / "map.mrc").unlink()
    monkeypatch.chdir(b)
    before = db_dump(p / "project.sqlite")
    rc, out, err = _cli(capsys, "runs", "why", "1", "-P", p)
    assert rc == 0, err
    assert out.splitlines()[0] == "run 1: MISSING"
    assert f"  MISSING: {a / 'map.mrc'} is gone" in out.splitlines()
    rc, out, err = _cli(capsys, "runs", "resume", "1", "-P", p)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "is gone" in err and "Traceback" not in err
    assert str(a / "map.mrc") in err
    assert db_dump(p / "project.sqlite") == before
    rc, out, err = _cli(capsys, "runs", "restart", "1", "-P", p)  # forgets nothing first
    assert rc == 2 and "is gone" in err and len(err.strip().splitlines()) == 1
    assert db_dump(p / "project.sqlite") == before


@pytest.mark.slow
def test_relative_path_param_through_the_real_command(folders):
    a, b, p = folders
    run = subprocess.run(
        [*CLI, "run", "import.volume", "-P", str(p), "-p", "path=map.mrc"],
        cwd=a,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    for argv, expect in (
        (["runs", "why", "1"], "run 1: FRESH"),
        (["runs", "resume", "1"], "run 1"),
        (["runs", "rerun", "1"], "run 2"),
    ):
        r = subprocess.run([*CLI, *argv, "-P", str(p)], cwd=b, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert expect in r.stdout
    (a / "map.mrc").unlink()
    r = subprocess.run(
        [*CLI, "runs", "resume", "1", "-P", str(p)], cwd=b, capture_output=True, text=True
    )
    assert r.returncode == 2
    assert r.stderr.strip().endswith("is gone; restore it or change the param (emforge runs edit)")
    assert len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------ item 4: copied / moved projects


def _populate(p: Path, a: Path, capsys) -> None:
    """Run 1: a map with half maps; run 2: a set of maps; run 3: masks of that set."""
    src = str(a / "map.mrc")
    assert (
        _cli(
            capsys,
            "run", "import.volume", "-P", p, "-p", f"path={src}",
            "-p", f"half1={src}", "-p", f"half2={src}",
        )[0]
        == 0
    )  # fmt: skip
    assert _cli(capsys, "run", "import.volumes", "-P", p, "-p", f"path={a}/set/*.mrc")[0] == 0
    rc, _, err = _cli(capsys, "run", "masks.volumes", "-P", p, "-i", "volume=2.volumes")
    assert rc == 0, err


def test_database_stores_project_paths_relative(folders, capsys):
    a, _, p = folders
    _populate(p, a, capsys)
    con = sqlite3.connect(p / "project.sqlite")
    try:
        workdirs = [r[0] for r in con.execute("SELECT workdir FROM runs")]
        attrs = json.loads(con.execute("SELECT attrs_json FROM objects WHERE id = 1").fetchone()[0])
    finally:
        con.close()
    assert workdirs == [
        "Runs/000001_import_volume",
        "Runs/000002_import_volumes",
        "Runs/000003_masks_volumes",
    ]
    assert attrs["path"] == "Runs/000001_import_volume/extra/volume.mrc"
    assert attrs["half1"] == "Runs/000001_import_volume/extra/half1.mrc"
    assert attrs["source"] == str(a / "map.mrc")  # outside the project: absolute
    proj = Project.open(p)
    assert proj.outputs(1)["volume"].path == str(p / "Runs/000001_import_volume/extra/volume.mrc")
    masked = proj.outputs(3)["volumes"].read("image_path")["image_path"]
    assert [Path(x).parent for x in masked] == [p / "Runs/000003_masks_volumes/extra"] * 2
    # stored relative inside the set's string dictionary
    from emforge import sets

    with proj.engine.connect() as conn:
        raw = sets.read_columns(conn, proj.outputs(3)["volumes"].id, ["image_path"])
    assert all(not Path(x).is_absolute() for x in raw["image_path"])


def test_copied_project_never_writes_into_the_original(folders, capsys):
    a, _, p = folders
    _populate(p, a, capsys)
    p2 = p.parent / "P2"
    subprocess.run(["cp", "-a", str(p), str(p2)], check=True)
    files, dump = _snapshot(p), db_dump(p / "project.sqlite")
    rc, out, _ = _cli(capsys, "runs", "why", "3", "-P", p2)
    assert rc == 0 and out.startswith("run 3: FRESH"), out
    assert _cli(capsys, "runs", "restart", "1", "-P", p2)[0] == 0
    assert _cli(capsys, "runs", "restart", "3", "-P", p2)[0] == 0
    assert _cli(capsys, "runs", "resume", "2", "-P", p2)[0] == 0
    rc, _, err = _cli(capsys, "run", "masks.volumes", "-P", p2, "-i", "volume=1.volume")
    assert rc == 0, err
    assert _snapshot(p) == files
    assert db_dump(p / "project.sqlite") == dump
    proj2 = Project.open(p2)
    new = proj2.outputs(4)["volume"]
    assert Path(new.path).is_relative_to(p2) and Path(new.path).is_file()
    for path in proj2.outputs(3)["volumes"].read("image_path")["image_path"]:
        assert Path(path).is_relative_to(p2) and Path(path).is_file()
    assert (p2 / "Runs/000004_masks_volumes/logs/run.log").is_file()
    assert not (p / "Runs/000004_masks_volumes").exists()


def test_moved_project_keeps_working(folders, capsys, tmp_path):
    a, _, p = folders
    _populate(p, a, capsys)
    p3 = tmp_path / "elsewhere" / "P3"
    p3.parent.mkdir()
    shutil.move(str(p), str(p3))
    rc, out, err = _cli(capsys, "runs", "list", "-P", p3)
    assert rc == 0 and out.count("finished") == 3, out + err
    for run_id in (1, 2, 3):
        rc, out, err = _cli(capsys, "runs", "why", str(run_id), "-P", p3)
        assert rc == 0 and out.startswith(f"run {run_id}: FRESH"), out + err
    rc, out, err = _cli(capsys, "runs", "resume", "3", "-P", p3)
    assert rc == 0, err
    exported = tmp_path / "out.mrc"
    rc, _, err = _cli(capsys, "export", "1.volume", str(exported), "-P", p3)
    assert rc == 0, err
    np.testing.assert_array_equal(read_volume(str(exported))[0], read_volume(str(a / "map.mrc"))[0])
    rc, out, err = _cli(capsys, "runs", "log", "1", "-P", p3)
    assert rc == 0 and "finished" in out


def _absolutise(p: Path) -> None:
    """Rewrite a project as emforge wrote it before relative storage: absolute paths, with the
    data versions computed the old way (attributes with absolute paths + file content)."""
    con = sqlite3.connect(p / "project.sqlite")
    try:
        for rid, wd in con.execute("SELECT id, workdir FROM runs").fetchall():
            con.execute("UPDATE runs SET workdir = ? WHERE id = ?", (str(p / wd), rid))
        for oid, attrs_json in con.execute(
            "SELECT id, attrs_json FROM objects WHERE kind IN ('Volume', 'VolumeMask')"
        ).fetchall():
            attrs = json.loads(attrs_json)
            for f in ("path", "half1", "half2"):
                if attrs.get(f):
                    attrs[f] = str(p / attrs[f])
            h = hashlib.blake2b(json.dumps(attrs, sort_keys=True).encode(), digest_size=16)
            h.update(
                file_version([attrs[f] for f in ("path", "half1", "half2") if attrs[f]]).encode()
            )
            con.execute(
                "UPDATE objects SET attrs_json = ?, data_version = ? WHERE id = ?",
                (json.dumps(attrs), h.hexdigest(), oid),
            )
            con.execute(
                "UPDATE edges SET data_version = ? WHERE object_id = ?", (h.hexdigest(), oid)
            )
        con.commit()
    finally:
        con.close()


def test_project_with_absolute_paths_still_works(folders, capsys, tmp_path):
    a, _, p = folders
    src = str(a / "map.mrc")
    assert _cli(capsys, "run", "import.volume", "-P", p, "-p", f"path={src}")[0] == 0
    assert _cli(capsys, "run", "masks.volumes", "-P", p, "-i", "volume=1.volume")[0] == 0
    _absolutise(p)
    proj = Project.open(p)
    assert proj.outputs(1)["volume"].path == str(p / "Runs/000001_import_volume/extra/volume.mrc")
    rc, out, err = _cli(capsys, "runs", "why", "1", "-P", p)
    assert rc == 0 and out.startswith("run 1: FRESH"), out + err
    rc, out, err = _cli(capsys, "runs", "why", "2", "-P", p)
    assert rc == 0 and "MISSING" not in out, out + err
    rc, out, err = _cli(capsys, "runs", "resume", "2", "-P", p)
    assert rc == 0, err
    rc, _, err = _cli(capsys, "export", "2.volume", str(tmp_path / "m.mrc"), "-P", p)
    assert rc == 0, err


def test_stored_form_round_trip(tmp_path):
    root = tmp_path / "P"
    inside = str(root / "Runs" / "000001_x" / "extra" / "a.mrc")
    assert paths.to_stored(root, inside) == "Runs/000001_x/extra/a.mrc"
    assert paths.from_stored(tmp_path / "Q", "Runs/000001_x/extra/a.mrc") == str(
        tmp_path / "Q" / "Runs" / "000001_x" / "extra" / "a.mrc"
    )
    assert paths.to_stored(root, "/elsewhere/b.mrc") == "/elsewhere/b.mrc"
    assert paths.from_stored(root, "/elsewhere/b.mrc") == "/elsewhere/b.mrc"
    assert paths.to_stored(root, str(tmp_path / "Px" / "c.mrc")) == str(tmp_path / "Px" / "c.mrc")
    assert paths.to_stored(root, "") == "" and paths.from_stored(root, None) is None


def test_source_inside_the_project_moves_with_it(folders, capsys, tmp_path):
    a, _, p = folders
    (p / "sources").mkdir()
    shutil.copy(a / "map.mrc", p / "sources" / "map.mrc")
    rc, _, err = _cli(capsys, "run", "import.volume", "-P", p, "-p", f"path={p}/sources/map.mrc")
    assert rc == 0, err
    assert _params(p, 1)["path"] == "sources/map.mrc"
    p3 = tmp_path / "P3"
    shutil.move(str(p), str(p3))
    rc, out, err = _cli(capsys, "runs", "why", "1", "-P", p3)
    assert rc == 0 and out.startswith("run 1: FRESH"), out + err
    assert _cli(capsys, "runs", "edit", "1", "-P", p3, "-p", "pixel_size=11.4")[0] == 0
    assert _params(p3, 1)["path"] == "sources/map.mrc"
    assert _cli(capsys, "runs", "resume", "1", "-P", p3)[0] == 0
    assert _cli(capsys, "runs", "rerun", "1", "-P", p3)[0] == 0
    assert _params(p3, 2)["path"] == "sources/map.mrc"
    assert Project.open(p3).outputs(2)["volume"].pixel_size == pytest.approx(11.4)
