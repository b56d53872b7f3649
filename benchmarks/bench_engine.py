"""Protocol engine: launch→finish of a trivial protocol and 4 parallel 1-s steps, emforge vs
Scipion, in one run, with ratios.

    python benchmarks/bench_engine.py [--no-scipion] [--repeats 5]

emforge uses the example plugin's ``example.sleep`` (installed with the test extras):
``seconds=0, n_steps=1, register_output=true`` is the trivial protocol (one step that registers
one output, as Scipion's ``BenchTrivial`` does); ``seconds=1, n_steps=4`` on 2 workers the
parallel case. Warm: repeated calls in this process after an untimed first one; cold: each
repeat a fresh Python process that opens the project and runs the protocol (whole process
and the run alone). ≥ 5 repeats, min / median / max, CPU, peak RSS and the load are printed. "In-process" runs the engine in this process (``Project.run``); "detached"
records the run and starts its engine in a new session as ``emforge run --detach`` does (a
fork of this process when it runs one thread, else ``python -m emforge.cli._launch``; the
count of each is printed), and polls the database until the run is finished.
Targets (issue 3): ≤ 0.3 s in-process, ≤ 1 s detached, ≤ 2.3 s for the parallel case.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import check_repeats, cold_call, machine, scipion, table, wait_quiet, warm

from emforge.cli._launch import argv_of, can_fork, fork_engine
from emforge.engine import create_run
from emforge.engine.runs import run_row
from emforge.project import Project

TRIVIAL = {"seconds": 0.0, "n_steps": 1, "register_output": True}


def inprocess(proj: Project, params: dict, workers: int = 2) -> float:
    t0 = time.perf_counter()
    rid = proj.run("example.sleep", params=params, workers=workers)
    elapsed = time.perf_counter() - t0
    if params.get("register_output"):
        assert proj.outputs(rid)["record"].values == (0.0,), "the trivial run registers its output"
    return elapsed


def cold_trivial(project: str) -> None:
    """Open the project and run the trivial protocol (a fresh process per call: cold)."""
    inprocess(Project.open(project), TRIVIAL)


def detached(proj: Project, params: dict, workers: int = 2) -> float:
    """Record a run and start its engine as ``emforge run --detach`` does: a fork of this
    process when it runs one thread (:func:`emforge.cli._launch.fork_engine`), else a new
    interpreter (``python -m emforge.cli._launch``); poll the database until it finished."""
    t0 = time.perf_counter()
    rid = create_run(proj, "example.sleep", params)
    argv = argv_of(str(proj.path), rid, mode="resume", executor="local", workers=workers,
                   scheduler=None)  # fmt: skip
    if can_fork():
        HOW["fork"] += 1
        with open(os.devnull, "wb") as null:
            pid = fork_engine(argv, null.fileno())
    else:
        HOW["spawn"] += 1
        pid = subprocess.Popen(
            [sys.executable, "-m", "emforge.cli._launch", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        ).pid
    while run_row(proj, rid)["status"] not in ("finished", "failed", "aborted"):
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    assert run_row(proj, rid)["status"] == "finished"
    os.waitpid(pid, 0)
    return elapsed


#: how the detached engines were started
HOW = {"fork": 0, "spawn": 0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-scipion", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n = check_repeats(args.repeats)
    quiet, _ = wait_quiet(timeout=60)
    print(f"bench_engine: {machine()}")
    trivial = TRIVIAL
    parallel = {"seconds": 1.0, "n_steps": 4}
    with tempfile.TemporaryDirectory() as tmp:
        proj = Project.init(Path(tmp) / "p")
        # warm: imports paid by the untimed first call, as a long-lived session would be
        cold = cold_call(cold_trivial, str(proj.path), repeats=n, label="in-process, cold")
        stats = {
            "in-process": warm(lambda: inprocess(proj, trivial), n),
            "detached": warm(lambda: detached(proj, trivial), n),
            "parallel 4×1 s on 2 workers (in-process)": warm(
                lambda: inprocess(proj, parallel, workers=2), n
            ),
            "parallel 4×1 s on 2 workers (detached)": warm(
                lambda: detached(proj, parallel, workers=2), n
            ),
        }
    ours = {case: s.median for case, s in stats.items()}
    for case, s in stats.items():
        print(f"  {case} (warm): {s.summary()}")
    inner = sorted(x.inner_wall for x in cold.samples)
    print(
        f"  in-process (cold, fresh process each): whole process {cold.summary()}; the run alone "
        f"{inner[0]:.3f} / {inner[len(inner) // 2]:.3f} / {inner[-1]:.3f} s"
    )
    peer: dict[str, float | None] = {}
    if not args.no_scipion:
        a = scipion("engine_inproc")
        b = scipion("engine_detached")
        c = scipion("engine_parallel")
        peer = {
            "in-process": a and a.get("inproc_s"),
            "detached": b and b.get("detached_s"),
            "parallel 4×1 s on 2 workers (detached)": c and c.get("parallel_s"),
        }
    targets = {
        "in-process": 0.3,
        "detached": 1.0,
        "parallel 4×1 s on 2 workers (in-process)": 2.3,
        "parallel 4×1 s on 2 workers (detached)": 2.3,
    }
    rows = []
    for case, t in ours.items():
        p = peer.get(case)
        rows.append(
            (
                case,
                f"{t:.3f}",
                f"≤ {targets[case]}",
                "yes" if t <= targets[case] else "NO",
                f"{p:.3f}" if p else "-",
                f"{p / t:.1f}×" if p else "-",
            )
        )
    print(table(rows, ("case", "emforge median s", "target", "met", "scipion s", "emforge faster")))
    print(f"detached engines started by fork: {HOW['fork']}, by a new interpreter: {HOW['spawn']}")
    if not quiet:
        print("NOTE: the machine was loaded")
    print(f"load at the end: {machine()}")


if __name__ == "__main__":
    main()
