"""Kill-and-resume: a run SIGKILLed in the middle of a step resumes, redoing only what was
unfinished, with outputs byte-identical to an uninterrupted run and an intact database.

The run executes in a child process (``execute_run`` with the isolated toy registry); the
test polls the steps table until the chosen step is ``running``, kills the child at a random
moment inside that step, and resumes in-process. The step-3 case uses a fresh python
interpreter as the child; the 20 random kills fork the test process instead (same engine code,
without 1-3 s of interpreter start-up per kill on a loaded 2-core machine).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from enginetest_helpers import calls, integrity, steps_of
from toyprotocols import N_CHAIN, output_bytes

from emforge import db
from emforge.engine import create_run, effective_status, execute_run
from emforge.engine.runs import run_row
from emforge.paths import from_stored
from emforge.project import Project

STEP_S = 0.1  # seconds each toy step sleeps (half before writing its file, half after)
NAMES = [f"s{k}" for k in range(1, N_CHAIN + 1)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, registry) -> dict[str, bytes]:
    """Output files of an uninterrupted run (in a project of its own)."""
    proj = Project.init(tmp_path_factory.mktemp("reference") / "proj")
    rid = create_run(proj, "toy.chain", {"sleep": 0.0}, registry=registry)
    assert execute_run(proj, rid, registry=registry, workers=1) == "finished"
    files = output_bytes(run_row(proj, rid)["workdir"])
    assert sorted(files) == [f"out{k}.mrc" for k in range(1, N_CHAIN + 1)]
    assert all(len(b) > 200_000 for b in files.values())
    return files


def _registered_bytes(project: Project, run_id: int) -> dict[str, bytes]:
    """Bytes of the files of the run's registered outputs, by output name."""
    with db.read(project.engine) as conn:
        rows = conn.exec_driver_sql(
            "SELECT name, attrs_json FROM objects WHERE run_id = ?", (run_id,)
        ).all()
    return {
        name: Path(from_stored(project.path, json.loads(attrs)["path"])).read_bytes()
        for name, attrs in rows
    }


def _forked_run(path: str, run_id: int, registry) -> None:
    execute_run(Project.open(path), run_id, registry=registry, workers=1)


class _Child:
    """The run's process: a fresh interpreter (``child`` is an argv) or a fork (``child`` None)."""

    def __init__(self, child: list[str] | None, project: Project, run_id: int, registry) -> None:
        if child is None:
            self.proc = mp.get_context("fork").Process(
                target=_forked_run, args=(str(project.path), run_id, registry)
            )
            self.proc.start()
            self.popen = None
        else:
            self.popen = subprocess.Popen(
                child + [str(project.path), str(run_id)], stdout=subprocess.DEVNULL
            )

    def alive(self) -> bool:
        return self.proc.is_alive() if self.popen is None else self.popen.poll() is None

    def sigkill(self) -> None:
        if self.popen is None:
            self.proc.kill()
            self.proc.join()
            assert self.proc.exitcode == -signal.SIGKILL
        else:
            self.popen.send_signal(signal.SIGKILL)
            assert self.popen.wait() == -signal.SIGKILL


def kill_and_resume(
    project: Project,
    registry,
    child: list[str] | None,
    reference: dict[str, bytes],
    target: int,
    delay: float,
) -> dict:
    """Run toy.chain in a child, SIGKILL it ``delay`` s after step ``target`` starts, resume."""
    rid = create_run(project, "toy.chain", {"sleep": STEP_S}, registry=registry)
    workdir = run_row(project, rid)["workdir"]
    proc = _Child(child, project, rid, registry)
    deadline = time.monotonic() + 30
    try:
        while steps_of(project, rid).get(f"s{target}", {}).get("status") != "running":
            assert proc.alive(), f"child ended before step s{target} ran"
            assert time.monotonic() < deadline, f"step s{target} never started"
            time.sleep(0.003)
        time.sleep(delay)
    finally:
        proc.sigkill()

    before = steps_of(project, rid)
    done = [n for n in NAMES if before.get(n, {}).get("status") == "finished"]
    started = calls(workdir)
    assert started == NAMES[: len(started)], "steps ran out of order before the kill"
    assert effective_status(run_row(project, rid)) == "interrupted"
    assert integrity(project) == "ok"

    assert execute_run(project, rid, registry=registry, workers=1) == "finished"
    after = steps_of(project, rid)
    todo = [n for n in NAMES if n not in done]
    # exactly the unfinished steps were executed again, in order; the finished ones were not
    assert calls(workdir)[len(started) :] == todo
    for n in NAMES:
        assert after[n]["status"] == ("skipped" if n in done else "finished"), (n, after[n])
        assert after[n]["executions"] == 1, (n, after[n])
    assert _registered_bytes(project, rid) == {
        f"out{k}": reference[f"out{k}.mrc"] for k in range(1, N_CHAIN + 1)
    }
    assert output_bytes(workdir) == reference
    assert integrity(project) == "ok"
    leftovers = [p.name for p in (Path(workdir) / "extra").iterdir() if p.name.startswith(".")]
    return {
        "run": rid,
        "target": target,
        "delay": round(delay, 3),
        "done_before_kill": done,
        "tmp": leftovers,
    }


def test_sigkill_in_step3_resumes_steps_3_to_5(project, registry, child_script, reference):
    res = kill_and_resume(project, registry, child_script, reference, target=3, delay=0.5 * STEP_S)
    # the kill came half-way through step 3: steps 1-2 were finished, 3-5 redone
    assert res["done_before_kill"] == ["s1", "s2"]


@pytest.mark.slow
def test_sigkill_at_20_random_points(project, registry, reference):
    rng = np.random.default_rng(20240521)
    results = []
    for i in range(20):
        # the first kills land in step 3 (the acceptance case); the rest anywhere in steps 1-5,
        # at a random moment inside the step (sometimes just after it finished)
        target = 3 if i < 5 else int(rng.integers(1, N_CHAIN + 1))
        delay = float(rng.uniform(0.0, 1.2 * STEP_S))
        results.append(kill_and_resume(project, registry, None, reference, target, delay))
    print("\nkill points (target step, delay s, steps finished before the kill):")
    for r in results:
        print(
            f"  run {r['run']:2d}: s{r['target']} +{r['delay']:.3f} s  finished: {r['done_before_kill']}"
            + (f"  stray temporaries: {r['tmp']}" if r["tmp"] else "")
        )
    print(f"kill-and-resume: {len(results)}/20 resumed byte-identical, integrity ok")
    assert len(results) == 20
