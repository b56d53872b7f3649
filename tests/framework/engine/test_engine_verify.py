"""Outputs are verified, not trusted: a deleted or truncated output file (a single object's
map or a stack referenced by a set's rows) makes ``runs why`` say MISSING naming the file and
``runs resume`` redo the step that wrote it; temp files of killed steps go on resume."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from enginetest_helpers import steps_of

from emforge.engine import create_run, execute_run
from emforge.engine.runs import run_row
from emforge.engine.staleness import why
from emforge.io import open_stack


def _run(project, registry, protocol, params=None, inputs=None) -> int:
    rid = create_run(project, protocol, params or {}, inputs or {}, registry=registry)
    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    return rid


def _executions(project, rid) -> dict[str, int]:
    return {n: s["executions"] for n, s in steps_of(project, rid).items()}


@pytest.fixture
def masked(project, data_dir):
    """17 real particles (EMPIAR-10017) masked into 2 stacks by two steps + a register step."""
    data = data_dir / "particles"
    imp = _run(
        project,
        None,
        "import.particles",
        {"star": str(data / "sample_particles_relion31.star"), "stack": str(data / "sample.mrcs")},
    )
    rid = _run(
        project,
        None,
        "masks.particles",
        {"geometry": "circular", "radius": 60.0, "parts": 2},
        {"particles": f"{imp}.particles"},
    )
    workdir = Path(run_row(project, rid)["workdir"])
    stacks = sorted((workdir / "extra").glob("particles_*.mrcs"))
    assert [s.name for s in stacks] == ["particles_001.mrcs", "particles_002.mrcs"]
    return rid, workdir, {s.name: s.read_bytes() for s in stacks}


def _images(project, rid) -> np.ndarray:
    cols = project.outputs(rid)["particles"].read("image_path", "image_index")
    out = []
    for path, idx in zip(cols["image_path"], cols["image_index"], strict=True):
        with open_stack(path) as s:
            out.append(s[int(idx)])
    return np.stack(out)


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_set_stack_gone_is_missing_and_resume_redoes_its_step(project, masked, damage):
    registry = None  # the installed protocols (masks.particles)
    rid, workdir, before = masked
    images = _images(project, rid)
    assert why(project, rid, registry=registry).state == "FRESH"
    target = workdir / "extra" / "particles_002.mrcs"
    if damage == "delete":
        target.unlink()
    else:
        with open(target, "r+b") as fh:
            fh.truncate(target.stat().st_size - 4096)

    st = why(project, rid, registry=registry)
    assert st.state == "MISSING"
    text = "\n".join(st.lines())
    assert "particles_002.mrcs" in text and ("gone" in text or "changed" in text)
    assert "particles_001.mrcs" not in text
    assert st.stale_steps == ["mask_002"]

    runs_before = _executions(project, rid)
    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    after = _executions(project, rid)
    redone = sorted(n for n in after if after[n] != runs_before[n])
    assert redone == ["mask_002"]
    assert {s.name: s.read_bytes() for s in sorted((workdir / "extra").glob("*.mrcs"))} == before
    np.testing.assert_array_equal(_images(project, rid), images)
    assert why(project, rid, registry=registry).state == "FRESH"


def test_temp_files_of_a_killed_step_are_removed_on_resume(project, registry):
    rid = _run(project, registry, "toy.chain")
    workdir = Path(run_row(project, rid)["workdir"])
    # what a step killed mid-write leaves: hidden atomic-write temp files and scratch files
    orphans = [
        workdir / "extra" / ".out2.mrc.0123456789ab.tmp",
        workdir / "extra" / "sub" / ".part.mrcs.ba9876543210.tmp",
        workdir / "tmp" / "scratch.bin",
        workdir / "tmp" / "deep" / "more.bin",
    ]
    for p in orphans:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(1000))
    kept = workdir / "extra" / "notes.tmp"  # not the atomic-write pattern: a user's file
    kept.write_text("keep me")
    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    assert [p for p in orphans if p.exists()] == []
    assert (workdir / "tmp").is_dir() and not any((workdir / "tmp").iterdir())
    assert kept.read_text() == "keep me"
