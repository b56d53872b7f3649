"""The CLI and the library around it: validation, chaining and delete, templates, describe,
plugin doctor. Most commands go through ``emforge.cli.main`` in-process (the same code as the
console script, without the interpreter start-up); one validation case runs the real command.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import emforge.plugins
from emforge.cli import main
from emforge.engine import create_run, execute_run
from emforge.engine.templates import load_template
from emforge.errors import PluginError, ValidationError
from emforge.plugins import PluginManifest, ProtocolEntry, Registry
from emforge.project import Project

CLI = [sys.executable, "-c", "import sys; from emforge.cli import main; sys.exit(main())"]


def _runs(project: Project) -> list[tuple]:
    con = sqlite3.connect(project.db_path)
    try:
        return con.execute("SELECT id, protocol_id, status, label FROM runs ORDER BY id").fetchall()
    finally:
        con.close()


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture
def toy_cli(monkeypatch, registry):
    """Make the CLI see the isolated toy registry."""
    monkeypatch.setattr(emforge.plugins, "default_registry", lambda: registry)
    return registry


# --------------------------------------------------------------------------- validation


def test_validation_reports_every_problem_and_records_nothing(project, registry):
    with pytest.raises(ValidationError) as info:
        create_run(
            project,
            "toy.consume",
            {"factor": -1, "count": 50, "mode": "medium", "bogus": 1},
            {"volume": "9.volume"},
            registry=registry,
        )
    lines = info.value.lines()
    assert len(lines) == 5, lines
    for name, line in zip(
        ("factor", "count", "mode", "bogus", "volume"), sorted(lines, key=_param_order), strict=True
    ):
        assert f"'{name}'" in line, line
        assert "\n" not in line
    assert "unknown parameter" in next(line for line in lines if "'bogus'" in line)
    # params that parse but fail the protocol's own validate(): both problems at once
    src = create_run(project, "toy.source", {}, registry=registry)
    assert execute_run(project, src, registry=registry, workers=1) == "finished"
    with pytest.raises(ValidationError) as info:
        create_run(
            project,
            "toy.consume",
            {"note": "bad", "count": 7},
            {"volume": f"{src}.volume"},
            registry=registry,
        )
    assert sorted(info.value.lines()) == [
        "param 'count': more than 5 needs mode 'slow'",
        "param 'note': must not be 'bad'",
    ]
    assert [r[0] for r in _runs(project)] == [src]
    assert sorted(p.name for p in (project.path / "Runs").iterdir()) == [f"{src:06d}_toy_source"]


def _param_order(line: str) -> int:
    return [f"'{n}'" in line for n in ("factor", "count", "mode", "bogus", "volume")].index(True)


def test_cli_validation_exit_2_one_line_each_no_trace(project, toy_cli, capsys):
    rc, out, err = _cli(
        capsys,
        "run",
        "toy.consume",
        "-P",
        str(project.path),
        "-p",
        "factor=-1",
        "-p",
        "count=50",
        "-p",
        "mode=medium",
        "-i",
        "volume=9.volume",
    )
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("emforge: error: ") for line in lines), err
    assert [
        n for n in ("factor", "count", "mode", "volume") if any(f"'{n}'" in line for line in lines)
    ] == ["factor", "count", "mode", "volume"]
    assert "Traceback" not in err + out
    assert _runs(project) == []


def test_real_cli_validation_exit_2(project):
    proc = subprocess.run(
        CLI
        + [
            "run",
            "example.normalize",
            "-P",
            str(project.path),
            "-p",
            "std=-1",
            "-p",
            "mean=abc",
            "-p",
            "wrong=1",
            "-i",
            "volume=7.volume",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert len(lines) == 4, proc.stderr
    for name in ("std", "mean", "wrong", "volume"):
        assert sum(f"'{name}'" in line for line in lines) == 1, (name, lines)
    assert _runs(Project.open(project.path)) == []


# --------------------------------------------------------------------------- chaining, delete


def test_cli_chaining_and_delete(project, data_dir, capsys):
    p = ["-P", str(project.path)]
    rc, out, _ = _cli(
        capsys, "run", "import.volume", *p, "-p", f"path={data_dir / 'maps' / 'EMD-3197.map'}"
    )
    assert rc == 0 and "run 1 finished" in out and "1.volume" in out
    rc, out, _ = _cli(
        capsys, "run", "example.normalize", *p, "--input", "volume=1.volume", "-p", "mean=2"
    )
    assert rc == 0 and "run 2 finished" in out
    vol = project.outputs(2)["volume"]
    assert Path(vol.path).is_file() and vol.shape == (20, 20, 20)
    rc, out, _ = _cli(
        capsys,
        "run",
        "example.threshold",
        *p,
        "--input",
        f"volume=object:{project.list_objects(2)[0]['id']}",
    )
    assert rc == 0 and "run 3 finished" in out  # object:ID works as well as RUN.output

    rc, out, _ = _cli(capsys, "runs", "edit", "2", *p, "-p", "mean=3")
    assert rc == 0 and "mean" in out
    rc, out, _ = _cli(capsys, "runs", "why", "2", *p)
    assert rc == 0 and out.splitlines()[0] == "run 2: STALE (steps to redo: normalize)"
    assert "PARAMS: param(s) mean changed" in out
    rc, out, _ = _cli(capsys, "runs", "why", "3", *p)
    assert rc == 0 and "UPSTREAM: input 'volume' comes from run 2, which is STALE" in out
    rc, out, _ = _cli(capsys, "runs", "resume", "2", *p)
    assert rc == 0 and "run 2 finished" in out
    rc, out, _ = _cli(capsys, "runs", "why", "3", *p)
    assert "UPSTREAM: input 'volume' (run 2.volume) changed since this run used it" in out

    rc, out, err = _cli(capsys, "runs", "delete", "1", *p)
    assert rc == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "run(s) 2, 3" in err and "--cascade" in err
    assert [r[0] for r in _runs(project)] == [1, 2, 3]
    rc, _, err = _cli(capsys, "runs", "delete", "2", *p)
    assert rc == 2 and "run(s) 3" in err

    rc, out, _ = _cli(capsys, "runs", "delete", "1", "--cascade", *p)
    assert rc == 0 and "1, 2, 3" in out
    assert _runs(project) == [] and project.list_objects() == []
    assert list((project.path / "Runs").iterdir()) == []


# --------------------------------------------------------------------------- templates


def test_template_run_skip_set_and_export(project, data_dir, tmp_path, capsys):
    tpl = {
        "format": "emforge-template",
        "version": 1,
        "description": "import, normalise, threshold",
        "nodes": [
            {
                "id": "mask",
                "protocol": "example.threshold",
                "params": {"sigma": 1.0},
                "inputs": {"volume": "norm.volume"},
            },
            {
                "id": "map",
                "protocol": "import.volume",
                "params": {"path": str(data_dir / "maps" / "emd_5625.map")},
            },
            {
                "id": "norm",
                "protocol": "example.normalize",
                "params": {"mean": 0.0, "std": 1.0},
                "inputs": {"volume": "map.volume"},
            },
        ],
    }
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(tpl))
    p = ["-P", str(project.path)]

    rc, out, _ = _cli(capsys, "template", "run", str(path), *p)
    assert rc == 0, out
    runs = _runs(project)
    assert [(r[1], r[2], r[3]) for r in runs] == [
        ("import.volume", "finished", "map"),
        ("example.normalize", "finished", "norm"),
        ("example.threshold", "finished", "mask"),
    ]
    # inputs are wired between the nodes
    assert project.object_row(project.list_objects(2)[0]["id"])  # norm's output exists
    con = sqlite3.connect(project.db_path)
    edges = con.execute(
        "SELECT run_id, object_id FROM edges WHERE direction='in' ORDER BY run_id"
    ).fetchall()
    con.close()
    assert edges == [(2, project.list_objects(1)[0]["id"]), (3, project.list_objects(2)[0]["id"])]

    rc, out, _ = _cli(capsys, "template", "run", str(path), *p)
    assert rc == 0 and out.count("skipped (fresh)") == 3 and len(_runs(project)) == 3

    rc, out, _ = _cli(capsys, "template", "run", str(path), *p, "--set", "mask.sigma=0.5")
    assert rc == 0 and out.count("skipped (fresh)") == 2 and "mask: run 4 finished" in out
    runs = _runs(project)
    assert len(runs) == 4 and runs[3][1:] == ("example.threshold", "finished", "mask")
    assert json.loads(project_params(project, 4))["sigma"] == 0.5

    out_file = tmp_path / "exported.json"
    rc, _, _ = _cli(capsys, "template", "export", "1", "2", "3", *p, "-o", str(out_file))
    assert rc == 0
    exported = load_template(out_file)
    by_id = {n.id: n for n in exported.nodes}
    assert sorted(by_id) == ["map", "mask", "norm"]
    for node in tpl["nodes"]:
        got = by_id[node["id"]]
        assert got.protocol == node["protocol"]
        assert {k: got.params[k] for k in node["params"]} == node["params"]
        assert got.inputs == node.get("inputs", {})
    # the exported template is the same workflow: every node is fresh
    rc, out, _ = _cli(capsys, "template", "run", str(out_file), *p)
    assert rc == 0 and out.count("skipped (fresh)") == 3 and len(_runs(project)) == 4


def project_params(project: Project, run_id: int) -> str:
    con = sqlite3.connect(project.db_path)
    try:
        return con.execute("SELECT params_json FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    finally:
        con.close()


def test_bad_template_is_one_clear_line(project, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {"nodes": [{"id": "a", "protocol": "import.volume", "inputs": {"x": "zz.volume"}}]}
        )
    )
    rc, _, err = _cli(capsys, "template", "run", str(path), "-P", str(project.path))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "zz" in err and "Traceback" not in err
    path.write_text("{not json")
    rc, _, err = _cli(capsys, "template", "run", str(path), "-P", str(project.path))
    assert rc == 2 and str(path) in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- describe, doctor


def test_describe_prints_every_param_with_type_default_unit_help(capsys):
    from emforge.protocols.imports._protocols import ImportVolume

    rc, out, _ = _cli(capsys, "protocols", "describe", "import.volume")
    assert rc == 0
    lines = out.splitlines()
    fields = ImportVolume.Params.model_fields
    assert set(fields) == {"path", "pixel_size", "half1", "half2", "stack_as_map"}
    for name, field in fields.items():
        idx = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name} ("))
        head = lines[idx]
        assert f"default {field.default!r}" in head, head
        kind = {"pixel_size": "float", "stack_as_map": "bool"}.get(name, "path")  # SourcePath
        assert kind in head, head
        assert field.description and lines[idx + 1].strip() == field.description
    px = next(line for line in lines if line.strip().startswith("pixel_size ("))
    assert "unit Å" in px
    rc, out, _ = _cli(capsys, "protocols", "describe", "import.volume", "--json")
    assert rc == 0 and set(json.loads(out)["properties"]) == set(fields)


def test_doctor_reports_a_broken_plugin_and_the_rest_still_works(
    tmp_path, monkeypatch, registry, capsys
):
    from toyprotocols import manifest as toy_manifest

    module = f"broken_emforge_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text('raise ImportError("needs libfrobnicate.so.3")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = PluginManifest(
        name="broken",
        version="0.1",
        protocols=[ProtocolEntry(id="broken.thing", python_name=f"{module}:Thing")],
    )
    reg = Registry.from_manifests([toy_manifest, broken])
    assert (
        "broken.thing" in reg and "toy.chain" in reg
    )  # discovery read the manifests, imported nothing
    rows = {r.protocol: r for r in reg.doctor()}
    assert not rows["broken.thing"].ok
    assert (
        "ImportError" in rows["broken.thing"].error
        and "libfrobnicate" in rows["broken.thing"].error
    )
    assert all(rows[p].ok for p in ("toy.chain", "toy.fan", "toy.source", "toy.consume"))
    with pytest.raises(PluginError, match="libfrobnicate"):
        reg.load("broken.thing")

    # the CLI with this registry: doctor shows it, other commands keep working
    monkeypatch.setattr(emforge.plugins, "default_registry", lambda: reg)
    rc, out, _ = _cli(capsys, "plugins", "doctor")
    assert rc == 1
    bad = [line for line in out.splitlines() if line.startswith("ERR")]
    assert (
        len(bad) == 1
        and "broken.thing" in bad[0]
        and "ImportError: needs libfrobnicate.so.3" in bad[0]
    )
    rc, out, _ = _cli(capsys, "protocols", "list")
    assert rc == 0 and "toy.chain" in out
    proj = Project.init(tmp_path / "proj")
    rc, out, err = _cli(capsys, "run", "toy.chain", "-P", str(proj.path), "--workers", "1")
    assert rc == 0 and "run 1 finished" in out, err
    rc, _, err = _cli(capsys, "run", "broken.thing", "-P", str(proj.path))
    assert rc == 2 and "libfrobnicate" in err and len(err.strip().splitlines()) == 1
