"""Runs in-process: staleness and its causes, resume after edits, re-run, parallel steps,
SIGTERM, provenance records and lineage."""

from __future__ import annotations

import json
import multiprocessing as mp
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from enginetest_helpers import calls, integrity, run_status, steps_of
from toyprotocols import ToyChain, output_bytes

from emforge.engine import create_run, effective_status, execute_run
from emforge.engine.listing import delete_runs, edit_params, rerun
from emforge.engine.provenance import lineage, lineage_dot, lineage_lines, run_record
from emforge.engine.runs import run_row
from emforge.engine.staleness import why
from emforge.errors import EmforgeError, ProjectError
from emforge.io import read_volume, write_volume
from emforge.project import Project

CHAIN = ["s1", "s2", "s3", "s4", "s5"]


def _run(project: Project, registry, protocol: str, params=None, inputs=None, **kw) -> int:
    rid = create_run(project, protocol, params or {}, inputs or {}, registry=registry)
    assert (
        execute_run(project, rid, registry=registry, workers=kw.pop("workers", 1), **kw)
        == "finished"
    )
    return rid


def _causes(project: Project, run_id: int, registry) -> tuple[str, dict[str, str]]:
    st = why(project, run_id, registry=registry)
    return st.state, {c.kind: c.sentence for c in st.causes}


def _statuses(project: Project, run_id: int) -> dict[str, str]:
    return {n: s["status"] for n, s in steps_of(project, run_id).items()}


# --------------------------------------------------------------------------- staleness


def test_param_edit_is_stale_params_and_resume_redoes_only_its_users(project, registry):
    rid = _run(project, registry, "toy.chain")
    workdir = run_row(project, rid)["workdir"]
    assert _causes(project, rid, registry) == ("FRESH", {})
    before = output_bytes(workdir)

    assert edit_params(project, rid, {"tail": 2.5}, registry=registry) == ["tail"]
    st = why(project, rid, registry=registry)
    assert st.state == "STALE"
    assert st.stale_steps == ["s5"]
    params = [c.sentence for c in st.causes if c.kind == "PARAMS"]
    assert len(params) == 1 and "tail" in params[0] and "s5" in params[0]
    assert "runs why" not in params[0] and [c.kind for c in st.causes] == ["PARAMS"]

    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    assert _statuses(project, rid) == {
        "s1": "skipped",
        "s2": "skipped",
        "s3": "skipped",
        "s4": "skipped",
        "s5": "finished",
    }
    assert calls(workdir) == CHAIN + ["s5"]
    after = output_bytes(workdir)
    assert {k for k in after if after[k] != before[k]} == {"out5.mrc"}
    out4, _ = read_volume(Path(workdir) / "extra" / "out4.mrc")
    out5, _ = read_volume(Path(workdir) / "extra" / "out5.mrc")
    np.testing.assert_allclose(out5, out4 + 2.5, rtol=0, atol=1e-5)
    assert _causes(project, rid, registry) == ("FRESH", {})


def test_edit_of_a_param_no_step_uses_redoes_nothing(project, registry):
    rid = _run(project, registry, "toy.chain")
    edit_params(project, rid, {"sleep": 0.01}, registry=registry)
    st = why(project, rid, registry=registry)
    assert (
        st.stale_steps == []
        and "sleep" in st.causes[0].sentence
        and "no step uses" in st.causes[0].sentence
    )
    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    assert set(_statuses(project, rid).values()) == {"skipped"}
    assert calls(run_row(project, rid)["workdir"]) == CHAIN
    assert why(project, rid, registry=registry).state == "FRESH"


def test_param_edit_on_independent_steps_redoes_that_step_and_its_dependents(project, registry):
    rid = _run(project, registry, "toy.fan", workers=2)
    workdir = run_row(project, rid)["workdir"]
    edit_params(project, rid, {"b": 20}, registry=registry)
    st = why(project, rid, registry=registry)
    assert st.state == "STALE" and st.stale_steps == ["b", "merge"]
    assert "param(s) b changed" in st.causes[0].sentence
    assert execute_run(project, rid, registry=registry, workers=2) == "finished"
    assert _statuses(project, rid) == {
        "a": "skipped",
        "b": "finished",
        "c": "skipped",
        "merge": "finished",
    }
    assert sorted(calls(workdir)) == sorted(["a", "b", "c", "merge", "b", "merge"])
    merged, _ = read_volume(Path(workdir) / "extra" / "merged.mrc")
    assert np.all(merged == 1 + 20 + 3)


