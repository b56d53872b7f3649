"""Run control: ``runs stop``, what ``runs show`` / ``provenance`` / ``runs list`` say after
``runs edit``, resuming below a stale upstream (``--cascade``), run ids after a delete, the
duration of an interrupted run, Ctrl-C in ``template run`` and whole-template validation."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from enginetest_helpers import CLI, dead_pid, run_status, set_run, steps_of, wait_for

import emforge.plugins
from emforge.cli import main
from emforge.engine import create_run, execute_run
from emforge.engine.claims import _pid_alive
from emforge.engine.listing import delete_runs, edit_params, run_rows, show_lines
from emforge.engine.provenance import lineage, lineage_lines
from emforge.engine.runs import run_row
from emforge.engine.templates import Template, run_template, validate_template
from emforge.errors import ValidationError
from emforge.io import read_volume
from emforge.project import Project


@pytest.fixture
def toy_cli(monkeypatch, registry):
    monkeypatch.setattr(emforge.plugins, "default_registry", lambda: registry)
    return registry


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# --------------------------------------------------------------------------- runs stop


@pytest.mark.slow
def test_runs_stop_aborts_a_detached_engine_and_resume_finishes(project, capsys):
    rc, out, err = _cli(
        capsys,
        "run", "example.sleep", "--detach", "-P", str(project.path),
        "-p", "seconds=1", "-p", "n_steps=3", "--executor", "inline",
    )  # fmt: skip
    assert rc == 0, err
    pid = run_row(project, 1)["pid"]
    wait_for(lambda: steps_of(project, 1).get("sleep_1", {}).get("status") == "running", 20, "step")
    rc, out, err = _cli(capsys, "runs", "stop", "1", "-P", str(project.path))
    assert rc == 0 and "stopped (aborted)" in out, err
    assert run_status(project, 1) == "aborted"
    wait_for(lambda: not _pid_alive(pid), 10, "the engine's exit")
    rc, out, err = _cli(
        capsys, "runs", "resume", "1", "-P", str(project.path), "--executor", "inline"
    )
    assert rc == 0 and "run 1 finished" in out, err
    assert {s["status"] for s in steps_of(project, 1).values()} <= {"finished", "skipped"}


def test_runs_stop_checks_the_process_start_before_signalling(project, capsys):
    run_id = create_run(project, "example.sleep", {"seconds": 0, "n_steps": 1})
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:  # the recorded pid now belongs to another process (reused)
        set_run(
            project, run_id, status="running", pid=bystander.pid,
            host=socket.gethostname(), heartbeat=time.time(), pid_start="old-boot:1",
        )  # fmt: skip
        rc, out, _ = _cli(capsys, "runs", "stop", str(run_id), "-P", str(project.path))
        assert rc == 0 and "marked aborted" in out
        assert run_status(project, run_id) == "aborted"
        time.sleep(0.1)
        assert bystander.poll() is None  # never signalled
    finally:
        bystander.kill()
        bystander.wait()
    rc, _, err = _cli(capsys, "runs", "stop", str(run_id), "-P", str(project.path))
    assert (
        rc == 2
        and err.strip() == f"emforge: error: run {run_id}: is aborted, not running; nothing to stop"
    )


# --------------------------------------------------------------------------- edited runs


def test_edited_run_shows_the_params_that_made_its_outputs(project, registry, toy_cli, capsys):
    rid = create_run(project, "toy.chain", {"gain": 0.5}, registry=registry)
    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    edit_params(project, rid, {"gain": 3.0}, registry=registry)
    lines = show_lines(project, rid)
    params = next(line for line in lines if line.startswith("  params:"))
    assert "gain=0.5" in params and "gain=3.0" not in params
    pending = [line for line in lines if "pending edits" in line]
    assert len(pending) == 1 and "gain=3.0" in pending[0]
    tree = lineage(project, run_id=rid)
    assert tree["params"]["gain"] == 0.5 and tree["pending"] == {"gain": 3.0}
    assert any("pending edits" in line and "gain=3.0" for line in lineage_lines(tree))
    assert run_rows(project)[0]["stale"] == "params edited"
    rc, out, _ = _cli(capsys, "runs", "list", "-P", str(project.path))
    assert "finished (stale: params edited)" in out
    # the outputs were made with gain 0.5: out3 = 0.5 * out2
    out2, _ = read_volume(project.outputs(rid)["out2"].path)
    out3, _ = read_volume(project.outputs(rid)["out3"].path)
    np.testing.assert_allclose(out3, 0.5 * out2, rtol=1e-6)
    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    assert not any("pending edits" in line for line in show_lines(project, rid))
    assert lineage(project, run_id=rid)["params"]["gain"] == 3.0
    assert run_rows(project)[0]["stale"] == ""


def test_resume_below_a_stale_upstream_says_so_or_cascades(project, registry, toy_cli, capsys):
    src = create_run(project, "toy.source", {"value": 1.0}, registry=registry)
    assert execute_run(project, src, registry=registry) == "finished"
    use = create_run(
        project, "toy.consume", {"factor": 2.0}, {"volume": f"{src}.volume"}, registry=registry
    )
    assert execute_run(project, use, registry=registry) == "finished"
    edit_params(project, src, {"value": 5.0}, registry=registry)
    p = ("-P", str(project.path))
    rc, out, err = _cli(capsys, "runs", "resume", str(use), *p)
    assert rc == 0
    assert f"upstream run {src} is STALE" in err and "--cascade" in err
    assert read_volume(project.outputs(use)["volume"].path)[0].max() == pytest.approx(2.0)
    rc, out, err = _cli(capsys, "runs", "resume", str(use), "--cascade", *p)
    assert rc == 0 and f"resuming upstream run {src}" in out, err
    # 5 (the edited source) x 2
    assert read_volume(project.outputs(use)["volume"].path)[0].max() == pytest.approx(10.0)
    rc, out, err = _cli(capsys, "runs", "resume", str(use), *p)
    assert rc == 0 and "upstream" not in err


def test_run_ids_are_never_reused_after_a_delete(project, registry):
    ids = [create_run(project, "toy.source", {}, registry=registry) for _ in range(3)]
    assert ids == [1, 2, 3]
    delete_runs(project, [3])
    assert create_run(project, "toy.source", {}, registry=registry) == 4
    delete_runs(project, [1, 2, 4])
    assert create_run(project, "toy.source", {}, registry=registry) == 5
    # a project made before the counter and the engine's process identity column
    con = sqlite3.connect(project.db_path)
    con.execute("DELETE FROM meta WHERE key = 'last_run_id'")
    con.execute("ALTER TABLE runs DROP COLUMN pid_start")
    con.commit()
    con.close()
    old = Project.open(project.path)
    assert create_run(old, "toy.source", {}, registry=registry) == 6
    assert execute_run(old, 6, registry=registry) == "finished"


def test_an_interrupted_runs_duration_stops_counting(project, registry):
    rid = create_run(project, "toy.source", {}, registry=registry)
    now = time.time()
    set_run(
        project, rid, status="running", pid=dead_pid(), host=socket.gethostname(),
        started=now - 100, heartbeat=now - 90,
    )  # fmt: skip
    assert run_rows(project)[0]["shown_status"] == "interrupted"
    assert run_rows(project)[0]["duration"] == "10.0 s"


# --------------------------------------------------------------------------- templates


def _sleep_template(tmp_path, seconds: float, n_steps: int):
    path = tmp_path / "sleep.json"
    path.write_text(
        json.dumps(
            {
                "format": "emforge-template",
                "nodes": [
                    {"id": "nap", "protocol": "example.sleep",
                     "params": {"seconds": seconds, "n_steps": n_steps}},
                ],
            }
        )
    )  # fmt: skip
    return path


@pytest.mark.slow
def test_ctrl_c_in_template_run_aborts_and_the_next_run_resumes(project, tmp_path, capsys):
    path = _sleep_template(tmp_path, 0.8, 3)
    cmd = CLI + ["template", "run", str(path), "-P", str(project.path), "--executor", "inline"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(
        lambda: steps_of(project, 1).get("sleep_2", {}).get("status") == "running", 30, "step 2"
    )
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines() == [
        "emforge: error: template interrupted: node nap (run 1) aborted; run the template again to resume"
    ]
    assert run_status(project, 1) == "aborted"
    rc, out, err = _cli(
        capsys, "template", "run", str(path), "-P", str(project.path), "--executor", "inline"
    )
    assert rc == 0 and "nap: run 1 resumed" in out, err
    assert [r["id"] for r in run_rows(project)] == [1]
    steps = steps_of(project, 1)
    assert steps["sleep_1"]["status"] == "skipped" and steps["sleep_1"]["executions"] == 1
    assert run_status(project, 1) == "finished"


def test_a_template_is_validated_whole_before_its_first_node(project, registry):
    tpl = Template.model_validate(
        {
            "nodes": [
                {"id": "src", "protocol": "toy.source", "params": {"value": 1.0}},
                {"id": "a", "protocol": "toy.consume", "params": {"factor": -1},
                 "inputs": {"volume": "src.volume"}},
                {"id": "b", "protocol": "toy.consume", "inputs": {"volume": "src.nothing"}},
                {"id": "c", "protocol": "toy.consume", "inputs": {"volume": 999}},
                {"id": "d", "protocol": "toy.nosuch"},
                {"id": "e", "protocol": "toy.consume", "inputs": {"bogus": "src.volume"}},
            ]
        }
    )  # fmt: skip
    with pytest.raises(ValidationError) as info:
        run_template(project, tpl, registry=registry)
    text = "\n".join(info.value.lines())
    assert "node a: param 'factor'" in text
    assert "node b: input 'volume': node src (toy.source) has no output 'nothing'" in text
    assert "node c: input 'volume': object 999 does not exist" in text
    assert "node d:" in text and "toy.nosuch" in text
    assert "node e: input 'bogus'" in text and "node e: input 'volume': required" in text
    assert run_rows(project) == []  # not even the first, valid node ran


def test_template_validation_accepts_an_output_of_alternative_kinds(project):
    # masks.create declares "VolumeMask | Mask2D"; masks.volumes takes a VolumeMask
    tpl = Template.model_validate(
        {
            "nodes": [
                {"id": "map", "protocol": "import.volume", "params": {"path": "/x/map.mrc"}},
                {"id": "mask", "protocol": "masks.create", "params": {"size": 32, "pixel_size": 1.0}},
                {"id": "vol", "protocol": "masks.volumes", "params": {"source": "mask"},
                 "inputs": {"volume": "map.volume", "mask": "mask.mask"}},
            ]
        }
    )  # fmt: skip
    validate_template(project, tpl)  # no problem found
    bad = tpl.model_copy(deep=True)
    bad.nodes[2].inputs["mask"] = "map.volume"
    with pytest.raises(ValidationError, match="node vol: input 'mask': map.volume is a Volume"):
        validate_template(project, bad)


def test_runs_list_marks_a_run_whose_input_was_redone(project, registry):
    src = create_run(project, "toy.source", {"value": 1.0}, registry=registry)
    assert execute_run(project, src, registry=registry) == "finished"
    use = create_run(project, "toy.consume", {}, {"volume": f"{src}.volume"}, registry=registry)
    assert execute_run(project, use, registry=registry) == "finished"
    assert [r["stale"] for r in run_rows(project)] == ["", ""]
    edit_params(project, src, {"value": 4.0}, registry=registry)
    assert execute_run(project, src, registry=registry) == "finished"
    assert [r["stale"] for r in run_rows(project)] == ["", "input changed"]
    assert execute_run(project, use, registry=registry) == "finished"
    assert [r["stale"] for r in run_rows(project)] == ["", ""]