def test_upstream_change_is_reported_upstream(project, registry):
    src = _run(project, registry, "toy.source", {"value": 1.0})
    dst = _run(project, registry, "toy.consume", {"factor": 2.0}, {"volume": f"{src}.volume"})
    assert _causes(project, dst, registry) == ("FRESH", {})
    old_version = project.object_row(project.list_objects(src)[0]["id"])["data_version"]

    edit_params(project, src, {"value": 3.0}, registry=registry)
    state, causes = _causes(project, dst, registry)  # the producer is stale, not yet re-executed
    assert state == "STALE" and "UPSTREAM" in causes and f"run {src}" in causes["UPSTREAM"]
    assert "PARAMS" in causes["UPSTREAM"]

    assert execute_run(project, src, registry=registry, workers=1) == "finished"
    obj = project.list_objects(src)[0]
    assert obj["data_version"] != old_version  # same object id, new data
    state, causes = _causes(project, dst, registry)
    assert state == "STALE" and list(causes) == ["UPSTREAM"]
    assert (
        f"run {src}.volume" in causes["UPSTREAM"]
        and "changed since this run used it" in causes["UPSTREAM"]
    )

    assert execute_run(project, dst, registry=registry, workers=1) == "finished"
    assert _causes(project, dst, registry) == ("FRESH", {})
    data, _ = read_volume(project.get(project.list_objects(dst)[0]["id"]).path)
    assert np.all(data == 6.0)


def test_protocol_version_bump_is_code(project, registry, monkeypatch):
    rid = _run(project, registry, "toy.chain")
    monkeypatch.setattr(ToyChain, "version", "2")
    st = why(project, rid, registry=registry)
    assert st.state == "STALE" and [c.kind for c in st.causes] == ["CODE"]
    assert "version 2" in st.causes[0].sentence and "version 1" in st.causes[0].sentence
    assert st.stale_steps == CHAIN
    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    assert set(_statuses(project, rid).values()) == {"finished"}
    assert run_row(project, rid)["protocol_version"] == "2"
    assert why(project, rid, registry=registry).state == "FRESH"


def test_deleted_output_file_is_missing_and_resume_restores_it(project, registry):
    rid = _run(project, registry, "toy.chain")
    workdir = Path(run_row(project, rid)["workdir"])
    before = output_bytes(workdir)
    (workdir / "extra" / "out3.mrc").unlink()
    st = why(project, rid, registry=registry)
    assert st.state == "MISSING"
    missing = [c.sentence for c in st.causes if c.kind == "MISSING"]
    assert len(missing) == 1 and "out3" in missing[0] and "out3.mrc" in missing[0]
    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    assert _statuses(project, rid)["s3"] == "finished"
    assert {n for n, s in _statuses(project, rid).items() if s == "skipped"} == {
        "s1",
        "s2",
        "s4",
        "s5",
    }
    assert output_bytes(workdir) == before
    assert why(project, rid, registry=registry).state == "FRESH"


def test_changed_import_source_is_input(project, registry, data_dir, tmp_path):
    src = tmp_path / "map.mrc"
    shutil.copyfile(data_dir / "maps" / "EMD-3197.map", src)
    rid = _run(project, registry, "import.volume", {"path": str(src)})
    assert why(project, rid, registry=registry).state == "FRESH"
    data, info = read_volume(src)
    write_volume(src, data * 2, voxel_size=info.voxel_size, origin=info.origin)
    state, causes = _causes(project, rid, registry)
    assert state == "STALE" and list(causes) == ["INPUT"] and str(src) in causes["INPUT"]
    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    assert _statuses(project, rid) == {"import": "finished"}
    imported, _ = read_volume(project.get(project.list_objects(rid)[0]["id"]).path)
    np.testing.assert_array_equal(imported, data * 2)
    assert why(project, rid, registry=registry).state == "FRESH"


# --------------------------------------------------------------------------- re-run


def test_rerun_gives_byte_identical_outputs(project, registry, data_dir):
    chain = _run(project, registry, "toy.chain", {"seed": 11, "gain": 0.25})
    imp = _run(
        project, registry, "import.volume", {"path": str(data_dir / "maps" / "emd_5625.map")}
    )
    norm = _run(
        project,
        registry,
        "example.normalize",
        {"mean": 1.0, "std": 2.0},
        {"volume": f"{imp}.volume"},
    )
    for rid in (chain, imp, norm):
        new = rerun(project, rid, registry=registry)
        assert run_row(project, new)["source_run_id"] == rid
        assert execute_run(project, new, registry=registry, workers=1) == "finished"
        old_files = output_bytes(run_row(project, rid)["workdir"])
        new_files = output_bytes(run_row(project, new)["workdir"])
        assert old_files and sorted(old_files) == sorted(new_files)
        for name in old_files:
            assert old_files[name] == new_files[name], f"run {rid} re-run: {name} differs"
        old_rec, new_rec = run_record(project, rid), run_record(project, new)
        assert [o["data_version"] for o in old_rec["outputs"]] != [] and new_rec[
            "params"
        ] == old_rec["params"]
        assert new_rec["inputs"] == old_rec["inputs"]


# --------------------------------------------------------------------------- scheduling


def test_four_one_second_steps_on_two_workers(project, registry):
    rid = create_run(project, "example.sleep", {"seconds": 1.0, "n_steps": 4}, registry=registry)
    t0 = time.perf_counter()
    assert execute_run(project, rid, registry=registry, workers=2) == "finished"
    wall = time.perf_counter() - t0
    row = run_row(project, rid)
    print(
        f"\n4 x 1 s steps on 2 workers: {wall:.2f} s wall, {row['finished'] - row['started']:.2f} s recorded"
    )
    steps = steps_of(project, rid)
    assert set(steps) == {"sleep_1", "sleep_2", "sleep_3", "sleep_4"}
    assert all(s["status"] == "finished" and s["executions"] == 1 for s in steps.values())
    # A scheduling test, not a speed test (wall times on a shared 2-core machine are noise):
    # from the recorded step intervals, two steps ran at once at some moment and never more
    # than two, and the second round started as soon as a worker was free (no slow polling).
    spans = sorted((s["started"], s["finished"]) for s in steps.values())
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    level, peak = 0, 0
    for _, change in events:
        level += change
        peak = max(peak, level)
    assert peak == 2
    first_free = min(b for _, b in spans[:2])
    assert spans[2][0] - first_free < 0.5


def _forked_run(path: str, run_id: int, registry) -> None:
    execute_run(Project.open(path), run_id, registry=registry, workers=1)


def test_sigterm_aborts_and_resume_finishes(project, registry):
    rid = create_run(project, "toy.chain", {"sleep": 0.4}, registry=registry)
    workdir = run_row(project, rid)["workdir"]
    child = mp.get_context("fork").Process(
        target=_forked_run, args=(str(project.path), rid, registry)
    )
    child.start()
    deadline = time.monotonic() + 30
    while steps_of(project, rid).get("s2", {}).get("status") != "running":
        assert child.is_alive() and time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.1)
    with pytest.raises(EmforgeError, match="is running in process"):
        execute_run(project, rid, registry=registry, workers=1)
    with pytest.raises(ProjectError, match="running"):
        edit_params(project, rid, {"tail": 3.0}, registry=registry)
    with pytest.raises(ProjectError, match="running"):
        delete_runs(project, [rid])
    child.terminate()  # SIGTERM
    child.join(10)
    assert child.exitcode == 0  # the engine caught the signal and recorded the abort
    row = run_row(project, rid)
    assert row["status"] == "aborted" and effective_status(row) == "aborted"
    assert _statuses(project, rid) == {
        "s1": "finished",
        "s2": "aborted",
        "s3": "new",
        "s4": "new",
        "s5": "new",
    }
    assert "aborted" in (Path(workdir) / "logs" / "run.log").read_text()
    assert integrity(project) == "ok"
    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    assert _statuses(project, rid) == {
        "s1": "skipped",
        "s2": "finished",
        "s3": "finished",
        "s4": "finished",
        "s5": "finished",
    }
    assert calls(workdir) == ["s1", "s2", "s2", "s3", "s4", "s5"]
    assert run_status(project, rid) == "finished"


def test_sigterm_during_parallel_steps_aborts_the_workers(project, registry):
    rid = create_run(project, "example.sleep", {"seconds": 30.0, "n_steps": 2}, registry=registry)
    child = mp.get_context("fork").Process(
        target=execute_run, args=(project, rid), kwargs={"registry": registry, "workers": 2}
    )
    child.start()
    deadline = time.monotonic() + 30
    while [s["status"] for s in steps_of(project, rid).values()] != ["running", "running"]:
        assert child.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    child.terminate()
    child.join(10)
    assert time.monotonic() - t0 < 5, "the abort waited for the 30 s steps"
    assert run_status(project, rid) == "aborted"
    assert _statuses(project, rid) == {"sleep_1": "aborted", "sleep_2": "aborted"}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(
    not Path("/proc").is_dir(), reason="needs /proc (Linux) to find worker processes"
)
def test_sigkilled_engine_takes_its_workers_along_and_resumes(project, registry):
    rid = create_run(project, "example.sleep", {"seconds": 0.8, "n_steps": 4}, registry=registry)
    child = mp.get_context("fork").Process(
        target=execute_run, args=(project, rid), kwargs={"registry": registry, "workers": 2}
    )
    child.start()
    deadline = time.monotonic() + 30
    while sum(s["status"] == "finished" for s in steps_of(project, rid).values()) < 2:
        assert child.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)  # steps 3-4 are running in the workers
    workers = [
        int(p) for p in Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()
    ]
    assert len(workers) == 2
    child.kill()
    child.join()
    time.sleep(0.3)
    # an orphaned worker would finish its step and race the resumed run for the same files
    assert [w for w in workers if _alive(w)] == []
    assert effective_status(run_row(project, rid)) == "interrupted"
    assert execute_run(project, rid, registry=registry, workers=2) == "finished"
    steps = steps_of(project, rid)
    assert sorted(s["status"] for s in steps.values()) == [
        "finished",
        "finished",
        "skipped",
        "skipped",
    ]
    assert integrity(project) == "ok"


# --------------------------------------------------------------------------- provenance


def test_provenance_of_a_three_run_chain(project, data_dir):
    # the installed plugins (default registry): real plugin versions in the record
    path = str(data_dir / "maps" / "EMD-3197.map")
    r1 = _run(project, None, "import.volume", {"path": path})
    r2 = _run(project, None, "example.normalize", {"mean": 0.0}, {"volume": f"{r1}.volume"})
    r3 = _run(project, None, "example.threshold", {"sigma": 0.5}, {"volume": f"{r2}.volume"})
    o1, o2, o3 = (project.list_objects(r)[0]["id"] for r in (r1, r2, r3))

    lines = lineage_lines(lineage(project, run_id=r3))
    runs = [
        (len(line) - len(line.lstrip()), m.group(1), m.group(2))
        for line in lines
        if (m := re.match(r"\s*run (\d+) (\S+) v1 \[finished\]", line))
    ]
    assert [(r, p) for _, r, p in runs] == [
        (str(r3), "example.threshold"),
        (str(r2), "example.normalize"),
        (str(r1), "import.volume"),
    ]
    assert runs[0][0] < runs[1][0] < runs[2][0]  # each producer nested under its consumer
    assert any(f"object {o2} (Volume)" in line for line in lines) and f"path={path}" in "\n".join(
        lines
    )
    obj_lines = lineage_lines(lineage(project, object_id=o3))
    assert (
        obj_lines[0].startswith(f"object {o3} VolumeMask")
        and f"run {r3} example.threshold" in obj_lines[1]
    )

    dot = lineage_dot(lineage(project, run_id=r3))
    assert (
        dot.startswith("digraph lineage {")
        and dot.rstrip().endswith("}")
        and dot.count("{") == dot.count("}")
    )
    edges = set(re.findall(r"^\s*(\w+) -> (\w+);$", dot, flags=re.M))
    assert edges == {
        (f"run{r1}", f"obj{o1}"),
        (f"obj{o1}", f"run{r2}"),
        (f"run{r2}", f"obj{o2}"),
        (f"obj{o2}", f"run{r3}"),
    }
    nodes = set(
        re.findall(r"^\s*(\w+) \[shape=(?:box|ellipse), label=\"[^\"]*\"\];$", dot, flags=re.M)
    )
    assert nodes == {f"run{r1}", f"run{r2}", f"run{r3}", f"obj{o1}", f"obj{o2}"}

    rec = run_record(project, r2)
    json.dumps(rec)  # plain data
    run = rec["run"]
    assert (run["protocol_id"], run["protocol_version"], run["plugin"]) == (
        "example.normalize",
        "1",
        "example",
    )
    assert run["plugin_version"] == "0.1.0" and run["emforge_version"] and run["host"]
    assert rec["params"] == {"mean": 0.0, "std": 1.0, "mask_radius": None}
    assert rec["inputs"] == [
        {"name": "volume", "object": o1, "data_version": project.object_row(o1)["data_version"]}
    ]
    assert rec["outputs"] == [
        {"name": "volume", "object": o2, "data_version": project.object_row(o2)["data_version"]}
    ]
    assert [s["name"] for s in rec["steps"]] == ["normalize"]
    step = rec["steps"][0]
    assert step["status"] == "finished" and step["started"] <= step["finished"] and step["key"]
    assert run["started"] <= step["started"] <= step["finished"] <= run["finished"]


def test_hashing_refuses_what_it_cannot_serialise():
    from emforge.engine.keys import canonical_json

    with pytest.raises(TypeError, match="cannot hash"):
        canonical_json({"x": object()})
